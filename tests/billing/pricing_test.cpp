#include "billing/pricing.h"  // first: the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "billing/billing_events.h"

namespace paygent::billing {
namespace {

using testing::dec;

Charge charge(const Pricing& p, const char* quantity) {
  REQUIRE_MESSAGE(validate_pricing(p).ok(), validate_pricing(p).ToString());
  auto c = price_quantity(p, dec(quantity));
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  return *c;
}

// Up to 100 units at $0.10, up to 1,000 at $0.05 (+ $2 when reached), beyond at $0.01.
Pricing tiered(PricingModel model) {
  return Pricing{.model = model,
                 .unit = "request",
                 .tiers = {{dec("100"), dec("0.10"), Decimal()},
                           {dec("1000"), dec("0.05"), dec("2")},
                           {std::nullopt, dec("0.01"), Decimal()}}};
}

TEST_CASE("billing.pricing.flat_per_call_and_per_minute") {
  // Seed 000 scenario B: $0.20 per call whatever the duration (no metric: one call is one unit).
  const Pricing per_call{.model = PricingModel::kFlat, .unit = "call", .unit_price = dec("0.20")};
  CHECK(charge(per_call, "1").amount == dec("0.20"));
  CHECK(charge(per_call, "3").amount == dec("0.60"));
  // Scenario A: 5.0 min x $0.15/min = $0.75.
  const Pricing per_minute{.model = PricingModel::kFlat, .unit = "minute", .unit_price = dec("0.15")};
  const Charge c = charge(per_minute, "5.0");
  CHECK(c.amount == dec("0.75"));
  CHECK(*c.amount.to_nanos(RoundingMode::kRound) == 750'000'000);
  CHECK(*voice_session_charge(PerMinutePricing{.base_usd_per_minute = dec("0.15")}, {}, dec("5.0")) == dec("0.75"));
}

TEST_CASE("billing.pricing.volume_vs_graduated_on_both_sides_of_a_tier_boundary") {
  const Pricing volume = tiered(PricingModel::kVolume);
  const Pricing graduated = tiered(PricingModel::kGraduated);
  // At the boundary (100 is in the first tier: up_to is inclusive): both $10.
  CHECK(charge(volume, "100").amount == dec("10"));
  CHECK(charge(graduated, "100").amount == dec("10"));
  CHECK(charge(graduated, "100").tiers.size() == 1);
  // Just below it.
  CHECK(charge(volume, "99.5").amount == dec("9.95"));
  CHECK(charge(graduated, "99.5").amount == dec("9.95"));
  // Just above it: VOLUME prices all 101 units at tier 2 (+ its fee); GRADUATED 100 at tier 1, 1 at tier 2 (+ fee).
  const Charge v101 = charge(volume, "101");
  CHECK(v101.amount == dec("7.05"));  // 101 x 0.05 + 2
  REQUIRE(v101.tiers.size() == 1);
  CHECK(v101.tiers[0].tier == 1);
  CHECK(v101.tiers[0].units == dec("101"));
  const Charge g101 = charge(graduated, "101");
  CHECK(g101.amount == dec("12.05"));  // 10 + 0.05 + 2
  REQUIRE(g101.tiers.size() == 2);
  CHECK(g101.tiers[0].units == dec("100"));
  CHECK(g101.tiers[0].amount == dec("10"));
  CHECK(g101.tiers[1].from == dec("100"));
  CHECK(g101.tiers[1].units == dec("1"));
  CHECK(g101.tiers[1].amount == dec("2.05"));
  // Deep into the last tier.
  CHECK(charge(volume, "1500").amount == dec("15"));      // 1500 x 0.01
  CHECK(charge(graduated, "1500").amount == dec("62"));   // 10 + 45 + 2 + 5
  CHECK(charge(graduated, "1500").tiers.size() == 3);
  // Nothing used reaches no tier and costs nothing (no flat fee).
  CHECK(charge(volume, "0").amount == Decimal());
  CHECK(charge(graduated, "0").tiers.empty());
  auto negative = price_quantity(volume, dec("-1"));
  CHECK_FALSE(negative.ok());
}

TEST_CASE("billing.pricing.validation_names_the_field") {
  auto err = [](const Pricing& p) { return std::string(validate_pricing(p).message()); };
  Pricing p = tiered(PricingModel::kGraduated);
  p.tiers[1].up_to = dec("100");
  CHECK(err(p) == "tiers[1].up_to: 100 is not above tiers[0].up_to 100");
  p = tiered(PricingModel::kVolume);
  p.tiers[2].up_to = dec("5000");
  CHECK(err(p) == "tiers[2].up_to: the last tier must be unbounded (no up_to)");
  p = tiered(PricingModel::kVolume);
  p.tiers[0].up_to.reset();
  CHECK(err(p) == "tiers[0].up_to: is required on every tier but the last");
  p = tiered(PricingModel::kVolume);
  p.tiers[1].unit_price = dec("-0.01");
  CHECK(err(p) == "tiers[1].unit_price: -0.01 is negative");
  CHECK(err(Pricing{.model = PricingModel::kVolume}) == "tiers: volume needs at least one tier");
  CHECK(err(Pricing{.unit_price = dec("-1")}) == "unit_price: -1 is negative");
  CHECK(err(Pricing{.unit = ""}).starts_with("unit:"));
  CHECK(*parse_pricing_model("graduated") == PricingModel::kGraduated);
  CHECK_FALSE(parse_pricing_model("tiered").ok());
}

TEST_CASE("billing.pricing.credits_and_a_wallet_running_out_mid_period") {
  // 0.01 credits per token (seed 003 step 3).
  const Pricing p{.model = PricingModel::kCredits, .unit = "token", .credits_per_unit = dec("0.01")};
  CreditWallet wallet;
  REQUIRE(wallet.top_up(dec("1000"), dec("10")).ok());
  // Usage arrives in two pages: 60,000 tokens, then 90,000.
  auto first = wallet.debit(charge(p, "60000").credits);
  REQUIRE(first.ok());
  CHECK(first->used == dec("600"));
  CHECK(first->overage == Decimal());
  CHECK(wallet.balance() == dec("400"));
  auto second = wallet.debit(charge(p, "90000").credits);
  REQUIRE(second.ok());
  CHECK(second->used == dec("400"));
  CHECK(second->overage == dec("500"));  // recorded, never a negative balance
  CHECK(wallet.balance() == Decimal());
  CHECK_FALSE(wallet.balance().is_negative());
  CHECK(wallet.overage_total() == dec("500"));
  // An empty wallet: everything is overage.
  auto third = wallet.debit(dec("1"));
  CHECK(third->used == Decimal());
  CHECK(third->overage == dec("1"));
  // A top-up refills it.
  REQUIRE(wallet.top_up(dec("50"), dec("0.5")).ok());
  CHECK(wallet.balance() == dec("50"));
  CHECK(wallet.paid_usd_total() == dec("10.5"));
  CHECK(std::string(wallet.top_up(dec("0"), dec("1")).message()) == "credits: 0 is not above 0");
  CHECK(std::string(wallet.top_up(dec("1"), dec("-1")).message()) == "paid_usd: -1 is negative");
  CHECK_FALSE(wallet.debit(dec("-1")).ok());
}

TEST_CASE("billing.pricing.recharge_settles_a_period_charge_against_the_wallet_in_arrival_order") {
  // A 100-credit wallet; one indicator's period charge grows 30 -> 130 -> 130, then falls to 110
  // (a Latest that went down) and to 20, then rises again.
  Decimal balance = dec("100");
  CreditCharge line;
  REQUIRE(recharge(line, dec("30"), balance).ok());
  CHECK(line.charged == dec("30"));
  CHECK(line.used == dec("30"));
  CHECK(line.overage == Decimal());
  CHECK(balance == dec("70"));
  REQUIRE(recharge(line, dec("130"), balance).ok());  // runs out mid-period: 70 taken, 30 overage
  CHECK(line.used == dec("100"));
  CHECK(line.overage == dec("30"));
  CHECK(balance == Decimal());
  REQUIRE(recharge(line, dec("130"), balance).ok());  // settling again changes nothing
  CHECK(line.used == dec("100"));
  CHECK(line.overage == dec("30"));
  CHECK(balance == Decimal());
  REQUIRE(recharge(line, dec("110"), balance).ok());  // a fall forgives overage first
  CHECK(line.used == dec("100"));
  CHECK(line.overage == dec("10"));
  CHECK(balance == Decimal());
  REQUIRE(recharge(line, dec("20"), balance).ok());  // then returns used credits
  CHECK(line.used == dec("20"));
  CHECK(line.overage == Decimal());
  CHECK(balance == dec("80"));
  REQUIRE(recharge(line, dec("20.5"), balance).ok());
  CHECK(line.used == dec("20.5"));
  CHECK(balance == dec("79.5"));
  CHECK(line.charged == dec("20.5"));
  // Invariant: charged = used + overage; bad input changes nothing and names the field.
  const CreditCharge before = line;
  CHECK(std::string(recharge(line, dec("-1"), balance).message()) == "charged: -1 is negative");
  Decimal negative = dec("-1");
  CHECK(std::string(recharge(line, dec("1"), negative).message()) == "balance: -1 is negative");
  CHECK(line.charged == before.charged);
  CHECK(line.used == before.used);
  CHECK(balance == dec("79.5"));
}

TEST_CASE("billing.pricing.per_minute_custom_rates_rule") {
  // Seed 000's custom pricing example.
  const PerMinutePricing p{.base_usd_per_minute = dec("0.15"),
                           .custom_rates = {{SessionKind::kLlm, "gpt-5", dec("0.50")},
                                            {SessionKind::kLlm, "gemini-2.5", dec("0.20")},
                                            {SessionKind::kStt, "nova-2", dec("0.05")},
                                            {SessionKind::kTts, "azure-neural", dec("0.08")}}};
  REQUIRE(validate_per_minute(p).ok());
  auto rate = [&](std::vector<SessionModel> used) { return *session_rate_per_minute(p, used); };
  // One model per kind: the sum of their rates.
  CHECK(rate({{SessionKind::kLlm, "gpt-5"}, {SessionKind::kStt, "nova-2"}, {SessionKind::kTts, "azure-neural"}}) ==
        dec("0.63"));
  // Two LLMs in one session: the highest of them, once.
  CHECK(rate({{SessionKind::kLlm, "gemini-2.5"}, {SessionKind::kLlm, "gpt-5"}, {SessionKind::kStt, "nova-2"}}) ==
        dec("0.55"));
  // A kind whose model has no custom rate adds nothing.
  CHECK(rate({{SessionKind::kLlm, "gpt-4o"}, {SessionKind::kTts, "azure-neural"}}) == dec("0.08"));
  // No model with a custom rate: the base rate.
  CHECK(rate({{SessionKind::kLlm, "gpt-4o"}, {SessionKind::kStt, "whisper-1"}}) == dec("0.15"));
  CHECK(rate({}) == dec("0.15"));
  // Rates belong to a kind: "nova-2" as an LLM is not the STT model.
  CHECK(rate({{SessionKind::kLlm, "nova-2"}}) == dec("0.15"));
  std::vector<SessionModel> used{{SessionKind::kLlm, "gpt-5"}, {SessionKind::kStt, "nova-2"}};
  CHECK(*voice_session_charge(p, used, dec("0.5")) == dec("0.275"));
  CHECK_FALSE(voice_session_charge(p, used, dec("-1")).ok());
  PerMinutePricing bad = p;
  bad.custom_rates[2].usd_per_minute = dec("-0.05");
  CHECK(std::string(validate_per_minute(bad).message()) == "custom_rates[2].usd_per_minute: -0.05 is negative");
}

}  // namespace
}  // namespace paygent::billing
