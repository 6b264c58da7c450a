// The training commands' stop handler; see stop_signal.h.
#include "stop_signal.h"

#include <unistd.h>

#include <csignal>

namespace llmft::app {
namespace {

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signal = SIGINT;

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
  g_stop.store(true);
  for (int s : kSignals) std::signal(s, SIG_DFL);  // a second signal stops at once
  // write(2) is async-signal-safe; stdio is not. During training the loop stops at the next
  // step with a checkpoint; after training (model already saved) only the answers would be lost.
  static const char intr[] = "\nllmft: Ctrl-C";
  static const char term[] = "\nllmft: SIGTERM";
  static const char hup[] = "\nllmft: SIGHUP";
  static const char rest[] =
      ": training stops at the next step with a checkpoint; after training, a second signal "
      "(Ctrl-C) aborts the remaining work now\n";
  const char* head = sig == SIGTERM ? term : sig == SIGHUP ? hup : intr;
  const size_t n = sig == SIGTERM ? sizeof(term) : sig == SIGHUP ? sizeof(hup) : sizeof(intr);
  [[maybe_unused]] auto w = write(STDERR_FILENO, head, n - 1);
  w = write(STDERR_FILENO, rest, sizeof(rest) - 1);
}

}  // namespace

const std::atomic<bool>* install_stop_handler() {
  g_stop.store(false);
  g_signal = SIGINT;
  for (int s : kSignals) std::signal(s, on_stop_signal);
  return &g_stop;
}

void remove_stop_handler() {
  for (int s : kSignals) std::signal(s, SIG_DFL);
}

int stop_exit_code() { return 128 + static_cast<int>(g_signal); }

}  // namespace llmft::app
