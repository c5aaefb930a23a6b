// The tracking HTTP API (server/tracking_api.cpp, docs/tracking.md "HTTP") on both storages: every
// endpoint in camelCase and snake_case, both auth headers, seed 000's voice flow priced from the
// catalog, Idempotency-Key, and every bad input refused with nothing stored; and once through the
// real paygentd over loopback.
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "paygent/media_price.h"
#include "paygent/price_catalog.h"
#include "server/api.h"
#include "server/json_body.h"
#include "server/json_writer.h"
#include "server/metrics.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server::test {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;

// Prices from the server's catalog, as the expected values of every case.
Nanos stt_cost(std::string_view provider, std::string_view model, std::chrono::microseconds d) {
  const MediaPrice* p = PriceCatalog::builtin().find(MediaKind::kStt, provider, model);
  REQUIRE(p != nullptr);
  return cost_of_duration(*p, d);
}
Nanos tts_cost(std::string_view provider, std::string_view model, std::int64_t characters) {
  const MediaPrice* p = PriceCatalog::builtin().find(MediaKind::kTts, provider, model);
  REQUIRE(p != nullptr);
  return cost_of_characters(*p, characters);
}
Nanos llm_cost(std::string_view model, Usage usage) {
  const ModelPrice* p = PriceCatalog::builtin().find(model);
  REQUIRE(p != nullptr);
  return cost_of(usage, *p);
}

// An Api over one backend's fresh storage, with a product, answering requests without a socket.
struct Tracking {
  std::unique_ptr<Storage> storage;
  Metrics metrics;
  std::unique_ptr<Api> api;
  std::string key;
  std::string product;

  explicit Tracking(StorageBackend& backend) : storage(backend.fresh()) {
    api = std::make_unique<Api>(*storage, metrics,
                                ApiOptions{.admin_token = std::string(kAdminToken), .clock = [] { return test_now(); }});
    const HttpResponse r = send("POST", "/api/v1/products", R"({"name":"acme"})", "bearer", std::string(kAdminToken));
    REQUIRE_MESSAGE(r.status == 201, r.body);
    key = paygent::testing::json_string_member(r.body, "api_key");
    product = paygent::testing::json_string_member(r.body, "product_id");
  }

  // `auth` "bearer" (Authorization: Bearer), "header" (paygent-api-key) or "" (none).
  HttpResponse send(std::string_view method, std::string_view target, std::string_view body,
                    std::string_view auth = "header", std::string credential = {},
                    std::string idempotency_key = {}) {
    if (credential.empty()) credential = key;
    HttpRequest request{.method = std::string(method),
                        .target = std::string(target),
                        .content_type = "application/json",
                        .authorization = auth == "bearer" ? "Bearer " + credential : std::string(),
                        .body = std::string(body),
                        .api_key = auth == "header" ? credential : std::string(),
                        .idempotency_key = std::move(idempotency_key)};
    return api->handle_request(request);
  }
  HttpResponse post(std::string_view target, std::string_view body, std::string idempotency_key = {}) {
    return send("POST", target, body, "header", {}, std::move(idempotency_key));
  }

  // Every event of the product: calls and cost, across users.
  Totals stored() {
    absl::StatusOr<GroupedTotals> rows = storage->report(
        product, ReportQuery{.from_ns = 0, .to_ns = std::numeric_limits<std::int64_t>::max(), .group_by = ReportGroup::kUser});
    REQUIRE_MESSAGE(rows.ok(), rows.status().ToString());
    Totals t;
    for (const auto& [user, row] : *rows) {
      t.calls += row.calls;
      t.cost_nanos += row.cost_nanos;
    }
    return t;
  }
  // The product's billing events (indicators): not provider calls, so not in stored().calls.
  std::int64_t billing_events() {
    absl::StatusOr<std::vector<ProfitRow>> rows =
        storage->profit_report(product, TimeRange{0, std::numeric_limits<std::int64_t>::max()}, ProfitGroup::kAgent);
    REQUIRE_MESSAGE(rows.ok(), rows.status().ToString());
    std::int64_t n = 0;
    for (const ProfitRow& row : *rows) n += row.billing_events;
    return n;
  }
  Totals of_session(std::string_view session) {
    absl::StatusOr<GroupedTotals> rows = storage->report(
        product,
        ReportQuery{.from_ns = 0, .to_ns = std::numeric_limits<std::int64_t>::max(), .group_by = ReportGroup::kSession});
    REQUIRE(rows.ok());
    auto it = rows->find(session);
    return it == rows->end() ? Totals{} : it->second;
  }
};

