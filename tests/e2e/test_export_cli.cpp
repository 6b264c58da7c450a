// `llmft export` end to end: the GGUF file and Modelfile it writes, the template taken from a
// finetuning run, `llmft generate --model FILE.gguf` answering as the library does with the same
// weights, and bad input (type, output path, a corrupt file) failing with one line and no file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "llmft/core/io.h"
#include "llmft/data/template.h"
#include "llmft/generate/generate.h"
#include "llmft/io/gguf.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/model_loader.h"
#include "test_util.h"

using namespace llmft;
namespace fs = std::filesystem;

namespace {

int count_lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace

TEST(ExportCli, WritesGgufAndModelfileThatGenerateReads) {
  test::TempDir dir;
  const fs::path out = dir / "out" / "tiny.gguf";
  const auto r = test::run_llmft(
      {"export", "--model", "random:tiny", "--seed", "9", "--type", "f32", "-o", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + out.string() + ": f32"), std::string::npos) << r.out;
  // The file holds exactly the model random:tiny with seed 9.
  ModelLoadOptions lo;
  lo.allow_random = true;
  LoadedModel expected = load_model("random:tiny", lo);
  expected.model->init_random(9);
  LoadedModel got = load_model(out.string(), ModelLoadOptions{});
  ASSERT_EQ(got.cfg().describe(), expected.cfg().describe());
  const auto a = std::as_const(*got.model).params(), b = std::as_const(*expected.model).params();
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
  EXPECT_EQ(GgufFile(out).get_string("general.name"), "random:tiny");

  const std::string mf = read_file(dir / "out" / "Modelfile");
  EXPECT_NE(mf.find("FROM ./tiny.gguf\n"), std::string::npos) << mf;
  EXPECT_NE(mf.find(format_prompt(PromptTemplate::kAlpaca, "{{ .Prompt }}", "") +
                    "\n\n### Response:\n\"\"\""),
            std::string::npos)
      << mf;
  EXPECT_NE(mf.find("PARAMETER num_ctx 1024"), std::string::npos) << mf;

  // generate reads the GGUF file and answers as the library does with the same weights.
  const auto g = test::run_llmft(
      {"generate", "--model", out.string(), "--max-new-tokens", "12", "Name a color."});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  GenerateOptions go;
  go.max_new_tokens = 12;
  const auto want =
      generate_responses(*expected.model, *expected.tokenizer,
                         {format_prompt(PromptTemplate::kAlpaca, "Name a color.", "")}, go);
  EXPECT_EQ(g.out, want[0] + "\n");
}

TEST(ExportCli, TakesTheRunsTemplateAndQuantizes) {
  // A finetuning run's folder: RUN/config.json records the template, RUN/model the weights.
  test::TempDir dir;
  Gpt2Config cfg = random_preset("tiny");
  Gpt2 model(cfg);
  model.init_random(3);
  write_hf_folder(dir / "run" / "model", cfg, model.table(), model.params());
  write_file_atomic(dir / "run" / "config.json",
                    nlohmann::json{{"options", {{"template", "phi3"}}}}.dump());
  const fs::path out = dir / "q.gguf";
  const auto r = test::run_llmft({"export", "--model", (dir / "run" / "model").string(), "--type",
                                  "q8_0", "-o", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("template phi3, from the finetuning run's config.json"), std::string::npos)
      << r.out;
  EXPECT_NE(read_file(dir / "Modelfile").find("<|user|>\n{{ .Prompt }}\n<|assistant|>:\n"),
            std::string::npos);
  const GgufFile f(out);
  EXPECT_EQ(f.get_u32("general.file_type"), 7u);
  EXPECT_EQ(f.find("blk.0.ffn_up.weight")->type, GgmlType::kQ8_0);
  EXPECT_EQ(f.find("blk.0.ffn_up.bias")->type, GgmlType::kF32);
  EXPECT_EQ(f.get_string("general.name"), "model");
  // q8_0 loads too (dequantized), so generate runs it.
  const auto g = test::run_llmft(
      {"generate", "--model", out.string(), "--template", "phi3", "--max-new-tokens", "4", "Hi"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
}

TEST(ExportCli, BadInputFailsWithOneLineAndNoFile) {
  test::TempDir dir;
  const auto t = test::run_llmft(
      {"export", "--model", "random:tiny", "--type", "q4_0", "-o", (dir / "a.gguf").string()});
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_NE(t.err.find("q4_0"), std::string::npos) << t.err;
  EXPECT_FALSE(fs::exists(dir / "a.gguf"));

  fs::create_directories(dir / "folder.gguf");
  const auto d =
      test::run_llmft({"export", "--model", "random:tiny", "-o", (dir / "folder.gguf").string()});
  EXPECT_NE(d.exit_code, 0);
  EXPECT_NE(d.err.find("folder.gguf"), std::string::npos) << d.err;

  // A corrupt GGUF: generate refuses it with one line naming the file.
  ASSERT_EQ(test::run_llmft({"export", "--model", "random:tiny", "--type", "f16", "-o",
                             (dir / "m.gguf").string()})
                .exit_code,
            0);
  const std::string bytes = read_file(dir / "m.gguf");
  write_file_atomic(dir / "cut.gguf", std::string_view(bytes).substr(0, bytes.size() / 2));
  const auto g = test::run_llmft({"generate", "--model", (dir / "cut.gguf").string(), "Hi"});
  EXPECT_EQ(g.exit_code, 1);
  EXPECT_NE(g.err.find((dir / "cut.gguf").string() + ": truncated"), std::string::npos) << g.err;
  EXPECT_LE(count_lines(g.err), 2) << g.err;  // the error and its hint
  // Only the files written on purpose are left (no temporary files).
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 3) << "m.gguf, Modelfile, cut.gguf";
}
