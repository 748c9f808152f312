"""The resource model of the forward over a cluster with K split over the warps (split_k.cu: forward_split_k;
16-bit, 1 to 8 batch rows per CTA, tiled for 8), for heads whose R is more than the cluster's registers hold: cluster,
warps, K groups and the K steps of R in registers by a predicted step time (calibration.py: SPLIT_STEP_TIME). ``fit``
gives the shape, or None where the problem has no solution."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ...cells import get_cell
from ...tune import Model
from .calibration import value
from .resources import Limits, Shape


@dataclasses.dataclass(frozen=True)
class SplitKShape(Shape):
    """forward_split_k: the head over ``cluster`` CTAs, ``row_groups`` x ``k_groups`` warps (gate rows x K),
    ``k_steps_in_registers`` K steps of R per warp in registers (KR), the rest in shared memory."""

    cluster: int
    row_groups: int
    k_groups: int
    k_steps_in_registers: int
    family: ClassVar[str] = "split_k"

    @property
    def cluster_size(self) -> int:
        return self.cluster

    def template_args(self, kind: str, head_dim: int) -> str:
        return f"{self.cluster}, {self.row_groups}, {self.k_groups}, {self.k_steps_in_registers}, {self.rows}"


SPLIT_WARPS, SPLIT_CLUSTERS = value("SPLIT_WARPS"), value("SPLIT_CLUSTERS")
SPLIT_K_GROUPS = (1, 2, 3, 4, 6, 8)
SPLIT_OVERHEAD, SPLIT_NEAR_ALL = value("SPLIT_OVERHEAD"), value("SPLIT_NEAR_ALL")
SPLIT_ODD_ROWS = value("SPLIT_ODD_ROWS")
SPLIT_MAX_HEAD_DIM = value("SPLIT_MAX_HEAD_DIM")
SPLIT_STEP_TIME = value("SPLIT_STEP_TIME")
# batch rows per CTA: fewer than the MMA's 8 exchange less per step (the exchange is bandwidth-bound) in more clusters
SPLIT_ROWS = (8, 7, 6, 5, 4, 3, 2, 1)


def split_smem_bytes(cell_name: str, D: int, units, warps, k_groups, row_tiles_per_warp, kr):
    """forward_split_k's shared memory (``SplitLayout`` in split_k.cu): two h buffers of 8 rows x (D + 8), two
    mbarriers, the warps' partial sums [k_groups][8][GR·units + 4] (f32), R's K steps past ``kr`` of each warp (512
    bytes per fragment; all of R is GR·units·D / 256 fragments). Arguments may be solver variables."""
    GR = get_cell(cell_name).num_gates_r
    return (
        2 * 8 * (D + 8) * 2
        + 16
        + 32 * k_groups * (GR * units + 4)
        + 512 * (GR * units * D // 256 - warps * kr * row_tiles_per_warp)
    )


def split_registers(cell_name: str, row_tiles_per_warp, kr, per_thread, near_all, odd_rows=0, overhead: bool = True):
    """forward_split_k's registers per thread: R's ``kr`` K steps (4 per row tile), 8 more per row tile (the
    accumulators and the shared-memory fragments in flight), B of a K-step pair (two buffers of 4), per unit pair of
    the cell (``per_thread`` of them) both units' states and biases, x (one register per gate) and the row
    bookkeeping (3), and the overheads (``near_all``: 1 where kr is all or all but one of the warp's K steps;
    ``odd_rows``: 1 where the batch rows per CTA are not a power of two, counted with near_all). Arguments may be
    solver variables."""
    cell = get_cell(cell_name)
    pair = 2 * cell.num_states + 2 * cell.num_gates_b + cell.num_gates_x + 3
    return (
        8 * row_tiles_per_warp
        + 4 * row_tiles_per_warp * kr
        + 8
        + pair * per_thread
        + (SPLIT_OVERHEAD + (SPLIT_NEAR_ALL + SPLIT_ODD_ROWS * odd_rows) * near_all if overhead else 0)
    )


def problem(cell_name: str, D: int, limits: Limits, odd_rows: int = 0) -> Model:
    GR = get_cell(cell_name).num_gates_r
    m = Model()
    cluster = m.var(
        "cluster",
        values=[c for c in SPLIT_CLUSTERS if c <= limits.max_cluster and D % (8 * c) == 0 and GR * D // c % 16 == 0],
    )
    units = m.var("units", 8, D)
    warps = m.var("warps", values=list(SPLIT_WARPS))
    k_groups = m.var("k_groups", values=list(SPLIT_K_GROUPS))
    row_groups = m.var("row_groups", 1, 16)
    mpw = m.var("row_tiles_per_warp", 1, GR * D // 16)
    k_pairs = m.var("k_pairs_per_warp", 1, D // 32)
    kr = m.var("kr", 0, D // 16)
    per_thread = m.var("pairs_per_thread", 1, 8)  # the cell's unit pairs: 8 rows x units / 2 over the threads
    near_all = m.var("near_all", 0, 1)  # 1 where kr >= the warp's K steps - 1
    m.add(units * cluster == D, 16 * mpw * row_groups == GR * units, 2 * k_pairs * k_groups == D // 16)
    m.add(warps == row_groups * k_groups, kr <= 2 * k_pairs, 2 * near_all >= kr - 2 * k_pairs + 2)
    m.add(32 * warps * per_thread >= 4 * units, 32 * warps * (per_thread - 1) < 4 * units)
    regs = split_registers(cell_name, mpw, kr, per_thread, near_all, odd_rows)
    eighths = m.var("register_eighths", 1, 32)  # ptxas allocates registers in multiples of 8 per thread
    m.add(8 * eighths >= regs, 8 * eighths <= regs + 7)
    m.add(regs <= limits.max_regs_per_thread, eighths * 8 * 32 * warps <= limits.regs_per_sm)
    m.add(split_smem_bytes(cell_name, D, units, warps, k_groups, mpw, kr) <= limits.smem_per_block)
    # the predicted time of 1024 steps (calibration.py: SPLIT_STEP_TIME)
    w = SPLIT_STEP_TIME
    m.minimize(
        w["r_fragment_from_smem"] * (GR * units * D // 256 - warps * kr * mpw)
        + w["k_pair_per_warp"] * k_pairs
        + w["cta_of_cluster"] * cluster
        + w["unit_pair_per_thread"] * per_thread
        + w["warp"] * warps
        + w["partial_sum_per_gate_row_and_k_group"] * k_groups * GR * units
        + w["r_element_per_cta"] * GR * units * D
    )
    return m


def split_shape(
    cell_name: str, D: int, cluster: int, row_groups: int, k_groups: int, kr: int, rows: int = 8
) -> SplitKShape:
    """forward_split_k's shape: ``row_groups`` x ``k_groups`` warps over a cluster of ``cluster`` CTAs, ``kr`` K steps
    of R per warp in registers, ``rows`` (1 to 8) batch rows per CTA."""
    units, warps = D // cluster, row_groups * k_groups
    mpw = get_cell(cell_name).num_gates_r * units // 16 // row_groups
    near_all = int(kr >= D // 16 // k_groups - 1)
    per_thread = -(-rows * units // (64 * warps))
    return SplitKShape(
        warps=warps,
        rows=rows,
        cluster=cluster,
        row_groups=row_groups,
        k_groups=k_groups,
        k_steps_in_registers=kr,
        registers=split_registers(cell_name, mpw, kr, per_thread, near_all, _odd_rows(rows)),
        smem=split_smem_bytes(cell_name, D, units, warps, k_groups, mpw, kr),
    )


def _odd_rows(rows: int) -> int:
    return int(rows & (rows - 1) != 0)


def fit(cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int) -> SplitKShape | None:
    """forward_split_k where the problem has a solution (16-bit, SPLIT_ROWS rows, clusters), else None."""
    if dtype_name == "float32" or rows not in SPLIT_ROWS or limits.max_cluster < 2 or D > SPLIT_MAX_HEAD_DIM:
        return None
    # fewer rows take the 8-row tiling (the cell's pairs per thread only shrink), less kr where they cost registers
    v = problem(cell_name, D, limits, _odd_rows(rows)).solve().solution
    if v is None:
        return None
    return split_shape(cell_name, D, v["cluster"], v["warps"] // v["k_groups"], v["k_groups"], v["kr"], rows)
