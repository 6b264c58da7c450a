// UTF-8 validation and repair (Unicode "maximal subpart" / WHATWG rule, as Python's
// errors="replace"). Golden: tests/data/tokenizer/invalid_utf8.jsonl.
#include "llmft/tokenizer/utf8.h"

#include <cstring>

namespace llmft::utf8 {
namespace {

// Length of the well-formed sequence at p[0..n), or -(bytes of the maximal invalid subpart).
// Table 3-7 of the Unicode standard: the second byte's range depends on the lead byte.
int check_sequence(const uint8_t* p, size_t n) {
  const uint8_t b = p[0];
  if (b < 0x80) return 1;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    need = 2;
  } else if (b == 0xED) {
    need = 2, hi = 0x9F;  // no surrogates
  } else if (b == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;  // 80..C1, F5..FF never start a sequence
  }
  for (int k = 1; k <= need; ++k) {
    if (static_cast<size_t>(k) >= n) return -k;  // truncated at the end
    const uint8_t c = p[k];
    const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return -k;
  }
  return need + 1;
}

}  // namespace

bool is_valid(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const uint8_t b = p[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    // Two- and three-byte sequences (Latin, Cyrillic, CJK...) inline; the rest by the table.
    if (b >= 0xC2 && b <= 0xDF && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
      i += 2;
      continue;
    }
    if ((b & 0xF0) == 0xE0 && i + 2 < n && (p[i + 1] & 0xC0) == 0x80 &&
        (p[i + 2] & 0xC0) == 0x80 && !(b == 0xE0 && p[i + 1] < 0xA0) &&
        !(b == 0xED && p[i + 1] > 0x9F)) {
      i += 3;
      continue;
    }
    const int len = check_sequence(p + i, n - i);
    if (len < 0) return false;
    i += static_cast<size_t>(len);
  }
  return true;
}

std::string replace_invalid(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  std::string out;
  out.reserve(n + n / 2);
  size_t i = 0;
  while (i < n) {
    const int len = check_sequence(p + i, n - i);
    if (len > 0) {
      out.append(s.data() + i, static_cast<size_t>(len));
      i += static_cast<size_t>(len);
    } else {
      out.append("\xEF\xBF\xBD");
      i += static_cast<size_t>(-len);
    }
  }
  return out;
}

}  // namespace llmft::utf8
