// fusedrnn persistent fused RNN kernels, compiled at run time by NVRTC (no headers, no host compiler).
//
// One CTA per (head, tile of ROWS = 8 or 16 batch rows) runs the whole sequence. Warp w owns hidden units
// [8·NT·w, 8·NT·(w+1)) of every gate, so each thread holds all gates of its (row, unit) elements in the
// accumulator layout of mma.sync m16n8kK (rows gq and gq + 8, units 2·tq and 2·tq + 1 of each 8-unit tile,
// gq = lane / 4, tq = lane % 4) and runs the cell's pointwise math without any exchange. That head's R
// lives in registers as MMA B fragments for the whole sequence.
//
// Forward, per step: A = h_{t-1} (16 × D, input dtype, shared memory, double-buffered) times the register
// fragments of R; + x_t (prefetched STAGES - 1 steps ahead by cp.async into a shared-memory ring) + b;
// cell; h_t into the other h buffer, y (and, when saving, the slots and states) to global memory; one
// __syncthreads. Backward, per step (t descending): the cell's backward from the saved slots and states
// (prefetched the same way) gives the slot gradients dp; those of R's gates go to shared memory (input
// dtype, double-buffered); one __syncthreads; dh_{t-1} += dp · R (K = GR·D) with R in registers again,
// in the same accumulator layout as the forward's units.
//
// Element types: bf16 / f16 with mma m16n8k16 (fp32 accumulation); f32 with three TF32 mma m16n8k8 per
// product (a = a_big + a_small: a_small·b_big + a_big·b_small + a_big·b_big), about fp32's accuracy.
//
// Layouts as the Triton backend's (see fusedrnn/backends/triton/kernels.py):
//   x [B, T, GX, NH, D], R [GR, NH, D, D] (R[g, n, i, j]: h_j -> gate g, unit i), b [GB, NH, D],
//   state0 / final [S, B, NH, D], y [B, T, NH, D], pre [T, B, GB, NH, D] f32, states [S, NH, T + 1, B, D] f32,
//   dgate [B, T, GB, NH, D], db_part [tiles · 8, GB, NH, D] f32, dstate0 [S, B, NH, D] f32.

typedef unsigned int u32;
typedef unsigned short u16;
typedef long long i64;

