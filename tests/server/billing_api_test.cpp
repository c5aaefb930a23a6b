// The billing API through paygentd's Api, on SQLite and PostgreSQL (docs/billing.md, issue 11):
// every worked example of seed 003, VOLUME vs GRADUATED on both sides of a tier boundary, a
// duplicated event billed once, the lock on linked metrics, missing and non-numeric fields shown as
// excluded, and the validation of metric and pricing bodies.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tests/server/agents_support.h"

namespace paygent::server::test {
namespace {

struct Line {
  bool found = false;
  std::string metric, pricing, quantity;
  std::int64_t amount_nanos = 0, counted = 0, duplicates = 0, filtered_out = 0, missing = 0, not_a_number = 0;
  std::size_t tiers = 0;
};

// The invoice of `customer` for November 2026 (its raw reply in `body`).
HttpResponse invoice(AgentsFixture& f, std::string_view customer, std::string_view period = "2026-11") {
  return f.call("GET", "/api/v1/customers/" + std::string(customer) + "/invoice?period=" + std::string(period));
}

Line line_of(AgentsFixture& f, std::string_view customer, std::string_view agent, std::string_view indicator,
             std::int64_t* total_nanos = nullptr) {
  const HttpResponse r = invoice(f, customer);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, r.body);
  if (total_nanos != nullptr) REQUIRE(root["total_nanos"].get_int64().get(*total_nanos) == simdjson::SUCCESS);
  Line out;
  for (simdjson::dom::element l : root["lines"].get_array()) {
    if (std::string_view(l["agent"].get_string()) != agent || std::string_view(l["indicator"].get_string()) != indicator) {
      continue;
    }
    out.found = true;
    if (!l["metric"].is_null()) out.metric = std::string(std::string_view(l["metric"].get_string()));
    out.pricing = std::string(std::string_view(l["pricing"].get_string()));
    out.quantity = std::string(std::string_view(l["quantity"].get_string()));
    out.amount_nanos = l["amount_nanos"].get_int64();
    out.counted = l["events"]["counted"].get_int64();
    out.duplicates = l["events"]["duplicates"].get_int64();
    out.filtered_out = l["events"]["filteredOut"].get_int64();
    out.missing = l["events"]["excludedBy"]["missing_field"].get_int64();
    out.not_a_number = l["events"]["excludedBy"]["not_a_number"].get_int64();
    out.tiers = simdjson::dom::array(l["tiers"].get_array()).size();
  }
  return out;
}

void create_metric(AgentsFixture& f, std::string_view body) {
  const HttpResponse r = f.call("POST", "/api/v1/billable-metrics", body);
  REQUIRE_MESSAGE(r.status == 201, r.body);
}

// One billing event of `indicator` of agent `agent` for customer `user` with `tags`.
Tracked billed(std::uint64_t n, std::string agent, std::string indicator, std::string tags, std::string user = "c1",
               std::int64_t ts_ns = ns_at(2026, 11, 17, 10)) {
  return Tracked{.n = n, .user = std::move(user), .agent = std::move(agent), .indicator = std::move(indicator),
                 .kind = "billing", .ts_ns = ts_ns, .meta_tags = std::move(tags)};
}

TEST_CASE("billing.seed_003_worked_examples") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"US east requests","aggregation":"count",
                         "filters":[{"key":"region","values":["us-east-1"]}]})");
    create_metric(f, R"({"name":"GPU compute hours","identifier":"gpu_hours","aggregation":"sum","field":"hours"})");
    create_metric(f, R"({"name":"Peak concurrent users","aggregation":"max","field":"concurrent_users"})");
    create_metric(f, R"({"name":"Documents processed","aggregation":"unique_count","field":"document_id"})");
    create_metric(f, R"({"name":"Active seats","aggregation":"latest","field":"seat_count"})");
    create_metric(f, R"({"name":"Effective tokens","aggregation":"sum",
                         "expression":"event.properties.tokens * event.properties.replicas",
                         "resultField":"calculation_result"})");
    const HttpResponse put = f.put_agent("seed", R"({"name":"Seed 003","indicators":[
      {"indicator":"api-request","metric":"us_east_requests","pricing":{"model":"flat","unitPrice":"0.01"}},
      {"indicator":"inference","metric":"gpu_hours","pricing":{"model":"flat","unit":"GPU-hour","unitPrice":"0.50"}},
      {"indicator":"presence-ping","metric":"peak_concurrent_users","pricing":{"model":"flat","unitPrice":"2"}},
      {"indicator":"analyze","metric":"documents_processed","pricing":{"model":"flat","unitPrice":"0.25"}},
      {"indicator":"seat-sync","metric":"active_seats","pricing":{"model":"flat","unitPrice":"10"}},
      {"indicator":"cluster","metric":"effective_tokens","pricing":{"model":"flat","unitPrice":"0.00001"}}]})");
    REQUIRE_MESSAGE(put.status == 200, put.body);

    std::vector<Tracked> events;
    // Count: 50 requests worldwide, 12 with region=us-east-1.
    for (std::uint64_t i = 0; i < 50; ++i) {
      events.push_back(billed(100 + i, "seed", "api-request",
                              i < 12 ? R"({"region":"us-east-1","path":"/v1/chat"})" : R"({"region":"eu-west-1"})"));
    }
    // Sum: jobs of 0.2, 12 and 48 GPU-hours.
    for (const char* hours : {"0.2", "12", "48"}) {
      events.push_back(billed(200 + events.size(), "seed", "inference", std::string(R"({"hours":")") + hours + "\"}"));
    }
    // Max: 45, 120, 88 concurrent users.
    for (const char* users : {"45", "120", "88"}) {
      events.push_back(billed(300 + events.size(), "seed", "presence-ping", std::string(R"({"concurrent_users":")") + users + "\"}"));
    }
    // Unique count: doc-101 three times, doc-202 once, doc-303 twice.
    for (const char* doc : {"doc-101", "doc-202", "doc-101", "doc-303", "doc-101", "doc-303"}) {
      events.push_back(billed(400 + events.size(), "seed", "analyze", std::string(R"({"document_id":")") + doc + R"(","pages":"24"})"));
    }
    // Latest: 10 seats in week 1, 25 in week 3, 22 in week 4 (sent first: the timestamp decides).
    events.push_back(billed(501, "seed", "seat-sync", R"({"seat_count":"22"})", "c1", ns_at(2026, 11, 24)));
    events.push_back(billed(502, "seed", "seat-sync", R"({"seat_count":"10"})", "c1", ns_at(2026, 11, 2)));
    events.push_back(billed(503, "seed", "seat-sync", R"({"seat_count":"25"})", "c1", ns_at(2026, 11, 16)));
    // Custom expression: 1,000 tokens x 4 replicas + 500 x 2.
    events.push_back(billed(601, "seed", "cluster", R"({"tokens":"1000","replicas":"4"})"));
    events.push_back(billed(602, "seed", "cluster", R"({"tokens":"500","replicas":"2"})"));
    send(f, events);

    const Line count = line_of(f, "c1", "seed", "api-request");
    REQUIRE(count.found);
    CHECK(count.metric == "us_east_requests");
    CHECK(count.quantity == "12");
    CHECK(count.filtered_out == 38);
    CHECK(count.amount_nanos == 120'000'000);
    const Line gpu = line_of(f, "c1", "seed", "inference");
    CHECK(gpu.metric == "gpu_hours");  // the identifier chosen at creation, not "gpu_compute_hours"
    CHECK(gpu.quantity == "60.2");
    CHECK(gpu.amount_nanos == 30'100'000'000);  // 60.2 x $0.50
    CHECK(line_of(f, "c1", "seed", "presence-ping").quantity == "120");
    const Line docs = line_of(f, "c1", "seed", "analyze");
    CHECK(docs.quantity == "3");
    CHECK(docs.counted == 6);
    CHECK(line_of(f, "c1", "seed", "seat-sync").quantity == "22");
    std::int64_t total = 0;
    const Line tokens = line_of(f, "c1", "seed", "cluster", &total);
    CHECK(tokens.quantity == "5000");
    CHECK(tokens.amount_nanos == 50'000'000);
    // 0.12 + 30.10 + 240 + 0.75 + 220 + 0.05
    CHECK(total == 491'020'000'000);
    // Another month has none of it.
    const HttpResponse october = invoice(f, "c1", "2026-10");
    REQUIRE_MESSAGE(october.status == 200, october.body);
    CHECK(october.body.find("\"total_nanos\":0") != std::string::npos);
  });
}

