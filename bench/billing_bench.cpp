// The billing engine (billing/): invoice previews for 1,000 customers from 1,000,000 in-memory
// events, beside a plain hash-map sum of the same rows in the same process.
//
// The rows, in stored order (by customer, then time; a storage pages one customer's events into one
// InvoiceBuilder, previews, and moves on): 1,000 customers, three indicators (GPU hours: Sum on
// "hours" priced GRADUATED; API requests: Count filtered on region = us-east-1, FLAT; documents:
// Unique count on "document_id", VOLUME), each event with a 32-character id, a timestamp in
// November 2026 and two meta tags. 1% of the events are re-deliveries of an earlier id.
//
// Checked first: every customer's three quantities and amounts against totals kept in integers while
// the rows were generated; the baseline's sums against the same totals. Then timed: each iteration
// runs the baselines and the engine over all rows; counters report each, `ratio` (engine / plain
// sum) and `ratio_dedup` (engine / the sum that also counts each id once). Run with
// --benchmark_repetitions=5 --benchmark_report_aggregates_only=true for medians.
//
// The baseline is what a first implementation would do: one absl::flat_hash_map keyed by (customer,
// indicator) holding an event count and a double sum of std::from_chars of the "hours" tag. It
// does not deduplicate ids, count distinct documents, apply filters exactly, or stay exact.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "billing/invoice.h"

namespace {

using paygent::billing::Aggregation;
using paygent::billing::BillingEvent;
using paygent::billing::BillingPeriod;
using paygent::billing::Decimal;
using paygent::billing::Indicator;
using paygent::billing::Invoice;
using paygent::billing::InvoiceBuilder;
using paygent::billing::MetaTag;
using paygent::billing::Metric;
using paygent::billing::MetricDefinition;
using paygent::billing::PriceTier;
using paygent::billing::Pricing;
using paygent::billing::PricingModel;

constexpr int kCustomers = 1'000;
constexpr int kEvents = 1'000'000;
constexpr std::array<const char*, 3> kIndicators = {"inference", "api-request", "analyze"};
constexpr BillingPeriod kNovember{1'793'491'200LL * 1'000'000'000LL, 1'796'083'200LL * 1'000'000'000LL};

Decimal dec(const char* text) { return *Decimal::parse(text); }

struct Row {
  std::uint32_t customer = 0;
  std::uint8_t indicator = 0;
  std::array<char, 32> id{};  // inline, as in a page of stored rows (32 lowercase hex digits)
  std::int64_t ts_ns = 0;
  std::string value;  // hours, region or document id (short: inline too)
  std::array<MetaTag, 2> tags{};
};

struct Expected {
  std::int64_t hours_tenths = 0;  // Sum of hours, in tenths
  std::int64_t us_east = 0;       // Count of region = us-east-1
  std::set<std::string> documents;
  std::int64_t baseline_events = 0;  // every row, re-deliveries included
};

struct Fixture {
  std::vector<Indicator> indicators;
  std::vector<Row> rows;
  std::vector<Expected> expected;

