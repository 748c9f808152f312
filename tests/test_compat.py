"""fusedrnn.compat.flashrnn against the published flashrnn package's vanilla backend, on the CPU.

Every comparison runs both on the same fresh random inputs in flashrnn's layout and compares both
outputs (all states per step, final states) and the gradients of a random linear function of them with
respect to Wx, R, b and states.
"""

from types import SimpleNamespace

import pytest
import torch

import fusedrnn
from fusedrnn import compat
from fusedrnn.compat import _flashrnn, flashrnn

from .helpers import max_error

FUNCTIONS = ["lstm", "gru", "elman", "slstm"]
# flashrnn's gate and state counts: (Wx gates, R gates, b gates, states)
SIZES = {"lstm": (4, 4, 4, 2), "gru": (3, 3, 4, 1), "elman": (1, 1, 1, 1), "slstm": (4, 4, 4, 4)}
DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32"}

# max_error (absolute for values of order one, relative to the largest element otherwise) between our
# result and flashrnn vanilla's. Both evaluate the same formulas in the inputs' dtype; they differ only in
# the order of the D-term sums in R h (einsum here, bmm there) and of autograd's sums over B and T for
# dR, db. float64: 2^-53 = 1.1e-16 per operation, grown over T = 7 steps and D-term sums, measured
# <= 1.1e-15; 1e-10 leaves room for any other seed. float32: 2^-24 = 6e-8 per operation, measured
# <= 4e-7 (sLSTM and LSTM gradients); 1e-5 is 25x that and still 100x below any layout or gate-order
# mistake (those give errors of order one).
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture
def flashrnn_package():
    return pytest.importorskip("flashrnn")


def _problem(function, B, T, NH, D, dtype=torch.float64, with_state=True):
    """Wx, R, b, states in flashrnn's default layouts and gate orders."""
    Gx, Gr, Gb, S = SIZES[function]
    Wx = torch.randn(B, T, Gx, NH, D, dtype=torch.float64)
    R = torch.randn(Gr, NH, D, D, dtype=torch.float64) / D**0.5
    b = torch.randn(Gb, NH, D, dtype=torch.float64) * 0.5
    states = None
    if with_state:
        states = torch.randn(S, B, 1, NH, D, dtype=torch.float64)
        if function == "slstm":
            states[2] = states[2].abs() + 1.0  # n >= 1 as after any step (fresh states: see the quirk test)
    return [t.to(dtype) if t is not None else None for t in (Wx, R, b, states)]