// Tiers: up to 100 units at $0.10, above at $0.05 with a $2 flat fee. VOLUME prices the whole
// quantity at its tier; GRADUATED each tier's units at that tier's price.
TEST_CASE("billing.volume_vs_graduated_at_a_tier_boundary") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"Units","aggregation":"sum","field":"units"})");
    const std::string tiers = R"("tiers":[{"upTo":"100","unitPrice":"0.10"},{"unitPrice":"0.05","flatFee":"2"}])";
    const HttpResponse put = f.put_agent("tiered", R"({"indicators":[
      {"indicator":"volume","metric":"units","pricing":{"model":"volume",)" + tiers + R"(}},
      {"indicator":"graduated","metric":"units","pricing":{"model":"graduated",)" + tiers + R"(}}]})");
    REQUIRE_MESSAGE(put.status == 200, put.body);
    // c100: exactly 100 units (the first tier's bound); c101: one more.
    send(f, {billed(1, "tiered", "volume", R"({"units":"100"})", "c100"),
             billed(2, "tiered", "graduated", R"({"units":"100"})", "c100"),
             billed(3, "tiered", "volume", R"({"units":"101"})", "c101"),
             billed(4, "tiered", "graduated", R"({"units":"101"})", "c101")});
    CHECK(line_of(f, "c100", "tiered", "volume").amount_nanos == 10'000'000'000);      // 100 x 0.10
    CHECK(line_of(f, "c100", "tiered", "graduated").amount_nanos == 10'000'000'000);   // 100 x 0.10
    CHECK(line_of(f, "c101", "tiered", "volume").amount_nanos == 7'050'000'000);       // 101 x 0.05 + 2
    const Line graduated = line_of(f, "c101", "tiered", "graduated");
    CHECK(graduated.amount_nanos == 12'050'000'000);  // 100 x 0.10 + 1 x 0.05 + 2
    CHECK(graduated.tiers == 2);
    CHECK(graduated.pricing == "graduated");
  });
}

TEST_CASE("billing.duplicate_event_billed_once_and_bad_values_excluded") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"GPU hours","aggregation":"sum","field":"hours"})");
    REQUIRE(f.put_agent("gpu", R"({"indicators":[{"indicator":"job","metric":"gpu_hours",
      "pricing":{"model":"flat","unitPrice":"1"}}]})").status == 200);
    send(f, {billed(1, "gpu", "job", R"({"hours":"2.5"})")});
    send(f, {billed(1, "gpu", "job", R"({"hours":"2.5"})")});  // the same event again: a duplicate
    send(f, {billed(2, "gpu", "job", R"({"minutes":"30"})"),   // no hours: excluded, not 0
             billed(3, "gpu", "job", R"({"hours":"abc"})"),    // not a number: excluded
             billed(4, "gpu", "job", R"({"hours":"1e3"})")});  // no exponent either
    const Line l = line_of(f, "c1", "gpu", "job");
    CHECK(l.quantity == "2.5");
    CHECK(l.counted == 1);
    CHECK(l.missing == 1);
    CHECK(l.not_a_number == 2);
    CHECK(l.amount_nanos == 2'500'000'000);
  });
}