  Fixture() {
    Indicator gpu{.name = kIndicators[0]};
    gpu.metric = *Metric::create(MetricDefinition{.name = "GPU compute hours", .aggregation = Aggregation::kSum,
                                                  .field = "hours"});
    gpu.pricing = Pricing{.model = PricingModel::kGraduated, .unit = "GPU-hour",
                          .tiers = {PriceTier{dec("100"), dec("0.50"), Decimal()},
                                    PriceTier{std::nullopt, dec("0.40"), dec("5")}}};
    Indicator api{.name = kIndicators[1]};
    api.metric = *Metric::create(MetricDefinition{.name = "us east requests", .aggregation = Aggregation::kCount,
                                                  .filters = {{"region", {"us-east-1"}}}});
    api.pricing = Pricing{.model = PricingModel::kFlat, .unit = "request", .unit_price = dec("0.002")};
    Indicator docs{.name = kIndicators[2]};
    docs.metric = *Metric::create(MetricDefinition{.name = "Documents processed",
                                                   .aggregation = Aggregation::kUniqueCount, .field = "document_id"});
    docs.pricing = Pricing{.model = PricingModel::kVolume, .unit = "document",
                           .tiers = {PriceTier{dec("50"), dec("0.10"), Decimal()},
                                     PriceTier{std::nullopt, dec("0.08"), Decimal()}}};
    indicators = {std::move(gpu), std::move(api), std::move(docs)};

    expected.resize(kCustomers);
    rows.reserve(kEvents);  // no reallocation: the tags view the rows' own strings
    std::mt19937_64 rng(42);
    const char* regions[] = {"us-east-1", "eu-west-1", "us-west-2", "ap-south-1"};
    char id[40];
    for (int i = 0; i < kEvents; ++i) {
      Row& r = rows.emplace_back();
      const bool redelivery = i > 0 && rng() % 100 == 0;
      if (redelivery) {  // the same event again (same customer, indicator, id, tags)
        const Row& earlier = rows[rng() % static_cast<std::uint64_t>(i)];
        r.customer = earlier.customer;
        r.indicator = earlier.indicator;
        r.id = earlier.id;
        r.ts_ns = earlier.ts_ns;
        r.value = earlier.value;
      } else {
        r.customer = static_cast<std::uint32_t>(rng() % kCustomers);
        r.indicator = static_cast<std::uint8_t>(rng() % 3);
        std::snprintf(id, sizeof id, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                      static_cast<unsigned long long>(i));
        std::copy_n(id, 32, r.id.begin());
        r.ts_ns = kNovember.start_ns + static_cast<std::int64_t>(rng() % 2'592'000'000'000'000ULL);
        Expected& e = expected[r.customer];
        if (r.indicator == 0) {
          const std::int64_t tenths = 1 + static_cast<std::int64_t>(rng() % 480);
          r.value = std::to_string(tenths / 10) + "." + std::to_string(tenths % 10);
          e.hours_tenths += tenths;
        } else if (r.indicator == 1) {
          r.value = regions[rng() % 4];
          if (r.value == "us-east-1") ++e.us_east;
        } else {
          r.value = "doc-" + std::to_string(rng() % 400);
          e.documents.insert(r.value);
        }
      }
      ++expected[r.customer].baseline_events;
    }
    // Stored order: by customer, then time (the order in which a storage pages one customer's events).
    std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      return a.customer != b.customer ? a.customer < b.customer : a.ts_ns < b.ts_ns;
    });
    for (Row& r : rows) {  // after the sort: the tags view the rows' own strings
      static constexpr const char* kKeys[] = {"hours", "region", "document_id"};
      r.tags = {MetaTag{kKeys[r.indicator], r.value}, MetaTag{"source", "bench"}};
    }
  }
};

const Fixture& fixture() {
  static const Fixture* f = new Fixture();
  return *f;
}

// Every customer's invoice preview, one customer at a time as the rows come (one builder alive).
std::vector<Invoice> engine_previews(const Fixture& f) {
  std::vector<Invoice> invoices(kCustomers);
  std::size_t i = 0;
  std::uint64_t arrival = 0;
  while (i < f.rows.size()) {
    const std::uint32_t customer = f.rows[i].customer;
    InvoiceBuilder b = *InvoiceBuilder::create(f.indicators, kNovember);
    for (; i < f.rows.size() && f.rows[i].customer == customer; ++i) {
      const Row& r = f.rows[i];
      b.add(kIndicators[r.indicator], BillingEvent{std::string_view(r.id.data(), 32), r.ts_ns, ++arrival, r.tags, {}});
    }
    invoices[customer] = *b.preview();
  }
  return invoices;
}

struct BaselineCell {
  std::int64_t events = 0;
  double sum = 0;
};

absl::flat_hash_map<std::uint64_t, BaselineCell> baseline_sums(const Fixture& f) {
  absl::flat_hash_map<std::uint64_t, BaselineCell> sums;
  for (const Row& r : f.rows) {
    BaselineCell& cell = sums[static_cast<std::uint64_t>(r.customer) << 8 | r.indicator];
    ++cell.events;
    if (r.indicator == 0) {
      double v = 0;
      std::from_chars(r.value.data(), r.value.data() + r.value.size(), v);
      cell.sum += v;
    }
  }
  return sums;
}

// The same sums, also counting each event id once (a global set of the ids' views): the least a
// correct implementation does beyond summing.
std::int64_t baseline_sums_deduplicated(const Fixture& f) {
  absl::flat_hash_set<absl::string_view> ids;
  ids.reserve(f.rows.size());
  absl::flat_hash_map<std::uint64_t, BaselineCell> sums;
  for (const Row& r : f.rows) {
    if (!ids.insert(absl::string_view(r.id.data(), r.id.size())).second) continue;
    BaselineCell& cell = sums[static_cast<std::uint64_t>(r.customer) << 8 | r.indicator];
    ++cell.events;
    if (r.indicator == 0) {
      double v = 0;
      std::from_chars(r.value.data(), r.value.data() + r.value.size(), v);
      cell.sum += v;
    }
  }
  std::int64_t events = 0;
  for (const auto& [key, cell] : sums) events += cell.events;
  return events;
}

