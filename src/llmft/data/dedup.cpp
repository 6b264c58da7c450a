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
// is indexed. If x and y share no tail column of y, x.y = x.y_head <= |y_head| < t. So, walking
// x's columns from the rarest, the first shared column f* is in y's tail, and by Cauchy-Schwarz
// x.y <= x_f* y_f* + |x_<f*| |y_<f*| (norms of the columns before f*): a partner is admitted
// only when that bound reaches t (L2AP's positional bound; it needs |x_<=f*| >= t, so the walk
// stops where x's remaining norm drops below t). Each later shared column adds its product, and
// a partner whose products so far plus |x_<f| |y_<f| fall below t is dropped. The partners left
// are scored exactly.
std::vector<SimilarRows> similar_rows(const SparseRows& x, double threshold, int threads,
                                      const std::function<void(int64_t)>& on_rows) {
  if (!(threshold > 0 && threshold <= 1)) {
    throw UsageError(fmt::format("threshold {} is out of range: expected a value in (0, 1]", threshold));
  }
  const int64_t n = x.rows();
  const double t = threshold - kSlack;
  // The walk filters in float32 (half the memory traffic); every bound keeps 1e-5 of slack for
  // its rounding, and a reported score is recomputed exactly in float64.
  const float t_walk = static_cast<float>(t - 1e-5);
  const double admit2 = (t - 1e-5) * (t - 1e-5);
  constexpr float kDropped = -1e30f;  // a partner whose bound fell below t (stays negative)
  // Split point, head norm and first tail column of each row.
  std::vector<int64_t> split(static_cast<size_t>(n));
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
    tail_col[r] = p < pe ? x.col[p] : std::numeric_limits<int32_t>::max();
    for (; p < pe; ++p) ++post_ptr[static_cast<size_t>(x.col[p]) + 1];
  }
  // Postings: for every column, the rows whose tail holds it, ascending, with the value and
  // |y_<f| (the norm of the row's earlier columns).
  struct Posting {
    int32_t row;
    float val, pre;
  };
  for (size_t c = 0; c < static_cast<size_t>(x.cols); ++c) post_ptr[c + 1] += post_ptr[c];
  std::vector<Posting> post(static_cast<size_t>(post_ptr.back()));
  {
    std::vector<int64_t> fill(post_ptr.begin(), post_ptr.end() - 1);
    for (int64_t r = 0; r < n; ++r) {
      double pre = 0;
      for (int64_t p = x.row_ptr[r]; p < x.row_ptr[r + 1]; ++p) {
        if (p >= split[r]) {
          post[fill[static_cast<size_t>(x.col[p])]++] = {
              static_cast<int32_t>(r), static_cast<float>(x.val[p]),
              static_cast<float>(std::sqrt(pre) * (1 + 1e-6))};  // rounded up: a bound
        }
        pre += x.val[p] * x.val[p];
      }
    }
  }

  const int nt = threads > 0 ? threads : omp_get_max_threads();
  std::vector<std::vector<SimilarRows>> found(static_cast<size_t>(nt));
  std::atomic<int64_t> done{0};
#pragma omp parallel num_threads(nt)
  {
    std::vector<SimilarRows>& out = found[static_cast<size_t>(omp_get_thread_num())];
    std::vector<float> acc(static_cast<size_t>(n), 0.0f);         // (n) walked products per partner
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
      // Walk x's columns from the rarest while a new partner can still be admitted.
      int64_t p = p1 - 1;
      for (; p >= p0 && cum[p - p0 + 1] >= admit2; --p) {
        const auto xv = static_cast<float>(x.val[p]);
        const auto x_pre = static_cast<float>(std::sqrt(cum[p - p0]) * (1 + 1e-6));  // |x_<f|
        const Posting* q = post.data() + post_ptr[static_cast<size_t>(x.col[p])];
        const Posting* const q1 = post.data() + post_ptr[static_cast<size_t>(x.col[p]) + 1];
        for (; q < q1 && q->row < r; ++q) {  // postings ascend: stop at x itself
          float& a = acc[static_cast<size_t>(q->row)];
          if (a > 0) {
            a += xv * q->val;
            if (a + x_pre * q->pre < t_walk) a = kDropped;
          } else if (a == 0) {
            // The first shared column of y's tail: admit, or drop for good (a later column's
            // bound would leave this column's product out).
            const float prod = xv * q->val;
            a = prod + x_pre * q->pre >= t_walk ? prod : kDropped;
            partners.push_back(q->row);
          }
        }
      }
      // Partners still standing: the exact score, in float64 over y's whole row.
      for (const int32_t y : partners) {
        const float a = acc[static_cast<size_t>(y)];
        acc[static_cast<size_t>(y)] = 0;
        if (a < 0) continue;  // dropped
        double s = 0;
        for (int64_t e = x.row_ptr[y]; e < x.row_ptr[y + 1]; ++e) s += dense[x.col[e]] * x.val[e];
        if (s >= t) out.push_back({y, r, s});
      }
      for (int64_t e = p0; e < p1; ++e) dense[x.col[e]] = 0;
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
