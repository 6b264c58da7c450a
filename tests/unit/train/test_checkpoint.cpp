// Checkpoints: a round trip restores params, AdamW state, loop position and the metrics log;
// `latest` always names a complete checkpoint, the two newest are kept, resuming ignores
// half-written ones; damage is an Error.
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <numeric>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/sha256.h"
#include "llmft/model/params.h"
#include "llmft/train/checkpoint.h"
#include "llmft/train/run_setup.h"
#include "test_util.h"

using namespace llmft;
namespace fs = std::filesystem;

namespace {
Gpt2Config tiny() {
  Gpt2Config c;
  c.V = 11, c.maxT = 8, c.C = 4, c.L = 1, c.NH = 2;
  return c;
}
std::vector<float> ramp(int64_t n, float start) {
  std::vector<float> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}
}  // namespace

TEST(Checkpoint, RoundTripRestoresEverything) {
  test::TempDir dir;
  const ParamTable table(tiny());
  const auto p = ramp(table.total(), 0.5f), m = ramp(table.total(), -3.0f),
             v = ramp(table.total(), 7.0f);
  TrainState st;
  st.step = 12, st.epoch = 1, st.batch_in_epoch = 3, st.tokens_seen = 4567, st.adam_step = 12;
  st.train_seconds = 1.25;
  st.extra = {{"note", "x"}};
  write_file_atomic(dir / "metrics.jsonl", std::string_view("{\"step\":0}\n"));
  const fs::path ck = save_checkpoint(dir.path(), table, p, m, v, st, dir / "metrics.jsonl");
  EXPECT_EQ(ck.filename(), "step-000012");
  ASSERT_EQ(latest_checkpoint(dir.path()), ck);

  // The live log has moved on (a killed run); loading restores the checkpoint's copy.
  write_file_atomic(dir / "metrics.jsonl", std::string_view("{\"step\":0}\n{\"step\":1}\n{\"st"));
  std::vector<float> p2(p.size()), m2(p.size()), v2(p.size());
  const TrainState back = load_checkpoint(ck, table, p2, m2, v2, dir / "metrics.jsonl");
  // Padding between tensors is not stored; compare tensor by tensor.
  for (const auto& s : table.specs()) {
    const auto a = table.view(std::span<const float>(p2), s), b = table.view(std::span<const float>(p), s);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << s.name;
    const auto am = table.view(std::span<const float>(m2), s), bm = table.view(std::span<const float>(m), s);
    EXPECT_TRUE(std::equal(am.begin(), am.end(), bm.begin())) << s.name;
    const auto av = table.view(std::span<const float>(v2), s), bv = table.view(std::span<const float>(v), s);
    EXPECT_TRUE(std::equal(av.begin(), av.end(), bv.begin())) << s.name;
  }
  EXPECT_EQ(back.step, 12);
  EXPECT_EQ(back.epoch, 1);
  EXPECT_EQ(back.batch_in_epoch, 3);
  EXPECT_EQ(back.tokens_seen, 4567);
  EXPECT_EQ(back.adam_step, 12);
  EXPECT_EQ(back.train_seconds, 1.25);
  EXPECT_EQ(back.extra["note"], "x");
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), "{\"step\":0}\n");
}

