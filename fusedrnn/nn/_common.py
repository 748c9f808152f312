"""What the layers and the cells of fusedrnn.nn share: argument checks with torch's exception types, the
parameter layout (torch's, with a per-head recurrent matrix) and its views in fusedrnn.rnn's layouts, and the
choice of torch's own CPU RNN ops where they compute the same function.

Parameter layout, per layer and direction (H = hidden_size = NH·D, G = the cell's gate count):

    weight_ih  [G·H, I]   torch's
    weight_hh  [G·H, D]   row g·H + n·D + i, column j is R[g, n, i, j] (head n's block); with one head
                          D = H and this is torch's [G·H, H]
    bias_ih    [G·H]      torch's
    bias_hh    [G·H]      torch's

so with one head the parameters are torch's, name for name and shape for shape. The kernels' R [G, NH, D, D]
is a view of weight_hh and their b [Gb, NH, D] one of bias_hh (GRU: its gates placed in their bias slots).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn

from ..backends import BACKEND_ENV
from ..cells import Cell
from ..derived import fingerprint

# cells that torch computes with its own fused CPU ops (same gate orders and function): torch._VF's ops for
# a sequence and for one step, looked up once (torch._VF's attribute lookup costs host time on every call)
TORCH_SEQUENCE_OPS: dict[str, Callable[..., Any]] = {
    cell: getattr(torch._VF, op) for cell, op in (("lstm", "lstm"), ("gru", "gru"), ("elman", "rnn_tanh"))
}
TORCH_STEP_OPS: dict[str, Callable[..., Any]] = {
    cell: getattr(torch._VF, op)
    for cell, op in (("lstm", "lstm_cell"), ("gru", "gru_cell"), ("elman", "rnn_tanh_cell"))
}
# dtypes torch's CPU RNN ops compute in their own precision, as the reference backend does
_TORCH_OP_DTYPES = (torch.float32, torch.float64)


def check_size(name: str, value: object, minimum: int = 1) -> int:
    """An integer size argument: TypeError for another type, ValueError below ``minimum`` (torch's types)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_heads(hidden_size: int, num_heads: object) -> int:
    heads = check_size("num_heads", num_heads)
    if hidden_size % heads:
        raise ValueError(f"num_heads: expected a divisor of hidden_size ({hidden_size}), got {heads}")
    return heads


def check_dropout(dropout: object) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
    return float(dropout)


def check_backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str), got {type(backend).__name__}")
    return backend


def check_checkpoint(checkpoint: object, budget: object) -> tuple[int | None, int | None]:
    """The layers' checkpoint options, checked as ``fusedrnn.rnn`` checks them (at most one; ints >= 1)."""
    from ..checkpoint import check_options

    return check_options(checkpoint, budget)


def recurrent_parameters(
    cell: Cell, input_size: int, hidden_size: int, head_dim: int, bias: bool, factory: dict
) -> dict[str, nn.Parameter]:
    """One layer and direction's parameters (uninitialised), in the layout of this module's docstring."""
    gates = cell.num_gates_x * hidden_size
    if cell.num_gates_r != cell.num_gates_x:
        raise ValueError(f"cell {cell.name!r}: fusedrnn.nn needs as many recurrent gates as input gates")
    shapes: dict[str, tuple[int, ...]] = {"weight_ih": (gates, input_size), "weight_hh": (gates, head_dim)}
    if bias:
        shapes.update(bias_ih=(gates,), bias_hh=(gates,))
    return {kind: nn.Parameter(torch.empty(shape, **factory)) for kind, shape in shapes.items()}


def initialise(module: nn.Module, hidden_size: int, head_dim: int) -> None:
    """torch.nn's initialisation, U(-1/√H, 1/√H), with the recurrent weights' fan-in per head: U(-1/√D, 1/√D)
    for weight_hh and bias_hh (the same when num_heads = 1)."""
    input_bound, head_bound = hidden_size**-0.5, head_dim**-0.5
    for name, param in module.named_parameters(recurse=False):
        bound = head_bound if name.startswith(("weight_hh", "bias_hh")) else input_bound
        nn.init.uniform_(param, -bound, bound)


