// Plan cost_rates for prompt-cache reads and writes (issue 8, item 1); metering with them is in
// tests/guard/pricing_test.cpp.
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "paygent/plan.h"

namespace paygent {
namespace {

std::string plan_with_rates(std::string_view rates) {
  return std::string(R"({"plans":[{"name":"p","cost_rates":{"gpt-4o":)") + std::string(rates) + "}}]}";
}

}  // namespace

TEST_CASE("plan.cost_rates.cache_reads_and_writes") {
  auto config = parse_plan_config(
      plan_with_rates(R"({"input":0.0025,"output":0.01,"cached_input":0.00125,"cache_write":0.003125})"));
  REQUIRE(config.ok());
  const CostRate& rate = config->plans[0].cost_rates.at("gpt-4o");
  CHECK(rate.input == 2'500'000);
  CHECK(rate.output == 10'000'000);
  CHECK(rate.cached_input == 1'250'000);
  CHECK(rate.cache_write == 3'125'000);
  CHECK(parse_plan_config(to_json(*config)).value() == *config);  // written back exactly

  // Unset: nullopt (filled from the catalog's ratio when the plan is installed), and not written.
  config = parse_plan_config(plan_with_rates(R"({"input":0.0025,"output":0.01})"));
  REQUIRE(config.ok());
  CHECK_FALSE(config->plans[0].cost_rates.at("gpt-4o").cached_input.has_value());
  CHECK_FALSE(config->plans[0].cost_rates.at("gpt-4o").cache_write.has_value());
  CHECK(to_json(*config).find("cached_input") == std::string::npos);
  CHECK(parse_plan_config(to_json(*config)).value() == *config);

  // Zero is a price (a free cache), not "unset".
  config = parse_plan_config(plan_with_rates(R"({"input":0.0025,"output":0.01,"cached_input":0})"));
  REQUIRE(config.ok());
  CHECK(config->plans[0].cost_rates.at("gpt-4o").cached_input == 0);
  CHECK(parse_plan_config(to_json(*config)).value() == *config);
}

TEST_CASE("plan.cost_rates.cache_rates_are_checked_like_input") {
  auto error = [](std::string_view rates) {
    auto config = parse_plan_config(plan_with_rates(rates));
    return config.ok() ? std::string("OK") : std::string(config.status().message());
  };
  CHECK(error(R"({"input":1,"output":1,"cached_input":-0.1})") ==
        "plans[0].cost_rates.gpt-4o.cached_input: must be a non-negative number (USD per 1K tokens)");
  CHECK(error(R"({"input":1,"output":1,"cache_write":"0.1"})") ==
        "plans[0].cost_rates.gpt-4o.cache_write: must be a non-negative number (USD per 1K tokens)");
  CHECK(error(R"({"input":1,"output":1,"cached_input":null})") ==
        "plans[0].cost_rates.gpt-4o.cached_input: must be a non-negative number (USD per 1K tokens)");
  CHECK(error(R"({"input":1,"output":1,"cache_read":1})") == "plans[0].cost_rates.gpt-4o.cache_read: unknown field");
  CHECK(error(R"({"cached_input":1,"output":1})") == "plans[0].cost_rates.gpt-4o.input: required");
}

}  // namespace paygent
