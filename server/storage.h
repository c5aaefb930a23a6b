// paygentd's storage: the interface every backend store implements (SQLite now, PostgreSQL next),
// and the records that cross it.
//
// Every method is scoped by a product id: a product never reads or writes another's rows. A write
// for a product that does not exist fails with NotFound; a read finds nothing for it. The request
// layer (server/api.h) has validated every record before it reaches a Storage, so an
// implementation checks only what needs the stored state (existence, uniqueness, overflow).
//
// Thread safety: every Storage implementation is safe for concurrent use from many threads
// without external synchronisation.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <algorithm>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sync/event_record.h"

namespace paygent::server {

// One metered call, as the syncer sends it (docs/wire.md, "Ingest"): the one event record of the
// library and the server (sync/event_record.h). Validated by the caller.
using EventRecord = ::paygent::internal::EventRecord;

// A user's subscription: the plan and its first period [period_start_ns, period_end_ns).
struct Subscription {
  std::string plan;
  std::int64_t period_start_ns = 0;
  std::int64_t period_end_ns = 0;
  friend bool operator==(const Subscription&, const Subscription&) = default;
};

struct UserRecord {
  std::string user_id;
  std::string name;
  std::optional<Subscription> subscription;
};

// Sums over a set of events.
struct Totals {
  std::int64_t calls = 0;
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cached_input_tokens = 0;
  std::int64_t cache_creation_input_tokens = 0;
  std::int64_t reasoning_tokens = 0;
  std::int64_t cost_nanos = 0;
  friend bool operator==(const Totals&, const Totals&) = default;
};

// A span of time [from_ns, to_ns).
struct TimeRange {
  std::int64_t from_ns = 0;
  std::int64_t to_ns = 0;
  friend bool operator==(const TimeRange&, const TimeRange&) = default;
};

// Totals keyed by the group's key, in key order.
using GroupedTotals = std::map<std::string, Totals, std::less<>>;

// A soft-gate threshold an application process fired (docs/wire.md, "Soft gates"): a batch
// carries them, and every per-user usage object reports those of the user's current period.
// Validated by the caller: user_id non-empty, limit_key "total_spend", "session_spend:<id>" or
// "model_limit:<model>", threshold_ppm 1 to 1,000,000. With `hard`, a limit's hard gate that an
// application process reported (docs/wire.md, "Hard gates"), kept apart from the soft ones.
using SoftGateFired = ::paygent::internal::FiredThreshold;

// Most soft gates reported in one user's usage object: period limits first, then sessions, most
// recently started first (a user has a few per period; a flood of sessions is cut here).
inline constexpr std::size_t kMaxUsageSoftGates = 100;

// A customer's prepaid credit wallet (docs/billing.md, "Credit wallets"). Credits and dollars are
// exact decimals as text (billing/decimal.h), never rounded. granted = balance + used, always;
// the balance never goes below 0 (usage beyond it is overage, shown on the invoice).
struct WalletRecord {
  std::string customer_id;
  std::string granted = "0";   // every credit topped up
  std::string balance = "0";   // what is left
  std::string used = "0";      // taken from it by settled usage
  std::string overage = "0";   // usage beyond the balance when it was settled
  std::string paid_usd = "0";  // what the top-ups cost the customer
  std::int64_t top_ups = 0;
  // Its first top-up: periods that ended before it are never settled against it.
  std::int64_t created_ns = 0;
  std::int64_t updated_ns = 0;
  friend bool operator==(const WalletRecord&, const WalletRecord&) = default;
};

// A user's totals over a period, by model, as Storage::ingest_with_usage reads them.
struct UserUsage {
  UserRecord user;
  TimeRange period;
  GroupedTotals models;  // models without events in `period` are absent
  // The thresholds fired in `period` (period_start_ns in it), as soft_gates_fired() reads them.
  std::vector<SoftGateFired> soft_gates;
  // The user's credit wallet (a customer's), when it has one: set by paygentd after the storage's
  // read (Api::settle_batch_wallets), not by the storage.
  std::optional<WalletRecord> wallet;
};

// A user, their current period, and the cost of their usage events (billing events aside) in it:
// what the forecast reads (Storage::period_costs).
struct UserPeriodCost {
  UserRecord user;
  TimeRange period;
  std::int64_t cost_nanos = 0;  // saturates at INT64_MAX
};

// A product's alert settings (docs/webhooks.md, "Settings").
struct AlertSettings {
  // wallet_low is raised when a settle leaves a credit wallet's balance at this percent of the
  // credits granted or less (1 to 99).
  std::int64_t wallet_low_percent = 20;
  friend bool operator==(const AlertSettings&, const AlertSettings&) = default;
};

struct IngestResult {
  std::int64_t accepted = 0;    // events stored by this call
  std::int64_t duplicates = 0;  // events whose id was already stored (or repeated in the batch)
  // Filled by ingest_with_usage only: every distinct user of the batch, in user id order.
  std::vector<UserUsage> usage;
};

// What events are grouped by in a report. kDay and kMonth are UTC calendar days and months, keyed
// "2026-11-17" and "2026-11".
enum class ReportGroup : std::uint8_t { kUser, kModel, kSession, kDay, kMonth, kProvider };

struct ReportQuery {
  std::int64_t from_ns = 0;  // inclusive
  std::int64_t to_ns = 0;    // exclusive
  ReportGroup group_by = ReportGroup::kUser;
  std::optional<std::string> user_id;  // only this user's events when set
};

// One limit a holder asks a lease for (docs/leases.md, "Wire"). Validated by the caller:
// user_id non-empty, limit_key "total_spend", "model_limit:<model>" or "session_spend:<session
// id>", period_start_ns < period_end_ns, 0 <= acked <= used, cap, want and need >= 0, want and
// need 0 when release, at most one entry per (user_id, limit_key, period_start_ns) in a request.
struct LeaseRequest {
  std::string user_id;
  std::string limit_key;
  std::int64_t period_start_ns = 0;
  std::int64_t period_end_ns = 0;
  std::int64_t cap = 0;    // in the limit's unit: nano-USD, or tokens for model_limit
  std::int64_t used = 0;   // what the holder has committed in the window
  std::int64_t acked = 0;  // the part of it the backend has acknowledged
  std::int64_t want = 0;   // the slice beyond `used` the holder would like
  std::int64_t need = 0;   // the least slice that is useful now
  bool release = false;    // the holder stops admitting under this lease
  friend bool operator==(const LeaseRequest&, const LeaseRequest&) = default;
};

// The answer to one LeaseRequest (docs/leases.md, the reply's entries).
struct LeaseGrant {
  std::string user_id;
  std::string limit_key;
  std::int64_t period_start_ns = 0;
  std::int64_t granted = 0;         // ceiling - used (>= 0)
  std::int64_t ceiling = 0;         // the lease's new ceiling
  std::int64_t spent = 0;           // the ledger's total of the limit over its window
  std::int64_t held_elsewhere = 0;  // the other live leases' headroom
  std::int64_t remaining = 0;       // cap - spent - all headroom after this grant, at least 0
  std::int64_t holders = 0;         // live leases of the limit, this one included (unless deleted)
  friend bool operator==(const LeaseGrant&, const LeaseGrant&) = default;
};

// A customer of the tracking API (docs/tracking.md, "HTTP"): a guardrail user (its id is the
// user id, the same plans and caps) with the name and email the API was given.
struct CustomerRecord {
  std::string id;  // the user id: the customer's external id
  std::string name;
  std::string email;  // empty when not given
  bool created = false;  // by the call that returned it
  friend bool operator==(const CustomerRecord&, const CustomerRecord&) = default;
};

// A voice session of the tracking API: its events carry its agent, customer and meta tags. Closed
// by its indicator (the billing event whose id is closing_event_id); nothing is tracked into it
// after. Validated by the caller: ids non-empty, meta_tags_json a JSON object of string values.
struct VoiceSession {
  std::string session_id;
  std::string agent_id;
  std::string customer_id;
  std::string meta_tags_json = "{}";
  bool closed = false;
  std::string closing_event_id;  // 32 hex digits when closed; else empty
  friend bool operator==(const VoiceSession&, const VoiceSession&) = default;
};

// Agents and their indicators (docs/tracking.md, "Revenue"): what a billing event earns. Validated
// by the caller (server/agents_api.cpp): ids non-empty, prices >= 0, custom rates only when
// per_minute, at most one rate per (kind, model), indicators distinct.
struct CustomRate {
  std::string kind;  // "llm", "stt" or "tts": the part of the voice session the model served
  std::string model;
  std::int64_t nanos_per_minute = 0;
  friend bool operator==(const CustomRate&, const CustomRate&) = default;
};
struct IndicatorPrice {
  std::string indicator;
  bool per_minute = false;
  // per_minute false: nano-USD per billing event; true: the base nano-USD per minute. nullopt: no
  // price (its billing events' revenue is unknown, counted, never 0).
  std::optional<std::int64_t> price_nanos;
  std::vector<CustomRate> custom_rates;  // per_minute only, in (kind, model) order
  // Billing (issue 11, docs/billing.md): the identifier of the billable metric that counts its
  // events ("" for none: every event one unit), and its pricing model as canonical JSON
  // (server/billing_wire.h; "" for none: price_nanos prices it). Neither when per_minute.
  std::string metric;
  std::string pricing_json;
  friend bool operator==(const IndicatorPrice&, const IndicatorPrice&) = default;
};
struct AgentRecord {
  std::string agent_id;
  std::string name;
  std::vector<IndicatorPrice> indicators;  // in indicator order
  friend bool operator==(const AgentRecord&, const AgentRecord&) = default;
};

// A billable metric (docs/billing.md), as the API validated it (server/billing_wire.h).
struct MetricRecord {
  std::string identifier;       // unique per product, immutable
  std::string name;
  std::string description;
  std::string definition_json;  // the whole definition, canonical JSON (billing_wire.h)
  // The part that is locked once an indicator links the metric (aggregation, field or
  // expression, filters), canonical JSON: an update that changes it is refused while linked.
  std::string locked_json;
  std::int64_t created_ns = 0;   // set by the storage
  std::vector<std::string> linked_to;  // read only: "agentId/indicator" of the indicators linking it, sorted
  friend bool operator==(const MetricRecord&, const MetricRecord&) = default;
};

// One billing event of a customer as an invoice reads it: the billing_events row and its event's
// meta tags (Storage::scan_billing_events).
struct BillingEventRow {
  std::string id;  // 32 lowercase hex digits
  std::string customer_id;
  std::string agent_id;
  std::string indicator;
  std::int64_t ts_ns = 0;
  std::int64_t received_ns = 0;  // arrival: breaks Latest's timestamp ties
  std::int64_t duration_us = 0;
  std::string meta_tags_json;  // a JSON object of string values
  // Its revenue priced at ingest (per-event and per-minute prices of that moment); none when it
  // had no per-event price (metered, tiered, CREDITS, or no price at all).
  std::optional<std::int64_t> revenue_nanos;
};

// One top-up; `id` is the caller's (idempotency: the same id again adds nothing).
struct TopUpRecord {
  std::string id;
  std::string credits;   // > 0
  std::string paid_usd;  // >= 0
  std::int64_t created_ns = 0;
  friend bool operator==(const TopUpRecord&, const TopUpRecord&) = default;
};

// The ledger's row of one CREDITS indicator ("agentId/indicator") of a customer in one billing
// period (billing::CreditCharge).
struct WalletCharge {
  std::string indicator;
  std::int64_t period_start_ns = 0;
  std::int64_t period_end_ns = 0;
  std::string charged = "0";
  std::string used = "0";
  std::string overage = "0";
  friend bool operator==(const WalletCharge&, const WalletCharge&) = default;
};

// A wallet's settle that ingest asked for and no settle has done yet (Storage::wallet_settle_pending):
// its customer's billing events from `from_ts_ns` on were stored since the last complete settle.
struct SettlePending {
  std::int64_t from_ts_ns = 0;
  std::int64_t version = 0;  // bumped by every ingest that marks it
};

// Reads a customer's billing events of a range, as Storage::scan_billing_events does, inside the
// transaction of Storage::settle_wallet.
using BillingScan = absl::FunctionRef<absl::Status(TimeRange, absl::FunctionRef<absl::Status(const BillingEventRow&)>)>;
// The credits each CREDITS indicator's quantity costs in the period, as (indicator, exact decimal
// text), in the order the balance is shared in. May be called more than once (a retried transaction).
using CreditsOf = absl::FunctionRef<absl::StatusOr<std::vector<std::pair<std::string, std::string>>>(BillingScan)>;

// What the profit report groups by (GET /api/v1/reports/profit?by=...). kTag: one meta tag's
// value (by=tag:<key>), "" for the events without it.
enum class ProfitGroup : std::uint8_t { kAgent, kCustomer, kIndicator, kModel, kDay, kTag };

// Most report tags a product declares (Storage::set_report_tags): each adds a row per day and
// value to every event's ingest.
inline constexpr std::size_t kMaxReportTags = 8;

// One group of the profit report. Cost sums the cost rows (every kind but billing) whose cost is
// known; revenue sums the billing events whose revenue is known. nullopt: nothing of it was
// recorded (no such row, or none with a known amount) -- never 0.
struct ProfitRow {
  std::string key;
  std::optional<std::int64_t> cost_nanos;
  std::optional<std::int64_t> revenue_nanos;
  std::int64_t cost_events = 0;          // cost rows
  std::int64_t billing_events = 0;       // billing events
  std::int64_t cost_unknown_events = 0;  // cost rows without a price
  std::int64_t revenue_unknown_events = 0;  // billing events without a price
  friend bool operator==(const ProfitRow&, const ProfitRow&) = default;
};

// A dashboard operator's session or a customer's portal token (docs/dashboard.md).
struct SessionRecord {
  std::string token_sha256;  // 64 hex digits: the token itself is never stored
  std::string product_id;
  std::string customer_id;  // "" for an operator's session
  std::int64_t expires_ns = 0;
  friend bool operator==(const SessionRecord&, const SessionRecord&) = default;
};

// --- Webhooks (docs/webhooks.md; server/webhooks.h, server/sql_webhooks.cpp) ---

// An alert's kind: one bit each in WebhookEndpoint::event_mask.
enum class AlertType : std::uint32_t {
  kSoftGate = 1,         // "soft_gate": an application process fired a soft-gate threshold
  kHardGate = 2,         // "hard_gate": a user's period spend reached the cap as ingest sees it
  kDeliveryFailure = 4,  // "delivery_failure": the backend refused a batch of the syncer
  kForecast = 8,         // "forecast": a user is predicted to reach the cap within the horizon
  kWalletLow = 16,       // "wallet_low": a credit wallet's balance fell to the product's wallet_low_percent (20%) of its credits or less
  kWalletEmpty = 32,     // "wallet_empty": a credit wallet's balance reached 0
  kInvoiceReady = 64,    // "invoice_ready": a customer's billing period ended; its invoice is final
};
inline constexpr std::uint32_t kAllAlertTypes = 127;
// Every type, in the order replies list them.
inline constexpr AlertType kAlertTypes[] = {AlertType::kSoftGate,  AlertType::kHardGate,  AlertType::kDeliveryFailure,
                                            AlertType::kForecast,  AlertType::kWalletLow, AlertType::kWalletEmpty,
                                            AlertType::kInvoiceReady};

// A receiver of a product's alerts. Validated by the caller (server/webhooks.h): id "wh_" and 24
// hex digits, url http://host[:port][/path], event_mask a non-empty subset of kAllAlertTypes.
struct WebhookEndpoint {
  std::string id;
  std::string url;
  std::uint32_t event_mask = 0;
  std::string secret;  // the HMAC key ("whsec_" + 64 hex digits); the API shows it once
  std::int64_t created_ns = 0;
  friend bool operator==(const WebhookEndpoint&, const WebhookEndpoint&) = default;
};

// An alert to put in the outbox: one delivery per endpoint of the product whose mask has `type`.
// At most one alert per (product, alert_key) is ever stored: a later one of the same key (the same
// gate seen again by a later batch, a retried batch) is dropped.
struct WebhookAlert {
  std::string alert_key;  // e.g. "hard_gate|user|total_spend|<period start>"
  AlertType type = AlertType::kSoftGate;
  std::string event_id;  // 32 lowercase hex digits
  std::string user_id;   // empty when not about a user
  // The body's members after "delivery_id" (`"event_id":"...","type":"...",...`), JSON text.
  std::string fields_json;
};

// Decides, in an ingest's transaction, the alerts of the batch from the usage it read
// (IngestResult::usage) for the types in `wanted` (a mask; never 0). Called at most once per
// attempt of the transaction, with the store's lock held: it must not call back into the Storage.
using AlertsOf = absl::FunctionRef<std::vector<WebhookAlert>(std::span<const UserUsage> usage, std::uint32_t wanted)>;

// A delivery handed to a sender by claim_webhook_deliveries().
struct WebhookDelivery {
  std::int64_t key = 0;      // the row's key, for record_webhook_attempt()
  std::int64_t product = 0;  // the product's storage key (opaque): what claims are spread over
  std::string delivery_id;
  std::string type;  // the alert type's name
  std::string url;
  std::string secret;
  std::string body;  // the JSON body, the same at every attempt
  std::int64_t attempts = 0;  // made before this one
};

// The outcome of one attempt, for record_webhook_attempt().
struct WebhookAttempt {
  enum class Next : std::uint8_t { kDelivered, kRetry, kFailed };
  Next next = Next::kRetry;
  std::int64_t at_ns = 0;            // when the attempt ended
  std::int64_t next_attempt_ns = 0;  // kRetry only
  int http_status = 0;               // 0: no HTTP answer
  std::string error;                 // empty when delivered
};

// One row of a delivery log (GET /api/v1/webhooks/{id}/deliveries).
struct WebhookDeliveryLog {
  std::string delivery_id;
  std::string event_id;
  std::string type;
  std::string status;  // "pending", "delivered" or "failed"
  std::int64_t attempts = 0;
  std::int64_t created_ns = 0;
  std::int64_t last_attempt_ns = 0;  // 0: none yet
  std::int64_t next_attempt_ns = 0;  // pending only
  int last_http_status = 0;
  std::string last_error;
};

// Decides the period a user's usage is summed over, from the user's record. Called with the
// store's lock held: it must not call back into the Storage.
using PeriodOf = absl::FunctionRef<TimeRange(const UserRecord&)>;

class Storage {
 public:
  virtual ~Storage() = default;

