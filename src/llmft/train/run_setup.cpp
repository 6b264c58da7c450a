// The steps of a finetuning run before its model; see run_setup.h.
#include "llmft/train/run_setup.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>

#include <omp.h>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/core/progress.h"
#include "llmft/dist/dist.h"
#include "llmft/generate/decoder.h"
#include "llmft/generate/generate.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/peft.h"
#include "llmft/model/gpt2.h"
#include "llmft/train/checkpoint.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string timestamp_name() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

}  // namespace

RunFolder resolve_run_folder(const FinetuneOptions& opts, const fs::path& resume_dir) {
  RunFolder f;
  f.resuming = !resume_dir.empty();
  f.dir = f.resuming ? resume_dir
                     : (opts.output.empty() ? fs::path("runs") / timestamp_name() : opts.output);
  std::string dir = f.dir.string();
  dist::broadcast(dir);  // rank 0's name (a timestamp) on every rank
  f.dir = dir;
  f.config_file = f.dir / "config.json";
  f.metrics_file = f.dir / "metrics.jsonl";
  std::error_code ec;
  if (!f.resuming) {
    if (!dist::is_root() || !fs::exists(f.config_file, ec)) return f;  // rank 0 decides
    if (latest_checkpoint(f.dir)) {
      throw UsageError(fmt::format("{} already holds a run with a checkpoint", f.dir.string()),
                       "continue it with --resume " + f.dir.string() +
                           ", or choose another --output");
    }
    f.note = fmt::format("{}: the run there stopped before its first checkpoint; starting it "
                         "again in place",
                         f.dir.string());
    return f;
  }
  const std::string config_text = read_file(f.config_file);
  f.saved_config = parse_json(config_text, f.config_file.string(),
                              "the run folder is damaged; start the run again");
  f.checkpoint = resumable_checkpoint(f.dir);  // verified; the older one if the newest is damaged
  if (!f.checkpoint) {
    f.resuming = false;  // a new run with the recorded options, in the same folder
    f.note = fmt::format("{}: the run stopped before its first checkpoint; starting it again "
                         "from step 0 with its recorded options",
                         f.dir.string());
    return f;
  }
  const fs::path state_file = *f.checkpoint / "state.json";
  const std::string state_text = read_file(state_file);
  f.checkpoint_step =
      train_state_from_json(parse_json(state_text, state_file.string()), state_file.string()).step;
  const int64_t per_epoch = f.saved_config.value("steps_per_epoch", int64_t{0});
  const int64_t recorded = f.saved_config.value("total_steps", int64_t{0});
  const int64_t total = run_total_steps(opts, per_epoch);
  if (per_epoch <= 0 || recorded <= 0) {
    throw Error(fmt::format("{}: no \"steps_per_epoch\" and \"total_steps\"",
                            f.config_file.string()),
                "the run folder is damaged; start the run again");
  }
  if (total < recorded) {
    throw UsageError(fmt::format("--max-steps / --epochs give {}, fewer than the run's {}",
                                 describe_steps(total, per_epoch), recorded),
                     "a run can be extended, not shortened; give a larger --max-steps or --epochs");
  }
  if (total > recorded) {
    f.extending = true;
    json& o = f.saved_config["options"];
    o["max_steps"] = opts.max_steps;
    o["epochs"] = opts.epochs;
    f.saved_config["total_steps"] = total;
    f.note = fmt::format("Extending the run from {} to {}; the learning rate follows a {}-step "
                         "schedule from here",
                         describe_steps(recorded, per_epoch), describe_steps(total, per_epoch),
                         total);
  } else if (f.checkpoint_step >= total && fs::exists(f.dir / "summary.json", ec)) {
    f.finished = true;
    f.note = fmt::format("{}: the run is finished ({}); nothing to do. To train on, resume with a "
                         "larger --max-steps or --epochs",
                         f.dir.string(), describe_steps(f.checkpoint_step, per_epoch));
  }
  return f;
}

int64_t run_total_steps(const FinetuneOptions& opts, int64_t steps_per_epoch) {
  return opts.max_steps > 0 ? opts.max_steps : steps_per_epoch * opts.epochs;
}

double epochs_done(int64_t steps, int64_t steps_per_epoch) {
  return steps_per_epoch > 0 ? static_cast<double>(steps) / static_cast<double>(steps_per_epoch)
                             : 0.0;
}

