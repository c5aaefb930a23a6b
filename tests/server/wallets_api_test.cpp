// Credit wallets through paygentd's Api, on SQLite and PostgreSQL (docs/billing.md, "Credit
// wallets"; issue 11): top-ups (idempotent by id), debits as billed usage arrives, a wallet running
// out mid-period with the rest shown and priced as overage, the balance in the ingest reply (what
// the library gates on), a duplicated event debited once, and bad top-ups refused by name.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "server/wire.h"
#include "tests/server/agents_support.h"

namespace paygent::server::test {
namespace {

Tracked billed(std::uint64_t n, std::string tags, std::string user = "c1", std::int64_t ts_ns = ns_at(2026, 11, 17, 10)) {
  return Tracked{.n = n, .user = std::move(user), .agent = "cluster", .indicator = "paid", .kind = "billing",
                 .ts_ns = ts_ns, .meta_tags = std::move(tags)};
}

HttpResponse top_up(AgentsFixture& f, std::string_view body, std::string_view customer = "c1") {
  return f.call("POST", "/api/v1/customers/" + std::string(customer) + "/wallet/top-ups", body);
}

// The field `name` of the reply's wallet object (`path` "wallet", or "usage.c1.wallet").
std::string wallet_field(const HttpResponse& r, std::vector<std::string_view> path, const char* name) {
  simdjson::dom::parser parser;
  simdjson::dom::element e = parse_json(parser, r.body);
  for (std::string_view p : path) {
    simdjson::dom::element next;
    REQUIRE_MESSAGE(e[p].get(next) == simdjson::SUCCESS, r.body);
    e = next;
  }
  simdjson::dom::element v;
  REQUIRE_MESSAGE(e[name].get(v) == simdjson::SUCCESS, r.body);
  if (v.is_int64()) return std::to_string(std::int64_t(v.get_int64()));
  return std::string(std::string_view(v.get_string()));
}

std::string sent(AgentsFixture& f, const std::vector<Tracked>& events) {
  const HttpResponse r = f.call("POST", "/api/v1/events:batch", tracked_batch(events));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  return r.body;
}

// The "paid" line of c1's November invoice: credits, used, overage, amount in nano-USD.
std::string paid_line(AgentsFixture& f) {
  const HttpResponse r = f.call("GET", "/api/v1/customers/c1/invoice?period=2026-11");
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, r.body);
  for (simdjson::dom::element l : root["lines"].get_array()) {
    if (std::string_view(l["indicator"].get_string()) != "paid") continue;
    return std::string(std::string_view(l["credits"].get_string())) + " used " +
           std::string(std::string_view(l["creditsUsed"].get_string())) + " overage " +
           std::string(std::string_view(l["creditsOverage"].get_string())) + " $nanos " +
           std::to_string(std::int64_t(l["amount_nanos"].get_int64()));
  }
  FAIL("no paid line: " << r.body);
  return {};
}

void set_up(AgentsFixture& f) {
  REQUIRE(f.call("POST", "/api/v1/billable-metrics", R"({"name":"Effective tokens","aggregation":"sum",
      "expression":"event.properties.tokens * event.properties.replicas"})").status == 201);
  REQUIRE(f.put_agent("cluster", R"({"indicators":[{"indicator":"paid","metric":"effective_tokens",
      "pricing":{"model":"credits","creditsPerUnit":"0.01","overageUsdPerCredit":"0.02"}}]})").status == 200);
}

