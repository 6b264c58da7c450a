// The training commands' stop handler; see stop_signal.h.
#include "stop_signal.h"

#include <unistd.h>

#include <csignal>
#include <cstring>

namespace llmft::app {
namespace {

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
StopControl g_control;
volatile std::sig_atomic_t g_signal = SIGINT;
const char* volatile g_on_stop = nullptr;

extern "C" void on_stop_signal(int sig) {
  g_signal = sig;
  g_control.requested.store(true);
  for (int s : kSignals) std::signal(s, SIG_DFL);  // a second signal stops at once
  // write(2) is async-signal-safe; stdio is not. During training the loop stops at the next
  // step with a checkpoint; after it (the last checkpoint written) nothing is stopped yet.
  static const char intr[] = "\nllmft: Ctrl-C";
  static const char term[] = "\nllmft: SIGTERM";
  static const char hup[] = "\nllmft: SIGHUP";
  static const char training[] =
      ": training stops at the next step with a checkpoint; a second signal (Ctrl-C) stops at "
      "once\n";
  static const char outputs[] =
      ": writing the outputs (model folder, test answers) goes on; a second signal (Ctrl-C) stops "
      "now, and --resume writes them later\n";
  const char* head = sig == SIGTERM ? term : sig == SIGHUP ? hup : intr;
  const size_t n = sig == SIGTERM ? sizeof(term) : sig == SIGHUP ? sizeof(hup) : sizeof(intr);
  const bool after = g_control.after_training.load();
  [[maybe_unused]] auto w = write(STDERR_FILENO, head, n - 1);
  if (const char* own = g_on_stop) {
    w = write(STDERR_FILENO, own, std::strlen(own));  // strlen is async-signal-safe
    return;
  }
  w = after ? write(STDERR_FILENO, outputs, sizeof(outputs) - 1)
            : write(STDERR_FILENO, training, sizeof(training) - 1);
}

}  // namespace

StopControl* install_stop_handler(const char* on_stop) {
  g_on_stop = on_stop;
  g_control.requested.store(false);
  g_control.after_training.store(false);
  g_signal = SIGINT;
  for (int s : kSignals) std::signal(s, on_stop_signal);
  return &g_control;
}

void remove_stop_handler() {
  for (int s : kSignals) std::signal(s, SIG_DFL);
}

int stop_exit_code() { return 128 + static_cast<int>(g_signal); }

}  // namespace llmft::app
