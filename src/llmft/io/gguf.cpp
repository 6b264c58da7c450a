// GGUF: the ggml types llmft handles, Q8_0 quantization, and the validating reader.
// Layout and checks as ggml's src/gguf.cpp (FACTS-phase2 §1a); tests/unit/io/test_gguf.cpp.
#include "llmft/io/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "llmft/core/error.h"
#include "llmft/io/safetensors.h"

namespace llmft {

static_assert(std::endian::native == std::endian::little, "GGUF files are little-endian");

namespace fs = std::filesystem;

namespace {

constexpr const char* kCorruptHint =
    "the file is damaged, truncated or not a GGUF model; export it again (llmft export)";
constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMaxName = 64;        // ggml's GGML_MAX_NAME (names are shorter)
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int64_t kQK8 = 32;             // values per Q8_0 block
constexpr uint64_t kQ8Block = 34;        // fp16 scale + 32 int8

// Reads little-endian values from the mapping; running out of bytes is an Error saying what was
// being read (`where`, set by the parser) and at which offset.
struct Cursor {
  const unsigned char* p;
  uint64_t size, pos = 0;
  const std::string& file;
  std::string where;

  uint64_t left() const { return size - pos; }
  void need(uint64_t n) const {
    if (n > left()) {
      throw Error(fmt::format("{}: truncated: {} needs {} bytes at offset {}, the file has {} left",
                              file, where, n, pos, left()),
                  kCorruptHint);
    }
  }
  template <typename T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str() {
    const auto n = get<uint64_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(p + pos), n);
    pos += n;
    return s;
  }
};

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kF64); }

// Bytes of one scalar of type t (0 for string and array).
uint64_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

bool is_float(GgufValueType t) { return t == GgufValueType::kF32 || t == GgufValueType::kF64; }

// One scalar (not string or array): integers and bools as int64, floats as double.
void read_scalar(Cursor& c, GgufValueType t, int64_t& i, double& f) {
  switch (t) {
    case GgufValueType::kU8:
      i = c.get<uint8_t>();
      return;
    case GgufValueType::kI8:
      i = c.get<int8_t>();
      return;
    case GgufValueType::kU16:
      i = c.get<uint16_t>();
      return;
    case GgufValueType::kI16:
      i = c.get<int16_t>();
      return;
    case GgufValueType::kU32:
      i = c.get<uint32_t>();
      return;
    case GgufValueType::kI32:
      i = c.get<int32_t>();
      return;
    case GgufValueType::kI64:
      i = c.get<int64_t>();
      return;
    case GgufValueType::kU64: {
      const auto u = c.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw Error(fmt::format("{}: {}: u64 value {} is out of range", c.file, c.where, u),
                    kCorruptHint);
      }
      i = static_cast<int64_t>(u);
      return;
    }
    case GgufValueType::kBool: {
      const auto b = c.get<uint8_t>();
      if (b > 1) {
        throw Error(fmt::format("{}: {}: bool byte is {}, expected 0 or 1", c.file, c.where, b),
                    kCorruptHint);
      }
      i = b;
      return;
    }
    case GgufValueType::kF32:
      f = c.get<float>();
      return;
    case GgufValueType::kF64:
      f = c.get<double>();
      return;
    default:
      throw InternalError("read_scalar: not a scalar type");
  }
}

