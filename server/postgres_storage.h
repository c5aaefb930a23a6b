// PostgresStorage: paygentd's store on a PostgreSQL server (15 or newer), for deployments that run
// several paygentd replicas on one database. The queries and the logic are SqlStorage's
// (server/sql_storage.h); this is PostgreSQL's part: its dialect, a pool of libpq connections, and
// the schema's version (table paygent_schema), created or upgraded at open() under an advisory
// lock so that replicas starting together do not race.
//
// Replicas: every read goes to the database (nothing is cached but products' integer keys, which
// never change), so each replica sees every other's writes once committed. Ingest is idempotent
// across replicas: events are keyed by (product, event id) and inserted with ON CONFLICT DO
// NOTHING, so a batch retried through another replica counts once. A write transaction takes its
// users' advisory locks (pg_advisory_xact_lock of storage_internal::user_lock_key) in ascending
// key order before writing anything, and the product's totals row (SELECT ... FOR UPDATE) last:
// concurrent ingests of overlapping users on any number of replicas queue instead of deadlocking.
// A transaction PostgreSQL still aborts (serialization failure 40001, deadlock 40P01) is retried.
//
// Ids: PostgreSQL's text cannot hold U+0000; the API refuses such text (400 naming the field), and
// a statement binding one fails with InvalidArgument rather than storing it cut short.
//
// Connection loss: a call on a connection that turns out to be broken (the server restarted)
// drops every idle connection and is tried once more on a new one; when the server is down, calls
// fail with Unavailable (paygentd answers 503) until it is back.
//
// Thread safety: safe for concurrent use from many threads; each call holds a connection of its own.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/sql_storage.h"

namespace paygent::server {

struct PostgresOptions {
  // Idle connections kept open for the next calls. More serve more concurrent requests without a
  // new connection each (~2 ms), at the cost of a server process per connection.
  std::size_t max_idle_connections = 16;
  // Ingest writes a batch's users, events, daily sums and totals in one statement (one round trip).
  // false: one statement per table, as on SQLite: slower, for comparison (bench/) only.
  bool one_statement_ingest = true;
  // With one_statement_ingest, the batch's events are loaded by COPY first, and the one statement
  // then adds them up (a batch holding an id already stored, a retry, is rolled back and written
  // by the one statement's INSERT ... ON CONFLICT DO NOTHING instead). false: that INSERT for
  // every batch, for comparison (bench/) only.
  bool copy_ingest = true;
  // Rows per page of a streamed read (SqlConnection::prepare_stream); 0: as the read asks (10,000
  // for every customer's billing events). Tests set a few rows to cross many pages.
  int stream_page_rows = 0;
};

class PostgresStorage final : public SqlStorage {
 public:
  // Connects to `conninfo` (a libpq connection string or URI, e.g.
  // "postgresql://paygent@127.0.0.1:5432/paygent"), and creates the tables when missing or
  // upgrades them. Unavailable when the server cannot be reached; FailedPrecondition when the
  // database holds a newer schema version than this build knows.
  static absl::StatusOr<std::unique_ptr<PostgresStorage>> open(const std::string& conninfo,
                                                               PostgresOptions options = {});
  ~PostgresStorage() override;
  PostgresStorage(const PostgresStorage&) = delete;
  PostgresStorage& operator=(const PostgresStorage&) = delete;

  // Batches whose COPY was refused (an id stored already, text it cannot carry) and that were
  // written again by INSERT ... ON CONFLICT DO NOTHING, since open(). Thread-safe.
  [[nodiscard]] std::int64_t copy_fallbacks() const { return copy_fallbacks_.load(std::memory_order_relaxed); }

 protected:
  absl::Status with_connection(Access access, absl::FunctionRef<absl::Status(SqlConnection&)> fn) override;
  // The batch's users, events, daily sums and product totals in one statement (one round trip):
  // the events as one array per column (unnest), INSERT ... ON CONFLICT DO NOTHING RETURNING id
  // feeding the sums in the same statement. With `bulk` (and PostgresOptions::copy_ingest), the
  // events are loaded by COPY first and the statement reads them back by id instead.
  absl::StatusOr<BatchWrite> store_batch(SqlConnection& connection, std::int64_t product, std::int64_t received_ns,
                                         std::span<const EventRecord> events,
                                         std::span<const storage_internal::EventId> ids,
                                         std::span<const std::size_t> fresh, std::span<const std::string_view> users,
                                         bool bulk, std::vector<bool>& stored) override;

 private:
  class Connection;
  PostgresStorage(std::string conninfo, PostgresOptions options);
  // store_batch() with `bulk`: the events `fresh` by COPY, then the one statement that adds them
  // up, reading them back by id. kRedoWithoutBulk when COPY refuses them (an id stored already, a
  // value it cannot take); the connection's or the server's failures as they are.
  absl::StatusOr<BatchWrite> store_copied_batch(Connection& connection, std::int64_t product, std::int64_t received_ns,
                                                std::span<const EventRecord> events,
                                                std::span<const storage_internal::EventId> ids,
                                                std::span<const std::size_t> fresh,
                                                std::span<const std::string_view> users, std::vector<bool>& stored);
  // A new connection to the server; Unavailable when it cannot be made.
  absl::StatusOr<std::unique_ptr<Connection>> connect();

  const std::string conninfo_;
  const PostgresOptions options_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  std::atomic<std::int64_t> copy_fallbacks_{0};
};

}  // namespace paygent::server
