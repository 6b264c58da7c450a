#include "llmft/train/metrics.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"

namespace llmft {

using nlohmann::json;

namespace {
void add_rewards(nlohmann::ordered_json& j, const std::string& prefix, const Rewards& r) {
  j[prefix + "chosen_reward"] = r.chosen;
  j[prefix + "rejected_reward"] = r.rejected;
  j[prefix + "reward_margin"] = r.margin();
}
std::optional<Rewards> read_rewards(const json& j, const std::string& prefix) {
  if (!j.contains(prefix + "chosen_reward")) return std::nullopt;
  return Rewards{j.at(prefix + "chosen_reward").get<double>(),
                 j.at(prefix + "rejected_reward").get<double>()};
}
}  // namespace

std::string to_json_line(const StepRecord& r) {
  // nlohmann prints doubles as the shortest text that reads back to the same value.
  nlohmann::ordered_json j = {{"step", r.step},           {"epoch", r.epoch},
            {"loss", r.loss},           {"lr", r.lr},
            {"grad_norm", r.grad_norm}, {"tokens_seen", r.tokens_seen},
            {"tokens_per_s", r.tokens_per_s}, {"batch", r.batch}};
  if (r.rewards) add_rewards(j, "", *r.rewards);
  return j.dump();
}

std::string to_json_line(const EvalRecord& r) {
  nlohmann::ordered_json j;
  j["step"] = r.step;
  j["epoch"] = r.epoch;
  j["tokens_seen"] = r.tokens_seen;
  j["train_loss"] = r.train_loss;
  j["val_loss"] = r.val_loss;
  if (r.train_rewards) add_rewards(j, "train_", *r.train_rewards);
  if (r.val_rewards) add_rewards(j, "val_", *r.val_rewards);
  return j.dump();
}

MetricsHistory read_metrics(const std::filesystem::path& path) {
  MetricsHistory h;
  std::istringstream in(read_file(path));
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    check_json_limits(line, fmt::format("{}:{}", path.string(), lineno));
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      if (in.peek() == EOF) break;  // a torn last line from a killed run
      throw Error(fmt::format("{}:{}: not a JSON object", path.string(), lineno),
                  "the metrics log is damaged; resume from a checkpoint");
    }
    try {
      if (j.contains("val_loss")) {
        EvalRecord r;
        r.step = j.at("step").get<int64_t>();
        r.train_loss = j.at("train_loss").get<double>();
        r.val_loss = j.at("val_loss").get<double>();
        r.epoch = j.value("epoch", 0.0);
        r.tokens_seen = j.value("tokens_seen", int64_t{0});
        r.train_rewards = read_rewards(j, "train_");
        r.val_rewards = read_rewards(j, "val_");
        h.evals.push_back(r);
      } else {
        StepRecord r;
        r.step = j.at("step").get<int64_t>();
        r.epoch = j.at("epoch").get<double>();
        r.loss = j.at("loss").get<double>();
        r.lr = j.at("lr").get<double>();
        r.grad_norm = j.at("grad_norm").get<double>();
        r.tokens_seen = j.at("tokens_seen").get<int64_t>();
        r.tokens_per_s = j.at("tokens_per_s").get<double>();
        r.batch = j.at("batch").get<std::vector<int64_t>>();
        r.rewards = read_rewards(j, "");
        h.steps.push_back(std::move(r));
      }
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}:{}: bad metrics record: {}", path.string(), lineno, e.what()));
    }
  }
  return h;
}

MetricsLog::MetricsLog(std::filesystem::path path, bool truncate) : path_(std::move(path)) {
  f_ = std::fopen(path_.c_str(), truncate ? "wb" : "ab");
  if (!f_) {
    throw Error(fmt::format("{}: cannot open for writing: {}", path_.string(),
                            std::strerror(errno)));
  }
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const StepRecord& r) { write_line(to_json_line(r)); }
void MetricsLog::write(const EvalRecord& r) { write_line(to_json_line(r)); }

void MetricsLog::write_line(const std::string& line) {
  if (std::fputs(line.c_str(), f_) < 0 || std::fputc('\n', f_) == EOF || std::fflush(f_) != 0) {
    throw Error(fmt::format("{}: write failed (disk full?)", path_.string()));
  }
}

}  // namespace llmft
