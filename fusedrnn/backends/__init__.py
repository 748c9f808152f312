"""The backends: each module registers itself in ``registry`` on import; this package imports them all.

A backend registers a name, a priority (higher wins under ``backend="auto"``), a ``supports`` predicate
that returns ``None`` or the reason it cannot run a call, and a ``run`` function taking validated inputs
in the public layout. Adding a backend never touches dispatch code (``registry.py``).
"""

from __future__ import annotations

# cuda registers always; its supports() says when cuda-core or a GPU is missing
from . import cuda, reference  # noqa: F401
from .registry import (
    BACKEND_ENV,
    LOGGER,
    Backend,
    Call,
    availability,
    backend_names,
    compile_availability,
    get_backend,
    register_backend,
    select_backend,
)

__all__ = [
    "Backend",
    "Call",
    "register_backend",
    "backend_names",
    "get_backend",
    "availability",
    "compile_availability",
    "select_backend",
    "BACKEND_ENV",
]

try:
    from . import triton  # noqa: F401
except ImportError as error:  # triton is optional (Linux, the [triton] extra)
    LOGGER.debug("triton backend unavailable: %s", error)

try:
    from . import alternating  # noqa: F401
except ImportError as error:  # needs triton, like the triton backend
    LOGGER.debug("alternating backend unavailable: %s", error)
