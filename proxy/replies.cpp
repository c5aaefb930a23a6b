#include "proxy/replies.h"
#include "proxy/text.h"

#include <cstdio>

#include "absl/time/time.h"
#include "proxy/request.h"

namespace paygent::proxy {
namespace {

std::string_view gemini_status(int status) {
  switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 404: return "NOT_FOUND";
    case 413: return "INVALID_ARGUMENT";
    case 429: return "RESOURCE_EXHAUSTED";
    case 504: return "DEADLINE_EXCEEDED";
    default: return status >= 500 ? "UNAVAILABLE" : "FAILED_PRECONDITION";
  }
}

std::string paygent_fields(const GuardResult& result) {
  const std::string resets =
      result.resets_at == absl::InfiniteFuture() ? "null" : json_quote(absl::FormatTime(absl::RFC3339_sec, result.resets_at, absl::UTCTimeZone()));
  return str_cat("\"paygent\":{\"status\":", json_quote(gate_status_name(result.status)),
                      ",\"limit\":", json_quote(result.gate_reason()), ",\"used\":",
                      result.current_value - result.call_estimate, ",\"call_estimate\":", result.call_estimate,
                      ",\"limit_value\":", result.limit_value, ",\"unit\":",
                      result.reason == GateReason::kModelLimit ? "\"tokens\"" : "\"nano_usd\"",
                      ",\"resets_at\":", resets, "}");
}

}  // namespace

std::string error_body(Provider provider, int status, std::string_view type, std::string_view message) {
  switch (provider) {
    case Provider::kAnthropic:
      return str_cat("{\"type\":\"error\",\"error\":{\"type\":", json_quote(type), ",\"message\":",
                          json_quote(message), "}}");
    case Provider::kGemini:
      return str_cat("{\"error\":{\"code\":", status, ",\"message\":", json_quote(message),
                          ",\"status\":", json_quote(gemini_status(status)), "}}");
    default:
      return str_cat("{\"error\":{\"message\":", json_quote(message), ",\"type\":", json_quote(type),
                          ",\"param\":null,\"code\":", json_quote(type), "}}");
  }
}

std::string refusal_body(Provider provider, const GuardResult& result) {
  const std::string message = str_cat("paygent: ", result.message());
  std::string body;
  switch (provider) {
    case Provider::kAnthropic:
      body = error_body(provider, kRefusalStatus, "rate_limit_error", message);
      break;
    case Provider::kGemini:
      body = error_body(provider, kRefusalStatus, "", message);
      break;
    default:
      body = str_cat("{\"error\":{\"message\":", json_quote(message),
                          ",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"paygent_limit_exceeded\"}}");
  }
  body.pop_back();  // the closing brace: the paygent object goes beside the error
  return str_cat(body, ",", paygent_fields(result), "}");
}

std::string stream_cut_event(ApiFormat format, const GuardResult& result, std::int64_t streamed_tokens) {
  const std::string message = str_cat("paygent: stream cut at the hard cap after about ", streamed_tokens,
                                           " output tokens: ", result.message());
  switch (format) {
    case ApiFormat::kAnthropicMessages:
      return str_cat("event: error\ndata: ", error_body(Provider::kAnthropic, kRefusalStatus, "rate_limit_error", message),
                          "\n\n");
    case ApiFormat::kGeminiGenerate:
      return str_cat("data: ", error_body(Provider::kGemini, kRefusalStatus, "", message), "\n\n");
    case ApiFormat::kOpenAIResponses:
      // The SDK raises any event whose data has an "error" object (and "event: error" too).
      return str_cat("event: error\ndata: {\"type\":\"error\",\"code\":\"paygent_limit_exceeded\",\"message\":",
                          json_quote(message), ",\"param\":null,\"error\":{\"message\":", json_quote(message),
                          ",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"paygent_limit_exceeded\"}}\n\n");
    default:
      return str_cat("data: {\"error\":{\"message\":", json_quote(message),
                          ",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"paygent_limit_exceeded\"}}\n\n");
  }
}

std::string usd_decimal(Nanos amount) {
  const bool negative = amount < 0;
  const std::uint64_t magnitude = negative ? 0 - static_cast<std::uint64_t>(amount) : static_cast<std::uint64_t>(amount);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%llu.%09llu", negative ? "-" : "",
                static_cast<unsigned long long>(magnitude / kNanosPerUsd),
                static_cast<unsigned long long>(magnitude % kNanosPerUsd));
  return buf;
}

std::string percent_text(double usage_pct) { return ::paygent::internal::one_decimal(usage_pct * 100.0); }

}  // namespace paygent::proxy
