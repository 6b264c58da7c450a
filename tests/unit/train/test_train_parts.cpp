// The trainer's small parts: learning-rate schedules, the metrics log, the SVG loss plot, option
// checks and the config round trip.
#include <cmath>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/generate/decoder.h"
#include "llmft/train/run_setup.h"
#include "llmft/train/metrics.h"
#include "llmft/train/options.h"
#include "llmft/train/plot.h"
#include "llmft/train/schedule.h"
#include "test_util.h"

using namespace llmft;

TEST(Schedule, ConstantIsTheBaseRate) {
  LrSchedule s{LrScheduleKind::kConstant, 5e-5, 0, 10};
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(s.lr(i), 5e-5);
}

TEST(Schedule, WarmupRampsThenLinearDecays) {
  LrSchedule s{LrScheduleKind::kLinear, 1.0, 4, 14};
  EXPECT_DOUBLE_EQ(s.lr(0), 0.25);
  EXPECT_DOUBLE_EQ(s.lr(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(4), 1.0);   // first decay step: p = 0
  EXPECT_DOUBLE_EQ(s.lr(9), 0.5);   // p = 5/10
  EXPECT_DOUBLE_EQ(s.lr(13), 0.1);  // last step still moves
  EXPECT_DOUBLE_EQ(s.lr(14), 0.0);
}

TEST(Schedule, CosineHalfwayIsHalf) {
  LrSchedule s{LrScheduleKind::kCosine, 2.0, 0, 10};
  EXPECT_DOUBLE_EQ(s.lr(0), 2.0);
  EXPECT_NEAR(s.lr(5), 1.0, 1e-12);  // cos(pi/2) rounding
  EXPECT_GT(s.lr(9), 0.0);
  EXPECT_LT(s.lr(9), s.lr(8));
}

TEST(Schedule, UnknownNameIsAUsageError) {
  EXPECT_THROW(parse_lr_schedule("exp"), UsageError);
  EXPECT_EQ(parse_lr_schedule("cosine"), LrScheduleKind::kCosine);
}

TEST(Metrics, WritesAndReadsBackExactly) {
  test::TempDir dir;
  const auto p = dir / "metrics.jsonl";
  StepRecord a{0, 0.125, 3.8412345678901234, 5e-5, 12.5, 1024, 333.3, {4, 1, 7}, {}};
  EvalRecord e{0, 0.125, 1024, 3.84, 3.76, {}, {}};
  {
    MetricsLog log(p, true);
    log.write(a);
    log.write(e);
  }
  const auto text = read_file(p);
  EXPECT_NE(text.find("\"loss\":3.8412345678901234"), std::string::npos) << text;
  EXPECT_NE(text.find("\"batch\":[4,1,7]"), std::string::npos) << text;
  // A torn last line (a killed run) is skipped.
  write_file_atomic(p, text + "{\"step\":1,\"ep");
  const auto h = read_metrics(p);
  ASSERT_EQ(h.steps.size(), 1u);
  ASSERT_EQ(h.evals.size(), 1u);
  EXPECT_EQ(h.steps[0].loss, a.loss);
  EXPECT_EQ(h.steps[0].batch, a.batch);
  EXPECT_EQ(h.evals[0].val_loss, 3.76);
  // Append mode keeps what was there.
  {
    MetricsLog log(dir / "m2.jsonl", true);
    log.write(a);
  }
  {
    MetricsLog log(dir / "m2.jsonl", false);
    log.write(e);
  }
  const auto h2 = read_metrics(dir / "m2.jsonl");
  EXPECT_EQ(h2.steps.size(), 1u);
  EXPECT_EQ(h2.evals.size(), 1u);
}

TEST(Metrics, DamagedLineInTheMiddleIsAnError) {
  test::TempDir dir;
  write_file_atomic(dir / "m.jsonl", std::string_view("not json\n{\"step\":0}\n"));
  EXPECT_THROW(read_metrics(dir / "m.jsonl"), Error);
}

TEST(Plot, HasBothCurvesAxesAndLegend) {
  std::vector<EvalRecord> ev;
  for (int i = 0; i < 10; ++i) {
    ev.push_back({i * 5, (i + 1) * 0.2, (i + 1) * 4000, 3.0 - 0.2 * i, 3.1 - 0.15 * i, {}, {}});
  }
  const std::string svg = loss_plot_svg(ev, "gpt2 <test> & run");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("Training loss"), std::string::npos);
  EXPECT_NE(svg.find("Validation loss"), std::string::npos);
  EXPECT_NE(svg.find("Epochs"), std::string::npos);
  EXPECT_NE(svg.find("Tokens seen"), std::string::npos);
  EXPECT_NE(svg.find("gpt2 &lt;test&gt; &amp; run"), std::string::npos);
  size_t n = 0;
  for (size_t p = 0; (p = svg.find("<polyline", p)) != std::string::npos; ++p) ++n;
  EXPECT_EQ(n, 2u);
  // Degenerate inputs still give a valid picture.
  EXPECT_NE(loss_plot_svg({}, "empty").find("no evaluations"), std::string::npos);
  EXPECT_NE(loss_plot_svg(std::span(ev).first(1), "one").find("</svg>"), std::string::npos);
}

