#include "billing/metric.h"  // first: the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "billing/billing_events.h"

namespace paygent::billing {
namespace {

using testing::dec;
using testing::Ev;
using testing::feed;
using testing::kDayNs;
using testing::kNovember;
using testing::make_metric;
using testing::quantity_of;

TEST_CASE("billing.metric.identifier_from_name") {
  CHECK(*metric_identifier("GPU compute hours") == "gpu_compute_hours");
  CHECK(*metric_identifier("Documents processed") == "documents_processed");
  CHECK(*metric_identifier("  Peak -- concurrent users (v2) ") == "peak_concurrent_users_v2");
  CHECK(*metric_identifier("us-east-1 requests") == "us_east_1_requests");
  CHECK_FALSE(metric_identifier("---").ok());
  auto m = Metric::create({.name = "GPU compute hours", .aggregation = Aggregation::kSum, .field = "hours"});
  REQUIRE(m.ok());
  CHECK(m->identifier() == "gpu_compute_hours");
  // One chosen at creation is kept (invoices name it), when it is in the derived form.
  auto chosen = Metric::create({.name = "GPU compute hours", .identifier = "gpu_hours",
                                .aggregation = Aggregation::kSum, .field = "hours"});
  REQUIRE(chosen.ok());
  CHECK(chosen->identifier() == "gpu_hours");
  auto bad = Metric::create({.name = "GPU compute hours", .identifier = "GPU Hours",
                             .aggregation = Aggregation::kSum, .field = "hours"});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("identifier") != std::string_view::npos);
}

TEST_CASE("billing.metric.definition_is_validated_naming_the_field") {
  auto err = [](MetricDefinition d) {
    auto m = Metric::create(std::move(d));
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().code() == absl::StatusCode::kInvalidArgument);
    return std::string(m.status().message());
  };
  CHECK(err({.name = ""}).starts_with("name:"));
  CHECK(err({.name = "x", .aggregation = Aggregation::kSum}).starts_with("field: sum needs"));
  CHECK(err({.name = "x", .aggregation = Aggregation::kCount, .field = "hours"}).starts_with("field: count takes"));
  CHECK(err({.name = "x", .aggregation = Aggregation::kSum, .field = "a", .expression = "1"})
            .starts_with("expression:"));
  CHECK(err({.name = "x", .aggregation = Aggregation::kSum, .expression = "event.properties.tokens *"})
            .starts_with("expression: position 25"));
  CHECK(err({.name = "x", .aggregation = Aggregation::kSum, .expression = "1", .result_field = "a b"})
            .starts_with("result_field:"));
  CHECK(err({.name = "x", .aggregation = Aggregation::kSum, .field = "h", .rounding = MetricRounding{.precision = 19}})
            .starts_with("rounding.precision:"));
  CHECK(err({.name = "x", .filters = {{"region", {"a"}}, {"tier", {}}}}).starts_with("filters[1].values:"));
  CHECK(err({.name = "x", .filters = {{"", {"a"}}}}).starts_with("filters[0].key:"));
  CHECK(*parse_aggregation("unique_count") == Aggregation::kUniqueCount);
  CHECK_FALSE(parse_aggregation("avg").ok());
}

// Seed 003, Count: 50 events worldwide, 12 with region=us-east-1 -> 12 units.
TEST_CASE("billing.metric.seed_count_with_filter_12_of_50") {
  const Metric m = make_metric({.name = "us east requests", .aggregation = Aggregation::kCount,
                                .filters = {{"region", {"us-east-1"}}}});
  CHECK(m.identifier() == "us_east_requests");
  MetricAggregator a(m, kNovember);
  const char* regions[] = {"eu-west-1", "ap-south-1", "us-west-2", "US-EAST-1"};
  for (int i = 0; i < 50; ++i) {
    const char* region = i < 12 ? "us-east-1" : regions[i % 4];  // "US-EAST-1": values are case-sensitive
    feed(a, {.id = "e" + std::to_string(i), .tags = {{"region", region}, {"path", "/v1/chat"}}});
  }
  CHECK(quantity_of(a) == dec("12"));
  CHECK(a.counts().counted == 12);
  CHECK(a.counts().filtered_out == 38);
}

// Seed 003, Sum: Job A 0.2 h, Job B 12 h, Job C 48 h -> 60.2 GPU-hours (3 jobs would be 3 units).
TEST_CASE("billing.metric.seed_sum_60_2_gpu_hours") {
  const Metric m = make_metric({.name = "GPU compute hours", .aggregation = Aggregation::kSum, .field = "hours"});
  MetricAggregator a(m, kNovember);
  feed(a, {.id = "A", .tags = {{"hours", "0.2"}}});
  feed(a, {.id = "B", .tags = {{"hours", "12"}}});
  feed(a, {.id = "C", .tags = {{"hours", "48"}}});
  CHECK(quantity_of(a).to_string() == "60.2");
  CHECK(a.counts().counted == 3);
}

