// Tests of Api::handle_request (server/api.h) over a SqliteStorage in a temporary directory: every
// endpoint of docs/wire.md, without a socket.
#include "server/api.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "paygent/plan.h"
#include "server/api_key.h"
#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

constexpr std::string_view kPlans =
    R"({"soft_gate_at":0.80,"hard_gate_at":1.00,"default_plan":"free","plans":[{"name":"pro","max_spend_per_period":49.00,
  "max_spend_per_session":5.00,"model_limits":{"gpt-4o":{"max_tokens_per_period":50000}},
  "cost_rates":{"gpt-4o":{"input":0.0025,"output":0.01}},"session_timeout_minutes":30.0},
  {"name":"free","max_spend_per_period":0.5,"period":"day"}]})";

constexpr std::string_view kSubscription =
    R"({"plan":"pro","period_start":"2026-11-05T00:00:00Z","period_end":"2026-12-05T00:00:00Z"})";

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

std::string usage_of(ApiFixture& f, std::string_view key, std::string_view user) {
  const HttpResponse r = f.call("GET", "/api/v1/users/" + std::string(user) + "/usage", {}, key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  return r.body;
}

TEST_CASE("server.products_need_the_admin_token") {
  ApiFixture f;
  SUBCASE("refused without an admin token configured") {
    f.api = f.make_api("", 4 << 20);
    const HttpResponse r = f.call("POST", "/api/v1/products", R"({"name":"acme"})", "anything");
    CHECK(r.status == 403);
    CHECK(error_code(r) == "permission_denied");
  }
  SUBCASE("missing or wrong token") {
    CHECK(f.call("POST", "/api/v1/products", R"({"name":"acme"})").status == 401);
    CHECK(f.call("POST", "/api/v1/products", R"({"name":"acme"})", "admin-secreT").status == 401);
    CHECK(f.call("POST", "/api/v1/products", R"({"name":"acme"})", "admin-secret-and-more").status == 401);
  }
  CHECK(f.counts().products == 0);
}

TEST_CASE("server.product_key_is_shown_once_and_stored_hashed") {
  ApiFixture f;
  const HttpResponse r = f.call("POST", "/api/v1/products", R"({"name":"acme"})", kAdminToken);
  REQUIRE(r.status == 201);
  const std::string id = paygent::testing::json_string_member(r.body, "product_id");
  const std::string key = paygent::testing::json_string_member(r.body, "api_key");
  CHECK(starts_with(id, "prod_"));
  REQUIRE(key.size() == 8 + 64);
  CHECK(starts_with(key, "pg_live_"));
  CHECK(sql_int(f.db_path, "SELECT COUNT(*) FROM products WHERE key_sha256 = '" + sha256_hex(key) + "'") == 1);
  // The raw key is nowhere in the database files (main file or WAL), nor any 16-character piece
  // of its secret part.
  const std::string bytes = read_file(f.db_path) + read_file(f.db_path + "-wal");
  REQUIRE(!bytes.empty());
  CHECK(bytes.find(key) == std::string::npos);
  CHECK(bytes.find(key.substr(8, 16)) == std::string::npos);
  CHECK(bytes.find(sha256_hex(key)) != std::string::npos);

  // The key works; a second product gets another key.
  CHECK(f.call("GET", "/api/v1/config/plans", {}, key).status == 200);
  CHECK(f.new_product("other") != key);
}

TEST_CASE("server.api_calls_need_a_valid_key") {
  ApiFixture f;
  const std::string key = f.new_product();
  const std::vector<std::pair<std::string, std::string>> calls = {
      {"POST", "/api/v1/users"},          {"POST", "/api/v1/users/u1/subscription"},
      {"GET", "/api/v1/users/u1/usage"},  {"POST", "/api/v1/config/plans"},
      {"GET", "/api/v1/config/plans"},    {"POST", "/api/v1/events:batch"},
      {"GET", "/api/v1/reports/usage?from_ns=0&to_ns=1&group_by=user"}};
  const TableCounts before = f.counts();
  for (const auto& [method, target] : calls) {
    INFO(method, " ", target);
    for (std::string_view bad : {std::string_view(), std::string_view("pg_live_0000"), kAdminToken,
                                 std::string_view(key).substr(0, key.size() - 1)}) {
      const HttpResponse r = f.call(method, target, R"({"user_id":"u1"})", bad);
      CHECK(r.status == 401);
      CHECK(error_code(r) == "unauthenticated");
    }
    // A scheme other than Bearer is not a key.
    HttpRequest basic{.method = method, .target = target, .content_type = "application/json",
                      .authorization = "Basic " + key, .body = "{}"};
    CHECK(f.api->handle_request(basic).status == 401);
  }
  CHECK(f.counts() == before);
  // The scheme is case-insensitive.
  HttpRequest lower{.method = "GET", .target = "/api/v1/config/plans", .authorization = "bearer " + key};
  CHECK(f.api->handle_request(lower).status == 200);
  // healthz and metrics need no key.
  CHECK(f.call("GET", "/healthz").body == R"({"status":"ok"})");
  CHECK(f.call("GET", "/metrics").status == 200);
}

TEST_CASE("server.users_are_created_once") {
  ApiFixture f;
  const std::string key = f.new_product();
  HttpResponse r = f.call("POST", "/api/v1/users", R"({"user_id":"u1","name":"Ada"})", key);
  CHECK(r.status == 201);
  CHECK(r.body == R"({"user_id":"u1"})");
  r = f.call("POST", "/api/v1/users", R"({"user_id":"u1"})", key);
  CHECK(r.status == 409);
  CHECK(error_code(r) == "already_exists");
  CHECK(f.call("POST", "/api/v1/users", R"({"user_id":"u2"})", key).status == 201);
  CHECK(f.counts().users == 2);
  CHECK(f.call("GET", "/api/v1/users/u3/usage", {}, key).status == 404);
  // A new user has an empty current period.
  simdjson::dom::parser parser;
  const simdjson::dom::element usage = parse_json(parser, usage_of(f, key, "u1"));
  CHECK(int_at(usage, "/spend_nanos") == 0);
  CHECK(int_at(usage, "/calls") == 0);
  CHECK(int_at(usage, "/period_start_ns") == ns_at(2026, 11, 1));
  CHECK(int_at(usage, "/period_end_ns") == ns_at(2026, 12, 1));
}

TEST_CASE("server.user_ids_in_paths_are_percent_decoded") {
  ApiFixture f;
  const std::string key = f.new_product();
  REQUIRE(f.call("POST", "/api/v1/users", R"({"user_id":"a b/c+é"})", key).status == 201);
  const HttpResponse r = f.call("GET", "/api/v1/users/a%20b%2Fc%2B%C3%A9/usage", {}, key);
  CHECK(r.status == 200);
  CHECK(r.body.find(R"("user_id":"a b/c+é")") != std::string::npos);
  CHECK(f.call("GET", "/api/v1/users/a%2/usage", {}, key).status == 400);
  CHECK(f.call("GET", "/api/v1/users/%FF/usage", {}, key).status == 400);
}

// PostgreSQL's text cannot hold U+0000: every storage refuses it at the API, naming the field.
TEST_CASE("server.ids_holding_nul_are_refused_with_the_field") {
  ApiFixture f;
  const std::string key = f.new_product();
  HttpResponse r = f.call("POST", "/api/v1/users", R"({"user_id":"a\u0000b"})", key);
  CHECK(r.status == 400);
  CHECK(r.body.find("user_id") != std::string::npos);
  CHECK(f.call("GET", "/api/v1/users/a%00b/usage", {}, key).status == 400);
  r = f.call("GET", "/api/v1/reports/usage?from_ns=0&to_ns=10&group_by=user&user_id=a%00b", {}, key);
  CHECK(r.status == 400);
  CHECK(r.body.find("user_id") != std::string::npos);
  const std::string batch = R"({"events":[{"id":"00000000000000000000000000000001","user_id":"u","session_id":"s\u0000",)"
                            R"("agent_id":"","indicator":"","model":"m","provider":"p","input_tokens":1,"output_tokens":1,)"
                            R"("cached_input_tokens":0,"cache_creation_input_tokens":0,"reasoning_tokens":0,"cost_nanos":1,)"
                            R"("ts_ns":1,"meta_tags":{},"estimated":false}]})";
  r = f.call("POST", "/api/v1/events:batch", batch, key);
  CHECK(r.status == 400);
  CHECK(r.body.find("events[0].session_id") != std::string::npos);
}

TEST_CASE("server.plans_round_trip_exactly") {
  ApiFixture f;
  const std::string key = f.new_product();
  HttpResponse r = f.call("GET", "/api/v1/config/plans", {}, key);
  CHECK(r.status == 200);
  CHECK(r.body == R"({"plans":[]})");

  r = f.call("POST", "/api/v1/config/plans", kPlans, key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.body == R"({"plans":2})");
  r = f.call("GET", "/api/v1/config/plans", {}, key);
  REQUIRE(r.status == 200);
  const absl::StatusOr<PlanConfig> posted = parse_plan_config(kPlans);
  const absl::StatusOr<PlanConfig> got = parse_plan_config(r.body);
  REQUIRE(posted.ok());
  REQUIRE_MESSAGE(got.ok(), r.body);
  CHECK(*got == *posted);
  CHECK(got->plans[0].max_spend_per_period == 49 * kNanosPerUsd);

  // A bad config is refused naming the field, and the stored one stays.
  r = f.call("POST", "/api/v1/config/plans",
             R"({"plans":[{"name":"a"},{"name":"b","model_limits":{"gpt-4o":{"max_tokens_per_period":-1}}}]})", key);
  CHECK(r.status == 400);
  CHECK(starts_with(error_message(r), "plans[1].model_limits.gpt-4o.max_tokens_per_period"));
  CHECK(f.call("GET", "/api/v1/config/plans", {}, key).body == f.call("GET", "/api/v1/config/plans", {}, key).body);
  const absl::StatusOr<PlanConfig> still = parse_plan_config(f.call("GET", "/api/v1/config/plans", {}, key).body);
  REQUIRE(still.ok());
  CHECK(*still == *posted);
}

TEST_CASE("server.subscription_sets_the_users_period") {
  ApiFixture f;
  const std::string key = f.new_product();
  REQUIRE(f.call("POST", "/api/v1/users", R"({"user_id":"u1"})", key).status == 201);

  // No plan config yet: the plan is unknown.
  HttpResponse r = f.call("POST", "/api/v1/users/u1/subscription", kSubscription, key);
  CHECK(r.status == 404);
  REQUIRE(f.call("POST", "/api/v1/config/plans", kPlans, key).status == 200);
  const TableCounts before = f.counts();
  CHECK(f.call("POST", "/api/v1/users/nobody/subscription", kSubscription, key).status == 404);
  r = f.call("POST", "/api/v1/users/u1/subscription",
             R"({"plan":"gold","period_start":"2026-11-05T00:00:00Z","period_end":"2026-12-05T00:00:00Z"})", key);
  CHECK(r.status == 404);
  CHECK(starts_with(error_message(r), "plan:"));
  r = f.call("POST", "/api/v1/users/u1/subscription",
             R"({"plan":"pro","period_start":"2026-11-05T00:00:00Z","period_end":"2026-11-05T00:00:00Z"})", key);
  CHECK(r.status == 400);
  CHECK(starts_with(error_message(r), "period_end:"));
  r = f.call("POST", "/api/v1/users/u1/subscription",
             R"({"plan":"pro","period_start":"2026-11-05","period_end":"2026-12-05T00:00:00Z"})", key);
  CHECK(r.status == 400);
  CHECK(starts_with(error_message(r), "period_start:"));
  r = f.call("POST", "/api/v1/users/u1/subscription",
             R"({"plan":"pro","period_start":"1960-11-05T00:00:00Z","period_end":"2026-12-05T00:00:00Z"})", key);
  CHECK(r.status == 400);
  r = f.call("POST", "/api/v1/users/u1/subscription", R"({"plan":"pro","period_start":"2026-11-05T00:00:00Z"})", key);
  CHECK(r.status == 400);
  CHECK(error_message(r) == "period_end: missing");
  CHECK(f.counts() == before);

  r = f.call("POST", "/api/v1/users/u1/subscription",
             R"({"plan":"pro","period_start":"2026-11-05T01:00:00+01:00","period_end":"2026-12-05T00:00:00Z"})", key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.body ==
        R"({"user_id":"u1","plan":"pro","period_start":"2026-11-05T00:00:00Z","period_end":"2026-12-05T00:00:00Z"})");
  simdjson::dom::parser parser;
  simdjson::dom::element usage = parse_json(parser, usage_of(f, key, "u1"));
  CHECK(int_at(usage, "/period_start_ns") == ns_at(2026, 11, 5));
  CHECK(int_at(usage, "/period_end_ns") == ns_at(2026, 12, 5));
  std::string_view plan;
  CHECK(usage["plan"].get_string().get(plan) == simdjson::SUCCESS);
  CHECK(plan == "pro");

  // Past its end the subscription renews monthly.
  f.now = absl::FromUnixNanos(ns_at(2027, 1, 10));
  usage = parse_json(parser, usage_of(f, key, "u1"));
  CHECK(int_at(usage, "/period_start_ns") == ns_at(2027, 1, 5));
  CHECK(int_at(usage, "/period_end_ns") == ns_at(2027, 2, 5));

  // Replacing the subscription.
  REQUIRE(f.call("POST", "/api/v1/users/u1/subscription",
                 R"({"plan":"free","period_start":"2027-01-01T00:00:00Z","period_end":"2027-01-08T00:00:00Z"})", key)
              .status == 200);
  usage = parse_json(parser, usage_of(f, key, "u1"));
  CHECK(int_at(usage, "/period_start_ns") == ns_at(2027, 1, 8));
  CHECK(int_at(usage, "/period_end_ns") == ns_at(2027, 1, 15));
  CHECK(f.counts().subscriptions == 1);
}

TEST_CASE("server.ingest_is_idempotent") {
  ApiFixture f;
  const std::string key = f.new_product();
  std::vector<TestEvent> events;
  for (int i = 0; i < 50; ++i) events.push_back({.id = event_id(i), .user_id = i % 2 ? "u1" : "u2", .cost_nanos = 1000 + i});
  const std::string batch = batch_json(events);
  HttpResponse r = f.call("POST", "/api/v1/events:batch", batch, key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  simdjson::dom::element reply = parse_json(parser, r.body);
  CHECK(int_at(reply, "/accepted") == 50);
  CHECK(int_at(reply, "/duplicates") == 0);
  const std::string usage_before = usage_of(f, key, "u1");

  r = f.call("POST", "/api/v1/events:batch", batch, key);
  REQUIRE(r.status == 200);
  reply = parse_json(parser, r.body);
  CHECK(int_at(reply, "/accepted") == 0);
  CHECK(int_at(reply, "/duplicates") == 50);
  CHECK(usage_of(f, key, "u1") == usage_before);
  CHECK(f.counts().events == 50);

  // Partly new: only the new ids count; a repeated id inside a batch counts once.
  events.push_back({.id = event_id(100), .cost_nanos = 7});
  events.push_back({.id = event_id(100), .cost_nanos = 7});
  r = f.call("POST", "/api/v1/events:batch", batch_json(events), key);
  reply = parse_json(parser, r.body);
  CHECK(int_at(reply, "/accepted") == 1);
  CHECK(int_at(reply, "/duplicates") == 51);
  CHECK(f.metrics.events_ingested() == 51);
  CHECK(f.metrics.events_duplicate() == 101);
  const HttpResponse metrics = f.call("GET", "/metrics");
  CHECK(metrics.content_type.find("text/plain") == 0);
  CHECK(metrics.body.find("paygentd_events_ingested_total 51\n") != std::string::npos);
  CHECK(metrics.body.find("paygentd_events_duplicate_total 101\n") != std::string::npos);
  CHECK(metrics.body.find("paygentd_http_requests_total{path=\"/api/v1/events:batch\",code=\"200\"} 3\n") !=
        std::string::npos);
  CHECK(metrics.body.find("paygentd_request_duration_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
  CHECK(metrics.body.find("paygentd_request_duration_seconds_count") != std::string::npos);
}

// Libraries of other versions: an older one's batch (version 1, no new fields) is stored with the
// defaults; a newer one's (a higher version, fields this paygentd does not know) is stored with
// those fields ignored, nothing lost; a typo at this paygentd's own version is refused by name.
TEST_CASE("server.ingest_accepts_older_and_newer_libraries") {
  ApiFixture f;
  const std::string key = f.new_product();
  HttpResponse r = f.call("POST", "/api/v1/events:batch", batch_json({{.id = event_id(1), .cost_nanos = 5}}), key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  bool says_version = false;
  for (const auto& [name, value] : r.headers) {
    says_version = says_version || (name == "Paygent-Wire-Version" && value == std::to_string(internal::kWireVersion));
  }
  CHECK(says_version);
  CHECK(sql_int(f.db_path, "SELECT COUNT(*) FROM events WHERE kind = 'llm'") == 1);

  std::string newer = event_json({.id = event_id(2), .cost_nanos = 7});
  newer.insert(newer.size() - 1, R"(,"kind":"stt","audio_seconds":30,"voice":{"id":"v1"})");
  r = f.call("POST", "/api/v1/events:batch",
             "{\"v\":" + std::to_string(internal::kWireVersion + 1) + ",\"events\":[" + newer + "],\"trace_id\":\"x\"}",
             key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  CHECK(int_at(parse_json(parser, r.body), "/accepted") == 1);
  CHECK(sql_int(f.db_path, "SELECT COUNT(*) FROM events WHERE kind = 'stt'") == 1);
  CHECK(sql_int(f.db_path, "SELECT SUM(cost_nanos) FROM events") == 12);

  std::string typo = event_json({.id = event_id(3)});
  typo.insert(typo.size() - 1, R"(,"knid":"stt")");
  const TableCounts before = f.counts();
  r = f.call("POST", "/api/v1/events:batch", "{\"v\":2,\"events\":[" + typo + "]}", key);
  CHECK(r.status == 400);
  CHECK(error_message(r) == "events[0].knid: unknown field");
  CHECK(f.counts() == before);
}

TEST_CASE("server.ingest_stores_a_batch_whole_or_not_at_all") {
  ApiFixture f;
  const std::string key = f.new_product();
  std::vector<TestEvent> events;
  for (int i = 0; i < 10; ++i) events.push_back({.id = event_id(i), .user_id = "new-user-" + std::to_string(i)});
  std::string batch = batch_json(events);
  // events[7].cost_nanos becomes negative.
  std::size_t at = 0;
  for (int i = 0; i <= 7; ++i) at = batch.find("\"cost_nanos\"", at + 1);
  batch.replace(at, std::string("\"cost_nanos\":4500000").size(), "\"cost_nanos\":-4500000");
  const TableCounts before = f.counts();
  HttpResponse r = f.call("POST", "/api/v1/events:batch", batch, key);
  CHECK(r.status == 400);
  CHECK(error_code(r) == "invalid_argument");
  CHECK(error_message(r) == "events[7].cost_nanos: must be a non-negative integer");
  CHECK(f.counts() == before);  // not even the users of the good events

  // A batch whose sums overflow int64 is refused by the store, atomically.
  std::vector<TestEvent> huge = {{.id = event_id(1, 9), .cost_nanos = INT64_MAX - 10},
                                 {.id = event_id(2, 9), .cost_nanos = 100}};
  r = f.call("POST", "/api/v1/events:batch", batch_json(huge), key);
  CHECK(r.status == 400);
  CHECK(f.counts() == before);
  // Also across batches: the stored daily total would overflow.
  REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json({huge[0]}), key).status == 200);
  const TableCounts one = f.counts();
  r = f.call("POST", "/api/v1/events:batch", batch_json({huge[1], {.id = event_id(3, 9), .user_id = "other"}}), key);
  CHECK(r.status == 400);
  CHECK(f.counts() == one);

  // That product's total cost is now within 10 nano-USD of the largest (no batch of cost can go
  // in any more: see api_limits_test.cpp); the good batch goes into another product.
  REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json(events), f.new_product("other")).status == 200);
  CHECK(f.counts().events == 11);
}

// One event's JSON with `field` replaced by `value` (or removed when value is empty).
std::string mutate(const std::string& event, std::string_view field, std::string_view value) {
  const std::string name = "\"" + std::string(field) + "\":";
  const std::size_t at = event.find(name);
  REQUIRE(at != std::string::npos);
  std::size_t end = at + name.size();
  int depth = 0;
  bool in_string = false;
  for (; end < event.size(); ++end) {
    const char c = event[end];
    if (in_string) {
      if (c == '\\') ++end;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') ++depth;
    else if (c == '}' || c == ']') {
      if (depth == 0) break;
      --depth;
    } else if (c == ',' && depth == 0) {
      break;
    }
  }
  if (value.empty()) {
    // Remove the member and one adjacent comma.
    std::size_t from = at, to = end;
    if (to < event.size() && event[to] == ',') ++to;
    else if (from > 0 && event[from - 1] == ',') --from;
    return event.substr(0, from) + event.substr(to);
  }
  return event.substr(0, at) + name + std::string(value) + event.substr(end);
}

TEST_CASE("server.ingest_names_the_bad_field") {
  ApiFixture f;
  const std::string key = f.new_product();
  const std::string good = event_json({.id = event_id(1)});
  const std::string other = event_json({.id = event_id(2)});
  struct Case {
    std::string field, value, message;
  };
  const std::vector<Case> cases = {
      {"id", "", "events[1].id: missing"},
      {"id", "\"ABCDEF0123456789abcdef0123456789\"", "events[1].id: must be 32 lowercase hex digits"},
      {"id", "\"abc\"", "events[1].id: must be 32 lowercase hex digits"},
      {"id", "42", "events[1].id: must be 32 lowercase hex digits"},
      {"user_id", "", "events[1].user_id: missing"},
      {"user_id", "\"\"", "events[1].user_id: must not be empty"},
      {"user_id", "7", "events[1].user_id: must be a string"},
      {"user_id", "\"" + std::string(1025, 'x') + "\"", "events[1].user_id: must be at most 1024 bytes"},
      {"session_id", "null", "events[1].session_id: must be a string"},
      {"agent_id", "", "events[1].agent_id: missing"},
      {"indicator", "[]", "events[1].indicator: must be a string"},
      {"model", "", "events[1].model: missing"},
      {"provider", "{}", "events[1].provider: must be a string"},
      {"input_tokens", "-1", "events[1].input_tokens: must be a non-negative integer"},
      {"input_tokens", "1.5", "events[1].input_tokens: must be a non-negative integer"},
      {"input_tokens", "1e3", "events[1].input_tokens: must be a non-negative integer"},
      {"input_tokens", "\"10\"", "events[1].input_tokens: must be a non-negative integer"},
      {"output_tokens", "", "events[1].output_tokens: missing"},
      {"output_tokens", "9223372036854775808", "events[1].output_tokens: must fit in a signed 64-bit integer"},
      {"cached_input_tokens", "true", "events[1].cached_input_tokens: must be a non-negative integer"},
      {"cache_creation_input_tokens", "-5", "events[1].cache_creation_input_tokens: must be a non-negative integer"},
      {"reasoning_tokens", "", "events[1].reasoning_tokens: missing"},
      {"cost_nanos", "-1", "events[1].cost_nanos: must be a non-negative integer"},
      {"cost_nanos", "0.5", "events[1].cost_nanos: must be a non-negative integer"},
      {"ts_ns", "", "events[1].ts_ns: missing"},
      {"ts_ns", "-1763380000000000000", "events[1].ts_ns: must be a non-negative integer"},
      {"meta_tags", "[]", "events[1].meta_tags: must be an object of strings"},
      {"meta_tags", "{\"k\":1}", "events[1].meta_tags.k: must be a string"},
      {"meta_tags", "{\"k\":\"a\",\"k\":\"b\"}", "events[1].meta_tags.k: repeated tag"},
      {"meta_tags", "", "events[1].meta_tags: missing"},
      {"estimated", "0", "events[1].estimated: must be true or false"},
      {"estimated", "", "events[1].estimated: missing"},
  };
  const TableCounts before = f.counts();
  for (const Case& c : cases) {
    const std::string body = "{\"events\":[" + good + "," + mutate(other, c.field, c.value) + "]}";
    INFO(body);
    const HttpResponse r = f.call("POST", "/api/v1/events:batch", body, key);
    CHECK(r.status == 400);
    CHECK(error_message(r) == c.message);
  }
  // Unknown and repeated fields, and the batch's own shape.
  const std::vector<std::pair<std::string, std::string>> shapes = {
      {"{\"events\":[" + good + "," + other.substr(0, other.size() - 1) + ",\"price\":1}]}", "events[1].price: unknown field"},
      {"{\"events\":[" + good + "," + other.substr(0, other.size() - 1) + ",\"model\":\"x\"}]}", "events[1].model: repeated field"},
      {"{\"events\":[" + good + ",7]}", "events[1]: must be an object"},
      {"{\"events\":[]}", "events: must hold 1 to 1000 events, not 0"},
      {"{\"events\":{}}", "events: must be an array of events"},
      {"{}", "events: missing"},
      {"{\"events\":[" + good + "],\"extra\":1}", "extra: unknown field"},
      {"[" + good + "]", "body: must be a JSON object"},
  };
  for (const auto& [body, message] : shapes) {
    INFO(body);
    const HttpResponse r = f.call("POST", "/api/v1/events:batch", body, key);
    CHECK(r.status == 400);
    CHECK(error_message(r) == message);
  }
  std::string many = "{\"events\":[";
  for (int i = 0; i < 1001; ++i) many += (i ? "," : "") + event_json({.id = event_id(i)});
  many += "]}";
  HttpResponse r = f.call("POST", "/api/v1/events:batch", many, key);
  CHECK(r.status == 400);
  CHECK(error_message(r) == "events: must hold 1 to 1000 events, not 1001");
  CHECK(f.counts() == before);
}

TEST_CASE("server.malformed_bodies_are_refused_on_every_endpoint") {
  ApiFixture f;
  f.api = f.make_api(std::string(kAdminToken), 64 << 10);
  const std::string key = f.new_product();
  REQUIRE(f.call("POST", "/api/v1/users", R"({"user_id":"u1"})", key).status == 201);
  REQUIRE(f.call("POST", "/api/v1/config/plans", kPlans, key).status == 200);
  struct Endpoint {
    std::string target, bearer, good_body;
  };
  const std::vector<Endpoint> endpoints = {
      {"/api/v1/products", std::string(kAdminToken), R"({"name":"acme"})"},
      {"/api/v1/users", key, R"({"user_id":"u9","name":"n"})"},
      {"/api/v1/users/u1/subscription", key, std::string(kSubscription)},
      {"/api/v1/config/plans", key, std::string(kPlans)},
      {"/api/v1/events:batch", key, batch_json({{.id = event_id(1)}})},
  };
  const TableCounts before = f.counts();
  for (const Endpoint& e : endpoints) {
    INFO(e.target);
    std::vector<std::string> bodies = {"", "{", "[]", "null", "42", "\"text\"", "{\"x\":1}", "{\"a\":}", "\x01\x02",
                                       "{\"name\":1,\"user_id\":[],\"plan\":{},\"events\":\"e\",\"plans\":7}"};
    // Every proper prefix of the good body is truncated JSON.
    for (std::size_t n = 1; n < e.good_body.size(); n += 7) bodies.push_back(e.good_body.substr(0, n));
    for (const std::string& body : bodies) {
      INFO(body);
      const HttpResponse r = f.call("POST", e.target, body, e.bearer);
      CHECK(r.status == 400);
      CHECK(error_code(r) == "invalid_argument");
    }
    HttpResponse r = f.call("POST", e.target, e.good_body + std::string(64 << 10, ' '), e.bearer);
    CHECK(r.status == 413);
    CHECK(error_code(r) == "payload_too_large");
    r = f.call("POST", e.target, e.good_body, e.bearer, "text/plain");
    CHECK(r.status == 415);
    CHECK(error_code(r) == "unsupported_media_type");
    CHECK(f.call("POST", e.target, e.good_body, e.bearer, "").status == 415);
    CHECK(f.call("POST", e.target, e.good_body, e.bearer, "application/jsonx").status == 415);
  }
  CHECK(f.counts() == before);
  // And the good bodies, with a charset parameter, are taken.
  for (const Endpoint& e : endpoints) {
    INFO(e.target);
    const HttpResponse r = f.call("POST", e.target, e.good_body, e.bearer, "Application/JSON; charset=utf-8");
    CHECK(r.status / 100 == 2);
  }
}

TEST_CASE("server.ingest_reply_carries_each_users_current_usage") {
  ApiFixture f;
  const std::string key = f.new_product();
  REQUIRE(f.call("POST", "/api/v1/config/plans", kPlans, key).status == 200);  // default plan "free": daily
  REQUIRE(f.call("POST", "/api/v1/users", R"({"user_id":"sub"})", key).status == 201);
  REQUIRE(f.call("POST", "/api/v1/users/sub/subscription", kSubscription, key).status == 200);
  // Earlier batch: usage inside and outside the current periods.
  std::vector<TestEvent> first = {
      {.id = event_id(1), .user_id = "daily", .model = "gpt-4o", .cost_nanos = 100, .ts_ns = ns_at(2026, 11, 17, 1)},
      {.id = event_id(2), .user_id = "daily", .model = "gpt-4o", .cost_nanos = 1000, .ts_ns = ns_at(2026, 11, 16, 23)},
      {.id = event_id(3), .user_id = "sub", .model = "claude", .cost_nanos = 10, .ts_ns = ns_at(2026, 11, 5)},
      {.id = event_id(4), .user_id = "sub", .model = "claude", .cost_nanos = 20, .ts_ns = ns_at(2026, 11, 4, 23, 59, 59)},
  };
  REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json(first), key).status == 200);
  std::vector<TestEvent> second = {
      {.id = event_id(5), .user_id = "daily", .model = "gpt-4o-mini", .input_tokens = 5, .output_tokens = 6,
       .cost_nanos = 7, .ts_ns = ns_at(2026, 11, 17, 11)},
      {.id = event_id(6), .user_id = "sub", .model = "claude", .input_tokens = 1, .output_tokens = 2, .cost_nanos = 3,
       .ts_ns = ns_at(2026, 12, 4, 23)},
      {.id = event_id(1), .user_id = "daily", .cost_nanos = 100, .ts_ns = ns_at(2026, 11, 17, 1)},  // duplicate
  };
  const HttpResponse r = f.call("POST", "/api/v1/events:batch", batch_json(second), key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  const simdjson::dom::element reply = parse_json(parser, r.body);
  CHECK(int_at(reply, "/accepted") == 2);
  CHECK(int_at(reply, "/duplicates") == 1);
  // "daily" has no subscription: the default plan's calendar rule (a UTC day).
  CHECK(int_at(reply, "/usage/daily/period_start_ns") == ns_at(2026, 11, 17));
  CHECK(int_at(reply, "/usage/daily/period_end_ns") == ns_at(2026, 11, 18));
  CHECK(int_at(reply, "/usage/daily/spend_nanos") == 107);
  CHECK(int_at(reply, "/usage/daily/models/gpt-4o/input_tokens") == 1000);
  CHECK(int_at(reply, "/usage/daily/models/gpt-4o/output_tokens") == 200);
  CHECK(int_at(reply, "/usage/daily/models/gpt-4o/cost_nanos") == 100);
  CHECK(int_at(reply, "/usage/daily/models/gpt-4o-mini/input_tokens") == 5);
  CHECK(int_at(reply, "/usage/daily/models/gpt-4o-mini/output_tokens") == 6);
  // "sub" has a subscription: [Nov 5, Dec 5).
  CHECK(int_at(reply, "/usage/sub/period_start_ns") == ns_at(2026, 11, 5));
  CHECK(int_at(reply, "/usage/sub/period_end_ns") == ns_at(2026, 12, 5));
  CHECK(int_at(reply, "/usage/sub/spend_nanos") == 13);
  CHECK(int_at(reply, "/usage/sub/models/claude/input_tokens") == 1001);
  CHECK(reply["usage"].get_object().value().size() == 2);

  // GET .../usage has the same totals, plus calls and sessions.
  const simdjson::dom::element usage = parse_json(parser, usage_of(f, key, "daily"));
  CHECK(int_at(usage, "/spend_nanos") == 107);
  CHECK(int_at(usage, "/calls") == 2);
  CHECK(int_at(usage, "/sessions/s1/spend_nanos") == 107);
  CHECK(int_at(usage, "/sessions/s1/calls") == 2);
  std::string_view plan;
  CHECK(usage["plan"].get_string().get(plan) == simdjson::SUCCESS);
  CHECK(plan == "free");
}

TEST_CASE("server.usage_query_answers_many_users_at_once_as_ingest_does") {
  ApiFixture f;
  const std::string key = f.new_product();
  const std::string other = f.new_product("other");
  REQUIRE(f.call("POST", "/api/v1/config/plans", kPlans, key).status == 200);
  REQUIRE(f.call("POST", "/api/v1/users", R"({"user_id":"sub"})", key).status == 201);
  REQUIRE(f.call("POST", "/api/v1/users/sub/subscription", kSubscription, key).status == 200);
  std::vector<TestEvent> events = {
      {.id = event_id(1), .user_id = "daily", .model = "gpt-4o", .cost_nanos = 100, .ts_ns = ns_at(2026, 11, 17, 1)},
      {.id = event_id(2), .user_id = "daily", .model = "gpt-4o", .cost_nanos = 1000, .ts_ns = ns_at(2026, 11, 16, 23)},
      {.id = event_id(3), .user_id = "sub", .model = "claude", .cost_nanos = 10, .ts_ns = ns_at(2026, 11, 5)},
      {.id = event_id(4), .user_id = "sub", .model = "claude", .cost_nanos = 20, .ts_ns = ns_at(2026, 11, 4, 23)},
  };
  const HttpResponse ingested = f.call("POST", "/api/v1/events:batch", batch_json(events), key);
  REQUIRE(ingested.status == 200);
  // Another product's user of the same name is not this product's.
  events = {{.id = event_id(9), .user_id = "theirs", .cost_nanos = 5, .ts_ns = ns_at(2026, 11, 17, 2)}};
  REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json(events), other).status == 200);

  const HttpResponse r =
      f.call("POST", "/api/v1/usage:query", R"({"users":["sub","nobody","daily","theirs"]})", key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  // The same objects as the ingest reply (which came after the last event: nothing changed since).
  const std::string tail = ingested.body.substr(ingested.body.find("\"plans_version\""));
  CHECK(r.body == "{" + tail);
  simdjson::dom::parser parser;
  const simdjson::dom::element reply = parse_json(parser, r.body);
  CHECK(reply["usage"].get_object().value().size() == 2);  // "nobody" and the other product's user left out
  CHECK(int_at(reply, "/usage/daily/spend_nanos") == 100);
  CHECK(int_at(reply, "/usage/sub/spend_nanos") == 10);
  CHECK(int_at(reply, "/usage/sub/subscription/period_start_ns") == ns_at(2026, 11, 5));

  // Refusals name the field; nothing is created.
  for (std::string_view bad : {R"({"users":[]})", R"({"users":"u1"})", R"({"users":[1]})", R"({"users":[""]})",
                               R"({"users":["a","a"]})", R"({"user":["a"]})", R"({"users":["a"])"}) {
    CAPTURE(bad);
    const HttpResponse refused = f.call("POST", "/api/v1/usage:query", bad, key);
    CHECK(refused.status == 400);
    CHECK(refused.body.find("\"error\"") != std::string::npos);
  }
  std::string many = R"({"users":[)";
  for (int i = 0; i < 1001; ++i) many += (i ? ",\"u" : "\"u") + std::to_string(i) + "\"";
  many += "]}";
  CHECK(f.call("POST", "/api/v1/usage:query", many, key).status == 400);
  CHECK(f.call("GET", "/api/v1/users/nobody/usage", {}, key).status == 404);
  CHECK(f.call("POST", "/api/v1/usage:query", R"({"users":["daily"]})", "pg_not_a_key").status == 401);
}

TEST_CASE("server.products_are_isolated") {
  ApiFixture f;
  const std::string a = f.new_product("a");
  const std::string b = f.new_product("b");
  REQUIRE(f.call("POST", "/api/v1/users", R"({"user_id":"u1"})", a).status == 201);
  REQUIRE(f.call("POST", "/api/v1/config/plans", kPlans, a).status == 200);
  REQUIRE(f.call("POST", "/api/v1/users/u1/subscription", kSubscription, a).status == 200);
  const std::vector<TestEvent> events = {{.id = event_id(1), .cost_nanos = 5}, {.id = event_id(2), .cost_nanos = 6}};
  REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json(events), a).status == 200);
  const std::string a_usage = usage_of(f, a, "u1");

  // B sees none of A's users, plans or usage.
  CHECK(f.call("GET", "/api/v1/users/u1/usage", {}, b).status == 404);
  CHECK(f.call("GET", "/api/v1/config/plans", {}, b).body == R"({"plans":[]})");
  CHECK(f.call("POST", "/api/v1/users/u1/subscription", kSubscription, b).status == 404);
  HttpResponse r = f.call("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=user", {}, b);
  CHECK(r.body == R"({"rows":[]})");
  // B's writes do not touch A: its own user u1, plans and the same event ids.
  CHECK(f.call("POST", "/api/v1/users", R"({"user_id":"u1"})", b).status == 201);
  CHECK(f.call("POST", "/api/v1/config/plans", R"({"plans":[{"name":"x"}]})", b).status == 200);
  r = f.call("POST", "/api/v1/events:batch", batch_json(events), b);
  simdjson::dom::parser parser;
  CHECK(int_at(parse_json(parser, r.body), "/accepted") == 2);  // same ids, other product: counted
  CHECK(int_at(parse_json(parser, usage_of(f, b, "u1")), "/spend_nanos") == 11);
  CHECK(usage_of(f, a, "u1") == a_usage);
  const absl::StatusOr<PlanConfig> a_plans = parse_plan_config(f.call("GET", "/api/v1/config/plans", {}, a).body);
  REQUIRE(a_plans.ok());
  CHECK(a_plans->plans.size() == 2);
  r = f.call("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=user", {}, a);
  CHECK(r.body == R"({"rows":[{"key":"u1","calls":2,"input_tokens":2000,"output_tokens":400,"cost_nanos":11}]})");
}

