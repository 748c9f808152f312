"""torch.compile: fusedrnn's custom ops (fusedrnn.ops) pass torch.library.opcheck, and models using fusedrnn
compile with fullgraph=True and compute what they compute eagerly (forward and gradients)."""

import pytest
import torch

import fusedrnn.nn as fnn
import fusedrnn.ops  # noqa: F401  (registers the custom ops)
from fusedrnn import rnn

from .helpers import max_error, random_problem

CELLS = ["lstm", "gru", "elman", "slstm"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter cases run where there is no GPU")


def _op_args(cell, backend, dtype, device, lengths, save):
    x, R, b, state = random_problem(cell, 3, 5, 2, 16, dtype=dtype, device=device)
    x, R, b, state = (t.requires_grad_() for t in (x, R, b, state))
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int32, device=device)
    return (x, R, b, state, lens, None, cell, backend, save)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [None, [5, 0, 2]], ids=["full", "lengths"])
def test_opcheck_reference(cell, lengths):
    torch.library.opcheck(
        torch.ops.fusedrnn.forward.default, _op_args(cell, "reference", torch.float64, "cpu", lengths, True)
    )


@no_gpu
@pytest.mark.parametrize("backend", ["triton", "alternating"])
def test_opcheck_fused_interpreter(backend):
    args = _op_args("gru", backend, torch.float32, "cpu", [5, 1, 3], True)
    torch.library.opcheck(
        torch.ops.fusedrnn.forward.default,
        args,
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


class TinyModel(torch.nn.Module):
    def __init__(self, module_cls, **kwargs):
        super().__init__()
        self.rnn = module_cls(6, 16, batch_first=True, **kwargs)
        self.head = torch.nn.Linear(16 * (2 if kwargs.get("bidirectional") else 1), 3)

    def forward(self, x, lengths=None):
        out, _ = self.rnn(x, lengths=lengths)
        return self.head(torch.relu(out)).square().mean()


def _compare_compiled(model, inputs, tol):
    eager = model(*inputs)
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)
    got = compiled(*inputs)
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    assert max_error(got, eager) <= tol
    for g, e in zip(got_grads, eager_grads):
        assert max_error(g, e) <= tol


@pytest.mark.parametrize("module_cls", [fnn.LSTM, fnn.GRU, fnn.RNN, fnn.SLSTM])
def test_module_compiles_fullgraph_cpu(module_cls):
    """The CPU path (reference backend): compiled equals eager up to float32 summation order."""
    torch._dynamo.reset()
    model = TinyModel(module_cls, num_heads=2, num_layers=2, bidirectional=module_cls is fnn.LSTM)
    x = torch.randn(3, 7, 6)
    _compare_compiled(model, (x, torch.tensor([7, 2, 5])), 1e-5)
    _compare_compiled(model, (torch.randn(5, 4, 6),), 1e-5)  # another shape: a recompile, still fullgraph


@no_gpu
def test_functional_compiles_with_triton_interpreter():
    torch._dynamo.reset()
    x, R, b, state = (t.float().requires_grad_() for t in random_problem("lstm", 3, 4, 1, 16))

    def f(x, R, b, state):
        y, final = rnn(x, R, b, state, cell="lstm", backend="triton", lengths=torch.tensor([4, 1, 3]))
        return y.sum() + final.square().sum()

    eager = f(x, R, b, state)
    eager_grads = torch.autograd.grad(eager, (x, R, b, state))
    got = torch.compile(f, fullgraph=True)(x, R, b, state)
    got_grads = torch.autograd.grad(got, (x, R, b, state))
    assert max_error(got, eager) < 1e-5
    assert all(max_error(g, e) < 1e-5 for g, e in zip(got_grads, eager_grads))


def test_compiled_backend_refusal_is_an_error():
    """A backend that cannot run the call fails when the graph is traced, with dispatch's message."""
    torch._dynamo.reset()
    x, R, b, state = random_problem("lstm", 2, 3, 1, 4)

    def f(x):
        return rnn(x, R, b, state, cell="lstm", backend="no-such-backend")[0]

    with pytest.raises(Exception, match="backend: unknown backend 'no-such-backend'"):
        torch.compile(f, fullgraph=True)(x)


@pytest.mark.gpu
@pytest.mark.parametrize("module_cls", [fnn.LSTM, fnn.GRU, fnn.RNN, fnn.SLSTM])
@pytest.mark.parametrize("backend,num_heads", [("cuda", 1), ("triton", 4), ("alternating", 1), ("auto", 2)])
def test_module_compiles_fullgraph_gpu(module_cls, backend, num_heads):
    torch._dynamo.reset()
    model = TinyModel(module_cls, num_heads=num_heads, num_layers=2, backend=backend).cuda().to(torch.bfloat16)
    x = torch.randn(16, 40, 6, device="cuda", dtype=torch.bfloat16)
    lengths = torch.randint(1, 41, (16,))
    # same kernels, same numbers up to the order in which the compiled graph sums the head's gradients
    _compare_compiled(model, (x, lengths), 2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_gpu(dtype):
    """A float32 model under torch.autocast runs the fused kernels in the autocast dtype."""
    model = TinyModel(fnn.LSTM, num_heads=2).cuda()
    x = torch.randn(8, 30, 6, device="cuda")
    expected = model(x)
    with torch.autocast("cuda", dtype=dtype):
        out, (h, _) = model.rnn(x)
        loss = model(x)
    assert out.dtype == dtype and h.dtype == dtype
    assert abs(loss.item() - expected.item()) < 2e-2 * abs(expected.item()) + 1e-3
    loss.backward()
    assert model.rnn.weight_hh_l0.grad.dtype == torch.float32
