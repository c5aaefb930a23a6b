// Path matching of the route table (see server/routes.h).
#include "server/routes.h"

#include <string>
#include <string_view>

#include "meter/internal/str_cat.h"
#include "server/wire.h"

namespace paygent::server::route_internal {

using ::paygent::internal::str_cat;

bool matches(std::string_view pattern, std::string_view path, std::string_view& param) noexcept {
  while (!pattern.empty()) {
    const std::size_t open = pattern.find('{');
    if (open == std::string_view::npos) return pattern == path;
    if (path.substr(0, open) != pattern.substr(0, open)) return false;
    path.remove_prefix(open);
    pattern.remove_prefix(pattern.find('}') + 1);
    const std::size_t slash = path.find('/');
    const std::string_view segment = path.substr(0, slash);
    if (segment.empty()) return false;
    param = segment;
    path.remove_prefix(segment.size());
  }
  return path.empty();
}

absl::StatusOr<std::string> decode_param(std::string_view raw) {
  constexpr std::string_view kWhat = "user id in the path";
  absl::StatusOr<std::string> out = percent_decode(raw, kWhat, false);
  if (!out.ok()) return out.status();
  if (out->size() > kMaxTextBytes) {
    return absl::InvalidArgumentError(str_cat(kWhat, ": must be at most ", kMaxTextBytes, " bytes"));
  }
  if (out->find('\0') != std::string::npos) return absl::InvalidArgumentError(str_cat(kWhat, ": must not contain %00"));
  return out;
}

}  // namespace paygent::server::route_internal

namespace paygent::server {

absl::StatusOr<std::string> percent_decode(std::string_view text, std::string_view what, bool plus_is_space) {
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
      if (hi < 0 || lo < 0) {
        return absl::InvalidArgumentError(::paygent::internal::str_cat(what, ": bad percent-encoding"));
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (text[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(text[i]);
    }
  }
  if (!valid_utf8(out)) return absl::InvalidArgumentError(::paygent::internal::str_cat(what, ": not valid UTF-8"));
  return out;
}

}  // namespace paygent::server
