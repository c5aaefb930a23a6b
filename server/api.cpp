// paygentd's API (see server/api.h and docs/wire.md).
#include "server/api.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "paygent/plan.h"
#include "server/api_key.h"
#include "server/billing_wire.h"
#include "server/invoicing.h"
#include "server/webhooks.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

// Every reply says the wire version this paygentd reads (docs/wire.md, "Versions"), so that a
// library can tell a refusal of its content from a refusal by an older paygentd.
void add_wire_version(HttpResponse& response) {
  response.headers.emplace_back(std::string(::paygent::internal::kWireVersionHeader),
                                std::to_string(::paygent::internal::kWireVersion));
}

static HttpResponse json_response(int status, std::string body) { return HttpResponse{.status = status, .body = std::move(body)}; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// The token of an "Authorization: Bearer <token>" header, or nullopt.
std::optional<std::string_view> bearer_token(std::string_view header) {
  header = trim(header);
  constexpr std::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size() || !iequals(header.substr(0, kScheme.size()), kScheme) ||
      (header[kScheme.size()] != ' ' && header[kScheme.size()] != '\t')) {
    return std::nullopt;
  }
  std::string_view token = trim(header.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  return token;
}

// A header value fit to quote in an error message: UTF-8 and short, else a placeholder.
std::string_view quotable(std::string_view text) {
  if (text.size() > 100 || !valid_utf8(text)) return "(unprintable)";
  return text;
}

bool is_json_content_type(std::string_view content_type) {
  const std::size_t semicolon = content_type.find(';');
  return iequals(trim(content_type.substr(0, semicolon)), "application/json");
}

// A version of a stored plan config: 16 hex digits of its text's FNV-1a hash ("" for none).
// The syncer compares it across ingest replies and re-reads the plans when it changes.
std::string plans_version(const std::optional<std::string>& json) {
  if (!json) return "";
  std::uint64_t h = 14695981039346656037ULL;
  for (const char c : *json) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

}  // namespace

namespace {

// The user's current period (docs/wire.md): from their subscription, else the calendar rule of
// the default plan, else the UTC calendar month.
template <class ProductPlans>
Period current_period(const UserRecord& user, const ProductPlans& plans, absl::Time now) {
  if (user.subscription) {
    return subscription_period(absl::FromUnixNanos(user.subscription->period_start_ns),
                               absl::FromUnixNanos(user.subscription->period_end_ns), now);
  }
  return calendar_period(plans.default_period.value_or(PeriodRule::kMonth), now);
}

template <class ProductPlans>
TimeRange current_range(const UserRecord& user, const ProductPlans& plans, absl::Time now) {
  const Period period = current_period(user, plans, now);
  return TimeRange{.from_ns = absl::ToUnixNanos(period.start), .to_ns = absl::ToUnixNanos(period.end)};
}

// The per-user usage object of docs/wire.md over `period`, from the user's totals by model; with
// plan, calls and `sessions` when `sessions` is given (GET .../usage), the ingest reply's shorter
// form otherwise. `config` is the product's plan config, or nullptr when it has none.
absl::StatusOr<std::string> usage_object(const UserRecord& user, const PlanConfig* config, TimeRange period,
                                         const GroupedTotals& models, std::span<const SoftGateFired> soft_gates,
                                         const GroupedTotals* sessions) {
  const bool detailed = sessions != nullptr;
  Totals total;
  for (const auto& [model, t] : models) {
    if (__builtin_add_overflow(total.cost_nanos, t.cost_nanos, &total.cost_nanos) ||
        __builtin_add_overflow(total.calls, t.calls, &total.calls)) {
      return absl::InternalError("usage: the period's spend overflows int64");
    }
  }
  std::string out = "{";
  if (detailed) {
    std::string plan = "null";
    if (user.subscription) {
      plan = json_quote(user.subscription->plan);
    } else if (config != nullptr && !config->default_plan.empty()) {
      plan = json_quote(config->default_plan);
    }
    str_append(&out, "\"user_id\":", json_quote(user.user_id), ",\"plan\":", plan, ",");
  }
  str_append(&out, "\"period_start_ns\":", period.from_ns, ",\"period_end_ns\":", period.to_ns,
             ",\"spend_nanos\":", total.cost_nanos);
  // The subscription, so that every application process puts the user on the same plan and period.
  if (user.subscription) {
    str_append(&out, ",\"subscription\":{\"plan\":", json_quote(user.subscription->plan),
               ",\"period_start_ns\":", user.subscription->period_start_ns,
               ",\"period_end_ns\":", user.subscription->period_end_ns, "}");
  } else {
    out += ",\"subscription\":null";
  }
  if (detailed) str_append(&out, ",\"calls\":", total.calls);
  out += ",\"models\":{";
  bool first = true;
  for (const auto& [model, t] : models) {
    str_append(&out, first ? "" : ",", json_quote(model), ":{\"input_tokens\":", t.input_tokens,
               ",\"output_tokens\":", t.output_tokens, ",\"cost_nanos\":", t.cost_nanos, ",\"calls\":", t.calls,
               "}");
    first = false;
  }
  out += "}";
  // The soft-gate thresholds fired in the period (docs/wire.md, "Soft gates"), at most
  // kMaxUsageSoftGates: every application process leaves them unfired from then on.
  out += ",\"soft_gates\":[";
  for (std::size_t i = 0; i < soft_gates.size(); ++i) {
    const SoftGateFired& g = soft_gates[i];
    str_append(&out, i ? "," : "", "{\"limit\":", json_quote(g.limit_key), ",\"period_start_ns\":", g.period_start_ns,
               ",\"threshold_ppm\":", g.threshold_ppm, "}");
  }
  out += "]";
  if (detailed) {
    out += ",\"sessions\":{";
    first = true;
    for (const auto& [session, t] : *sessions) {
      str_append(&out, first ? "" : ",", json_quote(session), ":{\"spend_nanos\":", t.cost_nanos,
                 ",\"calls\":", t.calls, "}");
      first = false;
    }
    out += "}";
  }
  out += "}";
  return out;
}

}  // namespace

TimeRange Api::period_range_of(const UserRecord& user, const ProductPlans& plans, absl::Time now) {
  return current_range(user, plans, now);
}

static std::string status_message(const absl::Status& status) {
  return std::string(status.message().data(), status.message().size());
}

HttpResponse error_response(int status, std::string_view code, std::string_view message) {
  return HttpResponse{.status = status, .body = error_body(code, message)};
}

// The HTTP status and wire code of a failed absl::Status (docs/wire.md's table).
HttpResponse error_response(const absl::Status& status) {
  const std::string message = status_message(status);
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return error_response(400, "invalid_argument", message);
    case absl::StatusCode::kUnauthenticated: return error_response(401, "unauthenticated", message);
    case absl::StatusCode::kPermissionDenied: return error_response(403, "permission_denied", message);
    case absl::StatusCode::kNotFound: return error_response(404, "not_found", message);
    case absl::StatusCode::kAlreadyExists: return error_response(409, "already_exists", message);
    case absl::StatusCode::kResourceExhausted: return error_response(429, "resource_exhausted", message);
    case absl::StatusCode::kUnavailable: return error_response(503, "unavailable", message);
    default: return error_response(500, "internal", message);
  }
}

