"""Reference backend: a plain PyTorch loop over time, differentiated by autograd.

The oracle for every other backend. Runs on any device. float64 and float32 inputs are computed in
their own dtype; bfloat16 and float16 inputs are computed in float32 and the outputs cast back.
"""

from __future__ import annotations

import torch

from ..cells import Cell
from . import Backend, Call, register_backend

_COMPUTE_DTYPE = {
    torch.float64: torch.float64,
    torch.float32: torch.float32,
    torch.bfloat16: torch.float32,
    torch.float16: torch.float32,
}


def reference_rnn(
    cell: Cell, x: torch.Tensor, R: torch.Tensor, b: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    compute = _COMPUTE_DTYPE[x.dtype]
    x_c, R_c, b_c = x.to(compute), R.to(compute), b.to(compute)
    states = tuple(state.to(compute).unbind(0))  # S x [B, NH, D]
    ys = []
    for x_t in x_c.unbind(1):  # x_t [B, Gx, NH, D]
        # r_t[b, g, n, i] = sum_j R[g, n, i, j] h[b, n, j]
        r_t = torch.einsum("gnij,bnj->bgni", R_c, states[0])
        states = cell.step(x_t, r_t, b_c, states)
        ys.append(states[0])
    y = torch.stack(ys, dim=1)  # [B, T, NH, D]
    final = torch.stack(states, dim=0)  # [S, B, NH, D]
    return y.to(x.dtype), final.to(x.dtype)


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
    )
)
