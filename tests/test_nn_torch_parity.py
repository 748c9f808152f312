"""fusedrnn.nn as a drop-in for torch.nn, with one head: what PyTorch's own RNN-module tests check —
constructor arguments and their errors, shapes (batched, unbatched, empty batch), exception types for bad
calls, state_dict round trips both ways, packed sequences, dropout, devices — each against torch.nn itself,
on both CPU paths ("auto": torch's own RNN ops; "reference": fusedrnn's step loop), and the cells.

Not covered, because it needs cuDNN's flat weight buffer: ``flatten_parameters`` compacting the weights
into one buffer (ours is a no-op) and ``_flat_weights`` aliasing that buffer."""

import collections
import io
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import fusedrnn.nn as fnn

from .helpers import norm_error

PAIRS = [(fnn.LSTM, torch.nn.LSTM), (fnn.GRU, torch.nn.GRU), (fnn.RNN, torch.nn.RNN)]
PAIR_IDS = ["lstm", "gru", "rnn"]
CELL_PAIRS = [(fnn.LSTMCell, torch.nn.LSTMCell), (fnn.GRUCell, torch.nn.GRUCell), (fnn.RNNCell, torch.nn.RNNCell)]
BACKENDS = ["auto", "reference"]
# float64 on both sides: the two computations differ only in summation order
TOL64 = 1e-10


def _tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _close(got, expected, tol=TOL64):
    for g, e in zip(_tuple(got), _tuple(expected)):
        assert g.shape == e.shape, (tuple(g.shape), tuple(e.shape))
        if e.numel():
            assert (g - e).abs().max().item() <= tol


def _pair(pair, backend="auto", **kwargs):
    """A torch.nn module and ours with its state_dict (float64)."""
    ours_cls, torch_cls = pair
    theirs = torch_cls(3, 5, dtype=torch.float64, **kwargs)
    ours = ours_cls(3, 5, dtype=torch.float64, backend=backend, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _raises_like_torch(call_ours, call_theirs):
    """Both calls raise, the same exception type; returns our exception (its message is checked by callers)."""
    with pytest.raises(Exception) as theirs:
        call_theirs()
    with pytest.raises(Exception) as ours:
        call_ours()
    assert ours.type is theirs.type, f"ours {ours.type.__name__}: {ours.value}; torch {theirs.type.__name__}"
    return ours.value


# --- parameters and state_dicts ---------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("layers,bidirectional,bias", [(1, False, True), (2, True, True), (3, False, False)])
def test_parameters_are_torchs(pair, layers, bidirectional, bias):
    """Names, shapes, order, all_weights and _flat_weights_names as torch.nn's."""
    ours_cls, torch_cls = pair
    ours = ours_cls(4, 6, layers, bias=bias, bidirectional=bidirectional)
    theirs = torch_cls(4, 6, layers, bias=bias, bidirectional=bidirectional)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [[p.shape for p in ps] for ps in ours.all_weights] == [[p.shape for p in ps] for ps in theirs.all_weights]
    assert all(p is getattr(ours, n) for n, p in zip(ours._flat_weights_names, ours._flat_weights))
    for name, param in ours.named_parameters():  # torch's initialisation bound, 1/sqrt(H)
        assert param.abs().max() <= 6**-0.5, name


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_both_ways(pair, backend):
    """torch's state_dict into ours and ours into torch's (strict): the same function either way."""
    ours_cls, torch_cls = pair
    kwargs = {"num_layers": 2, "bidirectional": True, "batch_first": True, "dtype": torch.float64}
    theirs, ours = torch_cls(3, 5, **kwargs), ours_cls(3, 5, backend=backend, **kwargs)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    _close(ours(x)[1], theirs(x)[1])
    _close(ours(x)[0], theirs(x)[0])
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())
    _close(ours(x)[0], theirs(x)[0])
    assert ours_cls.from_torch(theirs).state_dict().keys() == theirs.state_dict().keys()


