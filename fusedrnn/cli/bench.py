"""Benchmark: fusedrnn's backends against what a user would run instead (cuDNN, the PyTorch loop, flashrnn).

Every implementation runs in one process, on the same shapes:

    python -m fusedrnn bench                                   # B = 16, T = 1024, all cells and head splits
    python -m fusedrnn bench --cells lstm --heads 12x64 1x768 --batch 1 16 64 --steps 1024 --modes fwbw
    python -m fusedrnn bench --plot-from fusedrnn-bench/bench.jsonl   # tables and plot again, no measuring
    python -m fusedrnn bench --preset regimes --cells lstm --heads 1x768 --batch 256   # a part of a named sweep

Implementations ("impl" in the results):

* ``triton``, ``alternating``, ...: every registered fusedrnn GPU backend (``--backends`` restricts them),
  timed from the input pre-activations x [B, T, G, NH, D]: the input projection W·x is one large GEMM
  outside the recurrence and not part of the time. A backend that cannot run a shape is recorded as skipped,
  with the registry's reason.
* ``cudnn-bf16``, ``cudnn-fp16``: torch.nn.LSTM / GRU / RNN (tanh) with input size = hidden size = NH·D, as a
  torch.nn user calls them (cuDNN computes its input projection inside, so it does a GEMM more than fusedrnn).
  cuDNN has no heads: it is measured once per (cell, hidden, B, T, mode) and shown beside every head split of
  that hidden size. There is no cuDNN sLSTM.
* ``torch-loop``: the ``reference`` backend, a Python loop over time of PyTorch operations (autograd backward),
  what one writes without fused kernels. It is slow, so on a GPU it runs only where its estimated time per
  call is at most ``--loop-max-ms`` (default 30 ms: in the full sweep, the T = 256 forward rows); the
  estimate scales the time of a 16-step probe of the same shape to T steps. Elsewhere the row says
  "skipped: too slow".
* ``flashrnn-<backend>``: the published flashrnn package, with ``--with-flashrnn`` only (its fused CUDA
  backends compile with nvcc for 40-85 s per new shape). Not importable: no rows and a message; a failed
  build or call: the row is skipped with the error. flashrnn runs GRU only unfused and triton_fused only for
  LSTM and sLSTM; those pairs get no row.

Modes: ``fw`` is the forward pass under torch.no_grad (inference); ``fwbw`` is forward plus the backward of
sum(y) with respect to every input (x, R, b; cuDNN: its input and weights).

Timing: on a GPU, CUDA events around each call (fusedrnn.timing.median_ms), the median of ``reps`` calls.
Before them: the first call (timed alone and recorded as ``first_ms``: it includes kernel compilation,
cuDNN heuristics, CUDA-graph capture), a second call that sizes the run, and up to five more warm-up calls
for calls shorter than 20 ms. ``reps`` = clamp(``--target-ms`` / time of one call, ``--reps``,
``--max-reps``): at least 10 by default, more for short calls. On the CPU: wall clock per call, median.
Memory is freed between implementations and shapes. ``--compile-workers N`` first compiles the Triton
kernels of every shape in N parallel processes (into Triton's disk cache): a sweep of hundreds of shapes
then spends seconds instead of minutes compiling, and ``first_ms`` mostly excludes compilation (the run
record has ``compile_workers`` and ``compile_seconds``).

Output (``--out DIR``, default ``fusedrnn-bench``): each row is appended to ``bench.jsonl`` as soon as it is
measured; at the end (also after Ctrl-C or ``--time-budget``) ``bench.json``, ``bench.csv``, ``bench.md``
(markdown tables: one per cell and mode) and ``bench.png`` (matplotlib) cover every row of the log.
``--resume FILE`` continues the log FILE: rows already there (measured or skipped) are not measured again,
so runs cut short form one logical run. Without a GPU, only the PyTorch loop is timed, at tiny sizes.

JSON schema (``bench.json``, schema 1)::

    {"schema": 1,
     "runs": [{"started": ISO time, "finished": ISO time | null, "command": str, "device": str,
               "commit": str | null, "versions": {"python", "torch", "torch_cuda", "cudnn", "triton", ...},
               "units_left": int | null (rows not measured when the run stopped early),
               "compile_workers": int, "compile_seconds": float, ...}],
     "rows": [{"impl": str, "kind": "fusedrnn" | "cudnn" | "torch-loop" | "flashrnn",
               "cell": str, "num_heads": int | null, "head_dim": int | null (null: cuDNN, no heads),
               "hidden": int, "batch": int, "steps": int, "dtype": str (of this impl's inputs), "mode": "fw" | "fwbw",
               "status": "ok" | "skipped" | "error", "reason": str | null (why skipped / the error),
               "ms": float | null (median per call), "first_ms": float | null (first call, compilation included),
               "reps": int | null, "warmup": int | null (untimed calls before them, the first included),
               "estimate_ms": float | null (torch-loop: the probe's estimate),
               "peak_mb": float | null (--peak-memory: MiB allocated at the peak of one call beyond its inputs),
               "floor_ms", "floor_latency_ms", "floor_compute_ms": float | null, "floor_basis": str | null (--floors:
               the least time of the regime, fusedrnn/cli/floors.py), "device": str, "time": ISO time}]}

``bench.jsonl`` holds the same objects one per line, each with "record": "run" | "row" | "end" ("end" adds
"finished" and "units_left" to the run before it). ``bench.csv`` has the rows' fields as columns.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import rnn
from ..backends import Call, backend_names, get_backend
from ..cells import cell_names, get_cell
from ..timing import median_ms
from . import floors, report
from .args import Parser, at_least, non_negative, positive, positive_float, program
from .progress import progress

__all__ = ["Shape", "main", "measure", "plan", "SCHEMA"]

SCHEMA = 1
CELL_ORDER = ("lstm", "gru", "elman", "slstm")
GPU_DEFAULTS: dict[str, Any] = {
    "cells": list(CELL_ORDER),
    "heads": ["48x16", "12x64", "6x128", "3x256", "1x768"],
    "batch": [16],
    "steps": [1024],
}  # DESIGN.md §4: B = 16, T = 1024, hidden 768
# Presets: a named sweep; options given beside one narrow it (e.g. --preset regimes --cells lstm --batch 1).
PRESETS: dict[str, dict[str, Any]] = {
    # the regimes users run (DESIGN.md §4): decode-sized to large batches, T to 65,536 (at B <= 16), heads of 64
    # to one of 2048; cuDNN beside; the floor of each row and the peak memory of each call
    "regimes": {
        "cells": list(CELL_ORDER),
        "heads": ["12x64", "3x256", "1x768", "1x2048"],
        "batch": [1, 16, 64, 256],
        "steps": [256, 1024, 16384, 65536],
        "baselines": ["cudnn-bf16", "cudnn-fp16"],
        "long_steps": (16384, 16),  # from this T on, only B up to this
        "floors": True,
        "peak_memory": True,
    },
}
CPU_DEFAULTS: dict[str, Any] = {"cells": list(CELL_ORDER), "heads": ["4x8", "2x16"], "batch": [1, 8], "steps": [32]}
BASELINES = ("cudnn-bf16", "cudnn-fp16", "torch-loop")
FLASHRNN_BACKENDS = ("cuda_fused", "triton_fused", "cuda")
FLASHRNN_DEFAULT = ("cuda_fused", "triton_fused")
CUDNN_MODULES = {"lstm": "LSTM", "gru": "GRU", "elman": "RNN"}  # torch.nn classes; RNN's default is tanh
# The PyTorch loop takes ~100 us per step forward, ~300 us forward + backward on an H100 (100x the fused
# kernels): on a GPU it runs only where a call takes at most this long (a sweep's T = 256 forward rows).
LOOP_MAX_MS = 30.0
PROBE_STEPS = 16  # steps of the torch-loop probe that estimates its time per call
LONG_CALL_MS = 20.0  # calls at least this long get no warm-up beyond the first two calls
MAX_EXTRA_WARMUP = 5  # enough for clocks, caches and the allocator to settle before sub-ms calls are timed
COMPILE_TIMEOUT_S = 600.0  # a compile worker that takes longer is stopped; the run compiles what is missing
TIMING_NOTE = (
    "fusedrnn and flashrnn are timed from the input pre-activations x (the input projection W·x is "
    "outside the recurrence); cuDNN runs its own input projection inside. fw: forward without "
    "autograd; fwbw: forward + backward of sum(y) with respect to every input."
)


@dataclass(frozen=True)
class Shape:
    """One point of the sweep."""

    cell: str
    num_heads: int
    head_dim: int
    batch: int
    steps: int

    @property
    def hidden(self) -> int:
        return self.num_heads * self.head_dim

    def label(self) -> str:
        return f"{self.cell} {self.num_heads}x{self.head_dim} B={self.batch} T={self.steps}"


# --- implementations: each builds {mode: callable} for one shape ------------------------------------------


def _inputs(shape: Shape, dtype: torch.dtype, device: torch.device):
    """x, R, b of a shape, all requiring grad; R scaled so that the recurrence neither dies nor explodes."""
    spec = get_cell(shape.cell)
    B, T, NH, D = shape.batch, shape.steps, shape.num_heads, shape.head_dim
    x = torch.randn(B, T, spec.num_gates_x, NH, D, device=device, dtype=dtype, requires_grad=True)
    R = (torch.randn(spec.num_gates_r, NH, D, D, device=device) / D**0.5).to(dtype).requires_grad_()
    b = torch.randn(spec.num_gates_b, NH, D, device=device, dtype=dtype, requires_grad=True)
    return x, R, b


def _callables(forward: Callable[[], torch.Tensor], leaves: tuple[torch.Tensor, ...]) -> dict[str, Callable]:
    """fw: ``forward()`` without autograd; fwbw: ``forward().sum().backward()`` with fresh gradients."""

    def fw():
        with torch.no_grad():
            forward()

    def fwbw():
        for t in leaves:
            t.grad = None
        forward().sum().backward()

    return {"fw": fw, "fwbw": fwbw}


def fusedrnn_case(backend: str, shape: Shape, dtype: torch.dtype, device: torch.device) -> dict[str, Callable]:
    x, R, b = _inputs(shape, dtype, device)
    return _callables(lambda: rnn(x, R, b, cell=shape.cell, backend=backend)[0], (x, R, b))


def cudnn_case(shape: Shape, dtype: torch.dtype, device: torch.device) -> dict[str, Callable]:
    module_class = getattr(torch.nn, CUDNN_MODULES[shape.cell])
    module = module_class(shape.hidden, shape.hidden, batch_first=True, device=device, dtype=dtype)
    # built on the device, the weights are separate tensors: cuDNN would copy them into one buffer every call
    module.flatten_parameters()
    inp = torch.randn(shape.batch, shape.steps, shape.hidden, device=device, dtype=dtype, requires_grad=True)
    return _callables(lambda: module(inp)[0], (inp, *module.parameters()))


def flashrnn_case(backend: str, shape: Shape, dtype: torch.dtype, device: torch.device) -> dict[str, Callable]:
    import flashrnn

    x, R, b = _inputs(shape, dtype, device)
    name = str(dtype).removeprefix("torch.")
    # flashrnn returns every state at every step [S, B, T, NH, D]; y = h is state 0
    return _callables(
        lambda: flashrnn.flashrnn(x, R, b, function=shape.cell, backend=backend, dtype=name)[0][0], (x, R, b)
    )


def flashrnn_runs(backend: str, cell: str) -> bool:
    """flashrnn silently runs GRU on its unfused 'cuda' backend, and has triton_fused only for LSTM / sLSTM."""
    if backend == "cuda_fused":
        return cell != "gru"
    if backend == "triton_fused":
        return cell in ("lstm", "slstm")
    return True


@dataclass(frozen=True)
class Impl:
    name: str
    kind: str  # "fusedrnn" | "cudnn" | "torch-loop" | "flashrnn"
    dtype: torch.dtype  # of its inputs

    def applies(self, cell: str) -> bool:
        """Whether this implementation has the cell at all (no row otherwise)."""
        if self.kind == "cudnn":
            return cell in CUDNN_MODULES
        if self.kind == "flashrnn":
            return flashrnn_runs(self.name.removeprefix("flashrnn-"), cell)
        return True

    def key(self, shape: Shape, mode: str) -> tuple:
        """The identity of a row: cuDNN rows have no heads (one row per hidden size)."""
        heads = (None, None) if self.kind == "cudnn" else (shape.num_heads, shape.head_dim)
        return (self.name, shape.cell, *heads, shape.hidden, shape.batch, shape.steps, _dtype_name(self.dtype), mode)

    def case(self, shape: Shape, device: torch.device) -> dict[str, Callable]:
        if self.kind == "cudnn":
            return cudnn_case(shape, self.dtype, device)
        if self.kind == "flashrnn":
            return flashrnn_case(self.name.removeprefix("flashrnn-"), shape, self.dtype, device)
        backend = "reference" if self.kind == "torch-loop" else self.name
        return fusedrnn_case(backend, shape, self.dtype, device)

    def skip_reason(self, shape: Shape, mode: str, device: torch.device) -> str | None:
        """Why this implementation is not timed at this shape (before anything is allocated), or None."""
        if self.kind == "fusedrnn":
            call = Call(
                get_cell(shape.cell),
                shape.batch,
                shape.steps,
                shape.num_heads,
                shape.head_dim,
                self.dtype,
                device,
                mode == "fwbw",
            )
            return get_backend(self.name).supports(call)
        if self.kind == "cudnn" and device.type == "cuda" and not torch.backends.cudnn.is_available():
            return "cuDNN is not available in this torch build"
        return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def row_key(row: dict) -> tuple:
    return (
        row["impl"],
        row["cell"],
        row["num_heads"],
        row["head_dim"],
        row["hidden"],
        row["batch"],
        row["steps"],
        row["dtype"],
        row["mode"],
    )


# --- timing ------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall_ms(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1000


def _median_ms(fn: Callable[[], object], reps: int, warmup: int, device: torch.device) -> float:
    if device.type == "cuda":
        return median_ms(fn, reps, warmup, device)
    for _ in range(warmup):
        fn()
    return statistics.median(_wall_ms(fn, device) for _ in range(reps))


def measure(
    fn: Callable[[], object], device: torch.device, min_reps: int = 10, max_reps: int = 100, target_ms: float = 100.0
) -> dict[str, float | int]:
    """Time ``fn``: the first call alone (compilation included), then the median of adaptive repetitions.

    The second call sizes the run: ``target_ms`` of repetitions, at least ``min_reps`` and at most ``max_reps``;
    calls shorter than LONG_CALL_MS get up to MAX_EXTRA_WARMUP more warm-up calls (clocks, caches, allocator).
    """
    first_ms = _wall_ms(fn, device)
    call_ms = max(_wall_ms(fn, device), 1e-3)
    reps = max(min_reps, min(max_reps, math.ceil(target_ms / call_ms)))
    extra = 0 if call_ms >= LONG_CALL_MS else min(MAX_EXTRA_WARMUP, math.ceil(LONG_CALL_MS / call_ms))
    ms = _median_ms(fn, reps, extra, device)
    return {"ms": ms, "first_ms": first_ms, "reps": reps, "warmup": 2 + extra}


def peak_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """MiB that one more call of ``fn`` allocates at its peak beyond what was allocated before it (training: the
    saved activations, the gradients and the workspaces; the inputs not counted). None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)


