// safetensors reader/writer: round trips, exact F16/BF16 conversion, and every malformed-file case
// raising an Error that names the file (and the tensor). Also SHA-256 against FIPS 180-4 vectors.
#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/safetensors.h"
#include "llmft/io/sha1.h"
#include "llmft/io/sha256.h"
#include "test_util.h"

using namespace llmft;
using llmft::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A file from a raw header text and data bytes.
fs::path make_file(const TempDir& dir, const std::string& header, const std::string& data,
                   const std::string& name = "m.safetensors") {
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header + data;
  write_file_atomic(dir / name, bytes);
  return dir / name;
}

std::string u16_bytes(std::initializer_list<uint16_t> v) {
  std::string s;
  for (uint16_t x : v) s.append(reinterpret_cast<const char*>(&x), 2);
  return s;
}

// Expects an Error whose message contains the file path and every one of `needles`.
void expect_error(const fs::path& file, std::initializer_list<std::string> needles) {
  try {
    SafetensorsFile f(file);
    ADD_FAILURE() << "no error for " << file;
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.string()), std::string::npos) << what;
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' in: " << what;
  }
}

}  // namespace

TEST(Sha256, Fips180Vectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a' fed in uneven chunks exercises the block buffering.
  Sha256 h;
  const std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    const size_t n = std::min(left, chunk.size());
    h.update(std::string_view(chunk.data(), n));
    left -= n;
  }
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Lengths at the padding's edges (55 fits the length in the last block, 56 needs another;
// 64 and 119 likewise one block on): hashlib's digests of that many 'a'.
TEST(Sha256, PaddingEdgesMatchHashlib) {
  const std::pair<size_t, const char*> sha256[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"}};
  const std::pair<size_t, const char*> sha1[] = {
      {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
      {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
      {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
      {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"}};
  for (const auto& [n, want] : sha256) EXPECT_EQ(sha256_hex(std::string(n, 'a')), want) << n;
  for (const auto& [n, want] : sha1) EXPECT_EQ(sha1_hex(std::string(n, 'a')), want) << n;
}

TEST(Sha256, HardwareAndPortablePathsAgree) {
  std::string data(5000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
  for (size_t len : {0, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 5000}) {
    const std::string_view v(data.data(), len);
    Sha256::use_fast = false;
    const std::string portable = sha256_hex(v);
    Sha256::use_fast = true;
    EXPECT_EQ(sha256_hex(v), portable) << len;
  }
}

// Expected values: Python's hashlib.sha1 of the same inputs (git's empty blob id is the well-known
// e69de29...).
TEST(Sha1, VectorsFromHashlib) {
  EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  Sha1 h;
  const std::string chunk(997, 'a');
  for (size_t left = 1000000; left > 0;) {
    const size_t n = std::min(left, chunk.size());
    h.update(std::string_view(chunk.data(), n));
    left -= n;
  }
  EXPECT_EQ(h.hex_digest(), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  EXPECT_EQ(git_blob_sha1_hex(""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
  EXPECT_EQ(git_blob_sha1_hex("hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
  llmft::test::TempDir dir;
  write_file_atomic(dir / "f", std::string("hello\n"));
  EXPECT_EQ(git_blob_sha1_file(dir / "f"), "ce013625030ba8dba906f756967f9e9ca394464a");
  EXPECT_EQ(sha256_file(dir / "f"), sha256_hex("hello\n"));
  EXPECT_THROW(git_blob_sha1_file(dir / "missing"), Error);
  EXPECT_THROW(sha256_file(dir / "missing"), Error);
}

TEST(Safetensors, F16ConversionIsExactForAll65536Values) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const int sign = (h >> 15) ? -1 : 1;
    const int exp = (h >> 10) & 0x1f;
    const int mant = h & 0x3ff;
    const float got = f16_to_f32(static_cast<uint16_t>(h));
    if (exp == 0x1f) {
      if (mant == 0) {
        EXPECT_EQ(got, sign * std::numeric_limits<float>::infinity()) << h;
      } else {
        EXPECT_TRUE(std::isnan(got)) << h;
      }
      continue;
    }
    const double want = exp == 0 ? sign * std::ldexp(mant, -24)
                                 : sign * std::ldexp(1024 + mant, exp - 25);
    ASSERT_EQ(got, static_cast<float>(want)) << "half 0x" << std::hex << h;
    EXPECT_EQ(std::signbit(got), sign < 0) << h;  // -0.0 keeps its sign
  }
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);               // largest finite
}

TEST(Safetensors, Bf16ConversionIsTheUpperHalfOfFloat) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc040), -3.0f);
  EXPECT_EQ(bf16_to_f32(0x0001), std::bit_cast<float>(0x00010000u));  // subnormal
  EXPECT_TRUE(std::isinf(bf16_to_f32(0x7f80)));
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0)));
}

TEST(Safetensors, WriteThenReadIsBitIdentical) {
  TempDir dir;
  std::vector<float> a = {1.5f, -0.0f, std::numeric_limits<float>::infinity(),
                          std::bit_cast<float>(0x7fc12345u), 1e-40f, 3.0f};
  std::vector<float> b = {42.0f};
  std::vector<float> empty;
  write_safetensors(dir / "x.safetensors",
                    {{"a", {2, 3}, a}, {"b", {1}, b}, {"scalar", {}, b}, {"empty", {0, 4}, empty}},
                    {{"format", "pt"}, {"note", "hi"}});
  const auto size = fs::file_size(dir / "x.safetensors");
  std::string raw = read_file(dir / "x.safetensors");
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "header padded so the data is 8-byte aligned";
  EXPECT_EQ(size, 8 + n + (6 + 1 + 1) * 4);

  SafetensorsFile f(dir / "x.safetensors");
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("note"), "hi");
  const TensorInfo* ta = f.find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> got(6);
  f.read_f32(*ta, got);
  EXPECT_EQ(std::memcmp(got.data(), a.data(), 6 * 4), 0);
  EXPECT_EQ(f.find("scalar")->numel, 1);
  EXPECT_EQ(f.find("empty")->numel, 0);
  EXPECT_EQ(f.find("nope"), nullptr);
}

TEST(Safetensors, ReadsF16Bf16AndF64) {
  TempDir dir;
  std::string data = u16_bytes({0x3c00, 0xc000, 0x0001, 0x7c00});  // f16: 1, -2, 2^-24, inf
  data += u16_bytes({0x3f80, 0x4049});                              // bf16: 1, 3.140625
  const double d[2] = {0.1, -1e300};
  data.append(reinterpret_cast<const char*>(d), 16);
  const auto file = make_file(dir,
      R"({"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
      R"("d":{"dtype":"F64","shape":[2],"data_offsets":[12,28]}})", data);
  SafetensorsFile f(file);
  std::vector<float> h(4), b(2), dd(2);
  f.read_f32(*f.find("h"), h);
  f.read_f32(*f.find("b"), b);
  f.read_f32(*f.find("d"), dd);
  EXPECT_EQ(h, (std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24),
                                   std::numeric_limits<float>::infinity()}));
  EXPECT_EQ(b, (std::vector<float>{1.0f, 3.140625f}));
  EXPECT_EQ(dd[0], 0.1f);
  EXPECT_TRUE(std::isinf(dd[1]));  // rounds to nearest: out of float range
}

