#include "paygent/guard_result.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

namespace paygent {

TEST_CASE("guard.guard_result.words_for_people") {
  GuardResult r;
  CHECK(r.ok());
  CHECK(r.user_id.empty());
  CHECK(r.gate_reason().empty());
  CHECK(gate_status_name(GateStatus::kSoftGate) == "soft_gate");
  r.status = GateStatus::kHardGate;
  r.reason = GateReason::kModelLimit;
  r.model = "gpt-4o";
  r.usage_pct = 1.004;
  r.current_value = 50'210;
  r.limit_value = 50'000;
  r.resets_at = absl::FromCivil(absl::CivilDay(2026, 12, 1), absl::UTCTimeZone());
  CHECK_FALSE(r.ok());
  CHECK(r.gate_reason() == "model_limit:gpt-4o");
  CHECK(r.message() == "hard gate: model_limit:gpt-4o: 50,210 of 50,000 gpt-4o tokens this period; resets 2026-12-01 "
                       "00:00 UTC");
  r.call_estimate = 1'210;  // a refused call's estimate is not counted as used
  CHECK(r.message() ==
        "hard gate: model_limit:gpt-4o: 49,000 of 50,000 gpt-4o tokens this period, this call would add up to 1,210; "
        "resets 2026-12-01 00:00 UTC");
  r.call_estimate = 0;
  r.reason = GateReason::kTotalSpend;
  r.status = GateStatus::kSoftGate;
  r.usage_pct = 0.816;
  r.current_value = 39'984'000'000;
  r.limit_value = 49'000'000'000;
  CHECK(r.message() == "soft gate: total_spend at 81.6% ($39.98 of $49.00 this period); resets 2026-12-01 00:00 UTC");
  r.reason = GateReason::kBackendUnavailable;
  CHECK(r.gate_reason() == "backend_unavailable");
}

}  // namespace paygent
