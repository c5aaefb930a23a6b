// Tests of the storage-neutral lease logic (server/lease_logic.h), without a database: limit keys,
// the ledger total of a limit from totals by model, and the grant's arithmetic (docs/leases.md).
#include "server/lease_logic.h"

#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>

#include <doctest/doctest.h>

#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

using namespace ::paygent::server::lease_internal;

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

LeaseRequest request(std::int64_t cap, std::int64_t used, std::int64_t acked, std::int64_t want, std::int64_t need,
                     bool release = false) {
  return total_spend_lease(cap, used, acked, want, need, release, 0, 100);
}

OtherLeases others_of(std::initializer_list<std::array<std::int64_t, 3>> leases) {  // {ceiling, acked, cap}
  OtherLeases o;
  for (const auto& l : leases) o.add(l[0], l[1], l[2]);
  return o;
}

TEST_CASE("server.lease_logic_parses_the_three_limit_key_forms") {
  CHECK(parse_limit_key("total_spend", 10)->kind == LimitKind::kTotalSpend);
  CHECK(parse_limit_key("model_limit:gpt-4o", 10)->kind == LimitKind::kModel);
  CHECK(parse_limit_key("model_limit:gpt-4o", 10)->name == "gpt-4o");
  CHECK(parse_limit_key("session_spend:s1", 10)->name == "s1");
  CHECK(parse_limit_key("session_spend:s1", 10)->kind == LimitKind::kSession);
  CHECK_FALSE(parse_limit_key("session_spend:", 10));        // no id
  CHECK_FALSE(parse_limit_key("model_limit:gpt-4o", 5));     // past the bound
  CHECK_FALSE(parse_limit_key("total_spend:x", 10));
  CHECK_FALSE(parse_limit_key("Total_spend", 10));
  CHECK_FALSE(parse_limit_key("", 10));
}

TEST_CASE("server.lease_logic_spent_of_a_limit_from_totals_by_model") {
  GroupedTotals models;
  models["gpt-4o"] = Totals{.calls = 1, .input_tokens = 100, .output_tokens = 20, .cached_input_tokens = 7, .cost_nanos = 500};
  models["gpt-4o-2024-08-06"] = Totals{.calls = 1, .input_tokens = 30, .output_tokens = 5, .cost_nanos = 200};
  models["openai/gpt-4o-20240513"] = Totals{.calls = 1, .input_tokens = 1, .output_tokens = 1, .cost_nanos = 1};
  models["gpt-4o-mini"] = Totals{.calls = 1, .input_tokens = 1000, .output_tokens = 1000, .cost_nanos = 9};
  CHECK(spent_from_models(*parse_limit_key("total_spend", 64), models) == 710);
  // Every name that canonicalises to the limit's model; not a model whose name merely starts alike.
  CHECK(spent_from_models(*parse_limit_key("model_limit:gpt-4o", 64), models) == 157);
  // A dated key is canonicalised too.
  CHECK(spent_from_models(*parse_limit_key("model_limit:gpt-4o-2024-08-06", 64), models) == 157);
  CHECK(spent_from_models(*parse_limit_key("model_limit:gpt-4o-mini", 64), models) == 2000);
  CHECK(spent_from_models(*parse_limit_key("model_limit:claude", 64), models) == 0);
  models["big"] = Totals{.input_tokens = kMax, .output_tokens = kMax, .cost_nanos = kMax};
  CHECK(spent_from_models(*parse_limit_key("total_spend", 64), models) == kMax);  // saturates
  CHECK(spent_from_models(*parse_limit_key("model_limit:big", 64), models) == kMax);
}

TEST_CASE("server.lease_logic_grants_the_documented_slice") {
  // The example of docs/leases.md: cap 300, spent 60, this holder used 75 of which 60 acked; two
  // other holders hold 45.
  const OtherLeases others = others_of({{80, 50, 300}, {35, 20, 300}});
  CHECK(others.headroom == 45);
  CHECK(others.holders == 2);
  // free = 300 - 60 - 45 - 15 = 180; fair = 60; want 30 -> 30.
  GrantDecision d = decide_grant(request(300, 75, 60, 30, 7), 60, others, std::nullopt);
  CHECK(d == GrantDecision{.ceiling = 105, .granted = 30, .held_elsewhere = 45, .remaining = 150, .holders = 3});
  // want above the fair share: the fair share (ceil(180 / 3)).
  d = decide_grant(request(300, 75, 60, 1000, 0), 60, others, std::nullopt);
  CHECK(d.granted == 60);
  CHECK(d.remaining == 120);
  // need above the fair share: need, up to what is free.
  d = decide_grant(request(300, 75, 60, 10, 100), 60, others, std::nullopt);
  CHECK(d.granted == 100);
  d = decide_grant(request(300, 75, 60, 10, 500), 60, others, std::nullopt);
  CHECK(d.granted == 180);
  CHECK(d.remaining == 0);
  // ceil: 10 free among 3 holders is a slice of 4.
  d = decide_grant(request(75, 0, 0, 100, 0), 20, others_of({{45, 0, 75}, {0, 0, 75}}), std::nullopt);
  CHECK(d.granted == 4);
}

