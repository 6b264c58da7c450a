// Near-duplicate search: an exact all-pairs similarity search over sparse TF-IDF rows (prefix
// filtering, as in Bayardo et al.'s All-Pairs), per field, with a split-aware report.
#include "llmft/data/dedup.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>

#include "llmft/core/error.h"
#include "llmft/core/progress.h"

namespace llmft {

namespace {

using ojson = nlohmann::ordered_json;

constexpr double kSlack = 1e-9;  // rounding slack of the threshold test

}  // namespace

// Why it is exact. Columns are ordered most frequent first. Row y is split at k_y: its head
// (entries before k_y, the frequent columns) has norm |y_head| < t, its tail (the rare columns)
// is indexed. If x and y share no tail column of y, x.y = x.y_head <= |y_head| < t. Sharper:
// processing x's columns from the rarest, the first shared column f* must be in y's tail, and
// x.y <= |x restricted to columns <= f*|, so a partner is only admitted while that norm of x is
// still >= t; after that, columns only add to partners already admitted. An admitted partner's
// score is the accumulated tail products plus x.y_head, bounded first by
// |x restricted to y's head columns| * |y_head| and computed in full only when that bound can
// reach t.
std::vector<SimilarRows> similar_rows(const SparseRows& x, double threshold, int threads,
                                      const std::function<void(int64_t)>& on_rows) {
  if (!(threshold > 0 && threshold <= 1)) {
    throw UsageError(fmt::format("threshold {} is out of range: expected a value in (0, 1]", threshold));
  }
  const int64_t n = x.rows();
  const double t = threshold - kSlack;
  const double admit2 = (t - kSlack) * (t - kSlack);  // admission keeps extra slack for rounding
  // Split point, head norm and first tail column of each row.
  std::vector<int64_t> split(static_cast<size_t>(n));
  std::vector<double> head_norm(static_cast<size_t>(n));
  std::vector<int32_t> tail_col(static_cast<size_t>(n));
  std::vector<int64_t> post_ptr(static_cast<size_t>(x.cols) + 1, 0);
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    int64_t p = x.row_ptr[r];
    const int64_t pe = x.row_ptr[r + 1];
    while (p < pe && s + x.val[p] * x.val[p] < admit2) {
      s += x.val[p] * x.val[p];
      ++p;
    }
    split[r] = p;
    head_norm[r] = std::sqrt(s);
    tail_col[r] = p < pe ? x.col[p] : std::numeric_limits<int32_t>::max();
    for (; p < pe; ++p) ++post_ptr[static_cast<size_t>(x.col[p]) + 1];
  }
  // Postings: for every column, the rows whose tail holds it, ascending.
  for (size_t c = 0; c < static_cast<size_t>(x.cols); ++c) post_ptr[c + 1] += post_ptr[c];
  std::vector<int32_t> post_row(static_cast<size_t>(post_ptr.back()));
  std::vector<double> post_val(post_row.size());
  {
    std::vector<int64_t> fill(post_ptr.begin(), post_ptr.end() - 1);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t p = split[r]; p < x.row_ptr[r + 1]; ++p) {
        const int64_t at = fill[static_cast<size_t>(x.col[p])]++;
        post_row[at] = static_cast<int32_t>(r);
        post_val[at] = x.val[p];
      }
    }
  }

  const int nt = threads > 0 ? threads : omp_get_max_threads();
  std::vector<std::vector<SimilarRows>> found(static_cast<size_t>(nt));
  std::atomic<int64_t> done{0};
