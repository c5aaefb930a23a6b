// The scripted in-process paygentd of the guard tests (syncer_test.cpp, tracking_test.cpp): a tiny
// HTTP/1.1 backend on loopback speaking the wire contract (docs/wire.md) and the customers endpoint
// of docs/tracking.md, a Client (a Paygent pointed at it on a temporary store) and eventually().
//
// Thread safety: a FakeBackend serves on its own threads; its accessors lock.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <simdjson.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "paygent/paygent.h"
#include "tests/guard/fixture.h"

namespace paygent::testing {

// A tiny HTTP/1.1 backend speaking the wire contract (docs/wire.md) well enough for the syncer,
// with a ledger that counts each event id once. `mode` scripts misbehaviour.
class FakeBackend {
 public:
  enum class Mode { kOk, kGarbage, kError500, kSlow };

  explicit FakeBackend(int port = 0) { listen_on(port); }
  ~FakeBackend() { stop(); }

  int port() const { return port_; }
  void set_mode(Mode m, int times = 1 << 30) {
    mode_ = m;
    mode_times_ = times;
  }
  // Spend through another application process: one call of "m" at round_plan's $1 per 1M tokens.
  void seed_spend(const std::string& user, Nanos n) {
    std::lock_guard<std::mutex> lock(mu_);
    spend_[user] += n;
    ModelTotals& m = models_[user]["m"];
    m.input += n / 1000;
    m.cost += n;
    ++m.calls;
  }
  Nanos spend(const std::string& user) {
    std::lock_guard<std::mutex> lock(mu_);
    return spend_[user];
  }
  std::int64_t events() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<std::int64_t>(ids_.size());
  }
  std::int64_t duplicates() const { return duplicates_.load(); }
  // Replaces the product's plan config (GET /config/plans) and so its plans_version.
  void set_plans(std::string json) {
    std::lock_guard<std::mutex> lock(mu_);
    plans_json_ = std::move(json);
    ++plans_version_;
  }
  std::int64_t plan_reads() const { return plan_reads_.load(); }
  std::int64_t usage_queries() const { return usage_queries_.load(); }
  std::int64_t user_gets() const { return user_gets_.load(); }
  // Subscribes `user` to `plan` for [start, end) (the tests' clocks stay in that first period).
  void subscribe(const std::string& user, const std::string& plan, absl::Time start, absl::Time end) {
    std::lock_guard<std::mutex> lock(mu_);
    subscriptions_[user] = {plan, absl::ToUnixNanos(start), absl::ToUnixNanos(end)};
  }

  // The wire version this backend speaks: 1 is a paygentd from before versions (no
  // Paygent-Wire-Version header; an unknown field of a batch or an event is refused with 400).
  void set_wire_version(int v) { wire_version_ = v; }
  // Customers (POST /api/v1/customers/create-or-get): created ones by external id -> name, and
  // requests answered. Unsupported: 404, as a paygentd from before tracking.
  void set_customers_supported(bool on) { customers_supported_ = on; }
  std::map<std::string, std::string> customers() {
    std::lock_guard<std::mutex> lock(mu_);
    return customers_;
  }
  std::int64_t customer_requests() const { return customer_requests_.load(); }
  // Every event accepted, as the batch carried it (minified JSON), by id.
  std::map<std::string, std::string> raw_events() {
    std::lock_guard<std::mutex> lock(mu_);
    return raw_events_;
  }
  // Events stored with "kind": "stt".
  std::int64_t stt_events() {
    std::lock_guard<std::mutex> lock(mu_);
    return stt_events_;
  }