TEST_CASE("billing.linked_metric_is_locked") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"GPU hours","aggregation":"sum","field":"hours"})");
    // Unlinked: anything may change.
    HttpResponse r = f.call("PUT", "/api/v1/billable-metrics/gpu_hours", R"({"name":"GPU hours","aggregation":"max","field":"hours"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    REQUIRE(f.put_agent("gpu", R"({"indicators":[{"indicator":"job","metric":"gpu_hours"}]})").status == 200);
    r = f.call("GET", "/api/v1/billable-metrics/gpu_hours");
    CHECK(r.body.find("\"linkedTo\":[\"gpu/job\"]") != std::string::npos);
    // Linked: the aggregation, field and filters are locked; the name and description are not.
    r = f.call("PUT", "/api/v1/billable-metrics/gpu_hours", R"({"name":"GPU hours","aggregation":"sum","field":"hours"})");
    CHECK(r.status == 409);
    CHECK(r.body.find("gpu/job") != std::string::npos);
    CHECK(r.body.find("locked") != std::string::npos);
    r = f.call("PUT", "/api/v1/billable-metrics/gpu_hours",
               R"({"name":"GPU hours","aggregation":"max","field":"hours","filters":[{"key":"region","values":["eu"]}]})");
    CHECK(r.status == 409);
    r = f.call("PUT", "/api/v1/billable-metrics/gpu_hours",
               R"({"name":"Peak GPU hours","description":"per job","aggregation":"max","field":"hours"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find("\"changed\":true") != std::string::npos);
    r = f.call("PUT", "/api/v1/billable-metrics/gpu_hours", R"({"identifier":"other","name":"x","aggregation":"count"})");
    CHECK(r.status == 400);  // identifiers are immutable
    r = f.call("DELETE", "/api/v1/billable-metrics/gpu_hours");
    CHECK(r.status == 409);
    CHECK(r.body.find("cannot be deleted") != std::string::npos);
    // Unlinked again: it can go.
    REQUIRE(f.put_agent("gpu", R"({"indicators":[{"indicator":"job"}]})").status == 200);
    CHECK(f.call("DELETE", "/api/v1/billable-metrics/gpu_hours").status == 200);
    CHECK(f.call("GET", "/api/v1/billable-metrics/gpu_hours").status == 404);
    // An indicator cannot link a metric that does not exist.
    r = f.put_agent("gpu", R"({"indicators":[{"indicator":"job","metric":"gpu_hours"}]})");
    CHECK(r.status == 400);
    CHECK(r.body.find("indicators[0].metric: no billable metric") != std::string::npos);
  });
}

TEST_CASE("billing.bodies_are_validated_naming_the_field") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    HttpResponse r = f.call("POST", "/api/v1/billable-metrics",
                            R"({"name":"Tokens","aggregation":"sum","expression":"event.properties.tokens * * 2"})");
    CHECK(r.status == 400);
    CHECK(r.body.find("expression: position 26") != std::string::npos);
    r = f.call("POST", "/api/v1/billable-metrics", R"({"name":"Tokens","aggregation":"average","field":"t"})");
    CHECK(r.status == 400);
    CHECK(r.body.find("aggregation: must be") != std::string::npos);
    create_metric(f, R"({"name":"Tokens","aggregation":"sum","field":"t"})");
    CHECK(f.call("POST", "/api/v1/billable-metrics", R"({"name":"tokens","aggregation":"count"})").status == 409);
    r = f.put_agent("a", R"({"indicators":[{"indicator":"x","metric":"tokens","pricing":{"model":"graduated",
        "tiers":[{"upTo":"100","unitPrice":"1"},{"upTo":"50","unitPrice":"1"},{"unitPrice":"1"}]}}]})");
    CHECK(r.status == 400);
    CHECK_MESSAGE(r.body.find("indicators[0].pricing.tiers[1].upTo: 50 is not above tiers[0].upTo 100") != std::string::npos,
                  r.body);
    // A value in a message is given as it was sent, underscores and all.
    r = f.call("POST", "/api/v1/billable-metrics",
               R"({"name":"Tok","aggregation":"sum","expression":"event.properties.t * 2","resultField":"gpu_hours!"})");
    CHECK(r.status == 400);
    CHECK_MESSAGE(r.body.find(R"(resultField: \"gpu_hours!\" may hold only A-Z a-z 0-9 _)") != std::string::npos, r.body);
    r = f.put_agent("a", R"({"indicators":[{"indicator":"x","pricing":{"model":"flat","unitPrice":"1","tiers":[]}}]})");
    CHECK(r.status == 400);
    CHECK_MESSAGE(r.body.find("indicators[0].pricing.tiers: not allowed") != std::string::npos, r.body);
    r = f.put_agent("a", R"({"indicators":[{"indicator":"x","pricing":{"model":"flat","unitPrice":"-1"}}]})");
    CHECK(r.status == 400);
    r = f.put_agent("a", R"({"indicators":[{"indicator":"x","perMinute":true,"metric":"tokens"}]})");
    CHECK(r.status == 400);
    CHECK(f.call("GET", "/api/v1/agents/a").status == 404);  // nothing half-stored
    CHECK(f.call("GET", "/api/v1/customers/nobody/invoice?period=2026-11").status == 404);
    CHECK(f.call("GET", "/api/v1/customers/nobody/invoice?period=2026-13").status == 400);
  });
}

