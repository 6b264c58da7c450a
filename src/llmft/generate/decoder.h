// Incremental GPT-2 inference with a KV cache for several streams at once. Each call appends new
// tokens to some streams (a whole prompt = prefill, or one token = decode; both may be mixed in
// one call) and returns the logits of each stream's last new token, through the model's own
// forward (Gpt2::forward_cached): equal to the full forward over each stream's tokens
// (tests/unit/generate/test_decoder.cpp). In bf16 (precision.h) the products read the model's
// packed bf16 weights and rounded activations, and the KV cache holds bf16; a row's result then
// depends only on its stream's tokens, bit for bit, never on the other rows computed with it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "llmft/model/gpt2.h"
#include "llmft/model/kernels/attention_cached.h"
#include "llmft/model/precision.h"

namespace llmft {

// New tokens for one stream, appended after the tokens it already holds.
struct DecodeChunk {
  int64_t stream = 0;
  std::span<const int32_t> tokens;  // non-empty
};

class Decoder {
 public:
  // model: borrowed, must outlive the Decoder (in bf16 it builds the packed weight copies the
  // first time it is used). B: streams; Tcap: tokens each stream can hold (<= cfg.maxT); the
  // cache is sized up front: B x L x 2 x Tcap x C values (fp32, or bf16 in bf16).
  Decoder(Gpt2& model, int64_t B, int64_t Tcap, Precision precision = Precision::kFp32);

  int64_t streams() const { return cache_.streams(); }
  int64_t capacity() const { return cache_.capacity(); }
  Precision precision() const { return precision_; }
  int64_t length(int64_t stream) const { return len_[static_cast<size_t>(stream)]; }
  // Forgets a stream's tokens (its slot can take a new prompt).
  void reset(int64_t stream);
  // Appends each chunk's tokens to its stream. logits: (chunks.size(), V), row i for chunk i's
  // last token. A stream may appear at most once per call. Throws InternalError when a stream
  // would exceed capacity() (the caller crops, see generate.h).
  void forward(std::span<const DecodeChunk> chunks, std::span<float> logits);
  // Bytes held by the KV cache, the activation arena and the model's bf16 weight copy.
  int64_t memory_bytes() const;
  // What one more stream of Tcap tokens adds: its KV cache and its row of logits.
  static int64_t stream_bytes(const Gpt2Config& cfg, int64_t Tcap, Precision precision);

 private:
  void check(std::span<const DecodeChunk> chunks, std::span<float> logits);
  // One pass over at most Nmax_ rows; fills logits for the chunks that end in it.
  void pass(std::span<const DecodeChunk> pass, std::span<const int64_t> out_row,
            std::span<float> logits);

  Gpt2& model_;
  Precision precision_;
  int64_t C_, V_, Nmax_;
  kernels::KvCache cache_;
  Activations acts_;           // one layer's worth for Nmax_ rows
  std::vector<int64_t> len_;   // (B) tokens held per stream
  std::vector<float> scores_;  // the cached attention's scratch
  // Per pass: token, position and stream of each row; the final hidden rows
  // (B, C), their bf16 rounding, and their logits (B, V).
  std::vector<int32_t> ids_, pos_;
  std::vector<int64_t> row_stream_;
  std::vector<float> last_, head_out_;
  std::vector<kernels::bf16> last_bf_;
  std::vector<char> seen_;
  std::vector<size_t> done_;
  std::vector<DecodeChunk> pass_;
  std::vector<int64_t> out_row_;
};

}  // namespace llmft
