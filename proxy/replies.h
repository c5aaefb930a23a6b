// What paygent-proxy itself answers, shaped as each provider's SDK expects so that the caller's
// existing error handling works: the hard-gate refusal, its own errors (bad request, no route,
// upstream failure), and the final event of a stream cut at the cap.
//
// The refusal's status is 429 (see docs/proxy.md): both SDKs map it to their RateLimitError, the
// class applications already handle as "stop for now", and OpenAI itself answers an exhausted
// quota with 429 insufficient_quota. 402 would reach the Anthropic SDK as a plain APIError and the
// OpenAI SDK as a generic APIError too. x-should-retry: false keeps both SDKs from retrying it.
//
// Thread safety: free functions on values.
#pragma once

#include <string>
#include <string_view>

#include "paygent/guard_result.h"
#include "paygent/money.h"
#include "paygent/usage.h"

namespace paygent::proxy {

inline constexpr int kRefusalStatus = 429;

// The error body `provider`'s SDK reads: OpenAI {"error":{"message","type","param","code"}},
// Anthropic {"type":"error","error":{"type","message"}}, Gemini {"error":{"code","message","status"}}.
// `type` is the OpenAI/Anthropic error type; `status` the HTTP status (Gemini's code).
std::string error_body(Provider provider, int status, std::string_view type, std::string_view message);

// The body of a hard-gate refusal: the error above (OpenAI type insufficient_quota, code
// paygent_limit_exceeded; Anthropic rate_limit_error; Gemini RESOURCE_EXHAUSTED) whose message
// names the limit, spent, limit and reset time (GuardResult::message()), plus a "paygent" object
// with the same in fields.
std::string refusal_body(Provider provider, const GuardResult& result);

// The final event of a stream cut at the hard cap, one both SDKs raise as an error naming the
// limit: OpenAI chat/Responses a data event with an "error" object; Anthropic "event: error"; Gemini
// a data event with an "error" object.
std::string stream_cut_event(ApiFormat format, const GuardResult& result, std::int64_t streamed_tokens);

// An exact decimal USD text of nano-USD: 123 -> "0.000000123".
std::string usd_decimal(Nanos amount);

// usage_pct as a percent with one decimal: 0.816 -> "81.6".
std::string percent_text(double usage_pct);

}  // namespace paygent::proxy
