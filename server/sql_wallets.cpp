// SqlStorage's credit wallets (Storage::top_up_wallet, settle_wallet; docs/billing.md, "Credit
// wallets"). credit_wallets keeps each wallet's running totals, credit_top_ups its top-ups (keyed by
// the caller's id: a retried top-up adds nothing) and credit_charges the ledger: one row per
// customer, CREDITS indicator and billing period, moved by billing::recharge under the customer's
// lock. Amounts are exact decimal text, read and written through billing::Decimal.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "billing/decimal.h"
#include "billing/pricing.h"
#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"
#include "server/webhooks.h"

namespace paygent::server {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

namespace {

using billing::Decimal;

constexpr std::string_view kWalletColumns =
    "customer_id, granted, balance, used, overage, paid_usd, top_ups, updated_ns, created_ns";
// Customers per query of find_wallets().
constexpr std::size_t kWalletsPerQuery = 100;

WalletRecord wallet_of_row(const Query& q) {
  return WalletRecord{.customer_id = q.text(0),
                      .granted = q.text(1),
                      .balance = q.text(2),
                      .used = q.text(3),
                      .overage = q.text(4),
                      .paid_usd = q.text(5),
                      .top_ups = q.int64(6),
                      .created_ns = q.int64(8),
                      .updated_ns = q.int64(7)};
}

// A stored amount: the storage wrote it, so a parse failure is corruption, said as such.
absl::StatusOr<Decimal> stored_decimal(const std::string& text, std::string_view what) {
  absl::StatusOr<Decimal> d = Decimal::parse(text);
  if (!d.ok()) return absl::DataLossError(str_cat("a stored ", what, " is not a decimal: \"", text, "\""));
  return d;
}

absl::StatusOr<std::optional<WalletRecord>> read_wallet(SqlConnection& connection, std::int64_t product,
                                                        std::string_view customer_id, std::string_view lock) {
  absl::StatusOr<Query> select = prepare(
      connection, str_cat("SELECT ", kWalletColumns, " FROM credit_wallets WHERE product = ?1 AND customer_id = ?2", lock));
  if (!select.ok()) return select.status();
  select->bind(1, product).bind(2, customer_id);
  absl::StatusOr<bool> row = select->step("read the wallet");
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<WalletRecord>();
  return std::optional<WalletRecord>(wallet_of_row(*select));
}

absl::Status write_wallet(SqlConnection& connection, std::int64_t product, const WalletRecord& w) {
  absl::StatusOr<Query> upsert = prepare(
      connection,
      "INSERT INTO credit_wallets(product, customer_id, granted, balance, used, overage, paid_usd, top_ups, updated_ns, "
      "created_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(product, customer_id) DO UPDATE SET "
      "granted = excluded.granted, balance = excluded.balance, used = excluded.used, overage = excluded.overage, "
      "paid_usd = excluded.paid_usd, top_ups = excluded.top_ups, updated_ns = excluded.updated_ns");
  if (!upsert.ok()) return upsert.status();
  upsert->bind(1, product)
      .bind(2, w.customer_id)
      .bind(3, w.granted)
      .bind(4, w.balance)
      .bind(5, w.used)
      .bind(6, w.overage)
      .bind(7, w.paid_usd)
      .bind(8, w.top_ups)
      .bind(9, w.updated_ns)
      .bind(10, w.created_ns);
  return upsert->run("write the wallet");
}

absl::StatusOr<Decimal> add(const Decimal& a, const Decimal& b, std::string_view what) {
  absl::StatusOr<Decimal> sum = Decimal::add(a, b);
  if (!sum.ok()) return absl::InvalidArgumentError(str_cat(what, ": the wallet's total would overflow"));
  return sum;
}

}  // namespace

absl::StatusOr<Storage::TopUpResult> SqlStorage::top_up_wallet(std::string_view product_id, std::string_view customer_id,
                                                               const TopUpRecord& top_up, std::int64_t now_ns) {
  absl::StatusOr<Decimal> credits = Decimal::parse(top_up.credits);
  if (!credits.ok()) return absl::InvalidArgumentError(str_cat("credits: ", credits.status().message()));
  if (!(*credits > Decimal())) return absl::InvalidArgumentError(str_cat("credits: ", top_up.credits, " is not above 0"));
  absl::StatusOr<Decimal> paid = Decimal::parse(top_up.paid_usd);
  if (!paid.ok()) return absl::InvalidArgumentError(str_cat("paidUsd: ", paid.status().message()));
  if (paid->is_negative()) return absl::InvalidArgumentError(str_cat("paidUsd: ", top_up.paid_usd, " is negative"));

  TopUpResult out;
  const std::string_view customers[] = {customer_id};
  absl::Status status = with_user_locks(product_id, customers, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
    out = {};
    absl::StatusOr<Query> user = prepare(connection, "SELECT 1 FROM users WHERE product = ?1 AND user_id = ?2");
    if (!user.ok()) return user.status();
    user->bind(1, product).bind(2, customer_id);
    absl::StatusOr<bool> known = user->step("find the customer");
    if (!known.ok()) return known.status();
    if (!*known) return absl::NotFoundError(str_cat("no customer \"", customer_id, "\""));

    absl::StatusOr<std::optional<WalletRecord>> stored = read_wallet(connection, product, customer_id, "");
    if (!stored.ok()) return stored.status();
    WalletRecord w = stored->value_or(WalletRecord{.customer_id = std::string(customer_id), .created_ns = now_ns});

    // The same id again: what it did is what the caller gets (a retry), unless it says otherwise.
    absl::StatusOr<Query> earlier = prepare(
        connection,
        "SELECT credits, paid_usd, created_ns FROM credit_top_ups WHERE product = ?1 AND customer_id = ?2 AND id = ?3");
    if (!earlier.ok()) return earlier.status();
    earlier->bind(1, product).bind(2, customer_id).bind(3, top_up.id);
    absl::StatusOr<bool> seen = earlier->step("find the top-up");
    if (!seen.ok()) return seen.status();
    if (*seen) {
      absl::StatusOr<Decimal> was_credits = stored_decimal(earlier->text(0), "top-up");
      absl::StatusOr<Decimal> was_paid = stored_decimal(earlier->text(1), "top-up");
      if (!was_credits.ok()) return was_credits.status();
      if (!was_paid.ok()) return was_paid.status();
      if (!(*was_credits == *credits) || !(*was_paid == *paid)) {
        return absl::AlreadyExistsError(str_cat("id: top-up \"", top_up.id, "\" was stored with credits ",
                                                earlier->text(0), " and paidUsd ", earlier->text(1),
                                                "; a new top-up needs a new id"));
      }
      out = TopUpResult{.wallet = std::move(w),
                        .top_up = TopUpRecord{.id = top_up.id,
                                              .credits = was_credits->normalized().to_string(),
                                              .paid_usd = was_paid->normalized().to_string(),
                                              .created_ns = earlier->int64(2)},
                        .created = false};
      return absl::OkStatus();
    }
    earlier->reset();

    absl::StatusOr<Decimal> granted = stored_decimal(w.granted, "wallet total");
    absl::StatusOr<Decimal> balance = stored_decimal(w.balance, "wallet balance");
    absl::StatusOr<Decimal> paid_total = stored_decimal(w.paid_usd, "wallet total");
    if (!granted.ok()) return granted.status();
    if (!balance.ok()) return balance.status();
    if (!paid_total.ok()) return paid_total.status();
    absl::StatusOr<Decimal> new_granted = add(*granted, *credits, "credits");
    absl::StatusOr<Decimal> new_balance = add(*balance, *credits, "credits");
    absl::StatusOr<Decimal> new_paid = add(*paid_total, *paid, "paidUsd");
    if (!new_granted.ok()) return new_granted.status();
    if (!new_balance.ok()) return new_balance.status();
    if (!new_paid.ok()) return new_paid.status();
    w.granted = new_granted->normalized().to_string();
    w.balance = new_balance->normalized().to_string();
    w.paid_usd = new_paid->normalized().to_string();
    w.top_ups += 1;
    w.updated_ns = now_ns;

    absl::StatusOr<Query> insert = prepare(
        connection,
        "INSERT INTO credit_top_ups(product, customer_id, id, credits, paid_usd, created_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    if (!insert.ok()) return insert.status();
    // Bound text is not copied: it lives until the statement has run.
    const std::string credits_text = credits->normalized().to_string(), paid_text = paid->normalized().to_string();
    insert->bind(1, product)
        .bind(2, customer_id)
        .bind(3, top_up.id)
        .bind(4, credits_text)
        .bind(5, paid_text)
        .bind(6, now_ns);
    if (absl::Status s = insert->run("store the top-up"); !s.ok()) return s;
    if (absl::Status s = write_wallet(connection, product, w); !s.ok()) return s;
    out = TopUpResult{.wallet = std::move(w),
                      .top_up = TopUpRecord{.id = top_up.id,
                                            .credits = credits->normalized().to_string(),
                                            .paid_usd = paid->normalized().to_string(),
                                            .created_ns = now_ns},
                      .created = true};
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<WalletRecord>> SqlStorage::find_wallets(std::string_view product_id,
                                                                   std::span<const std::string_view> customer_ids) {
  std::vector<WalletRecord> out;
  if (customer_ids.empty()) return out;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    // A query per kWalletsPerQuery customers (a batch's users: one round trip for most).
    return select_in(connection, str_cat("SELECT ", kWalletColumns, " FROM credit_wallets WHERE product = ?1 AND customer_id IN "),
                     **product, customer_ids, kWalletsPerQuery, "read wallets",
                     [&](const Query& q) { out.push_back(wallet_of_row(q)); });
  });
  if (!status.ok()) return status;
  std::sort(out.begin(), out.end(), [](const WalletRecord& a, const WalletRecord& b) { return a.customer_id < b.customer_id; });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const WalletRecord& a, const WalletRecord& b) { return a.customer_id == b.customer_id; }),
            out.end());
  return out;
}

