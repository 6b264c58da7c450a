#include "llmft/train/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "llmft/core/error.h"

namespace llmft {

LrScheduleKind parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrScheduleKind::kConstant;
  if (name == "linear") return LrScheduleKind::kLinear;
  if (name == "cosine") return LrScheduleKind::kCosine;
  throw UsageError(fmt::format("unknown learning-rate schedule '{}'", name),
                   "expected constant, linear or cosine");
}

std::string to_string(LrScheduleKind kind) {
  switch (kind) {
    case LrScheduleKind::kConstant: return "constant";
    case LrScheduleKind::kLinear: return "linear";
    case LrScheduleKind::kCosine: return "cosine";
  }
  return "?";
}

double LrSchedule::lr(int64_t step) const {
  LLMFT_CHECK(step >= 0, "negative step {}", step);
  if (step < warmup_steps) {
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  if (kind == LrScheduleKind::kConstant) return base_lr;
  const int64_t decay = std::max<int64_t>(1, total_steps - warmup_steps);
  const double p =
      std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(decay), 0.0, 1.0);
  if (kind == LrScheduleKind::kLinear) return base_lr * (1.0 - p);
  return base_lr * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
}

}  // namespace llmft
