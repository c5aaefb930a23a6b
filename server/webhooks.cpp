// Webhooks and forecasts (see server/webhooks.h, docs/webhooks.md).
#include "server/webhooks.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "billing/decimal.h"
#include "meter/internal/str_cat.h"
#include "server/api_key.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

constexpr std::int64_t kNanosPerMinute = 60'000'000'000;

// The members every alert body starts with after its delivery id.
std::string common_fields(std::string_view event_id, AlertType type, std::string_view product_id,
                          std::int64_t now_ns) {
  return str_cat("\"event_id\":", json_quote(event_id), ",\"type\":", json_quote(alert_type_name(type)),
                 ",\"created_ns\":", now_ns, ",\"product_id\":", json_quote(product_id));
}

// A key of parts that cannot run into each other (each text is length-prefixed).
std::string alert_key(AlertType type, std::string_view user_id, std::string_view limit, std::int64_t period_start_ns,
                      std::int64_t extra) {
  return str_cat(alert_type_name(type), "|", user_id.size(), ":", user_id, "|", limit.size(), ":", limit, "|",
                 period_start_ns, "|", extra);
}

std::int64_t period_spend(const UserUsage& usage) {
  std::int64_t total = 0;
  for (const auto& [model, t] : usage.models) {
    if (__builtin_add_overflow(total, t.cost_nanos, &total)) return std::numeric_limits<std::int64_t>::max();
  }
  return total;
}

// An alert about one user's limit in the period that starts at `key_period_start_ns` (keyed by
// it and `extra`), with the user's usage of their current period.
WebhookAlert user_alert(std::string_view product_id, AlertType type, const UserUsage& usage, std::string_view limit,
                        std::optional<std::int64_t> cap, std::int64_t key_period_start_ns, std::int64_t extra,
                        std::string_view more_fields, std::int64_t now_ns) {
  WebhookAlert alert;
  alert.type = type;
  alert.user_id = usage.user.user_id;
  alert.alert_key = alert_key(type, usage.user.user_id, limit, key_period_start_ns, extra);
  alert.event_id = alert_event_id(product_id, alert.alert_key);
  alert.fields_json = str_cat(common_fields(alert.event_id, type, product_id, now_ns),
                              ",\"user_id\":", json_quote(usage.user.user_id), ",\"limit\":", json_quote(limit),
                              ",\"period_start_ns\":", usage.period.from_ns, ",\"period_end_ns\":", usage.period.to_ns,
                              ",\"spend_nanos\":", period_spend(usage),
                              ",\"cap_nanos\":", cap ? std::to_string(*cap) : std::string("null"), more_fields);
  return alert;
}

}  // namespace

std::string_view alert_type_name(AlertType type) noexcept {
  switch (type) {
    case AlertType::kSoftGate: return "soft_gate";
    case AlertType::kHardGate: return "hard_gate";
    case AlertType::kDeliveryFailure: return "delivery_failure";
    case AlertType::kForecast: return "forecast";
    case AlertType::kWalletLow: return "wallet_low";
    case AlertType::kWalletEmpty: return "wallet_empty";
    case AlertType::kInvoiceReady: return "invoice_ready";
  }
  return "unknown";
}

std::optional<AlertType> parse_alert_type(std::string_view name) noexcept {
  for (AlertType t : kAlertTypes) {
    if (alert_type_name(t) == name) return t;
  }
  return std::nullopt;
}

