// The one description of GPT-2's tensors: a typed structure (Gpt2Tensors: per block ln_1, c_attn,
// attn c_proj, ln_2, c_fc, mlp c_proj; the embeddings, ln_f and the head) and the table that lays
// it out in one flat buffer and maps it to Hugging Face's tensor names (without "transformer.")
// and to llama.cpp's GGUF names for the gpt2 architecture.
// Parameters, gradients and AdamW's m and v share the layout. Linear weights keep GPT-2's Conv1D
// layout [in_features, out_features], so checkpoints need no translation.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "llmft/model/config.h"

namespace llmft {

// T: float or const float.
template <typename T>
struct LayerNormTensors {
  std::span<T> w, b;  // (C), (C)
};
template <typename T>
struct LinearTensors {
  std::span<T> w, b;  // (IC, OC) Conv1D layout, (OC)
};
template <typename T>
struct BlockTensors {
  LayerNormTensors<T> ln_1;
  LinearTensors<T> c_attn;     // attn.c_attn: (C, 3C), (3C)
  LinearTensors<T> attn_proj;  // attn.c_proj: (C, C), (C)
  LayerNormTensors<T> ln_2;
  LinearTensors<T> c_fc;       // mlp.c_fc: (C, 4C), (4C)
  LinearTensors<T> mlp_proj;   // mlp.c_proj: (4C, C), (C)
};
template <typename T>
struct Gpt2Tensors {
  std::span<T> wte;  // (V, C)
  std::span<T> wpe;  // (maxT, C)
  std::vector<BlockTensors<T>> h;  // (L)
  LayerNormTensors<T> ln_f;
  std::span<T> lm_head;  // (V, C) Linear layout; the same span as wte when the head is tied
};

struct ParamSpec {
  std::string name;            // "h.3.attn.c_attn.weight"
  std::string gguf_name;       // llama.cpp's name for it: "blk.3.attn_qkv.weight"
  std::vector<int64_t> shape;  // as stored in a Hugging Face checkpoint
  // A linear weight in Conv1D layout [in, out]; formats in nn.Linear layout [out, in] (GGUF)
  // store it transposed.
  bool conv1d = false;
  int64_t offset = 0;          // in floats, into the flat buffer
  int64_t numel = 0;
};

// Named tensors laid out in one flat float buffer, each 64-byte aligned: the parameters a
// trainer updates (the whole model, or LoRA's adapters), their gradients and AdamW's m and v
// share it, and checkpoints write it tensor by tensor.
class TensorTable {
 public:
  virtual ~TensorTable() = default;
  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t total() const { return total_; }  // floats in the flat buffer (with alignment padding)
  int64_t numel() const;                    // elements (total() without the padding)
  // By name; nullptr when there is no such tensor (the file formats' lookup).
  const ParamSpec* find(const std::string& name) const;
  // The name a tensor has in a safetensors file (checkpoints); the table name by default.
  virtual std::string file_name(const ParamSpec& s) const { return s.name; }

  std::span<float> view(std::span<float> flat, const ParamSpec& s) const {
    return flat.subspan(static_cast<size_t>(s.offset), static_cast<size_t>(s.numel));
  }
  std::span<const float> view(std::span<const float> flat, const ParamSpec& s) const {
    return flat.subspan(static_cast<size_t>(s.offset), static_cast<size_t>(s.numel));
  }

 protected:
  // Appends s (name, shape and the format fields set) with its numel and offset filled in.
  const ParamSpec& add(ParamSpec s);

 private:
  std::vector<ParamSpec> specs_;
  int64_t total_ = 0;
};

// GPT-2's tensors with Hugging Face's names (without "transformer.").
class ParamTable : public TensorTable {
 public:
  explicit ParamTable(const Gpt2Config& cfg);
  const Gpt2Config& config() const { return cfg_; }
  // Checkpoint order: wte, wpe, h.0.ln_1.weight ... h.{L-1}.mlp.c_proj.bias, ln_f, lm_head.
  // In files the body carries "transformer." (as GPT2LMHeadModel saves it), lm_head does not.
  std::string file_name(const ParamSpec& s) const override;
  const ParamSpec* find_gguf(const std::string& gguf_name) const;  // find(), by GGUF name

  // The typed view of a flat buffer laid out by this table (params, grads, m or v).
  Gpt2Tensors<float> bind(std::span<float> flat) const;
  Gpt2Tensors<const float> bind(std::span<const float> flat) const;
  // The typed view of tensors that live wherever `at` says (a buffer laid out otherwise).
  Gpt2Tensors<float> bind(const std::function<float*(const ParamSpec&)>& at) const;

 private:
  template <typename T, typename At>
  Gpt2Tensors<T> bind_impl(const At& at) const;
  Gpt2Config cfg_;
};

}  // namespace llmft
