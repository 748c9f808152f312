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


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max(1, max |expected|): absolute for values of order one (h, gates),
    relative to the largest element for tensors that grow with T and B (dR, db, sLSTM's c and m)."""
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    return (actual.double() - expected.double()).abs().max().item() / scale if actual.numel() else 0.0


def norm_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖₂ / ‖expected‖₂ (normwise relative error)."""
    if not actual.numel():
        return 0.0
    return (actual.double() - expected.double()).norm().item() / max(expected.double().norm().item(), 1e-30)


def run_with_grads(fn, inputs, dy, dfinal):
    """y, final and the gradients of <y, dy> + <final, dfinal> with respect to every input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y, final = fn(*leaves)
    grads = torch.autograd.grad((y.float() * dy).sum() + (final.float() * dfinal).sum(), leaves)
    return y.detach(), final.detach(), grads
