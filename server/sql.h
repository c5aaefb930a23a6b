// The narrow SQL interface that SqlStorage (server/sql_storage.h) runs its one set of queries
// through, and the dialect that holds what truly differs between SQLite and PostgreSQL.
//
// SQL is written once, with SQLite's numbered placeholders (?1, ?2, ...); a connection that speaks
// another syntax translates them when it prepares a statement (PostgreSQL: $1, $2, ...). Beyond
// placeholders, what differs lives in SqlDialect: how a transaction starts, the scalar maximum,
// row locks, how a list of users is passed to a query, the per-user locks of a write, how many
// event rows one INSERT carries, and the column types of the one schema template (sql_schema()).
//
// Thread safety: a SqlConnection and its statements are used by one thread at a time (the
// storage hands a connection to one call at a time); a SqlDialect is immutable.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/storage.h"

namespace paygent::server {

// A prepared statement of one connection. Bound values are kept until reset() or the next
// binding; text and blobs are not copied by every implementation: the caller's bytes must stay
// valid until the statement's last step() before reset().
class SqlStatement {
 public:
  virtual ~SqlStatement() = default;
  virtual void bind_int64(int index, std::int64_t value) = 0;
  virtual void bind_text(int index, std::string_view text) = 0;
  virtual void bind_blob(int index, std::span<const unsigned char> bytes) = 0;
  // Runs the statement (at the first call after reset()) and moves to the next row: true when
  // there is one, false when there are no more. `what` names the operation in an error. Errors:
  // Unavailable (the database is busy, unreachable or out of space: may pass), Aborted (a
  // serialization failure or deadlock: the transaction may be retried), AlreadyExists (a unique
  // constraint), InvalidArgument (an integer overflow), Internal (the rest).
  virtual absl::StatusOr<bool> step(std::string_view what) = 0;
  // The current row's columns (0-based). Text and blobs are valid until the next step() or reset().
  [[nodiscard]] virtual std::int64_t int64(int column) const = 0;
  [[nodiscard]] virtual std::string_view text(int column) const = 0;
  [[nodiscard]] virtual std::string blob(int column) const = 0;
  [[nodiscard]] virtual bool is_null(int column) const = 0;
  // Rows changed by the last run of an INSERT, UPDATE or DELETE.
  [[nodiscard]] virtual std::int64_t changes() const = 0;
  // Readies the statement for another run: bindings cleared, result dropped.
  virtual void reset() = 0;
};

class SqlConnection;

// Writes that a transaction's body leaves for its end: sums that many bodies of one group commit
// add to the same rows (SqlStorage's rollups), written once for the whole group rather than once
// per body; and reads that must follow them (SqlStorage's ingest replies), made once for all.
// Held by the connection (SqlConnection::deferred()); run_in_transaction() and GroupCommit
// discard it when a transaction begins or is rolled back, and flush it before the COMMIT and
// before any body that did not ask for deferral (which would otherwise read rows
// without the sums still held here). A body that defers writes must see them in its own reads,
// and may add to them only once it can no longer fail (its savepoint's rollback would not take
// them back).
class DeferredWrites {
 public:
  virtual ~DeferredWrites() = default;
  // Writes what is held on `connection` (in its open transaction) and forgets it, whether or
  // not the writes succeed (a failed flush fails the transaction).
  virtual absl::Status flush(SqlConnection& connection) = 0;
  virtual void discard() noexcept = 0;
  [[nodiscard]] virtual bool empty() const noexcept = 0;
};

// One database connection, held by one call at a time.
class SqlConnection {
 public:
  virtual ~SqlConnection() = default;
  // The writes deferred to the end of the open transaction (nullptr until one is set).
  [[nodiscard]] DeferredWrites* deferred() const noexcept { return deferred_.get(); }
  void set_deferred(std::unique_ptr<DeferredWrites> deferred) noexcept { deferred_ = std::move(deferred); }
  // Writes what is deferred (nothing when nothing is): see DeferredWrites.
  absl::Status flush_deferred() {
    return deferred_ != nullptr && !deferred_->empty() ? deferred_->flush(*this) : absl::OkStatus();
  }
  void discard_deferred() noexcept {
    if (deferred_ != nullptr) deferred_->discard();
  }
  // The statement for `sql` (?N placeholders), prepared on first use and kept by the connection.
  virtual absl::StatusOr<SqlStatement*> prepare(std::string_view sql) = 0;
  // The statement for a read whose rows are many and read in order (a report's whole range, no
  // LIMIT pages): PostgreSQL runs it through a cursor, `fetch_rows` rows at a time, each page asked
  // for while the caller reads the one before, in binary; SQLite steps it as any statement (this
  // default). Kept by the connection like prepare()'s; its Query must be reset (destroyed) before
  // the transaction ends.
  virtual absl::StatusOr<SqlStatement*> prepare_stream(std::string_view sql, int fetch_rows) {
    static_cast<void>(fetch_rows);
    return prepare(sql);
  }
  // Runs statements without parameters or rows (e.g. "BEGIN", a schema).
  virtual absl::Status exec(std::string_view sql) = 0;
  // True while a transaction is open (also a failed one that still needs its ROLLBACK).
  [[nodiscard]] virtual bool in_transaction() = 0;

