// The KV-cached batched decoder and generation loop against the textbook loop, which recomputes the
// whole (cropped) sequence for every new token with the model's training forward over packed
// sequences (Gpt2::forward_logits, proven against PyTorch in tests/parity): the cached path must
// give the same logits through its own attention and its own products.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/reference.h"
#include "llmft/core/error.h"
#include "llmft/generate/decoder.h"
#include "llmft/generate/generate.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/params.h"
#include "test_util.h"

using namespace llmft;

namespace {

Gpt2Config tiny_config(bool tied = false, int64_t maxT = 24) {
  Gpt2Config c;
  c.V = 97;
  c.maxT = maxT;
  c.C = 32;
  c.L = 2;
  c.NH = 4;
  c.tied = tied;
  return c;
}

// Head size 64 like every GPT-2 (the decoder's vectorised attention; tiny_config's 8 takes the
// plain loop).
Gpt2Config hs64_config(bool tied = false) {
  Gpt2Config c = tiny_config(tied);
  c.C = 128;
  c.NH = 2;
  return c;
}

// A model with random weights and spread-out logits (so greedy choices have clear margins):
// LayerNorm scales near 1, linear weights ~ N(0, 1/in), embeddings ~ N(0, 1), biases ~ N(0, 0.1).
Gpt2 random_model(const Gpt2Config& cfg, uint32_t seed) {
  Gpt2 m(cfg);
  std::mt19937 gen(seed);
  auto fill = [&](std::span<float> v, double mean, double sd) {
    std::normal_distribution<double> d(mean, sd);
    for (auto& x : v) x = static_cast<float>(d(gen));
  };
  const double in_c = 1.0 / std::sqrt(static_cast<double>(cfg.C)), in_4c = 0.5 * in_c;
  Gpt2Tensors<float> w = m.weights();
  fill(w.wte, 0.0, 1.0);
  fill(w.wpe, 0.0, 1.0);
  for (BlockTensors<float>& b : w.h) {
    for (LayerNormTensors<float>* ln : {&b.ln_1, &b.ln_2}) {
      fill(ln->w, 1.0, 0.1);
      fill(ln->b, 0.0, 0.1);
    }
    for (auto [lin, sd] : {std::pair{&b.c_attn, in_c}, {&b.attn_proj, in_c}, {&b.c_fc, in_c},
                           {&b.mlp_proj, in_4c}}) {
      fill(lin->w, 0.0, sd);
      fill(lin->b, 0.0, 0.1);
    }
  }
  fill(w.ln_f.w, 1.0, 0.1);
  fill(w.ln_f.b, 0.0, 0.1);
  if (!cfg.tied) fill(w.lm_head, 0.0, 1.0);
  return m;
}

// The last row's logits (V) of the full forward over `ids` at positions 0..T-1.
std::vector<double> ref_last_logits(Gpt2& model, std::span<const int32_t> ids) {
  const auto T = static_cast<int64_t>(ids.size());
  std::vector<float> logits(static_cast<size_t>(model.config().V));
  const std::vector<int64_t> offsets = {0, T}, rows = {T - 1};
  model.forward_logits(logits, ids, offsets, rows);
  return {logits.begin(), logits.end()};
}

int32_t argmax_d(const std::vector<double>& v) {
  int32_t b = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(v.size()); ++i)
    if (v[i] > v[b]) b = i;
  return b;
}

// The textbook greedy loop (SPEC §7), also returning each step's logits.
std::vector<int32_t> textbook_greedy(Gpt2& model, std::vector<int32_t> seq, int64_t max_new, int32_t eos,
                                     std::vector<std::vector<double>>* step_logits = nullptr) {
  std::vector<int32_t> out;
  for (int64_t s = 0; s < max_new; ++s) {
    const int64_t T = std::min<int64_t>(model.config().maxT, static_cast<int64_t>(seq.size()));
    const auto lg = ref_last_logits(
        model, std::span<const int32_t>(seq).subspan(seq.size() - static_cast<size_t>(T)));
    if (step_logits) step_logits->push_back(lg);
    const int32_t t = argmax_d(lg);
    if (t == eos) break;
    out.push_back(t);
    seq.push_back(t);
  }
  return out;
}

std::vector<std::vector<int32_t>> random_prompts(const std::vector<int>& lens, int32_t V,
                                                 uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> d(0, V - 1);
  std::vector<std::vector<int32_t>> ps;
  for (int n : lens) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (auto& t : p) t = d(gen);
    ps.push_back(p);
  }
  return ps;
}

}  // namespace

// fp32 cached computation vs the double reference: errors come from fp32 rounding in sums of
// C=32..128 terms over 2 layers with O(1)..O(10) activations; 1e-4 relative + 1e-4 absolute is
// ~100x the observed error yet far below the logits' spread (sd ~5).
constexpr double kRtol = 1e-4, kAtol = 1e-4;

