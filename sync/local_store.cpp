// The local SQLite store (see local_store.h).
#include "sync/local_store.h"

#include <sqlite3.h>

#include <string>
#include <utility>
#include <vector>

#include "meter/internal/str_cat.h"

namespace paygent::internal {
namespace {

// The schema version this build writes. 1: the first release; 2: the events table has the
// columns of every field of sync/event_record.h (added on open to a version 1 file); 3:
// soft_gates_fired has `sent` (added on open, 0: a file's earlier fires are sent once).
constexpr int kSchemaVersion = 3;

// The tables, created when missing. The events table's payload columns come from the event's
// field table; those a file of an older build lacks are added by add_missing_event_columns().
std::string schema_sql() {
  return str_cat(R"sql(
CREATE TABLE IF NOT EXISTS paygent_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events(
  id TEXT NOT NULL UNIQUE,
  )sql", event_column_definitions(), R"sql(,
  acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events(user_id, ts_ns);
CREATE INDEX IF NOT EXISTS events_unacked ON events(acked);
CREATE TABLE IF NOT EXISTS customers(
  external_id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  state INTEGER NOT NULL DEFAULT 0,
  created_seq INTEGER NOT NULL DEFAULT 0
);
)sql");
}

// Binds text without copying: SQLite reads it before sqlite3_step returns.
void bind_text(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

std::string column_text(sqlite3_stmt* s, int i) {
  const auto* p = sqlite3_column_text(s, i);
  return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p),
                                                    static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
}

// Finalizes a statement when it goes out of scope.
struct Statement {
  sqlite3_stmt* s = nullptr;
  ~Statement() { sqlite3_finalize(s); }
};

// Runs `sql` once per row of `rows` (`bind(statement, row)` binds its parameters) in one
// transaction: all or none. Internal naming `what` on a SQLite failure.
template <class Row, class Bind>
absl::Status write_rows(sqlite3* db, const char* sql, std::string_view what, const std::vector<Row>& rows, Bind bind) {
  auto fail = [&] {
    absl::Status s = absl::InternalError(str_cat(what, ": ", sqlite3_errmsg(db)));
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  };
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return absl::InternalError(str_cat(what, ": ", sqlite3_errmsg(db)));
  }
  Statement st;
  if (sqlite3_prepare_v2(db, sql, -1, &st.s, nullptr) != SQLITE_OK) return fail();
  for (const Row& row : rows) {
    sqlite3_reset(st.s);
    bind(st.s, row);
    if (sqlite3_step(st.s) != SQLITE_DONE) return fail();
  }
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail();
  return absl::OkStatus();
}

// Soft-gate thresholds already fired, so that a restart does not fire them again (see
// FiredThreshold). A few rows per user and period. `sent`: 1 when the backend has it (it
// acknowledged a batch that carried it, or reported it), so the syncer sends each once.
constexpr const char* kFiredSchema = R"sql(
CREATE TABLE IF NOT EXISTS soft_gates_fired(
  user_id TEXT NOT NULL,
  limit_key TEXT NOT NULL,
  period_start_ns INTEGER NOT NULL,
  threshold_ppm INTEGER NOT NULL,
  sent INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(user_id, period_start_ns, limit_key, threshold_ppm)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hard_gates_fired(
  user_id TEXT NOT NULL,
  limit_key TEXT NOT NULL,
  period_start_ns INTEGER NOT NULL,
  threshold_ppm INTEGER NOT NULL,
  fired_ns INTEGER NOT NULL DEFAULT 0,
  sent INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(user_id, period_start_ns, limit_key, threshold_ppm)
) WITHOUT ROWID;
)sql";

// Adds soft_gates_fired.sent to a table of schema version 2 (its rows are then unsent).
absl::Status add_fired_sent_column(sqlite3* db) {
  Statement st;
  if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM pragma_table_info('soft_gates_fired') WHERE name = 'sent'", -1,
                         &st.s, nullptr) != SQLITE_OK ||
      sqlite3_step(st.s) != SQLITE_ROW) {
    return absl::InternalError(str_cat("soft_gates_fired: ", sqlite3_errmsg(db)));
  }
  if (sqlite3_column_int64(st.s, 0) > 0) return absl::OkStatus();
  char* err = nullptr;
  if (sqlite3_exec(db, "ALTER TABLE soft_gates_fired ADD COLUMN sent INTEGER NOT NULL DEFAULT 0", nullptr, nullptr,
                   &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return absl::InternalError(str_cat("soft_gates_fired: ", msg));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalStore>> LocalStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(str_cat("local store ", path, ": cannot open: ", msg));
  }
  std::unique_ptr<LocalStore> store(new LocalStore(db));
  std::lock_guard<std::mutex> lock(store->mu_);
  sqlite3_busy_timeout(db, 2000);
  // WAL: appends are checksummed and a torn tail is discarded on recovery; NORMAL sync commits
  // each group without an fsync per transaction (durable against process crashes, which is the
  // contract; the WAL is fsynced at checkpoints).
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"}) {
    if (absl::Status s = store->exec(sql); !s.ok()) {
      return absl::UnavailableError(str_cat("local store ", path, ": ", s.message()));
    }
  }
  if (absl::Status s = store->exec(kFiredSchema); !s.ok()) {
    return absl::UnavailableError(str_cat("local store ", path, ": ", s.message()));
  }
  if (absl::Status s = store->upgrade_schema(); !s.ok()) {
    return absl::UnavailableError(str_cat("local store ", path, ": ", s.message()));
  }
  const std::string insert =
      str_cat("INSERT OR IGNORE INTO events(id, ", event_columns(), ") VALUES (?1, ", event_placeholders(2), ")");
  if (sqlite3_prepare_v2(db, insert.c_str(), -1, &store->insert_, nullptr) != SQLITE_OK) {
    return store->error(str_cat("local store ", path, ": not a Paygent store"));
  }
  return store;
}

