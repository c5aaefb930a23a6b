// What one product may do to paygentd and to the other products (issue 8, an attacker's findings):
// a plan config is bounded and parsed once per change, not per request, and a long request of one
// product does not hold what the others need; no batch can take a total past int64 (so that every
// usage and report still answers); a number out of range names its field.
#include "server/api.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sqlite3.h>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "server/sqlite_storage.h"
#include "server/wire.h"
#include "tests/server/fixture.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server::test {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;
using paygent::testing::TempDir;

constexpr std::int64_t kInt64Max = INT64_MAX;

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }
bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

// A plan config of `plans` plans with `models` model limits each (and as many cost rates when
// `rates`), `thresholds` soft gates at the top level.
std::string plan_config(std::size_t plans, std::size_t models, bool rates = false, std::size_t thresholds = 1) {
  std::string out = "{\"soft_gate_at\":[";
  for (std::size_t t = 0; t < thresholds; ++t) {
    out += (t ? "," : "") + std::string("0.") + std::to_string(500000 + t * 10000);
  }
  out += "],\"hard_gate_at\":1.0,\"default_plan\":\"p0\",\"plans\":[";
  for (std::size_t p = 0; p < plans; ++p) {
    out += (p ? "," : "") + std::string("{\"name\":\"p") + std::to_string(p) +
           "\",\"max_spend_per_period\":49.00,\"period\":\"day\",\"model_limits\":{";
    for (std::size_t m = 0; m < models; ++m) {
      out += (m ? "," : "") + std::string("\"m") + std::to_string(m) + "\":{\"max_tokens_per_period\":50000}";
    }
    out += "}";
    if (rates) {
      out += ",\"cost_rates\":{";
      for (std::size_t m = 0; m < models; ++m) {
        out += (m ? "," : "") + std::string("\"m") + std::to_string(m) + "\":{\"input\":0.0025,\"output\":0.01}";
      }
      out += "}";
    }
    out += "}";
  }
  return out + "]}";
}

// The largest config of this shape that the bounds allow: kMaxPlans plans, and as many model
// limits each as fit in kMaxPlanConfigBytes.
std::string maximal_plan_config() {
  std::size_t models = 1;
  while (plan_config(kMaxPlans, models + 1).size() <= kMaxPlanConfigBytes) ++models;
  return plan_config(kMaxPlans, models);
}

template <class F>
double millis(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ----------------------------------------------------------------------------------------------
// 1. Noisy neighbour: bounded plan configs, parsed once per change.

TEST_CASE("server.limits.plan_config_past_a_bound_is_refused_naming_it") {
  ApiFixture f;
  const std::string key = f.new_product();

  HttpResponse r = f.call("POST", "/api/v1/config/plans", plan_config(kMaxPlans + 1, 1), key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(error_message(r) == "plans: at most " + std::to_string(kMaxPlans) + " plans, not " +
                                        std::to_string(kMaxPlans + 1),
                r.body);

  r = f.call("POST", "/api/v1/config/plans", plan_config(2, kMaxModelsPerPlan + 1), key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "plans[0].model_limits: at most " + std::to_string(kMaxModelsPerPlan) + " models"),
                r.body);

  r = f.call("POST", "/api/v1/config/plans", plan_config(2, kMaxModelsPerPlan, true), key);
  CHECK(r.status == 200);
  r = f.call("POST", "/api/v1/config/plans", plan_config(2, kMaxModelsPerPlan + 1, true), key);
  CHECK(r.status == 400);

  r = f.call("POST", "/api/v1/config/plans", plan_config(1, 1, false, kMaxSoftGates + 1), key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "soft_gate_at: at most " + std::to_string(kMaxSoftGates) + " thresholds"),
                r.body);
  const TableCounts before = f.counts();

  // The attacker's config: 22,000 plans in 3.7 MB, under the 4 MiB body limit of every request.
  const std::string huge = plan_config(22000, 3);
  REQUIRE(huge.size() < f.api->options().max_body_bytes);
  REQUIRE(huge.size() > kMaxPlanConfigBytes);
  r = f.call("POST", "/api/v1/config/plans", huge, key);
  CHECK(r.status == 413);
  CHECK_MESSAGE(contains(error_message(r), "over the limit of " + std::to_string(kMaxPlanConfigBytes) + " bytes"), r.body);
  CHECK(f.counts() == before);

  // The largest allowed one is accepted.
  r = f.call("POST", "/api/v1/config/plans", maximal_plan_config(), key);
  CHECK_MESSAGE(r.status == 200, r.body);
}