TEST_CASE("billing.apply_file_twice_changes_nothing") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    const std::string file = R"({"metrics":[{"name":"GPU compute hours","identifier":"gpu_hours","aggregation":"sum","field":"hours"}],
      "agents":[{"agentId":"gpu-agent","name":"GPU","indicators":[{"indicator":"inference","metric":"gpu_hours",
        "pricing":{"model":"credits","creditsPerUnit":"0.01"}}]}]})";
    HttpResponse r = f.call("POST", "/api/v1/billing:apply", file);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find("\"changed\":false") == std::string::npos);
    r = f.call("POST", "/api/v1/billing:apply", file);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find("\"changed\":true") == std::string::npos);
    // A file naming a metric it does not define and the product lacks: refused, nothing written.
    r = f.call("POST", "/api/v1/billing:apply",
               R"({"agents":[{"agentId":"b","indicators":[{"indicator":"i","metric":"nope"}]}]})");
    CHECK(r.status == 400);
    CHECK(r.body.find("agents[0].indicators[0].metric") != std::string::npos);
    CHECK(f.call("GET", "/api/v1/agents/b").status == 404);
    // The agent as stored can be PUT back unchanged.
    r = f.call("GET", "/api/v1/agents/gpu-agent");
    REQUIRE(r.status == 200);
    const HttpResponse again = f.put_agent("gpu-agent", r.body);
    REQUIRE_MESSAGE(again.status == 200, again.body);
    CHECK(again.body.find("\"changed\":false") != std::string::npos);
  });
}

// Each rounding mode of a metric's total (2.44 to one place), filters with several values (exact,
// case-sensitive), and a unique value seen on both sides of a period boundary (once in each).
TEST_CASE("billing.rounding_filters_and_period_boundaries") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    for (const char* mode : {"round", "ceil", "floor"}) {
      create_metric(f, std::string(R"({"name":"V )") + mode + R"(","aggregation":"sum","field":"v",
                       "rounding":{"mode":")" + mode + R"(","precision":1}})");
    }
    create_metric(f, R"({"name":"US pro requests","aggregation":"count",
                         "filters":[{"key":"region","values":["us-east-1","us-west-2"]},{"key":"tier","values":["pro"]}]})");
    create_metric(f, R"({"name":"Documents","aggregation":"unique_count","field":"doc"})");
    REQUIRE(f.put_agent("a", R"({"indicators":[
      {"indicator":"round","metric":"v_round","pricing":{"model":"flat","unitPrice":"1"}},
      {"indicator":"ceil","metric":"v_ceil","pricing":{"model":"flat","unitPrice":"1"}},
      {"indicator":"floor","metric":"v_floor","pricing":{"model":"flat","unitPrice":"1"}},
      {"indicator":"req","metric":"us_pro_requests","pricing":{"model":"flat","unitPrice":"1"}},
      {"indicator":"doc","metric":"documents","pricing":{"model":"flat","unitPrice":"1"}}]})").status == 200);
    std::vector<Tracked> events;
    std::uint64_t n = 1;
    for (const char* indicator : {"round", "ceil", "floor"}) {
      events.push_back(billed(n++, "a", indicator, R"({"v":"1.2"})"));
      events.push_back(billed(n++, "a", indicator, R"({"v":"1.24"})"));
    }
    for (const char* tags : {R"({"region":"us-east-1","tier":"pro"})", R"({"region":"us-west-2","tier":"pro"})",
                             R"({"region":"eu-west-1","tier":"pro"})", R"({"region":"us-east-1","tier":"free"})",
                             R"({"region":"US-EAST-1","tier":"pro"})", R"({"region":"us-east-1"})"}) {
      events.push_back(billed(n++, "a", "req", tags));
    }
    // doc-1 on the last second of October and the first of November; doc-2 twice in November.
    events.push_back(billed(n++, "a", "doc", R"({"doc":"doc-1"})", "c1", ns_at(2026, 11, 1) - 1'000'000'000));
    events.push_back(billed(n++, "a", "doc", R"({"doc":"doc-1"})", "c1", ns_at(2026, 11, 1)));
    events.push_back(billed(n++, "a", "doc", R"({"doc":"doc-2"})", "c1", ns_at(2026, 11, 2)));
    events.push_back(billed(n++, "a", "doc", R"({"doc":"doc-2"})", "c1", ns_at(2026, 11, 30, 23, 59, 59)));
    send(f, events);
    CHECK(line_of(f, "c1", "a", "round").quantity == "2.4");
    CHECK(line_of(f, "c1", "a", "ceil").quantity == "2.5");
    CHECK(line_of(f, "c1", "a", "floor").quantity == "2.4");
    const Line req = line_of(f, "c1", "a", "req");
    CHECK(req.quantity == "2");
    CHECK(req.filtered_out == 4);
    CHECK(line_of(f, "c1", "a", "doc").quantity == "2");
    const HttpResponse october = invoice(f, "c1", "2026-10");
    REQUIRE(october.status == 200);
    CHECK(october.body.find(R"("indicator":"doc","metric":"documents","pricing":"flat","unit":"unit","quantity":"1")") !=
          std::string::npos);
    // An explicit range: the first of November only.
    const HttpResponse day = f.call("GET", "/api/v1/customers/c1/invoice?from_ns=" + std::to_string(ns_at(2026, 11, 1)) +
                                               "&to_ns=" + std::to_string(ns_at(2026, 11, 2)));
    REQUIRE_MESSAGE(day.status == 200, day.body);
    CHECK(day.body.find(R"("indicator":"doc","metric":"documents","pricing":"flat","unit":"unit","quantity":"1")") !=
          std::string::npos);
  });
}