TEST_CASE("billing.wallet_is_debited_as_usage_arrives_and_runs_out_into_overage") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    set_up(f);
    // No such customer yet: no wallet is made for a typo.
    const HttpResponse unknown = top_up(f, R"({"credits":"100"})");
    CHECK(unknown.status == 404);
    CHECK(unknown.body.find("no customer") != std::string::npos);

    // 4,000 effective tokens at 0.01 credits: 40 credits, before any wallet: all overage.
    sent(f, {billed(1, R"({"tokens":"1000","replicas":"4"})")});
    CHECK(paid_line(f) == "40 used 0 overage 40 $nanos 800000000");
    CHECK(f.call("GET", "/api/v1/customers/c1/wallet").status == 404);

    // A 100-credit wallet made mid-period pays for the period's usage so far on its first settle.
    const HttpResponse made = top_up(f, R"({"credits":"100","paidUsd":"10.00","id":"t1"})");
    REQUIRE_MESSAGE(made.status == 201, made.body);
    CHECK(wallet_field(made, {"wallet"}, "granted") == "100");
    CHECK(wallet_field(made, {"topUp"}, "paidUsd") == "10");
    const HttpResponse read = f.call("GET", "/api/v1/customers/c1/wallet");
    REQUIRE_MESSAGE(read.status == 200, read.body);
    CHECK(wallet_field(read, {"wallet"}, "balance") == "60");
    CHECK(wallet_field(read, {"wallet"}, "used") == "40");
    CHECK(paid_line(f) == "40 used 40 overage 0 $nanos 0");

    // The same top-up again (a retry) adds nothing; the same id with other amounts is a conflict.
    const HttpResponse again = top_up(f, R"({"credits":"100","paidUsd":"10.00","id":"t1"})");
    CHECK(again.status == 200);
    CHECK(wallet_field(again, {"wallet"}, "granted") == "100");
    CHECK(wallet_field(again, {"topUp"}, "createdAt") == wallet_field(made, {"topUp"}, "createdAt"));
    CHECK(top_up(f, R"({"credits":"200","id":"t1"})").status == 409);

    // Usage arriving is debited at once, and the ingest reply carries the balance.
    const std::string r1 = sent(f, {billed(2, R"({"tokens":"500","replicas":"2"})")});  // 10 credits
    CHECK(wallet_field(HttpResponse{.body = r1}, {"usage", "c1", "wallet"}, "balance") == "50");
    CHECK(wallet_field(HttpResponse{.body = r1}, {"usage", "c1", "wallet"}, "granted_nanocredits") == "100000000000");
    CHECK(wallet_field(HttpResponse{.body = r1}, {"usage", "c1", "wallet"}, "charged_nanocredits") == "50000000000");
    // 60 credits more with 50 left: the wallet runs out, the rest is overage (never a negative balance).
    const std::string r2 = sent(f, {billed(3, R"({"tokens":"3000","replicas":"2"})")});
    CHECK(wallet_field(HttpResponse{.body = r2}, {"usage", "c1", "wallet"}, "balance") == "0");
    CHECK(wallet_field(HttpResponse{.body = r2}, {"usage", "c1", "wallet"}, "overage") == "10");
    CHECK(wallet_field(HttpResponse{.body = r2}, {"usage", "c1", "wallet"}, "charged_nanocredits") == "110000000000");
    CHECK(paid_line(f) == "110 used 100 overage 10 $nanos 200000000");  // 10 x $0.02
    // The profit report earns the credits used at what they cost ($10 for 100), plus the overage charged.
    CHECK(profit_line(f, "agent", "cluster").revenue == 10'200'000'000);
    CHECK(profit_line(f, "agent", "cluster").without_price == 0);
    // A duplicated event is debited once.
    const std::string r3 = sent(f, {billed(3, R"({"tokens":"3000","replicas":"2"})")});
    CHECK(wallet_field(HttpResponse{.body = r3}, {"usage", "c1", "wallet"}, "overage") == "10");
    CHECK(paid_line(f) == "110 used 100 overage 10 $nanos 200000000");

    // A top-up after it ran out pays for what comes next, not for the overage already settled.
    REQUIRE(top_up(f, R"({"credits":30,"paidUsd":3,"id":"t2"})").status == 201);
    sent(f, {billed(4, R"({"tokens":"1000","replicas":"1"})")});  // 10 credits
    CHECK(paid_line(f) == "120 used 110 overage 10 $nanos 200000000");
    const HttpResponse last = f.call("GET", "/api/v1/customers/c1/wallet");
    CHECK(wallet_field(last, {"wallet"}, "granted") == "130");
    CHECK(wallet_field(last, {"wallet"}, "balance") == "20");
    CHECK(wallet_field(last, {"wallet"}, "paidUsd") == "13");
    CHECK(wallet_field(last, {"wallet"}, "topUps") == "2");
    CHECK(last.body.find(R"("topUps":[{"id":"t2","credits":"30","paidUsd":"3")") != std::string::npos);

    // Reading an invoice never moves the wallet: a range that is not a billing period is priced
    // without it (a one-nanosecond range would otherwise "give back" the month's credits).
    const std::string start = std::to_string(ns_at(2026, 11, 1));
    for (const std::string& range : {start + "&to_ns=" + std::to_string(ns_at(2026, 11, 1) + 1),
                                     std::to_string(ns_at(2026, 11, 2)) + "&to_ns=" + std::to_string(ns_at(2026, 12, 1))}) {
      CHECK(f.call("GET", "/api/v1/customers/c1/invoice?from_ns=" + range).status == 200);
    }
    // Nor does October's invoice, a period over before the wallet was made: not the wallet's to pay.
    sent(f, {billed(6, R"({"tokens":"1000","replicas":"1"})", "c1", ns_at(2026, 10, 30))});
    CHECK(f.call("GET", "/api/v1/customers/c1/invoice?period=2026-10").body.find(R"("creditsUsed":"0","creditsOverage":"10")") !=
          std::string::npos);
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "balance") == "20");
    CHECK(paid_line(f) == "120 used 110 overage 10 $nanos 200000000");

    // Another customer's usage and another product (with a customer of the same id) touch none of it.
    sent(f, {billed(5, R"({"tokens":"100000","replicas":"1"})", "c2")});
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "balance") == "20");
    const HttpResponse other = f.call("POST", "/api/v1/products", R"({"name":"other"})", kAdminToken);
    const std::string other_key = paygent::testing::json_string_member(other.body, "api_key");
    REQUIRE(f.call("POST", "/api/v1/users", R"({"user_id":"c1"})", other_key).status == 201);
    CHECK(f.call("GET", "/api/v1/customers/c1/wallet", {}, other_key).status == 404);
    const HttpResponse theirs = f.call("POST", "/api/v1/customers/c1/wallet/top-ups", R"({"credits":"5","id":"t1"})", other_key);
    CHECK(theirs.status == 201);  // the same top-up id in another product is another top-up
    CHECK(wallet_field(theirs, {"wallet"}, "granted") == "5");
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "granted") == "130");
  });
}

