// Soft gates fire once per threshold, limit and period, across restarts too (issue 8, item 5).
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


}  // namespace

TEST_CASE("guard.soft_gates.fired_thresholds_survive_a_restart") {
  testing::TempStore store;
  FakeClock clock;
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.max_spend_per_session = kDollar / 2;
  p.model_limits["gpt-4o"].max_tokens_per_period = 100'000;
  const PlanConfig config = testing::config_with(p, {500'000, 800'000});
  {
    Harness first(config, store.path(), &clock);
    {
      Context ctx("u1", {.session_id = "chat-1"});
      spend(*first.pg, 450'000'000);  // period 45%, session 90%
      CHECK(first.pg->check("m").status == GateStatus::kSoftGate);
    }
    {
      Context ctx("u1", {.session_id = "chat-2"});
      first.pg->record("gpt-4o", tokens(60'000, 0));  // model 60%, and $0.15: period 60%
      CHECK(first.pg->check("gpt-4o").status == GateStatus::kSoftGate);
    }
    CHECK(first.soft_keys == std::vector<std::string>{"session_spend@500000", "session_spend@800000",
                                                      "total_spend@500000", "model_limit:gpt-4o@500000"});
  }
  clock.advance(absl::Minutes(1));
  {
    Harness second(config, store.path(), &clock);
    {
      Context ctx("u1", {.session_id = "chat-1"});
      CHECK(second.pg->check("m").status == GateStatus::kSoftGate);
    }
    {
      Context ctx("u1", {.session_id = "chat-2"});
      CHECK(second.pg->check("gpt-4o").status == GateStatus::kSoftGate);
    }
    CHECK(second.soft_keys.empty());  // each already fired this period (and session)
    Context ctx("u1", {.session_id = "chat-1"});
    spend(*second.pg, 200'000'000);   // period 80%: a threshold not fired yet
    CHECK_THROWS_AS(second.pg->check("m"), LimitExceeded);  // chat-1 over its cap
    CHECK(second.soft_keys == std::vector<std::string>{"total_spend@800000"});
    CHECK(second.errors.empty());
  }
  // A new period fires every threshold again.
  clock.set(testing::utc(2026, 12, 2));
  {
    Harness third(config, store.path(), &clock);
    Context ctx("u1", {.session_id = "chat-3"});
    spend(*third.pg, 600'000'000);
    CHECK_THROWS_AS(third.pg->check("m"), LimitExceeded);  // session 120%
    CHECK(third.soft_keys == std::vector<std::string>{"total_spend@500000"});
  }
}

}  // namespace paygent
