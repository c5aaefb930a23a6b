// paygent-proxy's HTTP server: serves the providers' own APIs (OpenAI chat completions and
// responses, Anthropic messages, Gemini generateContent/streamGenerateContent), gates each call
// with a paygent::Paygent (reserve the worst case, refuse over the hard gate, settle on the
// response's usage) and forwards it to the provider's configured upstream. docs/proxy.md.
//
// Fail-open: when Paygent fails (anything but the intentional hard gate), the request is still
// forwarded, unmetered, and counted in ProxyStats::fail_open.
//
// Thread safety: a ProxyServer serves every connection as a coroutine (Boost.Asio, C++20) on one
// of its workers (ProxyOptions::threads), each an event loop (io_context) run by one thread, as
// nginx's workers are: worker 0 accepts and places each client connection on the worker serving
// the fewest (itself when even), a connection waiting for its client or its upstream holds no
// thread, and each worker keeps its own pooled upstream connections. A gate that may wait for the backend (Paygent::gate_may_wait: budget leases, up to
// lease_wait) runs on 8 threads of its own instead, so that it never holds up the other
// connections of its worker. stats() may be called from any thread. Lifetime: the Paygent passed to start() must outlive the ProxyServer's
// stop() (or destructor); stop() closes the listener, shuts down every client connection, waits
// for the calls in flight to end (an upstream that stays silent: until upstream_timeout) and joins
// the threads; destroying it closes the idle upstream connections. The caller's provider key is
// forwarded and never logged or kept.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "paygent/paygent.h"

namespace paygent::proxy {

struct ProxyOptions {
  std::string listen_host = "127.0.0.1";
  int listen_port = 8787;  // 0: any free port (see ProxyServer::port())
  // Base URLs of the providers, e.g. "https://api.openai.com". Empty: that provider's routes answer
  // 502 naming the missing flag.
  std::string upstream_openai;
  std::string upstream_anthropic;
  std::string upstream_gemini;
  // The operator's key for each provider. Set: sent upstream in that provider's own header
  // (OpenAI `Authorization: Bearer`, Anthropic `x-api-key`, Gemini `x-goog-api-key`) instead of
  // any key the caller sent (its `authorization`, `x-api-key` and `x-goog-api-key` headers and a
  // Gemini `key=` query parameter are dropped), so applications run with a placeholder key and
  // never hold the real one. Empty: the caller's key passes through unchanged. Never logged,
  // never stored, never echoed in an answer.
  std::string openai_api_key;
  std::string anthropic_api_key;
  std::string gemini_api_key;
  // Lower max_tokens (or set it when absent) to what the user can still afford, so that the
  // provider itself stops at the cap. Off: a request whose max_tokens does not fit is refused.
  bool lower_max_tokens = true;
  // Largest request body accepted (413 past it). Bigger bodies are images and documents mostly.
  std::size_t max_body_bytes = 16 << 20;
  // Largest non-streamed upstream response read (502 past it).
  std::size_t max_response_bytes = 64 << 20;
  // How long the upstream may stay silent (connect, head, or between two reads of a stream) before
  // the call fails with 504 (a stream: is ended and metered on what it produced). Shorter frees
  // threads from a hung provider sooner; longer lets slow reasoning models think.
  absl::Duration upstream_timeout = absl::Seconds(600);
  // Keep-alive connections to each upstream (proxy/upstream.h, UpstreamPool): at most this many
  // idle per upstream, each for at most `upstream_idle_timeout`. 0: a new connection per call.
  int upstream_max_idle = 64;
  absl::Duration upstream_idle_timeout = absl::Seconds(30);
  // Threads serving the connections (each runs the event loop; any number of connections each).
  // 0: one per core (std::thread::hardware_concurrency).
  int threads = 0;
  // Off (the default): one listening socket, worker 0's, which places each new connection on the
  // worker serving the fewest (itself unless another serves two fewer; a moved connection costs
  // a wake-up of its worker). On, with several workers: each listens on a socket of its own, all
  // bound to the port with SO_REUSEPORT, and the kernel gives each new connection to one of them
  // (by a hash of its addresses), waking that worker only (nginx's `listen ... reuseport`); a
  // busy worker 0 then delays no accept, but the kernel's hash does not look at load.
  bool reuse_port = false;
};

// Monotonic counters (upstream_idle aside: a gauge). A value type.
struct ProxyStats {
  std::int64_t requests = 0;
  std::int64_t metered = 0;          // calls reserved and settled for a user
  std::int64_t unmetered = 0;        // calls that named no user, forwarded unmetered
  std::int64_t refused = 0;          // hard-gated: answered 429, nothing sent upstream
  std::int64_t cut_streams = 0;      // streams ended at the hard cap
  std::int64_t abandoned_streams = 0;  // the client went away mid-stream
  std::int64_t upstream_errors = 0;  // 502/504: no upstream, or it failed, hung or answered garbage
  std::int64_t bad_requests = 0;     // 400/404/413
  std::int64_t fail_open = 0;        // Paygent failed; the call went through unmetered
  // The upstream connection pool (UpstreamPool::Stats): connections opened, calls started on a
  // kept one, stale kept ones replaced (the request sent again), idle ones held now.
  std::int64_t upstream_connects = 0;
  std::int64_t upstream_reuses = 0;
  std::int64_t upstream_retries = 0;
  std::int64_t upstream_idle = 0;
  // The client connections each worker serves now (in worker order): how the listening socket
  // spread them.
  std::vector<std::int64_t> serving;
};

// The Options a Paygent serving the proxy needs: `options` with on_usage wrapped so that the proxy
// can report each call's cost to its caller (the original on_usage is still called).
Options proxy_paygent_options(Options options);

class ProxyServer {
 public:
  // Validates the upstream URLs (InvalidArgument naming the flag), binds and starts accepting.
  // `paygent` may be nullptr: every call is then forwarded unmetered.
  static absl::StatusOr<std::unique_ptr<ProxyServer>> start(ProxyOptions options, Paygent* paygent);
  virtual ~ProxyServer() = default;

  [[nodiscard]] virtual int port() const noexcept = 0;
  [[nodiscard]] virtual ProxyStats stats() const noexcept = 0;
  // Stops accepting, shuts down the client connections, waits for the calls in flight and the
  // threads. Idempotent; may be called from any thread but the server's own.
  virtual void stop() noexcept = 0;
};

}  // namespace paygent::proxy
