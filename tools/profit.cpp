// `paygent report profit` and `paygent agents apply` (see tools/profit.h).
#include "tools/profit.h"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "sync/syncer.h"

namespace paygent::tools {
namespace {

// A day "2026-11-01" (UTC midnight) or Unix nanoseconds, as Unix nanoseconds.
std::optional<std::int64_t> parse_when(std::string_view text) {
  if (!text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    std::int64_t ns = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), ns);
    if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return ns;
  }
  absl::CivilDay day;
  if (!absl::ParseCivilTime(std::string(text), &day)) return std::nullopt;
  const std::int64_t ns = absl::ToUnixNanos(absl::FromCivil(day, absl::UTCTimeZone()));
  if (ns < 0) return std::nullopt;
  return ns;
}

std::optional<std::int64_t> nullable(simdjson::dom::element row, const char* field) {
  std::int64_t n = 0;
  if (row[field].get_int64().get(n) != simdjson::SUCCESS) return std::nullopt;
  return n;
}

struct Line {
  std::string key;
  std::optional<std::int64_t> cost, revenue, profit, margin;
  std::int64_t events = 0, without_price = 0;
};

Line read_line(simdjson::dom::element row, std::string key) {
  return Line{.key = std::move(key),
              .cost = nullable(row, "cost_nanos"),
              .revenue = nullable(row, "revenue_nanos"),
              .profit = nullable(row, "profit_nanos"),
              .margin = nullable(row, "margin_ppm"),
              .events = nullable(row, "events").value_or(0),
              .without_price = nullable(row, "events_without_price").value_or(0)};
}

}  // namespace

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\n") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

