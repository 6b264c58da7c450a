// The DPO loop (SPEC §9), following the reference's train_model_dpo_simple step by step:
//   for each epoch, for each batch: zero grads, DPO loss of the batch, backward, AdamW step,
//   tokens_seen += chosen.numel(), global_step += 1 (from -1), evaluate (loss, rewards, margins
//   on eval_batches batches of each loader) when global_step % eval_freq == 0; after each epoch a
//   greedy sample from the first validation prompt.
// Each step runs one packed forward over the batch's chosen and rejected sequences, turns the
// per-token losses into mean response log-probabilities, and drives the backward with the DPO
// loss's weight on every token (Gpt2::backward(dlosses)).
#include "llmft/train/dpo.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/core/progress.h"
#include "llmft/data/loader.h"
#include "llmft/data/preference.h"
#include "llmft/generate/answer.h"
#include "llmft/io/hf_folder.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/train/checkpoint.h"
#include "llmft/train/dpo_loss.h"
#include "llmft/train/metrics.h"
#include "llmft/train/plot.h"
#include "llmft/dist/dist.h"
#include "llmft/train/run_setup.h"
#include "llmft/train/schedule.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The run's reference scores: mean response log-probabilities of every train and validation
// entry under the starting model, chosen and rejected (NaN for entries never scored: test).
struct ReferenceScores {
  std::vector<double> chosen, rejected;
  // (2B) in a PreferenceBatch's order: chosen and rejected of each pair.
  std::vector<double> gather(std::span<const int64_t> idx) const {
    std::vector<double> r;
    for (int64_t i : idx) {
      r.push_back(chosen[static_cast<size_t>(i)]);
      r.push_back(rejected[static_cast<size_t>(i)]);
    }
    return r;
  }
};

json to_json(const ReferenceScores& s) {
  auto arr = [](const std::vector<double>& v) {
    json a = json::array();
    for (double x : v) a.push_back(std::isfinite(x) ? json(x) : json(nullptr));
    return a;
  };
  return {{"chosen", arr(s.chosen)}, {"rejected", arr(s.rejected)}};
}

ReferenceScores reference_scores_from_file(const fs::path& file, size_t n) {
  const std::string text = read_file(file);
  const std::string hint = "the run folder is damaged; start the run again";
  const json j = parse_json(text, file.string(), hint);
  ReferenceScores s;
  for (auto [key, out] : {std::pair{"chosen", &s.chosen}, std::pair{"rejected", &s.rejected}}) {
    if (j.is_discarded() || !j.contains(key) || !j[key].is_array() || j[key].size() != n) {
      throw Error(fmt::format("{}: expected \"{}\" with {} scores", file.string(), key, n), hint);
    }
    for (const json& x : j[key]) out->push_back(x.is_number() ? x.get<double>() : NAN);
  }
  return s;
}

// One DPO run from its initialised model to its summary (the shape of trainer.cpp's Finetune).
class Dpo {
 public:
  Dpo(const DpoOptions& opts, int threads, Clock::time_point t_start, RunFolder folder,
      RunData data, PreferenceTokens pref, LoadedModel source, Gpt2& model, Console& con)
      : opts_(opts),
        o_(opts.train),
        threads_(threads),
        t_start_(t_start),
        folder_(std::move(folder)),
        data_(std::move(data)),
        pref_(std::move(pref)),
        source_(std::move(source)),
        model_(model),
        con_(con),
        max_length_(std::min(o_.max_length, model.config().maxT)),
        adamw_(model.trainable().table.total(), adamw_config(o_)),
        train_loader_(pref_.chosen, data_.split.train,
                      train_loader_options(o_.batch_size, o_.seed)),
        val_loader_(pref_.chosen, data_.split.val, eval_loader_options(o_.batch_size)),
        steps_per_epoch_(train_loader_.num_batches()),
        total_steps_(run_total_steps(o_, steps_per_epoch_)),
        schedule_{parse_lr_schedule(o_.schedule), o_.lr, o_.warmup_steps, total_steps_} {
    fuse_adamw(model_, adamw_, o_);
  }
  ~Dpo() { model_.set_fused_update({}); }
  Dpo(const Dpo&) = delete;  // the loaders keep references into pref_
  Dpo& operator=(const Dpo&) = delete;

