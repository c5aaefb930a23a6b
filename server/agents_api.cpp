// paygentd's agents API and profit report (docs/tracking.md, "Revenue"; README, "Agents, revenue
// and profit"), routes of Api's route table (server/api.cpp):
//   GET    /api/v1/agents                 -> {"agents": [agent, ...]}
//   POST   /api/v1/agents:apply           -> {"agents": [{"agentId", "changed"}]}  (the CLI's file)
//   GET    /api/v1/agents/{agentId}       -> agent
//   PUT    /api/v1/agents/{agentId}       -> {"agent": agent, "changed": bool}
//   DELETE /api/v1/agents/{agentId}       -> {"deleted": agentId}
//   GET    /api/v1/reports/profit?from_ns=&to_ns=&by=agent|customer|indicator|model|day|tag:<key>
//   GET    /api/v1/config/report-tags     -> {"tags": [key, ...]}
//   PUT    /api/v1/config/report-tags     {"tags": [...]} -> {"tags": [...]}  (their rollups filled)
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meter/internal/str_cat.h"
#include "server/agents_wire.h"
#include "server/api.h"
#include "server/invoicing.h"
#include "server/routes.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

HttpResponse json_response(int status, std::string body) { return HttpResponse{.status = status, .body = std::move(body)}; }

struct ProfitQuery {
  TimeRange range;
  ProfitGroup group = ProfitGroup::kAgent;
  std::string by = "agent";
  std::string tag_key;  // by=tag:<key>
};

// from_ns and to_ns (non-negative integers, to_ns after from_ns) and by (optional, "agent").
absl::StatusOr<ProfitQuery> parse_profit_query(std::string_view query) {
  static constexpr std::string_view kKnown[] = {"from_ns", "to_ns", "by"};
  absl::StatusOr<std::map<std::string, std::string, std::less<>>> parsed = parse_query(query, kKnown);
  if (!parsed.ok()) return parsed.status();
  const std::map<std::string, std::string, std::less<>>& params = *parsed;
  ProfitQuery q;
  for (const char* name : {"from_ns", "to_ns"}) {
    auto it = params.find(name);
    if (it == params.end()) return absl::InvalidArgumentError(str_cat(name, ": missing"));
    const std::optional<std::int64_t> value = parse_count(it->second);
    if (!value) return absl::InvalidArgumentError(str_cat(name, ": must be a non-negative integer (Unix ns)"));
    (std::string_view(name) == "from_ns" ? q.range.from_ns : q.range.to_ns) = *value;
  }
  if (q.range.to_ns <= q.range.from_ns) return absl::InvalidArgumentError("to_ns: must be after from_ns");
  static const std::map<std::string_view, ProfitGroup> kGroups = {{"agent", ProfitGroup::kAgent},
                                                                  {"customer", ProfitGroup::kCustomer},
                                                                  {"indicator", ProfitGroup::kIndicator},
                                                                  {"model", ProfitGroup::kModel},
                                                                  {"day", ProfitGroup::kDay}};
  if (auto by = params.find("by"); by != params.end()) {
    if (std::string_view(by->second).starts_with("tag:")) {
      q.tag_key = by->second.substr(4);
      if (q.tag_key.empty() || q.tag_key.size() > kMaxTextBytes) {
        return absl::InvalidArgumentError(str_cat("by: tag:<key> needs a meta tag key of 1 to ", kMaxTextBytes, " bytes"));
      }
      q.group = ProfitGroup::kTag;
      q.by = by->second;
      return q;
    }
    auto group = kGroups.find(by->second);
    if (group == kGroups.end()) {
      return absl::InvalidArgumentError("by: must be agent, customer, indicator, model, day or tag:<meta tag key>");
    }
    q.group = group->second;
    q.by = by->second;
  }
  return q;
}

}  // namespace

HttpResponse Api::list_agents(const Call& call) {
  absl::StatusOr<std::vector<AgentRecord>> agents = storage_.list_agents(call.product_id);
  if (!agents.ok()) return error_response(agents.status());
  std::string body = "{\"agents\":[";
  for (std::size_t i = 0; i < agents->size(); ++i) str_append(&body, i ? "," : "", agent_json((*agents)[i]));
  return json_response(200, body + "]}");
}

