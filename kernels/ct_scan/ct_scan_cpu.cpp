// CT-ODE working-memory scan on CPU: forward and hand-written backprop through time.
//
// Recurrence (derivation in kernels/ct_scan/README.md):
//   z_t = h_{t-1} W^T + u_t        (full W, D x D)   or   z_t = h_{t-1} * w + u_t   (diagonal w)
//   a_t = tanh(z_t)
//   h_t = h_{t-1} + g_t * a_t
// Backward, with e_t = dL/dh_t accumulated from the output gradient and the step after t:
//   dg_t = e_t * a_t,  dz_t = e_t * g_t * (1 - a_t^2),  du_t = dz_t,
//   e_{t-1} = grad_out_{t-1} + e_t + dz_t W   (diagonal: e_t + dz_t * w),
//   dW = sum_t dz_t^T h_{t-1}  (one GEMM after the loop),  dh0 = e_0.
// The per-step loops are plain C++ over contiguous rows; the inner loops are written in axpy form
// (contiguous in the innermost index) so that the compiler vectorises them without -ffast-math.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// tanh for float, written branch-free so that the loops over channels vectorise (std::tanh does
// not, and dominated the run time). Small |x|: the odd polynomial of Cephes' tanhf; otherwise
// 1 - 2 / (exp(2|x|) + 1) with a Cephes-style expf (range reduction by ln 2, degree-6 polynomial).
// Max abs error against std::tanh is about 2e-7 (checked in tests/test_kernels_ct_scan.py).
inline float exp_pos(float x) {  // x in [0, 88]
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float rr = r * r;
  float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
              4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
  y = y * rr + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  return y * scale;
}

inline float fast_tanh(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  const float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                        1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  const float e = exp_pos(std::fmin(2.0f * ax, 40.0f));
  const float big = std::copysign(1.0f - 2.0f / (e + 1.0f), x);
  return ax < 0.625f ? small : big;
}

inline double fast_tanh(double x) { return std::tanh(x); }

constexpr int kLanes = 8;
typedef float vecf __attribute__((vector_size(32), aligned(4)));
typedef int32_t veci __attribute__((vector_size(32), aligned(4)));

// The same tanh on 8 lanes with GCC/Clang vector extensions (the scalar loop did not vectorise:
// GCC 12 reports "control flow in loop"). Rounding uses the 1.5·2^23 trick, selects use masks.
inline vecf tanh_vec(vecf x) {
  const veci xi = (veci)x;
  const veci sign = xi & static_cast<int32_t>(0x80000000u);
  const vecf ax = (vecf)(xi & 0x7fffffff);
  const vecf z = x * x;
  const vecf small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                       1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  vecf t = 2.0f * ax;
  t = t < 40.0f ? t : 40.0f;  // tanh(20) rounds to 1; a larger clamp makes 2/(e+1) denormal (slow)
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to nearest
  const vecf n = (t * 1.44269504088896341f + magic) - magic;
  vecf r = t - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const vecf rr = r * r;
  vecf y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
             4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
  y = y * rr + r + 1.0f;
  const veci bits = (__builtin_convertvector(n, veci) + 127) << 23;
  const vecf e = y * (vecf)bits;
  const vecf big = (vecf)((veci)(1.0f - 2.0f / (e + 1.0f)) | sign);
  return ax < 0.625f ? small : big;
}

inline void tanh_rows(const float* z, float* a, int64_t D) {
  int64_t i = 0;
  for (; i + kLanes <= D; i += kLanes) {
    vecf v;
    std::memcpy(&v, z + i, sizeof(vecf));
    v = tanh_vec(v);
    std::memcpy(a + i, &v, sizeof(vecf));
  }
  for (; i < D; ++i) a[i] = fast_tanh(z[i]);
}

inline void tanh_rows(const double* z, double* a, int64_t D) {
  for (int64_t i = 0; i < D; ++i) a[i] = std::tanh(z[i]);
}

// out[c] = init[c] + sum_r x[r] * M[r, c] for c < D, M (D, D) row-major: the one matrix-vector
// product of each step (forward: M = W^T, x = h_{t-1}; backward: M = W, x = dz_t). For float, the
// columns go in blocks of 8 vector registers of 8 floats, kept in
// registers while M streams through once per step (GCC/Clang vector extensions); other types use
// plain loops.
// (16-wide AVX-512 vectors were tried and were slower on the AMD EPYC used for the benchmark.)

