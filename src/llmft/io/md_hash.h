// What SHA-1 and SHA-256 share (both Merkle-Damgard over 64-byte blocks, FIPS 180-4 5.1.1): the
// final padding, the big-endian hex of the state words, and feeding a file to either.
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>

#include "llmft/core/error.h"

namespace llmft::md_hash {

// The bytes appended to a message of `total` bytes: 0x80, zeros up to 56 mod 64, then the
// message length in bits, big-endian.
inline std::string padding(uint64_t total) {
  const size_t used = total % 64;
  std::string pad(used < 56 ? 64 - used : 128 - used, '\0');
  pad[0] = static_cast<char>(0x80);
  const uint64_t bits = total * 8;
  for (int i = 0; i < 8; ++i) pad[pad.size() - 8 + i] = static_cast<char>(bits >> (56 - 8 * i));
  return pad;
}

inline std::string hex(std::span<const uint32_t> words) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (uint32_t v : words)
    for (int s = 28; s >= 0; s -= 4) out.push_back(kHex[(v >> s) & 0xf]);
  return out;
}

// Streams a file's bytes into `h` (Sha1 or Sha256). Throws Error when it cannot be read.
template <typename Hash>
void update_from_file(Hash& h, const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot read: {}", path.string(), std::strerror(errno)));
  std::string buf(1 << 20, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(std::string_view(buf.data(), static_cast<size_t>(in.gcount())));
  }
  if (in.bad()) throw Error(fmt::format("{}: read failed", path.string()));
}

}  // namespace llmft::md_hash
