// SqlStorage's ingest (see server/sql_storage.h): a batch's users, events, daily sums and the
// product's totals, written in the transaction of with_user_locks(), in one statement where the
// database has one (store_batch()) or one statement per table.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;
using storage_internal::add_totals;
using storage_internal::EventId;
using storage_internal::floor_div;
using storage_internal::kNanosPerDay;

std::int64_t now_ns() { return absl::ToUnixNanos(absl::Now()); }

// "(?f, ?f+1, ...)" for one event row of `columns` parameters numbered from `first`.
std::string row_placeholders(int first, int columns) {
  std::string out = "(";
  for (int i = 0; i < columns; ++i) str_append(&out, i ? ", ?" : "?", first + i);
  return out + ")";
}

// INSERT of `rows` events (product, id, received_ns, then the payload columns each), ignoring
// those whose id is stored; with more than one row, RETURNING the ids it stored.
std::string insert_events_sql(int rows) {
  constexpr int kColumns = 3 + ::paygent::internal::kEventColumnCount;
  std::string sql = str_cat("INSERT INTO events(product, id, received_ns, ", ::paygent::internal::event_columns(),
                            ") VALUES");
  for (int r = 0; r < rows; ++r) str_append(&sql, r ? ", " : " ", row_placeholders(1 + r * kColumns, kColumns));
  str_append(&sql, " ON CONFLICT(product, id) DO NOTHING", rows > 1 ? " RETURNING id" : "");
  return sql;
}

// The index of the first event of each id (a later one of the same batch is a duplicate,
// whatever it holds), in batch order.
std::vector<std::size_t> first_of_each_id(std::span<const EventId> ids) {
  std::vector<std::size_t> fresh;
  fresh.reserve(ids.size());
  absl::flat_hash_set<absl::string_view> seen;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto* bytes = reinterpret_cast<const char*>(ids[i].data());
    if (seen.insert(absl::string_view(bytes, ids[i].size())).second) fresh.push_back(i);
  }
  return fresh;
}

}  // namespace

absl::StatusOr<IngestResult> SqlStorage::ingest(std::string_view product_id, std::span<const EventRecord> events) {
  return ingest_impl(product_id, events, nullptr, {});
}

absl::StatusOr<IngestResult> SqlStorage::ingest_with_usage(std::string_view product_id,
                                                           std::span<const EventRecord> events, PeriodOf period_of,
                                                           std::span<const SoftGateFired> soft_gates) {
  return ingest_impl(product_id, events, &period_of, soft_gates);
}

absl::StatusOr<IngestResult> SqlStorage::ingest_with_alerts(std::string_view product_id,
                                                            std::span<const EventRecord> events, PeriodOf period_of,
                                                            std::span<const SoftGateFired> soft_gates,
                                                            AlertsOf alerts_of) {
  return ingest_impl(product_id, events, &period_of, soft_gates, &alerts_of);
}

