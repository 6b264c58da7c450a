// Asking an LLM server about many entries of a file: one prompt per entry from worker threads
// (JudgeOptions::concurrency) through one JudgeClient (its timeouts, retries and backoff), a
// progress bar, and the caller's results saved as they arrive (atomically, throttled so saving
// stays a small share of the time), so a killed run resumes. Used by `llmft judge` (scores),
// `llmft prefs` (rewritten answers) and `llmft synth` (its own requests per entry: Task::request).
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
  // JudgeClient::post with the pool's retry report lines, request count and stop flag.
  using Post = std::function<std::string(const char* path, const std::string& body)>;

  // What the caller does with each entry. prompt(i) (or request) runs on a worker thread without
  // the lock; reply(i, text) and failed(i, error) run with the pool's lock held (they may call
  // report()); save() writes the caller's output file, with the lock held.
  struct Task {
    std::function<std::string(size_t)> prompt;
    // Instead of prompt (one chat request, JudgeClient::ask): entry i's own requests, each sent
    // with post; returns the text for reply(i, text), which follows on the same thread. Throws
    // as post does (EntryError: failed(i, ...); ServerLostError: the run stops).
    std::function<std::string(size_t, const Post&)> request;
    std::string item = "entry";  // names entry i in report lines and lost(): "<item> <i>: ..."
    std::function<void(size_t, const std::string&)> reply;
    std::function<void(size_t, const std::string&)> failed;  // an EntryError: others go on
    std::function<void()> save;
  };

  RequestPool(const JudgeOptions& opts, const JudgeClient& client);
  // Asks about every entry of `todo` (the bar counts them under `label`), then saves once more.
  // Losing the server, or opts.max_failures_in_a_row entries failing in a row, stops the workers
  // (lost() says why); other errors are rethrown after the final save.
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
  int failures_in_a_row_ = 0;  // under mu_, in completion order
};

}  // namespace llmft::judge
