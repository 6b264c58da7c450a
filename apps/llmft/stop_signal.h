// Stopping a training command (finetune, dpo): the first Ctrl-C (SIGINT), SIGTERM (what Slurm,
// systemd, docker and Kubernetes send) or SIGHUP (a lost terminal) asks the loop to stop at the
// next step with a checkpoint; a second one of any of them stops at once. After the training loop
// (model folder, test answers) the first one only says that a second one stops now.
#pragma once

#include "llmft/train/trainer.h"

namespace llmft::app {

// Installs the handler and returns the control it sets (cleared first). `on_stop` (a string
// literal, or null for the training commands' text) is what the first signal prints after
// "llmft: Ctrl-C".
StopControl* install_stop_handler(const char* on_stop = nullptr);
// Restores the default handlers.
void remove_stop_handler();
// The exit code of a run stopped by the handler: 128 + the signal's number (130 for Ctrl-C).
int stop_exit_code();

}  // namespace llmft::app
