// Tests of calendar_period / subscription_period (guard/period.cpp).
#include <cstdint>
#include <random>
#include <string>

#include <doctest/doctest.h>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "paygent/plan.h"

namespace paygent {
namespace {

// An instant given as UTC civil time.
absl::Time utc(int year, int month, int day, int hour = 0, int minute = 0, int second = 0) {
  return absl::FromCivil(absl::CivilSecond(year, month, day, hour, minute, second), absl::UTCTimeZone());
}

std::string text(absl::Time t) { return absl::FormatTime("%Y-%m-%d %H:%M:%E*S", t, absl::UTCTimeZone()); }

// "[start, end)" in UTC, for readable failures.
std::string text(const Period& p) { return "[" + text(p.start) + ", " + text(p.end) + ")"; }

constexpr absl::Duration kNano = absl::Nanoseconds(1);

TEST_CASE("plan.period_month") {
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(2024, 3, 15, 12))) == "[2024-03-01 00:00:00, 2024-04-01 00:00:00)");
  // December runs into the next year.
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(2024, 12, 31, 23, 59, 59) + absl::Milliseconds(999))) ==
        "[2024-12-01 00:00:00, 2025-01-01 00:00:00)");
  // The boundary instant belongs to the next period; one nanosecond before, to the previous one.
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(2025, 1, 1))) == "[2025-01-01 00:00:00, 2025-02-01 00:00:00)");
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(2025, 1, 1) - kNano)) ==
        "[2024-12-01 00:00:00, 2025-01-01 00:00:00)");
  // February, leap and not.
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(2024, 2, 29, 12))) == "[2024-02-01 00:00:00, 2024-03-01 00:00:00)");
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(2023, 2, 28, 23, 59, 59))) ==
        "[2023-02-01 00:00:00, 2023-03-01 00:00:00)");
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(2100, 2, 28))) == "[2100-02-01 00:00:00, 2100-03-01 00:00:00)");
  // Before the Unix epoch.
  CHECK(text(calendar_period(PeriodRule::kMonth, utc(1969, 12, 31, 23, 59, 59))) ==
        "[1969-12-01 00:00:00, 1970-01-01 00:00:00)");
}

TEST_CASE("plan.period_week_starts_monday") {
  // 2024-01-01 is a Monday.
  const Period week = calendar_period(PeriodRule::kWeek, utc(2024, 1, 3, 15));  // Wednesday
  CHECK(text(week) == "[2024-01-01 00:00:00, 2024-01-08 00:00:00)");
  CHECK(absl::GetWeekday(absl::CivilDay(absl::ToCivilDay(week.start, absl::UTCTimeZone()))) == absl::Weekday::monday);
  CHECK(calendar_period(PeriodRule::kWeek, utc(2024, 1, 1)) == week);                    // Monday 00:00
  CHECK(calendar_period(PeriodRule::kWeek, utc(2024, 1, 7, 23, 59, 59)) == week);        // Sunday night
  CHECK(calendar_period(PeriodRule::kWeek, utc(2024, 1, 8) - kNano) == week);
  CHECK(text(calendar_period(PeriodRule::kWeek, utc(2024, 1, 8))) == "[2024-01-08 00:00:00, 2024-01-15 00:00:00)");
  // A week across the new year (2020-12-31 is a Thursday) and across a leap day.
  CHECK(text(calendar_period(PeriodRule::kWeek, utc(2020, 12, 31))) == "[2020-12-28 00:00:00, 2021-01-04 00:00:00)");
  CHECK(text(calendar_period(PeriodRule::kWeek, utc(2024, 2, 29))) == "[2024-02-26 00:00:00, 2024-03-04 00:00:00)");
  // Before the epoch (1970-01-01 was a Thursday).
  CHECK(text(calendar_period(PeriodRule::kWeek, utc(1970, 1, 1))) == "[1969-12-29 00:00:00, 1970-01-05 00:00:00)");
}

TEST_CASE("plan.period_day") {
  CHECK(text(calendar_period(PeriodRule::kDay, utc(2024, 2, 29, 13, 5))) == "[2024-02-29 00:00:00, 2024-03-01 00:00:00)");
  CHECK(text(calendar_period(PeriodRule::kDay, utc(2024, 12, 31, 23, 59, 59))) ==
        "[2024-12-31 00:00:00, 2025-01-01 00:00:00)");
  CHECK(text(calendar_period(PeriodRule::kDay, utc(2025, 1, 1))) == "[2025-01-01 00:00:00, 2025-01-02 00:00:00)");
}