  void start_or_resume();
  void print_header();
  void reference_scores();  // computed once (a new run) or read back (a resumed one)
  void answer_with_start_model();
  bool train_loop(const std::atomic<bool>* stop);
  FinetuneResult interrupted();
  void save_model();
  void answer_test_set();
  void write_plot();
  FinetuneResult summarise();

 private:
  struct Eval {
    DpoStats stats;
    int64_t batches = 0;
  };
  StepRecord train_step();
  void print_sample();
  DpoStats batch_stats(const PreferenceBatch& batch, bool with_gradient);
  Eval evaluate_loader(const DataLoader& loader, int64_t epoch, int64_t n);
  void evaluate(int64_t epoch, const StepRecord& step);
  void checkpoint();
  json summary_json() const;
  fs::path plot_file() const { return folder_.dir / "loss-plot.svg"; }
  fs::path margin_plot_file() const { return folder_.dir / "reward-margin-plot.svg"; }
  fs::path reference_file() const { return folder_.dir / "reference-logprobs.json"; }
  fs::path start_answers_file() const { return folder_.dir / "sft-test-responses.json"; }
  fs::path answers_file() const { return folder_.dir / "test-responses.json"; }
  bool writes() const { return !o_.skip_model_writes && dist::is_root(); }

  const DpoOptions& opts_;
  const FinetuneOptions& o_;
  const int threads_;
  const Clock::time_point t_start_;
  const RunFolder folder_;
  const RunData data_;
  const PreferenceTokens pref_;
  LoadedModel source_;
  Gpt2& model_;
  Console& con_;
  const int64_t max_length_;
  AdamW adamw_;
  const DataLoader train_loader_, val_loader_;
  const int64_t steps_per_epoch_, total_steps_;
  const LrSchedule schedule_;
  ReferenceScores ref_;
  TrainState st_;
  std::optional<MetricsLog> metrics_;
  std::vector<EvalRecord> evals_;
  FinetunePhases ph_;
  std::optional<StepRecord> last_step_;
  double reference_seconds_ = 0;
  SavedModel saved_;  // where save_model() wrote the weights
  json answers_info_ = nullptr;
};

void Dpo::start_or_resume() {
  if (folder_.resuming) {
    const Gpt2::Trainable t = model_.trainable();
    // Every rank reads the checkpoint; rank 0 alone restores the metrics log and writes.
    st_ = load_checkpoint(*folder_.checkpoint, t.table, t.params, adamw_.m(), adamw_.v(),
                          dist::is_root() ? folder_.metrics_file : fs::path());
    adamw_.set_step_count(st_.adam_step);
  } else if (dist::is_root()) {
    std::error_code ec;
    fs::create_directories(folder_.dir, ec);
    const json config = {{"llmft_version", LLMFT_VERSION},
                         {"command", "dpo"},
                         {"options", to_json(opts_)},
                         {"model", model_record(source_, model_.table().total())},
                         {"data", data_record(o_, data_)},
                         {"steps_per_epoch", steps_per_epoch_},
                         {"total_steps", total_steps_}};
    write_file_atomic(folder_.config_file, config.dump(2) + "\n");
  }
  if (!dist::is_root()) return;
  metrics_.emplace(folder_.metrics_file, /*truncate=*/!folder_.resuming);
  if (folder_.resuming) evals_ = read_metrics(folder_.metrics_file).evals;
}

