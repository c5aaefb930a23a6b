// The background syncer (see sync/syncer.h). The only translation unit of the library that uses
// Boost.Asio/Beast.
// Boost 1.74's awaitable frames pair their own operator new/delete; GCC 12 misreports them.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <utility>  // before Boost.Asio: Boost 1.74's awaitable.hpp needs std::exchange (GCC 12)

#include "sync/syncer.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <simdjson.h>

#include "meter/internal/json_text.h"
#include "meter/internal/str_cat.h"

namespace paygent::internal {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

std::string percent_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

namespace {

constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::seconds(30);
// Most soft gates sent with one batch, and read from one usage object (paygentd sends at most 100).
constexpr std::size_t kMaxBatchSoftGates = 1000;


// Reads one user's usage object ({"period_start_ns":..,"period_end_ns":..,"spend_nanos":..,
// "models":{"m":{"input_tokens":..,"output_tokens":..}}}). False when its shape is wrong.
bool read_usage(simdjson::dom::element obj, std::string user_id, BackendUsage& out) {
  out = BackendUsage{};
  out.user_id = std::move(user_id);
  if (obj["period_start_ns"].get_int64().get(out.period_start_ns) != simdjson::SUCCESS) return false;
  if (obj["period_end_ns"].get_int64().get(out.period_end_ns) != simdjson::SUCCESS) return false;
  if (obj["spend_nanos"].get_int64().get(out.spend_nanos) != simdjson::SUCCESS) return false;
  simdjson::dom::object sub;
  if (obj["subscription"].get_object().get(sub) == simdjson::SUCCESS) {
    BackendUsage::Subscription s;
    std::string_view plan;
    if (sub["plan"].get_string().get(plan) != simdjson::SUCCESS || plan.empty()) return false;
    if (sub["period_start_ns"].get_int64().get(s.period_start_ns) != simdjson::SUCCESS) return false;
    if (sub["period_end_ns"].get_int64().get(s.period_end_ns) != simdjson::SUCCESS) return false;
    if (s.period_end_ns <= s.period_start_ns) return false;
    s.plan = std::string(plan);
    out.subscription = std::move(s);
  }
  simdjson::dom::object models;
  if (obj["models"].get_object().get(models) == simdjson::SUCCESS) {
    for (auto [name, m] : models) {
      BackendUsage::Model totals;
      if (m["input_tokens"].get_int64().get(totals.input_tokens) != simdjson::SUCCESS) return false;
      if (m["output_tokens"].get_int64().get(totals.output_tokens) != simdjson::SUCCESS) return false;
      if (m["cost_nanos"].get_int64().get(totals.cost) != simdjson::SUCCESS) totals.cost = 0;
      if (m["calls"].get_int64().get(totals.calls) != simdjson::SUCCESS) totals.calls = -1;
      out.models[std::string(name.data(), name.size())] = totals;
    }
  }
  // The customer's credit wallet: a wallet of another shape is left out (the rest stands).
  simdjson::dom::object wallet;
  if (obj["wallet"].get_object().get(wallet) == simdjson::SUCCESS) {
    BackendUsage::Wallet w;
    if (wallet["granted_nanocredits"].get_int64().get(w.granted_nanocredits) == simdjson::SUCCESS &&
        wallet["charged_nanocredits"].get_int64().get(w.charged_nanocredits) == simdjson::SUCCESS &&
        w.granted_nanocredits >= 0 && w.charged_nanocredits >= 0) {
      out.wallet = w;
    }
  }
  // Wire version 3: the thresholds fired this period. An entry of another shape is skipped (the
  // rest of the usage stands).
  simdjson::dom::array gates;
  if (obj["soft_gates"].get_array().get(gates) == simdjson::SUCCESS) {
    for (simdjson::dom::element g : gates) {
      if (out.soft_gates.size() >= kMaxBatchSoftGates) break;
      FiredThreshold f;
      std::string_view limit;
      if (g["limit"].get_string().get(limit) != simdjson::SUCCESS || limit.empty() ||
          g["period_start_ns"].get_int64().get(f.period_start_ns) != simdjson::SUCCESS ||
          g["threshold_ppm"].get_int64().get(f.threshold_ppm) != simdjson::SUCCESS) {
        continue;
      }
      f.user_id = out.user_id;
      f.limit_key = std::string(limit);
      out.soft_gates.push_back(std::move(f));
    }
  }
  return true;
}

struct Response {
  unsigned status = 0;
  std::string body;
  int wire_version = 1;  // the Paygent-Wire-Version header; 1 when absent (a paygentd before versions)
};

// The version a reply's Paygent-Wire-Version header says; 1 when absent or unreadable.
int wire_version_of(const http::response<http::string_body>& res) {
  const auto it = res.find(beast::string_view(kWireVersionHeader.data(), kWireVersionHeader.size()));
  if (it == res.end()) return 1;
  int version = 0;
  for (char c : it->value()) {
    if (c < '0' || c > '9' || version > 1'000'000) return 1;
    version = version * 10 + (c - '0');
  }
  return version >= 1 ? version : 1;
}

}  // namespace

struct Syncer::Impl {
  Impl(SyncOptions o, LocalStore* s, SyncTarget* t, std::string h, std::string p)
      : options(std::move(o)), store(s), target(t), host(std::move(h)), port(std::move(p)),
        timer(ioc), stream(ioc), rng(std::random_device{}()) {}

