// Parsing the "media" section of a price catalog (meter/media_prices.cpp): what it accepts, and
// the error for every kind of bad entry, naming the entry and the field.
#include <doctest/doctest.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "paygent/media_price.h"
#include "paygent/price_catalog.h"

namespace paygent {
namespace {

std::string message_of(const absl::Status& s) { return std::string(s.message()); }

// A valid LLM part; the media section follows.
const std::string kHead =
    R"({"as_of":"2026-01-31","unit":"USD per 1M tokens","sources":{"acme":"https://acme.example/p"},)"
    R"("models":{"m":{"provider":"acme","input":"1","output":"1"}},"media":)";

// A media section with one entry of `kind` for provider acme, model m1, from its members.
std::string one_entry(const std::string& kind, const std::string& members) {
  return kHead + R"({"providers":{"acme":["Acme Corp"]},")" + kind + R"(":{"acme":{"m1":{)" + members + "}}}}}";
}

const std::string kDated = R"("source":"https://acme.example/p","as_of":"2026-01-31")";

TEST_CASE("meter.media_parse_accepts_every_kind") {
  const std::string json = kHead + R"({"note":"test","providers":{"acme":["Acme Corp","ACME Speech"]},)"
      R"("stt":{"acme":{"m1":{"aliases":["Model One"],"unit":"USD per hour","tiers":{"a":"1","b":"0.5"},)"
      R"("default_tier":"b",)" + kDated + R"(}}},)"
      R"("tts":{"acme":{"m1":{"unit":"USD per character","tiers":{"list":"0.000016"},)" + kDated + R"(}}},)"
      R"("sts":{"acme":{"m1":{"unit":"USD per 1K tokens","tiers":{"list":{"text_input":"0.004","audio_input":"0.032",)"
      R"("text_output":"0.016","audio_output":"0.064","cached_audio_input":"0.0004"}},)" + kDated + R"(}}},)"
      R"("video":{"acme":{"m1":{"unit":"USD per minute","tiers":{"list":{"720p":"6","1080p":"12"}},)" + kDated +
      R"(,"note":"n"}}}})" + "}";
  auto parsed = PriceCatalog::parse(json);
  REQUIRE_MESSAGE(parsed.ok(), message_of(parsed.status()));
  CHECK(parsed->media_size() == 4);
  const MediaPrice* stt = parsed->find(MediaKind::kStt, "ACME Corp", "model_one");
  REQUIRE(stt != nullptr);
  CHECK(stt->tier == "b");
  CHECK(stt->picos_per_hour == 500'000'000'000);
  CHECK(stt->source == "https://acme.example/p");
  CHECK(stt->as_of == "2026-01-31");
  CHECK(parsed->find(MediaKind::kStt, "acme", "m1", "a")->picos_per_hour == 1'000'000'000'000);
  CHECK(parsed->find(MediaKind::kTts, "acme", "m1")->picos_per_character == 16'000'000);
  const MediaPrice* sts = parsed->find(MediaKind::kSts, "acme", "m1");
  REQUIRE(sts != nullptr);
  CHECK(sts->tokens.audio_input == 32'000'000);
  CHECK(sts->tokens.cached_audio_input == 400'000);
  CHECK(sts->tokens.cached_text_input == sts->tokens.text_input);  // absent: the uncached rate
  CHECK(parsed->find(MediaKind::kVideo, "acme", "m1", "", "1080P")->picos_per_hour == 720'000'000'000'000);
  CHECK(parsed->find(MediaKind::kVideo, "acme", "m1", "", "720p")->picos_per_hour == 360'000'000'000'000);

  // The prices stay where they are when the catalog moves.
  const MediaPrice* before = parsed->find(MediaKind::kTts, "acme", "m1");
  PriceCatalog moved = std::move(*parsed);
  CHECK(moved.find(MediaKind::kTts, "acme", "m1") == before);
  CHECK(before->model == "m1");
}

TEST_CASE("meter.media_parse_errors_name_the_entry_and_field") {
  const std::string entry = R"(["acme"]["m1"])";
  struct Case {
    std::string json;
    std::string message;
  };
  const std::string stt_ok_tiers = R"("unit":"USD per minute","tiers":{"list":"0.006"},)";
  const Case cases[] = {
      {kHead + "[]}", "media: must be an object"},
      {kHead + "{}}", "media.providers: must be an object of provider ids and their other names"},
      {kHead + R"({"providers":{},"voice":{}}})", "media.voice: unknown field"},
      {kHead + R"({"providers":{},"note":5}})", "media.note: must be a string"},
      {kHead + R"({"providers":{"acme":"Acme"}}})", "media.providers[\"acme\"]: must be an array of the provider's other names"},
      {kHead + R"({"providers":{"acme":[7]}}})", "media.providers[\"acme\"]: must be an array of the provider's other names"},
      {kHead + R"({"providers":{"acme":[],"beta":["ACME"]}}})",
       "media.providers[\"beta\"]: \"acme\" already names provider \"acme\""},
      {kHead + R"({"providers":{"acme":[]},"stt":[]}})", "media.stt: must be an object of providers"},
      {kHead + R"({"providers":{"acme":[]},"stt":{"other":{}}}})",
       "media.stt[\"other\"]: \"other\" is not a provider id of media.providers"},
      {kHead + R"({"providers":{"acme":["Acme Corp"]},"tts":{"Acme Corp":{}}}})",
       "media.tts[\"Acme Corp\"]: \"Acme Corp\" is not a provider id of media.providers"},
      {kHead + R"({"providers":{"acme":[]},"stt":{"acme":[]}}})", "media.stt[\"acme\"]: must be an object"},
      {kHead + R"({"providers":{"acme":[]},"stt":{"acme":{"m1":5}}}})", "media.stt" + entry + ": must be an object"},
      {one_entry("stt", stt_ok_tiers + kDated + R"(,"price":"1")"), "media.stt" + entry + ".price: unknown field"},
      {one_entry("stt", R"("tiers":{"list":"0.006"},)" + kDated),
       "media.stt" + entry + ".unit: must be \"USD per second\", \"USD per minute\" or \"USD per hour\""},
      {one_entry("tts", stt_ok_tiers + kDated),
       "media.tts" + entry +
           ".unit: must be \"USD per character\", \"USD per 1K characters\" or \"USD per 1M characters\""},
      {one_entry("sts", stt_ok_tiers + kDated),
       "media.sts" + entry + ".unit: must be \"USD per 1M tokens\" or \"USD per 1K tokens\""},
      {one_entry("stt", stt_ok_tiers + R"("source":"http://acme.example","as_of":"2026-01-31")"),
       "media.stt" + entry + ".source: must be an https:// URL"},
      {one_entry("stt", stt_ok_tiers + R"("as_of":"2026-01-31")"), "media.stt" + entry + ".source: must be an https:// URL"},
      {one_entry("stt", stt_ok_tiers + R"("source":"https://acme.example","as_of":"Jan 2026")"),
       "media.stt" + entry + ".as_of: must be a date string \"YYYY-MM-DD\""},
      {one_entry("stt", stt_ok_tiers + kDated + R"(,"note":1)"), "media.stt" + entry + ".note: must be a string"},
      {one_entry("stt", R"("unit":"USD per minute",)" + kDated),
       "media.stt" + entry + ".tiers: must be an object of the price in each pricing tier"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{},)" + kDated), "media.stt" + entry + ".tiers: must name at least one tier"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"list":0.006},)" + kDated),
       "media.stt" + entry + ".tiers[\"list\"]: must be a decimal string such as \"0.0058\""},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"list":"cheap"},)" + kDated),
       "media.stt" + entry + ".tiers[\"list\"]: \"cheap\": has a character 'c' at position 0 (expected a decimal number such as -12.5)"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"list":"-0.006"},)" + kDated),
       "media.stt" + entry + ".tiers[\"list\"]: \"-0.006\": must not be negative"},
      {one_entry("stt", R"("unit":"USD per second","tiers":{"list":"0.0000000000001"},)" + kDated),
       "media.stt" + entry + ".tiers[\"list\"]: \"0.0000000000001\": has more precision than 1 pico-USD per second"},
      {one_entry("stt", R"("unit":"USD per second","tiers":{"list":"3000000"},)" + kDated),
       "media.stt" + entry + ".tiers[\"list\"]: \"3000000\": is too large"},
      {one_entry("tts", R"("unit":"USD per 1M characters","tiers":{"list":"0.0000001"},)" + kDated),
       "media.tts" + entry + ".tiers[\"list\"]: \"0.0000001\": has more precision than 1 pico-USD per character"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"default":"0.006"},)" + kDated),
       "media.stt" + entry + ".tiers[\"default\"]: \"default\" is not a tier name: it selects default_tier"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"Growth":"0.006","growth":"0.005"},"default_tier":"growth",)" + kDated),
       "media.stt" + entry + ".tiers[\"growth\"]: duplicate tier name"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"a":"0.006","b":"0.005"},)" + kDated),
       "media.stt" + entry + ".default_tier: is required when there are several tiers"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"a":"0.006","b":"0.005"},"default_tier":"c",)" + kDated),
       "media.stt" + entry + ".default_tier: \"c\" is not one of the tiers"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"a":"0.006"},"default_tier":1,)" + kDated),
       "media.stt" + entry + ".default_tier: must be a string"},
      {one_entry("stt", R"("unit":"USD per minute","tiers":{"list":{"720p":"1"}},)" + kDated),
       "media.stt" + entry + ".tiers[\"list\"]: must be a decimal string such as \"0.0058\""},
      {one_entry("sts", R"("unit":"USD per 1M tokens","tiers":{"list":"4"},)" + kDated),
       "media.sts" + entry +
           ".tiers[\"list\"]: must be an object of modality prices (text_input, audio_input, text_output, audio_output)"},
      {one_entry("sts", R"("unit":"USD per 1M tokens","tiers":{"list":{"text_input":"4","audio_input":"32","text_output":"16"}},)" + kDated),
       "media.sts" + entry + ".tiers[\"list\"].audio_output: is required"},
      {one_entry("sts", R"("unit":"USD per 1M tokens","tiers":{"list":{"text_input":"4","audio_input":"32","text_output":"16","audio_output":"64","image_input":"5"}},)" + kDated),
       "media.sts" + entry + ".tiers[\"list\"].image_input: unknown field"},
      {one_entry("sts", R"("unit":"USD per 1M tokens","tiers":{"list":{"text_input":"4","audio_input":"lots","text_output":"16","audio_output":"64"}},)" + kDated),
       "media.sts" + entry + ".tiers[\"list\"].audio_input: \"lots\": has a character 'l' at position 0 (expected a decimal number such as -12.5)"},
      {one_entry("video", R"("unit":"USD per second","tiers":{"list":{"720p":"x"}},)" + kDated),
       "media.video" + entry + ".tiers[\"list\"][\"720p\"]: \"x\": has a character 'x' at position 0 (expected a decimal number such as -12.5)"},
      {one_entry("video", R"("unit":"USD per second","tiers":{"list":{}},)" + kDated),
       "media.video" + entry + ".tiers[\"list\"]: must name at least one resolution"},
      {one_entry("video", R"("unit":"USD per second","tiers":{"list":{"720P":"0.1","720p":"0.2"}},)" + kDated),
       "media.video" + entry + ".tiers[\"list\"][\"720p\"]: duplicate resolution"},
      {one_entry("stt", stt_ok_tiers + kDated + R"(,"aliases":"one")"),
       "media.stt" + entry + ".aliases: must be an array of model names"},
      {one_entry("stt", stt_ok_tiers + kDated + R"(,"aliases":["M1"])"),
       "media.stt" + entry + ".aliases: \"M1\" is already a model name"},
      {kHead + R"({"providers":{"acme":[]},"stt":{"acme":{"m1":{)" + stt_ok_tiers + kDated + R"(},"M1":{)" +
           stt_ok_tiers + kDated + "}}}}}",
       "media.stt[\"acme\"][\"M1\"]: duplicate model name"},
  };
  for (const Case& c : cases) {
    INFO("json: ", c.json);
    auto parsed = PriceCatalog::parse(c.json);
    REQUIRE(absl::IsInvalidArgument(parsed.status()));
    CHECK(message_of(parsed.status()) == c.message);
  }
}

}  // namespace
}  // namespace paygent
