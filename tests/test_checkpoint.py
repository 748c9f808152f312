"""Checkpointed training (``rnn(..., checkpoint=k)``): the same results as the saving path, on every backend.

Segments run the same per-step arithmetic from the same float32 states, so y and the final state are bitwise
those of the saving path (float32). The gradients agree up to float32 summation order: dR and db are summed per
segment, and at a segment boundary the state's gradient arrives as one sum where the saving path adds its terms
one by one (2^-24 relative per addition over T = 7 steps: 1e-6 of the largest element is ample and far below any
missing or doubled term).
"""

from __future__ import annotations

import pytest
import torch

from fusedrnn import get_cell, nn, rnn
from fusedrnn.checkpoint import checkpoint_bytes, checkpoint_steps

from .helpers import GRAD_NAMES, TOL, max_error, problem_with_grads, run_with_grads

SUM_ORDER_TOL = 1e-6
CPU_BACKENDS = ["reference", "triton"]  # triton under TRITON_INTERPRET=1, float32 (see conftest)


def _compare(
    cell, backend, B, T, NH, D, steps, dtype=torch.float32, device="cpu", lengths=None, with_state=True, resets=None
):
    inputs, dy, dfinal = problem_with_grads(cell, B, T, NH, D, dtype, device, with_state)
    if lengths is not None:
        lengths = torch.tensor(lengths)

    def call(**options):
        return lambda *a: rnn(*a, cell=cell, backend=backend, lengths=lengths, resets=resets, **options)

    saving = run_with_grads(call(), inputs, dy, dfinal)
    checkpointed = run_with_grads(call(checkpoint=steps), inputs, dy, dfinal)
    return saving, checkpointed


def _assert_same(saving, checkpointed, exact=True, tol=SUM_ORDER_TOL):
    (y, final, grads), (y_c, final_c, grads_c) = saving, checkpointed
    same = torch.equal if exact else (lambda a, b: max_error(b, a) <= tol)
    assert same(y, y_c) and same(final, final_c), "forward or final state differs"
    for name, g, g_c in zip(GRAD_NAMES, grads, grads_c):
        assert g_c.dtype == g.dtype, name
        assert max_error(g_c, g) <= tol, f"{name}: {max_error(g_c, g)}"


# steps: 1 (every step), 3 (does not divide T = 7), 20 (> T: one segment)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("steps", [1, 3, 20])
def test_lstm_equals_saving_path(backend, steps):
    _assert_same(*_compare("lstm", backend, 3, 7, 2, 16, steps))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("cell", ["gru", "elman", "slstm"])
def test_cells_equal_saving_path(backend, cell):
    _assert_same(*_compare(cell, backend, 3, 7, 2, 16, 3))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_resets_equal_saving_path(backend):
    # episodes starting at a segment's first step (3, 6), inside one (2, 4), at step 0, with lengths
    resets = torch.zeros(3, 7, dtype=torch.bool)
    resets[0, [2, 3]] = True
    resets[1, [0, 6]] = True
    resets[2, 4] = True
    _assert_same(*_compare("lstm", backend, 3, 7, 2, 16, 3, lengths=[7, 5, 6], resets=resets))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_lengths_and_zero_state(backend):
    """Rows ending in an earlier segment (2), inside the last one (6), empty (0) and full (7)."""
    saving, checkpointed = _compare("lstm", backend, 4, 7, 1, 16, 3, lengths=[7, 2, 0, 6], with_state=False)
    _assert_same(saving, checkpointed)
    y = checkpointed[0]
    assert (y[1, 2:] == 0).all() and (y[2] == 0).all() and (y[3, 6:] == 0).all()


def test_float64_reference_and_gradcheck():
    x, R, b, state = (t.requires_grad_() for t in problem_with_grads("gru", 2, 5, 1, 3, torch.float64, "cpu")[0])
    assert torch.autograd.gradcheck(lambda *a: rnn(*a, cell="gru", backend="reference", checkpoint=2), (x, R, b, state))