TEST_CASE("server.limits.ingest_with_a_maximal_plan_config_is_fast") {
  ApiFixture f;
  const std::string key = f.new_product();
  const std::string config = maximal_plan_config();
  REQUIRE(f.call("POST", "/api/v1/config/plans", config, key).status == 200);
  std::vector<double> ingest, usage;
  for (int i = 0; i < 15; ++i) {
    ingest.push_back(millis([&] {
      const HttpResponse r = f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(i)}}), key);
      REQUIRE_MESSAGE(r.status == 200, r.body);
    }));
    usage.push_back(millis([&] { REQUIRE(f.call("GET", "/api/v1/users/u1/usage", {}, key).status == 200); }));
  }
  MESSAGE("with a ", config.size(), "-byte plan config: 1-event ingest median ", median(ingest),
          " ms (with its fsync), GET .../usage median ", median(usage), " ms");
  CHECK(median(ingest) < 50);
  // Parsing that config takes ~25 ms here: a read that is much faster did not parse it.
  CHECK(median(usage) < 10);
}

// Two paygentd over one database: a config replaced through one is seen by the other at once.
TEST_CASE("server.limits.plan_config_replaced_by_another_process_is_seen") {
  ApiFixture a;
  const std::string key = a.new_product();
  std::unique_ptr<SqliteStorage> other_storage = ApiFixture::open_storage(a.db_path);
  Metrics other_metrics;
  Api b(*other_storage, other_metrics, ApiOptions{.clock = [&] { return a.now; }});
  auto call_b = [&](std::string_view method, std::string_view target, std::string_view body) {
    return b.handle_request(HttpRequest{.method = std::string(method),
                                        .target = std::string(target),
                                        .content_type = "application/json",
                                        .authorization = "Bearer " + key,
                                        .body = std::string(body)});
  };
  simdjson::dom::parser parser;
  auto version_of = [&](const HttpResponse& r) {
    REQUIRE_MESSAGE(r.status == 200, r.body);
    return std::string(parse_json(parser, r.body)["plans_version"].get_string().value());
  };
  auto plan_of_u1 = [&]() {
    const HttpResponse r = call_b("GET", "/api/v1/users/u1/usage", {});
    REQUIRE_MESSAGE(r.status == 200, r.body);
    simdjson::dom::element plan = parse_json(parser, r.body)["plan"];
    return plan.is_null() ? std::string("null") : std::string(plan.get_string().value());
  };

  std::string v0 = version_of(call_b("POST", "/api/v1/events:batch", batch_json({{.id = event_id(1)}})));
  CHECK(v0 == "");
  CHECK(plan_of_u1() == "null");
  REQUIRE(a.call("POST", "/api/v1/config/plans", plan_config(3, 1), key).status == 200);
  const std::string v1 = version_of(call_b("POST", "/api/v1/events:batch", batch_json({{.id = event_id(2)}})));
  CHECK(v1 != "");
  CHECK(plan_of_u1() == "p0");
  std::string next = plan_config(3, 1);
  next.replace(next.find("\"default_plan\":\"p0\""), 19, "\"default_plan\":\"p2\"");
  REQUIRE(a.call("POST", "/api/v1/config/plans", next, key).status == 200);
  const std::string v2 = version_of(call_b("POST", "/api/v1/usage:query", R"({"users":["u1"]})"));
  CHECK(v2 != v1);
  CHECK(plan_of_u1() == "p2");
  // A subscription through b checks the plan against the new config.
  REQUIRE(a.call("POST", "/api/v1/config/plans", R"({"plans":[{"name":"only"}]})", key).status == 200);
  const HttpResponse r = call_b("POST", "/api/v1/users/u1/subscription",
                                R"({"plan":"p2","period_start":"2026-11-01T00:00:00Z","period_end":"2026-12-01T00:00:00Z"})");
  CHECK(r.status == 404);
}