// One customer of a cost-only agent (no indicator: no invoice line), a revenue-only one ($0.20
// per event) and a metered one at once.
TEST_CASE("billing.cost_only_revenue_only_and_metered_agents") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"GPU hours","aggregation":"sum","field":"hours"})");
    REQUIRE(f.put_agent("lead", R"({"indicators":[{"indicator":"lead_qualified","pricePerEvent":"0.20"}]})").status == 200);
    REQUIRE(f.put_agent("hook", R"({"indicators":[{"indicator":"paid","pricing":{"model":"flat","unitPrice":"1.5"}}]})")
                .status == 200);
    REQUIRE(f.put_agent("gpu", R"({"indicators":[{"indicator":"job","metric":"gpu_hours",
      "pricing":{"model":"flat","unitPrice":"0.5"}}]})").status == 200);
    send(f, {{.n = 1, .agent = "ops", .model = "gpt-4o", .kind = "llm", .cost_nanos = 120'000'000},
             billed(2, "lead", "lead_qualified", "{}"), billed(3, "lead", "lead_qualified", "{}"),
             billed(4, "gpu", "job", R"({"hours":"3"})"), billed(5, "hook", "paid", "{}")});
    std::int64_t total = 0;
    const Line lead = line_of(f, "c1", "lead", "lead_qualified", &total);
    CHECK(lead.pricing == "flat");
    CHECK(lead.quantity == "2");
    CHECK(lead.amount_nanos == 400'000'000);
    CHECK(line_of(f, "c1", "gpu", "job").amount_nanos == 1'500'000'000);
    CHECK_FALSE(line_of(f, "c1", "ops", "").found);
    CHECK(line_of(f, "c1", "hook", "paid").amount_nanos == 1'500'000'000);
    CHECK(total == 3'400'000'000);
    // The profit report's revenue agrees with the invoice: per event as priced at ingest, metered
    // as the invoice prices it.
    CHECK(profit_line(f, "agent", "lead").revenue == 400'000'000);
    CHECK(profit_line(f, "agent", "hook").revenue == 1'500'000'000);
    CHECK(profit_line(f, "agent", "gpu").revenue == 1'500'000'000);
    CHECK(profit_line(f, "agent", "gpu").without_price == 0);
    CHECK(profit_line(f, "agent", "ops").cost == 120'000'000);
    CHECK(profit_line(f, "customer", "c1").revenue == total);
  });
}

// The profit report's revenue of metered and tiered indicators is what their invoices accrue: a
// day earns what it added to its period's invoice, so the days add up to the invoice, and a range
// that starts or ends inside a period earns the difference of the invoice at its ends. A price
// change bills only the events after it, on the invoice and in the report alike.
TEST_CASE("billing.profit_revenue_comes_from_the_invoices") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"GPU hours","aggregation":"sum","field":"hours"})");
    REQUIRE(f.put_agent("gpu", R"({"indicators":[{"indicator":"job","metric":"gpu_hours","pricing":{"model":"graduated",
      "tiers":[{"upTo":"10","unitPrice":"1"},{"unitPrice":"0.5"}]}}]})").status == 200);
    REQUIRE(f.put_agent("lead", R"({"indicators":[{"indicator":"won","pricePerEvent":"0.20"}]})").status == 200);
    send(f, {billed(1, "gpu", "job", R"({"hours":"6"})", "c1", ns_at(2026, 11, 3)),
             billed(2, "gpu", "job", R"({"hours":"6"})", "c1", ns_at(2026, 11, 5)),  // 4 h at $1, 2 h at $0.50
             billed(3, "gpu", "job", R"({"hours":"2"})", "c2", ns_at(2026, 11, 5)),
             billed(4, "gpu", "job", R"({"hours":"3"})", "c1", ns_at(2026, 12, 2)),
             billed(5, "gpu", "job", R"({"hours":"x"})", "c2", ns_at(2026, 11, 6)),  // excluded: billed 0
             billed(6, "lead", "won", "{}", "c1", ns_at(2026, 11, 5)), billed(7, "lead", "won", "{}", "c1", ns_at(2026, 11, 6))});
    REQUIRE(f.put_agent("lead", R"({"indicators":[{"indicator":"won","pricePerEvent":"0.30"}]})").status == 200);
    send(f, {billed(8, "lead", "won", "{}", "c1", ns_at(2026, 11, 7))});

    std::int64_t c1_total = 0, c2_total = 0;
    CHECK(line_of(f, "c1", "gpu", "job", &c1_total).amount_nanos == 11'000'000'000);  // 10 x $1 + 2 x $0.50
    CHECK(line_of(f, "c1", "lead", "won").amount_nanos == 700'000'000);              // 0.20 + 0.20 + 0.30
    CHECK(line_of(f, "c2", "gpu", "job", &c2_total).amount_nanos == 2'000'000'000);
    CHECK(profit_line(f, "customer", "c1").revenue == c1_total);
    CHECK(profit_line(f, "customer", "c2").revenue == c2_total);
    CHECK(profit_line(f, "agent", "gpu").revenue == 13'000'000'000);
    CHECK(profit_line(f, "agent", "gpu").without_price == 0);
    CHECK(profit_line(f, "agent", "lead").revenue == 700'000'000);
    CHECK(profit_line(f, "indicator", "job").revenue == 13'000'000'000);
    CHECK(profit_line(f, "day", "2026-11-03").revenue == 6'000'000'000);
    CHECK(profit_line(f, "day", "2026-11-05").revenue == 7'000'000'000 + 200'000'000);  // c1 5 + c2 2 + a lead
    CHECK(profit_line(f, "day", "2026-11-06").revenue == 200'000'000);
    CHECK(profit_line(f, "agent", "total").revenue == c1_total + c2_total);

    // November 4 to December 3: c1's November invoice less what it had on the 4th (11 - 6), its
    // December so far (3 h at $1), c2's November (2), and the leads of the 5th to the 7th.
    const HttpResponse r = f.call("GET", "/api/v1/reports/profit?by=agent&from_ns=" + std::to_string(ns_at(2026, 11, 4)) +
                                             "&to_ns=" + std::to_string(ns_at(2026, 12, 3)));
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find(R"({"key":"gpu","cost_nanos":null,"revenue_nanos":10000000000,)") != std::string::npos);
    CHECK(r.body.find(R"({"key":"lead","cost_nanos":null,"revenue_nanos":700000000,)") != std::string::npos);
  });
}

// A customer with a subscription is invoiced over its period: with period=2026-11, the one that
// starts in November (Nov 5 to Dec 5), not the calendar month.
TEST_CASE("billing.invoice_period_follows_the_subscription") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    HttpResponse r = f.call("POST", "/api/v1/config/plans",
                            R"({"soft_gate_at":0.80,"hard_gate_at":1.00,"plans":[{"name":"pro","max_spend_per_period":49.00}]})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    REQUIRE(f.put_agent("a", R"({"indicators":[{"indicator":"call","pricePerEvent":"1"}]})").status == 200);
    send(f, {billed(1, "a", "call", "{}", "c1", ns_at(2026, 11, 4)), billed(2, "a", "call", "{}", "c1", ns_at(2026, 11, 20)),
             billed(3, "a", "call", "{}", "c1", ns_at(2026, 12, 4)), billed(4, "a", "call", "{}", "c1", ns_at(2026, 12, 6))});
    r = f.call("POST", "/api/v1/users/c1/subscription",
               R"({"plan":"pro","period_start":"2026-11-05T00:00:00Z","period_end":"2026-12-05T00:00:00Z"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    r = invoice(f, "c1");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find("\"start_ns\":" + std::to_string(ns_at(2026, 11, 5))) != std::string::npos);
    CHECK(r.body.find("\"end_ns\":" + std::to_string(ns_at(2026, 12, 5))) != std::string::npos);
    CHECK(line_of(f, "c1", "a", "call").quantity == "2");
    // Another customer, without a subscription: the calendar month.
    send(f, {billed(5, "a", "call", "{}", "c2", ns_at(2026, 11, 4)), billed(6, "a", "call", "{}", "c2", ns_at(2026, 12, 4))});
    r = invoice(f, "c2");
    CHECK(r.body.find(R"("period":{"label":"2026-11")") != std::string::npos);
    CHECK(line_of(f, "c2", "a", "call").quantity == "1");
  });
}

