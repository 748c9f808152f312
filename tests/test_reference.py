"""The reference backend against torch.nn (float64), the flashrnn package's vanilla backend, float64
math at lower precision, and gradcheck."""

import pytest
import torch

import fusedrnn
from fusedrnn import rnn

from .helpers import random_problem

CELLS = ["lstm", "gru", "elman", "slstm"]


def _torch_module_problem(kind, input_size, hidden, B, T, with_state):
    """A torch.nn module and the equivalent fusedrnn inputs (single head) built from its weights."""
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[kind](
        input_size, hidden, batch_first=True, dtype=torch.float64
    )
    inp = torch.randn(B, T, input_size, dtype=torch.float64)
    gates = {"lstm": 4, "gru": 3, "elman": 1}[kind]
    w_ih, w_hh = module.weight_ih_l0.detach(), module.weight_hh_l0.detach()
    b_ih, b_hh = module.bias_ih_l0.detach(), module.bias_hh_l0.detach()
    x = (inp @ w_ih.T).reshape(B, T, gates, 1, hidden)
    R = w_hh.reshape(gates, 1, hidden, hidden)
    if kind == "gru":
        # b gates (r, z, n_in, n_hidden): r and z biases add; n keeps its hidden bias inside r * (...)
        b = torch.stack(
            [
                b_ih[:hidden] + b_hh[:hidden],
                b_ih[hidden : 2 * hidden] + b_hh[hidden : 2 * hidden],
                b_ih[2 * hidden :],
                b_hh[2 * hidden :],
            ]
        ).reshape(4, 1, hidden)
    else:
        b = (b_ih + b_hh).reshape(gates, 1, hidden)
    torch_state = None
    state = None
    if with_state:
        h0 = torch.randn(1, B, hidden, dtype=torch.float64)
        if kind == "lstm":
            c0 = torch.randn(1, B, hidden, dtype=torch.float64)
            torch_state = (h0, c0)
            state = torch.stack([h0[0], c0[0]]).reshape(2, B, 1, hidden)
        else:
            torch_state = h0
            state = h0.reshape(1, B, 1, hidden)
    return module, inp, torch_state, (x, R, b, state)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("B,T,hidden", [(1, 1, 5), (3, 7, 16), (2, 63, 9)])
def test_reference_equals_torch_nn(kind, B, T, hidden, with_state):
    module, inp, torch_state, (x, R, b, state) = _torch_module_problem(kind, 6, hidden, B, T, with_state)
    with torch.no_grad():
        out, torch_final = module(inp, torch_state)
        y, final = rnn(x, R, b, state, cell=kind, backend="reference")
    assert (y.reshape(B, T, hidden) - out).abs().max() <= 1e-12
    if kind == "lstm":
        h_n, c_n = torch_final
        assert (final[0].reshape(B, hidden) - h_n[0]).abs().max() <= 1e-12
        assert (final[1].reshape(B, hidden) - c_n[0]).abs().max() <= 1e-12
    else:
        assert (final[0].reshape(B, hidden) - torch_final[0]).abs().max() <= 1e-12


# flashrnn's GRU orders R as (n_hidden, r, z) and b as (n_hidden, r, z, n_in); ours follow torch.nn.GRU.
_FLASHRNN_GATE_MAP = {"gru": ([2, 0, 1], [3, 0, 1, 2])}


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,NH,D", [(1, 1, 1, 8), (3, 7, 4, 5), (2, 33, 3, 16)])
def test_reference_equals_flashrnn_vanilla(cell, B, T, NH, D, with_state):
    flashrnn = pytest.importorskip("flashrnn")
    x, R, b, state = random_problem(cell, B, T, NH, D, with_state=with_state)
    r_order, b_order = _FLASHRNN_GATE_MAP.get(cell, (slice(None), slice(None)))
    fl_states = state[:, :, None] if state is not None else None  # flashrnn: [S, B, 1, NH, D]
    fl_all, fl_final = flashrnn.flashrnn(
        x, R[r_order], b[b_order], states=fl_states, function=cell, backend="vanilla", dtype="float64"
    )
    y, final = rnn(x, R, b, state, cell=cell, backend="reference")
    assert (y - fl_all[0]).abs().max() <= 1e-12  # flashrnn returns all states per step: [S, B, T, NH, D]
    assert (final - fl_final[:, :, 0]).abs().max() <= 1e-12


