// File helpers: whole-file reads with clear errors, and atomic writes (temporary file + rename),
// so an interrupted run never leaves a half-written output behind.
#pragma once

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

namespace llmft {

// A whole file mapped read-only: model files of several GB are read without a copy. Throws Error
// naming the path when it cannot be opened, is not a regular file, or cannot be mapped. An empty
// file gives an empty span.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const unsigned char> bytes() const { return {data_, size_}; }
  // Tells the kernel the file will be read front to back (larger read-ahead).
  void advise_sequential() const;
  // Lets the kernel drop the pages of bytes [p, p + n) already read (a converted copy is kept
  // instead), so reading a whole model holds about one copy in memory.
  void release(const unsigned char* p, size_t n) const;

 private:
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole file as bytes. Throws Error naming the path when it cannot.
std::string read_file(const std::filesystem::path& path);

// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed and synced to
// the disk, then renamed over `path` (and the folder synced): a kill or a power cut leaves the old
// file or the new one. Creates the parent folder. Throws Error naming the path on failure.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Same, for content produced by a writer callback (large files: no second copy in memory).
void write_file_atomic(const std::filesystem::path& path,
                       const std::function<void(std::ostream&)>& writer);

// Writes a folder of files: `fill(out)` writes them into `out`. A new folder is built beside
// `dir` and renamed into place (removed again on failure); an existing one is filled in place,
// each file replaced atomically (fill should write its key file last). Throws Error naming it.
void write_folder_atomic(const std::filesystem::path& dir,
                         const std::function<void(const std::filesystem::path& out)>& fill);

// Fails early (before hours of work) unless `path` can be written atomically: not a folder, not
// the same file as any of `inputs`, and its folder exists (or can be created) and takes a new file.
void check_output_path(const std::filesystem::path& path,
                       std::initializer_list<std::filesystem::path> inputs = {});

// The environment variable's value; empty when it is unset.
std::string env_value(const char* name);

// The user's cache folder: $XDG_CACHE_HOME, else $HOME/.cache; empty when neither is set.
std::filesystem::path user_cache_home();

// Folder with the bundled data (dataset, GPT-2 vocabulary): $LLMFT_DATA_DIR when set, else the
// installed copy relative to the executable (PREFIX/share/llmft for PREFIX/bin/llmft, see
// `cmake --install`), else the source tree's data/ (a binary run from its build folder).
std::filesystem::path data_dir();

}  // namespace llmft
