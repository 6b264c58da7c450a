// The recipe's exact workload through the product's own code path: llmft::run_finetune on
// random:<model> (random weights, the model's real shapes) with the bundled dataset, the recipe's
// options (batch 8, seed 123, 2 epochs = 232 AdamW steps, an evaluation of 5 train + 5 validation
// batches every 5 steps and at the last = 48 evaluations, a 50-token greedy sample after each
// epoch), no test answers, no judge, and no checkpoint or model writes (a hidden trainer hook: 5 GB each for
// gpt2-medium). Prints a readable summary on stderr and one JSON line on stdout: wall time in
// total and per phase, real tokens/s, GFLOP/s against a peak measured in the same process, and
// peak RSS.
//
// --max-steps K runs only the first K steps (and the evaluations among them, plus one sample) and
// extrapolates to the whole recipe (the JSON says "extrapolated_from_steps": K). The first step
// and the first evaluation stand apart: they pay what a run pays once (the first touch of every
// buffer, the first use of each kernel); the others are scaled by their work (FLOPs below):
//   train  = t(step 0) + t(steps 1..K-1) / F(steps 1..K-1) * F(steps 1..231)
//   eval   = t(eval 0) + t(evals 1..) / F(evals 1..) * F(evaluations 1..47 of the recipe)
//   sample = t(one sample) * 2
// (K = 1, or a single evaluation: that one is scaled to the whole phase, one-time costs and all.)
// A full run (--max-steps 0) also reports what this estimate from its own first 10 steps and the
// evaluations at steps 0 and 5 would have been ("extrapolation_check": a --max-steps 10 run
// also has a closing evaluation after step 9), so a full run is also a test of the estimate.
// Samples are taken as measured there (their mean), so the check covers steps and evaluations.
// Token counts are real tokens: the packed positions llmft computes (each entry's own tokens, no
// padding). The plan of batches comes from the same data module calls as the trainer's, and the
// run's own token counts are checked against it.
//
// FLOPs (matrix products only; LayerNorm, GELU, softmax and AdamW are not counted), with
// N = real tokens, Nt = tokens with a target (the only rows the output head computes) and, per
// sequence of n tokens, causal attention of n(n+1)/2 query-key pairs:
//   forward = 2 * (12 * L * C^2) * N            qkv 3C^2, attention proj C^2, MLP 8C^2 per layer
//           + 2 * V * C * Nt                    output head on target rows
//           + 2 * L * C * sum_seq n(n+1)        q.k^T and att.v over every head
//   training step = 3 * forward (backward = 2 * forward); evaluation batch = 1 * forward.
//   With --lora (rank 16 on the four block layers, finetune's defaults) a training step is
//   credited 2 * forward: the frozen base has no weight-gradient products, and the adapters'
//   own products (about 2% of the work) are not counted.
// The same count is used for PyTorch (bench/pytorch/recipe_bench.py), which computes more (padded
// rows, the head on every row) but is credited only with this useful work.
//
// Peak: OpenBLAS sgemm (fp32) or llmft::kernels::gemm_bf16 (bf16) at 450 x 1024 x 4096 (a
// recipe batch's rows times an MLP matrix), median of 5, measured before and after the run; the
// higher of the two is the peak.
//
// --dump-batches FILE writes the plan of the timed steps for recipe_bench.py: a header line, then
// one JSON line per batch in execution order with the padded inputs and targets exactly as the
// reference collate builds them (pad 50256, targets -100 after the first end token).
//
// Usage: bench_recipe [--model gpt2-medium] [--precision fp32|bf16] [--max-steps K (0 = all)]
//                     [--threads N (0 = all cores)] [--dump-batches FILE] [--plan-only]
//                     [--data FILE] [--quiet] [--lora]
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/data/batch.h"
#include "llmft/data/dataset.h"
#include "llmft/data/loader.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/model/config.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/train/model_source.h"
#include "llmft/train/options.h"
#include "llmft/train/trainer.h"
#include "common.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using llmft::bench::now_s;
using llmft::bench::median;
using llmft::bench::peak_rss_gib;

