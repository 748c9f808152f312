// Common pieces of the fusedrnn CUDA kernels, compiled at run time by NVRTC (no toolkit headers, no host
// compiler): element types and their conversions, the warp MMA, asynchronous copies, thread-block cluster
// helpers (mbarriers, distributed shared memory), and the tile copies between global and shared memory. Each
// kernel family's source (cta.cu, transposed.cu, cluster.cu, split_k.cu, grid.cu) includes what it needs; NVRTC
// compiles one family with its includes (kernels.py: source).
//
// Element types: bf16 / f16 with mma m16n8k16 (fp32 accumulation); f32 with three TF32 mma m16n8k8 per
// product (a = a_big + a_small: a_small·b_big + a_big·b_small + a_big·b_big), about fp32's accuracy.
//
// Layouts as the Triton backend's (see fusedrnn/backends/triton/kernels.py):
//   x [B, T, GX, NH, D], R [GR, NH, D, D] (R[g, n, i, j]: h_j -> gate g, unit i), b [GB, NH, D],
//   state0 / final [S, B, NH, D], y [B, T, NH, D], pre [T, B, GB, NH, D] f32, states [S, NH, T + 1, B, D] f32,
//   dgate [B, T, GB, NH, D], db_part [tiles · 8, GB, NH, D] f32 (over a cluster or a grid: tiles · ROWS),
//   dstate0 [S, B, NH, D] f32, resets [B, T] bool (null without resets).
//
// Resets (every family the same way, a run-time branch like lengths): where step t starts an episode of row b,
// the forward computes step t from the cell's initial states (CellGates::initial) without R·h (the initial h is 0,
// so its product is 0: the h operand in shared memory or the exchange buffers needs no change) and saves those
// initial states as the states before step t; y and the carried states are not touched otherwise. The backward
// zeroes the gradients of the states before step t (the direct ones and dp·R) once dp·R of step t is added.
#pragma once

// The dynamic shared memory the host's resource model (model.py) gives the variant being compiled, defined by
// kernels.py: each kernel checks it against its own layout at compile time.
#ifndef FRNN_SMEM_BYTES
#error "FRNN_SMEM_BYTES: the variant's shared memory in bytes (kernels.py: compile_variant defines it)"
#endif

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

// Every element of a (nested) float array set to 0: accumulators before a step's MMAs.
__device__ __forceinline__ void zero(float& v) { v = 0.0f; }
template <class A, int N>
__device__ __forceinline__ void zero(A (&a)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) zero(a[i]);
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
// asynchronous remote stores that complete on the receiver's mbarrier (half the cost of a cluster barrier per
// step: benchmarks/cluster_exchange.py, docs/large_heads.md).

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

template <class E>
struct Fast {
  static constexpr bool value = true;
};
template <>
struct Fast<F32> {
  static constexpr bool value = false;
};

// Whether step t starts an episode in batch row `row`: resets[row, t] (bool [B, T]; null without resets), read only
// for rows in the batch (ok) and steps that run (t < len: the row's length, or T).
__device__ __forceinline__ bool starts_at(const unsigned char* __restrict__ resets, bool ok, i64 row, i64 t, i64 T,
                                          int len) {
  return resets != nullptr && ok && t < len && resets[row * T + t] != 0;
}

}  // namespace frnn

// The arguments every forward kernel takes (the grid's add its exchange buffers), and every backward kernel's.
#define FRNN_FORWARD_PARAMS                                                                                           \
  const typename E::T *__restrict__ x, const typename E::T *__restrict__ R,                                          \
      const typename E::T *__restrict__ bias, const typename E::T *__restrict__ state0,                              \
      const int *__restrict__ lengths, const unsigned char *__restrict__ resets,                                      \
      typename E::T *__restrict__ y, typename E::T *__restrict__ final_,                                              \
      float *__restrict__ pre, float *__restrict__ states, i64 B, i64 T, i64 NH, i64 save, i64 smem_bytes
#define FRNN_FORWARD_ARGS x, R, bias, state0, lengths, resets, y, final_, pre, states, B, T, NH, save, smem_bytes
#define FRNN_BACKWARD_PARAMS                                                                                          \
  const typename E::T *__restrict__ R, const float *__restrict__ pre, const float *__restrict__ states,              \
      const int *__restrict__ lengths, const unsigned char *__restrict__ resets,                                      \
      const typename E::T *__restrict__ dy, const typename E::T *__restrict__ dfinal,                                 \
      typename E::T *__restrict__ dgate, float *__restrict__ db_part, float *__restrict__ dstate0, i64 B, i64 T,      \
      i64 NH, i64 smem_bytes
// What every kernel names: its cell C, its element type ET, and FAST (the approximate σ / tanh of 16-bit inputs).
#define FRNN_CELL_TYPES                   \
  typedef typename CellOf<CELL>::type C;  \
  typedef typename E::T ET;               \
  constexpr bool FAST = Fast<E>::value
// A thread's warp, lane and the lane's MMA fragment coordinates (row group gq, thread in group tq).
#define FRNN_LANES const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3
// One CTA per (head, tile of ROWS batch rows): its head n, first row b0 and the rows of the batch it holds.
#define FRNN_CTA_TILE                                                  \
  FRNN_LANES;                                                          \
  const i64 n = blockIdx.x, b0 = (i64)blockIdx.y * ROWS, HD = NH * D; \
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);         \
  const bool has_lengths = lengths != nullptr
// Dynamic shared memory: the host's size (model.py) must be the kernel's, and a launch with less traps.
#define FRNN_SHARED_MEMORY(BYTES)                                                                             \
  extern __shared__ __align__(16) unsigned char smem[];                                                      \
  static_assert((BYTES) == FRNN_SMEM_BYTES, "the host's shared memory (model.py) differs from the kernel's"); \
  if (smem_bytes < (BYTES)) __trap()
