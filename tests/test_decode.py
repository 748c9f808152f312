"""Decoding: ``module.step`` on its step plan, ``module.decoder`` (state in place), and the weight copies kept
between calls (the alternating backend's GEMM layout, the dense expansion of heads) following every change.

The step plan computes the input projection of one step where ``forward`` computes it for the whole sequence in
one GEMM: the same sums in another blocking, so float64 agrees to 1e-12 and float32 to 1e-5 (2^-24 relative per
term over sums of I + D terms, propagated over 6 steps)."""

from __future__ import annotations

import pytest
import torch

import fusedrnn.nn as fnn
from fusedrnn import rnn
from fusedrnn.backends.alternating import launch as alternating
from fusedrnn.derived import fingerprint

from .helpers import max_error

ALL_MODULES = [fnn.LSTM, fnn.GRU, fnn.RNN, fnn.SLSTM]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("module_cls", ALL_MODULES)
@pytest.mark.parametrize(
    ("backend", "dtype"), [("reference", torch.float64), ("triton", torch.float32)], ids=["reference", "triton"]
)
def test_planned_step_equals_forward(module_cls, backend, dtype):
    module = module_cls(3, 16, num_layers=2, num_heads=2, batch_first=True, backend=backend, dtype=dtype)
    x = torch.randn(3, 5, 3, dtype=dtype)
    hx = tuple(torch.randn(2, 3, 16, dtype=dtype) for _ in module.cell.states)
    hx = hx[0] if len(hx) == 1 else hx
    with torch.no_grad():
        out, final = module(x, hx)
        state = hx
        for t in range(5):
            h, state = module.step(x[:, t], state)
            assert max_error(h, out[:, t]) <= TOL[dtype], t
        for got, expected in zip(_parts(state), _parts(final)):
            assert got.shape == expected.shape and got.is_contiguous()
            assert max_error(got, expected) <= TOL[dtype]
        h, state = module.step(x[0, 0])  # unbatched, from the initial state
        expected, expected_state = module(x[0, :1])
        assert h.shape == (16,) and max_error(h, expected[0]) <= TOL[dtype]
        assert all(s.shape == (2, 16) for s in _parts(state))


def test_step_in_training_mode_keeps_dropout():
    """Dropout between layers in training mode: step runs forward, whose dropout draws from torch's generator."""
    module = fnn.LSTM(3, 8, num_layers=2, dropout=0.5, backend="reference", dtype=torch.float64).train()
    x = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(1)
        h, _ = module.step(x)
        torch.manual_seed(1)
        expected, _ = module(x.unsqueeze(0))
    assert torch.equal(h, expected[0])


def test_step_with_gradients_still_differentiable():
    """With autograd on, step runs forward (the plan has none): gradients flow to the parameters."""
    module = fnn.LSTM(3, 8, backend="reference", dtype=torch.float64)
    hx = (torch.randn(1, 2, 8, dtype=torch.float64), torch.randn(1, 2, 8, dtype=torch.float64))
    h, _ = module.step(torch.randn(2, 3, dtype=torch.float64), hx)
    h.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("module_cls", ALL_MODULES)
def test_decoder_equals_forward_state_in_place(module_cls):
    module = module_cls(4, 12, num_layers=3, num_heads=3, backend="reference", dtype=torch.float64)
    x = torch.randn(6, 2, 4, dtype=torch.float64)  # [T, B, I]
    hx = tuple(torch.randn(3, 2, 12, dtype=torch.float64) for _ in module.cell.states)
    hx = hx[0] if len(hx) == 1 else hx
    decoder = module.decoder(2, hx)
    buffers = [s.data_ptr() for s in _parts(decoder.state)]
    with torch.no_grad():
        out, final = module(x, hx)
    for t in range(6):
        h = decoder(x[t])
        assert not h.requires_grad and max_error(h, out[t]) <= TOL[torch.float64], t
    assert [s.data_ptr() for s in _parts(decoder.state)] == buffers  # kept in place
    assert all(s._base is not None for s in _parts(decoder.state))  # views of the buffer, not copies
    for got, expected in zip(_parts(decoder.state), _parts(final)):
        assert max_error(got, expected) <= TOL[torch.float64]
    decoder.reset()  # the cell's initial state: the decoder restarts
    with torch.no_grad():
        again, _ = module(x[:2])
    decoder(x[0])
    assert max_error(decoder(x[1]), again[1]) <= TOL[torch.float64]


@pytest.mark.parametrize(
    "update",
    ["in_place", "fused_adam", "foreach_sgd", "load_state_dict"],
)
def test_decoder_follows_weight_updates(update):
    """The step plan keeps R and b between calls; every way an optimizer or user changes the weights is seen."""
    module = fnn.GRU(3, 8, num_heads=2, backend="reference")  # GRU: b is built (not a view) and kept
    fresh = fnn.GRU(3, 8, num_heads=2, backend="reference")
    x = torch.randn(1, 3)
    decoder = module.decoder(1)
    decoder(x)
    if update == "in_place":
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(1.5)
    elif update == "load_state_dict":
        module.load_state_dict(fresh.state_dict())
    else:
        optimizer = (
            torch.optim.Adam(module.parameters(), lr=0.1, fused=True)
            if update == "fused_adam"
            else torch.optim.SGD(module.parameters(), lr=0.5, foreach=True)
        )
        for p in module.parameters():
            p.grad = torch.randn_like(p)
        optimizer.step()
    decoder.reset()
    with torch.no_grad():
        expected, _ = module(x.unsqueeze(0))
    assert max_error(decoder(x), expected[0]) <= TOL[torch.float32]


