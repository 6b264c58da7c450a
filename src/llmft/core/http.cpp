#include "llmft/core/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <mutex>

#include "llmft/core/error.h"

namespace llmft {

namespace {

class HttpError : public Error {
 public:
  HttpError(const std::string& what, bool transient) : Error(what), transient_(transient) {}
  bool transient() const { return transient_; }

 private:
  bool transient_;
};

struct Ctx {
  const HttpDataFn* on_data;
  HttpResponse* resp;
  const HttpResponseFn* on_response;
  CURL* curl;
  bool aborted = false;
  bool started = false;  // the body of the final response has begun
  // idle_timeout_s: when bytes last moved, and whether the transfer was stopped for idling.
  double idle_timeout_s = 0;
  curl_off_t last_dl = -1, last_ul = -1;
  std::chrono::steady_clock::time_point last_activity{};
  bool idle_expired = false;
  int64_t max_body_bytes = 0, received = 0;
  bool too_large = false;
};

int on_progress(void* user, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t ulnow) {
  auto* ctx = static_cast<Ctx*>(user);
  const auto now = std::chrono::steady_clock::now();
  if (dlnow != ctx->last_dl || ulnow != ctx->last_ul) {
    ctx->last_dl = dlnow;
    ctx->last_ul = ulnow;
    ctx->last_activity = now;
    return 0;
  }
  if (std::chrono::duration<double>(now - ctx->last_activity).count() > ctx->idle_timeout_s) {
    ctx->idle_expired = true;
    return 1;  // makes curl stop with CURLE_ABORTED_BY_CALLBACK
  }
  return 0;
}

size_t on_write(char* ptr, size_t size, size_t n, void* user) {
  auto* ctx = static_cast<Ctx*>(user);
  const size_t len = size * n;
  if (!ctx->started) {
    ctx->started = true;
    curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &ctx->resp->status);
    if (*ctx->on_response && !(*ctx->on_response)(*ctx->resp)) {
      ctx->aborted = true;
      return 0;
    }
  }
  ctx->received += static_cast<int64_t>(len);
  if (ctx->max_body_bytes > 0 && ctx->received > ctx->max_body_bytes) {
    ctx->too_large = true;
    return 0;
  }
  if (*ctx->on_data) {
    if (!(*ctx->on_data)(std::string_view(ptr, len))) {
      ctx->aborted = true;
      return 0;  // makes curl stop with CURLE_WRITE_ERROR
    }
  } else {
    ctx->resp->body.append(ptr, len);
  }
  return len;
}

size_t on_header(char* ptr, size_t size, size_t n, void* user) {
  auto* resp = static_cast<HttpResponse*>(user);
  std::string line(ptr, size * n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {
    resp->headers.clear();  // a new response (after a redirect or 100-continue)
  } else if (!line.empty()) {
    resp->headers.push_back(std::move(line));
  }
  return size * n;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& h : headers) {
    const auto colon = h.find(':');
    if (colon == std::string::npos || colon != name.size()) continue;
    if (std::equal(name.begin(), name.end(), h.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      size_t v = colon + 1;
      while (v < h.size() && h[v] == ' ') ++v;
      return h.substr(v);
    }
  }
  return {};
}

HttpResponse http_request(const HttpRequest& req, const HttpDataFn& on_data,
                          const HttpResponseFn& on_response) {
  global_init();
  CURL* curl = curl_easy_init();
  if (!curl) throw Error("cannot initialise libcurl");
  HttpResponse resp;
  Ctx ctx{&on_data, &resp, &on_response, curl};
  curl_slist* headers = nullptr;
  for (const auto& h : req.headers) headers = curl_slist_append(headers, h.c_str());
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, req.follow_redirects ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, req.connect_timeout_s);
  if (req.read_timeout_s > 0) {
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, req.read_timeout_s);
  }
  if (req.idle_timeout_s > 0) {
    ctx.idle_timeout_s = req.idle_timeout_s;
    ctx.last_activity = std::chrono::steady_clock::now();
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &ctx);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  }
  if (req.deadline_s > 0) {
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(req.deadline_s * 1000));
  }
  ctx.max_body_bytes = req.max_body_bytes;
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ctx);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &resp);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "llmft/" LLMFT_VERSION);
  if (req.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (req.method == "POST" || !req.body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req.body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    if (req.method != "POST") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else if (req.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  const auto started = std::chrono::steady_clock::now();
  const CURLcode rc = curl_easy_perform(curl);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc == CURLE_ABORTED_BY_CALLBACK && ctx.idle_expired) {
    throw HttpError(fmt::format("{} {}: timed out: no data for {:g} s", req.method, req.url,
                                req.idle_timeout_s),
                    /*transient=*/true);
  }
  if (ctx.too_large) {
    throw HttpError(fmt::format("{} {}: the reply is over {} bytes", req.method, req.url,
                                req.max_body_bytes),
                    /*transient=*/false);
  }
  if (rc == CURLE_OPERATION_TIMEDOUT && req.deadline_s > 0 && took >= 0.9 * req.deadline_s) {
    throw HttpError(fmt::format("{} {}: no complete reply within {:g} s", req.method, req.url,
                                req.deadline_s),
                    /*transient=*/false);
  }
  if (rc != CURLE_OK && !(ctx.aborted && rc == CURLE_WRITE_ERROR)) {
    const bool transient = rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT ||
                           rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
                           rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE ||
                           rc == CURLE_COULDNT_RESOLVE_HOST;
    throw HttpError(fmt::format("{} {}: {}", req.method, req.url,
                                errbuf[0] ? errbuf : curl_easy_strerror(rc)),
                    transient);
  }
  return resp;
}

bool http_error_is_transient(const std::exception& e) {
  const auto* h = dynamic_cast<const HttpError*>(&e);
  return h && h->transient();
}

}  // namespace llmft
