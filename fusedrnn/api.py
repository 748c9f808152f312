"""The public functional API: ``fusedrnn.rnn``. Validation happens here, once; backends trust it."""

from __future__ import annotations

import torch

from .backends import Call, select_backend
from .cells import Cell, get_cell

__all__ = ["rnn", "initial_state"]

SUPPORTED_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def _check_tensor(name: str, value: object, rank: int, layout: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {layout}, got {type(value).__name__}")
    if value.dim() != rank:
        raise ValueError(f"{name}: expected a {rank}-d tensor {layout}, got shape {tuple(value.shape)}")
    return value


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], layout: str, why: str) -> None:
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name}: expected shape {expected} {layout} ({why}), got {tuple(tensor.shape)}")


def initial_state(
    cell: str | Cell, batch: int, num_heads: int, head_dim: int, *, dtype=None, device=None
) -> torch.Tensor:
    """The state [S, B, NH, D] that ``rnn`` uses when ``state`` is None (each cell's initial values)."""
    spec = get_cell(cell)
    state = torch.empty(spec.num_states, batch, num_heads, head_dim, dtype=dtype, device=device)
    for s, value in enumerate(spec.initial):
        state[s].fill_(value)
    return state


def rnn(
    x: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
    *,
    cell: str | Cell,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a (multi-head) recurrent cell over a sequence.

    Args:
        x: input pre-activations [B, T, Gx, NH, D] (W x + ..., gate-major like torch's weight_ih rows).
        R: recurrent weights [Gr, NH, D, D]; R[g, n] maps h (D_in, last axis) to gate g (D_out).
        b: biases [Gb, NH, D].
        state: initial states [S, B, NH, D]; each cell's initial values (zeros) when None.
        cell: "lstm", "gru", "elman", "slstm" or a registered ``Cell``.
        backend: "auto" (the fastest backend that supports the call; env FUSEDRNN_BACKEND overrides it)
            or a backend name, which must be able to run the call.

    Returns:
        y [B, T, NH, D] (h at every step) and the final states [S, B, NH, D], in x's dtype.

    B = 0 or T = 0 is allowed: y is empty and the final state equals the initial state.
    """
    spec = get_cell(cell)
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str), got {type(backend).__name__}")
    x = _check_tensor("x", x, 5, "[B, T, Gx, NH, D]")
    B, T, Gx, NH, D = x.shape
    if Gx != spec.num_gates_x:
        raise ValueError(
            f"x: expected {spec.num_gates_x} gates ({', '.join(spec.gates_x)}) on axis 2 for cell "
            f"{spec.name!r}, got shape {tuple(x.shape)} [B, T, Gx, NH, D]"
        )
    if NH == 0 or D == 0:
        raise ValueError(f"x: num_heads and head_dim must be >= 1, got shape {tuple(x.shape)} [B, T, Gx, NH, D]")
    R = _check_tensor("R", R, 4, "[Gr, NH, D, D]")
    _check_shape("R", R, (spec.num_gates_r, NH, D, D), "[Gr, NH, D, D]", f"cell {spec.name!r}, NH and D of x")
    b = _check_tensor("b", b, 3, "[Gb, NH, D]")
    _check_shape("b", b, (spec.num_gates_b, NH, D), "[Gb, NH, D]", f"cell {spec.name!r}, NH and D of x")
    if state is not None:
        state = _check_tensor("state", state, 4, "[S, B, NH, D]")
        _check_shape(
            "state", state, (spec.num_states, B, NH, D), "[S, B, NH, D]", f"cell {spec.name!r}, B, NH and D of x"
        )
    named = [("x", x), ("R", R), ("b", b)] + ([("state", state)] if state is not None else [])
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x: expected dtype one of {list(SUPPORTED_DTYPES)}, got {x.dtype}")
    for name, tensor in named[1:]:
        if tensor.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of x), got {tensor.dtype}; cast with .to()")
        if tensor.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of x), got {tensor.device}")

    if state is None:
        state = initial_state(spec, B, NH, D, dtype=x.dtype, device=x.device)
    if B == 0 or T == 0:
        return x.new_empty(B, T, NH, D), state.clone()

    call = Call(
        cell=spec,
        batch=B,
        steps=T,
        num_heads=NH,
        head_dim=D,
        dtype=x.dtype,
        device=x.device,
        requires_grad=torch.is_grad_enabled() and any(t.requires_grad for _, t in named),
    )
    chosen = select_backend(backend, call)
    return chosen.run(spec, x, R, b, state)
