// Batched generation loop and answer extraction; see generate.h.
#include "llmft/generate/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "llmft/core/error.h"
#include "llmft/generate/batcher.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

void GenerateOptions::validate() const {
  sampler.validate();
  if (max_new_tokens < 0)
    throw UsageError(fmt::format("--max-new-tokens {} is invalid: expected >= 0", max_new_tokens));
  if (batch_size < 1)
    throw UsageError(fmt::format("--batch-size {} is invalid: expected >= 1", batch_size));
  if (threads < 0)
    throw UsageError(fmt::format("--threads {} is invalid: expected >= 0 (0 = all cores)",
                                 threads));
}

double GenerateStats::prompt_tokens_per_s() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens) / prefill_seconds : 0.0;
}
double GenerateStats::decode_tokens_per_s() const {
  return decode_seconds > 0 ? static_cast<double>(decode_tokens) / decode_seconds : 0.0;
}

std::vector<std::vector<int32_t>> generate(Gpt2& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& opts, GenerateStats* stats) {
  opts.validate();
  const kernels::ScopedThreads threads(opts.threads);
  const Gpt2Config& cfg = model.config();
  const auto n = prompts.size();
  std::vector<std::vector<int32_t>> out(n);
  for (size_t i = 0; i < n; ++i) check_prompt(prompts[i], cfg.V, fmt::format("prompt {}", i));
  const auto t0 = std::chrono::steady_clock::now();
  GenerateStats st;
  if (n == 0 || opts.max_new_tokens == 0) {
    for (size_t i = 0; i < n; ++i)
      if (opts.on_finish) opts.on_finish(i);
    if (stats) *stats = st;
    return out;
  }
  // The cache only needs what a stream can hold: its (cropped) prompt plus the tokens fed back.
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  const int64_t Tcap = std::min(cfg.maxT, longest + opts.max_new_tokens - 1);
  const int64_t B = std::min<int64_t>(opts.batch_size, static_cast<int64_t>(n));
  Batcher batcher(model, B, Tcap, opts.precision);
  std::vector<size_t> slot_prompt(static_cast<size_t>(B));
  size_t next = 0;
  // A free slot takes the next prompt, which joins the next step.
  auto admit = [&] {
    for (; next < n && batcher.has_free_slot(); ++next) {
      SequenceOptions so;
      so.max_new_tokens = opts.max_new_tokens;
      so.sampler = opts.sampler;
      so.sampler.seed = stream_seed(opts.sampler.seed, next);
      so.stop_at_eos = opts.stop_at_eos;
      so.eos_id = opts.eos_id;
      slot_prompt[static_cast<size_t>(batcher.add(prompts[next], so))] = next;
    }
  };
  admit();
  while (batcher.active() > 0) {
    const int64_t filled = batcher.counts().prompt_tokens;
    const auto s0 = std::chrono::steady_clock::now();
    const auto& events = batcher.step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
    const bool prefill = batcher.counts().prompt_tokens != filled;
    (prefill ? st.prefill_seconds : st.decode_seconds) += dt;
    for (const Batcher::Event& e : events) {
      const size_t p = slot_prompt[static_cast<size_t>(e.slot)];
      bool finished = e.finish != FinishReason::kNone;
      if (e.token >= 0) {
        out[p].push_back(e.token);
        if (!prefill) ++st.decode_tokens;
        if (opts.on_token) opts.on_token(p, e.token);
        if (!finished && opts.stop_now && opts.stop_now(p)) {
          batcher.cancel(e.slot);
          finished = true;
        }
      }
      if (finished && opts.on_finish) opts.on_finish(p);
    }
    admit();
  }
  st.prompt_tokens = batcher.counts().prompt_tokens;
  st.new_tokens = batcher.counts().new_tokens;
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (stats) *stats = st;
  return out;
}

std::vector<std::string> generate_responses(Gpt2& model, const BpeTokenizer& tok,
                                            const std::vector<std::string>& prompts,
                                            const GenerateOptions& opts, std::string_view marker,
                                            GenerateStats* stats) {
  const auto ids = tok.encode_batch(prompts, SpecialTokens::kAllow, opts.threads);
  const auto outs = generate(model, ids, opts, stats);
  std::vector<std::string> res;
  res.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i)
    res.push_back(extract_response(tok, ids[i], outs[i], prompts[i], marker));
  return res;
}

namespace {

// Length of the Unicode whitespace character (as Python's str.isspace) starting at s[i], 0 if
// none.
size_t space_at(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  auto b = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0; };
  if (c == 0xc2 && (b(1) == 0x85 || b(1) == 0xa0)) return 2;
  if (c == 0xe1 && b(1) == 0x9a && b(2) == 0x80) return 3;  // U+1680
  if (c == 0xe2 && b(1) == 0x80 && (b(2) <= 0x8a || b(2) == 0xa8 || b(2) == 0xa9 || b(2) == 0xaf))
    return 3;  // U+2000..200A, U+2028, U+2029, U+202F
  if (c == 0xe2 && b(1) == 0x81 && b(2) == 0x9f) return 3;  // U+205F
  if (c == 0xe3 && b(1) == 0x80 && b(2) == 0x80) return 3;  // U+3000
  return 0;
}

std::string strip(std::string_view s) {
  size_t a = 0;
  while (a < s.size()) {
    const size_t k = space_at(s, a);
    if (k == 0) break;
    a += k;
  }
  size_t e = s.size();
  while (e > a) {
    // Find the start of the last character (UTF-8 continuation bytes are 10xxxxxx).
    size_t st = e - 1;
    while (st > a && (static_cast<unsigned char>(s[st]) & 0xc0) == 0x80) --st;
    const size_t k = space_at(s, st);
    if (k == 0 || st + k != e) break;
    e = st;
  }
  return std::string(s.substr(a, e - a));
}

}  // namespace

std::string clean_response(std::string_view full_text, size_t prompt_bytes,
                           std::string_view marker) {
  std::string rest(full_text.substr(std::min(prompt_bytes, full_text.size())));
  if (!marker.empty()) {
    std::string cleaned;
    size_t pos = 0;
    for (;;) {
      const size_t f = rest.find(marker, pos);
      if (f == std::string::npos) break;
      cleaned.append(rest, pos, f - pos);
      pos = f + marker.size();
    }
    cleaned.append(rest, pos, std::string::npos);
    rest = std::move(cleaned);
  }
  return strip(rest);
}

std::string extract_response(const BpeTokenizer& tok, std::span<const int32_t> prompt_ids,
                             std::span<const int32_t> new_ids, std::string_view prompt_text,
                             std::string_view marker) {
  std::vector<int32_t> all(prompt_ids.begin(), prompt_ids.end());
  all.insert(all.end(), new_ids.begin(), new_ids.end());
  return clean_response(tok.decode(all), prompt_text.size(), marker);
}

}  // namespace llmft
