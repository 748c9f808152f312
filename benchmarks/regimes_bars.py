"""The bars of the regimes users run, measured in one process with cuDNN beside: one JSON line per number.

Sections (``--only`` picks some; all of them take under 4 minutes on an H100 with warm kernel caches):

- ``decode``: LSTM, B = 1, hidden 768, heads 1 x 768 and 12 x 64, bf16. Per token: ``module.step`` and
  ``module.decoder`` eagerly (CUDA events around --tokens consecutive steps, so host time counts), a decoder step
  replayed from a CUDA graph (one step per replay, and --graph-steps steps captured in one graph: the GPU time
  per step); cuDNN (torch.nn.LSTM on a one-step sequence) the same ways. Bars: eager <= 30 us, graph <= 10 us.
- ``large``: LSTM 1 x 768 and 12 x 64 at B = 256, T = 1024, fw and fwbw (backend auto), cuDNN bf16 / fp16.
  Bars: 1 x 768 fw <= 3.5 ms, fwbw <= 10 ms; 12 x 64 fw <= 1.0 ms, fwbw <= 3.5 ms.
- ``one``: LSTM 1 x 768, B = 1, T = 1024, fw; cuDNN beside. Bar: <= 1.3 ms.
- ``long``: LSTM 1 x 768, B = 16, T from 1,024 to 65,536, fwbw, the saving path and ``checkpoint=k`` (--ks):
  time, saved-activation bytes (what autograd holds after the forward: the tensors saved for backward, each
  storage once; inputs x, R, b shown apart), the call's peak memory beyond its inputs, and the least-squares
  slope of time in T. Bars (checkpointed, at T = 65,536): saved <= 8 GB, time <= 1.35 x the saving path's,
  time linear in T.

Each line: {"section", "name", "impl", value fields, "bar" (the limit), "meets" (bool or null), "floor_ms" where it
applies, "device", "commit"}; a failing measurement gives a line with "error" and the run goes on.

    python benchmarks/regimes_bars.py [--only decode large one long] [--ks 1024 4096] > bars.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import traceback

import torch

import fusedrnn.nn as fnn
from fusedrnn import checkpoint, rnn
from fusedrnn.backends import Call, select_backend
from fusedrnn.cells import get_cell
from fusedrnn.cli import floors
from fusedrnn.timing import median_ms

DTYPE = torch.bfloat16
DEVICE = torch.device("cuda")
GB = 1e9


def emit(**fields) -> None:
    fields.setdefault("device", torch.cuda.get_device_name(DEVICE))
    fields.setdefault("commit", COMMIT)
    print(json.dumps(fields), flush=True)


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


COMMIT = _commit()


def guarded(section: str, name: str):
    """Decorator: run the measurement, emit an error line instead of stopping the run."""

    def wrap(fn):
        def run(*args, **kwargs):
            try:
                fn(*args, **kwargs)
            except Exception as error:
                emit(section=section, name=name, error=f"{type(error).__name__}: {error}"[:400])
                traceback.print_exc()
            finally:
                torch.cuda.empty_cache()

        return run

    return wrap


def meets(value: float | None, bar: float) -> bool | None:
    return None if value is None else value <= bar


# --- decode -------------------------------------------------------------------------------------------------


def _per_token_us(step_many, tokens: int, reps: int) -> float:
    return median_ms(step_many, reps, warmup=2) * 1000 / tokens


def _graph_of(fn, calls: int) -> torch.cuda.CUDAGraph:
    """A CUDA graph of ``calls`` consecutive ``fn()``, warmed up on a side stream first."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph


def decode(args) -> None:
    H = 768
    x = torch.randn(1, H, device=DEVICE, dtype=DTYPE)
    cudnn = torch.nn.LSTM(H, H, device=DEVICE, dtype=DTYPE)
    cudnn.flatten_parameters()
    cudnn_state = tuple(torch.zeros(1, 1, H, device=DEVICE, dtype=DTYPE) for _ in range(2))

    def cudnn_step():
        _, new = cudnn(x.unsqueeze(0), cudnn_state)
        for target, value in zip(cudnn_state, new):
            target.copy_(value)

    steppers = {"cudnn": {"eager": cudnn_step, "graph": cudnn_step}}
    for heads in (1, 12):
        module = fnn.LSTM(H, H, num_heads=heads, device=DEVICE, dtype=DTYPE)
        decoder = module.decoder(1)
        state = tuple(torch.zeros(1, 1, H, device=DEVICE, dtype=DTYPE) for _ in range(2))

        def step(module=module, state=state):
            _, new = module.step(x, state)
            for target, value in zip(state, new):
                target.copy_(value)

        def decode_step(decoder=decoder):
            decoder(x)

        label = f"fusedrnn {heads}x{H // heads}"
        steppers[f"{label} step"] = {"eager": step, "graph": step}
        steppers[f"{label} decoder"] = {"eager": decode_step, "graph": decode_step}
    with torch.no_grad():
        for name, ways in steppers.items():
            _decode_one(name, ways, args)