  // Creates a product whose API key has the SHA-256 `key_sha256` (64 lowercase hex digits; the
  // key itself is never given to a Storage). AlreadyExists when the id or the key hash is taken.
  virtual absl::Status create_product(std::string_view product_id, std::string_view name,
                                      std::string_view key_sha256) = 0;

  // The id of the product whose key hashes to `key_sha256`; NotFound when there is none.
  virtual absl::StatusOr<std::string> find_product_by_key(std::string_view key_sha256) = 0;

  // Creates a user. AlreadyExists when the product already has `user_id` (created by this call or
  // on the fly by ingest); nothing changes then.
  virtual absl::Status create_user(std::string_view product_id, std::string_view user_id,
                                   std::string_view name) = 0;

  // The user and their subscription; NotFound when the product has no such user.
  virtual absl::StatusOr<UserRecord> find_user(std::string_view product_id, std::string_view user_id) = 0;
  // find_user() of each of `user_ids` the product has, in id order (bytewise); unknown ids and
  // repeats are left out. A report over many customers reads them in a few queries (this default
  // asks one by one). An unknown product has none.
  virtual absl::StatusOr<std::vector<UserRecord>> find_users(std::string_view product_id,
                                                             std::span<const std::string_view> user_ids) {
    std::vector<UserRecord> out;
    for (std::string_view id : user_ids) {
      absl::StatusOr<UserRecord> user = find_user(product_id, id);
      if (absl::IsNotFound(user.status())) continue;
      if (!user.ok()) return user.status();
      out.push_back(*std::move(user));
    }
    std::sort(out.begin(), out.end(), [](const UserRecord& a, const UserRecord& b) { return a.user_id < b.user_id; });
    out.erase(std::unique(out.begin(), out.end(),
                          [](const UserRecord& a, const UserRecord& b) { return a.user_id == b.user_id; }),
              out.end());
    return out;
  }

