"""Backend ``triton``: fused forward and backward kernels, one program per (head, batch tile).

Runs on CUDA GPUs of compute capability >= 8.0 and, under ``TRITON_INTERPRET=1``, on CPU tensors
(float32 / float16 only: the interpreter's bfloat16 ``tl.dot`` is wrong).
"""

from __future__ import annotations

from .. import Backend, Call, register_backend
from ..fused import make_op_functions, make_run, saved_shapes
from .common import DTYPES, call_reason
from .launch import MAX_HEAD_DIM, MAX_R_BYTES, TritonRNN, backward, forward, r_bytes

_OP_FORWARD, _OP_BACKWARD = make_op_functions(forward, backward)


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
    Backend(
        name="triton",
        priority=20,
        supports=_supports,
        run=make_run(TritonRNN, forward),
        description="fused Triton kernels, R on chip, one program per (head, batch tile); D <= 128",
        auto_devices=frozenset({"cuda"}),  # the CPU interpreter is for tests, never a fast path
        op_forward=_OP_FORWARD,
        op_backward=_OP_BACKWARD,
        op_saved_shapes=saved_shapes,
    )
)
