// Ingest on PostgreSQL: PostgresStorage::ingest in-process (BEGIN with the users' locks, the
// events by COPY, then one statement: the users, the events read back by id, the daily sums and
// the product's totals; then COMMIT), beside the same statement loading the events itself
// (ingest_postgres_storage_insert: one array per column through unnest with INSERT ... ON
// CONFLICT DO NOTHING RETURNING id, as before 2026-12-05), beside one statement per table
// (ingest_postgres_storage_in_parts, the code before issue 9), beside a raw COPY of the same rows into the same events table (with its two indexes) in
// one transaction per batch: the baseline of what the server alone allows. Both run against one
// throwaway PostgreSQL 15 the benchmark starts (tests/support/postgres_process.h; fsync off, so
// the ratio compares work, not the disk).
//
// ingest_postgres_raw_copy_with_sums is the floor under any ingest that keeps the per-user sums
// exact at its commit: the raw COPY, then one hand-written upsert of the rollup rows summed here.
//
// Each benchmark first checks that a batch is stored exactly, then times, then checks the stored
// count again; a mismatch fails the benchmark instead of reporting a speed.
//
//   build/bench/paygent_bench --benchmark_filter=postgres --benchmark_min_time=2
#ifdef PAYGENT_WITH_POSTGRES

#include <benchmark/benchmark.h>
#include <libpq-fe.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/postgres_storage.h"
#include "server/storage.h"
#include "postgres_bench.h"
#include "support/postgres_process.h"
#include "sync/event_record.h"

