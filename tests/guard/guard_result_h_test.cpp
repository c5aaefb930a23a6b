#include "paygent/guard_result.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <vector>

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

// The reset time in a message is written without absl's time zone lookup (guard/gate.cpp,
// minute_utc): it must say what absl::FormatTime says, before 1970 and across leap days too.
TEST_CASE("guard.guard_result.reset_minute_is_what_absl_formats") {
  GuardResult r;
  r.status = GateStatus::kHardGate;
  r.reason = GateReason::kTotalSpend;
  std::vector<absl::Time> times = {absl::UnixEpoch(), absl::UnixEpoch() - absl::Nanoseconds(1),
                                   absl::UnixEpoch() - absl::Seconds(59), absl::UnixEpoch() - absl::Minutes(1),
                                   absl::FromCivil(absl::CivilSecond(2000, 2, 29, 23, 59, 59), absl::UTCTimeZone()),
                                   absl::FromCivil(absl::CivilSecond(2100, 3, 1, 0, 0, 0), absl::UTCTimeZone()),
                                   absl::FromCivil(absl::CivilSecond(1900, 2, 28, 12, 30, 1), absl::UTCTimeZone()),
                                   // the edges of years 1000-9999, and past them (absl's own words)
                                   absl::FromCivil(absl::CivilSecond(1000, 1, 1, 0, 0, 0), absl::UTCTimeZone()),
                                   absl::FromCivil(absl::CivilSecond(1000, 1, 1, 0, 0, 0), absl::UTCTimeZone()) - absl::Nanoseconds(1),
                                   absl::FromCivil(absl::CivilSecond(0, 1, 1, 0, 0, 0), absl::UTCTimeZone()),
                                   absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59), absl::UTCTimeZone()),
                                   absl::FromCivil(absl::CivilSecond(10000, 1, 1, 0, 0, 0), absl::UTCTimeZone()),
                                   absl::FromCivil(absl::CivilSecond(-4000, 3, 1, 0, 0, 0), absl::UTCTimeZone()),
                                   absl::InfinitePast(), absl::FromUnixSeconds(INT64_MIN / 2)};
  for (absl::Time t = absl::FromCivil(absl::CivilSecond(1950, 1, 1, 0, 0, 0), absl::UTCTimeZone());
       t < absl::FromCivil(absl::CivilSecond(2200, 1, 1, 0, 0, 0), absl::UTCTimeZone());
       t += absl::Hours(61) + absl::Minutes(17) + absl::Seconds(31) + absl::Milliseconds(7)) {
    times.push_back(t);
  }
  int checked = 0;
  for (absl::Time t : times) {
    r.resets_at = t;
    const std::string message = r.message();
    const std::string expected = "resets " + absl::FormatTime("%Y-%m-%d %H:%M UTC", t, absl::UTCTimeZone());
    REQUIRE_MESSAGE(message.ends_with(expected), message, " for ", absl::FormatTime(t, absl::UTCTimeZone()));
    ++checked;
  }
  CHECK(checked > 35'000);
}

}  // namespace paygent
