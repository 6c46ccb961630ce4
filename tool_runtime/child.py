"""The code that runs inside a session process: isolation set-up after fork, then the cell loop.

The template (template.py) builds one IPython shell, warms it up and forks; each fork runs `session_entry`:
as PID 1 of its new PID namespace it forks the session proper and stays behind as a reaper. The session joins
its cgroups and an empty network namespace, locks itself down (rlimits, unprivileged uid, private work dir),
replaces stdio with bounded capture, says "ready" and answers `run` frames until its channel closes. Nothing
here trusts the cells it runs: the parent treats every frame it gets back as untrusted data (protocol.py).
"""

from __future__ import annotations

import ast
import gc
import os
import random
import re
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, NoReturn

from . import fsview, limits, tracebacks
from .config import RuntimeConfig
from .output import BoundedWriter, FdCapture, NoStdin
from .protocol import FrameReader, PeerClosed, ProtocolError, send_frame

MAX_REQUEST_BYTES = 64 << 20  # code sent by the parent


def max_reply_bytes(max_output_chars: int) -> int:
    """Cap for frames a session sends: its output is bounded, so its frames are too."""
    return 64 * 1024 + 8 * max_output_chars


# --------------------------------------------------------------------------------------------- the shell

OUT_PROMPT = "Out[1]: "  # the seed's output prompt (its cells never advanced the counter)


