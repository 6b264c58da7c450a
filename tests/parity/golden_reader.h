// A tiny safetensors reader for the golden files of tests/reference/*.py (F32 and I32 only).
// Independent of the io module on purpose: the parity tests must not trust what they test.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmft/model/config.h"

namespace llmft::test {

class Golden {
 public:
  explicit Golden(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open golden file " + path.string());
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (bytes.size() < 8) throw std::runtime_error("golden file too short");
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    if (8 + n > bytes.size()) throw std::runtime_error("golden header runs past the file");
    const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n);
    const size_t base = 8 + n;
    for (const auto& [name, e] : header.items()) {
      if (name == "__metadata__") continue;
      Entry t;
      t.dtype = e.at("dtype").get<std::string>();
      t.shape = e.at("shape").get<std::vector<int64_t>>();
      const auto off = e.at("data_offsets").get<std::vector<size_t>>();
      if (off.size() != 2 || off[1] < off[0] || base + off[1] > bytes.size())
        throw std::runtime_error("bad offsets for " + name);
      t.raw.assign(bytes.begin() + base + off[0], bytes.begin() + base + off[1]);
      entries_[name] = std::move(t);
    }
  }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<float> f32(const std::string& name) const { return get<float>(name, "F32"); }
  std::vector<int32_t> i32(const std::string& name) const { return get<int32_t>(name, "I32"); }
  const std::vector<int64_t>& shape(const std::string& name) const { return at(name).shape; }

 private:
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<char> raw;
  };
  const Entry& at(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw std::runtime_error("golden file has no tensor " + name);
    return it->second;
  }
  template <typename T>
  std::vector<T> get(const std::string& name, const char* dtype) const {
    const Entry& e = at(name);
    if (e.dtype != dtype) throw std::runtime_error(name + " is " + e.dtype + ", not " + dtype);
    std::vector<T> v(e.raw.size() / sizeof(T));
    std::memcpy(v.data(), e.raw.data(), v.size() * sizeof(T));
    return v;
  }
  std::map<std::string, Entry> entries_;
};

// The model of a golden file: its "config" tensor starts with V, maxT, C, L, NH (the reference
// scripts' write order).
inline Gpt2Config golden_config(const Golden& g, bool tied) {
  const auto c = g.i32("config");
  Gpt2Config cfg;
  cfg.V = c[0];
  cfg.maxT = c[1];
  cfg.C = c[2];
  cfg.L = c[3];
  cfg.NH = c[4];
  cfg.tied = tied;
  return cfg;
}

}  // namespace llmft::test
