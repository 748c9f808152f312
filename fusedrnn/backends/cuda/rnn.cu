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
// The transposed kernels (taken at D = 128, where a CTA's MMAs dominate its step): rnn_forward_t computes
// gates x batch = R · h_{t-1}ᵀ with A = R (a 16-row tile holds gates 2q and 2q + 1 of 8 units; a thread's
// accumulators are both gates of unit gq at batch rows 2·tq, 2·tq + 1) and B = h_{t-1}ᵀ (N = 8 batch rows, so
// 8-row tiles waste no MMA work), x read with ldmatrix .trans into the same layout; rnn_backward_t computes
// dh_{t-1}ᵀ = Rᵀ · dpᵀ with 16 units per warp tile. Both write their per-step outputs (y, the saved slots and
// states, dgate) through shared memory in 16-byte chunks during the next step (TileStore).
//
// Heads beyond one CTA: over a thread-block cluster (rnn_forward_t<..., CL, KSM>, rnn_backward_c; sm_90), or where
// no cluster holds R, over a cooperative grid (rnn_forward_g / rnn_backward_g, the last part of this file).
//
// Element types: bf16 / f16 with mma m16n8k16 (fp32 accumulation); f32 with three TF32 mma m16n8k8 per
// product (a = a_big + a_small: a_small·b_big + a_big·b_small + a_big·b_big), about fp32's accuracy.
//
// Layouts as the Triton backend's (see fusedrnn/backends/triton/kernels.py):
//   x [B, T, GX, NH, D], R [GR, NH, D, D] (R[g, n, i, j]: h_j -> gate g, unit i), b [GB, NH, D],
//   state0 / final [S, B, NH, D], y [B, T, NH, D], pre [T, B, GB, NH, D] f32, states [S, NH, T + 1, B, D] f32,
//   dgate [B, T, GB, NH, D], db_part [tiles · 8, GB, NH, D] f32 (over a cluster or a grid: tiles · ROWS),
//   dstate0 [S, B, NH, D] f32.

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

// One element as a float, and back (rounded to nearest even).
template <class E>
__device__ __forceinline__ float to_float1(typename E::T v) {
  return E::to_float(v);
}
template <>
__device__ __forceinline__ float to_float1<F32>(float v) {
  return v;
}
template <class E>
__device__ __forceinline__ typename E::T from_float1(float v) {
  return (typename E::T)(E::pack(v, 0.0f) & 0xffffu);
}
template <>
__device__ __forceinline__ float from_float1<F32>(float v) {
  return v;
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

// ---------------------------------------------------------------------------------------------------------
// Thread-block clusters (sm_90): a head split over CL CTAs exchanges h through distributed shared memory with
// asynchronous remote stores that complete on the receiver's mbarrier (benchmarks/cluster_exchange.py measured
// them at half the cost of a cluster barrier per step).

__device__ __forceinline__ u32 cluster_rank() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
// shared address `local` of this CTA as the same address in CTA `rank` of the cluster
__device__ __forceinline__ u32 map_rank(u32 local, u32 rank) {
  u32 r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(local), "r"(rank));
  return r;
}
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// one arrival that also expects `bytes` of asynchronous stores in the current phase
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;"
                 " selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}
// 16 bytes from this CTA's shared address src to cluster shared address dst, completing on the mbarrier at
// cluster address bar (in the receiving CTA)
__device__ __forceinline__ void st_async16(u32 dst, u32 src, u32 bar) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(src));
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];"
               ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(bar) : "memory");
}

// The MMA B fragments of a K-step pair for an 8-row batch tile of a 16-bit [row][k] shared buffer (row = batch row,
// the pair's 32 k contiguous): one ldmatrix.x4 where lane l gives the address of row l % 8 at k offset 8·(l / 8),
// so b[0], b[1] are the first step's fragments and b[2], b[3] the second's (thread: row gq, k 2·tq, 2·tq + 1).
__device__ __forceinline__ void ldsm_x4(u32 addr, u32* b) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
               : "r"(addr));
}

// x of GX gates at the accumulator's elements of an 8-row tile (rows: batch; columns: units, gates D elements
// apart; LDX elements per row) at tile / shared address tile_addr, raw: x_at(raw, g, c) = tile[2·tq + c][g·D + gq].
// 16-bit: one ldmatrix .trans into 4 registers (lane l gives the address of row l % 8 of gate l / 8; each thread
// receives column gq of rows 2·tq and 2·tq + 1 of every gate); f32: 8 plain loads. Issued before the step's
// MMAs: asm volatile statements keep their order, so an ldmatrix after them would wait for them.
template <class E>
struct XRaw {
  static constexpr int N = sizeof(typename E::T) == 2 ? 4 : 8;
  u32 r[N];
};
template <class E, int GX, int LDX, int D>
__device__ __forceinline__ void load_x(const typename E::T* tile, u32 tile_addr, int lane, XRaw<E>& raw) {
  const int gq = lane >> 2, tq = lane & 3;
  if constexpr (sizeof(typename E::T) == 2) {
    const int m = lane >> 3;
    const u32 addr = tile_addr + (u32)(((lane & 7) * LDX + (m < GX ? m : GX - 1) * D) * 2);
    if constexpr (GX == 1) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(raw.r[0]) : "r"(addr));
    } else if constexpr (GX == 2) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                   : "=r"(raw.r[0]), "=r"(raw.r[1])
                   : "r"(addr));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                   : "=r"(raw.r[0]), "=r"(raw.r[1]), "=r"(raw.r[2]), "=r"(raw.r[3])
                   : "r"(addr));
    }
  } else {
#pragma unroll
    for (int g = 0; g < GX; ++g)
#pragma unroll
      for (int c = 0; c < 2; ++c) raw.r[2 * g + c] = __float_as_uint(tile[(2 * tq + c) * LDX + g * D + gq]);
  }
}
template <class E>
__device__ __forceinline__ float x_at(const XRaw<E>& raw, int g, int c) {
  if constexpr (sizeof(typename E::T) == 2) {
    return E::to_float((u16)(c ? raw.r[g] >> 16 : raw.r[g] & 0xffffu));
  } else {
    return __uint_as_float(raw.r[2 * g + c]);
  }
}

// One step's tile of SETS x ROWS rows x ROW_BYTES between global memory (rows and sets at fixed strides from a
// base that moves by a fixed amount per step) and shared memory (sets SH_SET and rows SH_ROW bytes apart), in
// 16-byte chunks. Thread i takes chunk column i % CH of row i / CH, then the rows RS = NTH / CH further on (NTH
// is a multiple of CH: 4·D/NT threads, D·b/16 chunks a row): pass j's chunk is the first one's plus
// compile-time multiples of the two strides, so a thread keeps one offset, one shared offset and its first
// row, whatever the tile's size. TileCopy loads a tile into a stage of the ring; TileStore writes a step's
// outputs from shared memory, so that every global store is 16 coalesced bytes.
template <int SETS, int ROWS, int ROW_BYTES, int SH_SET, int SH_ROW, int NTH>
struct TileMap {
  static constexpr int CH = ROW_BYTES / 16, RS = NTH / CH, PASSES = (SETS * ROWS + RS - 1) / RS;
  static_assert(NTH % CH == 0 && (RS % ROWS == 0 || ROWS % RS == 0), "the tile does not split evenly over the threads");
  i64 off0, set_stride, row_stride;
  u32 sh0;
  int set0, row0, valid_rows;
  __device__ __forceinline__ void init(i64 set_stride_, i64 row_stride_, int valid_rows_) {
    set_stride = set_stride_;
    row_stride = row_stride_;
    valid_rows = valid_rows_;
    int k = threadIdx.x % CH, q = threadIdx.x / CH;  // q < RS
    set0 = q / ROWS;
    row0 = q % ROWS;
    off0 = set0 * set_stride + row0 * row_stride + 16 * k;
    sh0 = set0 * SH_SET + row0 * SH_ROW + 16 * k;
  }
  // pass j: RS·j rows further: whole sets when RS >= ROWS, else within one set (RS divides ROWS, row0 < RS)
  __device__ static constexpr int dset(int j) { return RS >= ROWS ? j * (RS / ROWS) : (j * RS) / ROWS; }
  __device__ static constexpr int drow(int j) { return RS >= ROWS ? 0 : (j * RS) % ROWS; }
  __device__ __forceinline__ bool in_tile(int j) const { return SETS * ROWS % RS == 0 || set0 + dset(j) < SETS; }
  __device__ __forceinline__ bool row_ok(int j) const { return row0 + drow(j) < valid_rows; }
  __device__ __forceinline__ i64 off(int j) const { return off0 + dset(j) * set_stride + drow(j) * row_stride; }
  __device__ __forceinline__ u32 sh(int j) const { return sh0 + dset(j) * SH_SET + drow(j) * SH_ROW; }
};

// TileCopy keeps a source pointer per pass, moved by the same amount every step: a step's copies then cost an
// add per pass, where offsets from the strides would be recomputed every step (ptxas rematerialises them rather
// than hold them, in kernels with most registers taken by R).
template <int SETS, int ROWS, int ROW_BYTES, int SH_SET, int SH_ROW, int NTH>
struct TileCopy : TileMap<SETS, ROWS, ROW_BYTES, SH_SET, SH_ROW, NTH> {
  typedef TileMap<SETS, ROWS, ROW_BYTES, SH_SET, SH_ROW, NTH> M;
  const unsigned char* src[M::PASSES];  // pass j's chunk of the next step (a row outside the batch: its set's row 0)
  u32 ok;                               // bit j: pass j's row is in the batch
  __device__ __forceinline__ void init(const unsigned char* base, i64 set_stride_, i64 row_stride_, int valid_rows_) {
    M::init(set_stride_, row_stride_, valid_rows_);
    ok = 0;
#pragma unroll
    for (int j = 0; j < M::PASSES; ++j) {
      const bool in = this->row_ok(j);
      src[j] = base + this->off(j) - (in ? 0 : (this->row0 + M::drow(j)) * this->row_stride);
      ok |= (u32)in << j;
    }
  }
  __device__ __forceinline__ void advance(i64 bytes) {
#pragma unroll
    for (int j = 0; j < M::PASSES; ++j) src[j] += bytes;
  }
  // into the stage at shared address stage; rows outside the batch are zero-filled
  __device__ __forceinline__ void issue(u32 stage) const {
#pragma unroll
    for (int j = 0; j < M::PASSES; ++j)
      if (this->in_tile(j)) cp_async16(stage + this->sh(j), src[j], (ok >> j) & 1u);
  }
};

