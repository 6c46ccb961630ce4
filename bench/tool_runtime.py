"""Benchmark of tool_runtime against a fresh Jupyter kernel per session (the baseline it replaces).

Prints its figures, then one JSON line:
  {"fork_p50_ms", "run_p50_ms", "pss_mib_per_session", "print_1e5_s", "print_vs_bare", "print_kept_vs_bare",
   "hard_kill_over_timeout_s", "fresh_kernel_p50_ms", "speedup_vs_fresh_kernel"}

fork_p50_ms       pool.open() latency in the default configuration (spare sessions), opens spaced like an agent
                  loop starting trajectories; cold (spare_sessions=0) and burst figures are printed as well
run_p50_ms        session.run("print(x)") round trip
pss_mib_per_session  PSS (smaps_rollup) of a session's processes (session + its PID-namespace reaper) after a
                  sympy cell, with 20 sessions open
print_1e5_s       session.run() of a cell printing 10^5 lines (`for i in range(100000): print(i)`), wall time
print_vs_bare     time per print inside that cell / time per print of a plain `python3` writing to a pipe (the same
                  loop timed inside each process; median of 5 alternating pairs' ratios; the seed's sandbox was
                  about 1.0). The cell's output is full after ~250 lines, as in a model's print loop: from then on
                  a print only updates flags. Prints under the limit are printed as `print_kept_vs_bare`.
hard_kill_over_timeout_s  how long after its timeout a cell that ignores SIGINT (SIG_IGN + busy loop, and a C-level
                  `sum(range(10**13))`) returns, worst of both, restart included
fresh_kernel_p50_ms  jupyter_client.start_new_kernel() until the kernel answers (without importing numpy/sympy,
                  which favours the baseline)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tool_runtime import SessionPool  # noqa: E402

# A typical competition-math cell, and a heavier one (symbolic integration pulls in much more of sympy).
SYMPY_CELL = (
    "import sympy as sp\nx = sp.symbols('x')\n"
    "sp.solve(x**3 - 6*x**2 + 11*x - 6, x), sp.factorint(2024), sp.simplify((x**2 - 1)/(x - 1))"
)
HEAVY_CELL = "import sympy as sp\nx = sp.Symbol('x')\nsp.integrate(sp.sin(x)**2 * sp.exp(x), x)"


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20) if len(values) > 1 else values * 19
    return f"p50 {statistics.median(values) * 1000:7.2f} ms  p95 {q[18] * 1000:7.2f} ms  (n={len(values)})"


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for {pid}")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                kids.setdefault(parent_of(int(entry.name)), []).append(int(entry.name))
            except (OSError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def measure_pss(pool: SessionPool, cell: str, n: int = 20) -> tuple[float, float]:
    """(mean PSS of session + reaper, PSS of the template and all its descendants / n), MiB."""
    sessions = [pool.open() for _ in range(n)]
    for s in sessions:
        r = s.run(cell)
        assert r.status == "ok", r.output
    time.sleep(0.2)
    template = pool.info["template_pid"]
    per_session = []
    for s in sessions:
        kib = pss_kib(s.pid)
        reaper = parent_of(s.pid)
        if reaper != template:
            kib += pss_kib(reaper)
        per_session.append(kib / 1024)
    total = sum(pss_kib(p) for p in [template] + descendants(template)) / 1024
    for s in sessions:
        s.close()
    return statistics.mean(per_session), total / n


PRINT_LOOP = (
    "import time as _t\n_start = _t.perf_counter()\nfor i in range({n}): print(i)\n_loop_s = _t.perf_counter() - _start"
)


def bench_print(pool: SessionPool, pairs: int = 5, label: str = "") -> tuple[float, float, float]:
    """(wall s of a cell printing 10^5 lines, per-print cost ratio session / bare python3 to a pipe, wall s of
    10^6 lines). Session and bare runs alternate and the ratio is the median of the pairs' ratios: this VM's
    speed drifts by up to 2x over seconds, which a median of each side's runs taken apart does not cancel."""
    session = pool.open()
    bare_code = PRINT_LOOP.format(n=10**5) + "\nimport sys\nsys.stderr.write(repr(_loop_s))"
    walls, loops, bare = [], [], []
    for _ in range(pairs):
        t = time.perf_counter()
        r = session.run(PRINT_LOOP.format(n=10**5), timeout=60)
        walls.append(time.perf_counter() - t)
        assert r.status == "ok", r.output
        loops.append(float(session.run("_loop_s").output))
        done = subprocess.run(
            [sys.executable, "-c", bare_code],
            capture_output=True,
            text=True,
            check=True,  # stdout is a pipe, as measured
        )
        bare.append(float(done.stderr))
    t = time.perf_counter()
    r = session.run(PRINT_LOOP.format(n=10**6), timeout=60)
    wall_1e6 = time.perf_counter() - t
    assert r.status == "ok", r.output
    session.close()
    ratios = [s / b for s, b in zip(loops, bare)]

    def runs_of(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} s (runs {', '.join(f'{x:.3f}' for x in values)})"

    print(f"print loop of 10^5 lines{label}: session {runs_of(loops)}, plain python3 to a pipe {runs_of(bare)}")
    print(f"  per-pair ratios (session / plain, run one after the other): {', '.join(f'{x:.2f}' for x in ratios)}")
    return statistics.median(walls), statistics.median(ratios), wall_1e6