absl::StatusOr<WebhookUrl> parse_webhook_url(std::string_view url) {
  if (url.size() > 2048) return absl::InvalidArgumentError("url: at most 2048 characters");
  WebhookUrl out;
  std::string_view kScheme = "http://";
  if (url.starts_with("https://")) {
    kScheme = "https://";
    out.tls = true;
    out.port = "443";
  } else if (!url.starts_with(kScheme)) {
    return absl::InvalidArgumentError("url: must start with http:// or https://");
  }
  for (const char c : url) {
    if (c <= ' ' || c == 0x7f || static_cast<unsigned char>(c) >= 0x80) {
      return absl::InvalidArgumentError("url: must be printable ASCII without spaces");
    }
  }
  std::string_view rest = url.substr(kScheme.size());
  const std::size_t path_at = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, path_at);
  if (path_at != std::string_view::npos) {
    out.target = std::string(rest.substr(path_at));
    if (out.target.front() == '?') out.target.insert(0, "/");
  }
  if (authority.find('@') != std::string_view::npos) return absl::InvalidArgumentError("url: must not hold a user");
  // An IPv6 literal is bracketed ("[::1]:8085"): the host is what the brackets hold.
  std::string_view host = authority, port;
  bool v6 = false, port_given = false;
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return absl::InvalidArgumentError("url: an IPv6 address must end with ]");
    host = authority.substr(1, close - 1);
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](char c) {
          return absl::ascii_isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
        })) {
      return absl::InvalidArgumentError("url: the brackets must hold an IPv6 address");
    }
    v6 = true;
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') {
      return absl::InvalidArgumentError("url: only a :port may follow an IPv6 address");
    }
    if (!after.empty()) port = after.substr(1), port_given = true;
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    port_given = true;
  }
  if (port_given) {
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(std::string(port)) < 1 || std::stoi(std::string(port)) > 65535) {
      return absl::InvalidArgumentError("url: the port must be a number from 1 to 65535");
    }
    out.port = std::string(port);
  }
  if (host.empty()) return absl::InvalidArgumentError("url: must name a host");
  out.host = std::string(host);
  // RFC 9110's Host: the host as the URL writes it, with the port unless it is the scheme's own.
  out.host_header = v6 ? str_cat("[", host, "]") : out.host;
  if (out.port != (out.tls ? "443" : "80")) str_append(&out.host_header, ":", out.port);
  return out;
}

absl::StatusOr<std::string> generate_webhook_id() {
  absl::StatusOr<std::string> hex = random_hex(12);
  if (!hex.ok()) return hex.status();
  return "wh_" + *hex;
}

absl::StatusOr<std::string> generate_webhook_secret() {
  absl::StatusOr<std::string> hex = random_hex(32);
  if (!hex.ok()) return hex.status();
  return "whsec_" + *hex;
}

std::string hmac_sha256_hex(std::string_view key, std::string_view message) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
       message.size(), digest.data(), &length);
  return to_hex(digest.data(), length);
}

std::string signature_header(std::string_view secret, std::int64_t unix_seconds, std::string_view body) {
  const std::string t = std::to_string(unix_seconds);
  return str_cat("t=", t, ",v1=", hmac_sha256_hex(secret, str_cat(t, ".", body)));
}

absl::Duration backoff_delay(std::int64_t failures, absl::Duration base, absl::Duration max,
                             std::uint64_t random) noexcept {
  const std::int64_t base_ns = std::max<std::int64_t>(absl::ToInt64Nanoseconds(base), 1'000'000);
  const std::int64_t max_ns = std::max(absl::ToInt64Nanoseconds(max), base_ns);
  std::int64_t d = base_ns;
  for (std::int64_t i = 1; i < failures && d < max_ns; ++i) d = d > max_ns / 2 ? max_ns : d * 2;
  d = std::min(d, max_ns);
  const std::int64_t half = d / 2;
  const std::int64_t jitter = half > 0 ? static_cast<std::int64_t>(random % static_cast<std::uint64_t>(half + 1)) : 0;
  return absl::Nanoseconds(std::max<std::int64_t>(d - half + jitter, 1'000'000));
}

std::optional<std::int64_t> forecast_reach_ns(std::int64_t spend_nanos, std::int64_t cap_nanos,
                                              std::int64_t period_start_ns, std::int64_t period_end_ns,
                                              std::int64_t now_ns) noexcept {
  if (spend_nanos <= 0 || spend_nanos >= cap_nanos || now_ns <= period_start_ns || now_ns >= period_end_ns) {
    return std::nullopt;
  }
  const __int128 elapsed = static_cast<__int128>(now_ns) - period_start_ns;
  // The rest of the cap at spend / elapsed per ns, rounded up: reached no earlier than this.
  const __int128 wait = (static_cast<__int128>(cap_nanos - spend_nanos) * elapsed + spend_nanos - 1) / spend_nanos;
  const __int128 reach = static_cast<__int128>(now_ns) + wait;
  if (reach >= period_end_ns) return std::nullopt;
  return static_cast<std::int64_t>(reach);
}

