// Learning-rate schedules for the optimizer step loop: constant (the reference recipe), and linear
// or cosine decay to zero after an optional linear warmup.
#pragma once

#include <cstdint>
#include <string>

namespace llmft {

enum class LrScheduleKind { kConstant, kLinear, kCosine };

// "constant", "linear", "cosine". Throws UsageError for anything else.
LrScheduleKind parse_lr_schedule(const std::string& name);
std::string to_string(LrScheduleKind kind);

struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::kConstant;
  double base_lr = 5e-5;
  int64_t warmup_steps = 0;  // linear ramp: step s < warmup uses base_lr * (s + 1) / warmup
  int64_t total_steps = 1;   // optimizer steps in the whole run (the decay reaches 0 after the last)

  // Learning rate for optimizer step `step` (0-based: the first update is step 0).
  // Warmup applies to every kind. After warmup, with p = (step - warmup) / (total - warmup):
  //   constant: base_lr;  linear: base_lr * (1 - p);  cosine: base_lr * 0.5 * (1 + cos(pi * p)).
  // So the last step (p = (n-1)/n) still moves a little and the rate would reach 0 one step later.
  double lr(int64_t step) const;
};

}  // namespace llmft
