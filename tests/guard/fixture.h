// Shared helpers of the guard tests: a fake clock and small plans built in code.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "absl/time/time.h"
#include "paygent/paygent.h"

namespace paygent::testing {

// A clock tests move by hand; safe to read from many threads.
class FakeClock {
 public:
  explicit FakeClock(absl::Time start = absl::FromCivil(absl::CivilSecond(2026, 11, 10, 12, 0, 0), absl::UTCTimeZone()))
      : ns_(absl::ToUnixNanos(start)) {}
  absl::Time now() const { return absl::FromUnixNanos(ns_.load()); }
  void set(absl::Time t) { ns_.store(absl::ToUnixNanos(t)); }
  void advance(absl::Duration d) { ns_.fetch_add(absl::ToInt64Nanoseconds(d)); }
  std::function<absl::Time()> fn() {
    return [this] { return now(); };
  }

 private:
  std::atomic<std::int64_t> ns_;
};

inline absl::Time utc(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), absl::UTCTimeZone());
}

// A plan priced at round numbers so that expected values are easy to write down:
// "m" costs 1,000 nano-USD per input token and 2,000 per output token.
inline Plan round_plan(std::string name = "pro") {
  Plan p;
  p.name = std::move(name);
  p.cost_rates["m"] = CostRate{1'000'000, 2'000'000};  // pico-USD per token
  p.cost_rates["gpt-4o"] = CostRate{2'500'000, 10'000'000};
  return p;
}

inline PlanConfig config_with(Plan p, std::vector<Ppm> soft = {800'000}) {
  PlanConfig c;
  c.soft_gate_at = std::move(soft);
  c.default_plan = p.name;
  c.plans.push_back(std::move(p));
  return c;
}

// A unique temporary file path, removed (with its WAL files) by the destructor.
class TempStore {
 public:
  TempStore() {
    static std::atomic<int> n{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("paygent-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".db"))
                .string();
  }
  ~TempStore() {
    for (const char* s : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + s);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline Usage tokens(std::int64_t in, std::int64_t out) {
  Usage u;
  u.input_tokens = in;
  u.output_tokens = out;
  return u;
}

// A Paygent (in memory, or on `store_path`) on a fake clock that keeps what its gate callbacks and
// on_error said: soft and hard results, "total_spend@800000"-style keys of the soft ones, errors.
struct GateHarness {
  explicit GateHarness(PlanConfig config, std::string store_path = "", FakeClock* shared_clock = nullptr) {
    Options o;
    o.plans = std::move(config);
    o.local_store_path = std::move(store_path);
    o.clock = (shared_clock != nullptr ? shared_clock : &clock)->fn();
    o.on_soft_gate = [this](const GuardResult& r) {
      soft.push_back(r);
      soft_keys.push_back(r.gate_reason() + "@" + std::to_string(r.threshold));
    };
    o.on_hard_gate = [this](const GuardResult& r) { hard.push_back(r); };
    o.on_error = [this](const absl::Status& s) { errors.push_back(std::string(s.message())); };
    pg = *Paygent::create(std::move(o));
  }
  FakeClock clock;
  std::vector<GuardResult> soft, hard;
  std::vector<std::string> soft_keys;
  std::vector<std::string> errors;
  std::unique_ptr<Paygent> pg;
};

// A model "m" that costs 1,000 nano-USD per input token (as the tests' plans price it): records
// exactly `nanos` of spend.
inline void spend(Paygent& pg, Nanos nanos) { pg.record("m", tokens(nanos / 1000, 0)); }

}  // namespace paygent::testing
