#include "llmft/model/precision.h"

#include <fmt/format.h>

#include "llmft/core/error.h"

namespace llmft {

Precision parse_precision(std::string_view s) {
  if (s == "fp32") return Precision::kFp32;
  if (s == "bf16") return Precision::kBf16;
  throw UsageError(fmt::format("unknown precision '{}'", s), "use fp32 or bf16");
}

std::string to_string(Precision p) { return p == Precision::kBf16 ? "bf16" : "fp32"; }

}  // namespace llmft