TEST_CASE("billing.wallet_top_ups_are_refused_by_name_and_store_nothing") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    set_up(f);
    sent(f, {billed(1, R"({"tokens":"1","replicas":"1"})")});
    for (const auto& [body, says] : std::vector<std::pair<std::string, std::string>>{
             {R"({})", "credits"},
             {R"({"credits":"0"})", "credits: 0 is not above 0"},
             {R"({"credits":"-5"})", "credits: -5 is not above 0"},
             {R"({"credits":"1e3"})", "credits: must be an exact decimal"},
             {R"({"credits":"ten"})", "credits: must be an exact decimal"},
             {R"({"credits":true})", "credits: must be a decimal number"},
             {R"({"credits":"5","paidUsd":"-1"})", "paidUsd: -1 is negative"},
             {R"({"credits":")" + std::string(60, '9') + R"("})", "credits: must be an exact decimal"},
             // simdjson refuses a 60-digit JSON number before the field is read (a 400 all the same).
             {R"({"credits":)" + std::string(60, '9') + R"(})", "not valid JSON"},
             {R"({"credits":"5","paidUsd":"0.)" + std::string(30, '1') + R"("})", "paidUsd: must be an exact decimal"},
             {R"({"credits":"5","colour":"red"})", "colour"},
             {R"({"credits":"5","id":""})", "id: must not be empty"},
             {R"({"credits":"5","id":")" + std::string(201, 'x') + R"("})", "id: at most 200 bytes"},
             {R"([1])", ""}}) {
      CAPTURE(body);
      const HttpResponse r = top_up(f, body);
      CHECK(r.status == 400);
      CHECK_MESSAGE(r.body.find(says) != std::string::npos, r.body);
    }
    CHECK(f.call("GET", "/api/v1/customers/c1/wallet").status == 404);  // nothing was made
  });
}