  // Sets (replaces) a user's subscription. NotFound when the user does not exist; nothing changes
  // then. The plan's existence is the caller's check.
  virtual absl::Status set_subscription(std::string_view product_id, std::string_view user_id,
                                        const Subscription& subscription) = 0;

  // Replaces the product's plan config with `config_json` (already validated and normalised).
  virtual absl::Status put_plan_config(std::string_view product_id, std::string_view config_json) = 0;

  // The product's plan config JSON as last put, or nullopt when none was.
  virtual absl::StatusOr<std::optional<std::string>> plan_config(std::string_view product_id) = 0;

  // The revision of the product's plan config: 0 when it has none (or there is no such product),
  // else a positive number that grows at every put_plan_config(), including one made through
  // another process on the same database. A cheap read: a caller keeps what it derived from
  // plan_config() until the revision changes. Read it before plan_config(), so that a config put
  // in between is seen as a change at the next read rather than cached under the newer revision.
  virtual absl::StatusOr<std::int64_t> plan_config_revision(std::string_view product_id) = 0;

  // Stores a batch of events atomically: on success every event is either stored or counted as a
  // duplicate (its id is already stored for this product, or appears earlier in the batch; a
  // duplicate is not stored again, whatever its content). Users not yet known are created. On
  // failure nothing of the batch is stored; InvalidArgument naming "events[i].field" and the
  // event's user when its accepted events would take one of the product's all-time totals
  // (calls, each token count, cost_nanos) past int64 — the bound that keeps every sum a read
  // computes within int64 — Unavailable/Internal when the store cannot write.
  virtual absl::StatusOr<IngestResult> ingest(std::string_view product_id, std::span<const EventRecord> events) = 0;

