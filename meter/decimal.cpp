// Exact decimal parsing and formatting of money (see include/paygent/money.h). The parsing is the
// one decimal module's (billing/decimal.h), shared with plans and invoices; this file scales its
// value to nano-USD or pico-USD per token without rounding.
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "billing/decimal.h"
#include "meter/internal/catalog_parse.h"
#include "meter/internal/str_cat.h"
#include "paygent/money.h"

namespace paygent {
namespace {

constexpr __int128 kInt64Max = INT64_MAX;

// Parses `text` with the one decimal module (billing::Decimal, exponents allowed) as a non-negative
// value and returns `scaled` = value * 10^scale / divisor, exactly, or an error that says why that
// is impossible ("\"<text>\": <why>").
absl::StatusOr<std::int64_t> parse_scaled(std::string_view text, int scale, std::int64_t divisor,
                                          std::string_view unit) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(internal::str_cat("\"", text, "\": ", why));
  };
  if (!text.empty() && text[0] == '-') return invalid("must not be negative");
  absl::StatusOr<billing::Decimal> parsed = billing::Decimal::parse(text, {.allow_exponent = true});
  if (!parsed.ok()) {
    const std::string message(parsed.status().message());
    if (absl::IsOutOfRange(parsed.status())) {
      // More than 38 digits: a value too large to hold, or one whose digits run past what 18
      // decimal places keep (then it is too precise, as any such value is for these units).
      const bool fits_when_cut =
          billing::Decimal::parse(text, {.allow_exponent = true, .truncate_past_max_scale = true}).ok();
      return fits_when_cut ? invalid(internal::str_cat("has more precision than 1 ", unit)) : invalid("is too large");
    }
    if (std::string_view(message).ends_with("has more than 18 decimal places")) {
      return invalid(internal::str_cat("has more precision than 1 ", unit));
    }
    // The module's reason, after its quoted copy of the text (cut to 45 bytes and "..." past 48):
    // "has a character 'x' at position 0 ...".
    const std::size_t quoted = (text.size() > 48 ? 50 : text.size() + 2) + 1;
    return invalid(message.size() > quoted ? std::string_view(message).substr(quoted) : std::string_view(message));
  }
  // value * 10^scale = mantissa * 10^(scale - decimal scale): exact in int64 once divided, or refused.
  __int128 value = parsed->mantissa();
  int k = scale - parsed->scale();
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
  // |amount| <= 2^63 and unit / 2 < 2^29: 64 bits hold every step (a 128-bit division is a call
  // into libgcc, ~1 us a call cold on the proxy's answer to a soft-gated call).
  std::uint64_t v = negative ? 0ULL - static_cast<std::uint64_t>(amount) : static_cast<std::uint64_t>(amount);
  std::uint64_t unit = 1;
  for (int d = digits; d < 9; ++d) unit *= 10;
  v = v / unit + (v % unit >= (unit + 1) / 2 ? 1 : 0);  // half away from zero, to `digits` decimals
  std::uint64_t frac_div = 1;
  for (int d = 0; d < digits; ++d) frac_div *= 10;
  const std::uint64_t whole = v / frac_div;
  const std::uint64_t frac = v % frac_div;

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