std::string error_body(std::string_view code, std::string_view message) {
  return str_cat("{\"error\":{\"code\":", json_quote(code), ",\"message\":", json_quote(message), "}}");
}

std::span<const Route<Api::Handler>> Api::routes() {
  // Every endpoint of paygentd. The pattern is the metrics label; docs/wire.md and
  // docs/tracking.md describe each.
  constexpr std::string_view kUserId = "user id in the path";
  constexpr std::string_view kAgentId = "agent id in the path";
  constexpr std::string_view kMetricId = "metric identifier in the path";
  constexpr std::string_view kCustomerId = "customer id in the path";
  constexpr std::string_view kWebhookId = "webhook id in the path";
  constexpr std::string_view kFile = "file name in the path";
  static constexpr Route<Handler> kRoutes[] = {
      {"GET", "/healthz", RouteAuth::kNone, RouteBody::kNone, &Api::healthz},
      {"GET", "/metrics", RouteAuth::kNone, RouteBody::kNone, &Api::metrics},
      {"POST", "/api/v1/products", RouteAuth::kAdmin, RouteBody::kNone, &Api::create_product},
      {"POST", "/api/v1/users", RouteAuth::kProduct, RouteBody::kJson, &Api::create_user},
      {"POST", "/api/v1/users/{id}/subscription", RouteAuth::kProduct, RouteBody::kJson, &Api::set_subscription, kUserId},
      {"GET", "/api/v1/users/{id}/usage", RouteAuth::kProduct, RouteBody::kNone, &Api::user_usage, kUserId},
      {"GET", "/api/v1/config/plans", RouteAuth::kProduct, RouteBody::kNone, &Api::get_plans},
      {"POST", "/api/v1/config/plans", RouteAuth::kProduct, RouteBody::kJson, &Api::put_plans},
      {"POST", "/api/v1/events:batch", RouteAuth::kProduct, RouteBody::kJson, &Api::ingest},
      {"POST", "/api/v1/usage:query", RouteAuth::kProduct, RouteBody::kJson, &Api::usage_query},
      {"GET", "/api/v1/reports/usage", RouteAuth::kProduct, RouteBody::kNone, &Api::report},
      {"POST", "/api/v1/leases", RouteAuth::kProduct, RouteBody::kJson, &Api::grant_leases},
      // The tracking API (server/tracking_api.cpp).
      {"POST", "/api/v1/customers/create-or-get", RouteAuth::kProduct, RouteBody::kJson, &Api::track_customer},
      {"POST", "/api/v2/usage", RouteAuth::kProduct, RouteBody::kJson, &Api::track_usage},
      {"POST", "/api/v1/indicator", RouteAuth::kProduct, RouteBody::kJson, &Api::track_indicator},
      {"POST", "/api/v1/stt", RouteAuth::kProduct, RouteBody::kJson, &Api::track_stt},
      {"POST", "/api/v1/tts", RouteAuth::kProduct, RouteBody::kJson, &Api::track_tts},
      {"POST", "/api/v1/sts", RouteAuth::kProduct, RouteBody::kJson, &Api::track_sts},
      {"POST", "/api/v1/video", RouteAuth::kProduct, RouteBody::kJson, &Api::track_video},
      {"POST", "/api/v1/external-cost", RouteAuth::kProduct, RouteBody::kJson, &Api::track_external},
      {"POST", "/api/v1/voice/session", RouteAuth::kProduct, RouteBody::kJson, &Api::voice_session},
      {"POST", "/api/v1/voice/stt", RouteAuth::kProduct, RouteBody::kJson, &Api::voice_stt},
      {"POST", "/api/v1/voice/llm", RouteAuth::kProduct, RouteBody::kJson, &Api::voice_llm},
      {"POST", "/api/v1/voice/tts", RouteAuth::kProduct, RouteBody::kJson, &Api::voice_tts},
      {"POST", "/api/v1/voice/indicator", RouteAuth::kProduct, RouteBody::kJson, &Api::voice_indicator},
      // The agents API and the profit report (server/agents_api.cpp, docs/tracking.md "Revenue").
      {"GET", "/api/v1/agents", RouteAuth::kProduct, RouteBody::kNone, &Api::list_agents},
      {"POST", "/api/v1/agents:apply", RouteAuth::kProduct, RouteBody::kJson, &Api::apply_agents},
      {"GET", "/api/v1/agents/{id}", RouteAuth::kProduct, RouteBody::kNone, &Api::get_agent, kAgentId},
      {"PUT", "/api/v1/agents/{id}", RouteAuth::kProduct, RouteBody::kJson, &Api::put_agent, kAgentId},
      {"DELETE", "/api/v1/agents/{id}", RouteAuth::kProduct, RouteBody::kNone, &Api::delete_agent, kAgentId},
      {"GET", "/api/v1/reports/profit", RouteAuth::kProduct, RouteBody::kNone, &Api::profit_report},
      {"GET", "/api/v1/config/report-tags", RouteAuth::kProduct, RouteBody::kNone, &Api::get_report_tags},
      {"PUT", "/api/v1/config/report-tags", RouteAuth::kProduct, RouteBody::kJson, &Api::put_report_tags},
      // The billing API (server/billing_api.cpp, docs/billing.md).
      {"GET", "/api/v1/billable-metrics", RouteAuth::kProduct, RouteBody::kNone, &Api::list_metrics},
      {"POST", "/api/v1/billable-metrics", RouteAuth::kProduct, RouteBody::kJson, &Api::create_metric},
      {"GET", "/api/v1/billable-metrics/{id}", RouteAuth::kProduct, RouteBody::kNone, &Api::get_metric, kMetricId},
      {"PUT", "/api/v1/billable-metrics/{id}", RouteAuth::kProduct, RouteBody::kJson, &Api::update_metric, kMetricId},
      {"DELETE", "/api/v1/billable-metrics/{id}", RouteAuth::kProduct, RouteBody::kNone, &Api::delete_metric, kMetricId},
      {"POST", "/api/v1/billing:apply", RouteAuth::kProduct, RouteBody::kJson, &Api::apply_billing},
      {"GET", "/api/v1/customers/{id}/invoice", RouteAuth::kProduct, RouteBody::kNone, &Api::customer_invoice, kCustomerId},
      // Credit wallets (server/wallets_api.cpp, docs/billing.md).
      {"POST", "/api/v1/customers/{id}/wallet/top-ups", RouteAuth::kProduct, RouteBody::kJson, &Api::top_up_wallet,
       kCustomerId},
      {"GET", "/api/v1/customers/{id}/wallet", RouteAuth::kProduct, RouteBody::kNone, &Api::customer_wallet, kCustomerId},
      // Webhooks and the forecast (server/webhooks_api.cpp, docs/webhooks.md).
      {"POST", "/api/v1/webhooks", RouteAuth::kProduct, RouteBody::kJson, &Api::create_webhook},
      {"GET", "/api/v1/webhooks", RouteAuth::kProduct, RouteBody::kNone, &Api::list_webhooks},
      {"DELETE", "/api/v1/webhooks/{id}", RouteAuth::kProduct, RouteBody::kNone, &Api::delete_webhook, kWebhookId},
      {"GET", "/api/v1/webhooks/{id}/deliveries", RouteAuth::kProduct, RouteBody::kNone, &Api::webhook_deliveries,
       kWebhookId},
      {"GET", "/api/v1/forecast", RouteAuth::kProduct, RouteBody::kNone, &Api::forecast},
      {"GET", "/api/v1/config/alerts", RouteAuth::kProduct, RouteBody::kNone, &Api::get_alert_settings},
      {"PUT", "/api/v1/config/alerts", RouteAuth::kProduct, RouteBody::kJson, &Api::put_alert_settings},
      // The dashboard and the customer portal (server/dashboard_api.cpp, docs/dashboard.md).
      {"GET", "/dashboard", RouteAuth::kNone, RouteBody::kNone, &Api::dashboard_page},
      {"GET", "/dashboard/{file}", RouteAuth::kNone, RouteBody::kNone, &Api::dashboard_page, kFile},
      {"GET", "/portal", RouteAuth::kNone, RouteBody::kNone, &Api::dashboard_page},
      {"POST", "/api/v1/dashboard/session", RouteAuth::kNone, RouteBody::kJson, &Api::dashboard_sign_in},
      {"GET", "/api/v1/dashboard/session", RouteAuth::kProduct, RouteBody::kNone, &Api::dashboard_session},
      {"DELETE", "/api/v1/dashboard/session", RouteAuth::kNone, RouteBody::kNone, &Api::dashboard_sign_out},
      {"POST", "/api/v1/customers/{id}/portal-tokens", RouteAuth::kProduct, RouteBody::kJson, &Api::create_portal_token,
       kCustomerId},
      {"GET", "/api/v1/portal/usage", RouteAuth::kPortal, RouteBody::kNone, &Api::user_usage},
      {"GET", "/api/v1/portal/invoice", RouteAuth::kPortal, RouteBody::kNone, &Api::customer_invoice},
      {"GET", "/api/v1/portal/wallet", RouteAuth::kPortal, RouteBody::kNone, &Api::customer_wallet},
  };
  return kRoutes;
}

