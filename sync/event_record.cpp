// The usage event's record and codec (see sync/event_record.h).
#include "sync/event_record.h"

#include <sqlite3.h>

#include <algorithm>
#include <string>
#include <vector>

#include "meter/internal/json_text.h"
#include "meter/internal/str_cat.h"

namespace paygent::internal {
namespace {

const EventRecord& default_event() {
  static const EventRecord kDefault;
  return kDefault;
}

bool is_payload(const EventField& f) { return f.type != EventFieldType::kId; }

void append_value_json(std::string& out, const EventRecord& e, const EventField& f) {
  switch (f.type) {
    case EventFieldType::kId:
    case EventFieldType::kText: out += json_quote(e.*f.text); return;
    case EventFieldType::kMetaTags: out += (e.*f.text).empty() ? std::string_view("{}") : std::string_view(e.*f.text); return;
    case EventFieldType::kCount: str_append(&out, e.*f.count); return;
    case EventFieldType::kBool: out += e.*f.flag ? "true" : "false"; return;
    case EventFieldType::kKind: str_append(&out, "\"", usage_kind_name(e.kind), "\""); return;
  }
}

// The SQL literal of `f`'s default value.
std::string default_sql(const EventField& f) {
  const EventRecord& d = default_event();
  switch (f.type) {
    case EventFieldType::kId:
    case EventFieldType::kText:
    case EventFieldType::kMetaTags: {
      std::string out = "'";
      for (char c : d.*f.text) out += c == '\'' ? std::string("''") : std::string(1, c);
      return out + "'";
    }
    case EventFieldType::kCount: return str_cat(d.*f.count);
    case EventFieldType::kBool: return d.*f.flag ? "1" : "0";
    case EventFieldType::kKind: return str_cat("'", usage_kind_name(d.kind), "'");
  }
  return "NULL";
}

std::string column_definition(const EventField& f) {
  const bool integer = f.type == EventFieldType::kCount || f.type == EventFieldType::kBool;
  std::string out = str_cat(f.name, integer ? " INTEGER NOT NULL" : " TEXT NOT NULL");
  if (!f.required) str_append(&out, " DEFAULT ", default_sql(f));
  return out;
}

}  // namespace

std::string_view usage_kind_name(UsageKind kind) noexcept {
  const auto i = static_cast<std::size_t>(kind);
  return i < kUsageKindNames.size() ? kUsageKindNames[i] : std::string_view("llm");
}

bool parse_usage_kind(std::string_view name, UsageKind& out) noexcept {
  for (std::size_t i = 0; i < kUsageKindNames.size(); ++i) {
    if (kUsageKindNames[i] == name) {
      out = static_cast<UsageKind>(i);
      return true;
    }
  }
  return false;
}

bool holds_default(const EventRecord& e, const EventField& f) {
  const EventRecord& d = default_event();
  switch (f.type) {
    case EventFieldType::kId:
    case EventFieldType::kText:
    case EventFieldType::kMetaTags: return e.*f.text == d.*f.text;
    case EventFieldType::kCount: return e.*f.count == d.*f.count;
    case EventFieldType::kBool: return e.*f.flag == d.*f.flag;
    case EventFieldType::kKind: return e.kind == d.kind;
  }
  return false;
}

bool writes_field(const EventRecord& e, const EventField& f, int backend_version) {
  if (f.required) return true;
  if (f.informational && f.since_version > backend_version) return false;
  return !holds_default(e, f);
}

int wire_version_needed(const EventRecord& e, int backend_version) {
  int version = 1;
  for (const EventField& f : kEventFields) {
    if (f.since_version > version && writes_field(e, f, backend_version)) version = f.since_version;
  }
  return version;
}

std::string encode_event_batch(std::span<const EventRecord> events, std::span<const FiredThreshold> soft_gates,
                               int backend_version) {
  int version = soft_gates.empty() ? 1 : kSoftGatesWireVersion;
  for (const FiredThreshold& f : soft_gates) {
    if (f.hard) version = std::max(version, kHardGatesWireVersion);
  }
  for (const EventRecord& e : events) version = std::max(version, wire_version_needed(e, backend_version));
  std::string out = version > 1 ? str_cat("{\"v\":", version, ",\"events\":[") : std::string("{\"events\":[");
  for (std::size_t i = 0; i < events.size(); ++i) {
    const EventRecord& e = events[i];
    out += i ? ",{" : "{";
    bool first = true;
    for (const EventField& f : kEventFields) {
      if (!writes_field(e, f, backend_version)) continue;
      str_append(&out, first ? "\"" : ",\"", f.name, "\":");
      first = false;
      append_value_json(out, e, f);
    }
    out += "}";
  }
  out += "]";
  for (const bool hard : {false, true}) {
    bool first = true;
    for (const FiredThreshold& f : soft_gates) {
      if (f.hard != hard) continue;
      str_append(&out, first ? (hard ? ",\"hard_gates\":[{" : ",\"soft_gates\":[{") : ",{",
                 "\"user_id\":", json_quote(f.user_id), ",\"limit\":", json_quote(f.limit_key),
                 ",\"period_start_ns\":", f.period_start_ns, ",\"threshold_ppm\":", f.threshold_ppm);
      if (hard) str_append(&out, ",\"fired_ns\":", f.fired_ns);
      out += "}";
      first = false;
    }
    if (!first) out += "]";
  }
  out += "}";
  return out;
}

std::string event_columns() {
  std::string out;
  for (const EventField& f : kEventFields) {
    if (is_payload(f)) str_append(&out, out.empty() ? "" : ", ", f.name);
  }
  return out;
}

std::string event_placeholders(int first) {
  std::string out;
  for (int i = 0; i < kEventColumnCount; ++i) str_append(&out, i ? ", ?" : "?", first + i);
  return out;
}

std::string event_column_definitions() {
  std::string out;
  for (const EventField& f : kEventFields) {
    if (is_payload(f)) str_append(&out, out.empty() ? "" : ",\n  ", column_definition(f));
  }
  return out;
}

void bind_event_columns(sqlite3_stmt* s, int first, const EventRecord& e) {
  int i = first;
  for (const EventField& f : kEventFields) {
    if (!is_payload(f)) continue;
    switch (f.type) {
      case EventFieldType::kId:
      case EventFieldType::kText:
      case EventFieldType::kMetaTags: {
        const std::string& text = e.*f.text;
        sqlite3_bind_text(s, i, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
        break;
      }
      case EventFieldType::kCount: sqlite3_bind_int64(s, i, e.*f.count); break;
      case EventFieldType::kBool: sqlite3_bind_int64(s, i, e.*f.flag ? 1 : 0); break;
      case EventFieldType::kKind: {
        const std::string_view name = usage_kind_name(e.kind);
        sqlite3_bind_text(s, i, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
        break;
      }
    }
    ++i;
  }
}

void read_event_columns(sqlite3_stmt* s, int first, EventRecord& e) {
  int i = first;
  for (const EventField& f : kEventFields) {
    if (!is_payload(f)) continue;
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
    const std::string_view value =
        text == nullptr ? std::string_view() : std::string_view(text, static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
    switch (f.type) {
      case EventFieldType::kId:
      case EventFieldType::kText:
      case EventFieldType::kMetaTags: (e.*f.text).assign(value); break;
      case EventFieldType::kCount: e.*f.count = sqlite3_column_int64(s, i); break;
      case EventFieldType::kBool: e.*f.flag = sqlite3_column_int64(s, i) != 0; break;
      case EventFieldType::kKind:
        // A kind this build does not know (written by a newer one) reads as the default.
        if (!parse_usage_kind(value, e.kind)) e.kind = default_event().kind;
        break;
    }
    ++i;
  }
}

absl::Status add_missing_event_columns(sqlite3* db, std::string_view table) {
  std::vector<std::string> present;
  {
    sqlite3_stmt* s = nullptr;
    const std::string sql = str_cat("PRAGMA table_info(", table, ")");
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
      return absl::InternalError(str_cat("read the columns of ", table, ": ", sqlite3_errmsg(db)));
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
      const auto* name = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
      if (name != nullptr) present.emplace_back(name);
    }
    sqlite3_finalize(s);
  }
  for (const EventField& f : kEventFields) {
    if (!is_payload(f) || std::find(present.begin(), present.end(), f.name) != present.end()) continue;
    if (f.required) {
      return absl::FailedPreconditionError(str_cat("table ", table, " has no column ", f.name));
    }
    const std::string sql = str_cat("ALTER TABLE ", table, " ADD COLUMN ", column_definition(f));
    char* message = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      absl::Status status =
          absl::InternalError(str_cat(sql, ": ", message != nullptr ? message : sqlite3_errmsg(db)));
      sqlite3_free(message);
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace paygent::internal
