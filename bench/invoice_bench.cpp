// The invoice preview of issue 11 (docs/billing.md) over a SqliteStorage holding 1,000,000 billing
// events of 1,000 customers (PAYGENT_INVOICE_BENCH_EVENTS to change it), each with a meta tag
// `hours`, on one indicator metered by a Sum metric and priced GRADUATED:
//   invoice_one_customer   GET /api/v1/customers/{id}/invoice through paygentd's Api (target: 10 ms)
//   invoice_all_customers  the 1,000 customers' invoices one after the other
//   invoice_sql_baseline   the baseline: one customer's SUM of the tag and COUNT in plain SQL
//                          (SQLite's json_extract over the billing events' own tags on the same
//                          index, as a double),
//                          none of the engine's work (exact decimals, dedup, exclusions, pricing)
//   invoice_sql_group_by   the baseline of the 1,000 invoices: one plain SQL GROUP BY of every
//                          customer's SUM and COUNT over the same rows, on the time index
//   profit_by_customer     GET /api/v1/reports/profit?by=customer over November: every customer's
//                          revenue from its invoice (docs/billing.md, "Revenue in the profit report")
//   pg_*                   one customer's invoice, the GROUP BY and the report on PostgreSQL 15
//                          (bench/postgres_bench.h), the same rows; pg_invoice_sql_ordered_read:
//                          the report's rows read in order and counted, nothing else (its floor)
// Each checks its quantity (or revenue) against what was ingested.
//   build/bench/paygent_bench --benchmark_filter=invoice_ --benchmark_repetitions=3
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <sqlite3.h>
#include <string>
#include <vector>

#include "server/api.h"
#include "server/billing_wire.h"
#include "server/metrics.h"
#include "server/sqlite_storage.h"
#ifdef PAYGENT_WITH_POSTGRES
#include <libpq-fe.h>

#include "postgres_bench.h"
#include "server/postgres_storage.h"
#endif
#include "support/paygentd_process.h"

namespace {

using paygent::server::AgentRecord;
using paygent::server::EventRecord;

constexpr int kBatch = 1000;
constexpr int kCustomers = 1000;
constexpr std::int64_t kNovember = 1'793'491'200'000'000'000;  // 2026-11-01T00:00:00Z
constexpr const char* kAdmin = "bench-admin";

struct World {
  paygent::testing::TempDir dir{"paygent-bench-invoice"};
  std::string conninfo;  // PostgreSQL's; empty: SQLite in `dir`
  std::unique_ptr<paygent::server::Storage> storage;
  paygent::server::Metrics metrics;
  std::unique_ptr<paygent::server::Api> api;
  std::string key;
  std::int64_t per_customer = 0;
  std::string error;

  paygent::server::HttpResponse call(const std::string& method, const std::string& target, const std::string& body,
                                     const std::string& bearer) {
    return api->handle_request(paygent::server::HttpRequest{
        .method = method, .target = target, .content_type = "application/json", .authorization = "Bearer " + bearer, .body = body});
  }

