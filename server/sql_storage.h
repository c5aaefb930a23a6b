// SqlStorage: the one SQL implementation of Storage (server/storage.h), for every database.
//
// Layout (sql_schema()): products, users, subscriptions, plans, events, usage_daily,
// product_totals, soft_gates, leases (sql_leases.cpp), customers, voice_sessions and
// idempotency_keys (sql_tracking.cpp), agents and billing_events (sql_agents.cpp), billable_metrics
// and indicator_billing (sql_metrics.cpp), every row keyed by its product's integer key (products.pk). Events are keyed by
// (product, event id), so a duplicate id is ignored by INSERT ... ON CONFLICT DO NOTHING, also when
// the same batch reaches two replicas. Beside the events, usage_daily keeps sums per (product,
// user, UTC day, model), written in the same transaction as the events they sum; a usage query
// over a period reads the whole days from it and only the partial days at the edges from the
// events (index (product, user_id, ts_ns)), so its cost does not grow with a user's number of calls.
//
// Overflow: product_totals keeps each product's all-time sums, written in the same transaction as
// the events. A batch that would take one of them past int64 is refused whole (InvalidArgument
// naming events[i].field and its user). Every sum a read computes is a sum over part of a
// product's events, so none can overflow (PostgreSQL's SUM of bigints is a numeric: it is read as
// its decimal text into an int64, which therefore always fits).
//
// Transactions: every write is one transaction. An ingest takes its users' locks in one global
// order (with_user_locks(), SqlDialect::lock_users) before it writes anything, then the product's
// totals row last, so that writers on several replicas queue rather than deadlock; a transaction
// that the database still aborts (serialization failure, deadlock) is retried whole a few times.
// Reports are in sql_report.cpp, the ingest's write in sql_ingest.cpp.
//
// Plan configs: plans.updated_ns is the config's revision, grown at every put (also by another
// process on the same database), so that a reader can keep the parsed config until it changes.
//
// What differs per database is in its SqlDialect and in how a subclass hands out connections
// (SqliteStorage: one writer connection under a mutex plus readers; PostgresStorage: a pool).
//
// Thread safety: safe for concurrent use from many threads, as far as the subclass's
// with_connection() is.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "simdjson.h"
#include "server/sql.h"
#include "server/storage.h"
#include "server/storage_logic.h"

namespace paygent::server {

// A row of profit_daily_by_tag (sql_tags.cpp): (tag key, UTC day, tag value) and its six sums in
// the order of the table's columns (cost_events, cost_nanos, cost_unknown, billing_events,
// revenue_nanos, revenue_known).
using TagKey = std::tuple<std::string, std::int64_t, std::string>;
using TagSums = std::array<std::int64_t, 6>;
using TagRows = std::map<TagKey, TagSums>;

// The values of `keys` in `meta_tags` (a stored event's JSON object of strings) into `out`, ""
// for a key it does not hold (sql_tags.cpp). Internal when the text is not a JSON object.
absl::Status meta_tag_values(simdjson::dom::parser& parser, std::string_view meta_tags,
                             std::span<const std::string> keys, std::vector<std::string>& out);

class SqlStorage : public Storage {
 public:
  absl::Status create_product(std::string_view product_id, std::string_view name,
                              std::string_view key_sha256) final;
  absl::StatusOr<std::string> find_product_by_key(std::string_view key_sha256) final;
  absl::Status create_user(std::string_view product_id, std::string_view user_id, std::string_view name) final;
  absl::StatusOr<UserRecord> find_user(std::string_view product_id, std::string_view user_id) final;
  absl::StatusOr<std::vector<UserRecord>> find_users(std::string_view product_id,
                                                     std::span<const std::string_view> user_ids) final;
  absl::Status set_subscription(std::string_view product_id, std::string_view user_id,
                                const Subscription& subscription) final;
  absl::Status put_plan_config(std::string_view product_id, std::string_view config_json) final;
  absl::StatusOr<std::optional<std::string>> plan_config(std::string_view product_id) final;
  absl::StatusOr<std::int64_t> plan_config_revision(std::string_view product_id) final;
  absl::StatusOr<IngestResult> ingest(std::string_view product_id, std::span<const EventRecord> events) final;
  absl::StatusOr<IngestResult> ingest_with_usage(std::string_view product_id, std::span<const EventRecord> events,
                                                 PeriodOf period_of, std::span<const SoftGateFired> soft_gates) final;
  absl::StatusOr<std::vector<SoftGateFired>> soft_gates_fired(std::string_view product_id, std::string_view user_id,
                                                              TimeRange period) final;
  absl::StatusOr<std::vector<SoftGateFired>> hard_gates_fired(std::string_view product_id, std::string_view user_id,
                                                              TimeRange period) final;
  absl::StatusOr<std::vector<UserUsage>> usage_of(std::string_view product_id, std::span<const std::string> user_ids,
                                                  PeriodOf period_of) final;
  absl::StatusOr<GroupedTotals> report(std::string_view product_id, const ReportQuery& query) final;
  // In sql_leases.cpp: the leases table, keyed by (product, user_id, limit_key, period_start_ns, holder).
  absl::StatusOr<std::vector<LeaseGrant>> grant_leases(std::string_view product_id, std::string_view holder,
                                                       std::span<const LeaseRequest> requests, std::int64_t now_ns,
                                                       std::int64_t ttl_ns) final;
  // In sql_tracking.cpp: the tracking API's customers and voice sessions.
  absl::StatusOr<CustomerRecord> create_or_get_customer(std::string_view product_id, std::string_view external_id,
                                                        std::string_view name, std::string_view email) final;
  absl::StatusOr<bool> open_voice_session(std::string_view product_id, const VoiceSession& session) final;
  absl::StatusOr<VoiceSession> find_voice_session(std::string_view product_id, std::string_view session_id) final;
  absl::StatusOr<IngestResult> close_voice_session(std::string_view product_id, std::string_view session_id,
                                                   const EventRecord& billing) final;
  absl::Status claim_idempotency_key(std::string_view product_id, std::string_view key_sha256,
                                     std::string_view body_sha256) final;
  absl::StatusOr<bool> has_event(std::string_view product_id, std::string_view event_id) final;

