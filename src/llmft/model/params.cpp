#include "llmft/model/params.h"

#include <fmt/format.h>

namespace llmft {

ParamTable::ParamTable(const Gpt2Config& cfg) : cfg_(cfg) {
  cfg.validate();
  const int64_t C = cfg.C, V = cfg.V;
  add("wte.weight", {V, C});
  add("wpe.weight", {cfg.maxT, C});
  for (int64_t l = 0; l < cfg.L; ++l) {
    const std::string h = fmt::format("h.{}.", l);
    add(h + "ln_1.weight", {C});
    add(h + "ln_1.bias", {C});
    add(h + "attn.c_attn.weight", {C, 3 * C});
    add(h + "attn.c_attn.bias", {3 * C});
    add(h + "attn.c_proj.weight", {C, C});
    add(h + "attn.c_proj.bias", {C});
    add(h + "ln_2.weight", {C});
    add(h + "ln_2.bias", {C});
    add(h + "mlp.c_fc.weight", {C, 4 * C});
    add(h + "mlp.c_fc.bias", {4 * C});
    add(h + "mlp.c_proj.weight", {4 * C, C});
    add(h + "mlp.c_proj.bias", {C});
  }
  add("ln_f.weight", {C});
  add("ln_f.bias", {C});
  if (!cfg.tied) add("lm_head.weight", {V, C});
}

void ParamTable::add(std::string name, std::vector<int64_t> shape) {
  ParamSpec s;
  s.name = std::move(name);
  s.numel = 1;
  for (int64_t d : shape) s.numel *= d;
  s.shape = std::move(shape);
  // Keep every tensor 64-byte aligned inside the flat buffer (16 floats) for vector loads.
  s.offset = (total_ + 15) / 16 * 16;
  total_ = s.offset + s.numel;
  specs_.push_back(std::move(s));
}

const ParamSpec* ParamTable::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace llmft
