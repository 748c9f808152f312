"""Pointwise Triton kernels of the alternating backend: one launch per step, between two batched GEMMs.

Every program handles BLOCK consecutive elements of the flat index e = (b * NH + n) * D + d < N = B·NH·D.
The cell math is the Triton backend's (``cell_forward`` / ``cell_backward``), the slot routing its
``route_to_slot`` / ``pick_slot``, the saved tensors its layouts. All arithmetic is float32.

A CUDA graph bakes in kernel arguments, so there are two kinds of buffers. Static buffers belong to the
cached plan and are kernel arguments: the GEMM operands and results, the carries between steps, the bias.
Per-call tensors (x, y, the saved slots and states, dy, dx, dr) are reached through ``table``, a small int64
tensor of addresses that the host rewrites before every replay: outputs are fresh tensors of each call,
inputs are read where they are.

Layouts (all contiguous; dt = the input dtype; per-call tensors in the order of their table):
    forward table   x [B, T, GX, NH, D] dt, y [B, T, NH, D] dt, and when SAVE (float32, the Triton
                    backend's layouts) pre [T, B, GB, NH, D] and states [S, NH, T + 1, B, D]
    backward table  pre, states (as saved), dy [B, T, NH, D] dt, dx [B, T, GX, NH, D] dt,
                    dr [GR, NH, T, B, D] f32 (the R gates' slot gradients, for dR)
    gates  [NH, B, GR·D] dt   gates[n, b, g·D + i] = (R[g, n] h[b, n])_i, written by the forward GEMM
    hbuf   [NH, B, D]    dt   h_t, the next forward GEMM's operand
    bias   [GB, NH, D]   dt
    carry  [S, B, NH, D] f32  the states between steps (forward)
    dcarry [S, B, NH, D] f32  the direct gradients of the states between steps (backward)
    dh_rec [NH, B, D]    dt   Σ_g R[g, n]ᵀ dp_g of the step after, written by the backward GEMM
    dpg    [NH, B, GR·D] dt   the R gates' slot gradients, the backward GEMM's operand
    db_acc [GB, B, NH, D] f32 Σ_t dp per element (summed over B on the host: db, no atomics)
"""

import triton
import triton.language as tl

from ..triton.cells import cell_backward, cell_forward
from ..triton.kernels import pick_slot, route_to_slot


@triton.jit
def _table_ptr(table, k: tl.constexpr, ty: tl.constexpr):
    """Entry k of the address table as a pointer to ``ty``."""
    return tl.load(table + k).to(tl.pointer_type(ty))


@triton.jit
def _load(ptr, mask):
    return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)


# fmt: off
@triton.jit(do_not_specialize=["t"])
def forward_step_kernel(
    table, gates, bias, carry, hbuf,
    t, N, B, T, NH, D,
    CELL: tl.constexpr, GX: tl.constexpr, GR: tl.constexpr, GB: tl.constexpr, S: tl.constexpr,
    XS0: tl.constexpr, XS1: tl.constexpr, XS2: tl.constexpr, XS3: tl.constexpr,
    RS0: tl.constexpr, RS1: tl.constexpr, RS2: tl.constexpr, RS3: tl.constexpr,
    SAVE: tl.constexpr, FAST: tl.constexpr, BLOCK: tl.constexpr,
):
    """Step t: slots = b + x_t + gates; new states = cell(slots, carry): carry, hbuf, y_t (and pre_t, states)."""
    dt = gates.dtype.element_ty
    x = _table_ptr(table, 0, dt)
    y = _table_ptr(table, 1, dt)

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
    bt = bi64 * T + t64  # row (b, t) of x and y
    g_off = (n64 * B + bi) * (GR * D) + d  # gates[n, b, 0 * D + d]
    zero = tl.zeros([BLOCK], dtype=tl.float32)

    # every load is independent of the others: all are in flight at once
    p0 = _load(bias + hd, mask)
    p1, p2, p3 = zero, zero, zero
    if GB > 1:
        p1 = _load(bias + HD + hd, mask)
    if GB > 2:
        p2 = _load(bias + 2 * HD + hd, mask)
    if GB > 3:
        p3 = _load(bias + 3 * HD + hd, mask)
    x_off = bt * (GX * HD) + hd
    p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(x + x_off, mask), XS0)
    if GX > 1:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(x + x_off + HD, mask), XS1)
    if GX > 2:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(x + x_off + 2 * HD, mask), XS2)
    if GX > 3:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(x + x_off + 3 * HD, mask), XS3)
    p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(gates + g_off, mask), RS0)
    if GR > 1:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(gates + g_off + D, mask), RS1)
    if GR > 2:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(gates + g_off + 2 * D, mask), RS2)
    if GR > 3:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, _load(gates + g_off + 3 * D, mask), RS3)
    s0 = _load(carry + e, mask)
    s1, s2, s3 = zero, zero, zero
    if S > 1:
        s1 = _load(carry + N + e, mask)
    if S > 2:
        s2 = _load(carry + 2 * N + e, mask)
    if S > 3:
        s3 = _load(carry + 3 * N + e, mask)

    s0, s1, s2, s3 = cell_forward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3)

    tl.store(carry + e, s0, mask=mask)
    if S > 1:
        tl.store(carry + N + e, s1, mask=mask)
    if S > 2:
        tl.store(carry + 2 * N + e, s2, mask=mask)
    if S > 3:
        tl.store(carry + 3 * N + e, s3, mask=mask)
    h = s0.to(dt)
    tl.store(hbuf + (n64 * B + bi) * D + d, h, mask=mask)
    tl.store(y + bt * HD + hd, h, mask=mask)
    if SAVE:
        states = _table_ptr(table, 2, tl.float32)
        pre = _table_ptr(table, 3, tl.float32)
        # states[s, n, t + 1, b, d]
        T1 = T + 1
        tl.store(states + ((n64 * T1 + t64 + 1) * B + bi64) * D + d, s0, mask=mask)
        if S > 1:
            tl.store(states + (((NH + n64) * T1 + t64 + 1) * B + bi64) * D + d, s1, mask=mask)
        if S > 2:
            tl.store(states + (((2 * NH + n64) * T1 + t64 + 1) * B + bi64) * D + d, s2, mask=mask)
        if S > 3:
            tl.store(states + (((3 * NH + n64) * T1 + t64 + 1) * B + bi64) * D + d, s3, mask=mask)
        # pre[t, b, k, :, :]
        pre_off = (t64 * B + bi64) * (GB * HD) + hd
        tl.store(pre + pre_off, p0, mask=mask)
        if GB > 1:
            tl.store(pre + pre_off + HD, p1, mask=mask)
        if GB > 2:
            tl.store(pre + pre_off + 2 * HD, p2, mask=mask)
        if GB > 3:
            tl.store(pre + pre_off + 3 * HD, p3, mask=mask)


