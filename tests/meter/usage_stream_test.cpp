// StreamUsageReader on server-sent-event streams (include/paygent/usage.h).
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "paygent/usage.h"
#include "tests/meter/fixtures.h"

namespace paygent {
namespace {

using testing::FixtureCase;

std::string message_of(const absl::Status& s) { return std::string(s.message()); }

// True when `got` is what MANIFEST.json says of `c` (a short description of the first
// difference in `why` otherwise): its usage; for an error body NotFound quoting the provider
// error; for a stream cut before its usage, no usage and no provider error. Quiet, so that
// thousands of splits do not flood the log.
bool matches(const FixtureCase& c, const absl::StatusOr<ExtractedUsage>& got, std::string& why) {
  if (c.truncated) {
    why = got.ok() ? "read usage from a stream cut before its usage" : message_of(got.status());
    return (absl::IsNotFound(got.status()) || absl::IsInvalidArgument(got.status())) &&
           message_of(got.status()).find("provider error") == std::string::npos;
  }
  if (!c.usage_present) {
    why = got.ok() ? "read usage from an error body" : message_of(got.status());
    return absl::IsNotFound(got.status()) && message_of(got.status()).find("no usage: provider error ") == 0;
  }
  if (!got.ok()) {
    why = message_of(got.status());
    return false;
  }
  if (!(got->usage == c.usage)) {
    why = "usage differs: input " + std::to_string(got->usage.input_tokens) + " output " +
          std::to_string(got->usage.output_tokens) + " cached " + std::to_string(got->usage.cached_input_tokens);
    return false;
  }
  if (got->reported_total_tokens != c.reported_total) {
    why = "reported total differs";
    return false;
  }
  if (got->model != c.model) {
    why = "model " + got->model;
    return false;
  }
  if (got->format != c.format || got->provider != testing::provider_of_format(c.format)) {
    why = "format differs";
    return false;
  }
  return true;
}

absl::StatusOr<ExtractedUsage> read_in_chunks(std::string_view stream, std::size_t chunk,
                                              ApiFormat format = ApiFormat::kAuto) {
  StreamUsageReader reader(format);
  for (std::size_t i = 0; i < stream.size(); i += chunk) reader.feed(stream.substr(i, chunk));
  return reader.finish();
}

absl::StatusOr<ExtractedUsage> read_whole(std::string_view stream, ApiFormat format = ApiFormat::kAuto) {
  StreamUsageReader reader(format);
  reader.feed(stream);
  return reader.finish();
}

FIXTURE_TEST_CASE("meter.stream_fixtures_match_manifest") {
  int checked = 0;
  for (const FixtureCase& c : fixtures.cases) {
    if (!c.sse) continue;
    INFO("fixture ", c.file);
    std::string why;
    CHECK_MESSAGE(matches(c, read_whole(c.body), why), why);
    CHECK_MESSAGE(matches(c, read_whole(c.body, c.format), why), why);
    ++checked;
  }
  CHECK(checked >= 8);
}

FIXTURE_TEST_CASE("meter.stream_fixtures_in_every_two_way_split") {
  // Every fixture: the SSE streams, and the JSON bodies (which a stream reader reads whole).
  for (const FixtureCase& c : fixtures.cases) {
    const std::string_view s = c.body;
    int wrong = 0;
    for (std::size_t at = 0; at <= s.size(); ++at) {
      StreamUsageReader reader;
      reader.feed(s.substr(0, at));
      reader.feed(s.substr(at));
      std::string why;
      if (!matches(c, reader.finish(), why)) {
        if (++wrong <= 3) FAIL_CHECK(c.file, " split at ", at, ": ", why);
      }
    }
    CHECK_MESSAGE(wrong == 0, c.file);
  }
}

FIXTURE_TEST_CASE("meter.stream_fixtures_in_one_byte_chunks") {
  for (const FixtureCase& c : fixtures.cases) {
    INFO("fixture ", c.file);
    std::string why;
    CHECK_MESSAGE(matches(c, read_in_chunks(c.body, 1), why), why);
    CHECK_MESSAGE(matches(c, read_in_chunks(c.body, 7), why), why);
  }
}

FIXTURE_TEST_CASE("meter.stream_fixtures_with_crlf_and_cr_line_endings") {
  // The same events with every LF turned into CRLF, and into a lone CR (both allowed by SSE).
  for (const FixtureCase& c : fixtures.cases) {
    if (!c.sse) continue;
    std::string crlf;
    std::string cr;
    for (std::size_t i = 0; i < c.body.size(); ++i) {
      const char ch = c.body[i];
      if (ch == '\n' && (i == 0 || c.body[i - 1] != '\r')) {
        crlf += "\r\n";
        cr += '\r';
      } else if (ch == '\r' && i + 1 < c.body.size() && c.body[i + 1] == '\n') {
        crlf += "\r\n";
        cr += '\r';
        ++i;
      } else {
        crlf += ch;
        cr += ch;
      }
    }
    INFO("fixture ", c.file);
    std::string why;
    CHECK_MESSAGE(matches(c, read_in_chunks(crlf, 1), why), why);
    CHECK_MESSAGE(matches(c, read_in_chunks(cr, 1), why), why);
    CHECK_MESSAGE(matches(c, read_whole(cr), why), why);
  }
}

FIXTURE_TEST_CASE("meter.stream_json_error_bodies_are_not_found") {
  // A provider may answer a streaming request with a plain JSON error body (HTTP 429/529).
  for (const FixtureCase& c : fixtures.cases) {
    if (!testing::is_error_body(c)) continue;
    INFO("fixture ", c.file);
    auto whole = read_whole(c.body);
    REQUIRE(absl::IsNotFound(whole.status()));
    CHECK(message_of(whole.status()).find("no usage: provider error ") == 0);
    CHECK(message_of(read_in_chunks(c.body, 1).status()) == message_of(whole.status()));
  }
  // And a complete JSON body with usage is read as extract_usage would.
  for (const FixtureCase& c : fixtures.cases) {
    if (c.sse || !c.usage_present) continue;
    INFO("fixture ", c.file);
    std::string why;
    CHECK_MESSAGE(matches(c, read_in_chunks(c.body, 3), why), why);
  }
}

TEST_CASE("meter.stream_anthropic_message_delta_overrides_field_by_field") {
  const std::string stream =
      "event: message_start\n"
      "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5-20251001\",\"type\":\"message\","
      "\"usage\":{\"input_tokens\":100,\"cache_read_input_tokens\":50,\"cache_creation_input_tokens\":0,"
      "\"output_tokens\":1}}}\n\n"
      "event: message_delta\n"
      "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}\n\n"
      "event: message_delta\n"
      "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":120,\"cache_creation_input_tokens\":null,"
      "\"output_tokens\":90}}\n\n";
  auto got = read_whole(stream);
  REQUIRE(got.ok());
  CHECK(got->usage.input_tokens == 120 + 50);  // delta's input wins; the cache read stays
  CHECK(got->usage.cached_input_tokens == 50);
  CHECK(got->usage.cache_creation_input_tokens == 0);
  CHECK(got->usage.output_tokens == 90);  // cumulative: the last delta, never 1 + 40 + 90
  CHECK(got->model == "claude-haiku-4-5-20251001");
  CHECK(got->provider == Provider::kAnthropic);
  CHECK_FALSE(got->reported_total_tokens.has_value());
}

FIXTURE_TEST_CASE("meter.stream_error_event_keeps_the_partial_usage") {
  const std::string start =
      "event: message_start\n"
      "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"type\":\"message\","
      "\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n";
  // The error body on one data line, as an error event carries it.
  const FixtureCase* overloaded = fixtures.find("anthropic-error-overloaded.json");
  REQUIRE(overloaded != nullptr);
  std::string one_line;
  for (char ch : overloaded->body) {
    if (ch != '\n' && ch != '\r') one_line += ch;
  }
  const std::string error = "event: error\ndata: " + one_line + "\n\n";

  auto partial = read_whole(start + error);
  REQUIRE(partial.ok());
  CHECK(partial->usage.input_tokens == 11);
  CHECK(partial->usage.output_tokens == 1);

  auto only_error = read_whole(error);
  REQUIRE(absl::IsNotFound(only_error.status()));
  CHECK(message_of(only_error.status()).find("no usage: provider error overloaded_error: ") == 0);

  // OpenAI responses' stream error event carries its code at the top level.
  auto responses_error = read_whole(
      "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"param\":null}\n\n");
  CHECK(message_of(responses_error.status()) == "no usage: provider error server_error: boom");

  auto bare_error_event = read_whole("event: error\ndata: {}\n\n");
  CHECK(absl::IsNotFound(bare_error_event.status()));
}

TEST_CASE("meter.stream_malformed_events") {
  const std::string good =
      "data: {\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],"
      "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}\n\n";
  const std::string bad_json = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[\n\n";
  const std::string bad_field =
      "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":-5}}\n\n";

