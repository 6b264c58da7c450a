// Shared test helpers: the one numeric comparison, temporary folders, running the CLI.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace llmft::test {

// Passes when |a[i] - e[i]| <= atol + rtol * |e[i]| for every i. On failure it reports the first
// bad index, both values, and the max absolute and relative errors. State the tolerance's reason
// at the call site.
::testing::AssertionResult all_close(std::span<const float> actual, std::span<const float> expected,
                                     double rtol, double atol);
::testing::AssertionResult all_close(std::span<const double> actual,
                                     std::span<const double> expected, double rtol, double atol);

// A fresh, empty folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Sets an environment variable for one test and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs the built llmft binary with `args` (shell-quoted here), optional stdin text; captures both
// streams. `env` entries are "NAME=value" set for the child only.
RunResult run_llmft(const std::vector<std::string>& args, const std::string& stdin_text = {},
                    const std::vector<std::string>& env = {});
// Same for any program (a path, or a name looked up in PATH).
RunResult run_program(const std::string& program, const std::vector<std::string>& args,
                      const std::string& stdin_text = {},
                      const std::vector<std::string>& env = {});

std::filesystem::path golden_dir();     // tests/golden
std::filesystem::path test_data_dir();  // tests/data
std::filesystem::path llmft_binary();

}  // namespace llmft::test
