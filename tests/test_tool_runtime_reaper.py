"""tool_runtime: PID 1 of a session's PID namespace, the compiled reaper (reaper.c) and its Python fallback.

The binary is tested on its own (exit codes, SIGINT forwarding, reaping of other children and orphans), then
both kinds are tested in real sessions: what the session can do to its PID 1, orphans, crash reasons, timeouts
(the pool's SIGINT reaches the cell only through the reaper) and the memory each costs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tool_runtime import SessionPool
from tool_runtime.child import REAPER_NAME
from tool_runtime.template import REAPER_BINARY

from .runtime_helpers import parent_of, pss_kib, state, value

HAVE_CC = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))

# Forks a "session" that does SESSION, optionally other children first, then execs the reaper with the
# session's pid, as a session's first process does (child.py). PR_SET_CHILD_SUBREAPER (kept across exec)
# stands in for being PID 1: orphans below us are reparented to us.
HARNESS = textwrap.dedent("""\
    import ctypes, os, sys, time
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    for _ in range({others}):  # children that end before the session: reaped, not mistaken for it
        if os.fork() == 0:
            os._exit(9)
    if {orphan}:  # a child that leaves a grandchild behind, which ends while the reaper waits
        if os.fork() == 0:
            if os.fork() == 0:
                time.sleep(0.3)
                os._exit(0)
            os._exit(0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        {session}
        os._exit(0)
    os.set_inheritable(w, True)
    os.execv({binary!r}, [{name!r}, str(pid)] + ([str(w)] if {handshake} else []))
""")


def run_reaper(
    session: str, *, others: int = 0, orphan: bool = False, sigint_after: float | None = None, handshake: bool = False
):
    code = HARNESS.format(
        session=session, others=others, orphan=orphan, handshake=handshake, binary=REAPER_BINARY, name=REAPER_NAME
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    zombies_seen: list[int] = []
    if sigint_after is not None or orphan:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0] != REAPER_NAME.encode():
            assert time.monotonic() < deadline, "the reaper was not exec'd"
            time.sleep(0.01)
        if orphan:
            time.sleep(0.8)  # the grandchild has ended by now: the reaper must have reaped it
            zombies_seen = [pid for pid in children(proc.pid) if state(pid) == "Z"]
        if sigint_after is not None:
            time.sleep(sigint_after)
            proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30), zombies_seen


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


needs_binary = pytest.mark.skipif(
    not os.path.exists(REAPER_BINARY) and not HAVE_CC, reason="no C compiler here: the reaper cannot be built"
)


@needs_binary
def test_reaper_binary_is_built_where_a_compiler_exists():
    assert os.access(REAPER_BINARY, os.X_OK), f"{REAPER_BINARY} missing: run `pip install -e .` (setup.py builds it)"


@needs_binary
@pytest.mark.parametrize(
    "session, expected",
    [
        ("os._exit(0)", 0),
        ("os._exit(3)", 3),
        ("os._exit(127)", 127),
        ("os._exit(200)", 255),  # >= 128: not to be mistaken for a signal
        ("os.kill(os.getpid(), 11)", 128 + 11),
        ("os.kill(os.getpid(), 9)", 128 + 9),
    ],
)
def test_reaper_exit_code_says_how_the_session_ended(session, expected):
    code, _ = run_reaper(session, others=2)
    assert code == expected


@needs_binary
def test_reaper_forwards_sigint_to_the_session():
    code, _ = run_reaper("time.sleep(30)", sigint_after=0.2)
    assert code == 128 + signal.SIGINT  # the session died of the forwarded SIGINT; the reaper did not


@needs_binary
def test_reaper_reaps_orphans_while_it_waits():
    code, zombies = run_reaper("time.sleep(1.5)", orphan=True)
    assert code == 0 and zombies == []


@needs_binary
def test_reaper_says_when_it_is_set_up():
    """The session waits for this byte before it reports ready (child.py): no cell runs, and no SIGINT is
    sent, before the reaper handles SIGINT and is not dumpable."""
    code, _ = run_reaper("os._exit(42 if os.read(r, 1) == b'1' and os.read(r, 1) == b'' else 1)", handshake=True)
    assert code == 42


@needs_binary
def test_reaper_without_a_session_pid_refuses():
    for argv in ([], ["x"], ["1"], ["12", "x"], ["12", "-1"], ["12", "13", "14"]):
        assert subprocess.run([REAPER_BINARY, *argv], check=False).returncode == 255


# --------------------------------------------------------------------------------- in real sessions


@pytest.fixture(scope="module", params=["native", "python"])
def pool(request):
    if request.param == "native" and not os.path.exists(REAPER_BINARY):
        pytest.skip("no compiled reaper (no C compiler at install)")
    with SessionPool(max_sessions=8, timeout=2.0, interrupt_grace=2.0, native_reaper=request.param == "native") as p:
        if not p.info["isolation"]["pid_namespace"]:
            pytest.skip("no PID namespaces here: sessions have no reaper")
        assert p.info["isolation"]["reaper"] == request.param, p.info["isolation"]["notes"]
        yield p


def test_pid_1_is_the_reaper_and_out_of_the_cells_reach(pool):
    with pool.open() as s:
        reaper = parent_of(s.pid)
        assert reaper != pool.info["template_pid"]
        cmdline = Path(f"/proc/{reaper}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert (cmdline == REAPER_NAME) == (pool.info["isolation"]["reaper"] == "native")
        assert s._proc.facts["reaper"] == pool.info["isolation"]["reaper"]  # what the session got, as announced
        if pool.info["isolation"]["reaper"] == "native":
            assert Path(f"/proc/{reaper}/comm").read_text() == "session-reaper\n"
        s.run("x = 1")
        for code in ("import os\nos.kill(os.getppid(), 9)", "import os, signal\nos.kill(1, signal.SIGTERM)"):
            r = s.run(code)
            # As root the session's uid may not signal it; without root (same host uid through user namespaces)
            # the kernel drops what a namespace's members send its init. Either way it lives on.
            assert not r.state_lost and (r.status == "ok" or "PermissionError" in r.output), r.output
            assert state(reaper) not in ("Z", "gone")
        assert value(s, "x") == 1 and value(s, "__import__('os').getppid()") == 1


def test_pid_1_reveals_nothing_of_the_host(pool):
    """PID 1 is not chrooted: through /proc/1 a cell read the host's mount table (the pool's directory, the
    host paths of every bind of the view), its cgroup paths, limits and command line. The session's /proc
    shows nothing of processes it may not trace (hidepid), as well as nothing of their memory."""
    with pool.open() as s:
        assert s._proc.facts["proc_hidepid"] is True  # said by the session (False where the kernel refused it)
        assert value(s, "sorted(int(p) for p in __import__('os').listdir('/proc') if p.isdigit())") == [1, 2]
        for name in ("mountinfo", "mounts", "cgroup", "status", "cmdline", "limits", "stat", "sched", "fd"):
            path = f"/proc/1/{name}"
            r = s.run(f"__import__('os').listdir({path!r})" if name == "fd" else f"open({path!r}).read()")
            assert r.status == "error" and "PermissionError" in r.output, (name, r.output)
        workdir_root = os.path.dirname(s.workdir)
        assert workdir_root not in s.run("print(open('/proc/self/mountinfo').read())").output


def test_orphans_are_reaped(pool):
    with pool.open() as s:
        r = s.run(
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(0.2); os._exit(0)\n"
            "    os._exit(0)\n"
            "os.wait(); time.sleep(0.8)\n"
            "[p for p in os.listdir('/proc') if p.isdigit()]"
        )
        assert r.status == "ok" and sorted(eval(r.output)) == ["1", "2"], r.output  # no zombie left


@pytest.mark.parametrize(
    "cell, reason",
    [
        ("import ctypes; ctypes.string_at(0)", "killed by SIGSEGV"),
        ("import os; os._exit(3)", "exited with code 3"),
        ("import os; os._exit(200)", "exited with code >=128"),
    ],
)
def test_crash_reason_comes_through_the_reaper(pool, cell, reason):
    with pool.open() as s:
        r = s.run(cell)
        assert (r.status, r.state_lost) == ("crashed", True) and reason in r.output, r.output
        assert s.run("6 * 7").output == "42\n"  # restarted


def test_timeout_interrupts_through_the_reaper_and_keeps_state(pool):
    with pool.open() as s:
        s.run("kept = 'yes'")
        r = s.run("import time\nwhile True: time.sleep(0.01)", timeout=0.5)
        assert r.status == "timeout" and not r.state_lost, r.output
        assert value(s, "kept") == "yes"


@pytest.mark.parametrize(
    "cell",
    [
        "print('before')\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)",
        "print('before')\nos.killpg(0, signal.SIGINT)\ntime.sleep(5)",  # the group holds PID 1 as well
        # Without root the reaper has the session's host uid: it takes the signal and forwards it to the session.
        "print('before')\ntry:\n    os.kill(1, signal.SIGINT)\nexcept PermissionError:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)",
    ],
)
def test_a_cells_own_sigint_is_its_keyboard_interrupt_not_a_timeout(pool, cell):
    """A SIGINT the cell sends (to itself, its group, or through its PID 1) is the cell's KeyboardInterrupt,
    shown like any error: it used to be taken for the pool's timeout interrupt and hidden (empty output)."""
    with pool.open() as s:
        s.run("import os, signal, time\nkept = 1")
        r = s.run(cell, timeout=30)
        assert r.status == "error" and not r.state_lost, r.output
        assert r.output.startswith("before\nTraceback") and r.output.endswith("\nKeyboardInterrupt\n"), r.output
        assert "_on_sigint" not in r.output and "tool_runtime" not in r.output, r.output  # not our frames
        assert value(s, "kept") == 1


