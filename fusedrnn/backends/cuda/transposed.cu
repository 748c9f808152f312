// forward_transposed, backward_transposed: one CTA per (head, batch tile), transposed (taken at D = 128, where a CTA's
// MMAs dominate its step): forward_transposed computes gates x batch = R · h_{t-1}ᵀ with A = R (a 16-row tile holds
// gates 2q and 2q + 1 of 8 units; a thread's accumulators are both gates of unit gq at batch rows 2·tq, 2·tq + 1) and B
// = h_{t-1}ᵀ (N = 8 batch rows, so 8-row tiles waste no MMA work), x read with ldmatrix .trans into the same layout;
// backward_transposed computes dh_{t-1}ᵀ = Rᵀ · dpᵀ with 16 units per warp tile. Both write their per-step outputs (y,
// the saved slots and states, dgate) through shared memory in 16-byte chunks during the next step (TileStore).
#include "layout.cuh"

using namespace frnn;

// Forward as gates x batch = R · hᵀ (see the top of this file): same arguments, saved tensors and outputs as
// forward_cta; shared memory adds the two output stages (Layout::FW_T_BYTES).
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
// (measured faster there: the per-sender exchange's waits and pipelining cost registers that hold R;
// docs/journal/kernel-choices.md).
//
// KSM > 0 (over a cluster, 16-bit; heads whose R is more than the cluster's registers hold, e.g. LSTM D = 768):
// each warp keeps the first KT - KSM K steps of its A fragments in registers and the last KSM in shared memory
// (after the mbarriers, Layout::fw_r_bytes), stored in fragment order — a thread's 4 registers of one fragment
// are 16 contiguous bytes, a warp's fragment 512 — and read back each step one K step ahead of its MMAs.
// The body is shared with forward_cluster (cluster.cu), which passes CL > 1.
template <int CELL, class E, int D, int NT, int STAGES, int ROWS, int CL, int KSM>
__device__ __forceinline__ void forward_transposed_body(FRNN_FORWARD_PARAMS) {
  FRNN_CELL_TYPES;
  constexpr int U = D / CL;  // this CTA's units
  typedef Layout<CELL, E, D, STAGES, ROWS, U> L;
  constexpr int NB = ROWS / 8;           // batch tiles of 8 (the MMA's N) per CTA
  constexpr int P = (C::GR + 1) / 2;     // MMA row tiles per unit tile: gates 2q (rows 0-7) and 2q + 1 (rows 8-15)
  constexpr int W = U / (8 * NT), NTH = 32 * W, KT = D / E::KSTEP, SZ = (int)sizeof(ET);
  constexpr int KR = KT - KSM;  // K steps of R in registers
  static_assert(D % 16 == 0 && U % 8 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");
  static_assert(KSM == 0 || (CL > 1 && SZ == 2 && KSM % 2 == 0 && KR >= 2 && KR % 2 == 0), "bad R split");
  // over a cluster: 16-bit elements (a warp sends 8 units of a row as one chunk), whole K steps per CTA's slice
  static_assert(CL == 1 || (SZ == 2 && U % 16 == 0), "bad cluster split");

  FRNN_SHARED_MEMORY(L::FW_C_BYTES + L::fw_r_bytes(KSM));
  ET* hbuf = (ET*)smem;
  const unsigned char* xring = smem + 2 * L::FW_H;
  const u32 xring_addr = smem_addr(xring);

  FRNN_LANES;
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
  // bit 2·j + c: whether step t starts an episode in column (j, c) (its states are the cell's initial ones, without
  // R·h); one register, not 2·NB predicates (which made the cluster's sLSTM forward spill)
  u32 sc = 0;
#pragma unroll
  for (int j = 0; j < NB; ++j)
#pragma unroll
    for (int c = 0; c < 2; ++c)
      sc |= (u32)starts_at(resets, row_ok[j][c], b0 + 8 * j + 2 * tq + c, 0, T, len[j][c]) << (2 * j + c);
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
          if ((sc >> (2 * j + c)) & 1u) v = C::initial(s);
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
    zero(acc);
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
    u32 sn = 0;  // as sc, for step t + 1 (read after the MMAs: fewer registers live across them)
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
      for (int c = 0; c < 2; ++c)
        sn |= (u32)starts_at(resets, row_ok[j][c], b0 + 8 * j + 2 * tq + c, t + 1, T, len[j][c]) << (2 * j + c);

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
          const bool fresh = (sc >> (2 * j + c)) & 1u, fresh_next = (sn >> (2 * j + c)) & 1u;
          float pe[4];  // slots = b + x + R·h, in that order
#pragma unroll
          for (int k = 0; k < 4; ++k) pe[k] = k < C::GB ? bv[k][nt] : 0.0f;
#pragma unroll
          for (int g = 0; g < C::GX; ++g) pe[C::xs(g)] += x_at<E>(xr[nt][j], g, c);
#pragma unroll
          for (int g = 0; g < C::GR; ++g) pe[C::rs(g)] += fresh ? 0.0f : acc[g >> 1][nt][j][2 * (g & 1) + c];
          float se[4];
#pragma unroll
          for (int s = 0; s < 4; ++s) se[s] = s < C::S ? (fresh ? C::initial(s) : st[s][nt][j][c]) : 0.0f;
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
            for (int s = 0; s < C::S; ++s)  // the states step t + 1 uses
              o[((C::GB + s) * ROWS + r) * L::LDF + ounit] = fresh_next ? C::initial(s) : st[s][nt][j][c];
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
    sc = sn;
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


template <int CELL, class E, int D, int NT, int STAGES, int ROWS>
__global__ void __launch_bounds__(32 * (D / (8 * NT)), 1) forward_transposed(FRNN_FORWARD_PARAMS) {
  forward_transposed_body<CELL, E, D, NT, STAGES, ROWS, 1, 0>(FRNN_FORWARD_ARGS);
}

// Backward as dhᵀ = Rᵀ · dpᵀ (the launch picks it where the kernel above would need NT >= 2, i.e. D = 128): A =
// R fragments with M = 16 hidden units j per tile (A[m][k = (g, i)] = R[g, n, i, j0 + u(m)]), B = dp from the
// same [ROWS][LDPT] shared buffer (every slot, in order) with N = 8 batch rows, so 8-row tiles waste no MMA
// work. Warp w owns NT tiles of 16 units. The tile's rows are permuted, u(m) = 2·m for m < 8 and 2·(m - 8) + 1
// above, so that a thread's two accumulator rows gq and gq + 8 (h = 0, 1) are the adjacent units j0 + 2·gq + h:
// its saved slots, states and dy come in 8- / 4-byte pairs and its dp leaves in pairs. Its batch rows are
// 8·jb + 2·tq + c (c = 0, 1). dgate leaves from the dp buffer during the next step. Same arguments, saved
// tensors and outputs as backward_cta.
template <int CELL, class E, int D, int NT, int STAGES, int ROWS>
__global__ void __launch_bounds__(32 * (D / (16 * NT)), 1)
    backward_transposed(FRNN_BACKWARD_PARAMS) {
  FRNN_CELL_TYPES;
  typedef Layout<CELL, E, D, STAGES, ROWS> L;
  constexpr int NB = ROWS / 8;  // batch tiles of 8 (the MMA's N)
  constexpr int W = D / (16 * NT), NTH = 32 * W, KT = C::GR * D / E::KSTEP, SZ = (int)sizeof(ET);
  constexpr int ACCS = NT > 1 ? 1 : KT >= 4 ? 4 : KT;  // independent accumulator chains per tile
  static_assert(D % 16 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");

  FRNN_SHARED_MEMORY(L::BW_T_BYTES);
  ET* pbuf = (ET*)smem;
  const unsigned char* ring = smem + 2 * L::BW_T_P;
  const u32 ring_addr = smem_addr(ring);

  FRNN_LANES;
  // 16-bit dp with D >= 32 (a K-step pair never straddles two slots): B fragments by ldmatrix (see ldsm_x4)
  constexpr bool LDSM = SZ == 2 && D >= 32;
  const u32 pbuf_addr = smem_addr(pbuf), lane_b = (u32)(((lane & 7) * L::LDPT + (lane >> 3) * 8) * SZ);
  const i64 n = blockIdx.x, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);
  const bool has_lengths = lengths != nullptr;

  u32 rf[NT][KT][4];  // R as A fragments: row m of tile nt is unit 16·(warp·NT + nt) + u(m); k = g·D + i
  load_r_transposed<E, D, D, NT, KT>(R, NH, n, 0, warp, gq, tq, rf);

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
  // where step t starts an episode, nothing reaches the states before it: zero their gradients once dp_t · R is in
  auto cut = [&](i64 t) {
#pragma unroll
    for (int jb = 0; jb < NB; ++jb)
#pragma unroll
      for (int c = 0; c < 2; ++c)
        if (starts_at(resets, row_ok[jb][c], b0 + 8 * jb + 2 * tq + c, t, T, len[jb][c])) {
#pragma unroll
          for (int s = 0; s < C::S; ++s)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) dv[s][nt][0][jb][c] = dv[s][nt][1][jb][c] = 0.0f;
        }
  };
  cp_async_wait<STAGES - 2>();
  __syncthreads();

  int stage = 0, fill = STAGES - 1;
  for (i64 it = 0; it < T; ++it) {
    const i64 t = T - 1 - it;
    fetch(in, ring_addr, fill, it + STAGES - 1 < T);
    fill = fill + 1 == STAGES ? 0 : fill + 1;
    mma_step(pbuf + ((it + 1) & 1) * ROWS * L::LDPT);
    cut(t + 1);
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
  cut(0);
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
