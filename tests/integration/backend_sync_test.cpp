// Application processes (`paygent loadgen`, the library with a backend) against the real paygentd
// on loopback: totals compared with ground truth through crashes and outages of either side.
#include <doctest/doctest.h>
#include <simdjson.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/cli_process.h"
#include "integration/ledger.h"
#include "paygent/paygent.h"
#include "support/paygentd_process.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";

struct BackendTotals {
  std::int64_t calls = 0;
  std::map<std::string, std::int64_t> cost_by_user;
};

// Every event the backend holds for the product, grouped by user.
BackendTotals backend_totals(int port, const std::string& key) {
  BackendTotals out;
  for (const auto& [user, t] : backend_users(port, key, "")) {
    out.cost_by_user[user] = t.cost_nanos;
    out.calls += t.calls;
  }
  return out;
}

}  // namespace

TEST_CASE("integration.three_application_processes_sum_exactly") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");
  std::vector<std::unique_ptr<CliProcess>> apps;
  for (int i = 0; i < 3; ++i) {
    apps.push_back(std::make_unique<CliProcess>(loadgen_args(paygentd->base_url(), key,
                                                             dir.path() + "/app" + std::to_string(i) + ".db",
                                                             "p" + std::to_string(i) + "-", 4, 3000)));
  }
  std::map<std::string, std::int64_t> expected;
  std::int64_t expected_calls = 0;
  for (auto& app : apps) {
    const Truth t = read_truth(*app, 4);
    CHECK(t.failures == 0);
    expected_calls += t.calls;
    for (const auto& [u, c] : t.cost_by_user) expected[u] += c;
    CHECK(app->line().rfind("delivered all", 0) == 0);
    CHECK(app->wait() == 0);
  }
  const BackendTotals got = backend_totals(paygentd->port(), key);
  CHECK(expected_calls == 9000);
  CHECK(got.calls == expected_calls);
  CHECK(got.cost_by_user == expected);
}

TEST_CASE("integration.paygentd_killed_mid_ingest_loses_nothing_counts_nothing_twice") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  const int port = paygentd->port();
  std::string key;
  {
    HttpClient http(port);
    key = create_product(http, kAdmin, "acme");
  }
  // Small batches, paced calls: ingest is in full swing when the backend dies.
  auto args = loadgen_args(paygentd->base_url(), key, dir.path() + "/app.db", "", 5, 20000);
  args.insert(args.end(), {"--batch-size", "20", "--pace-us", "100"});
  CliProcess app(args);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  paygentd->kill_hard();  // kill -9 in the middle of ingest
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto restarted = PaygentdProcess::start({.data_dir = dir.path() + "/server",
                                           .admin_token = kAdmin,
                                           .extra_args = {"--listen", "127.0.0.1:" + std::to_string(port)}});
  REQUIRE(restarted->port() == port);
  const Truth t = read_truth(app, 5);
  CHECK(t.failures == 0);
  const std::string last = app.line();
  CHECK_MESSAGE(last.rfind("delivered all", 0) == 0, last);
  CHECK(app.wait() == 0);
  const BackendTotals got = backend_totals(port, key);
  CHECK(got.calls == 20000);
  CHECK(got.cost_by_user == t.cost_by_user);
}

