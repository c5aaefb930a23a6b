// Group commit of SqliteStorage (server/group_commit.h): write transactions that wait while one
// commits share the next commit, and each still gets exactly its own outcome.
#include "server/group_commit.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "server/sqlite_storage.h"
#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Waits (up to 20 s) until `done()`; false if it never was.
template <typename Done>
bool wait_until(Done done) {
  const auto deadline = steady_clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

std::vector<EventRecord> batch(std::uint64_t first_id, int count, const std::string& user, std::int64_t cost) {
  std::vector<EventRecord> events;
  for (int i = 0; i < count; ++i) {
    events.push_back(record(event_id(first_id + static_cast<std::uint64_t>(i)), user, "m", "s", cost,
                            ns_at(2026, 11, 17)));
  }
  return events;
}

// Four writers queue while a fifth holds the writer: they share one commit, in which a batch that
// repeats another's ids counts them as duplicates once, an overflowing batch fails alone (nothing
// of it stored, not even its user) and a write that throws is rolled back alone and rethrown.
TEST_CASE("server.group_commit_joins_waiting_writes_and_answers_each_exactly") {
  ApiFixture f;
  SqliteStorage& storage = *f.storage;
  REQUIRE(storage.create_product("p", "acme", std::string(64, 'c')).ok());
  const GroupCommit::Stats before = storage.group_commit_stats();

  std::atomic<bool> holding{false};
  bool queued = false;
  std::thread holder([&] {
    const absl::Status s = storage.with_user_locks("p", std::vector<std::string_view>{"holder"},
                                                   [&](SqlConnection&, std::int64_t) -> absl::Status {
                                                     holding = true;
                                                     queued = wait_until([&] { return storage.group_commit_stats().waiting == 4; });
                                                     return absl::OkStatus();
                                                   });
    CHECK(s.ok());
  });
  REQUIRE(wait_until([&] { return holding.load(); }));

  absl::StatusOr<IngestResult> first, repeat, overflow;
  bool threw = false;
  std::vector<std::thread> writers;
  writers.emplace_back([&] { first = storage.ingest("p", batch(1, 50, "a", 10)); });
  writers.emplace_back([&] { repeat = storage.ingest("p", batch(41, 20, "b", 10)); });  // ids 41-50 are first's
  writers.emplace_back([&] {
    std::vector<EventRecord> events = batch(100, 2, "c", INT64_MAX);
    overflow = storage.ingest("p", events);
  });
  writers.emplace_back([&] {
    try {
      static_cast<void>(storage.with_user_locks(
          "p", std::vector<std::string_view>{"d"}, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
            absl::StatusOr<Query> insert =
                prepare(connection, "INSERT INTO users(product, user_id, name, created_ns) VALUES(?1, 'd', '', 0)");
            REQUIRE(insert.ok());
            insert->bind(1, product);
            REQUIRE(insert->run("insert user").ok());
            throw std::runtime_error("thrown by the write");
          }));
    } catch (const std::runtime_error&) {
      threw = true;
    }
  });
  for (std::thread& w : writers) w.join();
  holder.join();
  CHECK(queued);

  const GroupCommit::Stats after = storage.group_commit_stats();
  CHECK(after.commits - before.commits == 2);  // the holder's, then the four together
  CHECK(after.bodies - before.bodies == 5);
  REQUIRE(first.ok());
  REQUIRE(repeat.ok());
  // Whichever ran first in the group stored ids 41-50; the other counted them as duplicates.
  CHECK(first->accepted + first->duplicates == 50);
  CHECK(repeat->accepted + repeat->duplicates == 20);
  CHECK(first->accepted + repeat->accepted == 60);
  CHECK(first->duplicates + repeat->duplicates == 10);
  CHECK(absl::IsInvalidArgument(overflow.status()));
  CHECK_MESSAGE(overflow.status().message().find("past the largest amount") != std::string_view::npos, overflow.status());
  CHECK(threw);
  CHECK(absl::IsNotFound(storage.find_user("p", "c").status()));
  CHECK(absl::IsNotFound(storage.find_user("p", "d").status()));
  CHECK(f.counts().events == 60);
  const ReportQuery all{.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kUser};
  const absl::StatusOr<GroupedTotals> report = storage.report("p", all);
  REQUIRE(report.ok());
  CHECK(report->size() == 2);
  CHECK(report->at("a").calls + report->at("b").calls == 60);
  CHECK(report->at("a").cost_nanos + report->at("b").cost_nanos == 600);
}

