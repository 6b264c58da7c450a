// The tokenizer's table cache (tokenizer/bpe_cache.cpp): a warm load gives tiktoken's ids, and a
// damaged, foreign or forged file is never used.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llmft/core/io.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/tokenizer/bpe_impl.h"
#include "test_util.h"

namespace llmft {
namespace {

namespace fs = std::filesystem;
using test::ScopedEnv;
using test::TempDir;

fs::path gpt2_dir() { return data_dir() / "gpt2"; }

uint64_t gpt2_key() {
  return bpe_cache::key_of(read_file(gpt2_dir() / "encoder.json"),
                           read_file(gpt2_dir() / "vocab.bpe"));
}

std::vector<fs::path> cache_files(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir / "tokenizer", ec)) out.push_back(e.path());
  return out;
}

// Every record of tiktoken's ids for the tricky texts.
void expect_tiktoken_ids(const BpeTokenizer& tok) {
  std::ifstream in(test::test_data_dir() / "tokenizer" / "tricky.jsonl");
  ASSERT_TRUE(in);
  size_t records = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto r = nlohmann::json::parse(line);
    const auto mode = r.at("mode") == "all" ? SpecialTokens::kAllow : SpecialTokens::kOrdinary;
    ASSERT_EQ(tok.encode(r.at("text").get<std::string>(), mode),
              r.at("ids").get<std::vector<int32_t>>())
        << r.at("name");
    ++records;
  }
  EXPECT_EQ(records, 1087u);
}

TEST(TokenizerCache, WarmLoadReadsTheCacheAndMatchesTiktoken) {
  TempDir tmp;
  const ScopedEnv env("LLMFT_CACHE_DIR", tmp.path().string());
  const BpeTokenizer cold = BpeTokenizer::load_folder(gpt2_dir());
  const auto files = cache_files(tmp.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0], bpe_cache::file_for(gpt2_key()));
  ASSERT_NE(bpe_cache::read(files[0], gpt2_key()), nullptr);
  const auto written = fs::last_write_time(files[0]);
  const BpeTokenizer warm = BpeTokenizer::load_folder(gpt2_dir());
  EXPECT_EQ(fs::last_write_time(files[0]), written);  // read, not built and written again
  EXPECT_EQ(warm.vocab_size(), 50257);
  expect_tiktoken_ids(warm);
}

TEST(TokenizerCache, DamagedForeignOrForgedFilesAreNotUsed) {
  TempDir tmp;
  const ScopedEnv env("LLMFT_CACHE_DIR", tmp.path().string());
  (void)BpeTokenizer::load_folder(gpt2_dir());
  const uint64_t key = gpt2_key();
  const fs::path file = bpe_cache::file_for(key);
  const std::string good = read_file(file);
  ASSERT_NE(bpe_cache::read(file, key), nullptr);
  EXPECT_EQ(bpe_cache::read(file, key + 1), nullptr);  // another pair of files

  std::string bad = good;
  bad[bad.size() / 2] ^= 0x20;  // one bit: the hash fails
  write_file_atomic(file, bad);
  EXPECT_EQ(bpe_cache::read(file, key), nullptr);
  write_file_atomic(file, good.substr(0, good.size() - 1));  // cut short
  EXPECT_EQ(bpe_cache::read(file, key), nullptr);

  // A forged file with a correct hash: the first pair's joined token replaced by token 0 ("!"),
  // whose bytes are not the pair's. Layout: 32-byte header (pair count at byte 20), ..., pair
  // values (4 bytes each), the 8-byte hash.
  uint32_t pairs;
  std::memcpy(&pairs, good.data() + 20, 4);
  ASSERT_GT(pairs, 0u);
  std::string forged = good.substr(0, good.size() - 8);
  std::memset(forged.data() + forged.size() - 4 * size_t(pairs), 0, 4);
  const uint64_t sum = bpe::hash_bytes(forged.data(), forged.size());
  forged.append(reinterpret_cast<const char*>(&sum), 8);
  write_file_atomic(file, forged);
  EXPECT_EQ(bpe_cache::read(file, key), nullptr);

  // The load behind an unusable file builds the tables again and writes a good file back.
  const BpeTokenizer tok = BpeTokenizer::load_folder(gpt2_dir());
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(read_file(file), good);
}

