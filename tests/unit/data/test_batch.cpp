// Collate golden batches derived by hand from SPEC §3, packed/padded equivalence, and the loaders'
// order, drop_last and resumability. No tokenizer needed: token lists are made by hand.
#include <algorithm>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/data/batch.h"
#include "llmft/data/loader.h"
#include "llmft/data/stats.h"
#include "llmft/data/tokenized.h"
#include "test_util.h"

using namespace llmft;

namespace {

constexpr int32_t E = kPadTokenId;     // 50256
constexpr int32_t X = kIgnoreIndex;    // -100
using Ids = std::vector<int32_t>;

// Collates `rows` (dataset indices 100, 101, ...) with prompt lengths `plens` (empty: all 0).
Batch run(const std::vector<Ids>& rows, const std::vector<int64_t>& plens = {},
          CollateOptions o = {}) {
  std::vector<CollateItem> items;
  for (size_t i = 0; i < rows.size(); ++i) {
    items.push_back({rows[i], plens.empty() ? 0 : plens[i], static_cast<int64_t>(100 + i)});
  }
  return collate(items, o);
}

Ids flat(const std::vector<Ids>& rows) {
  Ids out;
  for (const auto& r : rows) out.insert(out.end(), r.begin(), r.end());
  return out;
}

void expect_padded(const Batch& b, int64_t B, int64_t T, const std::vector<Ids>& inputs,
                   const std::vector<Ids>& targets) {
  EXPECT_EQ(b.B, B);
  EXPECT_EQ(b.T, T);
  EXPECT_EQ(b.inputs, flat(inputs));
  EXPECT_EQ(b.targets, flat(targets));
  std::vector<int64_t> offs;
  for (int64_t r = 0; r <= B; ++r) offs.push_back(r * T);
  EXPECT_EQ(b.padded_offsets, offs);
  EXPECT_EQ(b.padded_tokens, B * T);
}

void expect_packed(const Batch& b, const std::vector<int64_t>& offsets, const Ids& inputs,
                   const Ids& targets) {
  EXPECT_EQ(b.seq_offsets, offsets);
  EXPECT_EQ(b.packed_inputs, inputs);
  EXPECT_EQ(b.packed_targets, targets);
  EXPECT_EQ(b.packed_tokens(), offsets.back());
}

}  // namespace

TEST(Collate, SingleItem) {
  // padded = [1 2 3 E]; inputs = [1 2 3], targets = [2 3 E].
  const Batch b = run({{1, 2, 3}});
  expect_padded(b, 1, 3, {{1, 2, 3}}, {{2, 3, E}});
  expect_packed(b, {0, 3}, {1, 2, 3}, {2, 3, E});
  EXPECT_EQ(b.indices, (std::vector<int64_t>{100}));
  EXPECT_EQ(b.real_tokens, 3);
  EXPECT_EQ(b.target_tokens, 3);
}

TEST(Collate, ReferenceExampleThreeItems) {
  // The book's example: [0..4], [5 6], [7 8 9]. L = 6, T = 5.
  const Batch b = run({{0, 1, 2, 3, 4}, {5, 6}, {7, 8, 9}});
  expect_padded(b, 3, 5, {{0, 1, 2, 3, 4}, {5, 6, E, E, E}, {7, 8, 9, E, E}},
                {{1, 2, 3, 4, E}, {6, E, X, X, X}, {8, 9, E, X, X}});
  expect_packed(b, {0, 5, 7, 10}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
                {1, 2, 3, 4, E, 6, E, 8, 9, E});
  EXPECT_EQ(b.real_tokens, 10);
  EXPECT_EQ(b.padded_tokens, 15);
  EXPECT_EQ(b.target_tokens, 10);
}

TEST(Collate, EqualLengths) {
  const Batch b = run({{1, 2}, {3, 4}});
  expect_padded(b, 2, 2, {{1, 2}, {3, 4}}, {{2, E}, {4, E}});
  expect_packed(b, {0, 2, 4}, {1, 2, 3, 4}, {2, E, 4, E});
  EXPECT_EQ(b.real_tokens, 4);
  EXPECT_EQ(b.target_tokens, 4);
}

TEST(Collate, TruncationCutsTheFirstEndOfText) {
  // Untruncated T = 4: inputs [1 2 3 4 | 5 6 E E], targets [2 3 4 E | 6 E X X]; keep 3 columns.
  CollateOptions o;
  o.allowed_max_length = 3;
  const Batch b = run({{1, 2, 3, 4}, {5, 6}}, {}, o);
  expect_padded(b, 2, 3, {{1, 2, 3}, {5, 6, E}}, {{2, 3, 4}, {6, E, X}});
  expect_packed(b, {0, 3, 5}, {1, 2, 3, 5, 6}, {2, 3, 4, 6, E});
  EXPECT_EQ(b.real_tokens, 5);
  EXPECT_EQ(b.target_tokens, 5);
}

