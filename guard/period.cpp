// Billing periods: calendar rules and subscription renewal (see include/paygent/plan.h).
//
// Everything is UTC and uses absl civil time, so month lengths, leap years and the ISO week come
// from the calendar rather than from fixed durations.
#include <algorithm>
#include <cstdint>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "paygent/plan.h"

namespace paygent {
namespace {

// The number of days in the month `m`.
int days_in_month(absl::CivilMonth m) {
  return static_cast<int>(absl::CivilDay(m + 1) - absl::CivilDay(m));
}

// `start` moved by `months` calendar months, keeping its time of day (sub-second part included)
// and its day of month, clamped to the length of the target month: Jan 31 + 1 month is Feb 28
// (or 29), Jan 31 + 2 months is Mar 31. Always computed from `start` itself, never chained, so
// a clamped month does not shift the months after it.
absl::Time add_months(absl::Time start, std::int64_t months) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const absl::CivilSecond civil = absl::ToCivilSecond(start, utc);
  const absl::Duration subsecond = start - absl::FromCivil(civil, utc);
  const absl::CivilMonth month = absl::CivilMonth(civil) + months;
  const int day = std::min(civil.day(), days_in_month(month));
  const absl::CivilSecond moved(month.year(), month.month(), day, civil.hour(), civil.minute(), civil.second());
  return absl::FromCivil(moved, utc) + subsecond;
}

// The number of whole calendar months from `start` to `end` when `end` is exactly `start` plus
// that many months (see add_months) and it is at least one, else 0.
std::int64_t whole_months_between(absl::Time start, absl::Time end) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const std::int64_t months =
      absl::CivilMonth(absl::ToCivilSecond(end, utc)) - absl::CivilMonth(absl::ToCivilSecond(start, utc));
  if (months < 1) return 0;
  return add_months(start, months) == end ? months : 0;
}

}  // namespace

Period calendar_period(PeriodRule rule, absl::Time t) noexcept {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const absl::CivilSecond civil = absl::ToCivilSecond(t, utc);
  switch (rule) {
    case PeriodRule::kWeek: {
      const absl::CivilDay day(civil);
      // absl::Weekday counts from Monday = 0, as ISO weeks do.
      const absl::CivilDay monday = day - static_cast<int>(absl::GetWeekday(day));
      return {absl::FromCivil(monday, utc), absl::FromCivil(monday + 7, utc)};
    }
    case PeriodRule::kDay: {
      const absl::CivilDay day(civil);
      return {absl::FromCivil(day, utc), absl::FromCivil(day + 1, utc)};
    }
    case PeriodRule::kMonth:
      break;
  }
  const absl::CivilMonth month(civil);
  return {absl::FromCivil(month, utc), absl::FromCivil(month + 1, utc)};
}

// Degenerate inputs: an empty or inverted subscription (end <= start) is returned as given
// (it contains no instant); an infinite t past the end gives the empty period at
// InfiniteFuture; an infinite subscription length means the first period never ends.
Period subscription_period(absl::Time period_start, absl::Time period_end, absl::Time t) noexcept {
  const Period first{period_start, period_end};
  if (period_end <= period_start || t < period_end) return first;
  if (t == absl::InfiniteFuture()) return {absl::InfiniteFuture(), absl::InfiniteFuture()};
  const absl::Duration length = period_end - period_start;
  if (length == absl::InfiniteDuration()) return first;

  if (const std::int64_t months = whole_months_between(period_start, period_end); months > 0) {
    // Renew by whole months from the original start. Guess the period index from the month
    // difference, then correct by one when t is before that period's day and time.
    const absl::TimeZone utc = absl::UTCTimeZone();
    const std::int64_t elapsed =
        absl::CivilMonth(absl::ToCivilSecond(t, utc)) - absl::CivilMonth(absl::ToCivilSecond(period_start, utc));
    std::int64_t n = elapsed / months;  // elapsed >= months > 0 here
    while (n > 1 && add_months(period_start, n * months) > t) --n;
    while (add_months(period_start, (n + 1) * months) <= t) ++n;
    return {add_months(period_start, n * months), add_months(period_start, (n + 1) * months)};
  }

  // Renew by the same duration: t is in the n-th period for n = floor((t - start) / length), which
  // starts `remainder` before t.
  absl::Duration remainder;
  static_cast<void>(absl::IDivDuration(t - period_start, length, &remainder));
  const absl::Time start = t - remainder;
  return {start, start + length};
}

}  // namespace paygent
