// paygentd's API (docs/wire.md) as a pure function of a request: Api::handle_request takes a parsed
// HTTP request and returns the response, with no socket involved, so that doctest can drive every
// endpoint directly and the HTTP layer (server/http_server.h) only moves bytes.
//
// Thread safety: an Api is safe for concurrent use from many threads; it is as concurrent as its
// Storage.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "billing/invoice.h"
#include "paygent/plan.h"
#include "server/dashboard_sessions.h"
#include "server/metrics.h"
#include "server/routes.h"
#include "server/storage.h"

namespace paygent::server {

struct ProductBilling;  // server/invoicing.h

struct HttpRequest {
  std::string method;         // "GET", "POST", ... as sent
  std::string target;         // the request target: the path and an optional "?query"
  std::string content_type;   // the Content-Type header; empty when absent
  std::string authorization;  // the Authorization header; empty when absent
  std::string body;
  std::string api_key;          // the paygent-api-key header (the tracking API's auth); empty when absent
  std::string idempotency_key;  // the Idempotency-Key header; empty when absent
  std::string cookie;           // the Cookie header (the dashboard's session); empty when absent
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type (e.g. Allow)
  std::string body;
};

// What one product may configure (docs/wire.md, "Users, subscriptions, plans"). paygentd keeps
// every product's config parsed in memory and re-parses it at each change, and every application
// process of the product downloads and parses it: a bound keeps one product's config from costing
// the others. Past a bound,
// POST /config/plans is refused naming the bound (413 for the body, 400 for the rest).
inline constexpr std::size_t kMaxPlanConfigBytes = 1 << 20;  // the body of POST /config/plans
inline constexpr std::size_t kMaxPlans = 1000;
inline constexpr std::size_t kMaxModelsPerPlan = 1000;  // model_limits, and cost_rates, of one plan
inline constexpr std::size_t kMaxSoftGates = 16;        // soft_gate_at thresholds, of the config or of a plan

struct ApiOptions {
  // The bearer token that may create products. Empty: product creation is refused (403), so a
  // paygentd started without one cannot be given new tenants by anyone.
  std::string admin_token;
  // Largest request body accepted (413 past it). The default holds a batch of 1,000 events with
  // room to spare; larger costs memory per connection. A plan config is bounded by
  // kMaxPlanConfigBytes too, however large this is.
  std::size_t max_body_bytes = 4 << 20;
  // How long a budget lease lives from its grant (docs/leases.md; paygentd --lease-ttl-ms). Longer
  // means fewer renewals, and longer that the budget of a holder that died stays held.
  absl::Duration lease_ttl = absl::Seconds(10);
  // Alerts (docs/webhooks.md): a forecast webhook is raised for a user predicted to reach their cap
  // within this time of an ingest (paygentd --forecast-horizon-s). Longer warns earlier, from a
  // burn rate measured over less of the period.
  absl::Duration forecast_horizon = absl::Hours(24);
  // The dashboard's session cookie is marked Secure (sent over HTTPS only): for a paygentd behind
  // a TLS proxy (paygentd --secure-cookies yes). Off, plain HTTP on loopback works.
  bool secure_cookies = false;
  // Called (on the request's thread) after an ingest that may have put alerts in the outbox, so
  // that the sender looks now rather than at its next poll. Must be cheap and not throw.
  std::function<void()> on_alerts;
  // invoice_ready alerts (raise_invoice_ready): raised this long after a period ends (late events
  // still arrive meanwhile; paygentd --invoice-grace-s), for periods that ended at most `invoice_lookback` before that.
  absl::Duration invoice_grace = absl::Hours(1);
  absl::Duration invoice_lookback = absl::Hours(24 * 7);
  // "Now", which decides each user's current period and when leases expire. Tests set a fixed time.
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

// The JSON error body of docs/wire.md: {"error": {"code": "...", "message": "..."}}.
std::string error_body(std::string_view code, std::string_view message);
// A reply of `status` with error_body(code, message).
HttpResponse error_response(int status, std::string_view code, std::string_view message);
// The HTTP status and wire code of a failed absl::Status (docs/wire.md's table): InvalidArgument
// 400, Unauthenticated 401, PermissionDenied 403, NotFound 404, AlreadyExists 409, ...
HttpResponse error_response(const absl::Status& status);

class Api {
 public:
  // `storage` and `metrics` are not owned and must outlive the Api.
  Api(Storage& storage, Metrics& metrics, ApiOptions options);

