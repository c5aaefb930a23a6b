// A fake POST /api/v1/leases for the lease keeper's tests: the grant of docs/leases.md ("The
// grant", steps 1 to 5) over an in-memory table of leases, with a ledger total (`spent`) the test
// sets. Plugged into LeaseOptions::exchange (no socket). `mode` scripts misbehaviour.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <simdjson.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "guard/internal/lease_keeper.h"

namespace paygent::testing {

class FakeLeaseBackend {
 public:
  enum class Mode { kOk, kDown, kGarbage, kNotFound, kWrongEntry };

  void set_mode(Mode m) { mode_ = m; }
  void set_ttl_ms(std::int64_t ttl) { ttl_ms_ = ttl; }
  void set_spent(std::int64_t s) {
    std::lock_guard<std::mutex> lock(mu_);
    spent_ = s;
  }
  std::int64_t requests() const { return requests_.load(); }
  std::int64_t releases() const { return releases_.load(); }
  std::string last_body() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_body_;
  }
  // Live headroom of every holder of the limit, summed (what the invariant bounds).
  std::int64_t live_headroom(const std::string& user, const std::string& limit) {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t sum = 0;
    for (const auto& [k, r] : rows_) {
      if (std::get<1>(k) == user && std::get<2>(k) == limit && r.expires > now()) sum += std::max<std::int64_t>(r.ceiling - r.acked, 0);
    }
    return sum;
  }
  std::size_t rows() {
    std::lock_guard<std::mutex> lock(mu_);
    return rows_.size();
  }

  // The exchange to plug into LeaseOptions::exchange.
  auto exchange() {
    return [this](std::string body, absl::Duration) -> absl::StatusOr<internal::HttpReply> { return handle(body); };
  }

  absl::StatusOr<internal::HttpReply> handle(const std::string& body) {
    ++requests_;
    switch (mode_.load()) {
      case Mode::kDown: return absl::UnavailableError("connection refused");
      case Mode::kGarbage: return internal::HttpReply{200, "{\"ttl_ms\": \"soon\", \"leases\": [}"};
      case Mode::kNotFound: return internal::HttpReply{404, "{\"error\":\"not found\"}"};
      default: break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    last_body_ = body;
    simdjson::dom::parser parser;
    simdjson::dom::element doc = parser.parse(body);
    const std::string holder(doc["holder"].get_string().value());
    std::string out = "{\"ttl_ms\":" + std::to_string(ttl_ms_.load()) + ",\"leases\":[";
    bool first = true;
    for (simdjson::dom::element e : doc["leases"].get_array()) {
      const std::string user(e["user_id"].get_string().value());
      const std::string limit(e["limit"].get_string().value());
      const std::int64_t start = e["period_start_ns"].get_int64().value();
      const std::int64_t cap = e["cap"].get_int64().value(), used = e["used"].get_int64().value(),
                         acked = e["acked"].get_int64().value(), want = e["want"].get_int64().value(),
                         need = e["need"].get_int64().value();
      const bool release = e["release"].get_bool().value();
      if (release) ++releases_;
      std::erase_if(rows_, [&](const auto& kv) { return kv.second.expires <= now(); });
      std::int64_t others = 0, n = 1;
      for (const auto& [k, r] : rows_) {
        if (std::get<0>(k) != holder && std::get<1>(k) == user && std::get<2>(k) == limit && std::get<3>(k) == start) {
          others += std::max<std::int64_t>(r.ceiling - r.acked, 0);
          ++n;
        }
      }
      const Key key{holder, user, limit, start};
      const std::int64_t free = cap - spent_ - others - (used - acked);
      const std::int64_t fair = free > 0 ? (free + n - 1) / n : 0;
      std::int64_t g = free <= 0 ? 0 : std::min(free, std::max(need, std::min(want, fair)));
      std::int64_t ceiling = used + g;
      auto own = rows_.find(key);
      if (!release && own != rows_.end()) ceiling = std::max(ceiling, own->second.ceiling);
      if (release) ceiling = used;
      std::int64_t holders = n;
      if (release && used == acked) {
        if (own != rows_.end()) rows_.erase(own);
        holders = n - 1;
      } else {
        rows_[key] = Row{ceiling, acked, now() + ttl_ms_.load() * 1'000'000};
      }
      const std::int64_t remaining = std::max<std::int64_t>(cap - spent_ - others - std::max<std::int64_t>(ceiling - acked, 0), 0);
      if (mode_ == Mode::kWrongEntry) {
        out += std::string(first ? "" : ",") + "{\"user_id\":\"someone-else\"}";
        first = false;
        continue;
      }
      out += std::string(first ? "" : ",") + "{\"user_id\":\"" + user + "\",\"limit\":\"" + limit +
             "\",\"period_start_ns\":" + std::to_string(start) + ",\"granted\":" + std::to_string(ceiling - used) +
             ",\"ceiling\":" + std::to_string(ceiling) + ",\"spent\":" + std::to_string(spent_) +
             ",\"held_elsewhere\":" + std::to_string(others) + ",\"remaining\":" + std::to_string(remaining) +
             ",\"holders\":" + std::to_string(holders) + ",\"future_field\":1}";
      first = false;
    }
    out += "]}";
    return internal::HttpReply{200, out};
  }

  static std::int64_t now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

 private:
  using Key = std::tuple<std::string, std::string, std::string, std::int64_t>;  // holder, user, limit, start
  struct Row {
    std::int64_t ceiling = 0, acked = 0, expires = 0;
  };
  std::atomic<Mode> mode_{Mode::kOk};
  std::atomic<std::int64_t> ttl_ms_{10'000};
  std::atomic<std::int64_t> requests_{0}, releases_{0};
  std::mutex mu_;
  std::int64_t spent_ = 0;
  std::map<Key, Row> rows_;
  std::string last_body_;
};

}  // namespace paygent::testing
