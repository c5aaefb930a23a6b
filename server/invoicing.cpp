// The product's billing setup, a customer's billing period and the feeding of an invoice (see
// server/invoicing.h).
#include "server/invoicing.h"

#include <simdjson.h>

#include "billing/decimal.h"
#include "meter/internal/str_cat.h"
#include "paygent/plan.h"
#include "server/billing_wire.h"

namespace paygent::server {

using ::paygent::internal::str_cat;

namespace {

// One event's meta tags (a JSON object of strings, as ingest stored it) into `owned` / `tags`,
// through `padded` (the text with simdjson's padding, so that the parser copies nothing). Every
// buffer keeps its capacity from one event to the next: no allocation per event once warm.
void read_tags(simdjson::dom::parser& parser, std::string_view json, std::string& padded,
               std::vector<std::pair<std::string, std::string>>& owned, std::size_t& used,
               std::vector<billing::MetaTag>& tags) {
  used = 0;
  tags.clear();
  if (json == "{}") return;
  padded.reserve(json.size() + simdjson::SIMDJSON_PADDING);
  padded.assign(json);
  simdjson::dom::object object;
  if (parser.parse(padded.data(), padded.size(), false).get_object().get(object) != simdjson::SUCCESS) return;
  for (auto field : object) {
    std::string_view value;
    if (field.value.get_string().get(value) != simdjson::SUCCESS) continue;
    if (used == owned.size()) owned.emplace_back();
    owned[used].first.assign(field.key);
    owned[used].second.assign(value);
    ++used;
  }
  for (std::size_t i = 0; i < used; ++i) tags.push_back(billing::MetaTag{owned[i].first, owned[i].second});
}

}  // namespace

absl::StatusOr<ProductBilling> load_product_billing(Storage& storage, std::string_view product_id) {
  absl::StatusOr<std::vector<MetricRecord>> metric_records = storage.list_metrics(product_id);
  if (!metric_records.ok()) return metric_records.status();
  std::map<std::string, billing::Metric, std::less<>> metrics;
  for (const MetricRecord& r : *metric_records) {
    absl::StatusOr<billing::Metric> m = metric_of(r);
    if (!m.ok()) return m.status();
    metrics.emplace(r.identifier, *std::move(m));
  }
  absl::StatusOr<std::vector<AgentRecord>> agents = storage.list_agents(product_id);
  if (!agents.ok()) return agents.status();

  ProductBilling out;
  for (const AgentRecord& a : *agents) {
    for (const IndicatorPrice& p : a.indicators) {
      const std::string key = str_cat(a.agent_id, "/", p.indicator);
      billing::Indicator ind{.name = key};
      if (!p.metric.empty()) {
        auto m = metrics.find(p.metric);
        if (m == metrics.end()) return absl::InternalError(str_cat("metric \"", p.metric, "\" is gone"));
        ind.metric = m->second;
      }
      if (!p.pricing_json.empty()) {
        absl::StatusOr<billing::Pricing> pricing = pricing_of(p.pricing_json);
        if (!pricing.ok()) return pricing.status();
        ind.pricing = *std::move(pricing);
        if (ind.pricing.model == billing::PricingModel::kCredits) out.has_credits = true;
      } else if (p.per_minute) {
        // Per-minute sessions: each billed at the revenue ingest priced it at (the session's custom
        // per-model rates of that moment applied), else at the base rate (docs/billing.md).
        if (!p.price_nanos && p.custom_rates.empty()) {
          out.unpriced[key] = true;
          continue;
        }
        ind.per_minute = billing::PerMinutePricing{.base_usd_per_minute = billing::Decimal::from_nanos(p.price_nanos.value_or(0))};
        ind.stored_amounts = true;
        out.per_minute[key] = true;
      } else if (p.price_nanos) {
        ind.pricing = billing::Pricing{.model = billing::PricingModel::kFlat,
                                       .unit = p.metric.empty() ? "event" : "unit",
                                       .unit_price = billing::Decimal::from_nanos(*p.price_nanos)};
      } else {
        out.unpriced[key] = true;
        continue;
      }
      // A price per event (no metric, FLAT) bills each event at what ingest priced it at, so that
      // a price change bills only later events, as the profit report's revenue does.
      if (!ind.per_minute && !ind.metric && ind.pricing.model == billing::PricingModel::kFlat) ind.stored_amounts = true;
      out.indicators.push_back(std::move(ind));
      out.agents.push_back(a.agent_id);
      out.indicator_names.push_back(p.indicator);
      out.metric_ids.push_back(p.metric);
    }
  }
  return out;
}

billing::BillingPeriod billing_period_at(const UserRecord& customer, absl::Time at) {
  const Period p = customer.subscription
                       ? subscription_period(absl::FromUnixNanos(customer.subscription->period_start_ns),
                                             absl::FromUnixNanos(customer.subscription->period_end_ns), at)
                       : calendar_period(PeriodRule::kMonth, at);
  return billing::BillingPeriod{.start_ns = absl::ToUnixNanos(p.start), .end_ns = absl::ToUnixNanos(p.end)};
}

InvoiceFeeder::InvoiceFeeder(const ProductBilling& product, BuiltInvoice& invoice)
    : product_(product), invoice_(invoice), parser_(std::make_unique<simdjson::dom::parser>()) {}
InvoiceFeeder::~InvoiceFeeder() = default;

absl::Status InvoiceFeeder::add(const BillingEventRow& row) {
  // Consecutive events mostly share their indicator: its lookups are made once per change.
  if (!key_known_ || key_.size() != row.agent_id.size() + 1 + row.indicator.size() ||
      !key_.starts_with(row.agent_id) || key_[row.agent_id.size()] != '/' || !key_.ends_with(row.indicator)) {
    key_.assign(row.agent_id).append("/").append(row.indicator);
    key_unpriced_ = product_.unpriced.contains(key_);
    key_per_minute_ = product_.per_minute.contains(key_);
    key_known_ = true;
  }
  if (key_unpriced_) {
    ++invoice_.unpriced_events;
    return absl::OkStatus();
  }
  std::size_t used = 0;
  read_tags(*parser_, row.meta_tags_json, padded_, owned_, used, tags_);
  if (key_per_minute_) {
    // The session's minutes, exact to 18 places, as the engine's duration tag.
    absl::StatusOr<billing::Decimal> m = billing::Decimal::div(
        billing::Decimal::from_int(row.duration_us), billing::Decimal::from_int(60'000'000), 18,
        billing::RoundingMode::kRound);
    if (!m.ok()) return m.status();
    minutes_ = m->to_string();
    tags_.push_back(billing::MetaTag{"duration_minutes", minutes_});
  }
  std::optional<billing::Decimal> amount;
  if (row.revenue_nanos) amount = billing::Decimal::from_nanos(*row.revenue_nanos);
  // The storage holds each event id once (its primary key) and the scan gives each row once, so
  // the engine need not remember ids.
  invoice_.builder.add(key_, billing::BillingEvent{.id = {},
                                                   .ts_ns = row.ts_ns,
                                                   .arrival = static_cast<std::uint64_t>(row.received_ns),
                                                   .tags = tags_,
                                                   .amount = amount});
  return absl::OkStatus();
}

absl::StatusOr<BuiltInvoice> build_invoice(const ProductBilling& product, billing::BillingPeriod period, BillingScan scan) {
  absl::StatusOr<billing::InvoiceBuilder> builder = billing::InvoiceBuilder::create(product.indicators, period);
  if (!builder.ok()) return absl::InternalError(builder.status().message());
  BuiltInvoice out{.builder = *std::move(builder)};
  InvoiceFeeder feeder(product, out);
  absl::Status scanned = scan(TimeRange{.from_ns = period.start_ns, .to_ns = period.end_ns},
                              [&](const BillingEventRow& row) { return feeder.add(row); });
  if (!scanned.ok()) return scanned;
  return out;
}

std::vector<std::pair<std::string, std::string>> credits_of_invoice(const billing::Invoice& invoice) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const billing::InvoiceLine& line : invoice.lines) {
    if (line.pricing == billing::pricing_model_name(billing::PricingModel::kCredits)) {
      out.emplace_back(line.indicator, line.credits.to_string());
    }
  }
  return out;
}

