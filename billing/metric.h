// Billable metrics (seed 003): how the events of one indicator are counted before pricing.
//
// A metric reads each event's meta tags (strings), keeps the events its filters accept, takes a
// value from one tag or a custom expression, and aggregates the values of a billing period with
// Count, Sum, Max, Unique count or Latest. Values are exact decimals (billing/decimal.h); an event
// whose value is missing or not a number is excluded and counted by reason, never read as 0.
//
// No storage and no HTTP here: a storage feeds MetricAggregator page by page.
// Lifetime and thread safety: the plain structs (MetricDefinition, MetricRounding, MetricFilter,
// BillingPeriod, SessionModel, BillingEvent, AggregationCounts) are values with no shared state: read
// from any number of threads, written from one. BillingEvent and SessionModel only borrow views (see
// each). Metric and MetricAggregator state their own contracts below.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "billing/decimal.h"
#include "billing/expression.h"

namespace paygent::billing {

enum class Aggregation : std::uint8_t { kCount, kSum, kMax, kUniqueCount, kLatest };
// "count", "sum", "max", "unique_count", "latest".
[[nodiscard]] std::string_view aggregation_name(Aggregation aggregation) noexcept;
absl::StatusOr<Aggregation> parse_aggregation(std::string_view name);

// Rounding of a metric's aggregated total (the metric's own rule; nothing else is rounded before the
// rendered invoice line).
struct MetricRounding {
  RoundingMode mode = RoundingMode::kRound;
  int precision = 0;  // decimal places kept, 0..18
};

// One filter: the event's tag `key` must equal one of `values` (exact, case-sensitive). Several
// filters all apply.
struct MetricFilter {
  std::string key;
  std::vector<std::string> values;
};

// What a user configures. Plain data; validated by Metric::create.
struct MetricDefinition {
  std::string name;         // "GPU compute hours"
  // "gpu_hours": the identifier chosen at creation; empty: derived from the name
  // ("gpu_compute_hours"). A chosen one must already be in the derived form (metric_identifier()).
  std::string identifier;
  std::string description;  // optional
  Aggregation aggregation = Aggregation::kCount;
  // Aggregate on one meta-tag key ("hours")...
  std::string field;
  // ...or on a custom expression ("event.properties.tokens * event.properties.replicas"), whose value
  // is shown under `result_field`. Count takes neither; the others take exactly one.
  std::string expression;
  std::string result_field = "calculation_result";
  std::optional<MetricRounding> rounding;
  std::vector<MetricFilter> filters;
};

// The identifier derived from a metric's name: ASCII letters lower-cased, digits kept, every run of
// anything else one '_', none at either end ("GPU compute hours" -> "gpu_compute_hours"). Fails with
// InvalidArgument naming `name` when no letter or digit is left.
absl::StatusOr<std::string> metric_identifier(std::string_view name);

// A validated metric. Immutable after create(); copyable; const methods are safe from any number of
// threads at once.
class Metric {
 public:
  // Validates `definition` and takes its identifier (derived from the name when it has none).
  // InvalidArgument naming the field on bad input ("name: ...", "identifier: ...", "field: ...", "expression: position 9: ...", "rounding.precision: ...",
  // "filters[1].values: ...").
  static absl::StatusOr<Metric> create(MetricDefinition definition);

  [[nodiscard]] const MetricDefinition& definition() const noexcept { return definition_; }
  [[nodiscard]] const std::string& identifier() const noexcept { return identifier_; }
  [[nodiscard]] Aggregation aggregation() const noexcept { return definition_.aggregation; }

  // Whether every filter accepts the event's tags.
  [[nodiscard]] bool matches(std::span<const MetaTag> tags) const noexcept;
  // The event's numeric value: its field's tag read as a decimal, or the expression's result.
  [[nodiscard]] FieldValue value_of(std::span<const MetaTag> tags) const;
  // The total with the metric's rounding applied (unchanged without a rounding rule).
  [[nodiscard]] Decimal rounded_total(const Decimal& total) const noexcept;

 private:
  Metric() = default;

