// SqlStorage's agents and indicators (see server/sql_storage.h and docs/tracking.md, "Revenue"):
// the agents, agent_indicators, indicator_rates and indicator_billing (an indicator's billable
// metric and pricing model, docs/billing.md) tables, and the billing events the ingest writes
// with their revenue priced at that moment.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "billing/pricing.h"
#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
using ::paygent::internal::str_append;

constexpr std::int64_t kMicrosPerMinute = 60'000'000;
// How far (either way) from a billing event's time the events of its session are looked for: a
// voice session is minutes to hours long; a day bounds the read whatever the customer's history.
constexpr std::int64_t kSessionWindowNs = 86'400'000'000'000;

// The session kind of a custom rate's kind text ("llm", "stt", "tts"); nullopt for another.
std::optional<billing::SessionKind> session_kind(std::string_view kind) {
  if (kind == "llm") return billing::SessionKind::kLlm;
  if (kind == "stt") return billing::SessionKind::kStt;
  if (kind == "tts") return billing::SessionKind::kTts;
  return std::nullopt;
}

// The rows are sorted here rather than by ORDER BY: PostgreSQL's text order follows the
// database's collation, SQLite's is bytewise; the API answers the same on both.
void sort_agent(AgentRecord& agent) {
  std::sort(agent.indicators.begin(), agent.indicators.end(),
            [](const IndicatorPrice& a, const IndicatorPrice& b) { return a.indicator < b.indicator; });
  for (IndicatorPrice& p : agent.indicators) {
    std::sort(p.custom_rates.begin(), p.custom_rates.end(), [](const CustomRate& a, const CustomRate& b) {
      return std::tie(a.kind, a.model) < std::tie(b.kind, b.model);
    });
  }
}

// The revenue of `e` under `price`, `used` being the models its session used before it: a
// per-event price as is; per minute, the event's duration (audio_us) times the session's rate
// (billing::session_rate_per_minute), rounded once to the nano-USD, half away from zero. nullopt
// when no price applies (no base rate and no custom rate of the session's models).
absl::StatusOr<std::optional<std::int64_t>> revenue_of(const EventRecord& e, const IndicatorPrice& price,
                                                       std::span<const billing::SessionModel> used) {
  if (!price.per_minute) return price.price_nanos;
  billing::PerMinutePricing pricing;
  pricing.base_usd_per_minute = billing::Decimal::from_nanos(price.price_nanos.value_or(0));
  bool custom_used = false;
  for (const CustomRate& r : price.custom_rates) {
    const std::optional<billing::SessionKind> kind = session_kind(r.kind);
    if (!kind) continue;
    pricing.custom_rates.push_back(
        billing::ModelRate{.kind = *kind, .model = r.model, .usd_per_minute = billing::Decimal::from_nanos(r.nanos_per_minute)});
    for (const billing::SessionModel& m : used) custom_used |= (m.kind == *kind && m.model == r.model);
  }
  if (!custom_used && !price.price_nanos) return std::optional<std::int64_t>();
  absl::StatusOr<billing::Decimal> rate = billing::session_rate_per_minute(pricing, used);
  if (!rate.ok()) return rate.status();
  absl::StatusOr<billing::Decimal> product = billing::Decimal::mul(*rate, billing::Decimal::from_int(e.audio_us));
  if (!product.ok()) return product.status();
  absl::StatusOr<billing::Decimal> amount = billing::Decimal::div(
      *product, billing::Decimal::from_int(kMicrosPerMinute), 9, billing::RoundingMode::kRound);
  if (!amount.ok()) return amount.status();
  absl::StatusOr<std::int64_t> nanos = amount->to_nanos(billing::RoundingMode::kRound);
  if (!nanos.ok()) return nanos.status();
  return std::optional<std::int64_t>(*nanos);
}

}  // namespace

