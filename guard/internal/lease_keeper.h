// Budget leases, the holder's side (docs/leases.md): the per-limit lease state the gate reads, and
// the background thread that asks paygentd for slices (POST /api/v1/leases), renews them, and
// gives back what it did not use.
//
// Private to the library (paygent::internal). The hot path reads one atomic of a Lease (its
// `bound`, Lease::fits): no lock, no allocation, no system call, no network. Only a call that
// finds no room in its lease takes LeaseKeeper::room(): it asks the thread for a slice at once and
// waits for the answer at most Options::lease_wait, then decides with what it knows (the grant,
// "cap reached", "held by other processes", or the outage rule).
//
// The outage rule (fail-open, bounded): while the backend cannot be reached, a holder admits
// beyond its last ceiling at most its share, min(remaining / holders at its last grant,
// outage_share x cap); a holder that never got a grant for the limit, outage_share x cap beyond
// what it had used when it first asked.
//
// Thread safety: LeaseKeeper's methods may be called from any thread. A Lease's `bound` and the
// backend's picture are written by the keeper's thread only (`need`, `requested`, `asks` and `cap`
// also by calls that found no room); its identity is immutable. Leases are never freed before the keeper: a pointer to one stays valid
// for the keeper's life.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sync/local_store.h"
#include "sync/syncer.h"

namespace paygent::internal {

// One lease: a holder's right to commit up to `ceiling` against one limit of one user in one
// window (docs/leases.md, "Terms").
struct alignas(64) Lease {
  enum Answer : std::uint8_t { kNoAnswer, kGranted, kFailed };
  static constexpr std::int64_t kNoBound = INT64_MIN;

  Lease(std::string user, std::string limit_key, std::int64_t start, std::int64_t end,
        const std::atomic<std::int64_t>* used_counter)
      : user_id(std::move(user)), limit(std::move(limit_key)), period_start_ns(start), period_end_ns(end),
        used(used_counter) {}

  // True when `used_after` (the limit's committed usage with the call's estimate) is within the
  // lease's bound. One load: does not lock, allocate or wait.
  [[nodiscard]] bool fits(std::int64_t used_after) const noexcept {
    return used_after <= bound.load(std::memory_order_acquire);
  }

  // --- First cache line: what a gate check reads, and what a call that found no room writes ---
  // The largest `used` a call may take the limit to without asking: the live grant's ceiling;
  // ceiling + share while the backend cannot be reached (the outage rule); kNoBound when there is
  // no live grant (the next call asks). The keeper's thread keeps it (LeaseKeeper::bound_of).
  std::atomic<std::int64_t> bound{kNoBound};
  std::atomic<std::int64_t> need{0};        // the largest room a waiting call lacks (0: none)
  std::atomic<bool> requested{false};       // a call wants an answer: the keeper asks at once
  std::atomic<std::uint8_t> answer{kNoAnswer};  // the last round's outcome for this lease
  std::atomic<std::int64_t> answer_ns{0};   // when it came (keeper's clock)
  std::atomic<std::uint64_t> rounds{0};     // answers (or failures) so far: what waiting calls watch
  // Calls that asked so far, and how many of them the last answer (or failure) covered: a call
  // waits for an answer to a request sent after it asked, not for one already under way.
  std::atomic<std::uint64_t> asks{0};
  std::atomic<std::uint64_t> asks_answered{0};
  // The last answer was asked with events not yet marked acked (used > acked): if the syncer had
  // delivered them meanwhile, the backend counted them twice and "cap reached" may not be so yet.
  std::atomic<bool> answer_unsure{false};
  // The acked total the last answer was asked with, and the last acked total whose unsure "cap
  // reached" a call waited out (lease_wait) without the syncer marking anything, with the store's
  // outbox_reads() then: while neither moved (no ack, no delivery started), the answer cannot
  // change, so later calls take it at once instead of each waiting again.
  std::atomic<std::int64_t> answer_acked{-1};
  std::atomic<std::int64_t> unsure_waited_out{-2};
  std::atomic<std::uint64_t> unsure_waited_reads{0};
  std::atomic<std::int64_t> ceiling{0};     // the last grant's ceiling (or `used` when released)
  std::atomic<std::int64_t> expires_ns{0};  // local expiry of the grant; 0: no live grant

