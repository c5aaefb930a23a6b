// SqlStorage's report tags (see server/storage.h, Storage::set_report_tags, and docs/tracking.md,
// "by=tag"): the meta tags a product declares so that the profit report groups by them from a
// rollup, profit_daily_by_tag, rather than from the events. Ingest adds each stored event to the
// rollup of every declared key (its value, "" without it) in its own transaction; declaring a key
// fills its rollup from the events stored so far, in one transaction that holds other writers off.
#include <cstdint>
#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <simdjson.h>

#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"

namespace paygent::server {
// The values of `keys` in `meta_tags` (a stored event's JSON object of strings), "" for a key it
// does not hold. Internal when the text is not a JSON object (never stored so).
absl::Status meta_tag_values(simdjson::dom::parser& parser, std::string_view meta_tags, std::span<const std::string> keys,
                        std::vector<std::string>& out) {
  out.assign(keys.size(), std::string());
  if (meta_tags.empty() || meta_tags == "{}") return absl::OkStatus();
  simdjson::dom::object tags;
  if (parser.parse(meta_tags).get(tags) != simdjson::SUCCESS) {
    return absl::InternalError("report tags: a stored event's meta_tags is not a JSON object");
  }
  for (std::size_t k = 0; k < keys.size(); ++k) {
    std::string_view value;
    if (simdjson::dom::element v; tags.at_key(keys[k]).get(v) == simdjson::SUCCESS &&
                                  v.get_string().get(value) == simdjson::SUCCESS) {
      out[k] = std::string(value);
    }
  }
  return absl::OkStatus();
}

namespace {

using ::paygent::internal::str_cat;

// Adds one event's sums to `rows` under each of `keys` (values in `values`).
absl::Status add_to(TagRows& rows, std::span<const std::string> keys, const std::vector<std::string>& values,
                    std::int64_t day, const TagSums& add) {
  for (std::size_t k = 0; k < keys.size(); ++k) {
    TagSums& sums = rows[TagKey{keys[k], day, values[k]}];
    for (std::size_t i = 0; i < sums.size(); ++i) {
      if (__builtin_add_overflow(sums[i], add[i], &sums[i])) {
        return absl::InvalidArgumentError("the batch would overflow a 64-bit total of a report tag's rollup");
      }
    }
  }
  return absl::OkStatus();
}

std::int64_t day_of(std::int64_t ts_ns) {
  std::int64_t day = ts_ns / storage_internal::kNanosPerDay;
  if (ts_ns % storage_internal::kNanosPerDay < 0) --day;
  return day;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SqlStorage::report_tags_in(SqlConnection& connection, std::int64_t product) {
  absl::StatusOr<Query> select = prepare(connection, "SELECT tag_key FROM report_tags WHERE product = ?1 ORDER BY tag_key");
  if (!select.ok()) return select.status();
  select->bind(1, product);
  std::vector<std::string> keys;
  for (;;) {
    absl::StatusOr<bool> row = select->step("read the report tags");
    if (!row.ok()) return row.status();
    if (!*row) break;
    keys.push_back(select->text(0));
  }
  return keys;
}

absl::Status SqlStorage::upsert_tag_rows(SqlConnection& connection, std::int64_t product, const TagRows& rows) {
  std::vector<const std::pair<const TagKey, TagSums>*> list;
  list.reserve(rows.size());
  for (const auto& row : rows) list.push_back(&row);
  return insert_rows(
      connection,
      "INSERT INTO profit_daily_by_tag(product, tag_key, day, tag_value, cost_events, cost_nanos, cost_unknown, "
      "billing_events, revenue_nanos, revenue_known)",
      10, list.size(),
      "ON CONFLICT(product, tag_key, day, tag_value) DO UPDATE SET "
      "cost_events = profit_daily_by_tag.cost_events + excluded.cost_events, "
      "cost_nanos = profit_daily_by_tag.cost_nanos + excluded.cost_nanos, "
      "cost_unknown = profit_daily_by_tag.cost_unknown + excluded.cost_unknown, "
      "billing_events = profit_daily_by_tag.billing_events + excluded.billing_events, "
      "revenue_nanos = profit_daily_by_tag.revenue_nanos + excluded.revenue_nanos, "
      "revenue_known = profit_daily_by_tag.revenue_known + excluded.revenue_known",
      "add to a report tag's rollup", [&](Query& upsert, int first, std::size_t r) {
        const auto& [key, s] = *list[r];
        const auto& [tag, day, value] = key;
        upsert.bind(first, product)
            .bind(first + 1, std::string_view(tag))
            .bind(first + 2, day)
            .bind(first + 3, std::string_view(value));
        for (int i = 0; i < 6; ++i) upsert.bind(first + 4 + i, s[static_cast<std::size_t>(i)]);
      });
}

absl::Status SqlStorage::add_tag_rollups(SqlConnection& connection, std::int64_t product,
                                         std::span<const EventRecord> events, const std::vector<bool>& stored,
                                         std::span<const std::pair<std::size_t, std::int64_t>> priced_rows,
                                         std::span<const std::pair<std::size_t, std::int64_t>> unpriced_rows) {
  absl::StatusOr<std::vector<std::string>> keys = report_tags_in(connection, product);
  if (!keys.ok()) return keys.status();
  if (keys->empty()) return absl::OkStatus();
  simdjson::dom::parser parser;
  std::vector<std::string> values;
  TagRows rows;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const EventRecord& e = events[i];
    if (!stored[i] || e.kind == ::paygent::internal::UsageKind::kBilling) continue;
    if (absl::Status s = meta_tag_values(parser, e.meta_tags_json, *keys, values); !s.ok()) return s;
    const TagSums add{1, e.cost_unknown ? 0 : e.cost_nanos, e.cost_unknown ? 1 : 0, 0, 0, 0};
    if (absl::Status s = add_to(rows, *keys, values, day_of(e.ts_ns), add); !s.ok()) return s;
  }
  for (const bool priced : {true, false}) {
    for (const auto& [i, revenue] : priced ? priced_rows : unpriced_rows) {
      const EventRecord& e = events[i];
      if (absl::Status s = meta_tag_values(parser, e.meta_tags_json, *keys, values); !s.ok()) return s;
      const TagSums add{0, 0, 0, 1, priced ? revenue : 0, priced ? 1 : 0};
      if (absl::Status s = add_to(rows, *keys, values, day_of(e.ts_ns), add); !s.ok()) return s;
    }
  }
  return upsert_tag_rows(connection, product, rows);
}

absl::Status SqlStorage::set_report_tags(std::string_view product_id, std::span<const std::string> tag_keys) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!dialect_.lock_events().empty()) {
      if (absl::Status s = connection.exec(dialect_.lock_events()); !s.ok()) return s;
    }
    absl::StatusOr<std::vector<std::string>> before = report_tags_in(connection, *product);
    if (!before.ok()) return before.status();
    std::vector<std::string> added;
    for (const std::string& key : tag_keys) {
      if (std::find(before->begin(), before->end(), key) == before->end()) added.push_back(key);
    }
    for (const std::string& key : *before) {
      if (std::find(tag_keys.begin(), tag_keys.end(), key) != tag_keys.end()) continue;
      for (const char* sql : {"DELETE FROM report_tags WHERE product = ?1 AND tag_key = ?2",
                              "DELETE FROM profit_daily_by_tag WHERE product = ?1 AND tag_key = ?2"}) {
        absl::StatusOr<Query> remove = prepare(connection, sql);
        if (!remove.ok()) return remove.status();
        remove->bind(1, *product).bind(2, std::string_view(key));
        if (absl::Status s = remove->run("remove a report tag"); !s.ok()) return s;
      }
    }
    if (added.empty()) return absl::OkStatus();
    if (absl::Status s = insert_rows(connection, "INSERT INTO report_tags(product, tag_key)", 2, added.size(),
                                     "ON CONFLICT(product, tag_key) DO NOTHING", "add a report tag",
                                     [&](Query& insert, int first, std::size_t i) {
                                       insert.bind(first, *product).bind(first + 1, std::string_view(added[i]));
                                     });
        !s.ok()) {
      return s;
    }
    // The new keys' rollups from every event stored so far: the cost rows, then the billing
    // events (their tags are their event's), each distinct (day, meta_tags) once.
    simdjson::dom::parser parser;
    std::vector<std::string> values;
    TagRows rows;
    for (const bool cost : {true, false}) {
      absl::StatusOr<Query> select = prepare(
          connection,
          cost ? std::string("SELECT ts_ns / 86400000000000, meta_tags, COUNT(*), SUM(CASE WHEN cost_unknown = 0 THEN "
                             "cost_nanos ELSE 0 END), SUM(cost_unknown), 0, 0, 0 FROM events WHERE product = ?1 AND "
                             "kind <> 'billing' GROUP BY 1, 2")
               : std::string("SELECT ts_ns / 86400000000000, meta_tags, 0, 0, 0, COUNT(*), "
                             "COALESCE(SUM(revenue_nanos), 0), COUNT(revenue_nanos) FROM billing_events "
                             "WHERE product = ?1 GROUP BY 1, 2"));
      if (!select.ok()) return select.status();
      select->bind(1, *product);
      for (;;) {
        absl::StatusOr<bool> row = select->step("read the events for a report tag");
        if (!row.ok()) return row.status();
        if (!*row) break;
        if (absl::Status s = meta_tag_values(parser, select->text_view(1), added, values); !s.ok()) return s;
        TagSums add;
        for (int i = 0; i < 6; ++i) add[static_cast<std::size_t>(i)] = select->int64(2 + i);
        if (absl::Status s = add_to(rows, added, values, select->int64(0), add); !s.ok()) return s;
      }
    }
    return upsert_tag_rows(connection, *product, rows);
  });
}

absl::StatusOr<std::vector<std::string>> SqlStorage::report_tags(std::string_view product_id) {
  std::vector<std::string> out;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<std::vector<std::string>> keys = report_tags_in(connection, **product);
    if (!keys.ok()) return keys.status();
    out = *std::move(keys);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

}  // namespace paygent::server