// The batches of one group write the rollups they share once, at the group's end (ProductRollups,
// SqlConnection::deferred()), and their usage replies are read after them, together: each reply
// counts every batch written before it was read (its own and the group's others), a batch
// that fails takes nothing of the others' sums and is in no reply, a write that reads the rollups (a lease grant, a
// wallet) finds them written before it runs, and what is stored is what the events sum to.
TEST_CASE("server.group_commit_defers_shared_rollups_and_replies_count_the_group") {
  ApiFixture f;
  SqliteStorage& storage = *f.storage;
  REQUIRE(storage.create_product("p", "acme", std::string(64, 'c')).ok());
  const GroupCommit::Stats before = storage.group_commit_stats();
  std::atomic<bool> holding{false};
  std::atomic<int> queued{0};  // the writers started so far, each waiting before the next starts
  std::thread holder([&] {
    const absl::Status s = storage.with_user_locks("p", std::vector<std::string_view>{"holder"},
                                                   [&](SqlConnection&, std::int64_t) -> absl::Status {
                                                     holding = true;
                                                     CHECK(wait_until([&] { return queued.load() == 5; }));
                                                     return absl::OkStatus();
                                                   });
    CHECK(s.ok());
  });
  REQUIRE(wait_until([&] { return holding.load(); }));

  const TimeRange november{.from_ns = ns_at(2026, 11, 1), .to_ns = ns_at(2026, 12, 1)};
  auto period_of = [&](const UserRecord&) { return november; };
  std::vector<EventRecord> a = batch(1, 3, "u", 10), b = batch(10, 2, "u", 10), bad = batch(20, 2, "u", INT64_MAX),
                           c = batch(30, 1, "u", 10);
  b.push_back(record(event_id(40), "v", "m2", "s", 7, ns_at(2026, 11, 18)));
  absl::StatusOr<IngestResult> ra, rb, rbad, rc;
  std::int64_t read_by_writer = -1;
  std::vector<std::thread> writers;
  auto start = [&](auto write) {
    const std::int64_t waiting = storage.group_commit_stats().waiting;
    writers.emplace_back(write);
    REQUIRE(wait_until([&] { return storage.group_commit_stats().waiting == waiting + 1; }));
    ++queued;
  };
  start([&] { ra = storage.ingest_with_usage("p", a, period_of, {}); });
  start([&] { rb = storage.ingest_with_usage("p", b, period_of, {}); });
  start([&] { rbad = storage.ingest_with_usage("p", bad, period_of, {}); });
  start([&] {
    const absl::Status s = storage.with_user_locks(
        "p", std::vector<std::string_view>{"u"}, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
          absl::StatusOr<Query> sum = prepare(connection, "SELECT SUM(cost_nanos) FROM usage_daily WHERE product = ?1");
          if (!sum.ok()) return sum.status();
          sum->bind(1, product);
          absl::StatusOr<bool> row = sum->step("sum");
          if (!row.ok()) return row.status();
          read_by_writer = *row ? sum->int64(0) : -2;
          return absl::OkStatus();
        });
    CHECK(s.ok());
  });
  start([&] { rc = storage.ingest_with_usage("p", c, period_of, {}); });
  for (std::thread& w : writers) w.join();
  holder.join();

  const GroupCommit::Stats after = storage.group_commit_stats();
  CHECK(after.commits - before.commits == 2);  // the holder's, then the five together
  auto cost_of = [](const absl::StatusOr<IngestResult>& r, std::string_view user, std::string_view model) {
    REQUIRE(r.ok());
    for (const UserUsage& u : r->usage) {
      if (u.user.user_id != user) continue;
      auto it = u.models.find(model);
      return it == u.models.end() ? std::int64_t{0} : it->second.cost_nanos;
    }
    return std::int64_t{-1};
  };
  // A reply is read once the batches before the next flush are written (here: before the writer
  // that does not defer), so a's counts b's, written with it, as a read after the commit would.
  CHECK(cost_of(ra, "u", "m") == 50);
  CHECK(cost_of(ra, "v", "m2") == -1);  // not a's user
  CHECK(ra->usage.size() == 1);
  CHECK(cost_of(rb, "u", "m") == 50);
  CHECK(cost_of(rb, "v", "m2") == 7);
  CHECK(absl::IsInvalidArgument(rbad.status()));
  CHECK(read_by_writer == 57);  // a and b, written before the writer that reads them ran
  CHECK(cost_of(rc, "u", "m") == 60);
  CHECK(rc->usage.size() == 1);
  for (const char* table : {"usage_daily", "usage_daily_by_user", "usage_daily_by_model", "usage_daily_by_provider"}) {
    CAPTURE(table);
    CHECK(sql_int(f.db_path, std::string("SELECT SUM(cost_nanos) FROM ") + table) == 67);
    CHECK(sql_int(f.db_path, std::string("SELECT SUM(calls) FROM ") + table) == 7);
  }
  CHECK(sql_int(f.db_path, "SELECT SUM(cost_nanos) FROM profit_daily") == 67);
  CHECK(sql_int(f.db_path, "SELECT SUM(cost_events) FROM profit_daily") == 7);
  CHECK(sql_int(f.db_path, "SELECT calls FROM product_totals") == 7);
  CHECK(sql_int(f.db_path, "SELECT cost_nanos FROM product_totals") == 67);
  CHECK(sql_int(f.db_path, "SELECT COUNT(*) FROM usage_daily") == 2);
}

