#include "llmft/io/hub.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "llmft/core/error.h"
#include "llmft/core/http.h"
#include "llmft/core/io.h"
#include "llmft/core/progress.h"
#include "llmft/io/md_hash.h"
#include "llmft/io/sha1.h"
#include "llmft/io/sha256.h"
#include "llmft/model/config.h"

namespace llmft {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOrg = "openai-community";
const char* const kRequiredFiles[] = {"config.json", "model.safetensors", "vocab.json", "merges.txt"};
const char* const kOptionalFiles[] = {"generation_config.json"};

bool env_true(const char* name) {
  std::string v = env_value(name);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  return v == "1" || v == "on" || v == "yes" || v == "true";
}

// Server-given names become path components: allow only what a hash or branch id looks like.
bool safe_component(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_';
  });
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

bool is_sha1_hex(const std::string& s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

// ETag: "abc" or W/"abc" -> abc.
std::string normalize_etag(std::string e) {
  if (e.rfind("W/", 0) == 0) e = e.substr(2);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return e;
}

std::string unreachable_hint() {
  return "check the network connection and HF_ENDPOINT, or pass a local model folder to --model";
}

struct RemoteFile {
  std::string url, commit, etag;
  int64_t size = -1;  // -1: unknown
};

// HEAD of resolve/<revision>/<file> without following the CDN redirect, which is where the hub
// puts X-Repo-Commit and, for LFS files, X-Linked-Etag (the sha256) and X-Linked-Size.
std::optional<RemoteFile> head_file(const std::string& endpoint, const std::string& repo_id,
                                    const std::string& revision, const std::string& file,
                                    bool required) {
  HttpRequest req;
  req.method = "HEAD";
  req.url = fmt::format("{}/{}/resolve/{}/{}", endpoint, repo_id, revision, file);
  req.headers = {"Accept-Encoding: identity"};
  req.follow_redirects = false;
  HttpResponse r;
  try {
    r = http_request(req);
    // A redirect without hub headers is a renamed repo or a proxy: follow it for the metadata.
    if (r.status >= 300 && r.status < 400 && r.header("X-Repo-Commit").empty()) {
      req.follow_redirects = true;
      r = http_request(req);
    }
  } catch (const Error& e) {
    throw Error(fmt::format("cannot reach {}: {}", endpoint, e.what()), unreachable_hint());
  }
  if (r.status == 404 && !required) return std::nullopt;
  if (r.status == 401 || r.status == 403) {
    throw Error(fmt::format("{}: access denied (HTTP {})", req.url, r.status),
                "the repository may be gated or HF_ENDPOINT may point to the wrong server");
  }
  if (r.status == 404) {
    throw Error(fmt::format("{}: not found (HTTP 404)", req.url),
                "check HF_ENDPOINT; the repository should have this file");
  }
  if (r.status < 200 || r.status >= 400) {
    throw Error(fmt::format("{}: HTTP {}", req.url, r.status), unreachable_hint());
  }
  RemoteFile rf;
  rf.url = fmt::format("{}/{}/resolve/{}/{}", endpoint, repo_id, revision, file);
  rf.commit = r.header("X-Repo-Commit");
  rf.etag = normalize_etag(!r.header("X-Linked-Etag").empty() ? r.header("X-Linked-Etag")
                                                                : r.header("ETag"));
  const std::string size = !r.header("X-Linked-Size").empty() ? r.header("X-Linked-Size")
                                                               : r.header("Content-Length");
  if (!safe_component(rf.commit)) {
    throw Error(fmt::format("{}: server sent no usable X-Repo-Commit header ('{}')", req.url,
                            rf.commit), "HF_ENDPOINT must point to a Hugging Face hub server");
  }
  // The hub names every file by its hash: sha256 for LFS files, the git blob sha1 otherwise.
  // Both are checked on download and on every use of the cached copy.
  if (!is_sha256_hex(rf.etag) && !is_sha1_hex(rf.etag)) {
    throw Error(fmt::format("{}: server sent no usable ETag ('{}'): expected the file's sha256 "
                            "or git blob id", req.url, rf.etag),
                "HF_ENDPOINT must point to a Hugging Face hub server");
  }
  if (!size.empty()) {
    char* end = nullptr;
    const long long v = std::strtoll(size.c_str(), &end, 10);
    if (*end != '\0' || v < 0) {
      throw Error(fmt::format("{}: bad file size '{}' from the server", req.url, size));
    }
    rf.size = v;
  }
  return rf;
}

// The hash a blob's etag names: "sha256" (LFS) or "git blob sha1" (small git-stored files).
const char* hash_kind(const std::string& etag) {
  return is_sha256_hex(etag) ? "sha256" : "git blob sha1";
}
std::string blob_hash(const fs::path& blob, const std::string& etag) {
  return is_sha256_hex(etag) ? sha256_file(blob) : git_blob_sha1_file(blob);
}

// A verified blob is remembered in <cache>/.locks/<repo folder>/<etag>.verified ("<size>
// <mtime ns>", written atomically after the hash matched; .locks is where huggingface_hub keeps
// its own lock files and what its cache scan skips). A cached blob is hashed again only when its
// size or modification time no longer match that record, so using a cached model costs a stat.
fs::path verified_stamp(const fs::path& cache, const fs::path& repo, const std::string& etag) {
  return cache / ".locks" / repo.filename() / (etag + ".verified");
}
std::string stat_stamp(const fs::path& blob) {
  std::error_code ec;
  const auto size = fs::file_size(blob, ec);
  if (ec) return {};
  const auto mtime = fs::last_write_time(blob, ec);
  if (ec) return {};
  return fmt::format("{} {}\n", size,
                     std::chrono::duration_cast<std::chrono::nanoseconds>(
                         mtime.time_since_epoch()).count());
}
void record_verified(const fs::path& cache, const fs::path& repo, const std::string& etag,
                     const fs::path& blob) {
  const std::string stamp = stat_stamp(blob);
  if (stamp.empty()) return;
  std::error_code ec;
  fs::create_directories(verified_stamp(cache, repo, etag).parent_path(), ec);
  try {
    write_file_atomic(verified_stamp(cache, repo, etag), stamp);
  } catch (const Error&) {
    // Not fatal: the blob is hashed again next time.
  }
}

// Empty when `blob` holds what its etag names, else a message naming the file and both hashes.
// Hashes it only when its stamp is stale, or always with `rehash` (what `llmft download` does, so
// damage that kept the size and time, such as a disk's bit rot, is found there).
std::string check_cached_blob(const fs::path& cache, const fs::path& repo, const fs::path& blob,
                              const std::string& etag, const std::string& file, bool rehash) {
  if (!is_sha256_hex(etag) && !is_sha1_hex(etag)) return {};  // not named by a hash: nothing to check
  const fs::path stamp_file = verified_stamp(cache, repo, etag);
  std::error_code ec;
  const std::string now = stat_stamp(blob);
  if (!rehash && !now.empty() && fs::is_regular_file(stamp_file, ec)) {
    try {
      if (read_file(stamp_file) == now) return {};
    } catch (const Error&) {
    }
  }
  const std::string got = blob_hash(blob, etag);
  if (got != etag) {
    return fmt::format("{}: the cached copy {} is corrupt: {} {}, expected {}", file,
                       blob.string(), hash_kind(etag), got, etag);
  }
  record_verified(cache, repo, etag, blob);
  return {};
}

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};

