// The billing API's JSON (see server/billing_wire.h).
#include "server/billing_wire.h"

#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "billing/decimal.h"
#include "meter/internal/str_cat.h"
#include "server/agents_wire.h"
#include "server/json_read.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;
using billing::Decimal;
using json_read::field_error;
using json_read::read_array;
using json_read::read_body;
using json_read::read_object;
using json_read::read_text;
using simdjson::ondemand::value;

// Most filters of a metric, and values of a filter.
constexpr std::size_t kMaxFilters = 20;
constexpr std::size_t kMaxFilterValues = 100;
constexpr std::size_t kMaxTiers = 20;

// The engine's error "tiers[1].up_to: 50 is not above tiers[0].up_to 100" as the body spells
// it, under `where`: "indicators[0].pricing.tiers[1].upTo: 50 is not above tiers[0].upTo 100".
absl::Status under(std::string_view where, const absl::Status& status) {
  const std::string_view message(status.message().data(), status.message().size());
  const std::size_t colon = message.find(": ");
  if (colon == std::string_view::npos) return field_error(where, message);
  std::string path = json_read::camel(message.substr(0, colon));
  if (path.starts_with("pricing.")) path.erase(0, 8);
  // A field the message names after the colon ("is not above tiers[0].up_to 100") too: the name
  // after "]." only, so that values and the rest of the text are given as they are.
  std::string rest(message.substr(colon));
  for (std::size_t at = rest.find("]."); at != std::string::npos; at = rest.find("].", at + 2)) {
    std::size_t end = at + 2;
    while (end < rest.size() && (absl::ascii_islower(static_cast<unsigned char>(rest[end])) || rest[end] == '_')) ++end;
    rest.replace(at + 2, end - at - 2, json_read::camel(std::string_view(rest).substr(at + 2, end - at - 2)));
  }
  return absl::Status(status.code(), str_cat(where.empty() ? "" : str_cat(where, "."), path, rest));
}

absl::Status read_decimal(value v, std::string_view where, Decimal& out, bool non_negative) {
  std::string_view text;
  if (absl::Status s = json_read::read_number_text(v, where, text); !s.ok()) return s;
  absl::StatusOr<Decimal> d = Decimal::parse(text);
  if (!d.ok()) return field_error(where, str_cat("\"", text.substr(0, 40), "\" is not a decimal: ", d.status().message()));
  if (non_negative && d->is_negative()) return field_error(where, "must not be negative");
  out = *d;
  return absl::OkStatus();
}

std::string decimal_text(const Decimal& d) { return json_quote(d.normalized().to_string()); }

std::string_view rounding_name(billing::RoundingMode mode) {
  switch (mode) {
    case billing::RoundingMode::kCeil: return "ceil";
    case billing::RoundingMode::kFloor: return "floor";
    default: return "round";
  }
}

// The definition's fields (no name or identifier), in canonical order; `locked_only`: those locked
// once linked.
std::string definition_fields(const billing::MetricDefinition& d, bool locked_only) {
  std::string out = str_cat("\"aggregation\":", json_quote(billing::aggregation_name(d.aggregation)));
  if (!d.field.empty()) str_append(&out, ",\"field\":", json_quote(d.field));
  if (!d.expression.empty()) {
    str_append(&out, ",\"expression\":", json_quote(d.expression));
    if (!locked_only) str_append(&out, ",\"resultField\":", json_quote(d.result_field));
  }
  if (d.rounding && !locked_only) {
    str_append(&out, ",\"rounding\":{\"mode\":", json_quote(rounding_name(d.rounding->mode)),
               ",\"precision\":", d.rounding->precision, "}");
  }
  out += ",\"filters\":[";
  for (std::size_t i = 0; i < d.filters.size(); ++i) {
    str_append(&out, i ? "," : "", "{\"key\":", json_quote(d.filters[i].key), ",\"values\":[");
    for (std::size_t k = 0; k < d.filters[i].values.size(); ++k) str_append(&out, k ? "," : "", json_quote(d.filters[i].values[k]));
    out += "]}";
  }
  return out + "]";
}

