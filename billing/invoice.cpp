// Invoice assembly (see billing/invoice.h).
#include "billing/invoice.h"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "billing/internal/assign_or_return.h"

namespace paygent::billing {

// One indicator's running state.
struct InvoiceBuilder::Line {
  const Indicator* indicator = nullptr;
  std::unique_ptr<Metric> implicit_metric;  // Count (no metric) or Sum of the duration (per-minute)
  std::unique_ptr<MetricAggregator> aggregator;
  Decimal voice_amount;  // per-minute: the sessions' charges, exact
  Decimal stored_amount;              // FLAT with stored amounts: the events that carried one, exact
  std::int64_t stored_events = 0;     // ...and how many they were
  absl::Status status;   // the first error of a per-minute charge, sticky
};

namespace {

absl::Status prefixed(const std::string& prefix, const absl::Status& s) {
  return absl::Status(s.code(), prefix + std::string(s.message()));
}

}  // namespace

absl::Status validate_indicator(const Indicator& indicator) {
  if (indicator.name.empty()) return absl::InvalidArgumentError("name: is required");
  if (indicator.per_minute) {
    if (indicator.metric) {
      return absl::InvalidArgumentError("metric: a per-minute indicator bills the session duration, not a metric");
    }
    if (indicator.duration_tag.empty()) return absl::InvalidArgumentError("duration_tag: is required");
    if (auto s = validate_per_minute(*indicator.per_minute); !s.ok()) return prefixed("per_minute.", s);
    return absl::OkStatus();
  }
  if (indicator.stored_amounts && (indicator.metric || indicator.pricing.model != PricingModel::kFlat)) {
    return absl::InvalidArgumentError(
        "stored_amounts: only a FLAT indicator without a metric, or a per-minute one, bills stored amounts");
  }
  if (auto s = validate_pricing(indicator.pricing); !s.ok()) return prefixed("pricing.", s);
  return absl::OkStatus();
}

InvoiceBuilder::InvoiceBuilder(BillingPeriod period) : period_(period) {}
InvoiceBuilder::~InvoiceBuilder() = default;
InvoiceBuilder::InvoiceBuilder(InvoiceBuilder&&) noexcept = default;
InvoiceBuilder& InvoiceBuilder::operator=(InvoiceBuilder&&) noexcept = default;

absl::StatusOr<InvoiceBuilder> InvoiceBuilder::create(std::span<const Indicator> indicators, BillingPeriod period) {
  if (period.end_ns <= period.start_ns) return absl::InvalidArgumentError("period: end must be after start");
  InvoiceBuilder b(period);
  for (std::size_t i = 0; i < indicators.size(); ++i) {
    const Indicator& ind = indicators[i];
    const std::string where = "indicators[" + std::to_string(i) + "].";
    if (auto s = validate_indicator(ind); !s.ok()) return prefixed(where, s);
    for (std::size_t j = 0; j < i; ++j) {
      if (indicators[j].name == ind.name) {
        return absl::InvalidArgumentError(where + "name: \"" + ind.name + "\" is configured twice");
      }
    }
    auto line = std::make_unique<Line>();
    line->indicator = &ind;
    const Metric* metric = ind.metric ? &*ind.metric : nullptr;
    if (metric == nullptr) {
      MetricDefinition d;
      d.name = ind.name;
      if (ind.per_minute) {
        d.aggregation = Aggregation::kSum;
        d.field = ind.duration_tag;
      }
      auto m = Metric::create(std::move(d));
      if (!m.ok()) return prefixed(where, m.status());
      line->implicit_metric = std::make_unique<Metric>(*std::move(m));
      metric = line->implicit_metric.get();
    }
    line->aggregator = std::make_unique<MetricAggregator>(*metric, period);
    b.lines_.push_back(std::move(line));
  }
  return b;
}

void InvoiceBuilder::add(std::string_view indicator, const BillingEvent& event) {
  for (const std::unique_ptr<Line>& line : lines_) {
    if (line->indicator->name != indicator) continue;
    const MetricAggregator::Added added = line->aggregator->add(event);
    const bool stored = added.counted && line->indicator->stored_amounts && event.amount.has_value();
    if (stored && !line->indicator->per_minute && line->status.ok()) {
      auto sum = Decimal::add(line->stored_amount, *event.amount);
      if (sum.ok()) {
        line->stored_amount = *sum;
        ++line->stored_events;
      } else {
        line->status = prefixed("indicator \"" + line->indicator->name + "\": ", sum.status());
      }
    }
    if (added.counted && line->indicator->per_minute && line->status.ok()) {
      auto charge = stored ? absl::StatusOr<Decimal>(*event.amount)
                           : voice_session_charge(*line->indicator->per_minute, event.session_models, added.value);
      if (charge.ok()) charge = Decimal::add(line->voice_amount, *charge);
      if (charge.ok()) {
        line->voice_amount = *charge;
      } else {
        line->status = prefixed("indicator \"" + line->indicator->name + "\": ", charge.status());
      }
    }
    return;
  }
  ++unknown_indicator_events_;
}

absl::StatusOr<Invoice> InvoiceBuilder::preview(std::optional<Decimal> available_credits) const {
  return render(available_credits, nullptr);
}

absl::StatusOr<Invoice> InvoiceBuilder::preview_with_ledger(absl::FunctionRef<Decimal(std::string_view)> used_of) const {
  return render(std::nullopt, &used_of);
}

absl::StatusOr<Invoice> InvoiceBuilder::render(std::optional<Decimal> available_credits,
                                               const absl::FunctionRef<Decimal(std::string_view)>* used_of) const {
  Invoice inv;
  inv.period = period_;
  inv.unknown_indicator_events = unknown_indicator_events_;
  Decimal credits_left = available_credits && !available_credits->is_negative() ? *available_credits : Decimal();
  for (const std::unique_ptr<Line>& line : lines_) {
    if (!line->status.ok()) return line->status;
    const Indicator& ind = *line->indicator;
    InvoiceLine out;
    out.indicator = ind.name;
    out.metric = ind.metric ? ind.metric->identifier() : std::string();
    out.counts = line->aggregator->counts();
    PAYGENT_BILLING_ASSIGN_OR_RETURN(out.quantity, line->aggregator->quantity());
    if (ind.per_minute) {
      out.pricing = "per_minute";
      out.unit = "minute";
      out.amount = line->voice_amount;
    } else {
      out.pricing = std::string(pricing_model_name(ind.pricing.model));
      out.unit = ind.pricing.unit;
      // Events billed at their stored amounts are not priced again.
      Decimal priced_quantity = out.quantity;
      if (line->stored_events > 0) {
        PAYGENT_BILLING_ASSIGN_OR_RETURN(priced_quantity,
                                         Decimal::sub(out.quantity, Decimal::from_int(line->stored_events)));
      }
      auto charge = price_quantity(ind.pricing, priced_quantity);
      if (!charge.ok()) return prefixed("indicator \"" + ind.name + "\": ", charge.status());
      out.amount = charge->amount;
      if (line->stored_events > 0) {
        PAYGENT_BILLING_ASSIGN_OR_RETURN(out.amount, Decimal::add(out.amount, line->stored_amount));
      }
      out.tiers = std::move(charge->tiers);
      if (ind.pricing.model == PricingModel::kCredits) {
        out.credits = charge->credits;
        if (used_of != nullptr) {
          Decimal used = (*used_of)(ind.name);
          if (used.is_negative()) used = Decimal();
          out.credits_used = out.credits < used ? out.credits : used;
        } else {
          out.credits_used = out.credits < credits_left ? out.credits : credits_left;
          PAYGENT_BILLING_ASSIGN_OR_RETURN(credits_left, Decimal::sub(credits_left, out.credits_used));
        }
        PAYGENT_BILLING_ASSIGN_OR_RETURN(out.credits_overage, Decimal::sub(out.credits, out.credits_used));
        if (ind.pricing.overage_usd_per_credit) {
          PAYGENT_BILLING_ASSIGN_OR_RETURN(out.amount,
                                           Decimal::mul(out.credits_overage, *ind.pricing.overage_usd_per_credit));
        }
      }
    }
    PAYGENT_BILLING_ASSIGN_OR_RETURN(out.amount_nanos, out.amount.to_nanos(RoundingMode::kRound));
    if (__builtin_add_overflow(inv.total_nanos, out.amount_nanos, &inv.total_nanos)) {
      return absl::OutOfRangeError("invoice total does not fit in 64-bit nano-USD");
    }
    inv.lines.push_back(std::move(out));
  }
  return inv;
}

}  // namespace paygent::billing
