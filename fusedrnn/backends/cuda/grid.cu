// Cooperative-grid kernels (16-bit): a head whose R fits no cluster (D = 1024 / 2048, and every head beyond one CTA on
// sm_80, which has no clusters) over G = D / U CTAs of a cooperative launch (grid x = rank, y = head, z = 16-row batch
// tile; every CTA resident). CTA `rank` owns units [rank·U, rank·U + U). A step's MMA is out (16 batch rows x N) = A
// (16 x K) · B (K x N) with K split over the W warps (KW K steps each): forward:  A = h_{t-1} (K = D), B[k][(g, u)] =
// R[g, n, u, k] (N = GR·U gate rows of the CTA's units); backward: A = dp_{t+1} of R's gates (K = GR·D, k = g·D + i),
// B[k][j] = R[g, n, i, j] (N = U units). B stays on chip: each warp's first KR K steps in registers, the rest in shared
// memory in fragment order (a thread's two registers of a fragment in 8 contiguous bytes, a warp's fragment 256:
// conflict-free). A is exchanged through global memory (L2) in fragment order too — a K step's 16 x 16 fragment is 32
// lanes x 16 bytes, so a lane's A fragment is one 16-byte cp.async.cg (L2 only, never a stale L1 line) — into a
// warp-private ring of NB chunks of CK K steps in flight. The warps' partial sums meet in shared memory; thread i then
// runs the cell for elements (row, unit) = divmod(i + j·NTH, U), writes A's elements of the next step into the exchange
// buffer (step parity), arrives at the barrier of the head's group (a counter in global memory, one per step), writes
// its outputs and loads the next step's inputs, and waits. Two exchange buffers suffice: a CTA writes buffer p at step
// t only after every CTA of its group passed the barrier of step t - 1, that is finished reading buffer p at step t -
// 1. (A flag per CTA instead measured slower: docs/journal/kernel-choices.md.)
#include "cells.cuh"

using namespace frnn;


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
  zero(acc);
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
    forward_grid(FRNN_FORWARD_PARAMS, u16* __restrict__ xchg, u32* __restrict__ counters) {
  FRNN_CELL_TYPES;
  constexpr int G = D / U, NTH = 32 * W, KS = D / 16, KW = KS / W, NTL = C::GR * U / 8, UT = U / 8;
  constexpr int EPT = (16 * U + NTH - 1) / NTH;  // cell elements per thread
  typedef GridLayout<NTL, KW, KR, CK, NB, W> L;
  static_assert(sizeof(ET) == 2 && D % U == 0 && U % 8 == 0 && KS % W == 0 && KW % CK == 0 && KR >= 1 && KR <= KW &&
                NB >= 2 && NB <= 8, "bad grid tiling");

  FRNN_SHARED_MEMORY(L::BYTES);
  FRNN_LANES;
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
  bool sc[EPT];  // whether step t starts an episode (its states are the cell's initial ones, without R·h)
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
    sc[j] = starts_at(resets, ok[j], row, 0, T, len[j]);
#pragma unroll
    for (int s = 0; s < C::S; ++s) {
      st[j][s] = ok[j] ? to_float1<E>(state0[(s * B + row) * HD + n * D + unit]) : 0.0f;
      if (sc[j]) st[j][s] = C::initial(s);
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
    bool sn[EPT];  // whether step t + 1 starts an episode (read after the MMAs: fewer registers live across them)
#pragma unroll
    for (int j = 0; j < EPT; ++j) sn[j] = starts_at(resets, ok[j], b0 + (threadIdx.x + j * NTH) / U, t + 1, T, len[j]);
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
        p[C::rs(g)] += sc[j] ? 0.0f : sum;
      }
      float se[4];
#pragma unroll
      for (int s = 0; s < 4; ++s) se[s] = s < C::S ? (sc[j] ? C::initial(s) : st[j][s]) : 0.0f;
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
        for (int s = 0; s < C::S; ++s)  // the states step t + 1 uses
          states[s * sset + ((n * (T + 1) + t + 1) * B + row) * D + unit] = sn[j] ? C::initial(s) : st[j][s];
      }
      if (t + 1 < T) {
#pragma unroll
        for (int g = 0; g < C::GX; ++g) xv[j][g] = to_float1<E>(x[((row * T + t + 1) * C::GX + g) * HD + n * D + unit]);
      }
    }
#pragma unroll
    for (int j = 0; j < EPT; ++j) sc[j] = sn[j];
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
// saved tensors and outputs as backward_cta, db_part with 16 rows per batch tile.
template <int CELL, class E, int D, int U, int W, int KR, int CK, int NB>
__global__ void __launch_bounds__(32 * W, 1)
    backward_grid(FRNN_BACKWARD_PARAMS, u16* __restrict__ xchg, u32* __restrict__ counters) {
  FRNN_CELL_TYPES;
  constexpr int G = D / U, NTH = 32 * W, KS = C::GR * D / 16, KW = KS / W, NTL = U / 8;
  constexpr int EPT = (16 * U + NTH - 1) / NTH;
  typedef GridLayout<NTL, KW, KR, CK, NB, W> L;
  static_assert(sizeof(ET) == 2 && D % U == 0 && U % 8 == 0 && KS % W == 0 && KW % CK == 0 && KR >= 1 && KR <= KW &&
                NB >= 2 && NB <= 8, "bad grid tiling");

  FRNN_SHARED_MEMORY(L::BYTES);
  FRNN_LANES;
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

  // where step t starts an episode, nothing reaches the states before it: zero their gradients once dp_t · R is in
  auto cut = [&](i64 t) {
#pragma unroll
    for (int j = 0; j < EPT; ++j)
      if (starts_at(resets, ok[j], b0 + (threadIdx.x + j * NTH) / U, t, T, len[j])) {
#pragma unroll
        for (int s = 0; s < C::S; ++s) dv[j][s] = 0.0f;
      }
  };
  for (i64 it = 0; it < T; ++it) {
    const i64 t = T - 1 - it;
    if (it > 0) {
      dp_times_r_g((it - 1) & 1);
      cut(t + 1);
    }
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
  if (T > 0) {
    dp_times_r_g((T - 1) & 1);
    cut(0);
  }

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
