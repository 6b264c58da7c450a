// Continuous batching over one KV-cached Decoder (decoder.h): sequences join at any step (their
// prompt is prefilled in the same decoder call as the others' next tokens) and leave at once when
// they finish or are cancelled, freeing their slot for the next. generate() runs a fixed list of
// prompts through it; `llmft serve` feeds it requests as they arrive. A sequence's tokens depend
// only on its prompt and options, never on which others share its steps (rows are independent).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "llmft/generate/decoder.h"
#include "llmft/generate/sampler.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/precision.h"

namespace llmft {

struct SequenceOptions {
  int64_t max_new_tokens = 256;  // >= 1
  SamplerOptions sampler;        // the sequence's own RNG is seeded with sampler.seed
  bool stop_at_eos = true;       // end at <|endoftext|> (not emitted)
  int32_t eos_id = 50256;
};

enum class FinishReason { kNone, kEos, kLength };

// Counts over a Batcher's life (generate.h reports them per call).
struct BatchCounts {
  int64_t prompt_tokens = 0;  // rows run through the model to (re)fill caches
  int64_t new_tokens = 0;     // tokens emitted (without a stopping <|endoftext|>)
};

class Batcher {
 public:
  // slots: sequences decoded together; Tcap: tokens a slot's cache holds (<= maxT). A sequence
  // longer than Tcap continues as the textbook loop does: its last Tcap tokens are refed from
  // position 0 at every step.
  Batcher(Gpt2& model, int64_t slots, int64_t Tcap, Precision precision = Precision::kFp32);

  int64_t slots() const { return static_cast<int64_t>(seqs_.size()); }
  int64_t active() const { return active_; }
  bool has_free_slot() const { return active_ < slots(); }
  // Starts a sequence in the lowest free slot and returns it. Throws Error for an empty prompt or
  // an id outside the vocabulary, InternalError when no slot is free.
  int64_t add(std::vector<int32_t> prompt, const SequenceOptions& opts);
  // Ends the sequence in `slot` now (no event); the slot is free at once.
  void cancel(int64_t slot);
  // Tokens emitted so far by the sequence in `slot`.
  int64_t emitted(int64_t slot) const { return seqs_[static_cast<size_t>(slot)].emitted; }

  struct Event {
    int64_t slot = -1;
    int32_t token = -1;  // the new token, -1 when none (the sequence ended at <|endoftext|>)
    FinishReason finish = FinishReason::kNone;  // not kNone: the slot is free again
  };
  // One decoder call over every active sequence; each gets one event, in slot order. Nothing to
  // do (no active sequence) returns an empty list.
  const std::vector<Event>& step();
  const BatchCounts& counts() const { return counts_; }

 private:
  struct Seq {
    bool active = false;
    std::vector<int32_t> tokens;  // prompt + emitted, uncropped
    int64_t cached = 0;           // tokens of the tail held in the decoder (0 = needs prefill)
    int64_t emitted = 0;
    SequenceOptions opts;
    Sampler sampler{SamplerOptions{}};
  };
  std::span<const int32_t> next_feed(Seq& s, int64_t slot);

  Decoder dec_;
  int64_t V_, Tcap_, active_ = 0;
  std::vector<Seq> seqs_;
  BatchCounts counts_;
  std::vector<DecodeChunk> chunks_;
  std::vector<int64_t> chunk_slot_;
  std::vector<float> logits_;
  std::vector<int32_t> sampled_;  // per chunk, drawn in parallel
  std::vector<Event> events_;
};

// Throws Error naming `what` (e.g. "prompt 3") when ids is empty or holds an id outside [0, V).
void check_prompt(std::span<const int32_t> ids, int64_t V, const std::string& what);

}  // namespace llmft
