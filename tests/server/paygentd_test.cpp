// Integration tests of the real paygentd binary over loopback HTTP (tests/support/paygentd_process.h):
// crash (kill -9) in the middle of a stream of batches loses nothing that was acknowledged and,
// with the syncer's re-sends, counts nothing twice; SIGTERM stops cleanly; the HTTP layer's
// limits and refusals.
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/server/fixture.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server::test {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;
using paygent::testing::TempDir;

constexpr char kAdmin[] = "integration-admin";

// A stream of batches with known totals: what paygentd must end up holding.
struct GroundTruth {
  std::vector<std::string> bodies;
  std::vector<std::size_t> sizes;
  std::map<std::string, std::int64_t> cost_by_user;
  std::map<std::string, std::int64_t> calls_by_user;
  std::int64_t events = 0;

  GroundTruth(int batches, int batch_size, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const std::int64_t now = absl::ToUnixNanos(absl::Now());
    for (int b = 0; b < batches; ++b) {
      std::vector<TestEvent> events;
      for (int i = 0; i < batch_size; ++i) {
        TestEvent e{.id = event_id(static_cast<std::uint64_t>(b) * 100'000 + static_cast<std::uint64_t>(i), seed),
                    .user_id = "user-" + std::to_string(rng() % 17),
                    .session_id = "s" + std::to_string(rng() % 5),
                    .model = rng() % 2 ? "gpt-4o" : "claude-sonnet-4",
                    .input_tokens = static_cast<std::int64_t>(rng() % 5000),
                    .output_tokens = static_cast<std::int64_t>(rng() % 900),
                    .cost_nanos = static_cast<std::int64_t>(rng() % 10'000'000),
                    .ts_ns = now - static_cast<std::int64_t>(rng() % 1'000'000'000)};
        cost_by_user[e.user_id] += e.cost_nanos;
        ++calls_by_user[e.user_id];
        events.push_back(std::move(e));
      }
      this->events += batch_size;
      bodies.push_back(batch_json(events));
      sizes.push_back(static_cast<std::size_t>(batch_size));
    }
  }
};

// True when `reply` acknowledges a whole batch of `size` events.
bool acknowledged(const std::optional<HttpClient::Reply>& reply, std::size_t size) {
  if (!reply || reply->status != 200) return false;
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::int64_t accepted = -1, duplicates = -1;
  return parser.parse(reply->body).get(root) == simdjson::SUCCESS &&
         root["accepted"].get_int64().get(accepted) == simdjson::SUCCESS &&
         root["duplicates"].get_int64().get(duplicates) == simdjson::SUCCESS &&
         accepted + duplicates == static_cast<std::int64_t>(size);
}

// Per-user (calls, cost) as paygentd reports them over all time.
std::map<std::string, std::pair<std::int64_t, std::int64_t>> stored_by_user(HttpClient& http, const std::string& key) {
  const auto reply = http.request("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=user", {}, key);
  REQUIRE(reply);
  REQUIRE_MESSAGE(reply->status == 200, reply->body);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(reply->body).get(root) == simdjson::SUCCESS);
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> out;
  for (simdjson::dom::element row : root["rows"].get_array()) {
    out[std::string(row["key"].get_string().value())] = {row["calls"].get_int64().value(),
                                                         row["cost_nanos"].get_int64().value()};
  }
  return out;
}

std::int64_t stored_events(HttpClient& http, const std::string& key) {
  std::int64_t n = 0;
  for (const auto& [user, totals] : stored_by_user(http, key)) n += totals.first;
  return n;
}

TEST_CASE("server.paygentd_kill9_loses_nothing_acknowledged") {
  TempDir dir("paygentd-kill9");
  const GroundTruth truth(/*batches=*/80, /*batch_size=*/400, /*seed=*/7);
  std::vector<bool> acked(truth.bodies.size(), false);
  std::string key;
  std::mt19937 rng(1234);

  // Three crashes, each in the middle of a stream of batches, then a last run that delivers the
  // rest. Like the syncer, each run re-sends every batch not yet acknowledged.
  for (int run = 0; run < 4; ++run) {
    CAPTURE(run);
    auto paygentd = PaygentdProcess::start({.data_dir = dir.path(), .admin_token = kAdmin});
    HttpClient http(paygentd->port());
    if (key.empty()) key = paygent::testing::create_product(http, kAdmin, "acme");

    // Nothing acknowledged was lost by the last crash; at most the one batch in flight (not
    // acknowledged) may have been stored.
    std::int64_t acked_events = 0;
    for (std::size_t b = 0; b < acked.size(); ++b) acked_events += acked[b] ? static_cast<std::int64_t>(truth.sizes[b]) : 0;
    const std::int64_t stored = stored_events(http, key);
    CHECK(stored >= acked_events);
    CHECK(stored <= acked_events + 400);

    const bool crash = run < 3;
    std::atomic<int> sent_ok{0};
    std::atomic<bool> done{false};
    std::atomic<bool> refused_without_crash{false};
    std::thread sender([&] {
      HttpClient stream(paygentd->port());
      for (std::size_t b = 0; b < truth.bodies.size(); ++b) {
        if (acked[b]) continue;
        const auto reply = stream.request("POST", "/api/v1/events:batch", truth.bodies[b], key);
        if (!acknowledged(reply, truth.sizes[b])) {
          if (!crash) refused_without_crash = true;
          break;  // the server is gone: the rest waits for the next run
        }
        acked[b] = true;
        sent_ok.fetch_add(1);
      }
      done = true;
    });
    if (crash) {
      while (sent_ok.load() < 3 && !done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 30'000)(rng)));
      paygentd->kill_hard();
    }
    sender.join();
    CHECK(!refused_without_crash.load());
    if (!crash) {
      // Re-sending acknowledged batches changes nothing.
      for (std::size_t b = 0; b < 3; ++b) {
        const auto reply = http.request("POST", "/api/v1/events:batch", truth.bodies[b], key);
        REQUIRE(acknowledged(reply, truth.sizes[b]));
        CHECK(reply->body.find("\"accepted\":0,") != std::string::npos);
      }
      CHECK(paygentd->terminate() == 0);
    }
  }
  for (std::size_t b = 0; b < acked.size(); ++b) CHECK(acked[b]);

  // Restarted once more: the totals equal the ground truth exactly.
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path(), .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const auto stored = stored_by_user(http, key);
  REQUIRE(stored.size() == truth.cost_by_user.size());
  for (const auto& [user, cost] : truth.cost_by_user) {
    CAPTURE(user);
    CHECK(stored.at(user).first == truth.calls_by_user.at(user));
    CHECK(stored.at(user).second == cost);
  }
  CHECK(stored_events(http, key) == truth.events);
  CHECK(paygentd->terminate() == 0);
}

TEST_CASE("server.paygentd_sigterm_finishes_requests_and_exits_zero") {
  TempDir dir("paygentd-term");
  const GroundTruth truth(/*batches=*/40, /*batch_size=*/200, /*seed=*/11);
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path(), .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = paygent::testing::create_product(http, kAdmin, "acme");

  // An idle kept-alive connection must not hold the shutdown up (its read timeout is 30 s).
  HttpClient idle(paygentd->port());
  REQUIRE(idle.request("GET", "/healthz")->status == 200);

  std::vector<bool> acked(truth.bodies.size(), false);
  std::atomic<int> sent_ok{0};
  std::thread sender([&] {
    HttpClient stream(paygentd->port());
    for (std::size_t b = 0; b < truth.bodies.size(); ++b) {
      const auto reply = stream.request("POST", "/api/v1/events:batch", truth.bodies[b], key);
      if (!acknowledged(reply, truth.sizes[b])) return;
      acked[b] = true;
      sent_ok.fetch_add(1);
    }
  });
  while (sent_ok.load() < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(paygentd->terminate() == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
  sender.join();
  // The database was closed cleanly: its WAL was checkpointed and removed.
  CHECK(!std::filesystem::exists(dir.path() + "/paygentd.db-wal"));

  std::int64_t acked_events = 0;
  for (std::size_t b = 0; b < acked.size(); ++b) acked_events += acked[b] ? static_cast<std::int64_t>(truth.sizes[b]) : 0;
  paygentd = PaygentdProcess::start({.data_dir = dir.path(), .admin_token = kAdmin});
  HttpClient again(paygentd->port());
  const std::int64_t stored = stored_events(again, key);
  CHECK(stored >= acked_events);
  CHECK(stored <= acked_events + 200);
  CHECK(again.request("GET", "/api/v1/config/plans", {}, key)->status == 200);  // the key still works
  CHECK(paygentd->terminate() == 0);
}

TEST_CASE("server.paygentd_http_limits_and_refusals") {
  TempDir dir("paygentd-http");
  auto paygentd = PaygentdProcess::start(
      {.data_dir = dir.path(), .admin_token = kAdmin, .extra_args = {"--max-body-bytes", "20000"}});
  HttpClient http(paygentd->port());
  const std::string key = paygent::testing::create_product(http, kAdmin, "acme");

  // Keep-alive: several requests on one connection.
  for (int i = 0; i < 3; ++i) {
    const auto reply = http.request("GET", "/healthz");
    REQUIRE(reply);
    CHECK(reply->status == 200);
    CHECK(reply->headers.count("connection") == 0);
  }
  auto reply = http.request("GET", "/nowhere");
  CHECK(reply->status == 404);
  CHECK(reply->headers.at("content-type") == "application/json");
  CHECK(reply->body.find("\"not_found\"") != std::string::npos);
  CHECK(http.request("DELETE", "/healthz")->status == 405);
  CHECK(http.request("POST", "/api/v1/users", R"({"user_id":"u1"})", key, "text/plain")->status == 415);
  CHECK(http.request("POST", "/api/v1/users", R"({"user_id":"u1"})", "wrong-key")->status == 401);

  // A body over --max-body-bytes: 413, declared by Content-Length or sent chunked.
  std::vector<TestEvent> many;
  for (int i = 0; i < 100; ++i) many.push_back({.id = event_id(i)});
  const std::string big = batch_json(many);
  REQUIRE(big.size() > 20000);
  reply = http.request("POST", "/api/v1/events:batch", big, key);
  REQUIRE(reply);
  CHECK(reply->status == 413);
  CHECK(reply->body.find("\"payload_too_large\"") != std::string::npos);
  std::string chunked = "POST /api/v1/events:batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
                        "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (std::size_t at = 0; at < big.size(); at += 4096) {
    const std::string piece = big.substr(at, 4096);
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    chunked += size + piece + "\r\n";
  }
  chunked += "0\r\n\r\n";
  reply = http.raw(chunked);
  REQUIRE(reply);
  CHECK(reply->status == 413);
  // A header over the limit (16 KiB): 413 too.
  reply = http.raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + std::string(20000, 'a') + "\r\n\r\n");
  REQUIRE(reply);
  CHECK(reply->status == 413);
  // Malformed HTTP: 400 with a JSON error.
  reply = http.raw("THIS IS NOT HTTP\r\n\r\n");
  REQUIRE(reply);
  CHECK(reply->status == 400);
  CHECK(reply->body.find("\"invalid_argument\"") != std::string::npos);
  // Expect: 100-continue is honoured.
  const std::string body = R"({"user_id":"u1"})";
  reply = http.raw("POST /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
                   "\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
  REQUIRE(reply);
  CHECK(reply->status == 201);

  // Nothing of the refused batches was stored.
  CHECK(stored_events(http, key) == 0);
  const auto metrics = http.request("GET", "/metrics");
  CHECK(metrics->body.find("paygentd_http_requests_total{path=\"/api/v1/events:batch\",code=\"413\"} 2") !=
        std::string::npos);
  CHECK(paygentd->terminate() == 0);
}

TEST_CASE("server.paygentd_flags") {
  TempDir dir("paygentd-flags");
  const std::string binary = paygent::testing::paygentd_path();
  auto run = [&](const std::string& args, std::string& out) {
    FILE* pipe = ::popen((binary + " " + args + " 2>&1").c_str(), "r");
    REQUIRE(pipe != nullptr);
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int status = ::pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string help;
  CHECK(run("--help", help) == 0);
  for (const char* word : {"--data-dir", "--listen", "--admin-token", "--max-body-bytes", "--synchronous",
                           "PAYGENTD_DATA_DIR", "PAYGENTD_LISTEN", "PAYGENTD_ADMIN_TOKEN", "SIGTERM"}) {
    CHECK_MESSAGE(help.find(word) != std::string::npos, word);
  }
  std::string out;
  CHECK(run("--no-such-flag", out) == 2);
  out.clear();
  CHECK(run("", out) == 2);  // no data dir
  out.clear();
  CHECK(run("--data-dir " + dir.path() + " --synchronous sometimes", out) == 2);

  // One paygentd per data dir.
  auto first = PaygentdProcess::start({.data_dir = dir.path()});
  CHECK_THROWS_WITH_AS(PaygentdProcess::start({.data_dir = dir.path()}), doctest::Contains("exited before listening"),
                       std::runtime_error);
  // Without an admin token, nobody can create products.
  HttpClient http(first->port());
  CHECK(http.request("POST", "/api/v1/products", R"({"name":"x"})", "guess")->status == 403);
  CHECK(first->terminate() == 0);
}

}  // namespace
}  // namespace paygent::server::test
