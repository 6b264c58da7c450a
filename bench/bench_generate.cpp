// Generation throughput with the KV-cached Decoder, random weights (sd 0.02; timing only).
// Two modes, one JSON line per result:
//   bench_generate [models] [new_tokens] [repeats] [streams]
//       ~40-token random prompts, prefill and decode timed apart, 1/8/16 streams (or the given
//       comma-separated list), fp32 and bf16 (median of repeats after a warm-up),
//       e.g. bench_generate gpt2,gpt2-medium 128 3 1,8
//   bench_generate testset [--precision fp32|bf16] [--batch-size N] [--new-tokens 256]
//                          [--model gpt2-medium] [--single-tokens 64] [--prompts N]
//                          [--profile]
//       The issue-6 workload: the bundled dataset's test split (SPEC §1, 110 prompts), alpaca
//       prompts, greedy, --new-tokens each with no early stop, through generate(); prints wall
//       time, tokens/s, peak RSS and the load average; then one stream decoding --single-tokens
//       tokens in fp32 and in bf16 (0 skips it): decode tokens/s and time to the first token
//       (bf16's includes packing the bf16 weights). --prompts N answers only the first N test
//       prompts (0, the default: all 110), for quick runs at low thread counts. --profile adds
//       one line per kernel of the test-set run (seconds, share of the wall time). The test-set
//       line gives the GFLOP/s of useful work (bench_recipe's count) against a same-run gemm
//       peak (gemm_bf16 or sgemm, as the precision); the single-stream line, bf16 decode against
//       the same-run memory bandwidth.
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/generate/decoder.h"
#include "llmft/generate/generate.h"
#include "llmft/generate/sampler.h"
#include "llmft/model/params.h"
#include "llmft/model/profile.h"
#include "llmft/tokenizer/bpe.h"
#include "common.h"

using namespace llmft;

namespace {

using llmft::bench::now_s;
using llmft::bench::median;
using llmft::bench::peak_rss_gib;

// A model with uniform weights of sd 0.02 (a normal distribution takes seconds for gpt2-medium;
// timing only).
Gpt2 random_model(const Gpt2Config& cfg) {
  Gpt2 model(cfg);
  uint64_t s = 1;
  for (auto& x : model.params()) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = (static_cast<float>(s >> 40) / 16777216.0f - 0.5f) * 0.0693f;  // sqrt(12) * 0.02
  }
  return model;
}

double load1() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

