// The local store: every metered event in a SQLite file (WAL), so spend survives a restart.
//
// One writer (the background thread of the Engine) appends events in batches, one transaction per
// batch (group commit); an event id is the primary key, so writing an event twice stores it once.
// Readers (the Engine's cold paths: a user's first call of a period or session) sum what is there.
// The events table is also the outbox the backend syncer will drain (the `acked` column).
//
// The events table's columns come from the event's field table (sync/event_record.h). The file
// records its schema version (paygent_meta.schema_version); opening a file written by an older
// build adds the columns of the fields added since (with their defaults), so its unsent events
// are still read and delivered.
//
// Thread safety: a LocalStore serialises its own use with a mutex; it may be called from any
// thread. It is never called on the hot path.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "paygent/money.h"
#include "paygent/usage.h"
#include "sync/event_record.h"

struct sqlite3;
struct sqlite3_stmt;

namespace paygent::internal {

// Totals of one user over a time range, by model.
struct RangeTotals {
  struct Model {
    std::string model;
    std::int64_t input_tokens = 0;
    std::int64_t output_tokens = 0;
    std::int64_t calls = 0;
    Nanos cost = 0;
  };
  Nanos cost = 0;
  std::int64_t calls = 0;
  std::vector<Model> by_model;
};

struct SessionTotals {
  std::string session_id;
  Nanos cost = 0;
  std::int64_t calls = 0;
  std::int64_t first_ns = 0;
  std::int64_t last_ns = 0;
};

// A customer (create_or_get_customer) kept for restarts and for delivery to paygentd.
struct StoredCustomer {
  std::string external_id;
  std::string name;
  std::string email;
  int state = 0;  // LocalStore::kUnacked (to deliver), kAcked (paygentd has it) or kRejected
};

class LocalStore {
 public:
  // Opens (creating when missing) the store at `path`. Unavailable/Internal with SQLite's message
  // when the file cannot be opened, is not a Paygent store, or is corrupt.
  static absl::StatusOr<std::unique_ptr<LocalStore>> open(const std::string& path);
  ~LocalStore();

  // The events table's `acked` states.
  static constexpr int kUnacked = 0;   // to be delivered
  static constexpr int kAcked = 1;     // the backend has it
  static constexpr int kRejected = 2;  // refused by a backend at least as new as the event: never resent
  static constexpr int kHeld = 3;      // needs a newer backend than the one answering: kept until it is

  // Stores the events in one transaction, all or none. Events whose id is already stored are
  // skipped (idempotent). Returns how many were new.
  absl::StatusOr<std::int64_t> append(const std::vector<EventRecord>& events);

  // Sum of `user_id`'s events with ts in [start_ns, end_ns); with `acked_only`, of those the
  // backend has acknowledged; with a non-empty `session_id`, of that session's only.
  absl::StatusOr<RangeTotals> totals(std::string_view user_id, std::int64_t start_ns, std::int64_t end_ns,
                                     bool acked_only = false, std::string_view session_id = {});

  // --- The outbox (the events table is the syncer's spool) ---

  // Up to `limit` events to be delivered (kUnacked), oldest first. Counted in outbox_reads().
  absl::StatusOr<std::vector<EventRecord>> unacked(std::size_t limit);
  // How many times unacked() was called: a delivery reads the outbox before it sends, so a count
  // that moved says a delivery may have started since (the lease keeper's unsure answers).
  [[nodiscard]] std::uint64_t outbox_reads() const noexcept { return outbox_reads_.load(std::memory_order_acquire); }
  // Puts the events in `state` (kAcked, kRejected or kHeld), in one transaction.
  absl::Status mark_acked(const std::vector<std::string>& ids, int state = kAcked);
  // Puts every kHeld event back to kUnacked (the backend may read them now); returns how many.
  absl::StatusOr<std::int64_t> release_held();
  absl::StatusOr<std::int64_t> unacked_count();
  // Deletes the oldest unacknowledged events beyond `keep`; returns how many were deleted.
  absl::StatusOr<std::int64_t> drop_oldest_unacked(std::int64_t keep);

  // The user's sessions with an event in [since_ns, until_ns), summed over [start_ns, until_ns),
  // most recent first. With a non-empty `session_id`, only that session.
  absl::StatusOr<std::vector<SessionTotals>> sessions(std::string_view user_id, std::string_view session_id,
                                                      std::int64_t start_ns, std::int64_t since_ns,
                                                      std::int64_t until_ns);

  // Whether any event of `user_id` is stored (one index probe).
  absl::StatusOr<bool> has_user(std::string_view user_id);

  // Number of stored events (for tests and reports).
  absl::StatusOr<std::int64_t> count();

  // --- Customers (table customers) ---

  // Records the customers in one transaction (kUnacked); one already recorded is kept as it is.
  absl::Status save_customers(const std::vector<StoredCustomer>& customers);
  // Up to `limit` customers in `state` (-1: any), in the order they were first saved.
  absl::StatusOr<std::vector<StoredCustomer>> customers(int state = -1, std::size_t limit = SIZE_MAX);
  absl::Status mark_customer(std::string_view external_id, int state);

  // --- Gates fired (tables soft_gates_fired and hard_gates_fired, by FiredThreshold::hard) ---

  // Records the thresholds, each kind in one transaction; one already recorded is kept once. `sent`: the
  // backend has them (it reported them, or acknowledged a batch that carried them); a row saved
  // unsent and then saved sent becomes sent, never the other way.
  absl::Status save_fired(const std::vector<FiredThreshold>& fired, bool sent = false);
  // `user_id`'s recorded thresholds (soft and hard) whose period_start_ns is in [from_ns, to_ns].
  absl::StatusOr<std::vector<FiredThreshold>> fired(std::string_view user_id, std::int64_t from_ns,
                                                    std::int64_t to_ns);
  // Up to `limit` recorded thresholds the backend does not have yet (not sent), oldest period first;
  // hard gates only `with_hard` (a backend older than kHardGatesWireVersion cannot store them).
  absl::StatusOr<std::vector<FiredThreshold>> unsent_fired(std::size_t limit, bool with_hard = true);
  // Records that the backend has `fired` (see save_fired); the syncer then sends them no more.
  absl::Status mark_fired_sent(const std::vector<FiredThreshold>& fired);

 private:
  explicit LocalStore(sqlite3* db);
  // Creates the tables when missing and adds the columns an older build's file lacks, in one
  // transaction; records the schema version.
  absl::Status upgrade_schema() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status error(std::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::mutex mu_;
  std::atomic<std::uint64_t> outbox_reads_{0};
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  sqlite3_stmt* insert_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace paygent::internal
