// The hard gate's rule and words, and the user each result names (issue 8, item 4).
#include "paygent/paygent.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::FakeClock;
using testing::tokens;
constexpr Nanos kDollar = kNanosPerUsd;

using Harness = testing::GateHarness;
using testing::spend;

// An estimate of exactly `nanos` on "m".
CallEstimate costing(Nanos nanos) { return {.prompt_tokens = nanos / 1000}; }

}  // namespace

TEST_CASE("guard.gate_rule.an_estimate_that_fits_exactly_is_admitted") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  spend(*h.pg, 990'000'000);
  // $0.99 + $0.01 lands exactly on the cap: admitted.
  Reservation r = h.pg->reserve("m", costing(10'000'000));
  CHECK(r.result().status == GateStatus::kSoftGate);
  CHECK(r.result().current_value == kDollar);
  h.pg->settle(r, tokens(10'000, 0));
  // The limit is now at hard_gate_at: every call is refused, even one without an estimate.
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  CHECK_THROWS_AS(h.pg->reserve("m", costing(1'000)), LimitExceeded);
}

TEST_CASE("guard.gate_rule.hard_message_says_spent_and_what_the_call_would_add") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  spend(*h.pg, 990'000'000);
  try {
    auto r = h.pg->reserve("m", costing(20'000'000));
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(std::string(e.what()) ==
          "hard gate: total_spend: $0.99 spent of $1.00 this period, this call would add up to $0.02; resets "
          "2026-12-01 00:00 UTC");
    CHECK(e.result().current_value == 1'010'000'000);  // with the call, as usage_pct
  }
  spend(*h.pg, 10'000'000);
  try {
    h.pg->check("m");
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(std::string(e.what()) ==
          "hard gate: total_spend: $1.00 spent of $1.00 this period; resets 2026-12-01 00:00 UTC");
  }
}

TEST_CASE("guard.gate_rule.model_limit_hard_message_in_tokens") {
  Plan p = testing::round_plan();
  p.model_limits["gpt-4o"].max_tokens_per_period = 50'000;
  Harness h(testing::config_with(p));
  Context ctx("u1");
  h.pg->record("gpt-4o", tokens(40'000, 9'000));
  try {
    h.pg->check("gpt-4o", {.prompt_tokens = 1'000, .max_output_tokens = 500});
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(std::string(e.what()) ==
          "hard gate: model_limit:gpt-4o: 49,000 of 50,000 gpt-4o tokens this period, this call would add up to 1,500; "
          "resets 2026-12-01 00:00 UTC");
  }
}

TEST_CASE("guard.gate_rule.results_name_the_user") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.max_spend_per_session = kDollar / 2;
  Harness h(testing::config_with(p, {500'000, 800'000}));
  {
    Context ctx("alice");
    spend(*h.pg, 450'000'000);
    CHECK(h.pg->check("m").user_id == "alice");
  }
  Context ctx("bob");
  spend(*h.pg, 600'000'000);
  try {
    h.pg->check("m");
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().user_id == "bob");
  }
  REQUIRE(h.soft.size() == 3);  // alice: session 0.5 and 0.8; bob: period 0.5 (session is hard)
  CHECK(h.soft[0].user_id == "alice");
  CHECK(h.soft[1].user_id == "alice");
  CHECK(h.soft[2].user_id == "bob");
  REQUIRE(h.hard.size() == 1);
  CHECK(h.hard[0].user_id == "bob");
}

}  // namespace paygent
