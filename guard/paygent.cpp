// paygent::Paygent and paygent::Reservation (see include/paygent/paygent.h).
#include "paygent/paygent.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <utility>

#include "meter/internal/str_cat.h"
#include "guard/internal/engine.h"
#include "guard/internal/inside.h"

namespace paygent {

using internal::CallSite;
using internal::Engine;
using internal::Inside;

std::string EventId::to_string() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return std::string(buf, 32);
}

// --- Reservation ----------------------------------------------------------------------------------

Reservation::Reservation(Reservation&& other) noexcept { *this = std::move(other); }

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr) owner_->release(*this);  // give back what this one held
    result_ = other.result_;
    owner_ = std::exchange(other.owner_, nullptr);
    user_ = other.user_;
    period_ = other.period_;
    session_ = other.session_;
    model_ = other.model_;
    price_ = other.price_;
    price_source_ = other.price_source_;
    context_ = std::move(other.context_);
    cost_ = other.cost_;
    input_tokens_ = other.input_tokens_;
    output_tokens_ = other.output_tokens_;
    output_that_fits_ = other.output_that_fits_;
    started_ns_ = other.started_ns_;
    media_ = other.media_;
  }
  return *this;
}

Reservation::~Reservation() {
  if (owner_ != nullptr) owner_->release(*this);
}

// --- Paygent: creation ----------------------------------------------------------------------------

namespace {

// The result of a call gated by strict_backend while the backend is unreachable.
GuardResult backend_unavailable(std::string_view user_id) {
  GuardResult r;
  r.user_id = user_id;
  r.status = GateStatus::kHardGate;
  r.reason = GateReason::kBackendUnavailable;
  r.usage_pct = 1.0;
  r.threshold = kPpmOne;
  return r;
}

[[gnu::noinline]] GuardResult unmetered() {
  GuardResult r;
  r.status = GateStatus::kUnmetered;
  return r;
}

absl::Status shut_down_error() { return absl::UnavailableError("this Paygent is shut down"); }

// The process-wide instances: never freed (threads may call them during static destruction), shut
// down at exit. Plain pointers and a mutex with a trivial destructor: nothing here is destroyed.
std::mutex g_instance_mu;
Paygent* g_instance = nullptr;                 // guarded by g_instance_mu
std::vector<Paygent*>* g_instances = nullptr;  // every one ever made; guarded by g_instance_mu
std::atomic<Paygent*> g_instance_ptr{nullptr};

void shut_down_instances_at_exit() {
  std::lock_guard<std::mutex> lock(g_instance_mu);
  for (Paygent* pg : *g_instances) pg->shutdown();
}

}  // namespace

Paygent::Paygent(std::unique_ptr<Engine> engine) noexcept : engine_(std::move(engine)) {}

Paygent::~Paygent() = default;  // ~Engine shuts down, if shutdown() has not

void Paygent::operator delete(Paygent* pg, std::destroying_delete_t) noexcept {
  pg->shutdown();
  pg->unref();  // the owner's reference; open Reservations hold the others
}

