// The finetuning loop, following the reference's train_model_simple step by step:
//   for each epoch, for each batch: zero grads, loss, backward, AdamW step,
//   tokens_seen += batch numel, global_step += 1 (from -1), evaluate when global_step % eval_freq
//   == 0; after each epoch, a greedy sample from the first validation prompt.
// Everything the next step depends on (params, AdamW m/v/t, the loader position) is in the
// checkpoints, and nothing depends on wall time, so a resumed run ends bit-identical.
#include "llmft/train/trainer.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/progress.h"
#include "llmft/data/batch.h"
#include "llmft/data/dataset.h"
#include "llmft/data/loader.h"
#include "llmft/data/stats.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/generate/answer.h"
#include "llmft/generate/generate.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/peft.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/train/checkpoint.h"
#include "llmft/train/metrics.h"
#include "llmft/train/model_source.h"
#include "llmft/train/plot.h"
#include "llmft/dist/dist.h"
#include "llmft/train/run_setup.h"
#include "llmft/train/schedule.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The items of dataset indices [first, last) of `idx` for collate().
std::vector<CollateItem> items_for(const TokenizedDataset& data, std::span<const int64_t> idx) {
  std::vector<CollateItem> items;
  for (int64_t i : idx) items.push_back(data.item(i));
  return items;
}

// The loss over a batch's packed form (same numbers as the padded form, less work). Rows whose
// targets are all ignored have no positions there and are left out of the sequence list. With
// `dloss` (training) it also accumulates the gradient of dloss * loss_sum into the model's grads.
LossResult run_batch(Gpt2& model, const Batch& b, std::optional<float> dloss) {
  if (b.target_tokens == 0) return {};
  std::vector<int64_t> off{0};
  for (size_t s = 1; s < b.seq_offsets.size(); ++s) {
    if (b.seq_offsets[s] > off.back()) off.push_back(b.seq_offsets[s]);
  }
  return dloss ? model.forward_backward(b.packed_inputs, b.packed_targets, off, *dloss)
               : model.forward(b.packed_inputs, b.packed_targets, off, /*training=*/false);
}

CollateOptions collate_options(const FinetuneOptions& opts, const Gpt2Config& cfg) {
  CollateOptions c;
  c.allowed_max_length = std::min(opts.max_length, cfg.maxT);
  c.mask_prompt = opts.mask_prompt;
  return c;
}

// ---- The run ----------------------------------------------------------------------------------

// One run from its initialised model to its summary: the optimizer, the loaders, the loop's state
// and what the outputs report, with a member function per step of run_finetune.
class Finetune {
 public:
  Finetune(const FinetuneOptions& opts, int threads, Clock::time_point t_start, RunFolder folder,
           RunData data, LoadedModel source, Gpt2& model, Console& con)
      : opts_(opts),
        threads_(threads),
        t_start_(t_start),
        folder_(std::move(folder)),
        data_(std::move(data)),
        source_(std::move(source)),
        model_(model),
        con_(con),
        collate_(collate_options(opts, model.config())),
        adamw_(model.trainable().table.total(), adamw_config(opts)),
        train_loader_(data_.tokens, data_.split.train,
                      train_loader_options(opts.batch_size, opts.seed, collate_)),
        val_loader_(data_.tokens, data_.split.val, eval_loader_options(opts.batch_size, collate_)),
        steps_per_epoch_(train_loader_.num_batches()),
        total_steps_(run_total_steps(opts, steps_per_epoch_)),
        schedule_{parse_lr_schedule(opts.schedule), opts.lr, opts.warmup_steps, total_steps_} {
    n_params_ = model.table().numel();
    n_trainable_ = model.trainable().table.numel();
    fuse_adamw(model_, adamw_, opts);
  }
  ~Finetune() { model_.set_fused_update({}); }
  Finetune(const Finetune&) = delete;  // the loaders keep references into data_
  Finetune& operator=(const Finetune&) = delete;

