// The dashboard's sign-ins and the customer portal's tokens (docs/dashboard.md).
//
// An operator signs in to the dashboard with a product's API key and gets a session token (an
// HttpOnly cookie) that expires; an application mints a short-lived portal token scoped to one
// customer, so that the customer can see their own usage and invoice and nothing else. Both are
// random (32 bytes of OpenSSL's CSPRNG) and stored by their SHA-256 only, in the database
// (Storage::create_session), so that every replica on it honours them and a sign-out ends a
// session everywhere at once; they survive a restart until they expire.
//
// Bounds: at most kMaxSessionsPerProduct unexpired operator sessions and as many portal tokens
// per product (separate quotas: an application minting portal links cannot lock its operators
// out). A product's expired ones are deleted when it creates one; past the bound creation fails
// with ResourceExhausted rather than ending a live one. One product's tokens never count against
// another's.
//
// Thread safety: safe for concurrent use (as its Storage is). Lifetime: owned by the Api; the
// Storage must outlive it.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/storage.h"

namespace paygent::server {

inline constexpr std::size_t kMaxSessionsPerProduct = 10'000;

// An operator's sign-in: 8 hours unless it asks for less; never more than 24.
inline constexpr absl::Duration kOperatorSessionDefault = absl::Hours(8);
inline constexpr absl::Duration kOperatorSessionMax = absl::Hours(24);
// A customer portal token: 15 minutes unless its minter asks otherwise; never more than 24 hours.
inline constexpr absl::Duration kPortalTokenDefault = absl::Minutes(15);
inline constexpr absl::Duration kPortalTokenMax = absl::Hours(24);

// What a token grants: a product's dashboard (customer_id empty) or one customer's portal.
struct SessionGrant {
  std::string product_id;
  std::string customer_id;
  absl::Time expires;

  [[nodiscard]] bool is_portal() const noexcept { return !customer_id.empty(); }
};

class DashboardSessions {
 public:
  // Operator tokens start "pgs_", portal tokens "pgc_", then 64 hex digits.
  static constexpr std::string_view kOperatorPrefix = "pgs_";
  static constexpr std::string_view kPortalPrefix = "pgc_";

  explicit DashboardSessions(Storage& storage, std::size_t max_per_product = kMaxSessionsPerProduct)
      : storage_(storage), max_per_product_(max_per_product) {}

  // A new token for `grant` (its kind from grant.is_portal()). ResourceExhausted past the bound;
  // Internal when the random source fails; the storage's error when it fails.
  absl::StatusOr<std::string> create(const SessionGrant& grant, absl::Time now);

  // The grant of a live token; nullopt for an unknown, expired or signed-out one, or a text that
  // is not a token; the storage's error when it fails.
  absl::StatusOr<std::optional<SessionGrant>> find(std::string_view token, absl::Time now);

  // Ends a token now (sign-out). Unknown tokens are no error.
  absl::Status revoke(std::string_view token);

 private:
  Storage& storage_;
  std::size_t max_per_product_;
};

}  // namespace paygent::server
