// Refused requests and tenant isolation through the REAL paygentd (its HTTP layer, Beast's parser
// and limits, and the API behind them), over loopback sockets. tests/server/api_test.cpp checks the
// same rules on Api::handle_request without a socket; here every endpoint gets its malformed,
// truncated (in the JSON and on the wire), oversized (declared, sent, chunked) and wrong-typed
// requests as a client would send them, and the database is compared byte for byte afterwards.
#include <doctest/doctest.h>
#include <simdjson.h>
#include <sqlite3.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "integration/cli_process.h"
#include "support/paygentd_process.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";
constexpr std::size_t kMaxBody = 4096;  // paygentd --max-body-bytes in these tests
constexpr const char* kAllTime = "from_ns=0&to_ns=9223372036854775807";

constexpr const char* kPlans =
    R"({"soft_gate_at":0.8,"hard_gate_at":1.0,"default_plan":"free","plans":[)"
    R"({"name":"pro","max_spend_per_period":49.0,"model_limits":{"gpt-4o":{"max_tokens_per_period":50000}},)"
    R"("cost_rates":{"gpt-4o":{"input":0.0025,"output":0.01}}},)"
    R"({"name":"free","max_spend_per_period":0.5,"period":"day"}]})";
constexpr const char* kOtherPlans =
    R"({"plans":[{"name":"pro","max_spend_per_period":10.0},{"name":"free","max_spend_per_period":0.1},)"
    R"({"name":"team"}]})";
constexpr const char* kSubscription =
    R"({"plan":"pro","period_start":"2026-11-05T00:00:00Z","period_end":"2026-12-05T00:00:00Z"})";
constexpr const char* kOtherSubscription =
    R"({"plan":"free","period_start":"2026-10-01T00:00:00Z","period_end":"2026-10-08T00:00:00Z"})";

// One event of the ingest wire format (docs/wire.md), every field present.
std::string event_json(int n, const std::string& user, std::int64_t cost_nanos) {
  char id[33];
  std::snprintf(id, sizeof id, "%032x", n);
  return std::string(R"({"id":")") + id + R"(","user_id":")" + user +
         R"(","session_id":"s1","agent_id":"","indicator":"","model":"gpt-4o","provider":"openai",)"
         R"("input_tokens":1000,"output_tokens":200,"cached_input_tokens":0,"cache_creation_input_tokens":0,)"
         R"("reasoning_tokens":0,"cost_nanos":)" +
         std::to_string(cost_nanos) + R"(,"ts_ns":1793491200000000000,"meta_tags":{"k":"v"},"estimated":false})";
}

std::string batch_json(const std::vector<std::string>& events) {
  std::string out = R"({"events":[)";
  for (std::size_t i = 0; i < events.size(); ++i) out += (i ? "," : "") + events[i];
  return out + "]}";
}

// True when `reply` is a refusal as docs/wire.md has it: the given 4xx status, JSON content,
// {"error":{"code":"<code>","message":"<non-empty>"}}.
bool is_json_refusal(const std::optional<HttpClient::Reply>& reply, int status, std::string_view code) {
  if (!reply || reply->status != status) return false;
  const auto type = reply->headers.find("content-type");
  if (type == reply->headers.end() || type->second.rfind("application/json", 0) != 0) return false;
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view got_code, message;
  return parser.parse(reply->body).get(root) == simdjson::SUCCESS &&
         root["error"]["code"].get_string().get(got_code) == simdjson::SUCCESS &&
         root["error"]["message"].get_string().get(message) == simdjson::SUCCESS && got_code == code &&
         !message.empty();
}

std::string describe(const std::optional<HttpClient::Reply>& reply) {
  return reply ? std::to_string(reply->status) + " " + reply->body : std::string("no reply");
}