void Dpo::print_header() {
  const DatasetSplits& split = data_.split;
  con_.line(fmt::format("Model: {} (policy, and the frozen reference)", source_.description));
  con_.line(fmt::format("Data: {}: {} preference pairs -> train {}, validation {}, test {}",
                        o_.data_path().string(), data_.ds.size(), split.train.size(),
                        split.val.size(), split.test.size()));
  con_.line(fmt::format(
      "DPO: beta {:g}, {}, batch {} pairs, AdamW lr {:g} ({}), weight decay {:g}, {} matrix "
      "products, {}",
      opts_.beta, describe_steps(total_steps_, steps_per_epoch_), o_.batch_size, o_.lr,
      o_.schedule, o_.weight_decay, o_.precision, describe_threads(threads_)));
  if (o_.lora) con_.line(describe_lora(model_, o_));
  con_.line(fmt::format("Output: {}", folder_.dir.string()));
  if (folder_.resuming) {
    con_.line(fmt::format("Resuming from {} (after step {}, epoch {}, batch {})",
                          folder_.checkpoint->string(), st_.step, st_.epoch + 1,
                          st_.batch_in_epoch));
  }
}

// The reference model is the starting model (with LoRA: the base without the adapter): score every
// train and validation pair with it once.
void Dpo::reference_scores() {
  const size_t n = data_.ds.size();
  if (folder_.resuming) {
    ref_ = reference_scores_from_file(reference_file(), n);
    return;
  }
  const auto t0 = Clock::now();
  // NaN for the test pairs (never scored); the ranks score every size()-th batch of the others
  // and sum their parts.
  ref_.chosen.assign(n, NAN);
  ref_.rejected.assign(n, NAN);
  std::vector<int64_t> todo;
  for (const IndexRange r : {data_.split.train, data_.split.val})
    for (size_t i = r.begin; i < r.end; ++i) {
      todo.push_back(static_cast<int64_t>(i));
      ref_.chosen[i] = ref_.rejected[i] = 0.0;
    }
  Lora* const adapter = model_.lora();
  model_.set_lora(nullptr);
  ProgressBar bar("reference", static_cast<int64_t>(todo.size()), "pair");
  con_.bar = &bar;
  const auto B = static_cast<size_t>(o_.batch_size);
  for (size_t k = B * static_cast<size_t>(dist::rank()); k < todo.size();
       k += B * static_cast<size_t>(dist::size())) {
    const auto idx = std::span(todo).subspan(k, std::min(B, todo.size() - k));
    const PreferenceBatch b = collate_preferences(pref_, idx, max_length_);
    const auto s = score_pairs(model_, b, /*training=*/false);
    for (size_t i = 0; i < idx.size(); ++i) {
      ref_.chosen[static_cast<size_t>(idx[i])] = s[2 * i];
      ref_.rejected[static_cast<size_t>(idx[i])] = s[2 * i + 1];
    }
    bar.update(static_cast<int64_t>(k + idx.size()));
  }
  bar.finish();
  con_.bar = nullptr;
  model_.set_lora(adapter);
  dist::sum(ref_.chosen);
  dist::sum(ref_.rejected);
  if (dist::is_root()) write_file_atomic(reference_file(), to_json(ref_).dump() + "\n");
  reference_seconds_ = seconds_since(t0);
  con_.line(fmt::format("Reference log-probabilities of {} pairs in {:.1f} s -> {}", todo.size(),
                        reference_seconds_, reference_file().string()));
}

// The starting model's test answers, written before its weights change (a resumed run has them).
void Dpo::answer_with_start_model() {
  const IndexRange test = data_.split.test;
  if (!o_.test_answers || test.size() == 0 || folder_.resuming || !dist::is_root()) return;
  const auto t0 = Clock::now();
  AnswerOptions a;
  a.gen.max_new_tokens = o_.max_new_tokens;
  a.gen.precision = model_.precision();
  a.gen.batch_size = 8;
  a.label = "answers (start)";
  answer_dataset(model_, *source_.tokenizer,
                 std::span(data_.ds.entries).subspan(test.begin, test.size()),
                 start_answers_file(), a);
  ph_.answers_seconds += seconds_since(t0);
}

bool Dpo::train_loop(const std::atomic<bool>* stop) {
  ph_.setup_seconds = seconds_since(t_start_);
  const TrainLoop loop{"dpo",
                       total_steps_,
                       steps_per_epoch_,
                       [&] { return train_step(); },
                       [&](int64_t epoch, const StepRecord& r) { evaluate(epoch, r); },
                       [&] { print_sample(); },
                       [&] { checkpoint(); },
                       [](const StepRecord& r) {
                         return fmt::format("loss {:.3f} | margin {:.3f}", r.loss,
                                            r.rewards->margin());
                       }};
  return run_train_loop(loop, o_, st_, stop, con_);
}

