// The local store: every metered event in a SQLite file (WAL), so spend survives a restart.
//
// One writer (the background thread of the Engine) appends events in batches, one transaction per
// batch (group commit); an event id is the primary key, so writing an event twice stores it once.
// Readers (the Engine's cold paths: a user's first call of a period or session) sum what is there.
// The events table is also the outbox the backend syncer will drain (the `acked` column).
//
// Thread safety: a LocalStore serialises its own use with a mutex; it may be called from any
// thread. It is never called on the hot path.
#pragma once

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

struct sqlite3;
struct sqlite3_stmt;

namespace paygent::internal {

// An event as stored: plain values, owned.
struct StoredEvent {
  std::string id;  // 32 hex digits
  std::string user_id;
  std::string session_id;
  std::string agent_id;
  std::string indicator;
  std::string model;
  std::string provider;
  Usage usage;
  Nanos cost = 0;
  std::int64_t ts_ns = 0;
  std::string meta_tags_json;  // {"k":"v",...}
  bool estimated = false;
};

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

// A soft-gate threshold that fired: once per threshold, limit and period, across restarts.
struct FiredThreshold {
  std::string user_id;
  std::string limit_key;  // "total_spend", "session_spend:<session id>", "model_limit:<model>"
  std::int64_t period_start_ns = 0;  // the billing period's start, or the session's
  std::int64_t threshold_ppm = 0;
  friend bool operator==(const FiredThreshold&, const FiredThreshold&) = default;
};

class LocalStore {
 public:
  // Opens (creating when missing) the store at `path`. Unavailable/Internal with SQLite's message
  // when the file cannot be opened, is not a Paygent store, or is corrupt.
  static absl::StatusOr<std::unique_ptr<LocalStore>> open(const std::string& path);
  ~LocalStore();

  // Stores the events in one transaction, all or none. Events whose id is already stored are
  // skipped (idempotent). Returns how many were new.
  absl::StatusOr<std::int64_t> append(const std::vector<StoredEvent>& events);

  // Sum of `user_id`'s events with ts in [start_ns, end_ns); with `acked_only`, of those the
  // backend has acknowledged.
  absl::StatusOr<RangeTotals> totals(std::string_view user_id, std::int64_t start_ns, std::int64_t end_ns,
                                     bool acked_only = false);

  // --- The outbox (the events table is the syncer's spool) ---

  // Up to `limit` events not yet acknowledged by the backend, oldest first.
  absl::StatusOr<std::vector<StoredEvent>> unacked(std::size_t limit);
  // Marks the events acknowledged (state 1), or refused by the backend (state 2: kept, never
  // resent), in one transaction.
  absl::Status mark_acked(const std::vector<std::string>& ids, int state = 1);
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

  // --- Soft gates fired (table soft_gates_fired) ---

  // Records the thresholds in one transaction; one already recorded is kept once.
  absl::Status save_fired(const std::vector<FiredThreshold>& fired);
  // `user_id`'s recorded thresholds whose period_start_ns is in [from_ns, to_ns].
  absl::StatusOr<std::vector<FiredThreshold>> fired(std::string_view user_id, std::int64_t from_ns,
                                                    std::int64_t to_ns);

 private:
  explicit LocalStore(sqlite3* db);
  absl::Status exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status error(std::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  sqlite3_stmt* insert_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace paygent::internal
