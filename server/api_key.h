// API keys and product ids: random generation (OpenSSL's CSPRNG) and the SHA-256 under which a
// key is stored. A key is shown once, at product creation; paygentd keeps only its hash.
//
// Thread safety: free functions, safe from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace paygent::server {

// "pg_live_" followed by 64 lowercase hex digits (32 random bytes). Internal when the system's
// random source fails.
absl::StatusOr<std::string> generate_api_key();

// "prod_" followed by 16 lowercase hex digits (8 random bytes). Internal when the random source
// fails.
absl::StatusOr<std::string> generate_product_id();

// An event id: 32 lowercase hex digits (16 random bytes). Internal when the random source fails.
absl::StatusOr<std::string> generate_event_id();

// `bytes` random bytes (at most 64) as lowercase hex digits. Internal when the random source fails.
absl::StatusOr<std::string> random_hex(std::size_t bytes);

// `n` bytes as 2n lowercase hex digits.
std::string to_hex(const unsigned char* bytes, std::size_t n);

// SHA-256 of `text`, as 64 lowercase hex digits.
std::string sha256_hex(std::string_view text);

// a == b in a time that depends only on the lengths, so that comparing a secret leaks nothing
// through timing.
bool secret_equals(std::string_view a, std::string_view b) noexcept;

}  // namespace paygent::server