// Downloads rf into `blob` through `blob`.incomplete, resuming it if present.
void fetch_blob(const RemoteFile& rf, const fs::path& blob, const std::string& file,
                const DownloadOptions& opts) {
  const fs::path part = fs::path(blob.string() + ".incomplete");
  const bool lfs = is_sha256_hex(rf.etag);
  std::error_code ec;
  std::unique_ptr<ProgressBar> bar;
  if (opts.progress) bar = std::make_unique<ProgressBar>(file, rf.size > 0 ? rf.size : 0, "B");
  for (int attempt = 1;; ++attempt) {
    int64_t have = fs::exists(part, ec) ? static_cast<int64_t>(fs::file_size(part, ec)) : 0;
    if (rf.size >= 0 && have > rf.size) {
      fs::remove(part, ec);
      have = 0;
    }
    Sha256 sha;
    if (lfs && have > 0) md_hash::update_from_file(sha, part);  // what a resumed download has
    std::unique_ptr<std::FILE, FileCloser> out(std::fopen(part.c_str(), have > 0 ? "ab" : "wb"));
    if (!out) {
      throw Error(fmt::format("{}: cannot write: {}", part.string(), std::strerror(errno)),
                  "check the cache folder's permissions and free space");
    }
    int64_t done = have;
    bool too_long = false, write_failed = false;
    HttpRequest req;
    req.url = rf.url;
    req.headers = {"Accept-Encoding: identity"};
    if (have > 0) req.headers.push_back(fmt::format("Range: bytes={}-", have));
    const auto on_response = [&](const HttpResponse& head) {
      if (head.status == 206 && have > 0 &&
          head.header("Content-Range").rfind(fmt::format("bytes {}-", have), 0) == 0) {
        return true;  // resume
      }
      if (head.status == 200) {  // no range support: start over
        out.reset(std::fopen(part.c_str(), "wb"));
        sha = Sha256();
        done = 0;
        return out != nullptr;
      }
      return false;  // an error page or an unexpected range: keep nothing
    };
    const auto on_data = [&](std::string_view chunk) {
      if (rf.size >= 0 && done + static_cast<int64_t>(chunk.size()) > rf.size) {
        too_long = true;
        return false;
      }
      if (std::fwrite(chunk.data(), 1, chunk.size(), out.get()) != chunk.size()) {
        write_failed = true;
        return false;
      }
      if (lfs) sha.update(chunk);
      done += static_cast<int64_t>(chunk.size());
      if (bar) bar->update(done);
      return true;
    };
    HttpResponse r;
    try {
      r = http_request(req, on_data, on_response);
    } catch (const std::exception& e) {
      if (http_error_is_transient(e) && attempt < opts.attempts) continue;  // resume from `done`
      throw Error(fmt::format("downloading {}: {}", rf.url, e.what()),
                  "run the command again: the partial file is kept and the download resumes");
    }
    if (!out || write_failed || std::fflush(out.get()) != 0) {
      throw Error(fmt::format("{}: write failed (disk full?)", part.string()));
    }
    out.reset();
    if (too_long) {
      fs::remove(part, ec);
      throw Error(fmt::format("{}: server sent more than the announced {} bytes", rf.url, rf.size),
                  "run the command again; if it persists, check HF_ENDPOINT");
    }
    if (r.status == 416 && have > 0 && attempt < opts.attempts) {
      fs::remove(part, ec);  // the partial file does not fit the remote one: start over
      continue;
    }
    if (r.status != 200 && r.status != 206) {
      throw Error(fmt::format("{}: HTTP {}", rf.url, r.status), unreachable_hint());
    }
    if (rf.size >= 0 && done < rf.size) {
      if (attempt < opts.attempts) continue;
      throw Error(fmt::format("{}: connection ended after {} of {} bytes", rf.url, done, rf.size),
                  "run the command again: the download resumes");
    }
    const std::string got = lfs ? sha.hex_digest() : git_blob_sha1_file(part);
    if (got != rf.etag) {
      fs::remove(part, ec);
      throw Error(fmt::format("{}: {} {} does not match the server's {}: the download is "
                              "corrupt and was deleted", rf.url, hash_kind(rf.etag), got, rf.etag),
                  "run the command again");
    }
    if (bar) bar->finish();
    fs::rename(part, blob, ec);
    if (ec) throw Error(fmt::format("{}: cannot move into place: {}", blob.string(), ec.message()));
    return;
  }
}