@pytest.mark.parametrize("cell", CELLS)
def test_reference_gradcheck(cell):
    x, R, b, state = random_problem(cell, 2, 4, 2, 3)
    inputs = tuple(t.requires_grad_() for t in (x, R, b, state))

    def fn(x, R, b, state):
        return rnn(x, R, b, state, cell=cell, backend="reference")

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
def test_reference_gradcheck_fresh_state(cell):
    """No initial state: sLSTM takes its m' = i~ branch at the first step."""
    x, R, b, _ = random_problem(cell, 2, 3, 1, 4, with_state=False)
    inputs = tuple(t.requires_grad_() for t in (x, R, b))
    assert torch.autograd.gradcheck(lambda x, R, b: rnn(x, R, b, cell=cell, backend="reference"), inputs)


# 16-bit inputs are computed in float32 and rounded once on output: the error is the output rounding
# (bf16: 2^-8 relative, |h| < 1 -> 4e-3) plus the rounding of the inputs themselves, which moves the
# trajectory by a few input ulps. float32 keeps ~1e-6 over these short sequences.
_LOW_PRECISION_TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}


@pytest.mark.parametrize("dtype", list(_LOW_PRECISION_TOL), ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_reference_low_precision_tracks_float64(cell, dtype):
    x, R, b, state = random_problem(cell, 3, 17, 2, 8)
    y64, final64 = rnn(x, R, b, state, cell=cell, backend="reference")
    low = [t.to(dtype) for t in (x, R, b, state)]
    y, final = rnn(*low, cell=cell, backend="reference")
    assert y.dtype == dtype and final.dtype == dtype
    tol = _LOW_PRECISION_TOL[dtype]
    # m (sLSTM's stabiliser) grows like a sum of log-gates: compare it relative to its size.
    scale = final64.abs().clamp(min=1.0)
    assert ((y.double() - y64).abs()).max() <= tol
    assert ((final.double() - final64).abs() / scale).max() <= tol


def test_reference_float64_math_by_hand():
    """One LSTM and one sLSTM step written out element by element with Python floats."""
    import math

    def sig(v):
        return 1.0 / (1.0 + math.exp(-v))

    x, R, b, state = random_problem("slstm", 1, 1, 1, 2)
    _, final = rnn(x, R, b, state, cell="slstm", backend="reference")
    h, c, n, m = (state[s, 0, 0].tolist() for s in range(4))
    for d in range(2):
        pre = [
            x[0, 0, g, 0, d].item() + sum(R[g, 0, d, j].item() * h[j] for j in range(2)) + b[g, 0, d].item()
            for g in range(4)
        ]
        log_f_m = math.log(sig(pre[1])) + m[d]
        m_new = pre[0] if n[d] == 0 else max(pre[0], log_f_m)
        i, f = math.exp(pre[0] - m_new), math.exp(log_f_m - m_new)
        c_new = f * c[d] + i * math.tanh(pre[2])
        n_new = max(f * n[d] + i, 1.0)
        h_new = sig(pre[3]) * c_new / n_new
        expected = [h_new, c_new, n_new, m_new]
        for s in range(4):
            assert abs(final[s, 0, 0, d].item() - expected[s]) <= 1e-13


@pytest.mark.parametrize("cell", CELLS)
def test_two_calls_continue_one_call(cell):
    """Feeding the final state back continues the sequence exactly (streaming)."""
    x, R, b, state = random_problem(cell, 2, 10, 2, 4)
    y, final = rnn(x, R, b, state, cell=cell)
    y1, mid = rnn(x[:, :5], R, b, state, cell=cell)
    y2, final2 = rnn(x[:, 5:], R, b, mid, cell=cell)
    assert (torch.cat([y1, y2], 1) - y).abs().max() <= 1e-14
    assert (final2 - final).abs().max() <= 1e-14


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
def test_reference_on_gpu_matches_cpu(cell):
    x, R, b, state = random_problem(cell, 3, 9, 2, 8)
    y, final = rnn(x, R, b, state, cell=cell, backend="reference")
    y_gpu, final_gpu = rnn(*(t.cuda() for t in (x, R, b, state)), cell=cell, backend="reference")
    assert (y_gpu.cpu() - y).abs().max() <= 1e-12
    assert (final_gpu.cpu() - final).abs().max() <= 1e-12


def test_public_names():
    assert set(fusedrnn.cell_names()) == set(CELLS)
    assert "reference" in fusedrnn.backend_names()
