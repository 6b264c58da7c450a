// GPT-2 byte-level BPE with tiktoken's merge rule: repeatedly join the adjacent pair whose joined
// bytes form the lowest-id token, leftmost first. Golden: tests/data/tokenizer/*.jsonl.
#include "llmft/tokenizer/bpe.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <nlohmann/json.hpp>
#include <queue>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/tokenizer/pretokenize.h"
#include "llmft/tokenizer/utf8.h"
#include "llmft/tokenizer/vocab.h"

namespace llmft {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kEndOfTextText = "<|endoftext|>";
constexpr uint32_t kNone = bpe::TokenTable::kNone;
// Pieces up to this many bytes use the simple quadratic merge loop (fastest when short); longer
// ones a heap over a linked list, O(n log n), so a 1 MB "word" stays fast.
constexpr size_t kSmallPiece = 64;

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the other 68 bytes map to
// U+0100.. in byte order. Returns code point -> byte (-1 where none).
std::vector<int> unicode_to_byte() {
  std::vector<int> map(512, -1);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[static_cast<size_t>(printable ? b : 256 + extra++)] = b;
  }
  return map;
}

// A token string of encoder.json / merges.txt (GPT-2's byte alphabet) -> its raw bytes.
std::string alphabet_to_bytes(const std::string& s, const std::vector<int>& map,
                              const std::string& origin, std::string_view where) {
  if (!utf8::is_valid(s)) {
    throw Error(fmt::format("{}: {} is not valid UTF-8", origin, where),
                "use GPT-2's encoder.json/vocab.bpe or Hugging Face's vocab.json/merges.txt");
  }
  std::string out;
  for (size_t i = 0; i < s.size();) {
    int len;
    const uint32_t cp = utf8::decode_at(s.data(), i, len);
    if (cp >= map.size() || map[cp] < 0) {
      throw Error(
          fmt::format("{}: {} has character U+{:04X}, which is not in GPT-2's byte alphabet",
                      origin, where, cp),
          "use GPT-2's encoder.json/vocab.bpe or Hugging Face's vocab.json/merges.txt");
    }
    out.push_back(static_cast<char>(map[cp]));
    i += static_cast<size_t>(len);
  }
  return out;
}

}  // namespace

struct BpeTokenizer::Impl {
  bpe::TokenTable tokens;
  bpe::PairTable pairs;
  uint32_t byte_id[256] = {};
  // Merge of two raw bytes (first row of every merge loop), indexed by (b0 << 8 | b1): 0xFFFF
  // where the pair is not a token.
  std::vector<uint16_t> byte_pair;
  int32_t eot_id = kEndOfText;
  uint64_t cache_key = 0;  // tells this vocabulary's entries in the per-thread cache apart

  uint32_t byte_pair_rank(const char* p) const {
    const uint16_t r = byte_pair[(size_t(uint8_t(p[0])) << 8) | uint8_t(p[1])];
    return r == 0xFFFF ? kNone : r;
  }

  // Loading (load_files): byte_id from `tokens`; the merge list checked against `tokens`;
  // `pairs` and `byte_pair` from every split of an indexed token into two tokens.
  void find_byte_tokens(const std::string& origin);
  void check_merges(const std::vector<std::string>& merges, const std::string& origin,
                    const std::vector<int>& alphabet) const;
  void build_pair_tables(const std::vector<bool>& indexed);

  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(const char* p, size_t n, std::vector<int32_t>& out) const;
  void merge_small(const char* p, size_t n, std::vector<int32_t>& out) const;
  void merge_large(const char* p, size_t n, std::vector<int32_t>& out) const;
};

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

int32_t BpeTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }

// ---------------------------------------------------------------------------------------------
// Loading

BpeTokenizer BpeTokenizer::load_bundled() { return load_folder(data_dir() / "gpt2"); }

const BpeTokenizer& BpeTokenizer::bundled() {
  static const BpeTokenizer instance = load_bundled();
  return instance;
}

BpeTokenizer BpeTokenizer::load_folder(const fs::path& dir) {
  return from_strings(BpeVocabStrings::read_folder(dir));
}

