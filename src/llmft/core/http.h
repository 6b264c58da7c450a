// A small HTTP(S) client over libcurl, shared by downloads and judge clients.
// Bodies stream through a callback, so multi-GB downloads and streamed replies never sit in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace llmft {

struct HttpRequest {
  std::string method = "GET";  // GET, POST, HEAD
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // sent when non-empty (POST)
  long connect_timeout_s = 10;
  // Abort when fewer than 1 byte/s arrives for this long (a stalled server); 0 = never.
  long read_timeout_s = 120;
  // Abort when no byte moves either way for this long, in seconds; 0 = off. Unlike
  // read_timeout_s (curl's speed check, averaged over several seconds) it fires within about a
  // second of the limit, so a stalled reply after an upload is caught on time. Transient.
  double idle_timeout_s = 0;
  // Abort when the whole request (connect, send, reply) takes longer than this, in seconds, however
  // steadily bytes trickle in; 0 = never. Not transient.
  double deadline_s = 0;
  // Abort when the reply body grows past this many bytes; 0 = no limit. Not transient.
  int64_t max_body_bytes = 0;
  bool follow_redirects = true;
};

struct HttpResponse;
// Called once with the final response's status and headers, before its first body byte (not at
// all for an empty body); return false to abort. Lets a download decide where bytes go (a 206
// resumes a partial file, a 200 restarts it, an error page goes nowhere).
using HttpResponseFn = std::function<bool(const HttpResponse& head)>;

struct HttpResponse {
  long status = 0;                   // 0 when no response arrived
  std::vector<std::string> headers;  // of the final response, "name: value" as sent
  std::string body;                  // only when no on_data callback was given
  // Case-insensitive header lookup; empty when absent.
  std::string header(std::string_view name) const;
};

// Called with each chunk of the body as it arrives; return false to abort the transfer.
using HttpDataFn = std::function<bool(std::string_view chunk)>;

// Performs one request. Throws Error (one line naming the URL and the cause: connection refused,
// timeout, TLS failure) when no HTTP response could be had; any HTTP status is returned, not thrown.
// With on_data, the body streams there (for every status) instead of into response.body.
HttpResponse http_request(const HttpRequest& req, const HttpDataFn& on_data = {},
                          const HttpResponseFn& on_response = {});

// True when the error thrown by http_request is worth retrying (connection refused/reset,
// timeout) rather than final (bad URL, TLS certificate).
bool http_error_is_transient(const std::exception& e);

}  // namespace llmft