namespace frnn {

struct __align__(8) f2 {
  float x, y;
};

// ---------------------------------------------------------------------------------------------------------
// Element types: storage, MMA shape, conversions.

struct BF16 {
  typedef u16 T;
  static constexpr int KSTEP = 16, PAIR = 2;
  static __device__ __forceinline__ float to_float(u16 v) { return __uint_as_float(((u32)v) << 16); }
  static __device__ __forceinline__ u32 pack(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
};

struct F16 {
  typedef u16 T;
  static constexpr int KSTEP = 16, PAIR = 2;
  static __device__ __forceinline__ float to_float(u16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
  }
  static __device__ __forceinline__ u32 pack(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
};

struct F32 {
  typedef float T;
  static constexpr int KSTEP = 8, PAIR = 1;
};

// Two adjacent elements p[0], p[1] as floats, and back.
template <class E>
__device__ __forceinline__ f2 load2(const typename E::T* p) {
  u32 w = *(const u32*)p;
  return f2{E::to_float((u16)(w & 0xffffu)), E::to_float((u16)(w >> 16))};
}
template <>
__device__ __forceinline__ f2 load2<F32>(const float* p) {
  return *(const f2*)p;
}
template <class E>
__device__ __forceinline__ void store2(typename E::T* p, float a, float b) {
  *(u32*)p = E::pack(a, b);
}
template <>
__device__ __forceinline__ void store2<F32>(float* p, float a, float b) {
  *(f2*)p = f2{a, b};
}
__device__ __forceinline__ void store2f(float* p, float a, float b) { *(f2*)p = f2{a, b}; }
__device__ __forceinline__ f2 load2f(const float* p) { return *(const f2*)p; }

// The bits of PAIR elements: lo at p[0], hi at p[step] (16-bit types); one float for F32.
template <class E>
__device__ __forceinline__ u32 pair_bits(const typename E::T* p, i64 step) {
  return (u32)p[0] | ((u32)p[step] << 16);
}
template <>
__device__ __forceinline__ u32 pair_bits<F32>(const float* p, i64) {
  return __float_as_uint(p[0]);
}

// ---------------------------------------------------------------------------------------------------------
// Warp-level MMA: c (16 × 8, f32) += a (16 × KSTEP) · b (KSTEP × 8).
//   a[i]: row gq + 8·(i & 1), columns k0 + PAIR·tq + (i >> 1)·KSTEP/2 (+1 for 16-bit)
//   b[i]: rows k0 + PAIR·tq + i·KSTEP/2 (+1 for 16-bit), column gq
//   c[e]: row gq + 8·(e >> 1), column 2·tq + (e & 1)

template <class E>
__device__ __forceinline__ void mma(float* c, const u32* a, const u32* b);

template <>
__device__ __forceinline__ void mma<BF16>(float* c, const u32* a, const u32* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void mma<F16>(float* c, const u32* a, const u32* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_tf32(float* c, const u32* a, const u32* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ u32 to_tf32(float v) {
  u32 r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

// f32: three TF32 products, small terms first; the dropped a_small·b_small is ~2^-22 relative.
template <>
__device__ __forceinline__ void mma<F32>(float* c, const u32* a, const u32* b) {
  u32 ab[4], as[4], bb[2], bs[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float v = __uint_as_float(a[i]);
    ab[i] = to_tf32(v);
    as[i] = to_tf32(v - __uint_as_float(ab[i]));
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float v = __uint_as_float(b[i]);
    bb[i] = to_tf32(v);
    bs[i] = to_tf32(v - __uint_as_float(bb[i]));
  }
  mma_tf32(c, as, bb);
  mma_tf32(c, ab, bs);
  mma_tf32(c, ab, bb);
}

// A fragment of a row-major ROWS × K tile in shared memory (LD elements per row), columns k0 ...; with ROWS = 8
// the MMA's rows 8..15 are zeros (not loaded).
template <class E, int ROWS>
__device__ __forceinline__ void load_a(const typename E::T* s, int LD, int k0, int gq, int tq, u32* a) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
    a[i] = (i & 1) && ROWS == 8 ? 0u
                                : *(const u32*)(s + (gq + 8 * (i & 1)) * LD + k0 + E::PAIR * tq + (i >> 1) * (E::KSTEP / 2));
}

// ---------------------------------------------------------------------------------------------------------
// Asynchronous global -> shared copies (sm_80+).

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}

// 16 bytes to shared-memory address dst; a row outside the batch is zero-filled (src-size 0, nothing read).
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// One step's tile of SETS x ROWS rows x ROW_BYTES, copied each step from global memory (rows and sets at fixed
// strides from a base that moves by a fixed amount per step) into a stage of the shared-memory ring (sets
// DST_SET and rows DST_ROW bytes apart), in 16-byte chunks. Thread i takes chunk column i % CH of row
// i / CH, then the rows RS = NTH / CH further on (NTH is a multiple of CH: 4·D/NT threads, D·b/16 chunks a
// row): pass j's chunk is the first one's plus compile-time multiples of the two strides, so a thread keeps
// one offset, one destination and its first row, whatever the tile's size.
template <int SETS, int ROWS, int ROW_BYTES, int DST_SET, int DST_ROW, int NTH>
struct TileCopy {
  static constexpr int CH = ROW_BYTES / 16, RS = NTH / CH, PASSES = (SETS * ROWS + RS - 1) / RS;
  static_assert(NTH % CH == 0 && (RS % ROWS == 0 || ROWS % RS == 0), "the tile does not split evenly over the threads");
  i64 off0, set_stride, row_stride;
  u32 dst0;
  int set0, row0, valid_rows;
  __device__ __forceinline__ void init(i64 set_stride_, i64 row_stride_, int valid_rows_) {
    set_stride = set_stride_;
    row_stride = row_stride_;
    valid_rows = valid_rows_;
    int k = threadIdx.x % CH, q = threadIdx.x / CH;  // q < RS
    set0 = q / ROWS;
    row0 = q % ROWS;
    off0 = set0 * set_stride + row0 * row_stride + 16 * k;
    dst0 = set0 * DST_SET + row0 * DST_ROW + 16 * k;
  }
  __device__ __forceinline__ void issue(const unsigned char* base, u32 stage) const {
#pragma unroll
    for (int j = 0; j < PASSES; ++j) {
      // pass j: RS·j rows further: whole sets when RS >= ROWS, else within one set (RS divides ROWS, row0 < RS)
      const int dset = RS >= ROWS ? j * (RS / ROWS) : (j * RS) / ROWS, drow = RS >= ROWS ? 0 : (j * RS) % ROWS;
      if (SETS * ROWS % RS == 0 || set0 + dset < SETS) {
        bool ok = row0 + drow < valid_rows;
        cp_async16(stage + dst0 + dset * DST_SET + drow * DST_ROW,
                   ok ? base + off0 + dset * set_stride + drow * row_stride : base, ok);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------------------
// Pointwise math. FAST (16-bit inputs): σ and tanh from tanh.approx.f32 (max relative error 2^-10.99,
// below the inputs' rounding) and div.approx; otherwise IEEE-accurate float32.

__device__ __forceinline__ float tanh_approx(float v) {
  float r;
  asm("tanh.approx.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}
template <bool FAST>
__device__ __forceinline__ float sigm(float v) {
  return FAST ? 0.5f * tanh_approx(0.5f * v) + 0.5f : 1.0f / (1.0f + expf(-v));
}
template <bool FAST>
__device__ __forceinline__ float tanh_(float v) {
  return FAST ? tanh_approx(v) : 2.0f * sigm<false>(2.0f * v) - 1.0f;
}
// ex2 / lg2 / rcp .approx.ftz (relative error ~2^-22, far below 16-bit rounding): one MUFU instruction each;
// without .ftz, ptxas wraps each in denormal scaling, three more dependent instructions on the step's path.
__device__ __forceinline__ float ex2_approx(float v) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}
__device__ __forceinline__ float lg2_approx(float v) {
  float r;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}
__device__ __forceinline__ float rcp_approx(float v) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;
template <bool FAST>
__device__ __forceinline__ float rcp_(float v) {
  return FAST ? rcp_approx(v) : 1.0f / v;
}

// Each cell: its gate / slot / state counts and slot routing, forward (slots p, states s -> new s in place)
// and backward (p: slots in, slot gradients out; s: states before the step; d: gradients of the new states
// in, direct gradients of the old states out; the kernel adds R·dp to d[0]).

struct Lstm {  // slots (i, f, z, o), states (h, c)
  static constexpr int GX = 4, GR = 4, GB = 4, S = 2;
  static __device__ constexpr int xs(int g) { return g; }
  static __device__ constexpr int rs(int g) { return g; }
  template <bool FAST>
  static __device__ __forceinline__ void forward(const float* p, float* s) {
    float c = sigm<FAST>(p[1]) * s[1] + sigm<FAST>(p[0]) * tanh_<FAST>(p[2]);
    s[0] = sigm<FAST>(p[3]) * tanh_<FAST>(c);
    s[1] = c;
  }
  template <bool FAST>
  static __device__ __forceinline__ void backward(float* p, const float* s, float* d) {
    float i = sigm<FAST>(p[0]), f = sigm<FAST>(p[1]), z = tanh_<FAST>(p[2]), o = sigm<FAST>(p[3]);
    float tc = tanh_<FAST>(f * s[1] + i * z);
    float dh = d[0];
    float dc = d[1] + dh * o * (1.0f - tc * tc);
    p[0] = dc * z * i * (1.0f - i);
    p[1] = dc * s[1] * f * (1.0f - f);
    p[2] = dc * i * (1.0f - z * z);
    p[3] = dh * tc * o * (1.0f - o);
    d[0] = 0.0f;
    d[1] = dc * f;
  }
};

struct Gru {  // slots (r, z, n_in, n_hidden), state h
  static constexpr int GX = 3, GR = 3, GB = 4, S = 1;
  static __device__ constexpr int xs(int g) { return g; }
  static __device__ constexpr int rs(int g) { return g == 2 ? 3 : g; }
  template <bool FAST>
  static __device__ __forceinline__ void forward(const float* p, float* s) {
    float r = sigm<FAST>(p[0]), u = sigm<FAST>(p[1]);
    float n = tanh_<FAST>(p[2] + r * p[3]);
    s[0] = (1.0f - u) * n + u * s[0];
  }
  template <bool FAST>
  static __device__ __forceinline__ void backward(float* p, const float* s, float* d) {
    float r = sigm<FAST>(p[0]), u = sigm<FAST>(p[1]);
    float n = tanh_<FAST>(p[2] + r * p[3]);
    float dh = d[0];
    float dn = dh * (1.0f - u) * (1.0f - n * n);
    float p3 = p[3];
    p[0] = dn * p3 * r * (1.0f - r);
    p[1] = dh * (s[0] - n) * u * (1.0f - u);
    p[2] = dn;
    p[3] = dn * r;
    d[0] = dh * u;
  }
};

struct Elman {  // slot z, state h
  static constexpr int GX = 1, GR = 1, GB = 1, S = 1;
  static __device__ constexpr int xs(int) { return 0; }
  static __device__ constexpr int rs(int) { return 0; }
  template <bool FAST>
  static __device__ __forceinline__ void forward(const float* p, float* s) {
    s[0] = tanh_<FAST>(p[0]);
  }
  template <bool FAST>
  static __device__ __forceinline__ void backward(float* p, const float*, float* d) {
    float h = tanh_<FAST>(p[0]);
    p[0] = d[0] * (1.0f - h * h);
    d[0] = 0.0f;
  }
};

struct Slstm {  // slots (i, f, z, o), states (h, c, n, m)
  static constexpr int GX = 4, GR = 4, GB = 4, S = 4;
  static __device__ constexpr int xs(int g) { return g; }
  static __device__ constexpr int rs(int g) { return g; }
  // The stabilised gates: m' = ĩ on a fresh state (n == 0) or where ĩ >= lfm = log σ(f̃) + m, else lfm; then
  // one of i = exp(ĩ - m'), f = exp(lfm - m') is exp(0) = 1 and the other exp(∓(ĩ - lfm)): one exp, not two.
  // Computed in log2 units (·log2 e), where ex2 / lg2 need no scaling on the path from the MMA to h; d (the
  // sign of ĩ - lfm is all the backward needs of it) stays in those units, m' is natural.
  template <bool FAST>
  static __device__ __forceinline__ void gates(const float* p, const float* s, float& i, float& f, float& m,
                                               float& d, bool& to_i) {
    float i2 = p[0] * LOG2E, f2 = p[1] * LOG2E;
    float k = fminf(f2, 0.0f) + s[3] * LOG2E;  // lfm in log2 units: k - lg2(1 + 2^-|f2|)
    float lg = FAST ? lg2_approx(1.0f + ex2_approx(-fabsf(f2))) : log1pf(exp2f(-fabsf(f2))) * LOG2E;
    d = (i2 - k) + lg;
    bool fresh = s[2] == 0.0f;
    to_i = fresh || d >= 0.0f;
    float a = to_i ? -d : d;  // -|d|, or -d on a fresh state
    float e = FAST ? ex2_approx(a) : exp2f(a);
    i = to_i ? 1.0f : e;
    f = to_i ? e : 1.0f;
    m = (to_i ? i2 : k - lg) * LN2;
  }
  template <bool FAST>
  static __device__ __forceinline__ void forward(const float* p, float* s) {
    float i, f, m, d;
    bool to_i;
    gates<FAST>(p, s, i, f, m, d, to_i);
    float c = f * s[1] + i * tanh_<FAST>(p[2]);
    float n = fmaxf(f * s[2] + i, 1.0f);
    s[0] = sigm<FAST>(p[3]) * c * rcp_<FAST>(n);
    s[1] = c;
    s[2] = n;
    s[3] = m;
  }
  template <bool FAST>
  static __device__ __forceinline__ void backward(float* p, const float* s, float* d) {
    float i, f, m, dl;
    bool to_i;
    gates<FAST>(p, s, i, f, m, dl, to_i);
    float z = tanh_<FAST>(p[2]), o = sigm<FAST>(p[3]);
    float c = f * s[1] + i * z;
    float q = f * s[2] + i;
    float inv_n = rcp_<FAST>(fmaxf(q, 1.0f));
    float dh = d[0];
    float dc = d[1] + dh * o * inv_n;
    // n' = max(q, 1): the gradient passes where q >= 1, as torch.clamp(q, min=1) defines it
    float dq = q >= 1.0f ? d[2] - dh * o * c * inv_n * inv_n : 0.0f;
    float di = dc * z + dq, df = dc * s[1] + dq * s[2];
    float dm = d[3] - di * i - df * f;
    // m' = ĩ on fresh states, else max(ĩ, lfm): ties (ĩ - lfm == 0) split evenly, as torch.maximum does
    float wi = s[2] == 0.0f || dl > 0.0f ? 1.0f : (dl == 0.0f ? 0.5f : 0.0f);
    float dlfm = df * f + dm * (1.0f - wi);
    float p1 = p[1];
    p[0] = di * i + dm * wi;
    p[1] = dlfm * (1.0f - sigm<FAST>(p1));
    p[2] = dc * i * (1.0f - z * z);
    p[3] = dh * (c * inv_n) * o * (1.0f - o);
    d[0] = 0.0f;
    d[1] = dc * f;
    d[2] = dq * f;
    d[3] = dlfm;
  }
};

template <int ID> struct CellOf;
template <> struct CellOf<0> { typedef Lstm type; };
template <> struct CellOf<1> { typedef Gru type; };
template <> struct CellOf<2> { typedef Elman type; };
template <> struct CellOf<3> { typedef Slstm type; };

template <class E>
struct Fast {
  static constexpr bool value = true;
};
template <>
struct Fast<F32> {
  static constexpr bool value = false;
};

}  // namespace frnn

using namespace frnn;

// Shared-memory layout of both kernels, in bytes; the host computes the same (launch.py: smem_bytes) and
// passes it, and a kernel given less than it needs traps instead of corrupting memory.
template <int CELL, class E, int D, int STAGES, int ROWS>
struct Layout {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T T;
  static constexpr int PAD = 16 / (int)sizeof(T);  // one 16-byte chunk per row: rows start on distinct banks
  // forward: two h buffers [16][LDH] and STAGES x tiles [16][LDX]
  static constexpr int LDH = D + PAD, LDX = C::GX * D + PAD;
  static constexpr int FW_H = ROWS * LDH * (int)sizeof(T), FW_X = ROWS * LDX * (int)sizeof(T);
  static constexpr int FW_BYTES = 2 * FW_H + STAGES * FW_X;
  // backward: two dp buffers [16][LDP] (input dtype) and STAGES of (slots [GB][16][LDF], states [S][16][LDF]
  // f32, dy [16][LDH] input dtype)
  static constexpr int LDP = C::GR * D + PAD, LDF = D + 4;
  static constexpr int BW_P = ROWS * LDP * (int)sizeof(T);
  static constexpr int BW_SLOTS = C::GB * ROWS * LDF * 4, BW_STATES = C::S * ROWS * LDF * 4, BW_DY = FW_H;
  static constexpr int BW_STAGE = BW_SLOTS + BW_STATES + BW_DY;
  static constexpr int BW_BYTES = 2 * BW_P + STAGES * BW_STAGE;
};


template <int CELL, class E, int D, int NT, int STAGES, int ROWS>
__global__ void __launch_bounds__(32 * (D / (8 * NT)), 1)
    rnn_forward(const typename E::T* __restrict__ x, const typename E::T* __restrict__ R,
                const typename E::T* __restrict__ bias, const typename E::T* __restrict__ state0,
                const int* __restrict__ lengths, typename E::T* __restrict__ y, typename E::T* __restrict__ final_,
                float* __restrict__ pre, float* __restrict__ states, i64 B, i64 T, i64 NH, i64 save,
                i64 smem_bytes) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  typedef Layout<CELL, E, D, STAGES, ROWS> L;
  constexpr int HR = ROWS / 8;  // row halves per thread: rows gq (and gq + 8 when ROWS = 16)
  constexpr bool FAST = Fast<E>::value;
  constexpr int W = D / (8 * NT), NTH = 32 * W, KT = D / E::KSTEP, SZ = (int)sizeof(ET);
  static_assert(D % 16 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::FW_BYTES) __trap();
  ET* hbuf = (ET*)smem;
  const unsigned char* xring = smem + 2 * L::FW_H;
  const u32 xring_addr = smem_addr(xring);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const i64 n = blockIdx.x, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);
  const bool has_lengths = lengths != nullptr;

  // R as B fragments: B[k = j][unit] = R[g, n, unit, j]
  u32 rf[C::GR][NT][KT][2];
#pragma unroll
  for (int g = 0; g < C::GR; ++g)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int kt = 0; kt < KT; ++kt)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          int unit = (warp * NT + nt) * 8 + gq;
          int k = kt * E::KSTEP + E::PAIR * tq + i * (E::KSTEP / 2);
          rf[g][nt][kt][i] = pair_bits<E>(R + ((g * NH + n) * D + unit) * D + k, 1);
        }

  // x_t: GX sets (gates, HD apart) of 16 rows (T·GX·HD apart) of D elements; the base moves GX·HD per step
  TileCopy<C::GX, ROWS, D * SZ, D * SZ, L::LDX * SZ, NTH> xcopy;
  xcopy.init(HD * SZ, T * C::GX * HD * SZ, valid_rows);
  const i64 xstep = C::GX * HD * SZ;
  const unsigned char* xnext = (const unsigned char*)(x + b0 * T * C::GX * HD + n * D);
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) {
    if (p < T) xcopy.issue(xnext, xring_addr + p * L::FW_X);
    cp_async_commit();
    xnext += xstep;
  }

  // this thread's elements: tile nt, row half hr (row gq + 8·hr), units col(nt) and col(nt) + 1. Their output
  // addresses move by a fixed amount per step.
  float bv[C::GB][NT][2];
  float st[C::S][NT][2][2];
  int len[2];
  bool row_ok[2];
  ET* yp[2];  // row half hr's unit 0 of tile 0; tile nt is 8·nt elements further
  float* pp[2];
  float* sp[2];
  const i64 pstep = B * C::GB * HD, sstep = B * D, sset = NH * (T + 1) * B * D;
#pragma unroll
  for (int hr = 0; hr < HR; ++hr) {
    i64 row = b0 + gq + 8 * hr;
    row_ok[hr] = row < B;
    len[hr] = has_lengths && row_ok[hr] ? lengths[row] : (int)T;
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    int col = (warp * NT + nt) * 8 + 2 * tq;
#pragma unroll
    for (int k = 0; k < C::GB; ++k) {
      f2 v = load2<E>(bias + k * HD + n * D + col);
      bv[k][nt][0] = v.x;
      bv[k][nt][1] = v.y;
    }
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) {
      int r = gq + 8 * hr;
      i64 row = b0 + r;
      if (nt == 0) {
        yp[hr] = y + row * T * HD + n * D + col;
        pp[hr] = pre + row * C::GB * HD + n * D + col;
        sp[hr] = states + ((n * (T + 1) + 1) * B + row) * D + col;
      }
#pragma unroll
      for (int s = 0; s < C::S; ++s) {
        f2 v = row_ok[hr] ? load2<E>(state0 + (s * B + row) * HD + n * D + col) : f2{0.0f, 0.0f};
        st[s][nt][hr][0] = v.x;
        st[s][nt][hr][1] = v.y;
        if (save && row_ok[hr]) store2f(sp[hr] + 8 * nt + s * sset - sstep, v.x, v.y);
      }
      store2<E>(hbuf + r * L::LDH + col, st[0][nt][hr][0], st[0][nt][hr][1]);
    }
  }
  cp_async_wait<STAGES - 2>();
  __syncthreads();

  int stage = 0, fill = STAGES - 1;  // t % STAGES and (t + STAGES - 1) % STAGES
  for (i64 t = 0; t < T; ++t) {
    if (t + STAGES - 1 < T) xcopy.issue(xnext, xring_addr + fill * L::FW_X);
    cp_async_commit();
    xnext += xstep;
    fill = fill + 1 == STAGES ? 0 : fill + 1;

    const ET* hc = hbuf + (t & 1) * ROWS * L::LDH;
    ET* hn = hbuf + ((t + 1) & 1) * ROWS * L::LDH;
    float acc[C::GR][NT][4];
#pragma unroll
    for (int g = 0; g < C::GR; ++g)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[g][nt][e] = 0.0f;
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      u32 a[4];
      load_a<E, ROWS>(hc, L::LDH, kt * E::KSTEP, gq, tq, a);
#pragma unroll
      for (int g = 0; g < C::GR; ++g)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma<E>(acc[g][nt], a, rf[g][nt][kt]);
    }

    const ET* xs = (const ET*)(xring + stage * L::FW_X);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      int col = (warp * NT + nt) * 8 + 2 * tq;
#pragma unroll
      for (int hr = 0; hr < HR; ++hr) {
        int r = gq + 8 * hr;
        bool live = !has_lengths || t < len[hr];
        float p[4][2];  // slots = b + x + R·h, in that order
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
          for (int c = 0; c < 2; ++c) p[k][c] = k < C::GB ? bv[k][nt][c] : 0.0f;
#pragma unroll
        for (int g = 0; g < C::GX; ++g) {
          f2 v = load2<E>(xs + r * L::LDX + g * D + col);
          p[C::xs(g)][0] += v.x;
          p[C::xs(g)][1] += v.y;
        }
#pragma unroll
        for (int g = 0; g < C::GR; ++g)
#pragma unroll
          for (int c = 0; c < 2; ++c) p[C::rs(g)][c] += acc[g][nt][2 * hr + c];
        float hout[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float pe[4] = {p[0][c], p[1][c], p[2][c], p[3][c]};
          float se[4];
#pragma unroll
          for (int s = 0; s < 4; ++s) se[s] = s < C::S ? st[s][nt][hr][c] : 0.0f;
          C::template forward<FAST>(pe, se);
          if (live) {
#pragma unroll
            for (int s = 0; s < C::S; ++s) st[s][nt][hr][c] = se[s];
          }
          hout[c] = live ? st[0][nt][hr][c] : 0.0f;
        }
        store2<E>(hn + r * L::LDH + col, st[0][nt][hr][0], st[0][nt][hr][1]);
        if (row_ok[hr]) {
          store2<E>(yp[hr] + 8 * nt, hout[0], hout[1]);
          if (save) {
#pragma unroll
            for (int k = 0; k < C::GB; ++k) store2f(pp[hr] + 8 * nt + k * HD, p[k][0], p[k][1]);
#pragma unroll
            for (int s = 0; s < C::S; ++s) store2f(sp[hr] + 8 * nt + s * sset, st[s][nt][hr][0], st[s][nt][hr][1]);
          }
        }
      }
    }
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) {
      yp[hr] += HD;
      pp[hr] += pstep;
      sp[hr] += sstep;
    }
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
  }

#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    int col = (warp * NT + nt) * 8 + 2 * tq;
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) {
      i64 row = b0 + gq + 8 * hr;
      if (row_ok[hr]) {
#pragma unroll
        for (int s = 0; s < C::S; ++s)
          store2<E>(final_ + (s * B + row) * HD + n * D + col, st[s][nt][hr][0], st[s][nt][hr][1]);
      }
    }
  }
}

