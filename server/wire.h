// The JSON bodies of paygentd's API (docs/wire.md): strict parsing of request bodies into
// records, and the small JSON writing the replies need.
//
// Parsing is strict: a body must be one JSON object with exactly the documented fields (an unknown
// or repeated field is refused, so that a typo never silently means a default), every field of
// the documented type, counts and amounts non-negative integers that fit in int64. A failure is
// InvalidArgument whose message starts with the path of the offending field, e.g.
//   "events[3].cost_nanos: must be a non-negative integer"
//   "body: not valid JSON (truncated or malformed): ..."
//
// Thread safety: free functions, safe from any thread (each thread parses with its own parser).
// The returned records own their text; nothing of `body` is kept.
#pragma once

#include "meter/internal/json_text.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/storage.h"

namespace paygent::server {

inline constexpr std::size_t kMaxBatchEvents = 1000;
// Most soft gates in one batch.
inline constexpr std::size_t kMaxBatchSoftGates = 1000;
// Longest id, name or other text field, in bytes.
inline constexpr std::size_t kMaxTextBytes = 1024;
// Most meta tags on one event.
inline constexpr std::size_t kMaxMetaTags = 64;

// POST /api/v1/events:batch: {"v": wire version (optional, 1 when absent), "events": [1 to 1,000
// events]}. An event's fields are those of the event's field table (sync/event_record.h): the
// version 1 fields are required: id (32 lowercase hex digits), user_id (non-empty), session_id,
// agent_id, indicator, model, provider (strings), input_tokens, output_tokens,
// cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos, ts_ns
// (non-negative integers), meta_tags (an object of at most 64 string values), estimated
// (boolean); later ones are optional and default as EventRecord{} does: kind (version 2; "llm").
// Unknown fields (of the batch or of an event) are refused when "v" is at most
// internal::kWireVersion, and ignored when it is higher (a newer library's fields).
//
// "soft_gates" (wire version 3; read whatever "v" says, like every field this paygentd knows): an
// array of at most 1,000 {"user_id": non-empty string, "limit": "total_spend" |
// "session_spend:<session id>" | "model_limit:<model>", "period_start_ns": non-negative integer,
// "threshold_ppm": 1 to 1,000,000}. "events" may then be empty: a batch must hold an event or a
// soft gate. "hard_gates" (wire version 5): the same, with an optional "fired_ns" (non-negative
// integer), read into `soft_gates` with SoftGateFired::hard set, after the soft ones.
struct EventBatch {
  std::vector<EventRecord> events;
  std::vector<SoftGateFired> soft_gates;  // the soft gates, then the hard gates
};
absl::StatusOr<EventBatch> parse_ingest_batch(std::string_view body);
// The events of parse_ingest_batch().
absl::StatusOr<std::vector<EventRecord>> parse_event_batch(std::string_view body);

// POST /api/v1/usage:query: {"users": [1 to 1,000 distinct non-empty user ids]}.
absl::StatusOr<std::vector<std::string>> parse_usage_query(std::string_view body);

// POST /api/v1/products: {"name": non-empty string}.
struct NewProduct {
  std::string name;
};
absl::StatusOr<NewProduct> parse_new_product(std::string_view body);

// POST /api/v1/users: {"user_id": non-empty string, "name": optional string}.
struct NewUser {
  std::string user_id;
  std::string name;
};
absl::StatusOr<NewUser> parse_new_user(std::string_view body);

// POST /api/v1/webhooks (docs/webhooks.md): {"url": non-empty string, "events": optional array of
// distinct non-empty strings}. The URL and the event names are the caller's to check
// (server/webhooks.h); an absent "events" is empty here.
struct NewWebhook {
  std::string url;
  std::vector<std::string> events;
};
absl::StatusOr<NewWebhook> parse_new_webhook(std::string_view body);

// {"tags": ["region", ...]}: at most kMaxReportTags distinct meta tag keys, each 1 to 1,024 bytes
// (PUT /api/v1/config/report-tags), returned in key order.
absl::StatusOr<std::vector<std::string>> parse_report_tags(std::string_view body);
// PUT /api/v1/config/alerts: {"wallet_low_percent": 1 to 99} (docs/webhooks.md, "Settings").
absl::StatusOr<AlertSettings> parse_alert_settings(std::string_view body);

// POST /api/v1/users/{id}/subscription: {"plan": non-empty string, "period_start": RFC 3339,
// "period_end": RFC 3339 after period_start}, both between 1970 and 2262 (int64 nanoseconds).
absl::StatusOr<Subscription> parse_subscription(std::string_view body);

// Most entries in one POST /api/v1/leases.
inline constexpr std::size_t kMaxLeaseEntries = 100;

// POST /api/v1/leases (docs/leases.md): {"holder": 32 lowercase hex digits, "leases": [at most
// 100 entries]}, every entry with every field: "user_id" (non-empty) and "limit" ("total_spend",
// "model_limit:<model>" or "session_spend:<session id>") as an event's texts, "period_start_ns",
// "period_end_ns", "cap", "used", "acked", "want", "need" (non-negative integers), "release"
// (boolean). Refused naming the field: period_end_ns <= period_start_ns, acked > used, want or
// need not 0 with release, an entry whose (user_id, limit, period_start_ns) an earlier one has.
// Unknown and repeated fields are refused (whatever "v" an ingest would say: this body has none).
struct LeaseBatch {
  std::string holder;
  std::vector<LeaseRequest> leases;
};
absl::StatusOr<LeaseBatch> parse_lease_request(std::string_view body);

// The reply of POST /api/v1/leases: {"ttl_ms": ttl_ms, "leases": [one object per grant, in order]}.
std::string lease_reply_json(std::int64_t ttl_ms, std::span<const LeaseGrant> grants);

using internal::json_quote;  // meter/internal/json_text.h

// `unix_ns` as RFC 3339 UTC text with a "Z" suffix ("2026-11-01T00:00:00Z"; fractional seconds
// only when there are some).
std::string rfc3339_utc(std::int64_t unix_ns);

// True when `text` is valid UTF-8 (for text that did not come through the JSON parser, such as a
// percent-decoded path segment).
bool valid_utf8(std::string_view text) noexcept;

}  // namespace paygent::server
