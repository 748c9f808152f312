"""The resource model of the CUDA kernels, solved with ``fusedrnn.tune`` from the device's limits.

The kernels (the kernel sources) run one CTA of ``W = D / (8·NT)`` warps per (head, ROWS = 8 or 16 batch rows); warp w
owns NT tiles of 8 hidden units of every gate (backward_transposed: 16 units, ``W = D / (16·NT)``). The choices are NT
(units per warp, which trades warps for registers) and STAGES (how many steps of inputs are in flight in the
shared-memory ring); the launch picks ROWS, the model the kernel: forward_transposed from FW_T_MIN_HEAD_DIM on,
backward_transposed where backward_cta would need NT >= 2.
The model:

* registers per thread: R's MMA fragments (``2·GR·NT·D/KSTEP`` forward and backward; forward_transposed: A fragments
  of two gates per 16-row tile, ``4·ceil(GR/2)·NT·D/KSTEP``; backward_transposed: ``4·GR·NT·D/KSTEP`` for 16 units;
  KSTEP = 16 for 16-bit inputs, 8 for float32), the accumulators, the states / state gradients and biases / bias sums
  held per element, and a fixed overhead (addresses, loop state, temporaries of the cell's math; float32
  adds the TF32 splitting). The overheads were read from ptxas' reports of every variant (sm_80 and sm_90a,
  NVRTC 13.5): with them, a variant the model accepts does not spill — ``python -m fusedrnn info --compile-all``
  checks exactly that in CI.
* registers per thread <= min(255, registers per SM / (32 · warps rounded up to a multiple of 4)): one CTA per
  SM (``__launch_bounds__(.., 1)``).
* shared memory (the same formulas as ``Layout`` in the kernel sources) <= the device's opt-in limit per block.
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
forward_split_k instead: K split over the warps as well as the gate rows, each warp's first ``kr`` K steps of R in
registers and the rest in shared memory (``_split_problem``: cluster, warps, K groups and kr by a predicted step time
fitted on benchmarks/split_sweep.py). It also runs in tiles of 1 to 7 rows (``SPLIT_ROWS``) with the 8-row tiling
(less kr where rows that are not a power of two cost registers); the launch picks the rows by the clusters resident
at once.

Where no cluster holds R (or there are none, sm_80), 16-bit heads run over a cooperative grid of D / units CTAs,
one per SM (forward_grid / backward_grid, 16 batch rows per CTA): a third problem (``_grid_problem``) over the
units per CTA, warps, the K steps of R each warp keeps in registers (the rest in shared memory) and the exchanged
operand's chunks in flight; its objective is a predicted step time fitted on benchmarks/grid_sweep.py (see there and
docs/large_heads.md).

The architecture limits come from the device at run time (``torch.cuda.get_device_properties``). Without a GPU
(compile-all, CI) they are the documented limits of the compute capability the arch names.
"""

from __future__ import annotations

import dataclasses
import functools