template <int CELL, class E, int D, int NT, int STAGES, int ROWS>
__global__ void __launch_bounds__(32 * (D / (8 * NT)), 1)
    rnn_backward(const typename E::T* __restrict__ R, const float* __restrict__ pre,
                 const float* __restrict__ states, const int* __restrict__ lengths,
                 const typename E::T* __restrict__ dy, const typename E::T* __restrict__ dfinal,
                 typename E::T* __restrict__ dgate, float* __restrict__ db_part, float* __restrict__ dstate0, i64 B,
                 i64 T, i64 NH, i64 smem_bytes) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  typedef Layout<CELL, E, D, STAGES, ROWS> L;
  constexpr int HR = ROWS / 8;  // row halves per thread: rows gq (and gq + 8 when ROWS = 16)
  constexpr bool FAST = Fast<E>::value;
  constexpr int W = D / (8 * NT), NTH = 32 * W, KT = C::GR * D / E::KSTEP, SZ = (int)sizeof(ET);
  // independent accumulators (a shorter dependent MMA chain): 4 with one tile per warp; with NT >= 2 the tiles
  // interleave and registers are short, so one each
  constexpr int ACCS = NT > 1 ? 1 : KT >= 4 ? 4 : KT;
  static_assert(D % 16 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::BW_BYTES) __trap();
  ET* pbuf = (ET*)smem;
  const unsigned char* ring = smem + 2 * L::BW_P;
  const u32 ring_addr = smem_addr(ring);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const i64 n = blockIdx.x, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);
  const bool has_lengths = lengths != nullptr;

  // R as B fragments of dp · R: B[k = (g, i)][j] = R[g, n, i, j]
  u32 rf[KT][NT][2];
