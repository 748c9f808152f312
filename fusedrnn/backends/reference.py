"""Reference backend: a plain PyTorch loop over time, differentiated by autograd.

The oracle for every other backend. Runs on any device. float64 and float32 inputs are computed in
their own dtype; bfloat16 and float16 inputs are computed in float32 and the outputs cast back.
"""

from __future__ import annotations

import torch

from ..cells import Cell
from .registry import Backend, Call, register_backend

_COMPUTE_DTYPE = {
    torch.float64: torch.float64,
    torch.float32: torch.float32,
    torch.bfloat16: torch.float32,
    torch.float16: torch.float32,
}


def reference_rnn(
    cell: Cell,
    x: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
    lengths: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    *,
    operand_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """lengths [B] (integers) or None: row b runs lengths[b] steps; later steps keep its states, y = 0.
    resets [B, T] (bool) or None: where set (and the step runs), the states are the cell's initial values before
    that step; torch.where, so no gradient reaches the replaced states.
    operand_dtype: round h to this dtype where it enters R·h, as a 16-bit tensor-core kernel must (its states stay
    in the compute dtype): the accuracy studies' emulation of the fused kernels; None computes exactly."""
    compute = _COMPUTE_DTYPE[x.dtype]
    x_c, R_c, b_c = x.to(compute), R.to(compute), b.to(compute)
    states = tuple(state.to(compute).unbind(0))  # S x [B, NH, D]
    if resets is not None:
        fresh = [torch.full_like(states[0], value) for value in cell.initial]
        starts = resets if lengths is None else resets & (torch.arange(x.shape[1], device=x.device) < lengths[:, None])
    ys = []
    for t, x_t in enumerate(x_c.unbind(1)):  # x_t [B, Gx, NH, D]
        if resets is not None:
            start = starts[:, t].view(-1, 1, 1)  # [B, 1, 1]
            states = tuple(torch.where(start, f, s) for f, s in zip(fresh, states))
        h = states[0] if operand_dtype is None else states[0].to(operand_dtype).to(compute)
        # r_t[b, g, n, i] = sum_j R[g, n, i, j] h[b, n, j]
        r_t = torch.einsum("gnij,bnj->bgni", R_c, h)
        new = cell.step(x_t, r_t, b_c, states)
        if lengths is None:
            states = new
            ys.append(states[0])
        else:
            live = (lengths > t).view(-1, 1, 1)  # [B, 1, 1]
            states = tuple(torch.where(live, n, s) for n, s in zip(new, states))
            ys.append(torch.where(live, states[0], 0.0))
    y = torch.stack(ys, dim=1)  # [B, T, NH, D]
    final = torch.stack(states, dim=0)  # [S, B, NH, D]
    return y.to(x.dtype), final.to(x.dtype)


def reference_forward(cell: Cell, x, R, b, state, lengths, resets, save: bool):
    """The custom-op form (fusedrnn.ops): nothing is saved; ``reference_backward`` recomputes."""
    with torch.no_grad():
        y, final = reference_rnn(cell, x, R, b, state, lengths, resets)
    empty = x.new_empty(0, dtype=torch.float32)
    return y, final, empty, empty.clone()


def reference_backward(cell: Cell, inputs, lengths, resets, saved, dy, dfinal):
    """Gradients for x, R, b, state by recomputing the forward under torch.func.vjp (a custom op's kernel
    runs below autograd, so it cannot call torch.autograd.grad)."""
    vjp = torch.func.vjp(lambda x, R, b, state: reference_rnn(cell, x, R, b, state, lengths, resets), *inputs)[1]
    return vjp((dy, dfinal))


def _supports(call: Call) -> str | None:
    if call.dtype not in _COMPUTE_DTYPE:
        return f"dtype {call.dtype} is not supported (expected one of {list(_COMPUTE_DTYPE)})"
    return None


REFERENCE = register_backend(
    Backend(
        name="reference",
        priority=0,
        supports=_supports,
        run=reference_rnn,
        description="PyTorch loop over time, any device; the test oracle",
        op_forward=reference_forward,
        op_backward=reference_backward,
        backward_needs_inputs=True,
    )
)
