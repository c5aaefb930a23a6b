// Dashboard sessions and portal tokens (see server/dashboard_sessions.h).
#include "server/dashboard_sessions.h"

#include <utility>

#include "server/api_key.h"

namespace paygent::server {

absl::StatusOr<std::string> DashboardSessions::create(const SessionGrant& grant, absl::Time now) {
  absl::StatusOr<std::string> hex = random_hex(32);
  if (!hex.ok()) return hex.status();
  std::string token = std::string(grant.is_portal() ? kPortalPrefix : kOperatorPrefix) + *hex;
  const SessionRecord record{.token_sha256 = sha256_hex(token),
                             .product_id = grant.product_id,
                             .customer_id = grant.customer_id,
                             .expires_ns = absl::ToUnixNanos(grant.expires)};
  if (absl::Status s = storage_.create_session(record, absl::ToUnixNanos(now), max_per_product_); !s.ok()) return s;
  return token;
}

absl::StatusOr<std::optional<SessionGrant>> DashboardSessions::find(std::string_view token, absl::Time now) {
  // Only texts of a token's shape reach the database.
  const bool shaped = (token.starts_with(kOperatorPrefix) || token.starts_with(kPortalPrefix)) && token.size() == 4 + 64;
  if (!shaped) return std::nullopt;
  absl::StatusOr<std::optional<SessionRecord>> record = storage_.find_session(sha256_hex(token), absl::ToUnixNanos(now));
  if (!record.ok()) return record.status();
  if (!*record) return std::nullopt;
  SessionGrant grant{.product_id = std::move((*record)->product_id),
                     .customer_id = std::move((*record)->customer_id),
                     .expires = absl::FromUnixNanos((*record)->expires_ns)};
  // A token's prefix is its kind: a portal token's text with an operator's prefix is no session.
  if (grant.is_portal() != token.starts_with(kPortalPrefix)) return std::nullopt;
  return grant;
}

absl::Status DashboardSessions::revoke(std::string_view token) { return storage_.delete_session(sha256_hex(token)); }

}  // namespace paygent::server