Api::Api(Storage& storage, Metrics& metrics, ApiOptions options)
    : storage_(storage), metrics_(metrics), options_(std::move(options)), sessions_(storage) {}

HttpResponse Api::handle_request(const HttpRequest& request) {
  const auto start = std::chrono::steady_clock::now();
  const std::string_view target = request.target;
  const std::string_view path = target.substr(0, target.find('?'));
  std::string_view label = "other";
  HttpResponse response;
  absl::StatusOr<RouteMatch<Handler>> match =
      find_route(routes(), request.method, valid_utf8(path) ? path : std::string_view("(not UTF-8)"));
  if (!match.ok()) {
    response = error_response(match.status());
  } else {
    label = match->pattern;
    response = dispatch(request, *match);
  }
  add_wire_version(response);
  // The API's answers (a dashboard session's data among them) are never cached nor sniffed; the
  // dashboard's pages set their own.
  if (response.content_type == "application/json") {
    response.headers.emplace_back("Cache-Control", "no-store");
    response.headers.emplace_back("X-Content-Type-Options", "nosniff");
  }
  metrics_.record_request(label, response.status, absl::FromChrono(std::chrono::steady_clock::now() - start));
  return response;
}

HttpResponse Api::refuse(std::string_view target, int status, std::string_view message, const HttpRequest* head) {
  const std::string_view path = target.substr(0, target.find('?'));
  absl::StatusOr<RouteMatch<Handler>> match = find_route(routes(), "", valid_utf8(path) ? path : std::string_view());
  HttpResponse response = status == 413   ? error_response(413, "payload_too_large", message)
                          : status == 500 ? error_response(500, "internal", message)
                                          : error_response(400, "invalid_argument", message);
  if (status == 413 && head != nullptr && head->method == "POST" && match.ok() &&
      match->pattern == "/api/v1/events:batch") {
    // The syncer splits a refused batch down to one event; one still too large is never stored,
    // so its product hears of it. An unauthenticated request raises nothing.
    if (absl::StatusOr<std::string> product = authenticate(*head); product.ok()) alert_refused_batch(*product, response);
  }
  add_wire_version(response);
  metrics_.record_request(match.ok() ? match->pattern : "other", response.status, absl::ZeroDuration());
  return response;
}

