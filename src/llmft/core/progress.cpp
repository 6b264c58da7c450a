#include "llmft/core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace llmft {

std::string human_count(double n, const std::string& unit) {
  const char* sfx[] = {"", "k", "M", "G", "T"};
  int i = 0;
  while (std::fabs(n) >= 1000.0 && i < 4) {
    n /= 1000.0;
    ++i;
  }
  // Slow rates (0.25 step/s) keep two decimals rather than showing as "0 step/s".
  if (i == 0) {
    const bool fraction = n != 0 && std::fabs(n) < 10 && n != std::floor(n);
    return fraction ? fmt::format("{:.2f} {}", n, unit) : fmt::format("{:.0f} {}", n, unit);
  }
  return fmt::format("{:.1f} {}{}", n, sfx[i], unit);
}

std::string human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{:02}:{:02}", t / 60, t % 60);
}

namespace {
bool g_silent = false;
}  // namespace

void ProgressBar::silence() { g_silent = true; }

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      tty_(isatty(STDERR_FILENO) != 0 && !g_silent),
      start_(std::chrono::steady_clock::now()),
      last_draw_() {}

ProgressBar::~ProgressBar() {
  if (!finished_ && tty_) std::fputs("\n", stderr);
}

double ProgressBar::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  done_ = done;
  if (!extra.empty()) extra_ = extra;
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100) && done_ != total_) return;
  last_draw_ = now;
  draw(false);
}

void ProgressBar::clear() {
  if (tty_) std::fputs("\r\033[K", stderr);
}

void ProgressBar::finish(const std::string& extra) {
  if (finished_) return;
  if (!extra.empty()) extra_ = extra;
  draw(true);
  finished_ = true;
}

void ProgressBar::draw(bool final) {
  const double el = elapsed_s();
  const double rate = el > 0 ? static_cast<double>(done_ - start_done_) / el : 0.0;
  std::string line = label_;
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
    const int width = 24, fill = static_cast<int>(frac * width);
    line += fmt::format(" {:3.0f}% |{}{}| {}/{}", frac * 100, std::string(fill, '#'),
                        std::string(width - fill, '.'), done_, total_);
    const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : NAN;
    line += fmt::format(" [{}<{}, {}/s]", human_duration(el), human_duration(eta),
                        human_count(rate, unit_));
  } else {
    line += fmt::format(" {} [{}, {}/s]", human_count(static_cast<double>(done_), unit_),
                        human_duration(el), human_count(rate, unit_));
  }
  if (!extra_.empty()) line += " " + extra_;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  } else if (final && !g_silent) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace llmft
