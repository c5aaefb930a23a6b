// paygent::LimitExceeded: the one intentional failure on the call path.
//
// Thread safety: an immutable exception object; copies share their texts.
// Lifetime: independent of the Paygent that threw it. It owns copies of every text its result()
// refers to (user_id, model), so it may be kept, copied, rethrown and logged after that Paygent is
// destroyed. result()'s views stay valid while this object (or a copy of it) lives.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "paygent/guard_result.h"

namespace paygent {

// Thrown before the call leaves the process when a user is at or over a hard limit (unless
// Options::raise_on_hard_gate is false). No tokens were spent for the blocked call.
class LimitExceeded : public std::runtime_error {
 public:
  explicit LimitExceeded(GuardResult result)
      : std::runtime_error(result.message()),
        texts_(std::make_shared<const std::string>(std::string(result.user_id).append(result.model))),
        result_(result) {
    // Views into this exception's own copy, shared (never moved) by its copies.
    result_.user_id = std::string_view(*texts_).substr(0, result.user_id.size());
    result_.model = std::string_view(*texts_).substr(result.user_id.size());
  }
  // A copy shares the texts (copying never throws, as an exception's copy must not).
  LimitExceeded(const LimitExceeded&) noexcept = default;
  LimitExceeded& operator=(const LimitExceeded&) noexcept = default;

  [[nodiscard]] const GuardResult& result() const noexcept { return result_; }

 private:
  std::shared_ptr<const std::string> texts_;  // user_id then model
  GuardResult result_;
};

}  // namespace paygent
