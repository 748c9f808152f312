"""Each cell's pointwise math for the Triton kernels: one forward and one backward helper per cell.

Helpers work on float32 register blocks [BLOCK_B, BLOCK_D]. Forward: pre-activation slots p0..p3 (one per
bias gate, see ``Cell.x_slots`` / ``Cell.r_slots``) and the previous states s0..s3 (s0 = h) give the new
states. Backward: the same slots, the previous states and the gradients of the new states give the
slot gradients and the direct gradients of the previous states (the kernel adds Rᵀ·dp to dh). Slots and
states a cell does not have are passed through untouched and removed by the compiler.

FAST (16-bit inputs on a GPU) computes σ and tanh with the hardware's tanh.approx.f32 (one instruction
instead of an exponential and an IEEE division) and exp2 / log2 / division with ex2 / lg2 / div .approx.ftz,
with errors below the inputs' own rounding.

Adding a cell: write its two helpers here, give it an id in ``CELL_IDS``, add a branch to
``cell_forward`` and ``cell_backward``.
"""

import triton
import triton.language as tl

CELL_IDS = {"lstm": 0, "gru": 1, "elman": 2, "slstm": 3}


@triton.jit
def _tanh_approx(v):
    # One MUFU instruction (sm_75+), max relative error 2^-10.99: below bfloat16's and float16's rounding.
    return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [v], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _div(a, b, FAST: tl.constexpr):
    if FAST:
        # div.approx.ftz.f32: max 2 ulp error for |b| in [2^-126, 2^126] (here b = n' >= 1); .ftz spares the
        # denormal scaling ptxas wraps around the non-ftz form
        return tl.inline_asm_elementwise(
            "div.approx.ftz.f32 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.float32, is_pure=True, pack=1
        )
    return a / b


@triton.jit
def _sigmoid(v, FAST: tl.constexpr):
    if FAST:
        return 0.5 * _tanh_approx(0.5 * v) + 0.5
    return 1.0 / (1.0 + tl.exp(-v))


@triton.jit
def _tanh(v, FAST: tl.constexpr):
    if FAST:
        return _tanh_approx(v)
    # 2 σ(2v) − 1: exact to float32 rounding in absolute terms, and saturates without overflow.
    return 2.0 * _sigmoid(2.0 * v, False) - 1.0


@triton.jit
def _exp2(v, FAST: tl.constexpr):
    if FAST:
        # ex2.approx.ftz.f32: one MUFU instruction, relative error ~2^-22
        return tl.inline_asm_elementwise(
            "ex2.approx.ftz.f32 $0, $1;", "=r,r", [v], dtype=tl.float32, is_pure=True, pack=1
        )
    return tl.exp2(v)


@triton.jit
def _log2(v, FAST: tl.constexpr):
    if FAST:
        return tl.inline_asm_elementwise(
            "lg2.approx.ftz.f32 $0, $1;", "=r,r", [v], dtype=tl.float32, is_pure=True, pack=1
        )
    return tl.log2(v)


# --- LSTM: slots (i, f, z, o), states (h, c) ---------------------------------------------------------


@triton.jit
def lstm_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST: tl.constexpr):
    c = _sigmoid(p1, FAST) * s1 + _sigmoid(p0, FAST) * _tanh(p2, FAST)
    return _sigmoid(p3, FAST) * _tanh(c, FAST), c, s2, s3


@triton.jit
def lstm_backward(p0, p1, p2, p3, s0, s1, s2, s3, dh, dc, ds2, ds3, FAST: tl.constexpr):
    i, f, z, o = _sigmoid(p0, FAST), _sigmoid(p1, FAST), _tanh(p2, FAST), _sigmoid(p3, FAST)
    tc = _tanh(f * s1 + i * z, FAST)
    dc_total = dc + dh * o * (1.0 - tc * tc)
    dp0 = dc_total * z * i * (1.0 - i)
    dp1 = dc_total * s1 * f * (1.0 - f)
    dp2 = dc_total * i * (1.0 - z * z)
    dp3 = dh * tc * o * (1.0 - o)
    return dp0, dp1, dp2, dp3, dh * 0.0, dc_total * f, ds2, ds3


# --- GRU: slots (r, z, n_in, n_hidden), state h --------------------------------------------------------


@triton.jit
def gru_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST: tl.constexpr):
    r, u = _sigmoid(p0, FAST), _sigmoid(p1, FAST)
    n = _tanh(p2 + r * p3, FAST)
    return (1.0 - u) * n + u * s0, s1, s2, s3


@triton.jit
def gru_backward(p0, p1, p2, p3, s0, s1, s2, s3, dh, ds1, ds2, ds3, FAST: tl.constexpr):
    r, u = _sigmoid(p0, FAST), _sigmoid(p1, FAST)
    n = _tanh(p2 + r * p3, FAST)
    dn_pre = dh * (1.0 - u) * (1.0 - n * n)
    dp0 = dn_pre * p3 * r * (1.0 - r)
    dp1 = dh * (s0 - n) * u * (1.0 - u)
    return dp0, dp1, dn_pre, dn_pre * r, dh * u, ds1, ds2, ds3


# --- Elman: slot z, state h -----------------------------------------------------------------------------


