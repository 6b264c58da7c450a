// Worker threads asking an LLM server about the entries of a file; see pool.h.
#include "llmft/judge/pool.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <thread>

namespace llmft::judge {

RequestPool::RequestPool(const JudgeOptions& opts, const JudgeClient& client)
    : opts_(opts), client_(client) {}

void RequestPool::report(const std::string& line) {
  if (bar_) bar_->clear();
  if (opts_.on_report) {
    opts_.on_report(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

// Saving rewrites the whole file: after every entry, unless saves take over ~5% of the time.
void RequestPool::maybe_save(const Task& task) {
  const auto now = Clock::now();
  if (std::chrono::duration<double>(now - last_save_).count() < 20 * last_save_s_) return;
  task.save();
  last_save_ = Clock::now();
  last_save_s_ = std::chrono::duration<double>(last_save_ - now).count();
}

void RequestPool::run(const std::vector<size_t>& todo, const std::string& label,
                      const Task& task) {
  if (opts_.progress && !todo.empty()) {
    bar_ = std::make_unique<ProgressBar>(label, static_cast<int64_t>(todo.size()), "entry");
  }
  last_save_ = Clock::now();
  std::vector<std::thread> threads;
  const size_t n = std::min<size_t>(static_cast<size_t>(opts_.concurrency), todo.size());
  for (size_t t = 0; t < n; ++t) threads.emplace_back([&] { worker(todo, task); });
  for (auto& t : threads) t.join();
  if (bar_) bar_->finish();
  bar_.reset();
  task.save();
  if (internal_) std::rethrow_exception(internal_);
}

void RequestPool::worker(const std::vector<size_t>& todo, const Task& task) {
  for (;;) {
    const size_t k = next_++;
    if (k >= todo.size() || stop_) return;
    const size_t i = todo[k];
    std::optional<std::string> reply, error;
    const auto note = [&](const std::string& line) {
      std::lock_guard lk(mu_);
      report(fmt::format("{} {}: {}", task.item, i, line));
    };
    try {
      if (task.request) {
        reply = task.request(i, [&](const char* path, const std::string& body) {
          return client_.post(path, body, note, requests_, &stop_);
        });
      } else {
        reply = client_.ask(task.prompt(i), note, requests_, &stop_);
      }
    } catch (const EntryError& ex) {
      error = client_.redact(ex.what());
    } catch (const ServerLostError& ex) {
      std::lock_guard lk(mu_);
      if (!lost_) lost_ = fmt::format("{} {}: {}", task.item, i, ex.what());
      stop_ = true;
      return;
    } catch (...) {
      std::lock_guard lk(mu_);
      if (!internal_) internal_ = std::current_exception();
      stop_ = true;
      return;
    }
    std::lock_guard lk(mu_);
    try {
      if (reply) {
        task.reply(i, *reply);
        failures_in_a_row_ = 0;
      } else {
        task.failed(i, *error);
        const int limit = opts_.max_failures_in_a_row;
        if (limit > 0 && ++failures_in_a_row_ >= limit && !lost_) {
          const std::string items = task.item.ends_with("y")
                                        ? task.item.substr(0, task.item.size() - 1) + "ies"
                                        : task.item + "s";
          lost_ = fmt::format("{} {} in a row failed (the last, {} {}: {})", limit, items,
                              task.item, i, *error);
          stop_ = true;
        }
      }
      ++done_;
      if (bar_) bar_->update(done_);
      maybe_save(task);
    } catch (...) {
      if (!internal_) internal_ = std::current_exception();
      stop_ = true;
      return;
    }
  }
}

}  // namespace llmft::judge
