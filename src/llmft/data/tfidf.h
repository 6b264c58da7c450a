// Character 1-3-gram TF-IDF vectors as the reference's near-duplicate finder computes them
// (SPEC §9): its preprocess_text, then scikit-learn's TfidfVectorizer(analyzer='char',
// ngram_range=(1, 3)) with its defaults. Golden: tests/reference/dedup_reference.py.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmft {

// The text the reference slices into n-grams, as code points: Python's str.lower() (full
// Unicode case mapping), then every character that is neither a word character nor whitespace
// (Python's re `[^\w\s]`) removed, then runs of two or more whitespace characters replaced by one
// space (scikit-learn's `\s\s+`). `utf8` must be valid UTF-8 (the dataset loader checks).
std::u32string dedup_analyzed_text(std::string_view utf8);

// Rows of l2-normalised float64 vectors in compressed sparse row form. Columns within a row are
// ascending; column ids are ordered by document frequency, most frequent first (ties: by n-gram),
// which is the order the similarity search (dedup.h) wants.
struct SparseRows {
  int64_t cols = 0;
  std::vector<int64_t> row_ptr{0};  // (rows + 1)
  std::vector<int32_t> col;         // (nnz)
  std::vector<double> val;          // (nnz)
  int64_t rows() const { return static_cast<int64_t>(row_ptr.size()) - 1; }
  int64_t nnz() const { return row_ptr.back(); }
};

// tf * idf per document, idf = ln((1 + n) / (1 + df)) + 1 over the n documents given, each row
// divided by its l2 norm (a document without n-grams is a row of zeros). `threads` 0 = all.
SparseRows char_tfidf(const std::vector<std::u32string>& docs, int threads = 0);

// Dot product of rows a and b (the cosine similarity of two l2-normalised rows).
double row_dot(const SparseRows& x, int64_t a, int64_t b);

}  // namespace llmft
