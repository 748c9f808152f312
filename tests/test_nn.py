"""fusedrnn.nn layers: parity with torch.nn (float64, CPU; 16-bit on the GPU), packed and variable-length
batches, streaming, step mode, multi-head layout, conversion and errors."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedrnn
import fusedrnn.nn as fnn

from .helpers import norm_error

PAIRS = [(fnn.LSTM, torch.nn.LSTM), (fnn.GRU, torch.nn.GRU), (fnn.RNN, torch.nn.RNN)]
PAIR_IDS = ["lstm", "gru", "rnn"]
ALL_MODULES = [fnn.LSTM, fnn.GRU, fnn.RNN, fnn.SLSTM]
# on the CPU "auto" runs torch's own RNN ops for LSTM / GRU / RNN, "reference" fusedrnn's step loop
BACKENDS = ["auto", "reference"]


def _tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _random_state(num_states, layers_dirs, B, H, dtype=torch.float64, device="cpu"):
    parts = [torch.randn(layers_dirs, B, H, dtype=dtype, device=device) for _ in range(num_states)]
    if num_states == 4:  # sLSTM (h, c, n, m): n >= 1 as after any step
        parts[2] = parts[2].abs() + 1
    parts = [p.requires_grad_() for p in parts]
    return parts[0] if num_states == 1 else tuple(parts)


def _grads(outputs, leaves):
    """Gradients of a fixed random projection of all outputs (same weights for both sides)."""
    generator = torch.Generator().manual_seed(7)
    total = 0
    for out in outputs:
        weight = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.device)
        total = total + (out.double() * weight).sum()
    return torch.autograd.grad(total, leaves, allow_unused=True, retain_graph=True)


def _assert_close(got, expected, tol, what):
    for i, (g, e) in enumerate(zip(got, expected)):
        if e is None:
            assert g is None or not g.abs().any(), f"{what}[{i}]"
            continue
        assert g.numel() == e.numel(), f"{what}[{i}]: {tuple(g.shape)} vs {tuple(e.shape)}"
        err = (g.double().reshape(e.shape) - e.double()).abs().max().item()
        assert err <= tol, f"{what}[{i}]: max |diff| {err} > {tol}"


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (1, True), (3, True)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_with_torch_float64(pair, layers, bidirectional, batch_first, with_state, backend):
    """from_torch gives the torch module's function: outputs, final states and the gradients for the
    input, the initial states and every parameter within 1e-10 (float64; the sums differ only in order)."""
    ours_cls, torch_cls = pair
    theirs = torch_cls(
        5, 6, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, dtype=torch.float64
    )
    ours = ours_cls.from_torch(theirs, backend=backend)
    B, T = 3, 7
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), dtype=torch.float64, requires_grad=True)
    dirs = 2 if bidirectional else 1
    num_states = 2 if ours_cls is fnn.LSTM else 1
    state = _random_state(num_states, layers * dirs, B, 6) if with_state else None
    out_t, st_t = theirs(x, state)
    out_o, st_o = ours(x, state)
    _assert_close([out_o, *_tuple(st_o)], [out_t, *_tuple(st_t)], 1e-10, "forward")
    leaves_t = [x, *list(theirs.parameters())] + (list(_tuple(state)) if with_state else [])
    leaves_o = [x, *list(ours.parameters())] + (list(_tuple(state)) if with_state else [])
    _assert_close(_grads([out_o, *_tuple(st_o)], leaves_o), _grads([out_t, *_tuple(st_t)], leaves_t), 1e-10, "grads")


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_sequence_parity_float64(pair, enforce_sorted, bidirectional, backend):
    ours_cls, torch_cls = pair
    theirs = torch_cls(4, 5, num_layers=2, bidirectional=bidirectional, dtype=torch.float64)
    ours = ours_cls.from_torch(theirs, backend=backend)
    lengths = torch.tensor([6, 6, 3, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 5])
    x = torch.randn(6, 4, 4, dtype=torch.float64, requires_grad=True)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out_t, st_t = theirs(packed)
    out_o, st_o = ours(packed)
    assert torch.equal(out_o.batch_sizes, out_t.batch_sizes)
    assert (out_o.sorted_indices is None) == (out_t.sorted_indices is None)
    _assert_close([out_o.data, *_tuple(st_o)], [out_t.data, *_tuple(st_t)], 1e-10, "forward")
    leaves_o, leaves_t = [x, *ours.parameters()], [x, *theirs.parameters()]
    _assert_close(
        _grads([out_o.data, *_tuple(st_o)], leaves_o), _grads([out_t.data, *_tuple(st_t)], leaves_t), 1e-10, "grads"
    )


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_equal_torch_packed(pair, backend):
    """forward(x, lengths=...) on a padded batch: torch's packed results, zeros past each length."""
    ours_cls, torch_cls = pair
    theirs = torch_cls(4, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    ours = ours_cls.from_torch(theirs, backend=backend)
    lengths = torch.tensor([2, 7, 5])
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    out_t, st_t = theirs(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    padded_t, _ = pad_packed_sequence(out_t, batch_first=True, total_length=7)
    out_o, st_o = ours(x, lengths=lengths)
    _assert_close([out_o, *_tuple(st_o)], [padded_t, *_tuple(st_t)], 1e-10, "forward")
    for row, length in enumerate(lengths.tolist()):
        assert (out_o[row, length:] == 0).all()


@pytest.mark.parametrize("module_cls", ALL_MODULES)
def test_streaming_two_calls_equal_one(module_cls):
    """One call on 2L steps equals two calls on L steps, the second fed the first's final states:
    outputs, final states and every gradient (truncated BPTT without the truncation)."""
    module = module_cls(3, 8, num_layers=2, num_heads=2, dtype=torch.float64)
    x = torch.randn(10, 2, 3, dtype=torch.float64, requires_grad=True)
    out_full, st_full = module(x)
    out_a, st_a = module(x[:5])
    out_b, st_b = module(x[5:], st_a)
    _assert_close([torch.cat([out_a, out_b]), *_tuple(st_b)], [out_full, *_tuple(st_full)], 1e-12, "forward")
    leaves = [x, *module.parameters()]
    got = _grads([torch.cat([out_a, out_b]), *_tuple(st_b)], leaves)
    _assert_close(got, _grads([out_full, *_tuple(st_full)], leaves), 1e-12, "grads")


@pytest.mark.parametrize("module_cls", ALL_MODULES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_step_equals_forward(module_cls, batch_first):
    module = module_cls(3, 8, num_layers=2, num_heads=4, batch_first=batch_first, dtype=torch.float64)
    x = torch.randn(2, 6, 3, dtype=torch.float64)  # [B, T, I]
    out, final = module(x if batch_first else x.transpose(0, 1))
    state = None
    for t in range(6):
        h, state = module.step(x[:, t], state)
        expected = out[:, t] if batch_first else out[t]
        assert (h - expected).abs().max() < 1e-12
    _assert_close(_tuple(state), _tuple(final), 1e-12, "final state")
    h, _ = module.step(x[0, 0])  # unbatched
    assert h.shape == (8,)


@pytest.mark.parametrize("module_cls", ALL_MODULES)
def test_multi_head_equals_dense_block_diagonal(module_cls):
    """num_heads > 1 is the dense cell with a block-diagonal recurrent matrix: a 1-head module holding
    the heads' blocks (zeros elsewhere) computes the same."""
    NH, D = 3, 2
    heads = module_cls(4, NH * D, num_heads=NH, dtype=torch.float64)
    dense = module_cls(4, NH * D, num_heads=1, dtype=torch.float64)
    with torch.no_grad():
        dense.weight_ih_l0.copy_(heads.weight_ih_l0)
        dense.bias_ih_l0.copy_(heads.bias_ih_l0)
        dense.bias_hh_l0.copy_(heads.bias_hh_l0)
        dense.weight_hh_l0.zero_()
        # weight_hh [G·H, D]: row g·H + n·D + i is head n's row i of gate g
        G = heads.weight_hh_l0.shape[0] // (NH * D)
        blocks = heads.weight_hh_l0.view(G, NH, D, D)
        dense_view = dense.weight_hh_l0.view(G, NH * D, NH * D)
        for n in range(NH):
            dense_view[:, n * D : (n + 1) * D, n * D : (n + 1) * D] = blocks[:, n]
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    for backend in ("auto", "reference"):
        heads.backend = dense.backend = backend
        (out_h, st_h), (out_d, st_d) = heads(x), dense(x)
        _assert_close([out_h, *_tuple(st_h)], [out_d, *_tuple(st_d)], 1e-12, f"forward ({backend})")


def test_slstm_module_is_the_functional_cell():
    """SLSTM wires F.linear(x) into fusedrnn.rnn(cell="slstm") with b = bias_hh: checked against a direct
    functional call, and its gradients by gradcheck (float64)."""
    module = fnn.SLSTM(3, 4, num_heads=2, batch_first=True, dtype=torch.float64)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    out, (h, c, n, m) = module(x)
    gates = torch.nn.functional.linear(x, module.weight_ih_l0, module.bias_ih_l0).view(2, 5, 4, 2, 2)
    R, b = module.weight_hh_l0.view(4, 2, 2, 2), module.bias_hh_l0.view(4, 2, 2)
    y, final = fusedrnn.rnn(gates, R, b, cell="slstm")
    assert torch.equal(out, y.reshape(2, 5, 4))
    assert torch.equal(torch.stack([h[0], c[0], n[0], m[0]]), final.reshape(4, 2, 4))
    assert torch.autograd.gradcheck(lambda inp: module(inp)[0], (x,))


def test_gru_recurrent_bias_stays_inside_the_reset_product():
    """b_hn (torch's bias_hh for n) must be multiplied by r: a GRU with only b_hn nonzero differs from one
    with the same value in b_in, in both torch and fusedrnn."""
    theirs = torch.nn.GRU(2, 3, dtype=torch.float64)
    with torch.no_grad():
        theirs.bias_hh_l0.zero_()
        theirs.bias_hh_l0[6:] = 1.5
    ours = fnn.GRU.from_torch(theirs)
    x = torch.randn(4, 1, 2, dtype=torch.float64)
    assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_from_torch_and_back_is_exact(pair):
    ours_cls, torch_cls = pair
    theirs = torch_cls(3, 4, num_layers=2, bidirectional=True, bias=True, dropout=0.25, batch_first=True)
    back = ours_cls.from_torch(theirs).to_torch()
    assert type(back) is torch_cls
    assert (back.num_layers, back.bidirectional, back.batch_first, back.dropout) == (2, True, True, 0.25)
    for (name, a), (name_b, b) in zip(theirs.named_parameters(), back.named_parameters()):
        assert name == name_b and torch.equal(a, b)


def test_no_bias_modules():
    theirs = torch.nn.LSTM(3, 4, bias=False, dtype=torch.float64)
    ours = fnn.LSTM.from_torch(theirs)
    assert not any("bias" in name for name, _ in ours.named_parameters())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-12, rtol=0)


def test_dropout_between_layers_only_in_training():
    module = fnn.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    module.eval()
    assert torch.equal(module(x)[0], module(x)[0])
    module.train()
    torch.manual_seed(0)
    first = module(x)[0]
    torch.manual_seed(1)
    assert not torch.equal(first, module(x)[0])


def test_autocast_on_cpu():
    """Under torch.autocast the layer runs in the autocast dtype (bf16 on the CPU) and stays close to float32."""
    module = fnn.LSTM(8, 16, num_heads=2, batch_first=True)
    x = torch.randn(2, 12, 8)
    expected, _ = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = module(x)
    assert out.dtype == torch.bfloat16 and h.dtype == torch.bfloat16
    assert norm_error(out.float(), expected) < 2e-2  # bf16 inputs and weights: 2^-8 per rounding
    out.float().sum().backward()
    assert module.weight_hh_l0.grad is not None and module.weight_hh_l0.grad.dtype == torch.float32


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: fnn.LSTM(4, 6, num_heads=4), ValueError, r"num_heads: expected a divisor of hidden_size \(6\), got 4"),
        (lambda: fnn.LSTM(0, 6), ValueError, r"input_size: expected an integer >= 1, got 0"),
        (lambda: fnn.GRU(4, 6, num_layers=0), ValueError, r"num_layers: expected an integer >= 1, got 0"),
        (lambda: fnn.GRU(4, 6, dropout=1.5), ValueError, r"dropout: expected a probability in \[0, 1\], got 1.5"),
        (lambda: fnn.RNN(4, 6, nonlinearity="relu"), ValueError, r"nonlinearity: expected 'tanh'"),
        (lambda: fnn.LSTM(4, 6, backend=3), TypeError, r"backend: expected a backend name"),
        (
            lambda: fnn.LSTM.from_torch(torch.nn.GRU(2, 3)),
            TypeError,
            r"module: expected torch.nn.LSTM for LSTM, got GRU",
        ),
        (
            lambda: fnn.LSTM.from_torch(torch.nn.LSTM(2, 3, proj_size=2)),
            NotImplementedError,
            r"proj_size: LSTM projections are not supported \(got 2\)",
        ),
        (
            lambda: fnn.RNN.from_torch(torch.nn.RNN(2, 3, nonlinearity="relu")),
            ValueError,
            r"expected nonlinearity 'tanh'",
        ),
        (lambda: fnn.LSTM(4, 6, num_heads=2).to_torch(), ValueError, r"num_heads: to_torch needs 1"),
        (lambda: fnn.SLSTM(4, 6).to_torch(), TypeError, r"SLSTM has no torch.nn equivalent"),
        (lambda: fnn.SLSTM.from_torch(torch.nn.LSTM(2, 3)), TypeError, r"module: expected torch.nn.nothing"),
    ],
)
def test_construction_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda m: m(torch.randn(5, 2, 4)),
            RuntimeError,
            r"input: expected 3 features \(input_size\) on the last axis",
        ),
        (lambda m: m(torch.randn(5)), ValueError, r"input: expected a 3-d tensor \[T, B, I\] or a 2-d unbatched"),
        (lambda m: m([1, 2]), TypeError, r"input: expected a tensor or PackedSequence, got list"),
        (
            lambda m: m(torch.randn(5, 2, 3), torch.randn(1, 2, 4)),
            TypeError,
            r"hx: expected a tuple of 2 tensors \(h, c\)",
        ),
        (
            lambda m: m(torch.randn(5, 2, 3), (torch.randn(2, 2, 4), torch.randn(1, 2, 4))),
            RuntimeError,
            r"hx \(h_0\): expected shape \(1, 2, 4\) \[num_layers \* num_directions, batch, hidden_size\], got \(2, 2, 4\)",
        ),
        (lambda m: m(torch.randn(5, 2, 3), lengths=[5, 6]), ValueError, r"lengths: expected values in 0..5"),
        (
            lambda m: m(pack_padded_sequence(torch.randn(5, 2, 3), [5, 2]), lengths=[5, 2]),
            ValueError,
            r"lengths: must be None when input is a PackedSequence",
        ),
        (
            lambda m: m.step(torch.randn(2, 5, 3)),
            ValueError,
            r"input: expected a tensor \[B, I\] or \[I\] \(one step\)",
        ),
    ],
)
def test_call_errors(call, error, match):
    module = fnn.LSTM(3, 4)
    before = [p.clone() for p in module.parameters()]
    with pytest.raises(error, match=match):
        call(module)
    assert all(torch.equal(p, q) for p, q in zip(module.parameters(), before))