std::int64_t nanos_of(const HttpResponse& r) {
  simdjson::dom::parser parser;
  return int_at(parse_json(parser, r.body), "/calculatedCostNanos");
}

bool is_null_at(const HttpResponse& r, std::string_view pointer) {
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, r.body);
  simdjson::dom::element e;
  REQUIRE(root.at_pointer(pointer).get(e) == simdjson::SUCCESS);
  return e.is_null();
}

TEST_CASE("tracking: create-or-get customer, camelCase and snake_case, both auth headers") {
  for_each_backend([](StorageBackend& backend) {
    Tracking t(backend);
    HttpResponse r = t.send("POST", "/api/v1/customers/create-or-get",
                            R"({"externalId":"customer-123","name":"Customer Name","email":"a@b.c"})", "bearer");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body ==
          R"({"id":"customer-123","externalId":"customer-123","name":"Customer Name","email":"a@b.c","created":true})");
    // The same customer after, whatever the spelling and the header; its first name kept.
    r = t.send("POST", "/api/v1/customers/create-or-get", R"({"external_id":"customer-123","name":"Other"})", "header");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body ==
          R"({"id":"customer-123","externalId":"customer-123","name":"Customer Name","email":"a@b.c","created":false})");
    // A customer is a guardrail user.
    r = t.send("GET", "/api/v1/users/customer-123/usage", "", "header");
    CHECK_MESSAGE(r.status == 200, r.body);
    // No email: null.
    r = t.post("/api/v1/customers/create-or-get", R"({"externalId":"c2","name":"Two"})");
    CHECK(r.body == R"({"id":"c2","externalId":"c2","name":"Two","email":null,"created":true})");

    // Refusals name the field.
    r = t.post("/api/v1/customers/create-or-get", R"({"externalId":"c3","external_id":"c3","name":"x"})");
    CHECK(r.status == 400);
    CHECK(error_message(r) == "external_id: repeated (also given as \"externalId\")");
    r = t.post("/api/v1/customers/create-or-get", R"({"externalId":"c3","name":"x","phone":"1"})");
    CHECK(error_message(r) == "phone: unknown field");
    r = t.post("/api/v1/customers/create-or-get", R"({"name":"x"})");
    CHECK(error_message(r) == "externalId: missing");
    r = t.post("/api/v1/customers/create-or-get", R"({"externalId":7,"name":"x"})");
    CHECK(error_message(r) == "externalId: must be a string");
    // Auth: neither header, a wrong key.
    CHECK(t.send("POST", "/api/v1/customers/create-or-get", R"({"externalId":"c4","name":"x"})", "").status == 401);
    CHECK(t.send("POST", "/api/v1/customers/create-or-get", R"({"externalId":"c4","name":"x"})", "header", "pg_live_no")
              .status == 401);
  });
}

