// Equality of short byte strings without a call to memcmp, for the hot path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace paygent::internal {

// a[0, n) == b[0, n), inline for the short ids and model names of the hot path (a call to memcmp
// costs more than the comparison): two overlapping word loads up to 16 bytes.
[[gnu::always_inline]] inline bool same_bytes(const char* a, const char* b, std::size_t n) noexcept {
  auto word = [](const char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
  };
  auto half = [](const char* p) {
    std::uint32_t w;
    std::memcpy(&w, p, 4);
    return w;
  };
  if (n >= 8) {
    if (n > 16) return std::memcmp(a, b, n) == 0;
    return word(a) == word(b) && word(a + n - 8) == word(b + n - 8);
  }
  if (n >= 4) return half(a) == half(b) && half(a + n - 4) == half(b + n - 4);
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace paygent::internal