// An exclusive flock on <cache>/.locks/<repo folder>/<etag>.lock, the lock huggingface_hub
// (filelock) takes too, so a Python download and ours never write one blob at once.
class BlobLock {
 public:
  BlobLock(const fs::path& cache, const fs::path& repo, const std::string& etag) {
    const fs::path dir = cache / ".locks" / repo.filename();
    std::error_code ec;
    fs::create_directories(dir, ec);
    const fs::path path = dir / (etag + ".lock");
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) {
      throw Error(fmt::format("{}: cannot lock: {}", path.string(), std::strerror(errno)),
                  "check the cache folder's permissions");
    }
  }
  ~BlobLock() { ::close(fd_); }  // releases the lock
  BlobLock(const BlobLock&) = delete;
  BlobLock& operator=(const BlobLock&) = delete;

 private:
  int fd_ = -1;
};

// snapshots/<commit>/<file> -> ../../blobs/<etag>, as huggingface_hub makes it (a copy where the
// file system has no symlinks).
void link_snapshot(const fs::path& repo, const std::string& commit, const std::string& file,
                   const std::string& etag) {
  const fs::path dir = repo / "snapshots" / commit;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create folder: {}", dir.string(), ec.message()));
  const fs::path ptr = dir / file;
  fs::remove(ptr, ec);
  fs::create_symlink(fs::path("..") / ".." / "blobs" / etag, ptr, ec);
  if (ec) {
    fs::copy_file(repo / "blobs" / etag, ptr, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(fmt::format("{}: cannot create: {}", ptr.string(), ec.message()));
  }
}

bool complete_snapshot(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "config.json", ec) &&
         fs::is_regular_file(dir / "model.safetensors", ec);
}

