// The DPO loss and its gradient with respect to the policy's token losses; see dpo_loss.h.
#include "llmft/train/dpo_loss.h"

#include <cmath>

#include "llmft/core/error.h"

namespace llmft {

namespace {
// -log sigmoid(x), without overflow for large |x|.
double neg_log_sigmoid(double x) { return std::log1p(std::exp(-std::abs(x))) + std::max(-x, 0.0); }
double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
}  // namespace

std::vector<double> sequence_logprobs(std::span<const float> token_losses,
                                      std::span<const int64_t> target_offsets) {
  LLMFT_CHECK(target_offsets.size() >= 2 && target_offsets.front() == 0 &&
                  target_offsets.back() == static_cast<int64_t>(token_losses.size()),
              "target offsets (S+1 = {}) do not cover {} token losses", target_offsets.size(),
              token_losses.size());
  std::vector<double> out(target_offsets.size() - 1);
  for (size_t s = 0; s + 1 < target_offsets.size(); ++s) {
    const int64_t a = target_offsets[s], b = target_offsets[s + 1];
    LLMFT_CHECK(b > a, "sequence {} has no counted token", s);
    double sum = 0;
    for (int64_t i = a; i < b; ++i) sum += token_losses[static_cast<size_t>(i)];
    out[s] = -sum / static_cast<double>(b - a);
  }
  return out;
}

std::vector<double> score_pairs(Gpt2& model, const PreferenceBatch& b, bool training) {
  model.forward(b.inputs, b.targets, b.seq_offsets, training, b.forks);
  return sequence_logprobs(model.token_losses(), b.target_offsets);
}

DpoStats dpo_loss(std::span<const double> policy, std::span<const double> reference, double beta,
                  std::span<const int64_t> target_offsets, std::span<float> dlosses,
                  int64_t batch_pairs) {
  LLMFT_CHECK(policy.size() == reference.size() && policy.size() >= 2 && policy.size() % 2 == 0,
              "dpo_loss: {} policy and {} reference scores", policy.size(), reference.size());
  const size_t B = policy.size() / 2;
  const double n = batch_pairs > 0 ? static_cast<double>(batch_pairs) : static_cast<double>(B);
  const bool grad = !dlosses.empty();
  if (grad) {
    LLMFT_CHECK(target_offsets.size() == 2 * B + 1 &&
                    target_offsets.back() == static_cast<int64_t>(dlosses.size()),
                "dpo_loss: offsets {} for {} sequences, {} token gradients", target_offsets.size(),
                2 * B, dlosses.size());
  }
  DpoStats st;
  for (size_t i = 0; i < B; ++i) {
    const double pc = policy[2 * i], pr = policy[2 * i + 1];
    const double rc = reference[2 * i], rr = reference[2 * i + 1];
    // logits = (pc - pr) - (rc - rr);  losses = -logsigmoid(beta * logits)
    const double z = beta * ((pc - pr) - (rc - rr));
    st.loss += neg_log_sigmoid(z);
    st.chosen_reward += pc - rc;
    st.rejected_reward += pr - rr;
    if (!grad) continue;
    // d(mean loss)/d(pc) = -beta * sigmoid(-z) / B = -d/d(pr); pi_s = -mean(token losses of s).
    const double dpc = -beta * sigmoid(-z) / n;
    for (const size_t s : {2 * i, 2 * i + 1}) {
      const double dpi = s == 2 * i ? dpc : -dpc;
      const int64_t a = target_offsets[s], b = target_offsets[s + 1];
      const auto d = static_cast<float>(-dpi / static_cast<double>(b - a));
      for (int64_t t = a; t < b; ++t) dlosses[static_cast<size_t>(t)] = d;
    }
  }
  st.loss /= n;
  st.chosen_reward /= n;
  st.rejected_reward /= n;
  return st;
}

}  // namespace llmft
