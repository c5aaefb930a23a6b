// Webhooks' and forecasts' arithmetic (server/webhooks.h): the signature, the backoff schedule, the
// forecast's integer arithmetic, URL checks and the alerts one batch raises.
#include "server/webhooks.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "absl/time/time.h"
#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

constexpr std::int64_t kDayNs = 86'400'000'000'000;

TEST_CASE("server.webhooks_hmac_matches_rfc4231") {
  // RFC 4231, test case 2.
  CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // The header signs "<t>.<body>" (Stripe's scheme).
  const std::string header = signature_header("whsec_k", 1764547200, R"({"a":1})");
  CHECK(header == "t=1764547200,v1=" + hmac_sha256_hex("whsec_k", R"(1764547200.{"a":1})"));
  CHECK(header != signature_header("whsec_k", 1764547201, R"({"a":1})"));
  CHECK(header != signature_header("whsec_other", 1764547200, R"({"a":1})"));
}

TEST_CASE("server.webhooks_backoff_doubles_with_jitter_up_to_the_cap") {
  const absl::Duration base = absl::Seconds(1), max = absl::Minutes(10);
  constexpr std::uint64_t kLow = 0, kHigh = std::numeric_limits<std::uint64_t>::max();
  for (std::int64_t failures = 1; failures <= 20; ++failures) {
    // Without the jitter: base * 2^(failures - 1), at most max; the jitter keeps between d/2 and d.
    absl::Duration d = base;
    for (std::int64_t i = 1; i < failures; ++i) d = std::min(d * 2, max);
    for (std::uint64_t r : {kLow, kHigh, std::uint64_t{12345}, std::uint64_t{987654321987}}) {
      const absl::Duration got = backoff_delay(failures, base, max, r);
      CHECK(got >= d / 2);
      CHECK(got <= d);
    }
  }
  CHECK(backoff_delay(1, base, max, kLow) == absl::Milliseconds(500));
  CHECK(backoff_delay(3, base, max, 2'000'000'000) == absl::Seconds(4));  // 2 s + r % (2 s + 1 ns) = 4 s
  CHECK(backoff_delay(60, base, max, kLow) == absl::Minutes(5));
  CHECK(backoff_delay(std::numeric_limits<std::int64_t>::max(), base, max, kLow) == absl::Minutes(5));
  CHECK(backoff_delay(1, absl::ZeroDuration(), absl::ZeroDuration(), kLow) >= absl::Milliseconds(1));
}

TEST_CASE("server.webhooks_forecast_arithmetic") {
  const std::int64_t start = ns_at(2026, 11, 1), end = ns_at(2026, 12, 1);
  // $0.25 spent in 5 days: $0.05 a day; the $0.75 left of a $1 cap take 15 more days.
  CHECK(forecast_reach_ns(250'000'000, 1'000'000'000, start, end, start + 5 * kDayNs) == start + 20 * kDayNs);
  // Rounded up to the nanosecond: never earlier than the rate says.
  CHECK(forecast_reach_ns(3, 10, 0, 1'000, 1) == 1 + 3);  // 7 * 1 / 3 = 2.33 -> 3
  // Past the period's end: no forecast.
  CHECK(forecast_reach_ns(100'000'000, 1'000'000'000, start, end, start + 5 * kDayNs) == std::nullopt);
  // Nothing spent, the cap reached, no time elapsed, now outside the period.
  CHECK(forecast_reach_ns(0, 1'000'000'000, start, end, start + kDayNs) == std::nullopt);
  CHECK(forecast_reach_ns(1'000'000'000, 1'000'000'000, start, end, start + kDayNs) == std::nullopt);
  CHECK(forecast_reach_ns(5, 10, start, end, start) == std::nullopt);
  CHECK(forecast_reach_ns(5, 10, start, end, end) == std::nullopt);
  // Extreme amounts need the 128-bit intermediate, not a double.
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  CHECK(forecast_reach_ns(kMax / 2, kMax - 1, 0, kMax, 1'000) == 1'000 + 1'000);
}

TEST_CASE("server.webhooks_url_is_http_or_https_to_any_host") {
  absl::StatusOr<WebhookUrl> url = parse_webhook_url("http://127.0.0.1:8085/hooks/paygent?x=1");
  REQUIRE(url.ok());
  CHECK(url->host == "127.0.0.1");
  CHECK(url->port == "8085");
  CHECK(url->target == "/hooks/paygent?x=1");
  url = parse_webhook_url("http://alerts.example.com");
  REQUIRE(url.ok());
  CHECK(url->port == "80");
  CHECK(url->target == "/");
  CHECK_FALSE(url->tls);
  url = parse_webhook_url("https://alerts.example.com/paygent");
  REQUIRE(url.ok());
  CHECK(url->tls);
  CHECK(url->host == "alerts.example.com");
  CHECK(url->port == "443");
  CHECK(url->target == "/paygent");
  CHECK(url->host_header == "alerts.example.com");
  url = parse_webhook_url("https://127.0.0.1:8443");
  REQUIRE(url.ok());
  CHECK(url->port == "8443");
  CHECK(url->host_header == "127.0.0.1:8443");
  // IPv6 literals: the resolver and the certificate check get the address, Host keeps the brackets.
  url = parse_webhook_url("http://[::1]:8085/hooks");
  REQUIRE(url.ok());
  CHECK(url->host == "::1");
  CHECK(url->port == "8085");
  CHECK(url->target == "/hooks");
  CHECK(url->host_header == "[::1]:8085");
  url = parse_webhook_url("https://[2001:db8::7]?a=1");
  REQUIRE(url.ok());
  CHECK(url->host == "2001:db8::7");
  CHECK(url->port == "443");
  CHECK(url->target == "/?a=1");
  CHECK(url->host_header == "[2001:db8::7]");
  for (const char* bad : {"ftp://x", "http://", "https://", "http://:80/", "http://h:0/", "http://h:99999/",
                          "http://h:x/", "http://u:p@h/", "http://h/a b", "HTTPS://h/", "https://u@h/", "http://[::1/",
                          "http://[]/", "http://[::1]x/", "http://[::1]:/", "http://[::1]:0/", "http://[g::1]/",
                          "http://[::1]:99999/", "http://h:/"}) {
    const absl::StatusOr<WebhookUrl> r = parse_webhook_url(bad);
    CHECK_MESSAGE(!r.ok(), bad);
    if (!r.ok()) CHECK(std::string(r.status().message()).rfind("url: ", 0) == 0);
  }
}

TEST_CASE("server.webhooks_batch_alerts") {
  absl::StatusOr<PlanConfig> config = parse_plan_config(
      R"({"soft_gate_at":0.8,"hard_gate_at":1.0,"default_plan":"free","plans":[{"name":"free","max_spend_per_period":1.00}]})");
  REQUIRE(config.ok());
  const TimeRange period{.from_ns = ns_at(2026, 11, 1), .to_ns = ns_at(2026, 12, 1)};
  const std::int64_t now = ns_at(2026, 11, 17, 12);
  auto usage = [&](std::string user, std::int64_t cost) {
    UserUsage u;
    u.user.user_id = std::move(user);
    u.period = period;
    u.models["gpt-4o"].cost_nanos = cost;
    return u;
  };
  // In user id order, as ingest reads them.
  const std::vector<UserUsage> users = {usage("big", 1'200'000'000), usage("fast", 600'000'000),
                                        usage("slow", 100'000'000)};
  const std::vector<SoftGateFired> gates = {
      {.user_id = "fast", .limit_key = "total_spend", .period_start_ns = period.from_ns, .threshold_ppm = 500'000}};
  std::vector<WebhookAlert> alerts = batch_alerts("prod_1", &*config, users, gates, kAllAlertTypes, now, absl::Hours(24 * 12));
  REQUIRE(alerts.size() == 3);
  CHECK(alerts[0].type == AlertType::kSoftGate);
  CHECK(alerts[0].user_id == "fast");
  CHECK(alerts[0].fields_json.find("\"threshold_ppm\":500000") != std::string::npos);
  CHECK(alerts[1].type == AlertType::kHardGate);
  CHECK(alerts[1].user_id == "big");
  CHECK(alerts[1].fields_json.find("\"spend_nanos\":1200000000,\"cap_nanos\":1000000000") != std::string::npos);
  CHECK(alerts[2].type == AlertType::kForecast);
  CHECK(alerts[2].user_id == "fast");
  // 0.4 of the cap left at 0.6 per 16.5 days: 11 days from now.
  CHECK(alerts[2].fields_json.find("\"predicted_reach_ns\":" + std::to_string(now + 11 * kDayNs)) != std::string::npos);
  // The same alert from a later batch has the same key and event id (it is stored once).
  const std::vector<WebhookAlert> again =
      batch_alerts("prod_1", &*config, users, gates, kAllAlertTypes, now + 1000, absl::Hours(24 * 12));
  for (std::size_t i = 0; i < alerts.size(); ++i) {
    CHECK(again[i].alert_key == alerts[i].alert_key);
    CHECK(again[i].event_id == alerts[i].event_id);
    CHECK(again[i].event_id.size() == 32);
  }
  // Another product names it otherwise; the horizon and the mask filter.
  CHECK(batch_alerts("prod_2", &*config, users, gates, kAllAlertTypes, now, absl::Hours(24 * 12))[1].event_id !=
        alerts[1].event_id);
  CHECK(batch_alerts("prod_1", &*config, users, gates, kAllAlertTypes, now, absl::Hours(24 * 10)).size() == 2);
  const std::vector<WebhookAlert> hard_only =
      batch_alerts("prod_1", &*config, users, gates, static_cast<std::uint32_t>(AlertType::kHardGate), now, absl::Hours(24 * 12));
  REQUIRE(hard_only.size() == 1);
  CHECK(hard_only[0].type == AlertType::kHardGate);
  // No config, or no cap: no hard gate and no forecast.
  CHECK(batch_alerts("prod_1", nullptr, users, {}, kAllAlertTypes, now, absl::Hours(24 * 12)).empty());
}

TEST_CASE("server.webhooks_delivery_failure_alert_once_per_minute") {
  const std::int64_t t = ns_at(2026, 11, 17, 12, 0, 5);
  const WebhookAlert a = delivery_failure_alert("p", 400, "events[0].id: bad", t);
  CHECK(a.type == AlertType::kDeliveryFailure);
  CHECK(a.alert_key == delivery_failure_alert("p", 400, "other text", t + 50'000'000'000).alert_key);
  CHECK(a.alert_key != delivery_failure_alert("p", 400, "x", t + 60'000'000'000).alert_key);
  CHECK(a.alert_key != delivery_failure_alert("p", 413, "x", t).alert_key);
}

}  // namespace
}  // namespace paygent::server::test