  // As ingest(), and also reads, in the batch's transaction, every distinct user of the batch (as
  // find_user() would), the period `period_of` decides for them, and their totals over it by model
  // (as report() grouped by kModel for that user would), this batch included, into
  // IngestResult::usage. When those cannot be read, fails and stores nothing of the batch.
  // `soft_gates` (of the batch) are stored in the same transaction, each once per product, user,
  // limit, period start and threshold (one already stored is kept; not counted anywhere), the hard
  // ones (SoftGateFired::hard) apart from the soft; their users are created when unknown and are
  // among the users read. `events` may be empty when `soft_gates` is not.
  virtual absl::StatusOr<IngestResult> ingest_with_usage(std::string_view product_id,
                                                         std::span<const EventRecord> events, PeriodOf period_of,
                                                         std::span<const SoftGateFired> soft_gates) = 0;

  // The soft gates stored for `user_id` whose period_start_ns is in `period`, in the order and
  // within the bound of UserUsage::soft_gates. Empty for an unknown user or product.
  virtual absl::StatusOr<std::vector<SoftGateFired>> soft_gates_fired(std::string_view product_id,
                                                                      std::string_view user_id, TimeRange period) = 0;
  // The same for the hard gates that application processes reported (hard set, fired_ns the
  // first refusal as its process saw it), in the same order and bound.
  virtual absl::StatusOr<std::vector<SoftGateFired>> hard_gates_fired(std::string_view product_id,
                                                                      std::string_view user_id, TimeRange period) = 0;

