// paygentd's billing API (docs/billing.md; issue 11), routes of Api's route table (server/api.cpp):
//   GET    /api/v1/billable-metrics                -> {"metrics": [metric, ...]}
//   POST   /api/v1/billable-metrics                -> 201 metric      (409: the identifier exists)
//   GET    /api/v1/billable-metrics/{identifier}   -> metric
//   PUT    /api/v1/billable-metrics/{identifier}   -> {"metric": metric, "changed": bool}  (409: locked)
//   DELETE /api/v1/billable-metrics/{identifier}   -> {"deleted": identifier}             (409: linked)
//   POST   /api/v1/billing:apply                   -> {"metrics": [...], "agents": [...]}  (the CLI's file)
//   GET    /api/v1/customers/{id}/invoice?period=2026-11 (or from_ns=&to_ns=) -> the invoice preview
// The engine is billing/ (no SQL there): the storage pages the customer's billing events with
// their meta tags into one billing::InvoiceBuilder.
#include <simdjson.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "billing/invoice.h"
#include "meter/internal/str_cat.h"
#include "paygent/plan.h"
#include "server/agents_wire.h"
#include "server/api.h"
#include "server/billing_wire.h"
#include "server/invoicing.h"
#include "server/routes.h"
#include "server/webhooks.h"
#include "server/wire.h"

