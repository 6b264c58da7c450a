// The finetuning loop (SPEC §6), following the reference's train_model_simple step by step:
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
#include <optional>
#include <ctime>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/progress.h"
#include "llmft/data/batch.h"
#include "llmft/data/dataset.h"
#include "llmft/data/loader.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/generate/answer.h"
#include "llmft/generate/generate.h"
#include "llmft/io/hf_folder.h"
#include "llmft/model/adamw.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/train/checkpoint.h"
#include "llmft/train/metrics.h"
#include "llmft/train/model_source.h"
#include "llmft/train/plot.h"
#include "llmft/train/schedule.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string timestamp_name() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

json config_to_json(const Gpt2Config& c) {
  return {{"V", c.V},   {"maxT", c.maxT}, {"C", c.C},           {"L", c.L},
          {"NH", c.NH}, {"tied", c.tied}, {"dropout", c.dropout}};
}

Gpt2Config config_from_json(const json& j) {
  Gpt2Config c;
  c.V = j.at("V").get<int64_t>();
  c.maxT = j.at("maxT").get<int64_t>();
  c.C = j.at("C").get<int64_t>();
  c.L = j.at("L").get<int64_t>();
  c.NH = j.at("NH").get<int64_t>();
  c.tied = j.at("tied").get<bool>();
  c.dropout = j.at("dropout").get<float>();
  return c;
}

