// BpeTokenizer::encode_stream (what `llmft tokenize` runs) against encode() on texts cut into
// small chunks, so every kind of boundary falls between two reads; and merge_large (pieces over
// 64 bytes) against tiktoken's rule on long single pieces.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/tokenizer/bpe.h"
#include "test_util.h"

namespace llmft {
namespace {

const BpeTokenizer& tok() { return BpeTokenizer::bundled(); }

// encode_stream over `text`, read `read_bytes` at a time (reads shorter than the chunk, as from a
// pipe, when smaller), in chunks of `chunk` bytes; the ids of all emit() calls joined.
std::vector<int32_t> streamed(std::string_view text, SpecialTokens special, size_t chunk,
                              size_t read_bytes = SIZE_MAX, size_t* calls = nullptr) {
  std::vector<int32_t> ids;
  size_t emits = 0;
  tok().encode_stream(
      [&](std::span<char> buf) {
        const size_t n = std::min({buf.size(), text.size(), read_bytes});
        std::memcpy(buf.data(), text.data(), n);
        text.remove_prefix(n);
        return n;
      },
      [&](std::span<const int32_t> part) {
        EXPECT_FALSE(part.empty());
        ids.insert(ids.end(), part.begin(), part.end());
        ++emits;
      },
      special, chunk);
  if (calls) *calls = emits;
  return ids;
}

// Every chunk size from 1 to 40 bytes (and a few reads shorter than the chunk) gives encode()'s
// ids.
void expect_same_for_all_chunks(const std::string& text, SpecialTokens special) {
  const auto want = tok().encode(text, special);
  for (size_t chunk = 1; chunk <= 40; ++chunk) {
    ASSERT_EQ(streamed(text, special, chunk), want) << "chunk " << chunk << " text " << text;
  }
  ASSERT_EQ(streamed(text, special, 16, 3), want) << "3-byte reads, text " << text;
  ASSERT_EQ(streamed(text, special, 1 << 20), want) << "one chunk, text " << text;
}

TEST(TokenizerStream, EmptyTextGivesNoIds) {
  size_t calls = 0;
  EXPECT_TRUE(streamed("", SpecialTokens::kDisallow, 4, SIZE_MAX, &calls).empty());
  EXPECT_EQ(calls, 0u);
}

TEST(TokenizerStream, CutsEverywhereGiveTheIdsOfEncode) {
  const std::vector<std::string> texts = {
      "Hello world, we'll see what they've done: it's 2024!\n\n  indented\tand  spaced   ",
      "don't 're 've 'm 'll 'd 's 't ' 'x 'L '",  // contractions cut after the apostrophe
      "Grüße aus Köln — 東京で会いましょう 🙂🚀 Привет, мир! ١٢٣ "
      "42.5e10",                          // 2-, 3-, 4-byte UTF-8
      "   \n\n\t  x  \u00a0\u3000y\r\n",  // whitespace runs before a non-space
      std::string(300, 'a') + " " + std::string(150, '7') + "!!!" + std::string(100, ' ') + "z",
  };
  for (const auto& t : texts) expect_same_for_all_chunks(t, SpecialTokens::kDisallow);
}

TEST(TokenizerStream, MultiByteCharacterSplitAcrossReads) {
  // "é" (2 bytes), "東" (3), "🙂" (4), each cut inside by 1-byte and 2-byte chunks.
  const std::string text = "caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x99\x82!";
  const auto want = tok().encode(text);
  for (size_t chunk : {1, 2, 3, 5})
    EXPECT_EQ(streamed(text, SpecialTokens::kDisallow, chunk), want);
  EXPECT_EQ(tok().decode(want), text);
}

TEST(TokenizerStream, InvalidUtf8IsRepairedAsInEncode) {
  const std::vector<std::string> texts = {
      "a\xFF"
      "b\xC3"
      "c\xE6\x9D"
      "d\xF0\x9F\x99"
      "e",  // lone, truncated 2-, 3-, 4-byte sequences
      "\x80\x80\x80\x80\x80 x \xED\xA0\x80 y \xF4\x90\x80\x80 z",  // continuations, surrogate,
                                                                   // >U+10FFFF
      "\xE0\x80\xAF \xC0\xAF ok \xF0\x9F",  // overlong forms; truncated at the very end
  };
  for (const auto& t : texts) expect_same_for_all_chunks(t, SpecialTokens::kOrdinary);
}

TEST(TokenizerStream, PieceLongerThanAChunk) {
  // One letter run of 5,000 bytes (merge_large) and a 3,000-byte run of CJK (no spaces), read
  // 7 bytes at a time; the pieces around them must not move.
  const std::string cjk = [] {
    std::string s;
    for (int i = 0; i < 1000; ++i) s += "\xE6\x9D\xB1";
    return s;
  }();
  const std::string text = "x " + std::string(5000, 'b') + " y " + cjk + " z";
  const auto want = tok().encode(text);
  EXPECT_EQ(streamed(text, SpecialTokens::kDisallow, 7), want);
  EXPECT_EQ(streamed(text, SpecialTokens::kDisallow, 64, 5), want);
  EXPECT_EQ(tok().decode(want), text);
}

TEST(TokenizerStream, SpecialTokenAcrossReads) {
  const std::string text = "a<|endoftext|>b <|endoftext|><|endoftext|> c's<|endoftext|>";
  expect_same_for_all_chunks(text, SpecialTokens::kAllow);
  expect_same_for_all_chunks(text, SpecialTokens::kOrdinary);
  EXPECT_EQ(streamed(text, SpecialTokens::kAllow, 5),
            (std::vector<int32_t>{64, 50256, 65, 220, 50256, 50256, 269, 338, 50256}));
  // Disallowed: encode()'s error, at the byte where it starts in the whole input, whatever the cut.
  const std::string bad = std::string(20, 'x') + "<|endoftext|>";
  for (size_t chunk : {1, 4, 7, 13, 20, 64}) {
    try {
      streamed(bad, SpecialTokens::kDisallow, chunk);
      FAIL() << "chunk " << chunk;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("<|endoftext|> at byte 20,"), std::string::npos)
          << e.what();
    }
  }
  // An incomplete one at the end is text.
  EXPECT_EQ(streamed("x<|endoftext", SpecialTokens::kDisallow, 3), tok().encode("x<|endoftext"));
}

TEST(TokenizerStream, CorpusRecordsCutIntoSmallChunks) {
  // tiktoken's ids for the tricky corpus (every record), streamed 11 bytes at a time.
  std::ifstream in(test::test_data_dir() / "tokenizer" / "tricky.jsonl");
  ASSERT_TRUE(in);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto r = nlohmann::json::parse(line);
    const auto special = r.at("mode") == "all" ? SpecialTokens::kAllow : SpecialTokens::kOrdinary;
    EXPECT_EQ(streamed(r.at("text").get<std::string>(), special, 11),
              r.at("ids").get<std::vector<int32_t>>())
        << r.at("name");
    ++n;
  }
  EXPECT_GT(n, 1000u);
}

