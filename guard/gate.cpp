// GuardResult's words for people (see include/paygent/guard_result.h).
#include <chrono>
#include <cinttypes>
#include <string>

#include "meter/internal/str_cat.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "paygent/guard_result.h"
#include "paygent/money.h"

namespace paygent {
namespace {

std::string with_commas(std::int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out = v < 0 ? "-" : "";
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// Nano-credits as credits: "1,500", "0.25", "12.000000001".
std::string credits_text(std::int64_t nanos) {
  std::string out = with_commas(nanos / 1'000'000'000);
  std::int64_t frac = nanos % 1'000'000'000;
  if (frac < 0) frac = -frac;
  if (frac != 0) {
    std::string digits = std::to_string(frac);
    digits.insert(0, 9 - digits.size(), '0');
    while (digits.back() == '0') digits.pop_back();
    out += "." + digits;
  }
  return out;
}

// "2026-12-01 00:00 UTC": absl::FormatTime("%Y-%m-%d %H:%M UTC") without its format parser (with
// printf's %f, ~25 us of a soft-gated call's path through the proxy, cold), and the date from
// <chrono>'s calendar arithmetic rather than absl::ToCivilMinute (its time zone lookup took
// another ~15 us of each soft-gated call's answer through the proxy, cold).
std::string minute_utc(absl::Time t) {
  using namespace std::chrono;
  // Years 1000-9999 here (four digits, as absl writes them); any other time (never a real reset:
  // a caller's own GuardResult may hold one, InfinitePast included) through absl itself.
  static const std::int64_t kFirst = -30'610'224'000;  // 1000-01-01 00:00:00 UTC
  static const std::int64_t kEnd = 253'402'300'800;    // 10000-01-01 00:00:00 UTC
  if (t < absl::FromUnixSeconds(kFirst) || t >= absl::FromUnixSeconds(kEnd)) {
    return absl::FormatTime("%Y-%m-%d %H:%M UTC", t, absl::UTCTimeZone());
  }
  const std::int64_t seconds = absl::ToUnixSeconds(t);  // rounded toward the past
  const std::int64_t minutes = seconds >= 0 ? seconds / 60 : (seconds - 59) / 60;
  const sys_days day{days{minutes >= 0 ? minutes / 1440 : (minutes - 1439) / 1440}};
  const std::int64_t in_day = minutes - day.time_since_epoch().count() * 1440;
  const year_month_day date{day};
  const int y = static_cast<int>(date.year());
  std::string out = {static_cast<char>('0' + y / 1000), static_cast<char>('0' + y / 100 % 10),
                     static_cast<char>('0' + y / 10 % 10), static_cast<char>('0' + y % 10)};
  auto two = [&](char before, std::int64_t v) {
    out += before;
    out += static_cast<char>('0' + v / 10);
    out += static_cast<char>('0' + v % 10);
  };
  two('-', static_cast<unsigned>(date.month()));
  two('-', static_cast<unsigned>(date.day()));
  two(' ', in_day / 60);
  two(':', in_day % 60);
  out += " UTC";
  return out;
}

}  // namespace

std::string_view gate_status_name(GateStatus s) noexcept {
  switch (s) {
    case GateStatus::kOk: return "ok";
    case GateStatus::kSoftGate: return "soft_gate";
    case GateStatus::kHardGate: return "hard_gate";
    case GateStatus::kUnmetered: return "unmetered";
  }
  return "unknown";
}

std::string GuardResult::gate_reason() const {
  switch (reason) {
    case GateReason::kNone: return "";
    case GateReason::kTotalSpend: return "total_spend";
    case GateReason::kSessionSpend: return "session_spend";
    case GateReason::kModelLimit: return internal::str_cat("model_limit:", model);
    case GateReason::kBackendUnavailable: return "backend_unavailable";
    case GateReason::kLeaseExhausted: return "lease_exhausted";
    case GateReason::kCreditWallet: return "credit_wallet";
  }
  return "";
}

std::string GuardResult::message() const {
  if (status == GateStatus::kUnmetered) return "unmetered: the call is outside any paygent::Context";
  if (reason == GateReason::kNone) return "ok: the plan sets no limit on this call";
  if (reason == GateReason::kBackendUnavailable) {
    return "hard gate: backend_unavailable: strict_backend is on and the Paygent backend cannot be reached; calls "
           "resume when it answers";
  }
  if (reason == GateReason::kLeaseExhausted) {
    return "hard gate: lease_exhausted: budget held by other processes: the rest of the limit is leased to other "
           "processes serving this user; it clears when their leases are used, released or expire";
  }
  const char* head = status == GateStatus::kHardGate ? "hard gate" : status == GateStatus::kSoftGate ? "soft gate" : "ok";
  if (reason == GateReason::kCreditWallet) {
    const std::string used = internal::str_cat(credits_text(current_value), " credits charged of ",
                                               credits_text(limit_value), " prepaid");
    if (status == GateStatus::kHardGate) {
      return internal::str_cat(head, ": credit_wallet: ", used, "; the wallet is empty: top it up to continue");
    }
    return internal::str_cat(head, ": credit_wallet at ", internal::one_decimal(usage_pct * 100.0), "% (", used, ")");
  }
  std::string when = resets_at == absl::InfiniteFuture() ? std::string("never") : minute_utc(resets_at);
  const char* resets = reason == GateReason::kSessionSpend ? "resets if idle until" : "resets";
  const bool tokens = reason == GateReason::kModelLimit;
  auto amount = [&](std::int64_t v) { return tokens ? with_commas(v) : format_usd(v); };
  const char* window = reason == GateReason::kSessionSpend ? " this session" : " this period";
  if (status == GateStatus::kHardGate) {
    // What was used before this call, and what the call would add: a refused call's own estimate
    // is not spend.
    const std::int64_t before = current_value - call_estimate;
    std::string used = tokens ? internal::str_cat(with_commas(before), " of ", with_commas(limit_value), " ", model,
                                                  " tokens", window)
                              : internal::str_cat(format_usd(before), " spent of ", format_usd(limit_value), window);
    if (call_estimate > 0) internal::str_append(&used, ", this call would add up to ", amount(call_estimate));
    return internal::str_cat(head, ": ", gate_reason(), ": ", used, "; ", resets, " ", when);
  }
  std::string amounts = internal::str_cat(amount(current_value), " of ", amount(limit_value),
                                          tokens ? internal::str_cat(" ", model, " tokens") : std::string(), window);
  return internal::str_cat(head, ": ", gate_reason(), " at ", internal::one_decimal(usage_pct * 100.0), "% (", amounts,
                           "); ", resets, " ", when);
}

}  // namespace paygent