HttpResponse Api::dispatch(const HttpRequest& request, const RouteMatch<Handler>& match) {
  if (match.route == nullptr) {
    HttpResponse response =
        error_response(405, "method_not_allowed",
                       str_cat(request.method, " is not allowed on ", match.pattern, " (allowed: ", match.allowed, ")"));
    response.headers.emplace_back("Allow", match.allowed);
    return response;
  }
  const Route<Handler>& route = *match.route;
  std::string product_id;
  std::string param = match.param;
  if (route.auth == RouteAuth::kProduct) {
    absl::StatusOr<std::string> product = authenticate(request);
    if (!product.ok()) return error_response(product.status());
    product_id = *std::move(product);
  } else if (route.auth == RouteAuth::kPortal) {
    // The customer is the token's: a portal route names none, so no request reaches another's.
    absl::StatusOr<SessionGrant> grant = authenticate_portal(request);
    if (!grant.ok()) return error_response(grant.status());
    product_id = std::move(grant->product_id);
    param = std::move(grant->customer_id);
  }
  if (route.body == RouteBody::kJson) {
    if (request.body.size() > options_.max_body_bytes) {
      return error_response(413, "payload_too_large",
                            str_cat("body: ", request.body.size(), " bytes is over the limit of ",
                                    options_.max_body_bytes));
    }
    if (!is_json_content_type(request.content_type)) {
      return error_response(415, "unsupported_media_type",
                            str_cat("Content-Type: must be application/json, not \"", quotable(request.content_type), "\""));
    }
  }
  return (this->*route.handler)(Call{request, product_id, param});
}

HttpResponse Api::healthz(const Call& /*call*/) { return json_response(200, R"({"status":"ok"})"); }

HttpResponse Api::metrics(const Call& /*call*/) {
  return HttpResponse{
      .status = 200, .content_type = "text/plain; version=0.0.4; charset=utf-8", .body = metrics_.prometheus_text()};
}

absl::StatusOr<std::string> Api::authenticate(const HttpRequest& request) {
  std::optional<std::string_view> token = bearer_token(request.authorization);
  // The tracking API's header (docs/tracking.md), when there is no Authorization.
  if (!token && request.authorization.empty() && !trim(request.api_key).empty()) token = trim(request.api_key);
  if (!token && request.authorization.empty()) {
    // A dashboard operator's session (docs/dashboard.md); never a portal token.
    if (std::optional<absl::StatusOr<SessionGrant>> session = session_of_cookie(request)) {
      if (!session->ok()) return session->status();
      return std::move((*session)->product_id);
    }
  }
  if (!token) return absl::UnauthenticatedError("missing \"Authorization: Bearer <api key>\" (or \"paygent-api-key: <api key>\")");
  std::string hash = sha256_hex(*token);
  {
    absl::MutexLock lock(&keys_mu_);
    if (auto it = product_by_key_hash_.find(hash); it != product_by_key_hash_.end()) return it->second;
  }
  absl::StatusOr<std::string> product_id = storage_.find_product_by_key(hash);
  if (absl::IsNotFound(product_id.status())) return absl::UnauthenticatedError("invalid API key");
  if (!product_id.ok()) return product_id.status();
  absl::MutexLock lock(&keys_mu_);
  product_by_key_hash_.emplace(std::move(hash), *product_id);
  return product_id;
}

