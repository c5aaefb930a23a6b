// SqlStorage's webhooks (docs/webhooks.md; see server/sql_storage.h): the endpoints, the alerts
// (one row per alert key, so that an alert is raised once however many batches see it) and the
// outbox of deliveries, one per alert and endpoint, written in the transaction of the ingest (or
// of enqueue_alert()) that raised the alert. A sender (server/webhooks.h) claims due deliveries,
// posts them and records each attempt here.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"
#include "server/webhooks.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;

std::int64_t now_ns() { return absl::ToUnixNanos(absl::Now()); }

// The webhooks' tables: schema version 5 of SQLite, 4 of PostgreSQL, created when missing. Kept
// as a block of their own (appended to sql_schema()'s template).
constexpr std::string_view kWebhooksSchema = R"sql(
CREATE TABLE IF NOT EXISTS alert_settings(
  product ${INT} NOT NULL PRIMARY KEY,
  wallet_low_percent ${INT} NOT NULL)${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS webhook_endpoints(
  product ${INT} NOT NULL,
  endpoint_id TEXT NOT NULL,
  url TEXT NOT NULL,
  event_mask ${INT} NOT NULL,
  secret TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  PRIMARY KEY(product, endpoint_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS webhook_alerts(
  product ${INT} NOT NULL,
  alert_key TEXT NOT NULL,
  event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  user_id TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  PRIMARY KEY(product, alert_key))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS webhook_deliveries(
  pk ${KEY},
  product ${INT} NOT NULL,
  endpoint_id TEXT NOT NULL,
  delivery_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  body TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts ${INT} NOT NULL,
  next_attempt_ns ${INT} NOT NULL,
  last_attempt_ns ${INT} NOT NULL,
  last_http_status ${INT} NOT NULL,
  last_error TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  UNIQUE(product, delivery_id))${TABLE};
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_ns);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint ON webhook_deliveries(product, endpoint_id, pk);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_by_product ON webhook_deliveries(product, status, next_attempt_ns);
)sql";

}  // namespace

std::string_view webhooks_schema_template() { return kWebhooksSchema; }

absl::StatusOr<std::uint32_t> SqlStorage::webhook_mask(SqlConnection& connection, std::int64_t product) {
  absl::StatusOr<Query> select = prepare(connection, "SELECT event_mask FROM webhook_endpoints WHERE product = ?1");
  if (!select.ok()) return select.status();
  select->bind(1, product);
  std::uint32_t mask = 0;
  for (;;) {
    absl::StatusOr<bool> row = select->step("read webhook masks");
    if (!row.ok()) return row.status();
    if (!*row) break;
    mask |= static_cast<std::uint32_t>(select->int64(0));
  }
  return mask;
}

absl::StatusOr<AlertSettings> SqlStorage::alert_settings_in(SqlConnection& connection, std::int64_t product) {
  absl::StatusOr<Query> select = prepare(connection, "SELECT wallet_low_percent FROM alert_settings WHERE product = ?1");
  if (!select.ok()) return select.status();
  select->bind(1, product);
  AlertSettings out;
  absl::StatusOr<bool> row = select->step("read alert settings");
  if (!row.ok()) return row.status();
  if (*row) out.wallet_low_percent = select->int64(0);
  return out;
}

absl::StatusOr<AlertSettings> SqlStorage::alert_settings(std::string_view product_id) {
  AlertSettings out;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<AlertSettings> settings = alert_settings_in(connection, *product);
    if (!settings.ok()) return settings.status();
    out = *settings;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status SqlStorage::put_alert_settings(std::string_view product_id, const AlertSettings& settings) {
  if (settings.wallet_low_percent < 1 || settings.wallet_low_percent > 99) {
    return absl::InvalidArgumentError("wallet_low_percent: must be from 1 to 99");
  }
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<Query> upsert = prepare(
        connection,
        "INSERT INTO alert_settings(product, wallet_low_percent) VALUES(?1, ?2) "
        "ON CONFLICT(product) DO UPDATE SET wallet_low_percent = excluded.wallet_low_percent");
    if (!upsert.ok()) return upsert.status();
    upsert->bind(1, *product).bind(2, settings.wallet_low_percent);
    return upsert->run("put alert settings");
  });
}

