// The local SQLite store (see local_store.h).
#include "sync/local_store.h"

#include <sqlite3.h>

#include <string>
#include <utility>

#include "meter/internal/str_cat.h"

namespace paygent::internal {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS paygent_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO paygent_meta(key, value) VALUES ('schema_version', '1');
CREATE TABLE IF NOT EXISTS events(
  id TEXT NOT NULL UNIQUE,
  user_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cached_input_tokens INTEGER NOT NULL,
  cache_creation_input_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  ts_ns INTEGER NOT NULL,
  meta_tags TEXT NOT NULL,
  estimated INTEGER NOT NULL,
  acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events(user_id, ts_ns);
CREATE INDEX IF NOT EXISTS events_unacked ON events(acked);
)sql";

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

// Soft-gate thresholds already fired, so that a restart does not fire them again (see
// FiredThreshold). A few rows per user and period.
constexpr const char* kFiredSchema = R"sql(
CREATE TABLE IF NOT EXISTS soft_gates_fired(
  user_id TEXT NOT NULL,
  limit_key TEXT NOT NULL,
  period_start_ns INTEGER NOT NULL,
  threshold_ppm INTEGER NOT NULL,
  PRIMARY KEY(user_id, period_start_ns, limit_key, threshold_ppm)
) WITHOUT ROWID;
)sql";

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
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", kSchema}) {
    if (absl::Status s = store->exec(sql); !s.ok()) {
      return absl::UnavailableError(str_cat("local store ", path, ": ", s.message()));
    }
  }
  if (absl::Status s = store->exec(kFiredSchema); !s.ok()) {
    return absl::UnavailableError(str_cat("local store ", path, ": ", s.message()));
  }
  if (sqlite3_prepare_v2(db,
                         "INSERT OR IGNORE INTO events(id, user_id, session_id, agent_id, indicator, model, "
                         "provider, input_tokens, output_tokens, cached_input_tokens, "
                         "cache_creation_input_tokens, reasoning_tokens, cost_nanos, ts_ns, meta_tags, estimated) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         -1, &store->insert_, nullptr) != SQLITE_OK) {
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

absl::StatusOr<std::int64_t> LocalStore::append(const std::vector<StoredEvent>& events) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  std::int64_t added = 0;
  for (const StoredEvent& e : events) {
    sqlite3_stmt* s = insert_;
    sqlite3_reset(s);
    bind_text(s, 1, e.id);
    bind_text(s, 2, e.user_id);
    bind_text(s, 3, e.session_id);
    bind_text(s, 4, e.agent_id);
    bind_text(s, 5, e.indicator);
    bind_text(s, 6, e.model);
    bind_text(s, 7, e.provider);
    sqlite3_bind_int64(s, 8, e.usage.input_tokens);
    sqlite3_bind_int64(s, 9, e.usage.output_tokens);
    sqlite3_bind_int64(s, 10, e.usage.cached_input_tokens);
    sqlite3_bind_int64(s, 11, e.usage.cache_creation_input_tokens);
    sqlite3_bind_int64(s, 12, e.usage.reasoning_tokens);
    sqlite3_bind_int64(s, 13, e.cost);
    sqlite3_bind_int64(s, 14, e.ts_ns);
    bind_text(s, 15, e.meta_tags_json);
    sqlite3_bind_int(s, 16, e.estimated ? 1 : 0);
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
                                               bool acked_only) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         acked_only ? "SELECT model, SUM(input_tokens), SUM(output_tokens), COUNT(*), SUM(cost_nanos) "
                                      "FROM events WHERE user_id = ? AND ts_ns >= ? AND ts_ns < ? AND acked = 1 "
                                      "GROUP BY model"
                                    : "SELECT model, SUM(input_tokens), SUM(output_tokens), COUNT(*), SUM(cost_nanos) "
                                      "FROM events WHERE user_id = ? AND ts_ns >= ? AND ts_ns < ? GROUP BY model",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: totals");
  }
  bind_text(st.s, 1, user_id);
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

absl::StatusOr<std::vector<StoredEvent>> LocalStore::unacked(std::size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         "SELECT id, user_id, session_id, agent_id, indicator, model, provider, input_tokens, "
                         "output_tokens, cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, "
                         "cost_nanos, ts_ns, meta_tags, estimated FROM events WHERE acked = 0 ORDER BY rowid LIMIT ?",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: unacked");
  }
  sqlite3_bind_int64(st.s, 1, static_cast<sqlite3_int64>(limit));
  std::vector<StoredEvent> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    StoredEvent e;
    e.id = column_text(st.s, 0);
    e.user_id = column_text(st.s, 1);
    e.session_id = column_text(st.s, 2);
    e.agent_id = column_text(st.s, 3);
    e.indicator = column_text(st.s, 4);
    e.model = column_text(st.s, 5);
    e.provider = column_text(st.s, 6);
    e.usage.input_tokens = sqlite3_column_int64(st.s, 7);
    e.usage.output_tokens = sqlite3_column_int64(st.s, 8);
    e.usage.cached_input_tokens = sqlite3_column_int64(st.s, 9);
    e.usage.cache_creation_input_tokens = sqlite3_column_int64(st.s, 10);
    e.usage.reasoning_tokens = sqlite3_column_int64(st.s, 11);
    e.cost = sqlite3_column_int64(st.s, 12);
    e.ts_ns = sqlite3_column_int64(st.s, 13);
    e.meta_tags_json = column_text(st.s, 14);
    e.estimated = sqlite3_column_int(st.s, 15) != 0;
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return error("local store: unacked");
  return out;
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

absl::Status LocalStore::save_fired(const std::vector<FiredThreshold>& fired) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         "INSERT OR IGNORE INTO soft_gates_fired(user_id, limit_key, period_start_ns, threshold_ppm) "
                         "VALUES (?,?,?,?)",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    absl::Status s = error("local store: save fired soft gates");
    exec("ROLLBACK").IgnoreError();
    return s;
  }
  for (const FiredThreshold& f : fired) {
    sqlite3_reset(st.s);
    bind_text(st.s, 1, f.user_id);
    bind_text(st.s, 2, f.limit_key);
    sqlite3_bind_int64(st.s, 3, f.period_start_ns);
    sqlite3_bind_int64(st.s, 4, f.threshold_ppm);
    if (sqlite3_step(st.s) != SQLITE_DONE) {
      absl::Status s = error("local store: save fired soft gates");
      exec("ROLLBACK").IgnoreError();
      return s;
    }
  }
  if (absl::Status s = exec("COMMIT"); !s.ok()) {
    exec("ROLLBACK").IgnoreError();
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<FiredThreshold>> LocalStore::fired(std::string_view user_id, std::int64_t from_ns,
                                                              std::int64_t to_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_,
                         "SELECT limit_key, period_start_ns, threshold_ppm FROM soft_gates_fired "
                         "WHERE user_id = ?1 AND period_start_ns >= ?2 AND period_start_ns <= ?3",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return error("local store: fired soft gates");
  }
  bind_text(st.s, 1, user_id);
  sqlite3_bind_int64(st.s, 2, from_ns);
  sqlite3_bind_int64(st.s, 3, to_ns);
  std::vector<FiredThreshold> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    out.push_back({std::string(user_id), column_text(st.s, 0), sqlite3_column_int64(st.s, 1),
                   sqlite3_column_int64(st.s, 2)});
  }
  if (rc != SQLITE_DONE) return error("local store: fired soft gates");
  return out;
}

}  // namespace paygent::internal
