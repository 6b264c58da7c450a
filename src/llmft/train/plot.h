// The loss plot (and a DPO run's reward-margin plot) as a self-contained SVG (browsers show it): train and validation loss against
// epochs on the bottom axis, tokens seen on a second axis at the top, legend and axis labels.
// Same content as the reference recipe's matplotlib figure; written by our own code.
#pragma once

#include <span>
#include <string>

#include "llmft/train/metrics.h"

namespace llmft {

// SVG text for the evaluation records (any number, including none or one).
std::string loss_plot_svg(std::span<const EvalRecord> evals, const std::string& title);
// The same for DPO runs: train and validation reward margins (records without rewards: none).
std::string reward_margin_plot_svg(std::span<const EvalRecord> evals, const std::string& title);

}  // namespace llmft