TEST_CASE("billing.wallet_gives_back_when_usage_falls_and_when_an_indicator_leaves_credits") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    // Seats billed on the latest count, 5 credits a seat; a second indicator per job, 1 credit.
    REQUIRE(f.call("POST", "/api/v1/billable-metrics", R"({"name":"Seats","aggregation":"latest","field":"seats"})").status == 201);
    REQUIRE(f.put_agent("cluster", R"({"indicators":[
        {"indicator":"paid","metric":"seats","pricing":{"model":"credits","creditsPerUnit":"5"}},
        {"indicator":"jobs","pricing":{"model":"credits","creditsPerUnit":"1"}}]})").status == 200);
    sent(f, {billed(1, R"({"seats":"4"})")});
    REQUIRE(top_up(f, R"({"credits":"50","id":"t1"})").status == 201);
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "balance") == "30");  // 4 seats
    Tracked job{.n = 2, .agent = "cluster", .indicator = "jobs", .kind = "billing"};
    sent(f, {job, billed(3, R"({"seats":"12"})", "c1", ns_at(2026, 11, 17, 11))});  // 1 + 60 credits: 19 overage
    HttpResponse w = f.call("GET", "/api/v1/customers/c1/wallet");
    CHECK(wallet_field(w, {"wallet"}, "balance") == "0");
    CHECK(wallet_field(w, {"wallet"}, "overage") == "11");
    // The latest count falls to 6: overage is forgiven first, then credits come back.
    sent(f, {billed(4, R"({"seats":"6"})", "c1", ns_at(2026, 11, 17, 12))});
    w = f.call("GET", "/api/v1/customers/c1/wallet");
    CHECK(wallet_field(w, {"wallet"}, "overage") == "0");
    CHECK(wallet_field(w, {"wallet"}, "balance") == "19");  // 50 - 30 - 1
    CHECK(wallet_field(w, {"wallet"}, "used") == "31");
    // The jobs indicator is re-priced FLAT: its credit comes back on the next settle.
    REQUIRE(f.put_agent("cluster", R"({"indicators":[
        {"indicator":"paid","metric":"seats","pricing":{"model":"credits","creditsPerUnit":"5"}},
        {"indicator":"jobs","pricing":{"model":"flat","unitPrice":"0.10"}}]})").status == 200);
    w = f.call("GET", "/api/v1/customers/c1/wallet");
    CHECK(wallet_field(w, {"wallet"}, "balance") == "20");
    CHECK(wallet_field(w, {"wallet"}, "used") == "30");
    CHECK(wallet_field(w, {"wallet"}, "granted") == "50");
  });
}