// More events than one page of the storage's read (1,000), all at the same instant: the pages
// follow each other by event id, and every event is counted once.
TEST_CASE("billing.invoice_reads_every_page") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"Requests","aggregation":"count"})");
    create_metric(f, R"({"name":"Units","aggregation":"sum","field":"u"})");
    REQUIRE(f.put_agent("a", R"({"indicators":[{"indicator":"req","metric":"requests"},
      {"indicator":"unit","metric":"units","pricing":{"model":"flat","unitPrice":"0.001"}}]})").status == 200);
    std::uint64_t n = 1;
    for (int batch = 0; batch < 5; ++batch) {
      std::vector<Tracked> events;
      for (int i = 0; i < 500; ++i, ++n) events.push_back(billed(n, "a", n % 2 ? "req" : "unit", R"({"u":"2"})"));
      send(f, events);
    }
    const Line units = line_of(f, "c1", "a", "unit");
    CHECK(units.quantity == "2500");  // 1,250 events of 2
    CHECK(units.counted == 1250);
    CHECK(units.amount_nanos == 2'500'000'000);
    const HttpResponse r = invoice(f, "c1");
    CHECK(r.body.find("\"unbilledEvents\":1250") != std::string::npos);  // "req" has no price
  });
}

// The profit report reads the product's billing events in pages of 10,000 (every customer at
// once): more than one page, most of them at one instant (the pages follow each other by event
// id), and every customer's revenue is still its invoice's.
TEST_CASE("billing.profit_report_reads_every_page_of_the_product") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"Units","aggregation":"sum","field":"u"})");
    REQUIRE(f.put_agent("a", R"({"indicators":[{"indicator":"unit","metric":"units","pricing":{"model":"graduated",
      "tiers":[{"upTo":"5000","unitPrice":"0.001"},{"unitPrice":"0.0005"}]}}]})").status == 200);
    std::uint64_t n = 1;
    for (int batch = 0; batch < 21; ++batch) {
      std::vector<Tracked> events;
      for (int i = 0; i < 500; ++i, ++n) {
        const std::int64_t ts = n % 7 == 0 ? ns_at(2026, 11, 3) + static_cast<std::int64_t>(n) : ns_at(2026, 11, 17, 10);
        events.push_back(billed(n, "a", "unit", R"({"u":"1"})", "c" + std::to_string(n % 3), ts));
      }
      send(f, events);
    }
    std::int64_t sum = 0;
    for (const char* c : {"c0", "c1", "c2"}) {
      std::int64_t total = 0;
      const Line line = line_of(f, c, "a", "unit", &total);
      CHECK(line.quantity == "3500");  // 10,500 events of 1 unit, a third each
      CHECK(total == 3'500'000'000);   // under the first tier
      CHECK(profit_line(f, "customer", c).revenue == total);
      sum += total;
    }
    CHECK(profit_line(f, "agent", "a").revenue == sum);
    CHECK(profit_line(f, "agent", "a").without_price == 0);
  });
}

