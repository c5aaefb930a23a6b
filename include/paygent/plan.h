// Spending plans, as configured in JSON, and billing periods.
//
// Config format (USD amounts as JSON numbers, parsed exactly; a missing or null limit is
// unlimited):
//   {"soft_gate_at": 0.80,            // or a list of thresholds: [0.5, 0.8, 0.95]
//    "hard_gate_at": 1.00,
//    "default_plan": "pro",           // optional: plan of users with no subscription
//    "plans": [{
//      "name": "pro",
//      "price": 49.00,                // optional: what the customer pays per period; no gate,
//                                     // paygentd's forecast warns of a cost on course to pass it
//      "max_spend_per_period": 49.00,
//      "max_spend_per_session": 5.00,
//      "model_limits": {"gpt-4o": {"max_tokens_per_period": 50000}},
//      "cost_rates": {"gpt-4o": {"input": 0.0025, "output": 0.01,      // USD per 1K tokens
//                                "cached_input": 0.00125,             // optional: cache reads
//                                "cache_write": 0.0025}},             // optional: cache writes
//      "session_timeout_minutes": 30.0,
//      "period": "month",             // calendar rule for users without a subscription:
//                                     // "month" | "week" (Monday) | "day", UTC
//      "soft_gate_at": [0.5, 0.8]     // optional per-plan override of the thresholds
//    }]}
//
// Thread safety: PlanConfig and Plan are immutable values once parsed; share them freely.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "paygent/money.h"

namespace paygent {

// A ratio of a limit, exact, in parts per million (0.8 -> 800'000).
using Ppm = std::int64_t;
inline constexpr Ppm kPpmOne = 1'000'000;

struct ModelLimit {
  std::optional<std::int64_t> max_tokens_per_period;  // input + output tokens; nullopt = unlimited
  friend bool operator==(const ModelLimit&, const ModelLimit&) = default;
};

// Per-model prices set by the plan, from USD per 1K tokens, with the token conventions of Usage
// (usage.h): input_tokens include the cache reads and writes, output_tokens include reasoning.
struct CostRate {
  PicosPerToken input = 0;   // "input": uncached input tokens
  PicosPerToken output = 0;  // "output": output tokens, reasoning included (as every catalog price)
  // "cached_input" (prompt-cache reads) and "cache_write" (prompt-cache writes). Unset (nullopt)
  // means the plan's input rate scaled by the built-in catalog's ratio for the model (gpt-4o
  // reads at 1.25/2.50 of input, Claude writes at 3.75/3 of it), rounded to the nearest pico-USD
  // per token, so that a plan listing only input and output prices cached tokens as the provider
  // does (a model whose provider publishes no cache price: the input rate, as the catalog). When
  // the catalog does not know the model (or prices its input at 0) the input rate applies, and
  // the first event with such cache tokens is reported through Options::on_error (once per
  // model), so that a guessed price is never silent. Set the field to price cache tokens exactly.
  std::optional<PicosPerToken> cached_input;
  std::optional<PicosPerToken> cache_write;
  friend bool operator==(const CostRate&, const CostRate&) = default;
};

enum class PeriodRule : std::uint8_t { kMonth, kWeek, kDay };

struct Plan {
  std::string name;
  std::optional<Nanos> price;                  // what the customer pays per period; nullopt = not said
  std::optional<Nanos> max_spend_per_period;   // nullopt = unlimited
  std::optional<Nanos> max_spend_per_session;  // nullopt = unlimited
  // Keyed by canonical model name (see canonical_model in price_catalog.h).
  std::map<std::string, ModelLimit, std::less<>> model_limits;
  std::map<std::string, CostRate, std::less<>> cost_rates;
  absl::Duration session_timeout = absl::Minutes(30);
  PeriodRule period = PeriodRule::kMonth;
  // Empty = the config's thresholds.
  std::vector<Ppm> soft_gate_at;
  friend bool operator==(const Plan&, const Plan&) = default;
};

struct PlanConfig {
  // Ascending, each in (0, hard_gate_at]. Each fires once per period (per session for the session
  // limit) per limit.
  std::vector<Ppm> soft_gate_at = {800'000};
  Ppm hard_gate_at = kPpmOne;
  std::string default_plan;  // empty = users without a subscription are metered, not gated
  std::vector<Plan> plans;

  // The plan called `name`, or nullptr.
  [[nodiscard]] const Plan* find(std::string_view name) const noexcept;
  friend bool operator==(const PlanConfig&, const PlanConfig&) = default;
};

// Parses and validates a plan config. On failure returns InvalidArgument whose message starts with
// the path of the offending field and says what is wrong, e.g.
//   "plans[1].model_limits.gpt-4o.max_tokens_per_period: must be a non-negative integer"
// Unknown fields are rejected too (a typo must not silently mean "unlimited").
absl::StatusOr<PlanConfig> parse_plan_config(std::string_view json);

// Serialises a config back to the JSON format above (amounts exact), so that
// parse_plan_config(to_json(c)) == c.
std::string to_json(const PlanConfig& config);

// A half-open UTC interval [start, end).
struct Period {
  absl::Time start;
  absl::Time end;
  [[nodiscard]] bool contains(absl::Time t) const noexcept { return start <= t && t < end; }
  friend bool operator==(const Period&, const Period&) = default;
};

// The calendar period containing `t`: the UTC month, the ISO week (from Monday 00:00), or the day.
[[nodiscard]] Period calendar_period(PeriodRule rule, absl::Time t) noexcept;

// A subscription's period: [period_start, period_end) for `t` inside it. For t past the end, the
// subscription renews with the same length: by whole calendar months when start and end fall on
// the same day of month and time (a month-31 start renews on the last day of shorter months), else
// by the same duration. For t before the start, the first period is returned.
[[nodiscard]] Period subscription_period(absl::Time period_start, absl::Time period_end, absl::Time t) noexcept;

}  // namespace paygent
