"""Backend ``alternating`` against the reference: forward, final state and every gradient.

On a machine without a GPU these run in Triton's interpreter (float32 and float16) with the step loop run
eagerly; the ``gpu`` cases run the compiled kernels and cuBLAS inside CUDA graphs.
"""

from pathlib import Path

import pytest
import torch

import fusedrnn.backends.alternating  # noqa: F401  (registers the backend; fusedrnn.backends imports it too)
from fusedrnn import get_cell, rnn
from fusedrnn.backends.alternating import launch

from .helpers import (
    TOL,
    assert_matches_reference,
    check_backend,
    max_error,
    norm_error,
    problem_with_grads,
    random_problem,
    reference_with_grads,
    run_with_grads,
)
from .test_triton import CELLS

BACKEND = "alternating"
ON_GPU = torch.cuda.is_available()
interpreter_only = pytest.mark.skipif(ON_GPU, reason="the interpreter cases run where there is no GPU")


_problem = problem_with_grads
_reference = reference_with_grads


def _alternating(cell):
    return lambda *a: rnn(*a, cell=cell, backend=BACKEND)


def _compare(cell, dtype, got, ref):
    assert_matches_reference(cell, dtype, got, ref)


def check_against_reference(cell, B, T, NH, D, dtype, device, with_state=True):
    check_backend(BACKEND, cell, B, T, NH, D, dtype, device, with_state)


# --- interpreter (CI) ----------------------------------------------------------------------------------