  // In sql_agents.cpp: agents, agent_indicators and indicator_rates.
  absl::StatusOr<bool> put_agent(std::string_view product_id, const AgentRecord& agent) final;
  absl::StatusOr<std::vector<AgentRecord>> list_agents(std::string_view product_id) final;
  absl::StatusOr<AgentRecord> find_agent(std::string_view product_id, std::string_view agent_id) final;
  absl::Status delete_agent(std::string_view product_id, std::string_view agent_id) final;
  // In sql_metrics.cpp: billable_metrics, indicator_billing (an indicator's metric and pricing)
  // and the billing events of an invoice.
  absl::Status create_metric(std::string_view product_id, const MetricRecord& metric) final;
  absl::StatusOr<bool> update_metric(std::string_view product_id, const MetricRecord& metric) final;
  absl::StatusOr<std::vector<MetricRecord>> list_metrics(std::string_view product_id) final;
  absl::StatusOr<MetricRecord> find_metric(std::string_view product_id, std::string_view identifier) final;
  absl::Status delete_metric(std::string_view product_id, std::string_view identifier) final;
  absl::Status scan_product_billing_events(std::string_view product_id, TimeRange range,
                                           absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) final;
  absl::Status scan_billing_events(std::string_view product_id, std::string_view customer_id, TimeRange range,
                                   absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) final;
  // In sql_wallets.cpp: credit_wallets (one row per wallet: its running totals), credit_top_ups
  // and credit_charges (the ledger: one row per customer, CREDITS indicator and billing period).
  absl::StatusOr<TopUpResult> top_up_wallet(std::string_view product_id, std::string_view customer_id,
                                            const TopUpRecord& top_up, std::int64_t now_ns) final;
  absl::StatusOr<std::vector<WalletRecord>> find_wallets(std::string_view product_id,
                                                         std::span<const std::string_view> customer_ids) final;
  absl::StatusOr<std::vector<TopUpRecord>> list_top_ups(std::string_view product_id, std::string_view customer_id,
                                                        std::size_t limit) final;
  absl::StatusOr<std::optional<WalletRecord>> settle_wallet(std::string_view product_id, std::string_view customer_id,
                                                            TimeRange period, std::int64_t now_ns,
                                                            CreditsOf credits_of) final;
  absl::StatusOr<std::vector<WalletCharge>> wallet_charges(std::string_view product_id, std::string_view customer_id,
                                                           TimeRange period) final;
  absl::StatusOr<std::optional<SettlePending>> wallet_settle_pending(std::string_view product_id,
                                                                     std::string_view customer_id) final;
  absl::Status clear_wallet_settle_pending(std::string_view product_id, std::string_view customer_id,
                                           std::int64_t version) final;
  // In sql_webhooks.cpp: webhook_endpoints, webhook_alerts (one row per alert key: the dedup) and
  // webhook_deliveries (the outbox: one row per alert and endpoint, written in the transaction
  // of the ingest that raised the alert).
  absl::StatusOr<IngestResult> ingest_with_alerts(std::string_view product_id, std::span<const EventRecord> events,
                                                  PeriodOf period_of, std::span<const SoftGateFired> soft_gates,
                                                  AlertsOf alerts_of) final;
  absl::StatusOr<bool> enqueue_alert(std::string_view product_id, const WebhookAlert& alert) final;
  absl::StatusOr<std::vector<std::string>> products_wanting(AlertType type) final;
  absl::StatusOr<bool> alert_raised(std::string_view product_id, std::string_view alert_key) final;
  absl::StatusOr<AlertSettings> alert_settings(std::string_view product_id) final;
  absl::Status put_alert_settings(std::string_view product_id, const AlertSettings& settings) final;
  absl::Status create_session(const SessionRecord& session, std::int64_t now_ns, std::size_t max_live) final;
  absl::StatusOr<std::optional<SessionRecord>> find_session(std::string_view token_sha256, std::int64_t now_ns) final;
  absl::Status delete_session(std::string_view token_sha256) final;
  absl::Status create_webhook(std::string_view product_id, const WebhookEndpoint& endpoint) final;
  absl::StatusOr<std::vector<WebhookEndpoint>> list_webhooks(std::string_view product_id) final;
  absl::Status delete_webhook(std::string_view product_id, std::string_view endpoint_id) final;
  absl::StatusOr<std::vector<WebhookDelivery>> claim_webhook_deliveries(std::int64_t now_ns,
                                                                        std::int64_t lease_until_ns, std::size_t max,
                                                                        std::span<const std::int64_t> busy) final;
  absl::Status record_webhook_attempt(std::int64_t key, const WebhookAttempt& attempt) final;
  absl::StatusOr<std::vector<WebhookDeliveryLog>> webhook_deliveries(std::string_view product_id,
                                                                     std::string_view endpoint_id,
                                                                     std::size_t limit) final;
  absl::StatusOr<std::vector<std::string>> list_user_ids(std::string_view product_id, std::string_view after,
                                                         std::size_t limit) final;
  // In sql_report.cpp.
  absl::StatusOr<std::vector<UserPeriodCost>> period_costs(std::string_view product_id, std::string_view after,
                                                           std::size_t limit, PeriodOf period_of) final;
  // In sql_profit.cpp: the events (cost rows) and billing_events of the range, grouped.
  absl::StatusOr<std::vector<ProfitRow>> profit_report(std::string_view product_id, TimeRange range,
                                                       ProfitGroup group, std::string_view tag_key = {}) final;
  // In sql_tags.cpp.
  absl::Status set_report_tags(std::string_view product_id, std::span<const std::string> tag_keys) final;
  absl::StatusOr<std::vector<std::string>> report_tags(std::string_view product_id) final;

