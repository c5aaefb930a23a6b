// Engine::mark_soft_gate_fired: the cold-path entry point through which a fire seen elsewhere
// (later: the backend's reply for another process) stops this process from firing it again.
#include "guard/internal/engine.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using internal::CallSite;
using internal::Engine;
using internal::Verdicts;
using testing::FakeClock;
constexpr Nanos kDollar = kNanosPerUsd;

struct Rig {
  Rig(FakeClock& clock, const std::string& store_path) {
    Options o;
    o.local_store_path = store_path;
    o.clock = clock.fn();
    o.on_soft_gate = [this](const GuardResult& r) {
      fired.push_back(r.gate_reason() + "@" + std::to_string(r.threshold));
    };
    o.on_error = [this](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    engine = std::make_unique<Engine>(std::move(o));
    Plan p = testing::round_plan();
    p.max_spend_per_period = kDollar;
    p.max_spend_per_session = kDollar;
    p.model_limits["m"].max_tokens_per_period = 1'000'000;
    REQUIRE(engine->install_plans(testing::config_with(p, {500'000, 800'000})).ok());
    engine->open_store();
  }
  // Settles `tokens` input tokens of "m" ($0.000001 each) for the current Context, then checks.
  CallSite spend_and_check(std::int64_t tokens) {
    CallSite site;
    REQUIRE(engine->resolve("m", engine->now_ns(), site));
    Usage u;
    u.input_tokens = tokens;
    const Nanos cost = cost_of(u, *site.price);
    engine->apply(site.period, site.session, site.model, cost, cost, tokens, &u);
    Verdicts verdicts;
    engine->evaluate(site, 0, 0, verdicts);
    engine->fire_gate_callbacks(site, verdicts);
    return site;
  }
  std::vector<std::string> fired;
  std::vector<std::string> errors;
  std::unique_ptr<Engine> engine;
};

}  // namespace

TEST_CASE("guard.soft_gates.marked_elsewhere_does_not_fire_here") {
  testing::TempStore store;
  FakeClock clock;
  Rig rig(clock, store.path());
  Context ctx("u1", {.session_id = "chat-1"});
  CallSite site = rig.spend_and_check(100'000);  // 10% everywhere: the windows exist
  CHECK(rig.fired.empty());
  // Another process fired these for this period and session.
  rig.engine->mark_soft_gate_fired("u1", "total_spend", site.period->start_ns, 500'000);
  rig.engine->mark_soft_gate_fired("u1", "model_limit:m", site.period->start_ns, 500'000);
  rig.engine->mark_soft_gate_fired("u1", "session_spend:chat-1", site.session->start_ns, 500'000);
  // Stale or foreign marks change nothing: another period, another session, a threshold the
  // plan does not have.
  rig.engine->mark_soft_gate_fired("u1", "total_spend", site.period->start_ns - 1, 800'000);
  rig.engine->mark_soft_gate_fired("u1", "session_spend:chat-2", site.session->start_ns, 800'000);
  rig.engine->mark_soft_gate_fired("u1", "total_spend", site.period->start_ns, 700'000);
  rig.spend_and_check(500'000);  // 60%
  CHECK(rig.fired.empty());
  rig.spend_and_check(250'000);  // 85%: 0.8 was not marked
  CHECK(rig.fired == std::vector<std::string>{"total_spend@800000", "session_spend@800000", "model_limit:m@800000"});
  CHECK(rig.errors.empty());
}

TEST_CASE("guard.soft_gates.a_mark_for_a_user_not_seen_yet_is_kept_in_the_store") {
  testing::TempStore store;
  FakeClock clock;
  const std::int64_t november = absl::ToUnixNanos(testing::utc(2026, 11, 1));
  {
    Rig rig(clock, store.path());
    rig.engine->mark_soft_gate_fired("u2", "total_spend", november, 500'000);
  }
  Rig rig(clock, store.path());
  Context ctx("u2");
  rig.spend_and_check(600'000);
  CHECK(rig.fired == std::vector<std::string>{"session_spend@500000", "model_limit:m@500000"});
}

}  // namespace paygent
