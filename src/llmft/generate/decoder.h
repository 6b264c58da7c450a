// Incremental GPT-2 inference with a KV cache for several streams at once. Each call appends new
// tokens to some streams (a whole prompt = prefill, or one token = decode; both may be mixed in
// one call) and returns the logits of each stream's last new token. Must equal the full forward
// over each stream's tokens (tests/unit/generate/test_decoder.cpp). In bf16 (precision.h) the
// matrix products take bf16 weights (copied once, at construction) and rounded activations, and
// the KV cache holds bf16; a row's result then depends only on its stream's tokens, bit for bit,
// never on the other rows computed with it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "llmft/generate/packed_bf16.h"
#include "llmft/model/config.h"
#include "llmft/model/params.h"
#include "llmft/model/precision.h"

namespace llmft {

// New tokens for one stream, appended after the tokens it already holds.
struct DecodeChunk {
  int64_t stream = 0;
  std::span<const int32_t> tokens;  // non-empty
};

class Decoder {
 public:
  // params: the flat buffer laid out by ParamTable(cfg) (borrowed, must outlive the Decoder).
  // B: streams; Tcap: tokens each stream can hold (<= cfg.maxT), the cache is sized up front:
  // B x L x 2 x Tcap x C values (fp32, or bf16 in bf16). threads: OpenMP/BLAS threads (0 = leave
  // as is). bf16 packs a bf16 copy of the matrices (wte stays fp32 for the embedding lookup).
  Decoder(const Gpt2Config& cfg, std::span<const float> params, int64_t B, int64_t Tcap,
          int threads = 0, Precision precision = Precision::kFp32);

  int64_t streams() const { return B_; }
  int64_t capacity() const { return Tcap_; }
  Precision precision() const { return precision_; }
  int64_t length(int64_t stream) const { return len_[static_cast<size_t>(stream)]; }
  // Forgets a stream's tokens (its slot can take a new prompt).
  void reset(int64_t stream);
  // Appends each chunk's tokens to its stream. logits: (chunks.size(), V), row i for chunk i's
  // last token. A stream may appear at most once per call. Throws InternalError when a stream
  // would exceed capacity() (the caller crops, see generate.h).
  void forward(std::span<const DecodeChunk> chunks, std::span<float> logits);
  // Bytes held by the KV cache, the activation arena and the bf16 weight copy.
  int64_t memory_bytes() const;

 private:
  struct Layer {
    std::span<const float> ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fcprojw,
        fcprojb;
  };
  struct PackedLayer {  // bf16 copies, see packed_bf16.h
    PackedBf16 qkvw, projw, fcw, fcprojw;
  };
  // One pass over at most Nmax_ rows.
  void forward_rows(std::span<const DecodeChunk> chunks);
  // forward_rows' transformer blocks in bf16 (x_ in, x_ out).
  void layers_bf16(int64_t N);
  // out (N, OC) = inp (N, IC) @ W + bias in the decoder's precision (packed: W's bf16 copy).
  void linear(std::span<float> out, std::span<const float> inp, std::span<const float> w,
              const PackedBf16& packed, std::span<const float> bias, int64_t N, int64_t IC,
              int64_t OC, kernels::WeightLayout layout = kernels::WeightLayout::kInOut);
  template <typename T>
  void attention(T* cache, int64_t l, int64_t N);
  template <typename T>  // (Tcap, C) of keys (0) or values (1)
  T* kv(T* cache, int64_t stream, int64_t l, int kind) const {
    return cache + ((stream * L_ + l) * 2 + kind) * Tcap_ * C_;
  }

  Gpt2Config cfg_;
  int64_t B_, Tcap_, C_, L_, NH_, HS_, V_, Nmax_;
  Precision precision_;
  std::span<const float> wte_, wpe_, lnfw_, lnfb_, head_;
  std::vector<Layer> layers_;
  std::vector<PackedLayer> packed_;  // bf16 only
  PackedBf16 head_packed_;           // bf16 only
  std::vector<int64_t> len_;   // (B) tokens held per stream
  // (B, L, 2, Tcap, C): cache_ in fp32, cache16_ in bf16. Left uninitialised (a position
  // is written before it is read), so pages are touched only as streams grow.
  int64_t cache_values_ = 0;
  std::unique_ptr<float[]> cache_;
  std::unique_ptr<kernels::bf16[]> cache16_;
  std::vector<kernels::bf16> abf_;  // (Nmax, bf16_row_stride(4C)) rounded matmul inputs (bf16)
  // Activation arena for Nmax_ rows: x (N,C) ln (N,C) qkv (N,3C) att (N,C) h (N,4C) g (N,4C),
  // mean/rstd (N), scores (threads, NH, Tcap).
  std::vector<float> x_, ln_, qkv_, att_, h_, g_, mean_, rstd_, scores_, last_;
  std::vector<int32_t> ids_, pos_;
  std::vector<int64_t> row_stream_, row_pos_;
  // forward()'s per-call state, sized up front: head_out_ (B, V) logits of the wanted rows.
  std::vector<float> head_out_;
  std::vector<char> seen_;
  std::vector<size_t> done_;
  std::vector<DecodeChunk> pass_;
  std::vector<int64_t> out_row_, want_;
};

}  // namespace llmft
