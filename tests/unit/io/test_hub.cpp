// Hub cache and downloads against a local server in Hugging Face's URL layout (resolve/<rev>/<file>,
// X-Repo-Commit, X-Linked-Etag/-Size with a CDN redirect for LFS files, Range -> 206): a fresh
// download into the cache layout, resume of a partial file, a dropped connection, a corrupt file,
// a server that is down, and resolve_model over a cache left by Python tools.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <mutex>
#include <thread>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/hub.h"
#include "llmft/io/sha1.h"
#include "llmft/io/sha256.h"
#include "test_util.h"

using namespace llmft;
using llmft::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr const char* kCommit = "0123456789abcdef0123456789abcdef01234567";

struct Request {
  std::string method, path, range;
};

// A tiny Hugging Face hub serving openai-community/gpt2 (a 2-layer toy written by our writer).
class HubServer {
 public:
  explicit HubServer(std::map<std::string, std::string> files) : files_(std::move(files)) {
    svr_.Get(R"(/openai-community/([^/]+)/resolve/([^/]+)/(.+))",
             [this](const httplib::Request& req, httplib::Response& res) {
               record(req);
               const std::string name = req.matches[1], rev = req.matches[2], file = req.matches[3];
               if (name != "gpt2" || (rev != "main" && rev != kCommit) || !files_.count(file)) {
                 res.status = 404;
                 res.set_header("X-Error-Code", "EntryNotFound");
                 return;
               }
               res.set_header("X-Repo-Commit", kCommit);
               const std::string& body = files_.at(file);
               const std::string sha = sha256_hex(body);
               if (file == "model.safetensors") {  // LFS: metadata here, bytes on the CDN
                 res.set_header("X-Linked-Etag", "\"" + sha + "\"");
                 res.set_header("X-Linked-Size", std::to_string(body.size()));
                 res.set_redirect("/cdn/" + sha, 302);
                 return;
               }
               res.set_header("ETag", "\"" + git_blob_sha1_hex(body) + "\"");  // git's blob id
               std::string sent = body;
               if (file == corrupt_file && req.method == "GET") sent[sent.size() / 2] ^= 0x01;
               res.set_content(sent, "application/octet-stream");
             });
    svr_.Get(R"(/cdn/([0-9a-f]+))", [this](const httplib::Request& req, httplib::Response& res) {
      record(req);
      std::string body = files_.at("model.safetensors");
      if (req.matches[1] != sha256_hex(body)) {
        res.status = 404;
        return;
      }
      if (corrupt) body[body.size() / 2] ^= 0x40;
      if (drop_first && req.method == "GET" && !dropped_) {
        dropped_ = true;  // send the first half, then cut the connection
        const size_t half = body.size() / 2;
        res.set_content_provider(body.size(), "application/octet-stream",
                                 [body, half](size_t offset, size_t, httplib::DataSink& sink) {
                                   if (offset >= half) return false;
                                   sink.write(body.data(), half);
                                   return true;
                                 });
        return;
      }
      res.set_content(body, "application/octet-stream");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
  }
  ~HubServer() {
    while (!svr_.is_running()) std::this_thread::yield();  // stop() is a no-op before listen
    svr_.stop();
    thread_.join();
  }
  std::string url() const { return fmt::format("http://127.0.0.1:{}", port_); }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }
  bool corrupt = false;      // model.safetensors (LFS) arrives with one bit flipped
  std::string corrupt_file;  // this small (git-stored) file arrives with one bit flipped
  bool drop_first = false;

 private:
  void record(const httplib::Request& req) {
    std::lock_guard<std::mutex> lock(mu_);
    log_.push_back({req.method, req.path, req.get_header_value("Range")});
  }
  std::map<std::string, std::string> files_;
  httplib::Server svr_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Request> log_;
  bool dropped_ = false;
};

// A port on 127.0.0.1 that refuses connections: bound, never listening, held for the test.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port_ = ntohs(a.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  std::string url() const { return fmt::format("http://127.0.0.1:{}", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

Gpt2Config tiny() {
  Gpt2Config c;
  c.V = 11, c.maxT = 8, c.C = 8, c.L = 2, c.NH = 2;
  return c;
}

// The served repository: config.json, model.safetensors, vocab.json, merges.txt (and no
// generation_config.json, which is optional).
std::map<std::string, std::string> tiny_repo(const TempDir& dir) {
  const ParamTable table(tiny());
  std::vector<float> p(static_cast<size_t>(table.total()));
  for (size_t i = 0; i < p.size(); ++i) p[i] = 0.01f * static_cast<float>(i % 101);
  write_hf_folder(dir / "src", tiny(), table, p);
  std::map<std::string, std::string> files;
  for (const char* f : {"config.json", "model.safetensors", "vocab.json", "merges.txt"})
    files[f] = read_file(dir / "src" / f);
  return files;
}

class Hub : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"})
      ::unsetenv(v);
    ::setenv("HF_HOME", (tmp_ / "hf").c_str(), 1);
    files_ = tiny_repo(tmp_);
  }
  void TearDown() override {
    ::unsetenv("HF_HOME");
    ::unsetenv("HF_ENDPOINT");
  }
  fs::path cache() const { return tmp_ / "hf" / "hub"; }
  fs::path repo() const { return cache() / "models--openai-community--gpt2"; }
  std::string model_sha() const { return sha256_hex(files_.at("model.safetensors")); }
  DownloadOptions opts() const {
    DownloadOptions o;
    o.cache_dir = cache();
    o.progress = false;
    return o;
  }
  TempDir tmp_;
  std::map<std::string, std::string> files_;
};

