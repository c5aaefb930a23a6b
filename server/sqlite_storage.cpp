// SqliteStorage (see server/sqlite_storage.h): SQLite's dialect and connections for SqlStorage.
#include "server/sqlite_storage.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "meter/internal/str_cat.h"
#include "sync/event_record.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;

// 1: the first release. 2: the events table has a column for every field of the event's field
// table (sync/event_record.h); opening a version 1 database adds the missing ones. 3: the leases
// table (docs/leases.md), created when missing. 4: the tracking API's customers, voice_sessions and
// idempotency_keys tables and the agents, agent_indicators, indicator_rates and billing_events
// tables of revenue (docs/tracking.md), created when missing. 5: billing (issue 11,
// docs/billing.md): the billable_metrics and indicator_billing tables and the index of billing
// events by customer; the webhooks' tables (webhook_endpoints, webhook_alerts,
// webhook_deliveries; docs/webhooks.md); created when missing. 6: the dashboard's rollups
// profit_daily (the profit report's, server/sql_profit.cpp), usage_daily_by_model and
// usage_daily_by_user (the product-wide usage reports'), created when missing and filled from the
// events and usage_daily. 7: the credit wallets' credit_wallets, credit_top_ups and credit_charges
// (docs/billing.md, "Credit wallets"), created when missing. 8: the billing events' indexes end
// with the event id, (product, ts_ns, id) and (product, user_id, ts_ns, id), the order the
// invoice and profit scans read them in (no sort per page); the older ones are dropped. 9: the
// hard gates application processes report (hard_gates, docs/wire.md), and the report tags
// report_tags and profit_daily_by_tag (docs/tracking.md), created when missing. 10: the usage
// report by provider's rollup usage_daily_by_provider, created when missing and filled from the
// events. 11: billing_events carry their event's meta_tags and received_ns (the invoice's and the
// profit report's scans read no event row per billing event), added and filled from the events. 12:
// the products' alert settings (alert_settings, docs/webhooks.md), created when missing.
constexpr int kSchemaVersion = 12;

// Per connection, in memory: the users of the batch whose usage ingest_with_usage() is reading,
// so that each of its reads is one query joined to this table rather than a few queries per user.
constexpr const char* kTempSchema = "CREATE TEMP TABLE batch_users(idx INTEGER PRIMARY KEY, user_id TEXT NOT NULL)";

// An error status for a failed SQLite call: Unavailable for conditions that may pass (busy,
// locked, disk full, I/O), InvalidArgument for a refused datatype (an int64 overflow in a STRICT
// table), AlreadyExists for a unique constraint, Internal for the rest.
absl::Status sqlite_error(sqlite3* db, int rc, std::string_view what) {
  const std::string message = str_cat("sqlite ", what, ": ", sqlite3_errmsg(db), " (", rc, ")");
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_NOMEM:
      return absl::UnavailableError(message);
    default:
      break;
  }
  if (rc == SQLITE_CONSTRAINT_DATATYPE) {
    return absl::InvalidArgumentError("the batch would overflow a 64-bit total (tokens or cost_nanos)");
  }
  if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) return absl::AlreadyExistsError(message);
  return absl::InternalError(message);
}

