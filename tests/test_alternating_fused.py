"""The alternating backend's fused forward step kernel (``forward_fused_step_kernel``): against the GEMM path
(cuBLAS + pointwise kernel, same saved tensors) and, forward and gradients, against the reference.

Without a GPU the kernels run in Triton's interpreter (float32 and float16) and the step loop eagerly; the
``gpu`` cases run the compiled kernel inside the backend's CUDA graphs.
"""

import importlib.util
import pathlib

import pytest
import torch

from fusedrnn import get_cell
from fusedrnn.backends.alternating import launch

from .helpers import TOL, check_backend, max_error, problem_with_grads, random_problem, run_with_grads
from .test_alternating import BACKEND, ON_GPU, _alternating, _compare, _reference
from .test_alternating import check_against_reference as _check_reference
from .test_triton import CELLS

interpreter_only = pytest.mark.skipif(ON_GPU, reason="the interpreter cases run where there is no GPU")
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def fused_on(monkeypatch):
    """The fused forward whatever the environment says (FUSEDRNN_ALTERNATING_FUSED may be set to 0)."""
    monkeypatch.setenv(launch.FUSED_ENV, "1")


def _paths(key) -> str:
    return "gemm" if key[13] == "gemm" else "fused"


def _forward_both(cell, B, T, NH, D, dtype, device, lengths=None, **tile):
    """launch.forward (saving) on the GEMM path and on the fused path, on one fresh problem."""
    x, R, b, state = random_problem(cell, B, T, NH, D, dtype=dtype, device=device)
    if lengths is not None:
        lengths = torch.tensor(lengths, dtype=torch.int32, device=device)
    gemm = launch.forward(cell, x, R, b, state, lengths, True, fused=False)
    fused = launch.forward(cell, x, R, b, state, lengths, True, fused=True, **tile)
    return gemm, fused


# float32: both paths compute exact float32 products and differ only in the summation order of R·h.
# float16: the same, but h is rounded to float16 as the MMA operand; where the two float32 values of h sit on
# either side of a float16 rounding boundary, h differs by one float16 ulp (2^-11 relative) and the next
# steps' R·h by up to that times the row sum |R[g, i, :]|·|h| (~0.5 here): 2e-3 covers it.
_PATH_TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def _assert_same(gemm, fused, dtype):
    for name, got, expected in zip(["y", "final", "pre", "states"], fused, gemm):
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        assert max_error(got, expected) < _PATH_TOL[dtype], name


# --- interpreter (CI) ----------------------------------------------------------------------------------

