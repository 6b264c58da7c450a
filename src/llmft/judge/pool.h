// Worker threads sending requests to an LLM server, shared by `judge` and `synth`: a progress
// bar, report lines that do not tear it, results recorded (and saved) under one lock as they
// arrive, and every worker stopped when one of them loses the server.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "llmft/core/progress.h"
#include "llmft/judge/client.h"

namespace llmft::judge {

class RequestPool {
 public:
  // What a worker should do next (see run's `claim`).
  static constexpr int64_t kWait = -1;  // nothing to start while others are in flight
  static constexpr int64_t kDone = -2;  // no more work

  // bar_total 0: no bar. on_report receives report lines (default: stderr).
  RequestPool(int concurrency, bool progress, std::string label, int64_t bar_total,
              std::string unit, std::function<void(const std::string&)> on_report)
      : concurrency_(concurrency), on_report_(std::move(on_report)) {
    if (progress && bar_total > 0) {
      bar_ = std::make_unique<ProgressBar>(std::move(label), bar_total, std::move(unit));
    }
  }

  // Workers repeatedly: claim(in_flight) under the lock gives an item, kWait or kDone; work(item)
  // runs unlocked and returns a Result; record(item, result) runs under the lock and returns the
  // units of progress made. ServerLostError from work stops every worker (lost() says why); any
  // other exception from work or record stops them and is rethrown here after all have joined.
  template <typename Result>
  void run(const std::function<int64_t(int64_t in_flight)>& claim,
           const std::function<Result(int64_t item)>& work,
           const std::function<int64_t(int64_t item, Result&& r)>& record) {
    std::vector<std::thread> threads;
    for (int t = 0; t < concurrency_; ++t) {
      threads.emplace_back([&] { worker<Result>(claim, work, record); });
    }
    for (auto& t : threads) t.join();
    if (bar_) bar_->finish(extra_);
    if (internal_) std::rethrow_exception(internal_);
  }

  // A report line (thread-safe; from record too): clears the bar first.
  void report(const std::string& line) {
    std::lock_guard lk(mu_);
    if (bar_) bar_->clear();
    if (on_report_) {
      on_report_(line);
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }
  // Text after the bar (from record, under the lock).
  void set_extra(std::string extra) { extra_ = std::move(extra); }

  const std::atomic<bool>* stop_flag() const { return &stop_; }
  // The item whose request lost the server, and why (after run).
  const std::optional<std::pair<int64_t, std::string>>& lost() const { return lost_; }

 private:
  template <typename Result>
  void worker(const std::function<int64_t(int64_t)>& claim,
              const std::function<Result(int64_t)>& work,
              const std::function<int64_t(int64_t, Result&&)>& record) {
    for (;;) {
      int64_t item = kDone;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] {
          if (stop_) return true;
          item = claim(in_flight_);
          return item != kWait;
        });
        if (stop_ || item == kDone) {
          cv_.notify_all();
          return;
        }
        ++in_flight_;
      }
      std::optional<Result> r;
      try {
        r.emplace(work(item));
      } catch (const ServerLostError& e) {
        fail(std::pair<int64_t, std::string>(item, e.what()), nullptr);
        return;
      } catch (...) {
        fail(std::nullopt, std::current_exception());
        return;
      }
      std::lock_guard lk(mu_);
      --in_flight_;
      try {
        const int64_t units = record(item, std::move(*r));
        done_ += units;
        if (bar_) bar_->update(done_, extra_);
      } catch (...) {
        if (!internal_) internal_ = std::current_exception();
        stop_ = true;
      }
      cv_.notify_all();
    }
  }

  void fail(std::optional<std::pair<int64_t, std::string>> lost, std::exception_ptr internal) {
    std::lock_guard lk(mu_);
    --in_flight_;
    if (internal) {
      if (!internal_) internal_ = internal;
    } else if (!lost_) {
      lost_ = lost;
    }
    stop_ = true;
    cv_.notify_all();
  }

  int concurrency_;
  std::function<void(const std::string&)> on_report_;
  std::unique_ptr<ProgressBar> bar_;
  std::string extra_;
  std::recursive_mutex mu_;  // record may report
  std::condition_variable_any cv_;
  int64_t in_flight_ = 0, done_ = 0;
  std::atomic<bool> stop_{false};
  std::optional<std::pair<int64_t, std::string>> lost_;
  std::exception_ptr internal_;
};

// Saves after every result unless saving takes over ~5% of the time (each save rewrites the
// whole file, which grows with the work done).
class ThrottledSave {
 public:
  explicit ThrottledSave(std::function<void()> save) : save_(std::move(save)) {}
  void operator()(bool force) {
    const auto now = Clock::now();
    if (!force && std::chrono::duration<double>(now - last_).count() < 20 * last_s_) return;
    save_();
    last_ = Clock::now();
    last_s_ = std::chrono::duration<double>(last_ - now).count();
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::function<void()> save_;
  Clock::time_point last_ = Clock::now();
  double last_s_ = 0;
};

}  // namespace llmft::judge