def _floor_fields(impl: Impl, shape: Shape, mode: str, device: torch.device, args) -> dict:
    if not getattr(args, "floors", False) or device.type != "cuda":
        return {}
    # cuDNN has no heads: its rows get the floor of one dense head of the same hidden size
    NH, D = (1, shape.hidden) if impl.kind == "cudnn" else (shape.num_heads, shape.head_dim)
    return floors.floor(shape.cell, NH, D, shape.batch, shape.steps, mode, impl.dtype, device)


def loop_estimate_ms(shape: Shape, mode: str, dtype: torch.dtype, device: torch.device) -> float:
    """The torch-loop's time per call at ``shape``, scaled from a PROBE_STEPS-step run of the same shape."""
    steps = min(shape.steps, PROBE_STEPS)
    probe = Shape(shape.cell, shape.num_heads, shape.head_dim, shape.batch, steps)
    fn = fusedrnn_case("reference", probe, dtype, device)[mode]
    fn()  # warm: allocator, kernels' first launch
    return _wall_ms(fn, device) * shape.steps / steps


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _release_backend_caches(impl: Impl) -> None:
    """Backends that cache per-shape plans (the alternating backend's CUDA graphs) expose clear_cache()."""
    if impl.kind != "fusedrnn":
        return
    try:
        module = importlib.import_module(f"fusedrnn.backends.{impl.name}")
    except ImportError:
        return
    clear = getattr(module, "clear_cache", None)
    if callable(clear):
        clear()