  // --- HTTP ---
  net::awaitable<std::optional<Response>> request(http::verb verb, std::string target_path, std::string body) {
    beast::error_code ec;
    const auto timeout = request_budget();
    for (int attempt = 0; attempt < 2; ++attempt) {  // a kept-alive connection may have been closed
      if (!connected) {
        tcp::resolver resolver(ioc);
        auto results = co_await resolver.async_resolve(host, port, net::redirect_error(net::use_awaitable, ec));
        if (ec) {
          last_error = str_cat("resolve ", host, ": ", ec.message());
          co_return std::nullopt;
        }
        stream.expires_after(timeout);
        co_await stream.async_connect(results, net::redirect_error(net::use_awaitable, ec));
        if (ec) {
          last_error = str_cat("connect ", host, ":", port, ": ", ec.message());
          stream.close();
          co_return std::nullopt;
        }
        connected = true;
      }
      http::request<http::string_body> req{verb, target_path, 11};
      req.set(http::field::host, host);
      req.set(http::field::authorization, "Bearer " + options.api_key);
      req.set(http::field::user_agent, "paygent-cpp/0.1");
      req.keep_alive(true);
      if (!body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = body;
        req.prepare_payload();
      }
      stream.expires_after(timeout);
      co_await http::async_write(stream, req, net::redirect_error(net::use_awaitable, ec));
      if (!ec) {
        http::response_parser<http::string_body> parser;
        parser.body_limit(64 * 1024 * 1024);
        buffer.clear();
        co_await http::async_read(stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
        if (!ec) {
          auto res = parser.release();
          if (!res.keep_alive()) disconnect();
          const int version = wire_version_of(res);
          take_backend_version(version);
          co_return Response{res.result_int(), std::move(res.body()), version};
        }
      }
      const auto verb_name = http::to_string(verb);
      last_error = str_cat(std::string(verb_name.data(), verb_name.size()), " ", target_path, ": ", ec.message());
      disconnect();
      if (attempt == 0 && (ec == http::error::end_of_stream || ec == net::error::connection_reset ||
                           ec == net::error::broken_pipe || ec == net::error::eof)) {
        continue;
      }
      co_return std::nullopt;
    }
    co_return std::nullopt;
  }

  void disconnect() {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
    connected = false;
  }

  // --- Versions (docs/wire.md, "Versions") ---

  // Every reply says the backend's wire version. When it is newer than what this syncer last
  // heard, the events held for a newer backend are put back in the queue.
  void take_backend_version(int version) {
    if (version == backend_version) return;
    const bool newer = version > backend_version;
    backend_version = version;
    held_reported = false;
    if (newer && version > 1) release_held();
    if (newer) customers_unsupported = false;  // an upgraded backend may know customers now
  }

  void release_held() {
    auto released = store->release_held();
    if (!released.ok()) {
      target->sync_error(released.status());
      return;
    }
    holding = false;
  }

  // Sets aside (kHeld) the events of `batch` that the backend's version cannot carry; they stay
  // in the store, counted locally, until a reply says the backend is new enough.
  bool hold_what_the_backend_cannot_read(std::vector<EventRecord>& batch) {
    if (backend_version >= kWireVersion) return true;
    std::vector<std::string> held;
    std::erase_if(batch, [&](EventRecord& e) {
      if (wire_version_needed(e, backend_version) <= backend_version) return false;
      held.push_back(std::move(e.id));
      return true;
    });
    if (held.empty()) return true;
    if (absl::Status s = store->mark_acked(held, LocalStore::kHeld); !s.ok()) {
      target->sync_error(s);
      return false;
    }
    holding = true;
    if (!held_reported) {
      held_reported = true;
      target->sync_error(absl::FailedPreconditionError(str_cat(
          "the backend speaks wire version ", backend_version, ", older than this library's ", kWireVersion, ": ",
          held.size(), " events that need a newer version are kept in the local store and sent once the backend "
          "is upgraded")));
    }
    return true;
  }

  // --- Customers (create_or_get_customer: docs/tracking.md) ---

  // Delivers the customers not yet delivered, one POST /api/v1/customers/create-or-get each (the
  // backend creates once, so a retry is harmless). False when the backend could not be reached or
  // failed (retried with the events' backoff). A backend without the endpoint (404, older) keeps
  // them in the store: said once, retried after an upgrade (a newer wire version) or a refresh round.
  net::awaitable<bool> deliver_customers() {
    if (customers_unsupported) co_return true;
    auto rows = store->customers(LocalStore::kUnacked, 100);
    if (!rows.ok()) {
      target->sync_error(rows.status());
      co_return false;
    }
    for (const StoredCustomer& c : *rows) {
      std::string body = str_cat("{\"externalId\":", json_quote(c.external_id), ",\"name\":", json_quote(c.name));
      if (!c.email.empty()) str_append(&body, ",\"email\":", json_quote(c.email));
      body += "}";
      auto res = co_await request(http::verb::post, "/api/v1/customers/create-or-get", std::move(body));
      if (!res) {
        fail(absl::UnavailableError(str_cat("backend unreachable: ", last_error)));
        co_return false;
      }
      int state = LocalStore::kAcked;
      if (res->status == 404) {
        customers_unsupported = true;
        if (!customers_404_reported) {
          customers_404_reported = true;
          target->sync_error(absl::FailedPreconditionError(
              "the backend has no POST /api/v1/customers/create-or-get (an older paygentd): customers are kept in "
              "the local store and sent once it is upgraded (said once)"));
        }
        co_return true;
      }
      if (res->status >= 500 || res->status == 429) co_return false;
      if (res->status != 200) {
        state = LocalStore::kRejected;
        target->sync_error(absl::InvalidArgumentError(str_cat("the backend refused customer \"", c.external_id,
                                                              "\" (HTTP ", res->status, "): ", res->body)));
      }
      if (absl::Status s = store->mark_customer(c.external_id, state); !s.ok()) {
        target->sync_error(s);
        co_return false;
      }
    }
    co_return true;
  }

  // --- Delivery ---

  // Sends one batch. Returns 1 when a batch was delivered, 0 when there was nothing to send, -1 on
  // failure (the events stay in the store).
  //
  // With `with_soft_gates`, the soft gates not yet sent ride along (see syncer.h), when the
  // backend is known to read them; a batch of only soft gates is sent when there are no events.
  net::awaitable<int> deliver_one_batch(std::size_t limit = 0, bool with_soft_gates = true) {
    auto batch = store->unacked(limit == 0 ? options.batch_size : limit);
    if (!batch.ok()) {
      target->sync_error(batch.status());
      co_return -1;
    }
    const bool had_events = !batch->empty();
    if (!hold_what_the_backend_cannot_read(*batch)) co_return -1;
    if (had_events && batch->empty()) co_return 1;  // all held: the next batch may be deliverable
    std::vector<FiredThreshold> gates;
    if (with_soft_gates && backend_version >= kSoftGatesWireVersion) {
      auto unsent = store->unsent_fired(kMaxBatchSoftGates, backend_version >= kHardGatesWireVersion);
      if (unsent.ok()) {
        gates = *std::move(unsent);
      } else {
        target->sync_error(unsent.status());  // the events go without them
      }
    }
    if (batch->empty() && gates.empty()) co_return 0;
    int batch_version = gates.empty() ? 1 : kSoftGatesWireVersion;
    for (const FiredThreshold& g : gates) {
      if (g.hard) batch_version = std::max(batch_version, kHardGatesWireVersion);
    }
    // Written for the backend's version: an informational field it cannot read is left out.
    for (const EventRecord& e : *batch) {
      batch_version = std::max(batch_version, wire_version_needed(e, backend_version));
    }
    auto res = co_await request(http::verb::post, "/api/v1/events:batch",
                                encode_event_batch(*batch, gates, backend_version));
    if (!res) {
      fail(absl::UnavailableError(str_cat("backend unreachable: ", last_error)));
      co_return -1;
    }
    if ((res->status == 400 || res->status == 413 || res->status == 422) && res->wire_version < batch_version) {
      // Refused by a backend older than the batch: the refusal may be the version skew (a field it
      // does not know), so it is not final. backend_version is now known; the next pass holds the
      // events it cannot read and sends the rest.
      healthy.store(true);
      co_return 1;
    }
    if ((res->status == 400 || res->status == 413 || res->status == 422) && !gates.empty()) {
      // Refused by a backend at least as new as the batch: the soft gates go alone (set aside if
      // refused too), then the events without them.
      healthy.store(true);
      if (co_await deliver_soft_gates_alone(std::move(gates)) < 0) co_return -1;
      if (batch->empty()) co_return 1;
      co_return co_await deliver_one_batch(limit, /*with_soft_gates=*/false);
    }
    if (res->status == 400 || res->status == 413 || res->status == 422) {
      // The backend refuses the content, so retrying the same batch can never succeed. Find the
      // refused events one by one, set them aside (reported, counted) and deliver the rest.
      healthy.store(true);
      if (batch->size() > 1) {
        for (std::size_t i = 0; i < batch->size(); ++i) {
          if (co_await deliver_one_batch(1, /*with_soft_gates=*/false) < 0) co_return -1;
        }
        co_return 1;
      }
      // Refused by a backend at least as new as the event: final.
      if (absl::Status s = store->mark_acked({batch->front().id}, LocalStore::kRejected); !s.ok()) {
        target->sync_error(s);
        co_return -1;
      }
      target->events_rejected(1, str_cat("the backend refused event ", batch->front().id, " (HTTP ",
                                         static_cast<int>(res->status), " ", res->body.substr(0, 300),
                                         "); it is kept in the local store, marked rejected, and not sent again"));
      co_return 1;
    }
    if (res->status != 200) {
      fail(absl::UnavailableError(str_cat("backend refused a batch of ", batch->size(), " events and ", gates.size(),
                                          " soft gates: HTTP ",
                                          static_cast<int>(res->status), " ", res->body.substr(0, 300))));
      co_return -1;
    }
    simdjson::dom::element reply;
    std::int64_t accepted = 0, duplicates = 0;
    if (parser.parse(res->body).get(reply) != simdjson::SUCCESS ||
        reply["accepted"].get_int64().get(accepted) != simdjson::SUCCESS ||
        reply["duplicates"].get_int64().get(duplicates) != simdjson::SUCCESS ||
        accepted + duplicates != static_cast<std::int64_t>(batch->size())) {
      fail(absl::UnavailableError(str_cat("backend answered a batch with an unreadable reply: ",
                                          res->body.substr(0, 300))));
      co_return -1;
    }
    std::vector<std::string> ids;
    ids.reserve(batch->size());
    for (auto& e : *batch) ids.push_back(std::move(e.id));
    if (!ids.empty()) {
      if (absl::Status s = store->mark_acked(ids); !s.ok()) {
        target->sync_error(s);  // delivered again later; the backend counts it once
        co_return -1;
      }
    }
    // Stored by a backend that reads them; one older ignored them: they stay unsent and wait for
    // an upgrade (backend_version is now below kSoftGatesWireVersion, so they are not resent).
    if (!gates.empty() && res->wire_version >= kSoftGatesWireVersion) {
      keep_what_the_backend_ignored(gates, res->wire_version);
      if (absl::Status s = store->mark_fired_sent(gates); !s.ok()) target->sync_error(s);  // sent again; idempotent
    }
    delivered_count.fetch_add(static_cast<std::int64_t>(ids.size()));
    healthy.store(true);
    backoff = kMinBackoff;
    take_usage_reply(reply);
    co_return 1;
  }

  // A batch of only `gates` after a batch with them was refused by a backend at least as new as
  // it: refused again, they are set aside (marked sent, reported) so that they are not resent
  // forever; this process still never fires them again (they stay in the local store).
  net::awaitable<int> deliver_soft_gates_alone(std::vector<FiredThreshold> gates) {
    auto res = co_await request(http::verb::post, "/api/v1/events:batch",
                                encode_event_batch(std::span<const EventRecord>(), gates));
    if (!res) {
      fail(absl::UnavailableError(str_cat("backend unreachable: ", last_error)));
      co_return -1;
    }
    // Only a backend that reads soft gates can have stored them, or refused them for good.
    if (res->wire_version >= kSoftGatesWireVersion &&
        (res->status == 200 || res->status == 400 || res->status == 413 || res->status == 422)) {
      keep_what_the_backend_ignored(gates, res->wire_version);
      if (absl::Status s = store->mark_fired_sent(gates); !s.ok()) target->sync_error(s);
      if (res->status != 200) {
        target->sync_error(absl::InvalidArgumentError(
            str_cat("the backend refused ", gates.size(), " soft gates (HTTP ", static_cast<int>(res->status), " ",
                    res->body.substr(0, 300), "); they are kept in the local store and not sent again")));
      } else if (simdjson::dom::element reply; parser.parse(res->body).get(reply) == simdjson::SUCCESS) {
        take_usage_reply(reply);
      }
      co_return 1;
    }
    if (res->status == 200 || res->status == 400 || res->status == 413 || res->status == 422) {
      co_return 1;  // an older backend: kept unsent until it is upgraded (backend_version says so)
    }
    fail(absl::UnavailableError(str_cat("backend refused a batch of ", gates.size(), " soft gates: HTTP ",
                                        static_cast<int>(res->status), " ", res->body.substr(0, 300))));
    co_return -1;
  }

  // Leaves out of `gates` the hard gates that a backend of `wire_version` ignored (older than
  // kHardGatesWireVersion): they stay unsent until it is upgraded.
  static void keep_what_the_backend_ignored(std::vector<FiredThreshold>& gates, int wire_version) {
    if (wire_version >= kHardGatesWireVersion) return;
    std::erase_if(gates, [](const FiredThreshold& g) { return g.hard; });
  }

  // Whether a batch of only soft (or hard) gates is due (no events to carry them, see run()).
  bool soft_gates_waiting() {
    if (backend_version < kSoftGatesWireVersion) return false;
    auto unsent = store->unsent_fired(1, backend_version >= kHardGatesWireVersion);
    return unsent.ok() && !unsent->empty();
  }

  // The plans' version and the users' usage a reply carries (ingest, usage query).
  void take_usage_reply(simdjson::dom::element reply) {
    // A changed plans version is re-read at once (run() sees plans_stale).
    std::string_view version;
    if (reply["plans_version"].get_string().get(version) == simdjson::SUCCESS && version != plans_version) {
      latest_plans_version = std::string(version);
      plans_stale = true;
    }
    simdjson::dom::object usage;
    if (reply["usage"].get_object().get(usage) == simdjson::SUCCESS) {
      for (auto [user, obj] : usage) {
        BackendUsage u;
        if (read_usage(obj, std::string(user.data(), user.size()), u)) target->apply_backend_usage(u);
      }
    }
  }

  void fail(absl::Status s) {
    last_error = std::string(s.message());
    const bool was_healthy = healthy.exchange(false);
    failures.fetch_add(1);
    if (was_healthy) target->backend_down(std::move(s));  // said once per outage, not per retry
  }

  net::awaitable<void> enforce_spool_bound() {
    auto dropped = store->drop_oldest_unacked(options.max_spool_events);
    if (!dropped.ok()) {
      target->sync_error(dropped.status());
    } else if (*dropped > 0) {
      target->events_dropped(*dropped);
    }
    co_return;
  }

  net::awaitable<void> refresh_users(std::vector<std::string> users) {
    // Up to 1,000 users per request (POST /usage:query); a backend without it (404): one GET each.
    for (std::size_t at = 0; at < users.size() && usage_query_supported;) {
      const std::size_t n = std::min<std::size_t>(users.size() - at, 1000);
      std::string body = "{\"users\":[";
      for (std::size_t i = 0; i < n; ++i) str_append(&body, i ? "," : "", json_quote(users[at + i]));
      body += "]}";
      auto res = co_await request(http::verb::post, "/api/v1/usage:query", std::move(body));
      if (!res) co_return;  // down: these users are refreshed in a later round
      if (res->status == 404) {
        usage_query_supported = false;
        break;
      }
      simdjson::dom::element reply;
      if (res->status == 200 && parser.parse(res->body).get(reply) == simdjson::SUCCESS) take_usage_reply(reply);
      at += n;
      if (at >= users.size()) co_return;
    }
    for (const std::string& user : users) {
      auto res = co_await request(http::verb::get, str_cat("/api/v1/users/", percent_encode(user), "/usage"), "");
      if (!res || res->status != 200) continue;  // unknown to the backend yet, or down: later
      simdjson::dom::element obj;
      BackendUsage u;
      if (parser.parse(res->body).get(obj) == simdjson::SUCCESS && read_usage(obj, user, u)) {
        target->apply_backend_usage(u);
      }
    }
  }

  net::awaitable<void> refresh_plans() {
    auto res = co_await request(http::verb::get, "/api/v1/config/plans", "");
    if (!res) {
      fail(absl::UnavailableError(str_cat("backend unreachable: ", last_error)));
      co_return;
    }
    if (res->status == 200) {
      healthy.store(true);
      target->apply_backend_plans(res->body);
      // Read: the version the last reply announced is in force (a change since comes with the
      // next reply). Until a read succeeds, plans_stale stays set and the read is retried.
      plans_version = latest_plans_version;
      plans_stale = false;
    }
  }

  // The request timeout, shortened to what is left before a stop's deadline.
  std::chrono::nanoseconds request_budget() {
    auto t = std::chrono::nanoseconds(absl::ToChronoNanoseconds(options.request_timeout));
    std::lock_guard<std::mutex> lock(mu);
    if (stopping) {
      const auto left = stop_deadline - std::chrono::steady_clock::now();
      t = std::max<std::chrono::nanoseconds>(std::min<std::chrono::nanoseconds>(t, left), std::chrono::milliseconds(1));
    }
    return t;
  }

  // While the backend is unhealthy and there is nothing to send, a cheap probe tells when it is
  // back (strict mode's gate opens as soon as it answers).
  net::awaitable<void> probe_health() {
    auto res = co_await request(http::verb::get, "/healthz", "");
    if (res && res->status == 200) {
      healthy.store(true);
      backoff = kMinBackoff;
    }
  }

  net::awaitable<void> run() {
    using clock = std::chrono::steady_clock;
    release_held();  // held by an earlier run for the backend of then: this backend may read them
    auto last_send = clock::now() - std::chrono::hours(1);
    auto last_refresh = last_send;
    auto last_bound_check = last_send;
    auto next_attempt = last_send;  // not before this after a failure (backoff)
    for (;;) {
      std::uint64_t ticket;
      bool stop;
      std::vector<std::string> users;
      {
        std::lock_guard<std::mutex> lock(mu);
        ticket = flush_requested;
        stop = stopping;
        users.assign(watched.begin(), watched.end());
        watched.clear();
      }
      wake_pending.store(false);
      const auto now = clock::now();
      const bool flushing = ticket != flush_done;
      const bool backing_off = now < next_attempt;
      bool ok = true;
      bool attempted = false;
      if (!backing_off && now - last_refresh >= absl::ToChronoNanoseconds(options.refresh_interval)) {
        co_await refresh_plans();
        last_refresh = now;
        target->refresh_round();  // active users get watched again, and refreshed next pass
        customers_unsupported = false;  // asked again once a round: the backend may have been upgraded
      } else if (!backing_off && plans_stale) {
        co_await refresh_plans();
      }
      if (now - last_bound_check >= std::chrono::seconds(1) || stop) {
        co_await enforce_spool_bound();
        last_bound_check = now;
      }
      // A flush or a stop tries at once; otherwise a failure is retried only after its backoff.
      if (flushing || stop || !backing_off) {
        auto pending = store->unacked_count();
        const bool batch_full = pending.ok() && *pending >= static_cast<std::int64_t>(options.batch_size);
        const bool due = now - last_send >= absl::ToChronoNanoseconds(options.flush_interval);
        if (flushing || batch_full || due || stop) {
          attempted = true;
          if (!co_await deliver_customers()) ok = false;
          // Deliver what is there now; events arriving meanwhile wait for the next pass, so that
          // a flush, a stop or a refresh is never starved by steady traffic.
          std::int64_t budget = pending.ok() ? *pending : 0;
          // Soft gates fired with no event to carry them go in a batch of their own.
          if (budget <= 0 && soft_gates_waiting()) budget = 1;
          while (budget > 0) {
            const int r = co_await deliver_one_batch();
            if (r < 0) ok = false;
            if (r <= 0) break;
            budget -= static_cast<std::int64_t>(options.batch_size);
            if (stop && clock::now() >= stop_deadline_copy()) break;
          }
          last_send = clock::now();
          if (ok && !healthy.load() && budget <= 0) co_await probe_health();
        } else if (!healthy.load()) {
          attempted = true;
          co_await probe_health();
          ok = healthy.load();
        }
      }
      if (!users.empty() && ok) co_await refresh_users(std::move(users));
      if (attempted && !ok) {
        std::uniform_real_distribution<double> jitter(0.5, 1.5);
        next_attempt = clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(backoff * jitter(rng));
        backoff = std::min<std::chrono::nanoseconds>(backoff * 2, kMaxBackoff);
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        if (flushing) {
          flush_done = ticket;
          flush_ok = ok && attempted && !holding;
          flush_error = holding ? std::string("events that need a newer backend wait in the local store") : last_error;
          flushed.notify_all();
        }
        // `stop` is this pass's snapshot: a stop requested during the pass gets a pass of its own.
        if (stop && (ok || clock::now() >= stop_deadline)) break;
      }
      // Sleep until the next flush is due, the backoff ends, or a wake-up (unless one came in
      // while this pass ran).
      auto wait = std::chrono::nanoseconds(absl::ToChronoNanoseconds(options.flush_interval));
      if (clock::now() < next_attempt) wait = std::min<std::chrono::nanoseconds>(wait, next_attempt - clock::now());
      if (stop) {
        wait = std::min<std::chrono::nanoseconds>(
            wait, std::max<std::chrono::nanoseconds>(stop_deadline_copy() - clock::now(), std::chrono::milliseconds(1)));
      }
      if (wake_pending.load()) continue;
      timer.expires_after(wait);
      beast::error_code ec;
      co_await timer.async_wait(net::redirect_error(net::use_awaitable, ec));
    }
    disconnect();
  }

  std::chrono::steady_clock::time_point stop_deadline_copy() {
    std::lock_guard<std::mutex> lock(mu);
    return stop_deadline;
  }

  SyncOptions options;
  LocalStore* store;
  SyncTarget* target;
  std::string host, port;

  net::io_context ioc;
  net::steady_timer timer;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bool connected = false;
  std::string last_error;
  simdjson::dom::parser parser;
  std::mt19937_64 rng;
  std::chrono::nanoseconds backoff = kMinBackoff;
  std::thread thread;

  std::atomic<bool> healthy{true};
  // The plans' version (docs/wire.md) in force here, and the newest an ingest reply announced;
  // plans_stale while they differ and the plans have not been read since (I/O thread only).
  std::string plans_version;
  std::string latest_plans_version;
  bool plans_stale = false;
  bool usage_query_supported = true;  // false once the backend answered 404 to POST /usage:query
  bool customers_unsupported = false;   // the backend answered 404 to customers/create-or-get
  bool customers_404_reported = false;  // and that was said (once)
  // The backend's wire version as its last reply said it (I/O thread only). Until a reply says,
  // the backend is taken to be as new as this library; held events wait for a newer one.
  int backend_version = kWireVersion;
  bool held_reported = false;  // the holding of events was reported for this backend_version
  bool holding = false;        // events are held (a flush then fails: not everything was delivered)
  std::atomic<bool> wake_pending{false};  // a wake() that came while no timer was armed
  std::atomic<std::int64_t> delivered_count{0};
  std::atomic<std::int64_t> failures{0};

  std::mutex mu;
  std::condition_variable flushed;
  std::uint64_t flush_requested = 0;  // guarded by mu
  std::uint64_t flush_done = 0;       // guarded by mu
  bool flush_ok = true;               // guarded by mu
  std::string flush_error;            // guarded by mu
  bool stopping = false;              // guarded by mu
  std::chrono::steady_clock::time_point stop_deadline;  // guarded by mu
  std::set<std::string> watched;      // guarded by mu
};

namespace {

// "http://host[:port][/...]" -> {host, port}.
absl::StatusOr<std::pair<std::string, std::string>> parse_base_url(const std::string& base_url) {
  std::string_view url = base_url;
  if (url.rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError(
        str_cat("backend_url: \"", base_url, "\" must start with http:// (TLS is not supported yet)"));
  }
  url.remove_prefix(7);
  if (const auto slash = url.find_first_of("/?#"); slash != std::string_view::npos) {
    // paygentd's paths are absolute (/api/v1/...): a path here would be dropped, silently sending
    // to another place than the one written. Only a lone trailing "/" is the host itself.
    if (url.substr(slash) != "/") {
      return absl::InvalidArgumentError(str_cat("backend_url: \"", base_url, "\" has a path (",
                                                url.substr(slash), "); give http://host[:port], where paygentd serves /api/v1/"));
    }
    url = url.substr(0, slash);
  }
  std::string host(url), port = "80";
  if (const auto colon = url.rfind(':'); colon != std::string_view::npos) {
    host = std::string(url.substr(0, colon));
    port = std::string(url.substr(colon + 1));
  }
  if (host.empty() || port.empty() || !std::all_of(port.begin(), port.end(), ::isdigit)) {
    return absl::InvalidArgumentError(str_cat("backend_url: \"", base_url, "\" is not http://host[:port]"));
  }
  return std::make_pair(host, port);
}

}  // namespace

absl::StatusOr<HttpReply> http_exchange(const std::string& base_url, std::string_view method, std::string target,
                                        std::string_view bearer, std::string body, absl::Duration timeout) {
  auto hp = parse_base_url(base_url);
  if (!hp.ok()) return hp.status();
  net::io_context ioc;
  absl::StatusOr<HttpReply> out = absl::UnavailableError("no reply");
  const http::verb verb = http::string_to_verb(boost::beast::string_view(method.data(), method.size()));
  auto exchange = [&]() -> net::awaitable<void> {
    beast::error_code ec;
    tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    auto results = co_await resolver.async_resolve(hp->first, hp->second, net::redirect_error(net::use_awaitable, ec));
    if (!ec) {
      stream.expires_after(absl::ToChronoNanoseconds(timeout));
      co_await stream.async_connect(results, net::redirect_error(net::use_awaitable, ec));
    }
    if (!ec) {
      http::request<http::string_body> req{verb, target, 11};
      req.set(http::field::host, hp->first);
      if (!bearer.empty()) req.set(http::field::authorization, str_cat("Bearer ", bearer));
      if (verb == http::verb::post) req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
      co_await http::async_write(stream, req, net::redirect_error(net::use_awaitable, ec));
    }
    if (!ec) {
      beast::flat_buffer buf;
      http::response<http::string_body> res;
      co_await http::async_read(stream, buf, res, net::redirect_error(net::use_awaitable, ec));
      if (!ec) out = HttpReply{static_cast<int>(res.result_int()), std::move(res.body())};
    }
    if (ec) out = absl::UnavailableError(str_cat(base_url, target, ": ", ec.message()));
  };
  net::co_spawn(ioc, exchange(), net::detached);
  ioc.run();
  return out;
}

absl::StatusOr<std::unique_ptr<Syncer>> Syncer::start(SyncOptions options, LocalStore* store, SyncTarget* target) {
  auto hp = parse_base_url(options.backend_url);
  if (!hp.ok()) return hp.status();
  auto [host, port] = *std::move(hp);
  auto impl = std::make_unique<Impl>(std::move(options), store, target, std::move(host), std::move(port));
  Impl* p = impl.get();
  net::co_spawn(p->ioc, p->run(), net::detached);
  p->thread = std::thread([p] { p->ioc.run(); });
  return std::unique_ptr<Syncer>(new Syncer(std::move(impl)));
}

Syncer::Syncer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Syncer::~Syncer() {
  if (impl_->thread.joinable()) {
    impl_->ioc.stop();
    impl_->thread.join();
  }
}

void Syncer::wake() noexcept {
  Impl* p = impl_.get();
  p->wake_pending.store(true);
  net::post(p->ioc, [p] { p->timer.cancel(); });
}

void Syncer::watch_user(std::string user_id, bool urgent) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->watched.insert(std::move(user_id));
  }
  if (urgent) wake();
}

