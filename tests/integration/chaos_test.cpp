// N application processes (`paygent capload`) spending on ONE user at a $0.30 cap, through two
// paygentd replicas on one real PostgreSQL (issue 9): the total the backend ends up with must stay
// within the cap plus the bound of docs/leases.md, for N = 1, 2, 4; and through a kill -9 of a
// replica, a restart of PostgreSQL and a kill -9 of an application (its store delivered afterwards
// with `paygent sync`), the backend's ledger must equal, per user, what the processes admitted:
// every event once.
//
// Each run is made twice: with budget leases (the library's default) and with --no-leases (how
// Paygent behaves today). The bound is asserted on the leases runs;
// today's figure is printed beside it and never asserted. The ledger checks hold in both.
//
//   build/tests/integration_tests --test-case='integration.chaos*'
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "integration/cli_process.h"
#include "integration/ledger.h"
#include "paygent/money.h"
#include "support/paygentd_process.h"
#ifdef PAYGENT_WITH_POSTGRES
#include "support/postgres_process.h"
#endif

namespace paygent::testing {
namespace {

// THE BOUND (docs/leases.md, "Outage"): what each process may admit past the cap while it cannot
// reach the backend, as a share of the cap, in parts per million (Options::lease_outage_share's
// default, 0.10). A run with no outage may end at the cap and not a call past it (the estimates
// here are exact: no estimate error); the chaos run, whose processes lose the backend while
// PostgreSQL restarts, at cap + N x share x cap. Tune it with the option's default.
// Outside the spec's bound: events a killed process had not delivered, once its lease expired
// (one TTL, 10 s) and the others were granted that headroom, arrive later (`paygent sync`) on top.
// Here the others give up at the gate (30 gates 100 ms apart) well before the victim's TTL ends.
constexpr std::int64_t kOutageSharePpm = 100'000;

constexpr const char* kAdmin = "chaos-admin";
constexpr Nanos kCap = 300'000'000;       // $0.30 ...
constexpr Nanos kCallCost = 7'500'000;    // ... at $0.0075 a call (tools/capload.cpp): 40 calls
constexpr const char* kCapUsd = "0.30";
// The same plan capload gates with locally, so that the backend sums the same window.
constexpr const char* kPlans =
    R"({"soft_gate_at": 0.8, "hard_gate_at": 1.0, "default_plan": "capload",)"
    R"( "plans": [{"name": "capload", "max_spend_per_period": 0.30}]})";

Nanos allowed_spend(int processes, bool outage) {
  return kCap + (outage ? processes * (kCap * kOutageSharePpm / 1'000'000) : 0);
}

std::string usd(Nanos n) { return format_usd(n, 4); }

// N `paygent capload --progress` processes, each read by a thread of its own, so that the test
// can act when the processes together have admitted so many calls, and kill one of them.
class Fleet {
 public:
  explicit Fleet(const std::vector<std::vector<std::string>>& args) : apps_(args.size()) {
    for (std::size_t i = 0; i < args.size(); ++i) {
      apps_[i].process = std::make_unique<CliProcess>(args[i]);
      readers_.emplace_back([this, i] { read(i); });
    }
  }
  ~Fleet() {
    for (App& a : apps_) {
      if (a.process && !a.killed && !a.reaped) a.process->kill_hard();
    }
    for (std::thread& t : readers_) t.join();
  }
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // The calls the processes have said they admitted (and stored) so far.
  std::int64_t admitted() {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t sum = 0;
    for (const App& a : apps_) sum += a.admitted;
    return sum;
  }
  std::int64_t admitted(std::size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return apps_[i].admitted;
  }
  bool running(std::size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return !apps_[i].ended;
  }
  int running() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(std::count_if(apps_.begin(), apps_.end(), [](const App& a) { return !a.ended; }));
  }

  // Waits until the processes have admitted `calls` calls together, or all have ended, for at most
  // `timeout`. Returns how many they have admitted.
  std::int64_t wait_for_admitted(std::int64_t calls, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    auto sum = [&] {
      std::int64_t s = 0;
      for (const App& a : apps_) s += a.admitted;
      return s;
    };
    changed_.wait_for(lock, timeout, [&] { return sum() >= calls || all_ended(); });
    return sum();
  }

  // kill -9 of process `i`.
  void kill(std::size_t i) {
    apps_[i].process->kill_hard();
    std::lock_guard<std::mutex> lock(mu_);
    apps_[i].killed = true;
  }