namespace {

// The plan of `user`: their subscription's, else the config's default; nullptr for none.
const Plan* plan_of(const PlanConfig* config, const UserRecord& user) noexcept {
  if (config == nullptr) return nullptr;
  const std::string& name = user.subscription ? user.subscription->plan : config->default_plan;
  return name.empty() ? nullptr : config->find(name);
}

}  // namespace

std::optional<std::int64_t> period_cap_nanos(const PlanConfig* config, const UserRecord& user) noexcept {
  const Plan* plan = plan_of(config, user);
  if (plan == nullptr || !plan->max_spend_per_period) return std::nullopt;
  const __int128 cap = static_cast<__int128>(*plan->max_spend_per_period) * config->hard_gate_at / kPpmOne;
  return static_cast<std::int64_t>(std::min<__int128>(cap, std::numeric_limits<std::int64_t>::max()));
}

std::optional<std::int64_t> period_price_nanos(const PlanConfig* config, const UserRecord& user) noexcept {
  const Plan* plan = plan_of(config, user);
  if (plan == nullptr || !plan->price) return std::nullopt;
  return *plan->price;
}

std::optional<std::int64_t> price_reach_ns(std::int64_t cost_nanos, std::int64_t price_nanos, std::int64_t period_start_ns,
                                           std::int64_t period_end_ns, std::int64_t now_ns) noexcept {
  if (now_ns < period_start_ns || now_ns >= period_end_ns || cost_nanos <= 0) return std::nullopt;
  if (cost_nanos >= price_nanos) return now_ns;  // there already
  return forecast_reach_ns(cost_nanos, price_nanos, period_start_ns, period_end_ns, now_ns);
}

std::string alert_event_id(std::string_view product_id, std::string_view alert_key) {
  return sha256_hex(str_cat(product_id.size(), ":", product_id, "|", alert_key)).substr(0, 32);
}

