// Issue 10 end to end: an agent configured over HTTP, one voice session tracked by the library
// (delivered by its syncer, through a kill -9 of paygentd) and one over the HTTP tracking API
// (retried with its Idempotency-Key across the restart); the profit report then holds each
// session's cost once and its per-minute revenue once, and the customer the library created.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <simdjson.h>

#include "paygent/paygent.h"
#include "paygent/tracking.h"
#include "support/paygentd_process.h"
#include "tests/guard/fixture.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";

// The agent: voice calls at $0.15 a minute, or $0.50 + $0.05 a minute when the session used
// gpt-4o for its LLM and nova-2 for its STT (the custom rates of docs/tracking.md's rule).
constexpr const char* kAgent = R"({"name":"Dental clinic","indicators":[
  {"indicator":"voice_call_completed","perMinute":true,"pricePerMinute":"0.15",
   "customRates":[{"kind":"llm","model":"gpt-4o","pricePerMinute":"0.50"},
                  {"kind":"stt","model":"nova-2","pricePerMinute":"0.05"}]}]})";

// A request with the tracking API's own header and, when given, an Idempotency-Key.
std::optional<HttpClient::Reply> track(HttpClient& http, const std::string& key, std::string_view path,
                                       std::string_view body, std::string_view idempotency_key = {}) {
  std::string head = "POST " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1\r\npaygent-api-key: " + key +
                     "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  if (!idempotency_key.empty()) head += "Idempotency-Key: " + std::string(idempotency_key) + "\r\n";
  head += "\r\n";
  head.append(body);
  return http.raw(head);
}

std::int64_t int_member(const std::string& json, std::string_view pointer) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE_MESSAGE(parser.parse(json).get(doc) == simdjson::SUCCESS, json);
  std::int64_t value = 0;
  REQUIRE_MESSAGE(doc.at_pointer(pointer).get_int64().get(value) == simdjson::SUCCESS, pointer << " in " << json);
  return value;
}

// The library side: one application process with a local store and a backend.
struct App {
  App(const std::string& store_path, const std::string& backend_url, const std::string& key) {
    Plan p = round_plan();
    p.max_spend_per_period = 100 * kNanosPerUsd;
    Options o;
    o.plans = config_with(p);
    o.local_store_path = store_path;
    o.api_key = key;
    o.backend_url = backend_url;
    o.flush_interval = absl::Milliseconds(50);
    o.on_usage = [this](const UsageEvent& e) {
      std::lock_guard<std::mutex> lock(mu);
      if (e.cost > 0) cost += e.cost;
      ++events;
    };
    o.on_error = [this](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      errors.push_back(std::string(s.message()));
    };
    auto created = Paygent::create(std::move(o));
    REQUIRE_MESSAGE(created.ok(), created.status().ToString());
    pg = *std::move(created);
  }
  // Waits until the backend acknowledged `n` events.
  bool delivered(std::int64_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (pg->stats().delivered_events < n && std::chrono::steady_clock::now() < deadline) {
      static_cast<void>(pg->flush());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pg->stats().delivered_events == n;
  }

  std::mutex mu;
  Nanos cost = 0;
  std::int64_t events = 0;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;
};

TEST_CASE("integration.voice_sessions_from_the_library_and_http_are_costed_and_billed_once") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  const int port = paygentd->port();
  HttpClient http(port);
  const std::string key = create_product(http, kAdmin, "clinic");
  auto put = http.request("PUT", "/api/v1/agents/dental-clinic", kAgent, key);
  REQUIRE(put.has_value());
  REQUIRE_MESSAGE(put->status == 200, put->body);

  // The library: a customer and a voice session whose LLM (gpt-4o-mini) has no custom rate but
  // whose STT (nova-2) has: $0.05 a minute, 5 minutes.
  App app(dir.path() + "/app.db", paygentd->base_url(), key);
  absl::StatusOr<Customer> customer = app.pg->create_or_get_customer({.external_id = "customer-123", .name = "Ada"});
  REQUIRE_MESSAGE(customer.ok(), customer.status().ToString());
  CHECK(customer->created);
  app.pg->initialize_voice_session("call-lib", "dental-clinic", "customer-123");
  app.pg->track_voice_stt("call-lib", {.provider = "deepgram", .model = "nova-2", .audio = std::chrono::minutes(5)});
  app.pg->track_voice_llm("call-lib", {.provider = "openai", .model = "gpt-4o-mini", .prompt_tokens = 3000,
                                       .completion_tokens = 400});
  REQUIRE(app.delivered(2));

