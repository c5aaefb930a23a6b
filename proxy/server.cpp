// paygent-proxy's HTTP/1.1 server side: the one translation unit of the proxy's server that
// includes Boost.Asio/Beast (the upstream client is proxy/upstream.cpp).
#include <utility>  // before Boost.Asio: Boost 1.74's awaitable.hpp needs std::exchange (GCC 12)

#include "proxy/server.h"
#include "proxy/text.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/str_join.h"
#include "meter/internal/percent.h"
#include "simdjson.h"

#include "proxy/replies.h"
#include "proxy/request.h"
#include "proxy/stream_relay.h"
#include "proxy/upstream.h"
#include "server/http_parser.h"

namespace paygent::proxy {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
// Sockets, timers and coroutines on the workers' own executor type (see Executor, upstream.h).
using Socket = net::basic_stream_socket<tcp, Executor>;
using Acceptor = net::basic_socket_acceptor<tcp, Executor>;
using Timer = net::basic_waitable_timer<std::chrono::steady_clock, net::wait_traits<std::chrono::steady_clock>, Executor>;
constexpr net::use_awaitable_t<Executor> use_task;

// Where on_usage adds the cost of the call being settled on this thread (proxy_paygent_options).
thread_local Nanos* cost_sink = nullptr;

struct CostCapture {
  Nanos cost = 0;
  CostCapture() { cost_sink = &cost; }
  ~CostCapture() { cost_sink = nullptr; }
};

struct Counters {
  std::atomic<std::int64_t> requests{0}, metered{0}, unmetered{0}, refused{0}, cut_streams{0}, abandoned_streams{0},
      upstream_errors{0}, bad_requests{0}, fail_open{0};
};

// Request headers never forwarded: hop-by-hop, the ones the client side sets itself, the proxy's
// own, Accept-Encoding (usage must be read from an uncompressed body) and Expect (the body is
// sent with the head: a provider's "100 Continue" would be taken for its answer).
bool forwarded_request_header(std::string_view name) {
  static constexpr std::string_view kDropped[] = {"host", "connection", "keep-alive", "proxy-connection",
                                                  "transfer-encoding", "te", "trailer", "upgrade",
                                                  "content-length", "accept-encoding", "proxy-authorization",
                                                  "expect"};
  for (std::string_view dropped : kDropped) {
    if (iequals(name, dropped)) return false;
  }
  return !istarts_with(name, "x-paygent-");
}

// The headers a caller's provider key travels in (all of them: a caller may send a provider
// another provider's header by mistake, and the operator's key replaces whatever it sent).
bool credential_header(std::string_view name) {
  return iequals(name, "authorization") || iequals(name, "x-api-key") || iequals(name, "x-goog-api-key");
}

// `target` without its `key=` query parameter (Gemini's key in the URL), the others in order.
std::string without_key_parameter(std::string_view target) {
  const std::size_t query = target.find('?');
  if (query == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, query));
  char separator = '?';
  std::string_view rest = target.substr(query + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view parameter = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (parameter.empty() || parameter == "key" || parameter.starts_with("key=")) continue;
    out += separator;
    out += parameter;
    separator = '&';
  }
  return out;
}

bool forwarded_response_header(std::string_view name) {
  // The x-paygent-* headers of an answer are the proxy's alone: an upstream's would duplicate or
  // counterfeit them. A line with no name (none that Beast parses) is not forwarded either.
  if (name.empty() || istarts_with(name, "x-paygent-")) return false;
  static constexpr std::string_view kDropped[] = {"connection", "keep-alive", "transfer-encoding", "trailer",
                                                  "upgrade", "content-length"};
  for (std::string_view dropped : kDropped) {
    if (iequals(name, dropped)) return false;
  }
  return true;
}

std::string status_line(int status) {
  const auto reason = http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status)));
  return str_cat("HTTP/1.1 ", status, " ", std::string_view(reason.data(), reason.size()), "\r\n");
}

class Server;

// One client connection: a coroutine on the server's io_context, serving its requests one after
// the other. Its socket is used by this coroutine only.
class Connection {
 public:
  Connection(Server& server, Socket socket) : server_(server), socket_(std::move(socket)) {}
  Task<void> serve();

 private:
  // Serves one request; false when the connection must close after it.
  Task<bool> handle(http::request<http::string_body>& request);
  Task<bool> forward(const RouteMatch& route, const CallRequest& call,
                               http::request<http::string_body>& request, const std::string& user);
  // Answers `status` with `body`. `own`: the proxy's own answer (a 4xx then says x-should-retry:
  // false); false for the provider's answer forwarded, whose retry advice is the provider's.
  // `extra`: header lines (append_header); without a content-type one, the body is JSON.
  Task<bool> reply(int status, std::string_view body, std::string_view extra = {}, bool keep_alive = true,
                             bool own = true);
  Task<bool> send(std::string_view bytes);
  // Sends `bytes` as one chunk, after `*head` (the response's head, not sent yet) when it is
  // given and not empty; `*head` is cleared once sent.
  Task<bool> send_chunk(std::string_view bytes, std::string* head = nullptr);

  Server& server_;
  Socket socket_;
  bool no_delay_ = false;  // TCP_NODELAY set (write_all)
};

// What the gate decided for a call (Server::gate): admitted (reservation active, or unmetered on
// fail-open), refused (the answer, built where the LimitExceeded was caught: its texts point
// into it), or failed (fail-open).
struct GateOutcome {
  Reservation reservation;
  std::optional<std::int64_t> new_max_tokens;
  std::int64_t allowed_output = -1;  // the output that fits, past which a stream is cut; -1: no bound
  std::optional<std::string> refusal;  // the body of the answer (or the stream's last event)
  std::string refusal_headers;  // header lines
  bool failed = false;
};