  // Waits (up to `timeout`; past it the rest are killed) until every process has ended; returns
  // each one's last line ("capload user=..." for those that ended by themselves) and checks that
  // those exited 0.
  std::vector<std::string> finish(std::chrono::seconds timeout) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool ended = changed_.wait_for(lock, timeout, [&] { return all_ended(); });
      CHECK_MESSAGE(ended, "capload processes still running after " << timeout.count() << " s: killed");
      if (!ended) {
        for (App& a : apps_) {
          if (!a.ended && !a.killed) a.process->kill_hard();  // its reader then sees the output end
        }
        changed_.wait(lock, [&] { return all_ended(); });
      }
    }
    std::vector<std::string> lines;
    for (App& a : apps_) {
      if (a.killed) {
        lines.emplace_back();
        continue;
      }
      std::string last;
      {
        std::lock_guard<std::mutex> lock(mu_);
        last = a.last_line;
      }
      const int status = a.process->wait();  // the output ended: the process is exiting
      a.reaped = true;
      CHECK_MESSAGE(status == 0, "capload exited " << status << ": " << last);
      lines.push_back(last);
    }
    return lines;
  }

 private:
  struct App {
    std::unique_ptr<CliProcess> process;
    std::int64_t admitted = 0;
    std::string last_line;
    bool ended = false;   // its output has ended
    bool killed = false;  // by kill()
    bool reaped = false;
  };

  bool all_ended() const {  // with mu_ held
    return std::all_of(apps_.begin(), apps_.end(), [](const App& a) { return a.ended; });
  }

  void read(std::size_t i) {
    for (;;) {
      const std::string l = apps_[i].process->line(std::chrono::seconds(90));
      std::lock_guard<std::mutex> lock(mu_);
      if (l.empty()) {
        apps_[i].ended = true;
        changed_.notify_all();
        return;
      }
      if (l.rfind("admitted n=", 0) == 0) apps_[i].admitted = field(l, "n");
      apps_[i].last_line = l;
      changed_.notify_all();
    }
  }

  std::vector<App> apps_;
  std::vector<std::thread> readers_;
  std::mutex mu_;
  std::condition_variable changed_;
};

// What one capload process says it admitted, from its last line.
struct Admitted {
  std::int64_t calls = 0;
  Nanos spend = 0;
};

Admitted read_final_line(const std::string& line) {
  REQUIRE_MESSAGE(line.rfind("capload user=", 0) == 0, "capload said: " << line);
  CHECK_MESSAGE(field(line, "failures") == 0, line);
  CHECK_MESSAGE(line.find(" delivered=all ") != std::string::npos, line);
  // The cap stopped it (gated hard again and again), not its time budget.
  CHECK_MESSAGE(line.find(" stopped=gated ") != std::string::npos, line);
  const Admitted a{field(line, "admitted"), field(line, "spend_nanos")};
  CHECK(a.spend == a.calls * kCallCost);
  return a;
}

#ifdef PAYGENT_WITH_POSTGRES

// Two paygentd replicas on one PostgreSQL database.
struct Replicas {
  std::unique_ptr<PaygentdProcess> one, two;
  static Replicas start(const std::string& conninfo) {
    auto start = [&] {
      return PaygentdProcess::start({.admin_token = kAdmin, .extra_args = {"--database", conninfo}});
    };
    Replicas r;
    r.one = start();
    r.two = start();
    return r;
  }
  // Process i's backends: one replica first, the other as its failover; alternate processes
  // start on alternate replicas.
  std::vector<std::string> backends_for(std::size_t i) const {
    std::vector<std::string> flags = {"--backend", one->base_url(), "--backend", two->base_url()};
    if (i % 2 == 1) std::swap(flags[1], flags[3]);
    return flags;
  }
};

