// The dashboard's sign-in, its session cookie and the customer portal's tokens (server/dashboard_api.cpp,
// docs/dashboard.md), through Api::handle_request with a fixed clock. The pages themselves run in
// a real browser in tests/dashboard/run_browser.sh.
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "absl/time/time.h"
#include "server/dashboard_sessions.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"

namespace paygent::server::test {
namespace {

std::string header(const HttpResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "";
}

struct DashboardFixture : ApiFixture {
  HttpResponse with_cookie(std::string_view method, std::string_view target, const std::string& cookie,
                           std::string_view body = {}) {
    HttpRequest request{.method = std::string(method),
                        .target = std::string(target),
                        .content_type = "application/json",
                        .body = std::string(body),
                        .cookie = cookie};
    return api->handle_request(request);
  }

  // Signs in with `key` and returns the Cookie header the browser would send back.
  std::string sign_in(const std::string& key, std::string_view extra = "") {
    const HttpResponse r = call("POST", "/api/v1/dashboard/session", "{\"api_key\":\"" + key + "\"" + std::string(extra) + "}");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    const std::string set_cookie = header(r, "Set-Cookie");
    REQUIRE(set_cookie.starts_with("paygent_session=pgs_"));
    return set_cookie.substr(0, set_cookie.find(';'));
  }

