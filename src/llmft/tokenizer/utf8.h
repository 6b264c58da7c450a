// UTF-8 helpers for the tokenizer: validation, the WHATWG / Python errors="replace" repair rule
// (each maximal invalid subsequence becomes one U+FFFD), and code point decoding of valid text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace llmft::utf8 {

// True when `s` is well-formed UTF-8 (no surrogates, no overlongs, nothing above U+10FFFF).
bool is_valid(std::string_view s);

// `s` with each maximal invalid subsequence replaced by U+FFFD (EF BF BD), as Python's
// bytes.decode("utf-8", errors="replace") and the WHATWG decoder do.
std::string replace_invalid(std::string_view s);

// Length in bytes of the code point starting with lead byte `b` (valid UTF-8 only).
inline int seq_len(uint8_t b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

// Decodes the code point at s[i] (valid UTF-8 only); sets `len` to its byte length.
inline uint32_t decode_at(const char* s, size_t i, int& len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s) + i;
  const uint8_t b = p[0];
  if (b < 0x80) {
    len = 1;
    return b;
  }
  if (b < 0xE0) {
    len = 2;
    return (uint32_t(b & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (b < 0xF0) {
    len = 3;
    return (uint32_t(b & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  len = 4;
  return (uint32_t(b & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) | (uint32_t(p[2] & 0x3F) << 6) |
         (p[3] & 0x3F);
}

}  // namespace llmft::utf8
