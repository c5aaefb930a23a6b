// percent_decode: the bytes a percent-encoded URL part stands for. One definition for paygentd's
// routes and paygent-proxy's query. Thread safety: a pure function.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace paygent::internal {

// `text` with each %XX replaced by its byte (and '+' by a space when `plus_is_space`, as in a query
// string); nullopt when a '%' is not followed by two hex digits. The bytes are not checked for
// UTF-8: the caller does, where it needs text.
[[nodiscard]] inline std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%') {
      const int hi = i + 2 < text.size() ? hex(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? hex(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (text[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

}  // namespace paygent::internal
