// SqliteStorage (see server/sqlite_storage.h).
#include "server/sqlite_storage.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <array>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "meter/internal/json_text.h"
#include "meter/internal/str_cat.h"

namespace paygent::server {
namespace {

using ::paygent::internal::json_quote;
using ::paygent::internal::str_cat;

constexpr std::int64_t kNanosPerDay = 86'400'000'000'000;
// 1: the first release. 2: the events table has a column for every field of the event's field
// table (sync/event_record.h); opening a version 1 database adds the missing ones.
constexpr int kSchemaVersion = 2;

// Every row of a product's data is keyed by the product's integer key (products.pk), not by its
// "prod_..." id, and an event id is stored as its 16 bytes, not as 32 hex digits: the keys of the
// two event indexes are then about 20 bytes instead of 55, so a batch dirties fewer index pages
// (ingest of ids that arrive in random order is ~1.7x faster).
//
// STRICT tables: an INTEGER column refuses a value that is not a lossless integer, which is how a
// total that would overflow int64 (SQLite turns such a sum into a REAL) is refused instead of
// being stored rounded.
const std::string& schema_sql() {
  static const std::string kSchema = std::string(R"sql(
CREATE TABLE IF NOT EXISTS products(
  pk INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  key_sha256 TEXT NOT NULL UNIQUE,
  created_ns INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS users(
  product INTEGER NOT NULL,
  user_id TEXT NOT NULL,
  name TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  PRIMARY KEY(product, user_id)) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions(
  product INTEGER NOT NULL,
  user_id TEXT NOT NULL,
  plan TEXT NOT NULL,
  period_start_ns INTEGER NOT NULL,
  period_end_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  PRIMARY KEY(product, user_id)) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plans(
  product INTEGER PRIMARY KEY,
  config_json TEXT NOT NULL,
  updated_ns INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS events(
  product INTEGER NOT NULL,
  id BLOB NOT NULL,
  )sql") + ::paygent::internal::event_column_definitions() + R"sql(,
  received_ns INTEGER NOT NULL,
  PRIMARY KEY(product, id)) STRICT;
CREATE INDEX IF NOT EXISTS events_by_user_time ON events(product, user_id, ts_ns);
CREATE TABLE IF NOT EXISTS usage_daily(
  product INTEGER NOT NULL,
  user_id TEXT NOT NULL,
  day INTEGER NOT NULL,
  model TEXT NOT NULL,
  calls INTEGER NOT NULL,
  input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cached_input_tokens INTEGER NOT NULL,
  cache_creation_input_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL,
  PRIMARY KEY(product, user_id, day, model)) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_daily_by_day ON usage_daily(product, day, user_id);
CREATE TABLE IF NOT EXISTS product_totals(
  product INTEGER PRIMARY KEY,
  calls INTEGER NOT NULL,
  input_tokens INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cached_input_tokens INTEGER NOT NULL,
  cache_creation_input_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  cost_nanos INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS soft_gates(product INTEGER NOT NULL, user_id TEXT NOT NULL, limit_key TEXT NOT NULL, period_start_ns INTEGER NOT NULL, threshold_ppm INTEGER NOT NULL, PRIMARY KEY(product, user_id, period_start_ns, limit_key, threshold_ppm)) STRICT, WITHOUT ROWID;
)sql";
  return kSchema;
}

// Per connection, in memory: the users of the batch whose usage ingest_with_usage() is reading,
// so that each of its reads is one query joined to this table rather than a few queries per user.
// A table rather than a JSON array of ids (json_each): SQLite's JSON functions cut a string at
// \u0000, which a user id may hold.
constexpr const char* kTempSchema = "CREATE TEMP TABLE batch_users(idx INTEGER PRIMARY KEY, user_id TEXT NOT NULL)";

// The summed columns of one row of usage_daily or of the events, in kTotalsColumns' order.
constexpr std::string_view kRowColumns =
    "input_tokens, output_tokens, cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos";

constexpr std::string_view kTotalsColumns =
    "SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cache_creation_input_tokens), "
    "SUM(reasoning_tokens), SUM(cost_nanos)";

std::int64_t now_ns() { return absl::ToUnixNanos(absl::Now()); }

// An error status for a failed SQLite call: Unavailable for conditions that may pass (busy,
// locked, disk full, I/O), InvalidArgument for a refused datatype (an int64 overflow in a STRICT
// table), Internal for the rest.
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
  return absl::InternalError(message);
}

// a + b into `sum`; false when it overflows int64.
bool add_checked(std::int64_t& sum, std::int64_t b) { return !__builtin_add_overflow(sum, b, &sum); }

// The quantities of one event against a product's all-time totals (see product_totals_locked()),
// in the order an overflow is reported.
struct Quantity {
  std::string_view field;  // the event's field, as the wire names it
  std::int64_t Totals::*total;
  std::int64_t EventRecord::*value;  // nullptr: calls (1 per event)
};
constexpr Quantity kQuantities[] = {
    {"input_tokens", &Totals::input_tokens, &EventRecord::input_tokens},
    {"output_tokens", &Totals::output_tokens, &EventRecord::output_tokens},
    {"cached_input_tokens", &Totals::cached_input_tokens, &EventRecord::cached_input_tokens},
    {"cache_creation_input_tokens", &Totals::cache_creation_input_tokens, &EventRecord::cache_creation_input_tokens},
    {"reasoning_tokens", &Totals::reasoning_tokens, &EventRecord::reasoning_tokens},
    {"cost_nanos", &Totals::cost_nanos, &EventRecord::cost_nanos},
    {"", &Totals::calls, nullptr},
};

// Adds event `e` (events[index] of its batch) into a product's all-time totals. InvalidArgument
// naming the event's field and user when a total would pass int64, with `totals` unchanged.
absl::Status add_to_product_totals(Totals& totals, const EventRecord& e, std::size_t index) {
  Totals sum = totals;
  for (const Quantity& q : kQuantities) {
    if (add_checked(sum.*q.total, q.value != nullptr ? e.*q.value : 1)) continue;
    const bool money = q.total == &Totals::cost_nanos;
    return absl::InvalidArgumentError(str_cat(
        "events[", index, "]", q.field.empty() ? "" : ".", q.field, ": this event of user ", json_quote(e.user_id),
        " would take the product's total ", q.field.empty() ? "calls" : q.field, " past the largest ",
        money ? "amount (9223372036854775807 nano-USD)" : "count (9223372036854775807)",
        "; every total paygentd keeps must fit in 64 bits"));
  }
  totals = sum;
  return absl::OkStatus();
}

bool add_totals(Totals& into, const Totals& t) {
  return add_checked(into.calls, t.calls) && add_checked(into.input_tokens, t.input_tokens) &&
         add_checked(into.output_tokens, t.output_tokens) &&
         add_checked(into.cached_input_tokens, t.cached_input_tokens) &&
         add_checked(into.cache_creation_input_tokens, t.cache_creation_input_tokens) &&
         add_checked(into.reasoning_tokens, t.reasoning_tokens) && add_checked(into.cost_nanos, t.cost_nanos);
}

// floor(a / b) and ceil(a / b) for a >= 0, b > 0, without overflow.
std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b; }
std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// How a usage query over [from_ns, to_ns) (0 <= from_ns < to_ns) is read: the whole days
// [first_day, end_day) from usage_daily (none when first_day == end_day), the partial days at
// either end (`head`, `tail`; empty when from_ns == to_ns) from the events.
struct DaySplit {
  std::int64_t first_day = 0;
  std::int64_t end_day = 0;
  TimeRange head;
  TimeRange tail;
};

DaySplit split_days(std::int64_t from_ns, std::int64_t to_ns) {
  const std::int64_t first_day = ceil_div(from_ns, kNanosPerDay);
  const std::int64_t end_day = floor_div(to_ns, kNanosPerDay);
  if (first_day >= end_day) {
    return {.first_day = 0, .end_day = 0, .head = {from_ns, to_ns}, .tail = {to_ns, to_ns}};
  }
  return {.first_day = first_day,
          .end_day = end_day,
          .head = {from_ns, first_day * kNanosPerDay},
          .tail = {end_day * kNanosPerDay, to_ns}};
}

// The report key of UTC day number `day` (days since 1970-01-01) for kDay or kMonth.
std::string day_key(std::int64_t day, ReportGroup group) {
  const absl::CivilDay civil = absl::CivilDay(1970, 1, 1) + day;
  if (group == ReportGroup::kMonth) return absl::FormatCivilTime(absl::CivilMonth(civil));
  return absl::FormatCivilTime(civil);
}

// The 16 bytes of a 32-lowercase-hex-digit event id; false when `id` is not one.
bool decode_event_id(std::string_view id, std::array<unsigned char, 16>& out) {
  if (id.size() != 32) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < 16; ++i) {
    const int hi = nibble(id[2 * i]);
    const int lo = nibble(id[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

std::string_view sqlite_schema() noexcept { return schema_sql(); }

// A cached prepared statement in use: binds by 1-based index, steps, reads columns, and resets
// itself (bindings cleared) when it goes out of scope, ready for the next use.
class SqliteStorage::Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;
  ~Statement() {
    if (stmt_ != nullptr) reset();
  }

  // Readies the statement for another run with new bindings.
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  Statement& bind(int index, std::string_view text) {
    // SQLITE_STATIC: the caller's text outlives the statement's use (reset at scope end).
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
    return *this;
  }

  Statement& bind_blob(int index, const void* data, std::size_t size) {
    sqlite3_bind_blob(stmt_, index, data, static_cast<int>(size), SQLITE_STATIC);
    return *this;
  }
  // The event's payload columns (sync/event_record.h) from parameter `first` on.
  Statement& bind_event(int first, const EventRecord& e) {
    ::paygent::internal::bind_event_columns(stmt_, first, e);
    return *this;
  }

  // SQLITE_ROW, SQLITE_DONE, or an error code.
  int step() { return sqlite3_step(stmt_); }

  // Runs a statement that returns no rows. OK on SQLITE_DONE.
  absl::Status run(std::string_view what) {
    const int rc = step();
    return rc == SQLITE_DONE ? absl::OkStatus() : sqlite_error(db_, rc, what);
  }

  [[nodiscard]] std::int64_t int64(int column) const { return sqlite3_column_int64(stmt_, column); }
  // The calls count at `first`, then the sums of kTotalsColumns (kRowColumns) after it.
  [[nodiscard]] Totals totals_at(int first) const {
    return Totals{.calls = int64(first),
                  .input_tokens = int64(first + 1),
                  .output_tokens = int64(first + 2),
                  .cached_input_tokens = int64(first + 3),
                  .cache_creation_input_tokens = int64(first + 4),
                  .reasoning_tokens = int64(first + 5),
                  .cost_nanos = int64(first + 6)};
  }
  [[nodiscard]] bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  // Valid until the next step() or reset().
  [[nodiscard]] std::string_view text_view(int column) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return p == nullptr ? std::string_view()
                        : std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  [[nodiscard]] std::string text(int column) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
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
  // and free: ~20% of paygentd's CPU under ingest (perf, bench/ingest_bench.cpp). Only possible before SQLite is first initialised in the
  // process; later (SQLITE_MISUSE) it stays on, which changes nothing but speed.
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
  // journal_mode answers with the mode in force; anything but "wal" (e.g. a file system without
  // shared memory) is refused rather than run without the WAL's guarantees.
  {
    absl::StatusOr<Statement> wal = storage->prepare("PRAGMA journal_mode=WAL");
    if (!wal.ok()) return wal.status();
    if (wal->step() != SQLITE_ROW || wal->text(0) != "wal") {
      return absl::UnavailableError(str_cat("cannot put ", path, " in WAL mode"));
    }
  }
  const std::string pragmas = str_cat(
      "PRAGMA synchronous=", options.synchronous == SqliteOptions::Synchronous::kFull ? "FULL" : "NORMAL",
      "; PRAGMA busy_timeout=10000; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-", options.cache_bytes / 1024,
      // The writer starts the WAL over once it is checkpointed, and then truncates it to this size.
      "; PRAGMA journal_size_limit=", 2 * options.checkpoint_pages * 4096, ";");
  if (absl::Status s = storage->exec(pragmas.c_str()); !s.ok()) return s;

  std::int64_t version = 0;
  {
    absl::StatusOr<Statement> v = storage->prepare("PRAGMA user_version");
    if (!v.ok()) return v.status();
    if (v->step() == SQLITE_ROW) version = v->int64(0);
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        str_cat(path, " has schema version ", version, "; this paygentd knows version ", kSchemaVersion));
  }
  // Creates what is missing; a database of an older version gets the events columns added since.
  absl::Status created = storage->exec(str_cat("BEGIN IMMEDIATE;", schema_sql()).c_str());
  if (created.ok()) created = ::paygent::internal::add_missing_event_columns(storage->db_, "events");
  if (created.ok()) created = storage->exec(str_cat("PRAGMA user_version=", kSchemaVersion, "; COMMIT;").c_str());
  if (!created.ok()) {
    static_cast<void>(storage->exec("ROLLBACK"));
    return created;
  }
  if (absl::Status s = storage->exec(kTempSchema); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Checkpointer>> checkpointer = Checkpointer::start(path, options);
  if (!checkpointer.ok()) return checkpointer.status();
  storage->checkpointer_ = *std::move(checkpointer);
  storage->checkpoint_pages_ = std::max<std::int64_t>(1, options.checkpoint_pages);
  // Replaces SQLite's auto-checkpoint (which would copy the WAL inside a commit).
  sqlite3_wal_hook(storage->db_, &SqliteStorage::on_wal_commit, storage.get());
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

struct SqliteStorage::Reader {
  sqlite3* db = nullptr;
  StatementCache statements;

  Reader() = default;
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  ~Reader() {
    for (auto& [sql, stmt] : statements) sqlite3_finalize(stmt);
    sqlite3_close(db);
  }
};

namespace {

// The file of `db`'s main database; "" for one in memory or temporary.
std::string database_file(sqlite3* db) {
  const char* file = sqlite3_db_filename(db, "main");
  return file != nullptr ? file : "";
}

}  // namespace

SqliteStorage::SqliteStorage(sqlite3* db) : db_(db), path_(database_file(db)) {}

SqliteStorage::~SqliteStorage() {
  {
    // Before the writer's connection, so that it is the last one and checkpoints the WAL.
    absl::MutexLock lock(&readers_mu_);
    idle_readers_.clear();
  }
  absl::MutexLock lock(&mu_);
  sqlite3_wal_hook(db_, nullptr, nullptr);
  checkpointer_.reset();  // before the last connection closes (which checkpoints what is left)
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  statements_.clear();
  sqlite3_close(db_);
}

absl::StatusOr<SqliteStorage::Statement> SqliteStorage::prepare(std::string_view sql) {
  return prepare_in(db_, statements_, sql);
}

absl::StatusOr<SqliteStorage::Statement> SqliteStorage::prepare_in(sqlite3* db, StatementCache& statements,
                                                                   std::string_view sql) {
  auto it = statements.find(absl::string_view(sql.data(), sql.size()));
  if (it == statements.end()) {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                                      nullptr);
    if (rc != SQLITE_OK) return sqlite_error(db, rc, str_cat("prepare \"", sql, "\""));
    it = statements.emplace(std::string(sql), stmt).first;
  }
  return Statement(db, it->second);
}

absl::StatusOr<std::unique_ptr<SqliteStorage::Reader>> SqliteStorage::take_reader() {
  {
    absl::MutexLock lock(&readers_mu_);
    if (!idle_readers_.empty()) {
      std::unique_ptr<Reader> reader = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return reader;
    }
  }
  if (path_.empty()) return std::unique_ptr<Reader>();
  auto reader = std::make_unique<Reader>();
  const int rc = sqlite3_open_v2(path_.c_str(), &reader->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(str_cat("cannot open ", path_, " to read it: ",
                                          reader->db != nullptr ? sqlite3_errmsg(reader->db) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(reader->db, 1);
  sqlite3_busy_timeout(reader->db, 10000);
  // The writer's page cache size (SqliteOptions::cache_bytes): a report reads as many pages.
  std::int64_t cache_size = 0;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Statement> pragma = prepare("PRAGMA cache_size");
    if (!pragma.ok()) return pragma.status();
    if (pragma->step() == SQLITE_ROW) cache_size = pragma->int64(0);
  }
  const std::string pragmas = str_cat("PRAGMA cache_size=", cache_size, "; PRAGMA temp_store=MEMORY;");
  if (const int prc = sqlite3_exec(reader->db, pragmas.c_str(), nullptr, nullptr, nullptr); prc != SQLITE_OK) {
    return sqlite_error(reader->db, prc, "set up reader");
  }
  return reader;
}

void SqliteStorage::return_reader(std::unique_ptr<Reader> reader) {
  absl::MutexLock lock(&readers_mu_);
  idle_readers_.push_back(std::move(reader));
}

absl::Status SqliteStorage::exec(const char* sql) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return absl::OkStatus();
  absl::Status status = sqlite_error(db_, rc, message != nullptr ? message : sql);
  sqlite3_free(message);
  return status;
}

absl::StatusOr<std::optional<std::int64_t>> SqliteStorage::product_key(std::string_view product_id) {
  if (auto it = product_keys_.find(absl::string_view(product_id.data(), product_id.size()));
      it != product_keys_.end()) {
    return std::optional<std::int64_t>(it->second);
  }
  absl::StatusOr<Statement> select = prepare("SELECT pk FROM products WHERE id = ?1");
  if (!select.ok()) return select.status();
  select->bind(1, product_id);
  const int rc = select->step();
  if (rc == SQLITE_DONE) return std::optional<std::int64_t>();
  if (rc != SQLITE_ROW) return sqlite_error(db_, rc, "find product");
  const std::int64_t pk = select->int64(0);
  product_keys_.emplace(std::string(product_id), pk);  // products are never deleted
  return std::optional<std::int64_t>(pk);
}

absl::StatusOr<std::int64_t> SqliteStorage::existing_product_key(std::string_view product_id) {
  absl::StatusOr<std::optional<std::int64_t>> pk = product_key(product_id);
  if (!pk.ok()) return pk.status();
  if (!pk->has_value()) return absl::NotFoundError(str_cat("no product \"", product_id, "\""));
  return **pk;
}

absl::Status SqliteStorage::create_product(std::string_view product_id, std::string_view name,
                                           std::string_view key_sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement> insert =
      prepare("INSERT OR IGNORE INTO products(id, name, key_sha256, created_ns) VALUES(?1, ?2, ?3, ?4)");
  if (!insert.ok()) return insert.status();
  insert->bind(1, product_id).bind(2, name).bind(3, key_sha256).bind(4, now_ns());
  if (absl::Status s = insert->run("create product"); !s.ok()) return s;
  if (sqlite3_changes(db_) == 0) return absl::AlreadyExistsError("the product id or key is already taken");
  return absl::OkStatus();
}

absl::StatusOr<std::string> SqliteStorage::find_product_by_key(std::string_view key_sha256) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Statement> select = prepare("SELECT id FROM products WHERE key_sha256 = ?1");
  if (!select.ok()) return select.status();
  select->bind(1, key_sha256);
  const int rc = select->step();
  if (rc == SQLITE_ROW) return select->text(0);
  if (rc == SQLITE_DONE) return absl::NotFoundError("no product has this key");
  return sqlite_error(db_, rc, "find product");
}

absl::Status SqliteStorage::create_user(std::string_view product_id, std::string_view user_id,
                                        std::string_view name) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::int64_t> product = existing_product_key(product_id);
  if (!product.ok()) return product.status();
  absl::StatusOr<Statement> insert =
      prepare("INSERT OR IGNORE INTO users(product, user_id, name, created_ns) VALUES(?1, ?2, ?3, ?4)");
  if (!insert.ok()) return insert.status();
  insert->bind(1, *product).bind(2, user_id).bind(3, name).bind(4, now_ns());
  if (absl::Status s = insert->run("create user"); !s.ok()) return s;
  if (sqlite3_changes(db_) == 0) return absl::AlreadyExistsError(str_cat("user \"", user_id, "\" already exists"));
  return absl::OkStatus();
}

absl::StatusOr<UserRecord> SqliteStorage::find_user(std::string_view product_id, std::string_view user_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<std::int64_t>> product = product_key(product_id);
  if (!product.ok()) return product.status();
  const absl::Status not_found = absl::NotFoundError(str_cat("no user \"", user_id, "\""));
  if (!product->has_value()) return not_found;
  absl::StatusOr<std::optional<UserRecord>> user = find_user_locked(**product, user_id);
  if (!user.ok()) return user.status();
  if (!user->has_value()) return not_found;
  return **std::move(user);
}

absl::StatusOr<std::optional<UserRecord>> SqliteStorage::find_user_locked(std::int64_t product,
                                                                          std::string_view user_id) {
  absl::StatusOr<Statement> select = prepare(
      "SELECT u.name, s.plan, s.period_start_ns, s.period_end_ns FROM users u LEFT JOIN subscriptions s "
      "ON s.product = u.product AND s.user_id = u.user_id WHERE u.product = ?1 AND u.user_id = ?2");
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(2, user_id);
  const int rc = select->step();
  if (rc == SQLITE_DONE) return std::optional<UserRecord>();
  if (rc != SQLITE_ROW) return sqlite_error(db_, rc, "find user");
  UserRecord user{.user_id = std::string(user_id), .name = select->text(0)};
  if (!select->is_null(1)) {
    user.subscription = Subscription{.plan = select->text(1),
                                     .period_start_ns = select->int64(2),
                                     .period_end_ns = select->int64(3)};
  }
  return std::optional<UserRecord>(std::move(user));
}

absl::Status SqliteStorage::set_subscription(std::string_view product_id, std::string_view user_id,
                                             const Subscription& subscription) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::int64_t> product = existing_product_key(product_id);
  if (!product.ok()) return product.status();
  // One statement, so that the user check and the write are atomic without a transaction.
  absl::StatusOr<Statement> upsert = prepare(
      "INSERT INTO subscriptions(product, user_id, plan, period_start_ns, period_end_ns, updated_ns) "
      "SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE product = ?1 AND user_id = ?2) "
      "ON CONFLICT(product, user_id) DO UPDATE SET plan = excluded.plan, "
      "period_start_ns = excluded.period_start_ns, period_end_ns = excluded.period_end_ns, "
      "updated_ns = excluded.updated_ns");
  if (!upsert.ok()) return upsert.status();
  upsert->bind(1, *product)
      .bind(2, user_id)
      .bind(3, subscription.plan)
      .bind(4, subscription.period_start_ns)
      .bind(5, subscription.period_end_ns)
      .bind(6, now_ns());
  if (absl::Status s = upsert->run("set subscription"); !s.ok()) return s;
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(str_cat("no user \"", user_id, "\""));
  return absl::OkStatus();
}

absl::Status SqliteStorage::put_plan_config(std::string_view product_id, std::string_view config_json) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::int64_t> product = existing_product_key(product_id);
  if (!product.ok()) return product.status();
  absl::StatusOr<Statement> upsert = prepare(
      "INSERT INTO plans(product, config_json, updated_ns) VALUES(?1, ?2, ?3) "
      "ON CONFLICT(product) DO UPDATE SET config_json = excluded.config_json, "
      // updated_ns is the config's revision (plan_config_revision()): it must grow at every put,
      // even one in the same nanosecond as the last, or made by a process whose clock is behind.
      "updated_ns = MAX(excluded.updated_ns, plans.updated_ns + 1)");
  if (!upsert.ok()) return upsert.status();
  upsert->bind(1, *product).bind(2, config_json).bind(3, std::max<std::int64_t>(1, now_ns()));
  return upsert->run("put plans");
}

absl::StatusOr<std::int64_t> SqliteStorage::plan_config_revision(std::string_view product_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<std::int64_t>> product = product_key(product_id);
  if (!product.ok()) return product.status();
  if (!product->has_value()) return 0;
  absl::StatusOr<Statement> select = prepare("SELECT updated_ns FROM plans WHERE product = ?1");
  if (!select.ok()) return select.status();
  select->bind(1, **product);
  const int rc = select->step();
  if (rc == SQLITE_ROW) return select->int64(0);
  if (rc == SQLITE_DONE) return 0;
  return sqlite_error(db_, rc, "read plans revision");
}

absl::StatusOr<std::optional<std::string>> SqliteStorage::plan_config(std::string_view product_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<std::int64_t>> product = product_key(product_id);
  if (!product.ok()) return product.status();
  if (!product->has_value()) return std::optional<std::string>();
  absl::StatusOr<Statement> select = prepare("SELECT config_json FROM plans WHERE product = ?1");
  if (!select.ok()) return select.status();
  select->bind(1, **product);
  const int rc = select->step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(select->text(0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return sqlite_error(db_, rc, "read plans");
}

absl::StatusOr<IngestResult> SqliteStorage::ingest(std::string_view product_id, std::span<const EventRecord> events) {
  return ingest_impl(product_id, events, nullptr);
}

absl::StatusOr<IngestResult> SqliteStorage::ingest_with_usage(std::string_view product_id,
                                                              std::span<const EventRecord> events, PeriodOf period_of,
                                                              std::span<const SoftGateFired> soft_gates) {
  return ingest_impl(product_id, events, &period_of, soft_gates);
}

absl::StatusOr<IngestResult> SqliteStorage::ingest_impl(std::string_view product_id,
                                                        std::span<const EventRecord> events,
                                                        const PeriodOf* period_of,
                                                        std::span<const SoftGateFired> soft_gates) {
  // The ids' bytes, decoded before taking the lock.
  std::vector<std::array<unsigned char, 16>> ids(events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (!decode_event_id(events[i].id, ids[i])) {
      return absl::InvalidArgumentError(str_cat("events[", i, "].id: must be 32 lowercase hex digits"));
    }
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::int64_t> product = existing_product_key(product_id);
  if (!product.ok()) return product.status();
  if (absl::Status s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::StatusOr<IngestResult> result = ingest_locked(*product, events, ids, period_of, soft_gates);
  if (result.ok()) {
    if (absl::Status s = exec("COMMIT"); !s.ok()) result = s;
  }
  // A failed COMMIT leaves the transaction open (e.g. SQLITE_BUSY): roll it back so that nothing
  // of the batch stays.
  if (!result.ok() && !sqlite3_get_autocommit(db_)) static_cast<void>(exec("ROLLBACK"));
  return result;
}

absl::StatusOr<IngestResult> SqliteStorage::ingest_locked(std::int64_t product, std::span<const EventRecord> events,
                                                          std::span<const std::array<unsigned char, 16>> ids,
                                                          const PeriodOf* period_of,
                                                          std::span<const SoftGateFired> soft_gates) {
  const std::int64_t received_ns = now_ns();
  absl::StatusOr<Statement> insert_user =
      prepare("INSERT OR IGNORE INTO users(product, user_id, name, created_ns) VALUES(?1, ?2, '', ?3)");
  if (!insert_user.ok()) return insert_user.status();
  absl::flat_hash_set<absl::string_view> users;
  auto create_user = [&](const std::string& user_id) -> absl::Status {
    if (!users.insert(absl::string_view(user_id.data(), user_id.size())).second) return absl::OkStatus();
    insert_user->bind(1, product).bind(2, user_id).bind(3, received_ns);
    absl::Status s = insert_user->run("create user");
    insert_user->reset();
    return s;
  };
  for (const EventRecord& e : events) {
    if (absl::Status s = create_user(e.user_id); !s.ok()) return s;
  }
  for (const SoftGateFired& g : soft_gates) {
    if (absl::Status s = create_user(g.user_id); !s.ok()) return s;
  }
  if (absl::Status s = store_soft_gates_locked(product, soft_gates); !s.ok()) return s;

  static const std::string kInsertEvent =
      str_cat("INSERT OR IGNORE INTO events(product, id, received_ns, ", ::paygent::internal::event_columns(),
              ") VALUES(?1, ?2, ?3, ", ::paygent::internal::event_placeholders(4), ")");
  absl::StatusOr<Statement> insert_event = prepare(kInsertEvent);
  if (!insert_event.ok()) return insert_event.status();
  // Sums of the accepted events per (user, day, model), added to usage_daily after the inserts.
  std::map<std::tuple<std::string_view, std::int64_t, std::string_view>, Totals> daily;
  // The product's all-time totals, which bound every sum a read computes over its events.
  absl::StatusOr<Totals> product_totals = product_totals_locked(product);
  if (!product_totals.ok()) return product_totals.status();
  IngestResult result;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const EventRecord& e = events[i];
    insert_event->bind(1, product).bind_blob(2, ids[i].data(), ids[i].size()).bind(3, received_ns).bind_event(4, e);
    if (absl::Status s = insert_event->run("insert event"); !s.ok()) return s;
    const bool stored = sqlite3_changes(db_) == 1;
    insert_event->reset();
    if (!stored) {
      ++result.duplicates;
      continue;
    }
    ++result.accepted;
    if (absl::Status s = add_to_product_totals(*product_totals, e, i); !s.ok()) return s;
    const Totals one{.calls = 1,
                     .input_tokens = e.input_tokens,
                     .output_tokens = e.output_tokens,
                     .cached_input_tokens = e.cached_input_tokens,
                     .cache_creation_input_tokens = e.cache_creation_input_tokens,
                     .reasoning_tokens = e.reasoning_tokens,
                     .cost_nanos = e.cost_nanos};
    if (!add_totals(daily[{e.user_id, floor_div(e.ts_ns, kNanosPerDay), e.model}], one)) {
      return absl::InvalidArgumentError("the batch would overflow a 64-bit total (tokens or cost_nanos)");
    }
  }

  absl::StatusOr<Statement> upsert = prepare(
      "INSERT INTO usage_daily(product, user_id, day, model, calls, input_tokens, output_tokens, "
      "cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
      "ON CONFLICT(product, user_id, day, model) DO UPDATE SET calls = calls + excluded.calls, "
      "input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens, "
      "cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens, "
      "cache_creation_input_tokens = cache_creation_input_tokens + excluded.cache_creation_input_tokens, "
      "reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, "
      "cost_nanos = cost_nanos + excluded.cost_nanos");
  if (!upsert.ok()) return upsert.status();
  for (const auto& [key, t] : daily) {
    const auto& [user, day, model] = key;
    upsert->bind(1, product)
        .bind(2, user)
        .bind(3, day)
        .bind(4, model)
        .bind(5, t.calls)
        .bind(6, t.input_tokens)
        .bind(7, t.output_tokens)
        .bind(8, t.cached_input_tokens)
        .bind(9, t.cache_creation_input_tokens)
        .bind(10, t.reasoning_tokens)
        .bind(11, t.cost_nanos);
    if (absl::Status s = upsert->run("add daily usage"); !s.ok()) return s;
    upsert->reset();
  }
  if (result.accepted > 0) {
    absl::StatusOr<Statement> put_totals = prepare(
        "INSERT OR REPLACE INTO product_totals(product, calls, input_tokens, output_tokens, cached_input_tokens, "
        "cache_creation_input_tokens, reasoning_tokens, cost_nanos) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (!put_totals.ok()) return put_totals.status();
    const Totals& t = *product_totals;
    put_totals->bind(1, product)
        .bind(2, t.calls)
        .bind(3, t.input_tokens)
        .bind(4, t.output_tokens)
        .bind(5, t.cached_input_tokens)
        .bind(6, t.cache_creation_input_tokens)
        .bind(7, t.reasoning_tokens)
        .bind(8, t.cost_nanos);
    if (absl::Status s = put_totals->run("add product totals"); !s.ok()) return s;
  }
  if (period_of == nullptr) return result;

  // The batch's users and their totals, read in this transaction: no read transaction (and its
  // file locks) of its own per query.
  std::vector<std::string_view> sorted;
  sorted.reserve(users.size());
  for (absl::string_view user_id : users) sorted.emplace_back(user_id.data(), user_id.size());
  std::sort(sorted.begin(), sorted.end());
  if (absl::Status s = read_usage_locked(product, sorted, *period_of, result.usage); !s.ok()) return s;
  return result;
}

// The product's row of product_totals. A product without one (its events were stored by a
// paygentd from before that table) gets the sums of its usage_daily rows, summed here with
// checked arithmetic: SQL's SUM() would fail on a history that already passes int64, which then
// saturates at the largest value (so that nothing more can be added, and every read that can
// still answer does).
absl::StatusOr<Totals> SqliteStorage::product_totals_locked(std::int64_t product) {
  {
    absl::StatusOr<Statement> select = prepare(str_cat("SELECT calls, ", kRowColumns, " FROM product_totals WHERE product = ?1"));
    if (!select.ok()) return select.status();
    select->bind(1, product);
    const int rc = select->step();
    if (rc == SQLITE_ROW) return select->totals_at(0);
    if (rc != SQLITE_DONE) return sqlite_error(db_, rc, "read product totals");
  }
  absl::StatusOr<Statement> select = prepare(str_cat("SELECT calls, ", kRowColumns, " FROM usage_daily WHERE product = ?1"));
  if (!select.ok()) return select.status();
  select->bind(1, product);
  Totals totals;
  for (;;) {
    const int rc = select->step();
    if (rc == SQLITE_DONE) return totals;
    if (rc != SQLITE_ROW) return sqlite_error(db_, rc, "sum product totals");
    const Totals row = select->totals_at(0);
    for (const Quantity& q : kQuantities) {
      if (!add_checked(totals.*q.total, row.*q.total)) totals.*q.total = INT64_MAX;
    }
  }
}

// Reads what find_user() and report() (by model, over the user's period) would give, for the
// batch's users at once: a batch has ~100 users, and the two or three queries per user that
// report() makes cost more than storing the batch. The users go into batch_users (idx: their index
// in `user_ids` and `out`); one query reads them all with their subscriptions. Users without a
// subscription share one period (the calendar month): for that period, one query reads all their
// whole days from usage_daily, and one for each partial day at its ends their events. A user whose
// period differs (a subscription's) is read by report_locked() on their own.
//
// The rows are summed here rather than by GROUP BY: SQLite would first sort them by model (in
// neither index's order), which costs more than the sums (~40% of the read, per callgrind).
absl::Status SqliteStorage::read_usage_locked(std::int64_t product, std::span<const std::string_view> user_ids,
                                              PeriodOf period_of, std::vector<UserUsage>& out) {
  if (user_ids.empty()) return absl::OkStatus();
  {
    // Emptied before use rather than after: a failed batch's rows are gone with its rollback anyway.
    absl::StatusOr<Statement> clear = prepare("DELETE FROM temp.batch_users");
    if (!clear.ok()) return clear.status();
    if (absl::Status s = clear->run("clear batch users"); !s.ok()) return s;
  }
  {
    absl::StatusOr<Statement> insert = prepare("INSERT INTO temp.batch_users(idx, user_id) VALUES(?1, ?2)");
    if (!insert.ok()) return insert.status();
    for (std::size_t i = 0; i < user_ids.size(); ++i) {
      insert->bind(1, static_cast<std::int64_t>(i)).bind(2, user_ids[i]);
      if (absl::Status s = insert->run("list batch users"); !s.ok()) return s;
      insert->reset();
    }
  }

  // CROSS JOIN keeps batch_users the outer loop (SQLite has no statistics to tell it is small):
  // every other table is then searched by its primary key or index.
  out.reserve(user_ids.size());
  {
    absl::StatusOr<Statement> select = prepare(
        "SELECT b.idx, u.name, s.plan, s.period_start_ns, s.period_end_ns FROM temp.batch_users b "
        "CROSS JOIN users u ON u.product = ?1 AND u.user_id = b.user_id "
        "LEFT JOIN subscriptions s ON s.product = ?1 AND s.user_id = b.user_id ORDER BY b.idx");
    if (!select.ok()) return select.status();
    select->bind(1, product);
    for (;;) {
      const int rc = select->step();
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return sqlite_error(db_, rc, "find users");
      // A user missing here (each was created or found by this transaction) is one skipped idx.
      if (select->int64(0) != static_cast<std::int64_t>(out.size())) break;
      UserRecord user{.user_id = std::string(user_ids[out.size()]), .name = select->text(1)};
      if (!select->is_null(2)) {
        user.subscription = Subscription{.plan = select->text(2),
                                         .period_start_ns = select->int64(3),
                                         .period_end_ns = select->int64(4)};
      }
      out.push_back(UserUsage{.user = std::move(user)});
    }
    if (out.size() != user_ids.size()) {
      return absl::InternalError(str_cat("ingest: user \"", user_ids[out.size()], "\" not found after creation"));
    }
  }

  // The period most users have.
  std::map<std::pair<std::int64_t, std::int64_t>, std::size_t> users_by_period;
  for (UserUsage& usage : out) {
    usage.period = period_of(usage.user);
    ++users_by_period[{usage.period.from_ns, usage.period.to_ns}];
  }
  const auto most = std::max_element(users_by_period.begin(), users_by_period.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; });
  const TimeRange shared{.from_ns = most->first.first, .to_ns = most->first.second};

  if (shared.from_ns < shared.to_ns && shared.from_ns >= 0) {
    // As report_locked() splits a period. Every batch user's rows are read; those of users with
    // another period are skipped.
    static const std::string* const kDailySql = new std::string(str_cat(
        "SELECT b.idx, d.model, d.calls, ", kRowColumns, " FROM temp.batch_users b ",
        "CROSS JOIN usage_daily d ON d.product = ?1 AND d.user_id = b.user_id AND d.day >= ?2 AND d.day < ?3"));
    static const std::string* const kEventsSql = new std::string(str_cat(
        "SELECT b.idx, e.model, 1, ", kRowColumns, " FROM temp.batch_users b ",
        "CROSS JOIN events e ON e.product = ?1 AND e.user_id = b.user_id AND e.ts_ns >= ?2 AND e.ts_ns < ?3"));
    const DaySplit split = split_days(shared.from_ns, shared.to_ns);
    const std::tuple<const std::string*, std::int64_t, std::int64_t> reads[] = {
        {kDailySql, split.first_day, split.end_day},
        {kEventsSql, split.head.from_ns, split.head.to_ns},
        {kEventsSql, split.tail.from_ns, split.tail.to_ns}};
    for (const auto& [sql, from, to] : reads) {
      if (from >= to) continue;
      absl::StatusOr<Statement> select = prepare(*sql);
      if (!select.ok()) return select.status();
      select->bind(1, product).bind(2, from).bind(3, to);
      if (absl::Status s = add_usage_rows(*select, shared, out); !s.ok()) return s;
    }
  }
  for (UserUsage& usage : out) {
    if (usage.period == shared) continue;
    const ReportQuery query{.from_ns = usage.period.from_ns,
                            .to_ns = usage.period.to_ns,
                            .group_by = ReportGroup::kModel,
                            .user_id = usage.user.user_id};
    if (absl::Status s = report_locked(product, query, usage.models); !s.ok()) return s;
  }
  for (UserUsage& usage : out) {
    if (absl::Status s = read_soft_gates_locked(product, usage.user.user_id, usage.period, usage.soft_gates); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteStorage::store_soft_gates_locked(std::int64_t product, std::span<const SoftGateFired> soft_gates) {
  if (soft_gates.empty()) return absl::OkStatus();
  absl::StatusOr<Statement> insert = prepare(
      "INSERT OR IGNORE INTO soft_gates(product, user_id, limit_key, period_start_ns, threshold_ppm) "
      "VALUES(?1, ?2, ?3, ?4, ?5)");
  if (!insert.ok()) return insert.status();
  for (const SoftGateFired& g : soft_gates) {
    insert->bind(1, product).bind(2, g.user_id).bind(3, g.limit_key).bind(4, g.period_start_ns).bind(5, g.threshold_ppm);
    if (absl::Status s = insert->run("store soft gate"); !s.ok()) return s;
    insert->reset();
  }
  return absl::OkStatus();
}

absl::Status SqliteStorage::read_soft_gates_locked(std::int64_t product, std::string_view user_id, TimeRange period,
                                                   std::vector<SoftGateFired>& out) {
  absl::StatusOr<Statement> select = prepare(
      "SELECT limit_key, period_start_ns, threshold_ppm FROM soft_gates "
      "WHERE product = ?1 AND user_id = ?2 AND period_start_ns >= ?3 AND period_start_ns < ?4 "
      "ORDER BY substr(limit_key, 1, 14) = 'session_spend:', period_start_ns DESC, limit_key, threshold_ppm "
      "LIMIT ?5");
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(2, user_id).bind(3, period.from_ns).bind(4, period.to_ns)
      .bind(5, static_cast<std::int64_t>(kMaxUsageSoftGates));
  for (;;) {
    const int rc = select->step();
    if (rc == SQLITE_DONE) return absl::OkStatus();
    if (rc != SQLITE_ROW) return sqlite_error(db_, rc, "read soft gates");
    out.push_back(SoftGateFired{std::string(user_id), select->text(0), select->int64(1), select->int64(2)});
  }
}

absl::StatusOr<std::vector<SoftGateFired>> SqliteStorage::soft_gates_fired(std::string_view product_id,
                                                                           std::string_view user_id, TimeRange period) {
  std::vector<SoftGateFired> out;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<std::int64_t>> product = product_key(product_id);
  if (!product.ok()) return product.status();
  if (!product->has_value()) return out;
  if (absl::Status s = read_soft_gates_locked(**product, user_id, period, out); !s.ok()) return s;
  return out;
}

absl::Status SqliteStorage::add_usage_rows(Statement& select, const TimeRange& period, std::vector<UserUsage>& out) {
  for (;;) {
    const int rc = select.step();
    if (rc == SQLITE_DONE) return absl::OkStatus();
    if (rc != SQLITE_ROW) return sqlite_error(db_, rc, "read usage");
    const std::int64_t idx = select.int64(0);
    if (idx < 0 || idx >= static_cast<std::int64_t>(out.size())) {
      return absl::InternalError("read usage: bad user index");
    }
    UserUsage& usage = out[static_cast<std::size_t>(idx)];
    if (usage.period != period) continue;
    const std::string_view model = select.text_view(1);
    auto it = usage.models.find(model);
    if (it == usage.models.end()) it = usage.models.emplace(std::string(model), Totals{}).first;
    if (!add_totals(it->second, select.totals_at(2))) {
      return absl::InternalError(str_cat("report: the totals of \"", model, "\" overflow int64"));
    }
  }
}

absl::StatusOr<std::vector<UserUsage>> SqliteStorage::usage_of(std::string_view product_id,
                                                               std::span<const std::string> user_ids,
                                                               PeriodOf period_of) {
  std::vector<UserUsage> out;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<std::int64_t>> product = product_key(product_id);
  if (!product.ok()) return product.status();
  if (!product->has_value()) return out;
  // One read transaction: every user's record and totals as of one moment.
  if (absl::Status s = exec("BEGIN"); !s.ok()) return s;
  absl::Status status = [&]() -> absl::Status {
    std::vector<std::string_view> sorted(user_ids.begin(), user_ids.end());
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    // read_usage_locked() reads users that exist: the product's among them first.
    absl::StatusOr<Statement> exists = prepare("SELECT 1 FROM users WHERE product = ?1 AND user_id = ?2");
    if (!exists.ok()) return exists.status();
    std::vector<std::string_view> known;
    for (std::string_view id : sorted) {
      exists->bind(1, **product).bind(2, id);
      const int rc = exists->step();
      if (rc == SQLITE_ROW) {
        known.push_back(id);
      } else if (rc != SQLITE_DONE) {
        return sqlite_error(db_, rc, "find users");
      }
      exists->reset();
    }
    return read_usage_locked(**product, known, period_of, out);
  }();
  const absl::Status end = exec(status.ok() ? "COMMIT" : "ROLLBACK");
  if (!status.ok()) return status;
  if (!end.ok()) return end;
  return out;
}

absl::StatusOr<GroupedTotals> SqliteStorage::report(std::string_view product_id, const ReportQuery& query) {
  GroupedTotals out;
  std::int64_t product = 0;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::optional<std::int64_t>> key = product_key(product_id);
    if (!key.ok()) return key.status();
    if (!key->has_value()) return out;
    product = **key;
  }
  absl::StatusOr<std::unique_ptr<Reader>> reader = take_reader();
  if (!reader.ok()) return reader.status();
  if (*reader == nullptr) {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = report_locked(product, query, out); !s.ok()) return s;
    return out;
  }
  // One read transaction: the days and the edges of the range as of one commit.
  Reader& r = **reader;
  int rc = sqlite3_exec(r.db, "BEGIN", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(r.db, rc, "begin report");
  absl::Status status = report_in(r.db, r.statements, product, query, out);
  rc = sqlite3_exec(r.db, status.ok() ? "COMMIT" : "ROLLBACK", nullptr, nullptr, nullptr);
  if (status.ok() && rc != SQLITE_OK) status = sqlite_error(r.db, rc, "end report");
  // A reader left in a transaction would pin an old snapshot (and the WAL) for good: dropped.
  if (sqlite3_get_autocommit(r.db)) return_reader(*std::move(reader));
  if (!status.ok()) return status;
  return out;
}

absl::Status SqliteStorage::report_locked(std::int64_t product, const ReportQuery& query, GroupedTotals& out) {
  return report_in(db_, statements_, product, query, out);
}

absl::Status SqliteStorage::report_in(sqlite3* db, StatementCache& statements, std::int64_t product,
                                      const ReportQuery& query, GroupedTotals& out) {
  if (query.from_ns >= query.to_ns || query.from_ns < 0) return absl::OkStatus();
  // Whole days come from usage_daily; the partial days at either end from the events. Sessions are
  // not in usage_daily: they always come from the events.
  if (query.group_by == ReportGroup::kSession) {
    return add_events(db, statements, product, query, query.from_ns, query.to_ns, out);
  }
  const DaySplit split = split_days(query.from_ns, query.to_ns);
  if (split.first_day < split.end_day) {
    if (absl::Status s = add_daily(db, statements, product, query, split.first_day, split.end_day, out); !s.ok()) {
      return s;
    }
  }
  for (const TimeRange& r : {split.head, split.tail}) {
    if (r.from_ns >= r.to_ns) continue;
    if (absl::Status s = add_events(db, statements, product, query, r.from_ns, r.to_ns, out); !s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {

// Reads the rows of a grouped totals query (group key, calls, then kTotalsColumns) into `out`.
template <class Statement>
absl::Status read_groups(sqlite3* db, Statement& select, ReportGroup group, GroupedTotals& out) {
  for (;;) {
    const int rc = select.step();
    if (rc == SQLITE_DONE) return absl::OkStatus();
    if (rc != SQLITE_ROW) return sqlite_error(db, rc, "report");
    const bool by_day = group == ReportGroup::kDay || group == ReportGroup::kMonth;
    const std::string key = by_day ? day_key(select.int64(0), group) : select.text(0);
    if (!add_totals(out[key], select.totals_at(1))) return absl::InternalError(str_cat("report: the totals of \"", key, "\" overflow int64"));
  }
}

std::string_view group_column(ReportGroup group, bool daily) {
  switch (group) {
    case ReportGroup::kUser: return "user_id";
    case ReportGroup::kModel: return "model";
    case ReportGroup::kSession: return "session_id";
    case ReportGroup::kDay:
    case ReportGroup::kMonth: break;
  }
  return daily ? "day" : "ts_ns / 86400000000000";
}

// The SQL of a grouped totals query (group key, calls, then kTotalsColumns), over usage_daily
// (`daily`: ?3 <= day < ?4) or over the events (?3 <= ts_ns < ?4), of product ?1 and, when
// `by_user`, user ?2. Built once per shape.
const std::string& report_sql(ReportGroup group, bool by_user, bool daily) {
  static const std::array<std::string, 20>* const kSql = [] {
    auto* sql = new std::array<std::string, 20>;
    for (int g = 0; g < 5; ++g) {
      for (int u = 0; u < 2; ++u) {
        const auto rg = static_cast<ReportGroup>(g);
        (*sql)[g * 4 + u * 2 + 1] =
            str_cat("SELECT ", group_column(rg, true), ", SUM(calls), ", kTotalsColumns,
                    " FROM usage_daily WHERE product = ?1 AND ", u ? "user_id = ?2 AND " : "",
                    "day >= ?3 AND day < ?4 GROUP BY 1");
        // Without a user, the users with events in the range are those with usage_daily rows on
        // its days (written in the same transaction as the events): the index on (product,
        // user_id, ts_ns) is then used user by user instead of scanning the product's events.
        (*sql)[g * 4 + u * 2] = str_cat(
            "SELECT ", group_column(rg, false), ", COUNT(*), ", kTotalsColumns, " FROM events WHERE product = ?1 AND ",
            u ? "user_id = ?2"
              : "user_id IN (SELECT DISTINCT user_id FROM usage_daily WHERE product = ?1 AND day >= ?5 AND day < ?6)",
            " AND ts_ns >= ?3 AND ts_ns < ?4 GROUP BY 1");
      }
    }
    return sql;
  }();
  return (*kSql)[static_cast<int>(group) * 4 + (by_user ? 2 : 0) + (daily ? 1 : 0)];
}

}  // namespace

absl::Status SqliteStorage::add_daily(sqlite3* db, StatementCache& statements, std::int64_t product,
                                      const ReportQuery& query, std::int64_t first_day, std::int64_t end_day,
                                      GroupedTotals& out) {
  absl::StatusOr<Statement> select = prepare_in(db, statements, report_sql(query.group_by, query.user_id.has_value(), true));
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(3, first_day).bind(4, end_day);
  if (query.user_id) select->bind(2, *query.user_id);
  return read_groups(db, *select, query.group_by, out);
}

absl::Status SqliteStorage::add_events(sqlite3* db, StatementCache& statements, std::int64_t product,
                                       const ReportQuery& query, std::int64_t from_ns, std::int64_t to_ns,
                                       GroupedTotals& out) {
  absl::StatusOr<Statement> select =
      prepare_in(db, statements, report_sql(query.group_by, query.user_id.has_value(), false));
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(3, from_ns).bind(4, to_ns);
  if (query.user_id) {
    select->bind(2, *query.user_id);
  } else {
    select->bind(5, floor_div(from_ns, kNanosPerDay)).bind(6, ceil_div(to_ns, kNanosPerDay));
  }
  return read_groups(db, *select, query.group_by, out);
}

}  // namespace paygent::server
