// The tokenizer's table cache: what loading a vocabulary's text files derives (the tokens' raw
// bytes and every pair of tokens that joins into a token), kept in one binary file per pair of
// files so that later loads skip the JSON, the merge checks and the pair search (docs/tokenizer.md).
//
// File (little-endian): "LLMFTBPE", u32 format version, u32 tokens n, u32 <|endoftext|> id,
// u32 pairs p, u64 key (the source files' contents, key_of), u32 token lengths[n], the tokens'
// bytes, u32 pair keys[p] (left << 16 | right), u32 pair values[p] (the joined token), then u64
// hash_bytes of everything before it. A file that is short, long, of another version or key, or
// fails the hash is not used; its content is checked as it is read (ids in range, unique tokens,
// all 256 bytes, each pair's bytes joining into its value), so even a forged file can only give
// a tokenizer that is consistent, never a crash.
#include <cstring>

#include "llmft/core/io.h"
#include "llmft/tokenizer/bpe_impl.h"

namespace llmft::bpe_cache {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'L', 'L', 'M', 'F', 'T', 'B', 'P', 'E'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kNone = bpe::TokenTable::kNone;
constexpr size_t kMaxFileBytes = size_t(64) << 20;  // GPT-2's is 1.4 MB

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// Reads from a byte range; every read is checked against its end.
struct Reader {
  const char* p;
  const char* end;
  template <class T>
  bool get(T& v) {
    if (static_cast<size_t>(end - p) < sizeof v) return false;
    std::memcpy(&v, p, sizeof v);
    p += sizeof v;
    return true;
  }
  bool skip(size_t n, const char*& at) {
    if (static_cast<size_t>(end - p) < n) return false;
    at = p;
    p += n;
    return true;
  }
};

}  // namespace

fs::path folder() {
  if (auto v = env_value("LLMFT_CACHE_DIR"); !v.empty()) return fs::path(v) / "tokenizer";
  if (auto home = user_cache_home(); !home.empty()) return home / "llmft" / "tokenizer";
  return {};
}

uint64_t key_of(std::string_view vocab_text, std::string_view merges_text) {
  const uint64_t a = bpe::hash_bytes(vocab_text.data(), vocab_text.size());
  const uint64_t b = bpe::hash_bytes(merges_text.data(), merges_text.size());
  return (a * 0x9E3779B97F4A7C15ull) ^ b ^ kVersion;
}

fs::path file_for(uint64_t key) {
  const fs::path dir = folder();
  return dir.empty() ? fs::path() : dir / fmt::format("{:016x}.bin", key);
}

void write(const fs::path& file, uint64_t key, const BpeTokenizer::Impl& impl,
           const std::vector<uint32_t>& pair_keys, const std::vector<uint32_t>& pair_values) {
  if (file.empty()) return;
  const uint32_t n = impl.tokens.size();
  std::string out(kMagic, sizeof kMagic);
  put(out, kVersion);
  put(out, n);
  put(out, static_cast<uint32_t>(impl.eot_id));
  put(out, static_cast<uint32_t>(pair_keys.size()));
  put(out, key);
  for (uint32_t id = 0; id < n; ++id) put(out, static_cast<uint32_t>(impl.tokens.token(id).size()));
  for (uint32_t id = 0; id < n; ++id) out += impl.tokens.token(id);
  for (uint32_t k : pair_keys) put(out, k);
  for (uint32_t v : pair_values) put(out, v);
  put(out, bpe::hash_bytes(out.data(), out.size()));
  try {
    write_file_atomic(file, out);
  } catch (const Error&) {
    // A cache: an unwritable folder only means the next load reads the text files again.
  }
}

std::unique_ptr<BpeTokenizer::Impl> read(const fs::path& file, uint64_t key) {
  std::error_code ec;
  if (file.empty() || !fs::is_regular_file(file, ec)) return nullptr;
  if (fs::file_size(file, ec) > kMaxFileBytes) return nullptr;
  try {
    return parse(read_file(file), key);
  } catch (const Error&) {
    return nullptr;
  }
}

std::unique_ptr<BpeTokenizer::Impl> parse(std::string_view bytes, uint64_t key) {
  if (bytes.size() < sizeof kMagic + 8 || bytes.size() > kMaxFileBytes) return nullptr;
  uint64_t sum;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  if (bpe::hash_bytes(bytes.data(), bytes.size() - 8) != sum) return nullptr;
  Reader in{bytes.data(), bytes.data() + bytes.size() - 8};
  const char* magic;
  uint32_t version, n, eot, p;
  uint64_t stored_key;
  if (!in.skip(sizeof kMagic, magic) || std::memcmp(magic, kMagic, sizeof kMagic) != 0 ||
      !in.get(version) || version != kVersion || !in.get(n) || !in.get(eot) || !in.get(p) ||
      !in.get(stored_key) || stored_key != key || n == 0 || n > bpe::PairTable::kMaxTokens ||
      eot >= n) {
    return nullptr;
  }
  std::vector<uint32_t> lengths(n);
  size_t total = 0;
  for (auto& len : lengths) {
    if (!in.get(len)) return nullptr;
    total += len;
  }
  const char* text;
  if (!in.skip(total, text)) return nullptr;
  std::vector<std::string> tokens(n);
  for (uint32_t id = 0; id < n; ++id) {
    tokens[id].assign(text, lengths[id]);
    text += lengths[id];
  }
  if (static_cast<size_t>(in.end - in.p) != 8 * size_t(p)) return nullptr;  // before allocating
  std::vector<uint32_t> pair_keys(p), pair_values(p);
  for (auto& k : pair_keys)
    if (!in.get(k)) return nullptr;
  for (auto& v : pair_values)
    if (!in.get(v)) return nullptr;

  auto impl = std::make_unique<BpeTokenizer::Impl>();
  impl->eot_id = static_cast<int32_t>(eot);
  std::vector<bool> indexed(n, true);
  indexed[eot] = false;
  if (tokens[eot] != kEndOfTextText || impl->tokens.build(tokens, indexed) != kNone) return nullptr;
  try {
    impl->find_byte_tokens("tokenizer cache");
  } catch (const Error&) {  // a byte without its token
    return nullptr;
  }
  for (size_t i = 0; i < p; ++i) {
    const uint32_t a = pair_keys[i] >> 16, b = pair_keys[i] & 0xFFFF, v = pair_values[i];
    if (a >= n || b >= n || v >= n || a == eot || b == eot || v == eot) return nullptr;
    const std::string_view ta = impl->tokens.token(a), tb = impl->tokens.token(b),
                           tv = impl->tokens.token(v);
    if (tv.size() != ta.size() + tb.size() || !tv.starts_with(ta) || !tv.ends_with(tb)) {
      return nullptr;
    }
  }
  impl->set_pairs(pair_keys, pair_values);
  return impl;
}

}  // namespace llmft::bpe_cache