template <int NV>
inline void gemv_cols(const float* init, const float* x, const float* M, int64_t D, int64_t c0,
                      float* out) {
  vecf acc[NV];
  for (int k = 0; k < NV; ++k) std::memcpy(&acc[k], init + c0 + kLanes * k, sizeof(vecf));
  for (int64_t r = 0; r < D; ++r) {
    const float xr = x[r];
    const vecf xv = {xr, xr, xr, xr, xr, xr, xr, xr};
    const float* row = M + r * D + c0;
    for (int k = 0; k < NV; ++k) {
      vecf m;
      std::memcpy(&m, row + kLanes * k, sizeof(vecf));
      acc[k] += xv * m;
    }
  }
  for (int k = 0; k < NV; ++k) std::memcpy(out + c0 + kLanes * k, &acc[k], sizeof(vecf));
}

inline void gemv(const float* init, const float* x, const float* M, int64_t D, float* out) {
  int64_t c0 = 0;
  for (; c0 + 8 * kLanes <= D; c0 += 8 * kLanes) gemv_cols<8>(init, x, M, D, c0, out);
  for (; c0 + 4 * kLanes <= D; c0 += 4 * kLanes) gemv_cols<4>(init, x, M, D, c0, out);
  for (; c0 + kLanes <= D; c0 += kLanes) gemv_cols<1>(init, x, M, D, c0, out);
  for (; c0 < D; ++c0) {
    float acc = init[c0];
    for (int64_t r = 0; r < D; ++r) acc += x[r] * M[r * D + c0];
    out[c0] = acc;
  }
}

inline void gemv(const double* init, const double* x, const double* M, int64_t D, double* out) {
  std::vector<double> acc(init, init + D);
  for (int64_t r = 0; r < D; ++r) {
    const double xr = x[r];
    const double* row = M + r * D;
    for (int64_t c = 0; c < D; ++c) acc[c] += xr * row[c];
  }
  for (int64_t c = 0; c < D; ++c) out[c] = acc[c];
}

// Four sequences at a time: out_q[c] = init_q[c] + sum_r x_q[r] * M[r, c] for q < 4. Each row
// of M is loaded once for the four sequences, so at D = 128 (M = 64 KB, beyond L1) the step reads
// M from L2 a quarter as often as four separate gemv calls. 4 x 2 accumulators + 2 row vectors fit
// in the 16 AVX2 registers.
constexpr int kRows = 4;

inline void gemm4(const float* const* init, const float* const* x, const float* M, int64_t D,
                  float* const* out) {
  int64_t c0 = 0;
  for (; c0 + 2 * kLanes <= D; c0 += 2 * kLanes) {
    vecf acc[kRows][2];
    for (int q = 0; q < kRows; ++q)
      for (int k = 0; k < 2; ++k) std::memcpy(&acc[q][k], init[q] + c0 + kLanes * k, sizeof(vecf));
    for (int64_t r = 0; r < D; ++r) {
      vecf m0, m1;
      std::memcpy(&m0, M + r * D + c0, sizeof(vecf));
      std::memcpy(&m1, M + r * D + c0 + kLanes, sizeof(vecf));
      for (int q = 0; q < kRows; ++q) {
        const float xr = x[q][r];
        const vecf xv = {xr, xr, xr, xr, xr, xr, xr, xr};
        acc[q][0] += xv * m0;
        acc[q][1] += xv * m1;
      }
    }
    for (int q = 0; q < kRows; ++q)
      for (int k = 0; k < 2; ++k) std::memcpy(out[q] + c0 + kLanes * k, &acc[q][k], sizeof(vecf));
  }
  for (; c0 < D; ++c0) {
    for (int q = 0; q < kRows; ++q) {
      float acc = init[q][c0];
      for (int64_t r = 0; r < D; ++r) acc += x[q][r] * M[r * D + c0];
      out[q][c0] = acc;
    }
  }
}

inline void gemm4(const double* const* init, const double* const* x, const double* M, int64_t D,
                  double* const* out) {
  for (int q = 0; q < kRows; ++q) gemv(init[q], x[q], M, D, out[q]);
}

// rows = number of sequences in this group (1..4); fewer than 4 go one by one
template <typename scalar_t>
inline void step_matvec(int rows, const scalar_t* const* init, const scalar_t* const* x,
                        const scalar_t* M, int64_t D, scalar_t* const* out) {
  if (rows == kRows) {
    gemm4(init, x, M, D, out);
  } else {
    for (int q = 0; q < rows; ++q) gemv(init[q], x[q], M, D, out[q]);
  }
}

