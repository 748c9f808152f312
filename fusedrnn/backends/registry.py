"""The backend registry and dispatch: what a call is (``Call``), what a backend provides (``Backend``), and how
``backend="auto"`` or a name resolves to one. Backends import this module and register themselves;
``fusedrnn.backends`` imports every backend.

A backend registers a name, a priority (higher wins under ``backend="auto"``), a ``supports`` predicate
that returns ``None`` or the reason it cannot run a call, and a ``run`` function taking validated inputs
in the public layout. Adding a backend never touches dispatch code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..cells import Cell

__all__ = [
    "Backend",
    "Call",
    "register_backend",
    "backend_names",
    "compile_availability",
    "select_backend",
    "BACKEND_ENV",
]

LOGGER = logging.getLogger("fusedrnn")

# Forces the backend of every call that asks for "auto" (documented in README's environment table).
BACKEND_ENV = "FUSEDRNN_BACKEND"


@dataclass(frozen=True)
class Call:
    """What a backend needs to know to decide whether it can run a call."""

    cell: Cell
    batch: int
    steps: int
    num_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    requires_grad: bool
    has_lengths: bool = False
    has_resets: bool = False


# (cell, x [B,T,Gx,NH,D], R [Gr,NH,D,D], b [Gb,NH,D], state [S,B,NH,D], lengths [B] int32 or None,
#  resets [B,T] bool or None) -> (y [B,T,NH,D], final [S,B,NH,D]); differentiable by autograd
RunFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Backend:
    name: str
    priority: int
    supports: Callable[[Call], str | None]
    run: RunFn
    description: str = ""
    # device types on which "auto" may pick this backend (it still runs elsewhere when named)
    auto_devices: frozenset[str] = frozenset({"cpu", "cuda"})
    # The same computation split for the custom ops that torch.compile sees (fusedrnn.ops):
    #   op_forward(cell, x, R, b, state, lengths, resets, save) -> (y, final, saved0, saved1), the saved tensors
    #     shaped as op_saved_shapes(cell, B, T, NH, D) says when saving, else empty
    #   op_backward(cell, inputs, lengths, resets, (saved0, saved1), dy, dfinal) -> (dx, dR, db, dstate); inputs is
    #     (x, R, b, state) when backward_needs_inputs, else (None, R, None, None)
    op_forward: Callable | None = None
    op_backward: Callable | None = None
    op_saved_shapes: Callable | None = None
    backward_needs_inputs: bool = False
    # For backends that compile their kernels on the host (NVRTC needs no GPU): None when this machine can
    # compile them, else why not. None for backends that do not compile ahead.
    can_compile: Callable[[], str | None] | None = None


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def backend_names() -> list[str]:
    return sorted(_BACKENDS, key=lambda n: -_BACKENDS[n].priority)


def get_backend(name: str) -> Backend:
    found = _BACKENDS.get(name)
    if found is None:
        raise ValueError(f"backend: unknown backend {name!r}; expected 'auto' or one of {backend_names()}")
    return found


def availability(call: Call) -> dict[str, str | None]:
    """For each backend, None if it can run ``call``, else the reason it cannot."""
    return {name: _BACKENDS[name].supports(call) for name in backend_names()}


def compile_availability() -> dict[str, str | None]:
    """For each backend that compiles its kernels on the host (``cuda``), None if this machine can compile them
    (no GPU needed), else the reason it cannot: ``python -m fusedrnn info --compile-all`` builds them ahead."""
    return {name: b.can_compile() for name in backend_names() if (b := _BACKENDS[name]).can_compile is not None}


_SKIPS_LOGGED: set[tuple[str, str]] = set()


def _log_skip(name: str, candidate: bool, reason: str) -> None:
    """A faster backend that could have run on this device but cannot run this call: one INFO line per
    (backend, reason) — the fallback is visible without flooding a training loop. Others: DEBUG."""
    if candidate and (name, reason) not in _SKIPS_LOGGED:
        _SKIPS_LOGGED.add((name, reason))
        LOGGER.info("auto dispatch falls back from backend %r: %s", name, reason)
    else:
        LOGGER.debug("auto dispatch skips backend %r: %s", name, reason)


def select_backend(name: str, call: Call) -> Backend:
    """Resolve ``name`` ("auto" or a backend name) to a backend that can run ``call``, or raise."""
    if name == "auto":
        forced = os.environ.get(BACKEND_ENV, "").strip()
        if forced and forced != "auto":
            backend = get_backend(forced)
            reason = backend.supports(call)
            if reason is not None:
                raise ValueError(f"backend {forced!r} (forced by {BACKEND_ENV}) cannot run this call: {reason}")
            return backend
        for candidate in backend_names():
            backend = _BACKENDS[candidate]
            reason = backend.supports(call)
            if reason is None and call.device.type not in backend.auto_devices:
                reason = f"not used automatically on {call.device.type} (name it to use it there)"
            if reason is None:
                return backend
            _log_skip(candidate, call.device.type in backend.auto_devices, reason)
        raise ValueError(f"no backend can run this call: {availability(call)}")
    backend = get_backend(name)
    reason = backend.supports(call)
    if reason is not None:
        runnable = [n for n, r in availability(call).items() if r is None]
        raise ValueError(f"backend {name!r} cannot run this call: {reason}; backends that can: {runnable}")
    return backend
