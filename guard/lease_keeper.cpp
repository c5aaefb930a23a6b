// The lease keeper: the holder's side of budget leases (see guard/internal/lease_keeper.h and
// docs/leases.md, "The holder").
#include "guard/internal/lease_keeper.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <utility>

#include "meter/internal/str_cat.h"

namespace paygent::internal {
namespace {

constexpr std::int64_t kMs = 1'000'000;
// The keeper looks at its leases this often (renewals, top-ups, idle releases).
constexpr std::int64_t kPollNs = 50 * kMs;
// A call that finds no room decides from an answer this fresh instead of asking again: a lease
// whose budget is held elsewhere is not asked for once per call.
constexpr std::int64_t kFreshAnswerNs = 25 * kMs;
// One exchange waits at most a quarter of the TTL, within [100 ms, 2 s] (the calls themselves
// wait lease_wait at most): a renewal that cannot finish before its grant expires fails, and the
// outage rule applies.
constexpr std::int64_t kMinExchangeNs = 100 * kMs, kMaxExchangeNs = 2'000 * kMs;
// Entries per request (the backend's limit).
constexpr std::size_t kMaxEntries = 100;
// A grant is used until this long before its TTL ends (a few of the keeper's rounds, and then some).
constexpr std::int64_t kExpiryMarginNs = 250 * kMs;
constexpr std::int64_t kMinBackoffNs = 250 * kMs;
constexpr std::int64_t kMaxBackoffNs = 5'000 * kMs;

// How long a call waits before asking again when "cap reached" may count its events twice.
constexpr std::chrono::milliseconds kUnsureRetry{5};
// A background slice is at most cap / kWantDivisor (a call's need may ask for more).
constexpr std::int64_t kWantDivisor = 16;

constexpr std::string_view kModelPrefix = "model_limit:";
constexpr std::string_view kSessionPrefix = "session_spend:";

std::int64_t sat_mul(std::int64_t a, std::int64_t b) noexcept {
  const __int128 v = static_cast<__int128>(a) * b;
  return v > INT64_MAX ? INT64_MAX : static_cast<std::int64_t>(v);
}

void store_max(std::atomic<std::int64_t>& a, std::int64_t v) noexcept {
  std::int64_t cur = a.load(std::memory_order_relaxed);
  while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

}  // namespace

LeaseKeeper::LeaseKeeper(LeaseOptions options, LocalStore* store)
    : options_(std::move(options)), store_(store), holder_(new_holder_id()) {
  thread_ = std::thread([this] { run(); });
}

LeaseKeeper::~LeaseKeeper() { stop(); }

std::int64_t LeaseKeeper::outage_share_of(std::int64_t cap) const noexcept {
  const double share = std::clamp(options_.outage_share, 0.0, 1.0) * static_cast<double>(cap);
  return share >= 9.2e18 ? INT64_MAX : static_cast<std::int64_t>(share);
}

Lease* LeaseKeeper::lease(std::string_view user_id, std::string_view limit, std::int64_t start_ns,
                          std::int64_t end_ns, const std::atomic<std::int64_t>* used, std::int64_t cap) {
  std::string key = str_cat(user_id, std::string_view("\0", 1), limit, std::string_view("\0", 1), start_ns);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = by_key_.try_emplace(std::move(key));
  if (inserted) {
    auto l = std::make_unique<Lease>(std::string(user_id), std::string(limit), start_ns, end_ns, used);
    // Never granted: the outage rule lets it admit outage_share x cap beyond what it has now.
    const std::int64_t now_used = used->load(std::memory_order_acquire);
    l->ceiling.store(now_used, std::memory_order_relaxed);
    l->cap.store(cap, std::memory_order_relaxed);
    l->share.store(outage_share_of(cap), std::memory_order_relaxed);
    l->bound.store(bound_of(*l, 0), std::memory_order_release);
    l->used_seen = now_used;
    l->used_changed_ns = options_.now_ns();
    it->second = std::move(l);
    active_.push_back(it->second.get());
  }
  return it->second.get();
}

void LeaseKeeper::wake() noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  wake_cv_.notify_one();
}

std::int64_t LeaseKeeper::bound_of(const Lease& l, std::int64_t now_ns) const noexcept {
  if (unsupported()) return INT64_MAX;  // gated as without leases
  const std::int64_t ceiling = l.ceiling.load(std::memory_order_relaxed);
  if (!reachable()) {
    if (options_.strict_backend) return Lease::kNoBound;  // every call is gated (Engine::backend_closed)
    const std::int64_t share = l.share.load(std::memory_order_relaxed);
    return share > INT64_MAX - ceiling ? INT64_MAX : ceiling + share;
  }
  return l.live && now_ns < l.expires_ns.load(std::memory_order_relaxed) ? ceiling : Lease::kNoBound;
}

LeaseRoom LeaseKeeper::decide(const Lease& l, std::int64_t used_after, bool answered) const noexcept {
  if (unsupported()) return {LeaseVerdict::kFits, INT64_MAX};
  const std::int64_t now = options_.now_ns();
  if (answered && l.answer.load(std::memory_order_acquire) == Lease::kGranted &&
      !stopped_.load(std::memory_order_relaxed) && now < l.expires_ns.load(std::memory_order_acquire)) {
    const std::int64_t ceiling = l.ceiling.load(std::memory_order_relaxed);
    if (used_after <= ceiling) return {LeaseVerdict::kFits, ceiling};
    // Budget somewhere (held by other leases, or free but not granted to this call): never a
    // false "limit reached". Nothing anywhere: the cap is reached.
    if (l.held_elsewhere.load(std::memory_order_relaxed) > 0 || l.remaining.load(std::memory_order_relaxed) > 0) {
      return {LeaseVerdict::kHeldElsewhere, ceiling};
    }
    return {LeaseVerdict::kCapReached, ceiling};
  }
  // No answer: the backend is unreachable, slow, or the holder is stopping.
  const std::int64_t ceiling = l.ceiling.load(std::memory_order_relaxed);
  if (options_.strict_backend) return {LeaseVerdict::kStrictClosed, ceiling};
  const std::int64_t share = l.share.load(std::memory_order_relaxed);
  return {LeaseVerdict::kOutage, share > INT64_MAX - ceiling ? INT64_MAX : ceiling + share};
}

LeaseRoom LeaseKeeper::room(Lease& l, std::int64_t used_after, std::int64_t cap, std::int64_t now_ns) noexcept {
  if (unsupported()) return {LeaseVerdict::kFits, INT64_MAX};
  l.cap.store(cap, std::memory_order_relaxed);
  if (stopped_.load(std::memory_order_relaxed)) return decide(l, used_after, false);
  // Asked a moment ago and nothing was left to grant: that answer stands (a lease whose budget is
  // held elsewhere is not asked for once per call).
  if (l.answer.load(std::memory_order_acquire) == Lease::kGranted &&
      now_ns - l.answer_ns.load(std::memory_order_relaxed) < kFreshAnswerNs &&
      l.remaining.load(std::memory_order_relaxed) == 0 && !l.answer_unsure.load(std::memory_order_relaxed)) {
    return decide(l, used_after, true);
  }
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.lease_wait);
  for (;;) {
    const LeaseRoom room = ask_and_wait(l, used_after, deadline);
    // "Cap reached" while some of this holder's events were delivered but not yet marked acked
    // may count them twice (in `spent` and in used - acked): asked again, within lease_wait, once
    // the syncer has marked them. Once per acked total: when a wait saw no new ack (the events
    // were not in flight, or the syncer cannot deliver), the next calls do not wait again for it.
    if (room.verdict != LeaseVerdict::kCapReached || !l.answer_unsure.load(std::memory_order_acquire)) return room;
    const std::int64_t acked = l.answer_acked.load(std::memory_order_acquire);
    const std::uint64_t reads = store_ != nullptr ? store_->outbox_reads() : 0;
    if (acked == l.unsure_waited_out.load(std::memory_order_relaxed) &&
        reads == l.unsure_waited_reads.load(std::memory_order_relaxed)) {
      return room;
    }
    if (std::chrono::steady_clock::now() + kUnsureRetry >= deadline) {
      l.unsure_waited_out.store(acked, std::memory_order_relaxed);
      l.unsure_waited_reads.store(reads, std::memory_order_relaxed);
      return room;
    }
    std::this_thread::sleep_for(kUnsureRetry);
  }
}

