#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include <sqlite3.h>

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

// A local store that keeps failing (here: another connection holds its write lock, so each
// commit waits out SQLite's busy timeout and fails): the events wait in memory and are retried at
// every commit; past max_unstored_events the oldest are dropped, counted and reported; once the
// store works again the rest are stored, each once.
TEST_CASE("guard.store.failing_store_keeps_events_then_stores_them_and_drops_the_oldest_past_its_bound") {
  testing::TempStore store;
  FakeClock clock;
  std::mutex mu;
  std::vector<std::string> errors;
  std::atomic<std::int64_t> dropped{0};
  Options o;
  o.plans = testing::config_with(testing::round_plan());
  o.local_store_path = store.path();
  o.clock = clock.fn();
  o.max_unstored_events = 10;
  o.on_error = [&](const absl::Status& s) {
    std::lock_guard lock(mu);
    errors.push_back(std::string(s.message()));
  };
  o.on_events_dropped = [&](std::int64_t n) { dropped += n; };
  auto pg = *Paygent::create(std::move(o));
  Context ctx("u1");
  pg->record("m", tokens(1, 0));
  REQUIRE(pg->flush().ok());
  REQUIRE(pg->stats().stored_events == 1);

  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(store.path().c_str(), &other) == SQLITE_OK);
  sqlite3_busy_timeout(other, 10000);  // should the store be writing at this moment
  REQUIRE(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
  for (int i = 0; i < 25; ++i) pg->record("m", tokens(100 + i, 0));
  auto wait_for = [](const std::function<bool()>& done) {
    for (int i = 0; i < 600 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return done();
  };
  REQUIRE(wait_for([&] { return pg->stats().dropped_events == 15; }));
  CHECK(dropped.load() == 15);
  CHECK(pg->stats().stored_events == 1);
  {
    std::lock_guard lock(mu);
    int locked = 0, said_dropped = 0;
    for (const std::string& e : errors) {
      locked += e.find("locked") != std::string::npos;
      said_dropped += e.find("local store failing: dropped the ") != std::string::npos;
    }
    CHECK(locked >= 1);
    CHECK(said_dropped >= 1);
  }
  REQUIRE(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_close(other) == SQLITE_OK);
  REQUIRE(wait_for([&] { return pg->stats().stored_events == 11; }));
  REQUIRE(pg->flush().ok());
  CHECK(pg->stats().stored_events == 11);
  CHECK(pg->stats().dropped_events == 15);
  // The ten newest were kept, each once, beside the first.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(store.path().c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT input_tokens FROM events ORDER BY input_tokens", -1, &q, nullptr) == SQLITE_OK);
  std::vector<std::int64_t> kept;
  while (sqlite3_step(q) == SQLITE_ROW) kept.push_back(sqlite3_column_int64(q, 0));
  sqlite3_finalize(q);
  sqlite3_close(db);
  std::vector<std::int64_t> expected = {1};
  for (int i = 15; i < 25; ++i) expected.push_back(100 + i);
  CHECK(kept == expected);
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