void Dpo::print_sample() {
  if (o_.sample_tokens == 0 || !dist::is_root()) return;
  const auto t0 = Clock::now();
  con_.line(greedy_sample(model_, *source_.tokenizer, data_, o_.sample_tokens));
  ph_.sample_seconds += seconds_since(t0);
  ++ph_.samples;
}

// The DPO loss and rewards of the batch of pairs `idx`; with_gradient: a training forward and the
// backward, the gradient accumulated into the model's (zeroed) gradients. With several ranks
// (dist.h) each scores its token-balanced share of the pairs and the gradients and statistics are
// summed across the ranks: what one process gets for the whole batch (which it scores as it is).
DpoStats Dpo::batch_stats(const PreferenceBatch& batch, bool with_gradient) {
  const std::span<const int64_t> idx = batch.indices;
  std::vector<int64_t> costs, mine;
  for (int64_t i : idx) {
    const auto k = static_cast<size_t>(i);
    costs.push_back(pref_.chosen.length(k) + pref_.rejected.length(k));
  }
  for (size_t k : dist::share(costs)) mine.push_back(idx[k]);
  DpoStats s;
  if (!mine.empty()) {
    const PreferenceBatch share = dist::size() > 1
                                      ? collate_preferences(pref_, mine, max_length_)
                                      : PreferenceBatch{};
    const PreferenceBatch& b = dist::size() > 1 ? share : batch;
    const auto policy = score_pairs(model_, b, /*training=*/with_gradient);
    const auto reference = ref_.gather(b.indices);
    const auto pairs = static_cast<int64_t>(idx.size());
    if (with_gradient) {
      std::vector<float> dlosses(static_cast<size_t>(b.target_tokens()));
      s = dpo_loss(policy, reference, opts_.beta, b.target_offsets, dlosses, pairs);
      model_.backward(dlosses);
    } else {
      s = dpo_loss(policy, reference, opts_.beta, {}, {}, pairs);
    }
  }
  if (dist::size() > 1) {
    if (with_gradient) dist::sum(model_.trainable().grads);
    double v[3] = {s.loss, s.chosen_reward, s.rejected_reward};
    dist::sum(std::span<double>(v));
    s = {v[0], v[1], v[2]};
  }
  return s;
}

StepRecord Dpo::train_step() {
  const int64_t epoch = st_.epoch;
  const auto t_step = Clock::now();
  const std::vector<int64_t> idx = train_loader_.batch_indices(epoch, st_.batch_in_epoch);
  const PreferenceBatch b = collate_preferences(pref_, idx, max_length_);
  model_.zero_grad();
  model_.set_dropout_seed(o_.seed ^ (0x9E3779B97F4A7C15ull *
                                     static_cast<uint64_t>(st_.step * 64 + dist::rank() + 1)));
  const double lr = schedule_.lr(st_.step);
  const bool fused = model_.fused_update();
  if (fused) adamw_.begin_step(static_cast<float>(lr));  // the backward updates the weights
  const DpoStats s = batch_stats(b, /*with_gradient=*/true);
  const double grad_norm =
      o_.grad_clip > 0 ? model_.clip_grad_norm(o_.grad_clip) : model_.grad_norm();
  check_finite_step(st_.step, s.loss, grad_norm);
  if (!fused) {
    const Gpt2::Trainable t = model_.trainable();
    adamw_.step(t.params, t.grads, static_cast<float>(lr));
  }

  st_.tokens_seen += b.padded_tokens;
  const int64_t global_step = st_.step;
  ++st_.step;
  ++st_.batch_in_epoch;
  const double step_s = seconds_since(t_step);
  ++ph_.steps;
  ph_.train_seconds += step_s;
  ph_.step_seconds.push_back(step_s);
  ph_.train_tokens += b.tokens();
  ph_.train_target_tokens += b.target_tokens();

  StepRecord rec;
  rec.step = global_step;
  rec.epoch = static_cast<double>(epoch) +
              static_cast<double>(st_.batch_in_epoch) / static_cast<double>(steps_per_epoch_);
  rec.loss = s.loss;
  rec.lr = lr;
  rec.grad_norm = grad_norm;
  rec.tokens_seen = st_.tokens_seen;
  rec.tokens_per_s = step_s > 0 ? static_cast<double>(b.padded_tokens) / step_s : 0.0;
  rec.batch = idx;
  rec.rewards = Rewards{s.chosen_reward, s.rejected_reward};
  if (metrics_) metrics_->write(rec);
  last_step_ = rec;
  return rec;
}

