"""Timing of GPU work the way the benchmarks report it (DESIGN.md §4)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], reps: int, warmup: int = 2, device: torch.device | str = "cuda") -> float:
    """Median milliseconds of ``fn()`` over ``reps`` calls after ``warmup`` calls: CUDA events around each
    call on a GPU, the wall clock (mean) on the CPU."""
    for _ in range(warmup):
        fn()
    if torch.device(device).type != "cuda":
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) * 1000 / reps
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)
