// Near-duplicate entries of an instruction dataset (SPEC §9, the reference's
// find-near-duplicates.py): per field, the cosine similarity of character 1-3-gram TF-IDF
// vectors (tfidf.h); every pair at or above a threshold, which split each member is in, and the
// dataset without the later members. Golden pairs: tests/reference/dedup_reference.py.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llmft/data/dataset.h"
#include "llmft/data/tfidf.h"

namespace llmft {

struct SimilarRows {
  int64_t a = 0, b = 0;  // a < b
  double score = 0;
};

// Every pair of rows a < b of `x` (l2-normalised, see SparseRows) whose dot product is at least
// threshold - 1e-9 (the slack lets identical texts meet threshold 1 despite rounding), sorted by
// (a, b). threshold must be in (0, 1]. Exact (no approximation) and without an n x n matrix:
// each row indexes only its rarest columns, enough that a partner sharing none of them cannot
// reach the threshold; partners found through that index are then scored in full.
// `on_rows` (may be empty) gets the number of rows done so far, from one thread.
std::vector<SimilarRows> similar_rows(const SparseRows& x, double threshold, int threads = 0,
                                      const std::function<void(int64_t)>& on_rows = {});

struct DedupOptions {
  double threshold = 0.9;
  std::vector<std::string> fields{"instruction", "input", "output"};
  int threads = 0;        // 0: all cores
  bool progress = true;   // a progress bar per field on stderr
};

struct DuplicatePair {
  std::string field;
  size_t first = 0, second = 0;  // entry indices in the file, first < second
  double score = 0;
};

struct DedupFieldStats {
  std::string field;
  int64_t documents = 0;  // entries whose field is not empty (the TF-IDF corpus)
  int64_t features = 0;   // distinct n-grams
  int64_t nonzeros = 0;   // stored vector entries
  int64_t pairs = 0;
  double seconds = 0;
};

struct DedupResult {
  size_t entries = 0;
  double threshold = 0;
  std::vector<DedupFieldStats> fields;
  std::vector<DuplicatePair> pairs;  // in field order, then by (first, second)
};

// Per field: the documents are the entries whose field is non-empty (a field other than
// instruction/input/output is read from the entry's JSON; absent counts as empty, anything but a
// string is an Error naming entry and field). Pairs where either text has at most one character
// are left out, as in the reference.
DedupResult find_near_duplicates(const InstructionDataset& ds, const DedupOptions& opts);

// The entries --clean drops: the later member of every pair found in one of `fields`, ascending.
std::vector<size_t> later_members(const DedupResult& r, const std::vector<std::string>& fields);

// "train", "test" or "validation" for entry i under split_dataset(n).
const char* split_name(const DatasetSplits& s, size_t i);

// The --output report (docs/datatools.md): settings, per-field figures, split sizes, the counts
// of pairs per split combination, every pair with both texts and splits, and `removed` when
// cleaning.
nlohmann::ordered_json dedup_report(const InstructionDataset& ds, const DedupResult& r,
                                    const std::vector<size_t>* removed);

// The printed summary: pairs per field, pairs crossing splits, the first `show` pairs per field
// with their texts cut to one line.
std::string format_dedup_summary(const InstructionDataset& ds, const DedupResult& r, size_t show);

}  // namespace llmft
