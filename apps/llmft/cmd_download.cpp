// llmft download NAME: fetches a GPT-2 checkpoint into the Hugging Face cache (shared with Python
// tools) and prints the snapshot folder, which any --model option accepts.
#include <fmt/format.h>

#include <cstdio>

#include "command.h"
#include "llmft/io/hub.h"

namespace {

struct Args {
  std::string name;
  std::string cache_dir;
};

llmft::app::Runner setup(CLI::App& app) {
  auto args = std::make_shared<Args>();
  app.add_option("name", args->name, "Model to download: gpt2, gpt2-medium, gpt2-large or gpt2-xl")
      ->required();
  app.add_option("--cache-dir", args->cache_dir,
                 "Hub cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else "
                 "~/.cache/huggingface/hub)")
      ->capture_default_str();
  app.footer("Source: $HF_ENDPOINT (default https://huggingface.co)/openai-community/<name>. "
             "Prints the snapshot folder on stdout.");
  return [args]() {
    llmft::DownloadOptions opts;
    opts.cache_dir = args->cache_dir;
    const auto dir = llmft::download_model(args->name, opts);
    std::fprintf(stderr, "%s is in %s\n", args->name.c_str(), dir.string().c_str());
    std::printf("%s\n", dir.string().c_str());
    return 0;
  };
}

const llmft::app::Registration reg{"download", "Download a GPT-2 checkpoint into the Hugging Face cache",
                                   setup};

}  // namespace
