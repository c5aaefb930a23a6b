// The built-in price catalog: list prices of current OpenAI, Anthropic and Google models, and of
// speech and video (STT, TTS, speech-to-speech, video generation; see media_price.h).
//
// The prices live in a data file (meter/prices.json, with each price's source and the date it was
// read), embedded into the library at build time. A plan's own cost_rates always win over it.
//
// Thread safety: the catalog is immutable after it is loaded; every function here is safe to call
// from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "paygent/media_price.h"
#include "paygent/money.h"
#include "paygent/usage.h"

namespace paygent {

// Prices of one model, exact, in pico-USD per token.
struct ModelPrice {
  PicosPerToken input = 0;         // uncached input
  PicosPerToken cached_input = 0;  // prompt-cache reads (defaults to `input` when not published)
  PicosPerToken cache_write = 0;   // prompt-cache writes (defaults to `input` when not published)
  PicosPerToken output = 0;        // output, reasoning included
  // The most output tokens one call can produce (the provider's documented maximum, which is also
  // what a request without max_tokens may run to); 0 when the catalog does not say. A reservation
  // of a call with no max_tokens holds this, not the user's whole remaining budget.
  std::int64_t max_output_tokens = 0;
};

// Cost of `usage` at `price`: uncached input at input, cache reads at cached_input, cache writes
// at cache_write, output at output. Exact but for one half-up rounding to nano-USD.
[[nodiscard]] Nanos cost_of(const Usage& usage, const ModelPrice& price) noexcept;

// The canonical name of a model for price and quota look-ups: "gpt-4o-2024-08-06" -> "gpt-4o",
// "claude-sonnet-4-5-20250929" -> "claude-sonnet-4-5", "models/gemini-2.5-flash" ->
// "gemini-2.5-flash", "claude-3-opus-latest" -> "claude-3-opus". Only a trailing date (or
// "-latest") is removed, so "gpt-4o-mini" stays itself. The view points into `model`.
[[nodiscard]] std::string_view canonical_model(std::string_view model) noexcept;

class PriceCatalog {
 public:
  // The catalog embedded in the library (parsed once, on first use).
  static const PriceCatalog& builtin();

  // Parses a catalog in the format of meter/prices.json. InvalidArgument names the entry and field.
  static absl::StatusOr<PriceCatalog> parse(std::string_view json);

  // The price of `model` (looked up by canonical_model), or nullptr when the catalog does not know
  // it. The pointer is valid for the catalog's lifetime.
  [[nodiscard]] const ModelPrice* find(std::string_view model) const noexcept;

  // The speech or video price of `model` from `provider` in pricing tier `tier`, or nullptr when
  // the catalog does not know the provider or the model (the caller records the cost as unknown,
  // never as zero). The pointer is valid for the catalog's lifetime. Names match whatever their
  // case, with ' ', '_' and '-' alike ("Nova-2", "nova_2"), and through the data file's aliases
  // ("Deepgram", "Amazon Polly Neural"); a model not found by its name is tried without a
  // trailing date ("gpt-realtime-2025-08-28" -> "gpt-realtime").
  //
  // The tier (the `plan` field of the tracking API) selects among the model's pricing tiers:
  //   - "" or "default" (any case): the model's default tier (the provider's self-serve list
  //     price, named in the data file);
  //   - a tier the model has: that tier;
  //   - any other tier: the default tier, as a conservative list price. The returned price names
  //     the tier it is for, so a caller can see that `tier` was not found.
  // `resolution` matters only for kVideo: a tier priced per resolution needs one of its
  // resolutions ("1280x720"), else nullptr; a tier with one price takes any resolution.
  [[nodiscard]] const MediaPrice* find(MediaKind kind, std::string_view provider, std::string_view model,
                                       std::string_view tier = {}, std::string_view resolution = {}) const noexcept;

  // Number of speech and video models priced (aliases not counted).
  [[nodiscard]] std::size_t media_size() const noexcept;

  // When the prices were read ("2026-11-01"), from the data file.
  [[nodiscard]] const std::string& as_of() const noexcept { return as_of_; }
  [[nodiscard]] std::size_t size() const noexcept;

  PriceCatalog();
  ~PriceCatalog();
  PriceCatalog(PriceCatalog&&) noexcept;
  PriceCatalog& operator=(PriceCatalog&&) noexcept;

 private:
  struct Table;
  struct MediaTable;
  std::string as_of_;
  std::unique_ptr<Table> table_;
  std::unique_ptr<MediaTable> media_;
};

}  // namespace paygent