def test_trained_torch_model_loads_into_fusedrnn_model():
    """A model with a torch.nn.LSTM inside, trained a few steps and saved (torch.save), loads into the same
    model built with fusedrnn.nn.LSTM and gives the same outputs (float32: summation order only)."""

    class Tagger(torch.nn.Module):
        def __init__(self, lstm_cls):
            super().__init__()
            self.embed = torch.nn.Embedding(20, 8)
            self.lstm = lstm_cls(8, 16, num_layers=2, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(32, 5)

        def forward(self, tokens):
            out, _ = self.lstm(self.embed(tokens))
            return self.head(out)

    trained = Tagger(torch.nn.LSTM)
    optimiser = torch.optim.Adam(trained.parameters(), lr=1e-2)
    tokens, tags = torch.randint(0, 20, (4, 12)), torch.randint(0, 5, (4, 12))
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(trained(tokens).flatten(0, 1), tags.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    for backend in BACKENDS:
        swapped = Tagger(fnn.LSTM)
        swapped.lstm.backend = backend
        swapped.load_state_dict(torch.load(buffer, weights_only=True))
        buffer.seek(0)
        test_tokens = torch.randint(0, 20, (3, 9))
        with torch.no_grad():
            assert (swapped(test_tokens) - trained(test_tokens)).abs().max() < 1e-5, backend


@pytest.mark.parametrize("ours_cls", [fnn.LSTM, fnn.GRU, fnn.RNN, fnn.SLSTM, fnn.LSTMCell])
def test_torch_state_dict_into_multi_head_layer_says_why(ours_cls):
    """weight_hh of a multi-head layer is [G·H, D]; a dense [G·H, H] one is refused with the reason."""
    one_head, heads = ours_cls(3, 8), ours_cls(3, 8, num_heads=4)
    name = "weight_hh" if ours_cls is fnn.LSTMCell else "weight_hh_l0"
    assert getattr(heads, name).shape == (getattr(one_head, name).shape[0], 2)
    with pytest.raises(
        RuntimeError,
        match=rf"{name}: got a dense recurrent matrix .* num_heads=4, .* build the layer "
        r"with num_heads=1 to load torch.nn weights",
    ):
        heads.load_state_dict(one_head.state_dict())
    heads.load_state_dict(ours_cls(3, 8, num_heads=4).state_dict())  # its own layout loads


# --- constructor ------------------------------------------------------------------------------------------


def test_positional_order_is_torchs():
    args = (3, 5, 2, False, True, 0.25, True)  # input, hidden, layers, bias, batch_first, dropout, bidirectional
    for ours_cls, torch_cls in PAIRS[:2]:
        ours, theirs = ours_cls(*args), torch_cls(*args)
        for field in (
            "input_size",
            "hidden_size",
            "num_layers",
            "bias",
            "batch_first",
            "dropout",
            "bidirectional",
            "proj_size",
        ):
            assert getattr(ours, field) == getattr(theirs, field), field
    ours, theirs = fnn.RNN(3, 5, 2, "tanh", False, True), torch.nn.RNN(3, 5, 2, "tanh", False, True)
    assert (ours.nonlinearity, ours.bias, ours.batch_first) == (theirs.nonlinearity, theirs.bias, theirs.batch_first)
    assert fnn.RNNCell(3, 5, False, "tanh").bias is False
    with pytest.raises(TypeError):  # fusedrnn's own arguments are keyword-only
        fnn.LSTM(3, 5, 1, True, False, 0.0, False, 0, None, None, 2)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_size": 0}, r"input_size: expected an integer >= 1, got 0"),
        ({"input_size": 3.0}, r"input_size: expected an integer >= 1, got float 3.0"),
        ({"hidden_size": 0}, r"hidden_size: expected an integer >= 1, got 0"),
        ({"hidden_size": 4.0}, r"hidden_size: expected an integer >= 1, got float"),
        ({"num_layers": 0}, r"num_layers: expected an integer >= 1, got 0"),
        ({"num_layers": 2.0}, r"num_layers: expected an integer >= 1, got float"),
        ({"dropout": 1.5}, r"dropout: expected a probability in \[0, 1\], got 1.5"),
        ({"dropout": True}, r"dropout: expected a probability in \[0, 1\], got True"),
        ({"proj_size": -1}, r"proj_size: expected an integer >= 0, got -1"),
        ({"proj_size": 4}, r"proj_size: (expected less than hidden_size \(4\)|only LSTM has projections)"),
    ],
)
def test_constructor_errors_like_torch(pair, kwargs, match):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    error = _raises_like_torch(lambda: pair[0](**args), lambda: pair[1](**args))
    assert error.args and __import__("re").search(match, str(error)), str(error)


