// GGUF: f16 rounding and Q8_0 blocks, the GPT-2 export's keys, value types, tensor names, shapes
// and types (what llama.cpp insists on, FACTS-phase2 §1), round trips through the reader, and
// hostile files (truncated, bad offsets, huge counts, wrong types, random corruption) raising one
// Error naming the file. llama.cpp itself reads the files in tests/e2e/test_llama_cpp.cpp.
#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/gguf.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/model_loader.h"
#include "llmft/io/safetensors.h"
#include "test_util.h"

using namespace llmft;
using llmft::test::TempDir;
namespace fs = std::filesystem;

namespace {

// GPT-2's byte alphabet (bytes_to_unicode) as UTF-8 strings: the 256 single-byte tokens.
std::vector<std::string> byte_tokens() {
  std::vector<std::string> out;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const uint32_t cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out.push_back(s);
  }
  return out;
}

// A tiny vocabulary: the 256 bytes, "Ġt" (a merge) and <|endoftext|>: V = 258.
BpeVocabStrings tiny_vocab() {
  BpeVocabStrings v;
  v.tokens = byte_tokens();
  v.tokens.push_back("Ġt");
  v.tokens.push_back("<|endoftext|>");
  v.merges = {"#version: 0.2", "Ġ t"};
  v.origin = v.merges_origin = "tiny";
  return v;
}

// A tiny GPT-2 (C = 64 so q8_0 rows are whole blocks) with GPT-2's random initialisation.
Gpt2 tiny_model(bool tied = false, int64_t V = 258) {
  Gpt2Config c;
  c.V = V, c.maxT = 16, c.C = 64, c.L = 2, c.NH = 2, c.tied = tied;
  Gpt2 m(c);
  m.init_random(7);
  return m;
}

fs::path export_tiny(const TempDir& dir, GgmlType type, bool tied = false,
                     const std::string& name = "m.gguf") {
  const Gpt2 m = tiny_model(tied);
  GgufExportOptions o;
  o.type = type;
  o.name = "tiny";
  write_gpt2_gguf(dir / name, m.table(), m.params(), tiny_vocab(), o);
  return dir / name;
}

// Expects GgufFile (and so read_gpt2_gguf) to raise an Error naming the file and `needle`.
void expect_bad(const fs::path& file, const std::string& needle) {
  try {
    read_gpt2_gguf(file);
    ADD_FAILURE() << "no error for a file that should fail with '" << needle << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.string()), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << "'" << needle << "' in: " << what;
  }
}

// Hand-made GGUF files for the cases the writer never produces.
struct Builder {
  std::string kv, infos, data;
  uint64_t n_kv = 0, n_tensors = 0;
  uint32_t version = 3;
  template <typename T>
  static void put(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  static void str(std::string& s, std::string_view v) {
    put(s, static_cast<uint64_t>(v.size()));
    s.append(v);
  }
  Builder& key(const std::string& k, GgufValueType t) {
    str(kv, k), put(kv, static_cast<uint32_t>(t)), ++n_kv;
    return *this;
  }
  Builder& u32(const std::string& k, uint32_t v) {
    key(k, GgufValueType::kU32), put(kv, v);
    return *this;
  }
  Builder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t off) {
    str(infos, name), put(infos, static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) put(infos, d);
    put(infos, type), put(infos, off), ++n_tensors;
    return *this;
  }
  std::string bytes() const {
    std::string s = "GGUF";
    put(s, version), put(s, n_tensors), put(s, n_kv);
    s += kv + infos;
    s.resize((s.size() + 31) / 32 * 32, '\0');
    return s + data;
  }
  fs::path write(const TempDir& dir, const std::string& name = "h.gguf") const {
    write_file_atomic(dir / name, bytes());
    return dir / name;
  }
};

void expect_file_error(const fs::path& file, const std::string& needle) {
  try {
    GgufFile f(file);
    ADD_FAILURE() << "no error for a file that should fail with '" << needle << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.string()), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << "'" << needle << "' in: " << what;
  }
}

}  // namespace

