// Usage tracking beyond LLM calls: customers, agents, indicators, voice sessions, speech-to-text,
// text-to-speech, speech-to-speech, video and external costs (docs/tracking.md; the C++ form of the
// seeds' send_usage, send_indicator, track_* and voice-session methods). The calls themselves are
// members of paygent::Paygent (paygent.h); this header holds the values they take.
//
//   pg->create_or_get_customer({.external_id = "customer-123", .name = "Customer Name"});
//   pg->initialize_voice_session("call-1", "voice-agent", "customer-123");
//   pg->track_voice_stt("call-1", {.provider = "deepgram", .model = "nova-2",
//                                  .audio = std::chrono::minutes(20)});
//   pg->set_voice_indicator("call-1", "voice_call_completed", std::chrono::seconds(30));
//
// Every tracking call is fire-and-forget like record(): it prices the event from the catalog,
// counts its cost against the customer's period and session spend (a customer IS a guardrail user:
// the same id), queues it for the local store and returns; the syncer delivers it. It never
// throws and does no I/O; misuse (a negative or non-finite duration, an unknown or closed voice
// session, a second set_voice_indicator) is not sent and is reported through Options::on_error
// naming the reason. An unknown price keeps the event with cost 0 and cost_unknown set (counted in
// Stats::unknown_models, said once per model).
//
// Durations are exact integer microseconds: std::chrono::minutes, seconds, milliseconds and
// microseconds convert implicitly and exactly; a count of minutes or seconds as a double goes
// through MediaDuration::minutes / ::seconds, which round to the nearest microsecond once and
// keep a negative or non-finite value as invalid (reported by the call, never sent).
//
// Thread safety: every type here is a plain value, safe to copy between threads. The string_views
// in the usage structs need only outlive the call they are passed to.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "paygent/media_price.h"
#include "paygent/money.h"

namespace paygent {

// Tags carried by an event ({"source": "crm_webhook"}); a voice session's tags are inherited by
// every event of the session (the event's own tags win on the same key).
using MetaTags = std::vector<std::pair<std::string, std::string>>;

// A duration of audio or video, exact in microseconds, or invalid (a negative or non-finite count
// given as a double), so that the tracking call can report it instead of sending it.
class MediaDuration {
 public:
  constexpr MediaDuration() = default;
  // Exact: any std::chrono::duration that converts to microseconds without loss.
  template <class Rep, class Period>
    requires std::convertible_to<std::chrono::duration<Rep, Period>, std::chrono::microseconds>
  constexpr MediaDuration(std::chrono::duration<Rep, Period> d) noexcept  // NOLINT: implicit by design
      : us_(std::chrono::microseconds(d).count()) {}
  // A count of minutes (seconds) as the seeds write them (0.45): rounded to the nearest microsecond.
  // Negative, non-finite or beyond 100 years: invalid.
  [[nodiscard]] static MediaDuration minutes(double m) noexcept;
  [[nodiscard]] static MediaDuration seconds(double s) noexcept;

  [[nodiscard]] constexpr std::chrono::microseconds value() const noexcept { return std::chrono::microseconds(us_); }
  // False for a negative duration or a double that was not a finite, non-negative count.
  [[nodiscard]] constexpr bool valid() const noexcept { return us_ >= 0 && !non_finite_; }
  // True for a double that was not finite, or beyond 100 years (invalid too).
  [[nodiscard]] constexpr bool non_finite() const noexcept { return non_finite_; }

 private:
  std::int64_t us_ = 0;
  bool non_finite_ = false;
};

// create_or_get_customer's request (the seeds' CustomerCreateOrGetRequest).
struct CustomerRequest {
  std::string external_id;  // required: the customer's id in your system, and its guardrail user id
  std::string name;
  std::string email;
};

// A customer, as create_or_get_customer returns it. `id` is the guardrail user id (= external_id).
struct Customer {
  std::string id;
  std::string external_id;
  std::string name;
  std::string email;
  bool created = false;  // true only for the call that made it (across restarts of the local store)
};

// Tokens of an LLM call (send_usage's usage_data, track_voice_llm). `tier` is the seeds' `plan`.
struct LlmUsage {
  std::string_view provider;  // "openai" (free text; the cost comes from the model)
  std::string_view model;     // priced as record() prices it: the plan's cost_rates, else the catalog
  std::string_view tier;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;  // part of prompt_tokens read from the prompt cache
};

// Speech-to-text: audio transcribed.
struct SttUsage {
  std::string_view provider;  // "deepgram" (matched as PriceCatalog::find matches it)
  std::string_view model;     // "nova-2"
  std::string_view tier;      // "" or "default": the provider's default tier
  MediaDuration audio;
};

// Text-to-speech: characters synthesised.
struct TtsUsage {
  std::string_view provider;  // "amazon-polly"
  std::string_view model;     // "neural"
  std::string_view tier;
  std::int64_t characters = 0;
};

// Speech-to-speech (realtime / live): tokens per side and modality. Cached counts are part of the
// input counts (see ModalityTokens).
struct StsUsage {
  std::string_view provider;
  std::string_view model;
  std::string_view tier;
  ModalityTokens tokens;
};

// Video generated.
struct VideoUsage {
  std::string_view provider;
  std::string_view model;
  std::string_view tier;
  std::string_view resolution;  // "1280x720" where the price depends on it
  MediaDuration video;
};

// A cost the catalog does not know (telephony, a vendor invoice): its amount, exact.
struct ExternalCost {
  Nanos amount_nanos = 0;           // used when amount_usd is empty
  std::string_view amount_usd;      // "0.0132": an exact decimal of USD (parse_usd), else amount_nanos
  std::string_view description;     // "Twilio call 3m"
  std::string_view provider;        // optional: "twilio"
};

// A media call's estimate, for reserve_media / reserve_voice: what the gate holds before it runs.
struct MediaEstimate {
  MediaKind kind = MediaKind::kStt;  // kStt, kTts or kVideo
  std::string_view provider;
  std::string_view model;
  std::string_view tier;
  std::string_view resolution;  // kVideo
  MediaDuration duration;       // kStt: audio; kVideo: video
  std::int64_t characters = 0;  // kTts
};

// What the media call really used, for settle_media (the field of the estimate's kind).
struct MediaActual {
  MediaDuration duration;
  std::int64_t characters = 0;
};

}  // namespace paygent