// Holds the writer (a with_user_locks() transaction of user "holder" on product "p") while
// `writers` queue behind it one after the other, then lets them commit as one group; joins them.
void commit_as_one_group(SqliteStorage& storage, std::vector<std::function<void()>> writers) {
  std::atomic<bool> holding{false};
  std::atomic<bool> queued{false};
  std::thread holder([&] {
    const absl::Status s = storage.with_user_locks("p", std::vector<std::string_view>{"holder"},
                                                   [&](SqlConnection&, std::int64_t) -> absl::Status {
                                                     holding = true;
                                                     CHECK(wait_until([&] { return queued.load(); }));
                                                     return absl::OkStatus();
                                                   });
    CHECK(s.ok());
  });
  REQUIRE(wait_until([&] { return holding.load(); }));
  std::vector<std::thread> threads;
  for (auto& write : writers) {
    const std::int64_t waiting = storage.group_commit_stats().waiting;
    threads.emplace_back(write);
    REQUIRE(wait_until([&] { return storage.group_commit_stats().waiting == waiting + 1; }));
  }
  queued = true;
  for (std::thread& t : threads) t.join();
  holder.join();
}

std::int64_t cost_in(const absl::StatusOr<IngestResult>& r, std::string_view user) {
  REQUIRE(r.ok());
  for (const UserUsage& u : r->usage) {
    if (u.user.user_id == user) return u.models.empty() ? 0 : u.models.begin()->second.cost_nanos;
  }
  return -1;
}

