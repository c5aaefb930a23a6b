// paygentd's webhooks API and forecast (docs/webhooks.md), routes of Api's route table
// (server/api.cpp):
//   POST   /api/v1/webhooks                    {"url", "events"?} -> 201 endpoint with its secret (once)
//   GET    /api/v1/webhooks                    -> {"webhooks": [endpoint without secret, ...]}
//   DELETE /api/v1/webhooks/{id}               -> {"deleted": id}
//   GET    /api/v1/webhooks/{id}/deliveries?limit=N -> {"deliveries": [...]}, newest first
//   GET    /api/v1/forecast?within_s=N         -> {"forecasts": [...]}: users predicted to reach their cap
//   GET    /api/v1/config/alerts                -> {"wallet_low_percent": N}
//   PUT    /api/v1/config/alerts                {"wallet_low_percent": 1..99} -> the same
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "server/api.h"
#include "server/routes.h"
#include "server/webhooks.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

HttpResponse json_response(int status, std::string body) { return HttpResponse{.status = status, .body = std::move(body)}; }

// Most endpoints per product: each alert is written once per endpoint in the ingest's transaction.
constexpr std::size_t kMaxWebhooksPerProduct = 20;
// Deliveries a log shows by default, and at most.
constexpr std::int64_t kDefaultLogRows = 100;
constexpr std::int64_t kMaxLogRows = 1000;
// Users the forecast reads per storage call, and at most per request (the rest: "truncated").
constexpr std::size_t kForecastPage = 500;
constexpr std::size_t kMaxForecastUsers = 100'000;

std::string events_json(std::uint32_t mask) {
  std::string out = "[";
  bool first = true;
  for (AlertType t : kAlertTypes) {
    if ((mask & static_cast<std::uint32_t>(t)) == 0) continue;
    str_append(&out, first ? "" : ",", json_quote(alert_type_name(t)));
    first = false;
  }
  return out + "]";
}

std::string endpoint_json(const WebhookEndpoint& e, bool with_secret) {
  std::string out = str_cat("{\"id\":", json_quote(e.id), ",\"url\":", json_quote(e.url),
                            ",\"events\":", events_json(e.event_mask), ",\"created_ns\":", e.created_ns);
  if (with_secret) str_append(&out, ",\"secret\":", json_quote(e.secret));
  return out + "}";
}

// An optional non-negative integer query parameter `name` of `params`, at most `max`.
absl::StatusOr<std::optional<std::int64_t>> count_param(const std::map<std::string, std::string, std::less<>>& params,
                                                        std::string_view name, std::int64_t min, std::int64_t max) {
  auto it = params.find(name);
  if (it == params.end()) return std::nullopt;
  const std::optional<std::int64_t> value = parse_count(it->second);
  if (!value || *value < min || *value > max) {
    return absl::InvalidArgumentError(str_cat(name, ": must be an integer from ", min, " to ", max));
  }
  return value;
}

}  // namespace

HttpResponse Api::create_webhook(const Call& call) {
  absl::StatusOr<NewWebhook> request = parse_new_webhook(call.request.body);
  if (!request.ok()) return error_response(request.status());
  if (absl::StatusOr<WebhookUrl> url = parse_webhook_url(request->url); !url.ok()) return error_response(url.status());
  WebhookEndpoint endpoint;
  endpoint.url = request->url;
  endpoint.event_mask = request->events.empty() ? kAllAlertTypes : 0;
  for (std::size_t i = 0; i < request->events.size(); ++i) {
    const std::optional<AlertType> type = parse_alert_type(request->events[i]);
    if (!type) {
      return error_response(400, "invalid_argument",
                            str_cat("events[", i, "]: must be soft_gate, hard_gate, delivery_failure, forecast, wallet_low, wallet_empty or invoice_ready"));
    }
    endpoint.event_mask |= static_cast<std::uint32_t>(*type);
  }
  absl::StatusOr<std::vector<WebhookEndpoint>> existing = storage_.list_webhooks(call.product_id);
  if (!existing.ok()) return error_response(existing.status());
  if (existing->size() >= kMaxWebhooksPerProduct) {
    return error_response(400, "invalid_argument",
                          str_cat("url: a product has at most ", kMaxWebhooksPerProduct, " webhooks"));
  }
  absl::StatusOr<std::string> id = generate_webhook_id();
  if (!id.ok()) return error_response(id.status());
  absl::StatusOr<std::string> secret = generate_webhook_secret();
  if (!secret.ok()) return error_response(secret.status());
  endpoint.id = *std::move(id);
  endpoint.secret = *std::move(secret);
  endpoint.created_ns = absl::ToUnixNanos(options_.clock());
  if (absl::Status s = storage_.create_webhook(call.product_id, endpoint); !s.ok()) return error_response(s);
  return json_response(201, endpoint_json(endpoint, true));
}

