// The dashboard's sign-ins and the customer portal's tokens (docs/dashboard.md).
//
// An operator signs in to the dashboard with a product's API key and gets a session token (an
// HttpOnly cookie) that expires; an application mints a short-lived portal token scoped to one
// customer, so that the customer can see their own usage and invoice and nothing else. Both are
// random (32 bytes of OpenSSL's CSPRNG) and kept here by their SHA-256 only, in memory: a restart
// of paygentd signs everyone out, which is the safe side of forgetting.
//
// Bounds: at most kMaxSessionsPerProduct live tokens per product and kMaxSessions in all
// (~200 bytes each: ~20 MB at the bound). Past a bound the expired ones are dropped; when none
// has expired, creation fails with ResourceExhausted rather than evicting a live sign-in, so one
// product minting tokens in a loop can neither grow paygentd's memory nor sign out another
// product's operators.
//
// Thread safety: safe for concurrent use from many threads. Lifetime: owned by the Api.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace paygent::server {

inline constexpr std::size_t kMaxSessionsPerProduct = 10'000;
inline constexpr std::size_t kMaxSessions = 100'000;

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

  // A new token for `grant` (its kind from grant.is_portal()). ResourceExhausted past a bound
  // (see above); Internal when the random source fails.
  absl::StatusOr<std::string> create(SessionGrant grant, absl::Time now);

  // The grant of a live token; nullopt for an unknown or expired one (an expired one is dropped).
  std::optional<SessionGrant> find(std::string_view token, absl::Time now);

  // Ends a token now (sign-out). Unknown tokens are ignored.
  void revoke(std::string_view token);

  [[nodiscard]] std::size_t size() const;

 private:
  void erase_locked(absl::flat_hash_map<std::string, SessionGrant>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void drop_expired_locked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, SessionGrant> by_hash_ ABSL_GUARDED_BY(mu_);  // SHA-256 of the token
  absl::flat_hash_map<std::string, std::size_t> per_product_ ABSL_GUARDED_BY(mu_);
};

}  // namespace paygent::server
