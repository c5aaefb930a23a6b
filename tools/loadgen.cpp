// `paygent loadgen` and `paygent sync`: an application process for the integration tests and for
// trying a backend by hand.
#include "tools/loadgen.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "paygent/paygent.h"

namespace paygent::tools {
namespace {

Options backend_options(const LoadgenOptions& o) {
  Options opts;
  opts.api_key = o.api_key;
  opts.backend_url = o.backend_url;
  opts.local_store_path = o.store_path;
  opts.flush_interval = absl::Milliseconds(o.flush_interval_ms);
  opts.batch_size = o.batch_size;
  opts.refresh_interval = absl::Seconds(5);
  opts.shutdown_deadline = absl::Seconds(1);
  opts.on_error = [](const absl::Status& s) {
    std::fprintf(stderr, "paygent: %s\n", std::string(s.message()).c_str());
  };
  return opts;
}

}  // namespace

bool deliver_all(Paygent& pg, int seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    const absl::Status s = pg.flush(absl::Seconds(5));
    if (s.ok()) return true;
    if (std::chrono::steady_clock::now() >= until) {
      std::fprintf(stderr, "paygent: giving up: %s\n", std::string(s.message()).c_str());
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

int run_loadgen(const LoadgenOptions& o) {
  auto created = Paygent::create(backend_options(o));
  if (!created.ok()) {
    std::fprintf(stderr, "loadgen: %s\n", std::string(created.status().message()).c_str());
    return 2;
  }
  Paygent& pg = **created;
  std::map<std::string, Nanos> cost_by_user;
  std::vector<std::int64_t> gate_ns;
  gate_ns.reserve(static_cast<std::size_t>(o.calls));
  std::int64_t failures = 0;
  // Test hook for the crash-loss integration test: with PAYGENT_LOADGEN_PROGRESS=N (N > 0), a line
  // "progress calls=<done> failures=<f> t_ns=<steady clock>" after every N calls, flushed at once,
  // so that a process killed mid-run has told how many calls it had recorded and when. The
  // steady clock is CLOCK_MONOTONIC, comparable across processes on the machine.
  const char* progress_env = std::getenv("PAYGENT_LOADGEN_PROGRESS");
  const std::int64_t progress_every =
      progress_env != nullptr ? std::max<std::int64_t>(0, std::atol(progress_env)) : 0;
  for (std::int64_t i = 0; i < o.calls; ++i) {
    const std::string user = o.user_prefix + "user-" + std::to_string(i % o.users);
    Context ctx(user, {.session_id = "s" + std::to_string(i % 7)});
    const Usage usage{.input_tokens = 100 + i % 50, .output_tokens = 50 + i % 30};
    try {
      const auto t0 = std::chrono::steady_clock::now();
      Reservation r = pg.reserve("gpt-4o-mini", {.prompt_tokens = 150, .max_output_tokens = 80});
      const auto t1 = std::chrono::steady_clock::now();
      gate_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      pg.settle(r, usage, Provider::kOpenAI);
      cost_by_user[user] += cost_of(usage, *PriceCatalog::builtin().find("gpt-4o-mini"));
    } catch (...) {
      ++failures;  // a blocked or failed call: must never happen in the tests
    }
    if (progress_every > 0 && (i + 1) % progress_every == 0) {
      const std::int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::steady_clock::now().time_since_epoch())
                                      .count();
      std::printf("progress calls=%" PRId64 " failures=%" PRId64 " t_ns=%" PRId64 "\n", i + 1, failures, now_ns);
      std::fflush(stdout);
    }
    if (o.pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(o.pace_us));
  }
  std::sort(gate_ns.begin(), gate_ns.end());
  auto pct = [&](double p) {
    return gate_ns.empty() ? 0 : gate_ns[std::min(gate_ns.size() - 1, static_cast<std::size_t>(p * gate_ns.size()))];
  };
  Nanos total = 0;
  for (const auto& [u, c] : cost_by_user) total += c;
  // One line of ground truth for the tests: what this process recorded.
  std::printf("recorded calls=%" PRId64 " failures=%" PRId64 " cost_nanos=%" PRId64 " gate_p50_ns=%" PRId64
              " gate_p99_ns=%" PRId64 " gate_max_ns=%" PRId64 "\n",
              static_cast<std::int64_t>(gate_ns.size()), failures, total, pct(0.5), pct(0.99),
              gate_ns.empty() ? 0 : gate_ns.back());
  for (const auto& [u, c] : cost_by_user) std::printf("user %s cost_nanos=%" PRId64 "\n", u.c_str(), c);
  std::fflush(stdout);
  if (o.hang) {
    // Says when the local store (the spool) holds every recorded call, then waits to be killed.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (pg.stats().stored_events < static_cast<std::int64_t>(gate_ns.size()) && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::printf("spooled events=%" PRId64 "\n", pg.stats().stored_events);
    std::fflush(stdout);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (o.no_flush) return failures == 0 ? 0 : 1;
  const bool delivered = deliver_all(pg, o.deliver_seconds);
  std::printf("delivered %s events=%" PRId64 "\n", delivered ? "all" : "partial", pg.stats().delivered_events);
  std::fflush(stdout);
  return delivered && failures == 0 ? 0 : 1;
}

int run_sync(const LoadgenOptions& o) {
  auto created = Paygent::create(backend_options(o));
  if (!created.ok()) {
    std::fprintf(stderr, "sync: %s\n", std::string(created.status().message()).c_str());
    return 2;
  }
  const bool delivered = deliver_all(**created, o.deliver_seconds);
  std::printf("delivered %s events=%" PRId64 "\n", delivered ? "all" : "partial", (*created)->stats().delivered_events);
  return delivered ? 0 : 1;
}

}  // namespace paygent::tools