template <int SETS, int ROWS, int ROW_BYTES, int SH_SET, int SH_ROW, int NTH>
struct TileStore : TileMap<SETS, ROWS, ROW_BYTES, SH_SET, SH_ROW, NTH> {
  typedef TileMap<SETS, ROWS, ROW_BYTES, SH_SET, SH_ROW, NTH> M;
  int end[M::PASSES];  // pass j's row is written as zeros from step end[j] on (y past a sequence's length)
  __device__ __forceinline__ void init_ends(const int* lengths, i64 b0, i64 T) {
#pragma unroll
    for (int j = 0; j < M::PASSES; ++j)
      end[j] = lengths != nullptr && this->in_tile(j) && this->row_ok(j) ? lengths[b0 + this->row0 + M::drow(j)] : (int)T;
  }
  // from the tile at src (generic pointer to shared memory) to base; MASK: rows past their end as zeros
  template <bool MASK>
  __device__ __forceinline__ void store(const unsigned char* src, unsigned char* base, i64 t) const {
#pragma unroll
    for (int j = 0; j < M::PASSES; ++j)
      if (this->in_tile(j) && this->row_ok(j)) {
        uint4 v = *(const uint4*)(src + this->sh(j));
        if (MASK && t >= end[j]) v = make_uint4(0u, 0u, 0u, 0u);
        *(uint4*)(base + this->off(j)) = v;
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

// Each cell: its gate / slot / state counts and slot routing, forward (p: slots in, the slots as saved for the
// backward out; s: states, new s in place) and backward (p: saved slots in, slot gradients out; s: states
// before the step; d: gradients of the new states in, direct gradients of the old states out; the kernel adds
// R·dp to d[0]). LSTM and GRU save their activated gates (float32), so that their backward does not evaluate
// σ / tanh of them again (the backward is issue-bound at D = 128); Elman and sLSTM save their pre-activations
// (Elman's saved h made its float32 D = 128 backward spill).

struct Lstm {  // slots (i, f, z, o), states (h, c)
  static constexpr int GX = 4, GR = 4, GB = 4, S = 2;
  static __device__ constexpr int xs(int g) { return g; }
  static __device__ constexpr int rs(int g) { return g; }
  template <bool FAST>
  static __device__ __forceinline__ void forward(float* p, float* s) {  // saves (i, f, z, o) activated
    float i = sigm<FAST>(p[0]), f = sigm<FAST>(p[1]), z = tanh_<FAST>(p[2]), o = sigm<FAST>(p[3]);
    float c = f * s[1] + i * z;
    s[0] = o * tanh_<FAST>(c);
    s[1] = c;
    p[0] = i;
    p[1] = f;
    p[2] = z;
    p[3] = o;
  }
  template <bool FAST>
  static __device__ __forceinline__ void backward(float* p, const float* s, float* d) {
    float i = p[0], f = p[1], z = p[2], o = p[3];
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
  static __device__ __forceinline__ void forward(float* p, float* s) {  // saves (r, z, n, n_hidden)
    float r = sigm<FAST>(p[0]), u = sigm<FAST>(p[1]);
    float n = tanh_<FAST>(p[2] + r * p[3]);
    s[0] = (1.0f - u) * n + u * s[0];
    p[0] = r;
    p[1] = u;
    p[2] = n;
  }
  template <bool FAST>
  static __device__ __forceinline__ void backward(float* p, const float* s, float* d) {
    float r = p[0], u = p[1], n = p[2];
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
  static __device__ __forceinline__ void forward(float* p, float* s) {  // saves the pre-activation
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
  static __device__ __forceinline__ void forward(float* p, float* s) {  // saves the pre-activations
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
// U: the units of the head a CTA computes (rnn_forward_t over a cluster: D / CL; x, the output stages and the
// backward's per-unit buffers hold U columns, the h buffers the whole head).
template <int CELL, class E, int D, int STAGES, int ROWS, int U = D>
struct Layout {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T T;
  static constexpr int PAD = 16 / (int)sizeof(T);  // one 16-byte chunk per row: rows start on distinct banks
  // forward: two h buffers [ROWS][LDH] and STAGES x tiles [ROWS][LDX]; rnn_forward_t adds two output stages
  // (slots [GB][ROWS][LDF] and states [S][ROWS][LDF], f32) for the saved tensors
  static constexpr int LDH = D + PAD, LDX = C::GX * U + PAD, LDF = U + 4;
  static constexpr int FW_H = ROWS * LDH * (int)sizeof(T), FW_X = ROWS * LDX * (int)sizeof(T);
  static constexpr int FW_OUT = (C::GB + C::S) * ROWS * LDF * 4;
  static constexpr int FW_BYTES = 2 * FW_H + STAGES * FW_X, FW_T_BYTES = FW_BYTES + 2 * FW_OUT;
  // rnn_forward_t over a cluster (U < D) adds the exchange's mbarriers: per buffer one per sender
  static constexpr int FW_C_BYTES = FW_T_BYTES + (U < D ? 16 * (D / U) : 0);
  // and the K steps of R it keeps in shared memory (KSM per warp; per 8 units and K step GR / 2 16 x 16 A
  // fragments of 512 bytes and, GR odd, one of 256 without its zero rows: 256·GR bytes)
  static __device__ constexpr int fw_r_bytes(int ksm) { return ksm * C::GR * (U / 8) * 256; }
  // backward: two dp buffers [ROWS][LDP] (input dtype; rnn_backward: R's GR gates; rnn_backward_t: every slot
  // in order, [ROWS][LDPT]) and STAGES of (slots [GB][ROWS][LDF], states [S][ROWS][LDF] f32, dy [ROWS][LDH]
  // input dtype)
  static constexpr int LDP = C::GR * D + PAD, LDPT = C::GB * U + PAD;
  // rnn_backward_t's dp column of K index k = g·U + i (R's gate g meets slot rs(g))
  static __device__ constexpr int pcol(int k) { return C::rs(k / U) * U + k % U; }
  static constexpr int BW_P = ROWS * LDP * (int)sizeof(T), BW_T_P = ROWS * LDPT * (int)sizeof(T);
  static constexpr int BW_SLOTS = C::GB * ROWS * LDF * 4, BW_STATES = C::S * ROWS * LDF * 4, BW_DY = FW_H;
  static constexpr int BW_STAGE = BW_SLOTS + BW_STATES + BW_DY;
  static constexpr int BW_BYTES = 2 * BW_P + STAGES * BW_STAGE, BW_T_BYTES = 2 * BW_T_P + STAGES * BW_STAGE;
  // rnn_backward_c adds this CTA's partial dh of every unit [ROWS][LDR] (f32), two receive buffers of the
  // cluster's partials for this CTA's units [D / U][ROWS][U] (f32, step parity) and two mbarriers
  static constexpr int LDR = D + 4, BW_C_PART = ROWS * LDR * 4, BW_C_RECV = D * ROWS * 4;
  static constexpr int BW_C_BYTES = BW_T_BYTES + BW_C_PART + 2 * BW_C_RECV + 16;
};

// The transposed kernels' batch rows: a thread's accumulator columns are rows b0 + 8·j + 2·tq + c (c = 0, 1) of
// batch tile j; whether each is in the batch and its length (T without lengths).
template <int NB>
__device__ __forceinline__ void column_rows(const int* lengths, bool has_lengths, i64 B, i64 T, i64 b0, int tq,
                                            bool (&ok)[NB][2], int (&len)[NB][2]) {
#pragma unroll
  for (int j = 0; j < NB; ++j)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      i64 row = b0 + 8 * j + 2 * tq + c;
      ok[j][c] = row < B;
      len[j][c] = has_lengths && ok[j][c] ? lengths[row] : (int)T;
    }
}

// The backward's step inputs, t descending, copied into a stage of the ring: slots pre[t, b0 + r, k, n, :] (sets
// k HD apart, rows GB·HD apart), the states before the step states[s, n, t, b0 + r, :] (sets s NH·(T+1)·B·D
// apart, rows D apart) and dy[b0 + r, t, n, :] (rows T·HD apart); their bases move back by B·GB·HD, B·D and HD
// elements per step. Both backward kernels take their inputs through it.
template <int CELL, class E, int D, int STAGES, int ROWS, int NTH, int U = D>
struct BwInputs {  // U: the units from u0 on (rnn_backward_c: a CTA's share of the head)
  typedef typename CellOf<CELL>::type C;
  typedef Layout<CELL, E, D, STAGES, ROWS, U> L;
  static constexpr int SZ = (int)sizeof(typename E::T), STAGE_BYTES = L::BW_STAGE;
  TileCopy<C::GB, ROWS, U * 4, ROWS * L::LDF * 4, L::LDF * 4, NTH> pcopy;
  TileCopy<C::S, ROWS, U * 4, ROWS * L::LDF * 4, L::LDF * 4, NTH> scopy;
  TileCopy<1, ROWS, U * SZ, 0, L::LDH * SZ, NTH> ycopy;
  i64 pstep, sstep, ystep;
  __device__ __forceinline__ void init(const float* pre, const float* states, const typename E::T* dy, i64 B, i64 T,
                                       i64 NH, i64 n, i64 b0, int valid_rows, int u0 = 0) {
    const i64 HD = NH * D;
    pcopy.init((const unsigned char*)(pre + ((T - 1) * B + b0) * C::GB * HD + n * D + u0), HD * 4, C::GB * HD * 4,
               valid_rows);
    scopy.init((const unsigned char*)(states + (n * (T + 1) + T - 1) * B * D + b0 * D + u0),
               NH * (T + 1) * B * D * 4, D * 4, valid_rows);
    ycopy.init((const unsigned char*)(dy + (b0 * T + T - 1) * HD + n * D + u0), 0, T * HD * SZ, valid_rows);
    pstep = B * C::GB * HD * 4;
    sstep = B * D * 4;
    ystep = HD * SZ;
  }
  // the next step's inputs into the stage at shared address at
  __device__ __forceinline__ void issue(u32 at) const {
    pcopy.issue(at);
    scopy.issue(at + L::BW_SLOTS);
    ycopy.issue(at + L::BW_SLOTS + L::BW_STATES);
  }
  __device__ __forceinline__ void advance() {
    pcopy.advance(-pstep);
    scopy.advance(-sstep);
    ycopy.advance(-ystep);
  }
};

// The forward's step input x_t, copied into a stage of the ring: GX sets (gates, HD apart) of ROWS rows (T·GX·HD
// apart) of the U elements from unit u0 on; the base moves GX·HD elements per step. Both forward kernels take x
// through it.
template <int CELL, class E, int D, int STAGES, int ROWS, int NTH, int U = D>
struct FwInputs {
  typedef typename CellOf<CELL>::type C;
  typedef Layout<CELL, E, D, STAGES, ROWS, U> L;
  static constexpr int SZ = (int)sizeof(typename E::T), STAGE_BYTES = L::FW_X;
  TileCopy<C::GX, ROWS, U * SZ, U * SZ, L::LDX * SZ, NTH> xcopy;
  i64 xstep;
  __device__ __forceinline__ void init(const typename E::T* x, i64 T, i64 NH, i64 n, i64 b0, int valid_rows,
                                       int u0 = 0) {
    const i64 HD = NH * D;
    xcopy.init((const unsigned char*)(x + b0 * T * C::GX * HD + n * D + u0), HD * SZ, T * C::GX * HD * SZ,
               valid_rows);
    xstep = C::GX * HD * SZ;
  }
  __device__ __forceinline__ void issue(u32 at) const { xcopy.issue(at); }
  __device__ __forceinline__ void advance() { xcopy.advance(xstep); }
};

// The next step's inputs of a kernel (FwInputs / BwInputs) into stage `stage` of the ring at shared address ring
// (In::STAGE_BYTES apart) where copy (the step exists), one cp.async group either way (the waits count groups).
template <class In>
__device__ __forceinline__ void fetch(In& in, u32 ring, int stage, bool copy) {
  if (copy) in.issue(ring + stage * In::STAGE_BYTES);
  cp_async_commit();
  in.advance();
}

// The first STAGES - 1 steps into stages 0 .. STAGES - 2.
template <int STAGES, class In>
__device__ __forceinline__ void prologue(In& in, u32 ring, i64 T) {
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) fetch(in, ring, p, p < T);
}


// Rᵀ · dpᵀ in the transposed backward kernels: out[nt][jb][e] = this thread's accumulator elements (rows gq and
// gq + 8 of unit tile nt, batch columns 8·jb + 2·tq + (e & 1)) of A = rf (NT tiles of 16 units, KT K steps) times
// B = dp from the [ROWS][L::LDPT] buffer pr (K index k in column L::pcol(k)), summed over ACCS independent
// accumulator chains. LDSM: B by ldmatrix one K-step pair ahead of the MMAs, from shared address pb (pr plus this
// lane's row and k offset, see ldsm_x4).
template <class E, class L, int NT, int KT, int NB, int ACCS, bool LDSM>
__device__ __forceinline__ void dp_times_r(const u32 (&rf)[NT][KT][4], const typename E::T* pr, u32 pb, int gq,
                                           int tq, float (&out)[NT][NB][4]) {
  constexpr int SZ = (int)sizeof(typename E::T);
  float acc[ACCS][NT][NB][4];
#pragma unroll
  for (int q = 0; q < ACCS; ++q)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[q][nt][jb][e] = 0.0f;
  if constexpr (LDSM) {
    u32 bq[KT / 2][NB][4];
#pragma unroll
    for (int jb = 0; jb < NB; ++jb) ldsm_x4(pb + (8 * jb * L::LDPT + L::pcol(0)) * SZ, bq[0][jb]);
#pragma unroll
    for (int kp = 0; kp < KT / 2; ++kp) {
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
        if (kp + 1 < KT / 2) ldsm_x4(pb + (8 * jb * L::LDPT + L::pcol(32 * (kp + 1))) * SZ, bq[kp + 1][jb]);
#pragma unroll
      for (int i2 = 0; i2 < 2; ++i2)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int jb = 0; jb < NB; ++jb)
            mma<E>(acc[(2 * kp + i2) % ACCS][nt][jb], rf[nt][2 * kp + i2], &bq[kp][jb][2 * i2]);
    }
  } else {
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      u32 bf[NB][2];  // B[k][col = batch row 8·jb + gq] = dp[8·jb + gq][k]
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
#pragma unroll
        for (int i = 0; i < 2; ++i)
          bf[jb][i] = *(const u32*)(pr + (8 * jb + gq) * L::LDPT + L::pcol(kt * E::KSTEP) + E::PAIR * tq +
                                    i * (E::KSTEP / 2));
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int jb = 0; jb < NB; ++jb) mma<E>(acc[kt % ACCS][nt][jb], rf[nt][kt], bf[jb]);
    }
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int jb = 0; jb < NB; ++jb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < ACCS; ++q) sum += acc[q][nt][jb][e];
        out[nt][jb][e] = sum;
      }
}

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

  FwInputs<CELL, E, D, STAGES, ROWS, NTH> in;  // x_t, STAGES - 1 steps ahead
  in.init(x, T, NH, n, b0, valid_rows);
  prologue<STAGES>(in, xring_addr, T);

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
    fetch(in, xring_addr, fill, t + STAGES - 1 < T);
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
#pragma unroll
          for (int k = 0; k < C::GB; ++k) p[k][c] = pe[k];  // as saved
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

// Forward as gates x batch = R · hᵀ (see the top of this file): same arguments, saved tensors and outputs as
// rnn_forward; shared memory adds the two output stages (Layout::FW_T_BYTES).
//
// CL > 1 (sm_90): the head is split over a cluster of CL CTAs (grid x = head · CL + rank); CTA `rank` computes
// units [rank·U, (rank + 1)·U), U = D / CL, with the rows of R of those units in registers and K = D, the whole
// head's h, in its h buffers. After the cell, each warp sends its units of h_t to every other CTA's next h buffer
// by asynchronous remote stores that complete on that CTA's mbarrier for (buffer, sender); the receiver arms its
// CL - 1 mbarriers of the buffer (one expect_tx arrival each per step). Its next step waits for a sender's slice
// just before the first K step that reads it (U % 16 == 0: a K step reads one slice), so the MMAs over the slices
// that already arrived overlap the rest of the exchange. Two buffers (step parity) suffice: a CTA's warps send
// step t + 1 only after its MMAs of step t + 1 received every slice of step t, and a sender's slice is complete
// only once all its warps sent, each after its own MMAs of step t: so every CTA finished reading the buffer that
// step t + 1 overwrites. No cluster barrier inside the time loop. With KSM > 0 (below) the CTA instead sends its
// whole slice after the step's __syncthreads onto one mbarrier per buffer and waits for all before the next step
// (measured faster there, H200: LSTM / GRU 1 x 768 forward 2.51 / 2.37 ms against 2.56-2.67 / 2.50-2.58 with
// the per-sender exchange; its waits and pipelining cost registers that hold R).
//
// KSM > 0 (over a cluster, 16-bit; heads whose R is more than the cluster's registers hold, e.g. LSTM D = 768):
// each warp keeps the first KT - KSM K steps of its A fragments in registers and the last KSM in shared memory
// (after the mbarriers, Layout::fw_r_bytes), stored in fragment order — a thread's 4 registers of one fragment
// are 16 contiguous bytes, a warp's fragment 512 — and read back each step one K step ahead of its MMAs.
template <int CELL, class E, int D, int NT, int STAGES, int ROWS, int CL = 1, int KSM = 0>
__global__ void __launch_bounds__(32 * (D / CL / (8 * NT)), 1)
    rnn_forward_t(const typename E::T* __restrict__ x, const typename E::T* __restrict__ R,
                const typename E::T* __restrict__ bias, const typename E::T* __restrict__ state0,
                const int* __restrict__ lengths, typename E::T* __restrict__ y, typename E::T* __restrict__ final_,
                float* __restrict__ pre, float* __restrict__ states, i64 B, i64 T, i64 NH, i64 save,
                i64 smem_bytes) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  constexpr int U = D / CL;  // this CTA's units
  typedef Layout<CELL, E, D, STAGES, ROWS, U> L;
  constexpr int NB = ROWS / 8;           // batch tiles of 8 (the MMA's N) per CTA
  constexpr int P = (C::GR + 1) / 2;     // MMA row tiles per unit tile: gates 2q (rows 0-7) and 2q + 1 (rows 8-15)
  constexpr bool FAST = Fast<E>::value;
  constexpr int W = U / (8 * NT), NTH = 32 * W, KT = D / E::KSTEP, SZ = (int)sizeof(ET);
  constexpr int KR = KT - KSM;  // K steps of R in registers
  static_assert(D % 16 == 0 && U % 8 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");
  static_assert(KSM == 0 || (CL > 1 && SZ == 2 && KSM % 2 == 0 && KR >= 2 && KR % 2 == 0), "bad R split");
  // over a cluster: 16-bit elements (a warp sends 8 units of a row as one chunk), whole K steps per CTA's slice
  static_assert(CL == 1 || (SZ == 2 && U % 16 == 0), "bad cluster split");

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::FW_C_BYTES + L::fw_r_bytes(KSM)) __trap();
  ET* hbuf = (ET*)smem;
  const unsigned char* xring = smem + 2 * L::FW_H;
  const u32 xring_addr = smem_addr(xring);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  // 16-bit h with an even number of K steps: B fragments by ldmatrix (this lane's row / k offset, see ldsm_x4)
  constexpr bool LDSM = SZ == 2 && KT % 2 == 0;
  const u32 hbuf_addr = smem_addr(hbuf), lane_b = (u32)(((lane & 7) * L::LDH + (lane >> 3) * 8) * SZ);
  const i64 n = blockIdx.x / CL, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);
  const bool has_lengths = lengths != nullptr;
  // the cluster's rank of this CTA (its first unit rank·U) and its 2·CL mbarriers, after the output stages: the
  // one of (buffer b, sender p) at bars + 8·(b·CL + p)
  u32 rank = 0, bars = 0;
  if constexpr (CL > 1) {
    rank = cluster_rank();
    bars = smem_addr(smem + L::FW_T_BYTES);
    if (threadIdx.x == 0) {
      for (int i = 0; i < 2 * CL; ++i) mbar_init(bars + 8 * i, 1);
      mbar_init_fence();
    }
  }
  const int u0 = (int)rank * U;
  // over a cluster: K steps [m·S16, (m + 1)·S16) read CTA m's slice of h; PEERS: the exchange per sender (below)
  constexpr int S16 = U / 16;
  constexpr bool PEERS = CL > 1 && KSM == 0;