  // --- The backend's picture at the last grant ---
  std::atomic<std::int64_t> remaining{0};
  std::atomic<std::int64_t> held_elsewhere{0};
  std::atomic<std::int64_t> holders{0};
  std::atomic<std::int64_t> cap{0};  // the cap this holder states (plan max x hard_gate_at)
  std::atomic<std::int64_t> share{0};  // what it may admit beyond `ceiling` in an outage

  // --- Identity (immutable) ---
  const std::string user_id;
  const std::string limit;  // "total_spend", "model_limit:<model>", "session_spend:<session id>"
  const std::int64_t period_start_ns;
  const std::int64_t period_end_ns;
  const std::atomic<std::int64_t>* const used;  // this process's committed counter of the limit

  // --- The keeper's bookkeeping: `active` under LeaseKeeper::mu_, the rest its thread's own ---
  bool active = true;  // in the rounds (false once released idle, or its window ended)
  bool live = false;   // holds a grant the backend has not been told to release
  std::int64_t slice = 0;              // the last slice granted
  std::int64_t used_seen = 0;          // `used` at the last round...
  std::int64_t used_changed_ns = 0;    // ...and when it last changed (idle leases are released)
  std::int64_t used_at_request = 0;    // `used` and time at the last request (for the use rate)
  std::int64_t request_ns = 0;
  std::int64_t typical_need = 0;       // the largest need seen: roughly a call's estimate
};

// How a call that found no room in its lease is decided (LeaseKeeper::room).
enum class LeaseVerdict : std::uint8_t {
  kFits,           // admit within `bound` (a grant came, or leases are off)
  kCapReached,     // the backend says the cap is reached: the limit's own hard gate
  kHeldElsewhere,  // budget is held by other processes' leases: GateReason::kLeaseExhausted
  kOutage,         // no answer: admit within `bound` = ceiling + share (the outage rule)
  kStrictClosed,   // no answer and strict_backend: GateReason::kBackendUnavailable
};
struct LeaseRoom {
  LeaseVerdict verdict = LeaseVerdict::kFits;
  std::int64_t bound = 0;  // the largest `used` the call may take the limit to
};

// One POST /api/v1/leases entry and its answer (docs/leases.md, "Wire").
struct LeaseAsk {
  std::string_view user_id;
  std::string_view limit;
  std::int64_t period_start_ns = 0;
  std::int64_t period_end_ns = 0;
  std::int64_t cap = 0, used = 0, acked = 0, want = 0, need = 0;
  bool release = false;
};
struct LeaseAnswer {
  std::int64_t granted = 0, ceiling = 0, spent = 0, held_elsewhere = 0, remaining = 0, holders = 0;
};
struct LeaseReply {
  std::int64_t ttl_ms = 0;
  std::vector<LeaseAnswer> leases;
};

// The request body for `asks` (at most 100) of `holder`.
[[nodiscard]] std::string encode_lease_request(std::string_view holder, const std::vector<LeaseAsk>& asks);
// Reads a reply to `asks`. Strict on what it needs: ttl_ms > 0; one entry per ask, in order,
// naming the ask's user_id, limit and period_start_ns; every number a non-negative int64 and
// ceiling >= used. Unknown fields are ignored (a newer backend may add some). InvalidArgument
// naming the field otherwise.
[[nodiscard]] absl::StatusOr<LeaseReply> parse_lease_reply(std::string_view body, const std::vector<LeaseAsk>& asks);

// A new holder id: 32 random lowercase hex digits.
[[nodiscard]] std::string new_holder_id();

struct LeaseOptions {
  std::string backend_url;
  std::string api_key;
  absl::Duration lease_wait = absl::Milliseconds(100);
  double outage_share = 0.10;
  bool strict_backend = false;
  // The time, in Unix ns (Options::clock, or the system clock). Thread-safe.
  std::function<std::int64_t()> now_ns;
  // Every contained fault (Engine::report_error); called on the keeper's thread or a caller's.
  std::function<void(absl::Status)> report_error;
  // One exchange with the backend: the body of a POST /api/v1/leases -> the reply. Empty: HTTP to
  // backend_url (http_exchange). Tests put a fake backend here.
  std::function<absl::StatusOr<HttpReply>(std::string body, absl::Duration timeout)> exchange;
};

class LeaseKeeper {
 public:
  // Starts the keeper's thread. `store` (the engine's local store: acked totals) must outlive it.
  LeaseKeeper(LeaseOptions options, LocalStore* store);
  ~LeaseKeeper();  // stop()
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // The lease of `limit` of `user_id` in [start_ns, end_ns), made on first use with `used` as its
  // counter (cold: locks, may allocate). The same pointer for the same (user, limit, start).
  Lease* lease(std::string_view user_id, std::string_view limit, std::int64_t start_ns, std::int64_t end_ns,
               const std::atomic<std::int64_t>* used, std::int64_t cap);

