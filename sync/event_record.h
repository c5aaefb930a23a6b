// The usage event as one record and one codec, shared by the library (engine queue, local store,
// syncer) and by paygentd (wire reader, storage).
//
// EventRecord is the event; kEventFields lists its fields once: the wire name (which is also the
// column name in both SQLite tables), the type, the wire version that introduced it, and whether
// it is required. Everything that writes or reads an event is driven by that table: the syncer's
// JSON encoder (encode_event_batch), paygentd's strict JSON reader (server/wire.cpp), the column
// lists, binds and reads of the local store's and paygentd's events tables, and their upgrade
// (add_missing_event_columns). Adding a field is one member and one entry in kEventFields.
//
// Versions (docs/wire.md, "Versions"): the fields of version 1 are required in every batch; every
// later field is optional, and its default is the value EventRecord{} holds. The encoder leaves
// out optional fields that hold their default and stamps a batch with the lowest version that can
// carry it (wire_version_needed), so that a batch of events without new information is a version 1
// batch that any paygentd reads.
//
// Thread safety: plain values and free functions without shared state.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "paygent/usage.h"

struct sqlite3;
struct sqlite3_stmt;

namespace paygent::internal {

// The newest wire version this build reads and writes. paygentd says its own in the
// "Paygent-Wire-Version" header of every reply.
inline constexpr int kWireVersion = 5;
// The wire version that added the batch's "soft_gates" (docs/wire.md, "Soft gates").
inline constexpr int kSoftGatesWireVersion = 3;
// The wire version that added the quantities of speech, video and external costs (docs/wire.md,
// "Versions"): audio_us, characters, video_us, the audio token subsets, tier, resolution,
// description and cost_unknown.
inline constexpr int kMediaWireVersion = 4;
// The wire version that added the batch's "hard_gates" (docs/wire.md, "Hard gates").
inline constexpr int kHardGatesWireVersion = 5;
inline constexpr std::string_view kWireVersionHeader = "Paygent-Wire-Version";

// What was used: a language model call, speech (speech-to-text, text-to-speech,
// speech-to-speech), video, an external cost, or a billing event.
enum class UsageKind : std::uint8_t { kLlm, kStt, kTts, kSts, kVideo, kExternal, kBilling };
inline constexpr std::array<std::string_view, 7> kUsageKindNames = {"llm",   "stt",      "tts",    "sts",
                                                                    "video", "external", "billing"};
[[nodiscard]] std::string_view usage_kind_name(UsageKind kind) noexcept;
// False (and `out` unchanged) when `name` is none of kUsageKindNames.
[[nodiscard]] bool parse_usage_kind(std::string_view name, UsageKind& out) noexcept;

// The fixed-size part of an event: its kind, quantities, cost, time and flags. Trivially copyable,
// so that the engine's lock-free queue carries it by value without allocating.
struct EventQuantities {
  UsageKind kind = UsageKind::kLlm;
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cached_input_tokens = 0;
  std::int64_t cache_creation_input_tokens = 0;
  std::int64_t reasoning_tokens = 0;
  std::int64_t cost_nanos = 0;  // provider cost in nano-USD
  std::int64_t ts_ns = 0;       // when the call started (Unix ns, UTC); decides the billing period
  // Quantities of the other kinds (version 4). Durations are exact integer microseconds.
  std::int64_t audio_us = 0;    // stt: audio transcribed; billing: a voice session's duration
  std::int64_t characters = 0;  // tts: characters synthesised
  std::int64_t video_us = 0;    // video: seconds of video generated
  // sts (and llm calls with audio): the audio part of input_tokens, of cached_input_tokens and of
  // output_tokens. The text part is the rest (input_tokens - audio_input_tokens, ...).
  std::int64_t audio_input_tokens = 0;
  std::int64_t cached_audio_input_tokens = 0;
  std::int64_t audio_output_tokens = 0;
  bool estimated = false;       // the reservation's estimate was metered (the real usage was unreadable)
  // No price was found for the event's provider, model and tier: cost_nanos is 0 and means
  // "unknown", not "free". Reports count these events instead of summing them as $0.
  bool cost_unknown = false;