void print_table(const std::vector<std::vector<std::string>>& cells, std::size_t left_columns) {
  std::vector<std::size_t> width(cells.empty() ? 0 : cells[0].size(), 0);
  for (const auto& row : cells) {
    for (std::size_t k = 0; k < row.size() && k < width.size(); ++k) width[k] = std::max(width[k], row[k].size());
  }
  for (const auto& row : cells) {
    std::string out;
    for (std::size_t k = 0; k < row.size() && k < width.size(); ++k) {
      const std::string& cell = row[k];
      const std::string pad(width[k] - cell.size(), ' ');
      if (k > 0) out += "  ";
      out += k < left_columns ? cell + pad : pad + cell;  // keys left, numbers right
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    std::printf("%s\n", out.c_str());
  }
}

std::optional<std::string> read_input_file(const char* command, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "%s: cannot read %s\n", command, path.c_str());
    return std::nullopt;
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::optional<std::string> ask_paygentd(const Connection& c, const char* command, const std::string& method,
                                        const std::string& target, const std::string& body, const std::string& context) {
  auto reply = internal::http_exchange(c.url, method, target, c.key, body);
  if (!reply.ok() || reply->status != 200) {
    std::fprintf(stderr, "%s: %s%s\n", command, context.empty() ? "" : (context + ": ").c_str(),
                 reply.ok() ? reply->body.c_str() : std::string(reply.status().message()).c_str());
    return std::nullopt;
  }
  return std::move(reply->body);
}

std::string usd_text(std::int64_t nanos) {
  const bool negative = nanos < 0;
  const unsigned long long magnitude =
      negative ? 0ULL - static_cast<unsigned long long>(nanos) : static_cast<unsigned long long>(nanos);
  std::string fraction = std::to_string(magnitude % 1'000'000'000ULL);
  fraction.insert(0, 9 - fraction.size(), '0');
  while (fraction.size() > 2 && fraction.back() == '0') fraction.pop_back();
  return std::string(negative ? "-$" : "$") + std::to_string(magnitude / 1'000'000'000ULL) + "." + fraction;
}

std::string margin_text(std::int64_t ppm) {
  // Tenths of a percent, half away from zero.
  const std::int64_t tenths = (ppm >= 0 ? ppm + 500 : ppm - 500) / 1000;
  const std::int64_t magnitude = tenths < 0 ? -tenths : tenths;
  return std::string(tenths < 0 ? "-" : "") + std::to_string(magnitude / 10) + "." + std::to_string(magnitude % 10) + "%";
}

int run_report_profit(int argc, char** argv) {
  Connection c;
  std::string by = "agent", format = "table";
  std::optional<std::int64_t> from, to;
  for (int i = 3; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "paygent report profit: %s needs a value\n", argv[i]);
      return 2;
    }
    const std::string_view v = argv[++i];
    if (a == "--from" || a == "--to") {
      const std::optional<std::int64_t> when = parse_when(v);
      if (!when) {
        std::fprintf(stderr, "paygent report profit: %s: \"%s\" is not a day (2026-11-01) or Unix ns\n", argv[i - 1], argv[i]);
        return 2;
      }
      (a == "--from" ? from : to) = when;
    } else if (a == "--by") {
      by = v;
    } else if (a == "--format") {
      format = v;
      if (format != "table" && format != "csv" && format != "json") {
        std::fprintf(stderr, "paygent report profit: --format: must be table, csv or json\n");
        return 2;
      }
    } else if (a == "--url") {
      c.url = v;
    } else if (a == "--key") {
      c.key = v;
    } else {
      std::fprintf(stderr, "paygent report profit: unknown option %s\n", argv[i - 1]);
      return 2;
    }
  }
  if (!from || !to) {
    std::fprintf(stderr, "paygent report profit: --from and --to are required\n");
    return 2;
  }
  const std::optional<std::string> reply = ask_paygentd(
      c, "paygent report profit", "GET",
      "/api/v1/reports/profit?from_ns=" + std::to_string(*from) + "&to_ns=" + std::to_string(*to) + "&by=" + internal::percent_encode(by), "", "");
  if (!reply) return 1;
  if (format == "json") {
    std::printf("%s\n", reply->c_str());
    return 0;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array rows;
  simdjson::dom::element total;
  if (parser.parse(*reply).get(root) != simdjson::SUCCESS || root["rows"].get_array().get(rows) != simdjson::SUCCESS ||
      root["total"].get(total) != simdjson::SUCCESS) {
    std::fprintf(stderr, "paygent report profit: unreadable reply %s\n", reply->c_str());
    return 1;
  }
  std::vector<Line> lines;
  for (simdjson::dom::element row : rows) {
    std::string_view key;
    if (row["key"].get_string().get(key) != simdjson::SUCCESS) key = "?";
    lines.push_back(read_line(row, std::string(key)));
  }
  const Line sum = read_line(total, "TOTAL");
  if (format == "csv") {
    std::printf("%s,cost_usd,revenue_usd,profit_usd,margin_percent,events,events_without_price\n", by.c_str());
    auto num = [](std::optional<std::int64_t> n, bool margin) {
      if (!n) return std::string();
      std::string t = margin ? margin_text(*n) : usd_text(*n);
      t.erase(std::remove(t.begin(), t.end(), '$'), t.end());
      t.erase(std::remove(t.begin(), t.end(), '%'), t.end());
      return t;
    };
    for (const Line& l : lines) {
      std::printf("%s,%s,%s,%s,%s,%lld,%lld\n", csv_field(l.key).c_str(), num(l.cost, false).c_str(),
                  num(l.revenue, false).c_str(), num(l.profit, false).c_str(), num(l.margin, true).c_str(),
                  static_cast<long long>(l.events), static_cast<long long>(l.without_price));
    }
    return 0;
  }
  // The table: a dash for what was not recorded (never $0).
  std::vector<std::vector<std::string>> cells = {{by, "COST", "REVENUE", "PROFIT", "MARGIN", "EVENTS", "NO PRICE"}};
  lines.push_back(sum);
  for (const Line& l : lines) {
    auto usd = [](std::optional<std::int64_t> n) { return n ? usd_text(*n) : std::string("-"); };
    cells.push_back({l.key.empty() ? "(none)" : l.key, usd(l.cost), usd(l.revenue), usd(l.profit),
                     l.margin ? margin_text(*l.margin) : "-", std::to_string(l.events), std::to_string(l.without_price)});
  }
  print_table(cells);
  return 0;
}

int run_agents_apply(int argc, char** argv) {
  Connection c;
  std::string path;
  for (int i = 3; i < argc; ++i) {
    const std::string_view a = argv[i];
    if ((a == "--url" || a == "--key") && i + 1 < argc) {
      (a == "--url" ? c.url : c.key) = argv[++i];
    } else if (path.empty() && !a.starts_with("--")) {
      path = a;
    } else {
      std::fprintf(stderr, "paygent agents apply: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "paygent agents apply: FILE is required\n");
    return 2;
  }
  const std::optional<std::string> body = read_input_file("paygent agents apply", path);
  if (!body) return 2;
  const std::optional<std::string> reply = ask_paygentd(c, "paygent agents apply", "POST", "/api/v1/agents:apply", *body, path);
  if (!reply) return 1;
  simdjson::dom::parser parser;
  simdjson::dom::array agents;
  if (parser.parse(*reply)["agents"].get_array().get(agents) != simdjson::SUCCESS) {
    std::fprintf(stderr, "paygent agents apply: unreadable reply %s\n", reply->c_str());
    return 1;
  }
  for (simdjson::dom::element agent : agents) {
    std::string_view id;
    bool changed = false;
    if (agent["agentId"].get_string().get(id) != simdjson::SUCCESS || agent["changed"].get_bool().get(changed) != simdjson::SUCCESS) {
      continue;
    }
    std::printf("agent %.*s: %s\n", static_cast<int>(id.size()), id.data(), changed ? "changed" : "unchanged");
  }
  return 0;
}

}  // namespace paygent::tools
