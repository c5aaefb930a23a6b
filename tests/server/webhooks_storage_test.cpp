// Webhooks through paygentd's API and storage, on SQLite and PostgreSQL (docs/webhooks.md): the
// endpoints' API, the outbox written by the ingest that raised each alert (once per alert key),
// claims and attempts, the delivery log, a refused batch's alert and the forecast.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "meter/internal/str_cat.h"
#include "server/api.h"
#include "server/api_key.h"
#include "server/metrics.h"
#include "server/webhooks.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"

namespace paygent::server::test {
namespace {

using ::paygent::internal::str_cat;

constexpr std::int64_t kDayNs = 86'400'000'000'000;
// $1.00 a calendar month for everyone (test_now() is 2026-11-17T12:00Z: 16.5 days into November).
constexpr std::string_view kPlans =
    R"({"soft_gate_at":0.8,"hard_gate_at":1.0,"default_plan":"free","plans":[{"name":"free","max_spend_per_period":1.00}]})";

struct WebhooksFixture {
  explicit WebhooksFixture(StorageBackend& backend)
      : storage(backend.fresh()),
        api(std::make_unique<Api>(*storage, metrics,
                                  ApiOptions{.admin_token = std::string(kAdminToken),
                                             .forecast_horizon = absl::Hours(24 * 12),
                                             .on_alerts = [this] { ++wakes; },
                                             .clock = [] { return test_now(); }})) {
    HttpResponse r = call("POST", "/api/v1/products", R"({"name":"acme"})", kAdminToken);
    REQUIRE_MESSAGE(r.status == 201, r.body);
    key = paygent::testing::json_string_member(r.body, "api_key");
    r = call("POST", "/api/v1/config/plans", kPlans);
    REQUIRE_MESSAGE(r.status == 200, r.body);
  }

  HttpResponse call(std::string_view method, std::string_view target, std::string_view body = {},
                    std::string_view bearer = {}) {
    return api->handle_request(HttpRequest{.method = std::string(method),
                                           .target = std::string(target),
                                           .content_type = "application/json",
                                           .authorization = "Bearer " + std::string(bearer.empty() ? key : bearer),
                                           .body = std::string(body)});
  }
  // Creates an endpoint; returns its id and secret.
  std::pair<std::string, std::string> create(std::string_view body) {
    const HttpResponse r = call("POST", "/api/v1/webhooks", body);
    REQUIRE_MESSAGE(r.status == 201, r.body);
    return {paygent::testing::json_string_member(r.body, "id"), paygent::testing::json_string_member(r.body, "secret")};
  }
  HttpResponse spend(std::uint64_t n, std::string user, std::int64_t cost) {
    return call("POST", "/api/v1/events:batch",
                batch_json({TestEvent{.id = event_id(n, 31), .user_id = std::move(user), .cost_nanos = cost}}));
  }
  // Every delivery due now, each claimed for a day: one per product and claim, so claims until none.
  std::vector<WebhookDelivery> claim_all() {
    std::vector<WebhookDelivery> out;
    for (;;) {
      absl::StatusOr<std::vector<WebhookDelivery>> d = storage->claim_webhook_deliveries(
          absl::ToUnixNanos(absl::Now()), absl::ToUnixNanos(absl::Now()) + kDayNs, 100, {});
      REQUIRE_MESSAGE(d.ok(), d.status().ToString());
      REQUIRE(d->size() <= 1);
      if (d->empty()) return out;
      out.push_back(std::move(d->front()));
    }
  }

