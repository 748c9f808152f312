"""Triton kernels of the alternating backend: one launch per step, between two batched GEMMs (the pointwise
kernels), or all of a forward step in one launch (``forward_fused_step_kernel``).

Every program of a pointwise kernel handles BLOCK consecutive elements of the flat index
e = (b * NH + n) * D + d < N = B·NH·D; every program of the fused kernel a [batch tile, hidden-unit block]
of one head. Both forward kernels share their epilogue (``_step_inputs``, ``_step_outputs``). The cell math
is the Triton backend's (``cell_forward`` / ``cell_backward``), the slot routing its ``route_gates`` /
``pick_slot``, the saved tensors its layouts. All arithmetic is float32.

A CUDA graph bakes in kernel arguments, so there are two kinds of buffers. Static buffers belong to the
cached plan and are kernel arguments: the GEMM operands and results, the carries between steps, the bias.
Per-call tensors (x, y, the saved slots and states, dy, dx, dr) are reached through ``table``, a small int64
tensor of addresses that the host rewrites before every replay: outputs are fresh tensors of each call,
inputs are read where they are.

Layouts (all contiguous; dt = the input dtype, gt = the GEMMs' output dtype: float32, or dt where torch
has no float32-output GEMM for 16-bit inputs, see ``launch``; per-call tensors in the order of their table):
    forward table   x [B, T, GX, NH, D] dt, y [B, T, NH, D] dt, and when SAVE (float32, the Triton
                    backend's layouts) pre [T, B, GB, NH, D] and states [S, NH, T + 1, B, D]
    backward table  pre, states (as saved), dy [B, T, NH, D] dt, dx [B, T, GX, NH, D] dt,
                    dr [NH, T, B, GR, D] dt (the R gates' slot gradients, the operand of dR's GEMM)
    W      [NH, GR·D, D] dt   W[n, g·D + i, j] = R[g, n, i, j]: the GEMMs' (and the fused kernel's) weights
    gates  [NH, B, GR·D] gt   gates[n, b, g·D + i] = (R[g, n] h[b, n])_i, written by the forward GEMM
    hbuf   [P, NH, B, D] dt   h_t, the next step's R·h operand; P = 1 (GEMM path), P = 2 (fused kernel: h
                              ping-pongs between the halves, step t reads half t mod 2, writes the other)
    bias   [GB, NH, D]   dt
    carry  [S, B, NH, D] f32  the states between steps (forward)
    dcarry [S, B, NH, D] f32  the direct gradients of the states between steps (backward)
    dh_part [NH, GR, B, D] gt R[g, n]ᵀ dp_g of the step after, one partial per gate, written by the backward
                              GEMM (a bmm over NH·GR of K = D: split-K by gate); the kernel sums them
    dpg    [NH, GR, B, D] dt  the R gates' slot gradients, the backward GEMM's operand
    db_acc [GB, B, NH, D] f32 Σ_t dp per element (summed over B on the host: db, no atomics)
    lens   [B]           i32  per-row step counts (HAS_LENGTHS): steps t >= lens[b] keep row b's states,
                              write y = 0 and, backward, pass the state gradients through with dp = 0
    starts [B, T]        bool episode starts (HAS_RESETS): the forward of step t leaves the cell's initial values
                              (INIT0..INIT3) in the carry and h_t where step t + 1 starts an episode (step 0's
                              are set by the host); the backward of step t passes nothing to the states before it
                              where it starts one (dcarry and dpg zero, dx, dr and db as computed)
"""

import triton
import triton.language as tl

from ..triton.cells import cell_backward, cell_forward
from ..triton.kernels import pick_slot, route_gates


@triton.jit
def _table_ptr(table, k: tl.constexpr, ty: tl.constexpr):
    """Entry k of the address table as a pointer to ``ty``."""
    return tl.load(table + k).to(tl.pointer_type(ty))


@triton.jit
def _load(ptr, mask):
    return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_sets(ptr, stride, mask, K: tl.constexpr):
    """The first K (1..4) of the sets at ptr, ptr + stride, ptr + 2·stride, ... as float32; zeros for the rest."""
    zero = tl.zeros(mask.shape, dtype=tl.float32)
    v0 = _load(ptr, mask)
    v1, v2, v3 = zero, zero, zero
    if K > 1:
        v1 = _load(ptr + stride, mask)
    if K > 2:
        v2 = _load(ptr + 2 * stride, mask)
    if K > 3:
        v3 = _load(ptr + 3 * stride, mask)
    return v0, v1, v2, v3


