// Shared setup of the server's unit tests: an Api over a SqliteStorage in a temporary directory,
// with a fixed clock, and helpers to build event batches and to count what the database holds.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "server/api.h"
#include "server/metrics.h"
#include "server/sqlite_storage.h"
#include "server/wire.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server::test {

inline constexpr std::string_view kAdminToken = "admin-secret";

// 2026-11-17T12:00:00Z, the fixed "now" of the unit tests.
inline absl::Time test_now() { return absl::FromCivil(absl::CivilSecond(2026, 11, 17, 12, 0, 0), absl::UTCTimeZone()); }

inline std::int64_t ns_at(int y, int m, int d, int hh = 0, int mm = 0, int ss = 0) {
  return absl::ToUnixNanos(absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss), absl::UTCTimeZone()));
}

// A 32-hex event id made from `n` (and a salt, to make distinct id spaces).
// An event of `cost` nano-USD whose token counts are derived from it (so sums check every column).
inline EventRecord record(std::string id, std::string user, std::string model, std::string session,
                          std::int64_t cost, std::int64_t ts_ns) {
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

inline std::string event_id(std::uint64_t n, std::uint64_t salt = 0) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(salt),
                static_cast<unsigned long long>(n));
  return buf;
}

// A total_spend lease request of user u1 over [start_ns, end_ns) (docs/leases.md).
inline LeaseRequest total_spend_lease(std::int64_t cap, std::int64_t used, std::int64_t acked, std::int64_t want,
                                      std::int64_t need = 0, bool release = false,
                                      std::int64_t start_ns = ns_at(2026, 11, 1, 6),
                                      std::int64_t end_ns = ns_at(2026, 11, 20, 12)) {
  return LeaseRequest{.user_id = "u1",
                      .limit_key = "total_spend",
                      .period_start_ns = start_ns,
                      .period_end_ns = end_ns,
                      .cap = cap,
                      .used = used,
                      .acked = acked,
                      .want = want,
                      .need = need,
                      .release = release};
}

struct TestEvent {
  std::string id;
  std::string user_id = "u1";
  std::string session_id = "s1";
  std::string model = "gpt-4o";
  std::int64_t input_tokens = 1000;
  std::int64_t output_tokens = 200;
  std::int64_t cost_nanos = 4'500'000;
  std::int64_t ts_ns = ns_at(2026, 11, 17, 10);
};

inline std::string event_json(const TestEvent& e) {
  return "{\"id\":\"" + e.id + "\",\"user_id\":" + json_quote(e.user_id) + ",\"session_id\":" + json_quote(e.session_id) +
         ",\"agent_id\":\"\",\"indicator\":\"\",\"model\":" + json_quote(e.model) +
         ",\"provider\":\"openai\",\"input_tokens\":" + std::to_string(e.input_tokens) +
         ",\"output_tokens\":" + std::to_string(e.output_tokens) +
         ",\"cached_input_tokens\":0,\"cache_creation_input_tokens\":0,\"reasoning_tokens\":0,\"cost_nanos\":" +
         std::to_string(e.cost_nanos) + ",\"ts_ns\":" + std::to_string(e.ts_ns) +
         ",\"meta_tags\":{\"team\":\"a\"},\"estimated\":false}";
}

inline std::string batch_json(const std::vector<TestEvent>& events) {
  std::string out = "{\"events\":[";
  for (std::size_t i = 0; i < events.size(); ++i) out += (i ? "," : "") + event_json(events[i]);
  return out + "]}";
}

// Row counts of every table, read through a separate connection: what a refused request must
// leave unchanged.
struct TableCounts {
  std::int64_t products = 0, users = 0, subscriptions = 0, plans = 0, events = 0, usage_daily = 0;
  friend bool operator==(const TableCounts&, const TableCounts&) = default;
};

inline std::int64_t sql_int(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  const std::int64_t value = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

inline TableCounts table_counts(const std::string& db_path) {
  auto count = [&](const char* table) { return sql_int(db_path, std::string("SELECT COUNT(*) FROM ") + table); };
  return {count("products"), count("users"),  count("subscriptions"),
          count("plans"),    count("events"), count("usage_daily")};
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// An Api over a fresh SqliteStorage, answering requests without a socket.
struct ApiFixture {
  paygent::testing::TempDir dir{"paygentd-test"};
  std::string db_path = dir.path() + "/paygentd.db";
  std::unique_ptr<SqliteStorage> storage = open_storage(db_path);
  Metrics metrics;
  absl::Time now = test_now();
  std::unique_ptr<Api> api = make_api(std::string(kAdminToken), 4 << 20);

  static std::unique_ptr<SqliteStorage> open_storage(const std::string& path) {
    absl::StatusOr<std::unique_ptr<SqliteStorage>> s = SqliteStorage::open(path);
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    return *std::move(s);
  }

  std::unique_ptr<Api> make_api(std::string admin_token, std::size_t max_body_bytes) {
    return std::make_unique<Api>(*storage, metrics,
                                 ApiOptions{.admin_token = std::move(admin_token),
                                            .max_body_bytes = max_body_bytes,
                                            .clock = [this] { return now; }});
  }

  HttpResponse call(std::string_view method, std::string_view target, std::string_view body = {},
                    std::string_view bearer = {}, std::string_view content_type = "application/json") {
    HttpRequest request{.method = std::string(method),
                        .target = std::string(target),
                        .content_type = std::string(content_type),
                        .authorization = bearer.empty() ? std::string() : "Bearer " + std::string(bearer),
                        .body = std::string(body)};
    return api->handle_request(request);
  }

  // Creates a product and returns its API key.
  std::string new_product(std::string_view name = "acme") {
    const HttpResponse r = call("POST", "/api/v1/products", "{\"name\":" + json_quote(name) + "}", kAdminToken);
    REQUIRE_MESSAGE(r.status == 201, r.body);
    return paygent::testing::json_string_member(r.body, "api_key");
  }

  TableCounts counts() const { return table_counts(db_path); }
};

// Parses a reply body; fails the test case when it is not JSON.
inline simdjson::dom::element parse_json(simdjson::dom::parser& parser, const std::string& body) {
  simdjson::dom::element root;
  const auto error = parser.parse(body).get(root);
  REQUIRE_MESSAGE(error == simdjson::SUCCESS, body);
  return root;
}

inline std::int64_t int_at(simdjson::dom::element root, std::string_view pointer) {
  std::int64_t value = -1;
  const auto error = root.at_pointer(pointer).get_int64().get(value);
  REQUIRE_MESSAGE(error == simdjson::SUCCESS, std::string(pointer));
  return value;
}

// The "message" of an error reply.
inline std::string error_message(const HttpResponse& r) {
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, r.body);
  std::string_view message;
  REQUIRE(root.at_pointer("/error/message").get_string().get(message) == simdjson::SUCCESS);
  return std::string(message);
}

inline std::string error_code(const HttpResponse& r) {
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, r.body);
  std::string_view code;
  REQUIRE(root.at_pointer("/error/code").get_string().get(code) == simdjson::SUCCESS);
  return std::string(code);
}

}  // namespace paygent::server::test
