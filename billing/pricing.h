// Pricing of a metered quantity (seed 003 step 3, and the per-event / per-minute prices of the
// tracking issue): FLAT, VOLUME, GRADUATED, CREDITS, credit wallets, and the voice per-minute rule.
//
// Everything is exact (billing/decimal.h): an amount is never rounded here; the invoice rounds once,
// at the rendered line.
// Lifetime and thread safety: Pricing, PriceTier, TierCharge, Charge, ModelRate and PerMinutePricing
// are plain values (read from any number of threads, written from one); the free functions have no
// shared state and keep nothing they are given. CreditWallet states its own contract below.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "billing/decimal.h"
#include "billing/metric.h"

namespace paygent::billing {

enum class PricingModel : std::uint8_t { kFlat, kVolume, kGraduated, kCredits };
// "flat", "volume", "graduated", "credits".
[[nodiscard]] std::string_view pricing_model_name(PricingModel model) noexcept;
absl::StatusOr<PricingModel> parse_pricing_model(std::string_view name);

// One tier of VOLUME or GRADUATED pricing. Tier i covers quantities above tier i-1's `up_to` up to
// and including its own; the last tier has no `up_to` (unbounded).
struct PriceTier {
  std::optional<Decimal> up_to;
  Decimal unit_price;  // USD per unit
  Decimal flat_fee;    // USD, charged once when the tier is reached (GRADUATED) or is the tier (VOLUME)
};

// How an indicator's quantity is priced. Plain data; validate_pricing() checks it.
struct Pricing {
  PricingModel model = PricingModel::kFlat;
  std::string unit = "unit";     // what one unit is, for the invoice ("call", "minute", "GPU-hour")
  Decimal unit_price;            // FLAT: USD per unit ($0.20 per call, $0.15 per minute)
  std::vector<PriceTier> tiers;  // VOLUME, GRADUATED
  Decimal credits_per_unit;      // CREDITS: credits debited per unit (0.01 credits per token)
  // CREDITS: USD charged per credit of usage beyond the wallet's balance. Without it the overage is
  // shown on the invoice (in credits) and not charged.
  std::optional<Decimal> overage_usd_per_credit;
};

// OK, or InvalidArgument naming the field ("unit_price: is negative", "tiers[1].up_to: 100 is not
// above tiers[0].up_to 100", "tiers[2].up_to: the last tier must be unbounded").
absl::Status validate_pricing(const Pricing& pricing);

// One tier's part of a charge.
struct TierCharge {
  int tier = 0;                  // index into Pricing::tiers
  Decimal from;                  // the tier's lower bound (exclusive; 0 for the first)
  std::optional<Decimal> up_to;  // its upper bound (inclusive), none for the last
  Decimal units;                 // units priced in this tier
  Decimal unit_price;
  Decimal flat_fee;
  Decimal amount;  // units * unit_price + flat_fee, exact
};

// The price of a quantity.
struct Charge {
  Decimal quantity;
  Decimal amount;                 // USD, exact (for CREDITS: the overage charge, if priced)
  std::vector<TierCharge> tiers;  // VOLUME: the one tier; GRADUATED: every tier reached
  Decimal credits;                // CREDITS: credits the quantity costs
};

// Prices `quantity` (which must be >= 0 except for FLAT) under `pricing` (assumed valid). VOLUME: the
// whole quantity at the price of the tier that contains it; GRADUATED: each tier's units at its
// price, plus each reached tier's flat fee; 0 units reach no tier. OutOfRange on decimal overflow.
absl::StatusOr<Charge> price_quantity(const Pricing& pricing, const Decimal& quantity);

// A customer's prepaid credits. Balance never goes negative: a debit beyond it is split into what the
// balance covered and the overage.
//
// Lifetime: a value owned by the caller. Thread safety: none (one thread at a time, e.g. under the
// storage's per-customer lock).
class CreditWallet {
 public:
  struct Debit {
    Decimal used;     // taken from the balance
    Decimal overage;  // beyond the balance: to be shown (and priced, if the pricing says so)
  };

  // Adds `credits` (> 0) bought for `paid_usd` (>= 0). InvalidArgument naming the field, or OutOfRange.
  absl::Status top_up(const Decimal& credits, const Decimal& paid_usd);
  // Debits `credits` (>= 0): the balance drops by at most what it holds.
  absl::StatusOr<Debit> debit(const Decimal& credits);

  [[nodiscard]] const Decimal& balance() const noexcept { return balance_; }
  [[nodiscard]] const Decimal& overage_total() const noexcept { return overage_; }
  [[nodiscard]] const Decimal& paid_usd_total() const noexcept { return paid_usd_; }

 private:
  Decimal balance_;
  Decimal overage_;
  Decimal paid_usd_;
};

// A customer's CREDITS charge for one indicator in one billing period, as the wallet's ledger keeps
// it: `charged` = `used` + `overage`, always. A plain value.
struct CreditCharge {
  Decimal charged;  // the credits the period's quantity costs, as last settled
  Decimal used;     // taken from the wallet's balance
  Decimal overage;  // beyond the balance when it was taken (shown on the invoice, never a debt on the wallet)
};

// Moves `line` to `charged_now` (the period's credits as the invoice prices them now, >= 0) against
// a wallet holding `balance` (>= 0), in arrival order. A rise is taken from the balance as far as it
// goes and the rest is overage; a fall (a Latest or a Sum that went down) gives overage back first,
// then returns used credits to the balance. So the balance never goes below 0, a settled charge is
// never taken twice, and settling again with the same `charged_now` changes nothing.
// InvalidArgument naming the field on a negative charge or balance; OutOfRange on overflow.
absl::Status recharge(CreditCharge& line, const Decimal& charged_now, Decimal& balance);

// A custom per-minute rate for one model of one kind (LLM, STT, TTS) of a voice session.
struct ModelRate {
  SessionKind kind = SessionKind::kLlm;
  std::string model;       // as tracked ("gpt-5", "nova-2"), compared exactly
  Decimal usd_per_minute;  // >= 0
};

// A per-minute indicator price: the voice duration times a rate.
struct PerMinutePricing {
  Decimal base_usd_per_minute;          // $0.15 / min
  std::vector<ModelRate> custom_rates;  // optional, per model
};

// OK or InvalidArgument naming the field ("custom_rates[0].usd_per_minute: is negative").
absl::Status validate_per_minute(const PerMinutePricing& pricing);

// The tracking issue's rule: the session's per-minute rate is the sum, over the kinds used (LLM, STT,
// TTS), of the custom rate of the model used for that kind (the highest when several were used; a
// kind whose models have no custom rate adds nothing); when no model of the session has a custom
// rate, the base per-minute rate applies. OutOfRange only on decimal overflow.
absl::StatusOr<Decimal> session_rate_per_minute(const PerMinutePricing& pricing,
                                                std::span<const SessionModel> used);

// duration_minutes (>= 0) times session_rate_per_minute: 5.0 min x $0.15 = $0.75, exact.
absl::StatusOr<Decimal> voice_session_charge(const PerMinutePricing& pricing, std::span<const SessionModel> used,
                                             const Decimal& duration_minutes);

}  // namespace paygent::billing
