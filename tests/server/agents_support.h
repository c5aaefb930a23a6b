// Shared setup of the agents / revenue / profit tests: an Api over a fresh storage of a backend
// (tests/server/storage_backends.h), v4 events with kind, duration and indicator, and readers of
// the profit report's rows.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "server/api.h"
#include "server/metrics.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"

namespace paygent::server::test {

// An Api over a new database of `backend`, with one product.
struct AgentsFixture {
  explicit AgentsFixture(StorageBackend& backend)
      : storage(backend.fresh()),
        api(std::make_unique<Api>(*storage, metrics,
                                  ApiOptions{.admin_token = std::string(kAdminToken), .clock = [] { return test_now(); }})) {
    const HttpResponse r = call("POST", "/api/v1/products", R"({"name":"acme"})", kAdminToken);
    REQUIRE_MESSAGE(r.status == 201, r.body);
    key = paygent::testing::json_string_member(r.body, "api_key");
    product_id = paygent::testing::json_string_member(r.body, "product_id");
  }

  HttpResponse call(std::string_view method, std::string_view target, std::string_view body = {},
                    std::string_view bearer = {}) {
    return api->handle_request(HttpRequest{.method = std::string(method),
                                           .target = std::string(target),
                                           .content_type = "application/json",
                                           .authorization = "Bearer " + std::string(bearer.empty() ? key : bearer),
                                           .body = std::string(body)});
  }
  HttpResponse put_agent(std::string_view id, std::string_view body) {
    return call("PUT", std::string("/api/v1/agents/") + std::string(id), body);
  }

  std::unique_ptr<Storage> storage;
  Metrics metrics;
  std::unique_ptr<Api> api;
  std::string key;
  std::string product_id;
};

// One tracked event (wire version 4).
struct Tracked {
  std::uint64_t n = 0;  // its id: event_id(n, 77)
  std::string user = "c1";
  std::string session;
  std::string agent;
  std::string indicator;
  std::string model;
  std::string kind = "llm";
  std::int64_t cost_nanos = 0;
  std::int64_t audio_us = 0;
  bool cost_unknown = false;
  std::int64_t ts_ns = ns_at(2026, 11, 17, 10);
  std::string meta_tags = "{}";  // a JSON object of string values
};

inline std::string tracked_json(const Tracked& e) {
  return "{\"id\":\"" + event_id(e.n, 77) + "\",\"user_id\":" + json_quote(e.user) +
         ",\"session_id\":" + json_quote(e.session) + ",\"agent_id\":" + json_quote(e.agent) +
         ",\"indicator\":" + json_quote(e.indicator) + ",\"model\":" + json_quote(e.model) +
         ",\"provider\":\"p\",\"input_tokens\":0,\"output_tokens\":0,\"cached_input_tokens\":0,"
         "\"cache_creation_input_tokens\":0,\"reasoning_tokens\":0,\"cost_nanos\":" +
         std::to_string(e.cost_nanos) + ",\"ts_ns\":" + std::to_string(e.ts_ns) +
         ",\"meta_tags\":" + e.meta_tags + ",\"estimated\":false,\"kind\":" + json_quote(e.kind) +
         ",\"audio_us\":" + std::to_string(e.audio_us) + ",\"cost_unknown\":" + (e.cost_unknown ? "true" : "false") + "}";
}

inline std::string tracked_batch(const std::vector<Tracked>& events) {
  std::string out = "{\"v\":4,\"events\":[";
  for (std::size_t i = 0; i < events.size(); ++i) out += (i ? "," : "") + tracked_json(events[i]);
  return out + "]}";
}

inline void send(AgentsFixture& f, const std::vector<Tracked>& events) {
  const HttpResponse r = f.call("POST", "/api/v1/events:batch", tracked_batch(events));
  REQUIRE_MESSAGE(r.status == 200, r.body);
}

// One row of a profit report, as its reply says it (nullopt for null).
struct ProfitLine {
  std::optional<std::int64_t> cost, revenue, profit, margin_ppm;
  std::int64_t events = 0, without_price = 0;
  bool found = false;
};

inline std::optional<std::int64_t> nullable(simdjson::dom::element row, const char* field) {
  simdjson::dom::element v;
  REQUIRE(row[field].get(v) == simdjson::SUCCESS);
  if (v.is_null()) return std::nullopt;
  std::int64_t n = 0;
  REQUIRE(v.get_int64().get(n) == simdjson::SUCCESS);
  return n;
}

// The row `key` of GET /api/v1/reports/profit over November 2026 grouped `by` ("total" reads the
// total).
inline ProfitLine profit_line(AgentsFixture& f, std::string_view by, std::string_view key) {
  const HttpResponse r =
      f.call("GET", "/api/v1/reports/profit?from_ns=" + std::to_string(ns_at(2026, 11, 1)) +
                        "&to_ns=" + std::to_string(ns_at(2026, 12, 1)) + "&by=" + std::string(by));
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, r.body);
  auto read = [](simdjson::dom::element row) {
    ProfitLine line;
    line.found = true;
    line.cost = nullable(row, "cost_nanos");
    line.revenue = nullable(row, "revenue_nanos");
    line.profit = nullable(row, "profit_nanos");
    line.margin_ppm = nullable(row, "margin_ppm");
    line.events = *nullable(row, "events");
    line.without_price = *nullable(row, "events_without_price");
    return line;
  };
  simdjson::dom::element total;
  REQUIRE(root["total"].get(total) == simdjson::SUCCESS);
  if (key == "total") return read(total);
  simdjson::dom::array rows;
  REQUIRE(root["rows"].get_array().get(rows) == simdjson::SUCCESS);
  for (simdjson::dom::element row : rows) {
    std::string_view k;
    REQUIRE(row["key"].get_string().get(k) == simdjson::SUCCESS);
    if (k == key) return read(row);
  }
  return ProfitLine{};
}

}  // namespace paygent::server::test
