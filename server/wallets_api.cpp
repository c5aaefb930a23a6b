// paygentd's credit wallets (docs/billing.md, "Credit wallets"; issue 11), routes of Api's route
// table (server/api.cpp):
//   POST /api/v1/customers/{id}/wallet/top-ups  {"credits", "paidUsd", "id"} -> 201 {"wallet", "topUp", "created"}
//                                               (200 with created false: that id was stored already)
//   GET  /api/v1/customers/{id}/wallet          -> {"wallet", "topUps": [newest first]}  (404: no wallet)
//   GET  /api/v1/portal/wallet                  -> the same, for the portal token's customer
// The wallet is debited as billed usage arrives: each ingest settles the wallets of its customers
// (Api::ingest), and a read settles the current period first, so that what it shows is what the
// customer's usage has cost so far. The arithmetic is billing/ (billing::recharge), the ledger the
// storage's (server/sql_wallets.cpp).
#include <string>
#include <utility>

#include "meter/internal/str_cat.h"
#include "server/api.h"
#include "server/api_key.h"
#include "server/billing_wire.h"
#include "server/invoicing.h"
#include "server/json_body.h"
#include "server/wire.h"

namespace paygent::server {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

namespace {

// Top-ups listed with a wallet.
constexpr std::size_t kTopUpsShown = 100;
// Longest top-up id.
constexpr std::size_t kMaxTopUpId = 200;

}  // namespace

HttpResponse Api::top_up_wallet(const Call& call) {
  TopUpRecord top_up;
  const BodyField fields[] = {
      {.names = {"credits"}, .type = BodyType::kDecimal, .required = true, .text = &top_up.credits},
      {.names = {"paidUsd"}, .type = BodyType::kDecimal, .text = &top_up.paid_usd},
      {.names = {"id"}, .type = BodyType::kText, .text = &top_up.id, .non_empty = true},
  };
  if (absl::Status s = read_json_body(call.request.body, fields); !s.ok()) return error_response(s);
  if (top_up.paid_usd.empty()) top_up.paid_usd = "0";
  // The body's id, else the Idempotency-Key, else a new one: a retry without either is a second top-up.
  if (top_up.id.empty()) top_up.id = call.request.idempotency_key;
  if (top_up.id.size() > kMaxTopUpId) {
    return error_response(absl::InvalidArgumentError(str_cat("id: at most ", kMaxTopUpId, " bytes")));
  }
  if (top_up.id.empty()) {
    absl::StatusOr<std::string> id = random_hex(12);
    if (!id.ok()) return error_response(id.status());
    top_up.id = str_cat("topup_", *id);
  }
  const absl::Time now = options_.clock();
  absl::StatusOr<Storage::TopUpResult> stored =
      storage_.top_up_wallet(call.product_id, call.param, top_up, absl::ToUnixNanos(now));
  if (absl::IsAlreadyExists(stored.status())) {
    return HttpResponse{.status = 409,
                        .body = str_cat("{\"error\":{\"code\":\"top_up_conflict\",\"message\":",
                                        json_quote(std::string(stored.status().message())), "}}")};
  }
  if (!stored.ok()) return error_response(stored.status());
  // A top-up after the wallet ran out does not pay for overage already settled (that stays on
  // the invoice); the usage that arrives from now on draws on it.
  return HttpResponse{.status = stored->created ? 201 : 200,
                      .body = str_cat("{\"wallet\":", wallet_json(stored->wallet), ",\"topUp\":",
                                      top_up_json(stored->top_up), ",\"created\":", stored->created ? "true" : "false",
                                      "}")};
}

HttpResponse Api::customer_wallet(const Call& call) {
  absl::StatusOr<UserRecord> user = storage_.find_user(call.product_id, call.param);
  if (!user.ok()) return error_response(absl::NotFoundError(str_cat("no customer \"", call.param, "\"")));
  absl::StatusOr<ProductBilling> billing = load_product_billing(storage_, call.product_id);
  if (!billing.ok()) return error_response(billing.status());
  const std::string_view customers[] = {call.param};
  absl::StatusOr<std::vector<WalletRecord>> stored = storage_.find_wallets(call.product_id, customers);
  if (!stored.ok()) return error_response(stored.status());
  absl::StatusOr<std::optional<WalletRecord>> wallet = std::optional<WalletRecord>();
  if (!stored->empty()) wallet = settle_wallet_of(call.product_id, *user, stored->front(), *billing, options_.clock());
  if (!wallet.ok()) return error_response(wallet.status());
  if (!wallet->has_value()) {
    return error_response(absl::NotFoundError(
        str_cat("customer \"", call.param, "\" has no credit wallet: POST /api/v1/customers/{id}/wallet/top-ups makes one")));
  }
  absl::StatusOr<std::vector<TopUpRecord>> top_ups = storage_.list_top_ups(call.product_id, call.param, kTopUpsShown);
  if (!top_ups.ok()) return error_response(top_ups.status());
  std::string body = str_cat("{\"wallet\":", wallet_json(**wallet), ",\"topUps\":[");
  for (std::size_t i = 0; i < top_ups->size(); ++i) str_append(&body, i ? "," : "", top_up_json((*top_ups)[i]));
  body += "]}";
  return HttpResponse{.status = 200, .body = std::move(body)};
}

}  // namespace paygent::server