GgufValue read_value(Cursor& c, GgufValueType type) {
  GgufValue v;
  v.type = type;
  if (type == GgufValueType::kString) {
    v.s = c.str();
    return v;
  }
  if (type != GgufValueType::kArray) {
    read_scalar(c, type, v.i, v.f);
    return v;
  }
  const auto elem = c.get<uint32_t>();
  if (!known_value_type(elem) || elem == static_cast<uint32_t>(GgufValueType::kArray)) {
    throw Error(fmt::format("{}: {}: invalid array element type {}{}", c.file, c.where, elem,
                            elem == static_cast<uint32_t>(GgufValueType::kArray)
                                ? " (nested arrays are not allowed)"
                                : ""),
                kCorruptHint);
  }
  v.elem = static_cast<GgufValueType>(elem);
  const auto n = c.get<uint64_t>();
  // Every element takes at least this many bytes: a count the file cannot hold is refused before
  // anything is allocated.
  const uint64_t min_bytes = v.elem == GgufValueType::kString ? 8 : scalar_size(v.elem);
  if (n > c.left() / min_bytes) {
    throw Error(fmt::format("{}: {}: array of {} elements cannot fit in the {} bytes left", c.file,
                            c.where, n, c.left()),
                kCorruptHint);
  }
  const auto count = static_cast<size_t>(n);
  if (v.elem == GgufValueType::kString) {
    v.strings.reserve(count);
    for (size_t k = 0; k < count; ++k) v.strings.push_back(c.str());
  } else if (is_float(v.elem)) {
    v.floats.resize(count);
    int64_t unused = 0;
    for (size_t k = 0; k < count; ++k) read_scalar(c, v.elem, unused, v.floats[k]);
  } else {
    v.ints.resize(count);
    double unused = 0;
    for (size_t k = 0; k < count; ++k) read_scalar(c, v.elem, v.ints[k], unused);
  }
  return v;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return "f32";
    case GgmlType::kF16:
      return "f16";
    case GgmlType::kQ8_0:
      return "q8_0";
  }
  return "?";
}

GgmlType parse_ggml_type(std::string_view name) {
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0})
    if (name == ggml_type_name(t)) return t;
  throw UsageError(fmt::format("unknown tensor type '{}'", name), "expected f32, f16 or q8_0");
}

int64_t ggml_block_size(GgmlType t) { return t == GgmlType::kQ8_0 ? kQK8 : 1; }

uint64_t ggml_bytes(GgmlType t, int64_t n) {
  LLMFT_CHECK(n >= 0 && n % ggml_block_size(t) == 0, "{} values of {}", n, ggml_type_name(t));
  const auto u = static_cast<uint64_t>(n);
  switch (t) {
    case GgmlType::kF32:
      return u * 4;
    case GgmlType::kF16:
      return u * 2;
    case GgmlType::kQ8_0:
      return u / kQK8 * kQ8Block;
  }
  return 0;
}

