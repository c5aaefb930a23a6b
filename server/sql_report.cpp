// SqlStorage's reports (see server/sql_storage.h): a range's whole days from usage_daily, its
// partial days at either end from the events, grouped by user, model, session, day or month; and
// the forecast's read of each user's cost in their period.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"
#include "server/storage_logic.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
using storage_internal::add_totals;
using storage_internal::ceil_div;
using storage_internal::DaySplit;
using storage_internal::floor_div;
using storage_internal::kNanosPerDay;
using storage_internal::split_days;

// period_costs(): the longest period read a day at a time.
constexpr std::int64_t kPeriodCostDaySeeks = 62;

constexpr std::string_view kTotalsColumns =
    "SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cache_creation_input_tokens), "
    "SUM(reasoning_tokens), SUM(cost_nanos)";

}  // namespace

absl::StatusOr<GroupedTotals> SqlStorage::report(std::string_view product_id, const ReportQuery& query) {
  GroupedTotals out;
  // One read transaction: the days and the edges of the range as of one commit.
  absl::Status status = transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    return report_in(connection, **product, query, out);
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status SqlStorage::report_in(SqlConnection& connection, std::int64_t product, const ReportQuery& query,
                                   GroupedTotals& out) {
  if (query.from_ns >= query.to_ns || query.from_ns < 0) return absl::OkStatus();
  // Whole days come from usage_daily; the partial days at either end from the events. Sessions are
  // not in usage_daily, nor are providers in the rollup of a single user's days: they come from
  // the events.
  if (query.group_by == ReportGroup::kSession || (query.group_by == ReportGroup::kProvider && query.user_id)) {
    return add_events(connection, product, query, query.from_ns, query.to_ns, out);
  }
  const DaySplit split = split_days(query.from_ns, query.to_ns);
  if (split.first_day < split.end_day) {
    if (absl::Status s = add_daily(connection, product, query, split.first_day, split.end_day, out); !s.ok()) {
      return s;
    }
  }
  for (const TimeRange& r : {split.head, split.tail}) {
    if (r.from_ns >= r.to_ns) continue;
    if (absl::Status s = add_events(connection, product, query, r.from_ns, r.to_ns, out); !s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {

// Reads the rows of a grouped totals query (group key, calls, then kTotalsColumns) into `out`.
absl::Status read_groups(Query& select, ReportGroup group, GroupedTotals& out) {
  const bool by_day = group == ReportGroup::kDay || group == ReportGroup::kMonth;
  for (;;) {
    absl::StatusOr<bool> row = select.step("report");
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    const std::string key = by_day ? storage_internal::day_key(select.int64(0), group) : select.text(0);
    if (!add_totals(out[key], select.totals_at(1))) {
      return absl::InternalError(str_cat("report: the totals of \"", key, "\" overflow int64"));
    }
  }
}

std::string_view group_column(ReportGroup group, bool daily) {
  switch (group) {
    case ReportGroup::kUser: return "user_id";
    case ReportGroup::kModel: return "model";
    case ReportGroup::kSession: return "session_id";
    case ReportGroup::kProvider: return "provider";
    case ReportGroup::kDay:
    case ReportGroup::kMonth: break;
  }
  return daily ? "day" : "ts_ns / 86400000000000";
}

// The SQL of a grouped totals query (group key, calls, then kTotalsColumns), over usage_daily
// (`daily`: ?3 <= day < ?4) or over the events (?3 <= ts_ns < ?4), of product ?1 and, when
// `by_user`, user ?2. Built once per shape.
const std::string& report_sql(ReportGroup group, bool by_user, bool daily) {
  static const std::array<std::string, 24>* const kSql = [] {
    auto* sql = new std::array<std::string, 24>;
    for (int g = 0; g < 6; ++g) {
      for (int u = 0; u < 2; ++u) {
        const auto rg = static_cast<ReportGroup>(g);
        // Product-wide: by model, day or month from usage_daily_by_model (usage_daily without the
        // users: a few rows a day instead of one per user and model), by user from
        // usage_daily_by_user (one row per user and day), by provider from usage_daily_by_provider.
        const std::string_view table = u == 1                           ? "usage_daily"
                                       : rg == ReportGroup::kUser     ? "usage_daily_by_user"
                                       : rg == ReportGroup::kProvider ? "usage_daily_by_provider"
                                                                      : "usage_daily_by_model";
        (*sql)[g * 4 + u * 2 + 1] =
            str_cat("SELECT ", group_column(rg, true), ", SUM(calls), ", kTotalsColumns, " FROM ", table,
                    " WHERE product = ?1 AND ",
                    u ? "user_id = ?2 AND " : "", "day >= ?3 AND day < ?4 GROUP BY 1");
        // Without a user, the users with events in the range are those with usage_daily rows on
        // its days (written in the same transaction as the events): the index on (product,
        // user_id, ts_ns) is then used user by user instead of scanning the product's events.
        (*sql)[g * 4 + u * 2] = str_cat(
            "SELECT ", group_column(rg, false), ", COUNT(*), ", kTotalsColumns, " FROM events WHERE product = ?1 AND ",
            u ? "user_id = ?2"
              : "user_id IN (SELECT DISTINCT user_id FROM usage_daily WHERE product = ?1 AND day >= ?5 AND day < ?6)",
            " AND ts_ns >= ?3 AND ts_ns < ?4 AND kind <> 'billing' GROUP BY 1");
      }
    }
    return sql;
  }();
  return (*kSql)[static_cast<int>(group) * 4 + (by_user ? 2 : 0) + (daily ? 1 : 0)];
}

}  // namespace

absl::Status SqlStorage::add_daily(SqlConnection& connection, std::int64_t product, const ReportQuery& query,
                                   std::int64_t first_day, std::int64_t end_day, GroupedTotals& out) {
  absl::StatusOr<Query> select = prepare(connection, report_sql(query.group_by, query.user_id.has_value(), true));
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(3, first_day).bind(4, end_day);
  if (query.user_id) select->bind(2, *query.user_id);
  return read_groups(*select, query.group_by, out);
}

absl::Status SqlStorage::add_events(SqlConnection& connection, std::int64_t product, const ReportQuery& query,
                                    std::int64_t from_ns, std::int64_t to_ns, GroupedTotals& out) {
  absl::StatusOr<Query> select = prepare(connection, report_sql(query.group_by, query.user_id.has_value(), false));
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(3, from_ns).bind(4, to_ns);
  if (query.user_id) {
    select->bind(2, *query.user_id);
  } else {
    select->bind(5, floor_div(from_ns, kNanosPerDay)).bind(6, ceil_div(to_ns, kNanosPerDay));
  }
  return read_groups(*select, query.group_by, out);
}

absl::StatusOr<std::vector<UserRecord>> SqlStorage::find_users(std::string_view product_id,
                                                               std::span<const std::string_view> user_ids) {
  // Users per query: one round trip per 100 customers of a report.
  constexpr std::size_t kUsersPerQuery = 100;
  std::vector<UserRecord> out;
  if (user_ids.empty()) return out;
  absl::Status status = transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    return select_in(connection,
                     "SELECT u.user_id, u.name, s.plan, s.period_start_ns, s.period_end_ns FROM users u "
                     "LEFT JOIN subscriptions s ON s.product = u.product AND s.user_id = u.user_id "
                     "WHERE u.product = ?1 AND u.user_id IN ",
                     **product, user_ids, kUsersPerQuery, "find users", [&](const Query& q) {
                       out.push_back(UserRecord{.user_id = q.text(0), .name = q.text(1), .subscription = q.subscription_at(2)});
                     });
  });
  if (!status.ok()) return status;
  // Bytewise (std::string's order), whatever the database's collation; a repeated id once.
  std::sort(out.begin(), out.end(), [](const UserRecord& a, const UserRecord& b) { return a.user_id < b.user_id; });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const UserRecord& a, const UserRecord& b) { return a.user_id == b.user_id; }),
            out.end());
  return out;
}

