// Continuous batching (batcher.h): a sequence's tokens must not depend on which others share its
// steps, when they join or when they leave; a cancelled slot is free at once. Stop strings.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/generate/batcher.h"
#include "llmft/generate/generate.h"
#include "llmft/generate/stop.h"
#include "llmft/model/gpt2.h"

using namespace llmft;

namespace {

// Tiny model with spread-out logits (clear greedy margins), as in test_decoder.cpp.
Gpt2 random_model(uint32_t seed) {
  Gpt2Config c;
  c.V = 97;
  c.maxT = 24;
  c.C = 32;
  c.L = 2;
  c.NH = 4;
  Gpt2 m(c);
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (auto& x : m.params()) x = d(gen) / std::sqrt(32.0f);
  Gpt2Tensors<float> w = m.weights();
  for (auto& x : w.wte) x *= std::sqrt(32.0f);
  for (auto& x : w.lm_head) x *= std::sqrt(32.0f);
  for (BlockTensors<float>& b : w.h)
    for (auto* ln : {&b.ln_1.w, &b.ln_2.w})
      for (auto& x : *ln) x += 1.0f;
  for (auto& x : w.ln_f.w) x += 1.0f;
  return m;
}

std::vector<int32_t> prompt(int n, int seed) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back((seed * 31 + i * 7) % 97);
  return p;
}

SequenceOptions opts(int64_t max_new, float temperature = 0.0f, uint64_t seed = 1) {
  SequenceOptions o;
  o.max_new_tokens = max_new;
  o.sampler.temperature = temperature;
  o.sampler.top_k = temperature > 0 ? 20 : 0;
  o.sampler.seed = seed;
  o.eos_id = -1;
  return o;
}

// Runs one sequence alone to its end.
std::vector<int32_t> alone(Gpt2& m, const std::vector<int32_t>& p, const SequenceOptions& o) {
  Batcher b(m, 1, m.config().maxT);
  b.add(p, o);
  std::vector<int32_t> out;
  while (b.active() > 0)
    for (const auto& e : b.step())
      if (e.token >= 0) out.push_back(e.token);
  return out;
}

}  // namespace

TEST(Batcher, SequencesJoiningAndLeavingMidwayGiveTheirAloneTokens) {
  Gpt2 m = random_model(3);
  // Greedy and sampled sequences of different lengths; 30 new tokens run past the context (24),
  // so some are cropped and refed while others join.
  struct Case {
    std::vector<int32_t> p;
    SequenceOptions o;
  };
  const std::vector<Case> cases = {{prompt(5, 1), opts(30)},
                                   {prompt(9, 2), opts(7, 1.2f, 11)},
                                   {prompt(1, 3), opts(12)},
                                   {prompt(14, 4), opts(20, 0.8f, 5)},
                                   {prompt(3, 5), opts(9)}};
  std::vector<std::vector<int32_t>> want;
  for (const auto& c : cases) want.push_back(alone(m, c.p, c.o));
  // Three slots; case k joins at step 2k (while others are mid-way), whenever a slot is free.
  Batcher b(m, 3, m.config().maxT);
  std::vector<std::vector<int32_t>> got(cases.size());
  std::vector<size_t> slot_case(3);
  size_t next = 0;
  int step = 0;
  while (next < cases.size() || b.active() > 0) {
    if (next < cases.size() && b.has_free_slot() && step >= 2 * static_cast<int>(next)) {
      slot_case[static_cast<size_t>(b.add(cases[next].p, cases[next].o))] = next;
      ++next;
    }
    for (const auto& e : b.step()) {
      if (e.token >= 0) got[slot_case[static_cast<size_t>(e.slot)]].push_back(e.token);
    }
    ++step;
  }
  for (size_t k = 0; k < cases.size(); ++k) {
    EXPECT_EQ(got[k], want[k]) << "sequence " << k;
    EXPECT_EQ(static_cast<int64_t>(got[k].size()), cases[k].o.max_new_tokens);
  }
}

TEST(Batcher, CancelFreesTheSlotAtOnceAndOthersAreUnaffected) {
  Gpt2 m = random_model(4);
  const auto want = alone(m, prompt(6, 9), opts(10));
  Batcher b(m, 2, m.config().maxT);
  const int64_t keep = b.add(prompt(6, 9), opts(10));
  const int64_t drop = b.add(prompt(4, 1), opts(10));
  EXPECT_FALSE(b.has_free_slot());
  std::vector<int32_t> got;
  for (int s = 0; s < 3; ++s)
    for (const auto& e : b.step())
      if (e.slot == keep) got.push_back(e.token);
  b.cancel(drop);
  EXPECT_TRUE(b.has_free_slot());
  EXPECT_EQ(b.active(), 1);
  // A newcomer takes the freed slot; the kept sequence goes on as if alone.
  const int64_t newcomer = b.add(prompt(2, 4), opts(3));
  EXPECT_EQ(newcomer, drop);
  while (b.active() > 0)
    for (const auto& e : b.step()) {
      EXPECT_NE(e.slot, -1);
      if (e.slot == keep && e.token >= 0) got.push_back(e.token);
    }
  EXPECT_EQ(got, want);
}

