// The model's linear layers; see linear.h.
#include "llmft/model/linear.h"

#include <fmt/format.h>

#include "llmft/core/error.h"
#include "llmft/model/lora.h"

namespace llmft {

namespace k = kernels;

void Linear::refresh_bf16(Pass pass) {
  if (bf16_only_) {
    // The plain copy is the weight; generation also needs the packed one, built from it (and
    // freed again when training resumes).
    if (pass == Pass::kTrain) packed_.reset();
    if (pass == Pass::kDecode && !packed_) {
      std::vector<float> w(plain_.size());
      k::from_bf16(w, plain_);
      packed_ = std::make_unique<k::PackedBf16>(w, IC_, OC_, layout_);
    }
    return;
  }
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
  packed_.reset();
  if (!bf16_only_) std::vector<k::bf16>().swap(plain_);  // releases the memory, unlike clear()
}

void Linear::keep_bf16_only() {
  if (bf16_only_) return;
  refresh_bf16(Pass::kTrain);
  w_ = {};
  bf16_only_ = true;
}

int64_t Linear::bf16_bytes() const {
  return static_cast<int64_t>(plain_.size()) * 2 + (packed_ ? packed_->bytes() : 0);
}

namespace {
void require_fp32_weights(bool bf16_only) {
  if (bf16_only)
    throw Error("this model keeps its frozen weights in bf16 only",
                "run it with --precision bf16");
}
}  // namespace

void Linear::forward(std::span<float> out, Act x, int64_t N, Precision p, Pass pass) const {
  if (p == Precision::kFp32) {
    require_fp32_weights(bf16_only_);
    k::matmul_forward(out.first(N * OC_), x.f.first(N * IC_), w_, {}, N, IC_, OC_, layout_);
  } else if (pass == Pass::kTrain) {
    LLMFT_CHECK(!plain_.empty(), "bf16 training product without its bf16 weights");
    k::matmul_forward(out.first(N * OC_), x.b.first(N * IC_), std::span<const k::bf16>(plain_), {},
                      N, IC_, OC_, layout_);
  } else {
    LLMFT_CHECK(packed_ != nullptr, "bf16 generation product without its packed weights");
    k::bf16_linear(out.first(N * OC_), x.b.first(N * IC_), *packed_, {}, N);
  }
  if (adapter_) adapter_->forward(out, x, N);
}

void Linear::backward_input(std::span<float> dx, Act dout, int64_t N, Precision p) const {
  if (p == Precision::kFp32) {
    require_fp32_weights(bf16_only_);
    k::matmul_backward(dx.first(N * IC_), {}, {}, dout.f.first(N * OC_), {}, w_, N, IC_, OC_,
                       layout_);
  } else {
    LLMFT_CHECK(!plain_.empty(), "bf16 backward without its bf16 weights");
    k::matmul_backward(dx.first(N * IC_), {}, {}, {}, dout.b.first(N * OC_), {},
                       std::span<const k::bf16>(plain_), N, IC_, OC_, layout_);
  }
  if (adapter_) adapter_->backward_input(dx, dout, N);
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
  if (adapter_) adapter_->backward_weights(dout, x, N);
}

}  // namespace llmft
