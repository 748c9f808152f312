"""nn.Module layers with torch.nn's interface: LSTM, GRU, RNN (Elman, tanh) and SLSTM, multi-head.

Each layer and direction holds torch's parameters, in torch's names, with the recurrent ones per head:

    weight_ih_l{k}{_reverse}  [Gx·H, I_k]     the input projection, one GEMM for all steps (F.linear)
    bias_ih_l{k}{_reverse}    [Gx·H]          (bias=True)
    weight_hh_l{k}{_reverse}  [Gr, NH, D, D]  R of fusedrnn.rnn: block-diagonal over NH heads of size D
    bias_hh_l{k}{_reverse}    [Gr, NH, D]     (bias=True)

With num_heads = 1 they are torch's tensors reshaped (``from_torch`` / ``to_torch`` copy them exactly). The
recurrent bias of gate g is added in the slot that gate feeds (``Cell.r_slots``): for GRU that keeps
torch's b_hn inside the reset gate's product. Layers run one after the other, each direction is one
``fusedrnn.rnn`` call (so one fused kernel per layer and direction on a GPU), and the backend is chosen by
dispatch (``backend="auto"``) unless named.

Variable lengths (``lengths=`` or a PackedSequence) are honoured inside the backends: each batch row runs its
own number of steps; outputs past a row's length are zero and its final states are those of its last step.
The reverse direction of a bidirectional layer reads each row backwards from its last valid step, as torch
does for packed input.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..api import check_lengths, rnn
from ..cells import Cell, get_cell

__all__ = ["RecurrentBase", "LSTM", "GRU", "RNN", "SLSTM"]


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


class RecurrentBase(nn.Module):
    """Shared implementation; use LSTM, GRU, RNN or SLSTM."""

    cell_name: str = ""
    torch_class: type[nn.Module] | None = None  # the torch.nn module of the same function, if any

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        num_heads: int = 1,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.num_heads = _positive_int("num_heads", num_heads)
        if hidden_size % num_heads:
            raise ValueError(f"num_heads: expected a divisor of hidden_size ({hidden_size}), got {num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
        if not isinstance(backend, str):
            raise TypeError(f"backend: expected a backend name (str), got {type(backend).__name__}")
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        self.backend = backend
        self.head_dim = hidden_size // num_heads
        cell = self.cell
        factory = {"device": device, "dtype": dtype}
        H, NH, D = hidden_size, num_heads, self.head_dim
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else H * self.num_directions
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                shapes = {
                    "weight_ih": (cell.num_gates_x * H, layer_input), "weight_hh": (cell.num_gates_r, NH, D, D),
                    "bias_ih": (cell.num_gates_x * H,), "bias_hh": (cell.num_gates_r, NH, D),
                }
                for kind, shape in shapes.items():
                    if self.bias or kind.startswith("weight"):
                        self.register_parameter(f"{kind}_{name}", nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    # --- description -------------------------------------------------------------------------------------

    @property
    def cell(self) -> Cell:
        return get_cell(self.cell_name)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        return text

    def reset_parameters(self) -> None:
        """torch.nn's initialisation, U(-1/√H, 1/√H), with the recurrent weights' fan-in per head:
        U(-1/√D, 1/√D) (the same when num_heads = 1)."""
        input_bound, head_bound = 1 / math.sqrt(self.hidden_size), 1 / math.sqrt(self.head_dim)
        for name, param in self.named_parameters():
            bound = head_bound if name.startswith(("weight_hh", "bias_hh")) else input_bound
            nn.init.uniform_(param, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written for torch.nn.LSTM (fusedrnn's kernels read the parameters as they are)."""

    def _weights(self, layer: int, suffix: str):
        name = f"l{layer}{suffix}"
        w_ih, w_hh = getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}")
        b_ih = getattr(self, f"bias_ih_{name}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_{name}") if self.bias else None
        return w_ih, b_ih, w_hh, self._slot_bias(b_hh, w_hh)

    def _slot_bias(self, b_hh: torch.Tensor | None, w_hh: torch.Tensor) -> torch.Tensor:
        """b of fusedrnn.rnn [Gb, NH, D]: each recurrent bias in the slot its gate feeds, zeros elsewhere."""
        cell = self.cell
        if b_hh is None:
            return w_hh.new_zeros(cell.num_gates_b, self.num_heads, self.head_dim)
        slots = tuple(cell.r_slots)
        if slots == tuple(range(cell.num_gates_b)):
            return b_hh
        rows = [torch.zeros_like(b_hh[0])] * cell.num_gates_b
        for gate, slot in enumerate(slots):
            rows[slot] = b_hh[gate]
        return torch.stack(rows)

    # --- states ------------------------------------------------------------------------------------------

    def _unpack_state(self, state, batch: int, unbatched: bool, like: torch.Tensor) -> torch.Tensor | None:
        """The user's state (torch's format) as [S, L·dirs, B, NH, D], or None."""
        if state is None:
            return None
        cell = self.cell
        parts = (state,) if cell.num_states == 1 else state
        if cell.num_states == 1 and not isinstance(state, torch.Tensor):
            raise TypeError(f"state: expected a tensor h_0 for {type(self).__name__}, got {type(state).__name__}")
        if cell.num_states > 1 and (not isinstance(state, (tuple, list)) or len(state) != cell.num_states):
            raise TypeError(
                f"state: expected a tuple of {cell.num_states} tensors ({', '.join(cell.states)}) for "
                f"{type(self).__name__}, got {type(state).__name__}"
            )
        expected = (self.num_layers * self.num_directions,) + (() if unbatched else (batch,)) + (self.hidden_size,)
        for name, part in zip(cell.states, parts):
            if not isinstance(part, torch.Tensor):
                raise TypeError(f"state ({name}_0): expected a tensor, got {type(part).__name__}")
            if tuple(part.shape) != expected:
                layout = "[num_layers * num_directions" + ("" if unbatched else ", batch") + ", hidden_size]"
                raise ValueError(f"state ({name}_0): expected shape {expected} {layout}, got {tuple(part.shape)}")
            if part.dtype != like.dtype and not torch.is_autocast_enabled(like.device.type):
                raise TypeError(f"state ({name}_0): expected dtype {like.dtype} (the input's), got {part.dtype}")
        stacked = torch.stack([p if not unbatched else p.unsqueeze(1) for p in parts])
        return stacked.view(cell.num_states, -1, batch, self.num_heads, self.head_dim)

    def _pack_state(self, finals: list[torch.Tensor], unbatched: bool):
        """finals: per (layer, direction) [S, B, NH, D] -> torch's format."""
        stacked = torch.stack(finals, dim=1)  # [S, L·dirs, B, NH, D]
        S, LD, B = stacked.shape[:3]
        parts = stacked.reshape(S, LD, B, self.hidden_size).unbind(0)
        if unbatched:
            parts = tuple(p.squeeze(1) for p in parts)
        return parts[0] if S == 1 else tuple(parts)

    # --- forward -----------------------------------------------------------------------------------------

    def forward(self, input, state=None, lengths=None):
        """Like torch.nn.LSTM / GRU / RNN: input [T, B, I] ([B, T, I] with batch_first, [T, I] unbatched, or
        a PackedSequence); state as torch's (h_0, or (h_0, c_0), each [L·dirs, B, H]; SLSTM: (h, c, n, m)).
        lengths: optional [B] steps per row (tensor input only). Returns (output, final state) in torch's
        shapes; output past each row's length is zero."""
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths: must be None when input is a PackedSequence (it carries the lengths)")
            sorted_indices, unsorted_indices = input.sorted_indices, input.unsorted_indices
            batch_sizes = input.batch_sizes
            x, lengths = pad_packed_sequence(input, batch_first=True)  # [B, T, I], original order
            unbatched = False
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input: expected a tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"input: expected a 3-d tensor {'[B, T, I]' if self.batch_first else '[T, B, I]'} or a 2-d "
                    f"unbatched [T, I], got shape {tuple(input.shape)}"
                )
            unbatched = input.dim() == 2
            x = input.unsqueeze(0) if unbatched else (input if self.batch_first else input.transpose(0, 1))
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input: expected {self.input_size} features (input_size) on the last axis, got shape {tuple(x.shape)}"
            )
        B, T = x.shape[0], x.shape[1]
        states = self._unpack_state(state, B, unbatched, x)
        packed_lengths = lengths  # pad_packed_sequence's, on the CPU, for repacking the output
        if lengths is not None:
            # checked and moved to the device once here, not again by every layer's and direction's rnn call
            lengths = check_lengths(lengths, B, T, x.device, check_values=not torch.compiler.is_compiling())

        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes()):
                index = layer * self.num_directions + direction
                w_ih, b_ih, w_hh, b = self._weights(layer, suffix)
                source = x if direction == 0 else _reverse(x, lengths)
                gates = F.linear(source, w_ih, b_ih).view(B, T, -1, self.num_heads, self.head_dim)
                s0 = None if states is None else states[:, index]
                y, final = rnn(gates, w_hh, b, s0, cell=self.cell, backend=self.backend, lengths=lengths)
                y = y.reshape(B, T, self.hidden_size)
                outputs.append(y if direction == 0 else _reverse(y, lengths))
                finals.append(final)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)

        final_state = self._pack_state(finals, unbatched)
        if packed:
            return _repack(x, packed_lengths, batch_sizes, sorted_indices, unsorted_indices), final_state
        if unbatched:
            return x.squeeze(0), final_state
        return (x if self.batch_first else x.transpose(0, 1)), final_state

    def step(self, input: torch.Tensor, state=None):
        """One time step, for inference and decoding: input [B, I] (or [I]), state as ``forward``'s. Returns
        (the last layer's h [B, H], the new state), what ``forward`` gives for a one-step sequence, without its
        reshapes of a sequence; no host synchronisation, so it can be captured in a CUDA graph."""
        if self.bidirectional:
            raise ValueError("step: a bidirectional layer needs the whole sequence; call forward")
        if not isinstance(input, torch.Tensor) or input.dim() not in (1, 2):
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"input: expected a tensor [B, I] or [I] (one step), got {shape}")
        sequence = input.unsqueeze(0)  # [1, B, I] / [1, I]
        if self.batch_first and input.dim() == 2:
            sequence = input.unsqueeze(1)  # [B, 1, I]
        output, new_state = self.forward(sequence, state)
        if input.dim() == 1:
            return output.squeeze(0), new_state
        return (output[:, 0] if self.batch_first else output[0]), new_state

    # --- conversion from / to torch.nn -------------------------------------------------------------------

    @classmethod
    def from_torch(cls, module: nn.Module, backend: str = "auto"):
        """A fusedrnn layer (num_heads = 1) with the exact weights of a torch.nn.LSTM / GRU / RNN (tanh)."""
        if cls.torch_class is None or type(module) is not cls.torch_class:
            expected = cls.torch_class.__name__ if cls.torch_class else "nothing (no torch.nn equivalent)"
            raise TypeError(f"module: expected torch.nn.{expected} for {cls.__name__}, got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"module: proj_size={module.proj_size} (LSTM projections) is not supported")
        if getattr(module, "nonlinearity", "tanh") != "tanh":
            raise ValueError(f"module: expected nonlinearity 'tanh' (Elman), got {module.nonlinearity!r}")
        param = next(module.parameters())
        ours = cls(
            module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
            batch_first=module.batch_first, dropout=float(module.dropout), bidirectional=module.bidirectional,
            num_heads=1, backend=backend, device=param.device, dtype=param.dtype,
        )
        with torch.no_grad():
            for name, theirs in module.named_parameters():
                mine = getattr(ours, name)
                mine.copy_(theirs.view(mine.shape))
        ours.train(module.training)
        return ours

    def to_torch(self) -> nn.Module:
        """The equivalent torch.nn module with exactly these weights (needs num_heads = 1)."""
        if self.torch_class is None:
            raise TypeError(f"{type(self).__name__} has no torch.nn equivalent")
        if self.num_heads != 1:
            raise ValueError(
                f"num_heads: to_torch needs 1 (torch.nn has no block-diagonal recurrence), got {self.num_heads}"
            )
        param = next(self.parameters())
        theirs = self.torch_class(
            self.input_size, self.hidden_size, self.num_layers, bias=self.bias, batch_first=self.batch_first,
            dropout=self.dropout, bidirectional=self.bidirectional, device=param.device, dtype=param.dtype,
        )
        with torch.no_grad():
            for name, target in theirs.named_parameters():
                target.copy_(getattr(self, name).reshape(target.shape))
        theirs.train(self.training)
        return theirs


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """x [B, T, F] with each row's first lengths[b] steps reversed (all T without lengths); steps past a
    row's length stay where they are. Its own inverse."""
    if lengths is None:
        return x.flip(1)
    B, T = x.shape[:2]
    steps = torch.arange(T, device=x.device).expand(B, T)
    lens = lengths.to(device=x.device, dtype=steps.dtype).view(B, 1)
    index = torch.where(steps < lens, lens - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def _repack(x: torch.Tensor, lengths, batch_sizes, sorted_indices, unsorted_indices) -> PackedSequence:
    """x [B, T, F] (original batch order) packed like the input it came from (torch's output format)."""
    if sorted_indices is not None:
        x, lengths = x.index_select(0, sorted_indices), lengths.index_select(0, sorted_indices.cpu())
    data = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=True).data
    return PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)


class LSTM(RecurrentBase):
    """torch.nn.LSTM's interface (gates i, f, g, o; state (h, c)), multi-head with ``num_heads``."""

    cell_name = "lstm"
    torch_class = nn.LSTM


class GRU(RecurrentBase):
    """torch.nn.GRU's interface (gates r, z, n; b_hn inside the reset product), multi-head with ``num_heads``."""

    cell_name = "gru"
    torch_class = nn.GRU


class RNN(RecurrentBase):
    """torch.nn.RNN's interface with tanh (Elman), multi-head with ``num_heads``."""

    cell_name = "elman"
    torch_class = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 *args, **kwargs):
        if nonlinearity != "tanh":
            raise ValueError(f"nonlinearity: expected 'tanh' (fusedrnn's Elman cell), got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, *args, **kwargs)


class SLSTM(RecurrentBase):
    """The sLSTM of xLSTM / flashrnn (exponential input gate, normaliser n, stabiliser m), multi-head with
    ``num_heads``. State (h, c, n, m); gates i, f, z, o. No torch.nn equivalent."""

    cell_name = "slstm"