absl::StatusOr<IngestResult> SqlStorage::ingest_impl(std::string_view product_id, std::span<const EventRecord> events,
                                                     const PeriodOf* period_of,
                                                     std::span<const SoftGateFired> soft_gates,
                                                     const AlertsOf* alerts_of, const InTransaction* first) {
  // The ids' bytes and the batch's users (sorted: the order their locks are taken in), before
  // any connection is taken.
  std::vector<EventId> ids(events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (!storage_internal::decode_event_id(events[i].id, ids[i])) {
      return absl::InvalidArgumentError(str_cat("events[", i, "].id: must be 32 lowercase hex digits"));
    }
    // A billing event is revenue, not a provider call: a cost on it would count in spend but in
    // no usage sum (docs/tracking.md).
    if (events[i].kind == ::paygent::internal::UsageKind::kBilling && events[i].cost_nanos != 0) {
      return absl::InvalidArgumentError(str_cat("events[", i, "].cost_nanos: must be 0 for an event of kind billing"));
    }
  }
  std::vector<std::string_view> users;
  {
    absl::flat_hash_set<absl::string_view> seen;
    for (const EventRecord& e : events) {
      if (seen.insert(absl::string_view(e.user_id.data(), e.user_id.size())).second) users.push_back(e.user_id);
    }
    for (const SoftGateFired& g : soft_gates) {  // their users are created, locked and read too
      if (seen.insert(absl::string_view(g.user_id.data(), g.user_id.size())).second) users.push_back(g.user_id);
    }
    std::sort(users.begin(), users.end());
  }
  IngestResult result;
  std::exception_ptr reply_thrown;  // set by answer_replies (PendingReply::thrown)
  SharedUsage shared;               // set by answer_replies when it leaves the copy to this thread
  IngestPath path = IngestPath::kBulk;
  for (;;) {
    IngestPath redo = path;
    reply_thrown = nullptr;
    std::int64_t product_key = 0;
    absl::Status status =
        with_user_locks(product_id, users, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
          result = IngestResult{};
          shared = SharedUsage{};  // (a transaction run again runs this again)
          product_key = product;
          if (first != nullptr) {
            if (absl::Status s = (*first)(connection, product); !s.ok()) return s;
          }
          return ingest_locked(connection, product, events, ids, users, period_of, soft_gates, path, redo, result,
                               alerts_of, &reply_thrown, &shared);
        },
        /*defers=*/true);
    if (redo > path) {
      path = redo;  // rolled back: written again the slower way
      continue;
    }
    if (reply_thrown) std::rethrow_exception(reply_thrown);  // (the transaction was rolled back)
    if (!status.ok()) return status;
    remember_users(product_key, users);  // committed
    if (shared.rows != nullptr) {
      result.usage.reserve(shared.at.size());
      for (const std::size_t at : shared.at) result.usage.push_back((*shared.rows)[at]);
    }
    return result;
  }
}

absl::Status SqlStorage::ingest_locked(SqlConnection& connection, std::int64_t product,
                                       std::span<const EventRecord> events, std::span<const EventId> ids,
                                       std::span<const std::string_view> users, const PeriodOf* period_of,
                                       std::span<const SoftGateFired> soft_gates, IngestPath path,
                                       IngestPath& redo, IngestResult& result, const AlertsOf* alerts_of,
                                       std::exception_ptr* reply_thrown, SharedUsage* shared) {
  const std::int64_t received_ns = now_ns();
  const std::vector<std::size_t> fresh = first_of_each_id(ids);
  const std::vector<std::string_view> new_users = unknown_users(product, users);
  std::vector<bool> stored(events.size(), false);
  if (path != IngestPath::kInParts) {
    absl::StatusOr<BatchWrite> written = store_batch(connection, product, received_ns, events, ids, fresh, new_users,
                                                     path == IngestPath::kBulk, stored);
    if (!written.ok()) return written.status();
    if (*written == BatchWrite::kRedoInParts || *written == BatchWrite::kRedoWithoutBulk) {
      redo = *written == BatchWrite::kRedoInParts ? IngestPath::kInParts : IngestPath::kOneStatement;
      return absl::CancelledError("ingest: to be written again another way");
    }
    if (*written == BatchWrite::kStored) {
      for (bool s : stored) ++(s ? result.accepted : result.duplicates);
      if (absl::Status s = store_billing_events(connection, product, received_ns, events, ids, stored); !s.ok()) return s;
      return finish_ingest(connection, product, users, period_of, soft_gates, result, alerts_of);
    }
  }
  if (absl::Status s = insert_rows(
          connection, "INSERT INTO users(product, user_id, name, created_ns)", 4, new_users.size(),
          "ON CONFLICT(product, user_id) DO NOTHING", "create users",
          [&](Query& insert, int first, std::size_t i) {
            insert.bind(first, product).bind(first + 1, new_users[i]).bind(first + 2, std::string_view("")).bind(first + 3, received_ns);
          });
      !s.ok()) {
    return s;
  }

  if (absl::Status s = insert_events(connection, product, received_ns, events, ids, fresh, stored); !s.ok()) return s;

  // The product's all-time totals, which bound every sum a read computes over its events (as of
  // the batches before this one in the transaction, whose sums may not be written yet); and the
  // stored events' sums for the rollups, deferred to the transaction's end (ProductRollups).
  const ProductRollups* deferred = deferred_rollups(connection, product);
  Totals totals;
  if (deferred != nullptr && deferred->totals) {
    totals = *deferred->totals;
  } else {
    absl::StatusOr<Totals> stored_totals = product_totals(connection, product);
    if (!stored_totals.ok()) return stored_totals.status();
    totals = *stored_totals;
  }
  ProductRollups sums;
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (!stored[i]) {
      ++result.duplicates;
      continue;
    }
    ++result.accepted;
    const EventRecord& e = events[i];
    // A billing event is no provider call: it is not a cost row (docs/tracking.md), so it adds to
    // neither the calls of usage_daily nor the product's totals (its cost is 0).
    if (e.kind == ::paygent::internal::UsageKind::kBilling) continue;
    if (absl::Status s = storage_internal::add_to_product_totals(totals, e, i); !s.ok()) return s;
    if (!sums.add(e)) return absl::InvalidArgumentError("the batch would overflow a 64-bit total (tokens or cost_nanos)");
  }
  if (result.accepted > 0) sums.totals = totals;
  if (absl::Status s = store_billing_events(connection, product, received_ns, events, ids, stored); !s.ok()) return s;
  if (absl::Status s = store_soft_gates(connection, product, soft_gates); !s.ok()) return s;
  // The usage reply is read at the transaction's end, with the group's other batches' (one read
  // of their users together), after the rollups are written: it counts every batch committed
  // with this one, as a read right after the commit would.
  const PendingReply reply{.product = product,
                           .users = users,
                           .period_of = period_of,
                           .alerts_of = alerts_of,
                           .result = &result,
                           .shared = shared,
                           .thrown = reply_thrown};
  // Last: nothing after it fails.
  return defer_rollups(connection, product, sums, period_of != nullptr ? &reply : nullptr);
}

