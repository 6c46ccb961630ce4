"""tool_runtime: no call outlives its timeout, no reply is taken for another, no leaks, no false deaths.

- A session that stops reading its channel cannot block `run` (the code is written without blocking, within the
  call's timeout); such a session is killed and restarted.
- Frames a cell writes on its own channel (stray, forged, partial) are never taken for the reply to a later request.
- A template that is slow to answer (busy cleaning up) is not declared dead: neighbours keep their state, their
  `run` is not held up, `pool.close()` returns in bounded time and never raises over what a cell left behind.
- `open`, `run`, `close` and `pool.close` racing from threads leak no descriptor and no process.
- Invalid timeouts are refused before anything runs.

Hostile cells here (a thread spinning in C code, a flood of frames) first prove that the session is a separate,
CPU-limited process that the runtime can kill.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tool_runtime import PoolExhaustedError, SessionClosedError, SessionPool
from tool_runtime.launcher import TemplateBusyError
from tool_runtime.pool import REMOVE_WAIT, SHUTDOWN_WAIT
from tool_runtime.result import STATE_LOST
from tool_runtime.timeouts import MAX_TIMEOUT

TIMEOUT = 1.0
GRACE = 2.0
SLACK = 4.0  # scheduling on a loaded 2-core machine; the failures these tests catch are unbounded waits
CPU_SECONDS = 120
BIG_CELL = "print('big cell ran')\n" + ("#" * 99 + "\n") * 4000  # 400 KB: about twice what a socket buffer holds

# Written into cells: send a frame on every socket of the session (its channel is the only one).
FORGE = """\
import json as _json, os as _os, stat as _stat, struct as _struct
def _forge(obj=None, raw=None):
    data = raw if raw is not None else _json.dumps(obj).encode()
    frame = data if raw is not None else _struct.pack('>I', len(data)) + data
    for fd in map(int, _os.listdir('/proc/self/fd')):
        try:
            if _stat.S_ISSOCK(_os.fstat(fd).st_mode):
                _os.write(fd, frame)
        except OSError:
            pass
def _current_request_id():
    import sys
    f = sys._getframe()
    while f is not None and f.f_code.co_name != 'session_main':
        f = f.f_back
    return f.f_locals['request']['id']
