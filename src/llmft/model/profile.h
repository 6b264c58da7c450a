// Opt-in wall-clock breakdown of the training step per kernel (bench_train_step --profile).
// Off by default: a disabled Scope costs one branch. Not thread-safe: used from the thread that
// drives the model (kernels parallelise inside a scope).
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace llmft::profile {

void enable(bool on);
bool enabled();
void reset();
// Adds seconds under `name` (a string literal: slots are keyed by the pointer, then the text).
void add(const char* name, double seconds);
// (name, total seconds, calls) in first-seen order.
struct Entry {
  std::string name;
  double seconds = 0.0;
  int64_t calls = 0;
};
std::vector<Entry> entries();

class Scope {
 public:
  explicit Scope(const char* name) : name_(enabled() ? name : nullptr) {
    if (name_) t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (name_)
      add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace llmft::profile
