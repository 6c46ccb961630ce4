"""The template process: a fresh interpreter that preloads IPython/numpy/sympy once and forks sessions.

Started by launcher.py as `python -s -m tool_runtime.template CTL_FD PARENT_PID` with a clean environment (never
by forking the user's process, which may hold CUDA contexts, OpenMP threads and model weights). It:

1. dies with its parent (parent-death signal SIGTERM, or EOF on the control socket), killing, reaping and
   cleaning up every session first;
2. without root, enters a user namespace of its own where the kernel allows it (and goes on as PID 1 of a PID
   namespace it owns); joins a fresh session keyring; enters a private mount namespace and builds the
   sessions' read-only view of the host in it (fsview.py); compiles the syscall filter (seccomp.py); enters an
   empty network namespace, probes PID namespaces and cgroups, and decides the isolation plan every session
   must apply (reported to the pool as `info`, with the reason for whatever is not in force);
3. imports the preload modules, builds the IPython shell, runs the warm-up cells, freezes the GC heap and checks
   it is single-threaded;
4. serves control requests: `fork` (hand over a spare session, or fork one; replies with the session's socket
   and a pidfd as SCM_RIGHTS), `release` (kill a session, remove its work dir link or tree and, once reaped,
   its cgroups; never waiting long: a session still exiting is reaped later in the loop), `shutdown`; and
   keeps `spare_sessions` forked ahead.

Sessions descend from this process, never from the user's process. Each starts as PID 1 of its own PID
namespace (a root reaper) whose child runs the cells, so `os.kill(os.getppid(), 9)` and `os.kill(-1, 9)` in a
cell reach nothing outside the session.
"""

from __future__ import annotations

import collections
import fcntl
import gc
import importlib
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Any

from . import cleanup, fsview, limits, seccomp
from .child import REAPER_NAME, make_shell, session_entry, warm_lock_down, warm_up
from .config import RuntimeConfig
from .protocol import FrameReader, PeerClosed, ProtocolError, encode, send_frame

log = logging.getLogger(__name__)
CTL_MAX_BYTES = 1 << 20
RELEASE_WAIT = 0.8  # seconds `release` waits for a killed session to be reaped before answering
_LAUNCHER_PATH: str | None = None  # set by main: the PYTHONPATH entry that only served to find this package


def _exit_status(status: int, via_reaper: bool) -> dict[str, Any]:
    """How a session ended, from the wait status of its first process (the reaper, if it has one)."""
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    code = os.waitstatus_to_exitcode(status)
    if via_reaper and code > 128 and code != 255:
        return {"signal": code - 128}
    if via_reaper and code == 255:
        return {"code": ">=128"}
    return {"code": code}


REAPER_BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reaper")  # built from reaper.c


