// The price catalog and cost_of (price_catalog.h, meter/price_catalog.cpp, meter/prices.json).
#include "paygent/price_catalog.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "paygent/money.h"
#include "paygent/usage.h"
#include "simdjson.h"
#include "tests/meter/fixtures.h"

namespace paygent {
namespace internal {
extern const std::string_view kEmbeddedPrices;  // meter/prices.json, as built into the library
}  // namespace internal

namespace {

std::string message_of(const absl::Status& s) { return std::string(s.message()); }

PicosPerToken per_million(std::string_view usd) { return *parse_usd_per_tokens(usd, 1'000'000); }

bool same_price(const ModelPrice* a, const ModelPrice* b) {
  return a != nullptr && b != nullptr && a->input == b->input && a->cached_input == b->cached_input &&
         a->cache_write == b->cache_write && a->output == b->output;
}

Usage make_usage(std::int64_t input, std::int64_t output, std::int64_t cached = 0, std::int64_t creation = 0) {
  Usage u;
  u.input_tokens = input;
  u.output_tokens = output;
  u.cached_input_tokens = cached;
  u.cache_creation_input_tokens = creation;
  return u;
}

TEST_CASE("meter.cost_of_worked_examples") {
  const PriceCatalog& catalog = PriceCatalog::builtin();
  const ModelPrice* gpt4o = catalog.find("gpt-4o");
  REQUIRE(gpt4o != nullptr);
  CHECK(gpt4o->input == 2'500'000);  // $2.50 per 1M tokens
  CHECK(gpt4o->cached_input == 1'250'000);
  CHECK(gpt4o->cache_write == 2'500'000);  // none published: the input price
  CHECK(gpt4o->output == 10'000'000);
  // 1000 input + 500 output at $2.50 / $10 per 1M = $0.0025 + $0.005 = exactly 7,500,000 nano-USD.
  CHECK(cost_of(make_usage(1000, 500), *gpt4o) == 7'500'000);
  // openai-chat-cached.json: 1117 input of which 1024 cached, 46 output:
  // 93 x 2.5e6 + 1024 x 1.25e6 + 46 x 1e7 = 1,972,500,000 pico-USD.
  CHECK(cost_of(make_usage(1117, 46, 1024), *gpt4o) == 1'972'500);

  // anthropic-messages-cached.json at claude-sonnet-4-5 ($3 in, $3.75 write, $0.30 read, $15 out):
  // 249 x 3e6 + 2048 x 3e5 + 1024 x 3.75e6 + 26 x 1.5e7 = 5,591,400,000 pico-USD.
  const ModelPrice* sonnet = catalog.find("claude-sonnet-4-5-20250929");
  REQUIRE(sonnet != nullptr);
  CHECK(cost_of(make_usage(3321, 26, 2048, 1024), *sonnet) == 5'591'400);

  // gemini-vertex-generate-implicit-cache.json at gemini-2.5-flash ($0.30 in, $0.03 cached,
  // $2.50 out): 770 x 3e5 + 11243 x 3e4 + 88 x 2.5e6 = 788,290,000 pico-USD -> 788,290 nano-USD.
  const ModelPrice* flash = catalog.find("gemini-2.5-flash");
  REQUIRE(flash != nullptr);
  CHECK(cost_of(make_usage(12013, 88, 11243), *flash) == 788'290);
}

TEST_CASE("meter.cost_of_rounds_once_half_up") {
  ModelPrice price;
  price.input = 400;  // 0.4 nano-USD per token
  price.cached_input = 100;
  price.cache_write = 400;
  price.output = 400;
  CHECK(cost_of(make_usage(1, 0), price) == 0);     // 400 pico
  CHECK(cost_of(make_usage(1, 1), price) == 1);     // 800 pico: summed first, then rounded
  CHECK(cost_of(make_usage(5, 0, 5), price) == 1);  // 500 pico: half rounds up
  CHECK(cost_of(make_usage(4, 0, 4), price) == 0);  // 400 pico
  CHECK(cost_of(Usage{}, price) == 0);
}

TEST_CASE("meter.cost_of_prices_each_kind_of_token") {
  ModelPrice price;
  price.input = 1'000'000;
  price.cached_input = 100'000;
  price.cache_write = 1'250'000;
  price.output = 5'000'000;
  // 100 uncached + 300 read + 600 written = 1000 input; 10 output.
  CHECK(cost_of(make_usage(1000, 10, 300, 600), price) == 100'000 + 30'000 + 750'000 + 50'000);
  // Inconsistent usage (more cached than input) never prices input below zero.
  CHECK(cost_of(make_usage(10, 0, 50), price) == 5'000);
  CHECK(cost_of(make_usage(10, 0, 5, 50), price) == 500 + 62'500);
  // Negative counts (a hand-built Usage) count as zero.
  CHECK(cost_of(make_usage(-10, -10, -5, -5), price) == 0);
  // Beyond int64 nano-USD it saturates instead of wrapping.
  price.output = 1'000'000'000'000;
  CHECK(cost_of(make_usage(0, INT64_MAX), price) == INT64_MAX);
}

TEST_CASE("meter.cost_of_is_exact_past_64_bit_picos") {
  // 10^13 tokens at 10 micro-USD = 10^20 pico-USD: past int64 in picos (the 64-bit fast path
  // gives up), 10^17 nano-USD in the result, which fits. Either path, the same exact answer.
  ModelPrice price;
  price.input = 10'000'000;
  price.cached_input = 3;
  price.cache_write = 10'000'000;
  price.output = 40'000'000;
  CHECK(cost_of(make_usage(10'000'000'000'000, 0), price) == 100'000'000'000'000'000);
  CHECK(cost_of(make_usage(0, 100'000'000'000), price) == 4'000'000'000'000'000);  // fits in 64 bits
  // Just either side of the fast path's limit, with the half-up rounding in play.
  const std::int64_t n = INT64_MAX / 40'000'000;  // output tokens whose picos just fit
  CHECK(cost_of(make_usage(0, n), price) == (static_cast<__int128>(n) * 40'000'000 + 500) / 1000);
  CHECK(cost_of(make_usage(0, n + 1), price) == (static_cast<__int128>(n + 1) * 40'000'000 + 500) / 1000);
  CHECK(cost_of(make_usage(7, 0, 7), price) == 0);  // 21 pico of cache reads
  CHECK(cost_of(make_usage(167, 0, 167), price) == 1);  // 501 pico
}

TEST_CASE("meter.builtin_catalog_is_valid_and_dated") {
  const PriceCatalog& catalog = PriceCatalog::builtin();
  CHECK(&catalog == &PriceCatalog::builtin());
  CHECK(catalog.size() >= 30);
  CHECK(catalog.as_of().size() == 10);
  auto reparsed = PriceCatalog::parse(internal::kEmbeddedPrices);
  REQUIRE_MESSAGE(reparsed.ok(), message_of(reparsed.status()));
  CHECK(reparsed->size() == catalog.size());
  CHECK(reparsed->as_of() == catalog.as_of());
}

TEST_CASE("meter.builtin_catalog_covers_requested_models") {
  const PriceCatalog& catalog = PriceCatalog::builtin();
  const char* models[] = {
      "gpt-4o",
      "gpt-4o-mini",
      "gpt-4.1",
      "gpt-4.1-mini",
      "gpt-4.1-nano",
      "o1",
      "o3",
      "o3-mini",
      "o4-mini",
      "gpt-5",
      "gpt-5-mini",
      "gpt-5-nano",
      "gpt-5.4",
      "claude-opus-4-5",
      "claude-opus-4-1",
      "claude-opus-4",
      "claude-sonnet-4-5",
      "claude-sonnet-4",
      "claude-haiku-4-5",
      "claude-3-7-sonnet",
      "claude-3-5-sonnet",
      "claude-3-5-haiku",
      "claude-3-opus",
      "claude-3-haiku",
      "gemini-2.5-pro",
      "gemini-2.5-flash",
      "gemini-2.5-flash-lite",
      "gemini-2.0-flash",
  };
  for (const char* m : models) CHECK_MESSAGE(catalog.find(m) != nullptr, m);
}

// Every model's most output tokens a call can produce is listed (what a request without max_tokens
// may run to, held by a reservation of one), from the providers' model pages.
TEST_CASE("meter.builtin_catalog_lists_each_models_maximum_output") {
  const PriceCatalog& catalog = PriceCatalog::builtin();
  const std::pair<const char*, std::int64_t> known[] = {
      {"gpt-4o", 16'384},          {"gpt-4o-2024-08-06", 16'384}, {"gpt-4o-2024-05-13", 4'096},
      {"gpt-4.1-mini", 32'768},    {"o3", 100'000},               {"gpt-5.4", 128'000},
      {"claude-opus-4-6", 128'000}, {"claude-sonnet-4-5", 64'000}, {"claude-opus-4-1", 32'000},
      {"claude-3-5-haiku", 8'192}, {"claude-3-haiku", 4'096},      {"gemini-2.5-flash", 65'536},
      {"gemini-2.0-flash", 8'192},
  };
  for (const auto& [model, most] : known) {
    INFO(model);
    const ModelPrice* p = catalog.find(model);
    REQUIRE(p != nullptr);
    CHECK(p->max_output_tokens == most);
  }
  simdjson::dom::parser parser;
  simdjson::dom::object models = parser.parse(internal::kEmbeddedPrices.data(), internal::kEmbeddedPrices.size())["models"].get_object();
  for (const auto member : models) {
    INFO(std::string_view(member.key));
    const ModelPrice* p = catalog.find(member.key);
    REQUIRE(p != nullptr);
    CHECK(p->max_output_tokens > 0);
  }
}

FIXTURE_TEST_CASE("meter.builtin_catalog_prices_every_fixture_model") {
  int models = 0;
  for (const auto& c : fixtures.cases) {
    if (c.model.empty()) continue;
    CHECK_MESSAGE(PriceCatalog::builtin().find(c.model) != nullptr, c.model);
    ++models;
  }
  CHECK(models > 0);
}

TEST_CASE("meter.builtin_anthropic_cache_prices_follow_the_published_multipliers") {
  // Anthropic: 5-minute cache writes at 1.25x input, cache reads at 0.1x input. Claude 3 Haiku is
  // the published exception ($0.25 input, $0.30 write, $0.03 read: rounded to the cent).
  simdjson::dom::parser parser;
  simdjson::dom::object models;
  REQUIRE(parser.parse(std::string(internal::kEmbeddedPrices))["models"].get_object().get(models) == simdjson::SUCCESS);
  int anthropic = 0;
  for (auto [name, entry] : models) {
    std::string_view provider;
    REQUIRE(entry["provider"].get_string().get(provider) == simdjson::SUCCESS);
    const ModelPrice* price = PriceCatalog::builtin().find(name);
    REQUIRE(price != nullptr);
    CHECK(price->input > 0);
    CHECK(price->output >= price->input);
    CHECK(price->cached_input <= price->input);
    if (provider != "anthropic" || name == "claude-3-haiku") continue;
    INFO("model ", name);
    CHECK(price->cache_write * 4 == price->input * 5);
    CHECK(price->cached_input * 10 == price->input);
    ++anthropic;
  }
  CHECK(anthropic >= 11);
}

TEST_CASE("meter.find_prefers_the_exact_name_then_the_canonical_one") {
  const PriceCatalog& catalog = PriceCatalog::builtin();
  const ModelPrice* current = catalog.find("gpt-4o-2024-08-06");
  const ModelPrice* launch = catalog.find("gpt-4o-2024-05-13");
  REQUIRE(current != nullptr);
  REQUIRE(launch != nullptr);
  CHECK(current == catalog.find("gpt-4o"));
  CHECK(launch->input == per_million("5.00"));
  CHECK(launch->cached_input == launch->input);
  CHECK(same_price(catalog.find("claude-sonnet-4-0"), catalog.find("claude-sonnet-4-20250514")));
  CHECK(same_price(catalog.find("gpt-5-chat-latest"), catalog.find("gpt-5")));
  CHECK(catalog.find("claude-3-opus-latest") == catalog.find("claude-3-opus"));
  CHECK(catalog.find("models/gemini-2.5-flash") == catalog.find("gemini-2.5-flash"));
  CHECK(catalog.find("gemini-2.0-flash-001") != nullptr);
  CHECK(catalog.find("gpt-4o-mini")->input == per_million("0.15"));  // not gpt-4o's price
  CHECK(catalog.find("no-such-model") == nullptr);
  CHECK(catalog.find("") == nullptr);
  CHECK(catalog.find("GPT-4O") == nullptr);
}

TEST_CASE("meter.catalog_parse_accepts_a_minimal_catalog") {
  auto parsed = PriceCatalog::parse(
      R"({"as_of":"2026-01-31","unit":"USD per 1K tokens","sources":{"acme":"https://acme.example/pricing"},)"
      R"("models":{"acme-1":{"provider":"acme","input":"0.0025","output":"0.01","aliases":["acme-one"]}}})");
  REQUIRE_MESSAGE(parsed.ok(), message_of(parsed.status()));
  CHECK(parsed->size() == 1);
  CHECK(parsed->as_of() == "2026-01-31");
  const ModelPrice* p = parsed->find("acme-one-2026-01-01");
  REQUIRE(p != nullptr);
  CHECK(p->input == 2'500'000);
  CHECK(p->output == 10'000'000);
  CHECK(p->cached_input == p->input);
  CHECK(p->cache_write == p->input);
  CHECK(p->max_output_tokens == 0);  // not listed: unknown

  PriceCatalog moved = std::move(*parsed);
  CHECK(moved.find("acme-1") != nullptr);
}

TEST_CASE("meter.catalog_parse_errors_name_the_entry_and_field") {
  const std::string head =
      R"({"as_of":"2026-01-31","unit":"USD per 1M tokens","sources":{"acme":"https://acme.example/p"},"models":)";
  struct Case {
    std::string json;
    const char* message;
  };
  const Case cases[] = {
      {"not json", nullptr},
      {"[]", "price catalog: must be a JSON object"},
      {R"({"unit":"USD per 1M tokens"})", "as_of: must be a date string \"YYYY-MM-DD\""},
      {R"({"as_of":"Nov 2026"})", "as_of: must be a date string \"YYYY-MM-DD\""},
      {R"({"as_of":"2026-01-31","unit":"EUR per 1M tokens"})",
       "unit: must be \"USD per 1M tokens\" or \"USD per 1K tokens\""},
      {R"({"as_of":"2026-01-31","unit":"USD per 1M tokens","sources":{"acme":"http://x"},"models":{}})",
       "sources.acme: must be an https:// URL"},
      {head + "[]}", "models: must be an object"},
      {head + "{}}", "models: must name at least one model"},
      {head + R"({"m":5}})", "models[\"m\"]: must be an object"},
      {head + R"({"m":{"provider":"acme","output":"1"}}})", "models[\"m\"].input: is required"},
      {head + R"({"m":{"provider":"acme","input":"1"}}})", "models[\"m\"].output: is required"},
      {head + R"({"m":{"provider":"acme","input":2.5,"output":"1"}}})",
       "models[\"m\"].input: must be a decimal string such as \"2.50\""},
      {head + R"({"gpt-4.1":{"provider":"acme","input":"1","output":"ten"}}})",
       "models[\"gpt-4.1\"].output: \"ten\": has a character 't' at position 0 (expected a decimal number such as -12.5)"},
      {head + R"({"m":{"provider":"acme","input":"-1","output":"1"}}})",
       "models[\"m\"].input: \"-1\": must not be negative"},
      {head + R"({"m":{"provider":"acme","input":"0.0000001","output":"1"}}})",
       "models[\"m\"].input: \"0.0000001\": has more precision than 1 pico-USD per token"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","cache_read":"0.1"}}})",
       "models[\"m\"].cache_read: unknown field"},
      {head + R"({"m":{"provider":"other","input":"1","output":"1"}}})",
       "models[\"m\"].provider: \"other\" has no entry in sources"},
      {head + R"({"m":{"input":"1","output":"1"}}})", "models[\"m\"].provider: must be a string"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","aliases":"n"}}})",
       "models[\"m\"].aliases: must be an array of model names"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","aliases":["m"]}}})",
       "models[\"m\"].aliases: \"m\" is already a model name"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1"},"m":{"provider":"acme","input":"1","output":"1"}}})",
       "models[\"m\"]: duplicate model name"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","note":7}}})",
       "models[\"m\"].note: must be a string"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","max_output":"4096"}}})",
       "models[\"m\"].max_output: must be a positive integer of tokens (at most 2^40)"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","max_output":0}}})",
       "models[\"m\"].max_output: must be a positive integer of tokens (at most 2^40)"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","max_output":4096.5}}})",
       "models[\"m\"].max_output: must be a positive integer of tokens (at most 2^40)"},
      {head + R"({"m":{"provider":"acme","input":"1","output":"1","max_output":2199023255553}}})",
       "models[\"m\"].max_output: must be a positive integer of tokens (at most 2^40)"},
  };
  for (const Case& c : cases) {
    INFO("json: ", c.json);
    auto parsed = PriceCatalog::parse(c.json);
    REQUIRE(absl::IsInvalidArgument(parsed.status()));
    if (c.message != nullptr) CHECK(message_of(parsed.status()) == c.message);
  }
}

}  // namespace
}  // namespace paygent
