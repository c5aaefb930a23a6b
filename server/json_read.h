// The strict reader under the agents and billing APIs' bodies (server/agents_wire.cpp,
// server/billing_wire.cpp): walks a simdjson on-demand value, every field in camelCase or
// snake_case, an unknown or repeated field refused naming its path ("indicators[1].pricing.model").
//
// Thread safety: free functions without shared state. Nothing of what they read is kept.
#pragma once

#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "meter/internal/str_cat.h"
#include "server/wire.h"

namespace paygent::server::json_read {

using simdjson::ondemand::value;

inline absl::Status field_error(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(::paygent::internal::str_cat(field, ": ", what));
}

// The camelCase name of a field spelled either way ("price_per_event" -> "pricePerEvent").
inline std::string camel(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '_' && i + 1 < name.size()) {
      out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(name[++i]))));
    } else {
      out.push_back(name[i]);
    }
  }
  return out;
}

// Walks an object's fields: each key (camelCased) must be one of `known` and appear once, then
// `read(index into known, value, "path.key")` reads it.
template <class Read>
inline absl::Status read_object(value v, std::string_view path, std::span<const std::string_view> known, Read read) {
  simdjson::ondemand::object object;
  if (v.get_object().get(object) != simdjson::SUCCESS) return field_error(path.empty() ? "body" : path, "must be an object");
  std::set<std::string, std::less<>> seen;
  for (auto field : object) {
    std::string_view raw_key;
    if (field.unescaped_key().get(raw_key) != simdjson::SUCCESS) return field_error(path, "not valid JSON");
    const std::string key = camel(raw_key);
    const std::string where = path.empty() ? std::string(raw_key) : ::paygent::internal::str_cat(path, ".", raw_key);
    const auto it = std::find(known.begin(), known.end(), key);
    if (it == known.end()) return field_error(where, "unknown field");
    if (!seen.insert(key).second) return field_error(where, "repeated field");
    value member;
    if (field.value().get(member) != simdjson::SUCCESS) return field_error(where, "not valid JSON");
    if (absl::Status s = read(static_cast<std::size_t>(it - known.begin()), member, where); !s.ok()) return s;
  }
  return absl::OkStatus();
}

inline absl::Status read_text(value v, std::string_view where, std::string& out, bool non_empty) {
  std::string_view text;
  if (v.get_string().get(text) != simdjson::SUCCESS) return field_error(where, "must be a string");
  if (non_empty && text.empty()) return field_error(where, "must not be empty");
  if (text.size() > kMaxTextBytes) return field_error(where, ::paygent::internal::str_cat("must be at most ", kMaxTextBytes, " bytes"));
  if (text.find('\0') != std::string_view::npos) return field_error(where, "must not contain NUL");
  out = std::string(text);
  return absl::OkStatus();
}

inline absl::Status read_bool(value v, std::string_view where, bool& out) {
  if (v.get_bool().get(out) != simdjson::SUCCESS) return field_error(where, "must be true or false");
  return absl::OkStatus();
}

// Calls read(element, "path[i]") for each element of an array of at most `most`.
template <class Read>
inline absl::Status read_array(value v, std::string_view path, std::size_t most, Read read) {
  simdjson::ondemand::array array;
  if (v.get_array().get(array) != simdjson::SUCCESS) return field_error(path, "must be an array");
  std::size_t i = 0;
  for (auto element : array) {
    const std::string where = ::paygent::internal::str_cat(path, "[", i, "]");
    if (i == most) return field_error(path, ::paygent::internal::str_cat("at most ", most, " entries"));
    value item;
    if (element.get(item) != simdjson::SUCCESS) return field_error(where, "not valid JSON");
    if (absl::Status s = read(item, where); !s.ok()) return s;
    ++i;
  }
  return absl::OkStatus();
}

// Parses `body` as one JSON value and gives it to `read`; then nothing may follow it.
template <class Read>
inline absl::Status read_body(std::string_view body, Read read) {
  // The DOM parser validates the whole text first (trailing content included); the on-demand
  // walk then reads the fields with each number's exact text.
  simdjson::dom::parser validator;
  if (simdjson::dom::element whole; validator.parse(body.data(), body.size()).get(whole) != simdjson::SUCCESS) {
    return field_error("body", "not valid JSON");
  }
  simdjson::ondemand::parser parser;
  const simdjson::padded_string padded(body);
  simdjson::ondemand::document doc;
  value root;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS || doc.get_value().get(root) != simdjson::SUCCESS) {
    return field_error("body", "not valid JSON");
  }
  return read(root);
}

// The text of a number given as a string ("0.15") or as a JSON number, read from its exact text
// (0.15, never through a double). `text` views `v`'s document.
inline absl::Status read_number_text(value v, std::string_view where, std::string_view& text) {
  simdjson::ondemand::json_type type;
  if (v.type().get(type) != simdjson::SUCCESS) return field_error(where, "not valid JSON");
  if (type == simdjson::ondemand::json_type::string) {
    if (v.get_string().get(text) != simdjson::SUCCESS) return field_error(where, "not valid JSON");
    return absl::OkStatus();
  }
  if (type != simdjson::ondemand::json_type::number) {
    return field_error(where, "must be a decimal string (\"0.15\") or a number");
  }
  text = v.raw_json_token();
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\r' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return absl::OkStatus();
}

}  // namespace paygent::server::json_read
