"""The custom operators through which torch.compile (and torch.export) see fusedrnn.

Two ops, shared by every backend (the backend is a string argument, resolved when the graph is traced):

    fusedrnn::forward(x, R, b, state, lengths?, resets?, cell, backend, save) -> (y, final, saved0, saved1)
    fusedrnn::backward(x?, R, b?, state?, lengths?, resets?, saved0, saved1, dy, dfinal, cell, backend)
        -> (dx, dR, db, dstate)

Each has a fake (meta) implementation, so the compiler knows every output's shape without running a kernel,
and ``fusedrnn::forward`` has an autograd formula that calls ``fusedrnn::backward``. The saved tensors are
outputs of the forward op: what the fused backends keep for backward (their ``op_saved_shapes``); the
reference backend saves nothing and its backward recomputes the forward (``torch.func.vjp``).

Eager calls of ``fusedrnn.rnn`` do not go through these ops (that saves the dispatcher's host overhead);
while torch.compile traces, they do. Both paths run the same backend functions, and the tests compare them.
"""

from __future__ import annotations

from typing import Any

import torch

from .backends import Backend, Call, get_backend, select_backend
from .cells import get_cell

__all__ = ["resolve_backend", "forward", "backward"]


@torch.compiler.assume_constant_result
def resolve_backend(
    backend: str,
    cell: str,
    num_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
    requires_grad: bool,
    has_lengths: bool,
    has_resets: bool = False,
) -> str:
    """The backend name that ``backend`` ("auto" or a name) resolves to, evaluated once when a graph is
    traced and then a constant of that graph. Batch and steps may be symbolic there, so the choice is made
    for B = T = 1; the forward op checks the real shapes when it runs and raises if its backend cannot."""
    call = Call(get_cell(cell), 1, 1, num_heads, head_dim, dtype, device, requires_grad, has_lengths, has_resets)
    return select_backend(backend, call).name


def _backend_for_run(
    name: str, cell: str, x: torch.Tensor, requires_grad: bool, has_lengths: bool, has_resets: bool
) -> Backend:
    B, T, _, NH, D = x.shape
    backend = get_backend(name)
    call = Call(get_cell(cell), B, T, NH, D, x.dtype, x.device, requires_grad, has_lengths, has_resets)
    reason = backend.supports(call)
    if reason is not None:
        raise ValueError(f"backend {name!r} (chosen when the graph was traced) cannot run this call: {reason}")
    if backend.op_forward is None:
        raise ValueError(f"backend {name!r} has no custom-op form and cannot run under torch.compile")
    return backend


@torch.library.custom_op("fusedrnn::forward", mutates_args=())
def forward(
    x: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
    lengths: torch.Tensor | None,
    resets: torch.Tensor | None,
    cell: str,
    backend: str,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    op_forward = _backend_for_run(backend, cell, x, save, lengths is not None, resets is not None).op_forward
    assert op_forward is not None  # _backend_for_run refuses backends without one
    return op_forward(get_cell(cell), x, R, b, state, lengths, resets, save)


def _saved_like(backend: str, cell: str, x: torch.Tensor, save: bool) -> list[torch.Tensor]:
    B, T, _, NH, D = x.shape
    shapes = get_backend(backend).op_saved_shapes
    if not save or shapes is None:
        return [x.new_empty(0, dtype=torch.float32), x.new_empty(0, dtype=torch.float32)]
    return [x.new_empty(shape, dtype=dtype) for shape, dtype in shapes(get_cell(cell), B, T, NH, D)]


@forward.register_fake
def _forward_fake(
    x: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
    lengths: torch.Tensor | None,
    resets: torch.Tensor | None,
    cell: str,
    backend: str,
    save: bool,
) -> tuple[torch.Tensor, ...]:
    B, T, _, NH, D = x.shape
    return (x.new_empty(B, T, NH, D), state.new_empty(state.shape), *_saved_like(backend, cell, x, save))


@torch.library.custom_op("fusedrnn::backward", mutates_args=())
def backward(
    x: torch.Tensor | None,
    R: torch.Tensor,
    b: torch.Tensor | None,
    state: torch.Tensor | None,
    lengths: torch.Tensor | None,
    resets: torch.Tensor | None,
    saved0: torch.Tensor,
    saved1: torch.Tensor,
    dy: torch.Tensor,
    dfinal: torch.Tensor,
    cell: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    op_backward = get_backend(backend).op_backward
    assert op_backward is not None  # the forward ran through this backend's op_forward, so it has both
    grads = op_backward(get_cell(cell), (x, R, b, state), lengths, resets, (saved0, saved1), dy, dfinal)
    # a custom op's outputs are fresh contiguous tensors (the fake says so): no views, no odd strides
    return tuple(
        g.clone(memory_format=torch.contiguous_format) if g._base is not None else g.contiguous() for g in grads
    )


@backward.register_fake
def _backward_fake(
    x: torch.Tensor | None,
    R: torch.Tensor,
    b: torch.Tensor | None,
    state: torch.Tensor | None,
    lengths: torch.Tensor | None,
    resets: torch.Tensor | None,
    saved0: torch.Tensor,
    saved1: torch.Tensor,
    dy: torch.Tensor,
    dfinal: torch.Tensor,
    cell: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = get_cell(cell)
    B, T, NH, D = dy.shape
    return (
        dy.new_empty(B, T, spec.num_gates_x, NH, D),
        R.new_empty(R.shape),
        R.new_empty(spec.num_gates_b, NH, D),
        dfinal.new_empty(dfinal.shape),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    x, R, b, state, lengths, resets, cell, backend, save = inputs
    _, _, saved0, saved1 = output
    ctx.mark_non_differentiable(saved0, saved1)
    ctx.cell, ctx.backend = cell, backend
    ctx.shapes = (tuple(x.shape), tuple(state.shape), x.dtype)
    if get_backend(backend).backward_needs_inputs:
        ctx.save_for_backward(x, R, b, state, lengths, resets, saved0, saved1)
    else:
        ctx.save_for_backward(None, R, None, None, lengths, resets, saved0, saved1)


def _backward_formula(
    ctx: Any, dy: torch.Tensor | None, dfinal: torch.Tensor | None, _dsaved0: object, _dsaved1: object
) -> tuple[torch.Tensor | None, ...]:
    x, R, b, state, lengths, resets, saved0, saved1 = ctx.saved_tensors
    x_shape, state_shape, dtype = ctx.shapes
    B, T, _, NH, D = x_shape
    if dy is None:
        dy = R.new_zeros(B, T, NH, D, dtype=dtype)
    if dfinal is None:
        dfinal = R.new_zeros(state_shape, dtype=dtype)
    grads = torch.ops.fusedrnn.backward(
        x,
        R,
        b,
        state,
        lengths,
        resets,
        saved0,
        saved1,
        dy.to(dtype).contiguous(),
        dfinal.to(dtype).contiguous(),
        ctx.cell,
        ctx.backend,
    )
    return (*grads, None, None, None, None, None)


torch.library.register_autograd("fusedrnn::forward", _backward_formula, setup_context=_setup_context)