class Server final : public ProxyServer {
 public:
  Server(ProxyOptions options, Paygent* paygent)
      : options_(std::move(options)),
        paygent_(paygent),
        pool_(UpstreamPool::Limits{.max_idle = options_.upstream_max_idle, .idle_timeout = options_.upstream_idle_timeout}) {
    // A gate that may wait for the backend (budget leases: up to lease_wait) runs on threads of
    // its own, so that it never holds up the other connections of a connection thread.
    if (paygent_ != nullptr && paygent_->gate_may_wait()) gate_pool_.emplace(kGateThreads);
    int threads = options_.threads;
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>());
  }
  ~Server() override { stop(); }

  absl::Status open() {
    for (auto [flag, text, url] : {std::tuple{"--upstream-openai", &options_.upstream_openai, &openai_},
                                   std::tuple{"--upstream-anthropic", &options_.upstream_anthropic, &anthropic_},
                                   std::tuple{"--upstream-gemini", &options_.upstream_gemini, &gemini_}}) {
      if (text->empty()) continue;
      auto parsed = parse_upstream_url(*text, flag);
      if (!parsed.ok()) return parsed.status();
      *url = *std::move(parsed);
    }
    for (auto [variable, key] : {std::pair{"openai_api_key ($PAYGENT_PROXY_OPENAI_API_KEY)", &options_.openai_api_key},
                                 std::pair{"anthropic_api_key ($PAYGENT_PROXY_ANTHROPIC_API_KEY)", &options_.anthropic_api_key},
                                 std::pair{"gemini_api_key ($PAYGENT_PROXY_GEMINI_API_KEY)", &options_.gemini_api_key}}) {
      // A header value: visible ASCII and spaces only (a CR or LF would end the header early).
      for (const char c : *key) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          return absl::InvalidArgumentError(str_cat(variable, ": the key holds a control character (a newline?)"));
        }
      }
    }
    beast::error_code ec;
    const auto address = net::ip::make_address(options_.listen_host, ec);
    if (ec) return absl::InvalidArgumentError(str_cat("--listen: not an IP address: ", options_.listen_host));
    tcp::endpoint endpoint(address, static_cast<unsigned short>(options_.listen_port));
    // With reuse_port each worker listens on a socket of its own, all bound to the port with
    // SO_REUSEPORT: the kernel hands each new connection to one of them, and wakes that worker
    // only (one listening socket sits in every worker's epoll set and wakes them all).
    // SO_REUSEPORT would also let another process of this user join the port unnoticed, so the
    // port is first bound by a plain socket: a port already in use fails here, as without it.
    const bool reuse_port = options_.reuse_port && workers_.size() > 1;
    if (reuse_port) {
      Acceptor probe(workers_[0]->ioc);
      probe.open(endpoint.protocol(), ec);
      if (!ec) probe.set_option(net::socket_base::reuse_address(true), ec);
      if (!ec) probe.bind(endpoint, ec);
      if (!ec) {
        const tcp::endpoint bound = probe.local_endpoint(ec);  // port 0: the one the kernel chose
        if (!ec) endpoint.port(bound.port());
      }
    }
    if (!ec) {
      beast::error_code ignored;
      for (std::size_t i = 0; i < (reuse_port ? workers_.size() : 1); ++i) {
        Acceptor& listener = workers_[i]->acceptor;
        listener.open(endpoint.protocol(), ec);
        if (!ec) listener.set_option(net::socket_base::reuse_address(true), ec);
        if (!ec && reuse_port) listener.set_option(net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true), ec);
        if (!ec) listener.bind(endpoint, ec);
        if (!ec) listener.listen(net::socket_base::max_listen_connections, ec);
        if (ec) break;
        endpoint.port(listener.local_endpoint(ignored).port());
      }
    }
    // Without SO_REUSEPORT the one listening socket is worker 0's alone (in one epoll set, so a
    // new connection wakes one thread, as nginx's EPOLLEXCLUSIVE does): it places each connection
    // on the worker serving the fewest (accept_one).
    if (ec) {
      return absl::UnavailableError(
          str_cat("--listen ", options_.listen_host, ":", options_.listen_port, ": ", ec.message()));
    }
    port_ = endpoint.port();
    for (auto& worker : workers_) {
      keep_earliest_timer(worker.get());
      worker->thread = std::thread([w = worker.get()] { w->ioc.run(); });
    }
    {
      std::lock_guard lock(mu_);
      accepting_ = reuse_port ? workers_.size() : 1;  // after the threads: stop() then always has them to end the turns
    }
    protocol_ = endpoint.protocol();
    place_ = !reuse_port && workers_.size() > 1;
    for (std::size_t i = 0; i < accepting_; ++i) net::co_spawn(workers_[i]->ioc, accept_one(i), net::detached);
    return absl::OkStatus();
  }

  int port() const noexcept override { return port_; }

  ProxyStats stats() const noexcept override {
    const UpstreamPool::Stats pool = pool_.stats();
    return {counters_.requests.load(), counters_.metered.load(), counters_.unmetered.load(),
            counters_.refused.load(), counters_.cut_streams.load(), counters_.abandoned_streams.load(),
            counters_.upstream_errors.load(), counters_.bad_requests.load(), counters_.fail_open.load(),
            pool.connects, pool.reuses, pool.retries, pool.idle, serving()};
  }

  void stop() noexcept override {
    std::unique_lock lock(mu_);
    if (stopping_) {
      cv_.wait(lock, [&] { return stopped_; });
      return;
    }
    stopping_ = true;
    for (int fd : open_sockets_) ::shutdown(fd, SHUT_RDWR);  // their reads end; their coroutines finish
    lock.unlock();
    for (auto& worker : workers_) {
      net::post(worker->ioc, [w = worker.get()] {
        beast::error_code ignored;
        w->acceptor.close(ignored);  // the accept turn ends
      });
    }
    lock.lock();
    cv_.wait(lock, [&] { return connections_ == 0 && accepting_ == 0; });
    lock.unlock();
    for (auto& worker : workers_) {
      worker->work.reset();
      worker->ioc.stop();
      if (worker->thread.joinable()) worker->thread.join();
    }
    if (gate_pool_) gate_pool_->join();
    lock.lock();
    stopped_ = true;
    cv_.notify_all();
  }

  const ProxyOptions& options() const { return options_; }
  Paygent* paygent() const { return paygent_; }
  Counters& counters() { return counters_; }
  UpstreamPool& pool() { return pool_; }
  // The operator's key for `provider` ("" when the caller's key passes through).
  const std::string& operator_key(Provider provider) const {
    return provider == Provider::kOpenAI      ? options_.openai_api_key
           : provider == Provider::kAnthropic ? options_.anthropic_api_key
                                              : options_.gemini_api_key;
  }
  const UpstreamUrl* upstream(Provider provider) const {
    const UpstreamUrl* url = provider == Provider::kOpenAI      ? &openai_
                             : provider == Provider::kAnthropic ? &anthropic_
                                                                : &gemini_;
    return url->host.empty() ? nullptr : url;
  }

  // Runs `gate` (a call into the Paygent that may wait for the backend) where it may block: on the
  // gate threads when the Paygent may wait, else right here. Resumes on the connection's executor.
  template <class F>
  Task<GateOutcome> gate(F decide) {
    if (!gate_pool_) co_return decide();
    co_return co_await net::co_spawn(
        gate_pool_->get_executor(),
        [&decide]() -> net::awaitable<GateOutcome, net::thread_pool::executor_type> { co_return decide(); }, use_task);
  }

 private:
  static constexpr int kGateThreads = 8;

  // The accept turn of worker `i`, on its thread: accepts a connection and serves it here (no
  // hand-over between threads on the way to a new connection's first byte), unless another worker
  // serves fewer connections (the shared socket, place_): then the connection moves to that
  // worker and this turn accepts the next. With SO_REUSEPORT each worker has a turn of its own,
  // on its own socket, and keeps what it accepts (the kernel spreads them).
  //
  // Before (every worker's turn on one shared socket, handed to the next worker after each
  // connection), each new connection woke both workers: the socket sat in both epoll sets, and
  // the turn was posted across. On 2 cores the second wake-up competed with the provider for the
  // CPU while the request was on its way (perf sched of one stream).
  Task<void> accept_one(std::size_t i) {
    Worker& worker = *workers_[i];
    for (;;) {
      beast::error_code ec;
      Socket socket(worker.ioc);
      co_await worker.acceptor.async_accept(socket, net::redirect_error(use_task, ec));
      std::unique_lock lock(mu_);
      if (stopping_ || ec == net::error::operation_aborted || ec == net::error::bad_descriptor) {
        --accepting_;
        cv_.notify_all();
        co_return;
      }
      if (ec) {  // e.g. EMFILE: try again in a moment, not in a busy loop
        lock.unlock();
        Timer pause(worker.ioc, std::chrono::milliseconds(10));
        co_await pause.async_wait(net::redirect_error(use_task, ec));
        continue;
      }
      try {
        open_sockets_.insert(socket.native_handle());
      } catch (...) {  // out of memory: this connection is dropped, the turn goes on
        continue;
      }
      ++connections_;
      lock.unlock();
      const std::size_t to = place_ ? placement(i) : i;
      if (to != i) {  // the least loaded worker takes it: its epoll set, its thread
        workers_[to]->serving++;
        const int listed = socket.native_handle();
        const int fd = socket.release(ec);
        Socket moved(workers_[to]->ioc);
        if (!ec) moved.assign(protocol_, fd, ec);
        if (ec) {
          workers_[to]->serving--;
          end_session(listed);  // unlisted before it closes: stop() never shuts a reused descriptor
          if (fd >= 0 && !moved.is_open()) ::close(fd);  // else the socket that holds it closes it
          continue;
        }
        // Under mu_: if the spawn fails (out of memory) the socket closes while still listed, and
        // stop() cannot shut its number, reused by then, before it is unlisted here.
        std::lock_guard spawn_lock(mu_);
        try {
          net::co_spawn(workers_[to]->ioc, session(std::move(moved), to), net::detached);
        } catch (...) {  // this connection is dropped, the turn goes on
          workers_[to]->serving--;
          open_sockets_.erase(listed);
          if (--connections_ == 0) cv_.notify_all();
        }
        continue;
      }
      worker.serving++;
      // The next turn starts once this worker's current handler ends: the session below runs at
      // once, reads the request that came with the connection and writes it upstream before it
      // first waits (an accept that finds nothing is a system call, kept off the way to this
      // connection's first byte). A burst of connections waits for the turn no longer than this
      // worker's ready handlers take.
      bool passed = true;
      try {
        net::co_spawn(worker.ioc, accept_one(i), net::detached);  // starts through the event loop
      } catch (...) {  // out of memory: this turn goes on, and accepts again after this connection
        passed = false;
      }
      const int fd = socket.native_handle();
      try {
        co_await session(std::move(socket), i);
      } catch (...) {  // out of memory starting it: the connection is dropped
        worker.serving--;
        end_session(fd);
      }
      if (passed) co_return;
    }
  }

  // For stats() (noexcept): empty when out of memory.
  std::vector<std::int64_t> serving() const noexcept {
    std::vector<std::int64_t> out;
    try {
      for (const auto& worker : workers_) out.push_back(worker->serving.load());
    } catch (...) {
      out.clear();
    }
    return out;
  }

  // Where worker `i` places a new connection: itself, unless another worker serves at least two
  // fewer (so a stream after a stream stays on one thread, and keep-alive clients spread evenly).
  std::size_t placement(std::size_t i) const {
    std::size_t least = i;
    for (std::size_t j = 0; j < workers_.size(); ++j) {
      if (workers_[j]->serving.load() < workers_[least]->serving.load()) least = j;
    }
    return workers_[least]->serving.load() + 1 < workers_[i]->serving.load() ? least : i;
  }

  // Serves `socket` on worker `w` (the thread running this) to its end.
  Task<void> session(Socket socket, std::size_t w) {
    const int fd = socket.native_handle();
    {
      Connection connection(*this, std::move(socket));
      try {
        co_await connection.serve();
      } catch (...) {
        // A failure of the proxy's own (bad_alloc): this connection ends, the others go on.
      }
      std::lock_guard lock(mu_);
      open_sockets_.erase(fd);  // before the socket closes, so stop() never shuts a reused descriptor
    }
    workers_[w]->serving--;
    end_session(-1);
  }

  // A session's end in the books (`fd`: its descriptor, when still listed).
  void end_session(int fd) {
    std::lock_guard lock(mu_);
    if (fd >= 0) open_sockets_.erase(fd);
    if (--connections_ == 0) cv_.notify_all();
  }

  ProxyOptions options_;
  Paygent* paygent_;
  Counters counters_;
  UpstreamUrl openai_, anthropic_, gemini_;
  // An event loop and the thread that runs it, as an nginx worker; the client connections it was
  // handed and the upstream connections they opened are its own (UpstreamPool keys them by it).
  struct Worker {
    net::io_context ioc{1};
    std::optional<net::executor_work_guard<net::io_context::executor_type>> work{ioc.get_executor()};
    std::thread thread;
    Acceptor acceptor{ioc};  // its listening socket (worker 0's only, unless SO_REUSEPORT: one per worker)
    std::atomic<int> serving{0};  // connections it serves
    Timer earliest{ioc};  // see keep_earliest_timer
  };

  // Asio's event loop re-arms its timerfd (a system call) whenever a timer is scheduled that
  // expires before every other; with only the upstream reads' timeouts pending, each read's
  // timer (now + upstream_timeout) was that one: a timerfd_settime per upstream read, two of
  // them on the way to a stream's first byte. A timer of the worker's own that always expires
  // first, re-armed every half timeout, keeps the reads' timers off the timerfd; the timeouts
  // themselves fire as before. Not with a timeout under 2 s (it would wake the worker often).
  void keep_earliest_timer(Worker* w) {
    if (options_.upstream_timeout < absl::Seconds(2)) return;
    w->earliest.expires_after(absl::ToChronoNanoseconds(options_.upstream_timeout / 2));
    w->earliest.async_wait([this, w](const beast::error_code& ec) {
      if (!ec) keep_earliest_timer(w);
    });
  }
  std::vector<std::unique_ptr<Worker>> workers_;  // declared before pool_: destroyed after it (its idle sockets close while their io_contexts live)
  UpstreamPool pool_;  // its calls end in stop(), before it is destroyed
  std::optional<net::thread_pool> gate_pool_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool stopped_ = false;
  std::size_t accepting_ = 0;  // workers whose accept turn is outstanding
  bool place_ = false;  // one listening socket for several workers: worker 0 places each connection
  tcp protocol_ = tcp::v4();
  int connections_ = 0;          // sessions not yet ended
  std::set<int> open_sockets_;   // their descriptors, shut down by stop()
};

