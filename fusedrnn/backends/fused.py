"""What every fused backend (``triton``, ``alternating``, ``cuda``) shares and that does not depend on how its
kernels are written: the layouts saved for backward, the dispatch between training (autograd) and inference,
and the Backend built from a pair of launch functions (``fused_backend``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..cells import Cell, get_cell
from .registry import Backend, Call

# Tests set this to fill every fresh output (and the alternating backend's static buffers) with NaN before kernels
# write them, so an element a kernel forgets to write cannot pass as a plausible number.
POISON_OUTPUTS = False


def empty(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.empty, NaN-filled (floating dtypes) when POISON_OUTPUTS is set."""
    out = torch.empty(*shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if POISON_OUTPUTS and dtype.is_floating_point else out


@functools.cache
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def saved_shapes(cell: Cell, B: int, T: int, NH: int, D: int) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """What the fused backends save for backward (all use these layouts): the float32 slots [T, B, Gb, NH, D]
    (pre-activations; `cuda` saves LSTM's and GRU's gates activated) and the states before every step
    [S, NH, T + 1, B, D] — with resets, the states a step used: the initial values where the step starts an
    episode."""
    return [((T, B, cell.num_gates_b, NH, D), torch.float32), ((cell.num_states, NH, T + 1, B, D), torch.float32)]


def start_states(cell: Cell, state: torch.Tensor, resets: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The states before step 0: the cell's initial values in rows where step 0 starts an episode (and runs). A
    function of ``state`` whose gradient is zero there, for backends that apply step 0's reset on the host."""
    start = resets[:, 0] if lengths is None else resets[:, 0] & (lengths > 0)
    initial = torch.stack([torch.full_like(state[0], value) for value in cell.initial])  # no host-to-device copy
    return torch.where(start.view(1, -1, 1, 1), initial, state)


def dx_of(cell_name: str, dgate: torch.Tensor) -> torch.Tensor:
    """dx [B, T, Gx, NH, D] from the slot gradients dgate [B, T, Gb, NH, D]: a view where x's gates feed the first
    slots in order (every cell so far), else a gather."""
    x_slots = list(get_cell(cell_name).x_slots)
    if x_slots == list(range(len(x_slots))):
        return dgate[:, :, : len(x_slots)]
    return dgate[:, :, x_slots]


def make_run(function: type[torch.autograd.Function], forward):
    """A backend's run: the autograd Function when a gradient is needed, else ``forward`` without saving."""

    def run(cell: Cell, x, R, b, state, lengths=None, resets=None):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, R, b, state)):
            return function.apply(cell.name, x, R, b, state, lengths, resets)
        contiguous = (t.contiguous() for t in (x, R, b, state))
        y, final, _, _ = forward(cell.name, *contiguous, lengths, save=False, resets=resets)
        return y, final

    return run


def make_function(name: str, forward, backward, backend: str) -> type[torch.autograd.Function]:
    """The autograd Function of a backend whose ``forward(cell, x, R, b, state, lengths, save, resets=)`` returns
    (y, final, pre, states) and whose ``backward(cell, R, pre, states, lengths, dy, dfinal, resets=)`` returns
    (dx, dR, db, dstate0): it saves R, pre, states, lengths and resets only, and restores nothing else."""

    def fw(ctx, cell_name, x, R, b, state, lengths, resets):
        x, R, b, state = (t.contiguous() for t in (x, R, b, state))
        save = any(ctx.needs_input_grad[1:5])
        y, final, pre, states = forward(cell_name, x, R, b, state, lengths, save, resets=resets)
        if save:
            ctx.save_for_backward(R, pre, states, lengths, resets)
        ctx.cell_name = cell_name
        ctx.dtype = x.dtype
        return y, final

    def bw(ctx, dy, dfinal):
        if torch.is_grad_enabled():  # create_graph=True: the kernels' backward is not itself differentiable
            raise RuntimeError(
                f"backend {backend!r}: double backward (a gradient with create_graph=True) is not supported by "
                "the fused kernels; run this call with backend='reference' for higher-order gradients"
            )
        R, pre, states, lengths, resets = ctx.saved_tensors
        dx, dR, db, dstate0 = fused_backward(
            backward, ctx.cell_name, ctx.dtype, R, pre, states, lengths, resets, dy, dfinal
        )
        needs = ctx.needs_input_grad
        return (
            None,
            dx if needs[1] else None,
            dR if needs[2] else None,
            db if needs[3] else None,
            dstate0 if needs[4] else None,
            None,
            None,
        )

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(fw), "backward": staticmethod(bw)})


def fused_backward(backward, cell_name: str, dtype: torch.dtype, R, pre, states, lengths, resets, dy, dfinal):
    """``backward`` with missing output gradients as zeros, gradients in ``dtype``."""
    S, NH, T1, B, D = states.shape  # states [S, NH, T + 1, B, D]
    if dy is None:
        dy = torch.zeros(B, T1 - 1, NH, D, dtype=dtype, device=R.device)
    if dfinal is None:
        dfinal = torch.zeros(S, B, NH, D, dtype=dtype, device=R.device)
    dx, dR, db, dstate0 = backward(
        cell_name, R, pre, states, lengths, dy.to(dtype).contiguous(), dfinal.to(dtype).contiguous(), resets=resets
    )
    return dx, dR, db, dstate0.to(dtype)


def make_op_functions(forward, backward):
    """A fused backend's ``op_forward`` and ``op_backward`` (see ``Backend``) from its launch functions."""

    def op_forward(cell: Cell, x, R, b, state, lengths, resets, save: bool):
        contiguous = (t.contiguous() for t in (x, R, b, state))
        y, final, pre, states = forward(cell.name, *contiguous, lengths, save, resets=resets)
        if not save:  # custom-op outputs are distinct tensors
            pre, states = x.new_empty(0, dtype=torch.float32), x.new_empty(0, dtype=torch.float32)
        return y, final, pre, states

    def op_backward(cell: Cell, inputs, lengths, resets, saved, dy, dfinal):
        R = inputs[1].contiguous()
        pre, states = saved
        return fused_backward(backward, cell.name, R.dtype, R, pre, states, lengths, resets, dy, dfinal)

    return op_forward, op_backward


def fused_backend(
    name: str, priority: int, supports: Callable[[Call], str | None], forward, backward, description: str
) -> Backend:
    """The Backend of launch functions ``forward`` / ``backward`` (see ``make_function``): the autograd Function,
    inference without saving, the custom-op pair and the saved layouts. ``auto`` uses it on CUDA devices only
    (the Triton interpreter on CPU tensors is for tests, never a fast path)."""
    function = make_function(f"{name.capitalize()}RNN", forward, backward, name)
    op_forward, op_backward = make_op_functions(forward, backward)
    return Backend(
        name=name,
        priority=priority,
        supports=supports,
        run=make_run(function, forward),
        description=description,
        auto_devices=frozenset({"cuda"}),
        op_forward=op_forward,
        op_backward=op_backward,
        op_saved_shapes=saved_shapes,
    )