TEST(Safetensors, GapsInTheDataAreAllowed) {
  TempDir dir;
  const auto file = make_file(dir, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              std::string(12, '\0'));
  SafetensorsFile f(file);
  EXPECT_EQ(f.tensors().size(), 1u);
}

TEST(Safetensors, IntegerTensorCannotBeReadAsFloat) {
  TempDir dir;
  const auto file = make_file(dir, R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
                              std::string(8, '\0'));
  SafetensorsFile f(file);
  std::vector<float> out(1);
  try {
    f.read_f32(*f.find("ids"), out);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'ids'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("I64"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsCorrupt, TooShortForTheHeaderLength) {
  TempDir dir;
  write_file_atomic(dir / "short.safetensors", std::string("abc"));
  expect_error(dir / "short.safetensors", {"3 bytes"});
}

TEST(SafetensorsCorrupt, MissingFile) {
  TempDir dir;
  expect_error(dir / "absent.safetensors", {"cannot open"});
}

TEST(SafetensorsCorrupt, HeaderLengthPastTheEnd) {
  TempDir dir;
  std::string bytes(8, '\0');
  const uint64_t n = 1000;
  std::memcpy(bytes.data(), &n, 8);
  write_file_atomic(dir / "m.safetensors", bytes + "{}");
  expect_error(dir / "m.safetensors", {"header length 1000", "past the end"});
}

TEST(SafetensorsCorrupt, AbsurdHeaderLength) {
  TempDir dir;
  // A sparse 200 MB file whose header length claims all of it: no disk used, no data read.
  const fs::path file = dir / "big.safetensors";
  std::string bytes(8, '\0');
  const uint64_t n = 150'000'000;
  std::memcpy(bytes.data(), &n, 8);
  write_file_atomic(file, bytes);
  ASSERT_EQ(::truncate(file.c_str(), 200'000'000), 0);
  expect_error(file, {"absurd"});
}

TEST(SafetensorsCorrupt, TruncatedFile) {
  TempDir dir;
  std::vector<float> a(100, 1.0f);
  write_safetensors(dir / "m.safetensors", {{"w", {100}, a}});
  const auto size = fs::file_size(dir / "m.safetensors");
  fs::resize_file(dir / "m.safetensors", size - 10);
  expect_error(dir / "m.safetensors", {"'w'", "out of range"});
}

TEST(SafetensorsCorrupt, HeaderNotJson) {
  TempDir dir;
  expect_error(make_file(dir, "{\"a\": [1, 2", ""), {"header: line 1, column 12: the JSON ends early (an array is not closed)"});
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  TempDir dir;
  expect_error(make_file(dir, "[1, 2]", ""), {"must be an object"});
}

TEST(SafetensorsCorrupt, EntryMissingFields) {
  TempDir dir;
  expect_error(make_file(dir, R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd", "a.st"),
               {"'w'", "dtype"});
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd", "b.st"),
               {"'w'", "shape"});
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[1]}})", "abcd", "c.st"),
               {"'w'", "data_offsets"});
  expect_error(make_file(dir, R"({"w":[1]})", "abcd", "d.st"), {"'w'", "object"});
}

