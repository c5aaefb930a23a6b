// The tracking API's strict body reader (see server/json_body.h), on simdjson's On-Demand parser,
// whose raw_json_token() gives a number's exact text.
#include "server/json_body.h"

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "billing/decimal.h"
#include "meter/internal/str_cat.h"
#include "paygent/media_price.h"
#include "server/json_writer.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
namespace od = simdjson::ondemand;

absl::Status field_error(std::string_view path, std::string_view what) {
  return absl::InvalidArgumentError(str_cat(path, ": ", what));
}

std::string member_path(std::string_view parent, std::string_view name) {
  return parent.empty() ? std::string(name) : str_cat(parent, ".", name);
}

std::string_view trim_space(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// The exact text of a JSON number value; nullopt when the value is not a number.
std::optional<std::string_view> number_text(od::value& value) {
  od::json_type type;
  if (value.type().get(type) != simdjson::SUCCESS || type != od::json_type::number) return std::nullopt;
  return trim_space(value.raw_json_token());
}

// A non-negative int64 written in decimal digits only.
std::optional<std::int64_t> digits_to_int64(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::int64_t out = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    if (__builtin_mul_overflow(out, 10, &out) || __builtin_add_overflow(out, c - '0', &out)) return std::nullopt;
  }
  return out;
}

// "12.345" USD -> 12,345,000,000 nano-USD exactly; nullopt for anything else (a sign, an
// exponent, more than 9 decimals, past int64).
std::optional<std::int64_t> usd_to_nanos(std::string_view text) {
  const std::size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  std::string_view fraction = dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  if (dot != std::string_view::npos && fraction.empty()) return std::nullopt;
  if (fraction.size() > 9) return std::nullopt;
  const std::optional<std::int64_t> units = digits_to_int64(whole);
  if (!units) return std::nullopt;
  std::int64_t nanos = 0;
  if (__builtin_mul_overflow(*units, 1'000'000'000, &nanos)) return std::nullopt;
  std::int64_t part = 0;
  for (std::size_t i = 0; i < 9; ++i) {
    const char c = i < fraction.size() ? fraction[i] : '0';
    if (c < '0' || c > '9') return std::nullopt;
    part = part * 10 + (c - '0');
  }
  if (__builtin_add_overflow(nanos, part, &nanos)) return std::nullopt;
  return nanos;
}

absl::Status read_string(od::value& value, std::string_view path, std::string& out) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) return field_error(path, "must be a string");
  if (text.size() > kMaxTextBytes) return field_error(path, str_cat("must be at most ", kMaxTextBytes, " bytes"));
  if (text.find('\0') != std::string_view::npos) return field_error(path, "must not contain \\u0000");
  out.assign(text.data(), text.size());
  return absl::OkStatus();
}

absl::Status read_meta_tags(od::value& value, std::string_view path, std::string& out) {
  od::object object;
  if (value.get_object().get(object) != simdjson::SUCCESS) return field_error(path, "must be an object of strings");
  std::vector<std::string> keys;
  JsonWriter writer;
  writer.begin_object();
  for (auto member : object) {
    od::field field;
    if (std::move(member).get(field) != simdjson::SUCCESS) return field_error(path, "not valid JSON");
    std::string_view key;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) return field_error(path, "not valid JSON");
    const std::string tag_path = member_path(path, key);
    for (const std::string& seen : keys) {
      if (seen == key) return field_error(tag_path, "repeated");
    }
    if (keys.size() == kMaxMetaTags) return field_error(path, str_cat("at most ", kMaxMetaTags, " tags"));
    keys.emplace_back(key);
    if (key.empty() || key.size() > kMaxTextBytes) return field_error(tag_path, "a tag's name must be 1 to 1024 bytes");
    std::string text;
    if (absl::Status s = read_string(field.value(), tag_path, text); !s.ok()) return s;
    writer.key(keys.back()).value(text);
  }
  writer.end_object();
  out = std::move(writer).str();
  return absl::OkStatus();
}

absl::Status read_object(od::object& object, std::string_view path, std::span<const BodyField> fields);

