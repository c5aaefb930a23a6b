// Tests of what is SQLite's own in SqliteStorage (server/sqlite_storage.h): the upgrade of a
// database of an earlier release. What every storage does is in storage_contract_test.cpp.
#include "server/sqlite_storage.h"

#include <algorithm>
#include <cstdint>
#include <functional>
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

// A database written by the first release (schema version 1, whose events table has no kind
// column) is upgraded on open: its events still count, new ones are stored with their kind.
TEST_CASE("server.storage_upgrades_a_database_of_the_previous_release") {
  paygent::testing::TempDir dir;
  const std::string path = dir.path() + "/db";
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    // Release 1's events table (server/sqlite_storage.cpp), verbatim, and the tables it needs here.
    const char* sql = R"sql(
PRAGMA journal_mode=WAL;
CREATE TABLE products(pk INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
  key_sha256 TEXT NOT NULL UNIQUE, created_ns INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS events(
  product INTEGER NOT NULL,
  id BLOB NOT NULL,
  user_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cached_input_tokens INTEGER NOT NULL,
  cache_creation_input_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  ts_ns INTEGER NOT NULL,
  meta_tags TEXT NOT NULL,
  estimated INTEGER NOT NULL,
  received_ns INTEGER NOT NULL,
  PRIMARY KEY(product, id)) STRICT;
INSERT INTO products VALUES(1, 'prod_1', 'acme', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1);
INSERT INTO events VALUES(1, x'00000000000000000000000000000001', 'u1', 's', '', '', 'm', 'openai',
  1, 2, 0, 0, 0, 10, 7, '{}', 0, 8);
PRAGMA user_version=1;
)sql";
    REQUIRE(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto storage = open_at(path);
  CHECK(sql_int(path, "PRAGMA user_version") == 12);
  // Version 10's rollup, filled from the events too (unlike usage_daily_by_model, which release 1's
  // missing usage_daily leaves empty).
  CHECK(sql_int(path, "SELECT cost_nanos FROM usage_daily_by_provider WHERE provider = 'openai' AND calls = 1") == 10);
  // Version 6's rollup, filled from the events already there.
  CHECK(sql_int(path, "SELECT cost_nanos FROM profit_daily WHERE user_id = 'u1' AND cost_events = 1") == 10);
  CHECK(sql_int(path, "SELECT COUNT(*) FROM usage_daily_by_model") == 0);  // release 1 had no usage_daily
  CHECK(sql_int(path, "SELECT COUNT(*) FROM leases") == 0);  // version 3's table, created by the upgrade
  CHECK(sql_int(path, "SELECT COUNT(*) FROM voice_sessions") == 0);  // version 4's tables, likewise
  CHECK(sql_int(path, "SELECT COUNT(*) FROM webhook_deliveries") == 0);  // version 5's tables, likewise
  CHECK(sql_int(path, "SELECT COUNT(*) FROM customers") == 0);
  CHECK(sql_int(path, "SELECT COUNT(*) FROM idempotency_keys") == 0);
  CHECK(sql_int(path, "SELECT COUNT(*) FROM billable_metrics") == 0);  // version 5's tables, likewise
  CHECK(sql_int(path, "SELECT COUNT(*) FROM indicator_billing") == 0);
  CHECK(sql_int(path, "SELECT COUNT(*) FROM events WHERE kind = 'llm'") == 1);
  EventRecord stt = record(event_id(2), "u1", "m", "s", 5, 9);
  stt.kind = internal::UsageKind::kStt;
  const absl::StatusOr<IngestResult> result =
      storage->ingest("prod_1", std::vector<EventRecord>{record(event_id(1), "u1", "m", "s", 10, 7), stt});
  REQUIRE_MESSAGE(result.ok(), result.status().ToString());
  CHECK(result->accepted == 1);  // event 1 was stored by release 1
  CHECK(result->duplicates == 1);
  CHECK(sql_int(path, "SELECT COUNT(*) FROM events WHERE kind = 'stt'") == 1);
  // The release 1 event has no usage_daily row in this hand-made file: the range is within a day,
  // so the report reads the events themselves.
  CHECK(storage->report("prod_1", {.from_ns = 0, .to_ns = 100, .group_by = ReportGroup::kModel})->at("m").cost_nanos ==
        15);
}

}  // namespace
}  // namespace paygent::server::test