  // What ingest_with_usage() reads for its users, for the product's users among `user_ids`
  // (distinct), stored nothing: users the product does not have are left out. In user id order.
  virtual absl::StatusOr<std::vector<UserUsage>> usage_of(std::string_view product_id,
                                                          std::span<const std::string> user_ids, PeriodOf period_of) = 0;

  // Totals over the product's events with query.from_ns <= ts_ns < query.to_ns (only
  // query.user_id's when set), grouped as asked; groups without events are absent. An unknown
  // user has no events (an empty map, not an error).
  virtual absl::StatusOr<GroupedTotals> report(std::string_view product_id, const ReportQuery& query) = 0;

  // --- The tracking API's records (server/sql_tracking.cpp). Unimplemented by default. ---

  // The customer `external_id` of the product: created (with its user, when the user is not
  // known yet) with `name` and `email` on the first call, returned as stored on later ones (their
  // `name` and `email` are then ignored).
  virtual absl::StatusOr<CustomerRecord> create_or_get_customer(std::string_view product_id,
                                                                std::string_view external_id, std::string_view name,
                                                                std::string_view email) {
    static_cast<void>(product_id), static_cast<void>(external_id), static_cast<void>(name), static_cast<void>(email);
    return absl::UnimplementedError("this storage has no customers");
  }
  // Opens a voice session. True when this call created it; false when it exists with the same
  // agent, customer and tags (a retry); AlreadyExists when it exists with others.
  virtual absl::StatusOr<bool> open_voice_session(std::string_view product_id, const VoiceSession& session) {
    static_cast<void>(product_id), static_cast<void>(session);
    return absl::UnimplementedError("this storage has no voice sessions");
  }
  // The session; NotFound when the product has none of that id.
  virtual absl::StatusOr<VoiceSession> find_voice_session(std::string_view product_id, std::string_view session_id) {
    static_cast<void>(product_id), static_cast<void>(session_id);
    return absl::UnimplementedError("this storage has no voice sessions");
  }
  // Closes the session with its billing event `billing` (whose id names the closing event) and
  // stores that event as ingest() would, in one transaction: both or neither, so that a crash
  // cannot leave a session closed and unbilled. OK when the session was open, or is already closed
  // by an event of billing.id (a retried indicator: the event counts as a duplicate);
  // FailedPrecondition when it is closed by another; NotFound when there is no such session.
  // Atomic: of two concurrent closes with different event ids exactly one succeeds.
  virtual absl::StatusOr<IngestResult> close_voice_session(std::string_view product_id, std::string_view session_id,
                                                           const EventRecord& billing) {
    static_cast<void>(product_id), static_cast<void>(session_id), static_cast<void>(billing);
    return absl::UnimplementedError("this storage has no voice sessions");
  }
  // Records that the product's Idempotency-Key whose hash is `key_sha256` was used for a request
  // whose body hashes to `body_sha256`: OK the first time and for the same body again (a retry);
  // FailedPrecondition when the key was used with another body.
  virtual absl::Status claim_idempotency_key(std::string_view product_id, std::string_view key_sha256,
                                             std::string_view body_sha256) {
    static_cast<void>(product_id), static_cast<void>(key_sha256), static_cast<void>(body_sha256);
    return absl::UnimplementedError("this storage has no idempotency keys");
  }
  // True when the product holds the event of id `event_id` (32 lowercase hex digits; another
  // text: InvalidArgument): a request that derived it from its Idempotency-Key was stored.
  virtual absl::StatusOr<bool> has_event(std::string_view product_id, std::string_view event_id) {
    static_cast<void>(product_id), static_cast<void>(event_id);
    return absl::UnimplementedError("this storage cannot look events up");
  }
  // Creates or replaces agent `agent.agent_id` with its name and indicators (those it had and
  // `agent` lacks are removed). True when it changed something (an identical put changes
  // nothing). NotFound without such a product, or naming the billable metric an indicator links
  // that the product does not have (nothing changes then); Unimplemented for a storage without agents.
  virtual absl::StatusOr<bool> put_agent(std::string_view product_id, const AgentRecord& agent) {
    static_cast<void>(product_id), static_cast<void>(agent);
    return absl::UnimplementedError("this storage has no agents");
  }
  // The product's agents in id order (empty for an unknown product).
  virtual absl::StatusOr<std::vector<AgentRecord>> list_agents(std::string_view product_id) {
    static_cast<void>(product_id);
    return absl::UnimplementedError("this storage has no agents");
  }
  // One agent; NotFound naming it when the product has none such.
  virtual absl::StatusOr<AgentRecord> find_agent(std::string_view product_id, std::string_view agent_id) {
    static_cast<void>(product_id), static_cast<void>(agent_id);
    return absl::UnimplementedError("this storage has no agents");
  }
  // Deletes an agent and its indicators (billing events already stored keep their revenue);
  // NotFound naming it when there is none.
  virtual absl::Status delete_agent(std::string_view product_id, std::string_view agent_id) {
    static_cast<void>(product_id), static_cast<void>(agent_id);
    return absl::UnimplementedError("this storage has no agents");
  }
  // --- Billable metrics (server/sql_metrics.cpp, docs/billing.md). Unimplemented by default. ---

