// The cells' pointwise math, forward and backward, for every CUDA kernel family. Gate, slot and state counts and
// the slot routing (xs, rs) come from the cell registry (fusedrnn/cells/) as generated constants, CellGates<C>
// (kernels.py writes "cell_table.cuh"); a cell struct here holds only its math.
#pragma once
#include "common.cuh"
#include "cell_table.cuh"

namespace frnn {

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

struct Lstm : CellGates<Lstm> {  // slots (i, f, z, o), states (h, c)
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

struct Gru : CellGates<Gru> {  // slots (r, z, n_in, n_hidden), state h
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

struct Elman : CellGates<Elman> {  // slot z, state h
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

struct Slstm : CellGates<Slstm> {  // slots (i, f, z, o), states (h, c, n, m)
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

}  // namespace frnn