TEST(Gguf, F16RoundsToNearestEven) {
  // Every finite half survives f16 -> f32 -> f16; the midpoint between two neighbours goes to the
  // one with an even mantissa; a hair above the midpoint goes up.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    for (uint32_t sign : {0u, 0x8000u}) {
      const auto x = static_cast<uint16_t>(h | sign);
      ASSERT_EQ(f32_to_f16(f16_to_f32(x)), x) << std::hex << x;
    }
    if (h + 1 < 0x7c00) {
      const double lo = f16_to_f32(static_cast<uint16_t>(h));
      const double hi = f16_to_f32(static_cast<uint16_t>(h + 1));
      const auto mid = static_cast<float>((lo + hi) / 2);  // exact in f32
      ASSERT_EQ(f32_to_f16(mid), (h % 2 == 0) ? h : h + 1) << std::hex << h;
      ASSERT_EQ(f32_to_f16(std::nextafter(mid, 1e9f)), h + 1) << std::hex << h;
    }
  }
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.99f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the midpoint to "65536" rounds to infinity
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(f32_to_f16(1e-8f), 0x0000);  // below half of the smallest subnormal (5.96e-8)
  EXPECT_EQ(f32_to_f16(4e-8f), 0x0001);
}

TEST(Gguf, Q8_0BlocksAsGgml) {
  // One block: d = max|x| / 127 as fp16 first, then round(x / d) as int8.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = (i - 12) * 0.1f;  // max |x| = 1.9 at i = 31
  std::vector<unsigned char> q(ggml_bytes(GgmlType::kQ8_0, 32));
  ASSERT_EQ(q.size(), 34u);
  quantize_q8_0(x, q);
  uint16_t dh;
  std::memcpy(&dh, q.data(), 2);
  EXPECT_EQ(dh, f32_to_f16(1.9f / 127.0f));
  EXPECT_EQ(static_cast<int8_t>(q[2 + 31]), 127);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 0]), static_cast<int8_t>(std::lround(-1.2f * 127 / 1.9f)));
  EXPECT_EQ(static_cast<int8_t>(q[2 + 12]), 0);
  // All zeros: d = 0 and q = 0 (no division by zero).
  std::vector<float> z(32, 0.0f);
  quantize_q8_0(z, q);
  for (unsigned char b : q) EXPECT_EQ(b, 0);
  EXPECT_EQ(ggml_bytes(GgmlType::kF16, 10), 20u);
  EXPECT_EQ(ggml_bytes(GgmlType::kF32, 10), 40u);
  EXPECT_EQ(parse_ggml_type("q8_0"), GgmlType::kQ8_0);
  EXPECT_THROW(parse_ggml_type("q4_0"), UsageError);
}

