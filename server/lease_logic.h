// The storage-neutral part of budget leases (docs/leases.md): limit keys, the ledger's total of a
// limit from a user's totals by model, and the grant's arithmetic (steps 2 to 5 of "The grant").
// Pure functions, tested without a database (tests/server/lease_logic_test.cpp); SqlStorage
// (server/sql_leases.cpp) reads the rows and the ledger, and writes what these decide.
//
// Every amount is a non-negative int64 in the limit's unit (nano-USD or tokens); sums saturate at
// INT64_MAX and differences at INT64_MIN, so that no input can overflow (a saturated sum only
// makes headroom larger or free budget smaller: it never grants more than the cap).
//
// Thread safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "server/storage.h"

namespace paygent::server::lease_internal {

enum class LimitKind : std::uint8_t { kTotalSpend, kModel, kSession };

// A parsed limit key; `name` (the model or the session id) views into the key.
struct LimitKey {
  LimitKind kind = LimitKind::kTotalSpend;
  std::string_view name;
};

// "total_spend", "model_limit:<model>" or "session_spend:<session id>" (the model or id 1 to
// `max_name_bytes` bytes); nullopt for anything else.
[[nodiscard]] std::optional<LimitKey> parse_limit_key(std::string_view key, std::size_t max_name_bytes);

// The ledger's total of a period limit from a user's totals by model over its window: the cost of
// every model for kTotalSpend; for kModel, input + output tokens of the models whose canonical
// name (paygent::canonical_model) is that of `limit.name`. Saturates at INT64_MAX. Not for kSession
// (its total is a sum over the session's events).
[[nodiscard]] std::int64_t spent_from_models(const LimitKey& limit, const GroupedTotals& models);

// What a grant sees of the limit's live leases of other holders (same user, limit and
// period_start_ns, not expired).
struct OtherLeases {
  std::int64_t headroom = 0;  // sum of max(0, ceiling - acked), saturated
  std::int64_t holders = 0;
  std::optional<std::int64_t> min_cap;  // the smallest cap they stated; nullopt: none

  // Adds one live lease.
  void add(std::int64_t ceiling, std::int64_t acked, std::int64_t cap);
};

// The decision of one grant: the reply's numbers, and whether the row is deleted (a release with
// used == acked) rather than written with `ceiling`.
struct GrantDecision {
  std::int64_t ceiling = 0;
  std::int64_t granted = 0;
  std::int64_t held_elsewhere = 0;
  std::int64_t remaining = 0;
  std::int64_t holders = 0;
  bool delete_row = false;
  friend bool operator==(const GrantDecision&, const GrantDecision&) = default;
};

// Steps 2 to 5 of docs/leases.md, "The grant", for `request` (validated), given the ledger's
// `spent`, the other live leases, and the holder's own live ceiling (nullopt: no live lease).
// The cap is the smallest of the request's and the others'.
[[nodiscard]] GrantDecision decide_grant(const LeaseRequest& request, std::int64_t spent, const OtherLeases& others,
                                         std::optional<std::int64_t> live_ceiling);

// a + b, a - b and ceil(a / b) (b > 0), saturating instead of overflowing.
[[nodiscard]] std::int64_t saturating_add(std::int64_t a, std::int64_t b);
[[nodiscard]] std::int64_t saturating_sub(std::int64_t a, std::int64_t b);

}  // namespace paygent::server::lease_internal