  void start_or_resume();
  void print_header();
  bool train_loop(const std::atomic<bool>* stop);  // false: interrupted (checkpoint written)
  FinetuneResult interrupted();
  void save_model();
  void answer_test_set();
  void write_loss_plot();
  FinetuneResult summarise();

 private:
  StepRecord train_step();
  double loss_and_gradient(const std::vector<int64_t>& idx, const Batch& full);
  void evaluate(int64_t epoch, const StepRecord& step);
  double calc_loss_loader(const DataLoader& loader, int64_t epoch, int64_t n);
  void print_sample();
  void checkpoint();
  json run_config() const;
  json summary_json() const;
  void print_summary(const json& summary);
  bool lora() const { return opts_.lora; }
  fs::path plot_file() const { return folder_.dir / "loss-plot.svg"; }
  bool wrote_model() const { return !opts_.skip_model_writes; }

  const FinetuneOptions& opts_;
  const int threads_;
  const Clock::time_point t_start_;
  const RunFolder folder_;
  const RunData data_;
  LoadedModel source_;  // configuration, tokenizer, description (its weights are in model_)
  Gpt2& model_;
  Console& con_;
  const CollateOptions collate_;
  AdamW adamw_;
  const DataLoader train_loader_, val_loader_;
  const int64_t steps_per_epoch_, total_steps_;
  const LrSchedule schedule_;
  int64_t n_params_ = 0, n_trainable_ = 0;
  TrainState st_;
  std::optional<MetricsLog> metrics_;  // opened once a resumed run's log is restored
  std::vector<EvalRecord> evals_;
  FinetunePhases ph_;
  double last_loss_ = NAN;
  SavedModel saved_;             // where save_model() wrote the weights
  json answers_info_ = nullptr;  // what the test answers wrote, null when none
};

// A new run records its options, model and data in config.json; a resumed one restores the model,
// AdamW and the loop's position from its checkpoint (and its metrics log from the checkpoint's).
void Finetune::start_or_resume() {
  if (folder_.resuming) {
    const Gpt2::Trainable t = model_.trainable();
    // Every rank reads the checkpoint; rank 0 alone restores the metrics log and writes.
    st_ = load_checkpoint(*folder_.checkpoint, t.table, t.params, adamw_.m(), adamw_.v(),
                          dist::is_root() ? folder_.metrics_file : fs::path());
    adamw_.set_step_count(st_.adam_step);
  } else if (dist::is_root()) {
    std::error_code ec;
    fs::create_directories(folder_.dir, ec);
    write_file_atomic(folder_.config_file, run_config().dump(2) + "\n");
  }
  if (!dist::is_root()) return;
  metrics_.emplace(folder_.metrics_file, /*truncate=*/!folder_.resuming);
  if (folder_.resuming) {
    MetricsHistory h = read_metrics(folder_.metrics_file);
    evals_ = std::move(h.evals);
    if (!h.steps.empty()) last_loss_ = h.steps.back().loss;
  }
}

json Finetune::run_config() const {
  return {{"llmft_version", LLMFT_VERSION},
          {"options", to_json(opts_)},
          {"model", model_record(source_, model_.table().total())},
          {"data", data_record(opts_, data_)},
          {"steps_per_epoch", steps_per_epoch_},
          {"total_steps", total_steps_}};
}

