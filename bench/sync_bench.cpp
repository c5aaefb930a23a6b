// record() -> visible in the backend: how long after an application meters a call the backend's
// usage for that user includes it, with the syncer flushing every 50 ms. The real paygentd runs on
// loopback; each sample records one call and polls GET /api/v1/users/{id}/usage every 0.5 ms.
//   build/bench/paygent_bench --benchmark_filter=sync_visible
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "paygent/paygent.h"
#include "support/paygentd_process.h"

namespace paygent {
namespace {

std::int64_t calls_of(testing::HttpClient& http, const std::string& key, const std::string& user) {
  auto reply = http.request("GET", "/api/v1/users/" + user + "/usage", {}, key);
  if (!reply || reply->status != 200) return -1;
  const auto at = reply->body.find("\"calls\":");
  return at == std::string::npos ? -1 : std::stoll(reply->body.substr(at + 8));
}

void BM_sync_visible_in_backend(benchmark::State& state) {
  testing::TempDir dir;
  auto paygentd = testing::PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = "bench"});
  testing::HttpClient http(paygentd->port());
  const std::string key = testing::create_product(http, "bench", "bench");
  Options o;
  o.api_key = key;
  o.backend_url = paygentd->base_url();
  o.local_store_path = dir.path() + "/app.db";
  o.flush_interval = absl::Milliseconds(50);
  auto pg = *Paygent::create(std::move(o));
  Context ctx("visible-user");
  // Check: one call shows up, exactly once.
  pg->record("gpt-4o-mini", Usage{.input_tokens = 10, .output_tokens = 10});
  if (!pg->flush(absl::Seconds(10)).ok() || calls_of(http, key, "visible-user") != 1) {
    state.SkipWithError("the backend did not see the call exactly once");
    return;
  }
  std::vector<double> ms;
  std::int64_t expected = 1;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    pg->record("gpt-4o-mini", Usage{.input_tokens = 10, .output_tokens = 10});
    ++expected;
    while (calls_of(http, key, "visible-user") < expected) {
      std::this_thread::sleep_for(std::chrono::microseconds(500));
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) {
        state.SkipWithError("a call did not become visible within 10 s");
        return;
      }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(seconds);
    ms.push_back(seconds * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  state.counters["p50_ms"] = ms[ms.size() / 2];
  state.counters["p99_ms"] = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  state.counters["max_ms"] = ms.back();
}
BENCHMARK(BM_sync_visible_in_backend)->UseManualTime()->Iterations(200)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace paygent