billing::Decimal ledger_used(const std::vector<WalletCharge>& ledger, std::string_view indicator) {
  for (const WalletCharge& c : ledger) {
    if (c.indicator != indicator) continue;
    absl::StatusOr<billing::Decimal> used = billing::Decimal::parse(c.used);
    return used.ok() ? *used : billing::Decimal();
  }
  return billing::Decimal();
}

absl::StatusOr<std::optional<WalletRecord>> settle_customer_wallet(Storage& storage, std::string_view product_id,
                                                                   const ProductBilling& billing,
                                                                   std::string_view customer_id,
                                                                   billing::BillingPeriod period, absl::Time now) {
  if (!billing.has_credits) {
    const std::string_view customers[] = {customer_id};
    absl::StatusOr<std::vector<WalletRecord>> wallets = storage.find_wallets(product_id, customers);
    if (!wallets.ok()) return wallets.status();
    if (wallets->empty()) return std::optional<WalletRecord>();
    return std::optional<WalletRecord>(std::move(wallets->front()));
  }
  return storage.settle_wallet(
      product_id, customer_id, TimeRange{.from_ns = period.start_ns, .to_ns = period.end_ns}, absl::ToUnixNanos(now),
      [&](BillingScan scan) -> absl::StatusOr<std::vector<std::pair<std::string, std::string>>> {
        absl::StatusOr<BuiltInvoice> built = build_invoice(billing, period, scan);
        if (!built.ok()) return built.status();
        absl::StatusOr<billing::Invoice> invoice = built->builder.preview();
        if (!invoice.ok()) return invoice.status();
        return credits_of_invoice(*invoice);
      });
}

}  // namespace paygent::server
