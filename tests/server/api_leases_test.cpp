// Tests of POST /api/v1/leases (docs/leases.md) through Api::handle_request over a SqliteStorage:
// the product key, the reply, the TTL, and strict bodies refused naming the field (storing nothing).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "server/api.h"
#include "server/wire.h"
#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

constexpr std::string_view kHolder = "9f0c0000000000000000000000000001";

std::string entry(std::string_view user = "u1", std::string_view limit = "total_spend", std::int64_t start = 100,
                  std::string_view rest = R"("period_end_ns":200,"cap":300,"used":75,"acked":60,"want":30,"need":7,"release":false)") {
  return "{\"user_id\":" + json_quote(user) + ",\"limit\":" + json_quote(limit) +
         ",\"period_start_ns\":" + std::to_string(start) + "," + std::string(rest) + "}";
}

// entry() with the text `from` replaced by `to` (`from` must be in it).
std::string with(std::string_view from, std::string_view to) {
  std::string out = entry();
  const std::size_t at = out.find(from);
  REQUIRE(at != std::string::npos);
  return out.replace(at, from.size(), to);
}

std::string body(const std::vector<std::string>& entries, std::string_view holder = kHolder) {
  std::string out = "{\"holder\":" + json_quote(holder) + ",\"leases\":[";
  for (std::size_t i = 0; i < entries.size(); ++i) out += (i ? "," : "") + entries[i];
  return out + "]}";
}

std::int64_t lease_rows(const ApiFixture& f) { return sql_int(f.db_path, "SELECT COUNT(*) FROM leases"); }

