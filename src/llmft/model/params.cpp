#include "llmft/model/params.h"

#include <fmt/format.h>

#include "llmft/core/error.h"

namespace llmft {

namespace {

// The one list of GPT-2's tensors: f(spec, the typed field) for each, in checkpoint order, spec
// holding the Hugging Face name, the GGUF name (llama.cpp's gpt2 architecture), the shape and the
// Conv1D flag. Both the table and bind() walk it, so names, shapes, order and fields cannot drift.
template <typename T, typename F>
void visit(Gpt2Tensors<T>& t, const Gpt2Config& cfg, F&& f) {
  const int64_t C = cfg.C, V = cfg.V;
  auto add = [&](std::string name, std::string gguf, std::vector<int64_t> shape,
                 std::span<T>& field, bool conv1d = false) {
    ParamSpec s;
    s.name = std::move(name);
    s.gguf_name = std::move(gguf);
    s.shape = std::move(shape);
    s.conv1d = conv1d;
    f(std::move(s), field);
  };
  add("wte.weight", "token_embd.weight", {V, C}, t.wte);
  add("wpe.weight", "position_embd.weight", {cfg.maxT, C}, t.wpe);
  t.h.resize(static_cast<size_t>(cfg.L));
  for (int64_t l = 0; l < cfg.L; ++l) {
    BlockTensors<T>& b = t.h[static_cast<size_t>(l)];
    const std::string p = fmt::format("h.{}.", l), g = fmt::format("blk.{}.", l);
    add(p + "ln_1.weight", g + "attn_norm.weight", {C}, b.ln_1.w);
    add(p + "ln_1.bias", g + "attn_norm.bias", {C}, b.ln_1.b);
    add(p + "attn.c_attn.weight", g + "attn_qkv.weight", {C, 3 * C}, b.c_attn.w, true);
    add(p + "attn.c_attn.bias", g + "attn_qkv.bias", {3 * C}, b.c_attn.b);
    add(p + "attn.c_proj.weight", g + "attn_output.weight", {C, C}, b.attn_proj.w, true);
    add(p + "attn.c_proj.bias", g + "attn_output.bias", {C}, b.attn_proj.b);
    add(p + "ln_2.weight", g + "ffn_norm.weight", {C}, b.ln_2.w);
    add(p + "ln_2.bias", g + "ffn_norm.bias", {C}, b.ln_2.b);
    add(p + "mlp.c_fc.weight", g + "ffn_up.weight", {C, 4 * C}, b.c_fc.w, true);
    add(p + "mlp.c_fc.bias", g + "ffn_up.bias", {4 * C}, b.c_fc.b);
    add(p + "mlp.c_proj.weight", g + "ffn_down.weight", {4 * C, C}, b.mlp_proj.w, true);
    add(p + "mlp.c_proj.bias", g + "ffn_down.bias", {C}, b.mlp_proj.b);
  }
  add("ln_f.weight", "output_norm.weight", {C}, t.ln_f.w);
  add("ln_f.bias", "output_norm.bias", {C}, t.ln_f.b);
  if (!cfg.tied) add("lm_head.weight", "output.weight", {V, C}, t.lm_head);
}

}  // namespace

const ParamSpec& TensorTable::add(ParamSpec s) {
  s.numel = 1;
  for (int64_t d : s.shape) s.numel *= d;
  // Every tensor 64-byte aligned inside the flat buffer (16 floats) for vector loads.
  s.offset = (total_ + 15) / 16 * 16;
  total_ = s.offset + s.numel;
  specs_.push_back(std::move(s));
  return specs_.back();
}

int64_t TensorTable::numel() const {
  int64_t n = 0;
  for (const auto& s : specs_) n += s.numel;
  return n;
}

const ParamSpec* TensorTable::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

ParamTable::ParamTable(const Gpt2Config& cfg) : cfg_(cfg) {
  cfg.validate();
  Gpt2Tensors<float> unbound;
  visit(unbound, cfg, [&](ParamSpec s, std::span<float>&) { add(std::move(s)); });
}

std::string ParamTable::file_name(const ParamSpec& s) const {
  return s.name == "lm_head.weight" ? s.name : "transformer." + s.name;
}

const ParamSpec* ParamTable::find_gguf(const std::string& gguf_name) const {
  for (const auto& s : specs())
    if (s.gguf_name == gguf_name) return &s;
  return nullptr;
}

template <typename T, typename At>
Gpt2Tensors<T> ParamTable::bind_impl(const At& at) const {
  Gpt2Tensors<T> t;
  size_t i = 0;
  visit(t, cfg_, [&](const ParamSpec&, std::span<T>& field) {
    const ParamSpec& s = specs()[i++];
    field = std::span<T>(at(s), static_cast<size_t>(s.numel));
  });
  if (cfg_.tied) t.lm_head = t.wte;
  return t;
}

Gpt2Tensors<float> ParamTable::bind(std::span<float> flat) const {
  LLMFT_CHECK(static_cast<int64_t>(flat.size()) >= total(), "flat buffer has {} floats, need {}",
              flat.size(), total());
  return bind_impl<float>([&](const ParamSpec& s) { return flat.data() + s.offset; });
}
Gpt2Tensors<const float> ParamTable::bind(std::span<const float> flat) const {
  LLMFT_CHECK(static_cast<int64_t>(flat.size()) >= total(), "flat buffer has {} floats, need {}",
              flat.size(), total());
  return bind_impl<const float>([&](const ParamSpec& s) { return flat.data() + s.offset; });
}
Gpt2Tensors<float> ParamTable::bind(const std::function<float*(const ParamSpec&)>& at) const {
  return bind_impl<float>(at);
}

}  // namespace llmft