@triton.jit
def _store_sets(ptr, stride, mask, v0, v1, v2, v3, K: tl.constexpr):
    """v0 .. v(K-1) into the sets at ptr, ptr + stride, ...; the rest is not written."""
    tl.store(ptr, v0, mask=mask)
    if K > 1:
        tl.store(ptr + stride, v1, mask=mask)
    if K > 2:
        tl.store(ptr + 2 * stride, v2, mask=mask)
    if K > 3:
        tl.store(ptr + 3 * stride, v3, mask=mask)


@triton.jit
def _prefetch(ptr, PREFETCH: tl.constexpr):
    """A hint: bring the lines at ``ptr`` (a block of valid addresses) into L2, without waiting for them.

    For a later step's per-call inputs, which do not depend on the recurrence: that step's kernel then finds
    them in L2 instead of waiting for DRAM behind its table load. PTX ``prefetch.global.L2`` (NVIDIA GPUs);
    nothing where PREFETCH is off (the interpreter cannot run PTX).
    """
    if PREFETCH:
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptr], dtype=tl.int32, is_pure=False, pack=1
        )


@triton.jit
def _forward_table(table, dt: tl.constexpr, SAVE: tl.constexpr):
    """The forward's per-call tensors x, y and (when SAVE; else y, never written) states, pre. All four
    addresses are loaded at once, at the start: none of them waits behind R·h."""
    x = _table_ptr(table, 0, dt)
    y = _table_ptr(table, 1, dt)
    states, pre = y, y
    if SAVE:
        states = _table_ptr(table, 2, tl.float32)
        pre = _table_ptr(table, 3, tl.float32)
    return x, y, states, pre


# fmt: off
@triton.jit
def _step_inputs(
    x, bias, carry, t, bi, n, d, mask, N, B, T, NH, D,
    GX: tl.constexpr, GB: tl.constexpr, S: tl.constexpr,
    XS0: tl.constexpr, XS1: tl.constexpr, XS2: tl.constexpr, XS3: tl.constexpr, PREFETCH: tl.constexpr,
):
    """What step t adds to R·h, for the elements (bi, n, d) (index tensors of one shape, n may be a scalar):
    the slots b + x_t (in that order, the Triton backend's) and the carried states, all float32.

    Every load is independent of the others: all are in flight at once, and the caller issues them before it
    waits for R·h (the pointwise kernel: before its loads of the GEMM's gates are used; the fused kernel: before
    its GEMM). x waits for its address (a table load), so it comes last. PREFETCH: also asks L2 for x_{t+1}.
    """
    HD = NH * D
    hd = n * D + d
    e = bi * HD + hd  # [B, NH, D] flat index of carry
    bi64 = bi.to(tl.int64)
    t64 = t.to(tl.int64)

    s0, s1, s2, s3 = _load_sets(carry + e, N, mask, S)
    p0, p1, p2, p3 = _load_sets(bias + hd, HD, mask, GB)
    x0, x1, x2, x3 = _load_sets(x + (bi64 * T + t64) * (GX * HD) + hd, HD, mask, GX)  # x[b, t, 0, n, d]
    p0, p1, p2, p3 = route_gates(p0, p1, p2, p3, x0, x1, x2, x3, GX, XS0, XS1, XS2, XS3)

    if PREFETCH:  # x of step t + 1 (clamped to the last step); masked lanes point at element 0
        x_next = x + tl.where(mask, (bi64 * T + tl.minimum(t64 + 1, T - 1)) * (GX * HD) + hd, 0)
        _prefetch(x_next, PREFETCH)
        if GX > 1:
            _prefetch(x_next + tl.where(mask, HD, 0), PREFETCH)
        if GX > 2:
            _prefetch(x_next + tl.where(mask, 2 * HD, 0), PREFETCH)
        if GX > 3:
            _prefetch(x_next + tl.where(mask, 3 * HD, 0), PREFETCH)
    return p0, p1, p2, p3, s0, s1, s2, s3


