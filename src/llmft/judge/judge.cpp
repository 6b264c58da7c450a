// Scoring a file of answers: load and check the entries, resume from an existing output file,
// ask the judge from worker threads, save atomically as results arrive.
#include "llmft/judge/judge.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/judge/client.h"
#include "llmft/judge/pool.h"
#include "llmft/judge/prompt.h"

namespace llmft {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using judge::quote_truncated;

namespace {

// Values of "judge_status" in the output file (docs/judge.md).
constexpr const char* kPending = "pending";  // not asked yet, or the run stopped: ask on resume
constexpr const char* kScored = "scored";    // the judge replied with an integer 0-100
constexpr const char* kEmpty = "empty";      // empty answer: score 0 without asking
constexpr const char* kInvalid = "invalid";  // the judge replied something else: left out
constexpr const char* kFailed = "failed";    // no usable reply (HTTP error, garbled): ask on resume

struct Entry {
  std::string status = kPending;
  std::optional<int> score;
  std::optional<std::string> reply;
  std::string error;
  bool lenient = false;  // the score was read leniently from a reply strict parsing rejects
};

const std::string& string_field(const ojson& e, const fs::path& file, size_t i, const std::string& f,
                                const std::string& hint = {}) {
  static const std::string kEmptyString;
  if (!e.contains(f)) {
    if (f == "input") return kEmptyString;  // Alpaca files sometimes omit an empty input
    throw Error(fmt::format("{}: entry {}: missing field \"{}\"", file.string(), i, f), hint);
  }
  if (!e[f].is_string()) {
    throw Error(fmt::format("{}: entry {}: field \"{}\" is not a string (it is {})", file.string(),
                            i, f, e[f].type_name()),
                hint);
  }
  return e[f].get_ref<const std::string&>();
}

ojson load_entries(const fs::path& file, const std::string& response_field) {
  const std::string text = read_file(file);
  const ojson j = parse_json<ojson>(
      text, file.string(),
      "expected a JSON array of objects with instruction, input, output and " + response_field);
  if (!j.is_array()) {
    throw Error(fmt::format("{}: expected a JSON array of entries, found {}", file.string(),
                            j.type_name()));
  }
  const std::string hint =
      "each entry needs string fields instruction, input, output and " + response_field +
      " (pick the answer field with --response-field)";
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_object()) {
      throw Error(fmt::format("{}: entry {} is not an object", file.string(), i), hint);
    }
    for (const char* f : {"instruction", "input", "output"}) string_field(j[i], file, i, f, hint);
    string_field(j[i], file, i, response_field, hint);
  }
  return j;
}

// Restores what a previous run of the same input finished. Throws when the output file holds
// other entries, so a wrong --output never overwrites unrelated work.
void resume_from(const fs::path& out, const ojson& in, const std::string& response_field,
                 std::vector<Entry>& entries, const fs::path& input) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  const std::string hint = fmt::format(
      "delete {} or choose another --output (or pass --no-resume to score again)", out.string());
  const ojson prev = parse_json<ojson>(read_file(out), out.string() + " (existing output)", hint);
  if (!prev.is_array() || prev.size() != in.size()) {
    throw Error(fmt::format("{}: existing output does not hold the {} entries of {}", out.string(),
                            in.size(), input.string()),
                hint);
  }
  for (size_t i = 0; i < in.size(); ++i) {
    const ojson& p = prev[i];
    for (const std::string f : {"instruction", "input", "output", response_field.c_str()}) {
      if (!p.is_object() || p.value(f, ojson()) != in[i].value(f, ojson())) {
        throw Error(fmt::format("{}: entry {} field \"{}\" differs from {}: it was scored from "
                                "another input",
                                out.string(), i, f, input.string()),
                    hint);
      }
    }
    const std::string status = p.value("judge_status", std::string());
    Entry& e = entries[i];
    if (status == kScored || status == kEmpty) {
      if (!p.contains("score") || !p["score"].is_number_integer()) continue;
      e.status = status;
      e.score = p["score"].get<int>();
    } else if (status == kInvalid) {
      e.status = status;
    } else {
      continue;  // pending, failed, or unknown: ask again
    }
    if (p.contains("judge_reply") && p["judge_reply"].is_string()) {
      e.reply = p["judge_reply"].get<std::string>();
    }
    e.lenient = p.value("judge_parse", std::string()) == "lenient";
  }
}

