"""Time fusedrnn backends against cuDNN (torch.nn.LSTM / GRU / RNN) in one process.

CUDA events around every repetition, warm-up excluded, median of --reps. "fwbw" is forward plus the
backward of sum(y) with respect to x, R, b (cuDNN: its input and weights). fusedrnn is timed from the
input pre-activations x (the input projection is one GEMM outside the recurrence); cuDNN runs its own
input projection inside, as a user of torch.nn would call it.

    python benchmarks/bench_backends.py --backends triton --cells lstm gru elman slstm --heads 12x64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

if "--cold-cache" in sys.argv:  # before triton is imported: first calls then include compilation
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="fusedrnn-bench-triton-")

import torch  # noqa: E402

import fusedrnn  # noqa: E402
from fusedrnn import get_cell  # noqa: E402
from fusedrnn.timing import median_ms  # noqa: E402


def time_cuda(fn, reps: int, warmup: int) -> float:
    """Median milliseconds of fn() over reps, timed with CUDA events after warmup calls."""
    return median_ms(fn, reps, warmup, "cuda")


def fusedrnn_case(cell, backend, B, T, NH, D, dtype):
    spec = get_cell(cell)
    x = torch.randn(B, T, spec.num_gates_x, NH, D, device="cuda", dtype=dtype, requires_grad=True)
    R = (torch.randn(spec.num_gates_r, NH, D, D, device="cuda") / D**0.5).to(dtype).requires_grad_()
    b = torch.randn(spec.num_gates_b, NH, D, device="cuda", dtype=dtype, requires_grad=True)

    def fw():
        with torch.no_grad():
            fusedrnn.rnn(x, R, b, cell=cell, backend=backend)

    def fwbw():
        x.grad = R.grad = b.grad = None
        y, _ = fusedrnn.rnn(x, R, b, cell=cell, backend=backend)
        y.sum().backward()

    return fw, fwbw


def cudnn_case(cell, B, T, H, dtype):
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[cell]
    m = module(H, H, batch_first=True, device="cuda", dtype=dtype)
    inp = torch.randn(B, T, H, device="cuda", dtype=dtype, requires_grad=True)

    def fw():
        with torch.no_grad():
            m(inp)

    def fwbw():
        m.zero_grad(set_to_none=True)
        inp.grad = None
        m(inp)[0].sum().backward()

    return fw, fwbw


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["triton"])
    parser.add_argument("--cells", nargs="+", default=["lstm"])
    parser.add_argument("--heads", nargs="+", default=["12x64"], help="NHxD pairs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--cold-cache", action="store_true", help="empty Triton kernel cache: first calls compile")
    parser.add_argument("--cudnn", action="store_true", help="also time torch.nn (cuDNN) at hidden NH*D, bf16 and fp16")
    parser.add_argument("--json", help="write the rows as JSON here")
    args = parser.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    B, T = args.batch, args.steps
    rows = []

    def record(impl, cell, heads, fw, fwbw, first_ms=None, row_dtype=dtype):
        row = {
            "impl": impl,
            "cell": cell,
            "heads": heads,
            "B": B,
            "T": T,
            "dtype": str(row_dtype).split(".")[-1],
            "fw_ms": time_cuda(fw, args.reps, args.warmup),
            "fwbw_ms": time_cuda(fwbw, args.reps, args.warmup),
        }
        if first_ms is not None:
            row["first_call_ms"] = first_ms
        rows.append(row)
        print(
            f"{impl:22s} {cell:6s} {heads:7s} fw {row['fw_ms']:8.3f} ms  fwbw {row['fwbw_ms']:8.3f} ms"
            + (f"  first call {first_ms / 1000:.2f} s" if first_ms is not None else ""),
            flush=True,
        )

    for cell in args.cells:
        for heads in args.heads:
            NH, D = (int(v) for v in heads.split("x"))
            for backend in args.backends:
                fw, fwbw = fusedrnn_case(cell, backend, B, T, NH, D, dtype)
                torch.cuda.synchronize()
                start = time.perf_counter()
                fwbw()  # the first call compiles forward and backward kernels
                torch.cuda.synchronize()
                record(f"fusedrnn {backend}", cell, heads, fw, fwbw, (time.perf_counter() - start) * 1000)
        if args.cudnn and cell in ("lstm", "gru", "elman"):
            H = max(int(h.split("x")[0]) * int(h.split("x")[1]) for h in args.heads)
            for cudnn_dtype in (torch.bfloat16, torch.float16):
                fw, fwbw = cudnn_case(cell, B, T, H, cudnn_dtype)
                record(f"cuDNN {str(cudnn_dtype).split('.')[-1]}", cell, f"1x{H}", fw, fwbw, row_dtype=cudnn_dtype)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
