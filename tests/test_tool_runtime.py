"""tool_runtime: cell semantics, timeouts, concurrency, lifecycle (no leaked processes), isolation report.

Hostile cells are in test_tool_runtime_hostile.py. These tests run real forked sessions (no mocks).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tool_runtime import ExecResult, PoolExhaustedError, SessionClosedError, SessionPool
from tool_runtime.result import CUT_MARKER, STATE_LOST

from .runtime_helpers import alive, descendants, describe, value

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0

os.environ["TOOL_RUNTIME_TEST_SECRET"] = "hunter2"  # must never reach a session


@pytest.fixture(scope="module")
def pool():
    # 2 s grace: on a loaded machine a cell that does stop on SIGINT may take longer than the 0.5 s default
    # (the default itself is checked in tests/test_tool_runtime_texts.py and bench/tool_runtime.py)
    with SessionPool(max_sessions=64, timeout=5.0, interrupt_grace=2.0, max_output_chars=1000) as p:
        yield p


@pytest.fixture
def session(pool):
    s = pool.open()
    yield s
    s.close()


# ------------------------------------------------------------------------------------------------ cells


def test_state_persists_between_cells(session):
    r = session.run("x = 21 * 2\nx")
    assert isinstance(r, ExecResult)
    assert (r.output, r.status, r.state_lost) == ("42\n", "ok", False)
    assert 0 < r.seconds < 1
    assert session.run("x + 1").output == "43\n"
    assert session.run("def f(a):\n    return a * x\nf(2)").output == "84\n"


def test_last_expression_echo_and_semicolon(session):
    assert session.run("1 + 1").output == "2\n"
    assert session.run("1 + 1;").output == "2\n"  # the seed's sandbox echoed despite the `;` (no history)
    assert session.run("y = 3").output == ""
    assert session.run("'a' * 3").output == "'aaa'\n"
    assert session.run("import sympy as sp\nsp.Symbol('x')**2 + 1").output == "x**2 + 1\n"
    assert session.run("import numpy as np\nnp.arange(3)").output == "array([0, 1, 2])\n"


def test_no_output_is_an_empty_text(session):
    for code in ("pass", "", "z = 1", "None", "print(end='')", "print()", "print('  \\n\\n')"):
        r = session.run(code)
        assert (r.output, r.status) == ("", "ok"), code


def test_stdout_stderr_traceback_in_order(session):
    r = session.run(
        textwrap.dedent("""\
        import sys
        print('one')
        print('two', file=sys.stderr)
        print('three')
        1 / 0
        """)
    )
    assert r.status == "error" and not r.state_lost
    out = r.output
    assert out.index("one\n") < out.index("two\n") < out.index("three\n") < out.index("Traceback")
    assert out.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "\x1b" not in out  # plain traceback, no colours


def test_syntax_error_is_an_error_with_state_kept(session):
    session.run("keep = 7")
    r = session.run("def broken(:\n    pass")
    assert r.status == "error" and "SyntaxError" in r.output
    assert session.run("keep").output == "7\n"


def test_subprocess_and_fd_output_are_captured_in_order(session):
    r = session.run(
        "import os, subprocess\nprint('a')\nos.system('echo b')\nprint('c')\n"
        "subprocess.run(['echo', 'd'])\nos.write(1, b'e\\n')\nprint('f')"
    )
    assert r.output == "a\nb\nc\nd\ne\nf\n"
    r = session.run(
        "import subprocess, sys\nsubprocess.run(['echo', 'via sys.stdout'], stdout=sys.stdout)\n"
        "subprocess.run('echo err >&2', shell=True, stderr=sys.stderr); None"
    )
    assert r.output == "via sys.stdout\nerr\n"


def test_ansi_escapes_are_stripped(session):
    r = session.run(r"print('\x1b[31mred\x1b[0m and \x1b]0;title\x07plain')")
    assert r.output == "red and plain\n"


def test_output_is_truncated_with_marker(session):
    r = session.run("print('a' * 5000)")
    assert r.output == "a" * 1000 + CUT_MARKER
    r = session.run("for i in range(10000): print(i)")
    assert r.output.endswith(CUT_MARKER) and len(r.output) == 1000 + len(CUT_MARKER)
    assert r.output.startswith("0\n1\n2\n")
    assert session.run("print('short')").output == "short\n"


def test_long_output_of_fd_level_writes_is_bounded(session):
    r = session.run("import os\nfor _ in range(2000): os.write(1, b'x' * 1000)")
    assert r.status == "ok" and r.output == "x" * 1000 + CUT_MARKER


def test_exit_and_sys_exit_keep_the_session(session):
    session.run("kept = 'yes'")
    r = session.run("exit()")
    assert (r.output, r.status, r.state_lost) == ("", "ok", False)
    r = session.run("quit()\nprint('after quit')")
    assert r.output == "after quit\n"
    r = session.run("import sys\nsys.exit()\nprint('not reached')")
    assert r.status == "ok"
    assert r.output == "An exception has occurred, use %tb to see the full traceback.\nSystemExit\n"
    r = session.run("import sys; sys.exit(3)")
    assert r.status == "error"
    assert r.output == "An exception has occurred, use %tb to see the full traceback.\nSystemExit: 3\n"
    r = session.run("raise SystemExit('bye')")
    assert r.output.endswith("SystemExit: bye\n")
    assert session.run("kept").output == "'yes'\n"


def test_cd_magic_changes_directory_and_remembers_it(session):
    """IPython keeps %cd's history and bookmarks in its profile directory, which sessions cannot see: they are
    kept in memory, so %cd works as in a notebook (it failed with FileNotFoundError on the profile's db)."""
    home = session.workdir
    assert session.run("%cd /tmp").output == "/tmp\n"
    assert value(session, "__import__('os').getcwd()") == "/tmp"
    assert session.run("%cd -q ~").output == "" and value(session, "__import__('os').getcwd()") == home
    assert session.run("%dhist").output.splitlines()[1:] == [f"0: {home}", "1: /tmp", f"2: {home}"]
    assert session.run("%bookmark t /tmp\n%cd -b t").output == "(bookmark:t) -> /tmp\n/tmp\n"


def test_input_fails_fast_at_end_of_file(session):
    t = time.monotonic()
    r = session.run("input('name? ')")
    assert time.monotonic() - t < 2
    assert r.status == "error"
    assert r.output == (
        "name? Traceback (most recent call last):\n    input('name? ')\nEOFError: EOF when reading a line\n"
    )
    assert session.run("import sys; sys.stdin.readline()").output == "''\n"


def test_deep_recursion_traceback_is_shortened(session):
    r = session.run("import sys; sys.setrecursionlimit(100000)\ndef f(n): return f(n + 1)\nf(0)", timeout=20)
    assert r.status == "error" and not r.state_lost
    assert r.output.startswith(
        "Traceback (most recent call last):\n    f(0)\n"
        + "    def f(n): return f(n + 1)\n" * 3
        + "  [Previous line repeated "
    )
    assert r.output.endswith(" more times]\nRecursionError: maximum recursion depth exceeded\n")


def test_random_generators_are_reseeded_per_session(pool):
    a, b = pool.open(), pool.open()
    try:
        draws = [value(s, "[__import__('numpy').random.rand(), __import__('random').random()]") for s in (a, b)]
        assert draws[0][0] != draws[1][0] and draws[0][1] != draws[1][1]
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------------------------------------ timeouts


def test_timeout_interrupts_and_keeps_state(session):
    session.run("y = 5")
    r = session.run("import time\nprint('started')\ntime.sleep(30)", timeout=1.0)
    assert (r.status, r.state_lost) == ("timeout", False)
    assert r.output == "started\nExecution timed out after 1.0 seconds\n"
    assert 1.0 <= r.seconds < 2.5
    assert session.run("y").output == "5\n"


def test_timeout_of_endless_print_keeps_state_and_memory_bounded(session):
    session.run("kept = 1")
    pid = session.pid
    r = session.run("while True: print('spam' * 100)", timeout=1.5)
    assert (r.status, r.state_lost) == ("timeout", False)
    assert r.output.startswith("spam") and CUT_MARKER in r.output
    assert r.output == (("spam" * 100 + "\n") * 3)[:1000] + CUT_MARKER + "Execution timed out after 1.5 seconds\n"
    rss_kib = int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])
    assert rss_kib < 400 * 1024
    assert session.run("kept").output == "1\n"


