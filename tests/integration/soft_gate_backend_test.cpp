// Soft gates fire once per threshold, limit and period across application processes that sync
// with the same paygentd (issue 8): each process hears from the backend which thresholds another
// already fired, and leaves them unfired.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "paygent/paygent.h"
#include "support/paygentd_process.h"
#include "tests/guard/fixture.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";
constexpr Nanos kDollar = kNanosPerUsd;

// One application process: a Paygent with its own local store, syncing with `backend_url`. The
// real clock: the backend decides the user's current period from its own.
struct App {
  App(const std::string& store_path, const std::string& backend_url, const std::string& key) {
    Plan p = round_plan();
    p.max_spend_per_period = kDollar;
    Options o;
    o.plans = config_with(p, {500'000, 800'000, 950'000});
    o.local_store_path = store_path;
    o.api_key = key;
    o.backend_url = backend_url;
    o.flush_interval = absl::Milliseconds(50);
    o.on_soft_gate = [this](const GuardResult& r) {
      std::lock_guard<std::mutex> lock(mu);
      soft_keys.push_back(r.gate_reason() + "@" + std::to_string(r.threshold));
    };
    o.on_error = [this](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      errors.push_back(std::string(s.message()));
    };
    auto created = Paygent::create(std::move(o));
    REQUIRE_MESSAGE(created.ok(), created.status().ToString());
    pg = *std::move(created);
  }
  std::vector<std::string> fired() {
    std::lock_guard<std::mutex> lock(mu);
    return soft_keys;
  }
  // "m" costs 1,000 nano-USD per input token: spends exactly `nanos` for u1.
  void spend(Nanos nanos) {
    Context ctx("u1");
    pg->record("m", tokens(nanos / 1000, 0));
  }
  GuardResult check() {
    Context ctx("u1");
    return pg->check("m");
  }
  // Checks until this process's view of u1 includes the backend's total (at least `pct` of the
  // limit): it has heard from the backend.
  void wait_for_backend(double pct) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (check().usage_pct < pct && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    REQUIRE(check().usage_pct >= pct);
  }

  std::mutex mu;
  std::vector<std::string> soft_keys;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;
};

}  // namespace

TEST_CASE("integration.soft_gates_fire_once_across_processes_of_one_backend") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");

  // Process A crosses 50% and 80% and fires both; its batch tells the backend.
  App a(dir.path() + "/a.db", paygentd->base_url(), key);
  a.spend(550'000'000);
  CHECK(a.check().status == GateStatus::kSoftGate);
  a.spend(270'000'000);
  CHECK(a.check().status == GateStatus::kSoftGate);
  CHECK(a.fired() == std::vector<std::string>{"total_spend@500000", "total_spend@800000"});
  REQUIRE(a.pg->flush().ok());

  // The backend reports them in the user's usage object.
  auto usage = http.request("GET", "/api/v1/users/u1/usage", {}, key);
  REQUIRE(usage.has_value());
  REQUIRE_MESSAGE(usage->status == 200, usage->body);
  CHECK(usage->body.find("\"soft_gates\":[{\"limit\":\"total_spend\"") != std::string::npos);

  // Process B, another store, same user: once it has heard from the backend (82%), a call at 85%
  // fires nothing; at 96% only 0.95, the one nobody fired yet.
  App b(dir.path() + "/b.db", paygentd->base_url(), key);
  b.wait_for_backend(0.82);
  b.spend(30'000'000);
  CHECK(b.check().status == GateStatus::kSoftGate);
  CHECK(b.fired().empty());
  b.spend(110'000'000);
  CHECK(b.check().status == GateStatus::kSoftGate);
  CHECK(b.fired() == std::vector<std::string>{"total_spend@950000"});
  REQUIRE(b.pg->flush().ok());

  // Process C starts after both: at 97% it fires nothing.
  App c(dir.path() + "/c.db", paygentd->base_url(), key);
  c.wait_for_backend(0.96);
  c.spend(10'000'000);
  CHECK(c.check().status == GateStatus::kSoftGate);
  CHECK(c.fired().empty());
  CHECK(a.errors.empty());
  CHECK(b.errors.empty());
  CHECK(c.errors.empty());
}


// A call refused by the hard gate spends nothing, so no event tells the backend about it: the
// process reports the limit's first refusal of the period itself ("hard_gates", wire version 5),
// and paygentd's gate history (GET .../usage) shows it once, whichever processes refused.
TEST_CASE("integration.hard_gates_reach_the_backend_once_across_processes") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");

  App a(dir.path() + "/a.db", paygentd->base_url(), key);
  a.spend(kDollar);
  const auto before = std::chrono::system_clock::now();
  CHECK_THROWS_AS(a.check(), LimitExceeded);
  CHECK_THROWS_AS(a.check(), LimitExceeded);
  REQUIRE(a.pg->flush().ok());
  auto usage = http.request("GET", "/api/v1/users/u1/usage", {}, key);
  REQUIRE(usage.has_value());
  REQUIRE_MESSAGE(usage->status == 200, usage->body);
  const std::size_t at = usage->body.find("\"hard_gates\":[{\"limit\":\"total_spend\",\"period_start_ns\":");
  REQUIRE_MESSAGE(at != std::string::npos, usage->body);
  CHECK(usage->body.find("\"threshold_ppm\":1000000,\"fired_ns\":", at) != std::string::npos);
  CHECK(usage->body.find("},{", at) == std::string::npos);  // one, for two refusals
  const std::size_t fired_at = usage->body.find("\"fired_ns\":", at) + 11;
  const std::int64_t fired_ns = std::stoll(usage->body.substr(fired_at, 19));
  CHECK(fired_ns >= std::chrono::duration_cast<std::chrono::nanoseconds>(before.time_since_epoch()).count() -
                        1'000'000'000);  // the coarse clock's margin

  // Process B refuses u1 too once it has heard: the backend still holds one.
  App b(dir.path() + "/b.db", paygentd->base_url(), key);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool refused = false;
  while (!refused && std::chrono::steady_clock::now() < deadline) {
    try {
      b.check();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } catch (const LimitExceeded&) {
      refused = true;
    }
  }
  REQUIRE(refused);
  REQUIRE(b.pg->flush().ok());
  usage = http.request("GET", "/api/v1/users/u1/usage", {}, key);
  REQUIRE(usage.has_value());
  const std::size_t again = usage->body.find("\"hard_gates\":[");
  REQUIRE(again != std::string::npos);
  CHECK(usage->body.substr(again, usage->body.find(']', again) - again).find("},{") == std::string::npos);
  CHECK(a.errors.empty());
  CHECK(b.errors.empty());
}

}  // namespace paygent::testing
