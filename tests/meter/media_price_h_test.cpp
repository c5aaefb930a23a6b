// include/paygent/media_price.h stands alone: it is the first include of this file.
#include "paygent/media_price.h"

#include <doctest/doctest.h>

TEST_CASE("meter.media_price_h_is_self_contained") {
  const paygent::MediaPrice price;
  CHECK(paygent::cost_of_duration(price, std::chrono::minutes(1)) == 0);
  CHECK(paygent::media_kind_name(paygent::MediaKind::kVideo) == "video");
}