HttpResponse Api::list_webhooks(const Call& call) {
  absl::StatusOr<std::vector<WebhookEndpoint>> endpoints = storage_.list_webhooks(call.product_id);
  if (!endpoints.ok()) return error_response(endpoints.status());
  std::string body = "{\"webhooks\":[";
  for (std::size_t i = 0; i < endpoints->size(); ++i) {
    str_append(&body, i ? "," : "", endpoint_json((*endpoints)[i], false));
  }
  return json_response(200, body + "]}");
}

HttpResponse Api::delete_webhook(const Call& call) {
  if (absl::Status s = storage_.delete_webhook(call.product_id, call.param); !s.ok()) return error_response(s);
  return json_response(200, str_cat("{\"deleted\":", json_quote(call.param), "}"));
}

HttpResponse Api::webhook_deliveries(const Call& call) {
  static constexpr std::string_view kKnown[] = {"limit"};
  absl::StatusOr<std::map<std::string, std::string, std::less<>>> params =
      parse_query(query_of(call.request.target), kKnown);
  if (!params.ok()) return error_response(params.status());
  absl::StatusOr<std::optional<std::int64_t>> limit = count_param(*params, "limit", 1, kMaxLogRows);
  if (!limit.ok()) return error_response(limit.status());
  absl::StatusOr<std::vector<WebhookDeliveryLog>> log = storage_.webhook_deliveries(
      call.product_id, call.param, static_cast<std::size_t>(limit->value_or(kDefaultLogRows)));
  if (!log.ok()) return error_response(log.status());
  std::string body = "{\"deliveries\":[";
  for (std::size_t i = 0; i < log->size(); ++i) {
    const WebhookDeliveryLog& d = (*log)[i];
    str_append(&body, i ? "," : "", "{\"delivery_id\":", json_quote(d.delivery_id),
               ",\"event_id\":", json_quote(d.event_id), ",\"type\":", json_quote(d.type),
               ",\"status\":", json_quote(d.status), ",\"attempts\":", d.attempts, ",\"created_ns\":", d.created_ns,
               ",\"last_attempt_ns\":", d.last_attempt_ns, ",\"next_attempt_ns\":", d.next_attempt_ns,
               ",\"last_http_status\":", d.last_http_status, ",\"last_error\":", json_quote(d.last_error), "}");
  }
  return json_response(200, body + "]}");
}