def test_only_requested_gradients():
    (x, R, b, state), dy, _ = problem_with_grads("lstm", 2, 5, 1, 8, torch.float32, "cpu")
    R.requires_grad_()
    y, _ = rnn(x, R, b, state, cell="lstm", backend="reference", checkpoint=2)
    (dR,) = torch.autograd.grad((y * dy).sum(), (R,))
    R_ref = R.detach().clone().requires_grad_()
    y_ref, _ = rnn(x, R_ref, b, state, cell="lstm", backend="reference")
    (dR_ref,) = torch.autograd.grad((y_ref * dy).sum(), (R_ref,))
    assert max_error(dR, dR_ref) <= SUM_ORDER_TOL


def test_saves_only_segment_starts():
    """What autograd keeps after the forward: x, R, b and ceil(T / k) start states, nothing per step."""
    (x, R, b, state), _, _ = problem_with_grads("lstm", 2, 10, 1, 8, torch.float32, "cpu")
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        rnn(x, R, b, state, cell="lstm", backend="triton", checkpoint=4)
    shapes = sorted(tuple(t.shape) for t in saved)
    assert shapes == sorted([tuple(x.shape), tuple(R.shape), tuple(b.shape)] + [tuple(state.shape)] * 3)


def test_budget_picks_longest_fitting_segment():
    cell = get_cell("lstm")
    args = (cell, 16, 65536, 1, 768, torch.bfloat16)
    budget = 300 * 2**20
    steps = checkpoint_steps(*args, budget)
    assert checkpoint_bytes(*args, steps) <= budget < checkpoint_bytes(*args, steps + 1)
    with pytest.raises(ValueError, match="checkpoint_budget: expected at least"):
        checkpoint_steps(*args, 10**6)
    # the saving path's saved tensors: (Gb + S) * 4 bytes per row, step and unit
    assert checkpoint_bytes(*args, 65536) == 16 * 768 * (24 * 65536 + 8) + 2 * 16 * 768 * 2


def test_budget_through_rnn():
    inputs, dy, dfinal = problem_with_grads("lstm", 2, 9, 1, 8, torch.float32, "cpu")
    budget = checkpoint_bytes(get_cell("lstm"), 2, 9, 1, 8, torch.float32, 4)
    saving = run_with_grads(lambda *a: rnn(*a, cell="lstm", backend="reference"), inputs, dy, dfinal)
    budgeted = run_with_grads(
        lambda *a: rnn(*a, cell="lstm", backend="reference", checkpoint_budget=budget), inputs, dy, dfinal
    )
    _assert_same(saving, budgeted)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"checkpoint": 0}, ValueError, "checkpoint: expected an int >= 1, got 0"),
        ({"checkpoint": 2.0}, TypeError, "checkpoint: expected an int, got float"),
        ({"checkpoint_budget": -1}, ValueError, "checkpoint_budget: expected an int >= 1"),
        ({"checkpoint": 2, "checkpoint_budget": 10**9}, ValueError, "expected at most one"),
    ],
)
def test_bad_options(options, error, match):
    x, R, b, state = problem_with_grads("lstm", 1, 3, 1, 4, torch.float32, "cpu")[0]
    with pytest.raises(error, match=match):
        rnn(x, R, b, state, cell="lstm", **options)
    with pytest.raises(error, match=match):
        nn.LSTM(4, 4, **options)


def test_double_backward_refused():
    x, R, b, state = (t.requires_grad_() for t in problem_with_grads("lstm", 1, 3, 1, 4, torch.float64, "cpu")[0])
    y, _ = rnn(x, R, b, state, cell="lstm", backend="reference", checkpoint=2)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


@pytest.mark.parametrize("backend", ["reference"])  # the layers' plumbing; the kernels are tested above
def test_layer_bidirectional_with_lengths(backend):
    """Two layers, both directions, lengths and an initial state: outputs and every parameter's gradient."""
    torch.manual_seed(torch.initial_seed())
    kwargs = {"num_layers": 2, "bidirectional": True, "batch_first": True, "num_heads": 2, "backend": backend}
    plain = nn.LSTM(5, 16, **kwargs)
    checkpointed = nn.LSTM(5, 16, checkpoint=3, **kwargs)
    checkpointed.load_state_dict(plain.state_dict())
    assert "checkpoint=3" in repr(checkpointed)
    x = torch.randn(3, 8, 5)
    hx = (torch.randn(4, 3, 16), torch.randn(4, 3, 16))
    lengths = torch.tensor([8, 5, 2])
    results = []
    for module in (plain, checkpointed):
        out, (h, c) = module(x, hx, lengths=lengths)
        (out.square().sum() + h.sum() + c.sum()).backward()
        results.append((out, h, c, [p.grad for p in module.parameters()]))
    (out, h, c, grads), (out_c, h_c, c_c, grads_c) = results
    assert torch.equal(out, out_c) and torch.equal(h, h_c) and torch.equal(c, c_c)
    for g, g_c in zip(grads, grads_c):
        assert max_error(g_c, g) <= SUM_ORDER_TOL


