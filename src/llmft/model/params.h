// The parameter table: the one list of GPT-2's tensors. Allocation, checkpoint names, the
// optimizer and the tests all read it. Names and shapes are Hugging Face's GPT-2 names
// (without the "transformer." prefix), and linear weights keep GPT-2's Conv1D layout
// [in_features, out_features], so checkpoints need no translation.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/model/config.h"

namespace llmft {

struct ParamSpec {
  std::string name;            // "h.3.attn.c_attn.weight"
  std::vector<int64_t> shape;  // as stored in a Hugging Face checkpoint
  int64_t offset = 0;          // in floats, into the flat parameter buffer
  int64_t numel = 0;
};

class ParamTable {
 public:
  explicit ParamTable(const Gpt2Config& cfg);
  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t total() const { return total_; }  // floats in the flat buffer
  // nullptr when there is no such tensor.
  const ParamSpec* find(const std::string& name) const;
  // Layer l's tensor with this name suffix ("attn.c_attn.weight"), found without building a
  // string: the training step uses it, and allocates nothing.
  const ParamSpec& layer(int64_t l, std::string_view suffix) const;
  const Gpt2Config& config() const { return cfg_; }

  // Views into a flat buffer laid out by this table (params, grads and Adam m/v all share it).
  std::span<float> view(std::span<float> flat, const ParamSpec& s) const {
    return flat.subspan(static_cast<size_t>(s.offset), static_cast<size_t>(s.numel));
  }
  std::span<const float> view(std::span<const float> flat, const ParamSpec& s) const {
    return flat.subspan(static_cast<size_t>(s.offset), static_cast<size_t>(s.numel));
  }

 private:
  void add(std::string name, std::vector<int64_t> shape);
  Gpt2Config cfg_;
  std::vector<ParamSpec> specs_;
  int64_t total_ = 0;
};

}  // namespace llmft