def test_step_refuses_bidirectional():
    with pytest.raises(ValueError, match="step: a bidirectional layer needs the whole sequence"):
        fnn.GRU(3, 4, bidirectional=True).step(torch.randn(2, 3))


def test_repr_and_flatten_parameters():
    module = fnn.GRU(3, 8, num_layers=2, num_heads=2, batch_first=True)
    module.flatten_parameters()
    assert "GRU(3, 8, num_layers=2, batch_first=True, num_heads=2)" == repr(module)


# --- GPU: 16-bit parity with torch.nn (cuDNN) -------------------------------------------------------------

# Normwise relative error of our 16-bit module against the float64 torch module on the same (rounded)
# weights and inputs: bf16 rounds h to 2^-8 as the MMA operand and the outputs once more, fp16 to 2^-11,
# float32 (no TF32) only differs in summation order. Over 2 layers and T = 50 steps.
GPU_NORM_TOL = {torch.bfloat16: 2e-2, torch.float16: 3e-3, torch.float32: 1e-5}


@pytest.mark.gpu
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("hidden,num_layers,bidirectional", [(64, 2, True), (256, 1, False)], ids=str)
def test_parity_with_torch_gpu(pair, dtype, hidden, num_layers, bidirectional):
    ours_cls, torch_cls = pair
    theirs = torch_cls(
        32, hidden, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, device="cuda", dtype=dtype
    )
    ours = ours_cls.from_torch(theirs)
    exact = torch_cls(
        32, hidden, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, dtype=torch.float64
    )
    exact.load_state_dict({k: v.double().cpu() for k, v in theirs.state_dict().items()})
    lengths = torch.tensor([50, 17, 1, 50, 33, 8, 50, 2, 49, 12, 50, 3, 4, 5, 6, 50])
    x = torch.randn(16, 50, 32, device="cuda", dtype=dtype)
    out_e, st_e = exact(pack_padded_sequence(x.double().cpu(), lengths, batch_first=True, enforce_sorted=False))
    out_e, _ = pad_packed_sequence(out_e, batch_first=True, total_length=50)
    out_o, st_o = ours(x, lengths=lengths)
    assert out_o.dtype == dtype
    for got, expected in zip([out_o, *_tuple(st_o)], [out_e, *_tuple(st_e)]):
        assert norm_error(got.cpu(), expected) < GPU_NORM_TOL[dtype]
    # gradients against the float64 module's
    x64 = x.double().cpu().requires_grad_()
    x16 = x.clone().requires_grad_()
    out_e = pad_packed_sequence(
        exact(pack_padded_sequence(x64, lengths, batch_first=True, enforce_sorted=False))[0],
        batch_first=True,
        total_length=50,
    )[0]
    out_o = ours(x16, lengths=lengths)[0]
    g_e = _grads([out_e], [x64, *exact.parameters()])
    g_o = _grads([out_o], [x16, *ours.parameters()])
    for got, expected in zip(g_o, g_e):
        assert got.shape == expected.shape
        assert norm_error(got.cpu(), expected) < 3 * GPU_NORM_TOL[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("module_cls", ALL_MODULES)
@pytest.mark.parametrize("num_heads", [4, 1])
def test_step_in_a_cuda_graph(module_cls, num_heads):
    """module.step captured in a CUDA graph and replayed gives forward's outputs, step after step."""
    module = module_cls(16, 64, num_layers=2, num_heads=num_heads, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(20, 2, 16, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        expected, _ = module(x)
        cell = module.cell
        static_x = x[0].clone()
        static_state = tuple(torch.full((2, 2, 64), v, device="cuda", dtype=torch.bfloat16) for v in cell.initial)
        state_arg = static_state[0] if len(static_state) == 1 else static_state
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: kernels compiled, plans made, outside the capture
            module.step(static_x, state_arg)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_h, static_new = module.step(static_x, state_arg)
        for target, value in zip(static_state, cell.initial):
            target.fill_(value)
        for t in range(20):
            static_x.copy_(x[t])
            graph.replay()
            assert norm_error(static_h.float(), expected[t].float()) < 1e-2, t
            for target, value in zip(static_state, _tuple(static_new)):
                target.copy_(value)


@pytest.mark.parametrize("module_cls", ALL_MODULES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_heads", [1, 2])
def test_empty_batch(module_cls, backend, num_heads):
    """B = 0 gives empty outputs and final states of torch's shapes, as torch.nn does (no reshape of 0 elements)."""
    module = module_cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, num_heads=num_heads, backend=backend)
    for lengths in (None, torch.zeros(0, dtype=torch.int64)):
        out, state = module(torch.randn(0, 5, 3), lengths=lengths)
        assert out.shape == (0, 5, 8)
        assert all(s.shape == (4, 0, 4) for s in _tuple(state))


@pytest.mark.parametrize("module_cls", [fnn.LSTM, fnn.GRUCell])
def test_multi_head_inference_follows_weight_updates(module_cls):
    """Without a graph, multi-head layers keep weight_hh's dense expansion for torch's CPU ops between calls;
    an in-place update, load_state_dict or a dtype change must be seen by the next call."""
    module = module_cls(3, 8, num_heads=4, dtype=torch.float64)
    reference = module_cls(3, 8, num_heads=4, dtype=torch.float64, backend="reference")
    x, h = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)

    def run(m, dtype=torch.float64):
        if module_cls is fnn.GRUCell:
            return (m(x.to(dtype), h.to(dtype)),)
        out, state = m(x.to(dtype))  # unbatched [T, I]: every step but the first reads weight_hh
        return (out, *state)

    with torch.no_grad():
        first = run(module)
        (module.weight_hh if module_cls is fnn.GRUCell else module.weight_hh_l0).mul_(2)
        reference.load_state_dict(module.state_dict())
        assert not torch.allclose(first[0], run(module)[0])
        _assert_close(run(module), run(reference), 1e-12, "after an in-place update")
        module.load_state_dict(module_cls(3, 8, num_heads=4, dtype=torch.float64).state_dict())
        reference.load_state_dict(module.state_dict())
        _assert_close(run(module), run(reference), 1e-12, "after load_state_dict")
        module.float()
        reference.float()
        _assert_close(run(module, torch.float32), run(reference, torch.float32), 1e-5, "after .float()")


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("lengths", [None, [6, 2, 4]], ids=["full", "lengths"])
def test_multi_head_torch_ops_equal_reference(pair, lengths):
    """On the CPU "auto" runs torch's op on the expanded block-diagonal matrix: outputs, final states and the
    gradients of input, initial state and every parameter (weight_hh per head) as the reference's (float64)."""
    kwargs = {"num_layers": 2, "bidirectional": True, "batch_first": True, "num_heads": 3, "dtype": torch.float64}
    auto = pair[0](4, 6, **kwargs)
    reference = pair[0](4, 6, backend="reference", **kwargs)
    reference.load_state_dict(auto.state_dict())
    x = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    state = _random_state(2 if pair[0] is fnn.LSTM else 1, 4, 3, 6)
    results = []
    for module in (auto, reference):
        out, final = module(x, state, lengths=lengths)
        leaves = [x, *_tuple(state), *module.parameters()]
        results.append(([out, *_tuple(final)], _grads([out, *_tuple(final)], leaves)))
    _assert_close(results[0][0], results[1][0], 1e-12, "forward")
    _assert_close(results[0][1], results[1][1], 1e-12, "grads")