@triton.jit
def _starts(starts, lens, t, bi, mask, T, HAS_LENGTHS: tl.constexpr):
    """Whether step t starts an episode for the elements of rows bi: starts[b, t], for steps that run."""
    m = mask & (bi * 0 + t < T)
    if HAS_LENGTHS:
        m = m & (t < tl.load(lens + bi, mask=mask, other=0))
    return tl.load(starts + bi.to(tl.int64) * T + t, mask=m, other=0) != 0


@triton.jit
def _unless(start, v, HAS_RESETS: tl.constexpr):
    """v, zero where ``start`` (with HAS_RESETS; else v)."""
    if HAS_RESETS:
        v = tl.where(start, 0.0, v).to(v.dtype)
    return v


@triton.jit
def _step_outputs(
    y, states, pre, carry, h_next, lens, starts, p0, p1, p2, p3, r0, r1, r2, r3, s0, s1, s2, s3,
    t, bi, n, d, mask, N, B, T, NH, D,
    CELL: tl.constexpr, GR: tl.constexpr, GB: tl.constexpr, S: tl.constexpr,
    RS0: tl.constexpr, RS1: tl.constexpr, RS2: tl.constexpr, RS3: tl.constexpr,
    SAVE: tl.constexpr, FAST: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr,
    INIT0: tl.constexpr, INIT1: tl.constexpr, INIT2: tl.constexpr, INIT3: tl.constexpr,
):
    """The rest of step t for the elements (bi, n, d): slots (b + x_t, from ``_step_inputs``) + R·h (r0..r3, one
    per R gate, float32), the cell on the carried states s0..s3, then every write: the carry, h_t into
    ``h_next`` ([NH, B, D], the next step's R·h operand, input dtype), y_t and, when SAVE, pre_t and states.
    HAS_LENGTHS: rows past their length keep their states and write y = 0. HAS_RESETS: where step t + 1 starts an
    episode, the carry, h_t and the saved states before step t + 1 are the cell's initial values."""
    dt = h_next.dtype.element_ty
    HD = NH * D
    hd = n * D + d
    e = bi * HD + hd
    bi64 = bi.to(tl.int64)
    n64 = n.to(tl.int64)
    t64 = t.to(tl.int64)
    p0, p1, p2, p3 = route_gates(p0, p1, p2, p3, r0, r1, r2, r3, GR, RS0, RS1, RS2, RS3)

    if HAS_LENGTHS:
        c0, c1, c2, c3 = cell_forward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3)
        live = t < tl.load(lens + bi, mask=mask, other=0)
        s0, s1 = tl.where(live, c0, s0), tl.where(live, c1, s1)
        s2, s3 = tl.where(live, c2, s2), tl.where(live, c3, s3)
        h_out = tl.where(live, s0, 0.0).to(dt)
    else:
        s0, s1, s2, s3 = cell_forward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3)
        h_out = s0.to(dt)
    if HAS_RESETS:
        start = _starts(starts, lens, t + 1, bi, mask, T, HAS_LENGTHS)
        s0, s1 = tl.where(start, INIT0, s0), tl.where(start, INIT1, s1)
        s2, s3 = tl.where(start, INIT2, s2), tl.where(start, INIT3, s3)

    _store_sets(carry + e, N, mask, s0, s1, s2, s3, S)
    tl.store(h_next + (n64 * B + bi) * D + d, s0.to(dt), mask=mask)
    tl.store(y + (bi64 * T + t64) * HD + hd, h_out, mask=mask)
    if SAVE:
        # states[s, n, t + 1, b, d] (sets NH·(T+1)·B·D apart, in int64 through n64); pre[t, b, k, :, :]
        T1 = T + 1
        s_set = (n64 * 0 + NH * T1) * B * D
        _store_sets(states + ((n64 * T1 + t64 + 1) * B + bi64) * D + d, s_set, mask, s0, s1, s2, s3, S)
        _store_sets(pre + (t64 * B + bi64) * (GB * HD) + hd, HD, mask, p0, p1, p2, p3, GB)


