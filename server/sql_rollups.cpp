// The rollups that SqlStorage's generic ingest path keeps (see ProductRollups in
// server/sql_storage.h): summed per batch, deferred to the end of the transaction on the
// connection, and written there once for every batch of a group commit that adds to them.
//
// Why deferred: on SQLite, batches of 100 events from concurrent syncers share one transaction
// (GroupCommit), and often their users, days and models. Written per batch, each of a group of
// eight batches upserts the same ~100 rows of each of five rollups again: most of the writer's
// work (bench/README.md, "Ingest at batches of 100"). Summed across the group first, each row is
// written once.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;
using storage_internal::add_totals;

template <class Map>
bool merge_totals(Map& into, const Map& from) {
  bool ok = true;
  for (const auto& [key, t] : from) ok &= add_totals(into[key], t);
  return ok;
}

}  // namespace

bool SqlStorage::ProductRollups::add(const EventRecord& e) {
  ProfitSumsView& s = profit[ProfitKeyView{e.ts_ns / storage_internal::kNanosPerDay, e.user_id, e.agent_id, e.indicator}];
  bool overflow = false;
  ++s[0];
  if (e.cost_unknown) {
    ++s[2];
  } else {
    overflow |= __builtin_add_overflow(s[1], e.cost_nanos, &s[1]);
  }
  const Totals t = storage_internal::totals_of(e);
  // Day numbers as the reads of each table compute them (floor_div for usage_daily, the quotient
  // for the others: the same for the non-negative timestamps the API accepts).
  overflow |= !add_totals(daily[{e.user_id, storage_internal::floor_div(e.ts_ns, storage_internal::kNanosPerDay), e.model}], t);
  const std::int64_t day = e.ts_ns / storage_internal::kNanosPerDay;
  overflow |= !add_totals(by_model[{day, e.model}], t);
  overflow |= !add_totals(by_user[{day, e.user_id}], t);
  overflow |= !add_totals(by_provider[{day, e.provider}], t);
  return !overflow;
}

bool SqlStorage::ProductRollups::merge(const ProductRollups& other) {
  bool ok = merge_totals(daily, other.daily) && merge_totals(by_model, other.by_model) &&
            merge_totals(by_user, other.by_user) && merge_totals(by_provider, other.by_provider);
  for (const auto& [key, sums] : other.profit) {
    ProfitSumsView& into = profit[key];
    for (std::size_t i = 0; i < sums.size(); ++i) ok &= !__builtin_add_overflow(into[i], sums[i], &into[i]);
  }
  if (other.totals) totals = other.totals;
  return ok;
}

// The rollups of a connection's open transaction, per product, written by flush().
class SqlStorage::DeferredRollups final : public DeferredWrites {
 public:
  explicit DeferredRollups(SqlStorage& storage) : storage_(storage) {}

  // The rollups, then the replies (which read them).
  absl::Status flush(SqlConnection& connection) override {
    std::map<std::int64_t, ProductRollups> sums = std::exchange(sums_, {});
    std::vector<PendingReply> replies = std::exchange(replies_, {});
    if (std::exchange(broken_, false)) {
      return absl::InternalError("ingest: the deferred rollups are incomplete (a merge failed); nothing is stored");
    }
    for (const auto& [product, rollups] : sums) {
      if (absl::Status s = storage_.write_rollups(connection, product, rollups); !s.ok()) return s;
    }
    return replies.empty() ? absl::OkStatus() : storage_.answer_replies(connection, replies);
  }
  void discard() noexcept override {
    sums_.clear();
    replies_.clear();
    broken_ = false;
  }
  [[nodiscard]] bool empty() const noexcept override { return sums_.empty() && replies_.empty() && !broken_; }

  [[nodiscard]] const ProductRollups* find(std::int64_t product) const {
    auto it = sums_.find(product);
    return it == sums_.end() ? nullptr : &it->second;
  }
  // Adds `sums`; a merge that throws or overflows leaves the set broken for good (a later add
  // does not mend it): its flush fails, and the transaction with it, rather than write part of a
  // batch that was rolled back.
  // `reply` goes first: when adding it throws, nothing has changed.
  void add(std::int64_t product, const ProductRollups& sums, const PendingReply* reply) {
    if (reply != nullptr) replies_.push_back(*reply);
    if (sums.daily.empty() && sums.profit.empty() && !sums.totals) return;  // nothing stored
    const bool was_broken = broken_;
    broken_ = true;
    if (sums_[product].merge(sums)) broken_ = was_broken;
  }

 private:
  SqlStorage& storage_;  // owns the connection that holds this
  std::map<std::int64_t, ProductRollups> sums_;
  std::vector<PendingReply> replies_;  // in the order of their batches
  bool broken_ = false;
};