LocalStore::LocalStore(sqlite3* db) : db_(db) {}

LocalStore::~LocalStore() {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_finalize(insert_);
  sqlite3_close(db_);
}

absl::Status LocalStore::upgrade_schema() {
  if (absl::Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status status = exec(schema_sql().c_str());
  if (status.ok()) status = add_missing_event_columns(db_, "events");
  if (status.ok()) status = add_fired_sent_column(db_);
  // A file written by a newer build keeps its (higher) version: its extra columns have defaults.
  if (status.ok()) {
    status = exec(str_cat("INSERT INTO paygent_meta(key, value) VALUES ('schema_version', '", kSchemaVersion,
                          "') ON CONFLICT(key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), ", kSchemaVersion,
                          ") AS TEXT)")
                      .c_str());
  }
  if (status.ok()) status = exec("COMMIT");
  if (!status.ok()) exec("ROLLBACK").IgnoreError();
  return status;
}

absl::Status LocalStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return absl::InternalError(msg);
  }
  return absl::OkStatus();
}

absl::Status LocalStore::error(std::string_view what) {
  return absl::InternalError(str_cat(what, ": ", sqlite3_errmsg(db_)));
}

absl::StatusOr<std::int64_t> LocalStore::append(const std::vector<EventRecord>& events) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  std::int64_t added = 0;
  for (const EventRecord& e : events) {
    sqlite3_stmt* s = insert_;
    sqlite3_reset(s);
    bind_text(s, 1, e.id);
    bind_event_columns(s, 2, e);
    if (sqlite3_step(s) != SQLITE_DONE) {
      absl::Status st = error("local store: insert");
      sqlite3_reset(s);
      exec("ROLLBACK").IgnoreError();
      return st;
    }
    added += sqlite3_changes(db_);
  }
  sqlite3_reset(insert_);
  if (absl::Status s = exec("COMMIT"); !s.ok()) {
    exec("ROLLBACK").IgnoreError();
    return s;
  }
  return added;
}

