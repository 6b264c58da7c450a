// Near-duplicate search (llmft dedup) on a generated Alpaca-like dataset: 52,000 entries by
// default (the Stanford Alpaca file's size), all three fields, wall time and peak memory; and on
// a subset, the pruned search against brute force over every pair (the same-run baseline).
// Validates first: every planted copy is found. One JSON line per result.
//   bench_dedup [--entries 52000] [--threshold 0.9] [--subset 4000] [--threads 0]
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/dedup.h"
#include "common.h"

namespace {

using llmft::bench::peak_rss_gib;

using namespace llmft;
using Clock = std::chrono::steady_clock;

struct Rng {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  uint64_t operator()(uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (state >> 33) % n;
  }
  double uniform() { return static_cast<double>((*this)(1u << 30)) / (1u << 30); }
};

// English text without meaning. Words: the bundled 1,100-entry dataset's 3,061 words with their
// frequencies (85% of the words drawn), and a tail of 40,000 rarer words made by joining the start
// of one real word to the end of another (English-like spelling), drawn with a Zipf skew (15%);
// real English text draws ~15-20% of its words beyond its 3,000 most frequent, and the Stanford
// Alpaca file has ~45,000 distinct words. Instructions from 30 task templates; lengths follow
// Alpaca's (instruction ~60 characters, 40% of entries with an input of ~90, output ~300).
class Generator {
 public:
  Generator() {
    std::map<std::string, int64_t> freq;
    for (const auto& e : load_dataset(data_dir() / "instruction-data.json").entries) {
      for (const std::string* s : {&e.instruction, &e.input, &e.output}) {
        std::string w;
        for (char c : *s + " ") {
          if (std::isalnum(static_cast<unsigned char>(c)) || c == '\'' || c == '-') {
            w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          } else if (!w.empty()) {
            ++freq[w];
            w.clear();
          }
        }
      }
    }
    double z = 0;
    for (const auto& [w, f] : freq) z += static_cast<double>(f);
    double c = 0;
    for (const auto& [w, f] : freq) {
      words_.push_back(w);
      c += 0.85 * static_cast<double>(f) / z;
      cdf_.push_back(c);
    }
    const size_t real = words_.size();
    constexpr int kTail = 40000;
    double zt = 0;
    for (int k = 1; k <= kTail; ++k) zt += 1.0 / k;
    for (int k = 1; k <= kTail; ++k) {
      const std::string& a = words_[rng_(real)];
      const std::string& b = words_[rng_(real)];
      words_.push_back(a.substr(0, (a.size() + 1) / 2) + b.substr(b.size() / 2));
      c += 0.15 / k / zt;
      cdf_.push_back(c);
    }
  }
  size_t vocabulary() const { return words_.size(); }
  std::string word() {
    const size_t k = static_cast<size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), rng_.uniform()) - cdf_.begin());
    return words_[std::min(k, words_.size() - 1)];
  }
  std::string words(int n) {
    std::string s;
    for (int k = 0; k < n; ++k) s += (k ? " " : "") + word();
    return s;
  }
  std::string sentences(int chars) {
    std::string s;
    while (static_cast<int>(s.size()) < chars) {
      std::string t = words(6 + static_cast<int>(rng_(12)));
      t[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(t[0])));
      s += (s.empty() ? "" : " ") + t + (rng_(8) ? "." : "?");
    }
    return s;
  }
  InstructionEntry entry() {
    static const char* kTemplates[] = {
        "Explain {}.", "Generate a list of {}.", "Rewrite the following sentence about {}.",
        "Describe {} in detail.", "What is {}?", "Classify {} into categories.",
        "Summarize the text about {}.", "Give three examples of {}.", "Translate {} into French.",
        "Write a short story about {}.", "Compare {} and {}.", "Why is {} important?",
        "Create a poem about {}.", "Suggest ways to improve {}.", "Identify the main idea of {}.",
        "How does {} work?", "Find the error in {}.", "Write a headline for {}.",
        "Edit the text to make {} clearer.", "Provide a definition of {}.",
        "Name five {}.", "Design a plan for {}.", "Convert {} to the passive voice.",
        "Calculate {}.", "Analyze the effect of {} on {}.", "List the steps to {}.",
        "Make a recommendation about {}.", "Evaluate {}.", "Construct an argument for {}.",
        "Outline {}."};
    std::string t = kTemplates[rng_(30)];
    std::string instr;
    for (size_t p = 0; p < t.size(); ++p) {
      if (t.compare(p, 2, "{}") == 0) {
        instr += words(2 + static_cast<int>(rng_(5)));
        ++p;
      } else {
        instr += t[p];
      }
    }
    InstructionEntry e;
    e.instruction = instr;
    if (rng_(10) < 4) e.input = sentences(40 + static_cast<int>(rng_(100)));
    e.output = sentences(100 + static_cast<int>(rng_(400)));
    return e;
  }
  // A copy of `e` as users' files have them: case and punctuation changed (identical after the
  // reference's preprocessing, so every copy must be found at any threshold).
  InstructionEntry copy_of(const InstructionEntry& e) {
    InstructionEntry c = e;
    for (std::string* s : {&c.instruction, &c.input, &c.output}) {
      for (char& ch : *s) {
        if (ch == '.' && rng_(2)) ch = '!';
        if (std::isalpha(static_cast<unsigned char>(ch)) && rng_(20) == 0) {
          ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        }
      }
    }
    return c;
  }
  Rng& rng() { return rng_; }

 private:
  Rng rng_;
  std::vector<std::string> words_;
  std::vector<double> cdf_;
};

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t entries = 52000, subset = 4000;
  double threshold = 0.9;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--entries") entries = std::atoll(argv[i + 1]);
    else if (a == "--subset") subset = std::atoll(argv[i + 1]);
    else if (a == "--threshold") threshold = std::atof(argv[i + 1]);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  fmt::print("{{\"context\": \"bench_dedup\", \"entries\": {}, \"threshold\": {}, \"threads\": {}, "
             "\"loadavg_start\": \"{}\", \"compiler\": \"{}\"}}\n",
             entries, threshold, nt, loadavg(), __VERSION__);

  // The dataset: 2% of entries are copies of an earlier entry.
  Generator g;
  InstructionDataset ds;
  ds.path = "(generated)";
  std::vector<std::pair<size_t, size_t>> planted;
  for (int64_t i = 0; i < entries; ++i) {
    if (i > 10 && g.rng()(50) == 0) {
      const size_t src = g.rng()(static_cast<uint64_t>(i));
      planted.emplace_back(src, static_cast<size_t>(i));
      ds.entries.push_back(g.copy_of(ds.entries[src]));
    } else {
      ds.entries.push_back(g.entry());
    }
  }
  double chars[3] = {0, 0, 0};
  int64_t inputs = 0;
  for (const auto& e : ds.entries) {
    chars[0] += static_cast<double>(e.instruction.size());
    chars[1] += static_cast<double>(e.input.size());
    chars[2] += static_cast<double>(e.output.size());
    inputs += !e.input.empty();
  }
  fmt::print("{{\"dataset\": \"generated\", \"entries\": {}, \"planted_copies\": {}, "
             "\"vocabulary\": {}, \"mean_chars\": [{:.0f}, {:.0f}, {:.0f}], \"nonempty_inputs\": {}}}\n",
             entries, planted.size(), g.vocabulary(), chars[0] / entries, chars[1] / std::max<int64_t>(1, inputs),
             chars[2] / entries, inputs);

  DedupOptions o;
  o.threshold = threshold;
  o.threads = threads;
  o.progress = false;
  const auto t0 = Clock::now();
  const DedupResult r = find_near_duplicates(ds, o);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  // Validate: every planted copy is a pair in every non-empty field.
  std::set<std::tuple<std::string, size_t, size_t>> found;
  for (const auto& p : r.pairs) found.insert({p.field, p.first, p.second});
  int64_t missing = 0;
  for (const auto& [a, b] : planted) {
    for (const char* f : {"instruction", "output"}) missing += !found.count({f, a, b});
  }
  for (const DedupFieldStats& f : r.fields) {
    fmt::print("{{\"field\": \"{}\", \"documents\": {}, \"features\": {}, \"nonzeros\": {}, "
               "\"pairs\": {}, \"seconds\": {:.2f}}}\n",
               f.field, f.documents, f.features, f.nonzeros, f.pairs, f.seconds);
  }
  fmt::print("{{\"result\": \"dedup_all_fields\", \"entries\": {}, \"seconds\": {:.2f}, "
             "\"peak_rss_gib\": {:.2f}, \"pairs\": {}, \"planted_missing\": {}, "
             "\"loadavg_end\": \"{}\"}}\n",
             entries, secs, peak_rss_gib(), r.pairs.size(), missing, loadavg());
  if (missing) {
    std::fprintf(stderr, "bench_dedup: %lld planted copies were not found\n",
                 static_cast<long long>(missing));
    return 1;
  }

  // Same-run baseline on the outputs of a subset: every pair's dot product (what an n x n
  // product computes, done sparsely) against the pruned search.
  subset = std::min<int64_t>(subset, entries);
  std::vector<std::u32string> docs;
  for (int64_t i = 0; i < subset; ++i) docs.push_back(dedup_analyzed_text(ds.entries[i].output));
  const SparseRows x = char_tfidf(docs, threads);
  for (int rep = 0; rep < 3; ++rep) {
    auto s0 = Clock::now();
    const auto pruned = similar_rows(x, threshold, threads);
    const double t_pruned = std::chrono::duration<double>(Clock::now() - s0).count();
    s0 = Clock::now();
    int64_t brute_pairs = 0;
#pragma omp parallel for schedule(dynamic, 16) reduction(+ : brute_pairs) num_threads(nt)
    for (int64_t a = 0; a < x.rows(); ++a) {
      for (int64_t b = a + 1; b < x.rows(); ++b) brute_pairs += row_dot(x, a, b) >= threshold - 1e-9;
    }
    const double t_brute = std::chrono::duration<double>(Clock::now() - s0).count();
    fmt::print("{{\"result\": \"search_vs_all_pairs\", \"field\": \"output\", \"rows\": {}, "
               "\"rep\": {}, \"pruned_s\": {:.3f}, \"all_pairs_s\": {:.3f}, \"speedup\": {:.1f}, "
               "\"pairs\": {}, \"same_pairs\": {}}}\n",
               subset, rep, t_pruned, t_brute, t_brute / t_pruned, pruned.size(),
               static_cast<int64_t>(pruned.size()) == brute_pairs);
  }
  return 0;
}
