// A one-line terminal progress bar with rate and ETA, redrawn at most ~10 times a second on
// stderr. Off when stderr is not a terminal (then only finish() prints a line), so logs stay clean.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace llmft {

class ProgressBar {
 public:
  // Off for the whole process (the ranks of a data-parallel run but the first).
  static void silence();
  // total: units of work (0 = unknown). unit: what is counted ("step", "B", "tok").
  ProgressBar(std::string label, int64_t total, std::string unit);
  ~ProgressBar();
  // Sets the amount done so far; `extra` is shown after the bar (e.g. "loss 1.234").
  void update(int64_t done, const std::string& extra = {});
  void add(int64_t n, const std::string& extra = {}) { update(done_ + n, extra); }
  // Draws the final state and ends the line.
  void finish(const std::string& extra = {});
  // Temporarily clears the bar so a log line can be printed above it.
  void clear();
  double elapsed_s() const;

 private:
  void draw(bool final);
  std::string label_, unit_, extra_;
  int64_t total_, done_ = 0, start_done_ = 0;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1.5 GB", "12.0 kB" (for unit "B"), otherwise a number with k/M suffix.
std::string human_count(double n, const std::string& unit);
// "1:02:03" or "02:03".
std::string human_duration(double seconds);

}  // namespace llmft
