// The DPO loss (train/dpo_loss.h): values worked out by hand, and its token gradient against
// central finite differences in double precision.
#include <cmath>
#include <vector>

#include "llmft/train/dpo_loss.h"
#include "test_util.h"

using namespace llmft;

namespace {

TEST(DpoLoss, EqualPolicyAndReferenceGiveLn2AndZeroRewards) {
  const std::vector<double> p{-1.0, -2.0, -3.0, -1.5};  // B = 2: chosen, rejected of each pair
  const DpoStats s = dpo_loss(p, p, 0.1);
  EXPECT_NEAR(s.loss, std::log(2.0), 1e-15);
  EXPECT_EQ(s.chosen_reward, 0.0);
  EXPECT_EQ(s.rejected_reward, 0.0);
}

TEST(DpoLoss, MatchesTheFormulaByHand) {
  // One pair: policy chosen -1, rejected -3; reference chosen -2, rejected -2.5.
  const std::vector<double> pol{-1.0, -3.0}, ref{-2.0, -2.5};
  const DpoStats s = dpo_loss(pol, ref, 0.5);
  const double z = 0.5 * ((-1.0 + 3.0) - (-2.0 + 2.5));  // 0.75
  EXPECT_NEAR(s.loss, std::log1p(std::exp(-z)), 1e-15);
  EXPECT_DOUBLE_EQ(s.chosen_reward, 1.0);     // -1 - (-2), no beta
  EXPECT_DOUBLE_EQ(s.rejected_reward, -0.5);  // -3 - (-2.5)
  EXPECT_DOUBLE_EQ(s.margin(), 1.5);
  // Two pairs, interleaved as a PreferenceBatch orders them: (chosen -1, rejected -3), (0, 0).
  const DpoStats two = dpo_loss(std::vector<double>{-1.0, -3.0, 0.0, 0.0},
                                std::vector<double>{0.0, 0.0, 0.0, 0.0}, 0.5);
  EXPECT_DOUBLE_EQ(two.chosen_reward, -0.5);
  EXPECT_DOUBLE_EQ(two.rejected_reward, -1.5);
  // Far from zero the loss neither overflows nor loses its value.
  const std::vector<double> far{0.0, -1e4};
  EXPECT_NEAR(dpo_loss(far, std::vector<double>{0, 0}, 1.0).loss, 0.0, 1e-300);
  EXPECT_NEAR(dpo_loss(std::vector<double>{-1e4, 0.0}, std::vector<double>{0, 0}, 1.0).loss, 1e4,
              1e-9);
}

TEST(DpoLoss, TokenGradientMatchesFiniteDifferences) {
  // B = 2 pairs, 4 sequences of 3, 1, 2, 4 counted tokens.
  const std::vector<int64_t> off{0, 3, 4, 6, 10};
  std::vector<float> losses{2.0f, 1.5f, 3.0f, 0.5f, 4.0f, 1.0f, 2.5f, 0.7f, 1.1f, 3.3f};
  const std::vector<double> ref{-2.1, -0.4, -2.6, -1.9};
  auto loss_at = [&](const std::vector<float>& l) {
    return dpo_loss(sequence_logprobs(l, off), ref, 0.3).loss;
  };
  std::vector<float> d(losses.size());
  dpo_loss(sequence_logprobs(losses, off), ref, 0.3, off, d);
  for (size_t i = 0; i < losses.size(); ++i) {
    auto hi = losses, lo = losses;
    const float h = 1e-2f;
    hi[i] += h;
    lo[i] -= h;
    const double fd = (loss_at(hi) - loss_at(lo)) / (2.0 * h);
    EXPECT_NEAR(d[i], fd, 1e-6 + 1e-4 * std::abs(fd)) << "token " << i;
  }
  EXPECT_NE(d[0], 0.0f);
}

TEST(DpoLoss, SequenceLogprobsAreMeanNegatedLosses) {
  const std::vector<float> l{1.0f, 2.0f, 4.0f};
  const std::vector<int64_t> off{0, 2, 3};
  EXPECT_EQ(sequence_logprobs(l, off), (std::vector<double>{-1.5, -4.0}));
}

}  // namespace
