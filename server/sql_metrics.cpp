// SqlStorage's billable metrics (see server/sql_storage.h and docs/billing.md): the
// billable_metrics table (a metric's definition as canonical JSON, and the part of it that is
// locked once an indicator links it), the links in indicator_billing (written by put_agent,
// sql_agents.cpp), and the paged read of a customer's billing events that an invoice feeds into
// billing::InvoiceBuilder.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;

// Billing events read per query of scan_billing_events(): bounds the memory of one page.
constexpr int kScanPage = 1000;
// ...and per page of scan_product_billing_events()'s streamed read on PostgreSQL (~2 MB of rows;
// two pages at most in memory).
constexpr int kProductScanPage = 10'000;

// `bytes` in lowercase hex into `out` (its capacity kept).
void hex_into(std::string_view bytes, std::string& out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  out.clear();
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
}

absl::Status linked_error(std::string_view identifier, const std::vector<std::string>& links, std::string_view what) {
  return absl::FailedPreconditionError(str_cat("metric \"", identifier, "\" is linked to indicator ", links.front(),
                                               links.size() > 1 ? str_cat(" (and ", links.size() - 1, " more)") : "",
                                               ": ", what));
}

// Creates the metric's row, or replaces its name, description and definition (its created_ns
// stays), in the caller's transaction.
absl::Status write_metric(SqlConnection& connection, std::int64_t product, const MetricRecord& metric) {
  absl::StatusOr<Query> upsert = prepare(
      connection,
      "INSERT INTO billable_metrics(product, identifier, name, description, definition, locked, created_ns, "
      "updated_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT(product, identifier) DO UPDATE SET "
      "name = excluded.name, description = excluded.description, definition = excluded.definition, "
      "locked = excluded.locked, updated_ns = excluded.updated_ns");
  if (!upsert.ok()) return upsert.status();
  upsert->bind(1, product)
      .bind(2, metric.identifier)
      .bind(3, metric.name)
      .bind(4, metric.description)
      .bind(5, metric.definition_json)
      .bind(6, metric.locked_json)
      .bind(7, absl::ToUnixNanos(absl::Now()));
  return upsert->run("write metric");
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SqlStorage::metric_links(SqlConnection& connection, std::int64_t product,
                                                                  std::string_view identifier) {
  absl::StatusOr<Query> select =
      prepare(connection, "SELECT agent_id, indicator FROM indicator_billing WHERE product = ?1 AND metric = ?2");
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(2, identifier);
  std::vector<std::string> links;
  for (;;) {
    absl::StatusOr<bool> row = select->step("read metric links");
    if (!row.ok()) return row.status();
    if (!*row) break;
    links.push_back(str_cat(select->text_view(0), "/", select->text_view(1)));
  }
  std::sort(links.begin(), links.end());  // bytewise on both databases
  return links;
}

absl::StatusOr<std::optional<MetricRecord>> SqlStorage::read_metric(SqlConnection& connection, std::int64_t product,
                                                                    std::string_view identifier) {
  absl::StatusOr<Query> select = prepare(
      connection,
      "SELECT name, description, definition, locked, created_ns FROM billable_metrics WHERE product = ?1 AND "
      "identifier = ?2");
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(2, identifier);
  absl::StatusOr<bool> row = select->step("read metric");
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<MetricRecord>();
  MetricRecord m{.identifier = std::string(identifier),
                 .name = select->text(0),
                 .description = select->text(1),
                 .definition_json = select->text(2),
                 .locked_json = select->text(3),
                 .created_ns = select->int64(4)};
  absl::StatusOr<std::vector<std::string>> links = metric_links(connection, product, identifier);
  if (!links.ok()) return links.status();
  m.linked_to = *std::move(links);
  return std::optional<MetricRecord>(std::move(m));
}

absl::Status SqlStorage::create_metric(std::string_view product_id, const MetricRecord& metric) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<std::optional<MetricRecord>> stored = read_metric(connection, *product, metric.identifier);
    if (!stored.ok()) return stored.status();
    if (stored->has_value()) {
      return absl::AlreadyExistsError(str_cat("identifier: a metric \"", metric.identifier, "\" exists already"));
    }
    return write_metric(connection, *product, metric);
  });
}

absl::StatusOr<bool> SqlStorage::update_metric(std::string_view product_id, const MetricRecord& metric) {
  bool changed = false;
  absl::Status status = transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    changed = false;
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<std::optional<MetricRecord>> stored = read_metric(connection, *product, metric.identifier);
    if (!stored.ok()) return stored.status();
    if (!stored->has_value()) return absl::NotFoundError(str_cat("no billable metric \"", metric.identifier, "\""));
    const MetricRecord& old = **stored;
    if (old.name == metric.name && old.description == metric.description &&
        old.definition_json == metric.definition_json) {
      return absl::OkStatus();
    }
    if (old.locked_json != metric.locked_json && !old.linked_to.empty()) {
      return linked_error(metric.identifier, old.linked_to,
                          "its aggregation, field or expression and filters are locked (create a new metric and "
                          "link it instead)");
    }
    changed = true;
    return write_metric(connection, *product, metric);
  });
  if (!status.ok()) return status;
  return changed;
}

absl::StatusOr<std::vector<MetricRecord>> SqlStorage::list_metrics(std::string_view product_id) {
  return list_records<MetricRecord>(product_id, "SELECT identifier FROM billable_metrics WHERE product = ?1",
                                    "list metrics", &read_metric);
}

