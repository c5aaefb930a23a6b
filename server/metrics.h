// paygentd's counters, exposed at GET /metrics in Prometheus text format (version 0.0.4):
//   paygentd_http_requests_total{path,code}    requests answered, by route pattern and status
//   paygentd_events_ingested_total             events stored by the batch path
//   paygentd_events_duplicate_total            events acknowledged as duplicates, not stored again
//   paygentd_errors_total                      requests answered with a 4xx or 5xx status
//   paygentd_request_duration_seconds          histogram of the time to answer a request
//   paygentd_webhook_attempts_total{outcome}   webhook delivery attempts: delivered, retry, failed
//
// Thread safety: every method may be called from any thread at any time.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace paygent::server {

class Metrics {
 public:
  // Upper bounds of the duration histogram's buckets, in seconds (+Inf is implied).
  static constexpr std::array<double, 14> kDurationBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                              0.1,    0.25,  0.5,    1,     2.5,  5,     10};

  // Counts one answered request. `path` is a route pattern from a small fixed set (e.g.
  // "/api/v1/users/{id}/usage", or "other"), never a raw URL, so the label set stays bounded.
  void record_request(std::string_view path, int status, absl::Duration elapsed);

  // Counts the outcome of one stored batch.
  void record_ingest(std::int64_t accepted, std::int64_t duplicates) noexcept;

  // Counts one webhook delivery attempt by its outcome: delivered (2xx), retry (to be tried
  // again), failed (the last attempt failed).
  enum class WebhookOutcome : std::uint8_t { kDelivered, kRetry, kFailed };
  void record_webhook_attempt(WebhookOutcome outcome) noexcept;
  // Counts a credit wallet settle that failed after its batch was stored (the next settle takes it up).
  void record_wallet_error() noexcept { wallet_errors_.fetch_add(1, std::memory_order_relaxed); }

  // The metrics in Prometheus text exposition format.
  [[nodiscard]] std::string prometheus_text() const;

  // Read by tests.
  [[nodiscard]] std::int64_t events_ingested() const noexcept { return ingested_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t events_duplicate() const noexcept { return duplicates_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t errors() const noexcept { return errors_.load(std::memory_order_relaxed); }

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, int>, std::int64_t, std::less<>> requests_ ABSL_GUARDED_BY(mu_);
  std::array<std::int64_t, kDurationBuckets.size() + 1> buckets_ ABSL_GUARDED_BY(mu_) = {};  // not cumulative
  std::int64_t duration_count_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration duration_sum_ ABSL_GUARDED_BY(mu_);

  std::atomic<std::int64_t> ingested_{0};
  std::atomic<std::int64_t> duplicates_{0};
  std::atomic<std::int64_t> errors_{0};
  std::atomic<std::int64_t> wallet_errors_{0};
  std::array<std::atomic<std::int64_t>, 3> webhook_attempts_{};  // by WebhookOutcome
};

}  // namespace paygent::server
