// Agents, indicators, billing events and the profit report through paygentd's API, on SQLite and
// PostgreSQL (docs/tracking.md, "Revenue"): the seeds' worked numbers, the custom-rate rule, the
// three tracking modes in one product, a duplicate billed once.
#include <doctest/doctest.h>

#include "tests/server/agents_support.h"

namespace paygent::server::test {
namespace {

constexpr std::int64_t kMinuteUs = 60'000'000;

constexpr std::string_view kDental = R"({"name":"Dental clinic","indicators":[
  {"indicator":"voice_call_completed","perMinute":true,"pricePerMinute":"0.15"}]})";
constexpr std::string_view kLead = R"({"name":"Lead qualification","indicators":[
  {"indicator":"lead_qualified","perMinute":false,"pricePerEvent":0.20}]})";

TEST_CASE("agents.per_minute_and_per_event_prices") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    REQUIRE_MESSAGE(f.put_agent("dental", kDental).status == 200, f.put_agent("dental", kDental).body);
    REQUIRE(f.put_agent("lead", kLead).status == 200);
    // Seed 000: 5.0 minutes at $0.15/min = $0.75.
    send(f, {{.n = 1, .session = "call-1", .agent = "dental", .indicator = "voice_call_completed", .kind = "billing",
              .audio_us = 5 * kMinuteUs}});
    // $0.20 per call, whatever the duration: 20 minutes and 1 second.
    send(f, {{.n = 2, .user = "c2", .agent = "lead", .indicator = "lead_qualified", .kind = "billing",
              .audio_us = 20 * kMinuteUs},
             {.n = 3, .user = "c2", .agent = "lead", .indicator = "lead_qualified", .kind = "billing",
              .audio_us = 1'000'000}});
    const ProfitLine dental = profit_line(f, "agent", "dental");
    REQUIRE(dental.found);
    CHECK(dental.revenue == 750'000'000);
    CHECK(dental.cost == std::nullopt);  // revenue-only: no cost rows, so no cost and no margin
    CHECK(dental.profit == std::nullopt);
    CHECK(dental.margin_ppm == std::nullopt);
    CHECK(dental.events == 1);
    const ProfitLine lead = profit_line(f, "agent", "lead");
    CHECK(lead.revenue == 400'000'000);
    CHECK(lead.events == 2);
    CHECK(lead.without_price == 0);
    CHECK(profit_line(f, "customer", "c2").revenue == 400'000'000);
    CHECK(profit_line(f, "indicator", "voice_call_completed").revenue == 750'000'000);
    CHECK(profit_line(f, "day", "2026-11-17").revenue == 1'150'000'000);
    CHECK(profit_line(f, "agent", "total").revenue == 1'150'000'000);
  });
}