// CREDITS: 0.01 credits per effective token (seed 003). Without a wallet (not built yet) every
// credit is overage, charged only at the pricing's overage rate.
TEST_CASE("billing.credits_without_a_wallet_are_overage") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    create_metric(f, R"({"name":"Effective tokens","aggregation":"sum",
                         "expression":"event.properties.tokens * event.properties.replicas"})");
    REQUIRE(f.put_agent("cluster", R"({"indicators":[
      {"indicator":"free","metric":"effective_tokens","pricing":{"model":"credits","creditsPerUnit":"0.01"}},
      {"indicator":"paid","metric":"effective_tokens","pricing":{"model":"credits","creditsPerUnit":"0.01",
        "overageUsdPerCredit":"0.02"}}]})").status == 200);
    send(f, {billed(1, "cluster", "free", R"({"tokens":"1000","replicas":"4"})"),
             billed(2, "cluster", "free", R"({"tokens":"500","replicas":"2"})"),
             billed(3, "cluster", "paid", R"({"tokens":"1000","replicas":"4"})"),
             billed(4, "cluster", "paid", R"({"tokens":"500","replicas":"2"})")});
    const HttpResponse r = invoice(f, "c1");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body.find(R"("quantity":"5000","tiers":[],"amount":"0","amount_nanos":0,"amount_usd":"0","credits":"50","creditsUsed":"0","creditsOverage":"50")") !=
          std::string::npos);
    CHECK(line_of(f, "c1", "cluster", "paid").amount_nanos == 1'000'000'000);  // 50 credits x $0.02
  });
}

}  // namespace
}  // namespace paygent::server::test