  // The transaction contract for writes that touch some users of a product (ingest now; leases
  // and wallets next): runs `fn(connection, product key)` in a write transaction that holds the
  // locks of `user_ids` (any order, repeats allowed) of product `product_id`, taken in one global
  // order before `fn` runs, so that such writers on any number of replicas queue rather than
  // deadlock. `fn` may write those users' rows, then the product's totals row (last); it may be
  // run more than once (the transaction is retried whole when the database aborts it), so it
  // must keep its results only from its last run. Commits when `fn` succeeds; rolls back and
  // returns its error when it fails. NotFound when there is no such product.
  // `defers`: `fn` may defer writes on the connection (SqlConnection::deferred(); ingest's
  // rollups). Only for a body whose own reads of the rollups add the deferred sums (ingest's
  // read_usage does): with `defers`, the bodies before it in a group may leave sums unwritten.
  absl::Status with_user_locks(std::string_view product_id, std::span<const std::string_view> user_ids,
                               absl::FunctionRef<absl::Status(SqlConnection&, std::int64_t)> fn,
                               bool defers = false);

 protected:
  // `dialect` must outlive the storage.
  explicit SqlStorage(const SqlDialect& dialect) : dialect_(dialect) {}

  // What a call does on the connection it is given.
  enum class Access : std::uint8_t {
    kWrite,   // writes (alone or in a transaction), and the reads of a write's flow
    kRead,    // short reads
    kReport,  // a report: a long read, which may run beside the writes
  };
  // Runs `fn` on a connection that this call alone uses until `fn` returns, and returns what it
  // returns. A connection left in a transaction by `fn` is the subclass's to roll back or drop.
  virtual absl::Status with_connection(Access access, absl::FunctionRef<absl::Status(SqlConnection&)> fn) = 0;
  // transaction(Access::kWrite, true, fn): what every write transaction (ingest, create_product,
  // with_user_locks) goes through. This one runs `fn` alone (transaction_alone()); a subclass may
  // run concurrent callers' in one transaction, each in a savepoint (SqliteStorage: group commit),
  // as long as each caller gets its own `fn`'s outcome and is answered after its commit.
  // `defers`: `fn` may defer writes (GroupCommit::run()).
  virtual absl::Status write_transaction(absl::FunctionRef<absl::Status(SqlConnection&)> fn, bool defers);
  // How store_batch() went.
  enum class BatchWrite : std::uint8_t {
    kUnsupported,  // this database has no such statement: nothing was done
    kStored,       // the batch is written
    // The statement failed in a way that the statements one by one report exactly (a total would
    // pass int64) or handle (a product without its product_totals row): the transaction is rolled
    // back and the batch written again without store_batch().
    kRedoInParts,
    // The bulk load refused the batch (an id already stored: a retried batch; or a value it cannot
    // take): the transaction is rolled back and the batch written again with `bulk` false.
    kRedoWithoutBulk,
  };
  // How ingest writes a batch, fastest first: store_batch() with `bulk`, store_batch() without
  // it, SqlStorage's statements one by one (which name a value the database refuses).
  enum class IngestPath : std::uint8_t { kBulk, kOneStatement, kInParts };
  // ingest's write of a batch in one statement (one round trip) where the database can
  // (PostgreSQL), in the transaction that holds the users' locks: creates the missing users of
  // `users`, stores those of the events `fresh` (indexes into `events` and `ids`, the first of
  // each id) whose id is not stored yet, setting stored[i] for each, adds them to usage_daily and
  // to the product's totals row. With `bulk`, the events may be loaded in bulk first (PostgreSQL's
  // COPY), which stores all of them or fails (kRedoWithoutBulk). The default is kUnsupported:
  // SqlStorage's statements, one by one.
  virtual absl::StatusOr<BatchWrite> store_batch(SqlConnection& connection, std::int64_t product,
                                                 std::int64_t received_ns, std::span<const EventRecord> events,
                                                 std::span<const storage_internal::EventId> ids,
                                                 std::span<const std::size_t> fresh,
                                                 std::span<const std::string_view> users, bool bulk,
                                                 std::vector<bool>& stored);
  // Runs `fn` in a transaction of its own (write or read) on a connection for `access`: commits
  // when it succeeds, rolls back when it fails; retried whole (up to a few times) when the
  // database aborted it (Aborted: serialization failure, deadlock).
  absl::Status transaction_alone(Access access, bool write, absl::FunctionRef<absl::Status(SqlConnection&)> fn);