HttpResponse Api::create_product(const Call& call) {
  const HttpRequest& request = call.request;
  if (options_.admin_token.empty()) {
    return error_response(403, "permission_denied",
                          "product creation is disabled: start paygentd with --admin-token (or PAYGENTD_ADMIN_TOKEN)");
  }
  const std::optional<std::string_view> token = bearer_token(request.authorization);
  if (!token || !secret_equals(*token, options_.admin_token)) {
    return error_response(401, "unauthenticated", "product creation needs \"Authorization: Bearer <admin token>\"");
  }
  if (request.body.size() > options_.max_body_bytes) {
    return error_response(413, "payload_too_large", str_cat("body: over the limit of ", options_.max_body_bytes, " bytes"));
  }
  if (!is_json_content_type(request.content_type)) {
    return error_response(415, "unsupported_media_type",
                          str_cat("Content-Type: must be application/json, not \"", quotable(request.content_type), "\""));
  }
  absl::StatusOr<NewProduct> product = parse_new_product(request.body);
  if (!product.ok()) return error_response(product.status());
  absl::StatusOr<std::string> id = generate_product_id();
  if (!id.ok()) return error_response(id.status());
  absl::StatusOr<std::string> key = generate_api_key();
  if (!key.ok()) return error_response(key.status());
  if (absl::Status s = storage_.create_product(*id, product->name, sha256_hex(*key)); !s.ok()) return error_response(s);
  return json_response(201, str_cat("{\"product_id\":", json_quote(*id), ",\"api_key\":", json_quote(*key), "}"));
}

HttpResponse Api::create_user(const Call& call) {
  const std::string& product_id = call.product_id;
  const HttpRequest& request = call.request;
  absl::StatusOr<NewUser> user = parse_new_user(request.body);
  if (!user.ok()) return error_response(user.status());
  if (absl::Status s = storage_.create_user(product_id, user->user_id, user->name); !s.ok()) return error_response(s);
  return json_response(201, str_cat("{\"user_id\":", json_quote(user->user_id), "}"));
}

HttpResponse Api::set_subscription(const Call& call) {
  const std::string& product_id = call.product_id;
  const std::string& user_id = call.param;
  const HttpRequest& request = call.request;
  absl::StatusOr<Subscription> subscription = parse_subscription(request.body);
  if (!subscription.ok()) return error_response(subscription.status());
  absl::StatusOr<std::shared_ptr<const ProductPlans>> plans = plans_of(product_id);
  if (!plans.ok()) return error_response(plans.status());
  if (!(*plans)->config || (*plans)->config->find(subscription->plan) == nullptr) {
    return error_response(404, "not_found",
                          str_cat("plan: no plan \"", subscription->plan, "\" in the product's plan config"));
  }
  if (absl::Status s = storage_.set_subscription(product_id, user_id, *subscription); !s.ok()) {
    return error_response(s);
  }
  return json_response(200, str_cat("{\"user_id\":", json_quote(user_id), ",\"plan\":", json_quote(subscription->plan),
                                    ",\"period_start\":", json_quote(rfc3339_utc(subscription->period_start_ns)),
                                    ",\"period_end\":", json_quote(rfc3339_utc(subscription->period_end_ns)), "}"));
}

HttpResponse Api::put_plans(const Call& call) {
  const std::string& product_id = call.product_id;
  const HttpRequest& request = call.request;
  if (request.body.size() > kMaxPlanConfigBytes) {
    return error_response(413, "payload_too_large",
                          str_cat("body: a plan config of ", request.body.size(), " bytes is over the limit of ",
                                  kMaxPlanConfigBytes, " bytes"));
  }
  absl::StatusOr<PlanConfig> config = parse_plan_config(request.body);
  if (!config.ok()) return error_response(absl::InvalidArgumentError(status_message(config.status())));
  auto over = [](std::string_view field, std::size_t count, std::size_t limit, std::string_view what) {
    return error_response(400, "invalid_argument",
                          str_cat(field, ": at most ", limit, " ", what, ", not ", count));
  };
  if (config->plans.size() > kMaxPlans) return over("plans", config->plans.size(), kMaxPlans, "plans");
  if (config->soft_gate_at.size() > kMaxSoftGates) {
    return over("soft_gate_at", config->soft_gate_at.size(), kMaxSoftGates, "thresholds");
  }
  for (std::size_t i = 0; i < config->plans.size(); ++i) {
    const Plan& plan = config->plans[i];
    const std::string path = str_cat("plans[", i, "].");
    if (plan.model_limits.size() > kMaxModelsPerPlan) {
      return over(path + "model_limits", plan.model_limits.size(), kMaxModelsPerPlan, "models");
    }
    if (plan.cost_rates.size() > kMaxModelsPerPlan) {
      return over(path + "cost_rates", plan.cost_rates.size(), kMaxModelsPerPlan, "models");
    }
    if (plan.soft_gate_at.size() > kMaxSoftGates) {
      return over(path + "soft_gate_at", plan.soft_gate_at.size(), kMaxSoftGates, "thresholds");
    }
  }
  if (absl::Status s = storage_.put_plan_config(product_id, to_json(*config)); !s.ok()) return error_response(s);
  return json_response(200, str_cat("{\"plans\":", config->plans.size(), "}"));
}

HttpResponse Api::get_plans(const Call& call) {
  const std::string& product_id = call.product_id;
  absl::StatusOr<std::shared_ptr<const ProductPlans>> plans = plans_of(product_id);
  if (!plans.ok()) return error_response(plans.status());
  return json_response(200, (*plans)->json.value_or(R"({"plans":[]})"));
}

