// Causal self-attention of new rows over a KV cache (generation): row r is position pos[r] of
// stream stream[r]; its key and value are stored at that position, then it attends to the
// stream's cached positions 0..pos[r]. The same softmax(q k^T / sqrt(HS)) v as the flash kernel
// over packed sequences (attention.h), without dropout.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "llmft/model/kernels/bf16.h"

namespace llmft::kernels {

// Keys and values of B streams x L layers x Tcap positions, position-major per (stream, layer):
// (B, L, 2, Tcap, C), fp32 or bf16. Sized up front and left uninitialised (a position is written
// before it is read), so pages are touched only as streams grow.
class KvCache {
 public:
  KvCache(int64_t B, int64_t L, int64_t Tcap, int64_t C, bool use_bf16);
  int64_t streams() const { return B_; }
  int64_t capacity() const { return Tcap_; }
  bool is_bf16() const { return b_ != nullptr; }
  int64_t bytes() const { return B_ * L_ * 2 * Tcap_ * C_ * (is_bf16() ? 2 : 4); }
  // (Tcap, C) keys (kind 0) or values (kind 1) of one stream and layer.
  template <typename T>
  T* at(int64_t stream, int64_t l, int kind) const;

 private:
  int64_t B_, L_, Tcap_, C_;
  std::unique_ptr<float[]> f_;
  std::unique_ptr<bf16[]> b_;
};

// Floats of scratch bias_attention_cached_forward needs with `threads` OpenMP threads.
int64_t attention_cached_scratch_size(int64_t threads, int64_t NH, int64_t Tcap);

// qkv += bias (in place, as bias_attention_flash_forward), the rows' keys and values stored in
// layer l of the cache, then out = attention over each row's stream.
// out: (N, C)   out_bf: (N, C) out rounded to bf16 (as to_bf16) or empty   qkv: (N, 3C) in/out
// bias: (3C)   stream, pos: (N)   scratch: (attention_cached_scratch_size(omp_get_max_threads()))
// A row's result depends only on its stream's cached values, never on the other rows.
void bias_attention_cached_forward(std::span<float> out, std::span<bf16> out_bf,
                                   std::span<float> qkv, std::span<const float> bias,
                                   const KvCache& cache, int64_t l,
                                   std::span<const int64_t> stream, std::span<const int32_t> pos,
                                   std::span<float> scratch, int64_t N, int64_t C, int64_t NH);

}  // namespace llmft::kernels
