"""Episode resets in ``fusedrnn.rnn(..., resets=)`` and the ``fusedrnn.nn`` layers: every backend against a
reference that cuts each row into episodes in Python and runs each alone from the cell's initial state (y, the
final state and the gradients of x, R, b and the initial state), over reset patterns (none, every step, random,
first step, last step), with and without lengths; the layers' two directions and ``step``; the argument checks."""

from __future__ import annotations

import importlib

import pytest
import torch

import fusedrnn.nn as fnn
from fusedrnn import get_cell, initial_state, rnn

from .helpers import (
    assert_matches_reference,
    max_error,
    problem_with_grads,
    random_problem,
    run_with_grads,
)

CELLS = ["lstm", "gru", "elman", "slstm"]
PATTERNS = ["none", "every", "random", "first", "last"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter cases run where there is no GPU")


def make_resets(pattern: str, B: int, T: int) -> torch.Tensor:
    """resets [B, T] of a pattern: none, every step, random (about one step in three), the first, the last or the
    middle step."""
    resets = torch.zeros(B, T, dtype=torch.bool)
    if pattern == "every":
        resets[:] = True
    elif pattern == "random":
        resets = torch.rand(B, T) < 0.3
    elif pattern == "first":
        resets[:, 0] = True
    elif pattern == "last":
        resets[:, -1] = True
    elif pattern == "middle":  # deterministic: every row, half way
        resets[:, T // 2] = True
    return resets


def episodes(resets_row: torch.Tensor, length: int) -> list[tuple[int, int]]:
    """The [start, end) steps of each episode of one row of ``length`` steps (one empty episode for length 0)."""
    cuts = [t for t in range(1, length) if resets_row[t]]
    bounds = [0, *cuts, length]
    return list(zip(bounds[:-1], bounds[1:]))


def split_rnn(cell, x, R, b, state, resets, lengths=None):
    """The reference of resets: each row cut into episodes, each run alone by the reference backend; the first from
    ``state`` unless step 0 starts an episode, the others from the cell's initial state. Differentiable."""
    B, T, _, NH, D = x.shape
    fresh = initial_state(cell, 1, NH, D, dtype=x.dtype)
    y = x.new_zeros(B, T, NH, D)
    finals = []
    for row in range(B):
        length = T if lengths is None else int(lengths[row])
        # through torch.where, so that the initial state stays in the graph (a zero gradient, not a missing one)
        s = torch.where(torch.tensor(length > 0 and bool(resets[row, 0])), fresh, state[:, row : row + 1])
        for start, end in episodes(resets[row], length):
            if start > 0:
                s = fresh
            y_e, s = rnn(x[row : row + 1, start:end], R, b, s, cell=cell, backend="reference")
            y = y.index_put((torch.tensor([row]), torch.arange(start, end)), y_e[0])
        finals.append(s)
    return y, torch.cat(finals, dim=1)


def check_resets(backend, cell, B, T, NH, D, dtype, device, pattern, lengths=None, with_state=True):
    """``backend`` with resets against ``split_rnn`` on the same (rounded) inputs computed in float32 (float64
    for float64 inputs): y, final state and every gradient within the dtype's tolerance; y past a row's length 0."""
    inputs, dy, dfinal = problem_with_grads(cell, B, T, NH, D, dtype, device, with_state)
    resets = make_resets(pattern, B, T)
    lens = None if lengths is None else torch.tensor(lengths)
    got = run_with_grads(
        lambda *a: rnn(*a, cell=cell, backend=backend, lengths=lens, resets=resets.to(device)), inputs, dy, dfinal
    )
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    ref_inputs = [t.detach().cpu().to(compute) for t in inputs]
    ref = run_with_grads(lambda *a: split_rnn(cell, *a, resets, lens), ref_inputs, dy.cpu(), dfinal.cpu())
    got = (got[0].cpu(), got[1].cpu(), [g.cpu() for g in got[2]])  # compared with the reference on the CPU
    if dtype == torch.float64:
        errors = [max_error(g, e) for g, e in zip((got[0], got[1], *got[2]), (ref[0], ref[1], *ref[2]))]
        assert max(errors) < 1e-12, errors
    else:
        assert_matches_reference(cell, dtype, got, ref)
    if lens is not None:
        for row, length in enumerate(lens.tolist()):
            assert (got[0][row, length:] == 0).all()


# --- the reference (float64) ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("cell", CELLS)
def test_reference_resets_equal_episodes_run_alone(cell, pattern, with_lengths):
    check_resets("reference", cell, 4, 9, 2, 3, torch.float64, "cpu", pattern, [9, 0, 4, 1] if with_lengths else None)


def test_reset_at_step_zero_ignores_the_initial_state():
    """A reset at step 0 of every row: the initial state reaches nothing, its gradient is exactly 0."""
    x, R, b, state = random_problem("slstm", 3, 5, 2, 4)
    resets = make_resets("first", 3, 5)
    state.requires_grad_()
    y, final = rnn(x, R, b, state, cell="slstm", resets=resets)
    y_fresh, final_fresh = rnn(x, R, b, cell="slstm")
    assert torch.equal(y, y_fresh) and torch.equal(final, final_fresh)
    (grad,) = torch.autograd.grad(y.sum() + final.sum(), state)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_resets_past_a_rows_length_are_ignored():
    """Steps past a row's length do not run: a reset there changes neither y nor the final state."""
    x, R, b, state = random_problem("lstm", 2, 6, 1, 4)
    lengths = torch.tensor([6, 3])
    resets = torch.zeros(2, 6, dtype=torch.bool)
    resets[1, 3:] = True
    with_resets = rnn(x, R, b, state, cell="lstm", lengths=lengths, resets=resets)
    without = rnn(x, R, b, state, cell="lstm", lengths=lengths)
    assert all(torch.equal(g, e) for g, e in zip(with_resets, without))


# --- fused backends in the interpreter (CI) -------------------------------------------------------------

# every (cell, pattern) pair, float32 and float16 and lengths in rotation (not their whole product: the interpreter
# takes about half a second per case; the reference covers the product above, the GPU tests the kernels at speed)
INTERPRETER_CASES = [
    (cell, pattern, (torch.float32, torch.float16)[(i + i // len(CELLS)) % 2], i % 3 != 0)
    for i, (cell, pattern) in enumerate((c, p) for p in PATTERNS for c in CELLS)
]


@no_gpu
@pytest.mark.parametrize("backend", ["triton", "alternating"])
@pytest.mark.parametrize("cell,pattern,dtype,with_lengths", INTERPRETER_CASES, ids=str)
def test_fused_backends_resets_interpreter(backend, cell, pattern, dtype, with_lengths):
    check_resets(backend, cell, 3, 7, 2, 16, dtype, "cpu", pattern, [7, 0, 4] if with_lengths else None)


@no_gpu
@pytest.mark.parametrize("cell", ["lstm", "slstm"])
def test_alternating_gemm_path_resets_interpreter(cell, monkeypatch):
    """The alternating backend's other forward path (a GEMM and a pointwise kernel per step)."""
    from fusedrnn.backends.alternating import launch

    monkeypatch.setenv(launch.FUSED_ENV, "0")
    check_resets("alternating", cell, 3, 6, 1, 16, torch.float32, "cpu", "random", [6, 2, 5])


@no_gpu
@pytest.mark.parametrize("backend", ["triton", "alternating"])
def test_fused_resets_from_the_initial_state_interpreter(backend):
    """No initial state (sLSTM's fresh branch, n = 0) and a reset at every step of some rows."""
    check_resets(backend, "slstm", 17, 4, 1, 16, torch.float32, "cpu", "random", with_state=False)


def _late(resets):
    later = torch.zeros_like(resets)
    later[:, 1:] = resets[:, :-1]
    return later


# launch-level stand-ins for reset defects inside a kernel: (forward's resets, backward's resets) from the true ones
RESET_DEFECTS = {
    "forward ignores resets": (lambda r: None, lambda r: r),
    "backward ignores resets": (lambda r: r, lambda r: None),
    "forward resets a step late": (_late, lambda r: r),
}


@pytest.mark.parametrize("defect", list(RESET_DEFECTS))
@pytest.mark.parametrize("backend", ["triton", "alternating", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_comparison_catches_reset_defects(backend, defect, monkeypatch):
    """check_resets passes on the backend and fails once its launch functions get wrong resets."""
    from fusedrnn.backends import get_backend, registry
    from fusedrnn.backends.fused import fused_backend

    device = "cuda" if torch.cuda.is_available() else "cpu"
    check_resets(backend, "gru", 3, 6, 1, 16, torch.float32, device, "middle")
    launch = importlib.import_module(f"fusedrnn.backends.{backend}.launch")
    forward_resets, backward_resets = RESET_DEFECTS[defect]

    def forward(*args, resets=None):
        return launch.forward(*args, resets=None if resets is None else forward_resets(resets))

    def backward(*args, resets=None):
        return launch.backward(*args, resets=None if resets is None else backward_resets(resets))

    original = get_backend(backend)
    defective = fused_backend(backend, original.priority, original.supports, forward, backward, original.description)
    monkeypatch.setitem(registry._BACKENDS, backend, defective)
    with pytest.raises(AssertionError):
        check_resets(backend, "gru", 3, 6, 1, 16, torch.float32, device, "middle")


def test_resets_under_torch_compile_op():
    """The custom op (torch.compile's view of rnn) with resets passes torch.library.opcheck."""
    import fusedrnn.ops  # noqa: F401  (registers the op)

    x, R, b, state = (t.requires_grad_() for t in random_problem("gru", 3, 5, 2, 4))
    args = (x, R, b, state, None, make_resets("random", 3, 5), "gru", "reference", True)
    torch.library.opcheck(torch.ops.fusedrnn.forward.default, args)


def test_resets_under_torch_compile():
    x, R, b, state = random_problem("lstm", 3, 6, 2, 4)
    resets = make_resets("random", 3, 6)

    def f(x, R, b, state, resets):
        return rnn(x, R, b, state, cell="lstm", backend="reference", resets=resets)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    assert all(torch.equal(g, e) for g, e in zip(compiled(x, R, b, state, resets), f(x, R, b, state, resets)))


# --- argument checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resets,error,match",
    [
        ([[True] * 5] * 3, TypeError, "expected a bool tensor"),
        (torch.zeros(3, 5, dtype=torch.int64), TypeError, "expected dtype torch.bool"),
        (torch.zeros(3, 4, dtype=torch.bool), ValueError, r"expected shape \(3, 5\)"),
        (torch.zeros(5, 3, dtype=torch.bool), ValueError, r"expected shape \(3, 5\)"),
        (torch.zeros(3, 5, dtype=torch.bool, device="meta"), RuntimeError, "expected device cpu"),
    ],
    ids=["list", "int64", "short", "transposed", "device"],
)
def test_bad_resets(resets, error, match):
    x, R, b, state = random_problem("lstm", 3, 5, 1, 4)
    with pytest.raises(error, match=match):
        rnn(x, R, b, state, cell="lstm", resets=resets)


# --- layers ---------------------------------------------------------------------------------------------


def _layer_by_episodes(module, x, hx, resets, lengths):
    """The layer (batch_first) run on each episode of each row alone, without resets: the forward direction from
    hx on a row's first episode (zeros where step 0 starts an episode) and from zeros after; the reverse direction
    from hx on its last episode (read first) and from zeros before. Returns the output [B, T, dirs·H] and the final states as the module's."""
    B, T = x.shape[:2]
    dirs = 2 if module.bidirectional else 1
    parts = [hx] if isinstance(hx, torch.Tensor) else list(hx)  # each [L·dirs, B, H]
    out = x.new_zeros(B, T, dirs * module.hidden_size)
    finals = [torch.zeros_like(p) for p in parts]
    for row in range(B):
        length = T if lengths is None else int(lengths[row])
        spans = episodes(resets[row], length)
        for i, (start, end) in enumerate(spans):
            h = [p[:, row : row + 1].clone() for p in parts]
            for p in h:
                # forward: hx on the first episode, unless step 0 starts one
                p.view(module.num_layers, dirs, -1)[:, 0] *= float(i == 0 and not resets[row, 0])
                if dirs == 2:
                    p.view(module.num_layers, dirs, -1)[:, 1] *= float(i == len(spans) - 1)
            y, f = module(x[row : row + 1, start:end], h[0] if len(h) == 1 else tuple(h))
            out = out.index_put((torch.tensor([row]), torch.arange(start, end)), y[0])
            f = [f] if isinstance(f, torch.Tensor) else list(f)
            for k, part in enumerate(f):
                view, final_view = (
                    part.view(module.num_layers, dirs, -1),
                    finals[k].view(module.num_layers, dirs, B, -1),
                )
                if i == len(spans) - 1:  # the forward direction ends with the last episode
                    final_view[:, 0, row] = view[:, 0]
                if i == 0 and dirs == 2:  # the reverse direction ends with the first
                    final_view[:, 1, row] = view[:, 1]
    return out, finals


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("cls", [fnn.LSTM, fnn.GRU, fnn.SLSTM], ids=lambda c: c.__name__)
def test_layer_resets_equal_episodes_run_alone(cls, with_lengths, bidirectional):
    """Two layers, both directions: output, final states and the gradients of the input, hx and every parameter
    against the same layer run per episode (there on torch's own ops for LSTM and GRU). float64."""
    B, T, I, H = 3, 8, 5, 4
    module = cls(I, H, num_layers=2, bidirectional=bidirectional, batch_first=True, num_heads=2, dtype=torch.float64)
    dirs = 2 if bidirectional else 1
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(2 * dirs, B, H, dtype=torch.float64, requires_grad=True) for _ in module.cell.states]
    if cls is fnn.SLSTM:
        states[2] = (states[2].detach().abs() + 1).requires_grad_()  # n >= 1, as after a step
    hx = states[0] if len(states) == 1 else tuple(states)
    resets = make_resets("random", B, T)
    resets[0, 3] = resets[1, 0] = resets[2, T - 1] = True
    lengths = torch.tensor([T, 5, 4]) if with_lengths else None

    out, final = module(x, hx, lengths=lengths, resets=resets)
    expected_out, expected_final = _layer_by_episodes(module, x, hx, resets, lengths)
    final = [final] if isinstance(final, torch.Tensor) else list(final)
    assert max_error(out, expected_out) < 1e-12
    assert all(max_error(f, e) < 1e-12 for f, e in zip(final, expected_final))
    weights = torch.randn_like(out)
    leaves = [x, *states, *module.parameters()]
    grads = torch.autograd.grad((out * weights).sum() + sum(f.sum() for f in final), leaves)
    expected = torch.autograd.grad((expected_out * weights).sum() + sum(f.sum() for f in expected_final), leaves)
    assert all(max_error(g, e) < 1e-12 for g, e in zip(grads, expected))


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
def test_layer_resets_follow_the_input_layout(batch_first):
    """resets come in the input's layout ([T, B] time-first, [B, T] batch-first, [T] unbatched)."""
    module = fnn.GRU(3, 4, batch_first=batch_first, dtype=torch.float64)
    x = torch.randn(2, 6, 3, dtype=torch.float64)  # [B, T, I]
    resets = make_resets("random", 2, 6)
    expected, _ = module(x if batch_first else x.transpose(0, 1), resets=resets if batch_first else resets.t())
    reference = fnn.GRU(3, 4, batch_first=True, dtype=torch.float64)
    reference.load_state_dict(module.state_dict())
    out, _ = reference(x, resets=resets)
    assert max_error(expected if batch_first else expected.transpose(0, 1), out) < 1e-12
    single, _ = module(x[0] if batch_first else x[0], resets=resets[0])  # unbatched [T, I], resets [T]
    assert max_error(single, out[0]) < 1e-12


def test_step_with_resets_starts_those_rows_fresh():
    module = fnn.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64)
    hx = (torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64))
    resets = torch.tensor([True, False, True])
    out, (h, c) = module.step(x, hx, resets=resets)
    kept = ~resets.view(1, 3, 1)
    expected_out, (eh, ec) = module.step(x, (hx[0] * kept, hx[1] * kept))
    assert max_error(out, expected_out) < 1e-12 and max_error(h, eh) < 1e-12 and max_error(c, ec) < 1e-12


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda m, x: m(x, resets=torch.zeros(6, 3, dtype=torch.bool)),
            ValueError,
            r"expected shape \(3, 6\) \[B, T\]",
        ),
        (lambda m, x: m(x, resets=[[False] * 6] * 3), TypeError, "expected a bool tensor"),
        (lambda m, x: m(x, resets=torch.zeros(3, 6)), TypeError, "expected dtype torch.bool"),
        (lambda m, x: m.step(x[:, 0], resets=torch.zeros(2, dtype=torch.bool)), ValueError, r"\[B\] = \[3\]"),
        (
            lambda m, x: m(
                torch.nn.utils.rnn.pack_padded_sequence(x, [6, 6, 6], batch_first=True),
                resets=torch.zeros(3, 6, dtype=torch.bool),
            ),
            ValueError,
            "PackedSequence",
        ),
    ],
    ids=["layout", "list", "float", "step", "packed"],
)
def test_layer_bad_resets(call, error, match):
    module = fnn.LSTM(2, 4, batch_first=True)
    with pytest.raises(error, match=match):
        call(module, torch.randn(3, 6, 2))


