// The storage contract suite: the same cases against every Storage (server/storage.h), SQLite and
// a real PostgreSQL (tests/server/storage_backends.h): atomic idempotent ingest, reports that read
// whole days from usage_daily and the edges from the events (checked against a brute-force sum),
// persistence across reopening, tenant scoping, and two instances on one database (replicas).
#include "server/storage.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"

namespace paygent::server::test {
namespace {

// The report computed the slow, obvious way.
GroupedTotals brute_force(const std::vector<EventRecord>& events, const ReportQuery& q) {
  GroupedTotals out;
  for (const EventRecord& e : events) {
    if (e.ts_ns < q.from_ns || e.ts_ns >= q.to_ns) continue;
    if (q.user_id && e.user_id != *q.user_id) continue;
    std::string key;
    const absl::CivilDay day = absl::CivilDay(1970, 1, 1) + e.ts_ns / 86'400'000'000'000;
    switch (q.group_by) {
      case ReportGroup::kUser: key = e.user_id; break;
      case ReportGroup::kModel: key = e.model; break;
      case ReportGroup::kSession: key = e.session_id; break;
      case ReportGroup::kProvider: key = e.provider; break;
      case ReportGroup::kDay: key = absl::FormatCivilTime(day); break;
      case ReportGroup::kMonth: key = absl::FormatCivilTime(absl::CivilMonth(day)); break;
    }
    Totals& t = out[key];
    ++t.calls;
    t.input_tokens += e.input_tokens;
    t.output_tokens += e.output_tokens;
    t.cached_input_tokens += e.cached_input_tokens;
    t.cost_nanos += e.cost_nanos;
  }
  return out;
}

TEST_CASE("server.storage_reports_match_a_brute_force_sum") {
  for_each_backend([](StorageBackend& backend) {
  auto storage = backend.fresh();
  REQUIRE(storage->create_product("p1", "one", std::string(64, '1')).ok());
  REQUIRE(storage->create_product("p2", "two", std::string(64, '2')).ok());
  std::mt19937_64 rng(42);
  const std::int64_t start = ns_at(2026, 10, 25);
  const std::int64_t span = ns_at(2026, 11, 10) - start;
  std::vector<EventRecord> events;
  for (int batch = 0; batch < 20; ++batch) {
    std::vector<EventRecord> records;
    for (int i = 0; i < 50; ++i) {
      const int n = batch * 50 + i;
      records.push_back(record(event_id(n), "u" + std::to_string(rng() % 5), "m" + std::to_string(rng() % 3),
                               "s" + std::to_string(rng() % 4), static_cast<std::int64_t>(rng() % 100'000),
                               start + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span))));
      records.back().provider = "provider-" + std::to_string(rng() % 3);
    }
    const absl::StatusOr<IngestResult> r = storage->ingest("p1", records);
    REQUIRE(r.ok());
    CHECK(r->accepted == 50);
    events.insert(events.end(), records.begin(), records.end());
  }
  // Another product's events never show.
  REQUIRE(storage->ingest("p2", std::vector<EventRecord>{record(event_id(1), "u1", "m1", "s1", 5, start)}).ok());

  for (int i = 0; i < 300; ++i) {
    ReportQuery q;
    q.from_ns = start - ns_at(1970, 1, 2) + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span));
    q.to_ns = q.from_ns + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span));
    if (i % 10 == 0) q.from_ns = ns_at(2026, 10, 26 + i % 7);  // whole days
    if (i % 15 == 0) q.to_ns = ns_at(2026, 11, 1 + i % 9);
    q.group_by = static_cast<ReportGroup>(rng() % 6);
    if (rng() % 2) q.user_id = "u" + std::to_string(rng() % 6);
    INFO("from ", q.from_ns, " to ", q.to_ns, " group ", static_cast<int>(q.group_by), " user ", q.user_id.value_or("-"));
    const absl::StatusOr<GroupedTotals> got = storage->report("p1", q);
    REQUIRE(got.ok());
    CHECK(*got == brute_force(events, q));
  }
  });
}

// The profit report computed the slow, obvious way: agent "a1"'s indicator "call" is priced
// kCallPrice per event; every other indicator is unpriced (its revenue unknown, never 0).
constexpr std::int64_t kCallPrice = 20'000'000;

std::vector<ProfitRow> brute_force_profit(const std::vector<EventRecord>& events, TimeRange range, ProfitGroup group) {
  struct Sums {
    std::int64_t cost_events = 0, cost = 0, cost_unknown = 0, billing = 0, revenue = 0, revenue_known = 0;
  };
  std::map<std::string, Sums> sums;
  for (const EventRecord& e : events) {
    if (e.ts_ns < range.from_ns || e.ts_ns >= range.to_ns) continue;
    std::string key;
    switch (group) {
      case ProfitGroup::kAgent: key = e.agent_id; break;
      case ProfitGroup::kCustomer: key = e.user_id; break;
      case ProfitGroup::kIndicator: key = e.indicator; break;
      case ProfitGroup::kModel: key = e.model; break;
      case ProfitGroup::kDay: key = absl::FormatCivilTime(absl::CivilDay(1970, 1, 1) + e.ts_ns / 86'400'000'000'000); break;
      case ProfitGroup::kTag: {  // by=tag:region (profit_events writes the tag first, or not at all)
        constexpr std::string_view kPrefix = R"({"region":")";
        if (e.meta_tags_json.starts_with(kPrefix)) {
          const std::size_t end = e.meta_tags_json.find('"', kPrefix.size());
          key = e.meta_tags_json.substr(kPrefix.size(), end - kPrefix.size());
        }
        break;
      }
    }
    Sums& s = sums[key];
    if (e.kind != ::paygent::internal::UsageKind::kBilling) {
      ++s.cost_events;
      if (e.cost_unknown) ++s.cost_unknown;
      else s.cost += e.cost_nanos;
    }
    if (!e.indicator.empty()) {
      ++s.billing;
      if (e.agent_id == "a1" && e.indicator == "call") {
        ++s.revenue_known;
        s.revenue += kCallPrice;
      }
    }
  }
  std::vector<ProfitRow> out;
  for (const auto& [key, s] : sums) {
    ProfitRow r{.key = key, .cost_events = s.cost_events, .billing_events = s.billing,
                .cost_unknown_events = s.cost_unknown, .revenue_unknown_events = s.billing - s.revenue_known};
    if (s.cost_events > s.cost_unknown) r.cost_nanos = s.cost;
    if (s.revenue_known > 0) r.revenue_nanos = s.revenue;
    out.push_back(r);
  }
  return out;
}

