// `paygent billing apply FILE` and `paygent invoice CUSTOMER` (see tools/billing.h).
#include "tools/billing.h"

#include <simdjson.h>

#include <cctype>
#include <cstdio>
#include <tuple>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/profit.h"

namespace paygent::tools {
namespace {

std::string text_of(simdjson::dom::element e, const char* field) {
  std::string_view v;
  if (e[field].get_string().get(v) != simdjson::SUCCESS) return "";
  return std::string(v);
}

std::int64_t int_of(simdjson::dom::element e, const char* field) {
  std::int64_t n = 0;
  if (e[field].get_int64().get(n) != simdjson::SUCCESS) return 0;
  return n;
}

}  // namespace

int run_billing_apply(int argc, char** argv) {
  Connection c;
  std::string path;
  std::string format = "table";
  for (int i = 3; i < argc; ++i) {
    const std::string_view a = argv[i];
    if ((a == "--url" || a == "--key" || a == "--format") && i + 1 < argc) {
      (a == "--url" ? c.url : a == "--key" ? c.key : format) = argv[++i];
    } else if (path.empty() && !a.starts_with("--")) {
      path = a;
    } else {
      std::fprintf(stderr, "paygent billing apply: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (format != "table" && format != "csv" && format != "json") {
    std::fprintf(stderr, "paygent billing apply: --format: must be table, csv or json\n");
    return 2;
  }
  if (path.empty()) {
    std::fprintf(stderr, "paygent billing apply: FILE is required\n");
    return 2;
  }
  const std::optional<std::string> body = read_input_file("paygent billing apply", path);
  if (!body) return 2;
  const std::optional<std::string> reply = ask_paygentd(c, "paygent billing apply", "POST", "/api/v1/billing:apply", *body, path);
  if (!reply) return 1;
  if (format == "json") {
    std::printf("%s\n", reply->c_str());
    return 0;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(*reply).get(root) != simdjson::SUCCESS) {
    std::fprintf(stderr, "paygent billing apply: unreadable reply %s\n", reply->c_str());
    return 1;
  }
  std::vector<std::vector<std::string>> rows = {{"KIND", "ID", "RESULT"}};
  for (const auto& [list, id_field, kind] :
       {std::tuple{"metrics", "identifier", "metric"}, std::tuple{"agents", "agentId", "agent"}}) {
    simdjson::dom::array items;
    if (root[list].get_array().get(items) != simdjson::SUCCESS) continue;
    for (simdjson::dom::element item : items) {
      bool changed = false;
      if (item["changed"].get_bool().get(changed) != simdjson::SUCCESS) changed = false;
      rows.push_back({kind, text_of(item, id_field), changed ? "changed" : "unchanged"});
    }
  }
  if (format == "csv") {
    std::printf("kind,id,result\n");
    for (std::size_t r = 1; r < rows.size(); ++r) {
      std::printf("%s,%s,%s\n", rows[r][0].c_str(), csv_field(rows[r][1]).c_str(), rows[r][2].c_str());
    }
    return 0;
  }
  print_table(rows, 3);
  return 0;
}

int run_invoice(int argc, char** argv) {
  Connection c;
  std::string customer, period, format = "table";
  for (int i = 2; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.starts_with("--")) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "paygent invoice: %s needs a value\n", argv[i]);
        return 2;
      }
      const char* v = argv[++i];
      if (a == "--url") c.url = v;
      else if (a == "--key") c.key = v;
      else if (a == "--period") period = v;
      else if (a == "--format") format = v;
      else {
        std::fprintf(stderr, "paygent invoice: unknown option %s\n", argv[i - 1]);
        return 2;
      }
    } else if (customer.empty()) {
      customer = a;
    } else {
      std::fprintf(stderr, "paygent invoice: one CUSTOMER only (got %s)\n", argv[i]);
      return 2;
    }
  }
  if (customer.empty()) {
    std::fprintf(stderr, "paygent invoice: CUSTOMER is required\n");
    return 2;
  }
  if (format != "table" && format != "csv" && format != "json") {
    std::fprintf(stderr, "paygent invoice: --format: must be table, csv or json\n");
    return 2;
  }
  // The customer id is percent-encoded into the path; the period is checked by paygentd.
  std::string encoded;
  for (unsigned char ch : customer) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      encoded += static_cast<char>(ch);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", ch);
      encoded += hex;
    }
  }
  std::string target = "/api/v1/customers/" + encoded + "/invoice";
  if (!period.empty()) target += "?period=" + period;
  const std::optional<std::string> reply = ask_paygentd(c, "paygent invoice", "GET", target, "", "");
  if (!reply) return 1;
  if (format == "json") {
    std::printf("%s\n", reply->c_str());
    return 0;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array lines;
  if (parser.parse(*reply).get(root) != simdjson::SUCCESS || root["lines"].get_array().get(lines) != simdjson::SUCCESS) {
    std::fprintf(stderr, "paygent invoice: unreadable reply %s\n", reply->c_str());
    return 1;
  }
  std::vector<std::vector<std::string>> rows = {
      {"AGENT/INDICATOR", "METRIC", "PRICING", "QUANTITY", "AMOUNT", "CREDITS", "EVENTS", "EXCLUDED"}};
  for (simdjson::dom::element l : lines) {
    simdjson::dom::element events = l["events"];
    rows.push_back({text_of(l, "agent") + "/" + text_of(l, "indicator"), text_of(l, "metric"), text_of(l, "pricing"),
                    text_of(l, "quantity"), usd_text(int_of(l, "amount_nanos")), text_of(l, "credits"),
                    std::to_string(int_of(events, "counted")), std::to_string(int_of(events, "excluded"))});
  }
  if (format == "csv") {
    std::printf("agent,indicator,metric,pricing,quantity,amount_usd,credits,events,excluded\n");
    for (simdjson::dom::element l : lines) {
      std::string amount = usd_text(int_of(l, "amount_nanos"));
      amount.erase(amount.find('$'), 1);
      std::printf("%s,%s,%s,%s,%s,%s,%s,%lld,%lld\n", csv_field(text_of(l, "agent")).c_str(),
                  csv_field(text_of(l, "indicator")).c_str(), csv_field(text_of(l, "metric")).c_str(),
                  text_of(l, "pricing").c_str(), text_of(l, "quantity").c_str(), amount.c_str(), text_of(l, "credits").c_str(),
                  static_cast<long long>(int_of(l["events"], "counted")), static_cast<long long>(int_of(l["events"], "excluded")));
    }
    return 0;
  }
  rows.push_back({"TOTAL", "", "", "", usd_text(int_of(root, "total_nanos")), "", "", ""});
  print_table(rows, 3);
  return 0;
}

}  // namespace paygent::tools