def test_proj_size_refused_at_construction():
    with pytest.raises(NotImplementedError, match=r"proj_size: LSTM projections are not supported \(got 2\)"):
        fnn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"proj_size: only LSTM has projections .* got 2 for GRU"):
        fnn.GRU(3, 4, proj_size=2)
    assert fnn.LSTM(3, 4, proj_size=0).proj_size == 0


@pytest.mark.parametrize("ours_cls", [fnn.LSTM, fnn.GRU, fnn.RNN, fnn.SLSTM])
def test_dropout_with_one_layer_warns_like_torch(ours_cls):
    with pytest.warns(
        UserWarning,
        match=r"non-zero dropout expects num_layers greater than 1, but got "
        r"dropout=0.5 and num_layers=1",
    ):
        ours_cls(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours_cls(3, 4, num_layers=2, dropout=0.5)


# --- shapes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_and_empty_batch_like_torch(pair, backend, batch_first):
    ours, theirs = _pair(pair, backend, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(7, 3, dtype=torch.float64)  # unbatched [T, I]
    state = tuple(torch.randn(4, 5, dtype=torch.float64) for _ in _tuple(theirs(x)[1]))
    state = state if len(state) > 1 else state[0]
    _close(ours(x, state)[0], theirs(x, state)[0])
    _close(ours(x, state)[1], theirs(x, state)[1])
    empty = torch.randn((0, 7, 3) if batch_first else (7, 0, 3), dtype=torch.float64)  # B = 0
    out_o, st_o = ours(empty)
    out_t, st_t = theirs(empty)
    assert out_o.shape == out_t.shape and [s.shape for s in _tuple(st_o)] == [s.shape for s in _tuple(st_t)]


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.randn(5, dtype=torch.float64)), r"input: expected a 3-d tensor \[T, B, I\] or a 2-d"),
        (lambda m: m(torch.randn(5, 2, 4, dtype=torch.float64)), r"input: expected 3 features \(input_size\)"),
        (
            lambda m: m(torch.randn(5, 2, 3)),
            r"input: expected dtype torch.float64 \(the parameters'\), got torch.float32",
        ),
        (lambda m: m(torch.randn(0, 2, 3, dtype=torch.float64)), r"input: expected at least one time step"),
        (lambda m: m(torch.randn(0, 3, dtype=torch.float64)), r"input: expected at least one time step"),
        (
            lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64), _state(m, (1, 3, 5))),
            r"hx \(h_0\): expected shape \(1, 2, 5\) \[num_layers \* num_directions, batch, hidden_size\], got \(1, 3, 5\)",
        ),
        (
            lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64), _state(m, (2, 5))),
            r"hx \(h_0\): expected shape \(1, 2, 5\)",
        ),
        (
            lambda m: m(torch.randn(5, 3, dtype=torch.float64), _state(m, (1, 1, 5))),
            r"hx \(h_0\): expected shape \(1, 5\)",
        ),
        (
            lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64), _state(m, (1, 2, 5), torch.float32)),
            r"hx \(h_0\): expected dtype torch.float64 \(the input's\), got torch.float32",
        ),
    ],
)
def test_call_errors_like_torch(pair, backend, call, match):
    """The exception type torch.nn raises for the same mistake, with our message; nothing computed."""
    ours, theirs = _pair(pair, backend)
    error = _raises_like_torch(lambda: call(ours), lambda: call(theirs))
    assert __import__("re").search(match, str(error)), str(error)