def test_decoder_refuses_changed_dtype_and_bad_input():
    module = fnn.LSTM(3, 8, backend="reference")
    decoder = module.decoder(2)
    with pytest.raises(RuntimeError, match=r"input: expected shape \(2, 3\)"):
        decoder(torch.randn(1, 3))
    with pytest.raises(RuntimeError, match="float32"):
        decoder(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="input: expected a tensor"):
        decoder([0.0, 1.0, 2.0])
    module.double()
    with pytest.raises(RuntimeError, match="make a new decoder"):
        decoder(torch.randn(2, 3))
    with pytest.raises(ValueError, match="batch: expected an int >= 1, got 0"):
        module.decoder(0)
    with pytest.raises(ValueError, match="bidirectional"):
        fnn.LSTM(3, 8, bidirectional=True).decoder(1)
    with pytest.raises(RuntimeError, match=r"hx \(h_0\): expected shape \(1, 2, 8\)"):
        module.decoder(2, (torch.zeros(1, 3, 8), torch.zeros(1, 3, 8)))


def test_dense_expansion_follows_fused_adam():
    """Multi-head layers on torch's CPU ops keep weight_hh's dense expansion between inference calls."""
    module = fnn.LSTM(3, 8, num_heads=4)
    reference = fnn.LSTM(3, 8, num_heads=4, backend="reference")
    x = torch.randn(5, 3)
    with torch.no_grad():
        module(x)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.1, fused=True)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    reference.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert max_error(module(x)[0], reference(x)[0]) <= TOL[torch.float32]


def test_inference_tensors_are_never_reused():
    """Inference tensors have no version counter: weights made under torch.inference_mode are copied every call."""
    with torch.inference_mode():
        x, R, b, state = _inputs()
        first = _alternating(x, R, b, state)
        R.mul_(1.5)  # unseen by any fingerprint
        got = _alternating(x, R, b, state)
        expected = rnn(x, R, b, state, cell="lstm", backend="reference")[0]
    assert fingerprint(R) is None and not torch.equal(first, got)
    assert max_error(got, expected) <= TOL[torch.float32]


def test_decoder_made_in_inference_mode_runs_outside():
    module = fnn.LSTM(3, 8, backend="reference")
    x = torch.randn(1, 3)
    with torch.inference_mode():
        decoder = module.decoder(1)
        inside = decoder(x).clone()
    decoder.reset()
    assert torch.equal(decoder(x), inside)


def test_fingerprint_sees_fused_optimizer_steps():
    """torch's fused Adam writes parameters without bumping their version counter; its step must still count."""
    p = torch.nn.Parameter(torch.randn(4))
    before = fingerprint(p.view(2, 2))
    optimizer = torch.optim.Adam([p], fused=True)
    p.grad = torch.randn(4)
    optimizer.step()
    assert fingerprint(p.view(2, 2)) != before


# --- the alternating backend's R in the GEMM layout, kept between calls (Triton interpreter on CPU, float32) ---


def _alternating(x, R, b, state):
    return rnn(x, R, b, state, cell="lstm", backend="alternating")[0]


def _inputs(NH=2, D=16):
    x = torch.randn(2, 3, 4, NH, D)
    R = torch.randn(4, NH, D, D) / D**0.5
    return x, R, torch.randn(4, NH, D), torch.randn(2, 2, NH, D)


def test_alternating_reuses_the_laid_out_weights():
    """A second call with the same, unchanged R copies nothing: W poisoned after the first call shows it."""
    x, R, b, state = _inputs()
    _alternating(x, R, b, state)
    (W,) = [w.W for w in alternating._WEIGHTS.values() if w.held is not None and w.held[0] is R]
    W.fill_(float("nan"))  # not a change of R: a call that skips the copy reads the NaN
    assert _alternating(x, R, b, state).isnan().all()


@pytest.mark.parametrize("update", ["in_place", "fused_adam", "other_tensor"])
def test_alternating_weights_follow_changes(update):
    x, R, b, state = _inputs()
    R = torch.nn.Parameter(R)
    with torch.no_grad():
        _alternating(x, R, b, state)
        if update == "in_place":
            R.mul_(1.5)
        elif update == "other_tensor":
            R = torch.nn.Parameter(R * 0.5)
    if update == "fused_adam":
        optimizer = torch.optim.Adam([R], lr=0.1, fused=True)
        R.grad = torch.randn_like(R)
        optimizer.step()
    with torch.no_grad():
        got = _alternating(x, R, b, state)
        expected = rnn(x, R, b, state, cell="lstm", backend="reference")[0]
    assert max_error(got, expected) <= TOL[torch.float32]


# --- on the device (pytest -m gpu) -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("module_cls", ALL_MODULES)
@pytest.mark.parametrize(("num_heads", "backend"), [(12, "auto"), (1, "auto"), (1, "alternating")])
def test_decoder_in_a_cuda_graph(module_cls, num_heads, backend):
    """A decoder step captured once and replayed: forward's outputs step after step, the state advanced by the
    replays alone (bfloat16: states in float32 inside a step, h rounded between steps: 1e-2 normwise)."""
    from .helpers import norm_error

    module = module_cls(
        64, 768, num_layers=2, num_heads=num_heads, device="cuda", dtype=torch.bfloat16, backend=backend
    )
    x = torch.randn(20, 1, 64, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        expected, _ = module(x)
    decoder = module.decoder(1)
    static_x = x[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture: kernels compiled, plan made
        decoder(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_h = decoder(static_x)
    decoder.reset()
    for t in range(20):
        static_x.copy_(x[t])
        graph.replay()
        assert norm_error(static_h.float(), expected[t].float()) < 1e-2, t