  // Creates a metric: AlreadyExists naming its identifier when the product has it already.
  virtual absl::Status create_metric(std::string_view product_id, const MetricRecord& metric) {
    static_cast<void>(product_id), static_cast<void>(metric);
    return absl::UnimplementedError("this storage has no billable metrics");
  }
  // Replaces a metric's name, description and definition. True when it changed something.
  // NotFound naming it; FailedPrecondition naming the linking indicator when `metric.locked_json`
  // differs from the stored one while an indicator links the metric (nothing changes then).
  virtual absl::StatusOr<bool> update_metric(std::string_view product_id, const MetricRecord& metric) {
    static_cast<void>(product_id), static_cast<void>(metric);
    return absl::UnimplementedError("this storage has no billable metrics");
  }
  // The product's metrics in identifier order, with what links them (empty for an unknown product).
  virtual absl::StatusOr<std::vector<MetricRecord>> list_metrics(std::string_view product_id) {
    static_cast<void>(product_id);
    return absl::UnimplementedError("this storage has no billable metrics");
  }
  // One metric; NotFound naming it.
  virtual absl::StatusOr<MetricRecord> find_metric(std::string_view product_id, std::string_view identifier) {
    static_cast<void>(product_id), static_cast<void>(identifier);
    return absl::UnimplementedError("this storage has no billable metrics");
  }
  // Deletes a metric. NotFound naming it; FailedPrecondition naming the indicator that links it.
  virtual absl::Status delete_metric(std::string_view product_id, std::string_view identifier) {
    static_cast<void>(product_id), static_cast<void>(identifier);
    return absl::UnimplementedError("this storage has no billable metrics");
  }
  // Calls `fn` with each billing event of customer `customer_id` with range.from_ns <= ts_ns <
  // range.to_ns, in (ts_ns, id) order, read page by page in one read transaction; stops at the
  // first error `fn` returns and returns it.
  virtual absl::Status scan_billing_events(std::string_view product_id, std::string_view customer_id, TimeRange range,
                                           absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) {
    static_cast<void>(product_id), static_cast<void>(customer_id), static_cast<void>(range), static_cast<void>(fn);
    return absl::UnimplementedError("this storage has no billing events");
  }
  // As scan_billing_events, for every customer of the product at once (each row names its
  // customer), in (ts_ns, id) order: one pass over the range, for reports over every customer.
  virtual absl::Status scan_product_billing_events(std::string_view product_id, TimeRange range,
                                                   absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) {
    static_cast<void>(product_id), static_cast<void>(range), static_cast<void>(fn);
    return absl::UnimplementedError("this storage has no billing events");
  }

  // --- Credit wallets (server/sql_wallets.cpp, docs/billing.md). Unimplemented by default. ---

  // Adds `top_up` to customer `customer_id`'s wallet (made on the first top-up) at `now_ns`.
  // `created` is false when a top-up of that id was stored already with the same amounts (nothing
  // changes); AlreadyExists when its amounts differ; NotFound without such a product or customer
  // (a user of the product); InvalidArgument naming "credits" / "paidUsd" when not exact decimals,
  // credits not above 0 or paidUsd negative.
  struct TopUpResult {
    WalletRecord wallet;
    TopUpRecord top_up;  // as stored (the earlier one when `created` is false)
    bool created = false;
  };
  virtual absl::StatusOr<TopUpResult> top_up_wallet(std::string_view product_id, std::string_view customer_id,
                                                    const TopUpRecord& top_up, std::int64_t now_ns) {
    static_cast<void>(product_id), static_cast<void>(customer_id), static_cast<void>(top_up), static_cast<void>(now_ns);
    return absl::UnimplementedError("this storage has no credit wallets");
  }
  // The wallets of those of `customer_ids` that have one, in customer id order.
  virtual absl::StatusOr<std::vector<WalletRecord>> find_wallets(std::string_view product_id,
                                                                 std::span<const std::string_view> customer_ids) {
    static_cast<void>(product_id), static_cast<void>(customer_ids);
    return absl::UnimplementedError("this storage has no credit wallets");
  }
  // A wallet's top-ups, newest first, at most `limit`.
  virtual absl::StatusOr<std::vector<TopUpRecord>> list_top_ups(std::string_view product_id, std::string_view customer_id,
                                                                std::size_t limit) {
    static_cast<void>(product_id), static_cast<void>(customer_id), static_cast<void>(limit);
    return absl::UnimplementedError("this storage has no credit wallets");
  }
  // Debits the wallet for `period` as its usage now prices it: under the customer's lock (the one
  // ingest takes, so that settles on any number of replicas queue), calls `credits_of` with a scan
  // of the customer's billing events in that transaction, and moves each indicator's ledger row to
  // its credits (billing::recharge: a rise is taken from the balance, the rest is overage; a fall
  // gives back); ledger rows of the period whose indicator is no longer priced in CREDITS go back
  // to 0. Idempotent: settling again with nothing new changes nothing. nullopt when the customer
  // has no wallet (nothing is written). Writes nothing for a period that ended before the wallet
  // was made, nor for an indicator with a ledger row of another period overlapping this one (the
  // customer's periods changed: its usage there stays overage rather than be debited twice).
  virtual absl::StatusOr<std::optional<WalletRecord>> settle_wallet(std::string_view product_id,
                                                                    std::string_view customer_id, TimeRange period,
                                                                    std::int64_t now_ns, CreditsOf credits_of) {
    static_cast<void>(product_id), static_cast<void>(customer_id), static_cast<void>(period);
    static_cast<void>(now_ns), static_cast<void>(credits_of);
    return absl::UnimplementedError("this storage has no credit wallets");
  }
  // The settle an ingest of billing events marked for a customer with a wallet (in the ingest's
  // transaction, so that a crash or a failed settle after its commit loses nothing), nullopt
  // when none is pending. Api::settle_wallets settles every period from its from_ts_ns on, then
  // clears it with clear_wallet_settle_pending(version): a mark an ingest bumped meanwhile stays.
  virtual absl::StatusOr<std::optional<SettlePending>> wallet_settle_pending(std::string_view product_id,
                                                                             std::string_view customer_id) {
    static_cast<void>(product_id), static_cast<void>(customer_id);
    return absl::UnimplementedError("this storage has no credit wallets");
  }
  virtual absl::Status clear_wallet_settle_pending(std::string_view product_id, std::string_view customer_id,
                                                   std::int64_t version) {
    static_cast<void>(product_id), static_cast<void>(customer_id), static_cast<void>(version);
    return absl::UnimplementedError("this storage has no credit wallets");
  }
  // The ledger's rows of a customer's period (period_start_ns = period.from_ns), by indicator.
  virtual absl::StatusOr<std::vector<WalletCharge>> wallet_charges(std::string_view product_id,
                                                                   std::string_view customer_id, TimeRange period) {
    static_cast<void>(product_id), static_cast<void>(customer_id), static_cast<void>(period);
    return absl::UnimplementedError("this storage has no credit wallets");
  }

