// Numeric precision of the model's matrix products. fp32: everything in float. bf16: matrix
// products take bf16 inputs (weights copied to bf16 once per optimizer step, activations rounded
// to nearest even) and accumulate in fp32; master weights, gradients, optimizer state, LayerNorm,
// softmax and the loss stay fp32.
#pragma once

#include <string>
#include <string_view>

namespace llmft {

enum class Precision { kFp32, kBf16 };

// "fp32" or "bf16"; throws UsageError for anything else.
Precision parse_precision(std::string_view s);
std::string to_string(Precision p);

}  // namespace llmft
