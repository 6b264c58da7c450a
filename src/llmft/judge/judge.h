// `llmft judge`: scores model answers 0-100 with a judge LLM served by Ollama or an
// OpenAI-compatible server (SPEC §8), resumably, and summarises the scores.
// Output format and leniency rules: docs/judge.md.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace llmft {

enum class JudgeApi { kOllama, kOpenAi };

struct JudgeOptions {
  std::filesystem::path input;   // JSON array of {instruction, input, output, <response_field>}
  std::filesystem::path output;  // empty: <input stem>-scored.json next to the input
  std::string url = "http://localhost:11434";  // server root (a trailing /v1 is dropped for openai)
  std::string model = "llama3";
  JudgeApi api = JudgeApi::kOllama;
  bool stream = true;                          // ask for a streamed reply
  std::string response_field = "model_response";
  // Environment variable holding the API key (OpenAI-compatible servers only), sent as
  // "Authorization: Bearer". When api_key_env_required, an unset variable is an error.
  std::string api_key_env = "OPENAI_API_KEY";
  bool api_key_env_required = false;
  long connect_timeout_s = 10;
  double read_timeout_s = 120;  // abort a request after this many seconds without a byte
  int max_retries = 5;        // extra attempts on connection errors, timeouts, 5xx and 429
  double retry_base_s = 1.0;  // backoff: retry_base_s * 2^attempt, at most retry_max_s
  double retry_max_s = 30.0;
  double retry_after_max_s = 300;  // a longer Retry-After from the server waits this long
  double request_timeout_s = 600;  // give up on one request (send and whole reply) after this
  int concurrency = 1;        // parallel requests
  // Stop the run (keeping what was scored, as when the server is lost) once this many entries in
  // a row have failed, each after its retries; 0 = never.
  int max_failures_in_a_row = 3;
  // Read a reply that is not just an integer as its first whole number 0-100 (parse_score_lenient);
  // such scores are counted and marked "judge_parse": "lenient" in the output.
  bool lenient = false;
  bool resume = true;         // keep what an existing output file already scored
  bool progress = true;       // progress bar on stderr (only drawn on a terminal)
  // Receives report lines (invalid replies, failed entries, retries); default: stderr.
  std::function<void(const std::string&)> on_report;
};

struct ScoreStats {
  int64_t count = 0;
  double mean = 0, median = 0;
  int min = 0, max = 0;
  std::array<int64_t, 10> histogram{};  // 0-9, 10-19, ..., 90-100
};
ScoreStats score_stats(std::span<const int> scores);

struct JudgeSummary {
  std::filesystem::path input, output;
  int64_t total = 0;     // entries in the file
  int64_t resumed = 0;   // already done in the output file before this run
  int64_t requests = 0;  // HTTP scoring requests this run, retries included
  int64_t empty = 0;     // empty answers, scored 0 without asking
  int64_t invalid = 0;   // judge replies that are not an integer 0-100 (left out)
  int64_t lenient = 0;   // scores read leniently (--lenient) from a reply strict parsing rejects
  int64_t failed = 0;    // requests that failed (left out; a rerun retries them)
  std::vector<std::optional<int>> scores;  // per entry, in input order
  ScoreStats stats;                        // over the entries with a score
};

// Throws Error (one line: what is wrong and how to fix it, e.g. `ollama serve`,
// `ollama pull llama3`) unless the server answers and has the model.
void check_judge(const JudgeOptions& opts);
// check_judge with short timeouts (1 s connect, 3 s read); never throws.
bool judge_available(const JudgeOptions& opts);

// Scores every entry of opts.input into opts.output (written atomically as it goes). Entries
// that fail are reported, left out and counted; losing the server aborts the run with an Error
// after saving what was scored, so a rerun resumes.
JudgeSummary judge_file(const JudgeOptions& opts);

struct CompareSummary {
  JudgeSummary a, b;
  int64_t both = 0, a_wins = 0, b_wins = 0, ties = 0;  // over entries scored in both files
};
// Scores two files with answers to the same entries (same order, instruction, input, output)
// into <stem>-scored.json each, then counts wins. Mismatching files throw before any request.
CompareSummary judge_compare(const JudgeOptions& opts, const std::filesystem::path& a,
                             const std::filesystem::path& b);

// The printed report: "Number of scores: N of M", "Average score: X.XX", min/median/max,
// a histogram in buckets of 10.
std::string format_summary(const JudgeSummary& s);
std::string format_compare(const CompareSummary& c);

std::filesystem::path default_scored_path(const std::filesystem::path& input);

}  // namespace llmft