// Over HTTP: a product whose every ingest carries the largest config, from 8 threads, does not
// stall /healthz or another product's ingest.
TEST_CASE("server.limits.a_product_with_a_maximal_config_does_not_stall_the_others") {
  TempDir dir("paygentd-neighbour");
  auto paygentd = PaygentdProcess::start(
      {.data_dir = dir.path(), .admin_token = "admin", .extra_args = {"--synchronous", "normal"}});
  HttpClient http(paygentd->port());
  const std::string noisy = paygent::testing::create_product(http, "admin", "noisy");
  const std::string quiet = paygent::testing::create_product(http, "admin", "quiet");
  const auto put = http.request("POST", "/api/v1/config/plans", maximal_plan_config(), noisy);
  REQUIRE(put);
  REQUIRE_MESSAGE(put->status == 200, put->body);

  std::atomic<bool> stop{false};
  std::atomic<int> noisy_batches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      HttpClient client(paygentd->port());
      for (std::uint64_t i = 0; !stop; ++i) {
        const auto r = client.request("POST", "/api/v1/events:batch",
                                      batch_json({{.id = event_id(i, 100 + static_cast<std::uint64_t>(t))}}), noisy);
        if (!r || r->status != 200) break;
        noisy_batches.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::vector<double> healthz, ingest;
  HttpClient probe(paygentd->port());
  for (int i = 0; i < 20; ++i) {
    healthz.push_back(millis([&] {
      const auto r = probe.request("GET", "/healthz");
      REQUIRE(r);
      CHECK(r->status == 200);
    }));
    ingest.push_back(millis([&] {
      const auto r = probe.request("POST", "/api/v1/events:batch", batch_json({{.id = event_id(i, 7)}}), quiet);
      REQUIRE(r);
      CHECK(r->status == 200);
    }));
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  MESSAGE("under 8 threads of the noisy product (", noisy_batches.load(), " batches): /healthz median ",
          median(healthz), " ms, max ", *std::max_element(healthz.begin(), healthz.end()),
          " ms; the quiet product's ingest median ", median(ingest), " ms, max ",
          *std::max_element(ingest.begin(), ingest.end()), " ms");
  CHECK(noisy_batches.load() > 0);
  CHECK(median(healthz) < 50);
  CHECK(median(ingest) < 50);
}

// A slow report of one product (every event of its history, by session) must not hold the lock
// that another product's ingest needs.
TEST_CASE("server.limits.a_slow_report_does_not_stall_another_products_ingest") {
  ApiFixture f;
  f.storage = nullptr;
  f.api = nullptr;
  {
    absl::StatusOr<std::unique_ptr<SqliteStorage>> s =
        SqliteStorage::open(f.db_path, SqliteOptions{.synchronous = SqliteOptions::Synchronous::kNormal});
    REQUIRE(s.ok());
    f.storage = *std::move(s);
    f.api = f.make_api(std::string(kAdminToken), 4 << 20);
  }
  const std::string big = f.new_product("big");
  const std::string other = f.new_product("other");
  for (int b = 0; b < 100; ++b) {
    std::vector<TestEvent> events;
    for (int i = 0; i < 1000; ++i) {
      events.push_back({.id = event_id(static_cast<std::uint64_t>(b * 1000 + i), 5),
                        .user_id = "u" + std::to_string(i % 50),
                        .session_id = "s" + std::to_string(b * 1000 + i),
                        .ts_ns = ns_at(2026, 11, 1 + b % 16, 10)});
    }
    REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json(events), big).status == 200);
  }
  double report_alone = 0;
  for (int i = 0; i < 2; ++i) {  // the second one warm
    report_alone = millis([&] {
      const HttpResponse r =
          f.call("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=session", {}, big);
      REQUIRE(r.status == 200);
    });
  }
  std::atomic<bool> done{false};
  std::thread reporter([&] {
    while (!done) {
      f.call("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=session", {}, big);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::vector<double> ingest;
  for (int i = 0; i < 10; ++i) {
    ingest.push_back(millis([&] {
      REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(static_cast<std::uint64_t>(i), 77)}}),
                     other)
                  .status == 200);
    }));
  }
  done = true;
  reporter.join();
  MESSAGE("a report over 100,000 events by session takes ", report_alone, " ms; meanwhile another product's ",
          "1-event ingest: median ", median(ingest), " ms, max ", *std::max_element(ingest.begin(), ingest.end()), " ms");
  // Half the report's time is its reply's JSON, outside any lock: an ingest waits for a report's
  // reads half the time if it must wait for them at all.
  CHECK(*std::max_element(ingest.begin(), ingest.end()) < report_alone / 3);
}

