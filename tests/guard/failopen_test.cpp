#include <doctest/doctest.h>

#include <stdexcept>

#include "paygent/paygent.h"
#include "tests/guard/fixture.h"
#include "tests/meter/fixtures.h"

namespace paygent {
namespace {

using testing::tokens;
constexpr Nanos kDollar = kNanosPerUsd;

// An in-memory Paygent on `config` that collects every metered event in `seen`.
std::unique_ptr<Paygent> collecting(std::vector<UsageEvent>& seen, PlanConfig config) {
  Options o;
  o.plans = std::move(config);
  o.local_store_path = "";
  o.on_usage = [&seen](const UsageEvent& e) { seen.push_back(e); };
  return *Paygent::create(std::move(o));
}

}  // namespace

TEST_CASE("guard.failopen.throwing_callbacks_are_contained") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Options o;
  o.plans = testing::config_with(p);
  o.local_store_path = "";
  o.on_soft_gate = [](const GuardResult&) { throw std::runtime_error("soft callback bug"); };
  o.on_usage = [](const UsageEvent&) { throw 42; };
  std::vector<std::string> errors;
  o.on_error = [&](const absl::Status& s) {
    errors.push_back(std::string(s.message()));
    throw std::runtime_error("even on_error throws");
  };
  auto pg = *Paygent::create(std::move(o));
  Context ctx("u1");
  CHECK_NOTHROW(pg->record("m", tokens(900'000, 0)));
  GuardResult r;
  CHECK_NOTHROW(r = pg->check("m"));
  CHECK(r.status == GateStatus::kSoftGate);
  const Stats s = pg->stats();
  CHECK(s.callback_failures >= 3);  // on_usage, on_soft_gate, and on_error itself
  CHECK(s.events == 1);
  REQUIRE_FALSE(errors.empty());
  CHECK(errors[0].find("callback threw") != std::string::npos);
  // The hard gate is still intentional: it throws LimitExceeded, not the callback's error.
  pg->record("m", tokens(100'000, 0));
  CHECK_THROWS_AS(pg->check("m"), LimitExceeded);
}

TEST_CASE("guard.failopen.unknown_model_metered_at_zero_and_reported_once") {
  Options o;
  o.plans = testing::config_with(testing::round_plan());
  o.local_store_path = "";
  std::vector<std::string> errors;
  o.on_error = [&](const absl::Status& s) { errors.push_back(std::string(s.message())); };
  auto pg = *Paygent::create(std::move(o));
  Context ctx("u1");
  pg->record("mystery-model-9000", tokens(10, 10));
  pg->record("mystery-model-9000", tokens(10, 10));
  CHECK(pg->stats().unknown_models == 2);
  CHECK(pg->stats().events == 2);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].find("mystery-model-9000") != std::string::npos);
  auto rep = pg->report("u1");
  CHECK(rep->calls == 2);
  CHECK(rep->spend == 0);
}

TEST_CASE("guard.failopen.catalog_prices_models_the_plan_does_not") {
  Options o;
  o.plans = testing::config_with(testing::round_plan());
  o.local_store_path = "";
  UsageEvent::PriceSource source = UsageEvent::PriceSource::kUnknown;
  Nanos cost = -1;
  o.on_usage = [&](const UsageEvent& e) {
    source = e.price_source;
    cost = e.cost;
  };
  auto pg = *Paygent::create(std::move(o));
  Context ctx("u1");
  pg->record("gpt-4o-mini-2024-07-18", tokens(1'000'000, 1'000'000));
  CHECK(source == UsageEvent::PriceSource::kCatalog);
  const ModelPrice* price = PriceCatalog::builtin().find("gpt-4o-mini");
  REQUIRE(price != nullptr);
  CHECK(cost == cost_of(tokens(1'000'000, 1'000'000), *price));
  pg->record("gpt-4o", tokens(1000, 500));
  CHECK(source == UsageEvent::PriceSource::kPlan);
  CHECK(cost == 1000 * 2'500 + 500 * 10'000);
}

TEST_CASE("guard.failopen.unreadable_response_meters_the_estimate") {
  Options o;
  o.plans = testing::config_with(testing::round_plan());
  o.local_store_path = "";
  bool estimated = false;
  o.on_usage = [&](const UsageEvent& e) { estimated = e.estimated; };
  auto pg = *Paygent::create(std::move(o));
  Context ctx("u1");
  const std::string garbled = pg->metered_call("m", {.prompt_tokens = 10, .max_output_tokens = 20},
                                               [] { return std::string(R"({"usage": {"prompt_tokens": )"); });
  CHECK(garbled.size() > 0);
  CHECK(estimated);
  CHECK(pg->stats().unreadable_responses == 1);
  CHECK(pg->report("u1")->spend == 10 * 1'000 + 20 * 2'000);
}

FIXTURE_TEST_CASE("guard.failopen.provider_error_body_costs_nothing") {
  Options o;
  o.plans = testing::config_with(testing::round_plan());
  o.local_store_path = "";
  auto pg = *Paygent::create(std::move(o));
  Context ctx("u1");
  int bodies = 0;
  for (const testing::FixtureCase& c : fixtures.cases) {
    if (!testing::is_error_body(c)) continue;
    CAPTURE(c.file);
    pg->metered_call("m", {.prompt_tokens = 10, .max_output_tokens = 20}, [&] { return c.body; });
    ++bodies;
  }
  CHECK(bodies >= 3);
  auto rep = pg->report("u1");
  CHECK(rep->spend == 0);
  CHECK(rep->reserved == 0);
  CHECK(pg->stats().events == 0);
}

FIXTURE_TEST_CASE("guard.failopen.real_provider_bodies_are_metered_exactly") {
  // The cached OpenAI and Anthropic bodies: the usage MANIFEST.json names (normalised: Anthropic
  // input counts its cache reads and writes) is metered, not the estimate.
  const testing::FixtureCase* openai = fixtures.find("openai-chat-cached.json");
  const testing::FixtureCase* anthropic = fixtures.find("anthropic-messages-cached.json");
  REQUIRE(openai != nullptr);
  REQUIRE(anthropic != nullptr);
  REQUIRE(openai->usage.cached_input_tokens > 0);
  REQUIRE(anthropic->usage.cache_creation_input_tokens > 0);
  Plan p = testing::round_plan();
  Options o;
  o.plans = testing::config_with(p);
  o.local_store_path = "";
  std::vector<Usage> seen;
  o.on_usage = [&](const UsageEvent& e) { seen.push_back(e.usage); };
  auto pg = *Paygent::create(std::move(o));
  Context ctx("u1");
  pg->metered_call("gpt-4o", {.prompt_tokens = 10}, [&] { return openai->body; });
  pg->metered_call("claude-sonnet-4-5", {.prompt_tokens = 10}, [&] { return anthropic->body; });
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == openai->usage);
  CHECK(seen[1] == anthropic->usage);
  CHECK(seen[1].input_tokens >
        seen[1].cached_input_tokens + seen[1].cache_creation_input_tokens);  // reads and writes are in input
  // The plan's gpt-4o rate prices cache reads at the catalog's ratio (tests/guard/pricing_test.cpp).
  CHECK(pg->report("u1")->by_model.size() == 2);
}

FIXTURE_TEST_CASE("guard.failopen.streamed_responses_are_metered_from_their_final_usage") {
  // Every stream with usage, through metered_call as a whole SSE body: the usage MANIFEST.json
  // names is metered, not the estimate.
  int streams = 0;
  for (const testing::FixtureCase& c : fixtures.cases) {
    if (!c.sse || !c.usage_present) continue;
    CAPTURE(c.file);
    ++streams;
    Options o;
    o.plans = testing::config_with(testing::round_plan());
    o.local_store_path = "";
    std::vector<UsageEvent> seen;
    std::vector<std::string> errors;
    o.on_usage = [&](const UsageEvent& e) { seen.push_back(e); };
    o.on_error = [&](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    auto pg = *Paygent::create(std::move(o));
    Context ctx("u1");
    // Called as the model the stream says it ran: another model would be a reported mismatch.
    const std::string model = c.model.empty() ? "gpt-4o" : c.model;
    const std::string body = pg->metered_call(model, {.prompt_tokens = 7, .max_output_tokens = 9},
                                              [&] { return c.body; });
    CHECK(body == c.body);
    REQUIRE(seen.size() == 1);
    CHECK_FALSE(seen[0].estimated);
    CHECK(seen[0].usage.input_tokens == c.usage.input_tokens);
    CHECK(seen[0].usage.output_tokens == c.usage.output_tokens);
    CHECK(seen[0].usage.cached_input_tokens == c.usage.cached_input_tokens);
    CHECK(seen[0].usage.reasoning_tokens == c.usage.reasoning_tokens);
    CHECK(pg->stats().unreadable_responses == 0);
    CHECK(errors.empty());
  }
  CHECK(streams >= 5);
}

FIXTURE_TEST_CASE("guard.failopen.a_stream_cut_before_its_usage_meters_the_estimate") {
  // The connection dropped before the usage event: the tokens were spent, so the estimate is
  // metered (never nothing) and the response is counted as unreadable.
  for (const testing::FixtureCase& c : fixtures.cases) {
    if (!c.truncated) continue;
    CAPTURE(c.file);
    std::vector<UsageEvent> seen;
    auto pg = collecting(seen, testing::config_with(testing::round_plan()));
    Context ctx("u1");
    const std::string body =
        pg->metered_call("gpt-4o", {.prompt_tokens = 7, .max_output_tokens = 9}, [&] { return c.body; });
    CHECK(body == c.body);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].estimated);
    CHECK(seen[0].usage.input_tokens == 7);
    CHECK(seen[0].usage.output_tokens == 9);
    CHECK(pg->stats().unreadable_responses == 1);
    CHECK(pg->report("u1")->reserved == 0);
  }
}

TEST_CASE("guard.failopen.a_stream_without_usage_meters_the_estimate") {
  std::vector<UsageEvent> seen;
  auto pg = collecting(seen, testing::config_with(testing::round_plan()));
  Context ctx("u1");
  pg->metered_call("gpt-4o", {.prompt_tokens = 7, .max_output_tokens = 9},
                   [] { return std::string("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"); });
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].estimated);
  CHECK(seen[0].usage.input_tokens == 7);
  CHECK(seen[0].usage.output_tokens == 9);
  CHECK(pg->stats().unreadable_responses == 1);
}

