"""The cells: each cell's gate layout, states and pointwise step, one module per cell (the readable definition the
reference backend runs); each registers itself in ``registry`` on import, in the order imported here.

A cell is described once; every backend reads the registry. Fused backends carry their own copy of the same math
(docs/architecture.md lists where), tested against these.
"""

from __future__ import annotations

from . import elman, gru, lstm, slstm  # noqa: F401
from .registry import Cell, StepFn, cell_names, get_cell, register_cell

__all__ = ["Cell", "StepFn", "register_cell", "get_cell", "cell_names"]