  // R as A fragments (the MMA computes gates x batch = R · hᵀ): row tile q of unit tile nt holds gate 2q (rows
  // 0-7) and gate 2q + 1 (rows 8-15, zeros past GR) of units unit(nt) = u0 + 8·(warp·NT + nt) + row; A[row][k = j]
  // = R[g, n, unit, j]. This thread's unit in tile nt: u0 + 8·(warp·NT + nt) + gq.
  // K steps KR .. KT - 1 (KSM > 0): this thread's fragment f = ((kt - KR)·PF + q)·NT + nt of the PF = GR / 2 full
  // row tiles at rs[f·NTH]; with GR odd, the last tile's (gate GR - 1; rows 8-15 zero) two registers a[0], a[2]
  // after them, ((kt - KR)·NT + nt) at rh[.. · NTH]
  constexpr int PF = C::GR / 2;
  u32 rf[P][NT][KR][4];
  uint4* rs = (uint4*)(smem + L::FW_C_BYTES) + threadIdx.x;
  uint2* rh = (uint2*)(smem + L::FW_C_BYTES + KSM * PF * NT * NTH * 16) + threadIdx.x;
  // this thread's register i of the fragment (q, nt, kt) from global memory
  auto r_at = [&](int q, int nt, int kt, int i) -> u32 {
    const int g = 2 * q + (i & 1);
    int unit = u0 + (warp * NT + nt) * 8 + gq;
    int k = kt * E::KSTEP + E::PAIR * tq + (i >> 1) * (E::KSTEP / 2);
    return g < C::GR ? pair_bits<E>(R + ((g * NH + n) * D + unit) * D + k, 1) : 0u;
  };
  if constexpr (KSM == 0) {
#pragma unroll
    for (int q = 0; q < P; ++q)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int kt = 0; kt < KT; ++kt)
#pragma unroll
          for (int i = 0; i < 4; ++i) rf[q][nt][kt][i] = r_at(q, nt, kt, i);
  } else {
#pragma unroll
    for (int q = 0; q < P; ++q)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
          u32 a[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            a[i] = r_at(q, nt, kt, i);
            if (kt < KR) rf[q][nt][kt < KR ? kt : 0][i] = a[i];
          }
          if (kt >= KR && q < PF) rs[(((kt - KR) * PF + q) * NT + nt) * NTH] = make_uint4(a[0], a[1], a[2], a[3]);
          if (kt >= KR && q == PF) rh[((kt - KR) * NT + nt) * NTH] = make_uint2(a[0], a[2]);
        }
  }

  FwInputs<CELL, E, D, STAGES, ROWS, NTH, U> in;  // x_t of this CTA's units, STAGES - 1 steps ahead
  in.init(x, T, NH, n, b0, valid_rows, u0);
  prologue<STAGES>(in, xring_addr, T);

  // Step t's outputs go through shared memory (y: the h buffer; saved slots and states: the output stages) and
  // leave in 16-byte chunks during step t + 1: y[b0 + r, t, n, :] (rows T·HD apart), pre[t, b0 + r, k, n, :] (sets
  // HD, rows GB·HD apart), states[s, n, t + 1, b0 + r, :] (sets NH·(T+1)·B·D, rows D apart); their bases move by
  // HD, B·GB·HD and B·D elements per step.
  const i64 sset = NH * (T + 1) * B * D;
  TileStore<1, ROWS, U * SZ, 0, L::LDH * SZ, NTH> ystore;
  TileStore<C::GB, ROWS, U * 4, ROWS * L::LDF * 4, L::LDF * 4, NTH> pstore;
  TileStore<C::S, ROWS, U * 4, ROWS * L::LDF * 4, L::LDF * 4, NTH> sstore;
  ystore.init(0, T * HD * SZ, valid_rows);
  ystore.init_ends(lengths, b0, T);
  pstore.init(HD * 4, C::GB * HD * 4, valid_rows);
  sstore.init(sset * 4, D * 4, valid_rows);
  unsigned char* ybase = (unsigned char*)(y + b0 * T * HD + n * D + u0);
  unsigned char* pbase = (unsigned char*)(pre + b0 * C::GB * HD + n * D + u0);
  unsigned char* sbase = (unsigned char*)(states + (n * (T + 1) + 1) * B * D + b0 * D + u0);
  unsigned char* outs = smem + 2 * L::FW_H + STAGES * L::FW_X;  // two output stages of FW_OUT bytes
  // step t - 1's outputs (read from its h buffer hp and its output stage), then the bases move one step on
  auto flush = [&](const ET* hp, i64 tp) {
    ystore.template store<true>((const unsigned char*)(hp + u0), ybase, tp);
    ybase += HD * SZ;
    if (save) {
      const unsigned char* o = outs + (tp & 1) * L::FW_OUT;
      pstore.template store<false>(o, pbase, tp);
      sstore.template store<false>(o + C::GB * ROWS * L::LDF * 4, sbase, tp);
      pbase += B * C::GB * HD * 4;
      sbase += B * D * 4;
    }
  };

  // this thread's elements: unit tile nt (unit u(nt)), batch tile j, rows 8·j + 2·tq + c (c = 0, 1) — the
  // accumulator's columns
  float bv[C::GB][NT];
  float st[C::S][NT][NB][2];
  int len[NB][2];
  bool row_ok[NB][2];
  column_rows<NB>(lengths, has_lengths, B, T, b0, tq, row_ok, len);
  const int unit0 = warp * NT * 8 + gq;  // in this CTA's units (u0 + unit0: in the head)
  if constexpr (CL > 1) {  // h_0 of the other CTAs' units, from state0 (no exchange before step 0)
    for (int i = threadIdx.x; i < ROWS * D; i += NTH) {
      const int r = i / D, unit = i % D;
      if (unit / U != (int)rank)
        hbuf[r * L::LDH + unit] = b0 + r < B ? state0[(b0 + r) * HD + n * D + unit] : from_float1<E>(0.0f);
    }
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int unit = u0 + unit0 + 8 * nt;
#pragma unroll
    for (int k = 0; k < C::GB; ++k) bv[k][nt] = to_float1<E>(bias[k * HD + n * D + unit]);
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int r = 8 * j + 2 * tq + c;
        i64 row = b0 + r;
#pragma unroll
        for (int s = 0; s < C::S; ++s) {
          float v = row_ok[j][c] ? to_float1<E>(state0[(s * B + row) * HD + n * D + unit]) : 0.0f;
          st[s][nt][j][c] = v;
          if (save && row_ok[j][c]) states[(n * (T + 1) * B + row) * D + unit + s * sset] = v;
        }
        hbuf[r * L::LDH + unit] = from_float1<E>(st[0][nt][j][c]);
      }
  }
  cp_async_wait<STAGES - 2>();
  if constexpr (CL > 1) cluster_sync();  // the mbarriers are initialised before any CTA sends
  else __syncthreads();

  int stage = 0, fill = STAGES - 1;  // t % STAGES and (t + STAGES - 1) % STAGES
  for (i64 t = 0; t < T; ++t) {
    fetch(in, xring_addr, fill, t + STAGES - 1 < T);
    fill = fill + 1 == STAGES ? 0 : fill + 1;

    const ET* hc = hbuf + (t & 1) * ROWS * L::LDH;
    ET* hn = hbuf + ((t + 1) & 1) * ROWS * L::LDH;
    const ET* xs = (const ET*)(xring + stage * L::FW_X);
    const u32 xs_addr = xring_addr + stage * L::FW_X;
    XRaw<E> xr[NT][NB];  // x of this step, before the MMAs (see load_x)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int j = 0; j < NB; ++j) {
        const int at = 8 * j * L::LDX + 8 * (warp * NT + nt);  // row 8·j, the unit tile's first unit
        load_x<E, C::GX, L::LDX, U>(xs + at, xs_addr + at * SZ, lane, xr[nt][j]);
      }
    float acc[P][NT][NB][4];
#pragma unroll
    for (int q = 0; q < P; ++q)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[q][nt][j][e] = 0.0f;
    // over a cluster: before K-step pair kp's B fragments, wait for the slices it starts reading (step t > 0; the
    // buffer t & 1 received h_{t-1} in the mbarriers' ((t - 1) / 2)-th phase)
    const u32 wbars = bars + 8 * (u32)((t & 1) * CL), wphase = (u32)((t - 1) >> 1) & 1u;
    auto wait_pair = [&](int kp) {
      if constexpr (PEERS) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int kt = 2 * kp + i;
          if (kt % S16 == 0 && t > 0 && kt / S16 != (int)rank) mbar_wait(wbars + 8 * (kt / S16), wphase);
        }
      }
    };
    if constexpr (LDSM) {  // B = hᵀ by ldmatrix, one K-step pair ahead of the MMAs
      const u32 hb = hbuf_addr + (u32)((t & 1) * L::FW_H) + lane_b;
      u32 bq[KT / 2][NB][4];
      uint4 as[2][P][NT];  // A fragments from shared memory: K step kt in as[kt & 1]
      wait_pair(0);
#pragma unroll
      for (int j = 0; j < NB; ++j) ldsm_x4(hb + 16 * j * L::LDH, bq[0][j]);
#pragma unroll
      for (int kp = 0; kp < KT / 2; ++kp) {
        if (kp + 1 < KT / 2) wait_pair(kp + 1);
#pragma unroll
        for (int j = 0; j < NB; ++j)
          if (kp + 1 < KT / 2) ldsm_x4(hb + 16 * j * L::LDH + 64 * (kp + 1), bq[kp + 1][j]);
#pragma unroll
        for (int i2 = 0; i2 < 2; ++i2) {
          const int kt = 2 * kp + i2;
          if (KSM > 0 && kt + 1 >= KR && kt + 1 < KT)  // the next K step's fragments, one step ahead
#pragma unroll
            for (int q = 0; q < P; ++q)
#pragma unroll
              for (int nt = 0; nt < NT; ++nt) {
                uint4& to = as[(kt + 1) & 1][q][nt];
                if (q < PF) {
                  to = rs[(((kt + 1 - KR) * PF + q) * NT + nt) * NTH];
                } else {
                  const uint2 v = rh[((kt + 1 - KR) * NT + nt) * NTH];
                  to = make_uint4(v.x, 0u, v.y, 0u);
                }
              }
#pragma unroll
          for (int q = 0; q < P; ++q)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              if (kt < KR) {
#pragma unroll
                for (int j = 0; j < NB; ++j) mma<E>(acc[q][nt][j], rf[q][nt][kt < KR ? kt : 0], &bq[kp][j][2 * i2]);
              } else {
#pragma unroll
                for (int j = 0; j < NB; ++j) mma<E>(acc[q][nt][j], (const u32*)&as[kt & 1][q][nt], &bq[kp][j][2 * i2]);
              }
            }
        }
      }
    } else {
#pragma unroll
      for (int kt = 0; kt < KT; ++kt) {
        u32 bf[NB][2];  // B[k][col = batch row 8·j + gq] = h[8·j + gq][k]
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
          for (int i = 0; i < 2; ++i)
            bf[j][i] = *(const u32*)(hc + (8 * j + gq) * L::LDH + kt * E::KSTEP + E::PAIR * tq + i * (E::KSTEP / 2));
#pragma unroll
        for (int q = 0; q < P; ++q)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int j = 0; j < NB; ++j) mma<E>(acc[q][nt][j], rf[q][nt][kt], bf[j]);
      }
    }
    if (t > 0) flush(hc, t - 1);  // while the MMAs run

    float* o = (float*)(outs + (t & 1) * L::FW_OUT);  // this step's output stage (this CTA's units)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int unit = u0 + unit0 + 8 * nt, ounit = unit0 + 8 * nt;
