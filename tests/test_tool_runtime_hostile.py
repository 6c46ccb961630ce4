"""tool_runtime: hostile cells. Each must be contained: this process and the pool live on, other sessions keep
their state, and the result says what happened.

Safety: a cell that would harm the machine if the runtime failed to contain it (a fork bomb, os.kill(-1, 9))
is only launched after a separate cell proved that the limit which contains it is in force in that session;
otherwise the test fails without launching it. Bombs are bounded (`for _ in range(10): os.fork()`).
"""

from __future__ import annotations

import os
import socket
import textwrap
import time
from pathlib import Path

import pytest

from tool_runtime import SessionPool
from tool_runtime.result import STATE_LOST

from .runtime_helpers import descendants, describe, parent_of, value

IS_ROOT = os.geteuid() == 0
FILE_LIMIT = 64 << 20
PROCESS_LIMIT = 32


@pytest.fixture(scope="module")
def pool():
    with SessionPool(
        max_sessions=16, timeout=5.0, interrupt_grace=0.5, max_file_bytes=FILE_LIMIT, max_processes=PROCESS_LIMIT
    ) as p:
        yield p


@pytest.fixture(scope="module")
def witness(pool):
    """A bystander session whose state must survive every hostile cell of every other session."""
    s = pool.open()
    s.run("witness = 'intact'")
    yield s
    s.close()


@pytest.fixture(autouse=True)
def contained(pool, witness):
    template = pool.info["template_pid"]
    yield
    assert pool.info["template_pid"] == template and pool.info["template_alive"], "the template died"
    assert witness.run("witness").output == "'intact'\n", "another session lost its state"
    with pool.open(timeout=5) as fresh:  # the pool still forks working sessions
        assert fresh.run("6 * 7").output == "42\n"


@pytest.fixture
def session(pool):
    s = pool.open()
    s.run("mine = 'kept'")
    yield s
    s.close()


def state_kept(session) -> bool:
    return session.run("mine").output == "'kept'\n"


def require_own_pid_namespace(session, other) -> None:
    """Prove that os.kill(-1, ...) in `session` can only reach processes of its own PID namespace."""
    probe = "[__import__('os').getpid(), __import__('os').readlink('/proc/self/ns/pid')]"
    ns_pid, ns = value(session, probe)
    _, other_ns = value(other, probe)
    # The host's view of the session process: its pids from the host's namespace down to its own.
    nspids = Path(f"/proc/{session.pid}/status").read_text().split("NSpid:")[1].split("\n")[0].split()
    ok = (
        ns != os.readlink("/proc/self/ns/pid")
        and ns != other_ns
        and ns_pid <= 2
        and os.readlink(f"/proc/{session.pid}/ns/pid") == ns
        and len(nspids) >= 2
        and int(nspids[-1]) == ns_pid
    )
    if not ok:
        pytest.fail(
            f"session is not alone in its own PID namespace ({ns_pid=}, {ns=}, {nspids=}); "
            "refusing to run os.kill(-1, 9)"
        )


def require_process_limit(pool, session) -> None:
    """Prove that a fork bomb in `session` is bounded by a per-session limit that applies to it."""
    facts = value(
        session,
        textwrap.dedent("""\
        [__import__('os').getuid(),
         int(open('/proc/self/status').read().split('CapEff:')[1].split()[0], 16),
         __import__('resource').getrlimit(__import__('resource').RLIMIT_NPROC)[0],
         [l.split(':', 2)[2].strip() for l in open('/proc/self/cgroup') if ':pids:' in l]]"""),
    )
    uid, capeff, nproc, pids_paths = facts
    pids_max = None
    if pids_paths and "pids" in pool.info["isolation"]["cgroups"]:
        f = Path("/sys/fs/cgroup/pids" + pids_paths[0], "pids.max")
        pids_max = int(f.read_text()) if f.exists() else None
    by_cgroup = pids_max is not None and pids_max <= PROCESS_LIMIT
    by_rlimit = uid != 0 and capeff == 0 and nproc <= PROCESS_LIMIT
    if not (by_cgroup or by_rlimit):
        pytest.fail(
            f"no per-session process limit in force ({pids_max=}, {uid=}, {capeff=:#x}, {nproc=}); "
            "refusing to launch a fork bomb"
        )


# ------------------------------------------------------------------------------------------------ processes


def test_fork_bomb_is_bounded(pool, session):
    require_process_limit(pool, session)
    r = session.run("import os\nfor _ in range(10):\n    os.fork()", timeout=20)
    assert r.status in ("ok", "error") and not r.state_lost
    assert "BlockingIOError" in r.output or "Resource temporarily unavailable" in r.output
    # Forked copies still finishing the cell may print into a cell that runs meanwhile (as in Jupyter): wait
    # until they are gone (what they wrote between cells is dropped), then the session is quiet and intact.
    deadline = time.monotonic() + 30
    while len(descendants(parent_of(session.pid), live=True)) > 1:
        assert time.monotonic() < deadline, describe(descendants(parent_of(session.pid)))
        time.sleep(0.05)
    assert state_kept(session)
    if "pids" in pool.info["isolation"]["cgroups"]:
        path = value(session, "[l.split(':', 2)[2].strip() for l in open('/proc/self/cgroup') if ':pids:' in l][0]")
        cg = Path("/sys/fs/cgroup/pids" + path)
        # RLIMIT_NPROC (per-session uid) or the pids cgroup stopped it: the cgroup never held more.
        if (cg / "pids.peak").exists():
            assert int((cg / "pids.peak").read_text()) <= int((cg / "pids.max").read_text())


