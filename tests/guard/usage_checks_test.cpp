// Usage that cannot be real is refused, and a response that names another model than the one
// called is priced and counted as the model that ran (issue 8, items 2 and 3).
#include "paygent/paygent.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::tokens;
constexpr Nanos kDollar = kNanosPerUsd;

struct Harness {
  explicit Harness(PlanConfig config) {
    Options o;
    o.plans = std::move(config);
    o.local_store_path = "";
    o.clock = clock.fn();
    o.on_usage = [this](const UsageEvent& e) {
      models.emplace_back(e.model);
      costs.push_back(e.cost);
      usages.push_back(e.usage);
      estimated.push_back(e.estimated);
    };
    o.on_error = [this](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    pg = *Paygent::create(std::move(o));
  }
  bool error_mentions(std::string_view a, std::string_view b = "") const {
    for (const auto& e : errors) {
      if (e.find(a) != std::string::npos && e.find(b) != std::string::npos) return true;
    }
    return false;
  }
  testing::FakeClock clock;
  std::vector<std::string> models;
  std::vector<Nanos> costs;
  std::vector<Usage> usages;
  std::vector<bool> estimated;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;
};

Plan limited_plan() {
  Plan p = testing::round_plan();
  p.max_spend_per_period = kDollar;
  p.model_limits["gpt-4o"].max_tokens_per_period = 100'000;
  p.model_limits["gpt-4o-mini"].max_tokens_per_period = 100'000;
  return p;
}

std::string openai_body(std::string_view model, std::int64_t in, std::int64_t out) {
  return absl::StrFormat(
      R"({"id":"chatcmpl-1","object":"chat.completion","model":"%s",)"
      R"("choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}})",
      model, in, out, in + out);
}

std::int64_t model_tokens(const UserReport& r, std::string_view model) {
  for (const auto& m : r.by_model) {
    if (m.model == model) return m.input_tokens + m.output_tokens;
  }
  return 0;
}

}  // namespace

