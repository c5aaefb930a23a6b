// PostgresStorage (see server/postgres_storage.h): PostgreSQL's dialect and connections for
// SqlStorage, through libpq.
#include "server/postgres_storage.h"

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "meter/internal/str_cat.h"
#include "server/postgres_internal.h"
#include "server/storage_logic.h"
#include "sync/event_record.h"

namespace paygent::server {
namespace pg_internal {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

absl::Status pg_error(PGconn* conn, const PGresult* result, std::string_view what) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string_view sqlstate = state != nullptr ? state : "";
  const char* text = result != nullptr ? PQresultErrorMessage(result) : "";
  if (text == nullptr || *text == '\0') text = PQerrorMessage(conn);
  std::string message = str_cat("postgresql ", what, ": ", text);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  if (!sqlstate.empty()) str_append(&message, " (", sqlstate, ")");
  if (PQstatus(conn) != CONNECTION_OK) return absl::UnavailableError(message);
  if (sqlstate == "40001" || sqlstate == "40P01") return absl::AbortedError(message);
  if (sqlstate == "23505") return absl::AlreadyExistsError(message);
  if (sqlstate == "22003") {
    return absl::InvalidArgumentError("the batch would overflow a 64-bit total (tokens or cost_nanos)");
  }
  const std::string_view klass = sqlstate.substr(0, 2);
  // 55P03: lock_timeout passed.
  if (sqlstate.empty() || klass == "08" || klass == "53" || klass == "57" || sqlstate == "55P03") {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

std::pair<std::string, int> translate_placeholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  int highest = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (sql[i] == '?' && i + 1 < sql.size() && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
      int n = 0;
      std::size_t j = i + 1;
      while (j < sql.size() && sql[j] >= '0' && sql[j] <= '9') n = n * 10 + (sql[j++] - '0');
      highest = std::max(highest, n);
      str_append(&out, "$", n);
      i = j - 1;
    } else {
      out.push_back(sql[i]);
    }
  }
  return {std::move(out), highest};
}

void PgParams::set(int index, std::string value, Oid type, bool fix_types) {
  if (index < 1 || index > static_cast<int>(values.size())) return;  // a parameter this SQL does not use
  const auto i = static_cast<std::size_t>(index - 1);
  values[i] = std::move(value);
  bound[i] = true;
  if (fix_types) types[i] = type;
}

void PgParams::bind_int64(int index, std::int64_t value, bool fix_types) {
  set(index, str_cat(value), kInt8, fix_types);
}

void PgParams::bind_text(int index, std::string_view text, bool fix_types) {
  if (text.find('\0') != std::string_view::npos) nul = true;
  set(index, std::string(text), kText, fix_types);
}

void append_hex(std::string& out, std::span<const unsigned char> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
}

void PgParams::bind_blob(int index, std::span<const unsigned char> bytes, bool fix_types) {
  std::string hex = "\\x";  // bytea's hex input
  hex.reserve(2 + 2 * bytes.size());
  append_hex(hex, bytes);
  set(index, std::move(hex), kBytea, fix_types);
}

std::vector<const char*> PgParams::pointers() const {
  std::vector<const char*> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = bound[i] ? values[i].c_str() : nullptr;
  return out;
}

void PgParams::clear() {
  std::fill(bound.begin(), bound.end(), false);
  nul = false;
}

}  // namespace pg_internal

namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

// 1: the tables of SqliteStorage's schema version 2 (sql_schema()), with paygent_schema. 2: the
// leases table (SqliteStorage's version 3), created when missing. 3: the tracking and revenue
// tables (SqliteStorage's version 4), created when missing. 4: the billing tables and index and the webhooks' tables
// (SqliteStorage's version 5), created when missing. 5: profit_daily, usage_daily_by_model and usage_daily_by_user
// (SqliteStorage's version 6), created when missing and filled from the events and usage_daily. 6: the
// credit wallets' tables (SqliteStorage's version 7), created when missing. 7: the billing events'
// indexes ending with the event id (SqliteStorage's version 8). 8: hard_gates, report_tags and
// profit_daily_by_tag (SqliteStorage's version 9), created when missing. 9: usage_daily_by_provider
// (SqliteStorage's version 10), created when missing and filled from the events. 10: billing_events'
// meta_tags and received_ns (SqliteStorage's version 11), added and filled from the events. 11:
// alert_settings (SqliteStorage's version 12), created when missing. 12 (PostgreSQL's own): the
// rollups' fillfactor (PostgresDialect::sums_table_options()), set on the tables of an older version.
constexpr std::int64_t kSchemaVersion = 12;
// The advisory lock that serialises the schema's creation and upgrade among replicas starting together.
constexpr std::int64_t kSchemaLock = 0x7061796765'6e7400;  // "paygent"

using namespace pg_internal;

// A statement of one connection, prepared (PQprepare) at its first run with the types of the
// values bound then; parameters never bound are text. Every value is sent as text (copied at bind).
class PgStatement final : public SqlStatement {
 public:
  // `pending_begin` is the connection's BEGIN not sent yet ("" when none): sent with this
  // statement's first run, in one round trip.
  PgStatement(PGconn* conn, std::string* pending_begin, std::string name, std::string sql, int parameters)
      : conn_(conn), pending_begin_(pending_begin), name_(std::move(name)), sql_(std::move(sql)), params_(parameters) {}