// by=tag:<key>: cost and revenue grouped by one meta tag's value, read from the events (a billing
// event's tags are its own), "" for the events without the tag; per-event revenue as stored.
TEST_CASE("agents.profit_report_by_any_meta_tag") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    REQUIRE(f.put_agent("lead", kLead).status == 200);  // $0.20 per lead_qualified
    send(f, {{.n = 1, .agent = "lead", .model = "gpt-4o", .cost_nanos = 30'000'000, .meta_tags = R"({"region":"eu"})"},
             {.n = 2, .agent = "lead", .indicator = "lead_qualified", .kind = "billing",
              .meta_tags = R"({"plan":"gold","region":"eu"})"},
             {.n = 3, .user = "c2", .agent = "lead", .model = "gpt-4o", .cost_nanos = 5'000'000,
              .meta_tags = R"({"region":"us"})"},
             {.n = 4, .user = "c2", .agent = "lead", .indicator = "lead_qualified", .kind = "billing"},
             {.n = 5, .agent = "lead", .model = "gpt-4o", .cost_nanos = 1'000'000}});
    const ProfitLine eu = profit_line(f, "tag:region", "eu");
    REQUIRE(eu.found);
    CHECK(eu.cost == 30'000'000);
    CHECK(eu.revenue == 200'000'000);
    CHECK(eu.profit == 170'000'000);
    const ProfitLine us = profit_line(f, "tag:region", "us");
    CHECK(us.cost == 5'000'000);
    CHECK(us.revenue == std::nullopt);  // cost-only under this tag
    const ProfitLine none = profit_line(f, "tag:region", "");
    CHECK(none.cost == 1'000'000);
    CHECK(none.revenue == 200'000'000);
    CHECK(profit_line(f, "tag:plan", "gold").revenue == 200'000'000);
    CHECK(profit_line(f, "tag:region", "total").revenue == 400'000'000);
    // A report tag: the same figures, from its rollup (filled from the events so far, then by
    // ingest: one more eu event after the declaration counts).
    HttpResponse r = f.call("PUT", "/api/v1/config/report-tags", R"({"tags":["region","plan"]})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body == R"({"tags":["plan","region"]})");
    CHECK(f.call("GET", "/api/v1/config/report-tags").body == R"({"tags":["plan","region"]})");
    CHECK(profit_line(f, "tag:region", "eu").cost == 30'000'000);
    CHECK(profit_line(f, "tag:region", "eu").revenue == 200'000'000);
    CHECK(profit_line(f, "tag:region", "").revenue == 200'000'000);
    CHECK(profit_line(f, "tag:plan", "gold").revenue == 200'000'000);
    send(f, {{.n = 6, .agent = "lead", .model = "gpt-4o", .cost_nanos = 4'000'000, .meta_tags = R"({"region":"eu"})"}});
    CHECK(profit_line(f, "tag:region", "eu").cost == 34'000'000);
    const std::pair<std::string_view, std::string_view> bad[] = {
        {R"({"tags":"region"})", "tags: must be an array of meta tag keys"},
        {R"({"tags":["a","b","c","d","e","f","g","h","i"]})", "tags: must hold at most 8 keys, not 9"},
        {R"({"tags":["a","a"]})", "tags[1]: is repeated"},
        {R"({"tags":[""]})", "tags[0]: must not be empty"},
        {R"({"tag":["a"]})", "tag: unknown field"},
    };
    for (const auto& [body, message] : bad) {
      INFO(body);
      const HttpResponse refused = f.call("PUT", "/api/v1/config/report-tags", body);
      CHECK(refused.status == 400);
      CHECK(error_message(refused) == message);
    }
    CHECK(f.call("GET", "/api/v1/config/report-tags").body == R"({"tags":["plan","region"]})");  // unchanged
    // The key is taken as written (percent-decoded), and must not be empty.
    CHECK(profit_line(f, "tag%3Aregion", "eu").cost == 34'000'000);
    CHECK(error_message(f.call("GET", "/api/v1/reports/profit?from_ns=0&to_ns=10&by=tag:")) ==
          "by: tag:<key> needs a meta tag key of 1 to 1024 bytes");
  });
}