  // paygentd dies; the rest of the session is recorded meanwhile, kept in the spool.
  paygentd->kill_hard();
  app.pg->track_voice_tts("call-lib", {.provider = "amazon-polly", .model = "neural", .characters = 2000});
  app.pg->set_voice_indicator("call-lib", "voice_call_completed", std::chrono::minutes(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(app.pg->stats().delivered_events == 2);

  // The HTTP side: a session on gpt-4o and nova-2 ($0.55 a minute), 3 minutes. Its indicator is
  // sent before the restart (the answer is lost) and again after: counted once.
  paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server",
                                     .admin_token = kAdmin,
                                     .extra_args = {"--listen", "127.0.0.1:" + std::to_string(port)}});
  REQUIRE(paygentd->port() == port);
  HttpClient api(port);
  Nanos http_cost = 0;
  auto ok = [&](std::string_view path, std::string_view body, std::string_view idem) {
    const std::optional<HttpClient::Reply> r = track(api, key, path, body, idem);
    REQUIRE(r.has_value());
    REQUIRE_MESSAGE(r->status == 200, path << ": " << r->body);
    return r->body;
  };
  ok("/api/v1/voice/session", R"({"sessionId":"call-http","agentId":"dental-clinic","customerId":"customer-123"})", "s");
  http_cost += int_member(ok("/api/v1/voice/stt", R"({"sessionId":"call-http","provider":"deepgram","model":"nova-2",)"
                                                  R"("audioMinutes":3})", "stt"),
                          "/calculatedCostNanos");
  http_cost += int_member(ok("/api/v1/voice/llm", R"({"sessionId":"call-http","provider":"openai","model":"gpt-4o",)"
                                                  R"("promptTokens":1200,"completionTokens":300})", "llm"),
                          "/calculatedCostNanos");
  const std::string indicator = R"({"sessionId":"call-http","indicator":"voice_call_completed","totalDuration":3})";
  ok("/api/v1/voice/indicator", indicator, "ind");
  paygentd->kill_hard();
  paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server",
                                     .admin_token = kAdmin,
                                     .extra_args = {"--listen", "127.0.0.1:" + std::to_string(port)}});
  HttpClient after(port);
  const std::optional<HttpClient::Reply> retried = track(after, key, "/api/v1/voice/indicator", indicator, "ind");
  REQUIRE(retried.has_value());
  CHECK_MESSAGE(retried->status == 200, retried->body);
  CHECK(retried->body.find(R"("duplicate":true)") != std::string::npos);
  // A retried stt with its key is a duplicate too, whatever paygentd lost in between.
  CHECK(track(after, key, "/api/v1/voice/stt",
              R"({"sessionId":"call-http","provider":"deepgram","model":"nova-2","audioMinutes":3})", "stt")
            ->body.find(R"("duplicate":true)") != std::string::npos);

  // The library's spool reaches the restarted paygentd: all four of its events, once.
  REQUIRE(app.delivered(4));
  Nanos lib_cost = 0;
  {
    std::lock_guard<std::mutex> lock(app.mu);
    lib_cost = app.cost;
    CHECK(app.events == 4);
    // While paygentd was down the syncer said so; nothing else went wrong.
    for (const std::string& error : app.errors) CHECK_MESSAGE(error.rfind("backend unreachable", 0) == 0, error);
  }
  CHECK(lib_cost > 0);
  CHECK(http_cost > 0);

  // The profit report: the agent's cost is both sessions' cost; its revenue 5 min x $0.05 (the
  // library's session: nova-2's custom rate; gpt-4o-mini has none) + 3 min x $0.55.
  const auto report =
      after.request("GET", "/api/v1/reports/profit?from_ns=0&to_ns=9000000000000000000&by=agent", {}, key);
  REQUIRE(report.has_value());
  REQUIRE_MESSAGE(report->status == 200, report->body);
  INFO(report->body);
  CHECK(int_member(report->body, "/rows/0/cost_nanos") == lib_cost + http_cost);
  CHECK(int_member(report->body, "/rows/0/revenue_nanos") == 250'000'000 + 1'650'000'000);
  CHECK(int_member(report->body, "/rows/0/billing_events") == 2);
  CHECK(int_member(report->body, "/rows/0/cost_events") == 5);
  CHECK(report->body.find(R"("key":"dental-clinic")") != std::string::npos);

  // The customer the library created is paygentd's: asked again, it exists, with its name.
  const std::optional<HttpClient::Reply> again =
      track(after, key, "/api/v1/customers/create-or-get", R"({"externalId":"customer-123","name":"Other"})");
  REQUIRE(again.has_value());
  CHECK_MESSAGE(again->body.find(R"("created":false)") != std::string::npos, again->body);
  CHECK_MESSAGE(again->body.find(R"("name":"Ada")") != std::string::npos, again->body);
}

}  // namespace
}  // namespace paygent::testing
