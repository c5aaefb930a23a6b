// Reading usage from provider responses (see include/paygent/usage.h).
//
// Both readers make one simdjson On-Demand pass over a JSON object and look only at the keys that
// matter: "usage" / "usageMetadata" (every known token count in it is type-checked), "model" /
// "modelVersion", and the keys that tell the format apart ("object", "type", "candidates") or say
// the provider failed ("error"). On-Demand checks the whole text for UTF-8, unclosed strings and
// the structure of the values it visits; the values it skips (e.g. "choices") are only checked for
// balanced brackets. Numbers are normalised after the pass (normalise() below), so the order of the
// keys in the body does not matter.
//
// Speed: simdjson's first stage (structural indexing, dispatched at run time to the best kernel
// the CPU has) is about a third of the time on a 1 KB body; the rest is the On-Demand walk, which
// Debian's header compiles for generic x86-64. Keys are compared in place (key_is) and fields
// are read where they lie (value_unsafe), which keeps the whole pass faster than a simdjson DOM
// parse of the same body (bench/extract_bench.cpp).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meter/internal/str_cat.h"
#include "meter/internal/usage_scan.h"
#include "paygent/usage.h"
#include "simdjson.h"

namespace paygent {

std::string_view provider_name(Provider p) noexcept {
  switch (p) {
    case Provider::kOpenAI:
      return "openai";
    case Provider::kAnthropic:
      return "anthropic";
    case Provider::kGemini:
      return "google";
    case Provider::kUnknown:
      break;
  }
  return "unknown";
}

namespace internal {
namespace {

namespace od = simdjson::ondemand;

// Bodies up to this size are parsed with the thread's reused parser and buffer; a larger one gets
// a parser of its own, so that one huge response does not pin its memory to the thread forever.
constexpr std::size_t kMaxRetainedBytes = std::size_t{1} << 20;

// Longest provider error message quoted in a NotFound status.
constexpr std::size_t kMaxQuotedMessage = 200;

struct CountKey {
  std::string_view key;
  Slot slot;
};

// Token counts directly inside "usage" / "usageMetadata".
constexpr CountKey kUsageCounts[] = {
    {"prompt_tokens", kPromptTokens},
    {"completion_tokens", kCompletionTokens},
    {"total_tokens", kTotalTokens},
    {"input_tokens", kInputTokens},
    {"output_tokens", kOutputTokens},
    {"cache_read_input_tokens", kCacheReadInputTokens},
    {"cache_creation_input_tokens", kCacheCreationInputTokens},
    {"promptTokenCount", kPromptTokenCount},
    {"candidatesTokenCount", kCandidatesTokenCount},
    {"totalTokenCount", kTotalTokenCount},
    {"cachedContentTokenCount", kCachedContentTokenCount},
    {"thoughtsTokenCount", kThoughtsTokenCount},
    {"toolUsePromptTokenCount", kToolUsePromptTokenCount},
};
// Inside prompt_tokens_details / input_tokens_details.
constexpr CountKey kInputDetailCounts[] = {
    {"cached_tokens", kCachedTokens},
    {"cache_write_tokens", kCacheWriteTokens},
};
// Inside completion_tokens_details / output_tokens_details.
constexpr CountKey kOutputDetailCounts[] = {
    {"reasoning_tokens", kReasoningTokens},
    {"thinking_tokens", kThinkingTokens},
};

// True when the key starting at `raw` (just after its opening quote) is exactly `name`. Provider
// keys are plain ASCII; a key that escapes its letters matches nothing. Reading name.size() + 1
// bytes is safe: keys lie inside simdjson's padded buffer, and every name here is shorter than
// SIMDJSON_PADDING.
inline bool key_is(const char* raw, std::string_view name) noexcept {
  return raw[0] == name[0] && raw[name.size()] == '"' && std::memcmp(raw, name.data(), name.size()) == 0;
}

// InvalidArgument for a simdjson error found at `where`.
absl::Status json_error(std::string_view where, simdjson::error_code e) {
  return absl::InvalidArgumentError(internal::str_cat(where, ": not valid JSON (", simdjson::error_message(e), ")"));
}

// InvalidArgument naming the token count path[.sub].key that is not a non-negative integer.
absl::Status count_error(std::string_view path, std::string_view sub, std::string_view key) {
  return absl::InvalidArgumentError(
      internal::str_cat(path, ".", sub, sub.empty() ? "" : ".", key, ": must be a non-negative integer"));
}

// Reads one token count. null leaves `out` absent; anything but a non-negative integer that fits
// in int64 is InvalidArgument naming path.sub.key.
absl::Status read_count(od::value& v, std::string_view path, std::string_view sub, std::string_view key,
                        std::int64_t& out) {
  std::int64_t n = 0;
  if (v.get_int64().get(n) == simdjson::SUCCESS) {  // a failed get leaves the value unread
    if (n < 0) return count_error(path, sub, key);
    out = n;
    return absl::OkStatus();
  }
  od::json_type type;
  if (auto e = v.type().get(type)) return json_error(path, e);
  if (type == od::json_type::null) return absl::OkStatus();
  return count_error(path, sub, key);
}

// The entry of `table` whose name the key at `key` is, or nullptr.
template <std::size_t N>
const CountKey* find_count(const char* key, const CountKey (&table)[N]) noexcept {
  for (const CountKey& c : table) {
    if (key_is(key, c.key)) return &c;
  }
  return nullptr;
}

// Reads a *_tokens_details object (or null) into `out`.
template <std::size_t N>
absl::Status read_details(od::value& v, std::string_view path, std::string_view sub, const CountKey (&table)[N],
                          RawUsage& out) {
  od::json_type type;
  if (auto e = v.type().get(type)) return json_error(path, e);
  if (type == od::json_type::null) return absl::OkStatus();
  if (type != od::json_type::object) {
    return absl::InvalidArgumentError(internal::str_cat(path, ".", sub, ": must be an object"));
  }
  od::object obj;
  if (auto e = v.get_object().get(obj)) return json_error(path, e);
  for (auto field_result : obj) {
    if (auto e = field_result.error()) return json_error(path, e);
    od::field& field = field_result.value_unsafe();  // in place: copying a field costs a stall
    if (const CountKey* c = find_count(field.key().raw(), table)) {
      if (auto s = read_count(field.value(), path, sub, c->key, out.count[c->slot]); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

// Reads a usage object found at `path` into scan.usage, or notes that it is null.
absl::Status read_usage(od::value& v, std::string_view path, bool gemini, Scan& scan) {
  od::json_type type;
  if (auto e = v.type().get(type)) return json_error(path, e);
  if (type == od::json_type::null) {
    scan.usage_null = true;
    return absl::OkStatus();
  }
  if (type != od::json_type::object) return absl::InvalidArgumentError(internal::str_cat(path, ": must be an object"));
  od::object obj;
  if (auto e = v.get_object().get(obj)) return json_error(path, e);
  RawUsage raw;
  for (auto field_result : obj) {
    if (auto e = field_result.error()) return json_error(path, e);
    od::field& field = field_result.value_unsafe();  // in place: copying a field costs a stall
    const char* key = field.key().raw();
    if (const CountKey* c = find_count(key, kUsageCounts)) {
      if (auto s = read_count(field.value(), path, "", c->key, raw.count[c->slot]); !s.ok()) return s;
    } else if (key_is(key, "prompt_tokens_details")) {
      if (auto s = read_details(field.value(), path, "prompt_tokens_details", kInputDetailCounts, raw); !s.ok()) {
        return s;
      }
    } else if (key_is(key, "input_tokens_details")) {
      if (auto s = read_details(field.value(), path, "input_tokens_details", kInputDetailCounts, raw); !s.ok()) {
        return s;
      }
    } else if (key_is(key, "completion_tokens_details")) {
      if (auto s = read_details(field.value(), path, "completion_tokens_details", kOutputDetailCounts, raw); !s.ok()) {
        return s;
      }
    } else if (key_is(key, "output_tokens_details")) {
      if (auto s = read_details(field.value(), path, "output_tokens_details", kOutputDetailCounts, raw); !s.ok()) {
        return s;
      }
    }
  }
  scan.usage = raw;
  scan.usage_present = true;
  scan.gemini_usage = gemini;
  return absl::OkStatus();
}

// Reads a string member into `out`; a value of another type is left alone (these members are
// hints, not usage).
absl::Status read_hint(od::value& v, std::string_view where, std::string_view& out) {
  od::json_type type;
  if (auto e = v.type().get(type)) return json_error(where, e);
  if (type != od::json_type::string) return absl::OkStatus();
  if (auto e = v.get_string().get(out)) return json_error(where, e);
  return absl::OkStatus();
}

// Reads a provider "error" member: an object with type/code/status/message, or a bare string.
absl::Status read_error(od::value& v, std::string_view where, Scan& scan) {
  od::json_type type;
  if (auto e = v.type().get(type)) return json_error(where, e);
  if (type == od::json_type::null) return absl::OkStatus();
  scan.error_present = true;
  if (type == od::json_type::string) return read_hint(v, where, scan.error_type);
  if (type != od::json_type::object) return absl::OkStatus();
  od::object obj;
  if (auto e = v.get_object().get(obj)) return json_error(where, e);
  for (auto field_result : obj) {
    if (auto e = field_result.error()) return json_error(where, e);
    od::field& field = field_result.value_unsafe();  // in place: copying a field costs a stall
    const char* key = field.key().raw();
    absl::Status s;
    if (key_is(key, "type")) {
      s = read_hint(field.value(), where, scan.error_type);
    } else if (key_is(key, "code")) {
      od::json_type code_type;
      if (auto e = field.value().type().get(code_type)) return json_error(where, e);
      if (code_type == od::json_type::number) {
        std::int64_t n = 0;
        if (field.value().get_int64().get(n) == simdjson::SUCCESS) scan.error_number = n;
      } else {
        s = read_hint(field.value(), where, scan.error_code);
      }
    } else if (key_is(key, "status")) {
      s = read_hint(field.value(), where, scan.error_status);
    } else if (key_is(key, "message")) {
      s = read_hint(field.value(), where, scan.error_message);
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// Scans the members of `obj` (the body, or an event's "message" / "response" when `nested`).
absl::Status scan_members(od::object& obj, std::string_view path, ApiFormat format, bool nested, Scan& scan) {
  const bool want_usage = format != ApiFormat::kGeminiGenerate;
  const bool want_gemini = format == ApiFormat::kAuto || format == ApiFormat::kGeminiGenerate;
  for (auto field_result : obj) {
    if (auto e = field_result.error()) return json_error(path, e);
    od::field& field = field_result.value_unsafe();  // in place: copying a field costs a stall
    const char* key = field.key().raw();
    absl::Status s;
    // Cheapest first: most members of a body are none of these.
    switch (key[0]) {
      case 'u':
        if (want_usage && key_is(key, "usage")) {
          s = read_usage(field.value(), nested ? (path == "message" ? "message.usage" : "response.usage") : "usage",
                         false, scan);
        } else if (want_gemini && key_is(key, "usageMetadata")) {
          s = read_usage(field.value(), "usageMetadata", true, scan);
        }
        break;
      case 'm':
        if (key_is(key, "model")) {
          s = read_hint(field.value(), path, scan.model);
        } else if (key_is(key, "modelVersion")) {
          s = read_hint(field.value(), path, scan.model);
          scan.gemini_hint = true;
        } else if (!nested && key_is(key, "message")) {
          od::json_type type;
          if (auto e = field.value().type().get(type)) return json_error(path, e);
          if (type == od::json_type::object) {
            od::object inner;
            if (auto e = field.value().get_object().get(inner)) return json_error(path, e);
            s = scan_members(inner, "message", format, true, scan);
          } else {
            s = read_hint(field.value(), path, scan.top_message);
          }
        }
        break;
      case 'r':
        if (!nested && key_is(key, "response")) {
          od::json_type type;
          if (auto e = field.value().type().get(type)) return json_error(path, e);
          if (type == od::json_type::object) {
            od::object inner;
            if (auto e = field.value().get_object().get(inner)) return json_error(path, e);
            s = scan_members(inner, "response", format, true, scan);
          }
        }
        break;
      case 'o':
        if (key_is(key, "object")) s = read_hint(field.value(), path, nested ? scan.nested_object : scan.object);
        break;
      case 't':
        if (key_is(key, "type")) s = read_hint(field.value(), path, nested ? scan.nested_type : scan.type);
        break;
      case 'e':
        if (key_is(key, "error")) s = read_error(field.value(), path, scan);
        break;
      case 'c':
        if (key_is(key, "candidates")) {
          scan.gemini_hint = true;
        } else if (!nested && key_is(key, "code")) {
          s = read_hint(field.value(), path, scan.top_code);
        }
        break;
      default:
        break;
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// True when `s` begins with `prefix`.
bool starts_with(std::string_view s, std::string_view prefix) noexcept { return s.substr(0, prefix.size()) == prefix; }

// The parser and padded copy of the input that this thread reuses.
struct ThreadParser {
  od::parser parser;
  std::unique_ptr<char[]> buffer;
  std::size_t capacity = 0;
};

// This thread's parser and buffer, created on first use and kept for the thread's lifetime.
ThreadParser& thread_parser() {
  thread_local ThreadParser tp;
  return tp;
}

// Copies `json` into `buffer` (grown as needed) followed by SIMDJSON_PADDING zero bytes.
void copy_padded(std::string_view json, std::unique_ptr<char[]>& buffer, std::size_t& capacity) {
  const std::size_t need = json.size() + simdjson::SIMDJSON_PADDING;
  if (capacity < need) {
    const std::size_t grown = std::max(need, capacity + capacity / 2);
    buffer = std::make_unique<char[]>(grown);  // value-initialised: zero padding everywhere
    capacity = grown;
  }
  std::memcpy(buffer.get(), json.data(), json.size());
  std::memset(buffer.get() + json.size(), 0, simdjson::SIMDJSON_PADDING);
}

}  // namespace

ApiFormat detect_format(const Scan& scan) noexcept {
  if (scan.gemini_usage) return ApiFormat::kGeminiGenerate;
  if (starts_with(scan.object, "chat.completion")) return ApiFormat::kOpenAIChat;
  if (scan.object == "response" || scan.nested_object == "response" || starts_with(scan.type, "response.")) {
    return ApiFormat::kOpenAIResponses;
  }
  if (scan.type == "message" || starts_with(scan.type, "message_") || starts_with(scan.type, "content_block_") ||
      scan.type == "ping" || scan.nested_type == "message") {
    return ApiFormat::kAnthropicMessages;
  }
  if (scan.gemini_hint) return ApiFormat::kGeminiGenerate;
  if (scan.usage_present) {
    const RawUsage& r = scan.usage;
    if (r.has(kPromptTokens) || r.has(kCompletionTokens)) return ApiFormat::kOpenAIChat;
    if (r.has(kCacheReadInputTokens) || r.has(kCacheCreationInputTokens)) return ApiFormat::kAnthropicMessages;
    if (r.has(kInputTokens) || r.has(kOutputTokens)) {
      // Responses always reports total_tokens and its details; Messages reports neither.
      const bool responses = r.has(kTotalTokens) || r.has(kCachedTokens) || r.has(kReasoningTokens);
      return responses ? ApiFormat::kOpenAIResponses : ApiFormat::kAnthropicMessages;
    }
    if (r.has(kPromptTokenCount) || r.has(kCandidatesTokenCount)) return ApiFormat::kGeminiGenerate;
  }
  return ApiFormat::kAuto;
}

Provider provider_of(ApiFormat format) noexcept {
  switch (format) {
    case ApiFormat::kOpenAIChat:
    case ApiFormat::kOpenAIResponses:
      return Provider::kOpenAI;
    case ApiFormat::kAnthropicMessages:
      return Provider::kAnthropic;
    case ApiFormat::kGeminiGenerate:
      return Provider::kGemini;
    case ApiFormat::kAuto:
      break;
  }
  return Provider::kUnknown;
}

namespace {

// out = a + b; false (out unspecified) when the sum overflows int64.
bool add(std::int64_t a, std::int64_t b, std::int64_t& out) noexcept { return !__builtin_add_overflow(a, b, &out); }

}  // namespace

absl::Status normalise(const RawUsage& r, ApiFormat format, std::string_view path, Usage& usage,
                       std::optional<std::int64_t>& reported_total) {
  Usage u;
  reported_total.reset();
  auto overflow = [&] { return absl::InvalidArgumentError(internal::str_cat(path, ": token counts overflow int64")); };
  switch (format) {
    case ApiFormat::kOpenAIChat:
    case ApiFormat::kOpenAIResponses: {
      const bool chat = format == ApiFormat::kOpenAIChat;
      const Slot in = chat ? kPromptTokens : kInputTokens;
      const Slot out = chat ? kCompletionTokens : kOutputTokens;
      if (!r.has(in) && !r.has(out)) {
        return absl::InvalidArgumentError(
            chat ? internal::str_cat(path, ": has neither prompt_tokens nor completion_tokens")
                 : internal::str_cat(path, ": has neither input_tokens nor output_tokens"));
      }
      u.input_tokens = r.get(in);
      u.output_tokens = r.get(out);
      u.cached_input_tokens = r.get(kCachedTokens);
      u.cache_creation_input_tokens = r.get(kCacheWriteTokens);
      u.reasoning_tokens = r.get(kReasoningTokens);
      if (r.has(kTotalTokens)) reported_total = r.get(kTotalTokens);
      break;
    }
    case ApiFormat::kAnthropicMessages: {
      if (!r.has(kInputTokens) && !r.has(kOutputTokens) && !r.has(kCacheReadInputTokens) &&
          !r.has(kCacheCreationInputTokens)) {
        return absl::InvalidArgumentError(internal::str_cat(path, ": has neither input_tokens nor output_tokens"));
      }
      // Messages' input_tokens excludes cache reads and writes: the billed input is all three.
      std::int64_t in = 0;
      if (!add(r.get(kInputTokens), r.get(kCacheReadInputTokens), in) ||
          !add(in, r.get(kCacheCreationInputTokens), in)) {
        return overflow();
      }
      u.input_tokens = in;
      u.output_tokens = r.get(kOutputTokens);  // includes extended thinking
      u.cached_input_tokens = r.get(kCacheReadInputTokens);
      u.cache_creation_input_tokens = r.get(kCacheCreationInputTokens);
      u.reasoning_tokens = r.has(kThinkingTokens) ? r.get(kThinkingTokens) : r.get(kReasoningTokens);
      break;
    }
    case ApiFormat::kGeminiGenerate: {
      if (!r.has(kPromptTokenCount) && !r.has(kCandidatesTokenCount) && !r.has(kTotalTokenCount)) {
        return absl::InvalidArgumentError(
            internal::str_cat(path, ": has neither promptTokenCount nor candidatesTokenCount"));
      }
      // promptTokenCount includes cachedContentTokenCount; tool-use prompts are billed as input too.
      // candidatesTokenCount excludes thoughtsTokenCount: the billed output is both.
      std::int64_t in = 0;
      std::int64_t out = 0;
      if (!add(r.get(kPromptTokenCount), r.get(kToolUsePromptTokenCount), in) ||
          !add(r.get(kCandidatesTokenCount), r.get(kThoughtsTokenCount), out)) {
        return overflow();
      }
      u.input_tokens = in;
      u.output_tokens = out;
      u.cached_input_tokens = r.get(kCachedContentTokenCount);
      u.reasoning_tokens = r.get(kThoughtsTokenCount);
      if (r.has(kTotalTokenCount)) reported_total = r.get(kTotalTokenCount);
      break;
    }
    case ApiFormat::kAuto:
      return absl::InvalidArgumentError(internal::str_cat(
          path, ": no token count this reader knows (prompt_tokens, input_tokens, promptTokenCount)"));
  }
  std::int64_t total = 0;
  if (!add(u.input_tokens, u.output_tokens, total)) return overflow();
  usage = u;
  return absl::OkStatus();
}

absl::Status no_usage_status(const Scan& scan, std::string_view what) {
  if (scan.error_present || scan.type == "error") {
    std::string_view name = !scan.error_code.empty()     ? scan.error_code
                            : !scan.error_type.empty()   ? scan.error_type
                            : !scan.error_status.empty() ? scan.error_status
                                                         : scan.top_code;
    std::string number = name.empty() && scan.error_number >= 0 ? internal::str_cat(scan.error_number) : std::string();
    if (name.empty()) name = number.empty() ? std::string_view("(untyped)") : std::string_view(number);
    std::string_view message = !scan.error_message.empty() ? scan.error_message : scan.top_message;
    if (message.size() > kMaxQuotedMessage) {
      std::size_t cut = kMaxQuotedMessage;
      while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8 only
      message = message.substr(0, cut);
    }
    return absl::NotFoundError(
        internal::str_cat("no usage: provider error ", name, message.empty() ? "" : ": ", message));
  }
  if (scan.usage_null) return absl::NotFoundError(internal::str_cat("no usage: ", what, " has \"usage\": null"));
  return absl::NotFoundError(internal::str_cat("no usage: ", what, " has no usage"));
}

// Parses `size` bytes at `padded` (followed by SIMDJSON_PADDING readable bytes) with `parser` and
// scans the top-level object into `scan`. InvalidArgument when the text is not one JSON object
// (`where` names it) or a usage field is malformed; ResourceExhausted when out of memory.
absl::Status scan_json(od::parser& parser, const char* padded, std::size_t size, ApiFormat format,
                       std::string_view where, Scan& scan) {
  od::document doc;
  if (auto e = parser.iterate(simdjson::padded_string_view(padded, size, size + simdjson::SIMDJSON_PADDING)).get(doc)) {
    if (e == simdjson::MEMALLOC) return absl::ResourceExhaustedError("out of memory parsing the body");
    return json_error(where, e);
  }
  od::object root;
  if (auto e = doc.get_object().get(root)) {
    if (e == simdjson::INCORRECT_TYPE) {
      return absl::InvalidArgumentError(internal::str_cat(where, ": not a JSON object"));
    }
    return json_error(where, e);
  }
  if (auto s = scan_members(root, "body", format, false, scan); !s.ok()) return s;
  const char* trailing = nullptr;
  if (doc.current_location().get(trailing) == simdjson::SUCCESS) {
    return absl::InvalidArgumentError(internal::str_cat(where, ": trailing content after the JSON object"));
  }
  return absl::OkStatus();
}

absl::Status scan_padded(const char* padded, std::size_t size, ApiFormat format, std::string_view where, Scan& scan) {
  if (size > kMaxRetainedBytes) {
    od::parser parser;
    return scan_json(parser, padded, size, format, where, scan);
  }
  return scan_json(thread_parser().parser, padded, size, format, where, scan);
}

// The format as the error messages name it.
std::string_view format_name(ApiFormat format) noexcept {
  switch (format) {
    case ApiFormat::kOpenAIChat:
      return "an OpenAI chat completion";
    case ApiFormat::kOpenAIResponses:
      return "an OpenAI response";
    case ApiFormat::kAnthropicMessages:
      return "an Anthropic message";
    case ApiFormat::kGeminiGenerate:
      return "a Gemini response";
    case ApiFormat::kAuto:
      break;
  }
  return "an unknown response";
}

absl::Status check_format(const Scan& scan, ApiFormat requested, ApiFormat& format, std::string_view where) {
  const ApiFormat detected = detect_format(scan);
  if (requested == ApiFormat::kAuto) {
    format = detected;
    return absl::OkStatus();
  }
  if (detected != ApiFormat::kAuto && detected != requested) {
    return absl::InvalidArgumentError(
        internal::str_cat(where, ": is ", format_name(detected), ", not ", format_name(requested)));
  }
  format = requested;
  return absl::OkStatus();
}

// Turns the scan of a complete body into extract_usage's result (see usage.h).
absl::StatusOr<ExtractedUsage> finish_body(const Scan& scan, ApiFormat format) {
  ApiFormat f = ApiFormat::kAuto;
  if (auto s = check_format(scan, format, f, "body"); !s.ok()) return s;
  if (!scan.usage_present) return no_usage_status(scan, "the response");
  ExtractedUsage out;
  const std::string_view path = scan.gemini_usage ? "usageMetadata" : "usage";
  if (auto s = normalise(scan.usage, f, path, out.usage, out.reported_total_tokens); !s.ok()) return s;
  out.format = f;
  out.provider = provider_of(f);
  out.model.assign(scan.model);
  return out;
}

}  // namespace internal

absl::StatusOr<ExtractedUsage> extract_usage(std::string_view body, ApiFormat format) {
  try {
    internal::Scan scan;
    if (body.size() > internal::kMaxRetainedBytes) {
      simdjson::ondemand::parser parser;
      std::unique_ptr<char[]> buffer;
      std::size_t capacity = 0;
      internal::copy_padded(body, buffer, capacity);
      if (auto s = internal::scan_json(parser, buffer.get(), body.size(), format, "body", scan); !s.ok()) return s;
      return internal::finish_body(scan, format);
    }
    internal::ThreadParser& tp = internal::thread_parser();
    internal::copy_padded(body, tp.buffer, tp.capacity);
    if (auto s = internal::scan_json(tp.parser, tp.buffer.get(), body.size(), format, "body", scan); !s.ok()) {
      return s;
    }
    return internal::finish_body(scan, format);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory reading usage");
  }
}

}  // namespace paygent