def _run(fn, inputs, seed):
    """Both outputs and the gradients of <all, d_all> + <last, d_last> for every given input."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    all_states, last = fn(*leaves)
    generator = torch.Generator().manual_seed(seed)
    d_all = torch.randn(all_states.shape, generator=generator, dtype=all_states.dtype)
    d_last = torch.randn(last.shape, generator=generator, dtype=last.dtype)
    given = [t for t in leaves if t is not None]
    grads = torch.autograd.grad((all_states * d_all).sum() + (last * d_last).sum(), given)
    return all_states.detach(), last.detach(), grads


def _assert_same(got, expected, tol):
    names = ["all states", "final states", "dWx", "dR", "db", "dstates"]
    (all_got, last_got, grads_got), (all_exp, last_exp, grads_exp) = got, expected
    pairs = [(all_got, all_exp), (last_got, last_exp), *zip(grads_got, grads_exp)]
    for name, (a, e) in zip(names, pairs):
        assert a.shape == e.shape and a.dtype == e.dtype, (name, a.shape, e.shape, a.dtype, e.dtype)
    errors = {name: max_error(a, e) for name, (a, e) in zip(names, pairs)}
    bad = {name: error for name, error in errors.items() if not error <= tol}  # "not <=" catches NaN
    assert not bad, f"over {tol}: {bad} (all: {errors})"


@pytest.mark.parametrize("with_state", [False, True], ids=["no_states", "states"])
@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("B,T,NH,D", [(3, 7, 2, 5), (1, 1, 1, 8), (2, 5, 3, 4)])
def test_equals_flashrnn_vanilla(flashrnn_package, function, dtype, with_state, B, T, NH, D):
    inputs = _problem(function, B, T, NH, D, dtype, with_state)
    kwargs = dict(function=function, dtype=DTYPE_NAMES[dtype])
    seed = int(torch.randint(2**31, ()))
    got = _run(lambda *a: flashrnn(*a, backend="vanilla", **kwargs), inputs, seed)
    expected = _run(lambda *a: flashrnn_package.flashrnn(*a, backend="vanilla", **kwargs), inputs, seed)
    assert got[0].shape == (SIZES[function][3], B, T, NH, D) and got[1].shape == (SIZES[function][3], B, 1, NH, D)
    _assert_same(got, expected, TOL[dtype])


@pytest.mark.parametrize("backend", sorted(compat.BACKENDS))
@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_flashrnn_backend_name_computes_the_same(flashrnn_package, function, backend):
    """On the CPU every backend name runs the reference, for every function (flashrnn's own
    vanilla_fwbw and triton_fused have no GRU or Elman)."""
    inputs = _problem(function, 2, 4, 2, 3)
    seed = int(torch.randint(2**31, ()))
    got = _run(lambda *a: flashrnn(*a, function=function, backend=backend), inputs, seed)
    expected = _run(lambda *a: flashrnn_package.flashrnn(*a, function=function, backend="vanilla"), inputs, seed)
    _assert_same(got, expected, TOL[torch.float64])


def test_backend_names_map_to_ours_on_the_cpu(monkeypatch):
    chosen = []

    def recording_rnn(*args, backend, **kwargs):
        chosen.append(backend)
        return fusedrnn.rnn(*args, backend=backend, **kwargs)

    monkeypatch.setattr(_flashrnn, "rnn", recording_rnn)
    # float32: the alternating backend could run it in Triton's interpreter, but is never picked on the CPU
    inputs = _problem("lstm", 2, 3, 1, 4, dtype=torch.float32)
    for backend in compat.BACKENDS:
        flashrnn(*inputs, function="lstm", backend=backend)
    expected = {
        "vanilla": "reference",
        "vanilla_fwbw": "reference",
        "cuda": "auto",
        "cuda_fused": "auto",
        "triton_fused": "auto",
    }
    assert dict(zip(compat.BACKENDS, chosen)) == expected


@pytest.mark.gpu
def test_cuda_backend_runs_alternating_on_a_gpu(monkeypatch):
    if "alternating" not in fusedrnn.backend_names():
        pytest.skip("the alternating backend needs triton")
    chosen = []

    def recording_rnn(*args, backend, **kwargs):
        chosen.append(backend)
        return fusedrnn.rnn(*args, backend=backend, **kwargs)

    monkeypatch.setattr(_flashrnn, "rnn", recording_rnn)
    inputs = [t.cuda() for t in _problem("gru", 3, 7, 2, 16, dtype=torch.float32)]
    all_states, last = flashrnn(*inputs, function="gru", backend="cuda")
    expected_all, expected_last = flashrnn(*inputs, function="gru", backend="vanilla")
    assert chosen[0] == "alternating"
    assert max_error(all_states, expected_all) <= 2e-5 and max_error(last, expected_last) <= 2e-5


def test_config_layouts_and_initial_val(flashrnn_package):
    """A FlashRNNConfig with non-default layouts and initial values replaces function / backend / dtype."""
    B, T, NH, D = 3, 6, 2, 5
    config = flashrnn_package.FlashRNNConfig(
        function="slstm",
        backend="vanilla",
        num_heads=NH,
        head_dim=D,
        dtype="float64",
        input_shape="TBGHD",
        recurrent_shape="HPGD",
        bias_shape="HDG",
        output_shape="STBHD",
        initial_val=[0.5, -0.3, 0.0, 0.2],
    )
    Wx, R, b, _ = _problem("slstm", B, T, NH, D, with_state=False)
    inputs = [Wx.permute(1, 0, 2, 3, 4), R.permute(1, 3, 0, 2), b.permute(1, 2, 0), None]
    seed = int(torch.randint(2**31, ()))
    # arguments the config replaces are set to other values: the config must win
    got = _run(lambda *a: flashrnn(*a, function="gru", backend="cuda", config=config), inputs, seed)
    expected = _run(lambda *a: flashrnn_package.flashrnn(*a, config=config), inputs, seed)
    assert got[0].shape == (4, T, B, NH, D)
    _assert_same(got, expected, TOL[torch.float64])

    states = torch.randn(4, 1, B, NH, D, dtype=torch.float64)  # STBHD
    states[2] = states[2].abs() + 1.0
    got = _run(lambda *a: flashrnn(*a, config=config), inputs[:3] + [states], seed)
    expected = _run(lambda *a: flashrnn_package.flashrnn(*a, config=config), inputs[:3] + [states], seed)
    _assert_same(got, expected, TOL[torch.float64])


def test_states_reads_index_zero_of_its_time_axis(flashrnn_package):
    """flashrnn accepts states with any length of the T axis and reads index 0; so do we."""
    Wx, R, b, _ = _problem("lstm", 2, 4, 1, 3, with_state=False)
    states = torch.randn(2, 2, 3, 1, 3, dtype=torch.float64)
    got = flashrnn(Wx, R, b, states, function="lstm", backend="vanilla")
    expected = flashrnn_package.flashrnn(Wx, R, b, states, function="lstm", backend="vanilla")
    assert all(max_error(g, e) <= 1e-12 for g, e in zip(got, expected))
    short = flashrnn(Wx, R, b, states[:, :, :1], function="lstm", backend="vanilla")
    assert all(torch.equal(g, s) for g, s in zip(got, short))


@pytest.mark.parametrize("function", ["lstm", "gru"])
def test_no_steps(flashrnn_package, function):
    Wx, R, b, states = _problem(function, 2, 0, 2, 3)
    got = flashrnn(Wx, R, b, states, function=function, backend="vanilla")
    expected = flashrnn_package.flashrnn(Wx, R, b, states, function=function, backend="vanilla")
    assert [t.shape for t in got] == [t.shape for t in expected]
    assert torch.equal(got[1], expected[1])


def test_slstm_fresh_states_are_per_element(flashrnn_package):
    """Quirk of flashrnn's vanilla backend: it takes sLSTM's fresh-state branch (m' = i~) only when n == 0
    in the whole batch. We decide per element, as its CUDA kernels do: a batch that mixes fresh and used
    states equals flashrnn vanilla run on each batch row alone."""
    Wx, R, b, states = _problem("slstm", 4, 5, 2, 3)
    states[1:, [0, 2]] = 0.0  # rows 0 and 2 fresh: c = n = m = 0
    got = flashrnn(Wx, R, b, states, function="slstm", backend="vanilla")
    rows = [
        flashrnn_package.flashrnn(Wx[i : i + 1], R, b, states[:, i : i + 1], function="slstm", backend="vanilla")
        for i in range(4)
    ]
    for k in range(2):
        assert max_error(got[k], torch.cat([row[k] for row in rows], dim=1)) <= 1e-12
    batched = flashrnn_package.flashrnn(Wx, R, b, states, function="slstm", backend="vanilla")
    assert max_error(got[0], batched[0]) > 1e-3  # flashrnn vanilla treats the fresh rows as used


def test_bfloat16_follows_the_inputs_dtype():
    """dtype is accepted and not used: 16-bit inputs are computed in float32 and returned in their dtype."""
    inputs = _problem("lstm", 2, 5, 2, 4, dtype=torch.bfloat16)
    all_states, last = flashrnn(*inputs, function="lstm", backend="vanilla", dtype="float32")
    assert all_states.dtype == last.dtype == torch.bfloat16
    all_f32, last_f32 = flashrnn(*(t.float() for t in inputs), function="lstm", backend="vanilla")
    # bfloat16 output rounding (2^-8 relative) plus c recomputed from the rounded h
    assert max_error(all_states, all_f32) <= 2e-2 and max_error(last, last_f32) <= 2e-2


def test_public_names():
    assert fusedrnn.compat is compat
    assert sorted(compat.FUNCTIONS) == sorted(fusedrnn.cell_names())


_ERROR_CASES = [
    # (id, arguments changed from a valid GRU call, error, message)
    (
        "unknown_function",
        dict(function="mlstm"),
        ValueError,
        r"function: expected one of \['elman', 'gru', 'lstm', 'slstm'\], got 'mlstm'",
    ),
    ("function_case", dict(function="LSTM"), ValueError, r"function: expected one of .* got 'LSTM'"),
    (
        "unknown_backend",
        dict(backend="cudnn"),
        ValueError,
        r"backend: expected one of \['cuda', 'cuda_fused', 'triton_fused', 'vanilla', 'vanilla_fwbw'\] .*got 'cudnn'",
    ),
    ("our_backend_name", dict(backend="reference"), ValueError, r"backend: expected one of .*got 'reference'"),
    (
        "unknown_dtype",
        dict(dtype="float8"),
        ValueError,
        r"dtype: expected one of \['bfloat16', 'float16', 'float32', 'float64'\] or None, got 'float8'",
    ),
    (
        "Wx_rank",
        dict(Wx=torch.zeros(3, 4, 3, 10)),
        ValueError,
        r"Wx: expected a 5-d tensor \[B, T, G, H, D\], got shape \(3, 4, 3, 10\)",
    ),
    (
        "Wx_gates",
        dict(Wx=torch.zeros(3, 4, 4, 2, 5, dtype=torch.float64)),
        ValueError,
        r"Wx: expected shape \(3, 4, 3, 2, 5\) \[B, T, G, H, D\] \('gru' has 3 input gates\), got \(3, 4, 4, 2, 5\)",
    ),
    ("Wx_not_tensor", dict(Wx=[[1.0]]), TypeError, r"Wx: expected a torch.Tensor \[B, T, G, H, D\], got list"),
    (
        "R_gates",
        dict(R=torch.zeros(4, 2, 5, 5, dtype=torch.float64)),
        ValueError,
        r"R: expected shape \(3, 2, 5, 5\) \[G, H, D, P\] \('gru' has 3 recurrent gates; H and D of Wx\), got \(4, 2, 5, 5\)",
    ),
    (
        "R_not_square",
        dict(R=torch.zeros(3, 2, 5, 4, dtype=torch.float64)),
        ValueError,
        r"R: expected shape \(3, 2, 5, 5\)",
    ),
    (
        "b_gates",
        dict(b=torch.zeros(3, 2, 5, dtype=torch.float64)),
        ValueError,
        r"b: expected shape \(4, 2, 5\) \[G, H, D\] \('gru' has 4 bias gates",
    ),
    (
        "states_rank",
        dict(states=torch.zeros(1, 3, 2, 5, dtype=torch.float64)),
        ValueError,
        r"states: expected a 5-d tensor \[S, B, T, H, D\], got shape \(1, 3, 2, 5\)",
    ),
    (
        "states_count",
        dict(states=torch.zeros(2, 3, 1, 2, 5, dtype=torch.float64)),
        ValueError,
        r"states: expected shape \(1, 3, 1, 2, 5\) \[S, B, T, H, D\] \('gru' has 1 states",
    ),
    (
        "states_no_time",
        dict(states=torch.zeros(1, 3, 0, 2, 5, dtype=torch.float64)),
        ValueError,
        r"states: expected at least one entry on axis T of SBTHD, got shape \(1, 3, 0, 2, 5\)",
    ),
    (
        "R_dtype",
        dict(R=torch.zeros(3, 2, 5, 5)),
        TypeError,
        r"R: expected dtype torch.float64 \(the dtype of Wx\), got torch.float32",
    ),
    (
        "states_dtype",
        dict(states=torch.zeros(1, 3, 1, 2, 5)),
        TypeError,
        r"states: expected dtype torch.float64 \(the dtype of Wx\), got torch.float32",
    ),
    (
        "config_clipval",
        dict(config=SimpleNamespace(function="gru", backend="vanilla", gradient_recurrent_clipval=1.0)),
        ValueError,
        r"config.gradient_recurrent_clipval: only None is supported .* got 1.0",
    ),
    (
        "config_cut",
        dict(config=SimpleNamespace(function="gru", backend="vanilla", gradient_recurrent_cut=True)),
        ValueError,
        r"config.gradient_recurrent_cut: only False is supported",
    ),
    (
        "config_forward_clip",
        dict(config=SimpleNamespace(function="gru", backend="vanilla", forward_clipval=3.0)),
        ValueError,
        r"config.forward_clipval: only None",
    ),
    (
        "config_constants",
        dict(config=SimpleNamespace(function="gru", backend="vanilla", constants={"eps": 1e-6})),
        ValueError,
        r"config.constants: only \{\} is supported",
    ),
    (
        "config_layout",
        dict(config=SimpleNamespace(function="gru", backend="vanilla", input_shape="BTGH")),
        ValueError,
        r"config.input_shape: expected a permutation of 'BTGHD', got 'BTGH'",
    ),
    (
        "config_num_heads",
        dict(config=SimpleNamespace(function="gru", backend="vanilla", num_heads=4)),
        ValueError,
        r"config.num_heads: expected 2 \(from Wx's shape\) or unset, got 4",
    ),
    (
        "config_initial_val",
        dict(config=SimpleNamespace(function="gru", backend="vanilla", initial_val=[1.0, 2.0]), states=None),
        ValueError,
        r"config.initial_val: expected one value or 1 \(one per state \('h',\)\), got 2",
    ),
    (
        "config_function",
        dict(config=SimpleNamespace(function="rnn", backend="vanilla")),
        ValueError,
        r"function: expected one of .* got 'rnn'",
    ),
]


@pytest.mark.parametrize(
    "change, error, match", [case[1:] for case in _ERROR_CASES], ids=[case[0] for case in _ERROR_CASES]
)
def test_errors(change, error, match):
    Wx, R, b, states = _problem("gru", 3, 4, 2, 5)
    args = dict(Wx=Wx, R=R, b=b, states=states, function="gru", backend="vanilla", dtype="float64")
    args.update(change)
    with pytest.raises(error, match=match):
        flashrnn(**args)


# --- the calls tirex-2 (TiRex's successor) makes through flashrnn -------------------------------------------------
# Its sLSTM layers keep R as [NH, D_in, G, D_out] ("HPGD") and b as [NH, G, D] ("HGD") and pass a FlashRNNConfig;
# a full sequence per call, the reverse direction by flipping the input in time, and one call per token (states
# carried) for single-step updates.


def _tirex2_problem(B, T, NH, D, dtype=torch.float32):
    config = SimpleNamespace(
        function="slstm", backend="vanilla", recurrent_shape="HPGD", bias_shape="HGD", num_heads=NH, head_dim=D
    )
    Wx = torch.randn(B, T, 4, NH, D, dtype=dtype)
    R = (torch.randn(NH, D, 4, D) / D**0.5).to(dtype)
    b = (torch.randn(NH, 4, D) * 0.5).to(dtype)
    return config, Wx, R, b


def test_tirex2_single_steps_equal_one_call():
    B, T, NH, D = 3, 6, 2, 8
    config, Wx, R, b = _tirex2_problem(B, T, NH, D)
    all_states, last = flashrnn(Wx, R, b, None, config=config)
    states = torch.zeros(4, B, 1, NH, D)  # tirex-2's zero_state
    hs = []
    for t in range(T):
        y, states = flashrnn(Wx[:, t : t + 1], R, b, states, config=config)
        assert y.shape == (4, B, 1, NH, D) and states.shape == (4, B, 1, NH, D)
        hs.append(y[0])
    assert max_error(torch.cat(hs, dim=1), all_states[0]) <= TOL[torch.float32]
    assert max_error(states, last) <= TOL[torch.float32]


def test_tirex2_call_patterns_equal_flashrnn(flashrnn_package):
    """Each pattern (one call, flipped input, one call per step) against the flashrnn package doing the same."""
    B, T, NH, D = 2, 5, 2, 8
    _, Wx, R, b = _tirex2_problem(B, T, NH, D)
    # the config tirex-2 builds (its defaults: "cuda_fused", bfloat16; vanilla and float32 to run on the CPU)
    config = flashrnn_package.FlashRNNConfig(
        hidden_dim=NH * D,
        num_heads=NH,
        head_dim=D,
        backend="vanilla",
        function="slstm",
        recurrent_shape="HPGD",
        bias_shape="HGD",
        dtype="float32",
        enable_automatic_mixed_precision=True,
    )
    flipped = torch.flip(Wx, dims=(1,)).contiguous()
    ours, theirs = (
        [f(x, R, b, None, config=config) for x in (Wx, flipped)] for f in (flashrnn, flashrnn_package.flashrnn)
    )
    for (all_ours, last_ours), (all_theirs, last_theirs) in zip(ours, theirs):
        assert max_error(all_ours, all_theirs) <= TOL[torch.float32]
        assert max_error(last_ours, last_theirs) <= TOL[torch.float32]
    state = torch.zeros(4, B, 1, NH, D)
    ours_step, theirs_step = state, state
    for t in range(T):
        y_ours, ours_step = flashrnn(Wx[:, t : t + 1], R, b, ours_step, config=config)
        y_theirs, theirs_step = flashrnn_package.flashrnn(Wx[:, t : t + 1], R, b, theirs_step, config=config)
        assert max_error(y_ours, y_theirs) <= TOL[torch.float32]


def test_one_step_calls_recompute_nothing(monkeypatch):
    """A one-step call returns its final states as the state sequence: no recomputation from h."""
    monkeypatch.setattr(_flashrnn, "_state_sequence", None)  # calling it would raise TypeError
    config, Wx, R, b = _tirex2_problem(2, 1, 2, 8)
    all_states, last = flashrnn(Wx, R, b, torch.zeros(4, 2, 1, 2, 8), config=config)
    assert torch.equal(all_states, last)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter case runs where there is no GPU")
@pytest.mark.parametrize("function", ["lstm", "slstm"])
def test_inference_takes_the_states_from_the_fused_kernel(monkeypatch, function):
    """Without a gradient, a fused backend's call takes every state at every step from what its kernel saves
    (Triton's interpreter here); they equal the reference's recomputation."""
    inputs = _problem(function, 3, 6, 2, 16, dtype=torch.float32)
    with torch.no_grad():
        expected = flashrnn(*inputs, function=function, backend="vanilla")
        monkeypatch.setattr(_flashrnn, "_resolve_backend", lambda backend, call: "triton")
        monkeypatch.setattr(_flashrnn, "_state_sequence", None)  # the kernel's states, not a recomputation
        got = flashrnn(*inputs, function=function, backend="triton_fused")
    for a, e in zip(got, expected):
        assert a.shape == e.shape and max_error(a, e) <= TOL[torch.float32]
