// LoRA adapters; see lora.h.
#include "llmft/model/lora.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "llmft/core/error.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/dropout.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/model/linear.h"

namespace llmft {

using kernels::WeightLayout;

// ---- Configuration ----------------------------------------------------------------------------

const char* lora_module(LoraTarget t) {
  switch (t) {
    case LoraTarget::kCAttn: return "attn.c_attn";
    case LoraTarget::kAttnProj: return "attn.c_proj";
    case LoraTarget::kCFc: return "mlp.c_fc";
    case LoraTarget::kMlpProj: return "mlp.c_proj";
    case LoraTarget::kHead: return "lm_head";
  }
  return "?";
}

std::vector<LoraTarget> parse_lora_targets(const std::string& list) {
  using T = LoraTarget;
  std::vector<T> out;
  auto add = [&](T t) {
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  };
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    std::string name = list.substr(pos, comma - pos);
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    pos = comma + 1;
    if (name.empty()) continue;
    if (name == "c_attn" || name == "attn.c_attn") add(T::kCAttn);
    else if (name == "attn.c_proj") add(T::kAttnProj);
    else if (name == "c_fc" || name == "mlp.c_fc") add(T::kCFc);
    else if (name == "mlp.c_proj") add(T::kMlpProj);
    else if (name == "c_proj") add(T::kAttnProj), add(T::kMlpProj);
    else if (name == "head" || name == "lm_head") add(T::kHead);
    else if (name == "all") {
      for (T t : kBlockTargets) add(t);
      add(T::kHead);
    } else {
      throw UsageError(fmt::format("unknown LoRA target '{}'", name),
                       "targets are c_attn, attn.c_proj, c_fc, mlp.c_proj, head (or c_proj for "
                       "both projections, all for every one)");
    }
  }
  if (out.empty()) throw UsageError("no LoRA targets given", "for example --lora-targets c_attn");
  std::sort(out.begin(), out.end());
  return out;
}

float LoraConfig::scale() const {
  const double r = static_cast<double>(rank);
  return static_cast<float>(rslora ? alpha / std::sqrt(r) : alpha / r);
}

bool LoraConfig::targets_layer(int64_t l) const {
  return layers.empty() || std::find(layers.begin(), layers.end(), l) != layers.end();
}

bool LoraConfig::has(LoraTarget t) const {
  return std::find(targets.begin(), targets.end(), t) != targets.end();
}

void LoraConfig::validate(const Gpt2Config& cfg) const {
  if (rank < 1 || rank > 4096)
    throw UsageError(fmt::format("LoRA rank {} is outside 1..4096", rank));
  if (!(alpha > 0) || !std::isfinite(alpha))
    throw UsageError(fmt::format("LoRA alpha {} must be a positive number", alpha));
  if (!(dropout >= 0 && dropout < 1))
    throw UsageError(fmt::format("LoRA dropout {} is outside [0, 1)", dropout));
  if (targets.empty()) throw UsageError("no LoRA targets");
  for (int64_t l : layers)
    if (l < 0 || l >= cfg.L)
      throw UsageError(fmt::format("LoRA layer {} does not exist (the model has {})", l, cfg.L));
}

// ---- One adapter ------------------------------------------------------------------------------

LoraLayer::LoraLayer(std::span<float> A, std::span<float> B, int64_t IC, int64_t OC, int64_t r,
                     float scale, float dropout, std::vector<float>* scratch)
    : A_(A), B_(B), IC_(IC), OC_(OC), r_(r), scale_(scale), p_(dropout), scratch_(scratch) {}

std::span<const float> LoraLayer::input(const Act& x, int64_t N) {
  const int64_t n = N * IC_;
  if (!drop_on_ && !x.f.empty()) return x.f.first(n);
  if (static_cast<int64_t>(scratch_->size()) < n) scratch_->resize(static_cast<size_t>(n));
  const auto xs = std::span<float>(*scratch_).first(static_cast<size_t>(n));
  if (!x.f.empty()) std::copy_n(x.f.data(), n, xs.data());
  else kernels::from_bf16(xs, x.b.first(n));
  if (drop_on_) kernels::dropout_forward(xs, xs, p_, seed_, n);
  return xs;
}

std::span<const float> LoraLayer::project(const Act& x, int64_t N) {
  // u = scale * drop(x) @ A^T                                               (N, r)
  u_.resize(static_cast<size_t>(N * r_));
  kernels::matmul_forward(u_, input(x, N), A_, {}, N, IC_, r_, WeightLayout::kOutIn);
  for (float& v : u_) v *= scale_;
  return u_;
}