def make_shell():
    """The IPython shell every session inherits: no history (no sqlite thread), no colours, no output cache (no
    references kept to big results), and the seed sandbox's texts for echoes and errors (tracebacks.py)."""
    import contextlib
    import warnings

    import IPython
    from IPython.core.displayhook import DisplayHook
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    hide = (os.path.dirname(os.path.abspath(IPython.__file__)) + os.sep,)  # IPython's own run_code frame

    class SessionDisplayHook(DisplayHook):
        """Echo of a cell's last expression, as the seed's sandbox returned it: its terminal shell wrote
        `Out[1]: ` and, for a multi-line value, a newline; the sandbox then removed the prompt at the start of
        a line (with the whitespace after it), so the prompt shows only after output that did not end a line."""

        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict, md_dict=None) -> None:
            if "text/plain" not in format_dict:
                return
            text = format_dict["text/plain"]
            if "\n" in text:
                text = "\n" + text
            runner = getattr(self.shell, "runner", None)
            if runner is not None and not runner.writer.at_line_start():
                text = OUT_PROMPT + text
            elif not text.startswith("\n"):
                text = text.lstrip()
            print(text)

        def log_output(self, format_dict) -> None:
            pass  # IPython 9 would keep every echoed value in the history until the session ends

    class SessionShell(InteractiveShell):
        runner: CellRunner | None = None
        displayhook_class = SessionDisplayHook

        def ask_exit(self) -> None:
            pass  # exit()/quit() do nothing: the session keeps running, as in the seed's sandbox

        def transform_cell(self, raw_cell: str) -> str:
            # IPython's input transformations run its tokenizer over every cell; in a fresh session that first
            # run copies about 0.6 MiB of the template's pages. Plain Python needs none of them.
            cell = plain_python_cell(raw_cell, self.compile.flags)
            return super().transform_cell(raw_cell) if cell is None else cell

        @contextlib.contextmanager
        def _tee(self, channel):
            # IPython 9 wraps sys.stdout.write to keep a copy of everything printed until the session ends:
            # tens of microseconds per print and unbounded memory. Cell output is captured by the runner.
            yield

        def showtraceback(
            self, exc_tuple=None, filename=None, tb_offset=None, exception_only=False, running_compiled_code=False
        ):
            etype, value, _ = exc_tuple if exc_tuple is not None else sys.exc_info()
            if value is None:
                return
            runner = self.runner
            if etype is KeyboardInterrupt and runner is not None and runner.interrupted:
                # Maybe the pool's timeout interrupt (the parent then writes the timeout line instead), maybe a
                # SIGINT of the cell itself: only the parent knows, so the text goes aside for it (INTERRUPT_TEXT).
                runner.interrupt_text = self._interrupt_text(value)
                return
            if etype is UsageError:
                self.show_usage_error(value)
                return
            if isinstance(value, SyntaxError):
                self._show_syntax_error(value, filename, running_compiled_code)
            elif exception_only or isinstance(value, SystemExit):
                self._print_error(value, tracebacks.format_exception_only)
            else:
                self._print_error(value, lambda v: tracebacks.format_exception(v, hide))

        def _interrupt_text(self, value: BaseException) -> str:
            tb = value.__traceback__  # its last frame is CellRunner._on_sigint: ours, not the cell's
            while tb is not None and tb.tb_next is not None and tb.tb_next.tb_next is not None:
                tb = tb.tb_next
            if tb is not None and tb.tb_next is not None and tb.tb_next.tb_frame.f_code is _ON_SIGINT_CODE:
                tb.tb_next = None
            try:
                text = tracebacks.format_exception(value, hide)
            except Exception:  # noqa: BLE001 - as in _print_error
                text = "KeyboardInterrupt"
            return text[-INTERRUPT_TEXT:]

        def showsyntaxerror(self, filename=None, running_compiled_code=False):
            _, value, _ = sys.exc_info()
            if value is not None:
                self._show_syntax_error(value, filename, running_compiled_code)

        def _show_syntax_error(self, value, filename, running_compiled_code: bool) -> None:
            if filename:
                value.filename = filename
            if running_compiled_code:  # raised by running code (eval, sympify): with its frames
                self._print_error(value, lambda v: tracebacks.format_exception(v, hide))
            else:  # the cell did not compile: no frames, only where and what
                self._print_error(value, lambda v: "".join(tracebacks.exception_lines(v)))

        def showindentationerror(self):
            self.showsyntaxerror()

        def _print_error(self, value: BaseException, formatter) -> None:
            try:
                text = formatter(value)
            except Exception:  # noqa: BLE001 - an odd exception object (e.g. a SyntaxError with bad fields)
                text = f"{type(value).__name__}: {tracebacks.safe_str(value)}"
            self.showing_traceback = True
            try:
                print(text)
            finally:
                self.showing_traceback = False

    warnings.filterwarnings("ignore", message="To exit: use")
    cfg = Config()
    cfg.HistoryManager.enabled = False
    cfg.InteractiveShell.colors = "NoColor"
    cfg.InteractiveShell.xmode = "Plain"
    cfg.InteractiveShell.cache_size = 0
    cfg.InteractiveShell.autoindent = False
    shell = SessionShell.instance(config=cfg)
    # Only the plain-text form of an echoed value is read, as in the seed's terminal shell: no LaTeX of sympy
    # results or HTML of DataFrames is computed and thrown away.
    shell.display_formatter.active_types = ["text/plain"]
    # IPython's key/value store (%cd's directory history, %bookmark, %store) lives in the profile directory,
    # which sessions cannot see: in memory, per session, `%cd /tmp` works and prints the new directory.
    shell.db = {}
    return shell


# Lines IPython would strip as pasted prompts (`>>> `, `In [1]: `, `...: `), even where they parse as Python.
_PROMPT_LINE = re.compile(r"^(\s*>>>|((\[nav\]|\[ins\])? )?In \[\d+\]: |\s*\.{3,}:)", re.MULTILINE)


