// GPT-2 byte-level BPE encoding with tiktoken's merge rule: repeatedly join the adjacent pair whose
// joined bytes form the lowest-id token, leftmost first. Whole texts (encode, encode_batch) and
// texts read piece by piece (encode_stream). Golden: tests/data/tokenizer/*.jsonl.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>

#include "llmft/core/error.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/tokenizer/bpe_impl.h"
#include "llmft/tokenizer/pretokenize.h"
#include "llmft/tokenizer/utf8.h"

namespace llmft {

namespace {

constexpr uint32_t kNone = bpe::TokenTable::kNone;
// Pieces up to this many bytes use the simple quadratic merge loop (fastest when short); longer
// ones merge_large, O(n log n) time and 4 bytes per byte.
constexpr size_t kSmallPiece = 64;
// merge_large hands a long piece's ids to the stream's sink in batches of this many.
constexpr size_t kFlushIds = size_t(1) << 16;

}  // namespace

Error BpeTokenizer::special_token_error(uint64_t at) {
  return Error(fmt::format("text contains the special token <|endoftext|> at byte {}, which is "
                           "not allowed here",
                           at),
               "allow special tokens to encode it as id 50256 (--allow-special), or encode it "
               "as ordinary text");
}

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

// Long pieces (a 100 MB "word" of one letter): 4 bytes per byte plus 1/8 byte for the tree, time
// O(n log n). tok[i] is the token that starts at byte i, kGone inside a token: a token's bytes are
// the piece's bytes there, so the next token starts at i + its length, and the previous one is
// the nearest live byte to the left (at most one token length away). rank[i] is the rank of
// joining tok[i] with the next token (kGone: none). A tree over the minima of blocks of rank
// finds the lowest rank, leftmost first, which is tiktoken's rule.
void BpeTokenizer::Impl::merge_large(const char* p, size_t n, std::vector<int32_t>& out,
                                     const IdsSink* flush) const {
  constexpr uint16_t kGone = 0xFFFF;  // ids and ranks are < 0xFFFF (PairTable::kMaxTokens)
  constexpr size_t kBlock = 32;
  std::vector<uint16_t> tok(n), rank(n);
  for (size_t i = 0; i < n; ++i)
    tok[i] = static_cast<uint16_t>(byte_id[static_cast<uint8_t>(p[i])]);
  for (size_t i = 0; i + 1 < n; ++i) {
    rank[i] = byte_pair[(size_t(uint8_t(p[i])) << 8) | uint8_t(p[i + 1])];  // 0xFFFF: none
  }
  rank[n - 1] = kGone;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  const size_t leaves = std::bit_ceil(blocks);
  std::vector<uint16_t> tree(2 * leaves, kGone);  // tree[1] is the root, leaves from tree[leaves]
  const auto block_min = [&](size_t b) {
    const size_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    uint16_t m = kGone;
    for (size_t i = lo; i < hi; ++i) m = std::min(m, rank[i]);
    return m;
  };
  for (size_t b = 0; b < blocks; ++b) tree[leaves + b] = block_min(b);
  for (size_t k = leaves - 1; k >= 1; --k) tree[k] = std::min(tree[2 * k], tree[2 * k + 1]);
  const auto update = [&](size_t b) {
    size_t k = leaves + b;
    tree[k] = block_min(b);
    for (k >>= 1; k >= 1; k >>= 1) {
      const uint16_t m = std::min(tree[2 * k], tree[2 * k + 1]);
      if (tree[k] == m) break;
      tree[k] = m;
    }
  };
  const auto len = [&](uint16_t id) { return tokens.token(id).size(); };
  const auto join_rank = [&](uint32_t a, uint32_t b) {
    const uint32_t r = pairs.find(a, b);
    return r == kNone ? kGone : static_cast<uint16_t>(r);
  };
  while (tree[1] != kGone) {
    const uint16_t r = tree[1];
    size_t k = 1;
    while (k < leaves) k = 2 * k + (tree[2 * k] != r);  // leftmost subtree holding r
    size_t i = (k - leaves) * kBlock;
    while (rank[i] != r) ++i;
    const size_t j = i + len(tok[i]);  // the right token, joined into tok[i]
    const size_t after = j + len(tok[j]);
    tok[i] = r;
    tok[j] = kGone;
    rank[j] = kGone;
    rank[i] = after < n ? join_rank(r, tok[after]) : kGone;
    size_t h = i;
    if (i > 0) {
      for (h = i - 1; tok[h] == kGone;) --h;
      rank[h] = join_rank(tok[h], r);
    }
    update(i / kBlock);
    if (j / kBlock != i / kBlock) update(j / kBlock);
    if (h / kBlock != i / kBlock) update(h / kBlock);
  }
  for (size_t i = 0; i < n; i += len(tok[i])) {
    out.push_back(tok[i]);
    if (flush && out.size() >= kFlushIds) {
      (*flush)(out);
      out.clear();
    }
  }
}

// Per-thread cache of recent short pieces that needed merging (frequent words of languages
// whose words are not single tokens). Direct-mapped by the piece's hash; entries of another
// vocabulary are told apart by Impl::cache_key.
struct PieceCache {
  static constexpr size_t kEntries = 16384;
  static constexpr size_t kMaxBytes = 32;
  struct Entry {
    uint64_t hash = 0, owner = 0;
    uint8_t len = 0, count = 0;
    char bytes[kMaxBytes];
    uint16_t ids[kMaxBytes];
  };
  std::vector<Entry> entries = std::vector<Entry>(kEntries);
};

void BpeTokenizer::Impl::encode_piece(const char* p, size_t n, std::vector<int32_t>& out,
                                      const IdsSink* flush) const {
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
    n <= kSmallPiece ? merge_small(p, n, out) : merge_large(p, n, out, flush);
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

void BpeTokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int32_t>& out,
                                         const IdsSink* flush) const {
  pretok::split(text,
                [&](size_t b, size_t e) { encode_piece(text.data() + b, e - b, out, flush); });
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, SpecialTokens special) const {
  if (special == SpecialTokens::kDisallow) {
    const size_t at = text.find(kEndOfTextText);
    if (at != std::string_view::npos) throw special_token_error(at);
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

namespace {

// How many leading bytes of `s` can be repaired now: all but an incomplete UTF-8 sequence at the
// end, which the next read may complete. The repair starts afresh at every byte that is not a
// continuation byte (10xxxxxx), so repairing the parts cut there equals repairing the whole.
size_t utf8_ready(std::string_view s) {
  const size_t n = s.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    const auto b = static_cast<uint8_t>(s[n - k]);
    if ((b & 0xC0) != 0x80)
      return b >= 0xC0 && static_cast<size_t>(utf8::seq_len(b)) > k ? n - k : n;
  }
  return n;
}

// A piece that ends this many bytes or more before the end of the text read so far is the piece
// the whole text has there: each piece is decided by the text up to its end plus at most two
// bytes (a contraction 're after an apostrophe), and a <|endoftext|> (13 bytes) that is not yet
// complete starts after it.
constexpr size_t kLookahead = 16;

}  // namespace

void BpeTokenizer::encode_stream(const TextSource& read, const IdsSink& emit, SpecialTokens special,
                                 size_t chunk_bytes) const {
  if (chunk_bytes == 0) throw UsageError("encode_stream: chunk_bytes must be at least 1");
  const size_t special_len = kEndOfTextText.size();
  std::string raw;   // read, not yet repaired: an incomplete UTF-8 sequence held back, then a chunk
  std::string text;  // valid UTF-8 not yet encoded; starts where a piece starts
  std::string recent;  // kDisallow: the input's last bytes, to see <|endoftext|> across reads
  std::vector<int32_t> ids;
  uint64_t offset = 0;  // input bytes before `recent`
  size_t want = chunk_bytes;
  bool end = false;
  while (!end) {
    // Read until `want` bytes of text wait (more while one long piece is pending, see below).
    while (!end && text.size() < want) {
      const size_t held = raw.size();
      raw.resize(held + chunk_bytes);
      const size_t got = read({raw.data() + held, chunk_bytes});
      raw.resize(held + got);
      end = got == 0;
      if (special == SpecialTokens::kDisallow && got > 0) {
        recent.append(raw, held, got);
        const size_t at = recent.find(kEndOfTextText);
        if (at != std::string::npos) throw special_token_error(offset + at);
        const size_t drop = recent.size() - std::min(recent.size(), special_len - 1);
        offset += drop;
        recent.erase(0, drop);
      }
      const std::string_view ready(raw.data(), end ? raw.size() : utf8_ready(raw));
      if (utf8::is_valid(ready)) {
        text.append(ready);
      } else {
        text += utf8::replace_invalid(ready);
      }
      raw.erase(0, ready.size());
    }
    // Encode what more text cannot change: text before a <|endoftext|> (kAllow), everything at
    // the end, else the pieces that end kLookahead bytes or more before the end of `text`.
    size_t pos = 0;
    for (;;) {
      const std::string_view rest(text.data() + pos, text.size() - pos);
      const size_t at =
          special == SpecialTokens::kAllow ? rest.find(kEndOfTextText) : std::string_view::npos;
      if (at != std::string_view::npos) {
        impl_->encode_ordinary(rest.substr(0, at), ids, &emit);
        ids.push_back(impl_->eot_id);
        pos += at + special_len;
        continue;
      }
      if (end) {
        impl_->encode_ordinary(rest, ids, &emit);
        pos = text.size();
        break;
      }
      const size_t limit = rest.size() > kLookahead ? rest.size() - kLookahead : 0;
      size_t done = 0;
      pretok::split(rest, [&](size_t b, size_t e) {
        if (e > limit) return;  // this piece and all after it wait for more text
        impl_->encode_piece(rest.data() + b, e - b, ids, &emit);
        done = e;
      });
      pos += done;
      break;
    }
    text.erase(0, pos);
    if (!ids.empty()) {
      emit(ids);
      ids.clear();
    }
    // Read at least a chunk, and more than waits now (or nothing could move). A piece longer
    // than a chunk is read whole before it is split again: waiting until the text has grown by
    // half keeps the re-scans of it linear in its length.
    want = std::max(chunk_bytes, text.size() + std::max(text.size() / 2, 2 * kLookahead));
    if (text.capacity() < want + 3 * chunk_bytes) text.reserve(want + 3 * chunk_bytes);
  }
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

}  // namespace llmft
