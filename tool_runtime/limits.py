"""Isolation primitives for session processes (Linux): namespaces, cgroups, rlimits, privileges.

Everything here is a thin, explicit wrapper around one kernel mechanism, called through ctypes because the
standard library does not expose unshare/setns/prctl/mount. Functions raise OSError with the failing call named;
the callers (template.py, child.py) decide what is optional and record what is in force.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
from collections.abc import Iterable
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

KEYCTL_JOIN_SESSION_KEYRING = 1

CAP_SYS_ADMIN = 21


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount({target})")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(os.fsencode(target), flags), f"umount2({target})")


def join_new_session_keyring() -> int:
    """Replace the inherited session keyring (which may hold the user's secrets) by a new, empty one."""
    from .seccomp import syscall_number

    serial = _libc.syscall(syscall_number("keyctl"), KEYCTL_JOIN_SESSION_KEYRING, None)
    if serial < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"keyctl(JOIN_SESSION_KEYRING): {os.strerror(err)}")
    return int(serial)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` when the parent (strictly: the parent *thread*) exits."""
    prctl(PR_SET_PDEATHSIG, int(sig))


def has_capability(cap: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def global_pid() -> int:
    """This process's pid as the host (the /proc mount's namespace) sees it, also inside a new PID namespace."""
    return int(os.readlink("/proc/self"))


def pidfd_pid(pidfd: int) -> int:
    """The pid a pidfd refers to, as the host (the /proc mount's namespace) numbers it."""
    for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
        if line.startswith("Pid:"):
            return int(line.split()[1])
    raise OSError(errno.EINVAL, f"fd {pidfd} is not a pidfd")


def vm_size() -> int:
    """Bytes of address space this process maps now (VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


# --------------------------------------------------------------------------------------------- rlimits


def apply_rlimits(
    *, address_space: int, file_bytes: int, open_files: int, cpu_seconds: int, processes: int | None
) -> dict[str, int]:
    """Set soft = hard limits for this process and its future children; returns what was set."""
    wanted = {
        "RLIMIT_AS": address_space,
        "RLIMIT_FSIZE": file_bytes,
        "RLIMIT_NOFILE": open_files,
        "RLIMIT_CORE": 0,
        "RLIMIT_CPU": cpu_seconds,
    }
    if processes is not None:
        wanted["RLIMIT_NPROC"] = processes
    for name, value in wanted.items():
        resource.setrlimit(getattr(resource, name), (value, value))
    return wanted


# --------------------------------------------------------------------------------------------- privileges


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid for good: no supplementary groups, no capabilities, no setuid-binary escalation."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # setuid cleared "dumpable"; without it the process cannot read its own /proc/self/{fd,maps,...}.
    prctl(PR_SET_DUMPABLE, 1)
    prctl(PR_SET_NO_NEW_PRIVS, 1)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_all_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (and so the ambient set) for good."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def enter_user_namespace(inner_uid: int, inner_gid: int) -> None:
    """Unshare a user namespace in which this process is `inner_uid`/`inner_gid` (mapped to its current ids).

    Needs no privilege where the kernel allows unprivileged user namespaces; the process has every capability
    inside the new namespace (and none outside) until it drops them."""
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{inner_uid} {outer_uid} 1")
    Path("/proc/self/gid_map").write_text(f"{inner_gid} {outer_gid} 1")


def user_namespaces_work() -> str | None:
    """Try, in a throw-away child, what the runtime needs from an unprivileged user namespace (map our uid,
    then a private mount namespace with a tmpfs). None if it works, else why not. A failure half-way (e.g.
    AppArmor allowing the namespace but no capabilities in it) must not happen in the template itself."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            enter_user_namespace(0, 0)
            private_mount_namespace()
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=4k")
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent through the pipe
            os.write(w, str(exc).encode()[:500])
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        why = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return None if status == 0 else (why or f"probe exited with status {status}")


# --------------------------------------------------------------------------------------------- mount namespace


def _others_can_traverse(path: str) -> bool:
    st = os.stat(path)
    return bool(st.st_mode & 0o001)


def first_blocked(path: str) -> tuple[str, str] | None:
    """The first ancestor of `path` that "others" cannot traverse, and the child name needed below it."""
    parts = Path(path).parts
    cur = "/"
    for name in parts[1:]:
        if not _others_can_traverse(cur):
            return cur, name
        cur = os.path.join(cur, name)
        if not os.path.isdir(cur):
            return None
    return None


def private_mount_namespace() -> None:
    """Enter a new mount namespace whose mounts never propagate back to the host."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)


# --------------------------------------------------------------------------------------------- cgroups


def _mountinfo() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) for every cgroup mount."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if r and r[0] in ("cgroup", "cgroup2"):
            out.append((f[3], f[4], r[0], set(r[2].split(",")) if len(r) > 2 else set()))
    return out


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path; the v2 hierarchy is under the key ''."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _under(mount_root: str, mount_point: str, path: str) -> str:
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root) :] or "/"
    return os.path.join(mount_point, path.lstrip("/"))


class Cgroups:
    """One directory per controller for a pool, and one per session below it.

    cgroup v1 hierarchies `pids` and `memory` are used when writable (as root in most VMs); otherwise a cgroup v2
    tree when its controllers can be delegated. `available` says which controllers are in force; `errors` why not.
    """

    LIMIT_FILES = {
        ("pids", 1): "pids.max",
        ("memory", 1): "memory.limit_in_bytes",
        ("pids", 2): "pids.max",
        ("memory", 2): "memory.max",
    }

    def __init__(self, name: str, controllers: Iterable[str] = ("pids", "memory")):
        self.name = name
        self.dirs: dict[str, tuple[str, int]] = {}  # controller -> (pool dir, cgroup version)
        self.errors: dict[str, str] = {}
        own = _own_cgroups()
        mounts = _mountinfo()
        for controller in controllers:
            try:
                self.dirs[controller] = self._make_pool_dir(controller, own, mounts)
            except Exception as exc:  # noqa: BLE001 - recorded and reported in pool.info
                self.errors[controller] = str(exc)

    @property
    def available(self) -> list[str]:
        return sorted(self.dirs)

    def _make_pool_dir(self, controller, own, mounts) -> tuple[str, int]:
        for root, point, fstype, opts in mounts:
            if fstype == "cgroup" and controller in opts and controller in own:
                parent = _under(root, point, own[controller])
                self._remove_stale(parent)
                d = os.path.join(parent, self.name)
                os.makedirs(d, exist_ok=True)
                return d, 1
        for root, point, fstype, _ in mounts:
            if fstype == "cgroup2" and "" in own:
                parent = _under(root, point, own[""])
                avail = Path(parent, "cgroup.controllers").read_text().split()
                if controller not in avail:
                    continue
                enabled = Path(parent, "cgroup.subtree_control").read_text().split()
                if controller not in enabled:
                    Path(parent, "cgroup.subtree_control").write_text(f"+{controller}")
                self._remove_stale(parent)
                d = os.path.join(parent, self.name)
                os.makedirs(d, exist_ok=True)
                Path(d, "cgroup.subtree_control").write_text(f"+{controller}")
                return d, 2
        raise OSError(errno.ENOENT, f"no writable cgroup hierarchy with the {controller} controller")

    @staticmethod
    def _remove_stale(parent: str) -> None:
        """Remove empty leftovers of pools whose template died without cleaning up."""
        for entry in os.scandir(parent):
            if entry.is_dir() and entry.name.startswith("tool_runtime-"):
                pid = entry.name.rsplit("-", 1)[-1]
                if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                    _rmdir_tree(entry.path)

    def make_session(self, sub: str, *, pids_max: int, memory_max: int) -> dict[str, str]:
        """Create the session's cgroup directories with their limits; returns controller -> dir."""
        out = {}
        for controller, (pool_dir, version) in self.dirs.items():
            d = os.path.join(pool_dir, sub)
            os.mkdir(d)
            value = pids_max if controller == "pids" else memory_max
            Path(d, self.LIMIT_FILES[(controller, version)]).write_text(str(value))
            out[controller] = d
        return out

    @staticmethod
    def join(dirs: dict[str, str]) -> None:
        """Move the calling process into the given cgroups ("0" means the writer itself)."""
        for d in dirs.values():
            Path(d, "cgroup.procs").write_text("0")

    @staticmethod
    def remove_session(dirs: dict[str, str]) -> None:
        for d in dirs.values():
            _rmdir_tree(d)

    def remove_all(self) -> None:
        for pool_dir, _ in self.dirs.values():
            _rmdir_tree(pool_dir)


def _rmdir_tree(path: str) -> None:
    """rmdir a cgroup directory and its sub-cgroups (cgroup dirs can only be removed empty and bottom-up)."""
    try:
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                _rmdir_tree(entry.path)
        os.rmdir(path)
    except OSError:
        pass
