// The sampler: greedy = argmax (lowest id on ties), top-k / top-p filtering, the seeded RNG, and
// rejection of invalid settings.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/generate/sampler.h"
#include "test_util.h"

using namespace llmft;

static std::vector<float> random_logits(int64_t V, uint32_t seed, float scale = 3.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(V));
  for (auto& v : x) v = d(gen);
  return x;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  std::vector<float> x = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
  EXPECT_EQ(argmax(x), 1);
  Sampler s(SamplerOptions{});
  EXPECT_EQ(s.sample(x), 1);
  x[4] = 2.5f;
  EXPECT_EQ(s.sample(x), 4);
  std::vector<float> nan_first = {std::numeric_limits<float>::quiet_NaN(), -3.0f, -2.0f};
  EXPECT_EQ(argmax(nan_first), 2);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto l = random_logits(1000, seed);
    int32_t best = 0;
    for (int32_t i = 1; i < 1000; ++i)
      if (l[i] > l[best]) best = i;
    EXPECT_EQ(s.sample(l), best);
  }
}

TEST(Sampler, TopK1EqualsGreedyWhateverTheTemperature) {
  SamplerOptions o;
  o.temperature = 5.0f;
  o.top_k = 1;
  Sampler s(o);
  for (uint32_t seed = 0; seed < 50; ++seed) {
    const auto l = random_logits(777, seed);
    EXPECT_EQ(s.sample(l), argmax(l));
  }
}

TEST(Sampler, TopKNeverSamplesOutsideTheK) {
  SamplerOptions o;
  o.temperature = 10.0f;  // flat distribution: every kept token gets drawn
  o.top_k = 5;
  o.seed = 7;
  Sampler s(o);
  const auto l = random_logits(300, 3);
  std::vector<int32_t> order(300);
  for (int32_t i = 0; i < 300; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  const std::set<int32_t> top(order.begin(), order.begin() + 5);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = s.sample(l);
    EXPECT_TRUE(top.count(t)) << "sampled " << t << " outside the top 5";
    seen.insert(t);
  }
  EXPECT_EQ(seen, top);  // and every one of the k is reachable
  const auto dist = s.distribution(l);
  EXPECT_EQ(dist.size(), 5u);
}

TEST(Sampler, TopPTinyEqualsGreedy) {
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_p = 1e-6f;
  Sampler s(o);
  for (uint32_t seed = 0; seed < 50; ++seed) {
    const auto l = random_logits(500, seed);
    EXPECT_EQ(s.sample(l), argmax(l));
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  // probs 0.5, 0.3, 0.15, 0.05: p = 0.75 needs the first two (0.8 >= 0.75).
  std::vector<float> l = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.75f;
  Sampler s(o);
  const auto d = s.distribution(l);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].first, 1);
  EXPECT_EQ(d[1].first, 3);
  EXPECT_NEAR(d[0].second, 0.5 / 0.8, 1e-6);  // renormalised over the kept set
  o.top_p = 0.85f;
  EXPECT_EQ(Sampler(o).distribution(l).size(), 3u);
  o.top_p = 1.0f;
  EXPECT_EQ(Sampler(o).distribution(l).size(), 4u);
}

TEST(Sampler, DrawsMatchSoftmaxAndAreDeterministic) {
  const std::vector<float> l = {1.0f, 0.0f, -1.0f, 2.0f, 0.5f};
  const float T = 0.8f;
  SamplerOptions o;
  o.temperature = T;
  o.seed = 42;
  Sampler s(o);
  std::vector<double> expect(l.size());
  double sum = 0;
  for (size_t i = 0; i < l.size(); ++i) sum += expect[i] = std::exp(l[i] / T);
  for (auto& e : expect) e /= sum;
  const int N = 200000;
  std::vector<double> freq(l.size(), 0.0);
  std::vector<int32_t> first;
  for (int i = 0; i < N; ++i) {
    const int32_t t = s.sample(l);
    freq[t] += 1.0 / N;
    if (i < 100) first.push_back(t);
  }
  // Binomial sd is at most sqrt(0.25/N) ~ 0.0011; 0.006 is > 5 sd: fails only on a real bias.
  EXPECT_TRUE(test::all_close(std::span<const double>(freq), std::span<const double>(expect),
                              0.0, 0.006));
  Sampler again(o);
  std::vector<int32_t> first2;
  for (int i = 0; i < 100; ++i) first2.push_back(again.sample(l));
  EXPECT_EQ(first, first2);  // same seed, same tokens
  o.seed = 43;
  Sampler other(o);
  std::vector<int32_t> first3;
  for (int i = 0; i < 100; ++i) first3.push_back(other.sample(l));
  EXPECT_NE(first, first3);
}

