// GPT-2 byte-level BPE: loading a vocabulary and decoding (encoding: bpe_encode.cpp).
// Golden: tests/data/tokenizer/*.jsonl.
#include "llmft/tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/tokenizer/bpe_impl.h"
#include "llmft/tokenizer/utf8.h"
#include "llmft/tokenizer/vocab.h"

namespace llmft {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kNone = bpe::TokenTable::kNone;

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

// A token string of encoder.json / merges.txt (GPT-2's byte alphabet) -> its raw bytes, appended
// to `out`. where() names the string in an error (only called then: loading does this 150,000 times).
template <class Where>
void alphabet_to_bytes(std::string_view s, const std::vector<int>& map, const std::string& origin,
                       const Where& where, std::string& out) {
  if (!utf8::is_valid(s)) {
    throw Error(fmt::format("{}: {} is not valid UTF-8", origin, where()),
                "use GPT-2's encoder.json/vocab.bpe or Hugging Face's vocab.json/merges.txt");
  }
  for (size_t i = 0; i < s.size();) {
    int len;
    const uint32_t cp = utf8::decode_at(s.data(), i, len);
    if (cp >= map.size() || map[cp] < 0) {
      throw Error(
          fmt::format("{}: {} has character U+{:04X}, which is not in GPT-2's byte alphabet",
                      origin, where(), cp),
          "use GPT-2's encoder.json/vocab.bpe or Hugging Face's vocab.json/merges.txt");
    }
    out.push_back(static_cast<char>(map[cp]));
    i += static_cast<size_t>(len);
  }
}

}  // namespace


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

namespace {

// The common case of parse_encoder_json without building a JSON document (a third of the load
// time): an object of string keys and integer values, read by nlohmann's SAX interface. Anything
// else returns false and the caller takes the checked path, which names the problem.
struct EncoderSax : nlohmann::json_sax<nlohmann::json> {
  std::vector<std::pair<std::string, int64_t>> entries;
  std::string key_;
  int depth = 0;
  bool value(int64_t v) {
    if (depth != 1) return false;
    entries.emplace_back(std::move(key_), v);
    return true;
  }
  bool null() override { return false; }
  bool boolean(bool) override { return false; }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return v <= uint64_t(INT64_MAX) && value(static_cast<int64_t>(v));
  }
  bool number_float(number_float_t, const string_t&) override { return false; }
  bool string(string_t&) override { return false; }
  bool binary(binary_t&) override { return false; }
  bool start_object(std::size_t) override { return ++depth == 1; }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override { return --depth == 0; }
  bool start_array(std::size_t) override { return false; }
  bool end_array() override { return false; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

std::vector<std::string> read_encoder_json_fast(const std::string& json_text, bool& ok) {
  ok = false;
  EncoderSax sax;
  if (!nlohmann::json::sax_parse(json_text, &sax) || sax.entries.empty() ||
      sax.entries.size() > bpe::PairTable::kMaxTokens) {
    return {};
  }
  const size_t n = sax.entries.size();
  std::vector<std::string> tokens(n);
  std::vector<bool> have(n, false);
  for (auto& [key, id] : sax.entries) {
    if (id < 0 || id >= static_cast<int64_t>(n) || have[static_cast<size_t>(id)]) return {};
    have[static_cast<size_t>(id)] = true;
    tokens[static_cast<size_t>(id)] = std::move(key);
  }
  ok = true;
  return tokens;
}

// encoder.json / vocab.json (its text, read from `origin`) -> the token strings by id.
std::vector<std::string> parse_encoder_json(const std::string& json_text,
                                            const std::string& origin) {
  bool ok = false;
  std::vector<std::string> fast = read_encoder_json_fast(json_text, ok);
  if (ok) return fast;
  const nlohmann::json j =
      parse_json(json_text, origin,
                 "the vocabulary must be a JSON object mapping token strings to ids");
  if (!j.is_object() || j.empty()) {
    throw Error(fmt::format("{}: expected a JSON object mapping token strings to ids",
                            origin));
  }
  const size_t n = j.size();
  if (n > bpe::PairTable::kMaxTokens) {
    throw Error(fmt::format("{}: {} tokens; llmft's byte-level BPE supports at most {}",
                            origin, n, bpe::PairTable::kMaxTokens));
  }
  std::vector<std::string> tokens(n);
  std::vector<bool> have(n, false);
  for (const auto& [key, value] : j.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() >= static_cast<int64_t>(n)) {
      throw Error(fmt::format("{}: token \"{}\" has id {}, expected an integer in [0, {})",
                              origin, key, value.dump(), n));
    }
    const auto id = value.get<size_t>();
    if (have[id]) throw Error(fmt::format("{}: id {} is used twice", origin, id));
    have[id] = true;
    tokens[id] = key;
  }
  return tokens;
}

// vocab.bpe / merges.txt (its text) -> its lines ('\r' removed).
std::vector<std::string> split_merges_txt(const std::string& text) {
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
      alphabet_to_bytes(
          key, alphabet, origin, [&] { return fmt::format("token \"{}\"", key); }, v.tokens[id]);
    }
  }
  if (v.eot < 0) {
    throw Error(fmt::format("{}: has no \"<|endoftext|>\" entry", origin),
                "GPT-2's vocabulary has it as id 50256");
  }
  return v;
}

}  // namespace