TEST_CASE("billing.wallet_settle_lost_after_its_batch_commits_is_made_by_the_next") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    set_up(f);
    sent(f, {billed(1, R"({"tokens":"1000","replicas":"4"})")});  // 40 credits
    REQUIRE(top_up(f, R"({"credits":"100","id":"t1"})").status == 201);
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "balance") == "60");
    CHECK_FALSE(f.storage->wallet_settle_pending(f.product_id, "c1")->has_value());
    // A batch stored without paygentd's settle after it (as if paygentd died right after the
    // commit): its transaction left a pending mark.
    absl::StatusOr<EventBatch> batch = parse_ingest_batch(tracked_batch({billed(2, R"({"tokens":"500","replicas":"2"})")}));
    REQUIRE(batch.ok());
    REQUIRE(f.storage->ingest(f.product_id, batch->events).ok());
    absl::StatusOr<std::optional<SettlePending>> pending = f.storage->wallet_settle_pending(f.product_id, "c1");
    REQUIRE(pending.ok());
    REQUIRE(pending->has_value());
    CHECK((*pending)->from_ts_ns == ns_at(2026, 11, 17, 10));
    // The next settle (here a read of the wallet) makes it, once, and clears the mark.
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "balance") == "50");
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "balance") == "50");
    CHECK_FALSE(f.storage->wallet_settle_pending(f.product_id, "c1")->has_value());
    // A customer without a wallet gets no mark.
    batch = parse_ingest_batch(tracked_batch({billed(3, R"({"tokens":"1","replicas":"1"})", "c2")}));
    REQUIRE(f.storage->ingest(f.product_id, batch->events).ok());
    CHECK_FALSE(f.storage->wallet_settle_pending(f.product_id, "c2")->has_value());
  });
}

}  // namespace
}  // namespace paygent::server::test