  void bind_int64(int index, std::int64_t value) override { params_.bind_int64(index, value, !prepared_); }
  void bind_text(int index, std::string_view text) override { params_.bind_text(index, text, !prepared_); }
  void bind_blob(int index, std::span<const unsigned char> bytes) override {
    params_.bind_blob(index, bytes, !prepared_);
  }

  absl::StatusOr<bool> step(std::string_view what) override {
    if (result_ == nullptr) {
      if (params_.nul) return absl::InvalidArgumentError(str_cat(what, ": text holding U+0000 cannot be stored"));
      if (!prepared_) {
        Result prepared(PQprepare(conn_, name_.c_str(), sql_.c_str(), static_cast<int>(params_.types.size()),
                                  params_.types.data()),
                        &PQclear);
        if (PQresultStatus(prepared.get()) != PGRES_COMMAND_OK) return pg_error(conn_, prepared.get(), what);
        prepared_ = true;
      }
      const std::vector<const char*> values = params_.pointers();
      if (pending_begin_->empty()) {
        result_ = PQexecPrepared(conn_, name_.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0);
      } else if (absl::Status begun = run_after_begin(values, what); !begun.ok()) {
        return begun;
      }
      const ExecStatusType status = PQresultStatus(result_);
      if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        absl::Status error = pg_error(conn_, result_, what);
        PQclear(result_);
        result_ = nullptr;
        return error;
      }
      row_ = -1;
    }
    ++row_;
    return row_ < PQntuples(result_);
  }

  [[nodiscard]] std::int64_t int64(int column) const override {
    const std::string_view text = this->text(column);
    std::int64_t value = 0;
    // A SUM is a numeric here: its decimal digits, which SqlStorage's bounds keep within int64.
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
  }
  [[nodiscard]] std::string_view text(int column) const override {
    if (PQgetisnull(result_, row_, column)) return {};
    return std::string_view(PQgetvalue(result_, row_, column),
                            static_cast<std::size_t>(PQgetlength(result_, row_, column)));
  }
  [[nodiscard]] std::string blob(int column) const override {
    // bytea's text output: \x and two hex digits per byte.
    const std::string_view hex = text(column);
    std::string out;
    auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
    for (std::size_t i = 2; i + 1 < hex.size(); i += 2) {
      out.push_back(static_cast<char>(nibble(hex[i]) << 4 | nibble(hex[i + 1])));
    }
    return out;
  }
  [[nodiscard]] bool is_null(int column) const override { return PQgetisnull(result_, row_, column) != 0; }
  [[nodiscard]] std::int64_t changes() const override {
    if (result_ == nullptr) return 0;
    const char* tuples = PQcmdTuples(result_);
    std::int64_t n = 0;
    std::from_chars(tuples, tuples + std::strlen(tuples), n);
    return n;
  }
  void reset() override {
    if (result_ != nullptr) PQclear(result_);
    result_ = nullptr;
    params_.clear();
  }
  ~PgStatement() override {
    if (result_ != nullptr) PQclear(result_);
  }
  PgStatement(const PgStatement&) = delete;
  PgStatement& operator=(const PgStatement&) = delete;

 private:
  // Sends the pending BEGIN and this statement in one round trip (libpq's pipeline mode), and
  // sets result_ to the statement's result. The BEGIN's error when it failed.
  absl::Status run_after_begin(const std::vector<const char*>& values, std::string_view what) {
    const std::string begin = std::exchange(*pending_begin_, std::string());
    if (PQenterPipelineMode(conn_) != 1 || PQsendQueryParams(conn_, begin.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1 ||
        PQsendQueryPrepared(conn_, name_.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0) != 1 ||
        PQpipelineSync(conn_) != 1) {
      // Not sent as one: the connection is broken (or was never in pipeline mode).
      static_cast<void>(PQexitPipelineMode(conn_));
      return pg_error(conn_, nullptr, what);
    }
    // Each query's result, then a null; then the sync.
    auto next = [&]() -> PGresult* {
      PGresult* r = PQgetResult(conn_);
      if (r != nullptr) {
        while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
      }
      return r;
    };
    Result begun(next(), &PQclear);
    result_ = next();
    PQclear(PQgetResult(conn_));  // PGRES_PIPELINE_SYNC
    static_cast<void>(PQexitPipelineMode(conn_));
    if (PQresultStatus(begun.get()) != PGRES_COMMAND_OK) {
      if (result_ != nullptr) PQclear(result_);
      result_ = nullptr;
      return pg_error(conn_, begun.get(), begin);
    }
    return absl::OkStatus();
  }

  PGconn* const conn_;
  std::string* const pending_begin_;
  const std::string name_;
  const std::string sql_;
  PgParams params_;
  bool prepared_ = false;
  PGresult* result_ = nullptr;
  int row_ = -1;
};

