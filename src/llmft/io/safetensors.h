// safetensors (SPEC §5): 8-byte little-endian header length N, N bytes of JSON header, raw data.
// The reader validates every header entry against the file before any data is read (files come
// from the internet) and maps the file instead of copying it (gpt2-xl is 6 GB).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "llmft/model/params.h"
#include "llmft/core/io.h"

namespace llmft {

enum class Dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2 };

const char* dtype_name(Dtype d);  // "F32"
size_t dtype_size(Dtype d);       // bytes per element

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  uint64_t begin = 0, end = 0;  // byte offsets into the data region
};

// A validated, memory-mapped safetensors file. Every error names the file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in header order
  const TensorInfo* find(const std::string& name) const;               // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Converts one tensor to fp32 (F32 copied, F16/BF16/F64 converted exactly or rounded to
  // nearest for F64). out.size() must equal t.numel. Throws Error for integer/fp8 dtypes.
  void read_f32(const TensorInfo& t, std::span<float> out) const;

 private:
  std::filesystem::path path_;
  MappedFile file_;
  const unsigned char* data_ = nullptr;  // start of the data region (inside map_)
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: fp32 data of product(shape) floats.
struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  std::span<const float> data;
};

// Writes an F32 safetensors file atomically (temporary file + rename). Tensors are laid out in the
// given order, contiguously, the header padded with spaces to a multiple of 8 bytes (as the Rust
// safetensors library does, so the data is 8-byte aligned).
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Throws Error naming `file`, `tensor` and the element when `values` holds a NaN or an infinity:
// weights that would make every loss and every sampled token NaN are refused when they are loaded.
void require_finite(const std::string& file, const std::string& tensor,
                    std::span<const float> values);

// The tensors of `table` in `flat`, each named prefix + table.file_name(spec), for
// write_safetensors.
std::vector<TensorToWrite> table_tensors(const TensorTable& table, std::span<const float> flat,
                                         const std::string& prefix = "");
// Reads every tensor of `table` (named as table_tensors names them) from `st` into `flat`. Throws
// Error naming the file and tensor when one is missing or has another shape.
void read_table(const SafetensorsFile& st, const TensorTable& table, std::span<float> flat,
                const std::string& prefix = "");

// Exact IEEE conversions (F16 subnormals, infinities and NaNs included).
float f16_to_f32(uint16_t h);
// Rounds to the nearest F16, ties to even (as F16C's vcvtps2ph and numpy's astype(float16)):
// overflow gives infinity, NaN stays NaN.
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t b);

}  // namespace llmft