#pragma omp parallel num_threads(nt)
  {
    std::vector<SimilarRows>& out = found[static_cast<size_t>(omp_get_thread_num())];
    std::vector<double> acc(static_cast<size_t>(n), 0.0);       // (n) tail products per partner
    std::vector<double> dense(static_cast<size_t>(x.cols), 0.0);  // (cols) row x scattered
    std::vector<double> cum;                                      // (nnz_x + 1) prefix sums of x^2
    std::vector<int32_t> partners;
#pragma omp for schedule(dynamic, 32)
    for (int64_t r = 0; r < n; ++r) {
      const int64_t p0 = x.row_ptr[r], p1 = x.row_ptr[r + 1];
      cum.assign(1, 0.0);
      for (int64_t p = p0; p < p1; ++p) {
        dense[x.col[p]] = x.val[p];
        cum.push_back(cum.back() + x.val[p] * x.val[p]);
      }
      partners.clear();
      for (int64_t p = p1 - 1; p >= p0; --p) {
        const bool admit = cum[p - p0 + 1] >= admit2;
        if (!admit && partners.empty()) break;
        const double xv = x.val[p];
        const int64_t q1 = post_ptr[static_cast<size_t>(x.col[p]) + 1];
        for (int64_t q = post_ptr[static_cast<size_t>(x.col[p])]; q < q1; ++q) {
          const int32_t y = post_row[q];
          if (y >= r) break;  // postings ascend: the rest come after x
          double& a = acc[static_cast<size_t>(y)];
          if (a != 0) {
            a += xv * post_val[q];
          } else if (admit) {
            a = xv * post_val[q];
            partners.push_back(y);
          }
        }
      }
      for (const int32_t y : partners) {
        const double a = acc[static_cast<size_t>(y)];
        acc[static_cast<size_t>(y)] = 0;
        // |x restricted to y's head columns| * |y_head| bounds what the head can add.
        const int64_t k = std::lower_bound(x.col.begin() + p0, x.col.begin() + p1, tail_col[y]) -
                          (x.col.begin() + p0);
        if (a + std::sqrt(cum[static_cast<size_t>(k)]) * head_norm[y] < t) continue;
        double s = a;
        for (int64_t p = x.row_ptr[y]; p < split[y]; ++p) s += dense[x.col[p]] * x.val[p];
        if (s >= t) out.push_back({y, r, s});
      }
      for (int64_t p = p0; p < p1; ++p) dense[x.col[p]] = 0;
      const int64_t d = ++done;
      if (on_rows && omp_get_thread_num() == 0) on_rows(d);
    }
  }
  std::vector<SimilarRows> all;
  for (auto& f : found) all.insert(all.end(), f.begin(), f.end());
  std::sort(all.begin(), all.end(),
            [](const SimilarRows& u, const SimilarRows& v) { return u.a != v.a ? u.a < v.a : u.b < v.b; });
  if (on_rows) on_rows(n);
  return all;
}

namespace {

// The text of `field` in entry i: "" when absent; an Error when not a string.
std::string_view field_text(const InstructionDataset& ds, size_t i, const std::string& field) {
  const InstructionEntry& e = ds.entries[i];
  if (field == "instruction") return e.instruction;
  if (field == "input") return e.input;
  if (field == "output") return e.output;
  const auto it = e.raw.find(field);
  if (it == e.raw.end() || it->is_null()) return {};
  if (!it->is_string()) {
    throw Error(fmt::format("{}: entry {}: field \"{}\" is {}, expected a string", ds.path.string(),
                            i, field, it->type_name()),
                "--fields names string fields of the entries");
  }
  return it->get_ref<const std::string&>();
}

size_t code_points(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// One line of a text for the printed summary: newlines shown as "\n", at most `max` code points.
std::string one_line(std::string_view s, size_t max = 100) {
  std::string out;
  size_t cps = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80 && ++cps > max) {
      out += "...";
      break;
    }
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t' || c == '\r') {
      out += ' ';
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string split_pair_name(const DatasetSplits& sp, const DuplicatePair& p) {
  return fmt::format("{}-{}", split_name(sp, p.first), split_name(sp, p.second));
}

}  // namespace

const char* split_name(const DatasetSplits& s, size_t i) {
  if (i < s.train.end) return "train";
  if (i < s.test.end) return "test";
  return "validation";
}

DedupResult find_near_duplicates(const InstructionDataset& ds, const DedupOptions& opts) {
  if (opts.fields.empty()) throw UsageError("--fields is empty", "e.g. --fields instruction,input,output");
  if (opts.threads < 0) throw UsageError(fmt::format("--threads {}: expected 0 or more", opts.threads));
  if (!(opts.threshold > 0 && opts.threshold <= 1)) {
    throw UsageError(fmt::format("--threshold {} is out of range: expected a value in (0, 1]",
                                 opts.threshold),
                     "1 finds identical texts only; the reference's default is 0.9");
  }
  DedupResult r;
  r.entries = ds.size();
  r.threshold = opts.threshold;
  for (const std::string& field : opts.fields) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<size_t> entry_of;  // row -> entry index
    std::vector<std::u32string> docs;
    for (size_t i = 0; i < ds.size(); ++i) {
      const std::string_view s = field_text(ds, i, field);
      if (s.empty()) continue;
      entry_of.push_back(i);
      docs.push_back(dedup_analyzed_text(s));
    }
    DedupFieldStats st;
    st.field = field;
    st.documents = static_cast<int64_t>(docs.size());
    if (!docs.empty()) {
      const SparseRows x = char_tfidf(docs, opts.threads);
      docs = {};
      st.features = x.cols;
      st.nonzeros = x.nnz();
      std::unique_ptr<ProgressBar> bar;
      if (opts.progress) bar = std::make_unique<ProgressBar>("comparing " + field, x.rows(), "entry");
      const auto rows = similar_rows(x, opts.threshold, opts.threads,
                                     [&](int64_t d) { if (bar) bar->update(d); });
      if (bar) bar->finish();
      for (const SimilarRows& p : rows) {
        const size_t i = entry_of[static_cast<size_t>(p.a)], j = entry_of[static_cast<size_t>(p.b)];
        // As the reference: a one-character text (a digit, a letter) is no evidence of copying.
        if (code_points(field_text(ds, i, field)) <= 1 || code_points(field_text(ds, j, field)) <= 1) {
          continue;
        }
        r.pairs.push_back({field, i, j, p.score});
        ++st.pairs;
      }
    }
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.fields.push_back(st);
  }
  return r;
}