void quantize_q8_0(std::span<const float> x, std::span<unsigned char> out) {
  const auto n = static_cast<int64_t>(x.size());
  LLMFT_CHECK(out.size() == ggml_bytes(GgmlType::kQ8_0, n), "q8_0 output of {} bytes for {} values",
              out.size(), n);
  for (int64_t b = 0; b < n / kQK8; ++b) {
    const float* v = x.data() + b * kQK8;
    float amax = 0.0f;
    for (int64_t j = 0; j < kQK8; ++j) amax = std::max(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    unsigned char* blk = out.data() + b * kQ8Block;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(blk, &dh, 2);
    for (int64_t j = 0; j < kQK8; ++j) {
      blk[2 + j] = static_cast<unsigned char>(static_cast<int8_t>(std::lround(v[j] * id)));
    }
  }
}

const char* gguf_value_type_name(GgufValueType t) {
  static constexpr const char* kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                           "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "?";
}

GgufFile::GgufFile(const fs::path& path) : path_(path), file_(path) {
  const std::string p = path.string();
  Cursor c{file_.bytes().data(), file_.bytes().size(), 0, p, "the header"};
  if (c.size < 4 || c.get<uint32_t>() != kMagic) {
    throw Error(fmt::format("{}: not a GGUF file (it does not start with \"GGUF\")", p),
                "llmft reads GGUF files that llmft export or llama.cpp's converter wrote");
  }
  version_ = c.get<uint32_t>();
  if ((version_ & 0xFFFF) == 0) {
    throw Error(
        fmt::format("{}: GGUF version {:#x} looks byte-swapped: a big-endian file", p, version_),
        "llmft reads little-endian GGUF files");
  }
  if (version_ < 2 || version_ > 3) {
    throw Error(fmt::format("{}: GGUF version {} is not supported (llmft reads versions 2 and 3)",
                            p, version_),
                kCorruptHint);
  }
  const auto n_tensors = c.get<uint64_t>();
  const auto n_kv = c.get<uint64_t>();
  // The smallest key-value pair is 14 bytes (8 length + 1 key byte + 4 type + 1 value byte), the
  // smallest tensor info 33 (8 + 1 name byte + 4 n_dims + 8 one dim + 4 type + 8 offset).
  if (n_kv > c.left() / 14) {
    throw Error(
        fmt::format("{}: {} metadata entries cannot fit in a {}-byte file", p, n_kv, c.size),
        kCorruptHint);
  }
  if (n_tensors > c.left() / 33) {
    throw Error(fmt::format("{}: {} tensors cannot fit in a {}-byte file", p, n_tensors, c.size),
                kCorruptHint);
  }
  for (uint64_t k = 0; k < n_kv; ++k) {
    c.where = fmt::format("metadata entry {} of {}", k, n_kv);
    std::string key = c.str();
    if (key.empty()) {
      throw Error(fmt::format("{}: {} has an empty key", p, c.where), kCorruptHint);
    }
    if (kv_.count(key)) {
      throw Error(fmt::format("{}: metadata key '{}' appears twice", p, key), kCorruptHint);
    }
    c.where = fmt::format("metadata '{}'", key);
    const auto type = c.get<uint32_t>();
    if (!known_value_type(type)) {
      throw Error(fmt::format("{}: {} has invalid value type {}", p, c.where, type), kCorruptHint);
    }
    kv_.emplace(std::move(key), read_value(c, static_cast<GgufValueType>(type)));
  }
  if (const GgufValue* a = find_kv("general.alignment")) {
    if (a->type != GgufValueType::kU32 || a->i == 0 || !std::has_single_bit(uint64_t(a->i))) {
      throw Error(fmt::format("{}: general.alignment must be a u32 power of two, got {} {}", p,
                              gguf_value_type_name(a->type),
                              a->type == GgufValueType::kString ? a->s : std::to_string(a->i)),
                  kCorruptHint);
    }
    alignment_ = static_cast<uint32_t>(a->i);
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    c.where = fmt::format("tensor info {} of {}", k, n_tensors);
    GgufTensor t;
    t.name = c.str();
    if (t.name.empty() || t.name.size() >= kMaxName) {
      throw Error(fmt::format("{}: {} has a name of {} bytes, expected 1 to {}", p, c.where,
                              t.name.size(), kMaxName - 1),
                  kCorruptHint);
    }
    if (find(t.name)) {
      throw Error(fmt::format("{}: tensor '{}' appears twice", p, t.name), kCorruptHint);
    }
    c.where = fmt::format("tensor '{}'", t.name);
    const auto n_dims = c.get<uint32_t>();
    if (n_dims < 1 || n_dims > kMaxDims) {
      throw Error(
          fmt::format("{}: {} has {} dimensions, expected 1 to {}", p, c.where, n_dims, kMaxDims),
          kCorruptHint);
    }
    t.numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = c.get<uint64_t>();
      // 2^40 values per dimension and 2^50 in all are far beyond any file that can exist.
      // (Divided, not multiplied: numel * ne itself can overflow.)
      if (ne == 0 || ne > (uint64_t(1) << 40) ||
          ne > (uint64_t(1) << 50) / static_cast<uint64_t>(t.numel)) {
        throw Error(
            fmt::format("{}: {} has an impossible dimension ne[{}] = {}", p, c.where, d, ne),
            kCorruptHint);
      }
      t.ne.push_back(static_cast<int64_t>(ne));
      t.numel *= static_cast<int64_t>(ne);
    }
    const auto type = c.get<uint32_t>();
    if (type != 0 && type != 1 && type != 8) {
      throw Error(fmt::format("{}: {} has ggml type {}; llmft reads f32 (0), f16 (1) and q8_0 (8)",
                              p, c.where, type),
                  "export the model again with --type f32, f16 or q8_0");
    }
    t.type = static_cast<GgmlType>(type);
    if (t.ne[0] % ggml_block_size(t.type) != 0) {
      throw Error(fmt::format("{}: {} is {} but its rows of {} values are not a multiple of the "
                              "block size {}",
                              p, c.where, ggml_type_name(t.type), t.ne[0], ggml_block_size(t.type)),
                  kCorruptHint);
    }
    t.bytes = ggml_bytes(t.type, t.numel);
    t.offset = c.get<uint64_t>();
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment; each tensor exactly where the
  // previous one ends, rounded up to the alignment (ggml's reader insists on the same).
  const uint64_t data_start = align_up(c.pos, alignment_);
  if (data_start > c.size) {
    throw Error(fmt::format("{}: truncated: the data section would start at byte {} of {}", p,
                            data_start, c.size),
                kCorruptHint);
  }
  const uint64_t data_size = c.size - data_start;
  uint64_t expected = 0;
  for (const GgufTensor& t : tensors_) {
    if (t.offset != expected) {
      throw Error(fmt::format("{}: tensor '{}' has offset {}, expected {} (the previous tensor's "
                              "end aligned to {})",
                              p, t.name, t.offset, expected, alignment_),
                  kCorruptHint);
    }
    if (t.bytes > data_size - t.offset || t.offset > data_size) {
      throw Error(fmt::format("{}: truncated: tensor '{}' needs bytes {} to {} of the data "
                              "section, which has {}",
                              p, t.name, t.offset, t.offset + t.bytes, data_size),
                  kCorruptHint);
    }
    expected = align_up(t.offset + t.bytes, alignment_);
  }
  data_ = c.p + data_start;
  file_.advise_sequential();
}

const GgufTensor* GgufFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const GgufValue* GgufFile::find_kv(const std::string& key) const {
  const auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::get(const std::string& key, GgufValueType type) const {
  const GgufValue* v = find_kv(key);
  if (!v) {
    throw Error(fmt::format("{}: metadata key '{}' is missing", path_.string(), key),
                "export the model again with llmft export");
  }
  if (v->type != type) {
    throw Error(fmt::format("{}: metadata '{}' has type {}, expected {}", path_.string(), key,
                            gguf_value_type_name(v->type), gguf_value_type_name(type)),
                kCorruptHint);
  }
  return *v;
}

uint32_t GgufFile::get_u32(const std::string& key) const {
  return static_cast<uint32_t>(get(key, GgufValueType::kU32).i);
}
float GgufFile::get_f32(const std::string& key) const {
  return static_cast<float>(get(key, GgufValueType::kF32).f);
}
const std::string& GgufFile::get_string(const std::string& key) const {
  return get(key, GgufValueType::kString).s;
}
const std::vector<std::string>& GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = get(key, GgufValueType::kArray);
  if (v.elem != GgufValueType::kString) {
    throw Error(fmt::format("{}: metadata '{}' is an array of {}, expected strings", path_.string(),
                            key, gguf_value_type_name(v.elem)),
                kCorruptHint);
  }
  return v.strings;
}

void GgufFile::read_f32(const GgufTensor& t, std::span<float> out) const {
  LLMFT_CHECK(static_cast<int64_t>(out.size()) == t.numel, "output of {} floats for '{}' ({})",
              out.size(), t.name, t.numel);
  const unsigned char* src = data_ + t.offset;
  const auto n = static_cast<size_t>(t.numel);
  switch (t.type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), src, n * 4);
      break;
    case GgmlType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      break;
    case GgmlType::kQ8_0:
      for (size_t b = 0; b < n / kQK8; ++b) {
        const unsigned char* blk = src + b * kQ8Block;
        uint16_t dh;
        std::memcpy(&dh, blk, 2);
        const float d = f16_to_f32(dh);
        for (size_t j = 0; j < kQK8; ++j) {
          out[b * kQK8 + j] = static_cast<float>(static_cast<int8_t>(blk[2 + j])) * d;
        }
      }
      break;
  }
  file_.release(src, t.bytes);
}

}  // namespace llmft