@triton.jit(do_not_specialize=["t"])
def forward_step_kernel(
    table, gates, bias, carry, hbuf, lens, starts,
    t, N, B, T, NH, D,
    CELL: tl.constexpr, GX: tl.constexpr, GR: tl.constexpr, GB: tl.constexpr, S: tl.constexpr,
    XS0: tl.constexpr, XS1: tl.constexpr, XS2: tl.constexpr, XS3: tl.constexpr,
    RS0: tl.constexpr, RS1: tl.constexpr, RS2: tl.constexpr, RS3: tl.constexpr,
    SAVE: tl.constexpr, FAST: tl.constexpr, PREFETCH: tl.constexpr, BLOCK: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr,
    INIT0: tl.constexpr, INIT1: tl.constexpr, INIT2: tl.constexpr, INIT3: tl.constexpr,
):
    """Step t after the GEMM: slots = b + x_t + gates; new states = cell(slots, carry): carry, hbuf, y_t (and
    pre_t, states). Every program handles BLOCK consecutive elements of e = (b * NH + n) * D + d < N."""
    x, y, states, pre = _forward_table(table, hbuf.dtype.element_ty, SAVE)
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = e < N
    HD = NH * D
    bi = e // HD
    hd = e - bi * HD
    n = hd // D
    d = hd - n * D
    g_off = (n.to(tl.int64) * B + bi) * (GR * D) + d  # gates[n, b, 0 * D + d]
    # the GEMM's gates first: their loads are in flight with those of _step_inputs
    r0, r1, r2, r3 = _load_sets(gates + g_off, D, mask, GR)
    p0, p1, p2, p3, s0, s1, s2, s3 = _step_inputs(
        x, bias, carry, t, bi, n, d, mask, N, B, T, NH, D, GX, GB, S, XS0, XS1, XS2, XS3, PREFETCH)
    _step_outputs(
        y, states, pre, carry, hbuf, lens, starts, p0, p1, p2, p3, r0, r1, r2, r3, s0, s1, s2, s3, t, bi, n, d,
        mask, N, B, T, NH, D, CELL, GR, GB, S, RS0, RS1, RS2, RS3, SAVE, FAST, HAS_LENGTHS, HAS_RESETS,
        INIT0, INIT1, INIT2, INIT3)


@triton.jit
def _mma_step(acc, p_w, p_h, k, o_k, m_m, m_b, D, DOT_PRECISION: tl.constexpr):
    """acc + the product of the W rows p_w [M] and h_{t-1}ᵀ (rows p_h [BLOCK_B]) over inputs k + o_k."""
    o_kk = k + o_k
    m_k = o_kk < D
    b_w = tl.load(p_w[:, None] + o_kk[None, :], mask=m_m[:, None] & m_k[None, :], other=0.0)  # [M, BLOCK_K]
    b_h = tl.load(p_h[None, :] + o_kk[:, None], mask=m_k[:, None] & m_b[None, :], other=0.0)  # [BLOCK_K, BLOCK_B]
    return tl.dot(b_w, b_h, acc, input_precision=DOT_PRECISION)


@triton.jit
def _split_gates(acc, GP: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_B: tl.constexpr):
    """The gates' [BLOCK_J, BLOCK_B] blocks of acc [GP·BLOCK_J, BLOCK_B] (row g·BLOCK_J + j: gate g, unit j);
    GP = 1 or 4. Gates past 1 of a one-gate acc are placeholders (acc itself), never routed."""
    if GP == 1:
        r0, r1, r2, r3 = acc, acc, acc, acc
    else:
        # [g // 2, g % 2, j, b] -> [j, b, g // 2, g % 2]; each split takes the last axis apart
        a = tl.permute(tl.reshape(acc, (2, 2, BLOCK_J, BLOCK_B)), (2, 3, 0, 1))
        even, odd = tl.split(a)  # g % 2 = 0 / 1: [j, b, g // 2]
        r0, r2 = tl.split(even)
        r1, r3 = tl.split(odd)
    return r0, r1, r2, r3


