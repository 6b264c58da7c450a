// Training-step benchmark: zero_grad + forward + backward + AdamW on random GPT-2 weights with the
// recipe's batch shapes (8 consecutive entries' token counts from bench/data/recipe_lengths.json,
// packed end to end, no padding). Checks the loss first, warms up, repeats, reports the median.
// Also times a plain sgemm of the model's MLP shape as the same-run baseline for GFLOP/s.
// Usage: bench_train_step [--model gpt2|gpt2-medium|...] [--precision fp32|bf16] [--steps 5]
//        [--warmup 1] [--batch 8] [--lora RANK]
//        [--threads N] [--tied] [--lengths FILE] [--profile]
// --lora RANK: train LoRA adapters of that rank on the four block layers instead (frozen base,
// kept in bf16 only with --precision bf16); the FLOP rate then counts the full model's work.
// --profile: also one JSON line per kernel (seconds per step, share of the step; timers add a
// little overhead, so the step time of a profiled run is not the headline figure).
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/lora.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/model/profile.h"
#include "common.h"

namespace {

using llmft::bench::now_s;
using llmft::bench::median;
using llmft::bench::peak_rss_mb;

double sgemm_gflops(int64_t M, int64_t K, int64_t N, int reps) {
  std::vector<float> a(M * K, 0.01f), b(K * N, 0.02f), c(M * N);
  std::vector<double> t;
  for (int r = 0; r < reps + 1; ++r) {
    const double t0 = now_s();
    llmft::kernels::sgemm(false, false, M, N, K, a.data(), K, b.data(), N, 0.0f, c.data(), N);
    if (r > 0) t.push_back(now_s() - t0);
  }
  return 2.0 * M * K * N / median(t) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_name = "gpt2", lengths_file, precision = "fp32";
  int steps = 5, warmup = 1, batch = 8, threads = 0, lora_rank = 0;
  bool tied = false, prof = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") model_name = next();
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--tied") tied = true;
    else if (a == "--profile") prof = true;
    else if (a == "--precision") precision = next();
    else if (a == "--lora") lora_rank = std::stoi(next());
    else if (a == "--lengths") lengths_file = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (steps < 1 || batch < 1) {
    std::fprintf(stderr, "--steps and --batch must be >= 1\n");
    return 2;
  }
  if (lengths_file.empty())
    lengths_file = std::string(LLMFT_SOURCE_DATA_DIR) + "/../bench/data/recipe_lengths.json";
  std::ifstream lf(lengths_file);
  if (!lf) {
    std::fprintf(stderr, "cannot open %s\n", lengths_file.c_str());
    return 1;
  }
  const auto lengths = nlohmann::json::parse(lf).at("full").get<std::vector<int64_t>>();
  const llmft::kernels::ScopedThreads scoped_threads(threads);
  const int nthreads = omp_get_max_threads();

  llmft::Gpt2Config cfg = llmft::Gpt2Config::from_name(model_name);
  cfg.tied = tied;
  llmft::Gpt2 model(cfg);
  model.init_random(123);
  model.set_precision(llmft::parse_precision(precision));
  std::unique_ptr<llmft::Lora> lora;
  if (lora_rank > 0) {
    llmft::LoraConfig lc;
    lc.rank = lora_rank;
    lc.alpha = lora_rank;
    lora = std::make_unique<llmft::Lora>(cfg, lc);
    lora->init(1);
    model.set_lora(lora.get());
    if (model.precision() == llmft::Precision::kBf16) model.keep_base_in_bf16();
  }
  llmft::AdamW opt(model.trainable().table.total(), llmft::AdamWConfig{});

  // Batches of `batch` consecutive entries; each entry is one packed sequence of its own tokens.
  std::mt19937 rng(123);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg.V) - 2);
  struct Batch {
    std::vector<int32_t> in, tg;
    std::vector<int64_t> off;
    int64_t attn_sq = 0;
  };
  const int nbatches = warmup + steps;
  std::vector<Batch> batches(nbatches);
  int64_t max_tokens = 0;
  for (int b = 0; b < nbatches; ++b) {
    Batch& B = batches[b];
    B.off.push_back(0);
    for (int k = 0; k < batch; ++k) {
      const int64_t n = lengths[(static_cast<size_t>(b) * batch + k) % lengths.size()];
      for (int64_t t = 0; t < n; ++t) {
        B.in.push_back(tok(rng));
        B.tg.push_back(t + 1 < n ? tok(rng) : static_cast<int32_t>(cfg.V - 1));
      }
      B.off.push_back(static_cast<int64_t>(B.in.size()));
      B.attn_sq += n * n;
    }
    max_tokens = std::max<int64_t>(max_tokens, B.in.size());
  }
  model.reserve(max_tokens);

  // Validate before timing: random init gives a loss near ln(V).
  {
    model.zero_grad();
    const auto r = model.forward(batches[0].in, batches[0].tg, batches[0].off);
    model.backward(1.0f / static_cast<float>(r.n_targets));
    const double expect = std::log(static_cast<double>(cfg.V));
    if (!std::isfinite(r.mean()) || std::fabs(r.mean() - expect) > 1.0 ||
        !std::isfinite(model.grad_norm())) {
      std::fprintf(stderr, "validation failed: loss %g (expected ~%g), grad norm %g\n", r.mean(),
                   expect, model.grad_norm());
      return 1;
    }
  }

  // As the trainer runs it (fuse_adamw): AdamW inside the backward pass for full finetuning.
  const bool fused = !lora;
  if (fused)
    model.set_fused_update([&](int64_t offset, std::span<const float> g) {
      opt.update(model.params(), offset, g);
    });

  // Matmul weights (what 6 * params * tokens counts): every linear layer plus the head.
  const int64_t C = cfg.C, L = cfg.L;
  const double matmul_params = static_cast<double>(L) * 12 * C * C + static_cast<double>(cfg.V) * C;

  std::vector<double> ms, tps, gflops;
  int64_t tokens_total = 0;
  for (int b = 0; b < nbatches; ++b) {
    const Batch& B = batches[b];
    if (b == warmup && prof) {
      llmft::profile::reset();
      llmft::profile::enable(true);
    }
    const double t0 = now_s();
    model.zero_grad();
    if (fused) opt.begin_step(opt.config().lr);
    // Every target counts (none is -100), so the mean's scale is 1 / tokens.
    model.forward_backward(B.in, B.tg, B.off, 1.0f / static_cast<float>(B.in.size()));
    if (!fused) {
      llmft::profile::Scope ps("adamw");
      const llmft::Gpt2::Trainable t = model.trainable();
      opt.step(t.params, t.grads);
    }
    const double dt = now_s() - t0;
    if (b < warmup) continue;
    const double ntok = static_cast<double>(B.in.size());
    tokens_total += static_cast<int64_t>(ntok);
    ms.push_back(dt * 1e3);
    tps.push_back(ntok / dt);
    // forward 2*P*N, backward 4*P*N; attention: q.k and att.v, forward 2*C*T^2 per layer
    // (causal half of 2 matmuls), backward twice that.
    const double flops = 6.0 * matmul_params * ntok + 6.0 * L * C * static_cast<double>(B.attn_sq);
    gflops.push_back(flops / dt / 1e9);
  }
  llmft::profile::enable(false);
  const double base = sgemm_gflops(512, C, 4 * C, 3);
  const auto [mn, mx] = std::minmax_element(ms.begin(), ms.end());
  std::printf("%s\n",
              nlohmann::json{{"bench", "train_step"},
                             {"model", model_name},
                             {"head", tied ? "tied" : "untied"},
                             {"precision", precision},
                             {"params", model.table().numel()},
                             {"lora_rank", lora_rank},
                             {"trainable_params", model.trainable().table.numel()},
                             {"threads", nthreads},
                             {"batch", batch},
                             {"steps", steps},
                             {"tokens_per_step_mean", static_cast<double>(tokens_total) / steps},
                             {"ms_per_step_median", median(ms)},
                             {"ms_per_step_min", *mn},
                             {"ms_per_step_max", *mx},
                             {"real_tokens_per_s_median", median(tps)},
                             {"gflops_median", median(gflops)},
                             {"sgemm_baseline_gflops", base},
                             {"blas_kernels", llmft::kernels::blas_kernels()},
                             {"peak_rss_mb", peak_rss_mb()},
                             {"compiler", fmt::format("gcc {}.{}", __GNUC__, __GNUC_MINOR__)}}
                  .dump()
                  .c_str());
  if (prof) {
    double sum_ms = 0.0;
    for (const double m : ms) sum_ms += m;
    const double step_s = sum_ms / 1e3 / steps;
    for (const auto& e : llmft::profile::entries())
      std::printf("%s\n", nlohmann::json{{"bench", "train_step_kernel"},
                                         {"model", model_name},
                                         {"kernel", e.name},
                                         {"ms_per_step", e.seconds * 1e3 / steps},
                                         {"calls_per_step", e.calls / steps},
                                         {"share", e.seconds / steps / step_s}}
                                .dump()
                                .c_str());
  }
  return 0;
}