TEST_CASE("server.reports_group_usage_over_a_range") {
  ApiFixture f;
  const std::string key = f.new_product();
  const std::vector<TestEvent> events = {
      {.id = event_id(1), .user_id = "u1", .session_id = "a", .model = "m1", .input_tokens = 1, .output_tokens = 10,
       .cost_nanos = 100, .ts_ns = ns_at(2026, 10, 31, 23, 59, 59)},
      {.id = event_id(2), .user_id = "u1", .session_id = "a", .model = "m2", .input_tokens = 2, .output_tokens = 20,
       .cost_nanos = 200, .ts_ns = ns_at(2026, 11, 1)},
      {.id = event_id(3), .user_id = "u2", .session_id = "b", .model = "m1", .input_tokens = 3, .output_tokens = 30,
       .cost_nanos = 300, .ts_ns = ns_at(2026, 11, 1, 12)},
      {.id = event_id(4), .user_id = "u2", .session_id = "b", .model = "m1", .input_tokens = 4, .output_tokens = 40,
       .cost_nanos = 400, .ts_ns = ns_at(2026, 11, 3, 6)},
  };
  REQUIRE(f.call("POST", "/api/v1/events:batch", batch_json(events), key).status == 200);
  auto report = [&](std::string query) {
    const HttpResponse r = f.call("GET", "/api/v1/reports/usage?" + query, {}, key);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    return r.body;
  };
  const std::string all = "from_ns=0&to_ns=" + std::to_string(ns_at(2027, 1, 1));
  CHECK(report(all + "&group_by=user") ==
        R"({"rows":[{"key":"u1","calls":2,"input_tokens":3,"output_tokens":30,"cost_nanos":300},)"
        R"({"key":"u2","calls":2,"input_tokens":7,"output_tokens":70,"cost_nanos":700}]})");
  CHECK(report(all + "&group_by=model") ==
        R"({"rows":[{"key":"m1","calls":3,"input_tokens":8,"output_tokens":80,"cost_nanos":800},)"
        R"({"key":"m2","calls":1,"input_tokens":2,"output_tokens":20,"cost_nanos":200}]})");
  CHECK(report(all + "&group_by=session&user_id=u2") ==
        R"({"rows":[{"key":"b","calls":2,"input_tokens":7,"output_tokens":70,"cost_nanos":700}]})");
  CHECK(report(all + "&group_by=month") ==
        R"({"rows":[{"key":"2026-10","calls":1,"input_tokens":1,"output_tokens":10,"cost_nanos":100},)"
        R"({"key":"2026-11","calls":3,"input_tokens":9,"output_tokens":90,"cost_nanos":900}]})");
  CHECK(report(all + "&group_by=day") ==
        R"({"rows":[{"key":"2026-10-31","calls":1,"input_tokens":1,"output_tokens":10,"cost_nanos":100},)"
        R"({"key":"2026-11-01","calls":2,"input_tokens":5,"output_tokens":50,"cost_nanos":500},)"
        R"({"key":"2026-11-03","calls":1,"input_tokens":4,"output_tokens":40,"cost_nanos":400}]})");
  // [from, to) at odd instants: to is exclusive, from inclusive.
  CHECK(report("from_ns=" + std::to_string(ns_at(2026, 10, 31, 23, 59, 59)) + "&to_ns=" +
                std::to_string(ns_at(2026, 11, 1, 12)) + "&group_by=user") ==
        R"({"rows":[{"key":"u1","calls":2,"input_tokens":3,"output_tokens":30,"cost_nanos":300}]})");
  CHECK(report("from_ns=5&to_ns=5&group_by=user") == R"({"rows":[]})");
  CHECK(report(all + "&group_by=user&user_id=nobody") == R"({"rows":[]})");
  CHECK(report("group_by=user&user_id=u%32&" + all) ==
        R"({"rows":[{"key":"u2","calls":2,"input_tokens":7,"output_tokens":70,"cost_nanos":700}]})");

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"to_ns=1&group_by=user", "from_ns: missing"},
      {"from_ns=1&group_by=user", "to_ns: missing"},
      {"from_ns=-1&to_ns=1&group_by=user", "from_ns: must be a non-negative integer"},
      {"from_ns=1x&to_ns=1&group_by=user", "from_ns: must be a non-negative integer"},
      {"from_ns=1&to_ns=99999999999999999999&group_by=user", "to_ns: must be a non-negative integer"},
      {"from_ns=2&to_ns=1&group_by=user", "to_ns: must not be before from_ns"},
      {"from_ns=1&to_ns=2", "group_by: missing"},
      {"from_ns=1&to_ns=2&group_by=agent", "group_by: must be user, model, provider, session, day or month"},
      {"from_ns=1&to_ns=2&group_by=user&limit=3", "limit: unknown query parameter (from_ns, to_ns, group_by, user_id)"},
      {"from_ns=1&from_ns=1&to_ns=2&group_by=user", "from_ns: repeated query parameter"},
      {"from_ns=1&to_ns=2&group_by=user&user_id=", "user_id: must not be empty"},
  };
  for (const auto& [query, message] : bad) {
    INFO(query);
    const HttpResponse r = f.call("GET", "/api/v1/reports/usage?" + query, {}, key);
    CHECK(r.status == 400);
    CHECK(error_message(r) == message);
  }
}

