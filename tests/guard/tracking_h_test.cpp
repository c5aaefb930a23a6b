// include/paygent/tracking.h stands alone (included first), and MediaDuration converts exactly.
#include "paygent/tracking.h"

#include <doctest/doctest.h>

#include <chrono>
#include <limits>
#include <type_traits>

namespace paygent {
namespace {

using namespace std::chrono_literals;

// Exact conversions only: minutes, seconds, milliseconds, microseconds; not nanoseconds (lossy).
static_assert(std::is_convertible_v<std::chrono::minutes, MediaDuration>);
static_assert(std::is_convertible_v<std::chrono::milliseconds, MediaDuration>);
static_assert(!std::is_convertible_v<std::chrono::nanoseconds, MediaDuration>);
static_assert(!std::is_convertible_v<double, MediaDuration>);

TEST_CASE("tracking_h.media_duration_is_exact_microseconds") {
  CHECK(MediaDuration(20min).value().count() == 1'200'000'000);
  CHECK(MediaDuration(1500ms).value().count() == 1'500'000);
  CHECK(MediaDuration::minutes(0.45).value().count() == 27'000'000);
  CHECK(MediaDuration::minutes(0.5).value().count() == 30'000'000);
  CHECK(MediaDuration::seconds(4.5).value().count() == 4'500'000);
  CHECK(MediaDuration::minutes(0.0000001).value().count() == 6);  // rounded once, to the microsecond
  CHECK(MediaDuration::minutes(0).valid());
}

TEST_CASE("tracking_h.negative_and_non_finite_durations_are_invalid") {
  CHECK_FALSE(MediaDuration(-1s).valid());
  CHECK_FALSE(MediaDuration(-1s).non_finite());
  CHECK_FALSE(MediaDuration::minutes(-0.5).valid());
  CHECK_FALSE(MediaDuration::minutes(std::numeric_limits<double>::quiet_NaN()).valid());
  CHECK(MediaDuration::minutes(std::numeric_limits<double>::quiet_NaN()).non_finite());
  CHECK(MediaDuration::seconds(std::numeric_limits<double>::infinity()).non_finite());
  CHECK_FALSE(MediaDuration::minutes(1e300).valid());  // beyond a hundred years
  CHECK(MediaDuration::minutes(1e300).non_finite());
}

}  // namespace
}  // namespace paygent