TEST(SafetensorsCorrupt, OffsetsOutOfRange) {
  TempDir dir;
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd"),
               {"'w'", "out of range"});
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd", "b.st"),
               {"'w'", "out of range"});
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "abcd", "c.st"),
               {"'w'", "data_offsets"});
}

TEST(SafetensorsCorrupt, SizeNotMatchingShapeAndDtype) {
  TempDir dir;
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                         std::string(16, '\0')), {"'w'", "needs 12"});
  // A shape whose element count overflows 64 bits must not wrap around to a small size.
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})",
                         "", "b.st"), {"'w'"});
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                         "abcd", "c.st"), {"'w'", "shape"});
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  TempDir dir;
  expect_error(make_file(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         std::string(12, '\0')), {"'a'", "'b'", "overlap"});
}

TEST(SafetensorsCorrupt, UnknownDtype) {
  TempDir dir;
  expect_error(make_file(dir, R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", "abcd"),
               {"'w'", "unknown dtype 'F12'"});
}

TEST(SafetensorsCorrupt, DuplicateNameAndBadMetadata) {
  TempDir dir;
  expect_error(make_file(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd"),
               {"'w' twice"});
  expect_error(make_file(dir, R"({"__metadata__":{"format":1}})", "", "b.st"), {"__metadata__"});
}
