// The tracking calls (include/paygent/tracking.h, docs/tracking.md): the seeds' flows 000-002 as
// events with catalog costs, misuse, unknown prices, the guardrail on speech cost, customers across
// restarts, and delivery to a fake paygentd with the wire version 4 fields, exactly once.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "guard/internal/engine.h"
#include "paygent/paygent.h"
#include "paygent/price_catalog.h"
#include "sync/event_record.h"
#include "sync/local_store.h"
#include "tests/guard/fake_backend.h"
#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using internal::EventRecord;
using internal::UsageKind;
using namespace std::chrono_literals;

// A plan with no cost_rates: LLM calls are priced from the catalog, as everything else.
PlanConfig catalog_plan(std::optional<Nanos> max_period = std::nullopt) {
  Plan p;
  p.name = "voice";
  p.max_spend_per_period = max_period;
  return testing::config_with(std::move(p));
}

// A Paygent on a temporary store and a fake clock, keeping what on_error said.
struct Tracker {
  explicit Tracker(PlanConfig config = catalog_plan()) { open(std::move(config)); }
  void open(PlanConfig config) {
    Options o;
    o.plans = std::move(config);
    o.local_store_path = store.path();
    o.local_commit_interval = absl::Milliseconds(5);
    o.clock = clock.fn();
    o.on_error = [this](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    o.on_hard_gate = [this](const GuardResult&) { ++hard_gates; };
    pg = *Paygent::create(std::move(o));
  }
  // Every event stored so far, oldest first (closes the Paygent: its store is read directly).
  std::vector<EventRecord> events() {
    REQUIRE(pg->flush().ok());
    pg.reset();
    auto opened = internal::LocalStore::open(store.path());
    REQUIRE(opened.ok());
    auto all = (*opened)->unacked(1000);
    REQUIRE(all.ok());
    return *all;
  }
  bool said(std::string_view part) const {
    return std::any_of(errors.begin(), errors.end(), [&](const std::string& e) { return e.find(part) != e.npos; });
  }
  testing::TempStore store;
  testing::FakeClock clock;
  std::vector<std::string> errors;
  int hard_gates = 0;
  std::unique_ptr<Paygent> pg;
};

const EventRecord& only(const std::vector<EventRecord>& events, UsageKind kind) {
  auto n = std::count_if(events.begin(), events.end(), [&](const EventRecord& e) { return e.kind == kind; });
  REQUIRE(n == 1);
  return *std::find_if(events.begin(), events.end(), [&](const EventRecord& e) { return e.kind == kind; });
}

// The seed's worked numbers, from the catalog's listed rates: nova-2 $0.0058/min, gpt-4o $2.50 /
// $10 per 1M tokens, Amazon Polly neural $16 per 1M characters.
constexpr Nanos kSeed000Stt = 116'000'000;   // 20 min x $0.0058
constexpr Nanos kSeed000Llm = 7'500'000;     // 1,000 x $2.50/M + 500 x $10/M
constexpr Nanos kSeed000Tts = 448'000'000;   // 28,000 x $16/M

void seed_000(Paygent& pg, const std::string& session) {
  REQUIRE(pg.create_or_get_customer({.external_id = "customer-123", .name = "Customer Name"}).ok());
  pg.initialize_voice_session(session, "voice-agent-id", "customer-123", {{"clinic", "dental"}});
  pg.track_voice_stt(session, {.provider = "Deepgram", .model = "nova-2", .tier = "default", .audio = 20min});
  pg.track_voice_llm(session, {.provider = "openai", .model = "gpt-4o", .tier = "default", .prompt_tokens = 1000,
                               .completion_tokens = 500});
  pg.track_voice_tts(session, {.provider = "amazon-polly", .model = "neural", .tier = "default", .characters = 28000});
  pg.set_voice_indicator(session, "voice_call_completed", MediaDuration::minutes(0.5));
}

TEST_CASE("tracking.the_seeds_expected_costs_are_the_catalogs") {
  const PriceCatalog& c = PriceCatalog::builtin();
  const MediaPrice* nova2 = c.find(MediaKind::kStt, "Deepgram", "nova-2", "default");
  const MediaPrice* polly = c.find(MediaKind::kTts, "amazon-polly", "neural", "default");
  REQUIRE(nova2 != nullptr);
  REQUIRE(polly != nullptr);
  CHECK(cost_of_duration(*nova2, 20min) == kSeed000Stt);
  CHECK(cost_of_characters(*polly, 28000) == kSeed000Tts);
  REQUIRE(c.find("gpt-4o") != nullptr);
  CHECK(cost_of(testing::tokens(1000, 500), *c.find("gpt-4o")) == kSeed000Llm);
  // The engine's fast path for characters rounds as cost_of_characters does, to its overflow.
  internal::MediaKey key;
  key.kind = UsageKind::kTts;
  key.price = polly;
  const std::int64_t counts[] = {0, 1, 31, 32, 28'000, 1'000'000'007, 1'152'921'504'606'846'975,
                                 std::numeric_limits<std::int64_t>::max()};
  for (std::int64_t n : counts) {
    CHECK(internal::Engine::media_cost(key, {}, n, nullptr) == cost_of_characters(*polly, n));
  }
}

TEST_CASE("tracking.seed_000_voice_session_flow") {
  Tracker t;
  seed_000(*t.pg, "voice_call_1");
  auto report = t.pg->report("customer-123");
  REQUIRE(report.ok());
  CHECK(report->spend == kSeed000Stt + kSeed000Llm + kSeed000Tts);  // the customer's period spend
  CHECK(t.pg->stats().unknown_models == 0);
  const auto events = t.events();
  REQUIRE(events.size() == 4);
  for (const EventRecord& e : events) {  // the session's agent, customer and tags on every event
    CHECK(e.user_id == "customer-123");
    CHECK(e.session_id == "voice_call_1");
    CHECK(e.agent_id == "voice-agent-id");
    CHECK(e.meta_tags_json == R"({"clinic":"dental"})");
    CHECK_FALSE(e.cost_unknown);
  }
  const EventRecord& stt = only(events, UsageKind::kStt);
  CHECK(stt.audio_us == 20 * 60'000'000LL);
  CHECK(stt.cost_nanos == kSeed000Stt);
  CHECK(stt.provider == "deepgram");
  CHECK(stt.model == "nova-2");
  CHECK(stt.tier == "pay-as-you-go");  // the tier it was priced at
  CHECK(stt.indicator.empty());
  const EventRecord& llm = only(events, UsageKind::kLlm);
  CHECK(llm.model == "gpt-4o");
  CHECK(llm.input_tokens == 1000);
  CHECK(llm.output_tokens == 500);
  CHECK(llm.cost_nanos == kSeed000Llm);
  const EventRecord& tts = only(events, UsageKind::kTts);
  CHECK(tts.characters == 28000);
  CHECK(tts.cost_nanos == kSeed000Tts);
  CHECK(tts.provider == "amazon-polly");
  const EventRecord& bill = only(events, UsageKind::kBilling);
  CHECK(bill.indicator == "voice_call_completed");
  CHECK(bill.audio_us == 30'000'000);  // 0.5 min, exact
  CHECK(bill.cost_nanos == 0);
  CHECK(t.errors.empty());
}

TEST_CASE("tracking.seed_001_standalone_stt_tts_sts") {
  Tracker t;
  Paygent& pg = *t.pg;
  pg.track_stt("agent-123", "customer-456", "stt-service-call",
               {.provider = "Deepgram", .model = "nova-3", .tier = "default", .audio = MediaDuration::minutes(0.45)});
  pg.track_tts("agent-123", "customer-456", "tts-service-call",
               {.provider = "Elevenlabs", .model = "eleven-v3", .tier = "default", .characters = 420});
  pg.track_sts("agent-123", "customer-456", "sts-service-call",
               {.provider = "Google",
                .model = "gemini-3.1-flash-live-preview",
                .tier = "default",
                .tokens = {.text_input = 150, .audio_input = 2000, .text_output = 400, .audio_output = 2000}});
  const auto events = t.events();
  REQUIRE(events.size() == 3);
  const EventRecord& stt = only(events, UsageKind::kStt);
  CHECK(stt.audio_us == 27'000'000);      // 0.45 min
  CHECK(stt.cost_nanos == 3'465'000);     // x $0.0077/min (nova-3 pay-as-you-go)
  CHECK(stt.indicator == "stt-service-call");
  CHECK(stt.session_id.rfind("auto-", 0) == 0);  // standalone: the customer's implicit session
  const EventRecord& tts = only(events, UsageKind::kTts);
  CHECK(tts.cost_nanos == 42'000'000);    // 420 x $0.10 per 1K characters
  CHECK(tts.model == "eleven_v3");        // the catalog's name
  const EventRecord& sts = only(events, UsageKind::kSts);
  CHECK(sts.input_tokens == 2150);
  CHECK(sts.output_tokens == 2400);
  CHECK(sts.audio_input_tokens == 2000);
  CHECK(sts.audio_output_tokens == 2000);
  CHECK(sts.cost_nanos == 31'912'500);    // the data file's worked number: $0.0319125
  CHECK(t.errors.empty());
}

// send_usage prices a model as record() does: a dated snapshot the catalog prices apart
// (gpt-4o-2024-05-13 at $5/$15 per 1M) at its own price, counted under its canonical model.
TEST_CASE("tracking.send_usage_prices_dated_snapshots_as_called_like_record") {
  Tracker t;
  Paygent& pg = *t.pg;
  const LlmUsage dated{.provider = "openai", .model = "gpt-4o-2024-05-13", .prompt_tokens = 1000, .completion_tokens = 1000};
  LlmUsage plain = dated;
  plain.model = "gpt-4o";
  pg.send_usage("a", "acme-corp", "", dated);
  pg.send_usage("a", "acme-corp", "", plain);
  pg.send_usage("a", "acme-corp", "", dated);  // the thread's last key keeps the price too
  {
    Context ctx("acme-corp");
    pg.record("gpt-4o-2024-05-13", testing::tokens(1000, 1000));
  }
  auto report = pg.report("acme-corp");
  REQUIRE(report.ok());
  REQUIRE(report->by_model.size() == 1);  // one canonical model
  CHECK(report->spend == 3 * 20'000'000 + 12'500'000);
  const auto events = t.events();
  REQUIRE(events.size() == 4);
  CHECK(events[0].cost_nanos == 20'000'000);  // $0.005 + $0.015
  CHECK(events[1].cost_nanos == 12'500'000);  // $0.0025 + $0.010
  CHECK(events[2].cost_nanos == 20'000'000);
  CHECK(events[3].cost_nanos == 20'000'000);
  CHECK(t.errors.empty());
}

TEST_CASE("tracking.seed_002_cost_only_revenue_only_and_full") {
  Tracker t;
  Paygent& pg = *t.pg;
  const LlmUsage usage{.provider = "OpenAI", .model = "gpt-4o", .prompt_tokens = 1200, .completion_tokens = 400};
  pg.send_usage("internal-qa-agent", "acme-corp", "", usage);                 // cost-only
  pg.send_indicator("sales-agent", "acme-corp", "meeting-booked", {{"source", "crm_webhook"}});  // revenue-only
  pg.send_usage("support-agent", "acme-corp", "ticket-resolved", usage);     // full
  {  // the C++ form of paygent_agent_id / paygent_indicator on a provider call
    Context ctx("acme-corp", {.agent_id = "doc-summarizer", .indicator = "summary-done"});
    pg.record("gpt-4o", testing::tokens(100, 10), Provider::kOpenAI);
    pg.metered_call("gpt-4o", {.prompt_tokens = 100, .max_output_tokens = 10}, [] { return testing::tokens(100, 10); });
  }
  const auto events = t.events();
  REQUIRE(events.size() == 5);
  const Nanos llm_cost = 1200 * 2500 + 400 * 10000;  // $2.50 / $10 per 1M tokens
  std::map<std::string, std::vector<EventRecord>> by_agent;
  for (const EventRecord& e : events) by_agent[e.agent_id].push_back(e);
  const EventRecord& cost_only = by_agent["internal-qa-agent"].at(0);
  CHECK(cost_only.kind == UsageKind::kLlm);
  CHECK(cost_only.indicator.empty());
  CHECK(cost_only.cost_nanos == llm_cost);
  CHECK(cost_only.provider == "openai");  // "OpenAI", named as record()'s events name it
  const EventRecord& revenue_only = by_agent["sales-agent"].at(0);
  CHECK(revenue_only.kind == UsageKind::kBilling);
  CHECK(revenue_only.indicator == "meeting-booked");
  CHECK(revenue_only.cost_nanos == 0);
  CHECK(revenue_only.model.empty());
  CHECK(revenue_only.meta_tags_json == R"({"source":"crm_webhook"})");
  const EventRecord& full = by_agent["support-agent"].at(0);
  CHECK(full.kind == UsageKind::kLlm);
  CHECK(full.indicator == "ticket-resolved");
  CHECK(full.cost_nanos == llm_cost);
  REQUIRE(by_agent["doc-summarizer"].size() == 2);  // record() and metered_call(): full tracking
  for (const EventRecord& e : by_agent["doc-summarizer"]) {
    CHECK(e.kind == UsageKind::kLlm);
    CHECK(e.indicator == "summary-done");
    CHECK(e.user_id == "acme-corp");
    CHECK(e.cost_nanos == 100 * 2500 + 10 * 10000);
  }
}

TEST_CASE("tracking.video_and_external_costs") {
  Tracker t;
  Paygent& pg = *t.pg;
  pg.send_usage_video("studio", "acme-corp", "clip-made",
                      {.provider = "openai", .model = "sora-2", .resolution = "1280x720", .video = 8s});
  pg.send_external_cost("voice-agent", "acme-corp", "", {.amount_usd = "0.0132", .description = "Twilio call 3m",
                                                         .provider = "twilio"});
  pg.send_external_cost("voice-agent", "acme-corp", "", {.amount_nanos = 5, .description = "SMS"});
  const auto events = t.events();
  REQUIRE(events.size() == 3);
  const EventRecord& video = only(events, UsageKind::kVideo);
  CHECK(video.video_us == 8'000'000);
  CHECK(video.resolution == "1280x720");
  CHECK(video.cost_nanos == 800'000'000);  // 8 s x $0.10
  std::vector<EventRecord> external;
  for (const auto& e : events) {
    if (e.kind == UsageKind::kExternal) external.push_back(e);
  }
  REQUIRE(external.size() == 2);
  std::sort(external.begin(), external.end(), [](auto& a, auto& b) { return a.cost_nanos > b.cost_nanos; });
  CHECK(external[0].cost_nanos == 13'200'000);
  CHECK(external[0].description == "Twilio call 3m");
  CHECK(external[0].provider == "twilio");
  CHECK(external[1].cost_nanos == 5);
  CHECK(external[1].description == "SMS");
}

TEST_CASE("tracking.an_unknown_price_keeps_the_event_with_cost_unknown") {
  Tracker t;
  for (int i = 0; i < 2; ++i) {
    t.pg->track_stt("a", "c", "", {.provider = "nobody", .model = "whisper-9", .audio = 1min});
  }
  CHECK(t.pg->stats().unknown_models == 2);
  CHECK(std::count_if(t.errors.begin(), t.errors.end(),
                      [](const std::string& e) { return e.find("whisper-9") != e.npos; }) == 1);  // said once
  const auto events = t.events();
  REQUIRE(events.size() == 2);
  for (const EventRecord& e : events) {
    CHECK(e.cost_unknown);
    CHECK(e.cost_nanos == 0);
    CHECK(e.audio_us == 60'000'000);  // the quantity is kept
  }
}

TEST_CASE("tracking.record_of_an_unpriced_model_keeps_the_event_with_cost_unknown") {
  // record() of a model neither the plan nor the catalog prices: the event is kept, its cost is
  // unknown (not $0), as for an unpriced speech model; a priced call beside it is not marked.
  Tracker t;
  std::vector<bool> seen;
  {
    Context ctx("c");
    t.pg->record("mystery-model-9000", Usage{.input_tokens = 10, .output_tokens = 10});
    t.pg->record("gpt-4o", Usage{.input_tokens = 1000, .output_tokens = 0});
  }
  CHECK(t.pg->stats().unknown_models == 1);
  CHECK(t.said("mystery-model-9000"));
  const auto events = t.events();
  REQUIRE(events.size() == 2);
  for (const EventRecord& e : events) {
    CHECK(e.kind == UsageKind::kLlm);
    CHECK(e.cost_unknown == (e.model == "mystery-model-9000"));
    CHECK(e.cost_nanos == (e.cost_unknown ? 0 : 2'500'000));
  }
}

TEST_CASE("tracking.misuse_is_reported_and_not_sent") {
  Tracker t;
  Paygent& pg = *t.pg;
  pg.track_stt("a", "c", "", {.provider = "deepgram", .model = "nova-2", .audio = -1s});
  CHECK(t.said("track_stt: audio must not be negative"));
  pg.track_stt("a", "c", "", {.provider = "deepgram", .model = "nova-2",
                              .audio = MediaDuration::minutes(std::numeric_limits<double>::quiet_NaN())});
  CHECK(t.said("track_stt: audio must be a finite number"));
  pg.track_tts("a", "c", "", {.provider = "amazon-polly", .model = "neural", .characters = -5});
  CHECK(t.said("characters must not be negative"));
  pg.track_voice_stt("nope", {.provider = "deepgram", .model = "nova-2", .audio = 1min});
  CHECK(t.said("track_voice_stt: voice session \"nope\" is unknown"));
  pg.set_voice_indicator("nope", "done", 1min);
  CHECK(t.said("set_voice_indicator: voice session \"nope\" is unknown"));
  pg.send_indicator("a", "c", "");
  CHECK(t.said("send_indicator: indicator must not be empty"));
  pg.send_usage("a", "", "", {.model = "gpt-4o", .prompt_tokens = 1});
  CHECK(t.said("send_usage: customer_id must not be empty"));
  pg.send_external_cost("a", "c", "", {.amount_usd = "-1"});
  CHECK(t.said("send_external_cost:"));

  pg.initialize_voice_session("s1", "agent", "c");
  pg.set_voice_indicator("s1", "done", -1s);  // refused: the session stays open
  CHECK(t.said("set_voice_indicator: duration must not be negative"));
  pg.set_voice_indicator("s1", "done", 2min);   // bills and closes it
  pg.set_voice_indicator("s1", "done", 2min);   // a second one
  CHECK(t.said("already billed and closed"));
  pg.track_voice_tts("s1", {.provider = "amazon-polly", .model = "neural", .characters = 10});
  CHECK(t.said("track_voice_tts: voice session \"s1\" is closed"));
  pg.initialize_voice_session("s1", "agent", "c");
  CHECK(t.said("is closed (session ids are single-use)"));
  const auto events = t.events();
  REQUIRE(events.size() == 1);  // the one bill
  CHECK(events[0].kind == UsageKind::kBilling);
  CHECK(events[0].audio_us == 120'000'000);
}

TEST_CASE("tracking.a_voice_customer_is_gated_hard_on_speech_cost_alone") {
  Tracker t(catalog_plan(kNanosPerUsd));  // a $1 cap for the period
  Paygent& pg = *t.pg;
  pg.initialize_voice_session("call", "voice-agent", "caller");
  // 100 min of nova-2 ($0.58) counted against the plan: no LLM call at all.
  pg.track_voice_stt("call", {.provider = "deepgram", .model = "nova-2", .audio = 100min});
  const MediaEstimate next{.kind = MediaKind::kStt, .provider = "deepgram", .model = "nova-2", .duration = 40min};
  {
    Reservation held = pg.reserve_voice("call", next);  // $0.232: $0.812 committed
    CHECK(held.active());
    CHECK(held.reserved_cost() == 232'000'000);
    // A second turn's estimate would pass the cap while the first is held.
    CHECK_THROWS_AS((void)pg.reserve_voice("call", next), LimitExceeded);
    CHECK(t.hard_gates == 1);
    pg.settle_media(held, {.duration = 10min});  // the turn used 10 minutes: $0.058
    CHECK_FALSE(held.active());
  }
  auto report = pg.report("caller");
  REQUIRE(report.ok());
  CHECK(report->spend == 580'000'000 + 58'000'000);
  {  // released: gives the estimate back, meters nothing
    Reservation r = pg.reserve_voice("call", {.kind = MediaKind::kTts, .provider = "amazon-polly", .model = "neural",
                                             .characters = 10'000});
    CHECK(r.reserved_cost() == 160'000'000);
    pg.release(r);
  }
  CHECK(pg.report("caller")->reserved == 0);
  // TTS characters fill the cap: the next speech turn is refused before it runs.
  pg.track_voice_tts("call", {.provider = "amazon-polly", .model = "neural", .characters = 23'000});  // $0.368
  CHECK_THROWS_AS((void)pg.reserve_voice("call", {.kind = MediaKind::kStt, .provider = "deepgram", .model = "nova-2",
                                                  .duration = 1min}),
                  LimitExceeded);
  {  // reserve_media: the current Context's user
    Context ctx("caller");
    CHECK_THROWS_AS((void)pg.reserve_media(next), LimitExceeded);
  }
  const auto events = t.events();
  CHECK(events.size() == 3);  // stt, the settled stt (10 min), tts
  CHECK(std::count_if(events.begin(), events.end(), [](const EventRecord& e) {
          return e.kind == UsageKind::kStt && e.audio_us == 600'000'000 && e.cost_nanos == 58'000'000 &&
                 e.session_id == "call";
        }) == 1);
}

TEST_CASE("tracking.settle_media_on_a_token_reservation_releases_it") {
  Tracker t;
  Context ctx("u");
  Reservation r = t.pg->reserve("gpt-4o", {.prompt_tokens = 1000, .max_output_tokens = 100});
  CHECK(r.reserved_cost() > 0);
  t.pg->settle_media(r, {.duration = 1min});
  CHECK_FALSE(r.active());
  CHECK(t.said("settle_media: not a media reservation"));
  CHECK(t.pg->report("u")->reserved == 0);
  CHECK(t.events().empty());
}

TEST_CASE("tracking.customers_are_created_once_and_survive_a_restart") {
  Tracker t;
  auto first = t.pg->create_or_get_customer({.external_id = "customer-123", .name = "Ada", .email = "ada@x.io"});
  REQUIRE(first.ok());
  CHECK(first->created);
  CHECK(first->id == "customer-123");  // a customer is a guardrail user: the same id
  auto again = t.pg->create_or_get_customer({.external_id = "customer-123", .name = "Other"});
  REQUIRE(again.ok());
  CHECK_FALSE(again->created);
  CHECK(again->name == "Ada");
  CHECK(t.pg->create_or_get_customer({.external_id = ""}).status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(t.pg->flush().ok());
  t.pg.reset();
  t.open(catalog_plan());  // a restart on the same store
  auto after = t.pg->create_or_get_customer({.external_id = "customer-123", .name = "Third"});
  REQUIRE(after.ok());
  CHECK_FALSE(after->created);
  CHECK(after->name == "Ada");
  CHECK(after->email == "ada@x.io");
}

TEST_CASE("tracking.events_and_customers_reach_the_backend_once_with_the_v4_fields") {
  testing::FakeBackend backend;
  backend.set_wire_version(4);
  testing::FakeClock clock;
  testing::Client client(backend.port(), testing::round_plan(), clock);
  seed_000(*client.pg, "call-sid-1");
  REQUIRE(client.pg->flush().ok());
  REQUIRE(testing::eventually([&] { return backend.events() == 4 && backend.customers().size() == 1; }));
  client.pg.reset();  // shutdown delivers what is left; nothing twice
  CHECK(backend.events() == 4);
  CHECK(backend.duplicates() == 0);
  CHECK(backend.customers().at("customer-123") == "Customer Name");
  CHECK(backend.customer_requests() == 1);
  int stt = 0, billing = 0;
  for (const auto& [id, json] : backend.raw_events()) {
    if (json.find(R"("kind":"stt")") != json.npos) {
      ++stt;
      CHECK(json.find(R"("audio_us":1200000000)") != json.npos);
      CHECK(json.find(R"("tier":"pay-as-you-go")") != json.npos);
      CHECK(json.find(R"("cost_nanos":116000000)") != json.npos);
    }
    if (json.find(R"("kind":"billing")") != json.npos) {
      ++billing;
      CHECK(json.find(R"("audio_us":30000000)") != json.npos);
      CHECK(json.find(R"("indicator":"voice_call_completed")") != json.npos);
    }
    if (json.find(R"("kind":"tts")") != json.npos) CHECK(json.find(R"("characters":28000)") != json.npos);
  }
  CHECK(stt == 1);
  CHECK(billing == 1);
}

TEST_CASE("tracking.an_older_backend_without_customers_keeps_them_until_it_knows_them") {
  testing::FakeBackend backend;
  backend.set_wire_version(4);
  backend.set_customers_supported(false);
  testing::FakeClock clock;
  testing::Client client(backend.port(), testing::round_plan(), clock,
                         [](Options& o) { o.refresh_interval = absl::Milliseconds(200); });
  REQUIRE(client.pg->create_or_get_customer({.external_id = "c1", .name = "One"}).ok());
  REQUIRE(client.pg->create_or_get_customer({.external_id = "c2", .name = "Two"}).ok());
  REQUIRE(testing::eventually([&] { return backend.customer_requests() >= 2; }));  // asked, 404, asked again
  {
    std::lock_guard<std::mutex> lock(client.mu);
    CHECK(std::count_if(client.errors.begin(), client.errors.end(), [](const std::string& e) {
            return e.find("customers/create-or-get") != e.npos;
          }) == 1);  // said once
  }
  CHECK(backend.customers().empty());
  backend.set_customers_supported(true);  // the upgrade
  REQUIRE(testing::eventually([&] { return backend.customers().size() == 2; }));
}

}  // namespace
}  // namespace paygent