absl::StatusOr<std::shared_ptr<const Api::ProductPlans>> Api::plans_of(const std::string& product_id) {
  // The revision first: a config put after it is read is then a change at the next request.
  absl::StatusOr<std::int64_t> revision = storage_.plan_config_revision(product_id);
  if (!revision.ok()) return revision.status();
  PlansSlot* slot = nullptr;
  {
    absl::MutexLock lock(&plans_mu_);
    std::unique_ptr<PlansSlot>& entry = plans_[product_id];
    if (entry == nullptr) entry = std::make_unique<PlansSlot>();
    slot = entry.get();  // entries are never removed
  }
  absl::MutexLock lock(&slot->load_mu);
  // Revisions grow: a cached one at least as new as this request's read serves it.
  if (slot->plans != nullptr && slot->plans->revision >= *revision) return slot->plans;
  auto plans = std::make_shared<ProductPlans>();
  plans->revision = *revision;
  if (*revision != 0) {
    absl::StatusOr<std::optional<std::string>> json = storage_.plan_config(product_id);
    if (!json.ok()) return json.status();
    plans->json = *std::move(json);
  }
  plans->version = plans_version(plans->json);
  if (plans->json) {
    absl::StatusOr<PlanConfig> config = parse_plan_config(*plans->json);
    if (!config.ok()) {
      return absl::InternalError(str_cat("the stored plan config no longer parses: ", status_message(config.status())));
    }
    plans->config = *std::move(config);
    if (const Plan* plan = plans->config->find(plans->config->default_plan); plan != nullptr) {
      plans->default_period = plan->period;
    }
  }
  slot->plans = std::move(plans);
  return slot->plans;
}

HttpResponse Api::ingest(const Call& call) {
  const std::string& product_id = call.product_id;
  const HttpRequest& request = call.request;
  absl::StatusOr<EventBatch> batch = parse_ingest_batch(request.body);
  if (!batch.ok()) {
    HttpResponse refused = error_response(batch.status());
    alert_refused_batch(product_id, refused);
    return refused;
  }
  absl::StatusOr<std::shared_ptr<const ProductPlans>> plans = plans_of(product_id);
  if (!plans.ok()) return error_response(plans.status());
  const ProductPlans& product_plans = **plans;
  // Each user's current period, decided from the user's record read in the batch's transaction,
  // where their totals are read too: one transaction for the batch and its usage reply. The
  // alerts the batch raises (docs/webhooks.md) go to the outbox in that transaction too.
  const absl::Time now = options_.clock();
  auto period_of = [&product_plans, now](const UserRecord& user) { return current_range(user, product_plans, now); };
  bool raised = false;
  auto alerts_of = [&](std::span<const UserUsage> usage, std::uint32_t wanted) {
    std::vector<WebhookAlert> alerts = batch_alerts(product_id, product_plans.config_or_null(), usage,
                                                    batch->soft_gates, wanted, absl::ToUnixNanos(now),
                                                    options_.forecast_horizon);
    raised = raised || !alerts.empty();
    return alerts;
  };
  absl::StatusOr<IngestResult> result =
      storage_.ingest_with_alerts(product_id, batch->events, period_of, batch->soft_gates, alerts_of);
  if (absl::IsUnimplemented(result.status())) {  // a storage without webhooks
    result = storage_.ingest_with_usage(product_id, batch->events, period_of, batch->soft_gates);
  }
  if (!result.ok()) {
    HttpResponse refused = error_response(result.status());
    if (refused.status >= 400 && refused.status < 500) alert_refused_batch(product_id, refused);
    return refused;
  }
  metrics_.record_ingest(result->accepted, result->duplicates);
  if (raised && options_.on_alerts) options_.on_alerts();
  settle_batch_wallets(product_id, batch->events, result->usage);

  // The batch is stored: from here a failure answers 5xx, and the syncer's retry is counted as
  // duplicates, so an unanswered batch is never counted twice.
  std::string body = str_cat("{\"accepted\":", result->accepted, ",\"duplicates\":", result->duplicates, ",");
  if (absl::Status s = append_usage_map(body, product_plans, result->usage); !s.ok()) return error_response(s);
  return json_response(200, std::move(body));
}

absl::StatusOr<IngestResult> Api::store_events(const std::string& product_id, std::span<const EventRecord> events) {
  // Storage::ingest: the batch path's write (its transaction, user locks, totals and duplicates),
  // without the usage read that only the syncer's reply needs.
  absl::StatusOr<IngestResult> result = storage_.ingest(product_id, events);
  if (result.ok()) metrics_.record_ingest(result->accepted, result->duplicates);
  return result;
}

HttpResponse Api::usage_query(const Call& call) {
  const std::string& product_id = call.product_id;
  const HttpRequest& request = call.request;
  absl::StatusOr<std::vector<std::string>> users = parse_usage_query(request.body);
  if (!users.ok()) return error_response(users.status());
  absl::StatusOr<std::shared_ptr<const ProductPlans>> plans = plans_of(product_id);
  if (!plans.ok()) return error_response(plans.status());
  const ProductPlans& product_plans = **plans;
  const absl::Time now = options_.clock();
  absl::StatusOr<std::vector<UserUsage>> usage = storage_.usage_of(
      product_id, *users, [&product_plans, now](const UserRecord& user) { return current_range(user, product_plans, now); });
  if (!usage.ok()) return error_response(usage.status());
  attach_wallets(product_id, *usage);
  std::string body = "{";
  if (absl::Status s = append_usage_map(body, product_plans, *usage); !s.ok()) return error_response(s);
  return json_response(200, std::move(body));
}

HttpResponse Api::grant_leases(const Call& call) {
  const std::string& product_id = call.product_id;
  const HttpRequest& request = call.request;
  absl::StatusOr<LeaseBatch> batch = parse_lease_request(request.body);
  if (!batch.ok()) return error_response(batch.status());
  const std::int64_t now_ns = absl::ToUnixNanos(options_.clock());
  absl::StatusOr<std::vector<LeaseGrant>> grants =
      storage_.grant_leases(product_id, batch->holder, batch->leases, now_ns, absl::ToInt64Nanoseconds(options_.lease_ttl));
  if (!grants.ok()) return error_response(grants.status());
  return json_response(200, lease_reply_json(absl::ToInt64Milliseconds(options_.lease_ttl), *grants));
}