TEST_CASE("integration.backend_down_under_load_blocks_nothing_then_everything_arrives") {
  TempDir dir;
  // Learn a free port from a paygentd we stop at once: the backend is down while the app works.
  auto first = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  const int port = first->port();
  std::string key;
  {
    HttpClient http(port);
    key = create_product(http, kAdmin, "acme");
  }
  REQUIRE(first->terminate() == 0);
  CliProcess app(loadgen_args("http://127.0.0.1:" + std::to_string(port), key, dir.path() + "/app.db", "", 3, 20000));
  const Truth t = read_truth(app, 3);
  CHECK(t.failures == 0);     // not one call blocked or failed during the outage
  CHECK(t.calls == 20000);
  // Gate latency stays in the benchmark's range (hundreds of ns), far from a network wait. The
  // benchmark's range is an optimised build's: under ASan+UBSan (Debug, scripts/test.sh) the same
  // calls take ~10x longer (measured p50 9 us, p99 0.35 ms), so there only the order of
  // magnitude is checked.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
  constexpr std::int64_t kP50Ns = 100'000, kP99Ns = 20'000'000;
#else
  constexpr std::int64_t kP50Ns = 5'000, kP99Ns = 100'000;
#endif
  CHECK(t.gate_p50_ns < kP50Ns);
  CHECK(t.gate_p99_ns < kP99Ns);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto back = PaygentdProcess::start({.data_dir = dir.path() + "/server",
                                      .admin_token = kAdmin,
                                      .extra_args = {"--listen", "127.0.0.1:" + std::to_string(port)}});
  const std::string last = app.line();
  CHECK_MESSAGE(last.rfind("delivered all", 0) == 0, last);
  CHECK(app.wait() == 0);
  const BackendTotals got = backend_totals(port, key);
  CHECK(got.calls == 20000);
  CHECK(got.cost_by_user == t.cost_by_user);
}

TEST_CASE("integration.application_killed_its_spool_is_delivered_on_restart") {
  // The loss window of an application crash is the local store's group commit (20 ms by default):
  // events committed to the spool survive kill -9 and are delivered by the next process.
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");
  // The application cannot reach the backend before it dies, so its spool holds everything.
  auto args = loadgen_args("http://127.0.0.1:1", key, dir.path() + "/app.db", "", 3, 5000);
  args.push_back("--hang");
  CliProcess app(args);
  const Truth t = read_truth(app, 3);
  // Once the spool has committed every call (20 ms after the last one, unloaded; longer under a
  // sanitizer on a busy machine: a fixed 200 ms once lost a third of them there).
  const std::string spooled = app.line();
  CHECK_MESSAGE(spooled == "spooled events=5000", spooled);
  app.kill_hard();  // kill -9 of the application
  CHECK(backend_totals(paygentd->port(), key).calls == 0);
  CliProcess sync({"sync", "--backend", paygentd->base_url(), "--api-key", key, "--store", dir.path() + "/app.db",
                   "--deliver-seconds", "60"});
  CHECK(sync.line().rfind("delivered all", 0) == 0);
  CHECK(sync.wait() == 0);
  const BackendTotals got = backend_totals(paygentd->port(), key);
  CHECK(got.calls == 5000);
  CHECK(got.cost_by_user == t.cost_by_user);
}