void Finetune::print_header() {
  const DatasetSplits& split = data_.split;
  con_.line(fmt::format("Model: {}", source_.description));
  con_.line(fmt::format("Parameters: {} ({} output head)", human_count(double(n_params_), ""),
                        model_.config().tied ? "tied" : "untied"));
  if (lora()) con_.line(describe_lora(model_, opts_));
  con_.line(fmt::format("Data: {}: {} entries -> train {}, validation {}, test {} (template {}{})",
                        opts_.data_path().string(), data_.ds.size(), split.train.size(),
                        split.val.size(), split.test.size(), opts_.prompt_template,
                        opts_.mask_prompt ? ", prompt masked" : ""));
  // Nothing is cut silently: the limit is the smaller of --max-length and the model's context.
  const Truncation cut = truncation(data_.tokens, *collate_.allowed_max_length);
  if (cut.entries > 0) {
    con_.line(fmt::format("Data: {} (--max-length {}, context {})",
                          describe_truncation(cut, data_.ds.size()), opts_.max_length,
                          model_.config().maxT));
  }
  con_.line(fmt::format(
      "Training: {}, batch {}{}, AdamW lr {:g} ({}{}), weight decay {:g}{}, {} matrix products, "
      "{}",
      describe_steps(total_steps_, steps_per_epoch_), opts_.batch_size,
      opts_.grad_accum > 1 ? fmt::format(" in {} micro-batches", opts_.grad_accum) : "",
      opts_.lr, opts_.schedule,
      opts_.warmup_steps ? fmt::format(", {} warmup", opts_.warmup_steps) : "",
      opts_.weight_decay,
      opts_.grad_clip > 0 ? fmt::format(", grad clip {:g}", opts_.grad_clip) : "",
      opts_.precision, describe_threads(threads_)));
  con_.line(fmt::format("Output: {}", folder_.dir.string()));
  if (folder_.resuming) {
    con_.line(fmt::format("Resuming from {} (after step {}, epoch {}, batch {})",
                          folder_.checkpoint->string(), st_.step, st_.epoch + 1,
                          st_.batch_in_epoch));
  }
}

// ---- Training ---------------------------------------------------------------------------------

bool Finetune::train_loop(const std::atomic<bool>* stop) {
  ph_.setup_seconds = seconds_since(t_start_);
  const TrainLoop loop{"train",
                       total_steps_,
                       steps_per_epoch_,
                       [&] { return train_step(); },
                       [&](int64_t epoch, const StepRecord& r) { evaluate(epoch, r); },
                       [&] { print_sample(); },
                       [&] { checkpoint(); },
                       [](const StepRecord& r) {
                         return fmt::format("loss {:.3f} | {} tok/s", r.loss,
                                            human_count(r.tokens_per_s, ""));
                       }};
  return run_train_loop(loop, opts_, st_, stop, con_);
}

// One optimizer step on the next batch: its record goes to the metrics log and is returned.
StepRecord Finetune::train_step() {
  const int64_t epoch = st_.epoch;
  const auto t_step = Clock::now();
  const std::vector<int64_t> idx = train_loader_.batch_indices(epoch, st_.batch_in_epoch);
  const Batch full = collate(items_for(data_.tokens, idx), collate_);
  const double lr = schedule_.lr(st_.step);
  const bool fused = model_.fused_update();
  if (fused) adamw_.begin_step(static_cast<float>(lr));  // the backward updates the weights
  const double loss = loss_and_gradient(idx, full);
  const double grad_norm =
      opts_.grad_clip > 0 ? model_.clip_grad_norm(opts_.grad_clip) : model_.grad_norm();
  check_finite_step(st_.step, loss, grad_norm);
  if (!fused) {
    const Gpt2::Trainable t = model_.trainable();
    adamw_.step(t.params, t.grads, static_cast<float>(lr));
  }

  st_.tokens_seen += full.padded_tokens;
  const int64_t global_step = st_.step;  // the reference's global_step after its += 1
  ++st_.step;
  ++st_.batch_in_epoch;
  const double step_s = seconds_since(t_step);
  last_loss_ = loss;
  ++ph_.steps;
  ph_.train_seconds += step_s;
  ph_.step_seconds.push_back(step_s);
  ph_.train_tokens += full.packed_tokens();
  ph_.train_target_tokens += full.target_tokens;

  StepRecord rec;
  rec.step = global_step;
  rec.epoch = static_cast<double>(epoch) +
              static_cast<double>(st_.batch_in_epoch) / static_cast<double>(steps_per_epoch_);
  rec.loss = loss;
  rec.lr = lr;
  rec.grad_norm = grad_norm;
  rec.tokens_seen = st_.tokens_seen;
  rec.tokens_per_s = step_s > 0 ? static_cast<double>(full.padded_tokens) / step_s : 0.0;
  rec.batch = idx;
  if (metrics_) metrics_->write(rec);
  return rec;
}

