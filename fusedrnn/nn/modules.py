"""nn.Module layers with torch.nn's interface: LSTM, GRU, RNN (Elman, tanh) and SLSTM, multi-head.

Each layer and direction holds torch's parameters in torch's names, ``weight_ih_l{k}{_reverse}``,
``weight_hh_l{k}{_reverse}``, ``bias_ih_l{k}{_reverse}``, ``bias_hh_l{k}{_reverse}``; with one head also in
torch's shapes, so state_dicts load both ways between these layers and torch.nn's. With ``num_heads`` > 1
``weight_hh`` is ``[G·H, D]``: each head's [D, D] block, the rows as torch's (layout: ``_common``).

On the CPU, for the cells torch has (LSTM, GRU, RNN) in float32 / float64, a layer runs on torch's own fused
CPU RNN op, multi-head layers with their block-diagonal recurrent matrix expanded to torch's dense one.
Elsewhere layers run one after the other, each direction one ``fusedrnn.rnn`` call (one fused kernel per
layer and direction on a GPU), on the backend chosen by dispatch (``backend="auto"``) or the one named.

Variable lengths (``lengths=`` or a PackedSequence) are honoured inside the backends: each batch row runs its
own number of steps; outputs past a row's length are zero and its final states are those of its last step.
The reverse direction of a bidirectional layer reads each row backwards from its last valid step, as torch
does for packed input.

Episode resets (``resets=``, RL rollouts holding several episodes per row) are honoured inside the backends too:
each row is cut into episodes where a step starts one, and every episode runs as if alone. The forward
direction starts each episode after the first from the cell's initial state (zeros); ``hx`` applies to the
first. The reverse direction reads each episode backwards on its own: its state is reset after it processed an
episode's first step (for the kernels: a reset flag on each episode's last step, read backwards), and its
``hx`` part applies to the last episode, which it reads first. Every layer of a stack does the same, so no
state or gradient crosses an episode boundary in any layer or direction (docs/resets.md).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..api import check_lengths, check_resets, rnn
from ..cells import Cell, get_cell
from ._common import (
    TORCH_SEQUENCE_OPS,
    DenseRecurrentCache,
    TorchModuleRules,
    check_backend,
    check_checkpoint,
    check_dropout,
    check_heads,
    check_input_dtype,
    check_size,
    check_state_parts,
    initialise,
    kernel_weights,
    recurrent_parameters,
    runs_on_torch_ops,
)
from .decode import Decoder, step_plan

__all__ = ["RecurrentBase", "LSTM", "GRU", "RNN", "SLSTM"]

State = torch.Tensor | tuple[torch.Tensor, ...]


class RecurrentBase(TorchModuleRules):
    """Shared implementation; use LSTM, GRU, RNN or SLSTM.

    Arguments in torch.nn.RNNBase's positional order (input_size, hidden_size, num_layers, bias,
    batch_first, dropout, bidirectional, proj_size, device, dtype), then fusedrnn's, keyword-only:
    num_heads (block-diagonal recurrence over heads of size hidden_size / num_heads; default 1),
    backend (a fusedrnn backend name, or "auto") and, for training on long sequences, checkpoint (steps per
    recomputed segment) or checkpoint_budget (bytes per layer and direction), as in ``fusedrnn.rnn``."""

    cell_name: ClassVar[str] = ""
    torch_class: ClassVar[type[nn.Module] | None] = None  # the torch.nn module of the same function, if any

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        num_heads: int = 1,
        backend: str = "auto",
        checkpoint: int | None = None,
        checkpoint_budget: int | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.num_heads = check_heads(hidden_size, num_heads)
        self.proj_size = self._check_proj_size(proj_size)
        self.dropout = check_dropout(dropout)
        self.backend = check_backend(backend)
        self.checkpoint, self.checkpoint_budget = check_checkpoint(checkpoint, checkpoint_budget)
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(  # torch.nn's warning, word for word
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.head_dim = hidden_size // self.num_heads
        factory = {"device": device, "dtype": dtype}
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                params = recurrent_parameters(self.cell, layer_input, hidden_size, self.head_dim, self.bias, factory)
                names = []
                for kind, param in params.items():
                    names.append(f"{kind}_l{layer}{suffix}")
                    self.register_parameter(names[-1], param)
                self._all_weights.append(names)
        self._flat_weights_names = [name for names in self._all_weights for name in names]
        self._dense_recurrent = DenseRecurrentCache()
        self.reset_parameters()

    def _check_proj_size(self, proj_size: object) -> int:
        """0, as torch's default; torch's errors for invalid values; LSTM projections are refused."""
        proj = check_size("proj_size", proj_size, minimum=0)
        if proj == 0:
            return 0
        if self.cell_name != "lstm":
            raise ValueError(
                f"proj_size: only LSTM has projections (as in torch.nn), got {proj} for {type(self).__name__}"
            )
        if proj >= self.hidden_size:
            raise ValueError(f"proj_size: expected less than hidden_size ({self.hidden_size}), got {proj}")
        raise NotImplementedError(
            f"proj_size: LSTM projections are not supported (got {proj}): fusedrnn's kernels carry h of "
            "hidden_size from step to step, a projected h would need a second recurrent product in every "
            "backend. Use torch.nn.LSTM for projected LSTMs."
        )

    # --- description -------------------------------------------------------------------------------------

    @property
    def cell(self) -> Cell:
        return get_cell(self.cell_name)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters per layer and direction, [weight_ih, weight_hh, (bias_ih, bias_hh)], as torch.nn's."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> list[torch.Tensor]:
        params = self._parameters  # not getattr: nn.Module.__getattr__ costs host time on every call
        return [params[name] for name in self._flat_weights_names]  # type: ignore[misc]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        if self.num_heads != 1:
            text += f", num_heads={self.num_heads}"
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        for name in ("checkpoint", "checkpoint_budget"):
            if getattr(self, name) is not None:
                text += f", {name}={getattr(self, name)}"
        return text

    def reset_parameters(self) -> None:
        """torch.nn's initialisation, U(-1/√H, 1/√H), with the recurrent weights' fan-in per head:
        U(-1/√D, 1/√D) (the same when num_heads = 1)."""
        initialise(self, self.hidden_size, self.head_dim)

    def flatten_parameters(self) -> None:
        """No-op, for code written for torch.nn.LSTM (fusedrnn's kernels read the parameters as they are)."""

    @property
    def _checkpointing(self) -> bool:
        """Training with a checkpoint option: fusedrnn.rnn (torch's CPU ops would save every step)."""
        return (self.checkpoint is not None or self.checkpoint_budget is not None) and torch.is_grad_enabled()

    # --- states ------------------------------------------------------------------------------------------

    def _check_state(self, hx: object, batch: int, unbatched: bool, like: torch.Tensor) -> list[torch.Tensor] | None:
        """The user's state (torch's format) as its tensors, each [L·dirs, B, H] (unbatched: [L·dirs, 1, H]).
        Shapes, dtypes and devices other than the input's raise RuntimeError, as torch's RNNs do; a wrong
        container raises TypeError."""
        if hx is None:
            return None
        expected = (self.num_layers * self.num_directions,) + (() if unbatched else (batch,)) + (self.hidden_size,)
        layout = "[num_layers * num_directions" + ("" if unbatched else ", batch") + ", hidden_size]"
        parts = check_state_parts(self.cell, hx, type(self).__name__, "_0", expected, layout, like)
        return [p.unsqueeze(1) for p in parts] if unbatched else parts

    # --- forward -----------------------------------------------------------------------------------------

    def forward(
        self,
        input: torch.Tensor | PackedSequence,
        hx: State | None = None,
        lengths: Any = None,
        resets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | PackedSequence, State]:
        """Like torch.nn.LSTM / GRU / RNN: input [T, B, I] ([B, T, I] with batch_first, [T, I] unbatched, or
        a PackedSequence); hx as torch's (h_0, or (h_0, c_0), each [L·dirs, B, H]; SLSTM: (h, c, n, m)).
        lengths: optional [B] steps per row (tensor input only). resets: optional bool episode starts in the
        input's layout without features ([T, B], [B, T] with batch_first, [T] unbatched; tensor input only, on
        the input's device): True where a step starts a new episode (TorchRL's ``is_init``); see the module
        docstring. Returns (output, final state) in torch's shapes; output past each row's length is zero.

        Errors of the types torch.nn raises: ValueError for an input of the wrong rank or dtype, RuntimeError
        for a wrong feature size, no time steps, or a state of the wrong shape, dtype or device."""
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths: must be None when input is a PackedSequence (it carries the lengths)")
            if resets is not None:
                raise ValueError(
                    "resets: give a padded tensor input with lengths= (a PackedSequence has no [B, T] layout)"
                )
            self._check_features(input.data)
            batch = int(input.batch_sizes[0]) if len(input.batch_sizes) else 0
            parts = self._check_state(hx, batch, False, input.data)
            if runs_on_torch_ops(self.cell, self.backend, input.data) and not self._checkpointing:
                packed_out, packed_finals = self._run_torch_packed(input, parts)
                return packed_out, self._state(packed_finals, False)
            x, padded_lengths = pad_packed_sequence(input, batch_first=True)  # [B, T, I], original order
            steps = check_lengths(padded_lengths, batch, x.shape[1], x.device, not torch.compiler.is_compiling())
            y, padded_finals = self._run_layers(x, self._stacked(parts), steps)
            return _repack(y, padded_lengths, input), self._state(padded_finals, False)

        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input: expected a tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(
                f"input: expected a 3-d tensor {'[B, T, I]' if self.batch_first else '[T, B, I]'} or a 2-d "
                f"unbatched [T, I], got shape {tuple(input.shape)}"
            )
        self._check_features(input)
        unbatched = input.dim() == 2
        batch_dim = 0 if self.batch_first else 1
        x3 = input.unsqueeze(batch_dim) if unbatched else input  # [T, B, I] or [B, T, I]
        B, T = x3.shape[batch_dim], x3.shape[1 - batch_dim]
        if T == 0:
            raise RuntimeError(
                f"input: expected at least one time step (as torch's RNNs), got shape {tuple(input.shape)}"
            )
        parts = self._check_state(hx, B, unbatched, input)
        if lengths is not None:
            # checked and moved to the device once here, not again by every layer's and direction's rnn call
            lengths = check_lengths(lengths, B, T, x3.device, check_values=not torch.compiler.is_compiling())
        if resets is not None:  # [B, T] for the kernels
            resets = self._check_resets(resets, B, T, unbatched, x3.device)

        # torch's packed op for lengths; pack_padded_sequence refuses empty rows and an empty batch
        empty_rows = lengths is not None and (B == 0 or bool(lengths.min() == 0))
        # torch's op knows no resets and saves every step (no checkpointing). runs_on_torch_ops comes first: it is
        # False under torch.compile, where empty_rows is data-dependent and must not be evaluated
        if (
            runs_on_torch_ops(self.cell, self.backend, x3)
            and not empty_rows
            and resets is None
            and not self._checkpointing
        ):
            if lengths is None:
                out, finals = self._run_torch(x3, None, parts)
            else:
                packed = pack_padded_sequence(x3, lengths.long(), batch_first=self.batch_first, enforce_sorted=False)
                out_packed, finals = self._run_torch_packed(packed, parts)
                out = pad_packed_sequence(out_packed, batch_first=self.batch_first, total_length=T)[0]
        else:
            x = x3 if self.batch_first else x3.transpose(0, 1)
            y, finals = self._run_layers(x, self._stacked(parts), lengths, resets)
            out = y if self.batch_first else y.transpose(0, 1)
        return (out.squeeze(batch_dim) if unbatched else out), self._state(finals, unbatched)

    def _check_resets(self, resets: object, B: int, T: int, unbatched: bool, device: torch.device) -> torch.Tensor:
        """resets in the input's layout as the kernels' [B, T] (fusedrnn.rnn checks dtype, shape and device once
        more per call; here the layout's shape is named in the message)."""
        layout = "[T]" if unbatched else "[B, T]" if self.batch_first else "[T, B]"
        expected = (T,) if unbatched else (B, T) if self.batch_first else (T, B)
        if not isinstance(resets, torch.Tensor):
            raise TypeError(f"resets: expected a bool tensor {layout} = {list(expected)}, got {type(resets).__name__}")
        if tuple(resets.shape) != expected:
            raise ValueError(
                f"resets: expected shape {expected} {layout} (the input's steps and batch), got {tuple(resets.shape)}"
            )
        flags = resets.unsqueeze(0) if unbatched else resets if self.batch_first else resets.t()
        return check_resets(flags, B, T, device)

    def _check_features(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input: expected {self.input_size} features (input_size) on the last axis, got shape {tuple(x.shape)}"
            )
        check_input_dtype(x, self._parameters["weight_ih_l0"], ValueError)  # type: ignore[arg-type]

    def _state(self, finals: list[torch.Tensor], unbatched: bool) -> State:
        """Final states in torch's format from their tensors [L·dirs, B, H]."""
        parts = [f.squeeze(1) for f in finals] if unbatched else finals
        return parts[0] if len(parts) == 1 else tuple(parts)

    # torch's own CPU ops (runs_on_torch_ops decides when)

    def _torch_op_weights(self) -> list[torch.Tensor]:
        weights: list[torch.Tensor] = self._flat_weights
        if self.num_heads == 1:
            return weights
        per_layer = len(self._all_weights[0])  # weight_ih, weight_hh, (bias_ih, bias_hh)
        names, dense = self._flat_weights_names, self._dense_recurrent
        return [dense.get(names[i], w, self.num_heads) if i % per_layer == 1 else w for i, w in enumerate(weights)]

    def _run_torch(
        self, x: torch.Tensor, batch_sizes: torch.Tensor | None, parts: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """torch._VF's sequence op on x (torch's layout; packed data when batch_sizes is given)."""
        op = TORCH_SEQUENCE_OPS[self.cell_name]
        if parts is None:
            batch = x.shape[0 if self.batch_first else 1] if batch_sizes is None else int(batch_sizes[0])
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            parts = [zeros] * self.cell.num_states
        hx = tuple(parts) if len(parts) > 1 else parts[0]
        args = (
            hx,
            self._torch_op_weights(),
            self.bias,
            self.num_layers,
            self.dropout,
            self.training,
            self.bidirectional,
        )
        result = op(x, *args, self.batch_first) if batch_sizes is None else op(x, batch_sizes, *args)
        return result[0], list(result[1:])

    def _run_torch_packed(
        self, packed: PackedSequence, parts: list[torch.Tensor] | None
    ) -> tuple[PackedSequence, list[torch.Tensor]]:
        """torch's packed op: states in the batch's original order, permuted to the packed order and back."""
        order, inverse = packed.sorted_indices, packed.unsorted_indices
        if parts is not None and order is not None:
            parts = [p.index_select(1, order) for p in parts]
        data, finals = self._run_torch(packed.data, packed.batch_sizes, parts)
        if inverse is not None:
            finals = [f.index_select(1, inverse) for f in finals]
        return PackedSequence(data, packed.batch_sizes, order, inverse), finals

    # fusedrnn.rnn, one call per layer and direction

    def _stacked(self, parts: list[torch.Tensor] | None) -> torch.Tensor | None:
        """States [L·dirs, B, H] each as fusedrnn's [S, L·dirs, B, NH, D]."""
        if parts is None:
            return None
        stacked = torch.stack(parts)
        return stacked.view(*stacked.shape[:3], self.num_heads, self.head_dim)

    def _run_layers(
        self,
        x: torch.Tensor,
        states: torch.Tensor | None,
        lengths: torch.Tensor | None,
        resets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, T, I] through every layer and direction; returns the output [B, T, dirs·H] and the final
        states in torch's format, each [L·dirs, B, H]. resets [B, T] bool or None."""
        B, T = x.shape[:2]
        cell, NH, D = self.cell, self.num_heads, self.head_dim
        reverse_resets = None if resets is None or not self.bidirectional else _reverse_resets(resets, lengths)
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                params = [getattr(self, name) for name in self._all_weights[index]]
                w_ih, w_hh = params[0], params[1]
                b_ih, b_hh = (params[2], params[3]) if self.bias else (None, None)
                R, b = kernel_weights(cell, w_hh, b_hh, NH, D)
                source = x if direction == 0 else _reverse(x, lengths)
                gates = F.linear(source, w_ih, b_ih).view(B, T, cell.num_gates_x, NH, D)
                s0 = None if states is None else states[:, index]
                y, final = rnn(
                    gates,
                    R,
                    b,
                    s0,
                    cell=cell,
                    backend=self.backend,
                    lengths=lengths,
                    resets=resets if direction == 0 else reverse_resets,
                    checkpoint=self.checkpoint,
                    checkpoint_budget=self.checkpoint_budget,
                )
                y = y.reshape(B, T, self.hidden_size)
                outputs.append(y if direction == 0 else _reverse(y, lengths))
                finals.append(final)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        stacked = torch.stack(finals, dim=1)  # [S, L·dirs, B, NH, D]
        return x, list(stacked.reshape(*stacked.shape[:3], self.hidden_size).unbind(0))

    def step(
        self, input: torch.Tensor, hx: State | None = None, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """One time step, for inference and decoding: input [B, I] (or [I]), hx as ``forward``'s; resets: optional
        bool [B] (or [1] unbatched): rows whose episode starts at this step run from the initial state instead of
        hx (TorchRL's ``is_init`` in a rollout). Returns (the last layer's h [B, H], the new state), what
        ``forward`` gives for a one-step sequence. With fusedrnn's backends (a GPU) no host synchronisation, so
        it can be captured in a CUDA graph. Without autograd (under torch.no_grad, or nothing requiring a gradient)
        and without resets a step runs on a plan made once per batch size, dtype and device (``decode.StepPlan``);
        ``decoder`` also keeps the state in place."""
        if self.bidirectional:
            raise ValueError("step: a bidirectional layer needs the whole sequence; call forward")
        if not isinstance(input, torch.Tensor) or input.dim() not in (1, 2):
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"input: expected a tensor [B, I] or [I] (one step), got {shape}")
        if resets is None and self._planned_step(input):
            return self._step_planned(input, hx)
        sequence = input.unsqueeze(0)  # [1, B, I] / [1, I]
        if self.batch_first and input.dim() == 2:
            sequence = input.unsqueeze(1)  # [B, 1, I]
        if resets is not None:
            batch = input.shape[0] if input.dim() == 2 else 1
            if not isinstance(resets, torch.Tensor) or resets.numel() != batch or resets.dim() > 1:
                shape = tuple(resets.shape) if isinstance(resets, torch.Tensor) else type(resets).__name__
                raise ValueError(f"resets: expected a bool tensor [B] = [{batch}] (one flag per row), got {shape}")
            flags = resets.reshape(batch)  # as forward's resets: [1, B], [B, 1] with batch_first, [1] unbatched
            resets = flags if input.dim() == 1 else flags.view(batch, 1) if self.batch_first else flags.view(1, batch)
        output, new_state = self.forward(sequence, hx, resets=resets)
        assert isinstance(output, torch.Tensor)
        if input.dim() == 1:
            return output.squeeze(0), new_state
        return (output[:, 0] if self.batch_first else output[0]), new_state

    def _planned_step(self, input: torch.Tensor) -> bool:
        """Whether ``step`` runs on its StepPlan: fusedrnn's backends, no autograd, no autocast, not compiling, no
        dropout between layers (training mode)."""
        if torch.is_grad_enabled() and (input.requires_grad or any(p.requires_grad for p in self._flat_weights)):
            return False
        if self.dropout and self.training and self.num_layers > 1:
            return False
        device_type = input.device.type
        return not (
            runs_on_torch_ops(self.cell, self.backend, input)
            or torch.is_autocast_enabled(device_type)
            or torch.compiler.is_compiling()
        )

    def _step_planned(self, input: torch.Tensor, hx: State | None) -> tuple[torch.Tensor, State]:
        self._check_features(input)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        B, L, NH, D, S = x.shape[0], self.num_layers, self.num_heads, self.head_dim, self.cell.num_states
        parts = self._check_state(hx, B, unbatched, input)
        plan = step_plan(self, B, x.dtype, x.device)
        if parts is None:
            states = [plan.initial] * L
        else:  # [L, S, B, NH, D]: each layer's states contiguous, one copy for all
            states = list(torch.stack(parts, dim=1).view(L, S, B, NH, D).unbind(0))
        out = torch.empty(S, L, B, NH, D, dtype=x.dtype, device=x.device)
        h = plan.advance(x, states, list(out.unbind(1)))
        finals = list(out.view(S, L, B, NH * D).unbind(0))
        return (h.squeeze(0) if unbatched else h), self._state(finals, unbatched)

    def decoder(self, batch: int = 1, hx: State | None = None) -> Decoder:
        """A ``Decoder``: steps of inputs [batch, input_size] with the state kept in place, for decoding loops and
        CUDA graphs (``h = decoder(x)``; ``decoder.state``; ``decoder.reset(hx)``). Starts from ``hx`` (torch's
        format, [num_layers, batch, hidden_size] per state) or the cell's initial state."""
        return Decoder(self, batch, hx)

    # --- conversion from / to torch.nn -------------------------------------------------------------------

    @classmethod
    def from_torch(cls, module: nn.Module, backend: str = "auto") -> RecurrentBase:
        """A fusedrnn layer (num_heads = 1) with the exact weights of a torch.nn.LSTM / GRU / RNN (tanh); the
        same as building it with the module's arguments and loading its state_dict."""
        if cls.torch_class is None or type(module) is not cls.torch_class:
            expected = cls.torch_class.__name__ if cls.torch_class else "nothing (no torch.nn equivalent)"
            raise TypeError(f"module: expected torch.nn.{expected} for {cls.__name__}, got {type(module).__name__}")
        assert isinstance(module, nn.RNNBase)
        if getattr(module, "nonlinearity", "tanh") != "tanh":
            raise ValueError(f"module: expected nonlinearity 'tanh' (Elman), got {module.nonlinearity!r}")
        param = next(module.parameters())
        ours = cls(
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=float(module.dropout),
            bidirectional=module.bidirectional,
            proj_size=module.proj_size,
            device=param.device,
            dtype=param.dtype,
            backend=backend,
        )
        ours.load_state_dict(module.state_dict())
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
            self.input_size,
            self.hidden_size,
            self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            device=param.device,
            dtype=param.dtype,
        )
        theirs.load_state_dict(self.state_dict())
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


def _reverse_resets(resets: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The reverse direction's resets [B, T]: each episode's last step (the step before a reset, within the row's
    length) flagged, then each row's valid steps reversed as its input is (``_reverse``). Reading a row backwards,
    the state is then reset after it processed an episode's first step, before the previous episode's last."""
    B, T = resets.shape
    ends = torch.zeros_like(resets)
    ends[:, :-1] = resets[:, 1:]
    if lengths is not None:  # a row's last valid step ends its last episode: nothing is reset after it
        steps = torch.arange(T, device=resets.device)
        ends &= steps + 1 < lengths.to(resets.device).view(B, 1)
    return _reverse(ends.unsqueeze(-1), lengths).squeeze(-1)


def _repack(x: torch.Tensor, lengths: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """x [B, T, F] (original batch order) packed like the input it came from (torch's output format)."""
    if like.sorted_indices is not None:
        x, lengths = x.index_select(0, like.sorted_indices), lengths.index_select(0, like.sorted_indices.cpu())
    data = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class LSTM(RecurrentBase):
    """torch.nn.LSTM's interface (gates i, f, g, o; state (h, c)), multi-head with ``num_heads``."""

    cell_name = "lstm"
    torch_class = nn.LSTM


class GRU(RecurrentBase):
    """torch.nn.GRU's interface (gates r, z, n; b_hn inside the reset product), multi-head with ``num_heads``."""

    cell_name = "gru"
    torch_class = nn.GRU


class RNN(RecurrentBase):
    """torch.nn.RNN's interface with tanh (Elman), multi-head with ``num_heads``. torch's positional order:
    nonlinearity comes fourth."""

    cell_name = "elman"
    torch_class = nn.RNN

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        num_heads: int = 1,
        backend: str = "auto",
        checkpoint: int | None = None,
        checkpoint_budget: int | None = None,
    ) -> None:
        if nonlinearity != "tanh":
            raise ValueError(f"nonlinearity: expected 'tanh' (fusedrnn's Elman cell), got {nonlinearity!r}")
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            num_heads=num_heads,
            backend=backend,
            checkpoint=checkpoint,
            checkpoint_budget=checkpoint_budget,
        )
        self.nonlinearity = nonlinearity


class SLSTM(RecurrentBase):
    """The sLSTM of xLSTM / flashrnn (exponential input gate, normaliser n, stabiliser m), multi-head with
    ``num_heads``. State (h, c, n, m); gates i, f, z, o. No torch.nn equivalent."""

    cell_name = "slstm"
