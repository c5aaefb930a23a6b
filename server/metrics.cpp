// Metrics (see server/metrics.h).
#include "server/metrics.h"

#include <cstdio>

#include "meter/internal/str_cat.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;

// A double as Prometheus expects it (shortest round-trip text).
std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

void Metrics::record_request(std::string_view path, int status, absl::Duration elapsed) {
  if (status >= 400) errors_.fetch_add(1, std::memory_order_relaxed);
  const double seconds = absl::ToDoubleSeconds(elapsed);
  std::size_t bucket = 0;
  while (bucket < kDurationBuckets.size() && seconds > kDurationBuckets[bucket]) ++bucket;
  absl::MutexLock lock(&mu_);
  ++requests_[{std::string(path), status}];
  ++buckets_[bucket];
  ++duration_count_;
  duration_sum_ += elapsed;
}

void Metrics::record_ingest(std::int64_t accepted, std::int64_t duplicates) noexcept {
  ingested_.fetch_add(accepted, std::memory_order_relaxed);
  duplicates_.fetch_add(duplicates, std::memory_order_relaxed);
}

void Metrics::record_webhook_attempt(WebhookOutcome outcome) noexcept {
  webhook_attempts_[static_cast<std::size_t>(outcome)].fetch_add(1, std::memory_order_relaxed);
}

std::string Metrics::prometheus_text() const {
  std::string out;
  out +=
      "# HELP paygentd_http_requests_total HTTP requests answered, by route and status code.\n"
      "# TYPE paygentd_http_requests_total counter\n";
  absl::MutexLock lock(&mu_);
  for (const auto& [key, count] : requests_) {
    str_append(&out, "paygentd_http_requests_total{path=\"", key.first, "\",code=\"", key.second, "\"} ", count,
               "\n");
  }
  str_append(&out,
             "# HELP paygentd_events_ingested_total Usage events stored by the batch path.\n"
             "# TYPE paygentd_events_ingested_total counter\n"
             "paygentd_events_ingested_total ",
             ingested_.load(std::memory_order_relaxed),
             "\n"
             "# HELP paygentd_events_duplicate_total Usage events acknowledged as duplicates and not stored again.\n"
             "# TYPE paygentd_events_duplicate_total counter\n"
             "paygentd_events_duplicate_total ",
             duplicates_.load(std::memory_order_relaxed),
             "\n"
             "# HELP paygentd_errors_total Requests answered with a 4xx or 5xx status.\n"
             "# TYPE paygentd_errors_total counter\n"
             "paygentd_errors_total ",
             errors_.load(std::memory_order_relaxed),
             "\n"
             "# HELP paygentd_wallet_settle_errors_total Credit wallet settles that failed after their batch was "
             "stored (the next settle of the wallet takes them up).\n"
             "# TYPE paygentd_wallet_settle_errors_total counter\n"
             "paygentd_wallet_settle_errors_total ",
             wallet_errors_.load(std::memory_order_relaxed),
             "\n"
             "# HELP paygentd_request_duration_seconds Time to answer a request, from its parsed form to its reply.\n"
             "# TYPE paygentd_request_duration_seconds histogram\n");
  std::int64_t cumulative = 0;
  for (std::size_t i = 0; i < kDurationBuckets.size(); ++i) {
    cumulative += buckets_[i];
    str_append(&out, "paygentd_request_duration_seconds_bucket{le=\"", number(kDurationBuckets[i]), "\"} ",
               cumulative, "\n");
  }
  cumulative += buckets_.back();
  str_append(&out, "paygentd_request_duration_seconds_bucket{le=\"+Inf\"} ", cumulative, "\n",
             "paygentd_request_duration_seconds_sum ", number(absl::ToDoubleSeconds(duration_sum_)), "\n",
             "paygentd_request_duration_seconds_count ", duration_count_, "\n");
  out +=
      "# HELP paygentd_webhook_attempts_total Webhook delivery attempts, by outcome.\n"
      "# TYPE paygentd_webhook_attempts_total counter\n";
  static constexpr std::array<std::string_view, 3> kOutcomes = {"delivered", "retry", "failed"};
  for (std::size_t i = 0; i < kOutcomes.size(); ++i) {
    str_append(&out, "paygentd_webhook_attempts_total{outcome=\"", kOutcomes[i], "\"} ",
               webhook_attempts_[i].load(std::memory_order_relaxed), "\n");
  }
  return out;
}

}  // namespace paygent::server