// zero_grad; loss; backward: the gradient of (sum of token losses) / (unmasked tokens in the
// whole batch), accumulated micro-batch by micro-batch. With several ranks (dist.h) each takes
// its share of the batch's entries (balanced by tokens, then in --grad-accum micro-batches) and
// the gradients and loss sums are summed across the ranks: the gradient of one process over the
// whole batch. Returns that mean loss.
double Finetune::loss_and_gradient(const std::vector<int64_t>& idx, const Batch& full) {
  model_.zero_grad();
  const int64_t count = full.target_tokens;
  std::vector<int64_t> costs, mine;
  for (int64_t i : idx) costs.push_back(data_.tokens.length(static_cast<size_t>(i)));
  for (size_t k : dist::share(costs)) mine.push_back(idx[k]);
  const bool whole = dist::size() == 1 && opts_.grad_accum == 1;
  const auto n = static_cast<int64_t>(mine.size());
  const int64_t micro = (n + opts_.grad_accum - 1) / opts_.grad_accum;
  double loss_sum = 0;
  for (int64_t k = 0; k * micro < n; ++k) {
    const Batch mb =
        whole ? Batch{}
              : collate(items_for(data_.tokens, std::span(mine).subspan(
                                                    k * micro, std::min(micro, n - k * micro))),
                        collate_);
    const Batch& use = whole ? full : mb;
    if (use.target_tokens == 0) continue;  // every target masked: no loss, no gradient
    const auto id = static_cast<uint64_t>(st_.step * 1024 + dist::rank() * 64 + k + 1);
    model_.set_dropout_seed(opts_.seed ^ (0x9E3779B97F4A7C15ull * id));
    loss_sum +=
        run_batch(model_, use, static_cast<float>(1.0 / static_cast<double>(count))).loss_sum;
  }
  if (dist::size() > 1) {
    dist::sum(model_.trainable().grads);
    loss_sum = dist::sum(loss_sum);
  }
  return count > 0 ? loss_sum / static_cast<double>(count) : 0.0;
}

// Checkpoints at each epoch end, at the last step, every --checkpoint-every steps and before
// stopping. True when the run stops here (Ctrl-C or the test hook) short of its last step.
void Finetune::evaluate(int64_t epoch, const StepRecord& step) {
  const auto t_eval = Clock::now();
  EvalRecord e;
  e.step = step.step;
  e.epoch = step.epoch;
  e.tokens_seen = st_.tokens_seen;
  e.train_loss = calc_loss_loader(train_loader_, epoch, opts_.eval_batches);
  e.val_loss = calc_loss_loader(val_loader_, 0, opts_.eval_batches);
  if (metrics_) metrics_->write(e);
  evals_.push_back(e);
  const double eval_s = seconds_since(t_eval);
  ++ph_.evaluations;
  ph_.eval_seconds += eval_s;
  ph_.eval_each_seconds.push_back(eval_s);
  con_.line(fmt::format("Ep {} (Step {:06d}): Train loss {:.3f}, Val loss {:.3f}", epoch + 1,
                        step.step, e.train_loss, e.val_loss));
}

