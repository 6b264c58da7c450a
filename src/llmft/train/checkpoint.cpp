#include "llmft/train/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdio>
#include <future>
#include <random>
#include <utility>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/safetensors.h"
#include "llmft/io/sha256.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr int kFormatVersion = 1;
// The files whose sha256 state.json records (state.json itself is parsed and range-checked).
constexpr size_t kNumHashed = 3;
const char* const kHashedFiles[kNumHashed] = {"model.safetensors", "optimizer.safetensors",
                                              "metrics.jsonl"};

// The sha256 of each of kHashedFiles in `dir`, one thread per file (the optimizer state, 2/3 of
// the bytes, sets the time). A file that cannot be read gives its Error's message prefixed by '!'.
std::array<std::string, kNumHashed> hash_checkpoint_files(const fs::path& dir) {
  std::array<std::future<std::string>, kNumHashed> jobs;
  for (size_t i = 0; i < kNumHashed; ++i) {
    jobs[i] = std::async(std::launch::async, [&dir, i] {
      try {
        return sha256_file(dir / kHashedFiles[i]);
      } catch (const Error& e) {
        return "!" + std::string(e.what());
      }
    });
  }
  std::array<std::string, kNumHashed> out;
  for (size_t i = 0; i < kNumHashed; ++i) out[i] = jobs[i].get();
  return out;
}

void copy_file_atomic(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  if (fs::exists(from, ec)) write_file_atomic(to, read_file(from));
  else write_file_atomic(to, std::string_view());
}
}  // namespace

json to_json(const TrainState& s) {
  return {{"format_version", kFormatVersion}, {"step", s.step},
          {"epoch", s.epoch},                 {"batch_in_epoch", s.batch_in_epoch},
          {"tokens_seen", s.tokens_seen},     {"adam_step", s.adam_step},
          {"train_seconds", s.train_seconds}, {"extra", s.extra}};
}

TrainState train_state_from_json(const json& j, const std::string& origin) {
  // Whole numbers only: nlohmann converts a float (1e30, or an integer too long for 64 bits) to
  // an integer type with a plain cast, undefined when it does not fit.
  auto integer = [&](const char* key) {
    const json& v = j.at(key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX)) {
      throw Error(fmt::format("{}: bad checkpoint state: {} is {}, expected a whole number",
                              origin, key, v.dump()),
                  "the checkpoint is damaged: resume from another one or start again");
    }
    return v.get<int64_t>();
  };
  try {
    if (integer("format_version") != kFormatVersion) {
      throw Error(fmt::format("{}: checkpoint format {} is not supported (expected {})", origin,
                              j.at("format_version").dump(), kFormatVersion));
    }
    TrainState s;
    s.step = integer("step");
    s.epoch = integer("epoch");
    s.batch_in_epoch = integer("batch_in_epoch");
    s.tokens_seen = integer("tokens_seen");
    s.adam_step = integer("adam_step");
    s.train_seconds = j.at("train_seconds").get<double>();
    s.extra = j.at("extra");
    // Counters a run cannot have: refused here rather than training nothing or tripping a check.
    const std::pair<const char*, int64_t> counters[] = {{"step", s.step},
                                                        {"epoch", s.epoch},
                                                        {"batch_in_epoch", s.batch_in_epoch},
                                                        {"tokens_seen", s.tokens_seen},
                                                        {"adam_step", s.adam_step}};
    for (const auto& [key, value] : counters) {
      if (value < 0) {
        throw Error(fmt::format("{}: bad checkpoint state: {} is {}, expected 0 or more", origin,
                                key, value),
                    "the checkpoint is damaged: resume from another one or start again");
      }
    }
    if (!std::isfinite(s.train_seconds) || s.train_seconds < 0) {
      throw Error(fmt::format("{}: bad checkpoint state: train_seconds is {}, expected 0 or more",
                              origin, s.train_seconds),
                  "the checkpoint is damaged: resume from another one or start again");
    }
    return s;
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: bad checkpoint state: {}", origin, e.what()));
  }
}

fs::path save_checkpoint(const fs::path& run_dir, const TensorTable& table,
                         std::span<const float> params, std::span<const float> m,
                         std::span<const float> v, const TrainState& state,
                         const fs::path& metrics_file) {
  LLMFT_CHECK(static_cast<int64_t>(params.size()) == table.total() &&
                  m.size() == params.size() && v.size() == params.size(),
              "checkpoint buffers do not match the table ({} floats)", table.total());
  const fs::path root = run_dir / "checkpoints";
  const std::string name = fmt::format("step-{:06d}", state.step);
  const fs::path final_dir = root / name;
  std::random_device rd;
  const fs::path tmp = root / fmt::format(".tmp-{}-{:08x}", name, rd());
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) throw Error(fmt::format("{}: cannot create folder: {}", tmp.string(), ec.message()));
  try {
    write_safetensors(tmp / "model.safetensors", table_tensors(table, params),
                      {{"format", "pt"}, {"llmft_checkpoint_step", std::to_string(state.step)}});
    auto opt = table_tensors(table, m, "m.");
    auto vs = table_tensors(table, v, "v.");
    opt.insert(opt.end(), vs.begin(), vs.end());
    write_safetensors(tmp / "optimizer.safetensors", opt,
                      {{"adam_step", std::to_string(state.adam_step)}});
    copy_file_atomic(metrics_file, tmp / "metrics.jsonl");
    // state.json, written last, records each file's sha256 (checked by resumable_checkpoint).
    json state_json = to_json(state);
    const auto sums = hash_checkpoint_files(tmp);
    for (size_t i = 0; i < kNumHashed; ++i) {
      if (sums[i].starts_with("!")) throw Error(sums[i].substr(1));
      state_json["sha256"][kHashedFiles[i]] = sums[i];
    }
    write_file_atomic(tmp / "state.json", state_json.dump(2) + "\n");
    // Same step written twice (an epoch end that is also a --checkpoint-every step): replace.
    if (fs::exists(final_dir, ec)) fs::remove_all(final_dir, ec);
    fs::rename(tmp, final_dir, ec);
    if (ec) {
      throw Error(fmt::format("{}: cannot rename checkpoint into place: {}", final_dir.string(),
                              ec.message()));
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  write_file_atomic(root / "latest", name + "\n");
  // Only now is the new checkpoint the valid one: keep it and the one before (in case this one
  // is damaged later), drop older ones and stale temporaries.
  const auto kept = checkpoints_newest_first(run_dir);
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (!e.is_directory()) continue;
    const bool keep = (kept.size() > 0 && e.path() == kept[0]) ||
                      (kept.size() > 1 && e.path() == kept[1]);
    if (!keep) fs::remove_all(e.path(), ec);
  }
  return final_dir;
}