 private:
  std::unique_ptr<DeferredWrites> deferred_;
};

// A statement in use: binds fluently, steps, reads, and resets the statement when it goes out
// of scope, ready for its next use.
class Query {
 public:
  explicit Query(SqlStatement* statement) : statement_(statement) {}
  Query(Query&& other) noexcept : statement_(std::exchange(other.statement_, nullptr)) {}
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  Query& operator=(Query&&) = delete;
  ~Query() {
    if (statement_ != nullptr) statement_->reset();
  }

  Query& bind(int index, std::int64_t value) {
    statement_->bind_int64(index, value);
    return *this;
  }
  Query& bind(int index, std::string_view text) {
    statement_->bind_text(index, text);
    return *this;
  }
  Query& bind_blob(int index, std::span<const unsigned char> bytes) {
    statement_->bind_blob(index, bytes);
    return *this;
  }
  // The event's payload columns (every field of kEventFields but the id) from parameter `first` on.
  Query& bind_event(int first, const EventRecord& e);

  absl::StatusOr<bool> step(std::string_view what) { return statement_->step(what); }
  // Runs a statement that returns no rows (or whose rows are not wanted).
  absl::Status run(std::string_view what) {
    absl::StatusOr<bool> row = step(what);
    return row.ok() ? absl::OkStatus() : row.status();
  }
  void reset() { statement_->reset(); }

  [[nodiscard]] std::int64_t int64(int column) const { return statement_->int64(column); }
  [[nodiscard]] std::string_view text_view(int column) const { return statement_->text(column); }
  [[nodiscard]] std::string text(int column) const { return std::string(statement_->text(column)); }
  [[nodiscard]] std::string blob(int column) const { return statement_->blob(column); }
  [[nodiscard]] bool is_null(int column) const { return statement_->is_null(column); }
  [[nodiscard]] std::int64_t changes() const { return statement_->changes(); }
  // A user's subscription from columns plan, period_start_ns, period_end_ns at `first` (a LEFT
  // JOIN of subscriptions: none when plan is NULL).
  [[nodiscard]] std::optional<Subscription> subscription_at(int first) const {
    if (is_null(first)) return std::nullopt;
    return Subscription{.plan = text(first), .period_start_ns = int64(first + 1), .period_end_ns = int64(first + 2)};
  }
  // Binds `t` as totals_at() reads it: the calls count at `first`, then the six sums.
  Query& bind_totals(int first, const Totals& t) {
    return bind(first, t.calls)
        .bind(first + 1, t.input_tokens)
        .bind(first + 2, t.output_tokens)
        .bind(first + 3, t.cached_input_tokens)
        .bind(first + 4, t.cache_creation_input_tokens)
        .bind(first + 5, t.reasoning_tokens)
        .bind(first + 6, t.cost_nanos);
  }
  // The calls count at `first`, then the six sums of a totals row after it.
  [[nodiscard]] Totals totals_at(int first) const {
    return Totals{.calls = int64(first),
                  .input_tokens = int64(first + 1),
                  .output_tokens = int64(first + 2),
                  .cached_input_tokens = int64(first + 3),
                  .cache_creation_input_tokens = int64(first + 4),
                  .reasoning_tokens = int64(first + 5),
                  .cost_nanos = int64(first + 6)};
  }