def plain_python_cell(raw_cell: str, flags: int = 0) -> str | None:
    """The cell exactly as IPython's input transformations would return it, when they would only drop leading
    blank lines and add a final newline: the cell compiles as plain Python, its first line is not indented and
    no line looks like a pasted prompt (so there are no magics, shell escapes, help syntax or prompts to
    strip). None otherwise."""
    if _PROMPT_LINE.search(raw_cell):
        return None
    lines = raw_cell.splitlines(keepends=True)
    first = 0
    while first < len(lines) and lines[first].isspace():
        first += 1
    if first == len(lines) or lines[first][:1].isspace():
        return None
    cell = "".join(lines[first:])
    if not cell.endswith("\n"):
        cell += "\n"
    try:
        compile(cell, "<cell>", "exec", flags=ast.PyCF_ONLY_AST | flags, dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
        return None
    return cell


def warm_up(shell, code: str, error_code: str) -> str:
    """Run the warm-up cells the way sessions run cells (CellRunner, bounded writer, echo and error texts), so
    that code is specialized once in the template; then forget everything they defined."""
    before = set(shell.user_ns)
    saved = sys.stdout, sys.stderr, sys.stdin, signal.getsignal(signal.SIGINT)
    runner = CellRunner(shell, BoundedWriter(1000))
    outputs = []
    try:
        outputs.append(runner.run(code)["output"])
        outputs.append(runner.run(error_code)["output"])
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved[:3]
        signal.signal(signal.SIGINT, saved[3])
        shell.runner = None
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]
    forget_outputs(shell)
    shell.execution_count = 1
    return "".join(outputs)


def forget_outputs(shell) -> None:
    """Drop what IPython keeps of past cells (IPython 9 keeps outputs and errors per execution count)."""
    history = shell.history_manager
    if history is None:
        return
    for name in ("outputs", "exceptions", "output_hist", "output_hist_reprs"):
        kept = getattr(history, name, None)
        if isinstance(kept, dict):
            kept.clear()


# --------------------------------------------------------------------------------------------- one cell


INTERRUPT_TEXT = 4000  # characters kept of a KeyboardInterrupt's traceback (the reply's frame cap has room)


class CellRunner:
    """Runs cells in the shell with all output in one BoundedWriter; SIGINT interrupts only a running cell."""

    def __init__(self, shell, writer: BoundedWriter):
        self.shell = shell
        self.writer = writer
        self.stdin = NoStdin()
        self.running = False
        self.interrupted = False
        self.interrupt_text = ""
        shell.runner = self

    def _on_sigint(self, signum, frame) -> None:
        if self.running:
            self.interrupted = True
            raise KeyboardInterrupt
        # An interrupt that arrives between cells (a timeout racing the end of the cell) is ignored.

    def _install(self) -> None:
        sys.stdout = sys.stderr = self.writer
        sys.stdin = self.stdin
        signal.signal(signal.SIGINT, self._on_sigint)

    def run(self, code: str) -> dict[str, Any]:
        shell = self.shell
        self._install()
        self.writer.begin()
        self.interrupted = False
        self.interrupt_text = ""
        status = "ok"
        started = time.perf_counter()
        try:
            self.running = True
            try:
                # Without history, as in the seed's sandbox: every cell is `<ipython-input-1-...>` (file names
                # in warnings match), and a trailing `;` does not silence the echo there either.
                result = shell.run_cell(code)
            finally:
                self.running = False
            err = result.error_before_exec or result.error_in_exec
            if err is not None:
                if isinstance(err, SystemExit) and err.code in (None, 0):
                    status = "ok"
                else:
                    status = "error"
        except KeyboardInterrupt:  # arrived outside the user's code, inside IPython's machinery
            self.running = False
            self.interrupted = True
            status = "error"
        except BaseException:  # noqa: BLE001 - a failure of the machinery itself is reported, not fatal
            self.running = False
            status = "error"
            self.writer.write(traceback.format_exc(limit=-3))
        seconds = time.perf_counter() - started
        text, cut = self.writer.end()
        forget_outputs(shell)
        self._install()  # the cell may have replaced sys.stdout, sys.stdin or the SIGINT handler
        return {
            "op": "done",
            "output": text,
            "cut": cut,
            "status": status,
            "interrupted": self.interrupted,
            "interrupt_text": self.interrupt_text if self.interrupted else "",
            "seconds": seconds,
        }


_ON_SIGINT_CODE = CellRunner._on_sigint.__code__


# --------------------------------------------------------------------------------------------- the process


