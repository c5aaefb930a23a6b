// Soft gates across processes (docs/wire.md, "Soft gates"): a batch's "soft_gates" are stored once
// per product, user, limit, period start and threshold, and every per-user usage object reports
// those of the user's current period.
#include "server/wire.h"

#include <span>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "sync/event_record.h"
#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

// 2026-11-01T00:00:00Z: u1's period (the calendar month of test_now()).
const std::int64_t kNovember = ns_at(2026, 11, 1);

std::string gate_json(std::string_view user, std::string_view limit, std::int64_t start, std::int64_t ppm) {
  return "{\"user_id\":" + json_quote(user) + ",\"limit\":" + json_quote(limit) +
         ",\"period_start_ns\":" + std::to_string(start) + ",\"threshold_ppm\":" + std::to_string(ppm) + "}";
}

// A version 3 batch: `events` and `gates` (JSON texts).
std::string batch_with_gates(const std::vector<TestEvent>& events, const std::vector<std::string>& gates) {
  std::string out = batch_json(events);
  out.pop_back();  // the closing brace
  out.insert(1, "\"v\":3,");
  out += ",\"soft_gates\":[";
  for (std::size_t i = 0; i < gates.size(); ++i) out += (i ? "," : "") + gates[i];
  return out + "]}";
}

std::int64_t stored_gates(ApiFixture& f) { return sql_int(f.db_path, "SELECT COUNT(*) FROM soft_gates"); }

}  // namespace