// One read answers the replies of a group: each gets its own users (of its product) and the
// periods its own period_of gives; a batch whose period_of disagrees with the first batch's is
// read on its own.
TEST_CASE("server.group_commit_replies_of_two_products_and_another_period") {
  ApiFixture f;
  SqliteStorage& storage = *f.storage;
  REQUIRE(storage.create_product("p", "acme", std::string(64, 'c')).ok());
  REQUIRE(storage.create_product("q", "other", std::string(64, 'd')).ok());
  const TimeRange november{.from_ns = ns_at(2026, 11, 1), .to_ns = ns_at(2026, 12, 1)};
  const TimeRange from_17th{.from_ns = ns_at(2026, 11, 17), .to_ns = ns_at(2026, 12, 17)};
  auto in_november = [&](const UserRecord&) { return november; };
  auto from_the_17th = [&](const UserRecord&) { return from_17th; };
  const std::vector<EventRecord> p1 = batch(1, 3, "u", 10);
  std::vector<EventRecord> q1 = batch(10, 2, "u", 100);
  q1.push_back(batch(20, 1, "w", 1).front());
  std::vector<EventRecord> p2 = batch(30, 1, "u", 5);
  p2.push_back(batch(40, 1, "x", 7).front());
  absl::StatusOr<IngestResult> r1, r2, r3;
  const GroupCommit::Stats before = storage.group_commit_stats();
  commit_as_one_group(storage, {[&] { r1 = storage.ingest_with_usage("p", p1, in_november, {}); },
                                [&] { r2 = storage.ingest_with_usage("q", q1, in_november, {}); },
                                [&] { r3 = storage.ingest_with_usage("p", p2, from_the_17th, {}); }});
  CHECK(storage.group_commit_stats().commits - before.commits == 2);  // the holder's, then the three
  REQUIRE(r1.ok());
  REQUIRE(r2.ok());
  REQUIRE(r3.ok());
  CHECK(r1->usage.size() == 1);
  CHECK(cost_in(r1, "u") == 35);  // p's u: its 30 and p2's 5
  CHECK(r1->usage.front().period == november);
  CHECK(r2->usage.size() == 2);
  CHECK(cost_in(r2, "u") == 200);  // q's u: nothing of p's
  CHECK(cost_in(r2, "w") == 1);
  CHECK(r3->usage.size() == 2);
  CHECK(cost_in(r3, "u") == 35);
  CHECK(cost_in(r3, "x") == 7);
  for (const UserUsage& u : r3->usage) CHECK(u.period == from_17th);
}

// Product "p" with one webhook endpoint that wants hard-gate alerts; and the period of its users.
void create_product_with_a_webhook(SqliteStorage& storage) {
  REQUIRE(storage.create_product("p", "acme", std::string(64, 'c')).ok());
  REQUIRE(storage
              .create_webhook("p", WebhookEndpoint{.id = "wh_" + std::string(24, 'a'),
                                                   .url = "http://127.0.0.1:9/x",
                                                   .event_mask = static_cast<std::uint32_t>(AlertType::kHardGate),
                                                   .secret = "whsec_" + std::string(64, 'b'),
                                                   .created_ns = 1})
              .ok());
}
TimeRange november_2026() { return {.from_ns = ns_at(2026, 11, 1), .to_ns = ns_at(2026, 12, 1)}; }

// The alerts commit with their batch: when a group's batch cannot make its alerts (alerts_of
// throws), its caller gets the exception and nothing of the group is stored (the others are told
// and store their batches when they try again).
TEST_CASE("server.group_commit_a_batch_whose_alerts_throw_takes_its_group_back") {
  ApiFixture f;
  SqliteStorage& storage = *f.storage;
  create_product_with_a_webhook(storage);
  auto period_of = [](const UserRecord&) { return november_2026(); };
  auto none = [](std::span<const UserUsage>, std::uint32_t) { return std::vector<WebhookAlert>(); };
  auto failing = [](std::span<const UserUsage>, std::uint32_t) -> std::vector<WebhookAlert> {
    throw std::runtime_error("the alerts cannot be made");
  };
  const std::vector<EventRecord> good = batch(1, 2, "u", 10), bad = batch(10, 1, "v", 10);
  absl::StatusOr<IngestResult> first = absl::UnknownError("not run");
  bool threw = false;
  commit_as_one_group(storage, {[&] { first = storage.ingest_with_alerts("p", good, period_of, {}, none); },
                                [&] {
                                  try {
                                    static_cast<void>(storage.ingest_with_alerts("p", bad, period_of, {}, failing));
                                  } catch (const std::runtime_error&) {
                                    threw = true;
                                  }
                                }});
  CHECK(threw);
  CHECK_FALSE(first.ok());
  CHECK(f.counts().events == 0);
  const absl::StatusOr<IngestResult> again = storage.ingest_with_alerts("p", good, period_of, {}, none);
  REQUIRE(again.ok());
  CHECK(again->accepted == 2);
  CHECK(cost_in(again, "u") == 20);
}