// Profit events: cost rows with and without a price, full tracking (a cost row and a billing
// event), and billing events alone, over a fortnight.
std::vector<EventRecord> profit_events(std::mt19937_64& rng, int first, int count, std::int64_t start, std::int64_t span) {
  std::vector<EventRecord> records;
  for (int n = first; n < first + count; ++n) {
    EventRecord e = record(event_id(n, 7), "c" + std::to_string(rng() % 4), "m" + std::to_string(rng() % 3), "",
                           static_cast<std::int64_t>(rng() % 100'000),
                           start + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span)));
    e.agent_id = rng() % 4 == 0 ? "" : "a" + std::to_string(rng() % 3);
    e.provider = n % 3 == 0 ? "openai" : n % 3 == 1 ? "anthropic" : "";
    static constexpr const char* kTags[] = {"{}", R"({"region":"eu"})", R"({"region":"us","tier":"gold"})",
                                            R"({"tier":"gold"})", R"({"region":""})"};
    e.meta_tags_json = kTags[rng() % 5];
    switch (rng() % 5) {
      case 0: break;                                      // cost-only
      case 1: e.cost_unknown = true; e.cost_nanos = 0; break;  // cost not known
      case 2: e.indicator = "call"; break;                // full tracking
      case 3: e.indicator = rng() % 2 ? "call" : "lead"; e.kind = ::paygent::internal::UsageKind::kBilling;
              e.model.clear(); e.input_tokens = e.output_tokens = e.cached_input_tokens = e.cost_nanos = 0; break;
      default: e.indicator = "lead"; break;
    }
    records.push_back(std::move(e));
  }
  return records;
}

