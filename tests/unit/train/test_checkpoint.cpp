// Checkpoints: a round trip restores params, AdamW state, loop position and the metrics log;
// `latest` always names a complete checkpoint, the two newest are kept, resuming ignores
// half-written ones; damage is an Error.
#include <filesystem>
#include <set>
#include <numeric>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/model/params.h"
#include "llmft/train/checkpoint.h"
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
