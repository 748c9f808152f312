"""Backend ``triton``: fused forward and backward kernels, one program per (head, batch tile).

Runs on CUDA GPUs of compute capability >= 8.0 and, under ``TRITON_INTERPRET=1``, on CPU tensors
(float32 / float16 only: the interpreter's bfloat16 ``tl.dot`` is wrong).
"""

from __future__ import annotations

import os

import torch

from ...cells import Cell
from .. import Backend, Call, register_backend
from .launch import MAX_HEAD_DIM, MAX_R_BYTES, TritonRNN, forward, r_bytes

_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _supports(call: Call) -> str | None:
    from .cells import CELL_IDS

    if call.cell.name not in CELL_IDS:
        return f"cell {call.cell.name!r} has no Triton implementation"
    if call.dtype not in _DTYPES:
        return f"dtype {call.dtype} is not supported (bfloat16, float16, float32; float64 runs on 'reference')"
    if call.head_dim > MAX_HEAD_DIM:
        return f"head_dim {call.head_dim} > {MAX_HEAD_DIM} does not fit on chip; use 'alternating' or 'cuda'"
    if r_bytes(call.cell.num_gates_r, call.head_dim, call.dtype) > MAX_R_BYTES:
        return (
            f"R of {r_bytes(call.cell.num_gates_r, call.head_dim, call.dtype) // 1024} KB ({call.dtype}) does not fit "
            f"on chip (<= {MAX_R_BYTES // 1024} KB); use bfloat16/float16 or 'alternating'"
        )
    if call.device.type == "cuda":
        if torch.cuda.get_device_capability(call.device) < (8, 0):
            return "needs a GPU of compute capability >= 8.0"
        return None
    if call.device.type == "cpu" and _interpreting():
        if call.dtype == torch.bfloat16:
            return "the Triton interpreter computes bfloat16 dot products wrongly; use float32 or float16"
        return None
    return f"device {call.device} is neither CUDA nor CPU under TRITON_INTERPRET=1"


def _run(cell: Cell, x, R, b, state):
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, R, b, state)):
        return TritonRNN.apply(cell.name, x, R, b, state)
    # inference: no autograd node, nothing saved for backward
    y, final, _, _ = forward(cell.name, *(t.contiguous() for t in (x, R, b, state)), save=False)
    return y, final


TRITON = register_backend(
    Backend(
        name="triton",
        priority=20,
        supports=_supports,
        run=_run,
        description="fused Triton kernels, R on chip, one program per (head, batch tile); D <= 128",
        auto_devices=frozenset({"cuda"}),  # the CPU interpreter is for tests, never a fast path
    )
)
