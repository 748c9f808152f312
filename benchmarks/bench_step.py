"""Per-token latency of step mode (B = 1, hidden 768, bf16 unless --dtype): fusedrnn.nn.LSTM.step against
cuDNN (torch.nn.LSTM on a one-step sequence), each called eagerly and replayed from a CUDA graph.

CUDA events around --tokens consecutive steps (each step's output state fed to the next), median of --reps
such runs after warm-up, divided by --tokens.

    python benchmarks/bench_step.py --heads 1 12
"""

from __future__ import annotations

import argparse

import torch

import fusedrnn.nn as fnn
from fusedrnn.timing import median_ms


def _graphed(step, x, state):
    """A CUDA graph of one step(x, state) -> (h, new state) that copies the new state into ``state``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step(x, state)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _, new = step(x, state)
        for target, value in zip(state, new):
            target.copy_(value)
    return graph


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    H = args.hidden
    x = torch.randn(1, H, device="cuda", dtype=dtype)
    state = (torch.zeros(1, 1, H, device="cuda", dtype=dtype), torch.zeros(1, 1, H, device="cuda", dtype=dtype))
    rows = []

    cudnn = torch.nn.LSTM(H, H, device="cuda", dtype=dtype)
    cudnn.flatten_parameters()  # one contiguous weight buffer, as cuDNN wants it

    def cudnn_step(x, state):
        out, new = cudnn(x.unsqueeze(0), state)
        return out[0], new

    steppers = [("cuDNN torch.nn.LSTM", cudnn_step)]
    for heads in args.heads:
        module = fnn.LSTM(H, H, num_heads=heads, device="cuda", dtype=dtype)
        steppers.append((f"fusedrnn LSTM {heads} x {H // heads}", module.step))

    with torch.no_grad():
        for name, step in steppers:

            def eager(step=step):
                s = state
                for _ in range(args.tokens):
                    _, s = step(x, s)

            eager_us = median_ms(eager, args.reps, warmup=2) * 1000 / args.tokens
            static = tuple(s.clone() for s in state)
            graph = _graphed(step, x, static)

            def replay(graph=graph):
                for _ in range(args.tokens):
                    graph.replay()

            graph_us = median_ms(replay, args.reps, warmup=2) * 1000 / args.tokens
            rows.append((name, eager_us, graph_us))
    print(f"per-token latency, B = 1, hidden {H}, {args.dtype}, {torch.cuda.get_device_name()}")
    print(f"{'implementation':28s} {'eager us':>10s} {'CUDA graph us':>14s}")
    for name, eager_us, graph_us in rows:
        print(f"{name:28s} {eager_us:10.1f} {graph_us:14.1f}")


if __name__ == "__main__":
    main()