TEST_CASE("guard.usage.record_refuses_negative_tokens") {
  Harness h(testing::config_with(limited_plan()));
  Context ctx("u1");
  h.pg->record("m", tokens(100'000, 0));  // $0.10
  h.pg->record("m", tokens(-5'000, 0));   // would refund $0.005
  Usage negative_output = tokens(10, -1);
  h.pg->record("gpt-4o", negative_output);
  CHECK(h.costs.size() == 1);  // only the real call
  auto rep = h.pg->report("u1");
  REQUIRE(rep.ok());
  CHECK(rep->spend == 100'000'000);
  CHECK(rep->calls == 1);
  CHECK(model_tokens(*rep, "gpt-4o") == 0);
  CHECK(h.error_mentions("usage.input_tokens", "-5000"));
  CHECK(h.error_mentions("usage.output_tokens", "-1"));
  CHECK(h.pg->stats().refused_usages == 2);
  CHECK(h.pg->stats().events == 1);
}

TEST_CASE("guard.usage.record_refuses_subsets_larger_than_their_total") {
  Harness h(testing::config_with(limited_plan()));
  Context ctx("u1");
  Usage u = tokens(1'000, 10);
  u.cached_input_tokens = 2'000;  // more cached than input
  h.pg->record("gpt-4o", u);
  u = tokens(1'000, 10);
  u.cached_input_tokens = 600;
  u.cache_creation_input_tokens = 600;  // reads + writes > input
  h.pg->record("gpt-4o", u);
  u = tokens(1'000, 10);
  u.reasoning_tokens = 11;  // more reasoning than output
  h.pg->record("gpt-4o", u);
  CHECK(h.costs.empty());
  CHECK(h.error_mentions("usage.cached_input_tokens"));
  CHECK(h.error_mentions("usage.cache_creation_input_tokens"));
  CHECK(h.error_mentions("usage.reasoning_tokens"));
  CHECK(h.pg->stats().refused_usages == 3);
  // Subsets equal to their totals are real (every input token cached).
  u = tokens(1'000, 10);
  u.cached_input_tokens = 1'000;
  u.reasoning_tokens = 10;
  h.pg->record("gpt-4o", u);
  CHECK(h.costs.size() == 1);
}

TEST_CASE("guard.usage.settle_with_impossible_usage_meters_the_estimate") {
  Harness h(testing::config_with(limited_plan()));
  Context ctx("u1");
  Reservation r = h.pg->reserve("m", {.prompt_tokens = 1'000, .max_output_tokens = 500});
  h.pg->settle(r, tokens(-5'000, 100));
  REQUIRE(h.costs.size() == 1);
  CHECK(h.estimated[0]);
  CHECK(h.costs[0] == 1'000 * 1'000 + 500 * 2'000);  // the estimate, never a refund
  CHECK(h.usages[0].input_tokens == 1'000);
  auto rep = h.pg->report("u1");
  REQUIRE(rep.ok());
  CHECK(rep->spend == 2'000'000);
  CHECK(rep->reserved == 0);
  CHECK(h.error_mentions("usage.input_tokens", "-5000"));
  CHECK(h.pg->stats().refused_usages == 1);
}

// A provider body whose cached tokens exceed its prompt tokens is refused like any usage.
TEST_CASE("guard.usage.settle_response_refuses_impossible_extracted_usage") {
  Harness h(testing::config_with(limited_plan()));
  Context ctx("u1");
  Reservation r = h.pg->reserve("gpt-4o", {.prompt_tokens = 1'000, .max_output_tokens = 100});
  h.pg->settle_response(r, R"({"id":"x","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[],)"
                           R"("usage":{"prompt_tokens":100,"completion_tokens":10,"total_tokens":110,)"
                           R"("prompt_tokens_details":{"cached_tokens":5000}}})");
  REQUIRE(h.costs.size() == 1);
  CHECK(h.estimated[0]);
  CHECK(h.usages[0].input_tokens == 1'000);
  CHECK(h.error_mentions("usage.cached_input_tokens"));
  CHECK(h.pg->stats().refused_usages == 1);
}

// An unreadable body meters what the caller says arrived, when it says so (paygent-proxy: a
// response that broke off), else the reservation's estimate; both flagged and reported.
TEST_CASE("guard.usage.settle_response_of_an_unreadable_body_meters_the_callers_estimate") {
  Harness h(testing::config_with(limited_plan()));
  Context ctx("u1");
  Reservation given = h.pg->reserve("gpt-4o", {.prompt_tokens = 1'000, .max_output_tokens = 4'000});
  const Usage arrived{.input_tokens = 1'000, .output_tokens = 25};
  h.pg->settle_response(given, R"({"id":"chatcmpl-1","object":"chat.com)", &arrived);
  Reservation unsaid = h.pg->reserve("gpt-4o", {.prompt_tokens = 1'000, .max_output_tokens = 4'000});
  h.pg->settle_response(unsaid, "not json");
  REQUIRE(h.usages.size() == 2);
  CHECK(h.usages[0] == arrived);
  CHECK(h.usages[1] == Usage{.input_tokens = 1'000, .output_tokens = 4'000});
  CHECK(h.estimated[0]);
  CHECK(h.estimated[1]);
  CHECK(h.error_mentions("the caller's estimate"));
  CHECK(h.error_mentions("the reservation's estimate"));
  CHECK(h.pg->stats().unreadable_responses == 2);
  CHECK(h.pg->report("u1")->reserved == 0);
}

TEST_CASE("guard.usage.response_from_another_model_is_priced_and_counted_as_that_model") {
  Plan p = limited_plan();
  p.cost_rates.erase("gpt-4o");  // both priced by the catalog
  Harness h(testing::config_with(p));
  Context ctx("u1");
  Reservation r = h.pg->reserve("gpt-4o", {.prompt_tokens = 1'000, .max_output_tokens = 1'000});
  h.pg->settle_response(r, openai_body("gpt-4o-mini-2024-07-18", 1'000, 500));
  REQUIRE(h.models.size() == 1);
  CHECK(h.models[0] == "gpt-4o-mini");
  CHECK(h.costs[0] == 1'000 * 150 + 500 * 600);  // gpt-4o-mini's $0.15/$0.60 per 1M
  auto rep = h.pg->report("u1");
  REQUIRE(rep.ok());
  CHECK(rep->reserved == 0);  // the hold for gpt-4o is gone
  CHECK(rep->spend == 450'000);
  CHECK(model_tokens(*rep, "gpt-4o") == 0);
  CHECK(model_tokens(*rep, "gpt-4o-mini") == 1'500);
  CHECK(h.error_mentions("gpt-4o-mini", "gpt-4o"));
  CHECK(h.pg->stats().model_mismatches == 1);
  // The called model's quota holds nothing any more; the real model's counts the tokens.
  CHECK(h.pg->check("gpt-4o", {.prompt_tokens = 100'000}).status == GateStatus::kSoftGate);
  CHECK_THROWS_AS(h.pg->check("gpt-4o-mini", {.prompt_tokens = 98'501}), LimitExceeded);
}

TEST_CASE("guard.usage.dated_snapshot_of_the_called_model_is_no_mismatch") {
  Harness h(testing::config_with(limited_plan()));
  Context ctx("u1");
  Reservation r = h.pg->reserve("gpt-4o", {.prompt_tokens = 1'000, .max_output_tokens = 1'000});
  h.pg->settle_response(r, openai_body("gpt-4o-2024-08-06", 1'000, 500));
  REQUIRE(h.models.size() == 1);
  CHECK(h.models[0] == "gpt-4o");
  CHECK(h.costs[0] == 1'000 * 2'500 + 500 * 10'000);  // the plan's rate for gpt-4o
  CHECK(h.errors.empty());
  CHECK(h.pg->stats().model_mismatches == 0);
}

// The catalog prices gpt-4o-2024-05-13 apart from gpt-4o: a response from it is priced as it.
TEST_CASE("guard.usage.dated_snapshot_priced_apart_is_priced_as_what_ran") {
  Plan p = limited_plan();
  p.cost_rates.erase("gpt-4o");
  Harness h(testing::config_with(p));
  Context ctx("u1");
  Reservation r = h.pg->reserve("gpt-4o", {.prompt_tokens = 1'000, .max_output_tokens = 1'000});
  h.pg->settle_response(r, openai_body("gpt-4o-2024-05-13", 1'000, 500));
  REQUIRE(h.models.size() == 1);
  CHECK(h.models[0] == "gpt-4o");
  CHECK(h.costs[0] == 1'000 * 5'000 + 500 * 15'000);  // $5/$15 per 1M, not gpt-4o's $2.50/$10
  CHECK(h.pg->stats().model_mismatches == 0);
}

// A negative estimate must not make room under a cap: check() counts it as none, as reserve() does.
TEST_CASE("guard.usage.check_counts_a_negative_estimate_as_none") {
  Harness h(testing::config_with(limited_plan()));
  Context ctx("u1");
  h.pg->record("gpt-4o-mini", tokens(99'000, 0));  // 1,000 tokens of the quota left
  bool refused = false;
  try {  // 5,000 prompt tokens do not fit; a negative max_output_tokens must not cancel them out
    static_cast<void>(h.pg->check("gpt-4o-mini", {.prompt_tokens = 5'000, .max_output_tokens = -10'000}));
  } catch (const LimitExceeded& e) {
    refused = true;
    CHECK(e.result().reason == GateReason::kModelLimit);
  }
  CHECK(refused);
}

// max_output_tokens = INT64_MAX ("no max_tokens") must not wrap the estimate and admit a call at
// a full quota, nor take the held counters past int64.
TEST_CASE("guard.usage.an_unbounded_estimate_is_refused_at_a_cap_not_wrapped") {
  Plan tokens_only = limited_plan();  // no dollar limit: the token quota alone must refuse it
  tokens_only.max_spend_per_period.reset();
  tokens_only.max_spend_per_session.reset();
  Harness h(testing::config_with(tokens_only));
  Context ctx("u1");
  h.pg->record("gpt-4o-mini", tokens(99'000, 0));
  for (const bool reserve : {false, true}) {
    CAPTURE(reserve);
    bool refused = false;
    try {
      const CallEstimate huge{.prompt_tokens = 10, .max_output_tokens = INT64_MAX};
      if (reserve) {
        static_cast<void>(h.pg->reserve("gpt-4o-mini", huge));
      } else {
        static_cast<void>(h.pg->check("gpt-4o-mini", huge));
      }
    } catch (const LimitExceeded& e) {
      refused = true;
      CHECK(e.result().reason == GateReason::kModelLimit);
    }
    CHECK(refused);
  }
  CHECK(model_tokens(*h.pg->report("u1"), "gpt-4o-mini") == 99'000);  // nothing held or lost
}

}  // namespace paygent