@triton.jit(do_not_specialize=["t"])
def backward_step_kernel(
    table, dh_rec, dcarry, dpg, db_acc,
    t, N, B, T, NH, D,
    CELL: tl.constexpr, GX: tl.constexpr, GR: tl.constexpr, GB: tl.constexpr, S: tl.constexpr,
    XS0: tl.constexpr, XS1: tl.constexpr, XS2: tl.constexpr, XS3: tl.constexpr,
    RS0: tl.constexpr, RS1: tl.constexpr, RS2: tl.constexpr, RS3: tl.constexpr,
    FAST: tl.constexpr, BLOCK: tl.constexpr,
):
    """Step t (T-1 .. 0): dh = dcarry_h + dh_rec + dy_t; cell backward: dx_t, dr_t, dpg, db_acc, dcarry."""
    dt = dpg.dtype.element_ty
    pre = _table_ptr(table, 0, tl.float32)
    states = _table_ptr(table, 1, tl.float32)
    dy = _table_ptr(table, 2, dt)
    dx = _table_ptr(table, 3, dt)
    dr = _table_ptr(table, 4, tl.float32)

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
    hn = n64 * B + bi  # row (n, b) of dh_rec and dpg
    zero = tl.zeros([BLOCK], dtype=tl.float32)

    pre_off = (t64 * B + bi64) * (GB * HD) + hd
    p0 = _load(pre + pre_off, mask)
    p1, p2, p3 = zero, zero, zero
    if GB > 1:
        p1 = _load(pre + pre_off + HD, mask)
    if GB > 2:
        p2 = _load(pre + pre_off + 2 * HD, mask)
    if GB > 3:
        p3 = _load(pre + pre_off + 3 * HD, mask)
    T1 = T + 1
    s0 = _load(states + ((n64 * T1 + t64) * B + bi64) * D + d, mask)
    s1, s2, s3 = zero, zero, zero
    if S > 1:
        s1 = _load(states + (((NH + n64) * T1 + t64) * B + bi64) * D + d, mask)
    if S > 2:
        s2 = _load(states + (((2 * NH + n64) * T1 + t64) * B + bi64) * D + d, mask)
    if S > 3:
        s3 = _load(states + (((3 * NH + n64) * T1 + t64) * B + bi64) * D + d, mask)
    d0 = _load(dcarry + e, mask) + _load(dh_rec + hn * D + d, mask) + _load(dy + bt * HD + hd, mask)
    d1, d2, d3 = zero, zero, zero
    if S > 1:
        d1 = _load(dcarry + N + e, mask)
    if S > 2:
        d2 = _load(dcarry + 2 * N + e, mask)
    if S > 3:
        d3 = _load(dcarry + 3 * N + e, mask)
    a0 = _load(db_acc + e, mask)
    a1, a2, a3 = zero, zero, zero
    if GB > 1:
        a1 = _load(db_acc + N + e, mask)
    if GB > 2:
        a2 = _load(db_acc + 2 * N + e, mask)
    if GB > 3:
        a3 = _load(db_acc + 3 * N + e, mask)

    p0, p1, p2, p3, d0, d1, d2, d3 = cell_backward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3)

    tl.store(dcarry + e, d0, mask=mask)
    if S > 1:
        tl.store(dcarry + N + e, d1, mask=mask)
    if S > 2:
        tl.store(dcarry + 2 * N + e, d2, mask=mask)
    if S > 3:
        tl.store(dcarry + 3 * N + e, d3, mask=mask)
    tl.store(db_acc + e, a0 + p0, mask=mask)
    if GB > 1:
        tl.store(db_acc + N + e, a1 + p1, mask=mask)
    if GB > 2:
        tl.store(db_acc + 2 * N + e, a2 + p2, mask=mask)
    if GB > 3:
        tl.store(db_acc + 3 * N + e, a3 + p3, mask=mask)
    # dx of each x gate is the gradient of the slot it feeds
    x_off = bt * (GX * HD) + hd
    tl.store(dx + x_off, pick_slot(p0, p1, p2, p3, XS0).to(dt), mask=mask)
    if GX > 1:
        tl.store(dx + x_off + HD, pick_slot(p0, p1, p2, p3, XS1).to(dt), mask=mask)
    if GX > 2:
        tl.store(dx + x_off + 2 * HD, pick_slot(p0, p1, p2, p3, XS2).to(dt), mask=mask)
    if GX > 3:
        tl.store(dx + x_off + 3 * HD, pick_slot(p0, p1, p2, p3, XS3).to(dt), mask=mask)
    # each R gate's slot gradient: float32 into dr[g, n, t, b, :], input dtype into the GEMM operand dpg
    r_off = ((n64 * T + t64) * B + bi64) * D + d  # dr[0, n, t, b, d]
    g_off = hn * (GR * D) + d
    g0 = pick_slot(p0, p1, p2, p3, RS0)
    tl.store(dr + r_off, g0, mask=mask)
    tl.store(dpg + g_off, g0.to(dt), mask=mask)
    if GR > 1:
        g1 = pick_slot(p0, p1, p2, p3, RS1)
        tl.store(dr + (((1 * NH + n64) * T + t64) * B + bi64) * D + d, g1, mask=mask)
        tl.store(dpg + g_off + D, g1.to(dt), mask=mask)
    if GR > 2:
        g2 = pick_slot(p0, p1, p2, p3, RS2)
        tl.store(dr + (((2 * NH + n64) * T + t64) * B + bi64) * D + d, g2, mask=mask)
        tl.store(dpg + g_off + 2 * D, g2.to(dt), mask=mask)
    if GR > 3:
        g3 = pick_slot(p0, p1, p2, p3, RS3)
        tl.store(dr + (((3 * NH + n64) * T + t64) * B + bi64) * D + d, g3, mask=mask)
        tl.store(dpg + g_off + 3 * D, g3.to(dt), mask=mask)