// Prefill + decode of random prompts through the Decoder directly, per streams count.
int streams_mode(int argc, char** argv) {
  std::string models = argc > 1 ? argv[1] : "gpt2,gpt2-medium";
  const int64_t new_tokens = argc > 2 ? std::stoll(argv[2]) : 128;
  const int repeats = argc > 3 ? std::stoi(argv[3]) : 3;
  std::vector<int64_t> streams;
  std::stringstream streams_list(argc > 4 ? argv[4] : "1,8,16");
  for (std::string b; std::getline(streams_list, b, ',');) streams.push_back(std::stoll(b));
  const int64_t prompt_len = 40;
  fmt::print("{{\"context\": \"bench_generate\", \"threads\": {}, \"compiler\": \"{}\", "
             "\"prompt_tokens\": {}, \"new_tokens\": {}, \"repeats\": {}, \"load1\": {:.2f}}}\n",
             omp_get_max_threads(), __VERSION__, prompt_len, new_tokens, repeats, load1());
  std::stringstream ss(models);
  std::string name;
  while (std::getline(ss, name, ',')) {
    const Gpt2Config cfg = Gpt2Config::from_name(name);
    Gpt2 model = random_model(cfg);
    std::mt19937 gen(2);
    for (const Precision precision : {Precision::kFp32, Precision::kBf16}) {
      for (int64_t B : streams) {
        Decoder dec(model, B, prompt_len + new_tokens, precision);
        std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(B));
        for (auto& p : prompts)
          for (int64_t i = 0; i < prompt_len; ++i) p.push_back(static_cast<int32_t>(gen() % 50000));
        std::vector<float> logits(static_cast<size_t>(B * cfg.V));
        std::vector<double> prefill_s, decode_s;
        for (int rep = 0; rep <= repeats; ++rep) {  // rep 0 = warm-up
          std::vector<DecodeChunk> chunks;
          for (int64_t s = 0; s < B; ++s) {
            dec.reset(s);
            chunks.push_back({s, prompts[static_cast<size_t>(s)]});
          }
          const double t0 = now_s();
          dec.forward(chunks, logits);
          const double t1 = now_s();
          std::vector<int32_t> next(static_cast<size_t>(B));
          for (int64_t step = 0; step + 1 < new_tokens; ++step) {
            for (int64_t s = 0; s < B; ++s) {
              next[static_cast<size_t>(s)] = argmax(std::span<const float>(logits).subspan(
                  static_cast<size_t>(s * cfg.V), static_cast<size_t>(cfg.V)));
              chunks[static_cast<size_t>(s)] = {s, {&next[static_cast<size_t>(s)], 1}};
            }
            dec.forward(chunks, logits);
          }
          const double t2 = now_s();
          if (rep > 0) {
            prefill_s.push_back(t1 - t0);
            decode_s.push_back(t2 - t1);
          }
        }
        const double pm = median(prefill_s), dm = median(decode_s);
        const auto [dmin, dmax] = std::minmax_element(decode_s.begin(), decode_s.end());
        // Decode tokens: the first new token comes from the prefill's logits.
        const double dtok = static_cast<double>(B * (new_tokens - 1));
        fmt::print("{{\"bench\": \"generate\", \"model\": \"{}\", \"precision\": \"{}\", "
                   "\"streams\": {}, \"prefill_tok_s\": {:.1f}, \"decode_tok_s\": {:.2f}, "
                   "\"decode_tok_s_per_stream\": {:.2f}, \"decode_tok_s_min\": {:.2f}, "
                   "\"decode_tok_s_max\": {:.2f}, \"prefill_ms\": {:.1f}, \"decode_ms_per_step\": "
                   "{:.1f}}}\n",
                   name, to_string(precision), B, static_cast<double>(B * prompt_len) / pm,
                   dtok / dm, dtok / dm / static_cast<double>(B), dtok / *dmax, dtok / *dmin,
                   pm * 1e3, dm * 1e3 / static_cast<double>(new_tokens - 1));
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

struct SingleStream {
  double first_token_s = 0;  // decoder setup (bf16: weight packing) + prefill + first token
  double decode_tok_s = 0;   // the tokens after the first
};

// One stream through generate(): prefill `prompt`, then decode `tokens` tokens.
SingleStream single_stream(Gpt2& model,
                           std::span<const int32_t> prompt, int64_t tokens, Precision precision) {
  GenerateOptions o;
  o.max_new_tokens = tokens;
  o.batch_size = 1;
  o.stop_at_eos = false;
  o.precision = precision;
  double t_first = 0;
  bool first = true;
  o.on_token = [&](size_t, int32_t) {
    if (first) t_first = now_s();
    first = false;
  };
  const std::vector<std::vector<int32_t>> prompts = {{prompt.begin(), prompt.end()}};
  const double t0 = now_s();
  generate(model, prompts, o);
  return {t_first - t0, static_cast<double>(tokens - 1) / (now_s() - t_first)};
}

int testset_mode(int argc, char** argv) {
  std::string model = "gpt2-medium";
  Precision precision = Precision::kFp32;
  int64_t batch = GenerateOptions{}.batch_size, new_tokens = 256, single_tokens = 64, limit = 0;
  bool prof = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--precision") precision = parse_precision(next());
    else if (a == "--batch-size") batch = std::stoll(next());
    else if (a == "--new-tokens") new_tokens = std::stoll(next());
    else if (a == "--model") model = next();
    else if (a == "--single-tokens") single_tokens = std::stoll(next());
    else if (a == "--prompts") limit = std::stoll(next());
    else if (a == "--profile") prof = true;
    else throw std::runtime_error("unknown option " + a);
  }
  Gpt2Config cfg = Gpt2Config::from_name(model);
  cfg.tied = false;  // the reference's untied head (a separate lm_head)
  Gpt2 gpt2 = random_model(cfg);
  const InstructionDataset ds = load_dataset(data_dir() / "instruction-data.json");
  const DatasetSplits split = split_dataset(ds.size());
  std::vector<std::string> texts;
  const size_t end = limit > 0 ? std::min(split.test.end, split.test.begin + static_cast<size_t>(limit))
                                : split.test.end;
  for (size_t i = split.test.begin; i < end; ++i)
    texts.push_back(format_prompt(PromptTemplate::kAlpaca, ds.entries[i]));
  const BpeTokenizer tok = BpeTokenizer::load_bundled();
  const auto prompts = tok.encode_batch(texts, SpecialTokens::kAllow);
  int64_t prompt_tokens = 0, longest = 0;
  for (const auto& p : prompts) {
    prompt_tokens += static_cast<int64_t>(p.size());
    longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  }

  GenerateOptions o;
  o.max_new_tokens = new_tokens;
  o.batch_size = batch;
  o.stop_at_eos = false;  // every prompt gets exactly new_tokens
  o.precision = precision;
  const double load_before = load1();
  const bool bf16 = precision == Precision::kBf16;
  const double peak_before = llmft::bench::gemm_peak_gflops(bf16);
  GenerateStats st;
  profile::enable(prof);
  const double t0 = now_s();
  generate(gpt2, prompts, o, &st);
  const double wall = now_s() - t0;
  profile::enable(false);
  const double peak = std::max(peak_before, llmft::bench::gemm_peak_gflops(bf16));
  // Useful work (the recipe bench's count): each prompt of n tokens with m new ones runs
  // T = n + m - 1 positions through the blocks, attends causally over them, and computes the
  // head for its m new tokens.
  const auto m = static_cast<double>(new_tokens);
  double flops = 0;
  for (const auto& p : prompts) {
    const double T = static_cast<double>(p.size()) + m - 1;
    flops += llmft::bench::forward_flops(cfg, T, m, T * (T + 1));
  }
  const double gflops = flops / wall / 1e9;
  fmt::print("{{\"bench\": \"generate_testset\", \"model\": \"{}\", \"precision\": \"{}\", "
             "\"threads\": {}, \"prompts\": {}, \"prompt_tokens\": {}, \"longest_prompt\": {}, "
             "\"new_tokens_each\": {}, \"batch_size\": {}, \"new_tokens\": {}, \"wall_s\": {:.1f}, "
             "\"tok_s\": {:.1f}, \"gflops\": {:.1f}, \"peak_gflops\": {:.1f}, "
             "\"percent_of_peak\": {:.1f}, \"peak_rss_gib\": {:.2f}, \"load1_before\": {:.2f}, "
             "\"load1_after\": {:.2f}}}\n",
             model, to_string(precision), omp_get_max_threads(), prompts.size(), prompt_tokens,
             longest, new_tokens, batch, st.new_tokens, wall,
             static_cast<double>(st.new_tokens) / wall, gflops, peak, 100.0 * gflops / peak,
             peak_rss_gib(), load_before, load1());
  for (const auto& e : profile::entries())
    fmt::print("{{\"bench\": \"generate_testset_kernel\", \"kernel\": \"{}\", \"seconds\": {:.3f}, "
               "\"calls\": {}, \"share\": {:.4f}}}\n",
               e.name, e.seconds, e.calls, e.seconds / wall);
  std::fflush(stdout);
  if (single_tokens > 1) {
    const auto f32 = single_stream(gpt2, prompts[0], single_tokens, Precision::kFp32);
    const auto b16 = single_stream(gpt2, prompts[0], single_tokens, Precision::kBf16);
    // One stream's decode is bound by reading the weights once per token: the block and head
    // matrices (12 L C^2 + V C values, 2 bytes each in bf16), against the same-run bandwidth.
    const double bandwidth = llmft::bench::read_bandwidth_gbs();
    const double bf16_weight_gb =
        2.0 * static_cast<double>(12 * cfg.L * cfg.C * cfg.C + cfg.V * cfg.C) / 1e9;
    const double bf16_limit = bandwidth / bf16_weight_gb;
    fmt::print("{{\"bench\": \"generate_single_stream\", \"model\": \"{}\", \"prompt_tokens\": {}, "
               "\"decode_tokens\": {}, \"fp32_tok_s\": {:.1f}, \"bf16_tok_s\": {:.1f}, "
               "\"bf16_speedup\": {:.2f}, \"fp32_first_token_s\": {:.2f}, "
               "\"bf16_first_token_s\": {:.2f}, \"read_bandwidth_gbs\": {:.1f}, "
               "\"bf16_weight_gb\": {:.3f}, \"bf16_bandwidth_limit_tok_s\": {:.1f}, "
               "\"bf16_percent_of_limit\": {:.1f}, \"load1\": {:.2f}}}\n",
               model, prompts[0].size(), single_tokens - 1, f32.decode_tok_s, b16.decode_tok_s,
               b16.decode_tok_s / f32.decode_tok_s, f32.first_token_s, b16.first_token_s,
               bandwidth, bf16_weight_gb, bf16_limit, 100.0 * b16.decode_tok_s / bf16_limit,
               load1());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::string(argv[1]) == "testset") return testset_mode(argc, argv);
    return streams_mode(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_generate: {}\n", e.what());
    return 2;
  }
}