// capload's flags for process `i` of a run on `user`.
std::vector<std::string> capload_args(const Replicas& r, std::size_t i, const std::string& key, const std::string& dir,
                                      const std::string& user, bool leases, std::vector<std::string> extra) {
  std::vector<std::string> args = {"capload", "--api-key", key, "--store",
                                   dir + "/" + user + "-" + std::to_string(i) + ".db", "--user", user,
                                   "--cap-usd", kCapUsd, "--progress", "--deliver-seconds", "30"};
  const std::vector<std::string> backends = r.backends_for(i);
  args.insert(args.end(), backends.begin(), backends.end());
  if (!leases) args.push_back("--no-leases");
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string setup_product(const Replicas& r) {
  HttpClient http(r.one->port());
  const std::string key = create_product(http, kAdmin, "chaos");
  const auto reply = http.request("POST", "/api/v1/config/plans", kPlans, key);
  REQUIRE(reply.has_value());
  REQUIRE_MESSAGE(reply->status == 200, reply->body);
  return key;
}

// Checks the bound on one run's total: asserted with leases; today's
// figure (--no-leases) only printed.
void check_bound(bool leases, Nanos total, Nanos allowed, const std::string& run) {
  if (!leases) return;
  CHECK_MESSAGE(total <= allowed, run << ": " << usd(total) << " admitted, allowed " << usd(allowed));
}

// The events a replica acknowledged without counting them again (already in the ledger).
std::int64_t duplicates_counted_once(const PaygentdProcess& replica) {
  HttpClient http(replica.port());
  const auto metrics = http.request("GET", "/metrics");
  REQUIRE(metrics.has_value());
  const std::string name = "\npaygentd_events_duplicate_total ";
  const std::size_t at = metrics->body.find(name);
  return at == std::string::npos ? 0 : std::stoll(metrics->body.substr(at + name.size()));
}

std::unique_ptr<PostgresProcess> start_postgres_or_skip() {
  if (std::string why = postgres_unavailable(); !why.empty()) {
    std::printf("%s%s\n", kPostgresSkippedLine, why.c_str());
    return nullptr;
  }
  return PostgresProcess::start();
}

#endif  // PAYGENT_WITH_POSTGRES

}  // namespace

// The harness itself, on one SQLite paygentd (no PostgreSQL needed): a process whose first
// backend is down goes on through the second and stops exactly at the cap; bad flags are refused
// naming the flag.
TEST_CASE("integration.capload_fails_over_stops_at_the_cap_and_names_bad_flags") {
  TempDir dir("paygent-capload");
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "capload");
  CliProcess app({"capload", "--backend", "http://127.0.0.1:1", "--backend", paygentd->base_url(), "--api-key", key,
                  "--store", dir.path() + "/app.db", "--user", "u1", "--cap-usd", kCapUsd, "--flush-interval-ms",
                  "50", "--gated-in-a-row", "3"});
  const std::string line = app.line(std::chrono::seconds(60));
  const Admitted a = read_final_line(line);
  CHECK(app.wait() == 0);
  CHECK(a.spend == kCap);
  CHECK(a.calls == kCap / kCallCost);
  CHECK_MESSAGE(field(line, "hard_gates") == 3, line);
  CHECK_MESSAGE(line.find(" gate_reasons=total_spend:3 ") != std::string::npos, line);
  CHECK_MESSAGE(field(line, "failovers") == 1, line);
  const auto ledger = backend_users(paygentd->port(), key, "");
  CHECK(ledger == (std::map<std::string, UserTotals>{{"u1", {a.calls, a.calls * 1000, a.calls * 500, a.spend}}}));

  for (const auto& [flag, value, says] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--cap-usd", "0.3x", "--cap-usd: "},
           {"--pace-ms", "-1", "--pace-ms: \"-1\" is not a whole number >= 0"},
           {"--gated-in-a-row", "0", "--gated-in-a-row: \"0\" is not a whole number >= 1"},
           {"--backend", "localhost:8080", "--backend: \"localhost:8080\" must start with http://"},
           {"--colour", "red", "unknown flag --colour"}}) {
    CAPTURE(flag);
    std::vector<std::string> args = {"capload", "--backend", paygentd->base_url(), "--backend", paygentd->base_url(),
                                     "--api-key", key, "--store", dir.path() + "/bad.db", "--user", "u2",
                                     "--cap-usd", kCapUsd};
    args.insert(args.end(), {flag, value});
    CliProcess bad(args, {}, /*with_stderr=*/true);
    std::string out;
    CHECK(bad.read_to_end(out, std::chrono::seconds(30)));
    CHECK(bad.wait() == 2);
    CHECK_MESSAGE(out.find(says) != std::string::npos, out);
  }
  CliProcess missing({"capload", "--backend", paygentd->base_url(), "--api-key", key, "--store", dir.path() + "/m.db",
                      "--cap-usd", kCapUsd},
                     {}, true);
  std::string out;
  CHECK(missing.read_to_end(out, std::chrono::seconds(30)));
  CHECK(missing.wait() == 2);
  CHECK_MESSAGE(out.find("--user: required") != std::string::npos, out);
}

