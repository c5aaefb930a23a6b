// The storage-neutral part of paygentd's storage: how a span of time is read (whole days from the
// daily rollups, the edges from the events), report keys, the checked sums that keep every total
// within int64, event ids as bytes, and the lock keys of users. Pure functions, tested without a
// database (tests/server/storage_logic_test.cpp); SqlStorage (server/sql_storage.h) uses them on
// every database.
//
// Thread safety: free functions without shared state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "server/storage.h"

namespace paygent::server::storage_internal {

inline constexpr std::int64_t kNanosPerDay = 86'400'000'000'000;

// floor(a / b) and ceil(a / b) for a >= 0, b > 0, without overflow.
[[nodiscard]] constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b; }
[[nodiscard]] constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// a + b into `sum`; false (sum unspecified) when it overflows int64.
[[nodiscard]] inline bool add_checked(std::int64_t& sum, std::int64_t b) { return !__builtin_add_overflow(sum, b, &sum); }

// Adds `t` into `into`; false when a sum passes int64.
[[nodiscard]] bool add_totals(Totals& into, const Totals& t);

// Totals of one event.
[[nodiscard]] Totals totals_of(const EventRecord& e);

// Adds event `e` (events[index] of its batch) into a product's all-time totals. InvalidArgument
// naming "events[index].field" and the event's user when a total would pass int64; `totals` is
// unchanged then.
absl::Status add_to_product_totals(Totals& totals, const EventRecord& e, std::size_t index);

// Adds `row` into `totals`, saturating each sum at INT64_MAX instead of failing (how an old
// history that already passes int64 is summed, so that nothing more can be added to it).
void add_saturating(Totals& totals, const Totals& row);

// How a usage query over [from_ns, to_ns) (0 <= from_ns < to_ns) is read: the whole days
// [first_day, end_day) from usage_daily (none when first_day == end_day), the partial days at
// either end (`head`, `tail`; empty when from == to) from the events.
struct DaySplit {
  std::int64_t first_day = 0;
  std::int64_t end_day = 0;
  TimeRange head;
  TimeRange tail;
  friend bool operator==(const DaySplit&, const DaySplit&) = default;
};
[[nodiscard]] DaySplit split_days(std::int64_t from_ns, std::int64_t to_ns);

// The report key of UTC day number `day` (days since 1970-01-01) for kDay ("2026-11-17") or
// kMonth ("2026-11").
[[nodiscard]] std::string day_key(std::int64_t day, ReportGroup group);

using EventId = std::array<unsigned char, 16>;
// The 16 bytes of a 32-lowercase-hex-digit event id; false when `id` is not one.
[[nodiscard]] bool decode_event_id(std::string_view id, EventId& out);

// The key of user `user_id` of product `product` in a database's lock space (PostgreSQL's
// advisory locks): the same on every replica and build (64-bit FNV-1a). Users whose keys collide
// share a lock, which costs only concurrency.
[[nodiscard]] std::int64_t user_lock_key(std::int64_t product, std::string_view user_id);

}  // namespace paygent::server::storage_internal
