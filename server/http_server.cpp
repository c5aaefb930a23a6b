// paygentd's HTTP/1.1 layer (see server/http_server.h). The only translation unit of paygentd that
// includes Boost.Asio/Beast.
#include <utility>  // before Boost.Asio: Boost 1.74's awaitable.hpp needs std::exchange (GCC 12)

#include "server/http_server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "meter/internal/str_cat.h"

namespace paygent::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using ::paygent::internal::str_cat;

constexpr std::size_t kReadChunk = 64 << 10;

// True when a read failed because the client sent something that is not HTTP/1.1 (as opposed to
// closing, timing out, or being cancelled).
bool is_malformed_http(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// One client connection. Its `idle` flag is read and written only on the connection's strand.
struct Connection {
  explicit Connection(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
  bool idle = true;  // waiting for the first byte of the next request
};

class Server {
 public:
  Server(const ServerOptions& options, Api& api, int threads)
      : options_(options), api_(api), ioc_(threads), acceptor_(ioc_), signals_(ioc_, SIGINT, SIGTERM) {}

  absl::Status listen() {
    const std::string& listen = options_.listen;
    const std::size_t colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
      return absl::InvalidArgumentError(str_cat("--listen: \"", listen, "\" is not host:port"));
    }
    std::string host = listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(host, listen.substr(colon + 1), tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(str_cat("--listen: cannot resolve \"", listen, "\": ", ec.message()));
    }
    const tcp::endpoint endpoint = results.begin()->endpoint();
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return absl::UnavailableError(str_cat("cannot listen on ", listen, ": ", ec.message()));
    return absl::OkStatus();
  }

  std::string local_address() const {
    const tcp::endpoint endpoint = acceptor_.local_endpoint();
    const std::string address = endpoint.address().to_string();
    return endpoint.address().is_v6() ? str_cat("[", address, "]:", endpoint.port())
                                      : str_cat(address, ":", endpoint.port());
  }

  void run(int threads) {
    signals_.async_wait([this](const beast::error_code& ec, int) {
      if (!ec) stop();
    });
    net::co_spawn(ioc_, accept_loop(), net::detached);
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back([this] { ioc_.run(); });
    ioc_.run();
    for (std::thread& t : pool) t.join();
  }

 private:
  // Stops accepting, and closes the connections that are waiting for a request. Connections
  // with a request in flight finish it and then close (stopping_ is set).
  void stop() {
    stopping_.store(true);
    beast::error_code ignored;
    acceptor_.close(ignored);
    absl::MutexLock lock(&connections_mu_);
    for (const std::shared_ptr<Connection>& c : connections_) {
      net::post(c->stream.get_executor(), [c] {
        if (c->idle) c->stream.socket().cancel();
      });
    }
  }

  net::awaitable<void> accept_loop() {
    for (;;) {
      tcp::socket socket(net::make_strand(ioc_));
      beast::error_code ec;
      co_await acceptor_.async_accept(socket, net::redirect_error(net::use_awaitable, ec));
      if (stopping_.load()) co_return;
      if (ec) {
        if (ec == net::error::operation_aborted || !acceptor_.is_open()) co_return;
        std::cerr << "paygentd: accept: " << ec.message() << std::endl;
        // Out of file descriptors and the like: pause rather than spin.
        net::steady_timer pause(ioc_, std::chrono::milliseconds(100));
        co_await pause.async_wait(net::redirect_error(net::use_awaitable, ec));
        continue;
      }
      auto connection = std::make_shared<Connection>(std::move(socket));
      net::co_spawn(connection->stream.get_executor(), session(connection), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          std::cerr << "paygentd: session ended by an exception: " << ex.what() << std::endl;
        }
      });
    }
  }

  // Writes `response` (keep-alive as asked); false when the connection must close.
  net::awaitable<bool> write(Connection& c, const HttpResponse& response, unsigned version, bool keep_alive) {
    http::response<http::string_body> out{static_cast<http::status>(response.status), version};
    out.set(http::field::server, "paygentd");
    out.set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) out.set(name, value);
    out.body() = response.body;
    out.keep_alive(keep_alive);
    out.prepare_payload();
    beast::error_code ec;
    c.stream.expires_after(absl::ToChronoNanoseconds(options_.write_timeout));
    co_await http::async_write(c.stream, out, net::redirect_error(net::use_awaitable, ec));
    co_return !ec && keep_alive;
  }

  // Answers a request refused before it was read whole, then closes the connection gracefully:
  // the rest of what the client sends is read and dropped for a moment, so that the client reads
  // the answer instead of a reset.
  net::awaitable<void> refuse_and_close(Connection& c, std::string_view target, int status, std::string_view message) {
    const HttpResponse response = api_.refuse(target, status, message);
    co_await write(c, response, 11, false);
    beast::error_code ec;
    c.stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    std::vector<char> scratch(64 << 10);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!ec && std::chrono::steady_clock::now() < deadline) {
      c.stream.expires_at(deadline);
      co_await c.stream.async_read_some(net::buffer(scratch), net::redirect_error(net::use_awaitable, ec));
    }
  }

  net::awaitable<void> session(std::shared_ptr<Connection> connection) {
    Connection& c = *connection;
    {
      absl::MutexLock lock(&connections_mu_);
      connections_.insert(connection);
    }
    beast::flat_buffer buffer;
    // Beast reads max(512, free capacity) bytes at a time, and its parser drains the buffer as it
    // goes: without room reserved, a 400 KB batch would take 800 reads.
    buffer.reserve(kReadChunk);
    const auto read_timeout = absl::ToChronoNanoseconds(options_.read_timeout);
    while (!stopping_.load()) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(options_.header_limit, UINT32_MAX)));
      parser.body_limit(api_.options().max_body_bytes);
      beast::error_code ec;
      c.idle = buffer.size() == 0;
      c.stream.expires_after(read_timeout);
      co_await http::async_read_header(c.stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
      c.idle = false;
      if (ec == http::error::header_limit) {
        co_await refuse_and_close(c, "", 413, str_cat("request header: over the limit of ", options_.header_limit, " bytes"));
        break;
      }
      const std::string target(parser.get().target());
      if (ec == http::error::body_limit) {
        co_await refuse_and_close(c, target, 413, str_cat("body: over the limit of ", api_.options().max_body_bytes, " bytes"));
        break;
      }
      if (ec) {
        if (is_malformed_http(ec)) {
          co_await refuse_and_close(c, target, 400, str_cat("malformed HTTP request: ", ec.message()));
        }
        break;  // closed, timed out, or cancelled by stop()
      }
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
        c.stream.expires_after(absl::ToChronoNanoseconds(options_.write_timeout));
        co_await http::async_write(c.stream, go_on, net::redirect_error(net::use_awaitable, ec));
        if (ec) break;
      }
      c.stream.expires_after(read_timeout);
      co_await http::async_read(c.stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
      if (ec == http::error::body_limit) {
        co_await refuse_and_close(c, target, 413, str_cat("body: over the limit of ", api_.options().max_body_bytes, " bytes"));
        break;
      }
      if (ec) {
        if (is_malformed_http(ec)) {
          co_await refuse_and_close(c, target, 400, str_cat("malformed HTTP request: ", ec.message()));
        }
        break;
      }
      http::request<http::string_body> request = parser.release();
      HttpRequest in{.method = std::string(request.method_string()),
                     .target = target,
                     .content_type = std::string(request[http::field::content_type]),
                     .authorization = std::string(request[http::field::authorization]),
                     .body = std::move(request.body())};
      HttpResponse response;
      try {
        response = api_.handle_request(in);
      } catch (const std::exception& e) {  // e.g. std::bad_alloc: answer, and keep serving
        response = api_.refuse(target, 500, str_cat("internal error: ", e.what()));
      }
      if (response.status >= 500) {
        std::cerr << "paygentd: " << response.status << " " << in.method << " " << target << ": " << response.body
                  << std::endl;
      }
      const bool keep_alive = request.keep_alive() && !stopping_.load();
      if (!co_await write(c, response, request.version(), keep_alive)) break;
    }
    beast::error_code ignored;
    c.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    c.stream.close();
    absl::MutexLock lock(&connections_mu_);
    connections_.erase(connection);
  }

  const ServerOptions& options_;
  Api& api_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  net::signal_set signals_;
  std::atomic<bool> stopping_{false};
  absl::Mutex connections_mu_;
  std::set<std::shared_ptr<Connection>> connections_ ABSL_GUARDED_BY(connections_mu_);
};

}  // namespace

absl::Status serve(const ServerOptions& options, Api& api, const std::function<void(std::string_view)>& on_listening) {
  const int threads =
      options.threads > 0 ? options.threads : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  Server server(options, api, threads);
  if (absl::Status s = server.listen(); !s.ok()) return s;
  if (on_listening) on_listening(server.local_address());
  server.run(threads);
  return absl::OkStatus();
}

}  // namespace paygent::server
