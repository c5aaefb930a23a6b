// Speech and video prices: the built-in data (meter/prices.json "media"), the look-up with its
// tier rules (meter/media_prices.cpp) and the exact costs (meter/media_cost.cpp).
#include "paygent/media_price.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "paygent/money.h"
#include "paygent/price_catalog.h"
#include "paygent/usage.h"
#include "simdjson.h"

namespace paygent {
namespace internal {
extern const std::string_view kEmbeddedPrices;  // meter/prices.json, as built into the library
}  // namespace internal

namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

std::string message_of(const absl::Status& s) { return std::string(s.message()); }

microseconds minutes_of(std::string_view decimal) {
  absl::StatusOr<microseconds> parsed = parse_minutes(decimal);
  REQUIRE_MESSAGE(parsed.ok(), message_of(parsed.status()));
  return *parsed;
}

const PriceCatalog& builtin() { return PriceCatalog::builtin(); }

TEST_CASE("meter.media_seed_000_voice_session_provider_cost") {
  // Seed 000's complete voice session, with the SDK's own constants: ServiceProvider.DEEPGRAM =
  // "Deepgram", DeepgramSTTModels.NOVA_2 = "Nova-2", ServiceProvider.AMAZON_POLLY = "Amazon Polly",
  // AmazonPollyTTSModels.NEURAL = "Amazon Polly Neural", plan "default".
  const MediaPrice* stt = builtin().find(MediaKind::kStt, "Deepgram", "Nova-2", "default");
  REQUIRE(stt != nullptr);
  CHECK(stt->provider == "deepgram");
  CHECK(stt->model == "nova-2");
  CHECK(stt->tier == "pay-as-you-go");
  CHECK(stt->picos_per_hour == 348'000'000'000);  // $0.0058 per minute
  // 20 minutes x $0.0058 = $0.116.
  const Nanos stt_cost = cost_of_duration(*stt, minutes(20));
  CHECK(stt_cost == 116'000'000);
  CHECK(cost_of_duration(*stt, minutes_of("20")) == stt_cost);

  const ModelPrice* llm = builtin().find("gpt-4o");
  REQUIRE(llm != nullptr);
  Usage usage;
  usage.input_tokens = 1000;
  usage.output_tokens = 500;
  const Nanos llm_cost = cost_of(usage, *llm);  // $0.0025 + $0.005
  CHECK(llm_cost == 7'500'000);

  const MediaPrice* tts = builtin().find(MediaKind::kTts, "Amazon Polly", "Amazon Polly Neural", "default");
  REQUIRE(tts != nullptr);
  CHECK(tts == builtin().find(MediaKind::kTts, "amazon-polly", "neural"));
  CHECK(tts->picos_per_character == 16'000'000);  // $16 per 1M characters
  // 28,000 characters x $16 / 1M = $0.448.
  const Nanos tts_cost = cost_of_characters(*tts, 28'000);
  CHECK(tts_cost == 448'000'000);

  CHECK(stt_cost + llm_cost + tts_cost == 571'500'000);  // the session's provider cost: $0.5715
}

TEST_CASE("meter.media_seed_001_standalone_provider_costs") {
  // track_stt: Deepgram nova-3, 0.45 minutes -> 0.45 x $0.0077 = $0.003465.
  const MediaPrice* stt = builtin().find(MediaKind::kStt, "Deepgram", "nova-3", "default");
  REQUIRE(stt != nullptr);
  CHECK(minutes_of("0.45") == seconds(27));
  CHECK(cost_of_duration(*stt, minutes_of("0.45")) == 3'465'000);

  // track_tts: Elevenlabs eleven-v3, 420 characters -> 420 x $0.10 / 1K = $0.042.
  const MediaPrice* tts = builtin().find(MediaKind::kTts, "Elevenlabs", "eleven-v3", "default");
  REQUIRE(tts != nullptr);
  CHECK(tts->model == "eleven_v3");
  CHECK(tts == builtin().find(MediaKind::kTts, "ElevenLabs", "eleven_v3"));
  CHECK(cost_of_characters(*tts, 420) == 42'000'000);

  // track_sts: Google gemini-3.1-flash-live-preview, input audio 2000 + text 150, output audio
  // 2000 + text 400 -> 2000 x $3 + 150 x $0.75 + 2000 x $12 + 400 x $4.50 per 1M = $0.0319125.
  const MediaPrice* sts = builtin().find(MediaKind::kSts, "Google", "gemini-3.1-flash-live-preview", "default");
  REQUIRE(sts != nullptr);
  ModalityTokens tokens;
  tokens.audio_input = 2000;
  tokens.text_input = 150;
  tokens.audio_output = 2000;
  tokens.text_output = 400;
  CHECK(cost_of_modality_tokens(*sts, tokens) == 31'912'500);
}

TEST_CASE("meter.media_realtime_cached_tokens") {
  // gpt-realtime: $4 / $0.40 cached / $16 text, $32 / $0.40 cached / $64 audio per 1M tokens.
  const MediaPrice* p = builtin().find(MediaKind::kSts, "OpenAI", "gpt-realtime-2025-08-28");
  REQUIRE(p != nullptr);
  CHECK(p->model == "gpt-realtime");
  ModalityTokens t;
  t.text_input = 1000;
  t.cached_text_input = 600;  // of the 1000
  t.audio_input = 500;
  t.cached_audio_input = 100;  // of the 500
  t.text_output = 50;
  t.audio_output = 200;
  // 400 x 4e6 + 600 x 4e5 + 400 x 32e6 + 100 x 4e5 + 50 x 16e6 + 200 x 64e6 pico-USD.
  CHECK(cost_of_modality_tokens(*p, t) == (1'600'000'000 + 240'000'000 + 12'800'000'000 + 40'000'000 +
                                           800'000'000 + 12'800'000'000) / 1000);
  // Gemini publishes no cached rate: cached input costs what uncached input costs.
  const MediaPrice* live = builtin().find(MediaKind::kSts, "google", "gemini-2.5-flash-native-audio-preview-12-2025");
  REQUIRE(live != nullptr);
  CHECK(live->tokens.cached_audio_input == live->tokens.audio_input);
  CHECK(live->tokens.cached_text_input == live->tokens.text_input);
}

TEST_CASE("meter.media_tier_selection") {
  const PriceCatalog& c = builtin();
  const MediaPrice* payg = c.find(MediaKind::kStt, "deepgram", "nova-2", "pay-as-you-go");
  const MediaPrice* growth = c.find(MediaKind::kStt, "deepgram", "nova-2", "growth");
  const MediaPrice* batch = c.find(MediaKind::kStt, "deepgram", "nova-2", "pre-recorded");
  REQUIRE(payg != nullptr);
  REQUIRE(growth != nullptr);
  REQUIRE(batch != nullptr);
  CHECK(growth->tier == "growth");
  CHECK(growth->picos_per_hour == 282'000'000'000);  // $0.0047 per minute
  CHECK(batch->picos_per_hour == 258'000'000'000);   // $0.0043 per minute
  CHECK(cost_of_duration(*growth, minutes(20)) == 94'000'000);

  // "default", "" and any case of either select the default tier.
  for (const std::string_view tier : {"default", "", "Default", "DEFAULT"}) {
    INFO("tier ", tier);
    CHECK(c.find(MediaKind::kStt, "deepgram", "nova-2", tier) == payg);
  }
  CHECK(c.find(MediaKind::kStt, "deepgram", "nova-2") == payg);
  // Tier names compare like model names.
  CHECK(c.find(MediaKind::kStt, "deepgram", "nova-2", "Growth") == growth);
  CHECK(c.find(MediaKind::kStt, "deepgram", "nova-2", "Pay As You Go") == payg);
  CHECK(c.find(MediaKind::kStt, "deepgram", "nova-2", "pre_recorded") == batch);
  // A tier the model does not have: the default tier, which the price names.
  const MediaPrice* fallback = c.find(MediaKind::kStt, "deepgram", "nova-2", "enterprise");
  CHECK(fallback == payg);
  CHECK(fallback->tier != std::string_view("enterprise"));
  // A model with one tier: every tier name gives it.
  const MediaPrice* whisper = c.find(MediaKind::kStt, "openai", "whisper-1", "default");
  REQUIRE(whisper != nullptr);
  CHECK(whisper->tier == "list");
  CHECK(c.find(MediaKind::kStt, "openai", "whisper-1", "growth") == whisper);

  // Azure publishes per hour: real-time by default, batch on request.
  const MediaPrice* azure = c.find(MediaKind::kStt, "Microsoft Azure Speech Service", "Azure Speech Standard");
  REQUIRE(azure != nullptr);
  CHECK(azure->tier == "real-time");
  CHECK(azure->picos_per_hour == 1'000'000'000'000);
  CHECK(c.find(MediaKind::kStt, "azure", "standard", "batch")->picos_per_hour == 180'000'000'000);
  // Tiers of a TTS model too.
  CHECK(c.find(MediaKind::kTts, "deepgram", "aura-2", "growth")->picos_per_character == 27'000'000);
  CHECK(c.find(MediaKind::kTts, "deepgram", "aura-2")->picos_per_character == 30'000'000);
}

TEST_CASE("meter.media_unknown_is_nullptr_never_zero") {
  const PriceCatalog& c = builtin();
  CHECK(c.find(MediaKind::kStt, "Speechmatics", "enhanced") == nullptr);        // unknown provider
  CHECK(c.find(MediaKind::kStt, "Deepgram", "nova-9") == nullptr);              // unknown model
  CHECK(c.find(MediaKind::kStt, "", "nova-2") == nullptr);                      // no provider
  CHECK(c.find(MediaKind::kStt, "deepgram", "") == nullptr);                    // no model
  CHECK(c.find(MediaKind::kStt, "openai", "nova-2") == nullptr);                // another provider's model
  CHECK(c.find(MediaKind::kTts, "deepgram", "nova-2") == nullptr);              // another kind's model
  CHECK(c.find(MediaKind::kStt, "amazon-polly", "neural") == nullptr);
  CHECK(c.find(MediaKind::kSts, "openai", "gpt-4o") == nullptr);                // an LLM
  CHECK(c.find("nova-2") == nullptr);                                           // the LLM table is apart
  CHECK(c.find(MediaKind::kStt, "deepgram", std::string(300, 'n')) == nullptr);  // too long to be a name
  CHECK(c.find(MediaKind::kStt, std::string(300, 'd'), "nova-2") == nullptr);
  CHECK(c.find(MediaKind::kStt, "deepgram", "nova-2-2024-01-01") == c.find(MediaKind::kStt, "deepgram", "nova-2"));
  // A catalog without a media section, and an empty one, know no media prices.
  CHECK(PriceCatalog().find(MediaKind::kStt, "deepgram", "nova-2") == nullptr);
  CHECK(PriceCatalog().media_size() == 0);
  auto llm_only = PriceCatalog::parse(
      R"({"as_of":"2026-01-31","unit":"USD per 1M tokens","sources":{"acme":"https://acme.example/p"},)"
      R"("models":{"m":{"provider":"acme","input":"1","output":"1"}}})");
  REQUIRE(llm_only.ok());
  CHECK(llm_only->find(MediaKind::kStt, "deepgram", "nova-2") == nullptr);
  CHECK(llm_only->find("m") != nullptr);
}

TEST_CASE("meter.media_names_match_whatever_their_case_and_separators") {
  const PriceCatalog& c = builtin();
  const MediaPrice* nova = c.find(MediaKind::kStt, "deepgram", "nova-2");
  REQUIRE(nova != nullptr);
  for (const std::string_view name : {"Nova-2", "NOVA-2", "nova_2", "nova 2", "nova-2-phonecall"}) {
    INFO("model ", name);
    CHECK(c.find(MediaKind::kStt, "DEEPGRAM", name) == nova);
  }
  CHECK(c.find(MediaKind::kStt, "deepgram", "nova--2") == nullptr);
  CHECK(c.find(MediaKind::kTts, "AWS Polly", "Neural") == c.find(MediaKind::kTts, "amazon_polly", "neural"));
  CHECK(c.find(MediaKind::kStt, "Deepgram", "Nova-3 (Monolingual)") == c.find(MediaKind::kStt, "deepgram", "nova-3"));
  CHECK(c.find(MediaKind::kStt, "Deepgram", "Nova-3 (Multilingual)")->picos_per_hour == 552'000'000'000);
  CHECK(c.find(MediaKind::kTts, "Microsoft Azure Speech Service", "Azure TTS Standard")->picos_per_character ==
        15'000'000);
}

TEST_CASE("meter.media_video_per_second_and_resolution") {
  const PriceCatalog& c = builtin();
  // Sora 2 Pro is priced per resolution: 720p $0.30/s, 1024p $0.50/s.
  const MediaPrice* hd = c.find(MediaKind::kVideo, "openai", "sora-2-pro", "default", "1280x720");
  const MediaPrice* tall = c.find(MediaKind::kVideo, "openai", "sora-2-pro", "default", "1024X1792");
  REQUIRE(hd != nullptr);
  REQUIRE(tall != nullptr);
  CHECK(hd->resolution == "1280x720");
  CHECK(hd->picos_per_hour == 1'080'000'000'000'000);  // $0.30 per second
  CHECK(cost_of_duration(*hd, seconds(8)) == 2'400'000'000);     // $2.40
  CHECK(cost_of_duration(*tall, seconds(12)) == 6'000'000'000);  // $6.00
  // Where the price depends on the resolution, none or an unknown one is unknown.
  CHECK(c.find(MediaKind::kVideo, "openai", "sora-2-pro") == nullptr);
  CHECK(c.find(MediaKind::kVideo, "openai", "sora-2-pro", "default", "640x480") == nullptr);
  // A model with one price takes any resolution, or none.
  const MediaPrice* veo3 = c.find(MediaKind::kVideo, "Google", "veo-3");
  REQUIRE(veo3 != nullptr);
  CHECK(c.find(MediaKind::kVideo, "Google", "veo-3", "default", "1080p") == veo3);
  CHECK(veo3->resolution.empty());
  CHECK(cost_of_duration(*veo3, milliseconds(4500)) == 1'800'000'000);  // 4.5 s x $0.40
  // Veo 3.1: 720p and 1080p at $0.40/s, 4k at $0.60/s.
  CHECK(c.find(MediaKind::kVideo, "google", "veo-3.1", "", "4K")->picos_per_hour == 2'160'000'000'000'000);
  // Resolution is ignored for the other kinds.
  CHECK(c.find(MediaKind::kStt, "deepgram", "nova-2", "", "1080p") == c.find(MediaKind::kStt, "deepgram", "nova-2"));
}

TEST_CASE("meter.media_builtin_prices_are_complete_sourced_and_dated") {
  const PriceCatalog& c = builtin();
  CHECK(c.media_size() >= 40);
  // The models issue 10 names, by kind.
  struct Want {
    MediaKind kind;
    const char* provider;
    const char* model;
    const char* resolution;
  };
  const Want wanted[] = {
      {MediaKind::kStt, "deepgram", "nova-2", ""},        {MediaKind::kStt, "deepgram", "nova-3", ""},
      {MediaKind::kStt, "openai", "whisper-1", ""},       {MediaKind::kStt, "openai", "gpt-4o-transcribe", ""},
      {MediaKind::kTts, "amazon-polly", "standard", ""},  {MediaKind::kTts, "amazon-polly", "neural", ""},
      {MediaKind::kTts, "elevenlabs", "eleven_v3", ""},   {MediaKind::kTts, "azure", "neural", ""},
      {MediaKind::kTts, "openai", "tts-1", ""},           {MediaKind::kTts, "openai", "tts-1-hd", ""},
      {MediaKind::kSts, "openai", "gpt-realtime", ""},    {MediaKind::kSts, "google", "gemini-3.1-flash-live-preview", ""},
      {MediaKind::kVideo, "openai", "sora-2", "1280x720"}, {MediaKind::kVideo, "google", "veo-3.1", "720p"},
  };
  for (const Want& w : wanted) {
    INFO(media_kind_name(w.kind), " ", w.provider, " ", w.model);
    CHECK(c.find(w.kind, w.provider, w.model, "default", w.resolution) != nullptr);
  }

  // Every entry of the data file, in every tier (and resolution): found under its own names,
  // with a positive rate of its kind only, an https source and a date.
  simdjson::dom::parser parser;
  simdjson::dom::object media;
  REQUIRE(parser.parse(std::string(internal::kEmbeddedPrices))["media"].get_object().get(media) == simdjson::SUCCESS);
  std::size_t models = 0;
  std::size_t prices = 0;
  for (const MediaKind kind : {MediaKind::kStt, MediaKind::kTts, MediaKind::kSts, MediaKind::kVideo}) {
    simdjson::dom::object by_provider;
    REQUIRE(media[media_kind_name(kind)].get_object().get(by_provider) == simdjson::SUCCESS);
    for (auto [provider, entries] : by_provider) {
      for (auto [model, entry] : entries.get_object()) {
        ++models;
        for (auto [tier, value] : entry["tiers"].get_object()) {
          std::vector<std::string_view> resolutions{""};
          if (kind == MediaKind::kVideo && value.is_object()) {
            resolutions.clear();
            for (auto [r, ignored] : value.get_object()) resolutions.push_back(r);
          }
          for (const std::string_view r : resolutions) {
            INFO(media_kind_name(kind), " ", provider, " ", model, " ", tier, " ", r);
            const MediaPrice* p = c.find(kind, provider, model, tier, r);
            REQUIRE(p != nullptr);
            ++prices;
            CHECK(p->kind == kind);
            CHECK(p->tier == tier);
            CHECK(p->resolution == r);
            CHECK(p->source.substr(0, 8) == "https://");
            CHECK(p->as_of.size() == 10);
            const bool per_hour = kind == MediaKind::kStt || kind == MediaKind::kVideo;
            CHECK((p->picos_per_hour > 0) == per_hour);
            CHECK((p->picos_per_character > 0) == (kind == MediaKind::kTts));
            CHECK((p->tokens.audio_input > 0) == (kind == MediaKind::kSts));
            if (kind == MediaKind::kSts) {
              CHECK(p->tokens.audio_output >= p->tokens.audio_input);
              CHECK(p->tokens.cached_audio_input <= p->tokens.audio_input);
              CHECK(p->tokens.cached_text_input <= p->tokens.text_input);
            }
          }
        }
      }
    }
  }
  CHECK(models == c.media_size());
  CHECK(prices >= 60);
}

TEST_CASE("meter.media_costs_are_exact_at_awkward_values") {
  MediaPrice hourly;  // Azure: $1.00 per hour, which is no whole number of pico-USD per minute
  hourly.kind = MediaKind::kStt;
  hourly.picos_per_hour = 1'000'000'000'000;
  CHECK(cost_of_duration(hourly, minutes(1)) == 16'666'667);  // 16,666,666.67 rounds up
  CHECK(cost_of_duration(hourly, minutes(3)) == 50'000'000);  // summed exactly, not 3 x rounded
  CHECK(cost_of_duration(hourly, microseconds(1)) == 0);  // 0.2778 nano-USD
  CHECK(cost_of_duration(hourly, microseconds(2)) == 1);  // 0.5556
  CHECK(cost_of_duration(hourly, microseconds(1'801)) == 500);  // 500.2778
  MediaPrice half = hourly;
  half.picos_per_hour = 1'800'000'000'000;  // $1.80 per hour: 1 us is exactly 0.5 nano-USD
  CHECK(cost_of_duration(half, microseconds(1)) == 1);  // half rounds up
  CHECK(cost_of_duration(half, microseconds(3)) == 2);  // 1.5 -> 2
  half.picos_per_hour = 1'799'999'999'999;
  CHECK(cost_of_duration(half, microseconds(1)) == 0);  // just under half
  CHECK(cost_of_duration(hourly, microseconds(0)) == 0);
  CHECK(cost_of_duration(hourly, microseconds(-5'000'000)) == 0);  // negative counts as zero
  CHECK(cost_of_duration(hourly, std::chrono::hours(1)) == 1'000'000'000);

  // Either side of the 64-bit fast path: the same exact answer as 128-bit arithmetic.
  MediaPrice dear;
  dear.kind = MediaKind::kVideo;
  dear.picos_per_hour = 1'800'000'000'000'000;  // $0.50 per second
  const std::int64_t edge = static_cast<std::int64_t>((UINT64_MAX - 1'800'000'000'000) / 1'800'000'000'000'000);
  for (const std::int64_t us : {edge - 1, edge, edge + 1, edge + 7, std::int64_t{1'000'000'007}}) {
    INFO("us ", us);
    const auto exact = (static_cast<unsigned __int128>(us) * 1'800'000'000'000'000 + 1'800'000'000'000) /
                       3'600'000'000'000;
    CHECK(cost_of_duration(dear, microseconds(us)) == static_cast<Nanos>(exact));
  }
  // Random rates and durations of every magnitude, either side of the shifted path's 64-bit edge:
  // the same answer as one 128-bit division.
  std::mt19937_64 rng(2026);
  for (int i = 0; i < 200'000; ++i) {
    const int rate_bits = static_cast<int>(rng() % 63), us_bits = static_cast<int>(rng() % 63);
    const std::int64_t rate = static_cast<std::int64_t>(rng() >> (64 - rate_bits - 1) >> 1);
    const std::int64_t us = static_cast<std::int64_t>(rng() >> (64 - us_bits - 1) >> 1);
    dear.picos_per_hour = rate;
    const auto exact = (static_cast<unsigned __int128>(us) * static_cast<std::uint64_t>(rate) + 1'800'000'000'000) /
                       3'600'000'000'000;
    const Nanos want = exact > INT64_MAX ? INT64_MAX : static_cast<Nanos>(exact);
    if (cost_of_duration(dear, microseconds(us)) != want) {
      FAIL_CHECK("rate ", rate, " us ", us, ": ", cost_of_duration(dear, microseconds(us)), " != ", want);
      break;
    }
  }
  // Beyond int64 nano-USD the cost saturates instead of wrapping.
  dear.picos_per_hour = INT64_MAX;
  CHECK(cost_of_duration(dear, microseconds(INT64_MAX)) == INT64_MAX);

  MediaPrice chars;
  chars.kind = MediaKind::kTts;
  chars.picos_per_character = 13'500'000;  // Aura growth: $0.0135 per 1K characters
  CHECK(cost_of_characters(chars, 1) == 13'500);
  CHECK(cost_of_characters(chars, 28'001) == 378'013'500);
  chars.picos_per_character = 500;
  CHECK(cost_of_characters(chars, 1) == 1);  // 0.5 nano-USD rounds up
  chars.picos_per_character = 499;
  CHECK(cost_of_characters(chars, 1) == 0);
  CHECK(cost_of_characters(chars, -3) == 0);
  chars.picos_per_character = INT64_MAX;
  CHECK(cost_of_characters(chars, INT64_MAX) == INT64_MAX);

  // Speech-to-speech: the modalities are summed first, then rounded once.
  MediaPrice sts;
  sts.kind = MediaKind::kSts;
  sts.tokens.text_input = 400;
  sts.tokens.audio_output = 400;
  ModalityTokens one;
  one.text_input = 1;
  one.audio_output = 1;
  CHECK(cost_of_modality_tokens(sts, one) == 1);  // 800 pico, not 0 + 0
  one.audio_output = 0;
  CHECK(cost_of_modality_tokens(sts, one) == 0);  // 400 pico
  // More cached than input: all cached, none uncached (never negative).
  sts.tokens.cached_text_input = 100;
  ModalityTokens odd;
  odd.text_input = 10;
  odd.cached_text_input = 50;
  CHECK(cost_of_modality_tokens(sts, odd) == 5);  // 50 x 100 pico
  ModalityTokens huge;
  huge.text_input = huge.audio_input = huge.text_output = huge.audio_output = INT64_MAX;
  sts.tokens = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};
  CHECK(cost_of_modality_tokens(sts, huge) == INT64_MAX);

  // A price of another kind has no rate for the quantity: zero by construction (the kind's own
  // function is the one to call).
  CHECK(cost_of_duration(chars, minutes(5)) == 0);
}

TEST_CASE("meter.media_parse_minutes_and_seconds_exactly") {
  CHECK(minutes_of("20") == minutes(20));
  CHECK(minutes_of("0.5") == seconds(30));
  CHECK(minutes_of("5.0") == minutes(5));
  CHECK(minutes_of("2.5e-1") == seconds(15));
  CHECK(minutes_of("0.00000005") == microseconds(3));  // the finest minutes that are whole microseconds
  CHECK(minutes_of("0.0000001") == microseconds(6));
  CHECK(minutes_of("0") == microseconds(0));
  for (const char* bad : {"0.00000001", "0.000000001", "1e-9"}) {
    INFO(bad);
    auto parsed = parse_minutes(bad);
    REQUIRE(absl::IsInvalidArgument(parsed.status()));
    CHECK(message_of(parsed.status()).find("more precision than 1 microsecond") != std::string::npos);
  }
  CHECK(message_of(parse_minutes("-1").status()) == "\"-1\": must not be negative");
  CHECK(message_of(parse_minutes("ten").status()) == "\"ten\": has a character 't' at position 0 (expected a decimal number such as -12.5)");
  CHECK(message_of(parse_minutes("1e30").status()) == "\"1e30\": is too large");
  CHECK(message_of(parse_minutes("153722867280").status()) == "\"153722867280\": is too large");

  CHECK(*parse_seconds("4.5") == milliseconds(4500));
  CHECK(*parse_seconds("0.000001") == microseconds(1));
  CHECK(absl::IsInvalidArgument(parse_seconds("0.0000001").status()));
  CHECK(absl::IsInvalidArgument(parse_seconds("").status()));
}

}  // namespace
}  // namespace paygent