  // Answers one request per docs/wire.md. Never throws; a failure of the storage is a 5xx with a
  // JSON error. Every request is counted in the metrics. A refused request (any 4xx) stores
  // nothing.
  HttpResponse handle_request(const HttpRequest& request);

  // The answer to a request the HTTP layer could not hand to handle_request: `status` is 400
  // (malformed HTTP), 413 (body or header over the limit) or 500 (handle_request threw);
  // `target` is the request target when known. Counted in the metrics like any other answer.
  // `head`, when given, is the refused request without its body (method, target and the auth
  // headers): a syncer's batch refused 413 raises its product's delivery_failure alert, as a batch
  // refused after reading does.
  HttpResponse refuse(std::string_view target, int status, std::string_view message,
                      const HttpRequest* head = nullptr);

  [[nodiscard]] const ApiOptions& options() const noexcept { return options_; }

  // Raises the invoice_ready alert (docs/webhooks.md) of each billing period of each customer, of
  // the products with an endpoint that wants it, that ended between `invoice_grace` and
  // `invoice_grace + invoice_lookback` before `now` with billing events in it: its invoice,
  // rendered as GET .../invoice renders it. Once per customer and period (the alert's key), on any
  // number of replicas. Returns how many were raised. paygentd calls it every minute
  // (server/main.cpp); safe from any thread, as handle_request is.
  absl::StatusOr<int> raise_invoice_ready(absl::Time now);

 private:
  // What a handler gets: the request, its product (empty for routes without a product key) and
  // its decoded path parameter.
  struct Call {
    const HttpRequest& request;
    const std::string& product_id;
    const std::string& param;
  };
  using Handler = HttpResponse (Api::*)(const Call&);
  // The route table (api.cpp, server/routes.h).
  static std::span<const Route<Handler>> routes();
  HttpResponse dispatch(const HttpRequest& request, const RouteMatch<Handler>& match);
  // The product whose key the request's "Authorization: Bearer" or "paygent-api-key" names;
  // Unauthenticated otherwise.
  absl::StatusOr<std::string> authenticate(const HttpRequest& request);
  HttpResponse healthz(const Call& call);
  HttpResponse metrics(const Call& call);
  HttpResponse create_product(const Call& call);
  HttpResponse create_user(const Call& call);
  HttpResponse set_subscription(const Call& call);
  HttpResponse put_plans(const Call& call);
  HttpResponse get_plans(const Call& call);
  HttpResponse ingest(const Call& call);
  HttpResponse usage_query(const Call& call);
  HttpResponse grant_leases(const Call& call);
  HttpResponse user_usage(const Call& call);
  HttpResponse report(const Call& call);

  // The tracking API (server/tracking_api.cpp, docs/tracking.md "HTTP").
  HttpResponse track_customer(const Call& call);
  HttpResponse track_usage(const Call& call);
  HttpResponse track_indicator(const Call& call);
  HttpResponse track_stt(const Call& call);
  HttpResponse track_tts(const Call& call);
  HttpResponse track_sts(const Call& call);
  HttpResponse track_video(const Call& call);
  HttpResponse track_external(const Call& call);
  HttpResponse voice_session(const Call& call);
  HttpResponse voice_stt(const Call& call);
  HttpResponse voice_llm(const Call& call);
  HttpResponse voice_tts(const Call& call);
  HttpResponse voice_indicator(const Call& call);