  auto after = read_whole(bad_json + good);
  REQUIRE(after.ok());
  CHECK(after->usage.input_tokens == 5);

  auto before = read_whole(good + bad_field);
  REQUIRE(before.ok());
  CHECK(before->usage.input_tokens == 5);

  auto only_bad_field = read_whole(bad_field);
  REQUIRE(absl::IsInvalidArgument(only_bad_field.status()));
  CHECK(message_of(only_bad_field.status()) == "usage.prompt_tokens: must be a non-negative integer (stream event 1)");

  auto only_bad_json = read_whole("event: message_delta\n" + bad_json);
  REQUIRE(absl::IsInvalidArgument(only_bad_json.status()));
  CHECK(message_of(only_bad_json.status()).find("(stream event 1 \"message_delta\")") != std::string::npos);

  auto responses_field = read_whole(
      "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5\","
      "\"usage\":{\"input_tokens\":\"3\"}}}\n\n");
  CHECK(message_of(responses_field.status()) ==
        "response.usage.input_tokens: must be a non-negative integer (stream event 1 \"response.completed\")");

  auto anthropic_field =
      read_whole("data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1.5}}}\n\n");
  CHECK(message_of(anthropic_field.status()) ==
        "message.usage.input_tokens: must be a non-negative integer (stream event 1)");
}

TEST_CASE("meter.stream_lines_fields_and_comments") {
  // Comments, id/retry and unknown lines are ignored; "data:" without a space; data split over
  // two lines (joined by a newline, still one JSON object); a BOM before the first line.
  const std::string stream =
      "\xEF\xBB\xBF: keep-alive comment\n"
      "retry: 3000\n"
      "id: 7\n"
      "...\n"
      "\n"
      "data:{\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\n"
      "data: \"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n"
      "\n"
      "data: [DONE]\n"
      "\n";
  for (std::size_t chunk : {std::size_t{1}, std::size_t{2}, std::size_t{5}, stream.size()}) {
    INFO("chunk ", chunk);
    auto got = read_in_chunks(stream, chunk);
    REQUIRE(got.ok());
    CHECK(got->usage.input_tokens == 2);
    CHECK(got->usage.output_tokens == 3);
    CHECK(got->model == "gpt-4o-mini");
  }
}

TEST_CASE("meter.stream_pending_event_flushed_at_finish") {
  const std::string last = "data: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":5}}";
  for (const std::string& stream : {last, last + "\n", last + "\r\n", last + "\r"}) {
    auto got = read_whole(stream);
    REQUIRE(got.ok());
    CHECK(got->usage.input_tokens == 4);
    CHECK(got->format == ApiFormat::kGeminiGenerate);
  }
}