def test_timeout_hard_kill_when_sigint_is_ignored(pool):
    s = pool.open()
    try:
        s.run("y = 5")
        old_pid = s.pid
        r = s.run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", timeout=1.0)
        assert (r.status, r.state_lost) == ("timeout", True)
        assert r.output == "Execution timed out after 1.0 seconds\n" + STATE_LOST + "\n"
        assert 1.0 <= r.seconds < 3.0
        assert s.pid != old_pid
        deadline = time.monotonic() + 2.0  # SIGKILLed before run() returned; a loaded machine may take a moment
        while alive(old_pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not alive(old_pid)
        r = s.run("y")
        assert r.status == "error" and "NameError" in r.output
        assert s.run("1 + 1").output == "2\n"
        assert s.restarts == 1
    finally:
        s.close()


def test_timeout_hard_kill_of_c_level_loop(session):
    r = session.run("sum(range(10**13))", timeout=1.0)
    assert (r.status, r.state_lost) == ("timeout", True)
    assert r.output == "Execution timed out after 1.0 seconds\n" + STATE_LOST + "\n"
    assert session.run("2 * 21").output == "42\n"


def test_per_call_timeout_override(pool, session):
    assert pool.timeout == 5.0
    r = session.run("import time; time.sleep(3)", timeout=0.5)
    assert (r.status, r.output) == ("timeout", "Execution timed out after 0.5 seconds\n")
    r = session.run("import time; time.sleep(1.2); 'done'")  # default 5 s applies again
    assert (r.status, r.output) == ("ok", "'done'\n")


def test_seconds_measure_the_cell_only(session):
    r = session.run("import time; time.sleep(0.3)")
    assert 0.3 <= r.seconds < 1.0


# ------------------------------------------------------------------------------------------------ environment


def test_session_environment_is_clean_and_single_threaded_blas(session):
    env = value(session, "dict(__import__('os').environ)")
    assert "TOOL_RUNTIME_TEST_SECRET" not in env
    assert not any("hunter2" in v for v in env.values())
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert env[name] == "1"
    cwd = value(session, "__import__('os').getcwd()")
    assert cwd == session.workdir and env["HOME"] == cwd
    assert (os.stat(cwd).st_mode & 0o777) == 0o700


def test_isolation_report_matches_what_sessions_see(pool, session):
    iso = pool.info["isolation"]
    assert pool.info["template_pid"] and alive(pool.info["template_pid"])
    assert pool.info["template_threads"] == 1
    assert set(pool.info["preloaded"]) >= {"numpy", "sympy"}
    facts = value(
        session,
        "[__import__('os').getpid(), __import__('os').getuid(), "
        "__import__('os').readlink('/proc/self/ns/pid'), __import__('os').readlink('/proc/self/ns/net')]",
    )
    ns_pid, uid, pid_ns, net_ns = facts
    if IS_ROOT:  # CI runs as root on a VM like the development machine: all of it must be in force
        assert iso["pid_namespace"] and iso["net_namespace"] and iso["per_session_uid"]
        assert iso["process_limit"] in ("pids cgroup", "RLIMIT_NPROC")
    assert (pid_ns != os.readlink("/proc/self/ns/pid")) == iso["pid_namespace"]
    assert (net_ns != os.readlink("/proc/self/ns/net")) == iso["net_namespace"]
    assert (ns_pid == 2) == iso["pid_namespace"]
    assert (uid != os.getuid()) == iso["per_session_uid"]
    limits = value(
        session,
        "[__import__('resource').getrlimit(getattr(__import__('resource'), n))[0] for n in "
        "('RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_CORE', 'RLIMIT_CPU')]",
    )
    rl = iso["rlimits"]
    assert limits == [rl["RLIMIT_AS"], rl["RLIMIT_FSIZE"], rl["RLIMIT_NOFILE"], 0, rl["RLIMIT_CPU"]]


def test_isolation_can_be_relaxed_and_says_so():
    with SessionPool(
        max_sessions=2, preload=(), cgroups=False, network=True, isolate_users=False, spare_sessions=0
    ) as p:
        iso = p.info["isolation"]
        assert iso["cgroups"] == [] and not iso["net_namespace"] and not iso["per_session_uid"]
        with p.open() as s:
            uid, net = value(s, "[__import__('os').getuid(), __import__('os').readlink('/proc/self/ns/net')]")
            assert uid == os.getuid() and net == os.readlink("/proc/self/ns/net")
            assert s.run("21 * 2").output == "42\n"


# ------------------------------------------------------------------------------------------------ concurrency


def test_fifty_sessions_run_at_once(pool):
    def work(i: int) -> tuple[int, str, str]:
        s = pool.open()
        try:
            s.run(f"i = {i}")
            r1 = s.run("import time\ntime.sleep(0.3)\nprint(i * i)")
            r2 = s.run("i + 1")
            return i, r1.output, r2.output
        finally:
            s.close()

    t = time.monotonic()
    with ThreadPoolExecutor(50) as ex:
        results = list(ex.map(work, range(50)))
    assert all(r1 == f"{i * i}\n" and r2 == f"{i + 1}\n" for i, r1, r2 in results)
    assert time.monotonic() - t < 20
    assert pool.info["live_sessions"] == 0


def test_run_on_one_session_from_many_threads_is_serialized(session):
    session.run("n = 0")
    with ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda _: session.run("n += 1\nn").output, range(40)))
    assert sorted(int(o) for o in outs) == list(range(1, 41))


