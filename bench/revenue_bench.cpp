// What billing events cost the ingest (docs/tracking.md, "Revenue"): batches of 1,000 events into a
// SqliteStorage, three ways in one run:
//   revenue_ingest/0  cost-only events (no indicator): the baseline, no billing event written
//   revenue_ingest/1  full tracking, a per-event price: one billing event per event
//   revenue_ingest/2  voice: per 10 events, 9 provider events of one session and its billing event
//                     on a per-minute indicator with custom rates (the session's models are read:
//                     the customer's events within a day of the billing event, by index)
// Each checks the profit report's revenue and billing-event count against what it ingested.
//   build/bench/paygent_bench --benchmark_filter=revenue_ --benchmark_repetitions=3
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "server/sqlite_storage.h"
#include "support/paygentd_process.h"

namespace {

using paygent::server::AgentRecord;
using paygent::server::EventRecord;
using paygent::server::ProfitGroup;

constexpr int kBatch = 1000;
constexpr std::int64_t kTs = 1'795'000'000'000'000'000;  // in November 2026

std::string hex_id(std::uint64_t n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%032llx", static_cast<unsigned long long>(n));
  return buf;
}

// Event `n` of `mode` (see above).
EventRecord make(int mode, std::uint64_t n) {
  EventRecord e;
  e.id = hex_id(n + 1);
  e.user_id = "c" + std::to_string(n / 10 % 50);  // a session's events are one customer's
  e.agent_id = "agent";
  e.model = "gpt-4o";
  e.provider = "openai";
  e.input_tokens = 1000;
  e.output_tokens = 200;
  e.cost_nanos = 4'500'000;
  e.ts_ns = kTs + static_cast<std::int64_t>(n) * 1'000'000'000;  // one a second: a customer's day is ~1,700 events
  if (mode == 1) e.indicator = "call";
  if (mode == 2) {
    e.session_id = "s" + std::to_string(n / 10);
    if (n % 10 == 9) {
      e.kind = paygent::internal::UsageKind::kBilling;
      e.indicator = "voice";
      e.model.clear();
      e.input_tokens = e.output_tokens = e.cost_nanos = 0;
      e.audio_us = 120'000'000;  // 2 minutes
    } else if (n % 10 == 3) {
      e.kind = paygent::internal::UsageKind::kStt;
      e.model = "nova-2";
      e.audio_us = 60'000'000;
    }
  }
  return e;
}

void revenue_ingest(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  paygent::testing::TempDir dir("paygent-bench-revenue");
  auto storage = paygent::server::SqliteStorage::open(dir.path() + "/p.db");
  if (!storage.ok() || !(*storage)->create_product("p", "p", std::string(64, 'a')).ok()) {
    state.SkipWithError("cannot open the storage");
    return;
  }
  AgentRecord agent{.agent_id = "agent", .name = "a"};
  agent.indicators.push_back({.indicator = "call", .per_minute = false, .price_nanos = 200'000'000});
  agent.indicators.push_back({.indicator = "voice",
                              .per_minute = true,
                              .price_nanos = 150'000'000,
                              .custom_rates = {{.kind = "llm", .model = "gpt-4o", .nanos_per_minute = 500'000'000},
                                               {.kind = "stt", .model = "nova-2", .nanos_per_minute = 50'000'000}}});
  if (!(*storage)->put_agent("p", agent).ok()) {
    state.SkipWithError("cannot put the agent");
    return;
  }
  std::uint64_t next = 0;
  std::int64_t batches = 0;
  for (auto _ : state) {
    std::vector<EventRecord> events;
    state.PauseTiming();
    events.reserve(kBatch);
    for (int i = 0; i < kBatch; ++i) events.push_back(make(mode, next++));
    state.ResumeTiming();
    const auto r = (*storage)->ingest("p", events);
    if (!r.ok() || r->accepted != kBatch) {
      state.SkipWithError("a batch was not stored whole");
      return;
    }
    ++batches;
  }
  // The check: every billing event priced as the rule says.
  const auto rows = (*storage)->profit_report("p", {.from_ns = kTs, .to_ns = kTs + 100'000'000'000'000'000}, ProfitGroup::kAgent);
  const std::int64_t billing = mode == 0 ? 0 : mode == 1 ? batches * kBatch : batches * kBatch / 10;
  // per event $0.20; voice: 2 min x (0.50 gpt-4o + 0.05 nova-2) = $1.10
  const std::int64_t revenue = mode == 1 ? billing * 200'000'000 : billing * 1'100'000'000;
  if (!rows.ok() || rows->size() != 1 || (*rows)[0].billing_events != billing ||
      (mode != 0 && (*rows)[0].revenue_nanos != revenue) || (mode == 0 && (*rows)[0].revenue_nanos.has_value())) {
    state.SkipWithError("the profit report does not match what was ingested");
    return;
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(batches * kBatch), benchmark::Counter::kIsRate);
}

BENCHMARK(revenue_ingest)->Arg(0)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
