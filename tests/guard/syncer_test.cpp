// The syncer against a scripted in-process backend on loopback: delivery, reconciliation without
// double counting, outages, garbage answers, the spool bound and strict mode.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <simdjson.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <sqlite3.h>

#include "paygent/paygent.h"
#include "sync/local_store.h"
#include "tests/guard/fake_backend.h"
#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::FakeClock;
using testing::tokens;
using testing::utc;
constexpr Nanos kDollar = kNanosPerUsd;

using testing::Client;
using testing::eventually;
using testing::FakeBackend;
using testing::free_port;

}  // namespace

TEST_CASE("sync.delivers_and_reconciles_without_double_counting") {
  FakeBackend backend;
  backend.seed_spend("u1", 2 * kDollar);  // spent through another application process
  FakeClock clock;
  Plan p = testing::round_plan();
  p.max_spend_per_period = 3 * kDollar + kDollar / 2;
  Client c(backend.port(), p, clock);
  Context ctx("u1");
  c.pg->record("m", tokens(1'000'000, 0));  // $1 here
  // The new period window asks the backend for the user's total: $2 elsewhere + $1 here.
  REQUIRE(eventually([&] { return c.pg->report("u1")->spend == 3 * kDollar; }));
  REQUIRE(c.pg->flush().ok());
  CHECK(backend.spend("u1") == 3 * kDollar);
  // The acknowledgement's total ($3) includes our $1: still $3, not $4.
  CHECK(c.pg->report("u1")->spend == 3 * kDollar);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(c.pg->flush().ok());
    CHECK(c.pg->report("u1")->spend == 3 * kDollar);
  }
  c.pg->record("m", tokens(500'000, 0));  // $0.50 not yet acknowledged
  CHECK(c.pg->report("u1")->spend == 3 * kDollar + kDollar / 2);
  CHECK_THROWS_AS(c.pg->check("m"), LimitExceeded);  // $3.50 of $3.50, counting the other process
  REQUIRE(c.pg->flush().ok());
  CHECK(c.pg->report("u1")->spend == 3 * kDollar + kDollar / 2);
  CHECK(backend.events() == 2);
  CHECK(backend.duplicates() == 0);
  CHECK(c.pg->stats().delivered_events == 2);
}

TEST_CASE("sync.reports_count_every_process_and_add_up") {
  FakeBackend backend;
  backend.seed_spend("u1", 2 * kDollar);  // one call of 2M "m" tokens through another process
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock);
  Context ctx("u1");
  c.pg->record("m", tokens(1'000'000, 0));  // $1 here
  REQUIRE(c.pg->flush().ok());
  REQUIRE(eventually([&] { return c.pg->report("u1")->spend == 3 * kDollar; }));
  for (int round = 0; round < 2; ++round) {  // before and after one more acknowledgement
    auto r = c.pg->report("u1");
    REQUIRE(r.ok());
    CHECK(r->calls == 2);
    REQUIRE(r->by_model.size() == 1);
    CHECK(r->by_model[0].calls == 2);
    CHECK(r->by_model[0].input_tokens == 3'000'000);
    CHECK(r->by_model[0].cost == r->spend);
    REQUIRE(c.pg->flush().ok());
  }
  c.pg->record("m", tokens(500'000, 0));  // not yet acknowledged: counted once, locally
  auto r = c.pg->report("u1");
  CHECK(r->calls == 3);
  CHECK(r->by_model[0].input_tokens == 3'500'000);
  CHECK(r->by_model[0].cost == r->spend);
  REQUIRE(c.pg->flush().ok());
  CHECK(c.pg->report("u1")->by_model[0].input_tokens == 3'500'000);
  CHECK(backend.events() == 2);
}

TEST_CASE("sync.backend_down_never_blocks_and_everything_arrives_later") {
  const int port = free_port();
  FakeClock clock;
  Client c(port, testing::round_plan(), clock);
  std::int64_t worst_ns = 0;
  {
    Context ctx("u1");
    for (int i = 0; i < 2000; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      Reservation r = c.pg->reserve("m", {.prompt_tokens = 10});
      c.pg->settle(r, tokens(10, 0));
      worst_ns = std::max<std::int64_t>(worst_ns, (std::chrono::steady_clock::now() - t0).count());
    }
  }
  // No call waited on the network: a wait would be a connection's timeout, seconds. 250 ms leaves
  // room for a thread descheduled on a loaded 2-core CI machine under ASan.
  CHECK(worst_ns < 250'000'000);
  CHECK(c.pg->flush(absl::Seconds(1)).code() != absl::StatusCode::kOk);
  {
    std::lock_guard<std::mutex> lock(c.mu);
    REQUIRE_FALSE(c.errors.empty());
    CHECK(c.errors[0].find("backend unreachable") != std::string::npos);
  }
  FakeBackend backend(port);  // the backend comes back
  REQUIRE(eventually([&] { return c.pg->flush(absl::Seconds(2)).ok(); }, 30));
  CHECK(backend.events() == 2000);
  CHECK(backend.spend("u1") == 2000 * 10'000);
  CHECK(backend.duplicates() == 0);
}

TEST_CASE("sync.garbage_and_errors_are_retried_and_counted_once") {
  FakeBackend backend;
  backend.set_mode(FakeBackend::Mode::kGarbage, 3);
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock);
  Context ctx("u1");
  for (int i = 0; i < 250; ++i) c.pg->record("m", tokens(1, 0));
  REQUIRE(eventually([&] { return c.pg->flush(absl::Seconds(2)).ok(); }, 30));
  backend.set_mode(FakeBackend::Mode::kError500, 2);
  for (int i = 0; i < 250; ++i) c.pg->record("m", tokens(1, 0));
  REQUIRE(eventually([&] { return c.pg->flush(absl::Seconds(2)).ok(); }, 30));
  CHECK(backend.events() == 500);
  CHECK(backend.spend("u1") == 500 * 1'000);
  CHECK(c.pg->report("u1")->spend == 500 * 1'000);
}

TEST_CASE("sync.slow_backend_does_not_slow_calls") {
  FakeBackend backend;
  backend.set_mode(FakeBackend::Mode::kSlow, 3);
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock);
  Context ctx("u1");
  std::int64_t worst_ns = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  std::int64_t calls = 0;
  while (std::chrono::steady_clock::now() < until) {  // while the backend sits on a request
    const auto t0 = std::chrono::steady_clock::now();
    c.pg->record("m", tokens(1, 0));
    worst_ns = std::max<std::int64_t>(worst_ns, (std::chrono::steady_clock::now() - t0).count());
    ++calls;
    std::this_thread::sleep_for(std::chrono::microseconds(200));  // a busy application, not a tight loop
  }
  CHECK(worst_ns < 250'000'000);  // the backend sits 2 s on each request; as above
  REQUIRE(eventually([&] { return c.pg->flush(absl::Seconds(5)).ok(); }, 30));
  CHECK(backend.events() == calls);
}

TEST_CASE("sync.spool_bound_drops_oldest_counted_and_reported") {
  const int port = free_port();
  FakeClock clock;
  std::atomic<std::int64_t> dropped{0};
  Client c(port, testing::round_plan(), clock, [&](Options& o) {
    o.max_spool_events = 100;
    o.on_events_dropped = [&](std::int64_t n) { dropped += n; };
  });
  Context ctx("u1");
  for (int i = 0; i < 250; ++i) c.pg->record("m", tokens(1, 0));
  REQUIRE(eventually([&] { return c.pg->stats().dropped_events == 150; }));
  CHECK(dropped.load() == 150);
  std::lock_guard<std::mutex> lock(c.mu);
  int said = 0;
  for (const auto& e : c.errors) said += e.find("spool is full") != std::string::npos;
  CHECK(said == 1);  // logged once, not per event
}

TEST_CASE("sync.strict_mode_fails_closed_while_the_backend_is_away") {
  const int port = free_port();
  FakeClock clock;
  Client c(port, testing::round_plan(), clock, [](Options& o) { o.strict_backend = true; });
  Context ctx("u1");
  c.pg->record("m", tokens(1, 0));
  REQUIRE(eventually([&] {
    try {
      c.pg->check("m");
      return false;
    } catch (const LimitExceeded& e) {
      return e.result().gate_reason() == "backend_unavailable";
    }
  }));
  FakeBackend backend(port);
  REQUIRE(eventually([&] { return c.pg->flush(absl::Seconds(2)).ok(); }, 30));
  CHECK(c.pg->check("m").status == GateStatus::kOk);
}

TEST_CASE("sync.usage_from_other_processes_arrives_without_a_batch") {
  FakeBackend backend;
  FakeClock clock;
  auto fast_refresh = [](Options& o) { o.refresh_interval = absl::Milliseconds(100); };
  Client a(backend.port(), testing::round_plan(), clock, fast_refresh);
  Client b(backend.port(), testing::round_plan(), clock, fast_refresh);
  Context ctx("u1");
  a.pg->check("m");  // A knows u1, with nothing spent
  REQUIRE(eventually([&] { return a.pg->report("u1")->spend == 0; }));
  b.pg->record("m", tokens(1'000'000, 0));  // $1 spent through B
  REQUIRE(b.pg->flush().ok());
  // A sends nothing, but its calls for u1 are refreshed once per round.
  CHECK(eventually([&] {
    a.pg->check("m");
    return a.pg->report("u1")->spend == kDollar;
  }));
  CHECK(backend.usage_queries() > 0);  // in batches, not one GET per user
  CHECK(backend.user_gets() == 0);
}

TEST_CASE("sync.the_backends_subscription_puts_every_process_on_one_plan_and_period") {
  // Subscribed at the backend to "team" from the 5th to the 5th; the library alone would put the
  // user on the default plan's calendar month. $2 were spent through another process.
  FakeBackend backend;
  backend.subscribe("u1", "team", utc(2026, 11, 5), utc(2026, 12, 5));
  backend.seed_spend("u1", 2 * kDollar);
  FakeClock clock;  // 2026-11-10 12:00
  PlanConfig plans = testing::config_with(testing::round_plan("pro"));
  Plan team = testing::round_plan("team");
  team.max_spend_per_period = 3 * kDollar;
  plans.plans.push_back(team);
  Client c(backend.port(), Plan{}, clock, [&](Options& o) {
    o.plans = plans;
    o.refresh_interval = absl::Milliseconds(100);
  });
  Context ctx("u1");
  CHECK(c.pg->check("m").ok());  // the default plan, unlimited, until the backend answers
  REQUIRE(eventually([&] {
    c.pg->check("m");
    auto r = c.pg->report("u1");
    return r.ok() && r->plan == "team" && r->period.start == utc(2026, 11, 5) && r->spend == 2 * kDollar;
  }));
  CHECK(c.pg->report("u1")->period.end == utc(2026, 12, 5));
  CHECK(c.pg->report("u1")->max_spend_per_period == 3 * kDollar);
  c.pg->record("m", tokens(1'000'000, 0));  // $1 here: $3 of $3 with the other process's $2
  CHECK_THROWS_AS(c.pg->check("m"), LimitExceeded);
  REQUIRE(c.pg->flush().ok());
  CHECK(backend.spend("u1") == 3 * kDollar);
  CHECK_THROWS_AS(c.pg->check("m"), LimitExceeded);  // counted once after the acknowledgement
  CHECK(c.pg->report("u1")->spend == 3 * kDollar);
}

TEST_CASE("sync.calls_in_flight_when_the_backend_moves_the_period_count_in_the_new_one") {
  // A reservation is held on the calendar-month window when the backend's subscription (5th to
  // 5th) replaces it: the hold moves over, and the settle lands in the window that gates.
  FakeBackend backend;
  backend.subscribe("u1", "pro", utc(2026, 11, 5), utc(2026, 12, 5));
  FakeClock clock;  // 2026-11-10 12:00
  Plan p = testing::round_plan("pro");
  p.max_spend_per_period = 100 * kDollar;
  p.model_limits["m"].max_tokens_per_period = 10'000'000;
  Client c(backend.port(), p, clock);
  Context ctx("u1");
  Reservation held = c.pg->reserve("m", {.prompt_tokens = 1'000'000});  // $1 held, on Nov 1 - Dec 1
  Reservation released = c.pg->reserve("m", {.prompt_tokens = 500'000});  // $0.50 held
  REQUIRE(eventually([&] {
    auto r = c.pg->report("u1");
    return r.ok() && r->period.start == utc(2026, 11, 5);
  }));
  CHECK(c.pg->report("u1")->reserved == kDollar + kDollar / 2);
  c.pg->release(released);
  c.pg->settle(held, tokens(800'000, 0));  // $0.80 spent
  auto r = c.pg->report("u1");
  CHECK(r->spend == 800'000'000);
  CHECK(r->reserved == 0);
  CHECK(r->calls == 1);
  REQUIRE(r->by_model.size() == 1);
  CHECK(r->by_model[0].input_tokens == 800'000);
  // The token quota saw the same: 800K used, so 9.2M more fit and 9.3M do not.
  CHECK(c.pg->check("m", {.prompt_tokens = 9'200'000}).status == GateStatus::kSoftGate);  // exactly 100%
  try {
    c.pg->check("m", {.prompt_tokens = 9'300'000});
    FAIL("the model quota should gate");
  } catch (const LimitExceeded& e) {
    CHECK(e.result().gate_reason() == "model_limit:m");
  }
  REQUIRE(c.pg->flush().ok());
  CHECK(backend.spend("u1") == 800'000'000);
  CHECK(c.pg->report("u1")->spend == 800'000'000);
}

TEST_CASE("sync.changed_plans_ride_back_on_ingest_replies") {
  // Refreshed every hour only; a plan change still applies at the next delivered batch.
  FakeBackend backend;
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock,
           [](Options& o) { o.refresh_interval = absl::Hours(1); });
  Context ctx("u1");
  c.pg->record("m", tokens(1'000'000, 0));  // $1
  REQUIRE(c.pg->flush().ok());
  REQUIRE(eventually([&] { return backend.plan_reads() >= 1; }));  // the first pass reads them
  CHECK(c.pg->check("m").ok());  // the local plan has no cap
  backend.set_plans(R"({"soft_gate_at": 0.8, "hard_gate_at": 1.0, "default_plan": "pro",
    "plans": [{"name": "pro", "max_spend_per_period": 1.5, "cost_rates": {"m": {"input": 0.001, "output": 0.002}}}]})");
  const std::int64_t reads = backend.plan_reads();
  c.pg->record("m", tokens(100'000, 0));  // $0.10; its reply carries the new plans_version
  REQUIRE(c.pg->flush().ok());
  REQUIRE(eventually([&] { return backend.plan_reads() > reads; }));
  CHECK(eventually([&] { return c.pg->plans()->find("pro")->max_spend_per_period == kDollar * 3 / 2; }));
  c.pg->record("m", tokens(400'000, 0));  // $1.50 of $1.50
  CHECK_THROWS_AS(c.pg->check("m"), LimitExceeded);
  // An unchanged version is not re-read.
  REQUIRE(c.pg->flush().ok());
  const std::int64_t after = backend.plan_reads();
  c.pg->record("m", tokens(1, 0));
  REQUIRE(c.pg->flush().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(backend.plan_reads() == after);
}

TEST_CASE("sync.clean_shutdown_delivers_what_is_queued") {
  FakeBackend backend;
  FakeClock clock;
  for (int round = 0; round < 5; ++round) {
    Client c(backend.port(), testing::round_plan(), clock, [](Options& o) {
      o.flush_interval = absl::Seconds(60);  // only the shutdown can deliver
      o.shutdown_deadline = absl::Seconds(5);
    });
    Context ctx("u1");
    for (int i = 0; i < 5; ++i) c.pg->record("m", tokens(1, 0));
    c.pg.reset();  // destroyed: must deliver
    CHECK(backend.events() == 5 * (round + 1));
  }
}

TEST_CASE("sync.a_refused_event_is_set_aside_and_the_rest_delivered") {
  FakeBackend backend;
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock);
  {
    Context ctx("u1");
    for (int i = 0; i < 10; ++i) c.pg->record("m", tokens(1, 0));
  }
  {
    Context ctx("poison");
    c.pg->record("m", tokens(1, 0));
  }
  {
    Context ctx("u1");
    for (int i = 0; i < 10; ++i) c.pg->record("m", tokens(1, 0));
  }
  REQUIRE(eventually([&] { return c.pg->flush(absl::Seconds(2)).ok(); }, 30));
  CHECK(backend.events() == 20);
  CHECK(c.pg->stats().rejected_events == 1);
  std::lock_guard<std::mutex> lock(c.mu);
  bool said = false;
  for (const auto& e : c.errors) said = said || e.find("refused event") != std::string::npos;
  CHECK(said);
}

TEST_CASE("sync.a_failing_backend_is_retried_with_backoff_not_hammered") {
  FakeBackend backend;
  backend.set_mode(FakeBackend::Mode::kError500);  // fails every time
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock, [](Options& o) { o.batch_size = 10; });
  Context ctx("u1");
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < until) {  // steady traffic: a batch fills every few ms
    c.pg->record("m", tokens(1, 0));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Backoff from 100 ms doubling (with jitter): a handful of attempts in 3 s, not one per batch.
  CHECK(backend.batch_requests() <= 10);
  CHECK(backend.batch_requests() >= 2);
}

// An event of `user` with the given kind, as an older or newer build may have left in the spool.
internal::EventRecord spooled_event(std::uint64_t n, std::string user, internal::UsageKind kind) {
  internal::EventRecord e;
  char id[40];
  std::snprintf(id, sizeof id, "%016llx%016llx", 0xfeedULL, static_cast<unsigned long long>(n));
  e.id = id;
  e.user_id = std::move(user);
  e.session_id = "s1";
  e.model = "m";
  e.provider = "openai";
  e.input_tokens = 1000;
  e.cost_nanos = 1000;
  e.ts_ns = absl::ToUnixNanos(utc(2026, 11, 17));
  e.kind = kind;
  return e;
}

// The current library against a paygentd of wire version 1, which refuses the fields it does not
// know: the events it can read are delivered; those that need version 2 (a kind other than llm)
// are kept, never marked rejected, and delivered once the backend is upgraded, each counted once.
TEST_CASE("sync.an_older_backend_keeps_newer_events_until_it_is_upgraded") {
  FakeBackend backend;
  backend.set_wire_version(1);
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock, [](Options& o) {
    // Left in the spool: an stt event between llm ones, so that the first batch mixes them.
    auto store = internal::LocalStore::open(o.local_store_path);
    REQUIRE(store.ok());
    REQUIRE((*store)
                ->append({spooled_event(1, "u1", internal::UsageKind::kLlm),
                          spooled_event(2, "u1", internal::UsageKind::kStt),
                          spooled_event(3, "u1", internal::UsageKind::kLlm)})
                .ok());
  });
  {
    Context ctx("u1");
    for (int i = 0; i < 5; ++i) c.pg->record("m", tokens(1, 0));
  }
  REQUIRE(eventually([&] { return backend.events() == 7; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a few more rounds: nothing else goes
  CHECK(backend.events() == 7);
  CHECK(backend.stt_events() == 0);
  CHECK(c.pg->stats().rejected_events == 0);
  // Not everything was delivered: a flush says so.
  const absl::Status flushed = c.pg->flush(absl::Seconds(2));
  CHECK(!flushed.ok());
  CHECK(std::string(flushed.message()).find("newer backend") != std::string::npos);
  {
    std::lock_guard<std::mutex> lock(c.mu);
    bool said = false;
    for (const auto& e : c.errors) said = said || e.find("older than this library") != std::string::npos;
    CHECK(said);
  }

  backend.set_wire_version(2);  // upgraded: its next reply says so
  {
    Context ctx("u1");
    c.pg->record("m", tokens(1, 0));
  }
  REQUIRE(eventually([&] { return backend.events() == 9 && c.pg->flush(absl::Seconds(2)).ok(); }));
  CHECK(backend.stt_events() == 1);
  CHECK(backend.duplicates() == 0);
  CHECK(c.pg->stats().rejected_events == 0);
  REQUIRE(c.pg->flush().ok());
  CHECK(backend.events() == 9);
}

// A spool file written by the first release (schema version 1: no kind column) is upgraded on
// open, and its unsent events are delivered.
TEST_CASE("sync.a_spool_of_the_previous_release_is_upgraded_and_delivered") {
  FakeBackend backend;
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock, [](Options& o) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(o.local_store_path.c_str(), &db) == SQLITE_OK);
    // The schema of release 1 (sync/local_store.cpp), verbatim, and two events it stored: one
    // acknowledged, one not yet sent.
    const char* sql = R"sql(
CREATE TABLE IF NOT EXISTS paygent_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO paygent_meta(key, value) VALUES ('schema_version', '1');
CREATE TABLE IF NOT EXISTS events(
  id TEXT NOT NULL UNIQUE,
  user_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cached_input_tokens INTEGER NOT NULL,
  cache_creation_input_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  ts_ns INTEGER NOT NULL,
  meta_tags TEXT NOT NULL,
  estimated INTEGER NOT NULL,
  acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events(user_id, ts_ns);
CREATE INDEX IF NOT EXISTS events_unacked ON events(acked);
INSERT INTO events VALUES('000000000000000000000000000000a1', 'old', 's', '', '', 'm', 'openai',
  1000, 0, 0, 0, 0, 7000, 1763380000000000000, '{"team":"a"}', 0, 1);
INSERT INTO events VALUES('000000000000000000000000000000a2', 'old', 's', '', '', 'm', 'openai',
  1000, 0, 0, 0, 0, 5000, 1763380000000000000, '{"team":"a"}', 0, 0);
)sql";
    REQUIRE(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  });
  REQUIRE(eventually([&] { return backend.events() == 1; }));
  CHECK(backend.spend("old") == 5000);
  {
    Context ctx("u1");
    c.pg->record("m", tokens(1, 0));  // the upgraded store takes new events too
  }
  REQUIRE(c.pg->flush().ok());
  CHECK(backend.events() == 2);
  CHECK(c.pg->stats().rejected_events == 0);
  c.pg.reset();
  auto store = internal::LocalStore::open(c.store.path());
  REQUIRE(store.ok());
  CHECK(*(*store)->count() == 3);
  CHECK(*(*store)->unacked_count() == 0);
}

// Soft gates across processes (docs/wire.md, "Soft gates"): what this process fired reaches the
// backend once; what the backend reports is not fired here; an older backend that ignores them
// does not make the syncer lose them or send them in a loop.
TEST_CASE("sync.soft_gates_reach_the_backend_once_and_come_back_from_it") {
  FakeBackend backend;
  backend.set_wire_version(3);
  FakeClock clock;
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  std::vector<std::string> fired;
  std::mutex mu;
  const std::int64_t november = absl::ToUnixNanos(utc(2026, 11, 1));
  // Another process fired 50% this period.
  backend.seed_soft_gate("u1", "total_spend", november, 500'000);
  Client c(backend.port(), p, clock, [&](Options& o) {
    o.leases = false;  // this backend has none: it would be said once through on_error
    o.plans.soft_gate_at = {500'000, 800'000};
    o.on_soft_gate = [&](const GuardResult& r) {
      std::lock_guard<std::mutex> lock(mu);
      fired.push_back(r.gate_reason() + "@" + std::to_string(r.threshold));
    };
  });
  {
    Context ctx("u1");
    c.pg->record("m", tokens(10'000, 0));  // 1%: the user's window, and a batch whose reply reports 50%
  }
  REQUIRE(c.pg->flush().ok());
  {
    Context ctx("u1");
    c.pg->record("m", tokens(840'000, 0));  // 85%
    CHECK(c.pg->check("m").status == GateStatus::kSoftGate);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(fired == std::vector<std::string>{"total_spend@800000"});  // 50%: fired elsewhere
  }
  REQUIRE(c.pg->flush().ok());
  const std::string ours = "u1|total_spend|" + std::to_string(november) + "|800000";
  CHECK(eventually([&] { return backend.soft_gates_stored().count(ours) == 1; }));
  // Sent once: acknowledged, never again (more batches follow).
  const std::int64_t received = backend.soft_gates_received();
  CHECK(received == 1);
  for (int i = 0; i < 3; ++i) {
    Context ctx("u1");
    c.pg->record("m", tokens(1'000, 0));
    REQUIRE(c.pg->flush().ok());
  }
  CHECK(backend.soft_gates_received() == received);
  CHECK(c.errors.empty());
}

TEST_CASE("sync.an_older_backend_keeps_soft_gates_unsent_until_it_is_upgraded") {
  FakeBackend backend;  // version 2: ignores "soft_gates"
  FakeClock clock;
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  Client c(backend.port(), p, clock);
  {
    Context ctx("u1");
    c.pg->record("m", tokens(850'000, 0));
    CHECK(c.pg->check("m").status == GateStatus::kSoftGate);  // fires 80%
  }
  REQUIRE(c.pg->flush().ok());
  // Sent at most once: only while the backend's version is not known yet (before its first reply).
  const std::int64_t first = backend.soft_gates_received();
  CHECK(first <= 1);
  for (int i = 0; i < 3; ++i) {
    Context ctx("u1");
    c.pg->record("m", tokens(1'000, 0));
    REQUIRE(c.pg->flush().ok());
  }
  CHECK(backend.soft_gates_received() == first);  // not resent to a backend that ignores it
  CHECK(backend.soft_gates_stored().empty());
  // Upgraded: once a reply says so, the kept soft gate is sent (alone: no events wait) and stored.
  backend.set_wire_version(3);
  {
    Context ctx("u1");
    c.pg->record("m", tokens(1'000, 0));
  }
  REQUIRE(c.pg->flush().ok());
  CHECK(eventually([&] { return backend.soft_gates_stored().size() == 1; }));
  CHECK(backend.soft_gates_received() == first + 1);
}

// An llm event of a model with no price carries cost_unknown (wire version 4), a note the backend
// counts nothing by: a paygentd of version 3 gets the event without it, at once, instead of the
// event being held for a newer backend (its tokens and call would be missing from the backend's
// totals meanwhile). The first batch, written for version 4, is refused; the next is not.
TEST_CASE("sync.an_older_backend_gets_an_unpriced_llm_event_without_its_cost_unknown") {
  FakeBackend backend;
  backend.set_wire_version(3);
  FakeClock clock;
  Client c(backend.port(), testing::round_plan(), clock);
  {
    Context ctx("u1");
    c.pg->record("mystery-model-9000", tokens(10, 10));
    c.pg->record("m", tokens(10, 0));
  }
  REQUIRE(c.pg->flush(absl::Seconds(5)).ok());  // nothing held
  CHECK(backend.events() == 2);
  CHECK(c.pg->stats().rejected_events == 0);
  CHECK(c.pg->stats().unknown_models == 1);
  std::lock_guard<std::mutex> lock(c.mu);
  for (const auto& e : c.errors) CHECK_MESSAGE(e.find("older than this library") == std::string::npos, e);
}

// A session limit's threshold reported by the backend: a named session's id is the same in every
// process, so another process's fire counts here; an implicit session ("auto-<start ms>") is this
// process's own.
TEST_CASE("sync.a_named_sessions_soft_gates_are_shared_an_implicit_ones_are_not") {
  FakeBackend backend;
  backend.set_wire_version(3);
  FakeClock clock;
  Plan p = testing::round_plan();
  p.max_spend_per_session = kDollar;
  // Another process's chat-1 began a minute before this one's (within one session timeout).
  const std::int64_t other_start = absl::ToUnixNanos(clock.now() - absl::Minutes(1));
  backend.seed_soft_gate("u1", "session_spend:chat-1", other_start, 800'000);
  backend.seed_soft_gate("u1", "session_spend:auto-1", other_start, 800'000);
  std::vector<std::string> fired;
  std::mutex mu;
  Client c(backend.port(), p, clock, [&](Options& o) {
    o.on_soft_gate = [&](const GuardResult& r) {
      std::lock_guard<std::mutex> lock(mu);
      fired.push_back(r.gate_reason() + "@" + std::to_string(r.threshold));
    };
  });
  {
    Context ctx("u1", {.session_id = "chat-1"});
    c.pg->record("m", tokens(1'000, 0));
  }
  {
    Context ctx("u1");
    c.pg->record("m", tokens(1'000, 0));
  }
  REQUIRE(c.pg->flush().ok());  // the reply reports both
  {
    Context ctx("u1", {.session_id = "chat-1"});
    c.pg->record("m", tokens(850'000, 0));
    CHECK(c.pg->check("m").status == GateStatus::kSoftGate);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(fired.empty());  // fired by the other process's chat-1
  }
  {
    Context ctx("u1");
    c.pg->record("m", tokens(850'000, 0));
    CHECK(c.pg->check("m").status == GateStatus::kSoftGate);
  }
  std::lock_guard<std::mutex> lock(mu);
  CHECK(fired == std::vector<std::string>{"session_spend@800000"});  // this process's implicit session
}

}  // namespace paygent

namespace paygent::testing {
namespace {

TEST_CASE("sync.a_backend_url_with_a_path_is_refused_naming_it") {
  // paygentd's paths are absolute: a path in backend_url would be dropped, sending elsewhere. Said
  // through on_error; fail-open, the Paygent works local-only.
  const std::pair<const char*, const char*> cases[] = {
      {"http://127.0.0.1:9/paygent", "backend_url: \"http://127.0.0.1:9/paygent\" has a path (/paygent)"},
      {"http://127.0.0.1:9?x=1", "backend_url: \"http://127.0.0.1:9?x=1\" has a path (?x=1)"},
      {"https://127.0.0.1:9", "must start with http://"},
      {"http://127.0.0.1:9/", ""},  // a lone trailing slash is the host itself
  };
  for (const auto& [url, message] : cases) {
    INFO(url);
    std::vector<std::string> errors;
    std::mutex mu;
    Options o;
    o.plans = config_with(round_plan());
    o.api_key = "k";
    o.backend_url = url;
    o.shutdown_deadline = absl::ZeroDuration();
    o.on_error = [&](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      errors.emplace_back(s.message());
    };
    auto created = Paygent::create(std::move(o));
    REQUIRE_MESSAGE(created.ok(), created.status().ToString());
    std::lock_guard<std::mutex> lock(mu);
    bool said = false;
    for (const std::string& e : errors) said = said || (*message != '\0' && e.find(message) != std::string::npos);
    CHECK_MESSAGE(said == (*message != '\0'), (errors.empty() ? std::string("(no error)") : errors.front()));
  }
}

}  // namespace
}  // namespace paygent::testing