TEST_CASE("server.storage_profit_report_of_rollup_and_edges_matches_a_brute_force_sum") {
  for_each_backend([](StorageBackend& backend) {
    auto storage = backend.fresh();
    REQUIRE(storage->create_product("p1", "one", std::string(64, '1')).ok());
    REQUIRE(storage->create_product("p2", "two", std::string(64, '2')).ok());
    REQUIRE(storage->put_agent("p1", AgentRecord{.agent_id = "a1", .indicators = {{.indicator = "call", .price_nanos = kCallPrice}}}).ok());
    std::mt19937_64 rng(7);
    const std::int64_t start = ns_at(2026, 10, 28);
    const std::int64_t span = ns_at(2026, 11, 12) - start;
    std::vector<EventRecord> events;
    for (int batch = 0; batch < 12; ++batch) {
      std::vector<EventRecord> records = profit_events(rng, batch * 40, 40, start, span);
      REQUIRE(storage->ingest("p1", records).ok());
      events.insert(events.end(), records.begin(), records.end());
      // Halfway, "region" becomes a report tag: its rollup is filled from the events so far, and
      // ingest adds the rest ("tier" stays read from the events).
      if (batch == 5) {
        const std::vector<std::string> tags = {"region"};
        REQUIRE(storage->set_report_tags("p1", tags).ok());
        CHECK(*storage->report_tags("p1") == tags);
        CHECK(storage->report_tags("p2")->empty());
      }
    }
    REQUIRE(storage->ingest("p1", std::vector<EventRecord>(events.begin(), events.begin() + 30)).ok());  // repeats count once
    REQUIRE(storage->ingest("p2", profit_events(rng, 10'000, 20, start, span)).ok());  // another product's
    for (int i = 0; i < 200; ++i) {
      TimeRange range{.from_ns = start - ns_at(1970, 1, 2) + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span))};
      range.to_ns = range.from_ns + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span));
      if (i % 4 == 0) range.from_ns = ns_at(2026, 10, 29 + i % 5);  // whole days: from the rollup alone
      if (i % 4 == 0 || i % 6 == 0) range.to_ns = ns_at(2026, 11, 3 + i % 8);
      const auto group = static_cast<ProfitGroup>(rng() % 6);
      INFO("from ", range.from_ns, " to ", range.to_ns, " group ", static_cast<int>(group));
      const absl::StatusOr<std::vector<ProfitRow>> got = storage->profit_report("p1", range, group, "region");
      REQUIRE(got.ok());
      CHECK(*got == brute_force_profit(events, range, group));
      if (group == ProfitGroup::kTag) {  // the same report from the events alone, once "region" is dropped
        REQUIRE(storage->set_report_tags("p1", {}).ok());
        CHECK(*storage->profit_report("p1", range, group, "region") == *got);
        REQUIRE(storage->set_report_tags("p1", std::vector<std::string>{"region"}).ok());
        CHECK(*storage->profit_report("p1", range, group, "region") == *got);
      }
    }
    // A database from before the rollups: emptied, marked as the older version, reopened, they are
    // filled again from the events and usage_daily in the upgrade.
    const TimeRange all{.from_ns = ns_at(2026, 10, 1), .to_ns = ns_at(2026, 12, 1)};
    storage.reset();
    backend.exec("DELETE FROM profit_daily");
    backend.exec("DELETE FROM usage_daily_by_model");
    backend.exec("DELETE FROM usage_daily_by_user");
    backend.exec("DELETE FROM usage_daily_by_provider");
    backend.set_schema_version_before_profit_rollup();
    storage = backend.again();
    for (const auto group : {ProfitGroup::kAgent, ProfitGroup::kCustomer, ProfitGroup::kIndicator, ProfitGroup::kDay}) {
      const absl::StatusOr<std::vector<ProfitRow>> got = storage->profit_report("p1", all, group);
      REQUIRE(got.ok());
      CHECK(*got == brute_force_profit(events, all, group));
    }
    std::vector<EventRecord> cost_rows;
    for (const EventRecord& e : events) {
      if (e.kind != ::paygent::internal::UsageKind::kBilling) cost_rows.push_back(e);
    }
    auto check_usage_reports = [&] {
      for (const auto group :
           {ReportGroup::kModel, ReportGroup::kDay, ReportGroup::kMonth, ReportGroup::kUser, ReportGroup::kProvider}) {
        const ReportQuery q{.from_ns = all.from_ns, .to_ns = all.to_ns, .group_by = group};
        const absl::StatusOr<GroupedTotals> got = storage->report("p1", q);
        REQUIRE(got.ok());
        CHECK(*got == brute_force(cost_rows, q));
      }
    };
    check_usage_reports();
    // One from before the provider rollup alone: that one is filled, the others are left as they are.
    storage.reset();
    backend.exec("DELETE FROM usage_daily_by_provider");
    backend.set_schema_version_before_provider_rollup();
    storage = backend.again();
    check_usage_reports();
    // One whose billing events lacked their event's meta tags and arrival: the columns are added
    // and filled from the events, and the reports that read them agree.
    REQUIRE(storage->set_report_tags("p1", {}).ok());  // by=tag:region from the billing events' tags
    auto tags_and_arrivals = [&] {
      std::vector<std::pair<std::string, std::int64_t>> out;
      REQUIRE(storage->scan_product_billing_events("p1", all, [&](const BillingEventRow& row) {
        out.emplace_back(row.id + " " + row.meta_tags_json, row.received_ns);
        return absl::OkStatus();
      }).ok());
      return out;
    };
    const auto before_upgrade = tags_and_arrivals();
    std::size_t billing_events = 0;
    for (const EventRecord& e : events) billing_events += e.indicator.empty() ? 0 : 1;  // full tracking and revenue-only
    REQUIRE(before_upgrade.size() == billing_events);
    CHECK(std::all_of(before_upgrade.begin(), before_upgrade.end(), [](const auto& r) { return r.second > 0; }));
    storage.reset();
    backend.exec("ALTER TABLE billing_events DROP COLUMN meta_tags");
    backend.exec("ALTER TABLE billing_events DROP COLUMN received_ns");
    backend.set_schema_version_before_billing_event_tags();
    storage = backend.again();
    CHECK(tags_and_arrivals() == before_upgrade);
    CHECK(*storage->profit_report("p1", all, ProfitGroup::kTag, "region") ==
          brute_force_profit(events, all, ProfitGroup::kTag));
  });
}