std::vector<fs::path> checkpoints_newest_first(const fs::path& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir / "checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("step-", 0) != 0 || name.size() < 6 ||
        name.find_first_not_of("0123456789", 5) != std::string::npos)
      continue;  // temporaries (.tmp-*) and anything else
    // A step folder exists only once complete (renamed into place after its files were synced).
    if (!fs::is_regular_file(e.path() / "state.json", ec)) continue;
    found.emplace_back(std::stoll(name.substr(5)), e.path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::optional<fs::path> latest_checkpoint(const fs::path& run_dir) {
  // The newest complete step folder: `latest` names it too, unless the run stopped between the
  // rename and that write.
  const auto all = checkpoints_newest_first(run_dir);
  if (all.empty()) return std::nullopt;
  return all.front();
}

namespace {
// What checkpoint_damage says, and whether state.json recorded checksums at all.
struct Verdict {
  std::string damage;
  bool checksummed = false;
};

Verdict verify_checkpoint(const fs::path& dir) {
  const fs::path state_file = dir / "state.json";
  json j;
  try {
    j = parse_json(read_file(state_file), state_file.string());
  } catch (const Error& e) {
    return {e.what()};
  }
  if (!j.is_object()) return {fmt::format("{}: not a JSON object", state_file.string())};
  if (!j.contains("sha256")) return {};  // written before checksums: nothing to compare
  const json& sums = j["sha256"];
  for (const char* f : kHashedFiles) {
    if (!sums.is_object() || !sums.contains(f) || !sums[f].is_string()) {
      return {fmt::format("{}: no sha256 recorded for {}", state_file.string(), f), true};
    }
  }
  const auto got_all = hash_checkpoint_files(dir);
  for (size_t i = 0; i < kNumHashed; ++i) {
    const char* f = kHashedFiles[i];
    const std::string want = sums[f].get<std::string>();
    const std::string& got = got_all[i];
    if (got.starts_with("!")) return {got.substr(1), true};
    if (got != want) {
      return {fmt::format("{}: sha256 {} does not match {} recorded in state.json: the checkpoint "
                          "is damaged",
                          (dir / f).string(), got, want),
              true};
    }
  }
  return {{}, true};
}
}  // namespace

std::string checkpoint_damage(const fs::path& dir) { return verify_checkpoint(dir).damage; }

std::optional<fs::path> resumable_checkpoint(const fs::path& run_dir) {
  const auto all = checkpoints_newest_first(run_dir);
  std::string first_damage;
  for (size_t i = 0; i < all.size(); ++i) {
    const Verdict v = verify_checkpoint(all[i]);
    if (v.damage.empty()) {
      if (i > 0) {
        fmt::print(stderr, "note: resuming from the older checkpoint {} instead\n",
                   all[i].filename().string());
      }
      if (!v.checksummed) {
        fmt::print(stderr, "note: {} has no checksums (written by an older llmft): resuming from "
                           "it unverified\n", all[i].string());
      }
      return all[i];
    }
    fmt::print(stderr, "warning: {}\n", v.damage);
    if (first_damage.empty()) first_damage = v.damage;
  }
  if (all.empty()) return std::nullopt;
  throw Error(first_damage, all.size() > 1
                                ? "the older checkpoint is damaged too: start the run again"
                                : "no older checkpoint is kept: start the run again");
}

TrainState load_checkpoint(const fs::path& dir, const TensorTable& table, std::span<float> params,
                           std::span<float> m, std::span<float> v, const fs::path& metrics_file) {
  LLMFT_CHECK(static_cast<int64_t>(params.size()) == table.total() &&
                  m.size() == params.size() && v.size() == params.size(),
              "checkpoint buffers do not match the table ({} floats)", table.total());
  const fs::path state_file = dir / "state.json";
  const std::string state_text = read_file(state_file);
  const json j = parse_json(state_text, state_file.string(),
                            "the checkpoint is damaged; resume from an earlier one");
  TrainState s = train_state_from_json(j, state_file.string());
  read_table(SafetensorsFile(dir / "model.safetensors"), table, params);
  const SafetensorsFile opt(dir / "optimizer.safetensors");
  read_table(opt, table, m, "m.");
  read_table(opt, table, v, "v.");
  if (!metrics_file.empty()) write_file_atomic(metrics_file, read_file(dir / "metrics.jsonl"));
  return s;
}

}  // namespace llmft
