"""One-step cells with torch.nn's interface: LSTMCell, GRUCell, RNNCell (tanh), multi-head.

Parameters ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` in the layout of the layers (``_common``):
torch's names and, with one head, torch's shapes, so state_dicts swap with torch.nn's cells. A step is one
``fusedrnn.rnn`` call over one time step (any backend), or on the CPU torch's own cell op where it computes
the same function (``runs_on_torch_ops``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional as F

from ..api import rnn
from ..cells import Cell, get_cell
from ._common import (
    TORCH_STEP_OPS,
    DenseRecurrentCache,
    TorchModuleRules,
    check_backend,
    check_heads,
    check_input_dtype,
    check_size,
    check_state_parts,
    initialise,
    kernel_weights,
    recurrent_parameters,
    runs_on_torch_ops,
)

__all__ = ["RecurrentCellBase", "LSTMCell", "GRUCell", "RNNCell"]

State = torch.Tensor | tuple[torch.Tensor, ...]


class RecurrentCellBase(TorchModuleRules):
    """Shared implementation; use LSTMCell, GRUCell or RNNCell.

    Arguments in torch.nn.RNNCellBase's positional order (input_size, hidden_size, bias, device, dtype), then
    fusedrnn's, keyword-only: num_heads (block-diagonal recurrence; default 1) and backend."""

    cell_name: ClassVar[str] = ""
    # registered in __init__ (the biases as None without bias, as torch.nn's cells)
    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
    bias_ih: torch.Tensor | None
    bias_hh: torch.Tensor | None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        num_heads: int = 1,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size, minimum=0)  # torch's cells take 0 (no input)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_heads = check_heads(hidden_size, num_heads)
        self.backend = check_backend(backend)
        self.bias = bool(bias)
        self.head_dim = hidden_size // self.num_heads
        params = recurrent_parameters(
            self.cell, input_size, hidden_size, self.head_dim, self.bias, {"device": device, "dtype": dtype}
        )
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            self.register_parameter(name, params.get(name))  # None without bias, as torch.nn's cells
        self._dense_recurrent = DenseRecurrentCache()
        self.reset_parameters()

    @property
    def cell(self) -> Cell:
        return get_cell(self.cell_name)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if self.num_heads != 1:
            text += f", num_heads={self.num_heads}"
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        return text

    def reset_parameters(self) -> None:
        """torch.nn's initialisation, U(-1/√H, 1/√H); the recurrent weights' per head, U(-1/√D, 1/√D)."""
        initialise(self, self.hidden_size, self.head_dim)

    def _check_state(self, hx: object, batch: int, unbatched: bool, like: torch.Tensor) -> list[torch.Tensor] | None:
        """hx (torch's format) as its tensors, each [B, H]; RuntimeError for shapes, dtypes and devices other
        than the input's, as torch."""
        if hx is None:
            return None
        expected = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
        layout = "[hidden_size]" if unbatched else "[batch, hidden_size]"
        parts = check_state_parts(self.cell, hx, type(self).__name__, "", expected, layout, like)
        return [p.unsqueeze(0) for p in parts] if unbatched else parts

    def forward(self, input: torch.Tensor, hx: State | None = None) -> State:
        """Like torch.nn.LSTMCell / GRUCell / RNNCell: input [B, I] (or [I]); hx h [B, H] (LSTM: (h, c)), zeros
        when None. Returns the new h (LSTM: (h, c)). ValueError for an input of the wrong rank, RuntimeError
        for a wrong feature size, dtype or state, as torch's cells."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input: expected a tensor [B, I] or [I], got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"input: expected a 2-d tensor [B, I] or a 1-d [I], got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input: expected {self.input_size} features (input_size) on the last axis, got shape "
                f"{tuple(input.shape)}"
            )
        check_input_dtype(input, self.weight_ih, RuntimeError)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        B = x.shape[0]
        cell, NH, D = self.cell, self.num_heads, self.head_dim
        parts = self._check_state(hx, B, unbatched, input)
        if runs_on_torch_ops(cell, self.backend, x):
            op = TORCH_STEP_OPS[self.cell_name]
            if parts is None:
                parts = [x.new_zeros(B, self.hidden_size)] * cell.num_states
            state = tuple(parts) if len(parts) > 1 else parts[0]
            w_hh = self._dense_recurrent.get("weight_hh", self.weight_hh, NH)
            result = op(x, state, self.weight_ih, w_hh, self.bias_ih, self.bias_hh)
            finals = list(result) if isinstance(result, (tuple, list)) else [result]
        else:
            R, b = kernel_weights(cell, self.weight_hh, self.bias_hh, NH, D)
            gates = F.linear(x, self.weight_ih, self.bias_ih).view(B, 1, cell.num_gates_x, NH, D)
            s0 = None if parts is None else torch.stack(parts).view(cell.num_states, B, NH, D)
            _, final = rnn(gates, R, b, s0, cell=cell, backend=self.backend)
            finals = list(final.reshape(cell.num_states, B, self.hidden_size).unbind(0))
        if unbatched:
            finals = [f.squeeze(0) for f in finals]
        return finals[0] if len(finals) == 1 else tuple(finals)


class LSTMCell(RecurrentCellBase):
    """torch.nn.LSTMCell's interface (gates i, f, g, o; state (h, c)), multi-head with ``num_heads``."""

    cell_name = "lstm"


class GRUCell(RecurrentCellBase):
    """torch.nn.GRUCell's interface (gates r, z, n; b_hn inside the reset product), multi-head with ``num_heads``."""

    cell_name = "gru"


class RNNCell(RecurrentCellBase):
    """torch.nn.RNNCell's interface with tanh (Elman), multi-head with ``num_heads``; torch's positional order
    (nonlinearity fourth)."""

    cell_name = "elman"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        num_heads: int = 1,
        backend: str = "auto",
    ) -> None:
        if nonlinearity != "tanh":
            raise ValueError(f"nonlinearity: expected 'tanh' (fusedrnn's Elman cell), got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, device, dtype, num_heads=num_heads, backend=backend)
        self.nonlinearity = nonlinearity