LeaseRoom LeaseKeeper::ask_and_wait(Lease& l, std::int64_t used_after,
                                    std::chrono::steady_clock::time_point deadline) noexcept {
  store_max(l.need, std::max<std::int64_t>(used_after - l.used->load(std::memory_order_acquire), 0));
  const std::uint64_t mine = l.asks.fetch_add(1, std::memory_order_acq_rel) + 1;
  l.requested.store(true, std::memory_order_release);
  bool answered = false;
  try {
    std::unique_lock<std::mutex> lock(mu_);
    if (!l.active) {  // released while idle: back in the rounds
      l.active = true;
      active_.push_back(&l);
    }
    wake_ = true;
    wake_cv_.notify_one();
    // While the backend is known to be away the call is not held up by the outage itself.
    if (reachable()) {
      answered_cv_.wait_until(lock, deadline, [&] {
        return l.asks_answered.load(std::memory_order_acquire) >= mine || stop_;
      });
      answered = l.asks_answered.load(std::memory_order_acquire) >= mine;
    }
  } catch (...) {  // a mutex failure: decide with what is known
  }
  return decide(l, used_after, answered);
}

void LeaseKeeper::stop() noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  wake_cv_.notify_all();
  answered_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaseKeeper::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    wake_cv_.wait_for(lock, std::chrono::nanoseconds(kPollNs), [&] { return wake_ || stop_; });
    if (stop_) break;
    wake_ = false;
    lock.unlock();
    try {
      round(false);
    } catch (...) {
      options_.report_error(absl::InternalError("leases: a round failed; calls use the outage rule meanwhile"));
    }
    lock.lock();
  }
  lock.unlock();
  try {
    if (reachable() && !unsupported()) round(true);  // every live lease back
  } catch (...) {
  }
  stopped_.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> g(mu_);
  }
  answered_cv_.notify_all();
}