TEST_CASE("meter.stream_without_usage_is_not_found") {
  CHECK(message_of(read_whole("").status()) == "no usage: the stream has no server-sent events");
  CHECK(message_of(read_whole(": ping\n\n").status()) == "no usage: the stream has no server-sent events");
  CHECK(message_of(read_whole("data: [DONE]\n\n").status()) == "no usage: no event in the stream carried usage");
  auto no_usage = read_whole(
      "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"
      "data: [DONE]\n\n");
  CHECK(absl::IsNotFound(no_usage.status()));
}

FIXTURE_TEST_CASE("meter.stream_explicit_format_rejects_other_formats") {
  const FixtureCase* anthropic = fixtures.find("anthropic-messages-stream-cached.sse");
  REQUIRE(anthropic != nullptr);
  auto got = read_whole(anthropic->body, ApiFormat::kOpenAIResponses);
  REQUIRE(absl::IsInvalidArgument(got.status()));
  CHECK(message_of(got.status()).find("event data: is an Anthropic message, not an OpenAI response") == 0);
}

TEST_CASE("meter.stream_reader_is_reusable_and_movable") {
  const std::string stream =
      "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,"
      "\"completion_tokens\":2}}\n\n";
  StreamUsageReader reader;
  reader.feed(stream);
  auto first = reader.finish();
  REQUIRE(first.ok());
  // finish() starts the reader afresh: nothing of the first stream is left.
  CHECK(absl::IsNotFound(reader.finish().status()));
  reader.feed(stream.substr(0, 20));
  StreamUsageReader moved(std::move(reader));
  moved.feed(stream.substr(20));
  auto second = moved.finish();
  REQUIRE(second.ok());
  CHECK(second->usage == first->usage);
  // A moved-from reader reads nothing and does not crash.
  reader.feed(stream);  // NOLINT(bugprone-use-after-move): the documented moved-from state
  CHECK(absl::IsNotFound(reader.finish().status()));
}

