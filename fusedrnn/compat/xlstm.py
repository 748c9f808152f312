"""The ``xlstm`` package's sLSTM layers (2.0.x) with their recurrence computed by fusedrnn — no nvcc.

One line, for a model that exists (built or loaded)::

    import fusedrnn.compat.xlstm
    model = fusedrnn.compat.xlstm.use_fusedrnn(model)   # every sLSTM cell in it now runs on fusedrnn

and, to build models whose config names xlstm's ``"cuda"`` backend without compiling its kernels (its cells
otherwise run nvcc when they are built)::

    fusedrnn.compat.xlstm.install()   # from now on sLSTMCell(config) with backend "cuda" builds a fusedrnn cell

Either way each cell keeps its parameters (the same tensors, in the layout of the backend it was built for, so
state dicts load both ways), its state layout ([S, B, H]: h, c, n, m for sLSTM) and its outputs. The cells
become instances of a subclass of their own class (``isinstance`` checks still hold) whose ``forward`` calls
``fusedrnn.rnn`` on views of xlstm's tensors: its pre-activations [B, T, G·H] are fusedrnn's x
[B, T, G, NH, D] as they are; only R and b are permuted.

Mapping (xlstm 2.0.6's ``sLSTMCell_vanilla`` / ``sLSTMCell_cuda``, gates i, f, z, o in both libraries):

- recurrent kernel, external layout [NH, D_in, G, D_out]: fusedrnn's R[g, n, i, j] = kernel[n, j, g, i]
  (stored as [NH, G·D_out, D_in] by the vanilla cell, [NH, D_in, G·D_out] by the cuda cell);
- bias [NH, G, D] (stored gate-major by the vanilla cell, head-major by the cuda cell): b[g, n] = bias[n, g];
- ``function="slstm"`` is fusedrnn's ``slstm`` cell, ``function="lstm"`` its ``lstm`` cell (same equations).

Where the result can differ from xlstm's own backends:

- Precision follows the activations: a float32 model computes in float32 (xlstm's vanilla backend does the
  same; its cuda backend computes in ``config.dtype``, bfloat16 by default, whatever the model's dtype), a
  bfloat16 model or autocast in bfloat16 with float32 accumulation; R and b are cast to the activations'
  dtype (the cuda backend keeps the bias in float32).
- xlstm clamps the sLSTM input and forget gates to <= 1 and tests for a fresh state (n = 0) over the whole
  batch at once; fusedrnn does neither (docs/cells.md). Both agree for the states xlstm's layers use: zero
  initial states and any state after a step (n >= 1); the clamp can matter only for a gradient into a zero
  initial state's c and n.
- ``gradient_recurrent_cut``, ``gradient_recurrent_clipval``, ``forward_clipval`` and ``constants`` (used only
  by xlstm's cuda kernels) raise ValueError at conversion when set: they change the result and fusedrnn does
  not implement them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..api import rnn
from ..cells import get_cell
from ._flashrnn import _state_sequence, refuse_unsupported_options

__all__ = ["use_fusedrnn", "install", "uninstall", "is_installed", "fused_cell_class"]

# xlstm's cell functions -> fusedrnn cells (the same equations and gate orders)
CELLS = {"slstm": "slstm", "lstm": "lstm"}


def _xlstm_cells() -> Any:
    try:
        from xlstm.blocks.slstm import cell
    except ImportError as error:
        raise ImportError(
            "fusedrnn.compat.xlstm needs the xlstm package (pip install xlstm; 2.0.x is supported)"
        ) from error
    return cell


def _check_config(config: Any) -> None:
    if config.function not in CELLS:
        raise ValueError(f"config.function: expected one of {sorted(CELLS)}, got {config.function!r}")
    refuse_unsupported_options(config, "xlstm")


class _FusedRecurrence:
    """The methods that replace an xlstm sLSTM cell's recurrence; mixed into a subclass of the cell's class."""

    # set per subclass: True where the cell stores its parameters in the cuda backend's layout
    _cuda_layout: bool
    # the fusedrnn backend the cell calls; set per instance by use_fusedrnn / install
    fusedrnn_backend: str = "auto"

    config: Any
    _recurrent_kernel_: torch.nn.Parameter
    _bias_: torch.nn.Parameter

    def _fusedrnn_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """R [G, NH, D, D] and b [G, NH, D] (fusedrnn's layouts): differentiable views of the parameters."""
        NH, D, G = self.config.num_heads, self.config.head_dim, self.config.num_gates
        if self._cuda_layout:  # kernel [NH, D_in, G·D_out], bias (NH, G, D)
            R = self._recurrent_kernel_.view(NH, D, G, D).permute(2, 0, 3, 1)
            b = self._bias_.view(NH, G, D).permute(1, 0, 2)
        else:  # kernel [NH, G·D_out, D_in], bias (G, NH, D)
            R = self._recurrent_kernel_.view(NH, G, D, D).transpose(0, 1)
            b = self._bias_.view(G, NH, D)
        return R, b

    def _fusedrnn_run(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, G, NH, D], state [S, B, H] or None -> y [B, T, NH, D], final state [S, B, NH, D]."""
        B = x.shape[0]
        NH, D = self.config.num_heads, self.config.head_dim
        R, b = self._fusedrnn_weights()
        if not torch.is_autocast_enabled(x.device.type):  # under autocast, rnn casts all of them itself
            R, b = R.to(x.dtype), b.to(x.dtype)
            state = None if state is None else state.to(x.dtype)
        if state is not None:
            expected = (self.config.num_states, B, self.config.hidden_size)
            if tuple(state.shape) != expected:
                raise ValueError(f"state: expected shape {expected} [S, B, H], got {tuple(state.shape)}")
            state = state.view(self.config.num_states, B, NH, D)
        return rnn(x, R, b, state, cell=CELLS[self.config.function], backend=self.fusedrnn_backend)

    def _internal_to_x(self, input: torch.Tensor) -> torch.Tensor:
        """xlstm's internal input [T, B, G·H] (config.internal_input_shape) as x [B, T, G, NH, D] (a view)."""
        T, B = input.shape[:2]
        NH, D, G = self.config.num_heads, self.config.head_dim, self.config.num_gates
        layout = self.config.internal_input_shape
        if layout == "SBGNH":
            x = input.view(T, B, G, NH, D)
        elif layout == "SBNGH":
            x = input.view(T, B, NH, G, D).transpose(2, 3)
        elif layout == "SBNHG":
            x = input.view(T, B, NH, D, G).permute(0, 1, 4, 2, 3)
        else:
            raise ValueError(f"config.internal_input_shape: expected SBGNH, SBNGH or SBNHG, got {layout!r}")
        return x.transpose(0, 1)

    def forward(
        self, input: torch.Tensor, state: torch.Tensor | None = None, lengths: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """xlstm's cell forward: input [B, T, G·H] (input_shape "BSGNH"; [T, B, G·H] for "SBGNH"), state
        [S, B, H] or None -> (h per step in config.output_shape, final states [S, B, H])."""
        if lengths is not None:
            raise ValueError("lengths: expected None (xlstm's sLSTM cells do not use it), got a value")
        self._check_input(input)  # type: ignore[attr-defined]
        NH, D, G = self.config.num_heads, self.config.head_dim, self.config.num_gates
        if self.config.input_shape == "BSGNH":
            x = input.view(input.shape[0], input.shape[1], G, NH, D)
        elif self.config.input_shape == "SBGNH":
            x = input.view(input.shape[0], input.shape[1], G, NH, D).transpose(0, 1)
        else:
            raise ValueError(f"config.input_shape: expected 'BSGNH' or 'SBGNH', got {self.config.input_shape!r}")
        y, final = self._fusedrnn_run(x, state)  # y [B, T, NH, D]
        B, T = y.shape[:2]
        shape = self.config.output_shape
        if shape == "BNSH":
            output = y.transpose(1, 2)
        elif shape == "SBNH":
            output = y.transpose(0, 1)
        elif shape == "SBH":
            output = y.transpose(0, 1).reshape(T, B, NH * D)
        elif shape == "BSH":
            output = y.reshape(B, T, NH * D)
        else:
            raise ValueError(f"config.output_shape: expected BNSH, SBNH, SBH or BSH, got {shape!r}")
        final = final.reshape(final.shape[0], B, NH * D)
        if torch.is_autocast_enabled(input.device.type):
            return output, final
        return output.to(input.dtype), final.to(input.dtype)

    def _all_states(self, input: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Every state at every step [S, T, B, H] (xlstm's internal layout) from the internal input."""
        x = self._internal_to_x(input)
        y, _ = self._fusedrnn_run(x, state)
        R, b = self._fusedrnn_weights()
        B, T, _, NH, D = x.shape
        states = state.view(-1, B, NH, D).to(x.dtype)
        spec = get_cell(CELLS[self.config.function])
        sequence = _state_sequence(spec, x, R.to(x.dtype), b.to(x.dtype), states, y)  # [S, B, T, NH, D]
        return sequence.transpose(1, 2).reshape(-1, T, B, NH * D)

    def _impl(self, training: bool, input: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """xlstm's backend hook: all states [S, T + 1, B, H], the initial state first (as its vanilla backend)."""
        return torch.cat([state.unsqueeze(1).to(input.dtype), self._all_states(input, state)], dim=1)

    def _impl_step(self, training: bool, input: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """xlstm's single-step hook: the states after one step [S, 1, B, H] (as its vanilla backend)."""
        return self._all_states(input[:1], state)


_fused_classes: dict[type, type] = {}


def fused_cell_class(base: type) -> type:
    """The subclass of xlstm's cell class ``base`` (``sLSTMCell_vanilla`` or ``sLSTMCell_cuda``) whose
    recurrence runs on fusedrnn, keeping ``base``'s parameter layout (one class per base)."""
    if base in _fused_classes:
        return _fused_classes[base]
    cells = _xlstm_cells()
    if not (isinstance(base, type) and issubclass(base, (cells.sLSTMCell_vanilla, cells.sLSTMCell_cuda))):
        raise TypeError(f"base: expected xlstm's sLSTMCell_vanilla or sLSTMCell_cuda, got {base!r}")
    cuda_layout = issubclass(base, cells.sLSTMCell_cuda)
    name = f"{base.__name__}_fusedrnn"
    fused = type(name, (_FusedRecurrence, base), {"_cuda_layout": cuda_layout, "__module__": __name__})
    _fused_classes[base] = fused
    return fused


def __getattr__(name: str) -> type:
    """The fused cell classes by name (``sLSTMCell_vanilla_fusedrnn``, ``sLSTMCell_cuda_fusedrnn``), created on
    first use: pickle finds a converted cell's class here (``torch.save(model)`` and loading it elsewhere)."""
    if name.endswith("_fusedrnn"):
        base = getattr(_xlstm_cells(), name.removesuffix("_fusedrnn"), None)
        if isinstance(base, type):
            return fused_cell_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _convert(cell: Any, backend: str) -> None:
    _check_config(cell.config)
    if not isinstance(cell, _FusedRecurrence):
        cell.__class__ = fused_cell_class(type(cell))
    cell.fusedrnn_backend = backend


def use_fusedrnn(module: torch.nn.Module, backend: str = "auto") -> torch.nn.Module:
    """Make every xlstm sLSTM cell in ``module`` (itself included) run its recurrence on fusedrnn, in place.

    Args:
        module: an xlstm model or any module holding xlstm ``sLSTMCell``s (xLSTMBlockStack, sLSTMBlock,
            sLSTMLayer, ...), built with either of xlstm's backends.
        backend: the fusedrnn backend the cells call ("auto": the fastest for each call).

    Returns:
        ``module`` (the same object; its parameters and state dict are unchanged).

    Raises:
        ImportError: the xlstm package is not installed.
        TypeError: ``module`` is not a torch module.
        ValueError: a cell's config uses an option fusedrnn does not implement (see the module docstring).
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str), got {type(backend).__name__}")
    cells = _xlstm_cells()
    for cell in module.modules():
        if isinstance(cell, cells.sLSTMCellBase):
            _convert(cell, backend)
    return module


_installed: dict[str, Any] = {}


def install(backend: str = "auto") -> None:
    """From now on, ``xlstm``'s ``sLSTMCell(config)`` with ``config.backend == "cuda"`` builds a fusedrnn cell
    (the cuda backend's parameter layout, so its checkpoints load) instead of compiling xlstm's CUDA kernels;
    ``config.backend == "fusedrnn"`` does the same. Vanilla cells stay as they are. Undo with ``uninstall()``."""
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str), got {type(backend).__name__}")
    cells = _xlstm_cells()
    original = _installed.get("new", cells.sLSTMCell.__new__)

    def new(cls: type, config: Any, skip_backend_init: bool = False) -> Any:
        if config.backend in ("cuda", "fusedrnn"):
            _check_config(config)
            cell = fused_cell_class(cells.sLSTMCell_cuda)(config, skip_backend_init=True)
            cell.fusedrnn_backend = backend
            return cell
        return original(cls, config, skip_backend_init)

    _installed["new"] = original
    cells.sLSTMCell.__new__ = new


def uninstall() -> None:
    """Undo ``install()``: xlstm's ``sLSTMCell`` builds its own backends again (cells built meanwhile stay)."""
    if "new" in _installed:
        _xlstm_cells().sLSTMCell.__new__ = _installed.pop("new")


def is_installed() -> bool:
    return "new" in _installed
