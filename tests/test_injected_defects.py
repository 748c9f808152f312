"""The comparison with the reference catches known kernel defects: each defect is injected around a fused
backend's launch functions (the layouts every fused backend shares: saved states [S, NH, T + 1, B, D], gradients
dx [B, T, Gx, NH, D], dR [Gr, NH, D, D], db [Gb, NH, D]) and ``check_backend`` must fail on it, while the same call
without it passes. Host-side stand-ins for defects inside the kernels; on the CPU through Triton's interpreter.
"""

from __future__ import annotations

import importlib
from functools import partial

import pytest
import torch

from fusedrnn.backends import get_backend, registry
from fusedrnn.backends.fused import fused_backend

from .helpers import check_backend

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
BACKENDS = ["triton", "alternating"] + (["cuda"] if ON_GPU else [])
B, T, NH, D = 3, 6, 2, 16
LENGTHS = [6, 4, 2]
# float16 sums of T step products drift as √T · 2^-12 of the largest element: at 512 steps about 5e-3 of it,
# twice the float16 tolerance (3x the largest error of correct kernels); at 6 steps 7e-4, within it.
LONG_T = 512


def _step_contribution(dx, states, t, dtype):
    """Step t's part of dR for cells whose R gates feed the x gates' slots (LSTM): Σ_b dgate[b, t] ⊗ h_{t-1}."""
    return torch.einsum("bgni,nbj->gnij", dx[:, t].float(), states[0, :, t].to(dtype).float())


def _drop_step(step):
    def backward(launch, cell, R, pre, states, lengths, dy, dfinal):
        dx, dR, db, ds = launch(cell, R, pre, states, lengths, dy, dfinal)
        return dx, (dR.float() - _step_contribution(dx, states, step, dR.dtype)).to(dR.dtype), db, ds

    return {"backward": backward}


def _dR_in_input_dtype():
    def backward(launch, cell, R, pre, states, lengths, dy, dfinal):
        dx, dR, db, ds = launch(cell, R, pre, states, lengths, dy, dfinal)
        total = torch.zeros_like(dR)
        for t in range(dx.shape[1]):  # each step's product rounded, and summed, in the input dtype
            total += _step_contribution(dx, states, t, dR.dtype).to(dR.dtype)
        return dx, total, db, ds

    return {"backward": backward}


def _swap_gates():
    def backward(launch, cell, R, pre, states, lengths, dy, dfinal):
        dx, dR, db, ds = launch(cell, R, pre, states, lengths, dy, dfinal)
        return dx[:, :, [1, 0, 2, 3]], dR, db, ds

    return {"backward": backward}


def _drop_bias_gradient():
    def backward(launch, cell, R, pre, states, lengths, dy, dfinal):
        dx, dR, db, ds = launch(cell, R, pre, states, lengths, dy, dfinal)
        db = db.clone()
        db[2] = 0
        return dx, dR, db, ds

    return {"backward": backward}


def _row_steps(change):
    """Row 1 runs ``change`` steps more (or fewer) than its length, forward and backward alike."""

    def shifted(lengths):
        lengths = lengths.clone()
        lengths[1] += change
        return lengths

    def forward(launch, cell, x, R, b, state, lengths, save):
        return launch(cell, x, R, b, state, shifted(lengths), save)

    def backward(launch, cell, R, pre, states, lengths, dy, dfinal):
        return launch(cell, R, pre, states, shifted(lengths), dy, dfinal)

    return {"forward": forward, "backward": backward}


def _skip_initial_state():
    def forward(launch, cell, x, R, b, state, lengths, save):
        return launch(cell, x, R, b, torch.zeros_like(state), lengths, save)

    return {"forward": forward}


def _states_in_16_bits():
    def forward(launch, cell, x, R, b, state, lengths, save):
        y, final, pre, states = launch(cell, x, R, b, state, lengths, save)
        if states.numel():
            states = states.to(torch.bfloat16).to(states.dtype)
        return y, final, pre, states

    return {"forward": forward}


# name -> (wrappers of forward / backward, dtype of the problem, whether the problem has lengths)
DEFECTS = {
    "dR without the last step": (_drop_step(T - 1), torch.float32, False),
    "dR without the first step": (_drop_step(0), torch.float32, False),
    "dR summed in the input dtype": (_dR_in_input_dtype(), torch.float16, False),  # at LONG_T steps
    "slot of a gate routed wrongly": (_swap_gates(), torch.float32, False),
    "a bias gradient dropped": (_drop_bias_gradient(), torch.float32, False),
    "a row runs one step too many": (_row_steps(+1), torch.float32, True),
    "a row runs one step too few": (_row_steps(-1), torch.float32, True),
    "the initial state skipped": (_skip_initial_state(), torch.float32, False),
    "saved states rounded to 16 bits": (_states_in_16_bits(), torch.float32, False),
}


@pytest.fixture
def inject(monkeypatch):
    """Re-register a backend with its launch functions wrapped by a defect."""

    def apply(name, wrappers):
        backend = get_backend(name)
        launch = importlib.import_module(f"fusedrnn.backends.{name}.launch")
        forward, backward = launch.forward, launch.backward
        wrapped_fw = wrappers.get("forward")
        wrapped_bw = wrappers.get("backward")
        # the defects wrap the launch functions' positional arguments; resets (a keyword) passes through
        fw = (
            forward if wrapped_fw is None else (lambda *a, resets=None: wrapped_fw(partial(forward, resets=resets), *a))
        )
        bw = (
            backward
            if wrapped_bw is None
            else (lambda *a, resets=None: wrapped_bw(partial(backward, resets=resets), *a))
        )
        defective = fused_backend(name, backend.priority, backend.supports, fw, bw, backend.description)
        monkeypatch.setitem(registry._BACKENDS, name, defective)

    return apply


@pytest.mark.parametrize("defect", list(DEFECTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_comparison_with_the_reference_catches_the_defect(backend, defect, inject):
    wrappers, dtype, with_lengths = DEFECTS[defect]
    lengths = LENGTHS if with_lengths else None
    steps = T
    if defect == "dR summed in the input dtype":
        if backend == "alternating" and not ON_GPU:
            pytest.skip("512 steps of the alternating backend take minutes in Triton's interpreter; runs on the GPU")
        steps = LONG_T
    check_backend(backend, "lstm", B, steps, NH, D, dtype, DEVICE, lengths=lengths)  # passes without the defect
    inject(backend, wrappers)
    with pytest.raises(AssertionError):
        check_backend(backend, "lstm", B, steps, NH, D, dtype, DEVICE, lengths=lengths)