TEST(Gguf, ExportHasLlamaCppKeysTypesAndTensors) {
  TempDir dir;
  const fs::path file = export_tiny(dir, GgmlType::kQ8_0);
  const GgufFile f(file);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.architecture"), "gpt2");
  EXPECT_EQ(f.get_string("general.name"), "tiny");
  EXPECT_EQ(f.get_u32("general.file_type"), 7u);  // MOSTLY_Q8_0
  EXPECT_EQ(f.get_u32("general.quantization_version"), 2u);
  // llama.cpp reads these with exact types: u32 counts, f32 epsilon.
  EXPECT_EQ(f.get_u32("gpt2.context_length"), 16u);
  EXPECT_EQ(f.get_u32("gpt2.embedding_length"), 64u);
  EXPECT_EQ(f.get_u32("gpt2.feed_forward_length"), 256u);
  EXPECT_EQ(f.get_u32("gpt2.block_count"), 2u);
  EXPECT_EQ(f.get_u32("gpt2.attention.head_count"), 2u);
  EXPECT_FLOAT_EQ(f.get_f32("gpt2.attention.layer_norm_epsilon"), 1e-5f);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "gpt-2");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"), tiny_vocab().tokens);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges"), std::vector<std::string>{"Ġ t"});
  const GgufValue& types = f.get("tokenizer.ggml.token_type", GgufValueType::kArray);
  ASSERT_EQ(types.elem, GgufValueType::kI32);
  ASSERT_EQ(types.ints.size(), 258u);
  EXPECT_EQ(types.ints[257], 3);  // <|endoftext|>: control
  EXPECT_EQ(types.ints[0], 1);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.bos_token_id"), 257u);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.eos_token_id"), 257u);
  EXPECT_EQ(f.get("tokenizer.ggml.add_bos_token", GgufValueType::kBool).i, 0);

  // Names, ggml shapes (ne[0] the contiguous dimension) and types as llama.cpp's gpt2 loader.
  auto expect_tensor = [&](const std::string& name, std::vector<int64_t> ne, GgmlType t) {
    const GgufTensor* x = f.find(name);
    ASSERT_NE(x, nullptr) << name;
    EXPECT_EQ(x->ne, ne) << name;
    EXPECT_EQ(x->type, t) << name;
    EXPECT_EQ(x->offset % 32, 0u) << name;
  };
  expect_tensor("token_embd.weight", {64, 258}, GgmlType::kQ8_0);
  expect_tensor("position_embd.weight", {64, 16}, GgmlType::kF32);
  expect_tensor("blk.0.attn_norm.weight", {64}, GgmlType::kF32);
  expect_tensor("blk.1.attn_qkv.weight", {64, 192}, GgmlType::kQ8_0);
  expect_tensor("blk.1.attn_qkv.bias", {192}, GgmlType::kF32);
  expect_tensor("blk.0.attn_output.weight", {64, 64}, GgmlType::kQ8_0);
  expect_tensor("blk.0.ffn_up.weight", {64, 256}, GgmlType::kQ8_0);
  expect_tensor("blk.0.ffn_down.weight", {256, 64}, GgmlType::kQ8_0);
  expect_tensor("blk.1.ffn_norm.bias", {64}, GgmlType::kF32);
  expect_tensor("output_norm.weight", {64}, GgmlType::kF32);
  expect_tensor("output.weight", {64, 258}, GgmlType::kQ8_0);
  EXPECT_EQ(f.tensors().size(), 4u + 2 * 12 + 1);
}

TEST(Gguf, RoundTripF32IsExactF16RoundsQ8IsClose) {
  TempDir dir;
  const Gpt2 m = tiny_model();
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0}) {
    SCOPED_TRACE(ggml_type_name(t));
    const fs::path file = export_tiny(dir, t, false, std::string(ggml_type_name(t)) + ".gguf");
    Gpt2Gguf g = read_gpt2_gguf(file);
    EXPECT_EQ(g.type, t);
    EXPECT_EQ(g.model.config().describe(), m.config().describe());
    EXPECT_EQ(g.vocab.tokens, tiny_vocab().tokens);
    const auto& specs = m.table().specs();
    for (const ParamSpec& s : specs) {
      const auto a = m.table().view(m.params(), s);
      const auto b = g.model.table().view(std::as_const(g.model).params(), s);
      const bool stays_f32 = s.shape.size() == 1 || s.name == "wpe.weight";
      if (t == GgmlType::kF32 || stays_f32) {
        ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << s.name;
        continue;
      }
      if (t == GgmlType::kF16) {
        for (size_t i = 0; i < a.size(); ++i)
          ASSERT_EQ(b[i], f16_to_f32(f32_to_f16(a[i]))) << s.name << " " << i;
        continue;
      }
      // q8_0: each value within half a quantization step (d / 2, d = max|x| / 127 of its block
      // of 32 along a row of the nn.Linear layout) plus the fp16 rounding of d (2^-11 relative):
      // bounded here by the tensor's max|x| / 254 * (1 + 2^-10).
      float amax = 0.0f;
      for (float v : a) amax = std::max(amax, std::fabs(v));
      std::vector<float> err(a.size()), zero(a.size(), 0.0f);
      for (size_t i = 0; i < a.size(); ++i) err[i] = b[i] - a[i];
      EXPECT_TRUE(test::all_close(err, zero, 0.0, amax / 254.0 * (1 + 1.0 / 1024))) << s.name;
    }
  }
}