absl::StatusOr<bool> SqlStorage::store_alert(SqlConnection& connection, std::int64_t product,
                                             const WebhookAlert& alert) {
  const std::int64_t now = now_ns();
  const std::string_view type = alert_type_name(alert.type);
  absl::StatusOr<Query> insert =
      prepare(connection,
              "INSERT INTO webhook_alerts(product, alert_key, event_id, type, user_id, created_ns) "
              "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(product, alert_key) DO NOTHING");
  if (!insert.ok()) return insert.status();
  insert->bind(1, product).bind(2, alert.alert_key).bind(3, alert.event_id).bind(4, type).bind(5, alert.user_id).bind(6, now);
  if (absl::Status s = insert->run("store alert"); !s.ok()) return s;
  if (insert->changes() == 0) return false;  // raised before
  // One delivery per endpoint that wants the type; its id is the event id and the endpoint id,
  // and its body starts with it (the same at every attempt).
  absl::StatusOr<Query> deliveries = prepare(
      connection,
      "INSERT INTO webhook_deliveries(product, endpoint_id, delivery_id, event_id, type, body, status, attempts, "
      "next_attempt_ns, last_attempt_ns, last_http_status, last_error, created_ns) "
      "SELECT ?1, endpoint_id, ?2 || '_' || endpoint_id, ?2, ?3, '{\"delivery_id\":\"' || ?2 || '_' || endpoint_id || "
      "'\",' || ?4 || '}', 'pending', 0, ?5, 0, 0, '', ?5 FROM webhook_endpoints "
      "WHERE product = ?1 AND (event_mask & ?6) <> 0 ORDER BY endpoint_id");
  if (!deliveries.ok()) return deliveries.status();
  deliveries->bind(1, product)
      .bind(2, alert.event_id)
      .bind(3, type)
      .bind(4, alert.fields_json)
      .bind(5, now)
      .bind(6, static_cast<std::int64_t>(alert.type));
  if (absl::Status s = deliveries->run("queue deliveries"); !s.ok()) return s;
  return deliveries->changes() > 0;
}