# --- the sweep ---------------------------------------------------------------------------------------------


def plan(
    cells: list[str],
    heads: list[tuple[int, int]],
    batches: list[int],
    steps: list[int],
    long_steps: tuple[int, int] | None = None,
) -> Iterator[Shape]:
    """The sweep's shapes, sequence lengths outermost and then batch sizes, each in the order given: a run
    cut short by --time-budget has the first (T, B) points for every cell and head split (put the most
    wanted first, e.g. --steps 1024 256 4096), and the tables sort the rows anyway. ``long_steps`` (T0, B0):
    from T0 steps on only batches up to B0."""
    for T in steps:
        for B in batches:
            if long_steps is not None and T >= long_steps[0] and B > long_steps[1]:
                continue
            for cell in cells:
                for NH, D in heads:
                    yield Shape(cell, NH, D, B, T)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _row(impl: Impl, shape: Shape, mode: str, device: torch.device, **fields) -> dict:
    heads = (None, None) if impl.kind == "cudnn" else (shape.num_heads, shape.head_dim)
    row = {
        "impl": impl.name,
        "kind": impl.kind,
        "cell": shape.cell,
        "num_heads": heads[0],
        "head_dim": heads[1],
        "hidden": shape.hidden,
        "batch": shape.batch,
        "steps": shape.steps,
        "dtype": _dtype_name(impl.dtype),
        "mode": mode,
        "status": "ok",
        "reason": None,
        "ms": None,
        "first_ms": None,
        "reps": None,
        "warmup": None,
        "estimate_ms": None,
        "peak_mb": None,
        "floor_ms": None,
        "floor_latency_ms": None,
        "floor_compute_ms": None,
        "floor_basis": None,
        "device": str(device),
        "time": _now(),
    }
    row.update(fields)
    return row