TEST(Gguf, TiedHeadHasNoOutputTensorAndReadsBackTied) {
  TempDir dir;
  const fs::path file = export_tiny(dir, GgmlType::kF32, /*tied=*/true);
  const GgufFile f(file);
  EXPECT_EQ(f.find("output.weight"), nullptr);  // llama.cpp then reuses token_embd
  const Gpt2Gguf g = read_gpt2_gguf(file);
  EXPECT_TRUE(g.model.config().tied);
}

TEST(Gguf, LoadModelReadsGgufWithItsTokenizer) {
  TempDir dir;
  const Gpt2 m = tiny_model(false, 50257);
  GgufExportOptions o;
  o.type = GgmlType::kF32;
  const BpeVocabStrings vocab =
      BpeVocabStrings::read_folder(bundled_tokenizer_files().vocab_json.parent_path());
  write_gpt2_gguf(dir / "m.gguf", m.table(), m.params(), vocab, o);
  const GgufFile f(dir / "m.gguf");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges").size(), 50000u);  // no "#version" line
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens")[50256], "<|endoftext|>");
  EXPECT_EQ(f.get_u32("tokenizer.ggml.eos_token_id"), 50256u);

  EXPECT_TRUE(is_gguf_path((dir / "m.gguf").string()));
  const LoadedModel lm = load_model((dir / "m.gguf").string(), ModelLoadOptions{});
  EXPECT_EQ(lm.cfg().describe(), m.config().describe());
  const std::string text = "Every effort moves you, ça marche <|endoftext|> 123";
  EXPECT_EQ(lm.tokenizer->encode(text, SpecialTokens::kAllow),
            BpeTokenizer::bundled().encode(text, SpecialTokens::kAllow));
  EXPECT_EQ(std::memcmp(lm.model->params().data(), m.params().data(), m.params().size() * 4), 0);

  // The tokenizer must match the model's vocabulary.
  const Gpt2 small = tiny_model();
  EXPECT_THROW(write_gpt2_gguf(dir / "x.gguf", small.table(), small.params(), vocab, o), Error);
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
}

TEST(Gguf, OllamaModelfile) {
  const std::string mf = ollama_modelfile("m.gguf", "Q: {{ .Prompt }}\nA:", 1024);
  EXPECT_NE(mf.find("FROM ./m.gguf\n"), std::string::npos) << mf;
  EXPECT_NE(mf.find("TEMPLATE \"\"\"Q: {{ .Prompt }}\nA:\"\"\"\n"), std::string::npos) << mf;
  EXPECT_NE(mf.find("PARAMETER stop \"<|endoftext|>\"\n"), std::string::npos) << mf;
  EXPECT_NE(mf.find("PARAMETER num_ctx 1024\n"), std::string::npos) << mf;
}

// ---- hostile files ---------------------------------------------------------------------------

TEST(GgufHostile, TruncatedAnywhere) {
  TempDir dir;
  const std::string good = read_file(export_tiny(dir, GgmlType::kQ8_0));
  // Every cut inside the header and tensor infos, and a sample of cuts in the data.
  std::vector<size_t> cuts;
  for (size_t n = 0; n < 6000 && n < good.size(); n += (n < 64 ? 1 : 7)) cuts.push_back(n);
  for (size_t n = 6000; n < good.size(); n += good.size() / 50) cuts.push_back(n);
  cuts.push_back(good.size() - 32);  // inside the last tensor (its padding is at most 31 bytes)
  for (size_t n : cuts) {
    write_file_atomic(dir / "t.gguf", std::string_view(good).substr(0, n));
    try {
      GgufFile f(dir / "t.gguf");
      ADD_FAILURE() << "a file cut at " << n << " of " << good.size() << " bytes loaded";
    } catch (const Error& e) {
      const std::string what = e.what();
      ASSERT_TRUE(what.find("truncated") != std::string::npos ||
                  what.find("not a GGUF file") != std::string::npos ||
                  what.find("cannot fit") != std::string::npos)
          << n << ": " << what;
    }
  }
}