int count_gets(const std::vector<Request>& log, const std::string& path_prefix) {
  int n = 0;
  for (const auto& r : log) n += r.method == "GET" && r.path.rfind(path_prefix, 0) == 0;
  return n;
}

}  // namespace

TEST_F(Hub, CacheFolderFollowsHuggingFaceEnvironment) {
  EXPECT_EQ(hub_cache_dir(), tmp_ / "hf" / "hub");
  ::setenv("HF_HUB_CACHE", "/elsewhere/hub", 1);
  EXPECT_EQ(hub_cache_dir(), fs::path("/elsewhere/hub"));
  ::unsetenv("HF_HUB_CACHE");
  ::setenv("HF_ENDPOINT", "http://mirror.example/", 1);
  EXPECT_EQ(hf_endpoint(), "http://mirror.example");
  EXPECT_EQ(hub_repo_dir("/c", hub_repo_id("gpt2-medium")),
            fs::path("/c/models--openai-community--gpt2-medium"));
}

TEST_F(Hub, FreshDownloadFillsTheCacheLayout) {
  HubServer server(files_);
  ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
  const fs::path snap = download_model("gpt2", opts());
  EXPECT_EQ(snap, repo() / "snapshots" / kCommit);
  EXPECT_EQ(read_file(repo() / "refs" / "main"), kCommit);
  for (const auto& [name, bytes] : files_) {
    const fs::path ptr = snap / name;
    ASSERT_TRUE(fs::is_symlink(ptr)) << name;
    const std::string etag = name == "model.safetensors" ? model_sha() : git_blob_sha1_hex(bytes);
    EXPECT_EQ(fs::read_symlink(ptr), fs::path("../../blobs") / etag) << name;
    EXPECT_EQ(read_file(ptr), bytes) << name;
  }
  EXPECT_FALSE(fs::exists(snap / "generation_config.json"));  // optional, absent on this server
  for (const auto& e : fs::directory_iterator(repo() / "blobs"))
    EXPECT_EQ(e.path().extension(), "") << "left behind: " << e.path();
  // The snapshot is a model folder.
  const HfModel m = read_hf_folder(snap);
  EXPECT_EQ(m.model.config().describe(), tiny().describe());
  // Downloading again asks for metadata only.
  const size_t requests = server.requests().size();
  EXPECT_EQ(count_gets(server.requests(), "/cdn/"), 1);
  EXPECT_EQ(download_model("gpt2", opts()), snap);
  const auto log = server.requests();
  for (size_t i = requests; i < log.size(); ++i) EXPECT_EQ(log[i].method, "HEAD") << log[i].path;
}

TEST_F(Hub, ResumesAPartialFileWithARangeRequest) {
  HubServer server(files_);
  ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
  const std::string& model = files_.at("model.safetensors");
  const size_t have = model.size() / 3;
  write_file_atomic(repo() / "blobs" / (model_sha() + ".incomplete"), model.substr(0, have));
  const fs::path snap = download_model("gpt2", opts());
  bool ranged = false;
  for (const auto& r : server.requests())
    if (r.method == "GET" && r.path == "/cdn/" + model_sha()) {
      EXPECT_EQ(r.range, fmt::format("bytes={}-", have));
      ranged = true;
    }
  EXPECT_TRUE(ranged);
  EXPECT_EQ(read_file(snap / "model.safetensors"), model);
  EXPECT_FALSE(fs::exists(repo() / "blobs" / (model_sha() + ".incomplete")));
}

