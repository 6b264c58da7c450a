// Exceptions for what a user or the environment can cause, and checks of our own invariants.
// Only main() catches everything: UsageError exits 2, every other Error exits 1.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace llmft {

// Something the user or the environment caused: a bad file, an unreachable server.
// what() is one line saying what failed, the value and what was expected; hint() says what to do.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, std::string hint = {})
      : std::runtime_error(what), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }

 private:
  std::string hint_;
};

// A bad command line: wrong flag, value out of range. Exit code 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

// One of our own invariants failed: a bug in llmft, never the user's fault.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace llmft

// Always-on invariant check (outside hot loops). Message arguments are fmt-style.
#define LLMFT_CHECK(cond, ...)                                                        \
  do {                                                                                \
    if (!(cond))                                                                      \
      throw ::llmft::InternalError(fmt::format("{}:{}: check failed: {}: {}", __FILE__, \
                                               __LINE__, #cond, fmt::format(__VA_ARGS__))); \
  } while (0)