"""


@pytest.fixture(scope="module")
def pool():
    with SessionPool(max_sessions=16, timeout=5.0, interrupt_grace=GRACE, cpu_seconds=CPU_SECONDS, preload=()) as p:
        yield p


@pytest.fixture(scope="module")
def witness(pool):
    """A bystander whose variables must survive everything the other sessions do."""
    s = pool.open()
    s.run("witness = 'intact'")
    yield s
    s.close()


@pytest.fixture(autouse=True)
def contained(pool, witness):
    template = pool.info["template_pid"]
    yield
    assert pool.info["template_pid"] == template and pool.info["template_restarts"] == 0, "the template was replaced"
    assert witness.run("witness").output == "'intact'\n", "a neighbour lost its state"


@pytest.fixture
def session(pool):
    s = pool.open()
    s.run("mine = 'kept'")
    yield s
    s.close()


def value(session, expr: str):
    r = session.run(f"print(repr({expr}))")
    assert r.status == "ok", r.output
    return eval(r.output)  # noqa: S307 - repr of ints/strings/tuples produced by our own probe


def require_killable_cpu_limited_process(session) -> None:
    """Prove that a cell spinning forever in `session` runs in its own process, under a CPU-time limit."""
    pid, cpu_limit = value(
        session, "(__import__('os').getpid(), __import__('resource').getrlimit(__import__('resource').RLIMIT_CPU)[0])"
    )
    host_pid = session.pid
    separate = bool(host_pid) and host_pid != os.getpid() and Path(f"/proc/{host_pid}").exists()
    if not (separate and 0 < cpu_limit <= CPU_SECONDS):
        pytest.fail(
            f"session is not a separate CPU-limited process ({host_pid=}, {pid=}, {cpu_limit=}); "
            "refusing to start a spinning thread"
        )


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def children_of_us() -> set[int]:
    """Our descendant processes (zombies included), from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [os.getpid()]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def settle(check, seconds: float = 10.0) -> bool:
    """Poll `check()` until true (threads and processes end asynchronously after close)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ------------------------------------------------------------------------------------------------ the channel


def test_session_that_stops_reading_its_channel_cannot_block_run(session, caplog):
    require_killable_cpu_limited_process(session)
    # A thread that holds the GIL in C code: the session's main loop can never read its channel again.
    r = session.run(
        "import threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), sum(range(10**15))), daemon=True).start()"
    )
    assert r.status == "ok"
    time.sleep(0.5)
    old_pid = session.pid
    t = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tool_runtime.session"):
        r = session.run(BIG_CELL, timeout=TIMEOUT)
    took = time.monotonic() - t
    assert "did not read its channel" in caplog.text  # the code could not even be sent
    assert (r.status, r.state_lost) == ("timeout", True), r
    assert r.output.startswith(f"Execution timed out after {TIMEOUT} seconds\n") and STATE_LOST in r.output
    assert took < TIMEOUT + GRACE + SLACK
    assert settle(lambda: not Path(f"/proc/{old_pid}").exists() or "Z" in Path(f"/proc/{old_pid}/stat").read_text())
    assert session.run("'next'").output == "'next'\n"  # a fresh session, forked at once
    assert session.run(BIG_CELL).output == "big cell ran\n"
    assert session.restarts == 1


def test_forged_replies_with_guessed_ids_are_dropped(session):
    r = session.run(
        FORGE + "for i in list(range(-2, 50)) + ['1', '2', None, 'x' * 32]:\n"
        "    _forge({'op': 'done', 'id': i, 'output': 'FORGED', 'status': 'ok'})\n"
        "_forge({'op': 'ready'}); _forge({'op': 'pong', 'id': 3})\n"
        "print('real')"
    )
    assert (r.output, r.status, r.state_lost) == ("real\n", "ok", False)
    for i in range(5):
        assert session.run(f"{i} * 10").output == f"{i * 10}\n"
    assert session.run("mine").output == "'kept'\n"


def test_reply_forged_by_a_cell_is_never_taken_for_a_later_request(session):
    # The cell can read its own request's id and reply in its own name (it decides its own output anyway);
    # the real reply that follows must not become the result of the next request.
    r = session.run(
        FORGE + "_forge({'op': 'done', 'id': _current_request_id(), 'output': 'forged\\n', "
        "'status': 'ok'})\nimport time; time.sleep(0.5)\nprint('real reply of the first cell')"
    )
    assert r.output == "forged\n"
    assert session.run("'second'").output == "'second'\n"
    assert session.run("'third'").output == "'third'\n"
    assert session.run("mine").output == "'kept'\n"


def test_forged_reply_then_sleep_does_not_hang_the_next_big_cell(session):
    # The case: a fake reply, then the session sleeps instead of reading, and the next cell is 400 KB.
    r = session.run(
        FORGE + "_forge({'op': 'done', 'id': _current_request_id(), 'output': '', 'status': 'ok'})\n"
        "import time; time.sleep(3600)"
    )
    assert r.status == "ok"
    t = time.monotonic()
    r = session.run(BIG_CELL, timeout=TIMEOUT)
    assert time.monotonic() - t < TIMEOUT + GRACE + SLACK
    # The interrupt at the timeout ends the sleeping cell; the session then reads the big cell and runs it.
    assert (r.output, r.status, r.state_lost) == ("big cell ran\n", "ok", False), r
    assert session.run("mine").output == "'kept'\n"


def test_partial_forged_frame_is_bounded_and_restarts(session):
    r = session.run(FORGE + "_forge(raw=_struct.pack('>I', 4000) + b'{\"op\": \"done\"')", timeout=TIMEOUT)
    # the real reply is read as the rest of the forged frame: a broken stream, so the session is restarted
    assert r.state_lost and r.status in ("crashed", "timeout"), r
    assert session.run("'after'").output == "'after'\n"


def test_cell_closing_its_channel_is_a_crash_and_restarts(session):
    r = session.run(
        "import os, stat\nfor fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
        "        if stat.S_ISSOCK(os.fstat(fd).st_mode): os.close(fd)\n    except OSError: pass\n"
        "import time; time.sleep(3600)",
        timeout=30,
    )
    assert (r.status, r.state_lost) == ("crashed", True)
    assert "closed its channel" in r.output and r.seconds < 30
    assert session.run("'fresh'").output == "'fresh'\n"


def test_flood_of_stray_frames_while_cells_run(session):
    require_killable_cpu_limited_process(session)
    session.run(
        FORGE + "import threading, time\n"
        "def _flood():\n"
        "    for i in range(400):\n"
        "        _forge({'op': 'done', 'id': i, 'output': 'FLOOD', 'status': 'ok'})\n"
        "        time.sleep(0.002)\n"
        "threading.Thread(target=_flood, daemon=True).start()"
    )
    for i in range(20):
        r = session.run(f"'cell {i}'")
        assert (r.output, r.status) == (f"'cell {i}'\n", "ok")
    assert session.run("mine").output == "'kept'\n"


# ------------------------------------------------------------------------------------------------ a busy template


def test_busy_template_is_not_taken_for_dead(pool, witness):
    """The template stops answering for a while (here: SIGSTOP, as if it spent seconds deleting what a cell
    left behind). Nothing is killed; neighbours' calls are not held up; open() waits and then succeeds."""
    victim, crasher = pool.open(), pool.open()
    template = pool.info["template_pid"]
    os.kill(template, signal.SIGSTOP)
    try:
        t = time.monotonic()
        victim.close()  # its release cannot be answered now: close gives up waiting after a bounded time
        assert time.monotonic() - t < 2.0 + SLACK
        t = time.monotonic()
        r = witness.run("import time; time.sleep(0.2); witness", timeout=2)
        assert r.output == "'intact'\n" and time.monotonic() - t < 2 + SLACK
        t = time.monotonic()
        r = crasher.run("import os; os._exit(3)", timeout=TIMEOUT)
        assert (r.status, r.state_lost) == ("crashed", True)
        assert time.monotonic() - t < TIMEOUT + GRACE + SLACK
        box: dict = {}
        opener = threading.Thread(target=lambda: box.setdefault("s", pool.open()))
        opener.start()
        time.sleep(1.0)
        assert pool.info["template_alive"]
    finally:
        os.kill(template, signal.SIGCONT)
    opener.join(30)
    assert "s" in box and box["s"].run("'opened'").output == "'opened'\n"
    assert crasher.run("'restarted'").output == "'restarted'\n"
    box["s"].close()
    crasher.close()
    assert pool.info["template_pid"] == template and pool.info["template_restarts"] == 0


