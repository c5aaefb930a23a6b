// paygent-proxy's client to a provider (the upstream): one HTTP/1.1 exchange per call, over plain
// TCP (tests, loopback) or TLS with the peer's certificate and host name verified through OpenSSL
// against the system's trust store, as Beast's examples do. The response is read as it arrives, so
// that a stream is forwarded chunk by chunk. Connections are kept alive in an UpstreamPool and
// reused by later calls. The only translation unit of the proxy's client side that includes
// Boost.Asio/Beast.
//
// Asynchronous: a call is driven by the caller's coroutine (a Task: Boost.Asio C++20 coroutine on
// an io_context's executor, see Executor); while it waits for the upstream, the thread serves
// other connections.
// Thread safety: an UpstreamCall is used by one coroutine at a time, on an io_context run by ONE
// thread (Beast's stream timeouts need all of a connection's handlers on one strand); an
// UpstreamPool by any number of threads at once. A pooled connection is kept for, and reused by,
// calls on the io_context that opened it (one pool serves several single-threaded io_contexts,
// as paygent-proxy's workers are). parse_upstream_url is a free function.
// Lifetime: an UpstreamCall owns its connection while it lives. The io_context its calls run on must
// outlive the pool and every call (a connection's socket is registered with it). Destroying it hands the connection
// back to its pool only when the response was read to its end, without error, and the upstream did
// not say `Connection: close`; otherwise (a stream cut or abandoned mid-way, a broken or unread
// response) destroying it closes the connection, which is how a cut stream stops the provider's
// generation. A call keeps its pool's shared state alive, so calls and the pool may be destroyed
// in either order (a connection released after its pool is gone is closed).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace paygent::proxy {

// The executor paygent-proxy's coroutines and sockets run on: a worker's io_context, named by its
// own type. Asio's default (any_io_executor) erases that type behind a table of functions the
// proxy never needs: ~9k instructions, ~530 instruction-cache and ~55 data-cache misses per
// proxied stream (callgrind, bench/README.md).
using Executor = boost::asio::io_context::executor_type;
template <class T>
using Task = boost::asio::awaitable<T, Executor>;

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

struct UpstreamRequest {
  std::string target;  // path and query, base_path included
  // The headers forwarded as given, each "Name: value\r\n" (UpstreamCall adds Host,
  // Content-Length and Connection). One string, built once: a vector of name and value strings
  // took two allocations per header on the way to the provider.
  std::string header_lines;
  std::string body;

  // Adds a header line. `name` and `value` come from a parsed request (no CR or LF in them).
  void add_header(std::string_view name, std::string_view value);
};

struct UpstreamHead {
  int status = 0;
  // Every header of the answer, each "Name: value\r\n" (for_each_header_line walks them): one
  // string, not a name and a value string per header.
  std::string header_lines;
  bool event_stream = false;  // Content-Type: text/event-stream
};

// Idle keep-alive connections, per upstream (scheme, host and port), for reuse by later calls. A
// connection is idle in the pool only between two calls; no two calls ever hold the same one.
// At most `max_idle` idle connections per upstream (and io_context) are kept (more are closed when released), and
// one idle for longer than `idle_timeout` is closed instead of reused (checked whenever the pool is
// used: an idle proxy keeps them until its next call, when they are found dead or expired).
// A pooled connection idle for a second or more that the upstream closed meanwhile (readable at
// checkout: EOF) is dropped; one closed sooner is met by start()'s one retry.
//
// Thread safety: every member may be called from any thread. Lifetime: destroying the pool closes
// its idle connections; connections still held by calls are closed when those calls end.
class UpstreamPool {
 public:
  struct Limits {
    int max_idle = 64;  // per upstream; 0: no reuse (a connection per call, Connection: close)
    absl::Duration idle_timeout = absl::Seconds(30);  // below the providers' own keep-alive timeouts
  };
  struct Stats {
    std::int64_t connects = 0;  // new connections opened
    std::int64_t reuses = 0;    // calls started on a pooled connection
    std::int64_t retries = 0;   // stale pooled connections replaced by a new one (the request re-sent)
    std::int64_t idle = 0;      // idle connections held now
  };

  explicit UpstreamPool(Limits limits);
  UpstreamPool() : UpstreamPool(Limits{}) {}
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  [[nodiscard]] Stats stats() const noexcept;

  class Impl;  // proxy/upstream.cpp

 private:
  friend class UpstreamCall;
  std::shared_ptr<Impl> impl_;
};

class UpstreamCall {
 public:
  virtual ~UpstreamCall() = default;

  // Sends `request` on an idle connection of `pool` (nullptr: no pool, a new connection closed
  // after the call) or a new one, and reads the response's head. Connecting (and the TLS handshake)
  // waits at most `timeout`; sending the request and receiving the head together at most `timeout`.
  // A pooled connection that fails on the write or the head's read before any byte of a response
  // arrived, because the upstream closed or reset it, is replaced ONCE by a new connection and the
  // request sent again there; never after a response byte arrived, nor after a timeout (the
  // upstream may be working on it).
  // Errors: DeadlineExceeded (no answer in time), Unavailable (cannot connect, TLS verification
  // failed, the connection broke, or the answer is not HTTP/1.1), each naming the upstream.
  // Runs on the awaiting coroutine's executor. `url`, `request`, `pool` and what `while_waiting`
  // refers to must stay valid until it completes. `while_waiting`, when given, is called once,
  // on this executor, as soon as the request has been handed to the connection and before the
  // answer is awaited: work the caller needs only for the answer is done there, while the
  // upstream works (paygent-proxy builds its x-paygent-* headers). Not called when the request
  // could not be sent (on a retry it is called after the resend). An exception it throws comes
  // out of start() (the connection is then closed, not pooled).
  static Task<absl::StatusOr<std::unique_ptr<UpstreamCall>>> start(
      const UpstreamUrl& url, const UpstreamRequest& request, absl::Duration timeout, UpstreamPool* pool = nullptr,
      absl::FunctionRef<void()> while_waiting = +[] {});

  [[nodiscard]] virtual const UpstreamHead& head() const noexcept = 0;
  // The next bytes of the body (chunked encoding removed), valid until the next call; empty at
  // the end of the body. Errors as start(): silence longer than the timeout, a broken connection.
  virtual Task<absl::StatusOr<std::string_view>> read_some() = 0;
  // True when bytes of the body have arrived and not been returned by read_some yet (the next
  // read_some returns without waiting for the upstream).
  [[nodiscard]] virtual bool body_buffered() const noexcept = 0;
};

}  // namespace paygent::proxy
