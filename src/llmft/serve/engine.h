// The generation side of `llmft serve`: one thread owns the model and a Batcher (continuous
// batching, generate/batcher.h); HTTP threads hand it jobs. A job waits in a bounded queue until a
// slot is free, joins the next decoder step, and leaves at once when it ends (end of text, its
// token limit, a stop string, its deadline) or is cancelled (client gone). Text is produced here
// (AnswerStream), so every API streams exactly its final answer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "llmft/generate/batcher.h"
#include "llmft/generate/stop.h"
#include "llmft/generate/stream.h"
#include "llmft/serve/api.h"
#include "llmft/serve/reply.h"

namespace llmft::serve {

using Clock = std::chrono::steady_clock;

// One request's generation. Inputs are set before Engine::submit; the rest is the engine's and
// read under its lock (Engine::take).
struct Job {
  GenRequest req;
  Clock::time_point arrived = Clock::now(), deadline = Clock::time_point::max();
  // Engine state (under Engine's mutex).
  bool admitted = false, done = false, cancelled = false;
  std::string pending;  // text not yet taken
  std::string error;    // set when generation failed (a bug): the reply ends with it
  GenSummary summary;
  int64_t slot = -1;
  Clock::time_point started, first_token;
};

struct EngineOptions {
  int64_t slots = 4;       // sequences decoded together
  int64_t max_queue = 16;  // jobs waiting for a slot at most; more are refused (503)
  Precision precision = Precision::kFp32;
  int threads = 0;  // OpenMP/BLAS threads for the engine (0 = as set)
};

struct EngineStats {
  int64_t active = 0, queued = 0, slots = 0;
  int64_t completed = 0, cancelled = 0, rejected = 0;  // since start
  int64_t prompt_tokens = 0, new_tokens = 0;
};

class Engine {
 public:
  Engine(Gpt2& model, const BpeTokenizer& tok, const EngineOptions& opts);
  ~Engine();  // cancels what is left and joins the thread
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  enum class Admission { kAdmitted, kQueueFull, kDraining, kTimedOut };
  // Queues the job and waits until it has a slot, its deadline passes (it leaves the queue), or,
  // at once, the queue is full or the engine drains. A job with nothing to generate (no prompt
  // tokens or max_new_tokens 0) is admitted and done at once.
  Admission submit(const std::shared_ptr<Job>& job);
  // Waits at most `wait` for new text or the end; moves the job's new text into `text`. Returns
  // true once the job is done (its summary final, all text taken).
  bool take(Job& job, std::string& text, std::chrono::milliseconds wait);
  // The client is gone: the job leaves its slot at the next step boundary.
  void cancel(Job& job);
  // Refuses new jobs from now on and waits until none is queued or running.
  void drain();
  EngineStats stats() const;

 private:
  void loop();
  // Under the lock: jobs from the queue into free slots.
  void admit_locked();
  // Under the lock: ends the job in its slot (reason, counts, timing) and wakes waiters.
  void finish_locked(Job& job, const std::string& reason);

  struct Running {
    std::shared_ptr<Job> job;
    std::unique_ptr<AnswerStream> stream;
  };

  const BpeTokenizer& tok_;
  EngineOptions opts_;
  Batcher batcher_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, out_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<Running> running_;  // by slot
  int64_t running_count_ = 0;
  bool draining_ = false, stop_ = false;
  EngineStats counts_;
  std::thread thread_;
};

}  // namespace llmft::serve