  // The agents API and the profit report (server/agents_api.cpp, docs/tracking.md "Revenue").
  HttpResponse list_agents(const Call& call);
  HttpResponse apply_agents(const Call& call);
  HttpResponse get_agent(const Call& call);
  HttpResponse put_agent(const Call& call);
  HttpResponse delete_agent(const Call& call);
  HttpResponse profit_report(const Call& call);
  HttpResponse get_report_tags(const Call& call);
  HttpResponse put_report_tags(const Call& call);
  // The dashboard and the customer portal (server/dashboard_api.cpp, docs/dashboard.md).
  HttpResponse dashboard_page(const Call& call);
  HttpResponse dashboard_sign_in(const Call& call);
  HttpResponse dashboard_session(const Call& call);
  HttpResponse dashboard_sign_out(const Call& call);
  HttpResponse create_portal_token(const Call& call);
  // The grant of the request's portal token; Unauthenticated otherwise.
  absl::StatusOr<SessionGrant> authenticate_portal(const HttpRequest& request);
  // The operator session named by the request's session cookie: nullopt when it sends none;
  // Unauthenticated when it is expired, signed out or unknown.
  std::optional<absl::StatusOr<SessionGrant>> session_of_cookie(const HttpRequest& request);
  // The billing API (server/billing_api.cpp, docs/billing.md): billable metrics, the billing file,
  // the invoice preview.
  HttpResponse list_metrics(const Call& call);
  HttpResponse create_metric(const Call& call);
  HttpResponse get_metric(const Call& call);
  HttpResponse update_metric(const Call& call);
  HttpResponse delete_metric(const Call& call);
  HttpResponse apply_billing(const Call& call);
  HttpResponse customer_invoice(const Call& call);
  // `user`'s invoice for `period`: CREDITS lines from the wallet's ledger (settled first) when
  // `period` is one of its billing periods, else priced without the wallet.
  struct RenderedInvoice {
    billing::Invoice invoice;
    std::int64_t unpriced_events = 0;
  };
  absl::StatusOr<RenderedInvoice> invoice_for(const std::string& product_id, const UserRecord& user,
                                              billing::BillingPeriod period, const ProductBilling& billing);
  // raise_invoice_ready for one product.
  absl::StatusOr<int> raise_invoice_ready_of(const std::string& product_id, std::int64_t now_ns, std::int64_t grace_ns,
                                             std::int64_t lookback_ns);
  // Credit wallets (server/wallets_api.cpp, docs/billing.md).
  HttpResponse top_up_wallet(const Call& call);
  HttpResponse customer_wallet(const Call& call);
  // Settles the wallets of the batch's customers that have one (settle_wallet_of) and puts each
  // in its usage object. After the batch is stored: a failure here is reported, and the pending
  // mark the batch's transaction left makes the next settle take up what this one missed
  // (settling is idempotent).
  void settle_batch_wallets(const std::string& product_id, std::span<const EventRecord> events,
                            std::vector<UserUsage>& usage);
  // Settles `wallet` (its customer `user`'s) for every period an ingest marked pending
  // (Storage::wallet_settle_pending) and the current one, then clears the mark. nullopt: no wallet.
  absl::StatusOr<std::optional<WalletRecord>> settle_wallet_of(const std::string& product_id, const UserRecord& user,
                                                               const WalletRecord& wallet, const ProductBilling& billing,
                                                               absl::Time now);
  // Most periods one settle walks (a pending mark that old settles its first and the current).
  static constexpr int kMaxSettlePeriods = 36;
  // Puts each user's wallet (if any) in its usage object, as stored.
  void attach_wallets(const std::string& product_id, std::vector<UserUsage>& usage);
  void report_wallet_error(const std::string& product_id, const absl::Status& status);
  // InvalidArgument naming "indicators[i].metric" when an indicator of `agent` links a billable
  // metric the product does not have.
  absl::Status check_agent_metrics(const std::string& product_id, const AgentRecord& agent);
  // A tracked usage of `kind` (stt, tts, sts, video; llm in a session): standalone (agentId,
  // customerId, indicator, metaTags) or `in_session` (sessionId: the session's agent, customer and
  // tags), with the kind's measures, priced from the catalog.
  HttpResponse track_kind(const Call& call, ::paygent::internal::UsageKind kind, bool in_session);
  // Stores one tracked event of a kind with a cost (its id, user, quantities and cost set; its id
  // replaced per the request's Idempotency-Key) and answers the cost reply: calculatedCost, its
  // nano-USD, and the breakdown (`prompt_nanos` of the cost is the prompt's; the rest the
  // completion's).
  HttpResponse store_tracked(const Call& call, EventRecord& event, std::int64_t prompt_nanos);
  // Stores tracked events through the batch path's ingest (the same transaction, caps and usage
  // as POST /api/v1/events:batch), counted in the metrics.
  absl::StatusOr<IngestResult> store_events(const std::string& product_id, std::span<const EventRecord> events);

