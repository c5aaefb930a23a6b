#include "paygent/paygent.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

#include <vector>

#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::FakeClock;
using testing::tokens;

constexpr Nanos kDollar = kNanosPerUsd;

// A Paygent in memory on a fake clock, with callbacks recorded.
struct Harness {
  explicit Harness(PlanConfig config, bool raise = true) {
    Options o;
    o.plans = std::move(config);
    o.local_store_path = "";
    o.clock = clock.fn();
    o.raise_on_hard_gate = raise;
    o.on_soft_gate = [this](const GuardResult& r) { soft.push_back(r); };
    o.on_hard_gate = [this](const GuardResult& r) { hard.push_back(r); };
    o.on_usage = [this](const UsageEvent& e) { usage.push_back(e.cost); };
    o.on_error = [this](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    pg = *Paygent::create(std::move(o));
  }
  FakeClock clock;
  std::vector<GuardResult> soft, hard;
  std::vector<Nanos> usage;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;
};

// Spends exactly `nanos` on model "m" (1,000 nano-USD per input token) for the current user.
void spend(Paygent& pg, Nanos nanos) {
  REQUIRE(nanos % 1000 == 0);
  pg.record("m", tokens(nanos / 1000, 0));
}

}  // namespace

TEST_CASE("guard.gate.outside_context_passes_unmetered") {
  Harness h(testing::config_with(testing::round_plan()));
  const GuardResult r = h.pg->check("gpt-4o");
  CHECK(r.status == GateStatus::kUnmetered);
  h.pg->record("gpt-4o", tokens(10, 10));
  CHECK(h.usage.empty());
  CHECK(h.pg->stats().unmetered == 2);
}

TEST_CASE("guard.gate.period_spend_below_at_above_the_cap") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p));
  Context ctx("u1");

  spend(*h.pg, kDollar - 1000);  // just below
  GuardResult r = h.pg->check("m");
  CHECK(r.status == GateStatus::kSoftGate);
  CHECK(r.gate_reason() == "total_spend");
  CHECK(r.current_value == kDollar - 1000);
  CHECK(r.limit_value == kDollar);

  spend(*h.pg, 1000);  // exactly at
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  spend(*h.pg, 1000);  // just above
  try {
    h.pg->check("m");
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().status == GateStatus::kHardGate);
    CHECK(e.result().gate_reason() == "total_spend");
    CHECK(e.result().current_value == kDollar + 1000);
    CHECK(std::string(e.what()).find("total_spend") != std::string::npos);
    CHECK(std::string(e.what()).find("$1.00 spent of $1.00 this period") != std::string::npos);
    CHECK(std::string(e.what()).find("resets 2026-12-01 00:00 UTC") != std::string::npos);
  }
  CHECK(h.hard.size() == 2);
}

TEST_CASE("guard.gate.soft_threshold_below_at_above") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  spend(*h.pg, 800'000'000 - 1000);
  CHECK(h.pg->check("m").status == GateStatus::kOk);
  CHECK(h.soft.empty());
  spend(*h.pg, 1000);  // exactly 80%
  const GuardResult r = h.pg->check("m");
  CHECK(r.status == GateStatus::kSoftGate);
  CHECK(r.usage_pct == doctest::Approx(0.8));
  CHECK(r.threshold == 800'000);
  REQUIRE(h.soft.size() == 1);
  spend(*h.pg, 1000);  // just above: still soft, callback does not fire again
  CHECK(h.pg->check("m").status == GateStatus::kSoftGate);
  CHECK(h.soft.size() == 1);
}

TEST_CASE("guard.gate.session_spend_below_at_above") {
  Plan p = testing::round_plan();
  p.max_spend_per_session = kDollar / 2;
  Harness h(testing::config_with(p));
  Context ctx("u1", {.session_id = "chat-1"});
  spend(*h.pg, kDollar / 2 - 1000);
  GuardResult r = h.pg->check("m");
  CHECK(r.status == GateStatus::kSoftGate);
  CHECK(r.gate_reason() == "session_spend");
  spend(*h.pg, 1000);
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  {
    // Another session of the same user is not affected.
    Context other("", {.session_id = "chat-2"});
    CHECK(h.pg->check("m").status == GateStatus::kOk);
  }
  spend(*h.pg, 1000);
  try {
    h.pg->check("m");
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().gate_reason() == "session_spend");
    CHECK(std::string(e.what()).find("this session") != std::string::npos);
  }
}