namespace {

// encoder.json / vocab.json -> the token strings by id.
std::vector<std::string> read_encoder_json(const fs::path& encoder_json) {
  const std::string json_text = read_file(encoder_json);
  const nlohmann::json j =
      parse_json(json_text, encoder_json.string(),
                 "the vocabulary must be a JSON object mapping token strings to ids");
  if (!j.is_object() || j.empty()) {
    throw Error(fmt::format("{}: expected a JSON object mapping token strings to ids",
                            encoder_json.string()));
  }
  const size_t n = j.size();
  if (n > bpe::PairTable::kMaxTokens) {
    throw Error(fmt::format("{}: {} tokens; llmft's byte-level BPE supports at most {}",
                            encoder_json.string(), n, bpe::PairTable::kMaxTokens));
  }
  std::vector<std::string> tokens(n);
  std::vector<bool> have(n, false);
  for (const auto& [key, value] : j.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= static_cast<int64_t>(n)) {
      throw Error(fmt::format("{}: token \"{}\" has id {}, expected an integer in [0, {})",
                              encoder_json.string(), key, value.dump(), n));
    }
    const auto id = value.get<size_t>();
    if (have[id]) throw Error(fmt::format("{}: id {} is used twice", encoder_json.string(), id));
    have[id] = true;
    tokens[id] = key;
  }
  return tokens;
}

// vocab.bpe / merges.txt -> its lines ('\r' removed).
std::vector<std::string> read_merges_txt(const fs::path& merges) {
  const std::string text = read_file(merges);
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  return lines;
}

// Token strings by id as raw bytes.
struct Vocabulary {
  std::vector<std::string> tokens;  // (n) raw bytes; the special token as its text
  std::vector<bool> indexed;        // (n) false for <|endoftext|>: only the special path makes it
  int32_t eot = -1;                 // id of <|endoftext|>
};

Vocabulary to_vocabulary(const std::vector<std::string>& strings, const std::vector<int>& alphabet,
                         const std::string& origin) {
  const size_t n = strings.size();
  if (n == 0 || n > bpe::PairTable::kMaxTokens) {
    throw Error(fmt::format("{}: {} tokens; llmft's byte-level BPE supports 1 to {}", origin, n,
                            bpe::PairTable::kMaxTokens));
  }
  Vocabulary v;
  v.tokens.resize(n);
  v.indexed.assign(n, true);
  for (size_t id = 0; id < n; ++id) {
    const std::string& key = strings[id];
    if (key == kEndOfTextText) {
      if (v.eot >= 0) throw Error(fmt::format("{}: \"{}\" appears twice", origin, key));
      v.eot = static_cast<int32_t>(id);
      v.tokens[id] = key;
      v.indexed[id] = false;  // only the special-token path may produce it
    } else {
      v.tokens[id] = alphabet_to_bytes(key, alphabet, origin, fmt::format("token \"{}\"", key));
    }
  }
  if (v.eot < 0) {
    throw Error(fmt::format("{}: has no \"<|endoftext|>\" entry", origin),
                "GPT-2's vocabulary has it as id 50256");
  }
  return v;
}

}  // namespace

BpeVocabStrings BpeVocabStrings::read_folder(const fs::path& dir) {
  std::error_code ec;
  for (const auto& [vocab, merges] : {std::pair{"vocab.json", "merges.txt"},
                                      std::pair{"encoder.json", "vocab.bpe"}}) {
    if (fs::exists(dir / vocab, ec) && fs::exists(dir / merges, ec)) {
      return {read_encoder_json(dir / vocab), read_merges_txt(dir / merges),
              (dir / vocab).string(), (dir / merges).string()};
    }
  }
  throw Error(fmt::format("{}: no tokenizer files: expected vocab.json + merges.txt (Hugging Face) "
                          "or encoder.json + vocab.bpe (OpenAI)",
                          dir.string()),
              "point to a GPT-2 model folder");
}

void BpeTokenizer::Impl::find_byte_tokens(const std::string& origin) {
  for (int b = 0; b < 256; ++b) {
    const uint32_t id = tokens.find(std::string(1, static_cast<char>(b)));
    if (id == kNone) {
      throw Error(fmt::format("{}: no token for the single byte 0x{:02x}", origin, b),
                  "a byte-level BPE vocabulary has all 256 bytes");
    }
    byte_id[b] = id;
  }
}

