#include "llmft/io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <tuple>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"

namespace llmft {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The Rust safetensors library refuses headers over 100 MB; a GPT-2 header is ~20 kB.
constexpr uint64_t kMaxHeader = 100'000'000;
const char* kCorruptHint = "the file is truncated or corrupt: download or export it again";

struct DtypeEntry {
  const char* name;
  Dtype dtype;
  size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", Dtype::F64, 8},   {"F32", Dtype::F32, 4},   {"F16", Dtype::F16, 2},
    {"BF16", Dtype::BF16, 2}, {"I64", Dtype::I64, 8},   {"I32", Dtype::I32, 4},
    {"I16", Dtype::I16, 2},   {"I8", Dtype::I8, 1},     {"U64", Dtype::U64, 8},
    {"U32", Dtype::U32, 4},   {"U16", Dtype::U16, 2},   {"U8", Dtype::U8, 1},
    {"BOOL", Dtype::BOOL, 1}, {"F8_E4M3", Dtype::F8_E4M3, 1}, {"F8_E5M2", Dtype::F8_E5M2, 1},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

// A non-negative JSON integer, or nullopt.
std::optional<uint64_t> as_index(const nlohmann::ordered_json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

}  // namespace

const char* dtype_name(Dtype d) {
  for (const auto& e : kDtypes)
    if (e.dtype == d) return e.name;
  return "?";
}

size_t dtype_size(Dtype d) {
  for (const auto& e : kDtypes)
    if (e.dtype == d) return e.size;
  return 0;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal: value = mant * 2^-24. Normalise the mantissa.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400) == 0);
    bits = sign | uint32_t(127 - 15 - e) << 23 | ((mant & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
  // F. Giesen's float_to_half_fast3_rtne: the hardware's own round-to-nearest-even does the work.
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00 | static_cast<uint16_t>((a >> 13) & 0x3ff);  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 (the midpoint above 65504): infinity
  if (a < 0x38800000u) {
    // Below F16's smallest normal: adding 0.5f rounds at 2^-24, F16's subnormal step.
    const float v = std::bit_cast<float>(a) + 0.5f;
    return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(v) - 0x3f000000u);
  }
  const uint32_t odd = (a >> 13) & 1;
  a += (uint32_t(15 - 127) << 23) + 0xfff + odd;  // rebias the exponent, round half to even
  return sign | static_cast<uint16_t>(a >> 13);
}

float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

namespace {

using ojson = nlohmann::ordered_json;

// The header's length (the file's first 8 bytes), checked against the file size.
uint64_t header_length(const std::string& p, const unsigned char* map, uint64_t size) {
  if (size < 8) {
    throw Error(fmt::format("{}: not a safetensors file: {} bytes, shorter than the 8-byte header "
                            "length", p, size), kCorruptHint);
  }
  uint64_t n = 0;
  std::memcpy(&n, map, 8);
  if (n > size - 8) {
    throw Error(fmt::format("{}: header length {} runs past the end of the file ({} bytes)", p,
                            n, size), kCorruptHint);
  }
  if (n > kMaxHeader) {
    throw Error(fmt::format("{}: header length {} is absurd (limit {} bytes)", p, n, kMaxHeader),
                kCorruptHint);
  }
  return n;
}

// The header JSON: an object without duplicate top-level names, in the file's order.
ojson parse_header(const std::string& p, std::string_view text) {
  // Duplicate top-level names would silently shadow each other in the parsed object.
  std::set<std::string> seen;
  std::string duplicate;
  ojson header;  // keeps the file's order for tensors()
  check_json_limits(text, p + ": header");
  try {
    header = ojson::parse(text, [&](int depth, json::parse_event_t ev, ojson& v) {
      if (ev == json::parse_event_t::key && depth == 1 && !seen.insert(v.get<std::string>()).second)
        duplicate = v.get<std::string>();
      return true;
    });
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("{}: header: {}", p, describe_json_error(text, e)), kCorruptHint);
  } catch (const json::exception&) {
    throw Error(fmt::format("{}: header is not valid JSON", p), kCorruptHint);
  }
  if (!header.is_object()) {
    throw Error(fmt::format("{}: header is JSON {} but must be an object", p, header.type_name()),
                kCorruptHint);
  }
  if (!duplicate.empty()) {
    throw Error(fmt::format("{}: header names tensor '{}' twice", p, duplicate), kCorruptHint);
  }
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& p, const ojson& v) {
  if (!v.is_object()) {
    throw Error(fmt::format("{}: __metadata__ must be an object", p), kCorruptHint);
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [mk, mv] : v.items()) {
    if (!mv.is_string()) {
      throw Error(fmt::format("{}: __metadata__ entry '{}' must be a string", p, mk), kCorruptHint);
    }
    metadata[mk] = mv.get<std::string>();
  }
  return metadata;
}

// One header entry: dtype, shape and data_offsets, whose byte range must fit the data region
// (`data_size` bytes) and hold exactly the shape's elements.
TensorInfo parse_tensor(const std::string& p, const std::string& key, const ojson& v,
                        uint64_t data_size) {
  const auto bad = [&](const std::string& why) {
    return Error(fmt::format("{}: tensor '{}': {}", p, key, why), kCorruptHint);
  };
  if (!v.is_object()) throw bad("entry must be an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) throw bad(fmt::format("missing field '{}'", field));
  TensorInfo t;
  t.name = key;
  if (!v["dtype"].is_string()) throw bad("dtype must be a string");
  const auto* dt = find_dtype(v["dtype"].get<std::string>());
  if (!dt) throw bad(fmt::format("unknown dtype '{}'", v["dtype"].get<std::string>()));
  t.dtype = dt->dtype;
  if (!v["shape"].is_array()) throw bad("shape must be an array");
  // numel * dtype size must fit the data region; reject anything larger before multiplying on.
  uint64_t numel = 1;
  bool too_big = false;
  for (const auto& d : v["shape"]) {
    const auto dim = as_index(d);
    if (!dim) {
      throw bad(fmt::format("shape {} has a dimension that is not a non-negative integer",
                            v["shape"].dump()));
    }
    t.shape.push_back(static_cast<int64_t>(*dim));
    if (*dim == 0) {
      numel = 0;
    } else if (numel != 0) {
      if (*dim > data_size || numel > data_size / *dim) too_big = true;
      else numel *= *dim;
    }
  }
  if (numel == 0) too_big = false;
  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !as_index(off[0]) || !as_index(off[1])) {
    throw bad("data_offsets must be [begin, end] with non-negative integers");
  }
  t.begin = *as_index(off[0]);
  t.end = *as_index(off[1]);
  if (t.begin > t.end || t.end > data_size) {
    throw bad(fmt::format("data_offsets [{}, {}] out of range (data region is {} bytes)",
                          t.begin, t.end, data_size));
  }
  if (too_big || numel * dt->size != t.end - t.begin) {
    const std::string needs =
        too_big ? std::string("more than the file") : std::to_string(numel * dt->size);
    throw bad(fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}",
                          t.begin, t.end, t.end - t.begin, v["shape"].dump(), dt->name, needs));
  }
  t.numel = static_cast<int64_t>(numel);
  return t;
}

