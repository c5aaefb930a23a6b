// paygentd's route table (server/api.cpp): every endpoint is one Route — method, path pattern
// with parameters, auth, body policy, handler — and the pattern is also the endpoint's metrics
// label (paygentd_http_requests_total{path=...}), so the label set stays the table's.
//
// A pattern is a path whose segments are literal or a parameter "{name}" that matches one
// non-empty segment ("/api/v1/users/{id}/usage"). A pattern has at most one parameter (all routes
// need so far); find_route() percent-decodes it.
//
// Thread safety: the table is constant data; find_route() is a pure function.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paygent::server {

// Who may call a route.
enum class RouteAuth : std::uint8_t {
  kNone,     // anyone (health, metrics)
  kAdmin,    // the admin token; the handler checks it (product creation)
  kProduct,  // a product's API key: "Authorization: Bearer KEY" or "paygent-api-key: KEY", or an
             // operator's dashboard session cookie (docs/dashboard.md)
  kPortal,   // a customer portal token ("Authorization: Bearer pgc_..."): the handler's parameter
             // is the token's customer, never one the request names
};

// What a route takes as its body, checked after auth and before the handler.
enum class RouteBody : std::uint8_t {
  kNone,  // none read
  kJson,  // application/json, at most ApiOptions::max_body_bytes
};

template <class Handler>
struct Route {
  std::string_view method;
  std::string_view pattern;  // also the metrics label
  RouteAuth auth;
  RouteBody body;
  Handler handler;
  // How errors name the path parameter ("agent id in the path"); routes without one leave it.
  std::string_view param_what = "the path's parameter";
};

namespace route_internal {
// True when `path` matches `pattern`; `param` is then the raw (still percent-encoded) text of
// its parameter, if it has one.
bool matches(std::string_view pattern, std::string_view path, std::string_view& param) noexcept;
// The path parameter decoded: InvalidArgument naming `what` when badly encoded, not UTF-8, over
// kMaxTextBytes, or containing NUL.
absl::StatusOr<std::string> decode_param(std::string_view raw, std::string_view what);
}  // namespace route_internal

// Decodes %XX escapes (and '+' as a space when `plus_is_space`, as in a query string).
// InvalidArgument naming `what` on a bad escape or text that is not UTF-8 once decoded.
absl::StatusOr<std::string> percent_decode(std::string_view text, std::string_view what, bool plus_is_space);

// The parameters of a query string ("a=1&b=x%20y"), percent-decoded ('+' is a space): each must
// be one of `known` and appear once. InvalidArgument naming the parameter otherwise.
absl::StatusOr<std::map<std::string, std::string, std::less<>>> parse_query(std::string_view query,
                                                                         std::span<const std::string_view> known);

// A non-negative int64 written in decimal digits only (a query parameter's value); nullopt
// otherwise, also when it does not fit.
std::optional<std::int64_t> parse_count(std::string_view text) noexcept;

// The query string of a request target ("/path?a=1" -> "a=1"; "" when there is none).
std::string_view query_of(std::string_view target) noexcept;

// The outcome of looking a request up.
template <class Handler>
struct RouteMatch {
  const Route<Handler>* route = nullptr;  // the route of the method and path; nullptr when none
  std::string_view pattern;               // the path's pattern when the path matched any route
  std::string allowed;                    // the methods of that pattern ("GET, POST"), for 405
  std::string param;                      // the decoded path parameter
};

// The route of `method` `path`: NotFound when no pattern matches the path; InvalidArgument when
// the parameter is badly encoded. A path that matches with another method only gives a match
// without `route` (405) with the allowed methods.
template <class Handler>
absl::StatusOr<RouteMatch<Handler>> find_route(std::span<const Route<Handler>> table, std::string_view method,
                                               std::string_view path) {
  RouteMatch<Handler> out;
  std::string_view raw;
  std::string_view what;
  for (const Route<Handler>& r : table) {
    std::string_view param;
    if (!route_internal::matches(r.pattern, path, param)) continue;
    if (out.pattern.empty()) {
      out.pattern = r.pattern;
      raw = param;
      what = r.param_what;
    }
    if (r.pattern != out.pattern) continue;
    if (!out.allowed.empty()) out.allowed += ", ";
    out.allowed += r.method;
    if (r.method == method && out.route == nullptr) out.route = &r;
  }
  if (out.pattern.empty()) return absl::NotFoundError(std::string("no such path: ").append(path));
  if (out.pattern.find('{') != std::string_view::npos) {
    absl::StatusOr<std::string> param = route_internal::decode_param(raw, what);
    if (!param.ok()) return param.status();
    out.param = *std::move(param);
  }
  return out;
}

}  // namespace paygent::server