std::int64_t LeaseKeeper::acked_of(const Lease& l, std::int64_t used) {
  if (store_ == nullptr) return 0;
  const std::string_view key = l.limit;
  std::string_view session;
  std::int64_t end = l.period_end_ns;
  if (key.starts_with(kSessionPrefix)) {
    session = key.substr(kSessionPrefix.size());
    end = INT64_MAX;
  }
  auto totals = store_->totals(l.user_id, l.period_start_ns, end, /*acked_only=*/true, session);
  if (!totals.ok()) {
    // An acked of 0 only makes the headroom larger: budget may wait, never overshoot.
    options_.report_error(totals.status());
    return 0;
  }
  std::int64_t acked = totals->cost;
  if (key.starts_with(kModelPrefix)) {
    const std::string_view model = key.substr(kModelPrefix.size());
    acked = 0;
    for (const auto& m : totals->by_model) {
      if (m.model == model) acked += m.input_tokens + m.output_tokens;
    }
  }
  return std::clamp<std::int64_t>(acked, 0, std::max<std::int64_t>(used, 0));
}

void LeaseKeeper::round(bool final_release) {
  const std::int64_t now = options_.now_ns();
  if (unsupported()) return;
  std::vector<Lease*> leases;
  {
    std::lock_guard<std::mutex> lock(mu_);
    leases = active_;
  }
  // An expired grant, the start or end of an outage: the bound follows (the keeper is its only
  // writer once a lease is made).
  for (Lease* l : leases) l->bound.store(bound_of(*l, now), std::memory_order_release);
  if (!final_release && !reachable() && now < retry_at_ns_) return;  // backing off
  const std::int64_t ttl = ttl_ns();
  std::vector<Pending> batch;
  std::vector<Lease*> retire;
  for (Lease* l : leases) {
    const std::int64_t used = std::max<std::int64_t>(l->used->load(std::memory_order_acquire), 0);
    if (used != l->used_seen) {
      l->used_seen = used;
      l->used_changed_ns = now;
    }
    bool release = false;
    if (final_release || l->period_end_ns <= now) {
      release = l->live;
      if (!final_release) retire.push_back(l);
      if (!release) continue;
    } else if (l->requested.exchange(false, std::memory_order_acq_rel)) {
      l->used_changed_ns = now;  // a call waits: the lease is in use
    } else if (!l->live) {
      continue;
    } else if (now - l->used_changed_ns >= ttl) {
      release = true;  // no call for one TTL
      retire.push_back(l);
    } else {
      const std::int64_t expires = l->expires_ns.load(std::memory_order_relaxed);
      const std::int64_t room = l->ceiling.load(std::memory_order_relaxed) - used;
      if (now < expires - ttl / 3 && room >= l->slice / 2) continue;  // nothing to do yet
    }
    Pending p{l, LeaseAsk{}, l->asks.load(std::memory_order_acquire)};  // before `need` is read
    LeaseAsk& a = p.ask;
    a.user_id = l->user_id;
    a.limit = l->limit;
    a.period_start_ns = l->period_start_ns;
    a.period_end_ns = l->period_end_ns;
    a.cap = std::max<std::int64_t>(l->cap.load(std::memory_order_relaxed), 0);
    a.release = release;
    if (release) {
      // Stop admitting first (docs/leases.md: the holder has lowered its ceiling to used).
      l->bound.store(Lease::kNoBound, std::memory_order_release);
      l->live = false;
      l->expires_ns.store(0, std::memory_order_release);
      l->ceiling.store(used, std::memory_order_release);
      a.used = std::max<std::int64_t>(l->used->load(std::memory_order_acquire), used);
    } else {
      a.used = used;
      a.need = l->need.exchange(0, std::memory_order_acq_rel);
      l->typical_need = std::max(l->typical_need, a.need);
      // Comfortable: twice what it used in one TTL at its recent rate, and a few calls' worth.
      std::int64_t per_ttl = 0;
      if (l->request_ns > 0 && now > l->request_ns) {
        const __int128 v =
            static_cast<__int128>(std::max<std::int64_t>(used - l->used_at_request, 0)) * ttl / (now - l->request_ns);
        per_ttl = v > INT64_MAX / 2 ? INT64_MAX / 2 : static_cast<std::int64_t>(v);
      }
      // At most a sixteenth of the cap beyond the call's need: a process alone at first must not
      // take what others will ask for soon (the grant's fair share only counts live holders).
      a.want = std::min({std::max({a.need, 2 * per_ttl, sat_mul(l->typical_need, 4)}), a.cap / kWantDivisor});
      a.want = std::max(a.want, a.need);
    }
    a.acked = acked_of(*l, a.used);
    l->used_at_request = a.used;
    l->request_ns = now;
    batch.push_back(std::move(p));
    if (batch.size() == kMaxEntries) {
      send(batch, now);
      batch.clear();
      if (!reachable() && !final_release) break;
    }
  }
  if (!batch.empty()) send(batch, now);
  if (!retire.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (Lease* l : retire) {
      if (l->requested.load(std::memory_order_acquire)) continue;  // a call came meanwhile
      l->active = false;
      active_.erase(std::find(active_.begin(), active_.end(), l));
    }
  }
}

