#include "test_util.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

namespace llmft::test {

namespace fs = std::filesystem;

template <typename T>
static ::testing::AssertionResult all_close_impl(std::span<const T> a, std::span<const T> e,
                                                 double rtol, double atol) {
  if (a.size() != e.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: actual " << a.size() << " expected " << e.size();
  }
  double max_abs = 0, max_rel = 0;
  int64_t first_bad = -1, n_bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a[i], y = e[i], d = std::fabs(x - y);
    const bool bad = !(d <= atol + rtol * std::fabs(y)) || std::isnan(x) != std::isnan(y);
    if (std::isfinite(d)) {
      max_abs = std::max(max_abs, d);
      if (y != 0) max_rel = std::max(max_rel, d / std::fabs(y));
    }
    if (bad) {
      if (first_bad < 0) first_bad = static_cast<int64_t>(i);
      ++n_bad;
    }
  }
  if (first_bad < 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << fmt::format(
             "{} of {} values differ; first at [{}]: actual {:.9g} expected {:.9g}; "
             "max abs err {:.3g}, max rel err {:.3g} (rtol {:g}, atol {:g})",
             n_bad, a.size(), first_bad, static_cast<double>(a[first_bad]),
             static_cast<double>(e[first_bad]), max_abs, max_rel, rtol, atol);
}

::testing::AssertionResult all_close(std::span<const float> a, std::span<const float> e,
                                     double rtol, double atol) {
  return all_close_impl(a, e, rtol, atol);
}
::testing::AssertionResult all_close(std::span<const double> a, std::span<const double> e,
                                     double rtol, double atol) {
  return all_close_impl(a, e, rtol, atol);
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / fmt::format("llmft-test-{:08x}{:08x}", rd(), rd());
  fs::create_directories(path_);
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

static std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

RunResult run_llmft(const std::vector<std::string>& args, const std::string& stdin_text,
                    const std::vector<std::string>& env) {
  return run_program(llmft_binary().string(), args, stdin_text, env);
}

RunResult run_program(const std::string& program, const std::vector<std::string>& args,
                      const std::string& stdin_text, const std::vector<std::string>& env) {
  TempDir tmp;
  const fs::path in = tmp / "stdin", out = tmp / "stdout", err = tmp / "stderr";
  std::ofstream(in, std::ios::binary) << stdin_text;
  std::string cmd;
  for (const auto& e : env) cmd += shell_quote(e) + " ";
  cmd += shell_quote(program);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " <" + shell_quote(in.string()) + " >" + shell_quote(out.string()) + " 2>" +
         shell_quote(err.string());
  const int status = std::system(("env " + cmd).c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

fs::path golden_dir() { return LLMFT_GOLDEN_DIR; }
fs::path test_data_dir() { return LLMFT_TEST_DATA_DIR; }
fs::path llmft_binary() { return LLMFT_BINARY; }

}  // namespace llmft::test
