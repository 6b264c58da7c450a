// The serving engine: a queue, one generation thread over a Batcher; see engine.h.
#include "llmft/serve/engine.h"

#include <algorithm>

#include "llmft/model/kernels/matmul.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft::serve {

namespace {
int64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}
}  // namespace

Engine::Engine(Gpt2& model, const BpeTokenizer& tok, const EngineOptions& opts)
    : tok_(tok),
      opts_(opts),
      batcher_(model, opts.slots, model.config().maxT, opts.precision),
      running_(static_cast<size_t>(opts.slots)) {
  counts_.slots = opts.slots;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

Engine::Admission Engine::submit(const std::shared_ptr<Job>& job) {
  std::unique_lock lk(mu_);
  if (draining_) return Admission::kDraining;
  if (job->req.ids.empty() || job->req.seq.max_new_tokens == 0) {
    job->admitted = job->done = true;
    job->summary.done_reason = job->req.ids.empty() ? "load" : "length";
    job->summary.prompt_tokens = static_cast<int64_t>(job->req.ids.size());
    job->summary.total_ns = ns_between(job->arrived, Clock::now());
    ++counts_.completed;
    return Admission::kAdmitted;
  }
  const int64_t free_slots = opts_.slots - running_count_;
  if (static_cast<int64_t>(queue_.size()) >= opts_.max_queue + free_slots) {
    ++counts_.rejected;
    return Admission::kQueueFull;
  }
  queue_.push_back(job);
  work_cv_.notify_one();
  if (!out_cv_.wait_until(lk, job->deadline, [&] { return job->admitted; })) {
    std::erase(queue_, job);
    ++counts_.rejected;
    return Admission::kTimedOut;
  }
  return Admission::kAdmitted;
}

bool Engine::take(Job& job, std::string& text, std::chrono::milliseconds wait) {
  std::unique_lock lk(mu_);
  out_cv_.wait_for(lk, wait, [&] { return !job.pending.empty() || job.done; });
  text += job.pending;
  job.pending.clear();
  return job.done;
}

void Engine::cancel(Job& job) {
  {
    std::lock_guard lk(mu_);
    if (job.done) return;
    job.cancelled = true;
  }
  work_cv_.notify_one();
}

void Engine::drain() {
  std::unique_lock lk(mu_);
  draining_ = true;
  out_cv_.wait(lk, [&] { return queue_.empty() && running_count_ == 0; });
}

EngineStats Engine::stats() const {
  std::lock_guard lk(mu_);
  EngineStats s = counts_;
  s.active = running_count_;
  s.queued = static_cast<int64_t>(queue_.size());
  return s;
}

void Engine::admit_locked() {
  while (!queue_.empty() && batcher_.has_free_slot()) {
    std::shared_ptr<Job> job = std::move(queue_.front());
    queue_.pop_front();
    const GenRequest& r = job->req;
    const int64_t s = batcher_.add(r.ids, r.seq);
    Running& run = running_[static_cast<size_t>(s)];
    run.stream = std::make_unique<AnswerStream>(tok_, r.ids, r.prompt, r.marker, r.stop, r.raw);
    job->admitted = true;
    job->slot = s;
    job->started = Clock::now();
    job->summary.prompt_tokens = static_cast<int64_t>(r.ids.size());
    counts_.prompt_tokens += job->summary.prompt_tokens;
    run.job = std::move(job);
    ++running_count_;
  }
}

void Engine::finish_locked(Job& job, const std::string& reason) {
  const auto now = Clock::now();
  if (job.summary.new_tokens == 0) job.first_token = now;
  job.summary.done_reason = reason;
  job.summary.total_ns = ns_between(job.arrived, now);
  job.summary.prompt_ns = ns_between(job.arrived, job.first_token);
  job.summary.eval_ns = ns_between(job.first_token, now);
  job.done = true;
  ++(job.cancelled ? counts_.cancelled : counts_.completed);
  running_[static_cast<size_t>(job.slot)] = Running{};
  --running_count_;
}

void Engine::loop() {
  const kernels::ScopedThreads threads(opts_.threads);
  struct Out {
    int64_t slot;
    std::string text;
    bool token, ended;
    std::string reason;
  };
  std::vector<Out> outs;
  std::unique_lock lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] { return stop_ || !queue_.empty() || running_count_ > 0; });
    if (stop_) break;
    // Cancelled jobs and those past their deadline leave before the step.
    const auto now = Clock::now();
    for (int64_t s = 0; s < opts_.slots; ++s) {
      Running& run = running_[static_cast<size_t>(s)];
      if (!run.job || !(run.job->cancelled || now > run.job->deadline)) continue;
      batcher_.cancel(s);
      finish_locked(*run.job, "length");
    }
    admit_locked();
    out_cv_.notify_all();
    if (batcher_.active() == 0) continue;
    lk.unlock();
    // Only this thread touches the batcher, the streamers and running_'s slots between admit
    // and finish, so the step and the text run without the lock.
    outs.clear();
    std::string failure;
    try {
      for (const Batcher::Event& e : batcher_.step()) {
        Running& run = running_[static_cast<size_t>(e.slot)];
        Out o{e.slot, {}, e.token >= 0, e.finish != FinishReason::kNone, "stop"};
        if (e.token >= 0) o.text = run.stream->push(e.token);
        if (o.ended) o.text += run.stream->finish();
        if (run.stream->stopped()) {
          if (!o.ended) batcher_.cancel(e.slot);  // a stop string: the slot is free at once
          o.ended = true;
        } else if (e.finish == FinishReason::kLength) {
          o.reason = "length";
        }
        outs.push_back(std::move(o));
      }
    } catch (const std::exception& ex) {
      failure = ex.what();
    }
    lk.lock();
    const auto t = Clock::now();
    for (Out& o : outs) {
      Job& job = *running_[static_cast<size_t>(o.slot)].job;
      if (o.token) {
        if (job.summary.new_tokens++ == 0) job.first_token = t;
        ++counts_.new_tokens;
      }
      job.pending += o.text;
      if (o.ended) finish_locked(job, o.reason);
    }
    if (!failure.empty()) {
      for (int64_t s = 0; s < opts_.slots; ++s) {
        Running& run = running_[static_cast<size_t>(s)];
        if (!run.job) continue;
        batcher_.cancel(s);
        run.job->error = "generation failed: " + failure;
        finish_locked(*run.job, "stop");
      }
    }
    out_cv_.notify_all();
  }
  // Shutting down: nothing more will be generated.
  for (int64_t s = 0; s < opts_.slots; ++s)
    if (Running& run = running_[static_cast<size_t>(s)]; run.job) finish_locked(*run.job, "stop");
  for (auto& job : queue_) job->admitted = job->done = true;
  out_cv_.notify_all();
}

}  // namespace llmft::serve
