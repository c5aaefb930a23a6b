// Tests of the request bodies and reply text of paygentd's API (server/wire.h).
#include "server/wire.h"

#include <string>
#include <string_view>

#include <doctest/doctest.h>

namespace paygent::server {
namespace {

TEST_CASE("server.wire_reads_every_event_field") {
  const absl::StatusOr<std::vector<EventRecord>> events = parse_event_batch(R"({"events": [{
      "id": "0123456789abcdef0123456789abcdef", "user_id": "u1", "session_id": "auto-1763380000000",
      "agent_id": "support", "indicator": "ticket", "model": "gpt-4o", "provider": "openai",
      "input_tokens": 1000, "output_tokens": 200, "cached_input_tokens": 300,
      "cache_creation_input_tokens": 4, "reasoning_tokens": 50,
      "cost_nanos": 4500000, "ts_ns": 1763380000000000000,
      "meta_tags": {"k": "v", "quote\"d": "line\nbreak"}, "estimated": true}]})");
  REQUIRE_MESSAGE(events.ok(), events.status().ToString());
  REQUIRE(events->size() == 1);
  const EventRecord& e = events->front();
  CHECK(e.id == "0123456789abcdef0123456789abcdef");
  CHECK(e.user_id == "u1");
  CHECK(e.session_id == "auto-1763380000000");
  CHECK(e.agent_id == "support");
  CHECK(e.indicator == "ticket");
  CHECK(e.model == "gpt-4o");
  CHECK(e.provider == "openai");
  CHECK(e.input_tokens == 1000);
  CHECK(e.output_tokens == 200);
  CHECK(e.cached_input_tokens == 300);
  CHECK(e.cache_creation_input_tokens == 4);
  CHECK(e.reasoning_tokens == 50);
  CHECK(e.cost_nanos == 4'500'000);
  CHECK(e.ts_ns == 1'763'380'000'000'000'000);
  CHECK(e.meta_tags_json == R"({"k":"v","quote\"d":"line\nbreak"})");
  CHECK(e.estimated);
}

TEST_CASE("server.wire_reads_the_small_bodies") {
  CHECK(parse_new_product(R"({"name":"acme"})")->name == "acme");
  CHECK(parse_new_product(R"({"name":""})").status().message() == "name: must not be empty");
  const absl::StatusOr<NewUser> user = parse_new_user(R"({"user_id":"u1"})");
  REQUIRE(user.ok());
  CHECK(user->user_id == "u1");
  CHECK(user->name.empty());
  CHECK(parse_new_user(R"({"name":"x"})").status().message() == "user_id: missing");
  const absl::StatusOr<Subscription> s =
      parse_subscription(R"({"plan":"pro","period_start":"2026-11-01T00:00:00Z","period_end":"2026-12-01T00:00:00.5Z"})");
  REQUIRE(s.ok());
  CHECK(s->plan == "pro");
  CHECK(rfc3339_utc(s->period_start_ns) == "2026-11-01T00:00:00Z");
  CHECK(rfc3339_utc(s->period_end_ns) == "2026-12-01T00:00:00.5Z");
  CHECK(parse_subscription("{\"plan\":\"pro\"").status().message().substr(0, 20) == "body: not valid JSON");
}

TEST_CASE("server.wire_quotes_json_text") {
  CHECK(json_quote("plain") == "\"plain\"");
  CHECK(json_quote("a\"b\\c") == R"("a\"b\\c")");
  CHECK(json_quote(std::string_view("\x01\n\t\x1f", 4)) == R"("\u0001\n\t\u001f")");
  CHECK(json_quote("é€") == "\"é€\"");
  CHECK(valid_utf8("é€"));
  CHECK(!valid_utf8("\xff"));
}

}  // namespace
}  // namespace paygent::server
