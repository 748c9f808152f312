"""Training with fewer saved activations: the sequence in segments of k steps, recomputed in the backward.

The forward runs each segment on the backend without saving (its inference path) and keeps only the states at
segment starts. The backward walks the segments last to first: it re-runs one segment's forward with saving
(the backend's own autograd Function) and its backward, and hands the gradient of the segment's initial state
to the segment before it as the gradient of that segment's final state. Every backend works, since only its
``run`` is used.

Cost (docs/backends.md, "Long sequences"): the forward runs twice, so about (2 F + B) / (F + B) of the saving
path's time (F, B: forward and backward time); memory: the inputs x (kept for the recomputation), the
ceil(T / k) segment-start states and, during the backward, one segment's saved tensors instead of all T steps'.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from .backends.fused import saved_shapes
from .cells import Cell

__all__ = ["checkpoint_steps", "checkpoint_bytes", "checkpointed_run"]


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")
    return value


def checkpoint_bytes(cell: Cell, B: int, T: int, NH: int, D: int, dtype: torch.dtype, steps: int) -> int:
    """Bytes a checkpointed call keeps beyond its inputs with segments of ``steps`` steps: the segment-start
    states (``dtype``) plus, during the backward, one segment's saved tensors (float32, as the fused backends
    save them). The saving path keeps ``checkpoint_bytes(..., steps=T)`` less the one start state."""
    segments = -(-T // steps)
    starts = segments * cell.num_states * B * NH * D * dtype.itemsize
    k = min(steps, T)
    segment = sum(math.prod(shape) * kind.itemsize for shape, kind in saved_shapes(cell, B, k, NH, D))
    return starts + segment


@functools.lru_cache(maxsize=256)
def checkpoint_steps(cell: Cell, B: int, T: int, NH: int, D: int, dtype: torch.dtype, budget: int) -> int:
    """The longest segment (fewest recomputation launches) whose ``checkpoint_bytes`` fit ``budget`` bytes;
    ValueError naming the smallest possible when none does."""
    per_step = checkpoint_bytes(cell, B, 2, NH, D, dtype, 2) - checkpoint_bytes(cell, B, 1, NH, D, dtype, 1)
    # checkpoint_bytes falls with k (fewer starts) then rises (a longer segment): from the longest segment the
    # budget could hold downwards, the first that fits is the longest that does
    steps = max(1, min(T, budget // max(per_step, 1)))
    while steps >= 1:
        if checkpoint_bytes(cell, B, T, NH, D, dtype, steps) <= budget:
            return steps
        steps -= 1
    best = min(range(1, T + 1), key=lambda k: checkpoint_bytes(cell, B, T, NH, D, dtype, k))
    least = checkpoint_bytes(cell, B, T, NH, D, dtype, best)
    raise ValueError(
        f"checkpoint_budget: expected at least {least} bytes for this call (segments of {best} steps: the "
        f"segment-start states plus one segment's saved tensors), got {budget}"
    )


def check_options(checkpoint: object, budget: object) -> tuple[int | None, int | None]:
    """``checkpoint`` (steps) and ``checkpoint_budget`` (bytes): at most one, each None or an int >= 1."""
    if checkpoint is not None and budget is not None:
        raise ValueError(f"checkpoint, checkpoint_budget: expected at most one, got {checkpoint} and {budget}")
    return (
        None if checkpoint is None else _check_positive_int("checkpoint", checkpoint),
        None if budget is None else _check_positive_int("checkpoint_budget", budget),
    )


def resolve_steps(
    cell: Cell, B: int, T: int, NH: int, D: int, dtype: torch.dtype, checkpoint: object, budget: object
) -> int | None:
    """Segment length from ``rnn``'s ``checkpoint`` (steps) or ``checkpoint_budget`` (bytes); None for neither."""
    steps, budget = check_options(checkpoint, budget)
    if budget is not None:
        return checkpoint_steps(cell, B, max(T, 1), NH, D, dtype, budget)
    return steps


