// The storage contract of budget leases (Storage::grant_leases, docs/leases.md) on every backend,
// SQLite and a real PostgreSQL (tests/server/storage_backends.h): the grant's slices from the
// ledger and the other holders, ceilings kept until released, releases, expiry, the ledger total of
// each limit key, and the cap held under concurrent grants from threads and from two storages on
// one database (replicas).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "server/storage.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"

namespace paygent::server::test {
namespace {

constexpr std::int64_t kTtl = 10'000'000'000;  // 10 s
const std::int64_t kStart = ns_at(2026, 11, 1, 6);  // a period that starts and ends inside a day
const std::int64_t kEnd = ns_at(2026, 11, 20, 12);
const std::int64_t kNow = ns_at(2026, 11, 17, 12);

std::string holder(int n) { return event_id(static_cast<std::uint64_t>(n), 0xfeed); }

EventRecord ev(std::uint64_t n, std::string user, std::string model, std::string session, std::int64_t input,
               std::int64_t output, std::int64_t cost, std::int64_t ts_ns) {
  EventRecord e;
  e.id = event_id(n, 0x1ea5e);
  e.user_id = std::move(user);
  e.model = std::move(model);
  e.session_id = std::move(session);
  e.input_tokens = input;
  e.output_tokens = output;
  e.cost_nanos = cost;
  e.ts_ns = ts_ns;
  return e;
}

LeaseRequest total(std::int64_t cap, std::int64_t used, std::int64_t acked, std::int64_t want, std::int64_t need = 0,
                   bool release = false) {
  return total_spend_lease(cap, used, acked, want, need, release, kStart, kEnd);
}

LeaseGrant grant(Storage& s, const std::string& who, const LeaseRequest& r, std::int64_t now = kNow) {
  absl::StatusOr<std::vector<LeaseGrant>> g = s.grant_leases("p", who, {&r, 1}, now, kTtl);
  REQUIRE_MESSAGE(g.ok(), g.status().ToString());
  REQUIRE(g->size() == 1);
  CHECK(g->front().user_id == r.user_id);
  CHECK(g->front().limit_key == r.limit_key);
  CHECK(g->front().period_start_ns == r.period_start_ns);
  CHECK(g->front().granted == g->front().ceiling - r.used);
  return g->front();
}

void ingest(Storage& s, std::vector<EventRecord> events) {
  const absl::StatusOr<IngestResult> r = s.ingest("p", events);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->accepted == static_cast<std::int64_t>(events.size()));
}

TEST_CASE("server.storage_leases_grant_slices_that_shrink_keep_ceilings_and_release") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> s = backend.fresh();
    REQUIRE(s->create_product("p", "acme", std::string(64, 'a')).ok());
    REQUIRE(s->create_product("q", "other", std::string(64, 'b')).ok());
    ingest(*s, {ev(1, "u1", "m", "s", 1, 1, 40, ns_at(2026, 11, 1, 7)), ev(2, "u1", "m", "s", 1, 1, 20, kNow),
                ev(3, "u1", "m", "s", 1, 1, 1000, kStart - 1),  // before the period
                ev(4, "u1", "m", "s", 1, 1, 1000, kEnd),        // at its end: outside
                ev(5, "u2", "m", "s", 1, 1, 1000, kNow)});      // another user
    REQUIRE(s->ingest("q", std::vector<EventRecord>{ev(6, "u1", "m", "s", 1, 1, 1000, kNow)}).ok());

    // cap 300, spent 60. Alone, A gets what it wants of the 240 free.
    LeaseGrant a = grant(*s, holder(1), total(300, 0, 0, 100));
    CHECK(a == LeaseGrant{.user_id = "u1", .limit_key = "total_spend", .period_start_ns = kStart, .granted = 100,
                          .ceiling = 100, .spent = 60, .held_elsewhere = 0, .remaining = 140, .holders = 1});
    // B and C: each slice is the fair share of what remains among more holders.
    const LeaseGrant b = grant(*s, holder(2), total(300, 0, 0, 1000));
    CHECK(b.granted == 70);  // 140 among 2
    CHECK(b.held_elsewhere == 100);
    CHECK(b.remaining == 70);
    CHECK(b.holders == 2);
    const LeaseGrant c = grant(*s, holder(3), total(300, 0, 0, 1000));
    CHECK(c.granted == 24);  // ceil(70 / 3)
    CHECK(c.held_elsewhere == 170);
    CHECK(c.remaining == 46);
    CHECK(c.holders == 3);
    // need beyond the fair share, up to what is free.
    CHECK(grant(*s, holder(4), total(300, 0, 0, 0, 1000)).granted == 46);
    CHECK(grant(*s, holder(4), total(300, 0, 0, 0, 0, true)).holders == 3);  // released at once: deleted