std::vector<WebhookAlert> batch_alerts(std::string_view product_id, const PlanConfig* config,
                                       std::span<const UserUsage> usage,
                                       std::span<const SoftGateFired> batch_soft_gates, std::uint32_t wanted,
                                       std::int64_t now_ns, absl::Duration horizon) {
  std::vector<WebhookAlert> out;
  auto wants = [wanted](AlertType t) { return (wanted & static_cast<std::uint32_t>(t)) != 0; };
  // `usage` is in user id order: the usage of a soft gate's user.
  auto usage_of = [&usage](std::string_view user_id) -> const UserUsage* {
    auto it = std::lower_bound(usage.begin(), usage.end(), user_id,
                               [](const UserUsage& u, std::string_view id) { return u.user.user_id < id; });
    return it != usage.end() && it->user.user_id == user_id ? &*it : nullptr;
  };
  for (const SoftGateFired& g : batch_soft_gates) {
    if (!g.hard || !wants(AlertType::kHardGate)) continue;
    // A call an application process refused: the same alert (and key) as a spend that reached
    // the cap at ingest, so each limit's hard gate is raised once per period, whoever saw it first.
    const UserUsage* u = usage_of(g.user_id);
    if (u == nullptr) continue;
    std::optional<std::int64_t> cap;
    if (g.limit_key == "total_spend") cap = period_cap_nanos(config, u->user);
    out.push_back(user_alert(product_id, AlertType::kHardGate, *u, g.limit_key, cap, g.period_start_ns, 0,
                             str_cat(",\"reported_by\":\"application\",\"threshold_ppm\":", g.threshold_ppm,
                                     ",\"fired_ns\":", g.fired_ns),
                             now_ns));
  }
  if (wants(AlertType::kSoftGate)) {
    for (const SoftGateFired& g : batch_soft_gates) {
      if (g.hard) continue;
      const UserUsage* u = usage_of(g.user_id);
      if (u == nullptr) continue;
      std::optional<std::int64_t> cap;
      if (g.limit_key == "total_spend") cap = period_cap_nanos(config, u->user);
      // Keyed by the gate's period as the application process saw it.
      out.push_back(user_alert(product_id, AlertType::kSoftGate, *u, g.limit_key, cap, g.period_start_ns,
                               g.threshold_ppm, str_cat(",\"threshold_ppm\":", g.threshold_ppm), now_ns));
    }
  }
  if (!wants(AlertType::kHardGate) && !wants(AlertType::kForecast)) return out;
  const std::int64_t horizon_ns = absl::ToInt64Nanoseconds(horizon);
  for (const UserUsage& u : usage) {
    // A customer whose cost is on course to pass what their plan charges them (its price).
    if (const std::optional<std::int64_t> price = period_price_nanos(config, u.user); price && wants(AlertType::kForecast)) {
      const std::optional<std::int64_t> reach =
          price_reach_ns(period_spend(u), *price, u.period.from_ns, u.period.to_ns, now_ns);
      if (reach && *reach - now_ns <= horizon_ns) {
        out.push_back(user_alert(product_id, AlertType::kForecast, u, "plan_price", price, u.period.from_ns, 0,
                                 str_cat(",\"predicted_reach_ns\":", *reach, ",\"predicted_reach_at\":",
                                         json_quote(rfc3339_utc(*reach))),
                                 now_ns));
      }
    }
    const std::optional<std::int64_t> cap = period_cap_nanos(config, u.user);
    if (!cap) continue;
    const std::int64_t spend = period_spend(u);
    if (spend >= *cap) {
      if (wants(AlertType::kHardGate)) {
        out.push_back(user_alert(product_id, AlertType::kHardGate, u, "total_spend", cap, u.period.from_ns, 0, "", now_ns));
      }
      continue;
    }
    if (!wants(AlertType::kForecast)) continue;
    const std::optional<std::int64_t> reach = forecast_reach_ns(spend, *cap, u.period.from_ns, u.period.to_ns, now_ns);
    if (!reach || *reach - now_ns > horizon_ns) continue;
    out.push_back(user_alert(product_id, AlertType::kForecast, u, "total_spend", cap, u.period.from_ns, 0,
                             str_cat(",\"predicted_reach_ns\":", *reach, ",\"predicted_reach_at\":",
                                     json_quote(rfc3339_utc(*reach))),
                             now_ns));
  }
  return out;
}

