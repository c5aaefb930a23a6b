// Tests of SqliteStorage (server/sqlite_storage.h): atomic idempotent ingest, reports that read
// whole days from usage_daily and the edges from the events (checked against a brute-force sum),
// persistence across reopening, tenant scoping.
#include "server/sqlite_storage.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "absl/time/civil_time.h"
#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

std::unique_ptr<SqliteStorage> open_at(const std::string& path) { return ApiFixture::open_storage(path); }

EventRecord record(std::string id, std::string user, std::string model, std::string session, std::int64_t cost,
                   std::int64_t ts_ns) {
  EventRecord e;
  e.id = std::move(id);
  e.user_id = std::move(user);
  e.model = std::move(model);
  e.session_id = std::move(session);
  e.input_tokens = cost % 97;
  e.output_tokens = cost % 89;
  e.cached_input_tokens = cost % 7;
  e.cost_nanos = cost;
  e.ts_ns = ts_ns;
  return e;
}

// The report computed the slow, obvious way.
GroupedTotals brute_force(const std::vector<EventRecord>& events, const ReportQuery& q) {
  GroupedTotals out;
  for (const EventRecord& e : events) {
    if (e.ts_ns < q.from_ns || e.ts_ns >= q.to_ns) continue;
    if (q.user_id && e.user_id != *q.user_id) continue;
    std::string key;
    const absl::CivilDay day = absl::CivilDay(1970, 1, 1) + e.ts_ns / 86'400'000'000'000;
    switch (q.group_by) {
      case ReportGroup::kUser: key = e.user_id; break;
      case ReportGroup::kModel: key = e.model; break;
      case ReportGroup::kSession: key = e.session_id; break;
      case ReportGroup::kDay: key = absl::FormatCivilTime(day); break;
      case ReportGroup::kMonth: key = absl::FormatCivilTime(absl::CivilMonth(day)); break;
    }
    Totals& t = out[key];
    ++t.calls;
    t.input_tokens += e.input_tokens;
    t.output_tokens += e.output_tokens;
    t.cached_input_tokens += e.cached_input_tokens;
    t.cost_nanos += e.cost_nanos;
  }
  return out;
}

TEST_CASE("server.storage_reports_match_a_brute_force_sum") {
  paygent::testing::TempDir dir;
  auto storage = open_at(dir.path() + "/db");
  REQUIRE(storage->create_product("p1", "one", std::string(64, '1')).ok());
  REQUIRE(storage->create_product("p2", "two", std::string(64, '2')).ok());
  std::mt19937_64 rng(42);
  const std::int64_t start = ns_at(2026, 10, 25);
  const std::int64_t span = ns_at(2026, 11, 10) - start;
  std::vector<EventRecord> events;
  for (int batch = 0; batch < 20; ++batch) {
    std::vector<EventRecord> records;
    for (int i = 0; i < 50; ++i) {
      const int n = batch * 50 + i;
      records.push_back(record(event_id(n), "u" + std::to_string(rng() % 5), "m" + std::to_string(rng() % 3),
                               "s" + std::to_string(rng() % 4), static_cast<std::int64_t>(rng() % 100'000),
                               start + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span))));
    }
    const absl::StatusOr<IngestResult> r = storage->ingest("p1", records);
    REQUIRE(r.ok());
    CHECK(r->accepted == 50);
    events.insert(events.end(), records.begin(), records.end());
  }
  // Another product's events never show.
  REQUIRE(storage->ingest("p2", std::vector<EventRecord>{record(event_id(1), "u1", "m1", "s1", 5, start)}).ok());

  for (int i = 0; i < 300; ++i) {
    ReportQuery q;
    q.from_ns = start - ns_at(1970, 1, 2) + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span));
    q.to_ns = q.from_ns + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span));
    if (i % 10 == 0) q.from_ns = ns_at(2026, 10, 26 + i % 7);  // whole days
    if (i % 15 == 0) q.to_ns = ns_at(2026, 11, 1 + i % 9);
    q.group_by = static_cast<ReportGroup>(rng() % 5);
    if (rng() % 2) q.user_id = "u" + std::to_string(rng() % 6);
    INFO("from ", q.from_ns, " to ", q.to_ns, " group ", static_cast<int>(q.group_by), " user ", q.user_id.value_or("-"));
    const absl::StatusOr<GroupedTotals> got = storage->report("p1", q);
    REQUIRE(got.ok());
    CHECK(*got == brute_force(events, q));
  }
}