TEST_CASE("integration.chaos_n_processes_on_one_user_stay_within_the_cap") {
#ifndef PAYGENT_WITH_POSTGRES
  std::printf("%sthis build has no PostgreSQL support (PAYGENT_WITH_POSTGRES=OFF)\n", kPostgresSkippedLine);
#else
  auto pg = start_postgres_or_skip();
  if (!pg) return;
  TempDir dir("paygent-chaos");
  const Replicas replicas = Replicas::start(pg->conninfo());
  const std::string key = setup_product(replicas);
  std::map<std::string, UserTotals> expected;  // per user: what the processes admitted
  std::ostringstream table;
  for (const int n : {1, 2, 4}) {
    Nanos total[2] = {0, 0};  // [0]: --no-leases (today), [1]: leases
    for (const bool leases : {false, true}) {
      const std::string user = std::string(leases ? "leases" : "today") + "-n" + std::to_string(n);
      CAPTURE(user);
      std::vector<std::vector<std::string>> args;
      for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
        args.push_back(capload_args(replicas, i, key, dir.path(), user, leases,
                                    {"--pace-ms", "5", "--seconds", "20"}));
      }
      Fleet fleet(args);
      UserTotals& truth = expected[user];
      for (const std::string& line : fleet.finish(std::chrono::seconds(60))) {
        const Admitted a = read_final_line(line);
        truth.calls += a.calls;
        truth.input_tokens += a.calls * 1000;
        truth.output_tokens += a.calls * 500;
        truth.cost_nanos += a.spend;
      }
      // The ledger holds exactly what the processes admitted: every event once.
      const auto ledger = backend_users(replicas.two->port(), key, user);
      CHECK_MESSAGE(ledger.size() == 1, ledger);
      if (!ledger.empty()) {
        CHECK_MESSAGE(ledger.begin()->second == truth, "ledger " << ledger << "; admitted " << truth.calls);
      }
      total[leases ? 1 : 0] = truth.cost_nanos;
      if (n == 1) CHECK(truth.cost_nanos == kCap);  // one process alone stops exactly at the cap
      check_bound(leases, truth.cost_nanos, allowed_spend(n, false), user);
    }
    table << "\n  N=" << n << ": leases " << usd(total[1]) << " (allowed " << usd(allowed_spend(n, false))
          << ") | today (--no-leases) " << usd(total[0]);
  }
  CHECK(backend_users(replicas.one->port(), key, "") == expected);  // per user, through either replica
  MESSAGE("one user, cap " << usd(kCap) << ", " << usd(kCallCost) << " a call, two paygentd replicas on one "
                           << "PostgreSQL, library defaults:" << table.str());
#endif
}