// No two tensors may share bytes (gaps are allowed).
void check_no_overlap(const std::string& p, const std::vector<TensorInfo>& tensors) {
  std::vector<const TensorInfo*> order;
  for (const auto& t : tensors)
    if (t.end > t.begin) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i]->begin < order[i - 1]->end) {
      throw Error(fmt::format("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", p,
                              order[i - 1]->name, order[i - 1]->begin, order[i - 1]->end,
                              order[i]->name, order[i]->begin, order[i]->end), kCorruptHint);
    }
  }
}

}  // namespace

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path), file_(path) {
  const std::string p = path.string();
  const unsigned char* map_ = file_.bytes().data();
  const uint64_t map_size_ = file_.bytes().size();
  {
    const uint64_t n = header_length(p, map_, map_size_);
    data_ = map_ + 8 + n;
    const uint64_t data_size = map_size_ - 8 - n;
    const ojson header =
        parse_header(p, std::string_view(reinterpret_cast<const char*>(map_ + 8), n));
    for (const auto& [key, v] : header.items()) {
      if (key == "__metadata__") {
        metadata_ = parse_metadata(p, v);
      } else {
        tensors_.push_back(parse_tensor(p, key, v, data_size));
      }
    }
    check_no_overlap(p, tensors_);
    file_.advise_sequential();
  }
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void SafetensorsFile::read_f32(const TensorInfo& t, std::span<float> out) const {
  LLMFT_CHECK(out.size() == static_cast<size_t>(t.numel), "{}: {} floats for {} elements", t.name,
              out.size(), t.numel);
  const unsigned char* src = data_ + t.begin;
  const size_t n = out.size();
  if (n == 0) return;  // an empty tensor: out.data() may be null, which memcpy must not get
  switch (t.dtype) {
    case Dtype::F32:
      std::memcpy(out.data(), src, n * 4);
      break;
    case Dtype::F16:
    case Dtype::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = t.dtype == Dtype::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      break;
    case Dtype::F64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      break;
    default:
      throw Error(fmt::format("{}: tensor '{}' has dtype {}, expected a float type (F32, F16, BF16, "
                              "F64)", path_.string(), t.name, dtype_name(t.dtype)),
                  "convert the checkpoint to floating point");
  }
  // The converted copy is what we keep: let the kernel drop the mapped pages (RSS stays ~1x).
  file_.release(src, t.end - t.begin);
}

void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const int64_t numel = std::accumulate(t.shape.begin(), t.shape.end(), int64_t{1},
                                          std::multiplies<int64_t>());
    LLMFT_CHECK(static_cast<size_t>(numel) == t.data.size(), "{}: shape has {} elements, data {}",
                t.name, numel, t.data.size());
    LLMFT_CHECK(!header.contains(t.name), "tensor {} written twice", t.name);
    const uint64_t bytes = static_cast<uint64_t>(numel) * 4;
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  write_file_atomic(path, [&](std::ostream& out) {
    const uint64_t n = text.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : tensors) {
      out.write(reinterpret_cast<const char*>(t.data.data()),
                static_cast<std::streamsize>(t.data.size() * 4));
    }
  });
}