# odd batch and step counts, head sizes that are no power of two; (3, 7, 2, 48): two programs per step
INTERPRETER_SHAPES = [(1, 1, 1, 20), (3, 7, 2, 48), (1, 7, 3, 20), (3, 1, 2, 48)]


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("B,T,NH,D", INTERPRETER_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("cell", CELLS)
def test_alternating_interpreter_matches_reference(cell, B, T, NH, D, dtype, monkeypatch):
    """The forward on its GEMM path (the fused forward: tests/test_alternating_fused.py)."""
    monkeypatch.setenv(launch.FUSED_ENV, "0")
    launch.clear_cache()
    check_against_reference(cell, B, T, NH, D, dtype, "cpu")
    # float16: the GEMMs' float32 results (the CUDA path of torch >= 2.8), here from float32 copies
    keys = [k for k in launch.cached_plans() if k[1:7] == (cell, B, T, NH, D, dtype)]
    assert {k[9] for k in keys} == {"upcast" if dtype == torch.float16 else "native"}
    assert {k[13] for k in keys} == {"gemm"}


@interpreter_only
@pytest.mark.parametrize("cell", CELLS)
def test_alternating_interpreter_fresh_state(cell):
    """Zero initial state: sLSTM's m' = i~ branch and the n' = max(., 1) tie at the first step."""
    check_against_reference(cell, 2, 4, 2, 16, torch.float32, "cpu", with_state=False)


@interpreter_only
@pytest.mark.parametrize("cell", CELLS)
def test_alternating_agrees_with_triton_step_by_step(cell):
    """Same saved tensors (layouts and numbers) as the Triton backend, and from them the same dx, dR, db and
    d state0: the two backends differ only in how they compute R·h and Rᵀ·dp."""
    from fusedrnn.backends.triton import launch as triton_launch

    (x, R, b, state), dy, dfinal = _problem(cell, 3, 5, 2, 16, torch.float32, "cpu")
    ours = launch.forward(cell, x, R, b, state, None, save=True)
    theirs = triton_launch.forward(cell, x, R, b, state, None, True)
    for name, got, expected in zip(["y", "final", "pre", "states"], ours, theirs):
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        assert max_error(got, expected) < 1e-5, name
    _, _, pre, states = theirs
    ours = launch.backward(cell, R, pre, states, None, dy, dfinal)
    theirs = triton_launch.backward(cell, R, pre, states, None, dy, dfinal)
    for name, got, expected in zip(["dx", "dR", "db", "dstate0"], ours, theirs):
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        assert max_error(got, expected) < 1e-5, name


@interpreter_only
def test_alternating_refusals_on_cpu(monkeypatch):
    x, R, b, state = random_problem("lstm", 2, 3, 1, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 is not run under the Triton interpreter"):
        rnn(x, R, b, state, cell="lstm", backend=BACKEND)
    x, R, b, state = random_problem("lstm", 2, 3, 1, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64 runs on 'reference'"):
        rnn(x, R, b, state, cell="lstm", backend=BACKEND)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, R, b, state = random_problem("lstm", 2, 3, 1, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="only under TRITON_INTERPRET=1"):
        rnn(x, R, b, state, cell="lstm", backend=BACKEND)


def test_auto_never_picks_the_interpreter():
    """On CPU tensors under the interpreter the backend runs when named, and auto still takes the reference."""
    from fusedrnn.backends import Call, get_backend, select_backend

    if torch.cuda.is_available():
        pytest.skip("the interpreter runs only where no GPU is (tests/conftest.py)")
    call = Call(get_cell("lstm"), 2, 3, 1, 200, torch.float32, torch.device("cpu"), True)
    assert get_backend(BACKEND).supports(call) is None
    assert select_backend("auto", call).name == "reference"


def _device():
    return "cuda" if ON_GPU else "cpu"


def test_inference_saves_nothing_and_matches_training():
    """Without gradients nothing is saved (another plan, no autograd node); the outputs are the same."""
    x, R, b, state = random_problem("slstm", 3, 6, 2, 16, dtype=torch.float32, device=_device())
    with torch.no_grad():
        y0, f0 = rnn(x, R, b, state, cell="slstm", backend=BACKEND)
    y1, f1 = rnn(x, R, b, state.requires_grad_(), cell="slstm", backend=BACKEND)
    assert torch.equal(y0, y1.detach()) and torch.equal(f0, f1.detach())


def test_same_shape_calls_share_a_plan_and_keep_their_outputs():
    """Two calls of one shape reuse one cached plan (on CUDA: one graph); the first call's outputs, saved
    tensors and gradients are not overwritten by the second call, whose backward runs first."""
    launch.clear_cache()
    dtype, device = torch.float32, _device()
    first, dy1, df1 = _problem("gru", 3, 6, 2, 24, dtype, device)
    second, dy2, df2 = _problem("gru", 3, 6, 2, 24, dtype, device)
    leaves1 = [t.detach().clone().requires_grad_() for t in first]
    leaves2 = [t.detach().clone().requires_grad_() for t in second]
    y1, f1 = rnn(*leaves1, cell="gru", backend=BACKEND)
    y1_copy, f1_copy = y1.detach().clone(), f1.detach().clone()
    y2, f2 = rnn(*leaves2, cell="gru", backend=BACKEND)
    assert torch.equal(y1, y1_copy) and torch.equal(f1, f1_copy)
    forward_plans = [p for k, p in launch.cached_plans().items() if k[0] == "fw"]
    assert len(forward_plans) == 1
    grads2 = torch.autograd.grad((y2 * dy2).sum() + (f2 * df2).sum(), leaves2)
    grads1 = torch.autograd.grad((y1 * dy1).sum() + (f1 * df1).sum(), leaves1)
    assert len(launch.cached_plans()) == 2  # one forward, one backward plan
    for inputs, dy, df, y, f, grads in [(first, dy1, df1, y1, f1, grads1), (second, dy2, df2, y2, f2, grads2)]:
        _compare("gru", dtype, (y.detach(), f.detach(), grads), _reference(inputs, "gru", dy, df))
    if ON_GPU:
        plan = forward_plans[0]
        assert plan.graph is not None and plan.replays == 1


def test_gradients_of_some_inputs_only():
    """Only R and the state require gradients: dx and db are not computed; what is, is right."""
    device = _device()
    (x, R, b, state), dy, dfinal = _problem("lstm", 2, 5, 2, 16, torch.float32, device)
    R_leaf, s_leaf = R.clone().requires_grad_(), state.clone().requires_grad_()
    y, final = rnn(x, R_leaf, b, s_leaf, cell="lstm", backend=BACKEND)
    dR, ds = torch.autograd.grad((y * dy).sum() + (final * dfinal).sum(), (R_leaf, s_leaf))
    _, _, (_, dR_ref, _, ds_ref) = _reference((x, R, b, state), "lstm", dy, dfinal)
    assert max_error(dR, dR_ref) < TOL[torch.float32]["bw"] and max_error(ds, ds_ref) < TOL[torch.float32]["bw"]


def test_non_contiguous_inputs():
    device = _device()
    (x, R, b, state), dy, dfinal = _problem("elman", 3, 4, 2, 20, torch.float32, device)
    x_nc = x.transpose(0, 1).contiguous().transpose(0, 1)  # [B, T, ...] with T outermost in memory
    R_nc = R.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_nc.is_contiguous() and not R_nc.is_contiguous()
    got = run_with_grads(_alternating("elman"), (x_nc, R_nc, b, state), dy, dfinal)
    _compare("elman", torch.float32, got, _reference((x, R, b, state), "elman", dy, dfinal))


# --- GPU ----------------------------------------------------------------------------------------------

GPU_SHAPES = [(1, 1), (3, 7), (16, 256)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("D", [64, 256, 768])
@pytest.mark.parametrize("B,T", GPU_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("cell", CELLS)
def test_alternating_gpu_matches_reference(cell, B, T, D, dtype):
    NH = 2 if D <= 256 else 1
    check_against_reference(cell, B, T, NH, D, dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_alternating_gpu_lstm_4096(dtype):
    check_against_reference("lstm", 16, 64, 1, 4096, dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,NH,D", [(5, 33, 3, 48), (64, 100, 4, 200), (2, 1024, 1, 512)], ids=str)
def test_alternating_gpu_more_shapes(cell, B, T, NH, D):
    check_against_reference(cell, B, T, NH, D, torch.bfloat16, "cuda")


@pytest.mark.gpu
def test_alternating_gpu_graph_is_reused_and_outputs_survive():
    """The second call of a shape replays the first call's graph; replays do not touch earlier outputs."""
    launch.clear_cache()
    cell, B, T, NH, D, dtype = "lstm", 4, 32, 2, 128, torch.bfloat16
    calls = [_problem(cell, B, T, NH, D, dtype, "cuda") for _ in range(3)]
    results = []
    for inputs, dy, dfinal in calls:
        results.append(run_with_grads(_alternating(cell), inputs, dy, dfinal))
    snapshot = [tuple(t.clone() for t in (y, f, *g)) for y, f, g in results]
    # a later call (same shape, other data) must leave every earlier output and gradient as it was
    run_with_grads(_alternating(cell), *calls[0])
    for (y, f, g), kept in zip(results, snapshot):
        assert all(torch.equal(a, b) for a, b in zip((y, f, *g), kept))
    plans = launch.cached_plans()
    fw = [p for k, p in plans.items() if k[0] == "fw"]
    bw = [p for k, p in plans.items() if k[0] == "bw"]
    assert len(fw) == 1 and len(bw) == 1
    assert fw[0].graph is not None and bw[0].graph is not None
    assert fw[0].replays == 3 and bw[0].replays == 3
    for (inputs, dy, dfinal), got in zip(calls, results):
        _compare(cell, dtype, got, _reference(inputs, cell, dy, dfinal))
    # a replay computes what the eager loop computes, and two replays of one input agree bit for bit
    again = run_with_grads(_alternating(cell), *calls[1])
    assert all(torch.equal(a, b) for a, b in zip((again[0], again[1], *again[2]), snapshot[1]))


@pytest.mark.gpu
def test_alternating_gpu_eager_loop_matches_graph(monkeypatch):
    inputs, dy, dfinal = _problem("gru", 8, 40, 2, 192, torch.float16, "cuda")
    graphed = run_with_grads(_alternating("gru"), inputs, dy, dfinal)
    monkeypatch.setenv(launch.GRAPHS_ENV, "0")
    eager = run_with_grads(_alternating("gru"), inputs, dy, dfinal)
    for a, b in zip((graphed[0], graphed[1], *graphed[2]), (eager[0], eager[1], *eager[2])):
        assert max_error(a, b) < 1e-3


@pytest.mark.gpu
def test_alternating_gpu_prefetch_changes_no_bit(monkeypatch):
    """The L2 prefetches are hints: with and without them every output and gradient is the same, bit for bit."""
    inputs, dy, dfinal = _problem("lstm", 5, 33, 1, 320, torch.bfloat16, "cuda")
    with_prefetch = run_with_grads(_alternating("lstm"), inputs, dy, dfinal)
    monkeypatch.setenv(launch.PREFETCH_ENV, "0")
    without = run_with_grads(_alternating("lstm"), inputs, dy, dfinal)
    assert {k[10] for k in launch.cached_plans() if k[2:6] == (5, 33, 1, 320)} == {True, False}
    for a, b in zip((with_prefetch[0], with_prefetch[1], *with_prefetch[2]), (without[0], without[1], *without[2])):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_alternating_gpu_side_stream():
    inputs, dy, dfinal = _problem("slstm", 4, 50, 2, 160, torch.float32, "cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = run_with_grads(_alternating("slstm"), inputs, dy, dfinal)  # captures
        got2 = run_with_grads(_alternating("slstm"), inputs, dy, dfinal)  # replays
    torch.cuda.current_stream().wait_stream(stream)
    ref = _reference(inputs, "slstm", dy, dfinal)
    _compare("slstm", torch.float32, got, ref)
    _compare("slstm", torch.float32, got2, ref)


@pytest.mark.gpu
def test_alternating_gpu_is_deterministic():
    inputs, dy, dfinal = _problem("lstm", 16, 64, 2, 256, torch.bfloat16, "cuda")
    first = run_with_grads(_alternating("lstm"), inputs, dy, dfinal)
    second = run_with_grads(_alternating("lstm"), inputs, dy, dfinal)
    for a, c in zip(first[2], second[2]):
        assert torch.equal(a, c)


@pytest.mark.gpu
def test_alternating_gpu_tf32_setting_is_followed():
    """float32 GEMMs use TF32 only where torch allows it; the setting is part of the graph cache key. (The flag is
    set directly: conftest restores it after every test; monkeypatch cannot undo a property of torch's module.)"""
    inputs, dy, dfinal = _problem("elman", 8, 16, 1, 512, torch.float32, "cuda")
    ref = _reference(inputs, "elman", dy, dfinal)
    torch.backends.cuda.matmul.allow_tf32 = False
    _compare("elman", torch.float32, run_with_grads(_alternating("elman"), inputs, dy, dfinal), ref)
    torch.backends.cuda.matmul.allow_tf32 = True
    y_tf32 = run_with_grads(_alternating("elman"), inputs, dy, dfinal)[0]
    assert max_error(y_tf32, ref[0]) < TOL[torch.float16]["fw"]  # TF32: about float16's precision
    keys = [k for k in launch.cached_plans() if k[:2] == ("fw", "elman") and k[2:6] == (8, 16, 1, 512)]
    assert {k[11] for k in keys} == {("tf32", False), ("tf32", True)}


def _torch_version() -> tuple[int, int]:
    return tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_alternating_gpu_gemms_write_float32(dtype, monkeypatch):
    """Where torch has torch.bmm(..., out_dtype=torch.float32) (2.8 and later), 16-bit calls use it: the
    forward GEMM's gates and the backward GEMM's partials are float32, the GEMM operands the input dtype.
    (The forward on its GEMM path: the fused kernel has no GEMM.)"""
    if _torch_version() < (2, 8):
        pytest.skip("torch < 2.8 has no float32-output bmm: the input-dtype path runs")
    monkeypatch.setenv(launch.FUSED_ENV, "0")
    launch.clear_cache()
    device = torch.device("cuda", torch.cuda.current_device())
    assert launch.float32_gemm_output(dtype, device), "aten::bmm.dtype_out missing or wrong on this GPU"
    check_against_reference("lstm", 4, 9, 2, 96, dtype, "cuda")
    plans = launch.cached_plans()
    assert {k[9] for k in plans} == {"f32out"}
    for key, plan in plans.items():
        if key[0] == "fw":
            assert plan.gates.dtype == torch.float32 and plan.hbuf.dtype == dtype
        else:
            assert plan.dh_part.dtype == torch.float32 and plan.dpg.dtype == dtype


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("B,T,D", [(3, 7, 256), (16, 256, 768)], ids=str)
def test_alternating_gpu_input_dtype_gemms(cell, B, T, D, monkeypatch):
    """The path of a torch without float32-output GEMMs (FLOAT32_GEMM_OUTPUT off): bfloat16 GEMM results,
    the forward on its GEMM path. (sLSTM's tiny single-step problems are left out: that rounding flips its
    branch points.)"""
    monkeypatch.setattr(launch, "FLOAT32_GEMM_OUTPUT", False)
    monkeypatch.setenv(launch.FUSED_ENV, "0")
    launch.clear_cache()
    NH = 2 if D <= 256 else 1
    check_against_reference(cell, B, T, NH, D, torch.bfloat16, "cuda")
    keys = [k for k in launch.cached_plans() if k[1] == cell and k[2:6] == (B, T, NH, D)]
    assert keys and {k[9] for k in keys} == {"native"}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_alternating_gpu_weight_gradient_large(dtype):
    """dR of LSTM 1 x 768 over T·B = 16384 rows (the cuBLAS GEMM of the benchmark) against float64."""
    NH, T, B, GR, D = 1, 1024, 16, 4, 768
    dr = torch.randn(NH, T, B, GR, D, device="cuda").to(dtype)
    states = torch.randn(2, NH, T + 1, B, D, device="cuda")
    dR = launch.weight_gradient(dr, states)
    expected = torch.einsum("ntbgi,ntbj->gnij", dr.double(), states[0, :, :T].to(dtype).double())
    assert dR.dtype == dtype and dR.shape == (GR, NH, D, D)
    # bfloat16: the output's own rounding (normwise about 1.7e-3); float32: float32 (or TF32) rounding
    tol = {torch.bfloat16: 4e-3, torch.float32: 1e-3 if torch.backends.cuda.matmul.allow_tf32 else 1e-5}[dtype]
    assert norm_error(dR, expected) < tol
    assert torch.equal(dR, launch.weight_gradient(dr, states))  # deterministic


@pytest.mark.gpu
def test_auto_prefers_an_on_chip_backend_and_falls_back_to_alternating():
    """auto takes a fused on-chip backend wherever one runs the call (LSTM 12 x 64 and, over a cluster or a grid,
    1 x 768 training) and falls back to alternating only where both refuse: a head size the cuda kernels are not
    built for (640) and the Triton kernels cannot hold (> 128)."""
    from fusedrnn.backends import Call, get_backend, select_backend

    def call(num_heads, head_dim):
        return Call(get_cell("lstm"), 16, 1024, num_heads, head_dim, torch.bfloat16, torch.device("cuda"), True)

    assert select_backend("auto", call(12, 64)).name in ("cuda", "triton")
    assert select_backend("auto", call(1, 768)).name == "cuda"
    odd = call(1, 640)
    assert get_backend("cuda").supports(odd) is not None and get_backend("triton").supports(odd) is not None
    assert get_backend("alternating").supports(odd) is None
    assert select_backend("auto", odd).name == "alternating"


@pytest.mark.parametrize("f32_output", [True, False], ids=["f32out", "native"])
@pytest.mark.parametrize("D", [16, 20, 70])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_weight_gradient_any_head_size(D, dtype, f32_output, monkeypatch):
    """dR[g, n] = Σ_{t,b} dr[n, t, b, g] ⊗ h_prev[n, t, b] as one GEMM per head, output in dr's dtype, from
    h rounded to dr's dtype (the recurrent GEMM's operand)."""
    monkeypatch.setattr(launch, "FLOAT32_GEMM_OUTPUT", f32_output)
    device = _device()
    GR, NH, T, B = 3, 2, 40, 20
    dr = torch.randn(NH, T, B, GR, D, device=device).to(dtype)
    states = torch.randn(2, NH, T + 1, B, D, device=device)
    dR = launch.weight_gradient(dr, states)
    h = states[0, :, :T].to(dtype).double()
    expected = torch.einsum("ntbgi,ntbj->gnij", dr.double(), h)
    assert dR.dtype == dtype and dR.shape == (GR, NH, D, D) and dR.is_contiguous()
    tf32 = dtype == torch.float32 and device == "cuda" and torch.backends.cuda.matmul.allow_tf32
    assert max_error(dR, expected) < (1e-5 if dtype == torch.float32 and not tf32 else 2e-3)


def test_gemm_modes():
    """float32 inputs: float32 GEMMs; 16-bit: float32 results (CUDA where torch has them, CPU via float32
    copies) unless FLOAT32_GEMM_OUTPUT is off."""
    device = torch.device(_device(), 0) if ON_GPU else torch.device("cpu")
    assert launch.gemm_mode(torch.float32, device) == "native"
    expected = ("f32out" if launch.float32_gemm_output(torch.float16, device) else "native") if ON_GPU else "upcast"
    assert launch.gemm_mode(torch.float16, device) == expected
    a = torch.randn(3, 16, 20, device=device).half()
    w = torch.randn(3, 20, 24, device=device).half()
    out = torch.empty(3, 16, 24, device=device, dtype=torch.float32 if expected != "native" else torch.float16)
    launch._bmm(a, w, out, expected)
    assert max_error(out, a.double() @ w.double()) < (1e-5 if expected != "native" else 1e-2)


@interpreter_only
@pytest.mark.parametrize("cell", CELLS)
def test_alternating_interpreter_input_dtype_gemms(cell, monkeypatch):
    """FLOAT32_GEMM_OUTPUT off: float16 GEMM results (the path of a torch without out_dtype GEMMs), the
    forward on its GEMM path."""
    monkeypatch.setattr(launch, "FLOAT32_GEMM_OUTPUT", False)
    monkeypatch.setenv(launch.FUSED_ENV, "0")
    launch.clear_cache()
    check_against_reference(cell, 3, 7, 2, 48, torch.float16, "cpu")
    assert {k[9] for k in launch.cached_plans() if k[6] == torch.float16} == {"native"}


@interpreter_only
def test_profile_script_runs():
    """The profiling script (benchmarks/profile_alternating.py) on the CPU, tiny shapes."""
    import importlib.util

    path = Path(__file__).parent.parent / "benchmarks" / "profile_alternating.py"
    spec = importlib.util.spec_from_file_location("profile_alternating", path)
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)

    rows = profile.main(
        [
            "--cell",
            "gru",
            "--heads",
            "1x20",
            "--batch",
            "3",
            "--steps",
            "4",
            "--dtype",
            "float32",
            "--reps",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert len(rows) == 12 and all(ms >= 0 for _, ms in rows)


@pytest.mark.gpu
def test_alternating_gpu_inside_a_callers_graph():
    """Called while the caller captures a CUDA graph (after a warm-up call), the step loop is recorded into
    the caller's graph; replaying it with new inputs in the captured tensors gives the new results."""
    cell, dtype = "lstm", torch.float16
    (x, R, b, state), _, _ = _problem(cell, 4, 20, 2, 160, dtype, "cuda")
    with torch.no_grad():
        rnn(x, R, b, state, cell=cell, backend=BACKEND)  # warm-up: compiles, captures the backend's own graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y, final = rnn(x, R, b, state, cell=cell, backend=BACKEND)
        for _ in range(2):
            (x2, R2, b2, state2), _, _ = _problem(cell, 4, 20, 2, 160, dtype, "cuda")
            for static, new in zip((x, R, b, state), (x2, R2, b2, state2)):
                static.copy_(new)
            graph.replay()
            y_ref, final_ref = rnn(*(t.float() for t in (x2, R2, b2, state2)), cell=cell, backend="reference")
            assert max_error(y, y_ref) < TOL[dtype]["fw"] and max_error(final, final_ref) < TOL[dtype]["fw"]