TEST_CASE("tracking: seed 000's voice session, priced from the catalog, closed by its indicator") {
  for_each_backend([](StorageBackend& backend) {
    Tracking t(backend);
    REQUIRE(t.post("/api/v1/customers/create-or-get", R"({"externalId":"customer-123","name":"Customer Name"})").status ==
            200);
    HttpResponse r = t.post("/api/v1/voice/session",
                            R"({"sessionId":"call-1","agentId":"voice-agent-id","customerId":"customer-123",)"
                            R"("metaTags":{"clinic":"dental"}})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const Nanos stt = stt_cost("deepgram", "nova-2", minutes(20));
    const Nanos llm = llm_cost("gpt-4o", Usage{.input_tokens = 1000, .output_tokens = 500});
    const Nanos tts = tts_cost("amazon-polly", "neural", 28'000);
    CHECK(stt > 0);
    CHECK(tts == 448'000'000);  // $16 per 1M characters x 28,000

    // The seed's own spellings: serviceProvider, audioDuration, character_count.
    r = t.post("/api/v1/voice/stt",
               R"({"sessionId":"call-1","serviceProvider":"Deepgram","model":"nova-2","plan":"default","audioDuration":20})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(nanos_of(r) == stt);
    r = t.post("/api/v1/voice/llm", R"({"session_id":"call-1","provider":"OpenAI","model":"gpt-4o","plan":"default",)"
                                    R"("prompt_tokens":1000,"completion_tokens":500})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(nanos_of(r) == llm);
    r = t.post("/api/v1/voice/tts", R"({"sessionId":"call-1","serviceProvider":"Amazon Polly","model":"neural",)"
                                    R"("plan":"default","character_count":28000})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(nanos_of(r) == tts);
    CHECK(r.body.find(R"("calculatedCost":0.448,)") != std::string::npos);

    // The session's events are the customer's, in the session: its spend in GET .../usage.
    CHECK(t.of_session("call-1").cost_nanos == stt + llm + tts);
    r = t.send("GET", "/api/v1/users/customer-123/usage", "", "bearer");
    REQUIRE(r.status == 200);
    simdjson::dom::parser parser;
    CHECK(int_at(parse_json(parser, r.body), "/spend_nanos") == stt + llm + tts);

    r = t.post("/api/v1/voice/indicator", R"({"sessionId":"call-1","indicator":"voice_call_completed","totalDuration":0.5})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find(R"("totalDurationUs":30000000)") != std::string::npos);
    const Totals closed = t.stored();
    CHECK(closed.calls == 3);  // three cost rows; the billing event is no provider call
    CHECK(t.billing_events() == 1);
    CHECK(closed.cost_nanos == stt + llm + tts);

    // Closed: nothing more is tracked into it, a second indicator is refused; nothing stored.
    r = t.post("/api/v1/voice/stt", R"({"sessionId":"call-1","provider":"deepgram","model":"nova-2","audioMinutes":1})");
    CHECK(r.status == 409);
    CHECK(error_code(r) == "session_closed");
    CHECK(error_message(r).find("sessionId: voice session \"call-1\" is closed") == 0);
    r = t.post("/api/v1/voice/indicator", R"({"sessionId":"call-1","indicator":"voice_call_completed","totalDuration":0.5})");
    CHECK(r.status == 409);
    r = t.post("/api/v1/voice/tts", R"({"sessionId":"nope","provider":"amazon-polly","model":"neural","characters":5})");
    CHECK(r.status == 404);
    CHECK(error_message(r) == "sessionId: no voice session \"nope\"");
    r = t.post("/api/v1/voice/indicator", R"({"sessionId":"nope","indicator":"x","totalDuration":1})");
    CHECK(r.status == 404);
    CHECK(t.stored() == closed);

    // Re-opening the same session id with other owners is a conflict; the same one is a retry.
    CHECK(t.post("/api/v1/voice/session", R"({"sessionId":"call-1","agentId":"other","customerId":"customer-123"})")
              .status == 409);
    CHECK(t.post("/api/v1/voice/session",
                 R"({"sessionId":"call-1","agentId":"voice-agent-id","customerId":"customer-123","metaTags":{"clinic":"dental"}})")
              .status == 200);
  });
}

TEST_CASE("tracking: /api/v2/usage full and cost-only, unknown price kept as unknown, exact minutes") {
  for_each_backend([](StorageBackend& backend) {
    Tracking t(backend);
    HttpResponse r = t.post("/api/v2/usage", R"({"agentId":"a1","customerId":"c1","indicator":"ticket-resolved",)"
                                             R"("rawUsage":{"provider":"OpenAI","model":"gpt-4o","inputTokens":1200,)"
                                             R"("outputTokens":400,"cachedTokens":200,"plan":"default"}})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const Nanos total = llm_cost("gpt-4o", Usage{.input_tokens = 1200, .output_tokens = 400, .cached_input_tokens = 200});
    const Nanos prompt = llm_cost("gpt-4o", Usage{.input_tokens = 1200, .cached_input_tokens = 200});
    CHECK(nanos_of(r) == total);
    const std::string breakdown = R"("breakdown":{"promptCost":)" + JsonWriter::usd_text(prompt) +
                                  R"(,"completionCost":)" + JsonWriter::usd_text(total - prompt) +
                                  R"(,"totalCost":)" + JsonWriter::usd_text(total) + "}";
    CHECK_MESSAGE(r.body.find(breakdown) != std::string::npos, r.body);

    // Cost-only (empty indicator), snake_case, audio only: speech-to-text, 0.45 minutes exactly.
    r = t.post("/api/v2/usage", R"({"agent_id":"a1","customer_id":"c1","indicator":"",)"
                                R"("raw_usage":{"provider":"deepgram","model":"nova-2","audio_duration":0.45}})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find(R"("kind":"stt")") != std::string::npos);
    CHECK(nanos_of(r) == stt_cost("deepgram", "nova-2", seconds(27)));

    // An unknown model: the event is kept, its cost unknown (null), not 0.
    const Totals before = t.stored();
    r = t.post("/api/v2/usage", R"({"agentId":"a1","customerId":"c1","rawUsage":{"provider":"x","model":"no-such-model",)"
                                R"("inputTokens":10,"outputTokens":5}})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(is_null_at(r, "/calculatedCost"));
    CHECK(is_null_at(r, "/calculatedCostNanos"));
    CHECK(is_null_at(r, "/breakdown/totalCost"));
    CHECK(r.body.find(R"("costUnknown":true)") != std::string::npos);
    CHECK(t.stored().calls == before.calls + 1);
    CHECK(t.stored().cost_nanos == before.cost_nanos);
  });
}

TEST_CASE("tracking: standalone STT, TTS, STS, video, external cost and send_indicator") {
  for_each_backend([](StorageBackend& backend) {
    Tracking t(backend);
    HttpResponse r = t.post("/api/v1/stt", R"({"agentId":"a","customerId":"c","indicator":"transcribed",)"
                                           R"("provider":"deepgram","model":"nova-3","audioMinutes":2.5,"language":"en"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(nanos_of(r) == stt_cost("deepgram", "nova-3", seconds(150)));
    // The language is kept as the event's meta tag "language" (beside the caller's tags; a tag of
    // that name given by the caller wins), so reports group by it.
    r = t.post("/api/v1/stt", R"({"agentId":"a","customerId":"c2","indicator":"transcribed","metaTags":{"team":"x"},)"
                              R"("provider":"deepgram","model":"nova-3","audioMinutes":1,"language":"de"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    r = t.post("/api/v1/stt", R"({"agentId":"a","customerId":"c2","metaTags":{"language":"fr-CA"},)"
                              R"("provider":"deepgram","model":"nova-3","audioMinutes":1,"language":"fr"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const HttpResponse by_language =
        t.send("GET", "/api/v1/reports/profit?by=tag:language&from_ns=0&to_ns=9223372036854775807", "");
    REQUIRE_MESSAGE(by_language.status == 200, by_language.body);
    for (const char* group : {R"("key":"en")", R"("key":"de")", R"("key":"fr-CA")"}) {
      CHECK_MESSAGE(by_language.body.find(group) != std::string::npos, group, " in ", by_language.body);
    }
    CHECK(by_language.body.find(R"("key":"fr")") == std::string::npos);
    r = t.post("/api/v1/tts", R"({"agentId":"a","customerId":"c","provider":"amazon-polly","model":"standard","characterCount":1000})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(nanos_of(r) == tts_cost("amazon-polly", "standard", 1000));

    r = t.post("/api/v1/sts", R"({"agentId":"a","customerId":"c","provider":"openai","model":"gpt-realtime",)"
                              R"("inputTextTokens":100,"inputAudioTokens":1000,"cachedAudioTokens":400,)"
                              R"("outputTextTokens":50,"outputAudioTokens":500})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const MediaPrice* sts = PriceCatalog::builtin().find(MediaKind::kSts, "openai", "gpt-realtime");
    REQUIRE(sts != nullptr);
    CHECK(nanos_of(r) == cost_of_modality_tokens(*sts, ModalityTokens{.text_input = 100,
                                                                      .audio_input = 1000,
                                                                      .cached_audio_input = 400,
                                                                      .text_output = 50,
                                                                      .audio_output = 500}));

    r = t.post("/api/v1/video", R"({"agentId":"a","customerId":"c","provider":"nobody","model":"none","videoSeconds":8})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(is_null_at(r, "/calculatedCost"));  // no such price: kept, cost unknown

    r = t.post("/api/v1/external-cost", R"({"agentId":"a","customerId":"c","provider":"twilio","amount":0.0425,)"
                                        R"("description":"Twilio call 3m"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(nanos_of(r) == 42'500'000);
    CHECK(t.post("/api/v1/external-cost", R"({"agentId":"a","customerId":"c","amount":1,"amountNanos":5,"description":"x"})")
              .status == 400);

    const Totals before = t.stored();
    const std::int64_t billed = t.billing_events();
    r = t.post("/api/v1/indicator", R"({"agentId":"a","customerId":"c","indicator":"lead-qualified"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find(R"("kind":"billing")") != std::string::npos);
    CHECK(t.stored().calls == before.calls);  // a billing event: no provider call, no cost
    CHECK(t.billing_events() == billed + 1);
    CHECK(t.stored().cost_nanos == before.cost_nanos);
    CHECK(error_message(t.post("/api/v1/indicator", R"({"agentId":"a","customerId":"c","indicator":""})")) ==
          "indicator: must not be empty");
  });
}

TEST_CASE("tracking: a retried request with the same Idempotency-Key counts once") {
  for_each_backend([](StorageBackend& backend) {
    Tracking t(backend);
    const std::string body = R"({"agentId":"a","customerId":"c","rawUsage":{"provider":"openai","model":"gpt-4o",)"
                             R"("inputTokens":1000,"outputTokens":100}})";
    HttpResponse first = t.post("/api/v2/usage", body, "retry-1");
    REQUIRE_MESSAGE(first.status == 200, first.body);
    HttpResponse again = t.post("/api/v2/usage", body, "retry-1");
    REQUIRE_MESSAGE(again.status == 200, again.body);
    CHECK(paygent::testing::json_string_member(first.body, "cpDataId") ==
          paygent::testing::json_string_member(again.body, "cpDataId"));
    CHECK(again.body.find(R"("duplicate":true)") != std::string::npos);
    CHECK(t.stored().calls == 1);
    CHECK(t.stored().cost_nanos == nanos_of(first));
    // The same key with another body: refused, nothing stored.
    const HttpResponse conflict = t.post("/api/v2/usage", R"({"agentId":"a","customerId":"c","rawUsage":{"provider":"openai",)"
                                                          R"("model":"gpt-4o","inputTokens":1}})", "retry-1");
    CHECK(conflict.status == 409);
    CHECK(error_message(conflict) == "Idempotency-Key: already used with another body");
    CHECK(t.stored().calls == 1);
    // The same key on another path is another key.
    CHECK(t.post("/api/v1/indicator", R"({"agentId":"a","customerId":"c","indicator":"i"})", "retry-1").status == 200);
    CHECK(t.billing_events() == 1);
    // Another key, or none: another event.
    CHECK(t.post("/api/v2/usage", body, "retry-2").status == 200);
    CHECK(t.post("/api/v2/usage", body).status == 200);
    CHECK(t.stored().calls == 3);

    // A retried voice indicator: counted once, not refused as a second indicator.
    REQUIRE(t.post("/api/v1/voice/session", R"({"sessionId":"s","agentId":"a","customerId":"c"})").status == 200);
    const std::string stt = R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":1})";
    const HttpResponse tracked = t.post("/api/v1/voice/stt", stt, "stt-1");
    REQUIRE_MESSAGE(tracked.status == 200, tracked.body);
    const std::string indicator = R"({"sessionId":"s","indicator":"done","totalDuration":1})";
    REQUIRE(t.post("/api/v1/voice/indicator", indicator, "ind-1").status == 200);
    // Its answer lost, the STT request is retried after the session closed: answered as the
    // duplicate it is (the same reply), not refused; with another body or another key, refused.
    const HttpResponse late = t.post("/api/v1/voice/stt", stt, "stt-1");
    CHECK_MESSAGE(late.status == 200, late.body);
    CHECK(late.body == std::string(tracked.body).replace(tracked.body.find(R"("duplicate":false)"), 17, R"("duplicate":true)"));
    const std::string other = R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":2})";
    CHECK(error_code(t.post("/api/v1/voice/stt", other, "stt-1")) == "already_exists");
    CHECK(error_code(t.post("/api/v1/voice/stt", stt, "stt-2")) == "session_closed");
    CHECK(error_code(t.post("/api/v1/voice/stt", stt)) == "session_closed");
    HttpResponse retried = t.post("/api/v1/voice/indicator", indicator, "ind-1");
    CHECK_MESSAGE(retried.status == 200, retried.body);
    CHECK(retried.body.find(R"("duplicate":true)") != std::string::npos);
    CHECK(t.post("/api/v1/voice/indicator", indicator, "ind-2").status == 409);
    CHECK(t.stored().calls == 4);
    CHECK(t.billing_events() == 2);
  });
}

TEST_CASE("tracking: bad input is refused naming the field, and nothing is stored") {
  for_each_backend([](StorageBackend& backend) {
    Tracking t(backend);
    REQUIRE(t.post("/api/v1/voice/session", R"({"sessionId":"s","agentId":"a","customerId":"c"})").status == 200);
    const Totals before = t.stored();
    struct Case {
      std::string_view target;
      std::string_view body;
      std::string_view message;  // the error message's start
    };
    const Case cases[] = {
        {"/api/v1/voice/stt", R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":-1})",
         "audioMinutes: "},
        {"/api/v1/voice/stt", R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":"NaN"})",
         "audioMinutes: must be a number of minutes"},
        {"/api/v1/voice/stt", R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":1e999})",
         "body: not valid JSON"},
        {"/api/v1/voice/stt", R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":NaN})",
         "body: not valid JSON"},
        {"/api/v1/voice/stt", R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":1,"audioDuration":1})",
         "audioDuration: repeated (also given as \"audioMinutes\")"},
        {"/api/v1/voice/stt", R"({"sessionId":"s","provider":"deepgram","model":"nova-2","audioMinutes":null})",
         "audioMinutes: must be a number of minutes"},
        {"/api/v1/voice/llm", R"({"sessionId":"s","provider":"openai","model":"gpt-4o","promptTokens":-5,"completionTokens":1})",
         "promptTokens: must be a non-negative integer"},
        {"/api/v1/voice/llm", R"({"sessionId":"s","provider":"openai","model":"gpt-4o","promptTokens":1.5,"completionTokens":1})",
         "promptTokens: must be a non-negative integer"},
        {"/api/v1/voice/llm", R"({"sessionId":"s","provider":"openai","model":"gpt-4o","promptTokens":"10","completionTokens":1})",
         "promptTokens: must be a non-negative integer"},
        {"/api/v1/voice/llm",
         R"({"sessionId":"s","provider":"openai","model":"gpt-4o","promptTokens":10,"completionTokens":1,"cachedTokens":11})",
         "cachedTokens: must not exceed promptTokens"},
        {"/api/v1/voice/llm", R"({"sessionId":"s","provider":"openai","model":"gpt-4o","promptTokens":1})",
         "completionTokens: missing"},
        {"/api/v1/voice/tts", R"({"sessionId":"s","provider":"amazon-polly","model":"neural","characters":9223372036854775808})",
         "characters: must be a non-negative integer"},
        {"/api/v1/voice/tts", R"({"sessionId":"s","provider":"amazon-polly","model":"neural","characters":5,"voice":"x"})",
         "voice: unknown field"},
        {"/api/v1/voice/indicator", R"({"sessionId":"s","indicator":"done","totalDuration":-0.5})", "totalDuration: "},
        {"/api/v1/voice/indicator", R"({"sessionId":"s","indicator":"done","total_duration":1,"totalDuration":1})",
         "totalDuration: repeated (also given as \"total_duration\")"},
        {"/api/v2/usage", R"({"agentId":"a","customerId":"c","rawUsage":{"provider":"p","model":"gpt-4o","inputTokens":-1}})",
         "rawUsage.inputTokens: must be a non-negative integer"},
        {"/api/v2/usage", R"({"agentId":"a","customerId":"c","rawUsage":{"provider":"p","model":"gpt-4o","audioDuration":1e-9}})",
         "rawUsage.audioDuration: "},
        {"/api/v2/usage", R"({"agentId":"a","customerId":"","rawUsage":{"provider":"p","model":"gpt-4o"}})",
         "customerId: must not be empty"},
        {"/api/v2/usage", R"({"agentId":"a","customerId":"c","rawUsage":"gpt-4o"})", "rawUsage: must be an object"},
        {"/api/v2/usage", R"({"agentId":"a","customerId":"c","metaTags":{"k":1},"rawUsage":{"provider":"p","model":"m"}})",
         "metaTags.k: must be a string"},
        {"/api/v2/usage", R"([1,2])", "body: must be a JSON object"},
        {"/api/v2/usage", R"({"agentId":"a"} trailing)", "body: not valid JSON"},
        {"/api/v1/video", R"({"agentId":"a","customerId":"c","provider":"p","model":"m","videoSeconds":-8})", "videoSeconds: "},
        {"/api/v1/external-cost", R"({"agentId":"a","customerId":"c","amount":-1,"description":"x"})",
         "amount: must be a non-negative decimal"},
        {"/api/v1/external-cost", R"({"agentId":"a","customerId":"c","amount":0.0000000001,"description":"x"})",
         "amount: must be a non-negative decimal"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.body);
      const HttpResponse r = t.post(c.target, c.body);
      CHECK(r.status == 400);
      CHECK_MESSAGE(error_message(r).find(c.message) == 0, error_message(r));
    }
    CHECK(t.stored() == before);
    // The session is still open: the refusals did not touch it.
    CHECK(t.post("/api/v1/voice/indicator", R"({"sessionId":"s","indicator":"done","totalDuration":1})").status == 200);
  });
}

TEST_CASE("tracking: voice sessions and customers in the storage, on both backends") {
  for_each_backend([](StorageBackend& backend) {
    Tracking t(backend);
    Storage& s = *t.storage;
    const VoiceSession session{.session_id = "v1", .agent_id = "a", .customer_id = "c", .meta_tags_json = R"({"k":"v"})"};
    CHECK(s.open_voice_session(t.product, session).value() == true);
    CHECK(s.open_voice_session(t.product, session).value() == false);
    VoiceSession other = session;
    other.customer_id = "d";
    CHECK(absl::IsAlreadyExists(s.open_voice_session(t.product, other).status()));
    CHECK(s.find_voice_session(t.product, "v1").value() == session);
    CHECK(absl::IsNotFound(s.find_voice_session(t.product, "v2").status()));
    // The session's billing event, of closing event id `n`.
    auto billing = [](std::uint64_t n) {
      EventRecord e = record(event_id(n), "c", "", "v1", 0, 1'000);
      e.input_tokens = e.output_tokens = e.cached_input_tokens = 0;
      e.kind = ::paygent::internal::UsageKind::kBilling;
      e.agent_id = "a";
      e.indicator = "call";
      e.audio_us = 60'000'000;
      return e;
    };
    CHECK(absl::IsNotFound(s.close_voice_session(t.product, "v2", billing(1)).status()));
    CHECK_FALSE(s.has_event(t.product, event_id(1)).value());  // nothing of a refused close is stored

    // The first close wins and stores its event; the same closing event again is a retry (a
    // duplicate); another is refused and stores nothing.
    CHECK(s.close_voice_session(t.product, "v1", billing(1)).value().accepted == 1);
    CHECK(s.close_voice_session(t.product, "v1", billing(1)).value().duplicates == 1);
    CHECK(absl::IsFailedPrecondition(s.close_voice_session(t.product, "v1", billing(2)).status()));
    CHECK(s.has_event(t.product, event_id(1)).value());
    CHECK_FALSE(s.has_event(t.product, event_id(2)).value());
    VoiceSession closed = s.find_voice_session(t.product, "v1").value();
    CHECK(closed.closed);
    CHECK(closed.closing_event_id == event_id(1));
    // A billing event the ingest refuses (a cost on it) does not close the session.
    const VoiceSession second{.session_id = "v3", .agent_id = "a", .customer_id = "c", .meta_tags_json = "{}"};
    CHECK(s.open_voice_session(t.product, second).value());
    auto billing_of = [&](const char* session, std::uint64_t n) {
      EventRecord e = billing(n);
      e.session_id = session;
      return e;
    };
    EventRecord bad = billing_of("v3", 3);
    bad.cost_nanos = 5;
    CHECK(absl::IsInvalidArgument(s.close_voice_session(t.product, "v3", bad).status()));
    CHECK_FALSE(s.find_voice_session(t.product, "v3").value().closed);
    CHECK_FALSE(s.has_event(t.product, event_id(3)).value());
    // A failure inside the transaction, after the close (the billing event's insert, made to fail
    // by a trigger): the close is rolled back with it, so the indicator can be sent again.
    backend.fail_inserts("billing_events", true);
    const absl::StatusOr<IngestResult> failed = s.close_voice_session(t.product, "v3", billing_of("v3", 4));
    CHECK_FALSE(failed.ok());
    CHECK_FALSE(s.find_voice_session(t.product, "v3").value().closed);
    CHECK_FALSE(s.has_event(t.product, event_id(4)).value());
    backend.fail_inserts("billing_events", false);
    CHECK(s.close_voice_session(t.product, "v3", billing_of("v3", 4)).value().accepted == 1);
    CHECK(s.find_voice_session(t.product, "v3").value().closing_event_id == event_id(4));
    // Another store on the same database sees it (a replica, or the same store reopened).
    std::unique_ptr<Storage> again = backend.again();
    CHECK(again->find_voice_session(t.product, "v1").value() == closed);

    const CustomerRecord first = s.create_or_get_customer(t.product, "ext-1", "Name", "").value();
    CHECK(first == CustomerRecord{.id = "ext-1", .name = "Name", .email = "", .created = true});
    CHECK(again->create_or_get_customer(t.product, "ext-1", "Other", "x@y").value() ==
          CustomerRecord{.id = "ext-1", .name = "Name", .email = "", .created = false});
    CHECK(s.find_user(t.product, "ext-1").ok());
    CHECK(absl::IsNotFound(s.create_or_get_customer("prod_none", "ext-1", "n", "").status()));
  });
}

TEST_CASE("tracking: JsonWriter writes USD exactly and spells() reads both spellings") {
  CHECK(JsonWriter::usd_text(7'000'000) == "0.007");
  CHECK(JsonWriter::usd_text(0) == "0");
  CHECK(JsonWriter::usd_text(1'500'000'000) == "1.5");
  CHECK(JsonWriter::usd_text(-1) == "-0.000000001");
  CHECK(JsonWriter::usd_text(std::numeric_limits<std::int64_t>::min()) == "-9223372036.854775808");
  JsonWriter w;
  w.begin_object().key("a").value("x\"y").key("b").begin_object().end_object().key("c").null().key("d").usd(
      std::optional<std::int64_t>()).end_object();
  CHECK(std::move(w).str() == R"({"a":"x\"y","b":{},"c":null,"d":null})");
  CHECK(spells("inputTokens", "inputTokens"));
  CHECK(spells("input_tokens", "inputTokens"));
  CHECK_FALSE(spells("inputtokens", "inputTokens"));
  CHECK_FALSE(spells("input_Tokens", "inputTokens"));
  CHECK_FALSE(spells("input_tokens_", "inputTokens"));
  CHECK_FALSE(spells("input_", "inputTokens"));
}

TEST_CASE("tracking: the route table keeps 404, 405 with Allow, and the metrics label per pattern") {
  ApiFixture f;
  const std::string key = f.new_product();
  HttpResponse r = f.call("GET", "/api/v2/usage", "", key);
  CHECK(r.status == 405);
  REQUIRE(r.headers.size() >= 1);
  CHECK(r.headers[0] == std::pair<std::string, std::string>{"Allow", "POST"});
  r = f.call("DELETE", "/api/v1/config/plans", "", key);
  CHECK(r.status == 405);
  CHECK(error_message(r) == "DELETE is not allowed on /api/v1/config/plans (allowed: GET, POST)");
  CHECK(f.call("POST", "/api/v1/voice/nothing", "{}", key).status == 404);
  CHECK(f.metrics.prometheus_text().find("path=\"/api/v2/usage\"") != std::string::npos);
}

TEST_CASE("tracking through the real paygentd: paygent-api-key, Idempotency-Key, the customer's usage") {
  paygent::testing::TempDir dir("paygentd-tracking");
  auto paygentd = paygent::testing::PaygentdProcess::start({.data_dir = dir.path(), .admin_token = "admin"});
  paygent::testing::HttpClient http(paygentd->port());
  const std::string key = paygent::testing::create_product(http, "admin", "acme");
  const std::string body = R"({"agentId":"a","customerId":"c-9","indicator":"","rawUsage":{"provider":"OpenAI",)"
                           R"("model":"gpt-4o","inputTokens":1200,"outputTokens":400}})";
  const std::string request = "POST /api/v2/usage HTTP/1.1\r\nHost: 127.0.0.1\r\npaygent-api-key: " + key +
                              "\r\nIdempotency-Key: k-1\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  for (int i = 0; i < 3; ++i) {
    const auto reply = http.raw(request);
    REQUIRE(reply);
    REQUIRE_MESSAGE(reply->status == 200, reply->body);
  }
  const auto usage = http.request("GET", "/api/v1/users/c-9/usage", {}, key);
  REQUIRE(usage);
  REQUIRE(usage->status == 200);
  simdjson::dom::parser parser;
  const simdjson::dom::element root = parse_json(parser, usage->body);
  CHECK(int_at(root, "/calls") == 1);
  CHECK(int_at(root, "/spend_nanos") == llm_cost("gpt-4o", Usage{.input_tokens = 1200, .output_tokens = 400}));
}

}  // namespace
}  // namespace paygent::server::test
