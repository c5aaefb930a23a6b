// Tests of the request bodies and reply text of paygentd's API (server/wire.h).
#include "server/wire.h"

#include <span>
#include <string>
#include <string_view>
#include <vector>

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
  CHECK(e.kind == internal::UsageKind::kLlm);  // a version 1 batch: the default
}

// A minimal event of version 1, with `extra` members appended.
std::string event_with(std::string_view extra) {
  return std::string(R"({"id":"0123456789abcdef0123456789abcdef","user_id":"u1","session_id":"","agent_id":"",)"
                     R"("indicator":"","model":"m","provider":"openai","input_tokens":1,"output_tokens":2,)"
                     R"("cached_input_tokens":0,"cache_creation_input_tokens":0,"reasoning_tokens":0,"cost_nanos":3,)"
                     R"("ts_ns":4,"meta_tags":{},"estimated":false)") +
         std::string(extra) + "}";
}

TEST_CASE("server.wire_reads_the_fields_added_since_version_1") {
  const absl::StatusOr<std::vector<EventRecord>> events =
      parse_event_batch("{\"v\":2,\"events\":[" + event_with(R"(,"kind":"stt")") + "]}");
  REQUIRE_MESSAGE(events.ok(), events.status().ToString());
  CHECK(events->front().kind == internal::UsageKind::kStt);
  CHECK(events->front().cost_nanos == 3);
  CHECK(parse_event_batch("{\"v\":2,\"events\":[" + event_with(R"(,"kind":"fax")") + "]}").status().message() ==
        R"(events[0].kind: must be one of "llm", "stt", "tts", "sts", "video", "external", "billing")");
}

TEST_CASE("server.wire_reads_the_media_quantities_of_version_4") {
  // event_with's input_tokens 1 and output_tokens 2; a speech-to-speech event's audio parts fit.
  const absl::StatusOr<std::vector<EventRecord>> events = parse_event_batch(
      "{\"v\":4,\"events\":[" +
      event_with(R"(,"kind":"sts","audio_us":1200000,"characters":420,"video_us":8000000,"audio_input_tokens":1,)"
                 R"("cached_audio_input_tokens":0,"audio_output_tokens":2,"tier":"growth","resolution":"1280x720",)"
                 R"("description":"Twilio call","cost_unknown":true)") +
      "]}");
  REQUIRE_MESSAGE(events.ok(), events.status().ToString());
  const EventRecord& e = events->front();
  CHECK(e.kind == internal::UsageKind::kSts);
  CHECK(e.audio_us == 1'200'000);
  CHECK(e.characters == 420);
  CHECK(e.video_us == 8'000'000);
  CHECK(e.audio_input_tokens == 1);
  CHECK(e.audio_output_tokens == 2);
  CHECK(e.tier == "growth");
  CHECK(e.resolution == "1280x720");
  CHECK(e.description == "Twilio call");
  CHECK(e.cost_unknown);
  // The encoder stamps such an event with version 4 and writes what it reads back.
  CHECK(internal::wire_version_needed(e) == internal::kMediaWireVersion);
  const absl::StatusOr<std::vector<EventRecord>> again =
      parse_event_batch(internal::encode_event_batch(std::span<const EventRecord>(&e, 1)));
  REQUIRE_MESSAGE(again.ok(), again.status().ToString());
  CHECK(again->front() == e);

  // cost_unknown is informational: an llm event of an unpriced model needs version 4 only of a
  // backend that reads it; to an older one it goes as version 1, without the field.
  EventRecord unpriced;
  unpriced.id = std::string(32, 'a');
  unpriced.user_id = "u1";
  unpriced.model = "mystery";
  unpriced.input_tokens = 10;
  unpriced.cost_unknown = true;
  CHECK(internal::wire_version_needed(unpriced) == internal::kMediaWireVersion);
  CHECK(internal::wire_version_needed(unpriced, 3) == 1);
  const std::string old_backend = internal::encode_event_batch(std::span<const EventRecord>(&unpriced, 1), {}, 3);
  CHECK(old_backend.rfind("{\"events\":", 0) == 0);
  CHECK(old_backend.find("cost_unknown") == std::string::npos);
  CHECK(internal::encode_event_batch(std::span<const EventRecord>(&unpriced, 1)).find("\"cost_unknown\":true") !=
        std::string::npos);

  // An audio part larger than its total is refused, naming both.
  CHECK(parse_event_batch("{\"v\":4,\"events\":[" + event_with(R"(,"audio_output_tokens":3)") + "]}")
            .status()
            .message() == "events[0].audio_output_tokens: must be at most output_tokens (2): the audio tokens are a part of it");
  CHECK(parse_event_batch("{\"v\":4,\"events\":[" + event_with(R"(,"cached_audio_input_tokens":1)") + "]}")
            .status()
            .message() ==
        "events[0].cached_audio_input_tokens: must be at most cached_input_tokens (0): the audio tokens are a part of it");
}