#pragma unroll
      for (int j = 0; j < NB; ++j) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int r = 8 * j + 2 * tq + c;
          bool live = !has_lengths || t < len[j][c];
          float pe[4];  // slots = b + x + R·h, in that order
#pragma unroll
          for (int k = 0; k < 4; ++k) pe[k] = k < C::GB ? bv[k][nt] : 0.0f;
#pragma unroll
          for (int g = 0; g < C::GX; ++g) pe[C::xs(g)] += x_at<E>(xr[nt][j], g, c);
#pragma unroll
          for (int g = 0; g < C::GR; ++g) pe[C::rs(g)] += acc[g >> 1][nt][j][2 * (g & 1) + c];
          float se[4];
#pragma unroll
          for (int s = 0; s < 4; ++s) se[s] = s < C::S ? st[s][nt][j][c] : 0.0f;
          C::template forward<FAST>(pe, se);
          if (live) {
#pragma unroll
            for (int s = 0; s < C::S; ++s) st[s][nt][j][c] = se[s];
          }
          hn[r * L::LDH + unit] = from_float1<E>(st[0][nt][j][c]);
          if (save) {
#pragma unroll
            for (int k = 0; k < C::GB; ++k) o[(k * ROWS + r) * L::LDF + ounit] = pe[k];
#pragma unroll
            for (int s = 0; s < C::S; ++s) o[((C::GB + s) * ROWS + r) * L::LDF + ounit] = st[s][nt][j][c];
          }
        }
      }
    }
    if constexpr (PEERS) {
      if (t + 1 < T) {  // this warp's units of h_t (8·NT per row: NT 16-byte chunks) to the other CTAs' buffer
        __syncwarp();   // (t + 1) & 1 as soon as it wrote them; this CTA arms its mbarriers of that buffer
        constexpr int CHUNKS = ROWS * NT, CW = CHUNKS * NTH / 32;  // per warp and peer; per CTA and peer
        const int b = (int)((t + 1) & 1);
        const u32 slice = hbuf_addr + (u32)(b * L::FW_H + (u0 + 8 * NT * warp) * SZ), bar = bars + 8 * (u32)(b * CL);
        for (int i = lane; i < (CL - 1) * CHUNKS; i += 32) {
          const u32 peer = (rank + 1 + (u32)(i / CHUNKS)) % CL;
          const int c = i % CHUNKS;
          const u32 at = slice + (u32)((c / NT) * L::LDH * SZ + 16 * (c % NT));
          st_async16(map_rank(at, peer), at, map_rank(bar + 8 * rank, peer));
        }
        if (threadIdx.x < CL && threadIdx.x != rank) mbar_expect(bar + 8 * threadIdx.x, CW * 16);
      }
    }
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    if constexpr (CL > 1 && !PEERS) {
      if (t + 1 < T) {  // this CTA's slice of h_t to the other CTAs' buffer (t + 1) & 1 onto its first mbarrier;
        constexpr int CPR = U * SZ / 16, CHUNKS = ROWS * CPR;  // wait for theirs
        const int b = (int)((t + 1) & 1);
        const u32 slice = hbuf_addr + (u32)(b * L::FW_H + u0 * SZ), bar = bars + 8 * (u32)(b * CL);
        for (int i = threadIdx.x; i < (CL - 1) * CHUNKS; i += NTH) {
          const u32 peer = (rank + 1 + (u32)(i / CHUNKS)) % CL;
          const int c = i % CHUNKS;
          const u32 at = slice + (u32)((c / CPR) * L::LDH * SZ + 16 * (c % CPR));
          st_async16(map_rank(at, peer), at, map_rank(bar, peer));
        }
        if (threadIdx.x == 0) mbar_expect(bar, (CL - 1) * CHUNKS * 16);
        mbar_wait(bar, (u32)(t >> 1) & 1u);  // this buffer's (t / 2)-th phase
      }
    }
  }
  flush(hbuf + (T & 1) * ROWS * L::LDH, T - 1);

#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        i64 row = b0 + 8 * j + 2 * tq + c;
        if (row_ok[j][c]) {
#pragma unroll
          for (int s = 0; s < C::S; ++s)
            final_[(s * B + row) * HD + n * D + u0 + unit0 + 8 * nt] = from_float1<E>(st[s][nt][j][c]);
        }
      }
  if constexpr (CL > 1) cluster_sync();  // no CTA leaves while a peer may still access its shared memory
}

// ---------------------------------------------------------------------------------------------------------
// Forward over a cluster with K split over the warps (16-bit, ROWS = 1 to 8 batch rows per CTA), for heads whose R
// is more than a cluster's registers hold (e.g. LSTM D = 768: 295 KB of R per CTA of 16). CTA `rank` owns units
// [rank·U, rank·U + U) and their GR·U gate rows m = g·U + u, in MT = GR·U / 16 row tiles; a step's MMA is gates x batch
// = R_q (K = D) · hᵀ. Warp w = kg·MG + mg takes row tiles [mg·MPW, mg·MPW + MPW) over K steps [kg·KPW, kg·KPW + KPW):
// with W a multiple of 4 every SM scheduler issues the same MMAs, a warp reads only its K range of h, and a chain of
// dependent MMAs is KPW long. R as A fragments: each warp's first KR K steps in registers, the rest in shared memory in
// fragment order (a lane's 4 registers of a fragment in 16 contiguous bytes), read one K step ahead. The warps' partial
// sums meet in shared memory (f32 [KG][8 rows][GR·U + 4], conflict-free both ways); thread i then runs the cell for
// unit pairs p = i + j·NTH (row p / (U / 2), units 2·(p % (U / 2)) and + 1) and writes h into its CTA's slice of the
// next h buffer. After the step's second __syncthreads the CTA sends that slice to the other CTAs (st.async onto one
// mbarrier per buffer, as rnn_forward_t with KSM > 0), stores its outputs and loads the next step's x while the slices
// travel, then waits. Tried, slower (H200, LSTM / GRU 1 x 768 forward, same process): each warp sending its chunks as
// soon as it wrote them and arriving on the mbarrier instead of the second __syncthreads (2.44 / 2.27 against 2.39 /
// 2.22 ms); one bulk copy (TMA) per (peer, row) instead of the 16-byte st.async (2.70 / 2.51 against 2.45 / 2.30 ms).
// ROWS < 8: the MMA still takes 8 columns (rows ROWS..7 of both h buffers stay zero and their sums unread), but a CTA
// exchanges and runs the cell for ROWS rows only; the exchange is bandwidth-bound (11.5 KB into each CTA per step at
// LSTM 768, 8 rows), so fewer rows measured LSTM 1 x 768 2.22 -> 1.88 ms at 4 rows and 1.70-1.74 at 3 (B = 16: 4 or 6
// clusters instead of 2) where the extra clusters are resident at once.
template <int CELL, int D, int CL, int MG, int KG, int KR>
struct SplitLayout {  // shared memory (bytes); model.py: split_smem_bytes computes the same
  static constexpr int GR = CellOf<CELL>::type::GR, U = D / CL, MPW = GR * U / 16 / MG, KPW = D / 16 / KG;
  static constexpr int LDH = D + 8, LDM = GR * U + 4;  // h rows (16-bit elements), partial-sum rows (f32)
  static constexpr int H = 8 * LDH * 2, BARS = 2 * H, RED = BARS + 16, RS = RED + KG * 8 * LDM * 4;
  static constexpr int BYTES = RS + MG * KG * (KPW - KR) * MPW * 512;
};

template <int CELL, class E, int D, int CL, int MG, int KG, int KR, int ROWS>
__global__ void __launch_bounds__(32 * MG * KG, 1)
    rnn_forward_s(const typename E::T* __restrict__ x, const typename E::T* __restrict__ R,
                  const typename E::T* __restrict__ bias, const typename E::T* __restrict__ state0,
                  const int* __restrict__ lengths, typename E::T* __restrict__ y, typename E::T* __restrict__ final_,
                  float* __restrict__ pre, float* __restrict__ states, i64 B, i64 T, i64 NH, i64 save,
                  i64 smem_bytes) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  typedef SplitLayout<CELL, D, CL, MG, KG, KR> L;
  constexpr int U = D / CL, W = MG * KG, NTH = 32 * W, MPW = L::MPW, KPW = L::KPW, NF = KPW - KR;
  constexpr int PAIRS = ROWS * U / 2, PPT = (PAIRS + NTH - 1) / NTH;  // unit pairs of the rows; per thread
  constexpr bool FAST = Fast<E>::value;
  static_assert(sizeof(ET) == 2 && CL > 1 && D % CL == 0 && U % 8 == 0 && (C::GR * U) % (16 * MG) == 0 &&
                (D / 16) % (2 * KG) == 0 && KR >= 0 && KR <= KPW && ROWS >= 1 && ROWS <= 8,
                "bad split tiling");

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::BYTES) __trap();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const int mg = warp % MG, kg = warp / MG;
  const i64 n = blockIdx.x / CL, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const bool has_lengths = lengths != nullptr;
  const u32 rank = cluster_rank(), bars = smem_addr(smem + L::BARS), hbuf_addr = smem_addr(smem);
  const int u0 = (int)rank * U;
  ET* hbuf = (ET*)smem;
  float* red = (float*)(smem + L::RED);
  if (threadIdx.x == 0) {  // one mbarrier per h buffer: this thread's expect_tx and the peers' bytes
    mbar_init(bars, 1);
    mbar_init(bars + 8, 1);
    mbar_init_fence();
  }

  // R: this warp's fragment (kt, q) is row tile mg·MPW + q at K step kg·KPW + kt; register i holds its row
  // gq + 8·(i & 1) (gate m / U, unit u0 + m % U) at k = 16·(kg·KPW + kt) + 2·tq + 8·(i >> 1) and + 1. K steps past
  // KR: fragment (kt - KR)·MPW + q of the warp in shared memory, 512 bytes each (this lane's 16 at lane·16).
  u32 rf[KR > 0 ? KR : 1][MPW][4];
  {
    auto frag = [&](int kt, int q) -> uint4 {
      u32 a[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = (mg * MPW + q) * 16 + gq + 8 * (i & 1), unit = u0 + m % U;
        const int k = (kg * KPW + kt) * 16 + 2 * tq + 8 * (i >> 1);
        a[i] = pair_bits<E>(R + (((m / U) * NH + n) * D + unit) * D + k, 1);
      }
      return make_uint4(a[0], a[1], a[2], a[3]);
    };
#pragma unroll
    for (int kt = 0; kt < KR; ++kt)
#pragma unroll
      for (int q = 0; q < MPW; ++q) {
        const uint4 v = frag(kt, q);
        rf[kt][q][0] = v.x;
        rf[kt][q][1] = v.y;
        rf[kt][q][2] = v.z;
        rf[kt][q][3] = v.w;
        asm volatile("" ::: "memory");  // one fragment's loads at a time (see load_r)
      }
    uint4* rw = (uint4*)(smem + L::RS) + warp * NF * MPW * 32 + lane;
#pragma unroll 1
    for (int kt = KR; kt < KPW; ++kt)
#pragma unroll
      for (int q = 0; q < MPW; ++q) rw[((kt - KR) * MPW + q) * 32] = frag(kt, q);
  }

  // this thread's unit pairs j: row r, units u0 + uc and + 1 (uc even)
  const i64 sset = NH * (T + 1) * B * D;
  float st[PPT][C::S][2], bv[PPT][C::GB][2];
  u32 xv[PPT][C::GX];  // x of the step, both units' bits
  int len[PPT];
  bool ok[PPT], mine[PPT];
#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    const int p = threadIdx.x + j * NTH, unit = u0 + 2 * (p % (U / 2));
    const i64 row = b0 + p / (U / 2);
    mine[j] = p < PAIRS;
    ok[j] = mine[j] && row < B;
    len[j] = has_lengths && ok[j] ? lengths[row] : (int)T;
#pragma unroll
    for (int k = 0; k < C::GB; ++k) {
      const f2 v = mine[j] ? load2<E>(bias + k * HD + n * D + unit) : f2{0.0f, 0.0f};
      bv[j][k][0] = v.x;
      bv[j][k][1] = v.y;
    }