std::span<const float> LoraLayer::projection(int64_t N) const {
  LLMFT_CHECK(static_cast<int64_t>(u_.size()) == N * r_, "LoRA head backward before its forward");
  return u_;
}

void LoraLayer::forward(std::span<float> out, const Act& x, int64_t N) {
  project(x, N);
  // out += u @ B^T: the input-gradient product of a (OC, r) Conv1D weight, which accumulates
  kernels::matmul_backward(out.first(N * OC_), {}, {}, u_, {}, B_, N, OC_, r_,
                           WeightLayout::kInOut);
}

std::span<float> LoraLayer::du(int64_t N) {
  du_.assign(static_cast<size_t>(N * r_), 0.0f);
  return du_;
}

void LoraLayer::backward_input(std::span<float> dx, const Act& dout, int64_t N) {
  LLMFT_CHECK(!dout.f.empty(), "LoRA backward needs the fp32 output gradient");
  // du = scale * dout @ B                                                   (N, r)
  du_.resize(static_cast<size_t>(N * r_));
  kernels::matmul_forward(du_, dout.f.first(N * OC_), B_, {}, N, OC_, r_, WeightLayout::kInOut);
  for (float& v : du_) v *= scale_;
  add_input_gradient(dx, N);
}

void LoraLayer::add_input_gradient(std::span<float> dx, int64_t N) {
  // dx += drop'(du @ A)
  if (!drop_on_) {
    kernels::matmul_backward(dx.first(N * IC_), {}, {}, du_, {}, A_, N, IC_, r_,
                             WeightLayout::kOutIn);
    return;
  }
  const int64_t n = N * IC_;
  if (static_cast<int64_t>(scratch_->size()) < n) scratch_->resize(static_cast<size_t>(n));
  const auto t = std::span<float>(*scratch_).first(static_cast<size_t>(n));
  kernels::fill(t, 0.0f);
  kernels::matmul_backward(t, {}, {}, du_, {}, A_, N, IC_, r_, WeightLayout::kOutIn);
  kernels::dropout_backward(dx.first(n), t, p_, seed_, n);
}

void LoraLayer::backward_weights(const Act& dout, const Act& x, int64_t N) {
  if (dA_.empty()) return;
  LLMFT_CHECK(static_cast<int64_t>(du_.size()) == N * r_, "LoRA backward_weights before backward_input");
  // dB += dout^T @ u;  dA += du^T @ drop(x)
  kernels::matmul_backward({}, dB_, {}, u_, dout.f.first(N * OC_), {}, N, OC_, r_,
                           WeightLayout::kInOut);
  kernels::matmul_backward({}, dA_, {}, du_, input(x, N), {}, N, IC_, r_, WeightLayout::kOutIn);
}

void LoraLayer::finish_head(std::span<float> dx, const Act& x, int64_t N) {
  // The loss kernel left du = dlogits @ B (unscaled) and dB += dlogits^T @ u.
  for (float& v : du_) v *= scale_;
  add_input_gradient(dx, N);
  if (!dA_.empty())
    kernels::matmul_backward({}, dA_, {}, du_, input(x, N), {}, N, IC_, r_, WeightLayout::kOutIn);
}

// ---- The set ----------------------------------------------------------------------------------

namespace {
class LoraTable : public TensorTable {
 public:
  using TensorTable::add;
};

// (IC, OC) of a target's layer.
std::pair<int64_t, int64_t> dims(const Gpt2Config& cfg, LoraTarget t) {
  const int64_t C = cfg.C;
  switch (t) {
    case LoraTarget::kCAttn: return {C, 3 * C};
    case LoraTarget::kAttnProj: return {C, C};
    case LoraTarget::kCFc: return {C, 4 * C};
    case LoraTarget::kMlpProj: return {4 * C, C};
    case LoraTarget::kHead: return {C, cfg.V};
  }
  return {0, 0};
}
}  // namespace

