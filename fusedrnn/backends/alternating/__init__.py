"""Backend ``alternating``: per step one batched GEMM over heads (cuBLAS) and one fused pointwise Triton kernel.

For heads too large to keep R on chip (the Triton backend's limit): R·h is a torch.bmm over heads, the cell is
one Triton kernel, and the whole T-step loop runs as one CUDA graph, captured once per shape and replayed
(see ``launch``). The forward of batches up to 64 rows runs both in one Triton kernel per step instead
(``forward_fused_step_kernel``: R·h for a block of hidden units of every gate, then the cell on them; one
launch per step instead of two). ``launch.forward_tile`` holds that rule; FUSEDRNN_ALTERNATING_FUSED=0
restores the GEMM + pointwise forward. Any head size and batch size; bfloat16 / float16 / float32. Runs on
CUDA GPUs and, under ``TRITON_INTERPRET=1``, on CPU tensors (float32 / float16; the loop then runs eagerly,
without graphs).

Precision: states and pointwise math in float32; GEMMs accumulate in float32. For bfloat16 / float16 the
GEMM operands (h, the slot gradients) are rounded to the input dtype, as in the Triton backend, and the GEMM
results are float32 where torch has ``torch.bmm(..., out_dtype=torch.float32)`` (CUDA, torch >= 2.8,
detected at run time), else rounded once to the input dtype (see ``launch``). float32 inputs follow
torch's TF32 setting. Deterministic (no atomics).
"""

from __future__ import annotations

import torch

from ..fused import fused_backend
from ..registry import Call, register_backend
from ..triton.common import call_reason
from .launch import backward, clear_cache, forward

__all__ = ["ALTERNATING", "clear_cache"]

# the pointwise kernels index the B·NH·D elements of one step (times up to 4 states) in int32
_MAX_STEP_ELEMENTS = (2**31 - 1) // 4


def _supports(call: Call) -> str | None:
    if call.batch * call.num_heads * call.head_dim > _MAX_STEP_ELEMENTS:
        return (
            f"B * NH * D = {call.batch * call.num_heads * call.head_dim} elements per step exceed "
            f"{_MAX_STEP_ELEMENTS} (int32 indexing); split the batch"
        )
    if call.num_heads * call.cell.num_gates_r > 65535:
        # the backward GEMM is one batched GEMM over (head, gate) pairs: keep the batch within a grid dimension
        return f"{call.num_heads} heads x {call.cell.num_gates_r} gates exceed 65535 batched GEMMs (a grid dimension)"
    # cuBLAS and the pointwise kernels run float16 / float32 on any CUDA GPU; bfloat16 needs sm_80
    return call_reason(call, sm80_dtypes=(torch.bfloat16,))


ALTERNATING = register_backend(
    fused_backend(
        "alternating",
        10,
        _supports,
        forward,
        backward,
        "per step a cuBLAS GEMM over heads and a fused Triton pointwise kernel, in a CUDA graph; any D",
    )
)
