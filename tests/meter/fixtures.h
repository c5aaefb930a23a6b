// The provider fixtures and what their MANIFEST.json says a reader finds in each, turned into the
// normalised Usage of usage.h. There are two sets with one manifest shape:
//   - the project's own, tests/fixtures/providers (PAYGENT_FIXTURES): always there, always run;
//   - ../shared/fixtures/providers (PAYGENT_SHARED_FIXTURES): recorded third-party bodies, read in
//     place when the directory exists, as an extra conformance pass.
// FIXTURE_TEST_CASE(name) runs one test body on both: `name` on the project's set, and
// `name ".shared"` on the shared set, which prints a "SKIPPED: ..." line (and ctest reports the
// test as skipped) when the directory is absent.
//
// MANIFEST.json gives the numbers as each provider reports them; usage.h normalises them:
//   Anthropic input  = input_tokens + cache_read_input_tokens + cache_creation_input_tokens;
//   Gemini    output = candidatesTokenCount + thoughtsTokenCount;
// absent (null) counts are 0. The manifest's own "derived" numbers are checked against the
// normalised ones (check_derived), so the two conventions cannot drift apart silently.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "paygent/usage.h"
#include "simdjson.h"

namespace paygent::testing {

// The bytes of a file; empty when it cannot be read.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct FixtureCase {
  std::string file;
  std::string body;
  bool sse = false;
  std::string provider;                 // as MANIFEST.json names it ("openai", "anthropic", "google-gemini", ...)
  ApiFormat format = ApiFormat::kAuto;  // kAuto for the error bodies ("api": "any")
  bool usage_present = true;
  // A stream that ends before the event carrying usage ("truncated": true): no usage, and no
  // provider error either.
  bool truncated = false;
  std::string model;  // empty when null
  Usage usage;        // normalised (see the top of this file)
  std::optional<std::int64_t> reported_total;
  // MANIFEST.json "derived" numbers, when given.
  std::optional<std::int64_t> derived_total_input;
  std::optional<std::int64_t> derived_output_with_thoughts;
  std::optional<std::int64_t> derived_total;
  std::optional<std::int64_t> derived_uncached_input;
};

inline ApiFormat format_of_api(std::string_view api) {
  if (api.rfind("chat.completions", 0) == 0) return ApiFormat::kOpenAIChat;
  if (api.rfind("responses", 0) == 0) return ApiFormat::kOpenAIResponses;
  if (api.rfind("messages", 0) == 0) return ApiFormat::kAnthropicMessages;
  if (api.rfind("generateContent", 0) == 0 || api.rfind("streamGenerateContent", 0) == 0) {
    return ApiFormat::kGeminiGenerate;
  }
  return ApiFormat::kAuto;
}

inline Provider provider_of_format(ApiFormat f) {
  switch (f) {
    case ApiFormat::kOpenAIChat:
    case ApiFormat::kOpenAIResponses:
      return Provider::kOpenAI;
    case ApiFormat::kAnthropicMessages:
      return Provider::kAnthropic;
    case ApiFormat::kGeminiGenerate:
      return Provider::kGemini;
    case ApiFormat::kAuto:
      break;
  }
  return Provider::kUnknown;
}