@triton.jit(do_not_specialize=["t"])
def forward_fused_step_kernel(
    table, W, bias, carry, hbuf, lens, starts,
    t, N, B, T, NH, D,
    CELL: tl.constexpr, GX: tl.constexpr, GR: tl.constexpr, GB: tl.constexpr, S: tl.constexpr,
    XS0: tl.constexpr, XS1: tl.constexpr, XS2: tl.constexpr, XS3: tl.constexpr,
    RS0: tl.constexpr, RS1: tl.constexpr, RS2: tl.constexpr, RS3: tl.constexpr,
    SAVE: tl.constexpr, FAST: tl.constexpr, PREFETCH: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_RESETS: tl.constexpr, INIT0: tl.constexpr, INIT1: tl.constexpr, INIT2: tl.constexpr, INIT3: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
    K_CHAINS: tl.constexpr,
):
    """All of step t in one launch: R·h_{t-1} for a block of hidden units of every gate, then the cell on them.

    Program (i_nj, i_b) owns head n = i_nj // cdiv(D, BLOCK_J), the BLOCK_J hidden units j of block
    i_nj mod cdiv(D, BLOCK_J) and the batch rows of tile i_b. One MMA covers all gates: the A operand is the
    W rows of every gate's j-block, GP·BLOCK_J rows (GP = 4 for cells of 3 or 4 R gates, the rows of a missing
    fourth gate masked to zero; 1 for one gate), the B operand h_{t-1}ᵀ [k, b]; acc[g·BLOCK_J + j, b] =
    Σ_k W[n, g·D + j, k] h_{t-1}[n, b, k] over k in chunks of BLOCK_K (tl.dot, float32 accumulation, h in
    the input dtype; K_CHAINS = 2: k tiles alternate between two accumulators, summed at the end, which halves
    the chain of dependent MMAs: mma.sync waits for the previous one into the same accumulator, D / 16 of them
    per step). With the gates as MMA rows, the warps split the rows instead of repeating one product each
    (one [BLOCK_B, BLOCK_J] dot per gate, batch as rows, compiled for sm_90 with every warp computing the
    whole 16 x 16 tile), BLOCK_J can go below 16 (more programs, so more SMs share the per-step stream of W),
    and GP·BLOCK_J = 64 is a Hopper wgmma tile. Then ``_step_outputs`` with each gate's block as R_g·h.

    W [NH, GR·D, D] is the GEMM path's layout (R[g, n] row-major, shared with the backward plan): each row is
    D contiguous inputs, read as [rows, BLOCK_K] tiles, coalesced along k (the MMA's K-major A operand).

    h ping-pongs between the halves of hbuf [2, NH, B, D]: every program of step t reads all of h_{t-1} (half
    t mod 2) while others write their part of h_t, so h_t goes to the other half (t + 1) mod 2; the launch
    boundary orders step t's writes before step t + 1's reads. The epilogue's own loads (carry, bias, x_t)
    are issued before the k loop, so they arrive while it runs.
    """
    GP: tl.constexpr = 1 if GR == 1 else 4
    x, y, states, pre = _forward_table(table, hbuf.dtype.element_ty, SAVE)
    i_nj, i_b = tl.program_id(0), tl.program_id(1)
    n_jb = tl.cdiv(D, BLOCK_J)
    i_n = i_nj // n_jb
    j0 = (i_nj - i_n * n_jb) * BLOCK_J  # the program's first hidden unit
    o_j = j0 + tl.arange(0, BLOCK_J)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_k = tl.arange(0, BLOCK_K)
    m_b, m_j = o_b < B, o_j < D
    # the epilogue's elements as [BLOCK_J, BLOCK_B] blocks, the orientation of the MMA's result
    mask = m_j[:, None] & m_b[None, :]
    bi = tl.broadcast_to(o_b[None, :], (BLOCK_J, BLOCK_B))
    d = tl.broadcast_to(o_j[:, None], (BLOCK_J, BLOCK_B))

    p0, p1, p2, p3, s0, s1, s2, s3 = _step_inputs(
        x, bias, carry, t, bi, i_n, d, mask, N, B, T, NH, D, GX, GB, S, XS0, XS1, XS2, XS3, PREFETCH)

    # W rows: row m = g·BLOCK_J + u of this tile is row g·D + j_u of head i_n's W
    o_m = tl.arange(0, GP * BLOCK_J)
    g_m = o_m // BLOCK_J
    j_m = j0 + o_m % BLOCK_J
    m_m = (g_m < GR) & (j_m < D)
    p_w = W + ((i_n.to(tl.int64) * GR + g_m) * D + j_m) * D  # [GP·BLOCK_J] row starts
    NBD = NH * B * D  # one half of hbuf
    p_h = hbuf + (t % 2) * NBD + (i_n * B + o_b) * D  # [BLOCK_B] row starts of h_{t-1}
    acc = tl.zeros((GP * BLOCK_J, BLOCK_B), dtype=tl.float32)
    acc_odd = acc  # the odd k tiles' accumulator where K_CHAINS = 2
    for k in range(0, D, K_CHAINS * BLOCK_K):
        acc = _mma_step(acc, p_w, p_h, k, o_k, m_m, m_b, D, DOT_PRECISION)
        if K_CHAINS == 2:
            acc_odd = _mma_step(acc_odd, p_w, p_h, k + BLOCK_K, o_k, m_m, m_b, D, DOT_PRECISION)
    if K_CHAINS == 2:
        acc += acc_odd
    r0, r1, r2, r3 = _split_gates(acc, GP, BLOCK_J, BLOCK_B)

    _step_outputs(
        y, states, pre, carry, hbuf + ((t + 1) % 2) * NBD, lens, starts, p0, p1, p2, p3, r0, r1, r2, r3,
        s0, s1, s2, s3, t, bi, i_n, d, mask, N, B, T, NH, D, CELL, GR, GB, S, RS0, RS1, RS2, RS3, SAVE, FAST,
        HAS_LENGTHS, HAS_RESETS, INIT0, INIT1, INIT2, INIT3)


