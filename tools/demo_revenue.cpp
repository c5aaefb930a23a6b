// `paygent demo revenue`: the revenue half of the demo (issue 10, seeds 000 and 002). The agents of
// scripts/demo-agents.json (applied before, by `paygent agents apply`) earn from their customers;
// this sends November 2026's events of four agents to paygentd through the batch path (wire
// version 4) and checks paygentd's profit report by agent:
//   dental-clinic       voice, per minute ($0.15/min): seed 000's session (20 STT minutes on nova-2,
//                       1,000 + 500 gpt-4o tokens, 28,000 Polly neural characters), 5.0 min = $0.75
//   lead-qualification  flat $0.20 per call, three calls of 1, 7 and 20 minutes: $0.60
//   internal-summarizer cost-only (no indicator): cost, and no revenue or margin
//   stripe-webhook      revenue-only ($1.00 per invoice_paid): revenue, and no cost or margin
#include "tools/demo_revenue.h"

#include <simdjson.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "sync/syncer.h"
#include "tools/profit.h"

namespace paygent::tools {
namespace {

constexpr std::int64_t kMinuteUs = 60'000'000;

// The demo's provider prices (nano-USD), as their providers publish them: Deepgram nova-2
// $0.0043/min, OpenAI gpt-4o $2.50 / $10.00 per 1M input / output tokens, gpt-4o-mini $0.15 /
// $0.60, Amazon Polly neural $16 per 1M characters.
constexpr std::int64_t kNova2PerMinute = 4'300'000;
constexpr std::int64_t kPollyNeuralPerChar = 16'000;

struct Event {
  std::string user, session, agent, indicator, model, provider, kind = "llm";
  std::int64_t input_tokens = 0, output_tokens = 0, cost_nanos = 0, audio_us = 0, characters = 0;
  int day = 1;  // of November 2026
};

std::string quoted(const std::string& s) { return "\"" + s + "\""; }  // the demo's texts need no escapes

std::string event_json(const Event& e, int n) {
  char id[33];
  std::snprintf(id, sizeof id, "de30%028x", n);
  const std::int64_t ts = absl::ToUnixNanos(absl::FromCivil(absl::CivilSecond(2026, 11, e.day, 10, 0, n % 60), absl::UTCTimeZone()));
  return "{\"id\":\"" + std::string(id) + "\",\"user_id\":" + quoted(e.user) + ",\"session_id\":" + quoted(e.session) +
         ",\"agent_id\":" + quoted(e.agent) + ",\"indicator\":" + quoted(e.indicator) + ",\"model\":" + quoted(e.model) +
         ",\"provider\":" + quoted(e.provider) + ",\"input_tokens\":" + std::to_string(e.input_tokens) +
         ",\"output_tokens\":" + std::to_string(e.output_tokens) +
         ",\"cached_input_tokens\":0,\"cache_creation_input_tokens\":0,\"reasoning_tokens\":0,\"cost_nanos\":" +
         std::to_string(e.cost_nanos) + ",\"ts_ns\":" + std::to_string(ts) +
         ",\"meta_tags\":{},\"estimated\":false,\"kind\":" + quoted(e.kind) + ",\"audio_us\":" + std::to_string(e.audio_us) +
         ",\"characters\":" + std::to_string(e.characters) + "}";
}

std::vector<Event> month() {
  std::vector<Event> out;
  // Seed 000's complete voice session, billed per minute.
  const std::string s = "voice_call_1";
  out.push_back({.user = "customer-123", .session = s, .agent = "dental-clinic", .model = "nova-2", .provider = "deepgram",
                 .kind = "stt", .cost_nanos = 20 * kNova2PerMinute, .audio_us = 20 * kMinuteUs, .day = 3});
  out.push_back({.user = "customer-123", .session = s, .agent = "dental-clinic", .model = "gpt-4o", .provider = "openai",
                 .input_tokens = 1000, .output_tokens = 500, .cost_nanos = 1000 * 2'500 + 500 * 10'000, .day = 3});
  out.push_back({.user = "customer-123", .session = s, .agent = "dental-clinic", .model = "neural", .provider = "amazon_polly",
                 .kind = "tts", .cost_nanos = 28'000 * kPollyNeuralPerChar, .characters = 28'000, .day = 3});
  out.push_back({.user = "customer-123", .session = s, .agent = "dental-clinic", .indicator = "voice_call_completed",
                 .kind = "billing", .audio_us = 5 * kMinuteUs, .day = 3});
  // Three qualification calls: $0.20 each, whatever they last.
  int call = 0;
  for (std::int64_t minutes : {1, 7, 20}) {
    const std::string session = "lead_call_" + std::to_string(++call);
    out.push_back({.user = "customer-456", .session = session, .agent = "lead-qualification", .model = "gpt-4o-mini",
                   .provider = "openai", .input_tokens = 8000, .output_tokens = 1000, .cost_nanos = 8000 * 150 + 1000 * 600,
                   .day = 5 + call});
    out.push_back({.user = "customer-456", .session = session, .agent = "lead-qualification", .indicator = "lead_qualified",
                   .kind = "billing", .audio_us = minutes * kMinuteUs, .day = 5 + call});
  }
  // An internal agent: costs only.
  for (int i = 0; i < 4; ++i) {
    out.push_back({.user = "ops", .agent = "internal-summarizer", .model = "gpt-4o", .provider = "openai",
                   .input_tokens = 8000, .output_tokens = 1000, .cost_nanos = 8000 * 2'500 + 1000 * 10'000, .day = 10 + i});
  }
  // A webhook that only reports revenue.
  for (const char* customer : {"acme", "globex"}) {
    out.push_back({.user = customer, .agent = "stripe-webhook", .indicator = "invoice_paid", .kind = "billing", .day = 20});
  }
  return out;
}

struct Expected {
  const char* agent;
  std::optional<std::int64_t> cost, revenue;
};

}  // namespace

int run_revenue_demo(const std::string& url, const std::string& key) {
  const std::vector<Event> events = month();
  std::string batch = "{\"v\":4,\"events\":[";
  for (std::size_t i = 0; i < events.size(); ++i) batch += (i ? "," : "") + event_json(events[i], static_cast<int>(i));
  batch += "]}";
  auto sent = internal::http_exchange(url, "POST", "/api/v1/events:batch", key, batch);
  if (!sent.ok() || sent->status != 200) {
    std::fprintf(stderr, "paygent demo revenue: %s\n",
                 sent.ok() ? sent->body.c_str() : std::string(sent.status().message()).c_str());
    return 1;
  }
  std::printf("Sent %zu events of November 2026 (voice session, three lead calls, internal LLM calls, webhooks).\n",
              events.size());
  const std::string target = "/api/v1/reports/profit?from_ns=" +
                             std::to_string(absl::ToUnixNanos(absl::FromCivil(absl::CivilDay(2026, 11, 1), absl::UTCTimeZone()))) +
                             "&to_ns=" +
                             std::to_string(absl::ToUnixNanos(absl::FromCivil(absl::CivilDay(2026, 12, 1), absl::UTCTimeZone()))) +
                             "&by=agent";
  auto report = internal::http_exchange(url, "GET", target, key, "");
  simdjson::dom::parser parser;
  simdjson::dom::array rows;
  if (!report.ok() || report->status != 200 || parser.parse(report->body)["rows"].get_array().get(rows) != simdjson::SUCCESS) {
    std::fprintf(stderr, "paygent demo revenue: no profit report: %s\n",
                 report.ok() ? report->body.c_str() : std::string(report.status().message()).c_str());
    return 1;
  }
  const Expected expected[] = {
      {"dental-clinic", 20 * kNova2PerMinute + 7'500'000 + 28'000 * kPollyNeuralPerChar, 750'000'000},
      {"internal-summarizer", 4 * 30'000'000, std::nullopt},
      {"lead-qualification", 3 * (8000 * 150 + 1000 * 600), 600'000'000},
      {"stripe-webhook", std::nullopt, 2'000'000'000},
  };
  int wrong = 0;
  for (const Expected& e : expected) {
    bool found = false;
    for (simdjson::dom::element row : rows) {
      std::string_view k;
      if (row["key"].get_string().get(k) != simdjson::SUCCESS || k != e.agent) continue;
      found = true;
      auto read = [&](const char* field) -> std::optional<std::int64_t> {
        std::int64_t n = 0;
        if (row[field].get_int64().get(n) != simdjson::SUCCESS) return std::nullopt;
        return n;
      };
      if (read("cost_nanos") != e.cost || read("revenue_nanos") != e.revenue) {
        std::fprintf(stderr, "paygent demo revenue: %s: cost or revenue differs from the expected %s / %s\n", e.agent,
                     e.cost ? usd_text(*e.cost).c_str() : "none", e.revenue ? usd_text(*e.revenue).c_str() : "none");
        ++wrong;
      }
    }
    if (!found) {
      std::fprintf(stderr, "paygent demo revenue: %s is missing from the profit report\n", e.agent);
      ++wrong;
    }
  }
  if (wrong == 0) {
    std::printf("paygentd's profit report matches: the voice call earned 5.0 min x $0.15 = $0.75, the lead calls\n"
                "$0.20 each whatever their length, the internal agent shows cost only, the webhook revenue only.\n");
  }
  return wrong == 0 ? 0 : 1;
}

}  // namespace paygent::tools
