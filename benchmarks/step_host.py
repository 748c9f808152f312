"""Host time of one decode step of a fusedrnn.nn layer, on any device: the Python and dispatch cost around the
kernels, which bounds an eager decode loop at B = 1.

The kernels are replaced by a backend that returns its outputs without computing ("null": two allocations), so
what is timed is the layer's own host work: checks, the backend choice, weight views, the input projection's
launch, state handling. Three ways to step (hidden 768 by default, input size 8 so that the projection's GEMM is
negligible on a CPU):

- forward: ``module(x[None], hx)`` on a one-step sequence (what ``step`` did before the step plan);
- step: ``module.step(x, hx)`` under torch.no_grad (the step plan);
- decoder: ``decoder(x)``, the state kept in place.

    python benchmarks/step_host.py [--device cpu] [--heads 1 12] [--layers 1] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import fusedrnn.nn as fnn
from fusedrnn.backends.registry import Backend, register_backend


def _null_run(cell, x, R, b, state, lengths=None):
    B, T, _, NH, D = x.shape
    return x.new_empty(B, T, NH, D), torch.empty_like(state)


NULL = register_backend(Backend("null", -100, lambda call: None, _null_run, "no kernels (host-time benchmark)"))


def per_call_us(fn, calls: int, reps: int, sync) -> float:
    """Median over ``reps`` of the host time per call of ``calls`` consecutive calls."""
    fn()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    sync()
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--input-size", type=int, default=8)
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--backend", default="null", help="null (host only) or a real backend")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for heads in args.heads:
        module = fnn.LSTM(
            args.input_size, args.hidden, args.layers, num_heads=heads, backend=args.backend, device=device, dtype=dtype
        )
        x = torch.randn(1, args.input_size, device=device, dtype=dtype)
        hx = tuple(torch.zeros(args.layers, 1, args.hidden, device=device, dtype=dtype) for _ in range(2))
        decoder = module.decoder(1, hx)
        with torch.no_grad():
            timings = {
                "forward": per_call_us(lambda: module(x.unsqueeze(0), hx), args.calls, args.reps, sync),
                "step": per_call_us(lambda: module.step(x, hx), args.calls, args.reps, sync),
                "decoder": per_call_us(lambda: decoder(x), args.calls, args.reps, sync),
                # the input projection alone (every way runs it once per layer): a GEMM on the CPU, a launch on a GPU
                "projection": per_call_us(
                    lambda: torch.nn.functional.linear(x, module.weight_ih_l0, module.bias_ih_l0),
                    args.calls,
                    args.reps,
                    sync,
                ),
            }
        row = {"heads": heads, "head_dim": args.hidden // heads, "layers": args.layers, "backend": args.backend}
        row.update({"device": str(device), "dtype": args.dtype, "torch": torch.__version__})
        row.update({f"{name}_us": round(us, 2) for name, us in timings.items()})
        print(json.dumps(row))


if __name__ == "__main__":
    main()
