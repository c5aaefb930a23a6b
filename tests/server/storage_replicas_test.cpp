// Two storages on one database, as two paygentd replicas share one PostgreSQL (and, for the same
// contract, two SqliteStorage on one file): each sees the other's writes, a batch retried through
// the other counts once, the plan cache of an Api follows a config put through the other, and
// concurrent ingest of overlapping users through both neither deadlocks nor loses or doubles an
// event. Every case runs on each backend (tests/server/storage_backends.h).
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "server/api.h"
#include "server/metrics.h"
#include "server/sql_storage.h"
#include "server/storage.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"

namespace paygent::server::test {
namespace {

EventRecord event(std::string id, std::string user, std::int64_t cost, std::int64_t ts_ns) {
  EventRecord e;
  e.id = std::move(id);
  e.user_id = std::move(user);
  e.model = "m";
  e.session_id = "s";
  e.input_tokens = 3;
  e.cost_nanos = cost;
  e.ts_ns = ts_ns;
  return e;
}

constexpr ReportQuery kAll{.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kUser};

TEST_CASE("server.storage_replicas_see_each_others_writes_and_count_a_retried_batch_once") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> a = backend.fresh();
    std::unique_ptr<Storage> b = backend.again();
    REQUIRE(a->create_product("p", "acme", std::string(64, 'a')).ok());
    CHECK(*b->find_product_by_key(std::string(64, 'a')) == "p");
    CHECK(absl::IsAlreadyExists(b->create_product("p", "again", std::string(64, 'b'))));
    REQUIRE(b->create_user("p", "u1", "Ada").ok());
    CHECK(absl::IsAlreadyExists(a->create_user("p", "u1", "Ada")));
    REQUIRE(a->set_subscription("p", "u1", {.plan = "pro", .period_start_ns = 5, .period_end_ns = 9}).ok());
    CHECK(b->find_user("p", "u1")->subscription->plan == "pro");

    // The plan config's revision grows at every put through either, and each sees it.
    CHECK(*b->plan_config_revision("p") == 0);
    REQUIRE(a->put_plan_config("p", R"({"plans":[1]})").ok());
    const std::int64_t first = *b->plan_config_revision("p");
    CHECK(first > 0);
    CHECK(**b->plan_config("p") == R"({"plans":[1]})");
    REQUIRE(b->put_plan_config("p", R"({"plans":[2]})").ok());
    CHECK(*a->plan_config_revision("p") > first);
    CHECK(**a->plan_config("p") == R"({"plans":[2]})");

    std::vector<EventRecord> batch;
    for (int i = 0; i < 250; ++i) {
      batch.push_back(event(event_id(i), "u" + std::to_string(i % 7), 10 + i, ns_at(2026, 11, 1 + i % 20, i % 24)));
    }
    absl::StatusOr<IngestResult> r = a->ingest("p", batch);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(r->accepted == 250);
    // The same batch retried through the other replica (its answer was lost, say): counted once.
    r = b->ingest("p", batch);
    REQUIRE(r.ok());
    CHECK(r->accepted == 0);
    CHECK(r->duplicates == 250);
    const absl::StatusOr<GroupedTotals> through_a = a->report("p", kAll);
    const absl::StatusOr<GroupedTotals> through_b = b->report("p", kAll);
    REQUIRE(through_a.ok());
    REQUIRE(through_b.ok());
    CHECK(*through_a == *through_b);
    std::int64_t calls = 0;
    for (const auto& [user, t] : *through_b) calls += t.calls;
    CHECK(calls == 250);
    CHECK(backend.counts().events == 250);
  });
}

// An Api keeps each product's parsed plan config until the storage's revision of it changes: a
// config put through the other replica's Api is what this one enforces at its next request.
TEST_CASE("server.storage_replicas_api_follows_plans_put_through_the_other") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> a = backend.fresh();
    std::unique_ptr<Storage> b = backend.again();
    Metrics metrics_a, metrics_b;
    const ApiOptions options{.admin_token = std::string(kAdminToken), .clock = [] { return test_now(); }};
    Api api_a(*a, metrics_a, options);
    Api api_b(*b, metrics_b, options);
    auto call = [](Api& api, std::string_view method, std::string_view target, std::string_view body,
                   std::string_view bearer) {
      return api.handle_request(HttpRequest{.method = std::string(method),
                                            .target = std::string(target),
                                            .content_type = "application/json",
                                            .authorization = "Bearer " + std::string(bearer),
                                            .body = std::string(body)});
    };
    HttpResponse r = call(api_a, "POST", "/api/v1/products", R"({"name":"acme"})", kAdminToken);
    REQUIRE_MESSAGE(r.status == 201, r.body);
    const std::string key = paygent::testing::json_string_member(r.body, "api_key");
    const std::string one = R"({"plans":[{"name":"pro","max_spend_per_period":1.0}]})";
    const std::string two = R"({"plans":[{"name":"pro","max_spend_per_period":2.0},{"name":"max"}]})";
    REQUIRE(call(api_a, "POST", "/api/v1/config/plans", one, key).status == 200);
    CHECK(call(api_b, "GET", "/api/v1/config/plans", {}, key).body.find("\"max\"") == std::string::npos);
    REQUIRE(call(api_b, "POST", "/api/v1/config/plans", two, key).status == 200);
    CHECK(call(api_a, "GET", "/api/v1/config/plans", {}, key).body.find("\"max\"") != std::string::npos);
    // A subscription to the plan only the newer config has is accepted through the first Api.
    REQUIRE(call(api_b, "POST", "/api/v1/users", R"({"user_id":"u1"})", key).status == 201);
    r = call(api_a, "POST", "/api/v1/users/u1/subscription",
             R"({"plan":"max","period_start":"2026-11-01T00:00:00Z","period_end":"2026-12-01T00:00:00Z"})", key);
    CHECK_MESSAGE(r.status == 200, r.body);

    const std::string batch = batch_json({{.id = event_id(1)}, {.id = event_id(2), .user_id = "u2"}});
    r = call(api_a, "POST", "/api/v1/events:batch", batch, key);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find(R"("accepted":2,"duplicates":0)") != std::string::npos);
    r = call(api_b, "POST", "/api/v1/events:batch", batch, key);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find(R"("accepted":0,"duplicates":2)") != std::string::npos);
  });
}

