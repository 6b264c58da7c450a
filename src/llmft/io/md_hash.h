// What SHA-1 and SHA-256 share (both Merkle-Damgard over 64-byte blocks, FIPS 180-4 5.1.1): the
// final padding and the big-endian hex of the state words.
#pragma once

#include <cstdint>
#include <span>
#include <string>

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

}  // namespace llmft::md_hash