TEST_F(Hub, ResumesAfterTheConnectionDrops) {
  HubServer server(files_);
  server.drop_first = true;
  ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
  const fs::path snap = download_model("gpt2", opts());
  EXPECT_EQ(read_file(snap / "model.safetensors"), files_.at("model.safetensors"));
  std::vector<std::string> ranges;
  for (const auto& r : server.requests())
    if (r.method == "GET" && r.path.rfind("/cdn/", 0) == 0) ranges.push_back(r.range);
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], fmt::format("bytes={}-", files_.at("model.safetensors").size() / 2));
}

TEST_F(Hub, CorruptDownloadIsRejectedAndDeleted) {
  HubServer server(files_);
  server.corrupt = true;
  ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
  try {
    download_model("gpt2", opts());
    ADD_FAILURE() << "corrupt file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(model_sha()), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(repo() / "snapshots" / kCommit / "model.safetensors"));
  EXPECT_FALSE(fs::exists(repo() / "blobs" / model_sha()));
  EXPECT_FALSE(fs::exists(repo() / "blobs" / (model_sha() + ".incomplete")));
  EXPECT_FALSE(fs::exists(repo() / "refs" / "main"));
  EXPECT_EQ(find_cached_model("gpt2", cache()), std::nullopt);
}

TEST_F(Hub, CorruptSmallFileIsRejectedAndDeleted) {
  for (const char* file : {"config.json", "vocab.json", "merges.txt"}) {
    HubServer server(files_);
    server.corrupt_file = file;
    ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
    const std::string id = git_blob_sha1_hex(files_.at(file));
    try {
      download_model("gpt2", opts());
      ADD_FAILURE() << "corrupt " << file << " accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << msg;
      EXPECT_NE(msg.find("git blob sha1"), std::string::npos) << msg;
      EXPECT_NE(msg.find(id), std::string::npos) << msg;  // the expected hash
      std::string bad = files_.at(file);
      bad[bad.size() / 2] ^= 0x01;
      EXPECT_NE(msg.find(git_blob_sha1_hex(bad)), std::string::npos) << msg;  // the actual one
    }
    EXPECT_FALSE(fs::exists(repo() / "blobs" / id)) << file;
    EXPECT_FALSE(fs::exists(repo() / "blobs" / (id + ".incomplete"))) << file;
    EXPECT_FALSE(fs::exists(repo() / "snapshots" / kCommit / file)) << file;
  }
}

TEST_F(Hub, CorruptedCachedBlobOfTheRightSizeIsCaught) {
  std::optional<fs::path> snap;
  {
    HubServer server(files_);
    ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
    snap = download_model("gpt2", opts());
  }
  // Unchanged: used as is (and without network: the server is gone).
  EXPECT_EQ(resolve_model("gpt2", false), *snap);
  for (const char* file : {"model.safetensors", "merges.txt"}) {
    const std::string id = std::string(file) == "model.safetensors"
                               ? model_sha() : git_blob_sha1_hex(files_.at(file));
    const fs::path blob = repo() / "blobs" / id;
    std::string bytes = files_.at(file);
    bytes[bytes.size() / 3] ^= 0x10;  // same size, other contents, written later
    write_file_atomic(blob, bytes);
    fs::last_write_time(blob, fs::last_write_time(blob) + std::chrono::seconds(5));
    try {
      resolve_model("gpt2", false);
      ADD_FAILURE() << "corrupt cached " << file << " accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string(file) + ": the cached copy"), std::string::npos) << msg;
      EXPECT_NE(msg.find(id), std::string::npos) << msg;
      const std::string got = std::string(file) == "model.safetensors" ? sha256_hex(bytes)
                                                                        : git_blob_sha1_hex(bytes);
      EXPECT_NE(msg.find(got), std::string::npos) << msg;
      EXPECT_NE(e.hint().find("llmft download gpt2"), std::string::npos) << e.hint();
    }
    // `llmft download` replaces the damaged copy; then the cache is used again.
    HubServer server(files_);
    ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
    EXPECT_EQ(download_model("gpt2", opts()), *snap);
    EXPECT_EQ(read_file(blob), files_.at(file));
    EXPECT_EQ(resolve_model("gpt2", false), *snap);
  }
}

TEST_F(Hub, DownloadRehashesCachedFilesEvenWhenTheirStampMatches) {
  HubServer server(files_);
  ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
  download_model("gpt2", opts());
  // Bit rot: contents change, size and modification time do not.
  const fs::path blob = repo() / "blobs" / model_sha();
  const auto mtime = fs::last_write_time(blob);
  std::string bytes = files_.at("model.safetensors");
  bytes[bytes.size() / 2] ^= 0x02;
  write_file_atomic(blob, bytes);
  fs::last_write_time(blob, mtime);
  const int before = count_gets(server.requests(), "/cdn/");
  download_model("gpt2", opts());
  EXPECT_EQ(count_gets(server.requests(), "/cdn/"), before + 1);  // fetched again
  EXPECT_EQ(read_file(blob), files_.at("model.safetensors"));
}

TEST_F(Hub, ServerDownIsAClearError) {
  ClosedPort closed;
  ::setenv("HF_ENDPOINT", closed.url().c_str(), 1);
  try {
    download_model("gpt2", opts());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach " + closed.url()), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("HF_ENDPOINT"), std::string::npos);
  }
  EXPECT_THROW(resolve_model("gpt2", /*allow_download=*/true), Error);
}

TEST_F(Hub, MissingRepositoryFileIsAClearError) {
  auto files = files_;
  files.erase("merges.txt");
  HubServer server(files);
  ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
  try {
    download_model("gpt2", opts());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt: not found (HTTP 404)"), std::string::npos)
        << e.what();
  }
}

TEST_F(Hub, ResolveModelDownloadsIntoHfHome) {
  HubServer server(files_);
  ::setenv("HF_ENDPOINT", server.url().c_str(), 1);
  EXPECT_EQ(resolve_model("openai-community/gpt2", true), repo() / "snapshots" / kCommit);
}

TEST_F(Hub, ResolveModelUsesACacheLeftByPythonWithoutNetwork) {
  ClosedPort closed;  // any network use would fail
  ::setenv("HF_ENDPOINT", closed.url().c_str(), 1);
  // What huggingface_hub leaves: blobs by etag, relative symlinks, refs/main.
  const std::string rev = "fedcba9876543210fedcba9876543210fedcba98";
  for (const char* f : {"config.json", "model.safetensors"}) {
    const std::string etag = sha256_hex(files_.at(f));
    write_file_atomic(repo() / "blobs" / etag, files_.at(f));
    fs::create_directories(repo() / "snapshots" / rev);
    fs::create_symlink(fs::path("../../blobs") / etag, repo() / "snapshots" / rev / f);
  }
  write_file_atomic(repo() / "refs" / "main", rev);
  EXPECT_EQ(resolve_model("gpt2", true), repo() / "snapshots" / rev);
  EXPECT_EQ(read_hf_folder(resolve_model("gpt2", false)).model.config().describe(), tiny().describe());
  // refs/main pointing at an incomplete snapshot, then no refs at all: any complete snapshot.
  fs::create_directories(repo() / "snapshots" / "1111111111111111111111111111111111111111");
  write_file_atomic(repo() / "refs" / "main", std::string("1111111111111111111111111111111111111111"));
  EXPECT_EQ(resolve_model("gpt2", false), repo() / "snapshots" / rev);
  fs::remove(repo() / "refs" / "main");
  EXPECT_EQ(resolve_model("gpt2", false), repo() / "snapshots" / rev);
}

TEST_F(Hub, ResolveModelErrors) {
  TempDir folder;
  EXPECT_EQ(resolve_model(folder.path().string(), false), folder.path());
  EXPECT_THROW(resolve_model("gpt3", true), UsageError);
  try {
    resolve_model("gpt2-medium", /*allow_download=*/false);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not in the Hugging Face cache " + cache().string()),
              std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("llmft download gpt2-medium"), std::string::npos) << e.hint();
  }
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  EXPECT_THROW(resolve_model("gpt2", true), Error);
  EXPECT_THROW(download_model("gpt2", opts()), Error);
  ::unsetenv("HF_HUB_OFFLINE");
}

TEST_F(Hub, DownloadCommandPrintsTheSnapshotFolder) {
  HubServer server(files_);
  const fs::path dir = tmp_ / "cli-cache";
  const auto r = llmft::test::run_llmft({"download", "gpt2", "--cache-dir", dir.string()}, "",
                                        {"HF_ENDPOINT=" + server.url()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path snap = dir / "models--openai-community--gpt2" / "snapshots" / kCommit;
  EXPECT_EQ(r.out, snap.string() + "\n");
  EXPECT_EQ(read_file(snap / "model.safetensors"), files_.at("model.safetensors"));
  const auto bad = llmft::test::run_llmft({"download", "gpt5"}, "", {"HF_ENDPOINT=" + server.url()});
  EXPECT_EQ(bad.exit_code, 2);
}