  void add_user(const std::string& key, const std::string& user) {
    const HttpResponse r = call("POST", "/api/v1/users", "{\"user_id\":\"" + user + "\"}", key);
    REQUIRE_MESSAGE(r.status == 201, r.body);
  }
};

TEST_CASE_FIXTURE(DashboardFixture, "server.dashboard_pages_are_served_with_a_strict_content_security_policy") {
  for (const char* path : {"/dashboard", "/dashboard/app.js", "/dashboard/common.js", "/dashboard/app.css", "/portal",
                           "/dashboard/portal.js"}) {
    const HttpResponse r = call("GET", path);
    CHECK_MESSAGE(r.status == 200, path);
    CHECK(!r.body.empty());
    CHECK(header(r, "Content-Security-Policy").starts_with("default-src 'self'"));
    CHECK(header(r, "X-Content-Type-Options") == "nosniff");
  }
  CHECK(call("GET", "/dashboard").content_type == "text/html; charset=utf-8");
  CHECK(call("GET", "/dashboard/app.js").content_type == "text/javascript; charset=utf-8");
  const HttpResponse missing = call("GET", "/dashboard/secrets.txt");
  CHECK(missing.status == 404);
  CHECK(error_message(missing) == "no dashboard file \"secrets.txt\"");
  CHECK(call("GET", "/dashboard/..%2fapi.cpp").status == 404);
}

TEST_CASE_FIXTURE(DashboardFixture, "server.dashboard_sign_in_sets_an_http_only_cookie_that_authenticates_like_the_key") {
  const std::string key = new_product();
  add_user(key, "alice");
  const HttpResponse r = call("POST", "/api/v1/dashboard/session", "{\"api_key\":\"" + key + "\"}");
  REQUIRE(r.status == 201);
  const std::string set_cookie = header(r, "Set-Cookie");
  CHECK(set_cookie.find("HttpOnly") != std::string::npos);
  CHECK(set_cookie.find("SameSite=Strict") != std::string::npos);
  CHECK(set_cookie.find("Max-Age=28800") != std::string::npos);  // 8 hours
  CHECK(r.body.find(key) == std::string::npos);                   // the key is not echoed
  const std::string cookie = set_cookie.substr(0, set_cookie.find(';'));

  // The cookie reaches the product's routes as its key does.
  CHECK(with_cookie("GET", "/api/v1/users/alice/usage", cookie).body == call("GET", "/api/v1/users/alice/usage", {}, key).body);
  const HttpResponse session = with_cookie("GET", "/api/v1/dashboard/session", "other=1; " + cookie);
  CHECK(session.status == 200);
  CHECK(session.body.find("\"expires_at\":\"2026-11-17T20:00:00Z\"") != std::string::npos);

  // A wrong key, no key, a bad lifetime, and a cookie of another shape are refused.
  CHECK(error_message(call("POST", "/api/v1/dashboard/session", R"({"api_key":"pg_live_nope"})")) == "invalid API key");
  CHECK(call("POST", "/api/v1/dashboard/session", "{}").status == 400);
  CHECK(error_message(call("POST", "/api/v1/dashboard/session", "{\"api_key\":\"" + key + "\",\"ttl_seconds\":86401}")) ==
        "ttl_seconds: must be 1 to 86400");
  CHECK(with_cookie("GET", "/api/v1/users/alice/usage", "paygent_session=pgs_0000").status == 401);
  CHECK(with_cookie("GET", "/api/v1/users/alice/usage", "theme=dark").status == 401);
  CHECK(set_cookie.find("Secure") == std::string::npos);  // plain HTTP on loopback works by default

  // Behind a TLS proxy (paygentd --secure-cookies yes) the cookie travels over HTTPS only.
  api = std::make_unique<Api>(*storage, metrics, ApiOptions{.secure_cookies = true, .clock = [this] { return now; }});
  const HttpResponse secure = call("POST", "/api/v1/dashboard/session", "{\"api_key\":\"" + key + "\"}");
  CHECK(header(secure, "Set-Cookie").ends_with("; Secure"));
}

TEST_CASE_FIXTURE(DashboardFixture, "server.dashboard_session_expires_and_signs_out") {
  const std::string key = new_product();
  add_user(key, "alice");
  const std::string cookie = sign_in(key, ",\"ttl_seconds\":60");
  CHECK(with_cookie("GET", "/api/v1/users/alice/usage", cookie).status == 200);
  now += absl::Seconds(60);
  const HttpResponse expired = with_cookie("GET", "/api/v1/users/alice/usage", cookie);
  CHECK(expired.status == 401);
  CHECK(error_message(expired) == "the dashboard session has expired or was signed out: sign in again");

  const std::string again = sign_in(key);
  const HttpResponse out = with_cookie("DELETE", "/api/v1/dashboard/session", again);
  CHECK(out.status == 200);
  CHECK(header(out, "Set-Cookie").find("Max-Age=0") != std::string::npos);
  CHECK(with_cookie("GET", "/api/v1/users/alice/usage", again).status == 401);
}

TEST_CASE_FIXTURE(DashboardFixture, "server.dashboard_session_reaches_only_its_own_product") {
  const std::string acme = new_product("acme");
  const std::string globex = new_product("globex");
  add_user(globex, "bob");
  const std::string cookie = sign_in(acme);
  CHECK(with_cookie("GET", "/api/v1/users/bob/usage", cookie).status == 404);  // acme has no bob
  CHECK(call("GET", "/api/v1/users/bob/usage", {}, globex).status == 200);
}

TEST_CASE_FIXTURE(DashboardFixture, "server.portal_token_sees_one_customer_and_nothing_else") {
  const std::string key = new_product();
  add_user(key, "alice");
  add_user(key, "bob");
  const HttpResponse minted = call("POST", "/api/v1/customers/alice/portal-tokens", R"({"ttl_seconds": 600})", key);
  REQUIRE_MESSAGE(minted.status == 201, minted.body);
  const std::string token = paygent::testing::json_string_member(minted.body, "token");
  CHECK(token.starts_with("pgc_"));
  CHECK(paygent::testing::json_string_member(minted.body, "portal_path") == "/portal#token=" + token);

  const HttpResponse usage = call("GET", "/api/v1/portal/usage", {}, token);
  CHECK(usage.status == 200);
  CHECK(usage.body == call("GET", "/api/v1/users/alice/usage", {}, key).body);
  CHECK(call("GET", "/api/v1/portal/invoice?period=2026-11", {}, token).status == 200);
  // No product route, no other customer: a portal token is not an API key.
  CHECK(call("GET", "/api/v1/users/bob/usage", {}, token).status == 401);
  CHECK(call("GET", "/api/v1/customers/bob/invoice", {}, token).status == 401);
  CHECK(call("POST", "/api/v1/customers/bob/portal-tokens", "{}", token).status == 401);
  CHECK(with_cookie("GET", "/api/v1/users/alice/usage", "paygent_session=" + token).status == 401);
  // Nor is an operator's session or an API key a portal token.
  CHECK(call("GET", "/api/v1/portal/usage", {}, key).status == 401);
  CHECK(with_cookie("GET", "/api/v1/portal/usage", sign_in(key)).status == 401);

  now += absl::Seconds(600);
  const HttpResponse late = call("GET", "/api/v1/portal/usage", {}, token);
  CHECK(late.status == 401);
  CHECK(error_message(late) == "the portal token has expired or is not known: ask the application for a new link");
  // Only for a customer the product has; 15 minutes unless asked; at most a day.
  CHECK(call("POST", "/api/v1/customers/nobody/portal-tokens", "{}", key).status == 404);
  const HttpResponse fifteen = call("POST", "/api/v1/customers/bob/portal-tokens", "{}", key);
  CHECK(paygent::testing::json_string_member(fifteen.body, "expires_at") == "2026-11-17T12:25:00Z");
  CHECK(call("POST", "/api/v1/customers/bob/portal-tokens", R"({"ttl_seconds": 0})", key).status == 400);
}

TEST_CASE_FIXTURE(DashboardFixture, "server.dashboard_hostile_input_is_refused_by_name_and_stores_nothing") {
  const std::string acme = new_product("acme");
  const std::string globex = new_product("globex");
  add_user(globex, "bob");
  // Bodies: not JSON, not an object, wrong types, numbers out of range, a key over the text bound.
  for (const std::string& body : {std::string("{"), std::string("[]"), std::string("null"), std::string(R"({"api_key": 5})"),
                                 std::string(R"({"api_key": "k", "ttl_seconds": -1})"),
                                 std::string(R"({"api_key": "k", "ttl_seconds": 1.5})"),
                                 std::string(R"({"api_key": "k", "ttl_seconds": 99999999999999999999})"),
                                 std::string(R"({"api_key": "k", "ttl_seconds": "60"})"),
                                 std::string(R"({"api_key": "k", "api_key": "k"})"), std::string(R"({"api_key": "k", "extra": 1})"),
                                 "{\"api_key\": \"" + std::string(100'000, 'a') + "\"}"}) {
    const HttpResponse r = call("POST", "/api/v1/dashboard/session", body);
    CHECK_MESSAGE(r.status == 400, body.substr(0, 80));
    CHECK(header(r, "Set-Cookie").empty());
  }
  CHECK(call("POST", "/api/v1/dashboard/session", "{\"api_key\":\"" + acme + "\"}", {}, "text/plain").status == 415);
  // Cookie headers: huge, empty pairs, the name repeated, bytes that are no token; none is a session.
  for (const std::string& cookie : {std::string(100'000, ';'), std::string("paygent_session="), std::string("paygent_session"),
                                   std::string("paygent_session=pgs_\xff\xfe; paygent_session=pgs_"),
                                   "paygent_session=pgs_" + std::string(64, 'z'), "paygent_session=" + std::string(50'000, 'x')}) {
    CHECK(with_cookie("GET", "/api/v1/users/bob/usage", cookie).status == 401);
  }
  // Another tenant's customer: acme cannot mint a portal token for globex's bob.
  CHECK(call("POST", "/api/v1/customers/bob/portal-tokens", "{}", acme).status == 404);
  // Authorization shapes the portal must refuse.
  for (const std::string& auth : {std::string("Bearer"), std::string("Bearer pgc_"), std::string("bearer pgc_x"),
                                 "Bearer pgc_" + std::string(64, '0'), "Bearer pgc_" + std::string(10'000, '0')}) {
    HttpRequest request{.method = "GET", .target = "/api/v1/portal/usage", .authorization = auth};
    CHECK(api->handle_request(request).status == 401);
  }
  CHECK(call("GET", "/dashboard/%2e%2e%2fserver%2fapi.cpp").status == 404);
  CHECK(call("GET", "/dashboard/%ff").status == 400);
  CHECK(table_counts(db_path).events == 0);
}

TEST_CASE("server.dashboard_sessions_are_bounded_per_product_and_kind_without_ending_live_ones") {
  for_each_backend([](StorageBackend& backend) {
    auto storage = backend.fresh();
    REQUIRE(storage->create_product("p1", "one", std::string(64, '1')).ok());
    REQUIRE(storage->create_product("p2", "two", std::string(64, '2')).ok());
    DashboardSessions sessions(*storage, 3);
    const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
    std::string first;
    for (int i = 0; i < 3; ++i) {
      absl::StatusOr<std::string> t = sessions.create(SessionGrant{.product_id = "p1", .expires = now + absl::Seconds(10)}, now);
      REQUIRE(t.ok());
      if (i == 0) first = *t;
    }
    absl::StatusOr<std::string> over = sessions.create(SessionGrant{.product_id = "p1", .expires = now + absl::Hours(1)}, now);
    CHECK(absl::IsResourceExhausted(over.status()));
    CHECK(std::string(over.status().message()) == "this product has 3 live dashboard sessions; sign some out or wait for them to expire");
    // Portal tokens have their own quota; another product is not affected; the live ones hold.
    CHECK(sessions.create(SessionGrant{.product_id = "p1", .customer_id = "c1", .expires = now + absl::Hours(1)}, now).ok());
    CHECK(sessions.create(SessionGrant{.product_id = "p2", .expires = now + absl::Hours(1)}, now).ok());
    CHECK(sessions.find(first, now)->has_value());
    // Once they expire, they make room, and are no longer found.
    const absl::Time later = now + absl::Seconds(10);
    CHECK(sessions.create(SessionGrant{.product_id = "p1", .expires = later + absl::Hours(1)}, later).ok());
    CHECK_FALSE(sessions.find(first, later)->has_value());
    CHECK_FALSE(sessions.find("pgs_not-a-token", now)->has_value());
    CHECK_FALSE(sessions.find("pg_live_abc", now)->has_value());
    CHECK(absl::IsNotFound(sessions.create(SessionGrant{.product_id = "nope", .expires = later}, now).status()));
  });
}

TEST_CASE("server.dashboard_sessions_hold_on_every_replica_and_sign_out_everywhere") {
  for_each_backend([](StorageBackend& backend) {
    auto one = backend.fresh();
    REQUIRE(one->create_product("p1", "one", std::string(64, '1')).ok());
    auto two = backend.again();  // another paygentd on the same database (or the same one restarted)
    DashboardSessions a(*one), b(*two);
    const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
    absl::StatusOr<std::string> token =
        a.create(SessionGrant{.product_id = "p1", .customer_id = "alice", .expires = now + absl::Minutes(15)}, now);
    REQUIRE(token.ok());
    absl::StatusOr<std::optional<SessionGrant>> there = b.find(*token, now);
    REQUIRE(there.ok());
    REQUIRE(there->has_value());
    CHECK((*there)->product_id == "p1");
    CHECK((*there)->customer_id == "alice");
    CHECK((*there)->expires == now + absl::Minutes(15));
    // The operator's prefix on a portal token's digits is no session.
    CHECK_FALSE(b.find("pgs_" + token->substr(4), now)->has_value());
    REQUIRE(b.revoke(*token).ok());
    CHECK_FALSE(a.find(*token, now)->has_value());
  });
}

}  // namespace
}  // namespace paygent::server::test
