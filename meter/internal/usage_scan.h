// Private to meter/: what one pass over a provider's JSON object found, and the steps shared by
// extract_usage (usage_extract.cpp) and StreamUsageReader (usage_stream.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "paygent/usage.h"

namespace paygent::internal {

// Every token count a reader knows, by the provider's own field name.
enum Slot : std::uint8_t {
  kPromptTokens,              // OpenAI chat usage.prompt_tokens
  kCompletionTokens,          // OpenAI chat usage.completion_tokens
  kTotalTokens,               // OpenAI usage.total_tokens
  kInputTokens,               // OpenAI responses / Anthropic usage.input_tokens
  kOutputTokens,              // OpenAI responses / Anthropic usage.output_tokens
  kCachedTokens,              // OpenAI *_tokens_details.cached_tokens
  kCacheWriteTokens,          // OpenAI *_tokens_details.cache_write_tokens
  kReasoningTokens,           // OpenAI *_tokens_details.reasoning_tokens
  kThinkingTokens,            // output_tokens_details.thinking_tokens
  kCacheReadInputTokens,      // Anthropic usage.cache_read_input_tokens
  kCacheCreationInputTokens,  // Anthropic usage.cache_creation_input_tokens
  kPromptTokenCount,          // Gemini usageMetadata.promptTokenCount
  kCandidatesTokenCount,      // Gemini usageMetadata.candidatesTokenCount
  kTotalTokenCount,           // Gemini usageMetadata.totalTokenCount
  kCachedContentTokenCount,   // Gemini usageMetadata.cachedContentTokenCount
  kThoughtsTokenCount,        // Gemini usageMetadata.thoughtsTokenCount
  kToolUsePromptTokenCount,   // Gemini usageMetadata.toolUsePromptTokenCount
  kSlotCount,
};

// Token counts as one usage object reports them, before normalisation. -1 = absent or null.
struct RawUsage {
  std::array<std::int64_t, kSlotCount> count;

  RawUsage() noexcept { count.fill(-1); }
  [[nodiscard]] bool has(Slot s) const noexcept { return count[s] >= 0; }
  // The count, or 0 when absent.
  [[nodiscard]] std::int64_t get(Slot s) const noexcept { return count[s] < 0 ? 0 : count[s]; }
  // Takes every count `newer` has; keeps the others (Anthropic's field-by-field message_delta).
  void override_with(const RawUsage& newer) noexcept {
    for (std::size_t i = 0; i < count.size(); ++i) {
      if (newer.count[i] >= 0) count[i] = newer.count[i];
    }
  }
};

// What one pass over a JSON object found. The string views point into the parser's buffers and
// are valid until that parser parses again.
struct Scan {
  RawUsage usage;
  bool usage_present = false;  // a usage object was read (its counts are type-checked)
  bool usage_null = false;     // "usage": null
  bool gemini_usage = false;   // the usage came from "usageMetadata"
  bool gemini_hint = false;    // "candidates" or "modelVersion" seen
  std::string_view model;
  std::string_view object;         // top-level "object"
  std::string_view type;           // top-level "type"
  std::string_view nested_object;  // "object" inside an event's "message" / "response"
  std::string_view nested_type;    // "type" inside an event's "message" / "response"
  bool error_present = false;      // a non-null "error" member
  std::string_view error_type;
  std::string_view error_code;
  std::string_view error_status;
  std::string_view error_message;
  std::int64_t error_number = -1;  // a numeric error.code (Gemini: the HTTP status)
  std::string_view top_code;       // top-level "code" (OpenAI responses' stream error event)
  std::string_view top_message;    // top-level string "message"
};

// Parses the JSON object in `padded` (`size` bytes followed by SIMDJSON_PADDING readable bytes)
// with this thread's parser and fills `scan`. InvalidArgument names `where` or the usage field.
absl::Status scan_padded(const char* padded, std::size_t size, ApiFormat format, std::string_view where, Scan& scan);

// The format `scan` shows, or kAuto when it shows none.
ApiFormat detect_format(const Scan& scan) noexcept;

// The provider behind `format` (kUnknown for kAuto).
Provider provider_of(ApiFormat format) noexcept;

// Sets `format` to `requested`, or to what `scan` shows when `requested` is kAuto. InvalidArgument
// (naming `where`) when `scan` plainly shows a format other than the one requested: reading an
// Anthropic body as an OpenAI one would silently drop its cache tokens.
absl::Status check_format(const Scan& scan, ApiFormat requested, ApiFormat& format, std::string_view where);

// Turns raw counts into the normalised Usage of usage.h for `format`. InvalidArgument (naming
// `path`) when the object has none of the format's counts, or when sums overflow int64.
absl::Status normalise(const RawUsage& raw, ApiFormat format, std::string_view path, Usage& usage,
                       std::optional<std::int64_t>& reported_total);

// NotFound for an object without usage, quoting the provider's error type when there is one.
// `what` names the object ("the response", "the stream").
absl::Status no_usage_status(const Scan& scan, std::string_view what);

}  // namespace paygent::internal