# --- GPU ------------------------------------------------------------------------------------------------


def _skip_unless_supported(backend, cell, B, T, NH, D, dtype):
    from fusedrnn.backends import Call, get_backend

    call = Call(get_cell(cell), B, T, NH, D, dtype, torch.device("cuda"), True, has_lengths=True, has_resets=True)
    reason = get_backend(backend).supports(call)
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "alternating"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,NH,D", [(3, 7, 2, 64), (16, 64, 1, 128)], ids=str)
def test_fused_backends_resets_gpu(backend, cell, dtype, B, T, NH, D):
    _skip_unless_supported(backend, cell, B, T, NH, D, dtype)
    generator = torch.Generator().manual_seed(B * T + D)
    lengths = torch.randint(0, T + 1, (B,), generator=generator)
    lengths[0] = T
    check_resets(backend, cell, B, T, NH, D, dtype, "cuda", "random", lengths.tolist())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "alternating"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_reset_patterns_gpu(backend, pattern):
    _skip_unless_supported(backend, "lstm", 16, 33, 2, 64, torch.bfloat16)
    check_resets(backend, "lstm", 16, 33, 2, 64, torch.bfloat16, "cuda", pattern, [33] * 8 + [0, 1, 5, 32] * 2)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["lstm", "gru", "slstm"])