def test_arun_is_awaitable_and_concurrent(pool):
    sessions = [pool.open() for _ in range(4)]

    async def main():
        return await asyncio.gather(*(s.arun("import time; time.sleep(0.5); 'ok'") for s in sessions))

    try:
        t = time.monotonic()
        results = asyncio.run(main())
        assert [r.output for r in results] == ["'ok'\n"] * 4
        assert time.monotonic() - t < 1.9  # concurrent, not 4 x 0.5 s
    finally:
        for s in sessions:
            s.close()


def test_max_sessions_bounds_live_sessions():
    with SessionPool(max_sessions=2, open_timeout=0.3, spare_sessions=0, preload=()) as p:
        a, b = p.open(), p.open()
        t = time.monotonic()
        with pytest.raises(PoolExhaustedError):
            p.open()
        assert 0.25 <= time.monotonic() - t < 2
        threading.Timer(0.3, a.close).start()
        c = p.open(timeout=5)  # waits for the slot a frees
        assert c.run("1").output == "1\n"
        with pytest.raises(SessionClosedError):
            a.run("1")
        b.close()
        c.close()


def test_session_close_removes_workdir_and_process(pool):
    s = pool.open()
    s.run("open('f.txt', 'w').write('x')")
    workdir, pid = s.workdir, s.pid
    assert os.path.exists(os.path.join(workdir, "f.txt"))
    s.close()
    s.close()  # idempotent
    assert not os.path.exists(workdir) and not alive(pid)
    with pytest.raises(SessionClosedError):
        s.run("1")