// A request whose body stops short of its Content-Length: the client sends what it has, then
// half-closes. Returns what paygentd answered before closing ("" for nothing).
std::string send_truncated_on_the_wire(int port, const std::string& head, const std::string& partial_body) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  const std::string bytes = head + partial_body;
  REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  char chunk[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) answer += "[timeout: paygentd kept the connection open]";
    if (n <= 0) break;
    answer.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return answer;
}

// The body `body` sent with Transfer-Encoding: chunked (1 KiB chunks).
std::string chunked_request(const std::string& method, const std::string& target, const std::string& bearer,
                            const std::string& body) {
  std::string out = method + " " + target + "\r\nHost: x\r\nAuthorization: Bearer " + bearer +
                    "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  out.replace(out.find("\r\n"), 2, " HTTP/1.1\r\n");
  for (std::size_t at = 0; at < body.size(); at += 1024) {
    const std::string piece = body.substr(at, 1024);
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    out += size + piece + "\r\n";
  }
  return out + "0\r\n\r\n";
}

// Every row of every table of paygentd's database, read through a separate read-only connection
// (WAL: a consistent snapshot while paygentd runs), sorted: equal digests = nothing stored or
// changed, whatever the schema.
std::vector<std::string> database_digest(const std::string& data_dir) {
  const std::string path = data_dir + "/paygentd.db";
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  auto rows = [&](const std::string& sql) {
    std::vector<std::string> out;
    sqlite3_stmt* stmt = nullptr;
    REQUIRE_MESSAGE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK, sqlite3_errmsg(db));
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      std::string row;
      for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
        const auto* text = sqlite3_column_blob(stmt, c);
        row += std::to_string(sqlite3_column_type(stmt, c)) + ":" +
               std::string(text == nullptr ? "" : static_cast<const char*>(text),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt, c))) +
               "|";
      }
      out.push_back(std::move(row));
    }
    sqlite3_finalize(stmt);
    return out;
  };
  REQUIRE(sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr) == SQLITE_OK);
  std::vector<std::string> digest;
  for (const std::string& table : rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")) {
    const std::string name = table.substr(table.find(':') + 1, table.size() - table.find(':') - 2);
    std::vector<std::string> content = rows("SELECT * FROM \"" + name + "\"");
    std::sort(content.begin(), content.end());
    digest.push_back("table " + name + " rows " + std::to_string(content.size()));
    digest.insert(digest.end(), content.begin(), content.end());
  }
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  return digest;
}

// What the product's key can see through the API: plans, the users' usage, reports.
std::map<std::string, std::string> api_view(HttpClient& http, const std::string& key,
                                            const std::vector<std::string>& users) {
  std::map<std::string, std::string> view;
  auto get = [&](const std::string& target) {
    const auto reply = http.request("GET", target, {}, key);
    REQUIRE(reply);
    view[target] = std::to_string(reply->status) + " " + reply->body;
  };
  get("/api/v1/config/plans");
  for (const std::string& u : users) get("/api/v1/users/" + u + "/usage");
  for (const char* group : {"user", "model", "session", "day"}) {
    get(std::string("/api/v1/reports/usage?") + kAllTime + "&group_by=" + group);
  }
  return view;
}

// True when paygentd's /metrics counts any request answered with a 5xx.
bool metrics_show_a_5xx(HttpClient& http) {
  const auto metrics = http.request("GET", "/metrics");
  REQUIRE(metrics);
  return metrics->body.find("code=\"5") != std::string::npos;
}

}  // namespace