// Log lines go to stdout; the progress bar (stderr) is cleared first so they print above it.
struct Console {
  ProgressBar* bar = nullptr;
  void line(const std::string& s) {
    if (bar) bar->clear();
    std::fputs(s.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
};

// The items of dataset indices [first, last) of `idx` for collate().
std::vector<CollateItem> items_for(const TokenizedDataset& data, std::span<const int64_t> idx) {
  std::vector<CollateItem> items;
  for (int64_t i : idx) {
    items.push_back({data.ids(static_cast<size_t>(i)), data.prompt_lens[static_cast<size_t>(i)], i});
  }
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
                            const std::atomic<bool>* stop) {
  FinetuneOptions opts = opts_in;
  opts.validate();
  const auto t_start = Clock::now();
  const bool resuming = !resume_dir.empty();
  const int threads = opts.threads > 0 ? opts.threads : omp_get_num_procs();
  const kernels::ScopedThreads scoped_threads(threads);
  Console con;

  // ---- Run folder -------------------------------------------------------------------------------
  FinetuneResult result;
  FinetunePhases& ph = result.phases;
  fs::path run = resuming ? resume_dir
                          : (opts.output.empty() ? fs::path("runs") / timestamp_name() : opts.output);
  result.run_dir = run;
  std::error_code ec;
  const fs::path config_file = run / "config.json", metrics_file = run / "metrics.jsonl";
  if (!resuming && fs::exists(config_file, ec)) {
    throw UsageError(fmt::format("{} already holds a finetuning run", run.string()),
                     "continue it with --resume " + run.string() + ", or choose another --output");
  }
  json saved_config;
  std::optional<fs::path> ckpt;
  if (resuming) {
    saved_config = json::parse(read_file(config_file), nullptr, false);
    ckpt = latest_checkpoint(run);
    if (!ckpt) {
      throw Error(fmt::format("{}: no checkpoint to resume from", run.string()),
                  "the run stopped before its first checkpoint; start it again");
    }
  }

  // ---- Data -------------------------------------------------------------------------------------
  const PromptTemplate tmpl = parse_template(opts.prompt_template);
  const BpeTokenizer tok = BpeTokenizer::load_bundled();
  const InstructionDataset ds = load_dataset(opts.data_path());
  const DatasetSplits split = split_dataset(ds.size());
  if (split.train.size() < static_cast<size_t>(opts.batch_size)) {
    throw UsageError(fmt::format("{}: the train split has {} entries, fewer than --batch-size {}",
                                 opts.data_path().string(), split.train.size(), opts.batch_size),
                     "use a smaller --batch-size or a bigger dataset");
  }
  if (split.val.size() == 0) {
    throw UsageError(fmt::format("{}: {} entries leave an empty validation split",
                                 opts.data_path().string(), ds.size()),
                     "the 85/10/5 split needs at least 2 entries for validation; use more data");
  }
  const TokenizedDataset data = tokenize_dataset(ds, tmpl, tok, threads);

  // ---- Model ------------------------------------------------------------------------------------
  ModelSource src;
  if (resuming) {
    // The shape comes from the run's record (the named model might resolve differently now).
    const json& m = saved_config.at("model");
    src.cfg = config_from_json(m.at("config"));
    src.pretrained = m.at("pretrained").get<bool>();
    src.fallback = m.at("fallback").get<bool>();
    src.spec = m.at("source").get<std::string>();
    src.description = m.at("description").get<std::string>();
  } else {
    src = load_model_source(opts, [&](const std::string& s) { con.line(s); });
  }
  CollateOptions collate_opts;
  collate_opts.allowed_max_length = std::min(opts.max_length, src.cfg.maxT);
  collate_opts.mask_prompt = opts.mask_prompt;

  Gpt2 model(src.cfg);
  const ParamTable& table = model.table();
  if (src.params.empty()) {
    model.init_random(opts.seed);
  } else {
    std::copy(src.params.begin(), src.params.end(), model.params().begin());
    src.params = {};
  }
  model.set_precision(parse_precision(opts.precision));
  AdamW adamw(table.total(),
              {static_cast<float>(opts.lr), static_cast<float>(opts.beta1),
               static_cast<float>(opts.beta2), static_cast<float>(opts.eps),
               static_cast<float>(opts.weight_decay)});

  DataLoader train_loader(data, split.train,
                          train_loader_options(opts.batch_size, opts.seed, collate_opts));
  DataLoader val_loader(data, split.val, eval_loader_options(opts.batch_size, collate_opts));
  const int64_t steps_per_epoch = train_loader.num_batches();
  const int64_t total_steps =
      opts.max_steps > 0 ? opts.max_steps : steps_per_epoch * opts.epochs;
  const int64_t epochs = (total_steps + steps_per_epoch - 1) / steps_per_epoch;
  const LrSchedule schedule{parse_lr_schedule(opts.schedule), opts.lr, opts.warmup_steps,
                            total_steps};

  // ---- State ------------------------------------------------------------------------------------
  TrainState st;
  if (resuming) {
    st = load_checkpoint(*ckpt, table, model.params(), adamw.m(), adamw.v(), metrics_file);
    adamw.set_step_count(st.adam_step);
  } else {
    fs::create_directories(run, ec);
    json cfg = {{"llmft_version", LLMFT_VERSION},
                {"options", to_json(opts)},
                {"model",
                 {{"source", src.spec},
                  {"pretrained", src.pretrained},
                  {"fallback", src.fallback},
                  {"description", src.description},
                  {"parameters", table.total()},
                  {"config", config_to_json(src.cfg)}}},
                {"data",
                 {{"path", opts.data_path().string()},
                  {"entries", ds.size()},
                  {"train", split.train.size()},
                  {"val", split.val.size()},
                  {"test", split.test.size()}}},
                {"steps_per_epoch", steps_per_epoch},
                {"total_steps", total_steps}};
    write_file_atomic(config_file, cfg.dump(2) + "\n");
    saved_config = cfg;
  }
  MetricsLog metrics(metrics_file, /*truncate=*/!resuming);
  std::vector<EvalRecord> evals = resuming ? read_metrics(metrics_file).evals
                                           : std::vector<EvalRecord>{};

  int64_t n_params = 0;
  for (const auto& s : table.specs()) n_params += s.numel;
  con.line(fmt::format("Model: {}", src.description));
  con.line(fmt::format("Parameters: {} ({} output head)", human_count(double(n_params), ""),
                       src.cfg.tied ? "tied" : "untied"));
  con.line(fmt::format("Data: {}: {} entries -> train {}, validation {}, test {} (template {}{})",
                       opts.data_path().string(), ds.size(), split.train.size(), split.val.size(),
                       split.test.size(), opts.prompt_template,
                       opts.mask_prompt ? ", prompt masked" : ""));
  con.line(fmt::format(
      "Training: {} steps ({} per epoch, {} epoch{}), batch {}{}, AdamW lr {:g} ({}{}), weight "
      "decay {:g}{}, {} matrix products, {} thread{}",
      total_steps, steps_per_epoch, epochs, epochs == 1 ? "" : "s", opts.batch_size,
      opts.grad_accum > 1 ? fmt::format(" in {} micro-batches", opts.grad_accum) : "", opts.lr,
      opts.schedule, opts.warmup_steps ? fmt::format(", {} warmup", opts.warmup_steps) : "",
      opts.weight_decay, opts.grad_clip > 0 ? fmt::format(", grad clip {:g}", opts.grad_clip) : "",
      opts.precision, threads, threads == 1 ? "" : "s"));
  con.line(fmt::format("Output: {}", run.string()));
  if (resuming) {
    con.line(fmt::format("Resuming from {} (after step {}, epoch {}, batch {})", ckpt->string(),
                         st.step, st.epoch + 1, st.batch_in_epoch));
  }

  // ---- Helpers ----------------------------------------------------------------------------------
  // Mean of the per-batch mean losses over the first `n` batches (eval mode: no dropout).
  auto calc_loss_loader = [&](const DataLoader& loader, int64_t epoch, int64_t n) {
    n = std::min(n, loader.num_batches());
    double sum = 0;
    for (int64_t b = 0; b < n; ++b) {
      const Batch batch = loader.batch(epoch, b);
      sum += run_batch(model, batch, std::nullopt).mean();
      ++ph.eval_batches;
      ph.eval_tokens += batch.packed_tokens();
      ph.eval_target_tokens += batch.target_tokens;
    }
    return n > 0 ? sum / static_cast<double>(n) : NAN;
  };
  const std::string first_val_prompt =
      format_prompt(tmpl, ds.entries[split.val.begin]);
  auto print_sample = [&]() {
    if (opts.sample_tokens == 0) return;
    const auto t_sample = Clock::now();
    const auto prompt_ids = tok.encode(first_val_prompt, SpecialTokens::kAllow);
    GenerateOptions g;
    g.max_new_tokens = opts.sample_tokens;
    g.precision = model.precision();
    g.batch_size = 1;
    g.stop_at_eos = false;  // generate_text_simple runs the full 50 tokens
    const auto out = generate(model, {prompt_ids}, g);
    std::vector<int32_t> all = prompt_ids;
    all.insert(all.end(), out[0].begin(), out[0].end());
    std::string text = tok.decode(all);
    std::replace(text.begin(), text.end(), '\n', ' ');
    con.line(text);
    ph.sample_seconds += seconds_since(t_sample);
    ++ph.samples;
  };
  auto checkpoint = [&]() {
    if (opts.skip_model_writes) return;
    const auto t_write = Clock::now();
    st.adam_step = adamw.step_count();
    save_checkpoint(run, table, model.params(), adamw.m(), adamw.v(), st, metrics_file);
    write_file_atomic(run / "loss-plot.svg",
                      loss_plot_svg(evals, fmt::format("{}: finetuning loss", opts.model)));
    ph.write_seconds += seconds_since(t_write);
  };

  // ---- Loop -------------------------------------------------------------------------------------
  ProgressBar bar("train", total_steps, "step");
  con.bar = &bar;
  bar.update(st.step);
  ph.setup_seconds = seconds_since(t_start);
  const auto t_train = Clock::now();
  const double train_seconds_before = st.train_seconds;
  bool interrupted = false;
  double last_loss = NAN;
  const int64_t micro = opts.batch_size / opts.grad_accum;
  while (st.step < total_steps) {
    const int64_t epoch = st.epoch, b = st.batch_in_epoch;
    const auto t_step = Clock::now();
    const std::vector<int64_t> idx = train_loader.batch_indices(epoch, b);
    const Batch full = collate(items_for(data, idx), collate_opts);

    // zero_grad; loss; backward: the gradient of (sum of token losses) / (unmasked tokens in the
    // whole batch), accumulated micro-batch by micro-batch.
    model.zero_grad();
    double loss_sum = 0;
    const int64_t count = full.target_tokens;
    for (int64_t k = 0; k < opts.grad_accum; ++k) {
      const Batch mb = opts.grad_accum == 1
                           ? Batch{}
                           : collate(items_for(data, std::span(idx).subspan(k * micro, micro)),
                                     collate_opts);
      const Batch& use = opts.grad_accum == 1 ? full : mb;
      if (use.target_tokens == 0) continue;  // every target masked: no loss, no gradient
      model.set_dropout_seed(opts.seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(
                                                                     st.step * 1024 + k + 1)));
      loss_sum +=
          run_batch(model, use, static_cast<float>(1.0 / static_cast<double>(count))).loss_sum;
    }
    const double loss = count > 0 ? loss_sum / static_cast<double>(count) : 0.0;
    const double grad_norm =
        opts.grad_clip > 0 ? model.clip_grad_norm(opts.grad_clip) : model.grad_norm();
    const double lr = schedule.lr(st.step);
    adamw.step(model.params(), model.grads(), static_cast<float>(lr));

    st.tokens_seen += full.padded_tokens;
    const int64_t global_step = st.step;  // the reference's global_step after its += 1
    ++st.step;
    ++st.batch_in_epoch;
    const double step_s = seconds_since(t_step);
    last_loss = loss;
    ++ph.steps;
    ph.train_seconds += step_s;
    ph.step_seconds.push_back(step_s);
    ph.train_tokens += full.packed_tokens();
    ph.train_target_tokens += full.target_tokens;

    StepRecord rec;
    rec.step = global_step;
    rec.epoch = static_cast<double>(epoch) +
                static_cast<double>(st.batch_in_epoch) / static_cast<double>(steps_per_epoch);
    rec.loss = loss;
    rec.lr = lr;
    rec.grad_norm = grad_norm;
    rec.tokens_seen = st.tokens_seen;
    rec.tokens_per_s = step_s > 0 ? static_cast<double>(full.padded_tokens) / step_s : 0.0;
    rec.batch = idx;
    metrics.write(rec);

    if (global_step % opts.eval_freq == 0) {
      const auto t_eval = Clock::now();
      EvalRecord e;
      e.step = global_step;
      e.epoch = rec.epoch;
      e.tokens_seen = st.tokens_seen;
      e.train_loss = calc_loss_loader(train_loader, epoch, opts.eval_batches);
      e.val_loss = calc_loss_loader(val_loader, 0, opts.eval_batches);
      metrics.write(e);
      evals.push_back(e);
      const double eval_s = seconds_since(t_eval);
      ++ph.evaluations;
      ph.eval_seconds += eval_s;
      ph.eval_each_seconds.push_back(eval_s);
      con.line(fmt::format("Ep {} (Step {:06d}): Train loss {:.3f}, Val loss {:.3f}", epoch + 1,
                           global_step, e.train_loss, e.val_loss));
    }
    const bool epoch_end = st.batch_in_epoch == steps_per_epoch;
    if (epoch_end || (opts.sample_at_end && st.step == total_steps)) print_sample();
    if (epoch_end) {
      ++st.epoch;
      st.batch_in_epoch = 0;
    }
    st.train_seconds = train_seconds_before + seconds_since(t_train);
    bar.update(st.step, fmt::format("loss {:.3f} | {} tok/s", loss,
                                    human_count(rec.tokens_per_s, "")));

    const bool want_stop =
        (stop && stop->load()) || opts.interrupt_after_step == global_step;
    if (epoch_end || want_stop || st.step == total_steps ||
        (opts.checkpoint_every > 0 && st.step % opts.checkpoint_every == 0)) {
      checkpoint();
    }
    if (opts.kill_after_step == global_step) std::raise(SIGKILL);
    if (want_stop && st.step < total_steps) {
      interrupted = true;
      break;
    }
  }
  bar.finish();
  con.bar = nullptr;
  if (interrupted) {
    ph.total_seconds = seconds_since(t_start);
    if (opts.skip_model_writes) {
      con.line(fmt::format("Interrupted after step {} of {} (no checkpoint: writes are off).",
                           st.step, total_steps));
    } else {
      con.line(fmt::format(
          "Interrupted after step {} of {}: checkpoint saved. Continue with:\n  llmft finetune "
          "--resume {}",
          st.step, total_steps, run.string()));
    }
    result.interrupted = true;
    return result;
  }
  const double train_s = st.train_seconds;
  con.line(fmt::format("Training completed in {:.2f} minutes.", train_s / 60.0));

  // ---- Outputs ----------------------------------------------------------------------------------
  const fs::path model_dir = run / "model";
  if (!opts.skip_model_writes) {
    const auto t_write = Clock::now();
    write_hf_folder(model_dir, src.cfg, table, model.params());
    ph.write_seconds += seconds_since(t_write);
    con.line(fmt::format("Model saved to {}", model_dir.string()));
  }

  json answers_info = nullptr;
  if (opts.test_answers && split.test.size() > 0) {
    const auto t_ans = Clock::now();
    AnswerOptions a;
    a.prompt_template = tmpl;
    a.gen.max_new_tokens = opts.max_new_tokens;
    a.gen.precision = model.precision();
    a.gen.batch_size = 8;
    a.label = "answers";
    GenerateStats gs;
    const fs::path answers = run / "test-responses.json";
    const auto answered = answer_dataset(
        model, tok,
        std::span(ds.entries).subspan(split.test.begin, split.test.size()), answers, a, &gs);
    const size_t n_answers = answered.size();
    const double ans_s = seconds_since(t_ans);
    ph.answers_seconds = ans_s;
    answers_info = {{"file", answers.string()},
                    {"count", n_answers},
                    {"seconds", ans_s},
                    {"new_tokens", gs.new_tokens}};
    con.line(fmt::format("Answered {} test prompts in {:.1f} s ({} new tokens) -> {}",
                         n_answers, ans_s, gs.new_tokens, answers.string()));
  }

  const fs::path plot = run / "loss-plot.svg";
  {
    const auto t_write = Clock::now();
    write_file_atomic(plot, loss_plot_svg(evals, fmt::format("{}: finetuning loss", opts.model)));
    ph.write_seconds += seconds_since(t_write);
  }
  ph.total_seconds = seconds_since(t_start);
  const bool wrote_model = !opts.skip_model_writes;

  json summary = {
      {"run_dir", run.string()},
      {"model",
       {{"name", opts.model},
        {"source", src.spec},
        {"pretrained", src.pretrained},
        {"fallback_random", src.fallback},
        {"description", src.description},
        {"tied", src.cfg.tied},
        {"parameters", n_params}}},
      {"steps", st.step},
      {"epochs", epochs},
      {"tokens_seen", st.tokens_seen},
      {"train_seconds", train_s},
      {"tokens_per_s", train_s > 0 ? static_cast<double>(st.tokens_seen) / train_s : 0.0},
      {"final_batch_loss", last_loss},
      {"final_train_loss", evals.empty() ? json(nullptr) : json(evals.back().train_loss)},
      {"final_val_loss", evals.empty() ? json(nullptr) : json(evals.back().val_loss)},
      {"first_train_loss", evals.empty() ? json(nullptr) : json(evals.front().train_loss)},
      {"first_val_loss", evals.empty() ? json(nullptr) : json(evals.front().val_loss)},
      {"threads", threads},
      {"precision", opts.precision},
      {"total_seconds", ph.total_seconds},
      {"phases", to_json(ph)},
      {"outputs",
       {{"model", wrote_model ? json(model_dir.string()) : json(nullptr)},
        {"test_responses", answers_info},
        {"metrics", metrics_file.string()},
        {"loss_plot", plot.string()},
        {"config", config_file.string()},
        {"checkpoint", wrote_model ? json((run / "checkpoints").string()) : json(nullptr)}}}};
  write_file_atomic(run / "summary.json", summary.dump(2) + "\n");
  result.summary = summary;

  con.line("");
  con.line(fmt::format("Summary ({}):", run.string()));
  if (!src.pretrained) {
    con.line("  NOTE: the model was randomly initialised, NOT pretrained: its answers are not "
             "meaningful.");
  }
  con.line(fmt::format("  model         {}", src.description));
  con.line(fmt::format("  training      {} steps, {} in {} ({}/s)", st.step,
                       human_count(double(st.tokens_seen), "tok"), human_duration(train_s),
                       human_count(summary["tokens_per_s"].get<double>(), "tok")));
  con.line(fmt::format("  time          steps {}, evaluations {}, samples {}, writes {}{}",
                       human_duration(ph.train_seconds), human_duration(ph.eval_seconds),
                       human_duration(ph.sample_seconds), human_duration(ph.write_seconds),
                       answers_info.is_null()
                           ? std::string()
                           : ", test answers " + human_duration(ph.answers_seconds)));
  if (!evals.empty()) {
    // Name the evaluation steps: with few evaluations the last one can be far from the end.
    con.line(fmt::format("  losses        train {:.3f} -> {:.3f}, val {:.3f} -> {:.3f} "
                         "(evaluations at steps {} and {})",
                         evals.front().train_loss, evals.back().train_loss,
                         evals.front().val_loss, evals.back().val_loss, evals.front().step,
                         evals.back().step));
  }
  if (std::isfinite(last_loss)) {
    con.line(fmt::format("  last batch    loss {:.3f} (the final training batch, before its update)",
                         last_loss));
  }
  if (wrote_model) con.line(fmt::format("  model folder  {}", model_dir.string()));
  if (!answers_info.is_null()) {
    con.line(fmt::format("  test answers  {}", answers_info["file"].get<std::string>()));
  }
  con.line(fmt::format("  metrics       {}", metrics_file.string()));
  con.line(fmt::format("  loss plot     {}", plot.string()));
  con.line(fmt::format("  summary       {}", (run / "summary.json").string()));
  return result;
}

}  // namespace llmft
