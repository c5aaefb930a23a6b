// Small text helpers of paygent-proxy that take std::string_view (Debian's abseil has its own
// absl::string_view, see meter/internal/str_cat.h). Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "meter/internal/str_cat.h"

namespace paygent::proxy {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

inline char ascii_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

inline bool istarts_with(std::string_view text, std::string_view prefix) noexcept {
  return text.size() >= prefix.size() && iequals(text.substr(0, prefix.size()), prefix);
}

// Appends the header line "name: value\r\n" to `lines`. `name` and `value` hold no CR or LF
// (they come from a parsed message, or are the proxy's own). A response's or request's headers
// are kept as one such string: a list of name and value strings took two allocations a header
// on the way to the provider and back.
inline void append_header(std::string* lines, std::string_view name, std::string_view value) {
  str_append(lines, name, ": ", value, "\r\n");
}

// Calls f(name, line) for each header line of `lines` (as append_header writes them): `name` the
// field's name ("" for a line without a colon), `line` the whole line with its CRLF (to copy as
// it is).
template <class F>
void for_each_header_line(std::string_view lines, F&& f) {
  while (!lines.empty()) {
    std::size_t end = lines.find("\r\n");
    end = end == std::string_view::npos ? lines.size() : end + 2;
    const std::string_view line = lines.substr(0, end);
    const std::size_t colon = line.find(':');
    f(colon == std::string_view::npos ? std::string_view() : line.substr(0, colon), line);
    lines.remove_prefix(end);
  }
}

// Whether `lines` (header lines as append_header writes them) has a header `name`.
inline bool has_header(std::string_view lines, std::string_view name) noexcept {
  bool found = false;
  for_each_header_line(lines, [&](std::string_view field, std::string_view) { found = found || iequals(field, name); });
  return found;
}

inline std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

}  // namespace paygent::proxy