  // Cost and revenue of [range.from_ns, range.to_ns) grouped by `group`, in key order; groups with
  // neither cost rows nor billing events are absent. kTag groups by the value of meta tag
  // `tag_key` (non-empty): from its rollup when it is a report tag (set_report_tags), else read
  // from the events themselves.
  virtual absl::StatusOr<std::vector<ProfitRow>> profit_report(std::string_view product_id, TimeRange range,
                                                               ProfitGroup group, std::string_view tag_key = {}) {
    static_cast<void>(product_id), static_cast<void>(range), static_cast<void>(group), static_cast<void>(tag_key);
    return absl::UnimplementedError("this storage has no profit report");
  }

  // --- Report tags (server/sql_tags.cpp): the meta tags the profit report groups by from a rollup ---

  // Makes `tag_keys` (distinct, each 1 to 1,024 bytes, at most kMaxReportTags; checked by the
  // caller) the product's report tags: a key added gets its rollup (profit_daily_by_tag) filled
  // from every event stored so far, in this transaction (no event is stored meanwhile); a key
  // removed loses it. From then on ingest adds to it in its own transaction. NotFound for an
  // unknown product.
  virtual absl::Status set_report_tags(std::string_view product_id, std::span<const std::string> tag_keys) {
    static_cast<void>(product_id), static_cast<void>(tag_keys);
    return absl::UnimplementedError("this storage has no report tags");
  }
  // The product's report tags, in key order (empty for an unknown product).
  virtual absl::StatusOr<std::vector<std::string>> report_tags(std::string_view product_id) {
    static_cast<void>(product_id);
    return std::vector<std::string>{};
  }

  // --- Webhooks (server/sql_webhooks.cpp). Unimplemented by default. ---

