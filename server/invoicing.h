// What the invoice preview and the credit wallets share (docs/billing.md): the product's billing
// setup as the engine (billing/) takes it, a customer's billing period, and one customer's events
// of a period fed into a billing::InvoiceBuilder. No HTTP here; the storage is reached only
// through the Storage interface and the scan the caller gives.
//
// Lifetime and thread safety: ProductBilling and BuiltInvoice are values owned by one request
// (one thread); a BuiltInvoice keeps a pointer to the ProductBilling it was built from, which must
// outlive it. The free functions keep nothing they are given.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "billing/invoice.h"
#include "server/storage.h"

namespace simdjson::dom {
class parser;
}  // namespace simdjson::dom

namespace paygent::server {

// One engine indicator per priced agent indicator, named "agentId/indicator" (distinct).
struct ProductBilling {
  std::vector<billing::Indicator> indicators;
  std::vector<std::string> agents, indicator_names, metric_ids;  // parallel to `indicators`
  std::map<std::string, bool, std::less<>> per_minute;  // "agent/indicator" billed per minute
  std::map<std::string, bool, std::less<>> unpriced;    // "agent/indicator" without any price
  bool has_credits = false;                             // some indicator is priced in CREDITS
};

// The product's metrics and agents read and made engine indicators. Internal when a stored
// definition no longer parses.
absl::StatusOr<ProductBilling> load_product_billing(Storage& storage, std::string_view product_id);

// The billing period of `customer` that contains `at`: its subscription's, else the UTC month.
billing::BillingPeriod billing_period_at(const UserRecord& customer, absl::Time at);

struct BuiltInvoice {
  billing::InvoiceBuilder builder;
  std::int64_t unpriced_events = 0;  // events of indicators without any price (not billed)
};

// Feeds one customer's billing event rows into `invoice`'s builder, row by row: the meta tags read,
// a per-minute event's duration as its minutes, the revenue stored at ingest as its amount.
// Lifetime: borrows `product` and `invoice`, which must outlive it. One thread at a time.
class InvoiceFeeder {
 public:
  InvoiceFeeder(const ProductBilling& product, BuiltInvoice& invoice);
  ~InvoiceFeeder();
  InvoiceFeeder(const InvoiceFeeder&) = delete;
  InvoiceFeeder& operator=(const InvoiceFeeder&) = delete;
  absl::Status add(const BillingEventRow& row);
  // The "agentId/indicator" of the row last given to add(): the engine indicator's name.
  [[nodiscard]] const std::string& key() const noexcept { return key_; }

 private:
  const ProductBilling& product_;
  BuiltInvoice& invoice_;
  std::unique_ptr<simdjson::dom::parser> parser_;
  std::vector<std::pair<std::string, std::string>> owned_;  // the first `used` of them hold the tags
  std::vector<billing::MetaTag> tags_;
  std::string key_, minutes_, padded_;
  bool key_known_ = false, key_unpriced_ = false, key_per_minute_ = false;  // of key_
};

// One customer's billing events of `period`, read through `scan`, fed into a builder.
absl::StatusOr<BuiltInvoice> build_invoice(const ProductBilling& billing, billing::BillingPeriod period, BillingScan scan);

// The credits each CREDITS line of `invoice` costs, as Storage::settle_wallet takes them.
std::vector<std::pair<std::string, std::string>> credits_of_invoice(const billing::Invoice& invoice);

// The credits the wallet's ledger took for `indicator` (0 when it has no row or an unreadable one),
// as InvoiceBuilder::preview_with_ledger asks for them.
billing::Decimal ledger_used(const std::vector<WalletCharge>& ledger, std::string_view indicator);

// Settles `customer`'s wallet (if it has one) for `period` as its usage prices it now
// (Storage::settle_wallet); without CREDITS indicators, only reads it. nullopt: no wallet.
absl::StatusOr<std::optional<WalletRecord>> settle_customer_wallet(Storage& storage, std::string_view product_id,
                                                                   const ProductBilling& billing,
                                                                   std::string_view customer_id,
                                                                   billing::BillingPeriod period, absl::Time now);

// The profit report's revenue of the indicators an invoice prices per billing period (a metric,
// or VOLUME / GRADUATED / CREDITS; docs/billing.md, "Revenue in the profit report"), put into
// `rows` (Storage::profit_report's, for the same range and group): each key's revenue becomes
// what those indicators' invoices accrued over the range (the invoice of a period's events before
// the range's end minus that of its events before the range's start; CREDITS lines count the
// wallet credits used at what the wallet's top-ups cost per credit, plus any overage charged),
// and their events are no longer counted as without a price. A period whose invoice cannot be
// rendered leaves its events as they were. by=model and by=tag:<key> are left as they are (an
// invoice is not split by model or by tag). Reads through `storage`; keeps nothing.
absl::Status add_invoiced_revenue(Storage& storage, std::string_view product_id, TimeRange range, ProfitGroup group,
                                  std::vector<ProfitRow>& rows);

}  // namespace paygent::server