// Each customer's expected invoice, computed from the integer totals.
std::int64_t expected_total_nanos(const Expected& e) {
  // GRADUATED: up to 100 h at $0.50, beyond at $0.40 + $5 when reached. In tenths of hours.
  const std::int64_t t = e.hours_tenths;
  std::int64_t gpu = std::min<std::int64_t>(t, 1000) * 50'000'000;
  if (t > 1000) gpu += (t - 1000) * 40'000'000 + 5'000'000'000;
  const std::int64_t api = e.us_east * 2'000'000;
  const auto n = static_cast<std::int64_t>(e.documents.size());
  const std::int64_t docs = n * (n <= 50 ? 100'000'000 : 80'000'000);
  return gpu + api + docs;
}

bool check(const Fixture& f, std::string& why) {
  const std::vector<Invoice> invoices = engine_previews(f);
  for (int c = 0; c < kCustomers; ++c) {
    const Expected& e = f.expected[c];
    const Invoice& inv = invoices[c];
    if (inv.lines.size() != 3 ||
        inv.lines[0].quantity != *Decimal::div(Decimal::from_int(e.hours_tenths), Decimal::from_int(10), 1,
                                               paygent::billing::RoundingMode::kRound) ||
        inv.lines[1].quantity != Decimal::from_int(e.us_east) ||
        inv.lines[2].quantity != Decimal::from_int(static_cast<std::int64_t>(e.documents.size())) ||
        inv.total_nanos != expected_total_nanos(e)) {
      why = "customer " + std::to_string(c) + ": invoice " + std::to_string(inv.total_nanos) + " nano-USD, expected " +
            std::to_string(expected_total_nanos(e));
      return false;
    }
  }
  const auto sums = baseline_sums(f);
  for (int c = 0; c < kCustomers; ++c) {
    std::int64_t events = 0;
    for (std::uint64_t i = 0; i < 3; ++i) {
      auto it = sums.find(static_cast<std::uint64_t>(c) << 8 | i);
      if (it != sums.end()) events += it->second.events;
    }
    if (events != f.expected[c].baseline_events) {
      why = "baseline: customer " + std::to_string(c) + " has " + std::to_string(events) + " events";
      return false;
    }
  }
  return true;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BM_billing_invoice_previews_vs_hashmap_sum(benchmark::State& state) {
  const Fixture& f = fixture();
  std::string why;
  if (!check(f, why)) {
    state.SkipWithError(why.c_str());
    return;
  }
  std::int64_t unique_events = 0;
  for (const Invoice& inv : engine_previews(f)) {
    for (const auto& line : inv.lines) unique_events += line.counts.counted + line.counts.filtered_out +
                                                         line.counts.excluded_total();
  }
  if (baseline_sums_deduplicated(f) != unique_events) {
    state.SkipWithError("the deduplicating baseline counts another number of events");
    return;
  }
  double engine = 0, baseline = 0, baseline_dedup = 0;
  for (auto _ : state) {
    auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(baseline_sums_deduplicated(f));
    baseline_dedup += seconds_since(t1);
    auto t0 = std::chrono::steady_clock::now();
    auto sums = baseline_sums(f);
    benchmark::DoNotOptimize(sums);
    baseline += seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    auto invoices = engine_previews(f);
    benchmark::DoNotOptimize(invoices);
    const double s = seconds_since(t0);
    engine += s;
    state.SetIterationTime(s);
  }
  const auto n = static_cast<double>(state.iterations());
  state.counters["engine_ms"] = engine / n * 1e3;
  state.counters["baseline_ms"] = baseline / n * 1e3;
  state.counters["baseline_dedup_ms"] = baseline_dedup / n * 1e3;
  state.counters["ratio"] = engine / baseline;
  state.counters["ratio_dedup"] = engine / baseline_dedup;
  state.counters["engine_ns_per_event"] = engine / n / kEvents * 1e9;
}
BENCHMARK(BM_billing_invoice_previews_vs_hashmap_sum)->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);

// One customer's invoice from its ~1,000 events (what a storage that pages one customer's rows into
// the engine pays per preview, beside the reading of the rows).
void BM_billing_one_customer_preview(benchmark::State& state) {
  const Fixture& f = fixture();
  std::vector<const Row*> mine;
  for (const Row& r : f.rows) {
    if (r.customer == 7) mine.push_back(&r);
  }
  auto once = [&] {
    InvoiceBuilder b = *InvoiceBuilder::create(f.indicators, kNovember);
    std::uint64_t arrival = 0;
    for (const Row* r : mine) {
      const BillingEvent e{std::string_view(r->id.data(), 32), r->ts_ns, ++arrival, r->tags, {}};
      b.add(kIndicators[r->indicator], e);
    }
    return *b.preview();
  };
  if (once().total_nanos != expected_total_nanos(f.expected[7])) {
    state.SkipWithError("customer 7's invoice is wrong");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(once());
  state.counters["events"] = static_cast<double>(mine.size());
}
BENCHMARK(BM_billing_one_customer_preview)->Unit(benchmark::kMicrosecond);

}  // namespace
