// plan.h first: proves the public header is self-contained.
#include "paygent/plan.h"

#include <doctest/doctest.h>

namespace paygent {
namespace {

TEST_CASE("plan.header_self_contained") {
  PlanConfig config;
  CHECK(config.soft_gate_at == std::vector<Ppm>{800'000});
  CHECK(config.hard_gate_at == kPpmOne);
  CHECK(config.default_plan.empty());
  CHECK(config.find("pro") == nullptr);

  Plan pro;
  pro.name = "pro";
  config.plans.push_back(pro);
  REQUIRE(config.find("pro") != nullptr);
  CHECK(config.find("pro")->session_timeout == absl::Minutes(30));
  CHECK(config.find("pro")->period == PeriodRule::kMonth);
  CHECK(config.find("pr") == nullptr);

  const Period period{absl::FromUnixSeconds(100), absl::FromUnixSeconds(200)};
  CHECK(period.contains(absl::FromUnixSeconds(100)));
  CHECK(period.contains(absl::FromUnixSeconds(200) - absl::Nanoseconds(1)));
  CHECK_FALSE(period.contains(absl::FromUnixSeconds(200)));
  CHECK_FALSE(period.contains(absl::FromUnixSeconds(100) - absl::Nanoseconds(1)));
}

}  // namespace
}  // namespace paygent