void save(const fs::path& out, const ojson& in, const std::vector<Entry>& entries) {
  ojson arr = ojson::array();
  for (size_t i = 0; i < in.size(); ++i) {
    ojson e = in[i];
    const Entry& s = entries[i];
    e["score"] = s.score ? ojson(*s.score) : ojson(nullptr);
    e["judge_reply"] = s.reply ? ojson(*s.reply) : ojson(nullptr);
    e["judge_status"] = s.status;
    if (s.lenient) e["judge_parse"] = "lenient";
    if (s.status == kFailed) e["judge_error"] = s.error;
    arr.push_back(std::move(e));
  }
  write_file_atomic(out, arr.dump(4, ' ', false, ojson::error_handler_t::replace) + "\n");
}

void check_options(const JudgeOptions& o) {
  if (o.concurrency < 1) {
    throw UsageError(fmt::format("--concurrency {} is out of range: expected 1 or more", o.concurrency));
  }
  if (o.connect_timeout_s < 1) {
    throw UsageError(fmt::format("--connect-timeout {} is out of range: expected 1 s or more",
                                 o.connect_timeout_s));
  }
  if (!(o.read_timeout_s > 0)) {
    throw UsageError(fmt::format("--read-timeout {} is out of range: expected more than 0 s",
                                 o.read_timeout_s));
  }
  if (!(o.request_timeout_s > 0)) {
    throw UsageError(fmt::format("--request-timeout {} is out of range: expected more than 0 s",
                                 o.request_timeout_s));
  }
  if (o.max_failures_in_a_row < 0) {
    throw UsageError(fmt::format("--max-failures {} is out of range: expected 0 (never stop) or more",
                                 o.max_failures_in_a_row));
  }
  if (o.max_retries < 0) {
    throw UsageError(fmt::format("--max-retries {} is out of range: expected 0 or more", o.max_retries));
  }
  if (!(o.retry_base_s >= 0) || !(o.retry_max_s >= 0)) {
    throw UsageError("retry backoff times must be 0 or more seconds");
  }
  if (o.model.empty()) throw UsageError("--model is empty", "e.g. --model llama3");
  if (o.response_field.empty()) throw UsageError("--response-field is empty");
}

}  // namespace

fs::path default_scored_path(const fs::path& input) {
  return input.parent_path() / (input.stem().string() + "-scored.json");
}

ScoreStats score_stats(std::span<const int> scores) {
  ScoreStats s;
  s.count = static_cast<int64_t>(scores.size());
  if (scores.empty()) return s;
  std::vector<int> v(scores.begin(), scores.end());
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (int x : v) {
    sum += x;
    s.histogram[std::min(x / 10, 9)] += 1;  // 100 joins the 90-100 bucket
  }
  s.mean = sum / static_cast<double>(v.size());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
  s.min = v.front();
  s.max = v.back();
  return s;
}

void check_judge(const JudgeOptions& opts) {
  judge::JudgeClient(opts).check(opts.connect_timeout_s, opts.read_timeout_s);
}