// The README's rule: the session's rate is the sum over the kinds used of the custom rate of the
// model used for that kind (the highest of several); no custom-rated model at all: the base rate.
TEST_CASE("agents.custom_per_model_rates") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    const HttpResponse put = f.put_agent("voice", R"({"name":"Voice","indicators":[{"indicator":"call",
      "perMinute":true,"pricePerMinute":"0.15","customRates":[
        {"kind":"llm","model":"gpt-5","pricePerMinute":"0.50"},
        {"kind":"llm","model":"gemini-2.5","pricePerMinute":"0.20"},
        {"kind":"stt","model":"nova-2","pricePerMinute":"0.05"},
        {"kind":"tts","model":"azure-neural","pricePerMinute":"0.08"}]}]})");
    REQUIRE_MESSAGE(put.status == 200, put.body);
    // Session a: gpt-5 and gemini-2.5 (the highest, 0.50) + nova-2 (0.05); no TTS: 0.55/min x 2 = 1.10.
    send(f, {{.n = 10, .session = "a", .agent = "voice", .model = "gpt-5", .kind = "llm", .cost_nanos = 1000},
             {.n = 11, .session = "a", .agent = "voice", .model = "gemini-2.5", .kind = "llm", .cost_nanos = 1000},
             {.n = 12, .session = "a", .agent = "voice", .model = "nova-2", .kind = "stt", .cost_nanos = 1000}});
    send(f, {{.n = 13, .session = "a", .agent = "voice", .indicator = "call", .kind = "billing", .audio_us = 2 * kMinuteUs}});
    // Session b: no model with a custom rate: the base 0.15/min x 2 = 0.30.
    send(f, {{.n = 20, .user = "c2", .session = "b", .agent = "voice", .model = "gpt-4o", .kind = "llm"},
             {.n = 21, .user = "c2", .session = "b", .agent = "voice", .model = "polly-neural", .kind = "tts"},
             {.n = 22, .user = "c2", .session = "b", .agent = "voice", .indicator = "call", .kind = "billing",
              .audio_us = 2 * kMinuteUs}});
    // Session c, one batch: azure-neural before the billing event counts (0.08 x 1 min), gpt-5
    // after it does not.
    send(f, {{.n = 30, .user = "c3", .session = "c", .agent = "voice", .model = "azure-neural", .kind = "tts"},
             {.n = 31, .user = "c3", .session = "c", .agent = "voice", .indicator = "call", .kind = "billing",
              .audio_us = kMinuteUs},
             {.n = 32, .user = "c3", .session = "c", .agent = "voice", .model = "gpt-5", .kind = "llm"}});
    // Session a of another customer is another session: the base rate.
    send(f, {{.n = 40, .user = "c4", .session = "a", .agent = "voice", .indicator = "call", .kind = "billing",
              .audio_us = kMinuteUs}});
    CHECK(profit_line(f, "customer", "c1").revenue == 1'100'000'000);
    CHECK(profit_line(f, "customer", "c2").revenue == 300'000'000);
    CHECK(profit_line(f, "customer", "c3").revenue == 80'000'000);
    CHECK(profit_line(f, "customer", "c4").revenue == 150'000'000);
    // The base rate applies to a part of a minute exactly: 1 s at 0.15/min = 0.0025.
    send(f, {{.n = 41, .user = "c5", .agent = "voice", .indicator = "call", .kind = "billing", .audio_us = 1'000'000}});
    CHECK(profit_line(f, "customer", "c5").revenue == 2'500'000);
    // The invoice bills each session at the same rate (docs/billing.md): c1's 2 min at 0.55.
    const HttpResponse inv = f.call("GET", "/api/v1/customers/c1/invoice?period=2026-11");
    REQUIRE_MESSAGE(inv.status == 200, inv.body);
    INFO(inv.body);
    CHECK(inv.body.find(R"("pricing":"per_minute","unit":"minute","quantity":"2")") != std::string::npos);
    CHECK(inv.body.find(R"("total_nanos":1100000000,)") != std::string::npos);
  });
}