def test_close_while_a_cell_runs_raises_in_the_runner(pool):
    s = pool.open()
    box = {}

    def runner():
        try:
            box["r"] = s.run("import time; time.sleep(30)", timeout=60)
        except SessionClosedError as exc:
            box["e"] = exc

    t = threading.Thread(target=runner)
    t.start()
    time.sleep(0.3)
    started = time.monotonic()
    s.close()
    t.join(5)
    assert not t.is_alive() and "e" in box
    assert time.monotonic() - started < 3


# ------------------------------------------------------------------------------------------------ lifecycle


def test_no_processes_left_after_pool_close():
    before = descendants(os.getpid())
    p = SessionPool(max_sessions=4, timeout=5.0)
    sessions = [p.open() for _ in range(3)]
    sessions[0].run("import subprocess\nsub = subprocess.Popen(['sleep', '300'])")
    sessions[1].run("import threading, time\nthreading.Thread(target=lambda: time.sleep(300)).start()")
    sessions[2].run("import os\nif os.fork() == 0:\n    os.setsid()\n    import time; time.sleep(300)")
    ours = descendants(os.getpid()) - before
    assert len(ours) >= 1 + 2 * 3 + 2  # template, reaper + session each, the sleeps, spares
    workdir_root = p.info["workdir_root"]
    p.close()
    deadline = time.monotonic() + 20  # a loaded machine: the template's shutdown and rm -rf take their time
    while time.monotonic() < deadline and descendants(os.getpid()) - before:
        time.sleep(0.05)
    assert descendants(os.getpid()) - before == set()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in ours)  # no zombies either
    assert not os.path.exists(workdir_root)
    with pytest.raises(SessionClosedError):
        p.open()
    with pytest.raises(SessionClosedError):
        sessions[0].run("1")