TEST(Batcher, EndOfTextEndsWithoutAToken) {
  Gpt2 m = random_model(5);
  auto o = opts(10);
  const auto free_run = alone(m, prompt(4, 2), o);
  // Pretend the first token not seen before index >= 1 is <|endoftext|>.
  size_t k = 1;
  while (k < free_run.size() && std::find(free_run.begin(), free_run.begin() + static_cast<long>(k),
                                          free_run[k]) != free_run.begin() + static_cast<long>(k))
    ++k;
  ASSERT_LT(k, free_run.size());
  o.eos_id = free_run[k];
  Batcher b(m, 1, m.config().maxT);
  b.add(prompt(4, 2), o);
  std::vector<Batcher::Event> events;
  while (b.active() > 0)
    for (const auto& e : b.step()) events.push_back(e);
  ASSERT_EQ(events.size(), k + 1);
  EXPECT_EQ(events.back().token, -1);
  EXPECT_EQ(events.back().finish, FinishReason::kEos);
  for (size_t i = 0; i < k; ++i) {
    EXPECT_EQ(events[i].token, free_run[i]);
    EXPECT_EQ(events[i].finish, FinishReason::kNone);
  }
  EXPECT_TRUE(b.has_free_slot());
}

TEST(Batcher, RejectsBadPromptsAndFullBatches) {
  Gpt2 m = random_model(6);
  Batcher b(m, 1, m.config().maxT);
  EXPECT_THROW(b.add({}, opts(3)), Error);
  EXPECT_THROW(b.add({5, 97}, opts(3)), Error);
  b.add({1}, opts(3));
  EXPECT_THROW(b.add({1}, opts(3)), InternalError);
}

TEST(StopStrings, CutsBeforeTheFirstStopAcrossPieces) {
  StopStrings s({"\n\n", "END"});
  std::string out;
  for (const char* piece : {"Hello", " wor", "ld.\n", "\nMore"}) out += s.push(piece);
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(out, "Hello world.");
  EXPECT_EQ(s.push("x"), "");
  EXPECT_EQ(s.finish(), "");
}

TEST(StopStrings, HoldsBackOnlyAPossibleStartAndReleasesItAtTheEnd) {
  StopStrings s({"END"});
  EXPECT_EQ(s.push("abcE"), "abc");  // "E" may begin END
  EXPECT_EQ(s.push("N"), "");
  EXPECT_EQ(s.push("x"), "ENx");  // it did not
  EXPECT_EQ(s.push("EN"), "");
  EXPECT_EQ(s.finish(), "EN");
  EXPECT_FALSE(s.stopped());
  StopStrings none;
  EXPECT_EQ(none.push("anything END"), "anything END");
  EXPECT_THROW(StopStrings({""}), UsageError);
}

// generate()'s stop_now ends one stream early (a stop string in the CLI) without touching the
// others; the stats count prompt-filling steps apart from pure decoding ones.
TEST(Generate, StopNowEndsOneStreamAndStatsSplitPromptFromDecode) {
  Gpt2 m = random_model(4);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5}};
  GenerateOptions o;
  o.max_new_tokens = 6;
  const auto full = generate(m, prompts, o);
  ASSERT_EQ(full[0].size(), 6u);  // V = 97: no <|endoftext|> to stop at
  std::vector<int> seen(2, 0), finished(2, 0);
  o.on_token = [&](size_t p, int32_t) { ++seen[p]; };
  o.stop_now = [&](size_t p) { return p == 0 && seen[0] == 2; };
  o.on_finish = [&](size_t p) { ++finished[p]; };
  GenerateStats st;
  const auto out = generate(m, prompts, o, &st);
  EXPECT_EQ(out[0], std::vector<int32_t>(full[0].begin(), full[0].begin() + 2));
  EXPECT_EQ(out[1], full[1]);
  EXPECT_EQ(finished, (std::vector<int>{1, 1}));
  EXPECT_EQ(st.prompt_tokens, 5);
  EXPECT_EQ(st.new_tokens, 8);
  EXPECT_EQ(st.decode_tokens, 6);  // the first step prefilled both prompts and chose 2 tokens
}