 private:
  SqlStatement* statement_;
};

// Runs `fn` in a transaction that `begin` starts on `connection`: commits when `fn` succeeds
// (after flushing the connection's deferred writes); rolls back when it fails, when the flush or
// the COMMIT fails, or when it throws (then rethrows), so that nothing of it stays. Returns `fn`'s
// error or the transaction's.
absl::Status run_in_transaction(SqlConnection& connection, std::string_view begin,
                                absl::FunctionRef<absl::Status(SqlConnection&)> fn);

// Runs `sql_head` followed by "(?2, ?3, ...)" once per `per_query` of `ids` (bound from ?2 on,
// `product` as ?1), and calls `row` with each row: a read of many keys in a few round trips.
// `what` names the read in its errors.
absl::Status select_in(SqlConnection& connection, std::string_view sql_head, std::int64_t product,
                       std::span<const std::string_view> ids, std::size_t per_query, std::string_view what,
                       absl::FunctionRef<void(const Query&)> row);

// Prepares `sql` on `connection` as a Query.
inline absl::StatusOr<Query> prepare(SqlConnection& connection, std::string_view sql) {
  absl::StatusOr<SqlStatement*> statement = connection.prepare(sql);
  if (!statement.ok()) return statement.status();
  return Query(*statement);
}

inline absl::StatusOr<Query> prepare_stream(SqlConnection& connection, std::string_view sql, int fetch_rows) {
  absl::StatusOr<SqlStatement*> statement = connection.prepare_stream(sql, fetch_rows);
  if (!statement.ok()) return statement.status();
  return Query(*statement);
}

// What differs between the databases SqlStorage runs on. Everything else is SqlStorage's.
class SqlDialect {
 public:
  virtual ~SqlDialect() = default;
  // Starts a transaction that writes ("BEGIN IMMEDIATE": SQLite's writer lock up front).
  [[nodiscard]] virtual std::string_view begin_write() const = 0;
  // Starts a transaction that only reads, all of its reads as of one moment.
  [[nodiscard]] virtual std::string_view begin_read() const = 0;
  // The scalar maximum of two values: MAX(a, b) in SQLite, GREATEST(a, b) in PostgreSQL.
  [[nodiscard]] virtual std::string_view greatest() const = 0;
  // Appended to a SELECT whose rows the transaction goes on to update ("" where the transaction
  // holds the writer lock already).
  [[nodiscard]] virtual std::string_view for_update() const = 0;
  // The join that keeps its left side the outer loop (SQLite: CROSS JOIN; others: JOIN).
  [[nodiscard]] virtual std::string_view join_in_order() const = 0;
  // Rows per INSERT (events, users, daily sums): 1 where a statement is a function call
  // (SQLite), more where it is a round trip (PostgreSQL).
  [[nodiscard]] virtual int rows_per_insert() const = 0;
  // The batch's users as a row source with columns idx (0-based) and user_id, for a query whose
  // parameter ?4 is the value users_parameter() gave (SQLite: a temporary table filled by it;
  // PostgreSQL: unnest of a text array).
  [[nodiscard]] virtual std::string_view batch_users() const = 0;
  // Readies batch_users() for `user_ids` (in order) on `connection`, in its transaction; the value
  // to bind to ?4 of the queries that read it.
  virtual absl::StatusOr<std::string> users_parameter(SqlConnection& connection,
                                                      std::span<const std::string_view> user_ids) const = 0;
  // Takes, in the write transaction open on `connection`, the locks of the product's users
  // `sorted_user_ids` (sorted, distinct) until it ends. Every writer takes them in one global
  // order, so that writers on several replicas cannot deadlock. SQLite: nothing (BEGIN IMMEDIATE
  // holds the one writer lock).
  virtual absl::Status lock_users(SqlConnection& connection, std::int64_t product,
                                  std::span<const std::string_view> sorted_user_ids) const = 0;
  // A statement that, in a write transaction, keeps every other writer from storing events until
  // it ends (a backfill reads them all): PostgreSQL's LOCK TABLE; "" for SQLite, whose BEGIN
  // IMMEDIATE holds the one writer lock already.
  [[nodiscard]] virtual std::string_view lock_events() const = 0;
  // Column types and table options substituted into the one schema (sql_schema()).
  [[nodiscard]] virtual std::string_view integer_type() const = 0;   // a 64-bit integer
  [[nodiscard]] virtual std::string_view blob_type() const = 0;      // bytes
  [[nodiscard]] virtual std::string_view key_column() const = 0;     // an integer primary key the database assigns
  [[nodiscard]] virtual std::string_view table_options() const = 0;  // after a table's ")"
  [[nodiscard]] virtual std::string_view keyed_table_options() const = 0;  // ... of a table keyed by its primary key
  // ... of a rollup keyed by its primary key, whose rows every batch adds to (usage_daily and the
  // like): PostgreSQL leaves room in each page so that an update stays on its page (HOT: no index
  // entry, no dead row for vacuum in another page).
  [[nodiscard]] virtual std::string_view sums_table_options() const = 0;
};

// The tables and indexes of a SQL storage (idempotent CREATE ... IF NOT EXISTS), in `dialect`.
std::string sql_schema(const SqlDialect& dialect);

// Fills the rollups profit_daily (the profit report's, server/sql_profit.cpp) from the events and
// billing events, and usage_daily_by_model and usage_daily_by_user (the product-wide usage
// reports', sql_report.cpp) from usage_daily, in both dialects: run once, in the transaction that upgrades a database from before
// them (SQLite schema version 6, PostgreSQL 5) while they are still empty.
std::string_view rollups_backfill_sql();

// Fills usage_daily_by_provider (the usage report by provider's) from the events, in both dialects:
// run once, in the transaction that upgrades a database from before it (SQLite schema version 10,
// PostgreSQL 9) while it is still empty.
std::string_view provider_rollup_backfill_sql();

// Copies each billing event's meta_tags and received_ns from its event (stored with the same id),
// in both dialects: run once, in the transaction that upgrades a database whose billing_events
// had no such columns (SQLite schema version 11, PostgreSQL 10), after they were added.
std::string_view billing_event_tags_backfill_sql();

// The webhooks' block of sql_schema()'s template (server/sql_webhooks.cpp), with its placeholders.
std::string_view webhooks_schema_template();

}  // namespace paygent::server
