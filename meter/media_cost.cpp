// Exact costs of speech and video, and exact durations from decimal text (see
// include/paygent/media_price.h).
#include <chrono>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meter/internal/catalog_parse.h"
#include "meter/internal/str_cat.h"
#include "paygent/media_price.h"
#include "paygent/money.h"

namespace paygent {
namespace {

__extension__ using Wide = unsigned __int128;  // exact: every product of two int64 fits

constexpr std::uint64_t kMicrosPerHour = 3'600'000'000;
constexpr std::uint64_t kPicosPerNano = 1'000;

std::uint64_t non_negative(std::int64_t v) noexcept { return v < 0 ? 0 : static_cast<std::uint64_t>(v); }

// round(numerator / denominator), half-up, saturated to int64. The one rounding of every cost.
Nanos round_half_up(Wide numerator, std::uint64_t denominator) noexcept {
  const Wide nanos = (numerator + denominator / 2) / denominator;
  return nanos > static_cast<Wide>(INT64_MAX) ? INT64_MAX : static_cast<Nanos>(nanos);
}

}  // namespace

std::string_view media_kind_name(MediaKind kind) noexcept {
  switch (kind) {
    case MediaKind::kStt: return "stt";
    case MediaKind::kTts: return "tts";
    case MediaKind::kSts: return "sts";
    case MediaKind::kVideo: return "video";
  }
  return "unknown";
}

Nanos cost_of_duration(const MediaPrice& price, std::chrono::microseconds duration) noexcept {
  // pico-USD per hour x microseconds / (microseconds per hour) = pico-USD; / 1000 = nano-USD.
  // The denominator is 2^13 x 439,453,125, and floor(n / (2^13 x d)) = floor(floor(n / 2^13) / d):
  // the half-up numerator is shifted, then divided in 64 bits by a constant (a multiplication)
  // instead of in 128 bits (a library call, ~20 ns), whenever the shifted value fits 64 bits
  // (numerators up to ~1.5e23 pico-USD: 20 minutes at any catalog price, and far beyond).
  constexpr std::uint64_t kDenominator = kMicrosPerHour * kPicosPerNano;  // 3.6e12
  constexpr int kShift = 13;
  constexpr std::uint64_t kOdd = kDenominator >> kShift;
  static_assert(kOdd << kShift == kDenominator);
  const Wide numerator = static_cast<Wide>(non_negative(price.picos_per_hour)) * non_negative(duration.count());
  const Wide shifted = (numerator + kDenominator / 2) >> kShift;  // < 2^126 + 2^42: no overflow
  if (shifted <= UINT64_MAX) [[likely]] {
    const std::uint64_t nanos = static_cast<std::uint64_t>(shifted) / kOdd;
    return nanos > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<Nanos>(nanos);
  }
  return round_half_up(numerator, kDenominator);
}

Nanos cost_of_characters(const MediaPrice& price, std::int64_t characters) noexcept {
  return round_half_up(static_cast<Wide>(non_negative(price.picos_per_character)) * non_negative(characters),
                       kPicosPerNano);
}

Nanos cost_of_modality_tokens(const MediaPrice& price, const ModalityTokens& tokens) noexcept {
  const ModalityPrices& p = price.tokens;
  const std::uint64_t cached_text = non_negative(tokens.cached_text_input);
  const std::uint64_t cached_audio = non_negative(tokens.cached_audio_input);
  const std::uint64_t text_in = non_negative(tokens.text_input);
  const std::uint64_t audio_in = non_negative(tokens.audio_input);
  const struct {
    std::uint64_t count;
    PicosPerToken rate;
  } parts[] = {
      {text_in > cached_text ? text_in - cached_text : 0, p.text_input},
      {cached_text, p.cached_text_input},
      {audio_in > cached_audio ? audio_in - cached_audio : 0, p.audio_input},
      {cached_audio, p.cached_audio_input},
      {non_negative(tokens.text_output), p.text_output},
      {non_negative(tokens.audio_output), p.audio_output},
  };
  Wide picos = 0;
  for (const auto& part : parts) {
    // Each product is below 2^126; only a sum of several such absurd counts can pass 2^128.
    if (__builtin_add_overflow(picos, static_cast<Wide>(part.count) * non_negative(part.rate), &picos)) {
      return INT64_MAX;
    }
  }
  return round_half_up(picos, kPicosPerNano);
}

absl::StatusOr<std::chrono::microseconds> parse_minutes(std::string_view decimal) {
  // In 1e-8 minutes (every whole number of microseconds has at most 8 decimals as minutes:
  // 1 us = 1/(2^8 * 5^7 * 3) minute), then x 0.6 to microseconds when that is exact.
  absl::StatusOr<std::int64_t> units = internal::parse_scaled_decimal(decimal, 8, 1, "microsecond");
  if (!units.ok()) return units.status();
  if (*units % 5 != 0) {
    return absl::InvalidArgumentError(internal::str_cat("\"", decimal, "\": has more precision than 1 microsecond"));
  }
  return std::chrono::microseconds(*units / 5 * 3);  // below *units: never overflows
}

absl::StatusOr<std::chrono::microseconds> parse_seconds(std::string_view decimal) {
  absl::StatusOr<std::int64_t> micros = internal::parse_scaled_decimal(decimal, 6, 1, "microsecond");
  if (!micros.ok()) return micros.status();
  return std::chrono::microseconds(*micros);
}

}  // namespace paygent
