// Budget leases end to end (docs/leases.md): several Paygent instances (one per thread, each with
// its own store, as separate processes would be) serving one user at a cap, against the real
// paygentd on loopback. The cap holds across them; an outage admits at most the stated share; a
// dead holder's budget comes back after one TTL; strict_backend still closes.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "integration/ledger.h"
#include "paygent/paygent.h"
#include "support/paygentd_process.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "leases-admin-token";
constexpr Nanos kCap = 300'000'000;       // $0.30
constexpr Nanos kCall = 5'000'000;        // $0.005: 5,000 input tokens of "m"
constexpr std::int64_t kCallTokens = 5'000;

PlanConfig capped_plan() {
  Plan p;
  p.name = "pro";
  p.max_spend_per_period = kCap;
  p.cost_rates["m"] = CostRate{1'000'000, 2'000'000};  // 1,000 nano-USD per input token
  PlanConfig c;
  c.default_plan = "pro";
  c.plans.push_back(std::move(p));
  return c;
}

// One application process: a Paygent with its own store, and what its calls met.
struct App {
  App(const std::string& url, const std::string& key, const std::string& store, double outage_share = 0.10,
      bool strict = false) {
    Options o;
    o.api_key = key;
    o.backend_url = url;
    o.plans = capped_plan();
    o.local_store_path = store;
    o.flush_interval = absl::Milliseconds(50);
    o.refresh_interval = absl::Milliseconds(200);
    o.lease_outage_share = outage_share;
    o.strict_backend = strict;
    o.on_error = [this](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      errors.push_back(std::string(s.message()));
    };
    pg = *Paygent::create(std::move(o));
  }
  // One call of $0.005 for `user`: true when admitted (and then settled at its estimate).
  bool call(const std::string& user) {
    Context ctx(user);
    try {
      Reservation r = pg->reserve("m", {.prompt_tokens = kCallTokens, .max_output_tokens = 0});
      pg->settle(r, Usage{.input_tokens = kCallTokens, .output_tokens = 0});
      admitted += kCall;
      return true;
    } catch (const LimitExceeded& e) {
      std::lock_guard<std::mutex> lock(mu);
      reasons.push_back(e.result().reason);
      return false;
    }
  }
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<GateReason> reasons;
  std::atomic<Nanos> admitted{0};
  std::unique_ptr<Paygent> pg;
};

// The backend's ledger total of `user` (all time).
Nanos backend_spend(int port, const std::string& key, const std::string& user) {
  const auto users = backend_users(port, key, user);
  const auto it = users.find(user);
  return it == users.end() ? 0 : it->second.cost_nanos;
}

struct Backend {
  explicit Backend(std::vector<std::string> extra = {"--lease-ttl-ms", "1000"})
      : paygentd(PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin,
                                         .extra_args = std::move(extra)})) {
    HttpClient http(paygentd->port());
    key = create_product(http, kAdmin, "acme");
  }
  TempDir dir;
  std::unique_ptr<PaygentdProcess> paygentd;
  std::string key;
};

}  // namespace

TEST_CASE("integration.leases_hold_one_cap_across_four_processes") {
  Backend b({"--lease-ttl-ms", "4000"});  // exchanges time out at a quarter of it: 1 s, for a busy machine
  std::vector<std::unique_ptr<App>> apps;
  for (int i = 0; i < 4; ++i) {
    apps.push_back(std::make_unique<App>(b.paygentd->base_url(), b.key, b.dir.path() + "/app" + std::to_string(i) + ".db"));
  }
  // Each process keeps calling until the backend says the cap is reached, or 15 s pass.
  std::vector<std::thread> threads;
  for (auto& app : apps) {
    threads.emplace_back([&app] {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      while (std::chrono::steady_clock::now() < until) {
        if (app->call("u1")) continue;
        std::lock_guard<std::mutex> lock(app->mu);
        if (app->reasons.back() == GateReason::kTotalSpend) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // held elsewhere: try again shortly
      }
    });
  }
  for (auto& t : threads) t.join();
  Nanos admitted = 0;
  for (auto& app : apps) {
    admitted += app->admitted.load();
    app->pg->shutdown();  // delivers everything, gives the leases back
    std::lock_guard<std::mutex> lock(app->mu);
    for (GateReason r : app->reasons) CHECK((r == GateReason::kTotalSpend || r == GateReason::kLeaseExhausted));
    CHECK_MESSAGE(app->errors.empty(), app->errors.front());
  }
  // Estimates are exact here: the cap is never passed, and no budget is left stranded.
  CHECK(admitted <= kCap);
  CHECK(admitted >= kCap - 4 * kCall);
  CHECK(backend_spend(b.paygentd->port(), b.key, "u1") == admitted);
  MESSAGE("4 processes at a $0.30 cap admitted $", static_cast<double>(admitted) / 1e9);
}