namespace {

// Most users SqlStorage::known_users_ holds (~64 MB at most).
constexpr std::size_t kKnownUsers = 1 << 20;

std::string user_key(std::int64_t product, std::string_view user_id) {
  std::string key(sizeof product, '\0');
  std::memcpy(key.data(), &product, sizeof product);
  key.append(user_id);
  return key;
}

}  // namespace

std::vector<std::string_view> SqlStorage::unknown_users(std::int64_t product, std::span<const std::string_view> users) {
  std::vector<std::string_view> unknown;
  std::string key;
  absl::MutexLock lock(&users_mu_);
  for (std::string_view user : users) {
    key = user_key(product, user);
    if (!known_users_.contains(key)) unknown.push_back(user);
  }
  return unknown;
}

void SqlStorage::remember_users(std::int64_t product, std::span<const std::string_view> users) {
  absl::MutexLock lock(&users_mu_);
  if (known_users_.size() + users.size() > kKnownUsers) known_users_.clear();
  for (std::string_view user : users) known_users_.insert(user_key(product, user));
}

absl::Status SqlStorage::finish_ingest(SqlConnection& connection, std::int64_t product,
                                       std::span<const std::string_view> users, const PeriodOf* period_of,
                                       std::span<const SoftGateFired> soft_gates, IngestResult& result,
                                       const AlertsOf* alerts_of) {
  if (absl::Status s = store_soft_gates(connection, product, soft_gates); !s.ok()) return s;
  if (period_of == nullptr) return absl::OkStatus();
  // The batch's users and their totals, read in this transaction. (store_batch() is PostgreSQL's,
  // whose transactions hold one batch: no other batch's sums are deferred beside this one.)
  if (absl::Status s = read_usage(connection, product, users, *period_of, result.usage); !s.ok()) return s;
  return alerts_of == nullptr ? absl::OkStatus() : store_batch_alerts(connection, product, result.usage, *alerts_of);
}

absl::Status SqlStorage::store_batch_alerts(SqlConnection& connection, std::int64_t product,
                                            std::span<const UserUsage> usage, const AlertsOf& alerts_of) {
  // The alerts the batch raises, into the outbox in this transaction: stored exactly when it is.
  absl::StatusOr<std::uint32_t> wanted = webhook_mask(connection, product);
  if (!wanted.ok()) return wanted.status();
  if (*wanted == 0) return absl::OkStatus();
  return store_alerts_wanted(connection, product, usage, alerts_of, *wanted);
}

