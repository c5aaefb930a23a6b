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
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "billing/invoice.h"
#include "server/storage.h"

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

// One customer's billing events of `period`, read through `scan`, fed into a builder.
absl::StatusOr<BuiltInvoice> build_invoice(const ProductBilling& billing, billing::BillingPeriod period, BillingScan scan);

// The credits each CREDITS line of `invoice` costs, as Storage::settle_wallet takes them.
std::vector<std::pair<std::string, std::string>> credits_of_invoice(const billing::Invoice& invoice);

// Settles `customer`'s wallet (if it has one) for `period` as its usage prices it now
// (Storage::settle_wallet); without CREDITS indicators, only reads it. nullopt: no wallet.
absl::StatusOr<std::optional<WalletRecord>> settle_customer_wallet(Storage& storage, std::string_view product_id,
                                                                   const ProductBilling& billing,
                                                                   std::string_view customer_id,
                                                                   billing::BillingPeriod period, absl::Time now);

}  // namespace paygent::server