TEST(TokenizerStream, LongPieceIdsComeInBatches) {
  // A 200,000-byte word: its ids are handed out before the whole piece's are gathered, and are
  // the same as encode()'s.
  const std::string word(200000, 'q');
  size_t calls = 0;
  const auto ids = streamed(word, SpecialTokens::kDisallow, 4096, SIZE_MAX, &calls);
  EXPECT_EQ(ids, tok().encode(word));
  EXPECT_EQ(tok().decode(ids), word);
  EXPECT_GE(ids.size(), 200000u / 8);
}

// tiktoken's rule written out plainly: join the adjacent pair whose joined bytes are the
// lowest-id token, leftmost first, until none is. A letters-only string is one pre-tokenizer
// piece, so encode() of a joined pair tells whether it is a token and its id (= its rank).
std::vector<int32_t> reference_merge(const std::string& word) {
  std::map<std::string, int32_t> rank_of;
  const auto rank = [&](const std::string& s) {
    auto it = rank_of.find(s);
    if (it == rank_of.end()) {
      const auto ids = tok().encode(s);
      it = rank_of.emplace(s, ids.size() == 1 ? ids[0] : INT32_MAX).first;
    }
    return it->second;
  };
  std::vector<std::string> parts;
  for (char c : word) parts.emplace_back(1, c);
  for (;;) {
    size_t best = 0;
    int32_t best_rank = INT32_MAX;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const int32_t r = rank(parts[i] + parts[i + 1]);
      if (r < best_rank) best = i, best_rank = r;
    }
    if (best_rank == INT32_MAX) break;
    parts[best] += parts[best + 1];
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  std::vector<int32_t> ids;
  for (const auto& p : parts) ids.push_back(rank(p));
  return ids;
}

