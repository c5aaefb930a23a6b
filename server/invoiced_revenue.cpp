// The profit report's revenue of the indicators an invoice prices per billing period (see
// server/invoicing.h, add_invoiced_revenue, and docs/billing.md, "Revenue in the profit report").
//
// Such an indicator's revenue accrues as its invoice grows: what a span [a, b) of a billing
// period P earns is the invoice line of P's events before b minus that of P's events before a.
// The spans of a report telescope, so a month's days add up to its invoice exactly, and a report
// over whole periods is the invoices' sum. One pass over the product's billing events, in time
// order, feeds every customer's open billing period at once; each invoice is previewed at the
// boundaries the grouping needs (the range's ends; each UTC midnight for by=day).
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "billing/decimal.h"
#include "server/invoicing.h"
#include "server/storage_logic.h"

namespace paygent::server {
namespace {

using storage_internal::kNanosPerDay;

// Periods of one customer with a wallet whose ledgers a report reads at most (a 3-year range of
// monthly periods, and a margin).
constexpr int kMaxLedgerPeriods = 400;

// What the report's rows get: revenue added (by key), and the events it prices (by key) whose
// stored revenue no longer counts (subtracted) or that were counted as without a price.
struct Adjust {
  std::int64_t revenue = 0;
  std::int64_t stored_revenue = 0;
  std::int64_t unknown_events = 0;
};

// One customer's billing period being read: its invoice so far and what it has accrued.
struct PeriodState {
  PeriodState(const ProductBilling& billing, billing::BillingPeriod period, billing::InvoiceBuilder builder)
      : p(period), built{.builder = std::move(builder)}, feeder(billing, built), last(billing.indicators.size(), 0) {}

  billing::BillingPeriod p;
  std::int64_t a = 0, b = 0;         // the part of the period inside the range
  std::vector<std::int64_t> marks;   // where the invoice's values are taken, in order
  std::size_t next = 0;              // the first mark not taken
  std::int64_t from = 0;             // the start of the span the next mark closes
  bool fed = false;                  // events fed since the last mark (else nothing moved)
  bool unpriced = false;             // its invoice cannot be rendered
  BuiltInvoice built;
  InvoiceFeeder feeder;              // feeds `built`
  std::optional<std::vector<WalletCharge>> ledger;
  std::vector<std::int64_t> last;    // each line's value at the last mark
  // By (UTC day for by=day, else 0; line): applied under their report keys when the period
  // closes priced. Keyed by numbers, so that an event costs no allocation.
  std::map<std::pair<std::int64_t, std::size_t>, Adjust> mine;
};

struct CustomerState {
  UserRecord user;
  bool wallet = false;
  std::optional<billing::Decimal> usd_per_credit;
  // With a wallet: the ledger of each period the range overlaps, by period start, read before the
  // scan (no other read while its transaction is open).
  std::map<std::int64_t, std::vector<WalletCharge>> ledgers;
  std::unique_ptr<PeriodState> period;
};

// Reads every customer's billing events of the range in one pass, in time order: each customer
// has the invoice of its current billing period open, closed when its events move past it.
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

  // Opens the period at the range's start of each of `customer_ids` the product has (those that
  // are gone have nothing to price); returns the earliest such start (the scan must start there
  // or earlier), nullopt when none. Their users and wallets are read in a few queries.
  absl::StatusOr<std::optional<std::int64_t>> add_customers(std::span<const std::string_view> customer_ids) {
    absl::StatusOr<std::vector<UserRecord>> users = storage_.find_users(product_id_, customer_ids);
    if (!users.ok()) return users.status();
    std::vector<WalletRecord> wallets;  // in customer order, as find_wallets returns them
    if (billing_.has_credits) {
      absl::StatusOr<std::vector<WalletRecord>> found = storage_.find_wallets(product_id_, customer_ids);
      if (!found.ok()) return found.status();
      wallets = *std::move(found);
    }
    std::optional<std::int64_t> earliest;
    for (UserRecord& user : *users) {
      const auto wallet = std::lower_bound(wallets.begin(), wallets.end(), user.user_id,
                                           [](const WalletRecord& w, const std::string& id) { return w.customer_id < id; });
      const WalletRecord* w = wallet != wallets.end() && wallet->customer_id == user.user_id ? &*wallet : nullptr;
      absl::StatusOr<std::int64_t> start = add_customer(std::move(user), w);
      if (!start.ok()) return start.status();
      earliest = std::min(earliest.value_or(*start), *start);
    }
    return earliest;
  }

