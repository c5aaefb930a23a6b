// paygent-proxy's client to a provider (the upstream): one HTTP/1.1 exchange per call, over plain
// TCP (tests, loopback) or TLS with the peer's certificate and host name verified through OpenSSL
// against the system's trust store, as Beast's examples do. The response is read as it arrives, so
// that a stream is forwarded chunk by chunk. The only translation unit of the proxy's client side
// that includes Boost.Asio/Beast.
//
// Thread safety: an UpstreamCall is used by one thread at a time. parse_upstream_url is a free
// function. Lifetime: an UpstreamCall owns its connection; destroying it closes the connection
// (which is how a cut or abandoned stream stops the provider's generation).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace paygent::proxy {

struct UpstreamUrl {
  bool tls = false;
  std::string host;
  std::string port;       // "443" / "80" when the URL names none
  std::string base_path;  // without a trailing '/': "" for "https://api.openai.com"
  friend bool operator==(const UpstreamUrl&, const UpstreamUrl&) = default;
};

// "http://127.0.0.1:9000", "https://api.anthropic.com", "https://host/prefix". InvalidArgument
// naming `field` (the flag) when it is not an http(s) URL with a host.
absl::StatusOr<UpstreamUrl> parse_upstream_url(std::string_view url, std::string_view field);

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct UpstreamRequest {
  std::string target;  // path and query, base_path included
  HeaderList headers;  // forwarded as given (Host, Content-Length and Connection are set here)
  std::string body;
};

struct UpstreamHead {
  int status = 0;
  HeaderList headers;
  bool event_stream = false;  // Content-Type: text/event-stream
};

class UpstreamCall {
 public:
  virtual ~UpstreamCall() = default;

  // Connects, sends `request` and reads the response's head. Each step waits at most `timeout`.
  // Errors: DeadlineExceeded (no answer in time), Unavailable (cannot connect, TLS verification
  // failed, the connection broke, or the answer is not HTTP/1.1), each naming the upstream.
  static absl::StatusOr<std::unique_ptr<UpstreamCall>> start(const UpstreamUrl& url, const UpstreamRequest& request,
                                                            absl::Duration timeout);

  [[nodiscard]] virtual const UpstreamHead& head() const noexcept = 0;
  // The next bytes of the body (chunked encoding removed), valid until the next call; empty at
  // the end of the body. Errors as start(): silence longer than the timeout, a broken connection.
  virtual absl::StatusOr<std::string_view> read_some() = 0;
};

}  // namespace paygent::proxy
