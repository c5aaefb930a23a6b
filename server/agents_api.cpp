// paygentd's agents API and profit report (docs/tracking.md, "Revenue"; README, "Agents, revenue
// and profit"), reached from Api::handle_request through one hook (Api::agents_request):
//   GET    /api/v1/agents                 -> {"agents": [agent, ...]}
//   POST   /api/v1/agents:apply           -> {"agents": [{"agentId", "changed"}]}  (the CLI's file)
//   GET    /api/v1/agents/{agentId}       -> agent
//   PUT    /api/v1/agents/{agentId}       -> {"agent": agent, "changed": bool}
//   DELETE /api/v1/agents/{agentId}       -> {"deleted": agentId}
//   GET    /api/v1/reports/profit?from_ns=&to_ns=&by=agent|customer|indicator|model|day
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "meter/internal/str_cat.h"
#include "server/agents_wire.h"
#include "server/api.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

constexpr std::string_view kAgents = "/api/v1/agents";
constexpr std::string_view kAgentsApply = "/api/v1/agents:apply";
constexpr std::string_view kAgentPrefix = "/api/v1/agents/";
constexpr std::string_view kProfit = "/api/v1/reports/profit";

HttpResponse reply(int status, std::string body) { return HttpResponse{.status = status, .body = std::move(body)}; }

HttpResponse failure(const absl::Status& status) {
  const std::string message(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return reply(400, error_body("invalid_argument", message));
    case absl::StatusCode::kUnauthenticated: return reply(401, error_body("unauthenticated", message));
    case absl::StatusCode::kNotFound: return reply(404, error_body("not_found", message));
    case absl::StatusCode::kUnavailable: return reply(503, error_body("unavailable", message));
    default: return reply(500, error_body("internal", message));
  }
}

HttpResponse not_allowed(std::string_view method, std::string_view label, std::string_view allow) {
  HttpResponse r =
      reply(405, error_body("method_not_allowed", str_cat(method, " is not allowed on ", label, " (allowed: ", allow, ")")));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

// The agent id of a path segment: %XX decoded; InvalidArgument naming it when badly encoded,
// empty, too long or holding NUL or '/'.
absl::StatusOr<std::string> agent_id_of(std::string_view segment) {
  std::string out;
  for (std::size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] != '%') {
      out.push_back(segment[i]);
      continue;
    }
    unsigned value = 0;
    for (std::size_t k = 1; k <= 2; ++k) {
      const char c = i + k < segment.size() ? segment[i + k] : '\0';
      const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (digit < 0) return absl::InvalidArgumentError("agent id in the path: bad percent-encoding");
      value = value * 16 + static_cast<unsigned>(digit);
    }
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  if (out.empty()) return absl::InvalidArgumentError("agent id in the path: must not be empty");
  if (out.size() > kMaxTextBytes) {
    return absl::InvalidArgumentError(str_cat("agent id in the path: must be at most ", kMaxTextBytes, " bytes"));
  }
  if (out.find('\0') != std::string::npos || out.find('/') != std::string::npos || !valid_utf8(out)) {
    return absl::InvalidArgumentError("agent id in the path: must be UTF-8 without NUL or '/'");
  }
  return out;
}

std::string quotable_text(std::string_view text) {
  return text.size() > 100 || !valid_utf8(text) ? std::string("(unprintable)") : std::string(text);
}

struct ProfitQuery {
  TimeRange range;
  ProfitGroup group = ProfitGroup::kAgent;
  std::string by = "agent";
};

// from_ns and to_ns (non-negative integers, to_ns after from_ns) and by (optional, "agent").
absl::StatusOr<ProfitQuery> parse_profit_query(std::string_view query) {
  std::map<std::string, std::string, std::less<>> params;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    const std::string key(pair.substr(0, eq));
    if (key != "from_ns" && key != "to_ns" && key != "by") {
      return absl::InvalidArgumentError(str_cat(quotable_text(key), ": unknown query parameter (from_ns, to_ns, by)"));
    }
    if (!params.emplace(key, eq == std::string_view::npos ? "" : std::string(pair.substr(eq + 1))).second) {
      return absl::InvalidArgumentError(str_cat(key, ": repeated query parameter"));
    }
  }
  ProfitQuery q;
  for (const char* name : {"from_ns", "to_ns"}) {
    auto it = params.find(name);
    if (it == params.end()) return absl::InvalidArgumentError(str_cat(name, ": missing"));
    std::int64_t value = 0;
    bool ok = !it->second.empty() && it->second.size() <= 19;
    for (char c : it->second) {
      ok = ok && c >= '0' && c <= '9';
      if (ok) value = value * 10 + (c - '0');
    }
    if (!ok || value < 0) return absl::InvalidArgumentError(str_cat(name, ": must be a non-negative integer (Unix ns)"));
    (std::string_view(name) == "from_ns" ? q.range.from_ns : q.range.to_ns) = value;
  }
  if (q.range.to_ns <= q.range.from_ns) return absl::InvalidArgumentError("to_ns: must be after from_ns");
  static const std::map<std::string_view, ProfitGroup> kGroups = {{"agent", ProfitGroup::kAgent},
                                                                  {"customer", ProfitGroup::kCustomer},
                                                                  {"indicator", ProfitGroup::kIndicator},
                                                                  {"model", ProfitGroup::kModel},
                                                                  {"day", ProfitGroup::kDay}};
  if (auto by = params.find("by"); by != params.end()) {
    auto group = kGroups.find(by->second);
    if (group == kGroups.end()) {
      return absl::InvalidArgumentError("by: must be agent, customer, indicator, model or day");
    }
    q.group = group->second;
    q.by = by->second;
  }
  return q;
}

}  // namespace

