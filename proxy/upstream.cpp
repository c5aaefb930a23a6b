#include <utility>  // before Boost.Asio: Boost 1.74's awaitable.hpp needs std::exchange (GCC 12)

#include "proxy/upstream.h"
#include "proxy/text.h"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <tuple>

#include <boost/asio.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "server/http_parser.h"


namespace paygent::proxy {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// A connection to an upstream: TCP on the worker's own executor type (see Executor).
using TcpStream = beast::basic_stream<tcp, Executor>;

// The completion token of every operation here: resume the coroutine, the error in `ec` (no throw).
auto into(beast::error_code& ec) { return net::redirect_error(net::use_awaitable_t<Executor>{}, ec); }

ssl::context& client_tls() {
  static ssl::context* context = [] {
    auto* c = new ssl::context(ssl::context::tls_client);
    c->set_default_verify_paths();
    c->set_verify_mode(ssl::verify_peer);
    return c;
  }();
  return *context;
}

// One upstream connection, registered with the io_context of the calls that use it (one call at a
// time, handed over under the pool's mutex).
struct Connection {
  virtual ~Connection() = default;
  [[nodiscard]] virtual int fd() = 0;
  std::chrono::steady_clock::time_point idle_since;
};

// The largest response head (and trailer section) read from an upstream.
constexpr std::size_t kHeaderLimit = 64 << 10;

template <class Stream>
struct Link final : Connection {
  template <class... Args>
  explicit Link(Args&&... args) : stream(std::forward<Args>(args)...) {}
  int fd() override { return beast::get_lowest_layer(stream).socket().native_handle(); }

  Stream stream;
  // What is read but not yet parsed: a response head (at most kHeaderLimit) or a chunk-size line,
  // beside the part of a read the parser has not taken yet. Bounded, so that an upstream that
  // sends an endless line fails its read instead of growing the proxy.
  beast::flat_buffer buffer{kHeaderLimit + (64 << 10)};
};

// Errors that say the upstream closed or reset the connection (what a stale pooled connection
// meets), as opposed to a timeout or a malformed answer.
bool closed_by_peer(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
         ec == net::error::broken_pipe || ec == net::error::connection_aborted || ec == net::error::not_connected ||
         ec == ssl::error::stream_truncated;
}

// The pool's key: the io_context a connection is registered with (whose one thread drives it:
// Beast's timeouts need its operations on one strand) and the upstream (scheme, host, port).
// Looked up through PoolKeyView, so that a call builds no string to find its connections.
struct PoolKeyView {
  const void* context = nullptr;
  bool tls = false;
  std::string_view host;
  std::string_view port;
  friend bool operator<(const PoolKeyView& a, const PoolKeyView& b) {
    const auto ca = reinterpret_cast<std::uintptr_t>(a.context), cb = reinterpret_cast<std::uintptr_t>(b.context);
    return std::tie(ca, a.tls, a.host, a.port) < std::tie(cb, b.tls, b.host, b.port);
  }
};
struct PoolKey {
  explicit PoolKey(const PoolKeyView& v) : context(v.context), tls(v.tls), host(v.host), port(v.port) {}
  PoolKeyView view() const { return {context, tls, host, port}; }
  const void* context;
  bool tls;
  std::string host;
  std::string port;
};
struct PoolKeyLess {
  using is_transparent = void;
  static PoolKeyView v(const PoolKeyView& k) { return k; }
  static PoolKeyView v(const PoolKey& k) { return k.view(); }
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    return v(a) < v(b);
  }
};

}  // namespace

class UpstreamPool::Impl {
 public:
  explicit Impl(Limits limits)
      : max_idle_(static_cast<std::size_t>(std::max(limits.max_idle, 0))),
        idle_timeout_(absl::ToChronoNanoseconds(limits.idle_timeout)) {}

  [[nodiscard]] bool enabled() const { return max_idle_ > 0; }