def bench_hard_kill(pool: SessionPool, timeout: float = 1.0) -> float:
    """Seconds past `timeout` until run() returns for cells that a SIGINT does not stop (worst of the two)."""
    worst = 0.0
    for cell in ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", "sum(range(10**13))"):
        with pool.open() as session:
            t = time.perf_counter()
            r = session.run(cell, timeout=timeout)
            late = time.perf_counter() - t - timeout
            assert (r.status, r.state_lost) == ("timeout", True), r
            print(f"hard kill of {cell.splitlines()[-1]!r}: returned {late:.3f} s after the {timeout} s timeout")
            worst = max(worst, late)
    return worst


def bench_open(pool: SessionPool, n: int, spacing: float) -> list[float]:
    times, sessions = [], []
    for _ in range(n):
        time.sleep(spacing)
        t = time.perf_counter()
        s = pool.open()
        times.append(time.perf_counter() - t)
        sessions.append(s)
    for s in sessions:
        s.close()
    return times


def main() -> None:
    t = time.perf_counter()
    pool = SessionPool(max_sessions=64, timeout=10.0)
    start_s = time.perf_counter() - t
    iso = pool.info["isolation"]
    print(f"template start (fresh interpreter, imports, warm-up): {start_s:.2f} s; pid {pool.info['template_pid']}")
    print(
        "isolation:",
        {k: iso[k] for k in ("pid_namespace", "net_namespace", "per_session_uid", "cgroups", "process_limit")},
    )

    bench_open(pool, 5, 0.05)  # warm-up
    steady = bench_open(pool, 40, 0.05)
    burst = bench_open(pool, 20, 0.0)
    print(f"open(), default (2 spare sessions), spaced 50 ms: {ms(steady)}")
    print(f"open(), burst of 20 back to back:                 {ms(burst)}")

    s = pool.open()
    s.run("x = 1")
    for _ in range(50):
        s.run("print(x)")
    runs = []
    for _ in range(500):
        t = time.perf_counter()
        r = s.run("print(x)")
        runs.append(time.perf_counter() - t)
        assert r.output == "1\n", r
    print(f"run('print(x)') round trip:                        {ms(runs)}")
    s.close()

    print_1e5, print_ratio, print_1e6 = bench_print(pool)
    print(
        f"cell printing 10^5 lines: {print_1e5:.3f} s; 10^6 lines: {print_1e6:.2f} s; per print vs plain python3: "
        f"{print_ratio:.2f}x"
    )
    with SessionPool(max_sessions=2, max_output_chars=10**7) as keeps_all:  # every line is kept and returned
        _, print_kept_ratio, _ = bench_print(keeps_all, label=" (max_output_chars=10**7: all kept)")
    print(
        f"per print vs plain python3 while output is kept (a poll for subprocess output each): {print_kept_ratio:.2f}x"
    )
    hard_kill = bench_hard_kill(pool)

    pss, amortized = measure_pss(pool, SYMPY_CELL)
    print(
        f"PSS per session after a sympy cell (20 open):     {pss:.1f} MiB (session + its reaper); "
        f"whole pool / 20: {amortized:.1f} MiB"
    )
    pss50, amortized50 = measure_pss(pool, SYMPY_CELL, n=50)
    print(f"  same with 50 sessions open:                      {pss50:.1f} MiB; whole pool / 50: {amortized50:.1f} MiB")
    heavy, heavy_amortized = measure_pss(pool, HEAVY_CELL)
    print(
        f"  same after sympy.integrate (heavier cell):       {heavy:.1f} MiB; whole pool / 20: "
        f"{heavy_amortized:.1f} MiB"
    )
    pool.close()

    with SessionPool(max_sessions=32, spare_sessions=0) as cold_pool:
        bench_open(cold_pool, 3, 0.05)
        cold = bench_open(cold_pool, 20, 0.05)
    print(f"open(), cold (spare_sessions=0, fork + set-up):   {ms(cold)}")

    from jupyter_client.manager import start_new_kernel

    kernels, kernels_numpy = [], []
    for _ in range(5):
        t = time.perf_counter()
        km, kc = start_new_kernel(kernel_name="python3")
        kernels.append(time.perf_counter() - t)
        kc.execute_interactive("import numpy, sympy", timeout=60)
        kernels_numpy.append(time.perf_counter() - t)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print(f"fresh Jupyter kernel (start_new_kernel):          {ms(kernels)}")
    print(f"fresh Jupyter kernel + import numpy, sympy:       {ms(kernels_numpy)}")

    fork_p50 = statistics.median(steady) * 1000
    kernel_p50 = statistics.median(kernels) * 1000
    print(
        f"speedup vs fresh kernel: {kernel_p50 / fork_p50:.0f}x (default open), "
        f"{kernel_p50 / (statistics.median(cold) * 1000):.0f}x (cold open)"
    )
    print(
        json.dumps(
            {
                "fork_p50_ms": round(fork_p50, 2),
                "run_p50_ms": round(statistics.median(runs) * 1000, 3),
                "pss_mib_per_session": round(pss, 2),
                "print_1e5_s": round(print_1e5, 3),
                "print_vs_bare": round(print_ratio, 2),
                "print_kept_vs_bare": round(print_kept_ratio, 2),
                "hard_kill_over_timeout_s": round(hard_kill, 3),
                "fresh_kernel_p50_ms": round(kernel_p50, 1),
                "speedup_vs_fresh_kernel": round(kernel_p50 / fork_p50, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
