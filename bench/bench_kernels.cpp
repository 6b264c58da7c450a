// Fused kernels against the unfused ones they replaced (kept in tests/support/kernels), in the
// same process at GPT-2 training shapes: attention (flash vs (NH, T, T) weights), residual +
// LayerNorm, bias + GELU, head + cross-entropy (one pass over row chunks vs forward then backward
// on (R, V) logits). Each pair is checked against each other first, warmed up, then timed
// alternately (old, new, old, new, ...) so load drift hits both; one JSON line per kernel with
// medians (min-max) and the per-training-step figure (x layers).
// Usage: bench_kernels [--model gpt2-medium|gpt2|all] [--reps 9] [--batch 8] [--first 0]
//                      [--dropout 0] [--threads N] [--head-rows 256]
//                      [--lengths FILE]
//                      [--only attention,layernorm,gelu,head]
// Batches: `batch` consecutive entries' token counts from bench/data/recipe_lengths.json
// (starting at entry `first`), packed end to end, as bench_train_step.
#include <fmt/format.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_unfused.h"
#include "kernels/gelu_unfused.h"
#include "kernels/residual_unfused.h"
#include "llmft/model/config.h"
#include "llmft/model/kernels/attention.h"
#include "llmft/model/kernels/crossentropy.h"
#include "llmft/model/kernels/dropout.h"
#include "llmft/model/kernels/gelu.h"
#include "llmft/model/kernels/layernorm.h"
#include "llmft/model/kernels/matmul.h"
#include "common.h"

