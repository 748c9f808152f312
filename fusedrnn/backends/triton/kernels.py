"""Fused Triton kernels: one program per (head, batch tile) runs all T steps with that head's R on chip.

Layouts (all contiguous):
    x      [B, T, GX, NH, D]   input pre-activations (input dtype)
    R      [GR, NH, D, D]      R[g, n, i, j]: h_j -> gate g, output i
    b      [GB, NH, D]
    state0 [S, B, NH, D]       initial states (input dtype)
    resets [B, T]              bool, episode starts (HAS_RESETS only)
    y      [B, T, NH, D]       h at every step (input dtype)
    final  [S, B, NH, D]       states after the last step (input dtype)
    pre    [T, B, GB, NH, D]   float32 pre-activation slots, saved for backward (time-major)
    states [S, NH, T + 1, B, D] float32 states before step t at index t (index 0: the initial state)
Backward writes the slot gradients dgate [B, T, GB, NH, D] (input dtype: dx is a view of it, and dR is
reduced from it by weight_grad_kernel) and per-batch-tile partial sums of the bias gradients db_part
[n_batch_tiles, GB, NH, D]. In the head-major `states` a program's rows of one step are one block.

Every state and slot is computed in float32; h is rounded to the input dtype only as the MMA operand.
Heads of any D <= BLOCK_D are masked: padded lanes of R are zero, so padded h lanes stay zero.
"""

import triton
import triton.language as tl

from .cells import cell_backward, cell_forward


@triton.jit
def route_to_slot(p0, p1, p2, p3, v, SLOT: tl.constexpr):
    """Add ``v`` to pre-activation slot ``SLOT``."""
    if SLOT == 0:
        p0 = p0 + v
    elif SLOT == 1:
        p1 = p1 + v
    elif SLOT == 2:
        p2 = p2 + v
    else:
        p3 = p3 + v
    return p0, p1, p2, p3


@triton.jit
def route_gates(
    p0,
    p1,
    p2,
    p3,
    v0,
    v1,
    v2,
    v3,
    N: tl.constexpr,
    S0: tl.constexpr,
    S1: tl.constexpr,
    S2: tl.constexpr,
    S3: tl.constexpr,
):
    """Add the first N of v0..v3, in that order, to their slots S0..S3 (the rest are placeholders)."""
    p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, v0, S0)
    if N > 1:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, v1, S1)
    if N > 2:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, v2, S2)
    if N > 3:
        p0, p1, p2, p3 = route_to_slot(p0, p1, p2, p3, v3, S3)
    return p0, p1, p2, p3


@triton.jit
def pick_slot(p0, p1, p2, p3, SLOT: tl.constexpr):
    if SLOT == 0:
        v = p0
    elif SLOT == 1:
        v = p1
    elif SLOT == 2:
        v = p2
    else:
        v = p3
    return v


@triton.jit
def _load4(ptr, rows, step, stride, o_d, mask, N: tl.constexpr):
    """Up to four [BLOCK_B, BLOCK_D] float32 blocks: block k at ptr + (rows + k * step) * stride + d, for
    k < N; the others are zeros (placeholders a cell without them never reads)."""
    v0 = tl.load(ptr + rows[:, None] * stride + o_d[None, :], mask=mask, other=0.0).to(tl.float32)
    v1, v2, v3 = v0 * 0.0, v0 * 0.0, v0 * 0.0
    if N > 1:
        v1 = tl.load(ptr + (rows + step)[:, None] * stride + o_d[None, :], mask=mask, other=0.0).to(tl.float32)
    if N > 2:
        v2 = tl.load(ptr + (rows + 2 * step)[:, None] * stride + o_d[None, :], mask=mask, other=0.0).to(tl.float32)
    if N > 3:
        v3 = tl.load(ptr + (rows + 3 * step)[:, None] * stride + o_d[None, :], mask=mask, other=0.0).to(tl.float32)
    return v0, v1, v2, v3