  // As ingest_with_usage(), and in the same transaction, when the product has webhook endpoints:
  // calls `alerts_of` with the usage read and the union of their event masks, and puts every alert
  // it returns in the outbox (one pending delivery per endpoint subscribed to its type), unless an
  // alert of its key is already stored. So an alert is stored exactly when its batch is.
  virtual absl::StatusOr<IngestResult> ingest_with_alerts(std::string_view product_id,
                                                          std::span<const EventRecord> events, PeriodOf period_of,
                                                          std::span<const SoftGateFired> soft_gates,
                                                          AlertsOf alerts_of) {
    static_cast<void>(product_id), static_cast<void>(events), static_cast<void>(period_of);
    static_cast<void>(soft_gates), static_cast<void>(alerts_of);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // The products (their ids, in id order) with an endpoint that wants alerts of `type`.
  virtual absl::StatusOr<std::vector<std::string>> products_wanting(AlertType type) {
    static_cast<void>(type);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // The product's alert settings (GET/PUT /api/v1/config/alerts): the defaults until put.
  virtual absl::StatusOr<AlertSettings> alert_settings(std::string_view product_id) {
    static_cast<void>(product_id);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  virtual absl::Status put_alert_settings(std::string_view product_id, const AlertSettings& settings) {
    static_cast<void>(product_id), static_cast<void>(settings);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // Whether an alert of key `alert_key` was raised for the product (in webhook_alerts).
  virtual absl::StatusOr<bool> alert_raised(std::string_view product_id, std::string_view alert_key) {
    static_cast<void>(product_id), static_cast<void>(alert_key);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // Puts one alert in the outbox in a transaction of its own (as ingest_with_alerts() does).
  // True when stored; false when one of its key was already, or no endpoint wants its type.
  virtual absl::StatusOr<bool> enqueue_alert(std::string_view product_id, const WebhookAlert& alert) {
    static_cast<void>(product_id), static_cast<void>(alert);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // Stores an endpoint. AlreadyExists when the product has one of its id; NotFound without such
  // a product.
  virtual absl::Status create_webhook(std::string_view product_id, const WebhookEndpoint& endpoint) {
    static_cast<void>(product_id), static_cast<void>(endpoint);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // The product's endpoints in id order, secrets included (empty for an unknown product).
  virtual absl::StatusOr<std::vector<WebhookEndpoint>> list_webhooks(std::string_view product_id) {
    static_cast<void>(product_id);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // Deletes an endpoint and its deliveries (pending ones are never sent); NotFound naming it
  // when there is none.
  virtual absl::Status delete_webhook(std::string_view product_id, std::string_view endpoint_id) {
    static_cast<void>(product_id), static_cast<void>(endpoint_id);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // --- Dashboard sessions and portal tokens (docs/dashboard.md, server/dashboard_sessions.h) ---
  // Stored by their token's SHA-256, so that every replica on the database honours them.
  // Stores `session` unless its product has `max_live` unexpired sessions of its kind at `now_ns`
  // (operator sessions: customer_id ""; portal tokens: not), deleting the product's expired ones
  // first: ResourceExhausted naming the bound; NotFound without such a product.
  virtual absl::Status create_session(const SessionRecord& session, std::int64_t now_ns, std::size_t max_live) {
    static_cast<void>(session), static_cast<void>(now_ns), static_cast<void>(max_live);
    return absl::UnimplementedError("this storage has no dashboard sessions");
  }
  // The session of a token's SHA-256 if it is unexpired at `now_ns`, else nullopt.
  virtual absl::StatusOr<std::optional<SessionRecord>> find_session(std::string_view token_sha256, std::int64_t now_ns) {
    static_cast<void>(token_sha256), static_cast<void>(now_ns);
    return absl::UnimplementedError("this storage has no dashboard sessions");
  }
  // Ends a session now (sign-out); an unknown one is no error.
  virtual absl::Status delete_session(std::string_view token_sha256) {
    static_cast<void>(token_sha256);
    return absl::UnimplementedError("this storage has no dashboard sessions");
  }
  // At most `max` pending deliveries due at `now_ns`, at most one per product and none of the
  // products in `busy` (WebhookDelivery::product keys), the products whose earliest due delivery
  // is earliest first (so a product with a backlog does not hold back the others), each made not
  // due again until `lease_until_ns` so that no other sender (thread or replica) takes it
  // meanwhile. A sender that dies holding one leaves it due again at lease_until_ns.
  virtual absl::StatusOr<std::vector<WebhookDelivery>> claim_webhook_deliveries(std::int64_t now_ns,
                                                                                std::int64_t lease_until_ns,
                                                                                std::size_t max,
                                                                                std::span<const std::int64_t> busy) {
    static_cast<void>(now_ns), static_cast<void>(lease_until_ns), static_cast<void>(max), static_cast<void>(busy);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // Records an attempt of the claimed delivery `key`: delivered, due again at
  // attempt.next_attempt_ns, or failed for good. A delivery deleted meanwhile is ignored (OK).
  virtual absl::Status record_webhook_attempt(std::int64_t key, const WebhookAttempt& attempt) {
    static_cast<void>(key), static_cast<void>(attempt);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // The endpoint's deliveries, newest first, at most `limit`; NotFound naming the endpoint when
  // the product has none such.
  virtual absl::StatusOr<std::vector<WebhookDeliveryLog>> webhook_deliveries(std::string_view product_id,
                                                                             std::string_view endpoint_id,
                                                                             std::size_t limit) {
    static_cast<void>(product_id), static_cast<void>(endpoint_id), static_cast<void>(limit);
    return absl::UnimplementedError("this storage has no webhooks");
  }
  // The product's user ids after `after` in id order, at most `limit` (the forecast's scan).
  virtual absl::StatusOr<std::vector<std::string>> list_user_ids(std::string_view product_id, std::string_view after,
                                                                 std::size_t limit) {
    static_cast<void>(product_id), static_cast<void>(after), static_cast<void>(limit);
    return absl::UnimplementedError("this storage cannot list users");
  }
  // The forecast's scan, a page at a time: the product's users after `after` in id order, at most
  // `limit`, each with period_of(user) and the cost of their events in it, as of one moment.
  // An unknown product has no users.
  virtual absl::StatusOr<std::vector<UserPeriodCost>> period_costs(std::string_view product_id,
                                                                   std::string_view after, std::size_t limit,
                                                                   PeriodOf period_of) {
    static_cast<void>(product_id), static_cast<void>(after), static_cast<void>(limit), static_cast<void>(period_of);
    return absl::UnimplementedError("this storage cannot read periods' costs");
  }

  // Grants, renews or releases the leases of `holder` (32 lowercase hex digits) for `requests`,
  // at time `now_ns`, each to live until now_ns + ttl_ns: docs/leases.md, "The grant", in one
  // write transaction that holds the locks of the requests' users (so that grants on any number
  // of replicas agree, and agree with ingests). The answers are in the requests' order. On
  // failure nothing of the request is written. NotFound when there is no such product;
  // Unimplemented for a storage without leases (this default).
  virtual absl::StatusOr<std::vector<LeaseGrant>> grant_leases(std::string_view product_id, std::string_view holder,
                                                               std::span<const LeaseRequest> requests,
                                                               std::int64_t now_ns, std::int64_t ttl_ns) {
    static_cast<void>(product_id), static_cast<void>(holder), static_cast<void>(requests);
    static_cast<void>(now_ns), static_cast<void>(ttl_ns);
    return absl::UnimplementedError("this storage has no leases");
  }
};

}  // namespace paygent::server