TEST_CASE("meter.stream_memory_is_bounded") {
  const std::string good =
      "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,"
      "\"completion_tokens\":2}}\n\n";
  const std::string mib(std::size_t{1} << 20, 'a');
  {
    // One 65 MiB data line without a newline, then a normal event: the long one is dropped.
    StreamUsageReader reader;
    reader.feed("data: \"");
    for (int i = 0; i < 65; ++i) reader.feed(mib);
    reader.feed("\"\n\n" + good);
    auto got = reader.finish();
    REQUIRE(got.ok());
    CHECK(got->usage.output_tokens == 2);
  }
  {
    // The same event alone: reported like a malformed event.
    StreamUsageReader reader;
    reader.feed("data: \"");
    for (int i = 0; i < 65; ++i) reader.feed(mib);
    auto got = reader.finish();
    REQUIRE(absl::IsInvalidArgument(got.status()));
    CHECK(message_of(got.status()).find("event data: longer than 67108864 bytes; not read") == 0);
  }
  {
    // Many short data lines adding up past the bound.
    StreamUsageReader reader;
    const std::string line = "data: " + mib + "\n";
    for (int i = 0; i < 65; ++i) reader.feed(line);
    reader.feed("\n" + good);
    auto got = reader.finish();
    REQUIRE(got.ok());
    CHECK(got->usage.input_tokens == 1);
  }
  {
    // A plain JSON body past the bound.
    StreamUsageReader reader;
    reader.feed("{\"a\":\"");
    for (int i = 0; i < 65; ++i) reader.feed(mib);
    CHECK(absl::IsInvalidArgument(reader.finish().status()));
  }
}

FIXTURE_TEST_CASE("meter.stream_corrupted_streams_never_crash") {
  const char replacements[] = {'{', '}', '"', '\\', '\n', '\r', ':', 'x', '\0'};
  for (const FixtureCase& c : fixtures.cases) {
    if (!c.sse) continue;
    for (std::size_t i = 0; i < c.body.size(); i += 3) {
      for (char r : replacements) {
        std::string s = c.body;
        s[i] = r;
        auto got = read_in_chunks(s, 64);
        if (!got.ok()) {
          CHECK((absl::IsInvalidArgument(got.status()) || absl::IsNotFound(got.status())));
        }
      }
    }
  }
}

}  // namespace
}  // namespace paygent
