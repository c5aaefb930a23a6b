// paygentd's HTTP/1.1 layer (see server/http_server.h). The only translation unit of paygentd that
// includes Boost.Asio/Beast.
#include <utility>  // before Boost.Asio: Boost 1.74's awaitable.hpp needs std::exchange (GCC 12)

#include "server/http_server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "meter/internal/str_cat.h"
#include "server/http_parser.h"

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

std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

// True for a Host value made of the characters RFC 3986's authority allows without userinfo
// (host, IP literal, port); empty is allowed (RFC 9112 §3.2, a target without an authority).
bool valid_host(std::string_view host) {
  return std::all_of(host.begin(), host.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           std::string_view("-._~%!$&'()*+,;=:[]").find(ch) != std::string_view::npos;
  });
}

// Why a request's header cannot be answered safely, or nullopt. Checked before the body is read:
// - Host (RFC 9112 §3.2): exactly one in HTTP/1.1, at most one in HTTP/1.0, with a valid value.
// - Framing (RFC 9112 §6.1, §6.3): the only transfer coding paygentd reads is "chunked", alone; any
//   other (gzip, identity, "chunked, gzip", ...) would otherwise be read as an empty body, and the
//   body's bytes as the next request (request smuggling). Transfer-Encoding with Content-Length,
//   or in an HTTP/1.0 request, is refused too.
std::optional<std::string> header_error(const http::request<http::string_body>& request) {
  const auto hosts = request.equal_range(http::field::host);
  const auto host_count = std::distance(hosts.first, hosts.second);
  if (host_count > 1) return "more than one Host header";
  if (host_count == 0 && request.version() >= 11) return "an HTTP/1.1 request needs a Host header";
  if (host_count == 1 && !valid_host(view(hosts.first->value()))) return "Host: not a valid host[:port]";

  const auto encodings = request.equal_range(http::field::transfer_encoding);
  if (encodings.first == encodings.second) return std::nullopt;
  if (request.version() < 11) return "Transfer-Encoding in an HTTP/1.0 request";
  if (request.count(http::field::content_length) > 0) return "both Content-Length and Transfer-Encoding";
  int codings = 0;
  bool chunked = false;
  for (auto it = encodings.first; it != encodings.second; ++it) {
    for (std::string_view list = view(it->value()); !list.empty();) {
      const std::size_t comma = std::min(list.find(','), list.size());
      std::string_view coding = list.substr(0, comma);
      list.remove_prefix(std::min(comma + 1, list.size()));
      while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) coding.remove_prefix(1);
      while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) coding.remove_suffix(1);
      if (coding.empty()) continue;  // RFC 9110 §5.6.1: empty list elements do not count
      ++codings;
      chunked = beast::iequals(beast::string_view(coding.data(), coding.size()), "chunked");
    }
  }
  if (codings != 1 || !chunked) return "Transfer-Encoding: only \"chunked\" alone is supported";
  return std::nullopt;
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
    for (int i = 1; i < threads; ++i) pool.emplace_back([this] { run_contained(); });
    run_contained();
    for (std::thread& t : pool) t.join();
  }

 private:
  // Runs handlers until the server stops. An exception that Asio lets out of run() (a handler
  // that threw outside any session's coroutine) is logged and the thread goes back to work; if
  // it belonged to a session, Asio destroys that coroutine, whose Registration closes the
  // connection (session()). What a session's own code throws never gets here (session()), and
  // Beast's parser, whose exceptions Asio 1.74 would turn into std::terminate, throws none
  // (RequestParser).
  void run_contained() {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        std::cerr << "paygentd: a connection's handler threw: " << e.what() << std::endl;
      } catch (...) {
        std::cerr << "paygentd: a connection's handler threw an unknown exception" << std::endl;
      }
    }
  }

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
        try {  // session() catches what its requests throw; this is for anything else
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          std::cerr << "paygentd: session ended by an exception: " << ex.what() << std::endl;
        } catch (...) {
          std::cerr << "paygentd: session ended by an unknown exception" << std::endl;
        }
      });
    }
  }

  // Writes `response` (keep-alive as asked); false when the connection must close. With
  // `header_only` (the answer to a HEAD) it writes the header alone, whose Content-Length states
  // the body a GET would have had (RFC 9110 §9.3.2).
  net::awaitable<bool> write(Connection& c, const HttpResponse& response, unsigned version, bool keep_alive,
                             bool header_only = false) {
    http::response<http::string_body> out{static_cast<http::status>(response.status), version};
    out.set(http::field::server, "paygentd");
    out.set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) out.insert(name, value);
    out.body() = response.body;
    out.keep_alive(keep_alive);
    out.prepare_payload();
    beast::error_code ec;
    c.stream.expires_after(absl::ToChronoNanoseconds(options_.write_timeout));
    if (header_only) {
      http::response_serializer<http::string_body> serializer(out);
      co_await http::async_write_header(c.stream, serializer, net::redirect_error(net::use_awaitable, ec));
    } else {
      co_await http::async_write(c.stream, out, net::redirect_error(net::use_awaitable, ec));
    }
    co_return !ec && keep_alive;
  }

  // A request refused before its body was read, as the API sees it: method, target and the auth
  // headers (a 413 of a syncer's batch raises its product's alert, Api::refuse).
  static HttpRequest head_of(const http::request<http::string_body>& request, const std::string& target) {
    return HttpRequest{.method = std::string(request.method_string()),
                       .target = target,
                       .authorization = std::string(request[http::field::authorization]),
                       .api_key = std::string(request["paygent-api-key"]),
                       .cookie = std::string(request[http::field::cookie])};
  }

  // Answers a request refused before it was read whole, then closes the connection gracefully:
  // the rest of what the client sends is read and dropped for a moment, so that the client reads
  // the answer instead of a reset.
  net::awaitable<void> refuse_and_close(Connection& c, std::string_view target, int status, std::string_view message,
                                        const HttpRequest* head = nullptr) {
    const HttpResponse response = api_.refuse(target, status, message, head);
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

  // Answers a request the parser refused (RequestParser::refused()), then closes the connection.
  net::awaitable<void> refuse_and_close(Connection& c, std::string_view target, RequestParser::Refused why) {
    switch (why) {
      case RequestParser::Refused::kNone:
      case RequestParser::Refused::kTrailer:
        co_await refuse_and_close(
            c, target, 413, str_cat("request header and trailer: over the limit of ", options_.header_limit, " bytes"));
        break;
      case RequestParser::Refused::kChunkExtensions:
        co_await refuse_and_close(
            c, target, 413, str_cat("chunk extensions: over the limit of ", kMaxChunkExtensionBytes, " bytes"));
        break;
      case RequestParser::Refused::kFieldTooLarge:
        co_await refuse_and_close(c, target, 413, "request header: a field or the target over 64 KiB");
        break;
      case RequestParser::Refused::kInternal:
        co_await refuse_and_close(c, target, 500, "internal error while reading the request");
        break;
    }
  }

  // Runs one connection. Whatever ends it — the client, an exception (logged here), or the
  // coroutine being destroyed unfinished (see run_contained()) — the connection is closed and
  // forgotten, and no other is affected.
  net::awaitable<void> session(std::shared_ptr<Connection> connection) {
    struct Registration {
      Server& server;
      std::shared_ptr<Connection> connection;
      ~Registration() {
        beast::error_code ignored;
        connection->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        connection->stream.close();
        absl::MutexLock lock(&server.connections_mu_);
        server.connections_.erase(connection);
      }
    };
    {
      absl::MutexLock lock(&connections_mu_);
      connections_.insert(connection);
    }
    const Registration registration{*this, connection};
    try {
      co_await serve_requests(*connection);
    } catch (const std::exception& e) {
      std::cerr << "paygentd: connection closed by an exception: " << e.what() << std::endl;
    } catch (...) {
      std::cerr << "paygentd: connection closed by an unknown exception" << std::endl;
    }
  }

  // Reads requests from `c` and answers them, until the client closes, a request is refused in a
  // way that leaves the connection's framing in doubt, or the server stops.
  net::awaitable<void> serve_requests(Connection& c) {
    // Bounded, so that what Beast's parser holds before it can judge it — a header, a chunk-size
    // line with its extensions, a trailer section — takes at most this much memory: a read past it
    // fails with buffer_overflow. Beast reads max(512, free capacity) bytes at a time, and its
    // parser drains the buffer as it goes: without room reserved, a 400 KB batch would take 800
    // reads.
    beast::flat_buffer buffer(options_.header_limit + kReadChunk);
    buffer.reserve(kReadChunk);
    const auto read_timeout = absl::ToChronoNanoseconds(options_.read_timeout);
    const std::string header_over_limit = str_cat("request header: over the limit of ", options_.header_limit, " bytes");
    const std::string body_over_limit = str_cat("body: over the limit of ", api_.options().max_body_bytes, " bytes");
    while (!stopping_.load()) {
      RequestParser parser(options_.header_limit, api_.options().max_body_bytes);
      beast::error_code ec;
      c.idle = buffer.size() == 0;
      c.stream.expires_after(read_timeout);
      co_await http::async_read_header(c.stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
      c.idle = false;
      if (parser.refused() != RequestParser::Refused::kNone) {
        co_await refuse_and_close(c, "", parser.refused());
        break;
      }
      if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        co_await refuse_and_close(c, "", 413, header_over_limit);
        break;
      }
      const std::string target(parser.get().target());
      if (ec == http::error::body_limit) {
        const HttpRequest head = head_of(parser.get(), target);
        co_await refuse_and_close(c, target, 413, body_over_limit, &head);
        break;
      }
      if (ec) {
        if (is_malformed_http(ec)) {
          co_await refuse_and_close(c, target, 400, str_cat("malformed HTTP request: ", ec.message()));
        }
        break;  // closed, timed out, or cancelled by stop()
      }
      if (const std::optional<std::string> error = header_error(parser.get())) {
        co_await refuse_and_close(c, target, 400, *error);
        break;
      }
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
        c.stream.expires_after(absl::ToChronoNanoseconds(options_.write_timeout));
        co_await http::async_write(c.stream, go_on, net::redirect_error(net::use_awaitable, ec));
        if (ec) break;
      }
      c.stream.expires_after(read_timeout);
      co_await http::async_read(c.stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
      if (parser.refused() != RequestParser::Refused::kNone) {
        co_await refuse_and_close(c, target, parser.refused());
        break;
      }
      if (ec == http::error::body_limit) {
        const HttpRequest head = head_of(parser.get(), target);
        co_await refuse_and_close(c, target, 413, body_over_limit, &head);
        break;
      }
      if (ec == http::error::buffer_overflow) {  // a chunk-size line or a trailer section past the buffer
        co_await refuse_and_close(c, target, 413, str_cat("chunked body: a chunk line or the trailer over ",
                                                          options_.header_limit + kReadChunk, " bytes"));
        break;
      }
      if (ec) {
        if (is_malformed_http(ec)) {
          co_await refuse_and_close(c, target, 400, str_cat("malformed HTTP request: ", ec.message()));
        }
        break;
      }
      http::request<http::string_body> request = parser.release();
      // HEAD is GET without the body (RFC 9110 §9.3.2): the API answers a GET, the body stays here.
      const bool head = request.method() == http::verb::head;
      HttpRequest in{.method = head ? std::string("GET") : std::string(request.method_string()),
                     .target = target,
                     .content_type = std::string(request[http::field::content_type]),
                     .authorization = std::string(request[http::field::authorization]),
                     .body = std::move(request.body()),
                     .api_key = std::string(request["paygent-api-key"]),
                     .idempotency_key = std::string(request["Idempotency-Key"]),
                     .cookie = std::string(request[http::field::cookie])};
      HttpResponse response;
      try {
        response = api_.handle_request(in);
      } catch (const std::exception& e) {  // e.g. std::bad_alloc: answer, and keep serving
        response = api_.refuse(target, 500, str_cat("internal error: ", e.what()));
      }
      if (response.status >= 500) {
        std::cerr << "paygentd: " << response.status << " " << request.method_string() << " " << target << ": "
                  << response.body << std::endl;
      }
      const bool keep_alive = request.keep_alive() && !stopping_.load();
      if (!co_await write(c, response, request.version(), keep_alive, head)) break;
    }
  }

  const ServerOptions& options_;
  Api& api_;
  // Declared before ioc_, so that they outlive it: destroying ioc_ destroys any session coroutine
  // still pending, whose Registration erases its connection from connections_.
  std::atomic<bool> stopping_{false};
  absl::Mutex connections_mu_;
  std::set<std::shared_ptr<Connection>> connections_ ABSL_GUARDED_BY(connections_mu_);
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  net::signal_set signals_;
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

namespace paygent::server {

namespace {

namespace ssl = net::ssl;

// A TLS client context: the system's trusted certificates (set_default_verify_paths), and the
// PEM certificates of `ca_file` too when it is not empty; peers are verified.
absl::StatusOr<std::shared_ptr<ssl::context>> client_tls_context(const std::string& ca_file) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  beast::error_code ec;
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  context->set_default_verify_paths(ec);
  if (ec) return absl::InternalError(str_cat("TLS: cannot read the system's trusted certificates: ", ec.message()));
  if (!ca_file.empty()) {
    context->load_verify_file(ca_file, ec);
    if (ec) return absl::InvalidArgumentError(str_cat("--webhook-ca-file: cannot load ", ca_file, ": ", ec.message()));
  }
  context->set_verify_mode(ssl::verify_peer);
  return context;
}

// One POST of `post` on `stream` (connected, and for TLS shaken hands): the answer's status into *out.
template <class Stream>
net::awaitable<void> post_on(Stream& stream, const WebhookPost& post, absl::StatusOr<int>* out, beast::error_code& ec) {
  http::request<http::string_body> req{http::verb::post, post.url.target, 11};
  req.set(http::field::host, post.url.host_header);
  req.set(http::field::connection, "close");
  for (const auto& [name, value] : post.headers) req.set(name, value);
  req.body() = post.body;
  req.prepare_payload();
  co_await http::async_write(stream, req, net::redirect_error(net::use_awaitable, ec));
  if (ec) co_return;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 10);  // a receiver's answer is not read beyond this
  co_await http::async_read(stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
  // The status is what counts: a body cut at the limit, or a TLS receiver that closed after its
  // answer without close_notify (a body read to the end of the connection), still answered it.
  if (!ec || ec == http::error::body_limit || (ec == net::ssl::error::stream_truncated && parser.is_header_done())) {
    *out = static_cast<int>(parser.get().result_int());
    ec = {};
  }
}

absl::StatusOr<int> post_with(const WebhookPost& post, absl::Duration timeout, ssl::context* tls) {
  // One exchange on an io_context of its own, so that a sender's thread blocks on nothing else;
  // the stream's deadline bounds resolve-to-read as a whole.
  net::io_context ioc;
  absl::StatusOr<int> out = absl::UnavailableError("no reply");
  auto exchange = [&]() -> net::awaitable<void> {
    beast::error_code ec;
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    tcp::resolver resolver(ioc);
    net::steady_timer resolve_timer(ioc, deadline);
    resolve_timer.async_wait([&resolver](const beast::error_code& e) {
      if (!e) resolver.cancel();
    });
    auto results = co_await resolver.async_resolve(post.url.host, post.url.port, net::redirect_error(net::use_awaitable, ec));
    resolve_timer.cancel();
    beast::tcp_stream stream(ioc);
    stream.expires_at(deadline);
    if (!ec) co_await stream.async_connect(results, net::redirect_error(net::use_awaitable, ec));
    std::string stage;  // what failed, for the error: "" (connect, write, read) or the TLS handshake
    if (!ec && !post.url.tls) co_await post_on(stream, post, &out, ec);
    if (!ec && post.url.tls) {
      if (tls == nullptr) {
        ec = net::error::operation_not_supported;
        stage = "TLS is not available: ";
      } else {
        beast::ssl_stream<beast::tcp_stream&> secure(stream, *tls);
        // SNI for a name (not for an address literal), and the certificate must be for the host.
        beast::error_code not_an_address;
        static_cast<void>(net::ip::make_address(post.url.host, not_an_address));
        if (not_an_address) SSL_set_tlsext_host_name(secure.native_handle(), post.url.host.c_str());
        secure.set_verify_callback(ssl::host_name_verification(post.url.host));
        co_await secure.async_handshake(ssl::stream_base::client, net::redirect_error(net::use_awaitable, ec));
        if (ec) {
          stage = str_cat("TLS handshake with ", post.url.host, ":", post.url.port, " failed: ");
        } else {
          // The answer is in: the connection is closed without waiting for the receiver's
          // close_notify (which could hold this sender thread until the deadline).
          co_await post_on(secure, post, &out, ec);
        }
      }
    }
    if (ec) {
      out = ec == beast::error::timeout ? absl::DeadlineExceededError(str_cat("no answer within ", absl::FormatDuration(timeout)))
                                        : absl::UnavailableError(str_cat(stage, ec.message()));
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  };
  net::co_spawn(ioc, exchange(), [&out](std::exception_ptr e) {
    if (e) out = absl::InternalError("the webhook request threw");
  });
  ioc.run();
  return out;
}

}  // namespace

absl::StatusOr<WebhookPoster> webhook_poster(const std::string& ca_file) {
  absl::StatusOr<std::shared_ptr<ssl::context>> tls = client_tls_context(ca_file);
  if (!tls.ok()) return tls.status();
  return WebhookPoster([tls = *std::move(tls)](const WebhookPost& post, absl::Duration timeout) {
    return post_with(post, timeout, tls.get());
  });
}

absl::StatusOr<int> post_webhook(const WebhookPost& post, absl::Duration timeout) {
  static const absl::StatusOr<std::shared_ptr<ssl::context>> system_tls = client_tls_context("");
  return post_with(post, timeout, system_tls.ok() ? system_tls->get() : nullptr);
}

}  // namespace paygent::server