// What one batch costs, from its packed form.
struct BatchWork {
  int64_t tokens = 0, targets = 0;
  double attn_pairs2 = 0;  // sum over sequences of n(n+1)
};
BatchWork work_of(const llmft::Batch& b) {
  BatchWork w{b.packed_tokens(), b.target_tokens, 0};
  for (size_t s = 0; s + 1 < b.seq_offsets.size(); ++s) {
    const double n = static_cast<double>(b.seq_offsets[s + 1] - b.seq_offsets[s]);
    w.attn_pairs2 += n * (n + 1);
  }
  return w;
}

// Steps a full run's "extrapolation_check" extrapolates from (bench/recipe.sh's default).
constexpr int64_t kCheckSteps = 10;

// The recipe's batches, in execution order, made by the same loaders as the trainer's.
struct Plan {
  int64_t steps_per_epoch = 0, total_steps = 0, evaluations = 0;
  struct Item {
    std::string kind;  // "train" (an optimizer step) or "eval_train" / "eval_val" (forward only)
    int64_t step = 0;  // the training step it belongs to (evaluations follow their step)
    llmft::Batch batch;
    BatchWork work;
    bool full = true;  // part of the whole recipe (false: the short run's closing evaluation)
  };
  std::vector<Item> items;
  std::vector<int32_t> sample_prompt;  // the first validation prompt's ids
};

Plan make_plan(const llmft::FinetuneOptions& o, const llmft::Gpt2Config& cfg) {
  using namespace llmft;
  const BpeTokenizer tok = BpeTokenizer::load_bundled();
  const InstructionDataset ds = load_dataset(o.data_path());
  const DatasetSplits split = split_dataset(ds.size());
  const PromptTemplate tmpl = parse_template(o.prompt_template);
  const TokenizedDataset data = tokenize_dataset(ds, tmpl, tok, o.threads);
  CollateOptions collate;
  collate.allowed_max_length = std::min(o.max_length, cfg.maxT);
  collate.mask_prompt = o.mask_prompt;
  const DataLoader train(data, split.train, train_loader_options(o.batch_size, o.seed, collate));
  const DataLoader val(data, split.val, eval_loader_options(o.batch_size, collate));
  Plan p;
  p.steps_per_epoch = train.num_batches();
  p.total_steps = p.steps_per_epoch * o.epochs;
  const int64_t run_steps = o.max_steps > 0 ? o.max_steps : p.total_steps;
  for (int64_t s = 0; s < p.total_steps; ++s) {
    const int64_t epoch = s / p.steps_per_epoch;
    auto add = [&](const char* kind, Batch b, bool full = true) {
      Plan::Item it{kind, s, std::move(b), {}, full};
      it.work = work_of(it.batch);
      if (s >= run_steps) {  // counted for the extrapolation, not kept
        it.batch = Batch{};
      }
      p.items.push_back(std::move(it));
    };
    add("train", train.batch(epoch, s % p.steps_per_epoch));
    // As the trainer: every eval_freq steps and at the last step, which for a run cut short
    // by --max-steps is one the whole recipe does not have.
    const bool scheduled = s % o.eval_freq == 0 || s == p.total_steps - 1;
    if (scheduled || s == run_steps - 1) {
      if (scheduled) ++p.evaluations;
      for (int64_t b = 0; b < std::min(o.eval_batches, train.num_batches()); ++b) {
        add("eval_train", train.batch(epoch, b), scheduled);
      }
      for (int64_t b = 0; b < std::min(o.eval_batches, val.num_batches()); ++b) {
        add("eval_val", val.batch(0, b), scheduled);
      }
    }
  }
  p.sample_prompt = tok.encode(format_prompt(tmpl, ds.entries[split.val.begin]),
                               SpecialTokens::kAllow);
  return p;
}