std::vector<size_t> later_members(const DedupResult& r, const std::vector<std::string>& fields) {
  std::vector<size_t> out;
  for (const DuplicatePair& p : r.pairs) {
    if (std::find(fields.begin(), fields.end(), p.field) != fields.end()) out.push_back(p.second);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

ojson dedup_report(const InstructionDataset& ds, const DedupResult& r,
                   const std::vector<size_t>* removed) {
  const DatasetSplits sp = split_dataset(ds.size());
  ojson j;
  j["dataset"] = ds.path.string();
  j["entries"] = r.entries;
  j["threshold"] = r.threshold;
  j["splits"] = {{"train", {sp.train.begin, sp.train.end}},
                 {"test", {sp.test.begin, sp.test.end}},
                 {"validation", {sp.val.begin, sp.val.end}}};
  ojson fields = ojson::array();
  for (const DedupFieldStats& f : r.fields) {
    std::map<std::string, int64_t> by_split;
    int64_t cross = 0;
    for (const DuplicatePair& p : r.pairs) {
      if (p.field != f.field) continue;
      ++by_split[split_pair_name(sp, p)];
      cross += std::string(split_name(sp, p.first)) != split_name(sp, p.second);
    }
    fields.push_back({{"field", f.field},
                      {"documents", f.documents},
                      {"features", f.features},
                      {"pairs", f.pairs},
                      {"cross_split_pairs", cross},
                      {"pairs_by_split", by_split},
                      {"seconds", f.seconds}});
  }
  j["fields"] = std::move(fields);
  ojson pairs = ojson::array();
  for (const DuplicatePair& p : r.pairs) {
    const char* a = split_name(sp, p.first);
    const char* b = split_name(sp, p.second);
    pairs.push_back({{"field", p.field},
                     {"first", p.first},
                     {"second", p.second},
                     {"score", p.score},
                     {"first_split", a},
                     {"second_split", b},
                     {"cross_split", std::string(a) != b},
                     {"first_text", field_text(ds, p.first, p.field)},
                     {"second_text", field_text(ds, p.second, p.field)}});
  }
  j["pairs"] = std::move(pairs);
  if (removed) j["removed"] = *removed;
  return j;
}

std::string format_dedup_summary(const InstructionDataset& ds, const DedupResult& r, size_t show) {
  const DatasetSplits sp = split_dataset(ds.size());
  std::string out = fmt::format("{} entries (train {}, test {}, validation {}), threshold {}\n",
                                r.entries, sp.train.size(), sp.test.size(), sp.val.size(),
                                r.threshold);
  for (const DedupFieldStats& f : r.fields) {
    std::map<std::string, int64_t> cross;
    for (const DuplicatePair& p : r.pairs) {
      if (p.field == f.field && std::string(split_name(sp, p.first)) != split_name(sp, p.second)) {
        ++cross[split_pair_name(sp, p)];
      }
    }
    std::string cross_text;
    for (const auto& [k, v] : cross) cross_text += fmt::format("{}{} {}", cross_text.empty() ? "" : ", ", k, v);
    out += fmt::format("\n{}: {} pairs >= {} among {} non-empty texts ({:.1f} s){}\n", f.field,
                       f.pairs, r.threshold, f.documents, f.seconds,
                       cross.empty() ? std::string() : fmt::format("; across splits: {}", cross_text));
    size_t shown = 0;
    for (const DuplicatePair& p : r.pairs) {
      if (p.field != f.field) continue;
      if (shown++ == show) {
        out += fmt::format("  ... {} more (all in the --output report)\n", f.pairs - static_cast<int64_t>(show));
        break;
      }
      out += fmt::format("  {:.4f}  #{} ({}) / #{} ({})\n    1. {}\n    2. {}\n", p.score, p.first,
                         split_name(sp, p.first), p.second, split_name(sp, p.second),
                         one_line(field_text(ds, p.first, p.field)),
                         one_line(field_text(ds, p.second, p.field)));
    }
  }
  return out;
}

}  // namespace llmft
