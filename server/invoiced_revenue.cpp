// The profit report's revenue of the indicators an invoice prices per billing period (see
// server/invoicing.h, add_invoiced_revenue, and docs/billing.md, "Revenue in the profit report").
//
// Such an indicator's revenue accrues as its invoice grows: what a span [a, b) of a billing
// period P earns is the invoice line of P's events before b minus that of P's events before a.
// The spans of a report telescope, so a month's days add up to its invoice exactly, and a report
// over whole periods is the invoices' sum. Each customer with billing events in the range is
// read once per period it overlaps, the invoice previewed at every boundary the grouping needs
// (the range's ends; each UTC midnight for by=day).
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "billing/decimal.h"
#include "meter/internal/str_cat.h"
#include "server/invoicing.h"
#include "server/storage_logic.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
using storage_internal::kNanosPerDay;

// Periods of one customer read per report at most (36 months of a 3-year range, and a margin).
constexpr int kMaxPeriods = 400;

// What the report's rows get: revenue added (by key), and the events it prices (by key) whose
// stored revenue no longer counts (subtracted) or that were counted as without a price.
struct Adjust {
  std::int64_t revenue = 0;
  std::int64_t stored_revenue = 0;
  std::int64_t unknown_events = 0;
};

class Accrual {
 public:
  Accrual(Storage& storage, std::string_view product_id, TimeRange range, ProfitGroup group,
          const ProductBilling& billing)
      : storage_(storage), product_id_(product_id), range_(range), group_(group), billing_(billing) {
    for (std::size_t i = 0; i < billing.indicators.size(); ++i) {
      if (!billing.indicators[i].stored_amounts) invoiced_[billing.indicators[i].name] = i;
    }
  }

  [[nodiscard]] bool any() const { return !invoiced_.empty(); }

  absl::Status customer(const std::string& customer_id) {
    absl::StatusOr<UserRecord> user = storage_.find_user(product_id_, customer_id);
    if (!user.ok()) return absl::OkStatus();  // a billing event's customer is a user; gone: nothing to price
    std::optional<billing::Decimal> usd_per_credit;
    bool wallet = false;
    if (billing_.has_credits) {
      const std::string_view ids[] = {customer_id};
      absl::StatusOr<std::vector<WalletRecord>> wallets = storage_.find_wallets(product_id_, ids);
      if (!wallets.ok()) return wallets.status();
      if (!wallets->empty()) {
        wallet = true;
        usd_per_credit = price_per_credit(wallets->front());
      }
    }
    std::int64_t at = range_.from_ns;
    for (int n = 0; n < kMaxPeriods && at < range_.to_ns; ++n) {
      const billing::BillingPeriod p = billing_period_at(*user, absl::FromUnixNanos(at));
      if (p.end_ns <= at) break;  // cannot happen; never loop on it
      if (absl::Status s = period(customer_id, p, wallet, usd_per_credit); !s.ok()) return s;
      at = p.end_ns;
    }
    return absl::OkStatus();
  }

  [[nodiscard]] const std::map<std::string, Adjust, std::less<>>& adjustments() const { return adjust_; }

 private:
  // What a wallet's credits cost the customer on average (its top-ups' price over their credits);
  // none when they were given for free.
  static std::optional<billing::Decimal> price_per_credit(const WalletRecord& w) {
    absl::StatusOr<billing::Decimal> paid = billing::Decimal::parse(w.paid_usd);
    absl::StatusOr<billing::Decimal> granted = billing::Decimal::parse(w.granted);
    if (!paid.ok() || !granted.ok() || paid->is_zero() || granted->is_zero() || granted->is_negative()) return std::nullopt;
    absl::StatusOr<billing::Decimal> q =
        billing::Decimal::div(*paid, *granted, billing::Decimal::kMaxScale, billing::RoundingMode::kRound);
    if (!q.ok()) return std::nullopt;
    return *q;
  }

  std::string key_of(std::string_view customer_id, std::size_t line, std::int64_t ts_ns) const {
    switch (group_) {
      case ProfitGroup::kAgent: return billing_.agents[line];
      case ProfitGroup::kCustomer: return std::string(customer_id);
      case ProfitGroup::kIndicator: return billing_.indicator_names[line];
      case ProfitGroup::kDay: break;
      case ProfitGroup::kModel: break;  // not reached: add_invoiced_revenue skips it
    }
    std::int64_t day = ts_ns / kNanosPerDay;
    if (ts_ns % kNanosPerDay < 0) --day;
    return storage_internal::day_key(day, ReportGroup::kDay);
  }