namespace {

// What loadgen's first `n` calls are, per user (the same arithmetic as tools/loadgen.cpp).
std::map<std::string, UserTotals> loadgen_prefix(const std::string& prefix, int users, std::int64_t n) {
  const ModelPrice& price = *PriceCatalog::builtin().find("gpt-4o-mini");
  std::map<std::string, UserTotals> out;
  for (std::int64_t i = 0; i < n; ++i) {
    const Usage usage{.input_tokens = 100 + i % 50, .output_tokens = 50 + i % 30};
    UserTotals& t = out[prefix + "user-" + std::to_string(i % users)];
    ++t.calls;
    t.input_tokens += usage.input_tokens;
    t.output_tokens += usage.output_tokens;
    t.cost_nanos += cost_of(usage, price);
  }
  return out;
}

std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// kill -9 of an application WHILE it records at a steady pace. The local store's group commit
// (Options::local_commit_interval, default 20 ms) is the only durability boundary: what was
// committed to the spool survives and is delivered by the next process (`paygent sync`), what was
// still queued in memory is lost. Ground truth comes from loadgen's per-call progress lines
// (PAYGENT_LOADGEN_PROGRESS=1: the call count and a CLOCK_MONOTONIC timestamp after each call, so
// the test knows how many calls were recorded before the kill, and when each one was).
//
// Checked per kill, against that truth:
//  - the backend holds exactly the spool's events, each once (the loadgen delivered part of them
//    before it died; had it died between the backend's ack and marking the batch acked, the
//    sync re-sends that batch and the backend must count it once), and they are exactly
//    loadgen's first D calls (the spool is a prefix of what was recorded: the lost are the newest);
//  - lost = recorded - delivered is at most the calls recorded in the last 20 ms + kSlackNs
//    before the kill, i.e. pace rate x (commit window + slack).
//
// The slack: an event is durable once the commit that took it from the queue has finished. The
// writer takes the queue, commits (one SQLite transaction, WAL append without fsync at
// synchronous=NORMAL; a WAL checkpoint now and then; it may also wait for the store's mutex while
// the syncer reads the outbox or marks acks), and only then waits the 20 ms for the next round.
// So the oldest event at risk is at most 20 ms + two commit durations + the writer's wake-up
// delay old. Commits of ~10-40 rows take well under 1 ms; on this shared 2-core machine a thread
// can wait a few ms for a core, rarely more, hence 30 ms of slack: the bound checked is "lost <=
// the calls recorded in the last 50 ms before the kill" (pace rate x 50 ms).
//
// Measured on the 2-core machine, pace 500 us (~1,200-1,600 calls/s, so rate x 20 ms = 24-32
// calls), 72 kills with 2 and 3 copies of this test at once: 3 to 31 calls lost, the oldest
// lost call recorded at most 19.95 ms before the kill: the loss never exceeded the 20 ms commit
// window itself. Each run prints its figures (MESSAGE lines). Under ASan+UBSan (Debug, 2 copies
// at once, 30 kills) commits are slower: the oldest lost call was up to 31 ms old, so the slack
// there is 80 ms.
TEST_CASE("integration.application_killed_while_recording_loses_at_most_the_commit_window") {
  constexpr std::int64_t kCommitWindowNs = 20'000'000;  // Options::local_commit_interval default
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
  constexpr std::int64_t kSlackNs = 80'000'000;  // instrumented Debug build: slower commits, see above
#else
  constexpr std::int64_t kSlackNs = 30'000'000;  // commit durations + scheduling, see above
#endif
  constexpr int kUsers = 3;
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  std::string key;
  {
    HttpClient http(paygentd->port());
    key = create_product(http, kAdmin, "acme");
  }
  // Three kills at different moments, each of its own application (store, users).
  for (const std::int64_t kill_after : {1200, 1700, 2300}) {
    const std::string prefix = "k" + std::to_string(kill_after) + "-";
    const std::string store = dir.path() + "/app-" + std::to_string(kill_after) + ".db";
    CAPTURE(prefix);
    // The backend is up: the application delivers batches while it records (every 400 ms), so
    // the spool holds acked and unacked events when it dies; `paygent sync` delivers the rest.
    auto args = loadgen_args(paygentd->base_url(), key, store, prefix, kUsers, 100'000'000);
    args.insert(args.end(), {"--pace-us", "500", "--flush-interval-ms", "400", "--batch-size", "1000", "--no-flush"});
    CliProcess app(args, {"PAYGENT_LOADGEN_PROGRESS=1"});
    std::vector<std::int64_t> t_ns = {0};  // t_ns[n]: just after call n was recorded (1-based)
    auto take = [&](const std::string& l) {
      if (l.rfind("progress ", 0) != 0 || field(l, "failures") != 0 ||
          field(l, "calls") != static_cast<std::int64_t>(t_ns.size())) {
        return false;
      }
      t_ns.push_back(field(l, "t_ns"));
      return true;
    };
    while (static_cast<std::int64_t>(t_ns.size()) <= kill_after) {
      if (const std::string l = app.line(); !take(l)) FAIL("loadgen said: " << l);
    }
    const std::int64_t kill_ns = steady_now_ns();
    app.kill_hard();  // kill -9 in the middle of recording
    for (std::string l = app.line(); !l.empty(); l = app.line()) {
      if (!take(l)) FAIL("loadgen said: " << l);
    }
    // Calls 1..recorded were recorded before the kill; call recorded + 1 may have been too (it
    // can have settled without having printed its line).
    const std::int64_t recorded = static_cast<std::int64_t>(t_ns.size()) - 1;

    CliProcess sync({"sync", "--backend", paygentd->base_url(), "--api-key", key, "--store", store,
                     "--deliver-seconds", "60"});
    const std::string said = sync.line();
    CHECK_MESSAGE(said.rfind("delivered all", 0) == 0, said);
    CHECK(sync.wait() == 0);
    const std::int64_t by_sync = field(said, "events");  // the rest was delivered before the kill

    const std::map<std::string, UserTotals> got = backend_users(paygentd->port(), key, prefix);
    std::int64_t delivered = 0;
    for (const auto& [u, t] : got) delivered += t.calls;
    // Every spooled event is in the backend, once.
    const std::int64_t spooled = sqlite_int(store, "SELECT COUNT(*) FROM events");
    CHECK(sqlite_int(store, "SELECT COUNT(*) FROM events WHERE acked != 1") == 0);
    CHECK(delivered == spooled);
    CHECK(delivered <= recorded + 1);
    CHECK(delivered > 0);
    // ... and they are exactly the first `delivered` calls (no duplicate, no hole).
    CHECK_MESSAGE(got == loadgen_prefix(prefix, kUsers, delivered), "backend: " << got);

    const std::int64_t lost = std::max<std::int64_t>(0, recorded - delivered);
    const std::int64_t in_window = static_cast<std::int64_t>(
        t_ns.end() - std::lower_bound(t_ns.begin() + 1, t_ns.end(), kill_ns - (kCommitWindowNs + kSlackNs)));
    const std::int64_t last_second = static_cast<std::int64_t>(
        t_ns.end() - std::lower_bound(t_ns.begin() + 1, t_ns.end(), kill_ns - 1'000'000'000));
    const double oldest_lost_age_ms = lost > 0 ? (kill_ns - t_ns[static_cast<std::size_t>(delivered) + 1]) / 1e6 : 0.0;
    std::int64_t duplicates = -1;  // re-sent events the backend acknowledged without counting them
    {
      HttpClient http(paygentd->port());
      const auto metrics = http.request("GET", "/metrics");
      REQUIRE(metrics);
      const auto at = metrics->body.find("\npaygentd_events_duplicate_total ");
      if (at != std::string::npos) duplicates = std::stoll(metrics->body.substr(at + 33));
    }
    MESSAGE("kill -9 after " << recorded << " calls: delivered " << delivered << " (" << by_sync
                             << " of them by paygent sync), lost " << lost
                             << " (oldest lost recorded " << oldest_lost_age_ms << " ms before the kill); rate "
                             << last_second << " calls/s, rate x 20 ms = " << last_second * kCommitWindowNs / 1e9
                             << ", allowed (20 ms + " << kSlackNs / 1'000'000 << " ms slack) = " << in_window
                             << "; duplicates re-sent so far: " << duplicates);
    CHECK(lost <= in_window);
  }
}

TEST_CASE("integration.bad_api_key_is_refused_and_nothing_is_stored") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");
  CliProcess app({"loadgen", "--backend", paygentd->base_url(), "--api-key", "pg_live_wrong", "--store",
                  dir.path() + "/app.db", "--calls", "100", "--deliver-seconds", "2"});
  const Truth t = read_truth(app, 5);
  CHECK(t.failures == 0);  // fail-open: the application's calls still ran
  CHECK(app.line().rfind("delivered partial", 0) == 0);
  CHECK(app.wait() == 1);
  CHECK(backend_totals(paygentd->port(), key).calls == 0);
}

}  // namespace paygent::testing
