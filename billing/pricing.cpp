// Pricing models, credit wallets and the voice per-minute rule (see billing/pricing.h).
#include "billing/pricing.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "billing/internal/assign_or_return.h"

namespace paygent::billing {
namespace {

absl::Status invalid(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(field + ": " + why);
}

absl::Status check_non_negative(const std::string& field, const Decimal& d) {
  if (d.is_negative()) return invalid(field, d.to_string() + " is negative");
  return absl::OkStatus();
}

// units * price + fee, exact.
absl::StatusOr<Decimal> tier_amount(const Decimal& units, const Decimal& price, const Decimal& fee) {
  PAYGENT_BILLING_ASSIGN_OR_RETURN(Decimal variable, Decimal::mul(units, price));
  return Decimal::add(variable, fee);
}

}  // namespace

std::string_view pricing_model_name(PricingModel model) noexcept {
  switch (model) {
    case PricingModel::kFlat: return "flat";
    case PricingModel::kVolume: return "volume";
    case PricingModel::kGraduated: return "graduated";
    case PricingModel::kCredits: return "credits";
  }
  return "flat";
}

absl::StatusOr<PricingModel> parse_pricing_model(std::string_view name) {
  for (PricingModel m :
       {PricingModel::kFlat, PricingModel::kVolume, PricingModel::kGraduated, PricingModel::kCredits}) {
    if (pricing_model_name(m) == name) return m;
  }
  return invalid("pricing.model", "\"" + std::string(name) + "\" is not one of flat, volume, graduated, credits");
}

absl::Status validate_pricing(const Pricing& p) {
  if (p.unit.empty()) return invalid("unit", "is required (\"unit\", \"call\", \"minute\", ...)");
  switch (p.model) {
    case PricingModel::kFlat: return check_non_negative("unit_price", p.unit_price);
    case PricingModel::kCredits:
      if (auto s = check_non_negative("credits_per_unit", p.credits_per_unit); !s.ok()) return s;
      if (p.overage_usd_per_credit) return check_non_negative("overage_usd_per_credit", *p.overage_usd_per_credit);
      return absl::OkStatus();
    case PricingModel::kVolume:
    case PricingModel::kGraduated: break;
  }
  if (p.tiers.empty()) return invalid("tiers", std::string(pricing_model_name(p.model)) + " needs at least one tier");
  for (std::size_t i = 0; i < p.tiers.size(); ++i) {
    const PriceTier& t = p.tiers[i];
    const std::string where = "tiers[" + std::to_string(i) + "]";
    if (auto s = check_non_negative(where + ".unit_price", t.unit_price); !s.ok()) return s;
    if (auto s = check_non_negative(where + ".flat_fee", t.flat_fee); !s.ok()) return s;
    const bool last = i + 1 == p.tiers.size();
    if (last && t.up_to) return invalid(where + ".up_to", "the last tier must be unbounded (no up_to)");
    if (!last && !t.up_to) return invalid(where + ".up_to", "is required on every tier but the last");
    if (!last) {
      if (!(*t.up_to > Decimal())) return invalid(where + ".up_to", t.up_to->to_string() + " is not above 0");
      if (i > 0 && !(*t.up_to > *p.tiers[i - 1].up_to)) {
        return invalid(where + ".up_to", t.up_to->to_string() + " is not above tiers[" + std::to_string(i - 1) +
                                             "].up_to " + p.tiers[i - 1].up_to->to_string());
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Charge> price_quantity(const Pricing& p, const Decimal& quantity) {
  Charge c;
  c.quantity = quantity;
  if (p.model != PricingModel::kFlat && quantity.is_negative()) {
    return invalid("quantity", quantity.to_string() + " is negative (only flat pricing takes a negative quantity)");
  }
  switch (p.model) {
    case PricingModel::kFlat: {
      PAYGENT_BILLING_ASSIGN_OR_RETURN(c.amount, Decimal::mul(quantity, p.unit_price));
      return c;
    }
    case PricingModel::kCredits: {
      PAYGENT_BILLING_ASSIGN_OR_RETURN(c.credits, Decimal::mul(quantity, p.credits_per_unit));
      return c;  // the amount depends on the wallet (billing/invoice.h)
    }
    case PricingModel::kVolume: {
      if (quantity.is_zero()) return c;
      std::size_t i = 0;
      while (i + 1 < p.tiers.size() && quantity > *p.tiers[i].up_to) ++i;
      const PriceTier& t = p.tiers[i];
      TierCharge tc{static_cast<int>(i), i == 0 ? Decimal() : *p.tiers[i - 1].up_to, t.up_to, quantity,
                    t.unit_price, t.flat_fee, Decimal()};
      PAYGENT_BILLING_ASSIGN_OR_RETURN(tc.amount, tier_amount(quantity, t.unit_price, t.flat_fee));
      c.amount = tc.amount;
      c.tiers.push_back(std::move(tc));
      return c;
    }
    case PricingModel::kGraduated: {
      Decimal from;
      for (std::size_t i = 0; i < p.tiers.size() && quantity > from; ++i) {
        const PriceTier& t = p.tiers[i];
        const Decimal to = t.up_to && *t.up_to < quantity ? *t.up_to : quantity;
        TierCharge tc{static_cast<int>(i), from, t.up_to, Decimal(), t.unit_price, t.flat_fee, Decimal()};
        PAYGENT_BILLING_ASSIGN_OR_RETURN(tc.units, Decimal::sub(to, from));
        PAYGENT_BILLING_ASSIGN_OR_RETURN(tc.amount, tier_amount(tc.units, t.unit_price, t.flat_fee));
        PAYGENT_BILLING_ASSIGN_OR_RETURN(c.amount, Decimal::add(c.amount, tc.amount));
        c.tiers.push_back(std::move(tc));
        if (!t.up_to) break;
        from = *t.up_to;
      }
      return c;
    }
  }
  return c;
}

absl::Status CreditWallet::top_up(const Decimal& credits, const Decimal& paid_usd) {
  if (!(credits > Decimal())) return invalid("credits", credits.to_string() + " is not above 0");
  if (auto s = check_non_negative("paid_usd", paid_usd); !s.ok()) return s;
  PAYGENT_BILLING_ASSIGN_OR_RETURN(Decimal balance, Decimal::add(balance_, credits));
  PAYGENT_BILLING_ASSIGN_OR_RETURN(Decimal paid, Decimal::add(paid_usd_, paid_usd));
  balance_ = balance;
  paid_usd_ = paid;
  return absl::OkStatus();
}

absl::StatusOr<CreditWallet::Debit> CreditWallet::debit(const Decimal& credits) {
  if (auto s = check_non_negative("credits", credits); !s.ok()) return s;
  Debit d;
  d.used = credits < balance_ ? credits : balance_;
  PAYGENT_BILLING_ASSIGN_OR_RETURN(d.overage, Decimal::sub(credits, d.used));
  PAYGENT_BILLING_ASSIGN_OR_RETURN(Decimal overage, Decimal::add(overage_, d.overage));
  PAYGENT_BILLING_ASSIGN_OR_RETURN(Decimal balance, Decimal::sub(balance_, d.used));
  balance_ = balance;
  overage_ = overage;
  return d;
}

absl::Status recharge(CreditCharge& line, const Decimal& charged_now, Decimal& balance) {
  if (auto s = check_non_negative("charged", charged_now); !s.ok()) return s;
  if (auto s = check_non_negative("balance", balance); !s.ok()) return s;
  CreditCharge next = line;
  Decimal left = balance;
  if (line.charged < charged_now) {
    PAYGENT_BILLING_ASSIGN_OR_RETURN(const Decimal rise, Decimal::sub(charged_now, line.charged));
    const Decimal taken = rise < left ? rise : left;
    PAYGENT_BILLING_ASSIGN_OR_RETURN(next.used, Decimal::add(line.used, taken));
    PAYGENT_BILLING_ASSIGN_OR_RETURN(const Decimal beyond, Decimal::sub(rise, taken));
    PAYGENT_BILLING_ASSIGN_OR_RETURN(next.overage, Decimal::add(line.overage, beyond));
    PAYGENT_BILLING_ASSIGN_OR_RETURN(left, Decimal::sub(left, taken));
  } else if (charged_now < line.charged) {
    PAYGENT_BILLING_ASSIGN_OR_RETURN(const Decimal fall, Decimal::sub(line.charged, charged_now));
    const Decimal forgiven = fall < line.overage ? fall : line.overage;
    PAYGENT_BILLING_ASSIGN_OR_RETURN(next.overage, Decimal::sub(line.overage, forgiven));
    PAYGENT_BILLING_ASSIGN_OR_RETURN(const Decimal returned, Decimal::sub(fall, forgiven));
    PAYGENT_BILLING_ASSIGN_OR_RETURN(next.used, Decimal::sub(line.used, returned));
    PAYGENT_BILLING_ASSIGN_OR_RETURN(left, Decimal::add(left, returned));
  }
  next.charged = charged_now;
  line = next;
  balance = left;
  return absl::OkStatus();
}

absl::Status validate_per_minute(const PerMinutePricing& p) {
  if (auto s = check_non_negative("base_usd_per_minute", p.base_usd_per_minute); !s.ok()) return s;
  for (std::size_t i = 0; i < p.custom_rates.size(); ++i) {
    const std::string where = "custom_rates[" + std::to_string(i) + "]";
    if (p.custom_rates[i].model.empty()) return invalid(where + ".model", "is required");
    if (auto s = check_non_negative(where + ".usd_per_minute", p.custom_rates[i].usd_per_minute); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<Decimal> session_rate_per_minute(const PerMinutePricing& p, std::span<const SessionModel> used) {
  constexpr int kKinds = 3;
  bool found[kKinds] = {false, false, false};
  Decimal highest[kKinds];
  for (const SessionModel& m : used) {
    const int k = static_cast<int>(m.kind);
    if (k < 0 || k >= kKinds) continue;
    for (const ModelRate& r : p.custom_rates) {
      if (r.kind != m.kind || r.model != m.model) continue;
      if (!found[k] || r.usd_per_minute > highest[k]) highest[k] = r.usd_per_minute;
      found[k] = true;
    }
  }
  if (!found[0] && !found[1] && !found[2]) return p.base_usd_per_minute;
  Decimal rate;
  for (int k = 0; k < kKinds; ++k) {
    if (found[k]) {
      PAYGENT_BILLING_ASSIGN_OR_RETURN(rate, Decimal::add(rate, highest[k]));
    }
  }
  return rate;
}

absl::StatusOr<Decimal> voice_session_charge(const PerMinutePricing& p, std::span<const SessionModel> used,
                                             const Decimal& duration_minutes) {
  if (duration_minutes.is_negative()) return invalid("duration_minutes", duration_minutes.to_string() + " is negative");
  PAYGENT_BILLING_ASSIGN_OR_RETURN(Decimal rate, session_rate_per_minute(p, used));
  return Decimal::mul(duration_minutes, rate);
}

}  // namespace paygent::billing