namespace {

// `object` (a usage object, "{...}") with the user's wallet as its last member.
void append_wallet(std::string& object, const WalletRecord& wallet) {
  if (object.empty() || object.back() != '}') return;
  object.pop_back();
  str_append(&object, ",\"wallet\":", wallet_wire_json(wallet), "}");
}

// Adds "hard_gates": [...] (Storage::hard_gates_fired) to a usage object.
void append_hard_gates(std::string& object, std::span<const SoftGateFired> gates) {
  if (object.empty() || object.back() != '}') return;
  object.pop_back();
  object += ",\"hard_gates\":[";
  for (std::size_t i = 0; i < gates.size(); ++i) {
    const SoftGateFired& g = gates[i];
    str_append(&object, i ? ",{" : "{", "\"limit\":", json_quote(g.limit_key), ",\"period_start_ns\":",
               g.period_start_ns, ",\"threshold_ppm\":", g.threshold_ppm, ",\"fired_ns\":", g.fired_ns, "}");
  }
  object += "]}";
}

}  // namespace

void Api::attach_wallets(const std::string& product_id, std::vector<UserUsage>& usage) {
  if (usage.empty()) return;
  std::vector<std::string_view> users;
  users.reserve(usage.size());
  for (const UserUsage& u : usage) users.push_back(u.user.user_id);
  absl::StatusOr<std::vector<WalletRecord>> wallets = storage_.find_wallets(product_id, users);
  if (!wallets.ok()) {
    // The usage stands without them (an older storage has none; a failed read is said).
    if (!absl::IsUnimplemented(wallets.status())) report_wallet_error(product_id, wallets.status());
    return;
  }
  for (WalletRecord& w : *wallets) {
    for (UserUsage& u : usage) {
      if (u.user.user_id == w.customer_id) u.wallet = w;
    }
  }
}

void Api::settle_batch_wallets(const std::string& product_id, std::span<const EventRecord> events,
                               std::vector<UserUsage>& usage) {
  attach_wallets(product_id, usage);
  bool any = false;
  for (const UserUsage& u : usage) any = any || u.wallet.has_value();
  if (!any) return;
  // Only billing events move a wallet, and only under CREDITS pricing.
  bool billed = false;
  for (const EventRecord& e : events) billed = billed || !e.indicator.empty();
  if (!billed) return;
  absl::StatusOr<ProductBilling> billing = load_product_billing(storage_, product_id);
  if (!billing.ok()) {
    report_wallet_error(product_id, billing.status());
    return;
  }
  if (!billing->has_credits) return;
  const absl::Time now = options_.clock();
  bool moved = false;  // a balance moved: its settle may have put wallet alerts in the outbox
  for (UserUsage& u : usage) {
    if (!u.wallet) continue;
    absl::StatusOr<std::optional<WalletRecord>> settled = settle_wallet_of(product_id, u.user, *u.wallet, *billing, now);
    if (!settled.ok()) {
      report_wallet_error(product_id, settled.status());
      continue;
    }
    if (!settled->has_value()) continue;
    moved = moved || (*settled)->balance != u.wallet->balance;
    u.wallet = **settled;
  }
  if (moved && options_.on_alerts) options_.on_alerts();
}

absl::StatusOr<std::optional<WalletRecord>> Api::settle_wallet_of(const std::string& product_id, const UserRecord& user,
                                                                  const WalletRecord& wallet,
                                                                  const ProductBilling& billing, absl::Time now) {
  // Every period from the earliest billing event stored since the last complete settle (the
  // ingest's pending mark; none: the current period only) up to the current one.
  absl::StatusOr<std::optional<SettlePending>> pending = storage_.wallet_settle_pending(product_id, user.user_id);
  if (!pending.ok()) return pending.status();
  const std::int64_t now_ns = absl::ToUnixNanos(now);
  std::int64_t from_ns = *pending ? std::min((*pending)->from_ts_ns, now_ns) : now_ns;
  from_ns = std::max(from_ns, std::min(wallet.created_ns, now_ns));  // earlier periods are not the wallet's
  billing::BillingPeriod p = billing_period_at(user, absl::FromUnixNanos(from_ns));
  std::optional<WalletRecord> out;
  for (int n = 0;; ++n) {
    if (n == kMaxSettlePeriods) p = billing_period_at(user, now);  // a late event older than that: skipped
    absl::StatusOr<std::optional<WalletRecord>> settled =
        settle_customer_wallet(storage_, product_id, billing, user.user_id, p, now);
    if (!settled.ok()) return settled.status();
    out = *std::move(settled);
    if (p.end_ns > now_ns || n >= kMaxSettlePeriods) break;
    p = billing_period_at(user, absl::FromUnixNanos(p.end_ns));
  }
  if (*pending) {
    if (absl::Status s = storage_.clear_wallet_settle_pending(product_id, user.user_id, (*pending)->version); !s.ok()) {
      return s;
    }
  }
  return out;
}

void Api::report_wallet_error(const std::string& product_id, const absl::Status& status) {
  metrics_.record_wallet_error();
  std::fprintf(stderr, "paygentd: product %s: credit wallets not settled (the next settle takes it up): %s\n",
               product_id.c_str(), std::string(status.message()).c_str());
}