def _decode_one(name: str, ways: dict, args) -> None:
    @guarded("decode", name)
    def measure():
        tokens = args.tokens
        eager = ways["eager"]

        def many():
            for _ in range(tokens):
                eager()

        us = _per_token_us(many, tokens, args.reps)
        emit(
            section="decode",
            name=name,
            impl=name,
            way="eager",
            us_per_token=round(us, 2),
            bar=30.0,
            meets=None if name == "cudnn" else meets(us, 30.0),
        )
        one = _graph_of(ways["graph"], 1)
        us = _per_token_us(lambda: [one.replay() for _ in range(tokens)], tokens, args.reps)
        emit(
            section="decode",
            name=name,
            impl=name,
            way="graph, one step per replay",
            us_per_token=round(us, 2),
            bar=10.0,
            meets=None if name == "cudnn" else meets(us, 10.0),
        )
        many_graph = _graph_of(ways["graph"], args.graph_steps)
        us = _per_token_us(many_graph.replay, args.graph_steps, args.reps)
        emit(
            section="decode",
            name=name,
            impl=name,
            way=f"graph, {args.graph_steps} steps per replay",
            us_per_token=round(us, 2),
            bar=10.0,
            meets=None if name == "cudnn" else meets(us, 10.0),
        )

    measure()


# --- large batches and one sequence: a fusedrnn call and cuDNN beside --------------------------------------------


