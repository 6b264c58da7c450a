// A linear layer of the model, the one place a matrix product is chosen: fp32 or bf16, training
// (batched products whose backward exists) or generation (batch-invariant products), and the
// place a LoRA adapter adds its term in forward and backward.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/model/kernels/packed_bf16.h"
#include "llmft/model/precision.h"

namespace llmft {

// Which products a forward runs. kTrain: training and evaluation (sgemm; bf16 through oneDNN on a
// plain bf16 copy of the weights, which the backward reads too). kDecode: generation (few rows:
// register tiles that stream the weights; bf16 on packed weights, each row's result independent
// of the rows computed with it, so a cached step equals a full recompute bit for bit).
enum class Pass { kTrain, kDecode };

// An activation as the products read it: f its fp32 values, b its bf16 rounding (bf16 only; in
// bf16 f may be empty where only the rounding is kept).
struct Act {
  std::span<const float> f;
  std::span<const kernels::bf16> b;
};

class LoraLayer;  // lora.h: the adapter a linear layer may carry

// y (N, OC) = x (N, IC) @ W. W: (IC, OC) (GPT-2's Conv1D), or (OC, IC) for the output head
// (kOutIn). The bias is not added here: the kernel after each product adds it in its own pass.
class Linear {
 public:
  Linear() = default;
  Linear(std::span<const float> w, int64_t IC, int64_t OC, kernels::WeightLayout layout)
      : w_(w), IC_(IC), OC_(OC), layout_(layout) {}
  int64_t in() const { return IC_; }
  int64_t out() const { return OC_; }
  std::span<const float> weight() const { return w_; }

  // Its gradient buffer (IC * OC); empty: frozen (no weight-gradient product).
  void set_grad(std::span<float> dw) { dw_ = dw; }
  // A LoRA adapter beside the layer (lora.h), or nullptr. Forward and backward include its term.
  void set_adapter(LoraLayer* a) { adapter_ = a; }
  LoraLayer* adapter() const { return adapter_; }

  // The bf16 copies: kTrain products read a plain (IC, OC) copy, kDecode products a packed one.
  // Kept one at a time (the other is freed): `refresh` rebuilds the one `pass` needs from W.
  void refresh_bf16(Pass pass);
  void free_bf16();
  // A frozen layer kept in bf16 only: the plain bf16 copy becomes the weight and W is no longer
  // read (the caller releases it). fp32 products are refused from then on.
  void keep_bf16_only();
  bool bf16_only() const { return bf16_only_; }
  int64_t bf16_bytes() const;
  std::span<const kernels::bf16> plain_bf16() const { return plain_; }

  // out (N, OC) = x @ W (+ the adapter's term). bf16 reads x.b and the copy for `pass`.
  void forward(std::span<float> out, Act x, int64_t N, Precision p, Pass pass) const;
  // dx (N, IC) += dout @ W^T (and the adapter's input gradient).
  void backward_input(std::span<float> dx, Act dout, int64_t N, Precision p) const;
  // dW += x^T @ dout unless frozen (and the adapter's parameter gradients).
  void backward_weights(Act dout, Act x, int64_t N, Precision p) const;

 private:
  std::span<const float> w_;
  std::span<float> dw_;
  int64_t IC_ = 0, OC_ = 0;
  kernels::WeightLayout layout_ = kernels::WeightLayout::kInOut;
  std::vector<kernels::bf16> plain_;
  std::unique_ptr<kernels::PackedBf16> packed_;
  LoraLayer* adapter_ = nullptr;
  bool bf16_only_ = false;
};

}  // namespace llmft
