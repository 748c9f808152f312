"""Episode resets on the GPU: what ``resets=`` costs the fused backends, and fusedrnn against TorchRL's Triton GRU /
LSTM with resets (``torchrl.modules.tensordict_module._rnn_triton``, the kernels behind ``recurrent_backend=
"triton"``), bf16, in one process.

Rows (one JSON line each, an ``error`` field instead of times where a row fails; every row is tried):
  * ``rnn``: ``fusedrnn.rnn`` on each fused backend that supports the call, without resets and with them (about one
    step in 32 starts an episode), forward (no autograd) and forward + backward. The bar: with resets within 5 %.
  * ``layer``: one recurrent layer with its input projection, what TorchRL's functions compute: ``fusedrnn.nn.GRU`` /
    ``LSTM`` (backend auto) against ``gru_triton`` / ``lstm_triton`` (input, weights and compute in bf16; TorchRL's
    own default, float32 inputs and TF32 matmuls, as a second row), both with the same resets. The bar: fusedrnn
    >= 3x faster, fw and fwbw.
Shapes (the issue's): B = 16, T = 512, GRU hidden 512 as 8 heads x 64 for fusedrnn (TorchRL's GRU is dense: one
512 x 512 block per gate; the GRU row with fusedrnn's dense 1 x 512 is there too), LSTM 1 x 512; input size 512.
CUDA events, median of --reps after --warmup calls (the first calls compile / autotune and are not timed).

    python benchmarks/resets.py > resets.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch

import fusedrnn
import fusedrnn.nn as fnn
from fusedrnn.backends import Call, get_backend, select_backend
from fusedrnn.timing import median_ms

B, INPUT = 16, 512
SHAPES = [("gru", 8, 64), ("gru", 1, 512), ("lstm", 1, 512)]  # (cell, heads, head size)
RESET_RATE = 1 / 32  # RL episodes of a few dozen to hundreds of steps


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def timed(fn, args) -> float:
    return round(median_ms(fn, args.reps, args.warmup, args.device), 4)


def fwbw(run, leaves):
    """A callable: forward, then backward of the outputs' sum, gradients freed each call."""

    def step():
        for leaf in leaves:
            leaf.grad = None
        out = run()
        sum(o.float().sum() for o in out).backward()

    return step


def rnn_rows(args, resets: torch.Tensor) -> None:
    """fusedrnn.rnn per fused backend: without resets vs with them, fw and fwbw."""
    dtype, device, T = torch.bfloat16, torch.device(args.device), args.steps
    for cell, NH, D in SHAPES:
        spec = fusedrnn.get_cell(cell)
        x = torch.randn(B, T, spec.num_gates_x, NH, D, dtype=dtype, device=device)
        R = (torch.randn(spec.num_gates_r, NH, D, D, device=device) / D**0.5).to(dtype)
        b = torch.zeros(spec.num_gates_b, NH, D, dtype=dtype, device=device)
        for backend in ("cuda", "triton", "alternating"):
            base = {"kind": "rnn", "cell": cell, "heads": NH, "head_dim": D, "B": B, "T": T, "backend": backend}
            call = Call(spec, B, T, NH, D, dtype, device, True, has_resets=True)
            reason = get_backend(backend).supports(call)
            if reason is not None:
                emit(**base, error=f"not supported: {reason}")
                continue
            for mode in ("fw", "fwbw"):
                try:
                    times = {}
                    for label, flags in (("no_resets", None), ("resets", resets)):
                        if mode == "fw":
                            with torch.no_grad():
                                fn = lambda: fusedrnn.rnn(x, R, b, cell=cell, backend=backend, resets=flags)  # noqa: B023
                                times[label] = timed(fn, args)
                        else:
                            leaves = [t.detach().requires_grad_() for t in (x, R, b)]
                            run = lambda: fusedrnn.rnn(*leaves, cell=cell, backend=backend, resets=flags)  # noqa: B023
                            times[label] = timed(fwbw(run, leaves), args)
                    overhead = times["resets"] / times["no_resets"] - 1
                    emit(**base, mode=mode, ms=times, resets_overhead=round(overhead, 4), within_5pct=overhead <= 0.05)
                except Exception as error:  # noqa: BLE001 -- one row's failure must not stop the others
                    emit(**base, mode=mode, error=f"{type(error).__name__}: {error}"[:2000])


