// The lease keeper (guard/internal/lease_keeper.h) against a fake POST /api/v1/leases: the wire
// codec, grants and the invariant across holders, "held elsewhere" versus "cap reached", the
// outage rule, bad replies, an older backend, idle and final releases.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "guard/internal/lease_keeper.h"
#include "paygent/paygent.h"
#include "tests/guard/lease_fake.h"

namespace paygent {
namespace {

using internal::LeaseAsk;
using internal::LeaseKeeper;
using internal::LeaseOptions;
using internal::LeaseVerdict;
using testing::FakeLeaseBackend;

// The lease's window: around now (the keeper retires leases whose window has ended).
const std::int64_t kStart = FakeLeaseBackend::now() - 86'400'000'000'000;
const std::int64_t kEnd = FakeLeaseBackend::now() + 30 * 86'400'000'000'000;
constexpr std::int64_t kCap = 300'000'000;  // $0.30

struct Holder {
  Holder(FakeLeaseBackend& backend, double outage_share = 0.10, bool strict = false,
         absl::Duration wait = absl::Milliseconds(500)) {
    LeaseOptions o;
    o.lease_wait = wait;
    o.outage_share = outage_share;
    o.strict_backend = strict;
    o.now_ns = [] { return FakeLeaseBackend::now(); };
    o.report_error = [this](absl::Status s) {
      std::lock_guard<std::mutex> lock(mu);
      errors.push_back(std::string(s.message()));
    };
    o.exchange = [this, &backend](std::string body, absl::Duration) -> absl::StatusOr<internal::HttpReply> {
      if (cut) return absl::UnavailableError("cut off");
      return backend.handle(body);
    };
    keeper = std::make_unique<LeaseKeeper>(std::move(o), nullptr);
    lease = keeper->lease("u1", "total_spend", kStart, kEnd, &used, kCap);
  }
  // What a call of `estimate` gets: the hot path's answer, else the keeper's.
  internal::LeaseRoom call(std::int64_t estimate) {
    const std::int64_t after = used.load() + estimate;
    if (lease->fits(after)) return {LeaseVerdict::kFits, lease->bound.load()};
    return keeper->room(*lease, after, kCap, FakeLeaseBackend::now());
  }
  // Admits and commits `estimate` when its verdict allows it; true if admitted.
  bool spend(std::int64_t estimate) {
    const internal::LeaseRoom r = call(estimate);
    const bool ok = (r.verdict == LeaseVerdict::kFits || r.verdict == LeaseVerdict::kOutage) &&
                    used.load() + estimate <= r.bound;
    if (ok) used += estimate;
    return ok;
  }
  std::vector<std::string> error_list() {
    std::lock_guard<std::mutex> lock(mu);
    return errors;
  }
  std::atomic<std::int64_t> used{0};
  std::atomic<bool> cut{false};  // this holder cannot reach the backend
  std::mutex mu;
  std::vector<std::string> errors;
  std::unique_ptr<LeaseKeeper> keeper;
  internal::Lease* lease = nullptr;
};

TEST_CASE("guard.lease.request_is_encoded_as_the_wire_says") {
  LeaseAsk a{.user_id = "u\"1", .limit = "total_spend", .period_start_ns = 1, .period_end_ns = 2, .cap = 300,
             .used = 75, .acked = 60, .want = 30, .need = 7, .release = false};
  CHECK(internal::encode_lease_request("ab", {a}) ==
        "{\"holder\":\"ab\",\"leases\":[{\"user_id\":\"u\\\"1\",\"limit\":\"total_spend\",\"period_start_ns\":1,"
        "\"period_end_ns\":2,\"cap\":300,\"used\":75,\"acked\":60,\"want\":30,\"need\":7,\"release\":false}]}");
}

TEST_CASE("guard.lease.reply_is_read_strictly_and_names_the_field") {
  const std::vector<LeaseAsk> asks{{.user_id = "u1", .limit = "total_spend", .period_start_ns = 5, .used = 10}};
  const std::string good_entry =
      "{\"user_id\":\"u1\",\"limit\":\"total_spend\",\"period_start_ns\":5,\"granted\":20,\"ceiling\":30,"
      "\"spent\":0,\"held_elsewhere\":0,\"remaining\":70,\"holders\":1,\"newer\":[1]}";
  auto ok = internal::parse_lease_reply("{\"ttl_ms\":1000,\"leases\":[" + good_entry + "],\"also_newer\":true}", asks);
  REQUIRE(ok.ok());
  CHECK(ok->ttl_ms == 1000);
  CHECK(ok->leases[0].ceiling == 30);
  CHECK(ok->leases[0].remaining == 70);
  auto error_of = [&](std::string body) {
    auto r = internal::parse_lease_reply(body, asks);
    REQUIRE_FALSE(r.ok());
    return std::string(r.status().message());
  };
  CHECK(error_of("nope").find("body") != std::string::npos);
  CHECK(error_of("{\"leases\":[" + good_entry + "]}").find("ttl_ms: missing") != std::string::npos);
  CHECK(error_of("{\"ttl_ms\":0,\"leases\":[" + good_entry + "]}").find("ttl_ms: is 0") != std::string::npos);
  CHECK(error_of("{\"ttl_ms\":10,\"leases\":[]}").find("0 entries answer 1 asked") != std::string::npos);
  // The error for a reply whose one entry is the good one with `from` replaced by `to`.
  auto error_with = [&](std::string_view from, std::string_view to) {
    std::string entry = good_entry;
    entry.replace(entry.find(from), from.size(), to);
    return error_of("{\"ttl_ms\":10,\"leases\":[" + entry + "]}");
  };
  CHECK(error_with("u1", "u2").find("leases[0].user_id") != std::string::npos);
  CHECK(error_with("\"remaining\":70", "\"remaining\":-1").find("leases[0].remaining: is -1") != std::string::npos);
  CHECK(error_with("\"ceiling\":30", "\"ceiling\":9").find("leases[0].ceiling") != std::string::npos);
  CHECK(error_with("\"spent\":0", "\"spent\":\"0\"").find("leases[0].spent: not an int64") != std::string::npos);
  CHECK(error_with("\"period_start_ns\":5", "\"period_start_ns\":6").find("leases[0].period_start_ns") !=
        std::string::npos);
}

TEST_CASE("guard.lease.holder_ids_are_32_random_hex_digits") {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string id = internal::new_holder_id();
    CHECK(id.size() == 32);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    seen.insert(id);
  }
  CHECK(seen.size() == 100);
}

TEST_CASE("guard.lease.a_call_with_no_room_gets_a_slice_and_later_calls_use_it_locally") {
  FakeLeaseBackend backend;
  Holder h(backend);
  CHECK_FALSE(h.lease->fits(1'000'000));  // nothing granted yet
  CHECK(h.spend(1'000'000));
  CHECK(backend.requests() == 1);
  CHECK(h.lease->ceiling.load() >= 1'000'000);
  // The slice is a few calls' worth, not the whole cap: the rest stays for other processes.
  CHECK(h.lease->ceiling.load() < kCap / 2);
  const std::int64_t requests = backend.requests();
  CHECK(h.spend(1'000'000));  // within the slice: no exchange on the call path
  CHECK(backend.requests() == requests);
  CHECK(h.error_list().empty());
}

TEST_CASE("guard.lease.holders_together_never_hold_more_than_the_cap") {
  FakeLeaseBackend backend;
  std::vector<std::unique_ptr<Holder>> holders;
  for (int i = 0; i < 4; ++i) holders.push_back(std::make_unique<Holder>(backend));
  std::atomic<std::int64_t> admitted{0};
  std::vector<std::thread> threads;
  for (auto& h : holders) {
    threads.emplace_back([&, hp = h.get()] {
      for (int i = 0; i < 400; ++i) {
        if (hp->spend(5'000'000)) admitted += 5'000'000;
        CHECK(backend.live_headroom("u1", "total_spend") <= kCap);
      }
    });
  }
  for (auto& t : threads) t.join();
  // Every call estimated exactly: admitted spend reaches the cap and never passes it.
  CHECK(admitted.load() <= kCap);
  CHECK(admitted.load() >= kCap - 4 * 5'000'000);
}

TEST_CASE("guard.lease.an_unsure_cap_reached_is_waited_out_once_not_once_per_call") {
  // This holder's events are never marked acked (no syncer), so every "cap reached" is asked with
  // used > acked: it might be a double count of events in flight. The first refused call waits
  // lease_wait (500 ms here) for an ack that could change it; with no ack since, the next calls
  // get the same answer at once (before: each waited 500 ms, 169 s for this suite's 4 x 400 calls
  // on a loaded machine).
  FakeLeaseBackend backend;
  Holder h(backend);
  while (h.spend(5'000'000)) {
  }
  CHECK(h.used.load() == kCap);
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) CHECK(h.call(5'000'000).verdict == LeaseVerdict::kCapReached);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(2'000));
}

TEST_CASE("guard.lease.budget_held_elsewhere_is_not_a_limit_reached_and_the_cap_is") {
  FakeLeaseBackend backend;
  backend.set_ttl_ms(200);
  Holder a(backend), b(backend);
  // a asks for the whole remaining budget in one call.
  REQUIRE(a.spend(kCap));
  CHECK(b.call(1'000'000).verdict == LeaseVerdict::kHeldElsewhere);
  // a dies (its thread stops without a word) after its events reached the ledger: its lease
  // expires within one TTL, and then the cap itself is reached, said as such.
  backend.set_spent(kCap);
  a.cut = true;
  a.keeper.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  CHECK(backend.live_headroom("u1", "total_spend") == 0);
  CHECK(b.call(1'000'000).verdict == LeaseVerdict::kCapReached);
}

TEST_CASE("guard.lease.outage_admits_the_share_beyond_the_last_ceiling_and_no_more") {
  FakeLeaseBackend backend;
  Holder h(backend, /*outage_share=*/0.10);
  REQUIRE(h.spend(10'000'000));
  const std::int64_t ceiling = h.lease->ceiling.load();
  const std::int64_t remaining = h.lease->remaining.load();
  const std::int64_t share = std::min(remaining / 1, kCap / 10);
  backend.set_mode(FakeLeaseBackend::Mode::kDown);
  std::int64_t admitted_beyond = 0;
  const auto started = std::chrono::steady_clock::now();
  while (h.spend(1'000'000)) admitted_beyond = h.used.load() - ceiling;
  CHECK(admitted_beyond <= share);
  CHECK(admitted_beyond >= share - 1'000'000);
  CHECK_FALSE(h.keeper->reachable());
  const internal::LeaseRoom r = h.call(1'000'000);
  CHECK(r.verdict == LeaseVerdict::kOutage);
  CHECK(r.bound == ceiling + share);
  // Said once per outage, and calls were not held up by it (one wait at most, not one per call).
  CHECK(h.error_list().size() == 1);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(1500));
}