TEST_CASE("integration.paygentd_refuses_bad_requests_on_every_endpoint_and_stores_nothing") {
  TempDir dir;
  const std::string data_dir = dir.path() + "/server";
  auto paygentd = PaygentdProcess::start({.data_dir = data_dir,
                                          .admin_token = kAdmin,
                                          .extra_args = {"--max-body-bytes", std::to_string(kMaxBody)}});
  const int port = paygentd->port();
  HttpClient http(port);
  const std::string key = create_product(http, kAdmin, "acme");
  // Some state, so that a refused request has something to change.
  REQUIRE(http.request("POST", "/api/v1/users", R"({"user_id":"u1"})", key)->status == 201);
  REQUIRE(http.request("POST", "/api/v1/config/plans", kPlans, key)->status == 200);
  REQUIRE(http.request("POST", "/api/v1/users/u1/subscription", kOtherSubscription, key)->status == 200);
  const std::string first_batch = batch_json({event_json(1, "u1", 5), event_json(2, "u2", 7)});
  REQUIRE(http.request("POST", "/api/v1/events:batch", first_batch, key)->status == 200);

  const std::vector<std::string> users = {"u1", "u2", "u-new"};
  const std::map<std::string, std::string> view_before = api_view(http, key, users);
  CHECK(view_before.at("/api/v1/users/u-new/usage").rfind("404 ", 0) == 0);
  const std::vector<std::string> digest_before = database_digest(data_dir);

  struct Endpoint {
    std::string method, target, bearer;
    std::string good_body;                 // POST: a body that would be taken ("" for GET)
    std::vector<std::pair<std::string, std::string>> wrong_typed;  // POST: (body, message start)
  };
  const std::string batch = batch_json({event_json(10, "u-new", 11), event_json(11, "u1", 12)});
  auto batch_with = [&](const std::string& field, const std::string& value) {
    std::string e = event_json(12, "u-new", 13);
    const std::size_t at = e.find("\"" + field + "\":") + field.size() + 3;
    const std::size_t end = e[at] == '{' ? e.find('}', at) + 1 : e.find_first_of(",}", at);
    return batch_json({event_json(13, "u-new", 1), e.substr(0, at) + value + e.substr(end)});
  };
  // Each wrong-typed body with the start of the message that must name its field.
  using Typed = std::vector<std::pair<std::string, std::string>>;
  const std::string start = R"("period_start":"2026-11-05T00:00:00Z")";
  const std::string end = R"("period_end":"2026-12-05T00:00:00Z")";
  const std::vector<Endpoint> endpoints = {
      {"POST", "/api/v1/products", kAdmin, R"({"name":"zeta"})",
       Typed{{R"({"name":1})", "name:"}, {R"({"name":null})", "name:"}, {R"({"name":["zeta"]})", "name:"},
             {R"({"name":{"n":"zeta"}})", "name:"}, {R"({"name":true})", "name:"}}},
      {"POST", "/api/v1/users", key, R"({"user_id":"u-new","name":"New"})",
       Typed{{R"({"user_id":1})", "user_id:"}, {R"({"user_id":null})", "user_id:"},
             {R"({"user_id":["u-new"]})", "user_id:"}, {R"({"user_id":"u-new","name":7})", "name:"},
             {R"({"user_id":"u-new","name":{}})", "name:"}, {R"({"user_id":true})", "user_id:"}}},
      {"POST", "/api/v1/users/u1/subscription", key, kSubscription,
       Typed{{R"({"plan":1,)" + start + "," + end + "}", "plan:"},
             {R"({"plan":["pro"],)" + start + "," + end + "}", "plan:"},
             {R"({"plan":"pro","period_start":1793836800,)" + end + "}", "period_start:"},
             {R"({"plan":"pro",)" + start + R"(,"period_end":true})", "period_end:"},
             {R"({"plan":"pro","period_start":null,)" + end + "}", "period_start:"},
             {R"({"plan":"pro",)" + start + R"(,"period_end":{"at":"2026-12-05T00:00:00Z"}})", "period_end:"}}},
      {"POST", "/api/v1/config/plans", key, kOtherPlans,
       Typed{{R"({"plans":{}})", "plans:"},
             {R"({"plans":"pro"})", "plans:"},
             {R"({"plans":[{"name":1}]})", "plans[0].name:"},
             {R"({"plans":["pro"]})", "plans[0]:"},
             {R"({"plans":[{"name":"p","max_spend_per_period":"49"}]})", "plans[0].max_spend_per_period:"},
             {R"({"soft_gate_at":"0.8","plans":[{"name":"p"}]})", "soft_gate_at:"},
             {R"({"plans":[{"name":"p","model_limits":{"gpt-4o":{"max_tokens_per_period":"5"}}}]})",
              "plans[0].model_limits.gpt-4o.max_tokens_per_period:"},
             {R"({"plans":[{"name":"p","cost_rates":{"gpt-4o":{"input":"0.1","output":0.2}}}]})",
              "plans[0].cost_rates.gpt-4o.input:"},
             {R"({"plans":[{"name":"p","session_timeout_minutes":[30]}]})", "plans[0].session_timeout_minutes:"},
             {R"({"default_plan":7,"plans":[{"name":"p"}]})", "default_plan:"}}},
      {"POST", "/api/v1/events:batch", key, batch,
       Typed{{R"({"events":{}})", "events:"},
             {R"({"events":"e"})", "events:"},
             {R"({"events":[7]})", "events[0]:"},
             {R"({"events":[[]]})", "events[0]:"},
             {batch_with("id", "42"), "events[1].id:"},
             {batch_with("user_id", "7"), "events[1].user_id:"},
             {batch_with("input_tokens", "\"1000\""), "events[1].input_tokens:"},
             {batch_with("cost_nanos", "1.5"), "events[1].cost_nanos:"},
             {batch_with("ts_ns", "\"1793491200000000000\""), "events[1].ts_ns:"},
             {batch_with("meta_tags", "[]"), "events[1].meta_tags:"},
             {batch_with("meta_tags", R"({"k":1})"), "events[1].meta_tags.k:"},
             {batch_with("estimated", "0"), "events[1].estimated:"},
             {batch_with("model", "null"), "events[1].model:"},
             {batch_with("output_tokens", "-1"), "events[1].output_tokens:"},
             {batch_with("cost_nanos", "9223372036854775808"), "events[1].cost_nanos:"}}},
      {"GET", "/api/v1/config/plans", key, "", {}},
      {"GET", "/api/v1/users/u1/usage", key, "", {}},
      {"GET", std::string("/api/v1/reports/usage?") + kAllTime + "&group_by=user", key, "", {}},
  };

  // Malformed JSON, whatever the endpoint expects.
  const std::vector<std::string> malformed = {
      "", "{", "}", "[]", "null", "42", "\"text\"", "{\"a\":}", "\x01\x02", "{'user_id':'u-new'}",
      "{\"user_id\":\"u-new\",}", "{\"user_id\":\"u-new\"} x", "{\"user_id\":\"u-new\"}{}", "{\"user_id\":\"\xff\"}",
      "{\"user_id\":\"a\x01b\"}", "{\"user_id\":NaN}", "{\"name\":\"zeta\",\"name\":\"zeta\"}", "\xef\xbb\xbf{}",
      "{\"name\":1,\"user_id\":[],\"plan\":{},\"events\":\"e\",\"plans\":7}"};

  int refusals = 0;
  for (const Endpoint& e : endpoints) {
    CAPTURE(e.method);
    CAPTURE(e.target);
    const bool post = e.method == "POST";
    if (post) {
      std::vector<std::string> bad = malformed;
      // Truncated JSON: proper prefixes of the good body (complete HTTP messages).
      for (std::size_t n = 1; n < e.good_body.size(); n += 5) bad.push_back(e.good_body.substr(0, n));
      bad.push_back(e.good_body.substr(0, e.good_body.size() - 1));
      for (const std::string& body : bad) {
        CAPTURE(body);
        const auto reply = http.request("POST", e.target, body, e.bearer);
        CHECK_MESSAGE(is_json_refusal(reply, 400, "invalid_argument"), describe(reply));
        ++refusals;
      }
      for (const auto& [body, field] : e.wrong_typed) {
        CAPTURE(body);
        const auto reply = http.request("POST", e.target, body, e.bearer);
        CHECK_MESSAGE(is_json_refusal(reply, 400, "invalid_argument"), describe(reply));
        CHECK_MESSAGE((reply && reply->body.find("\"message\":\"" + field) != std::string::npos), describe(reply));
        ++refusals;
      }
      // Not JSON by its Content-Type.
      for (const char* type : {"text/plain", "application/x-www-form-urlencoded", "application/jsonx"}) {
        const auto reply = http.request("POST", e.target, e.good_body, e.bearer, type);
        CHECK_MESSAGE(is_json_refusal(reply, 415, "unsupported_media_type"), describe(reply));
        ++refusals;
      }
    } else {
      // A GET's body has no meaning (RFC 9110 §9.3.1): paygentd ignores it, and answers as if
      // there were none. Malformed JSON there is neither parsed nor stored.
      for (const std::string& body : {std::string("{"), std::string("{\"plans\":[{\"name\":\"p\"}]}")}) {
        const auto reply = http.request("GET", e.target, body, e.bearer);
        REQUIRE(reply);
        CHECK(std::to_string(reply->status) + " " + reply->body == view_before.at(e.target));
      }
    }
    // Oversized: one byte past --max-body-bytes (the limit itself is taken: see below), declared
    // by Content-Length; the same sent chunked; and a huge Content-Length with no body sent.
    std::string big = e.good_body.empty() ? std::string("{}") : e.good_body;
    big.resize(kMaxBody + 1, ' ');
    auto reply = http.request(e.method, e.target, big, e.bearer);
    CHECK_MESSAGE(is_json_refusal(reply, 413, "payload_too_large"), describe(reply));
    reply = http.raw(chunked_request(e.method, e.target, e.bearer, big));
    CHECK_MESSAGE(is_json_refusal(reply, 413, "payload_too_large"), describe(reply));
    std::string target_line = e.method + " " + e.target + " HTTP/1.1\r\n";
    reply = http.raw(target_line + "Host: x\r\nAuthorization: Bearer " + e.bearer +
                     "\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n");
    CHECK_MESSAGE(is_json_refusal(reply, 413, "payload_too_large"), describe(reply));
    refusals += 3;
    // Truncated on the wire: Content-Length promises the whole body, the client sends half and
    // closes its side. RFC 9112 §6.3: the message is incomplete, the server closes the connection.
    // paygentd answers nothing (or, acceptably, a 4xx); it must not take the half body.
    const std::string body = e.good_body.empty() ? std::string(R"({"plans":[{"name":"p"}]})") : e.good_body;
    const std::string head = target_line + "Host: x\r\nAuthorization: Bearer " + e.bearer +
                             "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                             "\r\n\r\n";
    const std::string answer = send_truncated_on_the_wire(port, head, body.substr(0, body.size() / 2));
    CHECK_MESSAGE((answer.empty() || answer.rfind("HTTP/1.1 4", 0) == 0), answer);
  }
  // Malformed and wrong-typed queries and paths of the GET endpoints: 400 with a JSON error.
  const std::vector<std::string> bad_targets = {
      "/api/v1/reports/usage?from_ns=abc&to_ns=1&group_by=user",
      "/api/v1/reports/usage?from_ns=-1&to_ns=1&group_by=user",
      "/api/v1/reports/usage?from_ns=1.5&to_ns=2&group_by=user",
      "/api/v1/reports/usage?from_ns=0&to_ns=1e3&group_by=user",
      "/api/v1/reports/usage?from_ns=0&to_ns=99999999999999999999&group_by=user",
      "/api/v1/reports/usage?from_ns=0&to_ns=1&group_by=7",
      "/api/v1/reports/usage?from_ns=0&to_ns=1&group_by=user&user_id=",
      "/api/v1/reports/usage?from_ns=%ZZ&to_ns=1&group_by=user",
      "/api/v1/reports/usage?from_ns=0&to_ns=1&group_by=user&from_ns=0",
      "/api/v1/reports/usage?from_ns=0&to_ns=1&group_by=user&limit=5",
      "/api/v1/reports/usage?to_ns=1&group_by=user",
      "/api/v1/reports/usage",
      "/api/v1/users/%FF/usage",
      "/api/v1/users/a%2/usage",
  };
  for (const std::string& target : bad_targets) {
    CAPTURE(target);
    const auto reply = http.request("GET", target, {}, key);
    CHECK_MESSAGE(is_json_refusal(reply, 400, "invalid_argument"), describe(reply));
    ++refusals;
  }

  // Nothing of all that was stored: the database is the same, row for row, and so is what the
  // API shows (plans, usage of every user named in a refused body, reports).
  CHECK(database_digest(data_dir) == digest_before);
  CHECK(api_view(http, key, users) == view_before);
  CHECK_FALSE(metrics_show_a_5xx(http));  // every refusal was the client's fault, none a crash
  MESSAGE(refusals << " refused requests, none stored");

  // paygentd is still healthy, and the limit itself is taken: a body of exactly
  // --max-body-bytes, sent whole or chunked.
  std::string at_limit = R"({"user_id":"u-new"})";
  at_limit.resize(kMaxBody, ' ');
  auto reply = http.request("POST", "/api/v1/users", at_limit, key);
  CHECK_MESSAGE((reply && reply->status == 201), describe(reply));
  std::string plans_at_limit = kOtherPlans;
  plans_at_limit.resize(kMaxBody, ' ');
  reply = http.raw(chunked_request("POST", "/api/v1/config/plans", key, plans_at_limit));
  CHECK_MESSAGE((reply && reply->status == 200), describe(reply));
  CHECK(http.request("GET", "/healthz")->status == 200);
  CHECK(paygentd->terminate() == 0);
}

