// The engine behind paygent::Paygent (see guard/internal/engine.h for the layout of the state).
#include "guard/internal/engine.h"
#include "guard/internal/same_bytes.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <string>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "meter/internal/json_text.h"
#include "meter/internal/str_cat.h"
#include "simdjson.h"

namespace paygent::internal {
namespace {

constexpr std::int64_t kNanosPerMs = 1'000'000;
// check() reads the coarse clock (3 ns instead of 21 ns) and re-reads the precise one when a
// period end or a session expiry is this close, so that no boundary is judged late.
constexpr std::int64_t kCoarseMarginNs = 50 * kNanosPerMs;
// Model slots per period window beyond the plan's own model limits.
constexpr std::size_t kSpareModelSlots = 4;

std::atomic<std::uint64_t> g_engine_generation{1};

std::uint64_t hash_of(std::string_view s) noexcept {
  return absl::Hash<std::string_view>{}(s) | 1;  // never 0
}

std::uint64_t session_hash(const UserState* u, std::string_view id) noexcept {
  return absl::HashOf(u, id) | 1;
}

// The thread's last user: a hot user is found by comparing its id, without hashing.
struct LastUser {
  std::uint64_t generation = 0;
  const ContextData* context = nullptr;
  UserState* user = nullptr;
};
thread_local LastUser t_last_user;

// The thread's last model name.
struct LastModel {
  std::uint64_t generation = 0;
  std::size_t length = 0;
  char name[64];
  const ModelInfo* model = nullptr;
  const ModelPrice* catalog_price = nullptr;  // of the name as called (see model_for)
};
thread_local LastModel t_last_model;

// Threads are numbered in order of their first count. The first kStripes threads own a stripe
// each and add to it with a plain load and store (no locked instruction, so a counter does not
// stall the cache misses around it); later threads share stripes with an atomic add.
int thread_number() noexcept {
  static std::atomic<int> next{0};
  thread_local const int number = next.fetch_add(1, std::memory_order_relaxed);
  return number;
}


// Verdict of one limit: current usage c (settled + held), this call's estimate e, limit L.
// No member initialisers: admit() keeps an array of them that must cost nothing to declare.
struct Verdict {
  GateStatus status;
  int soft_index;  // -1: none
  double pct;
};

// `soft`: the limit has soft thresholds (else only its hard verdict counts).
Verdict judge(std::int64_t c, std::int64_t e, std::int64_t limit, const CompiledPlan& plan, bool soft = true) noexcept {
  Verdict v{GateStatus::kOk, -1, 0};
  const __int128 after = static_cast<__int128>(c) + e;
  const __int128 scaled_limit = static_cast<__int128>(limit);
  // The ratio from the two int64 halves: converting the 128-bit sum to double is a library call
  // (__floattidf) on the hot path; the sum of the halves is the same double below 2^53.
  const double after_d = static_cast<double>(c) + static_cast<double>(e);
  v.pct = limit > 0 ? after_d / static_cast<double>(limit) : (after > 0 ? 1e9 : 1.0);
  const __int128 hard = scaled_limit * plan.hard;
  if (static_cast<__int128>(c) * kPpmOne >= hard || (e > 0 && after * kPpmOne > hard)) {
    v.status = GateStatus::kHardGate;
    return v;
  }
  if (!soft) return v;
  for (int i = static_cast<int>(plan.soft.size()) - 1; i >= 0; --i) {
    if (after * kPpmOne >= scaled_limit * plan.soft[static_cast<std::size_t>(i)]) {
      v.status = GateStatus::kSoftGate;
      v.soft_index = i;
      break;
    }
  }
  return v;
}

// Verdict of a lease's ceiling (an absolute bound on this process's committed amount, not scaled
// by hard_gate_at, no soft thresholds): hard when the call's estimate would take `c` past it. A
// call without an estimate holds nothing under a lease: it is judged on the limit alone.
[[gnu::always_inline]] inline Verdict judge_ceiling(std::int64_t c, std::int64_t e, std::int64_t ceiling) noexcept {
  Verdict v{GateStatus::kOk, -1, 0.0};
  if (e > 0 && static_cast<__int128>(c) + e > ceiling) v.status = GateStatus::kHardGate;
  return v;
}

}  // namespace

// --- Verdicts -------------------------------------------------------------------------------------

[[gnu::always_inline]] inline void Verdicts::add(const GuardResult& r, int entry) noexcept {
  if (r.status == GateStatus::kSoftGate && count < kMax) {
    entries[count] = static_cast<std::uint8_t>(entry);
    new (each[count++]) GuardResult(r);
  }
  // The most restrictive: higher status, then higher usage_pct; the first wins ties.
  if (best.reason == GateReason::kNone || r.status > best.status ||
      (r.status == best.status && r.usage_pct > best.usage_pct)) {
    best = r;
  }
}

// --- StripedCounter -------------------------------------------------------------------------------

void StripedCounter::add(std::int64_t n) noexcept {
  const int t = thread_number();
  if (t < kStripes) {
    std::atomic<std::int64_t>& v = stripes_[t].v;  // this thread's own: one writer
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  } else {
    stripes_[kStripes + t % kStripes].v.fetch_add(n, std::memory_order_relaxed);
  }
}

std::int64_t StripedCounter::sum() const noexcept {  // includes the shared stripes
  std::int64_t s = 0;
  for (const auto& st : stripes_) s += st.v.load(std::memory_order_relaxed);
  return s;
}

// --- PeriodWindow ---------------------------------------------------------------------------------

ModelCounters* PeriodWindow::counters(std::uint32_t model_id) noexcept {
  for (std::size_t i = 0; i < slots; ++i) {
    ModelCounters& m = models[i];
    std::uint32_t id = m.model_id.load(std::memory_order_acquire);
    if (id == model_id) return &m;
    if (id == kNoModel) {
      if (m.model_id.compare_exchange_strong(id, model_id, std::memory_order_acq_rel)) return &m;
      if (id == model_id) return &m;
    }
  }
  return nullptr;
}

const ModelCounters* PeriodWindow::find(std::uint32_t model_id) const noexcept {
  for (std::size_t i = 0; i < slots; ++i) {
    const std::uint32_t id = models[i].model_id.load(std::memory_order_acquire);
    if (id == model_id) return &models[i];
    if (id == kNoModel) return nullptr;
  }
  return nullptr;
}

// --- Engine: construction -------------------------------------------------------------------------

Engine::Engine(Options o)
    : options(std::move(o)),
      catalog(options.price_catalog != nullptr ? options.price_catalog : &PriceCatalog::builtin()),
      generation(g_engine_generation.fetch_add(1)),
      id_seed(absl::Uniform<std::uint64_t>(absl::BitGen())) {}

void Engine::open_store() {
  const bool backend = !options.api_key.empty();
  if (options.local_store_path.empty() && !backend) return;
  // With a backend the store is also the spool; without a path it lives in memory.
  auto opened = LocalStore::open(options.local_store_path.empty() ? ":memory:" : options.local_store_path);
  if (!opened.ok()) {
    report_error(opened.status());  // fail-open: run in memory
    if (!backend) return;
    // With a backend, a spool in memory still delivers (all but what a crash would lose).
    opened = LocalStore::open(":memory:");
    if (!opened.ok()) {
      report_error(opened.status());
      return;
    }
  }
  store = std::move(opened).value();
  // Customers made by an earlier run (create_or_get_customer): the same after a restart.
  if (auto known = store->customers(); known.ok()) {
    std::lock_guard<std::mutex> lock(customers_mu);
    for (StoredCustomer& c : *known) {
      customers.try_emplace(c.external_id, Customer{c.external_id, c.external_id, std::move(c.name), std::move(c.email)});
    }
  } else {
    report_error(known.status());
  }
  queue = std::make_unique<EventQueue<QueuedEvent>>(std::max<std::size_t>(options.event_queue_capacity, 2));
  writer = std::thread([this] { writer_loop(); });
  if (!backend) return;
  SyncOptions so;
  so.backend_url = options.backend_url;
  so.api_key = options.api_key;
  so.flush_interval = options.flush_interval;
  so.batch_size = std::clamp<std::size_t>(options.batch_size, 1, 1000);
  so.max_spool_events = std::max<std::int64_t>(options.max_spool_events, 1);
  so.refresh_interval = options.refresh_interval;
  auto started = Syncer::start(std::move(so), store.get(), this);
  if (started.ok()) {
    syncer = std::move(started).value();
  } else {
    report_error(started.status());  // fail-open: local-only
    return;
  }
  if (!options.leases) return;
  LeaseOptions lo;
  lo.backend_url = options.backend_url;
  lo.api_key = options.api_key;
  lo.lease_wait = options.lease_wait;
  lo.outage_share = options.lease_outage_share;
  lo.strict_backend = options.strict_backend;
  lo.now_ns = [this] { return now_ns(); };
  lo.report_error = [this](absl::Status s) { report_error(std::move(s)); };
  leases = std::make_unique<LeaseKeeper>(std::move(lo), store.get());
}

void Engine::assign(UserState* user, std::unique_ptr<Assignment> a) {
  std::lock_guard<std::mutex> lock(user->mu);
  user->assignment.store(a.get(), std::memory_order_release);
  user->assignments.push_back(std::move(a));  // kept: a call in flight may be reading the old one
  user->plan_cache.store(nullptr, std::memory_order_release);
}

void Engine::adopt_subscription(UserState* user, const BackendUsage::Subscription& s) {
  const Assignment* cur = user->assignment.load(std::memory_order_acquire);
  if (cur != nullptr && cur->subscription && cur->plan == s.plan && cur->start_ns == s.period_start_ns &&
      cur->end_ns == s.period_end_ns) {
    return;
  }
  const PlanSnapshot* snap = plans.load(std::memory_order_acquire);
  if (!snap->by_name.contains(s.plan)) {
    if (!unknown_backend_plan_reported.exchange(true)) {
      report_error(absl::NotFoundError(str_cat("the backend subscribes user ", user->key, " to plan \"", s.plan,
                                               "\", which this process's plans do not have; keeping the user's "
                                               "current plan (said once)")));
    }
    return;
  }
  auto a = std::make_unique<Assignment>();
  a->plan = s.plan;
  a->subscription = true;
  a->start_ns = s.period_start_ns;
  a->end_ns = s.period_end_ns;
  assign(user, std::move(a));
  // Move the user's window now, so that the backend's total applies to it at once.
  roll_period(user, resolve_plan(user, snap), now_ns());
}

void Engine::apply_backend_usage(const BackendUsage& u) {
  // Thresholds another process fired (or this one, acknowledged): not fired here again. First,
  // whatever the period: each row names its own.
  mark_soft_gates_fired(u.user_id, u.soft_gates);
  UserState* user = user_for(u.user_id, false);
  if (user != nullptr && u.wallet) {
    // A top-up (more credits) starts the wallet's soft thresholds over.
    const std::int64_t was = user->wallet_granted.load(std::memory_order_relaxed);
    user->wallet_used.store(u.wallet->charged_nanocredits, std::memory_order_relaxed);
    if (u.wallet->granted_nanocredits > was) user->wallet_fired.store(0, std::memory_order_relaxed);
    user->wallet_granted.store(u.wallet->granted_nanocredits, std::memory_order_release);
  }
  if (user == nullptr || !store) return;
  // The backend's subscription is authoritative: every process gates the user on one plan and
  // period, the one the backend sums.
  if (u.subscription) adopt_subscription(user, *u.subscription);
  PeriodWindow* w = user->period.load(std::memory_order_acquire);
  if (w == nullptr || w->start_ns != u.period_start_ns || w->end_ns != u.period_end_ns) return;  // other period
  // external = backend total - what this store has had acknowledged, read after the acknowledgement,
  // so that committed (every local event) + external counts each event once.
  auto acked = store->totals(u.user_id, w->start_ns, w->end_ns, /*acked_only=*/true);
  if (!acked.ok()) {
    report_error(acked.status());
    return;
  }
  // Never below 0: a backend that knows less than we had acknowledged (a restored replica) must
  // not loosen the cap.
  w->external.store(std::max<Nanos>(u.spend_nanos - acked->cost, 0), std::memory_order_relaxed);
  ExternalModelTotals* ext = w->external_models.load(std::memory_order_acquire);
  if (ext == nullptr) {  // only this (syncer) thread writes it
    ext = arena.make_array<ExternalModelTotals>(w->slots);
    w->external_models.store(ext, std::memory_order_release);
  }
  std::int64_t backend_calls = 0;
  bool calls_known = true;
  // The backend keys models by the name each event carried; a process may send a dated name the
  // library counts under its canonical model: summed per canonical model first.
  std::map<const ModelInfo*, BackendUsage::Model> by_model;
  for (const auto& [name, b] : u.models) {
    if (b.calls < 0) calls_known = false;
    backend_calls += std::max<std::int64_t>(b.calls, 0);
    BackendUsage::Model& sum = by_model.try_emplace(model_for(name), BackendUsage::Model{.calls = 0}).first->second;
    sum.input_tokens += b.input_tokens;
    sum.output_tokens += b.output_tokens;
    sum.cost += b.cost;
    sum.calls += std::max<std::int64_t>(b.calls, 0);
  }
  for (const auto& [m, b] : by_model) {
    ModelCounters* c = w->counters(m->id);
    if (c == nullptr) continue;
    RangeTotals::Model local;
    for (const auto& am : acked->by_model) {
      if (am.model != m->name) continue;
      local.input_tokens += am.input_tokens;
      local.output_tokens += am.output_tokens;
      local.calls += am.calls;
      local.cost += am.cost;
    }
    c->external_tokens.store(
        std::max<std::int64_t>(b.input_tokens + b.output_tokens - local.input_tokens - local.output_tokens, 0),
        std::memory_order_relaxed);
    ExternalModelTotals& e = ext[static_cast<std::size_t>(c - w->models)];
    e.input.store(std::max<std::int64_t>(b.input_tokens - local.input_tokens, 0), std::memory_order_relaxed);
    e.output.store(std::max<std::int64_t>(b.output_tokens - local.output_tokens, 0), std::memory_order_relaxed);
    e.cost.store(std::max<Nanos>(b.cost - local.cost, 0), std::memory_order_relaxed);
    e.calls.store(std::max<std::int64_t>(b.calls - local.calls, 0), std::memory_order_relaxed);
  }
  if (calls_known) w->external_calls.store(std::max<std::int64_t>(backend_calls - acked->calls, 0));
}

void Engine::apply_backend_plans(std::string_view json) {
  auto parsed = parse_plan_config(json);
  if (!parsed.ok()) {
    // An empty plan list means the backend has none: keep the local ones quietly.
    simdjson::dom::parser parser;
    simdjson::dom::array list;
    if (parser.parse(json.data(), json.size()).get_object()["plans"].get_array().get(list) == simdjson::SUCCESS &&
        list.size() == 0) {
      return;
    }
    report_error(absl::InvalidArgumentError(str_cat("plans from the backend are invalid; keeping the current ones: ",
                                                    parsed.status().message())));
    return;
  }
  if (*parsed == *plans.load(std::memory_order_acquire)->config) return;
  if (absl::Status s = install_plans(*std::move(parsed)); !s.ok()) report_error(s);
}

void Engine::events_rejected(std::int64_t count, std::string reason) {
  report_error(absl::InvalidArgumentError(std::move(reason)));
  counters.rejected_events.add(count);  // after the report, as in events_dropped
}

void Engine::events_dropped(std::int64_t count) {
  // The counter moves after the report and the callback (on this, the syncer's thread), so that
  // an application polling Stats::dropped_events does not see the drop before on_events_dropped
  // has been told of it (the CI saw that race once in a test).
  if (!dropped_reported.exchange(true)) {
    report_error(absl::ResourceExhaustedError(
        str_cat("the backend is unreachable and the spool is full (max_spool_events ", options.max_spool_events,
                "): dropping the oldest undelivered events; Stats::dropped_events counts them")));
  }
  invoke_callback(options.on_events_dropped, count);
  counters.dropped_events.add(count);
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  // Order: the writer commits what is queued, then the syncer delivers it, then the store closes.
  if (writer.joinable()) {
    {
      std::lock_guard<std::mutex> lock(writer_mu);
      stopping = true;
    }
    writer_cv.notify_all();
    writer.join();
  }
  if (syncer) {
    syncer->stop(options.shutdown_deadline);
    delivered_at_shutdown.store(syncer->delivered());
    syncer.reset();
  }
  // After the final delivery, so that what the leases give back counts every acknowledged event.
  // The keeper lives on with the engine (windows point to its leases); its thread stops here.
  if (leases) leases->stop();
  store.reset();  // closes the file: another process (or a new Paygent) may open it now
}

// --- Engine: time and ids -------------------------------------------------------------------------

std::int64_t Engine::now_ns() const noexcept {
  if (options.clock) {
    try {
      return absl::ToUnixNanos(options.clock());
    } catch (...) {
    }
  }
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t Engine::coarse_now_ns() const noexcept {
  if (options.clock) return now_ns();
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

EventId Engine::next_event_id() noexcept {
  // Each thread takes ids in blocks of 4096 from the engine, so the shared counter is touched
  // once per 4096 events.
  struct Block {
    std::uint64_t generation = 0;
    std::uint64_t next = 0;
    std::uint64_t end = 0;
  };
  thread_local Block block;
  if (block.generation != generation || block.next == block.end) {
    block.generation = generation;
    block.next = id_blocks.fetch_add(4096, std::memory_order_relaxed);
    block.end = block.next + 4096;
  }
  return EventId{id_seed, block.next++};
}

// --- Engine: resolving a call ---------------------------------------------------------------------

UserState* Engine::user_for(std::string_view user_id, bool create) {
  const std::uint64_t h = hash_of(user_id);
  auto eq = [&](const UserState& u) { return u.key == user_id; };
  // A cold user's slot names its windows: start their misses with the user's own, all at once.
  auto prefetch = [&](const UserState* u, const decltype(users)::Slot& slot) {
    __builtin_prefetch(u);
    if (syncer) __builtin_prefetch(&u->refreshed_epoch);
    const char* period = static_cast<const char*>(slot.hints[kUserHintPeriod].load(std::memory_order_relaxed));
    if (period != nullptr) {
      __builtin_prefetch(period);
      __builtin_prefetch(period + sizeof(PeriodWindow));  // its first model's counters
    }
    __builtin_prefetch(slot.hints[kUserHintSession].load(std::memory_order_relaxed));
  };
  if (UserState* u = users.find(h, eq, prefetch)) return u;
  if (!create) return nullptr;
  return users
      .find_or_insert(h, eq,
                      [&] {
                        ArenaPtr<UserState> u(arena.make<UserState>());
                        u->key = std::string(user_id);
                        u->hash = h;
                        return u;
                      })
      .first;
}

const ModelInfo* Engine::model_for(std::string_view raw_model, const ModelPrice** catalog_price) {
  LastModel& last = t_last_model;
  if (last.generation == generation && last.length == raw_model.size() &&
      same_bytes(last.name, raw_model.data(), raw_model.size())) {
    if (catalog_price != nullptr) *catalog_price = last.catalog_price;
    return last.model;
  }
  const std::string_view name = canonical_model(raw_model);
  const std::uint64_t h = hash_of(name);
  const ModelInfo* m = models
                           .find_or_insert(h, [&](const ModelInfo& mi) { return mi.name == name; },
                                           [&] {
                                             auto mi = std::make_unique<ModelInfo>();
                                             mi->name = std::string(name);
                                             mi->hash = h;
                                             mi->id = next_model_id.fetch_add(1);
                                             mi->catalog_price = catalog->find(name);
                                             return mi;
                                           })
                           .first;
  // Limits and counters are per canonical model, but a dated snapshot the catalog prices apart
  // (gpt-4o-2024-05-13 at $5/$15, not gpt-4o's $2.50/$10) is priced as called (find() falls back
  // to the canonical name).
  const ModelPrice* raw_price = name.size() == raw_model.size() ? m->catalog_price : catalog->find(raw_model);
  if (catalog_price != nullptr) *catalog_price = raw_price;
  if (raw_model.size() <= sizeof last.name) {
    last.generation = generation;
    last.length = raw_model.size();
    std::memcpy(last.name, raw_model.data(), raw_model.size());
    last.model = m;
    last.catalog_price = raw_price;
  }
  return m;
}

const CompiledPlan* Engine::resolve_plan(UserState* user, const PlanSnapshot* snap) {
  for (;;) {
    const Assignment* a = user->assignment.load(std::memory_order_acquire);
    const CompiledPlan* plan = snap->default_plan;
    if (a != nullptr && !a->plan.empty()) {
      auto it = snap->by_name.find(a->plan);
      if (it != snap->by_name.end()) {
        plan = it->second;
      } else {
        // The user's plan was removed by a plan swap: meter without gating, and say so.
        plan = &snap->unlimited;
        report_error(absl::NotFoundError(str_cat("user ", user->key, ": plan \"", a->plan,
                                                 "\" is not in the current plans; the user is not gated")));
      }
    }
    user->plan_cache.store(plan, std::memory_order_release);
    // An assignment that changed meanwhile may have cleared the cache before our store: redo it,
    // or the user would stay on the old plan.
    if (user->assignment.load(std::memory_order_acquire) == a) return plan;
  }
}

namespace {

// Errors found under a user's mutex, reported once it is released: an on_error callback may call
// back into Paygent for the same user.
struct DeferredErrors {
  Engine* engine;
  std::vector<absl::Status> list;
  void push_back(absl::Status s) { list.push_back(std::move(s)); }
  ~DeferredErrors() {
    for (auto& s : list) engine->report_error(std::move(s));
  }
};

}  // namespace

namespace {

// A window with its `slots` model counters right behind it, in one allocation.
PeriodWindow* make_period_window(Arena& arena, std::int64_t start, std::int64_t end, std::size_t slots) {
  static_assert(sizeof(PeriodWindow) % alignof(ModelCounters) == 0 && std::is_trivially_destructible_v<ModelCounters>);
  char* p = static_cast<char*>(arena.allocate(sizeof(PeriodWindow) + slots * sizeof(ModelCounters), 64));
  auto* models = reinterpret_cast<ModelCounters*>(p + sizeof(PeriodWindow));
  for (std::size_t i = 0; i < slots; ++i) new (models + i) ModelCounters();
  return new (p) PeriodWindow(start, end, slots, models);
}

}  // namespace

PeriodWindow* Engine::roll_period(UserState* user, const CompiledPlan* plan, std::int64_t now) {
  DeferredErrors deferred{this, {}};  // declared first: reports after the lock is released
  std::lock_guard<std::mutex> lock(user->mu);
  const Assignment* a = user->assignment.load(std::memory_order_acquire);
  PeriodWindow* cur = user->period.load(std::memory_order_acquire);
  Period bounds;
  const absl::Time t = absl::FromUnixNanos(now);
  if (a != nullptr && a->subscription) {
    bounds = subscription_period(absl::FromUnixNanos(a->start_ns), absl::FromUnixNanos(a->end_ns), t);
  } else {
    bounds = calendar_period(plan->rule, t);
  }
  const std::int64_t start = absl::ToUnixNanos(bounds.start);
  const std::int64_t end = absl::ToUnixNanos(bounds.end);
  if (cur != nullptr && cur->start_ns == start && cur->end_ns == end) {
    // Same period: the new plan or assignment applies to it. Its model limits need counters.
    for (const CompiledLimit& l : plan->limits) {
      if (cur->counters(l.model->id) == nullptr && !cur->slots_exhausted.exchange(true)) {
        deferred.push_back(absl::ResourceExhaustedError(
            str_cat("user ", user->key, ": no counter slot left this period for model ", l.model->name,
                    "; its token limit applies from the next period")));
      }
    }
    cur->assignment_tag.store(a, std::memory_order_release);
    cur->tag.store(plan, std::memory_order_release);
    return cur;
  }
  const std::size_t slots = plan->limits.size() + kSpareModelSlots;
  ArenaPtr<PeriodWindow> w(make_period_window(arena, start, end, slots));
  w->rule = plan->rule;
  for (const CompiledLimit& l : plan->limits) w->counters(l.model->id);
  if (store) {
    // A window that overlaps the previous one (a subscription moved) must see every event, so the
    // writer is drained first. A plain roll-over to the next period needs no flush.
    if (cur != nullptr && start < cur->end_ns) {
      std::unique_lock<std::mutex> wl(writer_mu);
      if (!stopping) {  // a stopping writer has committed everything and will not answer
        const std::uint64_t ticket = ++flush_requested;
        writer_cv.notify_all();
        flushed_cv.wait_for(wl, std::chrono::seconds(2), [&] { return flush_done >= ticket; });
      }
    }
    auto totals = store->totals(user->key, start, end);
    if (totals.ok()) {
      w->committed.store(totals->cost, std::memory_order_relaxed);
      w->spend.store(totals->cost, std::memory_order_relaxed);
      w->calls.store(totals->calls, std::memory_order_relaxed);
      for (const auto& m : totals->by_model) {
        ModelCounters* c = w->counters(model_for(m.model)->id);
        if (c == nullptr) continue;
        c->committed_tokens.store(m.input_tokens + m.output_tokens, std::memory_order_relaxed);
        c->tokens.store(m.input_tokens + m.output_tokens, std::memory_order_relaxed);
        c->input.store(m.input_tokens, std::memory_order_relaxed);
        c->output.store(m.output_tokens, std::memory_order_relaxed);
        c->calls.store(m.calls, std::memory_order_relaxed);
        c->cost.store(m.cost, std::memory_order_relaxed);
      }
    } else {
      deferred.push_back(totals.status());
    }
    // Thresholds fired this period by an earlier process on this store (or before a hand-over).
    auto fired = store->fired(user->key, start, start);
    if (fired.ok()) {
      apply_fired(*plan, *fired, nullptr, w.get());
    } else {
      deferred.push_back(fired.status());
    }
  }
  if (cur != nullptr && start < cur->end_ns) {
    // Calls in flight were admitted on the old window and will settle there: the new window takes
    // over what they hold, and from now on the old one passes every settle and release on to it
    // (apply()), so that they count in the window that gates the user. (A call that settles in
    // the instant between the totals read and this hand-over is the one left out.)
    w->committed.fetch_add(cur->committed.load(std::memory_order_acquire) - cur->spend.load(std::memory_order_acquire),
                           std::memory_order_acq_rel);
    for (std::size_t i = 0; i < cur->slots; ++i) {
      const ModelCounters& old = cur->models[i];
      const std::uint32_t id = old.model_id.load(std::memory_order_acquire);
      if (id == kNoModel) break;
      ModelCounters* c = w->counters(id);
      if (c == nullptr) continue;
      c->committed_tokens.fetch_add(old.committed_tokens.load(std::memory_order_acquire) -
                                        old.tokens.load(std::memory_order_acquire),
                                    std::memory_order_acq_rel);
    }
    cur->superseded_by.store(w.get(), std::memory_order_release);
  }
  w->assignment_tag.store(a, std::memory_order_release);
  w->tag.store(plan, std::memory_order_release);
  PeriodWindow* out = w.get();
  user->periods.push_back(std::move(w));
  user->period.store(out, std::memory_order_release);
  users.set_hint(user, kUserHintPeriod, out);
  if (syncer) syncer->watch_user(user->key, /*urgent=*/true);  // the backend's total for the new period
  return out;
}

namespace {

// Restores a session's spend from the store's rows for it.
void restore_session(SessionWindow& w, const SessionTotals& t) {
  w.committed.store(t.cost, std::memory_order_relaxed);
  w.spend.store(t.cost, std::memory_order_relaxed);
  w.calls.store(t.calls, std::memory_order_relaxed);
  w.last_activity_ns.store(t.last_ns, std::memory_order_relaxed);
}

// Restores the soft-gate thresholds a resumed session already fired (see Engine::apply_fired).
void restore_fired(Engine& engine, SessionWindow& w, const UserState& user, const CompiledPlan& plan,
                   DeferredErrors& deferred) {
  auto fired = engine.store->fired(user.key, w.start_ns - plan.session_timeout_ns, INT64_MAX);
  if (fired.ok()) {
    engine.apply_fired(plan, *fired, &w, nullptr);
  } else {
    deferred.push_back(fired.status());
  }
}

}  // namespace

SessionWindow* Engine::roll_implicit_session(UserState* user, const CompiledPlan* plan, std::int64_t now) {
  DeferredErrors deferred{this, {}};
  std::lock_guard<std::mutex> lock(user->mu);
  SessionWindow* cur = user->implicit_session.load(std::memory_order_acquire);
  if (cur != nullptr && now - cur->last_activity_ns.load(std::memory_order_relaxed) <= plan->session_timeout_ns) {
    return cur;
  }
  ArenaPtr<SessionWindow> w;
  if (cur == nullptr && store) {
    // First sight of the user in this process: resume an implicit session still active in the store.
    auto found = store->sessions(user->key, "", now - plan->session_timeout_ns - 31LL * 86400 * 1'000'000'000,
                                 now - plan->session_timeout_ns, now + 1);
    if (found.ok()) {
      for (const SessionTotals& t : *found) {
        if (t.session_id.rfind("auto-", 0) == 0) {
          w.reset(arena.make<SessionWindow>(t.session_id, t.first_ns));
          restore_session(*w, t);
          restore_fired(*this, *w, *user, *plan, deferred);
          break;
        }
      }
    } else {
      deferred.push_back(found.status());
    }
  }
  if (!w) w.reset(arena.make<SessionWindow>(str_cat("auto-", now / kNanosPerMs), now));
  SessionWindow* out = w.get();
  user->sessions.push_back(std::move(w));
  user->implicit_session.store(out, std::memory_order_release);
  users.set_hint(user, kUserHintSession, out);
  return out;
}

SessionEntry* Engine::session_entry(UserState* user, std::string_view session_id) {
  const std::uint64_t h = session_hash(user, session_id);
  return sessions
      .find_or_insert(h, [&](const SessionEntry& e) { return e.user == user && e.session_id == session_id; },
                      [&] {
                        auto e = std::make_unique<SessionEntry>();
                        e->user = user;
                        e->session_id = std::string(session_id);
                        e->hash = h;
                        return e;
                      })
      .first;
}

SessionWindow* Engine::roll_named_session(SessionEntry* entry, const CompiledPlan* plan, std::int64_t now) {
  UserState* user = entry->user;
  DeferredErrors deferred{this, {}};
  std::lock_guard<std::mutex> lock(user->mu);
  SessionWindow* cur = entry->window.load(std::memory_order_acquire);
  if (cur != nullptr && now - cur->last_activity_ns.load(std::memory_order_relaxed) <= plan->session_timeout_ns) {
    return cur;
  }
  ArenaPtr<SessionWindow> w(arena.make<SessionWindow>(entry->session_id, now));
  if (cur == nullptr && store) {
    auto found = store->sessions(user->key, entry->session_id, 0, now - plan->session_timeout_ns, now + 1);
    if (found.ok()) {
      if (!found->empty()) {
        w.reset(arena.make<SessionWindow>(entry->session_id, found->front().first_ns));
        restore_session(*w, found->front());
        restore_fired(*this, *w, *user, *plan, deferred);
      }
    } else {
      deferred.push_back(found.status());
    }
  }
  SessionWindow* out = w.get();
  user->sessions.push_back(std::move(w));
  entry->window.store(out, std::memory_order_release);
  return out;
}

bool Engine::resolve(const CalledModel& called, std::int64_t now, CallSite& site, LimitUse use,
                     const ContextData* ctx) {
  if (ctx == nullptr) ctx = Context::current();
  if (ctx == nullptr || ctx->user_id.empty()) return false;
  site.context = ctx;
  site.now_ns = now;

  LastUser& last = t_last_user;
  UserState* user;
  if (last.generation == generation && last.context == ctx && last.user->key.size() == ctx->user_id.size() &&
      same_bytes(last.user->key.data(), ctx->user_id.data(), ctx->user_id.size())) {
    user = last.user;
  } else {
    user = user_for(ctx->user_id, true);
    last = LastUser{generation, ctx, user};
  }
  site.user = user;
  if (syncer) {
    // Once per refresh round per active user (a relaxed load otherwise): have the syncer bring
    // the backend's total for them, so usage made by other processes is seen without a batch.
    const std::uint64_t epoch = refresh_epoch.load(std::memory_order_relaxed);
    if (user->refreshed_epoch.load(std::memory_order_relaxed) != epoch) {
      user->refreshed_epoch.store(epoch, std::memory_order_relaxed);
      syncer->watch_user(user->key, /*urgent=*/false);
    }
  }

  const PlanSnapshot* snap = plans.load(std::memory_order_acquire);
  const CompiledPlan* plan = user->plan_cache.load(std::memory_order_acquire);
  if (plan == nullptr || plan->snapshot != snap) plan = resolve_plan(user, snap);
  site.plan = plan;

  PeriodWindow* period = user->period.load(std::memory_order_acquire);
  if (period == nullptr || now >= period->end_ns || period->tag.load(std::memory_order_acquire) != plan ||
      period->assignment_tag.load(std::memory_order_acquire) != user->assignment.load(std::memory_order_acquire)) {
    period = roll_period(user, plan, now);
  }
  site.period = period;

  SessionWindow* session;
  if (ctx->session_id.empty()) {
    session = user->implicit_session.load(std::memory_order_acquire);
    if (session == nullptr ||
        now - session->last_activity_ns.load(std::memory_order_relaxed) > plan->session_timeout_ns) {
      session = roll_implicit_session(user, plan, now);
    }
  } else {
    SessionEntry* entry = user->last_named.load(std::memory_order_acquire);
    if (entry == nullptr || entry->session_id != ctx->session_id) {
      entry = session_entry(user, ctx->session_id);
      user->last_named.store(entry, std::memory_order_release);
    }
    session = entry->window.load(std::memory_order_acquire);
    if (session == nullptr ||
        now - session->last_activity_ns.load(std::memory_order_relaxed) > plan->session_timeout_ns) {
      session = roll_named_session(entry, plan, now);
    }
  }
  site.session = session;

  const ModelPrice* catalog_price = called.catalog_price;
  const ModelInfo* m = called.model;
  site.model = m;
  if (const ModelPrice* p = plan->rate_for(m)) {
    site.price = p;
    site.price_source = UsageEvent::PriceSource::kPlan;
  } else if (catalog_price != nullptr) {
    site.price = catalog_price;
    site.price_source = UsageEvent::PriceSource::kCatalog;
  } else {
    site.price = nullptr;
    site.price_source = UsageEvent::PriceSource::kUnknown;
  }
  resolve_limits(site, use);
  return true;
}

bool Engine::resolve_now(const CalledModel& model, CallSite& site, LimitUse use, const ContextData* ctx) {
  std::int64_t now = coarse_now_ns();
  if (!resolve(model, now, site, use, ctx)) return false;
  if (site.period->end_ns - now < kCoarseMarginNs ||
      site.session->last_activity_ns.load(std::memory_order_relaxed) + site.plan->session_timeout_ns - now <
          kCoarseMarginNs) {
    now = now_ns();
    return resolve(model, now, site, use, ctx);
  }
  return true;
}

Nanos Engine::estimate_cost(const ModelPrice* price, std::int64_t input, std::int64_t output) const noexcept {
  if (price == nullptr || (input <= 0 && output <= 0)) return 0;  // a check without an estimate
  Usage u;
  u.input_tokens = input;
  u.output_tokens = output;
  return cost_of(u, *price);
}

// --- Engine: gates --------------------------------------------------------------------------------

[[gnu::always_inline]] inline void Engine::resolve_limits(CallSite& site, LimitUse use) noexcept {
  LimitTable& t = site.limits;
  t.count = 0;
  if (use == LimitUse::kNone) return;
  const bool hold = use == LimitUse::kHold;
  const CompiledPlan& plan = *site.plan;
  PeriodWindow& period = *site.period;
  SessionWindow& session = *site.session;
  // A limit of the plan (reason kNone: the plan sets none, held and not judged), with no ceiling,
  // alone on its counter, final when hard.
  auto plan_limit = [&t](std::atomic<std::int64_t>* counter, const std::atomic<std::int64_t>* external,
                         std::int64_t max, GateReason reason, LimitUnit unit, std::int64_t resets_ns,
                         LimitWindow window, FiredBits* fired, const ModelInfo* model) {
    t.push() = LimitEntry{.counter = counter,
                          .external = external,
                          .ceiling = nullptr,
                          .max = max,
                          .resets_ns = resets_ns,
                          .fired = fired,
                          .model = model,
                          .reason = reason,
                          .unit = unit,
                          .window = window,
                          .shares_hold = false,
                          .retry_once = false};
  };
  // Judging needs the limited entries only; holding, every counter the call adds to.
  if (plan.max_period || hold) {  // spend in the billing period (every process's, with a backend)
    plan_limit(&period.committed, &period.external, plan.max_period.value_or(0),
               plan.max_period ? GateReason::kTotalSpend : GateReason::kNone, LimitUnit::kNanos,
               period.end_ns, LimitWindow::kPeriod, &period.fired, nullptr);
    if (plan.max_period && leases) push_lease(site, period.leases.load(std::memory_order_acquire), -1);
  }
  if (plan.max_session || hold) {  // spend in the session (this process's)
    plan_limit(&session.committed, &kNoExternal, plan.max_session.value_or(0),
               plan.max_session ? GateReason::kSessionSpend : GateReason::kNone, LimitUnit::kNanos,
               site.now_ns + plan.session_timeout_ns, LimitWindow::kSession, &session.fired, nullptr);
    // A named session's spend is leased; an implicit one belongs to this process alone.
    if (plan.max_session && leases && !site.context->session_id.empty()) {
      push_lease_entry(site, session.lease.load(std::memory_order_acquire));
    }
  }
  // The called model's tokens in the period. Holding claims its counter slot; a model with no slot
  // left is not held (nor, if limited, enforced). Judging reads it without claiming: a limited model
  // with no slot is judged on its estimate alone.
  const CompiledLimit* limit = plan.limit_for(site.model);
  ModelCounters* mc = nullptr;
  if (hold) {
    mc = period.counters(site.model->id);
    if (limit != nullptr && mc == nullptr && !period.slots_exhausted.exchange(true)) {
      report_error(absl::ResourceExhaustedError(str_cat("no counter slot for model ", site.model->name,
                                                        "; its token limit is not enforced this period")));
    }
  } else if (limit != nullptr) {
    mc = const_cast<ModelCounters*>(period.find(site.model->id));  // not written: judged only
  }
  if (hold ? mc != nullptr : limit != nullptr) {
    plan_limit(mc != nullptr ? &mc->committed_tokens : &kNoCounter, mc != nullptr ? &mc->external_tokens : &kNoExternal,
               limit != nullptr ? limit->max_tokens : 0, limit != nullptr ? GateReason::kModelLimit : GateReason::kNone,
               LimitUnit::kTokens, period.end_ns, LimitWindow::kPeriod,
               mc != nullptr ? &mc->fired : &period.fired_unslotted, site.model);
    if (limit != nullptr && mc != nullptr && leases) {
      push_lease(site, period.leases.load(std::memory_order_acquire), static_cast<int>(mc - period.models));
    }
  }
  // The customer's credit wallet, judged (never held: a call has no estimate in credits).
  if (const std::int64_t granted = site.user->wallet_granted.load(std::memory_order_acquire);
      granted >= 0 && options.credit_wallet_gate) [[unlikely]] {
    t.push() = LimitEntry{.counter = &site.user->wallet_used,
                          .external = &kNoExternal,
                          .ceiling = nullptr,
                          .max = granted,
                          .resets_ns = std::numeric_limits<std::int64_t>::max(),
                          .fired = &site.user->wallet_fired,
                          .model = nullptr,
                          .reason = GateReason::kCreditWallet,
                          .unit = LimitUnit::kCredits,
                          .window = LimitWindow::kWallet,
                          .shares_hold = false,
                          .retry_once = false};
  }
}

// The lease of a period limit (`model_slot` -1: total_spend) after its entry: from the window's
// leases when made, else made now (cold).
[[gnu::always_inline]] inline void Engine::push_lease(CallSite& site, PeriodLeases* made, int model_slot) noexcept {
  Lease* lease = nullptr;
  if (made != nullptr) {
    lease = (model_slot < 0 ? made->total : made->models[model_slot]).load(std::memory_order_acquire);
  }
  push_lease_entry(site, lease);
}

// The entry of `lease` (nullptr: made now, cold) judged in the hold of the entry just pushed.
[[gnu::always_inline]] inline void Engine::push_lease_entry(CallSite& site, Lease* lease) noexcept {
  LimitTable& t = site.limits;
  const LimitEntry& leased = t[t.count - 1];
  if (lease == nullptr) [[unlikely]] {
    lease = lease_of(site, leased);
    if (lease == nullptr || leases->unsupported()) return;  // gated as without leases (fail-open)
  }
  LimitEntry& e = t.push();
  e = leased;
  e.external = &kNoExternal;  // a lease bounds this process's own committed amount
  e.ceiling = &lease->bound;
  e.max = 0;
  e.fired = nullptr;
  e.reason = GateReason::kLeaseExhausted;
  e.shares_hold = true;
  e.retry_once = true;
}

namespace {

[[gnu::always_inline]] inline GuardResult limit_result(const LimitEntry& l, const Verdict& v, std::int64_t current,
                                                       std::int64_t estimate, std::int64_t limit,
                                                       const CompiledPlan& plan) {
  GuardResult r;
  r.status = v.status;
  r.reason = l.reason;
  if (l.model != nullptr) r.model = l.model->name;
  r.usage_pct = v.pct;
  r.current_value = current;
  r.limit_value = limit;
  r.call_estimate = estimate;
  r.resets_at = l.resets_ns == std::numeric_limits<std::int64_t>::max() ? absl::InfiniteFuture()
                                                                          : absl::FromUnixNanos(l.resets_ns);
  r.threshold = v.status == GateStatus::kHardGate ? plan.hard
                : v.soft_index >= 0              ? plan.soft[static_cast<std::size_t>(v.soft_index)]
                                                 : 0;
  return r;
}

}  // namespace

GuardResult Engine::evaluate(const CallSite& site, std::int64_t est_cost, std::int64_t est_tokens,
                             Verdicts& verdicts) const noexcept {
  const CompiledPlan& plan = *site.plan;
  const LimitTable& t = site.limits;
  for (int i = 0; i < t.count; ++i) {
    const LimitEntry& l = t[i];
    if (l.reason == GateReason::kNone) continue;
    const std::int64_t e = l.estimate(est_cost, est_tokens);
    if (l.retry_once) {  // a lease: only its hard verdict counts (retry_lease then decides)
      if (e == 0) continue;  // nothing held under it
      const std::int64_t c = l.counter->load(std::memory_order_acquire);
      const std::int64_t max = l.limit();
      if (judge_ceiling(c, e, max).status == GateStatus::kHardGate) {
        verdicts.add(limit_result(l, Verdict{GateStatus::kHardGate, -1, 1.0}, c + e, e, max, plan), i);
      }
      continue;
    }
    const std::int64_t c = l.counter->load(std::memory_order_acquire) + l.external->load(std::memory_order_relaxed);
    const std::int64_t max = l.limit();
    const Verdict v = judge(c, e, max, plan, l.fired != nullptr);
    verdicts.add(limit_result(l, v, c + e, e, max, plan), i);
  }
  verdicts.best.user_id = site.user->key;  // the soft ones get it when they fire
  return verdicts.best;
}

namespace {

// `r` with the call's user (set once per result rather than in every Verdicts::add).
[[gnu::always_inline]] inline GuardResult named(GuardResult& r, const CallSite& site) noexcept {
  r.user_id = site.user->key;
  return r;
}

// One entry's verdict inside a hold, with what it was judged on.
struct Judged {
  Verdict v;
  std::int64_t current;  // usage with the estimate
  std::int64_t max;
};

}  // namespace

GuardResult Engine::admit(const CallSite& site, std::int64_t est_cost, std::int64_t est_tokens,
                          Verdicts& verdicts) noexcept {
  const CompiledPlan& plan = *site.plan;
  const LimitTable& t = site.limits;
  for (int i = 0; i < t.count;) {
    // Entries [i, end) are judged on one counter and held on it once, in one CAS: concurrent
    // reservations can never take it past any of their hard thresholds.
    int end = i + 1;
    while (end < t.count && t[end].shares_hold) ++end;
    std::atomic<std::int64_t>& counter = *t[i].counter;
    const std::int64_t e = t[i].estimate(est_cost, est_tokens);
    Judged judged[LimitTable::kMax];
    int hard = -1;
    std::int64_t c = counter.load(std::memory_order_acquire);
    for (;;) {
      for (int j = i; j < end; ++j) {
        const LimitEntry& l = t[j];
        if (l.reason == GateReason::kNone) continue;
        Judged& jv = judged[j - i];
        const std::int64_t used = c + l.external->load(std::memory_order_relaxed);
        jv.max = l.limit();
        jv.v = l.retry_once ? judge_ceiling(used, e, jv.max) : judge(used, e, jv.max, plan, l.fired != nullptr);
        jv.current = used + e;
        if (jv.v.status == GateStatus::kHardGate) {
          hard = j;
          break;
        }
      }
      if (hard >= 0) break;
      if (e == 0 || counter.compare_exchange_weak(c, c + e, std::memory_order_acq_rel, std::memory_order_acquire)) {
        break;
      }
    }
    const int judged_end = hard >= 0 ? hard + 1 : end;
    for (int j = i; j < judged_end; ++j) {
      const LimitEntry& l = t[j];
      if (l.reason == GateReason::kNone) continue;
      const Judged& jv = judged[j - i];
      if (l.retry_once && jv.v.status != GateStatus::kHardGate) continue;  // a lease with room says nothing
      verdicts.add(limit_result(l, jv.v, jv.current, e, jv.max, plan), j);
    }
    if (hard >= 0) {
      verdicts.hard_entry = hard;
      // Nothing held on a hard gate: release what the earlier entries held.
      for (int k = 0; k < i; ++k) {
        if (!t[k].shares_hold) t[k].counter->fetch_sub(t[k].estimate(est_cost, est_tokens), std::memory_order_acq_rel);
      }
      return named(verdicts.best, site);
    }
    i = end;
  }
  return named(verdicts.best, site);
}

namespace {

constexpr std::string_view kSessionKeyPrefix = "session_spend:";
constexpr std::string_view kModelKeyPrefix = "model_limit:";

}  // namespace

void Engine::note_fired(const CallSite& site, const LimitEntry& limit, const GuardResult& r, Ppm threshold,
                        bool hard) noexcept {
  if (!store || limit.window == LimitWindow::kWallet) return;  // a wallet's are not saved (LimitWindow)
  try {
    FiredThreshold f;
    f.user_id = site.user->key;
    // A session's limit is keyed by its session ("session_spend:<id>"), a period's by its reason.
    if (limit.window == LimitWindow::kSession) {
      f.limit_key = str_cat(r.gate_reason(), ":", site.session->session_id);
      f.period_start_ns = site.session->start_ns;
    } else {
      f.limit_key = r.gate_reason();
      f.period_start_ns = site.period->start_ns;
    }
    f.threshold_ppm = threshold;
    f.hard = hard;
    if (hard) f.fired_ns = site.now_ns;
    std::lock_guard<std::mutex> lock(fired_mu);
    fired_unsaved.push_back(std::move(f));
  } catch (...) {
    counters.errors.add();  // only a restart may fire it again
  }
}

void Engine::apply_fired(const CompiledPlan& plan, const std::vector<FiredThreshold>& rows, SessionWindow* session,
                         PeriodWindow* period) const noexcept {
  for (const FiredThreshold& row : rows) {
    const std::string_view key = row.limit_key;
    FiredBits* fired = nullptr;
    if (session != nullptr) {
      // The session's own rows: its id, started no earlier than one timeout before this window
      // (an earlier session of the same id had expired by then).
      if (!key.starts_with(kSessionKeyPrefix) || key.substr(kSessionKeyPrefix.size()) != session->session_id ||
          row.period_start_ns < session->start_ns - plan.session_timeout_ns) {
        continue;
      }
      fired = &session->fired;
    } else {
      if (row.period_start_ns != period->start_ns) continue;
      if (key == "total_spend") {
        fired = &period->fired;
      } else if (key.starts_with(kModelKeyPrefix)) {
        const std::string_view model = key.substr(kModelKeyPrefix.size());
        const auto l = std::find_if(plan.limits.begin(), plan.limits.end(),
                                    [&](const CompiledLimit& cl) { return cl.model->name == model; });
        if (l == plan.limits.end()) continue;
        ModelCounters* mc = period->counters(l->model->id);  // a limited model's slot is claimed already
        fired = mc != nullptr ? &mc->fired : &period->fired_unslotted;
      } else {
        continue;
      }
    }
    if (row.hard) {
      fired->fetch_or(kHardFired, std::memory_order_acq_rel);
      continue;
    }
    for (std::size_t i = 0; i < plan.soft.size() && i < 8; ++i) {
      if (plan.soft[i] != row.threshold_ppm) continue;
      fired->fetch_or(static_cast<std::uint16_t>(1u << i), std::memory_order_acq_rel);
    }
  }
}

void Engine::mark_soft_gate_fired(std::string_view user_id, std::string_view limit_key, std::int64_t period_start_ns,
                                  Ppm threshold) {
  mark_soft_gates_fired(user_id, {FiredThreshold{std::string(user_id), std::string(limit_key), period_start_ns, threshold}});
}

void Engine::mark_soft_gates_fired(std::string_view user_id, const std::vector<FiredThreshold>& rows) {
  if (rows.empty()) return;
  if (store) {
    // Seen elsewhere: the backend has them (sent), so the syncer does not send them back.
    if (absl::Status s = store->save_fired(rows, /*sent=*/true); !s.ok()) report_error(s);
  }
  UserState* user = user_for(user_id, false);
  if (user == nullptr) return;  // read from the store when the user's windows are built
  const PlanSnapshot* snap = plans.load(std::memory_order_acquire);
  const CompiledPlan* plan = user->plan_cache.load(std::memory_order_acquire);
  if (plan == nullptr || plan->snapshot != snap) plan = resolve_plan(user, snap);
  // Each session named by a row: the live window of that id, if any (apply_fired picks its rows).
  std::vector<std::string_view> session_ids;
  for (const FiredThreshold& row : rows) {
    const std::string_view key = row.limit_key;
    if (!key.starts_with(kSessionKeyPrefix)) continue;
    const std::string_view session_id = key.substr(kSessionKeyPrefix.size());
    if (std::find(session_ids.begin(), session_ids.end(), session_id) != session_ids.end()) continue;
    session_ids.push_back(session_id);
    SessionWindow* w = user->implicit_session.load(std::memory_order_acquire);
    if (w == nullptr || w->session_id != session_id) {
      const SessionEntry* entry = sessions.find(session_hash(user, session_id), [&](const SessionEntry& e) {
        return e.user == user && e.session_id == session_id;
      });
      w = entry != nullptr ? entry->window.load(std::memory_order_acquire) : nullptr;
    }
    if (w != nullptr) apply_fired(*plan, rows, w, nullptr);
  }
  if (PeriodWindow* w = user->period.load(std::memory_order_acquire)) apply_fired(*plan, rows, nullptr, w);
}

template <class F, class... A>
void Engine::invoke_callback(const F& f, const A&... args) noexcept {
  if (!f) return;
  try {
    f(args...);
  } catch (const std::exception& e) {
    counters.callback_failures.add();
    report_error(absl::InternalError(str_cat("a Paygent callback threw: ", e.what())));
  } catch (...) {
    counters.callback_failures.add();
    report_error(absl::InternalError("a Paygent callback threw a non-std::exception"));
  }
}

void Engine::fire_gate_callbacks(const CallSite& site, const Verdicts& verdicts) noexcept {
  if (verdicts.best.status == GateStatus::kHardGate) {
    counters.hard_gates.add();
    // The first refusal of each limit in each window is saved, and so reaches the backend's gate
    // history: a limit of the plan (not a lease's slice, which only asks for more), once.
    const GuardResult& r = verdicts.best;
    if (r.reason == GateReason::kTotalSpend || r.reason == GateReason::kSessionSpend ||
        r.reason == GateReason::kModelLimit) {
      for (int i = 0; i < site.limits.count; ++i) {
        const LimitEntry& limit = site.limits[i];
        if (limit.reason != r.reason || limit.fired == nullptr || limit.retry_once ||
            (r.reason == GateReason::kModelLimit && (limit.model == nullptr || limit.model->name != r.model))) {
          continue;
        }
        if ((limit.fired->load(std::memory_order_relaxed) & kHardFired) == 0 &&
            (limit.fired->fetch_or(kHardFired, std::memory_order_acq_rel) & kHardFired) == 0) {
          note_fired(site, limit, r, site.plan->hard, /*hard=*/true);
        }
        break;
      }
    }
    invoke_callback(options.on_hard_gate, verdicts.best);
  }
  // Every limit's soft thresholds, not only the worst limit's: an 80% alert on the period spend
  // must fire even when the model quota is the tighter limit. Each threshold of each limit fires
  // once per window (its entry's fired bits: the period's, or the session's for the session
  // limit); a call that jumps over several thresholds fires each of them, lowest first.
  for (int k = 0; k < verdicts.count; ++k) {
    const GuardResult& r = verdicts.soft(k);
    const LimitEntry& limit = site.limits[verdicts.entry(k)];
    FiredBits& fired = *limit.fired;  // set: only an entry with soft thresholds gives a soft verdict
    const auto& soft = site.plan->soft;
    for (std::size_t i = 0; i < soft.size() && i < 8 && soft[i] <= r.threshold; ++i) {
      const auto bit = static_cast<std::uint16_t>(1u << i);
      if ((fired.load(std::memory_order_relaxed) & bit) != 0) continue;
      if ((fired.fetch_or(bit, std::memory_order_acq_rel) & bit) != 0) continue;
      counters.soft_gates.add();
      note_fired(site, limit, r, soft[i]);
      GuardResult at = r;
      at.threshold = soft[i];
      at.user_id = site.user->key;
      invoke_callback(options.on_soft_gate, at);
    }
  }
}

// --- Engine: settling and metering ----------------------------------------------------------------

void Engine::apply(PeriodWindow* period, SessionWindow* session, const ModelInfo* model, Nanos cost_delta,
                   Nanos cost_settled, std::int64_t tokens_delta, const Usage* settled) noexcept {
  session->committed.fetch_add(cost_delta, std::memory_order_acq_rel);
  if (settled != nullptr) {
    session->spend.fetch_add(cost_settled, std::memory_order_relaxed);
    session->calls.fetch_add(1, std::memory_order_relaxed);
  }
  // The window the call was admitted in, and each that took over from it (roll_period).
  for (; period != nullptr; period = period->superseded_by.load(std::memory_order_acquire)) {
    period->committed.fetch_add(cost_delta, std::memory_order_acq_rel);
    ModelCounters* mc = period->counters(model->id);
    // A locked add of 0 changes nothing but costs ~20 cycles: speech, video and billing events
    // carry no tokens, so their token counters are left alone.
    if (mc != nullptr && tokens_delta != 0) mc->committed_tokens.fetch_add(tokens_delta, std::memory_order_acq_rel);
    if (settled == nullptr) continue;
    period->spend.fetch_add(cost_settled, std::memory_order_relaxed);
    period->calls.fetch_add(1, std::memory_order_relaxed);
    if (mc != nullptr) {
      if ((settled->input_tokens | settled->output_tokens) != 0) {
        mc->tokens.fetch_add(settled->total_tokens(), std::memory_order_relaxed);
        mc->input.fetch_add(settled->input_tokens, std::memory_order_relaxed);
        mc->output.fetch_add(settled->output_tokens, std::memory_order_relaxed);
      }
      mc->calls.fetch_add(1, std::memory_order_relaxed);
      mc->cost.fetch_add(cost_settled, std::memory_order_relaxed);
    }
  }
}

void Engine::meter(const std::shared_ptr<const ContextData>& context, UserState* user, const ModelInfo* model,
                   const SessionWindow* session, Provider provider, const Usage& usage, Nanos cost,
                   UsageEvent::PriceSource source, std::int64_t ts_ns, bool estimated) noexcept {
  counters.events.add();
  const EventId id = next_event_id();
  if (source == UsageEvent::PriceSource::kPlan && (usage.cached_input_tokens | usage.cache_creation_input_tokens) > 0)
      [[unlikely]] {
    report_guessed_cache_rate(user, model, usage);
  }
  if (source == UsageEvent::PriceSource::kUnknown) {
    counters.unknown_models.add();
    if (!model->unknown_reported.exchange(true, std::memory_order_relaxed)) {
      report_error(absl::NotFoundError(str_cat("no price for model \"", model->name,
                                                    "\": its calls are metered with cost unknown (cost_unknown; add it to the plan's cost_rates)")));
    }
  }
  QueuedEvent q;
  q.id = id;
  q.context = context;
  q.model = model;
  q.session = session;
  q.provider = provider;
  q.quantities.set_usage(usage);
  q.quantities.cost_nanos = cost;
  q.quantities.ts_ns = ts_ns;
  q.quantities.estimated = estimated;
  q.quantities.cost_unknown = source == UsageEvent::PriceSource::kUnknown;  // 0 means unknown, not free
  publish(q, user, source);
}

void Engine::publish(QueuedEvent& q, const UserState* user, UsageEvent::PriceSource source) noexcept {
  if (options.on_usage) {
    const EventQuantities& n = q.quantities;
    UsageEvent e;
    e.id = q.id;
    e.user_id = user->key;
    e.session_id = q.session->session_id;
    e.agent_id = q.context->agent_id;
    e.indicator = q.context->indicator;
    e.meta_tags = &q.context->meta_tags;
    e.model = q.model->name;
    e.provider = q.provider;
    e.usage = n.usage();
    e.cost = n.cost_nanos;
    e.timestamp = absl::FromUnixNanos(n.ts_ns);
    e.price_source = source;
    e.estimated = n.estimated;
    e.cost_unknown = n.cost_unknown;
    if (q.media != nullptr) {
      e.kind = usage_kind_name(n.kind);
      e.provider_text = q.media->provider;
      e.tier = q.media->tier;
      e.audio_us = n.audio_us;
      e.characters = n.characters;
      e.video_us = n.video_us;
    }
    invoke_callback(options.on_usage, e);
  }
  if (queue) enqueue(q);
}

void Engine::enqueue(QueuedEvent& q) noexcept {
  if (!queue->push(q)) {
    counters.queue_overflows.add();
    try {
      std::lock_guard<std::mutex> lock(overflow_mu);
      overflow.push_back(std::move(q));
    } catch (...) {
      counters.errors.add();
    }
  }
}

void Engine::report_refused_usage(const Usage& u, std::string_view then) noexcept {
  counters.refused_usages.fetch_add(1, std::memory_order_relaxed);
  try {
    std::string why;
    const std::pair<const char*, std::int64_t> fields[] = {
        {"input_tokens", u.input_tokens},
        {"output_tokens", u.output_tokens},
        {"cached_input_tokens", u.cached_input_tokens},
        {"cache_creation_input_tokens", u.cache_creation_input_tokens},
        {"reasoning_tokens", u.reasoning_tokens}};
    for (const auto& [name, v] : fields) {
      if (v < 0) {
        why = str_cat("usage.", name, " is ", v, ": token counts cannot be negative");
        break;
      }
    }
    if (!why.empty()) {
    } else if (u.cached_input_tokens > u.input_tokens) {
      why = str_cat("usage.cached_input_tokens (", u.cached_input_tokens, ") exceed usage.input_tokens (",
                    u.input_tokens, "), which count every input token, cache reads included");
    } else if (u.cache_creation_input_tokens > u.input_tokens - u.cached_input_tokens) {
      why = str_cat("usage.cache_creation_input_tokens (", u.cache_creation_input_tokens,
                    ") plus usage.cached_input_tokens (", u.cached_input_tokens, ") exceed usage.input_tokens (",
                    u.input_tokens, "), which count every input token, cache reads and writes included");
    } else if (u.reasoning_tokens > u.output_tokens) {
      why = str_cat("usage.reasoning_tokens (", u.reasoning_tokens, ") exceed usage.output_tokens (", u.output_tokens,
                    "), which count every output token, reasoning included");
    } else {
      why = str_cat("usage.input_tokens (", u.input_tokens, ") plus usage.output_tokens (", u.output_tokens,
                    ") overflow a 64-bit count");
    }
    report_error(absl::InvalidArgumentError(str_cat(why, "; ", then)));
  } catch (...) {
    counters.errors.add();
  }
}

void Engine::adopt_response_model(Reservation& r, std::string_view ran_model) noexcept {
  const std::string_view ran_name = canonical_model(ran_model);
  if (ran_name == r.model_->name) {
    // The called model: a dated snapshot the catalog prices apart (gpt-4o-2024-05-13) is priced
    // as what ran; a plan's rate covers every snapshot of its model.
    if (ran_name.size() != ran_model.size() && r.price_source_ == UsageEvent::PriceSource::kCatalog) {
      if (const ModelPrice* p = catalog->find(ran_model)) r.price_ = p;
    }
    return;
  }
  try {
    const ModelPrice* catalog_price = nullptr;
    const ModelInfo* ran = model_for(ran_model, &catalog_price);
    const PlanSnapshot* snap = plans.load(std::memory_order_acquire);
    const CompiledPlan* plan = r.user_->plan_cache.load(std::memory_order_acquire);
    if (plan == nullptr || plan->snapshot != snap) plan = resolve_plan(r.user_, snap);
    const ModelInfo* called = r.model_;
    // The token hold moves to the model that ran (settle then replaces it by the real tokens);
    // the money hold is model-free and stays.
    const std::int64_t held = r.input_tokens_ + r.output_tokens_;
    apply(r.period_, r.session_, called, 0, 0, -held, nullptr);
    apply(r.period_, r.session_, ran, 0, 0, held, nullptr);
    r.model_ = ran;
    if (const ModelPrice* p = plan->rate_for(ran)) {
      r.price_ = p;
      r.price_source_ = UsageEvent::PriceSource::kPlan;
    } else {
      r.price_ = catalog_price;
      r.price_source_ =
          catalog_price != nullptr ? UsageEvent::PriceSource::kCatalog : UsageEvent::PriceSource::kUnknown;
    }
    counters.model_mismatches.fetch_add(1, std::memory_order_relaxed);
    if (!called->mismatch_reported.exchange(true, std::memory_order_relaxed)) {
      report_error(absl::FailedPreconditionError(
          str_cat("a call of ", called->name, " was answered by ", ran_model, ": priced and counted as ", ran->name,
                  " (said once per called model; Stats::model_mismatches counts each)")));
    }
  } catch (...) {
    counters.errors.add();  // fail-open: priced as called
  }
}

// --- Engine: errors -------------------------------------------------------------------------------

void Engine::report_error(absl::Status status) noexcept {
  counters.errors.add();
  if (!options.on_error) return;
  try {
    options.on_error(status);
  } catch (...) {
    counters.callback_failures.add();
  }
}

// --- Engine: plans --------------------------------------------------------------------------------

namespace {

// `rate` scaled by num/den, rounded half-up to a pico-USD per token (exact for every ratio the
// catalog has today: 1/2, 1/10, 5/4, ...).
PicosPerToken scaled(PicosPerToken rate, PicosPerToken num, PicosPerToken den) noexcept {
  const __int128 v = (static_cast<__int128>(rate) * num + den / 2) / den;
  return v > INT64_MAX ? INT64_MAX : static_cast<PicosPerToken>(v);
}

}  // namespace

CompiledRate Engine::compile_rate(const ModelInfo* model, const CostRate& rate) const noexcept {
  CompiledRate c{model, ModelPrice{}};
  c.price.input = rate.input;
  c.price.output = rate.output;
  // Unset cache rates: the catalog's ratio to its input price for the model (see CostRate).
  const ModelPrice* listed = model->catalog_price;
  const bool ratio_known = listed != nullptr && listed->input > 0;
  if (rate.cached_input) {
    c.price.cached_input = *rate.cached_input;
  } else if (ratio_known) {
    c.price.cached_input = scaled(rate.input, listed->cached_input, listed->input);
  } else {
    c.price.cached_input = rate.input;
    c.cached_input_guessed = true;
  }
  if (rate.cache_write) {
    c.price.cache_write = *rate.cache_write;
  } else if (ratio_known) {
    c.price.cache_write = scaled(rate.input, listed->cache_write, listed->input);
  } else {
    c.price.cache_write = rate.input;
    c.cache_write_guessed = true;
  }
  return c;
}

void Engine::report_guessed_cache_rate(const UserState* user, const ModelInfo* model, const Usage& usage) noexcept {
  const CompiledPlan* plan = user->plan_cache.load(std::memory_order_acquire);
  if (plan == nullptr) return;
  for (const CompiledRate& r : plan->rates) {
    if (r.model != model) continue;
    const bool guessed = (r.cached_input_guessed && usage.cached_input_tokens > 0) ||
                         (r.cache_write_guessed && usage.cache_creation_input_tokens > 0);
    if (guessed && !model->cache_rate_reported.exchange(true, std::memory_order_relaxed)) {
      report_error(absl::NotFoundError(str_cat(
          "plan \"", plan->plan != nullptr ? plan->plan->name : "", "\" prices ", model->name,
          " without cached_input/cache_write and the price catalog does not know the model: its cache tokens are "
          "priced at the plan's input rate (set cached_input and cache_write in cost_rates; said once)")));
    }
    return;
  }
}

absl::Status Engine::install_plans(PlanConfig config) {
  if (config.hard_gate_at <= 0) return absl::InvalidArgumentError("hard_gate_at: must be positive");
  if (config.soft_gate_at.size() > 8) return absl::InvalidArgumentError("soft_gate_at: at most 8 thresholds");
  for (std::size_t i = 0; i < config.soft_gate_at.size(); ++i) {
    const Ppm t = config.soft_gate_at[i];
    if (t <= 0 || t > config.hard_gate_at || (i > 0 && t <= config.soft_gate_at[i - 1])) {
      return absl::InvalidArgumentError(
          str_cat("soft_gate_at[", i, "]: must be ascending and in (0, hard_gate_at]"));
    }
  }
  if (!config.default_plan.empty() && config.find(config.default_plan) == nullptr) {
    return absl::InvalidArgumentError(str_cat("default_plan: no plan named \"", config.default_plan, "\""));
  }
  auto snap = std::make_unique<PlanSnapshot>();
  auto shared = std::make_shared<const PlanConfig>(std::move(config));
  snap->config = shared;
  snap->unlimited.snapshot = snap.get();
  snap->unlimited.soft = shared->soft_gate_at;
  snap->unlimited.hard = shared->hard_gate_at;
  snap->default_plan = &snap->unlimited;
  for (std::size_t i = 0; i < shared->plans.size(); ++i) {
    const Plan& p = shared->plans[i];
    const std::string where = str_cat("plans[", i, "]");
    if (p.name.empty()) return absl::InvalidArgumentError(str_cat(where, ".name: required"));
    if (snap->by_name.contains(p.name)) {
      return absl::InvalidArgumentError(str_cat(where, ".name: duplicate plan name \"", p.name, "\""));
    }
    auto cp = std::make_unique<CompiledPlan>();
    cp->snapshot = snap.get();
    cp->plan = &p;
    cp->max_period = p.max_spend_per_period;
    cp->max_session = p.max_spend_per_session;
    for (const auto& [model, limit] : p.model_limits) {
      if (limit.max_tokens_per_period) cp->limits.push_back({model_for(model), *limit.max_tokens_per_period});
    }
    for (const auto& [model, rate] : p.cost_rates) cp->rates.push_back(compile_rate(model_for(model), rate));
    cp->soft = p.soft_gate_at.empty() ? shared->soft_gate_at : p.soft_gate_at;
    if (cp->soft.size() > 8) return absl::InvalidArgumentError(str_cat(where, ".soft_gate_at: at most 8"));
    cp->hard = shared->hard_gate_at;
    cp->session_timeout_ns = absl::ToInt64Nanoseconds(p.session_timeout);
    if (cp->session_timeout_ns <= 0) {
      return absl::InvalidArgumentError(str_cat(where, ".session_timeout_minutes: must be positive"));
    }
    cp->rule = p.period;
    snap->by_name.emplace(p.name, cp.get());
    snap->plans.push_back(std::move(cp));
  }
  if (!shared->default_plan.empty()) snap->default_plan = snap->by_name.at(shared->default_plan);
  std::lock_guard<std::mutex> lock(plans_mu);
  plans.store(snap.get(), std::memory_order_release);
  snapshots.push_back(std::move(snap));  // kept: calls in flight may still read the old one
  return absl::OkStatus();
}

// --- Engine: the writer ---------------------------------------------------------------------------

void Engine::writer_loop() {
  const auto interval = absl::ToChronoNanoseconds(options.local_commit_interval);
  std::unique_lock<std::mutex> lock(writer_mu);
  for (;;) {
    writer_cv.wait_for(lock, interval, [&] { return stopping || flush_requested != flush_done; });
    const std::uint64_t ticket = flush_requested;
    const bool stop = stopping;
    lock.unlock();
    drain_to_store();
    lock.lock();
    flush_done = ticket;
    flushed_cv.notify_all();
    if (stop) return;
  }
}

void Engine::save_fired_thresholds() {
  std::vector<FiredThreshold> fired;
  {
    std::lock_guard<std::mutex> lock(fired_mu);
    fired.swap(fired_unsaved);
  }
  if (fired.empty()) return;
  if (absl::Status s = store->save_fired(fired); !s.ok()) {
    report_error(s);
    // Kept for the next round (a few per user and period; bounded all the same).
    std::lock_guard<std::mutex> lock(fired_mu);
    if (fired_unsaved.size() + fired.size() <= 65536) {
      fired_unsaved.insert(fired_unsaved.begin(), fired.begin(), fired.end());
    }
  }
}

void Engine::drain_to_store() {
  std::vector<EventRecord>& pending = unstored;  // kept across rounds while the store fails
  std::vector<QueuedEvent> batch;
  QueuedEvent q;
  while (queue->pop(q)) batch.push_back(std::move(q));
  {
    std::lock_guard<std::mutex> lock(overflow_mu);
    for (auto& e : overflow) batch.push_back(std::move(e));
    overflow.clear();
  }
  for (const QueuedEvent& e : batch) {
    EventRecord s;
    static_cast<EventQuantities&>(s) = e.quantities;
    s.id = e.id.to_string();
    s.user_id = e.context->user_id;
    s.session_id = e.session->session_id;
    s.agent_id = e.context->agent_id;
    s.indicator = e.context->indicator;
    if (e.model != nullptr) s.model = e.model->name;
    if (e.media != nullptr) {
      s.provider = e.media->provider;
      s.tier = e.media->tier;
      s.resolution = e.media->resolution;
    } else {
      s.provider = std::string(provider_name(e.provider));
    }
    if (e.description) s.description = *e.description;
    s.meta_tags_json = "{";
    for (std::size_t i = 0; i < e.context->meta_tags.size(); ++i) {
      const auto& [k, v] = e.context->meta_tags[i];
      str_append(&s.meta_tags_json, i ? "," : "", json_quote(k), ":", json_quote(v));
    }
    s.meta_tags_json += "}";
    pending.push_back(std::move(s));
  }
  save_fired_thresholds();
  save_customers();
  if (pending.empty()) return;
  auto added = store->append(pending);
  if (added.ok()) {
    counters.stored_events.add(static_cast<std::int64_t>(pending.size()));
    pending.clear();
    store_failing.store(false);
    if (syncer) syncer->wake();
    return;
  }
  store_failing.store(true);
  report_error(added.status());
  const auto keep = static_cast<std::size_t>(std::max<std::int64_t>(options.max_unstored_events, 1));
  if (pending.size() > keep) {
    const std::size_t drop = pending.size() - keep;
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(drop));
    // Reported, then counted, as events_dropped() does for a full spool.
    report_error(absl::ResourceExhaustedError(
        str_cat("local store failing: dropped the ", drop, " oldest unstored events")));
    invoke_callback(options.on_events_dropped, static_cast<std::int64_t>(drop));
    counters.dropped_events.add(static_cast<std::int64_t>(drop));
  }
}

}  // namespace paygent::internal