TEST_CASE("server.storage_ingest_is_idempotent_and_atomic") {
  paygent::testing::TempDir dir;
  const std::string path = dir.path() + "/db";
  auto storage = open_at(path);
  // Writes need an existing product.
  CHECK(absl::IsNotFound(
      storage->ingest("p", std::vector<EventRecord>{record(event_id(1), "u1", "m", "s", 10, 1)}).status()));
  CHECK(absl::IsNotFound(storage->create_user("p", "u1", "")));
  CHECK(storage->report("p", {.from_ns = 0, .to_ns = 10, .group_by = ReportGroup::kUser})->empty());
  REQUIRE(storage->create_product("p", "acme", std::string(64, 'c')).ok());
  std::vector<EventRecord> batch = {record(event_id(1), "u1", "m", "s", 10, ns_at(2026, 11, 1)),
                                    record(event_id(2), "u1", "m", "s", 20, ns_at(2026, 11, 1)),
                                    record(event_id(1), "u1", "m", "s", 999, ns_at(2026, 11, 1))};
  absl::StatusOr<IngestResult> r = storage->ingest("p", batch);
  REQUIRE(r.ok());
  CHECK(r->accepted == 2);
  CHECK(r->duplicates == 1);
  r = storage->ingest("p", batch);
  REQUIRE(r.ok());
  CHECK(r->accepted == 0);
  CHECK(r->duplicates == 3);
  const ReportQuery all{.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kUser};
  CHECK(storage->report("p", all)->at("u1").cost_nanos == 30);
  CHECK(storage->find_user("p", "u1").ok());  // created on the fly

  // An overflowing batch stores nothing, not even its new user or its good events.
  const TableCounts before = table_counts(path);
  std::vector<EventRecord> overflow = {record(event_id(3), "u2", "m", "s", 1, ns_at(2026, 11, 1)),
                                       record(event_id(4), "u1", "m", "s", INT64_MAX, ns_at(2026, 11, 1))};
  r = storage->ingest("p", overflow);
  CHECK(absl::IsInvalidArgument(r.status()));
  CHECK(table_counts(path) == before);
  CHECK(absl::IsNotFound(storage->find_user("p", "u2").status()));
  // The storage is usable afterwards.
  REQUIRE(storage->ingest("p", std::vector<EventRecord>{overflow[0]}).ok());
  CHECK(storage->report("p", all)->at("u2").calls == 1);
}

TEST_CASE("server.storage_keeps_everything_across_reopening") {
  paygent::testing::TempDir dir;
  const std::string path = dir.path() + "/db";
  {
    auto storage = open_at(path);
    REQUIRE(storage->create_product("prod_1", "acme", std::string(64, 'a')).ok());
    CHECK(absl::IsAlreadyExists(storage->create_product("prod_2", "x", std::string(64, 'a'))));
    REQUIRE(storage->create_user("prod_1", "u1", "Ada").ok());
    CHECK(absl::IsAlreadyExists(storage->create_user("prod_1", "u1", "Ada")));
    CHECK(absl::IsNotFound(storage->set_subscription("prod_1", "nobody", {.plan = "p", .period_start_ns = 1, .period_end_ns = 2})));
    REQUIRE(storage->set_subscription("prod_1", "u1", {.plan = "pro", .period_start_ns = 5, .period_end_ns = 9}).ok());
    REQUIRE(storage->put_plan_config("prod_1", R"({"plans":[]})").ok());
    REQUIRE(storage->ingest("prod_1", std::vector<EventRecord>{record(event_id(1), "u1", "m", "s", 10, 7)}).ok());
  }
  auto storage = open_at(path);
  CHECK(*storage->find_product_by_key(std::string(64, 'a')) == "prod_1");
  CHECK(absl::IsNotFound(storage->find_product_by_key(std::string(64, 'b')).status()));
  const absl::StatusOr<UserRecord> user = storage->find_user("prod_1", "u1");
  REQUIRE(user.ok());
  CHECK(user->name == "Ada");
  REQUIRE(user->subscription.has_value());
  CHECK(*user->subscription == Subscription{.plan = "pro", .period_start_ns = 5, .period_end_ns = 9});
  CHECK(**storage->plan_config("prod_1") == R"({"plans":[]})");
  CHECK(!storage->plan_config("prod_2")->has_value());
  CHECK(storage->report("prod_1", {.from_ns = 0, .to_ns = 100, .group_by = ReportGroup::kModel})->at("m").cost_nanos == 10);
  CHECK(absl::IsNotFound(storage->find_user("prod_2", "u1").status()));
}

}  // namespace
}  // namespace paygent::server::test
