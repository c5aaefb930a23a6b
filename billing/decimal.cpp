// Exact decimals (see billing/decimal.h).
#include "billing/decimal.h"

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paygent::billing {
namespace {

__extension__ using UInt128 = unsigned __int128;

constexpr int kMaxDigits = 38;  // every 38-digit number fits in a signed 128-bit integer

constexpr std::array<Int128, 39> make_pow10() {
  std::array<Int128, 39> p{};
  p[0] = 1;
  for (int i = 1; i < 39; ++i) p[i] = p[i - 1] * 10;
  return p;
}
constexpr std::array<Int128, 39> kPow10 = make_pow10();

UInt128 magnitude(Int128 v) noexcept { return v < 0 ? -static_cast<UInt128>(v) : static_cast<UInt128>(v); }

// The quotient n / d (d > 0 as magnitude, `negative` the sign of the exact quotient) rounded with
// `mode`, as a magnitude. Never overflows: the magnitude grows by at most one.
UInt128 divide_magnitude(UInt128 n, UInt128 d, bool negative, RoundingMode mode) noexcept {
  UInt128 q = n / d;
  const UInt128 r = n % d;
  if (r == 0) return q;
  bool away = false;  // away from zero
  switch (mode) {
    case RoundingMode::kRound: away = r >= d - r; break;  // r/d >= 1/2, without computing 2r
    case RoundingMode::kCeil: away = !negative; break;
    case RoundingMode::kFloor: away = negative; break;
  }
  return away ? q + 1 : q;
}

// A signed value from a magnitude, or false when it does not fit.
bool to_signed(UInt128 mag, bool negative, Int128& out) noexcept {
  constexpr UInt128 kMaxPositive = static_cast<UInt128>(std::numeric_limits<Int128>::max());
  if (negative) {
    if (mag > kMaxPositive + 1) return false;
    out = static_cast<Int128>(-mag);
  } else {
    if (mag > kMaxPositive) return false;
    out = static_cast<Int128>(mag);
  }
  return true;
}

std::string quoted(std::string_view text) {
  std::string out = "\"";
  if (text.size() > 48) {
    out.append(text.substr(0, 45));
    out += "...";
  } else {
    out.append(text);
  }
  out += '"';
  return out;
}

absl::Status overflow(std::string_view op, const Decimal& a, const Decimal& b, std::string_view why) {
  return absl::OutOfRangeError("decimal overflow in " + std::string(op) + " of " + a.to_string() + " and " +
                               b.to_string() + ": " + std::string(why));
}

// Scales `d` up to `scale` (>= d.scale()), or false on overflow.
bool rescale_up(const Decimal& d, int scale, Int128& out) noexcept {
  return !__builtin_mul_overflow(d.mantissa(), kPow10[scale - d.scale()], &out);
}

}  // namespace

std::string_view rounding_mode_name(RoundingMode mode) noexcept {
  switch (mode) {
    case RoundingMode::kRound: return "round";
    case RoundingMode::kCeil: return "ceil";
    case RoundingMode::kFloor: return "floor";
  }
  return "round";
}

absl::StatusOr<RoundingMode> parse_rounding_mode(std::string_view name) {
  if (name == "round") return RoundingMode::kRound;
  if (name == "ceil") return RoundingMode::kCeil;
  if (name == "floor") return RoundingMode::kFloor;
  return absl::InvalidArgumentError("rounding mode " + quoted(name) + " is not one of round, ceil, floor");
}

absl::StatusOr<Decimal> Decimal::from_scaled(Int128 mantissa, int scale) {
  if (scale < 0 || scale > kMaxScale) {
    return absl::InvalidArgumentError("decimal scale " + std::to_string(scale) + " is outside 0..18");
  }
  return Decimal(mantissa, scale);
}

absl::StatusOr<Decimal> Decimal::parse(std::string_view text, ParseOptions options) {
  auto invalid = [&](const std::string& why) { return absl::InvalidArgumentError(quoted(text) + " " + why); };
  auto bad_char = [&](std::size_t i) {
    return invalid("has a character '" + std::string(1, text[i]) + "' at position " + std::to_string(i) +
                   " (expected a decimal number such as -12.5)");
  };
  auto too_many = [&] {
    return absl::OutOfRangeError(quoted(text) + " has more than 38 significant digits (decimal overflow)");
  };
  if (text.empty()) return invalid("is empty (expected a decimal number)");
  std::size_t i = 0;
  const bool negative = text[0] == '-';
  if (text[0] == '-' || text[0] == '+') ++i;
  // The digits as written are mag * 10^zeros: `zeros` counts the zeros after the last non-zero
  // digit so far, applied only when a non-zero digit follows them. So a long run of zeros ("0.1000...0",
  // "1000...0e-39") costs nothing, and mag holds at most the 38 digits between the first and last
  // non-zero digit.
  UInt128 mag = 0;
  int significant = 0;  // digits in mag
  long long zeros = 0;
  long long fraction_digits = 0;  // written after the point
  auto take_digit = [&](char c) -> bool {
    if (c == '0') {
      if (mag != 0) ++zeros;  // leading zeros carry no digit
      return true;
    }
    for (; zeros > 0; --zeros) {
      if (++significant > kMaxDigits) return false;
      mag *= 10;
    }
    if (++significant > kMaxDigits) return false;
    mag = mag * 10 + static_cast<unsigned>(c - '0');
    return true;
  };
  const std::size_t int_start = i;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (!take_digit(text[i])) return too_many();
  }
  if (i == int_start) {
    if (i == text.size()) return invalid("has no digits");
    if (text[i] == '.') return invalid("has no digit before the decimal point");
    return bad_char(i);
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    const std::size_t frac_start = i;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      if (!take_digit(text[i])) {
        if (!options.truncate_past_max_scale) return too_many();
        // Past 38 significant digits, in the fraction: cut here (the rest is dropped below).
        for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        }
        break;
      }
      ++fraction_digits;
    }
    if (i == frac_start) return invalid("has no digit after the decimal point");
  }
  long long exponent = 0;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    if (!options.allow_exponent) return invalid("has an exponent (write the number as plain digits)");
    ++i;
    bool exp_negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) exp_negative = text[i++] == '-';
    const std::size_t exp_start = i;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      if (exponent < 100000) exponent = exponent * 10 + (text[i] - '0');
    }
    if (i == exp_start) return invalid("has no digits in its exponent");
    if (exp_negative) exponent = -exponent;
  }
  if (i != text.size()) return bad_char(i);
  // The scale the text is written with (trailing zeros included), as the result keeps it when it can.
  const long long written = fraction_digits - exponent;
  if (mag == 0) return Decimal(0, static_cast<int>(written < 0 ? 0 : written > kMaxScale ? kMaxScale : written));
  // value = mag * 10^(zeros - written): the scale it needs, and the most that fits 38 digits.
  const long long needed = written - zeros > 0 ? written - zeros : 0;
  if (needed > kMaxScale) {
    if (!options.truncate_past_max_scale) return invalid("has more than 18 decimal places");
    // mag * 10^-needed cut to 18 places: mag / 10^(needed - 18), towards zero.
    const long long drop = needed - kMaxScale;
    const UInt128 kept = drop > kMaxDigits ? 0 : mag / static_cast<UInt128>(kPow10[static_cast<std::size_t>(drop)]);
    return Decimal((negative ? -1 : 1) * static_cast<Int128>(kept), kMaxScale);
  }
  const long long fits = kMaxDigits - significant - (zeros - written);
  if (needed > fits) return too_many();
  long long scale = written;
  if (scale > kMaxScale) scale = kMaxScale;
  if (scale > fits) scale = fits;
  if (scale < needed) scale = needed;
  // mag * 10^(zeros - written + scale), the exponent between 0 and 38 - significant.
  return Decimal((negative ? -1 : 1) * static_cast<Int128>(mag) * kPow10[static_cast<std::size_t>(zeros - written + scale)],
                 static_cast<int>(scale));
}

