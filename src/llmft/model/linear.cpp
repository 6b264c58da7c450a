// The model's linear layers; see linear.h.
#include "llmft/model/linear.h"

#include <fmt/format.h>

#include "llmft/core/error.h"

namespace llmft {

namespace k = kernels;

void Linear::refresh_bf16(Pass pass) {
  if (pass == Pass::kTrain) {
    // Rewritten in place once per optimizer step: no allocation, no page faults.
    packed_.reset();
    plain_.resize(static_cast<size_t>(IC_ * OC_));
    k::to_bf16(plain_, w_);
  } else {
    free_bf16();
    // The packed kernel reads inputs in pairs: an odd width would need padded rows.
    if (IC_ % 2 != 0)
      throw Error(fmt::format("bf16 generation needs even layer widths, this layer has {} inputs",
                              IC_),
                  "use --precision fp32 for this model");
    // PackedBf16 takes (K, N) = (inputs, outputs) and the stored layout.
    packed_ = std::make_unique<k::PackedBf16>(w_, IC_, OC_, layout_);
  }
}

void Linear::free_bf16() {
  std::vector<k::bf16>().swap(plain_);  // releases the memory, unlike clear()
  packed_.reset();
}

int64_t Linear::bf16_bytes() const {
  return static_cast<int64_t>(plain_.size()) * 2 + (packed_ ? packed_->bytes() : 0);
}

void Linear::forward(std::span<float> out, Act x, int64_t N, Precision p, Pass pass) const {
  if (p == Precision::kFp32) {
    k::matmul_forward(out.first(N * OC_), x.f.first(N * IC_), w_, {}, N, IC_, OC_, layout_);
  } else if (pass == Pass::kTrain) {
    LLMFT_CHECK(!plain_.empty(), "bf16 training product without its bf16 weights");
    k::matmul_forward(out.first(N * OC_), x.b.first(N * IC_), std::span<const k::bf16>(plain_), {},
                      N, IC_, OC_, layout_);
  } else {
    LLMFT_CHECK(packed_ != nullptr, "bf16 generation product without its packed weights");
    k::bf16_linear(out.first(N * OC_), x.b.first(N * IC_), *packed_, {}, N);
  }
  if (adapter_) adapter_->forward(out, x, N, p, pass);
}

void Linear::backward_input(std::span<float> dx, Act dout, int64_t N, Precision p) const {
  if (p == Precision::kFp32) {
    k::matmul_backward(dx.first(N * IC_), {}, {}, dout.f.first(N * OC_), {}, w_, N, IC_, OC_,
                       layout_);
  } else {
    LLMFT_CHECK(!plain_.empty(), "bf16 backward without its bf16 weights");
    k::matmul_backward(dx.first(N * IC_), {}, {}, {}, dout.b.first(N * OC_), {},
                       std::span<const k::bf16>(plain_), N, IC_, OC_, layout_);
  }
  if (adapter_) adapter_->backward_input(dx, dout, N, p);
}

void Linear::backward_weights(Act dout, Act x, int64_t N, Precision p) const {
  if (!dw_.empty()) {
    if (p == Precision::kFp32) {
      k::matmul_backward({}, dw_, {}, dout.f.first(N * OC_), x.f.first(N * IC_), {}, N, IC_, OC_,
                         layout_);
    } else {
      k::matmul_backward({}, dw_, {}, {}, dout.b.first(N * OC_), x.b.first(N * IC_), {}, N, IC_,
                         OC_, layout_);
    }
  }
  if (adapter_) adapter_->backward_weights(dout, x, N, p);
}

}  // namespace llmft
