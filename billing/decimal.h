// Exact decimal numbers for billing: quantities, prices, credits and money.
//
// A Decimal is `mantissa / 10^scale` with a signed 128-bit mantissa and a scale of 0..18 decimal
// places. Parsing, addition, subtraction and multiplication are exact: when the exact result does
// not fit (beyond 128 bits, about 1.7e38, or more than 18 decimal places that are not zeros) the operation
// fails with OutOfRange naming the operation; nothing ever wraps or is silently rounded. Division
// and rounding always take an explicit scale and RoundingMode.
//
// Money leaves this module as integer nano-USD (paygent::Nanos, include/paygent/money.h) through
// to_nanos() with an explicit rounding mode, and comes in through from_nanos().
//
// This is the one decimal module of plans, prices and invoices (issue 11): meter/decimal.cpp's
// parse_usd and parse_usd_per_tokens (the plan config's amounts, the price catalog's prices, the
// tracking calls' amount_usd) parse with Decimal::parse(text, {.allow_exponent = true}) and then
// scale its value to nano- or pico-USD without rounding. It is built as its own library,
// paygent_decimal, which the library's paygent_meter and the engine's paygent_billing both link.
//
// Lifetime and thread safety: Decimal is a 32-byte trivially copyable value with no shared state;
// any number of threads may use distinct or const shared Decimals. All functions are free of
// shared state and never allocate except to_string().
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace paygent::billing {

__extension__ using Int128 = __int128;

// How a value is brought to fewer decimal places.
enum class RoundingMode {
  kRound,  // to the nearest; a tie goes away from zero ("half away from zero": 2.5 -> 3, -2.5 -> -3)
  kCeil,   // towards +infinity (2.1 -> 3, -2.9 -> -2)
  kFloor,  // towards -infinity (2.9 -> 2, -2.1 -> -3)
};

// "round", "ceil", "floor" (as in the product's metric form); the name for errors and reports.
[[nodiscard]] std::string_view rounding_mode_name(RoundingMode mode) noexcept;
// Reads "round" / "ceil" / "floor"; InvalidArgument naming the text otherwise.
absl::StatusOr<RoundingMode> parse_rounding_mode(std::string_view name);

class Decimal {
 public:
  static constexpr int kMaxScale = 18;

  struct ParseOptions {
    // Accept "1e-3" / "2.5E+2" (the price catalog's notation). Off by default: a meta-tag or a
    // config value in exponent notation is refused, so "1e3" is not mistaken for a plain number.
    bool allow_exponent = false;
    // Digits past 18 decimal places (or past 38 significant digits, in the fraction) are dropped
    // (towards zero) instead of refused: for a value that is rounded anyway (a duration to the
    // nanosecond), or to tell "too precise" from "too large", never for money.
    bool truncate_past_max_scale = false;
  };

  // Zero, scale 0.
  constexpr Decimal() noexcept = default;

  // The integer `value` (scale 0).
  static constexpr Decimal from_int(std::int64_t value) noexcept { return Decimal(value, 0); }
  // `mantissa / 10^scale`; InvalidArgument when scale is outside 0..18.
  static absl::StatusOr<Decimal> from_scaled(Int128 mantissa, int scale);
  // An amount of nano-USD as USD (scale 9): 750'000'000 -> 0.750000000.
  static constexpr Decimal from_nanos(std::int64_t nanos) noexcept { return Decimal(nanos, 9); }

  // Parses an optional sign, decimal digits, and an optional '.' followed by digits: "48", "-2.5",
  // "+0.000000001". No spaces, no thousands separators, no "inf"/"nan", no leading or trailing
  // '.'. The scale is the number of digits after the point, as written ("7.50": 2), cut to what
  // 18 places and 38 digits hold when only zeros are cut: zeros cost nothing however many are
  // written ("0.1000...0" of any length, "1000...0e-39"). Fails with InvalidArgument saying what is wrong with the text ("is empty",
  // "has an exponent", "has a character 'x' at position 3", "has more than 18 decimal places") or
  // OutOfRange when its value needs more than 38 digits. The text is not kept.
  static absl::StatusOr<Decimal> parse(std::string_view text, ParseOptions options);
  static absl::StatusOr<Decimal> parse(std::string_view text) { return parse(text, ParseOptions{}); }

  [[nodiscard]] constexpr Int128 mantissa() const noexcept { return mantissa_; }
  [[nodiscard]] constexpr int scale() const noexcept { return scale_; }
  [[nodiscard]] constexpr bool is_zero() const noexcept { return mantissa_ == 0; }
  [[nodiscard]] constexpr bool is_negative() const noexcept { return mantissa_ < 0; }

  // The same value with trailing fractional zeros removed (60.20 -> 60.2, 5.000 -> 5).
  [[nodiscard]] Decimal normalized() const noexcept;

  // Exact arithmetic; OutOfRange ("decimal overflow in add: ...") when the exact result does not fit.
  // The result's scale is max(a, b) for add/sub, and a + b (trailing zeros dropped as needed to stay
  // within 18) for mul.
  static absl::StatusOr<Decimal> add(const Decimal& a, const Decimal& b);
  static absl::StatusOr<Decimal> sub(const Decimal& a, const Decimal& b);
  static absl::StatusOr<Decimal> mul(const Decimal& a, const Decimal& b);
  // a / b with exactly `scale` decimal places, rounded with `mode`. InvalidArgument on division by
  // zero or a scale outside 0..18; OutOfRange when the quotient does not fit.
  static absl::StatusOr<Decimal> div(const Decimal& a, const Decimal& b, int scale, RoundingMode mode);

  // This value with at most `precision` decimal places (0..18, clamped), rounded with `mode`. A
  // value that already has that few places is returned unchanged (its scale is kept). Never fails:
  // the magnitude can only shrink or grow by one unit of the last place, which always fits.
  [[nodiscard]] Decimal rounded(int precision, RoundingMode mode) const noexcept;

  // This value as an integer count of 10^-scale units (to_scaled(9, ...) is nano-units), rounded with
  // `mode`. OutOfRange when it does not fit in int64; InvalidArgument when scale is outside 0..18.
  [[nodiscard]] absl::StatusOr<std::int64_t> to_scaled(int scale, RoundingMode mode) const;
  // This value as an integer count of 10^-scale units when that is exact: InvalidArgument "has more
  // precision than 1e-<scale>" otherwise (what parse_usd / parse_usd_per_tokens need: nothing rounded).
  [[nodiscard]] absl::StatusOr<std::int64_t> to_scaled_exact(int scale) const;
  // This value as USD in nano-USD, rounded with `mode` (money is rounded only where it is rendered).
  [[nodiscard]] absl::StatusOr<std::int64_t> to_nanos(RoundingMode mode) const { return to_scaled(9, mode); }

  // Plain text with exactly scale() decimal places: "60.2", "-0.001", "5000", "0.750000000".
  [[nodiscard]] std::string to_string() const;

  // Numeric comparison: 60.2 == 60.20. Exact for every pair of values (no overflow).
  friend std::strong_ordering operator<=>(const Decimal& a, const Decimal& b) noexcept;
  friend bool operator==(const Decimal& a, const Decimal& b) noexcept {
    return (a <=> b) == std::strong_ordering::equal;
  }

 private:
  constexpr Decimal(Int128 mantissa, int scale) noexcept : mantissa_(mantissa), scale_(scale) {}
  static absl::StatusOr<Decimal> add_or_sub(const Decimal& a, const Decimal& b, bool subtract);

  Int128 mantissa_ = 0;
  int scale_ = 0;
};

}  // namespace paygent::billing