// A cached prepared statement. Text and blobs are bound without a copy (SQLITE_STATIC).
class SqliteStatement final : public SqlStatement {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~SqliteStatement() override { sqlite3_finalize(stmt_); }
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  // An index past the statement's parameters (SQLITE_RANGE) is ignored: a query that does not
  // read the batch's users as a parameter (see SqliteDialect::batch_users) is bound as one that does.
  void bind_int64(int index, std::int64_t value) override { sqlite3_bind_int64(stmt_, index, value); }
  void bind_text(int index, std::string_view text) override {
    // An empty view may have no data: "" rather than SQL NULL.
    sqlite3_bind_text(stmt_, index, text.data() != nullptr ? text.data() : "", static_cast<int>(text.size()),
                      SQLITE_STATIC);
  }
  void bind_blob(int index, std::span<const unsigned char> bytes) override {
    sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
  }
  absl::StatusOr<bool> step(std::string_view what) override {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return sqlite_error(db_, rc, what);
  }
  [[nodiscard]] std::int64_t int64(int column) const override { return sqlite3_column_int64(stmt_, column); }
  [[nodiscard]] std::string_view text(int column) const override {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return p == nullptr ? std::string_view()
                        : std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  [[nodiscard]] std::string blob(int column) const override {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, column));
    return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  [[nodiscard]] bool is_null(int column) const override { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  [[nodiscard]] std::int64_t changes() const override { return sqlite3_changes(db_); }
  void reset() override {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

class SqliteDialect final : public SqlDialect {
 public:
  std::string_view begin_write() const override { return "BEGIN IMMEDIATE"; }
  std::string_view begin_read() const override { return "BEGIN"; }
  std::string_view greatest() const override { return "MAX"; }
  std::string_view for_update() const override { return ""; }
  // CROSS JOIN keeps batch_users the outer loop (SQLite has no statistics to tell it is small):
  // every other table is then searched by its primary key or index.
  std::string_view join_in_order() const override { return "CROSS JOIN"; }
  std::string_view batch_users() const override { return "temp.batch_users"; }
  // A temporary table rather than a JSON array of ids (json_each): SQLite's JSON functions cut a
  // string at \u0000 (which the API refuses now, but a database may hold from before).
  absl::StatusOr<std::string> users_parameter(SqlConnection& connection,
                                              std::span<const std::string_view> user_ids) const override {
    {
      // Emptied before use rather than after: a failed batch's rows are gone with its rollback anyway.
      absl::StatusOr<Query> clear = prepare(connection, "DELETE FROM temp.batch_users");
      if (!clear.ok()) return clear.status();
      if (absl::Status s = clear->run("clear batch users"); !s.ok()) return s;
    }
    absl::StatusOr<Query> insert = prepare(connection, "INSERT INTO temp.batch_users(idx, user_id) VALUES(?1, ?2)");
    if (!insert.ok()) return insert.status();
    for (std::size_t i = 0; i < user_ids.size(); ++i) {
      insert->bind(1, static_cast<std::int64_t>(i)).bind(2, user_ids[i]);
      if (absl::Status s = insert->run("list batch users"); !s.ok()) return s;
      insert->reset();
    }
    return std::string();
  }
  // One row per INSERT: a statement is a function call here, and a prepared one-row INSERT is
  // the fastest way in.
  int rows_per_insert() const override { return 1; }
  absl::Status lock_users(SqlConnection&, std::int64_t, std::span<const std::string_view>) const override {
    return absl::OkStatus();  // BEGIN IMMEDIATE holds the database's one writer lock
  }
  std::string_view lock_events() const override { return ""; }
  std::string_view integer_type() const override { return "INTEGER"; }
  std::string_view blob_type() const override { return "BLOB"; }
  std::string_view key_column() const override { return "INTEGER PRIMARY KEY"; }
  std::string_view table_options() const override { return " STRICT"; }
  std::string_view keyed_table_options() const override { return " STRICT, WITHOUT ROWID"; }
  std::string_view sums_table_options() const override { return keyed_table_options(); }
};

const SqliteDialect& dialect() {
  static const SqliteDialect* const kDialect = new SqliteDialect;
  return *kDialect;
}

const std::string& schema_sql() {
  static const std::string* const kSchema = new std::string(sql_schema(dialect()));
  return *kSchema;
}

}  // namespace

std::string_view sqlite_schema() noexcept { return schema_sql(); }

// One SQLite connection and its prepared statements.
class SqliteStorage::Connection final : public SqlConnection {
 public:
  explicit Connection(sqlite3* db) : db_(db) {}
  ~Connection() override {
    statements_.clear();  // finalised before the close
    sqlite3_close(db_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  absl::StatusOr<SqlStatement*> prepare(std::string_view sql) override {
    auto it = statements_.find(absl::string_view(sql.data(), sql.size()));
    if (it == statements_.end()) {
      sqlite3_stmt* stmt = nullptr;
      const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                        &stmt, nullptr);
      if (rc != SQLITE_OK) return sqlite_error(db_, rc, str_cat("prepare \"", sql, "\""));
      it = statements_.emplace(std::string(sql), std::make_unique<SqliteStatement>(db_, stmt)).first;
    }
    return it->second.get();
  }

  absl::Status exec(std::string_view sql) override {
    const std::string text(sql);
    char* message = nullptr;
    const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message);
    if (rc == SQLITE_OK) return absl::OkStatus();
    absl::Status status = sqlite_error(db_, rc, message != nullptr ? message : text);
    sqlite3_free(message);
    return status;
  }

  bool in_transaction() override { return sqlite3_get_autocommit(db_) == 0; }

  [[nodiscard]] sqlite3* db() const { return db_; }

 private:
  sqlite3* const db_;
  absl::flat_hash_map<std::string, std::unique_ptr<SqliteStatement>> statements_;
};


// Copies the WAL into the database file on its own thread and connection, so that a commit only
// appends to the WAL (and fsyncs it). A PASSIVE checkpoint never blocks the writer; once it has
// copied everything, the writer's next transaction starts the WAL over from its beginning.
class SqliteStorage::Checkpointer {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpointer>> start(const std::string& path, const SqliteOptions& options) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      absl::Status status = absl::UnavailableError(str_cat("cannot open ", path, " to checkpoint it: ",
                                                           db != nullptr ? sqlite3_errmsg(db) : "out of memory"));
      sqlite3_close(db);
      return status;
    }
    const std::string pragmas =
        str_cat("PRAGMA synchronous=", options.synchronous == SqliteOptions::Synchronous::kFull ? "FULL" : "NORMAL",
                "; PRAGMA busy_timeout=10000;");
    sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, nullptr);
    std::unique_ptr<Checkpointer> checkpointer(new Checkpointer(db));
    checkpointer->thread_ = std::thread([c = checkpointer.get()] { c->run(); });
    return checkpointer;
  }

  // Stops the thread (after the checkpoint in progress, if any) and closes the connection.
  ~Checkpointer() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
    sqlite3_close(db_);
  }

  // Called from the writer's commit when the WAL has reached the threshold. Starts a background
  // round when none has run since the WAL last started over; true when one has run to its end,
  // i.e. only the frames committed during it are left to copy: the caller copies them itself
  // (a few batches' worth), so that the WAL can start over at the next write. Without that, each
  // commit would wake another background round for the frames it just added, and the checkpoints
  // would chase the writer (a database fsync per batch, competing with the commit's).
  bool wake() {
    absl::MutexLock lock(&mu_);
    if (wake_ || running_) return false;
    if (done_) {
      done_ = false;
      return true;
    }
    wake_ = true;
    return false;
  }

 private:
  explicit Checkpointer(sqlite3* db) : db_(db) {}

  void run() {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Checkpointer* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return c->wake_ || c->stop_; }, this));
        if (stop_) return;
        wake_ = false;
        running_ = true;
      }
      int wal_pages = 0, copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &wal_pages, &copied);
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        std::fprintf(stderr, "paygentd: checkpoint: %s\n", sqlite3_errmsg(db_));
      }
      absl::MutexLock lock(&mu_);
      running_ = false;
      done_ = rc == SQLITE_OK && copied == wal_pages;
    }
  }

  sqlite3* const db_;  // used by the thread only (and closed after it ends)
  std::thread thread_;
  absl::Mutex mu_;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;     // a round is asked for
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // a round is in progress
  bool done_ ABSL_GUARDED_BY(mu_) = false;     // the last round copied every frame it saw
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<SqliteStorage>> SqliteStorage::open(const std::string& path, SqliteOptions options) {
  // SQLite's memory statistics (which nothing here reads) take a global mutex at every allocation
  // and free: ~20% of paygentd's CPU under ingest (perf, bench/ingest_bench.cpp). Only possible
  // before SQLite is first initialised in the process; later (SQLITE_MISUSE) it stays on, which
  // changes nothing but speed.
  static const bool kMemstatusOff = [] {
    static_cast<void>(sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0));
    return true;
  }();
  static_cast<void>(kMemstatusOff);
  // The database holds every tenant's usage: a new one is created readable and writable by its
  // owner only, whatever the umask (SQLite would make it 0644). SQLite creates the -wal and -shm
  // files with the database file's mode (unixOpen's findCreateFileMode, unixOpenSharedMemory),
  // so they are 0600 too. An existing database keeps the mode it has. Failures to create it are
  // left to sqlite3_open_v2 to report.
  if (!path.empty() && path != ":memory:" && path.rfind("file:", 0) != 0) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
  }
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = absl::UnavailableError(
        str_cat("cannot open ", path, ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return status;
  }
  sqlite3_extended_result_codes(db, 1);  // e.g. SQLITE_CONSTRAINT_DATATYPE, not just SQLITE_CONSTRAINT
  std::unique_ptr<SqliteStorage> storage(new SqliteStorage(db));
  absl::MutexLock lock(&storage->mu_);
  Connection& writer = *storage->writer_;
  // journal_mode answers with the mode in force; anything but "wal" (e.g. a file system without
  // shared memory) is refused rather than run without the WAL's guarantees.
  {
    absl::StatusOr<Query> wal = prepare(writer, "PRAGMA journal_mode=WAL");
    if (!wal.ok()) return wal.status();
    absl::StatusOr<bool> row = wal->step("set journal mode");
    if (!row.ok() || !*row || wal->text(0) != "wal") {
      return absl::UnavailableError(str_cat("cannot put ", path, " in WAL mode"));
    }
  }
  const std::string pragmas = str_cat(
      "PRAGMA synchronous=", options.synchronous == SqliteOptions::Synchronous::kFull ? "FULL" : "NORMAL",
      "; PRAGMA busy_timeout=10000; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-", options.cache_bytes / 1024,
      // The writer starts the WAL over once it is checkpointed, and then truncates it to this size.
      "; PRAGMA journal_size_limit=", 2 * options.checkpoint_pages * 4096, ";");
  if (absl::Status s = writer.exec(pragmas); !s.ok()) return s;

  std::int64_t version = 0;
  {
    absl::StatusOr<Query> v = prepare(writer, "PRAGMA user_version");
    if (!v.ok()) return v.status();
    absl::StatusOr<bool> row = v->step("read schema version");
    if (!row.ok()) return row.status();
    if (*row) version = v->int64(0);
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        str_cat(path, " has schema version ", version, "; this paygentd knows version ", kSchemaVersion));
  }
  // Creates what is missing; a database of an older version gets the events columns added since.
  absl::Status created = writer.exec(str_cat("BEGIN IMMEDIATE;", schema_sql()));
  if (created.ok()) created = ::paygent::internal::add_missing_event_columns(writer.db(), "events");
  if (created.ok() && version > 0 && version < 6) created = writer.exec(rollups_backfill_sql());
  if (created.ok() && version > 0 && version < 10) created = writer.exec(provider_rollup_backfill_sql());
  if (created.ok() && version > 0 && version < 11) {
    // billing_events of versions 4 to 10 lack the columns (CREATE TABLE IF NOT EXISTS kept the old
    // table); an older database has just been given the new table, empty.
    std::int64_t columns = -1;
    {
      absl::StatusOr<Query> has =
          prepare(writer, "SELECT COUNT(*) FROM pragma_table_info('billing_events') WHERE name = 'meta_tags'");
      absl::StatusOr<bool> row = has.ok() ? has->step("read billing_events' columns") : absl::StatusOr<bool>(has.status());
      if (!row.ok()) created = row.status();
      if (row.ok() && *row) columns = has->int64(0);
      if (has.ok()) has->reset();  // no statement open on the table while it is altered
    }
    if (created.ok() && columns == 0) {
      created = writer.exec(str_cat("ALTER TABLE billing_events ADD COLUMN meta_tags TEXT NOT NULL DEFAULT '{}'; "
                                    "ALTER TABLE billing_events ADD COLUMN received_ns INTEGER NOT NULL DEFAULT 0; ",
                                    billing_event_tags_backfill_sql()));
    }
  }
  if (created.ok()) created = writer.exec(str_cat("PRAGMA user_version=", kSchemaVersion, "; COMMIT;"));
  if (!created.ok()) {
    static_cast<void>(writer.exec("ROLLBACK"));
    return created;
  }
  if (absl::Status s = writer.exec(kTempSchema); !s.ok()) return s;
  {
    absl::StatusOr<Query> size = prepare(writer, "PRAGMA cache_size");
    if (!size.ok()) return size.status();
    absl::StatusOr<bool> row = size->step("read cache size");
    if (row.ok() && *row) storage->cache_size_ = size->int64(0);
  }
  absl::StatusOr<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::start(path, options);
  if (!checkpointer.ok()) return checkpointer.status();
  storage->checkpointer_ = *std::move(checkpointer);
  storage->checkpoint_pages_ = std::max<std::int64_t>(1, options.checkpoint_pages);
  // Replaces SQLite's auto-checkpoint (which would copy the WAL inside a commit).
  sqlite3_wal_hook(writer.db(), &SqliteStorage::on_wal_commit, storage.get());
  return storage;
}

