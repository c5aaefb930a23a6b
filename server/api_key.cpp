// API keys and product ids (see server/api_key.h).
#include "server/api_key.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <cstddef>

namespace paygent::server {

std::string to_hex(const unsigned char* bytes, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

absl::StatusOr<std::string> random_hex(std::size_t bytes) {
  std::array<unsigned char, 64> buffer{};
  if (bytes > buffer.size() || RAND_bytes(buffer.data(), static_cast<int>(bytes)) != 1) {
    return absl::InternalError("the random source failed");
  }
  return to_hex(buffer.data(), bytes);
}

absl::StatusOr<std::string> generate_api_key() {
  absl::StatusOr<std::string> hex = random_hex(32);
  if (!hex.ok()) return hex.status();
  return "pg_live_" + *hex;
}

absl::StatusOr<std::string> generate_event_id() { return random_hex(16); }

absl::StatusOr<std::string> generate_product_id() {
  absl::StatusOr<std::string> hex = random_hex(8);
  if (!hex.ok()) return hex.status();
  return "prod_" + *hex;
}

std::string sha256_hex(std::string_view text) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return to_hex(digest.data(), length);
}

bool secret_equals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace paygent::server
