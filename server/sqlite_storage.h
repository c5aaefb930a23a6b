// SqliteStorage: paygentd's embedded default store, one SQLite database (WAL) in the data dir.
//
// Layout (see sqlite_schema()): products, users, subscriptions, plans, events, usage_daily and
// product_totals, every row keyed by its product's integer key. Events are keyed by (product, id), so a
// duplicate id is ignored by INSERT OR IGNORE. Beside the events, usage_daily keeps sums per
// (product, user, UTC day, model), written in the same transaction as the events they sum; a
// usage query over a period reads the whole days from it and only the partial days at the edges
// from the events (index (product, user_id, ts_ns)), so the cost of a usage query does not grow
// with a user's number of calls.
//
// Writes for a product that does not exist fail with NotFound; reads find nothing for it.
//
// Overflow: product_totals keeps each product's all-time sums (calls, every token count,
// cost_nanos), written in the same transaction as the events. A batch that would take one of them
// past int64 is refused whole (InvalidArgument naming events[i].field and its user). Every sum a
// read computes (a user's period, a report's group, SQL's SUM()) is a sum over part of a product's
// events, so none can overflow: one user's data never makes a read fail.
//
// Plan configs: plans.updated_ns is the config's revision, grown at every put (also by another
// process on the same database), so that a reader can keep the parsed config until it changes.
//
// Durability: every write is one transaction. With Synchronous::kFull (the default) the WAL is
// fsynced at each commit, so an acknowledged write survives a crash of the process or of the
// machine; with kNormal it survives a crash of the process (kill -9) but the last commits may be
// lost if the machine loses power.
//
// Checkpoints (copying the WAL into the database file) run on a background thread with its own
// connection, so that a commit mostly only appends to the WAL; once that thread has copied what it
// saw, the writer copies the few batches committed meanwhile, so that the WAL can start over.
//
// Thread safety: safe for concurrent use from many threads. One connection serves every call but
// report(), guarded by a mutex: those calls are serialised (SQLite allows one writer at a time
// anyway). report(), the one read whose cost grows with a product's history, reads through
// read-only connections of its own, concurrently with the rest.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/storage.h"

struct sqlite3;
struct sqlite3_stmt;

namespace paygent::server {

struct SqliteOptions {
  enum class Synchronous : std::uint8_t { kNormal, kFull };
  // kFull fsyncs the WAL at every commit (one per batch): an acknowledged batch survives power
  // loss. kNormal skips that fsync: it still survives kill -9 of paygentd, and is faster on disks
  // whose fsync is slow.
  Synchronous synchronous = Synchronous::kFull;
  // SQLite's page cache. Larger keeps more of the event id index in memory, which keeps ingest
  // fast as the table grows, at the cost of resident memory.
  std::int64_t cache_bytes = 64 << 20;
  // WAL size, in 4 KiB pages, past which a background thread copies the WAL into the database
  // (a checkpoint), off the commit path. Larger means fewer checkpoints (a page rewritten by many
  // batches is copied once) but a larger WAL file and a longer recovery after a crash.
  std::int64_t checkpoint_pages = 4096;
};

// The SQL that creates SqliteStorage's tables and indexes (idempotent), for tools and baselines.
std::string_view sqlite_schema() noexcept;

class SqliteStorage final : public Storage {
 public:
  // Opens the database at `path`, creating it and its tables when missing, in WAL mode.
  // A database of an older schema version is upgraded (the events columns added since are added
  // with their defaults). Unavailable when the file cannot be opened or written;
  // FailedPrecondition when it holds a newer schema version than this build knows.
  static absl::StatusOr<std::unique_ptr<SqliteStorage>> open(const std::string& path, SqliteOptions options = {});

  // Finalises the statements and closes the database (which checkpoints the WAL into it).
  ~SqliteStorage() override;
  SqliteStorage(const SqliteStorage&) = delete;
  SqliteStorage& operator=(const SqliteStorage&) = delete;

  absl::Status create_product(std::string_view product_id, std::string_view name,
                              std::string_view key_sha256) override;
  absl::StatusOr<std::string> find_product_by_key(std::string_view key_sha256) override;
  absl::Status create_user(std::string_view product_id, std::string_view user_id, std::string_view name) override;
  absl::StatusOr<UserRecord> find_user(std::string_view product_id, std::string_view user_id) override;
  absl::Status set_subscription(std::string_view product_id, std::string_view user_id,
                                const Subscription& subscription) override;
  absl::Status put_plan_config(std::string_view product_id, std::string_view config_json) override;
  absl::StatusOr<std::optional<std::string>> plan_config(std::string_view product_id) override;
  absl::StatusOr<std::int64_t> plan_config_revision(std::string_view product_id) override;
  absl::StatusOr<IngestResult> ingest(std::string_view product_id, std::span<const EventRecord> events) override;
  absl::StatusOr<IngestResult> ingest_with_usage(std::string_view product_id, std::span<const EventRecord> events,
                                                 PeriodOf period_of, std::span<const SoftGateFired> soft_gates) override;
  absl::StatusOr<std::vector<SoftGateFired>> soft_gates_fired(std::string_view product_id, std::string_view user_id,
                                                              TimeRange period) override;
  absl::StatusOr<std::vector<UserUsage>> usage_of(std::string_view product_id, std::span<const std::string> user_ids,
                                                  PeriodOf period_of) override;
  absl::StatusOr<GroupedTotals> report(std::string_view product_id, const ReportQuery& query) override;