#pragma unroll
  for (int kt = 0; kt < KT; ++kt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        int j = (warp * NT + nt) * 8 + gq;
        int k = kt * E::KSTEP + E::PAIR * tq + i * (E::KSTEP / 2);
        int g = k / D, ii = k % D;
        rf[kt][nt][i] = pair_bits<E>(R + ((g * NH + n) * D + ii) * D + j, D);
      }

  // Step t's inputs, t descending: slots pre[t, b0 + r, k, n, :] (sets k HD apart, rows GB·HD apart), states
  // before it states[s, n, t, b0 + r, :] (sets s NH·(T+1)·B·D apart, rows D apart), dy[b0 + r, t, n, :] (rows
  // T·HD apart); their bases move back by B·GB·HD, B·D and HD elements per step.
  TileCopy<C::GB, ROWS, D * 4, ROWS * L::LDF * 4, L::LDF * 4, NTH> pcopy;
  TileCopy<C::S, ROWS, D * 4, ROWS * L::LDF * 4, L::LDF * 4, NTH> scopy;
  TileCopy<1, ROWS, D * SZ, 0, L::LDH * SZ, NTH> ycopy;
  pcopy.init(HD * 4, C::GB * HD * 4, valid_rows);
  scopy.init(NH * (T + 1) * B * D * 4, D * 4, valid_rows);
  ycopy.init(0, T * HD * SZ, valid_rows);
  const i64 pstep = B * C::GB * HD * 4, sstep = B * D * 4, ystep = HD * SZ;
  const unsigned char* pnext = (const unsigned char*)(pre + ((T - 1) * B + b0) * C::GB * HD + n * D);
  const unsigned char* snext = (const unsigned char*)(states + (n * (T + 1) + T - 1) * B * D + b0 * D);
  const unsigned char* ynext = (const unsigned char*)(dy + (b0 * T + T - 1) * HD + n * D);
  auto issue = [&](int stage) {
    u32 at = ring_addr + stage * L::BW_STAGE;
    pcopy.issue(pnext, at);
    scopy.issue(snext, at + L::BW_SLOTS);
    ycopy.issue(ynext, at + L::BW_SLOTS + L::BW_STATES);
  };
  auto advance = [&]() {
    pnext -= pstep;
    snext -= sstep;
    ynext -= ystep;
  };
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) {
    if (p < T) issue(p);
    cp_async_commit();
    advance();
  }

  float dv[C::S][NT][2][2];
  float db[C::GB][NT][2];
  int len[2];
  bool row_ok[2];
  ET* gp[2];  // row half hr's unit 0 of tile 0; tile nt is 8·nt elements further
  const i64 gstep = C::GB * HD;