namespace {

using llmft::bench::now_s;
using llmft::bench::median;

using namespace llmft::kernels;
using VF = std::vector<float>;

double load_average() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

VF randf(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  VF v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double max_abs_diff(const VF& a, const VF& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

struct Timing {
  double med_ms, min_ms, max_ms;
};
Timing summarize(const std::vector<double>& s) {
  return {median(s) * 1e3, *std::min_element(s.begin(), s.end()) * 1e3,
          *std::max_element(s.begin(), s.end()) * 1e3};
}

// Warm up both, then alternate old/new `reps` times.
std::pair<Timing, Timing> race(const std::function<void()>& old_fn,
                               const std::function<void()>& new_fn, int reps) {
  for (int w = 0; w < 2; ++w) {
    old_fn();
    new_fn();
  }
  std::vector<double> to, tn;
  for (int r = 0; r < reps; ++r) {
    double t0 = now_s();
    old_fn();
    to.push_back(now_s() - t0);
    t0 = now_s();
    new_fn();
    tn.push_back(now_s() - t0);
  }
  return {summarize(to), summarize(tn)};
}

nlohmann::json timing_json(const Timing& t) {
  return {{"median_ms", t.med_ms}, {"min_ms", t.min_ms}, {"max_ms", t.max_ms}};
}

// One JSON line; `per_step` = calls per training step (layers x uses per layer).
void report(const std::string& model, const std::string& kernel, const Timing& o,
            const Timing& n, double per_step, double check, nlohmann::json extra = {}) {
  nlohmann::json j{{"bench", "kernels"},
                   {"model", model},
                   {"kernel", kernel},
                   {"old", timing_json(o)},
                   {"new", timing_json(n)},
                   {"speedup_median", o.med_ms / n.med_ms},
                   {"old_ms_per_step", o.med_ms * per_step},
                   {"new_ms_per_step", n.med_ms * per_step},
                   {"max_abs_diff_old_new", check},
                   {"load_average", load_average()}};
  for (auto& [k, v] : extra.items()) j[k] = v;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

[[noreturn]] void fail(const std::string& what, double diff) {
  std::fprintf(stderr, "validation failed: %s differs by %g between old and new kernel\n",
               what.c_str(), diff);
  std::exit(1);
}

void bench_model(const std::string& name, const std::vector<int64_t>& lens, int reps, float p,
                 int64_t fused_rows, const std::string& only) {
  auto want = [&](const char* k) { return only.empty() || only.find(k) != std::string::npos; };
  const llmft::Gpt2Config cfg = llmft::Gpt2Config::from_name(name);
  const int64_t C = cfg.C, NH = cfg.NH, L = cfg.L, V = cfg.V;
  std::vector<int64_t> off{0};
  for (auto l : lens) off.push_back(off.back() + l);
  const int64_t N = off.back();
  const uint64_t seed = 11;

  // Attention. Old: the c_attn matmul's bias fill, attention_forward saving (NH, T, T)
  // weights; backward: attention_backward with an equal-size scratch, then c_attn's dbias
  // column sum. New: bias_attention_flash_forward (bias added in place, lse saved);
  // attention_flash_backward with the dbias sum. Both backward include the dqkv zero fill.
  if (want("attention")) {
    const int64_t A = attention_att_size(off, NH);
    VF qkv0 = randf(N * 3 * C, 1), bias = randf(3 * C, 3, 0.1f), dout = randf(N * C, 2);
    VF qkv = qkv0, qkv_new = qkv0, fill(N * 3 * C);
    for (int64_t i = 0; i < N * 3 * C; ++i) qkv[i] += bias[i % (3 * C)];  // what sgemm leaves
    VF y_old(N * C), att(A), scratch(A), dq_old(N * 3 * C), db_old(3 * C);
    VF y_new(N * C), lse(N * NH), dq_new(N * 3 * C), db_new(3 * C);
    VF sums(attention_flash_backward_scratch_size(off, C));
    auto fwd_old = [&] {
      for (int64_t i = 0; i < N; ++i) std::copy_n(bias.data(), 3 * C, fill.data() + i * 3 * C);
      attention_forward(y_old, att, qkv, off, N, C, NH, p, seed);
    };
    // Adds the bias again on every call: the values drift, the work does not.
    auto fwd_new = [&] {
      bias_attention_flash_forward(y_new, {}, lse, qkv_new, bias, off, N, C, NH, p, seed);
    };
    auto bwd_old = [&] {
      std::fill(dq_old.begin(), dq_old.end(), 0.0f);
      std::fill(db_old.begin(), db_old.end(), 0.0f);
      attention_backward(dq_old, scratch, dout, qkv, att, off, N, C, NH, p, seed);
      matmul_backward({}, {}, db_old, dq_old, {}, {}, N, C, 3 * C);
    };
    auto bwd_new = [&] {
      std::fill(dq_new.begin(), dq_new.end(), 0.0f);
      std::fill(db_new.begin(), db_new.end(), 0.0f);
      attention_flash_backward(dq_new, db_new, sums, dout, qkv_new, y_new, lse, off, N, C, NH, p,
                               seed);
    };
    fwd_old();
    fwd_new();
    const double dy = max_abs_diff(y_old, y_new);
    const auto [fo, fn] = race(fwd_old, fwd_new, reps);
    qkv_new = qkv;
    attention_flash_forward(y_new, lse, qkv_new, off, N, C, NH, p, seed);
    bwd_old();
    bwd_new();
    const double dd = std::max(max_abs_diff(dq_old, dq_new), max_abs_diff(db_old, db_new) / N);
    if (dy > 1e-4 || dd > 1e-3) fail("attention", std::max(dy, dd));
    const auto [bo, bn] = race(bwd_old, bwd_new, reps);
    const double saved_mb = (static_cast<double>(A) - static_cast<double>(N * NH)) * 4 / 1e6;
    report(name, "attention forward (+qkv bias)", fo, fn, L, dy,
           {{"N", N}, {"seqs", lens.size()}, {"saved_mb_per_layer_less", saved_mb}});
    report(name, "attention backward (+dqkv fill, +qkv dbias)", bo, bn, L, dd);
  }

  // Residual + LayerNorm forward. Old: the projection matmul's bias fill (its sgemm then adds
  // with beta = 1), dropout_forward when p > 0, residual_forward, layernorm_forward. New: the
  // sgemm with beta = 0 and one fused pass that adds the bias. The sgemms are not timed.
  if (want("layernorm")) {
    VF res = randf(N * C, 3), br0 = randf(N * C, 4), bias = randf(C, 5), w = randf(C, 6),
       b = randf(C, 7);
    VF br(N * C), fill(N * C), res_old(N * C), y_old(N * C), m_old(N), r_old(N);
    VF res_new(N * C), y_new(N * C), m_new(N), r_new(N);
    auto old_fn = [&] {
      for (int64_t i = 0; i < N; ++i) std::copy_n(bias.data(), C, fill.data() + i * C);
      for (int64_t i = 0; i < N * C; ++i) br[i] = br0[i] + bias[i % C];  // what sgemm leaves
      if (p > 0) dropout_forward(br, br, p, seed, N * C);
      residual_forward(res_old, res, br, N * C);
      layernorm_forward(y_old, m_old, r_old, res_old, w, b, N, C, 1e-5f);
    };
    auto old_timed = [&] {
      for (int64_t i = 0; i < N; ++i) std::copy_n(bias.data(), C, fill.data() + i * C);
      if (p > 0) dropout_forward(fill, fill, p, seed, N * C);
      residual_forward(res_old, res, br, N * C);
      layernorm_forward(y_old, m_old, r_old, res_old, w, b, N, C, 1e-5f);
    };
    auto new_fn = [&] {
      residual_layernorm_forward(res_new, y_new, {}, m_new, r_new, res, br0, bias, w, b, N, C,
                                 1e-5f, p, seed);
    };
    old_fn();
    new_fn();
    const double d = std::max(max_abs_diff(res_old, res_new), max_abs_diff(y_old, y_new));
    if (d > 1e-4) fail("residual_layernorm", d);
    const auto [o, n] = race(old_timed, new_fn, reps);
    report(name, "residual+layernorm forward (+bias add)", o, n, 2 * L, d);
  }

  // LayerNorm backward. Old: layernorm_backward (+ dropout_backward when p > 0) and the
  // projection's dbias column sum in matmul_backward. New: one fused call.
  if (want("layernorm")) {
    VF x = randf(N * C, 8), dy = randf(N * C, 9), w = randf(C, 10), mean(N), rstd(N), y(N * C);
    layernorm_forward(y, mean, rstd, x, w, w, N, C, 1e-5f);
    VF dres0 = randf(N * C, 11);
    VF dx_old(N * C), dbr_old(N * C), dw_old(C), db_old(C), dbias_old(C);
    VF dx_new(N * C), dbr_new(N * C), dw_new(C), db_new(C), dbias_new(C);
    VF scratch(layernorm_residual_backward_scratch_size(N, C));
    auto old_fn = [&] {
      std::copy(dres0.begin(), dres0.end(), dx_old.begin());
      std::fill(dw_old.begin(), dw_old.end(), 0.0f);
      std::fill(db_old.begin(), db_old.end(), 0.0f);
      std::fill(dbias_old.begin(), dbias_old.end(), 0.0f);
      layernorm_backward(dx_old, dw_old, db_old, dy, x, w, mean, rstd, N, C);
      std::span<const float> g = dx_old;
      if (p > 0) {
        std::fill(dbr_old.begin(), dbr_old.end(), 0.0f);
        dropout_backward(dbr_old, dx_old, p, seed, N * C);
        g = dbr_old;
      }
      matmul_backward({}, {}, dbias_old, g, {}, {}, N, C, C);
    };
    auto new_fn = [&] {
      std::copy(dres0.begin(), dres0.end(), dx_new.begin());
      std::fill(dw_new.begin(), dw_new.end(), 0.0f);
      std::fill(db_new.begin(), db_new.end(), 0.0f);
      std::fill(dbias_new.begin(), dbias_new.end(), 0.0f);
      layernorm_residual_backward(dx_new, p > 0 ? std::span<float>(dbr_new) : std::span<float>(),
                                  dbias_new, dw_new, db_new, scratch, dy, x, w, mean, rstd, N, C,
                                  p, seed);
    };
    old_fn();
    new_fn();
    const double d = std::max({max_abs_diff(dx_old, dx_new), max_abs_diff(dw_old, dw_new) / N,
                               max_abs_diff(dbias_old, dbias_new) / N});
    if (d > 1e-4) fail("layernorm_residual_backward", d);
    const auto [o, n] = race(old_fn, new_fn, reps);
    report(name, "layernorm backward (+residual grad copy, +proj dbias)", o, n, 2 * L, d);
  }

  // GELU. Forward old: the fc matmul's bias fill + gelu_forward; new: bias_gelu_forward.
  // Backward old: fill + gelu_backward + c_fc dbias column sum; new: gelu_bias_backward.
  if (want("gelu")) {
    const int64_t OC = 4 * C;
    VF pre = randf(N * OC, 12), bias = randf(OC, 13), dy = randf(N * OC, 14);
    VF x_old(N * OC), y_old(N * OC), x_new = pre, y_new(N * OC), fill(N * OC);
    for (int64_t i = 0; i < N * OC; ++i) x_old[i] = pre[i] + bias[i % OC];  // what sgemm leaves
    auto fo = [&] {
      for (int64_t i = 0; i < N; ++i) std::copy_n(bias.data(), OC, fill.data() + i * OC);
      gelu_forward(y_old, x_old, N * OC);
    };
    // Adds the bias again on every call: the values drift, the work does not.
    auto fn = [&] { bias_gelu_forward(y_new, {}, x_new, bias, N, OC); };
    fo();
    fn();
    const double d = max_abs_diff(y_old, y_new);
    if (d > 1e-5) fail("bias_gelu_forward", d);
    const auto [o, n] = race(fo, fn, reps);
    x_new = x_old;  // for the backward below
    report(name, "bias+gelu forward", o, n, L, d);

    // Backward. Old: gelu_forward recompute (for the c_proj dW), fill, gelu_backward, c_fc's
    // dbias column sum. New: one gelu_bias_backward pass writing the recompute and d(fch).
    VF act_old(N * OC), act_new(N * OC), dx_old(N * OC), db_old(OC), dx_new(N * OC), db_new(OC);
    VF scratch(gelu_bias_backward_scratch_size(N, OC));
    auto bo = [&] {
      gelu_forward(act_old, x_old, N * OC);
      std::fill(dx_old.begin(), dx_old.end(), 0.0f);
      std::fill(db_old.begin(), db_old.end(), 0.0f);
      gelu_backward(dx_old, dy, x_old, N * OC);
      matmul_backward({}, {}, db_old, dx_old, {}, {}, N, C, OC);
    };
    auto bn = [&] {
      std::fill(db_new.begin(), db_new.end(), 0.0f);
      gelu_bias_backward(dx_new, act_new, {}, db_new, scratch, dy, x_new, N, OC);
    };
    bo();
    bn();
    const double db = std::max({max_abs_diff(dx_old, dx_new), max_abs_diff(db_old, db_new) / N,
                                max_abs_diff(act_old, act_new)});
    if (db > 1e-5) fail("gelu_bias_backward", db);
    const auto [o2, n2] = race(bo, bn, reps);
    report(name, "gelu backward (+recompute, +fill, +c_fc dbias)", o2, n2, L, db);
  }

  // Head + cross-entropy, once per step. Old: forward then backward reusing the (M, V) logits
  // the forward left (M <= R). New: one pass over chunks of --head-rows rows.
  if (want("head")) {
    const int64_t M = N, R = 1024;  // every position has a target; R: Gpt2's default chunk
    VF x = randf(M * C, 15), w = randf(V * C, 16, 0.02f);
    std::vector<int32_t> tg(M);
    for (int64_t i = 0; i < M; ++i) tg[i] = static_cast<int32_t>((i * 7919) % V);
    VF loss_old(M), lse_old(M), scr_old(std::min(M, R) * V), dx_old(M * C), dw_old(V * C);
    auto old_fn = [&] {
      std::fill(dx_old.begin(), dx_old.end(), 0.0f);
      head_crossentropy_forward(loss_old, lse_old, scr_old, x, w, tg, M, C, V, R);
      head_crossentropy_backward(dx_old, dw_old, scr_old, x, w, tg, lse_old, 1.0f / M, M, C, V, R,
                                 true);
    };
    auto old_f = [&] { head_crossentropy_forward(loss_old, lse_old, scr_old, x, w, tg, M, C, V, R); };
    old_fn();
    const int hreps = std::max(3, reps / 2);
    const double fwd_flop = 2.0 * M * C * V;
    // Forward and backward in one call, row chunks of Rf rows: no recompute.
    const int64_t Rf = fused_rows;
    VF loss_f(M), lse_f(M), scr_f(std::min(M, Rf) * V), dx_f(M * C), dw_f(V * C);
    auto fused_fn = [&] {
      std::fill(dx_f.begin(), dx_f.end(), 0.0f);
      head_crossentropy_forward_backward(loss_f, lse_f, dx_f, dw_f, scr_f, x, w, tg, 1.0f / M, M,
                                         C, V, Rf);
    };
    fused_fn();
    const double df = std::max(max_abs_diff(loss_old, loss_f), max_abs_diff(dx_old, dx_f));
    if (df > 1e-4) fail("head_crossentropy_forward_backward", df);
    // Forward only (evaluation) in row chunks of Rf: the unblocked kernel with a smaller R.
    VF loss_r(M), lse_r(M), scr_r(std::min(M, Rf) * V);
    auto small_f = [&] { head_crossentropy_forward(loss_r, lse_r, scr_r, x, w, tg, M, C, V, Rf); };
    const auto [o4, n4] = race(old_f, small_f, hreps);
    report(name, "head+crossentropy forward, row chunks", o4, n4, 1, 0.0,
           {{"R", Rf},
            {"new_scratch_mb", scr_r.size() * 4 / 1e6},
            {"old_gflops", fwd_flop / o4.med_ms / 1e6},
            {"new_gflops", fwd_flop / n4.med_ms / 1e6}});
    const auto [o3, n3] = race(old_fn, fused_fn, hreps);
    report(name, "head+crossentropy forward+backward, one pass", o3, n3, 1, df,
           {{"R", Rf},
            {"M", M},
            {"old_scratch_mb", scr_old.size() * 4 / 1e6},
            {"new_scratch_mb", scr_f.size() * 4 / 1e6},
            {"old_gflops", 3 * fwd_flop / o3.med_ms / 1e6},
            {"new_gflops", 3 * fwd_flop / n3.med_ms / 1e6}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "gpt2-medium", lengths_file, only;
  int reps = 9, batch = 8, first = 0, threads = 0;
  float dropout = 0.0f;
  int64_t fused_rows = 256;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") model = next();
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--first") first = std::stoi(next());
    else if (a == "--dropout") dropout = std::stof(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--head-rows") fused_rows = std::stoll(next());
    else if (a == "--lengths") lengths_file = next();
    else if (a == "--only") only = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (reps < 1 || batch < 1 || first < 0 || fused_rows < 1 || dropout < 0 || dropout >= 1) {
    std::fprintf(stderr, "bad arguments: --reps, --batch, --head-rows >= 1; --first >= 0; "
                         "--dropout in [0, 1)\n");
    return 2;
  }
  if (lengths_file.empty())
    lengths_file = std::string(LLMFT_SOURCE_DATA_DIR) + "/../bench/data/recipe_lengths.json";
  std::ifstream lf(lengths_file);
  if (!lf) {
    std::fprintf(stderr, "cannot open %s\n", lengths_file.c_str());
    return 1;
  }
  const auto all = nlohmann::json::parse(lf).at("full").get<std::vector<int64_t>>();
  std::vector<int64_t> lens;
  for (int k = 0; k < batch; ++k) lens.push_back(all[(static_cast<size_t>(first) + k) % all.size()]);
  const ScopedThreads scoped(threads);
  std::printf("%s\n", nlohmann::json{{"bench", "kernels_context"},
                                     {"threads", omp_get_max_threads()},
                                     {"lengths", lens},
                                     {"dropout", dropout},
                                     {"reps", reps},
                                     {"only", only},
                                     {"load_average", load_average()},
                                     {"compiler", fmt::format("gcc {}.{}", __GNUC__, __GNUC_MINOR__)}}
                          .dump()
                          .c_str());
  const std::vector<std::string> models =
      model == "all" ? std::vector<std::string>{"gpt2-medium", "gpt2"} : std::vector{model};
  for (const auto& m : models) bench_model(m, lens, reps, dropout, fused_rows, only);
  return 0;
}
