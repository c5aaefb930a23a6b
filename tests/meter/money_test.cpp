// Exact decimal money: parse_usd, parse_usd_per_tokens, cost_of_tokens, format_usd (money.h).
#include "paygent/money.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "meter/internal/str_cat.h"

namespace paygent {
namespace {

std::string message_of(const absl::Status& s) { return std::string(s.message()); }

// The percentages in gate headers and messages: written as printf's "%.1f" writes them, without
// printf. Compared with it over a sweep (exact half-tenths aside: printf rounds those to even).
TEST_CASE("meter.one_decimal_writes_what_printf_does") {
  using internal::one_decimal;
  CHECK(one_decimal(0) == "0.0");
  CHECK(one_decimal(81.63) == "81.6");
  CHECK(one_decimal(99.96) == "100.0");
  CHECK(one_decimal(100) == "100.0");
  CHECK(one_decimal(12345.67) == "12345.7");
  CHECK(one_decimal(-2.26) == "-2.3");
  CHECK(one_decimal(1e20) == "100000000000000000000.0");  // past the fast range: printf's own
  char buf[64];
  int differ = 0;
  for (int i = 0; i < 200000; ++i) {
    const double v = i * 0.0137;
    const double tenths = v * 10.0;
    if (tenths - std::floor(tenths) == 0.5) continue;
    std::snprintf(buf, sizeof buf, "%.1f", v);
    if (one_decimal(v) != buf) ++differ;
  }
  CHECK(differ == 0);
}

TEST_CASE("meter.parse_usd_exact_values") {
  struct Case {
    const char* text;
    Nanos nanos;
  };
  const Case cases[] = {
      {"49.00", 49'000'000'000},
      {"49", 49'000'000'000},
      {"5.00", 5'000'000'000},
      {"0.000000001", 1},
      {"0.0000000010", 1},
      {"0", 0},
      {"0.0", 0},
      {"000", 0},
      {"00012.50", 12'500'000'000},
      {"+5", 5'000'000'000},
      {"1e-3", 1'000'000},
      {"1E-3", 1'000'000},
      {"1.5e2", 150'000'000'000},
      {"2.5e+1", 25'000'000'000},
      {"1e-9", 1},
      {"0e99999", 0},
      {"9223372036.854775807", INT64_MAX},
      {"0.10000000000000000000000000000000000000000000", 100'000'000},  // long, but exact
      {"1000000000000000000000000000000000000000e-39", 1'000'000'000},  // 40 digits
  };
  for (const Case& c : cases) {
    INFO("text: ", c.text);
    auto got = parse_usd(c.text);
    REQUIRE_MESSAGE(got.ok(), message_of(got.status()));
    CHECK(*got == c.nanos);
  }
}

TEST_CASE("meter.parse_usd_rejects_without_rounding") {
  struct Case {
    const char* text;
    const char* why;
  };
  const Case cases[] = {
      {"0.0000000001", "has more precision than 1 nano-USD"},
      {"1.0000000005", "has more precision than 1 nano-USD"},
      {"1e-10", "has more precision than 1 nano-USD"},
      {"1e-30", "has more precision than 1 nano-USD"},
      {"-1", "must not be negative"},
      {"-0.01", "must not be negative"},
      // The one decimal module's reasons (billing/decimal.h): what is wrong, and where.
      {"", "is empty (expected a decimal number)"},
      {".", "has no digit before the decimal point"},
      {".5", "has no digit before the decimal point"},
      {"5.", "has no digit after the decimal point"},
      {"abc", "has a character 'a' at position 0 (expected a decimal number such as -12.5)"},
      {"1.2.3", "has a character '.' at position 3 (expected a decimal number such as -12.5)"},
      {"1e", "has no digits in its exponent"},
      {"1e+", "has no digits in its exponent"},
      {" 1", "has a character ' ' at position 0 (expected a decimal number such as -12.5)"},
      {"1 ", "has a character ' ' at position 1 (expected a decimal number such as -12.5)"},
      {"1,000", "has a character ',' at position 1 (expected a decimal number such as -12.5)"},
      {"$5", "has a character '$' at position 0 (expected a decimal number such as -12.5)"},
      {"0x10", "has a character 'x' at position 1 (expected a decimal number such as -12.5)"},
      {"NaN", "has a character 'N' at position 0 (expected a decimal number such as -12.5)"},
      {"inf", "has a character 'i' at position 0 (expected a decimal number such as -12.5)"},
      {"++1", "has a character '+' at position 1 (expected a decimal number such as -12.5)"},
      {"9223372036.854775808", "is too large"},
      {"9223372037", "is too large"},
      {"1e30", "is too large"},
      {"1e99999999999", "is too large"},
      {"1234567890123456789012345678901234567", "is too large"},
      {"123456789012345678901234567890123456789", "is too large"},  // 39 digits: no decimal holds it
      {"0.33333333333333333333333333333333333333333", "has more precision than 1 nano-USD"},  // 41 digits
  };
  for (const Case& c : cases) {
    INFO("text: ", c.text);
    auto got = parse_usd(c.text);
    REQUIRE(absl::IsInvalidArgument(got.status()));
    CHECK(message_of(got.status()) == std::string("\"") + c.text + "\": " + c.why);
  }
}

TEST_CASE("meter.parse_usd_per_tokens_exact_values") {
  // USD per 1M tokens -> pico-USD per token.
  CHECK(*parse_usd_per_tokens("2.50", 1'000'000) == 2'500'000);
  CHECK(*parse_usd_per_tokens("0.15", 1'000'000) == 150'000);
  CHECK(*parse_usd_per_tokens("0.075", 1'000'000) == 75'000);
  CHECK(*parse_usd_per_tokens("0.005", 1'000'000) == 5'000);
  CHECK(*parse_usd_per_tokens("0.000001", 1'000'000) == 1);  // the finest price a catalog can hold
  CHECK(*parse_usd_per_tokens("150", 1'000'000) == 150'000'000);
  // USD per 1K tokens (plan cost_rates): $0.0025 per 1K = 2,500,000 pico-USD per token.
  CHECK(*parse_usd_per_tokens("0.0025", 1'000) == 2'500'000);
  CHECK(*parse_usd_per_tokens("0.01", 1'000) == 10'000'000);
  CHECK(*parse_usd_per_tokens("1", 1) == 1'000'000'000'000);

  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("0.0000001", 1'000'000).status()));
  CHECK(message_of(parse_usd_per_tokens("0.0000001", 1'000'000).status()) ==
        "\"0.0000001\": has more precision than 1 pico-USD per token");
  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("1", 3).status()));  // 1/3 pico-USD is not exact
  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("1", 0).status()));
  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("1", -1'000).status()));
  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("-2.50", 1'000'000).status()));
  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("1e30", 1'000'000).status()));
  // Huge divisors and exponents stay exact and never overflow.
  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("8e26", INT64_MAX).status()));
  CHECK(absl::IsInvalidArgument(parse_usd_per_tokens("9.99e37", 2).status()));
  CHECK(*parse_usd_per_tokens("9223372036854775807", 1'000'000'000'000) == INT64_MAX);
}

TEST_CASE("meter.cost_of_tokens_rounds_half_up_once") {
  static_assert(cost_of_tokens(1000, 2'500'000) == 2'500'000);  // 1000 gpt-4o input tokens
  CHECK(cost_of_tokens(1, 499) == 0);
  CHECK(cost_of_tokens(1, 500) == 1);
  CHECK(cost_of_tokens(3, 150'000) == 450);
  CHECK(cost_of_tokens(0, 2'500'000) == 0);
  // Beyond 64 bits in the middle, exact at the end.
  CHECK(cost_of_tokens(INT64_MAX / 1000, 1000) == INT64_MAX / 1000);
}

TEST_CASE("meter.format_usd") {
  CHECK(format_usd(49'000'000'000) == "$49.00");
  CHECK(format_usd(0) == "$0.00");
  CHECK(format_usd(1'234'567'890'000) == "$1,234.57");
  CHECK(format_usd(1'000'000'000'000'000) == "$1,000,000.00");
  CHECK(format_usd(5'000'000) == "$0.01");  // half a cent rounds away from zero
  CHECK(format_usd(4'999'999) == "$0.00");
  CHECK(format_usd(-1'500'000'000) == "-$1.50");
  CHECK(format_usd(-5'000'000) == "-$0.01");
  CHECK(format_usd(-1) == "$0.00");  // no "-$0.00"
  CHECK(format_usd(7'500'000, 4) == "$0.0075");
  CHECK(format_usd(1, 9) == "$0.000000001");
  CHECK(format_usd(49'000'000'000, 0) == "$49");
  CHECK(format_usd(49'500'000'000, -3) == "$50");  // digits below 0 mean 0
  CHECK(format_usd(1, 12) == "$0.000000001");      // and above 9 mean 9
  CHECK(format_usd(INT64_MAX) == "$9,223,372,036.85");
  CHECK(format_usd(INT64_MIN) == "-$9,223,372,036.85");
  CHECK(format_usd(INT64_MIN, 9) == "-$9,223,372,036.854775808");
}

}  // namespace
}  // namespace paygent