  explicit World(bool postgres) {
    const char* env = std::getenv("PAYGENT_INVOICE_BENCH_EVENTS");
    const std::int64_t total = env != nullptr ? std::atoll(env) : 1'000'000;
    per_customer = total / kCustomers;
    if (postgres) {
#ifdef PAYGENT_WITH_POSTGRES
      conninfo = paygent::bench::new_postgres_database();
      auto opened = conninfo.empty() ? absl::StatusOr<std::unique_ptr<paygent::server::PostgresStorage>>(
                                           absl::UnavailableError("no PostgreSQL"))
                                     : paygent::server::PostgresStorage::open(conninfo, {});
      if (!opened.ok()) {
        error = "PostgreSQL cannot start here";
        return;
      }
      storage = *std::move(opened);
#else
      error = "built without PostgreSQL";
      return;
#endif
    } else {
      auto opened = paygent::server::SqliteStorage::open(dir.path() + "/p.db");
      if (!opened.ok()) {
        error = "cannot open the storage";
        return;
      }
      storage = *std::move(opened);
    }
    api = std::make_unique<paygent::server::Api>(*storage, metrics, paygent::server::ApiOptions{.admin_token = kAdmin});
    const auto product = call("POST", "/api/v1/products", R"({"name":"bench"})", kAdmin);
    key = paygent::testing::json_string_member(product.body, "api_key");
    const std::string product_id = paygent::testing::json_string_member(product.body, "product_id");
    if (call("POST", "/api/v1/billable-metrics", R"({"name":"GPU hours","aggregation":"sum","field":"hours"})", key).status != 201 ||
        call("PUT", "/api/v1/agents/gpu", R"({"indicators":[{"indicator":"job","metric":"gpu_hours","pricing":{"model":"graduated",
             "tiers":[{"upTo":"100","unitPrice":"0.5"},{"unitPrice":"0.4","flatFee":"1"}]}}]})", key).status != 200) {
      error = "cannot create the metric and the agent";
      return;
    }
    // Customer i's event j, the customers interleaved in time over November.
    std::uint64_t n = 0;
    std::vector<EventRecord> events;
    for (std::int64_t j = 0; j < per_customer; ++j) {
      for (int c = 0; c < kCustomers; ++c, ++n) {
        EventRecord e;
        char id[40];
        std::snprintf(id, sizeof id, "%032llx", static_cast<unsigned long long>(n + 1));
        e.id = id;
        e.user_id = "c" + std::to_string(c);
        e.agent_id = "gpu";
        e.indicator = "job";
        e.kind = paygent::internal::UsageKind::kBilling;
        e.meta_tags_json = R"({"hours":"1.5"})";
        e.ts_ns = kNovember + static_cast<std::int64_t>(n) * 2'000'000;  // 1M events over ~33 minutes
        events.push_back(std::move(e));
        if (events.size() == kBatch) {
          if (!storage->ingest(product_id, events).ok()) {
            error = "a batch was not stored";
            return;
          }
          events.clear();
        }
      }
    }
    if (!events.empty() && !storage->ingest(product_id, events).ok()) error = "a batch was not stored";
#ifdef PAYGENT_WITH_POSTGRES
    if (postgres && error.empty() && std::getenv("PAYGENT_INVOICE_BENCH_NO_ANALYZE") == nullptr) {
      // The table's statistics, as autovacuum gathers them within a minute of such a load: the
      // baseline and the report are timed on the plans a running deployment gets (set
      // PAYGENT_INVOICE_BENCH_NO_ANALYZE for the plans of a table just loaded).
      PGconn* conn = PQconnectdb(conninfo.c_str());
      PGresult* r = PQexec(conn, "ANALYZE");
      if (PQresultStatus(r) != PGRES_COMMAND_OK) error = "ANALYZE failed";
      PQclear(r);
      PQfinish(conn);
    }
#endif
  }
};

World& world() {
  static World* w = new World(false);  // built once for all the benchmarks; never destroyed
  return *w;
}

World& pg_world() {
  static World* w = new World(true);  // the same on PostgreSQL, built when first asked for
  return *w;
}

bool check(World& w, int customer) {
  const auto r = w.call("GET", "/api/v1/customers/c" + std::to_string(customer) + "/invoice?period=2026-11", "", w.key);
  // per_customer events of 1.5 hours each.
  const std::string quantity = std::to_string(w.per_customer * 3 / 2) + (w.per_customer % 2 ? ".5" : "");
  return r.status == 200 && r.body.find("\"quantity\":\"" + quantity + "\"") != std::string::npos;
}

void invoice_one(benchmark::State& state, World& w) {
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return;
  }
  int customer = 0;
  for (auto _ : state) {
    if (!check(w, customer)) {
      state.SkipWithError("the invoice does not match what was ingested");
      return;
    }
    customer = (customer + 1) % kCustomers;
  }
  state.counters["events/invoice"] = static_cast<double>(w.per_customer);
}
void invoice_one_customer(benchmark::State& state) { invoice_one(state, world()); }

