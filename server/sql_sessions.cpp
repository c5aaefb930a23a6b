// SqlStorage's dashboard sessions and portal tokens (see Storage::create_session, docs/dashboard.md).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"

namespace paygent::server {

using ::paygent::internal::str_cat;

absl::Status SqlStorage::create_session(const SessionRecord& session, std::int64_t now_ns, std::size_t max_live) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, session.product_id);
    if (!product.ok()) return product.status();
    // The product's expired ones go first; then its live ones of this kind are counted (by the
    // (product, customer_id, expires_ns) index: operators are the customer_id '' prefix).
    absl::StatusOr<Query> drop = prepare(connection, "DELETE FROM dashboard_sessions WHERE product = ?1 AND expires_ns <= ?2");
    if (!drop.ok()) return drop.status();
    drop->bind(1, *product).bind(2, now_ns);
    if (absl::Status s = drop->run("drop expired sessions"); !s.ok()) return s;
    const bool portal = !session.customer_id.empty();
    absl::StatusOr<Query> count = prepare(
        connection, str_cat("SELECT COUNT(*) FROM dashboard_sessions WHERE product = ?1 AND customer_id ",
                            portal ? "<> ''" : "= ''"));
    if (!count.ok()) return count.status();
    count->bind(1, *product);
    absl::StatusOr<bool> row = count->step("count sessions");
    if (!row.ok()) return row.status();
    if (*row && count->int64(0) >= static_cast<std::int64_t>(max_live)) {
      return absl::ResourceExhaustedError(
          str_cat("this product has ", max_live, portal ? " live portal tokens; mint shorter-lived ones"
                                                        : " live dashboard sessions; sign some out or wait for them to expire"));
    }
    count->reset();
    absl::StatusOr<Query> insert = prepare(
        connection, "INSERT INTO dashboard_sessions(token_sha256, product, customer_id, expires_ns) VALUES(?1, ?2, ?3, ?4)");
    if (!insert.ok()) return insert.status();
    insert->bind(1, session.token_sha256).bind(2, *product).bind(3, session.customer_id).bind(4, session.expires_ns);
    return insert->run("store the session");
  });
}

absl::StatusOr<std::optional<SessionRecord>> SqlStorage::find_session(std::string_view token_sha256, std::int64_t now_ns) {
  std::optional<SessionRecord> out;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    out.reset();
    absl::StatusOr<Query> select = prepare(
        connection,
        "SELECT p.id, s.customer_id, s.expires_ns FROM dashboard_sessions s JOIN products p ON p.pk = s.product "
        "WHERE s.token_sha256 = ?1 AND s.expires_ns > ?2");
    if (!select.ok()) return select.status();
    select->bind(1, token_sha256).bind(2, now_ns);
    absl::StatusOr<bool> row = select->step("find the session");
    if (!row.ok()) return row.status();
    if (*row) {
      out = SessionRecord{.token_sha256 = std::string(token_sha256),
                          .product_id = select->text(0),
                          .customer_id = select->text(1),
                          .expires_ns = select->int64(2)};
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status SqlStorage::delete_session(std::string_view token_sha256) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<Query> drop = prepare(connection, "DELETE FROM dashboard_sessions WHERE token_sha256 = ?1");
    if (!drop.ok()) return drop.status();
    drop->bind(1, token_sha256);
    return drop->run("end the session");
  });
}

}  // namespace paygent::server
