// extract_usage on complete response bodies (include/paygent/usage.h).
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "paygent/usage.h"
#include "tests/meter/fixtures.h"

namespace paygent {
namespace {

using testing::FixtureCase;

std::string message_of(const absl::Status& s) { return std::string(s.message()); }

// Checks one result against what MANIFEST.json says of `c`.
void check_matches(const FixtureCase& c, const absl::StatusOr<ExtractedUsage>& got) {
  INFO("fixture ", c.file);
  REQUIRE_MESSAGE(got.ok(), message_of(got.status()));
  CHECK(got->usage == c.usage);
  CHECK(got->usage.input_tokens == c.usage.input_tokens);
  CHECK(got->usage.output_tokens == c.usage.output_tokens);
  CHECK(got->usage.cached_input_tokens == c.usage.cached_input_tokens);
  CHECK(got->usage.cache_creation_input_tokens == c.usage.cache_creation_input_tokens);
  CHECK(got->usage.reasoning_tokens == c.usage.reasoning_tokens);
  CHECK(got->reported_total_tokens == c.reported_total);
  CHECK(got->model == c.model);
  CHECK(got->format == c.format);
  CHECK(got->provider == testing::provider_of_format(c.format));
}

// The error's name as the body itself gives it: OpenAI's error.code, else error.type
// (Anthropic), else error.status (Gemini, whose error.code is the HTTP status number).
std::string provider_error_name(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::dom::element error;
  REQUIRE(parser.parse(body)["error"].get(error) == simdjson::SUCCESS);
  std::string_view name;
  if (error["code"].get_string().get(name) == simdjson::SUCCESS) return std::string(name);
  if (error["type"].get_string().get(name) == simdjson::SUCCESS) return std::string(name);
  REQUIRE(error["status"].get_string().get(name) == simdjson::SUCCESS);
  return std::string(name);
}

FIXTURE_TEST_CASE("meter.manifest_describes_every_fixture") {
  REQUIRE(fixtures.cases.size() >= 19);
  std::set<std::string> described;
  for (const FixtureCase& c : fixtures.cases) {
    described.insert(c.file);
    CHECK_MESSAGE(!c.body.empty(), c.file);
  }
  for (const auto& entry : std::filesystem::directory_iterator(fixtures.dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "MANIFEST.json" || name == "README.md") continue;
    CHECK_MESSAGE(described.count(name) == 1, name, " is not in MANIFEST.json");
  }
}

FIXTURE_TEST_CASE("meter.manifest_derived_numbers_agree_with_normalisation") {
  for (const FixtureCase& c : fixtures.cases) {
    INFO("fixture ", c.file);
    if (c.derived_total_input) CHECK(*c.derived_total_input == c.usage.input_tokens);
    if (c.derived_output_with_thoughts) CHECK(*c.derived_output_with_thoughts == c.usage.output_tokens);
    if (c.derived_total) CHECK(*c.derived_total == c.usage.total_tokens());
    if (c.derived_uncached_input)
      CHECK(*c.derived_uncached_input == c.usage.input_tokens - c.usage.cached_input_tokens);
  }
}

FIXTURE_TEST_CASE("meter.extract_json_fixtures_match_manifest") {
  int checked = 0;
  for (const FixtureCase& c : fixtures.cases) {
    if (c.sse || !c.usage_present) continue;
    check_matches(c, extract_usage(c.body));
    ++checked;
  }
  CHECK(checked >= 8);
}

FIXTURE_TEST_CASE("meter.extract_json_fixtures_with_their_format_given") {
  for (const FixtureCase& c : fixtures.cases) {
    if (c.sse || !c.usage_present) continue;
    check_matches(c, extract_usage(c.body, c.format));
  }
}

FIXTURE_TEST_CASE("meter.extract_with_another_format_never_reads_wrong_numbers") {
  const ApiFormat all[] = {ApiFormat::kOpenAIChat, ApiFormat::kOpenAIResponses, ApiFormat::kAnthropicMessages,
                           ApiFormat::kGeminiGenerate};
  for (const FixtureCase& c : fixtures.cases) {
    if (c.sse || !c.usage_present) continue;
    for (ApiFormat f : all) {
      if (f == c.format) continue;
      INFO("fixture ", c.file, " read as format ", static_cast<int>(f));
      auto got = extract_usage(c.body, f);
      // Either the usage object lacks the format's counts (InvalidArgument) or the format reads
      // another key (NotFound); never numbers from the wrong fields.
      CHECK(!got.ok());
    }
  }
}

FIXTURE_TEST_CASE("meter.error_bodies_are_not_found_and_quote_the_provider_error") {
  int checked = 0;
  for (const FixtureCase& c : fixtures.cases) {
    if (!testing::is_error_body(c)) continue;
    INFO("fixture ", c.file);
    auto got = extract_usage(c.body);
    REQUIRE(absl::IsNotFound(got.status()));
    CHECK(message_of(got.status()).find("no usage: provider error " + provider_error_name(c.body)) == 0);
    ++checked;
  }
  CHECK(checked >= 3);
}

FIXTURE_TEST_CASE("meter.error_body_message_is_quoted_and_bounded") {
  // Both sets' Anthropic 429 carries a message longer than the 200 bytes that are quoted.
  const FixtureCase* c = fixtures.find("anthropic-error-429.json");
  REQUIRE(c != nullptr);
  simdjson::dom::parser parser;
  std::string_view provider_message;
  REQUIRE(parser.parse(c->body)["error"]["message"].get_string().get(provider_message) == simdjson::SUCCESS);
  REQUIRE(provider_message.size() > 200);
  auto got = extract_usage(c->body);
  REQUIRE(absl::IsNotFound(got.status()));
  const std::string m = message_of(got.status());
  CHECK(m.find("no usage: provider error rate_limit_error: " + std::string(provider_message.substr(0, 40))) == 0);
  CHECK(m.size() < 260);  // the provider's message is cut at 200 bytes
}

TEST_CASE("meter.error_body_messages_name_the_error") {
  auto rate = extract_usage(
      R"({"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}})");
  CHECK(message_of(rate.status()) == "no usage: provider error rate_limit_exceeded: Rate limit reached");

