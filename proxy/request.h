// What paygent-proxy reads from a caller's request before forwarding it: the route (which provider
// API), the model, whether it streams, who pays, the worst case to reserve; and the body rewrite
// that lowers max_tokens to what the user can still afford and asks OpenAI chat streams for usage.
// No I/O and no Boost here: doctest calls these directly (tests/proxy/request_test.cpp).
//
// Thread safety: free functions, safe from any number of threads (each uses its own parser).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "paygent/usage.h"

namespace paygent::proxy {

enum class Route : std::uint8_t {
  kOpenAIChat,         // POST /v1/chat/completions
  kOpenAIResponses,    // POST /v1/responses
  kAnthropicMessages,  // POST /v1/messages
  kGeminiGenerate,     // POST /v1beta/models/{model}:generateContent
  kGeminiStream,       // POST /v1beta/models/{model}:streamGenerateContent
};

struct RouteMatch {
  Route route = Route::kOpenAIChat;
  Provider provider = Provider::kUnknown;
  ApiFormat format = ApiFormat::kAuto;
  std::string model;  // Gemini: from the path; others: read from the body later
};

// The route of `method target` (target may carry a query string), or nullopt for any other request.
std::optional<RouteMatch> match_route(std::string_view method, std::string_view target);

// What the gate needs from a request body.
struct CallRequest {
  std::string model;
  bool stream = false;
  // The output bound the caller asked for (max_completion_tokens / max_tokens / max_output_tokens
  // / generationConfig.maxOutputTokens), if any.
  std::optional<std::int64_t> max_tokens;
  // The request's own end-user field: OpenAI safety_identifier, else user; Anthropic
  // metadata.user_id. Empty when absent.
  std::string end_user;
  // Input tokens, estimated from the body's size (4 bytes a token, rounded up): an over-estimate
  // (JSON syntax counts), so that the reservation holds at least the real input.
  std::int64_t prompt_tokens = 0;
  // OpenAI chat: the caller asked for stream_options.include_usage itself.
  bool include_usage = false;
  // For the rewrite without a second parse (not Gemini's): the body's top-level key that carries
  // the output bound, and whether the body has it, and stream_options, already.
  std::string_view bound_key;
  bool bound_present = false;
  bool stream_options_present = false;
};

// Reads `body` for `route`. InvalidArgument naming the field when the body is not a JSON object,
// the model is missing (except Gemini), or a field the gate reads has the wrong type.
absl::StatusOr<CallRequest> read_request(const RouteMatch& route, std::string_view body);

// The body to forward: `body` with its output bound set to `max_tokens` (when given) and, for an
// OpenAI chat stream without it, stream_options.include_usage = true. Returns `body` unchanged
// when nothing changes. The rest of the JSON is kept (re-serialised compactly when rewritten).
// Precondition: read_request(route, body) succeeded.
std::string rewrite_body(const RouteMatch& route, std::string_view body, std::optional<std::int64_t> max_tokens,
                         bool add_include_usage);
// The same, for `body` as read_request returned `read`: when the fields to set are absent (the
// usual case) they are appended without parsing the body again; otherwise as above.
std::string rewrite_body(const RouteMatch& route, std::string_view body, const CallRequest& read,
                         std::optional<std::int64_t> max_tokens, bool add_include_usage);

// `text` as a JSON string literal, quotes included.
std::string json_quote(std::string_view text);

}  // namespace paygent::proxy
