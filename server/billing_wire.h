// The JSON of the billing API (docs/billing.md): billable metrics, an indicator's pricing model, the
// billing file of `paygent billing apply`, and the invoice preview. The strict reader of
// server/json_read.h (camelCase or snake_case, unknown or repeated fields refused naming their
// path); amounts and quantities are exact decimals (a string "0.5" or a JSON number read from its
// exact text, never through a double), written back as decimal strings.
//
// A metric body (POST /api/v1/billable-metrics, PUT /api/v1/billable-metrics/{identifier}):
//   {"name": string, "identifier": string (optional at creation: derived from the name,
//    "GPU compute hours" -> "gpu_compute_hours"; immutable), "description": string (optional),
//    "aggregation": "count"|"sum"|"max"|"unique_count"|"latest",
//    "field": meta-tag key | "expression": "event.properties.a * event.properties.b",
//    "resultField": string (with an expression; "calculation_result"),
//    "rounding": {"mode": "round"|"ceil"|"floor", "precision": 0..18} (optional),
//    "filters": [{"key": string, "values": [string, ...]}] (optional)}
// A pricing object (an indicator's "pricing"):
//   {"model": "flat"|"volume"|"graduated"|"credits", "unit": string (optional, "unit"),
//    "unitPrice": decimal (flat), "tiers": [{"upTo": decimal (every tier but the last),
//    "unitPrice": decimal, "flatFee": decimal (optional)}] (volume, graduated),
//    "creditsPerUnit": decimal, "overageUsdPerCredit": decimal (optional) (credits)}
//
// Thread safety: free functions without shared state. Nothing of a body is kept.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "billing/invoice.h"
#include "billing/metric.h"
#include "billing/pricing.h"
#include "server/storage.h"

namespace paygent::server {

// Most metrics in one billing file.
inline constexpr std::size_t kMaxMetricsPerApply = 1000;

// Reads a metric body (above) into a record whose definition_json and locked_json are canonical.
// `path_identifier`: the identifier of the path (PUT), which a body's "identifier" must equal;
// empty at creation. InvalidArgument naming the field ("expression: position 9: ...").
absl::StatusOr<MetricRecord> parse_metric_body(std::string_view body, std::string_view path_identifier);

// The engine's metric of a stored record (its definition_json re-read).
absl::StatusOr<billing::Metric> metric_of(const MetricRecord& record);

// {"identifier", "name", "description", the definition's fields, "createdNs", "linkedTo": [...],
// "locked": bool}: the reply's metric (PUT takes it without the last three).
std::string metric_json(const MetricRecord& record);

// Reads an indicator's "pricing" object at `where` ("indicators[0].pricing") into canonical JSON.
absl::Status read_pricing(simdjson::ondemand::value v, std::string_view where, std::string& pricing_json);

// The engine's pricing of canonical pricing JSON.
absl::StatusOr<billing::Pricing> pricing_of(std::string_view pricing_json);

// The billing file (POST /api/v1/billing:apply, `paygent billing apply FILE`):
//   {"metrics": [metric bodies], "agents": [agent bodies with "agentId"]}, both optional.
struct BillingFile {
  std::vector<MetricRecord> metrics;
  std::vector<AgentRecord> agents;
};
absl::StatusOr<BillingFile> parse_billing_file(std::string_view body);

// The invoice preview's reply (docs/billing.md): one line per agent indicator. `lines_agent[i]`,
// `lines_indicator[i]` name the agent and indicator of invoice.lines[i]; `metric_ids[i]` its
// metric's identifier ("" for none).
struct InvoiceView {
  std::string customer;
  std::string period_label;  // "2026-11", or "" for an explicit range
  const billing::Invoice* invoice = nullptr;
  std::vector<std::string> agents, indicators, metric_ids;
  std::int64_t unpriced_events = 0;  // events of indicators without any price (not billed)
};
std::string invoice_json(const InvoiceView& view);

// A credit wallet for the API (docs/billing.md, "Credit wallets"): {"customerId", "granted",
// "balance", "used", "overage", "paidUsd", "topUps", "updatedAt"}, amounts as exact decimal strings.
std::string wallet_json(const WalletRecord& wallet);
// {"id", "credits", "paidUsd", "createdAt"}.
std::string top_up_json(const TopUpRecord& top_up);
// The wallet in a user's usage object (docs/wire.md): {"granted", "balance", "used", "overage",
// "granted_nanocredits", "charged_nanocredits"}: the decimals, and the integers the library gates
// on (granted rounded down; charged = used + overage, rounded up), left out when they do not fit.
std::string wallet_wire_json(const WalletRecord& wallet);

}  // namespace paygent::server