absl::StatusOr<std::vector<TopUpRecord>> SqlStorage::list_top_ups(std::string_view product_id,
                                                                  std::string_view customer_id, std::size_t limit) {
  std::vector<TopUpRecord> out;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(
        connection, str_cat("SELECT id, credits, paid_usd, created_ns FROM credit_top_ups WHERE product = ?1 AND "
                            "customer_id = ?2 ORDER BY created_ns DESC, id DESC LIMIT ",
                            limit));
    if (!select.ok()) return select.status();
    select->bind(1, **product).bind(2, customer_id);
    for (;;) {
      absl::StatusOr<bool> row = select->step("read top-ups");
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      out.push_back(TopUpRecord{.id = select->text(0),
                                .credits = select->text(1),
                                .paid_usd = select->text(2),
                                .created_ns = select->int64(3)});
    }
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::optional<WalletRecord>> SqlStorage::settle_wallet(std::string_view product_id,
                                                                      std::string_view customer_id, TimeRange period,
                                                                      std::int64_t now_ns, CreditsOf credits_of) {
  std::optional<WalletRecord> out;
  const std::string_view customers[] = {customer_id};
  absl::Status status = with_user_locks(product_id, customers, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
    out.reset();
    // The wallet's row is read for update: the customer's lock already serialises its writers.
    absl::StatusOr<std::optional<WalletRecord>> stored = read_wallet(connection, product, customer_id, "");
    if (!stored.ok()) return stored.status();
    if (!stored->has_value()) return absl::OkStatus();
    WalletRecord w = **stored;
    out = w;
    // A period over before the wallet was made is not its to pay (nor to rewrite).
    if (period.to_ns <= w.created_ns) return absl::OkStatus();
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> credits =
        credits_of([&](TimeRange range, absl::FunctionRef<absl::Status(const BillingEventRow&)> fn) {
          ScanCursor cursor;
          return scan_billing_rows(connection, product, customer_id, range, cursor, fn);
        });
    if (!credits.ok()) return credits.status();

    absl::StatusOr<Decimal> balance = stored_decimal(w.balance, "wallet balance");
    absl::StatusOr<Decimal> used = stored_decimal(w.used, "wallet total");
    absl::StatusOr<Decimal> overage = stored_decimal(w.overage, "wallet total");
    if (!balance.ok()) return balance.status();
    if (!used.ok()) return used.status();
    if (!overage.ok()) return overage.status();
    absl::StatusOr<Query> select = prepare(
        connection, "SELECT charged, used, overage FROM credit_charges WHERE product = ?1 AND customer_id = ?2 AND "
                    "indicator = ?3 AND period_start_ns = ?4");
    if (!select.ok()) return select.status();
    absl::StatusOr<Query> upsert = prepare(
        connection,
        "INSERT INTO credit_charges(product, customer_id, indicator, period_start_ns, period_end_ns, charged, used, "
        "overage) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(product, customer_id, indicator, period_start_ns) "
        "DO UPDATE SET period_end_ns = excluded.period_end_ns, charged = excluded.charged, used = excluded.used, "
        "overage = excluded.overage");
    if (!upsert.ok()) return upsert.status();
    // The period's ledger rows of indicators no longer priced in CREDITS go back to 0.
    std::vector<std::pair<std::string, std::string>> targets = *std::move(credits);
    {
      absl::StatusOr<Query> stale = prepare(
          connection, "SELECT indicator FROM credit_charges WHERE product = ?1 AND customer_id = ?2 AND period_start_ns = ?3");
      if (!stale.ok()) return stale.status();
      stale->bind(1, product).bind(2, customer_id).bind(3, period.from_ns);
      std::vector<std::string> gone;
      for (;;) {
        absl::StatusOr<bool> row = stale->step("read the ledger");
        if (!row.ok()) return row.status();
        if (!*row) break;
        std::string indicator = stale->text(0);
        if (std::none_of(targets.begin(), targets.end(), [&](const auto& t) { return t.first == indicator; })) {
          gone.push_back(std::move(indicator));
        }
      }
      for (std::string& indicator : gone) targets.emplace_back(std::move(indicator), "0");
    }
    // A row of another period overlapping this one (the customer's periods changed) holds some of
    // the same events: such an indicator is left alone rather than debited twice.
    absl::StatusOr<Query> overlap = prepare(
        connection, "SELECT 1 FROM credit_charges WHERE product = ?1 AND customer_id = ?2 AND indicator = ?3 AND "
                    "period_start_ns <> ?4 AND period_start_ns < ?5 AND period_end_ns > ?4");
    if (!overlap.ok()) return overlap.status();
    bool changed = false;
    for (const auto& [indicator, credits_text] : targets) {
      absl::StatusOr<Decimal> charged_now = Decimal::parse(credits_text);
      if (!charged_now.ok()) return absl::InternalError(str_cat("credits of ", indicator, ": ", charged_now.status().message()));
      overlap->bind(1, product).bind(2, customer_id).bind(3, indicator).bind(4, period.from_ns).bind(5, period.to_ns);
      absl::StatusOr<bool> overlapping = overlap->step("check the ledger's periods");
      if (!overlapping.ok()) return overlapping.status();
      overlap->reset();
      if (*overlapping) continue;
      billing::CreditCharge line;
      select->bind(1, product).bind(2, customer_id).bind(3, indicator).bind(4, period.from_ns);
      absl::StatusOr<bool> row = select->step("read the ledger");
      if (!row.ok()) return row.status();
      if (*row) {
        for (auto [column, field] : {std::pair{0, &line.charged}, std::pair{1, &line.used}, std::pair{2, &line.overage}}) {
          absl::StatusOr<Decimal> d = stored_decimal(select->text(column), "ledger amount");
          if (!d.ok()) return d.status();
          *field = *d;
        }
      }
      select->reset();
      if (*row && line.charged == *charged_now) continue;  // nothing new
      const billing::CreditCharge before = line;
      if (absl::Status s = billing::recharge(line, *charged_now, *balance); !s.ok()) return s;
      absl::StatusOr<Decimal> used_delta = Decimal::sub(line.used, before.used);
      absl::StatusOr<Decimal> overage_delta = Decimal::sub(line.overage, before.overage);
      if (!used_delta.ok()) return used_delta.status();
      if (!overage_delta.ok()) return overage_delta.status();
      absl::StatusOr<Decimal> new_used = Decimal::add(*used, *used_delta);
      absl::StatusOr<Decimal> new_overage = Decimal::add(*overage, *overage_delta);
      if (!new_used.ok()) return new_used.status();
      if (!new_overage.ok()) return new_overage.status();
      used = *new_used;
      overage = *new_overage;
      // Bound text is not copied: it lives until the statement has run.
      const std::string charged_text = line.charged.normalized().to_string(),
                        used_text = line.used.normalized().to_string(),
                        overage_text = line.overage.normalized().to_string();
      upsert->bind(1, product)
          .bind(2, customer_id)
          .bind(3, indicator)
          .bind(4, period.from_ns)
          .bind(5, period.to_ns)
          .bind(6, charged_text)
          .bind(7, used_text)
          .bind(8, overage_text);
      if (absl::Status s = upsert->run("write the ledger"); !s.ok()) return s;
      upsert->reset();
      changed = true;
    }
    if (changed) {
      w.balance = balance->normalized().to_string();
      w.used = used->normalized().to_string();
      w.overage = overage->normalized().to_string();
      w.updated_ns = now_ns;
      if (absl::Status s = write_wallet(connection, product, w); !s.ok()) return s;
      // Wallet alerts (docs/webhooks.md) go to the outbox in the transaction that moved the balance.
      absl::StatusOr<std::uint32_t> mask = webhook_mask(connection, product);
      if (!mask.ok()) return mask.status();
      const std::uint32_t wanted =
          *mask & (static_cast<std::uint32_t>(AlertType::kWalletLow) | static_cast<std::uint32_t>(AlertType::kWalletEmpty));
      if (wanted != 0) {
        absl::StatusOr<AlertSettings> settings = alert_settings_in(connection, product);
        if (!settings.ok()) return settings.status();
        for (const WebhookAlert& alert : wallet_alerts(product_id, w, wanted, now_ns, settings->wallet_low_percent)) {
          if (absl::StatusOr<bool> stored = store_alert(connection, product, alert); !stored.ok()) return stored.status();
        }
      }
    }
    out = std::move(w);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<WalletCharge>> SqlStorage::wallet_charges(std::string_view product_id,
                                                                     std::string_view customer_id, TimeRange period) {
  std::vector<WalletCharge> out;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    out.clear();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(
        connection, "SELECT indicator, period_start_ns, period_end_ns, charged, used, overage FROM credit_charges "
                    "WHERE product = ?1 AND customer_id = ?2 AND period_start_ns = ?3 ORDER BY indicator");
    if (!select.ok()) return select.status();
    select->bind(1, **product).bind(2, customer_id).bind(3, period.from_ns);
    for (;;) {
      absl::StatusOr<bool> row = select->step("read the ledger");
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      out.push_back(WalletCharge{.indicator = select->text(0),
                                 .period_start_ns = select->int64(1),
                                 .period_end_ns = select->int64(2),
                                 .charged = select->text(3),
                                 .used = select->text(4),
                                 .overage = select->text(5)});
    }
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::optional<SettlePending>> SqlStorage::wallet_settle_pending(std::string_view product_id,
                                                                               std::string_view customer_id) {
  std::optional<SettlePending> out;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    out.reset();
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(
        connection, "SELECT from_ts_ns, version FROM credit_settle_pending WHERE product = ?1 AND customer_id = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, **product).bind(2, customer_id);
    absl::StatusOr<bool> row = select->step("read the pending settle");
    if (!row.ok()) return row.status();
    if (*row) out = SettlePending{.from_ts_ns = select->int64(0), .version = select->int64(1)};
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::Status SqlStorage::clear_wallet_settle_pending(std::string_view product_id, std::string_view customer_id,
                                                     std::int64_t version) {
  const std::string_view customers[] = {customer_id};
  return with_user_locks(product_id, customers, [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
    absl::StatusOr<Query> erase = prepare(
        connection, "DELETE FROM credit_settle_pending WHERE product = ?1 AND customer_id = ?2 AND version = ?3");
    if (!erase.ok()) return erase.status();
    erase->bind(1, product).bind(2, customer_id).bind(3, version);
    return erase->run("clear the pending settle");
  });
}

}  // namespace paygent::server