// A Storage that counts the reads of plan configs, passing every call to another.
class CountingStorage final : public Storage {
 public:
  explicit CountingStorage(Storage& inner) : inner_(inner) {}
  std::atomic<int> config_reads{0};

  absl::Status create_product(std::string_view id, std::string_view name, std::string_view key) override {
    return inner_.create_product(id, name, key);
  }
  absl::StatusOr<std::string> find_product_by_key(std::string_view key) override { return inner_.find_product_by_key(key); }
  absl::Status create_user(std::string_view p, std::string_view u, std::string_view name) override {
    return inner_.create_user(p, u, name);
  }
  absl::StatusOr<UserRecord> find_user(std::string_view p, std::string_view u) override { return inner_.find_user(p, u); }
  absl::Status set_subscription(std::string_view p, std::string_view u, const Subscription& s) override {
    return inner_.set_subscription(p, u, s);
  }
  absl::Status put_plan_config(std::string_view p, std::string_view json) override { return inner_.put_plan_config(p, json); }
  absl::StatusOr<std::optional<std::string>> plan_config(std::string_view p) override {
    config_reads.fetch_add(1);
    return inner_.plan_config(p);
  }
  absl::StatusOr<std::int64_t> plan_config_revision(std::string_view p) override { return inner_.plan_config_revision(p); }
  absl::StatusOr<IngestResult> ingest(std::string_view p, std::span<const EventRecord> e) override {
    return inner_.ingest(p, e);
  }
  absl::StatusOr<IngestResult> ingest_with_usage(std::string_view p, std::span<const EventRecord> e, PeriodOf period_of,
                                                 std::span<const SoftGateFired> g) override {
    return inner_.ingest_with_usage(p, e, period_of, g);
  }
  absl::StatusOr<std::vector<SoftGateFired>> soft_gates_fired(std::string_view p, std::string_view u,
                                                              TimeRange period) override {
    return inner_.soft_gates_fired(p, u, period);
  }
  absl::StatusOr<std::vector<SoftGateFired>> hard_gates_fired(std::string_view p, std::string_view u,
                                                              TimeRange period) override {
    return inner_.hard_gates_fired(p, u, period);
  }
  absl::StatusOr<std::vector<UserUsage>> usage_of(std::string_view p, std::span<const std::string> u,
                                                  PeriodOf period_of) override {
    return inner_.usage_of(p, u, period_of);
  }
  absl::StatusOr<GroupedTotals> report(std::string_view p, const ReportQuery& q) override { return inner_.report(p, q); }

 private:
  Storage& inner_;
};

// Storage::find_users' default (one find_user per id; CountingStorage keeps it) answers as the SQL
// storage's own (a few queries): id order, repeats and unknown ids left out, another product's
// users not seen, an unknown product none.
TEST_CASE("server.storage_find_users_default_answers_as_the_sql_one") {
  ApiFixture f;
  Storage& sql = *f.storage;
  CountingStorage by_default(sql);
  REQUIRE(sql.create_product("fa", "a", std::string(64, 'a')).ok());
  REQUIRE(sql.create_product("fb", "b", std::string(64, 'b')).ok());
  for (const char* id : {"u3", "u1", "u10", "u2"}) {
    REQUIRE(sql.create_user("fa", id, std::string("name of ") + id).ok());
  }
  REQUIRE(sql.set_subscription("fa", "u10", {.plan = "pro", .period_start_ns = 5, .period_end_ns = 9}).ok());
  REQUIRE(sql.create_user("fb", "only-in-b", "").ok());
  const std::vector<std::string_view> asked = {"u2", "nobody", "u10", "u2", "only-in-b", "u3", "u1", "u10"};
  for (const std::string_view product : {"fa", "fb", "no-such-product"}) {
    CAPTURE(product);
    const auto mine = by_default.find_users(product, asked);
    const auto theirs = sql.find_users(product, asked);
    REQUIRE(mine.ok());
    REQUIRE(theirs.ok());
    REQUIRE(mine->size() == theirs->size());
    for (std::size_t i = 0; i < mine->size(); ++i) {
      CHECK((*mine)[i].user_id == (*theirs)[i].user_id);
      CHECK((*mine)[i].name == (*theirs)[i].name);
      CHECK((*mine)[i].subscription == (*theirs)[i].subscription);
    }
  }
  const auto in_a = by_default.find_users("fa", asked);
  REQUIRE(in_a->size() == 4);
  CHECK((*in_a)[0].user_id == "u1");  // bytewise: u1 < u10 < u2 < u3
  CHECK((*in_a)[1].user_id == "u10");
  REQUIRE((*in_a)[1].subscription.has_value());
  CHECK((*in_a)[1].subscription->plan == "pro");
  CHECK((*in_a)[3].user_id == "u3");
  CHECK(by_default.find_users("fb", asked)->size() == 1);
  CHECK(by_default.find_users("no-such-product", asked)->empty());
}