TEST(Options, DefaultsAreTheReferenceRecipe) {
  FinetuneOptions o;
  EXPECT_NO_THROW(o.validate());
  EXPECT_EQ(o.model, "gpt2-medium");
  EXPECT_EQ(o.batch_size, 8);
  EXPECT_EQ(o.epochs, 2);
  EXPECT_EQ(o.lr, 5e-5);
  EXPECT_EQ(o.weight_decay, 0.1);
  EXPECT_EQ(o.eval_freq, 5);
  EXPECT_EQ(o.eval_batches, 5);
  EXPECT_EQ(o.seed, 123u);
  EXPECT_FALSE(o.tied);
  EXPECT_EQ(o.data_path().filename(), "instruction-data.json");
}

TEST(Options, OutOfRangeIsRejectedNotClamped) {
  auto bad = [](auto edit) {
    FinetuneOptions o;
    edit(o);
    EXPECT_THROW(o.validate(), UsageError);
  };
  bad([](FinetuneOptions& o) { o.batch_size = 0; });
  bad([](FinetuneOptions& o) { o.lr = -1; });
  bad([](FinetuneOptions& o) { o.lr = NAN; });
  bad([](FinetuneOptions& o) { o.epochs = 0; });
  bad([](FinetuneOptions& o) { o.grad_accum = 3; });  // 8 % 3 != 0
  bad([](FinetuneOptions& o) { o.prompt_template = "chatml"; });
  bad([](FinetuneOptions& o) { o.schedule = "step"; });
  bad([](FinetuneOptions& o) { o.dropout = 1.0; });
  bad([](FinetuneOptions& o) { o.max_length = 1; });
  bad([](FinetuneOptions& o) { o.eval_freq = 0; });
  bad([](FinetuneOptions& o) { o.threads = -1; });
}

TEST(Options, JsonRoundTrip) {
  FinetuneOptions o;
  o.model = "random:tiny";
  o.batch_size = 4;
  o.grad_accum = 2;
  o.lr = 1e-3;
  o.schedule = "cosine";
  o.mask_prompt = true;
  o.seed = 7;
  const auto back = options_from_json(to_json(o));
  EXPECT_EQ(to_json(back), to_json(o));
  nlohmann::json bad = to_json(o);
  bad["lr"] = "fast";
  EXPECT_THROW(options_from_json(bad), Error);
}

TEST(TrainOptions, OptimizerSummaryNamesLearningRateAndClipping) {
  FinetuneOptions o;
  o.lr = 3e-4;
  o.schedule = "cosine";
  o.warmup_steps = 10;
  o.weight_decay = 0.05;
  o.grad_clip = 1.0;
  const nlohmann::json j = optimizer_json(o);
  EXPECT_EQ(j["lr"], 3e-4);
  EXPECT_EQ(j["schedule"], "cosine");
  EXPECT_EQ(j["warmup_steps"], 10);
  EXPECT_EQ(j["weight_decay"], 0.05);
  EXPECT_EQ(j["grad_clip"], 1.0);
  EXPECT_EQ(describe_optimizer(o),
            "AdamW, lr 0.0003 (cosine, 10 warm-up steps), weight decay 0.05, grad clip 1");
  o.grad_clip = 0;
  EXPECT_TRUE(optimizer_json(o)["grad_clip"].is_null());
  EXPECT_NE(describe_optimizer(o).find("grad clip off"), std::string::npos);
}

TEST(AnswerStreams, AsManyAsTheMemoryTrainingGaveBackHolds) {
  const Gpt2Config cfg = Gpt2Config::from_name("gpt2-medium");
  // gpt2-medium's AdamW m and v: 2 x 4 bytes x 406,286,336 parameters (untied).
  const int64_t adam = 2 * 4 * int64_t{406286336};
  const int64_t tokens = 56 + 256;  // the longest test prompt and 256 new tokens
  const int64_t fp32 = answer_streams(adam, cfg, Precision::kFp32, tokens);
  EXPECT_EQ(fp32, 52);  // 24 layers x 2 x 312 x 1024 fp32 values + a row of logits: 61.5 MB each
  EXPECT_LE(fp32 * Decoder::stream_bytes(cfg, tokens, Precision::kFp32), adam);
  EXPECT_GT((fp32 + 1) * Decoder::stream_bytes(cfg, tokens, Precision::kFp32), adam);
  EXPECT_EQ(answer_streams(adam, cfg, Precision::kBf16, tokens), 64);  // bf16 cache: capped
  EXPECT_EQ(answer_streams(0, cfg, Precision::kFp32, tokens), 8);      // never fewer than 8
  // A stream never holds more than the context.
  EXPECT_EQ(answer_streams(adam, cfg, Precision::kFp32, 5000),
            answer_streams(adam, cfg, Precision::kFp32, cfg.maxT));
}
