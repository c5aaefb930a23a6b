// Direct HTTP tracking on the real paygentd: requests per second of POST /api/v2/usage (one LLM
// usage per request: the strict body reader, the catalog's price, one event through the batch
// path's ingest, the JSON reply) beside the batch path's events per second (POST
// /api/v1/events:batch, 100 events per batch), in the same run, against the same paygentd, over
// one kept-alive loopback connection each.
//
// Checks first and last: a tracking reply carries the catalog's cost, and the stored calls grow
// by exactly the requests and events sent; a mismatch fails the benchmark instead of reporting.
//
//   build/bench/paygent_bench --benchmark_filter=tracking
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "paygent/price_catalog.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;
using paygent::testing::TempDir;

constexpr int kRequestsPerRound = 200;
constexpr int kBatchesPerRound = 20;
constexpr int kBatchSize = 100;

std::string fresh_id() {
  static std::atomic<std::uint64_t> counter{0};
  char id[40];
  std::snprintf(id, sizeof id, "%016llx%016llx", 0x7ac4ULL,
                static_cast<unsigned long long>(counter.fetch_add(1, std::memory_order_relaxed)));
  return id;
}

std::string batch_body() {
  const std::string now = std::to_string(absl::ToUnixNanos(absl::Now()));
  std::string json = "{\"events\":[";
  for (int i = 0; i < kBatchSize; ++i) {
    json += (i ? ",{\"id\":\"" : "{\"id\":\"") + fresh_id() + "\",\"user_id\":\"user-" + std::to_string(i % 100) +
            "\",\"session_id\":\"\",\"agent_id\":\"a\",\"indicator\":\"\",\"model\":\"gpt-4o\",\"provider\":\"openai\","
            "\"input_tokens\":1200,\"output_tokens\":400,\"cached_input_tokens\":0,\"cache_creation_input_tokens\":0,"
            "\"reasoning_tokens\":0,\"cost_nanos\":7000000,\"ts_ns\":" + now + ",\"meta_tags\":{},\"estimated\":false}";
  }
  return json + "]}";
}

std::optional<std::int64_t> stored_calls(HttpClient& http, const std::string& key) {
  const auto reply =
      http.request("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=model", {}, key);
  if (!reply || reply->status != 200) return std::nullopt;
  std::int64_t total = 0;
  for (std::size_t at = 0; (at = reply->body.find("\"calls\":", at)) != std::string::npos;) {
    at += 8;
    total += std::stoll(reply->body.substr(at, 20));
  }
  return total;
}

void tracking_http_vs_batch(benchmark::State& state) {
  static TempDir dir("paygentd-tracking-bench");
  static std::unique_ptr<PaygentdProcess> process =
      PaygentdProcess::start({.data_dir = dir.path(), .admin_token = "bench", .extra_args = {"--synchronous", "normal"}});
  HttpClient tracking(process->port(), std::chrono::seconds(60));
  HttpClient batches(process->port(), std::chrono::seconds(60));
  static const std::string key = paygent::testing::create_product(tracking, "bench", "bench");

  const std::string usage = R"({"agentId":"a","customerId":"user-7","indicator":"","rawUsage":{"provider":"OpenAI",)"
                            R"("model":"gpt-4o","inputTokens":1200,"outputTokens":400,"plan":"default"}})";
  const std::string request = "POST /api/v2/usage HTTP/1.1\r\nHost: 127.0.0.1\r\npaygent-api-key: " + key +
                              "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(usage.size()) +
                              "\r\n\r\n" + usage;
  const ModelPrice* price = PriceCatalog::builtin().find("gpt-4o");
  const std::string expected_cost =
      "\"calculatedCostNanos\":" + std::to_string(cost_of(Usage{.input_tokens = 1200, .output_tokens = 400}, *price));

  const std::optional<std::int64_t> before = stored_calls(tracking, key);
  const auto check = tracking.raw(request);
  if (!before || !check || check->status != 200 || check->body.find(expected_cost) == std::string::npos) {
    state.SkipWithError("the tracking reply does not carry the catalog's cost");
    return;
  }

  std::int64_t requests = 0, events = 0;
  double tracking_s = 0, batch_s = 0;
  for (auto _ : state) {
    std::vector<std::string> bodies;
    for (int b = 0; b < kBatchesPerRound; ++b) bodies.push_back(batch_body());
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kRequestsPerRound; ++i) {
      const auto reply = tracking.raw(request);
      if (!reply || reply->status != 200) {
        state.SkipWithError("a tracking request failed");
        return;
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    for (const std::string& body : bodies) {
      const auto reply = batches.request("POST", "/api/v1/events:batch", body, key);
      if (!reply || reply->status != 200 || reply->body.rfind("{\"accepted\":100,", 0) != 0) {
        state.SkipWithError("a batch was not stored whole");
        return;
      }
    }
    const auto t2 = std::chrono::steady_clock::now();
    const double a = std::chrono::duration<double>(t1 - t0).count();
    const double b = std::chrono::duration<double>(t2 - t1).count();
    tracking_s += a;
    batch_s += b;
    requests += kRequestsPerRound;
    events += static_cast<std::int64_t>(kBatchesPerRound) * kBatchSize;
    state.SetIterationTime(a + b);
  }
  const std::optional<std::int64_t> after = stored_calls(tracking, key);
  if (!after || *after != *before + 1 + requests + events) {
    state.SkipWithError("the stored calls do not match the requests and events sent");
    return;
  }
  const double tracking_rate = static_cast<double>(requests) / tracking_s;
  const double batch_rate = static_cast<double>(events) / batch_s;
  state.counters["tracking_req/s"] = tracking_rate;
  state.counters["batch_events/s"] = batch_rate;
  state.counters["batch/tracking"] = batch_rate / tracking_rate;
}

BENCHMARK(tracking_http_vs_batch)->UseManualTime()->Iterations(10)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace paygent::server