// Seconds of the whole recipe's phases.
struct Estimate {
  double train = 0, eval = 0, sample = 0;
  double total() const { return train + eval + sample; }
};

// The whole recipe's phases from the run's first K steps, the evaluations among them and the
// samples (file comment). `flops(item)` is an item's work; `step_s` and `eval_s` are the run's
// times in order (a full run's lists are longer than K; only their first part is used).
template <class Flops>
Estimate extrapolate(const Plan& plan, int64_t K, const std::vector<double>& step_s,
                     const std::vector<double>& eval_s, double sample_each, int64_t epochs,
                     Flops flops) {
  double step0_f = 0, steps_f = 0, rest_f = 0, all_eval_f = 0;
  std::vector<double> eval_f;  // per evaluation run within the first K steps
  int64_t eval_step = -1;
  for (const auto& it : plan.items) {
    const double f = flops(it);
    if (it.kind == "train") {
      (it.step == 0 ? step0_f : rest_f) += f;
      if (it.step > 0 && it.step < K) steps_f += f;
      continue;
    }
    if (it.full) all_eval_f += f;
    if (it.step >= K) continue;
    if (it.step != eval_step) eval_f.push_back(0.0);  // the items of one evaluation follow its step
    eval_step = it.step;
    eval_f.back() += f;
  }
  if (static_cast<int64_t>(step_s.size()) < K || eval_s.size() < eval_f.size()) {
    throw llmft::InternalError("extrapolate: fewer timed steps or evaluations than planned");
  }
  Estimate e;
  double t = 0;
  for (int64_t s = 1; s < K; ++s) t += step_s[s];
  e.train = K > 1 ? step_s[0] + t / steps_f * rest_f : step_s[0] / step0_f * (step0_f + rest_f);
  if (!eval_f.empty()) {
    double te = 0, fe = 0;
    for (size_t i = 1; i < eval_f.size(); ++i) te += eval_s[i], fe += eval_f[i];
    e.eval = eval_f.size() > 1 ? eval_s[0] + te / fe * (all_eval_f - eval_f[0])
                               : eval_s[0] / eval_f[0] * all_eval_f;
  }
  e.sample = sample_each * static_cast<double>(epochs);
  return e;
}

// Trainer log lines (stdout) go to stderr, or nowhere with --quiet, while it runs; stdout keeps
// only the JSON line.
class StdoutRedirect {
 public:
  explicit StdoutRedirect(bool quiet) {
    std::fflush(stdout);
    saved_ = dup(STDOUT_FILENO);
    if (quiet) {
      FILE* null = std::fopen("/dev/null", "w");
      dup2(fileno(null), STDOUT_FILENO);
      std::fclose(null);
    } else {
      dup2(STDERR_FILENO, STDOUT_FILENO);
    }
  }
  ~StdoutRedirect() {
    std::fflush(stdout);
    dup2(saved_, STDOUT_FILENO);
    close(saved_);
  }

 private:
  int saved_ = -1;
};

std::string usage() {
  return "usage: bench_recipe [--model gpt2-medium] [--precision fp32|bf16] [--max-steps K] "
         "[--threads N] [--dump-batches FILE] [--plan-only] [--data FILE] [--quiet] [--lora]";
}