// A product with a webhook: each batch of a group gets its own users' rows inside the
// transaction, where its alerts are made from them, and the same rows in its reply.
TEST_CASE("server.group_commit_batches_whose_alerts_are_wanted_see_their_own_users") {
  ApiFixture f;
  SqliteStorage& storage = *f.storage;
  create_product_with_a_webhook(storage);
  auto period_of = [](const UserRecord&) { return november_2026(); };
  std::vector<std::string> seen_a, seen_b;  // the users each batch's alerts were made from
  auto alerts_into = [](std::vector<std::string>& seen) {
    return [&seen](std::span<const UserUsage> usage, std::uint32_t wanted) {
      CHECK(wanted == static_cast<std::uint32_t>(AlertType::kHardGate));
      for (const UserUsage& u : usage) seen.push_back(u.user.user_id);
      return std::vector<WebhookAlert>();
    };
  };
  const auto alerts_a = alerts_into(seen_a);
  const auto alerts_b = alerts_into(seen_b);
  std::vector<EventRecord> a = batch(1, 2, "u", 10), b = batch(10, 1, "v", 3);
  b.push_back(batch(20, 1, "u", 5).front());
  absl::StatusOr<IngestResult> ra, rb;
  const GroupCommit::Stats before = storage.group_commit_stats();
  commit_as_one_group(storage, {[&] { ra = storage.ingest_with_alerts("p", a, period_of, {}, alerts_a); },
                                [&] { rb = storage.ingest_with_alerts("p", b, period_of, {}, alerts_b); }});
  CHECK(storage.group_commit_stats().commits - before.commits == 2);  // the holder's, then the two
  CHECK(seen_a == std::vector<std::string>{"u"});
  CHECK(seen_b == std::vector<std::string>{"u", "v"});
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  CHECK(ra->usage.size() == 1);
  CHECK(cost_in(ra, "u") == 25);  // its 20 and b's 5, committed together
  CHECK(rb->usage.size() == 2);
  CHECK(cost_in(rb, "u") == 25);
  CHECK(cost_in(rb, "v") == 3);
}

// Many syncers at once, each id sent by two of them: every id is stored once and counted as
// accepted by exactly one reply, whatever the grouping; the daily sums agree with the events.
TEST_CASE("server.group_commit_concurrent_syncers_store_every_event_once") {
  ApiFixture f;
  SqliteStorage& storage = *f.storage;
  REQUIRE(storage.create_product("p", "acme", std::string(64, 'c')).ok());
  constexpr int kThreads = 8, kBatches = 12, kSize = 50;
  std::atomic<std::int64_t> accepted{0}, duplicates{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        // Thread t and t ^ 1 send the same ids (in the same order, at about the same time).
        const auto first = static_cast<std::uint64_t>(((t / 2) * kBatches + b) * kSize);
        const absl::StatusOr<IngestResult> r =
            storage.ingest("p", batch(first, kSize, "user-" + std::to_string(t), 1 + t));
        if (!r.ok() || r->accepted + r->duplicates != kSize) {
          ++failures;
          continue;
        }
        accepted += r->accepted;
        duplicates += r->duplicates;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const std::int64_t distinct = kThreads / 2 * kBatches * kSize;
  CHECK(failures == 0);
  CHECK(accepted == distinct);
  CHECK(duplicates == distinct);
  CHECK(f.counts().events == distinct);
  CHECK(sql_int(f.db_path, "SELECT SUM(calls) FROM usage_daily") == distinct);
  CHECK(sql_int(f.db_path, "SELECT SUM(cost_nanos) FROM usage_daily") ==
        sql_int(f.db_path, "SELECT SUM(cost_nanos) FROM events"));
  CHECK(sql_int(f.db_path, "SELECT calls FROM product_totals") == distinct);
  const GroupCommit::Stats stats = storage.group_commit_stats();
  MESSAGE("commits: ", stats.commits, " for ", stats.bodies, " write transactions");
}

}  // namespace
}  // namespace paygent::server::test