def template_children(pid: int) -> set[int]:
    """Pids of the template's child processes: one per session (the spares included)."""
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out.update(int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split())
        except OSError:
            pass
    return out


def test_open_gives_up_on_a_stuck_template_and_the_late_session_is_released():
    fds_before = fd_count()
    with SessionPool(max_sessions=4, timeout=5.0, preload=(), spare_sessions=1, ready_timeout=1.0) as p:
        s = p.open()
        s.run("v = 1")
        template = p.info["template_pid"]
        # one child process of the template per session (work dirs live in each session's own tmpfs)
        workdirs = lambda: template_children(template)  # noqa: E731
        assert settle(lambda: len(workdirs()) == 2)  # s and the spare
        before = workdirs()
        os.kill(template, signal.SIGSTOP)
        try:
            t = time.monotonic()
            with pytest.raises(TemplateBusyError, match="did not answer"):
                p.open()
            assert time.monotonic() - t < 1.0 + SLACK
            assert p.info["template_alive"] and s.run("v").output == "1\n"
        finally:
            os.kill(template, signal.SIGCONT)
        p.ready_timeout = 30.0  # from here on a slow start on a loaded machine is no failure
        # The template now hands over its spare, which nobody waits for any more, and forks a new spare; the
        # pool has it released at once (process ended): two sessions again, not the same two.
        assert settle(lambda: workdirs() != before and len(workdirs()) == 2), (before, workdirs())
        assert p.info["live_sessions"] == 1 and p.info["template_restarts"] == 0
        assert p.open().run("'works'").output == "'works'\n"
    assert settle(lambda: fd_count() == fds_before)