absl::Status Api::append_usage_map(std::string& body, const ProductPlans& plans, std::span<const UserUsage> usage) {
  str_append(&body, "\"plans_version\":", json_quote(plans.version), ",\"usage\":{");
  bool first = true;
  for (const UserUsage& u : usage) {
    absl::StatusOr<std::string> object =
        usage_object(u.user, plans.config_or_null(), u.period, u.models, u.soft_gates, nullptr);
    if (!object.ok()) return object.status();
    if (u.wallet) append_wallet(*object, *u.wallet);
    str_append(&body, first ? "" : ",", json_quote(u.user.user_id), ":", *object);
    first = false;
  }
  body += "}}";
  return absl::OkStatus();
}

HttpResponse Api::user_usage(const Call& call) {
  const std::string& product_id = call.product_id;
  const std::string& user_id = call.param;
  absl::StatusOr<UserRecord> user = storage_.find_user(product_id, user_id);
  if (!user.ok()) return error_response(user.status());
  absl::StatusOr<std::shared_ptr<const ProductPlans>> plans = plans_of(product_id);
  if (!plans.ok()) return error_response(plans.status());
  absl::StatusOr<std::string> usage = usage_json(product_id, *user, **plans, options_.clock());
  if (!usage.ok()) return error_response(usage.status());
  return json_response(200, *std::move(usage));
}

absl::StatusOr<std::string> Api::usage_json(const std::string& product_id, const UserRecord& user,
                                            const ProductPlans& plans, absl::Time now) {
  const Period period = current_period(user, plans, now);
  const TimeRange range{.from_ns = absl::ToUnixNanos(period.start), .to_ns = absl::ToUnixNanos(period.end)};
  absl::StatusOr<GroupedTotals> models = storage_.report(
      product_id,
      ReportQuery{.from_ns = range.from_ns, .to_ns = range.to_ns, .group_by = ReportGroup::kModel, .user_id = user.user_id});
  if (!models.ok()) return models.status();
  absl::StatusOr<GroupedTotals> sessions = storage_.report(
      product_id,
      ReportQuery{.from_ns = range.from_ns, .to_ns = range.to_ns, .group_by = ReportGroup::kSession, .user_id = user.user_id});
  if (!sessions.ok()) return sessions.status();
  absl::StatusOr<std::vector<SoftGateFired>> soft_gates = storage_.soft_gates_fired(product_id, user.user_id, range);
  if (!soft_gates.ok()) return soft_gates.status();
  absl::StatusOr<std::vector<SoftGateFired>> hard_gates = storage_.hard_gates_fired(product_id, user.user_id, range);
  if (!hard_gates.ok()) return hard_gates.status();
  absl::StatusOr<std::string> object = usage_object(user, plans.config_or_null(), range, *models, *soft_gates, &*sessions);
  if (!object.ok()) return object;
  append_hard_gates(*object, *hard_gates);
  std::vector<UserUsage> one(1);
  one[0].user = user;
  attach_wallets(product_id, one);
  if (one[0].wallet) append_wallet(*object, *one[0].wallet);
  return object;
}

HttpResponse Api::report(const Call& call) {
  const std::string& product_id = call.product_id;
  static constexpr std::string_view kKnown[] = {"from_ns", "to_ns", "group_by", "user_id"};
  absl::StatusOr<std::map<std::string, std::string, std::less<>>> parsed = parse_query(query_of(call.request.target), kKnown);
  if (!parsed.ok()) return error_response(parsed.status());
  const std::map<std::string, std::string, std::less<>>& params = *parsed;
  ReportQuery q;
  for (const char* name : {"from_ns", "to_ns"}) {
    auto it = params.find(name);
    if (it == params.end()) return error_response(400, "invalid_argument", str_cat(name, ": missing"));
    const std::optional<std::int64_t> value = parse_count(it->second);
    if (!value) return error_response(400, "invalid_argument", str_cat(name, ": must be a non-negative integer"));
    (std::string_view(name) == "from_ns" ? q.from_ns : q.to_ns) = *value;
  }
  if (q.to_ns < q.from_ns) return error_response(400, "invalid_argument", "to_ns: must not be before from_ns");
  static const std::map<std::string_view, ReportGroup> kGroups = {{"user", ReportGroup::kUser},
                                                                  {"model", ReportGroup::kModel},
                                                                  {"session", ReportGroup::kSession},
                                                                  {"day", ReportGroup::kDay},
                                                                  {"month", ReportGroup::kMonth},
                                                                  {"provider", ReportGroup::kProvider}};
  auto group = params.find("group_by");
  if (group == params.end()) return error_response(400, "invalid_argument", "group_by: missing");
  auto kind = kGroups.find(group->second);
  if (kind == kGroups.end()) {
    return error_response(400, "invalid_argument", "group_by: must be user, model, provider, session, day or month");
  }
  q.group_by = kind->second;
  if (auto user = params.find("user_id"); user != params.end()) {
    if (user->second.empty()) return error_response(400, "invalid_argument", "user_id: must not be empty");
    if (user->second.find('\0') != std::string::npos) {
      return error_response(400, "invalid_argument", "user_id: must not contain %00");
    }
    q.user_id = user->second;
  }
  absl::StatusOr<GroupedTotals> rows = storage_.report(product_id, q);
  if (!rows.ok()) return error_response(rows.status());
  std::string body = "{\"rows\":[";
  bool first = true;
  for (const auto& [key, t] : *rows) {
    str_append(&body, first ? "" : ",", "{\"key\":", json_quote(key), ",\"calls\":", t.calls,
               ",\"input_tokens\":", t.input_tokens, ",\"output_tokens\":", t.output_tokens,
               ",\"cost_nanos\":", t.cost_nanos, "}");
    first = false;
  }
  body += "]}";
  return json_response(200, std::move(body));
}

}  // namespace paygent::server