// Parses what `buffer` already holds into `parser` for as long as `wanted()` (no trip through the
// event loop for bytes an earlier read brought). Running out of bytes is not an error; a parse
// error is left in `ec`.
template <class Wanted>
void parse_buffered(server::RequestParser& parser, beast::flat_buffer& buffer, beast::error_code& ec, Wanted wanted) {
  while (buffer.size() > 0 && wanted()) {
    const std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more) ec = {};
    if (ec || used == 0) break;
  }
}

Task<void> Connection::serve() {
  beast::flat_buffer buffer;
  buffer.reserve(16 << 10);  // a whole request head (and most bodies) in one read
  // A new connection's first request usually came with it: read at once, without a trip through
  // the event loop (a later request on a kept connection usually has not come yet: read by the
  // event loop, whose own first try would find nothing). MSG_DONTWAIT: never waits, whatever the
  // socket's mode, and needs no system call to set one first. Nothing there, or the connection
  // failed: the read below meets it.
  {
    const auto space = buffer.prepare(buffer.capacity());
    const ssize_t got = ::recv(socket_.native_handle(), space.data(), space.size(), MSG_DONTWAIT);
    buffer.commit(got > 0 ? static_cast<std::size_t>(got) : 0);
  }
  for (;;) {
    // paygentd's parser: bounds trailers and chunk extensions, and never throws from inside a read
    // (Beast's own threw std::length_error on a 64 KiB trailer field, which ended the process).
    server::RequestParser parser(64 << 10, server_.options().max_body_bytes);
    beast::error_code ec;
    // A head already read is parsed here; the rest (or all of it) through the event loop.
    parse_buffered(parser, buffer, ec, [&] { return !parser.is_header_done(); });
    if (!ec && !parser.is_header_done()) {
      co_await http::async_read_header(socket_, buffer, parser, net::redirect_error(use_task, ec));
    }
    if (!ec && !parser.is_done()) {
      const auto expect = parser.get()[http::field::expect];
      if (iequals(std::string_view(expect.data(), expect.size()), "100-continue") &&
          (!parser.content_length() || *parser.content_length() <= server_.options().max_body_bytes)) {
        co_await send("HTTP/1.1 100 Continue\r\n\r\n");  // curl waits for it before sending a larger body
      }
      // The body that came with the head is parsed here, without a trip through the event loop.
      parse_buffered(parser, buffer, ec, [&] { return !parser.is_done(); });
      if (!ec && !parser.is_done()) {
        co_await http::async_read(socket_, buffer, parser, net::redirect_error(use_task, ec));
      }
    }
    if (ec == http::error::body_limit) {
      server_.counters().bad_requests++;
      const auto target = parser.get().target();
      const auto route = match_route("POST", std::string_view(target.data(), target.size()));
      co_await reply(413,
                     error_body(route ? route->provider : Provider::kOpenAI, 413, "invalid_request_error",
                                str_cat("paygent-proxy: the request body is larger than ",
                                        server_.options().max_body_bytes, " bytes (--max-body-bytes)")),
                     {}, false);
      break;
    }
    if (parser.refused() != server::RequestParser::Refused::kNone) {
      server_.counters().bad_requests++;
      const bool internal = parser.refused() == server::RequestParser::Refused::kInternal;
      co_await reply(internal ? 500 : 413,
                     error_body(Provider::kOpenAI, internal ? 500 : 413, internal ? "api_error" : "invalid_request_error",
                                internal ? "paygent-proxy: internal error while reading the request"
                                         : "paygent-proxy: request header, trailer or chunk extensions over the limit"),
                     {}, false);
      break;
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::operation_aborted || ec == net::error::bad_descriptor || ec == net::error::shut_down) {
      break;
    }
    if (ec) {
      server_.counters().bad_requests++;
      co_await reply(400, error_body(Provider::kOpenAI, 400, "invalid_request_error",
                                     str_cat("paygent-proxy: malformed HTTP request: ", ec.message())),
                     {}, false);
      break;
    }
    auto request = parser.release();
    if (!co_await handle(request) || !request.keep_alive()) break;
  }
  beast::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
}