// A cache file written by hand (bpe_cache.cpp's file comment), key 42, its closing hash computed
// here: `toks` by id, `pairs` as (left << 16 | right, joined token).
std::string tiny_cache_file(const std::vector<std::string>& toks, uint32_t eot,
                            const std::vector<std::pair<uint32_t, uint32_t>>& pairs) {
  std::string out = "LLMFTBPE";
  auto put = [&](auto v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(uint32_t{1});
  put(static_cast<uint32_t>(toks.size()));
  put(eot);
  put(static_cast<uint32_t>(pairs.size()));
  put(uint64_t{42});
  for (const auto& t : toks) put(static_cast<uint32_t>(t.size()));
  for (const auto& t : toks) out += t;
  for (const auto& p : pairs) put(p.first);
  for (const auto& p : pairs) put(p.second);
  put(bpe::hash_bytes(out.data(), out.size()));
  return out;
}

TEST(TokenizerCache, HandWrittenFileGivesItsMerges) {
  // The 256 bytes, <|endoftext|> (256), "he" (257) = h + e and "hel" (258) = he + l.
  std::vector<std::string> toks;
  for (int b = 0; b < 256; ++b) toks.emplace_back(1, static_cast<char>(b));
  toks.insert(toks.end(), {"<|endoftext|>", "he", "hel"});
  const std::vector<std::pair<uint32_t, uint32_t>> pairs = {{'h' << 16 | 'e', 257},
                                                           {257 << 16 | 'l', 258}};
  const auto impl = bpe_cache::parse(tiny_cache_file(toks, 256, pairs), 42);
  ASSERT_NE(impl, nullptr);
  std::vector<int32_t> ids;
  impl->encode_ordinary("hello", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{258, 'l', 'o'}));
  EXPECT_EQ(bpe_cache::parse(tiny_cache_file(toks, 256, pairs), 43), nullptr);  // another key

  // Refused: a byte without its token, <|endoftext|> in a pair, a pair whose bytes are not its
  // token's, an id out of range, the same token twice.
  auto no_z = toks;
  no_z['z'] = "zz";
  EXPECT_EQ(bpe_cache::parse(tiny_cache_file(no_z, 256, pairs), 42), nullptr);
  EXPECT_EQ(bpe_cache::parse(tiny_cache_file(toks, 256, {{256 << 16 | 'e', 257}}), 42), nullptr);
  EXPECT_EQ(bpe_cache::parse(tiny_cache_file(toks, 256, {{'h' << 16 | 'l', 257}}), 42), nullptr);
  EXPECT_EQ(bpe_cache::parse(tiny_cache_file(toks, 256, {{'h' << 16 | 'e', 259}}), 42), nullptr);
  auto twice = toks;
  twice[258] = "he";
  EXPECT_EQ(bpe_cache::parse(tiny_cache_file(twice, 256, {}), 42), nullptr);
}

TEST(TokenizerCache, UnwritableFolderStillLoads) {
  TempDir tmp;
  write_file_atomic(tmp / "not-a-folder", "x");
  const ScopedEnv env("LLMFT_CACHE_DIR", (tmp / "not-a-folder").string());
  const BpeTokenizer tok = BpeTokenizer::load_folder(gpt2_dir());
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(read_file(tmp / "not-a-folder"), "x");
}

TEST(TokenizerCache, KeyFollowsBothFilesContents) {
  const uint64_t k = bpe_cache::key_of("{\"a\": 0}", "#version: 0.2\n");
  EXPECT_EQ(k, bpe_cache::key_of("{\"a\": 0}", "#version: 0.2\n"));
  EXPECT_NE(k, bpe_cache::key_of("{\"a\": 1}", "#version: 0.2\n"));
  EXPECT_NE(k, bpe_cache::key_of("{\"a\": 0}", "#version: 0.2\n\n"));
  EXPECT_NE(k, bpe_cache::key_of("#version: 0.2\n", "{\"a\": 0}"));  // which file is which
}

}  // namespace
}  // namespace llmft