TEST_CASE("plan.period_calendar_contains_and_chains") {
  std::mt19937_64 random(7);
  std::uniform_int_distribution<std::int64_t> seconds(-2'000'000'000, 5'000'000'000);  // 1906 .. 2128
  for (const PeriodRule rule : {PeriodRule::kMonth, PeriodRule::kWeek, PeriodRule::kDay}) {
    for (int i = 0; i < 2000; ++i) {
      const absl::Time t = absl::FromUnixSeconds(seconds(random)) + absl::Nanoseconds(i);
      const Period p = calendar_period(rule, t);
      INFO(text(t));
      REQUIRE(p.contains(t));
      CHECK(calendar_period(rule, p.end) == Period{p.end, calendar_period(rule, p.end).end});
      CHECK(calendar_period(rule, p.start) == p);
      CHECK(calendar_period(rule, p.end - kNano) == p);
    }
  }
}

TEST_CASE("plan.subscription_first_period_and_before_start") {
  const absl::Time start = utc(2024, 1, 15, 10);
  const absl::Time end = utc(2024, 2, 15, 10);
  const Period first{start, end};
  CHECK(subscription_period(start, end, start) == first);
  CHECK(subscription_period(start, end, utc(2024, 2, 1)) == first);
  CHECK(subscription_period(start, end, end - kNano) == first);
  CHECK(subscription_period(start, end, start - absl::Hours(24 * 400)) == first);  // before the start
  CHECK(subscription_period(start, end, absl::InfinitePast()) == first);
  // The end instant starts the next period.
  CHECK(text(subscription_period(start, end, end)) == "[2024-02-15 10:00:00, 2024-03-15 10:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 12, 20))) == "[2024-12-15 10:00:00, 2025-01-15 10:00:00)");
  // The day of month is reached but not yet the time of day.
  CHECK(text(subscription_period(start, end, utc(2024, 6, 15, 9, 59, 59))) ==
        "[2024-05-15 10:00:00, 2024-06-15 10:00:00)");
}

TEST_CASE("plan.subscription_renews_by_month_from_day_31") {
  // Leap year: Jan 31 -> Feb 29 -> Mar 31 -> Apr 30 -> May 31, always anchored on the 31st.
  const absl::Time start = utc(2024, 1, 31, 10);
  const absl::Time end = utc(2024, 2, 29, 10);
  CHECK(text(subscription_period(start, end, utc(2024, 3, 5))) == "[2024-02-29 10:00:00, 2024-03-31 10:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 3, 31, 10))) == "[2024-03-31 10:00:00, 2024-04-30 10:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 3, 31, 10) - kNano)) ==
        "[2024-02-29 10:00:00, 2024-03-31 10:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 5, 1))) == "[2024-04-30 10:00:00, 2024-05-31 10:00:00)");
  CHECK(text(subscription_period(start, end, utc(2025, 2, 28, 12))) == "[2025-02-28 10:00:00, 2025-03-31 10:00:00)");
  CHECK(text(subscription_period(start, end, utc(2028, 2, 29, 10))) == "[2028-02-29 10:00:00, 2028-03-31 10:00:00)");

  // Not a leap year: Jan 31 -> Feb 28 is a month too.
  CHECK(text(subscription_period(utc(2023, 1, 31), utc(2023, 2, 28), utc(2023, 3, 30))) ==
        "[2023-02-28 00:00:00, 2023-03-31 00:00:00)");
  // Jan 30 -> Feb 28 (clamped) stays anchored on the 30th.
  CHECK(text(subscription_period(utc(2023, 1, 30), utc(2023, 2, 28), utc(2023, 4, 1))) ==
        "[2023-03-30 00:00:00, 2023-04-30 00:00:00)");
  // December to January.
  CHECK(text(subscription_period(utc(2023, 12, 31), utc(2024, 1, 31), utc(2024, 2, 10))) ==
        "[2024-01-31 00:00:00, 2024-02-29 00:00:00)");
}