@triton.jit
def _store4(ptr, rows, step, stride, o_d, mask, v0, v1, v2, v3, N: tl.constexpr):
    """Store blocks v0..v(N-1) as _load4 reads them, converted to the pointer's dtype."""
    dt = ptr.dtype.element_ty
    tl.store(ptr + rows[:, None] * stride + o_d[None, :], v0.to(dt), mask=mask)
    if N > 1:
        tl.store(ptr + (rows + step)[:, None] * stride + o_d[None, :], v1.to(dt), mask=mask)
    if N > 2:
        tl.store(ptr + (rows + 2 * step)[:, None] * stride + o_d[None, :], v2.to(dt), mask=mask)
    if N > 3:
        tl.store(ptr + (rows + 3 * step)[:, None] * stride + o_d[None, :], v3.to(dt), mask=mask)


@triton.jit
def _load_matrix(R, g, i_n, NH, D, o_d, TRANSPOSE: tl.constexpr):
    """R[g, i_n] as [BLOCK_D, BLOCK_D]; transposed gives [j, i] (for h @ Rᵀ), else [i, j] (for dp @ R)."""
    mask = (o_d[:, None] < D) & (o_d[None, :] < D)
    base = R + (g * NH + i_n).to(tl.int64) * D * D
    if TRANSPOSE:
        return tl.load(base + o_d[None, :] * D + o_d[:, None], mask=mask, other=0.0)
    return tl.load(base + o_d[:, None] * D + o_d[None, :], mask=mask, other=0.0)


@triton.jit
def _load_matrices(R, i_n, NH, D, o_d, GR: tl.constexpr, TRANSPOSE: tl.constexpr):
    """The GR matrices of head i_n (see _load_matrix); missing gates repeat gate 0 and are never used."""
    r0 = _load_matrix(R, 0, i_n, NH, D, o_d, TRANSPOSE)
    r1, r2, r3 = r0, r0, r0
    if GR > 1:
        r1 = _load_matrix(R, 1, i_n, NH, D, o_d, TRANSPOSE)
    if GR > 2:
        r2 = _load_matrix(R, 2, i_n, NH, D, o_d, TRANSPOSE)
    if GR > 3:
        r3 = _load_matrix(R, 3, i_n, NH, D, o_d, TRANSPOSE)
    return r0, r1, r2, r3


@triton.jit
def _starts(resets, o_b, B, T, t, lens, HAS_LENGTHS: tl.constexpr):
    """Whether step t starts an episode in each row of the tile ([BLOCK_B] bool): resets[b, t], for steps that run
    (t < T, and t < lens[b] with HAS_LENGTHS)."""
    m = (o_b < B) & (o_b * 0 + t < T)
    if HAS_LENGTHS:
        m = m & (t < lens)
    return tl.load(resets + o_b.to(tl.int64) * T + t, mask=m, other=0) != 0


@triton.jit
def _reset(resets, o_b, B, T, t, lens, HAS_LENGTHS: tl.constexpr, s0, s1, s2, s3, INIT0, INIT1, INIT2, INIT3):
    """The states before step t: the cell's initial values in rows where step t starts an episode."""
    start = _starts(resets, o_b, B, T, t, lens, HAS_LENGTHS)[:, None]
    s0, s1 = tl.where(start, INIT0, s0), tl.where(start, INIT1, s1)
    return s0, s1, tl.where(start, INIT2, s2), tl.where(start, INIT3, s3)


