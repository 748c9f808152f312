"""The resource model of the cooperative-grid kernels (grid.cu: forward_grid / backward_grid, 16-bit, 16 batch rows
per CTA): a head over D / units CTAs, one per SM, where no cluster holds R (or there are none, sm_80). The problem is
over the units per CTA, warps, the K steps of R each warp keeps in registers (the rest in shared memory) and the
exchanged operand's chunks in flight; its objective is a predicted step time (calibration.py: GRID_STEP_TIME).
``fit`` gives the shape or the reason there is none."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ...cells import get_cell
from ...tune import Model
from .calibration import value
from .resources import Limits, Shape


@dataclasses.dataclass(frozen=True)
class GridShape(Shape):
    """forward_grid / backward_grid: the head over a cooperative grid of ``ctas`` CTAs of D / ctas units each,
    ``k_steps_in_registers`` K steps of R per warp in registers (KR, the rest in shared memory), the exchanged operand
    in chunks of ``k_steps_per_chunk`` K steps (CK), ``chunks_in_flight`` of them (NB)."""

    ctas: int
    k_steps_in_registers: int
    k_steps_per_chunk: int
    chunks_in_flight: int
    family: ClassVar[str] = "grid"

    @property
    def cooperative(self) -> bool:
        return True

    @property
    def ctas_per_head(self) -> int:
        return self.ctas

    def template_args(self, kind: str, head_dim: int) -> str:
        return (
            f"{head_dim // self.ctas}, {self.warps}, {self.k_steps_in_registers}, {self.k_steps_per_chunk}, "
            f"{self.chunks_in_flight}"
        )


GRID_OVERHEAD = value("GRID_OVERHEAD")
GRID_WARPS = (4, 8, 16)
GRID_CHUNKS = (1, 2, 4, 8)
GRID_MAX_RING = 8
GRID_STEP_TIME = value("GRID_STEP_TIME")


def grid_dims(kind: str, cell_name: str, D: int, units):
    """(K steps of the step's MMA, N tiles of 8 per CTA) of a grid kernel (``units`` may be a solver variable)."""
    GR = get_cell(cell_name).num_gates_r
    return (D if kind == "forward" else GR * D) // 16, (GR * units if kind == "forward" else units) // 8


def grid_smem_bytes(kind: str, cell_name: str, D: int, units, warps, kr, ck, ring):
    """forward_grid / backward_grid's shared memory (``GridLayout`` in grid.cu): R's K steps past ``kr`` of each
    warp (256 bytes per fragment), the warps' rings of ``ring`` chunks of ``ck`` A fragments (512 bytes each), their
    partial sums [warps][16][8·tiles + 8] (f32). Arguments may be solver variables."""
    ks, ntl = grid_dims(kind, cell_name, D, units)
    return (ks - kr * warps) * ntl * 256 + warps * ring * ck * 512 + warps * 16 * (8 * ntl + 8) * 4


def grid_registers(kind: str, cell_name: str, D: int, units, kr, per_thread, overhead: bool = True):
    """A grid kernel's registers per thread: R's ``kr`` K steps (2 per N tile), the accumulators (4 per tile), R's
    shared-memory fragments one K step ahead (two buffers of 2 per tile), A one K step ahead (8), per cell element
    (``per_thread`` of them) its states, biases and inputs (forward: S + GB + GX; backward: the state gradients, bias
    sums, saved slots and states and dy: 2·S + 2·GB + 1) and its row bookkeeping (3), and GRID_OVERHEAD."""
    cell = get_cell(cell_name)
    S, GB, GX = cell.num_states, cell.num_gates_b, cell.num_gates_x
    _, ntl = grid_dims(kind, cell_name, D, units)
    element = (S + GB + GX if kind == "forward" else 2 * S + 2 * GB + 1) + 3
    fixed = GRID_OVERHEAD[kind] if overhead else 0
    return 2 * ntl * kr + 8 * ntl + 8 + element * per_thread + fixed


def problem(kind: str, cell_name: str, D: int, limits: Limits) -> Model:
    m = Model()
    units = m.var("units", values=[u for u in range(8, D // 2 + 1, 8) if D % u == 0 and D // u <= limits.sms])
    ks, ntl = grid_dims(kind, cell_name, D, units)
    grid = m.var("grid", 2, limits.sms)
    warps = m.var("warps", values=list(GRID_WARPS))
    kw = m.var("kw", 1, ks)  # K steps per warp
    kr = m.var("kr", 1, ks)
    ck = m.var("ck", values=list(GRID_CHUNKS))
    chunks = m.var("chunks", 1, ks)
    ring = m.var("ring", 2, GRID_MAX_RING)  # chunks in flight
    per_thread = m.var("elements_per_thread", 1, 16)  # the cell's elements: 16 rows x units over the threads
    m.add(units * grid == D, kw * warps == ks, kr <= kw, ck * chunks == kw, ring <= chunks)
    m.add(32 * warps * per_thread >= 16 * units, 32 * warps * (per_thread - 1) < 16 * units)
    regs = grid_registers(kind, cell_name, D, units, kr, per_thread)
    eighths = m.var("register_eighths", 1, 32)  # ptxas allocates registers in multiples of 8 per thread
    m.add(8 * eighths >= regs, 8 * eighths <= regs + 7)
    m.add(regs <= limits.max_regs_per_thread, eighths * 8 * 32 * warps <= limits.regs_per_sm)
    smem = grid_smem_bytes(kind, cell_name, D, units, warps, kr, ck, ring)
    m.add(smem <= limits.smem_per_block)
    # the predicted time of a step (calibration.py: GRID_STEP_TIME), then the most of A in flight
    excess = m.var("exchange_kb_beyond_8mb", 1, 1 << 20)  # 1 + max(0, KB beyond 8 MB), exactly (a unique solution)
    beyond = grid * ks * 16 - 8 * 1024 * 32  # (exchange bytes - 8 MB) / 32
    m.add(32 * (excess - 1) >= beyond, (excess == 1) | (32 * (excess - 2) < beyond))
    w = GRID_STEP_TIME
    m.minimize(
        w["exchange_kb_beyond_8mb"] * excess
        + w["exchange_bytes_per_32"] * grid * ks * 16
        + w["r_fragment_from_smem"] * (ks - kr * warps) * ntl
        + w["mma_per_warp"] * kw * ntl
        + w["element_per_thread"] * per_thread
        + w["warp"] * warps
        - ring * ck
    )
    return m


def fit(kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int) -> GridShape | str:
    """A head over a cooperative grid (forward_grid / backward_grid), or why not."""
    if dtype_name == "float32":
        return "the cooperative-grid kernels are 16-bit only"
    if rows != 16:
        return "the cooperative-grid kernels take 16 batch rows per CTA"
    result = problem(kind, cell_name, D, limits).solve()
    if result.solution is None:
        return (
            f"no {kind} tiling of {cell_name} with head_dim {D} keeps R on chip over a grid of up to "
            f"{limits.sms} CTAs ({limits.regs_per_sm} registers and {limits.smem_per_block // 1024} KB shared "
            f"memory per SM)"
        )
    return grid_shape_of(kind, cell_name, D, result.solution)


def grid_shape_of(kind: str, cell_name: str, D: int, v: dict) -> GridShape:
    """The shape of a solution ``v`` of the grid problem (16 rows)."""
    units, warps, kr, ck, ring = v["units"], v["warps"], v["kr"], v["ck"], v["ring"]
    return GridShape(
        warps=warps,
        rows=16,
        ctas=D // units,
        k_steps_in_registers=kr,
        k_steps_per_chunk=ck,
        chunks_in_flight=ring,
        registers=grid_registers(kind, cell_name, D, units, kr, v["elements_per_thread"]),
        smem=grid_smem_bytes(kind, cell_name, D, units, warps, kr, ck, ring),
    )