absl::StatusOr<std::vector<std::string>> SqlStorage::products_wanting(AlertType type) {
  std::vector<std::string> out;
  absl::Status status = transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<Query> select = prepare(
        connection, "SELECT DISTINCT p.id FROM webhook_endpoints w JOIN products p ON p.pk = w.product "
                    "WHERE (w.event_mask & ?1) <> 0 ORDER BY p.id");
    if (!select.ok()) return select.status();
    select->bind(1, static_cast<std::int64_t>(type));
    for (;;) {
      absl::StatusOr<bool> row = select->step("read the products wanting an alert");
      if (!row.ok()) return row.status();
      if (!*row) break;
      out.push_back(select->text(0));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<bool> SqlStorage::alert_raised(std::string_view product_id, std::string_view alert_key) {
  bool raised = false;
  absl::Status status = transaction(Access::kReport, false, [&](SqlConnection& connection) -> absl::Status {
    raised = false;
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<Query> select =
        prepare(connection, "SELECT 1 FROM webhook_alerts WHERE product = ?1 AND alert_key = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, **product).bind(2, alert_key);
    absl::StatusOr<bool> row = select->step("read an alert");
    if (!row.ok()) return row.status();
    raised = *row;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return raised;
}

absl::StatusOr<bool> SqlStorage::enqueue_alert(std::string_view product_id, const WebhookAlert& alert) {
  bool stored = false;
  absl::Status status = transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    stored = false;
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<std::uint32_t> mask = webhook_mask(connection, *product);
    if (!mask.ok()) return mask.status();
    if ((*mask & static_cast<std::uint32_t>(alert.type)) == 0) return absl::OkStatus();
    absl::StatusOr<bool> s = store_alert(connection, *product, alert);
    if (!s.ok()) return s.status();
    stored = *s;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return stored;
}

absl::Status SqlStorage::create_webhook(std::string_view product_id, const WebhookEndpoint& endpoint) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<Query> insert = prepare(connection,
                                           "INSERT INTO webhook_endpoints(product, endpoint_id, url, event_mask, "
                                           "secret, created_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING");
    if (!insert.ok()) return insert.status();
    insert->bind(1, *product)
        .bind(2, endpoint.id)
        .bind(3, endpoint.url)
        .bind(4, static_cast<std::int64_t>(endpoint.event_mask))
        .bind(5, endpoint.secret)
        .bind(6, endpoint.created_ns);
    if (absl::Status s = insert->run("create webhook"); !s.ok()) return s;
    if (insert->changes() == 0) return absl::AlreadyExistsError(str_cat("webhook ", endpoint.id, " exists"));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<WebhookEndpoint>> SqlStorage::list_webhooks(std::string_view product_id) {
  std::vector<WebhookEndpoint> out;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!*product) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(connection,
                                           "SELECT endpoint_id, url, event_mask, secret, created_ns FROM "
                                           "webhook_endpoints WHERE product = ?1 ORDER BY endpoint_id");
    if (!select.ok()) return select.status();
    select->bind(1, **product);
    for (;;) {
      absl::StatusOr<bool> row = select->step("list webhooks");
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      out.push_back(WebhookEndpoint{.id = select->text(0),
                                    .url = select->text(1),
                                    .event_mask = static_cast<std::uint32_t>(select->int64(2)),
                                    .secret = select->text(3),
                                    .created_ns = select->int64(4)});
    }
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status SqlStorage::delete_webhook(std::string_view product_id, std::string_view endpoint_id) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<Query> remove =
        prepare(connection, "DELETE FROM webhook_endpoints WHERE product = ?1 AND endpoint_id = ?2");
    if (!remove.ok()) return remove.status();
    remove->bind(1, *product).bind(2, endpoint_id);
    if (absl::Status s = remove->run("delete webhook"); !s.ok()) return s;
    if (remove->changes() == 0) return absl::NotFoundError(str_cat("webhook ", endpoint_id, ": no such webhook"));
    absl::StatusOr<Query> deliveries =
        prepare(connection, "DELETE FROM webhook_deliveries WHERE product = ?1 AND endpoint_id = ?2");
    if (!deliveries.ok()) return deliveries.status();
    deliveries->bind(1, *product).bind(2, endpoint_id);
    return deliveries->run("delete the webhook's deliveries");
  });
}

absl::StatusOr<std::vector<WebhookDelivery>> SqlStorage::claim_webhook_deliveries(std::int64_t now,
                                                                                  std::int64_t lease_until_ns,
                                                                                  std::size_t max,
                                                                                  std::span<const std::int64_t> busy) {
  std::vector<WebhookDelivery> out;
  // A read first: an idle sender's polls take no writer lock from ingest.
  bool any_due = false;
  absl::Status read = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<Query> due = prepare(
        connection, "SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_ns <= ?1 LIMIT 1");
    if (!due.ok()) return due.status();
    due->bind(1, now);
    absl::StatusOr<bool> row = due->step("find a due delivery");
    if (!row.ok()) return row.status();
    any_due = *row;
    return absl::OkStatus();
  });
  if (!read.ok()) return read;
  if (!any_due || max == 0) return out;
  absl::Status status = transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    // The products with due deliveries, the one waiting longest first; enough of them that those
    // left once the busy ones are skipped still fill `max`.
    std::vector<std::int64_t> products;
    {
      absl::StatusOr<Query> heads = prepare(connection,
                                            "SELECT product, MIN(next_attempt_ns) AS due FROM webhook_deliveries "
                                            "WHERE status = 'pending' AND next_attempt_ns <= ?1 GROUP BY product "
                                            "ORDER BY due, product LIMIT ?2");
      if (!heads.ok()) return heads.status();
      heads->bind(1, now).bind(2, static_cast<std::int64_t>(max + busy.size()));
      for (;;) {
        absl::StatusOr<bool> row = heads->step("find products with due deliveries");
        if (!row.ok()) return row.status();
        if (!*row) break;
        const std::int64_t product = heads->int64(0);
        if (std::find(busy.begin(), busy.end(), product) == busy.end() && products.size() < max) {
          products.push_back(product);
        }
      }
    }
    // Each product's earliest due delivery, claimed only if no other sender moved it since it was
    // read (another replica on PostgreSQL).
    absl::StatusOr<Query> select = prepare(
        connection,
        "SELECT d.pk, d.delivery_id, d.type, e.url, e.secret, d.body, d.attempts, d.next_attempt_ns "
        "FROM webhook_deliveries d JOIN webhook_endpoints e ON e.product = d.product AND "
        "e.endpoint_id = d.endpoint_id WHERE d.product = ?1 AND d.status = 'pending' AND d.next_attempt_ns <= ?2 "
        "ORDER BY d.next_attempt_ns, d.pk LIMIT 1");
    if (!select.ok()) return select.status();
    absl::StatusOr<Query> claim = prepare(connection,
                                          "UPDATE webhook_deliveries SET next_attempt_ns = ?2 WHERE pk = ?1 AND "
                                          "status = 'pending' AND next_attempt_ns = ?3");
    if (!claim.ok()) return claim.status();
    for (const std::int64_t product : products) {
      select->bind(1, product).bind(2, now);
      absl::StatusOr<bool> row = select->step("find a due delivery");
      if (!row.ok()) return row.status();
      if (!*row) {
        select->reset();
        continue;
      }
      WebhookDelivery d{.key = select->int64(0),
                        .product = product,
                        .delivery_id = select->text(1),
                        .type = select->text(2),
                        .url = select->text(3),
                        .secret = select->text(4),
                        .body = select->text(5),
                        .attempts = select->int64(6)};
      const std::int64_t due_at = select->int64(7);
      select->reset();
      claim->bind(1, d.key).bind(2, lease_until_ns).bind(3, due_at);
      if (absl::Status s = claim->run("claim delivery"); !s.ok()) return s;
      if (claim->changes() == 1) out.push_back(std::move(d));
      claim->reset();
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status SqlStorage::record_webhook_attempt(std::int64_t key, const WebhookAttempt& attempt) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<Query> update = prepare(connection,
                                           "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1, "
                                           "next_attempt_ns = ?3, last_attempt_ns = ?4, last_http_status = ?5, "
                                           "last_error = ?6 WHERE pk = ?1 AND status = 'pending'");
    if (!update.ok()) return update.status();
    const std::string_view status = attempt.next == WebhookAttempt::Next::kDelivered ? "delivered"
                                    : attempt.next == WebhookAttempt::Next::kFailed  ? "failed"
                                                                                     : "pending";
    update->bind(1, key)
        .bind(2, status)
        .bind(3, attempt.next == WebhookAttempt::Next::kRetry ? attempt.next_attempt_ns : std::int64_t{0})
        .bind(4, attempt.at_ns)
        .bind(5, std::int64_t{attempt.http_status})
        .bind(6, std::string_view(attempt.error).substr(0, 500));
    return update->run("record delivery attempt");
  });
}