// Means over the first n batches of `loader` (the reference's evaluate_dpo_loss_loader).
Dpo::Eval Dpo::evaluate_loader(const DataLoader& loader, int64_t epoch, int64_t n) {
  Eval e;
  n = std::min(n, loader.num_batches());
  for (int64_t k = 0; k < n; ++k) {
    const std::vector<int64_t> idx = loader.batch_indices(epoch, k);
    const PreferenceBatch b = collate_preferences(pref_, idx, max_length_);
    const DpoStats s = batch_stats(b, /*with_gradient=*/false);
    e.stats.loss += s.loss;
    e.stats.chosen_reward += s.chosen_reward;
    e.stats.rejected_reward += s.rejected_reward;
    ++ph_.eval_batches;
    ph_.eval_tokens += b.tokens();
    ph_.eval_target_tokens += b.target_tokens();
  }
  e.batches = n;
  if (n > 0) {
    e.stats.loss /= static_cast<double>(n);
    e.stats.chosen_reward /= static_cast<double>(n);
    e.stats.rejected_reward /= static_cast<double>(n);
  }
  return e;
}

void Dpo::evaluate(int64_t epoch, const StepRecord& step) {
  const auto t0 = Clock::now();
  const Eval tr = evaluate_loader(train_loader_, epoch, o_.eval_batches);
  const Eval va = evaluate_loader(val_loader_, 0, o_.eval_batches);
  EvalRecord e;
  e.step = step.step;
  e.epoch = step.epoch;
  e.tokens_seen = st_.tokens_seen;
  e.train_loss = tr.stats.loss;
  e.val_loss = va.stats.loss;
  e.train_rewards = Rewards{tr.stats.chosen_reward, tr.stats.rejected_reward};
  e.val_rewards = Rewards{va.stats.chosen_reward, va.stats.rejected_reward};
  if (metrics_) metrics_->write(e);
  evals_.push_back(e);
  const double s = seconds_since(t0);
  ++ph_.evaluations;
  ph_.eval_seconds += s;
  ph_.eval_each_seconds.push_back(s);
  con_.line(fmt::format("Ep {} (Step {:06d}): Train loss {:.3f}, Val loss {:.3f}, Train reward "
                        "margins {:.3f}, Val reward margins {:.3f}",
                        epoch + 1, step.step, e.train_loss, e.val_loss, tr.stats.margin(),
                        va.stats.margin()));
}

void Dpo::checkpoint() {
  if (!writes()) return;
  const auto t0 = Clock::now();
  write_run_checkpoint(model_, adamw_, st_, folder_);
  write_plot();
  ph_.write_seconds += seconds_since(t0);
}

FinetuneResult Dpo::interrupted() {
  ph_.total_seconds = seconds_since(t_start_);
  con_.line(fmt::format(
      "Interrupted after step {} of {}: checkpoint saved. Continue with:\n  llmft dpo --resume {}",
      st_.step, total_steps_, folder_.dir.string()));
  FinetuneResult r;
  r.run_dir = folder_.dir;
  r.interrupted = true;
  r.phases = ph_;
  return r;
}

void Dpo::save_model() {
  const auto t0 = Clock::now();
  saved_ = save_trained_model(model_, o_, source_, folder_.dir, con_);
  ph_.write_seconds += seconds_since(t0);
}

