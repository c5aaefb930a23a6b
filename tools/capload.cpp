// `paygent capload`: an application process that spends against one user's cap through Paygent
// with a backend, until the cap stops it, and says what it admitted (see capload.h).
#include "tools/capload.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "paygent/paygent.h"
#include "tools/failover.h"
#include "tools/loadgen.h"

namespace paygent::tools {
namespace {

// Every call is gpt-4o with 1,000 input and 500 output tokens: $0.0025 + $0.005 = $0.0075 at the
// built-in prices, and its estimate (the same counts) is exactly that too, so the gate never has
// an estimate error to absorb.
constexpr std::string_view kModel = "gpt-4o";
constexpr Usage kCallUsage{.input_tokens = 1000, .output_tokens = 500};
constexpr CallEstimate kCallEstimate{.prompt_tokens = 1000, .max_output_tokens = 500};
constexpr Nanos kCallCost = 7'500'000;

struct CaploadOptions {
  std::vector<std::string> backend_urls;  // in the order to try them; several: a FailoverProxy
  std::string api_key;
  std::string store_path;
  std::string user_id;
  Nanos cap = -1;
  int pace_ms = 0;             // pause after each admitted call
  int gated_in_a_row = 10;     // stop after this many hard gates in a row ...
  int gate_pause_ms = 20;      // ... with this pause after each
  int seconds = 30;            // stop calling after this long, gated or not
  int deliver_seconds = 30;    // then keep trying to deliver for this long
  int flush_interval_ms = -1;  // -1: the library's default
  bool progress = false;
  bool no_leases = false;
};

constexpr const char* kFlags =
    "paygent capload --backend URL [--backend URL ...] --api-key KEY --store FILE --user ID --cap-usd AMOUNT\n"
    "                [--pace-ms N] [--gated-in-a-row N] [--gate-pause-ms N] [--seconds N]\n"
    "                [--deliver-seconds N] [--flush-interval-ms N] [--progress] [--no-leases]\n";

int flag_error(const std::string& message) {
  std::fprintf(stderr, "paygent capload: %s\nusage: %s", message.c_str(), kFlags);
  return 2;
}

// Parses argv[2..]; an error is returned as the message naming the flag.
absl::StatusOr<CaploadOptions> parse_flags(int argc, char** argv) {
  CaploadOptions o;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--progress") {
      o.progress = true;
      continue;
    }
    if (flag == "--no-leases") {
      o.no_leases = true;
      continue;
    }
    if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(flag, ": needs a value"));
    const std::string value = argv[++i];
    auto number = [&](int& out, int least) -> absl::Status {
      if (!absl::SimpleAtoi(value, &out) || out < least) {
        return absl::InvalidArgumentError(absl::StrCat(flag, ": \"", value, "\" is not a whole number >= ", least));
      }
      return absl::OkStatus();
    };
    absl::Status s;
    if (flag == "--backend") o.backend_urls.emplace_back(value);
    else if (flag == "--api-key") o.api_key = value;
    else if (flag == "--store") o.store_path = value;
    else if (flag == "--user") o.user_id = value;
    else if (flag == "--cap-usd") {
      auto cap = parse_usd(value);
      if (!cap.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--cap-usd: ", std::string(cap.status().message())));
      }
      o.cap = *cap;
    } else if (flag == "--pace-ms") s = number(o.pace_ms, 0);
    else if (flag == "--gated-in-a-row") s = number(o.gated_in_a_row, 1);
    else if (flag == "--gate-pause-ms") s = number(o.gate_pause_ms, 0);
    else if (flag == "--seconds") s = number(o.seconds, 1);
    else if (flag == "--deliver-seconds") s = number(o.deliver_seconds, 0);
    else if (flag == "--flush-interval-ms") s = number(o.flush_interval_ms, 1);
    else return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
    if (!s.ok()) return s;
  }
  if (o.backend_urls.empty()) return absl::InvalidArgumentError("--backend: required");
  if (o.api_key.empty()) return absl::InvalidArgumentError("--api-key: required");
  if (o.store_path.empty()) return absl::InvalidArgumentError("--store: required");
  if (o.user_id.empty()) return absl::InvalidArgumentError("--user: required");
  if (o.cap < 0) return absl::InvalidArgumentError("--cap-usd: required");
  return o;
}

