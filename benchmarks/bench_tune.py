"""Benchmark fusedrnn.tune on kernel-tiling problems (and optionally ConstrINT).

The problems model the tiling of a persistent fused RNN kernel: each step
multiplies the recurrent matrix R [G*D x D] by the hidden state [D x batch].
R's rows are split over a cluster of CTAs (<= 16, exchanging h through
distributed shared memory), then over warps, in MMA warp tiles from
{8, 16, 32}; part of each warp's rows stays in registers (<= 65536 per SM),
the rest in shared memory (<= 227 KB per block); all CTAs must be resident at
once on the 108 (A100) or 132 (H100) SMs.  Forward and backward (R^T) variants,
head dims 16..2048, batch 1..256, gate counts 1, 3, 4, three objectives.

The text is ConstrINT-compatible (no parentheses, ``%`` written as
``A % B == 0``), so the same problems can be run through ConstrINT:

    python benchmarks/bench_tune.py                      # fusedrnn.tune only
    python benchmarks/bench_tune.py --constrint /path/to/flashrnn/autotune/constrint.py
    FUSEDRNN_CONSTRINT=/path/to/constrint.py python benchmarks/bench_tune.py

ConstrINT has no objective, so it is timed on finding any solution; its answer
is checked with fusedrnn.tune's exact evaluator (valid?) and against our
feasibility verdict (complete?).

``--set backend`` times the problems the ``cuda`` backend itself solves at run
time instead (every distinct problem behind ``python -m fusedrnn info
--compile-all`` for sm_80 and sm_90a: building the Model plus solving it, which
is what a kernel launch pays once per variant); ``--set all`` both.  The Triton
backend does not use the solver (its tiles are fixed per head size).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import itertools
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusedrnn.tune import Model, solve  # noqa: E402

SMEM_PER_BLOCK = 232448  # 227 KB opt-in shared memory per block (A100 / H100)
REGS_PER_SM = 65536
OBJECTIVES = {
    # Step latency proxy: MMA work per warp, extra for R tiles read from shared
    # memory, plus the cluster barrier.
    "latency": "minimize LB * LG * D * 3 - 2 * (RCP - 1) * LB * D + 512 * CL",
    # Keep as much of R in registers as possible.
    "registers": "maximize NW * (RCP - 1) * WG",
    # Occupancy: warps in flight over the whole GPU.
    "occupancy": "maximize CL * BB * NH * NW",
}


def problem_text(
    kind: str, d: int, g: int, batch: int, heads: int, sms: int, dtype_bytes: int, objective: str | None
) -> str:
    """One tiling problem.  ``kind`` "fwd": R [G*D x D] times h; "bwd": R^T [D x G*D] times dg."""
    pad = 8 if dtype_bytes == 2 else 16
    bp = -(-batch // pad) * pad
    rows_total, k_dim = (g * d, d) if kind == "fwd" else (d, g * d)
    tiles = "[8, 16, 32]" if dtype_bytes == 2 else "[8, 16]"
    mma = 256 if dtype_bytes == 2 else 128
    lines = [
        f"# {kind} pass: D={d} G={g} batch={batch} heads={heads} SMs={sms} dtype={dtype_bytes}B",
        f"D == {d}; G == {g}; BP == {bp}; NH == {heads}; SMS == {sms};",
        f"ROWSALL == {rows_total}; KDIM == {k_dim};",
        "# MMA warp tile (batch x gate rows), K step 16",
        f"WB == {tiles}; WG == {tiles};",
        f"WB * WG == {mma};",
        "KDIM % 16 == 0;",
        "# warps per CTA",
        "NW <= 32;",
        "NW * 32 <= 1024;",
        "# batch: BB CTAs along the batch, LB batch tiles per warp",
        "LB <= 4;",
        "BP == BB * WB * LB;",
        "# rows of R over a cluster of CL CTAs, then over warps (LG gate tiles per warp)",
        "CL <= 16;",
        "ROWSALL == CL * ROWS;",
        "ROWS == NW * LG * WG;",
        "# RCP - 1 of the LG row tiles of each warp stay in registers (RCP >= 1 as all",
        "# variables are positive; REGR, SMR get +1 / +64 offsets to stay positive too)",
        "RCP <= LG + 1;",
        f"REGR * 4 + WG * KDIM * {dtype_bytes} == RCP * WG * KDIM * {dtype_bytes} + 4;",
        "ACC == WB * WG * LB * LG;",
        "# per thread at most 255 registers (REGR, ACC counted per warp)",
        "REGR + ACC + 40 * 32 <= 255 * 32;",
        f"NW * REGR + NW * ACC + NW * 40 * 32 <= {REGS_PER_SM};",
        "# shared memory: R rows not in registers, h tile, gate buffer",
        f"SMR + NW * RCP * WG * KDIM * {dtype_bytes} == NW * LG * WG * KDIM * {dtype_bytes}"
        f" + NW * WG * KDIM * {dtype_bytes} + 64;",
        f"SMH == WB * LB * KDIM * {dtype_bytes};",
        "SMG == WB * LB * ROWS * 4;",
        f"SMR + SMH + SMG <= {SMEM_PER_BLOCK};",
        "# persistent kernel: every CTA resident at once, one head per CTA",
        "CL * BB * NH <= SMS;",
        "# cluster sizes are powers of two; 16 (non-portable) only for a lone cluster",
        "CL == [1, 2, 4, 8, 16];",
        "CL <= 8 | BB * NH == 1;",
    ]
    if objective is not None:
        lines.append(f"# objective: {OBJECTIVES[objective]}")
    return "\n".join(lines) + "\n"


def problems() -> list[tuple[str, str]]:
    """A fixed, deterministic grid of problems."""
    out = []
    grid = itertools.product(
        ["fwd", "bwd"],
        [16, 64, 128, 256, 512, 768, 1024, 2048],
        [1, 3, 4],
        [1, 16, 64, 256],
        [108, 132],
        [1, 4],
        [2, 4],
    )
    for n, (kind, d, g, batch, sms, heads, dt) in enumerate(grid):
        # Thin the full grid (1536 points) deterministically to about 200 problems.
        if n % 7:
            continue
        objective = list(OBJECTIVES)[n % 3] if n % 5 else None
        name = f"{kind}-D{d}-G{g}-B{batch}-SM{sms}-H{heads}-{dt}B-{objective or 'feasible'}"
        out.append((name, problem_text(kind, d, g, batch, heads, sms, dt, objective)))
    return out


def backend_problems() -> list[tuple[str, object]]:
    """The cuda backend's own problems: (name, build) with build() -> Model, one per distinct call of
    its problem builders while it lists every variant it ships for sm_80 and sm_90a."""
    from fusedrnn.backends.cuda import kernels
    from fusedrnn.backends.cuda import model as cuda_model

    builders = ("_problem", "_grid_problem", "_split_problem")
    calls: dict[tuple, tuple] = {}
    originals = {name: getattr(cuda_model, name) for name in builders}

    def recorder(name):
        def build(*args, **kwargs):
            calls.setdefault((name, args, tuple(sorted(kwargs.items()))), (name, args, kwargs))
            return originals[name](*args, **kwargs)

        return build

    try:
        for name in builders:
            setattr(cuda_model, name, recorder(name))
        for arch in ("sm_80", "sm_90a"):
            cuda_model.kernel_shape.cache_clear()
            kernels.shipped_variants(arch)
    finally:
        for name, fn in originals.items():
            setattr(cuda_model, name, fn)
        cuda_model.kernel_shape.cache_clear()
    out = []
    for name, args, kwargs in calls.values():
        parts = [
            f"smem{a.smem_per_block}-cluster{a.max_cluster}" if isinstance(a, cuda_model.Limits) else str(a)
            for a in args
        ] + [f"{k}={v}" for k, v in kwargs.items()]
        label = "-".join([name.strip("_")] + parts)
        out.append((label, lambda name=name, args=args, kwargs=kwargs: originals[name](*args, **kwargs)))
    return out


def load_constrint(path: str):
    spec = importlib.util.spec_from_file_location("constrint_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # loaded standalone: its on-disk result cache is not used
    return module


class _Alarm(Exception):
    pass


def run_constrint(ct, text: str, model: Model, limit: float):
    """Returns (seconds, verdict) with verdict in valid / invalid / none / error / timeout."""
    names = [v.name for v in model.variables]

    def on_alarm(signum, frame):
        raise _Alarm

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    t0 = time.perf_counter()
    try:
        constraint, variables = ct.parse_expression(text)
        refinements = [ct.ValueRefinement(n) for n in names if n in variables]
        sols = ct.solve_constrint(constraint, variables, refinements, num_solutions=1)
        elapsed = time.perf_counter() - t0
    except _Alarm:
        return limit, "timeout", None
    except Exception as exc:  # ConstrINT raises ValueError on big domains etc.
        return time.perf_counter() - t0, f"error ({type(exc).__name__})", None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if not sols:
        return elapsed, "none", None
    sol = sols[0]
    if any(n not in sol for n in names):
        return elapsed, "invalid (incomplete assignment)", sol
    return elapsed, ("valid" if not model.check(sol) else "invalid"), sol


def report(title: str, rows: list[dict], show: int) -> None:
    times = [r["time"] for r in rows]
    statuses = dict(collections.Counter(r["status"] for r in rows))
    print(f"fusedrnn.tune: {len(rows)} {title}, python {sys.version.split()[0]}")
    print(f"  statuses: {statuses}")
    print(
        f"  solve time: median {statistics.median(times) * 1e3:.2f} ms, "
        f"mean {statistics.mean(times) * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms"
    )
    nodes = [r["nodes"] for r in rows]
    print(f"  nodes: median {statistics.median(nodes)}, max {max(nodes)}")
    for r in sorted(rows, key=lambda r: -r["time"])[:show]:
        print(f"    {r['time'] * 1e3:8.2f} ms  {r['nodes']:6d} nodes  {r['status']:10s} {r['name']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--constrint",
        default=os.environ.get("FUSEDRNN_CONSTRINT"),
        help="path to flashrnn's autotune/constrint.py (or env FUSEDRNN_CONSTRINT)",
    )
    ap.add_argument("--constrint-timeout", type=float, default=10.0, help="seconds per ConstrINT run")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (minimum is kept)")
    ap.add_argument("--json", default=None, help="write per-problem results to this file")
    ap.add_argument("--show", type=int, default=5, help="print the N slowest problems")
    ap.add_argument(
        "--set",
        choices=("kernel", "backend", "all"),
        default="kernel",
        help="kernel: the generated tiling problems (text, ConstrINT syntax); backend: the cuda "
        "backend's own problems (Model, built and solved); all: both",
    )
    args = ap.parse_args()

    if args.set in ("backend", "all"):
        backend = backend_problems()
        rows = []
        for name, build in backend:
            best = None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = build().solve()
                elapsed = time.perf_counter() - t0
                best = elapsed if best is None else min(best, elapsed)
            rows.append({"name": name, "status": res.status, "time": best, "nodes": res.stats.nodes})
        report("cuda backend's own problems (Model built and solved)", rows, args.show)
        if args.set == "backend":
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
            return 0

    probs = problems()
    ct = load_constrint(args.constrint) if args.constrint else None
    rows = []
    for name, text in probs:
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = solve(text)
            elapsed = time.perf_counter() - t0
            best = elapsed if best is None else min(best, elapsed)
        model = Model.from_text(text)
        if res.solution is not None:
            assert not model.check(res.solution), name
        row = {"name": name, "status": res.status, "objective": res.objective, "time": best, "nodes": res.stats.nodes}
        if ct is not None:
            ct_time, verdict, ct_sol = run_constrint(ct, text, model, args.constrint_timeout)
            if verdict == "none" and res.status in ("optimal", "feasible"):
                verdict = "missed (says none, a solution exists)"
            elif verdict == "none":
                verdict = "none (correct: infeasible)"
            row.update(constrint_time=ct_time, constrint=verdict)
            if ct_sol is not None and verdict == "valid" and res.objective is not None:
                obj = model.objective
                from fusedrnn.tune.model import compile_expr

                index = {v.name: i for i, v in enumerate(model.variables)}
                value = compile_expr(obj.expr, index, {})([ct_sol[v.name] for v in model.variables], ())
                row["constrint_objective"] = value
        rows.append(row)

    report("tiling problems (text, parse included)", rows, args.show)
    if ct is not None:
        ct_times = [r["constrint_time"] for r in rows]
        verdicts = dict(collections.Counter(r["constrint"] for r in rows))
        print(f"ConstrINT ({args.constrint}), first solution only, {args.constrint_timeout:g} s limit:")
        print(f"  time: median {statistics.median(ct_times) * 1e3:.2f} ms, max {max(ct_times) * 1e3:.2f} ms")
        print(f"  answers: {verdicts}")
        gaps = [(r["objective"], r["constrint_objective"]) for r in rows if "constrint_objective" in r]
        if gaps:
            worse = sum(1 for ours, theirs in gaps if ours != theirs)
            print(
                f"  objective of ConstrINT's first hit differs from the optimum on {worse}/{len(gaps)} "
                "problems with an objective"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