bool judge_available(const JudgeOptions& opts) {
  try {
    judge::JudgeClient(opts).check(/*connect_timeout_s=*/1, /*read_timeout_s=*/3);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

namespace {

// One scoring run of judge_file: the input entries and their results; the requests go through
// a judge::RequestPool (worker threads, progress, saving as results arrive).
class JudgeRun {
 public:
  // Loads the input and, with opts.resume, what an earlier run of it finished.
  explicit JudgeRun(const JudgeOptions& opts);
  void find_work();  // counts resumed entries, scores empty answers 0, lists the entries to ask
  void connect();    // checks the server (when there is work) and marks every entry in the output
  void judge_all();  // asks from opts.concurrency threads, saving as results arrive
  JudgeSummary summarise();  // throws Error after saving when the server was lost

 private:
  const JudgeOptions& opts_;
  JudgeSummary sum_;
  const ojson in_;
  std::vector<Entry> entries_;
  std::vector<size_t> todo_;
  std::optional<judge::JudgeClient> client_;
  std::optional<std::string> lost_;  // why the run stopped
};

JudgeRun::JudgeRun(const JudgeOptions& opts)
    : opts_(opts), in_(load_entries(opts.input, opts.response_field)), entries_(in_.size()) {
  sum_.input = opts.input;
  sum_.output = opts.output.empty() ? default_scored_path(opts.input) : opts.output;
  sum_.total = static_cast<int64_t>(in_.size());
  if (opts.resume) resume_from(sum_.output, in_, opts.response_field, entries_, opts.input);
}

void JudgeRun::find_work() {
  for (size_t i = 0; i < in_.size(); ++i) {
    if (entries_[i].status != kPending) {
      ++sum_.resumed;
      continue;
    }
    if (judge::trim(in_[i][opts_.response_field].get_ref<const std::string&>()).empty()) {
      entries_[i] = Entry{kEmpty, 0, std::nullopt, {}};
    } else {
      todo_.push_back(i);
    }
  }
}

void JudgeRun::connect() {
  if (!todo_.empty()) {
    client_.emplace(opts_);
    client_->check(opts_.connect_timeout_s, opts_.read_timeout_s);
  }
  save(sum_.output, in_, entries_);  // marks every entry, so a kill from here on can resume
}

void JudgeRun::judge_all() {
  if (todo_.empty()) return;
  judge::RequestPool pool(opts_, *client_);
  judge::RequestPool::Task task;
  task.prompt = [&](size_t i) {
    const ojson& e = in_[i];
    return judge::judge_prompt(e["instruction"].get_ref<const std::string&>(),
                               e.value("input", std::string()),
                               e["output"].get_ref<const std::string&>(),
                               e[opts_.response_field].get_ref<const std::string&>());
  };
  task.reply = [&](size_t i, const std::string& reply) {
    Entry r;
    r.reply = reply;
    r.score = judge::parse_score(reply);
    if (!r.score && opts_.lenient) {
      r.score = judge::parse_score_lenient(reply);
      r.lenient = r.score.has_value();
    }
    r.status = r.score ? kScored : kInvalid;
    if (!r.score) {
      pool.report(fmt::format("entry {}: judge reply {}, left out: {}", i,
                              opts_.lenient ? "holds no whole number 0-100"
                                            : "is not an integer 0-100 (--lenient takes the first "
                                              "number 0-100 in it)",
                              quote_truncated(reply)));
    }
    entries_[i] = std::move(r);
  };
  task.failed = [&](size_t i, const std::string& error) {
    pool.report(fmt::format("entry {}: failed, left out: {}", i, error));
    entries_[i] = Entry{kFailed, std::nullopt, std::nullopt, error};
  };
  task.save = [&] { save(sum_.output, in_, entries_); };
  pool.run(todo_, "judging", task);
  sum_.requests = pool.requests();
  lost_ = pool.lost();
}

JudgeSummary JudgeRun::summarise() {
  std::vector<int> scores;
  int64_t scored_now = 0;
  for (const Entry& e : entries_) {
    sum_.scores.push_back(e.score);
    if (e.score) scores.push_back(*e.score);
    if (e.status == kEmpty) ++sum_.empty;
    if (e.status == kInvalid) ++sum_.invalid;
    if (e.lenient && e.score) ++sum_.lenient;
    if (e.status == kFailed) ++sum_.failed;
    if (e.status == kScored || e.status == kEmpty) ++scored_now;
  }
  sum_.stats = score_stats(scores);
  if (lost_) {
    throw Error(fmt::format("lost the judge server at {}: {}; {} of {} entries are scored in {}",
                            client_->base_url(), *lost_, scored_now, in_.size(),
                            sum_.output.string()),
                "start the server again (e.g. `ollama serve`) and rerun the same command: it "
                "resumes where it stopped");
  }
  return sum_;
}

}  // namespace

JudgeSummary judge_file(const JudgeOptions& opts) {
  check_options(opts);
  JudgeRun run(opts);
  run.find_work();
  run.connect();
  run.judge_all();
  return run.summarise();
}

CompareSummary judge_compare(const JudgeOptions& opts, const fs::path& a, const fs::path& b) {
  const ojson ja = load_entries(a, opts.response_field);
  const ojson jb = load_entries(b, opts.response_field);
  const std::string hint = "--compare needs two answer files for the same entries in the same order";
  if (ja.size() != jb.size()) {
    throw Error(fmt::format("--compare: {} has {} entries but {} has {}", a.string(), ja.size(),
                            b.string(), jb.size()),
                hint);
  }
  for (size_t i = 0; i < ja.size(); ++i) {
    for (const char* f : {"instruction", "input", "output"}) {
      if (ja[i].value(f, std::string()) != jb[i].value(f, std::string())) {
        throw Error(fmt::format("--compare: entry {} field \"{}\" differs between {} and {}", i, f,
                                a.string(), b.string()),
                    hint);
      }
    }
  }
  CompareSummary c;
  JudgeOptions o = opts;
  o.input = a;
  o.output = default_scored_path(a);
  c.a = judge_file(o);
  o.input = b;
  o.output = default_scored_path(b);
  c.b = judge_file(o);
  for (size_t i = 0; i < ja.size(); ++i) {
    const auto& sa = c.a.scores[i];
    const auto& sb = c.b.scores[i];
    if (!sa || !sb) continue;
    ++c.both;
    if (*sa > *sb) ++c.a_wins;
    else if (*sb > *sa) ++c.b_wins;
    else ++c.ties;
  }
  return c;
}

std::string format_summary(const JudgeSummary& s) {
  const ScoreStats& st = s.stats;
  std::string out = fmt::format("Number of scores: {} of {}\n", st.count, s.total);
  if (st.count == 0) {
    out += "Average score: n/a\n";
  } else {
    out += fmt::format("Average score: {:.2f}\n", st.mean);
    out += fmt::format("Min / median / max: {} / {:g} / {}\n", st.min, st.median, st.max);
    out += "Histogram:\n";
    const int64_t top = *std::max_element(st.histogram.begin(), st.histogram.end());
    for (int b = 0; b < 10; ++b) {
      const int64_t c = st.histogram[b];
      const auto width = top ? static_cast<size_t>((c * 40 + top - 1) / top) : 0;
      out += fmt::format("  {:>3}-{:<3} {:>5} {}\n", b * 10, b == 9 ? 100 : b * 10 + 9, c,
                         std::string(width, '#'));
    }
  }
  if (s.empty) out += fmt::format("Empty answers scored 0 without asking: {}\n", s.empty);
  if (s.lenient) {
    out += fmt::format("Read leniently (--lenient: the first number 0-100 in a longer reply): {}\n",
                       s.lenient);
  }
  if (s.invalid || s.failed) {
    out += fmt::format("Left out: {} invalid replies, {} failed requests\n", s.invalid, s.failed);
  }
  out += fmt::format("Scores written to {}\n", s.output.string());
  return out;
}

std::string format_compare(const CompareSummary& c) {
  auto pct = [&](int64_t k) { return c.both ? 100.0 * static_cast<double>(k) / c.both : 0.0; };
  std::string out = fmt::format("== A: {}\n{}== B: {}\n{}", c.a.input.string(), format_summary(c.a),
                                c.b.input.string(), format_summary(c.b));
  auto avg = [](const JudgeSummary& s) {
    return s.stats.count ? fmt::format("{:.2f}", s.stats.mean) : std::string("n/a");
  };
  out += fmt::format("Average score: A {} / B {}\n", avg(c.a), avg(c.b));
  out += fmt::format("Entries scored in both: {}\n", c.both);
  out += fmt::format("A wins: {} ({:.1f}%), B wins: {} ({:.1f}%), ties: {} ({:.1f}%)\n", c.a_wins,
                     pct(c.a_wins), c.b_wins, pct(c.b_wins), c.ties, pct(c.ties));
  return out;
}

}  // namespace llmft
