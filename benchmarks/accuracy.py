"""Errors of a backend against the float32 reference: forward, final state and every gradient.

Metrics as in the tests (tests/helpers.py): max_error = max|a − e| / max(1, max|e|), and the normwise
‖a − e‖ / ‖e‖. Inputs are rounded to the dtype first; the reference computes those rounded inputs in
float32.

    python benchmarks/accuracy.py --backend triton --heads 12x64 --batch 16 --steps 1024
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fusedrnn import rnn  # noqa: E402
from tests.helpers import max_error, norm_error, random_problem, run_with_grads  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="triton")
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "elman", "slstm"])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16", "float32"])
    parser.add_argument("--heads", default="12x64")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    args = parser.parse_args()
    NH, D = (int(v) for v in args.heads.split("x"))
    B, T = args.batch, args.steps
    names = ["y", "final", "dx", "dR", "db", "dstate"]
    print(f"{args.backend} vs reference (float32), B={B} T={T} NH={NH} D={D}; max_error / norm_error")
    print("| cell | dtype | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    torch.manual_seed(0)
    for cell in args.cells:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            x, R, b, state = random_problem(cell, B, T, NH, D, dtype=dtype, device="cuda")
            dy = torch.randn(B, T, NH, D, device="cuda")
            dfinal = torch.randn(state.shape, device="cuda")
            got = run_with_grads(lambda *a: rnn(*a, cell=cell, backend=args.backend), (x, R, b, state), dy, dfinal)
            ref = run_with_grads(
                lambda *a: rnn(*a, cell=cell, backend="reference"), [t.float() for t in (x, R, b, state)], dy, dfinal
            )
            pairs = [(got[0], ref[0]), (got[1], ref[1])] + list(zip(got[2], ref[2]))
            cells = [f"{max_error(a, e):.1e} / {norm_error(a, e):.1e}" for a, e in pairs]
            print(f"| {cell} | {dtype_name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
