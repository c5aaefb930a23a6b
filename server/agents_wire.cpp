// The agents API's JSON (see server/agents_wire.h).
#include "server/agents_wire.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "billing/decimal.h"
#include "meter/internal/str_cat.h"
#include "server/billing_wire.h"
#include "server/json_read.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;
using simdjson::ondemand::value;
using json_read::field_error;
using json_read::read_array;
using json_read::read_body;
using json_read::read_bool;
using json_read::read_object;
using json_read::read_text;

// A price: a string, or a number read from its exact text.
absl::Status read_price(value v, std::string_view where, std::optional<std::int64_t>& out) {
  std::string_view text;
  if (absl::Status s = json_read::read_number_text(v, where, text); !s.ok()) return s;
  absl::StatusOr<std::int64_t> nanos = parse_price_nanos(text, where);
  if (!nanos.ok()) return nanos.status();
  out = *nanos;
  return absl::OkStatus();
}

struct IndicatorFields {
  IndicatorPrice price;
  std::optional<std::int64_t> per_event, per_minute;
  bool has_rates = false;
  std::string per_event_name, per_minute_name, rates_name;  // as spelled, for errors
};

absl::Status read_rate(value v, std::string_view where, CustomRate& rate) {
  static constexpr std::array<std::string_view, 3> kFields = {"kind", "model", "pricePerMinute"};
  std::optional<std::int64_t> price;
  bool has[3] = {false, false, false};
  absl::Status s = read_object(v, where, kFields, [&](std::size_t f, value member, const std::string& at) {
    has[f] = true;
    switch (f) {
      case 0: {
        if (absl::Status k = read_text(member, at, rate.kind, true); !k.ok()) return k;
        if (rate.kind != "llm" && rate.kind != "stt" && rate.kind != "tts") {
          return field_error(at, "must be \"llm\", \"stt\" or \"tts\"");
        }
        return absl::OkStatus();
      }
      case 1: return read_text(member, at, rate.model, true);
      default: return read_price(member, at, price);
    }
  });
  if (!s.ok()) return s;
  for (std::size_t f = 0; f < kFields.size(); ++f) {
    if (!has[f]) return field_error(str_cat(where, ".", kFields[f]), "missing");
  }
  rate.nanos_per_minute = *price;
  return absl::OkStatus();
}

absl::Status read_indicator(value v, std::string_view where, IndicatorPrice& out) {
  static constexpr std::array<std::string_view, 7> kFields = {"indicator",   "perMinute", "pricePerEvent", "pricePerMinute",
                                                              "customRates", "metric",    "pricing"};
  IndicatorFields f;
  bool has_indicator = false;
  std::string metric_name, pricing_name;
  absl::Status s = read_object(v, where, kFields, [&](std::size_t index, value member, const std::string& at) {
    switch (index) {
      case 0: has_indicator = true; return read_text(member, at, f.price.indicator, true);
      case 5: metric_name = at; return read_text(member, at, f.price.metric, true);
      case 6: pricing_name = at; return read_pricing(member, at, f.price.pricing_json);
      case 1: return read_bool(member, at, f.price.per_minute);
      case 2: f.per_event_name = at; return read_price(member, at, f.per_event);
      case 3: f.per_minute_name = at; return read_price(member, at, f.per_minute);
      default: {
        f.has_rates = true;
        f.rates_name = at;
        std::set<std::pair<std::string, std::string>> seen;
        return read_array(member, at, kMaxCustomRates, [&](value item, const std::string& item_at) {
          CustomRate rate;
          if (absl::Status r = read_rate(item, item_at, rate); !r.ok()) return r;
          if (!seen.emplace(rate.kind, rate.model).second) {
            return field_error(item_at, str_cat("a second rate for ", rate.kind, " model \"", rate.model, "\""));
          }
          f.price.custom_rates.push_back(std::move(rate));
          return absl::OkStatus();
        });
      }
    }
  });
  if (!s.ok()) return s;
  if (!has_indicator) return field_error(str_cat(where, ".indicator"), "missing");
  if (f.price.per_minute && !metric_name.empty()) return field_error(metric_name, "not allowed when perMinute is true");
  if (f.price.per_minute && !pricing_name.empty()) return field_error(pricing_name, "not allowed when perMinute is true");
  if (f.per_event && !pricing_name.empty()) return field_error(f.per_event_name, "not allowed with pricing (use pricing.unitPrice)");
  if (f.per_event && !metric_name.empty()) {
    return field_error(f.per_event_name, "not allowed with a metric (price its quantity with pricing)");
  }
  if (f.price.per_minute) {
    if (f.per_event) return field_error(f.per_event_name, "not allowed when perMinute is true (use pricePerMinute)");
    f.price.price_nanos = f.per_minute;
  } else {
    if (f.per_minute) return field_error(f.per_minute_name, "not allowed when perMinute is false (use pricePerEvent)");
    if (f.has_rates) return field_error(f.rates_name, "custom rates exist only when perMinute is true");
    f.price.price_nanos = f.per_event;
  }
  // A FLAT price without a metric is a price per event: the revenue priced at ingest (the profit
  // report) is then the invoice's, when it is whole nano-USD.
  if (!f.price.pricing_json.empty() && f.price.metric.empty()) {
    absl::StatusOr<billing::Pricing> pricing = pricing_of(f.price.pricing_json);
    if (pricing.ok() && pricing->model == billing::PricingModel::kFlat) {
      absl::StatusOr<std::int64_t> nanos = pricing->unit_price.to_scaled_exact(9);
      if (nanos.ok()) f.price.price_nanos = *nanos;
    }
  }
  out = std::move(f.price);
  return absl::OkStatus();
}

