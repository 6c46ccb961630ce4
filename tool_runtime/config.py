"""RuntimeConfig: every knob that the template process and its sessions need, as one JSON-able record.

The pool builds it from its keyword arguments and sends it to the template as the first control frame, so the
parent and the template agree on limits without sharing any Python objects.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

GiB = 1 << 30
MiB = 1 << 20

DEFAULT_PRELOAD = ("numpy", "sympy")

# Runs once in the template before any fork: it pulls the lazily imported parts of IPython (compiler, display
# formatter, plain traceback machinery) and of numpy/sympy into the template's memory so that every session
# shares them copy-on-write instead of importing them again on its first cell.
DEFAULT_WARMUP = """\
import numpy as _np, sympy as _sp
_x = _sp.Symbol('x')
_sp.factor(_x**2 - 1); _sp.solve(_x**2 - 2, _x); _sp.Rational(1, 3) + 1; _sp.isprime(97)
_np.arange(10).sum(); _np.linalg.solve(_np.eye(2), _np.ones(2))
print('warm')
1 + 1
"""
DEFAULT_WARMUP_ERROR = "1/0"


@dataclass(frozen=True)
class RuntimeConfig:
    """Limits and behaviour of sessions. Sizes are bytes, times are seconds."""

    max_output_chars: int = 1000
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    memory_limit: int = 4 * GiB          # address space allowed above the template's VmSize; memory cgroup limit
    max_file_bytes: int = 1 * GiB        # RLIMIT_FSIZE: largest file a session can write
    max_open_files: int = 1024           # RLIMIT_NOFILE
    tmp_bytes: int = 1 * GiB             # size of a session's tmpfs: work dir (HOME), /tmp, /var/tmp, /dev/shm together
    tmp_inodes: int = 65536              # files + directories in that tmpfs (bounds what the kernel frees at close)
    max_processes: int = 64              # pids cgroup limit (processes + threads) and RLIMIT_NPROC
    cpu_seconds: int = 3600              # RLIMIT_CPU backstop over a session process's whole life
    cgroups: bool = True                 # per-session pids + memory cgroups where writable
    network: bool = False                # False: each session gets an empty network namespace
    isolate_users: bool = True           # as root: each session runs as its own unprivileged uid
    uid_base: int = 2_000_000_000        # session uid = uid_base + host pid of the session's first process
    seccomp: bool = True                 # load the syscall filter of seccomp.py in every session
    spare_sessions: int = 2              # sessions the template keeps forked ahead so open() returns at once
    nice: int = 0                        # added niceness of sessions (0 = same priority as the template)
    warmup: str = DEFAULT_WARMUP
    workdir_root: str = ""               # the pool's private base directory (set by the pool)
    extra_env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preload"] = list(self.preload)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RuntimeConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown RuntimeConfig fields: {sorted(unknown)}")
        d = dict(d)
        if "preload" in d:
            d["preload"] = tuple(d["preload"])
        return cls(**d)

    def validate(self) -> None:
        if self.max_output_chars < 1:
            raise ValueError("max_output_chars must be >= 1")
        for name in ("memory_limit", "max_file_bytes", "max_open_files", "max_processes", "cpu_seconds",
                     "tmp_bytes", "tmp_inodes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.spare_sessions < 0:
            raise ValueError("spare_sessions must be >= 0")
        if self.max_open_files < 32:
            raise ValueError("max_open_files must be >= 32 (the interpreter itself needs a few)")
        if self.max_processes < 4:
            raise ValueError("max_processes must be >= 4 (a session uses two threads itself)")
        if not (0 <= self.uid_base and self.uid_base + (1 << 22) < (1 << 31)):
            raise ValueError("uid_base + pid_max must stay below 2**31")