  auto gemini = extract_usage(R"({"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}})");
  CHECK(message_of(gemini.status()) == "no usage: provider error RESOURCE_EXHAUSTED: Resource exhausted");

  auto bare = extract_usage(R"({"error":"upstream timeout"})");
  CHECK(message_of(bare.status()) == "no usage: provider error upstream timeout");

  auto numeric = extract_usage(R"({"error":{"code":503}})");
  CHECK(message_of(numeric.status()) == "no usage: provider error 503");
}

TEST_CASE("meter.valid_json_without_usage_is_not_found") {
  CHECK(absl::IsNotFound(extract_usage("{}").status()));
  CHECK(message_of(extract_usage("{}").status()) == "no usage: the response has no usage");
  auto null_usage = extract_usage(R"({"object":"chat.completion.chunk","choices":[],"usage":null})");
  CHECK(absl::IsNotFound(null_usage.status()));
  CHECK(message_of(null_usage.status()) == "no usage: the response has \"usage\": null");
  CHECK(absl::IsNotFound(extract_usage(R"({"model":"gpt-4o","choices":[{"usage":{"prompt_tokens":1}}]})").status()));
  // Gemini's key is not read when another format is asked for, and the other way round.
  CHECK(
      absl::IsNotFound(extract_usage(R"({"usageMetadata":{"promptTokenCount":1}})", ApiFormat::kOpenAIChat).status()));
  CHECK(absl::IsNotFound(extract_usage(R"({"usage":{"prompt_tokens":1}})", ApiFormat::kGeminiGenerate).status()));
}

FIXTURE_TEST_CASE("meter.truncated_bodies_are_invalid") {
  for (const FixtureCase& c : fixtures.cases) {
    if (c.sse) continue;
    const std::size_t last_brace = c.body.rfind('}');
    REQUIRE(last_brace != std::string::npos);
    for (std::size_t n = 0; n <= last_brace; ++n) {
      auto got = extract_usage(std::string_view(c.body).substr(0, n));
      if (got.ok() || !absl::IsInvalidArgument(got.status())) {
        FAIL_CHECK(c.file, " cut at ", n, " bytes: ", got.ok() ? "read usage" : message_of(got.status()));
      }
    }
  }
}