absl::StatusOr<RangeTotals> LocalStore::totals(std::string_view user_id, std::int64_t start_ns, std::int64_t end_ns,
                                               bool acked_only, std::string_view session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         acked_only ? "SELECT model, SUM(input_tokens), SUM(output_tokens), COUNT(*), SUM(cost_nanos) "
                                      "FROM events WHERE user_id = ?1 AND ts_ns >= ?2 AND ts_ns < ?3 AND acked = 1 "
                                      "AND (?4 = '' OR session_id = ?4) GROUP BY model"
                                    : "SELECT model, SUM(input_tokens), SUM(output_tokens), COUNT(*), SUM(cost_nanos) "
                                      "FROM events WHERE user_id = ?1 AND ts_ns >= ?2 AND ts_ns < ?3 "
                                      "AND (?4 = '' OR session_id = ?4) GROUP BY model",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: totals");
  }
  bind_text(st.s, 1, user_id);
  bind_text(st.s, 4, session_id.empty() ? std::string_view("") : session_id);  // never NULL
  sqlite3_bind_int64(st.s, 2, start_ns);
  sqlite3_bind_int64(st.s, 3, end_ns);
  RangeTotals out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    RangeTotals::Model m{column_text(st.s, 0), sqlite3_column_int64(st.s, 1), sqlite3_column_int64(st.s, 2),
                         sqlite3_column_int64(st.s, 3), sqlite3_column_int64(st.s, 4)};
    out.cost += m.cost;
    out.calls += m.calls;
    out.by_model.push_back(std::move(m));
  }
  if (rc != SQLITE_DONE) return error("local store: totals");
  return out;
}

absl::StatusOr<std::vector<SessionTotals>> LocalStore::sessions(std::string_view user_id, std::string_view session_id,
                                                                std::int64_t start_ns, std::int64_t since_ns,
                                                                std::int64_t until_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         "SELECT session_id, SUM(cost_nanos), COUNT(*), MIN(ts_ns), MAX(ts_ns) FROM events "
                         "WHERE user_id = ?1 AND ts_ns >= ?2 AND ts_ns < ?4 AND (?5 = '' OR session_id = ?5) "
                         "GROUP BY session_id HAVING MAX(ts_ns) >= ?3 ORDER BY MAX(ts_ns) DESC",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: sessions");
  }
  bind_text(st.s, 1, user_id);
  sqlite3_bind_int64(st.s, 2, start_ns);
  sqlite3_bind_int64(st.s, 3, since_ns);
  sqlite3_bind_int64(st.s, 4, until_ns);
  bind_text(st.s, 5, session_id);
  std::vector<SessionTotals> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    out.push_back({column_text(st.s, 0), sqlite3_column_int64(st.s, 1), sqlite3_column_int64(st.s, 2),
                   sqlite3_column_int64(st.s, 3), sqlite3_column_int64(st.s, 4)});
  }
  if (rc != SQLITE_DONE) return error("local store: sessions");
  return out;
}

absl::StatusOr<std::vector<EventRecord>> LocalStore::unacked(std::size_t limit) {
  outbox_reads_.fetch_add(1, std::memory_order_acq_rel);
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  const std::string select =
      str_cat("SELECT id, ", event_columns(), " FROM events WHERE acked = 0 ORDER BY rowid LIMIT ?");
  if (sqlite3_prepare_v2(db_, select.c_str(), -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: unacked");
  }
  sqlite3_bind_int64(st.s, 1, static_cast<sqlite3_int64>(limit));
  std::vector<EventRecord> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    EventRecord e;
    e.id = column_text(st.s, 0);
    read_event_columns(st.s, 1, e);
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return error("local store: unacked");
  return out;
}

absl::StatusOr<std::int64_t> LocalStore::release_held() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "UPDATE events SET acked = ?1 WHERE acked = ?2", -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: release_held");
  }
  sqlite3_bind_int(st.s, 1, kUnacked);
  sqlite3_bind_int(st.s, 2, kHeld);
  if (sqlite3_step(st.s) != SQLITE_DONE) return error("local store: release_held");
  return static_cast<std::int64_t>(sqlite3_changes(db_));
}

