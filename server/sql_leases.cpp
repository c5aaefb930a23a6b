// SqlStorage's budget leases (docs/leases.md; see server/sql_storage.h): the leases table's
// reads and writes, and the ledger totals a grant is decided on. The arithmetic is
// lease_internal::decide_grant (server/lease_logic.h).
//
// A grant runs in one with_user_locks() transaction of the request's users, the locks ingest
// takes too: on any number of replicas, two grants of a user, or a grant and an ingest of that
// user, queue. Each then reads the leases and the ledger as the last of them left them
// (PostgreSQL's READ COMMITTED reads what committed before each statement; SQLite has one
// writer), so that `spent + sum of live headrooms <= cap` holds after every grant.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "meter/internal/str_cat.h"
#include "server/lease_logic.h"
#include "server/sql_storage.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
using lease_internal::LimitKey;
using lease_internal::LimitKind;

// Binds the limit's key columns (product, user_id, limit_key, period_start_ns) to ?1 to ?4.
Query& bind_limit(Query& query, std::int64_t product, const LeaseRequest& request) {
  return query.bind(1, product)
      .bind(2, std::string_view(request.user_id))
      .bind(3, std::string_view(request.limit_key))
      .bind(4, request.period_start_ns);
}

// Step 1: the user's expired leases are dropped; a holder that died keeps nothing after one TTL.
absl::Status drop_expired(SqlConnection& connection, std::int64_t product, std::string_view user_id,
                          std::int64_t now_ns) {
  absl::StatusOr<Query> remove =
      prepare(connection, "DELETE FROM leases WHERE product = ?1 AND user_id = ?2 AND expires_at_ns <= ?3");
  if (!remove.ok()) return remove.status();
  remove->bind(1, product).bind(2, user_id).bind(3, now_ns);
  return remove->run("drop expired leases");
}

// The spend of a named session: its events in [period_start_ns, period_end_ns). Sessions are not
// in usage_daily; the events are read through their (product, user_id, ts_ns) index.
absl::StatusOr<std::int64_t> session_spent(SqlConnection& connection, std::int64_t product,
                                           const LeaseRequest& request, std::string_view session_id) {
  absl::StatusOr<Query> select = prepare(
      connection,
      "SELECT COALESCE(SUM(cost_nanos), 0) FROM events WHERE product = ?1 AND user_id = ?2 AND ts_ns >= ?3 "
      "AND ts_ns < ?4 AND session_id = ?5");
  if (!select.ok()) return select.status();
  select->bind(1, product)
      .bind(2, std::string_view(request.user_id))
      .bind(3, request.period_start_ns)
      .bind(4, request.period_end_ns)
      .bind(5, session_id);
  absl::StatusOr<bool> row = select->step("read session spend");
  if (!row.ok()) return row.status();
  return *row && !select->is_null(0) ? select->int64(0) : 0;
}

// The holder's own live lease of the limit (its ceiling), and the others', read in the open
// transaction (expired ones were dropped by step 1).
absl::Status read_leases(SqlConnection& connection, std::int64_t product, std::string_view holder,
                         const LeaseRequest& request, lease_internal::OtherLeases& others,
                         std::optional<std::int64_t>& own_ceiling) {
  absl::StatusOr<Query> select =
      prepare(connection,
              "SELECT holder, ceiling, acked, cap FROM leases WHERE product = ?1 AND user_id = ?2 AND limit_key = ?3 "
              "AND period_start_ns = ?4");
  if (!select.ok()) return select.status();
  bind_limit(*select, product, request);
  for (;;) {
    absl::StatusOr<bool> row = select->step("read leases");
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    if (select->text_view(0) == holder) {
      own_ceiling = select->int64(1);
    } else {
      others.add(select->int64(1), select->int64(2), select->int64(3));
    }
  }
}

