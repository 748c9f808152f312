"""Time forward_split_k (the forward over a cluster with K split over the warps) over given tilings, against the
forward the model ships without it (forward_transposed with R's last K steps in shared memory), in one process: each
kernel alone (CUDA events, median of 10 after 3 warm-ups, B = 16 unless given, T = 1024, bf16), inference and saving
for backward; every tiling's y and final state checked against the float32 reference first.

    python benchmarks/split_sweep.py lstm:768:16:4:2:13 lstm:768:16:4:2:13:4 ... [--batch 16] [--steps 1024]
        [--out FILE]

A tiling is cell:D:cluster:row_groups:k_groups:kr[:rows] (kr: K steps of R per warp in registers; rows: batch rows
per CTA, 8 unless given).
"""

from __future__ import annotations

import argparse
import json

import torch
from forced_variants import compile_variants, forced  # a sibling: run from benchmarks/ or with it on sys.path

from fusedrnn import rnn
from fusedrnn.backends.cuda import launch, model, planner, split_k
from fusedrnn.backends.cuda.kernels import Variant
from fusedrnn.timing import median_ms
from tests.helpers import TOL, max_error, random_problem


def shipped_without_split(cell: str, D: int, limits) -> Variant:
    """The forward the model picks with forward_split_k left out."""
    shape = model.kernel_shape("forward", cell, D, "bfloat16", limits, 8, exclude=("split_k",))
    return Variant("forward", cell, "bfloat16", D, shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tilings", nargs="+", help="cell:D:cluster:row_groups:k_groups:kr[:rows]")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda", 0)
    limits = planner.device_facts(0).limits
    B, T = args.batch, args.steps
    by_head: dict[tuple[str, int], list[Variant]] = {}
    for spec in args.tilings:
        cell, *numbers = spec.split(":")
        D = int(numbers[0])
        shape = split_k.split_shape(cell, *map(int, numbers))
        if shape.smem > limits.smem_per_block:
            print(f"{spec}: {shape.smem} bytes of shared memory > {limits.smem_per_block}, left out", flush=True)
            continue
        by_head.setdefault((cell, D), []).append(Variant("forward", cell, "bfloat16", D, shape))
    for (cell, D), variants in by_head.items():
        variants = [shipped_without_split(cell, D, limits)] + variants
        compiled = compile_variants(variants, device)
        x, R, b, state = random_problem(cell, B, T, 1, D, dtype=torch.bfloat16, device="cuda")
        with torch.no_grad():
            y_ref, final_ref = rnn(*(t.float() for t in (x, R, b, state)), cell=cell, backend="reference")
        for v, c in zip(variants, compiled):
            with forced(v):
                y, final, _, _ = launch.forward(cell, x, R, b, state, None, False)
                errors = {"y": max_error(y, y_ref), "final": max_error(final, final_ref)}
                ms = median_ms(lambda: launch.forward(cell, x, R, b, state, None, False), 10, warmup=3)
                ms_save = median_ms(lambda: launch.forward(cell, x, R, b, state, None, True), 10, warmup=3)
            split = v.family == "split_k"  # else the forward shipped without split-K
            row = {
                "head": f"{cell}:{D}",
                "variant": v.name,
                "cluster": v.shape.cluster_size,
                "warps": v.shape.warps,
                "k_groups": v.shape.k_groups if split else 0,
                "kr": v.shape.k_steps_in_registers if split else 0,
                "rows": v.shape.rows,
                "smem_kb": round(v.shape.smem / 1024, 1),
                "registers": c.registers,
                "spills": c.spill_stores,
                "ms": round(ms, 3),
                "ms_save": round(ms_save, 3),
                "us_per_step": round(1000 * ms / T, 3),
                "max_error": round(max(errors.values()), 5),
                "correct": max(errors.values()) <= TOL[torch.bfloat16]["fw"],
            }
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