// Mean of the per-batch mean losses over the first `n` batches (eval mode: no dropout). Ranks
// take every size()-th batch and sum their sums.
double Finetune::calc_loss_loader(const DataLoader& loader, int64_t epoch, int64_t n) {
  n = std::min(n, loader.num_batches());
  double sum = 0;
  for (int64_t b = dist::rank(); b < n; b += dist::size()) {
    const Batch batch = loader.batch(epoch, b);
    sum += run_batch(model_, batch, std::nullopt).mean();
    ++ph_.eval_batches;
    ph_.eval_tokens += batch.packed_tokens();
    ph_.eval_target_tokens += batch.target_tokens;
  }
  sum = dist::sum(sum);
  return n > 0 ? sum / static_cast<double>(n) : NAN;
}

// --sample-tokens greedy tokens after the first validation prompt, printed on one line.
void Finetune::print_sample() {
  if (opts_.sample_tokens == 0 || !dist::is_root()) return;
  const auto t_sample = Clock::now();
  con_.line(greedy_sample(model_, *source_.tokenizer, data_, opts_.sample_tokens));
  ph_.sample_seconds += seconds_since(t_sample);
  ++ph_.samples;
}

void Finetune::checkpoint() {
  if (opts_.skip_model_writes || !dist::is_root()) return;
  const auto t_write = Clock::now();
  write_run_checkpoint(model_, adamw_, st_, folder_);
  write_file_atomic(plot_file(),
                    loss_plot_svg(evals_, fmt::format("{}: finetuning loss", opts_.model)));
  ph_.write_seconds += seconds_since(t_write);
}

FinetuneResult Finetune::interrupted() {
  ph_.total_seconds = seconds_since(t_start_);
  if (opts_.skip_model_writes) {
    con_.line(fmt::format("Interrupted after step {} of {} (no checkpoint: writes are off).",
                          st_.step, total_steps_));
  } else {
    con_.line(fmt::format(
        "Interrupted after step {} of {}: checkpoint saved. Continue with:\n  llmft finetune "
        "--resume {}",
        st_.step, total_steps_, folder_.dir.string()));
  }
  FinetuneResult r;
  r.run_dir = folder_.dir;
  r.interrupted = true;
  r.phases = ph_;
  return r;
}

// ---- Outputs ----------------------------------------------------------------------------------

// The finetuned model folder; with LoRA the adapter folder, and with --merge the merged model.
void Finetune::save_model() {
  const auto t_write = Clock::now();
  saved_ = save_trained_model(model_, opts_, source_, folder_.dir, con_);
  ph_.write_seconds += seconds_since(t_write);
}

// The finetuned model's answers to the test split, as test-responses.json.
void Finetune::answer_test_set() {
  const IndexRange test = data_.split.test;
  if (!opts_.test_answers || test.size() == 0) return;
  const auto t_ans = Clock::now();
  // Generation has its own, smaller buffers; training's arena and the optimizer state (its last
  // values are in the final checkpoint) make room for more streams.
  const int64_t freed = model_.release_training_memory() + adamw_.release_state();
  AnswerOptions a;
  a.prompt_template = data_.tmpl;
  a.gen.max_new_tokens = opts_.max_new_tokens;
  a.gen.precision = model_.precision();
  int64_t longest = 0;  // a test entry's tokens bound its prompt's
  for (size_t i = test.begin; i < test.end; ++i)
    longest = std::max<int64_t>(longest, data_.tokens.length(i));
  a.gen.batch_size = answer_streams(freed, model_.config(), model_.precision(),
                                    longest + opts_.max_new_tokens);
  a.label = "answers";
  GenerateStats gs;
  const fs::path answers = folder_.dir / "test-responses.json";
  const auto answered = answer_dataset(model_, *source_.tokenizer,
                                       std::span(data_.ds.entries).subspan(test.begin, test.size()),
                                       answers, a, &gs);
  const size_t n_answers = answered.size();
  const double ans_s = seconds_since(t_ans);
  ph_.answers_seconds = ans_s;
  answers_info_ = {{"file", answers.string()},
                   {"count", n_answers},
                   {"seconds", ans_s},
                   {"new_tokens", gs.new_tokens}};
  con_.line(fmt::format("Answered {} test prompts in {:.1f} s ({} new tokens) -> {}", n_answers,
                        ans_s, gs.new_tokens, answers.string()));
}