// The tuned model's test answers (model_response) beside the starting model's (sft_response).
void Dpo::answer_test_set() {
  const IndexRange test = data_.split.test;
  if (!o_.test_answers || test.size() == 0) return;
  const auto t0 = Clock::now();
  const std::string start_text = read_file(start_answers_file());
  const json start = parse_json(start_text, start_answers_file().string(),
                                "the run folder is damaged; answer the test split with `llmft "
                                "generate`");
  if (!start.is_array() || start.size() != test.size()) {
    throw Error(fmt::format("{}: expected the starting model's {} answers",
                            start_answers_file().string(), test.size()),
                "the run folder is damaged; answer the test split with `llmft generate`");
  }
  // As finetune: the memory training frees sets the streams; the prompts are not tokenized
  // here, so a stream is sized for the whole context.
  const int64_t freed = model_.release_training_memory() + adamw_.release_state();
  AnswerOptions a;
  a.gen.max_new_tokens = o_.max_new_tokens;
  a.gen.precision = model_.precision();
  a.gen.batch_size =
      answer_streams(freed, model_.config(), model_.precision(), model_.config().maxT);
  a.label = "answers (tuned)";
  GenerateStats gs;
  nlohmann::ordered_json answered =
      answer_entries(model_, *source_.tokenizer,
                     std::span(data_.ds.entries).subspan(test.begin, test.size()), a, &gs);
  for (size_t i = 0; i < answered.size(); ++i) {
    answered[i]["sft_response"] = start[i].value("model_response", std::string());
  }
  write_file_atomic(answers_file(), dump_answers(answered));
  ph_.answers_seconds += seconds_since(t0);
  answers_info_ = {{"file", answers_file().string()},
                   {"count", answered.size()},
                   {"fields", {"model_response", "sft_response"}}};
  con_.line(fmt::format("Answered {} test prompts (model_response, beside the starting model's "
                        "sft_response) -> {}",
                        answered.size(), answers_file().string()));
}

void Dpo::write_plot() {
  write_file_atomic(plot_file(), loss_plot_svg(evals_, fmt::format("{}: DPO loss", o_.model)));
  write_file_atomic(margin_plot_file(),
                    reward_margin_plot_svg(evals_, fmt::format("{}: DPO reward margin", o_.model)));
}

json Dpo::summary_json() const {
  auto eval_json = [](const EvalRecord& e) {
    return json{{"step", e.step},
                {"train_loss", e.train_loss},
                {"val_loss", e.val_loss},
                {"train_reward_margin", e.train_rewards->margin()},
                {"val_reward_margin", e.val_rewards->margin()},
                {"val_chosen_reward", e.val_rewards->chosen},
                {"val_rejected_reward", e.val_rewards->rejected}};
  };
  const double train_s = st_.train_seconds;
  return {{"run_dir", folder_.dir.string()},
          {"command", "dpo"},
          {"model",
           {{"name", o_.model},
            {"source", source_.spec},
            {"pretrained", source_.pretrained},
            {"description", source_.description}}},
          {"beta", opts_.beta},
          {"steps", st_.step},
          {"epochs", epochs_done(st_.step, steps_per_epoch_)},
          {"steps_per_epoch", steps_per_epoch_},
          {"tokens_seen", st_.tokens_seen},
          {"train_seconds", train_s},
          {"reference_seconds", reference_seconds_},
          {"first_eval", evals_.empty() ? json(nullptr) : eval_json(evals_.front())},
          {"last_eval", evals_.empty() ? json(nullptr) : eval_json(evals_.back())},
          {"optimizer", optimizer_json(o_)},
          {"threads", threads_},
          {"ranks", dist::size()},
          {"precision", o_.precision},
          {"total_seconds", ph_.total_seconds},
          {"phases", to_json(ph_)},
          {"outputs",
           {{"model", saved_.model_dir ? json(saved_.model_dir->string()) : json(nullptr)},
            {"adapter", saved_.adapter_dir ? json(saved_.adapter_dir->string()) : json(nullptr)},
            {"test_responses", answers_info_},
            {"reference_logprobs", reference_file().string()},
            {"metrics", folder_.metrics_file.string()},
            {"loss_plot", plot_file().string()},
            {"reward_margin_plot", margin_plot_file().string()},
            {"config", folder_.config_file.string()}}}};
}

