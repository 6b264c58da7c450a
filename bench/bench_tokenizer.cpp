// Tokenizer throughput on a few MB of generated mixed multilingual text (deterministic), one
// thread and all cores, against tiktoken's reference speed. One JSON line per result.
// `--write FILE [MB]` writes the text instead, for timing `llmft tokenize` end to end.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "llmft/tokenizer/bpe.h"

namespace {

// tiktoken 1.0.22 "gpt2" (Rust core as WASM), one thread, mixed multilingual text, on the
// project's 2-core reference machine, as recorded with the tokenizer test corpus.
constexpr double kTiktokenMBps = 6.7;

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

struct Rng {
  uint64_t state = 0x2545F4914F6CDD1Dull;
  uint64_t operator()(uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (state >> 33) % n;
  }
};

// One script: the code points its words are drawn from, and word lengths in code points.
struct Script {
  std::vector<uint32_t> chars;
  size_t min_len, max_len;
};

std::vector<uint32_t> range(uint32_t lo, uint32_t hi) {
  std::vector<uint32_t> v;
  for (uint32_t c = lo; c <= hi; ++c) v.push_back(c);
  return v;
}
std::vector<uint32_t> chars_of(const char* utf8) {
  std::vector<uint32_t> v;
  for (const auto* p = reinterpret_cast<const unsigned char*>(utf8); *p;) {
    uint32_t c = *p;
    int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    c = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < len; ++k) c = (c << 6) | (p[k] & 0x3F);
    v.push_back(c);
    p += len;
  }
  return v;
}

// Mixed multilingual text: each script has a lexicon of 3,000 random words used with a Zipf-like
// skew (frequent words repeat, the tail keeps caches honest), plus numbers, punctuation,
// newlines and some code. About half the bytes are non-ASCII.
std::vector<std::string> make_documents(size_t total_bytes) {
  const std::vector<Script> scripts = {
      {chars_of("etaoinshrdlucmfwypvbgkjqxzETAOINS"), 2, 9},     // English-like
      {chars_of("eaioulnrstcdmpéèàçôûüöäßñ"), 3, 10},            // Latin + accents
      {range(0x0430, 0x044F), 3, 10},                            // Cyrillic
      {range(0x03B1, 0x03C9), 3, 9},                             // Greek
      {range(0x4E00, 0x4E00 + 2500), 1, 4},                      // CJK ideographs
      {range(0x3041, 0x3093), 2, 5},                             // Hiragana
      {range(0xAC00, 0xAC00 + 2000), 1, 4},                      // Hangul
      {range(0x0627, 0x064A), 3, 8},                             // Arabic
      {range(0x0915, 0x0939), 2, 6},                             // Devanagari
      {chars_of("🙂🚀🎉∑≤→°€½²✓★"), 1, 2},  // symbols, emoji
  };
  Rng rng;
  std::vector<std::vector<std::string>> lexicons;
  for (const auto& sc : scripts) {
    std::vector<std::string> words;
    for (int w = 0; w < 3000; ++w) {
      std::string word;
      const size_t len = sc.min_len + rng(sc.max_len - sc.min_len + 1);
      for (size_t k = 0; k < len; ++k) append_utf8(word, sc.chars[rng(sc.chars.size())]);
      words.push_back(std::move(word));
    }
    lexicons.push_back(std::move(words));
  }
  const char* code[] = {
      "#include <vector>", "std::string s;", "{\"a\": 1}", "foo_bar(x);", "    return 0;",
      "\tif (x < 2) {",    "we'll",          "don't",      "GPT-2's"};
  const char* ends[] = {". ", "! ", "? ", ".\n", ".\n\n", ", ", "  ", "\n    "};
  std::vector<std::string> docs;
  size_t bytes = 0;
  while (bytes < total_bytes) {
    std::string doc;
    const size_t target = 500 + rng(7500);  // 0.5-8 KB documents
    while (doc.size() < target) {
      const size_t lang = rng(scripts.size() + 1);
      const size_t words = 3 + rng(12);
      for (size_t w = 0; w < words; ++w) {
        if (w && lang != 4 && lang != 5) doc += ' ';  // CJK and kana runs have no spaces
        if (lang == scripts.size()) {
          doc += code[rng(std::size(code))];
        } else {
          const double u = static_cast<double>(rng(1u << 30)) / (1u << 30);
          doc += lexicons[lang][static_cast<size_t>(3000 * u * u * u)];  // Zipf-like skew
        }
        if (rng(12) == 0) doc += " " + std::to_string(rng(100000));
      }
      doc += ends[rng(std::size(ends))];
    }
    bytes += doc.size();
    docs.push_back(std::move(doc));
  }
  return docs;
}