# B = 1 and 3, T = 1 and 7, NH = 1..3; D = 20 (one partial hidden-unit block, inputs not a multiple of the
# k tile) and 48 (three blocks of 16 units)
SHAPES = [(1, 1, 1, 20), (3, 7, 1, 48), (1, 7, 3, 20), (3, 1, 2, 48)]


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("B,T,NH,D", SHAPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_fused_matches_gemm_path(cell, B, T, NH, D, dtype):
    """y, final, pre and states of the fused forward equal the GEMM path's within float32 rounding."""
    launch.clear_cache()
    gemm, fused = _forward_both(cell, B, T, NH, D, dtype, "cpu")
    _assert_same(gemm, fused, dtype)
    assert sorted(_paths(k) for k in launch.cached_plans()) == ["fused", "gemm"]


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_fused_matches_gemm_path_with_lengths(cell, dtype):
    """Rows shorter than T (one of length 0) keep their states and write y = 0 on both paths."""
    gemm, fused = _forward_both(cell, 3, 5, 2, 20, dtype, "cpu", lengths=[5, 0, 3])
    _assert_same(gemm, fused, dtype)
    assert (fused[0][1] == 0).all() and (fused[0][2, 3:] == 0).all()


# Tiles other than the defaults: hidden-unit blocks below 16 (4 gates x 4 or 8 MMA rows) and above D, k tiles
# smaller than D (several k steps, a partial last one; with two accumulators also an empty one), one and two
# accumulators, two batch tiles (B = 20 in tiles of 16)
TILES = [
    {"block_j": 4, "block_k": 16},
    {"block_j": 8, "block_k": 32, "k_chains": 1},
    {"block_j": 32, "block_k": 16, "block_b": 16},
    {"block_j": 16, "block_k": 16, "k_chains": 2, "num_warps": 2, "num_stages": 2},
]


@interpreter_only
@pytest.mark.parametrize("tile", TILES, ids=lambda t: "-".join(f"{k}{v}" for k, v in t.items()))
@pytest.mark.parametrize("cell", CELLS)
def test_fused_tiles_match_gemm_path(cell, tile):
    if cell == "elman" and tile["block_j"] < 16:
        pytest.skip("one gate: the MMA's rows are the hidden units alone, at least 16")
    launch.clear_cache()
    gemm, fused = _forward_both(cell, 20, 2, 1, 36, torch.float32, "cpu", **tile)
    _assert_same(gemm, fused, torch.float32)
    (key,) = [k for k in launch.cached_plans() if _paths(k) == "fused"]
    assert key[13] == launch.forward_tile(
        get_cell(cell).num_gates_r, 20, 1, 36, torch.float32, torch.device("cpu"), True, **tile
    )


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("B,T,NH,D", SHAPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_fused_backend_matches_reference(cell, B, T, NH, D, dtype, fused_on):
    """Forward and every gradient through the backend (fused forward, GEMM-path backward)."""
    launch.clear_cache()
    _check_reference(cell, B, T, NH, D, dtype, "cpu")
    assert {_paths(k) for k in launch.cached_plans() if k[0] == "fw"} == {"fused"}


@interpreter_only
@pytest.mark.parametrize("cell", CELLS)
def test_fused_backend_matches_reference_with_lengths(cell, fused_on):
    check_backend(BACKEND, cell, 3, 5, 2, 20, torch.float32, "cpu", lengths=[5, 0, 3])


@interpreter_only
def test_fused_fresh_state(fused_on):
    """Zero initial state (sLSTM's m' = ĩ branch and the n' = max(., 1) tie at the first step)."""
    _check_reference("slstm", 2, 4, 2, 16, torch.float32, "cpu", with_state=False)


def test_path_rule(monkeypatch):
    """Fused for B <= FUSED_MAX_BATCH unless FUSEDRNN_ALTERNATING_FUSED=0; ``fused`` overrides both."""
    cpu = torch.device("cpu")
    monkeypatch.delenv(launch.FUSED_ENV, raising=False)
    tile = launch.forward_tile(4, 16, 1, 768, torch.bfloat16, cpu)
    assert tile == launch.FusedTile(block_b=16, block_j=16, block_k=128, k_chains=1, num_warps=4, num_stages=3)
    assert launch.forward_tile(4, 3, 1, 20, torch.float32, cpu).block_k == 32  # D = 20: k tiles of 32
    assert launch.forward_tile(4, 40, 1, 768, torch.float32, cpu, fused=True).block_b == 64
    assert launch.forward_tile(4, launch.FUSED_MAX_BATCH + 1, 1, 768, torch.bfloat16, cpu) is None
    assert launch.forward_tile(4, 65, 1, 768, torch.bfloat16, cpu, fused=True).block_b == 64
    monkeypatch.setenv(launch.FUSED_ENV, "0")
    assert launch.forward_tile(4, 16, 1, 768, torch.bfloat16, cpu) is None
    assert launch.forward_tile(4, 16, 1, 768, torch.bfloat16, cpu, fused=True) == tile
    with pytest.raises(TypeError, match="unknown fused tile fields"):
        launch.forward_tile(4, 16, 1, 768, torch.bfloat16, cpu, fused=True, block_n=16)
    with pytest.raises(ValueError, match="block_j = 4"):
        launch.forward_tile(1, 16, 1, 768, torch.bfloat16, cpu, fused=True, block_j=4)  # one gate: >= 16 rows
    with pytest.raises(ValueError, match="block_k = 48"):
        launch.forward_tile(4, 16, 1, 768, torch.bfloat16, cpu, fused=True, block_k=48)
    with pytest.raises(ValueError, match="k_chains = 3"):
        launch.forward_tile(4, 16, 1, 768, torch.bfloat16, cpu, fused=True, k_chains=3)

    # below a 64-row (wgmma) MMA tile two accumulators and a warp per 16 rows, unless given
    def chains_and_warps(num_gates_r, **tile):
        chosen = launch.forward_tile(num_gates_r, 16, 1, 768, torch.bfloat16, cpu, fused=True, **tile)
        return chosen.k_chains, chosen.num_warps

    assert chains_and_warps(4) == (1, 4)
    assert chains_and_warps(4, block_j=8) == (2, 2)
    assert chains_and_warps(4, block_j=4) == (2, 1)
    assert chains_and_warps(4, block_j=8, k_chains=1) == (1, 4)
    assert chains_and_warps(4, block_j=8, num_warps=4) == (2, 4)
    assert chains_and_warps(4, block_j=16, k_chains=2) == (2, 4)
    assert chains_and_warps(1) == (2, 1)


def test_default_block_j_fills_the_sms(monkeypatch):
    """On a GPU of 132 SMs: the smallest hidden-unit block whose programs all fit at once."""
    monkeypatch.setattr(launch, "_sms", lambda device: 132)
    cuda = torch.device("cuda")

    def block_j(num_gates_r, B, NH, D):
        return launch.forward_tile(num_gates_r, B, NH, D, torch.bfloat16, cuda, fused=True).block_j

    assert block_j(4, 16, 1, 768) == 8  # 96 programs (4: 192)
    assert block_j(3, 16, 1, 768) == 8
    assert block_j(1, 16, 1, 768) == 16  # one gate: 16 MMA rows
    assert block_j(4, 16, 12, 64) == 8  # 96 programs
    assert block_j(4, 16, 1, 256) == 4  # 64 programs
    assert block_j(4, 16, 1, 4096) == 16  # 256 programs at 16 already: the largest tile
    assert block_j(4, 64, 1, 768) == 8


@interpreter_only
def test_bench_script_runs():
    """benchmarks/alt_fused_bench.py on the CPU, tiny shapes."""
    rows = _bench_script().main(
        [
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--cells",
            "gru",
            "--steps",
            "2",
            "--hidden",
            "32",
            "--big-hidden",
            "40",
            "--batch",
            "3",
            "--large-batches",
            "5",
            "--reps",
            "1",
            "--warmup",
            "0",
        ]
    )
    assert len(rows) == 4 + len(BENCH_TILES) + 4 + 2 and all(r["ms"] > 0 for r in rows)
    assert {r["path"] for r in rows if r["case"] == "gru 1x32"} == {"gemm", "fused b16 j16 k32 c1 w4 s3"}


def test_plan_key_says_the_path(monkeypatch):
    """One shape on both paths: two forward plans, told apart by the key's last entry."""
    launch.clear_cache()
    device = "cuda" if ON_GPU else "cpu"
    x, R, b, state = random_problem("gru", 3, 2, 1, 20, dtype=torch.float32, device=device)
    launch.forward("gru", x, R, b, state, None, False)
    monkeypatch.setenv(launch.FUSED_ENV, "0")
    launch.forward("gru", x, R, b, state, None, False)
    keys = list(launch.cached_plans())
    assert len(keys) == 2 and {_paths(k) for k in keys} == {"fused", "gemm"}
    fused = next(p for k, p in launch.cached_plans().items() if _paths(k) == "fused")
    assert fused.gates is None and fused.hbuf.shape == (2, 1, 3, 20)


# --- GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("D", [64, 768, 1024])
@pytest.mark.parametrize("B", [1, 16])
@pytest.mark.parametrize("T", [7, 300])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_gpu_matches_reference(cell, T, B, D, dtype, fused_on):
    NH = 2 if D == 64 else 1
    _check_reference(cell, B, T, NH, D, dtype, "cuda")
    keys = [k for k in launch.cached_plans() if k[0] == "fw" and k[1:6] == (cell, B, T, NH, D) and k[6] == dtype]
    assert keys and {_paths(k) for k in keys} == {"fused"}


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
def test_gemm_path_gpu_matches_reference(cell, monkeypatch):
    """The GEMM path (FUSEDRNN_ALTERNATING_FUSED=0) at the benchmark's size."""
    monkeypatch.setenv(launch.FUSED_ENV, "0")
    _check_reference(cell, 16, 256, 1, 768, torch.bfloat16, "cuda")


def _bench_script():
    spec = importlib.util.spec_from_file_location("alt_fused_bench", ROOT / "benchmarks" / "alt_fused_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the tile alternatives that the benchmark times: each must be right before it is timed
BENCH_TILES = _bench_script().TILES


@pytest.mark.gpu
@pytest.mark.parametrize("tile", BENCH_TILES, ids=lambda t: "-".join(f"{k}{v}" for k, v in t.items()) or "default")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_gpu_tiles_match_gemm_path(cell, tile):
    """bfloat16 LSTM / GRU 1 x 768, B = 16, T = 64: every tile alternative against the GEMM path (both with
    float32 R·h from bfloat16 operands; a one-ulp flip of a bfloat16 h moves later steps by ~1e-2)."""
    gemm, fused = _forward_both(cell, 16, 64, 1, 768, torch.bfloat16, "cuda", **tile)
    for name, got, expected in zip(["y", "final", "pre", "states"], fused, gemm):
        assert max_error(got, expected) < TOL[torch.bfloat16]["fw"], name


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_fused_gpu_graph_replay_is_consistent(dtype, fused_on):
    """The second call of a shape replays the graph the first captured: same inputs, same bits; the first
    call's outputs and gradients survive the second."""
    launch.clear_cache()
    inputs, dy, dfinal = problem_with_grads("lstm", 16, 100, 1, 768, dtype, "cuda")
    first = run_with_grads(_alternating("lstm"), inputs, dy, dfinal)
    kept = [t.clone() for t in (first[0], first[1], *first[2])]
    second = run_with_grads(_alternating("lstm"), inputs, dy, dfinal)
    for a, b, c in zip((first[0], first[1], *first[2]), (second[0], second[1], *second[2]), kept):
        assert torch.equal(a, b) and torch.equal(a, c)
    (fw,) = [p for k, p in launch.cached_plans().items() if k[0] == "fw"]
    assert fw.tile is not None and fw.graph is not None and fw.replays == 1
    _compare("lstm", dtype, first, _reference(inputs, "lstm", dy, dfinal))


@pytest.mark.gpu
def test_fused_gpu_no_grad_replay_is_consistent(fused_on):
    """Inference (no saving): two calls of one shape, the second a replay, give the same bits."""
    x, R, b, state = random_problem("slstm", 16, 200, 1, 768, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        y1, f1 = launch.forward("slstm", x, R, b, state, None, False)[:2]
        y2, f2 = launch.forward("slstm", x, R, b, state, None, False)[:2]
    assert torch.equal(y1, y2) and torch.equal(f1, f2)
