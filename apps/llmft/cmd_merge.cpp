// `llmft merge`: a base model and a LoRA adapter become one Hugging Face model folder.
#include <fmt/format.h>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/model_loader.h"
#include "llmft/io/peft.h"

namespace llmft::app {
namespace {

Runner setup(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto adapter = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  app.add_option("--model", *model, "Base model: a Hugging Face folder or a GPT-2 name")
      ->required();
  app.add_option("--adapter", *adapter, "LoRA adapter folder (PEFT layout)")->required();
  app.add_option("--output,-o", *output, "Folder for the merged model (Hugging Face layout)")
      ->required();
  return [=]() -> int {
    if (std::filesystem::exists(*output))
      throw UsageError(fmt::format("{} already exists", *output),
                       "choose a new folder for the merged model");
    ModelLoadOptions lo;
    lo.adapter = *adapter;
    const LoadedModel m = load_model(*model, lo);
    const auto merged = merged_model(*m.model, *m.lora);
    write_hf_folder(*output, merged->config(), merged->table(), merged->params());
    fmt::print("Merged {} into {}: {}\n", *adapter, *model, *output);
    return 0;
  };
}

const Registration reg{"merge", "Merge a LoRA adapter into its base model (a new model folder)",
                       setup};

}  // namespace
}  // namespace llmft::app