// Seed 003, Max: Mon 45, Wed 120, Fri 88 -> 120.
TEST_CASE("billing.metric.seed_max_peak_120") {
  const Metric m = make_metric({.name = "peak concurrent users", .aggregation = Aggregation::kMax,
                                .field = "concurrent_users"});
  MetricAggregator a(m, kNovember);
  feed(a, {.id = "mon", .tags = {{"concurrent_users", "45"}}});
  feed(a, {.id = "wed", .tags = {{"concurrent_users", "120"}}});
  feed(a, {.id = "fri", .tags = {{"concurrent_users", "88"}}});
  CHECK(quantity_of(a) == dec("120"));
}

// Seed 003, Unique count: doc-101 x3, doc-202 x1, doc-303 x2 -> 3 documents, not 6 events.
TEST_CASE("billing.metric.seed_unique_3_documents_from_6_events") {
  const Metric m = make_metric({.name = "Documents processed", .aggregation = Aggregation::kUniqueCount,
                                .field = "document_id"});
  MetricAggregator a(m, kNovember);
  const char* docs[] = {"doc-101", "doc-202", "doc-101", "doc-303", "doc-101", "doc-303"};
  for (int i = 0; i < 6; ++i) {
    feed(a, {.id = "e" + std::to_string(i), .tags = {{"document_id", docs[i]}, {"pages", "24"}}});
  }
  CHECK(quantity_of(a) == dec("3"));
  CHECK(a.counts().counted == 6);
}

// Seed 003, Latest: week 1: 10, week 3: 25, week 4: 22 -> 22, by timestamp whatever the arrival order.
TEST_CASE("billing.metric.seed_latest_22_seats") {
  const Metric m = make_metric({.name = "active seats", .aggregation = Aggregation::kLatest, .field = "seat_count"});
  MetricAggregator a(m, kNovember);
  feed(a, {.id = "w4", .tags = {{"seat_count", "22"}}, .ts_ns = kNovember.start_ns + 22 * kDayNs, .arrival = 1});
  feed(a, {.id = "w1", .tags = {{"seat_count", "10"}}, .ts_ns = kNovember.start_ns + 1 * kDayNs, .arrival = 2});
  feed(a, {.id = "w3", .tags = {{"seat_count", "25"}}, .ts_ns = kNovember.start_ns + 15 * kDayNs, .arrival = 3});
  CHECK(quantity_of(a) == dec("22"));
  // A tie on the timestamp goes to the later arrival, whichever is fed first.
  feed(a, {.id = "t2", .tags = {{"seat_count", "30"}}, .ts_ns = kNovember.start_ns + 25 * kDayNs, .arrival = 9});
  feed(a, {.id = "t1", .tags = {{"seat_count", "29"}}, .ts_ns = kNovember.start_ns + 25 * kDayNs, .arrival = 8});
  CHECK(quantity_of(a) == dec("30"));
}

// Seed 003, custom expression: 1,000 tokens x 4 replicas + 500 x 2 -> 5,000 effective tokens.
TEST_CASE("billing.metric.seed_expression_5000_effective_tokens") {
  const Metric m = make_metric({.name = "Effective tokens", .aggregation = Aggregation::kSum,
                                .expression = "event.properties.tokens * event.properties.replicas",
                                .result_field = "calculation_result"});
  CHECK(m.identifier() == "effective_tokens");
  MetricAggregator a(m, kNovember);
  CHECK(feed(a, {.id = "run1", .tags = {{"tokens", "1000"}, {"replicas", "4"}}}).value == dec("4000"));
  feed(a, {.id = "run2", .tags = {{"tokens", "500"}, {"replicas", "2"}}});
  CHECK(quantity_of(a) == dec("5000"));
}

TEST_CASE("billing.metric.unique_count_of_an_expression_counts_equal_numbers_once") {
  const Metric m = make_metric({.name = "pages per doc", .aggregation = Aggregation::kUniqueCount,
                                .expression = "event.properties.pages / 2"});
  MetricAggregator a(m, kNovember);
  feed(a, {.id = "1", .tags = {{"pages", "4"}}});
  feed(a, {.id = "2", .tags = {{"pages", "4.00"}}});  // 2 and 2.00 are one value
  feed(a, {.id = "3", .tags = {{"pages", "5"}}});
  feed(a, {.id = "4", .tags = {{"pages", "x"}}});
  CHECK(quantity_of(a) == dec("2"));
  CHECK(a.counts().excluded[static_cast<int>(ExclusionReason::kNotANumber)] == 1);
}

