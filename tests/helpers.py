"""Shared test inputs: random problems in the public layout."""

from __future__ import annotations

import torch

from fusedrnn import get_cell


def random_problem(cell, B, T, NH, D, dtype=torch.float64, device="cpu", with_state=True, r_scale=None):
    """x, R, b, state with the shapes ``cell`` expects; R scaled so the recurrence neither dies nor explodes."""
    spec = get_cell(cell)
    r_scale = r_scale if r_scale is not None else 1.0 / D**0.5
    x = torch.randn(B, T, spec.num_gates_x, NH, D, dtype=torch.float64)
    R = torch.randn(spec.num_gates_r, NH, D, D, dtype=torch.float64) * r_scale
    b = torch.randn(spec.num_gates_b, NH, D, dtype=torch.float64) * 0.5
    state = None
    if with_state:
        state = torch.randn(spec.num_states, B, NH, D, dtype=torch.float64)
        if spec.name == "slstm":
            state[2] = state[2].abs() + 1.0  # n >= 1 as after any step; m is any real
    out = [t.to(dtype=dtype, device=device) if t is not None else None for t in (x, R, b, state)]
    return tuple(out)
