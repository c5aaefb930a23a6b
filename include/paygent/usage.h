// Usage of one LLM or speech call, and reading it from provider responses.
//
// Thread safety: Usage is a value type. The extract_* functions are safe to call from many threads
// at once (each thread reuses its own simdjson parser). A StreamUsageReader is used by one thread
// at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace paygent {

enum class Provider : std::uint8_t { kUnknown, kOpenAI, kAnthropic, kGemini };

// Which response shape a body has. kAuto recognises each of the others from the body itself.
enum class ApiFormat : std::uint8_t {
  kAuto,
  kOpenAIChat,       // POST /v1/chat/completions
  kOpenAIResponses,  // POST /v1/responses
  kAnthropicMessages,
  kGeminiGenerate,   // generateContent / streamGenerateContent
};

std::string_view provider_name(Provider p) noexcept;

// Normalised token usage of one call. Conventions (the same for every provider, so that cost and
// quotas are comparable):
//   input_tokens:   every input token billed, INCLUDING cached reads and cache writes
//                   (Anthropic's input_tokens + cache_read + cache_creation).
//   cached_input_tokens: the subset of input_tokens read from a prompt cache.
//   cache_creation_input_tokens: the subset of input_tokens written to a prompt cache.
//   output_tokens:  every output token billed, INCLUDING reasoning/thinking tokens
//                   (Gemini's candidatesTokenCount + thoughtsTokenCount).
//   reasoning_tokens: the subset of output_tokens spent on reasoning.
// total_tokens() = input_tokens + output_tokens.
struct Usage {
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cached_input_tokens = 0;
  std::int64_t cache_creation_input_tokens = 0;
  std::int64_t reasoning_tokens = 0;

  [[nodiscard]] std::int64_t total_tokens() const noexcept { return input_tokens + output_tokens; }
  friend bool operator==(const Usage&, const Usage&) = default;
};

// What a reader found in one response.
struct ExtractedUsage {
  Provider provider = Provider::kUnknown;
  ApiFormat format = ApiFormat::kAuto;
  // The model the provider reports (e.g. "gpt-4o-2024-08-06"); empty when the body has none.
  std::string model;
  Usage usage;
  // As reported by the provider where it reports one; never derived.
  std::optional<std::int64_t> reported_total_tokens;
};

// Reads usage from a complete (non-streamed) JSON response body.
// Errors (never thrown):
//   InvalidArgument: the body is not JSON, or a usage field has the wrong type or is negative.
//   NotFound: valid JSON without usage, e.g. a provider error body ({"error": ...}); the message
//             quotes the provider's error type when there is one.
// `body` is not kept after the call returns.
absl::StatusOr<ExtractedUsage> extract_usage(std::string_view body, ApiFormat format = ApiFormat::kAuto);

// Reads usage from a server-sent-event stream fed in arbitrary chunks (split anywhere, even inside
// a line or a UTF-8 sequence), with LF or CRLF line endings:
//   OpenAI chat: the final chunk's usage (choices []), before data: [DONE];
//   OpenAI responses: response.completed's response.usage;
//   Anthropic: message_start's usage, overwritten field by field by each message_delta's usage
//              (cumulative; never summed);
//   Gemini: the last chunk's usageMetadata (cumulative; never summed).
// finish() also processes a last event that lacks its closing blank line.
class StreamUsageReader {
 public:
  explicit StreamUsageReader(ApiFormat format = ApiFormat::kAuto);
  ~StreamUsageReader();
  StreamUsageReader(StreamUsageReader&&) noexcept;
  StreamUsageReader& operator=(StreamUsageReader&&) noexcept;

  // Consumes the next bytes of the stream. Never fails: a malformed event is remembered and
  // reported by finish(). `chunk` is not kept after the call returns.
  void feed(std::string_view chunk);

  // Ends the stream and returns what was read:
  //   the usage, when any event carried usage (even if a later event was malformed or an
  //   "event: error" arrived: the partial usage is what was spent);
  //   NotFound when no event carried usage; InvalidArgument when no usage was read and an event
  //   was malformed.
  absl::StatusOr<ExtractedUsage> finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace paygent