    // A asks for nothing more, its events not yet delivered: its ceiling is kept, not lowered to
    // used + 0.
    a = grant(*s, holder(1), total(300, 100, 0, 0));
    CHECK(a.ceiling == 100);
    CHECK(a.granted == 0);
    CHECK(a.held_elsewhere == 94);
    // A's 100 reach the ledger; it renews with them acknowledged.
    ingest(*s, {ev(10, "u1", "m", "s", 1, 1, 60, kNow), ev(11, "u1", "m", "s", 1, 1, 40, kNow)});
    a = grant(*s, holder(1), total(300, 100, 100, 0));
    CHECK(a.spent == 160);
    CHECK(a.ceiling == 100);
    CHECK(a.remaining == 46);
    // A releases with everything acknowledged: its lease is gone.
    a = grant(*s, holder(1), total(300, 100, 100, 0, 0, true));
    CHECK(a.ceiling == 100);
    CHECK(a.holders == 2);
    CHECK(grant(*s, holder(2), total(300, 0, 0, 0)).held_elsewhere == 24);  // C's only
    // C releases with 10 not acknowledged: those 10 stay held until they are (or it expires).
    const LeaseGrant c_released = grant(*s, holder(3), total(300, 10, 0, 0, 0, true));
    CHECK(c_released.ceiling == 10);
    CHECK(c_released.holders == 2);
    LeaseGrant b2 = grant(*s, holder(2), total(300, 0, 0, 0));
    CHECK(b2.held_elsewhere == 10);
    CHECK(b2.ceiling == 70);  // B's own ceiling, kept

    // The leases are in the database: another storage on it (reopened, or a replica) sees them.
    std::unique_ptr<Storage> again = backend.again();
    b2 = grant(*again, holder(5), total(300, 0, 0, 0));
    CHECK(b2.held_elsewhere == 80);
    CHECK(b2.holders == 3);

    // Another product's leases and ledger are its own; an unknown product is NotFound.
    const LeaseRequest r = total(300, 0, 0, 1000);
    absl::StatusOr<std::vector<LeaseGrant>> q = s->grant_leases("q", holder(1), {&r, 1}, kNow, kTtl);
    REQUIRE(q.ok());
    CHECK(q->front().spent == 1000);
    CHECK(q->front().held_elsewhere == 0);
    CHECK(absl::IsNotFound(s->grant_leases("nope", holder(1), {&r, 1}, kNow, kTtl).status()));
  });
}

TEST_CASE("server.storage_leases_expire_and_free_their_headroom") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> s = backend.fresh();
    REQUIRE(s->create_product("p", "acme", std::string(64, 'a')).ok());
    CHECK(grant(*s, holder(1), total(100, 0, 0, 60)).ceiling == 60);
    // Live until now + ttl.
    LeaseGrant b = grant(*s, holder(2), total(100, 0, 0, 0), kNow + kTtl - 1);
    CHECK(b.held_elsewhere == 60);
    CHECK(b.holders == 2);
    b = grant(*s, holder(2), total(100, 0, 0, 0), kNow + kTtl);
    CHECK(b.held_elsewhere == 0);
    CHECK(b.holders == 1);
    CHECK(b.remaining == 100);
    // An expired lease's ceiling is no floor any more: a new one starts from used.
    LeaseGrant a = grant(*s, holder(1), total(100, 5, 5, 0), kNow + kTtl);
    CHECK(a.ceiling == 5);
    // A renewal lives a TTL from itself.
    a = grant(*s, holder(1), total(100, 5, 5, 50), kNow + 2 * kTtl - 1);
    CHECK(a.ceiling == 55);
    b = grant(*s, holder(2), total(100, 0, 0, 0), kNow + 3 * kTtl - 2);
    CHECK(b.held_elsewhere == 50);
    CHECK(grant(*s, holder(2), total(100, 0, 0, 0), kNow + 3 * kTtl - 1).held_elsewhere == 0);
  });
}