TEST_CASE("billing.metric.missing_and_non_numeric_fields_are_excluded_by_reason") {
  const Metric m = make_metric({.name = "hours", .aggregation = Aggregation::kSum, .field = "hours"});
  MetricAggregator a(m, kNovember);
  feed(a, {.id = "1", .tags = {{"hours", "2.5"}}});
  feed(a, {.id = "2", .tags = {{"Hours", "100"}}});  // keys are case-sensitive: missing
  feed(a, {.id = "3", .tags = {}});
  feed(a, {.id = "4", .tags = {{"hours", "abc"}}});
  feed(a, {.id = "5", .tags = {{"hours", ""}}});
  feed(a, {.id = "6", .tags = {{"hours", "1e2"}}});  // exponent: not a plain number
  feed(a, {.id = "7", .tags = {{"hours", "0"}}});
  CHECK(quantity_of(a) == dec("2.5"));  // never read as 0 and never as 100
  CHECK(a.counts().counted == 2);
  CHECK(a.counts().excluded[static_cast<int>(ExclusionReason::kMissingField)] == 2);
  CHECK(a.counts().excluded[static_cast<int>(ExclusionReason::kNotANumber)] == 3);
  CHECK(a.counts().excluded_total() == 5);
  // Unique count on a field: a missing or empty value is excluded, any other string counts.
  const Metric u = make_metric({.name = "docs", .aggregation = Aggregation::kUniqueCount, .field = "doc"});
  MetricAggregator b(u, kNovember);
  feed(b, {.id = "1", .tags = {{"doc", "a"}}});
  feed(b, {.id = "2", .tags = {{"doc", ""}}});
  feed(b, {.id = "3", .tags = {{"other", "a"}}});
  CHECK(quantity_of(b) == dec("1"));
  CHECK(b.counts().excluded[static_cast<int>(ExclusionReason::kMissingField)] == 2);
}

TEST_CASE("billing.metric.filters_with_several_values_all_apply") {
  const Metric m = make_metric({.name = "requests", .aggregation = Aggregation::kSum, .field = "n",
                                .filters = {{"region", {"us-east-1", "us-west-2"}}, {"tier", {"pro"}}}});
  MetricAggregator a(m, kNovember);
  feed(a, {.id = "1", .tags = {{"region", "us-east-1"}, {"tier", "pro"}, {"n", "1"}}});
  feed(a, {.id = "2", .tags = {{"region", "us-west-2"}, {"tier", "pro"}, {"n", "10"}}});
  feed(a, {.id = "3", .tags = {{"region", "eu-west-1"}, {"tier", "pro"}, {"n", "100"}}});  // region refused
  feed(a, {.id = "4", .tags = {{"region", "us-east-1"}, {"tier", "free"}, {"n", "1000"}}});  // tier refused
  feed(a, {.id = "5", .tags = {{"region", "us-east-1"}, {"n", "10000"}}});                   // no tier
  feed(a, {.id = "6", .tags = {{"region", "us-east-1"}, {"tier", "Pro"}, {"n", "100000"}}});  // case-sensitive
  CHECK(quantity_of(a) == dec("11"));
  CHECK(a.counts().filtered_out == 4);
}

TEST_CASE("billing.metric.duplicated_event_counted_once") {
  const Metric m = make_metric({.name = "hours", .aggregation = Aggregation::kSum, .field = "hours"});
  MetricAggregator a(m, kNovember);
  CHECK(feed(a, {.id = "job-1", .tags = {{"hours", "12"}}}).counted);
  CHECK_FALSE(feed(a, {.id = "job-1", .tags = {{"hours", "12"}}}).counted);  // a retried delivery
  feed(a, {.id = "job-2", .tags = {{"hours", "0.5"}}});
  CHECK(quantity_of(a) == dec("12.5"));
  CHECK(a.counts().duplicates == 1);
}

