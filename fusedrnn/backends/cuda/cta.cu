// forward_cta, backward_cta: one CTA per (head, tile of ROWS = 8 or 16 batch rows) runs the whole sequence. Warp w owns
// hidden units [8·NT·w, 8·NT·(w+1)) of every gate, so each thread holds all gates of its (row, unit) elements in the
// accumulator layout of mma.sync m16n8kK (rows gq and gq + 8, units 2·tq and 2·tq + 1 of each 8-unit tile, gq = lane /
// 4, tq = lane % 4) and runs the cell's pointwise math without any exchange. That head's R lives in registers as MMA B
// fragments for the whole sequence.
//
// Forward, per step: A = h_{t-1} (16 × D, input dtype, shared memory, double-buffered) times the register fragments of
// R; + x_t (prefetched STAGES - 1 steps ahead by cp.async into a shared-memory ring) + b; cell; h_t into the other h
// buffer, y (and, when saving, the slots and states) to global memory; one __syncthreads. Backward, per step (t
// descending): the cell's backward from the saved slots and states (prefetched the same way) gives the slot gradients
// dp; those of R's gates go to shared memory (input dtype, double-buffered); one __syncthreads; dh_{t-1} += dp · R (K =
// GR·D) with R in registers again, in the same accumulator layout as the forward's units.
#include "layout.cuh"

using namespace frnn;

template <int CELL, class E, int D, int NT, int STAGES, int ROWS>
__global__ void __launch_bounds__(32 * (D / (8 * NT)), 1)
    forward_cta(FRNN_FORWARD_PARAMS) {
  FRNN_CELL_TYPES;
  typedef Layout<CELL, E, D, STAGES, ROWS> L;
  constexpr int HR = ROWS / 8;  // row halves per thread: rows gq (and gq + 8 when ROWS = 16)
  constexpr int W = D / (8 * NT), NTH = 32 * W, KT = D / E::KSTEP, SZ = (int)sizeof(ET);
  static_assert(D % 16 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");

  FRNN_SHARED_MEMORY(L::FW_BYTES);
  ET* hbuf = (ET*)smem;
  const unsigned char* xring = smem + 2 * L::FW_H;
  const u32 xring_addr = smem_addr(xring);

  FRNN_CTA_TILE;

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
  bool sc[2];  // whether step t starts an episode (its states are the cell's initial ones, without R·h)
  ET* yp[2];  // row half hr's unit 0 of tile 0; tile nt is 8·nt elements further
  float* pp[2];
  float* sp[2];
  const i64 pstep = B * C::GB * HD, sstep = B * D, sset = NH * (T + 1) * B * D;
#pragma unroll
  for (int hr = 0; hr < HR; ++hr) {
    i64 row = b0 + gq + 8 * hr;
    row_ok[hr] = row < B;
    len[hr] = has_lengths && row_ok[hr] ? lengths[row] : (int)T;
    sc[hr] = starts_at(resets, row_ok[hr], row, 0, T, len[hr]);
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
        if (sc[hr]) v = f2{C::initial(s), C::initial(s)};
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
    zero(acc);
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
    bool sn[2];  // whether step t + 1 starts an episode (read after the MMAs: fewer registers live across them)
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) sn[hr] = starts_at(resets, row_ok[hr], b0 + gq + 8 * hr, t + 1, T, len[hr]);
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
          for (int c = 0; c < 2; ++c) p[C::rs(g)][c] += sc[hr] ? 0.0f : acc[g][nt][2 * hr + c];
        float hout[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float pe[4] = {p[0][c], p[1][c], p[2][c], p[3][c]};
          float se[4];
#pragma unroll
          for (int s = 0; s < 4; ++s) se[s] = s < C::S ? (sc[hr] ? C::initial(s) : st[s][nt][hr][c]) : 0.0f;
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
            for (int s = 0; s < C::S; ++s)  // the states step t + 1 uses
              store2f(sp[hr] + 8 * nt + s * sset, sn[hr] ? C::initial(s) : st[s][nt][hr][0],
                      sn[hr] ? C::initial(s) : st[s][nt][hr][1]);
          }
        }
      }
    }
#pragma unroll
    for (int hr = 0; hr < HR; ++hr) {
      sc[hr] = sn[hr];
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
    backward_cta(FRNN_BACKWARD_PARAMS) {
  FRNN_CELL_TYPES;
  typedef Layout<CELL, E, D, STAGES, ROWS> L;
  constexpr int HR = ROWS / 8;  // row halves per thread: rows gq (and gq + 8 when ROWS = 16)
  constexpr int W = D / (8 * NT), NTH = 32 * W, KT = C::GR * D / E::KSTEP, SZ = (int)sizeof(ET);
  // independent accumulators (a shorter dependent MMA chain): 4 with one tile per warp; with NT >= 2 the tiles
  // interleave and registers are short, so one each
  constexpr int ACCS = NT > 1 ? 1 : KT >= 4 ? 4 : KT;
  static_assert(D % 16 == 0 && W >= 1 && STAGES >= 2 && (ROWS == 8 || ROWS == 16), "bad tiling");

  FRNN_SHARED_MEMORY(L::BW_BYTES);
  ET* pbuf = (ET*)smem;
  const unsigned char* ring = smem + 2 * L::BW_P;
  const u32 ring_addr = smem_addr(ring);

  FRNN_CTA_TILE;

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
    zero(acc);
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
  // where step t starts an episode, nothing reaches the states before it: zero their gradients once dp_t · R is in
  auto cut = [&](i64 t) {
#pragma unroll
    for (int hr = 0; hr < HR; ++hr)
      if (starts_at(resets, row_ok[hr], b0 + gq + 8 * hr, t, T, len[hr])) {
#pragma unroll
        for (int s = 0; s < C::S; ++s)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) dv[s][nt][hr][0] = dv[s][nt][hr][1] = 0.0f;
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
    cut(t + 1);

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
  cut(0);

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
