// The training log metrics.jsonl: one JSON object per line, one per optimizer step and one per
// evaluation. External tools read these field names; keep them exactly:
//   step record: step, epoch, loss, lr, grad_norm, tokens_seen, tokens_per_s, batch
//   eval record: step, train_loss, val_loss (plus epoch, tokens_seen for plotting)
// DPO runs (llmft dpo) add the batch means of the rewards (policy minus reference mean response
// log-probabilities) and their margin: chosen_reward, rejected_reward, reward_margin on a step
// record; train_chosen_reward, train_rejected_reward, train_reward_margin and the val_ ones on an
// evaluation record.
// Every line is flushed as it is written, so a killed run leaves whole lines (a torn last line at
// worst, which read_metrics skips and a resume replaces from its checkpoint's copy).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace llmft {

// DPO's rewards over a batch or an evaluation (means).
struct Rewards {
  double chosen = 0, rejected = 0;
  double margin() const { return chosen - rejected; }
};

struct StepRecord {
  int64_t step = 0;           // 0-based optimizer step (the first update is step 0)
  double epoch = 0;           // epochs completed after this step, fractional (1.0 = end of epoch 1)
  double loss = 0;            // the training batch's loss before the update
  double lr = 0;              // learning rate used by this update
  double grad_norm = 0;       // global L2 norm of the gradient before clipping
  int64_t tokens_seen = 0;    // cumulative input positions (batch x padded length, as the reference)
  double tokens_per_s = 0;    // this step's tokens / its wall time
  std::vector<int64_t> batch; // dataset indices (into the train split) of the examples in the batch
  std::optional<Rewards> rewards;  // DPO runs
};

struct EvalRecord {
  int64_t step = 0;
  double epoch = 0;
  int64_t tokens_seen = 0;
  double train_loss = 0;
  double val_loss = 0;
  std::optional<Rewards> train_rewards, val_rewards;  // DPO runs
};

std::string to_json_line(const StepRecord& r);
std::string to_json_line(const EvalRecord& r);

// Everything read back from a metrics.jsonl (a torn last line is ignored).
struct MetricsHistory {
  std::vector<StepRecord> steps;
  std::vector<EvalRecord> evals;
};
MetricsHistory read_metrics(const std::filesystem::path& path);

// Appends records to metrics.jsonl.
class MetricsLog {
 public:
  // truncate=true starts a fresh file; false appends (resume, after restoring the file).
  MetricsLog(std::filesystem::path path, bool truncate);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const StepRecord& r);
  void write(const EvalRecord& r);
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_line(const std::string& line);
  std::filesystem::path path_;
  std::FILE* f_ = nullptr;
};

}  // namespace llmft