std::string describe_steps(int64_t steps, int64_t steps_per_epoch) {
  std::string s = fmt::format("{} step{}", steps, steps == 1 ? "" : "s");
  if (steps_per_epoch <= 0) return s;
  const std::string per =
      fmt::format("{} step{}", steps_per_epoch, steps_per_epoch == 1 ? "" : "s");
  if (steps % steps_per_epoch == 0) {
    const int64_t e = steps / steps_per_epoch;
    return fmt::format("{} ({} epoch{} of {})", s, e, e == 1 ? "" : "s", per);
  }
  const double e = epochs_done(steps, steps_per_epoch);
  if (e < 1) return fmt::format("{} ({:.2f} of an epoch of {})", s, e, per);
  return fmt::format("{} ({:.2f} epochs of {})", s, e, per);
}

namespace {

std::string fnv1a_hex(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace

RunData load_data(const FinetuneOptions& opts, const RunFolder& folder) {
  RunData d;
  d.tmpl = parse_template(opts.prompt_template);
  const std::string bytes = read_file(opts.data_path());
  d.fingerprint = fnv1a_hex(bytes);
  d.ds = parse_dataset(bytes, opts.data_path());
  d.split = split_dataset(d.ds.size());
  if (folder.resuming) {
    const json rec = folder.saved_config.value("data", json::object());
    const std::string was = rec.value("fingerprint", d.fingerprint);
    if (was != d.fingerprint || rec.value("entries", d.ds.size()) != d.ds.size()) {
      throw Error(fmt::format("{}: the dataset changed since the run in {} started",
                              opts.data_path().string(), folder.dir.string()),
                  "a run continues on the data it started with; restore the file, or start a "
                  "new run with --output");
    }
  }
  if (d.split.train.size() < static_cast<size_t>(opts.batch_size)) {
    throw UsageError(fmt::format("{}: the train split has {} entries, fewer than --batch-size {}",
                                 opts.data_path().string(), d.split.train.size(), opts.batch_size),
                     "use a smaller --batch-size or a bigger dataset");
  }
  if (d.split.val.size() == 0) {
    throw UsageError(fmt::format("{}: {} entries leave an empty validation split",
                                 opts.data_path().string(), d.ds.size()),
                     "the 85/10/5 split needs at least 2 entries for validation; use more data");
  }
  return d;
}

json data_record(const FinetuneOptions& opts, const RunData& data) {
  return {{"path", opts.data_path().string()},
          {"fingerprint", data.fingerprint},
          {"entries", data.ds.size()},
          {"train", data.split.train.size()},
          {"val", data.split.val.size()},
          {"test", data.split.test.size()}};
}

void Console::line(const std::string& s) {
  if (bar) bar->clear();
  std::fputs(s.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

int default_threads(int requested) {
  if (requested > 0) return requested;
  // Ranks on one machine share its cores.
  return std::max(1, omp_get_num_procs() / dist::local_size());
}

std::string describe_threads(int threads) {
  const std::string t = fmt::format("{} thread{}", threads, threads == 1 ? "" : "s");
  return dist::size() > 1 ? fmt::format("{} ranks x {}", dist::size(), t) : t;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

LoadedModel load_starting_model(const FinetuneOptions& opts, const RunFolder& folder,
                                Console& con) {
  if (folder.resuming && !opts.lora)
    return model_from_record(folder.saved_config, folder.config_file.string(),
                             *folder.checkpoint / "model.safetensors");
  LoadedModel m = load_finetune_model(opts, [&](const std::string& s) { con.line(s); });
  if (folder.resuming) {
    const Gpt2Config rec = recorded_config(folder.saved_config, folder.config_file.string());
    if (rec.describe() != m.cfg().describe())
      throw Error(fmt::format("{} is now {}, but the run trained an adapter for {}", opts.model,
                              m.cfg().describe(), rec.describe()),
                  "the base model of a LoRA run must stay the same to resume it");
  }
  return m;
}

LoraConfig lora_config(const FinetuneOptions& opts) {
  LoraConfig lc;
  lc.rank = opts.lora_rank;
  lc.alpha = opts.lora_alpha;
  lc.dropout = opts.lora_dropout;
  lc.rslora = opts.lora_rslora;
  lc.targets = parse_lora_targets(opts.lora_targets);
  lc.layers = opts.lora_layers;
  return lc;
}

void attach_lora(LoadedModel& source, FinetuneOptions& opts, bool resuming) {
  if (!opts.lora) return;
  if (!resuming && !opts.adapter.empty()) {
    source.lora = read_peft_adapter(opts.adapter, source.cfg()).lora;
    const LoraConfig& lc = source.lora->config();
    opts.lora_rank = lc.rank;
    opts.lora_alpha = lc.alpha;
    opts.lora_dropout = lc.dropout;
    opts.lora_rslora = lc.rslora;
    opts.lora_layers = lc.layers;
    opts.lora_targets.clear();
    for (LoraTarget t : lc.targets)
      opts.lora_targets += (opts.lora_targets.empty() ? "" : ",") + std::string(lora_module(t));
  } else {
    source.lora = std::make_unique<Lora>(source.cfg(), lora_config(opts));
    if (!resuming) source.lora->init(opts.seed);
  }
  source.model->set_lora(source.lora.get());
  // Frozen in bf16: the products read only the bf16 copy, so the fp32 matrices can go.
  if (source.model->precision() == Precision::kBf16) source.model->keep_base_in_bf16();
}

std::string describe_lora(Gpt2& model, const FinetuneOptions& opts) {
  const LoraConfig& lc = model.lora()->config();
  const double trainable = static_cast<double>(model.trainable().table.numel());
  return fmt::format("LoRA: {} trainable parameters ({:.2f}% of the model): rank {}, alpha {:g} "
                     "(scale {:g}), dropout {:g}, on {}{}",
                     human_count(trainable, ""),
                     100.0 * trainable / static_cast<double>(model.table().numel()), lc.rank,
                     lc.alpha, lc.scale(), lc.dropout, opts.lora_targets,
                     opts.adapter.empty() ? "" : ", continuing " + opts.adapter.string());
}

void init_model(Gpt2& model, const LoadedModel& source, const FinetuneOptions& opts) {
  if (source.random_init) model.init_random(opts.seed);
  model.set_precision(parse_precision(opts.precision));
}

AdamWConfig adamw_config(const FinetuneOptions& opts) {
  return {static_cast<float>(opts.lr), static_cast<float>(opts.beta1),
          static_cast<float>(opts.beta2), static_cast<float>(opts.eps),
          static_cast<float>(opts.weight_decay)};
}

void fuse_adamw(Gpt2& model, AdamW& adamw, const FinetuneOptions& opts) {
  if (opts.lora || opts.grad_clip > 0 || opts.grad_accum != 1 || dist::size() != 1) return;
  model.set_fused_update([&model, &adamw](int64_t offset, std::span<const float> g) {
    adamw.update(model.params(), offset, g);
  });
}

void check_finite_step(int64_t step, double loss, double grad_norm) {
  if (std::isfinite(loss) && std::isfinite(grad_norm)) return;
  throw Error(fmt::format("step {}: the loss is {} and the gradient norm {}: training stopped "
                          "before this update (the last checkpoint is kept)",
                          step, loss, grad_norm),
              "start again with a lower --lr, or with --grad-clip 1.0");
}

std::string base_model_name(const FinetuneOptions& opts, const LoadedModel& source) {
  return source.dir.empty() || !std::filesystem::exists(opts.model) ? opts.model
                                                                      : source.dir.string();
}

SavedModel save_trained_model(Gpt2& model, const FinetuneOptions& opts, const LoadedModel& source,
                              const std::filesystem::path& run_dir, Console& con) {
  SavedModel saved;
  if (opts.skip_model_writes) return saved;
  if (opts.lora) {
    saved.adapter_dir = run_dir / "adapter";
    write_peft_adapter(*saved.adapter_dir, *model.lora(), base_model_name(opts, source));
    con.line(fmt::format("Adapter saved to {} (PEFT layout)", saved.adapter_dir->string()));
    if (!opts.merge) return saved;
  }
  saved.model_dir = run_dir / "model";
  if (opts.lora) {
    LoadedModel base;
    if (model.base_in_bf16()) {
      base = load_finetune_model(opts, [&](const std::string& s) { con.line(s); });
      if (base.random_init) base.model->init_random(opts.seed);
    }
    const auto merged = merged_model(model.base_in_bf16() ? *base.model : model, *model.lora());
    write_hf_folder(*saved.model_dir, merged->config(), merged->table(), merged->params());
  } else {
    write_hf_folder(*saved.model_dir, model.config(), model.table(), model.params());
  }
  con.line(fmt::format("{} saved to {}", opts.lora ? "Merged model" : "Model",
                       saved.model_dir->string()));
  return saved;
}

bool run_train_loop(const TrainLoop& loop, const FinetuneOptions& opts, TrainState& st,
                    const std::atomic<bool>* stop, Console& con) {
  const auto t_loop = std::chrono::steady_clock::now();
  auto t_checkpoint = t_loop;
  const double seconds_before = st.train_seconds;
  if (st.step > loop.total_steps || st.batch_in_epoch >= loop.steps_per_epoch) {
    throw Error(fmt::format("the checkpoint's state (step {}, batch {} of epoch {}) does not fit this "
                            "run ({} steps, {} per epoch)",
                            st.step, st.batch_in_epoch, st.epoch + 1, loop.total_steps,
                            loop.steps_per_epoch),
                "the checkpoint is damaged or from another run: resume from another one");
  }
  if (st.step >= loop.total_steps) {  // resumed after the last step: only the outputs are left
    con.bar = nullptr;
    con.line(fmt::format("Training was complete ({}); writing the outputs.",
                         describe_steps(st.step, loop.steps_per_epoch)));
    return true;
  }
  ProgressBar bar(loop.name, loop.total_steps, "step");
  con.bar = &bar;
  bar.update(st.step);
  bool interrupted = false;
  while (st.step < loop.total_steps && !interrupted) {
    const int64_t epoch = st.epoch;
    const StepRecord rec = loop.step();  // advances st.step and st.batch_in_epoch
    if (rec.step % opts.eval_freq == 0 || st.step == loop.total_steps) loop.evaluate(epoch, rec);
    const bool epoch_end = st.batch_in_epoch == loop.steps_per_epoch;
    if (epoch_end || (opts.sample_at_end && st.step == loop.total_steps)) loop.sample();
    if (epoch_end) {
      ++st.epoch;
      st.batch_in_epoch = 0;
    }
    st.train_seconds = seconds_before + seconds_since(t_loop);
    bar.update(st.step, loop.bar_text(rec));
    if (opts.term_after_step == rec.step) std::raise(SIGTERM);
    // Every rank of a data-parallel run stops at the same step.
    const bool want_stop =
        dist::any((stop && stop->load()) || opts.interrupt_after_step == rec.step);
    const bool timed = opts.checkpoint_minutes > 0 &&
                       seconds_since(t_checkpoint) >= 60.0 * opts.checkpoint_minutes;
    if (epoch_end || want_stop || timed || st.step == loop.total_steps ||
        (opts.checkpoint_every > 0 && st.step % opts.checkpoint_every == 0)) {
      loop.checkpoint();
      t_checkpoint = std::chrono::steady_clock::now();
    }
    if (opts.kill_after_step == rec.step) std::raise(SIGKILL);
    interrupted = want_stop && st.step < loop.total_steps;
  }
  bar.finish();
  con.bar = nullptr;
  if (!interrupted)
    con.line(fmt::format("Training completed in {:.2f} minutes.", st.train_seconds / 60.0));
  return !interrupted;
}

void write_run_checkpoint(Gpt2& model, const AdamW& adamw, TrainState& st,
                          const RunFolder& folder) {
  st.adam_step = adamw.step_count();
  const Gpt2::Trainable t = model.trainable();
  save_checkpoint(folder.dir, t.table, t.params, adamw.m(), adamw.v(), st, folder.metrics_file);
  if (folder.extending) write_file_atomic(folder.config_file, folder.saved_config.dump(2) + "\n");
}

int64_t answer_streams(int64_t freed, const Gpt2Config& cfg, Precision precision, int64_t tokens) {
  const int64_t per_stream =
      Decoder::stream_bytes(cfg, std::clamp<int64_t>(tokens, 1, cfg.maxT), precision);
  return std::clamp<int64_t>(freed / per_stream, 8, GenerateOptions{}.batch_size);
}

std::string greedy_sample(Gpt2& model, const BpeTokenizer& tok, const RunData& data,
                          int64_t tokens) {
  const std::string prompt = format_prompt(data.tmpl, data.ds.entries[data.split.val.begin]);
  const auto prompt_ids = tok.encode(prompt, SpecialTokens::kAllow);
  GenerateOptions g;
  g.max_new_tokens = tokens;
  g.precision = model.precision();
  g.batch_size = 1;
  g.stop_at_eos = false;  // generate_text_simple runs the full 50 tokens
  const auto out = generate(model, {prompt_ids}, g);
  std::vector<int32_t> all = prompt_ids;
  all.insert(all.end(), out[0].begin(), out[0].end());
  std::string text = tok.decode(all);
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

}  // namespace llmft