TEST(Decoder, StepLogitsEqualFullRecomputeWithCropping) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool tied = variant == 1;
    const auto cfg = variant == 2 ? hs64_config() : tiny_config(tied);
    Gpt2 model = random_model(cfg, tied ? 11 : 12);
    const auto prompts = random_prompts({5}, static_cast<int32_t>(cfg.V), 3);
    std::vector<std::vector<double>> want_logits;
    const auto want = textbook_greedy(model, prompts[0], 30, /*eos=*/-1, &want_logits);
    ASSERT_EQ(want.size(), 30u);  // 5 + 30 > maxT 24: the last steps crop
    // Drive the decoder by hand, as generate() does: prefill, then one token a step, and a
    // full window recompute once the sequence is longer than maxT.
    Decoder dec(model, /*B=*/1, cfg.maxT);
    std::vector<int32_t> seq = prompts[0];
    std::vector<float> logits(static_cast<size_t>(cfg.V));
    int64_t cached = 0;
    for (size_t step = 0; step < want.size(); ++step) {
      std::span<const int32_t> feed;
      if (static_cast<int64_t>(seq.size()) <= cfg.maxT) {
        feed = std::span<const int32_t>(seq).subspan(static_cast<size_t>(cached));
      } else {
        dec.reset(0);
        feed = std::span<const int32_t>(seq).subspan(seq.size() - static_cast<size_t>(cfg.maxT));
      }
      const DecodeChunk ch{0, feed};
      dec.forward({&ch, 1}, logits);
      cached = dec.length(0);
      std::vector<float> expect(want_logits[step].begin(), want_logits[step].end());
      ASSERT_TRUE(test::all_close(logits, expect, kRtol, kAtol)) << "step " << step;
      seq.push_back(want[step]);
    }
  }
}

TEST(Generate, GreedyBatchedEqualsTextbookLoopTokenForToken) {
  const auto cfg = tiny_config();
  Gpt2 model = random_model(cfg, 5);
  // Different lengths, one longer than maxT (cropped from the start), one of a single token.
  const auto prompts = random_prompts({3, 7, 20, 1, 30, 12}, static_cast<int32_t>(cfg.V), 9);
  const int64_t max_new = 16;
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) want.push_back(textbook_greedy(model, p, max_new, -1));
  for (int64_t bs : {1, 2, 4, 6}) {
    GenerateOptions o;
    o.max_new_tokens = max_new;
    o.batch_size = bs;
    o.eos_id = -1;
    GenerateStats st;
    const auto got = generate(model, prompts, o, &st);
    EXPECT_EQ(got, want) << "batch size " << bs;
    EXPECT_EQ(st.new_tokens, static_cast<int64_t>(prompts.size()) * max_new);
  }
}

TEST(Generate, StopsAtEndOfTextWithoutEmittingIt) {
  const auto cfg = tiny_config();
  Gpt2 model = random_model(cfg, 21);
  const auto prompts = random_prompts({4, 9}, static_cast<int32_t>(cfg.V), 2);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.batch_size = 2;
  o.eos_id = -1;
  const auto free_run = generate(model, prompts, o);
  // Pretend the token stream 0 emits at step 4 is <|endoftext|>.
  const int32_t eos = free_run[0][4];
  o.eos_id = eos;
  std::vector<std::vector<int32_t>> streamed(2);
  std::vector<int> finished(2, 0);
  o.on_token = [&](size_t p, int32_t t) { streamed[p].push_back(t); };
  o.on_finish = [&](size_t p) { ++finished[p]; };
  const auto got = generate(model, prompts, o);
  for (size_t i = 0; i < 2; ++i) {
    const auto want = textbook_greedy(model, prompts[i], 12, eos);
    EXPECT_EQ(got[i], want);
    EXPECT_EQ(streamed[i], got[i]);  // the callback sees exactly the output, in order
    EXPECT_EQ(finished[i], 1);
    for (int32_t t : got[i]) EXPECT_NE(t, eos);
  }
  EXPECT_LE(got[0].size(), 4u);
}