std::vector<TensorToWrite> table_tensors(const TensorTable& table, std::span<const float> flat,
                                         const std::string& prefix) {
  LLMFT_CHECK(static_cast<int64_t>(flat.size()) >= table.total(), "buffer of {} floats, need {}",
              flat.size(), table.total());
  std::vector<TensorToWrite> out;
  for (const auto& s : table.specs())
    out.push_back({prefix + table.file_name(s), s.shape, table.view(flat, s)});
  return out;
}

void read_table(const SafetensorsFile& st, const TensorTable& table, std::span<float> flat,
                const std::string& prefix) {
  LLMFT_CHECK(static_cast<int64_t>(flat.size()) >= table.total(), "buffer of {} floats, need {}",
              flat.size(), table.total());
  for (const auto& spec : table.specs()) {
    const std::string name = prefix + table.file_name(spec);
    const TensorInfo* t = st.find(name);
    if (!t || t->shape != spec.shape) {
      throw Error(fmt::format("{}: tensor '{}' is {}", st.path().string(), name,
                              t ? "of another shape than expected" : "missing"),
                  "the file does not belong to this model");
    }
    st.read_f32(*t, table.view(flat, spec));
    require_finite(st.path().string(), name, table.view(std::span<const float>(flat), spec));
  }
}

void require_finite(const std::string& file, const std::string& tensor,
                    std::span<const float> values) {
  bool finite = true;
  for (const float x : values) finite &= std::isfinite(x);  // no early exit: vectorises
  if (finite) return;
  size_t i = 0;
  while (std::isfinite(values[i])) ++i;
  throw Error(fmt::format("{}: tensor '{}' holds {} at element {} (of {})", file, tensor,
                          std::isnan(values[i]) ? "NaN" : "an infinity", i, values.size()),
              "the weights are damaged, or come from a run that diverged; use another copy");
}

}  // namespace llmft
