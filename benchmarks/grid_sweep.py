"""Time the cooperative-grid kernels (forward_grid / backward_grid) over the tilings the resource model admits:
for each (kind, cell, D), every (units, warps) of the model's solutions with its most K steps of R in registers and
of A in flight, each kernel alone (CUDA events, median of 10 after 3 warm-ups, B = 16, T = 1024, bf16), and which
one the model picks. The data behind the grid problem's objective (model.py).

    python benchmarks/grid_sweep.py lstm:backward:768 lstm:forward:2048 ... [--steps 1024] [--out FILE]
"""

from __future__ import annotations

import argparse
import json

import torch
from forced_variants import compile_variants, forced  # a sibling: run from benchmarks/ or with it on sys.path

from fusedrnn.backends.cuda import launch, planner
from fusedrnn.backends.cuda.grid import fit, grid_shape_of, problem
from fusedrnn.backends.cuda.kernels import Variant
from fusedrnn.timing import median_ms
from tests.helpers import random_problem


def candidates(kind: str, cell: str, D: int, limits) -> list[Variant]:
    solutions = problem(kind, cell, D, limits).solve(all_solutions=True).solutions

    def rank(v: dict) -> tuple[int, int, int]:  # the most K steps of R in registers, then of A in flight
        return v["kr"], v["ring"] * v["ck"], v["ck"]

    best: dict[tuple[int, int], dict] = {}
    for v in solutions:
        key = (v["units"], v["warps"])
        if key not in best or rank(v) > rank(best[key]):
            best[key] = v
    return [Variant(kind, cell, "bfloat16", D, grid_shape_of(kind, cell, D, v)) for _, v in sorted(best.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="cell:kind:D")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda", 0)
    limits = planner.device_facts(0).limits
    B, T = 16, args.steps
    rows = []
    for config in args.configs:
        cell, kind, D = config.split(":")
        D = int(D)
        variants = candidates(kind, cell, D, limits)
        picked = fit(kind, cell, D, "bfloat16", limits, 16)
        compiled = compile_variants(variants, device)
        x, R, b, state = random_problem(cell, B, T, 1, D, dtype=torch.bfloat16, device="cuda")
        _, _, pre, states = launch.forward(cell, x, R, b, state, None, True)
        dy = torch.randn(B, T, 1, D, device="cuda", dtype=torch.bfloat16)
        dfinal = torch.randn(state.shape, device="cuda", dtype=torch.bfloat16)
        for v, c in zip(variants, compiled):
            with forced(v):
                if kind == "forward":
                    ms = median_ms(lambda: launch.forward(cell, x, R, b, state, None, False), 10, warmup=3)
                else:
                    ms = median_ms(lambda: launch.backward_kernel(cell, R, pre, states, None, dy, dfinal), 10, warmup=3)
            row = {
                "config": config,
                "variant": v.name,
                "grid": v.shape.ctas,
                "warps": v.shape.warps,
                "kr": v.shape.k_steps_in_registers,
                "ck": v.shape.k_steps_per_chunk,
                "ring": v.shape.chunks_in_flight,
                "smem_kb": v.shape.smem // 1024,
                "registers": c.registers,
                "spills": c.spill_stores,
                "ms": round(ms, 3),
                "us_per_step": round(1000 * ms / T, 3),
                "picked": picked == v.shape,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