std::string optional_usd(std::optional<std::int64_t> nanos) {
  return nanos ? json_quote(nanos_as_usd(*nanos)) : std::string("null");
}

std::string optional_int(std::optional<std::int64_t> n) { return n ? std::to_string(*n) : std::string("null"); }

void append_profit_fields(std::string& out, const ProfitRow& r) {
  // Both are sums of non-negative amounts: their difference fits.
  const std::string profit =
      r.cost_nanos && r.revenue_nanos ? std::to_string(*r.revenue_nanos - *r.cost_nanos) : std::string("null");
  str_append(&out, "\"cost_nanos\":", optional_int(r.cost_nanos), ",\"revenue_nanos\":", optional_int(r.revenue_nanos),
             ",\"profit_nanos\":", profit,
             ",\"margin_ppm\":", optional_int(margin_ppm(r.cost_nanos, r.revenue_nanos)),
             ",\"events\":", r.cost_events + r.billing_events,
             ",\"events_without_price\":", r.cost_unknown_events + r.revenue_unknown_events,
             ",\"cost_events\":", r.cost_events, ",\"billing_events\":", r.billing_events);
}

}  // namespace

absl::StatusOr<std::int64_t> parse_price_nanos(std::string_view text, std::string_view field) {
  absl::StatusOr<billing::Decimal> d = billing::Decimal::parse(text);
  if (!d.ok()) return field_error(field, str_cat("\"", text.substr(0, 40), "\" is not a decimal price: ", d.status().message()));
  if (d->is_negative()) return field_error(field, "must not be negative");
  absl::StatusOr<std::int64_t> nanos = d->to_scaled_exact(9);
  if (!nanos.ok()) {
    return field_error(field, absl::IsOutOfRange(nanos.status()) ? "is too large"
                                                                 : "must be whole nano-USD (at most 9 decimal places)");
  }
  return *nanos;
}

absl::Status linked_metric_error(const absl::Status& status) {
  // put_agent's NotFound naming an indicator's metric (deleted since it was checked) is the
  // caller's mistake, not a missing agent.
  if (absl::IsNotFound(status) && std::string_view(status.message().data(), status.message().size()).starts_with("indicator ")) {
    return absl::InvalidArgumentError(status.message());
  }
  return status;
}

std::string nanos_as_usd(std::int64_t nanos) {
  return billing::Decimal::from_nanos(nanos).normalized().to_string();
}