def _state(module, shape, dtype=torch.float64):
    parts = tuple(
        torch.zeros(shape, dtype=dtype) for _ in range(2 if isinstance(module, (fnn.LSTM, torch.nn.LSTM)) else 1)
    )
    return parts if len(parts) > 1 else parts[0]


# --- packed sequences, dropout, devices -------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_unsorted_with_initial_state(pair, backend):
    """An unsorted PackedSequence with hx in the batch's order: outputs, final states and gradients as torch's
    (torch permutes hx into the packed order and the final states back)."""
    ours, theirs = _pair(pair, backend, num_layers=2, bidirectional=True)
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    hx = tuple(torch.randn(4, 4, 5, dtype=torch.float64, requires_grad=True) for _ in _tuple(theirs(x)[1]))
    hx_arg = hx if len(hx) > 1 else hx[0]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_o, st_o = ours(packed, hx_arg)
    out_t, st_t = theirs(packed, hx_arg)
    assert torch.equal(out_o.batch_sizes, out_t.batch_sizes) and torch.equal(
        out_o.unsorted_indices, out_t.unsorted_indices
    )
    _close(out_o.data, out_t.data)
    _close(st_o, st_t)
    weights = [torch.randn_like(t) for t in (out_t.data, *_tuple(st_t))]
    loss = lambda outs: sum((o * w).sum() for o, w in zip(outs, weights))
    g_o = torch.autograd.grad(loss((out_o.data, *_tuple(st_o))), [*hx, *ours.parameters()])
    g_t = torch.autograd.grad(loss((out_t.data, *_tuple(st_t))), [*hx, *theirs.parameters()])
    _close(tuple(g_o), tuple(g_t))
    padded, _ = pad_packed_sequence(out_o, total_length=7)
    assert (padded[1:, 2] == 0).all()


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_like_torch(pair, backend):
    """Between layers, in training only: p = 1 zeroes the second layer's input (deterministic, so equal to
    torch's), p = 0 and eval mode change nothing."""
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    for p in (1.0, 0.0):
        ours, theirs = _pair(pair, backend, num_layers=2, dropout=p)
        _close(ours(x)[0], theirs(x)[0])
        ours.eval()
        theirs.eval()
        _close(ours(x)[0], theirs(x)[0])
    ours.train()
    ours.dropout = 1.0
    assert not torch.allclose(ours(x)[0], theirs(x)[0])


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_lengths_with_empty_rows(pair):
    """lengths 0 (which PackedSequence cannot hold): zeros out, the initial state as the final; the
    torch-op path and the reference agree."""
    auto = pair[0](3, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    reference = pair[0](
        3, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64, backend="reference"
    )
    reference.load_state_dict(auto.state_dict())
    x, lengths = torch.randn(3, 6, 3, dtype=torch.float64), torch.tensor([6, 0, 2])
    out, state = auto(x, lengths=lengths)
    _close(out, reference(x, lengths=lengths)[0])
    _close(state, reference(x, lengths=lengths)[1])
    assert (out[1] == 0).all() and all((s[:, 1] == 0).all() for s in _tuple(state))


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_dtype_conversions(pair):
    """.double() / .float() / .to(dtype) move the parameters; the module then takes that dtype."""
    module = pair[0](3, 5).double()
    assert all(p.dtype == torch.float64 for p in module.parameters())
    assert module(torch.randn(4, 2, 3, dtype=torch.float64))[0].dtype == torch.float64
    module = module.float()
    assert module(torch.randn(4, 2, 3))[0].dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_gpu_state_dict_from_cpu_torch(pair):
    """A CPU torch.nn state_dict loaded into a fusedrnn module on the GPU (and back to the CPU): the same
    outputs as the CPU torch module (float32; no TF32 in the fused kernels' float32 path)."""
    ours_cls, torch_cls = pair
    theirs = torch_cls(16, 64, num_layers=2, batch_first=True)
    ours = ours_cls(16, 64, num_layers=2, batch_first=True, device="cuda")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 30, 16)
    expected = theirs(x)[0]
    # float32 without TF32: the GPU kernels differ from torch's CPU op only in summation order
    assert norm_error(ours(x.cuda())[0].cpu(), expected) < 1e-5
    assert (ours.cpu()(x)[0] - expected).abs().max() < 1e-5
    theirs.load_state_dict(ours.cuda().state_dict())
    with pytest.raises(RuntimeError, match=r"hx \(h_0\): expected device cuda:0 \(the input's\), got cpu"):
        ours(x.cuda(), _state(ours, (2, 4, 64), torch.float32))