TEST_CASE("integration.leases_outage_admits_at_most_the_stated_share") {
  Backend b({"--lease-ttl-ms", "60000"});
  App a(b.paygentd->base_url(), b.key, b.dir.path() + "/a.db", 0.10);
  App c(b.paygentd->base_url(), b.key, b.dir.path() + "/c.db", 0.10);
  // Both get a lease and spend a little; then the backend dies.
  for (int i = 0; i < 4; ++i) {
    REQUIRE(a.call("u1"));
    REQUIRE(c.call("u1"));
  }
  b.paygentd->kill_hard();
  std::atomic<std::int64_t> slowest_ms{0};
  auto spend_until_refused = [&](App& app) {
    for (int i = 0; i < 200; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const bool ok = app.call("u1");
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
      std::int64_t cur = slowest_ms.load();
      while (ms > cur && !slowest_ms.compare_exchange_weak(cur, ms)) {
      }
      if (!ok) return;
    }
  };
  std::thread ta([&] { spend_until_refused(a); });
  std::thread tc([&] { spend_until_refused(c); });
  ta.join();
  tc.join();
  // The bound while the backend is unreachable: cap + N x outage_share x cap (N = 2 here).
  const Nanos admitted = a.admitted.load() + c.admitted.load();
  CHECK(admitted <= kCap + 2 * kCap / 10);
  // Fail-open within the share: each process went on past what it had when the backend died.
  CHECK(a.admitted.load() > 4 * kCall);
  CHECK(c.admitted.load() > 4 * kCall);
  // The outage itself never held a call longer than about one lease_wait (100 ms).
  CHECK(slowest_ms.load() < 1000);
  for (App* app : {&a, &c}) {
    std::lock_guard<std::mutex> lock(app->mu);
    REQUIRE_FALSE(app->reasons.empty());
    CHECK(app->reasons.back() == GateReason::kLeaseExhausted);
  }
  MESSAGE("2 processes in an outage at a $0.30 cap (share 0.10) admitted $", static_cast<double>(admitted) / 1e9);
}

TEST_CASE("integration.a_dead_holders_lease_expires_and_its_budget_returns") {
  Backend b({"--lease-ttl-ms", "1500"});
  // A holder that takes the whole budget and dies without a word (no renewal, no release).
  HttpClient http(b.paygentd->port());
  App app(b.paygentd->base_url(), b.key, b.dir.path() + "/app.db");
  {
    // The period of the default (monthly) plan, as the library computes it.
    const Period p = calendar_period(PeriodRule::kMonth, absl::Now());
    const std::string body =
        "{\"holder\":\"0123456789abcdef0123456789abcdef\",\"leases\":[{\"user_id\":\"u1\",\"limit\":\"total_spend\","
        "\"period_start_ns\":" + std::to_string(absl::ToUnixNanos(p.start)) +
        ",\"period_end_ns\":" + std::to_string(absl::ToUnixNanos(p.end)) + ",\"cap\":" + std::to_string(kCap) +
        ",\"used\":0,\"acked\":0,\"want\":" + std::to_string(kCap) + ",\"need\":" + std::to_string(kCap) +
        ",\"release\":false}]}";
    auto reply = http.request("POST", "/api/v1/leases", body, b.key);
    REQUIRE(reply.has_value());
    REQUIRE_MESSAGE(reply->status == 200, reply->body);
  }
  const auto died = std::chrono::steady_clock::now();
  // Held elsewhere: refused as such, never as "limit reached", never admitted.
  CHECK_FALSE(app.call("u1"));
  {
    std::lock_guard<std::mutex> lock(app.mu);
    CHECK(app.reasons.back() == GateReason::kLeaseExhausted);
  }
  // After one TTL the dead holder keeps nothing.
  bool admitted = false;
  while (!admitted && std::chrono::steady_clock::now() - died < std::chrono::seconds(5)) {
    admitted = app.call("u1");
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(admitted);
  CHECK(std::chrono::steady_clock::now() - died >= std::chrono::milliseconds(1400));
}

TEST_CASE("integration.strict_backend_with_leases_still_closes_while_the_backend_is_away") {
  Backend b;
  App app(b.paygentd->base_url(), b.key, b.dir.path() + "/app.db", 0.10, /*strict=*/true);
  CHECK(app.call("u1"));
  b.paygentd->kill_hard();
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i) {
    if (!app.call("u1")) {
      std::lock_guard<std::mutex> lock(app.mu);
      closed = app.reasons.back() == GateReason::kBackendUnavailable;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(closed);
  // And no call is let through while it stays away.
  CHECK_FALSE(app.call("u1"));
}

}  // namespace paygent::testing