std::vector<WebhookAlert> wallet_alerts(std::string_view product_id, const WalletRecord& wallet, std::uint32_t wanted,
                                        std::int64_t now_ns, std::int64_t low_percent) {
  std::vector<WebhookAlert> out;
  absl::StatusOr<billing::Decimal> granted = billing::Decimal::parse(wallet.granted);
  absl::StatusOr<billing::Decimal> balance = billing::Decimal::parse(wallet.balance);
  if (!granted.ok() || !balance.ok() || !(billing::Decimal() < *granted)) return out;
  // balance <= granted x percent / 100, exactly: 100 x balance <= percent x granted.
  absl::StatusOr<billing::Decimal> hundred_times = billing::Decimal::mul(*balance, billing::Decimal::from_int(100));
  absl::StatusOr<billing::Decimal> line = billing::Decimal::mul(*granted, billing::Decimal::from_int(low_percent));
  const bool low = hundred_times.ok() && line.ok() && *hundred_times <= *line;
  const bool empty = !(billing::Decimal() < *balance);
  for (const auto& [type, raised] : {std::pair{AlertType::kWalletLow, low}, std::pair{AlertType::kWalletEmpty, empty}}) {
    if (!raised || (wanted & static_cast<std::uint32_t>(type)) == 0) continue;
    WebhookAlert alert;
    alert.type = type;
    alert.user_id = wallet.customer_id;
    // Once per wallet and top-up: a top-up that lifts it above the line lets it be raised again.
    alert.alert_key = alert_key(type, wallet.customer_id, "credit_wallet", wallet.top_ups, 0);
    alert.event_id = alert_event_id(product_id, alert.alert_key);
    alert.fields_json = str_cat(common_fields(alert.event_id, type, product_id, now_ns),
                                ",\"user_id\":", json_quote(wallet.customer_id), ",\"limit\":\"credit_wallet\"",
                                ",\"granted\":", json_quote(wallet.granted), ",\"balance\":", json_quote(wallet.balance),
                                ",\"used\":", json_quote(wallet.used), ",\"overage\":", json_quote(wallet.overage),
                                ",\"top_ups\":", wallet.top_ups,
                                type == AlertType::kWalletLow ? str_cat(",\"threshold_ppm\":", low_percent * 10'000) : "");
    out.push_back(std::move(alert));
  }
  return out;
}

std::string invoice_ready_key(std::string_view customer_id, billing::BillingPeriod period) {
  return alert_key(AlertType::kInvoiceReady, customer_id, "invoice", period.start_ns, period.end_ns);
}

WebhookAlert invoice_ready_alert(std::string_view product_id, std::string_view customer_id,
                                 const billing::Invoice& invoice, std::int64_t now_ns) {
  WebhookAlert alert;
  alert.type = AlertType::kInvoiceReady;
  alert.user_id = std::string(customer_id);
  alert.alert_key = invoice_ready_key(customer_id, invoice.period);
  alert.event_id = alert_event_id(product_id, alert.alert_key);
  std::int64_t events = 0;
  for (const billing::InvoiceLine& l : invoice.lines) events += l.counts.counted;
  alert.fields_json = str_cat(common_fields(alert.event_id, alert.type, product_id, now_ns),
                              ",\"user_id\":", json_quote(customer_id), ",\"period_start_ns\":", invoice.period.start_ns,
                              ",\"period_end_ns\":", invoice.period.end_ns, ",\"total_nanos\":", invoice.total_nanos,
                              ",\"total_usd\":", json_quote(billing::Decimal::from_nanos(invoice.total_nanos).normalized().to_string()),
                              ",\"lines\":", invoice.lines.size(), ",\"billed_events\":", events);
  return alert;
}

WebhookAlert delivery_failure_alert(std::string_view product_id, int http_status, std::string_view message,
                                    std::int64_t now_ns) {
  const std::int64_t minute = now_ns / kNanosPerMinute * kNanosPerMinute;
  WebhookAlert alert;
  alert.type = AlertType::kDeliveryFailure;
  alert.alert_key = str_cat(alert_type_name(alert.type), "|", http_status, "|", minute);
  alert.event_id = alert_event_id(product_id, alert.alert_key);
  alert.fields_json = str_cat(common_fields(alert.event_id, alert.type, product_id, now_ns),
                              ",\"user_id\":null,\"http_status\":", http_status,
                              ",\"message\":", json_quote(message.substr(0, 1000)), ",\"window_start_ns\":", minute);
  return alert;
}

WebhookSender::WebhookSender(Storage& storage, WebhookPoster poster, WebhookSenderOptions options, Metrics* metrics)
    : storage_(storage), metrics_(metrics), poster_(std::move(poster)), options_(options) {}

WebhookSender::~WebhookSender() { stop(); }

void WebhookSender::start() {
  if (!workers_.empty()) return;
  std::random_device seed;
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    const std::uint64_t s = (static_cast<std::uint64_t>(seed()) << 32) ^ seed();
    workers_.emplace_back([this, s] { run_worker(s); });
  }
}

void WebhookSender::wake() {
  absl::MutexLock lock(&mu_);
  ++wakes_;
}

void WebhookSender::stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

void WebhookSender::run_worker(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  // A claimed delivery stays out of others' reach for the attempt and a margin to record it; a
  // sender killed while holding it leaves it due again that much later.
  const absl::Duration lease = 2 * options_.timeout + absl::Seconds(5);
  for (;;) {
    std::uint64_t wakes_seen = 0;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      wakes_seen = wakes_;
    }
    absl::StatusOr<std::vector<WebhookDelivery>> claimed;
    {
      // One claim at a time in this process, so that no two workers post for one product at once:
      // a tenant with a slow or dead receiver holds one worker, never all of them.
      absl::MutexLock claim_lock(&claim_mu_);
      std::vector<std::int64_t> busy;
      {
        absl::MutexLock lock(&mu_);
        busy = busy_;
      }
      const absl::Time now = absl::Now();
      claimed = storage_.claim_webhook_deliveries(absl::ToUnixNanos(now), absl::ToUnixNanos(now + lease), 1, busy);
      if (claimed.ok() && !claimed->empty()) {
        absl::MutexLock lock(&mu_);
        busy_.push_back(claimed->front().product);
      }
    }
    if (claimed.ok() && !claimed->empty()) {
      attempt(claimed->front(), rng());
      absl::MutexLock lock(&mu_);
      busy_.erase(std::find(busy_.begin(), busy_.end(), claimed->front().product));
      continue;
    }
    // Nothing due (or the store is busy): wait for a wake-up, a stop or the next poll.
    absl::MutexLock lock(&mu_);
    auto woken = [this, wakes_seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || wakes_ != wakes_seen; };
    mu_.AwaitWithTimeout(absl::Condition(&woken), options_.poll_interval);
  }
}