absl::Status read_rounding(value v, std::string_view where, billing::MetricRounding& out) {
  static constexpr std::array<std::string_view, 2> kFields = {"mode", "precision"};
  bool has_mode = false;
  absl::Status s = read_object(v, where, kFields, [&](std::size_t f, value member, const std::string& at) -> absl::Status {
    if (f == 0) {
      has_mode = true;
      std::string mode;
      if (absl::Status t = read_text(member, at, mode, true); !t.ok()) return t;
      if (mode == "round") out.mode = billing::RoundingMode::kRound;
      else if (mode == "ceil") out.mode = billing::RoundingMode::kCeil;
      else if (mode == "floor") out.mode = billing::RoundingMode::kFloor;
      else return field_error(at, "must be \"round\", \"ceil\" or \"floor\"");
      return absl::OkStatus();
    }
    std::int64_t precision = 0;
    if (member.get_int64().get(precision) != simdjson::SUCCESS || precision < 0 || precision > 18) {
      return field_error(at, "must be an integer from 0 to 18");
    }
    out.precision = static_cast<int>(precision);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (!has_mode) return field_error(str_cat(where, ".mode"), "missing");
  return absl::OkStatus();
}

absl::Status read_filter(value v, std::string_view where, billing::MetricFilter& out) {
  static constexpr std::array<std::string_view, 2> kFields = {"key", "values"};
  bool has[2] = {false, false};
  absl::Status s = read_object(v, where, kFields, [&](std::size_t f, value member, const std::string& at) -> absl::Status {
    has[f] = true;
    if (f == 0) return read_text(member, at, out.key, true);
    return read_array(member, at, kMaxFilterValues, [&](value item, const std::string& item_at) {
      std::string text;
      if (absl::Status t = read_text(item, item_at, text, false); !t.ok()) return t;
      out.values.push_back(std::move(text));
      return absl::OkStatus();
    });
  });
  if (!s.ok()) return s;
  for (std::size_t f = 0; f < kFields.size(); ++f) {
    if (!has[f]) return field_error(str_cat(where, ".", kFields[f]), "missing");
  }
  if (out.values.empty()) return field_error(str_cat(where, ".values"), "needs at least one accepted value");
  return absl::OkStatus();
}

// A metric object at `path` ("" for a body, "metrics[2]" in a file).
absl::Status read_metric(value v, std::string_view path, billing::MetricDefinition& d, std::string& identifier,
                         bool& identifier_given) {
  static constexpr std::array<std::string_view, 9> kFields = {"name",       "identifier", "description",
                                                              "aggregation", "field",      "expression",
                                                              "resultField", "rounding",   "filters"};
  bool has_aggregation = false;
  auto at_path = [&](std::string_view field) { return path.empty() ? std::string(field) : str_cat(path, ".", field); };
  absl::Status s = read_object(v, path, kFields, [&](std::size_t f, value member, const std::string& at) -> absl::Status {
    switch (f) {
      case 0: return read_text(member, at, d.name, true);
      case 1: identifier_given = true; return read_text(member, at, identifier, true);
      case 2: return read_text(member, at, d.description, false);
      case 3: {
        has_aggregation = true;
        std::string name;
        if (absl::Status t = read_text(member, at, name, true); !t.ok()) return t;
        absl::StatusOr<billing::Aggregation> a = billing::parse_aggregation(name);
        if (!a.ok()) return field_error(at, "must be \"count\", \"sum\", \"max\", \"unique_count\" or \"latest\"");
        d.aggregation = *a;
        return absl::OkStatus();
      }
      case 4: return read_text(member, at, d.field, true);
      case 5: return read_text(member, at, d.expression, true);
      case 6: return read_text(member, at, d.result_field, true);
      case 7: d.rounding.emplace(); return read_rounding(member, at, *d.rounding);
      default: {
        std::set<std::string, std::less<>> keys;
        return read_array(member, at, kMaxFilters, [&](value item, const std::string& item_at) {
          billing::MetricFilter filter;
          if (absl::Status t = read_filter(item, item_at, filter); !t.ok()) return t;
          if (!keys.insert(filter.key).second) return field_error(str_cat(item_at, ".key"), "repeated key");
          d.filters.push_back(std::move(filter));
          return absl::OkStatus();
        });
      }
    }
  });
  if (!s.ok()) return s;
  if (d.name.empty()) return field_error(at_path("name"), "missing");
  if (!has_aggregation) return field_error(at_path("aggregation"), "missing");
  if (absl::StatusOr<billing::Metric> m = billing::Metric::create(d); !m.ok()) return under(path, m.status());
  if (identifier.empty()) {
    absl::StatusOr<std::string> derived = billing::metric_identifier(d.name);
    if (!derived.ok()) return under(path, derived.status());
    identifier = *derived;
  } else if (absl::StatusOr<std::string> normal = billing::metric_identifier(identifier); !normal.ok() || *normal != identifier) {
    return field_error(at_path("identifier"), "must be lowercase letters, digits and single '_' (\"gpu_hours\")");
  }
  return absl::OkStatus();
}

MetricRecord record_of(const billing::MetricDefinition& d, std::string identifier) {
  return MetricRecord{.identifier = std::move(identifier),
                      .name = d.name,
                      .description = d.description,
                      .definition_json = str_cat("{", definition_fields(d, false), "}"),
                      .locked_json = str_cat("{", definition_fields(d, true), "}")};
}

absl::Status read_tier(value v, std::string_view where, billing::PriceTier& tier) {
  static constexpr std::array<std::string_view, 3> kFields = {"upTo", "unitPrice", "flatFee"};
  bool has_price = false;
  absl::Status s = read_object(v, where, kFields, [&](std::size_t f, value member, const std::string& at) -> absl::Status {
    if (f == 0) {
      Decimal up_to;
      if (absl::Status t = read_decimal(member, at, up_to, true); !t.ok()) return t;
      tier.up_to = up_to;
      return absl::OkStatus();
    }
    if (f == 1) has_price = true;
    return read_decimal(member, at, f == 1 ? tier.unit_price : tier.flat_fee, true);
  });
  if (!s.ok()) return s;
  if (!has_price) return field_error(str_cat(where, ".unitPrice"), "missing");
  return absl::OkStatus();
}

std::string pricing_json_of(const billing::Pricing& p) {
  std::string out = str_cat("{\"model\":", json_quote(billing::pricing_model_name(p.model)), ",\"unit\":", json_quote(p.unit));
  switch (p.model) {
    case billing::PricingModel::kFlat: str_append(&out, ",\"unitPrice\":", decimal_text(p.unit_price)); break;
    case billing::PricingModel::kCredits:
      str_append(&out, ",\"creditsPerUnit\":", decimal_text(p.credits_per_unit));
      if (p.overage_usd_per_credit) str_append(&out, ",\"overageUsdPerCredit\":", decimal_text(*p.overage_usd_per_credit));
      break;
    default:
      out += ",\"tiers\":[";
      for (std::size_t i = 0; i < p.tiers.size(); ++i) {
        const billing::PriceTier& t = p.tiers[i];
        out += i ? ",{" : "{";
        if (t.up_to) str_append(&out, "\"upTo\":", decimal_text(*t.up_to), ",");
        str_append(&out, "\"unitPrice\":", decimal_text(t.unit_price), ",\"flatFee\":", decimal_text(t.flat_fee), "}");
      }
      out += "]";
  }
  return out + "}";
}

absl::Status read_pricing_value(value v, std::string_view where, billing::Pricing& p) {
  static constexpr std::array<std::string_view, 6> kFields = {"model", "unit", "unitPrice", "tiers", "creditsPerUnit",
                                                              "overageUsdPerCredit"};
  bool has[6] = {false, false, false, false, false, false};
  std::string names[6];
  absl::Status s = read_object(v, where, kFields, [&](std::size_t f, value member, const std::string& at) -> absl::Status {
    has[f] = true;
    names[f] = at;
    switch (f) {
      case 0: {
        std::string model;
        if (absl::Status t = read_text(member, at, model, true); !t.ok()) return t;
        absl::StatusOr<billing::PricingModel> m = billing::parse_pricing_model(model);
        if (!m.ok()) return field_error(at, "must be \"flat\", \"volume\", \"graduated\" or \"credits\"");
        p.model = *m;
        return absl::OkStatus();
      }
      case 1: return read_text(member, at, p.unit, true);
      case 2: return read_decimal(member, at, p.unit_price, true);
      case 3:
        return read_array(member, at, kMaxTiers, [&](value item, const std::string& item_at) {
          billing::PriceTier tier;
          if (absl::Status t = read_tier(item, item_at, tier); !t.ok()) return t;
          p.tiers.push_back(tier);
          return absl::OkStatus();
        });
      case 4: return read_decimal(member, at, p.credits_per_unit, true);
      default: {
        Decimal overage;
        if (absl::Status t = read_decimal(member, at, overage, true); !t.ok()) return t;
        p.overage_usd_per_credit = overage;
        return absl::OkStatus();
      }
    }
  });
  if (!s.ok()) return s;
  if (!has[0]) return field_error(str_cat(where, ".model"), "missing");
  // What each model takes, and nothing else.
  const bool flat = p.model == billing::PricingModel::kFlat, credits = p.model == billing::PricingModel::kCredits;
  const bool tiered = !flat && !credits;
  const std::string model(billing::pricing_model_name(p.model));
  const bool wanted[6] = {true, true, flat, tiered, credits, credits};
  const bool required[6] = {true, false, flat, tiered, credits, false};
  for (std::size_t f = 2; f < kFields.size(); ++f) {
    if (has[f] && !wanted[f]) return field_error(names[f], str_cat("not allowed with model \"", model, "\""));
    if (!has[f] && required[f]) return field_error(str_cat(where, ".", kFields[f]), str_cat("missing (model \"", model, "\")"));
  }
  if (absl::Status valid = billing::validate_pricing(p); !valid.ok()) return under(where, valid);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MetricRecord> parse_metric_body(std::string_view body, std::string_view path_identifier) {
  billing::MetricDefinition d;
  std::string identifier;
  bool given = false;
  if (absl::Status s = read_body(body, [&](value root) { return read_metric(root, "", d, identifier, given); }); !s.ok()) {
    return s;
  }
  if (!path_identifier.empty()) {
    // The identifier is the path's (immutable); a body may repeat it, as metric_json writes it.
    if (given && identifier != path_identifier) {
      return field_error("identifier", str_cat("\"", identifier, "\" is not the metric of the path (identifiers are immutable)"));
    }
    identifier = std::string(path_identifier);
  }
  return record_of(d, std::move(identifier));
}

absl::StatusOr<billing::Metric> metric_of(const MetricRecord& record) {
  billing::MetricDefinition d;
  std::string ignored;
  bool given = false;
  const std::string body =
      str_cat("{\"name\":", json_quote(record.name), ",", record.definition_json.substr(1));
  if (absl::Status s = read_body(body, [&](value root) { return read_metric(root, "", d, ignored, given); }); !s.ok()) {
    return absl::InternalError(str_cat("stored metric \"", record.identifier, "\" is unreadable: ", s.message()));
  }
  d.description = record.description;
  d.identifier = record.identifier;  // the one chosen at creation, which invoices name
  return billing::Metric::create(std::move(d));
}

std::string metric_json(const MetricRecord& record) {
  std::string out = str_cat("{\"identifier\":", json_quote(record.identifier), ",\"name\":", json_quote(record.name),
                            ",\"description\":", json_quote(record.description), ",",
                            std::string_view(record.definition_json).substr(1, record.definition_json.size() - 2),
                            ",\"createdNs\":", record.created_ns, ",\"locked\":", record.linked_to.empty() ? "false" : "true",
                            ",\"linkedTo\":[");
  for (std::size_t i = 0; i < record.linked_to.size(); ++i) str_append(&out, i ? "," : "", json_quote(record.linked_to[i]));
  return out + "]}";
}

absl::Status read_pricing(value v, std::string_view where, std::string& pricing_json) {
  billing::Pricing p;
  if (absl::Status s = read_pricing_value(v, where, p); !s.ok()) return s;
  pricing_json = pricing_json_of(p);
  return absl::OkStatus();
}

absl::StatusOr<billing::Pricing> pricing_of(std::string_view pricing_json) {
  billing::Pricing p;
  if (absl::Status s = read_body(pricing_json, [&](value root) { return read_pricing_value(root, "pricing", p); });
      !s.ok()) {
    return absl::InternalError(str_cat("stored pricing is unreadable: ", s.message()));
  }
  return p;
}

absl::StatusOr<BillingFile> parse_billing_file(std::string_view body) {
  BillingFile file;
  static constexpr std::array<std::string_view, 2> kFields = {"metrics", "agents"};
  absl::Status s = read_body(body, [&](value root) {
    return read_object(root, "", kFields, [&](std::size_t f, value member, const std::string& at) -> absl::Status {
      if (f == 1) return read_agents_array(member, at, file.agents);
      std::set<std::string, std::less<>> seen;
      return read_array(member, at, kMaxMetricsPerApply, [&](value item, const std::string& item_at) {
        billing::MetricDefinition d;
        std::string identifier;
        bool given = false;
        if (absl::Status r = read_metric(item, item_at, d, identifier, given); !r.ok()) return r;
        if (!seen.insert(identifier).second) {
          return field_error(str_cat(item_at, ".identifier"), str_cat("\"", identifier, "\" is repeated"));
        }
        file.metrics.push_back(record_of(d, std::move(identifier)));
        return absl::OkStatus();
      });
    });
  });
  if (!s.ok()) return s;
  return file;
}

std::string invoice_json(const InvoiceView& view) {
  const billing::Invoice& invoice = *view.invoice;
  std::string out = str_cat("{\"customer\":", json_quote(view.customer), ",\"period\":{\"label\":",
                            view.period_label.empty() ? "null" : json_quote(view.period_label),
                            ",\"start_ns\":", invoice.period.start_ns, ",\"end_ns\":", invoice.period.end_ns, "},\"lines\":[");
  for (std::size_t i = 0; i < invoice.lines.size(); ++i) {
    const billing::InvoiceLine& l = invoice.lines[i];
    str_append(&out, i ? "," : "", "{\"agent\":", json_quote(view.agents[i]), ",\"indicator\":", json_quote(view.indicators[i]),
               ",\"metric\":", view.metric_ids[i].empty() ? "null" : json_quote(view.metric_ids[i]),
               ",\"pricing\":", json_quote(l.pricing), ",\"unit\":", json_quote(l.unit),
               ",\"quantity\":", decimal_text(l.quantity), ",\"tiers\":[");
    for (std::size_t t = 0; t < l.tiers.size(); ++t) {
      const billing::TierCharge& c = l.tiers[t];
      str_append(&out, t ? "," : "", "{\"tier\":", c.tier, ",\"from\":", decimal_text(c.from),
                 ",\"upTo\":", c.up_to ? decimal_text(*c.up_to) : std::string("null"), ",\"units\":", decimal_text(c.units),
                 ",\"unitPrice\":", decimal_text(c.unit_price), ",\"flatFee\":", decimal_text(c.flat_fee),
                 ",\"amount\":", decimal_text(c.amount), "}");
    }
    str_append(&out, "],\"amount\":", decimal_text(l.amount), ",\"amount_nanos\":", l.amount_nanos,
               ",\"amount_usd\":", json_quote(nanos_as_usd(l.amount_nanos)), ",\"credits\":", decimal_text(l.credits),
               ",\"creditsUsed\":", decimal_text(l.credits_used), ",\"creditsOverage\":", decimal_text(l.credits_overage),
               ",\"events\":{\"counted\":", l.counts.counted, ",\"filteredOut\":", l.counts.filtered_out,
               ",\"duplicates\":", l.counts.duplicates, ",\"excluded\":", l.counts.excluded_total(), ",\"excludedBy\":{");
    for (int r = 0; r < billing::kExclusionReasonCount; ++r) {
      str_append(&out, r ? "," : "", json_quote(billing::exclusion_reason_name(static_cast<billing::ExclusionReason>(r))), ":",
                 l.counts.excluded[static_cast<std::size_t>(r)]);
    }
    out += "}}}";
  }
  str_append(&out, "],\"total_nanos\":", invoice.total_nanos, ",\"total_usd\":", json_quote(nanos_as_usd(invoice.total_nanos)),
             ",\"unbilledEvents\":", invoice.unknown_indicator_events + view.unpriced_events, "}");
  return out;
}

std::string wallet_json(const WalletRecord& w) {
  return str_cat("{\"customerId\":", json_quote(w.customer_id), ",\"granted\":", json_quote(w.granted),
                 ",\"balance\":", json_quote(w.balance), ",\"used\":", json_quote(w.used),
                 ",\"overage\":", json_quote(w.overage), ",\"paidUsd\":", json_quote(w.paid_usd),
                 ",\"topUps\":", w.top_ups, ",\"updatedAt\":", json_quote(rfc3339_utc(w.updated_ns)), "}");
}

std::string top_up_json(const TopUpRecord& t) {
  return str_cat("{\"id\":", json_quote(t.id), ",\"credits\":", json_quote(t.credits), ",\"paidUsd\":",
                 json_quote(t.paid_usd), ",\"createdAt\":", json_quote(rfc3339_utc(t.created_ns)), "}");
}

std::string wallet_wire_json(const WalletRecord& w) {
  std::string out = str_cat("{\"granted\":", json_quote(w.granted), ",\"balance\":", json_quote(w.balance),
                            ",\"used\":", json_quote(w.used), ",\"overage\":", json_quote(w.overage));
  // What the library gates on: every credit charged (used + overage, so that a hard_gate_at above
  // 100% still has something to reach) against those granted. Left out when either does not fit
  // in int64 nano-credits: the library then does not gate on the wallet (fail-open).
  absl::StatusOr<billing::Decimal> granted = billing::Decimal::parse(w.granted);
  absl::StatusOr<billing::Decimal> used = billing::Decimal::parse(w.used);
  absl::StatusOr<billing::Decimal> overage = billing::Decimal::parse(w.overage);
  if (granted.ok() && used.ok() && overage.ok()) {
    absl::StatusOr<billing::Decimal> charged = billing::Decimal::add(*used, *overage);
    absl::StatusOr<std::int64_t> granted_n = granted->to_nanos(billing::RoundingMode::kFloor);
    absl::StatusOr<std::int64_t> charged_n =
        charged.ok() ? charged->to_nanos(billing::RoundingMode::kCeil) : absl::StatusOr<std::int64_t>(charged.status());
    if (granted_n.ok() && charged_n.ok() && *granted_n >= 0 && *charged_n >= 0) {
      str_append(&out, ",\"granted_nanocredits\":", *granted_n, ",\"charged_nanocredits\":", *charged_n);
    }
  }
  return out + "}";
}

}  // namespace paygent::server