Decimal Decimal::normalized() const noexcept {
  Int128 m = mantissa_;
  int s = scale_;
  while (s > 0 && m % 10 == 0) {
    m /= 10;
    --s;
  }
  return Decimal(m, s);
}

absl::StatusOr<Decimal> Decimal::add_or_sub(const Decimal& a, const Decimal& b, bool subtract) {
  const int scale = a.scale_ > b.scale_ ? a.scale_ : b.scale_;
  Int128 x = 0, y = 0, result = 0;
  if (!rescale_up(a, scale, x) || !rescale_up(b, scale, y) ||
      (subtract ? __builtin_sub_overflow(x, y, &result) : __builtin_add_overflow(x, y, &result))) {
    return overflow(subtract ? "sub" : "add", a, b,
                    subtract ? "the difference does not fit in 128 bits" : "the sum does not fit in 128 bits");
  }
  return Decimal(result, scale);
}

absl::StatusOr<Decimal> Decimal::add(const Decimal& a, const Decimal& b) { return add_or_sub(a, b, false); }
absl::StatusOr<Decimal> Decimal::sub(const Decimal& a, const Decimal& b) { return add_or_sub(a, b, true); }

absl::StatusOr<Decimal> Decimal::mul(const Decimal& a, const Decimal& b) {
  Decimal x = a, y = b;
  if (x.scale_ + y.scale_ > kMaxScale) {
    x = x.normalized();
    y = y.normalized();
  }
  Int128 product = 0;
  if (__builtin_mul_overflow(x.mantissa_, y.mantissa_, &product)) {
    return overflow("mul", a, b, "the product does not fit in 128 bits");
  }
  int scale = x.scale_ + y.scale_;
  while (scale > kMaxScale && product % 10 == 0) {
    product /= 10;
    --scale;
  }
  if (scale > kMaxScale) return overflow("mul", a, b, "the exact product has more than 18 decimal places");
  return Decimal(product, scale);
}