def _fusedrnn_case(NH: int, D: int, B: int, T: int, mode: str):
    spec = get_cell("lstm")
    x = torch.randn(B, T, 4, NH, D, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwbw")
    R = (torch.randn(4, NH, D, D, device=DEVICE) / D**0.5).to(DTYPE).requires_grad_(mode == "fwbw")
    b = torch.zeros(4, NH, D, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwbw")
    backend = select_backend("auto", Call(spec, B, T, NH, D, DTYPE, DEVICE, mode == "fwbw")).name

    def fw():
        with torch.no_grad():
            rnn(x, R, b, cell="lstm")

    def fwbw():
        for t in (x, R, b):
            t.grad = None
        rnn(x, R, b, cell="lstm")[0].sum().backward()

    return backend, fw if mode == "fw" else fwbw


def _cudnn_case(H: int, B: int, T: int, mode: str, dtype: torch.dtype):
    module = torch.nn.LSTM(H, H, batch_first=True, device=DEVICE, dtype=dtype)
    module.flatten_parameters()
    inp = torch.randn(B, T, H, device=DEVICE, dtype=dtype, requires_grad=mode == "fwbw")

    def fw():
        with torch.no_grad():
            module(inp)

    def fwbw():
        inp.grad = None
        module.zero_grad(set_to_none=True)
        module(inp)[0].sum().backward()

    return fw if mode == "fw" else fwbw


def _timed(section: str, name: str, NH: int, D: int, B: int, T: int, mode: str, bar: float | None, args) -> None:
    @guarded(section, f"{name} fusedrnn")
    def ours():
        backend, fn = _fusedrnn_case(NH, D, B, T, mode)
        ms = median_ms(fn, args.reps, warmup=3)
        emit(
            section=section,
            name=name,
            impl=f"fusedrnn {backend}",
            heads=f"{NH}x{D}",
            batch=B,
            steps=T,
            mode=mode,
            ms=round(ms, 4),
            bar=bar,
            meets=None if bar is None else meets(ms, bar),
            **floors.floor("lstm", NH, D, B, T, mode, DTYPE, DEVICE),
        )

    ours()
    for dtype in (torch.bfloat16, torch.float16):

        @guarded(section, f"{name} cudnn {dtype}")
        def theirs(dtype=dtype):
            ms = median_ms(_cudnn_case(NH * D, B, T, mode, dtype), args.reps, warmup=3)
            emit(
                section=section,
                name=name,
                impl=f"cudnn {str(dtype).removeprefix('torch.')}",
                heads=f"1x{NH * D}",
                batch=B,
                steps=T,
                mode=mode,
                ms=round(ms, 4),
                bar=None,
                meets=None,
            )

        theirs()


LARGE_BARS = {(1, 768): {"fw": 3.5, "fwbw": 10.0}, (12, 64): {"fw": 1.0, "fwbw": 3.5}}


def large(args) -> None:
    for (NH, D), bars in LARGE_BARS.items():
        for mode, bar in bars.items():
            _timed("large", f"LSTM {NH}x{D} B=256 T=1024 {mode}", NH, D, 256, 1024, mode, bar, args)


def one(args) -> None:
    _timed("one", "LSTM 1x768 B=1 T=1024 fw", 1, 768, 1, 1024, "fw", 1.3, args)


# --- long sequences: the saving path against checkpointing ------------------------------------------------------


def _saved_bytes(fn_forward, inputs) -> tuple[int, int, torch.Tensor]:
    """Bytes of the tensors autograd saves in ``fn_forward()`` (each storage once), the inputs' among them, and
    ``fn_forward()``'s result."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn_forward()
    input_ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    total = sum(storages.values())
    return total, sum(n for ptr, n in storages.items() if ptr in input_ptrs), out


def _long_one(T: int, k: int | None, overlap: bool, inputs: tuple, results: dict, args) -> None:
    """One path (k None: saving; else checkpoint=k, the recomputation on a side stream with ``overlap``) at T steps:
    time, saved bytes, peak, ratio to saving."""
    x, R, b = inputs
    B, _, _, NH, D = x.shape
    name = "saving" if k is None else f"checkpoint={k}" + (" overlap" if overlap else "")

    def forward():
        checkpoint.OVERLAP_RECOMPUTATION = overlap
        return rnn(x, R, b, cell="lstm", checkpoint=k)[0]

    def fwbw():
        for t in inputs:
            t.grad = None
        forward().sum().backward()

    @guarded("long", f"{name} T={T}")
    def measure():
        saved, saved_inputs, y = _saved_bytes(forward, inputs)
        y.sum().backward()
        del y
        for t in inputs:
            t.grad = None
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwbw()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        reps = args.reps if T <= 16384 else max(3, args.reps // 3)
        ms = median_ms(fwbw, reps, warmup=1)
        results.setdefault(name, {})[T] = ms
        ratio = None if k is None or T not in results.get("saving", {}) else ms / results["saving"][T]
        at_bar = T == max(args.long_steps) and k is not None
        emit(
            section="long",
            name=name,
            impl=name,
            heads=f"{NH}x{D}",
            batch=B,
            steps=T,
            mode="fwbw",
            ms=round(ms, 3),
            us_per_step=round(ms * 1000 / T, 3),
            saved_gb=round(saved / GB, 3),
            saved_inputs_gb=round(saved_inputs / GB, 3),
            peak_gb=round(peak / GB, 3),
            ratio_to_saving=None if ratio is None else round(ratio, 3),
            bar="saved <= 8 GB, ratio <= 1.35" if at_bar else None,
            meets=(saved <= 8 * GB and ratio is not None and ratio <= 1.35) if at_bar else None,
            **floors.floor("lstm", NH, D, B, T, "fwbw", DTYPE, DEVICE),
        )

    measure()


def long(args) -> None:
    B, NH, D = 16, 1, 768
    results: dict[str, dict[int, float]] = {}
    for T in args.long_steps:
        x = torch.randn(B, T, 4, NH, D, device=DEVICE, dtype=DTYPE, requires_grad=True)
        R = (torch.randn(4, NH, D, D, device=DEVICE) / D**0.5).to(DTYPE).requires_grad_()
        b = torch.zeros(4, NH, D, device=DEVICE, dtype=DTYPE, requires_grad=True)
        for k in [None, *args.ks]:
            _long_one(T, k, False, (x, R, b), results, args)
            if k is not None and args.overlap:
                _long_one(T, k, True, (x, R, b), results, args)
        x = R = b = None
        torch.cuda.empty_cache()
    _slopes(results)


def _slopes(results: dict[str, dict[int, float]]) -> None:
    """Per path, the least-squares line ms = intercept + slope · T over the measured T, and its worst residual."""
    for name, by_T in results.items():
        if len(by_T) < 2:
            continue
        steps = sorted(by_T)
        n = len(steps)
        mean_t, mean_ms = sum(steps) / n, sum(by_T[t] for t in steps) / n
        slope = sum((t - mean_t) * (by_T[t] - mean_ms) for t in steps) / sum((t - mean_t) ** 2 for t in steps)
        intercept = mean_ms - slope * mean_t
        worst = max(abs(by_T[t] - (intercept + slope * t)) / by_T[t] for t in steps)
        emit(
            section="long",
            name="slope",
            impl=name,
            steps=steps,
            us_per_step=round(slope * 1000, 4),
            intercept_ms=round(intercept, 3),
            worst_relative_residual=round(worst, 3),
            bar="linear in T (every T within 10 % of the fit)",
            meets=worst <= 0.1,
        )


SECTIONS = {"decode": decode, "large": large, "one": one, "long": long}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200, help="decode: consecutive steps per timed call")
    parser.add_argument("--graph-steps", type=int, default=32, help="decode: steps captured in one graph")
    parser.add_argument("--ks", type=int, nargs="+", default=[1024], help="long: checkpoint segment lengths")
    parser.add_argument("--long-steps", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument(
        "--overlap", action="store_true", help="long: also each k with the recomputation on a side stream"
    )
    args = parser.parse_args(argv)
    for name in args.only:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