 private:
  // Opens `user`'s period at the range's start (`wallet`: theirs, or nullptr); returns its start.
  absl::StatusOr<std::int64_t> add_customer(UserRecord user, const WalletRecord* wallet) {
    const std::string customer_id = user.user_id;
    auto state = std::make_unique<CustomerState>();
    state->user = std::move(user);
    if (wallet != nullptr) {
      state->wallet = true;
      state->usd_per_credit = price_per_credit(*wallet);
    }
    const billing::BillingPeriod p = billing_period_at(state->user, absl::FromUnixNanos(range_.from_ns));
    if (state->wallet) {
      billing::BillingPeriod q = p;
      for (int n = 0; n < kMaxLedgerPeriods && q.start_ns < range_.to_ns && q.end_ns > q.start_ns; ++n) {
        absl::StatusOr<std::vector<WalletCharge>> charges =
            storage_.wallet_charges(product_id_, customer_id, TimeRange{.from_ns = q.start_ns, .to_ns = q.end_ns});
        if (!charges.ok()) return charges.status();
        state->ledgers.emplace(q.start_ns, *std::move(charges));
        q = billing_period_at(state->user, absl::FromUnixNanos(q.end_ns));
      }
    }
    if (absl::Status s = open(*state, p); !s.ok()) return s;
    customers_.emplace(customer_id, std::move(state));
    return p.start_ns;
  }

 public:

  absl::Status add(const BillingEventRow& row) {
    auto it = customers_.find(row.customer_id);
    if (it == customers_.end()) return absl::OkStatus();  // none in the range: nothing to accrue
    CustomerState& c = *it->second;
    if (row.ts_ns < c.period->p.start_ns) return absl::OkStatus();  // before its first period in the range
    if (row.ts_ns >= c.period->p.end_ns) {
      if (absl::Status s = close(row.customer_id, c); !s.ok()) return s;
      // The period holding the event (those between, without events, accrue nothing).
      const billing::BillingPeriod p = billing_period_at(c.user, absl::FromUnixNanos(row.ts_ns));
      if (absl::Status s = open(c, p); !s.ok()) return s;
    }
    PeriodState& ps = *c.period;
    while (ps.next < ps.marks.size() && ps.marks[ps.next] <= row.ts_ns) {
      if (absl::Status s = take(c, ps.marks[ps.next++]); !s.ok()) return s;
    }
    ps.fed = true;
    if (absl::Status s = ps.feeder.add(row); !s.ok()) return s;
    if (row.ts_ns >= ps.a) {
      // The invoiced line of the row's indicator, looked up once per change of indicator.
      if (ps.feeder.key() != last_key_) {
        last_key_ = ps.feeder.key();
        const auto line = invoiced_.find(last_key_);
        last_line_ = line != invoiced_.end() ? std::optional<std::size_t>(line->second) : std::nullopt;
      }
      if (last_line_) {
        Adjust& adj = ps.mine[{day_of(row.ts_ns), *last_line_}];
        if (row.revenue_nanos) {
          adj.stored_revenue += *row.revenue_nanos;
        } else {
          ++adj.unknown_events;
        }
      }
    }
    return absl::OkStatus();
  }