namespace paygent::server {

namespace {

constexpr std::int64_t kDayNanos = 86'400'000'000'000;
// Ended periods of one customer looked at per pass at most (daily periods over a long lookback).
constexpr int kMaxInvoicePeriods = 400;

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

HttpResponse json_response(int status, std::string body) { return HttpResponse{.status = status, .body = std::move(body)}; }

// A locked or linked metric is a conflict with the stored state (409), not a bad request.
HttpResponse metric_error(const absl::Status& status) {
  if (absl::IsFailedPrecondition(status)) {
    return HttpResponse{.status = 409,
                        .body = str_cat("{\"error\":{\"code\":\"metric_locked\",\"message\":", json_quote(std::string_view(status.message().data(), status.message().size())), "}}")};
  }
  return error_response(status);
}

// Of the agents to be put, the first indicator whose metric is neither stored nor in `also`:
// InvalidArgument naming it as the body does ("agents[0].indicators[1].metric: ...").
absl::Status check_metrics(Storage& storage, const std::string& product_id, std::span<const AgentRecord> agents,
                           std::string_view path, bool in_file, std::span<const MetricRecord> also) {
  std::map<std::string, bool, std::less<>> known;
  for (const MetricRecord& m : also) known[m.identifier] = true;
  for (std::size_t a = 0; a < agents.size(); ++a) {
    for (std::size_t i = 0; i < agents[a].indicators.size(); ++i) {
      const std::string& metric = agents[a].indicators[i].metric;
      if (metric.empty()) continue;
      auto it = known.find(metric);
      if (it == known.end()) {
        absl::StatusOr<MetricRecord> found = storage.find_metric(product_id, metric);
        if (!found.ok() && !absl::IsNotFound(found.status())) return found.status();
        it = known.emplace(metric, found.ok()).first;
      }
      if (!it->second) {
        return absl::InvalidArgumentError(str_cat(in_file ? str_cat(path, "[", a, "].") : std::string(), "indicators[", i,
                                                  "].metric: no billable metric \"", metric, "\""));
      }
    }
  }
  return absl::OkStatus();
}

struct InvoiceQuery {
  std::optional<absl::CivilMonth> month;
  std::optional<TimeRange> range;
};

absl::StatusOr<InvoiceQuery> parse_invoice_query(std::string_view query) {
  static constexpr std::string_view kKnown[] = {"period", "from_ns", "to_ns"};
  absl::StatusOr<std::map<std::string, std::string, std::less<>>> parsed = parse_query(query, kKnown);
  if (!parsed.ok()) return parsed.status();
  InvoiceQuery q;
  if (auto p = parsed->find("period"); p != parsed->end()) {
    absl::CivilMonth month;
    if (p->second.size() != 7 || !absl::ParseCivilTime(p->second, &month) || month.year() < 1970 || month.year() > 2200) {
      return absl::InvalidArgumentError("period: must be a month as 2026-11");
    }
    q.month = month;
  }
  const bool from = parsed->contains("from_ns"), to = parsed->contains("to_ns");
  if (from || to) {
    if (q.month) return absl::InvalidArgumentError("period: give either period or from_ns and to_ns");
    if (!from || !to) return absl::InvalidArgumentError(str_cat(from ? "to_ns" : "from_ns", ": missing"));
    TimeRange r;
    const std::optional<std::int64_t> f = parse_count(parsed->find("from_ns")->second);
    const std::optional<std::int64_t> t = parse_count(parsed->find("to_ns")->second);
    if (!f) return absl::InvalidArgumentError("from_ns: must be a non-negative integer (Unix ns)");
    if (!t) return absl::InvalidArgumentError("to_ns: must be a non-negative integer (Unix ns)");
    if (*t <= *f) return absl::InvalidArgumentError("to_ns: must be after from_ns");
    q.range = TimeRange{.from_ns = *f, .to_ns = *t};
  }
  return q;
}

}  // namespace

HttpResponse Api::list_metrics(const Call& call) {
  absl::StatusOr<std::vector<MetricRecord>> metrics = storage_.list_metrics(call.product_id);
  if (!metrics.ok()) return error_response(metrics.status());
  std::string body = "{\"metrics\":[";
  for (std::size_t i = 0; i < metrics->size(); ++i) str_append(&body, i ? "," : "", metric_json((*metrics)[i]));
  return json_response(200, body + "]}");
}

HttpResponse Api::create_metric(const Call& call) {
  absl::StatusOr<MetricRecord> metric = parse_metric_body(call.request.body, "");
  if (!metric.ok()) return error_response(metric.status());
  if (absl::Status s = storage_.create_metric(call.product_id, *metric); !s.ok()) return error_response(s);
  absl::StatusOr<MetricRecord> stored = storage_.find_metric(call.product_id, metric->identifier);
  if (!stored.ok()) return error_response(stored.status());
  return json_response(201, metric_json(*stored));
}

HttpResponse Api::get_metric(const Call& call) {
  absl::StatusOr<MetricRecord> metric = storage_.find_metric(call.product_id, call.param);
  if (!metric.ok()) return error_response(metric.status());
  return json_response(200, metric_json(*metric));
}

HttpResponse Api::update_metric(const Call& call) {
  absl::StatusOr<MetricRecord> metric = parse_metric_body(call.request.body, call.param);
  if (!metric.ok()) return error_response(metric.status());
  absl::StatusOr<bool> changed = storage_.update_metric(call.product_id, *metric);
  if (!changed.ok()) return metric_error(changed.status());
  absl::StatusOr<MetricRecord> stored = storage_.find_metric(call.product_id, call.param);
  if (!stored.ok()) return error_response(stored.status());
  return json_response(200, str_cat("{\"metric\":", metric_json(*stored), ",\"changed\":", *changed ? "true" : "false", "}"));
}

HttpResponse Api::delete_metric(const Call& call) {
  if (absl::Status s = storage_.delete_metric(call.product_id, call.param); !s.ok()) return metric_error(s);
  return json_response(200, str_cat("{\"deleted\":", json_quote(call.param), "}"));
}

HttpResponse Api::apply_billing(const Call& call) {
  absl::StatusOr<BillingFile> file = parse_billing_file(call.request.body);
  if (!file.ok()) return error_response(file.status());
  // Every reference is checked before anything is written: a bad file changes nothing.
  if (absl::Status s = check_metrics(storage_, call.product_id, file->agents, "agents", true, file->metrics); !s.ok()) {
    return error_response(s);
  }
  // A locked metric the file would change is refused before anything is written too (the storage
  // checks it again in its transaction).
  for (std::size_t i = 0; i < file->metrics.size(); ++i) {
    absl::StatusOr<MetricRecord> stored = storage_.find_metric(call.product_id, file->metrics[i].identifier);
    if (absl::IsNotFound(stored.status())) continue;
    if (!stored.ok()) return error_response(stored.status());
    if (!stored->linked_to.empty() && stored->locked_json != file->metrics[i].locked_json) {
      return metric_error(absl::FailedPreconditionError(
          str_cat("metrics[", i, "]: metric \"", stored->identifier, "\" is linked to indicator ", stored->linked_to.front(),
                  ": its aggregation, field or expression and filters are locked (create a new metric and link it instead)")));
    }
  }
  std::string body = "{\"metrics\":[";
  for (std::size_t i = 0; i < file->metrics.size(); ++i) {
    const MetricRecord& m = file->metrics[i];
    bool changed = true;
    absl::Status created = storage_.create_metric(call.product_id, m);
    if (absl::IsAlreadyExists(created)) {
      absl::StatusOr<bool> updated = storage_.update_metric(call.product_id, m);
      if (!updated.ok()) {
        return metric_error(absl::Status(updated.status().code(), str_cat("metrics[", i, "]: ", updated.status().message())));
      }
      changed = *updated;
    } else if (!created.ok()) {
      return error_response(created);
    }
    str_append(&body, i ? "," : "", "{\"identifier\":", json_quote(m.identifier), ",\"changed\":", changed ? "true" : "false", "}");
  }
  body += "],\"agents\":[";
  for (std::size_t i = 0; i < file->agents.size(); ++i) {
    absl::StatusOr<bool> changed = storage_.put_agent(call.product_id, file->agents[i]);
    if (!changed.ok()) return error_response(linked_metric_error(changed.status()));
    str_append(&body, i ? "," : "", "{\"agentId\":", json_quote(file->agents[i].agent_id),
               ",\"changed\":", *changed ? "true" : "false", "}");
  }
  return json_response(200, body + "]}");
}

absl::Status Api::check_agent_metrics(const std::string& product_id, const AgentRecord& agent) {
  return check_metrics(storage_, product_id, std::span<const AgentRecord>(&agent, 1), "", false, {});
}

absl::StatusOr<Api::RenderedInvoice> Api::invoice_for(const std::string& product_id, const UserRecord& user,
                                                      billing::BillingPeriod period, const ProductBilling& billing) {
  // A customer with a credit wallet: its CREDITS lines show what the wallet's ledger took for
  // this period, settled first so that usage stored since is in it (docs/billing.md). Only one of
  // the customer's billing periods is: a range of any other shape is priced without the wallet,
  // so that no read can move it.
  const billing::BillingPeriod own = billing_period_at(user, absl::FromUnixNanos(period.start_ns));
  const bool billing_period = own.start_ns == period.start_ns && own.end_ns == period.end_ns;
  std::optional<std::vector<WalletCharge>> ledger;
  if (billing.has_credits && billing_period) {
    absl::StatusOr<std::optional<WalletRecord>> wallet =
        settle_customer_wallet(storage_, product_id, billing, user.user_id, period, options_.clock());
    if (!wallet.ok()) return wallet.status();
    if (wallet->has_value()) {
      absl::StatusOr<std::vector<WalletCharge>> charges = storage_.wallet_charges(
          product_id, user.user_id, TimeRange{.from_ns = period.start_ns, .to_ns = period.end_ns});
      if (!charges.ok()) return charges.status();
      ledger = *std::move(charges);
    }
  }
  absl::StatusOr<BuiltInvoice> built = build_invoice(
      billing, period, [&](TimeRange range, absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) {
        return storage_.scan_billing_events(product_id, user.user_id, range, fn);
      });
  if (!built.ok()) return built.status();
  absl::StatusOr<billing::Invoice> invoice =
      ledger ? built->builder.preview_with_ledger([&](std::string_view indicator) { return ledger_used(*ledger, indicator); })
             : built->builder.preview();
  if (!invoice.ok()) return invoice.status();
  return RenderedInvoice{.invoice = *std::move(invoice), .unpriced_events = built->unpriced_events};
}

absl::StatusOr<int> Api::raise_invoice_ready(absl::Time now) {
  absl::StatusOr<std::vector<std::string>> products = storage_.products_wanting(AlertType::kInvoiceReady);
  if (!products.ok()) return products.status();
  const std::int64_t now_ns = absl::ToUnixNanos(now);
  const std::int64_t grace_ns = absl::ToInt64Nanoseconds(options_.invoice_grace);
  const std::int64_t lookback_ns = absl::ToInt64Nanoseconds(options_.invoice_lookback);
  int raised = 0;
  absl::Status first_error;  // one product's failure does not hold back the others
  for (const std::string& product_id : *products) {
    absl::StatusOr<int> n = raise_invoice_ready_of(product_id, now_ns, grace_ns, lookback_ns);
    if (n.ok()) {
      raised += *n;
    } else if (first_error.ok()) {
      first_error = absl::Status(n.status().code(), str_cat("product ", product_id, ": ", n.status().message()));
    }
  }
  if (raised > 0 && options_.on_alerts) options_.on_alerts();
  if (!first_error.ok()) return first_error;
  return raised;
}

absl::StatusOr<int> Api::raise_invoice_ready_of(const std::string& product_id, std::int64_t now_ns,
                                                std::int64_t grace_ns, std::int64_t lookback_ns) {
  // The customers with billing events in the last year (a period is at most a year long; the
  // profit rollup answers cheaply), then per ended period those with events in it.
  const TimeRange recent{.from_ns = std::max<std::int64_t>(0, now_ns - grace_ns - lookback_ns - 366 * kDayNanos),
                         .to_ns = now_ns};
  absl::StatusOr<std::vector<ProfitRow>> customers = storage_.profit_report(product_id, recent, ProfitGroup::kCustomer);
  if (!customers.ok()) return customers.status();
  std::map<std::pair<std::int64_t, std::int64_t>, std::set<std::string, std::less<>>> billed_in;  // by ended period
  std::optional<ProductBilling> billing;
  int raised = 0;
  for (const ProfitRow& c : *customers) {
    if (c.billing_events == 0) continue;
    absl::StatusOr<UserRecord> user = storage_.find_user(product_id, c.key);
    if (!user.ok()) continue;
    // Every period of its that ended at least `grace` ago and at most `grace + lookback` ago,
    // latest first. (Before a subscription's first period starts, that period stands for the
    // time before it: not ended, so the walk stops there.)
    const billing::BillingPeriod current = billing_period_at(*user, absl::FromUnixNanos(now_ns - grace_ns));
    std::int64_t before = current.start_ns;
    for (int k = 0; k < kMaxInvoicePeriods; ++k) {
      const billing::BillingPeriod ended = billing_period_at(*user, absl::FromUnixNanos(before - 1));
      if (ended.end_ns <= ended.start_ns || ended.start_ns >= before || ended.end_ns > now_ns - grace_ns ||
          ended.end_ns + grace_ns + lookback_ns <= now_ns) {
        break;
      }
      before = ended.start_ns;
      // Customers without a billing event in that period have nothing to bill: known from the
      // rollup, once per distinct period, not by rendering each one's invoice every minute.
      auto [in, fresh] = billed_in.try_emplace({ended.start_ns, ended.end_ns});
      if (fresh) {
        absl::StatusOr<std::vector<ProfitRow>> rows = storage_.profit_report(
            product_id, TimeRange{.from_ns = ended.start_ns, .to_ns = ended.end_ns}, ProfitGroup::kCustomer);
        if (!rows.ok()) return rows.status();
        for (const ProfitRow& r : *rows) {
          if (r.billing_events > 0) in->second.insert(r.key);
        }
      }
      if (!in->second.contains(user->user_id)) continue;
      // Raised already (the common case, every minute of the week): no invoice to render.
      absl::StatusOr<bool> done = storage_.alert_raised(product_id, invoice_ready_key(user->user_id, ended));
      if (!done.ok()) return done.status();
      if (*done) continue;
      if (!billing) {
        absl::StatusOr<ProductBilling> b = load_product_billing(storage_, product_id);
        if (!b.ok()) return b.status();
        billing = *std::move(b);
      }
      absl::StatusOr<RenderedInvoice> rendered = invoice_for(product_id, *user, ended, *billing);
      if (!rendered.ok()) continue;  // a period that cannot be priced: its preview names why
      absl::StatusOr<bool> stored =
          storage_.enqueue_alert(product_id, invoice_ready_alert(product_id, user->user_id, rendered->invoice, now_ns));
      if (!stored.ok()) return stored.status();
      if (*stored) ++raised;
    }
  }
  return raised;
}

HttpResponse Api::customer_invoice(const Call& call) {
  absl::StatusOr<InvoiceQuery> q = parse_invoice_query(query_of(call.request.target));
  if (!q.ok()) return error_response(q.status());
  absl::StatusOr<UserRecord> user = storage_.find_user(call.product_id, call.param);
  if (!user.ok()) return error_response(absl::NotFoundError(str_cat("no customer \"", call.param, "\"")));

  // The period: the range asked; else the customer's subscription period (the one containing the
  // asked month's last instant: the one that starts in it), else the UTC calendar month.
  std::string label;
  billing::BillingPeriod period;
  if (q->range) {
    period = billing::BillingPeriod{.start_ns = q->range->from_ns, .end_ns = q->range->to_ns};
  } else {
    const absl::Time at =
        q->month ? absl::FromCivil(*q->month + 1, absl::UTCTimeZone()) - absl::Nanoseconds(1) : options_.clock();
    period = billing_period_at(*user, at);
    label = absl::FormatCivilTime(absl::ToCivilMonth(absl::FromUnixNanos(period.start_ns), absl::UTCTimeZone()));
    if (user->subscription) label = "";  // not a calendar month
  }

  absl::StatusOr<ProductBilling> billing = load_product_billing(storage_, call.product_id);
  if (!billing.ok()) return error_response(billing.status());
  absl::StatusOr<RenderedInvoice> rendered = invoice_for(call.product_id, *user, period, *billing);
  if (!rendered.ok()) return error_response(rendered.status());
  InvoiceView view{.customer = call.param,
                   .period_label = label,
                   .invoice = &rendered->invoice,
                   .agents = billing->agents,
                   .indicators = billing->indicator_names,
                   .metric_ids = billing->metric_ids,
                   .unpriced_events = rendered->unpriced_events};
  return json_response(200, invoice_json(view));
}

}  // namespace paygent::server