def test_kill_all_processes_stays_inside_the_session(pool, session, witness):
    require_own_pid_namespace(session, witness)
    r = session.run(
        "import os, subprocess\nchild = subprocess.Popen(['sleep', '100'])\n"
        "os.kill(-1, 9)\nchild.wait()\nprint('survived', child.returncode)"
    )
    assert (r.status, r.output) == ("ok", "survived -9\n")
    assert state_kept(session)


def test_kill_parent_does_not_reach_the_template(pool, session):
    r = session.run("import os\nos.kill(os.getppid(), 9)")
    assert not r.state_lost and r.status in ("ok", "error")
    assert state_kept(session)
    r = session.run("import os, signal\nos.kill(os.getppid(), signal.SIGTERM)")
    assert state_kept(session)


def test_kill_template_by_pid_is_not_permitted(pool, session):
    template = pool.info["template_pid"]
    r = session.run(f"import os\nos.kill({template}, 9)")
    # Another PID namespace: that number names no process there, or one the session may not signal.
    assert r.status == "error" and ("ProcessLookupError" in r.output or "PermissionError" in r.output)


def test_os_exit_crashes_and_restarts(session):
    r = session.run("import os\nprint('bye')\nos._exit(0)")
    assert (r.status, r.state_lost) == ("crashed", True)
    assert "exited with code 0" in r.output and STATE_LOST in r.output
    assert session.run("'fresh'").output == "'fresh'\n"


def test_segfault_crashes_and_restarts(session):
    r = session.run("import ctypes\nctypes.string_at(0)")
    assert (r.status, r.state_lost) == ("crashed", True)
    assert "SIGSEGV" in r.output and STATE_LOST in r.output
    assert session.run("'fresh'").output == "'fresh'\n"


def test_c_stack_overflow_with_raised_recursion_limit(session):
    r = session.run(
        "import sys, json\nsys.setrecursionlimit(10**7)\nl = []\nfor _ in range(10**6): l = [l]\njson.dumps(l)",
        timeout=10,
    )
    assert (r.status, r.state_lost) == ("crashed", True) and "SIGSEGV" in r.output
    assert session.run("1").output == "1\n"


def test_unbounded_recursion_with_raised_limit(session):
    r = session.run("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)", timeout=2.0)
    # Python 3.11 keeps Python frames off the C stack: this grows memory until the timeout (or MemoryError).
    assert r.status in ("timeout", "error"), r.output
    assert "Execution timed out after 2.0 seconds" in r.output or "Error" in r.output
    assert r.state_lost or state_kept(session)
    assert session.run("'alive'").output == "'alive'\n"


def test_sys_exit_and_exit_are_harmless(session):
    r = session.run("import sys; sys.exit()")
    assert not r.state_lost and r.output.endswith("SystemExit\n")
    r = session.run("exit()")
    assert not r.state_lost and r.output == ""
    assert state_kept(session)


def test_thread_left_running(session):
    r = session.run(
        "import threading\ndef spin():\n    while True:\n        sum(range(1000))\n"
        "threading.Thread(target=spin, daemon=True).start()\n'started'"
    )
    assert r.output == "'started'\n"
    t = time.monotonic()
    assert session.run("2 + 2").output == "4\n"
    assert time.monotonic() - t < 2.0
    assert state_kept(session)


def test_sigint_ignored_busy_loop_is_killed(session):
    r = session.run("import signal\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True: pass", timeout=1.0)
    assert (r.status, r.state_lost) == ("timeout", True) and STATE_LOST in r.output
    assert session.run("'fresh'").output == "'fresh'\n"


def test_c_level_loop_is_killed(session):
    r = session.run("sum(range(10**13))", timeout=1.0)
    assert (r.status, r.state_lost) == ("timeout", True)


# ------------------------------------------------------------------------------------------------ memory, files


def test_huge_string_is_a_memory_error(session):
    r = session.run("' ' * 10**11")
    assert (r.status, r.state_lost) == ("error", False) and "MemoryError" in r.output
    assert state_kept(session)


def test_huge_numpy_array_is_a_memory_error(session):
    r = session.run("import numpy\nnumpy.ones((60000, 60000))")
    assert (r.status, r.state_lost) == ("error", False) and "MemoryError" in r.output
    assert state_kept(session)


def test_endless_print(session):
    r = session.run("while True: print('x' * 80)", timeout=1.0)
    assert (r.status, r.state_lost) == ("timeout", False)
    assert state_kept(session)


