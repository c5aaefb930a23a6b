// Billable metrics and their aggregation (see billing/metric.h).
#include "billing/metric.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paygent::billing {
namespace {

absl::Status invalid(std::string_view field, const std::string& why) {
  return absl::InvalidArgumentError(std::string(field) + ": " + why);
}

bool is_result_field_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Adds `v` to `acc` exactly; the common case (same scale, no overflow) without a Status.
bool accumulate(Decimal& acc, const Decimal& v, absl::Status& status) {
  if (acc.scale() == v.scale()) {
    Int128 sum = 0;
    if (!__builtin_add_overflow(acc.mantissa(), v.mantissa(), &sum)) {
      acc = *Decimal::from_scaled(sum, acc.scale());
      return true;
    }
  }
  auto sum = Decimal::add(acc, v);
  if (!sum.ok()) {
    if (status.ok()) status = sum.status();
    return false;
  }
  acc = *sum;
  return true;
}

// The value of a lowercase hex digit, or 0x10 for any other byte.
constexpr std::array<std::uint8_t, 256> make_hex_values() {
  std::array<std::uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = c >= '0' && c <= '9' ? static_cast<std::uint8_t>(c - '0')
           : c >= 'a' && c <= 'f' ? static_cast<std::uint8_t>(c - 'a' + 10)
                                  : 0x10;
  }
  return t;
}
constexpr std::array<std::uint8_t, 256> kHexValue = make_hex_values();

// 16 hex digits as 64 bits; ORs 0x10 into `invalid_bits` if any is not a lowercase hex digit.
inline std::uint64_t pack_hex16(const char* p, std::uint8_t& invalid_bits) noexcept {
  std::uint64_t v = 0;
  std::uint8_t bad = 0;
  for (int i = 0; i < 16; ++i) {
    const std::uint8_t nibble = kHexValue[static_cast<unsigned char>(p[i])];
    bad |= nibble;
    v = v << 4 | (nibble & 0x0f);
  }
  invalid_bits |= bad;
  return v;
}

}  // namespace

std::string_view aggregation_name(Aggregation aggregation) noexcept {
  switch (aggregation) {
    case Aggregation::kCount: return "count";
    case Aggregation::kSum: return "sum";
    case Aggregation::kMax: return "max";
    case Aggregation::kUniqueCount: return "unique_count";
    case Aggregation::kLatest: return "latest";
  }
  return "count";
}

absl::StatusOr<Aggregation> parse_aggregation(std::string_view name) {
  for (Aggregation a : {Aggregation::kCount, Aggregation::kSum, Aggregation::kMax, Aggregation::kUniqueCount,
                        Aggregation::kLatest}) {
    if (aggregation_name(a) == name) return a;
  }
  return invalid("aggregation", "\"" + std::string(name) + "\" is not one of count, sum, max, unique_count, latest");
}

absl::StatusOr<std::string> metric_identifier(std::string_view name) {
  std::string id;
  bool pending_separator = false;
  for (char c : name) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum) {
      pending_separator = !id.empty();
      continue;
    }
    if (pending_separator) id.push_back('_');
    pending_separator = false;
    id.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  if (id.empty()) {
    return invalid("name", "\"" + std::string(name) + "\" has no ASCII letter or digit to derive an identifier from");
  }
  return id;
}

absl::StatusOr<Metric> Metric::create(MetricDefinition definition) {
  Metric m;
  if (definition.name.empty()) return invalid("name", "is required");
  if (definition.name.size() > 200) return invalid("name", "is longer than 200 characters");
  if (definition.identifier.empty()) {
    auto id = metric_identifier(definition.name);
    if (!id.ok()) return id.status();
    m.identifier_ = *std::move(id);
  } else {
    auto normal = metric_identifier(definition.identifier);
    if (!normal.ok() || *normal != definition.identifier) {
      return invalid("identifier", "must be lowercase letters, digits and single '_' (\"gpu_hours\")");
    }
    m.identifier_ = definition.identifier;
  }

  const bool has_field = !definition.field.empty();
  const bool has_expression = !definition.expression.empty();
  if (definition.aggregation == Aggregation::kCount) {
    if (has_field) return invalid("field", "count takes no field (it counts the events its filters accept)");
    if (has_expression) return invalid("expression", "count takes no expression");
  } else {
    const std::string agg(aggregation_name(definition.aggregation));
    if (!has_field && !has_expression) {
      return invalid("field", agg + " needs a meta-tag field or a custom expression");
    }
    if (has_field && has_expression) return invalid("expression", "set either field or expression, not both");
  }
  if (has_expression) {
    auto e = Expression::parse(definition.expression);
    if (!e.ok()) return e.status();  // "expression: position N: ..."
    m.expression_ = *std::move(e);
    if (definition.result_field.empty()) return invalid("result_field", "is required with an expression");
    for (char c : definition.result_field) {
      if (!is_result_field_char(c)) {
        return invalid("result_field", "\"" + definition.result_field + "\" may hold only A-Z a-z 0-9 _");
      }
    }
  }
  if (definition.rounding && (definition.rounding->precision < 0 || definition.rounding->precision > 18)) {
    return invalid("rounding.precision", std::to_string(definition.rounding->precision) + " is outside 0..18");
  }
  for (std::size_t i = 0; i < definition.filters.size(); ++i) {
    const MetricFilter& f = definition.filters[i];
    const std::string where = "filters[" + std::to_string(i) + "]";
    if (f.key.empty()) return invalid(where + ".key", "is required");
    if (f.values.empty()) return invalid(where + ".values", "needs at least one accepted value");
  }
  m.definition_ = std::move(definition);
  return m;
}

