// Data loaders (SPEC §3): fixed-size batches over one split; the train loader reshuffles every
// epoch from a seeded RNG and drops the last incomplete batch. Stateless per (epoch, batch):
// resuming at (epoch, b) yields the same batch as an uninterrupted run.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "llmft/data/batch.h"
#include "llmft/data/dataset.h"
#include "llmft/data/tokenized.h"

namespace llmft {

struct LoaderOptions {
  int64_t batch_size = 8;  // >= 1
  bool shuffle = false;
  bool drop_last = false;
  uint64_t seed = 123;
  CollateOptions collate;
};

// The recipe's loaders: train shuffles and drops the last batch, val/test keep order and all.
LoaderOptions train_loader_options(int64_t batch_size = 8, uint64_t seed = 123,
                                   CollateOptions collate = {});
LoaderOptions eval_loader_options(int64_t batch_size = 8, CollateOptions collate = {});

// The permutation of [0, n) used for `epoch` (0-based): Fisher-Yates (Durstenfeld, i = n-1 .. 1,
// j uniform in [0, i] by rejection sampling on 64-bit draws) driven by std::mt19937_64 seeded
// with std::seed_seq{seed_lo32, seed_hi32, epoch_lo32, epoch_hi32}. Both std components are fully
// specified by the C++ standard, so the order is the same on every platform. (It cannot equal
// PyTorch's RandomSampler order.)
std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, int64_t epoch);

class DataLoader {
 public:
  // Batches of the entries range.begin .. range.end-1 of `data` (kept by reference: it must
  // outlive the loader). Throws Error on a batch size < 1 or allowed_max_length < 1.
  DataLoader(const TokenizedDataset& data, IndexRange range, LoaderOptions options);

  int64_t size() const { return static_cast<int64_t>(range_.size()); }  // entries
  int64_t num_batches() const;                                          // per epoch
  const LoaderOptions& options() const { return options_; }

  // Dataset indices in the order epoch `epoch` visits them.
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // Dataset indices of batch `batch` (0 <= batch < num_batches()) of `epoch`.
  std::vector<int64_t> batch_indices(int64_t epoch, int64_t batch) const;
  Batch batch(int64_t epoch, int64_t batch) const;

 private:
  const TokenizedDataset* data_;
  IndexRange range_;
  LoaderOptions options_;
  // The order of `epoch` relative to range_.begin; call with mutex_ held.
  const std::vector<int64_t>& shuffled_locked(int64_t epoch) const;
  // The last epoch's order, so a pass over an epoch shuffles once (thread-safe).
  mutable std::mutex mutex_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace llmft