absl::StatusOr<Decimal> Decimal::div(const Decimal& a, const Decimal& b, int scale, RoundingMode mode) {
  if (b.mantissa_ == 0) return absl::InvalidArgumentError("division of " + a.to_string() + " by zero");
  if (scale < 0 || scale > kMaxScale) {
    return absl::InvalidArgumentError("division scale " + std::to_string(scale) + " is outside 0..18");
  }
  // a.m / 10^a.s / (b.m / 10^b.s) * 10^scale = a.m * 10^(scale - a.s + b.s) / b.m
  const int e = scale - a.scale_ + b.scale_;  // -18..36
  UInt128 num = magnitude(a.mantissa_);
  UInt128 den = magnitude(b.mantissa_);
  const auto p = static_cast<UInt128>(kPow10[e >= 0 ? e : -e]);
  if (e >= 0) {
    if (num != 0 && num > std::numeric_limits<UInt128>::max() / p) {
      return overflow("div", a, b, "the quotient does not fit in 128 bits");
    }
    num *= p;
  } else {
    if (den > std::numeric_limits<UInt128>::max() / p) {
      return overflow("div", a, b, "the divisor is too large for this scale");
    }
    den *= p;
  }
  const bool negative = (a.mantissa_ < 0) != (b.mantissa_ < 0) && a.mantissa_ != 0;
  Int128 q = 0;
  if (!to_signed(divide_magnitude(num, den, negative, mode), negative, q)) {
    return overflow("div", a, b, "the quotient does not fit in 128 bits");
  }
  return Decimal(q, scale);
}

Decimal Decimal::rounded(int precision, RoundingMode mode) const noexcept {
  if (precision < 0) precision = 0;
  if (precision > kMaxScale) precision = kMaxScale;
  if (scale_ <= precision) return *this;
  const bool negative = mantissa_ < 0;
  const UInt128 q =
      divide_magnitude(magnitude(mantissa_), static_cast<UInt128>(kPow10[scale_ - precision]), negative, mode);
  return Decimal(negative ? -static_cast<Int128>(q) : static_cast<Int128>(q), precision);
}

absl::StatusOr<std::int64_t> Decimal::to_scaled(int scale, RoundingMode mode) const {
  if (scale < 0 || scale > kMaxScale) {
    return absl::InvalidArgumentError("scale " + std::to_string(scale) + " is outside 0..18");
  }
  Int128 m = 0;
  if (scale >= scale_) {
    if (__builtin_mul_overflow(mantissa_, kPow10[scale - scale_], &m)) {
      return absl::OutOfRangeError(to_string() + " does not fit in a 64-bit count of 1e-" + std::to_string(scale));
    }
  } else {
    m = rounded(scale, mode).mantissa_;
  }
  if (m > std::numeric_limits<std::int64_t>::max() || m < std::numeric_limits<std::int64_t>::min()) {
    return absl::OutOfRangeError(to_string() + " does not fit in a 64-bit count of 1e-" + std::to_string(scale));
  }
  return static_cast<std::int64_t>(m);
}

absl::StatusOr<std::int64_t> Decimal::to_scaled_exact(int scale) const {
  if (scale >= 0 && scale < scale_ && rounded(scale, RoundingMode::kFloor) != *this) {
    return absl::InvalidArgumentError(to_string() + " has more precision than 1e-" + std::to_string(scale));
  }
  return to_scaled(scale, RoundingMode::kFloor);
}

std::string Decimal::to_string() const {
  UInt128 mag = magnitude(mantissa_);
  char buf[48];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + static_cast<int>(mag % 10));
    mag /= 10;
  } while (mag != 0);
  while (n <= scale_) buf[n++] = '0';  // at least one digit before the point
  std::string out;
  out.reserve(static_cast<std::size_t>(n) + 2);
  if (mantissa_ < 0) out.push_back('-');
  for (int i = n - 1; i >= 0; --i) {
    out.push_back(buf[i]);
    if (i == scale_ && i != 0) out.push_back('.');
  }
  return out;
}

std::strong_ordering operator<=>(const Decimal& a, const Decimal& b) noexcept {
  if (a.scale_ == b.scale_) return a.mantissa_ <=> b.mantissa_;
  // Bring the one with fewer places up; if that overflows, its magnitude exceeds the other's.
  const bool a_up = a.scale_ < b.scale_;
  const Decimal& low = a_up ? a : b;
  const Decimal& high = a_up ? b : a;
  Int128 scaled = 0;
  std::strong_ordering low_vs_high = std::strong_ordering::equal;
  if (rescale_up(low, high.scale_, scaled)) {
    low_vs_high = scaled <=> high.mantissa_;
  } else {
    low_vs_high = low.mantissa_ < 0 ? std::strong_ordering::less : std::strong_ordering::greater;
  }
  if (a_up) return low_vs_high;
  return 0 <=> low_vs_high;
}

}  // namespace paygent::billing
