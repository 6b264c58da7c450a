// DPO step benchmark (llmft dpo's loop): batches of 8 consecutive train-split pairs of the bundled
// preference data, chosen and rejected packed in one pass; forward, DPO loss, per-token backward,
// AdamW. The reference model's scores are computed once per pair (a forward over the batch),
// timed apart and added back for the "one epoch" cost (each pair is scored once per run).
// Random weights of the named shape (the cost does not depend on the values). Checks the first
// step's loss (ln 2: policy = reference), warms up, repeats, reports medians and peak memory.
// --dump FILE writes the timed batches' token lists for bench/pytorch/dpo_bench.py.
// Usage: bench_dpo_step [--model gpt2-medium] [--precision fp32|bf16] [--steps 3] [--warmup 1]
//                       [--batch 8] [--threads N] [--dump FILE]
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/preference.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/train/dpo_loss.h"
#include "common.h"

namespace {

using llmft::bench::now_s;
using llmft::bench::median;
using llmft::bench::peak_rss_mb;

}  // namespace

int main(int argc, char** argv) {
  std::string model_name = "gpt2-medium", precision = "fp32", dump;
  int steps = 3, warmup = 1, batch = 8, threads = 0;
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
    else if (a == "--precision") precision = next();
    else if (a == "--dump") dump = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (steps < 1 || batch < 1 || warmup < 0) {
    std::fprintf(stderr, "--steps and --batch must be >= 1, --warmup >= 0\n");
    return 2;
  }
  const llmft::kernels::ScopedThreads scoped_threads(threads);
  const int nthreads = omp_get_max_threads();

  llmft::Gpt2Config cfg = llmft::Gpt2Config::from_name(model_name);
  cfg.tied = false;  // the reference recipe's untied head
  const auto ds =
      llmft::load_dataset(llmft::data_dir() / "instruction-data-with-preference.json");
  const auto pref =
      llmft::tokenize_preferences(ds, llmft::BpeTokenizer::bundled(), cfg.maxT, nthreads);
  const int nbatches = warmup + steps;
  std::vector<llmft::PreferenceBatch> batches;
  for (int b = 0; b < nbatches; ++b) {
    std::vector<int64_t> idx;
    for (int k = 0; k < batch; ++k) idx.push_back(static_cast<int64_t>(b) * batch + k);
    batches.push_back(llmft::collate_preferences(pref, idx, cfg.maxT));
  }
  if (!dump.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& b : batches) {
      nlohmann::json e{{"chosen", nlohmann::json::array()},
                       {"rejected", nlohmann::json::array()},
                       {"prompt_lens", nlohmann::json::array()}};
      for (int64_t i : b.indices) {
        const auto k = static_cast<size_t>(i);
        const auto c = pref.chosen.ids(k), r = pref.rejected.ids(k);
        e["chosen"].push_back(std::vector<int32_t>(c.begin(), c.end()));
        e["rejected"].push_back(std::vector<int32_t>(r.begin(), r.end()));
        e["prompt_lens"].push_back(pref.chosen.prompt_lens[k]);
      }
      j.push_back(e);
    }
    std::ofstream(dump) << j.dump();
  }

  llmft::Gpt2 model(cfg);
  model.init_random(123);
  model.set_precision(llmft::parse_precision(precision));
  llmft::AdamWConfig ac;
  ac.lr = 5e-6f;
  ac.weight_decay = 0.01;
  llmft::AdamW opt(model.table().total(), ac);
  int64_t max_tokens = 0;
  for (const auto& b : batches) max_tokens = std::max(max_tokens, b.tokens());
  model.reserve(max_tokens);

  // The reference scores: one eval forward per batch (before any update: the policy's weights).
  std::vector<std::vector<double>> ref(batches.size());
  std::vector<double> ref_ms;
  for (size_t b = 0; b < batches.size(); ++b) {
    const double t0 = now_s();
    ref[b] = llmft::score_pairs(model, batches[b], /*training=*/false);
    if (static_cast<int>(b) >= warmup) ref_ms.push_back((now_s() - t0) * 1e3);
  }

  std::vector<double> ms, losses;
  int64_t tokens = 0, padded = 0;
  for (int b = 0; b < nbatches; ++b) {
    const auto& B = batches[static_cast<size_t>(b)];
    const double t0 = now_s();
    model.zero_grad();
    const auto policy = llmft::score_pairs(model, B, /*training=*/true);
    std::vector<float> dl(static_cast<size_t>(B.target_tokens()));
    const auto st = llmft::dpo_loss(policy, ref[static_cast<size_t>(b)], 0.1, B.target_offsets, dl);
    model.backward(dl);
    opt.step(model.params(), model.grads());
    const double dt = now_s() - t0;
    losses.push_back(st.loss);
    if (b < warmup) continue;
    ms.push_back(dt * 1e3);
    tokens += B.tokens();
    padded += 2 * B.padded_tokens;
  }
  // Validate: the first batch's policy was the reference.
  if (!(std::fabs(losses[0] - std::log(2.0)) < 1e-4)) {
    std::fprintf(stderr, "validation failed: first loss %g, expected ln 2\n", losses[0]);
    return 1;
  }
  const double step = median(ms), refb = median(ref_ms);
  std::printf("%s\n", nlohmann::json{{"bench", "dpo_step"},
                                     {"model", model_name},
                                     {"precision", precision},
                                     {"threads", nthreads},
                                     {"batch_pairs", batch},
                                     {"steps", steps},
                                     {"packed_tokens_per_step_mean", double(tokens) / steps},
                                     {"padded_tokens_per_step_mean", double(padded) / steps},
                                     {"ms_per_step_median", step},
                                     {"ms_per_step_min", *std::min_element(ms.begin(), ms.end())},
                                     {"ms_per_step_max", *std::max_element(ms.begin(), ms.end())},
                                     {"reference_ms_per_batch_median", refb},
                                     {"ms_per_step_with_reference", step + refb},
                                     {"peak_rss_mb", peak_rss_mb()},
                                     {"compiler", fmt::format("gcc {}.{}", __GNUC__, __GNUC_MINOR__)}}
                          .dump()
                          .c_str());
  return 0;
}
