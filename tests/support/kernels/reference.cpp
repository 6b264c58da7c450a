// Double-precision reference kernels; see reference.h. Written for clarity, not speed.
#include "kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "llmft/model/kernels/common.h"

namespace llmft::kernels::ref {

void encoder_forward(DSpan out, std::span<const int32_t> inp, std::span<const int32_t> pos,
                     CDSpan wte, CDSpan wpe, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) out[i * C + c] = wte[inp[i] * C + c] + wpe[pos[i] * C + c];
}

void encoder_backward(DSpan dwte, DSpan dwpe, CDSpan dout, std::span<const int32_t> inp,
                      std::span<const int32_t> pos, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) {
      dwte[inp[i] * C + c] += dout[i * C + c];
      dwpe[pos[i] * C + c] += dout[i * C + c];
    }
}

void layernorm_forward(DSpan y, DSpan mean, DSpan rstd, CDSpan x, CDSpan w, CDSpan b, int64_t N,
                       int64_t C, double eps) {
  for (int64_t i = 0; i < N; ++i) {
    double m = 0, v = 0;
    for (int64_t c = 0; c < C; ++c) m += x[i * C + c];
    m /= C;
    for (int64_t c = 0; c < C; ++c) v += (x[i * C + c] - m) * (x[i * C + c] - m);
    v /= C;
    const double rs = 1.0 / std::sqrt(v + eps);
    for (int64_t c = 0; c < C; ++c) y[i * C + c] = (x[i * C + c] - m) * rs * w[c] + b[c];
    mean[i] = m;
    rstd[i] = rs;
  }
}

void layernorm_backward(DSpan dx, DSpan dw, DSpan db, CDSpan dy, CDSpan x, CDSpan w, CDSpan mean,
                        CDSpan rstd, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i) {
    double a = 0, b = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double norm = (x[i * C + c] - mean[i]) * rstd[i];
      a += w[c] * dy[i * C + c];
      b += w[c] * dy[i * C + c] * norm;
    }
    a /= C;
    b /= C;
    for (int64_t c = 0; c < C; ++c) {
      const double norm = (x[i * C + c] - mean[i]) * rstd[i];
      dw[c] += norm * dy[i * C + c];
      db[c] += dy[i * C + c];
      dx[i * C + c] += (w[c] * dy[i * C + c] - a - norm * b) * rstd[i];
    }
  }
}

static double wat(CDSpan w, int64_t i, int64_t o, int64_t IC, int64_t OC, bool out_in) {
  return out_in ? w[o * IC + i] : w[i * OC + o];
}

void matmul_forward(DSpan out, CDSpan inp, CDSpan w, CDSpan bias, int64_t N, int64_t IC,
                    int64_t OC, bool out_in) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      double s = bias.empty() ? 0.0 : bias[o];
      for (int64_t i = 0; i < IC; ++i) s += inp[n * IC + i] * wat(w, i, o, IC, OC, out_in);
      out[n * OC + o] = s;
    }
}

void matmul_backward(DSpan dinp, DSpan dw, DSpan dbias, CDSpan dout, CDSpan inp, CDSpan w,
                     int64_t N, int64_t IC, int64_t OC, bool out_in) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      const double g = dout[n * OC + o];
      if (!dbias.empty()) dbias[o] += g;
      for (int64_t i = 0; i < IC; ++i) {
        if (!dinp.empty()) dinp[n * IC + i] += g * wat(w, i, o, IC, OC, out_in);
        if (!dw.empty()) (out_in ? dw[o * IC + i] : dw[i * OC + o]) += g * inp[n * IC + i];
      }
    }
}

// Dropout multiplier of element `i` of a site (attention weight i of the (NH, T, T) layout, or
// element i of an (N, C) branch); 1 when p = 0.
static double att_drop(float p, uint64_t seed, int64_t i) {
  return p > 0.0f ? static_cast<double>(dropout_scale(seed, static_cast<uint64_t>(i), p)) : 1.0;
}

