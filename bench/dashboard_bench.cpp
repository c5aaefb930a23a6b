// What each dashboard view costs paygentd (docs/dashboard.md, issue 13's target: 100 ms a view with
// 1,000,000 events stored). A SqliteStorage holds 1,000,000 events of November 2026
// (PAYGENT_DASHBOARD_BENCH_EVENTS to change it): 1,000 users, 10 models, 5 agents; every 10th event
// is full tracking (a billing event priced $0.02); a $49 monthly plan caps every user, so the
// forecast reads each user's month. Each view is the API calls its page makes, through
// Api::handle_request with the product's key (the JSON included):
//   dashboard_view/0  overview  reports/usage?group_by=day + reports/profit?by=day
//   dashboard_view/1  users     reports/usage?group_by=user + forecast + reports/profit?by=customer
//   dashboard_view/2  models    reports/usage?group_by=model + group_by=provider
//   dashboard_view/3  agents    reports/profit?by=agent + by=indicator + agents
// beside the baseline, the raw aggregate the views stand for, in plain SQL over the events table:
//   dashboard_raw_sql/0  SUM(cost) ... GROUP BY day      dashboard_raw_sql/1  ... GROUP BY user_id
//   dashboard_raw_sql/2  ... GROUP BY json_extract(meta_tags, '$.region'), beside dashboard_call/8,
//   the profit report by=tag:region ("region" is a report tag: its rollup, filled at ingest), and
//   dashboard_call/9 by=tag:tier (not one: read from the events)
// Each checks its figures against what was ingested (the month's spend and revenue to the nano-USD,
// the number of users, models and agents).
//   build/bench/paygent_bench --benchmark_filter=dashboard_ --benchmark_repetitions=3
#include <benchmark/benchmark.h>
#include <simdjson.h>
#include <sqlite3.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "server/api.h"
#include "server/metrics.h"
#include "server/sqlite_storage.h"
#include "support/paygentd_process.h"