#pragma unroll
    for (int s = 0; s < C::S; ++s) {
      const f2 v = ok[j] ? load2<E>(state0 + (s * B + row) * HD + n * D + unit) : f2{0.0f, 0.0f};
      st[j][s][0] = v.x;
      st[j][s][1] = v.y;
      if (save && ok[j]) store2f(states + s * sset + row * D + n * (T + 1) * B * D + unit, v.x, v.y);
    }
#pragma unroll
    for (int g = 0; g < C::GX; ++g)
      xv[j][g] = ok[j] && T > 0 ? *(const u32*)(x + (row * T * C::GX + g) * HD + n * D + unit) : 0u;
  }
  for (int i = threadIdx.x; i < 16 * D; i += NTH) {  // h_0 of every unit (no exchange before step 0); the MMA's
    const int r = i / D % 8, unit = i % D;         // rows past ROWS zero in both buffers
    const ET v = r < ROWS && b0 + r < B ? state0[(b0 + r) * HD + n * D + unit] : from_float1<E>(0.0f);
    if (i < 8 * D || r >= ROWS) hbuf[(i / (8 * D)) * 8 * L::LDH + r * L::LDH + unit] = v;
  }
  cluster_sync();  // the mbarriers are initialised before any CTA sends

  // B = hᵀ by ldmatrix (see ldsm_x4) from this warp's first K step on; shared-memory A fragments at rsm
  const u32 lane_b = (u32)(((lane & 7) * L::LDH + (lane >> 3) * 8) * 2 + kg * KPW * 32);
  const u32 rsm = smem_addr(smem + L::RS) + (u32)((warp * NF * MPW * 32 + lane) * 16);
  for (i64 t = 0; t < T; ++t) {
    float acc[MPW][4];
#pragma unroll
    for (int q = 0; q < MPW; ++q)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[q][e] = 0.0f;
    {
      const u32 hb = hbuf_addr + (u32)((t & 1) * L::H) + lane_b;
      u32 bq[2][4], as[2][MPW][4];  // B of a K-step pair; A from shared memory, K step kt in as[kt & 1]
      auto load_a = [&](int kt) {
#pragma unroll
        for (int q = 0; q < MPW; ++q) {
          u32* a = as[kt & 1][q];
          asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                       : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                       : "r"(rsm + (u32)(((kt - KR) * MPW + q) * 512)) : "memory");
        }
      };
      ldsm_x4(hb, bq[0]);
      if (KR == 0) load_a(0);
#pragma unroll
      for (int kp = 0; kp < KPW / 2; ++kp) {
        if (kp + 1 < KPW / 2) ldsm_x4(hb + 64 * (kp + 1), bq[(kp + 1) & 1]);
#pragma unroll
        for (int i2 = 0; i2 < 2; ++i2) {
          const int kt = 2 * kp + i2;
          if (kt + 1 >= KR && kt + 1 < KPW) load_a(kt + 1);
#pragma unroll
          for (int q = 0; q < MPW; ++q)
            mma<E>(acc[q], kt < KR ? rf[kt < KR ? kt : 0][q] : as[kt & 1][q], &bq[kp & 1][2 * i2]);
        }
      }
    }
#pragma unroll
    for (int q = 0; q < MPW; ++q)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        red[(kg * 8 + 2 * tq + (e & 1)) * L::LDM + (mg * MPW + q) * 16 + gq + 8 * (e >> 1)] = acc[q][e];
    __syncthreads();

    ET* hn = hbuf + ((t + 1) & 1) * 8 * L::LDH;
    float ps[PPT][C::GB][2];  // the slots as saved
    bool lv[PPT];
#pragma unroll
    for (int j = 0; j < PPT; ++j) {
      if (!mine[j]) continue;
      const int p = threadIdx.x + j * NTH, r = p / (U / 2), uc = 2 * (p % (U / 2));
      float pe[2][4], se[2][4];
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int k = 0; k < 4; ++k) pe[h][k] = k < C::GB ? bv[j][k][h] : 0.0f;
#pragma unroll
      for (int g = 0; g < C::GX; ++g) {
        pe[0][C::xs(g)] += E::to_float((u16)(xv[j][g] & 0xffffu));
        pe[1][C::xs(g)] += E::to_float((u16)(xv[j][g] >> 16));
      }
#pragma unroll
      for (int g = 0; g < C::GR; ++g) {
        f2 sum = {0.0f, 0.0f};
#pragma unroll
        for (int w = 0; w < KG; ++w) {
          const f2 v = load2f(red + (w * 8 + r) * L::LDM + g * U + uc);
          sum.x += v.x;
          sum.y += v.y;
        }
        pe[0][C::rs(g)] += sum.x;
        pe[1][C::rs(g)] += sum.y;
      }
      lv[j] = !has_lengths || t < len[j];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int s = 0; s < 4; ++s) se[h][s] = s < C::S ? st[j][s][h] : 0.0f;
        C::template forward<FAST>(pe[h], se[h]);
        if (lv[j]) {
#pragma unroll
          for (int s = 0; s < C::S; ++s) st[j][s][h] = se[h][s];
        }
#pragma unroll
        for (int k = 0; k < C::GB; ++k) ps[j][k][h] = pe[h][k];
      }
      store2<E>(hn + r * L::LDH + u0 + uc, st[j][0][0], st[j][0][1]);
    }
    __syncthreads();
    if (t + 1 < T) {  // this CTA's slice of h_t to the other CTAs' buffer (t + 1) & 1, onto its mbarrier
      constexpr int CPR = U * 2 / 16, CHUNKS = ROWS * CPR;
      const int b = (int)((t + 1) & 1);
      const u32 slice = hbuf_addr + (u32)(b * L::H + u0 * 2), bar = bars + 8 * (u32)b;
      for (int i = threadIdx.x; i < (CL - 1) * CHUNKS; i += NTH) {
        const u32 peer = (rank + 1 + (u32)(i / CHUNKS)) % CL;
        const int c = i % CHUNKS;
        const u32 at = slice + (u32)((c / CPR) * L::LDH * 2 + 16 * (c % CPR));
        st_async16(map_rank(at, peer), at, map_rank(bar, peer));
      }
      if (threadIdx.x == 0) mbar_expect(bar, (CL - 1) * CHUNKS * 16);
    }
    // the outputs and the next step's x while the slices travel
#pragma unroll
    for (int j = 0; j < PPT; ++j) {
      if (!ok[j]) continue;
      const int p = threadIdx.x + j * NTH, unit = u0 + 2 * (p % (U / 2));
      const i64 row = b0 + p / (U / 2);
      store2<E>(y + (row * T + t) * HD + n * D + unit, lv[j] ? st[j][0][0] : 0.0f, lv[j] ? st[j][0][1] : 0.0f);
      if (save) {
#pragma unroll
        for (int k = 0; k < C::GB; ++k)
          store2f(pre + ((t * B + row) * C::GB + k) * HD + n * D + unit, ps[j][k][0], ps[j][k][1]);
#pragma unroll
        for (int s = 0; s < C::S; ++s)
          store2f(states + s * sset + ((n * (T + 1) + t + 1) * B + row) * D + unit, st[j][s][0], st[j][s][1]);
      }
      if (t + 1 < T) {
#pragma unroll
        for (int g = 0; g < C::GX; ++g) xv[j][g] = *(const u32*)(x + ((row * T + t + 1) * C::GX + g) * HD + n * D + unit);
      }
    }
    if (t + 1 < T) mbar_wait(bars + 8 * (u32)((t + 1) & 1), (u32)(t >> 1) & 1u);  // this buffer's (t / 2)-th phase
  }

#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    if (!ok[j]) continue;
    const int p = threadIdx.x + j * NTH, unit = u0 + 2 * (p % (U / 2));
    const i64 row = b0 + p / (U / 2);
#pragma unroll
    for (int s = 0; s < C::S; ++s) store2<E>(final_ + (s * B + row) * HD + n * D + unit, st[j][s][0], st[j][s][1]);
  }
  cluster_sync();  // no CTA leaves while a peer may still access its shared memory
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

  BwInputs<CELL, E, D, STAGES, ROWS, NTH> in;  // step t's inputs, t descending, STAGES - 1 steps ahead
  in.init(pre, states, dy, B, T, NH, n, b0, valid_rows);
  prologue<STAGES>(in, ring_addr, T);

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
    fetch(in, ring_addr, fill, it + STAGES - 1 < T);
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

// Backward as dhᵀ = Rᵀ · dpᵀ (the launch picks it where the kernel above would need NT >= 2, i.e. D = 128): A =
// R fragments with M = 16 hidden units j per tile (A[m][k = (g, i)] = R[g, n, i, j0 + u(m)]), B = dp from the
// same [ROWS][LDPT] shared buffer (every slot, in order) with N = 8 batch rows, so 8-row tiles waste no MMA
// work. Warp w owns NT tiles of 16 units. The tile's rows are permuted, u(m) = 2·m for m < 8 and 2·(m - 8) + 1
// above, so that a thread's two accumulator rows gq and gq + 8 (h = 0, 1) are the adjacent units j0 + 2·gq + h:
// its saved slots, states and dy come in 8- / 4-byte pairs and its dp leaves in pairs. Its batch rows are
// 8·jb + 2·tq + c (c = 0, 1). dgate leaves from the dp buffer during the next step. Same arguments, saved
// tensors and outputs as rnn_backward.
template <int CELL, class E, int D, int NT, int STAGES, int ROWS>
__global__ void __launch_bounds__(32 * (D / (16 * NT)), 1)
    rnn_backward_t(const typename E::T* __restrict__ R, const float* __restrict__ pre,
                   const float* __restrict__ states, const int* __restrict__ lengths,
                   const typename E::T* __restrict__ dy, const typename E::T* __restrict__ dfinal,
                   typename E::T* __restrict__ dgate, float* __restrict__ db_part, float* __restrict__ dstate0, i64 B,
                   i64 T, i64 NH, i64 smem_bytes) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  typedef Layout<CELL, E, D, STAGES, ROWS> L;
  constexpr int NB = ROWS / 8;  // batch tiles of 8 (the MMA's N)
  constexpr bool FAST = Fast<E>::value;
  constexpr int W = D / (16 * NT), NTH = 32 * W, KT = C::GR * D / E::KSTEP, SZ = (int)sizeof(ET);
  constexpr int ACCS = NT > 1 ? 1 : KT >= 4 ? 4 : KT;  // independent accumulator chains per tile
  static_assert(D % 16 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::BW_T_BYTES) __trap();
  ET* pbuf = (ET*)smem;
  const unsigned char* ring = smem + 2 * L::BW_T_P;
  const u32 ring_addr = smem_addr(ring);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  // 16-bit dp with D >= 32 (a K-step pair never straddles two slots): B fragments by ldmatrix (see ldsm_x4)
  constexpr bool LDSM = SZ == 2 && D >= 32;
  const u32 pbuf_addr = smem_addr(pbuf), lane_b = (u32)(((lane & 7) * L::LDPT + (lane >> 3) * 8) * SZ);
  const i64 n = blockIdx.x, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);
  const bool has_lengths = lengths != nullptr;

  // R as A fragments: row m of tile nt is unit 16·(warp·NT + nt) + m; k = g·D + i
  u32 rf[NT][KT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        int j = (warp * NT + nt) * 16 + 2 * gq + (i & 1);  // the row permutation u(m) above
        int k = kt * E::KSTEP + E::PAIR * tq + (i >> 1) * (E::KSTEP / 2);
        int g = k / D, ii = k % D;
        rf[nt][kt][i] = pair_bits<E>(R + ((g * NH + n) * D + ii) * D + j, D);
      }

  BwInputs<CELL, E, D, STAGES, ROWS, NTH> in;  // step t's inputs, t descending, STAGES - 1 steps ahead
  in.init(pre, states, dy, B, T, NH, n, b0, valid_rows);
  prologue<STAGES>(in, ring_addr, T);

  float dv[C::S][NT][2][NB][2];  // [state][tile][unit half h][batch tile][c]
  float db[C::GB][NT][2];
  int len[NB][2];
  bool row_ok[NB][2];
  column_rows<NB>(lengths, has_lengths, B, T, b0, tq, row_ok, len);
  const int unit0 = warp * NT * 16 + 2 * gq;  // unit of (tile nt, h): unit0 + 16·nt + h
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int unit = unit0 + 16 * nt + h;
#pragma unroll
      for (int k = 0; k < C::GB; ++k) db[k][nt][h] = 0.0f;
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          i64 row = b0 + 8 * jb + 2 * tq + c;
#pragma unroll
          for (int s = 0; s < C::S; ++s)
            dv[s][nt][h][jb][c] = row_ok[jb][c] ? to_float1<E>(dfinal[(s * B + row) * HD + n * D + unit]) : 0.0f;
        }
    }
  for (int i = threadIdx.x; i < ROWS * L::LDPT; i += NTH) pbuf[ROWS * L::LDPT + i] = ET(0);
  // dgate[b0 + r, t, k, n, :] (sets HD, rows T·GB·HD apart) of the previous step (t + 1) from its dp buffer, in
  // 16-byte chunks; the base moves back by GB·HD elements per step
  TileStore<C::GB, ROWS, D * SZ, D * SZ, L::LDPT * SZ, NTH> gstore;
  gstore.init(HD * SZ, T * C::GB * HD * SZ, valid_rows);
  unsigned char* gbase = (unsigned char*)(dgate + (b0 * T + T - 1) * C::GB * HD + n * D);
  auto flush = [&](const ET* pp) {
    gstore.template store<false>((const unsigned char*)pp, gbase, 0);
    gbase -= C::GB * HD * SZ;
  };
  // dv[0] += (dp · R)ᵀ for the dp in shared buffer pr
  auto mma_step = [&](const ET* pr) {
    float sum[NT][NB][4];
    dp_times_r<E, L, NT, KT, NB, ACCS, LDSM>(rf, pr, pbuf_addr + (u32)((const unsigned char*)pr -
                                             (const unsigned char*)pbuf) + lane_b, gq, tq, sum);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          dv[0][nt][e >> 1][jb][e & 1] += sum[nt][jb][e];  // rows gq (h = 0) and gq + 8 (h = 1), columns 2·tq + c
  };
  cp_async_wait<STAGES - 2>();
  __syncthreads();

  int stage = 0, fill = STAGES - 1;
  for (i64 it = 0; it < T; ++it) {
    const i64 t = T - 1 - it;
    fetch(in, ring_addr, fill, it + STAGES - 1 < T);
    fill = fill + 1 == STAGES ? 0 : fill + 1;
    mma_step(pbuf + ((it + 1) & 1) * ROWS * L::LDPT);
    if (it > 0) flush(pbuf + ((it + 1) & 1) * ROWS * L::LDPT);

    const unsigned char* at = ring + stage * L::BW_STAGE;
    const float* sslot = (const float*)at;
    const float* sstate = (const float*)(at + L::BW_SLOTS);
    const ET* sdy = (const ET*)(at + L::BW_SLOTS + L::BW_STATES);
    ET* pw = pbuf + (it & 1) * ROWS * L::LDPT;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int unit = unit0 + 16 * nt;  // h = 0; h = 1 is unit + 1
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int r = 8 * jb + 2 * tq + c;
          bool live = (!has_lengths || t < len[jb][c]) && row_ok[jb][c];
          f2 slot2[4], state2[4];  // both units' saved slots and states: one 8-byte shared load each
#pragma unroll
          for (int k = 0; k < 4; ++k)
            slot2[k] = k < C::GB ? load2f(sslot + (k * ROWS + r) * L::LDF + unit) : f2{0.0f, 0.0f};
#pragma unroll
          for (int s = 0; s < 4; ++s)
            state2[s] = s < C::S ? load2f(sstate + (s * ROWS + r) * L::LDF + unit) : f2{0.0f, 0.0f};
          f2 gy = load2<E>(sdy + r * L::LDH + unit);
          float dp[4][2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float pe[4], se[4], de[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) pe[k] = h == 0 ? slot2[k].x : slot2[k].y;
#pragma unroll
            for (int s = 0; s < 4; ++s) {
              se[s] = h == 0 ? state2[s].x : state2[s].y;
              de[s] = s < C::S ? dv[s][nt][h][jb][c] : 0.0f;
            }
            de[0] += h == 0 ? gy.x : gy.y;
            C::template backward<FAST>(pe, se, de);
#pragma unroll
            for (int k = 0; k < 4; ++k) dp[k][h] = live ? pe[k] : 0.0f;
            if (live) {
#pragma unroll
              for (int s = 0; s < C::S; ++s) dv[s][nt][h][jb][c] = de[s];
            }
          }
#pragma unroll
          for (int k = 0; k < C::GB; ++k) {
            db[k][nt][0] += dp[k][0];
            db[k][nt][1] += dp[k][1];
            store2<E>(pw + r * L::LDPT + k * D + unit, dp[k][0], dp[k][1]);
          }
        }
    }
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
  }
  mma_step(pbuf + ((T - 1) & 1) * ROWS * L::LDPT);
  flush(pbuf + ((T - 1) & 1) * ROWS * L::LDPT);