absl::Status LocalStore::mark_acked(const std::vector<std::string>& ids, int state) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "UPDATE events SET acked = ?2 WHERE id = ?1", -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: mark_acked");
  }
  if (absl::Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  for (const std::string& id : ids) {
    sqlite3_reset(st.s);
    bind_text(st.s, 1, id);
    sqlite3_bind_int(st.s, 2, state);
    if (sqlite3_step(st.s) != SQLITE_DONE) {
      absl::Status err = error("local store: mark_acked");
      exec("ROLLBACK").IgnoreError();
      return err;
    }
  }
  if (absl::Status s = exec("COMMIT"); !s.ok()) {
    exec("ROLLBACK").IgnoreError();
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::int64_t> LocalStore::unacked_count() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM events WHERE acked = 0", -1, &st.s, nullptr) != SQLITE_OK ||
      sqlite3_step(st.s) != SQLITE_ROW) {
    return error("local store: unacked_count");
  }
  return sqlite3_column_int64(st.s, 0);
}

absl::StatusOr<std::int64_t> LocalStore::drop_oldest_unacked(std::int64_t keep) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE acked = 0 ORDER BY rowid "
                         "LIMIT max(0, (SELECT COUNT(*) FROM events WHERE acked = 0) - ?))",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: drop_oldest_unacked");
  }
  sqlite3_bind_int64(st.s, 1, keep);
  if (sqlite3_step(st.s) != SQLITE_DONE) return error("local store: drop_oldest_unacked");
  return static_cast<std::int64_t>(sqlite3_changes(db_));
}

absl::StatusOr<bool> LocalStore::has_user(std::string_view user_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT 1 FROM events WHERE user_id = ?1 LIMIT 1", -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: has user");
  }
  bind_text(st.s, 1, user_id);
  const int rc = sqlite3_step(st.s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return error("local store: has user");
  return rc == SQLITE_ROW;
}

absl::StatusOr<std::int64_t> LocalStore::count() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM events", -1, &st.s, nullptr) != SQLITE_OK ||
      sqlite3_step(st.s) != SQLITE_ROW) {
    return error("local store: count");
  }
  return sqlite3_column_int64(st.s, 0);
}

absl::Status LocalStore::save_fired(const std::vector<FiredThreshold>& fired, bool sent) {
  std::lock_guard<std::mutex> lock(mu_);
  // Each kind in its own table (a soft threshold may equal the hard one), in one transaction each.
  for (const bool hard : {false, true}) {
    std::vector<const FiredThreshold*> rows;
    for (const FiredThreshold& f : fired) {
      if (f.hard == hard) rows.push_back(&f);
    }
    if (rows.empty()) continue;
    const std::string sql = str_cat("INSERT INTO ", hard ? "hard_gates_fired" : "soft_gates_fired",
                                    "(user_id, limit_key, period_start_ns, threshold_ppm, sent",
                                    hard ? ", fired_ns) VALUES (?,?,?,?,?,?)" : ") VALUES (?,?,?,?,?)",
                                    " ON CONFLICT(user_id, period_start_ns, limit_key, threshold_ppm) "
                                    "DO UPDATE SET sent = 1 WHERE excluded.sent = 1 AND sent = 0");
    absl::Status s = write_rows(db_, sql.c_str(), "local store: save fired gates", rows,
                                [sent, hard](sqlite3_stmt* st, const FiredThreshold* f) {
                                  bind_text(st, 1, f->user_id);
                                  bind_text(st, 2, f->limit_key);
                                  sqlite3_bind_int64(st, 3, f->period_start_ns);
                                  sqlite3_bind_int64(st, 4, f->threshold_ppm);
                                  sqlite3_bind_int(st, 5, sent ? 1 : 0);
                                  if (hard) sqlite3_bind_int64(st, 6, f->fired_ns);
                                });
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {

// Both tables' rows as (user_id, limit_key, period_start_ns, threshold_ppm, hard, fired_ns), for
// a WHERE over those names.
constexpr std::string_view kBothFired =
    "(SELECT user_id, limit_key, period_start_ns, threshold_ppm, 0 AS hard, 0 AS fired_ns, sent FROM soft_gates_fired "
    "UNION ALL SELECT user_id, limit_key, period_start_ns, threshold_ppm, 1, fired_ns, sent FROM hard_gates_fired)";

FiredThreshold read_fired(sqlite3_stmt* st) {
  return FiredThreshold{column_text(st, 0),           column_text(st, 1),           sqlite3_column_int64(st, 2),
                        sqlite3_column_int64(st, 3), sqlite3_column_int(st, 4) != 0, sqlite3_column_int64(st, 5)};
}

}  // namespace

absl::StatusOr<std::vector<FiredThreshold>> LocalStore::fired(std::string_view user_id, std::int64_t from_ns,
                                                              std::int64_t to_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  const std::string sql = str_cat("SELECT user_id, limit_key, period_start_ns, threshold_ppm, hard, fired_ns FROM ",
                                  kBothFired, " WHERE user_id = ?1 AND period_start_ns >= ?2 AND period_start_ns <= ?3");
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: fired gates");
  }
  bind_text(st.s, 1, user_id);
  sqlite3_bind_int64(st.s, 2, from_ns);
  sqlite3_bind_int64(st.s, 3, to_ns);
  std::vector<FiredThreshold> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) out.push_back(read_fired(st.s));
  if (rc != SQLITE_DONE) return error("local store: fired gates");
  return out;
}

