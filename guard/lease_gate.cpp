// The gate's side of budget leases (docs/leases.md, "The holder"): a call's lease entries are
// made here on first use, and a call whose lease has no room is decided here. Both are cold: a
// call with room in its lease is judged inside Engine::admit's CAS like any other limit.
#include <cstddef>
#include <limits>

#include "guard/internal/engine.h"
#include "meter/internal/str_cat.h"

namespace paygent::internal {
namespace {

// The amount at which a limit gates hard (plan max x hard_gate_at), in its unit: a call fits iff
// usage + estimate <= it (Engine's judge, in exact integers).
std::int64_t cap_of(std::int64_t max, Ppm hard) noexcept {
  const __int128 v = static_cast<__int128>(max) * hard / kPpmOne;
  return v > INT64_MAX ? INT64_MAX : v < 0 ? 0 : static_cast<std::int64_t>(v);
}

// A hard verdict on `leased` (the lease's limit) with `reason`; current_value counts the call.
GuardResult hard_result(const CallSite& site, const LimitEntry& leased, GateReason reason, std::int64_t current,
                        std::int64_t estimate) {
  GuardResult r;
  r.status = GateStatus::kHardGate;
  r.reason = reason;
  r.user_id = site.user->key;
  if (leased.model != nullptr) r.model = leased.model->name;
  r.limit_value = leased.max;
  r.current_value = current;
  r.call_estimate = estimate;
  r.usage_pct = leased.max > 0 ? static_cast<double>(current) / static_cast<double>(leased.max) : 1.0;
  r.resets_at = leased.resets_ns == std::numeric_limits<std::int64_t>::max() ? absl::InfiniteFuture()
                                                                               : absl::FromUnixNanos(leased.resets_ns);
  r.threshold = site.plan->hard;
  return r;
}

}  // namespace

Lease* Engine::lease_of(const CallSite& site, const LimitEntry& leased) noexcept {
  if (!leases || leases->unsupported()) return nullptr;
  try {
    const std::int64_t cap = cap_of(leased.max, site.plan->hard);
    if (leased.window == LimitWindow::kSession) {
      SessionWindow& w = *site.session;
      if (Lease* l = w.lease.load(std::memory_order_acquire)) return l;
      // One pointer per (user, limit, start): threads that race here store the same one.
      Lease* l = leases->lease(site.user->key, str_cat("session_spend:", w.session_id), w.start_ns,
                               std::numeric_limits<std::int64_t>::max(), &w.committed, cap);
      w.lease.store(l, std::memory_order_release);
      return l;
    }
    PeriodWindow& w = *site.period;
    PeriodLeases* made = w.leases.load(std::memory_order_acquire);
    if (made == nullptr) {
      std::lock_guard<std::mutex> lock(site.user->mu);
      made = w.leases.load(std::memory_order_acquire);
      if (made == nullptr) {
        made = arena.make<PeriodLeases>();
        made->models = arena.make_array<std::atomic<Lease*>>(w.slots);
        w.leases.store(made, std::memory_order_release);
      }
    }
    std::atomic<Lease*>* slot = &made->total;
    std::string key = "total_spend";
    if (leased.model != nullptr) {
      const auto* mc = reinterpret_cast<const char*>(leased.counter) - offsetof(ModelCounters, committed_tokens);
      const std::ptrdiff_t i = (mc - reinterpret_cast<const char*>(w.models)) / static_cast<std::ptrdiff_t>(sizeof(ModelCounters));
      if (i < 0 || static_cast<std::size_t>(i) >= w.slots) return nullptr;  // judged without a slot: no lease
      slot = &made->models[i];
      key = str_cat("model_limit:", leased.model->name);
    }
    if (Lease* l = slot->load(std::memory_order_acquire)) return l;
    Lease* l = leases->lease(site.user->key, key, w.start_ns, w.end_ns, leased.counter, cap);
    slot->store(l, std::memory_order_release);
    return l;
  } catch (...) {
    report_error(absl::InternalError("leases: a lease could not be made; the limit is gated without it"));
    return nullptr;
  }
}

void Engine::unhold(const CallSite& site, std::int64_t est_cost, std::int64_t est_tokens) noexcept {
  const LimitTable& t = site.limits;
  for (int i = 0; i < t.count; ++i) {
    if (!t[i].shares_hold) t[i].counter->fetch_sub(t[i].estimate(est_cost, est_tokens), std::memory_order_acq_rel);
  }
}

GuardResult Engine::retry_lease(CallSite& site, std::int64_t est_cost, std::int64_t est_tokens, Verdicts& verdicts,
                                bool hold) noexcept {
  LimitTable& t = site.limits;
  // The bound a decision allows a lease for this call (a grant, or the outage rule with no answer
  // yet): judged again against it rather than against the lease's own, which the keeper moves.
  // The table points back to the leases' own bounds when this returns.
  std::atomic<std::int64_t> decided[LimitTable::kMax];
  const std::atomic<std::int64_t>* own[LimitTable::kMax];
  for (int i = 0; i < t.count; ++i) own[i] = t[i].ceiling;
  GuardResult r = retry_lease_with(site, est_cost, est_tokens, verdicts, hold, decided);
  for (int i = 0; i < t.count; ++i) t[i].ceiling = own[i];
  return r;
}

GuardResult Engine::retry_lease_with(CallSite& site, std::int64_t est_cost, std::int64_t est_tokens,
                                     Verdicts& verdicts, bool hold, std::atomic<std::int64_t>* decided) noexcept {
  LimitTable& t = site.limits;
  for (int attempt = 0; attempt <= LimitTable::kMax; ++attempt) {
    if (verdicts.best.status != GateStatus::kHardGate || verdicts.best.reason != GateReason::kLeaseExhausted) break;
    // The first lease the call does not fit.
    int k = -1;
    for (int i = 1; i < t.count && k < 0; ++i) {
      const std::int64_t e = t[i].estimate(est_cost, est_tokens);
      if (t[i].retry_once && e > 0 && t[i].counter->load(std::memory_order_acquire) + e > t[i].limit()) {
        k = i;
      }
    }
    if (k >= 0) {
      const LimitEntry& leased = t[k - 1];
      const std::int64_t e = leased.estimate(est_cost, est_tokens);
      Lease* lease = lease_of(site, leased);
      if (lease == nullptr) return verdicts.best;
      const std::int64_t used_after = leased.counter->load(std::memory_order_acquire) + e;
      const LeaseRoom room = leases->room(*lease, used_after, cap_of(leased.max, site.plan->hard), now_ns());
      const std::int64_t picture = leased.counter->load(std::memory_order_acquire) +
                                   leased.external->load(std::memory_order_relaxed) + e;
      switch (room.verdict) {
        case LeaseVerdict::kFits:
        case LeaseVerdict::kOutage:
          if (used_after <= room.bound) {
            decided[k].store(room.bound, std::memory_order_relaxed);
            t[k].ceiling = &decided[k];
            break;
          }
          [[fallthrough]];  // the outage share is used up
        case LeaseVerdict::kHeldElsewhere:
          return verdicts.best = hard_result(site, leased, GateReason::kLeaseExhausted, picture, e);
        case LeaseVerdict::kCapReached: {
          // Every process's spend and leases fill the cap: the limit's own gate, as without leases.
          const std::int64_t cap = cap_of(leased.max, site.plan->hard);
          return verdicts.best = hard_result(site, leased, leased.reason, std::max(picture, cap + e), e);
        }
        case LeaseVerdict::kStrictClosed: {
          GuardResult r = hard_result(site, leased, GateReason::kBackendUnavailable, picture, e);
          r.usage_pct = 1.0;
          return verdicts.best = r;
        }
      }
    }
    // Judged again with what was decided (or room that appeared meanwhile).
    verdicts = Verdicts{};
    if (hold) {
      admit(site, est_cost, est_tokens, verdicts);
    } else {
      evaluate(site, est_cost, est_tokens, verdicts);
    }
  }
  return verdicts.best;
}

}  // namespace paygent::internal