#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int unit = unit0 + 16 * nt + h;
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          i64 row = b0 + 8 * jb + 2 * tq + c;
          if (row_ok[jb][c]) {
#pragma unroll
            for (int s = 0; s < C::S; ++s) dstate0[(s * B + row) * HD + n * D + unit] = dv[s][nt][h][jb][c];
          }
        }
      // db_part[tile · 8 + 2·tq (+ 1: zeros), k, n, unit]: this thread's rows summed; the host sums all 8 in order
#pragma unroll
      for (int k = 0; k < C::GB; ++k) {
        db_part[((blockIdx.y * 8 + 2 * tq) * C::GB + k) * HD + n * D + unit] = db[k][nt][h];
        db_part[((blockIdx.y * 8 + 2 * tq + 1) * C::GB + k) * HD + n * D + unit] = 0.0f;
      }
    }
}

// Backward of a head over a thread-block cluster of CL CTAs (sm_90; the forward's split): CTA `rank` runs the
// cell's backward for units [u0, u0 + U), U = D / CL, and holds the rows of R of those units (the forward's
// slice). dh_{t} = Σ_g R_gᵀ dp_g needs every unit's dp, so instead of exchanging dp each CTA computes the partial
// sum over its own units for all D units, dhᵀ_part = R_qᵀ · dp_qᵀ (M = D in tiles of 16 units as rnn_backward_t,
// K = GR·U, B = its dp from shared memory), writes it to shared memory and sends each other CTA the f32 rows of
// that CTA's units by asynchronous remote stores onto the receiver's mbarrier (step parity, as the forward);
// each CTA adds its own partial and the CL - 1 received ones, in a fixed order. The cell's backward maps thread
// i to unit pairs (u0 + 2·(q % (U/2)), + 1) of row q / (U/2), q = i + e·NTH. Same arguments and saved tensors as
// rnn_backward_t; db_part has ROWS rows per batch tile (one per row).
template <int CELL, class E, int D, int NT, int STAGES, int ROWS, int CL>
__global__ void __launch_bounds__(32 * (D / (16 * NT)), 1)
    rnn_backward_c(const typename E::T* __restrict__ R, const float* __restrict__ pre,
                   const float* __restrict__ states, const int* __restrict__ lengths,
                   const typename E::T* __restrict__ dy, const typename E::T* __restrict__ dfinal,
                   typename E::T* __restrict__ dgate, float* __restrict__ db_part, float* __restrict__ dstate0, i64 B,
                   i64 T, i64 NH, i64 smem_bytes) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  constexpr int U = D / CL;
  typedef Layout<CELL, E, D, STAGES, ROWS, U> L;
  constexpr int NB = ROWS / 8;
  constexpr bool FAST = Fast<E>::value;
  constexpr int W = D / (16 * NT), NTH = 32 * W, KT = C::GR * U / E::KSTEP, SZ = (int)sizeof(ET);
  constexpr int ACCS = NT > 1 ? 1 : KT >= 4 ? 4 : KT;
  constexpr int EP = U * ROWS / (2 * NTH);  // unit pairs per thread in the cell's backward
  static_assert(CL > 1 && U % 16 == 0 && EP >= 1 && EP * 2 * NTH == U * ROWS && STAGES >= 2, "bad tiling");
  static_assert(ROWS == 8 || ROWS == 16, "bad tiling");

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::BW_C_BYTES) __trap();
  ET* pbuf = (ET*)smem;
  const unsigned char* ring = smem + 2 * L::BW_T_P;
  const u32 ring_addr = smem_addr(ring);
  float* part = (float*)(smem + L::BW_T_BYTES);
  const float* recv = (const float*)(smem + L::BW_T_BYTES + L::BW_C_PART);
  const u32 part_addr = smem_addr(part), recv_addr = smem_addr(recv);
  const u32 bars = smem_addr(smem + L::BW_T_BYTES + L::BW_C_PART + 2 * L::BW_C_RECV);
  const u32 rank = cluster_rank();
  const int u0 = (int)rank * U;
  if (threadIdx.x == 0) {
    mbar_init(bars, 1);
    mbar_init(bars + 8, 1);
    mbar_init_fence();
  }

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  constexpr bool LDSM = SZ == 2 && U % 32 == 0;  // a K-step pair never straddles two slots
  const u32 pbuf_addr = smem_addr(pbuf), lane_b = (u32)(((lane & 7) * L::LDPT + (lane >> 3) * 8) * SZ);
  const i64 n = blockIdx.x / CL, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);
  const bool has_lengths = lengths != nullptr;

  // R as A fragments: row m of tile nt is unit j = 16·(warp·NT + nt) + u(m) of the head; k = g·U + i:
  // A[m][k] = R[g, n, u0 + i, j]
  u32 rf[NT][KT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        int j = (warp * NT + nt) * 16 + 2 * gq + (i & 1);
        int k = kt * E::KSTEP + E::PAIR * tq + (i >> 1) * (E::KSTEP / 2);
        int g = k / U, ii = k % U;
        rf[nt][kt][i] = pair_bits<E>(R + ((g * NH + n) * D + u0 + ii) * D + j, D);
      }

  BwInputs<CELL, E, D, STAGES, ROWS, NTH, U> in;  // this CTA's units' inputs, t descending
  in.init(pre, states, dy, B, T, NH, n, b0, valid_rows, u0);
  prologue<STAGES>(in, ring_addr, T);

  // this thread's elements: row er[e], local units eu[e], eu[e] + 1
  float dv[C::S][EP][2], db[C::GB][EP][2];
  int er[EP], eu[EP], elen[EP];
  bool eok[EP];
#pragma unroll
  for (int e = 0; e < EP; ++e) {
    const int q = threadIdx.x + e * NTH;
    er[e] = q / (U / 2);
    eu[e] = 2 * (q % (U / 2));
    const i64 row = b0 + er[e];
    eok[e] = row < B;
    elen[e] = has_lengths && eok[e] ? lengths[row] : (int)T;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int k = 0; k < C::GB; ++k) db[k][e][h] = 0.0f;
#pragma unroll
      for (int s = 0; s < C::S; ++s)
        dv[s][e][h] = eok[e] ? to_float1<E>(dfinal[(s * B + row) * HD + n * D + u0 + eu[e] + h]) : 0.0f;
    }
  }
  for (int i = threadIdx.x; i < ROWS * L::LDPT; i += NTH) pbuf[ROWS * L::LDPT + i] = ET(0);
  TileStore<C::GB, ROWS, U * SZ, U * SZ, L::LDPT * SZ, NTH> gstore;  // dgate of the previous step, as rnn_backward_t
  gstore.init(HD * SZ, T * C::GB * HD * SZ, valid_rows);
  unsigned char* gbase = (unsigned char*)(dgate + (b0 * T + T - 1) * C::GB * HD + n * D + u0);
  auto flush = [&](const ET* pp) {
    gstore.template store<false>((const unsigned char*)pp, gbase, 0);
    gbase -= C::GB * HD * SZ;
  };
  // the partial dh of every unit from this CTA's dp in pr (into part), and its rows of the other CTAs' units to
  // them (receive buffer it & 1)
  auto reduce = [&](const ET* pr, i64 it) {
    float sum[NT][NB][4];
    dp_times_r<E, L, NT, KT, NB, ACCS, LDSM>(rf, pr, pbuf_addr + (u32)((const unsigned char*)pr -
                                             (const unsigned char*)pbuf) + lane_b, gq, tq, sum);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int jb = 0; jb < NB; ++jb)
#pragma unroll
        for (int c = 0; c < 2; ++c)
          store2f(part + (8 * jb + 2 * tq + c) * L::LDR + (warp * NT + nt) * 16 + 2 * gq, sum[nt][jb][c],
                  sum[nt][jb][2 + c]);
    __syncthreads();
    constexpr int CPR = U / 4, CH = ROWS * CPR;  // 16-byte chunks of a row of U floats, per peer
    const int b = (int)(it & 1);
    const u32 bar = bars + 8 * b;
    for (int i = threadIdx.x; i < (CL - 1) * CH; i += NTH) {
      const u32 peer = (rank + 1 + (u32)(i / CH)) % CL;
      const int c = i % CH, row = c / CPR, col = c % CPR;
      const u32 src = part_addr + (u32)((row * L::LDR + (int)peer * U) * 4 + 16 * col);
      const u32 dst = recv_addr + (u32)(b * L::BW_C_RECV + (((int)rank * ROWS + row) * U) * 4 + 16 * col);
      st_async16(map_rank(dst, peer), src, map_rank(bar, peer));
    }
    if (threadIdx.x == 0) mbar_expect(bar, (CL - 1) * CH * 16);
  };
  // this CTA's partial and the received ones for element e (units eu[e], eu[e] + 1 of row er[e]), in rank order
  auto gathered = [&](i64 it, int e) {
    mbar_wait(bars + 8 * (u32)(it & 1), (u32)(it >> 1) & 1u);
    const float* rb = recv + (it & 1) * (L::BW_C_RECV / 4);
    f2 sum{0.0f, 0.0f};
#pragma unroll
    for (int p = 0; p < CL; ++p) {
      const f2 v = p == (int)rank ? load2f(part + er[e] * L::LDR + u0 + eu[e])
                                  : load2f(rb + (p * ROWS + er[e]) * U + eu[e]);
      sum.x += v.x;
      sum.y += v.y;
    }
    return sum;
  };
  cp_async_wait<STAGES - 2>();
  cluster_sync();  // the mbarriers are initialised before any CTA sends

  int stage = 0, fill = STAGES - 1;
  for (i64 it = 0; it < T; ++it) {
    const i64 t = T - 1 - it;
    fetch(in, ring_addr, fill, it + STAGES - 1 < T);
    fill = fill + 1 == STAGES ? 0 : fill + 1;
    reduce(pbuf + ((it + 1) & 1) * ROWS * L::LDPT, it);
    if (it > 0) flush(pbuf + ((it + 1) & 1) * ROWS * L::LDPT);

    const unsigned char* at = ring + stage * L::BW_STAGE;
    const float* sslot = (const float*)at;
    const float* sstate = (const float*)(at + L::BW_SLOTS);
    const ET* sdy = (const ET*)(at + L::BW_SLOTS + L::BW_STATES);
    ET* pw = pbuf + (it & 1) * ROWS * L::LDPT;
#pragma unroll
    for (int e = 0; e < EP; ++e) {
      const int r = er[e], unit = eu[e];
      const bool live = (!has_lengths || t < elen[e]) && eok[e];
      const f2 dh = gathered(it, e);
      dv[0][e][0] += dh.x;
      dv[0][e][1] += dh.y;
      f2 slot2[4], state2[4];
#pragma unroll
      for (int k = 0; k < 4; ++k)
        slot2[k] = k < C::GB ? load2f(sslot + (k * ROWS + r) * L::LDF + unit) : f2{0.0f, 0.0f};
#pragma unroll
      for (int s = 0; s < 4; ++s)
        state2[s] = s < C::S ? load2f(sstate + (s * ROWS + r) * L::LDF + unit) : f2{0.0f, 0.0f};
      const f2 gy = load2<E>(sdy + r * L::LDH + unit);
      float dp[4][2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float pe[4], se[4], de[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) pe[k] = h == 0 ? slot2[k].x : slot2[k].y;
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          se[s] = h == 0 ? state2[s].x : state2[s].y;
          de[s] = s < C::S ? dv[s][e][h] : 0.0f;
        }
        de[0] += h == 0 ? gy.x : gy.y;
        C::template backward<FAST>(pe, se, de);
#pragma unroll
        for (int k = 0; k < 4; ++k) dp[k][h] = live ? pe[k] : 0.0f;
        if (live) {
#pragma unroll
          for (int s = 0; s < C::S; ++s) dv[s][e][h] = de[s];
        }
      }
#pragma unroll
      for (int k = 0; k < C::GB; ++k) {
        db[k][e][0] += dp[k][0];
        db[k][e][1] += dp[k][1];
        store2<E>(pw + r * L::LDPT + k * U + unit, dp[k][0], dp[k][1]);
      }
    }
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
  }
  reduce(pbuf + ((T - 1) & 1) * ROWS * L::LDPT, T);
  flush(pbuf + ((T - 1) & 1) * ROWS * L::LDPT);