// Step 4's write (or step 5's delete) of the holder's lease.
absl::Status write_lease(SqlConnection& connection, std::int64_t product, std::string_view holder,
                         const LeaseRequest& request, const lease_internal::GrantDecision& decision,
                         std::int64_t expires_at_ns) {
  if (decision.delete_row) {
    absl::StatusOr<Query> remove = prepare(connection,
                                           "DELETE FROM leases WHERE product = ?1 AND user_id = ?2 AND limit_key = ?3 "
                                           "AND period_start_ns = ?4 AND holder = ?5");
    if (!remove.ok()) return remove.status();
    bind_limit(*remove, product, request).bind(5, holder);
    return remove->run("release lease");
  }
  absl::StatusOr<Query> upsert = prepare(
      connection,
      "INSERT INTO leases(product, user_id, limit_key, period_start_ns, holder, period_end_ns, cap, ceiling, acked, "
      "expires_at_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
      "ON CONFLICT(product, user_id, limit_key, period_start_ns, holder) DO UPDATE SET "
      "period_end_ns = excluded.period_end_ns, cap = excluded.cap, ceiling = excluded.ceiling, "
      "acked = excluded.acked, expires_at_ns = excluded.expires_at_ns");
  if (!upsert.ok()) return upsert.status();
  bind_limit(*upsert, product, request)
      .bind(5, holder)
      .bind(6, request.period_end_ns)
      .bind(7, request.cap)
      .bind(8, decision.ceiling)
      .bind(9, request.acked)
      .bind(10, expires_at_ns);
  return upsert->run("write lease");
}

}  // namespace

absl::StatusOr<std::vector<LeaseGrant>> SqlStorage::grant_leases(std::string_view product_id, std::string_view holder,
                                                                 std::span<const LeaseRequest> requests,
                                                                 std::int64_t now_ns, std::int64_t ttl_ns) {
  std::vector<std::string_view> users;
  users.reserve(requests.size());
  for (const LeaseRequest& r : requests) users.push_back(r.user_id);
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  const std::int64_t expires_at_ns = lease_internal::saturating_add(now_ns, ttl_ns);

  std::vector<LeaseGrant> out;
  absl::Status status =
      with_user_locks(product_id, users, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
        out.clear();  // a retried transaction starts over
        for (std::string_view user : users) {
          if (absl::Status s = drop_expired(connection, product, user, now_ns); !s.ok()) return s;
        }
        // A user's totals by model over a window, read once per (user, window) of the request:
        // the period limits of one user share them.
        std::map<std::tuple<std::string_view, std::int64_t, std::int64_t>, GroupedTotals> models_by_window;
        for (const LeaseRequest& request : requests) {
          const std::optional<LimitKey> limit = lease_internal::parse_limit_key(request.limit_key, request.limit_key.size());
          if (!limit) return absl::InvalidArgumentError(str_cat("limit: unknown limit key \"", request.limit_key, "\""));
          std::int64_t spent = 0;
          if (limit->kind == LimitKind::kSession) {
            absl::StatusOr<std::int64_t> s = session_spent(connection, product, request, limit->name);
            if (!s.ok()) return s.status();
            spent = *s;
          } else {
            const auto window = std::make_tuple(std::string_view(request.user_id), request.period_start_ns,
                                                request.period_end_ns);
            auto it = models_by_window.find(window);
            if (it == models_by_window.end()) {
              it = models_by_window.emplace(window, GroupedTotals{}).first;
              const ReportQuery query{.from_ns = request.period_start_ns,
                                      .to_ns = request.period_end_ns,
                                      .group_by = ReportGroup::kModel,
                                      .user_id = request.user_id};
              if (absl::Status s = report_in(connection, product, query, it->second); !s.ok()) return s;
            }
            spent = lease_internal::spent_from_models(*limit, it->second);
          }
          lease_internal::OtherLeases others;
          std::optional<std::int64_t> own_ceiling;
          if (absl::Status s = read_leases(connection, product, holder, request, others, own_ceiling); !s.ok()) return s;
          const lease_internal::GrantDecision d = lease_internal::decide_grant(request, spent, others, own_ceiling);
          if (absl::Status s = write_lease(connection, product, holder, request, d, expires_at_ns); !s.ok()) return s;
          out.push_back(LeaseGrant{.user_id = request.user_id,
                                   .limit_key = request.limit_key,
                                   .period_start_ns = request.period_start_ns,
                                   .granted = d.granted,
                                   .ceiling = d.ceiling,
                                   .spent = spent,
                                   .held_elsewhere = d.held_elsewhere,
                                   .remaining = d.remaining,
                                   .holders = d.holders});
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return out;
}

}  // namespace paygent::server