// A PostgreSQL array literal of text, of item(0) ... item(count - 1): {"a","b\"c"}.
template <typename Item>
std::string text_array(std::size_t count, Item item) {
  std::string out = "{";
  for (std::size_t k = 0; k < count; ++k) {
    out += k ? ",\"" : "\"";
    const auto value = item(k);  // may be a string: kept until its characters are copied
    for (char c : std::string_view(value)) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  return out + "}";
}

std::string text_array(std::span<const std::string_view> items) {
  return text_array(items.size(), [&](std::size_t k) { return items[k]; });
}

// A PostgreSQL array literal of bigint, of item(0) ... item(count - 1): {1,-2,3}.
template <typename Item>
std::string int64_array(std::size_t count, Item item) {
  std::string out = "{";
  for (std::size_t k = 0; k < count; ++k) str_append(&out, k ? "," : "", std::int64_t{item(k)});
  return out + "}";
}

// The summed columns of usage_daily and product_totals after calls, in Totals' order.
constexpr std::string_view kSummed[] = {"input_tokens",     "output_tokens", "cached_input_tokens",
                                        "cache_creation_input_tokens", "reasoning_tokens", "cost_nanos"};

// PostgresStorage::store_batch()'s one statement. ?1 the product, ?2 received_ns, ?3 the users
// (text[]), ?4 the events' ids (bytea[]), then one array per payload column (kEventFields' order).
// The events it stored (RETURNING) feed the daily sums, the dashboard's rollups and the product's
// totals in the same statement; a sum past int64 fails it (22003, numeric to bigint). Its rows: each stored id, with
// the count of product_totals rows updated (one row with a NULL id when nothing was stored).
// `copied`: the events are stored already (COPY, in this transaction), and read back by their
// ids (?4), users (?5, text[]) and times (?6, bigint[]) instead of the payload arrays.
std::string batch_sql(bool copied) {
  using ::paygent::internal::EventFieldType;
  std::string arrays = "?4::bytea[]", picked;
  int n = 5;
  for (const auto& f : ::paygent::internal::kEventFields) {
    if (f.type == EventFieldType::kId) continue;
    const bool number = f.type == EventFieldType::kCount || f.type == EventFieldType::kBool;
    str_append(&arrays, ", ?", n++, number ? "::bigint[]" : "::text[]");
    str_append(&picked, ", r.", f.name);
  }
  std::string sums, daily_set, totals_set, batch_sums, by_model_set, by_user_set, by_provider_set;
  for (std::string_view c : kSummed) {
    str_append(&sums, ", sum(", c, ")");
    str_append(&daily_set, ", ", c, " = usage_daily.", c, " + excluded.", c);
    str_append(&by_model_set, ", ", c, " = usage_daily_by_model.", c, " + excluded.", c);
    str_append(&by_user_set, ", ", c, " = usage_daily_by_user.", c, " + excluded.", c);
    str_append(&by_provider_set, ", ", c, " = usage_daily_by_provider.", c, " + excluded.", c);
    str_append(&totals_set, ", ", c, " = t.", c, " + s.", c);
    str_append(&batch_sums, ", COALESCE(sum(", c, "), 0) AS ", c);
  }
  const std::string summed_columns = "input_tokens, output_tokens, cached_input_tokens, cache_creation_input_tokens, "
                                     "reasoning_tokens, cost_nanos";
  const std::string columns = ::paygent::internal::event_columns();
  constexpr std::string_view kDay = "86400000000000";
  constexpr std::string_view kStoredColumns =
      "id, user_id, model, provider, kind, ts_ns, input_tokens, output_tokens, cached_input_tokens, "
      "cache_creation_input_tokens, reasoning_tokens, cost_nanos, agent_id, indicator, cost_unknown";
  const std::string stored =
      // Each event looked up by id, user and time (?4, ?5, ?6): a LATERAL subquery kept apart
      // from the join (OFFSET 0), whose conditions make either index a lookup of one row. With
      // the id alone, a plan made while the table's statistics are stale (a new database)
      // hashed the product's every event, or read them all through the other index.
      copied ? str_cat("SELECT e.* FROM unnest(?4::bytea[], ?5::text[], ?6::bigint[]) AS k(id, user_id, ts_ns) "
                       "CROSS JOIN LATERAL (SELECT ", kStoredColumns, " FROM events WHERE product = ?1 AND "
                       "id = k.id AND user_id = k.user_id AND ts_ns = k.ts_ns OFFSET 0) e")
             : str_cat("INSERT INTO events(product, id, received_ns, ", columns, ") SELECT ?1, r.id, ?2", picked,
                       " FROM unnest(", arrays, ") AS r(id, ", columns,
                       ") ON CONFLICT(product, id) DO NOTHING RETURNING ", kStoredColumns);
  return str_cat(
      "WITH new_users AS (INSERT INTO users(product, user_id, name, created_ns) "
      "SELECT ?1, u, '', ?2 FROM unnest(?3::text[]) AS u ON CONFLICT(product, user_id) DO NOTHING), "
      "stored AS (", stored, "), "
      "daily AS (INSERT INTO usage_daily(product, user_id, day, model, calls, input_tokens, output_tokens, "
      "cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos) "
      "SELECT ?1, user_id, day, model, count(*)", sums, " FROM (SELECT *, ts_ns / ", kDay,
      " - CASE WHEN ts_ns % ", kDay, " < 0 THEN 1 ELSE 0 END AS day FROM stored WHERE kind <> 'billing') e GROUP BY user_id, day, model "
      "ON CONFLICT(product, user_id, day, model) DO UPDATE SET calls = usage_daily.calls + excluded.calls", daily_set,
      // The dashboard's rollups (SqlStorage::ProductRollups and write_rollups() in the generic path).
      "), by_model AS (INSERT INTO usage_daily_by_model(product, day, model, calls, ", summed_columns, ") "
      "SELECT ?1, day, model, count(*)", sums, " FROM (SELECT *, ts_ns / ", kDay, " AS day FROM stored WHERE kind <> "
      "'billing') e GROUP BY day, model ON CONFLICT(product, day, model) DO UPDATE SET calls = "
      "usage_daily_by_model.calls + excluded.calls", by_model_set,
      "), by_user AS (INSERT INTO usage_daily_by_user(product, day, user_id, calls, ", summed_columns, ") "
      "SELECT ?1, day, user_id, count(*)", sums, " FROM (SELECT *, ts_ns / ", kDay, " AS day FROM stored WHERE kind <> "
      "'billing') e GROUP BY day, user_id ON CONFLICT(product, day, user_id) DO UPDATE SET calls = "
      "usage_daily_by_user.calls + excluded.calls", by_user_set,
      "), by_provider AS (INSERT INTO usage_daily_by_provider(product, day, provider, calls, ", summed_columns, ") "
      "SELECT ?1, day, provider, count(*)", sums, " FROM (SELECT *, ts_ns / ", kDay, " AS day FROM stored WHERE kind <> "
      "'billing') e GROUP BY day, provider ON CONFLICT(product, day, provider) DO UPDATE SET calls = "
      "usage_daily_by_provider.calls + excluded.calls", by_provider_set,
      "), profit AS (INSERT INTO profit_daily(product, day, user_id, agent_id, indicator, cost_events, cost_nanos, "
      "cost_unknown, billing_events, revenue_nanos, revenue_known) SELECT ?1, day, user_id, agent_id, indicator, "
      "count(*), sum(CASE WHEN cost_unknown = 0 THEN cost_nanos ELSE 0 END), sum(cost_unknown), 0, 0, 0 FROM "
      "(SELECT *, ts_ns / ", kDay, " AS day FROM stored WHERE kind <> 'billing') e GROUP BY day, user_id, agent_id, "
      "indicator ON CONFLICT(product, day, user_id, agent_id, indicator) DO UPDATE SET cost_events = "
      "profit_daily.cost_events + excluded.cost_events, cost_nanos = profit_daily.cost_nanos + excluded.cost_nanos, "
      "cost_unknown = profit_daily.cost_unknown + excluded.cost_unknown"
      "), totals AS (UPDATE product_totals t SET calls = t.calls + s.calls", totals_set,
      " FROM (SELECT count(*) AS calls", batch_sums, " FROM stored WHERE kind <> 'billing') s WHERE t.product = ?1 RETURNING 1) "
      "SELECT e.id, n.updated FROM (SELECT count(*) AS updated FROM totals) n LEFT JOIN stored e ON true");
}

const std::string& store_batch_sql() {
  static const std::string* const kSql = new std::string(batch_sql(false));
  return *kSql;
}

const std::string& store_copied_batch_sql() {
  static const std::string* const kSql = new std::string(batch_sql(true));
  return *kSql;
}

// A PostgreSQL bytea[] literal of the ids `fresh` (indexes into `ids`), each in bytea's hex input.
std::string id_array(std::span<const storage_internal::EventId> ids, std::span<const std::size_t> fresh) {
  return text_array(fresh.size(), [&](std::size_t k) {
    std::string hex = "\\x";
    append_hex(hex, ids[fresh[k]]);
    return hex;
  });
}

// The COPY that loads a batch's events (PostgresStorage::store_batch() with `bulk`), and its rows
// in COPY's text format (one line per event, tab-separated, in that statement's column order).
const std::string& copy_events_sql() {
  static const std::string* const kSql =
      new std::string(str_cat("COPY events(product, id, received_ns, ", ::paygent::internal::event_columns(),
                              ") FROM STDIN"));
  return *kSql;
}

// Appends `text` as a COPY text field: backslash, tab, newline and carriage return escaped. False
// for text holding U+0000, which no text column can hold (the statement path names it).
bool append_copy_text(std::string& out, std::string_view text) {
  for (char c : text) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\0': return false;
      default: out.push_back(c);
    }
  }
  return true;
}

