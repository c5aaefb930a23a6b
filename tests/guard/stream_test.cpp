// The streaming form of metered_call: Paygent::metered_stream and MeteredStream, fed with
// server-sent-event streams written here as the providers send them.
#include "paygent/paygent.h"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "tests/guard/fixture.h"

namespace paygent {
namespace {

// OpenAI chat completions with stream_options.include_usage: usage comes in a last chunk with no
// choices, before [DONE]; every other chunk says "usage": null.
constexpr std::string_view kOpenAIStream =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],"
    "\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\","
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":30,\"total_tokens\":150,"
    "\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n"
    "data: [DONE]\n\n";

// The same stream without include_usage: no chunk carries usage.
constexpr std::string_view kOpenAIStreamWithoutUsage =
    "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\","
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: [DONE]\n\n";

// Anthropic messages: input tokens in message_start, the cumulative output in message_delta.
constexpr std::string_view kAnthropicStart =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-sonnet-4-20250514\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":200,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
    "\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
constexpr std::string_view kAnthropicEnd =
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
    "\"usage\":{\"output_tokens\":45}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

constexpr std::string_view kAnthropicOverloaded =
    "event: error\n"
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

// Prices (nano-USD per token): "gpt-4o" 2,500 in / 10,000 out; "claude-sonnet-4" 3,000 / 15,000.
PlanConfig stream_plan(std::optional<Nanos> max_period = std::nullopt) {
  Plan p = testing::round_plan();
  p.cost_rates["claude-sonnet-4"] = CostRate{3'000'000, 15'000'000};
  p.max_spend_per_period = max_period;
  return testing::config_with(p);
}

// A Paygent that keeps every event and error it reports.
struct Recorded {
  std::vector<UsageEvent> events;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;

  explicit Recorded(PlanConfig plans = stream_plan()) {
    Options o;
    o.plans = std::move(plans);
    o.local_store_path = "";
    o.on_usage = [this](const UsageEvent& e) { events.push_back(e); };
    o.on_error = [this](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    pg = *Paygent::create(std::move(o));
  }
  Nanos spend(const std::string& user) { return pg->report(user)->spend; }
  Nanos reserved(const std::string& user) { return pg->report(user)->reserved; }
};

// Feeds `sse` in small pieces that split lines, fields and JSON (as a network does).
void feed_in_pieces(MeteredStream& stream, std::string_view sse, std::size_t piece = 7) {
  for (std::size_t at = 0; at < sse.size(); at += piece) stream.feed(sse.substr(at, piece));
}

constexpr CallEstimate kEstimate{.prompt_tokens = 100, .max_output_tokens = 500};

}  // namespace

TEST_CASE("guard.stream.openai_include_usage_is_settled_from_the_chunks") {
  Recorded rec;
  Context ctx("u1");
  std::string forwarded;
  rec.pg->metered_stream("gpt-4o", kEstimate, [&](MeteredStream& stream) {
    CHECK(stream.active());
    CHECK(rec.reserved("u1") == 100 * 2'500 + 500 * 10'000);  // held while the stream runs
    for (std::size_t at = 0; at < kOpenAIStream.size(); at += 11) {
      const std::string_view chunk = kOpenAIStream.substr(at, 11);
      stream.feed(chunk);
      forwarded.append(chunk);  // the application forwards each chunk to its own client
    }
  });
  CHECK(forwarded == kOpenAIStream);
  REQUIRE(rec.events.size() == 1);
  const UsageEvent& e = rec.events[0];
  CHECK(e.usage.input_tokens == 120);
  CHECK(e.usage.output_tokens == 30);
  CHECK(e.provider == Provider::kOpenAI);
  CHECK_FALSE(e.estimated);
  CHECK(e.cost == 120 * 2'500 + 30 * 10'000);
  CHECK(rec.spend("u1") == e.cost);
  CHECK(rec.reserved("u1") == 0);
  CHECK(rec.errors.empty());
}

TEST_CASE("guard.stream.anthropic_message_start_and_delta_are_settled") {
  Recorded rec;
  Context ctx("u1");
  MeteredStream stream = rec.pg->metered_stream("claude-sonnet-4", kEstimate);
  REQUIRE(stream.active());
  CHECK(stream.result().status == GateStatus::kOk);
  feed_in_pieces(stream, kAnthropicStart);
  feed_in_pieces(stream, kAnthropicEnd, 5);
  stream.finish();
  CHECK_FALSE(stream.active());
  stream.finish();  // nothing is metered twice
  stream.abandon();
  REQUIRE(rec.events.size() == 1);
  const UsageEvent& e = rec.events[0];
  CHECK(e.usage.input_tokens == 200);
  CHECK(e.usage.output_tokens == 45);  // message_delta's cumulative count replaces message_start's 1
  CHECK(e.provider == Provider::kAnthropic);
  CHECK_FALSE(e.estimated);
  CHECK(e.cost == 200 * 3'000 + 45 * 15'000);
  CHECK(rec.spend("u1") == e.cost);
  CHECK(rec.errors.empty());
}

TEST_CASE("guard.stream.hard_gate_throws_before_anything_is_sent") {
  Recorded rec(stream_plan(Nanos{1'000'000}));  // $0.001: less than the estimate's $0.00525
  Context ctx("u1");
  bool sent = false;
  CHECK_THROWS_AS(rec.pg->metered_stream("gpt-4o", kEstimate, [&](MeteredStream&) { sent = true; }),
                  LimitExceeded);
  CHECK_FALSE(sent);
  CHECK_THROWS_AS((void)rec.pg->metered_stream("gpt-4o", kEstimate), LimitExceeded);
  CHECK(rec.events.empty());
  CHECK(rec.reserved("u1") == 0);
}

TEST_CASE("guard.stream.an_exception_meters_the_usage_read_so_far_and_propagates") {
  Recorded rec;
  Context ctx("u1");
  CHECK_THROWS_AS(rec.pg->metered_stream("claude-sonnet-4", kEstimate,
                                         [&](MeteredStream& stream) {
                                           feed_in_pieces(stream, kAnthropicStart);
                                           throw std::runtime_error("the client went away");
                                         }),
                  std::runtime_error);
  REQUIRE(rec.events.size() == 1);
  const UsageEvent& e = rec.events[0];
  CHECK(e.usage.input_tokens == 200);  // what message_start said
  CHECK(e.usage.output_tokens == 1);
  CHECK(e.estimated);  // cut short: not the provider's final count
  CHECK(e.cost == 200 * 3'000 + 1 * 15'000);
  CHECK(rec.reserved("u1") == 0);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].find("stream abandoned before its end") != std::string::npos);
}