TEST_CASE("guard.failopen.a_stream_cut_by_an_error_meters_the_estimate_an_error_body_releases") {
  std::vector<UsageEvent> seen;
  auto pg = collecting(seen, testing::config_with(testing::round_plan()));
  Context ctx("u1");
  // The stream ran partway (content came) and ended in an error before its usage chunk.
  pg->metered_call("gpt-4o", {.prompt_tokens = 7, .max_output_tokens = 9}, [] {
    return std::string(
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n");
  });
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].estimated);
  CHECK(seen[0].usage.input_tokens == 7);
  // A JSON error body: the call did not run; nothing is metered and the hold is given back.
  pg->metered_call("gpt-4o", {.prompt_tokens = 7, .max_output_tokens = 9}, [] {
    return std::string(R"({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}})");
  });
  CHECK(seen.size() == 1);
  CHECK(pg->report("u1")->reserved == 0);
}

TEST_CASE("guard.failopen.dated_snapshots_are_priced_as_called_and_counted_as_their_model") {
  // The catalog prices gpt-4o-2024-05-13 apart ($5/$15 per 1M) from gpt-4o ($2.50/$10); both
  // count against gpt-4o's quota and report line.
  std::vector<UsageEvent> seen;
  auto pg = collecting(seen, testing::config_with(Plan{.name = "free"}));  // no plan rates: the catalog prices
  Context ctx("u1");
  const Usage u{.input_tokens = 1000, .output_tokens = 1000};
  pg->record("gpt-4o-2024-05-13", u);
  pg->record("gpt-4o-2024-08-06", u);
  pg->record("gpt-4o-2024-05-13", u);  // the thread's last-model cache keeps the price too
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].cost == 20'000'000);  // $0.005 + $0.015
  CHECK(seen[1].cost == 12'500'000);  // $0.0025 + $0.010
  CHECK(seen[2].cost == 20'000'000);
  CHECK(seen[0].price_source == UsageEvent::PriceSource::kCatalog);
  CHECK(seen[0].model == "gpt-4o");
  auto report = pg->report("u1");
  REQUIRE(report.ok());
  REQUIRE(report->by_model.size() == 1);
  CHECK(report->spend == 52'500'000);
}

TEST_CASE("guard.failopen.init_with_bad_options_gives_a_pass_through_instance") {
  Options o;
  o.plans.default_plan = "missing";
  std::string error;
  o.on_error = [&](const absl::Status& s) { error = std::string(s.message()); };
  Paygent& pg = Paygent::init(std::move(o));
  CHECK(Paygent::instance() == &pg);
  CHECK(error.find("default_plan") != std::string::npos);
  Context ctx("u1");
  CHECK(pg.check("gpt-4o").status == GateStatus::kOk);
  Options bad;
  bad.plans.default_plan = "missing";
  bad.local_store_path = "";
  CHECK(Paygent::create(std::move(bad)).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace paygent