// A page of users, then the cost of those whose period is the page's most common one (every user
// without a subscription shares the calendar month) from usage_daily_by_user: one indexed read
// per day of the period for the page's id range, rather than each user's rows by model (ten
// times as many). Its partial days at either end come from the events of the users with
// usage_daily_by_user rows on those days. The few users with a period of their own are read by
// report_in() on their own.
absl::StatusOr<std::vector<UserPeriodCost>> SqlStorage::period_costs(std::string_view product_id,
                                                                   std::string_view after, std::size_t limit,
                                                                   PeriodOf period_of) {
  std::vector<UserPeriodCost> out;
  absl::Status status = transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    {
      absl::StatusOr<Query> select = prepare(
          connection,
          "SELECT u.user_id, u.name, s.plan, s.period_start_ns, s.period_end_ns FROM users u "
          "LEFT JOIN subscriptions s ON s.product = u.product AND s.user_id = u.user_id "
          "WHERE u.product = ?1 AND u.user_id > ?2 ORDER BY u.user_id LIMIT ?3");
      if (!select.ok()) return select.status();
      select->bind(1, **product).bind(2, after).bind(3, static_cast<std::int64_t>(limit));
      for (;;) {
        absl::StatusOr<bool> row = select->step("list users");
        if (!row.ok()) return row.status();
        if (!*row) break;
        out.push_back(UserPeriodCost{
            .user = UserRecord{.user_id = select->text(0), .name = select->text(1), .subscription = select->subscription_at(2)}});
      }
    }
    if (out.empty()) return absl::OkStatus();
    std::map<std::pair<std::int64_t, std::int64_t>, std::size_t> users_by_period;
    for (UserPeriodCost& u : out) {
      u.period = period_of(u.user);
      ++users_by_period[{u.period.from_ns, u.period.to_ns}];
    }
    const auto most = std::max_element(users_by_period.begin(), users_by_period.end(),
                                       [](const auto& a, const auto& b) { return a.second < b.second; });
    const TimeRange shared{.from_ns = most->first.first, .to_ns = most->first.second};
    // A row's user, by id: the page is in the database's collation order, which need not be
    // bytewise (PostgreSQL's en_US, say), so no binary search.
    absl::flat_hash_map<std::string_view, UserPeriodCost*> by_id;
    by_id.reserve(out.size());
    for (UserPeriodCost& u : out) by_id.emplace(u.user.user_id, &u);
    auto add = [&by_id, &shared](std::string_view user_id, std::int64_t cost) {
      const auto it = by_id.find(user_id);
      if (it == by_id.end() || it->second->period != shared) return;
      std::int64_t& sum = it->second->cost_nanos;
      if (__builtin_add_overflow(sum, cost, &sum)) sum = std::numeric_limits<std::int64_t>::max();
    };
    const std::string first = out.front().user.user_id;
    const std::string last = out.back().user.user_id;
    if (shared.from_ns < shared.to_ns && shared.from_ns >= 0) {
      const DaySplit split = split_days(shared.from_ns, shared.to_ns);
      // Up to two months, a seek per day to the page's users; a longer period (a subscription's
      // year, say) in one read of its days, which passes over the other users' rows too.
      const bool by_day = split.end_day - split.first_day <= kPeriodCostDaySeeks;
      if (split.first_day < split.end_day) {
        absl::StatusOr<Query> select = prepare(
            connection, by_day ? "SELECT user_id, cost_nanos FROM usage_daily_by_user "
                                 "WHERE product = ?1 AND day = ?2 AND user_id >= ?3 AND user_id <= ?4"
                               : "SELECT user_id, SUM(cost_nanos) FROM usage_daily_by_user WHERE product = ?1 AND "
                                 "day >= ?2 AND day < ?5 AND user_id >= ?3 AND user_id <= ?4 GROUP BY user_id");
        if (!select.ok()) return select.status();
        for (std::int64_t day = split.first_day; day < split.end_day; day = by_day ? day + 1 : split.end_day) {
          select->bind(1, **product).bind(2, day).bind(3, std::string_view(first)).bind(4, std::string_view(last));
          if (!by_day) select->bind(5, split.end_day);
          for (;;) {
            absl::StatusOr<bool> row = select->step("read the period's costs");
            if (!row.ok()) return row.status();
            if (!*row) break;
            add(select->text_view(0), select->int64(1));
          }
          select->reset();
        }
      }
      for (const TimeRange& r : {split.head, split.tail}) {
        if (r.from_ns >= r.to_ns) continue;
        absl::StatusOr<Query> select = prepare(
            connection,
            "SELECT user_id, SUM(cost_nanos) FROM events WHERE product = ?1 AND user_id IN "
            "(SELECT user_id FROM usage_daily_by_user WHERE product = ?1 AND day >= ?2 AND day < ?3 "
            "AND user_id >= ?4 AND user_id <= ?5) AND ts_ns >= ?6 AND ts_ns < ?7 AND kind <> 'billing' GROUP BY user_id");
        if (!select.ok()) return select.status();
        select->bind(1, **product)
            .bind(2, floor_div(r.from_ns, kNanosPerDay))
            .bind(3, ceil_div(r.to_ns, kNanosPerDay))
            .bind(4, std::string_view(first))
            .bind(5, std::string_view(last))
            .bind(6, r.from_ns)
            .bind(7, r.to_ns);
        for (;;) {
          absl::StatusOr<bool> row = select->step("read the period's costs");
          if (!row.ok()) return row.status();
          if (!*row) break;
          add(select->text_view(0), select->int64(1));
        }
      }
    }
    for (UserPeriodCost& u : out) {
      if (u.period == shared) continue;
      GroupedTotals totals;
      const ReportQuery query{
          .from_ns = u.period.from_ns, .to_ns = u.period.to_ns, .group_by = ReportGroup::kUser, .user_id = u.user.user_id};
      if (absl::Status s = report_in(connection, **product, query, totals); !s.ok()) return s;
      for (const auto& [key, t] : totals) {
        if (__builtin_add_overflow(u.cost_nanos, t.cost_nanos, &u.cost_nanos)) {
          u.cost_nanos = std::numeric_limits<std::int64_t>::max();
        }
      }
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

}  // namespace paygent::server
