// SqlStorage's profit report (see server/storage.h, Storage::profit_report, and docs/tracking.md):
// the cost rows (events of every kind but billing) and the billing events of a range, summed by the
// group's key. A range's whole UTC days come from profit_daily, the rollup the ingest keeps per
// (day, customer, agent, indicator) in its transaction; its partial days at either end, and every
// report by model or by a meta tag that is not a report tag (sql_tags.cpp), from the events and
// billing events themselves; a report tag's whole days come from its own rollup.
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

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
    case ProfitGroup::kTag: return "meta_tags";  // the whole object: meta_tag_values() reads the key in C++
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

// The billing events of [?2, ?3): key, events, known revenue, events with a known revenue. Their
// meta tags are their event's (stored with the same id, and copied onto the billing event's row).
std::string revenue_sql(ProfitGroup group) {
  if (group == ProfitGroup::kTag) {
    return "SELECT meta_tags, COUNT(*), COALESCE(SUM(revenue_nanos), 0), COUNT(revenue_nanos) "
           "FROM billing_events WHERE product = ?1 AND ts_ns >= ?2 AND ts_ns < ?3 GROUP BY 1";
  }
  return str_cat("SELECT ", key_column(group),
                 ", COUNT(*), COALESCE(SUM(revenue_nanos), 0), COUNT(revenue_nanos) FROM billing_events "
                 "WHERE product = ?1 AND ts_ns >= ?2 AND ts_ns < ?3 GROUP BY 1");
}


std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// The rollup's whole days [?2, ?3): key, then the six sums in the order of Sums below. A report
// tag's rollup (sql_tags.cpp) is keyed by its value already; ?4 is the tag's key.
std::string rollup_sql(ProfitGroup group) {
  if (group == ProfitGroup::kTag) {
    return "SELECT tag_value, SUM(cost_events), SUM(cost_nanos), SUM(cost_unknown), SUM(billing_events), "
           "SUM(revenue_nanos), SUM(revenue_known) FROM profit_daily_by_tag WHERE product = ?1 AND tag_key = ?4 AND "
           "day >= ?2 AND day < ?3 GROUP BY 1";
  }
  return str_cat("SELECT ", group == ProfitGroup::kDay ? std::string_view("day") : key_column(group),
                 ", SUM(cost_events), SUM(cost_nanos), SUM(cost_unknown), SUM(billing_events), SUM(revenue_nanos), "
                 "SUM(revenue_known) FROM profit_daily WHERE product = ?1 AND day >= ?2 AND day < ?3 GROUP BY 1");
}

// A key's sums over every part of the range, before they become a ProfitRow.
struct Sums {
  std::int64_t cost_events = 0, cost_nanos = 0, cost_unknown = 0, billing_events = 0, revenue_nanos = 0, revenue_known = 0;

  [[nodiscard]] bool add(const Sums& o) {
    return !(__builtin_add_overflow(cost_events, o.cost_events, &cost_events) ||
             __builtin_add_overflow(cost_nanos, o.cost_nanos, &cost_nanos) ||
             __builtin_add_overflow(cost_unknown, o.cost_unknown, &cost_unknown) ||
             __builtin_add_overflow(billing_events, o.billing_events, &billing_events) ||
             __builtin_add_overflow(revenue_nanos, o.revenue_nanos, &revenue_nanos) ||
             __builtin_add_overflow(revenue_known, o.revenue_known, &revenue_known));
  }
};

}  // namespace