TEST_CASE("guard.lease.a_holder_never_granted_admits_its_outage_share_of_the_cap") {
  FakeLeaseBackend backend;
  backend.set_mode(FakeLeaseBackend::Mode::kDown);
  Holder h(backend, /*outage_share=*/0.25);
  std::int64_t n = 0;
  while (h.spend(1'000'000)) ++n;
  CHECK(n * 1'000'000 == kCap / 4);
}

TEST_CASE("guard.lease.strict_backend_closes_instead_of_the_outage_share") {
  FakeLeaseBackend backend;
  backend.set_mode(FakeLeaseBackend::Mode::kDown);
  Holder h(backend, 0.10, /*strict=*/true);
  CHECK(h.call(1'000'000).verdict == LeaseVerdict::kStrictClosed);
}

TEST_CASE("guard.lease.a_bad_reply_is_an_error_and_the_holder_fails_open") {
  for (auto mode : {FakeLeaseBackend::Mode::kGarbage, FakeLeaseBackend::Mode::kWrongEntry}) {
    FakeLeaseBackend backend;
    backend.set_mode(mode);
    Holder h(backend);
    const internal::LeaseRoom r = h.call(1'000'000);
    CHECK(r.verdict == LeaseVerdict::kOutage);
    CHECK(h.spend(1'000'000));
    const auto errors = h.error_list();
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].find("lease reply") != std::string::npos);
  }
}