  // Closes every customer's open period.
  absl::Status finish() {
    for (auto& [id, c] : customers_) {
      if (absl::Status s = close(id, *c); !s.ok()) return s;
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

  // The UTC day of `ts_ns` for by=day; 0 otherwise (the day is not part of the key).
  std::int64_t day_of(std::int64_t ts_ns) const {
    if (group_ != ProfitGroup::kDay) return 0;
    std::int64_t day = ts_ns / kNanosPerDay;
    if (ts_ns % kNanosPerDay < 0) --day;
    return day;
  }

  std::string key_of(std::string_view customer_id, std::size_t line, std::int64_t day) const {
    switch (group_) {
      case ProfitGroup::kAgent: return billing_.agents[line];
      case ProfitGroup::kCustomer: return std::string(customer_id);
      case ProfitGroup::kIndicator: return billing_.indicator_names[line];
      case ProfitGroup::kDay: break;
      case ProfitGroup::kModel:
      case ProfitGroup::kTag: break;  // not reached: add_invoiced_revenue skips them
    }
    return storage_internal::day_key(day, ReportGroup::kDay);
  }

  absl::Status open(CustomerState& c, billing::BillingPeriod p) {
    absl::StatusOr<billing::InvoiceBuilder> builder = billing::InvoiceBuilder::create(billing_.indicators, p);
    if (!builder.ok()) return absl::InternalError(builder.status().message());
    c.period = std::make_unique<PeriodState>(billing_, p, *std::move(builder));
    PeriodState& ps = *c.period;
    ps.a = std::max(range_.from_ns, p.start_ns);
    ps.b = std::min(range_.to_ns, p.end_ns);
    ps.from = p.start_ns;
    // The marks: a (when the period began before it), each midnight inside (by day), b.
    if (ps.a > p.start_ns) ps.marks.push_back(ps.a);
    if (group_ == ProfitGroup::kDay) {
      for (std::int64_t d = (ps.a / kNanosPerDay + 1) * kNanosPerDay; d < ps.b; d += kNanosPerDay) ps.marks.push_back(d);
    }
    ps.marks.push_back(ps.b);
    if (c.wallet) {
      // A period past the ledgers read (more than kMaxLedgerPeriods): its credits count no wallet.
      auto ledger = c.ledgers.find(p.start_ns);
      ps.ledger = ledger != c.ledgers.end() ? ledger->second : std::vector<WalletCharge>();
    }
    return absl::OkStatus();
  }

  absl::Status close(const std::string& customer_id, CustomerState& c) {
    PeriodState& ps = *c.period;
    while (ps.next < ps.marks.size()) {
      if (absl::Status s = take(c, ps.marks[ps.next++]); !s.ok()) return s;
    }
    // Bad data under a tiered price (a negative quantity) or an amount past 64 bits: the period's
    // events keep no price, as its invoice preview names the error.
    if (ps.unpriced) return absl::OkStatus();
    for (const auto& [day_line, adj] : ps.mine) {
      Adjust& to = adjust_[key_of(customer_id, day_line.second, day_line.first)];
      to.revenue += adj.revenue;
      to.stored_revenue += adj.stored_revenue;
      to.unknown_events += adj.unknown_events;
    }
    ps.mine.clear();
    return absl::OkStatus();
  }

  // The invoice's value of each line as of the events fed so far: its rendered amount, plus the
  // wallet credits it used at what they cost (CREDITS), in nano-USD; the change since the last
  // mark is what the span [from, mark) earned.
  absl::Status take(const CustomerState& c, std::int64_t mark) {
    PeriodState& ps = *c.period;
    if (ps.fed && !ps.unpriced) {
      ps.fed = false;
      absl::StatusOr<billing::Invoice> invoice =
          ps.ledger ? ps.built.builder.preview_with_ledger(
                          [&](std::string_view indicator) { return ledger_used(*ps.ledger, indicator); })
                    : ps.built.builder.preview();
      if (!invoice.ok()) {
        ps.unpriced = true;
        return absl::OkStatus();
      }
      for (const auto& [name, line] : invoiced_) {
        absl::StatusOr<std::int64_t> value = value_of(invoice->lines[line], c.usd_per_credit);
        if (!value.ok()) {
          ps.unpriced = true;
          return absl::OkStatus();
        }
        const std::int64_t delta = *value - ps.last[line];
        ps.last[line] = *value;
        if (ps.from >= ps.a && delta != 0) ps.mine[{day_of(ps.from), line}].revenue += delta;
      }
    }
    ps.from = mark;
    return absl::OkStatus();
  }

  static absl::StatusOr<std::int64_t> value_of(const billing::InvoiceLine& line,
                                               const std::optional<billing::Decimal>& usd_per_credit) {
    if (!usd_per_credit || line.credits_used.is_zero()) return line.amount_nanos;
    absl::StatusOr<billing::Decimal> earned = billing::Decimal::mul(line.credits_used, *usd_per_credit);
    if (earned.ok()) earned = billing::Decimal::add(*earned, line.amount);
    if (!earned.ok()) return earned.status();
    return earned->to_nanos(billing::RoundingMode::kRound);
  }

  Storage& storage_;
  std::string_view product_id_;
  TimeRange range_;
  ProfitGroup group_;
  const ProductBilling& billing_;
  absl::flat_hash_map<std::string, std::size_t> invoiced_;  // "agent/indicator" -> line
  std::string last_key_;                   // of the last row add() looked up in invoiced_...
  std::optional<std::size_t> last_line_;  // ...and its line there
  absl::flat_hash_map<std::string, std::unique_ptr<CustomerState>> customers_;
  std::map<std::string, Adjust, std::less<>> adjust_;
};

}  // namespace

absl::Status add_invoiced_revenue(Storage& storage, std::string_view product_id, TimeRange range, ProfitGroup group,
                                  std::vector<ProfitRow>& rows) {
  if (group == ProfitGroup::kModel || group == ProfitGroup::kTag || range.from_ns < 0 || range.from_ns >= range.to_ns) {
    return absl::OkStatus();
  }
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
  std::vector<std::string_view> customers;
  for (const ProfitRow& r : *by_customer) {
    if (r.billing_events != 0) customers.push_back(r.key);
  }
  absl::StatusOr<std::optional<std::int64_t>> start = accrual.add_customers(customers);
  if (!start.ok()) return start.status();
  const std::int64_t scan_from = std::min(range.from_ns, start->value_or(range.from_ns));
  if (absl::Status s = storage.scan_product_billing_events(
          product_id, TimeRange{.from_ns = scan_from, .to_ns = range.to_ns},
          [&](const BillingEventRow& row) { return accrual.add(row); });
      !s.ok()) {
    return s;
  }
  if (absl::Status s = accrual.finish(); !s.ok()) return s;

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