absl::StatusOr<std::vector<ProfitRow>> SqlStorage::profit_report(std::string_view product_id, TimeRange range,
                                                                 ProfitGroup group, std::string_view tag_key) {
  if (group == ProfitGroup::kTag && tag_key.empty()) return absl::InvalidArgumentError("by: the tag key is empty");
  std::map<std::string, Sums, std::less<>> sums;
  simdjson::dom::parser parser;
  const std::vector<std::string> tag_keys = {std::string(tag_key)};
  std::vector<std::string> tag_value;
  absl::Status status = transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    sums.clear();
    if (range.from_ns < 0 || range.from_ns >= range.to_ns) return absl::OkStatus();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    auto key_of = [&](Query& select) -> absl::StatusOr<std::string> {
      if (group == ProfitGroup::kTag) {
        if (absl::Status s = meta_tag_values(parser, select.text_view(0), tag_keys, tag_value); !s.ok()) return s;
        return tag_value[0];
      }
      return group == ProfitGroup::kDay ? storage_internal::day_key(select.int64(0), ReportGroup::kDay)
                                        : select.text(0);
    };
    auto add = [&](const absl::StatusOr<std::string>& key, const Sums& s) -> absl::Status {
      if (!key.ok()) return key.status();
      if (!sums[*key].add(s)) return absl::InternalError("profit report: a sum overflows int64");
      return absl::OkStatus();
    };
    // The raw events of [from, to): cost rows, then billing events.
    auto add_raw = [&](std::int64_t from, std::int64_t to) -> absl::Status {
      for (int side = 0; side < 2; ++side) {
        absl::StatusOr<Query> select = prepare(connection, side == 0 ? cost_sql(group) : revenue_sql(group));
        if (!select.ok()) return select.status();
        select->bind(1, **product).bind(2, from).bind(3, to);
        if (side == 0) select->bind(4, from / kNanosPerDay).bind(5, ceil_div(to, kNanosPerDay));
        for (;;) {
          absl::StatusOr<bool> row = select->step(side == 0 ? "read the cost rows" : "read the billing events");
          if (!row.ok()) return row.status();
          if (!*row) break;
          Sums s;
          if (side == 0) {
            s = Sums{.cost_events = select->int64(1), .cost_nanos = select->int64(2), .cost_unknown = select->int64(3)};
          } else {
            s = Sums{.billing_events = select->int64(1), .revenue_nanos = select->int64(2), .revenue_known = select->int64(3)};
          }
          if (absl::Status st = add(key_of(*select), s); !st.ok()) return st;
        }
      }
      return absl::OkStatus();
    };
    if (group == ProfitGroup::kModel) return add_raw(range.from_ns, range.to_ns);
    if (group == ProfitGroup::kTag) {  // a report tag has a rollup; any other key, the events alone
      absl::StatusOr<std::vector<std::string>> declared = report_tags_in(connection, **product);
      if (!declared.ok()) return declared.status();
      if (std::find(declared->begin(), declared->end(), tag_key) == declared->end()) {
        return add_raw(range.from_ns, range.to_ns);
      }
    }
    const storage_internal::DaySplit split = storage_internal::split_days(range.from_ns, range.to_ns);
    if (split.first_day < split.end_day) {
      absl::StatusOr<Query> select = prepare(connection, rollup_sql(group));
      if (!select.ok()) return select.status();
      select->bind(1, **product).bind(2, split.first_day).bind(3, split.end_day);
      if (group == ProfitGroup::kTag) select->bind(4, tag_key);
      for (;;) {
        absl::StatusOr<bool> row = select->step("read the profit rollup");
        if (!row.ok()) return row.status();
        if (!*row) break;
        const Sums s{.cost_events = select->int64(1),
                     .cost_nanos = select->int64(2),
                     .cost_unknown = select->int64(3),
                     .billing_events = select->int64(4),
                     .revenue_nanos = select->int64(5),
                     .revenue_known = select->int64(6)};
        const absl::StatusOr<std::string> key = group == ProfitGroup::kTag ? select->text(0) : key_of(*select);
        if (absl::Status st = add(key, s); !st.ok()) return st;
      }
    }
    for (const TimeRange& r : {split.head, split.tail}) {
      if (r.from_ns >= r.to_ns) continue;
      if (absl::Status st = add_raw(r.from_ns, r.to_ns); !st.ok()) return st;
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  std::vector<ProfitRow> out;
  out.reserve(sums.size());
  for (const auto& [key, s] : sums) {
    ProfitRow r{.key = key,
                .cost_events = s.cost_events,
                .billing_events = s.billing_events,
                .cost_unknown_events = s.cost_unknown,
                .revenue_unknown_events = s.billing_events - s.revenue_known};
    if (s.cost_events > s.cost_unknown) r.cost_nanos = s.cost_nanos;
    if (s.revenue_known > 0) r.revenue_nanos = s.revenue_nanos;
    // A key only a rollup row of zero events names (none is written so) is not a row.
    if (s.cost_events == 0 && s.billing_events == 0) continue;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace paygent::server