  // An idle connection to `key`, or nullptr. The most recently used first (the least likely to
  // have been closed by the upstream); expired ones and ones the upstream closed are dropped.
  std::unique_ptr<Connection> take(const PoolKeyView& key) {
    for (;;) {
      std::unique_ptr<Connection> conn;
      std::vector<std::unique_ptr<Connection>> doomed;  // closed outside the lock
      {
        std::lock_guard lock(mu_);
        expire_locked(key, doomed);
        auto it = idle_.find(key);
        if (it == idle_.end() || it->second.empty()) return nullptr;
        conn = std::move(it->second.back());
        it->second.pop_back();
        --idle_count_;
      }
      // Idle means silent: anything readable is the upstream's EOF (or a stray byte): drop it.
      // Looked at (a system call) only after a second idle: a provider closes idle connections
      // after seconds, and one that closed sooner is met by the retry of UpstreamCall::start.
      if (std::chrono::steady_clock::now() - conn->idle_since < std::chrono::seconds(1)) return conn;
      pollfd p{conn->fd(), POLLIN, 0};
      if (::poll(&p, 1, 0) == 0) return conn;
    }
  }

  // Keeps `conn` for a later call to `key`, or closes it (pool closed or full).
  void give(const PoolKeyView& key, std::unique_ptr<Connection> conn) {
    std::vector<std::unique_ptr<Connection>> doomed;
    std::lock_guard lock(mu_);
    expire_locked(key, doomed);
    if (closed_) {
      doomed.push_back(std::move(conn));
      return;
    }
    auto it = idle_.find(key);
    if (it == idle_.end()) it = idle_.emplace(PoolKey(key), std::deque<std::unique_ptr<Connection>>()).first;
    auto& idle = it->second;
    if (idle.size() >= max_idle_) {
      doomed.push_back(std::move(conn));
      return;
    }
    conn->idle_since = std::chrono::steady_clock::now();
    idle.push_back(std::move(conn));
    ++idle_count_;
  }

  void close() {
    std::map<PoolKey, std::deque<std::unique_ptr<Connection>>, PoolKeyLess> doomed;
    std::lock_guard lock(mu_);
    closed_ = true;
    doomed.swap(idle_);
    idle_count_ = 0;
  }

  Stats stats() const noexcept { return {connects.load(), reuses.load(), retries.load(), idle_count_.load()}; }

  std::atomic<std::int64_t> connects{0}, reuses{0}, retries{0};

 private:
  // Moves `key`'s connections idle for longer than the timeout (the oldest are at the front) to
  // `doomed`. Only the caller's own key: another io_context's connections are closed by its own
  // thread's calls (or by the pool's destruction), never from this one.
  void expire_locked(const PoolKeyView& key, std::vector<std::unique_ptr<Connection>>& doomed) {
    const auto oldest = std::chrono::steady_clock::now() - idle_timeout_;
    auto it = idle_.find(key);
    if (it == idle_.end()) return;
    auto& idle = it->second;
    while (!idle.empty() && idle.front()->idle_since < oldest) {
      doomed.push_back(std::move(idle.front()));
      idle.pop_front();
      --idle_count_;
    }
  }

  const std::size_t max_idle_;
  const std::chrono::nanoseconds idle_timeout_;
  std::mutex mu_;
  bool closed_ = false;
  std::atomic<std::int64_t> idle_count_{0};  // changed under mu_, read without it
  std::map<PoolKey, std::deque<std::unique_ptr<Connection>>, PoolKeyLess> idle_;  // per upstream: the newest at the back
};

UpstreamPool::UpstreamPool(Limits limits) : impl_(std::make_shared<Impl>(limits)) {}
UpstreamPool::~UpstreamPool() { impl_->close(); }
UpstreamPool::Stats UpstreamPool::stats() const noexcept { return impl_->stats(); }

namespace {

template <class Stream>
class Call final : public UpstreamCall {
 public:
  // `context`: the io_context the call runs on, whose pooled connections it may take.
  Call(const UpstreamUrl& url, absl::Duration timeout, std::shared_ptr<UpstreamPool::Impl> pool, const void* context)
      : url_(url),
        key_{context, url_.tls, url_.host, url_.port},
        timeout_(absl::ToChronoMilliseconds(timeout)),
        pool_(pool != nullptr && pool->enabled() ? std::move(pool) : nullptr) {}