namespace paygent::server::test {
namespace {

// The types of the deliveries due now, each claimed for a day, with their bodies.
std::vector<std::pair<std::string, std::string>> due_alerts(AgentsFixture& f) {
  std::vector<std::pair<std::string, std::string>> out;
  for (;;) {
    const std::int64_t now = absl::ToUnixNanos(absl::Now());
    absl::StatusOr<std::vector<WebhookDelivery>> d = f.storage->claim_webhook_deliveries(now, now + 86'400'000'000'000, 100, {});
    REQUIRE_MESSAGE(d.ok(), d.status().ToString());
    if (d->empty()) return out;
    for (WebhookDelivery& x : *d) out.emplace_back(x.type, std::move(x.body));
  }
}

// A wallet falling to 20% of its credits raises wallet_low, reaching 0 wallet_empty, each once per
// top-up, into the outbox of the endpoints that asked for them (docs/webhooks.md).
TEST_CASE("billing.wallet_low_and_empty_raise_webhook_alerts_once_per_top_up") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    set_up(f);
    HttpResponse r = f.call("POST", "/api/v1/webhooks", R"({"url":"http://127.0.0.1:9/w","events":["wallet_low","wallet_empty"]})");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    CHECK(r.body.find(R"("events":["wallet_low","wallet_empty"])") != std::string::npos);
    r = f.call("POST", "/api/v1/webhooks", R"({"url":"http://127.0.0.1:9/hard","events":["hard_gate"]})");
    REQUIRE_MESSAGE(r.status == 201, r.body);

    sent(f, {billed(1, R"({"tokens":"1000","replicas":"1"})")});  // 10 credits
    REQUIRE(top_up(f, R"({"credits":"100","paidUsd":"10","id":"t1"})").status == 201);  // balance 90
    sent(f, {billed(2, R"({"tokens":"6000","replicas":"1"})")});  // balance 30: 30%, nothing
    CHECK(due_alerts(f).empty());

    sent(f, {billed(3, R"({"tokens":"1500","replicas":"1"})")});  // balance 15: low
    auto due = due_alerts(f);
    REQUIRE(due.size() == 1);
    CHECK(due[0].first == "wallet_low");
    CHECK(due[0].second.find(R"("user_id":"c1","limit":"credit_wallet","granted":"100","balance":"15")") != std::string::npos);
    CHECK(due[0].second.find(R"("threshold_ppm":200000)") != std::string::npos);

    sent(f, {billed(4, R"({"tokens":"2000","replicas":"1"})")});  // balance 0, 5 of overage: empty
    due = due_alerts(f);
    REQUIRE(due.size() == 1);
    CHECK(due[0].first == "wallet_empty");
    CHECK(due[0].second.find(R"("balance":"0","used":"100","overage":"5")") != std::string::npos);
    sent(f, {billed(5, R"({"tokens":"100","replicas":"1"})")});  // still empty: raised once
    CHECK(due_alerts(f).empty());

    // A top-up lifts it; falling again raises them again, once each.
    REQUIRE(top_up(f, R"({"credits":"100","id":"t2"})").status == 201);  // balance 100
    CHECK(due_alerts(f).empty());
    sent(f, {billed(6, R"({"tokens":"8500","replicas":"1"})")});  // balance 15
    due = due_alerts(f);
    REQUIRE(due.size() == 1);
    CHECK(due[0].first == "wallet_low");
    CHECK(due[0].second.find(R"("top_ups":2)") != std::string::npos);
  });
}

// The product's wallet_low line (PUT /api/v1/config/alerts): validated (nothing stored when
// refused), 20% until set, and a wallet at 40% of its credits is low once the line is 40%.
TEST_CASE("billing.wallet_low_percent_is_the_products_setting") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    set_up(f);
    HttpResponse r = f.call("GET", "/api/v1/config/alerts");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body == R"({"wallet_low_percent":20})");
    for (const char* bad : {R"({"wallet_low_percent":0})", R"({"wallet_low_percent":100})", R"({"wallet_low_percent":"20"})",
                            R"({"wallet_low_percent":20.5})", R"({})", R"({"wallet_low_percent":20,"x":1})"}) {
      r = f.call("PUT", "/api/v1/config/alerts", bad);
      CHECK_MESSAGE(r.status == 400, bad, " -> ", r.body);
    }
    r = f.call("PUT", "/api/v1/config/alerts", R"({"wallet_low_percent":0})");
    CHECK_MESSAGE(r.body.find("wallet_low_percent: must be from 1 to 99") != std::string::npos, r.body);
    CHECK(f.call("GET", "/api/v1/config/alerts").body == R"({"wallet_low_percent":20})");  // nothing stored
    r = f.call("PUT", "/api/v1/config/alerts", R"({"wallet_low_percent":40})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(f.call("GET", "/api/v1/config/alerts").body == R"({"wallet_low_percent":40})");
    CHECK(f.storage->alert_settings("nope").status().code() == absl::StatusCode::kNotFound);
    // Another product (another tenant) keeps its own line; its key sets only its own; a wrong key
    // reads nothing.
    r = f.call("POST", "/api/v1/products", R"({"name":"other"})", kAdminToken);
    REQUIRE_MESSAGE(r.status == 201, r.body);
    const std::string other_key = paygent::testing::json_string_member(r.body, "api_key");
    CHECK(f.call("GET", "/api/v1/config/alerts", {}, other_key).body == R"({"wallet_low_percent":20})");
    CHECK(f.call("PUT", "/api/v1/config/alerts", R"({"wallet_low_percent":5})", other_key).status == 200);
    CHECK(f.call("GET", "/api/v1/config/alerts").body == R"({"wallet_low_percent":40})");
    CHECK(f.call("GET", "/api/v1/config/alerts", {}, "pg_not_a_key").status == 401);

    r = f.call("POST", "/api/v1/webhooks", R"({"url":"http://127.0.0.1:9/w","events":["wallet_low"]})");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    sent(f, {billed(1, R"({"tokens":"1000","replicas":"1"})")});  // 10 credits: the customer exists
    REQUIRE(top_up(f, R"({"credits":"100","paidUsd":"10","id":"t1"})").status == 201);  // balance 90
    CHECK(due_alerts(f).empty());
    sent(f, {billed(2, R"({"tokens":"5000","replicas":"1"})")});  // balance 40: low at 40%, exactly
    const auto due = due_alerts(f);
    REQUIRE(due.size() == 1);
    CHECK(due[0].first == "wallet_low");
    CHECK(due[0].second.find(R"("balance":"40")") != std::string::npos);
    CHECK(due[0].second.find(R"("threshold_ppm":400000)") != std::string::npos);
  });
}

}  // namespace
}  // namespace paygent::server::test