  std::unique_ptr<Storage> storage;
  Metrics metrics;
  int wakes = 0;
  std::unique_ptr<Api> api;
  std::string key;
};

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

TEST_CASE("server.webhooks_endpoints_api") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    const auto [id, secret] = f.create(R"({"url":"http://127.0.0.1:9/hook","events":["hard_gate","forecast"]})");
    CHECK(id.rfind("wh_", 0) == 0);
    CHECK(secret.rfind("whsec_", 0) == 0);
    CHECK(secret.size() == 6 + 64);
    const HttpResponse list = f.call("GET", "/api/v1/webhooks");
    REQUIRE(list.status == 200);
    CHECK(contains(list.body, id));
    CHECK(contains(list.body, R"("events":["hard_gate","forecast"])"));
    CHECK(!contains(list.body, secret));  // shown once, at creation
    // Bad input is a 400 naming the field.
    HttpResponse bad = f.call("POST", "/api/v1/webhooks", R"({"url":"ftp://x.example/"})");
    CHECK(bad.status == 400);
    CHECK(error_message(bad).rfind("url: ", 0) == 0);
    bad = f.call("POST", "/api/v1/webhooks", R"({"url":"http://x/","events":["hard_gate","nope"]})");
    CHECK(bad.status == 400);
    CHECK(error_message(bad).rfind("events[1]: ", 0) == 0);
    bad = f.call("POST", "/api/v1/webhooks", R"({"events":["hard_gate"]})");
    CHECK(bad.status == 400);
    CHECK(contains(error_message(bad), "url"));
    bad = f.call("POST", "/api/v1/webhooks", R"({"url":"http://x/","colour":"red"})");
    CHECK(bad.status == 400);
    CHECK(error_message(bad).rfind("colour", 0) == 0);
    CHECK(f.call("GET", "/api/v1/webhooks/" + id + "/deliveries?limit=0").status == 400);
    CHECK(f.call("GET", "/api/v1/webhooks/wh_nope/deliveries").status == 404);
    CHECK(f.call("DELETE", "/api/v1/webhooks/" + id).status == 200);
    CHECK(f.call("DELETE", "/api/v1/webhooks/" + id).status == 404);
    CHECK(!contains(f.call("GET", "/api/v1/webhooks").body, id));
  });
}

TEST_CASE("server.webhooks_outbox_written_by_ingest_once_per_alert") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    // Without endpoints nothing is queued.
    REQUIRE(f.spend(1, "big", 1'200'000'000).status == 200);
    CHECK(f.claim_all().empty());
    const auto [all, all_secret] = f.create(R"({"url":"http://127.0.0.1:9/all"})");
    const auto [hard, hard_secret] = f.create(R"({"url":"http://127.0.0.1:9/hard","events":["hard_gate"]})");
    // A batch takes "big2" over the cap, and "fast" to 0.6 of it 16.5 days in: predicted in 11 days.
    REQUIRE(f.call("POST", "/api/v1/events:batch",
                   batch_json({TestEvent{.id = event_id(2, 31), .user_id = "big2", .cost_nanos = 1'000'000'000},
                               TestEvent{.id = event_id(3, 31), .user_id = "fast", .cost_nanos = 600'000'000}}))
                .status == 200);
    CHECK(f.wakes == 1);
    std::vector<WebhookDelivery> d = f.claim_all();
    // big2's hard gate to both endpoints ("big" is not in this batch: its gate waits for its next
    // batch); fast's forecast to `all` only.
    REQUIRE(d.size() == 3);
    int hard_gates = 0, forecasts = 0;
    for (const WebhookDelivery& x : d) {
      CHECK(x.attempts == 0);
      CHECK(x.body.rfind("{\"delivery_id\":\"" + x.delivery_id + "\",\"event_id\":", 0) == 0);
      CHECK(x.secret == (contains(x.url, "/all") ? all_secret : hard_secret));
      if (x.type == "hard_gate") ++hard_gates;
      if (x.type == "forecast") {
        ++forecasts;
        CHECK(contains(x.url, "/all"));
        CHECK(contains(x.body, "\"predicted_reach_ns\":" + std::to_string(absl::ToUnixNanos(test_now()) + 11 * kDayNs)));
      }
    }
    CHECK(hard_gates == 2);
    CHECK(forecasts == 1);
    // Later batches (and a retried one) raise nothing new for the same users, limit and period.
    REQUIRE(f.spend(4, "big2", 5).status == 200);
    REQUIRE(f.spend(5, "fast", 5).status == 200);
    REQUIRE(f.call("POST", "/api/v1/events:batch",
                   batch_json({TestEvent{.id = event_id(3, 31), .user_id = "fast", .cost_nanos = 600'000'000}}))
                .status == 200);
    CHECK(f.claim_all().empty());  // (the three are claimed for a day)
    // A soft gate in a batch: to `all` only.
    REQUIRE(f.call("POST", "/api/v1/events:batch",
                   R"({"v":3,"events":[],"soft_gates":[{"user_id":"fast","limit":"total_spend","period_start_ns":)" +
                       std::to_string(ns_at(2026, 11, 1)) + R"(,"threshold_ppm":800000}]})")
                .status == 200);
    d = f.claim_all();
    REQUIRE(d.size() == 1);
    CHECK(d[0].type == "soft_gate");
    CHECK(contains(d[0].body, "\"threshold_ppm\":800000"));
    CHECK(contains(d[0].body, "\"spend_nanos\":600000005"));
  });
}

// A hard gate an application process reported (it refused a call, so nothing was spent): stored
// once per user, limit, period and threshold, shown in GET .../usage as "hard_gates", and raised
// as the hard_gate alert of that limit and period, once, whichever saw it first (docs/wire.md,
// "Hard gates").
TEST_CASE("server.hard_gates_reported_by_processes_are_stored_shown_and_alerted_once") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    f.create(R"({"url":"http://127.0.0.1:9/hard","events":["hard_gate"]})");
    const std::string november = std::to_string(ns_at(2026, 11, 1));
    const std::string fired = std::to_string(ns_at(2026, 11, 17, 9));
    auto gate = [&](std::string_view user, std::string_view limit) {
      return str_cat(R"({"user_id":")", user, R"(","limit":")", limit, R"(","period_start_ns":)", november,
                     R"(,"threshold_ppm":1000000,"fired_ns":)", fired, "}");
    };
    // Two processes' refusals of u1 on its period cap and one on a model limit; a soft gate beside.
    const std::string batch = str_cat(R"({"v":5,"events":[],"soft_gates":[{"user_id":"u1","limit":"total_spend",)",
                                      R"("period_start_ns":)", november, R"(,"threshold_ppm":1000000}],"hard_gates":[)",
                                      gate("u1", "total_spend"), ",", gate("u1", "total_spend"), ",",
                                      gate("u1", "model_limit:gpt-4o"), "]}");
    HttpResponse r = f.call("POST", "/api/v1/events:batch", batch);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    std::vector<WebhookDelivery> d = f.claim_all();
    REQUIRE(d.size() == 2);
    for (const WebhookDelivery& x : d) {
      CHECK(x.type == "hard_gate");
      CHECK(contains(x.body, R"("reported_by":"application","threshold_ppm":1000000,"fired_ns":)" + fired));
    }
    CHECK((contains(d[0].body, R"("limit":"total_spend")") != contains(d[1].body, R"("limit":"total_spend")")));
    CHECK((contains(d[0].body, R"("limit":"model_limit:gpt-4o")") != contains(d[1].body, R"("limit":"model_limit:gpt-4o")")));
    const std::string shown = str_cat(R"("hard_gates":[{"limit":"model_limit:gpt-4o","period_start_ns":)", november,
                                      R"(,"threshold_ppm":1000000,"fired_ns":)", fired,
                                      R"(},{"limit":"total_spend","period_start_ns":)", november,
                                      R"(,"threshold_ppm":1000000,"fired_ns":)", fired, "}]");
    r = f.call("GET", "/api/v1/users/u1/usage");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK_MESSAGE(contains(r.body, shown), r.body);
    // The soft gate at the same threshold is a soft gate still.
    CHECK(contains(r.body, str_cat(R"("soft_gates":[{"limit":"total_spend","period_start_ns":)", november,
                                   R"(,"threshold_ppm":1000000}])")));
    // Retried, and then u1's spend reaching the cap at ingest: nothing raised again, nothing doubled.
    REQUIRE(f.call("POST", "/api/v1/events:batch", batch).status == 200);
    REQUIRE(f.spend(7, "u1", 1'000'000'000).status == 200);
    CHECK(f.claim_all().empty());
    r = f.call("GET", "/api/v1/users/u1/usage");
    CHECK_MESSAGE(contains(r.body, shown), r.body);
    // Another user's usage holds none of them; nor does the same user id in another product.
    REQUIRE(f.spend(8, "u2", 5).status == 200);
    CHECK(contains(f.call("GET", "/api/v1/users/u2/usage").body, R"("hard_gates":[])"));
    HttpResponse other = f.call("POST", "/api/v1/products", R"({"name":"other"})", kAdminToken);
    REQUIRE(other.status == 201);
    const std::string other_key = paygent::testing::json_string_member(other.body, "api_key");
    REQUIRE(f.call("POST", "/api/v1/events:batch",
                   batch_json({TestEvent{.id = event_id(9, 31), .user_id = "u1", .cost_nanos = 5}}), other_key)
                .status == 200);
    other = f.call("GET", "/api/v1/users/u1/usage", {}, other_key);
    REQUIRE(other.status == 200);
    CHECK(contains(other.body, R"("hard_gates":[])"));
  });
}

// The outbox is written in the batch's transaction: when the alerts cannot be written (here
// alerts_of throws), nothing of the batch is stored either; once they can, both are.
TEST_CASE("server.webhooks_alerts_and_their_batch_commit_together") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    f.create(R"({"url":"http://127.0.0.1:9/x","events":["hard_gate"]})");
    const absl::StatusOr<std::string> product = f.storage->find_product_by_key(sha256_hex(f.key));
    REQUIRE(product.ok());
    const absl::StatusOr<PlanConfig> config = parse_plan_config(kPlans);
    REQUIRE(config.ok());
    const std::vector<EventRecord> batch = {record(event_id(9, 5), "u9", "gpt-4o", "s", 2'000'000'000, ns_at(2026, 11, 17, 10))};
    auto period_of = [](const UserRecord&) { return TimeRange{.from_ns = ns_at(2026, 11, 1), .to_ns = ns_at(2026, 12, 1)}; };
    auto failing = [](std::span<const UserUsage>, std::uint32_t) -> std::vector<WebhookAlert> {
      throw std::runtime_error("the alerts cannot be written");
    };
    CHECK_THROWS(static_cast<void>(f.storage->ingest_with_alerts(*product, batch, period_of, {}, failing)));
    const ReportQuery all{.from_ns = 0, .to_ns = ns_at(2027, 1, 1), .group_by = ReportGroup::kUser};
    CHECK(f.storage->report(*product, all)->empty());
    CHECK(f.claim_all().empty());
    const std::int64_t now = absl::ToUnixNanos(test_now());
    auto alerts = [&](std::span<const UserUsage> usage, std::uint32_t wanted) {
      return batch_alerts(*product, &*config, usage, {}, wanted, now, absl::Hours(1));
    };
    const absl::StatusOr<IngestResult> stored = f.storage->ingest_with_alerts(*product, batch, period_of, {}, alerts);
    REQUIRE_MESSAGE(stored.ok(), stored.status().ToString());
    CHECK(stored->accepted == 1);
    CHECK(f.storage->report(*product, all)->size() == 1);
    const std::vector<WebhookDelivery> d = f.claim_all();
    REQUIRE(d.size() == 1);
    CHECK(d[0].type == "hard_gate");
  });
}

TEST_CASE("server.webhooks_attempts_and_delivery_log") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    const auto [id, secret] = f.create(R"({"url":"http://127.0.0.1:9/x","events":["hard_gate"]})");
    REQUIRE(f.spend(1, "u1", 2'000'000'000).status == 200);
    std::vector<WebhookDelivery> d = f.claim_all();
    REQUIRE(d.size() == 1);
    const std::int64_t now = absl::ToUnixNanos(absl::Now());
    // A failed attempt: pending again at its next time, not before.
    REQUIRE(f.storage
                ->record_webhook_attempt(d[0].key, WebhookAttempt{.next = WebhookAttempt::Next::kRetry,
                                                                  .at_ns = now,
                                                                  .next_attempt_ns = now + 10 * kDayNs,
                                                                  .http_status = 500,
                                                                  .error = "HTTP 500"})
                .ok());
    CHECK(f.claim_all().empty());
    HttpResponse log = f.call("GET", "/api/v1/webhooks/" + id + "/deliveries");
    REQUIRE(log.status == 200);
    CHECK(contains(log.body, "\"delivery_id\":\"" + d[0].delivery_id + "\""));
    CHECK(contains(log.body, R"("status":"pending","attempts":1)"));
    CHECK(contains(log.body, R"("last_http_status":500,"last_error":"HTTP 500")"));
    absl::StatusOr<std::vector<WebhookDelivery>> later =
        f.storage->claim_webhook_deliveries(now + 10 * kDayNs, now + 11 * kDayNs, 10, {});
    REQUIRE(later.ok());
    REQUIRE(later->size() == 1);
    CHECK(later->front().attempts == 1);
    CHECK(later->front().delivery_id == d[0].delivery_id);  // retries keep the id and the body
    CHECK(later->front().body == d[0].body);
    REQUIRE(f.storage
                ->record_webhook_attempt(d[0].key, WebhookAttempt{.next = WebhookAttempt::Next::kDelivered,
                                                                  .at_ns = now + 10 * kDayNs,
                                                                  .http_status = 204})
                .ok());
    log = f.call("GET", "/api/v1/webhooks/" + id + "/deliveries?limit=5");
    CHECK(contains(log.body, R"("status":"delivered","attempts":2)"));
    CHECK(contains(log.body, R"("next_attempt_ns":0)"));
    // Deleting the endpoint drops its deliveries.
    REQUIRE(f.call("DELETE", "/api/v1/webhooks/" + id).status == 200);
    CHECK(f.storage->claim_webhook_deliveries(now + 20 * kDayNs, now + 21 * kDayNs, 10, {})->empty());
  });
}

// A product with a backlog does not hold back another's deliveries; a busy product gets none.
TEST_CASE("server.webhooks_claims_spread_over_products") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    f.create(R"({"url":"http://127.0.0.1:9/a","events":["hard_gate"]})");
    for (std::uint64_t i = 0; i < 5; ++i) REQUIRE(f.spend(i, "u" + std::to_string(i), 1'000'000'000).status == 200);
    // A second product, whose one alert is raised last.
    HttpResponse r = f.call("POST", "/api/v1/products", R"({"name":"other"})", kAdminToken);
    REQUIRE(r.status == 201);
    const std::string first_key = f.key;
    f.key = paygent::testing::json_string_member(r.body, "api_key");
    REQUIRE(f.call("POST", "/api/v1/config/plans", kPlans).status == 200);
    f.create(R"({"url":"http://127.0.0.1:9/b","events":["hard_gate"]})");
    REQUIRE(f.spend(100, "v", 1'000'000'000).status == 200);
    const std::int64_t now = absl::ToUnixNanos(absl::Now());
    absl::StatusOr<std::vector<WebhookDelivery>> d = f.storage->claim_webhook_deliveries(now, now + kDayNs, 10, {});
    REQUIRE(d.ok());
    REQUIRE(d->size() == 2);  // one of each product
    CHECK(d->at(0).product != d->at(1).product);
    // With the first product busy, only the second's are offered (it has none left due now).
    const std::int64_t busy[] = {d->at(0).product, d->at(1).product};
    d = f.storage->claim_webhook_deliveries(now, now + kDayNs, 10, std::span<const std::int64_t>(busy, 1));
    REQUIRE(d.ok());
    CHECK(d->empty());
    d = f.storage->claim_webhook_deliveries(now, now + kDayNs, 10, std::span<const std::int64_t>(busy + 1, 1));
    REQUIRE(d.ok());
    REQUIRE(d->size() == 1);
    CHECK(d->at(0).product == busy[0]);
    f.key = first_key;
  });
}

TEST_CASE("server.webhooks_refused_batch_raises_delivery_failure") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    f.create(R"({"url":"http://127.0.0.1:9/x","events":["delivery_failure"]})");
    CHECK(f.call("POST", "/api/v1/events:batch", R"({"events":[{"id":"nothex"}]})").status == 400);
    CHECK(f.call("POST", "/api/v1/events:batch", R"({"events":[{"id":"nothex"}]})").status == 400);  // same minute
    const std::vector<WebhookDelivery> d = f.claim_all();
    REQUIRE(d.size() == 1);
    CHECK(d[0].type == "delivery_failure");
    CHECK(contains(d[0].body, "\"http_status\":400"));
    CHECK(contains(d[0].body, "events[0]"));
  });
}

TEST_CASE("server.webhooks_batch_refused_413_by_the_http_layer_raises_delivery_failure") {
  // A batch over the body limit is refused before it is read (HttpServer calls Api::refuse with
  // the request's head): its product still hears of it. Without a valid key, or on another route,
  // nothing is raised.
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    f.create(R"({"url":"http://127.0.0.1:9/x","events":["delivery_failure"]})");
    HttpRequest head{.method = "POST", .target = "/api/v1/events:batch", .authorization = "Bearer wrong"};
    CHECK(f.api->refuse(head.target, 413, "body: over the limit", &head).status == 413);
    head.authorization = "Bearer " + f.key;
    head.target = "/api/v1/leases";
    CHECK(f.api->refuse(head.target, 413, "body: over the limit", &head).status == 413);
    CHECK(f.claim_all().empty());
    head.target = "/api/v1/events:batch";
    CHECK(f.api->refuse(head.target, 413, "body: over the limit of 8388608 bytes", &head).status == 413);
    const std::vector<WebhookDelivery> d = f.claim_all();
    REQUIRE(d.size() == 1);
    CHECK(d[0].type == "delivery_failure");
    CHECK(contains(d[0].body, "\"http_status\":413"));
  });
}

TEST_CASE("server.webhooks_forecast_endpoint") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    REQUIRE(f.spend(1, "fast", 600'000'000).status == 200);
    REQUIRE(f.spend(2, "slow", 100'000'000).status == 200);
    REQUIRE(f.spend(3, "over", 1'500'000'000).status == 200);
    REQUIRE(f.spend(4, "faster", 800'000'000).status == 200);
    HttpResponse r = f.call("GET", "/api/v1/forecast");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    simdjson::dom::parser parser;
    simdjson::dom::element root = parse_json(parser, r.body);
    simdjson::dom::array rows = root["forecasts"].get_array();
    REQUIRE(rows.size() == 2);
    // Soonest first: "faster" (0.2 left at 0.8 per 16.5 days: 4.125 days), then "fast" (11 days).
    const std::int64_t now = absl::ToUnixNanos(test_now());
    CHECK(std::string_view(root.at_pointer("/forecasts/0/user_id").get_string()) == "faster");
    CHECK(int_at(root, "/forecasts/0/predicted_reach_ns") == now + 4 * kDayNs + kDayNs / 8);
    CHECK(std::string_view(root.at_pointer("/forecasts/1/user_id").get_string()) == "fast");
    CHECK(int_at(root, "/forecasts/1/predicted_reach_ns") == now + 11 * kDayNs);
    CHECK(int_at(root, "/forecasts/1/cap_nanos") == 1'000'000'000);
    CHECK(int_at(root, "/users_scanned") == 4);
    r = f.call("GET", "/api/v1/forecast?within_s=" + std::to_string(5 * 86400));
    CHECK(parse_json(parser, r.body)["forecasts"].get_array().size() == 1);
    r = f.call("GET", "/api/v1/forecast?within_s=soon");
    CHECK(r.status == 400);
    CHECK(error_message(r).rfind("within_s: ", 0) == 0);
  });
}

// A plan's price (what the customer pays per period): the forecast names the customers whose cost
// is on course to pass it ("plan_price"), those past it already at now, beside the cap's rows; an
// ingest raises the forecast webhook of each within the horizon, once.
TEST_CASE("server.webhooks_forecast_names_customers_costing_more_than_their_plan") {
  for_each_backend([](StorageBackend& backend) {
    WebhooksFixture f(backend);
    HttpResponse r = f.call("POST", "/api/v1/config/plans",
                            R"({"default_plan":"free","plans":[{"name":"free","price":0.50,"max_spend_per_period":1.00}]})");
    REQUIRE_MESSAGE((r.status == 200 || r.status == 201), r.body);
    f.create(R"({"url":"http://127.0.0.1:9/x","events":["forecast"]})");
    REQUIRE(f.spend(1, "fast", 600'000'000).status == 200);  // past the price; the cap in 11 days
    REQUIRE(f.spend(2, "mid", 330'000'000).status == 200);   // the price in 8.5 days; the cap after November
    REQUIRE(f.spend(3, "slow", 100'000'000).status == 200);  // neither this period
    r = f.call("GET", "/api/v1/forecast");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    simdjson::dom::parser parser;
    simdjson::dom::element root = parse_json(parser, r.body);
    REQUIRE(root["forecasts"].get_array().size() == 3);
    const std::int64_t now = absl::ToUnixNanos(test_now());
    auto row = [&](int i, const char* user, const char* limit, std::int64_t reach, std::int64_t cap) {
      const std::string at = "/forecasts/" + std::to_string(i);
      INFO("row ", i);
      CHECK(std::string_view(root.at_pointer(at + "/user_id").get_string()) == user);
      CHECK(std::string_view(root.at_pointer(at + "/limit").get_string()) == limit);
      CHECK(int_at(root, at + "/predicted_reach_ns") == reach);
      CHECK(int_at(root, at + "/cap_nanos") == cap);
    };
    row(0, "fast", "plan_price", now, 500'000'000);
    row(1, "mid", "plan_price", now + 8 * kDayNs + kDayNs / 2, 500'000'000);
    row(2, "fast", "total_spend", now + 11 * kDayNs, 1'000'000'000);
    // Within the fixture's 12-day horizon at ingest: the three rows above, each raised once (more
    // spend by the same users raises none again).
    std::vector<WebhookDelivery> d = f.claim_all();
    REQUIRE(d.size() == 3);
    std::set<std::string> raised;
    for (const WebhookDelivery& x : d) {
      CHECK(x.type == "forecast");
      for (const char* what : {R"("user_id":"fast","limit":"plan_price")", R"("user_id":"fast","limit":"total_spend")",
                               R"("user_id":"mid","limit":"plan_price")"}) {
        if (contains(x.body, what)) raised.insert(what);
      }
    }
    CHECK(raised.size() == 3);
    REQUIRE(f.spend(4, "fast", 1).status == 200);
    REQUIRE(f.spend(5, "mid", 1).status == 200);
    CHECK(f.claim_all().empty());
  });
}

}  // namespace
}  // namespace paygent::server::test