void LeaseKeeper::send(std::vector<Pending>& batch, std::int64_t sent_ns) {
  std::vector<LeaseAsk> asks;
  asks.reserve(batch.size());
  for (const Pending& p : batch) asks.push_back(p.ask);
  std::string body = encode_lease_request(holder_, asks);
  exchanges_.fetch_add(1, std::memory_order_relaxed);
  const absl::Duration timeout = absl::Nanoseconds(std::clamp(ttl_ns() / 4, kMinExchangeNs, kMaxExchangeNs));
  absl::StatusOr<HttpReply> reply =
      options_.exchange ? options_.exchange(std::move(body), timeout)
                        : http_exchange(options_.backend_url, "POST", "/api/v1/leases", options_.api_key,
                                        std::move(body), timeout);
  if (!reply.ok()) return fail(batch, reply.status());
  if (reply->status == 404 || reply->status == 405) {
    if (!unsupported_.exchange(true)) {
      options_.report_error(absl::UnimplementedError(
          "leases: the backend has no POST /api/v1/leases (a paygentd older than budget leases): each process "
          "gates on its own picture of the budget, as before, so processes together may pass a cap (said once)"));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [key, l] : by_key_) l->bound.store(INT64_MAX, std::memory_order_release);
      for (Pending& p : batch) answered(p);
    }
    answered_cv_.notify_all();
    return;
  }
  if (reply->status != 200) {
    return fail(batch, absl::UnavailableError(str_cat("leases: the backend answered ", reply->status, ": ",
                                                      std::string_view(reply->body).substr(0, 200))));
  }
  absl::StatusOr<LeaseReply> parsed = parse_lease_reply(reply->body, asks);
  if (!parsed.ok()) return fail(batch, parsed.status());
  const std::int64_t ttl = sat_mul(parsed->ttl_ms, kMs);
  ttl_ns_.store(ttl, std::memory_order_relaxed);
  reachable_.store(true, std::memory_order_relaxed);
  backoff_ns_ = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) apply(batch[i], parsed->leases[i], sent_ns, ttl);
  {
    std::lock_guard<std::mutex> lock(mu_);
  }
  answered_cv_.notify_all();
}