@triton.jit
def rnn_forward_kernel(
    x,
    R,
    b,
    state0,
    lengths,
    resets,
    y,
    final,
    pre,
    states,
    B,
    T,
    NH,
    D,
    CELL: tl.constexpr,
    GX: tl.constexpr,
    GR: tl.constexpr,
    GB: tl.constexpr,
    S: tl.constexpr,
    XS0: tl.constexpr,
    XS1: tl.constexpr,
    XS2: tl.constexpr,
    XS3: tl.constexpr,
    RS0: tl.constexpr,
    RS1: tl.constexpr,
    RS2: tl.constexpr,
    RS3: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SAVE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    FAST: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    INIT0: tl.constexpr,
    INIT1: tl.constexpr,
    INIT2: tl.constexpr,
    INIT3: tl.constexpr,
):
    """HAS_LENGTHS: row b runs lengths[b] steps; later steps keep its states and write y = 0.
    HAS_RESETS: where resets[b, t] (bool [B, T]) is set and step t runs, the states become INIT0..INIT3 (the cell's
    initial values) before step t. Step t + 1's flag is applied at the end of step t, so the saved states are those
    each step used."""
    i_n, i_b = tl.program_id(0), tl.program_id(1)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_d = tl.arange(0, BLOCK_D)
    m_bd = (o_b[:, None] < B) & (o_d[None, :] < D)
    o_b64 = o_b.to(tl.int64)
    dt = x.dtype.element_ty
    HD = NH * D

    # R[g]ᵀ of every gate, resident for the whole sequence
    r0, r1, r2, r3 = _load_matrices(R, i_n, NH, D, o_d, GR, True)
    # biases broadcast over the batch rows: b is [GB, NH, D], i.e. rows of length HD
    b0, b1, b2, b3 = _load4(b + i_n * D, o_b64 * 0, 1, HD, o_d, m_bd, GB)
    # states [S, B, NH, D]: state s of row b is row s * B + b
    s0, s1, s2, s3 = _load4(state0 + i_n * D, o_b64, B, HD, o_d, m_bd, S)
    lens = o_b * 0 + T  # every step runs (read only where HAS_LENGTHS or HAS_RESETS)
    if HAS_LENGTHS:
        lens = tl.load(lengths + o_b, mask=o_b < B, other=0)
    if HAS_RESETS:
        s0, s1, s2, s3 = _reset(resets, o_b, B, T, 0, lens, HAS_LENGTHS, s0, s1, s2, s3, INIT0, INIT1, INIT2, INIT3)

    # x [B, T, GX, NH, D]: gate g of (b, t) is row (b * T + t) * GX + g. Step t + 1's blocks are loaded
    # before step t runs.
    p_x = x + i_n * D
    x0, x1, x2, x3 = _load4(p_x, o_b64 * T * GX, 1, HD, o_d, m_bd, GX)
    # states [S, NH, T + 1, B, D]: rows of length D; head i_n's state s, step t, batch b at
    # s * ST + t * B + b
    ST = NH * (T + 1) * B
    p_st = states + i_n.to(tl.int64) * (T + 1) * B * D
    if SAVE:
        _store4(p_st, o_b64, ST, D, o_d, m_bd, s0, s1, s2, s3, S)

    for t in range(T):
        # prefetch step t + 1 (clamped to the last step; the values are then unused)
        t_next = tl.minimum(t + 1, T - 1)
        n0, n1, n2, n3 = _load4(p_x, (o_b64 * T + t_next) * GX, 1, HD, o_d, m_bd, GX)

        h = s0.to(dt)
        # slots = b + x + R·h, in that order
        p0, p1, p2, p3 = route_gates(b0, b1, b2, b3, x0, x1, x2, x3, GX, XS0, XS1, XS2, XS3)
        g0 = tl.dot(h, r0, input_precision=DOT_PRECISION)
        g1, g2, g3 = g0, g0, g0  # placeholders for gates the cell does not have
        if GR > 1:
            g1 = tl.dot(h, r1, input_precision=DOT_PRECISION)
        if GR > 2:
            g2 = tl.dot(h, r2, input_precision=DOT_PRECISION)
        if GR > 3:
            g3 = tl.dot(h, r3, input_precision=DOT_PRECISION)
        p0, p1, p2, p3 = route_gates(p0, p1, p2, p3, g0, g1, g2, g3, GR, RS0, RS1, RS2, RS3)

        if HAS_LENGTHS:
            c0, c1, c2, c3 = cell_forward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3)
            live = (t < lens)[:, None]
            s0, s1 = tl.where(live, c0, s0), tl.where(live, c1, s1)
            s2, s3 = tl.where(live, c2, s2), tl.where(live, c3, s3)
            h_out = tl.where(live, s0, 0.0)
        else:
            s0, s1, s2, s3 = cell_forward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3)
            h_out = s0

        tl.store(y + i_n * D + (o_b64 * T + t)[:, None] * HD + o_d[None, :], h_out.to(dt), mask=m_bd)
        if HAS_RESETS:
            s0, s1, s2, s3 = _reset(
                resets, o_b, B, T, t + 1, lens, HAS_LENGTHS, s0, s1, s2, s3, INIT0, INIT1, INIT2, INIT3
            )
        if SAVE:
            # pre [T, B, GB, NH, D]: slot k of (t, b) is row (t * B + b) * GB + k
            _store4(pre + i_n * D, (t * B + o_b64) * GB, 1, HD, o_d, m_bd, p0, p1, p2, p3, GB)
            _store4(p_st, (t + 1) * B + o_b64, ST, D, o_d, m_bd, s0, s1, s2, s3, S)
        x0, x1, x2, x3 = n0, n1, n2, n3

    _store4(final + i_n * D, o_b64, B, HD, o_d, m_bd, s0, s1, s2, s3, S)