// The config is read (and parsed) once per change, however many requests use it, from however
// many threads.
TEST_CASE("server.limits.a_plan_config_is_read_once_per_change") {
  ApiFixture f;
  const std::string key = f.new_product();
  CountingStorage counting(*f.storage);
  Api api(counting, f.metrics, ApiOptions{.clock = [&] { return f.now; }});
  auto call = [&](std::string_view method, std::string_view target, std::string_view body) {
    return api.handle_request(HttpRequest{.method = std::string(method),
                                          .target = std::string(target),
                                          .content_type = "application/json",
                                          .authorization = "Bearer " + key,
                                          .body = std::string(body)});
  };
  for (int change = 0; change < 3; ++change) {
    CAPTURE(change);
    REQUIRE(call("POST", "/api/v1/config/plans", plan_config(100 + static_cast<std::size_t>(change), 50)).status == 200);
    const int before = counting.config_reads.load();
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 10; ++i) {
          const std::uint64_t n = static_cast<std::uint64_t>(change * 1000 + t * 100 + i);
          CHECK(call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(n, 3)}})).status == 200);
          CHECK(call("GET", "/api/v1/users/u1/usage", {}).status == 200);
          CHECK(call("POST", "/api/v1/usage:query", R"({"users":["u1"]})").status == 200);
        }
      });
    }
    for (std::thread& t : threads) t.join();
    CHECK(call("GET", "/api/v1/config/plans", {}).status == 200);
    CHECK(counting.config_reads.load() - before == 1);
  }
}

// ----------------------------------------------------------------------------------------------
// 2. Overflow: no stored total can pass int64, so every read answers.

void check_everything_answers(ApiFixture& f, const std::string& key) {
  for (const char* user : {"u1", "u2"}) {
    const HttpResponse r = f.call("GET", std::string("/api/v1/users/") + user + "/usage", {}, key);
    CHECK_MESSAGE(r.status == 200, user, ": ", r.body);
  }
  for (const char* group : {"user", "model", "session", "day", "month"}) {
    for (const char* user : {"", "&user_id=u1", "&user_id=u2"}) {
      const HttpResponse r = f.call(
          "GET", std::string("/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=") + group + user, {},
          key);
      CHECK_MESSAGE(r.status == 200, group, user, ": ", r.body);
    }
  }
  const HttpResponse q = f.call("POST", "/api/v1/usage:query", R"({"users":["u2","u1","u3"]})", key);
  CHECK_MESSAGE(q.status == 200, q.body);
}

TEST_CASE("server.limits.a_batch_past_the_largest_total_is_refused_and_stores_nothing") {
  ApiFixture f;
  const std::string key = f.new_product();
  REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(1), .user_id = "u2"}, {.id = event_id(2)}}), key)
              .status == 200);
  const TableCounts before = f.counts();
  // Each (user, day, model) row fits; the user's period total does not.
  const std::int64_t half = kInt64Max / 2 + 1;
  const std::string batch = batch_json({{.id = event_id(10), .model = "a", .cost_nanos = half, .ts_ns = ns_at(2026, 11, 10)},
                                        {.id = event_id(11), .model = "b", .cost_nanos = 5, .ts_ns = ns_at(2026, 11, 11)},
                                        {.id = event_id(12), .model = "c", .cost_nanos = half, .ts_ns = ns_at(2026, 11, 12)}});
  HttpResponse r = f.call("POST", "/api/v1/events:batch", batch, key);
  CHECK(r.status == 400);
  CHECK(error_code(r) == "invalid_argument");
  CHECK_MESSAGE(starts_with(error_message(r), "events[2].cost_nanos: "), r.body);
  CHECK_MESSAGE(contains(error_message(r), "\"u1\""), r.body);
  CHECK_MESSAGE(contains(error_message(r), "9223372036854775807"), r.body);
  CHECK(f.counts() == before);
  check_everything_answers(f, key);

  // Tokens too.
  r = f.call("POST", "/api/v1/events:batch",
             batch_json({{.id = event_id(20), .input_tokens = half, .ts_ns = ns_at(2026, 11, 10)},
                         {.id = event_id(21), .input_tokens = half, .ts_ns = ns_at(2026, 10, 10)}}),
             key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "events[1].input_tokens: "), r.body);
  CHECK(f.counts() == before);
  check_everything_answers(f, key);
  // And the product goes on.
  r = f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(99, 99), .user_id = "u2"}}), key);
  CHECK_MESSAGE(r.status == 200, r.body);
}