void LeaseKeeper::apply(Pending& p, const LeaseAnswer& a, std::int64_t sent_ns, std::int64_t ttl_ns) noexcept {
  Lease& l = *p.lease;
  l.remaining.store(a.remaining, std::memory_order_relaxed);
  l.held_elsewhere.store(a.held_elsewhere, std::memory_order_relaxed);
  l.holders.store(a.holders, std::memory_order_relaxed);
  const std::int64_t cap = p.ask.cap;
  const std::int64_t fair = a.holders > 0 ? a.remaining / a.holders : a.remaining;
  l.share.store(std::min(fair, outage_share_of(cap)), std::memory_order_relaxed);
  if (p.ask.release) {
    l.live = false;
    l.slice = 0;
  } else {
    // The grant, counted from when the request was sent, less a margin for the keeper's rounds
    // (which lower the bound of an expired grant): the holder stops using a lease before the
    // backend frees it.
    l.ceiling.store(a.ceiling, std::memory_order_relaxed);
    l.expires_ns.store(sent_ns + ttl_ns - std::min<std::int64_t>(kExpiryMarginNs, ttl_ns / 4), std::memory_order_relaxed);
    l.live = true;
    l.slice = a.ceiling - p.ask.used;
  }
  l.bound.store(bound_of(l, options_.now_ns()), std::memory_order_release);
  l.answer_unsure.store(p.ask.acked < p.ask.used, std::memory_order_relaxed);
  l.answer_acked.store(p.ask.acked, std::memory_order_relaxed);
  l.answer_ns.store(options_.now_ns(), std::memory_order_relaxed);
  l.answer.store(Lease::kGranted, std::memory_order_release);
  answered(p);
}

void LeaseKeeper::answered(Pending& p) noexcept {
  Lease& l = *p.lease;
  if (!p.ask.release && l.asks.load(std::memory_order_acquire) > p.asks) {
    // Calls that asked after this request was made may have had their need taken by it: asked
    // again in the next round, with that need.
    store_max(l.need, p.ask.need);
    l.requested.store(true, std::memory_order_release);
  }
  std::uint64_t cur = l.asks_answered.load(std::memory_order_relaxed);
  while (p.asks > cur && !l.asks_answered.compare_exchange_weak(cur, p.asks, std::memory_order_acq_rel)) {
  }
  l.rounds.fetch_add(1, std::memory_order_acq_rel);
}

void LeaseKeeper::fail(std::vector<Pending>& batch, absl::Status why) {
  const std::int64_t now = options_.now_ns();
  backoff_ns_ = std::clamp<std::int64_t>(backoff_ns_ * 2, kMinBackoffNs, kMaxBackoffNs);
  retry_at_ns_ = now + backoff_ns_;
  if (reachable_.exchange(false, std::memory_order_relaxed)) {
    options_.report_error(absl::Status(
        why.code(), str_cat(why.message(), " (leases: the backend cannot be reached; each call is admitted within its "
                                           "lease plus its outage share until it can be, said once per outage)")));
  }
  {
    // The outage rule from now on, for every lease (the keeper is the bound's only writer).
    std::lock_guard<std::mutex> lock(mu_);
    for (Lease* l : active_) l->bound.store(bound_of(*l, now), std::memory_order_release);
  }
  for (Pending& p : batch) {
    Lease& l = *p.lease;
    if (!p.ask.release) {
      // Asked again once the backend is back, with what the waiting calls needed.
      store_max(l.need, p.ask.need);
      if (p.ask.need > 0) l.requested.store(true, std::memory_order_release);
    }
    l.answer.store(Lease::kFailed, std::memory_order_release);
    answered(p);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
  }
  answered_cv_.notify_all();
}

}  // namespace paygent::internal