absl::StatusOr<std::vector<WebhookDeliveryLog>> SqlStorage::webhook_deliveries(std::string_view product_id,
                                                                               std::string_view endpoint_id,
                                                                               std::size_t limit) {
  std::vector<WebhookDeliveryLog> out;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    const std::int64_t key = product->value_or(-1);
    absl::StatusOr<Query> exists =
        prepare(connection, "SELECT 1 FROM webhook_endpoints WHERE product = ?1 AND endpoint_id = ?2");
    if (!exists.ok()) return exists.status();
    exists->bind(1, key).bind(2, endpoint_id);
    absl::StatusOr<bool> found = exists->step("find webhook");
    if (!found.ok()) return found.status();
    if (!*found) return absl::NotFoundError(str_cat("webhook ", endpoint_id, ": no such webhook"));
    absl::StatusOr<Query> select = prepare(
        connection,
        "SELECT delivery_id, event_id, type, status, attempts, created_ns, last_attempt_ns, next_attempt_ns, "
        "last_http_status, last_error FROM webhook_deliveries WHERE product = ?1 AND endpoint_id = ?2 "
        "ORDER BY pk DESC LIMIT ?3");
    if (!select.ok()) return select.status();
    select->bind(1, key).bind(2, endpoint_id).bind(3, static_cast<std::int64_t>(limit));
    for (;;) {
      absl::StatusOr<bool> row = select->step("read deliveries");
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      WebhookDeliveryLog log{.delivery_id = select->text(0),
                             .event_id = select->text(1),
                             .type = select->text(2),
                             .status = select->text(3),
                             .attempts = select->int64(4),
                             .created_ns = select->int64(5),
                             .last_attempt_ns = select->int64(6),
                             .next_attempt_ns = select->int64(7),
                             .last_http_status = static_cast<int>(select->int64(8)),
                             .last_error = select->text(9)};
      if (log.status != "pending") log.next_attempt_ns = 0;
      out.push_back(std::move(log));
    }
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<std::string>> SqlStorage::list_user_ids(std::string_view product_id, std::string_view after,
                                                                   std::size_t limit) {
  std::vector<std::string> out;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!*product) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(
        connection, "SELECT user_id FROM users WHERE product = ?1 AND user_id > ?2 ORDER BY user_id LIMIT ?3");
    if (!select.ok()) return select.status();
    select->bind(1, **product).bind(2, after).bind(3, static_cast<std::int64_t>(limit));
    for (;;) {
      absl::StatusOr<bool> row = select->step("list users");
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      out.push_back(select->text(0));
    }
  });
  if (!status.ok()) return status;
  return out;
}

}  // namespace paygent::server
