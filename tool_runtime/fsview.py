"""The filesystem a session sees: a minimal read-only view of the host plus one private tmpfs per session.

The template builds the view once (`build_view`, in its own mount namespace): a small tmpfs holding read-only
bind mounts of the system directories (/usr and its /bin, /lib... links), a short list of /etc files, the
harmless devices (/dev/null, zero, full, random, urandom), and the Python installation wherever it lives (prefix,
base prefix, every sys.path entry, also under /tmp or /root). Nothing else of the host is there: no /run (D-Bus,
/dev/log, docker.sock, /run/lock), no /sys (cgroupfs: neighbours' names and memory), no /home, no host /proc.

Each session then (`enter_session_view`, in its reaper, before the cells run) gets its own mount, IPC and UTS
namespace, one tmpfs capped in bytes and inodes that backs its work dir (= HOME), /tmp, /var/tmp and /dev/shm,
a fresh /proc of its own PID namespace, and chroots into the view. Interpreter paths under /tmp, /var/tmp or
/dev/shm are bound again on top of the session's tmpfs. When the session's last process exits the kernel drops
its namespace and with it the tmpfs: nothing of the session is left on the host, and removing it costs the
template nothing (a cell that made 100k directories is freed by the kernel in the exiting session).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import limits

log = logging.getLogger(__name__)

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "passwd",
    "group",
    "nsswitch.conf",
    "host.conf",
    "hosts",
    "resolv.conf",
    "gai.conf",
    "protocols",
    "services",
    "ssl",
    "ca-certificates",
    "alternatives",
    "mime.types",
    "os-release",
    "fonts",
    "python3",
    f"python3.{sys.version_info.minor}",
    "matplotlibrc",
)
DEVICES = ("null", "zero", "full", "random", "urandom")
# Private to each session (subdirectory of its tmpfs -> where it is mounted in the view).
SESSION_DIRS = {".tmp": "/tmp", ".vartmp": "/var/tmp", ".shm": "/dev/shm"}
# Kernel-wide files of /proc that tell about other users and the host (docker masks the same): /dev/null on top.
PROC_MASKED = ("keys", "key-users", "kcore", "timer_list", "sched_debug", "sysrq-trigger", "kallsyms", "kmsg")
HOSTNAME = "session"
STAGING = "/.session"  # directory of the view where a session mounts its tmpfs (its parts are bound elsewhere)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class View:
    """What the template built; sent to every session as part of its plan (JSON-able)."""

    root: str  # the view's directory in the template's mount namespace
    pool_root: str  # the pool's directory as sessions see it
    shown: list[str] = field(default_factory=list)  # host paths shown read-only
    deferred: list[str] = field(default_factory=list)  # interpreter paths under a session dir (bound per session)
    errors: dict[str, str] = field(default_factory=dict)  # path -> why it could not be shown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _session_dir_of(path: str) -> str | None:
    for where in SESSION_DIRS.values():
        if _under(path, where):
            return where
    return None


def _ro_flags(path: str) -> int:
    """Mount flags that keep what the source mount had (needed to remount a bind inside a user namespace)."""
    f = os.statvfs(path).f_flag
    flags = limits.MS_RDONLY
    for st, ms in (
        (os.ST_NOSUID, limits.MS_NOSUID),
        (os.ST_NODEV, limits.MS_NODEV),
        (os.ST_NOEXEC, limits.MS_NOEXEC),
        (os.ST_NOATIME, limits.MS_NOATIME),
        (os.ST_NODIRATIME, limits.MS_NODIRATIME),
        (os.ST_RELATIME, limits.MS_RELATIME),
    ):
        if f & st:
            flags |= ms
    return flags


def bind_readonly(src: str, dst: str, *, nosuid: bool = True) -> None:
    """Bind `src` on `dst` (which must exist) and make that mount read-only (and nosuid)."""
    limits.mount(src, dst, None, limits.MS_BIND)
    flags = _ro_flags(dst) | (limits.MS_NOSUID if nosuid else 0)
    limits.mount(None, dst, None, limits.MS_BIND | limits.MS_REMOUNT | flags)


def _make_target(dst: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(dst, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
        if not os.path.lexists(dst):
            os.close(os.open(dst, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _minimal(paths: Iterable[str]) -> list[str]:
    """Sorted paths without those inside another one of the list."""
    out: list[str] = []
    for p in sorted(set(paths)):
        if not any(_under(p, q) for q in out):
            out.append(p)
    return out


def unreadable(paths: Iterable[str]) -> dict[str, str]:
    """Needed paths that an unprivileged uid could not read even when shown, with the reason."""
    out = {}
    for p in paths:
        if not p or not os.path.exists(p):
            continue
        real = os.path.realpath(p)
        mode = os.stat(real).st_mode
        need = 0o005 if os.path.isdir(real) else 0o004
        if mode & need != need:
            out[real] = f"mode {mode & 0o777:04o} does not let other users read it"
    return out


def build_view(root: str, needed: Iterable[str], pool_root: str) -> View:
    """Build the view in `root` (an empty directory; the caller is in a private mount namespace).

    `needed` are the host paths the interpreter needs (prefixes, sys.path, the package). A path that cannot be
    shown is recorded in `View.errors` with the reason; the view is built anyway.
    """
    view = View(root=root, pool_root=pool_root)
    needed = [p for p in needed if p and not _under(os.path.realpath(p), os.path.realpath(pool_root))]
    limits.mount("tmpfs", root, "tmpfs", limits.MS_NOSUID | limits.MS_NODEV, "mode=0755,size=4m,nr_inodes=4096")
    V = lambda p: root + p  # noqa: E731 - a host path's place in the view

    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            os.symlink(os.readlink(d), V(d))
        elif os.path.isdir(d):
            _make_target(V(d), True)
            bind_readonly(d, V(d), nosuid=False)  # setuid binaries stay inert: sessions run with no_new_privs
            view.shown.append(d)
    system = [os.path.realpath(d) for d in SYSTEM_DIRS if os.path.isdir(d)]

    os.makedirs(V("/etc"), 0o755)
    for name in ETC_ENTRIES:
        src = os.path.join("/etc", name)
        if os.path.islink(src):
            os.symlink(os.readlink(src), V(src))
        elif os.path.exists(src):
            try:
                _make_target(V(src), os.path.isdir(src))
                bind_readonly(src, V(src))
                view.shown.append(src)
            except OSError as exc:
                view.errors[src] = str(exc)

    os.makedirs(V("/dev"), 0o755)
    for name in DEVICES:
        src = f"/dev/{name}"
        if os.path.exists(src):
            _make_target(V(src), False)
            limits.mount(src, V(src), None, limits.MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, V(f"/dev/{name}"))
    os.symlink("pts/ptmx", V("/dev/ptmx"))  # each session mounts a devpts instance of its own on /dev/pts
    for path in ("/proc", "/dev/pts", STAGING, *SESSION_DIRS.values()):
        os.makedirs(V(path), 0o755, exist_ok=True)

    wanted: list[str] = []
    for p in needed:
        if not p or not os.path.exists(p):
            continue
        real = os.path.realpath(p)
        wanted.append(real)
        absolute = os.path.abspath(p)
        if absolute != real and not any(_under(absolute, s) for s in system):
            wanted.append(absolute)  # reached through a symlink: show the link too (below)
    for p in _minimal(wanted):
        if any(_under(p, s) for s in system) or p in SESSION_DIRS.values():
            continue
        if _session_dir_of(p):
            view.deferred.append(p)  # the session's own tmpfs covers it: bound again by each session
            continue
        try:
            if os.path.islink(p):
                _make_target(os.path.dirname(V(p)), True)
                os.symlink(os.readlink(p), V(p))
            else:
                _make_target(V(p), os.path.isdir(p))
                bind_readonly(p, V(p))
            view.shown.append(p)
        except OSError as exc:
            view.errors[p] = f"could not bind it into the sessions' view: {exc}"
            log.warning("view: %s not shown: %s", p, exc)

    if not _session_dir_of(pool_root):
        os.makedirs(V(pool_root), 0o755, exist_ok=True)  # a mount point for each session's own tmpfs
    # Nothing in the view is writable for anyone, not even for the sessions' root reapers.
    limits.mount(None, root, None, limits.MS_REMOUNT | limits.MS_RDONLY | limits.MS_NOSUID | limits.MS_NODEV)
    return view


def enter_session_view(
    view: dict[str, Any], workdir: str, uid: int, gid: int, *, size: int, inodes: int, new_proc: bool
) -> bool:
    """In a new session (root, before forking the process that runs cells): own mount + IPC namespace, own
    tmpfs for the work dir, /tmp, /var/tmp and /dev/shm, own /proc. The process that runs cells then enters the
    view with `enter_view`. Returns whether that /proc hides PID 1 (hidepid)."""
    root = view["root"]
    V = lambda p: root + p  # noqa: E731
    limits.unshare(limits.CLONE_NEWNS | limits.CLONE_NEWIPC | limits.CLONE_NEWUTS)
    socket.sethostname(HOSTNAME)  # not the host's name
    stage = V(STAGING)
    limits.mount(
        "tmpfs",
        stage,
        "tmpfs",
        limits.MS_NOSUID | limits.MS_NODEV,
        f"mode=0711,size={int(size)},nr_inodes={int(inodes)}",
    )
    for sub, where in SESSION_DIRS.items():
        os.mkdir(os.path.join(stage, sub))
        os.chmod(os.path.join(stage, sub), 0o1777)
        limits.mount(os.path.join(stage, sub), V(where), None, limits.MS_BIND)
    for p in view["deferred"]:  # the interpreter under /tmp: shown again on top of the session's tmpfs
        _make_target(V(p), os.path.isdir(p))
        bind_readonly(p, V(p))
    pool_root = view["pool_root"]
    if _session_dir_of(pool_root):
        os.makedirs(V(pool_root), 0o711, exist_ok=True)
    else:
        os.mkdir(os.path.join(stage, ".pool"), 0o711)
        limits.mount(os.path.join(stage, ".pool"), V(pool_root), None, limits.MS_BIND)
    os.chmod(V(pool_root), 0o711)  # sessions may enter their own dir, never list the pool's
    os.mkdir(V(workdir), 0o700)
    os.chown(V(workdir), uid, gid)
    # The tmpfs stays mounted at the staging dir too (0711, so not listable): unmounting it would cost an RCU
    # grace period (5 ms and more on a loaded host) for nothing; the namespace goes with the session anyway.
    # Pseudo-terminals (IPython's `!cmd` runs commands on one): a devpts instance of the session's own.
    limits.mount(
        "devpts", V("/dev/pts"), "devpts", limits.MS_NOSUID | limits.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"
    )
    hidepid = False
    if new_proc:
        # hidepid=1: nothing under /proc/PID of a process the session may not trace, i.e. its PID 1 (not
        # chrooted: its mountinfo would show the host's mount table, its cgroup, limits, command line).
        # Kernels before 5.8 may refuse the option inside a user namespace: then without it (and it is said).
        flags = limits.MS_NOSUID | limits.MS_NODEV | limits.MS_NOEXEC
        try:
            limits.mount("proc", V("/proc"), "proc", flags, "hidepid=1")
            hidepid = True
        except OSError:
            limits.mount("proc", V("/proc"), "proc", flags)
        for name in PROC_MASKED:
            if os.path.exists(V(f"/proc/{name}")):
                limits.mount(V("/dev/null"), V(f"/proc/{name}"), None, limits.MS_BIND)
    return hidepid


def enter_view(view: dict[str, Any], cwd: str) -> None:
    """Make the view this process's root (and that of everything it starts).

    chroot, not pivot_root: pivot_root walks every task of the machine (about 27 ms per session on a loaded
    host), chroot is O(1). The host's tree stays attached below, out of reach for a process without
    capabilities whose every descriptor was closed and whose filter denies chroot, mount, setns, unshare and
    open_by_handle_at; the other processes of its PID namespace are its own and the reaper, which it may not
    inspect (another uid, or a more privileged user namespace)."""
    os.chroot(view["root"])
    os.chdir(cwd)