TEST_CASE("plan.subscription_renews_by_several_months") {
  // Quarterly from Jan 31.
  const absl::Time start = utc(2023, 1, 31);
  const absl::Time end = utc(2023, 4, 30);
  CHECK(text(subscription_period(start, end, utc(2023, 5, 1))) == "[2023-04-30 00:00:00, 2023-07-31 00:00:00)");
  CHECK(text(subscription_period(start, end, utc(2023, 8, 1))) == "[2023-07-31 00:00:00, 2023-10-31 00:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 2, 1))) == "[2024-01-31 00:00:00, 2024-04-30 00:00:00)");
  // Yearly from a leap day.
  CHECK(text(subscription_period(utc(2024, 2, 29), utc(2025, 2, 28), utc(2026, 3, 1))) ==
        "[2026-02-28 00:00:00, 2027-02-28 00:00:00)");
  CHECK(text(subscription_period(utc(2024, 2, 29), utc(2025, 2, 28), utc(2028, 3, 1))) ==
        "[2028-02-29 00:00:00, 2029-02-28 00:00:00)");
}

TEST_CASE("plan.subscription_renews_by_duration") {
  // Seven days from a Wednesday morning.
  const absl::Time start = utc(2024, 1, 3, 9);
  const absl::Time end = utc(2024, 1, 10, 9);
  CHECK(text(subscription_period(start, end, end)) == "[2024-01-10 09:00:00, 2024-01-17 09:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 2, 1))) == "[2024-01-31 09:00:00, 2024-02-07 09:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 2, 7, 9) - kNano)) == "[2024-01-31 09:00:00, 2024-02-07 09:00:00)");
  CHECK(text(subscription_period(start, end, utc(2024, 2, 7, 9))) == "[2024-02-07 09:00:00, 2024-02-14 09:00:00)");

  // Thirty days that are not a calendar month: Jan 1 -> Jan 31 -> Mar 1 (leap year) -> Mar 31.
  const absl::Time s30 = utc(2024, 1, 1);
  const absl::Time e30 = utc(2024, 1, 31);
  CHECK(text(subscription_period(s30, e30, utc(2024, 2, 29, 23))) == "[2024-01-31 00:00:00, 2024-03-01 00:00:00)");
  CHECK(text(subscription_period(s30, e30, utc(2024, 3, 15))) == "[2024-03-01 00:00:00, 2024-03-31 00:00:00)");
  // Jan 15 -> Feb 14 is 30 days, not a month.
  CHECK(text(subscription_period(utc(2024, 1, 15), utc(2024, 2, 14), utc(2024, 3, 15))) ==
        "[2024-03-15 00:00:00, 2024-04-14 00:00:00)");
  // Same day of month at another time of day is not a month either (31.5 days).
  CHECK(text(subscription_period(utc(2024, 1, 15), utc(2024, 2, 15, 12), utc(2024, 2, 20))) ==
        "[2024-02-15 12:00:00, 2024-03-18 00:00:00)");
  // Sub-second lengths and offsets are kept.
  const absl::Time odd = utc(2024, 1, 1) + absl::Milliseconds(250);
  CHECK(subscription_period(odd, odd + absl::Hours(1), odd + absl::Minutes(150)) ==
        Period{odd + absl::Hours(2), odd + absl::Hours(3)});
}

TEST_CASE("plan.subscription_far_future") {
  // By month: Jan 31 anchoring still holds in 2100 (not a leap year).
  CHECK(text(subscription_period(utc(2024, 1, 31, 10), utc(2024, 2, 29, 10), utc(2100, 2, 15))) ==
        "[2100-01-31 10:00:00, 2100-02-28 10:00:00)");
  CHECK(text(subscription_period(utc(2024, 1, 31, 10), utc(2024, 2, 29, 10), utc(2100, 3, 1))) ==
        "[2100-02-28 10:00:00, 2100-03-31 10:00:00)");
  // By duration: seven days from Monday 2024-01-01 are the ISO weeks.
  const absl::Time t = utc(2100, 6, 15, 13);
  CHECK(subscription_period(utc(2024, 1, 1), utc(2024, 1, 8), t) == calendar_period(PeriodRule::kWeek, t));
  // One-second periods over 75 years: no loop per period.
  CHECK(subscription_period(utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 1), t + absl::Milliseconds(300)) ==
        Period{t, t + absl::Seconds(1)});
  CHECK(subscription_period(utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 1), absl::InfiniteFuture()) ==
        Period{absl::InfiniteFuture(), absl::InfiniteFuture()});
}

TEST_CASE("plan.subscription_contains_and_chains") {
  std::mt19937_64 random(11);
  std::uniform_int_distribution<std::int64_t> seconds(0, 3'000'000'000);  // up to ~95 years on
  const absl::Time starts[] = {utc(2024, 1, 31, 10), utc(2023, 1, 30), utc(2024, 2, 29), utc(2024, 1, 3, 9)};
  const absl::Time ends[] = {utc(2024, 2, 29, 10), utc(2023, 4, 30), utc(2025, 2, 28), utc(2024, 1, 10, 9)};
  for (int k = 0; k < 4; ++k) {
    for (int i = 0; i < 1000; ++i) {
      const absl::Time t = starts[k] + absl::Seconds(seconds(random));
      const Period p = subscription_period(starts[k], ends[k], t);
      INFO(text(t), " in ", text(p));
      REQUIRE(p.contains(t));
      CHECK(subscription_period(starts[k], ends[k], p.start) == p);
      CHECK(subscription_period(starts[k], ends[k], p.end - kNano) == p);
      CHECK(subscription_period(starts[k], ends[k], p.end).start == p.end);
    }
  }
}

TEST_CASE("plan.subscription_degenerate") {
  const absl::Time t = utc(2024, 1, 1);
  // An empty or inverted subscription is returned as given.
  CHECK(subscription_period(t, t, t + absl::Hours(1)) == Period{t, t});
  CHECK(subscription_period(t, t - absl::Hours(1), t) == Period{t, t - absl::Hours(1)});
  // A subscription that never ends.
  CHECK(subscription_period(t, absl::InfiniteFuture(), utc(2200, 1, 1)) == Period{t, absl::InfiniteFuture()});
}

}  // namespace
}  // namespace paygent
