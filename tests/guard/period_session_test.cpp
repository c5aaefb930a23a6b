#include <doctest/doctest.h>

#include "paygent/paygent.h"
#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::FakeClock;
using testing::tokens;
using testing::utc;
constexpr Nanos kDollar = kNanosPerUsd;

struct Harness {
  explicit Harness(Plan p) {
    Options o;
    o.plans = testing::config_with(std::move(p));
    o.local_store_path = "";
    o.clock = clock.fn();
    pg = *Paygent::create(std::move(o));
  }
  FakeClock clock;
  std::unique_ptr<Paygent> pg;
};

}  // namespace

TEST_CASE("guard.period.calendar_month_resets_exactly_at_midnight_utc") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(p);
  Context ctx("u1");
  h.clock.set(utc(2026, 11, 30, 23, 59, 59) + absl::Nanoseconds(999'999'999));
  h.pg->record("m", tokens(1'000'000, 0));  // $1: at the cap, in November
  try {
    h.pg->check("m");
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().resets_at == utc(2026, 12, 1));
  }
  h.clock.set(utc(2026, 12, 1));  // the first instant of December
  const GuardResult r = h.pg->check("m");
  CHECK(r.status == GateStatus::kOk);
  CHECK(r.current_value == 0);
  auto rep = h.pg->report("u1");
  CHECK(rep->period.start == utc(2026, 12, 1));
  CHECK(rep->period.end == utc(2027, 1, 1));
  CHECK(rep->spend == 0);
}

TEST_CASE("guard.period.day_and_week_rules") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.period = PeriodRule::kDay;
  Harness h(p);
  Context ctx("u1");
  h.clock.set(utc(2026, 11, 10, 23, 0));
  h.pg->record("m", tokens(1'000'000, 0));
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  h.clock.set(utc(2026, 11, 11, 0, 0));
  CHECK(h.pg->check("m").status == GateStatus::kOk);

  Plan w = testing::round_plan();
  w.max_spend_per_period = kDollar;
  w.period = PeriodRule::kWeek;
  Harness hw(w);
  hw.clock.set(utc(2026, 11, 22, 12, 0));  // a Sunday
  hw.pg->record("m", tokens(1'000'000, 0));
  CHECK_THROWS_AS(hw.pg->check("m"), LimitExceeded);
  hw.clock.set(utc(2026, 11, 23, 0, 0));  // Monday
  CHECK(hw.pg->check("m").status == GateStatus::kOk);
}

TEST_CASE("guard.period.subscription_period_and_renewal") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Harness h(p);
  REQUIRE(h.pg->subscribe("u1", "pro", utc(2026, 11, 15, 9, 30), utc(2026, 12, 15, 9, 30)).ok());
  CHECK(h.pg->subscribe("u1", "pro", utc(2026, 12, 15), utc(2026, 11, 15)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(h.pg->subscribe("u1", "gold", utc(2026, 11, 15), utc(2026, 12, 15)).code() == absl::StatusCode::kNotFound);
  Context ctx("u1");
  h.clock.set(utc(2026, 12, 1));  // calendar month changes, the subscription period does not
  h.pg->record("m", tokens(1'000'000, 0));
  h.clock.set(utc(2026, 12, 15, 9, 29, 59));
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  h.clock.set(utc(2026, 12, 15, 9, 30));  // renewed for Dec 15 - Jan 15
  CHECK(h.pg->check("m").status == GateStatus::kOk);
  auto rep = h.pg->report("u1");
  CHECK(rep->period.start == utc(2026, 12, 15, 9, 30));
  CHECK(rep->period.end == utc(2027, 1, 15, 9, 30));
}

TEST_CASE("guard.session.expires_after_inactivity_not_before") {
  Plan p = testing::round_plan();
  p.max_spend_per_session = kDollar;
  p.session_timeout = absl::Minutes(30);
  Harness h(p);
  Context ctx("u1");  // the implicit session
  h.pg->record("m", tokens(1'000'000, 0));
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  h.clock.advance(absl::Minutes(30));  // exactly the timeout: still the same session
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);
  h.clock.advance(absl::Nanoseconds(1));  // idle for longer than the timeout: a new session
  const GuardResult r = h.pg->check("m");
  CHECK(r.status == GateStatus::kOk);
  CHECK(r.current_value == 0);
  auto rep = h.pg->report("u1");
  REQUIRE(rep->by_session.size() == 1);  // only sessions with calls are listed
  CHECK(rep->by_session[0].session_id.rfind("auto-", 0) == 0);
  CHECK(rep->by_session[0].cost == kDollar);
}

TEST_CASE("guard.session.activity_keeps_a_session_alive") {
  Plan p = testing::round_plan();
  p.max_spend_per_session = kDollar;
  p.session_timeout = absl::Minutes(30);
  Harness h(p);
  Context ctx("u1", {.session_id = "chat-1"});
  for (int i = 0; i < 10; ++i) {
    h.pg->record("m", tokens(100'000, 0));  // $0.10 every 20 minutes
    h.clock.advance(absl::Minutes(20));
  }
  CHECK_THROWS_AS(h.pg->check("m"), LimitExceeded);  // one session of 200 minutes, $1.00
  auto rep = h.pg->report("u1");
  REQUIRE(rep->by_session.size() == 1);
  CHECK(rep->by_session[0].session_id == "chat-1");
  CHECK(rep->by_session[0].calls == 10);
}

}  // namespace paygent