SESSION_ENV = ("HOME", "TMPDIR", "PWD")  # set to the work dir in each session; USER and LOGNAME to "session"


def warm_lock_down() -> None:
    """Run, in the template, the Python code every session runs in `_lock_down` (environment writes, reseeding)
    often enough that the interpreter has specialized it: a session then only reads those code objects instead
    of copying the pages that hold them (about 0.1 MiB per session)."""
    for _ in range(20):
        os.environ["TOOL_RUNTIME_WARM_UP"] = "1"
        del os.environ["TOOL_RUNTIME_WARM_UP"]
        _reseed()


def _reseed() -> None:
    random.seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        np_random.seed(int.from_bytes(os.urandom(4), "little"))


def _enter_namespaces(cfg: RuntimeConfig, plan: dict[str, Any], spec: dict[str, Any]) -> None:
    """Steps the session's first process takes as root, before the process that runs cells is forked (it
    inherits all of it): stdin, cgroups, OOM priority, network namespace, then its own mount and IPC namespace,
    tmpfs and /proc (fsview.py)."""
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    if spec.get("cgroups"):
        limits.Cgroups.join(spec["cgroups"])
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # under memory pressure the kernel kills a session before the user's process
    except OSError:
        pass
    if plan["net_namespace"]:
        limits.unshare(limits.CLONE_NEWNET)
    if plan.get("view"):
        # In a user namespace the work dir belongs to the pool's uid, which the session's own uid maps to.
        owner = os.getuid() if plan.get("user_namespace") or not plan["users"] else spec["uid"]
        spec["proc_hidepid"] = fsview.enter_session_view(
            plan["view"], spec["workdir"], owner, owner, size=cfg.tmp_bytes, inodes=cfg.tmp_inodes, new_proc=True
        )
    if cfg.nice:
        os.nice(cfg.nice)


def _close_inherited_fds(keep: set[int]) -> None:
    """Close every descriptor the template or the reaper left open (e.g. the host's /proc), except `keep`."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _lock_down(
    cfg: RuntimeConfig, plan: dict[str, Any], spec: dict[str, Any], channel: socket.socket, seccomp_filter: Any
) -> dict[str, Any]:
    """Then, in the process that runs cells: work dir, rlimits, unprivileged uid, fresh keyring, syscall
    filter, environment, seeds."""
    users = plan["users"]
    uid = spec["uid"]
    gid = uid if users else os.getgid()
    workdir = spec["workdir"]
    if not plan.get("view"):  # no view: a directory on the host, removed by the template after the session
        os.mkdir(workdir, 0o700)
        if users:
            os.chown(workdir, uid, gid)
    _close_inherited_fds({channel.fileno(), spec.get("reaper_ready_fd", -1)})
    if plan.get("user_namespace"):
        # Before chroot: the kernel refuses new user namespaces to chrooted processes. Only this uid exists for
        # the session (the pool's uid outside); without per-session uids it is the pool's own uid inside too.
        if users:
            limits.enter_user_namespace(uid, gid)
        else:
            limits.enter_user_namespace(plan["pool_uid"], plan["pool_gid"])
    if plan.get("view"):
        fsview.enter_view(plan["view"], workdir)
    else:
        os.chdir(workdir)

    applied = limits.apply_rlimits(
        address_space=spec["vm_size"] + cfg.memory_limit,
        file_bytes=cfg.max_file_bytes,
        open_files=cfg.max_open_files,
        cpu_seconds=cfg.cpu_seconds,
        processes=cfg.max_processes if users else None,
    )
    os.umask(0o077)
    if plan.get("user_namespace"):
        limits.drop_all_capabilities()
        limits.prctl(limits.PR_SET_NO_NEW_PRIVS, 1)
    elif users:
        limits.drop_privileges(uid, gid)
    else:
        limits.prctl(limits.PR_SET_NO_NEW_PRIVS, 1)
    keyring = True
    try:
        limits.join_new_session_keyring()
    except OSError:
        keyring = False
    if seccomp_filter is not None:
        seccomp_filter.load()

    # One key at a time: os.environ.update runs _collections_abc code no cell needs (0.3 MiB of copied pages).
    for key in SESSION_ENV:
        os.environ[key] = workdir
    os.environ["USER"] = os.environ["LOGNAME"] = "session"
    tempfile.tempdir = None
    _reseed()
    gc.enable()
    return {
        "pid": spec["host_pid"],
        "ns_pid": os.getpid(),
        "uid": os.getuid(),
        "rlimits": applied,
        "keyring": keyring,
        "seccomp": seccomp_filter is not None,
        "view": bool(plan.get("view")),
        "proc_hidepid": spec.get("proc_hidepid", False),  # /proc/1 (its PID 1) shows nothing to the session
    }


REAPER_NAME = "tool-runtime-reaper"  # argv[0] of the native reaper (what `ps` shows)
READY_NATIVE, READY_PYTHON = b"1", b"P"  # the byte each kind of reaper writes once it is set up


def _reaper_exit_code(status: int) -> int:
    """The reaper's exit code tells the template how the session ended: 128+N = killed by signal N,
    255 = exited with a code >= 128, else the session's own exit code."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    code = os.waitstatus_to_exitcode(status)
    return code if 0 <= code < 128 else 255