// The merge list is checked for consistency; the merge order itself is the token ids (tiktoken's
// ranks), which for GPT-2 are 256 + the line of the merge.
void BpeTokenizer::Impl::check_merges(const std::vector<std::string>& merges,
                                      const std::string& origin,
                                      const std::vector<int>& alphabet) const {
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& line = merges[i];
    const size_t line_no = i + 1;
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const std::string where = fmt::format("line {}", line_no);
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string::npos) {
      throw Error(fmt::format("{}:{}: expected two tokens separated by one space, got \"{}\"",
                              origin, line_no, line),
                  "use GPT-2's vocab.bpe or Hugging Face's merges.txt");
    }
    const std::string a = alphabet_to_bytes(line.substr(0, sp), alphabet, origin, where);
    const std::string b = alphabet_to_bytes(line.substr(sp + 1), alphabet, origin, where);
    if (tokens.find(a) == kNone || tokens.find(b) == kNone || tokens.find(a + b) == kNone) {
      throw Error(fmt::format("{}:{}: merge \"{}\" uses or makes a token that {} does not have",
                              origin, line_no, line, "the vocabulary"),
                  "the merges and the vocabulary must come from the same tokenizer");
    }
  }
}

// Every way to split a token into two tokens is a pair that may join into it.
void BpeTokenizer::Impl::build_pair_tables(const std::vector<bool>& indexed) {
  std::vector<uint32_t> keys;
  std::vector<uint32_t> values;
  for (uint32_t id = 0; id < indexed.size(); ++id) {
    if (!indexed[id]) continue;
    const std::string_view t = tokens.token(id);
    for (size_t k = 1; k < t.size(); ++k) {
      const uint32_t a = tokens.find(t.substr(0, k));
      if (a == kNone) continue;
      const uint32_t b = tokens.find(t.substr(k));
      if (b == kNone) continue;
      keys.push_back(bpe::PairTable::key(a, b));
      values.push_back(id);
    }
  }
  pairs.build(keys, values);
  byte_pair.assign(65536, 0xFFFF);
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const uint32_t r = pairs.find(byte_id[a], byte_id[b]);
      if (r != kNone) byte_pair[static_cast<size_t>(a << 8 | b)] = static_cast<uint16_t>(r);
    }
  }
}

BpeTokenizer BpeTokenizer::load_files(const fs::path& encoder_json, const fs::path& merges) {
  return from_strings({read_encoder_json(encoder_json), read_merges_txt(merges),
                       encoder_json.string(), merges.string()});
}

BpeTokenizer BpeTokenizer::from_strings(const BpeVocabStrings& v) {
  const std::vector<int> alphabet = unicode_to_byte();
  const Vocabulary vocab = to_vocabulary(v.tokens, alphabet, v.origin);
  auto impl = std::make_unique<Impl>();
  impl->eot_id = vocab.eot;
  impl->tokens.build(vocab.tokens, vocab.indexed);
  for (uint32_t id = 0; id < vocab.tokens.size(); ++id) {
    if (vocab.indexed[id] && impl->tokens.find(vocab.tokens[id]) != id) {
      throw Error(fmt::format("{}: token {} (\"{}\") appears twice", v.origin, id, v.tokens[id]),
                  "every token of a BPE vocabulary is unique");
    }
  }
  impl->find_byte_tokens(v.origin);
  impl->check_merges(v.merges, v.merges_origin, alphabet);
  // Every token beyond the 256 bytes is made by one merge: fewer lines is an empty or cut file.
  size_t merges = 0;
  for (size_t i = 0; i < v.merges.size(); ++i)
    merges += !v.merges[i].empty() && !(i == 0 && v.merges[i].starts_with("#version"));
  const size_t made = static_cast<size_t>(std::count(vocab.indexed.begin(), vocab.indexed.end(), true));
  if (merges + 256 < made) {
    throw Error(fmt::format("{}: {} merges, but the vocabulary has {} tokens beyond the 256 bytes: "
                            "the file is empty or cut short",
                            v.merges_origin, merges, made - 256),
                "use GPT-2's complete vocab.bpe or Hugging Face's merges.txt");
  }
  impl->build_pair_tables(vocab.indexed);
  static std::atomic<uint64_t> instances{0};
  impl->cache_key = ++instances;
  return BpeTokenizer(std::move(impl));
}

