"""Where a training iteration's time goes: per-kernel time of forward + backward(sum(y)) of one backend, from
torch.profiler, for one or more configs — the iteration ``fusedrnn bench`` times as fwbw (``fusedrnn_case``).

    python benchmarks/kernel_breakdown.py lstm:12x64 lstm:6x128 [--backend cuda] [--iters 5]

B = 16, T = 1024, bf16 (as the bars); 3 warm-up iterations, then ITERS profiled ones; the table is per iteration.
``--device cpu`` profiles CPU ops instead (a smoke test without a GPU)."""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from fusedrnn.cli.bench import Shape, fusedrnn_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="CELL:NHxD, e.g. lstm:6x128")
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    for config in args.configs:
        cell, heads = config.split(":")
        num_heads, head_dim = map(int, heads.split("x"))
        iteration = fusedrnn_case(
            args.backend, Shape(cell, num_heads, head_dim, args.batch, args.steps), torch.bfloat16, device
        )["fwbw"]
        for _ in range(3):
            iteration()
        if gpu:
            torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
            for _ in range(args.iters):
                iteration()
            if gpu:
                torch.cuda.synchronize()
        rows = []
        for event in prof.key_averages():
            total = event.device_time_total if gpu else event.self_cpu_time_total
            if total > 0:
                rows.append((total / args.iters / 1000.0, event.count // args.iters, event.key))
        rows.sort(reverse=True)
        print(
            f"== {config} on {args.backend} ({device.type}), B = {args.batch}, T = {args.steps}, bf16: ms per "
            "iteration (forward + backward)"
        )
        for ms, count, name in rows[:14]:
            print(f"{ms:9.3f}  x{count:<3d} {name[:100]}")
        print(f"{sum(r[0] for r in rows):9.3f}  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