@triton.jit
def _dp_dot_r(
    p0,
    p1,
    p2,
    p3,
    r0,
    r1,
    r2,
    r3,
    dt: tl.constexpr,
    GR: tl.constexpr,
    RS0: tl.constexpr,
    RS1: tl.constexpr,
    RS2: tl.constexpr,
    RS3: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Σ_g dp_{RS_g} @ R[g]: what the slot gradients add to dh_{t-1}."""
    acc = tl.dot(pick_slot(p0, p1, p2, p3, RS0).to(dt), r0, input_precision=DOT_PRECISION)
    if GR > 1:
        acc += tl.dot(pick_slot(p0, p1, p2, p3, RS1).to(dt), r1, input_precision=DOT_PRECISION)
    if GR > 2:
        acc += tl.dot(pick_slot(p0, p1, p2, p3, RS2).to(dt), r2, input_precision=DOT_PRECISION)
    if GR > 3:
        acc += tl.dot(pick_slot(p0, p1, p2, p3, RS3).to(dt), r3, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def rnn_backward_kernel(
    R,
    pre,
    states,
    lengths,
    resets,
    dy,
    dfinal,
    dgate,
    db_part,
    dstate0,
    B,
    T,
    NH,
    D,
    CELL: tl.constexpr,
    GR: tl.constexpr,
    GB: tl.constexpr,
    S: tl.constexpr,
    RS0: tl.constexpr,
    RS1: tl.constexpr,
    RS2: tl.constexpr,
    RS3: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    FAST: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_RESETS: tl.constexpr,
):
    """Walks t = T-1 .. 0: dp_t = cell backward(dh_t + dy_t, ...); dh_{t-1} = direct + Σ_g dp_{RS_g} @ R[g].

    HAS_LENGTHS: steps t >= lengths[b] only carried the states: dp = 0 there and the state gradients pass
    through unchanged (y = 0 there, so dy is not read).
    HAS_RESETS: where step t starts an episode its states were constants: nothing flows to the states before it
    (both the direct part and dp's product with R are zeroed; dgate and db keep dp)."""
    i_n, i_b = tl.program_id(0), tl.program_id(1)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_d = tl.arange(0, BLOCK_D)
    m_bd = (o_b[:, None] < B) & (o_d[None, :] < D)
    o_b64 = o_b.to(tl.int64)
    dt = R.dtype.element_ty
    HD = NH * D

    r0, r1, r2, r3 = _load_matrices(R, i_n, NH, D, o_d, GR, False)
    d0, d1, d2, d3 = _load4(dfinal + i_n * D, o_b64, B, HD, o_d, m_bd, S)
    db0, db1, db2, db3 = d0 * 0.0, d0 * 0.0, d0 * 0.0, d0 * 0.0
    lens = o_b * 0 + T  # every step runs (read only where HAS_LENGTHS or HAS_RESETS)
    if HAS_LENGTHS:
        lens = tl.load(lengths + o_b, mask=o_b < B, other=0)

    p_pre = pre + i_n * D
    ST = NH * (T + 1) * B  # layouts as in the forward kernel
    p_st = states + i_n.to(tl.int64) * (T + 1) * B * D
    p_dy = dy + i_n * D

    # prefetch of step T - 1: its slots, the states before it and dy
    t = T - 1
    q0, q1, q2, q3 = _load4(p_pre, (t * B + o_b64) * GB, 1, HD, o_d, m_bd, GB)
    u0, u1, u2, u3 = _load4(p_st, t * B + o_b64, ST, D, o_d, m_bd, S)
    g_dy = tl.load(p_dy + (o_b64 * T + t)[:, None] * HD + o_d[None, :], mask=m_bd, other=0.0).to(tl.float32)

    # the previous step's dp (zeros before the first): its dot with R comes at the top of the next step, so the
    # MMAs and this step's cell math, much of which does not depend on dh, can overlap
    dp0, dp1, dp2, dp3 = d0 * 0.0, d0 * 0.0, d0 * 0.0, d0 * 0.0
    for k in range(T):
        t = T - 1 - k
        d0 += _dp_dot_r(dp0, dp1, dp2, dp3, r0, r1, r2, r3, dt, GR, RS0, RS1, RS2, RS3, DOT_PRECISION)
        p0, p1, p2, p3 = q0, q1, q2, q3
        s0, s1, s2, s3 = u0, u1, u2, u3
        if HAS_LENGTHS:
            live = (t < lens)[:, None]
            d0 = d0 + tl.where(live, g_dy, 0.0)
            e0, e1, e2, e3 = d0, d1, d2, d3
        else:
            d0 = d0 + g_dy

        # prefetch step t - 1 (clamped to 0; the values are then unused)
        t_prev = tl.maximum(t - 1, 0)
        q0, q1, q2, q3 = _load4(p_pre, (t_prev * B + o_b64) * GB, 1, HD, o_d, m_bd, GB)
        u0, u1, u2, u3 = _load4(p_st, t_prev * B + o_b64, ST, D, o_d, m_bd, S)
        g_dy = tl.load(p_dy + (o_b64 * T + t_prev)[:, None] * HD + o_d[None, :], mask=m_bd, other=0.0)
        g_dy = g_dy.to(tl.float32)

        p0, p1, p2, p3, d0, d1, d2, d3 = cell_backward(CELL, FAST, p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3)
        if HAS_LENGTHS:
            d0, d1 = tl.where(live, d0, e0), tl.where(live, d1, e1)
            d2, d3 = tl.where(live, d2, e2), tl.where(live, d3, e3)
            m_live = m_bd & live
        else:
            m_live = m_bd
        # padded rows and lanes (and steps past a row's length) must not reach db, dx or dR
        p0, p1 = tl.where(m_live, p0, 0.0), tl.where(m_live, p1, 0.0)
        p2, p3 = tl.where(m_live, p2, 0.0), tl.where(m_live, p3, 0.0)
        db0, db1, db2, db3 = db0 + p0, db1 + p1, db2 + p2, db3 + p3
        # dgate [B, T, GB, NH, D], like x
        _store4(dgate + i_n * D, (o_b64 * T + t) * GB, 1, HD, o_d, m_bd, p0, p1, p2, p3, GB)

        if HAS_RESETS:
            start = _starts(resets, o_b, B, T, t, lens, HAS_LENGTHS)[:, None]
            d0, d1 = tl.where(start, 0.0, d0), tl.where(start, 0.0, d1)
            d2, d3 = tl.where(start, 0.0, d2), tl.where(start, 0.0, d3)
            p0, p1 = tl.where(start, 0.0, p0), tl.where(start, 0.0, p1)
            p2, p3 = tl.where(start, 0.0, p2), tl.where(start, 0.0, p3)
        dp0, dp1, dp2, dp3 = p0, p1, p2, p3

    d0 += _dp_dot_r(dp0, dp1, dp2, dp3, r0, r1, r2, r3, dt, GR, RS0, RS1, RS2, RS3, DOT_PRECISION)
    _store4(dstate0 + i_n * D, o_b64, B, HD, o_d, m_bd, d0, d1, d2, d3, S)

    # db_part[i_b, k, i_n, :] = Σ over this tile's rows of dp_k (summed over tiles on the host, in order)
    m_d = o_d < D
    p_db = db_part + (i_b * GB * NH + i_n) * D + o_d
    tl.store(p_db, tl.sum(db0, axis=0), mask=m_d)
    if GB > 1:
        tl.store(p_db + NH * D, tl.sum(db1, axis=0), mask=m_d)
    if GB > 2:
        tl.store(p_db + 2 * NH * D, tl.sum(db2, axis=0), mask=m_d)
    if GB > 3:
        tl.store(p_db + 3 * NH * D, tl.sum(db3, axis=0), mask=m_d)


@triton.jit
def weight_grad_kernel(
    dgate,
    states,
    dR_part,
    NH,
    T,
    B,
    GB,
    H_STRIDE,
    ROWS_PER_CHUNK,
    D,
    RS0: tl.constexpr,
    RS1: tl.constexpr,
    RS2: tl.constexpr,
    RS3: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """dR_part[c, g, n] = Σ over rows r = (b, t) of chunk c of dgate[b, t, RS_g, n]ᵀ h_{t-1}[b, n].

    h_{t-1} is states[0, n, t, b] (heads H_STRIDE elements apart). The reduction is long (B·T rows) and
    the output small (D x D), so it is split over chunks of rows, one program per (gate, head, chunk);
    the host sums the chunks in order.
    """
    i_g, i_n, i_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    slot = tl.where(i_g == 0, RS0, tl.where(i_g == 1, RS1, tl.where(i_g == 2, RS2, RS3)))
    o_r = tl.arange(0, BLOCK_R)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    HD = NH * D
    p_g = dgate + slot * HD + i_n * D
    p_h = states + i_n.to(tl.int64) * H_STRIDE
    acc = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    start = i_c * ROWS_PER_CHUNK
    end = tl.minimum(start + ROWS_PER_CHUNK, B * T)
    for r in range(start, end, BLOCK_R):
        rows = (r + o_r).to(tl.int64)
        m = (rows[:, None] < end) & m_d[None, :]
        g = tl.load(p_g + (rows * GB * HD)[:, None] + o_d[None, :], mask=m, other=0.0)
        h_rows = (rows % T) * B + rows // T  # (b, t) -> (t, b)
        # h rounded to the input dtype: the operand the forward's recurrent MMA used
        h = tl.load(p_h + (h_rows * D)[:, None] + o_d[None, :], mask=m, other=0.0).to(g.dtype)
        acc += tl.dot(tl.trans(g), h, input_precision=DOT_PRECISION)
    p_out = dR_part + ((i_c * tl.num_programs(0) + i_g) * NH + i_n).to(tl.int64) * D * D
    tl.store(p_out + o_d[:, None] * D + o_d[None, :], acc, mask=m_d[:, None] & m_d[None, :])