std::optional<HttpResponse> Api::agents_request(const HttpRequest& request, std::string_view path,
                                                std::string_view& label) {
  const bool one = path.size() > kAgentPrefix.size() && path.substr(0, kAgentPrefix.size()) == kAgentPrefix;
  if (path != kAgents && path != kAgentsApply && path != kProfit && !one) return std::nullopt;
  label = one ? "/api/v1/agents/{id}" : path == kAgents ? kAgents : path == kAgentsApply ? kAgentsApply : kProfit;
  const std::string_view method = request.method;
  if (path == kAgents && method != "GET") return not_allowed(method, label, "GET");
  if (path == kAgentsApply && method != "POST") return not_allowed(method, label, "POST");
  if (path == kProfit && method != "GET") return not_allowed(method, label, "GET");
  if (one && method != "GET" && method != "PUT" && method != "DELETE") return not_allowed(method, label, "GET, PUT, DELETE");
  absl::StatusOr<std::string> product_id = authenticate(request);
  if (!product_id.ok()) return failure(product_id.status());
  if (method == "PUT" || method == "POST") {
    if (request.body.size() > options_.max_body_bytes) {
      return reply(413, error_body("payload_too_large", str_cat("body: ", request.body.size(),
                                                                 " bytes is over the limit of ", options_.max_body_bytes)));
    }
    const std::string_view type = std::string_view(request.content_type).substr(0, request.content_type.find(';'));
    if (type != "application/json") {
      return reply(415, error_body("unsupported_media_type", "Content-Type: must be application/json"));
    }
  }

  if (path == kProfit) {
    const std::size_t question = request.target.find('?');
    absl::StatusOr<ProfitQuery> q = parse_profit_query(
        question == std::string::npos ? std::string_view() : std::string_view(request.target).substr(question + 1));
    if (!q.ok()) return failure(q.status());
    absl::StatusOr<std::vector<ProfitRow>> rows = storage_.profit_report(*product_id, q->range, q->group);
    if (!rows.ok()) return failure(rows.status());
    return reply(200, profit_report_json(q->range.from_ns, q->range.to_ns, q->by, *rows));
  }
  if (path == kAgents) {
    absl::StatusOr<std::vector<AgentRecord>> agents = storage_.list_agents(*product_id);
    if (!agents.ok()) return failure(agents.status());
    std::string body = "{\"agents\":[";
    for (std::size_t i = 0; i < agents->size(); ++i) str_append(&body, i ? "," : "", agent_json((*agents)[i]));
    return reply(200, body + "]}");
  }
  if (path == kAgentsApply) {
    absl::StatusOr<std::vector<AgentRecord>> agents = parse_agents_file(request.body);
    if (!agents.ok()) return failure(agents.status());
    std::string body = "{\"agents\":[";
    for (std::size_t i = 0; i < agents->size(); ++i) {
      absl::StatusOr<bool> changed = storage_.put_agent(*product_id, (*agents)[i]);
      if (!changed.ok()) return failure(changed.status());
      str_append(&body, i ? "," : "", "{\"agentId\":", json_quote((*agents)[i].agent_id),
                 ",\"changed\":", *changed ? "true" : "false", "}");
    }
    return reply(200, body + "]}");
  }
  absl::StatusOr<std::string> agent_id = agent_id_of(path.substr(kAgentPrefix.size()));
  if (!agent_id.ok()) return failure(agent_id.status());
  if (method == "GET") {
    absl::StatusOr<AgentRecord> agent = storage_.find_agent(*product_id, *agent_id);
    if (!agent.ok()) return failure(agent.status());
    return reply(200, agent_json(*agent));
  }
  if (method == "DELETE") {
    if (absl::Status s = storage_.delete_agent(*product_id, *agent_id); !s.ok()) return failure(s);
    return reply(200, str_cat("{\"deleted\":", json_quote(*agent_id), "}"));
  }
  absl::StatusOr<AgentRecord> agent = parse_agent_body(*agent_id, request.body);
  if (!agent.ok()) return failure(agent.status());
  absl::StatusOr<bool> changed = storage_.put_agent(*product_id, *agent);
  if (!changed.ok()) return failure(changed.status());
  absl::StatusOr<AgentRecord> stored = storage_.find_agent(*product_id, *agent_id);  // as stored (sorted)
  if (!stored.ok()) return failure(stored.status());
  return reply(200, str_cat("{\"agent\":", agent_json(*stored), ",\"changed\":", *changed ? "true" : "false", "}"));
}

}  // namespace paygent::server
