// The calls inside a Paygent and the reservations it has open, counted so that its destruction can
// wait for the calls already inside and turn away those that arrive while it closes.
//
// Private to the library (paygent::internal). The hot path shares no counter: each thread counts on
// its own cache line (a plain load and store, no locked instruction), and the closing side sums the
// lines. Entering is a Dekker handshake: a thread stores its count, then reads `closing`; closing
// stores `closing`, then reads the counts; a full barrier between each store and load makes at
// least one side see the other. The entering side's barrier is only a compiler barrier: the closing
// side forces a barrier on every running thread of the process with membarrier(2) (Linux 4.14+;
// the same asymmetric fence as folly's and liburcu's). Where membarrier is refused (old kernels,
// seccomp), or under TSan, which cannot model it, entering uses a real fence (~5-30 ns).
#pragma once

#include <atomic>
#include <cstdint>

namespace paygent::internal {

class CallsInFlight {
 public:
  // One thread's counters (or a few threads', past the owned stripes), on their own cache line.
  struct alignas(64) Stripe {
    std::atomic<std::int64_t> inside{0};  // calls between enter() and leave()
    std::atomic<std::int64_t> open{0};    // reservations opened minus closed
  };

  // Registers the process for membarrier (a system call, once per process). Called before the first
  // CallsInFlight is made, so that every thread that can ever enter sees the same choice.
  static void prepare() noexcept;

  // Enters: the calling thread's stripe, to pass to leave(), when it may use the engine until
  // leave(); nullptr when the Paygent is closing or closed (the caller then touches nothing else
  // and does not call leave()). Does not allocate, does not lock, makes no system call.
  [[nodiscard]] Stripe* enter() noexcept {
    Stripe* s = &stripes_[stripe_index()];
    bump(s, s->inside, +1);
    light_barrier();
    if (closing_.load(std::memory_order_relaxed)) [[unlikely]] {
      leave(s);
      return nullptr;
    }
    return s;
  }
  void leave(Stripe* s) noexcept { bump(s, s->inside, -1, std::memory_order_release); }

  // A reservation opened or closed by the thread that entered with `s` (before its leave()). A
  // reservation may close on another thread than it opened on: only the sum over the stripes
  // means anything.
  void reservation_opened(Stripe* s) noexcept { bump(s, s->open, +1); }
  void reservation_closed(Stripe* s) noexcept { bump(s, s->open, -1); }

  // Turns away every later enter(), waits until no thread is between enter() and leave(), and
  // returns how many reservations are still open. The first call closes; later calls only wait.
  // Must not be called by a thread that is itself inside (it would wait for itself).
  std::int64_t close_and_wait() noexcept;
  [[nodiscard]] bool closed() const noexcept { return closing_.load(std::memory_order_acquire); }

 private:
  static constexpr int kOwnedStripes = 16;

  // Up to kOwnedStripes live threads of the process own a stripe each (in every CallsInFlight),
  // given back when the thread exits; other threads share the other stripes and add to them
  // atomically.
  static int stripe_index() noexcept {
    const int i = t_stripe;
    return i >= 0 ? i : assign_stripe();
  }
  static int assign_stripe() noexcept;
  struct StripeOwner;  // gives a thread's owned stripe back when the thread exits
  void bump(const Stripe* s, std::atomic<std::int64_t>& v, std::int64_t n,
            std::memory_order order = std::memory_order_relaxed) noexcept {
    if (s < &stripes_[kOwnedStripes]) {
      v.store(v.load(std::memory_order_relaxed) + n, order);  // this thread is the only writer
    } else {
      v.fetch_add(n, order);
    }
  }
  static void light_barrier() noexcept {
#if defined(__SANITIZE_THREAD__)
    std::atomic_thread_fence(std::memory_order_seq_cst);
#else
    if (g_asymmetric.load(std::memory_order_relaxed)) [[likely]] {
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
#endif
  }

  static inline constinit thread_local int t_stripe = -1;
  static inline constinit std::atomic<bool> g_asymmetric{false};  // membarrier registered

  Stripe stripes_[2 * kOwnedStripes];
  alignas(64) std::atomic<bool> closing_{false};  // written once: stays in every reader's cache
};

}  // namespace paygent::internal