void Finetune::write_loss_plot() {
  const auto t_write = Clock::now();
  write_file_atomic(plot_file(),
                    loss_plot_svg(evals_, fmt::format("{}: finetuning loss", opts_.model)));
  ph_.write_seconds += seconds_since(t_write);
}

// summary.json, and the same told on stdout.
FinetuneResult Finetune::summarise() {
  ph_.total_seconds = seconds_since(t_start_);
  FinetuneResult r;
  r.run_dir = folder_.dir;
  r.summary = summary_json();
  r.phases = ph_;
  write_file_atomic(folder_.dir / "summary.json", r.summary.dump(2) + "\n");
  print_summary(r.summary);
  return r;
}

json Finetune::summary_json() const {
  const double train_s = st_.train_seconds;
  return {
      {"run_dir", folder_.dir.string()},
      {"model",
       {{"name", opts_.model},
        {"source", source_.spec},
        {"pretrained", source_.pretrained},
        {"fallback_random", source_.fallback},
        {"description", source_.description},
        {"tied", model_.config().tied},
        {"parameters", n_params_},
        {"trainable_parameters", n_trainable_}}},
      {"steps", st_.step},
      {"epochs", epochs_done(st_.step, steps_per_epoch_)},
      {"steps_per_epoch", steps_per_epoch_},
      {"tokens_seen", st_.tokens_seen},
      {"train_seconds", train_s},
      {"tokens_per_s", train_s > 0 ? static_cast<double>(st_.tokens_seen) / train_s : 0.0},
      {"final_batch_loss", last_loss_},
      {"final_train_loss", evals_.empty() ? json(nullptr) : json(evals_.back().train_loss)},
      {"final_val_loss", evals_.empty() ? json(nullptr) : json(evals_.back().val_loss)},
      {"first_train_loss", evals_.empty() ? json(nullptr) : json(evals_.front().train_loss)},
      {"first_val_loss", evals_.empty() ? json(nullptr) : json(evals_.front().val_loss)},
      {"optimizer", optimizer_json(opts_)},
      {"threads", threads_},
      {"ranks", dist::size()},
      {"precision", opts_.precision},
      {"total_seconds", ph_.total_seconds},
      {"phases", to_json(ph_)},
      {"outputs",
       {{"model", saved_.model_dir ? json(saved_.model_dir->string()) : json(nullptr)},
        {"adapter", saved_.adapter_dir ? json(saved_.adapter_dir->string()) : json(nullptr)},
        {"test_responses", answers_info_},
        {"metrics", folder_.metrics_file.string()},
        {"loss_plot", plot_file().string()},
        {"config", folder_.config_file.string()},
        {"checkpoint",
         wrote_model() ? json((folder_.dir / "checkpoints").string()) : json(nullptr)}}}};
}