absl::StatusOr<std::vector<FiredThreshold>> LocalStore::unsent_fired(std::size_t limit, bool with_hard) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  const std::string sql =
      str_cat("SELECT user_id, limit_key, period_start_ns, threshold_ppm, hard, fired_ns FROM ", kBothFired,
              " WHERE sent = 0", with_hard ? "" : " AND hard = 0", " ORDER BY period_start_ns, hard LIMIT ?1");
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: unsent gates");
  }
  sqlite3_bind_int64(st.s, 1, static_cast<std::int64_t>(limit));
  std::vector<FiredThreshold> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) out.push_back(read_fired(st.s));
  if (rc != SQLITE_DONE) return error("local store: unsent gates");
  return out;
}

absl::Status LocalStore::mark_fired_sent(const std::vector<FiredThreshold>& fired) {
  // The rows exist (unsent_fired read them): recording them as sent is setting `sent`.
  return save_fired(fired, /*sent=*/true);
}

// --- Customers ---

absl::Status LocalStore::save_customers(const std::vector<StoredCustomer>& customers) {
  std::lock_guard<std::mutex> lock(mu_);
  return write_rows(db_,
                    "INSERT INTO customers(external_id, name, email, state, created_seq) "
                    "VALUES (?1, ?2, ?3, 0, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM customers)) "
                    "ON CONFLICT(external_id) DO NOTHING",
                    "local store: save customers", customers, [](sqlite3_stmt* st, const StoredCustomer& c) {
                      bind_text(st, 1, c.external_id);
                      bind_text(st, 2, c.name);
                      bind_text(st, 3, c.email);
                    });
}

absl::StatusOr<std::vector<StoredCustomer>> LocalStore::customers(int state, std::size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         "SELECT external_id, name, email, state FROM customers WHERE ?1 < 0 OR state = ?1 "
                         "ORDER BY created_seq LIMIT ?2",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: customers");
  }
  sqlite3_bind_int(st.s, 1, state);
  sqlite3_bind_int64(st.s, 2, limit > static_cast<std::size_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(limit));
  std::vector<StoredCustomer> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    out.push_back({column_text(st.s, 0), column_text(st.s, 1), column_text(st.s, 2), sqlite3_column_int(st.s, 3)});
  }
  if (rc != SQLITE_DONE) return error("local store: customers");
  return out;
}

absl::Status LocalStore::mark_customer(std::string_view external_id, int state) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "UPDATE customers SET state = ?2 WHERE external_id = ?1", -1, &st.s, nullptr) !=
      SQLITE_OK) {
    return error("local store: mark customer");
  }
  bind_text(st.s, 1, external_id);
  sqlite3_bind_int(st.s, 2, state);
  if (sqlite3_step(st.s) != SQLITE_DONE) return error("local store: mark customer");
  return absl::OkStatus();
}

}  // namespace paygent::internal
