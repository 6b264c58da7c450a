#include "llmft/model/params.h"

#include <fmt/format.h>

#include "llmft/core/error.h"

namespace llmft {

namespace {

// The one list of GPT-2's tensors: f(file name, shape, the typed field) for each, in checkpoint
// order. Both the table and bind() walk it, so the names, shapes, order and fields cannot drift.
template <typename T, typename F>
void visit(Gpt2Tensors<T>& t, const Gpt2Config& cfg, F&& f) {
  const int64_t C = cfg.C, V = cfg.V;
  f("wte.weight", {V, C}, t.wte);
  f("wpe.weight", {cfg.maxT, C}, t.wpe);
  t.h.resize(static_cast<size_t>(cfg.L));
  for (int64_t l = 0; l < cfg.L; ++l) {
    BlockTensors<T>& b = t.h[static_cast<size_t>(l)];
    const std::string p = fmt::format("h.{}.", l);
    f(p + "ln_1.weight", {C}, b.ln_1.w);
    f(p + "ln_1.bias", {C}, b.ln_1.b);
    f(p + "attn.c_attn.weight", {C, 3 * C}, b.c_attn.w);
    f(p + "attn.c_attn.bias", {3 * C}, b.c_attn.b);
    f(p + "attn.c_proj.weight", {C, C}, b.attn_proj.w);
    f(p + "attn.c_proj.bias", {C}, b.attn_proj.b);
    f(p + "ln_2.weight", {C}, b.ln_2.w);
    f(p + "ln_2.bias", {C}, b.ln_2.b);
    f(p + "mlp.c_fc.weight", {C, 4 * C}, b.c_fc.w);
    f(p + "mlp.c_fc.bias", {4 * C}, b.c_fc.b);
    f(p + "mlp.c_proj.weight", {4 * C, C}, b.mlp_proj.w);
    f(p + "mlp.c_proj.bias", {C}, b.mlp_proj.b);
  }
  f("ln_f.weight", {C}, t.ln_f.w);
  f("ln_f.bias", {C}, t.ln_f.b);
  if (!cfg.tied) f("lm_head.weight", {V, C}, t.lm_head);
}

}  // namespace

const ParamSpec& TensorTable::add(std::string name, std::vector<int64_t> shape) {
  ParamSpec s;
  s.name = std::move(name);
  s.numel = 1;
  for (int64_t d : shape) s.numel *= d;
  s.shape = std::move(shape);
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
  visit(unbound, cfg, [&](std::string name, std::vector<int64_t> shape, std::span<float>&) {
    add(std::move(name), std::move(shape));
  });
}

std::string ParamTable::file_name(const ParamSpec& s) const {
  return s.name == "lm_head.weight" ? s.name : "transformer." + s.name;
}

template <typename T>
Gpt2Tensors<T> ParamTable::bind_impl(std::span<T> flat) const {
  LLMFT_CHECK(static_cast<int64_t>(flat.size()) >= total(), "flat buffer has {} floats, need {}",
              flat.size(), total());
  Gpt2Tensors<T> t;
  size_t i = 0;
  visit(t, cfg_, [&](const std::string&, const std::vector<int64_t>&, std::span<T>& field) {
    const ParamSpec& s = specs()[i++];
    field = flat.subspan(static_cast<size_t>(s.offset), static_cast<size_t>(s.numel));
  });
  if (cfg_.tied) t.lm_head = t.wte;
  return t;
}

Gpt2Tensors<float> ParamTable::bind(std::span<float> flat) const { return bind_impl(flat); }
Gpt2Tensors<const float> ParamTable::bind(std::span<const float> flat) const {
  return bind_impl(flat);
}

}  // namespace llmft