// The rows of the events `fresh` for copy_events_sql(); nullopt when one holds text COPY cannot take.
std::optional<std::string> copy_rows(std::int64_t product, std::int64_t received_ns, std::span<const EventRecord> events,
                                     std::span<const storage_internal::EventId> ids, std::span<const std::size_t> fresh) {
  using ::paygent::internal::EventFieldType;
  const std::string after_id = str_cat("\t", received_ns);
  const std::string before_id = str_cat(product, "\t\\\\x");  // bytea's hex input, its backslash escaped
  std::string out;
  out.reserve(fresh.size() * 320);
  for (const std::size_t i : fresh) {
    const EventRecord& e = events[i];
    out += before_id;
    append_hex(out, ids[i]);
    out += after_id;
    for (const auto& f : ::paygent::internal::kEventFields) {
      switch (f.type) {
        case EventFieldType::kId: continue;
        case EventFieldType::kText:
        case EventFieldType::kMetaTags:
          out.push_back('\t');
          if (!append_copy_text(out, e.*f.text)) return std::nullopt;
          break;
        case EventFieldType::kKind:
          str_append(&out, "\t", ::paygent::internal::usage_kind_name(e.kind));
          break;
        case EventFieldType::kCount: str_append(&out, "\t", e.*f.count); break;
        case EventFieldType::kBool: out += e.*f.flag ? "\t1" : "\t0"; break;
      }
    }
    out.push_back('\n');
  }
  return out;
}

