// The training commands' Ctrl-C handler; see stop_signal.h.
#include "stop_signal.h"

#include <unistd.h>

#include <csignal>

namespace llmft::app {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
  g_stop.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
  // write(2) is async-signal-safe; stdio is not. During training the loop stops at the next
  // step with a checkpoint; after training (model already saved) only the answers would be lost.
  static const char msg[] =
      "\nllmft: Ctrl-C: training stops at the next step with a checkpoint; after training, press "
      "Ctrl-C again to abort the remaining work now\n";
  [[maybe_unused]] const auto n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
}

}  // namespace

const std::atomic<bool>* install_stop_handler() {
  g_stop.store(false);
  std::signal(SIGINT, on_sigint);
  return &g_stop;
}

void remove_stop_handler() { std::signal(SIGINT, SIG_DFL); }

}  // namespace llmft::app
