"""Decoding one step at a time: ``Decoder`` (``module.decoder(batch)``) and the step plan behind ``module.step``.

What a step of a layer needs is decided once per module and call shape (batch, dtype, device): the checks, the
backend (``select_backend`` for one step without gradient), each layer's R and b in the kernels' form (views, kept
while the parameters are unchanged: ``fusedrnn.derived.fingerprint``). A step then costs per layer the input
projection (one GEMM), the backend's one-step launch and, for a ``Decoder``, one copy of the new state into its
state buffer: the state stays where it is, so a captured CUDA graph replays the decode loop.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, cast

import torch
from torch.nn import functional as F

from ..api import initial_state
from ..backends import Call, select_backend
from ..derived import fingerprint
from ._common import check_state_parts, kernel_weights

if TYPE_CHECKING:
    from .modules import RecurrentBase

__all__ = ["Decoder", "StepPlan", "step_plan"]


class StepPlan:
    """One step of every layer of ``module`` for inputs [batch, input_size] of ``dtype`` on ``device``, without
    autograd (see the module's docstring). ``module.step`` keeps one per call shape; it references the module's
    parameters, not the module."""

    def __init__(self, module: RecurrentBase, batch: int, dtype: torch.dtype, device: torch.device) -> None:
        cell = module.cell
        self.cell, self.batch, self.dtype, self.device = cell, batch, dtype, device
        self.num_layers, self.num_heads, self.head_dim = module.num_layers, module.num_heads, module.head_dim
        call = Call(cell, batch, 1, module.num_heads, module.head_dim, dtype, device, False)
        self.run = select_backend(module.backend, call).run
        self.initial = initial_state(cell, batch, module.num_heads, module.head_dim, dtype=dtype, device=device)
        self._params = module._parameters
        self._names = list(module._all_weights)
        self._weights: list[tuple[tuple, tuple] | None] = [None] * module.num_layers

    def layer_weights(self, layer: int) -> tuple:
        """(weight_ih, bias_ih, R, b) of ``layer``; R and b rebuilt only when a parameter changed or moved."""
        names = self._names[layer]
        tensors = [cast(torch.Tensor, self._params[name]) for name in names]
        key = tuple(fingerprint(t) for t in tensors)
        entry = self._weights[layer]
        if entry is None or entry[0] != key or None in key:
            for name, t in zip(names, tensors):
                if t.dtype != self.dtype or t.device != self.device:
                    raise RuntimeError(
                        f"{name}: expected {self.dtype} on {self.device} (when this step plan was made), got "
                        f"{t.dtype} on {t.device}; make a new decoder"
                    )
            w_ih, w_hh = tensors[0], tensors[1].detach()
            b_ih, b_hh = (tensors[2], tensors[3].detach()) if len(tensors) == 4 else (None, None)
            R, b = kernel_weights(self.cell, w_hh, b_hh, self.num_heads, self.head_dim)
            entry = (key, (w_ih, b_ih, R, b))
            self._weights[layer] = entry
        return entry[1]

    def advance(self, x: torch.Tensor, states: list[torch.Tensor], out: list[torch.Tensor] | None) -> torch.Tensor:
        """The last layer's h [B, H] after one step from ``states`` (per layer [S, B, NH, D]); the new states go
        into ``out`` (per layer, in place) or, when None, into ``states``."""
        B, NH, D, cell = self.batch, self.num_heads, self.head_dim, self.cell
        with torch.no_grad():
            for layer in range(self.num_layers):
                w_ih, b_ih, R, b = self.layer_weights(layer)
                gates = F.linear(x, w_ih, b_ih).view(B, 1, cell.num_gates_x, NH, D)
                y, final = self.run(cell, gates, R, b, states[layer], None)
                (states if out is None else out)[layer].copy_(final)
                x = y.view(B, NH * D)
        return x


_STEP_PLANS: weakref.WeakKeyDictionary[RecurrentBase, dict[tuple, StepPlan]] = weakref.WeakKeyDictionary()


def step_plan(module: RecurrentBase, batch: int, dtype: torch.dtype, device: torch.device) -> StepPlan:
    """The module's StepPlan of this call shape and its current backend name, made on first use."""
    plans = _STEP_PLANS.setdefault(module, {})
    key = (batch, dtype, device, module.backend)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = StepPlan(module, batch, dtype, device)
    return plan


class Decoder:
    """Step-by-step inference with the state kept in place: ``h = decoder(x)`` runs one step of every layer on
    x [batch, input_size] and returns the last layer's h [batch, hidden_size]; ``decoder.state`` holds the states
    (torch's format: per state a view [num_layers, batch, hidden_size] of one buffer, updated in place).

    Made by ``module.decoder(batch, hx=None)``. The checks and the backend are decided once, here; a step costs
    per layer a GEMM, the backend's one-step launch and a copy of the new state, nothing else on the host. No
    autograd and no dropout between layers, as in eval mode (use ``module.step`` or ``forward`` to train). The
    input's shape, dtype and device are checked on every call; the parameters are read live (an optimizer step is
    seen). In a CUDA graph: capture ``h = decoder(x_static)`` after one eager call; every replay advances the
    state. The returned h is the graph's (or the call's) output buffer: the next call may overwrite it."""

    def __init__(self, module: RecurrentBase, batch: int, hx: object = None) -> None:
        if module.bidirectional:
            raise ValueError("decoder: a bidirectional layer needs the whole sequence; call forward")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
        weight = module._parameters["weight_ih_l0"]
        assert weight is not None
        self.module = module
        self.plan = step_plan(module, batch, weight.dtype, weight.device)
        cell, L, NH, D = module.cell, module.num_layers, module.num_heads, module.head_dim
        self.input_shape = (batch, module.input_size)
        # [L, S, B, NH, D]: each layer's states contiguous, as the kernels read them
        with torch.inference_mode(False):  # updated in place by later calls, inside inference mode or not
            self._buffer = torch.empty(L, cell.num_states, batch, NH, D, dtype=weight.dtype, device=weight.device)
        self._layers = list(self._buffer.unbind(0))
        self.reset(hx)

    @property
    def state(self) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The current states in torch's format, views of the decoder's buffer (h, or (h, c), ... each [L, B, H])."""
        L, S, B = self._buffer.shape[:3]
        parts = tuple(self._buffer[:, s].reshape(L, B, -1) for s in range(S))
        return parts[0] if S == 1 else parts

    def reset(self, hx: object = None) -> None:
        """Start again from ``hx`` (torch's format, [L, B, H] per state) or, when None, the cell's initial state."""
        if hx is None:
            self._buffer.copy_(self.plan.initial.unsqueeze(0).expand_as(self._buffer))
            return
        module = self.module
        L, S, B, NH, D = self._buffer.shape
        expected = (L, B, NH * D)
        like = self._buffer
        parts = check_state_parts(
            module.cell, hx, type(module).__name__, "_0", expected, "[num_layers, batch, hidden_size]", like
        )
        with torch.no_grad():
            for s, part in enumerate(parts):
                self._buffer[:, s].copy_(part.view(L, B, NH, D))

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor):
            raise TypeError(
                f"input: expected a tensor {self.input_shape} [batch, input_size], got {type(input).__name__}"
            )
        if input.shape != self.input_shape or input.dtype != self.plan.dtype or input.device != self.plan.device:
            raise RuntimeError(
                f"input: expected shape {self.input_shape} [batch, input_size], {self.plan.dtype} on "
                f"{self.plan.device} (this decoder's), got {tuple(input.shape)}, {input.dtype} on {input.device}"
            )
        return self.plan.advance(input, self._layers, None)