TEST_CASE("server.wire_reads_and_writes_soft_gates") {
  const std::vector<internal::FiredThreshold> gates = {{"u1", "total_spend", kNovember, 800'000},
                                                       {"u2", "session_spend:chat \"1\"", kNovember + 5, 500'000}};
  internal::EventRecord e;
  e.id = event_id(1);
  e.user_id = "u1";
  // The library's encoder: version 3 with soft gates; version 1 without them.
  const std::string with = internal::encode_event_batch(std::vector<internal::EventRecord>{e}, gates);
  CHECK(with.rfind("{\"v\":3,", 0) == 0);
  CHECK(internal::encode_event_batch(std::vector<internal::EventRecord>{e}).rfind("{\"events\":", 0) == 0);
  absl::StatusOr<EventBatch> batch = parse_ingest_batch(with);
  REQUIRE_MESSAGE(batch.ok(), batch.status().ToString());
  CHECK(batch->events.size() == 1);
  CHECK(batch->soft_gates == gates);
  // Only soft gates: a batch of no events.
  batch = parse_ingest_batch(internal::encode_event_batch({}, gates));
  REQUIRE_MESSAGE(batch.ok(), batch.status().ToString());
  CHECK(batch->events.empty());
  CHECK(batch->soft_gates.size() == 2);
  // Neither: refused as before.
  CHECK(parse_ingest_batch(R"({"v":3,"events":[],"soft_gates":[]})").status().message() ==
        "events: must hold 1 to 1000 events, not 0");

  const std::pair<std::string, std::string> refused[] = {
      {gate_json("", "total_spend", 1, 1), "soft_gates[0].user_id: must not be empty"},
      {gate_json("u1", "total", 1, 1), "soft_gates[0].limit: must be \"total_spend\", \"session_spend:<session id>\" "
                                       "or \"model_limit:<model>\" (the id or model 1 to 1024 bytes)"},
      {gate_json("u1", "model_limit:", 1, 1), "soft_gates[0].limit: must be \"total_spend\", \"session_spend:<session "
                                              "id>\" or \"model_limit:<model>\" (the id or model 1 to 1024 bytes)"},
      {gate_json("u1", "total_spend", -1, 1), "soft_gates[0].period_start_ns: must be a non-negative integer"},
      {gate_json("u1", "total_spend", 1, 0), "soft_gates[0].threshold_ppm: must be a positive integer (parts per "
                                             "million of the limit)"},
      {R"({"user_id":"u1","limit":"total_spend","period_start_ns":1})", "soft_gates[0].threshold_ppm: missing"},
      {R"({"user_id":"u1","limit":"total_spend","period_start_ns":1,"threshold_ppm":1,"x":1})",
       "soft_gates[0].x: unknown field"},
  };
  for (const auto& [gate, message] : refused) {
    CAPTURE(gate);
    CHECK(parse_ingest_batch("{\"v\":3,\"events\":[],\"soft_gates\":[" + gate + "]}").status().message() == message);
  }
  // A soft threshold past 100% is a plan's to set (hard_gate_at 1.2, soft_gate_at [0.8, 1.1]): kept.
  CHECK(parse_ingest_batch("{\"v\":3,\"events\":[],\"soft_gates\":[" + gate_json("u1", "total_spend", 1, 1'100'000) + "]}")
            .ok());
  // A newer library's fields of a soft gate are ignored, as an event's are.
  batch = parse_ingest_batch("{\"v\":" + std::to_string(internal::kWireVersion + 1) +
                             R"(,"events":[],"soft_gates":[{"user_id":"u1","limit":"total_spend",)"
                             R"("period_start_ns":1,"threshold_ppm":1,"fired_ns":5}]})");
  REQUIRE_MESSAGE(batch.ok(), batch.status().ToString());
  CHECK(batch->soft_gates.size() == 1);
}

// Hard gates (wire version 5): the library writes them apart from the soft ones, with the time
// of the first refusal; paygentd reads them back with `hard` set, fired_ns optional.
TEST_CASE("server.wire_reads_and_writes_hard_gates") {
  std::vector<internal::FiredThreshold> gates = {{"u1", "total_spend", kNovember, 800'000},
                                                 {"u1", "total_spend", kNovember, 1'000'000, true, kNovember + 7},
                                                 {"u2", "model_limit:gpt-4o", kNovember, 1'000'000, true, 0}};
  const std::string body = internal::encode_event_batch({}, gates);
  CHECK(body.rfind("{\"v\":5,", 0) == 0);
  CHECK(body.find(R"("hard_gates":[{"user_id":"u1","limit":"total_spend","period_start_ns":)" +
                  std::to_string(kNovember) + R"(,"threshold_ppm":1000000,"fired_ns":)" +
                  std::to_string(kNovember + 7) + "}") != std::string::npos);
  // Only soft ones: version 3 still, no "hard_gates".
  const std::string soft = internal::encode_event_batch({}, std::span(gates).first(1));
  CHECK(soft.rfind("{\"v\":3,", 0) == 0);
  CHECK(soft.find("hard_gates") == std::string::npos);
  absl::StatusOr<EventBatch> batch = parse_ingest_batch(body);
  REQUIRE_MESSAGE(batch.ok(), batch.status().ToString());
  CHECK(batch->soft_gates == gates);
  // fired_ns may be left out (0); it is a hard gate's field, not a soft one's.
  batch = parse_ingest_batch(R"({"v":5,"events":[],"hard_gates":[{"user_id":"u1","limit":"total_spend",)"
                             R"("period_start_ns":1,"threshold_ppm":1}]})");
  REQUIRE_MESSAGE(batch.ok(), batch.status().ToString());
  REQUIRE(batch->soft_gates.size() == 1);
  CHECK(batch->soft_gates[0].hard);
  CHECK(batch->soft_gates[0].fired_ns == 0);
  CHECK(parse_ingest_batch(R"({"v":5,"events":[],"soft_gates":[{"user_id":"u1","limit":"total_spend",)"
                           R"("period_start_ns":1,"threshold_ppm":1,"fired_ns":1}]})")
            .status()
            .message() == "soft_gates[0].fired_ns: unknown field");
  CHECK(std::string(parse_ingest_batch(R"({"v":5,"events":[],"hard_gates":[{"user_id":"u1","limit":"lease",)"
                                       R"("period_start_ns":1,"threshold_ppm":1}]})")
                        .status()
                        .message())
            .rfind("hard_gates[0].limit: must be \"total_spend\"", 0) == 0);
  CHECK(parse_ingest_batch(R"({"v":5,"events":[],"hard_gates":[{"user_id":"u1","limit":"total_spend",)"
                           R"("period_start_ns":1,"threshold_ppm":1,"fired_ns":-1}]})")
            .status()
            .message() == "hard_gates[0].fired_ns: must be a non-negative integer");
  CHECK(parse_ingest_batch(R"({"v":5,"events":[],"hard_gates":{}})").status().message() ==
        "hard_gates: must be an array of hard gates");
  CHECK(parse_ingest_batch(R"({"v":5,"events":[],"hard_gates":[],"hard_gates":[]})").status().message() ==
        "hard_gates: repeated field");
}

TEST_CASE("server.soft_gates_are_stored_once_and_reported_in_the_period") {
  ApiFixture f;
  const std::string key = f.new_product();
  const std::vector<std::string> gates = {
      gate_json("u1", "total_spend", kNovember, 500'000),
      gate_json("u1", "total_spend", kNovember, 800'000),
      gate_json("u1", "model_limit:gpt-4o", kNovember, 800'000),
      gate_json("u1", "session_spend:chat-1", ns_at(2026, 11, 17, 9), 800'000),
      gate_json("u1", "total_spend", ns_at(2026, 10, 1), 800'000),  // last period: not reported
  };
  const std::string batch = batch_with_gates({{.id = event_id(1), .cost_nanos = 10}}, gates);
  HttpResponse r = f.call("POST", "/api/v1/events:batch", batch, key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(stored_gates(f) == 5);
  const std::string expected =
      "\"soft_gates\":[{\"limit\":\"model_limit:gpt-4o\",\"period_start_ns\":" + std::to_string(kNovember) +
      ",\"threshold_ppm\":800000},{\"limit\":\"total_spend\",\"period_start_ns\":" + std::to_string(kNovember) +
      ",\"threshold_ppm\":500000},{\"limit\":\"total_spend\",\"period_start_ns\":" + std::to_string(kNovember) +
      ",\"threshold_ppm\":800000},{\"limit\":\"session_spend:chat-1\",\"period_start_ns\":" +
      std::to_string(ns_at(2026, 11, 17, 9)) + ",\"threshold_ppm\":800000}]";
  // The ingest reply, the usage query and GET .../usage all carry them.
  CHECK_MESSAGE(r.body.find(expected) != std::string::npos, r.body);
  const HttpResponse q = f.call("POST", "/api/v1/usage:query", R"({"users":["u1"]})", key);
  CHECK_MESSAGE(q.body.find(expected) != std::string::npos, q.body);
  const HttpResponse u = f.call("GET", "/api/v1/users/u1/usage", {}, key);
  CHECK_MESSAGE(u.body.find(expected) != std::string::npos, u.body);

  // A retried batch: its events are duplicates, its soft gates stored once.
  r = f.call("POST", "/api/v1/events:batch", batch, key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.body.find(expected) != std::string::npos);
  CHECK(stored_gates(f) == 5);
  CHECK(f.counts().events == 1);

  // Soft gates alone, of a user unknown so far: the user is created and reported.
  r = f.call("POST", "/api/v1/events:batch",
             batch_with_gates({}, {gate_json("u2", "total_spend", kNovember, 800'000)}), key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  simdjson::dom::element reply = parse_json(parser, r.body);
  CHECK(int_at(reply, "/accepted") == 0);
  CHECK(int_at(reply, "/duplicates") == 0);
  CHECK(int_at(reply, "/usage/u2/soft_gates/0/threshold_ppm") == 800'000);
  CHECK(stored_gates(f) == 6);

  // Another product's soft gates are its own.
  const std::string other = f.new_product("other");
  const HttpResponse o = f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(1)}}), other);
  REQUIRE_MESSAGE(o.status == 200, o.body);
  CHECK(o.body.find("\"soft_gates\":[]") != std::string::npos);
}

TEST_CASE("server.a_batch_without_soft_gates_is_unchanged") {
  ApiFixture f;
  const std::string key = f.new_product();
  const HttpResponse r = f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(1), .cost_nanos = 5}}), key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(stored_gates(f) == 0);
  CHECK(f.counts().events == 1);
  CHECK(r.body.find("\"soft_gates\":[]") != std::string::npos);  // nothing fired: an empty list
  // A malformed soft gate refuses the whole batch: nothing of it is stored.
  const TableCounts before = f.counts();
  const HttpResponse bad = f.call(
      "POST", "/api/v1/events:batch",
      batch_with_gates({{.id = event_id(2)}}, {gate_json("u1", "total_spend", kNovember, 0)}), key);
  CHECK(bad.status == 400);
  CHECK(f.counts() == before);
  CHECK(stored_gates(f) == 0);
}

TEST_CASE("server.usage_reports_at_most_100_soft_gates_period_limits_first") {
  ApiFixture f;
  const std::string key = f.new_product();
  std::vector<std::string> gates;
  for (int i = 0; i < 150; ++i) {
    gates.push_back(gate_json("u1", "session_spend:s" + std::to_string(i), kNovember + 1 + i, 800'000));
  }
  gates.push_back(gate_json("u1", "total_spend", kNovember, 800'000));
  const HttpResponse r = f.call("POST", "/api/v1/events:batch", batch_with_gates({}, gates), key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  simdjson::dom::element reply = parse_json(parser, r.body);
  simdjson::dom::array list = reply.at_pointer("/usage/u1/soft_gates").get_array();
  CHECK(list.size() == kMaxUsageSoftGates);
  CHECK(std::string_view(reply.at_pointer("/usage/u1/soft_gates/0/limit").get_string().value()) == "total_spend");
  // Then the sessions that started last.
  CHECK(std::string_view(reply.at_pointer("/usage/u1/soft_gates/1/limit").get_string().value()) ==
        "session_spend:s149");
  CHECK(stored_gates(f) == 151);
}

}  // namespace paygent::server::test