TEST(Sampler, RngIsFixedAcrossPlatforms) {
  // xoshiro256** seeded by splitmix64(0): a change here changes every sampled output.
  Rng r(0);
  const uint64_t a = r.next_u64(), b = r.next_u64();
  Rng r2(0);
  EXPECT_EQ(r2.next_u64(), a);
  EXPECT_EQ(r2.next_u64(), b);
  EXPECT_NE(a, b);
  for (int i = 0; i < 1000; ++i) {
    const double u = r.uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  EXPECT_NE(stream_seed(123, 0), stream_seed(123, 1));
  EXPECT_EQ(stream_seed(123, 5), stream_seed(123, 5));
}

TEST(Sampler, RejectsInvalidSettings) {
  auto make = [](float t, int k, float p) {
    SamplerOptions o;
    o.temperature = t;
    o.top_k = k;
    o.top_p = p;
    return o;
  };
  EXPECT_THROW(Sampler(make(-0.1f, 0, 1.0f)), UsageError);
  EXPECT_THROW(Sampler(make(std::numeric_limits<float>::infinity(), 0, 1.0f)), UsageError);
  EXPECT_THROW(Sampler(make(std::numeric_limits<float>::quiet_NaN(), 0, 1.0f)), UsageError);
  EXPECT_THROW(Sampler(make(1.0f, -1, 1.0f)), UsageError);
  EXPECT_THROW(Sampler(make(1.0f, 0, 0.0f)), UsageError);
  EXPECT_THROW(Sampler(make(1.0f, 0, 1.5f)), UsageError);
  EXPECT_THROW(Sampler(make(1.0f, 0, -0.5f)), UsageError);
  EXPECT_NO_THROW(Sampler(make(0.0f, 0, 1.0f)));
  EXPECT_NO_THROW(Sampler(make(1.0f, 50, 0.9f)));
}

// llama.cpp's repeat penalty: a seen token's positive logit is divided by the penalty, a negative
// one multiplied, once per distinct token, over the last repeat_last_n tokens; greedy too.
TEST(Sampler, RepeatPenaltyLowersRecentTokens) {
  SamplerOptions o;
  o.repeat_penalty = 1.1f;
  Sampler s(o);
  const std::vector<float> pos = {2.0f, 1.9f, 0.0f};
  EXPECT_EQ(s.sample(pos), 0);                         // no history: no penalty
  EXPECT_EQ(s.sample(pos, std::vector<int32_t>{0}), 1);  // 2.0 / 1.1 = 1.82 < 1.9
  // Seen three times, still penalized once: 2.0 / 1.1 > 1.8.
  EXPECT_EQ(s.sample(std::vector<float>{2.0f, 1.8f}, std::vector<int32_t>{0, 0, 0}), 0);
  const std::vector<float> neg = {-1.0f, -1.05f};
  EXPECT_EQ(s.sample(neg), 0);
  EXPECT_EQ(s.sample(neg, std::vector<int32_t>{0}), 1);  // -1.0 * 1.1 = -1.1 < -1.05
  // Only the last repeat_last_n tokens count.
  SamplerOptions last2 = o;
  last2.repeat_last_n = 2;
  Sampler s2(last2);
  EXPECT_EQ(s2.sample(pos, std::vector<int32_t>{0, 2, 2}), 0);
  EXPECT_EQ(s2.sample(pos, std::vector<int32_t>{2, 2, 0}), 1);
  SamplerOptions all = o;
  all.repeat_last_n = -1;
  EXPECT_EQ(Sampler(all).sample(pos, std::vector<int32_t>{0, 2, 2, 2, 2}), 1);
  SamplerOptions off = o;
  off.repeat_last_n = 0;
  EXPECT_EQ(Sampler(off).sample(pos, std::vector<int32_t>{0}), 0);
  // Sampling sees the penalized logits: the distribution moves to token 1.
  SamplerOptions t = o;
  t.temperature = 1.0f;
  t.repeat_penalty = 4.0f;
  const auto d = Sampler(t).distribution(pos, std::vector<int32_t>{0});
  ASSERT_EQ(d.size(), 3u);
  // exp(0.5), exp(1.9), exp(0) normalized (double math; 1e-6 absolute).
  const double z = std::exp(0.5) + std::exp(1.9) + 1.0;
  EXPECT_NEAR(d[0].second, std::exp(0.5) / z, 1e-6);
  EXPECT_NEAR(d[1].second, std::exp(1.9) / z, 1e-6);
}

// llama.cpp's min-p: tokens less likely than min_p x the top token's probability (at temperature
// 1) are never drawn.
TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplerOptions o;
  o.temperature = 1.0f;
  o.seed = 3;
  const std::vector<float> l = {0.0f, -1.0f, -3.0f};  // p relative to the top: 1, 0.37, 0.05
  Sampler plain(o);
  std::set<int32_t> seen_plain;
  for (int i = 0; i < 3000; ++i) seen_plain.insert(plain.sample(l));
  EXPECT_TRUE(seen_plain.count(2));  // p(2) ~ 0.035: drawn about 100 times in 3000
  o.min_p = 0.1f;
  Sampler filtered(o);
  std::set<int32_t> seen;
  for (int i = 0; i < 3000; ++i) seen.insert(filtered.sample(l));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
  EXPECT_EQ(filtered.distribution(l).size(), 2u);
  o.min_p = 0.5f;
  EXPECT_EQ(Sampler(o).distribution(l).size(), 1u);
}

TEST(Sampler, RejectsInvalidPenaltyAndMinP) {
  SamplerOptions o;
  o.min_p = 1.5f;
  EXPECT_THROW(Sampler{o}, UsageError);
  o.min_p = -0.1f;
  EXPECT_THROW(Sampler{o}, UsageError);
  o = {};
  o.repeat_penalty = 0.0f;
  EXPECT_THROW(Sampler{o}, UsageError);
  o.repeat_penalty = std::numeric_limits<float>::infinity();
  EXPECT_THROW(Sampler{o}, UsageError);
  o = {};
  o.repeat_last_n = -2;
  EXPECT_THROW(Sampler{o}, UsageError);
}