namespace {

using paygent::server::EventRecord;
using paygent::server::HttpResponse;

constexpr int kBatch = 1000;
constexpr int kUsers = 1000;
constexpr int kModels = 10;
constexpr int kAgents = 5;
constexpr std::int64_t kNovember = 1'793'491'200'000'000'000;  // 2026-11-01T00:00:00Z
constexpr std::int64_t kDecember = 1'796'083'200'000'000'000;
constexpr std::int64_t kPrice = 20'000'000;  // $0.02 a billed call
constexpr const char* kAdmin = "bench-admin";
constexpr const char* kMonth = "from_ns=1793491200000000000&to_ns=1796083200000000000";

std::int64_t cost_of(std::uint64_t n) { return 1'000'000 + static_cast<std::int64_t>(n % 1000) * 1'000; }

struct World {
  paygent::testing::TempDir dir{"paygent-bench-dashboard"};
  std::unique_ptr<paygent::server::SqliteStorage> storage;
  paygent::server::Metrics metrics;
  std::unique_ptr<paygent::server::Api> api;
  std::string key;
  std::int64_t events = 0;
  std::int64_t spend = 0;
  std::int64_t revenue = 0;
  std::string error;

  HttpResponse get(const std::string& target) {
    return api->handle_request(paygent::server::HttpRequest{.method = "GET", .target = target, .authorization = "Bearer " + key});
  }

  World() {
    const char* env = std::getenv("PAYGENT_DASHBOARD_BENCH_EVENTS");
    events = env != nullptr ? std::atoll(env) : 1'000'000;
    auto opened = paygent::server::SqliteStorage::open(dir.path() + "/p.db");
    if (!opened.ok()) {
      error = "cannot open the storage";
      return;
    }
    storage = *std::move(opened);
    // "Now" is in November, so that the forecast scans the users' current period.
    api = std::make_unique<paygent::server::Api>(
        *storage, metrics,
        paygent::server::ApiOptions{.admin_token = kAdmin, .clock = [] { return absl::FromUnixNanos(kDecember - 1); }});
    const HttpResponse product = api->handle_request(paygent::server::HttpRequest{
        .method = "POST", .target = "/api/v1/products", .content_type = "application/json",
        .authorization = std::string("Bearer ") + kAdmin, .body = R"({"name":"bench"})"});
    key = paygent::testing::json_string_member(product.body, "api_key");
    const std::string product_id = paygent::testing::json_string_member(product.body, "product_id");
    for (int a = 0; a < kAgents; ++a) {
      const HttpResponse r = api->handle_request(paygent::server::HttpRequest{
          .method = "PUT", .target = "/api/v1/agents/a" + std::to_string(a), .content_type = "application/json",
          .authorization = "Bearer " + key, .body = R"({"indicators":[{"indicator":"call","pricePerEvent":"0.02"}]})"});
      if (r.status != 200 && r.status != 201) {
        error = "cannot create the agents: " + r.body;
        return;
      }
    }
    // A plan with a period cap, so that the forecast reads every user's usage this period.
    const HttpResponse plans = api->handle_request(paygent::server::HttpRequest{
        .method = "POST", .target = "/api/v1/config/plans", .content_type = "application/json",
        .authorization = "Bearer " + key,
        .body = R"({"default_plan":"pro","plans":[{"name":"pro","max_spend_per_period":49,"period":"month"}]})"});
    if (plans.status != 200 && plans.status != 201) {
      error = "cannot set the plans: " + plans.body;
      return;
    }
    // "region" is a report tag (its rollup is kept by the ingest below); "tier" is not.
    const HttpResponse tags = api->handle_request(paygent::server::HttpRequest{
        .method = "PUT", .target = "/api/v1/config/report-tags", .content_type = "application/json",
        .authorization = "Bearer " + key, .body = R"({"tags":["region"]})"});
    if (tags.status != 200) {
      error = "cannot declare the report tag: " + tags.body;
      return;
    }
    std::vector<EventRecord> batch;
    const std::int64_t step = (kDecember - kNovember) / events;
    for (std::int64_t i = 0; i < events; ++i) {
      const auto n = static_cast<std::uint64_t>(i);
      EventRecord e;
      char id[40];
      std::snprintf(id, sizeof id, "%032llx", static_cast<unsigned long long>(n + 1));
      e.id = id;
      e.user_id = "u" + std::to_string(n % kUsers);
      e.model = "model-" + std::to_string(n / 7 % kModels);
      e.provider = n / 7 % kModels < 7 ? "openai" : "anthropic";  // two providers
      e.agent_id = "a" + std::to_string(n % kAgents);
      e.input_tokens = 500 + static_cast<std::int64_t>(n % 300);
      e.output_tokens = 100 + static_cast<std::int64_t>(n % 50);
      e.cost_nanos = cost_of(n);
      e.ts_ns = kNovember + i * step;
      static constexpr const char* kRegions[] = {R"({"region":"eu"})", R"({"region":"us","tier":"gold"})",
                                                 R"({"region":"apac"})", R"({"tier":"free"})"};
      e.meta_tags_json = kRegions[n % 4];
      if (n % 10 == 0) {
        e.indicator = "call";
        revenue += kPrice;
      }
      spend += e.cost_nanos;
      batch.push_back(std::move(e));
      if (batch.size() == kBatch || i + 1 == events) {
        if (!storage->ingest(product_id, batch).ok()) {
          error = "a batch was not stored";
          return;
        }
        batch.clear();
      }
    }
  }
};

World& world() {
  static World* w = new World();  // built once for all the benchmarks; never destroyed
  return *w;
}

// The sum of `field` over the rows of a report reply, and their number; -1 when unreadable.
std::pair<std::int64_t, std::int64_t> sum_rows(const std::string& body, const char* field) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array rows;
  if (parser.parse(body).get(root) != simdjson::SUCCESS || root["rows"].get_array().get(rows) != simdjson::SUCCESS) return {-1, -1};
  std::int64_t sum = 0, count = 0;
  for (simdjson::dom::element row : rows) {
    std::int64_t v = 0;
    if (row[field].get_int64().get(v) == simdjson::SUCCESS) sum += v;
    ++count;
  }
  return {sum, count};
}

// One view's API calls; an empty string when its figures are right, else what is wrong.
std::string view(World& w, int which) {
  const std::string month = kMonth;
  auto usage = [&](const char* by, std::int64_t rows) -> std::string {
    const HttpResponse r = w.get("/api/v1/reports/usage?" + month + "&group_by=" + by);
    const auto [sum, count] = sum_rows(r.body, "cost_nanos");
    if (r.status != 200 || sum != w.spend || count != rows) return std::string("usage by ") + by + ": " + r.body.substr(0, 200);
    return "";
  };
  auto profit = [&](const char* by, std::int64_t rows) -> std::string {
    const HttpResponse r = w.get("/api/v1/reports/profit?" + month + "&by=" + by);
    const auto [sum, count] = sum_rows(r.body, "revenue_nanos");
    if (r.status != 200 || sum != w.revenue || (rows >= 0 && count != rows)) return std::string("profit by ") + by + ": " + r.body.substr(0, 200);
    return "";
  };
  std::string wrong;
  switch (which) {
    case 0:
      wrong = usage("day", 30);
      if (wrong.empty()) wrong = profit("day", 30);
      break;
    case 1:
      wrong = usage("user", kUsers);
      if (wrong.empty() && w.get("/api/v1/forecast").status != 200) wrong = "forecast";
      if (wrong.empty()) wrong = profit("customer", kUsers);
      break;
    case 2:
      wrong = usage("model", kModels);
      if (wrong.empty()) wrong = usage("provider", 2);
      break;
    case 3:
      wrong = profit("agent", kAgents);
      if (wrong.empty()) wrong = profit("indicator", -1);
      if (wrong.empty() && w.get("/api/v1/agents").status != 200) wrong = "agents";
      break;
  }
  return wrong;
}

void dashboard_view(benchmark::State& state) {
  World& w = world();
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return;
  }
  const int which = static_cast<int>(state.range(0));
  for (auto _ : state) {
    if (const std::string wrong = view(w, which); !wrong.empty()) {
      state.SkipWithError(("wrong figures: " + wrong).c_str());
      return;
    }
  }
  state.SetLabel(which == 0 ? "overview" : which == 1 ? "users" : which == 2 ? "models" : "agents");
  state.counters["events"] = static_cast<double>(w.events);
}