bool Metric::matches(std::span<const MetaTag> tags) const noexcept {
  for (const MetricFilter& f : definition_.filters) {
    const std::string_view* v = find_tag(tags, f.key);
    if (v == nullptr) return false;
    bool accepted = false;
    for (const std::string& allowed : f.values) {
      if (*v == allowed) {
        accepted = true;
        break;
      }
    }
    if (!accepted) return false;
  }
  return true;
}

FieldValue Metric::value_of(std::span<const MetaTag> tags) const {
  if (expression_) return expression_->evaluate(tags);
  if (definition_.aggregation == Aggregation::kCount) return FieldValue{true, Decimal::from_int(1)};
  const std::string_view* v = find_tag(tags, definition_.field);
  if (v == nullptr) return FieldValue{false, Decimal(), ExclusionReason::kMissingField};
  return read_decimal_tag(*v);
}

Decimal Metric::rounded_total(const Decimal& total) const noexcept {
  if (!definition_.rounding) return total;
  return total.rounded(definition_.rounding->precision, definition_.rounding->mode);
}

MetricAggregator::MetricAggregator(const Metric& metric, BillingPeriod period) : metric_(&metric), period_(period) {}

MetricAggregator::Added MetricAggregator::add(const BillingEvent& event) {
  if (!period_.contains(event.ts_ns)) {
    ++counts_.outside_period;
    return {};
  }
  if (!event.id.empty() && !remember_id(event.id)) {
    ++counts_.duplicates;
    return {};
  }
  if (!metric_->matches(event.tags)) {
    ++counts_.filtered_out;
    return {};
  }
  const Aggregation aggregation = metric_->aggregation();
  if (aggregation == Aggregation::kUniqueCount && metric_->definition().expression.empty()) {
    // Unique count on a field: distinct raw strings ("doc-101"), exactly as sent.
    const std::string_view* v = find_tag(event.tags, metric_->definition().field);
    if (v == nullptr || v->empty()) {
      ++counts_.excluded[static_cast<int>(ExclusionReason::kMissingField)];
      return {};
    }
    ++counts_.counted;
    unique_values_.emplace(absl::string_view(v->data(), v->size()));
    return {true, Decimal::from_int(1)};
  }
  const FieldValue f = metric_->value_of(event.tags);
  if (!f.ok) {
    ++counts_.excluded[static_cast<int>(f.reason)];
    return {};
  }
  ++counts_.counted;
  switch (aggregation) {
    case Aggregation::kCount: break;
    case Aggregation::kSum: accumulate(total_, f.value, status_); break;
    case Aggregation::kMax:
      if (!has_value_ || f.value > total_) total_ = f.value;
      break;
    case Aggregation::kUniqueCount: unique_values_.emplace(f.value.normalized().to_string()); break;
    case Aggregation::kLatest:
      if (!has_value_ || event.ts_ns > latest_ts_ || (event.ts_ns == latest_ts_ && event.arrival >= latest_arrival_)) {
        total_ = f.value;
        latest_ts_ = event.ts_ns;
        latest_arrival_ = event.arrival;
      }
      break;
  }
  has_value_ = true;
  return {true, f.value};
}

bool MetricAggregator::remember_id(std::string_view id) {
  if (id.size() == 32) {
    std::uint8_t invalid_bits = 0;
    const std::uint64_t high = pack_hex16(id.data(), invalid_bits);
    const std::uint64_t low = pack_hex16(id.data() + 16, invalid_bits);
    // Uppercase or other characters: kept as a string, so "AB..." and "ab..." stay distinct.
    if ((invalid_bits & 0x10) == 0) return hex_ids_.emplace(high, low).second;
  }
  return other_ids_.emplace(absl::string_view(id.data(), id.size())).second;
}

absl::StatusOr<Decimal> MetricAggregator::total() const {
  if (!status_.ok()) return status_;
  switch (metric_->aggregation()) {
    case Aggregation::kCount: return Decimal::from_int(counts_.counted);
    case Aggregation::kUniqueCount: return Decimal::from_int(static_cast<std::int64_t>(unique_values_.size()));
    case Aggregation::kSum:
    case Aggregation::kMax:
    case Aggregation::kLatest: return total_.normalized();
  }
  return Decimal();
}

absl::StatusOr<Decimal> MetricAggregator::quantity() const {
  auto t = total();
  if (!t.ok()) return t.status();
  return metric_->rounded_total(*t);
}

}  // namespace paygent::billing
