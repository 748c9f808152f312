"""The cell registry: what a cell is (``Cell``) and the lookup by name. Cell modules import this module and register
themselves; ``fusedrnn.cells`` imports every cell.

A cell is described once here; every backend reads this registry. The torch step functions are the
readable definition of each cell (the reference backend runs them directly); fused backends carry their
own copy of the same math in their ``cells`` module, tested against these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Cell", "register_cell", "get_cell", "cell_names"]

# (x_t [B, Gx, NH, D], r_t [B, Gr, NH, D] = R @ h_{t-1}, b [Gb, NH, D], states (S x [B, NH, D]))
#   -> new states (S x [B, NH, D]); states[0] is always h.
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Cell:
    """Static description of a recurrent cell (see docs/cells.md for the equations)."""

    name: str
    gates_x: tuple[str, ...]  # gate names of x's G axis, in order
    gates_r: tuple[str, ...]  # gate names of R's G axis
    gates_b: tuple[str, ...]  # gate names of b's G axis
    states: tuple[str, ...]  # state names; states[0] is h, the recurrent output
    initial: tuple[float, ...]  # value of each state when no initial state is given
    step: StepFn
    # Each bias gate k has a pre-activation slot p_k = b_k (+ one x gate) (+ one R gate). These map x's
    # and R's gates to their slot, so fused backends can save slots and route gradients generically:
    # dx_g = dp[x_slots[g]], dR_g = dp[r_slots[g]] h_prev^T, db_k = dp_k.
    x_slots: tuple[int, ...] = ()
    r_slots: tuple[int, ...] = ()

    @property
    def num_gates_x(self) -> int:
        return len(self.gates_x)

    @property
    def num_gates_r(self) -> int:
        return len(self.gates_r)

    @property
    def num_gates_b(self) -> int:
        return len(self.gates_b)

    @property
    def num_states(self) -> int:
        return len(self.states)


_CELLS: dict[str, Cell] = {}


def register_cell(cell: Cell) -> Cell:
    if len(cell.initial) != cell.num_states:
        raise ValueError(
            f"cell {cell.name!r}: initial has {len(cell.initial)} values, expected one per state ({cell.num_states})"
        )
    for field, gates in (("x_slots", cell.gates_x), ("r_slots", cell.gates_r)):
        slots = getattr(cell, field)
        if len(slots) != len(gates) or not all(0 <= k < cell.num_gates_b for k in slots):
            raise ValueError(
                f"cell {cell.name!r}: {field} must give a bias-gate index (0..{cell.num_gates_b - 1}) for each "
                f"of the {len(gates)} gates, got {slots}"
            )
    _CELLS[cell.name] = cell
    return cell


def cell_names() -> list[str]:
    return sorted(_CELLS)


def get_cell(cell: str | Cell) -> Cell:
    """Look a cell up by name (case-insensitive); a Cell passes through."""
    if isinstance(cell, Cell):
        return cell
    if not isinstance(cell, str):
        raise TypeError(f"cell: expected a cell name (one of {cell_names()}) or a Cell, got {type(cell).__name__}")
    found = _CELLS.get(cell.lower())
    if found is None:
        raise ValueError(f"cell: unknown cell {cell!r}; expected one of {cell_names()}")
    return found