TEST(GgufHostile, HeaderMagicVersionAndCounts) {
  TempDir dir;
  write_file_atomic(dir / "e.gguf", "");
  expect_file_error(dir / "e.gguf", "not a GGUF file");
  write_file_atomic(dir / "m.gguf", "GGML" + std::string(40, '\0'));
  expect_file_error(dir / "m.gguf", "not a GGUF file");
  Builder b;
  b.version = 1;
  expect_file_error(b.write(dir), "version 1 is not supported");
  b.version = 4;
  expect_file_error(b.write(dir), "version 4 is not supported");
  b.version = 0x03000000;  // a big-endian file's 3
  expect_file_error(b.write(dir), "byte-swapped");
  b.version = 3;
  b.n_kv = uint64_t(1) << 60;
  expect_file_error(b.write(dir), "metadata entries cannot fit");
  b.n_kv = 0, b.n_tensors = uint64_t(1) << 62;
  expect_file_error(b.write(dir), "tensors cannot fit");
}

TEST(GgufHostile, BadMetadata) {
  TempDir dir;
  {
    Builder b;
    b.key("a", GgufValueType::kString);
    Builder::put(b.kv, uint64_t(1) << 62);  // a string longer than the file
    expect_file_error(b.write(dir), "truncated");
  }
  {
    Builder b;
    b.key("a", static_cast<GgufValueType>(99));
    expect_file_error(b.write(dir), "invalid value type 99");
  }
  {
    Builder b;
    b.key("a", GgufValueType::kArray);
    Builder::put(b.kv, static_cast<uint32_t>(GgufValueType::kArray));
    expect_file_error(b.write(dir), "nested arrays");
  }
  {
    Builder b;
    b.key("a", GgufValueType::kArray);
    Builder::put(b.kv, static_cast<uint32_t>(GgufValueType::kString));
    Builder::put(b.kv, uint64_t(1) << 61);  // huge count: refused before allocating
    expect_file_error(b.write(dir), "cannot fit");
  }
  {
    Builder b;
    b.key("a", GgufValueType::kBool);
    b.kv += '\x02';
    expect_file_error(b.write(dir), "bool byte is 2");
  }
  {
    Builder b;
    b.u32("a", 1).u32("a", 2);
    expect_file_error(b.write(dir), "'a' appears twice");
  }
  {
    Builder b;
    b.u32("", 1);
    expect_file_error(b.write(dir), "empty key");
  }
  {
    Builder b;
    b.u32("general.alignment", 24);
    expect_file_error(b.write(dir), "power of two");
  }
  {
    Builder b;
    b.key("general.alignment", GgufValueType::kU64);
    Builder::put(b.kv, uint64_t(32));
    expect_file_error(b.write(dir), "general.alignment must be a u32");
  }
}