// Writes what the socket takes at once (usually all), then the rest through the event loop. The
// first try is one sendmsg with MSG_DONTWAIT (it never waits, whatever the socket's mode: no
// system call to make the socket non-blocking first) and MSG_NOSIGNAL (a client gone is an
// error here, not a SIGPIPE).
//
// Nagle's algorithm goes off (TCP_NODELAY; `*no_delay` says it is) right after the connection's
// first try, not before it: nothing of ours is unacknowledged yet, so that write leaves at once
// (but for a short last segment of a long one, which the option then pushes), the system call
// stays off the way to the caller's first byte (the stream's first event), and every later write,
// the rest of a partial one included, goes out as it comes. Not at accept: one system call fewer
// before the request leaves for the provider.
template <class Buffers>
Task<bool> write_all(Socket& socket, const Buffers& buffers, bool* no_delay) {
  std::array<iovec, 4> iov{};
  std::size_t count = 0;
  for (auto it = net::buffer_sequence_begin(buffers); it != net::buffer_sequence_end(buffers) && count < iov.size(); ++it) {
    const net::const_buffer b(*it);
    if (b.size() > 0) iov[count++] = {const_cast<void*>(b.data()), b.size()};
  }
  msghdr message{};
  message.msg_iov = iov.data();
  message.msg_iovlen = count;
  ssize_t written;
  do {
    written = ::sendmsg(socket.native_handle(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (written < 0 && errno == EINTR);
  if (written < 0 && errno != EAGAIN && errno != EWOULDBLOCK) co_return false;
  beast::error_code ec;
  if (!*no_delay) {
    *no_delay = true;
    socket.set_option(tcp::no_delay(true), ec);
    ec = {};
  }
  const std::size_t sent = written > 0 ? static_cast<std::size_t>(written) : 0;
  const std::size_t size = net::buffer_size(buffers);
  if (sent == size) co_return true;
  beast::buffers_suffix<Buffers> rest(buffers);
  rest.consume(sent);
  co_await net::async_write(socket, rest, net::redirect_error(use_task, ec));
  co_return !ec;
}

Task<bool> Connection::send(std::string_view bytes) {
  co_return co_await write_all(socket_, net::const_buffer(bytes.data(), bytes.size()), &no_delay_);
}

Task<bool> Connection::send_chunk(std::string_view bytes, std::string* head) {
  std::string_view before;
  if (head != nullptr) before = *head;
  if (bytes.empty()) {
    if (before.empty()) co_return true;
    const bool sent = co_await send(before);
    head->clear();
    co_return sent;
  }
  char size[24];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
  const std::array<net::const_buffer, 4> buffers = {net::buffer(before.data(), before.size()),
                                                   net::buffer(size, static_cast<std::size_t>(n)),
                                                   net::buffer(bytes.data(), bytes.size()), net::buffer("\r\n", 2)};
  const bool sent = co_await write_all(socket_, buffers, &no_delay_);
  if (head != nullptr) head->clear();
  co_return sent;
}

Task<bool> Connection::reply(int status, std::string_view body, std::string_view extra, bool keep_alive,
                                       bool own) {
  std::string head = status_line(status);
  head.reserve(head.size() + extra.size() + body.size() + 96);
  head += extra;
  if (!has_header(extra, "content-type")) head += "content-type: application/json\r\n";
  // The proxy's own refusals and the caller's errors are not retried; an upstream failure (5xx) may be.
  if (own && status >= 400 && status < 500) head += "x-should-retry: false\r\n";
  str_append(&head, "content-length: ", body.size(), "\r\n", keep_alive ? "" : "connection: close\r\n", "\r\n");
  head.append(body);
  co_return co_await send(head) && keep_alive;
}

// Appends the x-paygent-* header lines of an admitted call to `lines`.
void append_gate_headers(std::string* lines, const GuardResult& result) {
  append_header(lines, "x-paygent-status", gate_status_name(result.status));
  if (result.status != GateStatus::kUnmetered && result.reason != GateReason::kNone) {
    append_header(lines, "x-paygent-usage-pct", percent_text(result.usage_pct));
    append_header(lines, "x-paygent-limit", result.gate_reason());
    if (result.status == GateStatus::kSoftGate) append_header(lines, "x-paygent-message", result.message());
  }
}

Task<bool> Connection::handle(http::request<http::string_body>& request) {
  Counters& counters = server_.counters();
  counters.requests++;
  const std::string_view target(request.target().data(), request.target().size());
  const std::string_view method(request.method_string().data(), request.method_string().size());
  if (method == "GET" && target == "/healthz") {
    const ProxyStats s = server_.stats();
    co_return co_await reply(200, str_cat("{\"status\":\"ok\",\"requests\":", s.requests, ",\"metered\":", s.metered,
                                   ",\"unmetered\":", s.unmetered, ",\"refused\":", s.refused, ",\"cut_streams\":",
                                   s.cut_streams, ",\"abandoned_streams\":", s.abandoned_streams,
                                   ",\"upstream_errors\":", s.upstream_errors, ",\"bad_requests\":", s.bad_requests,
                                   ",\"fail_open\":", s.fail_open, ",\"upstream_connects\":", s.upstream_connects,
                                   ",\"upstream_reuses\":", s.upstream_reuses, ",\"upstream_retries\":", s.upstream_retries,
                                   ",\"upstream_idle\":", s.upstream_idle, ",\"serving\":[", absl::StrJoin(s.serving, ","), "]}"));
  }
  if (method == "GET" && (target == "/paygent/report" || target.starts_with("/paygent/report?")) &&
      server_.paygent() != nullptr) {
    // A user's standing (an operator's view; the proxy listens on loopback by default): ?user=ID,
    // percent-encoded as a query value ("a%40b.com", "a+b" for "a b").
    std::optional<std::string> user;
    bool bad = false;
    const std::size_t question = target.find('?');
    for (std::string_view query = question == std::string_view::npos ? "" : target.substr(question + 1); !query.empty();) {
      const std::string_view pair = query.substr(0, query.find('&'));
      query.remove_prefix(std::min(query.size(), pair.size() + 1));
      if (!pair.starts_with("user=")) continue;
      user = ::paygent::internal::percent_decode(pair.substr(5), true);
      bad = bad || !user;
    }
    if (bad || !user || user->empty() || !simdjson::validate_utf8(user->data(), user->size())) {
      counters.bad_requests++;
      co_return co_await reply(400, error_body(Provider::kOpenAI, 400, "invalid_request_error",
                                               "paygent-proxy: GET /paygent/report needs ?user=ID (a percent-encoded "
                                               "UTF-8 user id)"));
    }
    auto report = server_.paygent()->report(*user);
    if (!report.ok()) co_return co_await reply(404, error_body(Provider::kOpenAI, 404, "not_found_error", str_cat("paygent-proxy: ", report.status().message())));
    co_return co_await reply(200, str_cat("{\"user\":", json_quote(*user), ",\"plan\":", json_quote(report->plan), ",\"spend_nanos\":",
                              report->spend, ",\"reserved_nanos\":", report->reserved, ",\"calls\":", report->calls, "}"));
  }
  const auto route = match_route(method, target);
  if (!route) {
    counters.bad_requests++;
    const Provider shape = target.starts_with("/v1/messages") ? Provider::kAnthropic : Provider::kOpenAI;
    co_return co_await reply(404, error_body(shape, 404, "not_found_error",
                                 str_cat("paygent-proxy: no route for ", method, " ", target.substr(0, target.find('?')),
                                              " (served: POST /v1/chat/completions, /v1/responses, /v1/messages, "
                                              "/v1beta/models/{model}:generateContent|streamGenerateContent)")));
  }
  if (server_.upstream(route->provider) == nullptr) {
    counters.upstream_errors++;
    co_return co_await reply(502, error_body(route->provider, 502, "api_error",
                                 str_cat("paygent-proxy: no upstream configured for ", provider_name(route->provider),
                                              " (--upstream-", provider_name(route->provider), ")")));
  }
  auto call = read_request(*route, request.body());
  if (!call.ok()) {
    counters.bad_requests++;
    co_return co_await reply(400, error_body(route->provider, 400, "invalid_request_error",
                                 str_cat("paygent-proxy: ", call.status().message())));
  }
  auto header = [&](std::string_view name) {
    auto it = request.find(beast::string_view(name.data(), name.size()));
    return it == request.end() ? std::string() : std::string(it->value());
  };
  std::string user = header("x-paygent-user");
  if (user.empty()) user = call->end_user;
  co_return co_await forward(*route, *call, request, user);
}

Task<bool> Connection::forward(const RouteMatch& route, const CallRequest& call,
                                         http::request<http::string_body>& request, const std::string& user) {
  Counters& counters = server_.counters();
  const ProxyOptions& options = server_.options();
  Paygent* pg = server_.paygent();

  // Who pays, for as long as the call lasts. A Context is a scope of the thread it was made on,
  // and this coroutine suspends (other connections' calls then run on this thread) and its gate
  // may run on another thread: the scope is captured once here, with no suspension while the
  // Context lives, and re-entered (Context::Scope) around each call into the Paygent.
  Context::Captured who;
  ContextOptions context_options;
  if (!user.empty()) {
    for (const auto& field : request) {
      const std::string_view name(field.name_string().data(), field.name_string().size());
      if (!istarts_with(name, "x-paygent-")) continue;  // a string made only for the headers that name one
      const std::string value(field.value());
      if (iequals(name, "x-paygent-session")) context_options.session_id = value;
      else if (iequals(name, "x-paygent-agent")) context_options.agent_id = value;
      else if (iequals(name, "x-paygent-indicator")) context_options.indicator = value;
      else if (istarts_with(name, "x-paygent-meta-")) {
        context_options.meta_tags.emplace_back(lower(name.substr(15)), value);
      }
    }
    Context context(user, std::move(context_options));
    who = Context::capture();
  }

  // The gate: reserve the worst case before anything is sent.
  GateOutcome gated;
  if (pg == nullptr || user.empty()) {
    counters.unmetered++;
  } else {
    gated = co_await server_.gate([&]() {
      GateOutcome out;
      Context::Scope in(who);
      try {
        if (options.lower_max_tokens && (!call.max_tokens || *call.max_tokens > 0)) {
          // What fits, read by the reservation itself (CallEstimate::fit_output): a max_tokens
          // larger is lowered to it (nothing fits: the gate refuses); none given holds the
          // model's own maximum output, or what fits when that is less. What is held is sent
          // when it is below what the provider would otherwise allow (max_tokens as asked, or
          // the model's maximum, which the provider applies by itself).
          out.reservation = pg->reserve(call.model, {.prompt_tokens = call.prompt_tokens,
                                                     .max_output_tokens = call.max_tokens.value_or(0),
                                                     .fit_output = true});
          if (const std::optional<std::int64_t> fit = out.reservation.output_that_fits()) {
            out.allowed_output = *fit;
            const std::int64_t held = out.reservation.reserved_output_tokens();
            if (*fit > 0) {
              const std::int64_t most = call.max_tokens ? *call.max_tokens : pg->max_output_tokens_of(call.model);
              if (most == 0 || held < most) out.new_max_tokens = held;
            }
          }
        } else {
          // A max_tokens that does not fit is refused as asked; none given holds the model's
          // own maximum output (refused when that does not fit), or what fits when the catalog
          // does not know the maximum. An explicit 0 (lowering on or off) holds the prompt
          // alone, as asked.
          const std::optional<std::int64_t> fit = pg->max_output_tokens_that_fit(call.model, call.prompt_tokens);
          std::int64_t output = call.max_tokens.value_or(0);
          if (!call.max_tokens) output = pg->max_output_tokens_of(call.model);
          if (fit) {
            out.allowed_output = std::max<std::int64_t>(*fit, 0);
            if (!call.max_tokens && output == 0) output = std::max<std::int64_t>(*fit, 1);
          }
          out.reservation = pg->reserve(call.model, {.prompt_tokens = call.prompt_tokens, .max_output_tokens = output});
        }
      } catch (const LimitExceeded& refused) {
        out = GateOutcome{};
        const GuardResult& result = refused.result();
        out.refusal = refusal_body(route.provider, result);
        append_gate_headers(&out.refusal_headers, result);  // hard_gate, its percentage, the limit
      } catch (...) {
        out = GateOutcome{};  // fail-open: forward unmetered
        out.failed = true;
      }
      return out;
    });
    if (gated.refusal) {
      counters.refused++;
      co_return co_await reply(kRefusalStatus, *gated.refusal, gated.refusal_headers);
    }
    if (gated.failed) counters.fail_open++;
  }
  Reservation& reservation = gated.reservation;
  const std::optional<std::int64_t>& new_max_tokens = gated.new_max_tokens;
  const std::int64_t allowed_output = gated.allowed_output;
  const bool metered = reservation.active();
  if (metered) counters.metered++;

  // The request upstream: nothing on the way to it that the answer alone needs (the x-paygent-*
  // headers are built once it is sent).
  const UpstreamUrl& url = *server_.upstream(route.provider);
  const bool add_include_usage = route.route == Route::kOpenAIChat && call.stream && !call.include_usage;
  UpstreamRequest upstream_request;
  const std::string& operator_key = server_.operator_key(route.provider);
  const std::string_view target(request.target().data(), request.target().size());
  upstream_request.target = operator_key.empty() ? str_cat(url.base_path, target) : str_cat(url.base_path, without_key_parameter(target));
  upstream_request.header_lines.reserve(512);  // an SDK's dozen headers
  for (const auto& field : request) {
    const std::string_view name(field.name_string().data(), field.name_string().size());
    if (!forwarded_request_header(name) || (!operator_key.empty() && credential_header(name))) continue;
    upstream_request.add_header(name, std::string_view(field.value().data(), field.value().size()));
  }
  if (!operator_key.empty()) {
    switch (route.provider) {
      case Provider::kOpenAI: upstream_request.add_header("Authorization", str_cat("Bearer ", operator_key)); break;
      case Provider::kAnthropic: upstream_request.add_header("x-api-key", operator_key); break;
      default: upstream_request.add_header("x-goog-api-key", operator_key); break;
    }
  }
  upstream_request.body = rewrite_body(route, request.body(), call, new_max_tokens, metered && add_include_usage);
  // The answer's own headers, built while the upstream works on the request.
  std::string paygent_headers;
  auto build_paygent_headers = [&] {
    if (metered) {
      append_gate_headers(&paygent_headers, reservation.result());
    } else {
      append_header(&paygent_headers, "x-paygent-status", "unmetered");
    }
  };
  auto started = co_await UpstreamCall::start(url, upstream_request, options.upstream_timeout, &server_.pool(),
                                              build_paygent_headers);
  if (!started.ok()) {
    if (metered) {
      Context::Scope in(who);
      pg->release(reservation);
    }
    counters.upstream_errors++;
    const int status = absl::IsDeadlineExceeded(started.status()) ? 504 : 502;
    co_return co_await reply(status, error_body(route.provider, status, "api_error",
                                    str_cat("paygent-proxy: ", started.status().message())));
  }
  UpstreamCall& upstream = **started;
  // The answer's headers: the upstream's that are forwarded, then the proxy's.
  const UpstreamHead& head = upstream.head();
  const bool success = head.status >= 200 && head.status < 300;
  std::string headers;
  headers.reserve(head.header_lines.size() + paygent_headers.size() + 64);
  for_each_header_line(head.header_lines, [&](std::string_view name, std::string_view line) {
    if (forwarded_response_header(name)) headers += line;
  });
  headers += paygent_headers;

  if (!head.event_stream) {
    std::string body;
    absl::Status broke = absl::OkStatus();
    for (;;) {
      auto bytes = co_await upstream.read_some();
      if (!bytes.ok()) {
        broke = bytes.status();
        break;
      }
      if (bytes->empty()) break;
      if (body.size() + bytes->size() > options.max_response_bytes) {
        broke = absl::ResourceExhaustedError(str_cat("upstream response larger than ", options.max_response_bytes, " bytes"));
        break;
      }
      body.append(*bytes);
    }
    Nanos cost_nanos = 0;
    if (metered) {
      Context::Scope in(who);
      CostCapture cost;  // no co_await while it lives: the sink is this thread's
      if (success) {
        // Unreadable (a body that is not the provider's JSON, or that broke off): what arrived
        // is what is known to have been produced, as for a stream cut short: the prompt, and the
        // body's bytes as output tokens (4 to a token, at most what the call allowed: its
        // max_tokens as sent, else what was held, the model's maximum). Not the reservation,
        // which may be far more than arrived.
        std::int64_t produced = (static_cast<std::int64_t>(body.size()) + 3) / 4;
        const std::int64_t held = reservation.reserved_output_tokens();
        const std::int64_t bound = new_max_tokens.value_or(call.max_tokens.value_or(held > 0 ? held : allowed_output));
        if (bound >= 0) produced = std::min(produced, bound);
        const Usage arrived{.input_tokens = call.prompt_tokens, .output_tokens = produced};
        pg->settle_response(reservation, body, &arrived);
      } else {
        pg->release(reservation);  // the provider refused: nothing spent
      }
      cost_nanos = cost.cost;
    }
    if (!broke.ok()) {
      counters.upstream_errors++;
      const int status = absl::IsDeadlineExceeded(broke) ? 504 : 502;
      co_return co_await reply(status, error_body(route.provider, status, "api_error", str_cat("paygent-proxy: ", broke.message())),
                   paygent_headers, false);
    }
    if (metered) {
      append_header(&headers, "x-paygent-cost-usd", usd_decimal(cost_nanos));
      append_header(&headers, "x-paygent-cost-nanos", std::to_string(cost_nanos));
    }
    co_return co_await reply(head.status, body, headers, true, false);
  }

  // A stream: forwarded event by event, metered as it flows, cut at the cap.
  std::string response_head = status_line(head.status);
  str_append(&response_head, headers, "transfer-encoding: chunked\r\n\r\n");
  // The head goes out now, unless the first events came with the upstream's head: then with them,
  // in one write (the client's first read then holds the first event, as nginx forwards it).
  bool client_gone = false;
  if (!upstream.body_buffered()) {
    client_gone = !co_await send(response_head);
    response_head.clear();
  }
  std::string out;
  StreamRelay relay(route.format, metered && add_include_usage);
  if (metered) relay.set_output_limit(allowed_output);
  bool cut = false;
  bool upstream_broke = false;
  while (!client_gone && !cut) {
    auto bytes = co_await upstream.read_some();
    if (!bytes.ok()) {
      upstream_broke = true;
      break;
    }
    out.clear();
    if (bytes->empty()) {
      relay.finish(out);
      client_gone = !co_await send_chunk(out, &response_head);
      break;
    }
    if (relay.events() == 0) {
      // The stream's first event goes out before the relay reads it (it is the caller's first
      // byte); then it is read (the cut decided) and the others follow, read first. Later reads
      // keep one write each.
      relay.feed_early(*bytes, out);
      if (!out.empty()) {
        client_gone = !co_await send_chunk(out, &response_head);
        if (client_gone) break;
        out.clear();
      }
      relay.drain(out);
    } else {
      relay.feed(*bytes, out);
    }
    client_gone = !co_await send_chunk(out, &response_head);
    cut = relay.cut();  // the event that passed the cap was the last one forwarded
  }
  Nanos cost_nanos = 0;
  if (metered) {
    Context::Scope in(who);
    CostCapture cost;  // no co_await while it lives: the sink is this thread's
    auto seen = relay.usage();
    if (!cut && !client_gone && !upstream_broke && seen.ok()) {
      pg->settle(reservation, seen->usage, route.provider);
    } else if (!success && !seen.ok()) {
      pg->release(reservation);  // a provider error, no usage: nothing spent
    } else {
      // Cut short, or no usage reported: what was produced, never $0.
      Usage usage = seen.ok() ? seen->usage : Usage{};
      if (usage.input_tokens == 0) usage.input_tokens = call.prompt_tokens;
      usage.output_tokens = std::max(usage.output_tokens, relay.streamed_output_tokens());
      usage.reasoning_tokens = std::min(usage.reasoning_tokens, usage.output_tokens);
      pg->settle(reservation, usage, route.provider);
    }
    cost_nanos = cost.cost;
  }
  if (client_gone) {
    counters.abandoned_streams++;
    co_return false;
  }
  out.clear();
  if (cut) {
    counters.cut_streams++;
    // The limit as it stands now that the stream is metered (check() names it: the cap is reached).
    GateOutcome now = co_await server_.gate([&]() {
      GateOutcome last;
      Context::Scope in(who);
      const std::int64_t streamed = relay.streamed_output_tokens();
      try {
        last.refusal = stream_cut_event(route.format, pg->check(call.model), streamed);
      } catch (const LimitExceeded& at_cap) {
        last.refusal = stream_cut_event(route.format, at_cap.result(), streamed);
      } catch (...) {
        last.refusal = stream_cut_event(route.format, reservation.result(), streamed);
      }
      return last;
    });
    out = *std::move(now.refusal);
  } else if (upstream_broke) {
    counters.upstream_errors++;
  }
  if (metered) str_append(&out, ": paygent cost_usd=", usd_decimal(cost_nanos), " cost_nanos=", cost_nanos, "\n\n");
  co_await send_chunk(out, &response_head);
  co_await send("0\r\n\r\n");
  co_return !cut && !upstream_broke;
}

}  // namespace

Options proxy_paygent_options(Options options) {
  options.on_usage = [user_callback = std::move(options.on_usage)](const UsageEvent& event) {
    if (cost_sink != nullptr) *cost_sink += event.cost;
    if (user_callback) user_callback(event);
  };
  return options;
}

absl::StatusOr<std::unique_ptr<ProxyServer>> ProxyServer::start(ProxyOptions options, Paygent* paygent) {
  auto server = std::make_unique<Server>(std::move(options), paygent);
  if (absl::Status status = server->open(); !status.ok()) return status;
  return std::unique_ptr<ProxyServer>(std::move(server));
}

}  // namespace paygent::proxy
