// Tests of parse_plan_config / to_json (guard/plan_config.cpp).
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "paygent/plan.h"

namespace paygent {
namespace {

// The example of DESIGN.md ("Semantics to match"), verbatim.
constexpr std::string_view kDesignExample =
    R"({"soft_gate_at":0.80,"hard_gate_at":1.00,"plans":[{"name":"pro","max_spend_per_period":49.00,
  "max_spend_per_session":5.00,"model_limits":{"gpt-4o":{"max_tokens_per_period":50000}},
  "cost_rates":{"gpt-4o":{"input":0.0025,"output":0.01}},"session_timeout_minutes":30.0}]})";

// The message of parse_plan_config's error, "OK" on success, or a note if the code is wrong.
std::string error_of(std::string_view json) {
  const absl::StatusOr<PlanConfig> config = parse_plan_config(json);
  if (config.ok()) return "OK";
  const std::string message(config.status().message().data(), config.status().message().size());
  if (config.status().code() != absl::StatusCode::kInvalidArgument) return "not InvalidArgument: " + message;
  return message;
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

// A config with one plan "p" that has `fields` (JSON members, comma-separated) besides its name.
std::string with_plan(std::string_view fields) {
  std::string json = R"({"plans":[{"name":"p")";
  if (!fields.empty()) {
    json += ',';
    json += fields;
  }
  json += "}]}";
  return json;
}

// Parses a config that must be valid (fails the test case otherwise).
PlanConfig parse_ok(std::string_view json) {
  absl::StatusOr<PlanConfig> config = parse_plan_config(json);
  INFO("json: ", std::string(json));
  REQUIRE(error_of(json) == "OK");
  return *std::move(config);
}

// The single plan of a config made by with_plan(fields).
Plan plan_of(std::string_view fields) {
  PlanConfig config = parse_ok(with_plan(fields));
  REQUIRE(config.plans.size() == 1);
  return config.plans.front();
}

TEST_CASE("plan.config_design_example") {
  const PlanConfig config = parse_ok(kDesignExample);
  CHECK(config.soft_gate_at == std::vector<Ppm>{800'000});
  CHECK(config.hard_gate_at == 1'000'000);
  CHECK(config.default_plan.empty());
  REQUIRE(config.plans.size() == 1);
  const Plan& pro = config.plans[0];
  CHECK(pro.name == "pro");
  CHECK(pro.max_spend_per_period == Nanos{49'000'000'000});
  CHECK(pro.max_spend_per_session == Nanos{5'000'000'000});
  REQUIRE(pro.model_limits.size() == 1);
  CHECK(pro.model_limits.at("gpt-4o").max_tokens_per_period == std::int64_t{50'000});
  REQUIRE(pro.cost_rates.size() == 1);
  CHECK(pro.cost_rates.at("gpt-4o").input == 2'500'000);
  CHECK(pro.cost_rates.at("gpt-4o").output == 10'000'000);
  CHECK(pro.session_timeout == absl::Minutes(30));
  CHECK(pro.period == PeriodRule::kMonth);
  CHECK(pro.soft_gate_at.empty());
  CHECK(config.find("pro") == &config.plans[0]);
  CHECK(config.find("free") == nullptr);
}

TEST_CASE("plan.config_defaults") {
  const PlanConfig config = parse_ok(R"({"plans":[{"name":"free"}]})");
  CHECK(config.soft_gate_at == std::vector<Ppm>{800'000});
  CHECK(config.hard_gate_at == kPpmOne);
  const Plan& free = config.plans.at(0);
  CHECK(free.max_spend_per_period == std::nullopt);
  CHECK(free.max_spend_per_session == std::nullopt);
  CHECK(free.model_limits.empty());
  CHECK(free.cost_rates.empty());
  CHECK(free.session_timeout == absl::Minutes(30));
  CHECK(free.period == PeriodRule::kMonth);
  CHECK(free.soft_gate_at.empty());
}

TEST_CASE("plan.config_null_and_missing_are_unlimited_zero_is_not") {
  CHECK(plan_of(R"("max_spend_per_period":null)").max_spend_per_period == std::nullopt);
  CHECK(plan_of("").max_spend_per_period == std::nullopt);
  CHECK(plan_of(R"("max_spend_per_period":0)").max_spend_per_period == Nanos{0});
  CHECK(plan_of(R"("max_spend_per_period":-0.0)").max_spend_per_period == Nanos{0});
  CHECK(plan_of(R"("max_spend_per_session":null)").max_spend_per_session == std::nullopt);
  CHECK(plan_of(R"("max_spend_per_session":0.5)").max_spend_per_session == Nanos{500'000'000});

  const Plan limits = plan_of(R"("model_limits":{"a":{"max_tokens_per_period":null},"b":{},"c":{"max_tokens_per_period":0}})");
  CHECK(limits.model_limits.at("a").max_tokens_per_period == std::nullopt);
  CHECK(limits.model_limits.at("b").max_tokens_per_period == std::nullopt);
  CHECK(limits.model_limits.at("c").max_tokens_per_period == std::int64_t{0});

  CHECK(parse_ok(R"({"default_plan":null,"plans":[{"name":"p"}]})").default_plan.empty());
}

// A plan's price (what the customer pays per period) is exact money like a limit, optional,
// written back only when set, and gates nothing (its own field of Plan).
TEST_CASE("plan.config_price") {
  CHECK(plan_of("").price == std::nullopt);
  CHECK(plan_of(R"("price":null)").price == std::nullopt);
  CHECK(plan_of(R"("price":49.99)").price == Nanos{49'990'000'000});
  CHECK(plan_of(R"("price":49.99)").max_spend_per_period == std::nullopt);
  CHECK(starts_with(error_of(with_plan(R"("price":-1)")), "plans[0].price: "));
  CHECK(starts_with(error_of(with_plan(R"("price":"49")")), "plans[0].price: "));
  const absl::StatusOr<PlanConfig> priced = parse_plan_config(with_plan(R"("price":49.99,"max_spend_per_period":30)"));
  REQUIRE(priced.ok());
  CHECK(to_json(*priced).find("\"price\": 49.99") != std::string::npos);
  CHECK(parse_plan_config(to_json(*priced)).value() == *priced);
  CHECK(to_json(parse_ok(with_plan(""))).find("price") == std::string::npos);
}

TEST_CASE("plan.config_money_is_exact") {
  // Values a double cannot hold exactly.
  CHECK(plan_of(R"("max_spend_per_period":0.3)").max_spend_per_period == Nanos{300'000'000});
  CHECK(plan_of(R"("max_spend_per_period":0.1)").max_spend_per_period == Nanos{100'000'000});
  CHECK(plan_of(R"("max_spend_per_period":4.35)").max_spend_per_period == Nanos{4'350'000'000});
  CHECK(plan_of(R"("max_spend_per_period":19.99)").max_spend_per_period == Nanos{19'990'000'000});
  CHECK(plan_of(R"("max_spend_per_period":1e-3)").max_spend_per_period == Nanos{1'000'000});
  CHECK(plan_of(R"("max_spend_per_period":1E-3)").max_spend_per_period == Nanos{1'000'000});
  CHECK(plan_of(R"("max_spend_per_period":2.5e+2)").max_spend_per_period == Nanos{250'000'000'000});
  CHECK(plan_of(R"("max_spend_per_period":0.000000001)").max_spend_per_period == Nanos{1});
  CHECK(plan_of(R"("max_spend_per_period":1000000)").max_spend_per_period == Nanos{1'000'000'000'000'000});
  // The largest amount: INT64_MAX nano-USD.
  CHECK(plan_of(R"("max_spend_per_period":9223372036.854775807)").max_spend_per_period ==
        std::numeric_limits<Nanos>::max());

  const Plan rates = plan_of(
      R"("cost_rates":{"a":{"input":0.1,"output":0.3},"b":{"input":0.00015,"output":6e-4},)"
      R"("c":{"input":0,"output":0.000000001}})");
  CHECK(rates.cost_rates.at("a") == CostRate{100'000'000, 300'000'000});
  CHECK(rates.cost_rates.at("b") == CostRate{150'000, 600'000});  // $0.15 / $0.60 per 1M tokens
  CHECK(rates.cost_rates.at("c") == CostRate{0, 1});
}

TEST_CASE("plan.config_money_too_precise_or_too_large") {
  const std::string path = "plans[0].max_spend_per_period: ";
  std::string error = error_of(with_plan(R"("max_spend_per_period":0.0000000001)"));
  CHECK(starts_with(error, path));
  CHECK(error.find("more precision than 1 nano-USD") != std::string::npos);
  // The double nearest to 0.1 + 0.2, as some JSON writers print it.
  error = error_of(with_plan(R"("max_spend_per_period":0.30000000000000004)"));
  CHECK(starts_with(error, path));
  CHECK(error.find("more precision") != std::string::npos);

  for (const std::string_view big : {"1e400", "123456789012345678901234567890", "9223372036.854775808",
                                     "9223372037", "1e999999999999999999"}) {
    error = error_of(with_plan(std::string(R"("max_spend_per_period":)") + std::string(big)));
    INFO(big);
    CHECK(starts_with(error, path));
    CHECK(error.find("too large") != std::string::npos);
  }

  error = error_of(with_plan(R"("cost_rates":{"m":{"input":0.0000000001,"output":1}})"));
  CHECK(starts_with(error, "plans[0].cost_rates.m.input: "));
  CHECK(error.find("more precision than 1 pico-USD per token") != std::string::npos);
  error = error_of(with_plan(R"("cost_rates":{"m":{"input":1,"output":1e20}})"));
  CHECK(starts_with(error, "plans[0].cost_rates.m.output: "));
  CHECK(error.find("too large") != std::string::npos);
}

TEST_CASE("plan.config_wrong_money_types") {
  for (const std::string_view bad : {R"("49")", "-1", "-0.000000001", "true", "[]", "{}"}) {
    INFO(bad);
    CHECK(error_of(with_plan(std::string(R"("max_spend_per_period":)") + std::string(bad))) ==
          "plans[0].max_spend_per_period: must be a non-negative number or null");
    CHECK(error_of(with_plan(std::string(R"("max_spend_per_session":)") + std::string(bad))) ==
          "plans[0].max_spend_per_session: must be a non-negative number or null");
  }
  // The path counts plans from 0.
  CHECK(error_of(R"({"plans":[{"name":"a"},{"name":"b","max_spend_per_period":-5}]})") ==
        "plans[1].max_spend_per_period: must be a non-negative number or null");
}

TEST_CASE("plan.config_model_limits") {
  const Plan plan = plan_of(
      R"("model_limits":{"gpt-4o":{"max_tokens_per_period":50000},"gpt-4o-mini":{"max_tokens_per_period":5e4},)"
      R"("claude-sonnet-4-5-20250929":{"max_tokens_per_period":1000.0},"openai/o3":{"max_tokens_per_period":9223372036854775807}})");
  CHECK(plan.model_limits.at("gpt-4o").max_tokens_per_period == std::int64_t{50'000});
  CHECK(plan.model_limits.at("gpt-4o-mini").max_tokens_per_period == std::int64_t{50'000});
  // Keys are canonical model names.
  CHECK(plan.model_limits.at("claude-sonnet-4-5").max_tokens_per_period == std::int64_t{1'000});
  CHECK(plan.model_limits.at("o3").max_tokens_per_period == std::numeric_limits<std::int64_t>::max());
  CHECK(plan.model_limits.size() == 4);

  const std::string kTwoPlans = R"({"plans":[{"name":"a"},{"name":"b","model_limits":{"gpt-4o":{"max_tokens_per_period":)";
  for (const std::string_view bad : {"1.5", "-1", R"("50000")", "true", "[1]", "{}", "1e-1"}) {
    INFO(bad);
    CHECK(error_of(kTwoPlans + std::string(bad) + "}}}]}") ==
          "plans[1].model_limits.gpt-4o.max_tokens_per_period: must be a non-negative integer");
  }
  for (const std::string_view big : {"9223372036854775808", "1e19", "1e400"}) {
    INFO(big);
    CHECK(error_of(kTwoPlans + std::string(big) + "}}}]}") ==
          "plans[1].model_limits.gpt-4o.max_tokens_per_period: must be a non-negative integer (at most "
          "9223372036854775807)");
  }

  CHECK(error_of(with_plan(R"("model_limits":[])")) ==
        "plans[0].model_limits: must be an object of model name to limits");
  CHECK(error_of(with_plan(R"("model_limits":{"gpt-4o":50000})")) == "plans[0].model_limits.gpt-4o: must be an object");
  CHECK(error_of(with_plan(R"("model_limits":{"gpt-4o":{"max_tokens":5}})")) ==
        "plans[0].model_limits.gpt-4o.max_tokens: unknown field");
  CHECK(error_of(with_plan(R"("model_limits":{"":{}})")) == "plans[0].model_limits.: must be a model name");
  CHECK(error_of(with_plan(R"("model_limits":{"gpt-4o":{},"gpt-4o-2024-08-06":{}})")) ==
        R"(plans[0].model_limits.gpt-4o-2024-08-06: same model as "gpt-4o" (both are "gpt-4o"))");
  CHECK(error_of(with_plan(R"("model_limits":{"openai/gpt-4o":{},"gpt-4o":{}})")) ==
        R"(plans[0].model_limits.gpt-4o: same model as "openai/gpt-4o" (both are "gpt-4o"))");
  CHECK(error_of(with_plan(R"("model_limits":{"gpt-4o":{},"gpt-4o":{}})")) ==
        "plans[0].model_limits.gpt-4o: duplicate field");
}

TEST_CASE("plan.config_cost_rates") {
  const Plan plan = plan_of(R"("cost_rates":{"gpt-4o-2024-08-06":{"output":0.01,"input":0.0025}})");
  CHECK(plan.cost_rates.at("gpt-4o") == CostRate{2'500'000, 10'000'000});

  CHECK(error_of(with_plan(R"("cost_rates":{"gpt-4o":{"input":0.0025}})")) ==
        "plans[0].cost_rates.gpt-4o.output: required");
  CHECK(error_of(with_plan(R"("cost_rates":{"gpt-4o":{"output":0.0025}})")) ==
        "plans[0].cost_rates.gpt-4o.input: required");
  for (const std::string_view bad : {"-0.1", "null", R"("0.1")", "false"}) {
    INFO(bad);
    CHECK(error_of(with_plan(std::string(R"("cost_rates":{"gpt-4o":{"input":)") + std::string(bad) +
                             R"(,"output":1}})")) ==
          "plans[0].cost_rates.gpt-4o.input: must be a non-negative number (USD per 1K tokens)");
  }
  CHECK(error_of(with_plan(R"("cost_rates":{"gpt-4o":{"input":1,"output":1,"reasoning":1}})")) ==
        "plans[0].cost_rates.gpt-4o.reasoning: unknown field");  // output prices reasoning (tests/plan/cost_rates_test.cpp)
  CHECK(error_of(with_plan(R"("cost_rates":{"gpt-4o":[1,2]})")) ==
        "plans[0].cost_rates.gpt-4o: must be an object with input and output");
  CHECK(error_of(with_plan(R"("cost_rates":null)")) == "plans[0].cost_rates: must be an object of model name to rates");
  CHECK(error_of(with_plan(R"("cost_rates":{"o1":{"input":1,"output":1},"o1-2024-12-17":{"input":1,"output":1}})")) ==
        R"(plans[0].cost_rates.o1-2024-12-17: same model as "o1" (both are "o1"))");
}

TEST_CASE("plan.config_session_timeout") {
  CHECK(plan_of(R"("session_timeout_minutes":30)").session_timeout == absl::Minutes(30));
  CHECK(plan_of(R"("session_timeout_minutes":0.5)").session_timeout == absl::Seconds(30));
  CHECK(plan_of(R"("session_timeout_minutes":1e-3)").session_timeout == absl::Milliseconds(60));
  CHECK(plan_of(R"("session_timeout_minutes":1440)").session_timeout == absl::Hours(24));
  // Rounded to the nanosecond: 1/60 minute is one second.
  CHECK(plan_of(R"("session_timeout_minutes":0.016666666666666666667)").session_timeout == absl::Seconds(1));
  // Any number of digits: a minute written to 45 places is still read (and rounded), not "too large".
  CHECK(plan_of(R"("session_timeout_minutes":0.016666666666666666666666666666666666666666667)").session_timeout ==
        absl::Seconds(1));

  for (const std::string_view bad : {"0", "-1", "-0", R"("30")", "null", "0.000000000001"}) {
    INFO(bad);
    CHECK(error_of(with_plan(std::string(R"("session_timeout_minutes":)") + std::string(bad))) ==
          "plans[0].session_timeout_minutes: must be a positive number");
  }
  CHECK(error_of(with_plan(R"("session_timeout_minutes":1e20)")) == "plans[0].session_timeout_minutes: is too large");
}

TEST_CASE("plan.config_period") {
  CHECK(plan_of(R"("period":"month")").period == PeriodRule::kMonth);
  CHECK(plan_of(R"("period":"week")").period == PeriodRule::kWeek);
  CHECK(plan_of(R"("period":"day")").period == PeriodRule::kDay);
  for (const std::string_view bad : {R"("year")", R"("Month")", R"("")", "1", "null"}) {
    INFO(bad);
    CHECK(error_of(with_plan(std::string(R"("period":)") + std::string(bad))) ==
          R"(plans[0].period: must be "month", "week" or "day")");
  }
}

TEST_CASE("plan.config_thresholds") {
  PlanConfig config = parse_ok(R"({"soft_gate_at":[0.95,0.5,0.8,0.5],"plans":[{"name":"p"}]})");
  CHECK(config.soft_gate_at == std::vector<Ppm>{500'000, 800'000, 950'000});  // sorted, deduplicated

  config = parse_ok(R"({"soft_gate_at":[],"plans":[{"name":"p"}]})");
  CHECK(config.soft_gate_at.empty());

  config = parse_ok(R"({"soft_gate_at":1,"plans":[{"name":"p"}]})");
  CHECK(config.soft_gate_at == std::vector<Ppm>{1'000'000});  // == hard_gate_at is allowed

  // hard_gate_at above 1 allows an overshoot; soft gates may then be above 1 too.
  config = parse_ok(R"({"soft_gate_at":[0.9,1.05],"hard_gate_at":1.1,"plans":[{"name":"p"}]})");
  CHECK(config.hard_gate_at == 1'100'000);
  CHECK(config.soft_gate_at == std::vector<Ppm>{900'000, 1'050'000});

  // Fields are checked against each other whatever their order.
  CHECK(error_of(R"({"soft_gate_at":[0.5,0.9],"hard_gate_at":0.8,"plans":[{"name":"p"}]})") ==
        "soft_gate_at[1]: must be in (0, hard_gate_at]");
  CHECK(error_of(R"({"plans":[{"name":"p"}],"hard_gate_at":0.8,"soft_gate_at":[0.5,0.9]})") ==
        "soft_gate_at[1]: must be in (0, hard_gate_at]");
  CHECK(error_of(R"({"soft_gate_at":[0.5,1.2],"plans":[{"name":"p"}]})") ==
        "soft_gate_at[1]: must be in (0, hard_gate_at]");
  CHECK(error_of(R"({"soft_gate_at":0,"plans":[{"name":"p"}]})") == "soft_gate_at: must be in (0, hard_gate_at]");
  CHECK(error_of(R"({"soft_gate_at":-0.5,"plans":[{"name":"p"}]})") == "soft_gate_at: must be in (0, hard_gate_at]");
  CHECK(error_of(R"({"soft_gate_at":[0.5,0],"plans":[{"name":"p"}]})") ==
        "soft_gate_at[1]: must be in (0, hard_gate_at]");
  CHECK(error_of(R"({"soft_gate_at":"0.8","plans":[{"name":"p"}]})") ==
        "soft_gate_at: must be a number or an array of numbers");
  CHECK(error_of(R"({"soft_gate_at":[0.5,null],"plans":[{"name":"p"}]})") == "soft_gate_at[1]: must be a number");
  CHECK(error_of(R"({"soft_gate_at":0.8000001,"plans":[{"name":"p"}]})") ==
        "soft_gate_at: has more precision than 1 ppm (0.000001)");
  CHECK(error_of(R"({"soft_gate_at":1e30,"plans":[{"name":"p"}]})") == "soft_gate_at: is too large");
  // The default soft gate (0.8) must fit under a lower hard gate.
  CHECK(error_of(R"({"hard_gate_at":0.5,"plans":[{"name":"p"}]})") ==
        "soft_gate_at: the default 0.8 is above hard_gate_at; set soft_gate_at");
  CHECK(parse_ok(R"({"hard_gate_at":0.5,"soft_gate_at":0.4,"plans":[{"name":"p"}]})").soft_gate_at ==
        std::vector<Ppm>{400'000});

  CHECK(parse_ok(R"({"hard_gate_at":0.999999,"soft_gate_at":0.000001,"plans":[{"name":"p"}]})").hard_gate_at ==
        999'999);
  for (const std::string_view bad : {"0", "-1", R"("1")", "null", "[1]"}) {
    INFO(bad);
    CHECK(error_of(std::string(R"({"hard_gate_at":)") + std::string(bad) + R"(,"plans":[{"name":"p"}]})") ==
          "hard_gate_at: must be a positive number");
  }
  CHECK(error_of(R"({"hard_gate_at":1.0000001,"plans":[{"name":"p"}]})") ==
        "hard_gate_at: has more precision than 1 ppm (0.000001)");
}

TEST_CASE("plan.config_plan_thresholds") {
  const PlanConfig config = parse_ok(
      R"({"soft_gate_at":0.9,"plans":[{"name":"a","soft_gate_at":[0.8,0.5,0.8]},{"name":"b"},{"name":"c","soft_gate_at":0.75}]})");
  CHECK(config.soft_gate_at == std::vector<Ppm>{900'000});
  CHECK(config.plans[0].soft_gate_at == std::vector<Ppm>{500'000, 800'000});
  CHECK(config.plans[1].soft_gate_at.empty());  // the config's thresholds
  CHECK(config.plans[2].soft_gate_at == std::vector<Ppm>{750'000});

  CHECK(error_of(R"({"plans":[{"name":"a"},{"name":"b","soft_gate_at":[0.5,2]}]})") ==
        "plans[1].soft_gate_at[1]: must be in (0, hard_gate_at]");
  CHECK(error_of(R"({"hard_gate_at":0.7,"soft_gate_at":0.6,"plans":[{"name":"a","soft_gate_at":0.8}]})") ==
        "plans[0].soft_gate_at: must be in (0, hard_gate_at]");
  CHECK(error_of(with_plan(R"("soft_gate_at":[])")) ==
        "plans[0].soft_gate_at: must not be empty (omit it to use the config's soft_gate_at)");
  CHECK(error_of(with_plan(R"("soft_gate_at":{})")) == "plans[0].soft_gate_at: must be a number or an array of numbers");
}

TEST_CASE("plan.config_plans_and_names") {
  CHECK(error_of("{}") == "plans: required");
  CHECK(error_of(R"({"soft_gate_at":0.8})") == "plans: required");
  CHECK(error_of(R"({"plans":[]})") == "plans: must be a non-empty array of plans");
  CHECK(error_of(R"({"plans":{}})") == "plans: must be a non-empty array of plans");
  CHECK(error_of(R"({"plans":null})") == "plans: must be a non-empty array of plans");
  CHECK(error_of(R"({"plans":[{"name":"a"},1]})") == "plans[1]: must be an object");
  CHECK(error_of(R"({"plans":[{}]})") == "plans[0].name: required");
  CHECK(error_of(R"({"plans":[{"max_spend_per_period":1}]})") == "plans[0].name: required");
  CHECK(error_of(R"({"plans":[{"name":""}]})") == "plans[0].name: must be a non-empty string");
  CHECK(error_of(R"({"plans":[{"name":7}]})") == "plans[0].name: must be a non-empty string");
  CHECK(error_of(R"({"plans":[{"name":null}]})") == "plans[0].name: must be a non-empty string");
  CHECK(error_of(R"({"plans":[{"name":"pro"},{"name":"team"},{"name":"pro"}]})") ==
        R"(plans[2].name: duplicate plan name "pro")");
  // Names are compared after JSON unescaping.
  CHECK(error_of(R"({"plans":[{"name":"pro"},{"name":"\u0070ro"}]})") == R"(plans[1].name: duplicate plan name "pro")");
  CHECK(error_of(R"({"plans":[{"name":"a","name":"b"}]})") == "plans[0].name: duplicate field");

  const PlanConfig config =
      parse_ok(R"({"default_plan":"free","plans":[{"name":"pro"},{"name":"free","max_spend_per_period":1}]})");
  CHECK(config.default_plan == "free");
  REQUIRE(config.find("free") != nullptr);
  CHECK(config.find("free")->max_spend_per_period == Nanos{1'000'000'000});
  CHECK(config.find("pro") == &config.plans[0]);
  CHECK(error_of(R"({"default_plan":"team","plans":[{"name":"pro"}]})") == R"(default_plan: no plan is named "team")");
  CHECK(error_of(R"({"default_plan":"","plans":[{"name":"pro"}]})") == R"(default_plan: no plan is named "")");
  CHECK(error_of(R"({"default_plan":1,"plans":[{"name":"pro"}]})") == "default_plan: must be a plan name or null");
}

TEST_CASE("plan.config_unknown_and_duplicate_fields") {
  CHECK(error_of(R"({"colour":1,"plans":[{"name":"p"}]})") == "colour: unknown field");
  CHECK(error_of(R"({"plans":[{"name":"p"}],"soft_gate":0.8})") == "soft_gate: unknown field");
  CHECK(error_of(with_plan(R"("colour":"red")")) == "plans[0].colour: unknown field");
  CHECK(error_of(R"({"plans":[{"name":"a"},{"name":"b","max_spend":1}]})") == "plans[1].max_spend: unknown field");
  CHECK(error_of(R"({"plans":[{"name":"p"}],"plans":[{"name":"q"}]})") == "plans: duplicate field");
  CHECK(error_of(R"({"hard_gate_at":1,"hard_gate_at":1,"plans":[{"name":"p"}]})") == "hard_gate_at: duplicate field");
  CHECK(error_of(with_plan(R"("period":"day","period":"week")")) == "plans[0].period: duplicate field");
}

TEST_CASE("plan.config_not_json") {
  for (const std::string_view bad :
       {"", "   ", "{", R"({"plans":[{"name":"p"}]} x)", R"({"plans":[{"name":"p"}]}})",
        R"({"plans":[{"name":"p",}]})", R"({"plans":[{"name":"p" "period":"day"}]})",
        R"({"plans":[{"name":"p","max_spend_per_period":.5}]})", R"({"plans":[{"name":"p","max_spend_per_period":nul}]})",
        R"({"plans":[{"name":"p\x"}]})", "{\"plans\":[{\"name\":\"\xff\"}]}",
        // A syntax error wins over a field error earlier in the text.
        R"({"colour":1,"plans":[})"}) {
    INFO(bad);
    CHECK(starts_with(error_of(bad), "(root): not valid JSON: "));
  }
  // A malformed number (which simdjson reports only as a "number error") is blamed on its field.
  CHECK(error_of(with_plan(R"("max_spend_per_period":01)")) ==
        R"(plans[0].max_spend_per_period: not valid JSON: bad number "01")");
  CHECK(error_of(with_plan(R"("max_spend_per_period":1.)")) ==
        R"(plans[0].max_spend_per_period: not valid JSON: bad number "1.")");
  CHECK(error_of(R"({"soft_gate_at":[0.5,-],"plans":[{"name":"p"}]})") ==
        R"(soft_gate_at[1]: not valid JSON: bad number "-")");
  CHECK(error_of("[]") == "(root): must be an object");
  CHECK(error_of("42") == "(root): must be an object");
  CHECK(error_of("null") == "(root): must be an object");
  CHECK(error_of(R"("plans")") == "(root): must be an object");
}

TEST_CASE("plan.config_round_trip") {
  for (const std::string_view json : {
           kDesignExample,
           std::string_view(R"({"plans":[{"name":"free"}]})"),
           std::string_view(
               R"({"soft_gate_at":[0.5,0.8,0.95],"hard_gate_at":1.1,"default_plan":"free","plans":[)"
               R"({"name":"pro","max_spend_per_period":49.99,"max_spend_per_session":null,)"
               R"("model_limits":{"gpt-4o":{"max_tokens_per_period":50000},"o3":{"max_tokens_per_period":null},"gpt-4o-mini":{}},)"
               R"("cost_rates":{"gpt-4o":{"input":0.0025,"output":0.01},"gpt-4o-mini":{"input":0.00015,"output":0.0006},)"
               R"("tiny":{"input":0.000000001,"output":0}},"session_timeout_minutes":0.5,"period":"week","soft_gate_at":[0.7,1.1]},)"
               R"({"name":"free","max_spend_per_period":0,"max_spend_per_session":0.000000001,"period":"day",)"
               R"("session_timeout_minutes":1e-3},)"
               R"({"name":"we\"ird \\ na\u00efme\n\u0001","max_spend_per_period":9223372036.854775807,)"
               R"("session_timeout_minutes":0.016666666666666666667,"soft_gate_at":1e-6}]})"),
           std::string_view(R"({"soft_gate_at":[],"plans":[{"name":"p"}]})"),
       }) {
    INFO(std::string(json));
    const PlanConfig config = parse_ok(json);
    const std::string written = to_json(config);
    INFO(written);
    const PlanConfig again = parse_ok(written);
    CHECK(again == config);
    CHECK(to_json(again) == written);
  }
}

TEST_CASE("plan.config_to_json_writes_exact_decimals") {
  const std::string written = to_json(parse_ok(kDesignExample));
  CHECK(written.find(R"("max_spend_per_period": 49,)") != std::string::npos);
  CHECK(written.find(R"("max_spend_per_session": 5,)") != std::string::npos);
  CHECK(written.find(R"("gpt-4o": {"input": 0.0025, "output": 0.01})") != std::string::npos);
  CHECK(written.find(R"("gpt-4o": {"max_tokens_per_period": 50000})") != std::string::npos);
  CHECK(written.find(R"("soft_gate_at": 0.8,)") != std::string::npos);
  CHECK(written.find(R"("hard_gate_at": 1,)") != std::string::npos);
  CHECK(written.find(R"("session_timeout_minutes": 30,)") != std::string::npos);
  CHECK(written.find(R"("period": "month")") != std::string::npos);
}

TEST_CASE("plan.config_round_trip_of_built_config") {
  // A config built in code, with durations that are not whole decimal minutes.
  PlanConfig config;
  config.soft_gate_at = {1, 500'000, 1'000'000};
  config.hard_gate_at = 1'000'000;
  config.default_plan = "b";
  Plan a;
  a.name = "a";
  a.max_spend_per_period = std::numeric_limits<Nanos>::max();
  a.max_spend_per_session = 1;
  a.model_limits["m"] = ModelLimit{std::numeric_limits<std::int64_t>::max()};
  a.cost_rates["m"] = CostRate{std::numeric_limits<PicosPerToken>::max(), 1};
  a.session_timeout = absl::Seconds(1);
  a.period = PeriodRule::kDay;
  Plan b;
  b.name = "b";
  b.session_timeout = absl::Nanoseconds(1);
  b.soft_gate_at = {999'999};
  Plan c;
  c.name = "c";
  c.session_timeout = absl::Hours(24 * 365) + absl::Nanoseconds(7);
  config.plans = {a, b, c};
  const std::string written = to_json(config);
  INFO(written);
  CHECK(parse_ok(written) == config);
}

TEST_CASE("plan.config_mutations_are_rejected_or_round_trip") {
  // Random edits of a full config: each result is either an InvalidArgument naming a path, or a
  // config that survives to_json and back unchanged.
  const std::string base = to_json(parse_ok(
      R"({"soft_gate_at":[0.5,0.8],"hard_gate_at":1.1,"default_plan":"pro","plans":[{"name":"pro",)"
      R"("max_spend_per_period":49.99,"max_spend_per_session":5,"model_limits":{"gpt-4o":{"max_tokens_per_period":50000}},)"
      R"("cost_rates":{"gpt-4o":{"input":0.0025,"output":0.01}},"session_timeout_minutes":0.5,"period":"week"}]})"));
  constexpr std::string_view kAlphabet = "{}[]\":,.-+eE0123456789 nulltruefalse\\u";
  std::mt19937 random(2024);
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string json = base;
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = random() % json.size();
      const char c = kAlphabet[random() % kAlphabet.size()];
      switch (random() % 3) {
        case 0:
          json[at] = c;
          break;
        case 1:
          json.insert(at, 1, c);
          break;
        default:
          json.erase(at, 1);
      }
    }
    INFO(json);
    const absl::StatusOr<PlanConfig> config = parse_plan_config(json);
    if (!config.ok()) {
      CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK(config.status().message().find(": ") != absl::string_view::npos);
      continue;
    }
    ++accepted;
    CHECK(parse_ok(to_json(*config)) == *config);
  }
  CHECK(accepted > 0);
}

}  // namespace
}  // namespace paygent
