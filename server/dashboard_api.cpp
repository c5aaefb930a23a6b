// The dashboard's pages, its sign-in and the customer portal's tokens (docs/dashboard.md).
//
// The pages are static files compiled into paygentd (server/dashboard/, embedded by
// cmake/embed_assets.cmake); everything they show comes from the JSON API, which they call with
// the operator's session cookie (the same routes, the same numbers as with an API key), or, in the
// portal, with a customer's token on the two portal routes.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "server/api.h"
#include "server/dashboard_assets.h"
#include "server/json_body.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;

constexpr std::string_view kSessionCookie = "paygent_session";

// The value of cookie `name` in a Cookie header ("a=1; paygent_session=pgs_..."), or nullopt.
std::optional<std::string_view> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const std::size_t end = header.find(';');
    std::string_view pair = header.substr(0, end);
    header = end == std::string_view::npos ? std::string_view() : header.substr(end + 1);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    if (pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=') {
      return pair.substr(name.size() + 1);
    }
  }
  return std::nullopt;
}

std::string_view content_type_of(std::string_view file) {
  if (file.ends_with(".html")) return "text/html; charset=utf-8";
  if (file.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (file.ends_with(".css")) return "text/css; charset=utf-8";
  if (file.ends_with(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

// A lifetime asked in seconds (`ttl_seconds`, 0 when absent): the default when absent, else it,
// refused above `max`.
absl::StatusOr<absl::Duration> lifetime(std::int64_t seconds, bool present, absl::Duration fallback, absl::Duration max) {
  if (!present) return fallback;
  if (seconds < 1 || absl::Seconds(seconds) > max) {
    return absl::InvalidArgumentError(str_cat("ttl_seconds: must be 1 to ", absl::ToInt64Seconds(max)));
  }
  return absl::Seconds(seconds);
}

}  // namespace

HttpResponse Api::dashboard_page(const Call& call) {
  std::string_view path = call.request.target;
  path = path.substr(0, path.find('?'));
  const std::string_view file = path == "/dashboard" ? std::string_view("index.html")
                                : path == "/portal"  ? std::string_view("portal.html")
                                                     : std::string_view(call.param);
  for (const DashboardAsset& asset : dashboard_assets()) {
    if (asset.name != file) continue;
    HttpResponse response{.status = 200, .content_type = std::string(content_type_of(file)), .body = std::string(asset.bytes)};
    // The pages run only their own scripts and styles, are never framed, and send no Referer (the
    // portal's token is in the URL's fragment, which is never sent, but a link's target is).
    response.headers.emplace_back("Content-Security-Policy",
                                  "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                                  "form-action 'self'");
    response.headers.emplace_back("X-Content-Type-Options", "nosniff");
    response.headers.emplace_back("Referrer-Policy", "no-referrer");
    response.headers.emplace_back("Cache-Control", "no-cache");
    return response;
  }
  return error_response(404, "not_found", str_cat("no dashboard file \"", file, "\""));
}

HttpResponse Api::dashboard_sign_in(const Call& call) {
  std::string api_key;
  std::int64_t ttl_seconds = 0;
  bool ttl_present = false;
  const BodyField fields[] = {
      {.names = {"apiKey"}, .type = BodyType::kText, .required = true, .text = &api_key, .non_empty = true},
      {.names = {"ttlSeconds"}, .type = BodyType::kCount, .count = &ttl_seconds, .present = &ttl_present},
  };
  if (absl::Status s = read_json_body(call.request.body, fields); !s.ok()) return error_response(s);
  absl::StatusOr<absl::Duration> ttl = lifetime(ttl_seconds, ttl_present, kOperatorSessionDefault, kOperatorSessionMax);
  if (!ttl.ok()) return error_response(ttl.status());
  HttpRequest by_key;
  by_key.authorization = "Bearer " + api_key;
  absl::StatusOr<std::string> product = authenticate(by_key);
  if (!product.ok()) return error_response(product.status());
  const absl::Time now = options_.clock();
  const absl::Time expires = now + *ttl;
  absl::StatusOr<std::string> token = sessions_.create(SessionGrant{.product_id = *product, .expires = expires}, now);
  if (!token.ok()) return error_response(token.status());
  HttpResponse response{.status = 201,
                        .body = str_cat("{\"product_id\":", json_quote(*product), ",\"expires_at\":",
                                        json_quote(rfc3339_utc(absl::ToUnixNanos(expires))), "}")};
  // HttpOnly: the page's scripts never hold it. SameSite=Strict: no other site's page sends it.
  response.headers.emplace_back("Set-Cookie", str_cat(kSessionCookie, "=", *token, "; Path=/; HttpOnly; SameSite=Strict; Max-Age=",
                                                      absl::ToInt64Seconds(*ttl), options_.secure_cookies ? "; Secure" : ""));
  return response;
}

HttpResponse Api::dashboard_session(const Call& call) {
  std::string expires = "null";
  if (std::optional<absl::StatusOr<SessionGrant>> session = session_of_cookie(call.request);
      session && session->ok() && call.request.authorization.empty() && call.request.api_key.empty()) {
    expires = json_quote(rfc3339_utc(absl::ToUnixNanos((*session)->expires)));
  }
  return HttpResponse{.status = 200,
                      .body = str_cat("{\"product_id\":", json_quote(call.product_id), ",\"expires_at\":", expires, "}")};
}

HttpResponse Api::dashboard_sign_out(const Call& call) {
  if (std::optional<std::string_view> token = cookie_value(call.request.cookie, kSessionCookie)) {
    if (absl::Status s = sessions_.revoke(*token); !s.ok()) return error_response(s);
  }
  HttpResponse response{.status = 200, .body = R"({"signed_out":true})"};
  response.headers.emplace_back("Set-Cookie", str_cat(kSessionCookie, "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
                                                      options_.secure_cookies ? "; Secure" : ""));
  return response;
}

HttpResponse Api::create_portal_token(const Call& call) {
  std::int64_t ttl_seconds = 0;
  bool ttl_present = false;
  const BodyField fields[] = {
      {.names = {"ttlSeconds"}, .type = BodyType::kCount, .count = &ttl_seconds, .present = &ttl_present},
  };
  if (absl::Status s = read_json_body(call.request.body, fields); !s.ok()) return error_response(s);
  absl::StatusOr<absl::Duration> ttl = lifetime(ttl_seconds, ttl_present, kPortalTokenDefault, kPortalTokenMax);
  if (!ttl.ok()) return error_response(ttl.status());
  absl::StatusOr<UserRecord> user = storage_.find_user(call.product_id, call.param);
  if (!user.ok()) return error_response(user.status());
  const absl::Time now = options_.clock();
  const absl::Time expires = now + *ttl;
  absl::StatusOr<std::string> token = sessions_.create(
      SessionGrant{.product_id = call.product_id, .customer_id = call.param, .expires = expires}, now);
  if (!token.ok()) return error_response(token.status());
  return HttpResponse{.status = 201,
                      .body = str_cat("{\"token\":", json_quote(*token), ",\"customer_id\":", json_quote(call.param),
                                      ",\"expires_at\":", json_quote(rfc3339_utc(absl::ToUnixNanos(expires))),
                                      ",\"portal_path\":", json_quote(str_cat("/portal#token=", *token)), "}")};
}

absl::StatusOr<SessionGrant> Api::authenticate_portal(const HttpRequest& request) {
  std::string_view header = request.authorization;
  constexpr std::string_view kBearer = "Bearer ";
  if (!header.starts_with(kBearer) || !header.substr(kBearer.size()).starts_with(DashboardSessions::kPortalPrefix)) {
    return absl::UnauthenticatedError("the portal needs a customer's portal token: \"Authorization: Bearer pgc_...\"");
  }
  absl::StatusOr<std::optional<SessionGrant>> grant = sessions_.find(header.substr(kBearer.size()), options_.clock());
  if (!grant.ok()) return grant.status();
  if (!*grant || !(*grant)->is_portal()) {
    return absl::UnauthenticatedError("the portal token has expired or is not known: ask the application for a new link");
  }
  return **std::move(grant);
}

std::optional<absl::StatusOr<SessionGrant>> Api::session_of_cookie(const HttpRequest& request) {
  std::optional<std::string_view> token = cookie_value(request.cookie, kSessionCookie);
  if (!token) return std::nullopt;
  absl::StatusOr<std::optional<SessionGrant>> grant = sessions_.find(*token, options_.clock());
  if (!grant.ok()) return grant.status();
  if (!*grant || (*grant)->is_portal()) {
    return absl::UnauthenticatedError("the dashboard session has expired or was signed out: sign in again");
  }
  return **std::move(grant);
}

}  // namespace paygent::server
