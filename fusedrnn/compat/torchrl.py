"""TorchRL's recurrent modules with their recurrence on fusedrnn: ``use_fusedrnn(module)``, one line.

TorchRL (0.14) marks the first step of each trajectory with ``is_init``. In recurrent mode (training batches of
[B, T] holding several trajectories per row) ``GRUModule`` / ``LSTMModule`` must not carry a state across a
trajectory boundary; their ``recurrent_backend="triton"`` runs TorchRL's own Triton kernels with the reset inside
them. ``use_fusedrnn`` keeps the module — its ``nn.GRU`` / ``nn.LSTM`` parameters, keys, primers, sequential mode —
and routes that recurrent-mode call to ``fusedrnn.rnn(..., resets=is_init)`` instead (one fused kernel per layer on a
GPU: ``backend="auto"``)::

    from fusedrnn.compat.torchrl import use_fusedrnn
    gru = use_fusedrnn(GRUModule(input_size=64, hidden_size=512, in_key="obs", out_key="features"))

How the conventions map (docs/resets.md): ``is_init[b, t]`` is fusedrnn's ``resets[b, t]``: the state is the cell's
initial value (zeros) before step t. TorchRL restores the recorded hidden ``recurrent_state[b, t]`` there instead,
which TorchRL's primers set to zeros when an environment resets, so the two agree on the batches its collectors
record; a trajectory's first hidden (column 0) is the initial state in both. Outputs are TorchRL's: the last layer's
output at every step and, in the per-step hidden outputs, each trajectory's final hidden at its last step (zeros
elsewhere). One difference: fusedrnn returns h at every step but c only after each row's last step, so
``LSTMModule``'s per-step ``recurrent_state_c`` holds c at each row's last step (where a rollout continues from it)
and zeros at earlier trajectory ends, where TorchRL writes that trajectory's final c.

Sequential mode (one step per call in a collector) keeps TorchRL's own path (torch's cell, the reset by
``torch.where``). Unidirectional modules without projections only (TorchRL's Triton backend has the same limits).
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.nn import functional as F

from ..api import rnn
from ..cells import get_cell
from ..nn._common import kernel_weights

__all__ = ["use_fusedrnn"]

# TorchRL's module class name -> (its attribute holding the torch RNN, the fusedrnn cell, the method it calls in
# recurrent mode with resets when recurrent_backend == "triton")
_MODULES = {
    "GRUModule": ("gru", "gru", "_gru_triton_with_resets"),
    "LSTMModule": ("lstm", "lstm", "_lstm_triton_with_resets"),
}


def use_fusedrnn(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Run ``module``'s (a ``torchrl.modules.GRUModule`` or ``LSTMModule``) recurrent mode on fusedrnn, with
    trajectory resets inside the kernels; returns the module itself (changed in place). ``backend``: a fusedrnn
    backend name, or "auto". Raises TypeError for other modules, ValueError for bidirectional or projected RNNs,
    and for a TorchRL whose modules lack the recurrent-mode method this hooks into (written for TorchRL 0.14)."""
    found = _MODULES.get(type(module).__name__) if type(module).__module__.startswith("torchrl.") else None
    if found is None:
        raise TypeError(f"module: expected torchrl.modules.GRUModule or LSTMModule, got {type(module).__name__}")
    attribute, cell, method = found
    inner = getattr(module, attribute)
    if not isinstance(inner, nn.RNNBase):
        raise TypeError(f"module.{attribute}: expected a torch.nn.RNNBase, got {type(inner).__name__}")
    if inner.bidirectional or inner.proj_size:
        raise ValueError(f"module.{attribute}: fusedrnn's TorchRL path runs unidirectional RNNs without projections")
    if not callable(getattr(module, method, None)):
        raise ValueError(f"module: this TorchRL has no {type(module).__name__}.{method} (use_fusedrnn targets 0.14)")
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str), got {type(backend).__name__}")

    def with_resets(
        self: nn.Module, input: torch.Tensor, *hidden_and_is_init: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        *hidden, is_init = hidden_and_is_init  # GRU: hidden [B, T, L, H]; LSTM: hidden, cell
        return _recurrent(getattr(self, attribute), cell, backend, input, hidden, is_init)

    # TorchRL then passes is_init through without splitting trajectories (setattr: a plain attribute of its module)
    setattr(module, "recurrent_backend", "triton")  # noqa: B010
    setattr(module, method, types.MethodType(with_resets, module))
    return module


def _recurrent(
    net: nn.RNNBase, cell: str, backend: str, x: torch.Tensor, hidden: list[torch.Tensor], is_init: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """TorchRL's recurrent-mode outputs (y [B, T, H], then each per-step hidden [B, T, L, H]) from x [B, T, I], the
    per-step hiddens and is_init [B, T], one fusedrnn.rnn call per layer."""
    B, T = x.shape[:2]
    spec, H = get_cell(cell), net.hidden_size
    resets = is_init.clone()
    resets[:, 0] = False  # step 0 starts from the recorded hidden, as in TorchRL
    layer_input, outputs, finals = x, [], []
    for layer in range(net.num_layers):
        names = net._all_weights[layer]
        w_ih, w_hh = getattr(net, names[0]), getattr(net, names[1])
        b_ih, b_hh = (getattr(net, names[2]), getattr(net, names[3])) if net.bias else (None, None)
        R, b = kernel_weights(spec, w_hh, b_hh, 1, H)
        gates = F.linear(layer_input, w_ih, b_ih).view(B, T, spec.num_gates_x, 1, H)
        state = torch.stack([h[:, 0, layer] for h in hidden]).view(spec.num_states, B, 1, H)  # [S, B, 1, H]
        y, final = rnn(gates, R, b, state, cell=spec, backend=backend, resets=resets)
        y = y.view(B, T, H)
        outputs.append(y)
        finals.append(final.view(spec.num_states, B, H))
        last = layer == net.num_layers - 1
        layer_input = y if last or not net.dropout else F.dropout(y, net.dropout, training=net.training)
    # each trajectory's final hidden at its last step (TorchRL's layout), zeros elsewhere
    ends = torch.empty_like(is_init)
    ends[:, :-1] = is_init[:, 1:]
    ends[:, -1] = True
    h_steps = torch.where(ends[:, :, None, None], torch.stack(outputs, dim=2), 0.0)  # [B, T, L, H]
    result = [layer_input, h_steps]
    for s in range(1, spec.num_states):  # LSTM's c: known after each row's last step only
        other = torch.zeros_like(h_steps)
        other[:, -1] = torch.stack([f[s] for f in finals], dim=1)
        result.append(other)
    return tuple(result)