absl::StatusOr<std::optional<AgentRecord>> SqlStorage::read_agent(SqlConnection& connection, std::int64_t product,
                                                                  std::string_view agent_id) {
  AgentRecord agent;
  {
    absl::StatusOr<Query> select = prepare(connection, "SELECT name FROM agents WHERE product = ?1 AND agent_id = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, product).bind(2, agent_id);
    absl::StatusOr<bool> row = select->step("read agent");
    if (!row.ok()) return row.status();
    if (!*row) return std::optional<AgentRecord>();
    agent.agent_id = std::string(agent_id);
    agent.name = select->text(0);
  }
  std::map<std::string, std::size_t, std::less<>> at;
  {
    absl::StatusOr<Query> select = prepare(
        connection, "SELECT indicator, per_minute, price_nanos FROM agent_indicators WHERE product = ?1 AND agent_id = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, product).bind(2, agent_id);
    for (;;) {
      absl::StatusOr<bool> row = select->step("read indicators");
      if (!row.ok()) return row.status();
      if (!*row) break;
      IndicatorPrice p;
      p.indicator = select->text(0);
      p.per_minute = select->int64(1) != 0;
      if (!select->is_null(2)) p.price_nanos = select->int64(2);
      at.emplace(p.indicator, agent.indicators.size());
      agent.indicators.push_back(std::move(p));
    }
  }
  {
    absl::StatusOr<Query> select =
        prepare(connection,
                "SELECT indicator, rate_kind, rate_model, nanos_per_minute FROM indicator_rates WHERE product = ?1 AND "
                "agent_id = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, product).bind(2, agent_id);
    for (;;) {
      absl::StatusOr<bool> row = select->step("read custom rates");
      if (!row.ok()) return row.status();
      if (!*row) break;
      auto it = at.find(select->text_view(0));
      if (it == at.end()) continue;
      agent.indicators[it->second].custom_rates.push_back(
          CustomRate{.kind = select->text(1), .model = select->text(2), .nanos_per_minute = select->int64(3)});
    }
  }
  {
    absl::StatusOr<Query> select = prepare(
        connection, "SELECT indicator, metric, pricing FROM indicator_billing WHERE product = ?1 AND agent_id = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, product).bind(2, agent_id);
    for (;;) {
      absl::StatusOr<bool> row = select->step("read indicator billing");
      if (!row.ok()) return row.status();
      if (!*row) break;
      auto it = at.find(select->text_view(0));
      if (it == at.end()) continue;
      agent.indicators[it->second].metric = select->text(1);
      agent.indicators[it->second].pricing_json = select->text(2);
    }
  }
  sort_agent(agent);
  return std::optional<AgentRecord>(std::move(agent));
}

absl::StatusOr<bool> SqlStorage::put_agent(std::string_view product_id, const AgentRecord& given) {
  AgentRecord agent = given;
  sort_agent(agent);
  bool changed = false;
  absl::Status status = transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    changed = false;
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<std::optional<AgentRecord>> stored = read_agent(connection, *product, agent.agent_id);
    if (!stored.ok()) return stored.status();
    if (stored->has_value() && **stored == agent) return absl::OkStatus();  // the same again: nothing changes
    changed = true;
    // A linked metric must exist (and then cannot be deleted while linked: sql_metrics.cpp).
    for (const IndicatorPrice& p : agent.indicators) {
      if (p.metric.empty()) continue;
      absl::StatusOr<Query> select =
          prepare(connection, "SELECT 1 FROM billable_metrics WHERE product = ?1 AND identifier = ?2");
      if (!select.ok()) return select.status();
      select->bind(1, *product).bind(2, p.metric);
      absl::StatusOr<bool> row = select->step("find linked metric");
      if (!row.ok()) return row.status();
      if (!*row) {
        return absl::NotFoundError(
            str_cat("indicator \"", p.indicator, "\": metric: no billable metric \"", p.metric, "\""));
      }
    }
    for (std::string_view table : {"agent_indicators", "indicator_rates", "indicator_billing"}) {
      absl::StatusOr<Query> erase =
          prepare(connection, str_cat("DELETE FROM ", table, " WHERE product = ?1 AND agent_id = ?2"));
      if (!erase.ok()) return erase.status();
      erase->bind(1, *product).bind(2, agent.agent_id);
      if (absl::Status s = erase->run("replace indicators"); !s.ok()) return s;
    }
    absl::StatusOr<Query> upsert = prepare(
        connection,
        "INSERT INTO agents(product, agent_id, name, updated_ns) VALUES(?1, ?2, ?3, ?4) ON CONFLICT(product, agent_id) "
        "DO UPDATE SET name = excluded.name, updated_ns = excluded.updated_ns");
    if (!upsert.ok()) return upsert.status();
    upsert->bind(1, *product).bind(2, agent.agent_id).bind(3, agent.name).bind(4, absl::ToUnixNanos(absl::Now()));
    if (absl::Status s = upsert->run("put agent"); !s.ok()) return s;
    for (const IndicatorPrice& p : agent.indicators) {
      // NULL is written as a literal: the statement interface binds no NULL.
      absl::StatusOr<Query> insert = prepare(
          connection, p.price_nanos ? "INSERT INTO agent_indicators(product, agent_id, indicator, per_minute, "
                                      "price_nanos) VALUES(?1, ?2, ?3, ?4, ?5)"
                                    : "INSERT INTO agent_indicators(product, agent_id, indicator, per_minute, "
                                      "price_nanos) VALUES(?1, ?2, ?3, ?4, NULL)");
      if (!insert.ok()) return insert.status();
      insert->bind(1, *product).bind(2, agent.agent_id).bind(3, p.indicator).bind(4, std::int64_t{p.per_minute ? 1 : 0});
      if (p.price_nanos) insert->bind(5, *p.price_nanos);
      if (absl::Status s = insert->run("put indicator"); !s.ok()) return s;
      for (const CustomRate& r : p.custom_rates) {
        absl::StatusOr<Query> rate = prepare(
            connection,
            "INSERT INTO indicator_rates(product, agent_id, indicator, rate_kind, rate_model, nanos_per_minute) "
            "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
        if (!rate.ok()) return rate.status();
        rate->bind(1, *product).bind(2, agent.agent_id).bind(3, p.indicator).bind(4, r.kind).bind(5, r.model).bind(
            6, r.nanos_per_minute);
        if (absl::Status s = rate->run("put custom rate"); !s.ok()) return s;
      }
      if (!p.metric.empty() || !p.pricing_json.empty()) {
        absl::StatusOr<Query> billing = prepare(
            connection,
            "INSERT INTO indicator_billing(product, agent_id, indicator, metric, pricing) VALUES(?1, ?2, ?3, ?4, ?5)");
        if (!billing.ok()) return billing.status();
        billing->bind(1, *product).bind(2, agent.agent_id).bind(3, p.indicator).bind(4, p.metric).bind(5, p.pricing_json);
        if (absl::Status s = billing->run("put indicator billing"); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return changed;
}

absl::StatusOr<std::vector<AgentRecord>> SqlStorage::list_agents(std::string_view product_id) {
  return list_records<AgentRecord>(product_id, "SELECT agent_id FROM agents WHERE product = ?1", "list agents", &read_agent);
}

absl::StatusOr<AgentRecord> SqlStorage::find_agent(std::string_view product_id, std::string_view agent_id) {
  return find_record<AgentRecord>(product_id, agent_id, str_cat("no agent \"", agent_id, "\""), &read_agent);
}

absl::Status SqlStorage::delete_agent(std::string_view product_id, std::string_view agent_id) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    std::int64_t deleted = 0;
    for (std::string_view table : {"agents", "agent_indicators", "indicator_rates", "indicator_billing"}) {
      absl::StatusOr<Query> erase =
          prepare(connection, str_cat("DELETE FROM ", table, " WHERE product = ?1 AND agent_id = ?2"));
      if (!erase.ok()) return erase.status();
      erase->bind(1, *product).bind(2, agent_id);
      if (absl::Status s = erase->run("delete agent"); !s.ok()) return s;
      if (table == "agents") deleted = erase->changes();
    }
    if (deleted == 0) return absl::NotFoundError(str_cat("no agent \"", agent_id, "\""));
    return absl::OkStatus();
  });
}

absl::Status SqlStorage::store_billing_events(SqlConnection& connection, std::int64_t product,
                                              std::int64_t received_ns, std::span<const EventRecord> events,
                                              std::span<const storage_internal::EventId> ids,
                                              const std::vector<bool>& stored) {
  // Each (agent, indicator) of the batch is read once.
  std::map<std::pair<std::string_view, std::string_view>, std::optional<IndicatorPrice>> prices;
  std::map<std::string_view, std::optional<AgentRecord>> agents;
  std::vector<std::pair<std::size_t, std::int64_t>> priced_rows, unpriced_rows;  // (event index, revenue)
  for (std::size_t i = 0; i < events.size(); ++i) {
    const EventRecord& e = events[i];
    if (!stored[i] || e.indicator.empty()) continue;
    auto price_it = prices.find({e.agent_id, e.indicator});
    if (price_it == prices.end()) {
      auto agent_it = agents.find(e.agent_id);
      if (agent_it == agents.end()) {
        absl::StatusOr<std::optional<AgentRecord>> agent = read_agent(connection, product, e.agent_id);
        if (!agent.ok()) return agent.status();
        agent_it = agents.emplace(e.agent_id, *std::move(agent)).first;
      }
      std::optional<IndicatorPrice> price;
      if (agent_it->second) {
        for (const IndicatorPrice& p : agent_it->second->indicators) {
          if (p.indicator == e.indicator) price = p;
        }
      }
      price_it = prices.emplace(std::pair{std::string_view(e.agent_id), std::string_view(e.indicator)}, std::move(price))
                     .first;
    }
    std::optional<std::int64_t> revenue;
    if (const std::optional<IndicatorPrice>& price = price_it->second; price) {
      // The models of the session's events stored before this one (earlier batches, and earlier
      // in this batch): a custom rate applies only to what the session used.
      std::vector<std::pair<billing::SessionKind, std::string>> used_models;
      if (price->per_minute && !price->custom_rates.empty() && !e.session_id.empty()) {
        absl::flat_hash_set<std::string> later;
        for (std::size_t j = i + 1; j < events.size(); ++j) {
          if (stored[j] && events[j].session_id == e.session_id && events[j].user_id == e.user_id) {
            later.insert(std::string(reinterpret_cast<const char*>(ids[j].data()), ids[j].size()));
          }
        }
        absl::StatusOr<Query> select = prepare(
            connection,
            "SELECT id, kind, model FROM events WHERE product = ?1 AND user_id = ?2 AND ts_ns >= ?4 AND ts_ns <= ?5 "
            "AND session_id = ?3 AND kind IN ('llm', 'stt', 'tts')");
        if (!select.ok()) return select.status();
        // Within kSessionWindowNs of the billing event: the (product, user_id, ts_ns) index reads
        // that window, not the customer's whole history.
        select->bind(1, product)
            .bind(2, e.user_id)
            .bind(3, e.session_id)
            .bind(4, e.ts_ns - std::min(e.ts_ns, kSessionWindowNs))
            .bind(5, e.ts_ns > INT64_MAX - kSessionWindowNs ? INT64_MAX : e.ts_ns + kSessionWindowNs);
        for (;;) {
          absl::StatusOr<bool> row = select->step("read the session's models");
          if (!row.ok()) return row.status();
          if (!*row) break;
          if (later.contains(select->blob(0))) continue;
          if (std::optional<billing::SessionKind> kind = session_kind(select->text_view(1)); kind) {
            used_models.emplace_back(*kind, select->text(2));
          }
        }
      }
      std::vector<billing::SessionModel> used;
      used.reserve(used_models.size());
      for (const auto& [kind, model] : used_models) used.push_back(billing::SessionModel{kind, model});
      absl::StatusOr<std::optional<std::int64_t>> priced = revenue_of(e, *price, used);
      if (!priced.ok()) {
        return absl::InvalidArgumentError(str_cat("events[", i, "]: its revenue cannot be computed: ", priced.status().message()));
      }
      revenue = *priced;
    }
    (revenue ? priced_rows : unpriced_rows).emplace_back(i, revenue.value_or(0));
  }
  // As many rows per INSERT as the dialect takes (PostgreSQL: one round trip per 100); an unpriced
  // one leaves revenue_nanos out, so it is NULL.
  for (const bool priced : {true, false}) {
    const std::vector<std::pair<std::size_t, std::int64_t>>& rows = priced ? priced_rows : unpriced_rows;
    absl::Status s = insert_rows(
        connection,
        priced ? "INSERT INTO billing_events(product, id, user_id, agent_id, indicator, session_id, model, ts_ns, "
                 "duration_us, meta_tags, received_ns, revenue_nanos)"
               : "INSERT INTO billing_events(product, id, user_id, agent_id, indicator, session_id, model, ts_ns, "
                 "duration_us, meta_tags, received_ns)",
        priced ? 12 : 11, rows.size(), "", "store billing events", [&](Query& insert, int first, std::size_t r) {
          const EventRecord& e = events[rows[r].first];
          // The event's own tags and arrival, as its events row has them (bind_event).
          const std::string_view tags = e.meta_tags_json.empty() ? std::string_view("{}") : std::string_view(e.meta_tags_json);
          insert.bind(first, product)
              .bind_blob(first + 1, ids[rows[r].first])
              .bind(first + 2, e.user_id)
              .bind(first + 3, e.agent_id)
              .bind(first + 4, e.indicator)
              .bind(first + 5, e.session_id)
              .bind(first + 6, e.model)
              .bind(first + 7, e.ts_ns)
              .bind(first + 8, e.audio_us)
              .bind(first + 9, tags)
              .bind(first + 10, received_ns);
          if (priced) insert.bind(first + 11, rows[r].second);
        });
    if (!s.ok()) return s;
  }
  if (absl::Status s = mark_wallets_pending(connection, product, events, priced_rows, unpriced_rows); !s.ok()) return s;
  if (absl::Status s = add_tag_rollups(connection, product, events, stored, priced_rows, unpriced_rows); !s.ok()) return s;
  return add_billing_rollup(connection, product, events, priced_rows, unpriced_rows);
}

absl::Status SqlStorage::mark_wallets_pending(SqlConnection& connection, std::int64_t product,
                                              std::span<const EventRecord> events,
                                              std::span<const std::pair<std::size_t, std::int64_t>> priced_rows,
                                              std::span<const std::pair<std::size_t, std::int64_t>> unpriced_rows) {
  // The earliest billing event of each customer of the batch: a customer with a wallet gets (or
  // keeps the earlier of) a pending mark in this transaction, so that a settle lost after the
  // commit (a crash, a failed write) is made by the next one (Api::settle_wallets).
  std::map<std::string_view, std::int64_t> earliest;
  for (const auto* rows : {&priced_rows, &unpriced_rows}) {
    for (const auto& [i, revenue] : *rows) {
      auto [it, fresh] = earliest.try_emplace(events[i].user_id, events[i].ts_ns);
      if (!fresh && events[i].ts_ns < it->second) it->second = events[i].ts_ns;
    }
  }
  if (earliest.empty()) return absl::OkStatus();
  absl::StatusOr<Query> mark = prepare(
      connection,
      "INSERT INTO credit_settle_pending(product, customer_id, from_ts_ns, version) "
      "SELECT ?1, ?2, ?3, 1 FROM credit_wallets WHERE product = ?1 AND customer_id = ?2 "
      "ON CONFLICT(product, customer_id) DO UPDATE SET from_ts_ns = CASE WHEN excluded.from_ts_ns < "
      "credit_settle_pending.from_ts_ns THEN excluded.from_ts_ns ELSE credit_settle_pending.from_ts_ns END, "
      "version = credit_settle_pending.version + 1");
  if (!mark.ok()) return mark.status();
  for (const auto& [customer, ts] : earliest) {
    mark->bind(1, product).bind(2, customer).bind(3, ts);
    if (absl::Status s = mark->run("mark the wallet's settle pending"); !s.ok()) return s;
    mark->reset();
  }
  return absl::OkStatus();
}

namespace {

// A key of profit_daily: (UTC day, customer, agent, indicator).
using ProfitKey = std::tuple<std::int64_t, std::string_view, std::string_view, std::string_view>;
ProfitKey profit_key(const EventRecord& e) {
  return ProfitKey{e.ts_ns / storage_internal::kNanosPerDay, e.user_id, e.agent_id, e.indicator};
}

// profit_daily's sums of one key.
struct ProfitSums {
  std::int64_t cost_events = 0, cost_nanos = 0, cost_unknown = 0, billing_events = 0, revenue_nanos = 0, revenue_known = 0;
};

// The upsert of profit_daily: every sum added to the stored row's.
constexpr std::string_view kProfitUpsert =
    "ON CONFLICT(product, day, user_id, agent_id, indicator) DO UPDATE SET "
    "cost_events = profit_daily.cost_events + excluded.cost_events, "
    "cost_nanos = profit_daily.cost_nanos + excluded.cost_nanos, "
    "cost_unknown = profit_daily.cost_unknown + excluded.cost_unknown, "
    "billing_events = profit_daily.billing_events + excluded.billing_events, "
    "revenue_nanos = profit_daily.revenue_nanos + excluded.revenue_nanos, "
    "revenue_known = profit_daily.revenue_known + excluded.revenue_known";

}  // namespace

absl::Status SqlStorage::upsert_profit_daily(SqlConnection& connection, std::int64_t product,
                                             const std::map<ProfitKeyView, ProfitSumsView>& sums) {
  std::vector<const std::pair<const ProfitKeyView, ProfitSumsView>*> rows;
  rows.reserve(sums.size());
  for (const auto& row : sums) rows.push_back(&row);
  return insert_rows(
      connection,
      "INSERT INTO profit_daily(product, day, user_id, agent_id, indicator, cost_events, cost_nanos, cost_unknown, "
      "billing_events, revenue_nanos, revenue_known)",
      11, rows.size(), kProfitUpsert, "add to the profit rollup", [&](Query& upsert, int first, std::size_t r) {
        const auto& [key, s] = *rows[r];
        const auto& [day, user, agent, indicator] = key;
        upsert.bind(first, product)
            .bind(first + 1, day)
            .bind(first + 2, user)
            .bind(first + 3, agent)
            .bind(first + 4, indicator)
            .bind(first + 5, s[0])
            .bind(first + 6, s[1])
            .bind(first + 7, s[2])
            .bind(first + 8, s[3])
            .bind(first + 9, s[4])
            .bind(first + 10, s[5]);
      });
}

absl::Status SqlStorage::add_billing_rollup(SqlConnection& connection, std::int64_t product,
                                            std::span<const EventRecord> events,
                                            std::span<const std::pair<std::size_t, std::int64_t>> priced_rows,
                                            std::span<const std::pair<std::size_t, std::int64_t>> unpriced_rows) {
  std::map<ProfitKeyView, ProfitSumsView> sums;
  for (const auto& [i, revenue] : priced_rows) {
    ProfitSumsView& s = sums[profit_key(events[i])];
    ++s[3];
    ++s[5];
    if (__builtin_add_overflow(s[4], revenue, &s[4])) {
      return absl::InvalidArgumentError("the batch would overflow a 64-bit total (revenue)");
    }
  }
  for (const auto& [i, unused] : unpriced_rows) ++sums[profit_key(events[i])][3];
  return upsert_profit_daily(connection, product, sums);
}

}  // namespace paygent::server