@triton.jit(do_not_specialize=["t"])
def backward_step_kernel(
    table, dh_part, dcarry, dpg, db_acc, lens, starts,
    t, N, B, T, NH, D,
    CELL: tl.constexpr, GX: tl.constexpr, GR: tl.constexpr, GB: tl.constexpr, S: tl.constexpr,
    XS0: tl.constexpr, XS1: tl.constexpr, XS2: tl.constexpr, XS3: tl.constexpr,
    RS0: tl.constexpr, RS1: tl.constexpr, RS2: tl.constexpr, RS3: tl.constexpr,
    FAST: tl.constexpr, PREFETCH: tl.constexpr, BLOCK: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_RESETS: tl.constexpr,
):
    """Step t (T-1 .. 0): dh = dcarry_h + Σ_g dh_part_g + dy_t; cell backward: dx_t, dr_t, dpg, db_acc, dcarry.
    PREFETCH: also asks L2 for step t - 1's pre, states and dy."""
    dt = dpg.dtype.element_ty
    pre = _table_ptr(table, 0, tl.float32)
    states = _table_ptr(table, 1, tl.float32)
    dy = _table_ptr(table, 2, dt)
    dx = _table_ptr(table, 3, dt)
    dr = _table_ptr(table, 4, dt)

    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = e < N
    HD = NH * D
    bi = e // HD
    hd = e - bi * HD
    n = hd // D
    d = hd - n * D
    bi64 = bi.to(tl.int64)
    n64 = n.to(tl.int64)
    t64 = t.to(tl.int64)
    bt = bi64 * T + t64  # row (b, t) of dy and dx
    hg = n64 * GR * B + bi  # row (n, 0, b) of dh_part and dpg; gate g is g * B rows further

    # Every load is independent of the others: all are in flight at once. The per-call tensors (pre, states,
    # dy) wait for the table load (their address), so they come last: the GEMM's partials and the carries
    # are requested first.
    # Σ_g R[g, n]ᵀ dp_g: the GEMM's per-gate partials, summed in gate order (deterministic)
    dh = _load(dh_part + hg * D + d, mask)
    if GR > 1:
        dh += _load(dh_part + (hg + B) * D + d, mask)
    if GR > 2:
        dh += _load(dh_part + (hg + 2 * B) * D + d, mask)
    if GR > 3:
        dh += _load(dh_part + (hg + 3 * B) * D + d, mask)
    d0, d1, d2, d3 = _load_sets(dcarry + e, N, mask, S)
    a0, a1, a2, a3 = _load_sets(db_acc + e, N, mask, GB)

    p0, p1, p2, p3 = _load_sets(pre + (t64 * B + bi64) * (GB * HD) + hd, HD, mask, GB)
    T1 = T + 1
    s_set = (n64 * 0 + NH * T1) * B * D  # states' sets NH·(T+1)·B·D apart, in int64 through n64
    s0, s1, s2, s3 = _load_sets(states + ((n64 * T1 + t64) * B + bi64) * D + d, s_set, mask, S)
    if HAS_LENGTHS:
        # past a row's length y = 0 (dy unused) and dh_part = 0 (the later step's dp was 0)
        live = t < tl.load(lens + bi, mask=mask, other=0)
        d0 = d0 + dh + tl.where(live, _load(dy + bt * HD + hd, mask), 0.0)
        e0, e1, e2, e3 = d0, d1, d2, d3
    else:
        d0 = d0 + dh + _load(dy + bt * HD + hd, mask)  # (dcarry + Σ_g partials) + dy

    if PREFETCH:  # step t - 1 (clamped to 0); masked lanes point at element 0
        t_prev = tl.maximum(t64 - 1, 0)
        pre_prev = pre + tl.where(mask, (t_prev * B + bi64) * (GB * HD) + hd, 0)
        for k in tl.static_range(GB):
            _prefetch(pre_prev + tl.where(mask, k * HD, 0), PREFETCH)
        for k in tl.static_range(S):
            _prefetch(states + tl.where(mask, (((k * NH + n64) * T1 + t_prev) * B + bi64) * D + d, 0), PREFETCH)
        _prefetch(dy + tl.where(mask, (bi64 * T + t_prev) * HD + hd, 0), PREFETCH)

    p0, p1, p2, p3, d0, d1, d2, d3 = cell_backward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3)
    if HAS_LENGTHS:
        d0, d1 = tl.where(live, d0, e0), tl.where(live, d1, e1)
        d2, d3 = tl.where(live, d2, e2), tl.where(live, d3, e3)
        p0, p1 = tl.where(live, p0, 0.0), tl.where(live, p1, 0.0)
        p2, p3 = tl.where(live, p2, 0.0), tl.where(live, p3, 0.0)
    start = bi < 0  # no starts (read only where HAS_RESETS)
    if HAS_RESETS:  # step t's states were constants: nothing reaches the states before it
        start = _starts(starts, lens, t, bi, mask, T, HAS_LENGTHS)
        d0, d1 = tl.where(start, 0.0, d0), tl.where(start, 0.0, d1)
        d2, d3 = tl.where(start, 0.0, d2), tl.where(start, 0.0, d3)

    _store_sets(dcarry + e, N, mask, d0, d1, d2, d3, S)
    _store_sets(db_acc + e, N, mask, a0 + p0, a1 + p1, a2 + p2, a3 + p3, GB)
    # dx of each x gate is the gradient of the slot it feeds
    _store_sets(dx + bt * (GX * HD) + hd, HD, mask, pick_slot(p0, p1, p2, p3, XS0).to(dt),
                pick_slot(p0, p1, p2, p3, XS1).to(dt), pick_slot(p0, p1, p2, p3, XS2).to(dt),
                pick_slot(p0, p1, p2, p3, XS3).to(dt), GX)
    # each R gate's slot gradient, rounded to the input dtype once: into dr[n, t, b, g, :] (per call, for dR)
    # and into the backward GEMM's operand dpg[n, g, b, :]; dR and Rᵀ·dp use the same rounded values
    r_off = ((n64 * T + t64) * B + bi64) * (GR * D) + d  # dr[n, t, b, 0, d]
    g_off = hg * D + d  # dpg[n, 0, b, d]
    g0 = pick_slot(p0, p1, p2, p3, RS0).to(dt)
    tl.store(dr + r_off, g0, mask=mask)
    tl.store(dpg + g_off, _unless(start, g0, HAS_RESETS), mask=mask)
    if GR > 1:
        g1 = pick_slot(p0, p1, p2, p3, RS1).to(dt)
        tl.store(dr + r_off + D, g1, mask=mask)
        tl.store(dpg + g_off + B * D, _unless(start, g1, HAS_RESETS), mask=mask)
    if GR > 2:
        g2 = pick_slot(p0, p1, p2, p3, RS2).to(dt)
        tl.store(dr + r_off + 2 * D, g2, mask=mask)
        tl.store(dpg + g_off + 2 * B * D, _unless(start, g2, HAS_RESETS), mask=mask)
    if GR > 3:
        g3 = pick_slot(p0, p1, p2, p3, RS3).to(dt)
        tl.store(dr + r_off + 3 * D, g3, mask=mask)
        tl.store(dpg + g_off + 3 * B * D, _unless(start, g3, HAS_RESETS), mask=mask)
# fmt: on