TEST_CASE("server.limits.totals_across_batches_and_users_stay_readable") {
  ApiFixture f;
  const std::string key = f.new_product();
  // One user at the largest amount, over two days and models...
  REQUIRE(f.call("POST", "/api/v1/events:batch",
                 batch_json({{.id = event_id(1), .model = "a", .cost_nanos = kInt64Max - 100, .ts_ns = ns_at(2026, 11, 10)},
                             {.id = event_id(2), .model = "b", .cost_nanos = 50, .ts_ns = ns_at(2026, 11, 11)}}),
                 key)
              .status == 200);
  const TableCounts one = f.counts();
  // ...then more for them in a later batch, or for another user (a report by day, model or month
  // sums both) is refused.
  HttpResponse r = f.call("POST", "/api/v1/events:batch",
                          batch_json({{.id = event_id(3), .model = "c", .cost_nanos = 51, .ts_ns = ns_at(2026, 11, 12)}}), key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "events[0].cost_nanos: "), r.body);
  r = f.call("POST", "/api/v1/events:batch",
             batch_json({{.id = event_id(4), .user_id = "u2", .model = "a", .cost_nanos = 51, .ts_ns = ns_at(2026, 11, 10)}}),
             key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "events[0].cost_nanos: "), r.body);
  CHECK(f.counts() == one);
  // What still fits is taken.
  r = f.call("POST", "/api/v1/events:batch",
             batch_json({{.id = event_id(5), .user_id = "u2", .model = "a", .cost_nanos = 50, .ts_ns = ns_at(2026, 11, 10)}}),
             key);
  CHECK_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  r = f.call("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=month", {}, key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(int_at(parse_json(parser, r.body), "/rows/0/cost_nanos") == kInt64Max);
  // A duplicate of a stored event adds nothing, so it is acknowledged.
  r = f.call("POST", "/api/v1/events:batch",
             batch_json({{.id = event_id(1), .model = "a", .cost_nanos = kInt64Max - 100, .ts_ns = ns_at(2026, 11, 10)}}),
             key);
  CHECK_MESSAGE(r.status == 200, r.body);
  r = f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(6), .user_id = "u2", .cost_nanos = 0}}), key);
  CHECK_MESSAGE(r.status == 200, r.body);
  check_everything_answers(f, key);
}

// Runs `sql` on the database at `path` through a connection of its own.
void sql_exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

EventRecord costly(std::uint64_t n, std::string user, std::int64_t cost, std::int64_t ts_ns) {
  EventRecord e;
  e.id = event_id(n);
  e.user_id = std::move(user);
  e.model = "m";
  e.cost_nanos = cost;
  e.ts_ns = ts_ns;
  return e;
}