TEST(Decoder, LongPrefillSplitAcrossPassesMatches) {
  // 4 prompts of 200 tokens = 800 rows, more than one pass (512 rows): chunks continue in the
  // cache across passes.
  const auto cfg = tiny_config(false, /*maxT=*/256);
  Gpt2 model = random_model(cfg, 8);
  const auto prompts = random_prompts({200, 200, 199, 201}, static_cast<int32_t>(cfg.V), 4);
  Decoder dec(model, 4, cfg.maxT);
  std::vector<DecodeChunk> chunks;
  for (int64_t s = 0; s < 4; ++s) chunks.push_back({s, prompts[static_cast<size_t>(s)]});
  std::vector<float> logits(static_cast<size_t>(4 * cfg.V));
  dec.forward(chunks, logits);
  for (size_t s = 0; s < 4; ++s) {
    EXPECT_EQ(dec.length(static_cast<int64_t>(s)), static_cast<int64_t>(prompts[s].size()));
    const auto r = ref_last_logits(model, prompts[s]);
    const std::vector<float> expect(r.begin(), r.end());
    // Longer sequences (200 positions) sum more terms in attention: same fp32 reasoning.
    EXPECT_TRUE(test::all_close(std::span<const float>(logits).subspan(s * cfg.V, cfg.V), expect,
                                kRtol, 2 * kAtol))
        << "stream " << s;
  }
}

TEST(Generate, SamplingIsReproducibleAndIndependentOfBatchSize) {
  const auto cfg = tiny_config();
  Gpt2 model = random_model(cfg, 31);
  const auto prompts = random_prompts({3, 6, 2, 8, 5}, static_cast<int32_t>(cfg.V), 6);
  GenerateOptions o;
  o.max_new_tokens = 10;
  o.eos_id = -1;
  o.sampler.temperature = 1.5f;
  o.sampler.top_k = 20;
  o.sampler.seed = 77;
  o.batch_size = 1;
  const auto a = generate(model, prompts, o);
  o.batch_size = 3;
  const auto b = generate(model, prompts, o);
  EXPECT_EQ(a, b);
  o.sampler.seed = 78;
  const auto c = generate(model, prompts, o);
  EXPECT_NE(a, c);
  // Sampled, not greedy: at T=1.5 the runs differ from the greedy continuation somewhere.
  GenerateOptions g = o;
  g.sampler = SamplerOptions{};
  EXPECT_NE(generate(model, prompts, g), a);
}

TEST(Generate, RejectsBadInput) {
  const auto cfg = tiny_config();
  Gpt2 model = random_model(cfg, 1);
  GenerateOptions o;
  EXPECT_THROW(generate(model, {{}}, o), Error);           // empty prompt
  EXPECT_THROW(generate(model, {{1, 97}}, o), Error);      // id outside vocab
  o.max_new_tokens = -1;
  EXPECT_THROW(generate(model, {{1}}, o), UsageError);
  o.max_new_tokens = 4;
  o.batch_size = 0;
  EXPECT_THROW(generate(model, {{1}}, o), UsageError);
  o.batch_size = 1;
  o.sampler.top_p = 0.0f;
  EXPECT_THROW(generate(model, {{1}}, o), UsageError);
  o.sampler.top_p = 1.0f;
  o.max_new_tokens = 0;
  EXPECT_EQ(generate(model, {{1, 2}}, o), std::vector<std::vector<int32_t>>{{}});
}

TEST(Generate, CleanResponseFollowsTheRecipe) {
  const std::string prompt = "Below is an instruction.\n\n### Instruction:\nSay hi";
  EXPECT_EQ(clean_response(prompt + "\n\n### Response:\n  Hi there!  \n", prompt.size()),
            "Hi there!");
  // Every occurrence is removed, inner text kept.
  EXPECT_EQ(clean_response(prompt + "### Response: a ### Response: b", prompt.size()), "a  b");
  // Unicode whitespace is stripped like Python's str.strip(); inner non-breaking space kept.
  EXPECT_EQ(clean_response(prompt + "\xC2\xA0 x\xC2\xA0y \xE3\x80\x80", prompt.size()),
            "x\xC2\xA0y");
  EXPECT_EQ(clean_response(prompt, prompt.size()), "");
  EXPECT_EQ(clean_response("short", 100), "");
  EXPECT_EQ(clean_response("<|user|>\nq\n<|assistant|>:\nA.", 10, kPhi3ResponseMarker), "A.");
}

// ---- bf16 ---------------------------------------------------------------------------------------

