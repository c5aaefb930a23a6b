// Exact decimal parsing and formatting of money (see include/paygent/money.h).
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meter/internal/catalog_parse.h"
#include "meter/internal/str_cat.h"
#include "paygent/money.h"

namespace paygent {
namespace {

constexpr __int128 kInt64Max = INT64_MAX;

// Parses `text` as a non-negative decimal number M * 10^exp and returns `scaled` = value * 10^scale
// / divisor, exactly, or an error that says why that is impossible.
absl::StatusOr<std::int64_t> parse_scaled(std::string_view text, int scale, std::int64_t divisor,
                                          std::string_view unit) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(internal::str_cat("\"", text, "\": ", why));
  };
  std::size_t i = 0;
  if (i < text.size() && text[i] == '+') ++i;
  if (i < text.size() && text[i] == '-') return invalid("must not be negative");
  __int128 mantissa = 0;
  int digits = 0;        // significant digits kept in mantissa
  int exponent = 0;      // decimal exponent of mantissa
  bool any_digit = false;
  bool seen_point = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.') {
      if (seen_point) return invalid("is not a decimal number");
      seen_point = true;
      continue;
    }
    if (c < '0' || c > '9') break;
    any_digit = true;
    if (mantissa == 0 && c == '0') {  // leading zeros carry no digits
      if (seen_point) --exponent;
      continue;
    }
    if (digits >= 36) {
      // Past 36 digits only zeros can be exact: one before the point scales the value, one
      // after it adds nothing ("0.1000...000" of any length is 0.1).
      if (c != '0') return invalid("has too many digits");
      if (!seen_point) ++exponent;
      continue;
    }
    mantissa = mantissa * 10 + (c - '0');
    ++digits;
    if (seen_point) --exponent;
  }
  if (!any_digit) return invalid("is not a decimal number");
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
    int e = 0;
    bool exp_digit = false;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      exp_digit = true;
      if (e < 10000) e = e * 10 + (text[i] - '0');
    }
    if (!exp_digit) return invalid("is not a decimal number");
    exponent += negative ? -e : e;
  }
  if (i != text.size()) return invalid("is not a decimal number");
  if (mantissa == 0) return 0;

  int k = exponent + scale;
  __int128 value = mantissa;
  const __int128 limit = kInt64Max * divisor;  // the largest value that can still fit
  for (; k > 0; --k) {
    if (value > limit / 10) return invalid("is too large");  // checked first: value * 10 never overflows
    value *= 10;
  }
  for (; k < 0; ++k) {
    if (value % 10 != 0) return invalid(internal::str_cat("has more precision than 1 ", unit));
    value /= 10;
  }
  if (value % divisor != 0) return invalid(internal::str_cat("has more precision than 1 ", unit));
  value /= divisor;
  if (value > kInt64Max) return invalid("is too large");
  return static_cast<std::int64_t>(value);
}

}  // namespace

namespace internal {

absl::StatusOr<std::int64_t> parse_scaled_decimal(std::string_view text, int scale, std::int64_t divisor,
                                                  std::string_view unit) {
  if (divisor <= 0) return absl::InvalidArgumentError("divisor must be positive");
  return parse_scaled(text, scale, divisor, unit);
}

}  // namespace internal

absl::StatusOr<Nanos> parse_usd(std::string_view decimal) {
  return parse_scaled(decimal, 9, 1, "nano-USD");
}

absl::StatusOr<PicosPerToken> parse_usd_per_tokens(std::string_view decimal, std::int64_t per_tokens) {
  if (per_tokens <= 0) return absl::InvalidArgumentError("per_tokens must be positive");
  return parse_scaled(decimal, 12, per_tokens, "pico-USD per token");
}

std::string format_usd(Nanos amount, int digits) {
  if (digits < 0) digits = 0;
  if (digits > 9) digits = 9;
  const bool negative = amount < 0;
  unsigned __int128 v = negative ? static_cast<unsigned __int128>(-(static_cast<__int128>(amount)))
                                 : static_cast<unsigned __int128>(amount);
  unsigned __int128 unit = 1;
  for (int d = digits; d < 9; ++d) unit *= 10;
  v = (v + unit / 2) / unit;  // half away from zero, to `digits` decimals
  unsigned __int128 frac_div = 1;
  for (int d = 0; d < digits; ++d) frac_div *= 10;
  auto whole = static_cast<std::uint64_t>(v / frac_div);
  auto frac = static_cast<std::uint64_t>(v % frac_div);

  std::string whole_text = std::to_string(whole);
  std::string grouped;
  for (std::size_t j = 0; j < whole_text.size(); ++j) {
    if (j != 0 && (whole_text.size() - j) % 3 == 0) grouped.push_back(',');
    grouped.push_back(whole_text[j]);
  }
  std::string out = negative && v != 0 ? "-$" : "$";
  out += grouped;
  if (digits > 0) {
    std::string f = std::to_string(frac);
    out += '.';
    out.append(static_cast<std::size_t>(digits) - f.size(), '0');
    out += f;
  }
  return out;
}

}  // namespace paygent