# --- scripting and tracing --------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [fnn.LSTM(3, 4), fnn.SLSTM(3, 4), fnn.GRUCell(3, 4)], ids=str)
def test_script_refused_with_pointer(module):
    model = torch.nn.Sequential(torch.nn.Identity(), module)
    with pytest.raises(RuntimeError, match=r"torch.jit.script cannot compile fusedrnn.nn.* use torch.compile"):
        torch.jit.script(model)


def test_trace_works():
    module = fnn.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation warning
        traced = torch.jit.trace(module, (x,))
    other = torch.randn(9, 2, 3)
    _close(traced(other)[0], module(other)[0], 1e-6)


# --- cells ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", CELL_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_like_torch(pair, backend, bias):
    """Parameters, state_dict both ways, a step with and without hx, unbatched, gradients: torch's cell."""
    ours_cls, torch_cls = pair
    theirs = torch_cls(3, 5, bias, dtype=torch.float64)
    ours = ours_cls(3, 5, bias, dtype=torch.float64, backend=backend)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    _close(ours(x), theirs(x))
    hx = tuple(torch.randn(4, 5, dtype=torch.float64, requires_grad=True) for _ in _tuple(theirs(x)))
    hx_arg = hx if len(hx) > 1 else hx[0]
    out_o, out_t = ours(x, hx_arg), theirs(x, hx_arg)
    _close(out_o, out_t)
    weights = [torch.randn_like(t) for t in _tuple(out_t)]
    loss = lambda outs: sum((o * w).sum() for o, w in zip(_tuple(outs), weights))
    g_o = torch.autograd.grad(loss(out_o), [x, *hx, *ours.parameters()])
    g_t = torch.autograd.grad(loss(out_t), [x, *hx, *theirs.parameters()])
    _close(tuple(g_o), tuple(g_t))
    unbatched = tuple(h[0] for h in hx)
    _close(
        ours(x[0], unbatched if len(hx) > 1 else unbatched[0]), theirs(x[0], unbatched if len(hx) > 1 else unbatched[0])
    )
    _close(ours(x[:0]), theirs(x[:0]))  # B = 0
    theirs.load_state_dict(ours.state_dict())


@pytest.mark.parametrize("pair", CELL_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_input_size_zero_like_torch(pair, backend):
    ours_cls, torch_cls = pair
    theirs, ours = torch_cls(0, 4, dtype=torch.float64), ours_cls(0, 4, dtype=torch.float64, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 0, dtype=torch.float64)
    hx = tuple(torch.randn(2, 4, dtype=torch.float64) for _ in _tuple(theirs(x)))
    _close(ours(x, hx if len(hx) > 1 else hx[0]), theirs(x, hx if len(hx) > 1 else hx[0]))


@pytest.mark.parametrize("pair", CELL_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.randn(2, 2, 3, dtype=torch.float64)), r"input: expected a 2-d tensor \[B, I\] or a 1-d"),
        (lambda m: m(torch.randn(2, 4, dtype=torch.float64)), r"input: expected 3 features \(input_size\)"),
        (lambda m: m(torch.randn(2, 3)), r"input: expected dtype torch.float64 \(the parameters'\)"),
        (
            lambda m: m(torch.randn(2, 3, dtype=torch.float64), _cell_state(m, (3, 5))),
            r"hx \(h\): expected shape \(2, 5\)",
        ),
        (
            lambda m: m(torch.randn(2, 3, dtype=torch.float64), _cell_state(m, (2, 6))),
            r"hx \(h\): expected shape \(2, 5\)",
        ),
    ],
)
def test_cell_errors_like_torch(pair, call, match):
    ours_cls, torch_cls = pair
    ours, theirs = ours_cls(3, 5, dtype=torch.float64), torch_cls(3, 5, dtype=torch.float64)
    error = _raises_like_torch(lambda: call(ours), lambda: call(theirs))
    assert __import__("re").search(match, str(error)), str(error)