void invoice_all_customers(benchmark::State& state) {
  World& w = world();
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return;
  }
  for (auto _ : state) {
    for (int c = 0; c < kCustomers; ++c) {
      if (!check(w, c)) {
        state.SkipWithError("the invoice does not match what was ingested");
        return;
      }
    }
  }
  state.counters["invoices/s"] = benchmark::Counter(static_cast<double>(kCustomers), benchmark::Counter::kIsIterationInvariantRate);
}

void invoice_sql_baseline(benchmark::State& state) {
  World& w = world();
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  if (!w.error.empty() || sqlite3_open_v2((w.dir.path() + "/p.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db,
                         "SELECT COUNT(*), SUM(json_extract(b.meta_tags, '$.hours')) FROM billing_events b "
                         "WHERE b.product = 1 AND b.user_id = ?1 AND b.ts_ns >= ?2 AND b.ts_ns < ?3",
                         -1, &stmt, nullptr) != SQLITE_OK) {
    state.SkipWithError("cannot read the database");
    sqlite3_close(db);
    return;
  }
  int customer = 0;
  for (auto _ : state) {
    const std::string user = "c" + std::to_string(customer);
    sqlite3_bind_text(stmt, 1, user.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 2, kNovember);
    sqlite3_bind_int64(stmt, 3, kNovember + 30LL * 86'400'000'000'000);
    if (sqlite3_step(stmt) != SQLITE_ROW || sqlite3_column_int64(stmt, 0) != w.per_customer ||
        sqlite3_column_double(stmt, 1) != 1.5 * static_cast<double>(w.per_customer)) {
      state.SkipWithError("the baseline does not match what was ingested");
      break;
    }
    sqlite3_reset(stmt);
    customer = (customer + 1) % kCustomers;
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

// What the graduated price of the bench (100 h at $0.50, then $0.40 and a $1 fee) makes of one
// customer's events of 1.5 hours, in nano-USD.
std::int64_t expected_invoice_nanos(std::int64_t per_customer) {
  const std::int64_t tenths = per_customer * 15;  // hours x 10
  if (tenths <= 1000) return tenths * 50'000'000;
  return 50'000'000'000 + (tenths - 1000) * 40'000'000 + 1'000'000'000;
}

void profit_all(benchmark::State& state, World& w) {
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return;
  }
  const std::string expected =
      "\"revenue_nanos\":" + std::to_string(expected_invoice_nanos(w.per_customer) * kCustomers) + ",";
  for (auto _ : state) {
    const auto r = w.call("GET",
                          "/api/v1/reports/profit?by=customer&from_ns=" + std::to_string(kNovember) +
                              "&to_ns=" + std::to_string(kNovember + 30LL * 86'400'000'000'000),
                          "", w.key);
    const std::size_t total = r.body.find("\"total\":{");
    if (r.status != 200 || total == std::string::npos || r.body.find(expected, total) == std::string::npos) {
      state.SkipWithError("the report's revenue is not the sum of the invoices");
      return;
    }
  }
}
void profit_by_customer(benchmark::State& state) { profit_all(state, world()); }

#ifdef PAYGENT_WITH_POSTGRES
void pg_invoice_one_customer(benchmark::State& state) { invoice_one(state, pg_world()); }
void pg_profit_by_customer(benchmark::State& state) { profit_all(state, pg_world()); }

// PostgreSQL's plain GROUP BY over the same rows (the billing events with their tags): the tag read by ->> as numeric.
void pg_invoice_sql_group_by(benchmark::State& state) {
  World& w = pg_world();
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return;
  }
  PGconn* conn = PQconnectdb(w.conninfo.c_str());
  const std::string sql =
      "SELECT b.user_id, COUNT(*), SUM((b.meta_tags::json->>'hours')::numeric) FROM billing_events b "
      "WHERE b.ts_ns >= " + std::to_string(kNovember) +
      " AND b.ts_ns < " + std::to_string(kNovember + 30LL * 86'400'000'000'000) + " GROUP BY b.user_id";
  const std::string per_customer = std::to_string(w.per_customer);
  const std::string hours = std::to_string(w.per_customer * 3 / 2) + (w.per_customer % 2 ? ".5" : ".0");
  for (auto _ : state) {
    PGresult* r = PQexec(conn, sql.c_str());
    bool right = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == kCustomers;
    for (int i = 0; right && i < PQntuples(r); ++i) {
      right = PQgetvalue(r, i, 1) == per_customer && PQgetvalue(r, i, 2) == hours;
    }
    PQclear(r);
    if (!right) {
      state.SkipWithError("the baseline does not match what was ingested");
      break;
    }
  }
  PQfinish(conn);
}

// What reading the rows costs alone: the product's scan (every customer's billing events of
// November, in (ts_ns, id) order, the same columns) through a cursor, 10,000 rows a FETCH in
// binary, one after the other, rows counted and nothing else done. The floor under
// pg_profit_by_customer's read, beside it.
void pg_invoice_sql_ordered_read(benchmark::State& state) {
  World& w = pg_world();
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return;
  }
  PGconn* conn = PQconnectdb(w.conninfo.c_str());
  const std::string declare =
      "DECLARE c NO SCROLL CURSOR FOR SELECT b.id, b.agent_id, b.indicator, b.ts_ns, b.duration_us, b.meta_tags, "
      "b.received_ns, b.revenue_nanos, b.user_id FROM billing_events b WHERE b.product = 1 AND b.ts_ns >= " +
      std::to_string(kNovember) + " AND b.ts_ns < " + std::to_string(kNovember + 30LL * 86'400'000'000'000) +
      " ORDER BY b.ts_ns, b.id";
  for (auto _ : state) {
    // As the report's streamed read plans it (server/postgres_stream.cpp): no sort before the first row.
    PQclear(PQexec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL enable_sort = off"));
    PQclear(PQexec(conn, declare.c_str()));
    std::int64_t rows = 0;
    for (;;) {
      PGresult* r = PQexecParams(conn, "FETCH FORWARD 10000 FROM c", 0, nullptr, nullptr, nullptr, nullptr, 1);
      const int n = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : -1;
      PQclear(r);
      if (n <= 0) break;
      rows += n;
    }
    PQclear(PQexec(conn, "COMMIT"));
    if (rows != w.per_customer * kCustomers) {
      state.SkipWithError("the read does not find every row");
      break;
    }
  }
  PQfinish(conn);
}
#endif

void invoice_sql_group_by(benchmark::State& state) {
  World& w = world();
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  if (!w.error.empty() || sqlite3_open_v2((w.dir.path() + "/p.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db,
                         "SELECT b.user_id, COUNT(*), SUM(json_extract(b.meta_tags, '$.hours')) FROM billing_events b "
                         // The faster of SQLite's plans here: the range in time order, grouped in a
                         // temporary b-tree (left to itself it walks the customer index, ~3x slower).
                         "INDEXED BY billing_events_by_time_id "
                         "WHERE b.product = 1 AND b.ts_ns >= ?1 "
                         "AND b.ts_ns < ?2 GROUP BY b.user_id",
                         -1, &stmt, nullptr) != SQLITE_OK) {
    state.SkipWithError("cannot read the database");
    sqlite3_close(db);
    return;
  }
  for (auto _ : state) {
    sqlite3_bind_int64(stmt, 1, kNovember);
    sqlite3_bind_int64(stmt, 2, kNovember + 30LL * 86'400'000'000'000);
    int customers = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      if (sqlite3_column_int64(stmt, 1) != w.per_customer ||
          sqlite3_column_double(stmt, 2) != 1.5 * static_cast<double>(w.per_customer)) {
        break;
      }
      ++customers;
    }
    sqlite3_reset(stmt);
    if (customers != kCustomers) {
      state.SkipWithError("the baseline does not match what was ingested");
      break;
    }
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

BENCHMARK(invoice_sql_baseline)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(invoice_one_customer)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(invoice_all_customers)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(invoice_sql_group_by)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(profit_by_customer)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
#ifdef PAYGENT_WITH_POSTGRES
BENCHMARK(pg_invoice_one_customer)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pg_invoice_sql_group_by)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pg_invoice_sql_ordered_read)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pg_profit_by_customer)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

}  // namespace