absl::Status read_value(od::value& value, const BodyField& f, std::string_view path) {
  switch (f.type) {
    case BodyType::kText: {
      if (absl::Status s = read_string(value, path, *f.text); !s.ok()) return s;
      if (f.non_empty && f.text->empty()) return field_error(path, "must not be empty");
      return absl::OkStatus();
    }
    case BodyType::kMetaTags: return read_meta_tags(value, path, *f.text);
    case BodyType::kDecimal: {
      std::string text;
      od::json_type type;
      if (value.type().get(type) == simdjson::SUCCESS && type == od::json_type::string) {
        if (absl::Status s = read_string(value, path, text); !s.ok()) return s;
      } else if (const std::optional<std::string_view> number = number_text(value)) {
        text = std::string(*number);
      } else {
        return field_error(path, "must be a decimal number or a string of one");
      }
      absl::StatusOr<billing::Decimal> d = billing::Decimal::parse(text);
      if (!d.ok()) {
        return field_error(path, str_cat("must be an exact decimal (\"2.5\", \"100\"): ", d.status().message()));
      }
      *f.text = d->normalized().to_string();
      return absl::OkStatus();
    }
    case BodyType::kObject: {
      od::object object;
      if (value.get_object().get(object) != simdjson::SUCCESS) return field_error(path, "must be an object");
      return read_object(object, path, f.members);
    }
    case BodyType::kCount:
    case BodyType::kUsd:
    case BodyType::kMinutes:
    case BodyType::kSeconds: break;
  }
  const std::optional<std::string_view> text = number_text(value);
  switch (f.type) {
    case BodyType::kCount: {
      const std::optional<std::int64_t> n = text ? digits_to_int64(*text) : std::nullopt;
      if (!n) return field_error(path, "must be a non-negative integer (at most 2^63-1)");
      *f.count = *n;
      return absl::OkStatus();
    }
    case BodyType::kUsd: {
      const std::optional<std::int64_t> n = text ? usd_to_nanos(*text) : std::nullopt;
      if (!n) return field_error(path, "must be a non-negative decimal number of USD with at most 9 decimals");
      *f.count = *n;
      return absl::OkStatus();
    }
    default: {
      const bool minutes = f.type == BodyType::kMinutes;
      if (!text) return field_error(path, minutes ? "must be a number of minutes" : "must be a number of seconds");
      absl::StatusOr<std::chrono::microseconds> d = minutes ? parse_minutes(*text) : parse_seconds(*text);
      if (!d.ok()) return field_error(path, std::string_view(d.status().message().data(), d.status().message().size()));
      *f.duration = *d;
      return absl::OkStatus();
    }
  }
}

absl::Status read_object(od::object& object, std::string_view path, std::span<const BodyField> fields) {
  // The spelling each field was given under, to name both in a repeat.
  std::vector<std::string> given(fields.size());
  std::vector<bool> seen(fields.size(), false);
  for (auto member : object) {
    od::field field;
    if (std::move(member).get(field) != simdjson::SUCCESS) return field_error(path.empty() ? "body" : path, "not valid JSON");
    std::string_view key;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) return field_error(path.empty() ? "body" : path, "not valid JSON");
    const std::string key_path = member_path(path, key);
    std::size_t index = fields.size();
    for (std::size_t i = 0; i < fields.size() && index == fields.size(); ++i) {
      for (std::string_view name : fields[i].names) {
        if (!name.empty() && spells(key, name)) {
          index = i;
          break;
        }
      }
    }
    if (index == fields.size()) return field_error(key_path, "unknown field");
    if (seen[index]) {
      return field_error(key_path, given[index] == key ? std::string("repeated")
                                                       : str_cat("repeated (also given as \"", given[index], "\")"));
    }
    seen[index] = true;
    given[index] = std::string(key);
    if (absl::Status s = read_value(field.value(), fields[index], key_path); !s.ok()) return s;
    if (fields[index].present != nullptr) *fields[index].present = true;
  }
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (fields[i].required && !seen[i]) return field_error(member_path(path, fields[i].names[0]), "missing");
  }
  return absl::OkStatus();
}

}  // namespace

bool spells(std::string_view key, std::string_view camel) noexcept {
  if (key == camel) return true;
  std::size_t k = 0;
  for (const char c : camel) {
    if (c >= 'A' && c <= 'Z') {
      if (k >= key.size() || key[k] != '_') return false;
      ++k;
      if (k >= key.size() || key[k] != c - 'A' + 'a') return false;
    } else if (k >= key.size() || key[k] != c) {
      return false;
    }
    ++k;
  }
  return k == key.size();
}

absl::Status read_json_body(std::string_view body, std::span<const BodyField> fields) {
  // The DOM parser validates the whole text first (On-Demand checks only what it reads: a
  // malformed number or trailing content would pass it).
  thread_local simdjson::dom::parser validator;
  simdjson::dom::element root;
  if (validator.parse(body).get(root) != simdjson::SUCCESS) return field_error("body", "not valid JSON");
  thread_local od::parser parser;
  const simdjson::padded_string padded(body);
  od::document doc;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS) return field_error("body", "not valid JSON");
  od::object object;
  if (doc.get_object().get(object) != simdjson::SUCCESS) return field_error("body", "must be a JSON object");
  return read_object(object, "", fields);
}

}  // namespace paygent::server