void dashboard_raw_sql(benchmark::State& state) {
  World& w = world();
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  const int which = static_cast<int>(state.range(0));
  const char* key = which == 0 ? "(ts_ns - ?1) / 86400000000000" : which == 1 ? "user_id" : "json_extract(meta_tags, '$.region')";
  const std::string sql = std::string("SELECT ") + key +
                          ", COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_nanos) FROM events "
                          "WHERE product = 1 AND ts_ns >= ?1 AND ts_ns < ?2 GROUP BY 1";
  if (!w.error.empty() || sqlite3_open_v2((w.dir.path() + "/p.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    state.SkipWithError("cannot read the database");
    sqlite3_close(db);
    return;
  }
  for (auto _ : state) {
    sqlite3_bind_int64(stmt, 1, kNovember);
    sqlite3_bind_int64(stmt, 2, kDecember);
    std::int64_t sum = 0, rows = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      sum += sqlite3_column_int64(stmt, 4);
      ++rows;
    }
    sqlite3_reset(stmt);
    if (sum != w.spend || rows != (which == 0 ? 30 : which == 1 ? kUsers : 4)) {
      state.SkipWithError("the raw aggregate does not match what was ingested");
      break;
    }
  }
  state.SetLabel(which == 0 ? "GROUP BY day" : which == 1 ? "GROUP BY user_id" : "GROUP BY json_extract(meta_tags, '$.region')");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

// Each API call of the views on its own, to see where a view's time goes.
constexpr const char* kCalls[] = {"reports/usage?group_by=day", "reports/usage?group_by=user", "reports/usage?group_by=model",
                                  "reports/profit?by=day",      "reports/profit?by=customer",  "reports/profit?by=agent",
                                  "reports/profit?by=indicator", "forecast",                    "reports/profit?by=tag%3Aregion",
                                  "reports/profit?by=tag%3Atier"};

void dashboard_call(benchmark::State& state) {
  World& w = world();
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return;
  }
  const std::string call = kCalls[state.range(0)];
  const bool report = call.starts_with("reports/");
  const std::string target = "/api/v1/" + call + (report ? std::string("&") + kMonth : "");
  for (auto _ : state) {
    const HttpResponse r = w.get(target);
    const auto [sum, count] = sum_rows(r.body, call.starts_with("reports/usage") ? "cost_nanos" : "revenue_nanos");
    // A profit report's rows hold the whole month's cost too (a tag's rollup misses no event).
    const std::int64_t cost = call.starts_with("reports/profit") ? sum_rows(r.body, "cost_nanos").first : w.spend;
    if (r.status != 200 || cost != w.spend || (report && sum != (call.starts_with("reports/usage") ? w.spend : w.revenue))) {
      state.SkipWithError(("wrong figures: " + r.body.substr(0, 200)).c_str());
      return;
    }
  }
  state.SetLabel(call);
}

}  // namespace

BENCHMARK(dashboard_call)->DenseRange(0, 9)->Unit(benchmark::kMillisecond);
BENCHMARK(dashboard_raw_sql)->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
BENCHMARK(dashboard_view)->DenseRange(0, 3)->Unit(benchmark::kMillisecond);
