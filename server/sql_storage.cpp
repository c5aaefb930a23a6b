// SqlStorage (see server/sql_storage.h): the queries and the flows around them, once for every
// database.
#include "server/sql_storage.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "meter/internal/str_cat.h"

namespace paygent::server {
namespace {

using ::paygent::internal::EventFieldType;
using ::paygent::internal::kEventFields;
using ::paygent::internal::str_cat;
using storage_internal::add_totals;
using storage_internal::DaySplit;
using storage_internal::split_days;

// Every row of a product's data is keyed by the product's integer key (products.pk), not by its
// "prod_..." id, and an event id is stored as its 16 bytes, not as 32 hex digits: the keys of the
// two event indexes are then about 20 bytes instead of 55, so a batch dirties fewer index pages.
// ${INT} and the other ${...} are the dialect's (SqlDialect): in SQLite, STRICT tables refuse an
// INTEGER that is not a lossless integer, which is how a sum that would overflow int64 (SQLite
// turns it into a REAL) is refused instead of being stored rounded; PostgreSQL's bigint refuses it
// as out of range.
constexpr std::string_view kSchemaTemplate = R"sql(
CREATE TABLE IF NOT EXISTS products(
  pk ${KEY},
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  key_sha256 TEXT NOT NULL UNIQUE,
  created_ns ${INT} NOT NULL)${TABLE};
CREATE TABLE IF NOT EXISTS users(
  product ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  name TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  PRIMARY KEY(product, user_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS subscriptions(
  product ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  plan TEXT NOT NULL,
  period_start_ns ${INT} NOT NULL,
  period_end_ns ${INT} NOT NULL,
  updated_ns ${INT} NOT NULL,
  PRIMARY KEY(product, user_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS plans(
  product ${INT} PRIMARY KEY,
  config_json TEXT NOT NULL,
  updated_ns ${INT} NOT NULL)${TABLE};
CREATE INDEX IF NOT EXISTS plans_revision ON plans(product, updated_ns);
CREATE TABLE IF NOT EXISTS events(
  product ${INT} NOT NULL,
  id ${BLOB} NOT NULL,
  ${EVENT_COLUMNS},
  received_ns ${INT} NOT NULL,
  PRIMARY KEY(product, id))${TABLE};
CREATE INDEX IF NOT EXISTS events_by_user_time ON events(product, user_id, ts_ns);
CREATE TABLE IF NOT EXISTS usage_daily(
  product ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  day ${INT} NOT NULL,
  model TEXT NOT NULL,
  calls ${INT} NOT NULL,
  input_tokens ${INT} NOT NULL,
  output_tokens ${INT} NOT NULL,
  cached_input_tokens ${INT} NOT NULL,
  cache_creation_input_tokens ${INT} NOT NULL,
  reasoning_tokens ${INT} NOT NULL,
  cost_nanos ${INT} NOT NULL,
  PRIMARY KEY(product, user_id, day, model))${SUMS_TABLE};
CREATE INDEX IF NOT EXISTS usage_daily_by_day ON usage_daily(product, day, user_id);
CREATE TABLE IF NOT EXISTS product_totals(
  product ${INT} PRIMARY KEY,
  calls ${INT} NOT NULL,
  input_tokens ${INT} NOT NULL,
  output_tokens ${INT} NOT NULL,
  cached_input_tokens ${INT} NOT NULL,
  cache_creation_input_tokens ${INT} NOT NULL,
  reasoning_tokens ${INT} NOT NULL,
  cost_nanos ${INT} NOT NULL)${TABLE};
CREATE TABLE IF NOT EXISTS soft_gates(
  product ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  limit_key TEXT NOT NULL,
  period_start_ns ${INT} NOT NULL,
  threshold_ppm ${INT} NOT NULL,
  PRIMARY KEY(product, user_id, period_start_ns, limit_key, threshold_ppm))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS report_tags(
  product ${INT} NOT NULL,
  tag_key TEXT NOT NULL,
  PRIMARY KEY(product, tag_key))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS profit_daily_by_tag(
  product ${INT} NOT NULL,
  tag_key TEXT NOT NULL,
  day ${INT} NOT NULL,
  tag_value TEXT NOT NULL,
  cost_events ${INT} NOT NULL,
  cost_nanos ${INT} NOT NULL,
  cost_unknown ${INT} NOT NULL,
  billing_events ${INT} NOT NULL,
  revenue_nanos ${INT} NOT NULL,
  revenue_known ${INT} NOT NULL,
  PRIMARY KEY(product, tag_key, day, tag_value))${SUMS_TABLE};
CREATE TABLE IF NOT EXISTS hard_gates(
  product ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  limit_key TEXT NOT NULL,
  period_start_ns ${INT} NOT NULL,
  threshold_ppm ${INT} NOT NULL,
  fired_ns ${INT} NOT NULL,
  PRIMARY KEY(product, user_id, period_start_ns, limit_key, threshold_ppm))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS leases(
  product ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  limit_key TEXT NOT NULL,
  period_start_ns ${INT} NOT NULL,
  holder TEXT NOT NULL,
  period_end_ns ${INT} NOT NULL,
  cap ${INT} NOT NULL,
  ceiling ${INT} NOT NULL,
  acked ${INT} NOT NULL,
  expires_at_ns ${INT} NOT NULL,
  PRIMARY KEY(product, user_id, limit_key, period_start_ns, holder))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS customers(
  product ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  PRIMARY KEY(product, user_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS voice_sessions(
  product ${INT} NOT NULL,
  session_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  meta_tags TEXT NOT NULL,
  closing_event_id TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  PRIMARY KEY(product, session_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS idempotency_keys(
  product ${INT} NOT NULL,
  key_sha256 TEXT NOT NULL,
  body_sha256 TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  PRIMARY KEY(product, key_sha256))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS agents(
  product ${INT} NOT NULL,
  agent_id TEXT NOT NULL,
  name TEXT NOT NULL,
  updated_ns ${INT} NOT NULL,
  PRIMARY KEY(product, agent_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS agent_indicators(
  product ${INT} NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  per_minute ${INT} NOT NULL,
  price_nanos ${INT},
  PRIMARY KEY(product, agent_id, indicator))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS indicator_rates(
  product ${INT} NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  rate_kind TEXT NOT NULL,
  rate_model TEXT NOT NULL,
  nanos_per_minute ${INT} NOT NULL,
  PRIMARY KEY(product, agent_id, indicator, rate_kind, rate_model))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS billing_events(
  product ${INT} NOT NULL,
  id ${BLOB} NOT NULL,
  user_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  session_id TEXT NOT NULL,
  model TEXT NOT NULL,
  ts_ns ${INT} NOT NULL,
  duration_us ${INT} NOT NULL,
  revenue_nanos ${INT},
  meta_tags TEXT NOT NULL DEFAULT '{}',
  received_ns ${INT} NOT NULL DEFAULT 0,
  PRIMARY KEY(product, id))${TABLE};
DROP INDEX IF EXISTS billing_events_by_time;
DROP INDEX IF EXISTS billing_events_by_customer;
CREATE INDEX IF NOT EXISTS billing_events_by_time_id ON billing_events(product, ts_ns, id);
CREATE INDEX IF NOT EXISTS billing_events_by_customer_id ON billing_events(product, user_id, ts_ns, id);
CREATE TABLE IF NOT EXISTS billable_metrics(
  product ${INT} NOT NULL,
  identifier TEXT NOT NULL,
  name TEXT NOT NULL,
  description TEXT NOT NULL,
  definition TEXT NOT NULL,
  locked TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  updated_ns ${INT} NOT NULL,
  PRIMARY KEY(product, identifier))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS indicator_billing(
  product ${INT} NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  metric TEXT NOT NULL,
  pricing TEXT NOT NULL,
  PRIMARY KEY(product, agent_id, indicator))${KEYED_TABLE};
CREATE INDEX IF NOT EXISTS indicator_billing_by_metric ON indicator_billing(product, metric);
CREATE TABLE IF NOT EXISTS profit_daily(
  product ${INT} NOT NULL,
  day ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  cost_events ${INT} NOT NULL,
  cost_nanos ${INT} NOT NULL,
  cost_unknown ${INT} NOT NULL,
  billing_events ${INT} NOT NULL,
  revenue_nanos ${INT} NOT NULL,
  revenue_known ${INT} NOT NULL,
  PRIMARY KEY(product, day, user_id, agent_id, indicator))${SUMS_TABLE};
CREATE TABLE IF NOT EXISTS usage_daily_by_model(
  product ${INT} NOT NULL,
  day ${INT} NOT NULL,
  model TEXT NOT NULL,
  calls ${INT} NOT NULL,
  input_tokens ${INT} NOT NULL,
  output_tokens ${INT} NOT NULL,
  cached_input_tokens ${INT} NOT NULL,
  cache_creation_input_tokens ${INT} NOT NULL,
  reasoning_tokens ${INT} NOT NULL,
  cost_nanos ${INT} NOT NULL,
  PRIMARY KEY(product, day, model))${SUMS_TABLE};
CREATE TABLE IF NOT EXISTS usage_daily_by_user(
  product ${INT} NOT NULL,
  day ${INT} NOT NULL,
  user_id TEXT NOT NULL,
  calls ${INT} NOT NULL,
  input_tokens ${INT} NOT NULL,
  output_tokens ${INT} NOT NULL,
  cached_input_tokens ${INT} NOT NULL,
  cache_creation_input_tokens ${INT} NOT NULL,
  reasoning_tokens ${INT} NOT NULL,
  cost_nanos ${INT} NOT NULL,
  PRIMARY KEY(product, day, user_id))${SUMS_TABLE};
CREATE TABLE IF NOT EXISTS usage_daily_by_provider(
  product ${INT} NOT NULL,
  day ${INT} NOT NULL,
  provider TEXT NOT NULL,
  calls ${INT} NOT NULL,
  input_tokens ${INT} NOT NULL,
  output_tokens ${INT} NOT NULL,
  cached_input_tokens ${INT} NOT NULL,
  cache_creation_input_tokens ${INT} NOT NULL,
  reasoning_tokens ${INT} NOT NULL,
  cost_nanos ${INT} NOT NULL,
  PRIMARY KEY(product, day, provider))${SUMS_TABLE};
CREATE TABLE IF NOT EXISTS dashboard_sessions(
  token_sha256 TEXT NOT NULL PRIMARY KEY,
  product ${INT} NOT NULL,
  customer_id TEXT NOT NULL,
  expires_ns ${INT} NOT NULL)${KEYED_TABLE};
CREATE INDEX IF NOT EXISTS dashboard_sessions_by_product ON dashboard_sessions(product, customer_id, expires_ns);
CREATE TABLE IF NOT EXISTS credit_wallets(
  product ${INT} NOT NULL,
  customer_id TEXT NOT NULL,
  granted TEXT NOT NULL,
  balance TEXT NOT NULL,
  used TEXT NOT NULL,
  overage TEXT NOT NULL,
  paid_usd TEXT NOT NULL,
  top_ups ${INT} NOT NULL,
  created_ns ${INT} NOT NULL,
  updated_ns ${INT} NOT NULL,
  PRIMARY KEY(product, customer_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS credit_top_ups(
  product ${INT} NOT NULL,
  customer_id TEXT NOT NULL,
  id TEXT NOT NULL,
  credits TEXT NOT NULL,
  paid_usd TEXT NOT NULL,
  created_ns ${INT} NOT NULL,
  PRIMARY KEY(product, customer_id, id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS credit_settle_pending(
  product ${INT} NOT NULL,
  customer_id TEXT NOT NULL,
  from_ts_ns ${INT} NOT NULL,
  version ${INT} NOT NULL,
  PRIMARY KEY(product, customer_id))${KEYED_TABLE};
CREATE TABLE IF NOT EXISTS credit_charges(
  product ${INT} NOT NULL,
  customer_id TEXT NOT NULL,
  indicator TEXT NOT NULL,
  period_start_ns ${INT} NOT NULL,
  period_end_ns ${INT} NOT NULL,
  charged TEXT NOT NULL,
  used TEXT NOT NULL,
  overage TEXT NOT NULL,
  PRIMARY KEY(product, customer_id, indicator, period_start_ns))${KEYED_TABLE};
)sql";

// The summed columns of one row of usage_daily or of the events, in Totals' order after calls.
constexpr std::string_view kRowColumns =
    "input_tokens, output_tokens, cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos";

// How many times a transaction the database aborted (serialization failure, deadlock) is tried.
constexpr int kTransactionAttempts = 8;

std::int64_t now_ns() { return absl::ToUnixNanos(absl::Now()); }

}  // namespace

std::string_view rollups_backfill_sql() {
  // usage_daily_by_model and usage_daily_by_user from usage_daily. profit_daily: the cost rows
  // first (the table is empty: no conflict), then the billing events onto them. "WHERE 1 = 1"
  // before ON CONFLICT: SQLite's parser needs a WHERE in an upsert's SELECT.
  return "INSERT INTO usage_daily_by_model(product, day, model, calls, input_tokens, output_tokens, "
         "cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos) "
         "SELECT product, day, model, SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), "
         "SUM(cache_creation_input_tokens), SUM(reasoning_tokens), SUM(cost_nanos) FROM usage_daily "
         "GROUP BY product, day, model;\n"
         "INSERT INTO usage_daily_by_user(product, day, user_id, calls, input_tokens, output_tokens, "
         "cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos) "
         "SELECT product, day, user_id, SUM(calls), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), "
         "SUM(cache_creation_input_tokens), SUM(reasoning_tokens), SUM(cost_nanos) FROM usage_daily "
         "GROUP BY product, day, user_id;\n"
         "INSERT INTO profit_daily(product, day, user_id, agent_id, indicator, cost_events, cost_nanos, cost_unknown, "
         "billing_events, revenue_nanos, revenue_known) "
         "SELECT product, ts_ns / 86400000000000, user_id, agent_id, indicator, COUNT(*), "
         "SUM(CASE WHEN cost_unknown = 0 THEN cost_nanos ELSE 0 END), SUM(cost_unknown), 0, 0, 0 FROM events "
         "WHERE kind <> 'billing' GROUP BY product, ts_ns / 86400000000000, user_id, agent_id, indicator;\n"
         "INSERT INTO profit_daily(product, day, user_id, agent_id, indicator, cost_events, cost_nanos, cost_unknown, "
         "billing_events, revenue_nanos, revenue_known) "
         "SELECT product, ts_ns / 86400000000000, user_id, agent_id, indicator, 0, 0, 0, COUNT(*), "
         "COALESCE(SUM(revenue_nanos), 0), COUNT(revenue_nanos) FROM billing_events WHERE 1 = 1 "
         "GROUP BY product, ts_ns / 86400000000000, user_id, agent_id, indicator "
         "ON CONFLICT(product, day, user_id, agent_id, indicator) DO UPDATE SET "
         "billing_events = excluded.billing_events, revenue_nanos = excluded.revenue_nanos, "
         "revenue_known = excluded.revenue_known;\n";
}

std::string_view provider_rollup_backfill_sql() {
  return "INSERT INTO usage_daily_by_provider(product, day, provider, calls, input_tokens, output_tokens, "
         "cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, cost_nanos) "
         "SELECT product, ts_ns / 86400000000000, provider, COUNT(*), SUM(input_tokens), SUM(output_tokens), "
         "SUM(cached_input_tokens), SUM(cache_creation_input_tokens), SUM(reasoning_tokens), SUM(cost_nanos) "
         "FROM events WHERE kind <> 'billing' GROUP BY product, ts_ns / 86400000000000, provider;\n";
}

std::string_view billing_event_tags_backfill_sql() {
  return "UPDATE billing_events SET meta_tags = e.meta_tags, received_ns = e.received_ns FROM events e "
         "WHERE e.product = billing_events.product AND e.id = billing_events.id;\n";
}

std::string sql_schema(const SqlDialect& dialect) {
  using Replacements = std::vector<std::pair<absl::string_view, absl::string_view>>;
  auto view = [](std::string_view s) { return absl::string_view(s.data(), s.size()); };
  const std::string int_type = str_cat(" ", dialect.integer_type(), " ");
  const std::string event_columns =
      absl::StrReplaceAll(::paygent::internal::event_column_definitions(), Replacements{{" INTEGER ", int_type}});
  const std::string schema_template = str_cat(kSchemaTemplate, webhooks_schema_template());
  return absl::StrReplaceAll(schema_template, Replacements{{"${EVENT_COLUMNS}", event_columns},
                                                                 {"${INT}", view(dialect.integer_type())},
                                                                 {"${BLOB}", view(dialect.blob_type())},
                                                                 {"${KEY}", view(dialect.key_column())},
                                                                 {"${KEYED_TABLE}", view(dialect.keyed_table_options())},
                                                                 {"${SUMS_TABLE}", view(dialect.sums_table_options())},
                                                                 {"${TABLE}", view(dialect.table_options())}});
}

Query& Query::bind_event(int first, const EventRecord& e) {
  int i = first;
  for (const auto& f : kEventFields) {
    switch (f.type) {
      case EventFieldType::kId: continue;  // not a payload column
      case EventFieldType::kText:
      case EventFieldType::kMetaTags: bind(i, std::string_view(e.*f.text)); break;
      case EventFieldType::kCount: bind(i, e.*f.count); break;
      case EventFieldType::kBool: bind(i, std::int64_t{e.*f.flag ? 1 : 0}); break;
      case EventFieldType::kKind: bind(i, ::paygent::internal::usage_kind_name(e.kind)); break;
    }
    ++i;
  }
  return *this;
}

absl::Status select_in(SqlConnection& connection, std::string_view sql_head, std::int64_t product,
                       std::span<const std::string_view> ids, std::size_t per_query, std::string_view what,
                       absl::FunctionRef<void(const Query&)> row) {
  for (std::size_t at = 0; at < ids.size(); at += per_query) {
    const std::size_t n = std::min(per_query, ids.size() - at);
    std::string sql(sql_head);
    sql += "(";
    for (std::size_t i = 0; i < n; ++i) ::paygent::internal::str_append(&sql, i ? ", ?" : "?", i + 2);
    sql += ")";
    absl::StatusOr<Query> select = prepare(connection, sql);
    if (!select.ok()) return select.status();
    select->bind(1, product);
    for (std::size_t i = 0; i < n; ++i) select->bind(static_cast<int>(i + 2), ids[at + i]);
    for (;;) {
      absl::StatusOr<bool> next = select->step(what);
      if (!next.ok()) return next.status();
      if (!*next) break;
      row(*select);
    }
  }
  return absl::OkStatus();
}

absl::Status run_in_transaction(SqlConnection& connection, std::string_view begin,
                                absl::FunctionRef<absl::Status(SqlConnection&)> fn) {
  if (absl::Status s = connection.exec(begin); !s.ok()) return s;
  connection.discard_deferred();  // what an earlier transaction left (it was rolled back)
  absl::Status result;
  try {
    result = fn(connection);
    if (result.ok()) result = connection.flush_deferred();
  } catch (...) {
    // An exception (bad_alloc) must not leave the connection in the transaction: on SQLite
    // that is the one writer, and every later write would fail until a restart.
    connection.discard_deferred();
    if (connection.in_transaction()) static_cast<void>(connection.exec("ROLLBACK"));
    throw;
  }
  connection.discard_deferred();
  if (result.ok()) result = connection.exec("COMMIT");
  // A failed COMMIT may leave the transaction open (SQLite's SQLITE_BUSY): rolled back, so
  // that nothing of it stays.
  if (!result.ok() && connection.in_transaction()) static_cast<void>(connection.exec("ROLLBACK"));
  return result;
}

absl::Status SqlStorage::transaction(Access access, bool write, absl::FunctionRef<absl::Status(SqlConnection&)> fn,
                                     bool defers) {
  if (write && access == Access::kWrite) return write_transaction(fn, defers);
  return transaction_alone(access, write, fn);
}

absl::Status SqlStorage::write_transaction(absl::FunctionRef<absl::Status(SqlConnection&)> fn, bool) {
  return transaction_alone(Access::kWrite, true, fn);
}

absl::Status SqlStorage::transaction_alone(Access access, bool write,
                                           absl::FunctionRef<absl::Status(SqlConnection&)> fn) {
  absl::Status status;
  for (int attempt = 1; attempt <= kTransactionAttempts; ++attempt) {
    status = with_connection(access, [&](SqlConnection& connection) -> absl::Status {
      return run_in_transaction(connection, write ? dialect_.begin_write() : dialect_.begin_read(), fn);
    });
    if (!absl::IsAborted(status)) return status;
  }
  return absl::UnavailableError(str_cat("gave up after ", kTransactionAttempts, " attempts: ", status.message()));
}

absl::StatusOr<std::optional<std::int64_t>> SqlStorage::product_key(SqlConnection& connection,
                                                                    std::string_view product_id) {
  {
    absl::MutexLock lock(&keys_mu_);
    if (auto it = product_keys_.find(absl::string_view(product_id.data(), product_id.size()));
        it != product_keys_.end()) {
      return std::optional<std::int64_t>(it->second);
    }
  }
  absl::StatusOr<Query> select = prepare(connection, "SELECT pk FROM products WHERE id = ?1");
  if (!select.ok()) return select.status();
  select->bind(1, product_id);
  absl::StatusOr<bool> row = select->step("find product");
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<std::int64_t>();
  const std::int64_t pk = select->int64(0);
  absl::MutexLock lock(&keys_mu_);
  product_keys_.emplace(std::string(product_id), pk);  // products are never deleted
  return std::optional<std::int64_t>(pk);
}

absl::StatusOr<std::int64_t> SqlStorage::existing_product_key(SqlConnection& connection, std::string_view product_id) {
  absl::StatusOr<std::optional<std::int64_t>> pk = product_key(connection, product_id);
  if (!pk.ok()) return pk.status();
  if (!pk->has_value()) return absl::NotFoundError(str_cat("no product \"", product_id, "\""));
  return **pk;
}

absl::Status SqlStorage::create_product(std::string_view product_id, std::string_view name,
                                        std::string_view key_sha256) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<Query> insert = prepare(
        connection, "INSERT INTO products(id, name, key_sha256, created_ns) VALUES(?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING");
    if (!insert.ok()) return insert.status();
    insert->bind(1, product_id).bind(2, name).bind(3, key_sha256).bind(4, now_ns());
    if (absl::Status s = insert->run("create product"); !s.ok()) return s;
    if (insert->changes() == 0) return absl::AlreadyExistsError("the product id or key is already taken");
    // Its totals row from the start: ingest locks it rather than racing to create it.
    absl::StatusOr<Query> totals = prepare(
        connection,
        "INSERT INTO product_totals(product, calls, input_tokens, output_tokens, cached_input_tokens, "
        "cache_creation_input_tokens, reasoning_tokens, cost_nanos) SELECT pk, 0, 0, 0, 0, 0, 0, 0 FROM products "
        "WHERE id = ?1 ON CONFLICT(product) DO NOTHING");
    if (!totals.ok()) return totals.status();
    totals->bind(1, product_id);
    return totals->run("create product totals");
  });
}

absl::StatusOr<std::string> SqlStorage::find_product_by_key(std::string_view key_sha256) {
  std::string id;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<Query> select = prepare(connection, "SELECT id FROM products WHERE key_sha256 = ?1");
    if (!select.ok()) return select.status();
    select->bind(1, key_sha256);
    absl::StatusOr<bool> row = select->step("find product");
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError("no product has this key");
    id = select->text(0);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return id;
}

absl::Status SqlStorage::create_user(std::string_view product_id, std::string_view user_id, std::string_view name) {
  return with_connection(Access::kWrite, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<Query> insert = prepare(connection,
                                           "INSERT INTO users(product, user_id, name, created_ns) VALUES(?1, ?2, ?3, ?4) "
                                           "ON CONFLICT(product, user_id) DO NOTHING");
    if (!insert.ok()) return insert.status();
    insert->bind(1, *product).bind(2, user_id).bind(3, name).bind(4, now_ns());
    if (absl::Status s = insert->run("create user"); !s.ok()) return s;
    if (insert->changes() == 0) return absl::AlreadyExistsError(str_cat("user \"", user_id, "\" already exists"));
    return absl::OkStatus();
  });
}

absl::StatusOr<UserRecord> SqlStorage::find_user(std::string_view product_id, std::string_view user_id) {
  std::optional<UserRecord> user;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<std::optional<UserRecord>> found = find_user_in(connection, **product, user_id);
    if (!found.ok()) return found.status();
    user = *std::move(found);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (!user) return absl::NotFoundError(str_cat("no user \"", user_id, "\""));
  return *std::move(user);
}

absl::StatusOr<std::optional<UserRecord>> SqlStorage::find_user_in(SqlConnection& connection, std::int64_t product,
                                                                   std::string_view user_id) {
  absl::StatusOr<Query> select =
      prepare(connection,
              "SELECT u.name, s.plan, s.period_start_ns, s.period_end_ns FROM users u LEFT JOIN subscriptions s "
              "ON s.product = u.product AND s.user_id = u.user_id WHERE u.product = ?1 AND u.user_id = ?2");
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(2, user_id);
  absl::StatusOr<bool> row = select->step("find user");
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<UserRecord>();
  return std::optional<UserRecord>(
      UserRecord{.user_id = std::string(user_id), .name = select->text(0), .subscription = select->subscription_at(1)});
}

absl::Status SqlStorage::set_subscription(std::string_view product_id, std::string_view user_id,
                                          const Subscription& subscription) {
  return with_connection(Access::kWrite, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    // One statement, so that the user check and the write are atomic without a transaction.
    absl::StatusOr<Query> upsert = prepare(
        connection,
        "INSERT INTO subscriptions(product, user_id, plan, period_start_ns, period_end_ns, updated_ns) "
        "SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE product = ?1 AND user_id = ?2) "
        "ON CONFLICT(product, user_id) DO UPDATE SET plan = excluded.plan, "
        "period_start_ns = excluded.period_start_ns, period_end_ns = excluded.period_end_ns, "
        "updated_ns = excluded.updated_ns");
    if (!upsert.ok()) return upsert.status();
    upsert->bind(1, *product)
        .bind(2, user_id)
        .bind(3, subscription.plan)
        .bind(4, subscription.period_start_ns)
        .bind(5, subscription.period_end_ns)
        .bind(6, now_ns());
    if (absl::Status s = upsert->run("set subscription"); !s.ok()) return s;
    if (upsert->changes() == 0) return absl::NotFoundError(str_cat("no user \"", user_id, "\""));
    return absl::OkStatus();
  });
}

absl::Status SqlStorage::put_plan_config(std::string_view product_id, std::string_view config_json) {
  return with_connection(Access::kWrite, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    // updated_ns is the config's revision (plan_config_revision()): it must grow at every put,
    // even one in the same nanosecond as the last, or made by a process whose clock is behind.
    static const std::string kSql =
        "INSERT INTO plans(product, config_json, updated_ns) VALUES(?1, ?2, ?3) "
        "ON CONFLICT(product) DO UPDATE SET config_json = excluded.config_json, updated_ns = ";
    absl::StatusOr<Query> upsert =
        prepare(connection, str_cat(kSql, dialect_.greatest(), "(excluded.updated_ns, plans.updated_ns + 1)"));
    if (!upsert.ok()) return upsert.status();
    upsert->bind(1, *product).bind(2, config_json).bind(3, std::max<std::int64_t>(1, now_ns()));
    return upsert->run("put plans");
  });
}

absl::Status SqlStorage::read_plans_row(std::string_view product_id, std::string_view select_sql,
                                        std::string_view what, absl::FunctionRef<void(Query&)> take) {
  return with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(connection, select_sql);
    if (!select.ok()) return select.status();
    select->bind(1, **product);
    absl::StatusOr<bool> row = select->step(what);
    if (!row.ok()) return row.status();
    if (*row) take(*select);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::int64_t> SqlStorage::plan_config_revision(std::string_view product_id) {
  std::int64_t revision = 0;
  // From the index plans_revision alone: in the row, updated_ns follows the config (up to 1 MiB),
  // and reading it there walks the config's overflow pages (on SQLite, a reader connection whose
  // cache another connection's commit emptied reads them all again). SQLite looks a product up by
  // its rowid for "product = ?1"; a range and that order make it read the covering index.
  absl::Status status = read_plans_row(product_id,
                                       "SELECT updated_ns FROM plans WHERE product >= ?1 AND product <= ?1 "
                                       "ORDER BY product, updated_ns",
                                       "read plans revision", [&](Query& row) { revision = row.int64(0); });
  if (!status.ok()) return status;
  return revision;
}

absl::StatusOr<std::optional<std::string>> SqlStorage::plan_config(std::string_view product_id) {
  std::optional<std::string> config;
  absl::Status status = read_plans_row(product_id, "SELECT config_json FROM plans WHERE product = ?1", "read plans",
                                       [&](Query& row) { config = row.text(0); });
  if (!status.ok()) return status;
  return config;
}

absl::Status SqlStorage::with_user_locks(std::string_view product_id, std::span<const std::string_view> user_ids,
                                         absl::FunctionRef<absl::Status(SqlConnection&, std::int64_t)> fn,
                                         bool defers) {
  std::vector<std::string_view> sorted(user_ids.begin(), user_ids.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    // The users' locks first, in their global order: `fn` touches only their rows, and then the
    // product's totals row, which every writer takes last.
    if (absl::Status s = dialect_.lock_users(connection, *product, sorted); !s.ok()) return s;
    return fn(connection, *product);
  }, defers);
}

// The product's row of product_totals. A product without one (its events were stored by a
// paygentd from before that table) gets the sums of its usage_daily rows, summed here with
// checked arithmetic: SQL's SUM() would fail on a history that already passes int64, which then
// saturates at the largest value (so that nothing more can be added, and every read that can
// still answer does).
absl::StatusOr<Totals> SqlStorage::product_totals(SqlConnection& connection, std::int64_t product) {
  {
    absl::StatusOr<Query> select = prepare(
        connection, str_cat("SELECT calls, ", kRowColumns, " FROM product_totals WHERE product = ?1", dialect_.for_update()));
    if (!select.ok()) return select.status();
    select->bind(1, product);
    absl::StatusOr<bool> row = select->step("read product totals");
    if (!row.ok()) return row.status();
    if (*row) return select->totals_at(0);
  }
  absl::StatusOr<Query> select =
      prepare(connection, str_cat("SELECT calls, ", kRowColumns, " FROM usage_daily WHERE product = ?1"));
  if (!select.ok()) return select.status();
  select->bind(1, product);
  Totals totals;
  for (;;) {
    absl::StatusOr<bool> row = select->step("sum product totals");
    if (!row.ok()) return row.status();
    if (!*row) return totals;
    storage_internal::add_saturating(totals, select->totals_at(0));
  }
}

// Reads what find_user() and report() (by model, over the user's period) would give, for the
// batch's users at once: a batch has ~100 users, and the two or three queries per user that
// report() makes cost more than storing the batch. The users are passed as the dialect's
// batch_users() (idx: their index in `user_ids` and `out`); one query reads them all with their
// subscriptions. Users without a subscription share one period (the calendar month): for that
// period, one query reads all their whole days from usage_daily, and one for each partial day at
// its ends their events. A user whose period differs (a subscription's) is read by report_in() on
// their own.
//
// The rows are summed here rather than by GROUP BY: SQLite would first sort them by model (in
// neither index's order), which costs more than the sums (~40% of the read, per callgrind).
absl::Status SqlStorage::read_usage(SqlConnection& connection, std::int64_t product,
                                    std::span<const std::string_view> user_ids, PeriodOf period_of,
                                    std::vector<UserUsage>& out) {
  if (user_ids.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> users = dialect_.users_parameter(connection, user_ids);
  if (!users.ok()) return users.status();

  out.reserve(user_ids.size());
  {
    absl::StatusOr<Query> select =
        prepare(connection, str_cat("SELECT b.idx, u.name, s.plan, s.period_start_ns, s.period_end_ns FROM ",
                                    dialect_.batch_users(), " b ", dialect_.join_in_order(),
                                    " users u ON u.product = ?1 AND u.user_id = b.user_id "
                                    "LEFT JOIN subscriptions s ON s.product = ?1 AND s.user_id = b.user_id "
                                    "ORDER BY b.idx"));
    if (!select.ok()) return select.status();
    select->bind(1, product).bind(4, *users);
    for (;;) {
      absl::StatusOr<bool> row = select->step("find users");
      if (!row.ok()) return row.status();
      if (!*row) break;
      // A user missing here (each was created or found by this transaction) is one skipped idx.
      if (select->int64(0) != static_cast<std::int64_t>(out.size())) break;
      out.push_back(UserUsage{.user = UserRecord{.user_id = std::string(user_ids[out.size()]),
                                                 .name = select->text(1),
                                                 .subscription = select->subscription_at(2)}});
    }
    if (out.size() != user_ids.size()) {
      return absl::InternalError(str_cat("ingest: user \"", user_ids[out.size()], "\" not found after creation"));
    }
  }

  // The period most users have.
  std::map<std::pair<std::int64_t, std::int64_t>, std::size_t> users_by_period;
  for (UserUsage& usage : out) {
    usage.period = period_of(usage.user);
    ++users_by_period[{usage.period.from_ns, usage.period.to_ns}];
  }
  const auto most = std::max_element(users_by_period.begin(), users_by_period.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; });
  const TimeRange shared{.from_ns = most->first.first, .to_ns = most->first.second};

  if (shared.from_ns < shared.to_ns && shared.from_ns >= 0) {
    // As report_in() splits a period. Every batch user's rows are read; those of users with
    // another period are skipped.
    const std::string daily_sql =
        str_cat("SELECT b.idx, d.model, d.calls, ", kRowColumns, " FROM ", dialect_.batch_users(), " b ",
                dialect_.join_in_order(),
                " usage_daily d ON d.product = ?1 AND d.user_id = b.user_id AND d.day >= ?2 AND d.day < ?3");
    const std::string events_sql =
        str_cat("SELECT b.idx, e.model, 1, ", kRowColumns, " FROM ", dialect_.batch_users(), " b ",
                dialect_.join_in_order(),
                " events e ON e.product = ?1 AND e.user_id = b.user_id AND e.ts_ns >= ?2 AND e.ts_ns < ?3 AND e.kind <> 'billing'");
    const DaySplit split = split_days(shared.from_ns, shared.to_ns);
    const std::tuple<const std::string*, std::int64_t, std::int64_t> reads[] = {
        {&daily_sql, split.first_day, split.end_day},
        {&events_sql, split.head.from_ns, split.head.to_ns},
        {&events_sql, split.tail.from_ns, split.tail.to_ns}};
    for (const auto& [sql, from, to] : reads) {
      if (from >= to) continue;
      absl::StatusOr<Query> select = prepare(connection, *sql);
      if (!select.ok()) return select.status();
      select->bind(1, product).bind(2, from).bind(3, to).bind(4, *users);
      if (absl::Status s = add_usage_rows(*select, shared, out); !s.ok()) return s;
    }
  }
  for (UserUsage& usage : out) {
    if (usage.period == shared) continue;
    const ReportQuery query{.from_ns = usage.period.from_ns,
                            .to_ns = usage.period.to_ns,
                            .group_by = ReportGroup::kModel,
                            .user_id = usage.user.user_id};
    if (absl::Status s = report_in(connection, product, query, usage.models); !s.ok()) return s;
  }
  return read_soft_gates(connection, product, *users, out);
}

absl::Status SqlStorage::store_soft_gates(SqlConnection& connection, std::int64_t product,
                                          std::span<const SoftGateFired> soft_gates) {
  for (const bool hard : {false, true}) {
    std::vector<const SoftGateFired*> rows;
    for (const SoftGateFired& g : soft_gates) {
      if (g.hard == hard) rows.push_back(&g);
    }
    if (rows.empty()) continue;
    absl::Status s = insert_rows(
        connection,
        hard ? "INSERT INTO hard_gates(product, user_id, limit_key, period_start_ns, threshold_ppm, fired_ns)"
             : "INSERT INTO soft_gates(product, user_id, limit_key, period_start_ns, threshold_ppm)",
        hard ? 6 : 5, rows.size(), "ON CONFLICT(product, user_id, period_start_ns, limit_key, threshold_ppm) DO NOTHING",
        hard ? "store hard gates" : "store soft gates", [&](Query& insert, int first, std::size_t i) {
          const SoftGateFired& g = *rows[i];
          insert.bind(first, product)
              .bind(first + 1, std::string_view(g.user_id))
              .bind(first + 2, std::string_view(g.limit_key))
              .bind(first + 3, g.period_start_ns)
              .bind(first + 4, g.threshold_ppm);
          if (hard) insert.bind(first + 5, g.fired_ns);
        });
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {

// UserUsage::soft_gates' order in SQL (for which rows are kept; order_soft_gates() then orders
// them byte-wise in C++, whatever the database's collation).
constexpr std::string_view kSoftGateOrder =
    "CASE WHEN substr(g.limit_key, 1, 14) = 'session_spend:' THEN 1 ELSE 0 END, g.period_start_ns DESC, "
    "g.limit_key, g.threshold_ppm";

// A user's soft gates in the order UserUsage::soft_gates promises: period limits first, then
// sessions, most recently started first (then by limit and threshold), at most kMaxUsageSoftGates.
void order_soft_gates(std::vector<SoftGateFired>& gates) {
  auto is_session = [](const SoftGateFired& g) { return g.limit_key.starts_with("session_spend:"); };
  std::sort(gates.begin(), gates.end(), [&](const SoftGateFired& a, const SoftGateFired& b) {
    if (is_session(a) != is_session(b)) return !is_session(a);
    if (a.period_start_ns != b.period_start_ns) return a.period_start_ns > b.period_start_ns;
    if (a.limit_key != b.limit_key) return a.limit_key < b.limit_key;
    return a.threshold_ppm < b.threshold_ppm;
  });
  if (gates.size() > kMaxUsageSoftGates) gates.resize(kMaxUsageSoftGates);
}

}  // namespace

absl::Status SqlStorage::read_soft_gates(SqlConnection& connection, std::int64_t product,
                                         const std::string& users_parameter, std::vector<UserUsage>& out) {
  if (out.empty()) return absl::OkStatus();
  // One read for every user, over the span of their periods; each user keeps those of its own.
  std::int64_t from_ns = out.front().period.from_ns, to_ns = out.front().period.to_ns;
  for (const UserUsage& usage : out) {
    from_ns = std::min(from_ns, usage.period.from_ns);
    to_ns = std::max(to_ns, usage.period.to_ns);
  }
  // At most kMaxUsageSoftGates rows a user, picked in the database in the order the reply keeps
  // (a client can store any number of session thresholds; reading them all would hold the
  // ingest's write transaction as long as it takes).
  absl::StatusOr<Query> select = prepare(
      connection,
      str_cat("SELECT idx, limit_key, period_start_ns, threshold_ppm FROM (SELECT b.idx AS idx, g.limit_key AS "
              "limit_key, g.period_start_ns AS period_start_ns, g.threshold_ppm AS threshold_ppm, ROW_NUMBER() "
              "OVER (PARTITION BY b.idx ORDER BY ",
              kSoftGateOrder, ") AS n FROM ", dialect_.batch_users(), " b ", dialect_.join_in_order(),
              " soft_gates g ON g.product = ?1 AND g.user_id = b.user_id "
              "AND g.period_start_ns >= ?2 AND g.period_start_ns < ?3) ranked WHERE n <= ?5"));
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(2, from_ns).bind(3, to_ns).bind(4, users_parameter)
      .bind(5, static_cast<std::int64_t>(kMaxUsageSoftGates));
  for (;;) {
    absl::StatusOr<bool> row = select->step("read soft gates");
    if (!row.ok()) return row.status();
    if (!*row) break;
    const std::int64_t idx = select->int64(0);
    if (idx < 0 || idx >= static_cast<std::int64_t>(out.size())) return absl::InternalError("soft gates: bad user index");
    UserUsage& usage = out[static_cast<std::size_t>(idx)];
    const std::int64_t start = select->int64(2);
    if (start < usage.period.from_ns || start >= usage.period.to_ns) continue;
    usage.soft_gates.push_back(SoftGateFired{usage.user.user_id, select->text(1), start, select->int64(3)});
  }
  for (UserUsage& usage : out) order_soft_gates(usage.soft_gates);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SoftGateFired>> SqlStorage::soft_gates_fired(std::string_view product_id,
                                                                        std::string_view user_id, TimeRange period) {
  return gates_fired(product_id, user_id, period, /*hard=*/false);
}

absl::StatusOr<std::vector<SoftGateFired>> SqlStorage::hard_gates_fired(std::string_view product_id,
                                                                        std::string_view user_id, TimeRange period) {
  return gates_fired(product_id, user_id, period, /*hard=*/true);
}

absl::StatusOr<std::vector<SoftGateFired>> SqlStorage::gates_fired(std::string_view product_id, std::string_view user_id,
                                                                   TimeRange period, bool hard) {
  std::vector<SoftGateFired> out;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(
        connection,
        str_cat("SELECT g.limit_key, g.period_start_ns, g.threshold_ppm, ", hard ? "g.fired_ns" : "0", " FROM ",
                hard ? "hard_gates" : "soft_gates",
                " g WHERE g.product = ?1 AND g.user_id = ?2 AND g.period_start_ns >= ?3 AND g.period_start_ns < ?4 "
                "ORDER BY ", kSoftGateOrder, " LIMIT ?5"));
    if (!select.ok()) return select.status();
    select->bind(1, **product).bind(2, user_id).bind(3, period.from_ns).bind(4, period.to_ns)
        .bind(5, static_cast<std::int64_t>(kMaxUsageSoftGates));
    for (;;) {
      absl::StatusOr<bool> row = select->step(hard ? "read hard gates" : "read soft gates");
      if (!row.ok()) return row.status();
      if (!*row) break;
      out.push_back(SoftGateFired{std::string(user_id), select->text(0), select->int64(1), select->int64(2), hard,
                                  select->int64(3)});
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  order_soft_gates(out);
  return out;
}

absl::Status SqlStorage::add_usage_rows(Query& select, const TimeRange& period, std::vector<UserUsage>& out) {
  for (;;) {
    absl::StatusOr<bool> row = select.step("read usage");
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    const std::int64_t idx = select.int64(0);
    if (idx < 0 || idx >= static_cast<std::int64_t>(out.size())) {
      return absl::InternalError("read usage: bad user index");
    }
    UserUsage& usage = out[static_cast<std::size_t>(idx)];
    if (usage.period != period) continue;
    const std::string_view model = select.text_view(1);
    auto it = usage.models.find(model);
    if (it == usage.models.end()) it = usage.models.emplace(std::string(model), Totals{}).first;
    if (!add_totals(it->second, select.totals_at(2))) {
      return absl::InternalError(str_cat("report: the totals of \"", model, "\" overflow int64"));
    }
  }
}

absl::StatusOr<std::vector<UserUsage>> SqlStorage::usage_of(std::string_view product_id,
                                                            std::span<const std::string> user_ids, PeriodOf period_of) {
  std::vector<std::string_view> sorted(user_ids.begin(), user_ids.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<UserUsage> out;
  // One read transaction: every user's record and totals as of one moment.
  absl::Status status = transaction(Access::kWrite, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    // read_usage() reads users that exist: the product's among them first.
    absl::StatusOr<Query> exists = prepare(connection, "SELECT 1 FROM users WHERE product = ?1 AND user_id = ?2");
    if (!exists.ok()) return exists.status();
    std::vector<std::string_view> known;
    for (std::string_view id : sorted) {
      exists->bind(1, **product).bind(2, id);
      absl::StatusOr<bool> row = exists->step("find users");
      if (!row.ok()) return row.status();
      if (*row) known.push_back(id);
      exists->reset();
    }
    return read_usage(connection, **product, known, period_of, out);
  });
  if (!status.ok()) return status;
  return out;
}

}  // namespace paygent::server