void attention_forward(DSpan out, DSpan att, CDSpan qkv, std::span<const int64_t> offsets,
                       int64_t N, int64_t C, int64_t NH, float dropout_p, uint64_t seed) {
  (void)N;
  const int64_t HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  int64_t base = 0;
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    const int64_t o = offsets[s], T = offsets[s + 1] - o;
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t t = 0; t < T; ++t) {
        double* row = att.data() + base + h * T * T + t * T;
        double maxv = -INFINITY;
        for (int64_t t2 = 0; t2 < T; ++t2) {
          if (t2 > t) {
            row[t2] = 0;
            continue;
          }
          double d = 0;
          for (int64_t i = 0; i < HS; ++i)
            d += qkv[(o + t) * 3 * C + h * HS + i] * qkv[(o + t2) * 3 * C + C + h * HS + i];
          row[t2] = d * scale;
          maxv = std::max(maxv, row[t2]);
        }
        double sum = 0;
        for (int64_t t2 = 0; t2 <= t; ++t2) sum += (row[t2] = std::exp(row[t2] - maxv));
        for (int64_t t2 = 0; t2 <= t; ++t2) row[t2] /= sum;
        for (int64_t i = 0; i < HS; ++i) {
          double y = 0;
          for (int64_t t2 = 0; t2 <= t; ++t2)
            y += row[t2] * att_drop(dropout_p, seed, base + h * T * T + t * T + t2) *
                 qkv[(o + t2) * 3 * C + 2 * C + h * HS + i];
          out[(o + t) * C + h * HS + i] = y;
        }
      }
    base += NH * T * T;
  }
}

void attention_backward(DSpan dqkv, CDSpan dout, CDSpan qkv, CDSpan att,
                        std::span<const int64_t> offsets, int64_t N, int64_t C, int64_t NH,
                        float dropout_p, uint64_t seed) {
  (void)N;
  const int64_t HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  int64_t base = 0;
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    const int64_t o = offsets[s], T = offsets[s + 1] - o;
    std::vector<double> datt(static_cast<size_t>(T));
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const double* row = att.data() + base + h * T * T + t * T;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          // y = sum_t2 drop(att[t2]) v[t2]
          const double mk = att_drop(dropout_p, seed, base + h * T * T + t * T + t2);
          double d = 0;
          for (int64_t i = 0; i < HS; ++i) {
            const double g = dout[(o + t) * C + h * HS + i];
            d += g * qkv[(o + t2) * 3 * C + 2 * C + h * HS + i];
            dqkv[(o + t2) * 3 * C + 2 * C + h * HS + i] += row[t2] * mk * g;
          }
          datt[t2] = d * mk;
        }
        double sum = 0;
        for (int64_t t2 = 0; t2 <= t; ++t2) sum += row[t2] * datt[t2];
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const double dpre = row[t2] * (datt[t2] - sum) * scale;
          for (int64_t i = 0; i < HS; ++i) {
            dqkv[(o + t) * 3 * C + h * HS + i] += dpre * qkv[(o + t2) * 3 * C + C + h * HS + i];
            dqkv[(o + t2) * 3 * C + C + h * HS + i] += dpre * qkv[(o + t) * 3 * C + h * HS + i];
          }
        }
      }
    base += NH * T * T;
  }
}

void gelu_forward(DSpan y, CDSpan x, int64_t N) {
  const double k = std::sqrt(2.0 / M_PI);
  for (int64_t i = 0; i < N; ++i)
    y[i] = 0.5 * x[i] * (1.0 + std::tanh(k * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
}

void gelu_backward(DSpan dx, CDSpan dy, CDSpan x, int64_t N) {
  const double k = std::sqrt(2.0 / M_PI);
  for (int64_t i = 0; i < N; ++i) {
    const double v = x[i], th = std::tanh(k * (v + 0.044715 * v * v * v));
    dx[i] += dy[i] * (0.5 * (1 + th) + 0.5 * v * (1 - th * th) * k * (1 + 3 * 0.044715 * v * v));
  }
}

void bias_gelu_forward(DSpan y, DSpan x, CDSpan bias, int64_t N, int64_t OC) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < OC; ++c) x[i * OC + c] += bias[c];
  gelu_forward(y, x, N * OC);
}

