// GPT-2's pre-tokenizer, written as a hand scanner instead of a regex engine. It splits text
// exactly as the pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does (tiktoken "gpt2"), with \s = Unicode White_Space, \p{L} / \p{N} = general categories L* /
// N*.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "llmft/tokenizer/utf8.h"

namespace llmft::pretok {

enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// Class of a code point >= 0x80 (ICU general category and White_Space).
CharClass classify_non_ascii(uint32_t cp);

constexpr CharClass ascii_class(int c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return kLetter;
  if (c >= '0' && c <= '9') return kNumber;
  if ((c >= 0x09 && c <= 0x0D) || c == 0x20) return kSpace;  // White_Space within ASCII
  return kOther;
}
constexpr std::array<CharClass, 128> make_ascii_table() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) t[static_cast<size_t>(c)] = ascii_class(c);
  return t;
}
inline constexpr std::array<CharClass, 128> kAsciiClass = make_ascii_table();

// Class of the code point at s[i] (valid UTF-8); `len` gets its byte length.
inline CharClass class_at(const char* s, size_t i, int& len) {
  const auto b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) {
    len = 1;
    return kAsciiClass[b];
  }
  return classify_non_ascii(utf8::decode_at(s, i, len));
}

// End of the run of code points of class `cls` starting at byte i.
inline size_t run_end(const char* s, size_t n, size_t i, CharClass cls) {
  int len;
  while (i < n && class_at(s, i, len) == cls) i += static_cast<size_t>(len);
  return i;
}

// Byte length of the contraction ('s 't 're 've 'm 'll 'd, case-sensitive) at s[i] == '\'', or 0.
inline size_t contraction_len(const char* s, size_t n, size_t i) {
  if (i + 1 >= n) return 0;
  const char c = s[i + 1];
  if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
  if (i + 2 >= n) return 0;
  const char c2 = s[i + 2];
  if ((c == 'r' && c2 == 'e') || (c == 'v' && c2 == 'e') || (c == 'l' && c2 == 'l')) return 3;
  return 0;
}

// End of the whitespace piece at s[i]: \s+(?!\S) takes the run minus its last code point when a
// non-space follows (that one then starts the next piece); a lone space before a non-space is \s+.
inline size_t whitespace_end(const char* s, size_t n, size_t i) {
  size_t last = i, j = i;
  int len;
  while (j < n && class_at(s, j, len) == kSpace) {
    last = j;
    j += static_cast<size_t>(len);
  }
  return (j == n || last == i) ? j : last;
}

// Calls emit(begin, end) for each piece of valid UTF-8 `text`, in order; the pieces tile the text.
template <class Emit>
void split(std::string_view text, Emit&& emit) {
  const char* s = text.data();
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    int len;
    const CharClass cls = class_at(s, i, len);
    size_t end = 0;
    if (s[i] == '\'' && (end = contraction_len(s, n, i)) != 0) {
      end += i;  // 's 't 're 've 'm 'll 'd
    } else if (cls != kSpace) {
      end = run_end(s, n, i + static_cast<size_t>(len), cls);  // \p{L}+ | \p{N}+ | [^\s\p{L}\p{N}]+
    } else {
      int len2 = 0;
      const CharClass next = (s[i] == ' ' && i + 1 < n) ? class_at(s, i + 1, len2) : kSpace;
      if (next != kSpace) {
        end = run_end(s, n, i + 1 + static_cast<size_t>(len2), next);  // " ?" then a run
      } else {
        end = whitespace_end(s, n, i);
      }
    }
    emit(i, end);
    i = end;
  }
}

}  // namespace llmft::pretok
