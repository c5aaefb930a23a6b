#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "paygent/paygent.h"
#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::tokens;
constexpr Nanos kDollar = kNanosPerUsd;

std::unique_ptr<Paygent> make(PlanConfig c, Options o = {}) {
  o.plans = std::move(c);
  if (o.local_store_path == "paygent.db") o.local_store_path = "";
  return *Paygent::create(std::move(o));
}

}  // namespace

TEST_CASE("guard.reservation.holds_then_settles_actual") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  auto pg = make(testing::config_with(p));
  Context ctx("u1");
  // 100 in + 200 out at 1,000 / 2,000 nano-USD per token = 500,000 nano-USD held.
  Reservation r = pg->reserve("m", {.prompt_tokens = 100, .max_output_tokens = 200});
  CHECK(r.active());
  CHECK(r.reserved_cost() == 500'000);
  auto rep = pg->report("u1");
  CHECK(rep->spend == 0);
  CHECK(rep->reserved == 500'000);
  CHECK(*rep->remaining == kDollar - 500'000);
  pg->settle(r, tokens(100, 50));  // actual: 100,000 + 100,000
  CHECK_FALSE(r.active());
  rep = pg->report("u1");
  CHECK(rep->spend == 200'000);
  CHECK(rep->reserved == 0);
  pg->settle(r, tokens(100, 50));  // settling twice does nothing
  CHECK(pg->report("u1")->spend == 200'000);
  CHECK(pg->stats().events == 1);
}

TEST_CASE("guard.reservation.estimate_that_would_cross_the_cap_is_refused") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  auto pg = make(testing::config_with(p));
  Context ctx("u1");
  pg->record("m", tokens(999'000, 0));  // $0.999 spent, $0.001 = 1,000,000 nano left
  // Exactly fits: 1,000 input tokens.
  Reservation fits = pg->reserve("m", {.prompt_tokens = 1000});
  CHECK(fits.result().status == GateStatus::kSoftGate);
  pg->release(fits);
  // One token more does not.
  try {
    (void)pg->reserve("m", {.prompt_tokens = 1001});
    FAIL("expected LimitExceeded");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().gate_reason() == "total_spend");
    CHECK(e.result().current_value == kDollar + 1000);
  }
  CHECK(pg->report("u1")->reserved == 0);  // nothing held by the refused call
}

TEST_CASE("guard.reservation.destroying_or_releasing_gives_it_back") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.model_limits["m"].max_tokens_per_period = 1000;
  auto pg = make(testing::config_with(p));
  Context ctx("u1");
  {
    Reservation r = pg->reserve("m", {.prompt_tokens = 600});
    CHECK(pg->report("u1")->reserved == 600'000);
    CHECK_THROWS_AS((void)pg->reserve("m", {.prompt_tokens = 600}), LimitExceeded);  // 1,200 tokens > 1,000
    Reservation moved = std::move(r);
    CHECK_FALSE(r.active());
    CHECK(moved.active());
  }
  CHECK(pg->report("u1")->reserved == 0);
  Reservation again = pg->reserve("m", {.prompt_tokens = 600});
  pg->release(again);
  CHECK(pg->report("u1")->reserved == 0);
  CHECK(pg->stats().events == 0);
}

TEST_CASE("guard.reservation.advice_on_max_tokens") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  auto pg = make(testing::config_with(p));
  CHECK_FALSE(pg->max_output_tokens_that_fit("m", 10).has_value());  // no Context
  Context ctx("u1");
  // $1 - 1,000 prompt tokens ($0.001) = $0.999 left, at 2,000 nano per output token.
  CHECK(pg->max_output_tokens_that_fit("m", 1000) == 499'500);
  Plan q = testing::round_plan();
  q.max_spend_per_period = kDollar;
  q.model_limits["m"].max_tokens_per_period = 10'000;
  REQUIRE(pg->set_plans(testing::config_with(q)).ok());
  CHECK(pg->max_output_tokens_that_fit("m", 1000) == 9'000);
  // The advice is exact: asking for it is admitted, one more is not.
  Reservation ok = pg->reserve("m", {.prompt_tokens = 1000, .max_output_tokens = 9'000});
  pg->release(ok);
  CHECK_THROWS_AS((void)pg->reserve("m", {.prompt_tokens = 1000, .max_output_tokens = 9'001}), LimitExceeded);
  CHECK(pg->max_output_tokens_that_fit("unpriced-model", 10) == std::nullopt);
}

// CallEstimate::fit_output: the reservation reads what fits itself and holds it (what
// paygent-proxy lowers max_tokens to).
TEST_CASE("guard.reservation.fit_output_holds_what_fits") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.model_limits["m"].max_tokens_per_period = 10'000;
  auto pg = make(testing::config_with(p));
  Context ctx("u1");
  REQUIRE(pg->max_output_tokens_that_fit("m", 1000) == 9'000);
  {  // none asked: what fits is held
    Reservation r = pg->reserve("m", {.prompt_tokens = 1000, .fit_output = true});
    CHECK(r.output_that_fits() == 9'000);
    CHECK(r.reserved_output_tokens() == 9'000);
    CHECK(r.reserved_tokens() == 10'000);
  }
  {  // more than fits: lowered
    Reservation r = pg->reserve("m", {.prompt_tokens = 1000, .max_output_tokens = 50'000, .fit_output = true});
    CHECK(r.reserved_output_tokens() == 9'000);
    CHECK_THROWS_AS((void)pg->reserve("m", {.prompt_tokens = 1}), LimitExceeded);  // it holds all the room
  }
  {  // less than fits: as asked, and what fitted is still said
    Reservation r = pg->reserve("m", {.prompt_tokens = 1000, .max_output_tokens = 300, .fit_output = true});
    CHECK(r.reserved_output_tokens() == 300);
    CHECK(r.output_that_fits() == 9'000);
    // A second call while the first holds 1,300 tokens gets what is left after it: 8,700 - 1,000.
    Reservation second = pg->reserve("m", {.prompt_tokens = 1000, .max_output_tokens = 9'000, .fit_output = true});
    CHECK(second.output_that_fits() == 7'700);
    CHECK(second.reserved_output_tokens() == 7'700);
    // Nothing left: refused, as a call that fits nothing must be.
    CHECK_THROWS_AS((void)pg->reserve("m", {.prompt_tokens = 1, .fit_output = true}), LimitExceeded);
  }
  // Without fit_output the estimate is held as given (a too large one refused), and nothing is said.
  CHECK_THROWS_AS((void)pg->reserve("m", {.prompt_tokens = 1000, .max_output_tokens = 9'001}), LimitExceeded);
  Reservation plain = pg->reserve("m", {.prompt_tokens = 1000, .max_output_tokens = 10});
  CHECK(plain.output_that_fits() == std::nullopt);
  CHECK(plain.reserved_output_tokens() == 10);
  // A model no limit bounds: as given.
  Reservation unpriced = pg->reserve("unpriced-model", {.prompt_tokens = 10, .max_output_tokens = 77, .fit_output = true});
  CHECK(unpriced.output_that_fits() == std::nullopt);
  CHECK(unpriced.reserved_output_tokens() == 77);
  // Moved, it says the same.
  pg->release(unpriced);
  Reservation fitted = pg->reserve("m", {.prompt_tokens = 10, .fit_output = true});
  REQUIRE(fitted.output_that_fits().has_value());
  const std::int64_t held = fitted.reserved_output_tokens();
  Reservation moved = std::move(fitted);
  CHECK(moved.output_that_fits() == held);
  CHECK(moved.reserved_output_tokens() == held);
  CHECK_FALSE(fitted.active());
}

// A call with no max_tokens can run to the model's own maximum output (the catalog's), so that is
// what it holds, not all its user could still afford: two such calls of one user run side by
// side. Below that maximum, what fits.
TEST_CASE("guard.reservation.fit_output_without_max_tokens_holds_the_models_maximum") {
  Plan p = testing::round_plan();  // gpt-4o at the plan's own rates
  p.max_spend_per_period = 100 * kDollar;
  Plan listed;  // gpt-4o at the catalog's
  listed.name = "listed";
  listed.max_spend_per_period = 100 * kDollar;
  PlanConfig config = testing::config_with(p);
  config.plans.push_back(listed);
  auto pg = make(std::move(config));
  CHECK(pg->max_output_tokens_of("gpt-4o") == 16'384);
  CHECK(pg->max_output_tokens_of("gpt-4o-2024-08-06") == 16'384);  // the canonical model's
  CHECK(pg->max_output_tokens_of("gpt-4o-2024-05-13") == 4'096);   // a snapshot listed apart
  CHECK(pg->max_output_tokens_of("m") == 0);
  REQUIRE(pg->assign_plan("u2", "listed").ok());
  for (const char* user : {"u1", "u2"}) {
    Context ctx(user);
    INFO(user);
    Reservation first = pg->reserve("gpt-4o", {.prompt_tokens = 1000, .fit_output = true});
    CHECK(first.reserved_output_tokens() == 16'384);
    REQUIRE(first.output_that_fits().has_value());
    CHECK(*first.output_that_fits() > 1'000'000);
    Reservation second = pg->reserve("gpt-4o", {.prompt_tokens = 1000, .fit_output = true});
    CHECK(second.reserved_output_tokens() == 16'384);
    Reservation dated = pg->reserve("gpt-4o-2024-05-13", {.prompt_tokens = 1000, .fit_output = true});
    CHECK(dated.reserved_output_tokens() == 4'096);
    // Asked: as asked (the provider judges a max_tokens above its maximum).
    Reservation asked = pg->reserve("gpt-4o", {.prompt_tokens = 1000, .max_output_tokens = 20'000, .fit_output = true});
    CHECK(asked.reserved_output_tokens() == 20'000);
    // Not in the catalog: what fits, as before.
    Reservation unknown = pg->reserve("m", {.prompt_tokens = 1000, .fit_output = true});
    CHECK(unknown.reserved_output_tokens() == *unknown.output_that_fits());
  }
  // No limit bounds the call (no budget): the model's maximum, the most it can produce.
  {
    auto open = make(testing::config_with(testing::round_plan("open")));
    Context ctx("u4");
    Reservation r = open->reserve("gpt-4o", {.prompt_tokens = 10, .fit_output = true});
    CHECK(r.output_that_fits() == std::nullopt);
    CHECK(r.reserved_output_tokens() == 16'384);
  }
  // A user who cannot afford the maximum: what fits.
  Plan small = testing::round_plan("small");
  small.max_spend_per_period = kDollar / 100;  // $0.01: 1,000 output tokens of gpt-4o at $10 / 1M
  auto tight = make(testing::config_with(small));
  Context ctx("u3");
  Reservation r = tight->reserve("gpt-4o", {.prompt_tokens = 0, .fit_output = true});
  CHECK(r.reserved_output_tokens() == 1'000);
  CHECK(r.output_that_fits() == 1'000);
}

// Calls that ask at the same instant: each is fitted to the room left when it is admitted, not when
// it looked. Two threads, over and over, each hold 3,000 output tokens after 10 of prompt and let
// them go, under a 5,000-token cap: the other one holds at most 3,010, so the room never falls
// under 1,990 and no call may be refused (it is lowered to 1,980 when the other holds). Before the
// second fit, a call that looked while the other held nothing and asked after it held was refused
// (about one call in 20 on 2 cores).
TEST_CASE("guard.reservation.fit_output_holds_what_is_left_under_concurrent_holds") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.model_limits["m"].max_tokens_per_period = 5'000;
  auto pg = make(testing::config_with(p));
  constexpr int kCalls = 20'000;
  std::atomic<int> ready{0}, refused{0}, lowered{0};
  auto caller = [&](unsigned seed) {
    Context ctx("racer");
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    // Holds and pauses of varied length, so that the two threads do not fall into step.
    auto spin = [&seed] {
      seed = seed * 1103515245u + 12345u;
      for (unsigned n = (seed >> 16) % 64; n > 0; --n) asm volatile("" ::: "memory");
    };
    for (int i = 0; i < kCalls; ++i) {
      spin();
      try {
        Reservation r = pg->reserve("m", {.prompt_tokens = 10, .max_output_tokens = 3'000, .fit_output = true});
        const std::int64_t out = r.reserved_output_tokens();
        if (out != 3'000) lowered.fetch_add(1);
        if (out < 1'980) refused.fetch_add(1000);  // held less than the room the other always leaves
        spin();
        pg->release(r);
      } catch (const LimitExceeded&) {
        refused.fetch_add(1);
      }
    }
  };
  // Until the two ran at the same time (the scheduler may run one after the other on one core).
  for (unsigned round = 0; round < 20 && lowered.load() == 0; ++round) {
    ready = 0;
    std::thread a(caller, 2 * round + 1), b(caller, 2 * round + 2);
    a.join();
    b.join();
  }
  MESSAGE("calls lowered to what was left: " << lowered.load() << " of " << 2 * kCalls << "; refused: " << refused.load());
  WARN_MESSAGE(lowered.load() > 0, "the two threads never ran at once: the race was not exercised");
  CHECK(refused.load() == 0);
  auto rep = pg->report("racer");
  REQUIRE(rep.ok());
  CHECK(rep->reserved == 0);
}

// A budget of dollars on a cheap model leaves room for more tokens than any call can ask: what
// fits is capped at 2^40 (as every estimate is), never wrapped past int64.
TEST_CASE("guard.reservation.output_that_fits_is_capped_not_wrapped") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = std::int64_t{4} << 60;  // ~$4.6 billion: 2.3e15 output tokens of "m"
  auto pg = make(testing::config_with(p));
  Context ctx("big");
  constexpr std::int64_t kCap = std::int64_t{1} << 40;
  CHECK(pg->max_output_tokens_that_fit("m", 1000) == kCap);
  Reservation r = pg->reserve("m", {.prompt_tokens = 1000, .fit_output = true});
  CHECK(r.output_that_fits() == kCap);
  CHECK(r.reserved_output_tokens() == kCap);
  CHECK(r.reserved_cost() > 0);
  CHECK(pg->report("big")->reserved == r.reserved_cost());
}

TEST_CASE("guard.reservation.metered_call_reserves_calls_and_settles") {
  Plan p = testing::round_plan();
  p.cost_rates["gpt-4o"] = CostRate{2'500'000, 10'000'000};
  auto pg = make(testing::config_with(p));
  Context ctx("u1");
  const std::string body = pg->metered_call("gpt-4o", {.prompt_tokens = 20, .max_output_tokens = 100}, [] {
    return std::string(R"({"object":"chat.completion","model":"gpt-4o-2024-08-06",)"
                       R"("usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}})");
  });
  CHECK(body.find("chat.completion") != std::string::npos);
  auto rep = pg->report("u1");
  CHECK(rep->spend == 19 * 2'500 + 10 * 10'000);
  CHECK(rep->reserved == 0);
  // A call returning Usage directly.
  const Usage u = pg->metered_call("m", {.prompt_tokens = 5}, [] { return tokens(5, 5); });
  CHECK(u.output_tokens == 5);
  CHECK(pg->report("u1")->spend == 19 * 2'500 + 10 * 10'000 + 15'000);
  // A call that throws: the application's exception comes through, nothing stays held.
  CHECK_THROWS_WITH(pg->metered_call("m", {.prompt_tokens = 5}, []() -> std::string { throw std::runtime_error("boom"); }),
                    "boom");
  CHECK(pg->report("u1")->reserved == 0);
  CHECK(pg->stats().events == 2);
}

TEST_CASE("guard.concurrency.racing_reservations_never_overshoot_the_cap") {
  // 8 threads race 10,000 reservations each at one user's $1 cap. Every admitted call is settled
  // with usage at or under its estimate, so settled spend must never pass the cap; every settled
  // event must be counted exactly once (callback, counters, report and local store agree).
  testing::TempStore store;
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  std::atomic<std::int64_t> usage_events{0};
  std::atomic<Nanos> usage_cost{0};
  Options o;
  o.local_store_path = store.path();
  o.on_usage = [&](const UsageEvent& e) {
    usage_events.fetch_add(1);
    usage_cost.fetch_add(e.cost);
  };
  auto pg = make(testing::config_with(p), std::move(o));
  constexpr int kThreads = 8;
  constexpr int kCalls = 10'000;
  std::atomic<std::int64_t> admitted{0}, refused{0};
  std::atomic<Nanos> max_seen{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Context ctx("racer");
      std::uint64_t x = 0x9E3779B97F4A7C15ULL * (t + 1);
      for (int i = 0; i < kCalls; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        try {
          Reservation r = pg->reserve("m", {.prompt_tokens = 100, .max_output_tokens = 100});  // 300,000 held
          admitted.fetch_add(1);
          pg->settle(r, tokens(50 + static_cast<std::int64_t>(x % 51), 50 + static_cast<std::int64_t>((x >> 8) % 51)));
          if (i % 64 != 0) continue;
          const Nanos s = pg->report("racer")->spend;
          Nanos m = max_seen.load();
          while (s > m && !max_seen.compare_exchange_weak(m, s)) {
          }
        } catch (const LimitExceeded&) {
          refused.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  auto rep = pg->report("racer");
  CHECK(admitted + refused == kThreads * kCalls);
  CHECK(refused > 0);
  CHECK(rep->spend <= kDollar);
  CHECK(max_seen.load() <= kDollar);
  CHECK(rep->reserved == 0);
  CHECK(rep->calls == admitted.load());
  CHECK(usage_events.load() == admitted.load());
  CHECK(usage_cost.load() == rep->spend);
  CHECK(pg->stats().events == admitted.load());
  // The cap was used, not left mostly idle: the last admitted call's estimate did not fit.
  CHECK(rep->spend > kDollar - 300'000 - 200'000 * 8);
  REQUIRE(pg->flush().ok());
  CHECK(pg->stats().stored_events == admitted.load());
}

TEST_CASE("guard.concurrency.distinct_users_and_plan_swaps") {
  // Threads on distinct and shared users while the plans are replaced under them.
  Plan p = testing::round_plan();
  p.max_spend_per_period = 50 * kDollar;
  p.model_limits["m"].max_tokens_per_period = 1'000'000'000;
  auto pg = make(testing::config_with(p));
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> settled{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5'000; ++i) {
        Context ctx(i % 2 == 0 ? "shared" : "user-" + std::to_string(t * 100 + i % 50),
                    {.session_id = i % 3 == 0 ? "s" + std::to_string(i % 7) : ""});
        Reservation r = pg->reserve("m", {.prompt_tokens = 10, .max_output_tokens = 10});
        pg->settle(r, tokens(10, 10));
        settled.fetch_add(1);
      }
    });
  }
  std::thread swapper([&] {
    for (int i = 0; !stop.load(); ++i) {
      Plan q = testing::round_plan();
      q.max_spend_per_period = (50 + i % 3) * kDollar;
      REQUIRE(pg->set_plans(testing::config_with(q)).ok());
      std::this_thread::yield();
    }
  });
  for (auto& th : threads) th.join();
  stop = true;
  swapper.join();
  CHECK(settled.load() == 20'000);
  CHECK(pg->stats().events == 20'000);
  CHECK(pg->report("shared")->calls == 10'000);
  CHECK(pg->report("shared")->spend == 10'000 * 30'000);
}

}  // namespace paygent

namespace paygent {

TEST_CASE("guard.reservation.settles_at_the_price_it_was_admitted_with") {
  Plan p = testing::round_plan();
  p.cost_rates["gpt-4o"] = CostRate{250, 1'000};  // a negotiated rate far below the catalog's
  auto pg = make(testing::config_with(p));
  Context ctx("u1");
  Reservation r = pg->reserve("gpt-4o", {.prompt_tokens = 1000});
  REQUIRE(pg->assign_plan("u1", "pro").ok());  // clears the user's plan cache mid-call
  pg->settle(r, tokens(1000, 0));
  CHECK(pg->report("u1")->spend == 1000 * 250 / 1000);
}

TEST_CASE("guard.reservation.a_success_without_usage_meters_the_estimate") {
  auto pg = make(testing::config_with(testing::round_plan()));
  Context ctx("u1");
  pg->metered_call("m", {.prompt_tokens = 10, .max_output_tokens = 20},
                   [] { return std::string(R"({"object":"chat.completion","model":"m","choices":[]})"); });
  CHECK(pg->report("u1")->spend == 10 * 1'000 + 20 * 2'000);
  CHECK(pg->stats().unreadable_responses == 1);
}

}  // namespace paygent