  // The invoice's value of each invoiced line as of the events fed so far: its rendered amount,
  // plus the wallet credits it used at what they cost (CREDITS), in nano-USD.
  absl::StatusOr<std::vector<std::int64_t>> values(const BuiltInvoice& built, const std::vector<WalletCharge>* ledger,
                                                   const std::optional<billing::Decimal>& usd_per_credit) const {
    absl::StatusOr<billing::Invoice> invoice =
        ledger != nullptr
            ? built.builder.preview_with_ledger([&](std::string_view indicator) { return ledger_used(*ledger, indicator); })
            : built.builder.preview();
    if (!invoice.ok()) return invoice.status();
    std::vector<std::int64_t> out(invoice->lines.size(), 0);
    for (std::size_t i = 0; i < invoice->lines.size(); ++i) {
      const billing::InvoiceLine& line = invoice->lines[i];
      out[i] = line.amount_nanos;
      if (!usd_per_credit || line.credits_used.is_zero()) continue;
      absl::StatusOr<billing::Decimal> earned = billing::Decimal::mul(line.credits_used, *usd_per_credit);
      if (earned.ok()) earned = billing::Decimal::add(*earned, line.amount);
      absl::StatusOr<std::int64_t> nanos =
          earned.ok() ? earned->to_nanos(billing::RoundingMode::kRound) : absl::StatusOr<std::int64_t>(earned.status());
      if (!nanos.ok()) return nanos.status();
      out[i] = *nanos;
    }
    return out;
  }

  absl::Status period(const std::string& customer_id, billing::BillingPeriod p, bool wallet,
                      const std::optional<billing::Decimal>& usd_per_credit) {
    const std::int64_t a = std::max(range_.from_ns, p.start_ns);
    const std::int64_t b = std::min(range_.to_ns, p.end_ns);
    if (a >= b) return absl::OkStatus();
    // The boundaries whose invoice values are taken, in order: a (when the period began before
    // it), each midnight inside (by day), b.
    std::vector<std::int64_t> marks;
    if (a > p.start_ns) marks.push_back(a);
    if (group_ == ProfitGroup::kDay) {
      for (std::int64_t d = (a / kNanosPerDay + 1) * kNanosPerDay; d < b; d += kNanosPerDay) marks.push_back(d);
    }
    marks.push_back(b);

    std::optional<std::vector<WalletCharge>> ledger;
    if (wallet) {
      absl::StatusOr<std::vector<WalletCharge>> charges =
          storage_.wallet_charges(product_id_, customer_id, TimeRange{.from_ns = p.start_ns, .to_ns = p.end_ns});
      if (!charges.ok()) return charges.status();
      ledger = *std::move(charges);
    }
    absl::StatusOr<billing::InvoiceBuilder> builder = billing::InvoiceBuilder::create(billing_.indicators, p);
    if (!builder.ok()) return absl::InternalError(builder.status().message());
    BuiltInvoice built{.builder = *std::move(builder)};
    InvoiceFeeder feeder(billing_, built);

    // Deltas are kept per period and applied only when the whole period priced: a period whose
    // invoice cannot be rendered (bad data under a tiered price) leaves its events without a price.
    std::map<std::string, Adjust, std::less<>> mine;
    std::vector<std::int64_t> last(billing_.indicators.size(), 0);
    std::int64_t from = p.start_ns;  // the span the next mark closes
    std::size_t next = 0;
    bool fed = false;  // events fed since the last mark (else the values cannot have moved)
    absl::Status unpriced;  // the period's invoice cannot be rendered
    auto take = [&](std::int64_t mark) -> absl::Status {
      if (fed) {
        absl::StatusOr<std::vector<std::int64_t>> v = values(built, ledger ? &*ledger : nullptr, usd_per_credit);
        if (!v.ok()) {
          unpriced = v.status();
          return absl::CancelledError("the period's invoice cannot be rendered");
        }
        for (const auto& [name, line] : invoiced_) {
          const std::int64_t delta = (*v)[line] - last[line];
          last[line] = (*v)[line];
          if (from >= a && delta != 0) mine[key_of(customer_id, line, from)].revenue += delta;
        }
        fed = false;
      }
      from = mark;
      return absl::OkStatus();
    };
    std::string key;
    absl::Status scanned = storage_.scan_billing_events(
        product_id_, customer_id, TimeRange{.from_ns = p.start_ns, .to_ns = b}, [&](const BillingEventRow& row) {
          while (next < marks.size() && marks[next] <= row.ts_ns) {
            if (absl::Status s = take(marks[next++]); !s.ok()) return s;
          }
          if (row.ts_ns >= a) {
            key = str_cat(row.agent_id, "/", row.indicator);
            if (auto it = invoiced_.find(key); it != invoiced_.end()) {
              Adjust& adj = mine[key_of(customer_id, it->second, row.ts_ns)];
              if (row.revenue_nanos) {
                adj.stored_revenue += *row.revenue_nanos;
              } else {
                ++adj.unknown_events;
              }
            }
          }
          fed = true;
          return feeder.add(row);
        });
    while (scanned.ok() && next < marks.size()) scanned = take(marks[next++]);
    // Bad data under a tiered price (a negative quantity) or an amount past 64 bits: the period's
    // events keep no price, as its invoice preview names the error.
    if (!unpriced.ok()) return absl::OkStatus();
    if (!scanned.ok()) return scanned;
    for (const auto& [k, adj] : mine) {
      Adjust& to = adjust_[k];
      to.revenue += adj.revenue;
      to.stored_revenue += adj.stored_revenue;
      to.unknown_events += adj.unknown_events;
    }
    return absl::OkStatus();
  }

