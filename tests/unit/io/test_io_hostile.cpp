// Hostile model files (issue 16): a safetensors header or config.json nested 100,000 deep, a
// config.json that claims 10^9 layers, a model.safetensors that is a FIFO, NaN weights. Each is one
// Error naming the file, before anything large is allocated and without blocking.
#include <sys/stat.h>

#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/safetensors.h"
#include "llmft/model/gpt2.h"
#include "test_util.h"

using namespace llmft;
using llmft::test::TempDir;
namespace fs = std::filesystem;

namespace {

Gpt2Config tiny() {
  Gpt2Config c;
  c.V = 11, c.maxT = 8, c.C = 8, c.L = 2, c.NH = 2;
  return c;
}

// A valid tiny model folder (all weights 0.5).
fs::path tiny_folder(const TempDir& dir) {
  const Gpt2Config cfg = tiny();
  const ParamTable table(cfg);
  std::vector<float> p(static_cast<size_t>(table.total()), 0.5f);
  write_hf_folder(dir / "m", cfg, table, p);
  return dir / "m";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string deep(int n) { return std::string(n, '[') + std::string(n, ']'); }

}  // namespace

TEST(IoHostile, SafetensorsHeaderNestedDeep) {
  TempDir dir;
  const std::string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":" + deep(100000) + "}}";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  write_file_atomic(dir / "x.safetensors", bytes + header);
  EXPECT_EQ(error_of([&] { SafetensorsFile f(dir / "x.safetensors"); }),
            (dir / "x.safetensors").string() +
                ": header: JSON nested deeper than 256 levels at line 1, column 283");
}

TEST(IoHostile, ConfigNestedDeep) {
  EXPECT_EQ(error_of([] { parse_hf_config("{\"n_layer\": " + deep(100000) + "}", "m/config.json"); }),
            "m/config.json: JSON nested deeper than 256 levels at line 1, column 268");
}

TEST(IoHostile, ConfigLargerThanItsWeightsIsRefusedBeforeAllocating) {
  TempDir dir;
  const fs::path m = tiny_folder(dir);
  auto j = nlohmann::json::parse(read_file(m / "config.json"));
  j["n_layer"] = 1000000000;
  write_file_atomic(m / "config.json", j.dump());
  const std::string err = error_of([&] { read_hf_folder(m); });
  EXPECT_EQ(err.rfind((m / "config.json").string() + ": L=1000000000 C=8 NH=2 V=11 maxT=8 untied "
                      "makes 8.72e+11 parameters, more than " + (m / "model.safetensors").string(), 0),
            0u)
      << err;
  // The real size loads.
  EXPECT_EQ(error_of([&] {
              j["n_layer"] = 2;
              write_file_atomic(m / "config.json", j.dump());
              read_hf_folder(m);
            }),
            "");
}

TEST(IoHostile, FifoModelFileIsRefusedWithoutBlocking) {
  TempDir dir;
  const fs::path m = tiny_folder(dir);
  fs::remove(m / "model.safetensors");
  ASSERT_EQ(::mkfifo((m / "model.safetensors").c_str(), 0600), 0);
  EXPECT_EQ(error_of([&] { read_hf_folder(m); }),
            (m / "model.safetensors").string() + ": not a regular file");
  EXPECT_EQ(error_of([&] { SafetensorsFile f(m / "model.safetensors"); }),
            (m / "model.safetensors").string() + ": not a regular file");
}

TEST(IoHostile, NanWeightsAreRefusedAtLoad) {
  TempDir dir;
  const Gpt2Config cfg = tiny();
  const ParamTable table(cfg);
  std::vector<float> p(static_cast<size_t>(table.total()), 0.5f);
  table.view(std::span<float>(p), *table.find("h.1.attn.c_proj.weight"))[5] =
      std::numeric_limits<float>::quiet_NaN();
  write_hf_folder(dir / "m", cfg, table, p);
  EXPECT_EQ(error_of([&] { read_hf_folder(dir / "m"); }),
            (dir / "m" / "model.safetensors").string() +
                ": tensor 'transformer.h.1.attn.c_proj.weight' holds NaN at element 5 (of 64)");
  table.view(std::span<float>(p), *table.find("h.1.attn.c_proj.weight"))[5] =
      -std::numeric_limits<float>::infinity();
  write_hf_folder(dir / "m", cfg, table, p);
  EXPECT_NE(error_of([&] { read_hf_folder(dir / "m"); }).find("holds an infinity at element 5"),
            std::string::npos);
}

TEST(IoHostile, EmptyTensorReadsIntoAnEmptySpan) {
  // Found by fuzz_safetensors (UBSan): read_f32 passed the empty output's null data() to memcpy.
  TempDir dir;
  write_safetensors(dir / "e.safetensors", {{"e", {0, 4}, {}}});
  const SafetensorsFile f(dir / "e.safetensors");
  std::vector<float> out;
  EXPECT_NO_THROW(f.read_f32(*f.find("e"), out));
  EXPECT_TRUE(out.empty());
}
