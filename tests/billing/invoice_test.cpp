#include "billing/invoice.h"  // first: the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <tuple>
#include <vector>

#include "billing/billing_events.h"

namespace paygent::billing {
namespace {

using testing::dec;
using testing::Ev;
using testing::kNovember;
using testing::make_metric;

InvoiceBuilder builder(const std::vector<Indicator>& indicators) {
  auto b = InvoiceBuilder::create(indicators, kNovember);
  REQUIRE_MESSAGE(b.ok(), b.status().ToString());
  return *std::move(b);
}

Invoice preview(const InvoiceBuilder& b, std::optional<Decimal> credits = std::nullopt) {
  auto inv = b.preview(credits);
  REQUIRE_MESSAGE(inv.ok(), inv.status().ToString());
  return *std::move(inv);
}

TEST_CASE("billing.invoice.seed_000_per_minute_and_per_call") {
  const std::vector<Indicator> indicators{
      // Dental clinic: per-minute ON at $0.15/min.
      {.name = "voice_call_completed", .per_minute = PerMinutePricing{.base_usd_per_minute = dec("0.15")}},
      // Lead qualification: per-minute OFF, $0.20 per call whatever the duration.
      {.name = "lead_qualified",
       .pricing = {.model = PricingModel::kFlat, .unit = "call", .unit_price = dec("0.20")}},
  };
  InvoiceBuilder b = builder(indicators);
  b.add("voice_call_completed", Ev{.id = "call-1", .tags = {{"duration_minutes", "5.0"}}}.view());
  b.add("lead_qualified", Ev{.id = "lead-1", .tags = {{"duration_minutes", "1"}}}.view());
  b.add("lead_qualified", Ev{.id = "lead-2", .tags = {{"duration_minutes", "20"}}}.view());
  const Invoice inv = preview(b);
  REQUIRE(inv.lines.size() == 2);
  CHECK(inv.lines[0].pricing == "per_minute");
  CHECK(inv.lines[0].quantity == dec("5.0"));
  CHECK(inv.lines[0].amount == dec("0.75"));
  CHECK(inv.lines[0].amount_nanos == 750'000'000);
  CHECK(inv.lines[1].pricing == "flat");
  CHECK(inv.lines[1].unit == "call");
  CHECK(inv.lines[1].quantity == dec("2"));
  CHECK(inv.lines[1].amount_nanos == 400'000'000);  // 2 calls x $0.20, durations 1 and 20 min alike
  CHECK(inv.total_nanos == 1'150'000'000);
}

TEST_CASE("billing.invoice.per_minute_sessions_each_at_their_rate") {
  const std::vector<Indicator> indicators{
      {.name = "voice",
       .per_minute = PerMinutePricing{.base_usd_per_minute = dec("0.15"),
                                      .custom_rates = {{SessionKind::kLlm, "gpt-5", dec("0.50")},
                                                       {SessionKind::kStt, "nova-2", dec("0.05")}}}}};
  InvoiceBuilder b = builder(indicators);
  b.add("voice", Ev{.id = "s1", .tags = {{"duration_minutes", "2"}},
                    .models = {{SessionKind::kLlm, "gpt-5"}, {SessionKind::kStt, "nova-2"}}}.view());  // 2 x 0.55
  b.add("voice", Ev{.id = "s2", .tags = {{"duration_minutes", "0.5"}},
                    .models = {{SessionKind::kLlm, "gpt-4o"}}}.view());  // 0.5 x base 0.15
  b.add("voice", Ev{.id = "s3", .tags = {}}.view());                      // no duration: excluded, not 0
  const Invoice inv = preview(b);
  CHECK(inv.lines[0].quantity == dec("2.5"));
  CHECK(inv.lines[0].amount == dec("1.175"));
  CHECK(inv.lines[0].counts.excluded[static_cast<int>(ExclusionReason::kMissingField)] == 1);
  // A negative duration is bad data, not a credit: the preview names it.
  b.add("voice", Ev{.id = "s4", .tags = {{"duration_minutes", "-1"}}}.view());
  auto bad = b.preview();
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()).find("duration_minutes: -1 is negative") != std::string::npos);
}

TEST_CASE("billing.invoice.stored_amounts_bill_each_event_at_its_price_of_then") {
  // $0.20 per call until a price change to $0.25: the calls stored before it carry $0.20, and a
  // call with no stored amount (stored while the indicator had no price) is billed at today's.
  const std::vector<Indicator> indicators{
      {.name = "lead", .pricing = {.model = PricingModel::kFlat, .unit = "call", .unit_price = dec("0.25")},
       .stored_amounts = true},
      // Per minute: the stored amount carries the session's custom rate (2 min x $0.55).
      {.name = "voice", .per_minute = PerMinutePricing{.base_usd_per_minute = dec("0.15")}, .stored_amounts = true}};
  InvoiceBuilder b = builder(indicators);
  b.add("lead", Ev{.id = "l1", .amount = dec("0.20")}.view());
  b.add("lead", Ev{.id = "l2", .amount = dec("0.20")}.view());
  b.add("lead", Ev{.id = "l2", .amount = dec("0.20")}.view());  // a duplicate is billed once
  b.add("lead", Ev{.id = "l3", .amount = dec("0.25")}.view());
  b.add("lead", Ev{.id = "l4"}.view());
  b.add("voice", Ev{.id = "v1", .tags = {{"duration_minutes", "2"}}, .amount = dec("1.10")}.view());
  b.add("voice", Ev{.id = "v2", .tags = {{"duration_minutes", "1"}}}.view());  // base rate
  const Invoice inv = preview(b);
  CHECK(inv.lines[0].quantity == dec("4"));
  CHECK(inv.lines[0].amount == dec("0.90"));  // 0.20 + 0.20 + 0.25 + 0.25
  CHECK(inv.lines[1].quantity == dec("3"));
  CHECK(inv.lines[1].amount == dec("1.25"));  // 1.10 + 1 x 0.15
  // Only where the amount is the event's alone: not under a metric, nor a tiered price.
  auto bad = InvoiceBuilder::create(
      std::vector<Indicator>{{.name = "t",
                              .pricing = {.model = PricingModel::kVolume, .tiers = {{.unit_price = dec("1")}}},
                              .stored_amounts = true}},
      kNovember);
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()).starts_with("indicators[0].stored_amounts:"));
}

