// SqlStorage's profit report (see server/storage.h, Storage::profit_report, and docs/tracking.md):
// the cost rows (events of every kind but billing) and the billing events of a range, each summed
// by the group's key in one query, merged here.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
using storage_internal::kNanosPerDay;

// The group's key column (both tables name them alike); a day is the UTC day number.
std::string_view key_column(ProfitGroup group) {
  switch (group) {
    case ProfitGroup::kAgent: return "agent_id";
    case ProfitGroup::kCustomer: return "user_id";
    case ProfitGroup::kIndicator: return "indicator";
    case ProfitGroup::kModel: return "model";
    case ProfitGroup::kDay: break;
  }
  return "ts_ns / 86400000000000";
}

// The cost rows of [?2, ?3): key, rows, known cost, rows without a price. The users with events in
// the range are those with usage_daily rows on its days [?4, ?5) (cost rows are summed there in
// the same transaction), so the (product, user_id, ts_ns) index is used user by user.
std::string cost_sql(ProfitGroup group) {
  return str_cat("SELECT ", key_column(group),
                 ", COUNT(*), SUM(CASE WHEN cost_unknown = 0 THEN cost_nanos ELSE 0 END), SUM(cost_unknown) "
                 "FROM events WHERE product = ?1 AND user_id IN (SELECT DISTINCT user_id FROM usage_daily WHERE "
                 "product = ?1 AND day >= ?4 AND day < ?5) AND ts_ns >= ?2 AND ts_ns < ?3 AND kind <> 'billing' "
                 "GROUP BY 1");
}

// The billing events of [?2, ?3): key, events, known revenue, events with a known revenue.
std::string revenue_sql(ProfitGroup group) {
  return str_cat("SELECT ", key_column(group),
                 ", COUNT(*), COALESCE(SUM(revenue_nanos), 0), COUNT(revenue_nanos) FROM billing_events "
                 "WHERE product = ?1 AND ts_ns >= ?2 AND ts_ns < ?3 GROUP BY 1");
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

}  // namespace

absl::StatusOr<std::vector<ProfitRow>> SqlStorage::profit_report(std::string_view product_id, TimeRange range,
                                                                 ProfitGroup group) {
  std::map<std::string, ProfitRow, std::less<>> rows;
  absl::Status status = transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    rows.clear();
    if (range.from_ns < 0 || range.from_ns >= range.to_ns) return absl::OkStatus();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    auto key_of = [&](Query& select) {
      return group == ProfitGroup::kDay ? storage_internal::day_key(select.int64(0), ReportGroup::kDay)
                                        : select.text(0);
    };
    for (int side = 0; side < 2; ++side) {
      absl::StatusOr<Query> select = prepare(connection, side == 0 ? cost_sql(group) : revenue_sql(group));
      if (!select.ok()) return select.status();
      select->bind(1, **product).bind(2, range.from_ns).bind(3, range.to_ns);
      if (side == 0) select->bind(4, range.from_ns / kNanosPerDay).bind(5, ceil_div(range.to_ns, kNanosPerDay));
      for (;;) {
        absl::StatusOr<bool> row = select->step(side == 0 ? "read the cost rows" : "read the billing events");
        if (!row.ok()) return row.status();
        if (!*row) break;
        const std::string key = key_of(*select);
        ProfitRow& r = rows[key];
        r.key = key;
        if (side == 0) {
          r.cost_events = select->int64(1);
          r.cost_unknown_events = select->int64(3);
          if (r.cost_events > r.cost_unknown_events) r.cost_nanos = select->int64(2);
        } else {
          r.billing_events = select->int64(1);
          const std::int64_t known = select->int64(3);
          r.revenue_unknown_events = r.billing_events - known;
          if (known > 0) r.revenue_nanos = select->int64(2);
        }
      }
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  std::vector<ProfitRow> out;
  out.reserve(rows.size());
  for (auto& [key, row] : rows) out.push_back(std::move(row));
  return out;
}

}  // namespace paygent::server
