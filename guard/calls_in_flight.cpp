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

namespace {

// Owned stripes not taken by a live thread: bit i set = stripe i is free. A thread gives its stripe
// back when it exits, so that a process whose threads come and go (a pool that resizes, a
// benchmark's runs) keeps its live threads on owned stripes.
std::atomic<std::uint32_t> g_free_owned{(std::uint32_t{1} << 16) - 1};

}  // namespace

struct CallsInFlight::StripeOwner {
  int index;
  ~StripeOwner() {
    // A call made later by this thread's other thread_local destructors counts atomically on a
    // shared stripe; the stripe's next owner continues its counts (only their sums mean anything).
    t_stripe = kOwnedStripes;
    g_free_owned.fetch_or(std::uint32_t{1} << index, std::memory_order_release);
  }
};

int CallsInFlight::assign_stripe() noexcept {
  static_assert(kOwnedStripes == 16, "g_free_owned has one bit per owned stripe");
  std::uint32_t free = g_free_owned.load(std::memory_order_acquire);
  while (free != 0) {
    const int i = __builtin_ctz(free);
    if (g_free_owned.compare_exchange_weak(free, free & ~(std::uint32_t{1} << i), std::memory_order_acquire)) {
      t_stripe = i;
      static thread_local StripeOwner owner{i};  // gives stripe i back at this thread's exit
      owner.index = i;
      return i;
    }
  }
  static std::atomic<int> next_shared{0};
  t_stripe = kOwnedStripes + next_shared.fetch_add(1, std::memory_order_relaxed) % kOwnedStripes;
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