#pragma unroll
  for (int e = 0; e < EP; ++e) {
    const f2 dh = gathered(T, e);
    dv[0][e][0] += dh.x;
    dv[0][e][1] += dh.y;
    const i64 row = b0 + er[e];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int unit = u0 + eu[e] + h;
      if (eok[e]) {
#pragma unroll
        for (int s = 0; s < C::S; ++s) dstate0[(s * B + row) * HD + n * D + unit] = dv[s][e][h];
      }
#pragma unroll
      for (int k = 0; k < C::GB; ++k)  // zeros for rows outside the batch: the host sums every row
        db_part[((blockIdx.y * ROWS + er[e]) * C::GB + k) * HD + n * D + unit] = db[k][e][h];
    }
  }
  cluster_sync();  // no CTA leaves while a peer may still access its shared memory
}

// ---------------------------------------------------------------------------------------------------------
// Cooperative-grid kernels (16-bit): a head whose R fits no cluster (D = 1024 / 2048, and every head beyond one
// CTA on sm_80, which has no clusters) over G = D / U CTAs of a cooperative launch (grid x = rank, y = head, z =
// 16-row batch tile; every CTA resident). CTA `rank` owns units [rank·U, rank·U + U). A step's MMA is
// out (16 batch rows x N) = A (16 x K) · B (K x N) with K split over the W warps (KW K steps each):
//   forward:  A = h_{t-1} (K = D), B[k][(g, u)] = R[g, n, u, k] (N = GR·U gate rows of the CTA's units);
//   backward: A = dp_{t+1} of R's gates (K = GR·D, k = g·D + i), B[k][j] = R[g, n, i, j] (N = U units).
// B stays on chip: each warp's first KR K steps in registers, the rest in shared memory in fragment order (a
// thread's two registers of a fragment in 8 contiguous bytes, a warp's fragment 256: conflict-free). A is
// exchanged through global memory (L2) in fragment order too — a K step's 16 x 16 fragment is 32 lanes x 16
// bytes, so a lane's A fragment is one 16-byte cp.async.cg (L2 only, never a stale L1 line) — into a warp-private
// ring of NB chunks of CK K steps in flight. The warps' partial sums meet in shared memory; thread i then runs the
// cell for elements (row, unit) = divmod(i + j·NTH, U), writes A's elements of the next step into the exchange
// buffer (step parity), arrives at the barrier of the head's group (a counter in global memory, one per step),
// writes its outputs and loads the next step's inputs, and waits. Two exchange buffers suffice: a CTA writes
// buffer p at step t only after every CTA of its group passed the barrier of step t - 1, that is finished reading
// buffer p at step t - 1. (Tried: a flag per CTA, each warp waiting only for the CTAs whose slices it reads, the
// backward then slower: LSTM 1 x 768 forward + backward 6.14 against 5.91 ms, 1 x 2048 11.7 against 9.4, H200.)

// The barrier of a group of CTAs on a counter in global memory (zeroed before the launch), in two halves so that a
// CTA does its other work of the step in between: group_arrive counts this CTA in (after every thread's writes: the
// release covers what the CTA's threads wrote before the __syncthreads), group_wait waits until the group's n-th
// barrier is complete, the counter at target = n · (CTAs in the group). Writes before a CTA's arrive are visible
// to reads through L2 after any CTA's wait.
__device__ __forceinline__ void group_arrive(u32* counter) {
  __syncthreads();
  if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
}
__device__ __forceinline__ void group_wait(const u32* counter, u32 target) {
  if (threadIdx.x == 0) {
    u32 v;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
    } while ((int)(v - target) < 0);
  }
  __syncthreads();
}

// Index (in 16-bit elements) of A[r][k] (r < 16) in fragment order: K step k / 16 is 32 lanes x 4 registers x 2
// halves; register i of lane (gq, tq) holds row gq + 8·(i & 1), columns 2·tq + 8·(i >> 1) and + 1 (see mma)
__device__ __forceinline__ int frag_index(int r, int k) {
  const int kk = k & 15, lane = (r & 7) * 4 + ((kk & 7) >> 1), i = (r >> 3) + 2 * (kk >> 3);
  return (((k >> 4) * 32 + lane) * 4 + i) * 2 + (kk & 1);
}

// acc = this warp's KW K steps of A (fragment order in global memory; a: this lane's 16 bytes of the warp's first
// K step, the next K step 32 x 16 bytes on) times B (K steps < KR: rr; the rest: this lane's 8 bytes of fragment
// ((kt - KR)·NTL + nt) at shared address rsm + 256·(..)). A through the warp's ring at shared address ring (this
// lane's 16 bytes of slot 0's first K step; K step j of slot s is (s·CK + j)·512 bytes on), NB chunks of CK K
// steps in flight (chunk c in slot c % NB, refilled as soon as the MMAs move past it). Each K step's A and shared B fragments are loaded one K step ahead of its MMAs by asm volatile
// loads, which keep their place among the (asm volatile) MMAs: ptxas left to itself hoisted them further and
// spilled at random K-step counts.
template <class E, int NTL, int KW, int KR, int CK, int NB>
__device__ __forceinline__ void grid_mma(const uint4* a, u32 ring, const u32 (&rr)[KR][NTL][2], u32 rsm,
                                         float (&acc)[NTL][4]) {
  constexpr int NC = KW / CK, AHEAD = NB < NC ? NB : NC;  // chunks, chunks in flight
#pragma unroll
  for (int nt = 0; nt < NTL; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;
  auto issue = [&](int c) {
#pragma unroll
    for (int j = 0; j < CK; ++j) cp_async16(ring + (u32)(((c % NB) * CK + j) * 512), a + (c * CK + j) * 32, true);
    cp_async_commit();
  };
  // wait for chunk c: the chunks after it that are in flight may stay so
  auto wait_for = [&](int c) {
    const int later = (c + AHEAD < NC ? c + AHEAD : NC) - c - 1;
    if (later >= 7) cp_async_wait<7>();
    else if (later == 6) cp_async_wait<6>();
    else if (later == 5) cp_async_wait<5>();
    else if (later == 4) cp_async_wait<4>();
    else if (later == 3) cp_async_wait<3>();
    else if (later == 2) cp_async_wait<2>();
    else if (later == 1) cp_async_wait<1>();
    else cp_async_wait<0>();
  };
  u32 af[2][4], bf[2][NTL][2];
  auto load = [&](int kt) {
    const u32 at = ring + (u32)((((kt / CK) % NB) * CK + kt % CK) * 512);
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(af[kt & 1][0]), "=r"(af[kt & 1][1]), "=r"(af[kt & 1][2]), "=r"(af[kt & 1][3])
                 : "r"(at) : "memory");
    if (kt >= KR) {
#pragma unroll
      for (int nt = 0; nt < NTL; ++nt)
        asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];"
                     : "=r"(bf[kt & 1][nt][0]), "=r"(bf[kt & 1][nt][1])
                     : "r"(rsm + (u32)(((kt - KR) * NTL + nt) * 256)) : "memory");
    }
  };
#pragma unroll
  for (int c = 0; c < AHEAD; ++c) issue(c);
  wait_for(0);
  load(0);
#pragma unroll
  for (int kt = 0; kt < KW; ++kt) {
    const int nk = kt + 1;
    if (nk < KW) {
      if (nk % CK == 0) {  // chunk cn starts: chunk cn - 1's slot is read, chunk cn - 1 + NB goes there
        const int cn = nk / CK;
        if (cn - 1 + AHEAD < NC) issue(cn - 1 + AHEAD);
        wait_for(cn);
      }
      load(nk);
    }
#pragma unroll
    for (int nt = 0; nt < NTL; ++nt) mma<E>(acc[nt], af[kt & 1], kt < KR ? rr[kt < KR ? kt : 0][nt] : bf[kt & 1][nt]);
  }
}

// This warp's B fragments frag(kt, nt) (a lane's two registers) of K steps < KR into rr, the rest into shared memory
// at rw (fragment (kt - KR)·NTL + nt at rw[.. · 32]); the latter in a loop ptxas does not unroll, the former one
// fragment at a time, so that ptxas does not hoist every load of the prologue (that spilled).
template <int NTL, int KW, int KR, class F>
__device__ __forceinline__ void load_r(F frag, u32 (&rr)[KR][NTL][2], uint2* rw) {
#pragma unroll
  for (int kt = 0; kt < KR; ++kt)
#pragma unroll
    for (int nt = 0; nt < NTL; ++nt) {
      const uint2 v = frag(kt, nt);
      rr[kt][nt][0] = v.x;
      rr[kt][nt][1] = v.y;
      asm volatile("" ::: "memory");  // one fragment's loads at a time (all of them in flight spilled)
    }
#pragma unroll 1
  for (int kt = KR; kt < KW; ++kt)
#pragma unroll
    for (int nt = 0; nt < NTL; ++nt) rw[((kt - KR) * NTL + nt) * 32] = frag(kt, nt);
}

// Shared memory of the grid kernels, in bytes (launch.py: smem_bytes computes the same): B's shared-memory K
// steps, the A rings, the warps' partial sums [W][16][N + 8] (f32; the padding puts rows 8 banks apart)
template <int NTL, int KW, int KR, int CK, int NB, int W>
struct GridLayout {
  static constexpr int R_BYTES = W * (KW - KR) * NTL * 256, RING = W * NB * CK * 512, LDS = 8 * NTL + 8;
  static constexpr int RED = W * 16 * LDS * 4, BYTES = R_BYTES + RING + RED;
};

template <int CELL, class E, int D, int U, int W, int KR, int CK, int NB>
__global__ void __launch_bounds__(32 * W, 1)
    rnn_forward_g(const typename E::T* __restrict__ x, const typename E::T* __restrict__ R,
                  const typename E::T* __restrict__ bias, const typename E::T* __restrict__ state0,
                  const int* __restrict__ lengths, typename E::T* __restrict__ y, typename E::T* __restrict__ final_,
                  float* __restrict__ pre, float* __restrict__ states, i64 B, i64 T, i64 NH, i64 save,
                  i64 smem_bytes, u16* __restrict__ xchg, u32* __restrict__ counters) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  constexpr int G = D / U, NTH = 32 * W, KS = D / 16, KW = KS / W, NTL = C::GR * U / 8, UT = U / 8;
  constexpr int EPT = (16 * U + NTH - 1) / NTH;  // cell elements per thread
  typedef GridLayout<NTL, KW, KR, CK, NB, W> L;
  static_assert(sizeof(ET) == 2 && D % U == 0 && U % 8 == 0 && KS % W == 0 && KW % CK == 0 && KR >= 1 && KR <= KW &&
                NB >= 2 && NB <= 8, "bad grid tiling");
  constexpr bool FAST = Fast<E>::value;

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::BYTES) __trap();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const int u0 = blockIdx.x * U;
  const i64 n = blockIdx.y, b0 = (i64)blockIdx.z * 16, HD = NH * D, group = n * gridDim.z + blockIdx.z;
  const bool has_lengths = lengths != nullptr;
  u32* counter = counters + group;
  u16* xbuf = xchg + group * 2 * (KS * 256);  // two buffers of KS fragments (256 elements each)
  const u32 rsm = smem_addr(smem) + (u32)((warp * (KW - KR) * NTL * 32 + lane) * 8);
  const u32 ring = smem_addr(smem + L::R_BYTES) + (u32)(warp * NB * CK * 512 + lane * 16);
  float* red = (float*)(smem + L::R_BYTES + L::RING);

  // B fragments of this warp's K steps kw0 + kt: column (g, unit) = gate g, unit u0 + 8·(nt % UT) + gq
  u32 rr[KR][NTL][2];
  {
    auto frag = [&](int kt, int nt) -> uint2 {
      const int g = nt / UT, unit = u0 + (nt % UT) * 8 + gq, k = (warp * KW + kt) * 16 + 2 * tq;
      const ET* p = R + ((g * NH + n) * D + unit) * D + k;
      return make_uint2(pair_bits<E>(p, 1), pair_bits<E>(p + 8, 1));
    };
    load_r<NTL, KW, KR>(frag, rr, (uint2*)smem + warp * (KW - KR) * NTL * 32 + lane);
  }
  __syncthreads();  // keeps the loads below after R's (hoisted among them, they spilled)

  // this thread's cell elements j: row r[j] of the tile, unit u[j] of the CTA
  float st[EPT][C::S], bv[EPT][C::GB], xv[EPT][C::GX];
  int len[EPT];
  bool ok[EPT], mine[EPT];
  const i64 sset = NH * (T + 1) * B * D;
