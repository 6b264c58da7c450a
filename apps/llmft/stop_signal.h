// Ctrl-C for the training commands (finetune, dpo): the first one asks the loop to stop at the
// next step with a checkpoint; a second one stops at once.
#pragma once

#include <atomic>

namespace llmft::app {

// Installs the handler and returns the flag it sets (cleared first).
const std::atomic<bool>* install_stop_handler();
// Restores the default handler.
void remove_stop_handler();

}  // namespace llmft::app
