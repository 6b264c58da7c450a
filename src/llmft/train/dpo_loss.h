// The DPO objective (SPEC §9; the reference's compute_logprobs and compute_dpo_loss, FACTS-phase2
// §4a): a sequence's score is the mean log-probability of its response tokens; per pair
// loss = -log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r))); rewards pi - ref (no beta).
// Golden: tests/golden/dpo_tiny.safetensors (tests/reference/dpo_reference.py).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "llmft/data/preference.h"
#include "llmft/model/gpt2.h"

namespace llmft {

// Batch means, as the reference returns them.
struct DpoStats {
  double loss = 0, chosen_reward = 0, rejected_reward = 0;
  double margin() const { return chosen_reward - rejected_reward; }
};

// Mean log-probability of each sequence: -mean(token_losses[target_offsets[s] ..
// target_offsets[s+1])). token_losses: (M) -log p(target) per counted token (Gpt2::token_losses);
// target_offsets: (S+1), each sequence non-empty. Returns (S).
std::vector<double> sequence_logprobs(std::span<const float> token_losses,
                                      std::span<const int64_t> target_offsets);

// The model's scores of a batch's 2B texts (pair i: 2i chosen, 2i + 1 rejected) from one packed
// forward over its forked sequences; training: dropout on and the state kept for
// model.backward(dlosses).
std::vector<double> score_pairs(Gpt2& model, const PreferenceBatch& b, bool training);

// B pairs: policy and reference scores (2B) laid out as a PreferenceBatch orders its texts,
// pair i at 2i (chosen) and 2i + 1 (rejected). With `dlosses` (M = target_offsets.back() floats) also writes
// d(loss)/d(token_losses[i]) for the policy, ready for Gpt2::backward(dlosses). batch_pairs: the
// pairs the means are over (0: these B; a data-parallel rank passes the whole batch's, so the
// ranks' results sum to the batch's).
DpoStats dpo_loss(std::span<const double> policy, std::span<const double> reference, double beta,
                  std::span<const int64_t> target_offsets = {}, std::span<float> dlosses = {},
                  int64_t batch_pairs = 0);

}  // namespace llmft
