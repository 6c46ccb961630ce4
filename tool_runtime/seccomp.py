"""Syscall filter for session processes: deny what a notebook never needs, allow everything else.

Built once in the template with libseccomp (through `pyseccomp`, ctypes bindings over the machine's
libseccomp2), loaded by each session after it dropped its privileges (about 0.5 ms). A denied call fails with
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

import errno
import logging
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


# For the few calls the runtime makes itself, when libseccomp's bindings are not installed.
_FALLBACK = {"x86_64": {"keyctl": 250}, "aarch64": {"keyctl": 219}}


def syscall_number(name: str) -> int:
    """The native number of a syscall (e.g. keyctl, which the standard library does not wrap)."""
    try:
        import pyseccomp as sc
    except ImportError:
        number = _FALLBACK.get(platform.machine(), {}).get(name)
        if number is None:
            raise OSError(errno.ENOSYS, f"number of syscall {name} unknown (pyseccomp is not installed)") from None
        return number
    return int(sc.resolve_syscall(sc.system_arch(), name))