#pragma unroll
  for (int hr = 0; hr < HR; ++hr) {
    i64 row = b0 + gq + 8 * hr;
    row_ok[hr] = row < B;
    len[hr] = has_lengths && row_ok[hr] ? lengths[row] : (int)T;
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    int col = (warp * NT + nt) * 8 + 2 * tq;
#pragma unroll
    for (int k = 0; k < C::GB; ++k) db[k][nt][0] = db[k][nt][1] = 0.0f;
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) {
      i64 row = b0 + gq + 8 * hr;
      if (nt == 0) gp[hr] = dgate + (row * T + T - 1) * C::GB * HD + n * D + col;
#pragma unroll
      for (int s = 0; s < C::S; ++s) {
        f2 v = row_ok[hr] ? load2<E>(dfinal + (s * B + row) * HD + n * D + col) : f2{0.0f, 0.0f};
        dv[s][nt][hr][0] = v.x;
        dv[s][nt][hr][1] = v.y;
      }
    }
  }
  // The previous step's dh MMA runs at the top of each step, in one basic block with this step's cell math, so
  // the compiler overlaps the MMAs with the loads and the dh-independent math of the saved slots and states; the
  // first step's "previous" dp buffer is zeros.
  for (int i = threadIdx.x; i < ROWS * L::LDP; i += NTH) pbuf[ROWS * L::LDP + i] = ET(0);
  // dv[0] += dp · R for the dp in shared buffer pr
  auto mma_step = [&](const ET* pr) {
    float acc[ACCS][NT][4];
#pragma unroll
    for (int q = 0; q < ACCS; ++q)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[q][nt][e] = 0.0f;
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      u32 a[4];
      load_a<E, ROWS>(pr, L::LDP, kt * E::KSTEP, gq, tq, a);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mma<E>(acc[kt % ACCS][nt], a, rf[kt][nt]);
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 2 * HR; ++e) {
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < ACCS; ++q) sum += acc[q][nt][e];
        dv[0][nt][e >> 1][e & 1] += sum;
      }
  };
  cp_async_wait<STAGES - 2>();
  __syncthreads();

  int stage = 0, fill = STAGES - 1;
  for (i64 it = 0; it < T; ++it) {
    const i64 t = T - 1 - it;
    if (it + STAGES - 1 < T) issue(fill);
    cp_async_commit();
    advance();
    fill = fill + 1 == STAGES ? 0 : fill + 1;
    mma_step(pbuf + ((it + 1) & 1) * ROWS * L::LDP);

    const unsigned char* at = ring + stage * L::BW_STAGE;
    const float* sslot = (const float*)at;
    const float* sstate = (const float*)(at + L::BW_SLOTS);
    const ET* sdy = (const ET*)(at + L::BW_SLOTS + L::BW_STATES);
    ET* pw = pbuf + (it & 1) * ROWS * L::LDP;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      int col = (warp * NT + nt) * 8 + 2 * tq;
#pragma unroll
      for (int hr = 0; hr < HR; ++hr) {
        int r = gq + 8 * hr;
        bool live = (!has_lengths || t < len[hr]) && row_ok[hr];
        f2 gy = load2<E>(sdy + r * L::LDH + col);
        float dp[4][2];
        f2 slot2[4], state2[4];  // both units' saved slots and states: one 8-byte shared load each
#pragma unroll
        for (int k = 0; k < 4; ++k) slot2[k] = k < C::GB ? load2f(sslot + (k * ROWS + r) * L::LDF + col) : f2{0.0f, 0.0f};
#pragma unroll
        for (int k = 0; k < 4; ++k) state2[k] = k < C::S ? load2f(sstate + (k * ROWS + r) * L::LDF + col) : f2{0.0f, 0.0f};
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float pe[4], se[4], de[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) pe[k] = c == 0 ? slot2[k].x : slot2[k].y;
#pragma unroll
          for (int s = 0; s < 4; ++s) {
            se[s] = c == 0 ? state2[s].x : state2[s].y;
            de[s] = s < C::S ? dv[s][nt][hr][c] : 0.0f;
          }
          de[0] += c == 0 ? gy.x : gy.y;
          C::template backward<FAST>(pe, se, de);
#pragma unroll
          for (int k = 0; k < 4; ++k) dp[k][c] = live ? pe[k] : 0.0f;
          if (live) {
#pragma unroll
            for (int s = 0; s < C::S; ++s) dv[s][nt][hr][c] = de[s];
          }
        }
#pragma unroll
        for (int k = 0; k < C::GB; ++k) {
          db[k][nt][0] += dp[k][0];
          db[k][nt][1] += dp[k][1];
          if (row_ok[hr]) store2<E>(gp[hr] + 8 * nt + k * HD, dp[k][0], dp[k][1]);
        }
#pragma unroll
        for (int g = 0; g < C::GR; ++g) store2<E>(pw + r * L::LDP + g * D + col, dp[C::rs(g)][0], dp[C::rs(g)][1]);
      }
    }
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) gp[hr] -= gstep;
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
  }
  mma_step(pbuf + ((T - 1) & 1) * ROWS * L::LDP);

#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    int col = (warp * NT + nt) * 8 + 2 * tq;
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) {
      i64 row = b0 + gq + 8 * hr;
      if (row_ok[hr]) {
#pragma unroll
        for (int s = 0; s < C::S; ++s)
          store2f(dstate0 + (s * B + row) * HD + n * D + col, dv[s][nt][hr][0], dv[s][nt][hr][1]);
      }
    }
    // db_part[(tile · 8 + gq), k, n, col]: this thread's two rows summed; the host sums the partials in order
#pragma unroll
    for (int k = 0; k < C::GB; ++k)
      store2f(db_part + ((blockIdx.y * 8 + gq) * C::GB + k) * HD + n * D + col, db[k][nt][0], db[k][nt][1]);
  }
}