def test_ten_gigabyte_file_is_stopped(session):
    r = session.run(
        "with open('big.bin', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(b'\\0' * (1 << 20))",
        timeout=20,
    )
    assert (r.status, r.state_lost) == ("error", False) and "File too large" in r.output
    assert os.path.getsize(os.path.join(session.workdir, "big.bin")) <= FILE_LIMIT
    assert state_kept(session)


def test_closing_stdout(session):
    r = session.run("import sys\nsys.stdout.close()\nprint('still printing')")
    assert r.output == "still printing\n"
    r = session.run("import sys, os\nsys.stderr.close(); os.close(1)\nprint('python-level still works')")
    assert r.output == "python-level still works\n"
    assert state_kept(session)


def test_input_does_not_hang(session):
    t = time.monotonic()
    r = session.run("input()")
    assert r.status == "error" and time.monotonic() - t < 2 and r.output.endswith("EOFError: EOF when reading a line\n")


# ------------------------------------------------------------------------------------------------ isolation


def test_no_network(pool, session):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.3)
    port = srv.getsockname()[1]
    try:
        r = session.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
        if pool.info["isolation"]["net_namespace"]:
            assert r.status == "error" and ("unreachable" in r.output or "refused" in r.output)
            assert value(session, "[n for _, n in __import__('socket').if_nameindex()]") == ["lo"]
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()
    if IS_ROOT:
        assert pool.info["isolation"]["net_namespace"]


def test_other_sessions_files_are_private(pool, session):
    other = pool.open()
    try:
        other.run("open('secret.txt', 'w').write('s3cret')")
        secret_dir = other.workdir
        root = os.path.dirname(secret_dir)
        for code in (
            f"__import__('os').listdir({secret_dir!r})",
            f"open({os.path.join(secret_dir, 'secret.txt')!r}).read()",
        ):
            r = session.run(code)
            # Its own view has no such directory at all (FileNotFoundError); without a view, no permission.
            assert r.status == "error" and ("PermissionError" in r.output or "FileNotFoundError" in r.output), (
                code,
                r.output,
            )
            assert "s3cret" not in r.output
        # The pool's directory: not listable (a root-owned 0711 dir), or (in a user namespace, where the session
        # owns its whole tmpfs) a listing of the session's own directory only.
        r = session.run(f"print(__import__('os').listdir({root!r}))")
        assert "PermissionError" in r.output or r.output == f"[{os.path.basename(session.workdir)!r}]\n", r.output
    finally:
        other.close()


def test_host_files_are_not_writable(pool, session):
    if not IS_ROOT and not pool.info["isolation"]["user_namespace"]:
        pytest.fail("run the suite as root or where user namespaces are allowed: sessions need their own uid")
    for path in ("/etc/tool_runtime_probe", os.path.join(os.path.dirname(__file__), "probe.txt")):
        r = session.run(f"open({path!r}, 'w')")
        # Read-only view (EROFS), no such directory in the view, or no permission without one.
        assert r.status == "error" and any(
            e in r.output for e in ("PermissionError", "Read-only file system", "FileNotFoundError")
        ), r.output
        assert not os.path.exists(path)


def test_temporary_files_stay_inside_the_pool(pool, session, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    r = session.run(f"open({str(secret)!r}).read()")
    assert r.status == "error" and "s3cret" not in r.output
    r = session.run("open('/tmp/left-behind.txt', 'w').write('x')")
    assert r.status == "ok"
    if pool.info["isolation"]["private_tmp"]:
        assert not os.path.exists("/tmp/left-behind.txt")  # a private tmpfs, gone with the pool
    if IS_ROOT:
        assert "/tmp" in pool.info["isolation"]["private_tmp"]


def test_pickle_payload_on_the_channel_is_never_unpickled(session, tmp_path):
    marker = tmp_path / "pwned"
    r = session.run(
        textwrap.dedent(f"""\
        import os, pickle, stat, struct
        class Boom:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        payload = pickle.dumps(Boom())
        for fd in map(int, os.listdir('/proc/self/fd')):
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.write(fd, struct.pack('>I', len(payload)) + payload)
            except OSError:
                pass
        """)
    )
    time.sleep(0.2)
    assert not marker.exists()
    assert (r.status, r.state_lost) == ("crashed", True) and "protocol" in r.output
    assert session.run("'fresh'").output == "'fresh'\n"


def test_oversized_frame_on_the_channel(session):
    r = session.run(
        "import os, stat\nfor fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
        "        if stat.S_ISSOCK(os.fstat(fd).st_mode): os.write(fd, b'\\xff\\xff\\xff\\xff')\n"
        "    except OSError: pass"
    )
    assert (r.status, r.state_lost) == ("crashed", True) and "exceeds the cap" in r.output


def test_forked_child_cannot_use_the_channel(session):
    r = session.run(
        textwrap.dedent("""\
        import os, stat
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            n = 0
            for fd in map(int, os.listdir('/proc/self/fd')):
                try:
                    n += stat.S_ISSOCK(os.fstat(fd).st_mode)
                except OSError:
                    pass
            os.write(w, str(n).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print('sockets in child:', os.read(r, 16).decode())
        """)
    )
    assert r.output == "sockets in child: 0\n"
    assert state_kept(session)
