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
# formatter, traceback formatting) and of numpy/sympy into the template's memory, and runs the code paths of typical
# competition-math cells once (specialized bytecode, filled caches), so that every session shares them copy-on-write
# instead of importing, specializing and caching them again in its own memory. A broader warm-up lowers the PSS of
# a session after a typical sympy cell by about 0.7 MiB (bench/tool_runtime.py), at about 0.3 s of template start.
DEFAULT_WARMUP = """\
import math as _m, itertools as _it, fractions as _fr
import numpy as _np, sympy as _sp
_x, _y = _sp.symbols('x y'); _n = _sp.Symbol('n', integer=True, positive=True)
_sp.factor(_x**2 - 1); _sp.solve(_x**2 - 2, _x); _sp.Rational(1, 3) + 1; _sp.isprime(97)
_sp.solve(_x**3 - 6*_x**2 + 11*_x - 6, _x); _sp.solve([_x + _y - 3, _x - _y - 1], [_x, _y])
_sp.simplify((_x**2 - 1)/(_x - 1)); _sp.expand((_x + 1)**5); _sp.factorint(2024); _sp.divisors(360)
_sp.nsimplify(0.5); _sp.Matrix([[1, 2], [3, 4]]).det(); _sp.summation(_n**2, (_n, 1, 10)); _sp.binomial(10, 3)
_sp.gcd(12, 18); _sp.lcm(4, 6); list(_sp.primerange(1, 50)); _sp.N(_sp.pi, 20); _sp.sqrt(8); _sp.mod_inverse(3, 11)
_sp.totient(36); _sp.factorial(10); _sp.Poly(_x**2 + 1, _x).all_coeffs(); _sp.diff(_x**3, _x); _sp.integrate(_x**2, _x)
_np.arange(10).sum(); _np.linalg.solve(_np.eye(2), _np.ones(2)); (_np.arange(6).reshape(2, 3) * 2.5).tolist()
_m.comb(10, 3); _m.gcd(12, 18); list(_it.combinations(range(4), 2)); _fr.Fraction(1, 3) + _fr.Fraction(1, 6)
print('warm', [_x, 1])
_sp.Matrix([[1, 2], [3, 4]])
"""
DEFAULT_WARMUP_ERROR = "1/0"


@dataclass(frozen=True)
class RuntimeConfig:
    """Limits and behaviour of sessions. Sizes are bytes, times are seconds."""

    max_output_chars: int = 1000
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    memory_limit: int = 4 * GiB  # address space allowed above the template's VmSize; memory cgroup limit
    max_file_bytes: int = 1 * GiB  # RLIMIT_FSIZE: largest file a session can write
    max_open_files: int = 1024  # RLIMIT_NOFILE
    tmp_bytes: int = 1 * GiB  # size of a session's tmpfs: work dir (HOME), /tmp, /var/tmp, /dev/shm together
    tmp_inodes: int = 65536  # files + directories in that tmpfs (bounds what the kernel frees at close)
    max_processes: int = 64  # pids cgroup limit (processes + threads) and RLIMIT_NPROC
    cpu_seconds: int = 3600  # RLIMIT_CPU backstop over a session process's whole life
    cgroups: bool = True  # per-session pids + memory cgroups where writable
    network: bool = False  # False: each session gets an empty network namespace
    isolate_users: bool = True  # as root: each session runs as its own unprivileged uid
    uid_base: int = 2_000_000_000  # session uid = uid_base + host pid of the session's first process
    seccomp: bool = True  # load the syscall filter of seccomp.py in every session
    native_reaper: bool = True  # PID 1 of a session is the compiled reaper.c when built; else a forked Python one
    spare_sessions: int = 2  # sessions the template keeps forked ahead so open() returns at once
    nice: int = 0  # added niceness of sessions (0 = same priority as the template)
    warmup: str = DEFAULT_WARMUP
    workdir_root: str = ""  # the pool's private base directory (set by the pool)
    extra_env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preload"] = list(self.preload)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeConfig:
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
        for name in (
            "memory_limit",
            "max_file_bytes",
            "max_open_files",
            "max_processes",
            "cpu_seconds",
            "tmp_bytes",
            "tmp_inodes",
        ):
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
