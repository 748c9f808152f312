"""pararnn-torch's parallel Newton solver against fusedrnn's sequential fused sLSTM, on pararnn's own shapes.

    python benchmarks/bench_pararnn.py --out pararnn.jsonl                # the GPU run, within --seconds (150)
    python benchmarks/bench_pararnn.py --table pararnn.jsonl              # the markdown table of those rows
    python benchmarks/bench_pararnn.py --smoke                            # every path at tiny sizes on the CPU

Shapes. pararnn-torch (0.17) benchmarks its sLSTM against a sequential one (NX-AI flashrnn) with
``configs/bench/newton_slstm_flashrnn.yaml`` (T = 64 ... 4096) and ``newton_slstm_flashrnn_long.yaml``
(T = 2048 ... 16384) of its repository (github.com/bugkira/pararnn-torch; the README's "Benchmarks" table, "B=8,
d_h=256, float32", cites them): ``ParaSLSTM(mix='diag')``, batch 8, d_in = d_h = 256, float32, 3 Newton
iterations, Picard warm start chosen by T, the library's residual tolerance (1e-5). Here: those, at
T = 1024, 4096, 16384, 65536, in float32 (its dtype) and then bfloat16 (this project's protocol dtype).

What each side computes. Both start from x [B, T, 256] and include the same input projection (256 -> 4 · 256,
one GEMM), so the rows are "sLSTM layer from x to h":

- ``pararnn-diag``: ``ParaRNN(ParaSLSTM(256, 256, mix='diag'))`` in training mode, the solver
  ``scan_backend='fused'`` (its Triton fused Newton + scan, its fastest training path; the rows record the
  backend, Picard depth, Newton iterations and final residual it reports). Its recurrence is *diagonal*: each of
  the 256 units sees only its own previous h (R is [4, 256], one scalar per gate and unit), so per step it does
  O(4 · 256) recurrent work, and it solves for all T at once (K Newton sweeps, each a parallel scan over T).
- ``fusedrnn-cuda 16x16`` (and ``fusedrnn-auto 16x16``): ``fusedrnn.rnn(cell='slstm')``, one step after the
  other in one fused kernel. fusedrnn's sLSTM has a dense R per head (block-diagonal over heads) and its fused
  kernels need heads of at least 16 units (the MMA's K step), so the closest configuration to a diagonal R is
  16 heads of 16: 16 × more recurrent multiply-adds per step than pararnn's (4 · 256 · 16 against 4 · 256).
  fusedrnn does more work per step and is exact (no iteration). The cells differ in one detail of the same
  cost: pararnn's forget gate is exp(f) with the normaliser floored by + 1e-6, fusedrnn's (xLSTM's and
  flashrnn's) is sigmoid(f) (log-sigmoid inside the stabiliser) with the normaliser clamped at 1; inputs,
  stabiliser m and readout are the same, so the rows compare speed, not outputs.
- ``fusedrnn-cuda 4x64``: 4 heads of 64, xLSTM's usual head size (64 × the diagonal's recurrent work).
- ``pararnn-head16`` (``--impls``, not in the default run): ``ParaSLSTM(mix='head', n_heads=16)``, pararnn's
  own dense-per-head sLSTM, the structure of fusedrnn 16x16 (the same R shape and work per step), with the
  settings its docs give that mix (K = 4, Picard 3).

Timing: ``fusedrnn.cli.bench.measure`` (CUDA events around each repetition, warm-up excluded, median; the first
call, compilation included, as ``first_ms``). "fw" is one forward under ``torch.no_grad``; "fwbw" is the forward
and the backward of y.sum() with respect to x and every weight. One process; one JSON line per row (stdout and
``--out``); a row that fails records its error and the run goes on; rows whose predicted time would pass the
``--seconds`` budget are recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

import fusedrnn
from fusedrnn.cli.bench import measure

# pararnn's configs/bench/newton_slstm_flashrnn*.yaml
BATCH, D_H, NEWTON_ITERS = 8, 256, 3  # d_in = d_h
STEPS = (1024, 4096, 16384, 65536)
DTYPES = ("float32", "bfloat16")
IMPLS = ("pararnn-diag", "fusedrnn-cuda:16x16", "fusedrnn-auto:16x16", "fusedrnn-cuda:4x64", "pararnn-head16")
DEFAULT_IMPLS = IMPLS[:4]
MODES = ("fw", "fwbw")
# seconds kept for the first row of an implementation and dtype, whose compile time cannot be predicted
FIRST_ROW_S = 20.0
MIN_REPS, MAX_REPS = 5, 50  # the calls reach 100 ms and more at T = 65536: 5 repetitions keep the run short
# the row the table compares every other one with
ANCHOR = "pararnn-diag"


@dataclass(frozen=True)
class Setup:
    device: torch.device
    batch: int
    d_h: int
    smoke: bool


def _pararnn_case(impl: str, steps: int, dtype: torch.dtype, setup: Setup) -> tuple[Callable, Callable, dict]:
    from pararnn import NewtonConfig, ParaRNN, ParaSLSTM

    # the fused solver exists on CUDA only; on the CPU (smoke) 'auto' resolves to its eager Newton + scan
    backend = "auto" if setup.smoke else "fused"
    if impl == "pararnn-diag":
        cell = ParaSLSTM(setup.d_h, setup.d_h, mix="diag")
        config = NewtonConfig(max_iters=NEWTON_ITERS, scan_backend=backend)
    else:  # pararnn-head16: its docs' settings for the head mix (K = 4, Picard >= 3)
        heads = setup.d_h // 16
        cell = ParaSLSTM(setup.d_h, setup.d_h, mix="head", n_heads=heads)
        config = NewtonConfig(max_iters=4, picard_iters=3, scan_backend=backend)
    model = ParaRNN(cell, config=config, output_hidden=True).to(device=setup.device, dtype=dtype).train()
    x = torch.randn(setup.batch, steps, setup.d_h, device=setup.device, dtype=dtype, requires_grad=True)
    leaves = (x, *model.parameters())

    def info() -> dict:
        stats = model.last_stats[0] if model.last_stats else None
        if stats is None:
            return {}
        return {
            "solver": stats.scan_backend,
            "newton_iters": stats.iters,
            "picard_iters": stats.picard_iters,
            "max_residual": stats.max_residual,
        }

    return (lambda: model(x)), info, {"leaves": leaves}


def _fusedrnn_case(impl: str, steps: int, dtype: torch.dtype, setup: Setup) -> tuple[Callable, Callable, dict]:
    name, heads = impl.split(":")
    backend = name.removeprefix("fusedrnn-")
    num_heads, head_dim = (int(v) for v in heads.split("x"))
    if setup.smoke:  # tiny hidden: the same split shape scaled down; the cuda backend has no CPU path
        num_heads, head_dim = max(1, setup.d_h // head_dim), min(head_dim, setup.d_h)
        backend = "reference" if backend == "cuda" else backend
    hidden = num_heads * head_dim
    proj = torch.nn.Linear(setup.d_h, 4 * hidden, device=setup.device, dtype=dtype)
    x = torch.randn(setup.batch, steps, setup.d_h, device=setup.device, dtype=dtype, requires_grad=True)
    # R scaled so that the recurrence neither dies nor explodes, as fusedrnn's own benchmark does
    R = (torch.randn(4, num_heads, head_dim, head_dim, device=setup.device) / head_dim**0.5).to(dtype)
    R.requires_grad_()
    b = torch.zeros(4, num_heads, head_dim, device=setup.device, dtype=dtype, requires_grad=True)
    leaves = (x, R, b, *proj.parameters())

    def forward() -> torch.Tensor:
        pre = proj(x).view(setup.batch, steps, 4, num_heads, head_dim)
        return fusedrnn.rnn(pre, R, b, cell="slstm", backend=backend)[0]

    def info() -> dict:
        from fusedrnn.backends import Call
        from fusedrnn.backends.registry import select_backend
        from fusedrnn.cells import get_cell

        call = Call(get_cell("slstm"), setup.batch, steps, num_heads, head_dim, dtype, setup.device, True)
        return {"solver": select_backend(backend, call).name, "heads": f"{num_heads}x{head_dim}"}

    return forward, info, {"leaves": leaves}


def _callables(forward: Callable[[], torch.Tensor], leaves: tuple[torch.Tensor, ...]) -> dict[str, Callable]:
    def fw() -> None:
        with torch.no_grad():
            forward()

    def fwbw() -> None:
        for t in leaves:
            t.grad = None
        forward().float().sum().backward()

    return {"fw": fw, "fwbw": fwbw}


def _predicted_s(done: dict, impl: str, dtype: str, mode: str, steps: int) -> float:
    """Seconds the next row should take: the same implementation's last median scaled by T, times the calls
    ``measure`` makes at that length (0 when there is no earlier row)."""
    last = done.get((impl, dtype, mode))
    if last is None:
        return 0.0
    last_steps, last_ms = last
    call_ms = last_ms * steps / last_steps
    reps = max(MIN_REPS, min(MAX_REPS, math.ceil(100.0 / call_ms)))
    return (2 + reps + (0 if call_ms >= 20 else 5)) * call_ms / 1000 + 1.0  # + 1 s to build the inputs


def run(args: argparse.Namespace) -> list[dict]:
    started = time.perf_counter()
    smoke = args.smoke
    setup = Setup(
        device=torch.device("cpu" if smoke else "cuda"),
        batch=2 if smoke else BATCH,
        d_h=32 if smoke else D_H,
        smoke=smoke,
    )
    steps_list = (16, 64) if smoke else tuple(args.steps)
    out = open(args.out, "a") if args.out else None  # noqa: SIM115 (kept open for the whole run)
    rows: list[dict] = []
    done: dict[tuple, tuple[int, float]] = {}
    versions = {"torch": torch.__version__}
    try:
        import pararnn

        versions["pararnn"] = getattr(pararnn, "__version__", "?")
    except Exception as error:  # noqa: BLE001 (recorded: the fusedrnn rows still run)
        versions["pararnn"] = f"not importable: {error!r}"
    if setup.device.type == "cuda":
        versions["device"] = torch.cuda.get_device_name()

    def emit(row: dict) -> None:
        row = {"elapsed_s": round(time.perf_counter() - started, 1), **row}
        rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    emit({"kind": "env", **versions, "batch": setup.batch, "d_h": setup.d_h, "smoke": smoke})
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for steps in steps_list:
            for impl in args.impls:
                base = {"impl": impl, "dtype": dtype_name, "steps": steps, "batch": setup.batch, "d_h": setup.d_h}
                predicted = sum(_predicted_s(done, impl, dtype_name, m, steps) for m in args.modes)
                if not any((impl, dtype_name, m) in done for m in args.modes):
                    predicted = 0.0 if smoke else FIRST_ROW_S
                left = args.seconds - (time.perf_counter() - started)
                if predicted > left or left <= 0:
                    for mode in args.modes:
                        emit({**base, "mode": mode, "skipped": f"budget: {left:.0f} s left, ~{predicted:.0f} s"})
                    continue
                try:
                    maker = _pararnn_case if impl.startswith("pararnn") else _fusedrnn_case
                    forward, info, extra = maker(impl, steps, dtype, setup)
                    fns = _callables(forward, extra["leaves"])
                except Exception as error:  # noqa: BLE001 (recorded per row; the run goes on)
                    for mode in args.modes:
                        emit({**base, "mode": mode, "error": repr(error)[:500]})
                    continue
                for mode in args.modes:
                    try:
                        timing = measure(fns[mode], setup.device, min_reps=MIN_REPS, max_reps=MAX_REPS)
                        emit({**base, "mode": mode, **timing, **info()})
                        done[(impl, dtype_name, mode)] = (steps, timing["ms"])
                    except Exception as error:  # noqa: BLE001
                        emit({**base, "mode": mode, "error": repr(error)[:500], "trace": traceback.format_exc()[-800:]})
                del forward, info, fns, extra
                if setup.device.type == "cuda":
                    torch.cuda.empty_cache()
    if out:
        out.close()
    return rows


def table(path: str) -> str:
    """Markdown: one line per (dtype, T, mode), ms per implementation, pararnn's time over each fusedrnn row's
    (> 1: fusedrnn faster) and which side wins (pararnn's Newton solver against fusedrnn's fastest row)."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    rows = [r for r in rows if r.get("kind") != "env"]
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    fused = [i for i in impls if i.startswith("fusedrnn")]
    ratios = [(ANCHOR, i) for i in fused]
    if "pararnn-head16" in impls and "fusedrnn-cuda:16x16" in impls:
        ratios.append(("pararnn-head16", "fusedrnn-cuda:16x16"))  # the same structure on both sides
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["dtype"], r["steps"], r["mode"]), {})[r["impl"]] = r

    def shown(r: dict | None) -> str:
        if r is None:
            return "–"
        if "ms" in r:
            return f"{r['ms']:.3g}"
        return "error" if "error" in r else "skipped"

    head = ["dtype", "T", "mode", *(f"{i} ms" for i in impls), *(f"{a} / {b}" for a, b in ratios), "wins"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 4) + "---|"]
    for key in sorted(cells, key=lambda k: (DTYPES.index(k[0]) if k[0] in DTYPES else 9, k[1], k[2])):
        by = cells[key]
        ms = {i: r["ms"] for i, r in by.items() if "ms" in r}
        shown_ratios = [f"{ms[a] / ms[b]:.2f}" if a in ms and b in ms else "–" for a, b in ratios]
        best_fused = min((i for i in fused if i in ms), key=ms.get, default=None)
        wins = "–"
        if ANCHOR in ms and best_fused:
            fast, slow = sorted((ANCHOR, best_fused), key=ms.get)
            wins = f"{fast} ({ms[slow] / ms[fast]:.2f}×)"
        cols = [*map(str, key), *(shown(by.get(i)) for i in impls), *shown_ratios, wins]
        lines.append("| " + " | ".join(cols) + " |")
    solvers = sorted({f"{r['impl']}: {r['solver']}" for r in rows if r.get("solver")})
    failures = [
        f"{r['impl']} {r['dtype']} T={r['steps']} {r['mode']}: {r['error'][:160]}" for r in rows if "error" in r
    ]
    text = "\n".join(lines) + "\n\nratio > 1: the second implementation is faster.\n"
    text += "solvers: " + "; ".join(solvers) + "\n" if solvers else ""
    return text + "".join(f"- {f}\n" for f in failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="append one JSON line per row to this file")
    parser.add_argument("--seconds", type=float, default=150.0, help="time budget of the whole run (default 150)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(DEFAULT_IMPLS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--smoke", action="store_true", help="every path at tiny sizes on the CPU")
    parser.add_argument("--table", metavar="JSONL", help="print the markdown table of a run's rows and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run on the GPU machine, or --smoke on the CPU")
    # pararnn logs every Newton solve whose residual passes its warning level (bfloat16 ones do, by rounding) and
    # warns at every mix='head' cell it builds; the rows record the residual instead
    logging.getLogger("pararnn").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="mix='head'", category=UserWarning)
    if args.smoke:
        torch.set_num_threads(1)  # tiny tensors: more threads only contend
        args.impls = list(IMPLS)
    rows = run(args)
    timed = [r for r in rows if r.get("kind") != "env"]
    failed = [r for r in timed if "error" in r]
    # the smoke run must exercise every path; a device run may lose single rows (recorded) and still report
    return 1 if args.smoke and failed else 0


if __name__ == "__main__":
    sys.exit(main())
