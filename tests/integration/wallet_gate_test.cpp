// The library gates a customer on its prepaid credit wallet as the real paygentd reports it
// (docs/billing.md, "Credit wallets"; issue 11): billing events sent by the library are debited on
// ingest, the reply carries the wallet, a soft gate fires at the plan's thresholds, an empty
// wallet gates hard (LimitExceeded naming credit_wallet, before the call leaves the process), and a
// top-up lifts it. With credit_wallet_gate off the wallet only bills.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "paygent/paygent.h"
#include "support/paygentd_process.h"
#include "tests/guard/fixture.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";

struct App {
  App(const std::string& store_path, const std::string& backend_url, const std::string& key, bool wallet_gate = true) {
    Plan p = round_plan();
    p.max_spend_per_period = 1'000 * kNanosPerUsd;  // far away: only the wallet gates
    Options o;
    o.plans = config_with(p, {500'000, 800'000});
    o.local_store_path = store_path;
    o.api_key = key;
    o.backend_url = backend_url;
    o.flush_interval = absl::Milliseconds(50);
    o.refresh_interval = absl::Milliseconds(100);
    o.credit_wallet_gate = wallet_gate;
    o.raise_on_hard_gate = true;
    o.on_soft_gate = [this](const GuardResult& r) {
      std::lock_guard<std::mutex> lock(mu);
      soft.push_back(r.gate_reason() + "@" + std::to_string(r.threshold));
    };
    auto created = Paygent::create(std::move(o));
    REQUIRE_MESSAGE(created.ok(), created.status().ToString());
    pg = *std::move(created);
  }
  // `n` jobs of 10 credits each, delivered.
  void jobs(int n) {
    for (int i = 0; i < n; ++i) pg->send_indicator("worker", "c1", "job");
    REQUIRE(pg->flush().ok());
  }
  GuardResult check_c1() {
    Context ctx("c1");
    return pg->check("m", CallEstimate{.prompt_tokens = 10, .max_output_tokens = 10});
  }
  // Checks until `pred` holds (the syncer has brought the backend's wallet), at most 10 s.
  template <class Pred>
  GuardResult wait_for(Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    GuardResult r;
    for (;;) {
      try {
        r = check_c1();
      } catch (const LimitExceeded& e) {
        r = e.result();
      }
      if (pred(r) || std::chrono::steady_clock::now() > deadline) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::vector<std::string> fired() {
    std::lock_guard<std::mutex> lock(mu);
    return soft;
  }

  std::mutex mu;
  std::vector<std::string> soft;
  std::unique_ptr<Paygent> pg;
};

void ok_reply(const std::optional<HttpClient::Reply>& r, int status) {
  REQUIRE(r.has_value());
  REQUIRE_MESSAGE(r->status == status, r->body);
}

}  // namespace

TEST_CASE("integration.an_empty_credit_wallet_gates_the_customer_hard_until_a_top_up") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");
  // Each job costs 10 credits; c1 buys 100.
  ok_reply(http.request("PUT", "/api/v1/agents/worker",
                        R"({"indicators":[{"indicator":"job","pricing":{"model":"credits","creditsPerUnit":"10"}}]})", key),
           200);
  ok_reply(http.request("POST", "/api/v1/users", R"({"user_id":"c1"})", key), 201);
  ok_reply(http.request("POST", "/api/v1/customers/c1/wallet/top-ups", R"({"credits":"100","paidUsd":"9.99","id":"t1"})", key),
           201);