// Every file `dir`/MANIFEST.json describes, with its bytes. Empty if the manifest cannot be read.
inline std::vector<FixtureCase> load_fixture_cases(const std::string& dir) {
  std::vector<FixtureCase> cases;
  simdjson::dom::parser parser;
  simdjson::dom::object files;
  if (parser.load(dir + "/MANIFEST.json")["files"].get_object().get(files)) return cases;
  for (auto [name, entry] : files) {
    FixtureCase c;
    c.file = std::string(name);
    c.body = read_file(dir + "/" + std::string(name));
    std::string_view text;
    c.sse = !entry["format"].get_string().get(text) && text == "sse";
    if (!entry["provider"].get_string().get(text)) c.provider = std::string(text);
    if (!entry["api"].get_string().get(text)) c.format = format_of_api(text);
    if (!entry["model"].get_string().get(text)) c.model = std::string(text);
    bool present = true;
    if (!entry["usage_present"].get_bool().get(present)) c.usage_present = present;
    bool truncated = false;
    if (!entry["truncated"].get_bool().get(truncated)) c.truncated = truncated;

    auto count = [&](const char* section, const char* key) -> std::optional<std::int64_t> {
      std::int64_t n = 0;
      if (entry[section][key].get_int64().get(n)) return std::nullopt;
      return n;
    };
    auto zero = [](std::optional<std::int64_t> v) { return v.value_or(0); };
    c.usage.input_tokens = zero(count("expected", "input_tokens"));
    c.usage.output_tokens = zero(count("expected", "output_tokens"));
    c.usage.cached_input_tokens = zero(count("expected", "cached_input_tokens"));
    c.usage.cache_creation_input_tokens = zero(count("expected", "cache_creation_input_tokens"));
    c.usage.reasoning_tokens = zero(count("expected", "reasoning_tokens"));
    c.reported_total = count("expected", "total_tokens");
    if (c.provider == "anthropic") {
      c.usage.input_tokens += c.usage.cached_input_tokens + c.usage.cache_creation_input_tokens;
    }
    if (c.provider.rfind("google", 0) == 0) c.usage.output_tokens += c.usage.reasoning_tokens;
    c.derived_total_input = count("derived", "total_input_tokens");
    c.derived_output_with_thoughts = count("derived", "output_tokens_including_thoughts");
    c.derived_total = count("derived", "total_tokens");
    c.derived_uncached_input = count("derived", "uncached_input_tokens");
    cases.push_back(std::move(c));
  }
  return cases;
}

// True for a provider error body (HTTP 4xx/5xx JSON): no usage, and the call did not run.
inline bool is_error_body(const FixtureCase& c) { return !c.usage_present && !c.truncated && !c.sse; }

// One directory of fixtures and its manifest, loaded once.
struct FixtureSet {
  std::string dir;
  std::vector<FixtureCase> cases;

  // The case named `file`, or nullptr.
  [[nodiscard]] const FixtureCase* find(std::string_view file) const {
    for (const FixtureCase& c : cases) {
      if (c.file == file) return &c;
    }
    return nullptr;
  }
};

// The project's own fixtures (tests/fixtures/providers).
inline const FixtureSet& project_fixtures() {
  static const FixtureSet set{PAYGENT_FIXTURES, load_fixture_cases(PAYGENT_FIXTURES)};
  return set;
}

// The shared conformance set (../shared/fixtures/providers), or nullptr when the directory is not
// there, after printing the line ctest's SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt) looks for.
// A directory that is there but unreadable is returned (empty), so its tests fail rather than skip.
inline const FixtureSet* shared_fixtures_or_skip() {
  static const bool present = std::filesystem::is_directory(PAYGENT_SHARED_FIXTURES);
  if (!present) {
    std::printf("SKIPPED: ../shared/fixtures/providers not present (%s)\n", PAYGENT_SHARED_FIXTURES);
    std::fflush(stdout);
    return nullptr;
  }
  static const FixtureSet set{PAYGENT_SHARED_FIXTURES, load_fixture_cases(PAYGENT_SHARED_FIXTURES)};
  return &set;
}

}  // namespace paygent::testing

// FIXTURE_TEST_CASE("meter.x") { ... } defines the test body once, with `fixtures` (a FixtureSet)
// in scope, and registers it twice: "meter.x" on the project's set and "meter.x.shared" on the
// shared set (skipped when absent).
#define PAYGENT_FIXTURE_TEST_CASE_IMPL(name, body)                                                \
  static void body(const ::paygent::testing::FixtureSet& fixtures);                               \
  TEST_CASE(name) { body(::paygent::testing::project_fixtures()); }                               \
  TEST_CASE(name ".shared") {                                                                     \
    const ::paygent::testing::FixtureSet* shared = ::paygent::testing::shared_fixtures_or_skip(); \
    if (shared != nullptr) body(*shared);                                                         \
  }                                                                                               \
  static void body(const ::paygent::testing::FixtureSet& fixtures)
#define FIXTURE_TEST_CASE(name) PAYGENT_FIXTURE_TEST_CASE_IMPL(name, DOCTEST_CAT(fixture_test_body_, __LINE__))