TEST_CASE("guard.stream.abandoned_before_any_usage_meters_the_estimate") {
  Recorded rec;
  Context ctx("u1");
  {
    MeteredStream stream = rec.pg->metered_stream("gpt-4o", kEstimate);
    feed_in_pieces(stream, kOpenAIStream.substr(0, 300));  // usage comes only at the end
  }  // destroyed without finish()
  REQUIRE(rec.events.size() == 1);
  const UsageEvent& e = rec.events[0];
  CHECK(e.usage.input_tokens == 100);
  CHECK(e.usage.output_tokens == 500);
  CHECK(e.estimated);
  CHECK(e.cost == 100 * 2'500 + 500 * 10'000);  // never $0
  CHECK(rec.spend("u1") == e.cost);
  CHECK(rec.reserved("u1") == 0);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].find("stream abandoned before any usage") != std::string::npos);
}

TEST_CASE("guard.stream.a_provider_error_event_releases") {
  Recorded rec;
  Context ctx("u1");
  rec.pg->metered_stream("claude-sonnet-4", kEstimate, [&](MeteredStream& stream) {
    feed_in_pieces(stream, kAnthropicOverloaded);
  });
  CHECK(rec.events.empty());
  CHECK(rec.reserved("u1") == 0);
  CHECK(rec.spend("u1") == 0);
  // An error body answered to a streaming request (plain JSON, no events) releases as well.
  MeteredStream stream = rec.pg->metered_stream("gpt-4o", kEstimate);
  stream.feed(R"({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}})");
  stream.finish();
  CHECK(rec.events.empty());
  CHECK(rec.reserved("u1") == 0);
}

TEST_CASE("guard.stream.a_stream_that_ends_without_usage_meters_the_estimate") {
  Recorded rec;
  Context ctx("u1");
  MeteredStream stream = rec.pg->metered_stream("gpt-4o", kEstimate);
  feed_in_pieces(stream, kOpenAIStreamWithoutUsage);
  stream.finish();
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0].estimated);
  CHECK(rec.events[0].cost == 100 * 2'500 + 500 * 10'000);
  CHECK(rec.pg->stats().unreadable_responses == 1);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].find("stream ended without readable usage") != std::string::npos);
}

TEST_CASE("guard.stream.outside_a_context_passes_through_unmetered") {
  Recorded rec;
  int result = rec.pg->metered_stream("gpt-4o", kEstimate, [&](MeteredStream& stream) {
    CHECK(stream.result().status == GateStatus::kUnmetered);
    CHECK_FALSE(stream.active());
    feed_in_pieces(stream, kOpenAIStream);
    return 42;
  });
  CHECK(result == 42);
  CHECK(rec.events.empty());
}

TEST_CASE("guard.stream.moved_streams_meter_once") {
  Recorded rec;
  Context ctx("u1");
  MeteredStream a = rec.pg->metered_stream("gpt-4o", kEstimate);
  feed_in_pieces(a, kOpenAIStream.substr(0, 100));
  MeteredStream b = std::move(a);
  CHECK_FALSE(a.active());
  feed_in_pieces(b, kOpenAIStream.substr(100));
  a.finish();  // moved from: nothing
  CHECK(rec.events.empty());
  b = rec.pg->metered_stream("gpt-4o", kEstimate);  // abandons what b held: its estimate
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0].estimated);
  b.finish();  // the new one, with no usage fed: the estimate again, reported
  CHECK(rec.events.size() == 2);
}

TEST_CASE("guard.lifetime.stream_outlives_its_paygent") {
  auto rec = std::make_unique<Recorded>();
  Context ctx("u1");
  MeteredStream finished_late = rec->pg->metered_stream("gpt-4o", kEstimate);
  MeteredStream destroyed_late = rec->pg->metered_stream("claude-sonnet-4", kEstimate);
  feed_in_pieces(destroyed_late, kAnthropicStart);
  rec->pg.reset();
  REQUIRE(rec->errors.size() == 1);
  CHECK(rec->errors[0].find("2 reservations were still open") != std::string::npos);
  feed_in_pieces(finished_late, kOpenAIStream);
  CHECK(finished_late.result().status == GateStatus::kOk);
  finished_late.finish();  // no-op: nothing left to meter into
  CHECK_FALSE(finished_late.active());
  CHECK(rec->events.empty());
  rec.reset();  // the callbacks' owner is gone too
  // destroyed_late ends here, last: it frees the Paygent's storage, touching no callback.
}

}  // namespace paygent