void Finetune::print_summary(const json& summary) {
  con_.line("");
  con_.line(fmt::format("Summary ({}):", folder_.dir.string()));
  if (!source_.pretrained) {
    con_.line("  NOTE: the model was randomly initialised, NOT pretrained: its answers are not "
              "meaningful.");
  }
  con_.line(fmt::format("  model         {}", source_.description));
  con_.line(fmt::format("  training      {}, {} in {} ({}/s)",
                        describe_steps(st_.step, steps_per_epoch_),
                        human_count(double(st_.tokens_seen), "tok"),
                        human_duration(st_.train_seconds),
                        human_count(summary["tokens_per_s"].get<double>(), "tok")));
  con_.line(fmt::format("  optimizer     {}", describe_optimizer(opts_)));
  con_.line(fmt::format("  time          steps {}, evaluations {}, samples {}, writes {}{}",
                        human_duration(ph_.train_seconds), human_duration(ph_.eval_seconds),
                        human_duration(ph_.sample_seconds), human_duration(ph_.write_seconds),
                        answers_info_.is_null()
                            ? std::string()
                            : ", test answers " + human_duration(ph_.answers_seconds)));
  if (evals_.size() == 1) {
    con_.line(fmt::format("  losses        train {:.3f}, val {:.3f} (one evaluation, at step {})",
                          evals_.front().train_loss, evals_.front().val_loss,
                          evals_.front().step));
  } else if (!evals_.empty()) {
    con_.line(fmt::format("  losses        train {:.3f} -> {:.3f}, val {:.3f} -> {:.3f} "
                          "(evaluations at steps {} and {})",
                          evals_.front().train_loss, evals_.back().train_loss,
                          evals_.front().val_loss, evals_.back().val_loss, evals_.front().step,
                          evals_.back().step));
  }
  if (std::isfinite(last_loss_)) {
    con_.line(fmt::format(
        "  last batch    loss {:.3f} (the final training batch, before its update)", last_loss_));
  }
  if (saved_.adapter_dir)
    con_.line(fmt::format("  adapter       {}", saved_.adapter_dir->string()));
  if (saved_.model_dir)
    con_.line(fmt::format("  model folder  {}", saved_.model_dir->string()));
  if (!answers_info_.is_null()) {
    con_.line(fmt::format("  test answers  {}", answers_info_["file"].get<std::string>()));
  }
  con_.line(fmt::format("  metrics       {}", folder_.metrics_file.string()));
  con_.line(fmt::format("  loss plot     {}", plot_file().string()));
  con_.line(fmt::format("  summary       {}", (folder_.dir / "summary.json").string()));
}

}  // namespace

json to_json(const FinetunePhases& p) {
  return {{"setup_seconds", p.setup_seconds},
          {"train_seconds", p.train_seconds},
          {"eval_seconds", p.eval_seconds},
          {"sample_seconds", p.sample_seconds},
          {"write_seconds", p.write_seconds},
          {"answers_seconds", p.answers_seconds},
          {"total_seconds", p.total_seconds},
          {"steps", p.steps},
          {"evaluations", p.evaluations},
          {"eval_batches", p.eval_batches},
          {"samples", p.samples},
          {"train_tokens", p.train_tokens},
          {"train_target_tokens", p.train_target_tokens},
          {"eval_tokens", p.eval_tokens},
          {"eval_target_tokens", p.eval_target_tokens}};
}

FinetuneResult run_finetune(const FinetuneOptions& opts_in, const fs::path& resume_dir,
                            StopControl* stop) {
  const auto t_start = Clock::now();
  FinetuneOptions opts = opts_in;
  opts.validate();
  const int threads = default_threads(opts.threads);
  const kernels::ScopedThreads scoped_threads(threads);
  Console con;

  RunFolder folder = resolve_run_folder(opts, resume_dir);
  if (!folder.note.empty()) con.line(folder.note);
  if (folder.finished) return {folder.dir, false, /*finished_before=*/true, {}, {}};
  RunData data = load_data(opts, folder);
  LoadedModel source = load_starting_model(opts, folder, con);
  data.tokens = tokenize_dataset(data.ds, data.tmpl, *source.tokenizer, threads);
  Gpt2& model = *source.model;  // owned by source, which the run keeps
  init_model(model, source, opts);
  attach_lora(source, opts, folder.resuming);

  Finetune run(opts, threads, t_start, std::move(folder), std::move(data), std::move(source),
               model, con);
  run.start_or_resume();
  run.print_header();
  if (!run.train_loop(stop ? &stop->requested : nullptr)) return run.interrupted();
  if (stop) stop->after_training = true;
  if (opts.term_after_training) std::raise(SIGTERM);
  if (!dist::is_root()) return {};  // rank 0 writes the outputs
  run.save_model();
  run.answer_test_set();
  run.write_loss_plot();
  return run.summarise();
}

}  // namespace llmft
