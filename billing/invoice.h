// Invoice assembly: one customer, one billing period, one line per agent indicator.
//
// An indicator is priced on its metric's quantity (billing/metric.h) or, without a metric, on its
// event count (every event one unit), with FLAT / VOLUME / GRADUATED / CREDITS (billing/pricing.h); a
// per-minute indicator bills each voice session's duration at the session's rate. Amounts stay exact
// until the rendered line, which is rounded once, half away from zero, to the nano-USD; the total is
// the sum of the rendered lines, so the lines always add up to it.
// Lifetime and thread safety: Indicator, InvoiceLine and Invoice are plain values (read from any
// number of threads, written from one); an Invoice owns all its text. InvoiceBuilder states its own
// contract below.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "billing/decimal.h"
#include "billing/metric.h"
#include "billing/pricing.h"

namespace paygent::billing {

// An agent indicator's billing configuration. Plain data; validate_indicator() checks it.
struct Indicator {
  std::string name;              // as events carry it ("inference", "voice_call_completed")
  std::optional<Metric> metric;  // none: every event is one unit
  Pricing pricing;               // used unless per_minute is set
  // Per-minute voice pricing (the indicator's Per-minute toggle). Each event is one closed session:
  // its duration in minutes is read from the tag `duration_tag`, its models from
  // BillingEvent::session_models. A metric cannot be linked as well.
  std::optional<PerMinutePricing> per_minute;
  std::string duration_tag = "duration_minutes";
  // Each counted event that carries a stored amount (BillingEvent::amount: what it was priced at
  // when it was stored, with the prices of that moment) is billed that amount, the others at the
  // price above, so that a price change bills only the events after it, as the tracking issue's
  // per-event revenue does. Only for FLAT without a metric, or per-minute (whose stored amounts
  // carry the session's custom per-model rates).
  bool stored_amounts = false;
};

// OK or InvalidArgument naming the field ("name: is required", "pricing.tiers[0].up_to: ...").
absl::Status validate_indicator(const Indicator& indicator);

// One line of an invoice.
struct InvoiceLine {
  std::string indicator;
  std::string metric;   // the metric's identifier; empty when the indicator has none
  std::string pricing;  // "flat", "volume", "graduated", "credits" or "per_minute"
  std::string unit;
  Decimal quantity;               // the metric's rounded total (per_minute: the sessions' minutes)
  std::vector<TierCharge> tiers;  // VOLUME / GRADUATED breakdown
  Decimal amount;                 // USD, exact
  std::int64_t amount_nanos = 0;  // the rendered amount: `amount` rounded half away from zero to nano-USD
  Decimal credits;                // CREDITS: credits the quantity costs
  Decimal credits_used;           // taken from the wallet's available credits
  Decimal credits_overage;        // beyond them (never a negative balance)
  AggregationCounts counts;       // counted, filtered out, duplicates, excluded by reason
};

struct Invoice {
  BillingPeriod period;
  std::vector<InvoiceLine> lines;  // in the order of the indicators given to the builder
  std::int64_t total_nanos = 0;    // the sum of the lines' amount_nanos
  std::int64_t unknown_indicator_events = 0;  // events naming no configured indicator (not billed)
};

// Builds one customer's invoice for one period from its events, incrementally: feed the events page
// by page in any order, preview at any time (previewing does not consume anything).
//
// Lifetime: keeps pointers into `indicators`, which must outlive the builder and stay unchanged; the
// builder is movable. Thread safety: none; one thread at a time.
class InvoiceBuilder {
 public:
  // Validates every indicator (InvalidArgument "indicators[i].<field>: ..."); indicator names must be
  // distinct.
  static absl::StatusOr<InvoiceBuilder> create(std::span<const Indicator> indicators, BillingPeriod period);

  // Feeds one event of indicator `indicator` (events of other indicators are counted as unknown).
  // Views are borrowed for the call only.
  void add(std::string_view indicator, const BillingEvent& event);

  // The invoice as of the events fed so far. `available_credits`: the credits the customer's wallet
  // holds for this period (its balance at the period start plus top-ups), shared by the CREDITS lines
  // in indicator order; none means an empty wallet. OutOfRange on decimal overflow, InvalidArgument on
  // a negative quantity under a tiered price.
  [[nodiscard]] absl::StatusOr<Invoice> preview(std::optional<Decimal> available_credits = std::nullopt) const;
  // As preview(), with each CREDITS line's used credits taken from the wallet's ledger (pricing.h,
  // recharge): `used_of(indicator name)` (0 when the ledger has none), capped at the line's credits;
  // the rest of the line's credits is its overage. This is how paygentd renders a customer whose
  // wallet is debited as usage arrives.
  [[nodiscard]] absl::StatusOr<Invoice> preview_with_ledger(absl::FunctionRef<Decimal(std::string_view)> used_of) const;

  InvoiceBuilder(InvoiceBuilder&&) noexcept;
  InvoiceBuilder& operator=(InvoiceBuilder&&) noexcept;
  ~InvoiceBuilder();

 private:
  struct Line;
  explicit InvoiceBuilder(BillingPeriod period);
  absl::StatusOr<Invoice> render(std::optional<Decimal> available_credits,
                                 const absl::FunctionRef<Decimal(std::string_view)>* used_of) const;

  BillingPeriod period_;
  std::vector<std::unique_ptr<Line>> lines_;
  std::int64_t unknown_indicator_events_ = 0;
};

}  // namespace paygent::billing
