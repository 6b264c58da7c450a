// Character n-gram TF-IDF (scikit-learn's TfidfVectorizer defaults) over the reference's
// preprocessed text. Python's character classes are reproduced with ICU's Unicode properties.
#include "llmft/data/tfidf.h"

#include <omp.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "llmft/core/error.h"

namespace llmft {

namespace {

// Python's str.isspace / re `\s`: bidirectional class WS, B or S, or category Zs
// (CPython's makeunicodedata.py), which for ASCII is \t \n \v \f \r, 0x1c-0x1f and ' '.
bool py_space(UChar32 c) {
  if (c < 128) return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
  if (u_charType(c) == U_SPACE_SEPARATOR) return true;
  const UCharDirection d = u_charDirection(c);
  return d == U_WHITE_SPACE_NEUTRAL || d == U_BLOCK_SEPARATOR || d == U_SEGMENT_SEPARATOR;
}

// Python's re `\w` on str: str.isalnum() (a letter, category L*, or a character with a numeric
// value: decimal, digit or numeric) or '_'. Combining marks (M*) and punctuation are not.
bool py_word(UChar32 c) {
  if (c < 128) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  }
  return u_isalpha(c) || u_getIntPropertyValue(c, UCHAR_NUMERIC_TYPE) != U_NT_NONE;
}

// Python's str.lower() (full case mapping, final sigma included) as code points.
std::u32string py_lower(std::string_view utf8) {
  std::u32string out;
  out.reserve(utf8.size());
  const bool ascii = std::all_of(utf8.begin(), utf8.end(),
                                 [](char c) { return static_cast<unsigned char>(c) < 128; });
  if (ascii) {
    for (char c : utf8) out.push_back(static_cast<char32_t>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    return out;
  }
  UErrorCode err = U_ZERO_ERROR;
  int32_t len16 = 0;
  u_strFromUTF8(nullptr, 0, &len16, utf8.data(), static_cast<int32_t>(utf8.size()), &err);
  err = U_ZERO_ERROR;
  std::u16string src(static_cast<size_t>(len16), u'\0');
  u_strFromUTF8(src.data(), len16, nullptr, utf8.data(), static_cast<int32_t>(utf8.size()), &err);
  if (U_FAILURE(err)) throw Error("invalid UTF-8 in a text to compare (the loader should have caught it)");
  // Lower-casing can lengthen a text (U+0130 becomes two code units): ask for the size first.
  std::u16string low(src.size() + 16, u'\0');
  int32_t n = u_strToLower(low.data(), static_cast<int32_t>(low.size()), src.data(), len16, "", &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    err = U_ZERO_ERROR;
    low.assign(static_cast<size_t>(n), u'\0');
    n = u_strToLower(low.data(), n, src.data(), len16, "", &err);
  }
  LLMFT_CHECK(U_SUCCESS(err), "u_strToLower failed: {}", u_errorName(err));
  for (int32_t i = 0; i < n;) {
    UChar32 c;
    U16_NEXT(low.data(), i, n, c);
    out.push_back(static_cast<char32_t>(c));
  }
  return out;
}

// uint64 n-gram key -> feature id, open addressing with linear probing. A key is up to three
// 21-bit code points; no analysed text holds U+0000 (not a word or space character), so 0 is free.
class NgramIndex {
 public:
  NgramIndex() { rehash(1 << 16); }
  int32_t find_or_add(uint64_t key) {
    size_t h = mix(key) & mask_;
    while (keys_[h] != 0) {
      if (keys_[h] == key) return ids_[h];
      h = (h + 1) & mask_;
    }
    keys_[h] = key;
    ids_[h] = static_cast<int32_t>(order_.size());
    order_.push_back(key);
    if (2 * order_.size() > keys_.size()) rehash(2 * keys_.size());
    return static_cast<int32_t>(order_.size() - 1);
  }
  const std::vector<uint64_t>& keys_by_id() const { return order_; }

 private:
  static uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  void rehash(size_t cap) {
    keys_.assign(cap, 0);
    ids_.assign(cap, 0);
    mask_ = cap - 1;
    for (size_t id = 0; id < order_.size(); ++id) {
      size_t h = mix(order_[id]) & mask_;
      while (keys_[h] != 0) h = (h + 1) & mask_;
      keys_[h] = order_[id];
      ids_[h] = static_cast<int32_t>(id);
    }
  }
  std::vector<uint64_t> keys_;
  std::vector<int32_t> ids_;
  std::vector<uint64_t> order_;
  size_t mask_ = 0;
};

// Distinct n-grams of one analysed text with their counts, sorted by key.
void count_ngrams(const std::u32string& s, std::vector<uint64_t>& keys,
                  std::vector<std::pair<uint64_t, int32_t>>& counts) {
  keys.clear();
  counts.clear();
  const size_t L = s.size();
  for (size_t i = 0; i < L; ++i) {
    const uint64_t c0 = s[i];
    keys.push_back(c0);
    if (i + 1 < L) keys.push_back(c0 | (uint64_t{s[i + 1]} << 21));
    if (i + 2 < L) keys.push_back(c0 | (uint64_t{s[i + 1]} << 21) | (uint64_t{s[i + 2]} << 42));
  }
  std::sort(keys.begin(), keys.end());
  for (size_t i = 0; i < keys.size();) {
    size_t j = i;
    while (j < keys.size() && keys[j] == keys[i]) ++j;
    counts.emplace_back(keys[i], static_cast<int32_t>(j - i));
    i = j;
  }
}

}  // namespace

std::u32string dedup_analyzed_text(std::string_view utf8) {
  const std::u32string low = py_lower(utf8);
  std::u32string kept;  // re.sub(r'[^\w\s]', '', text)
  kept.reserve(low.size());
  for (char32_t c : low) {
    if (py_word(static_cast<UChar32>(c)) || py_space(static_cast<UChar32>(c))) kept.push_back(c);
  }
  std::u32string out;  // re.sub(r'\s\s+', ' ', text)
  out.reserve(kept.size());
  for (size_t i = 0; i < kept.size();) {
    if (!py_space(static_cast<UChar32>(kept[i]))) {
      out.push_back(kept[i++]);
      continue;
    }
    size_t j = i;
    while (j < kept.size() && py_space(static_cast<UChar32>(kept[j]))) ++j;
    out.push_back(j - i >= 2 ? U' ' : kept[i]);
    i = j;
  }
  return out;
}

SparseRows char_tfidf(const std::vector<std::u32string>& docs, int threads) {
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  const auto n = static_cast<int64_t>(docs.size());
  SparseRows x;
  x.row_ptr.assign(1, 0);
  x.row_ptr.reserve(docs.size() + 1);
  NgramIndex index;
  std::vector<int64_t> df;
  // Counting runs in parallel over blocks of documents; ids are handed out in document order.
  constexpr int64_t kBlock = 2048;
  std::vector<std::vector<std::pair<uint64_t, int32_t>>> block(kBlock);
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t b1 = std::min(n, b0 + kBlock);
#pragma omp parallel num_threads(nt)
    {
      std::vector<uint64_t> keys;
#pragma omp for schedule(dynamic, 16)
      for (int64_t d = b0; d < b1; ++d) count_ngrams(docs[static_cast<size_t>(d)], keys, block[d - b0]);
    }
    for (int64_t d = b0; d < b1; ++d) {
      for (const auto& [key, count] : block[d - b0]) {
        const int32_t id = index.find_or_add(key);
        if (static_cast<size_t>(id) == df.size()) df.push_back(0);
        ++df[static_cast<size_t>(id)];
        x.col.push_back(id);
        x.val.push_back(count);
      }
      x.row_ptr.push_back(static_cast<int64_t>(x.col.size()));
    }
  }
  const std::vector<uint64_t>& keys = index.keys_by_id();
  x.cols = static_cast<int64_t>(keys.size());
  // Most frequent first, ties by n-gram key, so the result does not depend on document order.
  std::vector<int32_t> by_df(keys.size());
  std::iota(by_df.begin(), by_df.end(), 0);
  std::sort(by_df.begin(), by_df.end(), [&](int32_t a, int32_t b) {
    return df[a] != df[b] ? df[a] > df[b] : keys[a] < keys[b];
  });
  std::vector<int32_t> new_id(keys.size());
  std::vector<double> idf(keys.size());
  for (size_t k = 0; k < by_df.size(); ++k) {
    new_id[by_df[k]] = static_cast<int32_t>(k);
    // smooth_idf: as if one more document held every n-gram once.
    idf[k] = std::log(static_cast<double>(n + 1) / static_cast<double>(df[by_df[k]] + 1)) + 1.0;
  }
#pragma omp parallel num_threads(nt)
  {
    std::vector<std::pair<int32_t, double>> row;
#pragma omp for schedule(dynamic, 64)
    for (int64_t r = 0; r < n; ++r) {
      const int64_t p0 = x.row_ptr[r], p1 = x.row_ptr[r + 1];
      row.clear();
      for (int64_t p = p0; p < p1; ++p) {
        const int32_t c = new_id[x.col[p]];
        row.emplace_back(c, x.val[p] * idf[c]);
      }
      std::sort(row.begin(), row.end());
      double ss = 0;
      for (const auto& e : row) ss += e.second * e.second;
      const double norm = std::sqrt(ss);
      for (int64_t p = p0; p < p1; ++p) {
        x.col[p] = row[p - p0].first;
        x.val[p] = row[p - p0].second / norm;
      }
    }
  }
  return x;
}

double row_dot(const SparseRows& x, int64_t a, int64_t b) {
  int64_t i = x.row_ptr[a], j = x.row_ptr[b];
  const int64_t ie = x.row_ptr[a + 1], je = x.row_ptr[b + 1];
  double s = 0;
  while (i < ie && j < je) {
    if (x.col[i] < x.col[j]) {
      ++i;
    } else if (x.col[j] < x.col[i]) {
      ++j;
    } else {
      s += x.val[i++] * x.val[j++];
    }
  }
  return s;
}

}  // namespace llmft