class PostgresDialect final : public SqlDialect {
 public:
  std::string_view begin_write() const override { return "BEGIN"; }
  // One snapshot for every read of the transaction (READ COMMITTED would take one per statement).
  std::string_view begin_read() const override { return "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"; }
  std::string_view greatest() const override { return "GREATEST"; }
  std::string_view for_update() const override { return " FOR UPDATE"; }
  std::string_view join_in_order() const override { return "JOIN"; }
  // A round trip per statement: a batch of 100 events is one INSERT (1,900 parameters; at most
  // 65,535 are allowed).
  int rows_per_insert() const override { return 100; }
  std::string_view batch_users() const override {
    return "(SELECT t.user_id, t.n - 1 AS idx FROM unnest(?4::text[]) WITH ORDINALITY AS t(user_id, n))";
  }
  absl::StatusOr<std::string> users_parameter(SqlConnection&, std::span<const std::string_view> user_ids) const override {
    return text_array(user_ids);
  }
  // Ingest inserts into events (ROW EXCLUSIVE), which SHARE ROW EXCLUSIVE waits for and then holds
  // off; unlike SHARE it also conflicts with itself, so two backfills of one key run one after the
  // other (the second then finds the key declared and fills nothing).
  std::string_view lock_events() const override {
    return "LOCK TABLE events, billing_events IN SHARE ROW EXCLUSIVE MODE";
  }
  // One statement takes every lock, in ascending key order (the subquery's ORDER BY feeds the
  // aggregate row by row), so that two writers with overlapping users queue on the first lock
  // they share instead of each holding one the other waits for.
  absl::Status lock_users(SqlConnection& connection, std::int64_t product,
                          std::span<const std::string_view> sorted_user_ids) const override {
    if (sorted_user_ids.empty()) return absl::OkStatus();
    std::vector<std::int64_t> keys;
    keys.reserve(sorted_user_ids.size());
    for (std::string_view id : sorted_user_ids) keys.push_back(storage_internal::user_lock_key(product, id));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    const std::string array = int64_array(keys.size(), [&](std::size_t i) { return keys[i]; });
    absl::StatusOr<Query> lock = prepare(
        connection,
        "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest(?1::bigint[]) AS t(k) ORDER BY k) s");
    if (!lock.ok()) return lock.status();
    lock->bind(1, std::string_view(array));
    return lock->run("lock users");
  }
  std::string_view integer_type() const override { return "BIGINT"; }
  std::string_view blob_type() const override { return "BYTEA"; }
  std::string_view key_column() const override { return "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"; }
  std::string_view table_options() const override { return ""; }
  std::string_view keyed_table_options() const override { return ""; }
  // Half of each page left free: a rollup row is updated by most batches (every one, for the
  // day's rows of an active user), and an update that finds no room on its page is written to
  // another one with a new entry in each index (bench/README.md, 2026-12-05: every update of
  // usage_daily found room with it, a third without).
  std::string_view sums_table_options() const override { return kSumsTableOptions; }

  static constexpr std::string_view kSumsTableOptions = " WITH (fillfactor = 50)";
};

const PostgresDialect& dialect() {
  static const PostgresDialect* const kDialect = new PostgresDialect;
  return *kDialect;
}

}  // namespace

