// Generation throughput with the KV-cached Decoder: random weights, gpt2 / gpt2-medium shapes,
// ~40-token prompts, prefill and decode timed apart, 1 stream and batched. One JSON line per
// result (median of repeats after a warm-up). Usage: bench_generate [models] [new_tokens] [repeats]
//   e.g. bench_generate gpt2,gpt2-medium 128 3
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "llmft/generate/decoder.h"
#include "llmft/generate/sampler.h"
#include "llmft/model/params.h"

using namespace llmft;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string models = argc > 1 ? argv[1] : "gpt2,gpt2-medium";
  const int64_t new_tokens = argc > 2 ? std::stoll(argv[2]) : 128;
  const int repeats = argc > 3 ? std::stoi(argv[3]) : 3;
  const int64_t prompt_len = 40;
  fmt::print("{{\"context\": \"bench_generate\", \"threads\": {}, \"compiler\": \"{}\", "
             "\"prompt_tokens\": {}, \"new_tokens\": {}, \"repeats\": {}}}\n",
             omp_get_max_threads(), __VERSION__, prompt_len, new_tokens, repeats);
  std::stringstream ss(models);
  std::string name;
  while (std::getline(ss, name, ',')) {
    const Gpt2Config cfg = Gpt2Config::from_name(name);
    const ParamTable pt(cfg);
    std::vector<float> params(static_cast<size_t>(pt.total()));
    std::mt19937 gen(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (auto& x : params) x = d(gen);
    for (int64_t B : {1, 8, 16}) {
      Decoder dec(cfg, params, B, prompt_len + new_tokens);
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
      fmt::print("{{\"bench\": \"generate\", \"model\": \"{}\", \"streams\": {}, "
                 "\"prefill_tok_s\": {:.1f}, \"decode_tok_s\": {:.2f}, "
                 "\"decode_tok_s_per_stream\": {:.2f}, \"decode_tok_s_min\": {:.2f}, "
                 "\"decode_tok_s_max\": {:.2f}, \"prefill_ms\": {:.1f}, \"decode_ms_per_step\": "
                 "{:.1f}}}\n",
                 name, B, static_cast<double>(B * prompt_len) / pm, dtok / dm,
                 dtok / dm / static_cast<double>(B), dtok / *dmax, dtok / *dmin, pm * 1e3,
                 dm * 1e3 / static_cast<double>(new_tokens - 1));
      std::fflush(stdout);
    }
  }
  return 0;
}