TEST(GgufHostile, BadTensorInfos) {
  TempDir dir;
  const std::string data(64, '\0');
  auto one = [&](std::vector<uint64_t> ne, uint32_t type, uint64_t off,
                 const std::string& name = "w") {
    Builder b;
    b.tensor(name, std::move(ne), type, off);
    b.data = data;
    return b;
  };
  EXPECT_NO_THROW(GgufFile(one({16}, 0, 0).write(dir)));  // the baseline loads
  expect_file_error(one({}, 0, 0).write(dir), "has 0 dimensions");
  expect_file_error(one({1, 1, 1, 1, 1}, 0, 0).write(dir), "has 5 dimensions");
  expect_file_error(one({0}, 0, 0).write(dir), "impossible dimension");
  expect_file_error(one({uint64_t(1) << 30, uint64_t(1) << 30}, 0, 0).write(dir),
                    "impossible dimension");
  expect_file_error(one({16}, 2, 0).write(dir), "ggml type 2");  // q4_0: not read by llmft
  expect_file_error(one({16}, 77, 0).write(dir), "ggml type 77");
  expect_file_error(one({16}, 8, 0).write(dir), "not a multiple of the block size 32");
  expect_file_error(one({16}, 0, 32).write(dir), "has offset 32, expected 0");
  expect_file_error(one({32}, 0, 0).write(dir), "truncated: tensor 'w'");  // 128 bytes > 64
  expect_file_error(one({16}, 0, 0, "").write(dir), "name of 0 bytes");
  expect_file_error(one({16}, 0, 0, std::string(64, 'x')).write(dir), "name of 64 bytes");
  Builder b;
  b.tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32);
  b.data = data;
  expect_file_error(b.write(dir), "'w' appears twice");
  Builder c;  // the second tensor must start at the first one's end aligned to 32, not 16
  c.tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 16);
  c.data = data;
  expect_file_error(c.write(dir), "tensor 'b' has offset 16, expected 32");
}

TEST(GgufHostile, NotAGpt2File) {
  TempDir dir;
  const std::string good = read_file(export_tiny(dir, GgmlType::kF32));
  // Same-length edits of strings in the header, so every offset stays valid.
  auto patched = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    s.replace(at, from.size(), to);
    write_file_atomic(dir / "p.gguf", s);
    return dir / "p.gguf";
  };
  expect_bad(patched("gpt2.block_count", "gpt2.block_cOunt"), "'gpt2.block_count' is missing");
  expect_bad(patched("blk.1.ffn_up.weight", "blk.1.ffn_uq.weight"),
             "missing tensor 'blk.1.ffn_up.weight'");
  // general.architecture's value is the first "gpt2" string after its key.
  {
    std::string s = good;
    const size_t key = s.find("general.architecture");
    const size_t at = s.find("gpt2", key + 20);
    s.replace(at, 4, "gptj");
    write_file_atomic(dir / "a.gguf", s);
    expect_bad(dir / "a.gguf", "architecture 'gptj'");
  }
  // The u32 type tag of gpt2.block_count changed to i32: llama.cpp refuses that too.
  {
    std::string s = good;
    const size_t at = s.find("gpt2.block_count") + std::string("gpt2.block_count").size();
    s[at] = static_cast<char>(GgufValueType::kI32);
    write_file_atomic(dir / "b.gguf", s);
    expect_bad(dir / "b.gguf", "'gpt2.block_count' has type i32, expected u32");
  }
}

TEST(GgufHostile, RandomCorruptionRaisesErrorOrLoads) {
  // Seeded random byte edits in the header and tensor infos: each file either loads or raises an
  // llmft::Error; anything else (a crash, std::bad_alloc, an InternalError) fails the test.
  TempDir dir;
  const std::string good = read_file(export_tiny(dir, GgmlType::kQ8_0));
  const GgufFile f(dir / "m.gguf");
  const size_t header_end = good.size() - [&] {
    uint64_t data = 0;
    for (const auto& t : f.tensors()) data = (t.offset + t.bytes + 31) / 32 * 32;
    return data;
  }();
  std::mt19937_64 rng(123);
  int loaded = 0, refused = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string s = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % header_end;
      s[at] = static_cast<char>(rng() % 3 == 0 ? 0xff : rng());
    }
    write_file_atomic(dir / "c.gguf", s);
    try {
      read_gpt2_gguf(dir / "c.gguf");
      ++loaded;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 100);  // most edits of the header break something
  EXPECT_EQ(loaded + refused, 400);
}