def test_no_processes_left_after_an_exception_in_the_with_block():
    before = descendants(os.getpid())
    with pytest.raises(RuntimeError, match="boom"):
        with SessionPool(max_sessions=2, preload=()) as p:
            p.open().run("import subprocess; s = subprocess.Popen(['sleep', '300'])")
            raise RuntimeError("boom")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and descendants(os.getpid()) - before:
        time.sleep(0.05)
    assert descendants(os.getpid()) - before == set()


def test_no_processes_left_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""\
        import json, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tool_runtime import SessionPool
        pool = SessionPool(max_sessions=4, timeout=5.0)
        sessions = [pool.open() for _ in range(2)]
        sessions[0].run("import subprocess; sub = subprocess.Popen(['sleep', '300'])")
        print(json.dumps({{"template": pool.info["template_pid"], "sessions": [s.pid for s in sessions],
                          "root": pool.info["workdir_root"]}}), flush=True)
        time.sleep(300)
        """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        tree = descendants(proc.pid)
        assert info["template"] in tree and all(pid in tree for pid in info["sessions"])
        assert len(tree) >= 1 + 2 * 2 + 1
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30  # the template cleans up every session first; a loaded machine is slow
    while time.monotonic() < deadline and any(alive(pid) for pid in tree):
        time.sleep(0.05)
    assert not any(alive(pid) for pid in tree), describe(tree)
    while time.monotonic() < deadline and os.path.exists(info["root"]):
        time.sleep(0.05)
    assert not os.path.exists(info["root"])  # the template cleaned up after the parent died


def test_template_death_is_recovered_transparently():
    with SessionPool(max_sessions=4, timeout=5.0, preload=()) as p:
        s = p.open()
        s.run("v = 1")
        old_template, old_session = p.info["template_pid"], s.pid
        os.kill(old_template, signal.SIGKILL)
        # Sessions die with their template (parent-death signal; without root the template gets SIGTERM from
        # its shim's death and kills every session first). Failed once at 5 s in a loaded run: 15 s, and the
        # message says where the survivors wait.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and alive(old_session):
            time.sleep(0.02)
        survivors = [old_session, *descendants(old_template)]
        assert not alive(old_session), describe(survivors)
        r = s.run("v")
        assert (r.status, r.state_lost) == ("crashed", True) and STATE_LOST in r.output
        assert s.run("1 + 2").output == "3\n"
        assert p.info["template_restarts"] == 1 and p.info["template_pid"] != old_template
        assert p.open().run("'new'").output == "'new'\n"


def test_pool_is_usable_from_a_short_lived_thread():
    """The template must not die with the thread that created the pool (parent-death signal is per thread)."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("pool", SessionPool(max_sessions=2, preload=())))
    t.start()
    t.join()
    p = box["pool"]
    try:
        time.sleep(0.3)
        assert p.info["template_alive"]
        assert p.open().run("6 * 7").output == "42\n"
    finally:
        p.close()