TEST(Checkpoint, KeepsTheNewestTwoAndLatestNamesTheNewest) {
  test::TempDir dir;
  const ParamTable table(tiny());
  const auto p = ramp(table.total(), 0.f);
  TrainState st;
  fs::path ck;
  for (int64_t step : {3, 6, 12}) {
    st.step = step;
    ck = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  }
  EXPECT_EQ(read_file(dir / "checkpoints" / "latest"), "step-000012\n");
  std::set<std::string> dirs;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
    if (e.is_directory()) dirs.insert(e.path().filename().string());
  EXPECT_EQ(dirs, (std::set<std::string>{"step-000006", "step-000012"}));
  EXPECT_TRUE(fs::exists(ck / "model.safetensors"));
  // Saving the same step again (epoch end that is also a --checkpoint-every step) works.
  EXPECT_NO_THROW(save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl"));
  // Ordered by step number, not by name: step 1000000 is newer than step 999999.
  st.step = 999999;
  save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  st.step = 1000000;
  save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  EXPECT_EQ(latest_checkpoint(dir.path()), dir / "checkpoints" / "step-1000000");
}

// A write cut short leaves a temporary folder (or a step folder without its state, made by
// hand): resuming takes the newest complete checkpoint, whatever `latest` says.
TEST(Checkpoint, ResumeIgnoresHalfWrittenCheckpoints) {
  test::TempDir dir;
  EXPECT_EQ(latest_checkpoint(dir.path()), std::nullopt);
  const ParamTable table(tiny());
  const auto p = ramp(table.total(), 0.f);
  TrainState st;
  st.step = 4;
  const auto ck = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  fs::create_directories(dir / "checkpoints" / ".tmp-step-000008-1234abcd");
  write_file_atomic(dir / "checkpoints" / ".tmp-step-000008-1234abcd" / "model.safetensors",
                    std::string_view("partial"));
  fs::create_directories(dir / "checkpoints" / "step-000009");  // no state.json
  write_file_atomic(dir / "checkpoints" / "latest", std::string_view("step-000009\n"));
  EXPECT_EQ(latest_checkpoint(dir.path()), ck);
  fs::remove(dir / "checkpoints" / "latest");
  EXPECT_EQ(latest_checkpoint(dir.path()), ck);
}

TEST(Checkpoint, MissingOrDamagedIsAnError) {
  test::TempDir dir;
  const ParamTable table(tiny());
  auto p = ramp(table.total(), 0.f);
  TrainState st;
  st.step = 1;
  const auto ck = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  write_file_atomic(ck / "optimizer.safetensors", std::string_view("garbage"));
  EXPECT_THROW(load_checkpoint(ck, table, p, p, p, dir / "m.jsonl"), Error);
  // A checkpoint of another shape does not load.
  Gpt2Config other = tiny();
  other.C = 6;
  const ParamTable table2(other);
  std::vector<float> q(static_cast<size_t>(table2.total()));
  const auto ck2 = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  EXPECT_THROW(load_checkpoint(ck2, table2, q, q, q, dir / "m.jsonl"), Error);
}

namespace {
void flip_byte(const fs::path& file, size_t at) {
  std::string bytes = read_file(file);
  bytes[at % bytes.size()] ^= 0x01;
  write_file_atomic(file, bytes);  // same size: only the checksum can tell
}
}  // namespace

// Issue 16: a bit flip in the optimizer state went undetected. state.json records each file's
// sha256; --resume falls back to the older kept checkpoint, and stops when that is damaged too.
TEST(Checkpoint, ChecksumsCatchABitFlipAndResumeFallsBack) {
  test::TempDir dir;
  const ParamTable table(tiny());
  const auto p = ramp(table.total(), 0.5f);
  TrainState st;
  st.step = 1;
  const auto older = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  st.step = 2;
  const auto newer = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  EXPECT_EQ(checkpoint_damage(newer), "");
  EXPECT_EQ(resumable_checkpoint(dir.path()), newer);

  flip_byte(newer / "optimizer.safetensors", 1000);
  const std::string damage = checkpoint_damage(newer);
  EXPECT_NE(damage.find((newer / "optimizer.safetensors").string() + ": sha256 "), std::string::npos)
      << damage;
  EXPECT_NE(damage.find("the checkpoint is damaged"), std::string::npos) << damage;
  EXPECT_EQ(resumable_checkpoint(dir.path()), older);  // with a note on stderr

  flip_byte(older / "model.safetensors", 200);
  try {
    resumable_checkpoint(dir.path());
    ADD_FAILURE() << "damaged checkpoints accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), damage);  // the newest one's damage
    EXPECT_NE(e.hint().find("older checkpoint is damaged too"), std::string::npos) << e.hint();
  }
  EXPECT_EQ(resumable_checkpoint(dir / "no-run"), std::nullopt);
}

TEST(Checkpoint, OldCheckpointsWithoutChecksumsStillResume) {
  test::TempDir dir;
  const ParamTable table(tiny());
  auto p = ramp(table.total(), 0.5f);
  TrainState st;
  st.step = 3;
  const auto ck = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  auto j = nlohmann::json::parse(read_file(ck / "state.json"));
  ASSERT_TRUE(j.contains("sha256"));
  EXPECT_EQ(j["sha256"]["optimizer.safetensors"], sha256_file(ck / "optimizer.safetensors"));
  j.erase("sha256");
  write_file_atomic(ck / "state.json", j.dump(2));
  EXPECT_EQ(checkpoint_damage(ck), "");
  EXPECT_EQ(resumable_checkpoint(dir.path()), ck);
  std::vector<float> q(p.size());
  EXPECT_EQ(load_checkpoint(ck, table, q, q, q, {}).step, 3);
}

// Issue 16: counters a run cannot have are one clear error naming the file and the field (they
// gave internal errors, or trained nothing and exited 0).
TEST(Checkpoint, ImpossibleStateValuesAreRefused) {
  const auto error_of = [](const char* key, nlohmann::json value) -> std::string {
    TrainState st;
    st.step = 4, st.epoch = 1, st.batch_in_epoch = 1, st.adam_step = 4;
    nlohmann::json j = to_json(st);
    j[key] = value;
    try {
      train_state_from_json(j, "ck/state.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of("adam_step", -1), "ck/state.json: bad checkpoint state: adam_step is -1, expected 0 or more");
  EXPECT_EQ(error_of("step", -5), "ck/state.json: bad checkpoint state: step is -5, expected 0 or more");
  EXPECT_EQ(error_of("epoch", -3), "ck/state.json: bad checkpoint state: epoch is -3, expected 0 or more");
  EXPECT_EQ(error_of("train_seconds", -1.0),
            "ck/state.json: bad checkpoint state: train_seconds is -1, expected 0 or more");
  EXPECT_EQ(error_of("step", 4), "");
  // Found by fuzz_checkpoint: a number that is not a whole one in 64 bits was cast to an integer
  // (undefined behaviour) before it could be refused.
  EXPECT_EQ(error_of("format_version", 1.3333e29),
            "ck/state.json: bad checkpoint state: format_version is 1.3333e+29, expected a whole "
            "number");
  EXPECT_EQ(error_of("step", 2.5),
            "ck/state.json: bad checkpoint state: step is 2.5, expected a whole number");
  EXPECT_EQ(error_of("tokens_seen", 18446744073709551615ull),
            "ck/state.json: bad checkpoint state: tokens_seen is 18446744073709551615, expected a "
            "whole number");
}

TEST(Checkpoint, DeeplyNestedStateIsAClearError) {
  test::TempDir dir;
  const ParamTable table(tiny());
  auto p = ramp(table.total(), 0.f);
  TrainState st;
  st.step = 1;
  const auto ck = save_checkpoint(dir.path(), table, p, p, p, st, dir / "absent.jsonl");
  write_file_atomic(ck / "state.json", "{\"extra\": " + std::string(100000, '[') + "}");
  try {
    load_checkpoint(ck, table, p, p, p, dir / "m.jsonl");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              (ck / "state.json").string() + ": JSON nested deeper than 256 levels at line 1, column 266");
  }
}

TEST(Checkpoint, NonFiniteWeightsAreRefusedNamingTheTensor) {
  test::TempDir dir;
  const ParamTable table(tiny());
  auto p = ramp(table.total(), 0.f);
  TrainState st;
  st.step = 1;
  auto bad = p;
  table.view(std::span<float>(bad), *table.find("h.0.mlp.c_fc.weight"))[3] =
      std::numeric_limits<float>::quiet_NaN();
  const auto ck = save_checkpoint(dir.path(), table, bad, p, p, st, dir / "absent.jsonl");
  try {
    load_checkpoint(ck, table, p, p, p, dir / "m.jsonl");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("h.0.mlp.c_fc.weight' holds NaN at element 3 (of 64)"),
              std::string::npos)
        << e.what();
  }
}

TEST(Checkpoint, StateBeyondTheRunIsRefusedBeforeTraining) {
  int steps = 0;
  TrainLoop loop{"train", /*total_steps=*/10, /*steps_per_epoch=*/5,
                 [&] { ++steps; return StepRecord{}; },
                 [](int64_t, const StepRecord&) {}, [] {}, [] {},
                 [](const StepRecord&) { return std::string(); }};
  FinetuneOptions opts;
  Console con;
  TrainState st;
  st.step = 7, st.epoch = 1, st.batch_in_epoch = 99999999;
  try {
    run_train_loop(loop, opts, st, nullptr, con);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "the checkpoint's state (step 7, batch 99999999 of epoch 2) does "
                                     "not fit this run (10 steps, 5 per epoch)");
  }
  st.batch_in_epoch = 0, st.step = 11;
  EXPECT_THROW(run_train_loop(loop, opts, st, nullptr, con), Error);
  EXPECT_EQ(steps, 0);
}