def test_native_reaper_costs_a_few_pages(pool):
    """What the native reaper is for: its PSS is a fraction of a MiB, where a forked Python reaper keeps
    about 2 MiB of the template's pages as its own (copy-on-write after the session and template wrote them)."""
    with pool.open() as s:
        s.run("import sympy as sp\nsp.factorint(2024)")
        reaper = parent_of(s.pid)
        if pool.info["isolation"]["reaper"] == "native":
            assert pss_kib(reaper) < 512
        elif os.geteuid() == 0:
            assert pss_kib(reaper) > 1024  # if this fails, the Python reaper got cheap: is the native one needed?
        else:  # not dumpable, and its memory is the host's root's (the template was started outside its namespace)
            with pytest.raises(PermissionError):
                pss_kib(reaper)


def test_a_reaper_binary_swapped_under_a_running_pool_without_effect(tmp_path):
    """A deployment that rebuilds, replaces or removes `_reaper` while a pool runs: sessions forked later still
    run the binary that passed the template's self-test (not whatever is at the path now, e.g. a script that
    never reaps), and each session says which kind of PID 1 it got. Root only (the package is root's)."""
    if not os.path.exists(REAPER_BINARY):
        pytest.skip("no compiled reaper (no C compiler at install)")
    marker = tmp_path / "impostor-ran"
    backup = REAPER_BINARY + ".attack-backup"
    with SessionPool(max_sessions=4, timeout=2.0, interrupt_grace=2.0, spare_sessions=0) as p:
        assert p.info["isolation"]["reaper"] == "native", p.info["isolation"]["notes"]
        os.rename(REAPER_BINARY, backup)
        try:
            Path(REAPER_BINARY).write_text(f"#!/bin/sh\ntouch {marker}\nsleep 1000\n")
            os.chmod(REAPER_BINARY, 0o755)
            with p.open() as s:
                cmdline = Path(f"/proc/{parent_of(s.pid)}/cmdline").read_bytes().split(b"\0")[0].decode()
                assert cmdline == REAPER_NAME and s._proc.facts.get("reaper") == "native", (cmdline, s._proc.facts)
                r = s.run("import time\nwhile True: time.sleep(0.01)", timeout=0.5)
                assert r.status == "timeout" and not r.state_lost, r.output
            os.unlink(REAPER_BINARY)  # removed: the same
            with p.open() as s:
                assert s._proc.facts.get("reaper") == "native" and s.run("6 * 7").output == "42\n"
        finally:
            os.replace(backup, REAPER_BINARY)
        # Overwritten in place (`cp script _reaper` keeps the inode): the same.
        shutil.copy2(REAPER_BINARY, backup)
        try:
            with open(REAPER_BINARY, "wb") as f:
                f.write(f"#!/bin/sh\ntouch {marker}\nsleep 1000\n".encode())
            with p.open() as s:
                assert s._proc.facts.get("reaper") == "native" and s.run("6 * 7").output == "42\n"
        finally:
            os.replace(backup, REAPER_BINARY)
    assert not marker.exists()


def test_a_reaper_binary_that_cannot_run_is_reported_without_effect_on_sessions():
    """Not executable at start (a careless chmod, or a noexec mount): the pool says so and uses the Python
    reaper. Root only (the package is root's)."""
    if not os.path.exists(REAPER_BINARY):
        pytest.skip("no compiled reaper (no C compiler at install)")
    mode = os.stat(REAPER_BINARY).st_mode
    os.chmod(REAPER_BINARY, 0o644)
    try:
        with SessionPool(max_sessions=2, timeout=2.0, spare_sessions=0) as p:
            iso = p.info["isolation"]
            assert iso["reaper"] == "python" and "may not be executed" in iso["notes"]["reaper"], iso
            with p.open() as s:
                assert s._proc.facts["reaper"] == "python" and s.run("6 * 7").output == "42\n"
    finally:
        os.chmod(REAPER_BINARY, mode)
