// Budget leases on SQLite, in-process: SqlStorage::grant_leases renewing one holder's leases
// (total_spend and a model limit for each of N users, over a month whose ledger holds 600 events
// per user on 30 days) beside the baseline of the lightest write of those users under the same
// locks: an ingest of one event per user. Both are one write transaction that takes the users'
// locks; a grant also reads each user's month (whole days from the daily sums, the edges from the
// events) and the limit's leases, and writes the lease. synchronous=NORMAL, so that the ratio
// compares work rather than fsync.
//
// Each benchmark first checks its result (a fresh holder is granted exactly what it wants over a
// ledger whose total it reports exactly; an ingest stores every event), then times, then checks
// again (the leases are held: another holder sees them; the stored count is exact); a mismatch
// fails the benchmark instead of reporting a speed.
//
//   build/bench/paygent_bench --benchmark_filter=lease
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "server/sqlite_storage.h"
#include "server/storage.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server {
namespace {

constexpr std::int64_t kDay = 86'400'000'000'000;
constexpr std::int64_t kMonthStart = 20'000 * kDay + kDay / 4;  // starts and ends inside a day
constexpr std::int64_t kMonthEnd = kMonthStart + 30 * kDay;
constexpr int kEventsPerUserDay = 20;
constexpr std::int64_t kEventCost = 1'000;

// A fresh event id per call, across the run.
std::string next_event_id() {
  static std::atomic<std::uint64_t> counter{0};
  char id[40];
  std::snprintf(id, sizeof id, "%016llx%016llx", 0x1ea5eULL, static_cast<unsigned long long>(counter++));
  return id;
}

EventRecord event(int user, std::int64_t ts_ns) {
  EventRecord e;
  e.id = next_event_id();
  e.user_id = "user-" + std::to_string(user);
  e.model = user % 2 == 0 ? "gpt-4o-2024-08-06" : "gpt-4o";
  e.session_id = "s";
  e.input_tokens = 100;
  e.output_tokens = 10;
  e.cost_nanos = kEventCost;
  e.ts_ns = ts_ns;
  return e;
}

// A storage whose product "p" has `users` users with kEventsPerUserDay events on each day of the
// month; nullptr after failing `state`.
std::unique_ptr<SqliteStorage> ledger(benchmark::State& state, const paygent::testing::TempDir& dir, int users) {
  SqliteOptions options;
  options.synchronous = SqliteOptions::Synchronous::kNormal;
  auto storage = SqliteStorage::open(dir.path() + "/lease.db", options);
  if (!storage.ok() || !(*storage)->create_product("p", "bench", std::string(64, 'b')).ok()) {
    state.SkipWithError("cannot open a SqliteStorage");
    return nullptr;
  }
  for (int day = 0; day < 30; ++day) {
    std::vector<EventRecord> batch;
    for (int u = 0; u < users; ++u) {
      for (int i = 0; i < kEventsPerUserDay; ++i) batch.push_back(event(u, kMonthStart + day * kDay + i * 1000));
    }
    if (!(*storage)->ingest("p", batch).ok()) {
      state.SkipWithError("cannot store the ledger");
      return nullptr;
    }
  }
  return *std::move(storage);
}

std::vector<LeaseRequest> renewal(int users, std::int64_t want) {
  std::vector<LeaseRequest> out;
  for (int u = 0; u < users; ++u) {
    for (const char* limit : {"total_spend", "model_limit:gpt-4o"}) {
      out.push_back(LeaseRequest{.user_id = "user-" + std::to_string(u), .limit_key = limit,
                                 .period_start_ns = kMonthStart, .period_end_ns = kMonthEnd,
                                 .cap = INT64_MAX / 4, .want = want});
    }
  }
  return out;
}

void BM_lease_renewal_sqlite(benchmark::State& state) {
  const int users = static_cast<int>(state.range(0));
  paygent::testing::TempDir dir("lease-bench");
  std::unique_ptr<SqliteStorage> storage = ledger(state, dir, users);
  if (storage == nullptr) return;
  const std::string holder(32, 'a');
  const std::vector<LeaseRequest> requests = renewal(users, 1'000'000);
  constexpr std::int64_t kNow = kMonthStart + 10 * kDay;
  const std::int64_t month_spend = 30 * kEventsPerUserDay * kEventCost;
  const std::int64_t month_tokens = 30 * kEventsPerUserDay * 110;
  auto first = storage->grant_leases("p", holder, requests, kNow, 10 * kDay);
  if (!first.ok() || first->size() != requests.size()) {
    state.SkipWithError("the check grant failed");
    return;
  }
  for (std::size_t i = 0; i < first->size(); ++i) {
    const LeaseGrant& g = (*first)[i];
    if (g.granted != 1'000'000 || g.spent != (i % 2 == 0 ? month_spend : month_tokens)) {
      state.SkipWithError("the check grant is not what the ledger allows");
      return;
    }
  }
  for (auto _ : state) {
    auto g = storage->grant_leases("p", holder, requests, kNow, 10 * kDay);
    if (!g.ok() || g->size() != requests.size()) {
      state.SkipWithError("a renewal failed");
      return;
    }
    benchmark::DoNotOptimize(g->back().ceiling);
  }
  const std::vector<LeaseRequest> probe = renewal(users, 0);
  auto other = storage->grant_leases("p", std::string(32, 'b'), probe, kNow, 10 * kDay);
  if (!other.ok() || other->front().held_elsewhere != 1'000'000 || other->front().holders != 2) {
    state.SkipWithError("the renewed leases are not held");
    return;
  }
  state.counters["entries/s"] = benchmark::Counter(static_cast<double>(state.iterations()) *
                                                       static_cast<double>(requests.size()),
                                                   benchmark::Counter::kIsRate);
}
BENCHMARK(BM_lease_renewal_sqlite)->Arg(1)->Arg(50)->UseRealTime();

// The baseline: one event per user, the same users' locks, one write transaction.
void BM_lease_baseline_ingest_one_event_per_user_sqlite(benchmark::State& state) {
  const int users = static_cast<int>(state.range(0));
  paygent::testing::TempDir dir("lease-bench");
  std::unique_ptr<SqliteStorage> storage = ledger(state, dir, users);
  if (storage == nullptr) return;
  std::int64_t stored = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<EventRecord> batch;
    for (int u = 0; u < users; ++u) batch.push_back(event(u, kMonthStart + 10 * kDay));
    state.ResumeTiming();
    auto r = storage->ingest("p", batch);
    if (!r.ok() || r->accepted != users) {
      state.SkipWithError("a batch was not stored whole");
      return;
    }
    stored += users;
  }
  auto report = storage->report("p", {.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kUser});
  if (!report.ok()) {
    state.SkipWithError("cannot read the stored count");
    return;
  }
  std::int64_t calls = 0;
  for (const auto& [user, totals] : *report) calls += totals.calls;
  if (calls != stored + 30 * kEventsPerUserDay * users) {
    state.SkipWithError("the stored count does not match the events ingested");
    return;
  }
  state.counters["users/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * users, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_lease_baseline_ingest_one_event_per_user_sqlite)->Arg(1)->Arg(50)->UseRealTime();

}  // namespace
}  // namespace paygent::server