 private:
  // Runs `fn` in a transaction (write or read) on a connection for `access`, as
  // transaction_alone() does, or through write_transaction() for a write on Access::kWrite.
  absl::Status transaction(Access access, bool write, absl::FunctionRef<absl::Status(SqlConnection&)> fn,
                           bool defers = false);
  // The integer key (products.pk) of `product_id`, or nullopt when there is no such product.
  // Kept once found: products are never deleted and their keys never change.
  absl::StatusOr<std::optional<std::int64_t>> product_key(SqlConnection& connection, std::string_view product_id);
  // As product_key, but NotFound when there is no such product.
  absl::StatusOr<std::int64_t> existing_product_key(SqlConnection& connection, std::string_view product_id);
  // Where a paged scan of a customer's billing events has got to (sql_metrics.cpp).
  struct ScanCursor {
    std::int64_t after_ts = 0;
    std::string after_id;
    bool first = true;
  };
  // One customer's billing events of `range` after `cursor` (every customer's when `customer_id`
  // is nullopt), in (ts_ns, id) order, on `connection`.
  absl::Status scan_billing_rows(SqlConnection& connection, std::int64_t product, std::optional<std::string_view> customer_id,
                                 TimeRange range, ScanCursor& cursor,
                                 absl::FunctionRef<absl::Status(const BillingEventRow&)> fn);
  // Runs `select_sql` (a one-row SELECT from plans with the product's key as ?1) and gives its row,
  // if any, to `take`; nothing for an unknown product.
  absl::Status read_plans_row(std::string_view product_id, std::string_view select_sql, std::string_view what,
                              absl::FunctionRef<void(Query&)> take);
  // The dashboard's rollups (server/sql_profit.cpp, sql_report.cpp), kept in the ingest's
  // transaction. profit_daily sums cost rows (every event but billing ones) and billing events per
  // (UTC day, customer, agent, indicator); usage_daily_by_model and usage_daily_by_user sum the cost
  // rows' totals per (UTC day, model) and per (UTC day, user): usage_daily without users, or
  // without models. A key of profit_daily, and its six sums in column order (cost_events,
  // cost_nanos, cost_unknown, billing_events, revenue_nanos, revenue_known).
  using ProfitKeyView = std::tuple<std::int64_t, std::string_view, std::string_view, std::string_view>;
  using ProfitSumsView = std::array<std::int64_t, 6>;
  // The sums that the generic ingest path adds for a product's stored events (sql_rollups.cpp;
  // PostgresStorage::store_batch()'s one statement does the same in SQL): usage_daily (user, UTC
  // day, model), usage_daily_by_model, _by_user and _by_provider (UTC day and that), the cost side
  // of profit_daily, and the product's all-time totals. They are deferred to the end of the
  // transaction (SqlConnection::deferred()), so that the batches of one group commit that share
  // rows write each row once. Keys view the events' strings: the events must outlive the sums
  // (a group commit's members wait for its commit).
  struct ProductRollups {
    std::map<std::tuple<std::string_view, std::int64_t, std::string_view>, Totals> daily;
    std::map<std::pair<std::int64_t, std::string_view>, Totals> by_model, by_user, by_provider;
    std::map<ProfitKeyView, ProfitSumsView> profit;
    std::optional<Totals> totals;  // the product's all-time totals with these sums, when changed
    // Adds the cost side of `e` (not a billing event) to the rollups; false when a sum would pass
    // int64. The product's totals are the caller's (storage_internal::add_to_product_totals).
    [[nodiscard]] bool add(const EventRecord& e);
    // Adds `other`'s sums to these (its totals, when set, replace these); false on an overflow.
    [[nodiscard]] bool merge(const ProductRollups& other);
  };
  class DeferredRollups;
  // The usage rows a group's batches share: read once for the group inside its transaction, then
  // each batch's own thread copies its users out after the commit. (Copied for every batch inside
  // the transaction, they held the one writer: ~10% of its time at 64 syncers naming the same
  // users.) The rows are immutable once shared; any thread may copy from them.
  struct SharedUsage {
    std::shared_ptr<const std::vector<UserUsage>> rows;
    std::vector<std::size_t> at;  // the batch's users, as indexes into *rows
  };
  // A batch's usage reply, read at the end of its transaction (with every batch of its group
  // commit written) together with the other batches' of the group: one read of the union of
  // their users instead of one per batch. Everything it points to is the batch's caller's, who
  // waits for the commit.
  struct PendingReply {
    std::int64_t product = 0;
    std::span<const std::string_view> users;  // sorted, distinct
    const PeriodOf* period_of = nullptr;
    const AlertsOf* alerts_of = nullptr;  // nullptr: no alerts
    IngestResult* result = nullptr;       // its `usage` is set, or else `shared`
    SharedUsage* shared = nullptr;        // nullptr: `result->usage` is always set
    // What alerts_of threw, rethrown to the batch's caller. The alerts commit with their batch,
    // so the transaction (the whole group, whose members are told and may retry) is rolled back.
    std::exception_ptr* thrown = nullptr;
  };
  // The sums deferred on `connection` for `product` (nullptr when none).
  static const ProductRollups* deferred_rollups(const SqlConnection& connection, std::int64_t product);
  // Adds `sums` to those deferred on `connection` (the first time: a DeferredRollups of this
  // storage is set on it), and `reply` when set, to be answered after them. A body calls it
  // last: when it fails before changing anything, the body fails (its savepoint is rolled back);
  // when a merge of `sums` fails part-way, the whole transaction fails at its flush.
  absl::Status defer_rollups(SqlConnection& connection, std::int64_t product, const ProductRollups& sums,
                             const PendingReply* reply = nullptr);
  // Reads the usage of `replies` (in the open transaction, the rollups written): per product, one
  // read_usage() of all their users; a batch whose period_of gives one of its users another
  // period than the first batch's (plans changed, or a period ended, between the two) is read
  // on its own. Then each batch's alerts, as finish_ingest() stores them. An error of the
  // storage fails the transaction (the group's flush), and with it every batch of the group.
  absl::Status answer_replies(SqlConnection& connection, std::span<const PendingReply> replies);
  // Writes `sums` of `product`: one upsert per row of each rollup, then the product's totals.
  absl::Status write_rollups(SqlConnection& connection, std::int64_t product, const ProductRollups& sums);
  // A step of a write transaction, given the product's key: its failure rolls the transaction back.
  using InTransaction = absl::FunctionRef<absl::Status(SqlConnection&, std::int64_t product)>;
  // ingest(), ingest_with_usage() and ingest_with_alerts(); `period_of` is nullptr for ingest(),
  // `alerts_of` nullptr but for ingest_with_alerts(). `first`, when set, runs in the batch's
  // transaction (its user locks held) before the batch is written (close_voice_session()).
  absl::StatusOr<IngestResult> ingest_impl(std::string_view product_id, std::span<const EventRecord> events,
                                           const PeriodOf* period_of, std::span<const SoftGateFired> soft_gates,
                                           const AlertsOf* alerts_of = nullptr, const InTransaction* first = nullptr);
  // The write of a batch, in a with_user_locks() transaction of the batch's users: `ids` are the
  // events' ids as bytes, `users` the batch's distinct users, sorted. By `path`; when store_batch()
  // asks for the batch to be written again another way, sets `redo` to that path and fails.
  absl::Status ingest_locked(SqlConnection& connection, std::int64_t product, std::span<const EventRecord> events,
                             std::span<const storage_internal::EventId> ids, std::span<const std::string_view> users,
                             const PeriodOf* period_of, std::span<const SoftGateFired> soft_gates, IngestPath path,
                             IngestPath& redo, IngestResult& result, const AlertsOf* alerts_of,
                             std::exception_ptr* reply_thrown, SharedUsage* shared);
  // ingest_locked()'s last steps on store_batch()'s path, once the batch is written: its soft
  // gates, then (for ingest_with_usage(), `period_of` set) its users' usage into `result`, then
  // (`alerts_of` set) the alerts it raises into the outbox (store_alerts()).
  absl::Status finish_ingest(SqlConnection& connection, std::int64_t product, std::span<const std::string_view> users,
                             const PeriodOf* period_of, std::span<const SoftGateFired> soft_gates,
                             IngestResult& result, const AlertsOf* alerts_of);
  // The alerts `usage` raises (`alerts_of`), into the outbox in the open transaction.
  absl::Status store_batch_alerts(SqlConnection& connection, std::int64_t product, std::span<const UserUsage> usage,
                                  const AlertsOf& alerts_of);
  // The same with the product's webhook_mask() read already (`wanted`, not 0).
  static absl::Status store_alerts_wanted(SqlConnection& connection, std::int64_t product,
                                          std::span<const UserUsage> usage, const AlertsOf& alerts_of,
                                          std::uint32_t wanted);
  // In sql_webhooks.cpp, in the open write transaction: the union of the product's endpoints'
  // event masks (0: no endpoint).
  static absl::StatusOr<std::uint32_t> webhook_mask(SqlConnection& connection, std::int64_t product);
  // The product's alert settings in the open transaction (the defaults when it has no row).
  static absl::StatusOr<AlertSettings> alert_settings_in(SqlConnection& connection, std::int64_t product);
  // In sql_webhooks.cpp, in the open write transaction: stores `alert` unless its key is stored,
  // with one pending delivery per endpoint that wants its type. True when stored.
  static absl::StatusOr<bool> store_alert(SqlConnection& connection, std::int64_t product, const WebhookAlert& alert);
  // In sql_agents.cpp, in the ingest's transaction once the batch is written: a billing_events row
  // for every event stored by this call (stored[i]) with a non-empty indicator, its revenue
  // priced by its agent's indicator then (docs/tracking.md, "Revenue"; NULL when unpriced); then
  // the billing events added to profit_daily (add_billing_rollup).
  // Each row keeps its event's meta_tags and `received_ns` (the events row's), so that scans of
  // billing events read no events row.
  absl::Status store_billing_events(SqlConnection& connection, std::int64_t product, std::int64_t received_ns,
                                    std::span<const EventRecord> events,
                                    std::span<const storage_internal::EventId> ids, const std::vector<bool>& stored);
  // In sql_agents.cpp: profit_daily's billing side, from store_billing_events() (`priced_rows`: event index
  // and revenue; `unpriced_rows`: without a price). Nothing is written without billing events.
  absl::Status add_billing_rollup(SqlConnection& connection, std::int64_t product, std::span<const EventRecord> events,
                                  std::span<const std::pair<std::size_t, std::int64_t>> priced_rows,
                                  std::span<const std::pair<std::size_t, std::int64_t>> unpriced_rows);
  // The stored events of a batch (stored[i]) added to the rollup of each of the product's report
  // tags (sql_tags.cpp): cost rows by their cost, billing events by their revenue (priced_rows,
  // unpriced_rows as store_billing_events computed them). Read after the events are written, so
  // that set_report_tags' lock orders the two.
  absl::Status add_tag_rollups(SqlConnection& connection, std::int64_t product, std::span<const EventRecord> events,
                               const std::vector<bool>& stored,
                               std::span<const std::pair<std::size_t, std::int64_t>> priced_rows,
                               std::span<const std::pair<std::size_t, std::int64_t>> unpriced_rows);
  absl::StatusOr<std::vector<std::string>> report_tags_in(SqlConnection& connection, std::int64_t product);
  // Adds `rows` (sql_tags.cpp) to profit_daily_by_tag's stored rows.
  absl::Status upsert_tag_rows(SqlConnection& connection, std::int64_t product, const TagRows& rows);
  absl::Status upsert_profit_daily(SqlConnection& connection, std::int64_t product,
                                   const std::map<ProfitKeyView, ProfitSumsView>& sums);
  // In sql_agents.cpp, from store_billing_events(): each customer of the billing rows that has a
  // credit wallet gets a credit_settle_pending mark from its earliest billing event (the earlier
  // of that and a mark it has; its version bumped), in the ingest's transaction.
  absl::Status mark_wallets_pending(SqlConnection& connection, std::int64_t product, std::span<const EventRecord> events,
                                    std::span<const std::pair<std::size_t, std::int64_t>> priced_rows,
                                    std::span<const std::pair<std::size_t, std::int64_t>> unpriced_rows);
  // The agent's record as stored, or nullopt, read on `connection`.
  static absl::StatusOr<std::optional<AgentRecord>> read_agent(SqlConnection& connection, std::int64_t product,
                                                               std::string_view agent_id);
  // How a record of a product is read by its key (read_agent, read_metric).
  template <class Record>
  using RecordReader = absl::StatusOr<std::optional<Record>> (*)(SqlConnection&, std::int64_t, std::string_view);
  // list_agents() and list_metrics(): the records `read` gives for the keys `keys_sql` (a
  // one-column SELECT with the product's key as ?1) lists, in bytewise key order (the same on
  // every database, whatever its collation); empty for an unknown product.
  template <class Record>
  absl::StatusOr<std::vector<Record>> list_records(std::string_view product_id, std::string_view keys_sql,
                                                   std::string_view what, RecordReader<Record> read);
  // find_agent() and find_metric(): the record `read` gives for `key`, or NotFound `not_found`.
  template <class Record>
  absl::StatusOr<Record> find_record(std::string_view product_id, std::string_view key, std::string_view not_found,
                                     RecordReader<Record> read);
  // In sql_metrics.cpp: the metric `identifier` as stored with what links it, or nullopt.
  static absl::StatusOr<std::optional<MetricRecord>> read_metric(SqlConnection& connection, std::int64_t product,
                                                                 std::string_view identifier);
  // The indicators ("agentId/indicator", sorted) that link metric `identifier`.
  static absl::StatusOr<std::vector<std::string>> metric_links(SqlConnection& connection, std::int64_t product,
                                                               std::string_view identifier);
  // Stores a batch's soft gates and hard gates, each kind in its table (one already stored is
  // kept), in the ingest's transaction.
  absl::Status store_soft_gates(SqlConnection& connection, std::int64_t product,
                                std::span<const SoftGateFired> soft_gates);
  // read_usage()'s last step: the soft gates of each user in `out` whose period_start_ns is in
  // the user's period, in UserUsage::soft_gates' order and bound (`users_parameter` as in
  // read_usage's queries).
  // soft_gates_fired() or, `hard`, hard_gates_fired().
  absl::StatusOr<std::vector<SoftGateFired>> gates_fired(std::string_view product_id, std::string_view user_id,
                                                         TimeRange period, bool hard);
  absl::Status read_soft_gates(SqlConnection& connection, std::int64_t product, const std::string& users_parameter,
                               std::vector<UserUsage>& out);
  // Runs `head` VALUES (...), (...) `tail` over `count` rows of `columns` parameters each, as
  // many rows per statement as the dialect takes; bind_row(query, first, i) binds row i's values
  // to parameters first, first + 1, ...
  absl::Status insert_rows(SqlConnection& connection, std::string_view head, int columns, std::size_t count,
                           std::string_view tail, std::string_view what,
                           absl::FunctionRef<void(Query&, int, std::size_t)> bind_row);
  // Stores those of the events `fresh` (indexes, the first of each id) not already stored, with
  // `received_ns`; sets stored[i] for each event stored by this call.
  absl::Status insert_events(SqlConnection& connection, std::int64_t product, std::int64_t received_ns,
                             std::span<const EventRecord> events, std::span<const storage_internal::EventId> ids,
                             std::span<const std::size_t> fresh, std::vector<bool>& stored);
  // The product's all-time totals (product_totals), its row locked until the transaction ends.
  absl::StatusOr<Totals> product_totals(SqlConnection& connection, std::int64_t product);
  absl::StatusOr<std::optional<UserRecord>> find_user_in(SqlConnection& connection, std::int64_t product,
                                                         std::string_view user_id);
  // ingest_with_usage()'s read, in the open transaction: the users `user_ids` (distinct, sorted,
  // all existing), their periods and their totals by model, into `out` (in the same order).
  absl::Status read_usage(SqlConnection& connection, std::int64_t product, std::span<const std::string_view> user_ids,
                          PeriodOf period_of, std::vector<UserUsage>& out);
  // Adds the rows of a read_usage() query (user's index, model, calls, then the sums) into the
  // totals in `out` of the users whose period is `period`.
  static absl::Status add_usage_rows(Query& select, const TimeRange& period, std::vector<UserUsage>& out);
  // report() for an existing product on `connection`: adds the query's totals into `out`.
  static absl::Status report_in(SqlConnection& connection, std::int64_t product, const ReportQuery& query,
                                GroupedTotals& out);
  // Adds the sums of usage_daily over whole days [first_day, end_day), or of the events with
  // from_ns <= ts_ns < to_ns, into `out`.
  static absl::Status add_daily(SqlConnection& connection, std::int64_t product, const ReportQuery& query,
                                std::int64_t first_day, std::int64_t end_day, GroupedTotals& out);
  static absl::Status add_events(SqlConnection& connection, std::int64_t product, const ReportQuery& query,
                                 std::int64_t from_ns, std::int64_t to_ns, GroupedTotals& out);