from ...cells import get_cell
from ...tune import Model
from .calibration import per_cell, value

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


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the model needs of a device: registers per SM and per thread, shared memory per block (opt-in), the
    largest thread-block cluster (1: none; 16 on sm_90 with the non-portable size)."""

    regs_per_sm: int = 65536
    max_regs_per_thread: int = 255
    smem_per_block: int = 232448  # H100: 227 KB
    max_cluster: int = 1
    sms: int = 132  # SMs: a cooperative grid's CTAs all resident, one per SM


# Documented per compute capability (CUDA programming guide, "Technical specifications"), used only when
# compiling without a GPU; at run time the device's properties are read instead.
ARCH_LIMITS = {
    "sm_80": Limits(smem_per_block=166912, sms=108),  # 163 KB; A100
    "sm_86": Limits(smem_per_block=101376, sms=84),  # 99 KB
    "sm_89": Limits(smem_per_block=101376, sms=128),
    "sm_90": Limits(smem_per_block=232448, max_cluster=16),  # 227 KB; H100 SXM
    "sm_90a": Limits(smem_per_block=232448, max_cluster=16),
}
CLUSTER_SIZES = (2, 4, 8, 16)


def device_limits(device_index: int) -> Limits:
    import torch

    props = torch.cuda.get_device_properties(device_index)
    return Limits(
        regs_per_sm=getattr(props, "regs_per_multiprocessor", 65536),
        smem_per_block=getattr(props, "shared_memory_per_block_optin", 49152),
        # the cluster kernels are built for sm_90a only (st.async, mapa, mbarrier transaction counts)
        max_cluster=16 if (props.major, props.minor) == (9, 0) else 1,
        sms=props.multi_processor_count,
    )


@dataclasses.dataclass(frozen=True)
class Shape:
    """A kernel's launch shape: NT unit tiles per warp, STAGES prefetch depth, ROWS batch rows per CTA, and what
    they cost."""

    nt: int
    stages: int
    warps: int
    rows: int
    smem: int  # bytes of dynamic shared memory
    registers: int  # the model's estimate per thread
    trans: bool = False  # forward_transposed / backward_transposed (R · hᵀ; dhᵀ = Rᵀ · dpᵀ with 16 units per warp tile)
    cluster: int = 1  # CTAs per head (forward_transposed / backward_cluster over a cluster), D / cluster units each
    ksm: int = 0  # K steps of R per warp read from shared memory each step (forward_transposed over a cluster)
    grid: int = 1  # CTAs per head of a cooperative grid (forward_grid / backward_grid), D / grid units each
    kr: int = 0  # the grid kernels: K steps of R per warp in registers (the rest in shared memory)
    ck: int = 0  # the grid kernels: K steps per chunk of the exchanged operand (``stages`` chunks in flight)
    ksplit: int = 0  # forward_split_k (over a cluster): groups of warps K is split over (warps / ksplit row groups)


def _elt_bytes(dtype_name: str) -> int:
    return 4 if dtype_name == "float32" else 2


def smem_bytes(kind: str, cell_name: str, D: int, dtype_name: str, stages, rows: int = 16, trans: bool = False,
               units=None, cluster=1, ksm=0):
    """Dynamic shared memory of a kernel with ``rows`` batch rows per CTA (``trans``: the transposed kernel; over a
    ``cluster`` > 1 of CTAs, ``units`` of the head per CTA, ``ksm`` K steps of R per warp in shared memory): the
    same formulas as ``Layout`` in the kernel sources (``stages``, ``units``, ``cluster`` and ``ksm`` may be solver
    variables)."""
    cell = get_cell(cell_name)
    e = _elt_bytes(dtype_name)
    pad = 16 // e
    U = D if units is None else units
    clustered = not isinstance(cluster, int) or cluster > 1
    h = rows * (D + pad) * e
    out = (cell.num_gates_b + cell.num_states) * rows * (U + 4) * 4  # forward_transposed's output stage (f32)
    if kind == "forward":
        r_part = ksm * cell.num_gates_r * U * 32 if clustered else 0  # 256 B per gate, 8 units and K step
        return (2 * h + stages * (rows * (cell.num_gates_x * U + pad) * e) + (2 * out if trans else 0)
                + (16 * cluster if clustered else 0) + r_part)  # the mbarriers (2 per sender), R in shared memory
    p = rows * ((cell.num_gates_b * U if trans else cell.num_gates_r * D) + pad) * e  # dp: every slot / R's gates
    # partial dh, received partials, mbarriers
    exchange = rows * (D + 4) * 4 + 2 * D * rows * 4 + 16 if clustered else 0
    return 2 * p + stages * ((cell.num_gates_b + cell.num_states) * rows * (U + 4) * 4 + h) + exchange


def registers(kind: str, cell_name: str, D: int, dtype_name: str, nt, rows: int = 16, overhead: bool = True,
              trans: bool = False, cluster: bool = False, ksm=0):
    """The model's registers per thread (``nt`` may be a solver variable); ``overhead=False`` leaves out the fixed
    overheads (for calibrating them against ptxas). Counted for 16 batch rows per CTA (2 rows per thread) and
    used for 8 as well: fewer elements, but ptxas then hoists more (seen: 154 registers with 8 rows, 142 with 16,
    LSTM 64 backward); compile-all checks both."""
    cell = get_cell(cell_name)
    GR, GB, S = cell.num_gates_r, cell.num_gates_b, cell.num_states
    e = _elt_bytes(dtype_name)
    kstep = 8 if e == 4 else 16
    fixed = 0
    if overhead:
        if kind == "forward" and trans:
            fixed = FW_T_OVERHEAD + FW_T_CELL_OVERHEAD.get(cell.name, 0) + DTYPE_T_OVERHEAD.get(dtype_name, 0)
            fixed += FW_C_OVERHEAD if cluster else 0
        else:
            cell_overhead = (BW_T_CELL_OVERHEAD if trans else BW_CELL_OVERHEAD).get(cell.name, 0)
            fixed = DTYPE_OVERHEAD.get(dtype_name, {}).get(kind, 0) + (
                FW_OVERHEAD if kind == "forward" else BW_OVERHEAD + cell_overhead)
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
    kstep = 8 if _elt_bytes(dtype_name) == 4 else 16
    batch_tiles = rows // 8
    accumulators = 4 * batch_tiles * nt + 12 * batch_tiles * (1 // nt)
    return (4 * nt * cell.num_gates_r * units_16 * (16 // kstep) + accumulators
            + pairs * (2 * (cell.num_states + cell.num_gates_b) + 4) + BW_C_OVERHEAD
            + DTYPE_OVERHEAD.get(dtype_name, {}).get("backward", 0))


def _registers_of(kind: str, cell_name: str, D: int, dtype_name: str, rows: int, trans: bool, clustered: bool, nt,
                  units_16, pairs, ksm=0):
    """The registers per thread of the kernel a problem describes (solver variables or their values)."""
    if clustered and kind == "backward":
        return backward_cluster_registers(cell_name, dtype_name, nt, units_16, pairs, rows)
    return registers(kind, cell_name, D, dtype_name, nt, rows, trans=trans, cluster=clustered, ksm=ksm)


def _problem(kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int, trans: bool,
             clusters: tuple[int, ...] = (), streamed: bool = False) -> Model:
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
        if _elt_bytes(dtype_name) == 2:  # dp by ldmatrix (a K-step pair within one slot); the scalar loads
            m.add(per16 % 2 == 0)         # spilled (sLSTM D = 192, 48 units: 254 registers where the model said 196)
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
    m.add(smem_bytes(kind, cell_name, D, dtype_name, stages, rows, trans, units, cluster if clusters else 1, ksm)
          <= limits.smem_per_block)
    objective = -MAX_STAGES * 10 * nt + stages  # most warps first, then the deepest prefetch
    if streamed:  # before both: the fewest K steps read from shared memory each step
        objective = objective - 1000 * ksm
    if clusters:  # before all: the smallest cluster (see the top of this file)
        objective = objective - 100000 * cluster
    m.maximize(objective)
    return m


@functools.cache
def kernel_shape(kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int = 16) -> Shape | str:
    """The launch shape of kernel ``kind`` ("forward" / "backward") with ``rows`` batch rows per CTA, or why none
    fits."""
    if D % 16 or D < 16:
        return f"head_dim {D} is not a multiple of 16 (the MMA's K step)"
    if rows < 8:  # only forward_split_k, where it is the 8-row forward
        eight = kernel_shape(kind, cell_name, D, dtype_name, limits, 8)
        split = isinstance(eight, Shape) and eight.ksplit and _split_shape(cell_name, D, dtype_name, limits, rows)
        return split or f"{rows} batch rows per CTA: only the forward over a cluster with K split over the warps"
    if D > CTA_MAX_HEAD_DIM:
        return _cluster_shape(kind, cell_name, D, dtype_name, limits, rows)
    shape = None
    if kind == "forward" and D >= FW_T_MIN_HEAD_DIM:
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True)
    if shape is None:
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=False)
    if kind == "backward" and (shape is None or shape.nt > 1):
        # backward_transposed: 16 units per warp tile, so the same warps at half the MMAs where backward_cta needs
        # NT >= 2 (D = 128); taken when it has at least as many warps
        alt = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True)
        if alt is not None and (shape is None or alt.warps >= shape.warps):
            shape = alt
    if shape is None:
        return (f"no {kind} tiling of {cell_name} with head_dim {D} in {dtype_name} keeps R in registers "
                f"({limits.max_regs_per_thread} registers per thread, {limits.regs_per_sm} per SM, "
                f"{limits.smem_per_block // 1024} KB shared memory)")
    return shape


def _cluster_shape(kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int) -> Shape | str:
    """A head wider than one CTA's: forward_cluster / backward_cluster (the solver picks the cluster's size), else
    forward_grid / backward_grid over a cooperative grid, or why neither."""
    if kind == "backward":  # only where the forward runs too (a call that trains needs both)
        forward = _cluster_shape("forward", cell_name, D, dtype_name, limits, rows)
        if isinstance(forward, str):
            return forward
    clusters = tuple(c for c in CLUSTER_SIZES if c <= limits.max_cluster and D % (8 * c) == 0)
    shape = None
    if clusters:
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True, clusters=clusters)
    if clusters and kind == "forward" and (shape is None or shape.cluster >= 8):
        # R beyond the cluster's registers, or in the registers of 8 CTAs or more (Elman D = 384 / 512, measured
        # faster split): forward_split_k, K over the warps
        shape = _split_shape(cell_name, D, dtype_name, limits, rows) or shape
    if shape is None and clusters and kind == "forward" and dtype_name != "float32":
        # R beyond the cluster's registers: the rest of its K steps from shared memory
        shape = _solve(kind, cell_name, D, dtype_name, limits, rows, trans=True, clusters=clusters, streamed=True)
    if shape is not None:
        return shape
    # no cluster holds R (or none exists, sm_80): a cooperative grid
    grid = _grid_shape(kind, cell_name, D, dtype_name, limits, rows)
    if not isinstance(grid, str):
        return grid
    cluster = ("no thread-block cluster (sm_90)" if not clusters else
               f"no cluster of up to {limits.max_cluster} CTAs holds R ({limits.max_regs_per_thread} registers per "
               f"thread, {limits.regs_per_sm} per SM, {limits.smem_per_block // 1024} KB shared memory)")
    return f"{kind} {cell_name} head_dim {D} {dtype_name}: {cluster}; {grid}"


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


def _grid_problem(kind: str, cell_name: str, D: int, limits: Limits) -> Model:
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
    m.minimize(w["exchange_kb_beyond_8mb"] * excess + w["exchange_bytes_per_32"] * grid * ks * 16
               + w["r_fragment_from_smem"] * (ks - kr * warps) * ntl + w["mma_per_warp"] * kw * ntl
               + w["element_per_thread"] * per_thread + w["warp"] * warps - ring * ck)
    return m


def _grid_shape(kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int) -> Shape | str:
    """A head over a cooperative grid (forward_grid / backward_grid), or why not."""
    if dtype_name == "float32":
        return "the cooperative-grid kernels are 16-bit only"
    if rows != 16:
        return "the cooperative-grid kernels take 16 batch rows per CTA"
    result = _grid_problem(kind, cell_name, D, limits).solve()
    if result.solution is None:
        return (f"no {kind} tiling of {cell_name} with head_dim {D} keeps R on chip over a grid of up to "
                f"{limits.sms} CTAs ({limits.regs_per_sm} registers and {limits.smem_per_block // 1024} KB shared "
                f"memory per SM)")
    return grid_shape_of(kind, cell_name, D, result.solution)


def grid_shape_of(kind: str, cell_name: str, D: int, v: dict) -> Shape:
    """The Shape of a solution ``v`` of the grid problem (16 rows; ``stages``: the chunks in flight)."""
    units, warps, kr, ck, ring = v["units"], v["warps"], v["kr"], v["ck"], v["ring"]
    return Shape(nt=1, stages=ring, warps=warps, rows=16, registers=grid_registers(kind, cell_name, D, units, kr,
                 v["elements_per_thread"]), smem=grid_smem_bytes(kind, cell_name, D, units, warps, kr, ck, ring),
                 grid=D // units, kr=kr, ck=ck)


# forward_split_k: the forward over a cluster with K split over the warps (16-bit, 1 to 8 batch rows per CTA, tiled
# for 8), for heads whose R is more than the cluster's registers hold
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
    return (2 * 8 * (D + 8) * 2 + 16 + 32 * k_groups * (GR * units + 4)
            + 512 * (GR * units * D // 256 - warps * kr * row_tiles_per_warp))


def split_registers(cell_name: str, row_tiles_per_warp, kr, per_thread, near_all, odd_rows=0, overhead: bool = True):
    """forward_split_k's registers per thread: R's ``kr`` K steps (4 per row tile), 8 more per row tile (the
    accumulators and the shared-memory fragments in flight), B of a K-step pair (two buffers of 4), per unit pair of
    the cell (``per_thread`` of them) both units' states and biases, x (one register per gate) and the row
    bookkeeping (3), and the overheads (``near_all``: 1 where kr is all or all but one of the warp's K steps;
    ``odd_rows``: 1 where the batch rows per CTA are not a power of two, counted with near_all). Arguments may be
    solver variables."""
    cell = get_cell(cell_name)
    pair = 2 * cell.num_states + 2 * cell.num_gates_b + cell.num_gates_x + 3
    return 8 * row_tiles_per_warp + 4 * row_tiles_per_warp * kr + 8 + pair * per_thread + (
        SPLIT_OVERHEAD + (SPLIT_NEAR_ALL + SPLIT_ODD_ROWS * odd_rows) * near_all if overhead else 0)


def _split_problem(cell_name: str, D: int, limits: Limits, odd_rows: int = 0) -> Model:
    GR = get_cell(cell_name).num_gates_r
    m = Model()
    cluster = m.var("cluster", values=[c for c in SPLIT_CLUSTERS if c <= limits.max_cluster and D % (8 * c) == 0
                                       and GR * D // c % 16 == 0])
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
    m.minimize(w["r_fragment_from_smem"] * (GR * units * D // 256 - warps * kr * mpw) + w["k_pair_per_warp"] * k_pairs
               + w["cta_of_cluster"] * cluster + w["unit_pair_per_thread"] * per_thread + w["warp"] * warps
               + w["partial_sum_per_gate_row_and_k_group"] * k_groups * GR * units
               + w["r_element_per_cta"] * GR * units * D)
    return m


def split_shape(cell_name: str, D: int, cluster: int, row_groups: int, k_groups: int, kr: int, rows: int = 8) -> Shape:
    """forward_split_k's Shape: ``row_groups`` x ``k_groups`` warps over a cluster of ``cluster`` CTAs, ``kr`` K steps
    of R per warp in registers, ``rows`` (1 to 8) batch rows per CTA."""
    units, warps = D // cluster, row_groups * k_groups
    mpw = get_cell(cell_name).num_gates_r * units // 16 // row_groups
    near_all = int(kr >= D // 16 // k_groups - 1)
    per_thread = -(-rows * units // (64 * warps))
    return Shape(nt=1, stages=2, warps=warps, rows=rows, cluster=cluster, kr=kr, ksplit=k_groups,
                 registers=split_registers(cell_name, mpw, kr, per_thread, near_all, _odd_rows(rows)),
                 smem=split_smem_bytes(cell_name, D, units, warps, k_groups, mpw, kr))


def _odd_rows(rows: int) -> int:
    return int(rows & (rows - 1) != 0)


def _split_shape(cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int) -> Shape | None:
    """forward_split_k where the problem has a solution (16-bit, SPLIT_ROWS rows, clusters), else None."""
    if dtype_name == "float32" or rows not in SPLIT_ROWS or limits.max_cluster < 2 or D > SPLIT_MAX_HEAD_DIM:
        return None
    # fewer rows take the 8-row tiling (the cell's pairs per thread only shrink), less kr where they cost registers
    v = _split_problem(cell_name, D, limits, _odd_rows(rows)).solve().solution
    if v is None:
        return None
    return split_shape(cell_name, D, v["cluster"], v["warps"] // v["k_groups"], v["k_groups"], v["kr"], rows)


def _solve(kind: str, cell_name: str, D: int, dtype_name: str, limits: Limits, rows: int, trans: bool,
           clusters: tuple[int, ...] = (), streamed: bool = False) -> Shape | None:
    result = _problem(kind, cell_name, D, dtype_name, limits, rows, trans, clusters, streamed).solve()
    if result.solution is None:
        return None
    nt, stages, warps = (result.solution[k] for k in ("nt", "stages", "warps"))
    cluster = result.solution["cluster"] if clusters else 1
    ksm = result.solution.get("ksm", 0)
    regs = _registers_of(kind, cell_name, D, dtype_name, rows, trans, bool(clusters), nt, D // cluster // 16,
                         result.solution.get("pairs_per_thread"), ksm)
    return Shape(nt=nt, stages=stages, warps=warps, rows=rows,
                 smem=smem_bytes(kind, cell_name, D, dtype_name, stages, rows, trans, D // cluster, cluster, ksm),
                 registers=regs, trans=trans, cluster=cluster, ksm=ksm)