namespace {

// One agent object at `path` ("" for the body): its agentId (when given), name and indicators.
absl::Status read_agent(value v, std::string_view path, AgentRecord& agent, bool& has_id) {
  static constexpr std::array<std::string_view, 3> kFields = {"agentId", "name", "indicators"};
  bool has_indicators = false;
  absl::Status s = read_object(v, path, kFields, [&](std::size_t f, value member, const std::string& at) {
    if (f == 0) {
      has_id = true;
      return read_text(member, at, agent.agent_id, true);
    }
    if (f == 1) return read_text(member, at, agent.name, false);
    has_indicators = true;
    std::set<std::string, std::less<>> seen;
    return read_array(member, at, kMaxIndicators, [&](value item, const std::string& item_at) {
      IndicatorPrice price;
      if (absl::Status r = read_indicator(item, item_at, price); !r.ok()) return r;
      if (!seen.insert(price.indicator).second) {
        return field_error(str_cat(item_at, ".indicator"), str_cat("\"", price.indicator, "\" is repeated"));
      }
      agent.indicators.push_back(std::move(price));
      return absl::OkStatus();
    });
  });
  if (!s.ok()) return s;
  if (!has_indicators) return field_error(path.empty() ? "indicators" : str_cat(path, ".indicators"), "missing");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AgentRecord> parse_agent_body(std::string_view agent_id, std::string_view body) {
  AgentRecord agent;
  bool has_id = false;
  if (absl::Status s = read_body(body, [&](value root) { return read_agent(root, "", agent, has_id); }); !s.ok()) {
    return s;
  }
  if (has_id && agent.agent_id != agent_id) {
    return field_error("agentId", str_cat("\"", agent.agent_id, "\" is not the agent of the path"));
  }
  agent.agent_id = std::string(agent_id);
  return agent;
}

absl::Status read_agents_array(simdjson::ondemand::value v, std::string_view path, std::vector<AgentRecord>& agents) {
  std::set<std::string, std::less<>> seen;
  return read_array(v, path, kMaxAgentsPerApply, [&](value item, const std::string& item_at) {
    AgentRecord agent;
    bool has_id = false;
    if (absl::Status r = read_agent(item, item_at, agent, has_id); !r.ok()) return r;
    if (!has_id) return field_error(str_cat(item_at, ".agentId"), "missing");
    if (!seen.insert(agent.agent_id).second) {
      return field_error(str_cat(item_at, ".agentId"), str_cat("\"", agent.agent_id, "\" is repeated"));
    }
    agents.push_back(std::move(agent));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<AgentRecord>> parse_agents_file(std::string_view body) {
  std::vector<AgentRecord> agents;
  static constexpr std::array<std::string_view, 1> kFields = {"agents"};
  bool has_agents = false;
  absl::Status s = read_body(body, [&](value root) {
    return read_object(root, "", kFields, [&](std::size_t, value member, const std::string& at) {
      has_agents = true;
      return read_agents_array(member, at, agents);
    });
  });
  if (!s.ok()) return s;
  if (!has_agents) return field_error("agents", "missing");
  return agents;
}

std::string agent_json(const AgentRecord& agent) {
  std::string out = str_cat("{\"agentId\":", json_quote(agent.agent_id), ",\"name\":", json_quote(agent.name),
                            ",\"indicators\":[");
  for (std::size_t i = 0; i < agent.indicators.size(); ++i) {
    const IndicatorPrice& p = agent.indicators[i];
    str_append(&out, i ? "," : "", "{\"indicator\":", json_quote(p.indicator),
               ",\"perMinute\":", p.per_minute ? "true" : "false");
    if (p.pricing_json.empty() && (p.metric.empty() || p.price_nanos)) {
      str_append(&out, p.per_minute ? ",\"pricePerMinute\":" : ",\"pricePerEvent\":", optional_usd(p.price_nanos));
    }
    if (!p.metric.empty()) str_append(&out, ",\"metric\":", json_quote(p.metric));
    if (!p.pricing_json.empty()) str_append(&out, ",\"pricing\":", p.pricing_json);
    if (p.per_minute) {
      out += ",\"customRates\":[";
      for (std::size_t k = 0; k < p.custom_rates.size(); ++k) {
        const CustomRate& r = p.custom_rates[k];
        str_append(&out, k ? "," : "", "{\"kind\":", json_quote(r.kind), ",\"model\":", json_quote(r.model),
                   ",\"pricePerMinute\":", json_quote(nanos_as_usd(r.nanos_per_minute)), "}");
      }
      out += "]";
    }
    out += "}";
  }
  return out + "]}";
}

std::optional<std::int64_t> margin_ppm(std::optional<std::int64_t> cost_nanos, std::optional<std::int64_t> revenue_nanos) {
  if (!cost_nanos || !revenue_nanos || *revenue_nanos <= 0) return std::nullopt;
  const __int128 profit = static_cast<__int128>(*revenue_nanos) - *cost_nanos;
  const __int128 scaled = profit * 1'000'000;
  __int128 q = scaled / *revenue_nanos;
  const __int128 r = scaled % *revenue_nanos;  // the sign of scaled
  if (2 * (r < 0 ? -r : r) >= *revenue_nanos) q += scaled >= 0 ? 1 : -1;  // half away from zero
  if (q > INT64_MAX || q < INT64_MIN) return std::nullopt;
  return static_cast<std::int64_t>(q);
}

std::string profit_report_json(std::int64_t from_ns, std::int64_t to_ns, std::string_view by,
                               std::span<const ProfitRow> rows) {
  std::string out = str_cat("{\"from_ns\":", from_ns, ",\"to_ns\":", to_ns, ",\"by\":", json_quote(by), ",\"rows\":[");
  ProfitRow total;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const ProfitRow& r = rows[i];
    str_append(&out, i ? "," : "", "{\"key\":", json_quote(r.key), ",");
    append_profit_fields(out, r);
    out += "}";
    if (r.cost_nanos) total.cost_nanos = total.cost_nanos.value_or(0) + *r.cost_nanos;
    if (r.revenue_nanos) total.revenue_nanos = total.revenue_nanos.value_or(0) + *r.revenue_nanos;
    total.cost_events += r.cost_events;
    total.billing_events += r.billing_events;
    total.cost_unknown_events += r.cost_unknown_events;
    total.revenue_unknown_events += r.revenue_unknown_events;
  }
  out += "],\"total\":{";
  append_profit_fields(out, total);
  return out + "}}";
}

}  // namespace paygent::server