 private:
  class Statement;
  class Checkpointer;
  explicit SqliteStorage(sqlite3* db);
  // SQLite's WAL hook, called after each commit with the WAL's size in pages.
  static int on_wal_commit(void* storage, sqlite3* db, const char* database, int wal_pages);

  // Prepared statements by SQL, of one connection.
  using StatementCache = absl::flat_hash_map<std::string, sqlite3_stmt*>;
  // A read-only connection of report()'s (see take_reader()), with its statements.
  struct Reader;

  // The prepared statement for `sql`, prepared on first use and kept.
  absl::StatusOr<Statement> prepare(std::string_view sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As prepare(), on connection `db` whose statements are `statements` (the caller has it alone).
  static absl::StatusOr<Statement> prepare_in(sqlite3* db, StatementCache& statements, std::string_view sql);
  // An idle reader, or a new one; nullptr when the database has no file a second connection can
  // open (then report() reads through the writer's connection, under mu_).
  absl::StatusOr<std::unique_ptr<Reader>> take_reader();
  void return_reader(std::unique_ptr<Reader> reader);
  absl::Status exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The integer key (products.pk) of `product_id`, or nullopt when there is no such product.
  absl::StatusOr<std::optional<std::int64_t>> product_key(std::string_view product_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As product_key, but NotFound when there is no such product.
  absl::StatusOr<std::int64_t> existing_product_key(std::string_view product_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ingest() and ingest_with_usage(); `period_of` is nullptr for ingest().
  absl::StatusOr<IngestResult> ingest_impl(std::string_view product_id, std::span<const EventRecord> events,
                                           const PeriodOf* period_of, std::span<const SoftGateFired> soft_gates = {});
  absl::StatusOr<IngestResult> ingest_locked(std::int64_t product, std::span<const EventRecord> events,
                                             std::span<const std::array<unsigned char, 16>> ids,
                                             const PeriodOf* period_of, std::span<const SoftGateFired> soft_gates)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Soft gates: the batch's stored (INSERT OR IGNORE) in the caller's transaction, and a user's
  // read (see Storage::soft_gates_fired).
  absl::Status store_soft_gates_locked(std::int64_t product, std::span<const SoftGateFired> soft_gates)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status read_soft_gates_locked(std::int64_t product, std::string_view user_id, TimeRange period,
                                      std::vector<SoftGateFired>& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The product's all-time totals over every event stored for it (product_totals).
  absl::StatusOr<Totals> product_totals_locked(std::int64_t product) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The user and their subscription, or nullopt when the product has no such user.
  absl::StatusOr<std::optional<UserRecord>> find_user_locked(std::int64_t product, std::string_view user_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ingest_with_usage()'s read, in the batch's transaction: the users `user_ids` (distinct, in
  // order), their periods and their totals by model, into `out` (in the same order).
  absl::Status read_usage_locked(std::int64_t product, std::span<const std::string_view> user_ids, PeriodOf period_of,
                                 std::vector<UserUsage>& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the rows of a read_usage_locked() query (user's index, model, calls, then the sums) into
  // the totals in `out` of the users whose period is `period`.
  absl::Status add_usage_rows(Statement& select, const TimeRange& period, std::vector<UserUsage>& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // report() for an existing product, through the writer's connection: adds the query's totals
  // into `out`.
  absl::Status report_locked(std::int64_t product, const ReportQuery& query, GroupedTotals& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As report_locked(), through connection `db` (the caller has it alone).
  static absl::Status report_in(sqlite3* db, StatementCache& statements, std::int64_t product, const ReportQuery& query,
                                GroupedTotals& out);
  // Adds the sums of usage_daily over whole days [first_day, end_day) into `out`.
  static absl::Status add_daily(sqlite3* db, StatementCache& statements, std::int64_t product, const ReportQuery& query,
                                std::int64_t first_day, std::int64_t end_day, GroupedTotals& out);
  // Adds the sums of the events with from_ns <= ts_ns < to_ns into `out`.
  static absl::Status add_events(sqlite3* db, StatementCache& statements, std::int64_t product,
                                 const ReportQuery& query, std::int64_t from_ns, std::int64_t to_ns, GroupedTotals& out);

  std::unique_ptr<Checkpointer> checkpointer_;  // set once by open()
  std::int64_t checkpoint_pages_ = 4096;        // set once by open()
  absl::Mutex mu_;
  sqlite3* const db_;  // used only under mu_
  absl::flat_hash_map<std::string, sqlite3_stmt*> statements_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::int64_t> product_keys_ ABSL_GUARDED_BY(mu_);  // id -> products.pk

  // report() reads through connections of its own (WAL readers see the last commit and never wait
  // for the writer), so that a long report of one product does not hold mu_, which every write and
  // every other read of every product needs. One per concurrent report, kept for the next.
  const std::string path_;  // the database file ("" in memory); set once
  absl::Mutex readers_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::vector<std::unique_ptr<Reader>> idle_readers_ ABSL_GUARDED_BY(readers_mu_);
};

}  // namespace paygent::server