TEST_CASE("guard.gate.model_tokens_below_at_above") {
  Plan p = testing::round_plan();
  p.model_limits["gpt-4o"].max_tokens_per_period = 1000;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  h.pg->record("gpt-4o-2024-08-06", tokens(500, 499));  // dated name counts against "gpt-4o"
  GuardResult r = h.pg->check("gpt-4o");
  CHECK(r.status == GateStatus::kSoftGate);
  CHECK(r.gate_reason() == "model_limit:gpt-4o");
  CHECK(r.current_value == 999);
  CHECK(r.limit_value == 1000);
  // Other models are not limited by it, and dollars are not compared with tokens.
  CHECK(h.pg->check("gpt-4o-mini").status == GateStatus::kOk);
  h.pg->record("gpt-4o", tokens(1, 0));
  try {
    h.pg->check("gpt-4o");
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().gate_reason() == "model_limit:gpt-4o");
    CHECK(std::string(e.what()).find("1,000 of 1,000 gpt-4o tokens this period") != std::string::npos);
  }
  h.pg->record("gpt-4o", tokens(1, 0));
  CHECK_THROWS_AS(h.pg->check("gpt-4o"), LimitExceeded);
  CHECK(h.pg->check("gpt-4o-mini").status == GateStatus::kOk);
}

TEST_CASE("guard.gate.most_restrictive_wins") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = 10 * kDollar;
  p.max_spend_per_session = kDollar;
  p.model_limits["m"].max_tokens_per_period = 10'000'000;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  spend(*h.pg, 850'000'000);  // period 8.5%, session 85%, model 8.5%
  GuardResult r = h.pg->check("m");
  CHECK(r.status == GateStatus::kSoftGate);
  CHECK(r.gate_reason() == "session_spend");
  CHECK(r.usage_pct == doctest::Approx(0.85));

  // A hard gate beats a soft gate with a higher usage.
  Plan q = testing::round_plan();
  q.max_spend_per_period = kDollar;
  q.model_limits["m"].max_tokens_per_period = 100'000;
  Harness h2(testing::config_with(q));
  Context ctx2("u2");
  h2.pg->record("m", tokens(100'000, 0));  // $0.10: model at 100%, period at 10%
  try {
    h2.pg->check("m");
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().gate_reason() == "model_limit:m");
  }
  // A call of another model sees only the spend limit.
  CHECK(h2.pg->check("gpt-4o").status == GateStatus::kOk);
}

TEST_CASE("guard.gate.ties_prefer_period_then_session") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.max_spend_per_session = kDollar;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  spend(*h.pg, 900'000'000);
  CHECK(h.pg->check("m").gate_reason() == "total_spend");
}

TEST_CASE("guard.gate.raise_on_hard_gate_off_lets_the_call_run") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p), /*raise=*/false);
  Context ctx("u1");
  spend(*h.pg, kDollar);
  GuardResult r;
  CHECK_NOTHROW(r = h.pg->check("m"));
  CHECK(r.status == GateStatus::kHardGate);
  CHECK(h.hard.size() == 1);
  Reservation res;
  CHECK_NOTHROW(res = h.pg->reserve("m", {.prompt_tokens = 10}));
  CHECK(res.result().status == GateStatus::kHardGate);
  h.pg->settle(res, tokens(10, 0));
  CHECK(h.usage.size() == 2);  // the spend() record and the settled call
}

