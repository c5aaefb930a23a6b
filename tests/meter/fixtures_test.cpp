// The project's own provider fixtures (tests/fixtures/providers) cover every case the readers must
// handle, so that a clone without ../shared still tests each of them.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <string_view>

#include "paygent/usage.h"
#include "tests/meter/fixtures.h"

namespace paygent {
namespace {

using testing::FixtureCase;

// The first fixture of the project's set for which `pred` holds, or nullptr.
const FixtureCase* any_fixture(const std::function<bool(const FixtureCase&)>& pred) {
  for (const FixtureCase& c : testing::project_fixtures().cases) {
    if (pred(c)) return &c;
  }
  return nullptr;
}

bool contains(const FixtureCase& c, std::string_view text) { return c.body.find(text) != std::string::npos; }

TEST_CASE("meter.project_fixtures_cover_every_format_and_count") {
  const ApiFormat formats[] = {ApiFormat::kOpenAIChat, ApiFormat::kOpenAIResponses, ApiFormat::kAnthropicMessages,
                               ApiFormat::kGeminiGenerate};
  for (ApiFormat f : formats) {
    for (bool sse : {false, true}) {
      INFO("format ", static_cast<int>(f), sse ? " sse" : " json");
      auto with_usage = [&](const FixtureCase& c) { return c.format == f && c.sse == sse && c.usage_present; };
      CHECK(any_fixture(with_usage) != nullptr);
      // Cached input for every format in JSON; in streams, where the provider reports it.
      if (!sse || f != ApiFormat::kGeminiGenerate) {
        CHECK(any_fixture([&](const FixtureCase& c) { return with_usage(c) && c.usage.cached_input_tokens > 0; }));
      }
      // Reasoning where the provider reports it apart (Anthropic folds thinking into output).
      if (f != ApiFormat::kAnthropicMessages && (!sse || f != ApiFormat::kOpenAIChat)) {
        CHECK(any_fixture([&](const FixtureCase& c) { return with_usage(c) && c.usage.reasoning_tokens > 0; }));
      }
    }
  }
  CHECK(any_fixture([](const FixtureCase& c) { return c.usage.cache_creation_input_tokens > 0 && !c.sse; }));
  CHECK(any_fixture([](const FixtureCase& c) { return c.usage.cache_creation_input_tokens > 0 && c.sse; }));
}

TEST_CASE("meter.project_fixtures_cover_every_error_body") {
  for (std::string_view error : {"\"rate_limit_exceeded\"", "\"rate_limit_error\"", "\"overloaded_error\"",
                                 "\"RESOURCE_EXHAUSTED\""}) {
    INFO("error ", error);
    CHECK(any_fixture([&](const FixtureCase& c) { return testing::is_error_body(c) && contains(c, error); }));
  }
}

TEST_CASE("meter.project_fixtures_cover_the_stream_quirks") {
  auto stream_with = [](std::string_view text) {
    return any_fixture([&](const FixtureCase& c) { return c.sse && contains(c, text); }) != nullptr;
  };
  CHECK(stream_with("\"usage\":null"));     // OpenAI include_usage: null before the last chunk
  CHECK(stream_with("\"choices\":[]"));     // ... and the usage chunk with no choices
  CHECK(stream_with("data: [DONE]"));
  CHECK(stream_with("event: ping"));        // Anthropic keep-alive events
  CHECK(stream_with("event: message_delta"));
  CHECK(stream_with("\n: keep-alive\n"));   // SSE comment lines
  CHECK(stream_with("\r\n\r\n"));           // CRLF line endings
  CHECK(stream_with("event: error"));       // an error event mid-stream
  // Anthropic's cumulative message_delta: output there is not added to message_start's.
  CHECK(any_fixture([](const FixtureCase& c) {
    return c.sse && c.format == ApiFormat::kAnthropicMessages && contains(c, "\"output_tokens\":1,") &&
           c.usage.output_tokens > 1;
  }));
  // Gemini's usageMetadata on every chunk, cumulative.
  CHECK(any_fixture([](const FixtureCase& c) {
    return c.sse && c.format == ApiFormat::kGeminiGenerate &&
           c.body.find("usageMetadata") != c.body.rfind("usageMetadata");
  }));
  // A last event with no closing blank line, and a stream cut before its usage.
  CHECK(any_fixture([](const FixtureCase& c) { return c.sse && c.usage_present && !c.body.ends_with("\n\n"); }));
  CHECK(any_fixture([](const FixtureCase& c) { return c.sse && c.truncated && !c.usage_present; }));
}

}  // namespace
}  // namespace paygent