// A product with cost-only internal agents, full-tracking customer agents and revenue-only
// webhooks: each reported with null (never 0) for what was not recorded.
TEST_CASE("agents.three_tracking_modes_in_one_product") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    REQUIRE(f.put_agent("lead", kLead).status == 200);
    REQUIRE(f.put_agent("webhook", R"({"indicators":[{"indicator":"order_paid","pricePerEvent":"1"},
                                                    {"indicator":"unpriced"}]})")
                .status == 200);
    send(f, {// cost-only: no indicator
             {.n = 1, .user = "ops", .agent = "internal", .model = "gpt-4o", .cost_nanos = 1'000'000},
             {.n = 2, .user = "ops", .agent = "internal", .model = "nova-2", .kind = "stt", .cost_unknown = true},
             // full tracking: a cost row and a billing event
             {.n = 3, .user = "c1", .agent = "lead", .indicator = "lead_qualified", .model = "gpt-4o",
              .cost_nanos = 50'000'000},
             // revenue-only: a billing event, no cost row
             {.n = 4, .user = "c2", .agent = "webhook", .indicator = "order_paid", .kind = "billing"},
             {.n = 5, .user = "c2", .agent = "webhook", .indicator = "unpriced", .kind = "billing"},
             // an indicator of no configured agent: its revenue is unknown
             {.n = 6, .user = "c2", .agent = "nobody", .indicator = "x", .kind = "billing"}});
    const ProfitLine internal = profit_line(f, "agent", "internal");
    CHECK(internal.cost == 1'000'000);
    CHECK(internal.revenue == std::nullopt);
    CHECK(internal.profit == std::nullopt);
    CHECK(internal.margin_ppm == std::nullopt);
    CHECK(internal.events == 2);
    CHECK(internal.without_price == 1);  // the STT event without a price
    const ProfitLine lead = profit_line(f, "agent", "lead");
    CHECK(lead.cost == 50'000'000);
    CHECK(lead.revenue == 200'000'000);
    CHECK(lead.profit == 150'000'000);
    CHECK(lead.margin_ppm == 750'000);
    CHECK(lead.events == 2);  // a cost row and a billing event
    const ProfitLine webhook = profit_line(f, "agent", "webhook");
    CHECK(webhook.cost == std::nullopt);
    CHECK(webhook.revenue == 1'000'000'000);
    CHECK(webhook.margin_ppm == std::nullopt);
    CHECK(webhook.without_price == 1);
    const ProfitLine nobody = profit_line(f, "agent", "nobody");
    CHECK(nobody.found);
    CHECK(nobody.revenue == std::nullopt);  // never 0
    CHECK(nobody.without_price == 1);
    CHECK(profit_line(f, "model", "gpt-4o").cost == 51'000'000);
    CHECK(profit_line(f, "indicator", "").cost == 1'000'000);

    // Billing events are no provider calls: the usage report counts the cost rows only (3), and
    // their cost (0) changes no spend.
    const HttpResponse usage = f.call("GET", "/api/v1/reports/usage?from_ns=" + std::to_string(ns_at(2026, 11, 1)) +
                                                 "&to_ns=" + std::to_string(ns_at(2026, 12, 1)) + "&group_by=month");
    REQUIRE_MESSAGE(usage.status == 200, usage.body);
    CHECK(usage.body.find("\"calls\":3") != std::string::npos);
    CHECK(usage.body.find("\"cost_nanos\":51000000") != std::string::npos);
    // Over a partial day too (read from the events, not the daily sums).
    const HttpResponse partial = f.call("GET", "/api/v1/reports/usage?from_ns=" + std::to_string(ns_at(2026, 11, 17, 9)) +
                                                   "&to_ns=" + std::to_string(ns_at(2026, 11, 17, 11)) + "&group_by=user");
    REQUIRE(partial.status == 200);
    CHECK(partial.body.find("\"c2\"") == std::string::npos);  // c2 has billing events only
    // Nor in a customer's usage object: c2 has three billing events and no provider call.
    const HttpResponse c2 = f.call("GET", "/api/v1/users/c2/usage");
    REQUIRE_MESSAGE(c2.status == 200, c2.body);
    CHECK(c2.body.find("\"calls\":0") != std::string::npos);
    CHECK(c2.body.find("\"calls\":3") == std::string::npos);
    // A billing event with a cost is refused whole, naming the field.
    const HttpResponse costly = f.call(
        "POST", "/api/v1/events:batch",
        tracked_batch({{.n = 9, .agent = "webhook", .indicator = "order_paid", .kind = "billing", .cost_nanos = 5}}));
    CHECK(costly.status == 400);
    CHECK(error_message(costly) == "events[0].cost_nanos: must be 0 for an event of kind billing");
    CHECK(profit_line(f, "agent", "webhook").revenue == 1'000'000'000);
  });
}

TEST_CASE("agents.duplicate_event_billed_once") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    REQUIRE(f.put_agent("lead", kLead).status == 200);
    const std::vector<Tracked> batch = {
        {.n = 1, .agent = "lead", .indicator = "lead_qualified", .model = "gpt-4o", .cost_nanos = 10},
        {.n = 1, .agent = "lead", .indicator = "lead_qualified", .model = "gpt-4o", .cost_nanos = 10}};
    send(f, batch);
    send(f, batch);  // the syncer's retry
    const ProfitLine lead = profit_line(f, "agent", "lead");
    CHECK(lead.revenue == 200'000'000);
    CHECK(lead.cost == 10);
    CHECK(lead.events == 2);
  });
}