def test_slow_cleanup_of_a_closed_session_holds_up_no_neighbour(pool, witness):
    """The issue's case, kept small: a cell leaves many directories, then its session is closed or crashes.
    Deleting them keeps the template busy for seconds (about 3 ms per directory on this VM's disk)."""
    victim, crasher = pool.open(), pool.open()
    for s, n in ((victim, 3000), (crasher, 300)):
        r = s.run(f"import os\nfor i in range({n}): os.mkdir(f'd{{i}}')\nprint(len(os.listdir()))", timeout=30)
        assert r.output == f"{n}\n"
    t = time.monotonic()
    victim.close()
    assert time.monotonic() - t < 2.0 + SLACK
    t = time.monotonic()
    r = crasher.run("import os; os._exit(0)", timeout=TIMEOUT)
    assert (r.status, r.state_lost) == ("crashed", True)
    assert time.monotonic() - t < TIMEOUT + GRACE + SLACK
    t = time.monotonic()
    assert witness.run("witness", timeout=2).output == "'intact'\n"
    assert time.monotonic() - t < 2 + SLACK
    with pool.open(timeout=30) as fresh:
        assert fresh.run("6 * 7").output == "42\n"
    assert crasher.run("'restarted'").output == "'restarted'\n"
    crasher.close()
    assert pool.info["template_alive"] and pool.info["template_restarts"] == 0


def test_pool_close_survives_a_deep_tree_and_is_bounded():
    before = children_of_us()
    p = SessionPool(max_sessions=4, timeout=10.0, preload=())
    root = p.info["workdir_root"]
    s, n = p.open(), p.open()
    n.run("v = 1")
    r = s.run(
        "import os\nhome = os.getcwd()\nfor _ in range(1500):\n    os.mkdir('d'); os.chdir('d')\n"
        "os.chdir(home)\nfor i in range(1000): os.mkdir(f'e{i}')\nprint('made')"
    )
    assert r.output == "made\n"
    assert n.run("v").output == "1\n"
    t = time.monotonic()
    p.close()  # must not raise (a recursive delete of 1500 levels raises RecursionError)
    assert time.monotonic() - t < SHUTDOWN_WAIT + REMOVE_WAIT + SLACK
    assert not os.path.exists(root)
    assert settle(lambda: not os.path.exists(root + ".removing"), 30)
    assert settle(lambda: children_of_us() - before == set())


# ------------------------------------------------------------------------------------------------ races and leaks


def _hammer(p: SessionPool, stop: threading.Event, errors: list) -> None:
    rng = random.Random()
    while not stop.is_set():
        try:
            s = p.open(timeout=0.5)
            if rng.random() < 0.7:
                s.run(rng.choice(["1 + 1", "import time; time.sleep(0.05)", "import os; os._exit(1)"]), timeout=2)
            if rng.random() < 0.8:
                s.close()
        except (SessionClosedError, PoolExhaustedError):
            if p.closed:
                return
        except Exception as exc:  # noqa: BLE001 - collected: anything else is a failure of the runtime
            if not p.closed:
                errors.append(repr(exc))
            return


