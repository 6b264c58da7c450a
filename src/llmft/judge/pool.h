// Asking a judge LLM about many entries of a file: one prompt per entry from worker threads
// (JudgeOptions::concurrency) through one JudgeClient (its timeouts, retries and backoff), a
// progress bar, and the caller's results saved as they arrive (atomically, throttled so saving
// stays a small share of the time), so a killed run resumes. Used by `llmft judge` (scores) and
// `llmft prefs` (rewritten answers).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "llmft/core/progress.h"
#include "llmft/judge/client.h"
#include "llmft/judge/judge.h"

namespace llmft::judge {

class RequestPool {
 public:
  // What the caller does with each entry. prompt(i) runs on a worker thread without the lock;
  // reply(i, text) and failed(i, error) run with the pool's lock held (they may call report());
  // save() writes the caller's output file, with the lock held.
  struct Task {
    std::function<std::string(size_t)> prompt;
    std::function<void(size_t, const std::string&)> reply;
    std::function<void(size_t, const std::string&)> failed;  // an EntryError: others go on
    std::function<void()> save;
  };

  RequestPool(const JudgeOptions& opts, const JudgeClient& client);
  // Asks about every entry of `todo` (the bar counts them under `label`), then saves once more.
  // Losing the server stops the workers (lost() says why); other errors are rethrown after the
  // final save.
  void run(const std::vector<size_t>& todo, const std::string& label, const Task& task);
  // A report line above the progress bar (to opts.on_report, or stderr). Caller holds the lock
  // (from inside reply/failed) or calls before run().
  void report(const std::string& line);

  int64_t requests() const { return requests_; }
  const std::optional<std::string>& lost() const { return lost_; }

 private:
  void worker(const std::vector<size_t>& todo, const Task& task);
  void maybe_save(const Task& task);  // caller holds mu_

  using Clock = std::chrono::steady_clock;
  const JudgeOptions& opts_;
  const JudgeClient& client_;
  std::mutex mu_;
  std::unique_ptr<ProgressBar> bar_;
  Clock::time_point last_save_ = Clock::now();
  double last_save_s_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<int64_t> requests_{0};
  std::atomic<bool> stop_{false};
  std::optional<std::string> lost_;
  std::exception_ptr internal_;
  int64_t done_ = 0;
};

}  // namespace llmft::judge