// Every customer's billing events in one streamed read (PostgreSQL: a cursor fetched in binary
// pages, the next asked for while this one is read): pages of 1, 4, exactly all and more than all
// rows give the rows of the per-customer scans (plain statements, text results), in (ts_ns, id)
// order, with the same NULLs and integers; a reader that stops early gets its error back and
// leaves the connection fit for the next read.
TEST_CASE("server.storage_streamed_billing_scan_crosses_pages_and_stops_early") {
  for_each_backend([](StorageBackend& backend) {
    auto storage = backend.fresh();
    REQUIRE(storage->create_product("p1", "one", std::string(64, '1')).ok());
    REQUIRE(storage->create_product("p2", "two", std::string(64, '2')).ok());
    REQUIRE(storage->put_agent("p1", AgentRecord{.agent_id = "a1", .indicators = {{.indicator = "call", .price_nanos = kCallPrice}}}).ok());
    std::mt19937_64 rng(11);
    const std::int64_t start = ns_at(2026, 10, 28);
    const std::int64_t span = ns_at(2026, 11, 12) - start;
    std::vector<EventRecord> events = profit_events(rng, 0, 150, start, span);
    for (EventRecord& e : events) e.audio_us = static_cast<std::int64_t>(rng() % 5'000'000'000);  // billed as duration_us
    REQUIRE(storage->ingest("p1", events).ok());
    REQUIRE(storage->ingest("p2", profit_events(rng, 1000, 20, start, span)).ok());
    const TimeRange all{.from_ns = start, .to_ns = start + span};
    auto text_of = [](const BillingEventRow& r) {
      return absl::StrCat(r.id, "|", r.customer_id, "|", r.agent_id, "|", r.indicator, "|", r.ts_ns, "|", r.received_ns,
                          "|", r.duration_us, "|", r.meta_tags_json, "|",
                          r.revenue_nanos ? absl::StrCat(*r.revenue_nanos) : "null");
    };
    // The per-customer scans, merged into (ts_ns, id) order.
    std::vector<std::pair<std::pair<std::int64_t, std::string>, std::string>> merged;
    std::set<std::string> customers;
    for (const EventRecord& e : events) customers.insert(e.user_id);
    for (const std::string& c : customers) {
      REQUIRE(storage->scan_billing_events("p1", c, all, [&](const BillingEventRow& r) {
        merged.push_back({{r.ts_ns, r.id}, text_of(r)});
        return absl::OkStatus();
      }).ok());
    }
    std::sort(merged.begin(), merged.end());
    std::vector<std::string> expected;
    for (const auto& m : merged) expected.push_back(m.second);
    std::size_t billing = 0, priced = 0;
    for (const EventRecord& e : events) {
      billing += e.indicator.empty() ? 0 : 1;
      priced += e.agent_id == "a1" && e.indicator == "call" ? 1 : 0;
    }
    REQUIRE(expected.size() == billing);
    REQUIRE(priced > 0);  // some rows have a revenue, the others NULL
    REQUIRE(priced < billing);
    for (const int page : {1, 4, static_cast<int>(billing), 10'000}) {
      INFO("page of ", page);
      storage.reset();
      storage = backend.again_with_stream_pages(page);
      auto streamed = [&] {
        std::vector<std::string> out;
        REQUIRE(storage->scan_product_billing_events("p1", all, [&](const BillingEventRow& r) {
          out.push_back(text_of(r));
          return absl::OkStatus();
        }).ok());
        return out;
      };
      CHECK(streamed() == expected);
      int seen = 0;
      const absl::Status stopped = storage->scan_product_billing_events("p1", all, [&](const BillingEventRow&) {
        return ++seen == 7 ? absl::CancelledError("enough") : absl::OkStatus();
      });
      CHECK(absl::IsCancelled(stopped));
      CHECK(seen == 7);
      CHECK(streamed() == expected);  // the connection and its cursor name are fit for another read
      CHECK(storage->report("p1", {.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kUser}).ok());
    }
  });
}

// find_users: the users a report names, in a few queries, exactly as find_user gives each one.
TEST_CASE("server.storage_find_users_reads_each_known_user_once_as_find_user_does") {
  for_each_backend([](StorageBackend& backend) {
    auto storage = backend.fresh();
    REQUIRE(storage->create_product("p1", "one", std::string(64, '1')).ok());
    REQUIRE(storage->create_product("p2", "two", std::string(64, '2')).ok());
    std::vector<std::string> ids;
    for (int i = 0; i < 250; ++i) {  // three queries' worth
      ids.push_back("u" + std::to_string(i));
      REQUIRE(storage->create_user("p1", ids.back(), i % 2 ? "name " + std::to_string(i) : "").ok());
      if (i % 3 == 0) {
        REQUIRE(storage->set_subscription("p1", ids.back(), {.plan = "pro", .period_start_ns = i, .period_end_ns = i + 9}).ok());
      }
    }
    REQUIRE(storage->create_user("p2", "only-in-p2", "").ok());
    std::vector<std::string_view> asked;
    for (int i = 249; i >= 0; i -= 1) asked.push_back(ids[static_cast<std::size_t>(i)]);
    asked.push_back("u7");           // repeated, in the same query as its first
    asked.push_back("u249");         // repeated, two queries after its first
    asked.push_back("nobody");       // unknown
    asked.push_back("only-in-p2");   // another product's
    const absl::StatusOr<std::vector<UserRecord>> got = storage->find_users("p1", asked);
    REQUIRE(got.ok());
    std::vector<std::string> sorted = ids;
    std::sort(sorted.begin(), sorted.end());
    REQUIRE(got->size() == sorted.size());
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      INFO(sorted[i]);
      const absl::StatusOr<UserRecord> one = storage->find_user("p1", sorted[i]);
      REQUIRE(one.ok());
      CHECK((*got)[i].user_id == one->user_id);
      CHECK((*got)[i].name == one->name);
      CHECK((*got)[i].subscription == one->subscription);
    }
    CHECK(storage->find_users("p1", {})->empty());
    CHECK(storage->find_users("no-such-product", asked)->empty());
  });
}

TEST_CASE("server.storage_ingest_is_idempotent_and_atomic") {
  for_each_backend([](StorageBackend& backend) {
  auto storage = backend.fresh();
  // Writes need an existing product.
  CHECK(absl::IsNotFound(
      storage->ingest("p", std::vector<EventRecord>{record(event_id(1), "u1", "m", "s", 10, 1)}).status()));
  CHECK(absl::IsNotFound(storage->create_user("p", "u1", "")));
  CHECK(storage->report("p", {.from_ns = 0, .to_ns = 10, .group_by = ReportGroup::kUser})->empty());
  REQUIRE(storage->create_product("p", "acme", std::string(64, 'c')).ok());
  std::vector<EventRecord> batch = {record(event_id(1), "u1", "m", "s", 10, ns_at(2026, 11, 1)),
                                    record(event_id(2), "u1", "m", "s", 20, ns_at(2026, 11, 1)),
                                    record(event_id(1), "u1", "m", "s", 999, ns_at(2026, 11, 1))};
  absl::StatusOr<IngestResult> r = storage->ingest("p", batch);
  REQUIRE(r.ok());
  CHECK(r->accepted == 2);
  CHECK(r->duplicates == 1);
  r = storage->ingest("p", batch);
  REQUIRE(r.ok());
  CHECK(r->accepted == 0);
  CHECK(r->duplicates == 3);
  const ReportQuery all{.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kUser};
  CHECK(storage->report("p", all)->at("u1").cost_nanos == 30);
  CHECK(storage->find_user("p", "u1").ok());  // created on the fly

  // An overflowing batch stores nothing, not even its new user or its good events.
  const TableCounts before = backend.counts();
  std::vector<EventRecord> overflow = {record(event_id(3), "u2", "m", "s", 1, ns_at(2026, 11, 1)),
                                       record(event_id(4), "u1", "m", "s", INT64_MAX, ns_at(2026, 11, 1))};
  r = storage->ingest("p", overflow);
  CHECK(absl::IsInvalidArgument(r.status()));
  // Named exactly, also where the batch is first written in one statement (PostgreSQL).
  CHECK_MESSAGE(r.status().message().find("events[1].cost_nanos: this event of user \"u1\"") != std::string_view::npos,
                r.status());
  CHECK(backend.counts() == before);
  CHECK(absl::IsNotFound(storage->find_user("p", "u2").status()));
  // The storage is usable afterwards.
  REQUIRE(storage->ingest("p", std::vector<EventRecord>{overflow[0]}).ok());
  CHECK(storage->find_user("p", "u2").ok());  // the refused batch's user was not taken for stored
  CHECK(storage->report("p", all)->at("u2").calls == 1);
  });
}

// Soft gates a batch carries (docs/wire.md, "Soft gates") are stored once per product, user,
// limit, period start and threshold; every usage read reports those in the user's period, period
// limits first, then sessions most recently started first; a batch of soft gates alone creates
// its user; another product sees none of them.
TEST_CASE("server.storage_soft_gates_are_stored_once_and_read_in_their_period") {
  for_each_backend([](StorageBackend& backend) {
  auto storage = backend.fresh();
  REQUIRE(storage->create_product("p", "acme", std::string(64, 'c')).ok());
  REQUIRE(storage->create_product("q", "other", std::string(64, 'd')).ok());
  const TimeRange november{ns_at(2026, 11, 1), ns_at(2026, 12, 1)};
  auto period_of = [&](const UserRecord&) { return november; };
  const std::vector<SoftGateFired> gates = {
      {"u1", "session_spend:chat-1", ns_at(2026, 11, 2), 800'000},
      {"u1", "total_spend", ns_at(2026, 11, 1), 800'000},
      {"u1", "session_spend:chat-2", ns_at(2026, 11, 5), 500'000},
      {"u1", "total_spend", ns_at(2026, 11, 1), 500'000},
      {"u1", "total_spend", ns_at(2026, 10, 1), 500'000},  // October's: not in the period read
      {"u1", "total_spend", ns_at(2026, 11, 1), 500'000},  // repeated in the batch
  };
  absl::StatusOr<IngestResult> r = storage->ingest_with_usage("p", std::vector<EventRecord>{}, period_of, gates);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->accepted == 0);
  REQUIRE(r->usage.size() == 1);  // the user was created for its soft gates alone
  const std::vector<SoftGateFired> expected = {
      {"u1", "total_spend", ns_at(2026, 11, 1), 500'000},
      {"u1", "total_spend", ns_at(2026, 11, 1), 800'000},
      {"u1", "session_spend:chat-2", ns_at(2026, 11, 5), 500'000},
      {"u1", "session_spend:chat-1", ns_at(2026, 11, 2), 800'000},
  };
  CHECK(r->usage[0].soft_gates == expected);
  // A retried batch stores nothing twice; every read reports the same.
  r = storage->ingest_with_usage("p", std::vector<EventRecord>{record(event_id(1), "u1", "m", "s", 5, ns_at(2026, 11, 3))},
                                 period_of, gates);
  REQUIRE(r.ok());
  CHECK(r->usage.at(0).soft_gates == expected);
  const std::vector<std::string> asked = {"u1"};
  absl::StatusOr<std::vector<UserUsage>> read = storage->usage_of("p", asked, period_of);
  REQUIRE(read.ok());
  REQUIRE(read->size() == 1);
  CHECK(read->at(0).soft_gates == expected);
  CHECK(*storage->soft_gates_fired("p", "u1", november) == expected);
  CHECK(storage->soft_gates_fired("p", "u1", {ns_at(2026, 10, 1), ns_at(2026, 11, 1)})->size() == 1);
  CHECK(storage->soft_gates_fired("q", "u1", november)->empty());
  CHECK(storage->soft_gates_fired("nope", "u1", november)->empty());
  });
}

// ingest_with_usage reads all the batch's users at once; what it reads must be what find_user()
// and report(by model, over the user's period) give, user by user. Periods differ (subscriptions),
// have partial days at both ends or none, fit in one day, or are empty; earlier events sit just
// inside and just outside every edge. The period most users share is read for all of them at once,
// the others user by user: each subcase makes a different period the most shared.
TEST_CASE("server.storage_ingest_with_usage_matches_find_user_and_report") {
  for_each_backend([](StorageBackend& backend) {
  auto storage = backend.fresh();
  REQUIRE(storage->create_product("p", "one", std::string(64, '1')).ok());
  REQUIRE(storage->create_product("q", "two", std::string(64, '2')).ok());
  // A user id with what a JSON or an array literal would have to escape (the API refuses U+0000).
  const std::string nul_user = "u\"{a,b}\\ \u00e9";
  auto pro = [](std::int64_t start_ns, std::int64_t end_ns) {
    return Subscription{.plan = "pro", .period_start_ns = start_ns, .period_end_ns = end_ns};
  };
  const Subscription edges = pro(ns_at(2026, 11, 5, 13, 30), ns_at(2026, 12, 5, 13, 30));
  const std::map<std::string, Subscription> subscriptions = {
      {"sub-edges", edges},
      {"sub-edges-too", edges},
      {"sub-one-day", pro(ns_at(2026, 11, 17, 1), ns_at(2026, 11, 17, 23))},
      {"sub-no-whole-day", pro(ns_at(2026, 11, 16, 20), ns_at(2026, 11, 17, 20))},
      {"sub-empty", pro(ns_at(2026, 11, 17), ns_at(2026, 11, 17))},
  };
  const std::vector<std::string> users = {"zed",         "amy",       nul_user,           "sub-edges", "sub-edges-too",
                                          "sub-one-day", "sub-empty", "sub-no-whole-day", "not-in-batch"};
  // The period of the users without a subscription ("zed", "amy", nul_user and "new-user").
  const TimeRange month{ns_at(2026, 11, 1), ns_at(2026, 12, 1)};
  const TimeRange partial_ends{ns_at(2026, 11, 3, 6), ns_at(2026, 11, 28, 18)};
  const TimeRange one_day{ns_at(2026, 11, 17, 1), ns_at(2026, 11, 17, 23)};  // also sub-one-day's
  const std::map<std::string, int> hours = {{"zed", 1}, {"amy", 2}, {nul_user, 3}, {"new-user", 4}};
  std::function<TimeRange(const UserRecord&)> default_period;
  SUBCASE("the calendar month, whole days only") { default_period = [&](const UserRecord&) { return month; }; }
  SUBCASE("partial days at both ends") { default_period = [&](const UserRecord&) { return partial_ends; }; }
  SUBCASE("within one day, shared with a subscription") { default_period = [&](const UserRecord&) { return one_day; }; }
  SUBCASE("one each: two subscriptions' period is the most shared") {
    default_period = [&](const UserRecord& user) {
      if (!hours.contains(user.user_id)) return month;  // "not-in-batch", read by period_costs() below
      const std::int64_t h = hours.at(user.user_id) * 3'600'000'000'000;
      return TimeRange{ns_at(2026, 11, 2) + h, ns_at(2026, 11, 20) + h};
    };
  }
  auto period_of = [&](const UserRecord& user) {
    return user.subscription ? TimeRange{user.subscription->period_start_ns, user.subscription->period_end_ns}
                             : default_period(user);
  };

  // Earlier events: for every user, at and around each edge of every period above, and mid-month.
  std::vector<EventRecord> earlier;
  std::vector<std::int64_t> times = {month.from_ns,        month.to_ns, partial_ends.from_ns, partial_ends.to_ns,
                                     ns_at(2026, 11, 10, 12)};
  for (const auto& [id, sub] : subscriptions) {
    times.push_back(sub.period_start_ns);
    times.push_back(sub.period_end_ns);
  }
  for (const auto& [id, h] : hours) {
    times.push_back(ns_at(2026, 11, 2, h));
    times.push_back(ns_at(2026, 11, 20, h));
  }
  int n = 0;
  for (const std::string& user : users) {
    for (const std::int64_t t : times) {
      for (const std::int64_t offset : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{1}}) {
        earlier.push_back(record(event_id(n), user, "m" + std::to_string(n % 3), "s", 1000 + n, t + offset));
        ++n;
      }
    }
  }
  REQUIRE(storage->create_user("p", "amy", "Amy").ok());
  REQUIRE(storage->ingest("p", earlier).ok());
  // Another product's events for the same users never show.
  REQUIRE(storage->ingest("q", std::vector<EventRecord>{record(event_id(1), "amy", "m0", "s", 5, ns_at(2026, 11, 10))})
              .ok());
  for (const auto& [id, sub] : subscriptions) REQUIRE(storage->set_subscription("p", id, sub).ok());

  // The batch: every user but the last, in no particular order, one new user, a duplicate.
  std::vector<EventRecord> batch;
  for (std::size_t i = 0; i + 1 < users.size(); ++i) {
    batch.push_back(
        record(event_id(i, 7), users[i], "m" + std::to_string(i % 2), "s", 50 + i, ns_at(2026, 11, 17, 12)));
  }
  batch.push_back(record(event_id(100, 7), "new-user", "m9", "s", 3, ns_at(2026, 11, 17, 12)));
  batch.push_back(record(event_id(101, 7), "amy", "m1", "s", 4, ns_at(2026, 11, 30, 23, 59, 59)));
  batch.push_back(record(event_id(0), "amy", "m1", "s", 999, ns_at(2026, 11, 17, 12)));  // already stored
  const absl::StatusOr<IngestResult> none = storage->ingest_with_usage("p", std::vector<EventRecord>{}, period_of, {});
  REQUIRE(none.ok());
  CHECK(none->usage.empty());
  const absl::StatusOr<IngestResult> r = storage->ingest_with_usage("p", batch, period_of, {});
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->accepted == static_cast<std::int64_t>(batch.size()) - 1);
  CHECK(r->duplicates == 1);

  std::vector<std::string> expected_users = {"new-user"};
  expected_users.insert(expected_users.end(), users.begin(), users.end() - 1);
  std::sort(expected_users.begin(), expected_users.end());
  REQUIRE(r->usage.size() == expected_users.size());
  std::vector<EventRecord> all = earlier;
  all.insert(all.end(), batch.begin(), batch.end() - 1);
  for (std::size_t i = 0; i < r->usage.size(); ++i) {
    const UserUsage& usage = r->usage[i];
    INFO("user ", usage.user.user_id);
    CHECK(usage.user.user_id == expected_users[i]);
    const absl::StatusOr<UserRecord> user = storage->find_user("p", expected_users[i]);
    REQUIRE(user.ok());
    CHECK(usage.user.name == user->name);
    CHECK(usage.user.subscription == user->subscription);
    CHECK(usage.period == period_of(*user));
    const ReportQuery query{.from_ns = usage.period.from_ns,
                            .to_ns = usage.period.to_ns,
                            .group_by = ReportGroup::kModel,
                            .user_id = expected_users[i]};
    const absl::StatusOr<GroupedTotals> report = storage->report("p", query);
    REQUIRE(report.ok());
    CHECK(usage.models == *report);
    CHECK(usage.models == brute_force(all, query));
  }
  // Not vacuous: every period but the empty one cuts through the user's events.
  for (const UserUsage& usage : r->usage) {
    INFO("user ", usage.user.user_id);
    std::int64_t in_period = 0, stored = 0;
    for (const auto& [model, t] : usage.models) in_period += t.calls;
    for (const EventRecord& e : all) stored += e.user_id == usage.user.user_id ? 1 : 0;
    if (usage.user.user_id == "sub-empty") {
      CHECK(in_period == 0);
    } else if (usage.user.user_id != "new-user") {
      CHECK(in_period > 1);
      CHECK(in_period < stored);
    }
  }

  // The forecast's read, page by page whatever the page's size: every user of the product once, in
  // id order, with their period and the cost of their events in it.
  std::vector<std::string> product_users = users;
  product_users.push_back("new-user");
  std::sort(product_users.begin(), product_users.end());
  for (const std::size_t page : {std::size_t{1}, std::size_t{3}, std::size_t{100}}) {
    INFO("page of ", page);
    std::vector<std::string> seen;
    std::string after;
    for (;;) {
      const absl::StatusOr<std::vector<UserPeriodCost>> costs = storage->period_costs("p", after, page, period_of);
      REQUIRE_MESSAGE(costs.ok(), costs.status().ToString());
      if (costs->empty()) break;
      CHECK(costs->size() <= page);
      for (const UserPeriodCost& u : *costs) {
        INFO("user ", u.user.user_id);
        seen.push_back(u.user.user_id);
        const absl::StatusOr<UserRecord> user = storage->find_user("p", u.user.user_id);
        REQUIRE(user.ok());
        CHECK(u.user.name == user->name);
        CHECK(u.user.subscription == user->subscription);
        CHECK(u.period == period_of(*user));
        std::int64_t expected = 0;
        for (const auto& [key, t] : brute_force(all, ReportQuery{.from_ns = u.period.from_ns, .to_ns = u.period.to_ns,
                                                                  .group_by = ReportGroup::kUser,
                                                                  .user_id = u.user.user_id})) {
          expected += t.cost_nanos;
        }
        CHECK(u.cost_nanos == expected);
      }
      after = costs->back().user.user_id;
    }
    CHECK(seen == product_users);
  }
  // A period longer than two months (a subscription's year, say) is read in one pass of its days.
  const TimeRange long_period{ns_at(2026, 9, 20, 7), ns_at(2027, 1, 2, 5)};
  const absl::StatusOr<std::vector<UserPeriodCost>> long_costs =
      storage->period_costs("p", "", 100, [&](const UserRecord&) { return long_period; });
  REQUIRE(long_costs.ok());
  REQUIRE(long_costs->size() == product_users.size());
  std::int64_t long_total = 0;
  for (const UserPeriodCost& u : *long_costs) {
    INFO("user ", u.user.user_id);
    std::int64_t expected = 0;
    for (const auto& [key, t] : brute_force(all, ReportQuery{.from_ns = long_period.from_ns, .to_ns = long_period.to_ns,
                                                              .group_by = ReportGroup::kUser, .user_id = u.user.user_id})) {
      expected += t.cost_nanos;
    }
    CHECK(u.cost_nanos == expected);
    long_total += u.cost_nanos;
  }
  CHECK(long_total > 0);
  const absl::StatusOr<std::vector<UserPeriodCost>> unknown = storage->period_costs("nope", "", 10, period_of);
  REQUIRE(unknown.ok());
  CHECK(unknown->empty());
  });
}

TEST_CASE("server.storage_keeps_everything_across_reopening") {
  for_each_backend([](StorageBackend& backend) {
  {
    auto storage = backend.fresh();
    REQUIRE(storage->create_product("prod_1", "acme", std::string(64, 'a')).ok());
    CHECK(absl::IsAlreadyExists(storage->create_product("prod_2", "x", std::string(64, 'a'))));
    REQUIRE(storage->create_user("prod_1", "u1", "Ada").ok());
    CHECK(absl::IsAlreadyExists(storage->create_user("prod_1", "u1", "Ada")));
    CHECK(absl::IsNotFound(storage->set_subscription("prod_1", "nobody", {.plan = "p", .period_start_ns = 1, .period_end_ns = 2})));
    REQUIRE(storage->set_subscription("prod_1", "u1", {.plan = "pro", .period_start_ns = 5, .period_end_ns = 9}).ok());
    REQUIRE(storage->put_plan_config("prod_1", R"({"plans":[]})").ok());
    REQUIRE(storage->ingest("prod_1", std::vector<EventRecord>{record(event_id(1), "u1", "m", "s", 10, 7)}).ok());
  }
  auto storage = backend.again();
  CHECK(*storage->find_product_by_key(std::string(64, 'a')) == "prod_1");
  CHECK(absl::IsNotFound(storage->find_product_by_key(std::string(64, 'b')).status()));
  const absl::StatusOr<UserRecord> user = storage->find_user("prod_1", "u1");
  REQUIRE(user.ok());
  CHECK(user->name == "Ada");
  REQUIRE(user->subscription.has_value());
  CHECK(*user->subscription == Subscription{.plan = "pro", .period_start_ns = 5, .period_end_ns = 9});
  CHECK(**storage->plan_config("prod_1") == R"({"plans":[]})");
  CHECK(!storage->plan_config("prod_2")->has_value());
  CHECK(storage->report("prod_1", {.from_ns = 0, .to_ns = 100, .group_by = ReportGroup::kModel})->at("m").cost_nanos == 10);
  CHECK(absl::IsNotFound(storage->find_user("prod_2", "u1").status()));
  });
}

// PostgreSQL's rollups leave half of each page free, so that a batch's update of a row stays on its
// page (HOT); a database from before that (schema 11) gets the option at its next open.
TEST_CASE("server.postgres_rollups_leave_room_to_update_in_place_and_older_databases_get_it") {
#ifdef PAYGENT_WITH_POSTGRES
  std::unique_ptr<StorageBackend> backend = postgres_backend_or_skip();
  if (backend == nullptr) return;
  const std::string& conninfo = static_cast<PostgresBackend&>(*backend).conninfo();
  const std::vector<std::string> tables = {"usage_daily",          "profit_daily",        "profit_daily_by_tag",
                                           "usage_daily_by_model", "usage_daily_by_user", "usage_daily_by_provider"};
  auto options = [&](const std::string& table) {
    return pg_query(conninfo, "SELECT COALESCE(array_to_string(reloptions, ','), '') FROM pg_class WHERE relname = '" +
                                  table + "'");
  };
  std::unique_ptr<Storage> storage = backend->fresh();
  for (const std::string& t : tables) CHECK_MESSAGE(options(t) == "fillfactor=50", t);
  CHECK(options("events").empty());  // rows written once: pages filled whole
  storage.reset();
  for (const std::string& t : tables) backend->exec("ALTER TABLE " + t + " RESET (fillfactor)");
  backend->exec("UPDATE paygent_schema SET version = 11");
  REQUIRE(options("usage_daily").empty());
  storage = backend->again();
  for (const std::string& t : tables) CHECK_MESSAGE(options(t) == "fillfactor=50", t);
  CHECK(pg_query(conninfo, "SELECT version FROM paygent_schema") == "12");
#else
  std::printf("SKIPPED: PostgreSQL tests: built without PAYGENT_WITH_POSTGRES\n");
#endif
}

// PostgreSQL loads a batch's events by COPY: every character of their text arrives as sent (COPY's
// own escapes: backslash, tab, newline, carriage return); a batch holding an id stored already
// falls back to INSERT ... ON CONFLICT DO NOTHING and counts it once; text holding U+0000, which
// COPY cannot carry, is refused by name with nothing stored.
TEST_CASE("server.postgres_copied_batches_keep_every_character_and_fall_back_on_a_stored_id") {
#ifdef PAYGENT_WITH_POSTGRES
  std::unique_ptr<StorageBackend> backend = postgres_backend_or_skip();
  if (backend == nullptr) return;
  const std::string& conninfo = static_cast<PostgresBackend&>(*backend).conninfo();
  std::unique_ptr<Storage> storage = backend->fresh();
  REQUIRE(storage->create_product("p", "acme", std::string(64, 'c')).ok());
  const std::int64_t day = ns_at(2026, 11, 1);
  EventRecord odd = record(event_id(1), "u\t1\\N", "m\n2", "s\r", 10, day);
  odd.meta_tags_json = "{\"k\":\"a\\\\tb \\\"q\\\" \xc3\xa9\"}";
  odd.description = "line1\nline2\r\tend\\";
  const std::vector<EventRecord> first = {odd, record(event_id(2), "u2", "m", "", 20, day + 1)};
  absl::StatusOr<IngestResult> r = storage->ingest("p", first);
  REQUIRE(r.ok());
  CHECK(r->accepted == 2);
  const auto* pg = dynamic_cast<const PostgresStorage*>(storage.get());
  REQUIRE(pg != nullptr);
  CHECK(pg->copy_fallbacks() == 0);  // copied, escapes and all
  const std::string stored = pg_query(
      conninfo, "SELECT user_id || '|' || model || '|' || session_id || '|' || meta_tags || '|' || description "
                "FROM events ORDER BY ts_ns LIMIT 1");
  CHECK(stored == odd.user_id + "|" + odd.model + "|" + odd.session_id + "|" + odd.meta_tags_json + "|" + odd.description);
  const ReportQuery all{.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kUser};
  CHECK(storage->report("p", all)->at(odd.user_id).cost_nanos == 10);

  // One id stored already beside a new one: the new one is stored, the other counted once.
  r = storage->ingest("p", std::vector<EventRecord>{record(event_id(2), "u2", "m", "", 20, day + 1),
                                                    record(event_id(3), "u2", "m", "", 5, day + 2)});
  REQUIRE(r.ok());
  CHECK(r->accepted == 1);
  CHECK(r->duplicates == 1);
  CHECK(pg->copy_fallbacks() == 1);
  CHECK(storage->report("p", all)->at("u2").cost_nanos == 25);
  CHECK(storage->report("p", all)->at("u2").calls == 2);

  const TableCounts before = backend->counts();
  EventRecord nul = record(event_id(4), "u3", "m", "", 1, day);
  nul.description = std::string("a\0b", 3);
  r = storage->ingest("p", std::vector<EventRecord>{record(event_id(5), "u3", "m", "", 1, day), nul});
  CHECK_MESSAGE(absl::IsInvalidArgument(r.status()), r.status());
  CHECK_MESSAGE(r.status().message().find("U+0000") != std::string_view::npos, r.status());
  CHECK(backend->counts() == before);
  CHECK(pg->copy_fallbacks() == 2);
#else
  std::printf("SKIPPED: PostgreSQL tests: built without PAYGENT_WITH_POSTGRES\n");
#endif
}

}  // namespace
}  // namespace paygent::server::test