TEST_CASE("meter.malformed_bodies_are_invalid") {
  const char* bodies[] = {
      "",
      "   \n",
      "null",
      "42",
      "\"usage\"",
      R"([{"usage":{"prompt_tokens":1}}])",
      "<html><body>502 Bad Gateway</body></html>",
      R"({"usage":{"prompt_tokens":1,"completion_tokens":2}} trailing)",
      R"({"usage":{"prompt_tokens":1,"completion_tokens":2}}{"usage":{}})",
      R"({"usage":{"prompt_tokens":1,"completion_tokens":2}})"
      "}",
      R"({"usage":{"prompt_tokens":1 "completion_tokens":2}})",
      R"({"usage":{"prompt_tokens":1,"completion_tokens":}})",
      R"({"usage":{"prompt_tokens":1,"completion_tokens":2})",
      R"({"model":"gpt-4o,"usage":{"prompt_tokens":1}})",
      "{\"model\":\"\xff\xfe\",\"usage\":{\"prompt_tokens\":1}}",  // not UTF-8
      R"({"usage":{"prompt_tokens":1,"completion_tokens":2},})",
      R"({"usage" {"prompt_tokens":1}})",
      R"({usage:{"prompt_tokens":1}})",
  };
  for (const char* body : bodies) {
    INFO("body: ", body);
    auto got = extract_usage(body);
    CHECK(absl::IsInvalidArgument(got.status()));
  }
}

struct FieldCase {
  const char* body;
  ApiFormat format;
  const char* message;
};

TEST_CASE("meter.wrong_typed_or_negative_usage_fields_name_the_field") {
  const FieldCase fields[] = {
      {R"({"object":"chat.completion","usage":{"prompt_tokens":"12","completion_tokens":3}})", ApiFormat::kAuto,
       "usage.prompt_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":-1,"completion_tokens":3}})", ApiFormat::kOpenAIChat,
       "usage.prompt_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":1.5,"completion_tokens":3}})", ApiFormat::kAuto,
       "usage.prompt_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":12,"completion_tokens":1e3}})", ApiFormat::kAuto,
       "usage.completion_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":12,"completion_tokens":true}})", ApiFormat::kAuto,
       "usage.completion_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":9223372036854775808,"completion_tokens":1}})", ApiFormat::kAuto,
       "usage.prompt_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":[1]}}})", ApiFormat::kAuto,
       "usage.prompt_tokens_details.cached_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":1,"completion_tokens_details":{"reasoning_tokens":-2}}})", ApiFormat::kAuto,
       "usage.completion_tokens_details.reasoning_tokens: must be a non-negative integer"},
      {R"({"usage":{"prompt_tokens":1,"prompt_tokens_details":7}})", ApiFormat::kAuto,
       "usage.prompt_tokens_details: must be an object"},
      {R"({"object":"response","usage":{"input_tokens":5,"output_tokens":{}}})", ApiFormat::kAuto,
       "usage.output_tokens: must be a non-negative integer"},
      {R"({"object":"response","usage":{"input_tokens":5,"input_tokens_details":{"cache_write_tokens":"0"}}})",
       ApiFormat::kAuto, "usage.input_tokens_details.cache_write_tokens: must be a non-negative integer"},
      {R"({"type":"message","usage":{"input_tokens":5,"cache_read_input_tokens":-5}})", ApiFormat::kAuto,
       "usage.cache_read_input_tokens: must be a non-negative integer"},
      {R"({"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":"7"}})", ApiFormat::kAuto,
       "usageMetadata.candidatesTokenCount: must be a non-negative integer"},
      {R"({"usageMetadata":{"promptTokenCount":5,"thoughtsTokenCount":-1}})", ApiFormat::kGeminiGenerate,
       "usageMetadata.thoughtsTokenCount: must be a non-negative integer"},
      {R"({"usage":"lots"})", ApiFormat::kAuto, "usage: must be an object"},
      {R"({"usage":[1,2]})", ApiFormat::kOpenAIChat, "usage: must be an object"},
      {R"({"usageMetadata":5})", ApiFormat::kAuto, "usageMetadata: must be an object"},
      {R"({"usage":{}})", ApiFormat::kAuto,
       "usage: no token count this reader knows (prompt_tokens, input_tokens, promptTokenCount)"},
      {R"({"usage":{"total_tokens":5}})", ApiFormat::kOpenAIChat,
       "usage: has neither prompt_tokens nor completion_tokens"},
      {R"({"usage":{"total_tokens":5}})", ApiFormat::kOpenAIResponses,
       "usage: has neither input_tokens nor output_tokens"},
      {R"({"usage":{"total_tokens":5}})", ApiFormat::kAnthropicMessages,
       "usage: has neither input_tokens nor output_tokens"},
      {R"({"usageMetadata":{"cachedContentTokenCount":5}})", ApiFormat::kAuto,
       "usageMetadata: has neither promptTokenCount nor candidatesTokenCount"},
      // An explicit format the body plainly contradicts.
      {R"({"usage":{"input_tokens":5,"output_tokens":6,"cache_read_input_tokens":7}})", ApiFormat::kOpenAIResponses,
       "body: is an Anthropic message, not an OpenAI response"},
      {R"({"object":"chat.completion","usage":{"prompt_tokens":5}})", ApiFormat::kAnthropicMessages,
       "body: is an OpenAI chat completion, not an Anthropic message"},
      {R"({"candidates":[],"usageMetadata":{"promptTokenCount":5}})", ApiFormat::kOpenAIChat,
       "body: is a Gemini response, not an OpenAI chat completion"},
      {R"({"type":"message","usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":1}})",
       ApiFormat::kAuto, "usage: token counts overflow int64"},
      {R"({"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}})", ApiFormat::kAuto,
       "usage: token counts overflow int64"},
  };
  for (const FieldCase& f : fields) {
    INFO("body: ", f.body);
    auto got = extract_usage(f.body, f.format);
    REQUIRE(absl::IsInvalidArgument(got.status()));
    CHECK(message_of(got.status()) == f.message);
  }
}

