// Forward over a cluster with K split over the warps (16-bit, ROWS = 1 to 8 batch rows per CTA), for heads whose R is
// more than a cluster's registers hold (e.g. LSTM D = 768: 295 KB of R per CTA of 16). CTA `rank` owns units [rank·U,
// rank·U + U) and their GR·U gate rows m = g·U + u, in MT = GR·U / 16 row tiles; a step's MMA is gates x batch = R_q (K
// = D) · hᵀ. Warp w = kg·MG + mg takes row tiles [mg·MPW, mg·MPW + MPW) over K steps [kg·KPW, kg·KPW + KPW): with W a
// multiple of 4 every SM scheduler issues the same MMAs, a warp reads only its K range of h, and a chain of dependent
// MMAs is KPW long. R as A fragments: each warp's first KR K steps in registers, the rest in shared memory in fragment
// order (a lane's 4 registers of a fragment in 16 contiguous bytes), read one K step ahead. The warps' partial sums
// meet in shared memory (f32 [KG][8 rows][GR·U + 4], conflict-free both ways); thread i then runs the cell for unit
// pairs p = i + j·NTH (row p / (U / 2), units 2·(p % (U / 2)) and + 1) and writes h into its CTA's slice of the next h
// buffer. After the step's second __syncthreads the CTA sends that slice to the other CTAs (st.async onto one mbarrier
// per buffer, as forward_cluster with KSM > 0), stores its outputs and loads the next step's x while the slices travel,
// then waits (per-warp sends and bulk copies measured slower: docs/journal/kernel-choices.md). ROWS < 8: the MMA still
// takes 8 columns (rows ROWS..7 of both h buffers stay zero and their sums unread), but a CTA exchanges and runs the
// cell for ROWS rows only: the exchange is bandwidth-bound, so fewer rows in more clusters are faster where the extra
// clusters are resident at once (the plan picks the rows).
#include "cells.cuh"

using namespace frnn;

template <int CELL, int D, int CL, int MG, int KG, int KR>
struct SplitLayout {  // shared memory (bytes); model.py: split_smem_bytes computes the same
  static constexpr int GR = CellOf<CELL>::type::GR, U = D / CL, MPW = GR * U / 16 / MG, KPW = D / 16 / KG;
  static constexpr int LDH = D + 8, LDM = GR * U + 4;  // h rows (16-bit elements), partial-sum rows (f32)
  static constexpr int H = 8 * LDH * 2, BARS = 2 * H, RED = BARS + 16, RS = RED + KG * 8 * LDM * 4;
  static constexpr int BYTES = RS + MG * KG * (KPW - KR) * MPW * 512;
};

template <int CELL, class E, int D, int CL, int MG, int KG, int KR, int ROWS>
__global__ void __launch_bounds__(32 * MG * KG, 1)
    forward_split_k(FRNN_FORWARD_PARAMS) {
  FRNN_CELL_TYPES;
  typedef SplitLayout<CELL, D, CL, MG, KG, KR> L;
  constexpr int U = D / CL, W = MG * KG, NTH = 32 * W, MPW = L::MPW, KPW = L::KPW, NF = KPW - KR;
  constexpr int PAIRS = ROWS * U / 2, PPT = (PAIRS + NTH - 1) / NTH;  // unit pairs of the rows; per thread
  static_assert(sizeof(ET) == 2 && CL > 1 && D % CL == 0 && U % 8 == 0 && (C::GR * U) % (16 * MG) == 0 &&
                (D / 16) % (2 * KG) == 0 && KR >= 0 && KR <= KPW && ROWS >= 1 && ROWS <= 8,
                "bad split tiling");

  FRNN_SHARED_MEMORY(L::BYTES);
  FRNN_LANES;
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
  bool sc[PPT];  // whether step t starts an episode (its states are the cell's initial ones, without R·h)
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
    sc[j] = starts_at(resets, ok[j], row, 0, T, len[j]);
#pragma unroll
    for (int s = 0; s < C::S; ++s) {
      f2 v = ok[j] ? load2<E>(state0 + (s * B + row) * HD + n * D + unit) : f2{0.0f, 0.0f};
      if (sc[j]) v = f2{C::initial(s), C::initial(s)};
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
    zero(acc);
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
    bool sn[PPT];  // whether step t + 1 starts an episode (read after the MMAs: fewer registers live across them)
#pragma unroll
    for (int j = 0; j < PPT; ++j)
      sn[j] = starts_at(resets, ok[j], b0 + (threadIdx.x + j * NTH) / (U / 2), t + 1, T, len[j]);
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
        pe[0][C::rs(g)] += sc[j] ? 0.0f : sum.x;
        pe[1][C::rs(g)] += sc[j] ? 0.0f : sum.y;
      }
      lv[j] = !has_lengths || t < len[j];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int s = 0; s < 4; ++s) se[h][s] = s < C::S ? (sc[j] ? C::initial(s) : st[j][s][h]) : 0.0f;
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
        for (int s = 0; s < C::S; ++s)  // the states step t + 1 uses
          store2f(states + s * sset + ((n * (T + 1) + t + 1) * B + row) * D + unit,
                  sn[j] ? C::initial(s) : st[j][s][0], sn[j] ? C::initial(s) : st[j][s][1]);
      }
      if (t + 1 < T) {
#pragma unroll
        for (int g = 0; g < C::GX; ++g) xv[j][g] = *(const u32*)(x + ((row * T + t + 1) * C::GX + g) * HD + n * D + unit);
      }
    }
#pragma unroll
    for (int j = 0; j < PPT; ++j) sc[j] = sn[j];
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
