// internal::CallsInFlight (see guard/internal/calls_in_flight.h).
#include "guard/internal/calls_in_flight.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <thread>

namespace paygent::internal {
namespace {

bool heavy_barrier_available() noexcept {
#if defined(__SANITIZE_THREAD__)
  return false;
#else
  return ::syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
}

}  // namespace

void CallsInFlight::prepare() noexcept {
  static std::once_flag once;
  std::call_once(once, [] { g_asymmetric.store(heavy_barrier_available(), std::memory_order_relaxed); });
}

int CallsInFlight::assign_stripe() noexcept {
  static std::atomic<int> next{0};
  const int n = next.fetch_add(1, std::memory_order_relaxed);
  t_stripe = n < kOwnedStripes ? n : kOwnedStripes + n % kOwnedStripes;
  return t_stripe;
}

std::int64_t CallsInFlight::close_and_wait() noexcept {
  closing_.store(true, std::memory_order_seq_cst);
  // The other half of enter()'s handshake: every thread that stored its count before this point
  // is seen below; every thread that stores it later sees `closing_`.
  if (g_asymmetric.load(std::memory_order_relaxed)) {
    if (::syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
      // Cannot happen once registered; if it does, wait out a scheduling round so that every
      // thread that entered before the store above has published its count.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  for (int round = 0;; ++round) {
    std::int64_t inside = 0;
    for (const Stripe& s : stripes_) inside += s.inside.load(std::memory_order_acquire);
    if (inside == 0) break;
    if (round < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  std::int64_t open = 0;
  for (const Stripe& s : stripes_) open += s.open.load(std::memory_order_relaxed);
  return open;
}

}  // namespace paygent::internal