TEST_CASE("meter.null_and_absent_counts_are_zero") {
  auto got = extract_usage(
      R"({"object":"chat.completion","model":"gpt-4o","usage":{"prompt_tokens":10,"completion_tokens":null,)"
      R"("prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}})");
  REQUIRE(got.ok());
  CHECK(got->usage.input_tokens == 10);
  CHECK(got->usage.output_tokens == 0);
  CHECK(got->usage.reasoning_tokens == 0);
  CHECK_FALSE(got->reported_total_tokens.has_value());
}

TEST_CASE("meter.auto_detects_each_format") {
  struct Detect {
    const char* body;
    ApiFormat format;
  };
  const Detect detects[] = {
      {R"({"object":"chat.completion","usage":{"prompt_tokens":1,"completion_tokens":2}})", ApiFormat::kOpenAIChat},
      {R"({"usage":{"prompt_tokens":1,"completion_tokens":2}})", ApiFormat::kOpenAIChat},
      {R"({"object":"response","usage":{"input_tokens":1,"output_tokens":2}})", ApiFormat::kOpenAIResponses},
      {R"({"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}})", ApiFormat::kOpenAIResponses},
      {R"({"type":"message","usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}})",
       ApiFormat::kAnthropicMessages},
      {R"({"usage":{"input_tokens":1,"output_tokens":2}})", ApiFormat::kAnthropicMessages},
      {R"({"usage":{"input_tokens":1,"cache_read_input_tokens":0,"output_tokens":2}})", ApiFormat::kAnthropicMessages},
      {R"({"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2}})", ApiFormat::kGeminiGenerate},
      // The usage may come before the keys that name the format.
      {R"({"usage":{"input_tokens":1,"output_tokens":2},"object":"response"})", ApiFormat::kOpenAIResponses},
  };
  for (const Detect& d : detects) {
    INFO("body: ", d.body);
    auto got = extract_usage(d.body);
    REQUIRE(got.ok());
    CHECK(got->format == d.format);
    CHECK(got->provider == testing::provider_of_format(d.format));
  }
}

