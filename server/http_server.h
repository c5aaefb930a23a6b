// paygentd's HTTP/1.1 layer: Boost.Beast with C++20 coroutines, one session per connection, in
// front of Api::handle_request. This header includes no Boost: the one translation unit that
// does is server/http_server.cpp.
//
// Thread safety: serve() runs the server on the calling thread and a pool of its own; call it
// once per process (it handles SIGTERM and SIGINT).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/api.h"
#include "server/webhooks.h"

namespace paygent::server {

struct ServerOptions {
  // "host:port" to listen on; port 0 picks a free port (the chosen one is given to on_listening).
  std::string listen = "127.0.0.1:8080";
  // Largest request header, trailer fields included (they are read, counted here, and dropped).
  // Beyond it the request is refused with 413 and the connection closed. Each connection's read
  // buffer is capped at header_limit + 64 KiB, which bounds a chunk-size line or a trailer
  // section before it is parsed; chunk extensions are capped at 1 KiB per request.
  std::size_t header_limit = 16 << 10;
  // Time allowed to receive a whole request, and to wait for the next one on a kept-alive
  // connection. Shorter frees a slow or idle client's connection sooner.
  absl::Duration read_timeout = absl::Seconds(30);
  // Time allowed to send a response to a client that reads it slowly.
  absl::Duration write_timeout = absl::Seconds(30);
  // Threads that run sessions (each request runs on one of them). 0: one per core, at least 2.
  int threads = 0;
};

// Listens on options.listen and answers every request with api.handle_request(). Calls
// on_listening("address:port") once the socket is listening and the signal handlers are in
// place. Runs until SIGTERM or SIGINT; then stops accepting, closes idle connections, lets each
// request in flight finish and be answered (with "Connection: close"), and returns OK. A request
// whose header was not yet fully received is dropped unanswered, so the client (the syncer) sends
// it again. A request whose framing is in doubt (no or several Host, a transfer coding other than
// "chunked" alone, Content-Length with Transfer-Encoding, a limit passed) is answered 400 or 413
// and its connection closed; HEAD is answered as GET without the body. An exception while
// serving one connection closes that connection only. Fails with InvalidArgument for a malformed `listen`, Unavailable when it cannot bind.
absl::Status serve(const ServerOptions& options, Api& api, const std::function<void(std::string_view)>& on_listening);

// The WebhookPoster of paygentd (server/webhooks.h): one HTTP/1.1 POST over a new connection,
// closed after the answer; the status of the answer, or Unavailable (cannot connect, reset, a TLS
// handshake that failed: "TLS handshake with host:port failed: certificate verify failed ...") or
// DeadlineExceeded (no whole answer within `timeout`, resolve to read). An https:// URL is posted
// over TLS 1.2 or newer, the receiver's certificate verified against the system's trusted
// certificates and `ca_file`'s (PEM; --webhook-ca-file, empty: none) and for the URL's host
// (SNI for a name). InvalidArgument when `ca_file` cannot be loaded. The poster is safe from any
// thread and holds its TLS context for as long as it lives.
absl::StatusOr<WebhookPoster> webhook_poster(const std::string& ca_file);
// The same with the system's trusted certificates only.
absl::StatusOr<int> post_webhook(const WebhookPost& post, absl::Duration timeout);

}  // namespace paygent::server