  [[nodiscard]] Usage usage() const noexcept {
    return Usage{input_tokens, output_tokens, cached_input_tokens, cache_creation_input_tokens, reasoning_tokens};
  }
  void set_usage(const Usage& u) noexcept {
    input_tokens = u.input_tokens;
    output_tokens = u.output_tokens;
    cached_input_tokens = u.cached_input_tokens;
    cache_creation_input_tokens = u.cache_creation_input_tokens;
    reasoning_tokens = u.reasoning_tokens;
  }
  friend bool operator==(const EventQuantities&, const EventQuantities&) = default;
};
static_assert(std::is_trivially_copyable_v<EventQuantities>);

// One metered call with owned text: as stored in the local store, sent by the syncer, read by
// paygentd and stored there.
struct EventRecord : EventQuantities {
  std::string id;  // 32 lowercase hex digits; unique per event (per product on the server)
  std::string user_id;
  std::string session_id;
  std::string agent_id;
  std::string indicator;
  std::string model;
  std::string provider;
  std::string meta_tags_json = "{}";  // a JSON object of string values
  std::string tier;         // the provider's pricing tier the cost was priced at; empty: "default"
  std::string resolution;   // video: the resolution its price depends on ("1280x720"); else empty
  std::string description;  // external: what the cost was ("Twilio call 3m"); else empty
  friend bool operator==(const EventRecord&, const EventRecord&) = default;
};

enum class EventFieldType : std::uint8_t {
  kId,        // text: 32 lowercase hex digits (not a payload column: each table stores it its own way)
  kText,      // text of at most 1,024 bytes
  kCount,     // non-negative integer that fits in int64
  kBool,      // true or false (0 or 1 in SQLite)
  kMetaTags,  // an object of string values, kept as its JSON text
  kKind,      // one of kUsageKindNames
};

struct EventField {
  std::string_view name;  // on the wire and in both tables
  EventFieldType type;
  int since_version;  // the wire version that introduced the field
  bool required;      // in every batch (version 1's fields); else optional, defaulting to EventRecord{}'s value
  bool non_empty = false;                          // kText that must not be empty
  std::string EventRecord::*text = nullptr;        // kId, kText, kMetaTags
  std::int64_t EventQuantities::*count = nullptr;  // kCount
  bool EventQuantities::*flag = nullptr;           // kBool
  // A note the backend counts nothing by (cost_unknown): a backend older than since_version gets
  // the event without it instead of the event being held for a newer one.
  bool informational = false;
};

// Every field of an event, in the order the encoder writes them. A new field goes here (with
// since_version = the new kWireVersion, required = false) and in EventRecord.
inline constexpr std::array<EventField, 27> kEventFields = {{
    {"id", EventFieldType::kId, 1, true, false, &EventRecord::id},
    {"user_id", EventFieldType::kText, 1, true, true, &EventRecord::user_id},
    {"session_id", EventFieldType::kText, 1, true, false, &EventRecord::session_id},
    {"agent_id", EventFieldType::kText, 1, true, false, &EventRecord::agent_id},
    {"indicator", EventFieldType::kText, 1, true, false, &EventRecord::indicator},
    {"model", EventFieldType::kText, 1, true, false, &EventRecord::model},
    {"provider", EventFieldType::kText, 1, true, false, &EventRecord::provider},
    {"input_tokens", EventFieldType::kCount, 1, true, false, nullptr, &EventQuantities::input_tokens},
    {"output_tokens", EventFieldType::kCount, 1, true, false, nullptr, &EventQuantities::output_tokens},
    {"cached_input_tokens", EventFieldType::kCount, 1, true, false, nullptr, &EventQuantities::cached_input_tokens},
    {"cache_creation_input_tokens", EventFieldType::kCount, 1, true, false, nullptr,
     &EventQuantities::cache_creation_input_tokens},
    {"reasoning_tokens", EventFieldType::kCount, 1, true, false, nullptr, &EventQuantities::reasoning_tokens},
    {"cost_nanos", EventFieldType::kCount, 1, true, false, nullptr, &EventQuantities::cost_nanos},
    {"ts_ns", EventFieldType::kCount, 1, true, false, nullptr, &EventQuantities::ts_ns},
    {"meta_tags", EventFieldType::kMetaTags, 1, true, false, &EventRecord::meta_tags_json},
    {"estimated", EventFieldType::kBool, 1, true, false, nullptr, nullptr, &EventQuantities::estimated},
    {"kind", EventFieldType::kKind, 2, false},
    {"audio_us", EventFieldType::kCount, 4, false, false, nullptr, &EventQuantities::audio_us},
    {"characters", EventFieldType::kCount, 4, false, false, nullptr, &EventQuantities::characters},
    {"video_us", EventFieldType::kCount, 4, false, false, nullptr, &EventQuantities::video_us},
    {"audio_input_tokens", EventFieldType::kCount, 4, false, false, nullptr, &EventQuantities::audio_input_tokens},
    {"cached_audio_input_tokens", EventFieldType::kCount, 4, false, false, nullptr,
     &EventQuantities::cached_audio_input_tokens},
    {"audio_output_tokens", EventFieldType::kCount, 4, false, false, nullptr, &EventQuantities::audio_output_tokens},
    {"tier", EventFieldType::kText, 4, false, false, &EventRecord::tier},
    {"resolution", EventFieldType::kText, 4, false, false, &EventRecord::resolution},
    {"description", EventFieldType::kText, 4, false, false, &EventRecord::description},
    {"cost_unknown", EventFieldType::kBool, 4, false, false, nullptr, nullptr, &EventQuantities::cost_unknown, true},
}};

// A soft-gate threshold that fired: once per threshold, limit and period, across restarts (the
// local store's soft_gates_fired) and across processes (a batch's "soft_gates", paygentd's
// soft_gates table, and the "soft_gates" of its per-user usage objects).
//
// With `hard`, the limit's hard gate: the first call this process refused on that limit in that
// period (the local store's hard_gates_fired, a batch's "hard_gates", paygentd's hard_gates
// table), so that the backend's gate history holds the refusals that spent nothing.
struct FiredThreshold {
  std::string user_id;
  std::string limit_key;  // "total_spend", "session_spend:<session id>", "model_limit:<model>"
  std::int64_t period_start_ns = 0;  // the billing period's start, or the session's
  std::int64_t threshold_ppm = 0;    // 1 to 1,000,000 (800000: 80% of the limit); a hard gate's hard_gate_at
  bool hard = false;
  std::int64_t fired_ns = 0;  // a hard gate's: when the first call was refused (0: unknown)
  friend bool operator==(const FiredThreshold&, const FiredThreshold&) = default;
};

// --- JSON (docs/wire.md, "Ingest") ---

// True when `e`'s value of `field` is its default (EventRecord{}'s value).
[[nodiscard]] bool holds_default(const EventRecord& e, const EventField& field);
// Whether `e` is written with `field` to a backend of `backend_version`: a required field always;
// an optional one when it does not hold its default, and (informational) the backend reads it.
[[nodiscard]] bool writes_field(const EventRecord& e, const EventField& field, int backend_version);
// The lowest wire version that carries `e` to a backend of `backend_version` without loss: the
// highest since_version among the fields written (1 for an event without new information). An
// informational field newer than the backend is left out, so it never makes an event wait.
[[nodiscard]] int wire_version_needed(const EventRecord& e, int backend_version = kWireVersion);
// {"v": N, "events": [...], "soft_gates": [...], "hard_gates": [...]} ("v" only when N > 1; each
// gates' array only when `soft_gates` holds one of its kind: FiredThreshold::hard), N the highest
// wire_version_needed of `events` for `backend_version`, and at least kSoftGatesWireVersion with
// soft gates, kHardGatesWireVersion with hard ones. The fields written are
// writes_field()'s.
// `e.meta_tags_json` is written as it is (it must be a JSON object; empty is written as {}).
// `events` may be empty only when `soft_gates` is not (paygentd refuses a batch of neither).
[[nodiscard]] std::string encode_event_batch(std::span<const EventRecord> events,
                                             std::span<const FiredThreshold> soft_gates = {},
                                             int backend_version = kWireVersion);

// --- SQLite: the payload columns (every field but the id) of both events tables ---

// "user_id, session_id, ..." in kEventFields' order.
[[nodiscard]] std::string event_columns();
// "?3, ?4, ..." for the payload columns, numbered from `first`.
[[nodiscard]] std::string event_placeholders(int first);
// "user_id TEXT NOT NULL, ..., kind TEXT NOT NULL DEFAULT 'llm'" for a CREATE TABLE (optional
// fields carry their default, so that an ALTER TABLE can add them to an older table).
[[nodiscard]] std::string event_column_definitions();
inline constexpr int kEventColumnCount = static_cast<int>(kEventFields.size()) - 1;
// Binds the payload columns of `e` to parameters first, first + 1, ... Text is bound without a
// copy: `e` must outlive the statement's next sqlite3_step.
void bind_event_columns(sqlite3_stmt* statement, int first, const EventRecord& e);
// Reads the payload columns of the current row, from result column `first` on, into `e`.
void read_event_columns(sqlite3_stmt* statement, int first, EventRecord& e);
// Upgrades an events table written by an older build: adds the optional fields' missing columns
// (ALTER TABLE ... ADD COLUMN ... DEFAULT <default>). FailedPrecondition naming the column when a
// required one is missing (not an events table this build knows); Internal on a SQLite failure.
// Run it inside the transaction that opens the store.
absl::Status add_missing_event_columns(sqlite3* db, std::string_view table);

}  // namespace paygent::internal
