// Integration-test support: what the backend's ledger holds per user, and what an application's
// local store (its spool) holds; the two sides of "every event once". Used by the integration
// test files.
#pragma once

#include <doctest/doctest.h>
#include <simdjson.h>
#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <ostream>
#include <string>

#include "support/paygentd_process.h"

namespace paygent::testing {

// Per-user totals, as the backend reports them or as computed from loadgen's deterministic calls.
struct UserTotals {
  std::int64_t calls = 0, input_tokens = 0, output_tokens = 0, cost_nanos = 0;
  friend bool operator==(const UserTotals&, const UserTotals&) = default;
};

inline std::ostream& operator<<(std::ostream& os, const std::map<std::string, UserTotals>& m) {
  for (const auto& [u, t] : m) {
    os << u << "{calls=" << t.calls << " in=" << t.input_tokens << " out=" << t.output_tokens
       << " cost=" << t.cost_nanos << "} ";
  }
  return os;
}

// The backend's per-user totals over all time for the users whose id starts with `prefix`.
inline std::map<std::string, UserTotals> backend_users(int port, const std::string& key, const std::string& prefix) {
  HttpClient http(port);
  auto reply = http.request("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9000000000000000000&group_by=user", {}, key);
  REQUIRE(reply.has_value());
  REQUIRE_MESSAGE(reply->status == 200, reply->body);
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(reply->body);
  std::map<std::string, UserTotals> out;
  for (simdjson::dom::element row : doc["rows"].get_array()) {
    const std::string user(row["key"].get_string().value());
    if (user.rfind(prefix, 0) != 0) continue;
    out[user] = {row["calls"].get_int64().value(), row["input_tokens"].get_int64().value(),
                 row["output_tokens"].get_int64().value(), row["cost_nanos"].get_int64().value()};
  }
  return out;
}

// One integer from a SQL query on a SQLite file (the application's local store), read-only.
inline std::int64_t sqlite_int(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE_MESSAGE(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK, sqlite3_errmsg(db));
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  const std::int64_t v = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

}  // namespace paygent::testing