def _error_text(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def run_impl(impl: Impl, shape: Shape, modes: list[str], device: torch.device, args) -> Iterator[dict]:
    """Measure one implementation at one shape in each of ``modes``; yields one row per mode."""
    todo = []
    for mode in modes:
        reason = impl.skip_reason(shape, mode, device)
        if reason is not None:
            yield _row(impl, shape, mode, device, status="skipped", reason=reason)
        else:
            todo.append(mode)
    if not todo:
        return
    if impl.kind == "torch-loop" and math.isfinite(args.loop_max_ms):
        runnable = []
        for mode in todo:
            try:
                estimate = loop_estimate_ms(shape, mode, impl.dtype, device)
            except Exception as error:  # out of memory even for the probe: recorded, the sweep goes on
                yield _row(impl, shape, mode, device, status="error", reason=_error_text(error))
                _free(device)
                continue
            if estimate > args.loop_max_ms:
                yield _row(
                    impl,
                    shape,
                    mode,
                    device,
                    status="skipped",
                    estimate_ms=round(estimate, 3),
                    reason=f"too slow: estimated time per call > {args.loop_max_ms:g} ms (--loop-max-ms)",
                )
            else:
                runnable.append((mode, estimate))
        todo = [mode for mode, _ in runnable]
        estimates = dict(runnable)
        _free(device)
    else:
        estimates = {}
    if not todo:
        return
    try:
        case = impl.case(shape, device)
    except Exception as error:  # any failure to set up is recorded, the sweep goes on
        status = "skipped" if impl.kind == "flashrnn" else "error"
        for mode in todo:
            yield _row(impl, shape, mode, device, status=status, reason=_error_text(error))
        _free(device)
        return
    try:
        for mode in todo:
            try:
                timing = measure(case[mode], device, args.reps, args.max_reps, args.target_ms)
                extra = {"peak_mb": peak_mb(case[mode], device)} if getattr(args, "peak_memory", False) else {}
                yield _row(
                    impl,
                    shape,
                    mode,
                    device,
                    ms=round(timing["ms"], 5),
                    first_ms=round(timing["first_ms"], 3),
                    reps=timing["reps"],
                    warmup=timing["warmup"],
                    estimate_ms=estimates.get(mode),
                    **extra,
                    **_floor_fields(impl, shape, mode, device, args),
                )
            except Exception as error:  # out of memory, a failed build: recorded, sweep goes on
                status = "skipped" if impl.kind == "flashrnn" else "error"
                yield _row(impl, shape, mode, device, status=status, reason=_error_text(error))
                _free(device)
    finally:
        del case
        _release_backend_caches(impl)
        _free(device)


def _representative_steps(steps: list[int]) -> list[int]:
    """One sequence length per class that Triton compiles separately (it specialises integer arguments on
    == 1 and on divisibility by 16): the smallest of each, so that compiling ahead costs little."""
    classes: dict[tuple[bool, bool], int] = {}
    for T in sorted(steps):
        classes.setdefault((T == 1, T % 16 == 0), T)
    return sorted(classes.values())


def compile_only(
    pairs: list[tuple[str, int, int]],
    batches: list[int],
    steps: list[int],
    modes: list[str],
    backends: list[str],
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """One call of each fusedrnn backend per (cell, heads) pair, batch size and mode, at short sequence lengths
    of the same compile classes: fills Triton's on-disk kernel cache for a later run (failures are ignored:
    the run itself reports them)."""
    for cell, NH, D in pairs:
        for B in batches:
            for T in _representative_steps(steps):
                shape = Shape(cell, NH, D, B, T)
                for name in backends:
                    impl = Impl(name, "fusedrnn", dtype)
                    runnable = [m for m in modes if impl.skip_reason(shape, m, device) is None]
                    case: dict[str, Callable] | None = None
                    try:
                        case = impl.case(shape, device) if runnable else {}
                        for mode in runnable:
                            case[mode]()
                    except Exception:  # the measuring run records every failure
                        pass
                    case = None
                    _release_backend_caches(impl)
    _sync(device)


def compile_ahead(units: list, args, device: torch.device) -> float:
    """Compile the Triton kernels that ``units`` need in ``args.compile_workers`` parallel processes (Triton
    compiles on the CPU; its disk cache is safe for concurrent writers), so that the measuring process only
    loads them. Returns the seconds it took."""
    pairs = sorted({(s.cell, s.num_heads, s.head_dim) for s, impl, _ in units if impl.kind == "fusedrnn"})
    backends = sorted({impl.name for _, impl, _ in units if impl.kind == "fusedrnn"})
    if not pairs or args.compile_workers < 1 or device.type != "cuda":
        return 0.0
    batches = sorted({s.batch for s, impl, _ in units if impl.kind == "fusedrnn"})
    steps = sorted({s.steps for s, impl, _ in units if impl.kind == "fusedrnn"})
    start = time.perf_counter()
    # the workers import this very fusedrnn, whichever the current directory or installation
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    workers = []
    for i in range(min(args.compile_workers, len(pairs))):
        group = [f"{cell}:{NH}x{D}" for cell, NH, D in pairs[i :: args.compile_workers]]
        command = [
            sys.executable,
            "-m",
            "fusedrnn",
            "bench",
            "--compile-only",
            *group,
            "--dtype",
            args.dtype,
            "--modes",
            *args.modes,
            "--backends",
            *backends,
            "--batch",
            *map(str, batches),
            "--steps",
            *map(str, steps),
        ]
        workers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env))
    for worker in workers:
        try:
            _, err = worker.communicate(timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, err = worker.communicate()
        if worker.returncode != 0:
            print(
                f"a compile worker failed (exit {worker.returncode}); the run compiles what it lacks itself: "
                + (err.strip().splitlines() or [""])[-1][:300]
            )
    seconds = time.perf_counter() - start
    print(
        f"compiled ahead by {len(workers)} processes in {seconds:.0f} s ({len(pairs)} (cell, heads) pairs); "
        "first_ms of fusedrnn rows therefore excludes most compilation"
    )
    return seconds


def _format_row(row: dict) -> str:
    heads = f"{row['num_heads']}x{row['head_dim']}" if row["num_heads"] else f"h{row['hidden']}"
    where = f"{row['cell']:5s} {heads:7s} B={row['batch']:<4d} T={row['steps']:<5d} {row['mode']:4s} {row['impl']:20s}"
    if row["status"] == "ok":
        return f"{where} {row['ms']:10.3f} ms  (first call {row['first_ms'] / 1000:.2f} s, median of {row['reps']})"
    return f"{where} {row['status']}: {row['reason']}"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _run_record(device: torch.device, args) -> dict:
    from .info import devices, versions

    found = devices()
    name = found[0]["name"] if device.type == "cuda" and found else "cpu"
    v = versions()
    keep = ("python", "fusedrnn", "torch", "torch_cuda", "cudnn", "triton")
    return {
        "record": "run",
        "schema": SCHEMA,
        "started": _now(),
        "finished": None,
        "command": "python -m fusedrnn bench " + shlex.join(args.argv),
        "device": name,
        "device_info": found[0] if found and device.type == "cuda" else None,
        "commit": args.commit or _git_commit(),
        "versions": {k: v[k] for k in keep},
        "note": TIMING_NOTE,
        "units_left": None,
    }


def _parse_heads(values: list[str]) -> list[tuple[int, int]]:
    heads = []
    for value in values:
        try:
            NH, D = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--heads: expected NHxD like 12x64, got {value!r}") from None
        if NH < 1 or D < 1:
            raise argparse.ArgumentTypeError(f"--heads: NH and D must be >= 1, got {value!r}")
        heads.append((NH, D))
    return heads


def _implementations(args, device: torch.device) -> tuple[list[Impl], list[str]]:
    """The implementations to time, and messages about those left out."""
    dtype = getattr(torch, args.dtype)
    notes = []
    if device.type != "cuda":
        notes.append(
            "no CUDA device: timing the PyTorch loop (reference backend) only, at tiny default sizes; "
            "fusedrnn's GPU backends, cuDNN and flashrnn need a GPU"
        )
        return [Impl("torch-loop", "torch-loop", dtype)], notes
    gpu_backends = [name for name in backend_names() if name != "reference"]
    chosen = args.backends if args.backends is not None else gpu_backends
    unknown = [name for name in chosen if name not in gpu_backends]
    if unknown:
        raise ValueError(
            f"--backends: unknown or non-GPU backend(s) {unknown}; registered GPU backends: "
            f"{gpu_backends} (the reference backend is the 'torch-loop' baseline)"
        )
    impls = [Impl(name, "fusedrnn", dtype) for name in gpu_backends if name in chosen]
    if args.with_flashrnn is not None:
        try:
            import flashrnn  # noqa: F401
        except Exception as error:  # an install that fails on import is "not importable" too
            notes.append(f"flashrnn is not importable ({_error_text(error)}): no flashrnn rows")
        else:
            for backend in args.with_flashrnn or FLASHRNN_DEFAULT:
                impls.append(Impl(f"flashrnn-{backend}", "flashrnn", dtype))
    for name in args.baselines:
        if name == "cudnn-bf16":
            impls.append(Impl(name, "cudnn", torch.bfloat16))
        elif name == "cudnn-fp16":
            impls.append(Impl(name, "cudnn", torch.float16))
        else:
            impls.append(Impl(name, "torch-loop", dtype))
    return impls, notes


def _write_outputs(rows_path: Path, out: Path, quiet: bool = False) -> None:
    runs, rows = report.load(rows_path)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        report.write_json(out / "bench.json", runs, rows),
        report.write_csv(out / "bench.csv", rows),
        report.write_markdown(out / "bench.md", runs, rows),
    ]
    png = report.write_plot(out / "bench.png", rows)
    if png is not None:
        written.append(png)
    if not quiet:
        print(report.text_tables(rows))
    print("wrote " + ", ".join(str(p) for p in written))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(
        prog=program("bench"),
        description=__doc__.splitlines()[0],
        epilog="Without a GPU only the PyTorch loop runs, at tiny sizes. The JSON "
        "schema and the timing rules are in this module's docstring "
        "(python -c 'import fusedrnn.cli.bench as b; help(b)').",
    )
    sweep = parser.add_argument_group(
        "sweep (defaults: GPU: all cells, 5 head splits of 768, B 16, T 1024; "
        "CPU: all cells, 4x8 and 2x16, B 1 and 8, T 32)"
    )
    sweep.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named sweep (regimes: B 1-256, T 256-65536 (T >= 16384 at B <= 16), heads 12x64 3x256 1x768 1x2048, "
        "every cell, fw and fwbw, cuDNN bf16 / fp16, floors and peak memory); --cells, --heads, --batch, --steps, "
        "--modes, --backends and --baselines narrow it",
    )
    sweep.add_argument("--cells", nargs="+", choices=cell_names())
    sweep.add_argument("--heads", nargs="+", metavar="NHxD", help="(heads, head size) pairs, e.g. 12x64 1x768")
    sweep.add_argument("--batch", nargs="+", type=positive, metavar="B", help="batch sizes")
    sweep.add_argument("--steps", nargs="+", type=positive, metavar="T", help="sequence lengths")
    sweep.add_argument(
        "--dtype",
        choices=["bfloat16", "float16", "float32"],
        help="dtype of fusedrnn, torch-loop and flashrnn inputs (default: GPU bfloat16, CPU float32)",
    )
    sweep.add_argument(
        "--modes",
        nargs="+",
        default=["fw", "fwbw"],
        choices=["fw", "fwbw"],
        help="fw: forward only; fwbw: forward + backward (default: both)",
    )
    impls = parser.add_argument_group("implementations")
    impls.add_argument(
        "--backends", nargs="+", metavar="NAME", help="fusedrnn GPU backends to time (default: every registered one)"
    )
    impls.add_argument(
        "--baselines",
        nargs="*",
        choices=BASELINES,
        help="baselines to time (default: all, a preset's own; none: '--baselines' alone)",
    )
    impls.add_argument(
        "--with-flashrnn",
        nargs="*",
        choices=FLASHRNN_BACKENDS,
        metavar="BACKEND",
        help="also time the flashrnn package (backends: "
        + ", ".join(FLASHRNN_BACKENDS)
        + "; default "
        + " ".join(FLASHRNN_DEFAULT)
        + "); nvcc builds take minutes",
    )
    impls.add_argument(
        "--loop-max-ms",
        type=non_negative,
        help="torch-loop runs only where its estimated time per call is at most this (default: "
        f"{LOOP_MAX_MS:g} on a GPU; no limit on the CPU, where it is all that runs)",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument("--reps", type=positive, default=10, help="minimum timed calls per row (default 10)")
    timing.add_argument("--max-reps", type=positive, default=100, help="maximum timed calls per row (default 100)")
    timing.add_argument(
        "--target-ms",
        type=positive_float,
        default=100.0,
        help="aim for this much timed work per row, within the limits above (default 100)",
    )
    timing.add_argument(
        "--time-budget",
        type=non_negative,
        metavar="SECONDS",
        help="stop cleanly after this many seconds (finish the current row, write the outputs)",
    )
    timing.add_argument(
        "--compile-workers",
        type=at_least(0),
        default=0,
        metavar="N",
        help="compile the Triton kernels of every shape first, in N parallel processes (GPU; "
        "default 0: each first call compiles its own); first_ms then excludes compilation",
    )
    timing.add_argument(
        "--peak-memory",
        action="store_true",
        help="record each row's peak memory (one more call, CUDA only; on with --preset regimes)",
    )
    timing.add_argument(
        "--floors",
        action="store_true",
        help="record each row's floor: latency (measured barrier per step) and compute (tensor-core peak); "
        "CUDA only, on with --preset regimes (fusedrnn/cli/floors.py)",
    )
    timing.add_argument("--compile-only", nargs="+", metavar="CELL:NHxD", help=argparse.SUPPRESS)
    output = parser.add_argument_group("output")
    output.add_argument("--out", help="output directory (default fusedrnn-bench; with --plot-from: FILE's directory)")
    output.add_argument(
        "--resume", metavar="FILE", help="continue the JSONL log FILE of an earlier run: skip the rows already in it"
    )
    output.add_argument(
        "--plot-from",
        metavar="FILE",
        help="measure nothing: tables, JSON, CSV, markdown and plot from FILE (.json or .jsonl)",
    )
    output.add_argument("--commit", help="commit recorded with the run (default: git rev-parse, if available)")
    output.add_argument("--quiet", action="store_true", help="no line per row and no final table on stdout")
    output.add_argument(
        "--dry-run", action="store_true", help="print how many rows each implementation would measure, and stop"
    )
    args = parser.parse_args(argv)
    args.argv = argv

    if args.plot_from:
        source = Path(args.plot_from)
        if not source.is_file():
            parser.error(f"--plot-from: no such file {source}")
        try:
            _write_outputs(source, Path(args.out) if args.out else source.parent, args.quiet)
        except (OSError, ValueError) as error:  # unreadable, or not UTF-8 (UnicodeDecodeError)
            parser.error(f"--plot-from {source}: {_error_text(error)}")
        return 0
    if args.max_reps < args.reps:
        parser.error(f"--max-reps ({args.max_reps}) must be >= --reps ({args.reps})")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = PRESETS.get(args.preset or "", {})
    defaults = {**(GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS), **preset}
    if args.baselines is None:
        args.baselines = list(preset.get("baselines", BASELINES))
    args.floors = args.floors or preset.get("floors", False)
    args.peak_memory = args.peak_memory or preset.get("peak_memory", False)
    cells = [c for c in CELL_ORDER if c in (args.cells or defaults["cells"])] + [
        c for c in (args.cells or []) if c not in CELL_ORDER
    ]
    try:
        heads = _parse_heads(args.heads or defaults["heads"])
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    batches, steps = args.batch or defaults["batch"], args.steps or defaults["steps"]
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if args.loop_max_ms is None:
        args.loop_max_ms = LOOP_MAX_MS if device.type == "cuda" else math.inf
    if args.compile_only:  # a worker of --compile-workers (internal)
        pairs = [(p.split(":")[0], *_parse_heads([p.split(":")[1]])[0]) for p in args.compile_only]
        backends = args.backends or [n for n in backend_names() if n != "reference"]
        if device.type == "cuda":
            compile_only(pairs, batches, steps, args.modes, backends, getattr(torch, args.dtype), device)
        return 0
    try:
        implementations, notes = _implementations(args, device)
    except ValueError as error:
        parser.error(str(error))
    for note in notes:
        print(note)
    print(TIMING_NOTE)

    out = Path(args.out or "fusedrnn-bench")
    log_path = Path(args.resume) if args.resume else out / "bench.jsonl"
    done = set()
    if args.resume and log_path.is_file():
        try:
            _, old_rows = report.load(log_path)
        except (OSError, ValueError) as error:
            parser.error(f"--resume {log_path}: {_error_text(error)}")
        done = {row_key(r) for r in old_rows if r["status"] in ("ok", "skipped")}  # errors are measured again
        print(f"resuming {log_path}: {len(done)} rows done")

    units: list[tuple[Shape, Impl, list[str]]] = []
    planned: set[tuple] = set()
    for shape in plan(cells, heads, batches, steps, preset.get("long_steps")):
        for impl in implementations:
            if not impl.applies(shape.cell):
                continue
            modes = [m for m in args.modes if impl.key(shape, m) not in done and impl.key(shape, m) not in planned]
            planned.update(impl.key(shape, m) for m in modes)
            if modes:
                units.append((shape, impl, modes))
    total = sum(len(m) for _, _, m in units)
    if args.dry_run:
        for impl in implementations:
            print(f"{impl.name:22s} {sum(len(m) for _, i, m in units if i is impl):5d} rows")
        print(f"{total} rows to measure ({len(done)} already done)")
        return 0

    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    compile_seconds = compile_ahead(units, args, device)
    run = _run_record(device, args)
    run.update(compile_workers=args.compile_workers, compile_seconds=round(compile_seconds, 1))
    with open(log_path, "a" if args.resume else "w") as log:
        log.write(json.dumps(run) + "\n")
        log.flush()
        bar = progress(total, "bench")
        left = total
        try:
            for shape, impl, modes in units:
                if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
                    print(
                        f"time budget of {args.time_budget:g} s spent: {left} rows not measured; continue with "
                        f"--resume {log_path}"
                    )
                    break
                bar.set_postfix_str(f"{shape.label()} {impl.name}")
                for row in run_impl(impl, shape, modes, device, args):
                    log.write(json.dumps({"record": "row", **row}) + "\n")
                    log.flush()
                    left -= 1
                    if not args.quiet:
                        bar.write(_format_row(row))
                    bar.update()
        except KeyboardInterrupt:
            print(f"interrupted: {left} rows not measured; continue with --resume {log_path}")
        finally:
            bar.close()
            log.write(
                json.dumps(
                    {
                        "record": "end",
                        "finished": _now(),
                        "units_left": left,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                + "\n"
            )
    print(f"{total - left} rows in {time.perf_counter() - start:.0f} s; log: {log_path}")
    _write_outputs(log_path, out, args.quiet)
    return 0
