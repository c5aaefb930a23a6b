// paygent::UsageEvent: one metered call, as handed to on_usage and to the store.
//
// Thread safety: a view valid only during the callback that receives it; copy what you keep.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "paygent/money.h"
#include "paygent/usage.h"

namespace paygent {

// A 128-bit id, unique per event (random, from a per-process seed and a counter), so that a
// retried or duplicated delivery is never counted twice.
struct EventId {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  [[nodiscard]] std::string to_string() const;  // 32 lowercase hex digits
  friend bool operator==(const EventId&, const EventId&) = default;
};

struct UsageEvent {
  EventId id;
  std::string_view user_id;
  std::string_view session_id;  // the named session, or the implicit one ("auto-<start ms>")
  std::string_view agent_id;
  std::string_view indicator;
  const std::vector<std::pair<std::string, std::string>>* meta_tags = nullptr;  // never null in callbacks
  std::string_view model;  // canonical model name
  Provider provider = Provider::kUnknown;
  Usage usage;
  Nanos cost = 0;          // provider cost in nano-USD
  absl::Time timestamp;    // when the call started; decides the billing period
  // How the cost was found: from the plan's cost_rates, the built-in catalog, or neither (cost 0,
  // reported through on_error and Stats::unknown_models).
  enum class PriceSource : std::uint8_t { kPlan, kCatalog, kUnknown } price_source = PriceSource::kUnknown;
  // True when the call's real usage was not available (the response could not be read) and the
  // reservation's estimate was metered instead.
  bool estimated = false;
  // What was used (docs/tracking.md): "llm" for calls metered by record(), settle() and
  // send_usage(); "stt", "tts", "sts", "video", "external" or "billing" for the tracking calls
  // (tracking.h), whose quantities are in the fields below (0 when not of their kind).
  std::string_view kind = "llm";
  std::string_view provider_text;  // the tracking calls' provider ("deepgram"); empty for record()
  std::string_view tier;           // the pricing tier the cost was priced at (tracking calls)
  std::int64_t audio_us = 0;       // stt: audio transcribed; billing: the voice session's duration
  std::int64_t characters = 0;     // tts
  std::int64_t video_us = 0;       // video
  bool cost_unknown = false;       // no price was found: `cost` is 0 and means unknown
};

}  // namespace paygent