#pragma unroll
  for (int j = 0; j < EPT; ++j) {
    const int e = threadIdx.x + j * NTH, r = e / U, unit = u0 + e % U;
    const i64 row = b0 + r;
    mine[j] = e < 16 * U;
    ok[j] = mine[j] && row < B;
    len[j] = has_lengths && ok[j] ? lengths[row] : (int)T;
#pragma unroll
    for (int k = 0; k < C::GB; ++k) bv[j][k] = mine[j] ? to_float1<E>(bias[k * HD + n * D + unit]) : 0.0f;
#pragma unroll
    for (int s = 0; s < C::S; ++s) {
      st[j][s] = ok[j] ? to_float1<E>(state0[(s * B + row) * HD + n * D + unit]) : 0.0f;
      if (save && ok[j]) states[s * sset + row * D + n * (T + 1) * B * D + unit] = st[j][s];
    }
#pragma unroll
    for (int g = 0; g < C::GX; ++g)
      xv[j][g] = ok[j] && T > 0 ? to_float1<E>(x[(row * T * C::GX + g) * HD + n * D + unit]) : 0.0f;
    if (mine[j]) xbuf[frag_index(r, unit)] = from_float1<E>(st[j][0]);
  }
  group_arrive(counter);
  group_wait(counter, G);

  for (i64 t = 0; t < T; ++t) {
    float acc[NTL][4];
    grid_mma<E, NTL, KW, KR, CK, NB>((const uint4*)(xbuf + (t & 1) * (KS * 256)) + warp * KW * 32 + lane, ring, rr,
                                 rsm, acc);
#pragma unroll
    for (int nt = 0; nt < NTL; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        store2f(red + (warp * 16 + gq + 8 * h) * L::LDS + nt * 8 + 2 * tq, acc[nt][2 * h], acc[nt][2 * h + 1]);
    __syncthreads();

    u16* xn = xbuf + ((t + 1) & 1) * (KS * 256);
    float ps[EPT][C::GB];  // the slots as saved
    bool lv[EPT];
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      if (!mine[j]) continue;
      const int e = threadIdx.x + j * NTH, r = e / U, uc = e % U, unit = u0 + uc;
      float p[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) p[k] = k < C::GB ? bv[j][k] : 0.0f;
#pragma unroll
      for (int g = 0; g < C::GX; ++g) p[C::xs(g)] += xv[j][g];
#pragma unroll
      for (int g = 0; g < C::GR; ++g) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < W; ++w) sum += red[(w * 16 + r) * L::LDS + g * U + uc];
        p[C::rs(g)] += sum;
      }
      float se[4];
#pragma unroll
      for (int s = 0; s < 4; ++s) se[s] = s < C::S ? st[j][s] : 0.0f;
      C::template forward<FAST>(p, se);
      lv[j] = !has_lengths || t < len[j];
      if (lv[j]) {
#pragma unroll
        for (int s = 0; s < C::S; ++s) st[j][s] = se[s];
      }
#pragma unroll
      for (int k = 0; k < C::GB; ++k) ps[j][k] = p[k];
      xn[frag_index(r, unit)] = from_float1<E>(st[j][0]);
    }
    if (t + 1 < T) group_arrive(counter);
    // the outputs and the next step's x while the group arrives
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      if (!ok[j]) continue;
      const int e = threadIdx.x + j * NTH, unit = u0 + e % U;
      const i64 row = b0 + e / U;
      y[(row * T + t) * HD + n * D + unit] = from_float1<E>(lv[j] ? st[j][0] : 0.0f);
      if (save) {
#pragma unroll
        for (int k = 0; k < C::GB; ++k) pre[((t * B + row) * C::GB + k) * HD + n * D + unit] = ps[j][k];
#pragma unroll
        for (int s = 0; s < C::S; ++s) states[s * sset + ((n * (T + 1) + t + 1) * B + row) * D + unit] = st[j][s];
      }
      if (t + 1 < T) {
#pragma unroll
        for (int g = 0; g < C::GX; ++g) xv[j][g] = to_float1<E>(x[((row * T + t + 1) * C::GX + g) * HD + n * D + unit]);
      }
    }
    if (t + 1 < T) group_wait(counter, (u32)(G * (t + 2)));
  }

#pragma unroll
  for (int j = 0; j < EPT; ++j) {
    const int e = threadIdx.x + j * NTH, unit = u0 + e % U;
    const i64 row = b0 + e / U;
    if (ok[j]) {
#pragma unroll
      for (int s = 0; s < C::S; ++s) final_[(s * B + row) * HD + n * D + unit] = from_float1<E>(st[j][s]);
    }
  }
}

// Backward over a cooperative grid (see above): step t's slot gradients dp of R's gates go to the exchange
// buffer; after the group's barrier every CTA computes dh_t's share of its units as dp · R. Same arguments,
// saved tensors and outputs as rnn_backward, db_part with 16 rows per batch tile.
template <int CELL, class E, int D, int U, int W, int KR, int CK, int NB>
__global__ void __launch_bounds__(32 * W, 1)
    rnn_backward_g(const typename E::T* __restrict__ R, const float* __restrict__ pre,
                   const float* __restrict__ states, const int* __restrict__ lengths,
                   const typename E::T* __restrict__ dy, const typename E::T* __restrict__ dfinal,
                   typename E::T* __restrict__ dgate, float* __restrict__ db_part, float* __restrict__ dstate0, i64 B,
                   i64 T, i64 NH, i64 smem_bytes, u16* __restrict__ xchg, u32* __restrict__ counters) {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T ET;
  constexpr int G = D / U, NTH = 32 * W, KS = C::GR * D / 16, KW = KS / W, NTL = U / 8;
  constexpr int EPT = (16 * U + NTH - 1) / NTH;
  typedef GridLayout<NTL, KW, KR, CK, NB, W> L;
  static_assert(sizeof(ET) == 2 && D % U == 0 && U % 8 == 0 && KS % W == 0 && KW % CK == 0 && KR >= 1 && KR <= KW &&
                NB >= 2 && NB <= 8, "bad grid tiling");
  constexpr bool FAST = Fast<E>::value;

  extern __shared__ __align__(16) unsigned char smem[];
  if (smem_bytes < L::BYTES) __trap();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
  const int u0 = blockIdx.x * U;
  const i64 n = blockIdx.y, b0 = (i64)blockIdx.z * 16, HD = NH * D, group = n * gridDim.z + blockIdx.z;
  const bool has_lengths = lengths != nullptr;
  u32* counter = counters + group;
  u16* xbuf = xchg + group * 2 * (KS * 256);
  const u32 rsm = smem_addr(smem) + (u32)((warp * (KW - KR) * NTL * 32 + lane) * 8);
  const u32 ring = smem_addr(smem + L::R_BYTES) + (u32)(warp * NB * CK * 512 + lane * 16);
  float* red = (float*)(smem + L::R_BYTES + L::RING);

  // B fragments: B[k = (g, i)][j] = R[g, n, i, j], column j = u0 + 8·nt + gq
  u32 rr[KR][NTL][2];
  {
    auto frag = [&](int kt, int nt) -> uint2 {
      const int j = u0 + nt * 8 + gq, k = (warp * KW + kt) * 16 + 2 * tq, g = k / D, i = k % D;
      const ET* p = R + ((g * NH + n) * D + i) * D + j;
      return make_uint2(pair_bits<E>(p, D), pair_bits<E>(p + 8 * D, D));
    };
    load_r<NTL, KW, KR>(frag, rr, (uint2*)smem + warp * (KW - KR) * NTL * 32 + lane);
  }
  __syncthreads();  // keeps the loads below after R's (hoisted among them, they spilled)

  float dv[EPT][C::S], db[EPT][C::GB], pv[EPT][C::GB], sv[EPT][C::S], gy[EPT];
  int len[EPT];
  bool ok[EPT], mine[EPT];
  const i64 sset = NH * (T + 1) * B * D;
  // step t's saved slots, states and dy of element j into pv, sv, gy
  auto load_step = [&](int j, i64 row, int unit, i64 t) {
#pragma unroll
    for (int k = 0; k < C::GB; ++k) pv[j][k] = pre[((t * B + row) * C::GB + k) * HD + n * D + unit];
#pragma unroll
    for (int s = 0; s < C::S; ++s) sv[j][s] = states[s * sset + ((n * (T + 1) + t) * B + row) * D + unit];
    gy[j] = to_float1<E>(dy[(row * T + t) * HD + n * D + unit]);
  };
#pragma unroll
  for (int j = 0; j < EPT; ++j) {
    const int e = threadIdx.x + j * NTH, unit = u0 + e % U;
    const i64 row = b0 + e / U;
    mine[j] = e < 16 * U;
    ok[j] = mine[j] && row < B;
    len[j] = has_lengths && ok[j] ? lengths[row] : (int)T;
#pragma unroll
    for (int k = 0; k < C::GB; ++k) db[j][k] = 0.0f;
#pragma unroll
    for (int s = 0; s < C::S; ++s) dv[j][s] = ok[j] ? to_float1<E>(dfinal[(s * B + row) * HD + n * D + unit]) : 0.0f;
    if (ok[j] && T > 0) {
      load_step(j, row, unit, T - 1);
    } else {
#pragma unroll
      for (int k = 0; k < C::GB; ++k) pv[j][k] = 0.0f;
#pragma unroll
      for (int s = 0; s < C::S; ++s) sv[j][s] = 0.0f;
      gy[j] = 0.0f;
    }
  }
  __syncthreads();

  // dv[.][0] += (dp in exchange buffer `parity`) · R, for this thread's elements
  auto dp_times_r_g = [&](i64 parity) {
    float acc[NTL][4];
    grid_mma<E, NTL, KW, KR, CK, NB>((const uint4*)(xbuf + parity * (KS * 256)) + warp * KW * 32 + lane, ring, rr, rsm,
                                 acc);
#pragma unroll
    for (int nt = 0; nt < NTL; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        store2f(red + (warp * 16 + gq + 8 * h) * L::LDS + nt * 8 + 2 * tq, acc[nt][2 * h], acc[nt][2 * h + 1]);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      const int e = threadIdx.x + j * NTH, r = e / U, uc = e % U;
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < W; ++w) sum += mine[j] ? red[(w * 16 + r) * L::LDS + uc] : 0.0f;
      dv[j][0] += sum;
    }
  };

  for (i64 it = 0; it < T; ++it) {
    const i64 t = T - 1 - it;
    if (it > 0) dp_times_r_g((it - 1) & 1);
    u16* xn = xbuf + (it & 1) * (KS * 256);
    float ps[EPT][C::GB];  // the slot gradients
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      if (!mine[j]) continue;
      const int e = threadIdx.x + j * NTH, r = e / U, unit = u0 + e % U;
      const bool live = ok[j] && (!has_lengths || t < len[j]);
      float pe[4], se[4], de[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) pe[k] = k < C::GB ? pv[j][k] : 0.0f;
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        se[s] = s < C::S ? sv[j][s] : 0.0f;
        de[s] = s < C::S ? dv[j][s] : 0.0f;
      }
      de[0] += gy[j];
      C::template backward<FAST>(pe, se, de);
#pragma unroll
      for (int k = 0; k < 4; ++k) pe[k] = live ? pe[k] : 0.0f;
      if (live) {
#pragma unroll
        for (int s = 0; s < C::S; ++s) dv[j][s] = de[s];
      }
#pragma unroll
      for (int k = 0; k < C::GB; ++k) {
        db[j][k] += pe[k];
        ps[j][k] = pe[k];
      }
#pragma unroll
      for (int g = 0; g < C::GR; ++g) xn[frag_index(r, g * D + unit)] = from_float1<E>(pe[C::rs(g)]);
    }
    group_arrive(counter);
    // dgate and the next step's inputs while the group arrives
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      if (!ok[j]) continue;
      const int e = threadIdx.x + j * NTH, unit = u0 + e % U;
      const i64 row = b0 + e / U;
#pragma unroll
      for (int k = 0; k < C::GB; ++k) dgate[((row * T + t) * C::GB + k) * HD + n * D + unit] = from_float1<E>(ps[j][k]);
      if (t > 0) load_step(j, row, unit, t - 1);
    }
    group_wait(counter, (u32)(G * (it + 1)));
  }
  if (T > 0) dp_times_r_g((T - 1) & 1);

#pragma unroll
  for (int j = 0; j < EPT; ++j) {
    const int e = threadIdx.x + j * NTH, r = e / U, unit = u0 + e % U;
    const i64 row = b0 + r;
    if (ok[j]) {
#pragma unroll
      for (int s = 0; s < C::S; ++s) dstate0[(s * B + row) * HD + n * D + unit] = dv[j][s];
    }
    if (mine[j]) {
#pragma unroll
      for (int k = 0; k < C::GB; ++k) db_part[((blockIdx.z * 16 + r) * C::GB + k) * HD + n * D + unit] = db[j][k];
    }
  }
}
