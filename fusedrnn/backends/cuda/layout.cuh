// The shared-memory layout, the step inputs' copies and the transposed backward's product of the kernels that hold
// R in registers: one CTA per head (cta.cu), transposed (transposed.cu) and over a cluster (cluster.cu).
#pragma once
#include "cells.cuh"

using namespace frnn;

// Shared-memory layout of both kernels, in bytes; the host computes the same (launch.py: smem_bytes) and
// passes it, and a kernel given less than it needs traps instead of corrupting memory.
// U: the units of the head a CTA computes (forward_transposed over a cluster: D / CL; x, the output stages and the
// backward's per-unit buffers hold U columns, the h buffers the whole head).
template <int CELL, class E, int D, int STAGES, int ROWS, int U = D>
struct Layout {
  typedef typename CellOf<CELL>::type C;
  typedef typename E::T T;
  static constexpr int PAD = 16 / (int)sizeof(T);  // one 16-byte chunk per row: rows start on distinct banks
  // forward: two h buffers [ROWS][LDH] and STAGES x tiles [ROWS][LDX]; forward_transposed adds two output stages
  // (slots [GB][ROWS][LDF] and states [S][ROWS][LDF], f32) for the saved tensors
  static constexpr int LDH = D + PAD, LDX = C::GX * U + PAD, LDF = U + 4;
  static constexpr int FW_H = ROWS * LDH * (int)sizeof(T), FW_X = ROWS * LDX * (int)sizeof(T);
  static constexpr int FW_OUT = (C::GB + C::S) * ROWS * LDF * 4;
  static constexpr int FW_BYTES = 2 * FW_H + STAGES * FW_X, FW_T_BYTES = FW_BYTES + 2 * FW_OUT;
  // forward_transposed over a cluster (U < D) adds the exchange's mbarriers: per buffer one per sender
  static constexpr int FW_C_BYTES = FW_T_BYTES + (U < D ? 16 * (D / U) : 0);
  // and the K steps of R it keeps in shared memory (KSM per warp; per 8 units and K step GR / 2 16 x 16 A
  // fragments of 512 bytes and, GR odd, one of 256 without its zero rows: 256·GR bytes)
  static __device__ constexpr int fw_r_bytes(int ksm) { return ksm * C::GR * (U / 8) * 256; }
  // backward: two dp buffers [ROWS][LDP] (input dtype; backward_cta: R's GR gates; backward_transposed: every slot
  // in order, [ROWS][LDPT]) and STAGES of (slots [GB][ROWS][LDF], states [S][ROWS][LDF] f32, dy [ROWS][LDH]
  // input dtype)
  static constexpr int LDP = C::GR * D + PAD, LDPT = C::GB * U + PAD;
  // backward_transposed's dp column of K index k = g·U + i (R's gate g meets slot rs(g))
  static __device__ constexpr int pcol(int k) { return C::rs(k / U) * U + k % U; }
  static constexpr int BW_P = ROWS * LDP * (int)sizeof(T), BW_T_P = ROWS * LDPT * (int)sizeof(T);
  static constexpr int BW_SLOTS = C::GB * ROWS * LDF * 4, BW_STATES = C::S * ROWS * LDF * 4, BW_DY = FW_H;
  static constexpr int BW_STAGE = BW_SLOTS + BW_STATES + BW_DY;
  static constexpr int BW_BYTES = 2 * BW_P + STAGES * BW_STAGE, BW_T_BYTES = 2 * BW_T_P + STAGES * BW_STAGE;
  // backward_cluster adds this CTA's partial dh of every unit [ROWS][LDR] (f32), two receive buffers of the
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
struct BwInputs {  // U: the units from u0 on (backward_cluster: a CTA's share of the head)
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


// R as the A fragments of Rᵀ · dpᵀ in the transposed backward kernels: row m of tile nt is unit
// j = 16·(warp·NT + nt) + u(m) of the head (u(m) = 2·m for m < 8, 2·(m - 8) + 1 above), k = g·U + i over the rows of
// R of the U units from u0 (over a cluster, the CTA's): A[m][k] = R[g, n, u0 + i, j].
template <class E, int D, int U, int NT, int KT>
__device__ __forceinline__ void load_r_transposed(const typename E::T* R, i64 NH, i64 n, int u0, int warp, int gq,
                                                  int tq, u32 (&rf)[NT][KT][4]) {
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
