// Request bodies and reply text of paygentd's API (see server/wire.h).
#include "server/wire.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "server/lease_logic.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
using simdjson::dom::element;
using simdjson::dom::element_type;

// Each thread reuses its own parser (and the buffers it has grown).
simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

// Where a value sits in the body ("events[3].meta_tags.k"), as a chain of links on the stack. The
// text is built only when an error names it, so that reading a valid batch allocates no paths.
struct FieldPath {
  const FieldPath* parent = nullptr;
  std::string_view name;  // a member's name; empty for an array element
  std::size_t index = 0;  // an array element's index

  FieldPath member(std::string_view member_name) const { return FieldPath{this, member_name, 0}; }
  FieldPath element(std::size_t element_index) const { return FieldPath{this, {}, element_index}; }

  [[nodiscard]] std::string str() const {
    if (parent == nullptr) return std::string(name.empty() ? "body" : name);
    std::string out = parent->parent == nullptr && parent->name.empty() ? std::string() : parent->str();
    if (name.empty()) return str_cat(out, "[", index, "]");
    return out.empty() ? std::string(name) : str_cat(out, ".", name);
  }
};

// The root of a body: its members' paths are their bare names ("events", "plan").
constexpr FieldPath kBody{};

absl::Status field_error(const FieldPath& path, std::string_view what) {
  return absl::InvalidArgumentError(str_cat(path.str(), ": ", what));
}

// The message for a number that no 64-bit field can hold. Every number of the API's bodies is a
// count, an amount or a time, all non-negative int64.
constexpr std::string_view kNumberOutOfRange =
    "out of range: must be a non-negative integer that fits in 64 bits (at most 9223372036854775807)";

// Walks `value` in document order for the first number simdjson cannot hold (an integer past
// uint64, a double past its range such as 1e400); on finding it, sets `found` to its field path.
// Returns false when the walk cannot go on (the text is malformed there).
bool find_bad_number(simdjson::ondemand::value value, const FieldPath& path, std::optional<std::string>& found) {
  simdjson::ondemand::json_type type;
  if (value.type().get(type) != simdjson::SUCCESS) return false;
  switch (type) {
    case simdjson::ondemand::json_type::object: {
      simdjson::ondemand::object object;
      if (value.get_object().get(object) != simdjson::SUCCESS) return false;
      for (auto field : object) {
        std::string_view key;
        simdjson::ondemand::value member;
        if (field.unescaped_key().get(key) != simdjson::SUCCESS || field.value().get(member) != simdjson::SUCCESS) {
          return false;
        }
        const std::string name(key);  // the key's text lives in the parser's buffer, reused below
        if (!find_bad_number(member, path.member(name), found) || found) return found.has_value();
      }
      return true;
    }
    case simdjson::ondemand::json_type::array: {
      simdjson::ondemand::array array;
      if (value.get_array().get(array) != simdjson::SUCCESS) return false;
      std::size_t i = 0;
      for (auto item : array) {
        simdjson::ondemand::value element_value;
        if (item.get(element_value) != simdjson::SUCCESS) return false;
        if (!find_bad_number(element_value, path.element(i++), found) || found) return found.has_value();
      }
      return true;
    }
    case simdjson::ondemand::json_type::number: {
      simdjson::ondemand::number number;
      if (value.get_number().get(number) != simdjson::SUCCESS) found = path.str();
      return true;
    }
    default: return true;  // strings, booleans and nulls hold no number
  }
}

// Parses `body` as one JSON document whose root is an object.
absl::StatusOr<simdjson::dom::object> parse_object(std::string_view body) {
  element root;
  // realloc_if_needed: simdjson reads past the end; the parser copies into a padded buffer.
  if (const auto error = thread_parser().parse(body.data(), body.size(), true).get(root); error) {
    // simdjson refuses the whole document for one number it cannot hold: name that number's
    // field, as for any other value out of range. Only on this (rare) error path is the body
    // walked a second time.
    if (error == simdjson::NUMBER_ERROR) {
      const simdjson::padded_string padded(body);
      simdjson::ondemand::parser parser;
      simdjson::ondemand::document document;
      simdjson::ondemand::value value;
      std::optional<std::string> path;
      if (parser.iterate(padded).get(document) == simdjson::SUCCESS &&
          document.get_value().get(value) == simdjson::SUCCESS) {
        find_bad_number(value, kBody, path);
      }
      if (path) return absl::InvalidArgumentError(str_cat(*path, ": ", kNumberOutOfRange));
    }
    return absl::InvalidArgumentError(
        str_cat("body: not valid JSON (truncated or malformed): ", simdjson::error_message(error)));
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) return field_error(kBody, "must be a JSON object");
  return object;
}

