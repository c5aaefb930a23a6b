#include "billing/expression.h"  // first: the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace paygent::billing {
namespace {

std::string error_of(const char* text) {
  auto e = Expression::parse(text);
  REQUIRE_FALSE(e.ok());
  CHECK(e.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(e.status().message());
}

FieldValue eval(const char* text, std::vector<MetaTag> tags) {
  auto e = Expression::parse(text);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  return e->evaluate(tags);
}

TEST_CASE("billing.expression.effective_tokens_of_seed_003") {
  auto e = Expression::parse("event.properties.tokens * event.properties.replicas");
  REQUIRE(e.ok());
  CHECK(e->properties() == std::vector<std::string>{"tokens", "replicas"});
  std::vector<MetaTag> run1{{"tokens", "1000"}, {"replicas", "4"}};
  FieldValue v = e->evaluate(run1);
  REQUIRE(v.ok);
  CHECK(v.value.to_string() == "4000");
}

TEST_CASE("billing.expression.precedence_parentheses_literals_unary") {
  std::vector<MetaTag> t{{"a", "2"}, {"b", "3"}, {"c", "0.5"}};
  CHECK(eval("event.properties.a + event.properties.b * 4", t).value.to_string() == "14");
  CHECK(eval("(event.properties.a + event.properties.b) * 4", t).value.to_string() == "20");
  CHECK(eval("event.properties.a - event.properties.b - 1", t).value.to_string() == "-2");  // left-assoc
  CHECK(eval("-event.properties.a * -(1.5)", t).value.to_string() == "3");  // results are normalized
  CHECK(eval("event.properties.b / event.properties.c", t).value.to_string() == "6");
  CHECK(eval("1 / 3", t).value.to_string() == "0.333333333333333333");
  CHECK(eval(" ( 2.5 )\t* event.properties.c ", t).value.to_string() == "1.25");
}

TEST_CASE("billing.expression.missing_or_non_numeric_property_gives_no_value") {
  FieldValue missing = eval("event.properties.tokens * event.properties.replicas", {{"tokens", "10"}});
  CHECK_FALSE(missing.ok);
  CHECK(missing.reason == ExclusionReason::kMissingField);
  FieldValue nan = eval("event.properties.tokens * 2", {{"tokens", "ten"}});
  CHECK_FALSE(nan.ok);
  CHECK(nan.reason == ExclusionReason::kNotANumber);
  FieldValue by_zero = eval("event.properties.a / event.properties.b", {{"a", "1"}, {"b", "0.00"}});
  CHECK_FALSE(by_zero.ok);
  CHECK(by_zero.reason == ExclusionReason::kDivisionByZero);
  // Keys are case-sensitive.
  CHECK(eval("event.properties.Tokens", {{"tokens", "1"}}).reason == ExclusionReason::kMissingField);
}

TEST_CASE("billing.expression.errors_name_their_position") {
  CHECK(error_of("").find("position 0: the expression is empty") != std::string::npos);
  CHECK(error_of("event.properties.tokens *").find("position 25: the expression ends early") != std::string::npos);
  CHECK(error_of("event.properties.tokens * * 2").find("position 26: unexpected '*'") != std::string::npos);
  CHECK(error_of("(1 + 2").find("position 6: expected ')'") != std::string::npos);
  CHECK(error_of("1 + 2)").find("position 5: unexpected ')'") != std::string::npos);
  CHECK(error_of("event.properties.").find("position 17: expected a property key") != std::string::npos);
  CHECK(error_of("2 * tokens").find("position 4: expected a number or event.properties.<key>") !=
        std::string::npos);
  CHECK(error_of("event.tokens").find("position 0:") != std::string::npos);
  CHECK(error_of("1e3 * 2").find("position 1: a number must be plain digits") != std::string::npos);
  CHECK(error_of("1. * 2").find("position 2: expected a digit after the decimal point") != std::string::npos);
  CHECK(error_of("3 % 2").find("position 2: unexpected '%'") != std::string::npos);
  CHECK(error_of("event.properties.a $").find("position 19: unexpected '$'") != std::string::npos);
  std::string deep(70, '(');
  deep += "1";
  deep.append(70, ')');
  CHECK(error_of(deep.c_str()).find("nested too deeply") != std::string::npos);
}

TEST_CASE("billing.expression.deep_stack_still_evaluates") {
  // 20 pending operands: more than the inline stack of 16.
  std::string text;
  for (int i = 0; i < 20; ++i) text += "(1 + ";
  text += "1";
  for (int i = 0; i < 20; ++i) text += ")";
  FieldValue v = eval(text.c_str(), {});
  REQUIRE(v.ok);
  CHECK(v.value.to_string() == "21");
}

}  // namespace
}  // namespace paygent::billing
