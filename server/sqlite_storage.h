// SqliteStorage: paygentd's embedded default store, one SQLite database (WAL) in the data dir.
// The queries and the logic are SqlStorage's (server/sql_storage.h); this is SQLite's part: its
// dialect, its connections, the schema's version (PRAGMA user_version) and the WAL's checkpoints.
//
// Durability: every write is one transaction (or a savepoint of one, shared with the concurrent
// writes of its group commit, below), answered after its commit. With Synchronous::kFull (the
// default) the WAL is fsynced at each commit, so an acknowledged write survives a crash of the process or of the
// machine; with kNormal it survives a crash of the process (kill -9) but the last commits may be
// lost if the machine loses power.
//
// Checkpoints (copying the WAL into the database file) run on a background thread with its own
// connection, so that a commit mostly only appends to the WAL; once that thread has copied what it
// saw, the writer copies the few batches committed meanwhile, so that the WAL can start over.
//
// Group commit: write transactions (ingest, with_user_locks) that arrive while one commits wait and
// then share the next transaction, each in a savepoint of its own (server/group_commit.h): with
// several concurrent syncers, one fsync serves many batches; each still gets its own reply, a
// failing one is rolled back alone, and every one is answered after its commit.
//
// Thread safety: safe for concurrent use from many threads. One connection serves every call but
// report(), guarded by a mutex: those calls are serialised (SQLite allows one writer at a time
// anyway; that mutex and BEGIN IMMEDIATE are the per-user locks of SqlStorage's transactions).
// report(), the one read whose cost grows with a product's history, reads through read-only
// connections of its own, concurrently with the rest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/group_commit.h"
#include "server/sql_storage.h"

struct sqlite3;

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

class SqliteStorage final : public SqlStorage {
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

  // The group commit's counts (commits, write transactions they held, callers waiting now).
  [[nodiscard]] GroupCommit::Stats group_commit_stats() const { return group_commit_.stats(); }

 protected:
  absl::Status with_connection(Access access, absl::FunctionRef<absl::Status(SqlConnection&)> fn) override;
  // Group commit (server/group_commit.h) on the writer's connection.
  absl::Status write_transaction(absl::FunctionRef<absl::Status(SqlConnection&)> fn, bool defers) override;

 private:
  class Connection;
  class Checkpointer;
  explicit SqliteStorage(sqlite3* db);
  // SQLite's WAL hook, called after each commit with the WAL's size in pages.
  static int on_wal_commit(void* storage, sqlite3* db, const char* database, int wal_pages);
  // An idle reader, or a new one (`open_at_most`: only while fewer readers are open); nullptr
  // when the database has no file a second connection can open, or at that bound (then the read
  // goes through the writer's connection, under mu_).
  absl::StatusOr<std::unique_ptr<Connection>> take_reader(std::size_t open_at_most);
  absl::StatusOr<std::unique_ptr<Connection>> open_reader();  // take_reader()'s new connection
  // Back to the idle ones; or closed, when `fn` left it in a transaction.
  void return_reader(std::unique_ptr<Connection> reader);

  std::unique_ptr<Checkpointer> checkpointer_;  // set once by open()
  std::int64_t checkpoint_pages_ = 4096;        // set once by open()
  absl::Mutex mu_;
  const std::unique_ptr<Connection> writer_;  // used only under mu_
  // Concurrent write transactions share one commit (one fsync with Synchronous::kFull).
  GroupCommit group_commit_{"BEGIN IMMEDIATE", 64};

  // Reports and short reads (Access::kReport, kRead) go through connections of their own (WAL
  // readers see the last commit and never wait for the writer): a long report does not hold mu_,
  // which every write needs, and a request's short reads (its key, its product's plans) do not
  // wait behind a group commit's fsync. A report opens a reader whenever none is idle; a short
  // read takes an idle one, or opens one while fewer than kShortReaders are open in all (the
  // reports' counted), else uses the writer's connection. Each is kept for the next.
  // Each reader's page cache holds at most the writer's cache_bytes, filled only by the pages its
  // reads touch.
  const std::string path_;  // the database file ("" in memory); set once
  std::int64_t cache_size_ = 0;  // PRAGMA cache_size of the writer, for the readers; set once by open()
  absl::Mutex readers_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::vector<std::unique_ptr<Connection>> idle_readers_ ABSL_GUARDED_BY(readers_mu_);
  std::size_t open_readers_ ABSL_GUARDED_BY(readers_mu_) = 0;  // idle or in use
  static constexpr std::size_t kShortReaders = 8;
};

}  // namespace paygent::server