int run(int argc, char** argv) {
  std::string model = "gpt2-medium", dump;
  llmft::FinetuneOptions o;  // the recipe's defaults
  bool plan_only = false, quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw llmft::UsageError("missing value after " + a, usage());
      return argv[++i];
    };
    if (a == "--model") model = next();
    else if (a == "--precision") o.precision = next();
    else if (a == "--max-steps") o.max_steps = std::stoll(next());
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--dump-batches") dump = next();
    else if (a == "--plan-only") plan_only = true;
    else if (a == "--data") o.data = next();
    else if (a == "--quiet") quiet = true;
    else if (a == "--lora") o.lora = true;
    else throw llmft::UsageError("unknown argument " + a, usage());
  }
  o.model = "random:" + model;
  o.test_answers = false;
  o.skip_model_writes = true;
  o.sample_at_end = true;
  o.validate();
  const llmft::Gpt2Config cfg = llmft::random_preset(model);

  const Plan plan = make_plan(o, cfg);
  if (o.max_steps > plan.total_steps) {
    throw llmft::UsageError(fmt::format("--max-steps {}: the recipe has {} steps", o.max_steps,
                                        plan.total_steps));
  }
  const int64_t K = o.max_steps > 0 ? o.max_steps : plan.total_steps;
  const bool subset = K < plan.total_steps;

  // Work of the whole recipe and of the timed part, split as the extrapolation needs it.
  struct Sum {
    int64_t tokens = 0, batches = 0, evaluations = 0;
    double flops = 0;
  };
  Sum full_train, full_eval, run_train, run_eval;
  const auto flops = [&](const Plan::Item& it) {
    const BatchWork& w = it.work;
    return llmft::bench::forward_flops(cfg, static_cast<double>(w.tokens),
                                       static_cast<double>(w.targets), w.attn_pairs2) *
           (it.kind == "train" ? (o.lora ? 2 : 3) : 1);
  };
  for (const auto& it : plan.items) {
    const bool train = it.kind == "train";
    const double f = flops(it);
    if (it.full) {
      Sum& full = train ? full_train : full_eval;
      full.tokens += it.work.tokens;
      full.flops += f;
      ++full.batches;
    }
    if (it.step < K) {
      Sum& r = train ? run_train : run_eval;
      r.tokens += it.work.tokens;
      r.flops += f;
      ++r.batches;
    }
  }

  if (!dump.empty()) {
    std::ofstream f(dump);
    if (!f) throw llmft::Error("cannot write " + dump, "check the folder exists and is writable");
    f << json{{"plan", "recipe"},
              {"model", model},
              {"steps", K},
              {"total_steps", plan.total_steps},
              {"steps_per_epoch", plan.steps_per_epoch},
              {"evaluations_total", plan.evaluations},
              {"epochs", o.epochs},
              {"lr", o.lr},
              {"weight_decay", o.weight_decay},
              {"seed", o.seed},
              {"sample_tokens", o.sample_tokens},
              {"sample_prompt", plan.sample_prompt},
              {"full_train_tokens", full_train.tokens},
              {"full_train_flops", full_train.flops},
              {"full_eval_tokens", full_eval.tokens},
              {"full_eval_flops", full_eval.flops}}
             .dump()
      << "\n";
    for (const auto& it : plan.items) {
      if (it.step >= K) break;
      const llmft::Batch& b = it.batch;
      f << json{{"kind", it.kind},
                {"step", it.step},
                {"B", b.B},
                {"T", b.T},
                {"inputs", b.inputs},
                {"targets", b.targets},
                {"real_tokens", it.work.tokens},
                {"flops", flops(it)}}
               .dump()
        << "\n";
    }
    if (!f.flush()) throw llmft::Error("cannot write " + dump, "is the disk full?");
  }
  if (plan_only) return 0;

  const bool bf16 = o.precision == "bf16";
  const double peak_before = llmft::bench::gemm_peak_gflops(bf16);

  // The run, in a temporary folder removed afterwards.
  const fs::path tmp = fs::temp_directory_path() / fmt::format("llmft-bench-recipe-{}", getpid());
  fs::remove_all(tmp);
  o.output = tmp / "run";
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{tmp};
  fs::create_directories(tmp);
  const double t0 = now_s();
  llmft::FinetuneResult r;
  {
    StdoutRedirect redirect(quiet);
    r = llmft::run_finetune(o, {}, nullptr);
  }
  const double wall = now_s() - t0;
  const double peak_after = llmft::bench::gemm_peak_gflops(bf16);
  const double peak = std::max(peak_before, peak_after);
  const llmft::FinetunePhases& ph = r.phases;

  // Validate before reporting: the run did the planned work and its losses are sane.
  if (ph.steps != K || ph.train_tokens != run_train.tokens || ph.eval_tokens != run_eval.tokens ||
      ph.eval_batches != run_eval.batches) {
    throw llmft::InternalError(fmt::format(
        "the run's work differs from the plan: steps {} vs {}, train tokens {} vs {}, eval tokens "
        "{} vs {}, eval batches {} vs {}",
        ph.steps, K, ph.train_tokens, run_train.tokens, ph.eval_tokens, run_eval.tokens,
        ph.eval_batches, run_eval.batches));
  }
  // Random weights start near ln(V); the first evaluation follows the first update.
  for (const char* key : {"first_val_loss", "final_val_loss", "final_batch_loss"}) {
    const double loss = r.summary.value(key, NAN);
    if (!std::isfinite(loss) || loss <= 0 || loss > std::log(cfg.V) + 1.0) {
      throw llmft::InternalError(fmt::format("{} = {}: expected a finite loss below ln(V) + 1 = "
                                             "{:.2f} for random weights",
                                             key, loss, std::log(cfg.V) + 1.0));
    }
  }

  // Extrapolation (see the file comment); the measurement itself when every step ran, and then
  // also the estimate its first kCheckSteps steps would have given.
  const double sample_each =
      ph.samples > 0 ? ph.sample_seconds / static_cast<double>(ph.samples) : 0.0;
  Estimate est{ph.train_seconds, ph.eval_seconds, ph.sample_seconds};
  if (subset) {
    est = extrapolate(plan, K, ph.step_seconds, ph.eval_each_seconds, sample_each, o.epochs, flops);
  }
  json check = nullptr;
  if (!subset && K > kCheckSteps) {
    const Estimate c = extrapolate(plan, kCheckSteps, ph.step_seconds, ph.eval_each_seconds,
                                   sample_each, o.epochs, flops);
    const auto err = [](double e, double m) { return m > 0 ? 100.0 * (e - m) / m : 0.0; };
    check = {{"from_steps", kCheckSteps},
             {"recipe_seconds", c.total()},
             {"measured_seconds", est.total()},
             {"error_percent", err(c.total(), est.total())},
             {"train_error_percent", err(c.train, est.train)},
             {"eval_error_percent", err(c.eval, est.eval)}};
  }
  const double est_total = ph.setup_seconds + est.total();
  const double train_gflops = run_train.flops / ph.train_seconds / 1e9;
  const double eval_gflops = run_eval.tokens > 0 ? run_eval.flops / ph.eval_seconds / 1e9 : 0.0;
  const double all_gflops =
      (run_train.flops + run_eval.flops) / (ph.train_seconds + ph.eval_seconds) / 1e9;
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) < 0) load[0] = load[1] = load[2] = NAN;

  const json out = {
      {"bench", "recipe"},
      {"impl", "llmft"},
      {"model", model},
      {"precision", o.precision},
      {"lora_rank", o.lora ? o.lora_rank : 0},
      {"bf16_native", bf16 ? json(llmft::kernels::bf16_native()) : json(nullptr)},
      {"threads", r.summary.value("threads", 0)},
      {"steps_run", K},
      {"evaluations_run", ph.evaluations},
      {"samples_run", ph.samples},
      {"extrapolated_from_steps", subset ? json(K) : json(nullptr)},
      {"wall_seconds", wall},
      {"setup_seconds", ph.setup_seconds},
      {"train_seconds", ph.train_seconds},
      {"eval_seconds", ph.eval_seconds},
      {"sample_seconds", ph.sample_seconds},
      {"first_step_seconds", ph.step_seconds.at(0)},
      {"step_seconds", ph.step_seconds},
      {"eval_each_seconds", ph.eval_each_seconds},
      {"train_s_per_step_median", median(ph.step_seconds)},
      {"train_real_tokens", ph.train_tokens},
      {"eval_real_tokens", ph.eval_tokens},
      {"train_real_tokens_per_s", static_cast<double>(ph.train_tokens) / ph.train_seconds},
      {"eval_real_tokens_per_s",
       ph.eval_seconds > 0 ? static_cast<double>(ph.eval_tokens) / ph.eval_seconds : 0.0},
      {"train_gflops", train_gflops},
      {"eval_gflops", eval_gflops},
      {"gflops", all_gflops},
      {"peak_gflops", peak},
      {"peak_kind", bf16 ? "llmft gemm_bf16 450x1024x4096" : "OpenBLAS sgemm 450x1024x4096"},
      {"peak_gflops_before_after", {peak_before, peak_after}},
      {"percent_of_peak", 100.0 * all_gflops / peak},
      {"recipe_steps", plan.total_steps},
      {"recipe_evaluations", plan.evaluations},
      {"recipe_train_seconds", est.train},
      {"recipe_eval_seconds", est.eval},
      {"recipe_sample_seconds", est.sample},
      {"recipe_total_seconds", est_total},
      {"recipe_minutes", est_total / 60.0},
      {"recipe_note", "checkpoint and model-folder writes skipped (not timed)"},
      {"extrapolation_check", check},
      {"peak_rss_gib", peak_rss_gib()},
      {"load_avg", {load[0], load[1], load[2]}},
      {"compiler", fmt::format("gcc {}.{}", __GNUC__, __GNUC_MINOR__)}};

  std::fprintf(stderr,
               "\nrecipe workload, %s random weights, %s, %d threads%s\n"
               "  ran           %lld steps, %lld evaluations, %lld samples in %.1f s (setup %.1f, "
               "steps %.1f, evaluations %.1f, samples %.1f)\n"
               "  training      %.1f real tokens/s, %.2f s/step median (first step %.2f s), "
               "%.0f GFLOP/s\n"
               "  evaluation    %.1f real tokens/s, %.0f GFLOP/s\n"
               "  peak          %.0f GFLOP/s (%s); steps + evaluations at %.0f%% of it\n"
               "  whole recipe  %.1f minutes (%lld steps %.1f min, %lld evaluations %.1f min, "
               "samples %.2f min, setup %.2f min)%s\n"
               "  peak memory   %.2f GiB RSS; load average %.2f %.2f %.2f\n",
               model.c_str(), o.precision.c_str(), r.summary.value("threads", 0),
               subset ? fmt::format(", extrapolated from {} steps", K).c_str() : "",
               static_cast<long long>(K), static_cast<long long>(ph.evaluations),
               static_cast<long long>(ph.samples), wall, ph.setup_seconds, ph.train_seconds,
               ph.eval_seconds, ph.sample_seconds,
               static_cast<double>(ph.train_tokens) / ph.train_seconds, median(ph.step_seconds),
               ph.step_seconds.at(0), train_gflops,
               ph.eval_seconds > 0 ? static_cast<double>(ph.eval_tokens) / ph.eval_seconds : 0.0,
               eval_gflops, peak, out["peak_kind"].get<std::string>().c_str(),
               100.0 * all_gflops / peak, est_total / 60.0,
               static_cast<long long>(plan.total_steps), est.train / 60.0,
               static_cast<long long>(plan.evaluations), est.eval / 60.0, est.sample / 60.0,
               ph.setup_seconds / 60.0, subset ? " [extrapolated]" : "", peak_rss_gib(), load[0],
               load[1], load[2]);
  if (!check.is_null()) {
    std::fprintf(stderr,
                 "  estimate check  the first %lld steps would have given %.1f minutes: %+.1f%% "
                 "(steps %+.1f%%, evaluations %+.1f%%)\n",
                 static_cast<long long>(kCheckSteps), check["recipe_seconds"].get<double>() / 60.0,
                 check["error_percent"].get<double>(), check["train_error_percent"].get<double>(),
                 check["eval_error_percent"].get<double>());
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const llmft::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return dynamic_cast<const llmft::UsageError*>(&e) ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