def _cell_state(module, shape):
    parts = tuple(
        torch.zeros(shape, dtype=torch.float64)
        for _ in range(2 if isinstance(module, (fnn.LSTMCell, torch.nn.LSTMCell)) else 1)
    )
    return parts if len(parts) > 1 else parts[0]


@pytest.mark.gpu
@pytest.mark.parametrize("pair", CELL_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", ["auto", "triton", "cuda"])
def test_cell_gpu_backends(pair, backend):
    """A cell's step on the GPU through a fused backend (bf16) against torch's cell in float64 on the same
    rounded weights and inputs: bf16 rounds h as the product's operand and the outputs once (2^-8)."""
    ours_cls, torch_cls = pair
    ours = ours_cls(32, 64, device="cuda", dtype=torch.bfloat16, backend=backend)
    theirs = torch_cls(32, 64, dtype=torch.float64)
    theirs.load_state_dict({name: value.double().cpu() for name, value in ours.state_dict().items()})
    x = torch.randn(8, 32, device="cuda", dtype=torch.bfloat16)
    hx = tuple(torch.randn(8, 64, device="cuda", dtype=torch.bfloat16) for _ in _tuple(theirs(x.double().cpu())))
    hx_arg = hx if len(hx) > 1 else hx[0]
    got = ours(x, hx_arg)
    expected = theirs(x.double().cpu(), tuple(h.double().cpu() for h in hx) if len(hx) > 1 else hx[0].double().cpu())
    for g, e in zip(_tuple(got), _tuple(expected)):
        assert g.dtype == torch.bfloat16 and norm_error(g.cpu(), e) < 2e-2


@pytest.mark.parametrize("ours_cls", [fnn.LSTMCell, fnn.GRUCell, fnn.RNNCell])
def test_multi_head_cell_is_one_step_of_the_layer(ours_cls):
    """A multi-head cell computes the layer's first step (same parameters), on both CPU paths."""
    layer_cls = {fnn.LSTMCell: fnn.LSTM, fnn.GRUCell: fnn.GRU, fnn.RNNCell: fnn.RNN}[ours_cls]
    layer = layer_cls(3, 8, num_heads=4, dtype=torch.float64, backend="reference")
    x = torch.randn(2, 3, dtype=torch.float64)
    hx = tuple(torch.randn(2, 8, dtype=torch.float64) for _ in range(2 if ours_cls is fnn.LSTMCell else 1))
    out, state = layer(x.unsqueeze(0), tuple(h.unsqueeze(0) for h in hx) if len(hx) > 1 else hx[0].unsqueeze(0))
    for backend in BACKENDS:
        cell = ours_cls(3, 8, num_heads=4, dtype=torch.float64, backend=backend)
        cell.load_state_dict({name[:-3]: value for name, value in layer.state_dict().items()})
        got = cell(x, hx if len(hx) > 1 else hx[0])
        _close(got, tuple(s[0] for s in _tuple(state)), 1e-12)


# --- the CPU path does torch's work -----------------------------------------------------------------------


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_one_head_cpu_runs_torchs_ops(pair, bidirectional):
    """With one head on the CPU a training step (forward and backward) dispatches the aten ops torch.nn's
    does, no more: the speed of torch.nn by construction, whatever a benchmark on a loaded machine shows.
    Only the zero initial state is made differently (one new_zeros shared by h and c)."""
    ours, theirs = _pair(pair, num_layers=2, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    counts = []
    for module in (ours, theirs):
        with _RecordOps() as recorder:
            module(x)[0].sum().backward()
        counts.append(recorder.ops)
    ours_ops, torch_ops = counts
    assert ours_ops.pop("new_zeros") == 1 and torch_ops.pop("zeros") >= 1
    assert ours_ops == torch_ops
