// The hot path's inline comparison of user ids and model names, against memcmp.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "guard/internal/same_bytes.h"

namespace paygent::internal {

TEST_CASE("guard.same_bytes.agrees_with_memcmp_for_every_length_and_every_differing_byte") {
  for (std::size_t n = 0; n <= 40; ++n) {
    std::string a(n, 'x');
    for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<char>('a' + i % 26);
    const std::string b = a;
    CHECK(same_bytes(a.data(), b.data(), n));
    for (std::size_t at = 0; at < n; ++at) {
      std::string c = a;
      c[at] = static_cast<char>(c[at] ^ 0x20);
      INFO("length " << n << ", byte " << at);
      CHECK_FALSE(same_bytes(a.data(), c.data(), n));
      CHECK(same_bytes(a.data(), c.data(), n) == (std::memcmp(a.data(), c.data(), n) == 0));
    }
  }
}

}  // namespace paygent::internal
