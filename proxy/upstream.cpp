#include <utility>  // before Boost.Asio: Boost 1.74's awaitable.hpp needs std::exchange (GCC 12)

#include "proxy/upstream.h"
#include "proxy/text.h"

#include <chrono>
#include <cstdint>
#include <limits>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>


namespace paygent::proxy {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// Runs one asynchronous operation on `ioc` to completion on this thread (the timeouts of
// beast::tcp_stream apply to asynchronous operations only).
template <class Start>
beast::error_code run(net::io_context& ioc, Start&& start) {
  beast::error_code result;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

ssl::context& client_tls() {
  static ssl::context* context = [] {
    auto* c = new ssl::context(ssl::context::tls_client);
    c->set_default_verify_paths();
    c->set_verify_mode(ssl::verify_peer);
    return c;
  }();
  return *context;
}

template <class Stream>
class Call final : public UpstreamCall {
 public:
  template <class... Args>
  Call(const UpstreamUrl& url, absl::Duration timeout, Args&&... args)
      : url_(url), timeout_(absl::ToChronoMilliseconds(timeout)), ioc_(thread_context()), stream_(ioc_, std::forward<Args>(args)...) {}

  absl::Status begin(const UpstreamRequest& request) {
    tcp::resolver resolver(ioc_);
    beast::error_code ec;
    tcp::resolver::results_type endpoints;
    const auto address = net::ip::make_address(url_.host, ec);
    if (!ec) {  // an IP address: no resolver round trip
      endpoints = tcp::resolver::results_type::create(tcp::endpoint(address, static_cast<unsigned short>(std::stoi(url_.port))),
                                                      url_.host, url_.port);
    } else {
      endpoints = resolver.resolve(url_.host, url_.port, ec);
      if (ec) return fail("cannot resolve", ec);
    }
    lowest().expires_after(timeout_);
    ec = run(ioc_, [&](auto handler) { lowest().async_connect(endpoints, std::move(handler)); });
    if (ec) return fail("cannot connect", ec);
    // The request's head and body, and the next request on a kept connection, go out at once
    // instead of waiting for the previous segment's ACK (Nagle's algorithm).
    lowest().socket().set_option(tcp::no_delay(true), ec);
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      if (!SSL_set_tlsext_host_name(stream_.native_handle(), url_.host.c_str())) {
        return absl::UnavailableError(str_cat("upstream ", url_.host, ": cannot set TLS server name"));
      }
      stream_.set_verify_callback(ssl::host_name_verification(url_.host));
      lowest().expires_after(timeout_);
      ec = run(ioc_, [&](auto handler) { stream_.async_handshake(ssl::stream_base::client, std::move(handler)); });
      if (ec) return fail("TLS handshake failed", ec);
    }
    http::request<http::string_body> out{http::verb::post, request.target, 11};
    for (const auto& [name, value] : request.headers) out.insert(name, value);
    out.set(http::field::host, url_.host);
    out.set(http::field::connection, "close");
    out.body() = request.body;
    out.prepare_payload();
    lowest().expires_after(timeout_);
    ec = run(ioc_, [&](auto handler) { http::async_write(stream_, out, std::move(handler)); });
    if (ec) return fail("cannot send the request", ec);
    parser_.body_limit(std::numeric_limits<std::uint64_t>::max());  // not boost::none: Beast 1.74 compares a Content-Length with an empty optional as "over the limit"
    parser_.header_limit(64 << 10);
    lowest().expires_after(timeout_);
    ec = run(ioc_, [&](auto handler) { http::async_read_header(stream_, buffer_, parser_, std::move(handler)); });
    if (ec) return fail("no response head", ec);
    const auto& res = parser_.get();
    head_.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
      head_.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    head_.event_stream = istarts_with(std::string_view(res[http::field::content_type].data(), res[http::field::content_type].size()), "text/event-stream");
    return absl::OkStatus();
  }

  const UpstreamHead& head() const noexcept override { return head_; }

  absl::StatusOr<std::string_view> read_some() override {
    auto& body = parser_.get().body();
    body.clear();
    while (body.empty() && !parser_.is_done()) {
      lowest().expires_after(timeout_);
      beast::error_code ec =
          run(ioc_, [&](auto handler) { http::async_read_some(stream_, buffer_, parser_, std::move(handler)); });
      if (ec) return fail("the response broke off", ec);
    }
    return std::string_view(body);
  }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  absl::Status fail(std::string_view what, const beast::error_code& ec) const {
    const std::string text = str_cat("upstream ", url_.tls ? "https://" : "http://", url_.host, ":", url_.port,
                                          ": ", what, ": ", ec.message());
    if (ec == beast::error::timeout) return absl::DeadlineExceededError(text);
    return absl::UnavailableError(text);
  }

  // One io_context per thread, reused by the thread's calls one after the other (making one costs
  // an epoll and an eventfd descriptor).
  static net::io_context& thread_context() {
    thread_local net::io_context context{1};
    return context;
  }

  UpstreamUrl url_;
  std::chrono::milliseconds timeout_;
  net::io_context& ioc_;
  Stream stream_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
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

absl::StatusOr<std::unique_ptr<UpstreamCall>> UpstreamCall::start(const UpstreamUrl& url, const UpstreamRequest& request,
                                                                 absl::Duration timeout) {
  if (url.tls) {
    auto call = std::make_unique<Call<beast::ssl_stream<beast::tcp_stream>>>(url, timeout, client_tls());
    if (absl::Status status = call->begin(request); !status.ok()) return status;
    return std::unique_ptr<UpstreamCall>(std::move(call));
  }
  auto call = std::make_unique<Call<beast::tcp_stream>>(url, timeout);
  if (absl::Status status = call->begin(request); !status.ok()) return status;
  return std::unique_ptr<UpstreamCall>(std::move(call));
}

}  // namespace paygent::proxy
