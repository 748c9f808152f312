"""The public functional API: ``fusedrnn.rnn``. Validation happens here, once; backends trust it."""

from __future__ import annotations

import contextlib

import torch

from .backends import Call, select_backend
from .cells import Cell, get_cell
from .checkpoint import checkpointed_run, overlap_allowed, resolve_steps

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
    cell: str | Cell,
    batch: int,
    num_heads: int,
    head_dim: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The state [S, B, NH, D] that ``rnn`` uses when ``state`` is None (each cell's initial values)."""
    spec = get_cell(cell)
    shape = (spec.num_states, batch, num_heads, head_dim)
    if not any(spec.initial):  # every built-in cell: one fill, the host latency of one launch
        return torch.zeros(shape, dtype=dtype, device=device)
    state = torch.empty(shape, dtype=dtype, device=device)
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
    lengths: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    checkpoint: int | None = None,
    checkpoint_budget: int | None = None,
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
        lengths: steps per batch row [B] (integers in 0..T, a tensor on any device or a sequence), for
            batches of sequences of different lengths: row b runs lengths[b] steps; y is 0 after them and
            its final states are those after its last step. Inside the kernels, no batch splitting. Values
            are checked when lengths is on the CPU; on a GPU they are not (that would synchronise) and act
            as if clamped to 0..T.
        resets: episode starts [B, T] (bool, on x's device): where resets[b, t] is True, row b's states are
            replaced by the cell's initial states (``initial_state``: zeros for every built-in cell) before
            step t, so step t starts a new episode, as if the row were split there and each piece run alone
            from the initial state. ``state`` then applies only to the steps before a row's first reset, and
            no gradient flows across a reset (to ``state`` or to earlier steps). Steps past a row's length do
            not run, so resets there are ignored. Inside the kernels, like lengths. TorchRL's ``is_init`` is
            this flag (docs/resets.md).
        checkpoint: for training on long sequences, keep fewer activations: the forward keeps the states every
            ``checkpoint`` steps only and the backward recomputes one segment at a time (the forward runs twice;
            see ``fusedrnn.checkpoint``). None (default): save every step's activations. No effect without a
            gradient. The results equal the saving path's (dR and db summed per segment).
        checkpoint_budget: instead of ``checkpoint``, the bytes the call may keep for the backward beyond its
            inputs; the longest segment that fits is chosen (``fusedrnn.checkpoint.checkpoint_steps``).

    Returns:
        y [B, T, NH, D] (h at every step) and the final states [S, B, NH, D], in x's dtype.

    B = 0 or T = 0 is allowed: y is empty and the final state equals the initial state.
    Under torch.autocast, floating-point inputs other than float64 are cast to the autocast dtype (as
    torch's own RNNs are). Under torch.compile the call becomes the custom ops of ``fusedrnn.ops``.
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
    autocast = torch.is_autocast_enabled(x.device.type)
    if autocast:
        x, R, b, state = _autocast(x.device.type, x, R, b, state)
    named = [("x", x), ("R", R), ("b", b)] + ([("state", state)] if state is not None else [])
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x: expected dtype one of {list(SUPPORTED_DTYPES)}, got {x.dtype}")
    for name, tensor in named[1:]:
        if tensor.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of x), got {tensor.dtype}; cast with .to()")
        if tensor.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of x), got {tensor.device}")

    compiling = torch.compiler.is_compiling()
    steps = resolve_steps(spec, B, T, NH, D, x.dtype, checkpoint, checkpoint_budget)
    if steps is not None and compiling:
        raise NotImplementedError("checkpoint: not supported under torch.compile; call rnn without it there")
    if lengths is not None:
        lengths = check_lengths(lengths, B, T, x.device, check_values=not compiling)
    if resets is not None:
        resets = check_resets(resets, B, T, x.device)

    if state is None:
        state = initial_state(spec, B, NH, D, dtype=x.dtype, device=x.device)
    if B == 0 or T == 0:
        return x.new_zeros(B, T, NH, D), state.clone()

    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for _, t in named)
    # backends compute in the dtypes they are given (entering autocast costs host time: only where it is on)
    with torch.autocast(x.device.type, enabled=False) if autocast else contextlib.nullcontext():
        if compiling:
            from . import ops

            has = (lengths is not None, resets is not None)
            name = ops.resolve_backend(backend, spec.name, NH, D, x.dtype, x.device, requires_grad, *has)
            y, final, _, _ = torch.ops.fusedrnn.forward(x, R, b, state, lengths, resets, spec.name, name, requires_grad)
            return y, final
        call = Call(spec, B, T, NH, D, x.dtype, x.device, requires_grad, lengths is not None, resets is not None)
        chosen = select_backend(backend, call)
        if steps is not None and requires_grad:
            overlap = overlap_allowed(chosen.name, call)
            return checkpointed_run(chosen.run, spec, x, R, b, state, lengths, resets, steps, overlap)
        return chosen.run(spec, x, R, b, state, lengths, resets)


def _autocast(
    device_type: str, x: torch.Tensor, R: torch.Tensor, b: torch.Tensor, state: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The inputs as torch.autocast casts an RNN's: floating point (but float64) to the autocast dtype."""
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t

    return cast(x), cast(R), cast(b), None if state is None else cast(state)


def check_lengths(lengths: object, B: int, T: int, device: torch.device, check_values: bool) -> torch.Tensor | None:
    """lengths as int32 [B] on ``device``; None when every row runs all T steps (the kernels without masks)."""
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:
            kind = type(lengths).__name__
            raise TypeError(f"lengths: expected a tensor or sequence of {B} integers, got {kind}") from error
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per batch row of x), got {tuple(lengths.shape)}")
    if check_values and lengths.device.type == "cpu" and B > 0:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 0 or high > T:
            raise ValueError(f"lengths: expected values in 0..{T} (T, the steps of x), got min {low}, max {high}")
        if low == T:
            return None
    return lengths.to(device=device, dtype=torch.int32)


def check_resets(resets: object, B: int, T: int, device: torch.device) -> torch.Tensor:
    """resets as a contiguous bool [B, T] tensor on ``device`` (the kernels read one byte per (row, step)). Errors
    of torch's types: TypeError for a non-tensor or another dtype, ValueError for the shape, RuntimeError for the
    device (as torch raises for operands on different devices); never copied across devices silently, since a
    host mask in a GPU training loop would cost a copy per call."""
    if not isinstance(resets, torch.Tensor):
        raise TypeError(f"resets: expected a bool tensor [B, T] = [{B}, {T}], got {type(resets).__name__}")
    if resets.dtype != torch.bool:
        raise TypeError(f"resets: expected dtype torch.bool (True where a step starts an episode), got {resets.dtype}")
    if tuple(resets.shape) != (B, T):
        raise ValueError(f"resets: expected shape ({B}, {T}) (the batch and steps of x), got {tuple(resets.shape)}")
    if resets.device != device:
        raise RuntimeError(f"resets: expected device {device} (the device of x), got {resets.device}")
    return resets.contiguous()