TEST_CASE("billing.invoice.metered_lines_with_tiers_credits_and_exclusions") {
  const std::vector<Indicator> indicators{
      {.name = "inference",
       .metric = make_metric({.name = "GPU compute hours", .aggregation = Aggregation::kSum, .field = "hours"}),
       .pricing = {.model = PricingModel::kGraduated,
                   .unit = "GPU-hour",
                   .tiers = {{dec("50"), dec("0.50"), Decimal()}, {std::nullopt, dec("0.40"), Decimal()}}}},
      {.name = "cluster",
       .metric = make_metric({.name = "Effective tokens", .aggregation = Aggregation::kSum,
                              .expression = "event.properties.tokens * event.properties.replicas"}),
       .pricing = {.model = PricingModel::kCredits, .unit = "token", .credits_per_unit = dec("0.01"),
                   .overage_usd_per_credit = dec("0.02")}},
  };
  InvoiceBuilder b = builder(indicators);
  b.add("inference", Ev{.id = "A", .tags = {{"hours", "0.2"}}}.view());
  b.add("inference", Ev{.id = "B", .tags = {{"hours", "12"}}}.view());
  b.add("inference", Ev{.id = "C", .tags = {{"hours", "48"}}}.view());
  b.add("inference", Ev{.id = "C", .tags = {{"hours", "48"}}}.view());    // duplicate: billed once
  b.add("inference", Ev{.id = "D", .tags = {{"hours", "n/a"}}}.view());   // not a number: shown excluded
  b.add("cluster", Ev{.id = "run1", .tags = {{"tokens", "1000"}, {"replicas", "4"}}}.view());
  b.add("cluster", Ev{.id = "run2", .tags = {{"tokens", "500"}, {"replicas", "2"}}}.view());
  b.add("cluster", Ev{.id = "run3", .tags = {{"tokens", "500"}}}.view());  // missing replicas
  b.add("unknown", Ev{.id = "x"}.view());

  const Invoice inv = preview(b, dec("30"));  // the wallet holds 30 credits; 5,000 tokens cost 50
  REQUIRE(inv.lines.size() == 2);
  const InvoiceLine& gpu = inv.lines[0];
  CHECK(gpu.metric == "gpu_compute_hours");
  CHECK(gpu.pricing == "graduated");
  CHECK(gpu.quantity.to_string() == "60.2");
  CHECK(gpu.amount == dec("29.08"));  // 50 x 0.50 + 10.2 x 0.40
  REQUIRE(gpu.tiers.size() == 2);
  CHECK(gpu.tiers[1].units == dec("10.2"));
  CHECK(gpu.counts.duplicates == 1);
  CHECK(gpu.counts.excluded[static_cast<int>(ExclusionReason::kNotANumber)] == 1);
  const InvoiceLine& tokens = inv.lines[1];
  CHECK(tokens.quantity == dec("5000"));
  CHECK(tokens.credits == dec("50"));
  CHECK(tokens.credits_used == dec("30"));
  CHECK(tokens.credits_overage == dec("20"));
  CHECK(tokens.amount == dec("0.40"));  // 20 overage credits x $0.02
  CHECK(tokens.counts.excluded[static_cast<int>(ExclusionReason::kMissingField)] == 1);
  CHECK(inv.unknown_indicator_events == 1);
  CHECK(inv.total_nanos == 29'480'000'000);
  // Previewing consumes nothing: the same preview again, and a full wallet covers everything.
  CHECK(preview(b, dec("30")).total_nanos == 29'480'000'000);
  const Invoice covered = preview(b, dec("1000"));
  CHECK(covered.lines[1].credits_overage == Decimal());
  CHECK(covered.lines[1].amount_nanos == 0);
  // From a wallet's ledger: the credits its debits took for this line (capped at the line's own
  // credits); the rest is overage, priced as the pricing says.
  for (const auto& [ledger_used, used, overage, amount_nanos] :
       std::vector<std::tuple<std::string, std::string, std::string, std::int64_t>>{
           {"45", "45", "5", 100'000'000}, {"80", "50", "0", 0}, {"0", "0", "50", 1'000'000'000}}) {
    CAPTURE(ledger_used);
    auto ledgered = b.preview_with_ledger([&](std::string_view indicator) {
      CHECK(indicator == "cluster");  // asked for CREDITS lines only
      return dec(ledger_used);
    });
    REQUIRE(ledgered.ok());
    CHECK(ledgered->lines[1].credits_used == dec(used));
    CHECK(ledgered->lines[1].credits_overage == dec(overage));
    CHECK(ledgered->lines[1].amount_nanos == amount_nanos);
    CHECK(ledgered->lines[0].amount == dec("29.08"));
  }
}

TEST_CASE("billing.invoice.rounding_only_at_the_rendered_line") {
  // $0.0000000004 per unit: each event alone would round to 0 nano-USD; three together are 1.2 -> 1.
  const std::vector<Indicator> indicators{
      {.name = "tiny", .pricing = {.model = PricingModel::kFlat, .unit_price = dec("0.0000000004")}},
      {.name = "half", .pricing = {.model = PricingModel::kFlat, .unit_price = dec("0.0000000005")}}};
  InvoiceBuilder b = builder(indicators);
  for (int i = 0; i < 3; ++i) b.add("tiny", Ev{.id = "t" + std::to_string(i)}.view());
  b.add("half", Ev{.id = "h"}.view());
  const Invoice inv = preview(b);
  CHECK(inv.lines[0].amount == dec("0.0000000012"));  // exact until rendered
  CHECK(inv.lines[0].amount_nanos == 1);
  CHECK(inv.lines[1].amount_nanos == 1);  // 0.5 nano rounds half away from zero
  CHECK(inv.total_nanos == 2);            // the sum of the rendered lines
}

TEST_CASE("billing.invoice.configuration_errors_name_the_indicator") {
  auto err = [](std::vector<Indicator> indicators) {
    auto b = InvoiceBuilder::create(indicators, kNovember);
    REQUIRE_FALSE(b.ok());
    return std::string(b.status().message());
  };
  CHECK(err({{.name = ""}}) == "indicators[0].name: is required");
  CHECK(err({{.name = "a"}, {.name = "a"}}) == "indicators[1].name: \"a\" is configured twice");
  CHECK(err({{.name = "a"}, {.name = "b", .pricing = {.model = PricingModel::kVolume}}}) ==
        "indicators[1].pricing.tiers: volume needs at least one tier");
  CHECK(err({{.name = "v",
              .metric = make_metric({.name = "m"}),
              .per_minute = PerMinutePricing{}}})
            .starts_with("indicators[0].metric:"));
  auto bad_period = InvoiceBuilder::create({}, BillingPeriod{10, 10});
  CHECK_FALSE(bad_period.ok());
}

}  // namespace
}  // namespace paygent::billing