namespace paygent::server {
namespace {

constexpr int kUsers = 100;
constexpr const char* kModels[] = {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4"};

std::string next_id() {
  static std::atomic<std::uint64_t> counter{0};
  char id[40];
  std::snprintf(id, sizeof id, "%016llx%016llx", 0x9a11ULL, static_cast<unsigned long long>(counter++));
  return id;
}

std::vector<EventRecord> new_batch(int size) {
  std::vector<EventRecord> events(static_cast<std::size_t>(size));
  const std::int64_t now = absl::ToUnixNanos(absl::Now());
  for (int i = 0; i < size; ++i) {
    EventRecord& e = events[static_cast<std::size_t>(i)];
    const auto n = static_cast<std::uint64_t>(i);
    e.id = next_id();
    e.user_id = "user-" + std::to_string(n % kUsers);
    e.session_id = "auto-" + std::to_string(n % 977);
    e.model = kModels[n % 3];
    e.provider = "openai";
    e.input_tokens = 1000 + i % 500;
    e.output_tokens = 200 + i % 50;
    e.cached_input_tokens = 100;
    e.cost_nanos = 4'500'000 + i % 1000;
    e.ts_ns = now + i;
    e.meta_tags_json = R"({"team":"search"})";
  }
  return events;
}

std::int64_t count_events(const std::string& conninfo) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  PGresult* r = PQexec(conn, "SELECT COUNT(*) FROM events");
  const std::int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK ? std::stoll(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  PQfinish(conn);
  return n;
}

void ingest_postgres(benchmark::State& state, PostgresOptions options) {
  const int size = static_cast<int>(state.range(0));
  const std::string conninfo = paygent::bench::new_postgres_database();
  if (conninfo.empty()) {
    state.SkipWithError("PostgreSQL cannot start here");
    return;
  }
  auto storage = PostgresStorage::open(conninfo, options);
  if (!storage.ok() || !(*storage)->create_product("p", "bench", std::string(64, 'b')).ok()) {
    state.SkipWithError("cannot open a PostgresStorage");
    return;
  }
  const auto check = (*storage)->ingest("p", new_batch(size));
  if (!check.ok() || check->accepted != size || count_events(conninfo) != size) {
    state.SkipWithError("PostgresStorage did not store the check batch exactly");
    return;
  }
  std::int64_t total = size;
  for (auto _ : state) {
    state.PauseTiming();
    const std::vector<EventRecord> batch = new_batch(size);
    state.ResumeTiming();
    const auto r = (*storage)->ingest("p", batch);
    if (!r.ok() || r->accepted != size) {
      state.SkipWithError("a batch was not stored whole");
      return;
    }
    total += size;
  }
  if (count_events(conninfo) != total) {
    state.SkipWithError("the stored count does not match the events ingested");
    return;
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(total - size), benchmark::Counter::kIsRate);
}

// The events by COPY, then the sums in one statement, as paygentd does.
void ingest_postgres_storage(benchmark::State& state) { ingest_postgres(state, {}); }
// The one statement's INSERT ... ON CONFLICT DO NOTHING for the events, without COPY first.
void ingest_postgres_storage_insert(benchmark::State& state) { ingest_postgres(state, {.copy_ingest = false}); }
// One statement per table (users, events, totals, daily sums, totals), as before issue 9.
void ingest_postgres_storage_in_parts(benchmark::State& state) {
  ingest_postgres(state, {.one_statement_ingest = false});
}

// COPY's text format of one event row (product 1), in the events table's column order.
void append_copy_row(std::string& out, const EventRecord& e, std::int64_t received_ns) {
  out += "1\t\\\\x" + e.id + "\t" + std::to_string(received_ns);
  for (const auto& f : ::paygent::internal::kEventFields) {
    switch (f.type) {
      case ::paygent::internal::EventFieldType::kId: continue;
      case ::paygent::internal::EventFieldType::kText:
      case ::paygent::internal::EventFieldType::kMetaTags: out += "\t" + e.*f.text; break;
      case ::paygent::internal::EventFieldType::kCount: out += "\t" + std::to_string(e.*f.count); break;
      case ::paygent::internal::EventFieldType::kBool: out += e.*f.flag ? "\t1" : "\t0"; break;
      case ::paygent::internal::EventFieldType::kKind:
        out += "\t" + std::string(::paygent::internal::usage_kind_name(e.kind));
        break;
    }
  }
  out += "\n";
}

// COPY of the events table's columns, in append_copy_row()'s order.
std::string raw_copy_sql() {
  return "COPY events(product, id, received_ns, " + ::paygent::internal::event_columns() + ") FROM STDIN";
}

// BEGIN, then `batch` by COPY (`copy_sql`, text format) on `conn`; false when either fails. The
// caller ends the transaction (commit()).
bool begin_and_copy(PGconn* conn, const std::string& copy_sql, const std::vector<EventRecord>& batch) {
  std::string rows;
  const std::int64_t now = absl::ToUnixNanos(absl::Now());
  for (const EventRecord& e : batch) append_copy_row(rows, e, now);
  PQclear(PQexec(conn, "BEGIN"));
  PGresult* r = PQexec(conn, copy_sql.c_str());
  const bool in = PQresultStatus(r) == PGRES_COPY_IN;
  PQclear(r);
  if (!in) return false;
  if (PQputCopyData(conn, rows.data(), static_cast<int>(rows.size())) != 1 || PQputCopyEnd(conn, nullptr) != 1) return false;
  r = PQgetResult(conn);
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  while ((r = PQgetResult(conn)) != nullptr) PQclear(r);
  return ok;
}

bool commit(PGconn* conn) {
  PGresult* r = PQexec(conn, "COMMIT");
  const bool committed = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return committed;
}

// The timed loop of the raw benchmarks: write(batch) for a new batch of `size` events per
// iteration (made outside the timing). The events written, or nullopt when a write failed (the
// benchmark is then skipped with an error).
template <typename Write>
std::optional<std::int64_t> time_batches(benchmark::State& state, int size, Write write) {
  std::int64_t written = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::vector<EventRecord> batch = new_batch(size);
    state.ResumeTiming();
    if (!write(batch)) {
      state.SkipWithError("a batch was not written");
      return std::nullopt;
    }
    written += size;
  }
  return written;
}

void ingest_postgres_raw_copy(benchmark::State& state) {
  const int size = static_cast<int>(state.range(0));
  const std::string conninfo = paygent::bench::new_postgres_database();
  if (conninfo.empty()) {
    state.SkipWithError("PostgreSQL cannot start here");
    return;
  }
  if (!PostgresStorage::open(conninfo).ok()) {  // the same schema
    state.SkipWithError("cannot create the schema");
    return;
  }
  PGconn* conn = PQconnectdb(conninfo.c_str());
  const std::string copy_sql = raw_copy_sql();
  auto copy = [&](const std::vector<EventRecord>& batch) { return begin_and_copy(conn, copy_sql, batch) && commit(conn); };
  if (!copy(new_batch(size)) || count_events(conninfo) != size) {
    PQfinish(conn);
    state.SkipWithError("COPY did not store the check batch exactly");
    return;
  }
  const std::optional<std::int64_t> written = time_batches(state, size, copy);
  PQfinish(conn);
  if (!written) return;
  if (count_events(conninfo) != size + *written) {
    state.SkipWithError("the stored count does not match the rows copied");
    return;
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(*written), benchmark::Counter::kIsRate);
}

// The floor under any ingest that keeps the rollups exact at its commit, as the replies need:
// the same raw COPY, then, in its transaction, one hand-written statement upserting the rows
// the batch adds to the per-user and per-model rollups and the product's totals, summed here in
// the benchmark (no read-back, no SQL aggregation, no user locks, no users, no duplicates).
// What the rollups cost the server beside the events' COPY, whoever writes them.
std::string int_array(const std::vector<std::int64_t>& v) {
  std::string out = "{";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out + "}";
}
std::string str_array(const std::vector<std::string>& v) {
  std::string out = "{";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ",\"" : "\"") + v[i] + "\"";  // (plain names)
  return out + "}";
}

// A rollup's rows: key columns (text) and day, then calls and the six sums.
struct SumRows {
  std::map<std::pair<std::vector<std::string>, std::int64_t>, std::array<std::int64_t, 7>> rows;
  void add(std::vector<std::string> key, std::int64_t day, const EventRecord& e) {
    auto& r = rows[{std::move(key), day}];
    const std::int64_t v[7] = {1, e.input_tokens, e.output_tokens, e.cached_input_tokens,
                               e.cache_creation_input_tokens, e.reasoning_tokens, e.cost_nanos};
    for (int i = 0; i < 7; ++i) r[static_cast<std::size_t>(i)] += v[i];
  }
  // Its arrays as params: each key column, the day, then the seven sums.
  void params(std::vector<std::string>& out, std::size_t keys) const {
    for (std::size_t k = 0; k < keys; ++k) {
      std::vector<std::string> col;
      for (const auto& [key, sums] : rows) col.push_back(key.first[k]);
      out.push_back(str_array(col));
    }
    std::vector<std::int64_t> days;
    for (const auto& [key, sums] : rows) days.push_back(key.second);
    out.push_back(int_array(days));
    for (std::size_t i = 0; i < 7; ++i) {
      std::vector<std::int64_t> col;
      for (const auto& [key, sums] : rows) col.push_back(sums[i]);
      out.push_back(int_array(col));
    }
  }
};

// "INSERT INTO table(product, <keys>, day, calls, <sums>) SELECT 1, * FROM unnest($first...) ON
// CONFLICT (...) DO UPDATE" for a rollup whose params start at $first.
std::string upsert_sql(const std::string& table, const std::vector<std::string>& keys, int first, bool profit) {
  std::string cols, arrays, conflict = "product";
  int n = first;
  for (const std::string& k : keys) {
    cols += k + ", ";
    arrays += "$" + std::to_string(n++) + "::text[], ";
    conflict += ", " + k;
  }
  arrays += "$" + std::to_string(n++) + "::bigint[]";
  conflict += ", day";
  for (int i = 0; i < 7; ++i) arrays += ", $" + std::to_string(n++) + "::bigint[]";
  if (profit) {  // profit_daily: cost_events, cost_nanos (calls and cost of the seven)
    return "INSERT INTO " + table + "(product, " + cols + "day, cost_events, cost_nanos, cost_unknown, billing_events, "
           "revenue_nanos, revenue_known) SELECT 1, r.*, 0, 0, 0, 0 FROM (SELECT " +
           std::string(keys.size() == 3 ? "k0, k1, k2, " : "") + "d, c0, c6 FROM unnest(" + arrays +
           ") AS u(k0, k1, k2, d, c0, c1, c2, c3, c4, c5, c6)) r ON CONFLICT (" + conflict +
           ") DO UPDATE SET cost_events = " + table + ".cost_events + excluded.cost_events, cost_nanos = " + table +
           ".cost_nanos + excluded.cost_nanos";
  }
  std::string set = "calls = " + table + ".calls + excluded.calls";
  for (std::string_view c : {"input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens",
                             "reasoning_tokens", "cost_nanos"}) {
    set += ", " + std::string(c) + " = " + table + "." + std::string(c) + " + excluded." + std::string(c);
  }
  return "INSERT INTO " + table + "(product, " + cols + "day, calls, input_tokens, output_tokens, cached_input_tokens, "
         "cache_creation_input_tokens, reasoning_tokens, cost_nanos) SELECT 1, * FROM unnest(" + arrays +
         ") ON CONFLICT (" + conflict + ") DO UPDATE SET " + set;
}

void ingest_postgres_raw_copy_with_sums(benchmark::State& state) {
  const int size = static_cast<int>(state.range(0));
  const std::string conninfo = paygent::bench::new_postgres_database();
  if (conninfo.empty()) {
    state.SkipWithError("PostgreSQL cannot start here");
    return;
  }
  auto storage = PostgresStorage::open(conninfo);  // the same schema, and product 1 with its totals row
  if (!storage.ok() || !(*storage)->create_product("p", "bench", std::string(64, 'b')).ok()) {
    state.SkipWithError("cannot create the schema");
    return;
  }
  PGconn* conn = PQconnectdb(conninfo.c_str());
  const std::string copy_sql = raw_copy_sql();
  // The rollups in paygentd's order of tables, each's params its key columns, the day and the
  // seven sums: usage_daily $1-$10, by_model $11-$19, by_user $20-$28, by_provider $29-$37,
  // profit_daily $38-$48; then the product's totals, $49-$55.
  const std::string sums_sql =
      "WITH a AS (" + upsert_sql("usage_daily", {"user_id", "model"}, 1, false) + "), b AS (" +
      upsert_sql("usage_daily_by_model", {"model"}, 11, false) + "), c AS (" +
      upsert_sql("usage_daily_by_user", {"user_id"}, 20, false) + "), d AS (" +
      upsert_sql("usage_daily_by_provider", {"provider"}, 29, false) + "), e AS (" +
      upsert_sql("profit_daily", {"user_id", "agent_id", "indicator"}, 38, true) +
      ") UPDATE product_totals SET calls = calls + $49, input_tokens = input_tokens + $50, output_tokens = "
      "output_tokens + $51, cached_input_tokens = cached_input_tokens + $52, cache_creation_input_tokens = "
      "cache_creation_input_tokens + $53, reasoning_tokens = reasoning_tokens + $54, cost_nanos = cost_nanos + $55 "
      "WHERE product = 1";
  constexpr std::int64_t kDay = 86'400'000'000'000;
  PGresult* prepared = PQprepare(conn, "sums", sums_sql.c_str(), 0, nullptr);  // planned once, as paygentd's
  const bool ready = PQresultStatus(prepared) == PGRES_COMMAND_OK;
  PQclear(prepared);
  auto write = [&](const std::vector<EventRecord>& batch) {
    SumRows daily, by_model, by_user, by_provider, profit, totals;
    for (const EventRecord& e : batch) {
      const std::int64_t day = e.ts_ns / kDay;
      daily.add({e.user_id, e.model}, day, e);
      by_model.add({e.model}, day, e);
      by_user.add({e.user_id}, day, e);
      by_provider.add({e.provider}, day, e);
      profit.add({e.user_id, e.agent_id, e.indicator}, day, e);
      totals.add({}, 0, e);
    }
    std::vector<std::string> params;
    daily.params(params, 2);
    by_model.params(params, 1);
    by_user.params(params, 1);
    by_provider.params(params, 1);
    profit.params(params, 3);
    for (std::int64_t v : totals.rows.begin()->second) params.push_back(std::to_string(v));
    std::vector<const char*> values;
    for (const std::string& p : params) values.push_back(p.c_str());
    if (!begin_and_copy(conn, copy_sql, batch)) return false;
    PGresult* r = PQexecPrepared(conn, "sums", static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0);
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK && std::string_view(PQcmdTuples(r)) == "1";
    if (!ok) std::fprintf(stderr, "sums: %s\n", PQresultErrorMessage(r));
    PQclear(r);
    return commit(conn) && ok;
  };
  auto calls_summed = [&] {
    PGresult* r = PQexec(conn, "SELECT (SELECT SUM(calls) FROM usage_daily) + (SELECT SUM(cost_events) FROM "
                               "profit_daily) + (SELECT calls FROM product_totals WHERE product = 1)");
    const std::int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK ? std::atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
  };
  if (!ready || !write(new_batch(size)) || count_events(conninfo) != size || calls_summed() != 3 * size) {
    PQfinish(conn);
    state.SkipWithError("COPY and sums did not store the check batch exactly");
    return;
  }
  const std::optional<std::int64_t> written = time_batches(state, size, write);
  if (!written) {
    PQfinish(conn);
    return;
  }
  const std::int64_t total = size + *written;
  const bool exact = count_events(conninfo) == total && calls_summed() == 3 * total;
  PQfinish(conn);
  if (!exact) {
    state.SkipWithError("the stored count or sums do not match the rows written");
    return;
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(*written), benchmark::Counter::kIsRate);
}

BENCHMARK(ingest_postgres_storage)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_postgres_storage_insert)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_postgres_storage_in_parts)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_postgres_raw_copy)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_postgres_raw_copy_with_sums)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace paygent::server

#endif  // PAYGENT_WITH_POSTGRES