// An agent's config changes later billing events only; an identical PUT changes nothing.
TEST_CASE("agents.put_get_list_delete") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    HttpResponse r = f.put_agent("lead", kLead);
    REQUIRE(r.status == 200);
    CHECK(r.body.find("\"changed\":true") != std::string::npos);
    CHECK(f.put_agent("lead", kLead).body.find("\"changed\":false") != std::string::npos);
    r = f.call("GET", "/api/v1/agents/lead");
    REQUIRE(r.status == 200);
    CHECK(r.body ==
          R"({"agentId":"lead","name":"Lead qualification","indicators":[{"indicator":"lead_qualified","perMinute":false,"pricePerEvent":"0.2"}]})");
    // What GET says can be PUT back unchanged.
    CHECK(f.put_agent("lead", r.body).body.find("\"changed\":false") != std::string::npos);
    REQUIRE(f.put_agent("dental", kDental).status == 200);
    r = f.call("GET", "/api/v1/agents");
    CHECK(r.body.find("\"agentId\":\"dental\"") < r.body.find("\"agentId\":\"lead\""));
    send(f, {{.n = 1, .agent = "lead", .indicator = "lead_qualified", .kind = "billing"}});
    REQUIRE(f.put_agent("lead", R"({"indicators":[{"indicator":"lead_qualified","pricePerEvent":"0.3"}]})").status == 200);
    send(f, {{.n = 2, .agent = "lead", .indicator = "lead_qualified", .kind = "billing"}});
    CHECK(profit_line(f, "agent", "lead").revenue == 500'000'000);  // 0.20 then 0.30
    CHECK(f.call("DELETE", "/api/v1/agents/lead").status == 200);
    CHECK(f.call("GET", "/api/v1/agents/lead").status == 404);
    CHECK(f.call("DELETE", "/api/v1/agents/lead").status == 404);
    CHECK(profit_line(f, "agent", "lead").revenue == 500'000'000);  // stored revenue stays
    // snake_case is read too; the apply endpoint takes many agents, and twice changes nothing.
    const std::string file = R"({"agents":[{"agentId":"a1","indicators":[{"indicator":"i","per_minute":true,
      "price_per_minute":"0.1","custom_rates":[{"kind":"stt","model":"nova-2","price_per_minute":"0.02"}]}]},
      {"agentId":"a2","name":"two","indicators":[]}]})";
    r = f.call("POST", "/api/v1/agents:apply", file);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body == R"({"agents":[{"agentId":"a1","changed":true},{"agentId":"a2","changed":true}]})");
    r = f.call("POST", "/api/v1/agents:apply", file);
    CHECK(r.body == R"({"agents":[{"agentId":"a1","changed":false},{"agentId":"a2","changed":false}]})");
  });
}

