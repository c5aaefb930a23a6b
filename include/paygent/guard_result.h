// The result of a gate check.
//
// Thread safety: a value type.
//
// Lifetime: its text fields (user_id, model) are views, so that checking allocates nothing. In a
// GuardResult returned by Paygent::check(), held by a Reservation or passed to a callback they
// point to storage owned by the Paygent and stay valid while that Paygent (or a Reservation of it)
// lives. LimitExceeded owns copies of them: LimitExceeded::result() stays valid, texts included,
// for as long as the exception object lives, whatever happens to the Paygent. A GuardResult copied
// out of either keeps pointing where its source pointed: to keep the texts longer, copy them into
// strings (or keep the LimitExceeded).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "paygent/plan.h"

namespace paygent {

// How a call is gated, per limit. With U the limit's usage before the call (settled, held by calls
// in flight and, with a backend, made by other processes), E this call's estimate in the limit's
// unit (0 for a check without one), L the limit and H = hard_gate_at:
//   hard gate: U >= H*L (the limit is already at or past hard_gate_at: every call is refused,
//              with or without an estimate), or E > 0 and U + E > H*L (the call would take it
//              past). A call whose estimate lands exactly on H*L fits, and is admitted.
//   soft gate: not hard, and U + E >= T*L for a soft threshold T.
// All in exact integers (nano-USD or tokens, thresholds in ppm).
enum class GateStatus : std::uint8_t {
  kOk,
  kSoftGate,    // admitted, at or above a soft threshold: on_soft_gate fires (once per threshold)
  kHardGate,    // refused by the rule above: on_hard_gate fires, LimitExceeded is thrown
  kUnmetered,   // outside any Context (or Paygent failed open): the call runs unmetered
};

enum class GateReason : std::uint8_t {
  kNone,
  kTotalSpend,    // "total_spend": spend in the billing period (USD)
  kSessionSpend,  // "session_spend": spend in the session (USD)
  kModelLimit,    // "model_limit:<model>": tokens of one model in the billing period
  kBackendUnavailable,  // "backend_unavailable": strict_backend is on and the backend is unreachable
  // "lease_exhausted": budget held by other processes. The limit is not reached, but the rest of
  // it is leased to other processes serving the user (docs/leases.md); clears when their leases
  // are used, released or expire.
  kLeaseExhausted,
  // "credit_wallet": the customer's prepaid credit wallet (docs/billing.md, "Credit wallets"), as
  // the backend last reported it: current_value / limit_value are the credits charged (used from the
  // wallet plus overage) / topped up, in nano-credits. Judged like a spend limit without an estimate (the backend prices credits, so a
  // call's own cost in credits is unknown here): hard at hard_gate_at of the credits (an empty
  // wallet, at the default 100%), soft at the plan's soft thresholds. Clears with a top-up.
  kCreditWallet,
};

std::string_view gate_status_name(GateStatus s) noexcept;  // "ok", "soft_gate", "hard_gate", "unmetered"

// The most restrictive of the plan's limits for one call. Dollars and tokens are never compared
// with each other: each limit is judged by its own usage_pct, and the highest gate status wins
// (ties: the highest usage_pct; then period spend, session spend, model limits in that order).
struct GuardResult {
  GateStatus status = GateStatus::kOk;
  GateReason reason = GateReason::kNone;
  // The user the call was gated for (the Context's user_id); empty when unmetered. See "Lifetime" above.
  std::string_view user_id;
  // For kModelLimit: the canonical model name. See "Lifetime" above.
  std::string_view model;
  // Fraction of the limit in use, counting settled usage, reservations in flight and, when this
  // result comes from a reservation, this call's own estimate.
  double usage_pct = 0.0;
  // For spend limits: nano-USD. For model limits: tokens. current_value counts this call's
  // estimate, as usage_pct does; current_value - call_estimate is what was used before the call.
  std::int64_t current_value = 0;
  std::int64_t limit_value = 0;
  std::int64_t call_estimate = 0;  // this call's estimate in the same unit; 0 for a check without one
  // When the limit resets: the end of the billing period, or of the session if it stays idle.
  absl::Time resets_at = absl::InfiniteFuture();
  // The threshold crossed (soft or hard), in ppm; 0 for kOk.
  Ppm threshold = 0;

  // "total_spend", "session_spend", "model_limit:gpt-4o", or "" for no limit.
  [[nodiscard]] std::string gate_reason() const;
  // A sentence for people that says which limit, how much is used and when it resets. A hard gate
  // says what was used before the call and what the call would add:
  //   "hard gate: total_spend: $0.99 spent of $1.00 this period, this call would add up to $0.02;
  //    resets 2026-12-01 00:00 UTC"
  //   "hard gate: model_limit:gpt-4o: 50,000 of 50,000 gpt-4o tokens this period; resets ..."
  // (no "would add" part when the call has no estimate); other results say the usage with the
  // call: "soft gate: total_spend at 81.6% ($39.98 of $49.00 this period); resets ...".
  // Built on demand, so checking allocates nothing.
  [[nodiscard]] std::string message() const;

  [[nodiscard]] bool ok() const noexcept { return status == GateStatus::kOk || status == GateStatus::kUnmetered; }
};

}  // namespace paygent
