// A head over a thread-block cluster (sm_90): forward_cluster (the transposed forward with the head's units split over
// the cluster's CTAs) and backward_cluster.
#include "transposed.cu"

using namespace frnn;

// The transposed forward (transposed.cu) with its head over a cluster of CL CTAs, KSM K steps of R per warp in
// shared memory.
template <int CELL, class E, int D, int NT, int STAGES, int ROWS, int CL, int KSM>
__global__ void __launch_bounds__(32 * (D / CL / (8 * NT)), 1) forward_cluster(FRNN_FORWARD_PARAMS) {
  forward_transposed_body<CELL, E, D, NT, STAGES, ROWS, CL, KSM>(FRNN_FORWARD_ARGS);
}

// Backward of a head over a thread-block cluster of CL CTAs (sm_90; the forward's split): CTA `rank` runs the
// cell's backward for units [u0, u0 + U), U = D / CL, and holds the rows of R of those units (the forward's
// slice). dh_{t} = Σ_g R_gᵀ dp_g needs every unit's dp, so instead of exchanging dp each CTA computes the partial
// sum over its own units for all D units, dhᵀ_part = R_qᵀ · dp_qᵀ (M = D in tiles of 16 units as backward_transposed,
// K = GR·U, B = its dp from shared memory), writes it to shared memory and sends each other CTA the f32 rows of
// that CTA's units by asynchronous remote stores onto the receiver's mbarrier (step parity, as the forward);
// each CTA adds its own partial and the CL - 1 received ones, in a fixed order. The cell's backward maps thread
// i to unit pairs (u0 + 2·(q % (U/2)), + 1) of row q / (U/2), q = i + e·NTH. Same arguments and saved tensors as
// backward_transposed; db_part has ROWS rows per batch tile (one per row).
template <int CELL, class E, int D, int NT, int STAGES, int ROWS, int CL>
__global__ void __launch_bounds__(32 * (D / (16 * NT)), 1)
    backward_cluster(FRNN_BACKWARD_PARAMS) {
  FRNN_CELL_TYPES;
  constexpr int U = D / CL;
  typedef Layout<CELL, E, D, STAGES, ROWS, U> L;
  constexpr int NB = ROWS / 8;
  constexpr int W = D / (16 * NT), NTH = 32 * W, KT = C::GR * U / E::KSTEP, SZ = (int)sizeof(ET);
  constexpr int ACCS = NT > 1 ? 1 : KT >= 4 ? 4 : KT;
  constexpr int EP = U * ROWS / (2 * NTH);  // unit pairs per thread in the cell's backward
  static_assert(CL > 1 && U % 16 == 0 && EP >= 1 && EP * 2 * NTH == U * ROWS && STAGES >= 2, "bad tiling");
  static_assert(ROWS == 8 || ROWS == 16, "bad tiling");

  FRNN_SHARED_MEMORY(L::BW_C_BYTES);
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

  FRNN_LANES;
  constexpr bool LDSM = SZ == 2 && U % 32 == 0;  // a K-step pair never straddles two slots
  const u32 pbuf_addr = smem_addr(pbuf), lane_b = (u32)(((lane & 7) * L::LDPT + (lane >> 3) * 8) * SZ);
  const i64 n = blockIdx.x / CL, b0 = (i64)blockIdx.y * ROWS, HD = NH * D;
  const int valid_rows = (int)(B - b0 < ROWS ? B - b0 : ROWS);
  const bool has_lengths = lengths != nullptr;

  u32 rf[NT][KT][4];  // R as A fragments: row m of tile nt is unit 16·(warp·NT + nt) + u(m); k = g·U + i
  load_r_transposed<E, D, U, NT, KT>(R, NH, n, u0, warp, gq, tq, rf);

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
  TileStore<C::GB, ROWS, U * SZ, U * SZ, L::LDPT * SZ, NTH> gstore;  // dgate of the previous step, as backward_transposed
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
  // where step t starts an episode, nothing reaches the states before it: zero element e's gradients once dp_t · R
  // is in
  auto cut = [&](int e, i64 t) {
    if (starts_at(resets, eok[e], b0 + er[e], t, T, elen[e])) {
#pragma unroll
      for (int s = 0; s < C::S; ++s) dv[s][e][0] = dv[s][e][1] = 0.0f;
    }
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
      cut(e, t + 1);
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
    cut(e, 0);
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