TEST_CASE("agents.bad_bodies_are_refused_naming_the_field") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    const std::pair<std::string_view, std::string_view> cases[] = {
        {R"({"name":"x"})", "indicators: missing"},
        {R"({"name":"x","indicators":[],"colour":"red"})", "colour: unknown field"},
        {R"({"name":"x","name":"y","indicators":[]})", "name: repeated field"},
        {R"({"indicators":[{"indicator":"i","pricePerEvent":"-0.1"}]})", "indicators[0].pricePerEvent: must not be negative"},
        {R"({"indicators":[{"indicator":"i","pricePerEvent":"abc"}]})", "indicators[0].pricePerEvent: \"abc\" is not"},
        {R"({"indicators":[{"indicator":"i","pricePerEvent":1e-3}]})", "indicators[0].pricePerEvent: \"1e-3\" is not"},
        {R"({"indicators":[{"indicator":"i","pricePerEvent":"0.0000000001"}]})",
         "indicators[0].pricePerEvent: must be whole nano-USD"},
        {R"({"indicators":[{"indicator":"i","pricePerEvent":true}]})", "indicators[0].pricePerEvent: must be a decimal"},
        {R"({"indicators":[{"indicator":"i","pricePerEvent":"99999999999"}]})", "indicators[0].pricePerEvent: is too large"},
        {R"({"indicators":[{"indicator":"i","pricePerMinute":"0.1"}]})",
         "indicators[0].pricePerMinute: not allowed when perMinute is false"},
        {R"({"indicators":[{"indicator":"i","perMinute":true,"pricePerEvent":"0.1"}]})",
         "indicators[0].pricePerEvent: not allowed when perMinute is true"},
        {R"({"indicators":[{"indicator":"i","customRates":[]}]})",
         "indicators[0].customRates: custom rates exist only when perMinute is true"},
        {R"({"indicators":[{"indicator":"i","perMinute":true,"customRates":[{"kind":"video","model":"m","pricePerMinute":"1"}]}]})",
         "indicators[0].customRates[0].kind: must be"},
        {R"({"indicators":[{"indicator":"i","perMinute":true,"customRates":[{"kind":"llm","model":"m"}]}]})",
         "indicators[0].customRates[0].pricePerMinute: missing"},
        {R"({"indicators":[{"indicator":"i","perMinute":true,"customRates":[{"kind":"llm","model":"m","pricePerMinute":"1"},{"kind":"llm","model":"m","pricePerMinute":"2"}]}]})",
         "indicators[0].customRates[1]: a second rate"},
        {R"({"indicators":[{"indicator":"i"},{"indicator":"i"}]})", "indicators[1].indicator: \"i\" is repeated"},
        {R"({"indicators":[{"indicator":""}]})", "indicators[0].indicator: must not be empty"},
        {R"({"indicators":[{"perMinute":false}]})", "indicators[0].indicator: missing"},
        {R"({"indicators":[{"indicator":"i","perMinute":"yes"}]})", "indicators[0].perMinute: must be true or false"},
        {R"({"agentId":"other","indicators":[]})", "agentId: \"other\" is not the agent of the path"},
        {R"([])", "body: must be an object"},
        {R"({"indicators":[]} x)", "body: not valid JSON"},
    };
    for (const auto& [body, message] : cases) {
      INFO(body);
      const HttpResponse r = f.put_agent("a", body);
      CHECK(r.status == 400);
      CHECK_MESSAGE(error_message(r).rfind(message, 0) == 0, error_message(r));
    }
    CHECK(f.call("GET", "/api/v1/agents").body == R"({"agents":[]})");  // nothing stored
    CHECK(f.call("POST", "/api/v1/agents:apply", R"({"agents":[{"indicators":[]}]})").status == 400);
    CHECK(f.call("POST", "/api/v1/agents:apply", R"({"agents":[{"agentId":"ok","indicators":[]},{"agentId":"bad","indicators":5}]})")
              .status == 400);
    CHECK(f.call("GET", "/api/v1/agents").body == R"({"agents":[]})");  // the file is checked whole first
    const HttpResponse patch = f.call("PATCH", "/api/v1/agents/a");
    CHECK(patch.status == 405);
    CHECK(error_message(patch) == "PATCH is not allowed on /api/v1/agents/{id} (allowed: GET, PUT, DELETE)");
    CHECK(error_message(f.call("GET", "/api/v1/agents/a%zz")) == "agent id in the path: bad percent-encoding");
    CHECK(error_message(f.call("GET", "/api/v1/agents/a%00")) == "agent id in the path: must not contain %00");
    CHECK(f.call("GET", "/api/v1/agents/nobody").status == 404);
    CHECK(f.call("DELETE", "/api/v1/agents:apply").status == 405);
    CHECK(error_message(f.call("GET", "/api/v1/reports/profit?from_ns=0&to_ns=99999999999999999999")) ==
          "to_ns: must be a non-negative integer (Unix ns)");
    CHECK(f.call("GET", "/api/v1/agents/a", {}, "wrong-key").status == 401);
    CHECK(f.call("GET", "/api/v1/reports/profit?from_ns=0&to_ns=10&by=colour").status == 400);
    CHECK(error_message(f.call("GET", "/api/v1/reports/profit?to_ns=10")) == "from_ns: missing");
    CHECK(error_message(f.call("GET", "/api/v1/reports/profit?from_ns=5&to_ns=5")) == "to_ns: must be after from_ns");
  });
}

}  // namespace
}  // namespace paygent::server::test