namespace {

// Logits of every step of a fixed token sequence, fed to a fresh single-stream decoder one token
// a step after a prompt prefill (the cached path).
std::vector<std::vector<float>> cached_step_logits(Gpt2& model, const std::vector<int32_t>& seq,
                                                   size_t prompt_len, Precision precision) {
  const Gpt2Config& cfg = model.config();
  Decoder dec(model, 1, cfg.maxT, precision);
  std::vector<std::vector<float>> out;
  std::vector<float> logits(static_cast<size_t>(cfg.V));
  size_t fed = 0;
  for (size_t end = prompt_len; end <= seq.size(); ++end) {
    const DecodeChunk ch{0, std::span<const int32_t>(seq).subspan(fed, end - fed)};
    dec.forward({&ch, 1}, logits);
    fed = end;
    out.push_back(logits);
  }
  return out;
}

double max_abs(std::span<const double> v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace

// bf16 rounds every matmul input (weights and activations, relative error <= 2^-9 each) and the
// cached keys/values; through 2 layers and the head that moves the logits by up to 0.5% of their
// scale (measured: max |error| / max |logit| = 5.0e-3 (HS 8) and 6.0e-3 (HS 64) over these steps,
// largest logits ~13-28). The bound: 1e-2 relative to each logit plus 2e-2 of the largest logit
// (~0.3-0.6, against logits spread over +-15..28), so a wrong product or a stale cache entry
// fails it.
TEST(DecoderBf16, LogitsStayCloseToTheFp32Forward) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool tied = variant == 1;
    const auto cfg = variant == 2 ? hs64_config() : tiny_config(tied);
    Gpt2 model = random_model(cfg, tied ? 51 : 52);
    const auto seq = random_prompts({static_cast<int>(cfg.maxT)}, static_cast<int32_t>(cfg.V), 7)[0];
    const auto got = cached_step_logits(model, seq, 6, Precision::kBf16);
    for (size_t s = 0; s < got.size(); ++s) {
      const auto want = ref_last_logits(
          model, std::span<const int32_t>(seq).subspan(0, 6 + s));
      const std::vector<double> g(got[s].begin(), got[s].end());
      EXPECT_TRUE(test::all_close(g, want, 1e-2, 2e-2 * max_abs(want)))
          << "variant " << variant << " step " << s;
    }
  }
}

// Every bf16 step in the cache equals, bit for bit, the same decoder recomputing the whole
// sequence from scratch (reset + one prefill): a row's products, GELU and attention never depend
// on the rows computed with it, and keys/values are rounded the same way either way.
TEST(DecoderBf16, CachedStepsEqualFullRecomputeBitForBit) {
  for (const auto& cfg : {tiny_config(), hs64_config()}) {
    Gpt2 model = random_model(cfg, 61);
    const auto seq =
        random_prompts({static_cast<int>(cfg.maxT)}, static_cast<int32_t>(cfg.V), 8)[0];
    const auto cached = cached_step_logits(model, seq, 3, Precision::kBf16);
    Decoder full(model, 1, cfg.maxT, Precision::kBf16);
    std::vector<float> logits(static_cast<size_t>(cfg.V));
    for (size_t s = 0; s < cached.size(); ++s) {
      full.reset(0);
      const DecodeChunk ch{0, std::span<const int32_t>(seq).subspan(0, 3 + s)};
      full.forward({&ch, 1}, logits);
      EXPECT_EQ(logits, cached[s]) << "C " << cfg.C << " step " << s;
    }
  }
}

// bf16 generation: greedy tokens are the same whatever the batch size (rows are independent),
// and equal the loop that recomputes the cropped window with a fresh bf16 decoder every step.
TEST(GenerateBf16, GreedyIndependentOfBatchSizeAndEqualsRecomputeLoop) {
  const auto cfg = hs64_config();
  Gpt2 model = random_model(cfg, 71);
  const auto prompts = random_prompts({3, 7, 20, 1, 30, 12}, static_cast<int32_t>(cfg.V), 19);
  const int64_t max_new = 16;
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) {
    std::vector<int32_t> seq = p, out;
    std::vector<float> logits(static_cast<size_t>(cfg.V));
    for (int64_t s = 0; s < max_new; ++s) {
      Decoder dec(model, 1, cfg.maxT, Precision::kBf16);
      const auto T = std::min<int64_t>(cfg.maxT, static_cast<int64_t>(seq.size()));
      const DecodeChunk ch{0, std::span<const int32_t>(seq).subspan(seq.size() - static_cast<size_t>(T))};
      dec.forward({&ch, 1}, logits);
      const int32_t t = argmax(logits);
      out.push_back(t);
      seq.push_back(t);
    }
    want.push_back(out);
  }
  for (int64_t bs : {1, 4, 6}) {
    GenerateOptions o;
    o.max_new_tokens = max_new;
    o.batch_size = bs;
    o.eos_id = -1;
    o.precision = Precision::kBf16;
    EXPECT_EQ(generate(model, prompts, o), want) << "batch size " << bs;
  }
}

// A thread count given to generate() applies to the call only: the process's setting is restored.
TEST(Generate, ThreadCountIsRestoredAfterTheCall) {
  const auto cfg = tiny_config();
  Gpt2 model = random_model(cfg, 3);
  const int before = omp_get_max_threads();
  GenerateOptions o;
  o.max_new_tokens = 3;
  o.threads = before + 1;
  int during = 0;
  o.on_token = [&](size_t, int32_t) { during = omp_get_max_threads(); };
  generate(model, random_prompts({4}, static_cast<int32_t>(cfg.V), 1), o);
  EXPECT_EQ(during, before + 1);
  EXPECT_EQ(omp_get_max_threads(), before);
}