// One plan, the default, whose only limit is `cap` per calendar month, gated hard at 100%.
absl::StatusOr<PlanConfig> capped_plans(Nanos cap) {
  return parse_plan_config(absl::StrFormat(
      R"({"soft_gate_at": 0.8, "hard_gate_at": 1.0, "default_plan": "capload",)"
      R"( "plans": [{"name": "capload", "max_spend_per_period": %d.%09d}]})",
      cap / kNanosPerUsd, cap % kNanosPerUsd));
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits (up to 2 s) until every event this process metered is committed to its local store, so
// that a progress line names only calls a kill -9 cannot lose.
void wait_until_stored(const Paygent& pg) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (Stats s = pg.stats(); s.stored_events < s.events; s = pg.stats()) {
    if (std::chrono::steady_clock::now() >= until) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

int run_capload(int argc, char** argv) {
  auto parsed = parse_flags(argc, argv);
  if (!parsed.ok()) return flag_error(std::string(parsed.status().message()));
  const CaploadOptions& o = *parsed;
  const ModelPrice* price = PriceCatalog::builtin().find(kModel);
  if (price == nullptr || cost_of(kCallUsage, *price) != kCallCost) {
    return flag_error("the built-in price of gpt-4o is no longer $0.0075 for 1,000 + 500 tokens");
  }
  auto plans = capped_plans(o.cap);
  if (!plans.ok()) return flag_error("--cap-usd: " + std::string(plans.status().message()));

  std::unique_ptr<FailoverProxy> proxy;
  Options opts;
  opts.api_key = o.api_key;
  opts.plans = *std::move(plans);
  opts.local_store_path = o.store_path;
  if (o.backend_urls.size() == 1) {
    opts.backend_url = o.backend_urls.front();
  } else {
    auto started = FailoverProxy::start(o.backend_urls);
    if (!started.ok()) return flag_error(std::string(started.status().message()));
    proxy = *std::move(started);
    opts.backend_url = proxy->url();
  }
  if (o.flush_interval_ms > 0) opts.flush_interval = absl::Milliseconds(o.flush_interval_ms);
  opts.leases = !o.no_leases;
  std::atomic<std::int64_t> errors{0};  // faults the library contained, e.g. each outage of the backend
  opts.on_error = [&errors](const absl::Status& s) {
    errors.fetch_add(1);
    std::fprintf(stderr, "capload: %s\n", std::string(s.message()).c_str());
  };
  auto created = Paygent::create(std::move(opts));
  if (!created.ok()) return flag_error(std::string(created.status().message()));
  std::unique_ptr<Paygent> pg = *std::move(created);

  const std::int64_t start_ms = now_ms();
  std::int64_t admitted = 0, failures = 0, hard_gates = 0;
  Nanos spend = 0;
  std::map<std::string, std::int64_t> gates_by_reason;
  const char* stopped = "time";
  for (int in_a_row = 0; now_ms() - start_ms < o.seconds * 1000LL;) {
    Context ctx(o.user_id);
    try {
      Reservation r = pg->reserve(kModel, kCallEstimate);
      pg->settle(r, kCallUsage, Provider::kOpenAI);
      ++admitted;
      spend += kCallCost;
      in_a_row = 0;
      if (o.progress) {
        wait_until_stored(*pg);
        std::printf("admitted n=%" PRId64 " spend_nanos=%" PRId64 "\n", admitted, spend);
        std::fflush(stdout);
      }
      if (o.pace_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.pace_ms));
    } catch (const LimitExceeded& e) {
      ++hard_gates;
      ++gates_by_reason[e.result().gate_reason()];
      if (++in_a_row >= o.gated_in_a_row) {
        stopped = "gated";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(o.gate_pause_ms));
    } catch (...) {
      ++failures;  // nothing else may stop a call: the test fails on it
      std::this_thread::sleep_for(std::chrono::milliseconds(o.gate_pause_ms));
    }
  }
  const std::int64_t calls_ms = now_ms() - start_ms;
  const bool delivered = deliver_all(*pg, o.deliver_seconds);
  const std::int64_t delivered_events = pg->stats().delivered_events;
  pg.reset();  // shutdown: threads stopped, whatever it holds given back
  std::string reasons;
  for (const auto& [reason, count] : gates_by_reason) {
    absl::StrAppend(&reasons, reasons.empty() ? "" : ",", reason, ":", count);
  }
  // The ground truth of this process, in one line for the tests.
  std::printf("capload user=%s admitted=%" PRId64 " spend_nanos=%" PRId64 " hard_gates=%" PRId64
              " gate_reasons=%s failures=%" PRId64 " errors=%" PRId64 " stopped=%s calls_ms=%" PRId64
              " failovers=%" PRId64 " delivered=%s events=%" PRId64 "\n",
              o.user_id.c_str(), admitted, spend, hard_gates, reasons.empty() ? "-" : reasons.c_str(), failures,
              errors.load(), stopped, calls_ms, proxy ? proxy->failovers() : 0, delivered ? "all" : "partial",
              delivered_events);
  std::fflush(stdout);
  return delivered && failures == 0 ? 0 : 1;
}

}  // namespace paygent::tools