// Pieces over 64 bytes take merge_large (block-minimum tree over a compact array): the same ids
// as the plain rule, on random words (merges meeting from both sides, ties of equal ranks) and
// runs of one letter, just over and well over 64 bytes.
TEST(TokenizerStream, LongPiecesFollowTheMergeRule) {
  uint64_t state = 12345;
  const auto rnd = [&](int n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state >> 33) % static_cast<uint64_t>(n));
  };
  std::vector<std::string> words;
  for (int len : {65, 66, 97, 130, 257, 600}) {
    std::string w;
    for (int i = 0; i < len; ++i) w += static_cast<char>("etaoinshrdlu"[rnd(12)]);
    words.push_back(w);
    words.push_back(std::string(static_cast<size_t>(len), 'a'));
    std::string ab;
    for (int i = 0; i < len; ++i) ab += i % 3 == 2 ? 'b' : 'a';
    words.push_back(ab);
  }
  for (const auto& w : words) {
    const auto ids = tok().encode(w);
    EXPECT_EQ(ids, reference_merge(w)) << w;
    EXPECT_EQ(tok().decode(ids), w);
  }
}

// `llmft tokenize --file` on 2.5 MiB (the command reads 1 MiB chunks): a 3-byte character cut
// by the first chunk boundary and <|endoftext|> by the second; the output is nlohmann's dump of
// encode()'s ids, byte for byte, as before streaming; stdin gives the same.
TEST(TokenizeCommand, StreamsLargeFilesAsEncode) {
  std::string text;
  for (int i = 0; text.size() < (size_t(1) << 20) - 1; ++i) text += i % 7 ? "word " : "日本 ";
  text.resize((size_t(1) << 20) - 1, 'x');
  text += "\xE6\x9D\xB1 tail";  // bytes 1 MiB - 1 .. 1 MiB + 1
  while (text.size() < (size_t(2) << 20) - 5) text += "Grüße, we'll see. ";
  text.resize((size_t(2) << 20) - 5, 'y');
  text += "<|endoftext|> and more";
  while (text.size() < (size_t(5) << 19)) text += "\xFF\xC3 invalid ";
  test::TempDir dir;
  write_file_atomic(dir / "in.txt", text);
  const auto r =
      test::run_llmft({"tokenize", "--file", (dir / "in.txt").string(), "--allow-special"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string want = nlohmann::json(tok().encode(text, SpecialTokens::kAllow)).dump() + "\n";
  EXPECT_TRUE(r.out == want) << "output differs from encode() (" << r.out.size() << " vs "
                             << want.size() << " bytes)";
  const auto r2 = test::run_llmft({"tokenize", "--allow-special"}, text);
  EXPECT_TRUE(r2.out == want);
  // Disallowed special token 2 MiB in: from a file, nothing is printed.
  const auto r3 = test::run_llmft({"tokenize", "--file", (dir / "in.txt").string()});
  EXPECT_EQ(r3.exit_code, 1);
  EXPECT_TRUE(r3.out.empty());
  EXPECT_NE(r3.err.find("at byte " + std::to_string((size_t(2) << 20) - 5)), std::string::npos)
      << r3.err;
}

}  // namespace
}  // namespace llmft