def _reap_forever(session_pid: int, channel: socket.socket, ready_fd: int, native: int | None) -> NoReturn:
    """PID 1 of a session's namespace: reaps orphans (as init does on a host), forwards the parent's SIGINT
    to the session, and exits when the session does (the kernel then kills whatever is left in the namespace).
    It stays root but runs only this loop; the session cannot signal it (other uid, and init is immune to
    signals from inside its namespace). Once set up it writes a byte to `ready_fd`, which the session waits
    for before it says it is ready.

    `native` is a descriptor of the compiled reaper (reaper.c, opened and tested by the template), which does
    the same in a few pages: a Python process here keeps about 2 MiB of the template's pages as its own copies
    (copy-on-write). This loop is its fallback, also if that exec fails; its ready byte says so."""
    channel.close()
    if native is not None:
        try:
            os.set_inheritable(ready_fd, True)
            os.execve(native, [REAPER_NAME, str(session_pid), str(ready_fd)], {})
        except OSError:
            pass
    # Not dumpable: the session may not read our memory or /proc/1/root (the host's tree, as we are not
    # chrooted), even where it has the same uid on the host (user namespaces).
    limits.prctl(limits.PR_SET_DUMPABLE, 0)

    def forward(signum, frame):
        try:
            os.kill(session_pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        os.write(ready_fd, READY_PYTHON)
    except OSError:
        pass
    os.close(ready_fd)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(255)
        if pid == session_pid:
            os._exit(_reaper_exit_code(status))


def _wait_for_reaper(ready_fd: int, timeout: float = 30.0) -> str:
    """Block until the session's PID 1 is set up (see `_reap_forever`); it is exec'ing meanwhile. Returns which
    kind it is ("native" or "python")."""
    try:
        got = os.read(ready_fd, 1) if select.select([ready_fd], [], [], timeout)[0] else b""
    finally:
        os.close(ready_fd)
    kinds = {READY_NATIVE: "native", READY_PYTHON: "python"}
    if got not in kinds:
        raise RuntimeError("the session's reaper (its PID 1) did not start")
    return kinds[got]


def session_entry(
    channel: socket.socket,
    shell,
    cfg: RuntimeConfig,
    plan: dict[str, Any],
    spec: dict[str, Any],
    seccomp_filter: Any = None,
) -> NoReturn:
    """First code of a freshly forked session (called in the template's child). Never returns."""
    reply_cap = max_reply_bytes(cfg.max_output_chars)
    try:
        os.setsid()
        limits.set_parent_death_signal(signal.SIGKILL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the template's clean-up handler is not for sessions
        # The uid is derived from the host pid of the session's first process, which lives exactly as long as
        # the session: no two live sessions share it. Files of a session live only in its own tmpfs, which
        # dies with it, so a later session that gets the same number finds nothing of the earlier one.
        first_pid = limits.global_pid()
        spec["uid"] = cfg.uid_base + first_pid if plan["users"] else os.getuid()
        spec["host_pid"] = first_pid
        host_proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        _enter_namespaces(cfg, plan, spec)
        if plan["pid_namespace"]:
            # We are PID 1 of a new namespace. The session proper runs as our child (PID 2), so that
            # os.kill(os.getppid(), 9) hits an immune init and orphans of the cell get reaped. SIGINT (the pool's
            # interrupt) stays blocked here until the reaper handles it: pending, not lost.
            ready_r, ready_w = os.pipe()
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            session_pid = os.fork()
            if session_pid:
                os.close(host_proc)
                os.close(ready_r)
                _reap_forever(session_pid, channel, ready_w, plan.get("reaper"))
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            os.close(ready_w)
            spec["reaper_ready_fd"] = ready_r
            limits.set_parent_death_signal(signal.SIGKILL)
            # Our host pid, through the host's /proc (the one mounted now shows only this namespace).
            spec["host_pid"] = int(os.readlink("self", dir_fd=host_proc))
        os.close(host_proc)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which refuses the session
        _fail(channel, exc, reply_cap)
    session_main(channel, shell, cfg, plan, spec, seccomp_filter)


def _fail(channel: socket.socket, exc: BaseException, reply_cap: int) -> NoReturn:
    try:
        send_frame(channel, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"}, reply_cap)
    finally:
        os._exit(70)


def session_main(
    channel: socket.socket,
    shell,
    cfg: RuntimeConfig,
    plan: dict[str, Any],
    spec: dict[str, Any],
    seccomp_filter: Any = None,
) -> NoReturn:
    """The session process: lock down, then answer `run` frames until the channel closes."""
    reply_cap = max_reply_bytes(cfg.max_output_chars)
    try:
        facts = _lock_down(cfg, plan, spec, channel, seccomp_filter)
        shell.user_ns["_dh"] = [os.getcwd()]  # %cd's directory history starts here, not in the template's dir
        capture = FdCapture()
        writer = BoundedWriter(cfg.max_output_chars, capture)
        capture.writer = writer
        runner = CellRunner(shell, writer)
        runner._install()
        capture.start()
    except BaseException as exc:  # noqa: BLE001
        _fail(channel, exc, reply_cap)

    my_pid = os.getpid()

    def poison_channel() -> None:
        # A process forked by a cell must not be able to talk on the session's channel.
        try:
            channel.close()
        except OSError:
            pass
        writer.after_fork_in_child()
        capture.after_fork_in_child()

    os.register_at_fork(
        before=capture.before_fork, after_in_parent=capture.after_fork_in_parent, after_in_child=poison_channel
    )

    try:
        if "reaper_ready_fd" in spec:
            facts["reaper"] = _wait_for_reaper(spec.pop("reaper_ready_fd"))
    except BaseException as exc:  # noqa: BLE001
        _fail(channel, exc, reply_cap)
    try:
        send_frame(channel, {"op": "ready", **facts}, reply_cap)
        reader = FrameReader(channel, MAX_REQUEST_BYTES)
        while True:
            try:
                request = reader.read()
            except (PeerClosed, ProtocolError, OSError):
                break
            if os.getpid() != my_pid:
                break  # a forked copy that returned into this loop
            op = request.get("op")
            if op == "run":
                reply = runner.run(str(request.get("code", "")))
                reply["id"] = request.get("id")
            elif op == "ping":
                reply = {"op": "pong", "id": request.get("id")}
            else:
                reply = {"op": "unknown", "id": request.get("id")}
            if os.getpid() != my_pid:
                break
            send_frame(channel, reply, reply_cap)
    except BaseException:  # noqa: BLE001 - nothing to report to: the parent sees EOF and restarts us
        pass
    os._exit(0)