absl::Status SqlStorage::store_alerts_wanted(SqlConnection& connection, std::int64_t product,
                                             std::span<const UserUsage> usage, const AlertsOf& alerts_of,
                                             std::uint32_t wanted) {
  for (const WebhookAlert& alert : alerts_of(usage, wanted)) {
    if (absl::StatusOr<bool> stored = store_alert(connection, product, alert); !stored.ok()) return stored.status();
  }
  return absl::OkStatus();
}

absl::Status SqlStorage::answer_replies(SqlConnection& connection, std::span<const PendingReply> replies) {
  std::map<std::int64_t, std::vector<const PendingReply*>> by_product;  // each in arrival order
  for (const PendingReply& r : replies) by_product[r.product].push_back(&r);
  for (const auto& [product, batch_replies] : by_product) {
    std::vector<std::string_view> users;
    for (const PendingReply* r : batch_replies) users.insert(users.end(), r->users.begin(), r->users.end());
    std::sort(users.begin(), users.end());
    users.erase(std::unique(users.begin(), users.end()), users.end());
    auto usage = std::make_shared<std::vector<UserUsage>>();
    const PeriodOf& first_period_of = *batch_replies.front()->period_of;
    if (absl::Status s = read_usage(connection, product, users, first_period_of, *usage); !s.ok()) return s;
    // The product's alerts wanted, read once when a batch raises alerts (0: none to store).
    std::optional<std::uint32_t> wanted;
    for (const PendingReply* r : batch_replies) {
      if (r->alerts_of == nullptr) continue;
      absl::StatusOr<std::uint32_t> mask = webhook_mask(connection, product);
      if (!mask.ok()) return mask.status();
      wanted = *mask;
      break;
    }
    for (std::size_t k = 0; k < batch_replies.size(); ++k) {
      const PendingReply* r = batch_replies[k];
      std::vector<UserUsage>& out = r->result->usage;
      out.clear();
      const bool alerts = r->alerts_of != nullptr && wanted.value_or(0) != 0;
      if (batch_replies.size() == 1) {
        out = std::move(*usage);  // its users are all of them, in order
      } else {
        // The reply's users, as indexes into `users`: both sorted, so one walk finds them. A
        // batch whose period_of puts a user in another period than the first batch's is read
        // on its own.
        std::vector<std::size_t> at;
        at.reserve(r->users.size());
        bool alike = true;
        auto from = users.begin();
        for (std::string_view user : r->users) {
          from = std::lower_bound(from, users.end(), user);
          if (from == users.end() || *from != user) {
            return absl::InternalError(str_cat("ingest: the users of a reply are not sorted and distinct at \"", user, "\""));
          }
          at.push_back(static_cast<std::size_t>(from - users.begin()));
          if (k != 0 && alike && (*r->period_of)((*usage)[at.back()].user) != (*usage)[at.back()].period) alike = false;
        }
        if (!alike) {
          if (absl::Status s = read_usage(connection, product, r->users, *r->period_of, out); !s.ok()) return s;
        } else if (r->shared != nullptr && !alerts) {
          r->shared->rows = usage;  // copied out by the batch's own thread, after the commit
          r->shared->at = std::move(at);
          continue;
        } else {
          out.reserve(at.size());
          for (const std::size_t i : at) out.push_back((*usage)[i]);
        }
      }
      if (alerts) {
        // The alerts commit with their batch: when alerts_of throws, the transaction fails (every
        // batch of the group is rolled back and told), and its caller gets the exception.
        try {
          if (absl::Status s = store_alerts_wanted(connection, product, out, *r->alerts_of, *wanted); !s.ok()) return s;
        } catch (...) {
          *r->thrown = std::current_exception();
          return absl::InternalError("ingest: a batch's alerts could not be made (the call threw); nothing of the "
                                    "batches committed with it is stored");
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SqlStorage::BatchWrite> SqlStorage::store_batch(SqlConnection&, std::int64_t, std::int64_t,
                                                               std::span<const EventRecord>, std::span<const EventId>,
                                                               std::span<const std::size_t>,
                                                               std::span<const std::string_view>, bool,
                                                               std::vector<bool>&) {
  return BatchWrite::kUnsupported;
}

absl::Status SqlStorage::insert_rows(SqlConnection& connection, std::string_view head, int columns, std::size_t count,
                                     std::string_view tail, std::string_view what,
                                     absl::FunctionRef<void(Query&, int, std::size_t)> bind_row) {
  const std::size_t per_insert = static_cast<std::size_t>(std::max(1, dialect_.rows_per_insert()));
  // Prepared once per chunk size (SQLite: once per call), rebound for each chunk.
  std::optional<Query> insert;
  std::size_t insert_rows = 0;
  for (std::size_t begin = 0; begin < count; begin += per_insert) {
    const std::size_t rows = std::min(per_insert, count - begin);
    if (rows != insert_rows) {
      std::string sql = str_cat(head, " VALUES");
      for (std::size_t r = 0; r < rows; ++r) {
        str_append(&sql, r ? ", " : " ", row_placeholders(1 + static_cast<int>(r) * columns, columns));
      }
      str_append(&sql, " ", tail);
      insert.reset();
      absl::StatusOr<Query> prepared = prepare(connection, sql);
      if (!prepared.ok()) return prepared.status();
      insert.emplace(*std::move(prepared));
      insert_rows = rows;
    }
    for (std::size_t r = 0; r < rows; ++r) bind_row(*insert, 1 + static_cast<int>(r) * columns, begin + r);
    if (absl::Status s = insert->run(what); !s.ok()) return s;
    insert->reset();
  }
  return absl::OkStatus();
}

absl::Status SqlStorage::insert_events(SqlConnection& connection, std::int64_t product, std::int64_t received_ns,
                                       std::span<const EventRecord> events, std::span<const EventId> ids,
                                       std::span<const std::size_t> fresh, std::vector<bool>& stored) {
  constexpr int kColumns = 3 + ::paygent::internal::kEventColumnCount;
  const std::size_t per_insert = static_cast<std::size_t>(std::max(1, dialect_.rows_per_insert()));
  // Prepared once per chunk size (SQLite: once per batch), rebound for each chunk.
  std::optional<Query> insert;
  std::size_t insert_rows = 0;
  for (std::size_t begin = 0; begin < fresh.size(); begin += per_insert) {
    const std::size_t rows = std::min(per_insert, fresh.size() - begin);
    if (rows != insert_rows) {
      insert.reset();
      absl::StatusOr<Query> prepared = prepare(connection, insert_events_sql(static_cast<int>(rows)));
      if (!prepared.ok()) return prepared.status();
      insert.emplace(*std::move(prepared));
      insert_rows = rows;
    }
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t i = fresh[begin + r];
      const int first = 1 + static_cast<int>(r) * kColumns;
      insert->bind(first, product).bind_blob(first + 1, ids[i]).bind(first + 2, received_ns).bind_event(first + 3, events[i]);
    }
    if (rows == 1) {
      if (absl::Status s = insert->run("insert event"); !s.ok()) return s;
      stored[fresh[begin]] = insert->changes() == 1;
      insert->reset();
      continue;
    }
    // The rows stored come back by id.
    absl::flat_hash_map<std::string, std::size_t> chunk;
    for (std::size_t r = 0; r < rows; ++r) {
      const EventId& id = ids[fresh[begin + r]];
      chunk.emplace(std::string(reinterpret_cast<const char*>(id.data()), id.size()), fresh[begin + r]);
    }
    for (;;) {
      absl::StatusOr<bool> row = insert->step("insert events");
      if (!row.ok()) return row.status();
      if (!*row) break;
      auto it = chunk.find(insert->blob(0));
      if (it == chunk.end()) return absl::InternalError("insert events: an id came back that was not sent");
      stored[it->second] = true;
    }
    insert->reset();
  }
  return absl::OkStatus();
}

}  // namespace paygent::server
