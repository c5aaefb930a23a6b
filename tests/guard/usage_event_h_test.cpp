#include "paygent/usage_event.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

namespace paygent {

TEST_CASE("guard.usage_event.id_text") {
  CHECK(EventId{0x0123456789abcdefULL, 0x1ULL}.to_string() == "0123456789abcdef0000000000000001");
  CHECK(EventId{}.to_string().size() == 32);
}

}  // namespace paygent
