"""fusedrnn.nn against torch.nn on the CPU, in one process: forward (no_grad) and training (forward +
backward) of the same model, 1 and 2 threads.

For each case (cell, B, T, H) it times torch.nn's module, fusedrnn.nn's with one head holding the same
weights, and fusedrnn.nn's with ``--heads`` heads of the same hidden size. The calls alternate (torch, one
head, heads, torch, ...) so that load from other processes falls on all three alike; each number is the
median over ``--reps`` calls after a warm-up. Ratios are torch / fusedrnn: >= 1 means fusedrnn is as fast or
faster; each is the median of the per-repetition ratios (calls made back to back, under the same load). Prints
a markdown table (the CPU table of BENCHMARKS.md).

    python benchmarks/cpu_vs_torch.py                 # the table's grid
    python benchmarks/cpu_vs_torch.py --quick         # a few cases, a smoke test
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

import fusedrnn.nn as fnn

MODULES = {"lstm": (torch.nn.LSTM, fnn.LSTM), "gru": (torch.nn.GRU, fnn.GRU), "rnn": (torch.nn.RNN, fnn.RNN)}
# (B, T, H): the corners and middle of B 1..64, T 128..1024, H 32..512
GRID = [(1, 128, 32), (1, 1024, 32), (64, 1024, 32), (16, 128, 128), (64, 128, 128), (1, 128, 512), (16, 128, 512)]
QUICK = [(1, 128, 32), (16, 128, 128)]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timer(fn: Callable[[], object], clock: Callable[[], float]) -> Callable[[], float]:
    def timed() -> float:
        start = clock()
        fn()
        return (clock() - start) * 1000

    return timed


def _calls(module: torch.nn.Module, x: torch.Tensor, train: bool) -> Callable[[], object]:
    if not train:

        def forward() -> object:
            with torch.no_grad():
                return module(x)

        return forward

    def step() -> object:
        out, _ = module(x)
        out.sum().backward()
        return out

    return step


def measure(
    cell: str, B: int, T: int, H: int, heads: int, train: bool, reps: int, clock: Callable[[], float]
) -> list[float]:
    """torch.nn, fusedrnn.nn (one head, torch's weights) and fusedrnn.nn (heads): their median ms, then the
    medians of torch / one head and torch / heads over the repetitions. A repetition times the three back to
    back, in an order that rotates, so a ratio compares calls made under the same load."""
    torch_cls, ours_cls = MODULES[cell]
    theirs = torch_cls(H, H, batch_first=True)
    ours = ours_cls(H, H, batch_first=True)
    ours.load_state_dict(theirs.state_dict())
    multi = ours_cls(H, H, batch_first=True, num_heads=heads)
    x = torch.randn(B, T, H)
    timers = [_timer(_calls(m, x, train), clock) for m in (theirs, ours, multi)]
    for timer in timers:  # warm-up
        timer()
    times: list[list[float]] = [[], [], []]
    for rep in range(reps):
        for k in range(3):
            which = (rep + k) % 3
            times[which].append(timers[which]())
    ratios = [[a / b for a, b in zip(times[0], times[k])] for k in (1, 2)]
    return [statistics.median(t) for t in times] + [statistics.median(r) for r in ratios]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cells", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--heads", type=int, default=4, help="heads of the multi-head column (divides every H)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="two small cases only")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: the process's CPU time (all threads), which time slices "
        "lost to other processes on a shared machine do not inflate",
    )
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, commit {commit}, "
        f"{args.clock} clock, median of {args.reps} calls (ms) and of their ratios"
    )
    print()
    print(
        f"| threads | cell | B | T | H | mode | torch.nn | fusedrnn 1 head | ratio | fusedrnn {args.heads} heads "
        "| ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for cell in args.cells:
            for B, T, H in QUICK if args.quick else GRID:
                for train in (False, True):
                    t_torch, t_one, t_heads, r_one, r_heads = measure(
                        cell, B, T, H, args.heads, train, args.reps, CLOCKS[args.clock]
                    )
                    print(
                        f"| {threads} | {cell} | {B} | {T} | {H} | {'training' if train else 'forward'} | "
                        f"{t_torch:.2f} | {t_one:.2f} | {r_one:.2f} | {t_heads:.2f} | {r_heads:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
