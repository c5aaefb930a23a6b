// Webhooks and forecasts (docs/webhooks.md): what an alert says, how its body is signed, when a
// failed delivery is tried again, when a user is predicted to reach a cap, and the sender that
// posts the outbox (Storage::claim_webhook_deliveries) off the request path.
//
// The free functions are pure (or read only OpenSSL's random source) and safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "billing/invoice.h"
#include "paygent/plan.h"
#include "server/metrics.h"
#include "server/storage.h"

namespace paygent::server {

// "soft_gate", "hard_gate", "delivery_failure", "forecast", "wallet_low", "wallet_empty",
// "invoice_ready".
std::string_view alert_type_name(AlertType type) noexcept;
// The type of a name alert_type_name() gives; nullopt for another text.
std::optional<AlertType> parse_alert_type(std::string_view name) noexcept;

// A webhook URL, http://host[:port][/path][?query]: plain HTTP to any host (TLS is not offered
// yet). InvalidArgument naming "url" otherwise.
struct WebhookUrl {
  std::string host;          // a name or an address; an IPv6 one without its brackets
  std::string port = "80";   // "443" for https:// without a port
  std::string host_header;   // the request's Host: "[::1]:8085", "alerts.example.com"
  std::string target = "/";  // the path and query sent in the request line
  bool tls = false;          // https://: the receiver's certificate is verified for `host`
};
absl::StatusOr<WebhookUrl> parse_webhook_url(std::string_view url);

// "wh_" + 24 random hex digits, and "whsec_" + 64: Internal when the random source fails.
absl::StatusOr<std::string> generate_webhook_id();
absl::StatusOr<std::string> generate_webhook_secret();

// HMAC-SHA256 of `message` under `key`, as 64 lowercase hex digits.
std::string hmac_sha256_hex(std::string_view key, std::string_view message);

// The Paygent-Signature header of a delivery at `unix_seconds`: "t=<seconds>,v1=<hex>", the HMAC
// of "<seconds>.<body>" under the endpoint's secret (Stripe's scheme; docs/webhooks.md shows how a
// receiver checks it).
inline constexpr std::string_view kSignatureHeader = "Paygent-Signature";
std::string signature_header(std::string_view secret, std::int64_t unix_seconds, std::string_view body);

// How long to wait after the `failures`-th failed attempt (1 for the first) before the next:
// base * 2^(failures - 1), at most `max`, of which a random half is dropped (the "equal jitter"
// of AWS's note on backoff): between d/2 and d, from `random` (any 64-bit value). Never below 1 ms.
absl::Duration backoff_delay(std::int64_t failures, absl::Duration base, absl::Duration max,
                             std::uint64_t random) noexcept;

// When a user whose period [period_start_ns, period_end_ns) has spent `spend_nanos` by `now_ns`
// reaches `cap_nanos` at the same burn rate (spend so far / time elapsed): now + (cap - spend) *
// elapsed / spend, in integer nanoseconds (128-bit intermediate). nullopt when nothing is spent,
// the cap is already reached, no time has elapsed, or the predicted time is not before the
// period's end.
std::optional<std::int64_t> forecast_reach_ns(std::int64_t spend_nanos, std::int64_t cap_nanos,
                                              std::int64_t period_start_ns, std::int64_t period_end_ns,
                                              std::int64_t now_ns) noexcept;

// The user's period spend cap in nano-USD: their plan's (their subscription's, else the config's
// default plan) max_spend_per_period scaled by hard_gate_at. nullopt without a config, a plan or
// a cap.
std::optional<std::int64_t> period_cap_nanos(const PlanConfig* config, const UserRecord& user) noexcept;
// The price of `user`'s plan (Plan::price: what they pay per period), if it has one.
std::optional<std::int64_t> period_price_nanos(const PlanConfig* config, const UserRecord& user) noexcept;
// When a cost of `cost_nanos` so far this period, at the same rate, reaches `price_nanos`: now when
// it already has; nullopt when it will not before the period ends (or nothing is spent yet).
std::optional<std::int64_t> price_reach_ns(std::int64_t cost_nanos, std::int64_t price_nanos, std::int64_t period_start_ns,
                                           std::int64_t period_end_ns, std::int64_t now_ns) noexcept;

// The alert's event id: 32 hex digits of SHA-256 of product and key, so that every replica names
// one alert the same.
std::string alert_event_id(std::string_view product_id, std::string_view alert_key);

// What ingest raises for one batch of `product_id` (the AlertsOf of Storage::ingest_with_alerts),
// of the types in `wanted`: a soft_gate alert per soft threshold in `batch_soft_gates` and a
// hard_gate alert per hard one (an application process refused a call on that limit); a hard_gate
// alert per user whose period spend is at or over their cap (keyed as the total_spend hard gate
// of the period, so that either raises it once); a forecast alert per user predicted
// (forecast_reach_ns) to reach their cap within `horizon` of `now_ns`. Each keyed once per user,
// limit and period (and threshold). Amounts in nano-USD.
std::vector<WebhookAlert> batch_alerts(std::string_view product_id, const PlanConfig* config,
                                       std::span<const UserUsage> usage,
                                       std::span<const SoftGateFired> batch_soft_gates, std::uint32_t wanted,
                                       std::int64_t now_ns, absl::Duration horizon);

// What a credit wallet's state raises, of the types in `wanted`: wallet_low when its balance is at
// most `low_percent` of the credits granted (0 included), wallet_empty when it is 0 (a wallet with no credits
// raises nothing). Each keyed once per customer and number of top-ups, so that a top-up lets the
// wallet raise them again. Settle calls it, in its transaction, after it moved the balance.
std::vector<WebhookAlert> wallet_alerts(std::string_view product_id, const WalletRecord& wallet, std::uint32_t wanted,
                                        std::int64_t now_ns, std::int64_t low_percent = 20);

// The key of the invoice_ready alert of `customer_id`'s `period`.
std::string invoice_ready_key(std::string_view customer_id, billing::BillingPeriod period);
// The invoice_ready alert of `customer_id`'s invoice for its period `invoice.period` (final: the
// period ended), keyed once per customer and period.
WebhookAlert invoice_ready_alert(std::string_view product_id, std::string_view customer_id,
                                 const billing::Invoice& invoice, std::int64_t now_ns);

// A delivery_failure alert: the backend refused a batch of the syncer with `code` and `message`.
// Keyed by product, code and UTC minute, so a syncer retrying the batch raises one per minute.
WebhookAlert delivery_failure_alert(std::string_view product_id, int http_status, std::string_view message,
                                    std::int64_t now_ns);

// One POST of a delivery: the URL's host, port and target, the headers and body. What a
// WebhookPoster sends.
struct WebhookPost {
  WebhookUrl url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};
// Sends one POST and returns the HTTP status, or Unavailable/DeadlineExceeded when there was no
// answer within `timeout` (connect, write and read together). Called from the sender's threads.
using WebhookPoster = std::function<absl::StatusOr<int>(const WebhookPost& post, absl::Duration timeout)>;

struct WebhookSenderOptions {
  // Deliveries posted at once, each on a thread of its own: the most connections the sender holds
  // and the most bodies it keeps in memory. More drains a backlog faster; a slow receiver holds a
  // thread for at most `timeout`.
  int workers = 4;
  // The longest one attempt may take (connect, send, receive); then it counts as failed.
  absl::Duration timeout = absl::Seconds(10);
  // The first retry's delay, doubled after each failure up to max_backoff (with jitter).
  absl::Duration base_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Hours(1);
  // Attempts before a delivery is marked failed. The default with the backoff above retries for
  // about a day and a half.
  int max_attempts = 12;
  // How often an idle sender looks for due deliveries (wake() makes it look at once).
  absl::Duration poll_interval = absl::Seconds(1);
};

// Posts the outbox's deliveries: `workers` threads, each claiming one due delivery at a time
// (Storage::claim_webhook_deliveries, leased for 2 * timeout + 5 s; at most one in flight per
// product, so one tenant's slow receiver cannot take every worker), posting it signed, and
// recording the outcome (delivered on 2xx; else retried after backoff_delay(), failed after
// max_attempts). At least once: a delivery whose outcome was not recorded (a crash) is due again
// when its lease ends, with the same delivery id and body.
//
// Lifetime: `storage` (and `metrics`, when given) must outlive the sender. Thread safety: wake() and stop() are safe from any
// thread; stop() (or the destructor) returns once every worker has finished its attempt in flight.
class WebhookSender {
 public:
  // Counts each attempt in `metrics` when it is not null.
  WebhookSender(Storage& storage, WebhookPoster poster, WebhookSenderOptions options, Metrics* metrics = nullptr);
  ~WebhookSender();
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  // Starts the workers (once).
  void start();
  // New deliveries may be due: idle workers look now.
  void wake();
  // Stops the workers: none starts another attempt; each finishes the one it is in (at most
  // `timeout`). Idempotent.
  void stop();

  // Attempts made, and those that delivered, since start (for tests and metrics).
  [[nodiscard]] std::int64_t attempts() const noexcept { return attempts_.load(); }
  [[nodiscard]] std::int64_t delivered() const noexcept { return delivered_.load(); }

 private:
  void run_worker(std::uint64_t seed);
  // Posts one claimed delivery and records the outcome.
  void attempt(const WebhookDelivery& delivery, std::uint64_t random);

  Storage& storage_;
  Metrics* const metrics_;
  const WebhookPoster poster_;
  const WebhookSenderOptions options_;
  absl::Mutex claim_mu_;  // held across a claim, never while posting; taken before mu_
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The products (WebhookDelivery::product) a worker is posting for: at most one each at a time.
  std::vector<std::int64_t> busy_ ABSL_GUARDED_BY(mu_);
  std::uint64_t wakes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_;
  std::atomic<std::int64_t> attempts_{0};
  std::atomic<std::int64_t> delivered_{0};
};

}  // namespace paygent::server
