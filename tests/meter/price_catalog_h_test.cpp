// include/paygent/price_catalog.h stands alone: it is the first include of this file.
#include "paygent/price_catalog.h"

#include <doctest/doctest.h>

TEST_CASE("meter.price_catalog_h_is_self_contained") {
  const paygent::PriceCatalog empty;
  CHECK(empty.size() == 0);
  CHECK(empty.find("gpt-4o") == nullptr);
  CHECK(paygent::cost_of(paygent::Usage{}, paygent::ModelPrice{}) == 0);
}