TEST_CASE("integration.chaos_replica_killed_postgres_restarted_application_killed") {
#ifndef PAYGENT_WITH_POSTGRES
  std::printf("%sthis build has no PostgreSQL support (PAYGENT_WITH_POSTGRES=OFF)\n", kPostgresSkippedLine);
#else
  constexpr int kProcesses = 4;
  constexpr std::size_t kVictim = 3;  // the application killed; its store is delivered by `paygent sync`
  constexpr auto kStepTimeout = std::chrono::seconds(15);
  auto pg = start_postgres_or_skip();
  if (!pg) return;
  TempDir dir("paygent-chaos");
  std::ostringstream table;
  for (const bool leases : {false, true}) {
    const std::string user = std::string(leases ? "leases" : "today") + "-chaos";
    CAPTURE(user);
    // A fresh pair of replicas for each run (the first dies in it), one database for all.
    Replicas replicas = Replicas::start(pg->conninfo());
    const std::string key = setup_product(replicas);
    // Paced calls, and patience at the gate (30 gates 100 ms apart) that outlasts PostgreSQL's
    // restart: the processes are still spending when each blow falls. They deliver every 100 ms,
    // so that batches are in flight when the replica and the database go down; the victim at the
    // library's default (5 s), so that its store still holds undelivered events when it dies.
    std::vector<std::vector<std::string>> args;
    for (std::size_t i = 0; i < kProcesses; ++i) {
      std::vector<std::string> extra = {"--pace-ms", "50", "--gated-in-a-row", "30", "--gate-pause-ms", "100",
                                        "--seconds", "30"};
      if (i != kVictim) extra.insert(extra.end(), {"--flush-interval-ms", "100"});
      args.push_back(capload_args(replicas, i, key, dir.path(), user, leases, extra));
    }
    Fleet fleet(args);
    constexpr std::int64_t kCapCalls = kCap / kCallCost;

    // 1. At a quarter of the cap: kill -9 of the replica processes 0 and 2 use first.
    std::int64_t at = fleet.wait_for_admitted(kCapCalls / 4, kStepTimeout);
    CHECK_MESSAGE(fleet.running() == kProcesses, "a process ended before the replica was killed (" << at << " calls)");
    replicas.one->kill_hard();
    // 2. At half of it: PostgreSQL restarts (fast shutdown, start, crash-free recovery).
    at = fleet.wait_for_admitted(kCapCalls / 2, kStepTimeout);
    CHECK_MESSAGE(fleet.running() == kProcesses, "a process ended before PostgreSQL restarted (" << at << " calls)");
    pg->restart();
    // 3. At three quarters: kill -9 of one application, in the middle of its calls.
    at = fleet.wait_for_admitted(kCapCalls * 3 / 4, kStepTimeout);
    REQUIRE_MESSAGE(fleet.running(kVictim), "process " << kVictim << " ended before it could be killed");
    fleet.kill(kVictim);
    const std::int64_t victim_said = fleet.admitted(kVictim);
    const std::vector<std::string> lines = fleet.finish(std::chrono::seconds(60));

    UserTotals truth;
    std::int64_t outages_seen = 0;
    for (std::size_t i = 0; i < kProcesses; ++i) {
      if (i == kVictim) continue;
      const Admitted a = read_final_line(lines[i]);
      truth.calls += a.calls;
      truth.cost_nanos += a.spend;
      outages_seen += field(lines[i], "errors");
      // Processes 0 and 2 started on the killed replica and went on through the other.
      if (i % 2 == 0) CHECK_MESSAGE(field(lines[i], "failovers") >= 1, lines[i]);
    }
    // How many outages the processes reported is printed, not checked: the forwarder fails a new
    // connection over before a batch sees the dead replica, and a fast PostgreSQL restart can fall
    // between two flushes, so a run may see none (it did, once in CI-like load).
    // The victim's store goes to the surviving replica: everything it stored, which is at least
    // every call it had said it admitted (a progress line comes once the call is in the store).
    const std::string store = dir.path() + "/" + user + "-" + std::to_string(kVictim) + ".db";
    CliProcess sync({"sync", "--backend", replicas.two->base_url(), "--api-key", key, "--store", store,
                     "--deliver-seconds", "30"});
    const std::string said = sync.line(std::chrono::seconds(60));
    CHECK_MESSAGE(said.rfind("delivered all", 0) == 0, said);
    CHECK(sync.wait() == 0);
    CHECK_MESSAGE(field(said, "events") > 0, "the victim had delivered everything before it died: " << said);
    const std::int64_t spooled = sqlite_int(store, "SELECT COUNT(*) FROM events");
    CHECK(sqlite_int(store, "SELECT COUNT(*) FROM events WHERE acked != 1") == 0);
    CHECK(sqlite_int(store, "SELECT COALESCE(SUM(cost_nanos), 0) FROM events") == spooled * kCallCost);
    CHECK_MESSAGE(spooled >= victim_said, "the victim said " << victim_said << " calls, its store holds " << spooled);
    truth.calls += spooled;
    truth.cost_nanos += spooled * kCallCost;
    truth.input_tokens = truth.calls * 1000;
    truth.output_tokens = truth.calls * 500;

    // Ground truth = the ledger, per user: every event once, through a replica's death, a
    // database restart and an application's crash.
    const auto ledger = backend_users(replicas.two->port(), key, "");
    CHECK_MESSAGE(ledger == (std::map<std::string, UserTotals>{{user, truth}}), "ledger " << ledger << "; truth "
                                                                                          << truth.calls << " calls");
    check_bound(leases, truth.cost_nanos, allowed_spend(kProcesses, true), user);
    table << "\n  " << (leases ? "leases" : "today (--no-leases)") << ": " << usd(truth.cost_nanos) << " ("
          << truth.calls << " calls; the killed application's " << spooled << " delivered by paygent sync; "
          << outages_seen << " outages reported; " << duplicates_counted_once(*replicas.two)
          << " events re-sent to the surviving replica and counted once)";
  }
  MESSAGE("4 processes on one user, cap " << usd(kCap) << ", delivering every 100 ms (the victim every 5 s); a "
                                          << "replica killed at 1/4 of the cap, PostgreSQL restarted at 1/2, an "
                                          << "application killed at 3/4; allowed with leases "
                                          << usd(allowed_spend(kProcesses, true)) << ":" << table.str());
#endif
}

}  // namespace paygent::testing