// One libpq connection and its prepared statements.
class PostgresStorage::Connection final : public SqlConnection {
 public:
  // `stream_page_rows`: PostgresOptions::stream_page_rows.
  Connection(PGconn* conn, int stream_page_rows) : conn_(conn), stream_page_rows_(stream_page_rows) {}
  ~Connection() override {
    streams_.clear();
    statements_.clear();
    PQfinish(conn_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  absl::StatusOr<SqlStatement*> prepare(std::string_view sql) override {
    auto it = statements_.find(absl::string_view(sql.data(), sql.size()));
    if (it == statements_.end()) {
      auto [text, parameters] = translate_placeholders(sql);
      auto statement =
          std::make_unique<PgStatement>(conn_, &pending_begin_, str_cat("s", statements_.size()), std::move(text), parameters);
      it = statements_.emplace(std::string(sql), std::move(statement)).first;
    }
    return it->second.get();
  }

  absl::StatusOr<SqlStatement*> prepare_stream(std::string_view sql, int fetch_rows) override {
    if (stream_page_rows_ > 0) fetch_rows = stream_page_rows_;
    const std::string key = str_cat(fetch_rows, " ", sql);
    auto it = streams_.find(key);
    if (it == streams_.end()) {
      auto [text, parameters] = translate_placeholders(sql);
      it = streams_
               .emplace(key, make_stream(conn_, &pending_begin_, str_cat("paygent_stream_", streams_.size()),
                                         std::move(text), parameters, fetch_rows))
               .first;
    }
    return it->second.get();
  }

  // A BEGIN is not sent on its own: it goes with the transaction's first statement (a round trip
  // saved per transaction); nothing is started until then, so nothing is lost by waiting.
  absl::Status exec(std::string_view sql) override {
    if (sql.starts_with("BEGIN") && sql.find(';') == std::string_view::npos && pending_begin_.empty() &&
        !in_transaction()) {
      pending_begin_ = std::string(sql);
      return absl::OkStatus();
    }
    if (!pending_begin_.empty() && (sql == "COMMIT" || sql == "ROLLBACK")) {
      pending_begin_.clear();  // an empty transaction
      return absl::OkStatus();
    }
    // The simple query protocol runs "BEGIN ...; <sql>" in one round trip.
    const std::string text = pending_begin_.empty() ? std::string(sql) : str_cat(std::exchange(pending_begin_, std::string()), "; ", sql);
    Result result(PQexec(conn_, text.c_str()), &PQclear);
    const ExecStatusType status = PQresultStatus(result.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return absl::OkStatus();
    return pg_error(conn_, result.get(), sql.size() > 60 ? sql.substr(0, 60) : sql);
  }

  // Runs `copy` (a COPY ... FROM STDIN) with `rows` as its data, in the transaction begun (a
  // pending BEGIN is sent first). Its error as pg_error() classifies it.
  absl::Status copy_in(const std::string& copy, std::string_view rows) {
    if (!pending_begin_.empty()) {  // (exec() would keep it pending again: no transaction is open yet)
      const std::string begin = std::exchange(pending_begin_, std::string());
      Result begun(PQexec(conn_, begin.c_str()), &PQclear);
      if (PQresultStatus(begun.get()) != PGRES_COMMAND_OK) return pg_error(conn_, begun.get(), begin);
    }
    Result started(PQexec(conn_, copy.c_str()), &PQclear);
    if (PQresultStatus(started.get()) != PGRES_COPY_IN) return pg_error(conn_, started.get(), "copy events");
    // Sent in pieces of at most 1 MiB (the length is an int); a failure here is the connection's.
    constexpr std::size_t kPiece = std::size_t{1} << 20;
    bool sent = true;
    for (std::size_t at = 0; sent && at < rows.size(); at += kPiece) {
      const std::string_view piece = rows.substr(at, kPiece);
      sent = PQputCopyData(conn_, piece.data(), static_cast<int>(piece.size())) == 1;
    }
    if (!sent || PQputCopyEnd(conn_, nullptr) != 1) {
      absl::Status error = pg_error(conn_, nullptr, "copy events");
      // Still in COPY IN (the connection may be up: a send that failed for memory), where
      // PQgetResult never returns null: the COPY is abandoned, which fails the transaction, and
      // the results drained until libpq leaves that state.
      if (PQstatus(conn_) == CONNECTION_OK) static_cast<void>(PQputCopyEnd(conn_, "abandoned"));
      while (PGresult* r = PQgetResult(conn_)) {
        const bool still_copying = PQresultStatus(r) == PGRES_COPY_IN;
        PQclear(r);
        if (still_copying) {
          unusable_ = true;  // not returned to the pool (broken())
          return absl::UnavailableError(str_cat(error.message(), "; the COPY could not be abandoned"));
        }
      }
      return error;
    }
    Result done(PQgetResult(conn_), &PQclear);
    while (PGresult* r = PQgetResult(conn_)) PQclear(r);
    if (PQresultStatus(done.get()) != PGRES_COMMAND_OK) return pg_error(conn_, done.get(), "copy events");
    return absl::OkStatus();
  }

  bool in_transaction() override {
    if (!pending_begin_.empty()) return true;
    const PGTransactionStatusType status = PQtransactionStatus(conn_);
    return status == PQTRANS_INTRANS || status == PQTRANS_INERROR || status == PQTRANS_ACTIVE;
  }

  [[nodiscard]] bool broken() const { return unusable_ || PQstatus(conn_) != CONNECTION_OK; }

 private:
  PGconn* const conn_;
  const int stream_page_rows_;
  std::string pending_begin_;  // a BEGIN not sent yet (see exec())
  bool unusable_ = false;      // left in a state no call can leave (copy_in())
  absl::flat_hash_map<std::string, std::unique_ptr<PgStatement>> statements_;
  absl::flat_hash_map<std::string, std::unique_ptr<SqlStatement>> streams_;  // by fetch size and SQL
};

PostgresStorage::PostgresStorage(std::string conninfo, PostgresOptions options)
    : SqlStorage(dialect()), conninfo_(std::move(conninfo)), options_(options) {}

PostgresStorage::~PostgresStorage() = default;

absl::StatusOr<SqlStorage::BatchWrite> PostgresStorage::store_batch(
    SqlConnection& connection, std::int64_t product, std::int64_t received_ns, std::span<const EventRecord> events,
    std::span<const storage_internal::EventId> ids, std::span<const std::size_t> fresh,
    std::span<const std::string_view> users, bool bulk, std::vector<bool>& stored) {
  using ::paygent::internal::EventFieldType;
  if (!options_.one_statement_ingest) return BatchWrite::kUnsupported;
  if (bulk && options_.copy_ingest && !fresh.empty()) {
    return store_copied_batch(static_cast<Connection&>(connection), product, received_ns, events, ids, fresh, users,
                              stored);
  }
  absl::StatusOr<Query> insert = prepare(connection, store_batch_sql());
  if (!insert.ok()) return insert.status();
  // The arrays' text lives until the statement has run (the binding may not copy it).
  std::vector<std::string> arrays;
  arrays.reserve(2 + ::paygent::internal::kEventFields.size());
  arrays.push_back(text_array(users));
  arrays.push_back(id_array(ids, fresh));
  for (const auto& f : ::paygent::internal::kEventFields) {
    switch (f.type) {
      case EventFieldType::kId: continue;
      case EventFieldType::kText:
      case EventFieldType::kMetaTags:
        arrays.push_back(text_array(fresh.size(), [&](std::size_t k) { return std::string_view(events[fresh[k]].*f.text); }));
        break;
      case EventFieldType::kKind:
        arrays.push_back(text_array(fresh.size(), [&](std::size_t k) {
          return ::paygent::internal::usage_kind_name(events[fresh[k]].kind);
        }));
        break;
      case EventFieldType::kCount:
      case EventFieldType::kBool:
        arrays.push_back(int64_array(fresh.size(), [&](std::size_t k) {
          const EventRecord& e = events[fresh[k]];
          return f.type == EventFieldType::kCount ? e.*f.count : std::int64_t{e.*f.flag ? 1 : 0};
        }));
        break;
    }
  }
  insert->bind(1, product).bind(2, received_ns);
  for (std::size_t a = 0; a < arrays.size(); ++a) insert->bind(3 + static_cast<int>(a), std::string_view(arrays[a]));

  absl::flat_hash_map<std::string, std::size_t> by_id;
  by_id.reserve(fresh.size());
  for (std::size_t i : fresh) by_id.emplace(std::string(reinterpret_cast<const char*>(ids[i].data()), ids[i].size()), i);
  for (;;) {
    absl::StatusOr<bool> row = insert->step("store batch");
    // A total past int64 (or text the statements one by one refuse by name): they say which.
    if (absl::IsInvalidArgument(row.status())) return BatchWrite::kRedoInParts;
    if (!row.ok()) return row.status();
    if (!*row) return BatchWrite::kStored;
    if (insert->int64(1) != 1) return BatchWrite::kRedoInParts;  // no product_totals row
    if (insert->is_null(0)) continue;
    auto it = by_id.find(insert->blob(0));
    if (it == by_id.end()) return absl::InternalError("store batch: an id came back that was not sent");
    stored[it->second] = true;
  }
}

absl::StatusOr<SqlStorage::BatchWrite> PostgresStorage::store_copied_batch(
    Connection& connection, std::int64_t product, std::int64_t received_ns, std::span<const EventRecord> events,
    std::span<const storage_internal::EventId> ids, std::span<const std::size_t> fresh,
    std::span<const std::string_view> users, std::vector<bool>& stored) {
  const std::optional<std::string> rows = copy_rows(product, received_ns, events, ids, fresh);
  if (!rows) {
    copy_fallbacks_.fetch_add(1, std::memory_order_relaxed);
    return BatchWrite::kRedoWithoutBulk;
  }
  // COPY stores every row or fails: on an id stored already (23505: a batch sent again, or two
  // replicas given one batch at once) or a value it refuses, the statement's INSERT ... ON
  // CONFLICT DO NOTHING writes the batch instead (and names a refused value).
  if (absl::Status copied = connection.copy_in(copy_events_sql(), *rows); !copied.ok()) {
    if (absl::IsUnavailable(copied) || absl::IsAborted(copied)) return copied;
    copy_fallbacks_.fetch_add(1, std::memory_order_relaxed);
    return BatchWrite::kRedoWithoutBulk;
  }
  absl::StatusOr<Query> sums = prepare(connection, store_copied_batch_sql());
  if (!sums.ok()) return sums.status();
  const std::string user_array = text_array(users);
  const std::string copied_ids = id_array(ids, fresh);
  const std::string copied_users =
      text_array(fresh.size(), [&](std::size_t k) { return std::string_view(events[fresh[k]].user_id); });
  const std::string copied_times = int64_array(fresh.size(), [&](std::size_t k) { return events[fresh[k]].ts_ns; });
  sums->bind(1, product).bind(2, received_ns).bind(3, std::string_view(user_array));
  sums->bind(4, std::string_view(copied_ids)).bind(5, std::string_view(copied_users)).bind(6, std::string_view(copied_times));
  std::size_t read_back = 0;
  for (;;) {
    absl::StatusOr<bool> row = sums->step("add up copied batch");
    if (absl::IsInvalidArgument(row.status())) return BatchWrite::kRedoInParts;  // a total past int64
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (sums->int64(1) != 1) return BatchWrite::kRedoInParts;  // no product_totals row
    if (!sums->is_null(0)) ++read_back;
  }
  if (read_back != fresh.size()) {
    return absl::InternalError(str_cat("store batch: ", fresh.size(), " events copied, ", read_back, " read back"));
  }
  for (const std::size_t i : fresh) stored[i] = true;
  return BatchWrite::kStored;
}

absl::StatusOr<std::unique_ptr<PostgresStorage::Connection>> PostgresStorage::connect() {
  PGconn* conn = PQconnectdb(conninfo_.c_str());
  auto connection = std::make_unique<Connection>(conn, options_.stream_page_rows);  // finishes `conn` whatever happens next
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    std::string message = conn != nullptr ? PQerrorMessage(conn) : "out of memory";
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    return absl::UnavailableError(str_cat("cannot connect to PostgreSQL: ", message));
  }
  // A lock still held past lock_timeout (a stuck client of the database, say) fails the request
  // with Unavailable (503: the syncer retries) rather than holding it forever. Reports are not
  // bounded: a long one is legitimate. Every text sent is UTF-8, escaped byte by byte (COPY's rows,
  // array literals): a client encoding from the environment (PGCLIENTENCODING) is not used.
  if (absl::Status s = connection->exec(
          "SET lock_timeout = '30s'; SET client_min_messages = warning; SET client_encoding = 'UTF8'");
      !s.ok()) {
    return s;
  }
  return connection;
}

absl::StatusOr<std::unique_ptr<PostgresStorage>> PostgresStorage::open(const std::string& conninfo,
                                                                       PostgresOptions options) {
  std::unique_ptr<PostgresStorage> storage(new PostgresStorage(conninfo, options));
  absl::StatusOr<std::unique_ptr<Connection>> connection = storage->connect();
  if (!connection.ok()) return connection.status();
  Connection& c = **connection;
  absl::Status status = [&]() -> absl::Status {
    if (absl::Status s = c.exec(str_cat("BEGIN; SELECT pg_advisory_xact_lock(", kSchemaLock, ")")); !s.ok()) return s;
    if (absl::Status s = c.exec("CREATE TABLE IF NOT EXISTS paygent_schema(version BIGINT NOT NULL)"); !s.ok()) return s;
    std::int64_t version = 0;
    {
      absl::StatusOr<Query> select = prepare(c, "SELECT COALESCE(MAX(version), 0) FROM paygent_schema");
      if (!select.ok()) return select.status();
      absl::StatusOr<bool> row = select->step("read schema version");
      if (!row.ok()) return row.status();
      if (*row) version = select->int64(0);
    }
    if (version > kSchemaVersion) {
      return absl::FailedPreconditionError(
          str_cat("the database has paygentd schema version ", version, "; this paygentd knows version ", kSchemaVersion));
    }
    if (absl::Status s = c.exec(sql_schema(dialect())); !s.ok()) return s;
    // An events table of an older version gets the optional fields added since (with their defaults).
    for (const auto& field : ::paygent::internal::kEventFields) {
      if (field.required) continue;
      const std::string definitions = sql_schema(dialect());
      const std::string prefix = str_cat("\n  ", field.name, " ");
      const std::size_t at = definitions.find(prefix);
      if (at == std::string::npos) continue;
      const std::size_t end = definitions.find_first_of(",\n", at + prefix.size());
      const std::string definition = definitions.substr(at + 3, end - at - 3);
      if (absl::Status s = c.exec(str_cat("ALTER TABLE events ADD COLUMN IF NOT EXISTS ", definition)); !s.ok()) return s;
    }
    if (version > 0 && version < 5) {
      // No write between the backfill's statements: a replica of this version waits, and one of
      // an older version (which writes no rollups) must be stopped first (docs/dashboard.md).
      if (absl::Status s = c.exec("LOCK TABLE events, billing_events, usage_daily IN SHARE MODE"); !s.ok()) return s;
      if (absl::Status s = c.exec(rollups_backfill_sql()); !s.ok()) return s;
    }
    if (version > 0 && version < 9) {
      // As above: the events must not move while their sums are taken.
      if (absl::Status s = c.exec("LOCK TABLE events IN SHARE MODE"); !s.ok()) return s;
      if (absl::Status s = c.exec(provider_rollup_backfill_sql()); !s.ok()) return s;
    }
    if (version > 0 && version < 10) {
      // A table from before the columns gets them (with their defaults), then its events' values.
      if (absl::Status s = c.exec("LOCK TABLE events, billing_events IN SHARE ROW EXCLUSIVE MODE; "
                                  "ALTER TABLE billing_events ADD COLUMN IF NOT EXISTS meta_tags TEXT NOT NULL DEFAULT '{}'; "
                                  "ALTER TABLE billing_events ADD COLUMN IF NOT EXISTS received_ns BIGINT NOT NULL DEFAULT 0");
          !s.ok()) {
        return s;
      }
      if (absl::Status s = c.exec(billing_event_tags_backfill_sql()); !s.ok()) return s;
    }
    if (version > 0 && version < 12) {
      // Pages written from now on keep the room; those already full fill no further.
      for (std::string_view table : {"usage_daily", "profit_daily", "profit_daily_by_tag", "usage_daily_by_model",
                                     "usage_daily_by_user", "usage_daily_by_provider"}) {
        const std::string_view options = PostgresDialect::kSumsTableOptions;
        if (absl::Status s = c.exec(str_cat("ALTER TABLE ", table, " SET ", options.substr(options.find('('))));
            !s.ok()) {
          return s;
        }
      }
    }
    if (version < kSchemaVersion) {
      if (absl::Status s = c.exec(str_cat("DELETE FROM paygent_schema; INSERT INTO paygent_schema VALUES(", kSchemaVersion, ")"));
          !s.ok()) {
        return s;
      }
    }
    return c.exec("COMMIT");
  }();
  if (!status.ok()) return status;
  absl::MutexLock lock(&storage->mu_);
  storage->idle_.push_back(*std::move(connection));
  return storage;
}

absl::Status PostgresStorage::with_connection(Access, absl::FunctionRef<absl::Status(SqlConnection&)> fn) {
  for (int attempt = 1;; ++attempt) {
    std::unique_ptr<Connection> connection;
    if (attempt == 1) {
      absl::MutexLock lock(&mu_);
      if (!idle_.empty()) {
        connection = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    const bool reused = connection != nullptr;
    if (!reused) {
      absl::StatusOr<std::unique_ptr<Connection>> made = connect();
      if (!made.ok()) return made.status();
      connection = *std::move(made);
    }
    absl::Status status = fn(*connection);
    if (connection->broken()) {
      // The server went away (restarted, or this connection was ended): so did the other idle
      // connections most likely. A call that failed on a reused one is tried once on a new one.
      absl::MutexLock lock(&mu_);
      idle_.clear();
      if (reused && attempt == 1 && !status.ok()) continue;
      return status;
    }
    if (connection->in_transaction()) static_cast<void>(connection->exec("ROLLBACK"));
    absl::MutexLock lock(&mu_);
    if (idle_.size() < options_.max_idle_connections) idle_.push_back(std::move(connection));
    return status;
  }
}

}  // namespace paygent::server