TEST_CASE("billing.metric.duplicate_ids_in_every_form") {
  const Metric m = make_metric({.name = "calls"});
  MetricAggregator a(m, kNovember);
  const std::string hex = "0123456789abcdef0123456789abcdef";  // the house's ids: packed into 16 bytes
  CHECK(feed(a, {.id = hex}).counted);
  CHECK_FALSE(feed(a, {.id = hex}).counted);
  CHECK(feed(a, {.id = "0123456789abcdef0123456789abcdee"}).counted);  // last digit differs
  CHECK(feed(a, {.id = "1123456789abcdef0123456789abcdef"}).counted);  // first digit differs
  CHECK(feed(a, {.id = "0123456789ABCDEF0123456789ABCDEF"}).counted);  // uppercase is another id
  CHECK_FALSE(feed(a, {.id = "0123456789ABCDEF0123456789ABCDEF"}).counted);
  CHECK(feed(a, {.id = "0123456789abcdef0123456789abcdeg"}).counted);  // 32 chars, not hex
  CHECK_FALSE(feed(a, {.id = "0123456789abcdef0123456789abcdeg"}).counted);
  CHECK(feed(a, {.id = "call-1"}).counted);
  CHECK_FALSE(feed(a, {.id = "call-1"}).counted);
  CHECK(feed(a, {.id = ""}).counted);  // no id: cannot be deduplicated, each counts
  CHECK(feed(a, {.id = ""}).counted);
  CHECK(quantity_of(a) == dec("8"));
  CHECK(a.counts().duplicates == 4);
}

TEST_CASE("billing.metric.unique_count_is_per_period") {
  const Metric m = make_metric({.name = "docs", .aggregation = Aggregation::kUniqueCount, .field = "document_id"});
  MetricAggregator nov(m, testing::kNovember);
  MetricAggregator dec_agg(m, testing::kDecember);
  // doc-101 on the last nanosecond of November and again on the first of December: once in each.
  const Ev last_nov{.id = "1", .tags = {{"document_id", "doc-101"}}, .ts_ns = testing::kNovember.end_ns - 1};
  const Ev first_dec{.id = "2", .tags = {{"document_id", "doc-101"}}, .ts_ns = testing::kDecember.start_ns};
  const Ev dec_other{.id = "3", .tags = {{"document_id", "doc-202"}}, .ts_ns = testing::kDecember.start_ns + 5};
  for (const Ev* e : {&last_nov, &first_dec, &dec_other}) {
    feed(nov, *e);
    feed(dec_agg, *e);
  }
  CHECK(quantity_of(nov) == dec("1"));
  CHECK(nov.counts().outside_period == 2);
  CHECK(quantity_of(dec_agg) == dec("2"));
  CHECK(dec_agg.counts().outside_period == 1);
}

TEST_CASE("billing.metric.rounding_of_the_total_each_mode") {
  auto total_with = [](std::optional<MetricRounding> r) {
    const Metric m = make_metric({.name = "hours", .aggregation = Aggregation::kSum, .field = "hours", .rounding = r});
    MetricAggregator a(m, kNovember);
    feed(a, {.id = "1", .tags = {{"hours", "0.2"}}});
    feed(a, {.id = "2", .tags = {{"hours", "12.05"}}});
    feed(a, {.id = "3", .tags = {{"hours", "48"}}});  // 60.25: rounded once, on the total
    return quantity_of(a).to_string();
  };
  CHECK(total_with(std::nullopt) == "60.25");
  CHECK(total_with(MetricRounding{RoundingMode::kRound, 1}) == "60.3");  // half away from zero
  CHECK(total_with(MetricRounding{RoundingMode::kRound, 0}) == "60");
  CHECK(total_with(MetricRounding{RoundingMode::kCeil, 0}) == "61");
  CHECK(total_with(MetricRounding{RoundingMode::kCeil, 1}) == "60.3");
  CHECK(total_with(MetricRounding{RoundingMode::kFloor, 1}) == "60.2");
  CHECK(total_with(MetricRounding{RoundingMode::kFloor, 0}) == "60");
}

TEST_CASE("billing.metric.sum_overflow_is_an_error_not_a_wrap") {
  const Metric m = make_metric({.name = "n", .aggregation = Aggregation::kSum, .field = "n"});
  MetricAggregator a(m, kNovember);
  feed(a, {.id = "1", .tags = {{"n", "99999999999999999999999999999999999999"}}});
  feed(a, {.id = "2", .tags = {{"n", "99999999999999999999999999999999999999"}}});
  auto q = a.quantity();
  REQUIRE_FALSE(q.ok());
  CHECK(q.status().code() == absl::StatusCode::kOutOfRange);
  // A tag too long to be a decimal at all is excluded as overflow.
  MetricAggregator b(m, kNovember);
  feed(b, {.id = "1", .tags = {{"n", "123456789012345678901234567890123456789"}}});
  CHECK(b.counts().excluded[static_cast<int>(ExclusionReason::kOverflow)] == 1);
}

}  // namespace
}  // namespace paygent::billing