namespace {

// A folder's vocab.json + merges.txt (Hugging Face) or encoder.json + vocab.bpe (OpenAI).
std::pair<fs::path, fs::path> vocab_files(const fs::path& dir) {
  std::error_code ec;
  for (const auto& [vocab, merges] : {std::pair{"vocab.json", "merges.txt"},
                                      std::pair{"encoder.json", "vocab.bpe"}}) {
    if (fs::exists(dir / vocab, ec) && fs::exists(dir / merges, ec)) {
      return {dir / vocab, dir / merges};
    }
  }
  throw Error(fmt::format("{}: no tokenizer files: expected vocab.json + merges.txt (Hugging Face) "
                          "or encoder.json + vocab.bpe (OpenAI)",
                          dir.string()),
              "point to a GPT-2 model folder");
}

BpeVocabStrings parse_vocab_files(const std::string& vocab_text, const std::string& merges_text,
                                  const fs::path& vocab, const fs::path& merges) {
  return {parse_encoder_json(vocab_text, vocab.string()), split_merges_txt(merges_text),
          vocab.string(), merges.string()};
}

}  // namespace

BpeVocabStrings BpeVocabStrings::read_folder(const fs::path& dir) {
  const auto [vocab, merges] = vocab_files(dir);
  return parse_vocab_files(read_file(vocab), read_file(merges), vocab, merges);
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
  std::string joined;  // the bytes of both parts: the token they make
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& line = merges[i];
    const size_t line_no = i + 1;
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const auto where = [&] { return fmt::format("line {}", line_no); };
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string::npos) {
      throw Error(fmt::format("{}:{}: expected two tokens separated by one space, got \"{}\"",
                              origin, line_no, line),
                  "use GPT-2's vocab.bpe or Hugging Face's merges.txt");
    }
    joined.clear();
    alphabet_to_bytes(std::string_view(line).substr(0, sp), alphabet, origin, where, joined);
    const size_t a_len = joined.size();
    alphabet_to_bytes(std::string_view(line).substr(sp + 1), alphabet, origin, where, joined);
    const std::string_view ab = joined;
    if (tokens.find(ab.substr(0, a_len)) == kNone || tokens.find(ab.substr(a_len)) == kNone ||
        tokens.find(ab) == kNone) {
      throw Error(fmt::format("{}:{}: merge \"{}\" uses or makes a token that {} does not have",
                              origin, line_no, line, "the vocabulary"),
                  "the merges and the vocabulary must come from the same tokenizer");
    }
  }
}

// Every way to split a token into two tokens is a pair that may join into it.
void BpeTokenizer::Impl::find_pairs(const std::vector<bool>& indexed, std::vector<uint32_t>& keys,
                                    std::vector<uint32_t>& values) const {
  for (uint32_t id = 0; id < indexed.size(); ++id) {
    if (!indexed[id]) continue;
    const std::string_view t = tokens.token(id);
    for (size_t k = 1; k < t.size(); ++k) {
      const std::string_view prefix = t.substr(0, k);
      const uint64_t h = bpe::hash_bytes(prefix.data(), prefix.size());
      if (!tokens.may_have(h)) continue;  // most prefixes are not tokens
      const uint32_t a = tokens.find(prefix, h);
      if (a == kNone) continue;
      const uint32_t b = tokens.find(t.substr(k));
      if (b == kNone) continue;
      keys.push_back(bpe::PairTable::key(a, b));
      values.push_back(id);
    }
  }
}

void BpeTokenizer::Impl::set_pairs(const std::vector<uint32_t>& keys,
                                   const std::vector<uint32_t>& values) {
  pairs.build(keys, values);
  byte_pair.assign(65536, 0xFFFF);
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const uint32_t r = pairs.find(byte_id[a], byte_id[b]);
      if (r != kNone) byte_pair[static_cast<size_t>(a << 8 | b)] = static_cast<uint16_t>(r);
    }
  }
}

uint64_t new_piece_cache_key() {
  static std::atomic<uint64_t> instances{0};
  return ++instances;
}

namespace {

// from_strings, also giving the pair list (for the table cache).
std::unique_ptr<BpeTokenizer::Impl> build(const BpeVocabStrings& v, std::vector<uint32_t>& keys,
                                          std::vector<uint32_t>& values) {
  const std::vector<int> alphabet = unicode_to_byte();
  const Vocabulary vocab = to_vocabulary(v.tokens, alphabet, v.origin);
  auto impl = std::make_unique<BpeTokenizer::Impl>();
  impl->eot_id = vocab.eot;
  if (const uint32_t id = impl->tokens.build(vocab.tokens, vocab.indexed); id != kNone) {
    throw Error(fmt::format("{}: token {} (\"{}\") appears twice", v.origin, id, v.tokens[id]),
                "every token of a BPE vocabulary is unique");
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
  impl->find_pairs(vocab.indexed, keys, values);
  impl->set_pairs(keys, values);
  return impl;
}

}  // namespace

BpeTokenizer BpeTokenizer::load_folder(const fs::path& dir) {
  const auto [vocab, merges] = vocab_files(dir);
  return load_files(vocab, merges);
}

BpeTokenizer BpeTokenizer::load_files(const fs::path& encoder_json, const fs::path& merges) {
  const std::string vocab_text = read_file(encoder_json), merges_text = read_file(merges);
  const uint64_t key = bpe_cache::key_of(vocab_text, merges_text);
  const fs::path cached = bpe_cache::file_for(key);
  if (auto impl = bpe_cache::read(cached, key)) return BpeTokenizer(std::move(impl));
  std::vector<uint32_t> keys, values;
  auto impl = build(parse_vocab_files(vocab_text, merges_text, encoder_json, merges), keys, values);
  bpe_cache::write(cached, key, *impl, keys, values);
  return BpeTokenizer(std::move(impl));
}

BpeTokenizer BpeTokenizer::from_strings(const BpeVocabStrings& v) {
  std::vector<uint32_t> keys, values;
  return BpeTokenizer(build(v, keys, values));
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
