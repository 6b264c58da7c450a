#include "llmft/model/params.h"

#include <fmt/format.h>

#include <iterator>

#include "llmft/core/error.h"

namespace llmft {

namespace {
// The tensors of one block in checkpoint order; shape entries are multiples of C (0 = unused).
struct LayerTensor {
  std::string_view suffix;
  int64_t shape[2];
};
constexpr LayerTensor kLayerTensors[] = {
    {"ln_1.weight", {1, 0}},        {"ln_1.bias", {1, 0}},
    {"attn.c_attn.weight", {1, 3}}, {"attn.c_attn.bias", {3, 0}},
    {"attn.c_proj.weight", {1, 1}}, {"attn.c_proj.bias", {1, 0}},
    {"ln_2.weight", {1, 0}},        {"ln_2.bias", {1, 0}},
    {"mlp.c_fc.weight", {1, 4}},    {"mlp.c_fc.bias", {4, 0}},
    {"mlp.c_proj.weight", {4, 1}},  {"mlp.c_proj.bias", {1, 0}},
};
constexpr int64_t kFirstLayerSpec = 2;  // after wte and wpe
constexpr int64_t kTensorsPerLayer = std::size(kLayerTensors);
}  // namespace

ParamTable::ParamTable(const Gpt2Config& cfg) : cfg_(cfg) {
  cfg.validate();
  const int64_t C = cfg.C, V = cfg.V;
  add("wte.weight", {V, C});
  add("wpe.weight", {cfg.maxT, C});
  for (int64_t l = 0; l < cfg.L; ++l) {
    for (const auto& t : kLayerTensors) {
      std::vector<int64_t> shape;
      for (int64_t d : t.shape) {
        if (d != 0) shape.push_back(d * C);
      }
      add(fmt::format("h.{}.{}", l, t.suffix), std::move(shape));
    }
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

const ParamSpec& ParamTable::layer(int64_t l, std::string_view suffix) const {
  LLMFT_CHECK(l >= 0 && l < cfg_.L, "layer {} of {}", l, cfg_.L);
  for (int64_t k = 0; k < kTensorsPerLayer; ++k) {
    if (kLayerTensors[k].suffix == suffix) return specs_[kFirstLayerSpec + l * kTensorsPerLayer + k];
  }
  throw InternalError(fmt::format("no layer tensor named '{}'", suffix));
}

const ParamSpec* ParamTable::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace llmft