TEST_CASE("server.wire_ignores_unknown_fields_of_a_newer_version_only") {
  // A newer library's batch: fields this paygentd does not know are ignored, the rest read.
  const std::string extra = R"(,"kind":"tts","audio_seconds":12,"modality":{"x":1})";
  absl::StatusOr<std::vector<EventRecord>> events = parse_event_batch(
      "{\"events\":[" + event_with(extra) + "],\"v\":" + std::to_string(internal::kWireVersion + 1) +
      ",\"trace\":\"t\"}");
  REQUIRE_MESSAGE(events.ok(), events.status().ToString());
  CHECK(events->front().kind == internal::UsageKind::kTts);
  CHECK(events->front().output_tokens == 2);
  // A known field keeps its checks in a newer batch.
  CHECK(parse_event_batch("{\"v\":99,\"events\":[" + event_with(R"(,"kind":7)") + "]}").status().message().find(
            "events[0].kind: must be one of") == 0);
  // At this paygentd's own version (or below) an unknown field is a typo, refused by name.
  CHECK(parse_event_batch("{\"v\":2,\"events\":[" + event_with(R"(,"knd":"stt")") + "]}").status().message() ==
        "events[0].knd: unknown field");
  CHECK(parse_event_batch("{\"events\":[" + event_with(R"(,"audio_seconds":12)") + "]}").status().message() ==
        "events[0].audio_seconds: unknown field");
  CHECK(parse_event_batch("{\"v\":2,\"trace\":1,\"events\":[" + event_with("") + "]}").status().message() ==
        "trace: unknown field");
  // Required fields stay required whatever the version.
  CHECK(parse_event_batch(R"({"v":99,"events":[{"id":"0123456789abcdef0123456789abcdef"}]})").status().message() ==
        "events[0].user_id: missing");
  CHECK(parse_event_batch("{\"v\":0,\"events\":[" + event_with("") + "]}").status().message() ==
        "v: must be a positive integer (the wire version)");
  CHECK(parse_event_batch("{\"v\":\"2\",\"events\":[" + event_with("") + "]}").status().message() ==
        "v: must be a positive integer (the wire version)");
  CHECK(parse_event_batch(R"({"v":2})").status().message() == "events: missing");
}

// What the syncer's encoder writes, the server's reader reads back unchanged, at the lowest version
// that carries it.
TEST_CASE("server.wire_reads_what_the_library_encodes") {
  EventRecord a;
  a.id = "0123456789abcdef0123456789abcdef";
  a.user_id = "u\"1";
  a.session_id = "s";
  a.model = "gpt-4o";
  a.provider = "openai";
  a.input_tokens = 10;
  a.reasoning_tokens = 3;
  a.cost_nanos = 99;
  a.ts_ns = 5;
  a.meta_tags_json = R"({"k":"v"})";
  a.estimated = true;
  EventRecord b = a;
  b.id = "fedcba9876543210fedcba9876543210";
  b.kind = internal::UsageKind::kVideo;
  const std::string v1 = internal::encode_event_batch(std::vector<EventRecord>{a});
  CHECK(v1.rfind("{\"events\":[", 0) == 0);         // a version 1 batch (no "v"), as any paygentd reads
  CHECK(v1.find("\"kind\"") == std::string::npos);  // the default is left out
  const std::string v2 = internal::encode_event_batch(std::vector<EventRecord>{a, b});
  CHECK(v2.rfind("{\"v\":2,", 0) == 0);
  const absl::StatusOr<std::vector<EventRecord>> read = parse_event_batch(v2);
  REQUIRE_MESSAGE(read.ok(), read.status().ToString());
  REQUIRE(read->size() == 2);
  CHECK((*read)[0] == a);
  CHECK((*read)[1] == b);
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
