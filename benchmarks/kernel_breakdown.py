"""Where a training iteration's GPU time goes: per-kernel CUDA time of forward + backward(sum(y)) of one backend,
from torch.profiler, for one or more configs. Needs a GPU.

    python benchmarks/kernel_breakdown.py lstm:12x64 lstm:6x128 [--backend cuda] [--iters 5]

B = 16, T = 1024, bf16 (as the bars); 3 warm-up iterations, then ITERS profiled ones; the table is per iteration."""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from fusedrnn import get_cell, rnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="CELL:NHxD, e.g. lstm:6x128")
    parser.add_argument("--backend", default="cuda")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    args = parser.parse_args(argv)
    for config in args.configs:
        cell, heads = config.split(":")
        num_heads, head_dim = map(int, heads.split("x"))
        spec = get_cell(cell)
        B, T = args.batch, args.steps
        x = torch.randn(B, T, spec.num_gates_x, num_heads, head_dim, device="cuda", dtype=torch.bfloat16,
                        requires_grad=True)
        R = (torch.randn(spec.num_gates_r, num_heads, head_dim, head_dim, device="cuda") / head_dim**0.5)
        R = R.to(torch.bfloat16).requires_grad_()
        b = torch.randn(spec.num_gates_b, num_heads, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)

        def iteration():
            y, _ = rnn(x, R, b, cell=cell, backend=args.backend)
            y.float().sum().backward()

        for _ in range(3):
            iteration()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.iters):
                iteration()
            torch.cuda.synchronize()
        rows = []
        for event in prof.key_averages():
            total = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
            if total > 0:
                rows.append((total / args.iters / 1000.0, event.count // args.iters, event.key))
        rows.sort(reverse=True)
        print(f"== {config} on {args.backend}, B = {B}, T = {T}, bf16: ms per iteration (forward + backward)")
        for ms, count, name in rows[:14]:
            print(f"{ms:9.3f}  x{count:<3d} {name[:100]}")
        print(f"{sum(r[0] for r in rows):9.3f}  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