absl::Status read_text(element value, const FieldPath& path, std::string& out, bool non_empty) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) return field_error(path, "must be a string");
  if (non_empty && text.empty()) return field_error(path, "must not be empty");
  if (text.size() > kMaxTextBytes) return field_error(path, str_cat("must be at most ", kMaxTextBytes, " bytes"));
  // PostgreSQL's text cannot hold U+0000: refused for every storage, so that both behave alike.
  if (text.find('\0') != std::string_view::npos) return field_error(path, "must not contain \\u0000");
  out.assign(text);
  return absl::OkStatus();
}

absl::Status read_count(element value, const FieldPath& path, std::int64_t& out) {
  if (value.type() != element_type::INT64) {
    return field_error(path, value.type() == element_type::UINT64 ? "must fit in a signed 64-bit integer"
                                                                  : "must be a non-negative integer");
  }
  out = value.get_int64().value_unsafe();
  if (out < 0) return field_error(path, "must be a non-negative integer");
  return absl::OkStatus();
}

absl::Status read_bool(element value, const FieldPath& path, bool& out) {
  if (value.get_bool().get(out) != simdjson::SUCCESS) return field_error(path, "must be true or false");
  return absl::OkStatus();
}

// Reads an object's members against a fixed list of field names: each member must be one of
// `names` and appear once; `read(index, value, path)` reads it. Then every name in `required`
// (a bit per index) must have been seen.
template <std::size_t N, class Read>
absl::Status read_fields(simdjson::dom::object object, const FieldPath& path,
                         const std::array<std::string_view, N>& names, std::uint64_t required, Read&& read) {
  static_assert(N <= 64);
  std::uint64_t seen = 0;
  std::size_t expected = 0;  // members usually come in the documented order: try that one first
  for (const auto [key, value] : object) {
    std::size_t index = expected < N && names[expected] == key ? expected : 0;
    while (index < N && names[index] != key) ++index;
    const FieldPath member = path.member(key);
    if (index == N) return field_error(member, "unknown field");
    const std::uint64_t bit = std::uint64_t{1} << index;
    if ((seen & bit) != 0) return field_error(member, "repeated field");
    seen |= bit;
    expected = index + 1;
    if (absl::Status s = read(index, value, member); !s.ok()) return s;
  }
  for (std::size_t index = 0; index < N; ++index) {
    if ((required & (std::uint64_t{1} << index)) != 0 && (seen & (std::uint64_t{1} << index)) == 0) {
      return field_error(path.member(names[index]), "missing");
    }
  }
  return absl::OkStatus();
}

constexpr std::uint64_t all_of(std::size_t n) { return n == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << n) - 1; }