TEST_CASE("server.leases_endpoint_grants_and_answers_in_order") {
  ApiFixture f;
  f.api = std::make_unique<Api>(*f.storage, f.metrics,
                                ApiOptions{.admin_token = std::string(kAdminToken),
                                           .lease_ttl = absl::Milliseconds(2500),
                                           .clock = [&f] { return f.now; }});
  const std::string key = f.new_product();
  const HttpResponse r =
      f.call("POST", "/api/v1/leases", body({entry("u1"), entry("u2", "model_limit:gpt-4o", 5)}), key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.body ==
        R"({"ttl_ms":2500,"leases":[{"user_id":"u1","limit":"total_spend","period_start_ns":100,"granted":30,"ceiling":105,)"
        R"("spent":0,"held_elsewhere":0,"remaining":255,"holders":1},{"user_id":"u2","limit":"model_limit:gpt-4o",)"
        R"("period_start_ns":5,"granted":30,"ceiling":105,"spent":0,"held_elsewhere":0,"remaining":255,"holders":1}]})");
  CHECK(lease_rows(f) == 2);
  // Written to expire one TTL after the Api's "now".
  CHECK(sql_int(f.db_path, "SELECT MIN(expires_at_ns) FROM leases") == absl::ToUnixNanos(f.now) + 2'500'000'000);
  // An empty request is answered, and changes nothing.
  CHECK(f.call("POST", "/api/v1/leases", body({}), key).body == R"({"ttl_ms":2500,"leases":[]})");
  // The endpoint takes POST only.
  CHECK(f.call("GET", "/api/v1/leases", {}, key).status == 405);
}

TEST_CASE("server.leases_endpoint_needs_the_product_key") {
  ApiFixture f;
  const std::string key = f.new_product();
  for (std::string_view bad : {std::string_view(), std::string_view("pg_live_0000"), kAdminToken,
                               std::string_view(key).substr(0, key.size() - 1)}) {
    const HttpResponse r = f.call("POST", "/api/v1/leases", body({entry()}), bad);
    CHECK(r.status == 401);
    CHECK(error_code(r) == "unauthenticated");
  }
  CHECK(lease_rows(f) == 0);
  // Another product's leases are apart: its holder is alone on the same user and limit.
  const std::string other = f.new_product("other");
  REQUIRE(f.call("POST", "/api/v1/leases", body({entry()}), key).status == 200);
  const HttpResponse r = f.call("POST", "/api/v1/leases", body({entry()}, "9f0c0000000000000000000000000002"), other);
  CHECK(r.body.find("\"held_elsewhere\":0") != std::string::npos);
  CHECK(r.body.find("\"holders\":1") != std::string::npos);
}

TEST_CASE("server.leases_endpoint_refuses_malformed_bodies_naming_the_field") {
  ApiFixture f;
  const std::string key = f.new_product();
  const std::string good = entry();
  const std::string nul_user = with(R"("u1")", R"("a\u0000b")");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"holder":"9f0c0000000000000000000000000001"})", "leases: missing"},
      {R"({"leases":[]})", "holder: missing"},
      {body({good}, "9F0C0000000000000000000000000001"), "holder: must be 32 lowercase hex digits"},
      {body({good}, "9f0c"), "holder: must be 32 lowercase hex digits"},
      {R"({"holder":"9f0c0000000000000000000000000001","leases":[],"extra":1})", "extra: unknown field"},
      {R"({"holder":"9f0c0000000000000000000000000001","leases":[],"leases":[]})", "leases: repeated field"},
      {R"({"holder":"9f0c0000000000000000000000000001","leases":{}})", "leases: must be an array of leases"},
      {body({good, "7"}), "leases[1]: must be an object"},
      {body({good, with(R"(false})", R"(false,"wnat":1})")}),
       "leases[1].wnat: unknown field"},
      {body({with(R"("cap")", R"("period_end_ns":200,"cap")")}),
       "leases[0].period_end_ns: repeated field"},
      {body({with(R"("need":7,)", "")}),
       "leases[0].need: missing"},
      {body({entry("")}), "leases[0].user_id: must not be empty"},
      {body({entry(std::string(kMaxTextBytes + 1, 'u'))}), "leases[0].user_id: must be at most 1024 bytes"},
      {body({nul_user}), "leases[0].user_id: must not contain \\u0000"},
      {body({entry("u1", "total")}), "leases[0].limit: must be \"total_spend\""},
      {body({entry("u1", "session_spend:")}), "leases[0].limit: must be"},
      {body({entry("u1", "model_limit:" + std::string(kMaxTextBytes + 1, 'm'))}), "leases[0].limit: must be"},
      {body({entry("u1", "total_spend", -1)}), "leases[0].period_start_ns: must be a non-negative integer"},
      {body({entry("u1", "total_spend", 200)}), "leases[0].period_end_ns: must be after period_start_ns"},
      {body({with(R"("cap":300)", R"("cap":-1)")}),
       "leases[0].cap: must be a non-negative integer"},
      {body({with(R"("acked":60)", R"("acked":76)")}),
       "leases[0].acked: must not be more than used"},
      {body({with(R"("want":30)", R"("want":1.5)")}),
       "leases[0].want: must be a non-negative integer"},
      {body({with(R"("need":7)", R"("need":18446744073709551615)")}),
       "leases[0].need: must fit in a signed 64-bit integer"},
      {body({with(R"("release":false)", R"("release":1)")}),
       "leases[0].release: must be true or false"},
      {body({with(R"("need":7,"release":false)", R"("need":0,"release":true)")}),
       "leases[0].want: must be 0 when release is true"},
      {body({with(R"("want":30,"need":7,"release":false)", R"("want":0,"need":7,"release":true)")}),
       "leases[0].need: must be 0 when release is true"},
      {body({entry("u1"), entry("u2"), entry("u1", "total_spend", 101), entry("u1")}),
       "leases[3]: repeats the user_id, limit and period_start_ns of leases[0]"},
  };
  for (const auto& [request, message] : cases) {
    INFO(request);
    const HttpResponse r = f.call("POST", "/api/v1/leases", request, key);
    CHECK(r.status == 400);
    CHECK(error_code(r) == "invalid_argument");
    CHECK_MESSAGE(error_message(r).starts_with(message), error_message(r));
  }
  CHECK(lease_rows(f) == 0);
}

TEST_CASE("server.leases_endpoint_takes_at_most_100_entries") {
  ApiFixture f;
  const std::string key = f.new_product();
  std::vector<std::string> entries;
  for (int i = 0; i < 101; ++i) entries.push_back(entry("u" + std::to_string(i)));
  HttpResponse r = f.call("POST", "/api/v1/leases", body(entries), key);
  CHECK(r.status == 400);
  CHECK(error_message(r) == "leases: must hold at most 100 leases, not 101");
  CHECK(lease_rows(f) == 0);
  entries.pop_back();
  r = f.call("POST", "/api/v1/leases", body(entries), key);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, r.body);
  simdjson::dom::array leases;
  REQUIRE(root["leases"].get_array().get(leases) == simdjson::SUCCESS);
  CHECK(leases.size() == 100);
  CHECK(lease_rows(f) == 100);
}

}  // namespace
}  // namespace paygent::server::test