# fmt: on


# fmt: off
@triton.jit
def weight_grad_kernel(
    dr, states, dR_part, NH, TB, H_STRIDE, ROWS_PER_CHUNK, D, TILES_J,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dR_part[c, g, n, i, j] = Σ over rows r of chunk c of dr[g, n, r, i] h_prev[n, r, j], rows r = (t, b).

    The Triton backend's reduction with the D x D output tiled (BLOCK_M x BLOCK_N per program), for any D:
    one program per (output tile, gate·head, chunk of rows); the host sums the chunks in order.
    dr [GR, NH, T·B, D] and h_prev = states[0, n, :T] ([T·B, D] per head, heads H_STRIDE apart) are
    contiguous row blocks.
    """
    i_tile, i_gn, i_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n = i_gn % NH
    o_i = (i_tile // TILES_J) * BLOCK_M + tl.arange(0, BLOCK_M)
    o_j = (i_tile % TILES_J) * BLOCK_N + tl.arange(0, BLOCK_N)
    o_r = tl.arange(0, BLOCK_R)
    m_i = o_i < D
    m_j = o_j < D
    p_dr = dr + i_gn.to(tl.int64) * TB * D
    p_h = states + i_n.to(tl.int64) * H_STRIDE
    start = i_c.to(tl.int64) * ROWS_PER_CHUNK
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, ROWS_PER_CHUNK, BLOCK_R):
        rows = start + k + o_r
        m_r = rows < TB
        g = tl.load(p_dr + rows[:, None] * D + o_i[None, :], mask=m_r[:, None] & m_i[None, :], other=0.0)
        h = tl.load(p_h + rows[:, None] * D + o_j[None, :], mask=m_r[:, None] & m_j[None, :], other=0.0)
        acc += tl.dot(tl.trans(g), h, input_precision=DOT_PRECISION)
    p_out = dR_part + (i_c.to(tl.int64) * tl.num_programs(1) + i_gn) * D * D
    tl.store(p_out + o_i[:, None] * D + o_j[None, :], acc, mask=m_i[:, None] & m_j[None, :])
# fmt: on
