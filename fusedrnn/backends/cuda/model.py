"""The resource model of the kernels that hold R in registers (one CTA per head, transposed, over a cluster), solved
with ``fusedrnn.tune`` from the device's limits, and ``kernel_shape``: every family in order.

The kernels (cta.cu, transposed.cu) run one CTA of ``W = D / (8·NT)`` warps per (head, ROWS = 8 or 16 batch rows); warp
w
owns NT tiles of 8 hidden units of every gate (backward_transposed: 16 units, ``W = D / (16·NT)``). The choices are NT
(units per warp, which trades warps for registers) and STAGES (how many steps of inputs are in flight in the
shared-memory ring); the launch picks ROWS, the model the kernel: forward_transposed from FW_T_MIN_HEAD_DIM on,
backward_transposed where backward_cta would need NT >= 2.
The model:

* registers per thread: R's MMA fragments (``2·GR·NT·D/KSTEP`` forward and backward; forward_transposed: A fragments
  of two gates per 16-row tile, ``4·ceil(GR/2)·NT·D/KSTEP``; backward_transposed: ``4·GR·NT·D/KSTEP`` for 16 units;
  KSTEP = 16 for 16-bit inputs, 8 for float32), the accumulators, the states / state gradients and biases / bias sums
  held per element, and a fixed overhead (addresses, loop state, temporaries of the cell's math; float32
  adds the TF32 splitting). The overheads (calibration.py) were read from ptxas' reports of every variant: with them, a
  variant the model accepts does not spill — ``python -m fusedrnn info --compile-all``
  checks exactly that in CI.
* registers per thread <= min(255, registers per SM / (32 · warps rounded up to a multiple of 4)): one CTA per
  SM (``__launch_bounds__(.., 1)``).
* shared memory (the same formulas as ``Layout`` in layout.cuh; each kernel checks it at compile time) <= the device's
  opt-in limit per block.
* objective: most warps (smallest NT) first, then the deepest prefetch.

Heads whose R does not fit one CTA (D > 128) run over a thread-block cluster of CL CTAs (sm_90), each computing
U = D / CL units: forward_transposed with K = D, whose registers per thread are those of the single-CTA kernel (they
depend on D and NT, not on U), its warps U / (8·NT), its x ring and output stages U columns wide; backward_cluster
with M = D in tiles of 16 and K = GR·U (``backward_cluster_registers``). The cluster size is a solver variable:
the smallest that fits, since a larger one computes the same per thread and only adds exchange peers and SMs
(benchmarks/cluster_exchange.py: the exchange's cost grows with the cluster). Where no cluster holds R's rows in
registers (LSTM D >= 384), the forward keeps the last ``ksm`` K steps of each warp's fragments in shared memory
instead (``smem_bytes``: 256·GR bytes per 8 units and K step), the fewest that fit: a solver variable of a second
problem, solved only when the first has no solution, so the variants that fit registers stay as they are.

Where no cluster holds R in registers (or only one of 8 CTAs or more), the 16-bit forward in 8-row tiles runs
forward_split_k instead (split_k.py: its own problem); where no cluster holds R (or there are none, sm_80), 16-bit
heads run over a cooperative grid (grid.py). ``kernel_shape`` tries the families in that order.

The architecture limits come from the device at run time (``torch.cuda.get_device_properties``). Without a GPU
(compile-all, CI) they are the documented limits of the compute capability the arch names.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

from ...cells import get_cell
from ...tune import Model
from . import grid, split_k
from .calibration import per_cell, value
from .resources import Limits, Shape, elt_bytes

# Calibrated constants: their values and evidence are in calibration.py
FW_OVERHEAD, FW_T_OVERHEAD, FW_C_OVERHEAD = value("FW_OVERHEAD"), value("FW_T_OVERHEAD"), value("FW_C_OVERHEAD")
FW_S_OVERHEAD = value("FW_S_OVERHEAD")
BW_OVERHEAD, BW_C_OVERHEAD, BW_T_OVERHEAD = value("BW_OVERHEAD"), value("BW_C_OVERHEAD"), value("BW_T_OVERHEAD")
BW_CELL_OVERHEAD, BW_T_CELL_OVERHEAD = value("BW_CELL_OVERHEAD"), value("BW_T_CELL_OVERHEAD")
FW_T_CELL_OVERHEAD = value("FW_T_CELL_OVERHEAD")
DTYPE_OVERHEAD, DTYPE_T_OVERHEAD = value("DTYPE_OVERHEAD"), value("DTYPE_T_OVERHEAD")
FW_T_MIN_HEAD_DIM = value("FW_T_MIN_HEAD_DIM")  # forward_transposed from this head size on
MAX_STAGES = 4
# wider heads run over a thread-block cluster
CTA_MAX_HEAD_DIM = 128
NT_CHOICES = (1, 2, 4)
CLUSTER_SIZES = (2, 4, 8, 16)


@dataclasses.dataclass(frozen=True)
class CtaShape(Shape):
    """forward_cta / backward_cta: one CTA per (head, batch tile), ``tiles_per_warp`` tiles of 8 hidden units per warp
    (NT), ``stages`` steps of inputs in flight in the shared-memory ring."""

    tiles_per_warp: int
    stages: int
    family: ClassVar[str] = "cta"

    def template_args(self, kind: str, head_dim: int) -> str:
        return f"{self.tiles_per_warp}, {self.stages}, {self.rows}"


@dataclasses.dataclass(frozen=True)
class TransposedShape(CtaShape):
    """forward_transposed / backward_transposed (R · hᵀ; dhᵀ = Rᵀ · dpᵀ): as CtaShape, the backward's tiles of 16
    units."""

    family: ClassVar[str] = "transposed"


@dataclasses.dataclass(frozen=True)
class ClusterShape(CtaShape):
    """forward_cluster / backward_cluster: the head over ``cluster`` CTAs of D / cluster units each (the transposed
    kernels' tiling); the forward keeps ``k_steps_in_smem`` K steps of R per warp in shared memory (KSM)."""

    cluster: int = 2
    k_steps_in_smem: int = 0
    family: ClassVar[str] = "cluster"

    @property
    def cluster_size(self) -> int:
        return self.cluster

    def template_args(self, kind: str, head_dim: int) -> str:
        tail = f", {self.k_steps_in_smem}" if kind == "forward" else ""
        return f"{self.tiles_per_warp}, {self.stages}, {self.rows}, {self.cluster}{tail}"


def smem_bytes(
    kind: str,
    cell_name: str,
    D: int,
    dtype_name: str,
    stages,
    rows: int = 16,
    trans: bool = False,
    units=None,
    cluster=1,
    ksm=0,
):
    """Dynamic shared memory of a kernel with ``rows`` batch rows per CTA (``trans``: the transposed kernel; over a
    ``cluster`` > 1 of CTAs, ``units`` of the head per CTA, ``ksm`` K steps of R per warp in shared memory): the
    same formulas as ``Layout`` in the kernel sources (``stages``, ``units``, ``cluster`` and ``ksm`` may be solver
    variables)."""
    cell = get_cell(cell_name)
    e = elt_bytes(dtype_name)
    pad = 16 // e
    U = D if units is None else units
    clustered = not isinstance(cluster, int) or cluster > 1
    h = rows * (D + pad) * e
    out = (cell.num_gates_b + cell.num_states) * rows * (U + 4) * 4  # forward_transposed's output stage (f32)
    if kind == "forward":
        r_part = ksm * cell.num_gates_r * U * 32 if clustered else 0  # 256 B per gate, 8 units and K step
        return (
            2 * h
            + stages * (rows * (cell.num_gates_x * U + pad) * e)
            + (2 * out if trans else 0)
            + (16 * cluster if clustered else 0)
            + r_part
        )  # the mbarriers (2 per sender), R in shared memory
    p = rows * ((cell.num_gates_b * U if trans else cell.num_gates_r * D) + pad) * e  # dp: every slot / R's gates
    # partial dh, received partials, mbarriers
    exchange = rows * (D + 4) * 4 + 2 * D * rows * 4 + 16 if clustered else 0
    return 2 * p + stages * ((cell.num_gates_b + cell.num_states) * rows * (U + 4) * 4 + h) + exchange


def registers(
    kind: str,
    cell_name: str,
    D: int,
    dtype_name: str,
    nt,
    rows: int = 16,
    overhead: bool = True,
    trans: bool = False,
    cluster: bool = False,
    ksm=0,
):
    """The model's registers per thread (``nt`` may be a solver variable); ``overhead=False`` leaves out the fixed
    overheads (for calibrating them against ptxas). Counted for 16 batch rows per CTA (2 rows per thread) and
    used for 8 as well: fewer elements, but ptxas then hoists more (seen: 154 registers with 8 rows, 142 with 16,
    LSTM 64 backward); compile-all checks both."""
    cell = get_cell(cell_name)
    GR, GB, S = cell.num_gates_r, cell.num_gates_b, cell.num_states
    e = elt_bytes(dtype_name)
    kstep = 8 if e == 4 else 16
    fixed = 0
    if overhead:
        if kind == "forward" and trans:
            fixed = FW_T_OVERHEAD + FW_T_CELL_OVERHEAD.get(cell.name, 0) + DTYPE_T_OVERHEAD.get(dtype_name, 0)
            fixed += FW_C_OVERHEAD if cluster else 0
        else:
            cell_overhead = (BW_T_CELL_OVERHEAD if trans else BW_CELL_OVERHEAD).get(cell.name, 0)
            fixed = DTYPE_OVERHEAD.get(dtype_name, {}).get(kind, 0) + (
                FW_OVERHEAD if kind == "forward" else BW_OVERHEAD + cell_overhead
            )
    per_tile = 4 * S + 2 * GB  # states (or their gradients) per element, biases (or their sums) per unit
    # a step's inputs are copied in 16-byte chunks (TileCopy: per tensor a source pointer for each chunk a thread
    # copies and a row mask; at most 9 chunks over the backward's three tensors and 2 of the forward's x in the
    # shipped tilings): 8 registers per tensor
    if kind == "forward" and trans:
        # R as A fragments, two gates per 16-row tile (4 registers per tile and K step; ksm of the K steps in shared
        # memory instead, two K steps of those in flight), accumulators of 4 per tile and batch tile of 8, the
        # states of 2 rows per batch tile, one unit's biases; the output copies' offsets
        pairs, batch_tiles = (GR + 1) // 2, rows // 8
        per_unit_tile = 4 * pairs * (D // kstep - ksm) + 4 * pairs * batch_tiles + 2 * batch_tiles * S + GB
        if not isinstance(ksm, int) or ksm:
            per_unit_tile = per_unit_tile + 8 * pairs
            fixed += per_cell(FW_S_OVERHEAD, cell.name, "register overhead with R in shared memory") if overhead else 0
        return per_unit_tile * nt + 12 * batch_tiles + 8 + fixed
    if kind == "forward":  # R fragments, 4 accumulators per gate; y / slot / state pointers of both row halves
        return (2 * GR * (D // kstep) + 4 * GR + per_tile) * nt + 12 + 8 + fixed
    kt = GR * D // kstep  # R fragments; accumulators of 4: 4 (all K steps' when fewer) with NT = 1, else NT
    if trans:  # backward_transposed: A fragments of 16 units (4 per K step), 2 units x 2 rows per batch tile
        batch_tiles = rows // 8
        per_unit_tile = 4 * kt + 4 * batch_tiles + 4 * batch_tiles * S + 2 * GB
        # accumulator chains (its ACCS): min(KT, 4) with NT = 1, else one per tile
        chains = 4 * batch_tiles * (min(kt, 4) - 1) * (1 // nt)
        return per_unit_tile * nt + chains + 4 * batch_tiles + 3 * 8 + fixed + BW_T_OVERHEAD
    accumulators = 4 * nt + (4 * min(kt, 4) - 4) * (1 // nt)  # 1 // nt: 1 for NT = 1, else 0
    return (2 * kt + per_tile) * nt + accumulators + 4 + 3 * 8 + fixed


def backward_cluster_registers(cell_name: str, dtype_name: str, nt, units_16, pairs, rows: int):
    """backward_cluster's registers per thread (arguments may be solver variables): R's A fragments (NT tiles of 16
    units, K = GR·16·units_16), the accumulators (4 chains with NT = 1, else one per tile), per unit pair of the
    cell's backward its state gradients, bias sums and row / unit / length, and the fixed overheads."""
    cell = get_cell(cell_name)
    kstep = 8 if elt_bytes(dtype_name) == 4 else 16
    batch_tiles = rows // 8
    accumulators = 4 * batch_tiles * nt + 12 * batch_tiles * (1 // nt)
    return (
        4 * nt * cell.num_gates_r * units_16 * (16 // kstep)
        + accumulators
        + pairs * (2 * (cell.num_states + cell.num_gates_b) + 4)
        + BW_C_OVERHEAD
        + DTYPE_OVERHEAD.get(dtype_name, {}).get("backward", 0)
    )


def _registers_of(
    kind: str,
    cell_name: str,
    D: int,
    dtype_name: str,
    rows: int,
    trans: bool,
    clustered: bool,
    nt,
    units_16,
    pairs,
    ksm=0,
):
    """The registers per thread of the kernel a problem describes (solver variables or their values)."""
    if clustered and kind == "backward":
        return backward_cluster_registers(cell_name, dtype_name, nt, units_16, pairs, rows)
    return registers(kind, cell_name, D, dtype_name, nt, rows, trans=trans, cluster=clustered, ksm=ksm)


def _problem(
    kind: str,
    cell_name: str,
    D: int,
    dtype_name: str,
    limits: Limits,
    rows: int,
    trans: bool,
    clusters: tuple[int, ...] = (),
    streamed: bool = False,
) -> Model:
    """``clusters``: the cluster sizes to choose from (forward_transposed over a cluster), none: one CTA per head;
    ``streamed``: the forward over a cluster with some of R's K steps in shared memory (a solver variable)."""
    m = Model()
    nt = m.var("nt", values=list(NT_CHOICES))
    stages = m.var("stages", 2, MAX_STAGES)
    warps = m.var("warps", 1, 32)
    units = per16 = pairs = None
    ksm = 0
    if streamed:  # an even number of K steps on both sides (the MMA loop takes K steps in pairs)
        ksm = m.var("ksm", 2, D // 16 - 2)
        m.add(ksm % 2 == 0)
        m.add(stages == 2)  # deeper x rings spilled (LSTM D = 768, KSM = 26: 32 bytes with 3 stages, none with 2)
    if clusters:
        cluster = m.var("cluster", values=list(clusters))
        units = m.var("units", 8, D)
        m.add(units * cluster == D)
    if clusters and kind == "backward":  # backward_cluster: M = D in tiles of 16, K = GR·units; units pairs per row
        per16 = m.var("units_16", 1, D // 16)
        pairs = m.var("pairs_per_thread", 1, 8)
        m.add(units == 16 * per16, warps * 16 * nt == D, pairs * 64 * warps == units * rows)
        if elt_bytes(dtype_name) == 2:  # dp by ldmatrix (a K-step pair within one slot); the scalar loads
            m.add(per16 % 2 == 0)  # spilled (sLSTM D = 192, 48 units: 254 registers where the model said 196)
    elif clusters:  # a K step reads one CTA's slice of h (the forward waits for it just before)
        m.add(warps * 8 * nt == units, units % 16 == 0)
    else:
        m.add(warps * (16 if trans and kind == "backward" else 8) * nt == D)
    regs = _registers_of(kind, cell_name, D, dtype_name, rows, trans, bool(clusters), nt, per16, pairs, ksm)
    # the register file is split over the SM's 4 schedulers: a CTA takes it in groups of 4 warps (seen in ptxas:
    # 10 warps get 168 registers = 65536 / (12 · 32) rounded down to a multiple of 8, 14 warps get 128)
    groups = m.var("warp_groups", 1, 8)
    m.add(4 * groups >= warps, 4 * groups <= warps + 3)
    # ptxas allocates registers in multiples of 8 per thread
    eighths = m.var("register_eighths", 1, 32)
    m.add(8 * eighths >= regs, 8 * eighths <= regs + 7)
    m.add(regs <= limits.max_regs_per_thread)
    m.add(eighths * 8 * 128 * groups <= limits.regs_per_sm)
    m.add(
        smem_bytes(kind, cell_name, D, dtype_name, stages, rows, trans, units, cluster if clusters else 1, ksm)
        <= limits.smem_per_block
    )
    objective = -MAX_STAGES * 10 * nt + stages  # most warps first, then the deepest prefetch
    if streamed:  # before both: the fewest K steps read from shared memory each step
        objective = objective - 1000 * ksm
    if clusters:  # before all: the smallest cluster (see the top of this file)
        objective = objective - 100000 * cluster
    m.maximize(objective)
    return m


@functools.cache
def kernel_shape(
    kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int = 16, exclude: tuple[str, ...] = ()
) -> Shape | str:
    """The launch shape of kernel ``kind`` ("forward" / "backward") with ``rows`` batch rows per CTA, or why none
    fits: the families in order (one CTA per head, transposed, cluster, K split over the warps, grid). ``exclude``:
    families not to consider (for sweeps that time the shape the model would give without one, e.g. ("split_k",))."""
    if D % 16 or D < 16:
        return f"head_dim {D} is not a multiple of 16 (the MMA's K step)"
    if rows < 8:  # only forward_split_k, where it is the 8-row forward
        eight = kernel_shape(kind, cell_name, D, dtype_name, limits, 8, exclude)
        split = isinstance(eight, split_k.SplitKShape) and split_k.fit(cell_name, D, dtype_name, limits, rows)
        return split or f"{rows} batch rows per CTA: only the forward over a cluster with K split over the warps"
    if D > CTA_MAX_HEAD_DIM:
        return _cluster_shape(kind, cell_name, D, dtype_name, limits, rows, exclude)
    shape = None
    if kind == "forward" and D >= FW_T_MIN_HEAD_DIM:
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True)
    if shape is None:
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=False)
    if kind == "backward" and (shape is None or shape.tiles_per_warp > 1):
        # backward_transposed: 16 units per warp tile, so the same warps at half the MMAs where backward_cta needs
        # NT >= 2 (D = 128); taken when it has at least as many warps
        alt = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True)
        if alt is not None and (shape is None or alt.warps >= shape.warps):
            shape = alt
    if shape is None:
        return (
            f"no {kind} tiling of {cell_name} with head_dim {D} in {dtype_name} keeps R in registers "
            f"({limits.max_regs_per_thread} registers per thread, {limits.regs_per_sm} per SM, "
            f"{limits.smem_per_block // 1024} KB shared memory)"
        )
    return shape


def _cluster_shape(
    kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int, exclude: tuple[str, ...] = ()
) -> Shape | str:
    """A head wider than one CTA's: forward_cluster / backward_cluster (the solver picks the cluster's size), else
    forward_grid / backward_grid over a cooperative grid, or why neither."""
    if kind == "backward":  # only where the forward runs too (a call that trains needs both)
        forward = _cluster_shape("forward", cell_name, D, dtype_name, limits, rows, exclude)
        if isinstance(forward, str):
            return forward
    clusters = tuple(c for c in CLUSTER_SIZES if c <= limits.max_cluster and D % (8 * c) == 0)
    shape = None
    if clusters:
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True, clusters=clusters)
    if clusters and kind == "forward" and (shape is None or shape.cluster_size >= 8) and "split_k" not in exclude:
        # R beyond the cluster's registers, or in the registers of 8 CTAs or more (Elman D = 384 / 512, measured
        # faster split): forward_split_k, K over the warps
        shape = split_k.fit(cell_name, D, dtype_name, limits, rows) or shape
    if shape is None and clusters and kind == "forward" and dtype_name != "float32":
        # R beyond the cluster's registers: the rest of its K steps from shared memory
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True, clusters=clusters, streamed=True)
    if shape is not None:
        return shape
    # no cluster holds R (or none exists, sm_80): a cooperative grid
    over_grid = grid.fit(kind, cell_name, D, dtype_name, limits, rows)
    if not isinstance(over_grid, str):
        return over_grid
    cluster = (
        "no thread-block cluster (sm_90)"
        if not clusters
        else f"no cluster of up to {limits.max_cluster} CTAs holds R ({limits.max_regs_per_thread} registers per "
        f"thread, {limits.regs_per_sm} per SM, {limits.smem_per_block // 1024} KB shared memory)"
    )
    return f"{kind} {cell_name} head_dim {D} {dtype_name}: {cluster}; {over_grid}"


def _solve(
    kind: str,
    cell_name: str,
    D: int,
    dtype_name: str,
    limits: Limits,
    rows: int,
    trans: bool,
    clusters: tuple[int, ...] = (),
    streamed: bool = False,
) -> CtaShape | None:
    result = _problem(kind, cell_name, D, dtype_name, limits, rows, trans, clusters, streamed).solve()
    if result.solution is None:
        return None
    nt, stages, warps = (result.solution[k] for k in ("nt", "stages", "warps"))
    cluster = result.solution["cluster"] if clusters else 1
    ksm = result.solution.get("ksm", 0)
    regs = _registers_of(
        kind,
        cell_name,
        D,
        dtype_name,
        rows,
        trans,
        bool(clusters),
        nt,
        D // cluster // 16,
        result.solution.get("pairs_per_thread"),
        ksm,
    )
    common = dict(
        tiles_per_warp=nt,
        stages=stages,
        warps=warps,
        rows=rows,
        registers=regs,
        smem=smem_bytes(kind, cell_name, D, dtype_name, stages, rows, trans, D // cluster, cluster, ksm),
    )
    if clusters:
        return ClusterShape(**common, cluster=cluster, k_steps_in_smem=ksm)
    return TransposedShape(**common) if trans else CtaShape(**common)