TEST(Collate, MaxLengthLongerThanBatchChangesNothing) {
  CollateOptions o;
  o.allowed_max_length = 1024;
  const Batch b = run({{0, 1, 2, 3, 4}, {5, 6}}, {}, o);
  expect_padded(b, 2, 5, {{0, 1, 2, 3, 4}, {5, 6, E, E, E}}, {{1, 2, 3, 4, E}, {6, E, X, X, X}});
}

TEST(Collate, PromptMaskingOnAndOff) {
  // Row 0: prompt of 3 tokens -> the first 2 targets ignored. Row 1: prompt of 1 -> none.
  const std::vector<Ids> rows{{1, 2, 3, 4, 5}, {6, 7}};
  const Batch off = run(rows, {3, 1});
  expect_padded(off, 2, 5, {{1, 2, 3, 4, 5}, {6, 7, E, E, E}}, {{2, 3, 4, 5, E}, {7, E, X, X, X}});
  EXPECT_EQ(off.target_tokens, 7);
  CollateOptions o;
  o.mask_prompt = true;
  const Batch on = run(rows, {3, 1}, o);
  expect_padded(on, 2, 5, {{1, 2, 3, 4, 5}, {6, 7, E, E, E}}, {{X, X, 4, 5, E}, {7, E, X, X, X}});
  // Leading ignored positions stay in the packed form (later positions attend to them).
  expect_packed(on, {0, 5, 7}, {1, 2, 3, 4, 5, 6, 7}, {X, X, 4, 5, E, 7, E});
  EXPECT_EQ(on.target_tokens, 5);
}

