// Dashboard sessions and portal tokens (see server/dashboard_sessions.h).
#include "server/dashboard_sessions.h"

#include <utility>

#include "absl/status/status.h"
#include "server/api_key.h"

namespace paygent::server {

absl::StatusOr<std::string> DashboardSessions::create(SessionGrant grant, absl::Time now) {
  absl::StatusOr<std::string> hex = random_hex(32);
  if (!hex.ok()) return hex.status();
  std::string token = std::string(grant.is_portal() ? kPortalPrefix : kOperatorPrefix) + *hex;
  absl::MutexLock lock(&mu_);
  auto full = [&] {
    auto it = per_product_.find(grant.product_id);
    return by_hash_.size() >= kMaxSessions || (it != per_product_.end() && it->second >= kMaxSessionsPerProduct);
  };
  if (full()) drop_expired_locked(now);
  if (full()) {
    return absl::ResourceExhaustedError(
        by_hash_.size() >= kMaxSessions
            ? "too many live dashboard sessions and portal tokens on this paygentd; try again when some expire"
            : "this product has 10000 live dashboard sessions and portal tokens; mint shorter-lived ones");
  }
  ++per_product_[grant.product_id];
  by_hash_.insert_or_assign(sha256_hex(token), std::move(grant));
  return token;
}

std::optional<SessionGrant> DashboardSessions::find(std::string_view token, absl::Time now) {
  if (!token.starts_with(kOperatorPrefix) && !token.starts_with(kPortalPrefix)) return std::nullopt;
  const std::string hash = sha256_hex(token);
  absl::MutexLock lock(&mu_);
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  if (it->second.expires <= now) {
    erase_locked(it);
    return std::nullopt;
  }
  return it->second;
}

void DashboardSessions::revoke(std::string_view token) {
  const std::string hash = sha256_hex(token);
  absl::MutexLock lock(&mu_);
  if (auto it = by_hash_.find(hash); it != by_hash_.end()) erase_locked(it);
}

std::size_t DashboardSessions::size() const {
  absl::MutexLock lock(&mu_);
  return by_hash_.size();
}

void DashboardSessions::erase_locked(absl::flat_hash_map<std::string, SessionGrant>::iterator it) {
  if (auto count = per_product_.find(it->second.product_id); count != per_product_.end() && --count->second == 0) {
    per_product_.erase(count);
  }
  by_hash_.erase(it);
}

void DashboardSessions::drop_expired_locked(absl::Time now) {
  for (auto it = by_hash_.begin(); it != by_hash_.end();) {
    auto next = std::next(it);
    if (it->second.expires <= now) erase_locked(it);
    it = next;
  }
}

}  // namespace paygent::server
