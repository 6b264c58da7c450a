// The Hugging Face hub cache and downloads (SPEC §5), laid out as huggingface_hub lays it out so
// both share one copy:
//   <cache>/models--openai-community--<name>/blobs/<etag>            file contents
//   <cache>/models--openai-community--<name>/snapshots/<commit>/<file> -> ../../blobs/<etag>
//   <cache>/models--openai-community--<name>/refs/main                the commit hash
// <cache> is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace llmft {

std::filesystem::path hub_cache_dir();
// $HF_ENDPOINT without a trailing '/', default https://huggingface.co.
std::string hf_endpoint();
// "gpt2-medium" -> "openai-community/gpt2-medium".
std::string hub_repo_id(const std::string& name);
// <cache>/models--openai-community--gpt2-medium
std::filesystem::path hub_repo_dir(const std::filesystem::path& cache, const std::string& repo_id);

// The snapshot folder of a complete cached copy (config.json and model.safetensors present):
// refs/main's snapshot when complete, else the newest complete snapshot; nullopt when none.
std::optional<std::filesystem::path> find_cached_model(
    const std::string& name, const std::filesystem::path& cache = hub_cache_dir());

struct DownloadOptions {
  std::filesystem::path cache_dir;  // empty: hub_cache_dir()
  bool progress = true;             // progress bar on stderr (only drawn on a terminal)
  int attempts = 3;                 // per file, resuming after a dropped connection
};

// Downloads config.json, model.safetensors, vocab.json, merges.txt (and generation_config.json when
// the repo has one) of a known model name from $HF_ENDPOINT into the cache; files already in the
// cache are reused. Partial files resume (HTTP Range). Every file is verified against the hash the
// hub names it by (ETag: sha256 for LFS files, the git blob sha1 for the others) before it enters
// the cache, and cached files are hashed again: a damaged one is reported on stderr and downloaded
// again. Returns the snapshot folder. Throws Error when the server cannot be reached or a download
// fails verification (nothing unverified is left in blobs/ or snapshots/).
std::filesystem::path download_model(const std::string& name, const DownloadOptions& opts = {});

// What every --model option goes through: an existing folder is returned as is; a known name
// (gpt2, gpt2-medium, gpt2-large, gpt2-xl, optionally "openai-community/"-prefixed) is looked up in
// the cache, then downloaded when allow_download and $HF_HUB_OFFLINE is not set. Throws Error
// saying what is missing and how to get it otherwise. A cached file is checked against its hash
// (the blob's name) unless its size and modification time match those recorded when it was last
// verified (<cache>/.locks/<repo folder>/<hash>.verified), so a file changed since is caught at the
// cost of one hash, and an unchanged one costs a stat; a mismatch throws Error naming the file,
// both hashes and `llmft download <name>`, which replaces it.
std::filesystem::path resolve_model(const std::string& name_or_dir, bool allow_download);

}  // namespace llmft