struct Stats {
  double median, min, max;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// MB/s per repeat by wall clock and by this thread's CPU time (the rate on an unshared core:
// on a busy machine the two differ; for one thread the CPU figure is the tokenizer's own speed).
struct Timing {
  std::vector<double> wall, cpu;
};
template <class F>
Timing time_mbps(F&& f, double bytes, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) f();
  Timing t;
  for (int i = 0; i < repeats; ++i) {
    const double c0 = thread_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    const double dc = thread_cpu_seconds() - c0;
    t.wall.push_back(bytes / 1e6 / dt.count());
    t.cpu.push_back(bytes / 1e6 / dc);
  }
  return t;
}

void report(const char* name, const Timing& t, int threads, size_t bytes, size_t tokens) {
  const Stats s = stats(t.wall);
  std::printf(
      "{\"bench\": \"tokenizer\", \"name\": \"%s\", \"threads\": %d, \"bytes\": %zu, "
      "\"tokens\": %zu, \"mb_per_s_median\": %.2f, \"mb_per_s_min\": %.2f, \"mb_per_s_max\": %.2f, "
      "\"vs_tiktoken_6.7_mb_per_s\": %.2f",
      name, threads, bytes, tokens, s.median, s.min, s.max, s.median / kTiktokenMBps);
  if (threads == 1) {
    const Stats c = stats(t.cpu);
    std::printf(
        ", \"cpu_time_mb_per_s_median\": %.2f, \"cpu_time_mb_per_s_min\": %.2f, "
        "\"cpu_time_mb_per_s_max\": %.2f",
        c.median, c.min, c.max);
  }
  std::printf("}\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace llmft;
  if (argc > 1 && std::string(argv[1]) == "--write") {
    // `bench_tokenizer --write FILE [MB=3]`: the same documents, concatenated, as the input of
    // `llmft tokenize` end to end (bench/tokenize_cli.sh).
    if (argc < 3) {
      std::fprintf(stderr, "usage: bench_tokenizer --write FILE [MB=3]\n");
      return 2;
    }
    const size_t wmb = argc > 3 ? std::stoul(argv[3]) : 3;
    std::FILE* f = std::fopen(argv[2], "wb");
    if (!f) {
      std::fprintf(stderr, "bench_tokenizer: cannot write %s\n", argv[2]);
      return 1;
    }
    size_t written = 0;
    for (const auto& d : make_documents(wmb << 20)) written += std::fwrite(d.data(), 1, d.size(), f);
    if (std::fclose(f) != 0) return 1;
    std::printf("{\"wrote\": \"%s\", \"bytes\": %zu}\n", argv[2], written);
    return 0;
  }
  const size_t mb = argc > 1 ? std::stoul(argv[1]) : 4;
  const int repeats = argc > 2 ? std::stoi(argv[2]) : 7;
  const BpeTokenizer tok = BpeTokenizer::load_bundled();
  const auto docs = make_documents(mb << 20);
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  const int threads = omp_get_max_threads();
  std::printf(
      "{\"context\": \"tokenizer\", \"compiler\": \"%s\", \"threads\": %d, "
      "\"documents\": %zu, \"bytes\": %zu, \"repeats\": %d, \"tiktoken_ref_mb_per_s\": "
      "%.1f}\n",
      __VERSION__, threads, docs.size(), bytes, repeats, kTiktokenMBps);

  // Validate first: decode(encode(doc)) == doc, and the batch equals one-by-one encoding.
  size_t tokens = 0;
  std::vector<std::vector<int32_t>> single;
  for (const auto& d : docs) {
    single.push_back(tok.encode(d, SpecialTokens::kOrdinary));
    tokens += single.back().size();
    if (tok.decode(single.back()) != d) {
      std::fprintf(stderr, "bench_tokenizer: round trip failed\n");
      return 1;
    }
  }
  if (tok.encode_batch(docs, SpecialTokens::kOrdinary, 0) != single) {
    std::fprintf(stderr, "bench_tokenizer: encode_batch differs from encode\n");
    return 1;
  }

  const auto one = time_mbps(
      [&] {
        for (const auto& d : docs) tok.encode(d, SpecialTokens::kOrdinary);
      },
      static_cast<double>(bytes), 1, repeats);
  report("encode_single_thread", one, 1, bytes, tokens);
  const auto all = time_mbps([&] { tok.encode_batch(docs, SpecialTokens::kOrdinary, 0); },
                             static_cast<double>(bytes), 1, repeats);
  report("encode_batch_all_cores", all, threads, bytes, tokens);
  const auto dec = time_mbps(
      [&] {
        for (const auto& ids : single) tok.decode(ids);
      },
      static_cast<double>(bytes), 1, repeats);
  report("decode_single_thread", dec, 1, bytes, tokens);
  return 0;
}
