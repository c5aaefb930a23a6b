// Prices of speech and video: speech-to-text per audio minute, text-to-speech per character,
// speech-to-speech per token of each modality, video per second (optionally per resolution).
//
// The built-in prices live in the "media" section of meter/prices.json, each with its source URL
// and the date it was read; PriceCatalog::find(MediaKind, ...) looks them up (price_catalog.h).
//
// Units, chosen so that every published price is an exact integer:
//   - audio and video time: pico-USD per HOUR. $0.0058 per minute is 348,000,000,000; $1.00 per
//     hour is 1,000,000,000,000; $0.10 per second is 360,000,000,000,000. (Per minute or per
//     second would make per-hour prices such as Azure's $1/hour inexact; per hour takes all three.)
//   - characters: pico-USD per character ($16 per 1M characters is 16,000,000).
//   - tokens: pico-USD per token, as for LLMs ($32 per 1M audio tokens is 32,000,000).
// Durations are exact integer microseconds (std::chrono::microseconds; minutes, seconds and
// milliseconds convert to it implicitly and exactly), never floating point. Each cost function
// computes the exact product and rounds once, half-up, to nano-USD, as cost_of() does for LLMs.
//
// Thread safety: MediaPrice is a plain value (its string views point into the catalog that made
// it, valid for that catalog's lifetime); the functions here are pure and safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "paygent/money.h"

namespace paygent {

// What a media price is charged for.
enum class MediaKind : std::uint8_t {
  kStt,    // speech-to-text: per hour of audio (picos_per_hour)
  kTts,    // text-to-speech: per character (picos_per_character)
  kSts,    // speech-to-speech (realtime / live): per token of each modality (tokens)
  kVideo,  // video generation: per hour of video (picos_per_hour), maybe per resolution
};

// "stt", "tts", "sts", "video": the names used in the data file and in error messages.
[[nodiscard]] std::string_view media_kind_name(MediaKind kind) noexcept;

// Speech-to-speech rates, pico-USD per token of each modality. Cached rates equal the uncached
// ones when the provider publishes none.
struct ModalityPrices {
  PicosPerToken text_input = 0;
  PicosPerToken cached_text_input = 0;
  PicosPerToken audio_input = 0;
  PicosPerToken cached_audio_input = 0;
  PicosPerToken text_output = 0;
  PicosPerToken audio_output = 0;
};

// Speech-to-speech token counts. The cached counts are part of the input counts (as OpenAI's
// realtime usage reports them: input_token_details.cached_tokens_details), so text_input 100 with
// cached_text_input 60 is 40 uncached and 60 cached tokens. Negative counts count as zero.
struct ModalityTokens {
  std::int64_t text_input = 0;
  std::int64_t cached_text_input = 0;
  std::int64_t audio_input = 0;
  std::int64_t cached_audio_input = 0;
  std::int64_t text_output = 0;
  std::int64_t audio_output = 0;
};

// One price of the catalog: a (kind, provider, model, tier[, resolution]) and its rate. Only the
// rate field of its kind is set; the others are zero.
struct MediaPrice {
  MediaKind kind = MediaKind::kStt;
  std::string_view provider;    // the catalog's provider id: "deepgram", "amazon-polly"
  std::string_view model;       // the model name as the data file writes it: "nova-2", "neural"
  std::string_view tier;        // the tier this price is for, as written: "pay-as-you-go", "growth"
  std::string_view resolution;  // kVideo priced per resolution: "1280x720"; else empty
  std::string_view source;      // where the price was read (https URL)
  std::string_view as_of;       // when it was read, "YYYY-MM-DD"

  std::int64_t picos_per_hour = 0;       // kStt, kVideo
  std::int64_t picos_per_character = 0;  // kTts
  ModalityPrices tokens;                 // kSts
};

// Cost of `duration` of audio (kStt) or video (kVideo) at `price.picos_per_hour`: exact, then
// rounded half-up to nano-USD once. A negative duration counts as zero; a result beyond int64
// saturates. For a price of another kind (whose picos_per_hour is 0) the result is 0.
[[nodiscard]] Nanos cost_of_duration(const MediaPrice& price, std::chrono::microseconds duration) noexcept;

// Cost of `characters` synthesised (kTts) at `price.picos_per_character`, rounded as above.
[[nodiscard]] Nanos cost_of_characters(const MediaPrice& price, std::int64_t characters) noexcept;

// Cost of a speech-to-speech exchange (kSts): uncached input at the input rates, cached input at
// the cached rates, output at the output rates; the sum rounded half-up to nano-USD once. Cached
// counts above their input counts are priced as cached and the uncached part as zero.
[[nodiscard]] Nanos cost_of_modality_tokens(const MediaPrice& price, const ModalityTokens& tokens) noexcept;

// Parses a decimal number of minutes ("20", "0.45", "2.5e-1") exactly into microseconds (one
// minute is 60,000,000). InvalidArgument when it is negative, not a decimal, finer than one
// microsecond, or too large. For the JSON bodies of the tracking API, which carry minutes.
absl::StatusOr<std::chrono::microseconds> parse_minutes(std::string_view decimal);

// The same for a decimal number of seconds ("8", "4.5").
absl::StatusOr<std::chrono::microseconds> parse_seconds(std::string_view decimal);

}  // namespace paygent
