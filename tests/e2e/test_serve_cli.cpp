// `llmft serve` as a process: `llmft judge --url` scores answers with a model served by it (over
// Ollama's and OpenAI's APIs), and SIGTERM ends it cleanly. The served model is built to answer
// "85" to anything: zero blocks (the residual is the token's embedding), wte one-hot (e0 for every
// token, e1 for "85"), lm_head maps LayerNorm(e0) to "85" and LayerNorm(e1) to <|endoftext|>.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>

#include "llmft/core/io.h"
#include "llmft/io/hf_folder.h"
#include "llmft/model/gpt2.h"
#include "llmft/tokenizer/bpe.h"
#include "test_util.h"

using namespace llmft;

namespace {

// A model folder whose greedy answer to any prompt is "85".
void write_judge_model(const std::filesystem::path& dir) {
  Gpt2Config c;
  c.C = 16;
  c.L = 1;
  c.NH = 2;
  c.tied = false;
  Gpt2 m(c);
  const BpeTokenizer tok = BpeTokenizer::load_bundled();
  const auto ids = tok.encode("85");
  ASSERT_EQ(ids.size(), 1u);
  const auto t85 = static_cast<size_t>(ids[0]);
  const size_t C = static_cast<size_t>(c.C);
  Gpt2Tensors<float> w = m.weights();
  for (size_t t = 0; t < static_cast<size_t>(c.V); ++t) w.wte[t * C + (t == t85 ? 1 : 0)] = 1.0f;
  for (auto& x : w.ln_f.w) x = 1.0f;
  w.lm_head[t85 * C + 0] = 10.0f;
  w.lm_head[50256 * C + 1] = 10.0f;
  write_hf_folder(dir, c, m.table(), m.params());
}

// `llmft serve ARGS --port 0` in the background; the URL it prints.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<std::string> all = {test::llmft_binary().string(), "serve", "--port", "0"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    out_ = fdopen(out[0], "r");
    char line[4096];
    const std::regex re("listening on (http://127\\.0\\.0\\.1:[0-9]+)");
    while (std::fgets(line, sizeof line, out_)) {
      std::cmatch m;
      if (std::regex_search(line, m, re)) {
        url_ = m[1];
        break;
      }
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_) std::fclose(out_);
  }
  const std::string& url() const { return url_; }
  // SIGTERM; returns the exit status and what it printed after the URL line.
  int terminate(std::string* rest) {
    kill(pid_, SIGTERM);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, out_)) > 0) rest->append(buf, n);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  std::string url_;
};

}  // namespace

TEST(ServeCli, JudgeScoresWithAServedModelOverBothApis) {
  test::TempDir tmp;
  write_judge_model(tmp / "judge");
  ServeProcess srv({"--model", (tmp / "judge").string(), "--name", "judge", "--threads", "1"});
  ASSERT_FALSE(srv.url().empty()) << "llmft serve did not print its URL";
  const std::string answers = R"([
    {"instruction": "Add 2 and 3.", "input": "", "output": "5", "model_response": "5"},
    {"instruction": "Name a color.", "input": "", "output": "Red", "model_response": "Blue"},
    {"instruction": "Translate.", "input": "chat", "output": "cat", "model_response": "cat"}])";
  write_file_atomic(tmp / "answers.json", answers);
  for (const char* api : {"ollama", "openai"}) {
    const auto out = tmp / (std::string(api) + "-scored.json");
    const auto r = test::run_llmft({"judge", "--input", (tmp / "answers.json").string(), "--output",
                                    out.string(), "--url", srv.url(), "--model", "judge", "--api",
                                    api, "-j", "3"});
    ASSERT_EQ(r.exit_code, 0) << api << ": " << r.err;
    EXPECT_NE(r.out.find("Number of scores: 3 of 3"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Average score: 85.00"), std::string::npos) << r.out;
    const auto scored = nlohmann::json::parse(read_file(out));
    ASSERT_EQ(scored.size(), 3u);
    for (const auto& e : scored) EXPECT_EQ(e["score"], 85) << e.dump();
  }
  std::string rest;
  EXPECT_EQ(srv.terminate(&rest), 0);
  EXPECT_NE(rest.find("requests (0 cancelled"), std::string::npos) << rest;
}

TEST(ServeCli, RefusesBadFlagsBeforeLoading) {
  const auto r = test::run_llmft({"serve", "--model", "random:tiny", "--parallel", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--parallel 0 is invalid"), std::string::npos) << r.err;
  const auto k =
      test::run_llmft({"serve", "--model", "random:tiny", "--api-key-env", "LLMFT_NO_SUCH_VAR"});
  EXPECT_EQ(k.exit_code, 2);
  EXPECT_NE(k.err.find("LLMFT_NO_SUCH_VAR"), std::string::npos) << k.err;
}