def kernel_weights(
    cell: Cell, w_hh: torch.Tensor, b_hh: torch.Tensor | None, num_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """fusedrnn.rnn's R [Gr, NH, D, D] (a view of weight_hh) and b [Gb, NH, D]: each recurrent bias in the
    slot its gate feeds (``Cell.r_slots``; for GRU that keeps torch's b_hn inside the reset product)."""
    R = w_hh.view(cell.num_gates_r, num_heads, head_dim, head_dim)
    if b_hh is None:
        return R, w_hh.new_zeros(cell.num_gates_b, num_heads, head_dim)
    b = b_hh.view(cell.num_gates_r, num_heads, head_dim)
    slots = tuple(cell.r_slots)
    if slots == tuple(range(cell.num_gates_b)):
        return R, b
    rows = [torch.zeros_like(b[0])] * cell.num_gates_b
    for gate, slot in enumerate(slots):
        rows[slot] = b[gate]
    return R, torch.stack(rows)


def dense_recurrent(w_hh: torch.Tensor, num_heads: int) -> torch.Tensor:
    """weight_hh [G·H, D] as torch's dense [G·H, H]: the heads' blocks on the diagonal, zeros elsewhere, so
    torch's ops compute the block-diagonal recurrence exactly. One native op (its backward reads the
    diagonal blocks of the dense gradient); the tensor itself with one head."""
    if num_heads == 1:
        return w_hh
    rows, D = w_hh.shape
    G = rows // (num_heads * D)
    blocks = w_hh.view(G, num_heads, D, D).permute(0, 2, 3, 1)  # [G, D_out, D_in, NH]
    return torch.diag_embed(blocks, dim1=1, dim2=3).view(rows, num_heads * D)  # [G, NH, D_out, NH, D_in]


class DenseRecurrentCache:
    """dense_recurrent of a module's weight_hh parameters, kept while a parameter is unchanged
    (``fusedrnn.derived.fingerprint``) and no graph is recorded: inference with heads then costs what it costs
    with one head."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple | None, torch.Tensor]] = {}

    def get(self, name: str, w_hh: torch.Tensor, num_heads: int) -> torch.Tensor:
        if num_heads == 1:
            return w_hh
        if torch.is_grad_enabled() and w_hh.requires_grad:
            return dense_recurrent(w_hh, num_heads)
        key = fingerprint(w_hh)
        entry = self._entries.get(name)
        if key is None or entry is None or entry[0] != key:
            entry = (key, dense_recurrent(w_hh.detach(), num_heads))
            self._entries[name] = entry
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()


def runs_on_torch_ops(cell: Cell, backend: str, x: torch.Tensor) -> bool:
    """Whether a call runs on torch's own CPU RNN ops rather than fusedrnn.rnn: on the CPU, for the cells
    torch computes (same function), in float32 / float64, with the backend left to dispatch. Faster there
    than a step loop in Python (BENCHMARKS.md, CPU table). Not under torch.compile (inductor cannot compile
    torch's CPU RNN op; fusedrnn's custom ops can) nor autocast (fusedrnn casts as torch's RNNs do)."""
    return (
        x.is_cpu
        and backend == "auto"
        and cell.name in TORCH_SEQUENCE_OPS
        and x.dtype in _TORCH_OP_DTYPES
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")
        and os.environ.get(BACKEND_ENV, "auto").strip() in ("", "auto")
    )


def check_input_dtype(x: torch.Tensor, weight: torch.Tensor, error: type[Exception]) -> None:
    """The input's dtype against the parameters', before any product (torch's check and exception type)."""
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise error(
            f"input: expected dtype {weight.dtype} (the parameters'), got {x.dtype}; convert the input "
            f"(input.to({weight.dtype})) or the module (module.to({x.dtype}))"
        )


def multi_head_load_errors(
    module: nn.Module, state_dict: dict, prefix: str, num_heads: int, error_msgs: list[str]
) -> None:
    """Explain a dense recurrent matrix (torch.nn's, or a one-head layer's) offered to a multi-head layer;
    load_state_dict raises RuntimeError with these messages beside torch's size mismatch."""
    if num_heads == 1:
        return
    for name, param in module.named_parameters(recurse=False):
        if not name.startswith("weight_hh"):
            continue
        offered = state_dict.get(prefix + name)
        rows, head_dim = param.shape
        if isinstance(offered, torch.Tensor) and tuple(offered.shape) == (rows, head_dim * num_heads):
            error_msgs.append(
                f"{prefix}{name}: got a dense recurrent matrix {tuple(offered.shape)} (torch.nn's layout, one head), "
                f"but this {type(module).__name__} has num_heads={num_heads}, whose {name} is {tuple(param.shape)} "
                f"(each head's [D, D] block; fusedrnn.nn's layout). A dense matrix is not block-diagonal, so it "
                f"cannot be loaded here: build the layer with num_heads=1 to load torch.nn weights."
            )


def refuse_scripting(module: nn.Module) -> None:
    raise RuntimeError(
        f"torch.jit.script cannot compile fusedrnn.nn.{type(module).__name__} (its forward dispatches to "
        f"fusedrnn's backends in Python); use torch.compile(model), or torch.jit.trace(model, example_inputs)"
    )


def check_state_parts(
    cell: Cell, hx: object, owner: str, suffix: str, expected: tuple[int, ...], layout: str, like: torch.Tensor
) -> list[torch.Tensor]:
    """A module's state argument ``hx`` (torch's format: one tensor, or a tuple of one per state) as its tensors,
    each of shape ``expected``: TypeError for a wrong container, RuntimeError for shapes, dtypes and devices other
    than the input's, as torch's RNN modules raise. ``suffix`` follows each state's name in messages ("_0")."""
    if cell.num_states == 1 and not isinstance(hx, torch.Tensor):
        raise TypeError(f"hx: expected a tensor h{suffix} for {owner}, got {type(hx).__name__}")
    if cell.num_states > 1 and (not isinstance(hx, (tuple, list)) or len(hx) != cell.num_states):
        raise TypeError(
            f"hx: expected a tuple of {cell.num_states} tensors ({', '.join(cell.states)}) for {owner}, got "
            f"{type(hx).__name__}"
        )
    parts = [hx] if isinstance(hx, torch.Tensor) else list(cast(Sequence[torch.Tensor], hx))
    for name, part in zip(cell.states, parts):
        label = f"hx ({name}{suffix})"
        if not isinstance(part, torch.Tensor):
            raise TypeError(f"{label}: expected a tensor, got {type(part).__name__}")
        if tuple(part.shape) != expected:
            raise RuntimeError(f"{label}: expected shape {expected} {layout}, got {tuple(part.shape)}")
        if part.dtype != like.dtype and not torch.is_autocast_enabled(part.device.type):
            raise RuntimeError(f"{label}: expected dtype {like.dtype} (the input's), got {part.dtype}")
        if part.device != like.device:
            raise RuntimeError(f"{label}: expected device {like.device} (the input's), got {part.device}")
    return parts


class TorchModuleRules(nn.Module):
    """What the layers and the cells share as torch modules: scripting refused with a pointer to torch.compile /
    torch.jit.trace, and a dense torch state_dict offered to a multi-head module explained."""

    num_heads: int

    def __prepare_scriptable__(self) -> nn.Module:
        refuse_scripting(self)
        return self

    def _load_from_state_dict(
        self,
        state_dict: Any,
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        multi_head_load_errors(self, state_dict, prefix, self.num_heads, error_msgs)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
