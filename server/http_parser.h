// BoundedParser: the HTTP/1.1 parser of the programs that face the network. RequestParser reads
// what clients send paygentd and paygent-proxy; ResponseParser reads what a provider answers
// paygent-proxy. Thread safety: one parser per message, used by one thread at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace paygent::server {
namespace http_parser_internal {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// All the chunk extensions of one message together (RFC 9112 §7.1.1: "A server ought to limit
// the total length of chunk extensions received in a request"). Neither paygentd nor the proxy
// reads any; a peer that sends more than this is not one of ours.
inline constexpr std::size_t kMaxChunkExtensionBytes = 1 << 10;

// A Content-Length up to this much is reserved at once; a larger one grows the body as it
// arrives (a peer's Content-Length is a claim, not memory to hand it).
inline constexpr std::uint64_t kMaxBodyReserve = 1 << 20;

// Why a BoundedParser failed a read.
enum class ParseRefusal {
  kNone,
  kTrailer,          // header and trailer fields over the header limit
  kChunkExtensions,  // chunk extensions over kMaxChunkExtensionBytes
  kFieldTooLarge,    // a field or the target Beast cannot hold (64 KiB)
  kInternal,         // an allocation failed (logged)
};

// Beast's http::parser<isRequest, string_body>, rewritten so that it bounds what Beast leaves
// unbounded and never throws (issues 8 and 12):
// - Trailer fields count against the header limit together with the header fields (each field
//   as name + value + 4 bytes), and are then dropped: neither program uses any, and RFC 9110
//   §6.5.2 forbids merging them into the header (Beast's parser inserts them).
// - Chunk extensions, which Beast counts in no limit, are capped at kMaxChunkExtensionBytes per
//   message.
// - A Content-Length reserves at most kMaxBodyReserve bytes up front.
// - Beast's parser calls these callbacks from inside the read's initiation or completion, where
//   an exception is not the caller's to catch: with Boost 1.74's coroutines it ends the process
//   (std::terminate; a trailer field of 64 KiB made Beast's parser throw std::length_error
//   "field value too large", from a client's request and from an upstream's response alike).
//   Every callback here catches everything, and refuses instead.
// The bytes a trailer section or a chunk-size line occupy before they are parsed are bounded by
// the connection's read buffer (serve_requests() in server/http_server.cpp; Link in
// proxy/upstream.cpp). When the parser refuses, the read fails and refused() says why.
template <bool isRequest>
class BoundedParser final : public http::basic_parser<isRequest> {
 public:
  using Refused = ParseRefusal;
  using Message = http::message<isRequest, http::string_body>;

  BoundedParser(std::size_t header_limit, std::uint64_t body_limit) : header_limit_(header_limit) {
    this->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(header_limit, UINT32_MAX)));
    this->body_limit(body_limit);
  }

  // The message as parsed so far (the header once async_read_header has succeeded).
  [[nodiscard]] const Message& get() const noexcept { return message_; }
  // The body parsed so far, which a reader of a message in parts may take and clear.
  [[nodiscard]] std::string& body() noexcept { return message_.body(); }
  // Moves the message out; call once, after the whole message was read.
  [[nodiscard]] Message release() { return std::move(message_); }
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
      std::fprintf(stderr, "reading an HTTP %s: %s\n", isRequest ? "request" : "response", e.what());
      refuse(Refused::kInternal, ec);
    } catch (...) {
      std::fprintf(stderr, "reading an HTTP %s: an unknown exception\n", isRequest ? "request" : "response");
      refuse(Refused::kInternal, ec);
    }
  }

  void refuse(Refused why, beast::error_code& ec) noexcept {
    refused_ = why;
    ec = http::error::header_limit;  // any error ends the read; refused() tells the caller which
  }

  void on_request_impl(http::verb method, beast::string_view method_string, beast::string_view target, int version,
                       beast::error_code& ec) override {
    if constexpr (isRequest) {
      contained(ec, [&] {
        message_.target(target);
        if (method != http::verb::unknown) {
          message_.method(method);
        } else {
          message_.method_string(method_string);
        }
        message_.version(version);
      });
    } else {
      ec = http::error::bad_version;  // never called for a response parser
    }
  }

  void on_response_impl(int code, beast::string_view reason, int version, beast::error_code& ec) override {
    if constexpr (isRequest) {
      ec = http::error::bad_version;  // never called for a request parser
    } else {
      contained(ec, [&] {
        message_.result(code);
        message_.version(version);
        message_.reason(reason);
      });
    }
  }

  void on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                     beast::error_code& ec) override {
    field_bytes_ += name_string.size() + value.size() + 4;  // "name: value\r\n"
    if (this->is_header_done()) {  // a trailer field
      if (field_bytes_ > header_limit_) refuse(Refused::kTrailer, ec);
      return;
    }
    contained(ec, [&] { message_.insert(name, name_string, value); });
  }

  void on_header_impl(beast::error_code& ec) override { ec = {}; }

  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length, beast::error_code& ec) override {
    const boost::optional<std::uint64_t> reserve =
        content_length && *content_length <= kMaxBodyReserve ? content_length : boost::none;
    contained(ec, [&] { body_.init(reserve, ec); });
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
  Message message_;
  http::string_body::reader body_{message_.base(), message_.body()};
  std::size_t field_bytes_ = 0;
  std::size_t extension_bytes_ = 0;
  Refused refused_ = Refused::kNone;
};

}  // namespace http_parser_internal

using http_parser_internal::kMaxChunkExtensionBytes;
using http_parser_internal::ParseRefusal;
using RequestParser = http_parser_internal::BoundedParser<true>;
using ResponseParser = http_parser_internal::BoundedParser<false>;

}  // namespace paygent::server
