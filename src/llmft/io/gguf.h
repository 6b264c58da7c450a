// GGUF v3, llama.cpp's model file (ggml docs/gguf.md): a reader that validates every count,
// offset, type and alignment against the file before anything is used (files come from the
// internet), and GPT-2 in and out of it for llama.cpp's "gpt2" architecture, laid out as
// llama.cpp's convert_hf_to_gguf.py writes it (tensor names: model/params.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/core/io.h"
#include "llmft/model/config.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/params.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

// The ggml tensor types llmft writes and reads (ggml.h's numbers).
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8 };
const char* ggml_type_name(GgmlType t);  // "f32", "f16", "q8_0"
// "f32", "f16" or "q8_0"; UsageError otherwise.
GgmlType parse_ggml_type(std::string_view name);
// Values per block: 1, or 32 for q8_0 (a block is an fp16 scale and 32 int8 values, 34 bytes).
int64_t ggml_block_size(GgmlType t);
// Bytes of n values; n a multiple of the block size.
uint64_t ggml_bytes(GgmlType t, int64_t n);
// Q8_0 as ggml's quantize_row_q8_0_ref: per 32 values d = max|x| / 127 stored as fp16,
// q = round(x / d). x: (n), n a multiple of 32; out: ggml_bytes(kQ8_0, n) bytes.
void quantize_q8_0(std::span<const float> x, std::span<unsigned char> out);

// GGUF metadata value types (gguf.h's numbers).
enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);  // "u32", "string", "array", ...

// One metadata value. Scalars: integers in `i` (u64 values above INT64_MAX are rejected), floats
// in `f`, bools in `i` (0/1), strings in `s`. Arrays: `elem` and one of `strings`, `ints`,
// `floats` by element type.
struct GgufValue {
  GgufValueType type = GgufValueType::kU32;
  GgufValueType elem = GgufValueType::kU8;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::vector<std::string> strings;
  std::vector<int64_t> ints;
  std::vector<double> floats;
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous dimension
  GgmlType type = GgmlType::kF32;
  int64_t numel = 0;
  uint64_t offset = 0, bytes = 0;  // within the data section
};

// A validated, memory-mapped GGUF file (version 2 or 3; v3 is v2 plus big-endian files, which
// are refused). The constructor checks what ggml's own reader checks, and then some: the magic
// and version; every count against the bytes left in the file (before anything is allocated);
// keys unique and non-empty; known value types, no nested arrays; general.alignment a u32 power
// of two; tensor names unique and under 64 bytes, 1 to 4 positive dimensions, a type llmft reads
// (f32, f16, q8_0), ne[0] a multiple of the block size, each offset exactly the previous
// tensor's end rounded up to the alignment, and every tensor inside the file. Every error is one
// line naming the file, what is wrong and where.
class GgufFile {
 public:
  explicit GgufFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in file order
  const GgufTensor* find(const std::string& name) const;               // nullptr when absent

  // Typed metadata access: Error naming the file and key when it is missing or of another type.
  const GgufValue& get(const std::string& key, GgufValueType type) const;
  const GgufValue* find_kv(const std::string& key) const;  // nullptr when absent
  uint32_t get_u32(const std::string& key) const;
  float get_f32(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_string_array(const std::string& key) const;

  // One tensor's values as fp32 (f16 converted exactly, q8_0 dequantized as ggml does).
  // out.size() must equal t.numel.
  void read_f32(const GgufTensor& t, std::span<float> out) const;

 private:
  std::filesystem::path path_;
  MappedFile file_;
  uint32_t version_ = 0, alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensor> tensors_;
  const unsigned char* data_ = nullptr;  // start of the data section (inside the mapping)
};

// ---- GPT-2 <-> GGUF ------------------------------------------------------------------------

struct GgufExportOptions {
  GgmlType type = GgmlType::kF16;  // of the 2-D weights; 1-D tensors and position_embd stay f32
  std::string name;                // general.name
  // Called after each tensor with the bytes of tensor data written so far and the total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct GgufExportSummary {
  uint64_t file_bytes = 0;
  std::map<GgmlType, int64_t> tensors;  // how many tensors of each type
  int64_t f16_fallbacks = 0;  // q8_0 asked for, but ne[0] is not a multiple of 32: written f16
};

// Writes `params` (laid out by `table`) and the tokenizer as a GGUF v3 file for llama.cpp's gpt2
// architecture, atomically (temporary file + rename). As llama.cpp's converter: 1-D tensors and
// position_embd in f32, the other weights in opts.type (q8_0 falls back to f16 for a tensor whose
// rows are not a multiple of 32), Conv1D weights transposed to nn.Linear layout, output.weight
// written unless the head is tied; the metadata keys and value types llama.cpp insists on (u32
// counts, f32 epsilon), the tokenizer as tokenizer.ggml.{model "gpt2", pre "gpt-2", tokens,
// token_type, merges, bos/eos ids, add_bos_token false}. Throws Error when the tokenizer's size is
// not the model's vocabulary size.
GgufExportSummary write_gpt2_gguf(const std::filesystem::path& path, const ParamTable& table,
                                  std::span<const float> params, const BpeVocabStrings& vocab,
                                  const GgufExportOptions& opts);

struct Gpt2Gguf {
  Gpt2 model;
  BpeVocabStrings vocab;           // tokenizer.ggml.tokens and .merges
  GgmlType type = GgmlType::kF32;  // general.file_type, as the type of its 2-D weights
};

// Reads a GGUF of llama.cpp's gpt2 architecture into llmft's model (fp32; f16 exact, q8_0
// dequantized). Throws Error naming the file when the architecture, a hyperparameter, a tensor
// (missing, unexpected, wrongly shaped) or the tokenizer metadata does not fit.
Gpt2Gguf read_gpt2_gguf(const std::filesystem::path& path);
Gpt2Config gpt2_config_from_gguf(const GgufFile& f);

// An Ollama Modelfile for the exported file: FROM ./<gguf_file_name>, the prompt template (text
// with "{{ .Prompt }}" where the instruction goes), stop at <|endoftext|>, the context length.
std::string ollama_modelfile(const std::string& gguf_file_name, std::string_view prompt_template,
                             int64_t context_length);

}  // namespace llmft
