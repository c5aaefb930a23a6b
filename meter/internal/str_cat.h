// str_cat: string concatenation that takes std::string_view.
//
// Debian's abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), so
// absl::StrCat does not accept std::string_view. This is the small replacement used in our .cpp
// files; absl::Status still takes the resulting std::string.
#pragma once

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

}  // namespace paygent::internal