# --- on the device (pytest -m gpu) -------------------------------------------------------------------------


def test_overlap_only_where_allowed(monkeypatch):
    """The experimental side-stream recomputation: never on the CPU nor on 'alternating', and off by default."""
    from fusedrnn import checkpoint
    from fusedrnn.backends.registry import Call

    cpu = Call(get_cell("lstm"), 2, 8, 1, 16, torch.float32, torch.device("cpu"), True)
    assert not checkpoint.overlap_allowed("triton", cpu)
    monkeypatch.setattr(checkpoint, "OVERLAP_RECOMPUTATION", True)
    assert not checkpoint.overlap_allowed("triton", cpu)
    gpu = Call(get_cell("lstm"), 2, 8, 1, 16, torch.float32, torch.device("cuda"), True)
    assert not checkpoint.overlap_allowed("alternating", gpu) and not checkpoint.overlap_allowed("reference", gpu)


@pytest.mark.gpu
@pytest.mark.parametrize("overlap", [False, True], ids=["sequential", "overlap"])
@pytest.mark.parametrize("backend", ["cuda", "triton", "alternating"])
@pytest.mark.parametrize(("NH", "D"), [(12, 64), (1, 768)])
@pytest.mark.parametrize("steps", [1, 100, 333, 2048])
def test_gpu_equals_saving_path(backend, NH, D, steps, overlap, monkeypatch):
    """float32 on the fused GPU backends: forward bitwise; gradients within summation order; with the recomputation
    on side streams too (where ``overlap_allowed``), whose synchronisation a race would break."""
    from fusedrnn import checkpoint
    from fusedrnn.backends import select_backend
    from fusedrnn.backends.registry import Call

    monkeypatch.setattr(checkpoint, "OVERLAP_RECOMPUTATION", overlap)
    call = Call(get_cell("lstm"), 16, 1000, NH, D, torch.float32, torch.device("cuda"), True)
    try:
        select_backend(backend, call)
    except ValueError as error:
        pytest.skip(str(error))
    if overlap and not checkpoint.overlap_allowed(backend, call):
        pytest.skip(f"no overlap on {backend} for {NH}x{D}")
    saving, checkpointed = _compare("lstm", backend, 16, 1000, NH, D, steps, device="cuda", lengths=None)
    _assert_same(saving, checkpointed, tol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_overlap_bfloat16_with_lengths(backend, monkeypatch):
    """The side-stream recomputation against the sequential one, bfloat16, lengths, 12 x 64: the same kernels on
    the same inputs in the same order per stream: y and the final state bitwise, the gradients too unless a GEMM
    picks another algorithm on the other stream (a bfloat16 rounding); a race reads a buffer early."""
    from fusedrnn import checkpoint

    inputs, dy, dfinal = problem_with_grads("lstm", 16, 2000, 12, 64, torch.bfloat16, "cuda")
    lengths = torch.randint(0, 2001, (16,))

    def call():
        return lambda *a: rnn(*a, cell="lstm", backend=backend, lengths=lengths, checkpoint=128)

    results = []
    for overlap in (False, True):
        monkeypatch.setattr(checkpoint, "OVERLAP_RECOMPUTATION", overlap)
        results.append(run_with_grads(call(), inputs, dy, dfinal))
    _assert_same(*results, tol=1e-2)  # a race gives garbage, far beyond this


@pytest.mark.gpu
def test_gpu_bfloat16_close_to_saving_path():
    """bfloat16: segment-start states are rounded to bfloat16 (the backends' state dtype), so results differ
    from the saving path by that rounding at every k-th step: within the bfloat16 backward tolerance against the
    reference (helpers.TOL), which both paths meet."""
    saving, checkpointed = _compare("lstm", "auto", 16, 1024, 1, 768, 256, dtype=torch.bfloat16, device="cuda")
    _assert_same(saving, checkpointed, exact=False, tol=TOL[torch.bfloat16]["bw"])
