// The storage-neutral part of budget leases (see server/lease_logic.h).
#include "server/lease_logic.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

#include "paygent/price_catalog.h"

namespace paygent::server::lease_internal {

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  std::int64_t sum = 0;
  if (!__builtin_add_overflow(a, b, &sum)) return sum;
  return b > 0 ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
}

std::int64_t saturating_sub(std::int64_t a, std::int64_t b) {
  std::int64_t difference = 0;
  if (!__builtin_sub_overflow(a, b, &difference)) return difference;
  return b > 0 ? std::numeric_limits<std::int64_t>::min() : std::numeric_limits<std::int64_t>::max();
}

std::optional<LimitKey> parse_limit_key(std::string_view key, std::size_t max_name_bytes) {
  if (key == "total_spend") return LimitKey{LimitKind::kTotalSpend, {}};
  constexpr std::string_view kModel = "model_limit:";
  constexpr std::string_view kSession = "session_spend:";
  LimitKey out;
  if (key.starts_with(kModel)) {
    out = LimitKey{LimitKind::kModel, key.substr(kModel.size())};
  } else if (key.starts_with(kSession)) {
    out = LimitKey{LimitKind::kSession, key.substr(kSession.size())};
  } else {
    return std::nullopt;
  }
  if (out.name.empty() || out.name.size() > max_name_bytes) return std::nullopt;
  return out;
}

std::int64_t spent_from_models(const LimitKey& limit, const GroupedTotals& models) {
  std::int64_t spent = 0;
  // The library keys a model limit by the canonical name, and meters each call under the model
  // it called ("gpt-4o-2024-08-06" counts against "gpt-4o"): both sides are canonicalised here.
  const std::string_view model = canonical_model(limit.name);
  for (const auto& [name, totals] : models) {
    if (limit.kind == LimitKind::kTotalSpend) {
      spent = saturating_add(spent, totals.cost_nanos);
    } else if (limit.kind == LimitKind::kModel && canonical_model(name) == model) {
      spent = saturating_add(spent, saturating_add(totals.input_tokens, totals.output_tokens));
    }
  }
  return spent;
}

void OtherLeases::add(std::int64_t ceiling, std::int64_t acked, std::int64_t cap) {
  headroom = saturating_add(headroom, std::max<std::int64_t>(0, saturating_sub(ceiling, acked)));
  ++holders;
  min_cap = min_cap ? std::min(*min_cap, cap) : cap;
}

GrantDecision decide_grant(const LeaseRequest& request, std::int64_t spent, const OtherLeases& others,
                           std::optional<std::int64_t> live_ceiling) {
  // Every holder of a product runs the same plans: a smaller cap stated by another live holder is
  // the one that holds (a plan lowered while leases were out).
  const std::int64_t cap = others.min_cap ? std::min(request.cap, *others.min_cap) : request.cap;
  // Step 2: what is free once the ledger, the others' headroom and this holder's own
  // unacknowledged events are counted.
  const std::int64_t before_own = saturating_sub(saturating_sub(cap, spent), others.headroom);
  const std::int64_t free = saturating_sub(before_own, request.used - request.acked);
  const std::int64_t holders = saturating_add(others.holders, 1);
  // Step 3: the slice.
  std::int64_t slice = 0;
  if (free > 0) {
    const std::int64_t fair = free / holders + (free % holders != 0 ? 1 : 0);
    slice = std::min(free, std::max(request.need, std::min(request.want, fair)));
  }
  // Step 4: the new ceiling, never below the live one unless released (the holder may be
  // admitting under it while this request travels).
  GrantDecision d;
  d.ceiling = saturating_add(request.used, slice);
  if (!request.release && live_ceiling && *live_ceiling > d.ceiling) d.ceiling = *live_ceiling;
  d.granted = d.ceiling - request.used;
  // Step 5: a release with nothing unacknowledged leaves nothing to hold.
  d.delete_row = request.release && request.used == request.acked;
  const std::int64_t own_headroom = d.delete_row ? 0 : d.ceiling - request.acked;
  d.held_elsewhere = others.headroom;
  d.remaining = std::max<std::int64_t>(0, saturating_sub(before_own, own_headroom));
  d.holders = d.delete_row ? others.holders : holders;
  return d;
}

}  // namespace paygent::server::lease_internal
