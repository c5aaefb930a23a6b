// Test helpers: billing events with tags given inline (string literals or strings that outlive the call).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "billing/invoice.h"
#include "billing/metric.h"

namespace paygent::billing::testing {

inline constexpr std::int64_t kDayNs = 86'400LL * 1'000'000'000LL;
// November 2026 as [start, end) in Unix ns, and December after it.
inline constexpr BillingPeriod kNovember{1'793'491'200LL * 1'000'000'000LL, 1'796'083'200LL * 1'000'000'000LL};
inline constexpr BillingPeriod kDecember{kNovember.end_ns, kNovember.end_ns + 31 * kDayNs};

inline Metric make_metric(MetricDefinition d) {
  auto m = Metric::create(std::move(d));
  REQUIRE_MESSAGE(m.ok(), m.status().ToString());
  return *std::move(m);
}

inline Decimal dec(std::string_view text) {
  auto v = Decimal::parse(text);
  REQUIRE_MESSAGE(v.ok(), v.status().ToString());
  return *v;
}

// Feeds one event on `day` (0-based) of November unless `ts_ns` is given.
struct Ev {
  std::string id;
  std::vector<MetaTag> tags;
  std::int64_t ts_ns = kNovember.start_ns;
  std::uint64_t arrival = 0;
  std::vector<SessionModel> models;
  std::optional<Decimal> amount;  // what it was priced at when stored
  [[nodiscard]] BillingEvent view() const { return BillingEvent{id, ts_ns, arrival, tags, models, amount}; }
};

inline MetricAggregator::Added feed(MetricAggregator& a, const Ev& e) { return a.add(e.view()); }

inline Decimal quantity_of(const MetricAggregator& a) {
  auto q = a.quantity();
  REQUIRE_MESSAGE(q.ok(), q.status().ToString());
  return *q;
}

}  // namespace paygent::billing::testing