  std::int64_t batch_requests() const { return batch_requests_.load(); }
  // Soft gates a batch carried ("soft_gates", wire version 3), each time one did, and those stored
  // (by a backend of version 3 or newer, which reports them in usage objects).
  std::int64_t soft_gates_received() const { return soft_gates_received_.load(); }
  std::set<std::string> soft_gates_stored() {
    std::lock_guard<std::mutex> lock(mu_);
    return soft_gates_;
  }
  // A soft gate fired by another process: reported in `user`'s usage objects.
  void seed_soft_gate(const std::string& user, const std::string& limit, std::int64_t start, std::int64_t ppm) {
    std::lock_guard<std::mutex> lock(mu_);
    soft_gates_.insert(user + "|" + limit + "|" + std::to_string(start) + "|" + std::to_string(ppm));
  }
  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }

 private:
  void listen_on(int port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  void serve() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      connections_.emplace_back([this, fd] {  // one thread per connection: clients keep theirs alive
        handle_connection(fd);
        ::close(fd);
      });
    }
    for (auto& c : connections_) c.join();
  }

  void handle_connection(int fd) {
    std::string buf;
    while (!stopping_) {
      std::size_t header_end;
      while ((header_end = buf.find("\r\n\r\n")) == std::string::npos) {
        if (!read_some(fd, buf)) return;
      }
      const std::string head = buf.substr(0, header_end);
      std::size_t length = 0;
      if (auto cl = head.find("Content-Length: "); cl != std::string::npos) length = std::stoul(head.substr(cl + 16));
      while (buf.size() < header_end + 4 + length) {
        if (!read_some(fd, buf)) return;
      }
      const std::string body = buf.substr(header_end + 4, length);
      buf.erase(0, header_end + 4 + length);
      const std::string reply = respond(head.substr(0, head.find("\r\n")), body);
      if (reply.empty()) return;  // drop the connection
      if (::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) < 0) return;
    }
  }

  bool read_some(int fd, std::string& buf) {
    pollfd p{fd, POLLIN, 0};
    while (!stopping_) {
      if (::poll(&p, 1, 50) > 0) {
        char tmp[65536];
        const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) return false;
        buf.append(tmp, static_cast<std::size_t>(n));
        return true;
      }
    }
    return false;
  }

  std::string http(int status, const std::string& body) {
    const int v = wire_version_.load();
    return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\n" +
           (v > 1 ? "Paygent-Wire-Version: " + std::to_string(v) + "\r\n" : std::string()) +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  }

  std::string usage_json(const std::string& user) {
    std::int64_t start = absl::ToUnixNanos(utc(2026, 11, 1));
    std::int64_t end = absl::ToUnixNanos(utc(2026, 12, 1));
    std::string subscription = "null";
    if (auto it = subscriptions_.find(user); it != subscriptions_.end()) {
      start = it->second.start_ns;
      end = it->second.end_ns;
      subscription = "{\"plan\":\"" + it->second.plan + "\",\"period_start_ns\":" + std::to_string(start) +
                     ",\"period_end_ns\":" + std::to_string(end) + "}";
    }
    return "{\"period_start_ns\":" + std::to_string(start) + ",\"period_end_ns\":" + std::to_string(end) +
           ",\"spend_nanos\":" + std::to_string(spend_[user]) + ",\"subscription\":" + subscription +
           ",\"models\":{" + models_json(user) + "}" + soft_gates_json(user) + "}";
  }

  std::string soft_gates_json(const std::string& user) {
    if (wire_version_ < 3) return "";
    std::string out;
    for (const std::string& g : soft_gates_) {
      const auto a = g.find('|'), b = g.find('|', a + 1), c = g.find('|', b + 1);
      if (g.substr(0, a) != user) continue;
      out += std::string(out.empty() ? "" : ",") + "{\"limit\":\"" + g.substr(a + 1, b - a - 1) +
             "\",\"period_start_ns\":" + g.substr(b + 1, c - b - 1) + ",\"threshold_ppm\":" + g.substr(c + 1) + "}";
    }
    return ",\"soft_gates\":[" + out + "]";
  }

  std::string models_json(const std::string& user) {
    std::string out;
    for (const auto& [model, t] : models_[user]) {
      out += (out.empty() ? "\"" : ",\"") + model + "\":{\"input_tokens\":" + std::to_string(t.input) +
             ",\"output_tokens\":" + std::to_string(t.output) + ",\"cost_nanos\":" + std::to_string(t.cost) +
             ",\"calls\":" + std::to_string(t.calls) + "}";
    }
    return out;
  }

  std::string respond(const std::string& request_line, const std::string& body) {
    if (request_line.rfind("POST /api/v1/events:batch", 0) == 0) ++batch_requests_;
    if (mode_ != Mode::kOk && mode_times_-- > 0) {
      if (mode_ == Mode::kGarbage) return http(200, "<html>certainly not json");
      if (mode_ == Mode::kError500) return http(500, "{\"error\":{\"code\":\"internal\",\"message\":\"boom\"}}");
      if (mode_ == Mode::kSlow) std::this_thread::sleep_for(std::chrono::seconds(2));
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (request_line.rfind("POST /api/v1/events:batch", 0) == 0) {
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      if (parser.parse(body).get(doc) != simdjson::SUCCESS) return http(400, "{}");
      std::int64_t accepted = 0, dups = 0;
      std::set<std::string> users;
      if (wire_version_ < 2 && doc["v"].error() == simdjson::SUCCESS) {
        return http(400, "{\"error\":{\"code\":\"invalid_argument\",\"message\":\"v: unknown field\"}}");
      }
      for (simdjson::dom::element e : doc["events"].get_array()) {
        if (e["user_id"].get_string().value() == "poison") {  // the whole batch is refused
          return http(400, "{\"error\":{\"code\":\"invalid_argument\",\"message\":\"events[0].user_id: poison\"}}");
        }
        if (wire_version_ < 2 && e["kind"].error() == simdjson::SUCCESS) {
          return http(400, "{\"error\":{\"code\":\"invalid_argument\",\"message\":\"events[0].kind: unknown field\"}}");
        }
        if (wire_version_ < 4 && e["cost_unknown"].error() == simdjson::SUCCESS) {
          return http(400,
                      "{\"error\":{\"code\":\"invalid_argument\",\"message\":\"events[0].cost_unknown: unknown field\"}}");
        }
      }
      if (simdjson::dom::array gates; doc["soft_gates"].get_array().get(gates) == simdjson::SUCCESS) {
        for (simdjson::dom::element g : gates) {
          ++soft_gates_received_;
          const std::string user(g["user_id"].get_string().value());
          if (wire_version_ < 3) continue;  // an older backend ignores a newer version's field
          users.insert(user);
          soft_gates_.insert(user + "|" + std::string(g["limit"].get_string().value()) + "|" +
                             std::to_string(g["period_start_ns"].get_int64().value()) + "|" +
                             std::to_string(g["threshold_ppm"].get_int64().value()));
        }
      }
      for (simdjson::dom::element e : doc["events"].get_array()) {
        const std::string id(e["id"].get_string().value());
        const std::string user(e["user_id"].get_string().value());
        users.insert(user);
        if (!ids_.insert(id).second) {
          ++dups;
          continue;
        }
        ++accepted;
        raw_events_[id] = std::string(simdjson::minify(e));
        std::string_view kind;
        if (e["kind"].get_string().get(kind) == simdjson::SUCCESS && kind == "stt") ++stt_events_;
        spend_[user] += e["cost_nanos"].get_int64().value();
        ModelTotals& m = models_[user][std::string(e["model"].get_string().value())];
        m.input += e["input_tokens"].get_int64().value();
        m.output += e["output_tokens"].get_int64().value();
        m.cost += e["cost_nanos"].get_int64().value();
        ++m.calls;
      }
      duplicates_ += dups;
      std::string usage;
      for (const auto& u : users) usage += (usage.empty() ? "\"" : ",\"") + u + "\":" + usage_json(u);
      return http(200, "{\"accepted\":" + std::to_string(accepted) + ",\"duplicates\":" + std::to_string(dups) +
                           ",\"plans_version\":\"v" + std::to_string(plans_version_) + "\",\"usage\":{" + usage + "}}");
    }
    if (request_line.rfind("POST /api/v1/usage:query", 0) == 0) {
      ++usage_queries_;
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      if (parser.parse(body).get(doc) != simdjson::SUCCESS) return http(400, "{}");
      std::string usage;
      for (simdjson::dom::element u : doc["users"].get_array()) {
        const std::string user(u.get_string().value());
        usage += (usage.empty() ? "\"" : ",\"") + user + "\":" + usage_json(user);
      }
      return http(200, "{\"plans_version\":\"v" + std::to_string(plans_version_) + "\",\"usage\":{" + usage + "}}");
    }
    if (request_line.rfind("GET /api/v1/users/", 0) == 0) {
      ++user_gets_;
      const std::string rest = request_line.substr(18);
      const std::string user = rest.substr(0, rest.find('/'));
      return http(200, usage_json(user));
    }
    if (request_line.rfind("POST /api/v1/customers/create-or-get", 0) == 0) {
      ++customer_requests_;
      if (!customers_supported_) return http(404, "{}");  // a paygentd from before tracking
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      std::string_view id, name;
      if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc["externalId"].get_string().get(id) ||
          doc["name"].get_string().get(name)) {
        return http(400, "{}");
      }
      const bool created = customers_.emplace(std::string(id), std::string(name)).second;
      return http(200, "{\"id\":\"" + std::string(id) + "\",\"externalId\":\"" + std::string(id) + "\",\"name\":\"" +
                           std::string(name) + "\",\"email\":\"\",\"created\":" + (created ? "true" : "false") + "}");
    }
    if (request_line.rfind("GET /api/v1/config/plans", 0) == 0) {
      ++plan_reads_;
      return http(200, plans_json_);
    }
    return http(404, "{}");
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::vector<std::thread> connections_;  // serve() thread only
  std::atomic<bool> stopping_{false};
  std::atomic<Mode> mode_{Mode::kOk};
  std::atomic<int> wire_version_{2};
  std::int64_t stt_events_ = 0;  // guarded by mu_
  std::atomic<int> mode_times_{0};
  std::mutex mu_;
  std::map<std::string, Nanos> spend_;
  std::string plans_json_ = "{\"plans\":[]}";
  int plans_version_ = 0;
  std::atomic<std::int64_t> plan_reads_{0};
  std::atomic<std::int64_t> usage_queries_{0};
  std::atomic<std::int64_t> user_gets_{0};
  struct ModelTotals {
    std::int64_t input = 0, output = 0, calls = 0;
    Nanos cost = 0;
  };
  std::map<std::string, std::map<std::string, ModelTotals>> models_;  // by user, by model
  struct Subscription {
    std::string plan;
    std::int64_t start_ns = 0, end_ns = 0;
  };
  std::map<std::string, Subscription> subscriptions_;
  std::set<std::string> ids_;
  std::map<std::string, std::string> raw_events_;  // guarded by mu_
  std::map<std::string, std::string> customers_;   // guarded by mu_
  std::atomic<bool> customers_supported_{true};
  std::atomic<std::int64_t> customer_requests_{0};
  std::atomic<std::int64_t> duplicates_{0};
  std::atomic<std::int64_t> batch_requests_{0};
  std::atomic<std::int64_t> soft_gates_received_{0};
  std::set<std::string> soft_gates_;  // "user|limit|period_start_ns|threshold_ppm", guarded by mu_
};

// A port nothing listens on (bound, then closed).
inline int free_port() {
  FakeBackend b;
  const int p = b.port();
  b.stop();
  return p;
}

struct Client {
  Client(int port, Plan plan, FakeClock& clock, std::function<void(Options&)> tweak = {}) {
    Options o;
    o.plans = testing::config_with(std::move(plan));
    o.api_key = "pg_test_key";
    o.backend_url = "http://127.0.0.1:" + std::to_string(port);
    o.local_store_path = store.path();
    o.flush_interval = absl::Milliseconds(50);
    o.local_commit_interval = absl::Milliseconds(5);
    o.clock = clock.fn();
    o.shutdown_deadline = absl::Milliseconds(500);
    o.on_error = [this](const absl::Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      errors.push_back(std::string(s.message()));
    };
    if (tweak) tweak(o);
    pg = *Paygent::create(std::move(o));
  }
  testing::TempStore store;
  std::mutex mu;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;
};

// Waits until `pred` holds or `seconds` pass.
template <class Pred>
bool eventually(Pred pred, int seconds = 10) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

}  // namespace paygent::testing
