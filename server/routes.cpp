// Path matching of the route table (see server/routes.h).
#include "server/routes.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>

#include "meter/internal/percent.h"
#include "meter/internal/str_cat.h"
#include "server/wire.h"

namespace paygent::server::route_internal {

using ::paygent::internal::str_append;
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

absl::StatusOr<std::string> decode_param(std::string_view raw, std::string_view what) {
  absl::StatusOr<std::string> out = percent_decode(raw, what, false);
  if (!out.ok()) return out.status();
  if (out->size() > kMaxTextBytes) {
    return absl::InvalidArgumentError(str_cat(what, ": must be at most ", kMaxTextBytes, " bytes"));
  }
  if (out->find('\0') != std::string::npos) return absl::InvalidArgumentError(str_cat(what, ": must not contain %00"));
  return out;
}

}  // namespace paygent::server::route_internal

namespace paygent::server {

absl::StatusOr<std::string> percent_decode(std::string_view text, std::string_view what, bool plus_is_space) {
  std::optional<std::string> out = ::paygent::internal::percent_decode(text, plus_is_space);
  if (!out) return absl::InvalidArgumentError(::paygent::internal::str_cat(what, ": bad percent-encoding"));
  if (!valid_utf8(*out)) return absl::InvalidArgumentError(::paygent::internal::str_cat(what, ": not valid UTF-8"));
  return *std::move(out);
}

}  // namespace paygent::server

namespace paygent::server {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

std::optional<std::int64_t> parse_count(std::string_view text) noexcept {
  std::int64_t value = 0;
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string_view query_of(std::string_view target) noexcept {
  const std::size_t question = target.find('?');
  return question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
}

absl::StatusOr<std::map<std::string, std::string, std::less<>>> parse_query(std::string_view query,
                                                                         std::span<const std::string_view> known) {
  std::map<std::string, std::string, std::less<>> params;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    absl::StatusOr<std::string> key = percent_decode(pair.substr(0, eq), "query", true);
    if (!key.ok()) return key.status();
    if (std::find(known.begin(), known.end(), *key) == known.end()) {
      std::string names;
      for (std::string_view name : known) str_append(&names, names.empty() ? "" : ", ", name);
      return absl::InvalidArgumentError(
          str_cat(key->size() > 100 ? std::string("(a long name)") : *key, ": unknown query parameter (", names, ")"));
    }
    absl::StatusOr<std::string> value =
        percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), *key, true);
    if (!value.ok()) return value.status();
    if (!params.emplace(*key, *std::move(value)).second) {
      return absl::InvalidArgumentError(str_cat(*key, ": repeated query parameter"));
    }
  }
  return params;
}

}  // namespace paygent::server
