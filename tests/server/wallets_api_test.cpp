// Credit wallets through paygentd's Api, on SQLite and PostgreSQL (docs/billing.md, "Credit
// wallets"; issue 11): top-ups (idempotent by id), debits as billed usage arrives, a wallet running
// out mid-period with the rest shown and priced as overage, the balance in the ingest reply (what
// the library gates on), a duplicated event debited once, and bad top-ups refused by name.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
    CHECK(top_up(f, R"({"credits":"200","id":"t1"})").status == 409);

    // Usage arriving is debited at once, and the ingest reply carries the balance.
    const std::string r1 = sent(f, {billed(2, R"({"tokens":"500","replicas":"2"})")});  // 10 credits
    CHECK(wallet_field(HttpResponse{.body = r1}, {"usage", "c1", "wallet"}, "balance") == "50");
    CHECK(wallet_field(HttpResponse{.body = r1}, {"usage", "c1", "wallet"}, "granted_nanocredits") == "100000000000");
    CHECK(wallet_field(HttpResponse{.body = r1}, {"usage", "c1", "wallet"}, "used_nanocredits") == "50000000000");
    // 60 credits more with 50 left: the wallet runs out, the rest is overage (never a negative balance).
    const std::string r2 = sent(f, {billed(3, R"({"tokens":"3000","replicas":"2"})")});
    CHECK(wallet_field(HttpResponse{.body = r2}, {"usage", "c1", "wallet"}, "balance") == "0");
    CHECK(wallet_field(HttpResponse{.body = r2}, {"usage", "c1", "wallet"}, "overage") == "10");
    CHECK(wallet_field(HttpResponse{.body = r2}, {"usage", "c1", "wallet"}, "used_nanocredits") == "100000000000");
    CHECK(paid_line(f) == "110 used 100 overage 10 $nanos 200000000");  // 10 x $0.02
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

    // Another customer's usage and another product's key touch none of it.
    sent(f, {billed(5, R"({"tokens":"100000","replicas":"1"})", "c2")});
    CHECK(wallet_field(f.call("GET", "/api/v1/customers/c1/wallet"), {"wallet"}, "balance") == "20");
    const HttpResponse other = f.call("POST", "/api/v1/products", R"({"name":"other"})", kAdminToken);
    const std::string other_key = paygent::testing::json_string_member(other.body, "api_key");
    CHECK(f.call("GET", "/api/v1/customers/c1/wallet", {}, other_key).status == 404);
    CHECK(f.call("POST", "/api/v1/customers/c1/wallet/top-ups", R"({"credits":"5"})", other_key).status == 404);
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

}  // namespace
}  // namespace paygent::server::test