// Writers on both replicas ingest batches of overlapping users, each batch's users in its own
// random order, some batches sent to both: no deadlock, no error, every distinct event once.
TEST_CASE("server.storage_replicas_ingest_overlapping_users_concurrently") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> a = backend.fresh();
    std::unique_ptr<Storage> b = backend.again();
    REQUIRE(a->create_product("p", "acme", std::string(64, 'a')).ok());
    constexpr int kThreads = 4, kBatches = 25, kEvents = 40, kUsers = 12;
    std::atomic<int> failures{0};
    std::atomic<std::int64_t> accepted{0};
    std::string first_error;
    std::mutex error_mu;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        Storage& storage = t % 2 == 0 ? *a : *b;
        for (int n = 0; n < kBatches; ++n) {
          // Threads 0 and 1 (one per replica) send the same batches: each event counts once.
          const int salt = t < 2 ? 1 : t;
          std::vector<EventRecord> batch;
          for (int i = 0; i < kEvents; ++i) {
            const int user = static_cast<int>(rng() % kUsers);
            batch.push_back(event(event_id(static_cast<std::uint64_t>(n * kEvents + i), static_cast<std::uint64_t>(salt)),
                                  "u" + std::to_string(t < 2 ? (n * 7 + i) % kUsers : user), 1,
                                  ns_at(2026, 11, 17, i % 24)));
          }
          const absl::StatusOr<IngestResult> r =
              storage.ingest_with_usage("p", batch, [](const UserRecord&) {
                return TimeRange{ns_at(2026, 11, 1), ns_at(2026, 12, 1)};
              }, {});
          if (!r.ok()) {
            ++failures;
            std::lock_guard<std::mutex> lock(error_mu);
            if (first_error.empty()) first_error = r.status().ToString();
            continue;
          }
          accepted += r->accepted;
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    CHECK_MESSAGE(failures.load() == 0, first_error);
    const std::int64_t distinct = static_cast<std::int64_t>(kBatches) * kEvents * (kThreads - 1);
    CHECK(accepted.load() == distinct);
    const absl::StatusOr<GroupedTotals> report = a->report("p", kAll);
    REQUIRE(report.ok());
    std::int64_t calls = 0;
    for (const auto& [user, t] : *report) calls += t.calls;
    CHECK(calls == distinct);
    CHECK(backend.counts().events == distinct);
  });
}

// The transaction contract: a read-modify-write of a user's row inside with_user_locks() loses no
// update, whatever replica and thread runs it, and taking several users in any order (here in
// reverse) does not deadlock.
TEST_CASE("server.storage_replicas_user_locks_serialise_read_modify_write") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> a = backend.fresh();
    std::unique_ptr<Storage> b = backend.again();
    REQUIRE(a->create_product("p", "acme", std::string(64, 'a')).ok());
    REQUIRE(a->create_user("p", "u1", "0").ok());
    REQUIRE(a->create_user("p", "u2", "0").ok());
    constexpr int kThreads = 4, kRounds = 40;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        auto& storage = dynamic_cast<SqlStorage&>(t % 2 == 0 ? *a : *b);
        const std::vector<std::string_view> users =
            t % 2 == 0 ? std::vector<std::string_view>{"u1", "u2"} : std::vector<std::string_view>{"u2", "u1"};
        for (int n = 0; n < kRounds; ++n) {
          const absl::Status s =
              storage.with_user_locks("p", users, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
                for (std::string_view user : users) {
                  std::int64_t value = 0;
                  {
                    absl::StatusOr<Query> read =
                        prepare(connection, "SELECT name FROM users WHERE product = ?1 AND user_id = ?2");
                    if (!read.ok()) return read.status();
                    read->bind(1, product).bind(2, user);
                    absl::StatusOr<bool> row = read->step("read");
                    if (!row.ok()) return row.status();
                    value = std::stoll(read->text(0));
                  }
                  std::this_thread::yield();  // widen the window a lost update would need
                  absl::StatusOr<Query> write =
                      prepare(connection, "UPDATE users SET name = ?3 WHERE product = ?1 AND user_id = ?2");
                  if (!write.ok()) return write.status();
                  const std::string next = std::to_string(value + 1);
                  write->bind(1, product).bind(2, user).bind(3, std::string_view(next));
                  if (absl::Status w = write->run("write"); !w.ok()) return w;
                }
                return absl::OkStatus();
              });
          if (!s.ok()) ++failures;
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    CHECK(failures.load() == 0);
    CHECK(b->find_user("p", "u1")->name == std::to_string(kThreads * kRounds));
    CHECK(a->find_user("p", "u2")->name == std::to_string(kThreads * kRounds));
    CHECK(absl::IsNotFound(
        dynamic_cast<SqlStorage&>(*a).with_user_locks("nope", {}, [](SqlConnection&, std::int64_t) {
          return absl::OkStatus();
        })));
  });
}

}  // namespace
}  // namespace paygent::server::test
