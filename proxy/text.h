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

inline std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

}  // namespace paygent::proxy
