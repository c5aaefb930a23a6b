// internal::Inside: a call of a Paygent's public API, counted in its CallsInFlight (see paygent.h,
// "Lifetime"). Shared by guard/paygent.cpp and guard/tracking.cpp.
#pragma once

#include "guard/internal/engine.h"

namespace paygent::internal {

// A call inside a Paygent (CallsInFlight): shutting down waits until it ends. When the
// Paygent is shut down (or shutting down) the call is not inside and must touch nothing of it.
class Inside {
 public:
  explicit Inside(Engine& e) noexcept : calls_(e.calls), stripe_(calls_.enter()) {}
  ~Inside() {
    if (stripe_ != nullptr) calls_.leave(stripe_);
  }
  Inside(const Inside&) = delete;
  Inside& operator=(const Inside&) = delete;
  explicit operator bool() const noexcept { return stripe_ != nullptr; }
  void reservation_opened() noexcept { calls_.reservation_opened(stripe_); }
  void reservation_closed() noexcept { calls_.reservation_closed(stripe_); }

 private:
  CallsInFlight& calls_;
  CallsInFlight::Stripe* const stripe_;
};

}  // namespace paygent::internal
