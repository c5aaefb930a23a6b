// The one strict reader of the tracking API's request bodies (server/tracking_api.cpp): an
// endpoint declares its fields once (BodyField: the accepted names, the type, required or not,
// where the value goes) and read_json_body() fills its record from the body, in camelCase or in
// snake_case alike.
//
// Strict, like the rest of paygentd's bodies (server/wire.h): the body is one JSON object; an
// unknown field, or a field given twice, is refused naming it. A field given in both spellings
// ("inputTokens" and "input_tokens"), or under two of its names ("audioMinutes" and
// "audioDuration"), is a repeat. Every error is InvalidArgument whose message starts with the
// field's path as the body spelled it ("rawUsage.input_tokens: must be a non-negative integer").
//
// Numbers are read from their JSON text, never through a double: counts are non-negative integers
// that fit in int64 (1.0, 1e3, -1 are refused); minutes and seconds are exact decimals
// (parse_minutes / parse_seconds of media_price.h: 0.45 minutes is 27,000,000 us exactly); USD
// amounts are exact decimals of at most 9 places (nano-USD). A string where a number goes, a
// number where a string goes, null, NaN or Infinity (not JSON) are refused naming the field.
//
// Thread safety: read_json_body is a free function without shared state; the fields' targets are
// the caller's.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace paygent::server {

enum class BodyType : std::uint8_t {
  kText,      // a string of at most kMaxTextBytes bytes, without NUL -> *text
  kCount,     // a non-negative integer -> *count
  kMinutes,   // a non-negative decimal number of minutes -> *duration (exact microseconds)
  kSeconds,   // a non-negative decimal number of seconds -> *duration
  kUsd,       // a non-negative decimal number of USD, at most 9 decimals -> *count (nano-USD)
  kMetaTags,  // an object of at most kMaxMetaTags string values -> *text, as normalised JSON
  // An exact decimal (billing/decimal.h: no exponent), as a JSON number or a string ("100",
  // "0.25") -> *text, normalised ("10.50" -> "10.5"); its sign is the caller's to judge.
  kDecimal,
  kObject,    // an object whose members are `members`
};

struct BodyField {
  // The field's names in camelCase ("inputTokens"); each is also accepted in snake_case
  // ("input_tokens"). The first names the field in a "missing" error; unused entries are empty.
  std::array<std::string_view, 2> names;
  BodyType type;
  bool required = false;
  std::string* text = nullptr;                     // kText, kMetaTags
  std::int64_t* count = nullptr;                   // kCount, kUsd
  std::chrono::microseconds* duration = nullptr;   // kMinutes, kSeconds
  std::span<const BodyField> members = {};         // kObject
  bool* present = nullptr;                         // when set: true once the field is read
  bool non_empty = false;                          // kText: "" is refused
};

// Reads `body` (a JSON object) into `fields`' targets. On failure the targets may be partly
// written; the caller discards them.
absl::Status read_json_body(std::string_view body, std::span<const BodyField> fields);

// True when `key` is `camel` ("inputTokens") or its snake_case spelling ("input_tokens").
[[nodiscard]] bool spells(std::string_view key, std::string_view camel) noexcept;

}  // namespace paygent::server
