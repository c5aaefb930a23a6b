// Plan cost_rates price prompt-cache reads and writes (issue 8, item 1).
#include "paygent/paygent.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/guard/fixture.h"

namespace paygent {
namespace {

// A Paygent in memory on `plans_json`, recording each event's cost and each error.
struct Metered {
  explicit Metered(std::string_view plans_json) {
    Options o;
    auto parsed = parse_plan_config(plans_json);
    REQUIRE(parsed.ok());
    o.plans = *std::move(parsed);
    o.local_store_path = "";
    o.clock = clock.fn();
    o.on_usage = [this](const UsageEvent& e) {
      costs.push_back(e.cost);
      sources.push_back(e.price_source);
    };
    o.on_error = [this](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    pg = *Paygent::create(std::move(o));
  }
  testing::FakeClock clock;
  std::vector<Nanos> costs;
  std::vector<UsageEvent::PriceSource> sources;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;
};

Usage cached_usage(std::int64_t input, std::int64_t cache_reads, std::int64_t cache_writes, std::int64_t output) {
  Usage u;
  u.input_tokens = input;  // every input token, cache reads and writes included
  u.cached_input_tokens = cache_reads;
  u.cache_creation_input_tokens = cache_writes;
  u.output_tokens = output;
  return u;
}

}  // namespace

// The issue's two numbers: a plan that sets only input and output prices cache reads and writes
// at the catalog's ratio for the model, as the catalog itself would.
TEST_CASE("guard.pricing.unset_cache_rates_follow_the_catalog_ratio") {
  Metered m(R"({"default_plan": "p", "plans": [{"name": "p", "cost_rates": {
      "gpt-4o": {"input": 0.0025, "output": 0.01},
      "claude-sonnet-4-5": {"input": 0.003, "output": 0.015}}}]})");
  Context ctx("u1");
  // 1,024 uncached at $2.50/M + 1,024 cached at $1.25/M + 100 output at $10/M.
  m.pg->record("gpt-4o", cached_usage(2'048, 1'024, 0, 100));
  // 500 uncached at $3/M + 2,000 reads at $0.30/M + 500 writes at $3.75/M + 100 output at $15/M.
  m.pg->record("claude-sonnet-4-5-20250929", cached_usage(3'000, 2'000, 500, 100));
  REQUIRE(m.costs.size() == 2);
  CHECK(m.costs[0] == 4'840'000);   // was 6,120,000: every input token at the input rate
  CHECK(m.costs[1] == 5'475'000);   // was 10,500,000
  CHECK(m.sources[0] == UsageEvent::PriceSource::kPlan);
  CHECK(m.errors.empty());
  // The catalog prices the same calls the same way.
  const ModelPrice* gpt = PriceCatalog::builtin().find("gpt-4o");
  const ModelPrice* claude = PriceCatalog::builtin().find("claude-sonnet-4-5");
  REQUIRE(gpt != nullptr);
  REQUIRE(claude != nullptr);
  CHECK(cost_of(cached_usage(2'048, 1'024, 0, 100), *gpt) == 4'840'000);
  CHECK(cost_of(cached_usage(3'000, 2'000, 500, 100), *claude) == 5'475'000);
}

// A plan's own rates scale with the catalog's ratio: a negotiated input price half the list price
// reads from the cache at half the list cache price, never at the list price.
TEST_CASE("guard.pricing.catalog_ratio_scales_a_negotiated_rate") {
  Metered m(R"({"default_plan": "p", "plans": [{"name": "p", "cost_rates": {
      "claude-sonnet-4-5": {"input": 0.0015, "output": 0.0075}}}]})");
  Context ctx("u1");
  m.pg->record("claude-sonnet-4-5", cached_usage(3'000, 2'000, 500, 100));
  REQUIRE(m.costs.size() == 1);
  // 500 x 1,500 + 2,000 x 150 + 500 x 1,875 + 100 x 7,500 nano-USD.
  CHECK(m.costs[0] == 750'000 + 300'000 + 937'500 + 750'000);
}

// Rates the plan sets win; a model the catalog does not know prices cache tokens at the input
// rate and says so, once.
TEST_CASE("guard.pricing.set_cache_rates_win_and_a_guess_is_reported_once") {
  Metered m(R"({"default_plan": "p", "plans": [{"name": "p", "cost_rates": {
      "gpt-4o": {"input": 0.0025, "output": 0.01, "cached_input": 0.001, "cache_write": 0.004},
      "in-house-7b": {"input": 0.001, "output": 0.002}}}]})");
  Context ctx("u1");
  m.pg->record("gpt-4o", cached_usage(2'048, 1'024, 24, 100));
  REQUIRE(m.costs.size() == 1);
  CHECK(m.costs[0] == 1'000 * 2'500 + 1'024 * 1'000 + 24 * 4'000 + 100 * 10'000);
  CHECK(m.errors.empty());

  m.pg->record("in-house-7b", cached_usage(1'000, 0, 0, 10));  // no cache tokens: nothing guessed
  CHECK(m.errors.empty());
  m.pg->record("in-house-7b", cached_usage(1'000, 500, 0, 10));
  m.pg->record("in-house-7b", cached_usage(1'000, 500, 100, 10));
  REQUIRE(m.costs.size() == 4);
  CHECK(m.costs[2] == 1'000 * 1'000 + 10 * 2'000);  // every input token at the input rate
  REQUIRE(m.errors.size() == 1);
  CHECK(m.errors[0].find("in-house-7b") != std::string::npos);
  CHECK(m.errors[0].find("cached_input") != std::string::npos);
}

}  // namespace paygent