TEST(Collate, MaskedPromptKeepsTheEarlierAnswersOfAConversation) {
  // Tokens 0..9, prompt of 8 (targets 0..6 masked), an earlier answer at tokens [3, 5): target
  // positions 2 and 3 (predicting tokens 3 and 4) stay, as assistant-only loss.
  const std::vector<int32_t> ids{10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
  const std::vector<std::pair<int64_t, int64_t>> kept{{3, 5}};
  CollateOptions o;
  o.mask_prompt = true;
  const CollateItem item{ids, 8, 0, kept};
  const Batch b = collate(std::span(&item, 1), o);
  expect_padded(b, 1, 10, {{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}},
                {{X, X, 13, 14, X, X, X, 18, 19, E}});
  EXPECT_EQ(b.target_tokens, 5);
  // Without masking the spans change nothing.
  const Batch all = collate(std::span(&item, 1), CollateOptions{});
  EXPECT_EQ(all.target_tokens, 10);
}

TEST(Collate, PromptLongerThanMaxLength) {
  // Row 0 untruncated targets [2 3 4 5 6 E], prompt 5 masks 4 -> [X X X X 6 E]; cut to 3: all X.
  // Row 1 [8 E X X X X] -> [8 E X]. Row 0 has nothing to learn: an empty packed sequence.
  CollateOptions o;
  o.mask_prompt = true;
  o.allowed_max_length = 3;
  const Batch b = run({{1, 2, 3, 4, 5, 6}, {7, 8}}, {5, 1}, o);
  expect_padded(b, 2, 3, {{1, 2, 3}, {7, 8, E}}, {{X, X, X}, {8, E, X}});
  expect_packed(b, {0, 0, 2}, {7, 8}, {8, E});
  EXPECT_EQ(b.real_tokens, 5);
  EXPECT_EQ(b.target_tokens, 2);
}

TEST(Collate, PromptLongerThanTheWholeItem) {
  // Python's targets[:9] = -100 on a 2-long row masks all of it, the end-of-text target included.
  CollateOptions o;
  o.mask_prompt = true;
  const Batch b = run({{1, 2}, {3, 4, 5}}, {10, 2}, o);
  expect_padded(b, 2, 3, {{1, 2, E}, {3, 4, 5}}, {{X, X, X}, {X, 5, E}});
  expect_packed(b, {0, 0, 3}, {3, 4, 5}, {X, 5, E});
}

TEST(Collate, EndOfTextInsideAnItemCountsAsTheFirstPad) {
  // The reference finds pads by value: a 50256 inside the item is "the first" and the appended
  // end-of-text target becomes -100. (Datasets with a literal <|endoftext|> are rejected earlier.)
  const Batch b = run({{1, E, 2}});
  expect_padded(b, 1, 3, {{1, E, 2}}, {{E, 2, X}});
  expect_packed(b, {0, 2}, {1, E}, {E, 2});
}

// Every non-ignored target is predicted from the same context (the inputs up to and including its
// position) in both forms, so the mean cross-entropy is identical.
TEST(Collate, PackedMatchesPaddedOnRandomBatches) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int B = 1 + static_cast<int>(rng() % 6);
    std::vector<Ids> items(B);
    std::vector<int64_t> plens(B);
    for (int r = 0; r < B; ++r) {
      items[r].resize(1 + rng() % 12);
      for (auto& t : items[r]) t = static_cast<int32_t>(rng() % 50);
      plens[r] = 1 + static_cast<int64_t>(rng() % 14);
    }
    CollateOptions o;
    o.mask_prompt = rng() % 2;
    if (rng() % 2) o.allowed_max_length = 1 + static_cast<int64_t>(rng() % 10);
    const Batch b = run(items, plens, o);
    using Key = std::tuple<int64_t, int64_t, Ids, int32_t>;  // row, position, context, target
    std::multiset<Key> padded, packed;
    for (int64_t r = 0; r < b.B; ++r) {
      for (int64_t t = 0; t < b.T; ++t) {
        const int32_t tg = b.targets[r * b.T + t];
        if (tg == kIgnoreIndex) continue;
        Ids ctx(b.inputs.begin() + r * b.T, b.inputs.begin() + r * b.T + t + 1);
        padded.insert({r, t, ctx, tg});
      }
    }
    for (int64_t s = 0; s < b.B; ++s) {
      const int64_t o0 = b.seq_offsets[s], o1 = b.seq_offsets[s + 1];
      ASSERT_LE(o0, o1);
      ASSERT_LE(o1 - o0, b.T);
      for (int64_t p = 0; p < o1 - o0; ++p) {
        const int32_t tg = b.packed_targets[o0 + p];
        if (tg == kIgnoreIndex) continue;
        Ids ctx(b.packed_inputs.begin() + o0, b.packed_inputs.begin() + o0 + p + 1);
        packed.insert({s, p, ctx, tg});
      }
      // Nothing droppable is kept: a kept sequence ends with a learned target.
      if (o1 > o0) {
        EXPECT_NE(b.packed_targets[o1 - 1], kIgnoreIndex);
      }
    }
    ASSERT_EQ(padded, packed) << "trial " << trial;
    ASSERT_EQ(static_cast<int64_t>(padded.size()), b.target_tokens);
  }
}

namespace {

// n entries of lengths 3 + (i % 7), token ids = the entry index.
TokenizedDataset toy_dataset(int n) {
  std::vector<Ids> ids(n);
  std::vector<int64_t> plens(n, 2);
  for (int i = 0; i < n; ++i) ids[i].assign(3 + i % 7, i);
  return make_tokenized_dataset(ids, plens);
}

}  // namespace

TEST(Shuffle, PinnedOrderOfTheDocumentedAlgorithm) {
  // Fisher-Yates over std::mt19937_64(std::seed_seq{123, 0, 0, 0}), computed once and pinned so that the train
  // order never changes silently between versions or platforms.
  EXPECT_EQ(shuffled_order(10, 123, 0), (std::vector<int64_t>{6, 9, 8, 1, 4, 0, 7, 5, 2, 3}));
}

TEST(Loader, SameSeedSameOrderOtherSeedOrEpochDiffers) {
  const TokenizedDataset d = toy_dataset(1100);
  const IndexRange train{0, 935};
  const DataLoader a(d, train, train_loader_options(8, 123));
  const DataLoader b(d, train, train_loader_options(8, 123));
  const DataLoader c(d, train, train_loader_options(8, 124));
  EXPECT_EQ(a.epoch_order(0), b.epoch_order(0));
  EXPECT_EQ(a.epoch_order(1), b.epoch_order(1));
  EXPECT_NE(a.epoch_order(0), c.epoch_order(0));
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
}