FinetuneResult Dpo::summarise() {
  write_plot();
  ph_.total_seconds = seconds_since(t_start_);
  FinetuneResult r;
  r.run_dir = folder_.dir;
  r.summary = summary_json();
  r.phases = ph_;
  write_file_atomic(folder_.dir / "summary.json", r.summary.dump(2) + "\n");
  con_.line("");
  con_.line(fmt::format("Summary ({}):", folder_.dir.string()));
  if (!source_.pretrained) {
    con_.line("  NOTE: the model was randomly initialised, NOT finetuned: its answers are noise.");
  }
  con_.line(fmt::format("  model         {}", source_.description));
  con_.line(fmt::format("  training      {} in {}, reference scores {}",
                        describe_steps(st_.step, steps_per_epoch_),
                        human_duration(st_.train_seconds), human_duration(reference_seconds_)));
  con_.line(fmt::format("  optimizer     {}, beta {:g}", describe_optimizer(o_), opts_.beta));
  if (!evals_.empty()) {
    const EvalRecord &a = evals_.front(), &z = evals_.back();
    con_.line(evals_.size() == 1
                  ? fmt::format("  loss          train {:.3f}, val {:.3f} (one evaluation, at "
                                "step {})",
                                a.train_loss, a.val_loss, a.step)
                  : fmt::format("  loss          train {:.3f} -> {:.3f}, val {:.3f} -> {:.3f} "
                                "(steps {} and {})",
                                a.train_loss, z.train_loss, a.val_loss, z.val_loss, a.step,
                                z.step));
    con_.line(fmt::format("  reward margin train {:.3f} -> {:.3f}, val {:.3f} -> {:.3f}",
                          a.train_rewards->margin(), z.train_rewards->margin(),
                          a.val_rewards->margin(), z.val_rewards->margin()));
  }
  if (saved_.adapter_dir)
    con_.line(fmt::format("  adapter       {}", saved_.adapter_dir->string()));
  if (saved_.model_dir)
    con_.line(fmt::format("  model folder  {}", saved_.model_dir->string()));
  if (!answers_info_.is_null()) con_.line(fmt::format("  test answers  {}", answers_file().string()));
  con_.line(fmt::format("  metrics       {}", folder_.metrics_file.string()));
  con_.line(fmt::format("  plots         {}, {}", plot_file().string(),
                        margin_plot_file().string()));
  con_.line(fmt::format("  summary       {}", (folder_.dir / "summary.json").string()));
  return r;
}

}  // namespace

FinetuneResult run_dpo(const DpoOptions& opts_in, const fs::path& resume_dir,
                       StopControl* stop) {
  const auto t_start = Clock::now();
  DpoOptions opts = opts_in;
  opts.validate();
  const FinetuneOptions& o = opts.train;
  const int threads = default_threads(o.threads);
  const kernels::ScopedThreads scoped_threads(threads);
  Console con;

  RunFolder folder = resolve_run_folder(o, resume_dir);
  if (!folder.note.empty()) con.line(folder.note);
  if (folder.finished) return {folder.dir, false, /*finished_before=*/true, {}, {}};
  RunData data = load_data(o, folder);
  LoadedModel source = load_starting_model(o, folder, con);
  Gpt2& model = *source.model;  // owned by source, which the run keeps
  PreferenceTokens pref = tokenize_preferences(
      data.ds, *source.tokenizer, std::min(o.max_length, model.config().maxT), threads);
  init_model(model, source, o);
  attach_lora(source, opts.train, folder.resuming);

  Dpo run(opts, threads, t_start, std::move(folder), std::move(data), std::move(pref),
          std::move(source), model, con);
  run.start_or_resume();
  run.print_header();
  run.reference_scores();
  run.answer_with_start_model();
  if (!run.train_loop(stop ? &stop->requested : nullptr)) return run.interrupted();
  if (stop) stop->after_training = true;
  if (!dist::is_root()) return {};  // rank 0 writes the outputs
  run.save_model();
  run.answer_test_set();
  return run.summarise();
}

}  // namespace llmft
