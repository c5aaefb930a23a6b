// `paygent loadgen` and `paygent sync` (see tools/paygent.cpp for the flags).
#pragma once

#include <cstdint>
#include <string>

namespace paygent {
class Paygent;
}  // namespace paygent

namespace paygent::tools {

struct LoadgenOptions {
  std::string backend_url = "http://127.0.0.1:8080";
  std::string api_key;
  std::string store_path;
  std::string user_prefix;
  std::int64_t users = 5;
  std::int64_t calls = 1000;
  int flush_interval_ms = 200;
  std::size_t batch_size = 100;
  int pace_us = 0;            // pause between calls
  int deliver_seconds = 60;   // how long to keep retrying delivery at the end
  bool no_flush = false;      // exit without waiting for delivery
  bool hang = false;          // after recording, wait to be killed (kill -9 tests)
};

// Records `calls` metered calls (gpt-4o-mini, deterministic usage) over `users` users through
// Paygent with a backend, prints the ground truth and gate latency, then delivers everything.
int run_loadgen(const LoadgenOptions& options);
// Delivers what a store's spool still holds (after a crash), then exits.
int run_sync(const LoadgenOptions& options);
// Retries pg.flush() until everything is delivered (true) or `seconds` pass (false, said on stderr).
bool deliver_all(Paygent& pg, int seconds);

}  // namespace paygent::tools