bool is_event_id(std::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::Status read_meta_tags(element value, const FieldPath& path, std::string& out) {
  simdjson::dom::object tags;
  if (value.get_object().get(tags) != simdjson::SUCCESS) return field_error(path, "must be an object of strings");
  if (tags.size() > kMaxMetaTags) return field_error(path, str_cat("must have at most ", kMaxMetaTags, " tags"));
  out = "{";
  std::size_t count = 0;
  for (const auto [key, tag] : tags) {
    const FieldPath tag_path = path.member(key);
    // At most 64 tags: a quadratic check for repeats is cheaper than a set.
    std::size_t seen = 0;
    for (const auto [other, ignored] : tags) {
      if (seen++ == count) break;
      if (other == key) return field_error(tag_path, "repeated tag");
    }
    ++count;
    if (key.size() > kMaxTextBytes) {
      return field_error(path, str_cat("tag names must be at most ", kMaxTextBytes, " bytes"));
    }
    std::string_view text;
    if (tag.get_string().get(text) != simdjson::SUCCESS) return field_error(tag_path, "must be a string");
    if (text.size() > kMaxTextBytes) return field_error(tag_path, str_cat("must be at most ", kMaxTextBytes, " bytes"));
    if (out.size() > 1) out += ',';
    out += json_quote(key);
    out += ':';
    out += json_quote(text);
  }
  out += '}';
  return absl::OkStatus();
}

using ::paygent::internal::EventField;
using ::paygent::internal::EventFieldType;
using ::paygent::internal::kEventFields;
using ::paygent::internal::kWireVersion;
static_assert(kEventFields.size() <= 64);

absl::Status read_event_field(const EventField& f, element v, const FieldPath& field, EventRecord& e) {
  switch (f.type) {
    case EventFieldType::kId: {
      std::string_view id;
      if (v.get_string().get(id) != simdjson::SUCCESS || !is_event_id(id)) {
        return field_error(field, "must be 32 lowercase hex digits");
      }
      (e.*f.text).assign(id);
      return absl::OkStatus();
    }
    case EventFieldType::kText: return read_text(v, field, e.*f.text, f.non_empty);
    case EventFieldType::kCount: return read_count(v, field, e.*f.count);
    case EventFieldType::kBool: return read_bool(v, field, e.*f.flag);
    case EventFieldType::kMetaTags: return read_meta_tags(v, field, e.*f.text);
    case EventFieldType::kKind: {
      std::string_view name;
      if (v.get_string().get(name) != simdjson::SUCCESS || !::paygent::internal::parse_usage_kind(name, e.kind)) {
        return field_error(field, "must be one of \"llm\", \"stt\", \"tts\", \"sts\", \"video\", \"external\", \"billing\"");
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unreachable");
}

// Reads one event against the event's field table (sync/event_record.h). A field unknown here is
// refused, unless the batch is of a newer wire version than this paygentd's (then it is a field
// added since, and ignored). Every required field must be there; the others keep their defaults.
absl::Status read_event(element value, const FieldPath& path, int batch_version, EventRecord& e) {
  simdjson::dom::object object;
  if (value.get_object().get(object) != simdjson::SUCCESS) return field_error(path, "must be an object");
  constexpr std::size_t n = kEventFields.size();
  std::uint64_t seen = 0;
  std::size_t expected = 0;  // members usually come in the documented order: try that one first
  for (const auto [key, v] : object) {
    std::size_t index = expected < n && kEventFields[expected].name == key ? expected : 0;
    while (index < n && kEventFields[index].name != key) ++index;
    const FieldPath member = path.member(key);
    if (index == n) {
      if (batch_version > kWireVersion) continue;
      return field_error(member, "unknown field");
    }
    const std::uint64_t bit = std::uint64_t{1} << index;
    if ((seen & bit) != 0) return field_error(member, "repeated field");
    seen |= bit;
    expected = index + 1;
    if (absl::Status s = read_event_field(kEventFields[index], v, member, e); !s.ok()) return s;
  }
  for (std::size_t index = 0; index < n; ++index) {
    if (kEventFields[index].required && (seen & (std::uint64_t{1} << index)) == 0) {
      return field_error(path.member(kEventFields[index].name), "missing");
    }
  }
  // The audio token counts are parts of their totals (docs/wire.md, version 4).
  const struct {
    std::string_view part_name, total_name;
    std::int64_t part, total;
  } parts[] = {{"audio_input_tokens", "input_tokens", e.audio_input_tokens, e.input_tokens},
               {"cached_audio_input_tokens", "cached_input_tokens", e.cached_audio_input_tokens, e.cached_input_tokens},
               {"audio_output_tokens", "output_tokens", e.audio_output_tokens, e.output_tokens}};
  for (const auto& p : parts) {
    if (p.part > p.total) {
      return field_error(path.member(p.part_name), str_cat("must be at most ", p.total_name, " (", p.total,
                                                           "): the audio tokens are a part of it"));
    }
  }
  return absl::OkStatus();
}

// One soft gate of a batch: {"user_id", "limit", "period_start_ns", "threshold_ppm"}, all
// required; an unknown field as for an event (ignored only in a batch newer than this paygentd).
// A hard gate (`hard`, of "hard_gates") has the same fields and an optional "fired_ns".
absl::Status read_soft_gate(element value, const FieldPath& path, int batch_version, bool hard, SoftGateFired& out) {
  simdjson::dom::object object;
  if (value.get_object().get(object) != simdjson::SUCCESS) return field_error(path, "must be an object");
  static constexpr std::array<std::string_view, 5> kFields = {"user_id", "limit", "period_start_ns", "threshold_ppm",
                                                              "fired_ns"};
  const std::size_t known = hard ? kFields.size() : kFields.size() - 1;
  out.hard = hard;
  std::uint64_t seen = 0;
  for (const auto [key, v] : object) {
    const FieldPath member = path.member(key);
    std::size_t index = 0;
    while (index < known && kFields[index] != key) ++index;
    if (index == known) {
      if (batch_version > kWireVersion) continue;
      return field_error(member, "unknown field");
    }
    if ((seen & (std::uint64_t{1} << index)) != 0) return field_error(member, "repeated field");
    seen |= std::uint64_t{1} << index;
    absl::Status s;
    switch (index) {
      case 0: s = read_text(v, member, out.user_id, true); break;
      case 1: {
        std::string_view limit;
        if (v.get_string().get(limit) != simdjson::SUCCESS) return field_error(member, "must be a string");
        std::string_view name = limit;
        for (std::string_view prefix : {std::string_view("session_spend:"), std::string_view("model_limit:")}) {
          if (limit.starts_with(prefix)) name = limit.substr(prefix.size());
        }
        if ((name == limit && limit != "total_spend") || name.empty() || name.size() > kMaxTextBytes) {
          return field_error(member, str_cat("must be \"total_spend\", \"session_spend:<session id>\" or "
                                             "\"model_limit:<model>\" (the id or model 1 to ", kMaxTextBytes, " bytes)"));
        }
        out.limit_key.assign(limit);
        break;
      }
      case 2: s = read_count(v, member, out.period_start_ns); break;
      case 4: s = read_count(v, member, out.fired_ns); break;
      default:
        s = read_count(v, member, out.threshold_ppm);
        // Above 1,000,000 too: a plan may put hard_gate_at, and soft thresholds under it, past 1.0.
        if (s.ok() && out.threshold_ppm < 1) {
          return field_error(member, "must be a positive integer (parts per million of the limit)");
        }
    }
    if (!s.ok()) return s;
  }
  for (std::size_t index = 0; index < 4; ++index) {  // fired_ns is optional
    if ((seen & (std::uint64_t{1} << index)) == 0) return field_error(path.member(kFields[index]), "missing");
  }
  return absl::OkStatus();
}

absl::Status read_time(element value, const FieldPath& path, std::int64_t& out_ns) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) return field_error(path, "must be an RFC 3339 string");
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &t, &error)) {
    return field_error(path, str_cat("must be an RFC 3339 time like 2026-11-01T00:00:00Z (", error, ")"));
  }
  if (t < absl::UnixEpoch() || t >= absl::FromUnixNanos(INT64_MAX)) {
    return field_error(path, "must be between 1970 and 2262");
  }
  out_ns = absl::ToUnixNanos(t);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EventBatch> parse_ingest_batch(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  // The batch's wire version first: it decides whether an unknown field is a typo or a field
  // added by a newer library.
  std::int64_t version = 1;
  if (element v; (*root)["v"].get(v) == simdjson::SUCCESS) {
    if (v.type() != element_type::INT64 || v.get_int64().value_unsafe() < 1) {
      return field_error(kBody.member("v"), "must be a positive integer (the wire version)");
    }
    version = v.get_int64().value_unsafe();
  }
  const int batch_version = static_cast<int>(std::min<std::int64_t>(version, 1 << 30));
  EventBatch batch;
  std::vector<EventRecord>& events = batch.events;
  bool seen_v = false, seen_events = false, seen_soft_gates = false, seen_hard_gates = false;
  for (const auto [key, v] : *root) {
    const FieldPath path = kBody.member(key);
    if (key == "v" || key == "events" || key == "soft_gates" || key == "hard_gates") {
      bool& seen = key == "v"            ? seen_v
                   : key == "events"     ? seen_events
                   : key == "soft_gates" ? seen_soft_gates
                                         : seen_hard_gates;
      if (seen) return field_error(path, "repeated field");
      seen = true;
      if (key == "v") continue;
    } else if (batch_version > kWireVersion) {
      continue;
    } else {
      return field_error(path, "unknown field");
    }
    simdjson::dom::array array;
    if (key == "soft_gates" || key == "hard_gates") {
      const bool hard = key == "hard_gates";
      const std::string_view what = hard ? "hard gates" : "soft gates";
      if (v.get_array().get(array) != simdjson::SUCCESS) return field_error(path, str_cat("must be an array of ", what));
      if (array.size() > kMaxBatchSoftGates) {
        return field_error(path, str_cat("must hold at most ", kMaxBatchSoftGates, " ", what, ", not ", array.size()));
      }
      const std::size_t first = batch.soft_gates.size();
      batch.soft_gates.resize(first + array.size());
      std::size_t i = 0;
      for (element gate : array) {
        if (absl::Status s = read_soft_gate(gate, path.element(i), batch_version, hard, batch.soft_gates[first + i]);
            !s.ok()) {
          return s;
        }
        ++i;
      }
      continue;
    }
    if (v.get_array().get(array) != simdjson::SUCCESS) return field_error(path, "must be an array of events");
    if (array.size() > kMaxBatchEvents) {
      return field_error(path, str_cat("must hold 1 to ", kMaxBatchEvents, " events, not ", array.size()));
    }
    events.resize(array.size());
    std::size_t i = 0;
    for (element event : array) {
      if (absl::Status s = read_event(event, path.element(i), batch_version, events[i]); !s.ok()) return s;
      ++i;
    }
  }
  if (!seen_events) return field_error(kBody.member("events"), "missing");
  // No events: allowed only to carry soft gates (wire version 3) or hard gates (5).
  if (events.empty() && batch.soft_gates.empty()) {
    return field_error(kBody.member("events"),
                       str_cat("must hold 1 to ", kMaxBatchEvents, " events, not 0"));
  }
  return batch;
}

absl::StatusOr<std::vector<EventRecord>> parse_event_batch(std::string_view body) {
  absl::StatusOr<EventBatch> batch = parse_ingest_batch(body);
  if (!batch.ok()) return batch.status();
  return std::move(batch->events);
}

absl::StatusOr<std::vector<std::string>> parse_usage_query(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  std::vector<std::string> users;
  static constexpr std::array<std::string_view, 1> kFields = {"users"};
  absl::Status status = read_fields(*root, kBody, kFields, all_of(1), [&](std::size_t, element v, const FieldPath& path) {
    simdjson::dom::array array;
    if (v.get_array().get(array) != simdjson::SUCCESS) return field_error(path, "must be an array of user ids");
    if (array.size() == 0 || array.size() > kMaxBatchEvents) {
      return field_error(path, str_cat("must hold 1 to ", kMaxBatchEvents, " user ids, not ", array.size()));
    }
    users.resize(array.size());
    std::size_t i = 0;
    for (element id : array) {
      if (absl::Status s = read_text(id, path.element(i), users[i], true); !s.ok()) return s;
      ++i;
    }
    std::vector<std::string_view> sorted(users.begin(), users.end());
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return field_error(path, "must not repeat a user id");
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return users;
}

absl::StatusOr<NewProduct> parse_new_product(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  NewProduct product;
  static constexpr std::array<std::string_view, 1> kFields = {"name"};
  absl::Status status = read_fields(*root, kBody, kFields, all_of(1), [&](std::size_t, element v, const FieldPath& path) {
    return read_text(v, path, product.name, true);
  });
  if (!status.ok()) return status;
  return product;
}

absl::StatusOr<NewUser> parse_new_user(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  NewUser user;
  static constexpr std::array<std::string_view, 2> kFields = {"user_id", "name"};
  absl::Status status =
      read_fields(*root, kBody, kFields, /*required=*/1, [&](std::size_t index, element v, const FieldPath& path) {
        return index == 0 ? read_text(v, path, user.user_id, true) : read_text(v, path, user.name, false);
      });
  if (!status.ok()) return status;
  return user;
}

absl::StatusOr<NewWebhook> parse_new_webhook(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  NewWebhook webhook;
  static constexpr std::array<std::string_view, 2> kFields = {"url", "events"};
  absl::Status status =
      read_fields(*root, kBody, kFields, /*required=*/1, [&](std::size_t index, element v, const FieldPath& path) {
        if (index == 0) return read_text(v, path, webhook.url, true);
        simdjson::dom::array events;
        if (v.get_array().get(events) != simdjson::SUCCESS) return field_error(path, "must be an array of strings");
        std::size_t i = 0;
        for (element e : events) {
          std::string name;
          if (absl::Status s = read_text(e, path.element(i++), name, true); !s.ok()) return s;
          if (std::find(webhook.events.begin(), webhook.events.end(), name) != webhook.events.end()) {
            return field_error(path.element(i - 1), "repeats an event type");
          }
          webhook.events.push_back(std::move(name));
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return webhook;
}

absl::StatusOr<std::vector<std::string>> parse_report_tags(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  std::vector<std::string> tags;
  static constexpr std::array<std::string_view, 1> kFields = {"tags"};
  absl::Status status =
      read_fields(*root, kBody, kFields, /*required=*/1, [&](std::size_t, element v, const FieldPath& path) {
        simdjson::dom::array array;
        if (v.get_array().get(array) != simdjson::SUCCESS) return field_error(path, "must be an array of meta tag keys");
        if (array.size() > kMaxReportTags) {
          return field_error(path, str_cat("must hold at most ", kMaxReportTags, " keys, not ", array.size()));
        }
        std::size_t i = 0;
        for (element e : array) {
          std::string key;
          if (absl::Status s = read_text(e, path.element(i++), key, true); !s.ok()) return s;
          if (std::find(tags.begin(), tags.end(), key) != tags.end()) return field_error(path.element(i - 1), "is repeated");
          tags.push_back(std::move(key));
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  std::sort(tags.begin(), tags.end());
  return tags;
}

absl::StatusOr<AlertSettings> parse_alert_settings(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  AlertSettings settings;
  static constexpr std::array<std::string_view, 1> kFields = {"wallet_low_percent"};
  absl::Status status =
      read_fields(*root, kBody, kFields, /*required=*/1, [&](std::size_t, element v, const FieldPath& path) {
        if (absl::Status s = read_count(v, path, settings.wallet_low_percent); !s.ok()) return s;
        if (settings.wallet_low_percent < 1 || settings.wallet_low_percent > 99) {
          return field_error(path, str_cat("must be from 1 to 99, not ", settings.wallet_low_percent));
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return settings;
}

absl::StatusOr<Subscription> parse_subscription(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  Subscription subscription;
  static constexpr std::array<std::string_view, 3> kFields = {"plan", "period_start", "period_end"};
  absl::Status status =
      read_fields(*root, kBody, kFields, all_of(3), [&](std::size_t index, element v, const FieldPath& path) {
        switch (index) {
          case 0: return read_text(v, path, subscription.plan, true);
          case 1: return read_time(v, path, subscription.period_start_ns);
          default: return read_time(v, path, subscription.period_end_ns);
        }
      });
  if (!status.ok()) return status;
  if (subscription.period_end_ns <= subscription.period_start_ns) {
    return field_error(kBody.member("period_end"), "must be after period_start");
  }
  return subscription;
}

namespace {

// One entry of POST /api/v1/leases: every field required (see wire.h).
absl::Status read_lease_entry(element value, const FieldPath& path, LeaseRequest& out) {
  simdjson::dom::object object;
  if (value.get_object().get(object) != simdjson::SUCCESS) return field_error(path, "must be an object");
  static constexpr std::array<std::string_view, 10> kFields = {
      "user_id", "limit", "period_start_ns", "period_end_ns", "cap", "used", "acked", "want", "need", "release"};
  static constexpr std::int64_t LeaseRequest::*kCounts[] = {
      &LeaseRequest::period_start_ns, &LeaseRequest::period_end_ns, &LeaseRequest::cap,  &LeaseRequest::used,
      &LeaseRequest::acked,           &LeaseRequest::want,          &LeaseRequest::need};
  absl::Status status = read_fields(
      object, path, kFields, all_of(kFields.size()), [&](std::size_t index, element v, const FieldPath& member) {
        switch (index) {
          case 0: return read_text(v, member, out.user_id, true);
          case 1: {
            // The model or session id is as long as an event's text may be; the key a little longer.
            std::string_view limit;
            if (v.get_string().get(limit) != simdjson::SUCCESS) return field_error(member, "must be a string");
            if (limit.find('\0') != std::string_view::npos) return field_error(member, "must not contain \\u0000");
            if (!lease_internal::parse_limit_key(limit, kMaxTextBytes)) {
              return field_error(member, str_cat("must be \"total_spend\", \"model_limit:<model>\" or "
                                                 "\"session_spend:<session id>\" (the model or id 1 to ",
                                                 kMaxTextBytes, " bytes)"));
            }
            out.limit_key.assign(limit);
            return absl::OkStatus();
          }
          case 9: return read_bool(v, member, out.release);
          default: return read_count(v, member, out.*kCounts[index - 2]);
        }
      });
  if (!status.ok()) return status;
  if (out.period_end_ns <= out.period_start_ns) {
    return field_error(path.member("period_end_ns"), "must be after period_start_ns");
  }
  if (out.acked > out.used) return field_error(path.member("acked"), "must not be more than used");
  if (out.release && out.want != 0) return field_error(path.member("want"), "must be 0 when release is true");
  if (out.release && out.need != 0) return field_error(path.member("need"), "must be 0 when release is true");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LeaseBatch> parse_lease_request(std::string_view body) {
  absl::StatusOr<simdjson::dom::object> root = parse_object(body);
  if (!root.ok()) return root.status();
  LeaseBatch batch;
  static constexpr std::array<std::string_view, 2> kFields = {"holder", "leases"};
  absl::Status status =
      read_fields(*root, kBody, kFields, all_of(2), [&](std::size_t index, element v, const FieldPath& path) {
        if (index == 0) {
          std::string_view holder;
          if (v.get_string().get(holder) != simdjson::SUCCESS || !is_event_id(holder)) {
            return field_error(path, "must be 32 lowercase hex digits");
          }
          batch.holder.assign(holder);
          return absl::OkStatus();
        }
        simdjson::dom::array array;
        if (v.get_array().get(array) != simdjson::SUCCESS) return field_error(path, "must be an array of leases");
        if (array.size() > kMaxLeaseEntries) {
          return field_error(path, str_cat("must hold at most ", kMaxLeaseEntries, " leases, not ", array.size()));
        }
        batch.leases.resize(array.size());
        std::size_t i = 0;
        for (element entry : array) {
          if (absl::Status s = read_lease_entry(entry, path.element(i), batch.leases[i]); !s.ok()) return s;
          ++i;
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  // At most one entry per (user, limit, window): a second would be granted against the first.
  std::vector<std::size_t> order(batch.leases.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto key = [&](std::size_t i) {
    const LeaseRequest& r = batch.leases[i];
    return std::tie(r.user_id, r.limit_key, r.period_start_ns);
  };
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return key(a) != key(b) ? key(a) < key(b) : a < b; });
  for (std::size_t k = 1; k < order.size(); ++k) {
    if (key(order[k - 1]) == key(order[k])) {
      return field_error(kBody.member("leases").element(order[k]),
                         str_cat("repeats the user_id, limit and period_start_ns of leases[", order[k - 1], "]"));
    }
  }
  return batch;
}

std::string lease_reply_json(std::int64_t ttl_ms, std::span<const LeaseGrant> grants) {
  std::string out = str_cat("{\"ttl_ms\":", ttl_ms, ",\"leases\":[");
  for (std::size_t i = 0; i < grants.size(); ++i) {
    const LeaseGrant& g = grants[i];
    out += str_cat(i ? "," : "", "{\"user_id\":", json_quote(g.user_id), ",\"limit\":", json_quote(g.limit_key),
                   ",\"period_start_ns\":", g.period_start_ns, ",\"granted\":", g.granted, ",\"ceiling\":", g.ceiling,
                   ",\"spent\":", g.spent, ",\"held_elsewhere\":", g.held_elsewhere, ",\"remaining\":", g.remaining,
                   ",\"holders\":", g.holders, "}");
  }
  return out + "]}";
}

std::string rfc3339_utc(std::int64_t unix_ns) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", absl::FromUnixNanos(unix_ns), absl::UTCTimeZone());
}

bool valid_utf8(std::string_view text) noexcept { return simdjson::validate_utf8(text.data(), text.size()); }

}  // namespace paygent::server