namespace paygent::server::test {
namespace {

// invoice_ready (docs/webhooks.md): once a customer's billing period has ended (and the grace for
// late events has passed), its invoice goes to the endpoints that want it, once.
TEST_CASE("billing.invoice_ready_alert_once_per_customer_and_period") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    REQUIRE(f.put_agent("lead", R"({"indicators":[{"indicator":"won","pricePerEvent":"0.20"}]})").status == 200);
    send(f, {billed(1, "lead", "won", "{}", "c1", ns_at(2026, 11, 5)), billed(2, "lead", "won", "{}", "c1", ns_at(2026, 11, 6)),
             billed(3, "lead", "won", "{}", "c2", ns_at(2026, 11, 7))});
    // Without an endpoint that wants it, nothing is raised.
    absl::StatusOr<int> raised = f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 1, 2)));
    REQUIRE_MESSAGE(raised.ok(), raised.status().ToString());
    CHECK(*raised == 0);
    HttpResponse r = f.call("POST", "/api/v1/webhooks", R"({"url":"http://127.0.0.1:9/i","events":["invoice_ready"]})");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    // November not over (and then within the hour's grace): nothing.
    CHECK(*f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 11, 30, 23))) == 0);
    CHECK(*f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 1) + 30LL * 60'000'000'000)) == 0);
    // A subscriber whose first period began 30 minutes ago: before it there is no ended period of
    // its own (the first one stands for the time before it), so nothing of it is raised.
    r = f.call("POST", "/api/v1/config/plans",
               R"({"soft_gate_at":0.80,"hard_gate_at":1.00,"plans":[{"name":"pro","max_spend_per_period":49.00}]})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    send(f, {billed(6, "lead", "won", "{}", "s1", ns_at(2026, 12, 1, 1, 40))});  // in its open period
    r = f.call("POST", "/api/v1/users/s1/subscription",
               R"({"plan":"pro","period_start":"2026-12-01T01:30:00Z","period_end":"2027-01-01T01:30:00Z"})");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    // After it: one per customer, and never again.
    CHECK(*f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 1, 2))) == 2);
    CHECK(*f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 1, 3))) == 0);
    std::vector<std::string> bodies;
    for (;;) {
      const std::int64_t now = absl::ToUnixNanos(absl::Now());
      absl::StatusOr<std::vector<WebhookDelivery>> d = f.storage->claim_webhook_deliveries(now, now + 86'400'000'000'000, 100, {});
      REQUIRE(d.ok());
      if (d->empty()) break;
      for (const WebhookDelivery& x : *d) {
        CHECK(x.type == "invoice_ready");
        bodies.push_back(x.body);
      }
    }
    REQUIRE(bodies.size() == 2);
    const std::string c1 = bodies[0].find(R"("user_id":"c1")") != std::string::npos ? bodies[0] : bodies[1];
    CHECK(c1.find(R"("period_start_ns":)" + std::to_string(ns_at(2026, 11, 1)) + R"(,"period_end_ns":)" +
                  std::to_string(ns_at(2026, 12, 1)) + R"(,"total_nanos":400000000,"total_usd":"0.4","lines":1,"billed_events":2)") !=
          std::string::npos);
    // A customer whose ended period has no billing event (only October's) has nothing to bill.
    send(f, {billed(4, "lead", "won", "{}", "c3", ns_at(2026, 10, 7))});
    CHECK(*f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 1, 4))) == 0);
    // Past the week's lookback a period is not raised any more: a paygentd that was down longer
    // does not flood receivers with old invoices.
    send(f, {billed(5, "lead", "won", "{}", "c4", ns_at(2026, 11, 8))});
    CHECK(*f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 8, 2))) == 0);
    CHECK(*f.api->raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 8, 0, 30))) == 1);  // still within it
    // Every ended period within the lookback is looked at, not only the last: with 60 days, c5's
    // October and November, and c3's October (its events of then), each once.
    send(f, {billed(7, "lead", "won", "{}", "c5", ns_at(2026, 10, 10)), billed(8, "lead", "won", "{}", "c5", ns_at(2026, 11, 10))});
    Api longer(*f.storage, f.metrics,
               ApiOptions{.admin_token = std::string(kAdminToken), .invoice_lookback = absl::Hours(24 * 60),
                          .clock = [] { return test_now(); }});
    CHECK(*longer.raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 1, 2))) == 3);
    CHECK(*longer.raise_invoice_ready(absl::FromUnixNanos(ns_at(2026, 12, 1, 3))) == 0);
  });
}

}  // namespace
}  // namespace paygent::server::test

namespace paygent::server::test {
namespace {

// The profit report reads the product's billing events in one product-wide pass: another
// product's customer of the same id, agent and metric is never in it, nor its invoice.
TEST_CASE("billing.profit_revenue_of_another_product_is_never_read") {
  for_each_backend([](StorageBackend& backend) {
    AgentsFixture f(backend);
    const HttpResponse other = f.call("POST", "/api/v1/products", R"({"name":"other"})", kAdminToken);
    REQUIRE_MESSAGE(other.status == 201, other.body);
    const std::string other_key = paygent::testing::json_string_member(other.body, "api_key");
    for (const std::string& key : {f.key, other_key}) {
      REQUIRE(f.call("POST", "/api/v1/billable-metrics", R"({"name":"GPU hours","aggregation":"sum","field":"hours"})", key)
                  .status == 201);
      REQUIRE(f.call("PUT", "/api/v1/agents/gpu", R"({"indicators":[{"indicator":"job","metric":"gpu_hours",
        "pricing":{"model":"flat","unitPrice":"1"}}]})", key).status == 200);
    }
    send(f, {billed(1, "gpu", "job", R"({"hours":"2"})")});
    const HttpResponse theirs =
        f.call("POST", "/api/v1/events:batch", tracked_batch({billed(2, "gpu", "job", R"({"hours":"500"})")}), other_key);
    REQUIRE_MESSAGE(theirs.status == 200, theirs.body);
    CHECK(profit_line(f, "customer", "c1").revenue == 2'000'000'000);
    CHECK(profit_line(f, "agent", "gpu").revenue == 2'000'000'000);
    CHECK(profit_line(f, "day", "2026-11-17").revenue == 2'000'000'000);
    CHECK(line_of(f, "c1", "gpu", "job").amount_nanos == 2'000'000'000);
  });
}

}  // namespace
}  // namespace paygent::server::test
