// Deterministic, resumable data loaders over a pre-tokenized dataset.
#include "llmft/data/loader.h"

#include <fmt/format.h>

#include <numeric>
#include <random>

#include "llmft/core/error.h"

namespace llmft {

LoaderOptions train_loader_options(int64_t batch_size, uint64_t seed, CollateOptions collate) {
  return {batch_size, /*shuffle=*/true, /*drop_last=*/true, seed, collate};
}

LoaderOptions eval_loader_options(int64_t batch_size, CollateOptions collate) {
  return {batch_size, /*shuffle=*/false, /*drop_last=*/false, /*seed=*/0, collate};
}

std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const auto e = static_cast<uint64_t>(epoch);
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(e), static_cast<uint32_t>(e >> 32)};
  std::mt19937_64 rng(seq);
  for (int64_t i = n - 1; i > 0; --i) {
    // Uniform in [0, i]: reject the 2^64 mod bound lowest draws so every residue is equally likely.
    const auto bound = static_cast<uint64_t>(i) + 1;
    const uint64_t threshold = (0 - bound) % bound;
    uint64_t r;
    do {
      r = rng();
    } while (r < threshold);
    std::swap(order[i], order[static_cast<int64_t>(r % bound)]);
  }
  return order;
}

DataLoader::DataLoader(const TokenizedDataset& data, IndexRange range, LoaderOptions options)
    : data_(&data), range_(range), options_(options) {
  if (options_.batch_size < 1) {
    throw Error(fmt::format("batch size {} is not allowed, expected >= 1", options_.batch_size));
  }
  if (options_.collate.allowed_max_length && *options_.collate.allowed_max_length < 1) {
    throw Error(fmt::format("maximum length {} is not allowed, expected >= 1",
                            *options_.collate.allowed_max_length));
  }
  LLMFT_CHECK(range.begin <= range.end && range.end <= data.size(),
              "range [{}, {}) outside a dataset of {}", range.begin, range.end, data.size());
}

int64_t DataLoader::num_batches() const {
  const int64_t n = size(), bs = options_.batch_size;
  return options_.drop_last ? n / bs : (n + bs - 1) / bs;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order;
  if (options_.shuffle) {
    std::lock_guard lock(mutex_);
    order = shuffled_locked(epoch);
  } else {
    order.resize(size());
    std::iota(order.begin(), order.end(), 0);
  }
  for (auto& i : order) i += static_cast<int64_t>(range_.begin);
  return order;
}

const std::vector<int64_t>& DataLoader::shuffled_locked(int64_t epoch) const {
  LLMFT_CHECK(epoch >= 0, "epoch {} < 0", epoch);
  if (cached_epoch_ != epoch) {
    cached_order_ = shuffled_order(size(), options_.seed, epoch);
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

std::vector<int64_t> DataLoader::batch_indices(int64_t epoch, int64_t batch) const {
  LLMFT_CHECK(batch >= 0 && batch < num_batches(), "batch {} outside [0, {})", batch,
              num_batches());
  const int64_t bs = options_.batch_size;
  const int64_t begin = batch * bs, end = std::min(begin + bs, size());
  if (!options_.shuffle) {
    std::vector<int64_t> idx(end - begin);
    std::iota(idx.begin(), idx.end(), static_cast<int64_t>(range_.begin) + begin);
    return idx;
  }
  std::lock_guard lock(mutex_);
  const std::vector<int64_t>& order = shuffled_locked(epoch);
  std::vector<int64_t> idx(order.begin() + begin, order.begin() + end);
  for (auto& i : idx) i += static_cast<int64_t>(range_.begin);
  return idx;
}

Batch DataLoader::batch(int64_t epoch, int64_t batch) const {
  const std::vector<int64_t> idx = batch_indices(epoch, batch);
  std::vector<CollateItem> items;
  items.reserve(idx.size());
  for (int64_t i : idx) items.push_back(data_->item(i));
  return collate(items, options_.collate);
}

}  // namespace llmft
