// SHA-1 (FIPS 180-4), streamed: only for git blob ids, which is how the Hugging Face hub names a
// small (non-LFS) file in its ETag. Not for anything that needs collision resistance.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace llmft {

class Sha1 {
 public:
  Sha1();
  void update(std::string_view bytes);
  // Finishes the hash and returns 40 lowercase hex digits. The object is spent afterwards.
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 5> h_;
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_ = 0;  // bytes
};

std::string sha1_hex(std::string_view bytes);
// git's object id of a file's contents: sha1("blob <size>\0" + contents).
std::string git_blob_sha1_hex(std::string_view contents);
// The same for a file on disk, streamed. Throws Error when it cannot be read.
std::string git_blob_sha1_file(const std::filesystem::path& path);

}  // namespace llmft