// ---------------------------------------------------------------------------------------------
// Encoding

void BpeTokenizer::Impl::merge_small(const char* p, size_t n, std::vector<int32_t>& out) const {
  uint32_t tok[kSmallPiece], rank[kSmallPiece];
  for (size_t i = 0; i < n; ++i) tok[i] = byte_id[static_cast<uint8_t>(p[i])];
  for (size_t i = 0; i + 1 < n; ++i) rank[i] = byte_pair_rank(p + i);
  size_t m = n;
  while (m > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < m; ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: leftmost wins ties
    }
    if (rank[best] == kNone) break;
    tok[best] = rank[best];
    for (size_t i = best + 1; i + 1 < m; ++i) {
      tok[i] = tok[i + 1];
      rank[i] = rank[i + 1];
    }
    --m;
    if (best + 1 < m) rank[best] = pairs.find(tok[best], tok[best + 1]);
    if (best > 0) rank[best - 1] = pairs.find(tok[best - 1], tok[best]);
  }
  for (size_t i = 0; i < m; ++i) out.push_back(static_cast<int32_t>(tok[i]));
}

void BpeTokenizer::Impl::merge_large(const char* p, size_t n, std::vector<int32_t>& out) const {
  // Nodes are named by the byte offset where they start; a join keeps the left node.
  constexpr uint32_t kDead = kNone;
  std::vector<uint32_t> tok(n), next(n), prev(n);
  for (size_t i = 0; i < n; ++i) {
    tok[i] = byte_id[static_cast<uint8_t>(p[i])];
    next[i] = static_cast<uint32_t>(i + 1);  // n = none
    prev[i] = static_cast<uint32_t>(i) - 1;  // kNone for the first
  }
  // Min-heap of (rank << 32 | left offset): lowest rank first, then leftmost, as tiktoken.
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<>> heap;
  auto push = [&](uint32_t i) {
    const uint32_t j = next[i];
    if (j >= n) return;
    const uint32_t r = pairs.find(tok[i], tok[j]);
    if (r != kNone) heap.push((uint64_t(r) << 32) | i);
  };
  for (uint32_t i = 0; i + 1 < n; ++i) {
    const uint32_t r = byte_pair_rank(p + i);
    if (r != kNone) heap.push((uint64_t(r) << 32) | i);
  }
  while (!heap.empty()) {
    const uint64_t top = heap.top();
    heap.pop();
    const auto r = static_cast<uint32_t>(top >> 32);
    const auto i = static_cast<uint32_t>(top);
    if (tok[i] == kDead) continue;
    const uint32_t j = next[i];
    if (j >= n || pairs.find(tok[i], tok[j]) != r) continue;  // stale entry
    tok[i] = r;
    tok[j] = kDead;
    next[i] = next[j];
    if (next[i] < n) prev[next[i]] = i;
    if (prev[i] != kNone) push(prev[i]);
    push(i);
  }
  for (uint32_t i = 0; i < n; i = next[i]) out.push_back(static_cast<int32_t>(tok[i]));
}

// Per-thread cache of recent short pieces that needed merging (frequent words of languages
// whose words are not single tokens). Direct-mapped by the piece's hash; entries of another
// vocabulary are told apart by Impl::cache_key.
struct PieceCache {
  static constexpr size_t kEntries = 4096;
  static constexpr size_t kMaxBytes = 32;
  struct Entry {
    uint64_t hash = 0, owner = 0;
    uint8_t len = 0, count = 0;
    char bytes[kMaxBytes];
    uint16_t ids[kMaxBytes];
  };
  std::vector<Entry> entries = std::vector<Entry>(kEntries);
};

