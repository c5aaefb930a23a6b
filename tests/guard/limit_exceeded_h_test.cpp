#include "paygent/limit_exceeded.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

namespace paygent {

TEST_CASE("guard.limit_exceeded.carries_the_result") {
  GuardResult r;
  r.status = GateStatus::kHardGate;
  r.reason = GateReason::kSessionSpend;
  r.current_value = 5'000'000'000;
  r.limit_value = 5'000'000'000;
  r.usage_pct = 1.0;
  const LimitExceeded e(r);
  CHECK(e.result().gate_reason() == "session_spend");
  CHECK(std::string(e.what()) == r.message());
  const std::runtime_error& base = e;  // catchable as a std::exception too
  CHECK(std::string(base.what()).find("$5.00 spent of $5.00 this session") != std::string::npos);
}

}  // namespace paygent
