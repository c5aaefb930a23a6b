// The background syncer: delivers the local store's unacknowledged events to paygentd in batches,
// and brings the backend's authoritative usage and plans back to the engine.
//
// It runs on its own thread (a Boost.Asio io_context); nothing here is ever called on the hot
// path except wake(), which only posts to that thread. A backend that is down, slow or answers
// garbage never blocks the application: events wait in the store (bounded by max_spool_events;
// what is dropped past the bound is counted and reported), and delivery retries with exponential
// backoff and jitter. Delivery is at-least-once; the backend makes it exactly-once by event id.
// Events are encoded by the shared codec (sync/event_record.h) at the lowest wire version that
// carries them; those that need a newer backend than the one answering wait in the store until a
// reply's Paygent-Wire-Version says it is new enough.
//
// Soft gates (docs/wire.md, "Soft gates"): the thresholds this process fired and the backend does
// not have yet (the local store's unsent soft_gates_fired rows) ride with the next batch, or in a
// batch of their own when there are no events to send, and are marked sent once a backend of
// wire version 3 or newer acknowledged the batch. An older backend ignores them: they are then
// kept unsent and not sent again until a reply says the backend was upgraded. The thresholds the
// backend reports in its usage objects come back through SyncTarget::apply_backend_usage.
//
// Thread safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sync/local_store.h"

namespace paygent::internal {

struct SyncOptions {
  std::string backend_url;  // "http://host:port"
  std::string api_key;
  absl::Duration flush_interval = absl::Seconds(5);
  std::size_t batch_size = 100;
  std::int64_t max_spool_events = 1'000'000;
  absl::Duration refresh_interval = absl::Seconds(60);
  absl::Duration request_timeout = absl::Seconds(10);
};

// The backend's totals for one user over one period.
struct BackendUsage {
  struct Subscription {
    std::string plan;
    std::int64_t period_start_ns = 0;  // the first period, as POST /users/{id}/subscription set it
    std::int64_t period_end_ns = 0;
  };
  std::string user_id;
  std::optional<Subscription> subscription;  // nullopt: none (or an older backend that does not say)
  std::int64_t period_start_ns = 0;
  std::int64_t period_end_ns = 0;
  std::int64_t spend_nanos = 0;
  struct Model {
    std::int64_t input_tokens = 0;
    std::int64_t output_tokens = 0;
    Nanos cost = 0;
    std::int64_t calls = -1;  // -1: the backend did not say
  };
  std::map<std::string, Model> models;
  // Soft-gate thresholds fired in this period (by any process of the product, as far as the
  // backend has heard; session limits of sessions that started in it). user_id is the user's.
  // Empty from a backend before wire version 3.
  std::vector<FiredThreshold> soft_gates;
  // The customer's prepaid credit wallet, in nano-credits: granted (rounded down) and charged (used
  // plus overage, rounded up); nullopt when the user has none (or the backend is older than
  // wallets, or its amounts do not fit).
  struct Wallet {
    std::int64_t granted_nanocredits = 0;
    std::int64_t charged_nanocredits = 0;
  };
  std::optional<Wallet> wallet;
};

// What the syncer hands back to the engine.
class SyncTarget {
 public:
  virtual ~SyncTarget() = default;
  virtual void apply_backend_usage(const BackendUsage& usage) = 0;
  virtual void apply_backend_plans(std::string_view plan_config_json) = 0;
  virtual void sync_error(absl::Status status) = 0;
  // The backend became unreachable (said once per outage, not per retry).
  virtual void backend_down(absl::Status status) = 0;
  virtual void events_dropped(std::int64_t count) = 0;
  // A refresh round (every refresh_interval) began: users active from now on are refreshed again.
  virtual void refresh_round() = 0;
  // Events a backend at least as new as them (docs/wire.md, "Versions") refused as malformed:
  // set aside, never resent. A refusal by an older backend is not final: those events are kept
  // and sent once it is upgraded (said through sync_error).
  virtual void events_rejected(std::int64_t count, std::string reason) = 0;
};

class Syncer {
 public:
  // Fails (InvalidArgument) when backend_url is not "http://host[:port]".
  static absl::StatusOr<std::unique_ptr<Syncer>> start(SyncOptions options, LocalStore* store, SyncTarget* target);
  ~Syncer();  // stops at once; call stop() first to deliver what can be delivered

  // New events were committed to the store: deliver early if a batch is full.
  void wake() noexcept;
  // Fetch this user's backend usage at the next pass; `urgent` (a period window was just created
  // for them) wakes the syncer for it now.
  void watch_user(std::string user_id, bool urgent = true);
  // Delivers every event stored before the call. DeadlineExceeded when the backend did not take
  // them all in time (they stay in the store and are delivered later); Unavailable when it failed,
  // or when events wait for a newer backend (docs/wire.md, "Versions").
  absl::Status flush(absl::Duration deadline);
  // Delivers what can be delivered within `deadline`, then stops the thread.
  void stop(absl::Duration deadline);

  // False after a failed exchange with the backend, true after a good one (and before the first).
  [[nodiscard]] bool backend_healthy() const noexcept;
  [[nodiscard]] std::int64_t delivered() const noexcept;

  struct Impl;

 private:
  explicit Syncer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One blocking HTTP/1.1 exchange with paygentd, for the command line (not the hot path):
// `method` `target` with `Authorization: Bearer <bearer>` (when not empty) and a JSON `body`.
// Returns the status code and body; Unavailable when the backend cannot be reached in `timeout`.
struct HttpReply {
  int status = 0;
  std::string body;
};
absl::StatusOr<HttpReply> http_exchange(const std::string& base_url, std::string_view method, std::string target,
                                        std::string_view bearer, std::string body,
                                        absl::Duration timeout = absl::Seconds(10));

// `s` percent-encoded for a URL's path segment or query value: RFC 3986's unreserved characters
// are kept, every other byte is %XX.
std::string percent_encode(std::string_view s);

}  // namespace paygent::internal