void BpeTokenizer::Impl::encode_piece(const char* p, size_t n, std::vector<int32_t>& out) const {
  if (n == 1) {
    out.push_back(static_cast<int32_t>(byte_id[static_cast<uint8_t>(p[0])]));
    return;
  }
  const uint64_t h = bpe::hash_bytes(p, n);
  const uint32_t whole = tokens.find({p, n}, h);
  if (whole != kNone) {
    out.push_back(static_cast<int32_t>(whole));
    return;
  }
  if (n > PieceCache::kMaxBytes) {
    n <= kSmallPiece ? merge_small(p, n, out) : merge_large(p, n, out);
    return;
  }
  thread_local PieceCache cache;
  PieceCache::Entry& e = cache.entries[(h >> 20) & (PieceCache::kEntries - 1)];
  if (e.hash == h && e.owner == cache_key && e.len == n && std::memcmp(e.bytes, p, n) == 0) {
    for (size_t i = 0; i < e.count; ++i) out.push_back(e.ids[i]);
    return;
  }
  const size_t first = out.size();
  merge_small(p, n, out);
  e.hash = h;
  e.owner = cache_key;
  e.len = static_cast<uint8_t>(n);
  e.count = static_cast<uint8_t>(out.size() - first);
  std::memcpy(e.bytes, p, n);
  for (size_t i = 0; i < e.count; ++i) e.ids[i] = static_cast<uint16_t>(out[first + i]);
}

void BpeTokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  pretok::split(text, [&](size_t b, size_t e) { encode_piece(text.data() + b, e - b, out); });
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, SpecialTokens special) const {
  if (special == SpecialTokens::kDisallow) {
    const size_t at = text.find(kEndOfTextText);
    if (at != std::string_view::npos) {
      throw Error(fmt::format("text contains the special token <|endoftext|> at byte {}, which is "
                              "not allowed here",
                              at),
                  "allow special tokens to encode it as id 50256 (--allow-special), or encode it "
                  "as ordinary text");
    }
  }
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::replace_invalid(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  if (special != SpecialTokens::kAllow) {
    impl_->encode_ordinary(text, out);
    return out;
  }
  // Text between special tokens is encoded on its own: pieces never cross a special token.
  size_t pos = 0;
  for (;;) {
    const size_t at = text.find(kEndOfTextText, pos);
    impl_->encode_ordinary(text.substr(pos, at == std::string_view::npos ? at : at - pos), out);
    if (at == std::string_view::npos) break;
    out.push_back(impl_->eot_id);
    pos = at + kEndOfTextText.size();
  }
  return out;
}

std::vector<std::vector<int32_t>> BpeTokenizer::encode_batch(std::span<const std::string> texts,
                                                             SpecialTokens special,
                                                             int threads) const {
  if (threads < 0) throw UsageError(fmt::format("threads = {}, expected >= 0", threads));
  if (special == SpecialTokens::kDisallow) {
    for (size_t i = 0; i < texts.size(); ++i) {
      if (texts[i].find(kEndOfTextText) != std::string::npos) {
        throw Error(fmt::format("text {} of the batch contains the special token <|endoftext|>, "
                                "which is not allowed here",
                                i),
                    "allow special tokens to encode it as id 50256, or encode it as ordinary text");
      }
    }
  }
  std::vector<std::vector<int32_t>> out(texts.size());
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  std::exception_ptr error;  // an exception must not leave the parallel region
  const auto count = static_cast<int64_t>(texts.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t i = 0; i < count; ++i) {
    try {
      out[static_cast<size_t>(i)] = encode(texts[static_cast<size_t>(i)], special);
    } catch (...) {
#pragma omp critical(llmft_bpe_batch_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding

std::string BpeTokenizer::decode_bytes(std::span<const int32_t> ids) const {
  const auto v = static_cast<int64_t>(impl_->tokens.size());
  std::string out;
  out.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= v) {
      throw Error(fmt::format("token id {} (position {}) is out of range [0, {})", ids[i], i, v),
                  "the ids must come from the GPT-2 vocabulary");
    }
    out += impl_->tokens.token(static_cast<uint32_t>(ids[i]));
  }
  return out;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string bytes = decode_bytes(ids);
  return utf8::is_valid(bytes) ? bytes : utf8::replace_invalid(bytes);
}

}  // namespace llmft
