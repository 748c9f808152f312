"""Shared test inputs: random problems in the public layout."""

from __future__ import annotations

import torch

from fusedrnn import get_cell, rnn


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


GRAD_NAMES = ["dx", "dR", "db", "dstate"]

# Tolerances on max_error, per dtype of the inputs, for a fused backend against the reference computing the same
# rounded inputs in float32. Each bound is about 3x the largest error measured for correct kernels (cuda, triton,
# alternating on the H100, fuzzed shapes: docs/testing.md has the distribution and the command), and below the
# smallest injected defect (tests/test_injected_defects.py). 16-bit: the outputs' own rounding (2^-12 / 2^-9 of
# values up to 1) plus h rounded as an MMA operand, propagated; float32: summation order only (no TF32).
TOL = {
    torch.float32: {"fw": 1e-5, "bw": 3e-5},
    torch.float16: {"fw": 2.5e-3, "bw": 2.5e-3},
    torch.bfloat16: {"fw": 2e-2, "bw": 2e-2},
}
# sLSTM's (c, n, m) is one representative of the cell's state: (c·e^-δ, n·e^-δ, m + δ) gives the same h at every
# later step. The stabiliser m' = max(ĩ, log σ(f̃) + m) picks the representative, and where its two arguments are
# within rounding of each other two correct implementations pick differently. y and the final h do not depend on
# the pick, so their gradients are well-defined and compared element-wise at the ordinary bounds; gradients fed in
# through the final c, n, m do depend on it (an O(1) jump at the branch; seen on the H100: bf16 dx max_error
# 0.15-0.5 with y within 2e-3), so the 16-bit comparisons feed none in there and test_slstm_branch.py tests that
# branch on its own (docs/cells.md states the contract).
SLSTM_REPRESENTATIVE_STATES = slice(1, 4)  # c, n, m
# (B, T) of the fused backends' GPU tests against the reference: B in {1, 3, 16, 64}, T in {1, 7, 1024}
FUSED_GPU_SHAPES = [(1, 1), (3, 7), (16, 1024), (64, 7), (1, 1024)]


def problem_with_grads(cell, B, T, NH, D, dtype, device, with_state=True):
    """(x, R, b, state) — state explicit even when with_state is False (then zeros) — and random
    output gradients dy, dfinal (float32)."""
    x, R, b, state = random_problem(cell, B, T, NH, D, dtype=dtype, device=device, with_state=with_state)
    if state is None:
        state = torch.zeros(get_cell(cell).num_states, B, NH, D, dtype=dtype, device=device)
    dy = torch.randn(B, T, NH, D, device=device)
    dfinal = torch.randn(state.shape, device=device)
    if cell == "slstm" and dtype in (torch.float16, torch.bfloat16):
        dfinal[SLSTM_REPRESENTATIVE_STATES] = 0.0  # see SLSTM_REPRESENTATIVE_STATES
    return (x, R, b, state), dy, dfinal


def reference_with_grads(inputs, cell, dy, dfinal, lengths=None):
    """The reference backend on the inputs cast to float32 (the 16-bit values, computed exactly)."""
    ref_inputs = [t.float() for t in inputs]
    return run_with_grads(lambda *a: rnn(*a, cell=cell, backend="reference", lengths=lengths), ref_inputs, dy, dfinal)


def assert_matches_reference(cell, dtype, got, ref):
    """y, final state and every gradient within TOL (max_error)."""
    (y, final, grads), (y_ref, final_ref, grads_ref) = got, ref
    tol = TOL[dtype]
    assert y.dtype == dtype and final.dtype == dtype
    errors = {"y": max_error(y, y_ref), "final": max_error(final, final_ref)}
    limits = {"y": tol["fw"], "final": tol["fw"]}
    for name, grad, grad_ref in zip(GRAD_NAMES, grads, grads_ref):
        assert grad.dtype == dtype, name
        errors[name] = max_error(grad, grad_ref)
        limits[name] = tol["bw"]
    bad = {n: e for n, e in errors.items() if not e <= limits[n]}  # "not <=" also catches NaN
    assert not bad, f"errors over tolerance {limits}: {bad} (all: {errors})"


def check_backend(backend, cell, B, T, NH, D, dtype, device, with_state=True, lengths=None):
    """Run ``backend`` and the reference on one fresh random problem and compare everything.
    ``lengths``: per-row step counts (a list), passed to both."""
    inputs, dy, dfinal = problem_with_grads(cell, B, T, NH, D, dtype, device, with_state)
    if lengths is not None:
        lengths = torch.tensor(lengths)
    got = run_with_grads(lambda *a: rnn(*a, cell=cell, backend=backend, lengths=lengths), inputs, dy, dfinal)
    ref = reference_with_grads(inputs, cell, dy, dfinal, lengths)
    assert_matches_reference(cell, dtype, got, ref)
    if lengths is not None:  # rows past their length: y exactly zero
        y = got[0]
        for row, length in enumerate(lengths.tolist()):
            assert (y[row, length:] == 0).all(), f"y of row {row} after its length {length} is not zero"


def _test_extra_installed(missing: str) -> bool:
    """Whether fusedrnn is installed with its [test] extra: every distribution of that extra but ``missing`` is
    present (CI installs the extra; a developer running the tests without it has some of them missing)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    try:
        requirements = metadata.requires("fusedrnn") or []
    except metadata.PackageNotFoundError:
        return False
    names = []
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": "test"}):
            if not requirement.marker.evaluate({"extra": ""}):  # in the test extra, not a core dependency
                names.append(requirement.name)
    if not names:
        return False
    for name in names:
        if name.lower().replace("_", "-") == missing.lower().replace("_", "-"):
            continue
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return False
    return True


def import_test_package(module: str, distribution: str):
    """``module`` imported; a skip naming ``distribution`` when it is missing and fusedrnn's [test] extra is not
    installed; a failure when the extra is installed (CI must run these tests, not skip them)."""
    import importlib

    import pytest

    try:
        return importlib.import_module(module)
    except ImportError as error:
        if _test_extra_installed(distribution):
            pytest.fail(f"{distribution} is in fusedrnn's [test] extra but cannot be imported: {error}")
        pytest.skip(f"{distribution} is not installed (pip install -e '.[test]' installs it): {error}")