int SqliteStorage::on_wal_commit(void* arg, sqlite3* db, const char*, int wal_pages) {
  auto* storage = static_cast<SqliteStorage*>(arg);
  if (wal_pages < storage->checkpoint_pages_) return SQLITE_OK;
  // The writer copies what a finished background round left (the frames committed while it ran).
  // And a checkpointer that cannot keep up must not let the WAL grow without bound: past 16 times
  // the threshold, the writer checkpoints too (what SQLite's auto-checkpoint would do).
  if (storage->checkpointer_->wake() || wal_pages >= 16 * storage->checkpoint_pages_) {
    sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  }
  return SQLITE_OK;
}

namespace {

// The file of `db`'s main database; "" for one in memory or temporary.
std::string database_file(sqlite3* db) {
  const char* file = sqlite3_db_filename(db, "main");
  return file != nullptr ? file : "";
}

}  // namespace

SqliteStorage::SqliteStorage(sqlite3* db)
    : SqlStorage(dialect()), writer_(std::make_unique<Connection>(db)), path_(database_file(db)) {}

SqliteStorage::~SqliteStorage() {
  {
    // Before the writer's connection, so that it is the last one and checkpoints the WAL.
    absl::MutexLock lock(&readers_mu_);
    idle_readers_.clear();
  }
  absl::MutexLock lock(&mu_);
  sqlite3_wal_hook(writer_->db(), nullptr, nullptr);
  checkpointer_.reset();  // before the last connection closes (which checkpoints what is left)
}