Lora::Lora(const Gpt2Config& cfg, const LoraConfig& lc) : cfg_(cfg), lc_(lc) {
  lc.validate(cfg);
  auto table = std::make_unique<LoraTable>();
  const int64_t r = lc.rank;
  auto add_slot = [&](int64_t l, LoraTarget t) {
    const auto [IC, OC] = dims(cfg, t);
    const std::string base =
        l < 0 ? fmt::format("base_model.model.{}.", lora_module(t))
              : fmt::format("base_model.model.transformer.h.{}.{}.", l, lora_module(t));
    ParamSpec a, b;
    a.name = base + "lora_A.weight";
    a.shape = {r, IC};
    b.name = base + "lora_B.weight";
    b.shape = {OC, r};
    table->add(std::move(a));
    table->add(std::move(b));
    slots_.push_back({l, t, nullptr, nullptr, nullptr});
  };
  for (int64_t l = 0; l < cfg.L; ++l) {
    if (!lc.targets_layer(l)) continue;
    for (LoraTarget t : kBlockTargets)
      if (lc.has(t)) add_slot(l, t);
  }
  if (lc.has(LoraTarget::kHead)) add_slot(-1, LoraTarget::kHead);
  if (slots_.empty()) throw UsageError("the LoRA configuration adapts no layer");
  table_ = std::move(table);
  params_.assign(static_cast<size_t>(table_->total()), 0.0f);
  grads_.assign(static_cast<size_t>(table_->total()), 0.0f);
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    s.a = &table_->specs()[2 * i];
    s.b = &table_->specs()[2 * i + 1];
    const auto [IC, OC] = dims(cfg, s.target);
    s.adapter = std::make_unique<LoraLayer>(table_->view(std::span<float>(params_), *s.a),
                                            table_->view(std::span<float>(params_), *s.b), IC,
                                            OC, r, lc.scale(), static_cast<float>(lc.dropout),
                                            &scratch_);
    s.adapter->set_grads(table_->view(std::span<float>(grads_), *s.a),
                         table_->view(std::span<float>(grads_), *s.b));
  }
}

void Lora::zero_grad() { kernels::fill(grads_, 0.0f); }

void Lora::init(uint64_t seed) {
  std::fill(params_.begin(), params_.end(), 0.0f);  // every B
  for (size_t i = 0; i < slots_.size(); ++i) {
    // kaiming_uniform_(a=sqrt(5)) on (r, IC): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / IC)
    const ParamSpec& a = *slots_[i].a;
    const double bound = 1.0 / std::sqrt(static_cast<double>(a.shape[1]));
    std::mt19937_64 rng(kernels::mix64(seed ^ kernels::mix64(i + 1)));
    std::uniform_real_distribution<double> dist(-bound, bound);
    for (float& v : table_->view(std::span<float>(params_), a)) v = static_cast<float>(dist(rng));
  }
}

Lora::Slot* Lora::find(int64_t l, LoraTarget t) {
  return const_cast<Slot*>(std::as_const(*this).find(l, t));
}

const Lora::Slot* Lora::find(int64_t l, LoraTarget t) const {
  if (t == LoraTarget::kHead) l = -1;
  for (const Slot& s : slots_)
    if (s.layer == l && s.target == t) return &s;
  return nullptr;
}

LoraLayer* Lora::layer(int64_t l, LoraTarget t) {
  Slot* s = find(l, t);
  return s ? s->adapter.get() : nullptr;
}

void Lora::set_dropout_seed(bool on, uint64_t seed) {
  for (size_t i = 0; i < slots_.size(); ++i)
    slots_[i].adapter->set_dropout_seed(on, kernels::mix64(seed ^ (0xA5A5ull + i)));
}

void Lora::add_delta(std::span<float> w, int64_t l, LoraTarget t) const {
  const Slot* s = find(l, t);
  if (!s) return;
  const auto [IC, OC] = dims(cfg_, t);
  const int64_t r = lc_.rank;
  LLMFT_CHECK(static_cast<int64_t>(w.size()) == IC * OC, "merge target of {} floats", w.size());
  const auto A = table_->view(std::span<const float>(params_), *s->a);  // (r, IC)
  const auto B = table_->view(std::span<const float>(params_), *s->b);  // (OC, r)
  std::vector<float> bt(static_cast<size_t>(r * OC));                    // scale * B^T (r, OC)
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t k = 0; k < r; ++k) bt[k * OC + o] = lc_.scale() * B[o * r + k];
  // Conv1D (IC, OC): W += A^T @ bt;  the head (OC, IC): W += bt^T @ A. Both are the weight
  // gradient of a product with r rows.
  const WeightLayout layout = t == LoraTarget::kHead ? WeightLayout::kOutIn : WeightLayout::kInOut;
  kernels::matmul_backward({}, w, {}, bt, A, {}, r, IC, OC, layout);
}

}  // namespace llmft