HttpResponse Api::forecast(const Call& call) {
  static constexpr std::string_view kKnown[] = {"within_s"};
  absl::StatusOr<std::map<std::string, std::string, std::less<>>> params =
      parse_query(query_of(call.request.target), kKnown);
  if (!params.ok()) return error_response(params.status());
  absl::StatusOr<std::optional<std::int64_t>> within_s = count_param(*params, "within_s", 1, 9'000'000'000);
  if (!within_s.ok()) return error_response(within_s.status());
  absl::StatusOr<std::shared_ptr<const ProductPlans>> plans = plans_of(call.product_id);
  if (!plans.ok()) return error_response(plans.status());
  const ProductPlans& product_plans = **plans;
  const absl::Time now = options_.clock();
  const std::int64_t now_ns = absl::ToUnixNanos(now);
  struct Row {
    std::string user_id;
    std::string_view limit;  // "total_spend" (the cap) or "plan_price" (what the plan charges)
    std::int64_t reach_ns, spend, cap;
    TimeRange period;
  };
  std::vector<Row> rows;
  std::string after;
  std::size_t scanned = 0;
  bool truncated = false;
  // Every user of the product, a page at a time: their cost this period, then the arithmetic.
  // Without a period cap in any plan no user can reach one: their usage is not read.
  const PlanConfig* config = product_plans.config_or_null();
  const bool any_cap = config != nullptr && std::any_of(config->plans.begin(), config->plans.end(), [](const Plan& p) {
                         return p.max_spend_per_period.has_value() || p.price.has_value();
                       });
  auto period_of = [&product_plans, now](const UserRecord& user) { return period_range_of(user, product_plans, now); };
  for (;;) {
    std::vector<UserPeriodCost> page;
    if (any_cap) {
      absl::StatusOr<std::vector<UserPeriodCost>> costs =
          storage_.period_costs(call.product_id, after, kForecastPage, period_of);
      if (!costs.ok()) return error_response(costs.status());
      page = *std::move(costs);
    } else {
      absl::StatusOr<std::vector<std::string>> users = storage_.list_user_ids(call.product_id, after, kForecastPage);
      if (!users.ok()) return error_response(users.status());
      for (std::string& id : *users) page.push_back(UserPeriodCost{.user = {.user_id = std::move(id)}});
    }
    if (page.empty()) break;
    if (scanned >= kMaxForecastUsers) {
      truncated = true;
      break;
    }
    after = page.back().user.user_id;
    scanned += page.size();
    for (UserPeriodCost& u : page) {
      auto add = [&](std::string_view limit, std::int64_t cap, std::optional<std::int64_t> reach) {
        if (!reach) return;
        if (*within_s && (*reach - now_ns) / 1'000'000'000 >= **within_s) return;
        rows.push_back(Row{u.user.user_id, limit, *reach, u.cost_nanos, cap, u.period});
      };
      if (const std::optional<std::int64_t> cap = period_cap_nanos(config, u.user)) {
        add("total_spend", *cap, forecast_reach_ns(u.cost_nanos, *cap, u.period.from_ns, u.period.to_ns, now_ns));
      }
      if (const std::optional<std::int64_t> price = period_price_nanos(config, u.user)) {
        add("plan_price", *price, price_reach_ns(u.cost_nanos, *price, u.period.from_ns, u.period.to_ns, now_ns));
      }
    }
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    if (a.reach_ns != b.reach_ns) return a.reach_ns < b.reach_ns;
    return a.user_id != b.user_id ? a.user_id < b.user_id : a.limit < b.limit;
  });
  std::string body = str_cat("{\"now_ns\":", now_ns, ",\"forecasts\":[");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    str_append(&body, i ? "," : "", "{\"user_id\":", json_quote(r.user_id), ",\"limit\":", json_quote(r.limit),
               ",\"spend_nanos\":", r.spend, ",\"cap_nanos\":", r.cap, ",\"period_start_ns\":", r.period.from_ns,
               ",\"period_end_ns\":", r.period.to_ns, ",\"predicted_reach_ns\":", r.reach_ns,
               ",\"predicted_reach_at\":", json_quote(rfc3339_utc(r.reach_ns)), "}");
  }
  str_append(&body, "],\"users_scanned\":", scanned, ",\"truncated\":", truncated ? "true" : "false", "}");
  return json_response(200, std::move(body));
}

HttpResponse Api::get_alert_settings(const Call& call) {
  absl::StatusOr<AlertSettings> settings = storage_.alert_settings(call.product_id);
  if (!settings.ok()) return error_response(settings.status());
  return json_response(200, str_cat("{\"wallet_low_percent\":", settings->wallet_low_percent, "}"));
}

HttpResponse Api::put_alert_settings(const Call& call) {
  absl::StatusOr<AlertSettings> settings = parse_alert_settings(call.request.body);
  if (!settings.ok()) return error_response(settings.status());
  if (absl::Status s = storage_.put_alert_settings(call.product_id, *settings); !s.ok()) return error_response(s);
  return json_response(200, str_cat("{\"wallet_low_percent\":", settings->wallet_low_percent, "}"));
}

void Api::alert_refused_batch(const std::string& product_id, const HttpResponse& response) {
  const WebhookAlert alert = delivery_failure_alert(product_id, response.status, response.body,
                                                    absl::ToUnixNanos(options_.clock()));
  absl::StatusOr<bool> stored = storage_.enqueue_alert(product_id, alert);
  if (stored.ok() && *stored && options_.on_alerts) options_.on_alerts();
}

}  // namespace paygent::server