absl::Status SqliteStorage::with_connection(Access access, absl::FunctionRef<absl::Status(SqlConnection&)> fn) {
  if (access == Access::kReport || access == Access::kRead) {
    absl::StatusOr<std::unique_ptr<Connection>> reader =
        take_reader(access == Access::kReport ? SIZE_MAX : kShortReaders);
    if (!reader.ok()) return reader.status();
    if (*reader != nullptr) {
      absl::Status status = fn(**reader);
      return_reader(*std::move(reader));
      return status;
    }
  }
  absl::MutexLock lock(&mu_);
  return fn(*writer_);
}

absl::Status SqliteStorage::write_transaction(absl::FunctionRef<absl::Status(SqlConnection&)> fn, bool defers) {
  return group_commit_.run(
      fn,
      [&](absl::FunctionRef<absl::Status(SqlConnection&)> run) {
        absl::MutexLock lock(&mu_);
        return run(*writer_);
      },
      defers);
}

absl::StatusOr<std::unique_ptr<SqliteStorage::Connection>> SqliteStorage::take_reader(std::size_t open_at_most) {
  if (path_.empty()) return std::unique_ptr<Connection>();
  {
    absl::MutexLock lock(&readers_mu_);
    if (!idle_readers_.empty()) {
      std::unique_ptr<Connection> reader = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return reader;
    }
    if (open_readers_ >= open_at_most) return std::unique_ptr<Connection>();
    ++open_readers_;  // counted from here: given back by return_reader() or below
  }
  absl::StatusOr<std::unique_ptr<Connection>> opened = open_reader();
  if (!opened.ok()) {
    absl::MutexLock lock(&readers_mu_);
    --open_readers_;
  }
  return opened;
}

absl::StatusOr<std::unique_ptr<SqliteStorage::Connection>> SqliteStorage::open_reader() {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  auto reader = std::make_unique<Connection>(db);  // closes `db` whatever happens next
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(
        str_cat("cannot open ", path_, " to read it: ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 10000);
  // The writer's page cache size (SqliteOptions::cache_bytes): a report reads as many pages.
  if (absl::Status s = reader->exec(str_cat("PRAGMA cache_size=", cache_size_, "; PRAGMA temp_store=MEMORY;"));
      !s.ok()) {
    return s;
  }
  return reader;
}

void SqliteStorage::return_reader(std::unique_ptr<Connection> reader) {
  // A reader left in a transaction would pin an old snapshot (and the WAL) for good: closed.
  const bool keep = !reader->in_transaction();
  if (!keep) reader.reset();
  absl::MutexLock lock(&readers_mu_);
  if (keep) {
    idle_readers_.push_back(std::move(reader));
  } else {
    --open_readers_;
  }
}

}  // namespace paygent::server