// A product whose events were stored before product_totals existed gets its totals from
// usage_daily, once; a history already past int64 saturates (nothing more can be added).
TEST_CASE("server.limits.product_totals_of_events_stored_before_them") {
  TempDir dir;
  const std::string path = dir.path() + "/db";
  std::unique_ptr<SqliteStorage> storage = ApiFixture::open_storage(path);
  REQUIRE(storage->create_product("p", "acme", std::string(64, 'c')).ok());
  REQUIRE(storage->ingest("p", std::vector<EventRecord>{costly(1, "u1", kInt64Max - 100, ns_at(2026, 11, 1)),
                                                        costly(2, "u2", 50, ns_at(2026, 11, 2))})
              .ok());
  sql_exec(path, "DELETE FROM product_totals");
  absl::StatusOr<IngestResult> r = storage->ingest("p", std::vector<EventRecord>{costly(3, "u3", 51, ns_at(2026, 11, 3))});
  REQUIRE(absl::IsInvalidArgument(r.status()));
  CHECK_MESSAGE(starts_with(std::string(r.status().message()), "events[0].cost_nanos: this event of user \"u3\""),
                r.status().ToString());
  r = storage->ingest("p", std::vector<EventRecord>{costly(4, "u3", 50, ns_at(2026, 11, 3))});
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->accepted == 1);

  // Past int64 already (written by a paygentd without this bound).
  REQUIRE(storage->create_product("q", "old", std::string(64, 'd')).ok());
  REQUIRE(storage->ingest("q", std::vector<EventRecord>{costly(1, "u1", 1, ns_at(2026, 11, 1))}).ok());
  sql_exec(path, "UPDATE usage_daily SET cost_nanos = 9223372036854775807 WHERE user_id = 'u1' AND product = "
                 "(SELECT pk FROM products WHERE id = 'q'); "
                 "INSERT INTO usage_daily SELECT product, 'u2', day, model, calls, input_tokens, output_tokens, "
                 "cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos FROM usage_daily "
                 "WHERE user_id = 'u1' AND product = (SELECT pk FROM products WHERE id = 'q'); "
                 "DELETE FROM product_totals");
  r = storage->ingest("q", std::vector<EventRecord>{costly(2, "u3", 1, ns_at(2026, 11, 3))});
  CHECK(absl::IsInvalidArgument(r.status()));
  r = storage->ingest("q", std::vector<EventRecord>{costly(3, "u3", 0, ns_at(2026, 11, 3))});
  CHECK_MESSAGE(r.ok(), r.status().ToString());
}

// ----------------------------------------------------------------------------------------------
// 3. Numbers out of range name their field.

TEST_CASE("server.limits.numbers_out_of_range_name_their_field") {
  const std::string event = event_json({.id = event_id(1)});
  for (const char* number : {"18446744073709551616", "1e400", "-1e400", "-9223372036854775809",
                             "1234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890"}) {
    for (const char* field : {"input_tokens", "cost_nanos", "ts_ns"}) {
      CAPTURE(number);
      CAPTURE(field);
      std::string e = event;
      const std::string name = std::string("\"") + field + "\":";
      const std::size_t at = e.find(name) + name.size();
      e.replace(at, e.find(',', at) - at, number);
      const std::string body = "{\"events\":[" + event + "," + e + "]}";
      const absl::StatusOr<std::vector<EventRecord>> parsed = parse_event_batch(body);
      REQUIRE(!parsed.ok());
      const std::string message(parsed.status().message());
      CHECK_MESSAGE(starts_with(message, std::string("events[1].") + field + ": "), message);
      CHECK_MESSAGE(contains(message, "64"), message);
    }
  }
  absl::StatusOr<std::vector<std::string>> users = parse_usage_query(R"({"users":["a", 1e400]})");
  REQUIRE(!users.ok());
  CHECK_MESSAGE(starts_with(std::string(users.status().message()), "users[1]: "), users.status().ToString());
  absl::StatusOr<Subscription> sub = parse_subscription(R"({"plan": {"x": [18446744073709551616]}})");
  REQUIRE(!sub.ok());
  CHECK_MESSAGE(starts_with(std::string(sub.status().message()), "plan.x[0]: "), sub.status().ToString());
  // Still a syntax error where there is one.
  users = parse_usage_query(R"({"users":["a", 1e400)");
  REQUIRE(!users.ok());
  CHECK_MESSAGE(starts_with(std::string(users.status().message()), "body: not valid JSON"), users.status().ToString());

  // The plan config names the field too.
  ApiFixture f;
  const std::string key = f.new_product();
  HttpResponse r = f.call("POST", "/api/v1/config/plans", R"({"plans":[{"name":"a","max_spend_per_period":1e400}]})", key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "plans[0].max_spend_per_period: "), r.body);
  r = f.call("POST", "/api/v1/config/plans",
             R"({"plans":[{"name":"a","model_limits":{"m":{"max_tokens_per_period":18446744073709551616}}}]})", key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "plans[0].model_limits.m.max_tokens_per_period: "), r.body);
  r = f.call("POST", "/api/v1/config/plans",
             std::string(R"({"plans":[{"name":"a","session_timeout_minutes":)") + std::string(100, '9') + "}]}", key);
  CHECK(r.status == 400);
  CHECK_MESSAGE(starts_with(error_message(r), "plans[0].session_timeout_minutes: "), r.body);
}

}  // namespace
}  // namespace paygent::server::test