TEST_CASE("integration.paygentd_keeps_products_apart") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string a = create_product(http, kAdmin, "a");
  const std::string b = create_product(http, kAdmin, "b");

  // A: plans, a subscribed user, hand-made events; and an application process (the library's
  // syncer) recording for user-0..2. B: an application with the same user names, fewer calls.
  REQUIRE(http.request("POST", "/api/v1/config/plans", kPlans, a)->status == 200);
  REQUIRE(http.request("POST", "/api/v1/users", R"({"user_id":"u1"})", a)->status == 201);
  REQUIRE(http.request("POST", "/api/v1/users/u1/subscription", kSubscription, a)->status == 200);
  const std::string a_batch = batch_json({event_json(1, "u1", 5), event_json(2, "u1", 6)});
  REQUIRE(http.request("POST", "/api/v1/events:batch", a_batch, a)->status == 200);
  Truth truth_a, truth_b;
  {
    CliProcess app_a(loadgen_args(paygentd->base_url(), a, dir.path() + "/a.db", "", 3, 600));
    CliProcess app_b(loadgen_args(paygentd->base_url(), b, dir.path() + "/b.db", "", 3, 300));
    truth_a = read_truth(app_a, 3);
    truth_b = read_truth(app_b, 3);
    CHECK(app_a.line().rfind("delivered all", 0) == 0);
    CHECK(app_b.line().rfind("delivered all", 0) == 0);
    CHECK(app_a.wait() == 0);
    CHECK(app_b.wait() == 0);
  }
  const std::vector<std::string> a_users = {"u1", "user-0", "user-1", "user-2"};
  const std::map<std::string, std::string> a_view = api_view(http, a, a_users);

  // Each product's report holds its own events only, though the user names are the same.
  auto report_by_user = [&](const std::string& key) {
    const std::string target = std::string("/api/v1/reports/usage?") + kAllTime + "&group_by=user";
    const auto reply = http.request("GET", target, {}, key);
    REQUIRE(reply);
    REQUIRE(reply->status == 200);
    simdjson::dom::parser parser;
    simdjson::dom::element doc = parser.parse(reply->body);
    std::map<std::string, std::pair<std::int64_t, std::int64_t>> out;  // user -> (calls, cost)
    for (simdjson::dom::element row : doc["rows"].get_array()) {
      out[std::string(row["key"].get_string().value())] = {row["calls"].get_int64().value(),
                                                           row["cost_nanos"].get_int64().value()};
    }
    return out;
  };
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> expect_a = {{"u1", {2, 11}}}, expect_b;
  for (const auto& [u, cost] : truth_a.cost_by_user) expect_a[u] = {200, cost};
  for (const auto& [u, cost] : truth_b.cost_by_user) expect_b[u] = {100, cost};
  CHECK(report_by_user(a) == expect_a);
  CHECK(report_by_user(b) == expect_b);

  // B cannot read A's users, plans or usage.
  auto status = [&](const char* method, const std::string& target, const std::string& body, const std::string& key) {
    const auto reply = http.request(method, target, body, key);
    REQUIRE(reply);
    return reply->status;
  };
  CHECK(status("GET", "/api/v1/users/u1/usage", {}, b) == 404);  // u1 exists in A only
  CHECK(http.request("GET", "/api/v1/config/plans", {}, b)->body == R"({"plans":[]})");
  CHECK(status("GET", std::string("/api/v1/reports/usage?") + kAllTime + "&group_by=session&user_id=u1", {}, b) ==
        200);
  CHECK(http.request("GET", std::string("/api/v1/reports/usage?") + kAllTime + "&group_by=session&user_id=u1", {}, b)
            ->body == R"({"rows":[]})");
  // B's user-0 is B's: its usage counts B's calls only.
  const auto b_user0 = http.request("GET", "/api/v1/users/user-0/usage", {}, b);
  REQUIRE(b_user0);
  CHECK(b_user0->body.find("\"calls\":100,") != std::string::npos);
  CHECK(a_view.at("/api/v1/users/user-0/usage").find("\"calls\":200,") != std::string::npos);

  // B cannot change them either: its writes land in B, whatever names and ids they reuse.
  CHECK(status("POST", "/api/v1/users/u1/subscription", kSubscription, b) == 404);  // no plans, no u1 in B
  CHECK(status("POST", "/api/v1/config/plans", kOtherPlans, b) == 200);
  CHECK(status("POST", "/api/v1/users/u1/subscription", kSubscription, b) == 404);  // no u1 in B
  CHECK(status("POST", "/api/v1/users", R"({"user_id":"u1"})", b) == 201);         // B's own u1
  CHECK(status("POST", "/api/v1/users/u1/subscription", kOtherSubscription, b) == 200);
  CHECK(status("POST", "/api/v1/users", R"({"user_id":"user-0"})", b) == 409);  // B's own, from its events
  const auto b_ingest = http.request("POST", "/api/v1/events:batch", a_batch, b);  // A's event ids
  REQUIRE(b_ingest);
  CHECK(b_ingest->body.rfind(R"({"accepted":2,"duplicates":0,)", 0) == 0);  // new to B: counted in B
  CHECK(api_view(http, a, a_users) == a_view);  // A sees exactly what it saw
  // And B now sees its own versions.
  CHECK(http.request("GET", "/api/v1/users/u1/usage", {}, b)->body.find("\"plan\":\"free\"") != std::string::npos);
  CHECK(http.request("GET", "/api/v1/config/plans", {}, b)->body != a_view.at("/api/v1/config/plans").substr(4));
  // A's key is not the admin's: it cannot create products.
  CHECK(status("POST", "/api/v1/products", R"({"name":"c"})", a) == 401);
  CHECK(paygentd->terminate() == 0);
}

}  // namespace paygent::testing
