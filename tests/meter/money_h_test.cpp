// include/paygent/money.h stands alone: it is the first include of this file.
#include "paygent/money.h"

#include <doctest/doctest.h>

TEST_CASE("meter.money_h_is_self_contained") {
  static_assert(paygent::cost_of_tokens(1000, 2'500'000) == 2'500'000);
  CHECK(paygent::kNanosPerUsd == 1'000'000'000);
}