TEST_CASE("server.storage_leases_spent_per_limit_key_from_the_ledger") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> s = backend.fresh();
    REQUIRE(s->create_product("p", "acme", std::string(64, 'a')).ok());
    const std::int64_t session_start = ns_at(2026, 11, 17, 9);
    // Whole days of the period (read from the daily sums) and its partial first and last days.
    ingest(*s, {ev(1, "u1", "gpt-4o", "s1", 100, 20, 500, ns_at(2026, 11, 1, 7)),
                ev(2, "u1", "gpt-4o-2024-08-06", "s1", 30, 5, 70, ns_at(2026, 11, 5)),
                ev(3, "u1", "openai/gpt-4o-20240513", "s2", 1, 2, 3, ns_at(2026, 11, 17, 10)),
                ev(4, "u1", "gpt-4o-mini", "s1", 1000, 1000, 9, ns_at(2026, 11, 17, 11)),
                ev(5, "u1", "gpt-4o", "s1", 7, 7, 11, ns_at(2026, 11, 20, 11)),
                ev(6, "u1", "gpt-4o", "s1", 100000, 0, 100000, ns_at(2026, 11, 1, 5)),  // before the period
                ev(7, "u1", "gpt-4o", "s1", 100000, 0, 100000, ns_at(2026, 11, 20, 13)),  // after it
                ev(8, "u2", "gpt-4o", "s1", 100000, 0, 100000, ns_at(2026, 11, 10))});    // another user
    std::vector<LeaseRequest> requests;
    for (const char* key : {"total_spend", "model_limit:gpt-4o", "model_limit:gpt-4o-mini", "model_limit:claude-3"}) {
      LeaseRequest r = total(1'000'000, 0, 0, 1);
      r.limit_key = key;
      requests.push_back(r);
    }
    LeaseRequest session = total(1'000'000, 0, 0, 1);
    session.limit_key = "session_spend:s1";
    session.period_start_ns = session_start;  // the session window: open-ended
    session.period_end_ns = INT64_MAX;
    requests.push_back(session);
    session.limit_key = "session_spend:s2";
    requests.push_back(session);
    LeaseRequest other_user = total(1'000'000, 0, 0, 1);
    other_user.user_id = "u2";
    requests.push_back(other_user);

    absl::StatusOr<std::vector<LeaseGrant>> g = s->grant_leases("p", holder(1), requests, kNow, kTtl);
    REQUIRE_MESSAGE(g.ok(), g.status().ToString());
    REQUIRE(g->size() == requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
      CHECK((*g)[i].limit_key == requests[i].limit_key);  // in the requests' order
      CHECK((*g)[i].user_id == requests[i].user_id);
    }
    CHECK((*g)[0].spent == 500 + 70 + 3 + 9 + 11);
    CHECK((*g)[1].spent == 120 + 35 + 3 + 14);  // every name that canonicalises to gpt-4o
    CHECK((*g)[2].spent == 2000);
    CHECK((*g)[3].spent == 0);
    CHECK((*g)[4].spent == 9 + 11 + 100000);  // s1 from the session's start, to the end of time
    CHECK((*g)[5].spent == 3);
    CHECK((*g)[6].spent == 100000);
    // Each limit's lease is its own: one holder, one unit each.
    for (const LeaseGrant& one : *g) {
      CHECK(one.holders == 1);
      CHECK(one.granted == 1);
    }
  });
}

// N holders spend a user's budget at once, each only within the ceiling of its lease, through two
// storages on one database (two replicas): the ledger ends at the cap exactly, never past it.
TEST_CASE("server.storage_leases_hold_the_cap_under_concurrent_grants_and_replicas") {
  for_each_backend([](StorageBackend& backend) {
    std::unique_ptr<Storage> one = backend.fresh();
    REQUIRE(one->create_product("p", "acme", std::string(64, 'a')).ok());
    std::unique_ptr<Storage> two = backend.again();
    constexpr std::int64_t kCap = 200'000;
    constexpr int kHolders = 6;
    std::atomic<std::uint64_t> next_event{0};
    std::atomic<int> finished{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> threads;
    for (int h = 0; h < kHolders; ++h) {
      threads.emplace_back([&, h] {
        Storage& s = h % 2 == 0 ? *one : *two;
        std::mt19937_64 rng(static_cast<std::uint64_t>(h));
        std::int64_t used = 0;
        for (int round = 0; round < 5000 && !failed; ++round) {
          const LeaseRequest r = total(kCap, used, used, 20'000);
          absl::StatusOr<std::vector<LeaseGrant>> g = s.grant_leases("p", holder(100 + h), {&r, 1}, kNow, kTtl);
          if (!g.ok() || g->size() != 1) {
            failed = true;
            break;
          }
          const LeaseGrant& lease = g->front();
          const std::int64_t room = lease.ceiling - used;
          if (room == 0) {
            if (lease.remaining == 0 && lease.held_elsewhere == 0) {
              ++finished;
              break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));  // others hold the rest: they will spend it
            continue;
          }
          // Spends its whole room, in one or two calls, and delivers them.
          std::vector<EventRecord> events;
          const std::int64_t first = room > 1 ? 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(room)) : room;
          for (std::int64_t cost : {first, room - first}) {
            if (cost > 0) events.push_back(ev(next_event++, "u1", "m", "s", 1, 1, cost, kNow));
          }
          if (!s.ingest("p", events).ok()) {
            failed = true;
            break;
          }
          used += room;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    REQUIRE_FALSE(failed.load());
    CHECK(finished.load() == kHolders);
    const absl::StatusOr<GroupedTotals> spent =
        one->report("p", {.from_ns = kStart, .to_ns = kEnd, .group_by = ReportGroup::kUser, .user_id = "u1"});
    REQUIRE(spent.ok());
    CHECK(spent->at("u1").cost_nanos == kCap);
    const LeaseGrant last = grant(*two, holder(99), total(kCap, 0, 0, 1000));
    CHECK(last.spent == kCap);
    CHECK(last.granted == 0);
    CHECK(last.held_elsewhere == 0);
    CHECK(last.holders == kHolders + 1);
  });
}

}  // namespace
}  // namespace paygent::server::test
