// `paygent demo`, the README's main command, run as a process: the $49 Pro-plan month tells the
// product documents' numbers, and against the real paygentd the backend's totals for the demo
// month equal the library's.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "integration/cli_process.h"
#include "support/paygentd_process.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";

// The demo month, November 2026 UTC, in ns since the epoch: [start, end).
constexpr std::int64_t kNovember2026StartNs = 1'793'491'200'000'000'000;
constexpr std::int64_t kDecember2026StartNs = 1'796'083'200'000'000'000;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> words_of(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// "$139.72" or "-$90.72" -> cents.
std::int64_t cents(const std::string& usd) {
  const bool negative = !usd.empty() && usd[0] == '-';
  const std::string digits = usd.substr(usd.find('$') + 1);
  const std::size_t dot = digits.find('.');
  REQUIRE_MESSAGE(dot != std::string::npos, "not a dollar amount: " << usd);
  const std::int64_t value = std::stoll(digits.substr(0, dot)) * 100 + std::stoll(digits.substr(dot + 1, 2));
  return negative ? -value : value;
}

// Cents rounded to whole dollars, halves away from zero (as a person reads "$139.72" as $140).
std::int64_t whole_dollars(std::int64_t c) { return std::llround(static_cast<double>(c) / 100.0); }

// One user's row of a demo table.
struct Row {
  std::int64_t calls = 0;
  std::int64_t cost_cents = 0;
  std::int64_t blocked = 0;
  std::int64_t rerouted = 0;
  std::int64_t margin_cents = 0;
};

// The table printed under the line starting with `title`: user id (alice, bob, charlie) -> row.
// Row layout: name (two words), calls, gpt-4o tokens, gpt-4o-mini tokens, cost, blocked, rerouted,
// warn, margin, ok|LOSS.
std::map<std::string, Row> table(const std::string& output, const std::string& title) {
  const std::vector<std::string> lines = lines_of(output);
  std::size_t at = 0;
  while (at < lines.size() && lines[at].rfind(title, 0) != 0) ++at;
  REQUIRE_MESSAGE(at < lines.size(), "no table \"" << title << "\" in:\n" << output);
  std::map<std::string, Row> rows;
  for (std::size_t i = at + 2; i < lines.size() && i < at + 5; ++i) {
    const std::vector<std::string> w = words_of(lines[i]);
    REQUIRE_MESSAGE(w.size() == 11, "unexpected table row: " << lines[i]);
    std::string user = w[0];
    for (char& c : user) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    Row r;
    r.calls = std::stoll(w[2]);
    r.cost_cents = cents(w[5]);
    r.blocked = std::stoll(w[6]);
    r.rerouted = std::stoll(w[7]);
    r.margin_cents = cents(w[9]);
    CHECK_MESSAGE(w[10] == (r.margin_cents < 0 ? "LOSS" : "ok"), lines[i]);
    rows[user] = r;
  }
  REQUIRE(rows.size() == 3);
  return rows;
}

}  // namespace

TEST_CASE("integration.demo_tells_the_product_docs_numbers") {
  TempDir dir;
  const CliRun run = run_cli({"demo", "--store", dir.path() + "/demo.db"});
  INFO(run.output);
  REQUIRE(run.status == 0);

  // Without Paygent, the $49 Pro plan of the product documents: bills of $8, $23 and $140,
  // margins of $41, $26 and -$91, to the dollar.
  const auto without = table(run.output, "Without Paygent");
  CHECK(without.at("alice").calls == 50);
  CHECK(without.at("bob").calls == 400);
  CHECK(without.at("charlie").calls == 4000);
  CHECK(whole_dollars(without.at("alice").cost_cents) == 8);
  CHECK(whole_dollars(without.at("bob").cost_cents) == 23);
  CHECK(whole_dollars(without.at("charlie").cost_cents) == 140);
  CHECK(whole_dollars(without.at("alice").margin_cents) == 41);
  CHECK(whole_dollars(without.at("bob").margin_cents) == 26);
  CHECK(whole_dollars(without.at("charlie").margin_cents) == -91);

  // With Paygent: Charlie's GPT-4o quota stops him, he carries on with gpt-4o-mini (every one of
  // his calls is answered), and his margin is positive; Alice and Bob are neither blocked nor
  // rerouted and cost what they did.
  const auto with = table(run.output, "With Paygent");
  const Row& charlie = with.at("charlie");
  CHECK(charlie.rerouted > 0);
  CHECK(charlie.calls == 4000);
  CHECK(charlie.margin_cents > 0);
  for (const char* user : {"alice", "bob"}) {
    CAPTURE(user);
    CHECK(with.at(user).blocked == 0);
    CHECK(with.at(user).rerouted == 0);
    CHECK(with.at(user).cost_cents == without.at(user).cost_cents);
  }
  // The demo says plainly why its GPT-4o cap is not the documents' 50K tokens.
  CHECK(run.output.find("example cap is 50K GPT-4o tokens") != std::string::npos);
  CHECK(run.output.find("OK: Charlie's margin") != std::string::npos);
}

TEST_CASE("integration.demo_against_paygentd_backend_totals_for_the_month_match_the_library") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "demo");
  const CliRun run = run_cli({"demo", "--backend", paygentd->base_url(), "--api-key", key, "--store",
                              dir.path() + "/demo.db"});
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(run.output.find("4450 events stored, 4450 delivered to paygentd") != std::string::npos);
  CHECK(run.output.find("Backend and library agree for every user") != std::string::npos);
  CHECK(run.output.find("MISMATCH") == std::string::npos);

  // The library's totals as the demo printed them ("library" rows, in alice, bob, charlie order):
  // calls, input tokens, output tokens, cost in nano-USD.
  std::vector<std::vector<std::int64_t>> library;
  for (const std::string& l : lines_of(run.output)) {
    const std::vector<std::string> w = words_of(l);
    if (w.size() >= 5 && w[0] == "library") {
      library.push_back({std::stoll(w[1]), std::stoll(w[2]), std::stoll(w[3]), std::stoll(w[4])});
    }
  }
  REQUIRE(library.size() == 3);

  // Asked independently of the demo, for November 2026: the same users, the same totals.
  auto reply = http.request("GET",
                            "/api/v1/reports/usage?from_ns=" + std::to_string(kNovember2026StartNs) +
                                "&to_ns=" + std::to_string(kDecember2026StartNs) + "&group_by=user",
                            {}, key);
  REQUIRE(reply.has_value());
  REQUIRE_MESSAGE(reply->status == 200, reply->body);
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(reply->body);
  std::vector<std::string> users;
  std::vector<std::vector<std::int64_t>> backend;
  for (simdjson::dom::element row : doc["rows"].get_array()) {
    users.emplace_back(row["key"].get_string().value());
    backend.push_back({row["calls"].get_int64().value(), row["input_tokens"].get_int64().value(),
                       row["output_tokens"].get_int64().value(), row["cost_nanos"].get_int64().value()});
  }
  CHECK(users == std::vector<std::string>{"alice", "bob", "charlie"});
  REQUIRE(backend.size() == 3);
  CHECK(backend[0][0] == 50);
  CHECK(backend[1][0] == 400);
  CHECK(backend[2][0] == 4000);
  CHECK(backend == library);
  // Charlie, guarded, costs less than the $49 he pays.
  CHECK(backend[2][3] < 49'000'000'000);
}

}  // namespace paygent::testing
