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
// Each benchmark first checks that a batch is stored exactly, then times, then checks the stored
// count again; a mismatch fails the benchmark instead of reporting a speed.
//
//   build/bench/paygent_bench --benchmark_filter=postgres --benchmark_min_time=2
#ifdef PAYGENT_WITH_POSTGRES

#include <benchmark/benchmark.h>
#include <libpq-fe.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
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
  const std::string copy_sql = "COPY events(product, id, received_ns, " + ::paygent::internal::event_columns() +
                               ") FROM STDIN";
  auto copy = [&](const std::vector<EventRecord>& batch) {
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
    r = PQexec(conn, "COMMIT");
    const bool committed = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok && committed;
  };
  if (!copy(new_batch(size)) || count_events(conninfo) != size) {
    PQfinish(conn);
    state.SkipWithError("COPY did not store the check batch exactly");
    return;
  }
  std::int64_t total = size;
  for (auto _ : state) {
    state.PauseTiming();
    const std::vector<EventRecord> batch = new_batch(size);
    state.ResumeTiming();
    if (!copy(batch)) {
      state.SkipWithError("a COPY failed");
      break;
    }
    total += size;
  }
  PQfinish(conn);
  if (count_events(conninfo) != total) {
    state.SkipWithError("the stored count does not match the rows copied");
    return;
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(total - size), benchmark::Counter::kIsRate);
}

BENCHMARK(ingest_postgres_storage)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_postgres_storage_insert)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_postgres_storage_in_parts)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_postgres_raw_copy)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace paygent::server

#endif  // PAYGENT_WITH_POSTGRES