  ~Call() override {
    // Reused only after a whole response, read without error, that leaves the connection open.
    if (pool_ != nullptr && link_ != nullptr && !broken_ && parser_ && parser_->is_done() && parser_->keep_alive() &&
        link_->buffer.size() == 0) {
      pool_->give(key_, std::move(link_));
    }
  }

  Task<absl::Status> begin(const UpstreamRequest& request, absl::FunctionRef<void()> while_waiting) {
    if (pool_ != nullptr) {
      if (std::unique_ptr<Connection> idle = pool_->take(key_)) {
        link_.reset(static_cast<Link<Stream>*>(idle.release()));  // the key names the scheme: the type
        pool_->reuses++;
        bool stale = false;
        absl::Status status = co_await exchange(request, stale, while_waiting);
        if (status.ok() || !stale) co_return status;
        pool_->retries++;  // closed by the upstream before any byte of an answer: once more, anew
        link_.reset();
      }
    }
    if (absl::Status status = co_await connect(); !status.ok()) co_return status;
    if (pool_ != nullptr) pool_->connects++;
    bool stale = false;
    co_return co_await exchange(request, stale, while_waiting);
  }

  const UpstreamHead& head() const noexcept override { return head_; }

  bool body_buffered() const noexcept override {
    return link_ != nullptr && parser_ && !parser_->is_done() && link_->buffer.size() > 0;
  }

  Task<absl::StatusOr<std::string_view>> read_some() override {
    std::string& body = parser_->body();
    body.clear();
    // What the last read brought beyond the head (often the whole body) is parsed here, without
    // an asynchronous read that would complete through the event loop.
    beast::error_code ec;
    while (link_->buffer.size() > 0 && body.empty() && !parser_->is_done()) {
      const std::size_t used = parser_->put(link_->buffer.data(), ec);
      link_->buffer.consume(used);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) {
        broken_ = true;
        co_return fail("the response broke off", ec);
      }
      if (used == 0) break;
    }
    while (body.empty() && !parser_->is_done()) {
      lowest().expires_after(timeout_);
      co_await http::async_read_some(link_->stream, link_->buffer, *parser_, into(ec));
      if (ec) {
        broken_ = true;
        co_return fail("the response broke off", ec);
      }
    }
    co_return std::string_view(body);
  }

 private:
  TcpStream& lowest() { return beast::get_lowest_layer(link_->stream); }

  Task<absl::Status> connect() {
    const auto executor = co_await net::this_coro::executor;
    if constexpr (std::is_same_v<Stream, TcpStream>) {
      link_ = std::make_unique<Link<Stream>>(executor);
    } else {
      link_ = std::make_unique<Link<Stream>>(executor, client_tls());
    }
    beast::error_code ec;
    tcp::resolver::results_type endpoints;
    const auto address = net::ip::make_address(url_.host, ec);
    if (!ec) {  // an IP address: no resolver round trip
      endpoints = tcp::resolver::results_type::create(tcp::endpoint(address, static_cast<unsigned short>(std::stoi(url_.port))),
                                                      url_.host, url_.port);
    } else {
      net::ip::basic_resolver<tcp, Executor> resolver(executor);
      ec = {};
      endpoints = co_await resolver.async_resolve(url_.host, url_.port, into(ec));
      if (ec) co_return fail("cannot resolve", ec);
    }
    lowest().expires_after(timeout_);
    co_await lowest().async_connect(endpoints, into(ec));
    if (ec) co_return fail("cannot connect", ec);
    // The request's head and body, and the next request on a kept connection, go out at once
    // instead of waiting for the previous segment's ACK (Nagle's algorithm).
    lowest().socket().set_option(tcp::no_delay(true), ec);
    lowest().socket().non_blocking(true, ec);  // exchange() writes without waiting when it can
    link_->buffer.reserve(16 << 10);          // a whole head (and often body) in one read
    if constexpr (!std::is_same_v<Stream, TcpStream>) {
      if (!SSL_set_tlsext_host_name(link_->stream.native_handle(), url_.host.c_str())) {
        co_return absl::UnavailableError(str_cat("upstream ", url_.host, ": cannot set TLS server name"));
      }
      link_->stream.set_verify_callback(ssl::host_name_verification(url_.host));
      lowest().expires_after(timeout_);
      co_await link_->stream.async_handshake(ssl::stream_base::client, into(ec));
      if (ec) co_return fail("TLS handshake failed", ec);
    }
    co_return absl::OkStatus();
  }

