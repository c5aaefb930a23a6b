// The gate's limits as entries of one table (guard/internal/engine.h, LimitTable): what the table
// changed on purpose. Everything else is held unchanged by the other guard tests.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "guard/internal/engine.h"
#include "paygent/paygent.h"
#include "tests/guard/fixture.h"

namespace paygent {
namespace {

// Each model limit has its own soft-threshold bits: before the table, limits past the 7th shared
// one group, so the 9th model's 50% alert was swallowed once the 8th's had fired.
TEST_CASE("guard.soft_gates.model_limits_past_the_seventh_fire_apart") {
  Plan p = testing::round_plan();
  for (int i = 1; i <= 9; ++i) p.model_limits["m" + std::to_string(i)].max_tokens_per_period = 1000;
  Options o;
  o.local_store_path = "";  // in memory
  o.plans = testing::config_with(p, {500'000});
  std::vector<std::string> fired;
  o.on_soft_gate = [&](const GuardResult& r) { fired.push_back(r.gate_reason()); };
  auto pg = Paygent::create(std::move(o));
  REQUIRE(pg.ok());
  Context ctx("u");
  for (const char* model : {"m8", "m9", "m1"}) {
    (*pg)->record(model, Usage{.input_tokens = 600, .output_tokens = 0});
    const GuardResult r = (*pg)->check(model);
    CHECK(r.status == GateStatus::kSoftGate);
    CHECK(r.reason == GateReason::kModelLimit);
    CHECK(r.model == model);
  }
  CHECK(fired == std::vector<std::string>{"model_limit:m8", "model_limit:m9", "model_limit:m1"});
  // Once per limit and threshold.
  (*pg)->check("m9");
  CHECK(fired.size() == 3);
}

// admit() walks the table in order: a hard verdict names its entry and releases what the entries
// before it held.
TEST_CASE("guard.admit.names_the_refusing_entry_and_releases_earlier_holds") {
  constexpr Nanos kDollar = kNanosPerUsd;
  Plan p = testing::round_plan();
  p.max_spend_per_period = 10 * kDollar;
  p.max_spend_per_session = kDollar;
  Options o;
  o.local_store_path = "";
  internal::Engine engine{std::move(o)};
  REQUIRE(engine.install_plans(testing::config_with(p)).ok());
  Context ctx("u");
  internal::CallSite site;
  REQUIRE(engine.resolve("m", engine.now_ns(), site, internal::LimitUse::kHold));
  REQUIRE(site.limits.count == 3);  // period spend, session spend, and m's tokens (held, not limited)
  CHECK(site.limits[0].reason == GateReason::kTotalSpend);
  CHECK(site.limits[1].reason == GateReason::kSessionSpend);
  CHECK(site.limits[2].reason == GateReason::kNone);
  internal::Verdicts verdicts;
  const GuardResult r = engine.admit(site, 2 * kDollar, 1000, verdicts);
  CHECK(r.status == GateStatus::kHardGate);
  CHECK(r.reason == GateReason::kSessionSpend);
  CHECK(verdicts.hard_entry == 1);
  CHECK(site.period->committed.load() == 0);  // the period's hold was released
  CHECK(site.session->committed.load() == 0);

  internal::Verdicts fits;
  CHECK(engine.admit(site, kDollar / 2, 1000, fits).status == GateStatus::kOk);
  CHECK(site.period->committed.load() == kDollar / 2);
  CHECK(site.session->committed.load() == kDollar / 2);
  CHECK(site.period->find(site.model->id)->committed_tokens.load() == 1000);
}

TEST_CASE("guard_result.lease_exhausted_names_budget_held_elsewhere") {
  GuardResult r;
  r.status = GateStatus::kHardGate;
  r.reason = GateReason::kLeaseExhausted;
  CHECK(r.gate_reason() == "lease_exhausted");
  CHECK(r.message().find("budget held by other processes") != std::string::npos);
}

}  // namespace
}  // namespace paygent
