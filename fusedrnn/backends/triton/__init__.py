"""Backend ``triton``: fused forward and backward kernels, one program per (head, batch tile).

Runs on CUDA GPUs of compute capability >= 8.0 and, under ``TRITON_INTERPRET=1``, on CPU tensors
(float32 / float16 only: the interpreter's bfloat16 ``tl.dot`` is wrong).
"""

from __future__ import annotations

from ..fused import fused_backend
from ..registry import Call, register_backend
from .common import DTYPES, call_reason
from .launch import MAX_HEAD_DIM, MAX_R_BYTES, backward, forward, r_bytes


def _supports(call: Call) -> str | None:
    if call.head_dim > MAX_HEAD_DIM:
        return f"head_dim {call.head_dim} > {MAX_HEAD_DIM} does not fit on chip; use 'alternating' or 'cuda'"
    if call.dtype in DTYPES and r_bytes(call.cell.num_gates_r, call.head_dim, call.dtype) > MAX_R_BYTES:
        return (
            f"R of {r_bytes(call.cell.num_gates_r, call.head_dim, call.dtype) // 1024} KB ({call.dtype}) does not fit "
            f"on chip (<= {MAX_R_BYTES // 1024} KB); use bfloat16/float16 or 'alternating'"
        )
    return call_reason(call)


TRITON = register_backend(
    fused_backend(
        "triton",
        20,
        _supports,
        forward,
        backward,
        "fused Triton kernels, R on chip, one program per (head, batch tile); D <= 128",
    )
)