template <typename scalar_t>
void forward_loop(const scalar_t* u, const scalar_t* g, const scalar_t* w_t, const scalar_t* h0,
                  scalar_t* h_out, scalar_t* a_out, int64_t B, int64_t T, int64_t D, bool diagonal) {
  // u, g, h_out, a_out: (B, T, D) contiguous; w_t: (D, D) = W^T contiguous, or (D,); h0: (B, D)
  // sequences are independent: split them over torch's intra-op threads, then step groups of 4
  at::parallel_for(0, B, kRows, [&](int64_t b_begin, int64_t b_end) {
    std::vector<scalar_t> zbuf(kRows * D);
    for (int64_t b0 = b_begin; b0 < b_end; b0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, b_end - b0));
      const scalar_t* h_prev[kRows];
      const scalar_t* u_t[kRows];
      scalar_t* z[kRows];
      for (int q = 0; q < rows; ++q) {
        h_prev[q] = h0 + (b0 + q) * D;
        z[q] = zbuf.data() + q * D;
      }
      for (int64_t t = 0; t < T; ++t) {
        for (int q = 0; q < rows; ++q) u_t[q] = u + ((b0 + q) * T + t) * D;
        if (diagonal) {
          for (int q = 0; q < rows; ++q)
            for (int64_t i = 0; i < D; ++i) z[q][i] = h_prev[q][i] * w_t[i] + u_t[q][i];
        } else {
          step_matvec<scalar_t>(rows, u_t, h_prev, w_t, D, z);  // z = u_t + h_prev W^T
        }
        for (int q = 0; q < rows; ++q) {
          const int64_t off = ((b0 + q) * T + t) * D;
          const scalar_t* g_t = g + off;
          scalar_t* h_t = h_out + off;
          scalar_t* a_t = a_out + off;
          tanh_rows(z[q], a_t, D);
          for (int64_t i = 0; i < D; ++i) h_t[i] = h_prev[q][i] + g_t[i] * a_t[i];
          h_prev[q] = h_t;
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_loop(const scalar_t* grad_out, const scalar_t* g, const scalar_t* w, const scalar_t* a,
                   scalar_t* dz_out, scalar_t* dg_out, scalar_t* dh0, int64_t B, int64_t T, int64_t D,
                   bool diagonal) {
  // grad_out, g, a, dz_out, dg_out: (B, T, D); w: (D, D) = W (not transposed) or (D,); dh0: (B, D)
  at::parallel_for(0, B, kRows, [&](int64_t b_begin, int64_t b_end) {
    std::vector<scalar_t> ebuf(kRows * D), enbuf(kRows * D);
    for (int64_t b0 = b_begin; b0 < b_end; b0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, b_end - b0));
      scalar_t* e[kRows];       // dL/dh_t carried from later steps (without the output at t)
      scalar_t* e_next[kRows];  // total dL/dh_t at the current step
      const scalar_t* dz_t[kRows];
      for (int q = 0; q < rows; ++q) {
        e[q] = ebuf.data() + q * D;
        e_next[q] = enbuf.data() + q * D;
        for (int64_t i = 0; i < D; ++i) e[q][i] = 0;
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        for (int q = 0; q < rows; ++q) {
          const int64_t off = ((b0 + q) * T + t) * D;
          const scalar_t* __restrict go = grad_out + off;
          const scalar_t* __restrict g_t = g + off;
          const scalar_t* __restrict a_t = a + off;
          scalar_t* __restrict dz = dz_out + off;
          scalar_t* __restrict dg = dg_out + off;
          const scalar_t* __restrict e_q = e[q];
          scalar_t* __restrict en_q = e_next[q];
          for (int64_t i = 0; i < D; ++i) {
            const scalar_t ei = e_q[i] + go[i];  // dL/dh_t
            dg[i] = ei * a_t[i];
            dz[i] = ei * g_t[i] * (scalar_t(1) - a_t[i] * a_t[i]);
            en_q[i] = ei;  // identity path h_{t-1} -> h_t
          }
          dz_t[q] = dz;
        }
        // e_{t-1} (minus the output gradient at t-1, added next step) = e_t + dz_t W, into e
        if (diagonal) {
          for (int q = 0; q < rows; ++q)
            for (int64_t i = 0; i < D; ++i) e[q][i] = e_next[q][i] + dz_t[q][i] * w[i];
        } else {
          step_matvec<scalar_t>(rows, e_next, dz_t, w, D, e);
        }
      }
      for (int q = 0; q < rows; ++q)
        for (int64_t i = 0; i < D; ++i) dh0[(b0 + q) * D + i] = e[q][i];
    }
  });
}

void check_inputs(const torch::Tensor& u, const torch::Tensor& g, const torch::Tensor& w,
                  const torch::Tensor& h0) {
  TORCH_CHECK(u.device().is_cpu(), "ct_scan_cpu: tensors must be on the CPU");
  TORCH_CHECK(u.dim() == 3 && g.sizes() == u.sizes(), "ct_scan_cpu: u and gate must be (B, T, D)");
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == u.size(0) && h0.size(1) == u.size(2),
              "ct_scan_cpu: h0 must be (B, D)");
  TORCH_CHECK(w.dim() == 1 || w.dim() == 2, "ct_scan_cpu: w1 must be (D, D) or (D,)");
  TORCH_CHECK(w.size(0) == u.size(2), "ct_scan_cpu: w1 size does not match D");
  TORCH_CHECK(g.scalar_type() == u.scalar_type() && w.scalar_type() == u.scalar_type() &&
                  h0.scalar_type() == u.scalar_type(),
              "ct_scan_cpu: all tensors must share one dtype");
}

}  // namespace

