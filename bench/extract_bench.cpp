// Usage extraction: Paygent's readers beside a straightforward simdjson DOM baseline.
//
// Every benchmark first checks that it computes the right numbers (those the project's
// tests/fixtures/providers/MANIFEST.json gives for the fixture) and only then times; a wrong
// result stops it with SkipWithError. Bytes/s are the bytes of the response body (or stream) read
// per second.
//
//   build-meter/bench/paygent_bench --benchmark_filter='Extract|Dom|Stream'
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "benchmark/benchmark.h"
#include "paygent/usage.h"
#include "simdjson.h"

namespace {

std::string read_fixture(std::string_view name) {
  std::ifstream in(std::string(PAYGENT_FIXTURES) + "/" + std::string(name), std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// What MANIFEST.json says a reader finds in one OpenAI fixture (OpenAI numbers need no
// normalisation; absent counts are 0).
struct Expected {
  std::string model;
  std::int64_t input = 0;
  std::int64_t output = 0;
  std::int64_t cached = 0;
  std::int64_t reasoning = 0;
  std::int64_t total = 0;
  bool ok = false;
};

Expected expected_for(std::string_view file) {
  Expected e;
  simdjson::dom::parser parser;
  simdjson::dom::element manifest;
  if (parser.load(std::string(PAYGENT_FIXTURES) + "/MANIFEST.json").get(manifest)) return e;
  simdjson::dom::element entry;
  if (manifest["files"][file].get(entry)) return e;
  auto count = [&](const char* key) {
    std::int64_t n = 0;
    return entry["expected"][key].get_int64().get(n) == simdjson::SUCCESS ? n : 0;
  };
  std::string_view model;
  if (entry["model"].get_string().get(model)) return e;
  e.model = std::string(model);
  e.input = count("input_tokens");
  e.output = count("output_tokens");
  e.cached = count("cached_input_tokens");
  e.reasoning = count("reasoning_tokens");
  e.total = count("total_tokens");
  e.ok = e.input > 0 && e.output > 0;
  return e;
}

bool matches(const paygent::ExtractedUsage& got, const Expected& want) {
  return got.model == want.model && got.usage.input_tokens == want.input && got.usage.output_tokens == want.output &&
         got.usage.cached_input_tokens == want.cached && got.usage.reasoning_tokens == want.reasoning &&
         got.reported_total_tokens == std::optional<std::int64_t>(want.total);
}

const std::string& chat_body() {
  static const std::string body = read_fixture("openai-chat.json");
  return body;
}

const Expected& chat_expected() {
  static const Expected e = expected_for("openai-chat.json");
  return e;
}

// extract_usage: one simdjson On-Demand pass over the body.
void BM_ExtractUsage(benchmark::State& state) {
  const std::string& body = chat_body();
  if (!chat_expected().ok) return state.SkipWithError("MANIFEST.json or the fixture is missing");
  auto first = paygent::extract_usage(body);
  if (!first.ok() || !matches(*first, chat_expected())) return state.SkipWithError("extract_usage is wrong");
  for (auto _ : state) {
    auto got = paygent::extract_usage(body);
    benchmark::DoNotOptimize(got);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(BM_ExtractUsage);

// Baseline: a full simdjson DOM parse of the body (one reused parser, the body copied into its
// padded buffer as the parser does for an unpadded input), then the same fields by key.
bool dom_read(simdjson::dom::parser& parser, std::string_view body, paygent::ExtractedUsage& out) {
  simdjson::dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc)) return false;
  simdjson::dom::element usage;
  std::string_view model;
  if (doc["usage"].get(usage) || doc["model"].get_string().get(model)) return false;
  std::int64_t input = 0, output = 0, total = 0, cached = 0, reasoning = 0;
  if (usage["prompt_tokens"].get_int64().get(input) || usage["completion_tokens"].get_int64().get(output) ||
      usage["total_tokens"].get_int64().get(total)) {
    return false;
  }
  // Optional fields: absent is 0.
  if (usage["prompt_tokens_details"]["cached_tokens"].get_int64().get(cached)) cached = 0;
  if (usage["completion_tokens_details"]["reasoning_tokens"].get_int64().get(reasoning)) reasoning = 0;
  out.model.assign(model);
  out.usage.input_tokens = input;
  out.usage.output_tokens = output;
  out.usage.cached_input_tokens = cached;
  out.usage.reasoning_tokens = reasoning;
  out.reported_total_tokens = total;
  return true;
}

void BM_DomBaseline(benchmark::State& state) {
  const std::string& body = chat_body();
  if (!chat_expected().ok) return state.SkipWithError("MANIFEST.json or the fixture is missing");
  simdjson::dom::parser parser;
  paygent::ExtractedUsage first;
  if (!dom_read(parser, body, first) || !matches(first, chat_expected())) {
    return state.SkipWithError("DOM baseline is wrong");
  }
  for (auto _ : state) {
    paygent::ExtractedUsage got;
    benchmark::DoNotOptimize(dom_read(parser, body, got));
    benchmark::DoNotOptimize(got);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(BM_DomBaseline);

// A whole OpenAI chat stream (tests/fixtures/providers/openai-chat-stream.sse: 13 events, ~4 KB)
// fed in chunks of state.range(0) bytes.
void BM_StreamUsage(benchmark::State& state) {
  static const std::string stream = read_fixture("openai-chat-stream.sse");
  static const Expected want = expected_for("openai-chat-stream.sse");
  const auto chunk = static_cast<std::size_t>(state.range(0));
  auto run = [&]() {
    paygent::StreamUsageReader reader;
    for (std::size_t i = 0; i < stream.size(); i += chunk) reader.feed(std::string_view(stream).substr(i, chunk));
    return reader.finish();
  };
  if (!want.ok) return state.SkipWithError("MANIFEST.json or the fixture is missing");
  auto first = run();
  if (!first.ok() || !matches(*first, want)) return state.SkipWithError("StreamUsageReader is wrong");
  for (auto _ : state) {
    auto got = run();
    benchmark::DoNotOptimize(got);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(stream.size()));
}
BENCHMARK(BM_StreamUsage)->Arg(512)->Arg(1 << 20);

}  // namespace