  // Sends the request on link_ and reads the response's head. `stale`: the failure is the upstream
  // having closed the connection before any byte of an answer arrived (a retry is safe).
  // `while_waiting` runs once per call (a retried request does not run it again).
  Task<absl::Status> exchange(const UpstreamRequest& request, bool& stale, absl::FunctionRef<void()> while_waiting) {
    // The request as bytes (its headers were parsed from the client's request, so hold no CR/LF).
    std::string out;
    out.reserve(request.target.size() + request.header_lines.size() + url_.host.size() + request.body.size() + 96);
    str_append(&out, "POST ", request.target, " HTTP/1.1\r\n", request.header_lines);
    const bool ipv6 = url_.host.find(':') != std::string::npos;
    str_append(&out, "Host: ", ipv6 ? "[" : "", url_.host, ipv6 ? "]" : "");
    if (url_.port != (url_.tls ? "443" : "80")) str_append(&out, ":", url_.port);  // RFC 9110 7.2
    out += "\r\n";
    if (pool_ == nullptr) out += "Connection: close\r\n";  // HTTP/1.1 keeps it alive otherwise
    str_append(&out, "Content-Length: ", request.body.size(), "\r\n\r\n");
    out += request.body;
    broken_ = true;  // until the head is read
    // One deadline for sending the request and receiving its head.
    beast::error_code ec;
    std::size_t sent = 0;
    if constexpr (std::is_same_v<Stream, TcpStream>) {
      // Most requests fit the socket's buffer: written at once, without a trip through the event
      // loop (the socket is non-blocking: what does not fit is written below).
      sent = lowest().socket().write_some(net::buffer(out), ec);
      if (ec == net::error::would_block || ec == net::error::try_again) ec = {};
    }
    lowest().expires_after(timeout_);
    if (!ec && sent < out.size()) {
      co_await net::async_write(link_->stream, net::buffer(out.data() + sent, out.size() - sent), into(ec));
    }
    if (ec) {
      stale = closed_by_peer(ec);
      co_return fail("cannot send the request", ec);
    }
    // What only the answer needs is prepared once the request is out, while the upstream works.
    if (!waited_) {
      waited_ = true;
      while_waiting();
    }
    // No body limit here (not boost::none: Beast 1.74 compares a Content-Length with an empty
    // optional as "over the limit"): the caller bounds what it keeps (max_response_bytes), and a
    // stream's body is taken as it comes.
    parser_.emplace(kHeaderLimit, std::numeric_limits<std::uint64_t>::max());
    parser_->eager(true);
    head_ = UpstreamHead{};
    co_await http::async_read_header(link_->stream, link_->buffer, *parser_, into(ec));
    if (ec) {
      stale = closed_by_peer(ec) && !parser_->got_some() && link_->buffer.size() == 0;
      co_return fail("no response head", ec);
    }
    broken_ = false;
    const auto& res = parser_->get();
    head_.status = static_cast<int>(res.result_int());
    head_.header_lines.reserve(512);
    for (const auto& field : res) {
      append_header(&head_.header_lines, std::string_view(field.name_string().data(), field.name_string().size()),
                    std::string_view(field.value().data(), field.value().size()));
    }
    head_.event_stream = istarts_with(std::string_view(res[http::field::content_type].data(), res[http::field::content_type].size()), "text/event-stream");
    co_return absl::OkStatus();
  }