  // A call found no room: `used_after` (usage with its estimate) does not fit lease.fits(). Asks
  // for a slice at once, waits for the answer at most lease_wait (not at all while the backend is
  // known to be unreachable, or when an answer came in the last few ms), and decides
  // (LeaseVerdict). `cap` is the limit's cap now. Never throws; takes a mutex while it waits.
  LeaseRoom room(Lease& lease, std::int64_t used_after, std::int64_t cap, std::int64_t now_ns) noexcept;

  // Releases every live lease (call it after the final delivery, so that acked is as high as it
  // gets) and stops the thread; waits at most for one exchange (2 s) and does not try when the
  // backend is known to be unreachable (the leases then expire in one TTL). Idempotent. After it,
  // room() decides by the outage rule.
  void stop() noexcept;

  // False after a failed exchange, true after a good one (and before the first).
  [[nodiscard]] bool reachable() const noexcept { return reachable_.load(std::memory_order_relaxed); }
  // True once the backend answered that it has no leases (an older paygentd): gate without them.
  [[nodiscard]] bool unsupported() const noexcept { return unsupported_.load(std::memory_order_relaxed); }
  [[nodiscard]] const std::string& holder() const noexcept { return holder_; }
  // The lease TTL the backend last stated (10 s until it says).
  [[nodiscard]] std::int64_t ttl_ns() const noexcept { return ttl_ns_.load(std::memory_order_relaxed); }
  // Exchanges made so far (for tests).
  [[nodiscard]] std::int64_t exchanges() const noexcept { return exchanges_.load(std::memory_order_relaxed); }

 private:
  struct Pending {
    Lease* lease;
    LeaseAsk ask;
    std::uint64_t asks = 0;  // the lease's `asks` when the request was made
  };
  // The lease's waiting calls up to `p.asks` have their answer (or failure).
  void answered(Pending& p) noexcept;
  // room()'s one request: asks and waits for its answer until `deadline`, then decides.
  LeaseRoom ask_and_wait(Lease& lease, std::int64_t used_after, std::chrono::steady_clock::time_point deadline) noexcept;
  void run();
  // One round: what each active lease needs now, sent in requests of at most 100 entries.
  void round(bool final_release);
  // Sends `batch` and applies the answer (or the failure) to its leases.
  void send(std::vector<Pending>& batch, std::int64_t sent_ns);
  void apply(Pending& p, const LeaseAnswer& a, std::int64_t sent_ns, std::int64_t ttl_ns) noexcept;
  void fail(std::vector<Pending>& batch, absl::Status why);
  // `used`'s acknowledged part: the local store's acked events of the lease's limit and window.
  std::int64_t acked_of(const Lease& lease, std::int64_t used);
  void wake() noexcept;
  // The verdict for a call with `used_after` from what `lease` knows; `answered`: a round answered
  // since the call asked (else the outage rule).
  [[nodiscard]] LeaseRoom decide(const Lease& lease, std::int64_t used_after, bool answered) const noexcept;
  [[nodiscard]] std::int64_t outage_share_of(std::int64_t cap) const noexcept;
  // What `lease.bound` should be now (keeper thread): see Lease::bound.
  [[nodiscard]] std::int64_t bound_of(const Lease& lease, std::int64_t now_ns) const noexcept;

  const LeaseOptions options_;
  LocalStore* const store_;
  const std::string holder_;
  std::atomic<bool> reachable_{true};
  std::atomic<bool> unsupported_{false};
  std::atomic<std::int64_t> ttl_ns_{10'000'000'000};
  std::atomic<std::int64_t> exchanges_{0};
  std::atomic<bool> stopped_{false};
  std::int64_t retry_at_ns_ = 0;  // keeper thread: next try while unreachable
  std::int64_t backoff_ns_ = 0;

  std::mutex mu_;
  std::condition_variable wake_cv_;      // the keeper waits here for work
  std::condition_variable answered_cv_;  // calls wait here for an answer
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, std::unique_ptr<Lease>> by_key_ ABSL_GUARDED_BY(mu_);
  std::vector<Lease*> active_ ABSL_GUARDED_BY(mu_);  // leases the rounds look at
  std::thread thread_;
};

}  // namespace paygent::internal
