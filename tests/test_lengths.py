"""Variable-length batches in ``fusedrnn.rnn(..., lengths=)``: every backend against the reference, the
reference against running each row alone, and the checks of the argument."""

import pytest
import torch

from fusedrnn import get_cell, initial_state, rnn

from .helpers import check_backend, max_error, random_problem, run_with_grads

CELLS = ["lstm", "gru", "elman", "slstm"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter cases run where there is no GPU")


@pytest.mark.parametrize("cell", CELLS)
def test_reference_lengths_equal_each_row_alone(cell):
    """Row b with lengths[b] = L gives y[b, :L] and the final state of an L-step call on that row alone
    (forward and every gradient), zeros after L, and its initial state when L = 0. float64."""
    B, T, NH, D = 4, 9, 2, 3
    lengths = [9, 0, 4, 1]
    inputs = random_problem(cell, B, T, NH, D)
    dy = torch.randn(B, T, NH, D, dtype=torch.float64)
    dfinal = torch.randn(inputs[3].shape, dtype=torch.float64)
    y, final, grads = run_with_grads(
        lambda *a: rnn(*a, cell=cell, backend="reference", lengths=torch.tensor(lengths)), inputs, dy, dfinal
    )
    dx, dR, db, dstate = grads
    dR_sum, db_sum = torch.zeros_like(dR), torch.zeros_like(db)
    for row, L in enumerate(lengths):
        assert (y[row, L:] == 0).all()
        assert (dx[row, L:] == 0).all()  # x after a row's length is never read
        if L == 0:
            assert torch.equal(final[:, row], inputs[3][:, row])
            # run_with_grads takes <final.float(), dfinal>: the gradient arrives rounded to float32
            assert torch.equal(dstate[:, row], dfinal[:, row].float().double())
            continue
        x, R, b, state = inputs
        row_inputs = (x[row : row + 1, :L], R, b, state[:, row : row + 1])
        y_r, final_r, (dx_r, dR_r, db_r, dstate_r) = run_with_grads(
            lambda *a: rnn(*a, cell=cell, backend="reference"),
            row_inputs,
            dy[row : row + 1, :L],
            dfinal[:, row : row + 1],
        )
        assert max_error(y[row, :L], y_r[0]) < 1e-12
        assert max_error(final[:, row], final_r[:, 0]) < 1e-12
        assert max_error(dx[row, :L], dx_r[0]) < 1e-12
        assert max_error(dstate[:, row], dstate_r[:, 0]) < 1e-12
        dR_sum += dR_r
        db_sum += db_r
    assert max_error(dR, dR_sum) < 1e-12 and max_error(db, db_sum) < 1e-12


@pytest.mark.parametrize("backend", ["reference", "triton", "alternating"])
def test_lengths_all_full_is_the_unmasked_call(backend):
    """rnn drops lengths that are all T (the kernels without masks run), and the masked path itself, given such
    lengths, computes the unmasked function."""
    from fusedrnn.api import check_lengths
    from fusedrnn.backends import get_backend

    assert check_lengths([5, 5, 5], 3, 5, torch.device("cpu"), check_values=True) is None
    dtype = torch.float64 if backend == "reference" else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"  # without a GPU: Triton's interpreter
    x, R, b, state = random_problem("lstm", 3, 5, 2, 16, dtype=dtype, device=device)
    run = get_backend(backend).run
    expected = run(get_cell("lstm"), x, R, b, state, None)
    got = run(get_cell("lstm"), x, R, b, state, torch.full((3,), 5, dtype=torch.int32, device=device))
    tol = 0.0 if backend == "reference" else 1e-6
    assert all(max_error(g, e) <= tol for g, e in zip(got, expected))


def test_lengths_accept_any_integer_tensor_or_list():
    x, R, b, state = random_problem("gru", 3, 5, 1, 4)
    expected = rnn(x, R, b, state, cell="gru", lengths=torch.tensor([5, 2, 0]))
    for lengths in (
        [5, 2, 0],
        (5, 2, 0),
        torch.tensor([5, 2, 0], dtype=torch.int32),
        torch.tensor([5, 2, 0]).to(torch.uint8),
    ):
        got = rnn(x, R, b, state, cell="gru", lengths=lengths)
        assert all(torch.equal(g, e) for g, e in zip(got, expected))


@pytest.mark.parametrize(
    "lengths, error, match",
    [
        ([5, 2], ValueError, r"lengths: expected shape \(3,\) \(one length per batch row of x\), got \(2,\)"),
        ([[5, 2, 0]], ValueError, r"lengths: expected shape \(3,\)"),
        ([5, 2, 6], ValueError, r"lengths: expected values in 0..5 \(T, the steps of x\), got min 2, max 6"),
        ([5, -1, 0], ValueError, r"lengths: expected values in 0..5 .*got min -1, max 5"),
        (torch.tensor([5.0, 2.0, 0.0]), TypeError, r"lengths: expected an integer dtype, got torch.float32"),
        (torch.tensor([True, False, True]), TypeError, r"lengths: expected an integer dtype, got torch.bool"),
        ("abc", TypeError, r"lengths: expected a tensor or sequence of 3 integers, got str"),
    ],
)
def test_lengths_errors(lengths, error, match):
    x, R, b, state = random_problem("lstm", 3, 5, 1, 4)
    before = [t.clone() for t in (x, R, b, state)]
    with pytest.raises(error, match=match):
        rnn(x, R, b, state, cell="lstm", lengths=lengths)
    assert all(torch.equal(t, u) for t, u in zip((x, R, b, state), before))  # nothing corrupted


def test_lengths_with_empty_batch_or_sequence():
    x, R, b, state = random_problem("lstm", 0, 5, 1, 4)
    y, final = rnn(x, R, b, state, cell="lstm", lengths=torch.zeros(0, dtype=torch.int64))
    assert y.shape == (0, 5, 1, 4) and final.shape == (2, 0, 1, 4)
    x, R, b, state = random_problem("lstm", 2, 0, 1, 4)
    y, final = rnn(x, R, b, state, cell="lstm", lengths=[0, 0])
    assert y.shape == (2, 0, 1, 4) and torch.equal(final, state)


def test_fresh_state_and_zero_length_rows():
    x, R, b, _ = random_problem("slstm", 2, 3, 1, 4)
    _, final = rnn(x, R, b, cell="slstm", lengths=[0, 3])
    assert torch.equal(final[:, 0], initial_state("slstm", 1, 1, 4, dtype=x.dtype)[:, 0])


# --- fused backends in the interpreter (CI) --------------------------------------------------------------


@no_gpu
@pytest.mark.parametrize("backend", ["triton", "alternating"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_fused_backends_lengths_interpreter(backend, cell, dtype):
    check_backend(backend, cell, 3, 7, 2, 16, dtype, "cpu", lengths=[7, 0, 3])


@no_gpu
@pytest.mark.parametrize("backend", ["triton", "alternating"])
def test_fused_backends_lengths_fresh_state_interpreter(backend):
    check_backend(
        backend,
        "slstm",
        17,
        4,
        1,
        16,
        torch.float32,
        "cpu",
        with_state=False,
        lengths=[4, 1, 2, 3, 0, 4, 4, 1, 2, 3, 4, 4, 0, 1, 2, 3, 4],
    )


# --- GPU ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "alternating"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B,T,D", [(3, 7, 64), (16, 100, 32), (64, 33, 128)], ids=str)
def test_fused_backends_lengths_gpu(backend, cell, dtype, B, T, D):
    from fusedrnn.backends import Call, get_backend

    call = Call(get_cell(cell), B, T, 2, D, dtype, torch.device("cuda"), True, has_lengths=True)
    reason = get_backend(backend).supports(call)
    if reason is not None:  # e.g. float32 R of D = 128 for LSTM does not fit on chip; refusals are tested apart
        pytest.skip(reason)
    generator = torch.Generator().manual_seed(B * T + D)
    lengths = torch.randint(0, T + 1, (B,), generator=generator)
    lengths[0] = T  # the longest row runs all steps
    check_backend(backend, cell, B, T, 2, D, dtype, "cuda", lengths=lengths.tolist())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "alternating"])
def test_lengths_on_the_gpu(backend):
    """lengths already on the GPU (not value-checked, no synchronisation) give the same numbers."""
    x, R, b, state = random_problem("lstm", 5, 9, 2, 32, dtype=torch.bfloat16, device="cuda")
    lengths = torch.tensor([9, 3, 0, 8, 1])
    on_cpu = rnn(x, R, b, state, cell="lstm", backend=backend, lengths=lengths)
    on_gpu = rnn(x, R, b, state, cell="lstm", backend=backend, lengths=lengths.cuda())
    assert all(torch.equal(g, e) for g, e in zip(on_gpu, on_cpu))
