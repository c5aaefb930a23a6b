// Private to meter/: the small steps shared by the LLM and the media parts of the price catalog
// parser (price_catalog.cpp, media_prices.cpp) and the exact decimal parser they build on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meter/internal/str_cat.h"

namespace paygent::internal {

// InvalidArgument "<path>: <why>".
inline absl::Status invalid(std::string_view path, std::string_view why) {
  return absl::InvalidArgumentError(str_cat(path, ": ", why));
}

// True for "YYYY-MM-DD" (digits in place; not checked further).
inline bool is_date(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 4 || i == 7) continue;
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

// Parses the non-negative decimal `text` exactly into text * 10^scale / divisor, or fails with
// InvalidArgument ("\"<text>\": has more precision than 1 <unit>", "is too large", ...). Nothing
// is rounded. Defined in decimal.cpp, where parse_usd and parse_usd_per_tokens use it.
absl::StatusOr<std::int64_t> parse_scaled_decimal(std::string_view text, int scale, std::int64_t divisor,
                                                  std::string_view unit);

}  // namespace paygent::internal
