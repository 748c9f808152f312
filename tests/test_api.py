"""Validation, empty inputs and dispatch of the public ``rnn`` function."""

import logging

import pytest
import torch

from fusedrnn import backends, initial_state, rnn
from fusedrnn.backends import BACKEND_ENV, Backend, register_backend

from .helpers import random_problem


def _lstm(**overrides):
    x, R, b, state = random_problem("lstm", 2, 3, 2, 4, dtype=torch.float32)
    args = {"x": x, "R": R, "b": b, "state": state}
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides, error, pattern",
    [
        (
            {"x": torch.randn(2, 3, 4, 8)},
            ValueError,
            r"x: expected a 5-d tensor \[B, T, Gx, NH, D\], got shape \(2, 3, 4, 8\)",
        ),
        (
            {"x": torch.randn(2, 3, 3, 2, 4)},
            ValueError,
            r"x: expected 4 gates \(i, f, z, o\).*got shape \(2, 3, 3, 2, 4\)",
        ),
        ({"x": torch.randn(2, 3, 4, 0, 4)}, ValueError, r"x: num_heads and head_dim must be >= 1"),
        ({"x": [1.0]}, TypeError, r"x: expected a torch.Tensor"),
        ({"R": torch.randn(4, 2, 4)}, ValueError, r"R: expected a 4-d tensor"),
        ({"R": torch.randn(4, 2, 4, 5)}, ValueError, r"R: expected shape \(4, 2, 4, 4\).*got \(4, 2, 4, 5\)"),
        ({"R": torch.randn(3, 2, 4, 4)}, ValueError, r"R: expected shape \(4, 2, 4, 4\)"),
        ({"b": torch.randn(4, 2, 5)}, ValueError, r"b: expected shape \(4, 2, 4\).*got \(4, 2, 5\)"),
        ({"b": torch.randn(4, 8)}, ValueError, r"b: expected a 3-d tensor"),
        ({"state": torch.randn(1, 2, 2, 4)}, ValueError, r"state: expected shape \(2, 2, 2, 4\).*got \(1, 2, 2, 4\)"),
        ({"state": torch.randn(2, 3, 2, 4)}, ValueError, r"state: expected shape \(2, 2, 2, 4\)"),
        ({"state": torch.randn(2, 2, 8)}, ValueError, r"state: expected a 4-d tensor"),
        (
            {"R": torch.randn(4, 2, 4, 4, dtype=torch.float64)},
            TypeError,
            r"R: expected dtype torch.float32.*got torch.float64",
        ),
        ({"b": torch.randn(4, 2, 4, dtype=torch.float16)}, TypeError, r"b: expected dtype torch.float32"),
        ({"state": torch.randn(2, 2, 2, 4, dtype=torch.bfloat16)}, TypeError, r"state: expected dtype"),
        ({"x": torch.randint(0, 3, (2, 3, 4, 2, 4))}, TypeError, r"x: expected dtype one of"),
        ({"R": torch.randn(4, 2, 4, 4, device="meta")}, ValueError, r"R: expected device cpu.*got meta"),
    ],
    ids=lambda v: None,
)
def test_validation_errors(overrides, error, pattern):
    args = _lstm(**overrides)
    with pytest.raises(error, match=pattern):
        rnn(args["x"], args["R"], args["b"], args["state"], cell="lstm")


def test_unknown_cell_and_backend():
    args = _lstm()
    with pytest.raises(
        ValueError, match=r"cell: unknown cell 'lstn'; expected one of \['elman', 'gru', 'lstm', 'slstm'\]"
    ):
        rnn(args["x"], args["R"], args["b"], cell="lstn")
    with pytest.raises(TypeError, match=r"cell: expected a cell name"):
        rnn(args["x"], args["R"], args["b"], cell=4)
    with pytest.raises(ValueError, match=r"backend: unknown backend 'fast'; expected 'auto' or one of"):
        rnn(args["x"], args["R"], args["b"], cell="lstm", backend="fast")
    with pytest.raises(TypeError, match=r"backend: expected a backend name"):
        rnn(args["x"], args["R"], args["b"], cell="lstm", backend=None)


