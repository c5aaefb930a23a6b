#include <doctest/doctest.h>

#include <fstream>
#include <thread>

#include "paygent/paygent.h"
#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::FakeClock;
using testing::tokens;
using testing::utc;
constexpr Nanos kDollar = kNanosPerUsd;

std::unique_ptr<Paygent> open_at(const std::string& path, FakeClock& clock, Plan p,
                                 std::vector<std::string>* errors = nullptr) {
  Options o;
  o.plans = testing::config_with(std::move(p));
  o.local_store_path = path;
  o.clock = clock.fn();
  if (errors != nullptr) o.on_error = [errors](const absl::Status& s) { errors->push_back(std::string(s.message())); };
  return *Paygent::create(std::move(o));
}

}  // namespace

TEST_CASE("guard.store.restart_keeps_spend_models_and_sessions") {
  testing::TempStore store;
  FakeClock clock;
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.max_spend_per_session = kDollar / 2;
  p.model_limits["gpt-4o"].max_tokens_per_period = 10'000;
  {
    auto pg = open_at(store.path(), clock, p);
    Context ctx("u1", {.session_id = "chat-1", .meta_tags = {{"k", "v\"quoted\""}}});
    pg->record("m", tokens(300'000, 0));          // $0.30
    pg->record("gpt-4o", tokens(4'000, 1'000));   // 5,000 gpt-4o tokens: $0.02
    Context other("u2");
    pg->record("m", tokens(1'000, 0));
  }  // destroyed: queued events are committed
  clock.advance(absl::Minutes(5));
  auto pg = open_at(store.path(), clock, p);
  // Not seen by this process yet, but reported from the store, sessions included.
  auto before_any_call = pg->report("u1");
  REQUIRE(before_any_call.ok());
  CHECK(before_any_call->spend == 320'000'000);
  CHECK(before_any_call->calls == 2);
  REQUIRE(before_any_call->by_session.size() == 1);
  CHECK(before_any_call->by_session[0].session_id == "chat-1");
  CHECK(before_any_call->by_session[0].cost == 320'000'000);
  CHECK(before_any_call->by_session[0].calls == 2);
  CHECK(pg->report("nobody").status().code() == absl::StatusCode::kNotFound);
  Context ctx("u1", {.session_id = "chat-1"});
  const GuardResult r = pg->check("gpt-4o", {.prompt_tokens = 4'000});
  CHECK(r.status == GateStatus::kSoftGate);  // 9,000 of 10,000 tokens
  CHECK(r.gate_reason() == "model_limit:gpt-4o");
  auto rep = pg->report("u1");
  CHECK(rep->spend == 320'000'000);
  CHECK(rep->calls == 2);
  REQUIRE(rep->by_model.size() == 2);
  CHECK(rep->by_model[0].model == "m");
  CHECK(rep->by_model[1].input_tokens == 4'000);
  // The session resumed: $0.32 of $0.50, so a $0.20 call no longer fits.
  CHECK_THROWS_AS((void)pg->reserve("m", {.prompt_tokens = 200'000}), LimitExceeded);
  REQUIRE(pg->flush().ok());
  CHECK(pg->stats().stored_events == 0);
}

TEST_CASE("guard.store.events_are_stored_exactly_once") {
  testing::TempStore store;
  FakeClock clock;
  {
    auto pg = open_at(store.path(), clock, testing::round_plan());
    Context ctx("u1");
    for (int i = 0; i < 1000; ++i) pg->record("m", tokens(1, 1));
    REQUIRE(pg->flush().ok());
    CHECK(pg->stats().stored_events == 1000);
    REQUIRE(pg->flush().ok());  // flushing again writes nothing twice
    CHECK(pg->stats().stored_events == 1000);
  }
  auto pg = open_at(store.path(), clock, testing::round_plan());
  Context ctx("u1");
  pg->check("m");
  CHECK(pg->report("u1")->calls == 1000);
  CHECK(pg->report("u1")->spend == 1000 * 3'000);
}

TEST_CASE("guard.store.corrupt_store_fails_open_to_memory") {
  testing::TempStore store;
  {
    std::ofstream garbage(store.path(), std::ios::binary);
    garbage << std::string(8192, '\x7f') << "this is not a SQLite database";
  }
  FakeClock clock;
  std::vector<std::string> errors;
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  auto pg = open_at(store.path(), clock, p, &errors);
  REQUIRE_FALSE(errors.empty());
  CHECK(errors[0].find("local store") != std::string::npos);
  Context ctx("u1");
  pg->record("m", tokens(1'000'000, 0));
  CHECK_THROWS_AS(pg->check("m"), LimitExceeded);  // gating still works, in memory
  CHECK(pg->flush().code() == absl::StatusCode::kUnavailable);
  CHECK(pg->stats().errors >= 1);
}

TEST_CASE("guard.store.unwritable_path_fails_open") {
  FakeClock clock;
  std::vector<std::string> errors;
  auto pg = open_at("/nonexistent-dir/paygent.db", clock, testing::round_plan(), &errors);
  CHECK_FALSE(errors.empty());
  Context ctx("u1");
  CHECK_NOTHROW(pg->record("m", tokens(1, 1)));
  CHECK(pg->report("u1")->calls == 1);
}

}  // namespace paygent
