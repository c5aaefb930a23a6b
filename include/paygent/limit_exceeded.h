// paygent::LimitExceeded: the one intentional failure on the call path.
//
// Thread safety: an immutable exception object.
#pragma once

#include <stdexcept>

#include "paygent/guard_result.h"

namespace paygent {

// Thrown before the call leaves the process when a user is at or over a hard limit (unless
// Options::raise_on_hard_gate is false). No tokens were spent for the blocked call.
class LimitExceeded : public std::runtime_error {
 public:
  explicit LimitExceeded(GuardResult result)
      : std::runtime_error(result.message()), result_(result) {}
  [[nodiscard]] const GuardResult& result() const noexcept { return result_; }

 private:
  GuardResult result_;
};

}  // namespace paygent
