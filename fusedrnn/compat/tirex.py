"""TiRex (the ``tirex-ts`` package) forecasting with its sLSTM cells computed by fusedrnn.

One line after loading a model, whichever backend it was loaded with::

    import fusedrnn.compat.tirex
    model = fusedrnn.compat.tirex.use_fusedrnn(tirex.load_model("NX-AI/TiRex", backend="torch"))

TiRex's own paths are ``backend="torch"`` (a Python loop over the tokens, optionally ``torch.compile``d) and
``backend="cuda"`` (xlstm's sLSTM kernels, compiled with nvcc at first use). Each TiRex ``sLSTMCell`` keeps its
parameters and state layout; its forward calls ``fusedrnn.rnn`` on views: the pre-activations [B, T, G·H] are
fusedrnn's x [B, T, G, NH, D] as they are; the recurrent kernel [NH, D_in, G·D_out] gives R[g, n, i, j] =
kernel[n, j, g·D + i] and the bias (NH, G, D) gives b[g, n] = bias[n, g] (gates i, f, z, o in both).

Precision: like TiRex's own paths, the recurrence computes in bfloat16 (float32 accumulation and pointwise math)
by default, whatever the model's dtype; ``dtype=torch.float32`` computes it in float32. Differences from TiRex's
torch path within that precision: TiRex rounds the states to bfloat16 after every step (fusedrnn keeps them in
float32 between steps), keeps the bias in float32 (fusedrnn rounds it to the compute dtype), clamps the forget
gate's pre-activation at 15 before its log-sigmoid (a change below 3e-7 in log f) and clamps the input and forget
gates to <= 1, which never binds for the zero initial state TiRex's blocks start from (docs/cells.md).
"""

from __future__ import annotations

from typing import Any

import torch

from ..api import rnn

__all__ = ["use_fusedrnn", "fused_cell_class"]

# TiRex's blocks compute the recurrence in bfloat16 on both of its own paths; the default keeps that
_DEFAULT_DTYPE = torch.bfloat16


def _tirex_cells() -> Any:
    try:
        from tirex.models.slstm import cell
    except ImportError as error:
        raise ImportError("fusedrnn.compat.tirex needs the tirex-ts package (pip install tirex-ts)") from error
    return cell


class _FusedRecurrence:
    """The forward that replaces a TiRex sLSTM cell's; mixed into a subclass of its class."""

    config: Any
    _recurrent_kernel_: torch.nn.Parameter
    _bias_: torch.nn.Parameter
    # set per instance by use_fusedrnn
    fusedrnn_backend: str = "auto"
    fusedrnn_dtype: torch.dtype = _DEFAULT_DTYPE

    def forward(self, input: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """TiRex's cell forward: input [B, T, G·H], state [S, B, H] or None -> (h per step [B, NH, T, D],
        final states [S, B, H]), in the input's dtype."""
        config = self.config
        NH, D, G, S = config.num_heads, config.head_dim, config.num_gates, config.num_states
        if input.dim() != 3 or input.shape[-1] != G * NH * D:
            raise ValueError(
                f"input: expected shape [B, T, {G * NH * D}] (4 gates of {NH} heads of {D}), got {tuple(input.shape)}"
            )
        B, T = input.shape[:2]
        dtype = self.fusedrnn_dtype
        x = input.view(B, T, G, NH, D).to(dtype)
        R = self._recurrent_kernel_.view(NH, D, G, D).permute(2, 0, 3, 1).to(dtype)
        b = self._bias_.view(NH, G, D).permute(1, 0, 2).to(dtype)
        if state is not None:
            if tuple(state.shape) != (S, B, NH * D):
                raise ValueError(f"state: expected shape {(S, B, NH * D)} [S, B, H], got {tuple(state.shape)}")
            state = state.view(S, B, NH, D).to(dtype)
        y, final = rnn(x, R, b, state, cell="slstm", backend=self.fusedrnn_backend)
        return y.transpose(1, 2).to(input.dtype), final.view(S, B, NH * D).to(input.dtype)


_fused_classes: dict[type, type] = {}


def fused_cell_class(base: type) -> type:
    """The subclass of TiRex's cell class ``base`` whose forward runs on fusedrnn (one class per base)."""
    if base not in _fused_classes:
        if not (isinstance(base, type) and issubclass(base, _tirex_cells().sLSTMCell)):
            raise TypeError(f"base: expected TiRex's sLSTMCell or a subclass, got {base!r}")
        name = f"{base.__name__}_fusedrnn"
        _fused_classes[base] = type(name, (_FusedRecurrence, base), {"__module__": __name__})
    return _fused_classes[base]


def __getattr__(name: str) -> type:
    """The fused cell class by name (``sLSTMCell_fusedrnn``), created on first use: pickle finds a converted
    cell's class here (``torch.save(model)`` and loading it elsewhere)."""
    if name.endswith("_fusedrnn"):
        base = getattr(_tirex_cells(), name.removesuffix("_fusedrnn"), None)
        if isinstance(base, type):
            return fused_cell_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def use_fusedrnn(
    module: torch.nn.Module, backend: str = "auto", dtype: torch.dtype = _DEFAULT_DTYPE
) -> torch.nn.Module:
    """Make every TiRex sLSTM cell in ``module`` (itself included) compute on fusedrnn, in place.

    Args:
        module: a TiRex model (``tirex.load_model(...)``, ``TiRexZero``) or any module holding its sLSTM cells.
        backend: the fusedrnn backend the cells call ("auto": the fastest for each call).
        dtype: the recurrence's compute dtype (bfloat16, as TiRex's own paths; or float16, float32, float64).

    Returns:
        ``module`` (the same object; parameters and state dict unchanged).

    Raises:
        ImportError: tirex-ts is not installed.
        TypeError: a bad argument type.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str), got {type(backend).__name__}")
    if dtype not in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.bfloat16, float16, float32 or float64, got {dtype}")
    cells = _tirex_cells()
    for cell in module.modules():
        if isinstance(cell, cells.sLSTMCell):
            if not isinstance(cell, _FusedRecurrence):
                cell.__class__ = fused_cell_class(type(cell))
            cell.fusedrnn_backend = backend
            cell.fusedrnn_dtype = dtype
    return module
