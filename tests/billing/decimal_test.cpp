#include "billing/decimal.h"  // first: the header stands alone

#include <doctest/doctest.h>

#include <string>

namespace paygent::billing {
namespace {

Decimal d(const char* text) {
  auto v = Decimal::parse(text);
  REQUIRE_MESSAGE(v.ok(), v.status().ToString());
  return *v;
}

std::string parse_error(const char* text) {
  auto v = Decimal::parse(text);
  REQUIRE_FALSE(v.ok());
  return std::string(v.status().message());
}

TEST_CASE("billing.decimal.parses_exactly") {
  CHECK(d("48").mantissa() == 48);
  CHECK(d("48").scale() == 0);
  CHECK(d("2.5").mantissa() == 25);
  CHECK(d("2.5").scale() == 1);
  CHECK(d("-0.001").to_string() == "-0.001");
  CHECK(d("+7.50").to_string() == "7.50");
  CHECK(d("0.000000000000000001").mantissa() == 1);
  CHECK(d("0.000000000000000001").scale() == 18);
  CHECK(d("1.5000000000000000000000") == d("1.5"));  // zeros past 18 places are exact to drop
  CHECK(d("60.20") == d("60.2"));
  CHECK(d("60.20").normalized().to_string() == "60.2");
  CHECK(d("-0") == Decimal());
  CHECK(d("99999999999999999999999999999999999999").to_string() == "99999999999999999999999999999999999999");
  // Zeros cost nothing however many are written: only the digits from the first non-zero digit to
  // the last count against the 38 (a price catalog or a plan may write them).
  CHECK(d("0.10000000000000000000000000000000000000000000").to_string() == "0.100000000000000000");
  CHECK(d("0.10000000000000000000000000000000000000000000") == d("0.1"));
  CHECK(d("00000000000000000000000000000000000000000012.50").to_string() == "12.50");
  CHECK(d("10000000000000000000000000000000000000").to_string() == "10000000000000000000000000000000000000");
  auto e = Decimal::parse("1000000000000000000000000000000000000000e-39", {.allow_exponent = true});  // 40 digits
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  CHECK(*e == d("1"));
  auto tiny = Decimal::parse("1.50e-17", {.allow_exponent = true});
  REQUIRE_MESSAGE(tiny.ok(), tiny.status().ToString());
  CHECK(tiny->to_string() == "0.000000000000000015");  // the written scale (19) cut to 18: exact
}

TEST_CASE("billing.decimal.refuses_garbage_naming_what_is_wrong") {
  CHECK(parse_error("").find("is empty") != std::string::npos);
  CHECK(parse_error("1e3").find("has an exponent") != std::string::npos);
  CHECK(parse_error("2.5E-1").find("has an exponent") != std::string::npos);
  CHECK(parse_error("12a").find("character 'a' at position 2") != std::string::npos);
  CHECK(parse_error(" 1").find("character ' ' at position 0") != std::string::npos);
  CHECK(parse_error("1,000").find("character ',' at position 1") != std::string::npos);
  CHECK(parse_error(".5").find("no digit before the decimal point") != std::string::npos);
  CHECK(parse_error("5.").find("no digit after the decimal point") != std::string::npos);
  CHECK(parse_error("-").find("has no digits") != std::string::npos);
  CHECK(parse_error("nan").find("character 'n' at position 0") != std::string::npos);
  CHECK(parse_error("1.2.3").find("character '.' at position 3") != std::string::npos);
  CHECK(parse_error("0.0000000000000000001").find("more than 18 decimal places") != std::string::npos);
  auto big = Decimal::parse("123456789012345678901234567890123456789");  // 39 digits
  REQUIRE_FALSE(big.ok());
  CHECK(big.status().code() == absl::StatusCode::kOutOfRange);
  auto scaled = Decimal::parse("100000000000000000000000000000000000000");  // 10^38: 39 digits once its zeros count
  REQUIRE_FALSE(scaled.ok());
  CHECK(scaled.status().code() == absl::StatusCode::kOutOfRange);
  CHECK(parse_error("1.00000000000000000001").find("more than 18 decimal places") != std::string::npos);
}

TEST_CASE("billing.decimal.truncates_past_18_places_only_when_asked") {
  const Decimal::ParseOptions cut{.truncate_past_max_scale = true};
  CHECK(Decimal::parse("0.016666666666666666667", cut)->to_string() == "0.016666666666666666");
  CHECK(Decimal::parse("-0.0000000000000000019", cut)->to_string() == "-0.000000000000000001");
  CHECK(Decimal::parse("0.0000000000000000000000000000000000000000001", cut)->is_zero());
  CHECK(Decimal::parse("2.5", cut)->to_string() == "2.5");  // nothing to cut: as written
  // Past 38 significant digits in the fraction: cut there too, where the strict parse overflows.
  CHECK(Decimal::parse("0.33333333333333333333333333333333333333333333", cut)->to_string() ==
        "0.333333333333333333");
  CHECK(Decimal::parse("0.33333333333333333333333333333333333333333333").status().code() ==
        absl::StatusCode::kOutOfRange);
  CHECK(Decimal::parse("1234567890123456789012345678901234567890", cut).status().code() ==
        absl::StatusCode::kOutOfRange);  // an integer part that large is too large, cut or not
  CHECK(!Decimal::parse("0.016666666666666666667").ok());    // and refused without the option
}

TEST_CASE("billing.decimal.exponent_only_when_asked") {
  auto v = Decimal::parse("1e-3", {.allow_exponent = true});
  REQUIRE(v.ok());
  CHECK(*v == d("0.001"));
  auto w = Decimal::parse("2.5E+2", {.allow_exponent = true});
  REQUIRE(w.ok());
  CHECK(*w == d("250"));
  CHECK(w->scale() == 0);
}

TEST_CASE("billing.decimal.add_sub_mul_are_exact") {
  CHECK(Decimal::add(d("0.2"), d("12"))->to_string() == "12.2");
  CHECK(*Decimal::add(*Decimal::add(d("0.2"), d("12")), d("48")) == d("60.2"));
  CHECK(Decimal::sub(d("0.1"), d("0.3"))->to_string() == "-0.2");
  CHECK(Decimal::mul(d("5.0"), d("0.15"))->to_string() == "0.750");
  CHECK(Decimal::mul(d("1000"), d("4"))->to_string() == "4000");
  CHECK(*Decimal::mul(d("-1.5"), d("-2")) == d("3"));
  // Products past 18 places keep what is exact, refuse what is not.
  CHECK(*Decimal::mul(d("0.0000000010"), d("0.0000000010")) == d("0.000000000000000001"));
  auto fine = Decimal::mul(d("0.000000001"), d("0.0000000001"));
  REQUIRE_FALSE(fine.ok());
  CHECK(fine.status().code() == absl::StatusCode::kOutOfRange);
}

TEST_CASE("billing.decimal.overflow_is_reported_never_wrapped") {
  const Decimal big = d("99999999999999999999999999999999999999");
  auto sum = Decimal::add(big, big);
  REQUIRE_FALSE(sum.ok());
  CHECK(sum.status().code() == absl::StatusCode::kOutOfRange);
  CHECK(std::string(sum.status().message()).find("decimal overflow in add") != std::string::npos);
  auto product = Decimal::mul(big, d("2"));
  REQUIRE_FALSE(product.ok());
  CHECK(std::string(product.status().message()).find("decimal overflow in mul") != std::string::npos);
  auto diff = Decimal::sub(Decimal() , big);
  REQUIRE(diff.ok());
  CHECK_FALSE(Decimal::sub(*diff, big).ok());
  // Aligning scales can overflow too: 10^37 at 18 places does not fit.
  CHECK_FALSE(Decimal::add(d("10000000000000000000000000000000000000"), d("0.000000000000000001")).ok());
  // To nano-USD: beyond int64 is an error.
  CHECK_FALSE(d("10000000000").to_nanos(RoundingMode::kRound).ok());
  CHECK(*d("9223372036.854775807").to_nanos(RoundingMode::kRound) == INT64_MAX);
}

TEST_CASE("billing.decimal.rounding_modes") {
  // round = half away from zero.
  CHECK(d("2.5").rounded(0, RoundingMode::kRound) == d("3"));
  CHECK(d("-2.5").rounded(0, RoundingMode::kRound) == d("-3"));
  CHECK(d("2.49").rounded(0, RoundingMode::kRound) == d("2"));
  CHECK(d("1.005").rounded(2, RoundingMode::kRound) == d("1.01"));
  CHECK(d("2.1").rounded(0, RoundingMode::kCeil) == d("3"));
  CHECK(d("-2.9").rounded(0, RoundingMode::kCeil) == d("-2"));
  CHECK(d("2.9").rounded(0, RoundingMode::kFloor) == d("2"));
  CHECK(d("-2.1").rounded(0, RoundingMode::kFloor) == d("-3"));
  CHECK(d("60.2").rounded(0, RoundingMode::kCeil) == d("61"));
  CHECK(d("60.2").rounded(3, RoundingMode::kCeil).to_string() == "60.2");  // already precise enough
  CHECK(d("60.25").rounded(1, RoundingMode::kFloor).to_string() == "60.2");
  CHECK(*parse_rounding_mode("ceil") == RoundingMode::kCeil);
  CHECK_FALSE(parse_rounding_mode("half_even").ok());
}

TEST_CASE("billing.decimal.divide_with_scale_and_mode") {
  CHECK(Decimal::div(d("1"), d("3"), 4, RoundingMode::kRound)->to_string() == "0.3333");
  CHECK(Decimal::div(d("2"), d("3"), 4, RoundingMode::kRound)->to_string() == "0.6667");
  CHECK(Decimal::div(d("2"), d("3"), 4, RoundingMode::kFloor)->to_string() == "0.6666");
  CHECK(Decimal::div(d("-2"), d("3"), 4, RoundingMode::kFloor)->to_string() == "-0.6667");
  CHECK(Decimal::div(d("-2"), d("3"), 4, RoundingMode::kCeil)->to_string() == "-0.6666");
  CHECK(Decimal::div(d("1"), d("8"), 2, RoundingMode::kRound)->to_string() == "0.13");    // .125 -> .13
  CHECK(Decimal::div(d("-1"), d("8"), 2, RoundingMode::kRound)->to_string() == "-0.13");  // away from zero
  CHECK(Decimal::div(d("0.75"), d("5.0"), 2, RoundingMode::kRound)->to_string() == "0.15");
  CHECK(Decimal::div(d("7"), d("0.001"), 0, RoundingMode::kRound)->to_string() == "7000");
  auto by_zero = Decimal::div(d("1"), Decimal(), 2, RoundingMode::kRound);
  REQUIRE_FALSE(by_zero.ok());
  CHECK(by_zero.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_FALSE(Decimal::div(d("1"), d("1"), 19, RoundingMode::kRound).ok());
}

TEST_CASE("billing.decimal.nanos_and_comparison") {
  CHECK(*d("0.75").to_nanos(RoundingMode::kRound) == 750'000'000);
  CHECK(*d("0.0000000005").to_nanos(RoundingMode::kRound) == 1);
  CHECK(*d("0.0000000005").to_nanos(RoundingMode::kFloor) == 0);
  CHECK(*d("-0.0000000005").to_nanos(RoundingMode::kRound) == -1);
  CHECK(Decimal::from_nanos(200'000'000) == d("0.2"));
  CHECK(Decimal::from_nanos(200'000'000).to_string() == "0.200000000");
  CHECK(*d("2.5").to_scaled(3, RoundingMode::kRound) == 2500);
  CHECK(*d("0.000000001000").to_scaled_exact(9) == 1);
  CHECK(*d("-49.00").to_scaled_exact(9) == -49'000'000'000);
  auto too_fine = d("0.0000000001").to_scaled_exact(9);
  REQUIRE_FALSE(too_fine.ok());
  CHECK(std::string(too_fine.status().message()) == "0.0000000001 has more precision than 1e-9");
  CHECK(d("120") > d("88"));
  CHECK(d("-1") < d("0.5"));
  CHECK(d("0.1") < d("0.10000000000000001"));
  // Comparison never overflows: 10^37 against a value at 18 places.
  CHECK(d("10000000000000000000000000000000000000") > d("0.000000000000000001"));
  CHECK(d("-10000000000000000000000000000000000000") < d("-0.000000000000000001"));
  CHECK(d("0.000000000000000001") < d("10000000000000000000000000000000000000"));
}

}  // namespace
}  // namespace paygent::billing
