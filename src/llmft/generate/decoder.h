// Incremental GPT-2 inference with a KV cache for several streams at once. Each call appends new
// tokens to some streams (a whole prompt = prefill, or one token = decode; both may be mixed in
// one call) and returns the logits of each stream's last new token. Must equal the full forward
// over each stream's tokens (tests/unit/generate/test_decoder.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "llmft/model/config.h"
#include "llmft/model/params.h"

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
  // B x L x 2 x Tcap x C floats. threads: OpenMP/BLAS threads (0 = leave as is).
  Decoder(const Gpt2Config& cfg, std::span<const float> params, int64_t B, int64_t Tcap,
          int threads = 0);

  int64_t streams() const { return B_; }
  int64_t capacity() const { return Tcap_; }
  int64_t length(int64_t stream) const { return len_[static_cast<size_t>(stream)]; }
  // Forgets a stream's tokens (its slot can take a new prompt).
  void reset(int64_t stream);
  // Appends each chunk's tokens to its stream. logits: (chunks.size(), V), row i for chunk i's
  // last token. A stream may appear at most once per call. Throws InternalError when a stream
  // would exceed capacity() (the caller crops, see generate.h).
  void forward(std::span<const DecodeChunk> chunks, std::span<float> logits);
  // Bytes held by the KV cache and the activation arena.
  int64_t memory_bytes() const;

 private:
  struct Layer {
    std::span<const float> ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fcprojw,
        fcprojb;
  };
  // One pass over at most Nmax_ rows.
  void forward_rows(std::span<const DecodeChunk> chunks);
  void attention(int64_t l, int64_t N);
  float* kv(int64_t stream, int64_t l, int kind) {  // (NH, Tcap, HS) of keys (0) or values (1)
    return cache_.data() + ((stream * L_ + l) * 2 + kind) * Tcap_ * C_;
  }

  Gpt2Config cfg_;
  int64_t B_, Tcap_, C_, L_, NH_, HS_, V_, Nmax_;
  std::span<const float> wte_, wpe_, lnfw_, lnfb_, head_;
  std::vector<Layer> layers_;
  std::vector<int64_t> len_;   // (B) tokens held per stream
  std::vector<float> cache_;   // (B, L, 2, NH, Tcap, HS)
  // Activation arena for Nmax_ rows: x (N,C) ln (N,C) qkv (N,3C) att (N,C) h (N,4C) g (N,4C),
  // mean/rstd (N), scores (threads, Tcap).
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