  MetricDefinition definition_;
  std::string identifier_;
  std::optional<Expression> expression_;
};

// A billing period [start_ns, end_ns), Unix nanoseconds UTC.
struct BillingPeriod {
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
  [[nodiscard]] bool contains(std::int64_t ts_ns) const noexcept { return ts_ns >= start_ns && ts_ns < end_ns; }
};

// The models a voice session used, by kind (for per-minute pricing, billing/pricing.h).
enum class SessionKind : std::uint8_t { kLlm, kStt, kTts };
struct SessionModel {
  SessionKind kind = SessionKind::kLlm;
  std::string_view model;  // borrowed for the duration of a call
};

// One billing event as the engine sees it. Every view is borrowed for the duration of the call that
// receives it and is not kept (ids and unique values are copied when they must be remembered).
struct BillingEvent {
  // Unique per event; an id seen before in the period is counted once. Empty: not remembered (the
  // caller feeds each event once, as a storage's scan by primary key does), which saves the memory
  // and time of remembering every id.
  std::string_view id;
  std::int64_t ts_ns = 0;        // decides the period and, for Latest, the order
  std::uint64_t arrival = 0;     // arrival sequence: breaks Latest's timestamp ties (later wins)
  std::span<const MetaTag> tags;
  std::span<const SessionModel> session_models;  // voice sessions only
  // What the event was priced at when it was stored (USD, exact), if it was: an indicator that
  // bills stored amounts (Indicator::stored_amounts, billing/invoice.h) bills it as is.
  std::optional<Decimal> amount;
};

// What happened to the events fed to an aggregator.
struct AggregationCounts {
  std::int64_t counted = 0;         // events that contributed to the total
  std::int64_t filtered_out = 0;    // rejected by the metric's filters (not billed, not an error)
  std::int64_t duplicates = 0;      // an id already fed in this period
  std::int64_t outside_period = 0;  // timestamp outside the aggregator's period
  std::array<std::int64_t, kExclusionReasonCount> excluded{};  // by ExclusionReason
  [[nodiscard]] std::int64_t excluded_total() const noexcept {
    std::int64_t n = 0;
    for (std::int64_t e : excluded) n += e;
    return n;
  }
};

// The incremental aggregation of one metric over one customer's billing period: feed the period's
// events in any order, page by page, and read the state at any time.
//
// Lifetime: keeps a pointer to `metric`, which must outlive the aggregator. Memory grows with the
// number of distinct event ids (and distinct values for Unique count). Thread safety: none; one
// thread at a time (a storage feeds one aggregator per customer, or merges its pages on one thread).
class MetricAggregator {
 public:
  MetricAggregator(const Metric& metric, BillingPeriod period);

  // The outcome of one event.
  struct Added {
    bool counted = false;
    Decimal value;  // the event's value when counted (1 for Count)
  };

  // Feeds one event (see BillingEvent for what is copied). An event outside the period, a duplicate
  // id, a filtered-out or excluded event changes only the counts.
  Added add(const BillingEvent& event);

  // The aggregated total before the metric's rounding: Count and Unique count are event / value
  // counts, Sum the exact sum, Max the largest value, Latest the last event's value by (timestamp,
  // arrival). 0 when no event counted. OutOfRange if the exact sum overflowed (billing/decimal.h).
  [[nodiscard]] absl::StatusOr<Decimal> total() const;
  // total() with the metric's rounding: the billed quantity.
  [[nodiscard]] absl::StatusOr<Decimal> quantity() const;

  [[nodiscard]] const AggregationCounts& counts() const noexcept { return counts_; }
  [[nodiscard]] const Metric& metric() const noexcept { return *metric_; }
  [[nodiscard]] const BillingPeriod& period() const noexcept { return period_; }

 private:
  const Metric* metric_;
  BillingPeriod period_;
  AggregationCounts counts_;
  absl::Status status_;  // the first overflow of the sum, sticky
  Decimal total_;        // Sum, Max, Latest
  bool has_value_ = false;
  std::int64_t latest_ts_ = 0;
  std::uint64_t latest_arrival_ = 0;
  // Event ids seen: the house's 32-lowercase-hex ids packed into 16 bytes (no allocation, no pointer
  // to chase), any other id as a string. Both are exact.
  absl::flat_hash_set<std::pair<std::uint64_t, std::uint64_t>> hex_ids_;
  absl::flat_hash_set<std::string> other_ids_;
  absl::flat_hash_set<std::string> unique_values_;

  // Whether `id` was new (and is now remembered).
  bool remember_id(std::string_view id);
};

}  // namespace paygent::billing
