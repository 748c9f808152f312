"""``fusedrnn.compat.torchrl.use_fusedrnn``: TorchRL's GRUModule / LSTMModule in recurrent mode, with
trajectories reset by ``is_init`` inside a row, on fusedrnn against the same module on TorchRL's own path
(outputs, per-step hiddens and the gradients of the input and every parameter)."""

from __future__ import annotations

import importlib.util
import multiprocessing

import pytest
import torch

from fusedrnn.compat.torchrl import use_fusedrnn

from .helpers import max_error

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchrl") is None, reason="torchrl is not installed (it is part of the test extra)"
)


@pytest.fixture(autouse=True)
def _keep_the_start_method():
    """Importing torchrl sets multiprocessing's start method to "spawn" for the whole process; other tests fork
    workers that must inherit their monkeypatches. Imported here, inside the tests, and the method put back."""
    method = multiprocessing.get_start_method(allow_none=True)
    yield
    multiprocessing.set_start_method(method, force=True)


def _modules(kind: str, layers: int):
    """TorchRL's module and a copy (same parameters) switched to fusedrnn, float64, in recurrent mode."""
    from torchrl.modules import GRUModule, LSTMModule

    cls = GRUModule if kind == "gru" else LSTMModule
    keys = ["h"] if kind == "gru" else ["h", "c"]

    def build():
        return cls(
            input_size=5,
            hidden_size=8,
            num_layers=layers,
            in_keys=["obs", *keys],
            out_keys=["out", *[("next", k) for k in keys]],
            default_recurrent_mode=True,
        ).double()

    theirs, ours = build(), build()
    ours.load_state_dict(theirs.state_dict())
    return theirs, use_fusedrnn(ours), keys


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_use_fusedrnn_equals_torchrl(kind, layers):
    """Several trajectories per row (is_init inside rows, at step 0 of some), recorded hiddens zero at is_init steps
    after the first, as TorchRL's primers record them, and random at step 0."""
    B, T = 4, 11
    theirs, ours, keys = _modules(kind, layers)
    is_init = torch.rand(B, T) < 0.25
    is_init[0, 0] = is_init[1, 5] = is_init[2, T - 1] = True
    hidden = {k: torch.randn(B, T, layers, 8, dtype=torch.float64) * ~is_init[..., None, None] for k in keys}
    for k in keys:
        hidden[k][:, 0] = torch.randn(B, layers, 8, dtype=torch.float64)
    obs = torch.randn(B, T, 5, dtype=torch.float64)
    weights = torch.randn(B, T, 8, dtype=torch.float64)

    from tensordict import TensorDict

    def run(module):
        x = obs.clone().requires_grad_()
        td = TensorDict({"obs": x, "is_init": is_init[..., None], **{k: v.clone() for k, v in hidden.items()}}, [B, T])
        out = module(td)
        loss = (out["out"] * weights).sum() + out["next", "h"].sum()
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        return out, grads

    (expected, expected_grads), (got, grads) = run(theirs), run(ours)
    assert max_error(got["out"], expected["out"]) < 1e-12
    assert max_error(got["next", "h"], expected["next", "h"]) < 1e-12
    if kind == "lstm":  # c after each row's last step (docs: earlier trajectory ends hold zeros)
        assert max_error(got["next", "c"][:, -1], expected["next", "c"][:, -1]) < 1e-12
    assert all(max_error(g, e) < 1e-12 for g, e in zip(grads, expected_grads))


def test_use_fusedrnn_refuses_what_it_cannot_run():
    from torchrl.modules import GRUModule

    with pytest.raises(TypeError, match="GRUModule or LSTMModule"):
        use_fusedrnn(torch.nn.GRU(3, 4))
    bidirectional = GRUModule(input_size=3, hidden_size=4, bidirectional=True, in_key="x", out_key="y")
    with pytest.raises(ValueError, match="unidirectional"):
        use_fusedrnn(bidirectional)