  // A product's plan config as parsed once per change, with what requests derive from it.
  struct ProductPlans {
    std::int64_t revision = 0;        // Storage::plan_config_revision() when read; 0: no config
    std::optional<std::string> json;  // the config as stored (GET /config/plans); nullopt: none
    std::string version;              // plans_version() of `json`
    std::optional<PlanConfig> config;
    // The calendar rule of the config's default plan, when it has one: the period of the users
    // without a subscription, decided for every user of every batch.
    std::optional<PeriodRule> default_period;

    [[nodiscard]] const PlanConfig* config_or_null() const { return config ? &*config : nullptr; }
  };
  // The user's current period at `now` (docs/wire.md): from their subscription, else the calendar
  // rule of the default plan, else the UTC calendar month.
  static TimeRange period_range_of(const UserRecord& user, const ProductPlans& plans, absl::Time now);
  // Webhooks and the forecast (server/webhooks_api.cpp, docs/webhooks.md).
  HttpResponse create_webhook(const Call& call);
  HttpResponse list_webhooks(const Call& call);
  HttpResponse delete_webhook(const Call& call);
  HttpResponse webhook_deliveries(const Call& call);
  HttpResponse forecast(const Call& call);
  HttpResponse get_alert_settings(const Call& call);
  HttpResponse put_alert_settings(const Call& call);
  // Puts a delivery_failure alert in the outbox for a batch of the syncer refused with `response`
  // (a 4xx), when the product has an endpoint for it; a failure to do so is dropped.
  void alert_refused_batch(const std::string& product_id, const HttpResponse& response);
  // The product's current plans: from the cache while the storage's revision of them is the
  // cached one (a cheap read), else read, parsed and cached anew. Parsing happens outside any lock.
  absl::StatusOr<std::shared_ptr<const ProductPlans>> plans_of(const std::string& product_id);
  // Appends `"plans_version": ..., "usage": {user: usage object, ...}}` (docs/wire.md).
  static absl::Status append_usage_map(std::string& body, const ProductPlans& plans, std::span<const UserUsage> usage);
  // The per-user usage object of GET .../usage (docs/wire.md) over the user's current period, with
  // plan, calls and sessions.
  absl::StatusOr<std::string> usage_json(const std::string& product_id, const UserRecord& user,
                                         const ProductPlans& plans, absl::Time now);

  Storage& storage_;
  Metrics& metrics_;
  const ApiOptions options_;

  // SHA-256 of an API key -> its product. Products are never deleted, so an entry never goes
  // stale; unknown keys are not cached (they would let a caller grow the map at will).
  absl::Mutex keys_mu_;
  absl::flat_hash_map<std::string, std::string> product_by_key_hash_ ABSL_GUARDED_BY(keys_mu_);
  DashboardSessions sessions_;  // dashboard sign-ins and portal tokens (in the storage)

  // A product's entry in plans_.
  struct PlansSlot {
    // Held by the one request that reads and parses a changed config; the product's other
    // requests meanwhile wait for its result rather than parse it too. Never held with plans_mu_.
    absl::Mutex load_mu;
    std::shared_ptr<const ProductPlans> plans ABSL_GUARDED_BY(load_mu);
  };
  // Product id -> its plans as last read. plans_mu_ is held only to find or add an entry, so
  // reading and parsing one product's config never stalls another product's requests. One entry
  // per product that has made a request (at most kMaxPlanConfigBytes of config each).
  absl::Mutex plans_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<PlansSlot>> plans_ ABSL_GUARDED_BY(plans_mu_);
};

}  // namespace paygent::server