def reaper_binary() -> tuple[int | None, str | None]:
    """(a descriptor of the compiled reaper if it runs here, else why not). It is built at install time (setup.py);
    without it each session's PID 1 is a forked Python process, about 2 MiB more per session.

    Sessions exec this descriptor (fexecve), never the path, and it is a sealed in-memory copy of the file where
    the kernel allows one: a binary rebuilt, replaced, overwritten in place (say by a script) or removed while
    the pool runs changes nothing, and only what passed this self-test, exec'd the way sessions exec it, ever
    runs as a session's PID 1."""
    try:
        fd = os.open(REAPER_BINARY, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, f"{REAPER_BINARY} was not built (no C compiler at install?): sessions use a Python reaper"
    except OSError as exc:
        return None, f"{REAPER_BINARY} cannot be read ({exc}): sessions use a Python reaper"
    # The copy could run where the file may not: respect a deployment's chmod -x or noexec mount.
    if not os.access(REAPER_BINARY, os.X_OK) or os.fstatvfs(fd).f_flag & os.ST_NOEXEC:
        os.close(fd)
        return None, f"{REAPER_BINARY} may not be executed here (mode or noexec mount): sessions use a Python reaper"
    try:
        image = _sealed_copy(fd)
    except OSError as exc:
        log.info("no sealed copy of %s (%s): sessions exec the file's descriptor", REAPER_BINARY, exc)
    else:
        os.close(fd)
        fd = image
    try:  # without a session pid to wait for it exits 255 at once: proves it runs on this machine
        code: int | str = _self_test(fd, deadline=time.monotonic() + 5)
    except OSError as exc:
        code = str(exc)
    if code == 255:
        return fd, None
    os.close(fd)
    return None, f"{REAPER_BINARY} failed its self-test ({code}): sessions use a Python reaper"


MFD_EXEC = 0x10  # memfd_create: executable (kernels with vm.memfd_noexec need it said; older ones refuse it)


def _sealed_copy(fd: int) -> int:
    """The file behind `fd` copied into an executable memfd sealed against any change."""
    try:
        image = os.memfd_create(REAPER_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | MFD_EXEC)
    except OSError:
        image = os.memfd_create(REAPER_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(image, fd, offset, size - offset)
            if sent == 0:
                raise OSError(f"{REAPER_BINARY} shrank while it was copied")
            offset += sent
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(image, fcntl.F_ADD_SEALS, seals)
    except OSError:
        os.close(image)
        raise
    return image


def _self_test(fd: int, deadline: float) -> int | str:
    """Exit code of the reaper exec'd from `fd` without arguments (127: exec failed), or why it has none."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(fd, [REAPER_NAME], {})
        finally:
            os._exit(127)
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "did not exit within 5 s"
        time.sleep(0.01)


class Template:
    """State of the template process: the shell to fork, the isolation plan, live sessions and spares."""

    def __init__(self, ctl: socket.socket, cfg: RuntimeConfig, parent_pid: int):
        self.ctl = ctl
        self.cfg = cfg
        self.parent_pid = parent_pid
        self.seq = 0
        self.children: dict[int, dict[str, Any]] = {}  # pid -> {"workdir", "cgroups", "status"}
        self.pidns_fd: int | None = None
        self.cgroups: limits.Cgroups | None = None
        self.plan: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.spares: collections.deque[dict[str, Any]] = collections.deque()
        self.root_parent_fd: int | None = None
        self.seccomp_filter: seccomp.CompiledFilter | None = None
        self.dying: dict[int, dict[str, Any]] = {}  # released, killed, not reaped yet
        self.janitors: list[subprocess.Popen] = []  # `rm -rf` of work dirs on the host (no view)

    # ----------------------------------------------------------------------------------------- start-up
    def prepare(self) -> None:
        cfg = self.cfg
        notes: dict[str, str] = {}
        is_root = os.geteuid() == 0
        can_admin = limits.has_capability(limits.CAP_SYS_ADMIN)
        # Without root: a user namespace of our own (we are its root, mapped to our uid) gives the namespaces,
        # mounts and filter below; each session then maps its own uid in a user namespace of its own.
        user_ns = False
        pool_uid, pool_gid = os.geteuid(), os.getegid()
        if not can_admin:
            why = limits.user_namespaces_work()
            if why is None:
                try:
                    limits.enter_user_namespace(0, 0)
                    user_ns = can_admin = True
                except OSError as exc:  # worked in the probe; should not happen
                    why = str(exc)
            if why is not None:
                notes["user_namespace"] = f"unprivileged user namespaces are not available here: {why}"
            if user_ns:
                self._become_pid_namespace_init()

        # A fresh session keyring: the one inherited from the user's process may hold secrets.
        try:
            limits.join_new_session_keyring()
        except OSError as exc:
            notes["keyring"] = str(exc)

        # Mount namespace first: the sessions' read-only view of the host is built in it (fsview.py).
        mount_ns = False
        view: fsview.View | None = None
        if can_admin:
            try:
                limits.private_mount_namespace()
                mount_ns = True
            except OSError as exc:
                notes["mount_namespace"] = str(exc)
        # The pool's directory as the host sees it, for removing it should the parent die (see main).
        self.root_parent_fd = os.open(os.path.dirname(cfg.workdir_root), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # A source checkout on sys.path (how the launcher finds this package) is not shown, only the package.
        checkout = os.path.dirname(fsview.PACKAGE_DIR)
        if os.path.basename(checkout) in ("site-packages", "dist-packages"):
            checkout = ""
        needed = [p for p in sys.path if p and os.path.realpath(p) != os.path.realpath(checkout)]
        needed += [
            sys.prefix,
            sys.exec_prefix,
            sys.base_prefix,
            sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable)),
            fsview.PACKAGE_DIR,
        ]
        root_real = os.path.realpath(cfg.workdir_root)  # our cwd, so on sys.path; sessions get their own there
        needed = [p for p in needed if os.path.realpath(p) != root_real]
        if mount_ns:
            view_dir = os.path.join(cfg.workdir_root, ".view")
            try:
                os.mkdir(view_dir, 0o755)
                view = fsview.build_view(view_dir, needed, cfg.workdir_root)
            except OSError as exc:
                notes["view"] = f"could not build the sessions' filesystem view: {exc}"
        users = False
        if cfg.isolate_users and user_ns:
            users = view is not None  # a user namespace per session; its files are the pool's uid's own
            if not users:
                notes["users"] = "no filesystem view: sessions run as the pool's own uid"
        elif cfg.isolate_users and is_root:
            blocked = fsview.unreadable(needed)
            if view is not None:
                # Sessions keep their own uid (running them as root would be far worse); what they cannot read
                # is named here (importing from it fails as "No module named ...").
                users = True
                view.errors.update(
                    {p: f"{why}: sessions (their own uid) cannot import from it" for p, why in blocked.items()}
                )
            else:  # no view: the host's own directories must let other uids through
                for p in needed:
                    hit = limits.first_blocked(os.path.realpath(p)) if os.path.exists(p) else None
                    if hit:
                        blocked[hit[0]] = "other users cannot enter it"
                users = not blocked
                if blocked:
                    notes["users"] = "the Python installation is not readable by other uids: " + "; ".join(
                        f"{p}: {why}" for p, why in blocked.items()
                    )
        elif cfg.isolate_users:
            notes["users"] = "not root: sessions run as the pool's own uid"
        if view is not None and view.errors:
            notes["view_errors"] = "; ".join(f"{p}: {why}" for p, why in view.errors.items())

        seccomp_ok = False
        if cfg.seccomp:
            try:
                self.seccomp_filter = seccomp.compile_filter()
                seccomp_ok = True
            except Exception as exc:  # noqa: BLE001 - e.g. no libseccomp on this machine
                notes["seccomp"] = f"{type(exc).__name__}: {exc}"

        # Network: the template itself moves to an empty network namespace (so even a session whose own unshare
        # failed has no network); each session then unshares again so sessions cannot reach each other either.
        net_ns = False
        if not cfg.network:
            try:
                limits.unshare(limits.CLONE_NEWNET)
                net_ns = True
            except OSError as exc:
                notes["net_namespace"] = str(exc)

        pid_ns = False
        try:
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            limits.unshare(limits.CLONE_NEWPID)
            limits.setns(self.pidns_fd, limits.CLONE_NEWPID)
            pid_ns = True
        except OSError as exc:
            notes["pid_namespace"] = str(exc)
            if self.pidns_fd is not None:
                os.close(self.pidns_fd)
                self.pidns_fd = None

        reaper = None
        if pid_ns and cfg.native_reaper:
            reaper, why = reaper_binary()
            if why:
                notes["reaper"] = why

        self.cgroups = limits.Cgroups(f"tool_runtime-{limits.global_pid()}", ("pids", "memory") if cfg.cgroups else ())
        notes.update({f"cgroup_{k}": v for k, v in self.cgroups.errors.items()})

        # Preload and warm up: everything imported here is shared copy-on-write by every session.
        preloaded, failed = [], {}
        for name in cfg.preload:
            try:
                importlib.import_module(name)
                if name == "numpy":
                    importlib.import_module("numpy.random")  # lazily imported by numpy 2; sessions reseed it
                preloaded.append(name)
            except Exception as exc:  # noqa: BLE001
                failed[name] = f"{type(exc).__name__}: {exc}"
        shell = make_shell()
        warm_up(shell, cfg.warmup if all(m in preloaded for m in ("numpy", "sympy")) else "1 + 1", "1/0")
        self.shell = shell
        warm_lock_down()
        # No collection before the freeze: it would leave freed holes in pages that sessions then fill with
        # their own objects (copying the pages). Frozen objects are never scanned by a session's collector.
        gc.freeze()

        threads = limits.thread_count()
        self.plan = {
            "pid_namespace": pid_ns,
            "net_namespace": net_ns and not cfg.network,
            "users": users,
            "user_namespace": user_ns,
            "pool_uid": pool_uid,
            "pool_gid": pool_gid,
            "view": view.to_dict() if view is not None else None,
            "seccomp": seccomp_ok,
            "reaper": reaper,
        }
        self.vm_size = limits.vm_size()
        self.info = {
            "template_pid": os.getpid(),
            "python": sys.version.split()[0],
            "preloaded": preloaded,
            "preload_failed": failed,
            "template_threads": threads,
            "template_vm_size": self.vm_size,
            "spare_sessions": cfg.spare_sessions,
            "isolation": {
                "pid_namespace": pid_ns,
                "reaper": ("native" if reaper is not None else "python") if pid_ns else None,
                "net_namespace": self.plan["net_namespace"],
                "mount_namespace": mount_ns,
                "ipc_namespace": view is not None,
                "view": {"shown": view.shown + view.deferred, "errors": view.errors} if view is not None else None,
                "private_tmp": list(fsview.SESSION_DIRS.values()) if view is not None else [],
                "session_tmpfs": ({"bytes": cfg.tmp_bytes, "inodes": cfg.tmp_inodes} if view is not None else None),
                "seccomp": seccomp_ok,
                "keyring": "keyring" not in notes,
                "per_session_uid": users,
                "user_namespace": user_ns,
                "cgroups": self.cgroups.available,
                "process_limit": (
                    "pids cgroup" if "pids" in self.cgroups.available else "RLIMIT_NPROC" if users else None
                ),
                "memory_cgroup": "memory" in self.cgroups.available,
                "no_new_privs": True,
                "rlimits": {
                    "RLIMIT_AS": self.vm_size + cfg.memory_limit,
                    "RLIMIT_FSIZE": cfg.max_file_bytes,
                    "RLIMIT_NOFILE": cfg.max_open_files,
                    "RLIMIT_CORE": 0,
                    "RLIMIT_CPU": cfg.cpu_seconds,
                    "RLIMIT_NPROC": cfg.max_processes if users else None,
                },
                "notes": notes,
            },
        }
        if threads != 1:
            notes["threads"] = f"template has {threads} threads at fork time (expected 1)"

    def _become_pid_namespace_init(self) -> None:
        """In our own user namespace we may not return (setns) to the host's PID namespace after creating one
        for a session, but we may to one our namespace owns: so go on as PID 1 of such a namespace. The
        process the pool started stays behind as a shim that exits with us (and we die with it)."""
        try:
            limits.unshare(limits.CLONE_NEWPID)
        except OSError:
            return  # no PID namespaces at all: probed again (and reported) below
        pid = os.fork()
        if pid:  # the shim: no handlers, no sockets; SIGTERM (the parent died) kills it, and then us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.ctl.close()
            while True:
                try:
                    _, status = os.waitpid(pid, 0)
                except InterruptedError:
                    continue
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        limits.set_parent_death_signal(signal.SIGTERM)
        self.parent_pid = os.getppid()  # 0: the shim is outside our namespace

    # ----------------------------------------------------------------------------------------- requests
    def _fork_one(self) -> dict[str, Any]:
        """Fork one session process; it sets itself up and sends "ready" on its channel while we go on."""
        cfg = self.cfg
        self.seq += 1
        name = f"s{self.seq}-{secrets.token_hex(4)}"
        spec: dict[str, Any] = {"workdir": os.path.join(cfg.workdir_root, name), "vm_size": self.vm_size, "cgroups": {}}
        if self.cgroups is not None and self.cgroups.available:
            spec["cgroups"] = self.cgroups.make_session(
                name, pids_max=cfg.max_processes, memory_max=cfg.memory_limit + (256 << 20)
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.plan["pid_namespace"]:
            limits.unshare(limits.CLONE_NEWPID)  # affects only the next child: it becomes PID 1 of a new namespace
        try:
            pid = os.fork()
        except BaseException:
            if self.pidns_fd is not None:
                limits.setns(self.pidns_fd, limits.CLONE_NEWPID)
            ours.close()
            theirs.close()
            if spec["cgroups"]:
                limits.Cgroups.remove_session(spec["cgroups"])
            raise
        if pid == 0:  # ---- the session
            try:
                self.ctl.close()
                ours.close()
                for spare in self.spares:
                    spare["sock"].close()
                    os.close(spare["pidfd"])
                if self.root_parent_fd is not None:
                    os.close(self.root_parent_fd)
                if self.pidns_fd is not None:
                    os.close(self.pidns_fd)
                session_entry(theirs, self.shell, cfg, self.plan, spec, self.seccomp_filter)
            finally:
                os._exit(70)
        if self.pidns_fd is not None:  # set exactly when the plan has PID namespaces
            limits.setns(self.pidns_fd, limits.CLONE_NEWPID)  # later forks must not land in this namespace
        theirs.close()
        pidfd = os.pidfd_open(pid)
        self.children[pid] = {"workdir": spec["workdir"], "cgroups": spec["cgroups"], "status": None}
        return {"pid": pid, "sock": ours, "pidfd": pidfd, "workdir": spec["workdir"]}

    def fork_session(self) -> tuple[dict[str, Any], list[int]]:
        """Hand over a spare session (forked earlier, probably set up already) or fork one now."""
        fresh = None
        while self.spares and fresh is None:
            spare = self.spares.popleft()
            self._reap(spare["pid"], block=False)
            if self.children[spare["pid"]]["status"] is None:
                fresh = spare
            else:  # a spare that died (e.g. picked by the OOM killer) is discarded
                spare["sock"].close()
                os.close(spare["pidfd"])
                self._cleanup(spare["pid"])
        if fresh is None:
            fresh = self._fork_one()
        pid = fresh["pid"]
        uid = self.cfg.uid_base + pid if self.plan["users"] else os.getuid()
        reply = {"op": "forked", "pid": pid, "uid": uid, "workdir": fresh["workdir"]}
        return reply, [fresh["sock"].detach(), fresh["pidfd"]]

    def replenish(self) -> None:
        """Keep `spare_sessions` sessions forked ahead, so that open() does not wait for fork and set-up."""
        while len(self.spares) < self.cfg.spare_sessions:
            self.spares.append(self._fork_one())

    def _reap(self, pid: int, block: bool) -> None:
        rec = self.children.get(pid)
        if rec is None or rec["status"] is not None:
            return
        try:
            got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            rec["status"] = {"code": None}
            return
        if got == pid:
            rec["status"] = _exit_status(status, self.plan["pid_namespace"])

    def release(self, pid: int) -> dict[str, Any]:
        """Make sure the session is dead; remove its work dir and cgroups; report how it ended.

        Bounded: a session whose exit takes long (the kernel freeing a tmpfs full of files, in the exiting
        process) is reaped later by the serve loop; the reply does not wait for it."""
        rec = self.children.get(pid)
        if rec is None:
            return {"op": "released", "pid": pid, "status": None}
        self._reap(pid, block=False)
        killed_here = False
        deadline = time.monotonic() + 0.2  # it may be exiting on its own right now
        while rec["status"] is None and time.monotonic() < deadline:
            time.sleep(0.005)
            self._reap(pid, block=False)
        if rec["status"] is None:
            killed_here = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + RELEASE_WAIT
            while rec["status"] is None and time.monotonic() < deadline:
                time.sleep(0.005)
                self._reap(pid, block=False)
        status = dict(rec["status"] or {})  # still exiting (the kernel freeing its tmpfs): reaped later
        if killed_here:
            status["unresponsive"] = 1
        self._cleanup(pid)
        return {"op": "released", "pid": pid, "status": status}

    def _cleanup(self, pid: int) -> None:
        """Remove what the session left on the host now, and its cgroups once it is reaped (else later)."""
        rec = self.children.pop(pid, None)
        if rec is None:
            return
        if self.plan.get("view"):
            try:
                os.unlink(rec["workdir"])  # only the pool's link: the files died with the session's tmpfs
            except OSError:
                pass
        else:
            self._remove_tree(rec["workdir"])
        if rec["status"] is None:
            self.dying[pid] = rec
        elif rec["cgroups"]:
            limits.Cgroups.remove_session(rec["cgroups"])

    def _remove_tree(self, path: str) -> None:
        """Delete a work dir on the host in a separate process (no view: see cleanup.py), never waiting here."""
        janitor = cleanup.start_removal(path)
        if janitor is not None:
            self.janitors.append(janitor)

    def reap_background(self) -> None:
        """Reap sessions released while still exiting, remove their cgroups; collect finished janitors."""
        for pid, rec in list(self.dying.items()):
            self.children[pid] = rec
            self._reap(pid, block=False)
            del self.children[pid]
            if rec["status"] is not None:
                del self.dying[pid]
                if rec["cgroups"]:
                    limits.Cgroups.remove_session(rec["cgroups"])
        self.janitors = [j for j in self.janitors if j.poll() is None]

    def remove_root(self) -> None:
        """Remove the pool's directory (only when the parent is gone: normally the parent does it)."""
        self._remove_tree(self.cfg.workdir_root)  # --one-file-system: the view mounted in it is not entered
        for janitor in self.janitors:
            try:
                janitor.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.root_parent_fd is not None:
            try:
                os.rmdir(os.path.basename(self.cfg.workdir_root), dir_fd=self.root_parent_fd)
            except OSError:
                pass

    def shutdown(self) -> None:
        while self.spares:
            spare = self.spares.popleft()
            spare["sock"].close()
            os.close(spare["pidfd"])
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(self.children):
            self._reap(pid, block=True)
            self._cleanup(pid)
        for pid, rec in list(self.dying.items()):
            self.children[pid] = rec
            self._reap(pid, block=True)
            self.children.pop(pid, None)
        self.dying.clear()
        if self.plan.get("view"):
            try:
                limits.umount2(self.plan["view"]["root"], limits.MNT_DETACH)
            except OSError:
                pass
        if self.cgroups is not None:
            self.cgroups.remove_all()

    # ----------------------------------------------------------------------------------------- loop
    def serve(self) -> bool:
        """Answer control requests until shutdown (returns True) or the parent is gone (returns False)."""
        reader = FrameReader(self.ctl, CTL_MAX_BYTES)
        poller = select.poll()
        poller.register(self.ctl, select.POLLIN)
        self._replenish_quietly()
        while True:
            if self.dying or self.janitors:
                self.reap_background()
            if not poller.poll(50 if self.dying or self.janitors else 1000):
                for pid in list(self.children):
                    self._reap(pid, block=False)
                if os.getppid() != self.parent_pid:
                    return False
                continue
            try:
                req = reader.read()
            except (PeerClosed, ProtocolError, OSError):
                return False
            op = req.get("op")
            fds: list[int] = []
            try:
                if op == "fork":
                    reply, fds = self.fork_session()
                elif op == "release":
                    reply = self.release(int(req["pid"]))
                elif op == "shutdown":
                    self.shutdown()
                    send_frame(self.ctl, {"op": "bye"}, CTL_MAX_BYTES)
                    return True
                else:
                    reply = {"op": "error", "error": f"unknown op {op!r}"}
            except Exception as exc:  # noqa: BLE001 - reported to the parent, the template keeps serving
                reply = {"op": "error", "error": f"{type(exc).__name__}: {exc}"}
            reply["req"] = req.get("req")
            data = encode(reply, CTL_MAX_BYTES)
            try:
                socket.send_fds(self.ctl, [data], fds) if fds else self.ctl.sendall(data)
            finally:
                for fd in fds:
                    os.close(fd)
            if op == "fork":
                self._replenish_quietly()

    def _replenish_quietly(self) -> None:
        try:
            self.replenish()
        except Exception:  # noqa: BLE001 - e.g. out of pids; open() will fork on demand and report the error
            traceback.print_exc()


def main() -> None:
    gc.disable()  # until the freeze before forking (see Template.prepare); sessions enable it again
    ctl_fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    # SIGTERM (not SIGKILL) when the parent dies, so that we still kill, reap and clean up every session.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    limits.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    # Whether the user's process itself is gone (not only our direct parent: without root that is a shim).
    parent_fd = os.pidfd_open(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the user's program is not for us
    os.environ.pop("PYTHONPATH", None)  # only needed to find this package; not for sessions
    ctl = socket.socket(fileno=ctl_fd)
    template: Template | None = None
    orderly = False
    try:
        cfg = RuntimeConfig.from_dict(FrameReader(ctl, CTL_MAX_BYTES).read(time.monotonic() + 60))
        template = Template(ctl, cfg, parent_pid)
        template.prepare()
        send_frame(ctl, {"op": "ready", "info": template.info}, CTL_MAX_BYTES)
        orderly = template.serve()
    except BaseException as exc:  # noqa: BLE001
        if not isinstance(exc, SystemExit):
            traceback.print_exc()
            try:
                send_frame(ctl, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"}, CTL_MAX_BYTES)
            except OSError:
                pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if template is not None:
            template.shutdown()
            if not orderly and select.select([parent_fd], [], [], 0)[0]:
                template.remove_root()  # the user's process is gone: nobody else will remove the pool's directory
    os._exit(0)


if __name__ == "__main__":
    main()