def _segment_resets(resets: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    """The episode starts within [start, stop): a reset at a segment's first step replaces its starting state."""
    return None if resets is None else resets[:, start:stop].contiguous()


def _segment_lengths(lengths: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    """Steps of each row within [start, stop): 0 for rows that ended before (their state passes through)."""
    if lengths is None:
        return None
    return (lengths - start).clamp_(0, stop - start).to(torch.int32)


class _Checkpointed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, cell: Cell, steps: int, overlap: bool, x, R, b, state, lengths, resets):
        B, T, _, NH, D = x.shape
        y = x.new_empty(B, T, NH, D)
        starts = []
        current = state
        with torch.no_grad():  # the backend's inference path: nothing saved
            for start in range(0, T, steps):
                stop = min(start + steps, T)
                starts.append(current)
                y_part, current = run(
                    cell,
                    x[:, start:stop],
                    R,
                    b,
                    current,
                    _segment_lengths(lengths, start, stop),
                    _segment_resets(resets, start, stop),
                )
                y[:, start:stop] = y_part
        ctx.save_for_backward(x, R, b, lengths, resets, *starts)
        ctx.run, ctx.cell, ctx.steps, ctx.overlap = run, cell, steps, overlap
        return y, current

    @staticmethod
    def backward(ctx, dy, dfinal):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "checkpoint: double backward (a gradient with create_graph=True) is not supported by the "
                "checkpointed sequence; call rnn without checkpoint for higher-order gradients"
            )
        x, R, b, lengths, resets, *starts = ctx.saved_tensors
        run, cell, steps = ctx.run, ctx.cell, ctx.steps
        B, T, _, NH, D = x.shape
        needs_x, needs_R, needs_b, needs_state = ctx.needs_input_grad[4:8]
        if dy is None:
            dy = x.new_zeros(B, T, NH, D)
        # dR and db summed over segments in float32 (16-bit partial sums would round once per segment)
        accumulate = torch.float64 if R.dtype == torch.float64 else torch.float32
        dR = torch.zeros(R.shape, dtype=accumulate, device=R.device)
        db = torch.zeros(b.shape, dtype=accumulate, device=b.device)
        dx = torch.empty_like(x) if needs_x else None
        streams = _side_streams(x.device) if ctx.overlap else None
        main = torch.cuda.current_stream(x.device) if streams is not None else None

        def recompute(index: int):
            """Segment ``index``'s forward with saving: its leaves and outputs (on its side stream, if any)."""
            start, stop = index * steps, min(index * steps + steps, T)
            context: contextlib.AbstractContextManager = contextlib.nullcontext()
            if streams is not None:
                stream = streams[index % 2]
                stream.wait_stream(main)
                context = torch.cuda.stream(stream)
            with context, torch.enable_grad():
                leaves = [t.detach().requires_grad_() for t in (x[:, start:stop], R, b, starts[index])]
                segment = (_segment_lengths(lengths, start, stop), _segment_resets(resets, start, stop))
                return leaves, run(cell, *leaves, *segment)

        dstate = dfinal
        ahead = None
        for index in range(len(starts) - 1, -1, -1):
            start, stop = index * steps, min(index * steps + steps, T)
            leaves, (y_part, final_part) = ahead if ahead is not None else recompute(index)
            # with side streams, the next segment's recomputation runs while this segment's backward does
            ahead = recompute(index - 1) if streams is not None and index > 0 else None
            if dstate is None:
                dstate = torch.zeros_like(final_part)
            grads = torch.autograd.grad((y_part, final_part), leaves, (dy[:, start:stop], dstate), allow_unused=True)
            dx_part, dR_part, db_part, dstate = (
                torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)
            )
            if streams is not None:  # the gradients were made on a side stream and are read on this one
                main.wait_stream(streams[index % 2])
                for g in (dx_part, dR_part, db_part, dstate):
                    g.record_stream(main)
            if dx is not None:
                dx[:, start:stop] = dx_part
            dR += dR_part
            db += db_part
        return (
            None,
            None,
            None,
            None,
            dx,
            dR.to(R.dtype) if needs_R else None,
            db.to(b.dtype) if needs_b else None,
            dstate if needs_state else None,
            None,
            None,
        )


# Experimental, off: recompute segment i - 1 on a side stream while segment i's backward runs (two CUDA streams).
# The forward then costs about once beside the backward instead of twice, where the two kernels fit on the SMs
# together. Only for backends whose kernels may share the GPU (``overlap_allowed``); to be validated on a device
# (tests/test_checkpoint.py's GPU tests run both ways) before it is turned on.
OVERLAP_RECOMPUTATION = False


@functools.cache
def _side_streams_of(device_index: int) -> tuple:
    return torch.cuda.Stream(device_index), torch.cuda.Stream(device_index)


def _side_streams(device: torch.device):
    return _side_streams_of(device.index if device.index is not None else torch.cuda.current_device())


def overlap_allowed(backend: str, call) -> bool:
    """Whether the recomputation may overlap the backward for ``call`` on ``backend``: CUDA tensors, a backend of
    ordinary kernels (``triton``; ``cuda`` unless both its kernels are cooperative grids: a grid needs all its CTAs
    resident and waits for SMs, and two grids waiting for each other's SMs could wait forever; a grid beside
    kernels that finish on their own waits only until they do); not ``alternating`` (shared static buffers and
    graphs)."""
    if not OVERLAP_RECOMPUTATION or call.device.type != "cuda":
        return False
    if backend == "triton":
        return True
    if backend == "cuda":
        from .backends.cuda.planner import plan

        found = plan(call)
        return not isinstance(found, str) and not (
            found.forward.shape.cooperative and found.backward is not None and found.backward.shape.cooperative
        )
    return False


def checkpointed_run(run, cell: Cell, x, R, b, state, lengths, resets, steps: int, overlap: bool = False):
    """``run`` (a backend's: validated inputs, differentiable) over segments of ``steps`` steps, recomputed in
    the backward (see the module's docstring). Without a gradient it is ``run`` itself: nothing is saved then.
    ``overlap``: recompute on side streams (``OVERLAP_RECOMPUTATION``; CUDA only)."""
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, R, b, state))):
        return run(cell, x, R, b, state, lengths, resets)
    return _Checkpointed.apply(run, cell, steps, overlap, x, R, b, state, lengths, resets)