  App app(dir.path() + "/a.db", paygentd->base_url(), key);
  app.jobs(6);  // 60 of 100 credits: the 50% soft gate
  // Until all 6 are heard of: the background flush may deliver the first ones in a batch of their
  // own (5 jobs are 50%: the soft gate already), whose reply comes first.
  GuardResult r = app.wait_for([](const GuardResult& g) {
    return g.reason == GateReason::kCreditWallet && g.current_value == 60'000'000'000;
  });
  CHECK(r.status == GateStatus::kSoftGate);
  CHECK(r.current_value == 60'000'000'000);
  CHECK(r.limit_value == 100'000'000'000);
  CHECK(r.message() == "soft gate: credit_wallet at 60.0% (60 credits charged of 100 prepaid)");
  CHECK(app.fired() == std::vector<std::string>{"credit_wallet@500000"});
  {  // Credits left bound no call's output (they are charged per job, not per token): the plan's
     // $1,000 does. (They were once read as nano-USD: 40 credits left capped "m" at 20M tokens.)
    Context ctx("c1");
    CHECK(app.pg->max_output_tokens_that_fit("m", 10) == 499'999'995);
  }

  app.jobs(5);  // 110 credits of usage: 100 used, 10 overage, the wallet is empty
  r = app.wait_for([](const GuardResult& g) {
    return g.status == GateStatus::kHardGate && g.current_value == 110'000'000'000;  // all 5 heard of
  });
  CHECK(r.status == GateStatus::kHardGate);
  CHECK(r.reason == GateReason::kCreditWallet);
  // Straight past 80% to empty: the hard gate says it (as a plan's limit does when a call jumps it).
  CHECK(app.fired() == std::vector<std::string>{"credit_wallet@500000"});
  {
    Context ctx("c1");
    bool called = false;
    CHECK_THROWS_WITH_AS(app.pg->metered_call("m", CallEstimate{.prompt_tokens = 10, .max_output_tokens = 10},
                                              [&] {
                                                called = true;
                                                return tokens(10, 10);
                                              }),
                         "hard gate: credit_wallet: 110 credits charged of 100 prepaid; the wallet is empty: top it up "
                         "to continue",
                         LimitExceeded);
    CHECK_FALSE(called);  // no tokens spent
    CHECK(app.pg->max_output_tokens_that_fit("m", 10) == 0);  // the empty wallet fits nothing
  }
  // Another customer is not gated by c1's wallet.
  {
    Context ctx("c2");
    CHECK(app.pg->check("m").status == GateStatus::kOk);
  }
  // The backend's wallet says the same, with the overage it will invoice.
  auto wallet = http.request("GET", "/api/v1/customers/c1/wallet", {}, key);
  ok_reply(wallet, 200);
  CHECK(wallet->body.find(R"("granted":"100","balance":"0","used":"100","overage":"10")") != std::string::npos);

  // A top-up lifts the gate once the library hears of it (its refresh of the user).
  ok_reply(http.request("POST", "/api/v1/customers/c1/wallet/top-ups", R"({"credits":"100","id":"t2"})", key), 201);
  r = app.wait_for([](const GuardResult& g) { return g.status != GateStatus::kHardGate; });
  CHECK(r.status == GateStatus::kSoftGate);  // 110 charged of 200: past 50%
  CHECK(r.reason == GateReason::kCreditWallet);
  CHECK(r.limit_value == 200'000'000'000);

  // Empty again: hard. With the gate off, the same empty wallet only bills: a process that has
  // heard of it (its usage object says so) still admits the call.
  app.jobs(10);
  r = app.wait_for([](const GuardResult& g) { return g.status == GateStatus::kHardGate; });
  CHECK(r.reason == GateReason::kCreditWallet);
  // Two new processes, gate on and off, each knowing c1 (a check) before its batch's reply brings
  // the wallet: the same reply gates one and not the other.
  App gated(dir.path() + "/b.db", paygentd->base_url(), key, /*wallet_gate=*/true);
  App billing_only(dir.path() + "/c.db", paygentd->base_url(), key, /*wallet_gate=*/false);
  // (The gated one may have heard of the wallet already, from its first refresh of c1: then its
  // first check is the hard gate itself.)
  // (Called outside CHECK: doctest's CHECK would catch the LimitExceeded itself as a failure.)
  try {
    const GuardResult first = gated.check_c1();
    CHECK(first.status == GateStatus::kOk);
  } catch (const LimitExceeded& e) {
    CHECK(e.result().reason == GateReason::kCreditWallet);
  }
  gated.jobs(1);
  CHECK(billing_only.check_c1().status == GateStatus::kOk);
  billing_only.jobs(1);
  auto usage = http.request("GET", "/api/v1/users/c1/usage", {}, key);
  ok_reply(usage, 200);
  CHECK(usage->body.find(R"("charged_nanocredits":230000000000)") != std::string::npos);  // 23 jobs
  r = gated.wait_for([](const GuardResult& g) { return g.status == GateStatus::kHardGate; });
  CHECK(r.reason == GateReason::kCreditWallet);
  GuardResult free = billing_only.check_c1();
  CHECK(free.status == GateStatus::kOk);
  CHECK(free.reason != GateReason::kCreditWallet);
}

}  // namespace paygent::testing