@pytest.mark.parametrize("D", [256, 768, 1024])
def test_cuda_large_head_families_resets_gpu(cell, D):
    """Heads over a cluster, the K-split forward and the cooperative grid (which family runs depends on the device:
    ``python -m fusedrnn info --cell lstm --heads 1 --head-dim 768`` names them)."""
    _skip_unless_supported("cuda", cell, 16, 24, 1, D, torch.bfloat16)
    check_resets("cuda", cell, 16, 24, 1, D, torch.bfloat16, "cuda", "random", [24] * 12 + [0, 3, 17, 23])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "alternating"])
def test_resets_change_between_calls_gpu(backend):
    """Two calls of one shape with other resets (the alternating backend replays one CUDA graph for both: the
    flags are copied into its buffer per call) and a call without: each equals the reference."""
    x, R, b, state = random_problem("gru", 4, 12, 2, 32, dtype=torch.bfloat16, device="cuda")
    for pattern in ("random", "every", "none", "random"):
        resets = make_resets(pattern, 4, 12)
        got = rnn(x, R, b, state, cell="gru", backend=backend, resets=resets.cuda())
        ref = split_rnn("gru", *(t.float().cpu() for t in (x, R, b, state)), resets)
        assert all(max_error(g.cpu(), e) < 4e-2 for g, e in zip(got, ref)), pattern  # bf16 forward, helpers.TOL
