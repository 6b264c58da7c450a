// SHA-256 (FIPS 180-4), streamed: verifies downloaded Hugging Face LFS files against their etag.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace llmft {

class Sha256 {
 public:
  Sha256();
  void update(std::string_view bytes);
  // Finishes the hash and returns 64 lowercase hex digits. The object is spent afterwards.
  std::string hex_digest();
  // Use the x86 SHA instructions when the CPU has them (tests turn it off to check both paths).
  static bool use_fast;

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_ = 0;  // bytes
};

std::string sha256_hex(std::string_view bytes);
// The sha256 of a file's contents, streamed. Throws Error when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace llmft
