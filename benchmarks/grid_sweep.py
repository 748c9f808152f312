"""Time the cooperative-grid kernels (rnn_forward_g / rnn_backward_g) over the tilings the resource model admits:
for each (kind, cell, D), every (units, warps) of the model's solutions with its most K steps of R in registers and
of A in flight, each kernel alone (CUDA events, median of 10 after 3 warm-ups, B = 16, T = 1024, bf16), and which
one the model picks. The data behind the grid problem's objective (model.py).

    python benchmarks/grid_sweep.py lstm:backward:768 lstm:forward:2048 ... [--steps 1024] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import torch

from fusedrnn.backends.cuda import launch
from fusedrnn.backends.cuda.kernels import Variant, compile_variant
from fusedrnn.backends.cuda.model import Shape, _grid_problem, _grid_shape, grid_registers, grid_smem_bytes
from fusedrnn.timing import median_ms
from tests.helpers import random_problem


def candidates(kind: str, cell: str, D: int, limits) -> list[Variant]:
    solutions = _grid_problem(kind, cell, D, limits).solve(all_solutions=True).solutions
    best: dict[tuple[int, int], dict] = {}
    for v in solutions:
        key = (v["units"], v["warps"])
        rank = (v["kr"], v["ring"] * v["ck"], v["ck"])
        if key not in best or rank > (best[key]["kr"], best[key]["ring"] * best[key]["ck"], best[key]["ck"]):
            best[key] = v
    out = []
    for (units, warps), v in sorted(best.items()):
        shape = Shape(nt=1, stages=v["ring"], warps=warps, rows=16, grid=D // units, kr=v["kr"], ck=v["ck"],
                      smem=grid_smem_bytes(kind, cell, D, units, warps, v["kr"], v["ck"], v["ring"]),
                      registers=grid_registers(kind, cell, D, units, v["kr"], v["elements_per_thread"]))
        out.append(Variant(kind, cell, "bfloat16", D, shape))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="cell:kind:D")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda", 0)
    limits = launch.limits_of(0)
    B, T = 16, args.steps
    rows = []
    for config in args.configs:
        cell, kind, D = config.split(":")
        D = int(D)
        variants = candidates(kind, cell, D, limits)
        picked = _grid_shape(kind, cell, D, "bfloat16", limits, 16)
        from cuda.core import ProgramOptions  # noqa: F401  (import before the threads)

        with ThreadPoolExecutor(16) as pool:
            compiled = list(pool.map(lambda v: compile_variant(v, launch.arch_of(device)), variants))
        x, R, b, state = random_problem(cell, B, T, 1, D, dtype=torch.bfloat16, device="cuda")
        _, _, pre, states = launch.forward(cell, x, R, b, state, None, True)
        dy = torch.randn(B, T, 1, D, device="cuda", dtype=torch.bfloat16)
        dfinal = torch.randn(state.shape, device="cuda", dtype=torch.bfloat16)
        for v, c in zip(variants, compiled):
            launch._LOADED.pop((0, v.name), None)
            original = launch.pick_variant
            launch.pick_variant = lambda *a, v=v: v
            try:
                if kind == "forward":
                    ms = median_ms(lambda: launch.forward(cell, x, R, b, state, None, False), 10, warmup=3)
                else:
                    ms = median_ms(lambda: launch.backward_kernel(cell, R, pre, states, None, dy, dfinal), 10,
                                   warmup=3)
            finally:
                launch.pick_variant = original
            row = {"config": config, "variant": v.name, "grid": v.shape.grid, "warps": v.shape.warps,
                   "kr": v.shape.kr, "ck": v.shape.ck, "ring": v.shape.stages, "smem_kb": v.shape.smem // 1024,
                   "registers": c.registers, "spills": c.spill_stores, "ms": round(ms, 3),
                   "us_per_step": round(1000 * ms / T, 3), "picked": picked == v.shape}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
