"""What the Triton-based backends (``triton``, ``alternating``) share: the checks of a call that do not
depend on the kernel design. The autograd plumbing all fused backends share is in ``..fused``."""

from __future__ import annotations

import os

import torch

from ..registry import Call
from .cells import CELL_IDS

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def call_reason(call: Call, sm80_dtypes: tuple[torch.dtype, ...] = DTYPES) -> str | None:
    """Why a Triton backend cannot run ``call`` (cell, dtype, device), or None. ``sm80_dtypes``: the dtypes
    that need a GPU of compute capability >= 8.0."""
    if call.cell.name not in CELL_IDS:
        return f"cell {call.cell.name!r} has no Triton implementation"
    if call.dtype not in DTYPES:
        return f"dtype {call.dtype} is not supported (bfloat16, float16, float32; float64 runs on 'reference')"
    if call.device.type == "cuda":
        if call.dtype in sm80_dtypes and torch.cuda.get_device_capability(call.device) < (8, 0):
            return f"{call.dtype} needs a GPU of compute capability >= 8.0"
        return None
    if call.device.type == "cpu":
        if not interpreting():
            return "CPU tensors run only under TRITON_INTERPRET=1 (tests); use 'reference' on the CPU"
        if call.dtype == torch.bfloat16:
            return (
                "bfloat16 is not run under the Triton interpreter (its bfloat16 dot products are wrong); "
                "use float32 or float16"
            )
        return None
    return f"device {call.device} is neither CUDA nor CPU under TRITON_INTERPRET=1"
