// Tests of the storage-neutral logic (server/storage_logic.h), without a database: how a span is
// split into whole days and edges, report keys, the checked totals, event ids and lock keys.
#include "server/storage_logic.h"

#include <cstdint>
#include <string>

#include <doctest/doctest.h>

#include "tests/server/fixture.h"

namespace paygent::server::test {
namespace {

using namespace ::paygent::server::storage_internal;

TEST_CASE("server.storage_logic_splits_a_span_into_whole_days_and_edges") {
  constexpr std::int64_t kDay = kNanosPerDay;
  // Whole days only.
  CHECK(split_days(2 * kDay, 5 * kDay) ==
        DaySplit{.first_day = 2, .end_day = 5, .head = {2 * kDay, 2 * kDay}, .tail = {5 * kDay, 5 * kDay}});
  // Partial days at both ends.
  CHECK(split_days(2 * kDay + 1, 5 * kDay - 1) ==
        DaySplit{.first_day = 3, .end_day = 4, .head = {2 * kDay + 1, 3 * kDay}, .tail = {4 * kDay, 5 * kDay - 1}});
  // Within one day, or across one midnight without a whole day: all from the events.
  CHECK(split_days(2 * kDay + 5, 2 * kDay + 9) ==
        DaySplit{.first_day = 0, .end_day = 0, .head = {2 * kDay + 5, 2 * kDay + 9}, .tail = {2 * kDay + 9, 2 * kDay + 9}});
  CHECK(split_days(2 * kDay + 5, 3 * kDay + 9).first_day == 0);
  CHECK(split_days(0, INT64_MAX).end_day == INT64_MAX / kDay);
}

TEST_CASE("server.storage_logic_keys_days_and_months_in_utc") {
  const std::int64_t day = ns_at(2026, 11, 17, 23, 59, 59) / kNanosPerDay;
  CHECK(day_key(day, ReportGroup::kDay) == "2026-11-17");
  CHECK(day_key(day, ReportGroup::kMonth) == "2026-11");
  CHECK(day_key(0, ReportGroup::kDay) == "1970-01-01");
}

TEST_CASE("server.storage_logic_refuses_a_total_past_int64_naming_the_event") {
  Totals totals{.calls = 1, .cost_nanos = INT64_MAX - 5};
  EventRecord e;
  e.user_id = "ada";
  e.cost_nanos = 5;
  REQUIRE(add_to_product_totals(totals, e, 0).ok());
  CHECK(totals.cost_nanos == INT64_MAX);
  CHECK(totals.calls == 2);
  e.cost_nanos = 1;
  const absl::Status s = add_to_product_totals(totals, e, 3);
  CHECK(absl::IsInvalidArgument(s));
  CHECK(s.message().find("events[3].cost_nanos") != std::string::npos);
  CHECK(s.message().find("\"ada\"") != std::string::npos);
  CHECK(totals.calls == 2);  // unchanged
  Totals saturated{.input_tokens = INT64_MAX - 1};
  add_saturating(saturated, Totals{.calls = 1, .input_tokens = 7});
  CHECK(saturated.input_tokens == INT64_MAX);
  CHECK(saturated.calls == 1);
  Totals sum{.calls = INT64_MAX};
  CHECK_FALSE(add_totals(sum, Totals{.calls = 1}));
}

TEST_CASE("server.storage_logic_reads_event_ids_and_keys_user_locks") {
  EventId id{};
  REQUIRE(decode_event_id("000102030405060708090a0b0c0d0eff", id));
  CHECK(id[0] == 0x00);
  CHECK(id[10] == 0x0a);
  CHECK(id[15] == 0xff);
  CHECK_FALSE(decode_event_id("000102030405060708090A0B0C0D0EFF", id));  // uppercase
  CHECK_FALSE(decode_event_id("0001", id));
  // The same on every replica and build; distinct per product and user.
  CHECK(user_lock_key(1, "ada") == user_lock_key(1, "ada"));
  CHECK(user_lock_key(1, "ada") != user_lock_key(2, "ada"));
  CHECK(user_lock_key(1, "ada") != user_lock_key(1, "bob"));
}

}  // namespace
}  // namespace paygent::server::test