TEST_CASE("server.lease_logic_slices_shrink_with_what_remains_and_with_holders") {
  std::int64_t last = std::numeric_limits<std::int64_t>::max();
  for (std::int64_t spent : {0, 100, 200, 250, 290, 299}) {
    const GrantDecision d = decide_grant(request(300, 0, 0, 1000, 0), spent, {}, std::nullopt);
    CHECK(d.granted == 300 - spent);  // alone: everything free
    CHECK(d.granted < last);
    last = d.granted;
  }
  last = std::numeric_limits<std::int64_t>::max();
  OtherLeases others;
  for (int holders = 1; holders <= 5; ++holders) {
    const GrantDecision d = decide_grant(request(300, 0, 0, 1000, 0), 0, others, std::nullopt);
    CHECK(d.granted == (300 - others.headroom + holders - 1) / holders);
    CHECK(d.granted < last);
    CHECK(d.holders == holders);
    last = d.granted;
    others.add(10, 0, 300);
  }
}

TEST_CASE("server.lease_logic_nothing_when_nothing_is_free") {
  // The cap is reached, or held by others, or by this holder's own unacknowledged events.
  CHECK(decide_grant(request(300, 0, 0, 10, 10), 300, {}, std::nullopt).granted == 0);
  CHECK(decide_grant(request(300, 0, 0, 10, 10), 400, {}, std::nullopt).remaining == 0);
  const GrantDecision held = decide_grant(request(300, 0, 0, 10, 10), 100, others_of({{200, 0, 300}}), std::nullopt);
  CHECK(held.granted == 0);
  CHECK(held.held_elsewhere == 200);
  CHECK(held.ceiling == 0);
  CHECK(decide_grant(request(300, 250, 50, 10, 10), 100, {}, std::nullopt).granted == 0);
  // The smallest cap among the live leases holds.
  // (50 free below the smaller cap, shared by two holders.)
  CHECK(decide_grant(request(300, 0, 0, 1000, 0), 100, others_of({{100, 100, 150}}), std::nullopt).granted == 25);
}

TEST_CASE("server.lease_logic_a_ceiling_is_never_lowered_unless_released") {
  // Nothing free now, but the holder may be admitting under its live ceiling of 120.
  GrantDecision d = decide_grant(request(300, 100, 100, 0, 0), 300, {}, 120);
  CHECK(d.ceiling == 120);
  CHECK(d.granted == 20);
  CHECK_FALSE(d.delete_row);
  // A higher new ceiling replaces it.
  d = decide_grant(request(300, 100, 100, 50, 0), 100, {}, 120);
  CHECK(d.ceiling == 150);
  // Released: the ceiling is `used`; the row goes when everything is acknowledged.
  d = decide_grant(request(300, 100, 100, 0, 0, true), 100, {}, 120);
  CHECK(d.ceiling == 100);
  CHECK(d.granted == 0);
  CHECK(d.delete_row);
  CHECK(d.holders == 0);
  CHECK(d.remaining == 200);
  // ... and stays (holding its unacknowledged events) while some are not.
  d = decide_grant(request(300, 100, 80, 0, 0, true), 80, others_of({{10, 0, 300}}), 120);
  CHECK(d.ceiling == 100);
  CHECK_FALSE(d.delete_row);
  CHECK(d.holders == 2);
  CHECK(d.remaining == 300 - 80 - 10 - 20);
}

TEST_CASE("server.lease_logic_never_overflows") {
  // Headrooms past int64 saturate; the grant stays within the cap.
  const OtherLeases others = others_of({{kMax, 0, kMax}, {kMax, 0, kMax}});
  CHECK(others.headroom == kMax);
  GrantDecision d = decide_grant(request(kMax, kMax, 0, kMax, kMax), kMax, others, std::nullopt);
  CHECK(d.granted == 0);
  CHECK(d.remaining == 0);
  d = decide_grant(request(kMax, kMax - 1, kMax - 1, kMax, kMax), 0, {}, std::nullopt);
  CHECK(d.ceiling == kMax);
  CHECK(d.granted == 1);
  d = decide_grant(request(kMax, 0, 0, kMax, 0), 0, {}, std::nullopt);
  CHECK(d.granted == kMax);
  CHECK(saturating_add(kMax, 1) == kMax);
  CHECK(saturating_sub(-kMax, 5) == std::numeric_limits<std::int64_t>::min());
}

}  // namespace
}  // namespace paygent::server::test