  // Of the batch's users `users`, those this storage has not seen stored by a committed ingest:
  // the only ones ingest inserts (users are never deleted; one another replica created is
  // inserted again, ON CONFLICT DO NOTHING).
  std::vector<std::string_view> unknown_users(std::int64_t product, std::span<const std::string_view> users);
  // Notes `users` of `product` as stored: called once their ingest has committed.
  void remember_users(std::int64_t product, std::span<const std::string_view> users);

  const SqlDialect& dialect_;
  absl::Mutex users_mu_;
  // Product key (8 bytes) then user id, of users known to be stored; emptied when it reaches
  // kKnownUsers (sql_ingest.cpp), which bounds its memory.
  absl::flat_hash_set<std::string> known_users_ ABSL_GUARDED_BY(users_mu_);
  absl::Mutex keys_mu_;
  absl::flat_hash_map<std::string, std::int64_t> product_keys_ ABSL_GUARDED_BY(keys_mu_);  // id -> products.pk
};

template <class Record>
absl::StatusOr<std::vector<Record>> SqlStorage::list_records(std::string_view product_id, std::string_view keys_sql,
                                                             std::string_view what, RecordReader<Record> read) {
  std::vector<Record> out;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    std::vector<std::string> keys;
    {
      absl::StatusOr<Query> select = prepare(connection, keys_sql);
      if (!select.ok()) return select.status();
      select->bind(1, **product);
      for (;;) {
        absl::StatusOr<bool> row = select->step(what);
        if (!row.ok()) return row.status();
        if (!*row) break;
        keys.push_back(select->text(0));
      }
    }
    std::sort(keys.begin(), keys.end());
    for (const std::string& key : keys) {
      absl::StatusOr<std::optional<Record>> record = read(connection, **product, key);
      if (!record.ok()) return record.status();
      if (record->has_value()) out.push_back(**std::move(record));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

template <class Record>
absl::StatusOr<Record> SqlStorage::find_record(std::string_view product_id, std::string_view key,
                                               std::string_view not_found, RecordReader<Record> read) {
  std::optional<Record> found;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    found.reset();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<std::optional<Record>> record = read(connection, **product, key);
    if (!record.ok()) return record.status();
    found = *std::move(record);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (!found) return absl::NotFoundError(std::string(not_found));
  return *std::move(found);
}

}  // namespace paygent::server
