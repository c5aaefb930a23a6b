// str_cat: string concatenation that takes std::string_view.
//
// Debian's abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), so
// absl::StrCat does not accept std::string_view. This is the small replacement used in our .cpp
// files; absl::Status still takes the resulting std::string.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/string_view.h"

namespace paygent::internal {

inline void append_piece(std::string& out, std::string_view s) { out.append(s); }
inline void append_piece(std::string& out, const char* s) { out.append(s); }
inline void append_piece(std::string& out, const std::string& s) { out.append(s); }
inline void append_piece(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
inline void append_piece(std::string& out, char c) { out.push_back(c); }
template <class I>
  requires(std::is_integral_v<I> && !std::is_same_v<I, char> && !std::is_same_v<I, bool>)
inline void append_piece(std::string& out, I v) {
  out += std::to_string(v);
}

template <class... A>
[[nodiscard]] std::string str_cat(const A&... pieces) {
  std::string out;
  (append_piece(out, pieces), ...);
  return out;
}

template <class... A>
void str_append(std::string* out, const A&... pieces) {
  (append_piece(*out, pieces), ...);
}

// `v` with one decimal ("81.3"), as printf's "%.1f" writes the values a person reads (|v| < 1e15;
// a half-tenth rounds away from zero), without printf: on the proxy's request path a cold
// snprintf("%.1f") cost 4-9 us a call.
[[nodiscard]] inline std::string one_decimal(double v) {
  if (!(std::fabs(v) < 1e15)) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  const long long tenths = std::llround(v * 10.0);
  const unsigned long long a = tenths < 0 ? 0ULL - static_cast<unsigned long long>(tenths) : static_cast<unsigned long long>(tenths);
  std::string out = tenths < 0 ? "-" : "";
  out += std::to_string(a / 10);
  out += '.';
  out += static_cast<char>('0' + a % 10);
  return out;
}

}  // namespace paygent::internal