// Checks each file of a cached snapshot that links to ../../blobs/<hash> against that hash.
void verify_cached_snapshot(const fs::path& cache, const fs::path& snap, const std::string& name) {
  const fs::path repo = snap.parent_path().parent_path();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(snap, ec)) {
    if (!e.is_symlink(ec)) continue;  // a copy (no symlinks on this file system): nothing names it
    const fs::path target = fs::read_symlink(e.path(), ec);
    if (ec || target.parent_path() != fs::path("..") / ".." / "blobs") continue;
    const std::string etag = target.filename().string();
    const fs::path blob = repo / "blobs" / etag;
    if (!fs::is_regular_file(blob, ec)) continue;  // a dangling link fails where it is read
    if (const std::string bad = check_cached_blob(cache, repo, blob, etag,
                                                  e.path().filename().string(), false);
        !bad.empty()) {
      throw Error(bad, fmt::format("run `llmft download {}`: it replaces the damaged file", name));
    }
  }
}

std::string strip_org(const std::string& name) {
  const std::string org = std::string(kOrg) + "/";
  return name.rfind(org, 0) == 0 ? name.substr(org.size()) : name;
}

}  // namespace

fs::path hub_cache_dir() {
  if (auto v = env_value("HF_HUB_CACHE"); !v.empty()) return v;
  if (auto v = env_value("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;  // older name
  if (auto v = env_value("HF_HOME"); !v.empty()) return fs::path(v) / "hub";
  if (auto home = user_cache_home(); !home.empty()) return home / "huggingface" / "hub";
  throw Error("cannot find the Hugging Face cache: HOME is not set",
              "set HF_HOME or HF_HUB_CACHE");
}

std::string hf_endpoint() {
  std::string e = env_value("HF_ENDPOINT");
  if (e.empty()) e = "https://huggingface.co";
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

std::string hub_repo_id(const std::string& name) {
  return fmt::format("{}/{}", kOrg, strip_org(name));
}

fs::path hub_repo_dir(const fs::path& cache, const std::string& repo_id) {
  std::string folder = "models--" + repo_id;
  for (size_t i = folder.find('/'); i != std::string::npos; i = folder.find('/'))
    folder.replace(i, 1, "--");
  return cache / folder;
}

std::optional<fs::path> find_cached_model(const std::string& name, const fs::path& cache) {
  const fs::path repo = hub_repo_dir(cache, hub_repo_id(name));
  std::error_code ec;
  if (!fs::is_directory(repo / "snapshots", ec)) return std::nullopt;
  if (fs::exists(repo / "refs" / "main", ec)) {
    std::string commit = read_file(repo / "refs" / "main");
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
    if (safe_component(commit) && complete_snapshot(repo / "snapshots" / commit))
      return repo / "snapshots" / commit;
  }
  std::optional<fs::path> best;
  fs::file_time_type best_time{};
  for (const auto& entry : fs::directory_iterator(repo / "snapshots", ec)) {
    if (!entry.is_directory(ec) || !complete_snapshot(entry.path())) continue;
    const auto t = fs::last_write_time(entry.path(), ec);
    if (!best || t > best_time) best = entry.path(), best_time = t;
  }
  return best;
}

fs::path download_model(const std::string& name, const DownloadOptions& opts) {
  const std::string short_name = strip_org(name);
  if (!is_known_model_name(short_name)) {
    throw UsageError(fmt::format("unknown model name '{}'", name),
                     "expected gpt2, gpt2-medium, gpt2-large or gpt2-xl");
  }
  if (env_true("HF_HUB_OFFLINE")) {
    throw Error(fmt::format("cannot download {}: HF_HUB_OFFLINE is set", short_name),
                "unset HF_HUB_OFFLINE, or pass a local model folder");
  }
  const fs::path cache = opts.cache_dir.empty() ? hub_cache_dir() : opts.cache_dir;
  const std::string repo_id = hub_repo_id(short_name);
  const std::string endpoint = hf_endpoint();
  const fs::path repo = hub_repo_dir(cache, repo_id);
  std::error_code ec;
  fs::create_directories(repo / "blobs", ec);
  if (ec) throw Error(fmt::format("{}: cannot create folder: {}", repo.string(), ec.message()),
                      "check permissions, or choose another cache with --cache-dir or HF_HOME");
  // The first file pins the commit; the rest are fetched at that commit so the snapshot is one
  // consistent revision even if main moves meanwhile.
  std::string commit;
  const auto get = [&](const char* file, bool required) {
    const auto rf = head_file(endpoint, repo_id, commit.empty() ? "main" : commit, file, required);
    if (!rf) return;
    if (commit.empty()) commit = rf->commit;
    if (rf->commit != commit) {
      throw Error(fmt::format("{}: server answered commit {} for {}, expected {}", endpoint,
                              rf->commit, file, commit), "run the command again");
    }
    const fs::path blob = repo / "blobs" / rf->etag;
    const BlobLock lock(cache, repo, rf->etag);
    std::error_code e2;
    bool cached = fs::is_regular_file(blob, e2) &&
                        (rf->size < 0 || static_cast<int64_t>(fs::file_size(blob, e2)) == rf->size);
    if (cached) {
      // A damaged cached copy is replaced, as deleting it and downloading again would.
      if (const std::string bad = check_cached_blob(cache, repo, blob, rf->etag, file, true);
          !bad.empty()) {
        fmt::print(stderr, "{}; downloading it again\n", bad);
        fs::remove(blob, e2);
        cached = false;
      }
    }
    if (!cached) {
      fetch_blob(*rf, blob, file, opts);
      record_verified(cache, repo, rf->etag, blob);
    }
    link_snapshot(repo, commit, file, rf->etag);
  };
  for (const char* f : kRequiredFiles) get(f, true);
  for (const char* f : kOptionalFiles) get(f, false);
  write_file_atomic(repo / "refs" / "main", commit);
  return repo / "snapshots" / commit;
}

fs::path resolve_model(const std::string& name_or_dir, bool allow_download) {
  std::error_code ec;
  const fs::path as_path(name_or_dir);
  if (fs::is_directory(as_path, ec)) return as_path;
  const std::string name = strip_org(name_or_dir);
  if (!is_known_model_name(name)) {
    if (fs::exists(as_path, ec)) {
      throw UsageError(fmt::format("{}: is a file, expected a model folder or name", name_or_dir),
                       "pass the folder that holds config.json and model.safetensors");
    }
    throw UsageError(fmt::format("no model folder or known model name '{}'", name_or_dir),
                     "expected gpt2, gpt2-medium, gpt2-large, gpt2-xl or a folder with config.json "
                     "and model.safetensors");
  }
  const fs::path cache = hub_cache_dir();
  if (auto dir = find_cached_model(name, cache)) {
    verify_cached_snapshot(cache, *dir, name);
    return *dir;
  }
  if (!allow_download || env_true("HF_HUB_OFFLINE")) {
    throw Error(fmt::format("model {} is not in the Hugging Face cache {} and downloads are off",
                            name, cache.string()),
                fmt::format("run `llmft download {}` while online (or set HF_HOME to the cache "
                            "that has it), or pass a local model folder", name));
  }
  return download_model(name, {});
}

}  // namespace llmft