TEST_CASE("server.unknown_paths_and_methods") {
  ApiFixture f;
  const std::string key = f.new_product();
  HttpResponse r = f.call("GET", "/api/v1/nothing", {}, key);
  CHECK(r.status == 404);
  CHECK(error_code(r) == "not_found");
  CHECK(f.call("GET", "/api/v1/users/u1", {}, key).status == 404);
  CHECK(f.call("GET", "/api/v1/users//usage", {}, key).status == 404);
  CHECK(f.call("GET", "/", {}, key).status == 404);
  r = f.call("GET", "/api/v1/events:batch", {}, key);
  CHECK(r.status == 405);
  CHECK(error_code(r) == "method_not_allowed");
  REQUIRE(r.headers.size() == 4);
  CHECK(r.headers[0].first == "Allow");
  CHECK(r.headers[0].second == "POST");
  CHECK(r.headers[1].first == "Paygent-Wire-Version");  // on every reply
  CHECK(r.headers[2] == std::pair<std::string, std::string>("Cache-Control", "no-store"));  // on every JSON reply
  CHECK(r.headers[3] == std::pair<std::string, std::string>("X-Content-Type-Options", "nosniff"));
  CHECK(f.call("DELETE", "/api/v1/config/plans", {}, key).status == 405);
  CHECK(f.call("POST", "/healthz").status == 405);
  CHECK(f.call("PUT", "/api/v1/users/u1/usage", {}, key).status == 405);
  // Unknown paths are counted under one label, whatever was asked.
  CHECK(f.call("GET", "/metrics").body.find("paygentd_http_requests_total{path=\"other\",code=\"404\"} 4") !=
        std::string::npos);
}

}  // namespace
}  // namespace paygent::server::test
