// The JSON of the agents API and of the profit report (docs/tracking.md, "Revenue"; README, "Agents,
// revenue and profit"): the strict reader of an agent's body and the writers of the replies.
//
// PUT /api/v1/agents/{agentId} body:
//   {"name": string (optional, "" when absent),
//    "indicators": [ {"indicator": non-empty string,
//                     "perMinute": boolean (optional, false),
//                     "pricePerEvent": price (only when perMinute is false; optional),
//                     "pricePerMinute": price (only when perMinute is true; optional),
//                     "customRates": [ {"kind": "llm"|"stt"|"tts", "model": non-empty string,
//                                       "pricePerMinute": price} ] (only when perMinute is true),
//                     "metric": a billable metric's identifier (optional; not with perMinute),
//                     "pricing": pricing object (server/billing_wire.h; optional; not with
//                                perMinute or pricePerEvent)} ]}
// Every field may be spelled in snake_case too (per_minute, price_per_event, price_per_minute,
// custom_rates). A price is USD as a decimal string ("0.15") or a JSON number read from its exact
// text (0.15, never through a double): non-negative, at most 9 decimal places (whole nano-USD), no
// exponent. An unknown or repeated field, a price where it does not belong, a repeated indicator
// or (kind, model): InvalidArgument naming the field ("indicators[1].pricePerEvent: ...").
//
// Thread safety: free functions without shared state. Nothing of `body` is kept.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/storage.h"

namespace paygent::server {

// Most indicators of one agent, and custom rates of one indicator.
inline constexpr std::size_t kMaxIndicators = 100;
inline constexpr std::size_t kMaxCustomRates = 100;

// Most agents in one POST /api/v1/agents:apply.
inline constexpr std::size_t kMaxAgentsPerApply = 1000;

// Reads an agent's body (above) for agent `agent_id` (already decoded and checked). The body may
// also carry "agentId" (as agent_json writes it): then it must be `agent_id`.
absl::StatusOr<AgentRecord> parse_agent_body(std::string_view agent_id, std::string_view body);

// POST /api/v1/agents:apply (what `paygent agents apply FILE` sends): {"agents": [agent bodies,
// each with its "agentId", distinct]}.
absl::StatusOr<std::vector<AgentRecord>> parse_agents_file(std::string_view body);

// The agents of a file's "agents" array at `path`: each with its "agentId", distinct.
absl::Status read_agents_array(simdjson::ondemand::value v, std::string_view path, std::vector<AgentRecord>& agents);

// Storage::put_agent's NotFound naming an indicator's billable metric as InvalidArgument (the
// body's mistake); any other status as it is.
absl::Status linked_metric_error(const absl::Status& status);

// A price text ("0.15", "0.2", "12") as nano-USD, or InvalidArgument "<field>: ..." (negative, more
// than 9 decimal places, an exponent, not a number, too large).
absl::StatusOr<std::int64_t> parse_price_nanos(std::string_view text, std::string_view field);

// nano-USD as the shortest exact decimal text: 150000000 -> "0.15", 2000000000 -> "2".
std::string nanos_as_usd(std::int64_t nanos);

// {"agentId", "name", "indicators": [...]} in the body's own camelCase form: a reply's agent can be
// PUT back unchanged.
std::string agent_json(const AgentRecord& agent);

// profit / revenue in parts per million, rounded half away from zero; nullopt unless both are
// known and revenue > 0.
std::optional<std::int64_t> margin_ppm(std::optional<std::int64_t> cost_nanos, std::optional<std::int64_t> revenue_nanos);

// The profit report's reply: {"from_ns", "to_ns", "by", "rows": [...], "total": {...}} with null for
// what was not recorded (docs/tracking.md).
std::string profit_report_json(std::int64_t from_ns, std::int64_t to_ns, std::string_view by,
                               std::span<const ProfitRow> rows);

}  // namespace paygent::server
