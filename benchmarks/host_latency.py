"""Where a call's time goes outside the kernels: the host time of ``fusedrnn.rnn`` per call, and how much of it the
GPU waits for. For one shape (default LSTM 1 x 768, B = 16, T = 1024, bf16, backend auto), inference (fw) and
training (fwbw: forward, sum, backward):

- host_us: host time per call while the GPU runs behind (calls queued back to back, so no call waits for a kernel);
- event_ms: CUDA events around one call after a synchronisation, median of 20 (``fusedrnn.timing.median_ms``, what
  ``fusedrnn bench`` measures: the GPU idles while the host prepares the first kernel);
- queued_ms: the same calls queued back to back, total time / calls (the host's latency hidden);
- the functions with the most host time (cProfile, cumulative), with --profile;
- with --breakdown first: the host time of the pieces of an inference call (``breakdown``).

    python benchmarks/host_latency.py [--cell lstm] [--heads 1x768] [--profile] [--breakdown] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time

import torch

from fusedrnn import rnn
from fusedrnn.cli.bench import Shape, _callables, _inputs
from fusedrnn.timing import median_ms


def host_us(fn, calls: int) -> float:
    """Host time per call, the GPU kept busy (and behind) by the calls themselves."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - start
    torch.cuda.synchronize()
    return 1e6 * host / calls


def queued_ms(fn, calls: int) -> float:
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def profile(fn, calls: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def breakdown(cell: str, NH: int, D: int, B: int, reps: int = 200) -> dict[str, float]:
    """Host µs per call of the pieces of an inference call (T = 4, so that the GPU keeps up and no launch waits),
    median of ``reps``."""
    from fusedrnn import get_cell, initial_state
    from fusedrnn.backends import Call, select_backend
    from fusedrnn.backends.cuda import launch, planner

    device = torch.device("cuda", 0)
    spec = get_cell(cell)
    x, R, b = (t.detach() for t in _inputs(Shape(cell, NH, D, B, 4), torch.bfloat16, device))
    state = initial_state(cell, B, NH, D, dtype=x.dtype, device=device)
    call = Call(spec, B, 4, NH, D, x.dtype, device, False)
    loaded = launch._loaded("forward", cell, D, x.dtype, device, B, NH)
    y = torch.empty(B, 4, NH, D, dtype=x.dtype, device=device)
    final = torch.empty_like(state)
    args = (
        x.data_ptr(),
        R.data_ptr(),
        b.data_ptr(),
        state.data_ptr(),
        0,
        y.data_ptr(),
        final.data_ptr(),
        0,
        0,
        B,
        4,
        NH,
        0,
        loaded.variant.shape.smem,
    )
    pieces = {
        "rnn": lambda: rnn(x, R, b, cell=cell),
        "rnn_with_state": lambda: rnn(x, R, b, state, cell=cell),
        "initial_state": lambda: initial_state(cell, B, NH, D, dtype=x.dtype, device=device),
        "select_backend": lambda: select_backend("auto", call),
        "plan": lambda: planner.plan(call),
        "launch.forward": lambda: launch.forward(cell, x, R, b, state, None, False),
        "kernel_launch": lambda: loaded.launch((NH, -(-B // loaded.variant.shape.rows)), device, *args),
        "current_stream": lambda: torch.cuda.current_stream(device),
        "torch.empty": lambda: torch.empty(B, 4, NH, D, dtype=x.dtype, device=device),
    }
    found = {}
    with torch.no_grad():
        for name, fn in pieces.items():
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            torch.cuda.synchronize()
            found[name] = round(1e6 * statistics.median(times), 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--heads", default="1x768", help="NHxD")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="host µs of the pieces of an inference call")
    parser.add_argument("--out")
    args = parser.parse_args()
    NH, D = map(int, args.heads.split("x"))
    if args.breakdown:
        row = {
            "shape": f"{args.cell} {args.heads} B={args.batch} T=4",
            "host_us": breakdown(args.cell, NH, D, args.batch),
        }
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    shape = Shape(args.cell, NH, D, args.batch, args.steps)
    device = torch.device("cuda", 0)
    x, R, b = _inputs(shape, torch.bfloat16, device)
    calls = _callables(lambda: rnn(x, R, b, cell=args.cell, backend=args.backend)[0], (x, R, b))
    for mode, fn in calls.items():
        for _ in range(3):
            fn()
        row = {
            "shape": shape.label(),
            "mode": mode,
            "host_us": round(host_us(fn, 20), 1),
            "event_ms": round(median_ms(fn, 20, warmup=0), 3),
            "queued_ms": round(queued_ms(fn, 20), 3),
        }
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        if args.profile:
            print(profile(fn, 20, 30), flush=True)


if __name__ == "__main__":
    main()