HttpResponse Api::apply_agents(const Call& call) {
  absl::StatusOr<std::vector<AgentRecord>> agents = parse_agents_file(call.request.body);
  if (!agents.ok()) return error_response(agents.status());
  for (std::size_t i = 0; i < agents->size(); ++i) {
    if (absl::Status s = check_agent_metrics(call.product_id, (*agents)[i]); !s.ok()) {
      return error_response(absl::InvalidArgumentError(str_cat("agents[", i, "].", s.message())));
    }
  }
  std::string body = "{\"agents\":[";
  for (std::size_t i = 0; i < agents->size(); ++i) {
    absl::StatusOr<bool> changed = storage_.put_agent(call.product_id, (*agents)[i]);
    if (!changed.ok()) return error_response(linked_metric_error(changed.status()));
    str_append(&body, i ? "," : "", "{\"agentId\":", json_quote((*agents)[i].agent_id),
               ",\"changed\":", *changed ? "true" : "false", "}");
  }
  return json_response(200, body + "]}");
}

HttpResponse Api::get_agent(const Call& call) {
  absl::StatusOr<AgentRecord> agent = storage_.find_agent(call.product_id, call.param);
  if (!agent.ok()) return error_response(agent.status());
  return json_response(200, agent_json(*agent));
}

HttpResponse Api::put_agent(const Call& call) {
  absl::StatusOr<AgentRecord> agent = parse_agent_body(call.param, call.request.body);
  if (!agent.ok()) return error_response(agent.status());
  if (absl::Status s = check_agent_metrics(call.product_id, *agent); !s.ok()) return error_response(s);
  absl::StatusOr<bool> changed = storage_.put_agent(call.product_id, *agent);
  if (!changed.ok()) return error_response(linked_metric_error(changed.status()));
  absl::StatusOr<AgentRecord> stored = storage_.find_agent(call.product_id, call.param);  // as stored (sorted)
  if (!stored.ok()) return error_response(stored.status());
  return json_response(200, str_cat("{\"agent\":", agent_json(*stored), ",\"changed\":", *changed ? "true" : "false", "}"));
}

HttpResponse Api::delete_agent(const Call& call) {
  if (absl::Status s = storage_.delete_agent(call.product_id, call.param); !s.ok()) return error_response(s);
  return json_response(200, str_cat("{\"deleted\":", json_quote(call.param), "}"));
}

HttpResponse Api::profit_report(const Call& call) {
  absl::StatusOr<ProfitQuery> q = parse_profit_query(query_of(call.request.target));
  if (!q.ok()) return error_response(q.status());
  absl::StatusOr<std::vector<ProfitRow>> rows = storage_.profit_report(call.product_id, q->range, q->group, q->tag_key);
  if (rows.ok()) {
    // Metered, tiered and CREDITS indicators: the revenue their invoices accrued over the range.
    if (absl::Status s = add_invoiced_revenue(storage_, call.product_id, q->range, q->group, *rows); !s.ok()) rows = s;
  }
  if (!rows.ok()) return error_response(rows.status());
  return json_response(200, profit_report_json(q->range.from_ns, q->range.to_ns, q->by, *rows));
}

namespace {

std::string report_tags_json(const std::vector<std::string>& tags) {
  std::string body = "{\"tags\":[";
  for (std::size_t i = 0; i < tags.size(); ++i) str_append(&body, i ? "," : "", json_quote(tags[i]));
  return body + "]}";
}

}  // namespace

HttpResponse Api::get_report_tags(const Call& call) {
  absl::StatusOr<std::vector<std::string>> tags = storage_.report_tags(call.product_id);
  if (!tags.ok()) return error_response(tags.status());
  return json_response(200, report_tags_json(*tags));
}

HttpResponse Api::put_report_tags(const Call& call) {
  absl::StatusOr<std::vector<std::string>> tags = parse_report_tags(call.request.body);
  if (!tags.ok()) return error_response(tags.status());
  if (absl::Status s = storage_.set_report_tags(call.product_id, *tags); !s.ok()) return error_response(s);
  return json_response(200, report_tags_json(*tags));
}

}  // namespace paygent::server