  absl::Status fail(std::string_view what, const beast::error_code& ec) const {
    const std::string text =
        str_cat("upstream ", url_.tls ? "https://" : "http://", url_.host, ":", url_.port, ": ", what, ": ", refusal_text(ec));
    if (ec == beast::error::timeout) return absl::DeadlineExceededError(text);
    return absl::UnavailableError(text);
  }

  // Why the read failed, in words: the parser's own refusal when it made one.
  std::string refusal_text(const beast::error_code& ec) const {
    switch (parser_ ? parser_->refused() : server::ParseRefusal::kNone) {
      case server::ParseRefusal::kNone: return ec.message();
      case server::ParseRefusal::kTrailer: return str_cat("header and trailer fields over ", kHeaderLimit, " bytes");
      case server::ParseRefusal::kChunkExtensions:
        return str_cat("chunk extensions over ", server::kMaxChunkExtensionBytes, " bytes");
      case server::ParseRefusal::kFieldTooLarge: return "a header field too large";
      case server::ParseRefusal::kInternal: return "out of memory";
    }
    return ec.message();
  }

  UpstreamUrl url_;
  PoolKeyView key_;  // into url_

  std::chrono::milliseconds timeout_;
  std::shared_ptr<UpstreamPool::Impl> pool_;  // nullptr: no reuse
  std::unique_ptr<Link<Stream>> link_;
  std::optional<server::ResponseParser> parser_;
  bool broken_ = true;  // an operation failed: the connection's state is unknown, never reused
  bool waited_ = false;  // while_waiting has run
  UpstreamHead head_;
};

}  // namespace

absl::StatusOr<UpstreamUrl> parse_upstream_url(std::string_view url, std::string_view field) {
  UpstreamUrl out;
  std::string_view rest = url;
  if (rest.starts_with("https://")) {
    out.tls = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else {
    return absl::InvalidArgumentError(str_cat(field, ": must start with http:// or https:// (got \"", url, "\")"));
  }
  const std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  out.base_path = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  while (!out.base_path.empty() && out.base_path.back() == '/') out.base_path.pop_back();
  const std::size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
    out.port = std::string(authority.substr(colon + 1));
    authority = authority.substr(0, colon);
    if (out.port.empty() || out.port.find_first_not_of("0123456789") != std::string::npos) {
      return absl::InvalidArgumentError(str_cat(field, ": the port must be a number (got \"", url, "\")"));
    }
  } else {
    out.port = out.tls ? "443" : "80";
  }
  if (authority.size() > 2 && authority.front() == '[' && authority.back() == ']') {
    authority = authority.substr(1, authority.size() - 2);
  }
  if (authority.empty()) return absl::InvalidArgumentError(str_cat(field, ": no host in \"", url, "\""));
  out.host = std::string(authority);
  return out;
}

void UpstreamRequest::add_header(std::string_view name, std::string_view value) {
  append_header(&header_lines, name, value);
}

Task<absl::StatusOr<std::unique_ptr<UpstreamCall>>> UpstreamCall::start(const UpstreamUrl& url,
                                                                                 const UpstreamRequest& request,
                                                                                 absl::Duration timeout, UpstreamPool* pool,
                                                                                 absl::FunctionRef<void()> while_waiting) {
  std::shared_ptr<UpstreamPool::Impl> shared = pool != nullptr ? pool->impl_ : nullptr;
  const auto executor = co_await net::this_coro::executor;
  const void* context = &net::query(executor, net::execution::context);
  if (url.tls) {
    auto call = std::make_unique<Call<beast::ssl_stream<TcpStream>>>(url, timeout, std::move(shared), context);
    if (absl::Status status = co_await call->begin(request, while_waiting); !status.ok()) co_return status;
    co_return std::unique_ptr<UpstreamCall>(std::move(call));
  }
  auto call = std::make_unique<Call<TcpStream>>(url, timeout, std::move(shared), context);
  if (absl::Status status = co_await call->begin(request, while_waiting); !status.ok()) co_return status;
  co_return std::unique_ptr<UpstreamCall>(std::move(call));
}

}  // namespace paygent::proxy