TEST_CASE("guard.gate.several_soft_thresholds_fire_once_per_period") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p, {500'000, 800'000, 950'000}));
  h.clock.set(testing::utc(2026, 11, 3));
  Context ctx("u1");
  std::vector<Ppm> fired;
  auto step = [&](Nanos to) {
    spend(*h.pg, to - (h.pg->report("u1").ok() ? h.pg->report("u1")->spend : 0));
    h.pg->check("m");
  };
  spend(*h.pg, 1000);
  step(600'000'000);
  step(700'000'000);
  step(850'000'000);
  step(970'000'000);
  step(980'000'000);
  REQUIRE(h.soft.size() == 3);
  CHECK(h.soft[0].threshold == 500'000);
  CHECK(h.soft[1].threshold == 800'000);
  CHECK(h.soft[2].threshold == 950'000);
  // Next month: spend starts at 0 and each threshold may fire again.
  h.clock.set(testing::utc(2026, 12, 2));
  spend(*h.pg, 600'000'000);
  h.pg->check("m");
  REQUIRE(h.soft.size() == 4);
  CHECK(h.soft[3].threshold == 500'000);
}

TEST_CASE("guard.gate.plans_replaced_at_run_time") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  spend(*h.pg, kDollar);
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  Plan bigger = testing::round_plan();
  bigger.max_spend_per_period = 2 * kDollar;
  REQUIRE(h.pg->set_plans(testing::config_with(bigger)).ok());
  const GuardResult r = h.pg->check("m");
  CHECK(r.status == GateStatus::kOk);
  CHECK(r.current_value == kDollar);  // spend carried over: same period
  CHECK(h.pg->plans()->plans[0].max_spend_per_period == 2 * kDollar);
  // An invalid config is refused and the old one stays.
  PlanConfig bad = testing::config_with(testing::round_plan());
  bad.default_plan = "nope";
  CHECK(h.pg->set_plans(bad).code() == absl::StatusCode::kInvalidArgument);
  CHECK(h.pg->plans()->plans[0].max_spend_per_period == 2 * kDollar);
}

TEST_CASE("guard.gate.users_without_plan_are_metered_not_gated") {
  PlanConfig c;
  c.plans.push_back(testing::round_plan("pro"));
  c.plans[0].max_spend_per_period = 1000;
  Harness h(c);
  Context ctx("free-rider");
  // Without a plan there are no plan rates: the built-in catalog prices gpt-4o ($2.50 per 1M input).
  h.pg->record("gpt-4o", tokens(400'000, 0));
  CHECK(h.pg->check("gpt-4o").status == GateStatus::kOk);
  REQUIRE(h.usage.size() == 1);
  CHECK(h.usage[0] == kDollar);
  REQUIRE(h.pg->assign_plan("free-rider", "pro").ok());
  CHECK_THROWS_AS(h.pg->check("gpt-4o"), LimitExceeded);
  CHECK(h.pg->assign_plan("free-rider", "gold").code() == absl::StatusCode::kNotFound);
}

TEST_CASE("guard.gate.zero_limit_blocks_everything") {
  Plan p = testing::round_plan();
  p.model_limits["gpt-4o"].max_tokens_per_period = 0;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  CHECK_THROWS_AS(h.pg->check("gpt-4o"), LimitExceeded);
  CHECK(h.pg->check("m").status == GateStatus::kOk);
}

}  // namespace paygent

namespace paygent {

TEST_CASE("guard.gate.every_limit_fires_its_own_soft_alerts") {
  // The model quota is the tighter limit (95%), yet the period's 80% alert must fire too.
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.model_limits["m"].max_tokens_per_period = 1'000'000;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  h.pg->record("m", tokens(860'000, 0));  // $0.86: period 86%, model 86%
  h.pg->record("gpt-4o", tokens(0, 0));
  h.pg->record("m", tokens(90'000, 0));   // model 95%, period 95%
  h.pg->check("m");
  int period = 0, model = 0;
  for (const auto& r : h.soft) {
    period += r.reason == GateReason::kTotalSpend;
    model += r.reason == GateReason::kModelLimit;
  }
  CHECK(period == 1);
  CHECK(model == 1);
}

TEST_CASE("guard.gate.a_jump_over_several_thresholds_fires_each_once") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p, {500'000, 800'000, 950'000}));
  Context ctx("u1");
  h.pg->record("m", tokens(960'000, 0));  // 0% -> 96% in one call
  h.pg->check("m");
  REQUIRE(h.soft.size() == 3);
  CHECK(h.soft[0].threshold == 500'000);
  CHECK(h.soft[1].threshold == 800'000);
  CHECK(h.soft[2].threshold == 950'000);
  h.pg->check("m");
  CHECK(h.soft.size() == 3);
}

TEST_CASE("guard.gate.a_new_subscription_on_the_same_plan_moves_the_period") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p));
  h.clock.set(testing::utc(2026, 11, 20));
  Context ctx("u1");
  h.pg->check("m");
  REQUIRE(h.pg->report("u1")->period.start == testing::utc(2026, 11, 1));
  REQUIRE(h.pg->subscribe("u1", "pro", testing::utc(2026, 11, 15), testing::utc(2026, 12, 15)).ok());
  h.pg->check("m");
  CHECK(h.pg->report("u1")->period.start == testing::utc(2026, 11, 15));
  CHECK(h.pg->report("u1")->period.end == testing::utc(2026, 12, 15));
}

TEST_CASE("guard.gate.a_blocked_call_does_not_keep_its_session_alive") {
  Plan p = testing::round_plan();
  p.max_spend_per_session = kDollar;
  p.session_timeout = absl::Minutes(30);
  Harness h(testing::config_with(p));
  Context ctx("u1");
  h.pg->record("m", tokens(1'000'000, 0));
  for (int i = 0; i < 3; ++i) {  // retrying every 10 minutes against the cap
    h.clock.advance(absl::Minutes(10));
    CHECK_THROWS_AS((void)h.pg->reserve("m", {.prompt_tokens = 1}), LimitExceeded);
  }
  // 40 minutes since the last admitted call: the session expired, the cap resets.
  h.clock.advance(absl::Minutes(10));
  CHECK_NOTHROW((void)h.pg->reserve("m", {.prompt_tokens = 1}));
}

}  // namespace paygent