  Storage& storage_;
  std::string_view product_id_;
  TimeRange range_;
  ProfitGroup group_;
  const ProductBilling& billing_;
  std::map<std::string, std::size_t, std::less<>> invoiced_;  // "agent/indicator" -> line
  std::map<std::string, Adjust, std::less<>> adjust_;
};

}  // namespace

absl::Status add_invoiced_revenue(Storage& storage, std::string_view product_id, TimeRange range, ProfitGroup group,
                                  std::vector<ProfitRow>& rows) {
  if (group == ProfitGroup::kModel || range.from_ns < 0 || range.from_ns >= range.to_ns) return absl::OkStatus();
  absl::StatusOr<ProductBilling> billing = load_product_billing(storage, product_id);
  if (!billing.ok()) return billing.status();
  Accrual accrual(storage, product_id, range, group, *billing);
  if (!accrual.any()) return absl::OkStatus();

  // The customers with billing events in the range.
  std::vector<ProfitRow> by_customer_storage;
  const std::vector<ProfitRow>* by_customer = &rows;
  if (group != ProfitGroup::kCustomer) {
    absl::StatusOr<std::vector<ProfitRow>> r = storage.profit_report(product_id, range, ProfitGroup::kCustomer);
    if (!r.ok()) return r.status();
    by_customer_storage = *std::move(r);
    by_customer = &by_customer_storage;
  }
  for (const ProfitRow& r : *by_customer) {
    if (r.billing_events == 0) continue;
    if (absl::Status s = accrual.customer(r.key); !s.ok()) return s;
  }

  std::map<std::string, ProfitRow, std::less<>> merged;
  for (ProfitRow& r : rows) {
    std::string key = r.key;
    merged.emplace(std::move(key), std::move(r));
  }
  for (const auto& [key, adj] : accrual.adjustments()) {
    auto it = merged.find(key);
    if (it == merged.end()) {
      if (adj.revenue == 0) continue;
      it = merged.emplace(key, ProfitRow{.key = key}).first;
    }
    ProfitRow& row = it->second;
    std::int64_t revenue = row.revenue_nanos.value_or(0);
    if (__builtin_sub_overflow(revenue, adj.stored_revenue, &revenue) ||
        __builtin_add_overflow(revenue, adj.revenue, &revenue)) {
      return absl::InternalError("profit report: a sum overflows int64");
    }
    row.revenue_unknown_events -= std::min(adj.unknown_events, row.revenue_unknown_events);
    // Known when any of its billing events is priced (stored or invoiced).
    if (row.revenue_nanos || adj.unknown_events > 0 || adj.revenue != 0) row.revenue_nanos = revenue;
  }
  rows.clear();
  rows.reserve(merged.size());
  for (auto& [key, row] : merged) rows.push_back(std::move(row));
  return absl::OkStatus();
}

}  // namespace paygent::server