def _torchrl_call(cell: str, x, hidden, module, is_init, compute_dtype):
    """TorchRL's Triton function on ``module``'s (torch.nn.GRU / LSTM) weights: (out, ...)."""
    from torchrl.modules.tensordict_module import _rnn_triton

    w_ih, w_hh, b_ih, b_hh = module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0
    if cell == "gru":
        return _rnn_triton.gru_triton(x, hidden, w_ih, w_hh, b_ih, b_hh, is_init, compute_dtype)
    return _rnn_triton.lstm_triton(x, hidden, hidden, w_ih, w_hh, b_ih, b_hh, is_init, compute_dtype)


def layer_rows(args, resets: torch.Tensor) -> None:
    """One layer with its input projection, resets on: fusedrnn.nn against TorchRL's Triton functions."""
    device, T = torch.device(args.device), args.steps
    for cell, NH, D in SHAPES:
        H = NH * D
        base = {"kind": "layer", "cell": cell, "hidden": H, "B": B, "T": T, "input": INPUT}
        ours = (fnn.GRU if cell == "gru" else fnn.LSTM)(INPUT, H, batch_first=True, num_heads=NH, device=device)
        ours = ours.to(torch.bfloat16)
        x = torch.randn(B, T, INPUT, device=device, dtype=torch.bfloat16)
        try:  # the backend dispatch picks for the recurrence
            call = Call(ours.cell, B, T, NH, D, torch.bfloat16, device, True, has_resets=True)
            base["backend"] = select_backend(ours.backend, call).name
        except ValueError as error:
            base["backend"] = f"none: {error}"
        for mode in ("fw", "fwbw"):
            try:
                if mode == "fw":
                    with torch.no_grad():
                        ms = timed(lambda: ours(x, resets=resets), args)  # noqa: B023
                else:
                    xg = x.detach().requires_grad_()
                    leaves = [xg, *ours.parameters()]
                    ms = timed(fwbw(lambda: ours(xg, resets=resets)[:1], leaves), args)  # noqa: B023
                emit(**base, impl=f"fusedrnn {NH}x{D}", mode=mode, ms=ms)
            except Exception as error:  # noqa: BLE001
                emit(**base, impl=f"fusedrnn {NH}x{D}", mode=mode, error=f"{type(error).__name__}: {error}"[:2000])
        if NH != 1:  # TorchRL's recurrence is dense: once per hidden size
            continue
        torch_module = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(INPUT, H, batch_first=True, device=device)
        for label, dtype, compute in (
            ("torchrl triton bf16", torch.bfloat16, torch.bfloat16),
            ("torchrl triton fp32 inputs (its default)", torch.float32, torch.float32),
        ):
            module = torch_module.to(dtype)
            xt = x.to(dtype)
            hidden = torch.zeros(B, T, H, device=device, dtype=dtype)
            for mode in ("fw", "fwbw"):
                try:
                    if mode == "fw":
                        with torch.no_grad():
                            fn = lambda: _torchrl_call(cell, xt, hidden, module, resets, compute)  # noqa: B023
                            ms = timed(fn, args)
                    else:
                        xg = xt.detach().requires_grad_()
                        leaves = [xg, *module.parameters()]
                        run = lambda: _torchrl_call(cell, xg, hidden, module, resets, compute)[:1]  # noqa: B023
                        ms = timed(fwbw(run, leaves), args)
                    emit(**base, impl=label, mode=mode, ms=ms)
                except Exception as error:  # noqa: BLE001
                    emit(**base, impl=label, mode=mode, error=f"{type(error).__name__}: {error}"[:2000])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=512, help="T (512: the issue's)")
    parser.add_argument("--skip-torchrl", action="store_true")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script itself (tiny --steps)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    emit(
        kind="setup",
        device=torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        torch=torch.__version__,
        fusedrnn=fusedrnn.__version__,
        dtype="bfloat16",
        reset_rate=RESET_RATE,
    )
    generator = torch.Generator().manual_seed(0)
    resets = (torch.rand(B, args.steps, generator=generator) < RESET_RATE).to(args.device)
    for rows in (rnn_rows,) if args.skip_torchrl else (rnn_rows, layer_rows):
        try:
            rows(args, resets)
        except Exception:  # noqa: BLE001 -- e.g. torchrl missing: record, go on
            emit(kind=rows.__name__, error=traceback.format_exc(limit=3)[-2000:])
    emit(kind="done", seconds=round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