absl::Status Syncer::flush(absl::Duration deadline) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  const std::uint64_t ticket = ++impl_->flush_requested;
  lock.unlock();
  wake();
  lock.lock();
  if (!impl_->flushed.wait_for(lock, absl::ToChronoNanoseconds(deadline),
                               [&] { return impl_->flush_done >= ticket; })) {
    return absl::DeadlineExceededError("flush: the backend has not taken every event yet; they stay queued");
  }
  if (!impl_->flush_ok) {
    return absl::UnavailableError(str_cat("flush: the backend did not take every event (", impl_->flush_error,
                                          "); they stay queued"));
  }
  return absl::OkStatus();
}

void Syncer::stop(absl::Duration deadline) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    impl_->stop_deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(deadline);
  }
  wake();
  // The loop ends by itself once delivered or past the deadline; past it (plus one request
  // timeout) we stop it outright.
  const auto hard_stop =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(deadline) + std::chrono::milliseconds(100);
  std::thread waker([this, hard_stop] {
    while (std::chrono::steady_clock::now() < hard_stop && !impl_->ioc.stopped()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    impl_->ioc.stop();
  });
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->ioc.stop();
  waker.join();
}

bool Syncer::backend_healthy() const noexcept { return impl_->healthy.load(); }

std::int64_t Syncer::delivered() const noexcept { return impl_->delivered_count.load(); }

}  // namespace paygent::internal
