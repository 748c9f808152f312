"""The measured error of correct fused kernels against the reference, the basis of the test suite's tolerances.

Fuzzes problems as the GPU tests draw them (tests/helpers.py: random cell, B, T, heads, head size, initial state or
none, lengths or none), runs each fused backend in each dtype, and records the error the tests compute
(``max_error`` against the reference on the same rounded inputs in float32) for y, the final state and every
gradient, and the same against float64 math. ``--summary`` prints, per dtype and quantity, the median, the 99th
and 99.9th percentiles and the maximum over the cases, beside today's tolerance (docs/testing.md holds the table
and the bounds taken from it).

    python benchmarks/error_distribution.py --out errors.jsonl --cases 300
    python benchmarks/error_distribution.py --summary errors.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fusedrnn import rnn  # noqa: E402
from tests.helpers import (  # noqa: E402
    GRAD_NAMES,
    TOL,
    max_error,
    problem_with_grads,
    reference_with_grads,
    run_with_grads,
)

QUANTITIES = ["y", "final", *GRAD_NAMES]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def draw(rng: random.Random) -> dict:
    """One problem's shape, as the GPU tests' shapes range (short and long T, one to many rows)."""
    B = rng.choice([1, 2, 3, 5, 8, 16, 64])
    T = rng.choice([1, 2, 7, 16, 64, 256, 1024])
    return {
        "cell": rng.choice(["lstm", "gru", "elman", "slstm"]),
        "B": B,
        "T": T,
        "NH": rng.choice([1, 2, 4]),
        "D": rng.choice([16, 32, 64]),
        "with_state": rng.random() < 0.5,
        "lengths": [rng.randint(0, T) for _ in range(B)] if rng.random() < 0.3 else None,
    }


def errors(case: dict, backend: str, dtype: torch.dtype, device: str) -> dict:
    inputs, dy, dfinal = problem_with_grads(
        case["cell"], case["B"], case["T"], case["NH"], case["D"], dtype, device, case["with_state"]
    )
    lengths = torch.tensor(case["lengths"]) if case["lengths"] is not None else None
    cell = case["cell"]
    got = run_with_grads(lambda *a: rnn(*a, cell=cell, backend=backend, lengths=lengths), inputs, dy, dfinal)
    ref = reference_with_grads(inputs, cell, dy, dfinal, lengths)
    f64 = run_with_grads(
        lambda *a: rnn(*a, cell=cell, backend="reference", lengths=lengths),
        [t.double() for t in inputs],
        dy.double(),
        dfinal.double(),
    )
    row = {}
    for name, a, r, e in zip(
        QUANTITIES, [got[0], got[1], *got[2]], [ref[0], ref[1], *ref[2]], [f64[0], f64[1], *f64[2]]
    ):
        row[name] = max_error(a, r)
        row[name + "_f64"] = max_error(a, e)
        row[name + "_ref_f64"] = max_error(r, e)
    return row


def summary(rows: list[dict]) -> str:
    lines = [
        "| dtype | quantity | cases | median | p99 | p99.9 | max | tolerance today |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dname, dtype in DTYPES.items():
        chosen = [r for r in rows if r.get("dtype") == dname and r["backend"] != "reference" and "error" not in r]
        for q in QUANTITIES:
            values = sorted(r[q] for r in chosen)
            if not values:
                continue

            def pct(p: float, values: list[float] = values) -> float:
                return values[min(len(values) - 1, int(p * len(values)))]

            tol = TOL[dtype].get(q, TOL[dtype]["fw" if q in ("y", "final") else "bw"])
            lines.append(
                f"| {dname} | {q} | {len(values)} | {pct(0.5):.2e} | {pct(0.99):.2e} | {pct(0.999):.2e} | "
                f"{values[-1]:.2e} | {tol:.1e} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON lines, one per (case, backend, dtype)")
    parser.add_argument("--summary", metavar="JSONL", help="print the distribution of a run's rows and exit")
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--backends", default="cuda,triton,alternating")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=float("inf"), help="stop drawing cases after this long")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.summary:
        with open(args.summary) as f:
            print(summary([json.loads(line) for line in f]))
        return 0
    if not args.out:
        parser.error("--out: expected a file to write the rows to")
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = random.Random(args.seed)
    start = time.perf_counter()
    with open(args.out, "a") as out:
        for index in range(args.cases):
            if time.perf_counter() - start > args.seconds:
                break
            case = draw(rng)
            for backend in args.backends.split(","):
                for dname in args.dtypes.split(","):
                    torch.manual_seed(args.seed * 100_003 + index)
                    row = {"case": index, **case, "backend": backend, "dtype": dname}
                    try:
                        row.update(errors(case, backend, DTYPES[dname], args.device))
                    except Exception as error:  # noqa: BLE001 -- a refused or failing case is recorded, the run goes on
                        row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
                    out.write(json.dumps(row) + "\n")
                    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