TEST_CASE("guard.lease.an_older_backend_turns_leases_off_and_says_so_once") {
  FakeLeaseBackend backend;
  backend.set_mode(FakeLeaseBackend::Mode::kNotFound);
  Holder h(backend);
  const internal::LeaseRoom r = h.call(kCap * 2);
  CHECK(r.verdict == LeaseVerdict::kFits);
  CHECK(r.bound == INT64_MAX);
  CHECK(h.keeper->unsupported());
  h.call(1);
  CHECK(h.error_list().size() == 1);
}

TEST_CASE("guard.lease.idle_leases_are_released_after_one_ttl_and_all_at_stop") {
  FakeLeaseBackend backend;
  backend.set_ttl_ms(300);
  Holder idle(backend), busy(backend);
  busy.lease = busy.keeper->lease("u1", "model_limit:gpt-4o", kStart, kEnd, &busy.used, kCap);
  REQUIRE(idle.spend(1'000'000));
  REQUIRE(busy.spend(1'000'000));
  CHECK(backend.rows() == 2);
  // busy keeps calling for 1 s (three TTLs): its lease is renewed; idle's is given back.
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(busy.spend(1000));
  }
  CHECK(backend.releases() == 1);
  CHECK(idle.lease->expires_ns.load() == 0);
  CHECK(busy.lease->fits(busy.used.load()));
  CHECK(backend.live_headroom("u1", "model_limit:gpt-4o") > busy.used.load());
  busy.keeper->stop();
  CHECK(backend.releases() == 2);
  CHECK(backend.last_body().find("\"release\":true") != std::string::npos);
  CHECK(backend.live_headroom("u1", "model_limit:gpt-4o") == busy.used.load());
  // A released lease is asked for again by the next call.
  REQUIRE(idle.spend(1'000'000));
  CHECK(idle.lease->fits(idle.used.load()));
}

}  // namespace
}  // namespace paygent

namespace paygent {
namespace {

TEST_CASE("guard.lease.options_are_checked_at_create_naming_the_field") {
  for (double share : {-0.01, 1.01, std::nan("")}) {
    Options o;
    o.local_store_path = "";
    o.lease_outage_share = share;
    auto made = Paygent::create(std::move(o));
    REQUIRE_FALSE(made.ok());
    CHECK(made.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(made.status().message().find("lease_outage_share") != std::string_view::npos);
  }
  Options o;
  o.local_store_path = "";
  o.lease_wait = absl::Milliseconds(-1);
  auto made = Paygent::create(std::move(o));
  REQUIRE_FALSE(made.ok());
  CHECK(made.status().message().find("lease_wait") != std::string_view::npos);
  Options edge;
  edge.local_store_path = "";
  edge.lease_outage_share = 1.0;
  CHECK(Paygent::create(std::move(edge)).ok());
}

}  // namespace
}  // namespace paygent