void WebhookSender::attempt(const WebhookDelivery& delivery, std::uint64_t random) {
  WebhookAttempt outcome;
  absl::StatusOr<WebhookUrl> url = parse_webhook_url(delivery.url);
  absl::StatusOr<int> status = absl::InvalidArgumentError("not sent");
  if (!url.ok()) {
    status = url.status();
  } else {
    WebhookPost post{.url = *std::move(url), .headers = {}, .body = delivery.body};
    post.headers = {{"Content-Type", "application/json"},
                    {"User-Agent", "paygentd-webhooks/1"},
                    {"Paygent-Delivery-Id", delivery.delivery_id},
                    {"Paygent-Event-Type", delivery.type},
                    {std::string(kSignatureHeader),
                     signature_header(delivery.secret, absl::ToUnixSeconds(absl::Now()), delivery.body)}};
    status = poster_(post, options_.timeout);
  }
  attempts_.fetch_add(1);
  outcome.at_ns = absl::ToUnixNanos(absl::Now());
  if (status.ok() && *status >= 200 && *status < 300) {
    outcome.next = WebhookAttempt::Next::kDelivered;
    outcome.http_status = *status;
    delivered_.fetch_add(1);
  } else {
    outcome.http_status = status.ok() ? *status : 0;
    outcome.error = status.ok() ? str_cat("HTTP ", *status) : std::string(status.status().message());
    const std::int64_t failures = delivery.attempts + 1;
    if (failures >= options_.max_attempts) {
      outcome.next = WebhookAttempt::Next::kFailed;
    } else {
      outcome.next = WebhookAttempt::Next::kRetry;
      outcome.next_attempt_ns =
          outcome.at_ns +
          absl::ToInt64Nanoseconds(backoff_delay(failures, options_.base_backoff, options_.max_backoff, random));
    }
  }
  if (metrics_ != nullptr) {
    metrics_->record_webhook_attempt(outcome.next == WebhookAttempt::Next::kDelivered ? Metrics::WebhookOutcome::kDelivered
                                     : outcome.next == WebhookAttempt::Next::kRetry   ? Metrics::WebhookOutcome::kRetry
                                                                                      : Metrics::WebhookOutcome::kFailed);
  }
  // A record that fails leaves the delivery claimed: it is due again when the lease ends.
  static_cast<void>(storage_.record_webhook_attempt(delivery.key, outcome));
}

}  // namespace paygent::server
