"""Syscall filter for session processes: deny what a notebook never needs, allow everything else.

Built and compiled to BPF once in the template with libseccomp (through `pyseccomp`, ctypes bindings over the
machine's libseccomp2); each session, after it dropped its privileges, loads that program with one `prctl` call
(`CompiledFilter.load`). Loading through libseccomp would rebuild the program in every session: about 1.8 MiB of
the C heap copied from the template per session, for the same bytes. A denied call fails with
EPERM (ENOSYS for clone3, so that libc falls back to clone, whose flags the filter can inspect); the process
is not killed, so a cell that tries gets an ordinary Python error. Calls of a foreign ABI (i386 via int 0x80,
x32) kill the process: the filter only knows the native one.

Denied: the keyring (keyctl, add_key, request_key), io_uring, new namespaces and joining others (unshare,
setns, clone/clone3 with namespace flags), every mount call (old and new API), pivot_root/chroot, ptrace and
cross-process memory access, bpf, perf_event_open, userfaultfd, kernel modules, kexec, reboot, swap, quota,
acct, syslog, file handles (open_by_handle_at), fanotify, changing host or domain name, and sockets of any
family but unix, IPv4, IPv6 and netlink (AF_VSOCK would reach the hypervisor's host past the network
namespace).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import platform
from typing import Any

log = logging.getLogger(__name__)

DENIED = (
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "quotactl",
    "quotactl_fd",
    "acct",
    "syslog",
    "vhangup",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "fanotify_init",
    "sethostname",
    "setdomainname",
)

# Socket families a notebook uses: AF_UNIX (1), AF_INET (2), AF_INET6 (10), AF_NETLINK (16, e.g. for
# getifaddrs). Every other family fails with EAFNOSUPPORT: AF_VSOCK reaches the hypervisor's host whatever the
# network namespace, and the rarely used families (AF_ALG, AF_RDS, AF_TIPC, bluetooth, ...) are kernel surface.
ALLOWED_SOCKET_FAMILIES = (1, 2, 10, 16)

# clone(2) flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)


def build_filter() -> Any:
    """The session filter (a pyseccomp.SyscallFilter, not yet loaded); raises ImportError/OSError if libseccomp
    is not usable here. Names this kernel's ABI does not know are skipped."""
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    try:  # a binary search over syscall numbers instead of a linear scan: every syscall of a session pays it
        f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    except (OSError, ValueError, RuntimeError, AttributeError) as exc:  # libseccomp < 2.5
        log.debug("seccomp: no binary-tree optimization: %s", exc)
    for name in DENIED:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError) as exc:
            log.debug("seccomp: %s not filtered: %s", name, exc)
    for flag in NAMESPACE_FLAGS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    allowed = sorted(ALLOWED_SOCKET_FAMILIES)
    gaps = [(lo, hi) for lo, hi in zip(allowed, allowed[1:]) if hi - lo > 1]
    for call in ("socket", "socketpair"):
        f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), call, sc.Arg(0, sc.LT, allowed[0]))
        f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), call, sc.Arg(0, sc.GT, allowed[-1]))
        for lo, hi in gaps:  # both comparisons on the same argument: libseccomp needs one rule per comparison
            for value in range(lo + 1, hi):
                f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), call, sc.Arg(0, sc.EQ, value))
    return f


PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_INSN_BYTES = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class CompiledFilter:
    """The filter as the kernel's BPF program, ready in memory before the fork: `load` in a session is a single
    prctl (after PR_SET_NO_NEW_PRIVS, which libseccomp's own load sets too) and allocates nothing."""

    def __init__(self, program: bytes):
        if not program or len(program) % BPF_INSN_BYTES or len(program) // BPF_INSN_BYTES > 0xFFFF:
            raise ValueError(f"not a BPF program: {len(program)} bytes")
        self.program = program
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // BPF_INSN_BYTES, ctypes.addressof(self._buffer))
        self._fprog_ptr = ctypes.addressof(self._fprog)
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = libc.prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self._prctl.restype = ctypes.c_int

    def load(self) -> None:
        """Install the filter in the calling thread (the session is single-threaded when it does); irrevocable."""
        for option, arg in ((PR_SET_NO_NEW_PRIVS, 1), (PR_SET_SECCOMP, SECCOMP_MODE_FILTER)):
            if self._prctl(option, arg, self._fprog_ptr if option == PR_SET_SECCOMP else 0, 0, 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"prctl({option}) loading the syscall filter: {os.strerror(err)}")


def compile_filter() -> CompiledFilter:
    """`build_filter`, exported by libseccomp as the BPF program it would load."""
    f = build_filter()
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb", closefd=True) as out:
            f.export_bpf(out)
        size = os.lseek(fd, 0, os.SEEK_END)
        program = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    return CompiledFilter(program)


# For the few calls the runtime makes itself, when libseccomp's bindings are not installed.
_FALLBACK = {"x86_64": {"keyctl": 250}, "aarch64": {"keyctl": 219}}


@functools.cache
def syscall_number(name: str) -> int:
    """The native number of a syscall (e.g. keyctl, which the standard library does not wrap). Cached: the
    template resolves keyctl before forking, so sessions do not call into libseccomp for it."""
    try:
        import pyseccomp as sc
    except ImportError:
        number = _FALLBACK.get(platform.machine(), {}).get(name)
        if number is None:
            raise OSError(errno.ENOSYS, f"number of syscall {name} unknown (pyseccomp is not installed)") from None
        return number
    return int(sc.resolve_syscall(sc.system_arch(), name))