FIXTURE_TEST_CASE("meter.auto_detects_each_fixture_format") {
  for (const FixtureCase& c : fixtures.cases) {
    if (c.sse || !c.usage_present) continue;
    INFO("fixture ", c.file);
    CHECK(extract_usage(c.body)->format == c.format);
  }
}

TEST_CASE("meter.gemini_tool_use_prompt_tokens_are_input") {
  auto got =
      extract_usage(R"({"usageMetadata":{"promptTokenCount":100,"toolUsePromptTokenCount":20,"candidatesTokenCount":5,)"
                    R"("thoughtsTokenCount":7,"totalTokenCount":132},"modelVersion":"gemini-2.5-pro"})");
  REQUIRE(got.ok());
  CHECK(got->usage.input_tokens == 120);
  CHECK(got->usage.output_tokens == 12);
  CHECK(got->usage.total_tokens() == *got->reported_total_tokens);
  CHECK(got->model == "gemini-2.5-pro");
}

TEST_CASE("meter.openai_cache_write_tokens_are_cache_creation") {
  auto got =
      extract_usage(R"({"object":"response","usage":{"input_tokens":2000,"input_tokens_details":{"cached_tokens":0,)"
                    R"("cache_write_tokens":1500},"output_tokens":3,"total_tokens":2003}})");
  REQUIRE(got.ok());
  CHECK(got->usage.input_tokens == 2000);  // OpenAI input already includes cache writes
  CHECK(got->usage.cache_creation_input_tokens == 1500);
}

TEST_CASE("meter.escaped_and_unknown_keys_are_skipped") {
  // A key spelt with an escape is not the key this reader looks for; unknown keys are skipped.
  auto got = extract_usage(
      R"({"us\u0061ge":{"prompt_tokens":"x"},"usage":{"prompt_tokens":3,"completion_tokens":4,"x":{"y":[1]}},)"
      R"("other":{"usage":{"prompt_tokens":-1}}})");
  REQUIRE(got.ok());
  CHECK(got->usage.input_tokens == 3);
  CHECK(got->usage.output_tokens == 4);
}

TEST_CASE("meter.large_bodies_are_read") {
  std::string body = R"({"object":"chat.completion","model":"gpt-4.1","choices":[{"message":{"content":")";
  body.append(3u << 20, 'a');  // 3 MiB: parsed with a parser of its own
  body += R"("}}],"usage":{"prompt_tokens":7,"completion_tokens":8,"total_tokens":15}})";
  auto got = extract_usage(body);
  REQUIRE(got.ok());
  CHECK(got->usage.input_tokens == 7);
  CHECK(got->model == "gpt-4.1");
  // And the thread's own parser still works afterwards.
  CHECK(extract_usage(R"({"usage":{"prompt_tokens":1,"completion_tokens":1}})").ok());
}

FIXTURE_TEST_CASE("meter.extract_usage_from_many_threads") {
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong, &fixtures] {
      for (int i = 0; i < 300; ++i) {
        for (const FixtureCase& c : fixtures.cases) {
          if (c.sse || !c.usage_present) continue;
          auto got = extract_usage(c.body);
          if (!got.ok() || !(got->usage == c.usage) || got->model != c.model) ++wrong[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int w : wrong) CHECK(w == 0);
}

FIXTURE_TEST_CASE("meter.corrupted_bodies_never_crash_or_throw") {
  // Every byte of every JSON fixture replaced by each structural character (run it under ASan).
  const char replacements[] = {'{', '}', '[', ']', '"', '\\', ',', ':', 'x', '\0'};
  int ok = 0;
  int failed = 0;
  for (const FixtureCase& c : fixtures.cases) {
    if (c.sse) continue;
    for (std::size_t i = 0; i < c.body.size(); ++i) {
      for (char r : replacements) {
        std::string body = c.body;
        body[i] = r;
        auto got = extract_usage(body);
        if (got.ok()) {
          ++ok;
          CHECK(got->usage.input_tokens >= 0);
        } else {
          ++failed;
          CHECK((absl::IsInvalidArgument(got.status()) || absl::IsNotFound(got.status())));
        }
      }
    }
  }
  CHECK(ok > 0);
  CHECK(failed > 0);
}

}  // namespace
}  // namespace paygent