absl::StatusOr<MetricRecord> SqlStorage::find_metric(std::string_view product_id, std::string_view identifier) {
  return find_record<MetricRecord>(product_id, identifier, str_cat("no billable metric \"", identifier, "\""),
                                   &read_metric);
}

absl::Status SqlStorage::delete_metric(std::string_view product_id, std::string_view identifier) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<std::vector<std::string>> links = metric_links(connection, *product, identifier);
    if (!links.ok()) return links.status();
    if (!links->empty()) return linked_error(identifier, *links, "a linked metric cannot be deleted");
    absl::StatusOr<Query> erase = prepare(connection, "DELETE FROM billable_metrics WHERE product = ?1 AND identifier = ?2");
    if (!erase.ok()) return erase.status();
    erase->bind(1, *product).bind(2, identifier);
    if (absl::Status s = erase->run("delete metric"); !s.ok()) return s;
    if (erase->changes() == 0) return absl::NotFoundError(str_cat("no billable metric \"", identifier, "\""));
    return absl::OkStatus();
  });
}

absl::Status SqlStorage::scan_billing_rows(SqlConnection& connection, std::int64_t product,
                                           std::optional<std::string_view> customer_id, TimeRange range, ScanCursor& cursor,
                                           absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) {
  // Keyset pages over the (product, user_id, ts_ns, id) index (every customer: (product, ts_ns,
  // id)): each page starts after the last (ts_ns, id) given to `fn`, a row-value comparison both
  // databases seek to in the index (an OR of the two columns made PostgreSQL read the range from
  // its start on every page), so a page costs the same however far into the range it is.
  // Placeholders, none left out before the last (PostgreSQL types them all): ?1 product, ?2 the
  // start (or the last ts_ns), ?3 the end, then the customer, then the last id.
  // Every customer's rows are one streamed read instead (SqlConnection::prepare_stream): one
  // query, whose next page PostgreSQL reads while this one is fed to `fn`; the keyset start still
  // resumes a retried transaction after the rows `fn` has.
  if (cursor.first) cursor.after_ts = range.from_ns;
  const int id_index = customer_id ? 5 : 4;
  const bool streamed = !customer_id.has_value();
  const int page = streamed ? kProductScanPage : kScanPage;
  for (;;) {
    const std::string sql =
        str_cat("SELECT b.id, b.agent_id, b.indicator, b.ts_ns, b.duration_us, b.meta_tags, b.received_ns, b.revenue_nanos, "
                "b.user_id FROM billing_events b WHERE b.product = ?1 AND ", customer_id ? "b.user_id = ?4 AND " : "", "b.ts_ns < ?3 AND ",
                cursor.first ? std::string("b.ts_ns >= ?2 ")
                             : str_cat("(b.ts_ns, b.id) > (?2, ?", id_index, ") "),
                "ORDER BY b.ts_ns, b.id", streamed ? "" : str_cat(" LIMIT ", page));
    absl::StatusOr<Query> select = streamed ? prepare_stream(connection, sql, page) : prepare(connection, sql);
    if (!select.ok()) return select.status();
    select->bind(1, product).bind(2, cursor.after_ts).bind(3, range.to_ns);
    if (customer_id) select->bind(4, *customer_id);
    const std::string after_copy = cursor.after_id;  // bound bytes must outlive the query's steps
    if (!cursor.first) {
      select->bind_blob(id_index, std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(after_copy.data()),
                                                          after_copy.size()));
    }
    int rows = 0;
    BillingEventRow event;  // one for the page: its strings keep their capacity from row to row
    for (;;) {
      absl::StatusOr<bool> row = select->step("read billing events");
      if (!row.ok()) return row.status();
      if (!*row) break;
      ++rows;
      const std::string id = select->blob(0);
      hex_into(id, event.id);
      event.customer_id.assign(select->text_view(8));
      event.agent_id.assign(select->text_view(1));
      event.indicator.assign(select->text_view(2));
      event.ts_ns = select->int64(3);
      event.received_ns = select->int64(6);
      event.duration_us = select->int64(4);
      event.meta_tags_json.assign(select->text_view(5));
      event.revenue_nanos = select->is_null(7) ? std::nullopt : std::optional<std::int64_t>(select->int64(7));
      if (absl::Status s = fn(event); !s.ok()) return s;
      cursor.after_ts = event.ts_ns;
      cursor.after_id.assign(id);
      cursor.first = false;
    }
    if (streamed || rows < page) return absl::OkStatus();
  }
}

absl::Status SqlStorage::scan_product_billing_events(std::string_view product_id, TimeRange range,
                                                     absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) {
  ScanCursor cursor;  // outlives a retried transaction, as in scan_billing_events
  return transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    return scan_billing_rows(connection, **product, std::nullopt, range, cursor, fn);
  });
}

absl::Status SqlStorage::scan_billing_events(std::string_view product_id, std::string_view customer_id, TimeRange range,
                                             absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) {
  // The cursor outlives a transaction the database aborted and retried: the retry resumes after
  // what `fn` already has (no event is given twice).
  ScanCursor cursor;
  return transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    return scan_billing_rows(connection, **product, customer_id, range, cursor, fn);
  });
}

}  // namespace paygent::server
