"""Alternating backend: the fused forward step kernel against the GEMM path (cuBLAS GEMM + pointwise kernel
per step), and the fused kernel's tile alternatives, in one process, back to back.

Rows, most important first (a run cut short keeps what it printed): every cell at 1 x --hidden, forward and
forward + backward, fused then GEMM path; LSTM 1 x --hidden forward for every tile in TILES; LSTM
1 x --big-hidden forward and forward + backward on both paths; LSTM 1 x --hidden forward at the
--large-batches on both paths (where the path rule switches, FUSED_MAX_BATCH). CUDA events around each
call, median of --reps after --warmup calls and one untimed first call (compilation, graph capture).

    python benchmarks/alt_fused_bench.py --json out/alt_fused.json

``--device cpu`` (under TRITON_INTERPRET=1) runs the same code on tiny shapes, for tests of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import torch

import fusedrnn
from fusedrnn import get_cell
from fusedrnn.backends.alternating import launch
from fusedrnn.timing import median_ms

# Tile alternatives of the fused kernel (keyword overrides of launch.forward / launch.forward_tile), each
# changing one or two choices of the defaults: hidden units per program (the MMA's rows: 4 gates x block_j),
# accumulators, warps, inputs per k step, pipeline stages, batch tile. The GPU tests check each against the
# GEMM path before it is timed here.
TILES = [
    {},  # the defaults (launch.forward_tile): at 1 x 768 on an H100 block_j 8, 2 accumulators, 2 warps
    {"block_j": 8, "k_chains": 1, "num_warps": 4},
    {"block_j": 8, "num_warps": 4},
    {"block_j": 16},
    {"block_j": 16, "num_warps": 8},
    {"block_j": 16, "k_chains": 2},
    {"block_j": 4},
    {"block_j": 4, "k_chains": 1, "num_warps": 4},
    {"block_j": 4, "num_warps": 2},
    {"block_j": 32},
    {"block_j": 8, "block_k": 64},
    {"block_j": 8, "block_k": 256},
    {"block_j": 16, "block_k": 64},
    {"block_j": 8, "num_stages": 2},
    {"block_j": 8, "num_stages": 4},
    {"block_b": 64},
]


def tile_name(tile: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in tile.items()) or "default"


def _inputs(cell, B, T, D, dtype, device):
    spec = get_cell(cell)
    x = torch.randn(B, T, spec.num_gates_x, 1, D, device=device, dtype=dtype, requires_grad=True)
    R = (torch.randn(spec.num_gates_r, 1, D, D, device=device) / D**0.5).to(dtype).requires_grad_()
    b = torch.randn(spec.num_gates_b, 1, D, device=device, dtype=dtype, requires_grad=True)
    return x, R, b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "elman", "slstm"])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--big-hidden", type=int, default=4096)
    parser.add_argument("--large-batches", type=int, nargs="*", default=[64, 128])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="write the rows as JSON here (rewritten after every row)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    T = args.steps
    rows = []

    def timed(fn):
        fn()  # compiles, captures the plan's graph
        return median_ms(fn, args.reps, args.warmup, device)

    def record(case, path, what, ms, B):
        rows.append({"case": case, "path": path, "what": what, "B": B, "T": T, "ms": ms, "us_per_step": 1000 * ms / T})
        print(f"{case:14s} B={B:<4d} {path:44s} {what:5s} {ms:9.3f} ms {1000 * ms / T:7.2f} us/step", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)

    def call_fns(cell, B, D, fused):
        """fw and fwbw through fusedrnn.rnn, the path chosen through FUSEDRNN_ALTERNATING_FUSED (the rule's
        other condition, B <= FUSED_MAX_BATCH, holds for these rows)."""
        x, R, b = _inputs(cell, B, T, D, dtype, device)
        env = "1" if fused else "0"

        def fw():
            os.environ[launch.FUSED_ENV] = env
            with torch.no_grad():
                fusedrnn.rnn(x, R, b, cell=cell, backend="alternating")

        def fwbw():
            os.environ[launch.FUSED_ENV] = env
            x.grad = R.grad = b.grad = None
            y, _ = fusedrnn.rnn(x, R, b, cell=cell, backend="alternating")
            y.sum().backward()

        return fw, fwbw

    def launch_fw(cell, B, D, fused, **tile):
        """fw through launch.forward (what rnn runs without gradients), the path and tile given explicitly."""
        x, R, b = (t.detach() for t in _inputs(cell, B, T, D, dtype, device))
        state = torch.zeros(get_cell(cell).num_states, B, 1, D, device=device, dtype=dtype)
        return lambda: launch.forward(cell, x, R, b, state, None, False, fused=fused, **tile)

    def path_name(cell, B, D, fused, **tile):
        chosen = launch.forward_tile(get_cell(cell).num_gates_r, B, 1, D, dtype, device, fused=fused, **tile)
        if chosen is None:
            return "gemm"
        return (
            f"fused b{chosen.block_b} j{chosen.block_j} k{chosen.block_k} c{chosen.k_chains} w{chosen.num_warps} "
            f"s{chosen.num_stages}"
        )

    def both_paths(cell, B, D, whats):
        for what in whats:
            for fused in (True, False):
                fw, fwbw = call_fns(cell, B, D, fused)
                record(f"{cell} 1x{D}", path_name(cell, B, D, fused), what, timed(fw if what == "fw" else fwbw), B)

    try:
        for cell in args.cells:
            both_paths(cell, args.batch, args.hidden, ("fw", "fwbw"))
        for tile in TILES:
            fw = launch_fw("lstm", args.batch, args.hidden, True, **tile)
            name = f"{path_name('lstm', args.batch, args.hidden, True, **tile)} ({tile_name(tile)})"
            record(f"lstm 1x{args.hidden}", name, "fw", timed(fw), args.batch)
        both_paths("lstm", args.batch, args.big_hidden, ("fw", "fwbw"))
        for B in args.large_batches:
            for fused in (True, False):
                fw = launch_fw("lstm", B, args.hidden, fused)
                record(f"lstm 1x{args.hidden}", path_name("lstm", B, args.hidden, fused), "fw", timed(fw), B)
    finally:
        os.environ.pop(launch.FUSED_ENV, None)
        print(f"\n{'case':14s} {'B':>4s} {'path':70s} {'what':5s} {'ms':>9s} {'us/step':>8s}")
        for r in rows:
            print(f"{r['case']:14s} {r['B']:4d} {r['path']:70s} {r['what']:5s} {r['ms']:9.3f} {r['us_per_step']:8.2f}")
    return rows


if __name__ == "__main__":
    # `timeout` sends SIGTERM: exit through main's finally, which prints the table of the rows so far
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    main()