@triton.jit
def elman_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST: tl.constexpr):
    return _tanh(p0, FAST), s1, s2, s3


@triton.jit
def elman_backward(p0, p1, p2, p3, s0, s1, s2, s3, dh, ds1, ds2, ds3, FAST: tl.constexpr):
    h = _tanh(p0, FAST)
    return dh * (1.0 - h * h), p1, p2, p3, dh * 0.0, ds1, ds2, ds3


# --- sLSTM: slots (i, f, z, o), states (h, c, n, m) ------------------------------------------------------


LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _slstm_gates(p0, p1, s2, s3, FAST: tl.constexpr):
    # m' = i~ on a fresh state (n == 0) or where i~ >= lfm = log σ(f~) + m, else lfm. Then one of
    # i = exp(i~ - m'), f = exp(lfm - m') is exp(0) = 1 and the other exp(∓(i~ - lfm)): one exp, not two.
    # In log2 units (·log2 e) exp2 / log2 need no scaling on the path to h; d (only its sign matters to the
    # backward) stays in them, m' is natural.
    i2 = p0 * LOG2E
    f2 = p1 * LOG2E
    k = tl.minimum(f2, 0.0) + s3 * LOG2E  # lfm in log2 units: k - log2(1 + 2^-|f2|)
    lg = _log2(1.0 + _exp2(-tl.abs(f2), FAST), FAST)
    d = (i2 - k) + lg
    fresh = s2 == 0.0
    to_i = fresh | (d >= 0.0)
    e = _exp2(tl.where(fresh, -d, -tl.abs(d)), FAST)
    m_new = tl.where(to_i, p0, (k - lg) * LN2)
    return d, m_new, tl.where(to_i, 1.0, e), tl.where(to_i, e, 1.0)


@triton.jit
def slstm_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST: tl.constexpr):
    _, m_new, i, f = _slstm_gates(p0, p1, s2, s3, FAST)
    c_new = f * s1 + i * _tanh(p2, FAST)
    n_new = tl.maximum(f * s2 + i, 1.0)
    return _sigmoid(p3, FAST) * _div(c_new, n_new, FAST), c_new, n_new, m_new


@triton.jit
def slstm_backward(p0, p1, p2, p3, s0, s1, s2, s3, dh, dc, dn, dm, FAST: tl.constexpr):
    d, m_new, i, f = _slstm_gates(p0, p1, s2, s3, FAST)
    z = _tanh(p2, FAST)
    o = _sigmoid(p3, FAST)
    c_new = f * s1 + i * z
    q = f * s2 + i
    n_new = tl.maximum(q, 1.0)
    inv_n = _div(1.0, n_new, FAST)
    dc_total = dc + dh * o * inv_n
    # n' = max(q, 1): the gradient passes where q >= 1, as torch.clamp(q, min=1) defines it.
    dq = tl.where(q >= 1.0, dn - dh * o * c_new * inv_n * inv_n, 0.0)
    di = dc_total * z + dq
    df = dc_total * s1 + dq * s2
    dp2 = dc_total * i * (1.0 - z * z)
    dp3 = dh * (c_new * inv_n) * o * (1.0 - o)
    dm_new = dm - di * i - df * f
    # m' = i~ on fresh states (n == 0), else max(i~, lfm): ties (d == 0) split evenly, as torch.maximum does.
    to_i = tl.where((s2 == 0.0) | (d > 0.0), 1.0, tl.where(d == 0.0, 0.5, 0.0))
    dp0 = di * i + dm_new * to_i
    d_log_f_plus_m = df * f + dm_new * (1.0 - to_i)
    dp1 = d_log_f_plus_m * (1.0 - _sigmoid(p1, FAST))
    return dp0, dp1, dp2, dp3, dh * 0.0, dc_total * f, dq * f, d_log_f_plus_m


# --- dispatch on the cell id (a compile-time constant) ----------------------------------------------------


@triton.jit
def cell_forward(CELL: tl.constexpr, FAST: tl.constexpr, p0, p1, p2, p3, s0, s1, s2, s3):
    if CELL == 0:
        s0, s1, s2, s3 = lstm_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST)
    elif CELL == 1:
        s0, s1, s2, s3 = gru_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST)
    elif CELL == 2:
        s0, s1, s2, s3 = elman_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST)
    else:
        s0, s1, s2, s3 = slstm_forward(p0, p1, p2, p3, s0, s1, s2, s3, FAST)
    return s0, s1, s2, s3


@triton.jit
def cell_backward(CELL: tl.constexpr, FAST: tl.constexpr, p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3):
    if CELL == 0:
        p0, p1, p2, p3, s0, s1, s2, s3 = lstm_backward(p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3, FAST)
    elif CELL == 1:
        p0, p1, p2, p3, s0, s1, s2, s3 = gru_backward(p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3, FAST)
    elif CELL == 2:
        p0, p1, p2, p3, s0, s1, s2, s3 = elman_backward(p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3, FAST)
    else:
        p0, p1, p2, p3, s0, s1, s2, s3 = slstm_backward(p0, p1, p2, p3, s0, s1, s2, s3, d0, d1, d2, d3, FAST)
    return p0, p1, p2, p3, s0, s1, s2, s3
