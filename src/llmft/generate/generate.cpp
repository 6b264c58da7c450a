// Batched generation loop and answer extraction; see generate.h.
#include "llmft/generate/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <deque>

#include "llmft/core/error.h"
#include "llmft/generate/decoder.h"
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

namespace {

struct Slot {
  int64_t prompt = -1;         // index into prompts, -1 = idle
  std::vector<int32_t> seq;    // prompt + generated, uncropped
  int64_t cached = 0;          // tokens of seq's tail held in the decoder (0 = needs prefill)
  Sampler sampler;
  explicit Slot(const SamplerOptions& o) : sampler(o) {}
};

void check_prompts(const std::vector<std::vector<int32_t>>& prompts, int64_t V) {
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty())
      throw Error(fmt::format("prompt {} is empty: nothing to continue from", i),
                  "give at least one token of prompt");
    for (int32_t t : prompts[i])
      if (t < 0 || t >= V)
        throw Error(fmt::format("prompt {} has token id {}, outside the vocabulary [0, {})", i, t,
                                V));
  }
}

// The tokens slot s feeds the decoder next: what its cache does not hold yet, or, past the
// context, the last Tcap tokens from position 0 (the textbook loop crops to the last maxT
// tokens, which moves every position). Counts refilled tokens into st.prompt_tokens.
std::span<const int32_t> next_feed(const Slot& slot, int64_t s, int64_t Tcap, Decoder& dec,
                                   GenerateStats& st) {
  const auto len = static_cast<int64_t>(slot.seq.size());
  const bool refill = slot.cached == 0 || len > Tcap;
  std::span<const int32_t> feed;
  if (len <= Tcap) {
    feed = std::span<const int32_t>(slot.seq).subspan(static_cast<size_t>(slot.cached));
  } else {
    dec.reset(s);
    feed = std::span<const int32_t>(slot.seq).subspan(static_cast<size_t>(len - Tcap));
  }
  if (refill) st.prompt_tokens += static_cast<int64_t>(feed.size());
  return feed;
}

}  // namespace

std::vector<std::vector<int32_t>> generate(Gpt2& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& opts, GenerateStats* stats) {
  opts.validate();
  const kernels::ScopedThreads threads(opts.threads);
  const Gpt2Config& cfg = model.config();
  const auto n = prompts.size();
  std::vector<std::vector<int32_t>> out(n);
  check_prompts(prompts, cfg.V);
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
  Decoder dec(model, B, Tcap, opts.precision);

  std::vector<Slot> slots;
  for (int64_t s = 0; s < B; ++s) slots.emplace_back(opts.sampler);
  size_t next = 0;
  auto assign = [&](Slot& slot, int64_t s) {
    slot.prompt = -1;
    if (next >= n) return;
    slot.prompt = static_cast<int64_t>(next);
    slot.seq = prompts[next];
    slot.cached = 0;
    SamplerOptions so = opts.sampler;
    so.seed = stream_seed(opts.sampler.seed, next);
    slot.sampler = Sampler(so);
    dec.reset(s);
    ++next;
  };
  for (int64_t s = 0; s < B; ++s) assign(slots[static_cast<size_t>(s)], s);

  std::vector<DecodeChunk> chunks;
  std::vector<int64_t> chunk_slot;
  std::vector<float> logits;
  for (;;) {
    chunks.clear();
    chunk_slot.clear();
    for (int64_t s = 0; s < B; ++s) {
      Slot& slot = slots[static_cast<size_t>(s)];
      if (slot.prompt < 0) continue;
      chunks.push_back({s, next_feed(slot, s, Tcap, dec, st)});
      chunk_slot.push_back(s);
    }
    if (chunks.empty()) break;
    logits.resize(chunks.size() * static_cast<size_t>(cfg.V));
    dec.forward(chunks, logits);
    for (size_t c = 0; c < chunks.size(); ++c) {
      const int64_t s = chunk_slot[c];
      Slot& slot = slots[static_cast<size_t>(s)];
      slot.cached = dec.length(s);
      const auto row = std::span<const float>(logits).subspan(c * static_cast<size_t>(cfg.V),
                                                              static_cast<size_t>(cfg.V));
      const int32_t tok = slot.sampler.sample(row);
      const auto p = static_cast<size_t>(slot.prompt);
      bool finished = false;
      if (opts.stop_at_eos && tok == opts.eos_id) {
        finished = true;
      } else {
        out[p].push_back(tok);
        slot.seq.push_back(tok);
        ++st.new_tokens;
        if (opts.on_token) opts.on_token(p, tok);
        finished = static_cast<int64_t>(out[p].size()) >= opts.max_new_tokens;
      }
      if (finished) {
        if (opts.on_finish) opts.on_finish(p);
        assign(slot, s);
      }
    }
  }
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