void gelu_bias_backward(DSpan dx, DSpan dbias, CDSpan dy, CDSpan x, int64_t N, int64_t OC) {
  std::fill(dx.begin(), dx.begin() + N * OC, 0.0);
  gelu_backward(dx, dy, x, N * OC);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < OC; ++c) dbias[c] += dx[i * OC + c];
}

void residual_layernorm_forward(DSpan res_out, DSpan y, DSpan mean, DSpan rstd, CDSpan res_in,
                                CDSpan branch, CDSpan bias, CDSpan w, CDSpan b, int64_t N,
                                int64_t C, double eps, float dropout_p, uint64_t seed) {
  for (int64_t i = 0; i < N * C; ++i) {
    const double br = branch[i] + (bias.empty() ? 0.0 : bias[i % C]);
    res_out[i] = res_in[i] + br * att_drop(dropout_p, seed, i);
  }
  layernorm_forward(y, mean, rstd, res_out, w, b, N, C, eps);
}

void layernorm_residual_backward(DSpan dx, DSpan dbranch, DSpan dbias, DSpan dw, DSpan db,
                                 CDSpan dy, CDSpan x, CDSpan w, CDSpan mean, CDSpan rstd,
                                 int64_t N, int64_t C, float dropout_p, uint64_t seed) {
  layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, N, C);
  for (int64_t i = 0; i < N * C; ++i) {
    const double g = dx[i] * att_drop(dropout_p, seed, i);
    if (!dbranch.empty()) dbranch[i] = g;
    if (!dbias.empty()) dbias[i % C] += g;
  }
}

void residual_forward(DSpan out, CDSpan a, CDSpan b, int64_t N) {
  for (int64_t i = 0; i < N; ++i) out[i] = a[i] + b[i];
}

void residual_backward(DSpan da, DSpan db, CDSpan dout, int64_t N) {
  for (int64_t i = 0; i < N; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

void head_crossentropy_forward(DSpan losses, CDSpan x, CDSpan w, std::span<const int32_t> targets,
                               int64_t M, int64_t C, int64_t V) {
  std::vector<double> logits(static_cast<size_t>(V));
  for (int64_t m = 0; m < M; ++m) {
    matmul_forward(logits, x.subspan(m * C, C), w, {}, 1, C, V, /*out_in=*/true);
    double maxv = -INFINITY, sum = 0;
    for (double l : logits) maxv = std::max(maxv, l);
    for (double l : logits) sum += std::exp(l - maxv);
    losses[m] = maxv + std::log(sum) - logits[targets[m]];
  }
}

void head_crossentropy_backward(DSpan dx, DSpan dw, CDSpan x, CDSpan w,
                                std::span<const int32_t> targets, double dloss, int64_t M,
                                int64_t C, int64_t V) {
  std::vector<double> logits(static_cast<size_t>(V));
  for (int64_t m = 0; m < M; ++m) {
    matmul_forward(logits, x.subspan(m * C, C), w, {}, 1, C, V, /*out_in=*/true);
    double maxv = -INFINITY, sum = 0;
    for (double l : logits) maxv = std::max(maxv, l);
    for (double l : logits) sum += std::exp(l - maxv);
    for (int64_t j = 0; j < V; ++j)
      logits[j] = (std::exp(logits[j] - maxv) / sum - (j == targets[m] ? 1.0 : 0.0)) * dloss;
    matmul_backward(dx.subspan(m * C, C), dw, {}, logits, x.subspan(m * C, C), w, 1, C, V,
                    /*out_in=*/true);
  }
}

}  // namespace llmft::kernels::ref