// Returns {h (B,T,D), a = tanh(z) (B,T,D)}; a is saved for the backward pass.
std::vector<torch::Tensor> ct_scan_forward(torch::Tensor u, torch::Tensor g, torch::Tensor w,
                                           torch::Tensor h0) {
  check_inputs(u, g, w, h0);
  const bool diagonal = w.dim() == 1;
  u = u.contiguous();
  g = g.contiguous();
  h0 = h0.contiguous();
  auto w_t = diagonal ? w.contiguous() : w.t().contiguous();
  auto h = torch::empty_like(u);
  auto a = torch::empty_like(u);
  const int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ct_scan_forward", [&] {
    forward_loop<scalar_t>(u.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), w_t.data_ptr<scalar_t>(),
                           h0.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), B,
                           T, D, diagonal);
  });
  return {h, a};
}

// Returns {du, dgate, dw1, dh0}.
std::vector<torch::Tensor> ct_scan_backward(torch::Tensor grad_out, torch::Tensor g, torch::Tensor w,
                                            torch::Tensor h0, torch::Tensor h, torch::Tensor a) {
  check_inputs(h, g, w, h0);
  const bool diagonal = w.dim() == 1;
  grad_out = grad_out.contiguous();
  g = g.contiguous();
  a = a.contiguous();
  h = h.contiguous();
  auto w_c = w.contiguous();
  auto dz = torch::empty_like(g);
  auto dg = torch::empty_like(g);
  auto dh0 = torch::empty_like(h0);
  const int64_t B = g.size(0), T = g.size(1), D = g.size(2);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "ct_scan_backward", [&] {
    backward_loop<scalar_t>(grad_out.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                            w_c.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), dz.data_ptr<scalar_t>(),
                            dg.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>(), B, T, D, diagonal);
  });
  // dW = sum_t dz_t^T h_{t-1} with h_{t-1} = h0 at t = 0: no concatenated copy of h (a fresh
  // B*T*D buffer costs page faults that were about 10% of the whole backward at D = 64)
  torch::Tensor dw;
  if (diagonal) {
    dw = (dz.narrow(1, 0, 1).squeeze(1) * h0).sum(0);  // (D,)
    // the dims as a named vector: a braced list is ambiguous between sum overloads in some
    // torch / compiler versions (seen with torch 2.11 and the H200 image's g++)
    const std::vector<int64_t> batch_and_time = {0, 1};
    if (T > 1) dw += (dz.narrow(1, 1, T - 1) * h.narrow(1, 0, T - 1)).sum(batch_and_time);
  } else {
    dw = torch::mm(dz.select(1, 0).t(), h0);  // (D, D): the t = 0 term
    for (int64_t b = 0; b < B && T > 1; ++b) {  // contiguous (T-1, D) slices of each sequence
      dw.addmm_(dz[b].narrow(0, 1, T - 1).t(), h[b].narrow(0, 0, T - 1));
    }
  }
  return {dz, dg, dw, dh0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ct_scan_forward, "CT-ODE scan forward (CPU)");
  m.def("backward", &ct_scan_backward, "CT-ODE scan backward through time (CPU)");
}
