#include "proxy/request.h"
#include "proxy/text.h"

#include <cstdio>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "simdjson.h"

namespace paygent::proxy {
namespace {

namespace dom = simdjson::dom;

dom::parser& thread_parser() {
  thread_local dom::parser parser;
  return parser;
}

// The key that carries the output bound in `route`'s request body.
std::string_view max_tokens_key(Route route, dom::object top) {
  switch (route) {
    case Route::kOpenAIChat:
      // max_completion_tokens replaces the deprecated max_tokens; a body with only the old one
      // keeps it (the reasoning models refuse max_tokens, older models accept both).
      if (top["max_tokens"].error() == simdjson::SUCCESS && top["max_completion_tokens"].error() != simdjson::SUCCESS) {
        return "max_tokens";
      }
      return "max_completion_tokens";
    case Route::kOpenAIResponses: return "max_output_tokens";
    case Route::kAnthropicMessages: return "max_tokens";
    case Route::kGeminiGenerate:
    case Route::kGeminiStream: return "maxOutputTokens";  // inside generationConfig
  }
  return "max_tokens";
}

absl::StatusOr<std::optional<std::int64_t>> read_count(dom::object obj, std::string_view key, std::string_view path) {
  dom::element value;
  if (obj[key].get(value) != simdjson::SUCCESS || value.is_null()) return std::optional<std::int64_t>();
  std::int64_t n = 0;
  if (value.get_int64().get(n) != simdjson::SUCCESS || n < 0) {
    return absl::InvalidArgumentError(str_cat(path, ": must be a non-negative integer"));
  }
  return std::optional<std::int64_t>(n);
}

absl::StatusOr<std::string> read_string(dom::object obj, std::string_view key, std::string_view path) {
  dom::element value;
  if (obj[key].get(value) != simdjson::SUCCESS || value.is_null()) return std::string();
  std::string_view s;
  if (value.get_string().get(s) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(str_cat(path, ": must be a string"));
  }
  return std::string(s);
}

// `object` re-serialised with `key` set to `value` (a JSON text) and `extra` fields appended.
// A top-level field to set: its key and its value's JSON text.
using FieldValue = std::pair<std::string_view, std::string>;

// `object` rebuilt with the fields `set` (each replaced where it is, appended when absent).
std::string with_fields(dom::object object, std::span<const FieldValue> set) {
  std::string out = "{";
  std::vector<bool> replaced(set.size(), false);
  for (auto field : object) {
    if (out.size() > 1) out += ',';
    out += json_quote(field.key);
    out += ':';
    std::size_t i = 0;
    while (i < set.size() && set[i].first != field.key) ++i;
    if (i < set.size()) {
      out += set[i].second;
      replaced[i] = true;
    } else {
      out += simdjson::minify(field.value);
    }
  }
  for (std::size_t i = 0; i < set.size(); ++i) {
    if (replaced[i]) continue;
    if (out.size() > 1) out += ',';
    out += json_quote(set[i].first);
    out += ':';
    out += set[i].second;
  }
  out += '}';
  return out;
}

std::string with_field(dom::object object, std::string_view key, const std::string& value) {
  const FieldValue set[] = {{key, value}};
  return with_fields(object, set);
}

// `body` with the fields `set` (none of them in it) appended before its closing brace, at `close`;
// `empty`: the object has no field yet.
std::string with_fields_appended(std::string_view body, std::size_t close, bool empty, std::span<const FieldValue> set) {
  std::string out(body.substr(0, close));
  for (const auto& [key, value] : set) {
    if (!empty) out += ',';
    str_append(&out, json_quote(key), ":", value);
    empty = false;
  }
  out += '}';
  return out;
}

// `body` (the text of `object`, a valid JSON object) with the fields `set`. When it holds none of
// them (the usual case: the proxy adds a bound or stream_options the caller did not send), they are
// appended before its closing brace and the caller's text is kept byte for byte; otherwise the
// object is rebuilt. On the way to the provider: measured at ~50 us (cold) for a stream's body
// rebuilt twice, parse included, before this.
std::string with_fields(std::string_view body, dom::object object, std::span<const FieldValue> set) {
  bool any_present = false;
  for (const auto& [key, value] : set) {
    dom::element existing;
    any_present |= object[key].get(existing) == simdjson::SUCCESS;
  }
  const std::size_t close = body.find_last_not_of(" \t\r\n");
  if (any_present || close == std::string_view::npos || body[close] != '}') return with_fields(object, set);
  return with_fields_appended(body, close, object.size() == 0, set);
}

}  // namespace

std::optional<RouteMatch> match_route(std::string_view method, std::string_view target) {
  if (method != "POST") return std::nullopt;
  const std::size_t query = target.find('?');
  const std::string_view path = target.substr(0, query);
  if (path == "/v1/chat/completions") return RouteMatch{Route::kOpenAIChat, Provider::kOpenAI, ApiFormat::kOpenAIChat, {}};
  if (path == "/v1/responses") return RouteMatch{Route::kOpenAIResponses, Provider::kOpenAI, ApiFormat::kOpenAIResponses, {}};
  if (path == "/v1/messages") return RouteMatch{Route::kAnthropicMessages, Provider::kAnthropic, ApiFormat::kAnthropicMessages, {}};
  // Gemini: /v1beta/models/{model}:generateContent (or /v1/...), the model in the path.
  const std::size_t models = path.find("/models/");
  if (models == std::string_view::npos || !(path.starts_with("/v1beta/") || path.starts_with("/v1/"))) {
    return std::nullopt;
  }
  const std::string_view rest = path.substr(models + 8);
  const std::size_t colon = rest.find(':');
  if (colon == std::string_view::npos || colon == 0 || rest.substr(0, colon).find('/') != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view verb = rest.substr(colon + 1);
  const std::string model(rest.substr(0, colon));
  if (verb == "generateContent") return RouteMatch{Route::kGeminiGenerate, Provider::kGemini, ApiFormat::kGeminiGenerate, model};
  if (verb == "streamGenerateContent") return RouteMatch{Route::kGeminiStream, Provider::kGemini, ApiFormat::kGeminiGenerate, model};
  return std::nullopt;
}

absl::StatusOr<CallRequest> read_request(const RouteMatch& route, std::string_view body) {
  dom::element doc;
  if (auto error = thread_parser().parse(body.data(), body.size()).get(doc); error != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(str_cat("request body: not valid JSON (", simdjson::error_message(error), ")"));
  }
  dom::object top;
  if (doc.get_object().get(top) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("request body: must be a JSON object");
  }
  CallRequest request;
  request.prompt_tokens = static_cast<std::int64_t>((body.size() + 3) / 4);
  const bool gemini = route.route == Route::kGeminiGenerate || route.route == Route::kGeminiStream;
  if (gemini) {
    request.model = route.model;
    request.stream = route.route == Route::kGeminiStream;
    dom::object config;
    if (top["generationConfig"].get(config) == simdjson::SUCCESS) {
      auto max = read_count(config, "maxOutputTokens", "generationConfig.maxOutputTokens");
      if (!max.ok()) return max.status();
      request.max_tokens = *max;
    }
    return request;
  }
  auto model = read_string(top, "model", "model");
  if (!model.ok()) return model.status();
  if (model->empty()) return absl::InvalidArgumentError("model: required (a non-empty string)");
  request.model = *std::move(model);
  dom::element stream;
  if (top["stream"].get(stream) == simdjson::SUCCESS && !stream.is_null()) {
    if (stream.get_bool().get(request.stream) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError("stream: must be true or false");
    }
  }
  const std::string_view key = max_tokens_key(route.route, top);
  dom::element present;
  request.bound_key = key;
  request.bound_present = top[key].get(present) == simdjson::SUCCESS;
  request.stream_options_present = top["stream_options"].get(present) == simdjson::SUCCESS;
  auto max = read_count(top, key, key);
  if (!max.ok()) return max.status();
  request.max_tokens = *max;
  if (route.route == Route::kAnthropicMessages) {
    dom::object metadata;
    if (top["metadata"].get(metadata) == simdjson::SUCCESS) {
      auto user = read_string(metadata, "user_id", "metadata.user_id");
      if (!user.ok()) return user.status();
      request.end_user = *std::move(user);
    }
  } else {
    auto safety = read_string(top, "safety_identifier", "safety_identifier");
    if (!safety.ok()) return safety.status();
    auto user = read_string(top, "user", "user");
    if (!user.ok()) return user.status();
    request.end_user = safety->empty() ? *std::move(user) : *std::move(safety);
  }
  if (route.route == Route::kOpenAIChat) {
    dom::object options;
    bool include = false;
    if (top["stream_options"].get(options) == simdjson::SUCCESS &&
        options["include_usage"].get_bool().get(include) == simdjson::SUCCESS) {
      request.include_usage = include;
    }
  }
  return request;
}

std::string rewrite_body(const RouteMatch& route, std::string_view body, std::optional<std::int64_t> max_tokens,
                         bool add_include_usage) {
  if (!max_tokens && !add_include_usage) return std::string(body);
  dom::object top;
  if (thread_parser().parse(body.data(), body.size()).get_object().get(top) != simdjson::SUCCESS) {
    return std::string(body);  // read_request refused it already; never here
  }
  std::string out;
  if (route.route == Route::kGeminiGenerate || route.route == Route::kGeminiStream) {
    if (!max_tokens) return std::string(body);
    dom::object config;
    std::string new_config = top["generationConfig"].get(config) == simdjson::SUCCESS
                                 ? with_field(config, "maxOutputTokens", std::to_string(*max_tokens))
                                 : str_cat("{\"maxOutputTokens\":", *max_tokens, "}");
    return with_field(top, "generationConfig", new_config);
  }
  // One pass over the one parse: the bound and stream_options together.
  std::vector<FieldValue> set;
  if (max_tokens) set.emplace_back(max_tokens_key(route.route, top), std::to_string(*max_tokens));
  if (add_include_usage) {
    dom::object options;
    set.emplace_back("stream_options", top["stream_options"].get(options) == simdjson::SUCCESS
                                           ? with_field(options, "include_usage", "true")
                                           : std::string("{\"include_usage\":true}"));
  }
  return with_fields(body, top, set);
}

std::string rewrite_body(const RouteMatch& route, std::string_view body, const CallRequest& read,
                         std::optional<std::int64_t> max_tokens, bool add_include_usage) {
  if (!max_tokens && !add_include_usage) return std::string(body);
  const std::size_t close = body.find_last_not_of(" \t\r\n");
  if (route.route == Route::kGeminiGenerate || route.route == Route::kGeminiStream || read.bound_key.empty() ||
      (max_tokens && read.bound_present) || (add_include_usage && read.stream_options_present) ||
      close == std::string_view::npos || body[close] != '}') {
    return rewrite_body(route, body, max_tokens, add_include_usage);  // a field to replace: parsed again
  }
  FieldValue set[2];
  std::size_t n = 0;
  if (max_tokens) set[n++] = {read.bound_key, std::to_string(*max_tokens)};
  if (add_include_usage) set[n++] = {"stream_options", R"({"include_usage":true})"};
  // read_request needs a model: the object is never empty.
  return with_fields_appended(body, close, /*empty=*/false, std::span<const FieldValue>(set, n));
}

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace paygent::proxy
