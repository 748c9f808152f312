"""What the Triton-based backends (``triton``, ``alternating``) share: the checks of a call that do not
depend on the kernel design, and the dispatch between training (autograd) and inference."""

from __future__ import annotations

import os

import torch

from ...cells import Cell
from .. import Call
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


def saved_shapes(cell: Cell, B: int, T: int, NH: int, D: int) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """What the fused backends save for backward (both use these layouts): the float32 pre-activation slots
    [T, B, Gb, NH, D] and the states before every step [S, NH, T + 1, B, D]."""
    return [((T, B, cell.num_gates_b, NH, D), torch.float32), ((cell.num_states, NH, T + 1, B, D), torch.float32)]


def make_run(function: type[torch.autograd.Function], forward):
    """A backend's run: the autograd Function when a gradient is needed, else ``forward`` without saving."""

    def run(cell: Cell, x, R, b, state, lengths=None):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, R, b, state)):
            return function.apply(cell.name, x, R, b, state, lengths)
        y, final, _, _ = forward(cell.name, *(t.contiguous() for t in (x, R, b, state)), lengths, save=False)
        return y, final

    return run


def make_function(name: str, forward, backward) -> type[torch.autograd.Function]:
    """The autograd Function of a backend whose ``forward(cell, x, R, b, state, lengths, save)`` returns
    (y, final, pre, states) and whose ``backward(cell, R, pre, states, lengths, dy, dfinal)`` returns
    (dx, dR, db, dstate0): it saves R, pre, states and lengths only, and restores nothing else."""

    def fw(ctx, cell_name, x, R, b, state, lengths):
        x, R, b, state = (t.contiguous() for t in (x, R, b, state))
        save = any(ctx.needs_input_grad[1:5])
        y, final, pre, states = forward(cell_name, x, R, b, state, lengths, save)
        if save:
            ctx.save_for_backward(R, pre, states, lengths)
        ctx.cell_name = cell_name
        ctx.dtype = x.dtype
        return y, final

    def bw(ctx, dy, dfinal):
        R, pre, states, lengths = ctx.saved_tensors
        dx, dR, db, dstate0 = fused_backward(backward, ctx.cell_name, ctx.dtype, R, pre, states, lengths, dy, dfinal)
        needs = ctx.needs_input_grad
        return (None, dx if needs[1] else None, dR if needs[2] else None, db if needs[3] else None,
                dstate0 if needs[4] else None, None)

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(fw), "backward": staticmethod(bw)})


def fused_backward(backward, cell_name: str, dtype: torch.dtype, R, pre, states, lengths, dy, dfinal):
    """``backward`` with missing output gradients as zeros, gradients in ``dtype``."""
    S, NH, T1, B, D = states.shape  # states [S, NH, T + 1, B, D]
    if dy is None:
        dy = torch.zeros(B, T1 - 1, NH, D, dtype=dtype, device=R.device)
    if dfinal is None:
        dfinal = torch.zeros(S, B, NH, D, dtype=dtype, device=R.device)
    dx, dR, db, dstate0 = backward(
        cell_name, R, pre, states, lengths, dy.to(dtype).contiguous(), dfinal.to(dtype).contiguous()
    )
    return dx, dR, db, dstate0.to(dtype)


def make_op_functions(forward, backward):
    """A fused backend's ``op_forward`` and ``op_backward`` (see ``Backend``) from its launch functions."""

    def op_forward(cell: Cell, x, R, b, state, lengths, save: bool):
        y, final, pre, states = forward(cell.name, *(t.contiguous() for t in (x, R, b, state)), lengths, save)
        if not save:  # custom-op outputs are distinct tensors
            pre, states = x.new_empty(0, dtype=torch.float32), x.new_empty(0, dtype=torch.float32)
        return y, final, pre, states

    def op_backward(cell: Cell, inputs, lengths, saved, dy, dfinal):
        R = inputs[1].contiguous()
        return fused_backward(backward, cell.name, R.dtype, R, *saved, lengths, dy, dfinal)

    return op_forward, op_backward
