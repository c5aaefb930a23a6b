// RequestParser: an HTTP/1.1 request parser for servers that face the network (paygentd,
// paygent-proxy). Thread safety: one parser per request, used by one thread at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace paygent::server {
namespace request_parser_internal {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// All the chunk extensions of one request together (RFC 9112 §7.1.1: "A server ought to limit
// the total length of chunk extensions received in a request"). paygentd reads none; a client
// that sends more than this is not one of ours.
inline constexpr std::size_t kMaxChunkExtensionBytes = 1 << 10;

// Beast's http::parser<true, string_body>, rewritten so that it bounds what Beast leaves
// unbounded and never throws (issue 8; paygentd's and paygent-proxy's request parser):
// - Trailer fields count against the header limit together with the header fields (each field
//   as name + value + 4 bytes), and are then dropped: paygentd uses none, and RFC 9110 §6.5.2
//   forbids merging them into the header (Beast's parser inserts them).
// - Chunk extensions, which Beast counts in no limit, are capped at kMaxChunkExtensionBytes per
//   request.
// - Beast's parser calls these callbacks from inside the read's initiation or completion, where
//   an exception is not the session's to catch: with Boost 1.74's coroutines it ends the process
//   (std::terminate; a trailer field of 64 KiB made Beast's parser throw std::length_error
//   "field value too large"). Every callback here catches everything, and refuses instead.
// The bytes a trailer section or a chunk-size line occupy before they are parsed are bounded by
// the connection's read buffer (see serve_requests() in server/http_server.cpp). When the parser refuses, the read fails and
// refused() says why.
class RequestParser final : public http::basic_parser<true> {
 public:
  enum class Refused {
    kNone,
    kTrailer,          // header and trailer fields over the header limit
    kChunkExtensions,  // chunk extensions over kMaxChunkExtensionBytes
    kFieldTooLarge,    // a field or the target Beast cannot hold (64 KiB)
    kInternal,         // an allocation failed (logged)
  };

  RequestParser(std::size_t header_limit, std::uint64_t body_limit) : header_limit_(header_limit) {
    this->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(header_limit, UINT32_MAX)));
    this->body_limit(body_limit);
  }

  // The request as parsed so far (the header once async_read_header has succeeded).
  [[nodiscard]] const http::request<http::string_body>& get() const noexcept { return request_; }
  // Moves the request out; call once, after the whole message was read.
  [[nodiscard]] http::request<http::string_body> release() { return std::move(request_); }
  [[nodiscard]] Refused refused() const noexcept { return refused_; }

 private:
  // Runs `f`, turning any exception into a refusal that fails the read.
  template <typename F>
  void contained(beast::error_code& ec, F&& f) noexcept {
    try {
      f();
    } catch (const std::length_error&) {
      refuse(Refused::kFieldTooLarge, ec);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "reading a request: %s\n", e.what());
      refuse(Refused::kInternal, ec);
    } catch (...) {
      std::fprintf(stderr, "reading a request: an unknown exception\n");
      refuse(Refused::kInternal, ec);
    }
  }

  void refuse(Refused why, beast::error_code& ec) noexcept {
    refused_ = why;
    ec = http::error::header_limit;  // any error ends the read; refused() tells the session which
  }

  void on_request_impl(http::verb method, beast::string_view method_string, beast::string_view target, int version,
                       beast::error_code& ec) override {
    contained(ec, [&] {
      request_.target(target);
      if (method != http::verb::unknown) {
        request_.method(method);
      } else {
        request_.method_string(method_string);
      }
      request_.version(version);
    });
  }

  void on_response_impl(int, beast::string_view, int, beast::error_code& ec) override {
    ec = http::error::bad_version;  // never called for a request parser
  }

  void on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                     beast::error_code& ec) override {
    field_bytes_ += name_string.size() + value.size() + 4;  // "name: value\r\n"
    if (is_header_done()) {  // a trailer field
      if (field_bytes_ > header_limit_) refuse(Refused::kTrailer, ec);
      return;
    }
    contained(ec, [&] { request_.insert(name, name_string, value); });
  }

  void on_header_impl(beast::error_code& ec) override { ec = {}; }

  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length, beast::error_code& ec) override {
    contained(ec, [&] { body_.init(content_length, ec); });
  }

  std::size_t on_body_impl(beast::string_view body, beast::error_code& ec) override {
    std::size_t taken = 0;
    contained(ec, [&] { taken = body_.put(net::buffer(body.data(), body.size()), ec); });
    return taken;
  }

  void on_chunk_header_impl(std::uint64_t, beast::string_view extensions, beast::error_code& ec) override {
    extension_bytes_ += extensions.size();
    if (extension_bytes_ > kMaxChunkExtensionBytes) refuse(Refused::kChunkExtensions, ec);
  }

  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, beast::error_code& ec) override {
    return on_body_impl(body, ec);
  }

  void on_finish_impl(beast::error_code& ec) override {
    contained(ec, [&] { body_.finish(ec); });
  }

  const std::size_t header_limit_;
  http::request<http::string_body> request_;
  http::string_body::reader body_{request_.base(), request_.body()};
  std::size_t field_bytes_ = 0;
  std::size_t extension_bytes_ = 0;
  Refused refused_ = Refused::kNone;
};

}  // namespace request_parser_internal

using request_parser_internal::kMaxChunkExtensionBytes;
using request_parser_internal::RequestParser;

}  // namespace paygent::server