TEST(Loader, TrainVisitsEveryIndexOnceAndDropsTheLastBatch) {
  const TokenizedDataset d = toy_dataset(1100);
  const DataLoader train(d, {0, 935}, train_loader_options(8, 123));
  ASSERT_EQ(train.num_batches(), 116);  // 935 / 8 = 116 full batches, 7 entries dropped
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto order = train.epoch_order(epoch);
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 935; ++i) ASSERT_EQ(sorted[i], i);
    std::vector<int64_t> seen;
    for (int64_t b = 0; b < train.num_batches(); ++b) {
      const Batch batch = train.batch(epoch, b);
      ASSERT_EQ(batch.B, 8);
      EXPECT_EQ(batch.indices, train.batch_indices(epoch, b));
      // Each row holds its entry's tokens (toy ids = entry index).
      for (int64_t r = 0; r < batch.B; ++r) EXPECT_EQ(batch.inputs[r * batch.T], batch.indices[r]);
      seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
    }
    EXPECT_EQ(seen, std::vector<int64_t>(order.begin(), order.begin() + 928));
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end());
  }
}

TEST(Loader, EvalKeepsOrderAndTheLastBatch) {
  const TokenizedDataset d = toy_dataset(1100);
  const DataLoader val(d, {1045, 1100}, eval_loader_options(8));
  ASSERT_EQ(val.num_batches(), 7);  // 6 of 8 and one of 7
  EXPECT_EQ(val.batch_indices(0, 0), (std::vector<int64_t>{1045, 1046, 1047, 1048, 1049, 1050,
                                                            1051, 1052}));
  EXPECT_EQ(val.batch_indices(3, 6),
            (std::vector<int64_t>{1093, 1094, 1095, 1096, 1097, 1098, 1099}));
  EXPECT_EQ(val.batch(0, 6).B, 7);
}

TEST(Loader, ResumeGivesTheSameBatch) {
  const TokenizedDataset d = toy_dataset(200);
  CollateOptions co;
  co.mask_prompt = true;
  const DataLoader run1(d, {0, 170}, train_loader_options(4, 9, co));
  std::vector<Batch> first;
  for (int64_t e = 0; e < 2; ++e)
    for (int64_t b = 0; b < run1.num_batches(); ++b) first.push_back(run1.batch(e, b));
  // A fresh loader (a resumed process) asked for epoch 1, batch 17 directly.
  const DataLoader run2(d, {0, 170}, train_loader_options(4, 9, co));
  const Batch again = run2.batch(1, 17);
  const Batch& orig = first[run1.num_batches() + 17];
  EXPECT_EQ(again.indices, orig.indices);
  EXPECT_EQ(again.inputs, orig.inputs);
  EXPECT_EQ(again.targets, orig.targets);
  EXPECT_EQ(again.seq_offsets, orig.seq_offsets);
}

TEST(Loader, RejectsBadSettings) {
  const TokenizedDataset d = toy_dataset(10);
  EXPECT_THROW(DataLoader(d, {0, 10}, train_loader_options(0)), Error);
  CollateOptions co;
  co.allowed_max_length = 0;
  EXPECT_THROW(DataLoader(d, {0, 10}, eval_loader_options(2, co)), Error);
}

TEST(Stats, LengthsAndEpochTokens) {
  const TokenizedDataset d = make_tokenized_dataset({{1, 2, 3}, {4}, {5, 6}, {7, 8, 9, 10}}, {1, 1, 1, 1});
  const LengthStats s = length_stats(d, {0, 4});
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(s.total, 10);
  EXPECT_EQ(s.min, 1);
  EXPECT_EQ(s.max, 4);
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  // Batches of 2 in order: (3, 1) -> T 3, padded 6, real 4; (2, 4) -> T 4, padded 8, real 6.
  const EpochTokens e = epoch_tokens(DataLoader(d, {0, 4}, eval_loader_options(2)), 0);
  EXPECT_EQ(e.batches, 2);
  EXPECT_EQ(e.real_tokens, 10);
  EXPECT_EQ(e.padded_tokens, 14);
  EXPECT_EQ(e.packed_tokens, 10);
  EXPECT_EQ(e.target_tokens, 10);
  EXPECT_DOUBLE_EQ(e.padding_overhead_percent(), 40.0);
}

TEST(Collate, EveryRowMaskedGivesEmptyPackedSequences) {
  // Issue 16: with nothing to learn in any row the packed vectors are empty, and collate took
  // &v[0] of them (UBSan under the dev preset: reference binding to null pointer).
  CollateOptions o;
  o.mask_prompt = true;
  const Batch b = run({{1, 2}, {3, 4}}, {10, 10}, o);
  expect_padded(b, 2, 2, {{1, 2}, {3, 4}}, {{X, X}, {X, X}});
  expect_packed(b, {0, 0, 0}, {}, {});
  EXPECT_EQ(b.target_tokens, 0);
}