const SqlStorage::ProductRollups* SqlStorage::deferred_rollups(const SqlConnection& connection, std::int64_t product) {
  const auto* deferred = dynamic_cast<const DeferredRollups*>(connection.deferred());
  return deferred == nullptr ? nullptr : deferred->find(product);
}

absl::Status SqlStorage::defer_rollups(SqlConnection& connection, std::int64_t product, const ProductRollups& sums,
                                       const PendingReply* reply) {
  if (reply == nullptr && sums.daily.empty() && sums.profit.empty() && !sums.totals) return absl::OkStatus();
  if (connection.deferred() == nullptr) connection.set_deferred(std::make_unique<DeferredRollups>(*this));
  auto* deferred = dynamic_cast<DeferredRollups*>(connection.deferred());
  if (deferred == nullptr) return absl::InternalError("ingest: the connection holds deferred writes of another kind");
  deferred->add(product, sums, reply);
  return absl::OkStatus();
}

namespace {

// The columns of a totals row, in Query::bind_totals()'s order.
constexpr std::string_view kTotalsColumns[] = {"calls", "input_tokens", "output_tokens", "cached_input_tokens",
                                               "cache_creation_input_tokens", "reasoning_tokens", "cost_nanos"};

// "c1, c2, ..." of kTotalsColumns.
std::string totals_columns() {
  std::string out;
  for (const std::string_view c : kTotalsColumns) str_append(&out, out.empty() ? "" : ", ", c);
  return out;
}

// The upsert of `table` keyed by `key` ("product, day, model"): each total added to the stored row's.
std::string add_totals_on_conflict(std::string_view table, std::string_view key) {
  std::string out = str_cat("ON CONFLICT(", key, ") DO UPDATE SET ");
  for (const std::string_view c : kTotalsColumns) {
    str_append(&out, c == kTotalsColumns[0] ? "" : ", ", c, " = ", table, ".", c, " + excluded.", c);
  }
  return out;
}

}  // namespace

absl::Status SqlStorage::write_rollups(SqlConnection& connection, std::int64_t product, const ProductRollups& sums) {
  {
    using DailyRow = std::pair<const std::tuple<std::string_view, std::int64_t, std::string_view>, Totals>;
    std::vector<const DailyRow*> rows;
    rows.reserve(sums.daily.size());
    for (const DailyRow& row : sums.daily) rows.push_back(&row);
    absl::Status s = insert_rows(
        connection, str_cat("INSERT INTO usage_daily(product, user_id, day, model, ", totals_columns(), ")"), 11,
        rows.size(), add_totals_on_conflict("usage_daily", "product, user_id, day, model"), "add daily usage",
        [&](Query& upsert, int first, std::size_t i) {
          const auto& [key, t] = *rows[i];
          const auto& [user, day, model] = key;
          upsert.bind(first, product).bind(first + 1, user).bind(first + 2, day).bind(first + 3, model).bind_totals(first + 4, t);
        });
    if (!s.ok()) return s;
  }
  using Rollup = std::map<std::pair<std::int64_t, std::string_view>, Totals>;
  const std::tuple<std::string_view, std::string_view, const Rollup*> rollups[] = {
      {"usage_daily_by_model", "model", &sums.by_model},
      {"usage_daily_by_user", "user_id", &sums.by_user},
      {"usage_daily_by_provider", "provider", &sums.by_provider}};
  for (const auto& [table, column, rollup] : rollups) {
    std::vector<const Rollup::value_type*> rows;
    rows.reserve(rollup->size());
    for (const auto& row : *rollup) rows.push_back(&row);
    absl::Status s = insert_rows(
        connection, str_cat("INSERT INTO ", table, "(product, day, ", column, ", ", totals_columns(), ")"), 10,
        rows.size(), add_totals_on_conflict(table, str_cat("product, day, ", column)), "add to a usage rollup",
        [&](Query& upsert, int first, std::size_t r) {
          const auto& [key, t] = *rows[r];
          upsert.bind(first, product).bind(first + 1, key.first).bind(first + 2, key.second).bind_totals(first + 3, t);
        });
    if (!s.ok()) return s;
  }
  if (absl::Status s = upsert_profit_daily(connection, product, sums.profit); !s.ok()) return s;
  if (!sums.totals) return absl::OkStatus();
  // The product's totals are the new values (computed with checked arithmetic), not added.
  std::string set;
  for (const std::string_view c : kTotalsColumns) str_append(&set, set.empty() ? "" : ", ", c, " = excluded.", c);
  absl::StatusOr<Query> put_totals =
      prepare(connection, str_cat("INSERT INTO product_totals(product, ", totals_columns(),
                                  ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(product) DO UPDATE SET ", set));
  if (!put_totals.ok()) return put_totals.status();
  put_totals->bind(1, product).bind_totals(2, *sums.totals);
  return put_totals->run("add product totals");
}

}  // namespace paygent::server