def test_cell_name_is_case_insensitive():
    args = _lstm()
    y1, _ = rnn(args["x"], args["R"], args["b"], cell="LSTM")
    y2, _ = rnn(args["x"], args["R"], args["b"], cell="lstm")
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("B,T", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_sequence(B, T):
    """B = 0 or T = 0 gives an empty y and returns the initial state as the final state."""
    x, R, b, state = random_problem("slstm", max(B, 1), max(T, 1), 2, 4)
    x, state = x[:B, :T], state[:, :B]
    y, final = rnn(x, R, b, state, cell="slstm")
    assert y.shape == (B, T, 2, 4)
    assert torch.equal(final, state)
    assert B == 0 or final.data_ptr() != state.data_ptr()  # a copy, not an alias of the input
    y, final = rnn(x, R, b, cell="slstm")
    assert torch.equal(final, initial_state("slstm", B, 2, 4, dtype=x.dtype))


def test_default_state_is_the_cells_initial_state():
    x, R, b, _ = random_problem("lstm", 2, 5, 2, 4)
    zeros = torch.zeros(2, 2, 2, 4, dtype=x.dtype)
    y1, f1 = rnn(x, R, b, cell="lstm")
    y2, f2 = rnn(x, R, b, zeros, cell="lstm")
    assert torch.equal(y1, y2) and torch.equal(f1, f2)


def test_inputs_are_not_modified():
    args = _lstm()
    before = {k: v.clone() for k, v in args.items()}
    rnn(args["x"], args["R"], args["b"], args["state"], cell="lstm")
    for k in args:
        assert torch.equal(args[k], before[k]), k


@pytest.fixture
def refusing_backend(monkeypatch):
    """A high-priority backend that refuses every call, registered for one test only."""
    monkeypatch.setattr(backends.registry, "_BACKENDS", dict(backends.registry._BACKENDS))
    register_backend(
        Backend(
            name="never",
            priority=1000,
            supports=lambda call: "it never runs",
            run=lambda *a: pytest.fail("a refusing backend ran"),
        )
    )


def test_auto_skips_a_refusing_backend(refusing_backend, caplog):
    args = _lstm()
    with caplog.at_level(logging.DEBUG, logger="fusedrnn"):
        rnn(args["x"], args["R"], args["b"], cell="lstm")
    # a backend that could run on this device but refuses the call: one INFO line, once per reason
    assert "falls back from backend 'never': it never runs" in caplog.text
    assert any(r.levelno == logging.INFO and "'never'" in r.getMessage() for r in caplog.records)


def test_forced_backend_that_cannot_run_raises(refusing_backend):
    args = _lstm()
    with pytest.raises(ValueError, match=r"backend 'never' cannot run this call: it never runs; backends that can: \["):
        rnn(args["x"], args["R"], args["b"], cell="lstm", backend="never")


def test_environment_forces_the_backend(refusing_backend, monkeypatch):
    args = _lstm()
    monkeypatch.setenv(BACKEND_ENV, "never")
    with pytest.raises(ValueError, match=rf"backend 'never' \(forced by {BACKEND_ENV}\) cannot run this call"):
        rnn(args["x"], args["R"], args["b"], cell="lstm")
    monkeypatch.setenv(BACKEND_ENV, "reference")
    rnn(args["x"], args["R"], args["b"], cell="lstm")
    monkeypatch.setenv(BACKEND_ENV, "nonexistent")
    with pytest.raises(ValueError, match=r"backend: unknown backend 'nonexistent'"):
        rnn(args["x"], args["R"], args["b"], cell="lstm")


@pytest.mark.parametrize("backend", ["triton", "alternating", "cuda"])
def test_double_backward_is_refused_by_the_fused_backends_and_runs_on_the_reference(backend):
    """The kernels' backward is not differentiable: a gradient with create_graph=True raises a RuntimeError that
    names the backend and the way out, instead of a second derivative that silently misses the kernels' part."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "cuda" and device == "cpu":
        pytest.skip("the cuda backend needs a GPU")
    x, R, b, state = (t.requires_grad_() for t in random_problem("lstm", 2, 3, 1, 16, torch.float32, device))
    y, _ = rnn(x, R, b, state, cell="lstm", backend=backend)
    with pytest.raises(RuntimeError, match=rf"backend '{backend}': double backward .* backend='reference'"):
        torch.autograd.grad(y.square().sum(), R, create_graph=True)
    y, _ = rnn(x, R, b, state, cell="lstm", backend="reference")
    (dR,) = torch.autograd.grad(y.square().sum(), R, create_graph=True)
    (ddx,) = torch.autograd.grad(dR.square().sum(), x)
    assert torch.isfinite(ddx).all() and ddx.abs().sum() > 0