void Paygent::unref() noexcept {
  if (engine_->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  this->~Paygent();
  ::operator delete(static_cast<void*>(this));
}

void Paygent::shutdown() noexcept {
  Engine& e = *engine_;
  std::call_once(e.shutdown_once, [&e] {
    const std::int64_t open = e.calls.close_and_wait();
    try {
      e.shutdown();
    } catch (...) {
      e.report_error(absl::InternalError("shutting down failed; queued events may be lost"));
    }
    if (open > 0) {
      e.report_error(absl::FailedPreconditionError(internal::str_cat(
          open, open == 1 ? " reservation was" : " reservations were",
          " still open when the Paygent shut down: their calls are not metered (settling, releasing or "
          "destroying them later does nothing)")));
    }
    // The bias that stood for the uncounted reservations becomes their count.
    e.refs.fetch_add(open - Engine::kUncountedRefs, std::memory_order_acq_rel);
  });
}

namespace {

// One part of a CallEstimate as the gate counts it: a negative count as none (it must never make
// room under a cap), and at most 2^40 tokens (max_output_tokens = INT64_MAX, a common "no limit",
// would otherwise wrap prompt + output, or the held sums, past int64 and admit a call at a full
// cap). 2^40 is past any model's context and still over every limit a plan can state in dollars.
constexpr std::int64_t kMaxEstimateTokens = std::int64_t{1} << 40;
[[gnu::always_inline]] inline std::int64_t estimate_tokens(std::int64_t n) noexcept {
  return std::clamp<std::int64_t>(n, 0, kMaxEstimateTokens);
}

// Whether the call's model has an output price (a limit in money bounds its output only then).
bool priced_output(const CallSite& site) noexcept { return site.price != nullptr && site.price->output > 0; }

// Whether the limit entry `l` bounds a call's output (output_that_fits reads it): a judged limit
// (not a lease: a slice of its limit, and a call past it asks for more; not an entry held but not
// judged), counted in tokens, or in money when the model is priced. A credit wallet bounds it
// only once empty (its calls are charged in credits after the fact, not by the token).
bool bounds_output(const internal::LimitEntry& l, bool priced) noexcept {
  if (l.reason == GateReason::kNone || l.retry_once) return false;
  return l.unit == internal::LimitUnit::kTokens || l.unit == internal::LimitUnit::kCredits ||
         (l.unit == internal::LimitUnit::kNanos && priced);
}

// The largest output that fits every limit of `site` (resolved for judging or for holding: the
// limited entries are the same) next to `prompt_tokens` of input, at most kMaxEstimateTokens (a
// budget of dollars on a cheap model leaves room for more tokens than an int64 holds); nullopt
// when none bounds it.
std::optional<std::int64_t> output_that_fits(const CallSite& site, std::int64_t prompt_tokens) {
  const internal::CompiledPlan& plan = *site.plan;
  std::optional<std::int64_t> best;
  auto bound = [&](__int128 n) {
    const std::int64_t capped = static_cast<std::int64_t>(std::clamp<__int128>(n, 0, kMaxEstimateTokens));
    best = best ? std::min(*best, capped) : capped;
  };
  const bool priced = priced_output(site);
  const __int128 prompt_picos = priced ? static_cast<__int128>(prompt_tokens) * site.price->input : 0;
  for (int i = 0; i < site.limits.count; ++i) {
    const internal::LimitEntry& l = site.limits[i];
    if (!bounds_output(l, priced)) continue;
    // Room left under the hard threshold of the limit, in its own unit.
    const __int128 room = static_cast<__int128>(l.limit()) * plan.hard / kPpmOne -
                          (l.counter->load() + l.external->load());
    if (l.unit == internal::LimitUnit::kTokens) {
      bound(room - prompt_tokens);
    } else if (l.unit == internal::LimitUnit::kCredits) {
      if (room <= 0) bound(0);
    } else {
      const __int128 left_picos = room * 1000 - prompt_picos + 499;  // half-up rounding slack
      bound(left_picos <= 0 ? 0 : left_picos / site.price->output);
    }
  }
  return best;
}

}  // namespace

Usage Paygent::estimate_of(const Reservation& r) noexcept {
  Usage estimate;
  estimate.input_tokens = r.input_tokens_;
  estimate.output_tokens = r.output_tokens_;
  return estimate;
}

void Paygent::end_after_shutdown(Reservation& r) noexcept {
  r.owner_ = nullptr;
  r.context_.reset();
  // The texts point into this Paygent, which unref() may free: result() keeps its numbers only.
  r.result_.user_id = {};
  r.result_.model = {};
  unref();  // may free this Paygent
}

absl::StatusOr<std::unique_ptr<Paygent>> Paygent::create(Options options) {
  if (!(options.lease_outage_share >= 0.0 && options.lease_outage_share <= 1.0)) {  // NaN too
    return absl::InvalidArgumentError(internal::str_cat("lease_outage_share: must be in [0, 1], is ",
                                                        std::to_string(options.lease_outage_share)));
  }
  if (options.lease_wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("lease_wait: must not be negative");
  }
  PlanConfig plans = std::move(options.plans);
  internal::CallsInFlight::prepare();  // before the first Paygent exists
  auto engine = std::make_unique<Engine>(std::move(options));
  if (absl::Status s = engine->install_plans(std::move(plans)); !s.ok()) return s;
  engine->open_store();
  return std::unique_ptr<Paygent>(::new Paygent(std::move(engine)));
}

Paygent& Paygent::init(Options options) {
  auto on_error = options.on_error;
  auto created = create(std::move(options));
  std::unique_ptr<Paygent> next;
  if (created.ok()) {
    next = std::move(created).value();
  } else {
    // Fail-open: an instance that meters nothing and gates nothing, and a word about why.
    if (on_error) {
      try {
        on_error(created.status());
      } catch (...) {
      }
    }
    Options pass_through;
    pass_through.local_store_path.clear();
    next = std::move(create(std::move(pass_through))).value();
  }
  std::lock_guard<std::mutex> lock(g_instance_mu);
  if (g_instances == nullptr) {
    g_instances = new std::vector<Paygent*>();  // never freed, as the instances
    std::atexit(shut_down_instances_at_exit);
  }
  if (g_instance) g_instance->flush().IgnoreError();
  // The previous instance stays alive and working (threads may still hold a reference from
  // instance()) until exit.
  g_instances->push_back(next.get());
  g_instance = next.release();
  g_instance_ptr.store(g_instance, std::memory_order_release);
  return *g_instance;
}

Paygent* Paygent::instance() noexcept { return g_instance_ptr.load(std::memory_order_acquire); }

// --- Paygent: plans and users ---------------------------------------------------------------------

absl::Status Paygent::set_plans(PlanConfig config) {
  Inside in(*engine_);
  if (!in) return shut_down_error();
  return engine_->install_plans(std::move(config));
}

absl::Status Paygent::set_plans_json(std::string_view json) {
  auto parsed = parse_plan_config(json);
  if (!parsed.ok()) return parsed.status();
  return set_plans(*std::move(parsed));
}

std::shared_ptr<const PlanConfig> Paygent::plans() const {
  return engine_->plans.load(std::memory_order_acquire)->config;
}

bool Paygent::gate_may_wait() const noexcept { return engine_->leases != nullptr; }

namespace {

absl::Status assign(Engine& engine, std::string_view user_id, std::string_view plan,
                    std::unique_ptr<internal::Assignment> a) {
  if (user_id.empty()) return absl::InvalidArgumentError("user_id: must not be empty");
  if (engine.plans.load(std::memory_order_acquire)->config->find(plan) == nullptr) {
    return absl::NotFoundError(internal::str_cat("plan \"", plan, "\" does not exist"));
  }
  a->plan = std::string(plan);
  engine.assign(engine.user_for(user_id, true), std::move(a));
  return absl::OkStatus();
}

}  // namespace

absl::Status Paygent::subscribe(std::string_view user_id, std::string_view plan, absl::Time period_start,
                                absl::Time period_end) {
  if (period_end <= period_start) {
    return absl::InvalidArgumentError("period_end: must be after period_start");
  }
  auto a = std::make_unique<internal::Assignment>();
  a->subscription = true;
  a->start_ns = absl::ToUnixNanos(period_start);
  a->end_ns = absl::ToUnixNanos(period_end);
  Inside in(*engine_);
  if (!in) return shut_down_error();
  return assign(*engine_, user_id, plan, std::move(a));
}

absl::Status Paygent::assign_plan(std::string_view user_id, std::string_view plan) {
  Inside in(*engine_);
  if (!in) return shut_down_error();
  return assign(*engine_, user_id, plan, std::make_unique<internal::Assignment>());
}

// --- Paygent: the call path -----------------------------------------------------------------------

GuardResult Paygent::check(std::string_view model, const CallEstimate& estimate) {
  Engine& e = *engine_;
  Inside in(e);
  if (!in) [[unlikely]] return unmetered();  // shut down: fail-open
  e.counters.checks.add();
  CallSite site;
  bool resolved = false;
  try {
    resolved = e.resolve_now(model, site);
  } catch (...) {
    e.report_error(absl::InternalError("check failed; the call proceeds unmetered"));
    return unmetered();
  }
  if (!resolved) {
    e.counters.unmetered.add();
    return unmetered();
  }
  // Built from evaluate()'s result rather than zeroed first: a GuardResult is 88 bytes, which GCC
  // zeroes with `rep stos` (~10 ns to start up on the hot path).
  internal::Verdicts verdicts;
  const std::int64_t prompt = estimate_tokens(estimate.prompt_tokens);
  const std::int64_t output = estimate_tokens(estimate.max_output_tokens);
  const std::int64_t est_tokens = prompt + output;
  const Nanos est_cost = e.estimate_cost(site.price, prompt, output);
  GuardResult r = e.evaluate(site, est_cost, est_tokens, verdicts);
  if (r.reason == GateReason::kLeaseExhausted) [[unlikely]] {  // a lease with no room: ask (cold)
    r = e.retry_lease(site, est_cost, est_tokens, verdicts, /*hold=*/false);
  }
  if (e.backend_closed()) r = verdicts.best = backend_unavailable(site.user->key);
  e.fire_gate_callbacks(site, verdicts);
  if (r.status == GateStatus::kHardGate && e.options.raise_on_hard_gate) throw LimitExceeded(r);
  return r;
}

Reservation Paygent::reserve(std::string_view model, const CallEstimate& estimate) {
  return reserve_for(nullptr, model, estimate_tokens(estimate.prompt_tokens), estimate_tokens(estimate.max_output_tokens),
                     nullptr, 0, nullptr, estimate.fit_output);
}

Reservation Paygent::reserve_for(const ContextData* context, std::string_view model, const std::int64_t prompt,
                                 std::int64_t output, const internal::MediaKey* media, const Nanos media_cost,
                                 const std::shared_ptr<const ContextData>* owner, const bool fit_output) {
  Engine& e = *engine_;
  Reservation res;
  Inside in(e);
  if (!in) {
    res.result_.status = GateStatus::kUnmetered;  // shut down: fail-open
    return res;
  }
  e.counters.checks.add();
  CallSite site;
  try {
    if (!e.resolve_now(model, site, internal::LimitUse::kHold, context)) {
      e.counters.unmetered.add();
      res.result_.status = GateStatus::kUnmetered;
      return res;
    }
  } catch (...) {
    e.report_error(absl::InternalError("reserve failed; the call proceeds unmetered"));
    res.result_.status = GateStatus::kUnmetered;
    return res;
  }
  std::optional<std::int64_t> fits;
  // The most this call can produce: its max_tokens, else the model's own maximum (the catalog's
  // entry of the name as called: a dated snapshot may have its own; 0 when unknown, and then what
  // fits is all that bounds it). Held at most what fits (at least 1 token, so that a call nothing
  // fits is still refused).
  const ModelPrice* listed = nullptr;
  if (fit_output && output == 0) {
    if (site.price_source == UsageEvent::PriceSource::kCatalog) listed = site.price;
    else if (site.model != nullptr && site.model->name.size() == model.size()) listed = site.model->catalog_price;
    else listed = e.catalog->find(model);
  }
  const std::int64_t most = output > 0 ? output : (listed != nullptr ? listed->max_output_tokens : 0);
  auto fitted = [most](std::int64_t fit) { return std::max<std::int64_t>(most > 0 ? std::min(most, fit) : fit, 1); };
  if (fit_output && media == nullptr) {
    // From the limits just resolved for the hold, which admit() below judges (a lease wait that
    // moves the user's window keeps this output). Read before admit()'s compare-and-swap, not
    // under it: another thread's hold in between is met by fitting again below. No limit
    // bounds it: the most it can produce.
    fits = output_that_fits(site, prompt);
    output = fits ? fitted(*fits) : most;
  }
  Nanos cost = media != nullptr ? media_cost : e.estimate_cost(site.price, prompt, output);
  internal::Verdicts verdicts;
  if (e.backend_closed()) {
    verdicts.best = backend_unavailable(site.user->key);
    e.fire_gate_callbacks(site, verdicts);
    if (e.options.raise_on_hard_gate) throw LimitExceeded(verdicts.best);
    verdicts = internal::Verdicts{};
  }
  GuardResult r = e.admit(site, cost, prompt + output, verdicts);
  // Refused by a limit the fit reads, with room left: another thread held between the fit and
  // admit()'s compare-and-swap. Fit again to the room left now and ask again: each further turn
  // follows another call's hold or release at that very instant (the fit and admit() agree on
  // the room), so turns are paid for by the other calls' progress; 64 at most (8 were used up
  // by two threads under TSan, whose slowness widens the instant). A fit of nothing is asked
  // once more at 1 token, and its refusal stands. A refusal by a limit the fit does not read (a
  // request count, a spend limit of an unpriced model) is not retried: no output would cure it.
  for (int turn = 0; fits && r.status == GateStatus::kHardGate && r.reason != GateReason::kLeaseExhausted && turn < 64 &&
                     bounds_output(site.limits[verdicts.hard_entry], priced_output(site));
       ++turn) {
    fits = output_that_fits(site, prompt);
    if (!fits) break;
    output = fitted(*fits);
    cost = e.estimate_cost(site.price, prompt, output);
    verdicts = internal::Verdicts{};
    r = e.admit(site, cost, prompt + output, verdicts);
    if (*fits == 0) break;
  }
  if (r.reason == GateReason::kLeaseExhausted) [[unlikely]] {  // a lease with no room: ask (cold)
    r = e.retry_lease(site, cost, prompt + output, verdicts, /*hold=*/true);
    // While it waited, the user's window may have moved (a subscription the backend reported, a
    // new period): the hold goes to the window that gates now, or the new one would miss it.
    if (site.user->period.load(std::memory_order_acquire) != site.period) {
      try {
        if (r.status != GateStatus::kHardGate) e.unhold(site, cost, prompt + output);
        verdicts = internal::Verdicts{};
        if (e.resolve_now(model, site, internal::LimitUse::kHold, context)) {
          r = e.admit(site, cost, prompt + output, verdicts);
          if (r.reason == GateReason::kLeaseExhausted) r = e.retry_lease(site, cost, prompt + output, verdicts, true);
        }
      } catch (...) {
        e.report_error(absl::InternalError("reserve failed; the call proceeds unmetered"));
        res.result_.status = GateStatus::kUnmetered;
        return res;
      }
    }
  }
  r.user_id = site.user->key;
  if (!(e.backend_closed() && !e.options.raise_on_hard_gate)) e.fire_gate_callbacks(site, verdicts);
  if (r.status == GateStatus::kHardGate) {
    // A blocked call is no activity: retrying against a session cap must not keep it alive.
    if (e.options.raise_on_hard_gate) throw LimitExceeded(r);
    // Not raised: the call runs anyway, so it is held like any other.
    e.apply(site.period, site.session, site.model, cost, 0, prompt + output, nullptr);
  }
  const std::int64_t last = site.session->last_activity_ns.load(std::memory_order_relaxed);
  if (site.now_ns > last) site.session->last_activity_ns.store(site.now_ns, std::memory_order_relaxed);
  res.result_ = r;
  res.owner_ = this;
  in.reservation_opened();
  res.user_ = site.user;
  res.period_ = site.period;
  res.session_ = site.session;
  res.model_ = site.model;
  res.price_ = media != nullptr ? nullptr : site.price;
  res.price_source_ = site.price_source;
  res.context_ = owner != nullptr ? *owner : Context::capture();
  res.media_ = media;
  res.cost_ = cost;
  res.input_tokens_ = prompt;
  res.output_tokens_ = output;
  res.output_that_fits_ = fits;
  res.started_ns_ = site.now_ns;
  return res;
}

Reservation Paygent::reserve_or_fail_open(std::string_view model, const CallEstimate& estimate) {
  try {
    // metered_call / metered_stream send the caller's own max_tokens: no lowering behind its back.
    CallEstimate as_given = estimate;
    as_given.fit_output = false;
    return reserve(model, as_given);
  } catch (const LimitExceeded&) {
    throw;
  } catch (...) {
    Inside in(*engine_);
    if (in) engine_->report_error(absl::InternalError("reserve failed; the call proceeds unmetered"));
    return Reservation();
  }
}


// Settles on the reservation's own Paygent (which `this` usually is). Inline: settle() is the
// hot one.
inline void Paygent::settle_as(Reservation& r, const Usage& usage, Provider provider, bool estimated,
                               const absl::Status* fault) noexcept {
  Paygent* owner = r.owner_;
  if (owner == nullptr) return;
  Engine& e = *owner->engine_;
  Inside in(e);
  if (!in) return owner->end_after_shutdown(r);
  r.owner_ = nullptr;
  if (fault != nullptr) e.report_error(*fault);
  // Usage that cannot be real (negative, cache above input, ...) is refused: the call ran, so the
  // reservation's estimate is metered instead, never a refund.
  Usage refused_estimate;
  const Usage* used = &usage;
  if (!estimated && e.refuse_usage(usage, "settle: metering the reservation's estimate instead")) [[unlikely]] {
    refused_estimate = estimate_of(r);
    used = &refused_estimate;
    estimated = true;
  }
  const Nanos cost = r.price_ != nullptr ? cost_of(*used, *r.price_) : 0;
  e.apply(r.period_, r.session_, r.model_, cost - r.cost_, cost,
          used->total_tokens() - (r.input_tokens_ + r.output_tokens_), used);
  e.meter(r.context_, r.user_, r.model_, r.session_, provider, *used, cost, r.price_source_, r.started_ns_,
          estimated);
  in.reservation_closed();
  r.context_.reset();
}

void Paygent::settle(Reservation& r, const Usage& usage, Provider provider) noexcept {
  settle_as(r, usage, provider, false, nullptr);
}

namespace {

// A whole server-sent-event stream rather than a JSON body: its first non-blank line is a field
// ("data:", "event:", "id:", "retry:") or a comment (":").
bool is_event_stream(std::string_view body) {
  const std::size_t at = body.find_first_not_of(" \t\r\n");
  if (at == std::string_view::npos) return false;
  body.remove_prefix(at);
  if (body.front() == ':') return true;
  for (std::string_view field : {"data:", "event:", "id:", "retry:"}) {
    if (body.starts_with(field)) return true;
  }
  return false;
}

absl::StatusOr<ExtractedUsage> usage_of_response(std::string_view body) {
  if (!is_event_stream(body)) return extract_usage(body);
  StreamUsageReader reader;
  reader.feed(body);
  return reader.finish();
}

}  // namespace

void Paygent::settle_response(Reservation& r, std::string_view body, const Usage* if_unreadable) noexcept {
  if (r.owner_ == nullptr) return;
  absl::StatusOr<ExtractedUsage> extracted = absl::InternalError("not read");
  try {
    extracted = usage_of_response(body);
  } catch (...) {  // fail-open: an allocation failure meters the estimate
    extracted = absl::InternalError("reading the response failed");
  }
  if (extracted.ok()) {
    if (!extracted->model.empty()) {  // another model than the one called moves the hold to it
      Engine& e = *r.owner_->engine_;
      Inside in(e);
      if (in) e.adopt_response_model(r, extracted->model);
    }
    settle(r, extracted->usage, extracted->provider);
    return;
  }
  if (absl::IsNotFound(extracted.status()) &&
      extracted.status().message().find("provider error") != std::string_view::npos && !is_event_stream(body)) {
    // A provider error body: the call did not run, so nothing was spent. (A stream that ends in
    // an error event may have run partway, and its usage chunk never came: metered as below.)
    release(r);
    return;
  }
  // Unreadable, or a success without usage (some compatible servers omit it): the tokens were
  // spent all the same, so the estimate is metered rather than nothing.
  r.owner_->engine_->counters.unreadable_responses.add();
  const Usage estimate = if_unreadable != nullptr ? *if_unreadable : estimate_of(r);
  const absl::Status fault(extracted.status().code(),
                          internal::str_cat("unreadable provider response; metering ",
                                            if_unreadable != nullptr ? "the caller's" : "the reservation's",
                                            " estimate: ", extracted.status().message()));
  settle_as(r, estimate, Provider::kUnknown, true, &fault);
}

void Paygent::release(Reservation& r) noexcept {
  Paygent* owner = r.owner_;
  if (owner == nullptr) return;
  Engine& e = *owner->engine_;
  Inside in(e);
  if (!in) return owner->end_after_shutdown(r);
  r.owner_ = nullptr;
  e.apply(r.period_, r.session_, r.model_, -r.cost_, 0, -(r.input_tokens_ + r.output_tokens_), nullptr);
  in.reservation_closed();
  r.context_.reset();
}

// --- Streams --------------------------------------------------------------------------------------

MeteredStream& MeteredStream::operator=(MeteredStream&& other) noexcept {
  if (this != &other) {
    abandon();
    reservation_ = std::move(other.reservation_);
    reader_ = std::move(other.reader_);
    other.reader_.reset();
  }
  return *this;
}

MeteredStream::~MeteredStream() { abandon(); }

void MeteredStream::feed(std::string_view chunk) noexcept {
  if (reader_ && reservation_.active()) reader_->feed(chunk);  // never throws (it contains bad_alloc)
}

void MeteredStream::finish() noexcept {
  if (Paygent* owner = reservation_.owner_) owner->end_stream(*this, false);
}

void MeteredStream::abandon() noexcept {
  if (Paygent* owner = reservation_.owner_) owner->end_stream(*this, true);
}

MeteredStream Paygent::metered_stream(std::string_view model, const CallEstimate& estimate, ApiFormat format) {
  MeteredStream stream;
  stream.reservation_ = reserve_or_fail_open(model, estimate);  // LimitExceeded propagates
  if (stream.reservation_.active()) {
    try {
      stream.reader_.emplace(format);
    } catch (...) {  // fail-open: the stream is metered at its estimate
    }
  }
  return stream;
}

void Paygent::end_stream(MeteredStream& stream, bool abandoned) noexcept {
  Reservation& r = stream.reservation_;
  absl::StatusOr<ExtractedUsage> read = absl::ResourceExhaustedError("the stream's reader could not be made");
  if (stream.reader_) {
    try {
      read = stream.reader_->finish();
    } catch (...) {
      read = absl::ResourceExhaustedError("reading the stream failed");
    }
    stream.reader_.reset();
  }
  if (read.ok()) {
    if (!abandoned) return settle_as(r, read->usage, read->provider, false, nullptr);
    // Cut short: what the stream reported so far is what is known to have been spent.
    const absl::Status fault = absl::CancelledError(
        internal::str_cat("stream abandoned before its end: metered the usage it reported so far (",
                          read->usage.input_tokens, " input and ", read->usage.output_tokens, " output tokens)"));
    return settle_as(r, read->usage, read->provider, true, &fault);
  }
  if (absl::IsNotFound(read.status()) && read.status().message().find("provider error") != std::string_view::npos) {
    return release(r);  // the provider refused the call: nothing was spent
  }
  // No usage: the tokens were (being) spent all the same, so the estimate rather than nothing.
  if (!abandoned) r.owner_->engine_->counters.unreadable_responses.add();
  const Usage estimate = estimate_of(r);
  const absl::Status fault(abandoned ? absl::StatusCode::kCancelled : read.status().code(),
                          internal::str_cat(abandoned ? "stream abandoned before any usage"
                                                      : "stream ended without readable usage",
                                            "; metering the reservation's estimate: ", read.status().message()));
  settle_as(r, estimate, Provider::kUnknown, true, &fault);
}

void Paygent::record(std::string_view model, const Usage& usage, Provider provider) noexcept {
  Engine& e = *engine_;
  Inside in(e);
  if (!in) return;  // shut down: fail-open
  if (e.refuse_usage(usage, "record: the event is not metered")) return;
  try {
    CallSite site;
    if (!e.resolve_now(model, site, internal::LimitUse::kNone)) {
      e.counters.unmetered.add();
      return;
    }
    const Nanos cost = site.price != nullptr ? cost_of(usage, *site.price) : 0;
    e.apply(site.period, site.session, site.model, cost, cost, usage.total_tokens(), &usage);
    const std::int64_t last = site.session->last_activity_ns.load(std::memory_order_relaxed);
    if (site.now_ns > last) site.session->last_activity_ns.store(site.now_ns, std::memory_order_relaxed);
    e.meter(Context::capture(), site.user, site.model, site.session, provider, usage, cost, site.price_source,
            site.now_ns, false);
  } catch (...) {
    e.report_error(absl::InternalError("record failed; the call was not metered"));
  }
}

std::int64_t Paygent::max_output_tokens_of(std::string_view model) const noexcept {
  const ModelPrice* listed = engine_->catalog->find(model);
  return listed != nullptr ? listed->max_output_tokens : 0;
}

std::optional<std::int64_t> Paygent::max_output_tokens_that_fit(std::string_view model, std::int64_t prompt_tokens) {
  Engine& e = *engine_;
  Inside in(e);
  if (!in) return std::nullopt;
  CallSite site;
  try {
    if (!e.resolve(model, e.now_ns(), site)) return std::nullopt;
  } catch (...) {
    return std::nullopt;
  }
  return output_that_fits(site, prompt_tokens);
}

// --- Paygent: reports -----------------------------------------------------------------------------

absl::StatusOr<UserReport> Paygent::report(std::string_view user_id) {
  Engine& e = *engine_;
  Inside in(e);
  if (!in) return shut_down_error();
  internal::UserState* user = e.user_for(user_id, false);
  if (user == nullptr) {
    // Not seen by this process; maybe by an earlier one with the same store (a restart).
    bool stored = false;
    if (e.store && !user_id.empty()) {
      auto has = e.store->has_user(user_id);
      stored = has.ok() && *has;
    }
    if (!stored) return absl::NotFoundError(internal::str_cat("user \"", user_id, "\" has not been seen"));
    user = e.user_for(user_id, true);  // its window is read from the store below
  }
  const internal::PlanSnapshot* snap = e.plans.load(std::memory_order_acquire);
  const internal::CompiledPlan* plan = e.resolve_plan(user, snap);
  internal::PeriodWindow* w = user->period.load(std::memory_order_acquire);
  const std::int64_t now = e.now_ns();
  if (w == nullptr || now >= w->end_ns || w->tag.load() != plan) w = e.roll_period(user, plan, now);

  UserReport rep;
  rep.user_id = user->key;
  rep.plan = plan->plan != nullptr ? plan->plan->name : "";
  rep.period = Period{absl::FromUnixNanos(w->start_ns), absl::FromUnixNanos(w->end_ns)};
  rep.reserved = std::max<Nanos>(w->committed.load() - w->spend.load(), 0);
  rep.spend = w->spend.load() + w->external.load();  // with a backend: every process's spend
  rep.calls = w->calls.load() + w->external_calls.load();  // as spend: every process's
  rep.max_spend_per_period = plan->max_period;
  if (plan->max_period) rep.remaining = std::max<Nanos>(*plan->max_period - rep.spend - rep.reserved, 0);
  std::vector<const internal::ModelInfo*> all_models;
  e.models.for_each([&](const internal::ModelInfo& m) { all_models.push_back(&m); });
  for (std::size_t i = 0; i < w->slots; ++i) {
    const internal::ModelCounters& mc = w->models[i];
    const std::uint32_t id = mc.model_id.load();
    if (id == internal::kNoModel) break;
    UserReport::ModelUsage mu;
    for (const auto* m : all_models) {
      if (m->id != id) continue;
      mu.model = m->name;
      if (const auto* l = plan->limit_for(m)) mu.max_tokens_per_period = l->max_tokens;
    }
    mu.input_tokens = mc.input.load();
    mu.output_tokens = mc.output.load();
    mu.calls = mc.calls.load();
    mu.cost = mc.cost.load();
    if (const internal::ExternalModelTotals* ext = w->external_models.load(std::memory_order_acquire)) {
      mu.input_tokens += ext[i].input.load();
      mu.output_tokens += ext[i].output.load();
      mu.calls += ext[i].calls.load();
      mu.cost += ext[i].cost.load();
    }
    if (mu.calls == 0 && !mu.max_tokens_per_period) continue;
    rep.by_model.push_back(std::move(mu));
  }
  std::sort(rep.by_model.begin(), rep.by_model.end(),
            [](const auto& a, const auto& b) { return a.cost > b.cost || (a.cost == b.cost && a.model < b.model); });
  {
    std::lock_guard<std::mutex> lock(user->mu);
    for (const auto& s : user->sessions) {
      const std::int64_t last = s->last_activity_ns.load();
      if (last < w->start_ns || s->calls.load() == 0) continue;
      rep.by_session.push_back({s->session_id, s->spend.load(), s->calls.load(), absl::FromUnixNanos(last)});
    }
  }
  if (e.store) {
    // Sessions of this period that earlier processes (or this one, before a roll-over) left in
    // the store and that are not live here.
    auto stored = e.store->sessions(user->key, "", w->start_ns, w->start_ns, w->end_ns);
    if (stored.ok()) {
      for (const internal::SessionTotals& t : *stored) {
        const bool live = std::any_of(rep.by_session.begin(), rep.by_session.end(),
                                      [&](const UserReport::SessionUsage& s) { return s.session_id == t.session_id; });
        if (!live) rep.by_session.push_back({t.session_id, t.cost, t.calls, absl::FromUnixNanos(t.last_ns)});
      }
    } else {
      e.report_error(stored.status());
    }
  }
  std::sort(rep.by_session.begin(), rep.by_session.end(),
            [](const auto& a, const auto& b) { return a.last_activity > b.last_activity; });
  return rep;
}

Stats Paygent::stats() const noexcept {
  Inside in(*engine_);  // the counters live as long as this object; the syncer only while inside
  const auto& c = engine_->counters;
  Stats s;
  s.checks = c.checks.sum();
  s.events = c.events.sum();
  s.soft_gates = c.soft_gates.sum();
  s.hard_gates = c.hard_gates.sum();
  s.unmetered = c.unmetered.sum();
  s.errors = c.errors.sum();
  s.callback_failures = c.callback_failures.sum();
  s.unknown_models = c.unknown_models.sum();
  s.unreadable_responses = c.unreadable_responses.sum();
  s.queue_overflows = c.queue_overflows.sum();
  s.stored_events = c.stored_events.sum();
  s.delivered_events = in && engine_->syncer ? engine_->syncer->delivered() : engine_->delivered_at_shutdown.load();
  s.dropped_events = c.dropped_events.sum();
  s.rejected_events = c.rejected_events.sum();
  s.refused_usages = c.refused_usages.load(std::memory_order_relaxed);
  s.model_mismatches = c.model_mismatches.load(std::memory_order_relaxed);
  return s;
}

absl::Status Paygent::flush(absl::Duration deadline) {
  Engine& e = *engine_;
  Inside in(e);
  if (!in) return shut_down_error();
  if (!e.store) return absl::UnavailableError("no local store is open; events are kept in memory only");
  const absl::Time until = absl::Now() + deadline;
  {
    std::unique_lock<std::mutex> lock(e.writer_mu);
    const std::uint64_t ticket = ++e.flush_requested;
    e.writer_cv.notify_all();
    if (!e.flushed_cv.wait_for(lock, absl::ToChronoNanoseconds(deadline), [&] { return e.flush_done >= ticket; })) {
      return absl::DeadlineExceededError("flush: events are still queued for the local store");
    }
  }
  if (e.store_failing.load()) return absl::UnavailableError("flush: the local store is failing; events are kept queued");
  if (e.syncer) return e.syncer->flush(std::max(until - absl::Now(), absl::ZeroDuration()));
  return absl::OkStatus();
}

}  // namespace paygent