def test_open_run_close_and_pool_close_racing_leak_nothing():
    fds_before = fd_count()
    procs_before = children_of_us()
    errors: list = []
    for round_ in range(4):
        p = SessionPool(max_sessions=4, timeout=5.0, preload=(), spare_sessions=1)
        stop = threading.Event()
        threads = [threading.Thread(target=_hammer, args=(p, stop, errors)) for _ in range(5)]
        for t in threads:
            t.start()
        time.sleep(0.3 + 0.4 * round_)
        p.close()  # while threads are inside open(), run() and close()
        stop.set()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a thread hangs after pool.close()"
        with pytest.raises(SessionClosedError):
            p.open()
    assert errors == []
    assert settle(lambda: fd_count() == fds_before), f"descriptors leaked: {fds_before} -> {fd_count()}"
    assert settle(lambda: children_of_us() - procs_before == set()), children_of_us() - procs_before


def test_session_close_racing_its_own_run_and_restart(pool):
    fds_before = fd_count()
    for cell in ("import time; time.sleep(5)", "import os; os._exit(1)", "1 + 1"):
        for delay in (0.0, 0.01, 0.05):
            s = pool.open()
            box: dict = {}

            def runner(s=s, cell=cell, box=box):
                try:
                    box["r"] = s.run(cell, timeout=3)
                except SessionClosedError as exc:
                    box["e"] = exc

            t = threading.Thread(target=runner)
            t.start()
            time.sleep(delay)
            s.close()
            t.join(10)
            assert not t.is_alive() and ("r" in box or "e" in box)
            with pytest.raises(SessionClosedError):
                s.run("1")
    assert settle(lambda: fd_count() == fds_before), f"descriptors leaked: {fds_before} -> {fd_count()}"


# ------------------------------------------------------------------------------------------------ bad timeouts

BAD_TIMEOUTS = [-1, -0.5, 0, 0.0, -0.0, math.nan, math.inf, -math.inf, 30 * 24 * 3600, 1e300, MAX_TIMEOUT * 2]


@pytest.mark.parametrize("bad", BAD_TIMEOUTS, ids=repr)
def test_invalid_run_timeout_is_refused_before_anything_runs(session, bad):
    with pytest.raises(ValueError, match="timeout"):
        session.run("mine = 'overwritten'", timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        asyncio.run(session.arun("mine = 'overwritten'", timeout=bad))
    assert session.run("mine").output == "'kept'\n"  # nothing ran, the channel is in step
    assert session.restarts == 0


def test_timeout_of_the_wrong_type_is_a_type_error(session):
    for bad in ("10", True, [1]):
        with pytest.raises(TypeError, match="timeout"):
            session.run("1", timeout=bad)
    assert session.run("mine").output == "'kept'\n"


@pytest.mark.parametrize("name", ["timeout", "interrupt_grace", "open_timeout", "ready_timeout", "start_timeout"])
def test_invalid_pool_timeouts_are_refused_before_the_template_starts(name):
    before = children_of_us()
    zero_ok = name in ("interrupt_grace", "open_timeout")
    for bad in (-1, math.nan, math.inf, 30 * 24 * 3600) + (() if zero_ok else (0,)):
        with pytest.raises(ValueError, match=name):
            SessionPool(preload=(), **{name: bad})
    assert children_of_us() - before == set()


def test_invalid_open_timeout_is_refused(pool):
    live = pool.info["live_sessions"]
    for bad in (-1, math.nan, math.inf, 30 * 24 * 3600):
        with pytest.raises(ValueError, match="timeout"):
            pool.open(timeout=bad)
    assert pool.info["live_sessions"] == live  # no slot was taken
    with pool.open(timeout=0) as s:  # 0 (do not wait) and None (wait forever) stay valid
        assert s.run("1").output == "1\n"
    with pool.open(timeout=None) as s:
        assert s.run("2").output == "2\n"


def test_long_valid_timeout_runs_normally(session):
    r = session.run("mine", timeout=MAX_TIMEOUT)
    assert r.output == "'kept'\n"
    assert session.run("mine", timeout=7 * 24 * 3600).output == "'kept'\n"
