"""Backend ``triton`` against the reference: forward, final state and every gradient.

On a machine without a GPU these run in Triton's interpreter (float32 and float16; its bfloat16 tl.dot
is wrong); the ``gpu`` cases run the compiled kernels on the device.
"""

import pytest
import torch

from fusedrnn import get_cell, rnn

from .helpers import FUSED_GPU_SHAPES, check_backend, random_problem, run_with_grads

CELLS = ["lstm", "gru", "elman", "slstm"]


def check_against_reference(cell, B, T, NH, D, dtype, device, with_state=True):
    check_backend("triton", cell, B, T, NH, D, dtype, device, with_state)


# --- interpreter (CI) ----------------------------------------------------------------------------------

INTERPRETER_SHAPES = [(1, 1, 1, 16), (3, 7, 2, 16), (2, 5, 1, 20), (17, 3, 1, 32), (3, 63, 1, 16)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter cases run where there is no GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("B,T,NH,D", INTERPRETER_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("cell", CELLS)
def test_triton_interpreter_matches_reference(cell, B, T, NH, D, dtype):
    check_against_reference(cell, B, T, NH, D, dtype, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter cases run where there is no GPU")
@pytest.mark.parametrize("cell", CELLS)
def test_triton_interpreter_fresh_state(cell):
    """Zero initial state: sLSTM's m' = i~ branch and the n' = max(., 1) tie at the first step."""
    check_against_reference(cell, 2, 4, 2, 16, torch.float32, "cpu", with_state=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter cases run where there is no GPU")
def test_triton_refusals_on_cpu():
    x, R, b, state = random_problem("lstm", 2, 3, 1, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 is not run under the Triton interpreter"):
        rnn(x, R, b, state, cell="lstm", backend="triton")
    x, R, b, state = random_problem("lstm", 2, 3, 1, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64 runs on 'reference'"):
        rnn(x, R, b, state, cell="lstm", backend="triton")
    x, R, b, state = random_problem("lstm", 1, 2, 1, 136, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"head_dim 136 > 128 does not fit on chip"):
        rnn(x, R, b, state, cell="lstm", backend="triton")
    x, R, b, state = random_problem("lstm", 1, 2, 1, 128, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"R of 256 KB \(torch.float32\) does not fit on chip \(<= 192 KB\)"):
        rnn(x, R, b, state, cell="lstm", backend="triton")


def test_auto_never_picks_the_interpreter():
    """On CPU tensors under the interpreter the backend runs when named, and auto still takes the reference."""
    from fusedrnn.backends import Call, get_backend, select_backend

    if torch.cuda.is_available():
        pytest.skip("the interpreter runs only where no GPU is (tests/conftest.py)")
    call = Call(get_cell("lstm"), 2, 3, 1, 16, torch.float32, torch.device("cpu"), True)
    assert get_backend("triton").supports(call) is None
    assert select_backend("auto", call).name == "reference"


def test_inference_saves_nothing_and_matches_training():
    """Under no_grad the kernel skips the saved tensors; the outputs are the same."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, R, b, state = random_problem("slstm", 3, 6, 2, 16, dtype=torch.float32, device=device)
    with torch.no_grad():
        y0, f0 = rnn(x, R, b, state, cell="slstm", backend="triton")
    y1, f1 = rnn(x, R, b, state.requires_grad_(), cell="slstm", backend="triton")
    assert torch.equal(y0, y1.detach()) and torch.equal(f0, f1.detach())


# --- GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("D", [16, 32, 64, 128])
@pytest.mark.parametrize("B,T", FUSED_GPU_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("cell", CELLS)
def test_triton_gpu_matches_reference(cell, B, T, D, dtype):
    if dtype == torch.float32 and D == 128 and cell in ("lstm", "slstm"):
        pytest.skip("R of 256 KB in float32 exceeds the on-chip budget (refusal tested separately)")
    NH = 2 if B * T <= 64 * 7 else 1
    check_against_reference(cell, B, T, NH, D, dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,NH,D", [(64, 1024, 3, 64), (5, 33, 2, 48), (16, 256, 6, 128)], ids=str)
def test_triton_gpu_more_shapes(cell, B, T, NH, D):
    check_against_reference(cell, B, T, NH, D, torch.bfloat16, "cuda")


@pytest.mark.gpu
def test_triton_gpu_is_deterministic():
    x, R, b, state = random_problem("lstm", 16, 64, 4, 64, dtype=torch.bfloat16, device="cuda")
    dy = torch.randn(16, 64, 4, 64, device="cuda")
    dfinal = torch.randn(state.shape, device="cuda")
    fn = lambda *a: rnn(*a, cell="lstm", backend="triton")
    first = run_with_grads(fn, (x, R, b, state), dy, dfinal)
    second = run_with_grads(fn, (x, R, b, state), dy, dfinal)
    for a, c in zip(first[2], second[2]):
        assert torch.equal(a, c)


@pytest.mark.gpu
def test_auto_picks_triton_on_gpu():
    from fusedrnn.backends import Call, select_backend

    # head size 40: not a multiple of 16, so 'cuda' (higher priority) refuses and 'triton' pads it
    call = Call(get_cell("lstm"), 16, 1024, 12, 40, torch.bfloat16, torch.device("cuda"), True)
    assert select_backend("auto", call).name == "triton"
