// The engine behind paygent::Paygent: the budget cache, windows, gates and the event pipeline.
//
// Private to the library (paygent::internal). Layout of the state, from the hot path's view:
//
//   Context::current() ──> UserState (InternTable, lock-free find; thread-local last-user cache)
//        │                   ├─ plan_cache ──> CompiledPlan (immutable; swapped with PlanSnapshot)
//        │                   ├─ period  ──> PeriodWindow  (bounds + atomic counters per limit)
//        │                   └─ implicit_session / named SessionEntry ──> SessionWindow
//        └─ model name ──> ModelInfo (InternTable; price from the catalog)
//
// Every limit has a `committed` counter = settled + held by calls in flight. Admission is a CAS
// on it, so concurrent reservations can never take it past the hard threshold. Windows roll over
// (new billing period, session expired by inactivity) on a cold path under the user's mutex; old
// windows stay alive until the engine dies, so a Reservation can always settle into the window it
// was admitted in.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <new>
#include <type_traits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "guard/internal/arena.h"
#include "guard/internal/calls_in_flight.h"
#include "guard/internal/intern_table.h"
#include "guard/internal/lease_keeper.h"
#include "paygent/paygent.h"
#include "sync/event_queue.h"
#include "sync/local_store.h"
#include "sync/syncer.h"

namespace paygent::internal {

inline constexpr std::uint32_t kNoModel = UINT32_MAX;

// The soft thresholds one limit has fired in one window: bit i for the plan's soft[i] (a plan has
// at most 8), and kHardFired once the limit's hard gate refused a call (reported once per
// window). Each limit has its own (see LimitEntry::fired), so no two limits share a bit.
using FiredBits = std::atomic<std::uint16_t>;
inline constexpr std::uint16_t kHardFired = 1u << 15;

// A sum that many threads add to without sharing a cache line: each thread adds to its own stripe.
class StripedCounter {
 public:
  void add(std::int64_t n = 1) noexcept;
  [[nodiscard]] std::int64_t sum() const noexcept;

 private:
  static constexpr int kStripes = 16;
  struct alignas(64) Stripe {
    std::atomic<std::int64_t> v{0};
  };
  Stripe stripes_[2 * kStripes];  // [0, kStripes): one owner thread each; the rest shared
};

struct ModelInfo {
  std::string name;  // canonical
  std::uint64_t hash = 0;
  std::uint32_t id = 0;
  const ModelPrice* catalog_price = nullptr;  // nullptr: the catalog does not know the model
  mutable std::atomic<bool> unknown_reported{false};
  mutable std::atomic<bool> cache_rate_reported{false};  // a plan's guessed cache rate was used
  mutable std::atomic<bool> mismatch_reported{false};    // a response named another model
};

// Usage of one model in one billing period.
struct alignas(64) ModelCounters {
  std::atomic<std::uint32_t> model_id{kNoModel};
  FiredBits fired{0};  // the model limit's soft thresholds fired this period (in model_id's padding)
  std::atomic<std::int64_t> committed_tokens{0};  // settled + held
  std::atomic<std::int64_t> tokens{0};            // settled
  // The backend's tokens not made by this process's unacknowledged events (see PeriodWindow::external).
  std::atomic<std::int64_t> external_tokens{0};
  std::atomic<std::int64_t> input{0};
  std::atomic<std::int64_t> output{0};
  std::atomic<std::int64_t> calls{0};
  std::atomic<Nanos> cost{0};
};

// What the backend knows of a model's period usage beyond this process's acknowledged events
// (reports only: the gate reads ModelCounters::external_tokens). Written by the syncer thread.
struct ExternalModelTotals {
  std::atomic<std::int64_t> input{0};
  std::atomic<std::int64_t> output{0};
  std::atomic<std::int64_t> calls{0};
  std::atomic<Nanos> cost{0};
};

// Cache-line aligned (as are SessionWindow and UserState): two users' hot counters never share a
// line, so threads serving different users do not slow each other down.
struct alignas(64) PeriodWindow {
  // `models` points to `model_slots` counters, which make_period_window() places right behind the
  // window (at this + 1), so that a gate check can start their miss together with the window's.
  PeriodWindow(std::int64_t start, std::int64_t end, std::size_t model_slots, ModelCounters* model_storage)
      : start_ns(start), end_ns(end), models(model_storage), slots(model_slots) {}

  // The counters of `model_id`, claiming a free slot for it when it has none. nullptr when every
  // slot is taken by other models (that model is then metered in the store only).
  ModelCounters* counters(std::uint32_t model_id) noexcept;
  [[nodiscard]] const ModelCounters* find(std::uint32_t model_id) const noexcept;

  // First cache line: everything a gate check reads.
  const std::int64_t start_ns;
  const std::int64_t end_ns;
  std::atomic<const void*> tag{nullptr};             // the plan it was computed for
  std::atomic<const void*> assignment_tag{nullptr};  // and the user's assignment
  std::atomic<Nanos> committed{0};  // settled + held
  // With a backend: its total for the period minus what this store has had acknowledged, so that
  // committed + external = backend total + local events not yet acknowledged, counted once.
  std::atomic<Nanos> external{0};
  ModelCounters* models;  // set once, before the window is published
  const std::size_t slots;

  std::atomic<Nanos> spend{0};  // settled
  std::atomic<std::int64_t> external_calls{0};
  // Parallel to `models`, allocated at the backend's first answer (nullptr without a backend).
  std::atomic<ExternalModelTotals*> external_models{nullptr};
  std::atomic<std::int64_t> calls{0};
  FiredBits fired{0};  // total_spend's soft thresholds fired this period
  // Those of model limits that found no counter slot this period (shared by them: they are only
  // judged by check(), against their estimate alone; see Engine::resolve_limits).
  FiredBits fired_unslotted{0};
  // The overlapping window that replaced this one (a subscription moved): settles of calls
  // admitted here are passed on to it. nullptr for a plain roll-over to the next period.
  std::atomic<PeriodWindow*> superseded_by{nullptr};
  // With budget leases: the window's leases, made at its first gated call (nullptr until then).
  std::atomic<struct PeriodLeases*> leases{nullptr};
  PeriodRule rule = PeriodRule::kMonth;
  std::atomic<bool> slots_exhausted{false};  // said once: a limited model found no slot
};
static_assert(sizeof(PeriodWindow) == 128, "a window is two cache lines; its counters follow it");

struct alignas(64) SessionWindow {
  SessionWindow(std::string id, std::int64_t start) : session_id(std::move(id)), start_ns(start) {
    last_activity_ns.store(start, std::memory_order_relaxed);
  }
  const std::string session_id;
  const std::int64_t start_ns;
  std::atomic<std::int64_t> last_activity_ns;
  std::atomic<Nanos> committed{0};
  std::atomic<Nanos> spend{0};
  std::atomic<std::int64_t> calls{0};
  FiredBits fired{0};  // session_spend's soft thresholds fired in this session
  std::atomic<Lease*> lease{nullptr};  // session_spend's lease (a named session, with leases)
};

// The leases of one period window (budget leases, docs/leases.md): total_spend's and each
// limited model's, parallel to the window's model counters. Made once per window from the arena.
struct PeriodLeases {
  std::atomic<Lease*> total{nullptr};
  std::atomic<Lease*>* models = nullptr;  // [PeriodWindow::slots]
};

// How a user is put on a plan. Immutable; replaced as a whole.
struct Assignment {
  std::string plan;  // empty: the config's default plan
  bool subscription = false;
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
};

struct SessionEntry;

// The first cache line is what a gate check reads (the key its lookup compares, the plan, the
// current windows); the windows' own lines are prefetched from the user's slot in `users`.
struct alignas(64) UserState {
  std::string key;  // user id
  std::atomic<const struct CompiledPlan*> plan_cache{nullptr};
  std::atomic<PeriodWindow*> period{nullptr};
  std::atomic<SessionWindow*> implicit_session{nullptr};
  std::atomic<const Assignment*> assignment{nullptr};

  std::uint64_t hash = 0;
  std::atomic<SessionEntry*> last_named{nullptr};
  std::atomic<std::uint64_t> refreshed_epoch{0};  // the refresh round this user was last watched in
  // The customer's credit wallet as the backend last reported it (nano-credits charged, used plus
  // overage, against granted; granted -1: no wallet), written by the syncer's thread only; its
  // soft thresholds fired since its last top-up.
  std::atomic<std::int64_t> wallet_granted{-1};
  std::atomic<std::int64_t> wallet_used{0};
  FiredBits wallet_fired{0};

  std::mutex mu;  // cold path: window roll-overs and reports
  std::vector<ArenaPtr<PeriodWindow>> periods ABSL_GUARDED_BY(mu);
  std::vector<ArenaPtr<SessionWindow>> sessions ABSL_GUARDED_BY(mu);
  std::vector<std::unique_ptr<Assignment>> assignments ABSL_GUARDED_BY(mu);
};

struct SessionEntry {
  UserState* user = nullptr;
  std::string session_id;
  std::uint64_t hash = 0;
  std::atomic<SessionWindow*> window{nullptr};
};

struct CompiledLimit {
  const ModelInfo* model;
  std::int64_t max_tokens;
};

struct CompiledRate {
  const ModelInfo* model;
  ModelPrice price;
  // The plan leaves a cache rate unset and the catalog gives no ratio for the model: that rate is
  // the input rate, a guess said once through on_error (see CostRate).
  bool cached_input_guessed = false;
  bool cache_write_guessed = false;
};

// A Plan prepared for the hot path. `plan == nullptr` is "no plan": metered, never gated.
struct CompiledPlan {
  const struct PlanSnapshot* snapshot = nullptr;
  const Plan* plan = nullptr;
  std::optional<Nanos> max_period;
  std::optional<Nanos> max_session;
  std::vector<CompiledLimit> limits;
  std::vector<CompiledRate> rates;
  std::vector<Ppm> soft;  // ascending, at most 8
  Ppm hard = kPpmOne;
  std::int64_t session_timeout_ns = 30LL * 60 * 1'000'000'000;
  PeriodRule rule = PeriodRule::kMonth;

  [[nodiscard]] const CompiledLimit* limit_for(const ModelInfo* m) const noexcept {
    for (const auto& l : limits) if (l.model == m) return &l;
    return nullptr;
  }
  [[nodiscard]] const ModelPrice* rate_for(const ModelInfo* m) const noexcept {
    for (const auto& r : rates) if (r.model == m) return &r.price;
    return nullptr;
  }
};

struct PlanSnapshot {
  std::shared_ptr<const PlanConfig> config;
  std::vector<std::unique_ptr<CompiledPlan>> plans;
  absl::flat_hash_map<std::string, const CompiledPlan*> by_name;
  CompiledPlan unlimited;
  const CompiledPlan* default_plan = nullptr;
};

// --- Tracking (guard/tracking.cpp, include/paygent/tracking.h) ----------------------------------

// A (kind, provider, model, tier, resolution) as tracking calls name it, interned: its catalog
// price looked up once, and the texts its events carry. Immutable but for the flag.
// A called model: its counters (canonical) and the catalog's price of the name as called (a dated
// snapshot may be priced apart from its canonical model; nullptr: the catalog has none).
struct CalledModel {
  const ModelInfo* model = nullptr;
  const ModelPrice* catalog_price = nullptr;
};

struct MediaKey {
  std::uint64_t hash = 0;
  UsageKind kind = UsageKind::kLlm;
  std::string given_provider, given_model, given_tier, given_resolution;  // the look-up key
  const MediaPrice* price = nullptr;  // kStt, kTts, kSts, kVideo: nullptr when the catalog has none
  const ModelInfo* model = nullptr;   // the counters (per model) its cost is added to
  CalledModel called;                 // `model` with the catalog's price of given_model (kLlm)
  // The event's texts: the catalog's names when priced, else as given.
  std::string provider, tier, resolution;
  mutable std::atomic<bool> unknown_reported{false};
};

// The context of tracking calls that name their customer, agent and indicator: interned, so that a
// call allocates nothing once its combination has been seen.
struct TrackContext {
  std::uint64_t hash = 0;
  std::shared_ptr<const ContextData> data;
  // `data` without ownership (no control block): what this context's events carry. Copying it
  // costs no atomic increment on the caller nor decrement on the writer thread (a cache line the
  // two cores would otherwise pass back and forth per event). Safe because a TrackContext lives as
  // long as its Engine (interned, never removed) and every queued event is written, or dropped
  // without being read, before the Engine's members are destroyed (Engine::shutdown joins the
  // writer first).
  std::shared_ptr<const ContextData> unowned;
};

// A voice session (initialize_voice_session .. set_voice_indicator).
struct VoiceSession {
  std::uint64_t hash = 0;
  std::string session_id;
  std::atomic<const TrackContext*> context{nullptr};  // nullptr until initialised
  std::atomic<int> state{0};                           // kVoiceNew, kVoiceOpen, kVoiceClosed
  std::mutex mu;                                       // initialise and close (cold)
};
inline constexpr int kVoiceNew = 0, kVoiceOpen = 1, kVoiceClosed = 2;

// One metered call on its way from the calling thread to the store: the event's fixed-size part
// (sync/event_record.h) by value, its text by reference to interned, immutable owners.
struct QueuedEvent {
  EventId id;
  std::shared_ptr<const ContextData> context;
  const ModelInfo* model = nullptr;
  const SessionWindow* session = nullptr;
  Provider provider = Provider::kUnknown;
  EventQuantities quantities;
  const MediaKey* media = nullptr;  // tracking calls: kind's texts (provider, tier, resolution)
  std::shared_ptr<const std::string> description;  // send_external_cost only
};

// --- The limits of one call: a table --------------------------------------------------------------
//
// Every counter a call holds its estimate on, and every limit judged on one, is a LimitEntry of
// the call's LimitTable. Engine::resolve_limits() is the one place that knows which entries a call
// has (today: period spend, session spend, the called model's tokens); the gate only walks the
// table: Engine::evaluate (check), Engine::admit (reserve: hold each in order, undo the earlier
// holds on a hard verdict), Paygent::max_output_tokens_that_fit, Engine::fire_gate_callbacks and
// Engine::note_fired (soft thresholds: the entry's fired bits and limit key).
//
// A new kind of limit is a new entry pushed by resolve_limits() (plus its GateReason). For
// example a lease on a limit (a ceiling on this process's own committed amount): counter = the
// leased entry's counter, external = &kNoExternal, ceiling = the lease's atomic ceiling,
// fired = nullptr (no soft thresholds), shares_hold = true (judged inside the leased entry's hold,
// in one CAS: the two never disagree), retry_once = true, reason = kLeaseExhausted. reserve()
// then sees which entry refused in Verdicts::hard_entry and, when it is retry_once, may wait and
// admit once more. Settling (Engine::apply) moves counters, not limits: an entry on an existing
// counter needs nothing there; one on a new counter (speech, wallet) adds that counter to apply().

// What a limit counts, and so which of the call's estimates it is judged with.
// kCredits: a credit wallet's nano-credits; a call has no estimate in them (the backend prices credits).
enum class LimitUnit : std::uint8_t { kNanos, kTokens, kCredits };

// Where a limit's window lives: its reset, and the window its soft thresholds are keyed by.
// kWallet: a credit wallet, whose soft thresholds fire once per process and top-up (not saved).
enum class LimitWindow : std::uint8_t { kPeriod, kSession, kWallet };

// An `external` for a limit the backend adds nothing to, and a `counter` for a limit with no
// counter (judged by check() against the estimate alone): both stay 0.
inline constinit std::atomic<std::int64_t> kNoExternal{0};
inline constinit std::atomic<std::int64_t> kNoCounter{0};

struct LimitEntry {
  // Usage of the limit: counter (settled + held by this process's calls in flight) + external (the
  // backend's usage beyond this process's acknowledged events).
  std::atomic<std::int64_t>* counter;
  const std::atomic<std::int64_t>* external;
  // The limit: `max`, or when `ceiling` is set, its value at each judgement (raised by another thread).
  const std::atomic<std::int64_t>* ceiling;
  std::int64_t max;
  std::int64_t resets_ns;  // GuardResult::resets_at (INT64_MAX: never)
  // The soft thresholds fired for this limit in its window; nullptr: the entry has no soft gates
  // (only its hard verdict counts).
  FiredBits* fired;
  const ModelInfo* model;  // GuardResult::model and the limit key's suffix (model_limit:<model>)
  // kNone: the estimate is held on `counter` but nothing is judged (a counter with no limit).
  GateReason reason;
  LimitUnit unit;
  LimitWindow window;  // kSession: keyed "<reason>:<session id>" from the session's start
  // Judged inside the hold of the entry before it, which holds on the same counter; holds nothing
  // itself (two ceilings on one counter are checked in one CAS).
  bool shares_hold;
  // A hard verdict of this entry may clear soon (more budget is being asked for): the caller may
  // wait briefly and try once more.
  bool retry_once;

  [[nodiscard]] std::int64_t limit() const noexcept {
    return ceiling != nullptr ? ceiling->load(std::memory_order_acquire) : max;
  }
  [[nodiscard]] std::int64_t estimate(std::int64_t cost, std::int64_t tokens) const noexcept {
    return unit == LimitUnit::kTokens ? tokens : unit == LimitUnit::kNanos ? cost : 0;
  }
};
static_assert(std::is_trivially_copyable_v<LimitEntry> && sizeof(LimitEntry) <= 64);

// The entries of one call, in judging order (which breaks ties between verdicts: see GuardResult).
// Storage is left uninitialised: a call writes only the entries it has.
struct LimitTable {
  // Period spend, session spend, model tokens, and room for one more entry on each (a lease);
  // the credit wallet.
  static constexpr int kMax = 7;
  int count = 0;
  LimitEntry& push() noexcept { return *std::launder(reinterpret_cast<LimitEntry*>(slots[count++])); }
  [[nodiscard]] const LimitEntry& operator[](int i) const noexcept {
    return *std::launder(reinterpret_cast<const LimitEntry*>(slots[i]));
  }
  [[nodiscard]] LimitEntry& operator[](int i) noexcept { return *std::launder(reinterpret_cast<LimitEntry*>(slots[i])); }

 private:
  alignas(LimitEntry) unsigned char slots[kMax][sizeof(LimitEntry)];
};

// What resolve() prepares of a call's LimitTable.
enum class LimitUse : std::uint8_t {
  kNone,   // no table (record(): settles without a gate)
  kJudge,  // the limits, read only (check(), max_output_tokens_that_fit)
  kHold,   // every counter the call holds on, limited or not, claiming the model's slot (reserve())
};

// The verdicts of the limits that apply to one call (one per limited LimitEntry), and the most
// restrictive of them. Only soft verdicts are kept one by one (for their alerts), with the entry
// each came from; storage is left uninitialised so that a call with no alert pays nothing for it.
struct Verdicts {
  static constexpr int kMax = LimitTable::kMax;
  GuardResult best;
  int count = 0;  // soft verdicts in `each`
  // The LimitTable entry whose hard verdict refused the call; set by admit() when it returns a
  // hard gate, and only then (left uninitialised: a call that is admitted pays nothing for it).
  int hard_entry;
  void add(const GuardResult& r, int entry) noexcept;
  [[nodiscard]] const GuardResult& soft(int i) const noexcept {
    return *std::launder(reinterpret_cast<const GuardResult*>(each[i]));
  }
  [[nodiscard]] int entry(int i) const noexcept { return entries[i]; }  // of soft(i), in the LimitTable

 private:
  static_assert(std::is_trivially_copyable_v<GuardResult> && std::is_trivially_destructible_v<GuardResult>);
  alignas(GuardResult) unsigned char each[kMax][sizeof(GuardResult)];
  std::uint8_t entries[kMax];
};

// Where a call stands: everything the gate needs, resolved once.
struct CallSite {
  const ContextData* context = nullptr;
  UserState* user = nullptr;
  const CompiledPlan* plan = nullptr;
  PeriodWindow* period = nullptr;
  SessionWindow* session = nullptr;
  const ModelInfo* model = nullptr;
  const ModelPrice* price = nullptr;
  UsageEvent::PriceSource price_source = UsageEvent::PriceSource::kUnknown;
  std::int64_t now_ns = 0;
  LimitTable limits;  // as resolve() was asked (LimitUse)
};

struct Engine final : SyncTarget {
  explicit Engine(Options o);
  ~Engine();  // shutdown(), then frees the state
  // Commits what is queued to the store, delivers it (syncer, up to shutdown_deadline) and stops
  // both threads. Idempotent. Called once no call is inside (Paygent::shutdown).
  void shutdown();
  // Opens the local store and starts its writer, and the syncer when an API key is set (after the
  // plans are known to be valid).
  void open_store();

  // --- SyncTarget: what the syncer brings back (syncer thread) ---
  void apply_backend_usage(const BackendUsage& usage) override;
  void apply_backend_plans(std::string_view plan_config_json) override;
  void sync_error(absl::Status status) override { report_error(std::move(status)); }
  // An outage begins: its first drop of events is reported again.
  void backend_down(absl::Status status) override {
    dropped_reported.store(false, std::memory_order_relaxed);
    report_error(std::move(status));
  }
  void events_dropped(std::int64_t count) override;
  void events_rejected(std::int64_t count, std::string reason) override;
  void refresh_round() override { refresh_epoch.fetch_add(1, std::memory_order_relaxed); }
  // True when strict_backend is on and the backend cannot be reached: every call is gated hard.
  [[nodiscard]] bool backend_closed() const noexcept {
    return options.strict_backend && ((syncer != nullptr && !syncer->backend_healthy()) ||
                                      (leases != nullptr && !leases->reachable()));
  }

  // --- hot path ---
  std::int64_t now_ns() const noexcept;
  std::int64_t coarse_now_ns() const noexcept;
  // Resolves the call site for the current Context at time `now`; false outside any Context.
  // `use` says which LimitTable to prepare (resolve_limits).
  // `ctx`: the call's context (nullptr: Context::current()).
  bool resolve(std::string_view model, std::int64_t now, CallSite& site, LimitUse use = LimitUse::kJudge,
               const ContextData* ctx = nullptr) {
    return resolve(called_model(model), now, site, use, ctx);
  }
  bool resolve(const CalledModel& model, std::int64_t now, CallSite& site, LimitUse use = LimitUse::kJudge,
               const ContextData* ctx = nullptr);
  // As resolve(), at the current time: read from the coarse clock (3 ns instead of 21), and again
  // from the precise one when a period end or a session expiry is within 50 ms, so that no
  // boundary is judged late and every event near one is stamped exactly.
  bool resolve_now(std::string_view model, CallSite& site, LimitUse use = LimitUse::kJudge,
                   const ContextData* ctx = nullptr) {
    return resolve_now(called_model(model), site, use, ctx);
  }
  bool resolve_now(const CalledModel& model, CallSite& site, LimitUse use = LimitUse::kJudge,
                   const ContextData* ctx = nullptr);
  // The model a call names, as resolve() needs it.
  CalledModel called_model(std::string_view raw_model) {
    CalledModel m;
    m.model = model_for(raw_model, &m.catalog_price);
    return m;
  }
  // Fills site.limits: the one place that knows which limits a call has (see LimitEntry).
  void resolve_limits(CallSite& site, LimitUse use) noexcept;
  // With budget leases: pushes the lease entry of the limit entry just pushed (its lease from
  // `made`, the window's, at `model_slot`, -1 for total_spend; or made now).
  void push_lease(CallSite& site, PeriodLeases* made, int model_slot) noexcept;
  void push_lease_entry(CallSite& site, Lease* lease) noexcept;
  GuardResult evaluate(const CallSite& site, std::int64_t est_cost, std::int64_t est_tokens,
                       Verdicts& verdicts) const noexcept;
  // Holds the estimate on every entry of site.limits (resolved with LimitUse::kHold), in order; on a
  // hard verdict releases what it held and returns the result.
  GuardResult admit(const CallSite& site, std::int64_t est_cost, std::int64_t est_tokens, Verdicts& verdicts) noexcept;
  // A call gated by a lease with no room (a hard kLeaseExhausted from admit, or evaluate when not
  // `hold`): asks the keeper for a slice (waiting at most lease_wait) and judges the call again.
  // Returns the new verdict: admitted (held, with `hold`), the leased limit's own hard gate (the
  // backend says its cap is reached), kLeaseExhausted (budget held by other processes, or the
  // outage share used up), or kBackendUnavailable (strict_backend with no answer). Cold.
  GuardResult retry_lease(CallSite& site, std::int64_t est_cost, std::int64_t est_tokens, Verdicts& verdicts,
                          bool hold) noexcept;
  // retry_lease's loop; `decided[i]`: entry i's bound for this call once the keeper decided it.
  GuardResult retry_lease_with(CallSite& site, std::int64_t est_cost, std::int64_t est_tokens, Verdicts& verdicts,
                               bool hold, std::atomic<std::int64_t>* decided) noexcept;
  // Gives back what admit() held for a call of `site` (its entries' own counters).
  void unhold(const CallSite& site, std::int64_t est_cost, std::int64_t est_tokens) noexcept;
  // The lease of `leased` (the entry a lease entry follows) for this call, made on first use;
  // nullptr when it cannot be made (fail-open: the limit is gated as without leases). Cold.
  Lease* lease_of(const CallSite& site, const LimitEntry& leased) noexcept;
  void fire_gate_callbacks(const CallSite& site, const Verdicts& verdicts) noexcept;
  // Queues a threshold that just fired for the local store (saved by the writer with the next
  // commit, so a restart does not fire it again). Rare: once per threshold, limit and period.
  // `limit` is the entry `r` came from: its window and key name the threshold.
  // `hard`: the limit's hard gate (FiredThreshold::hard), `threshold` then the plan's hard_gate_at.
  void note_fired(const CallSite& site, const LimitEntry& limit, const GuardResult& r, Ppm threshold,
                  bool hard = false) noexcept;
  void apply(PeriodWindow* period, SessionWindow* session, const ModelInfo* model, Nanos cost_delta,
             Nanos cost_settled, std::int64_t tokens_delta, const Usage* settled) noexcept;
  void meter(const std::shared_ptr<const ContextData>& context, UserState* user, const ModelInfo* model,
             const SessionWindow* session, Provider provider, const Usage& usage, Nanos cost,
             UsageEvent::PriceSource source, std::int64_t ts_ns, bool estimated) noexcept;
  // Hands event `q` to on_usage and the writer's queue: meter()'s and the tracking calls' last step
  // (q.media: a tracking call's key, whose texts on_usage shows).
  void publish(QueuedEvent& q, const UserState* user, UsageEvent::PriceSource source) noexcept;
  // Queues `q` for the writer (the overflow list when the queue is full).
  void enqueue(QueuedEvent& q) noexcept;
  // --- tracking (guard/tracking.cpp) ---
  const MediaKey* media_key(UsageKind kind, std::string_view provider, std::string_view model, std::string_view tier,
                            std::string_view resolution);
  // The interned context of (user, session, agent, indicator, tags). One per combination, kept for
  // the engine's life (as named sessions are): a few hundred bytes per voice session.
  const TrackContext* track_context(std::string_view user_id, std::string_view session_id, std::string_view agent_id,
                                    std::string_view indicator, const MetaTags& tags);
  // Their look-ups past the thread's last one (cold: hash, find, insert when new).
  const MediaKey* find_media_key(UsageKind kind, std::string_view provider, std::string_view model,
                                 std::string_view tier, std::string_view resolution);
  const TrackContext* make_track_context(std::uint64_t hash, std::string_view user_id, std::string_view session_id,
                                         std::string_view agent_id, std::string_view indicator, const MetaTags& tags);
  VoiceSession* voice_session(std::string_view session_id, bool create);
  // Meters one tracked event for `context`: counts `cost` in the user's period and session (not
  // for kBilling), says an unknown price once per model, hands it to on_usage and the queue.
  // `q` is filled in (time, kind, cost) and queued as it is: taken by reference, not copied.
  // `out`: the event, its quantities (and description) filled by the caller; the rest is set here.
  // Built in place by the caller, so that its 200 bytes are written once before the queue's slot.
  void track(const TrackContext& context, const MediaKey& key, QueuedEvent& out, bool priced) noexcept;
  // The metering half of track() (and of settle_media): counts, says, hands on and queues `out`.
  void emit(const std::shared_ptr<const ContextData>& context, const UserState* user, const ModelInfo* model,
            const SessionWindow* session, const MediaKey& key, QueuedEvent& out, bool priced) noexcept;
  // The cost of a media quantity at `key`'s price (0 when unpriced).
  static Nanos media_cost(const MediaKey& key, std::chrono::microseconds duration, std::int64_t characters,
                          const ModalityTokens* tokens) noexcept;
  // Customers (create_or_get_customer): loaded from the store at open, saved by the writer.
  absl::StatusOr<Customer> customer(const CustomerRequest& request);
  void save_customers();  // writer thread
  Nanos estimate_cost(const ModelPrice* price, std::int64_t input, std::int64_t output) const noexcept;
  // True (and counted in refused_usages, reported through on_error naming the field, followed by
  // `then`) when `usage` cannot be real: a negative count, cache reads plus writes above
  // input_tokens, reasoning above output_tokens, or a total past int64.
  bool refuse_usage(const Usage& usage, std::string_view then) noexcept {
    const bool real = (usage.input_tokens | usage.output_tokens | usage.cached_input_tokens |
                       usage.cache_creation_input_tokens | usage.reasoning_tokens) >= 0 &&
                      usage.cached_input_tokens <= usage.input_tokens - usage.cache_creation_input_tokens &&
                      usage.reasoning_tokens <= usage.output_tokens &&
                      usage.output_tokens <= INT64_MAX - usage.input_tokens;
    if (real) [[likely]] return false;
    report_refused_usage(usage, then);
    return true;
  }
  void report_refused_usage(const Usage& usage, std::string_view then) noexcept;
  // Before settling `r` with a response that says it ran `ran_model`: a dated snapshot of the
  // called model the catalog prices apart is priced as such; another model takes over the call
  // (its price, its token quota; the called model's token hold is released) and the difference is
  // counted (model_mismatches) and reported once per called model. Cold but for one comparison.
  void adopt_response_model(Reservation& r, std::string_view ran_model) noexcept;
  EventId next_event_id() noexcept;

  // --- cold paths ---
  // Marks a soft-gate threshold as fired for `user_id`'s limit `limit_key` ("total_spend",
  // "session_spend:<session id>", "model_limit:<model>") in the period (or session) starting at
  // `period_start_ns`, as if this process had fired it: on_soft_gate will not fire for it. Saved
  // in the local store, so that a restart keeps it too. For a fire seen elsewhere, e.g. reported
  // by the backend for another process. Thresholds not in the user's plan are ignored in memory.
  void mark_soft_gate_fired(std::string_view user_id, std::string_view limit_key, std::int64_t period_start_ns,
                            Ppm threshold);
  // As mark_soft_gate_fired() for each of `rows` (all of `user_id`), saved in one transaction and
  // recorded as sent (the backend has them: the syncer does not send them). The syncer calls it
  // with the thresholds a backend usage object reports. A session row applies to a live session
  // window of the same id when the row's session started no earlier than one session timeout
  // before the window did (a named session's id is the same in every process; an implicit one's,
  // "auto-<start ms>", is its own process's, so implicit sessions' thresholds stay per process).
  void mark_soft_gates_fired(std::string_view user_id, const std::vector<FiredThreshold>& rows);
  // Sets fired bits from `rows`: with `session`, its session limit's; else the period limits' of
  // `period` (total_spend, and each limited model's in its counters) from rows of its period.
  void apply_fired(const CompiledPlan& plan, const std::vector<FiredThreshold>& rows, SessionWindow* session,
                   PeriodWindow* period) const noexcept;
  // Puts `user` on `a` (calls in flight keep reading the old assignment, which stays alive).
  void assign(UserState* user, std::unique_ptr<Assignment> a);
  // Puts `user` on the backend's subscription when it differs from theirs (syncer thread).
  void adopt_subscription(UserState* user, const BackendUsage::Subscription& s);
  UserState* user_for(std::string_view user_id, bool create);
  // The canonical model of `raw_model` (its limits and counters); with `catalog_price`, also the
  // catalog's price of the name as called (a dated snapshot may be priced apart), else nullptr.
  const ModelInfo* model_for(std::string_view raw_model, const ModelPrice** catalog_price = nullptr);
  const CompiledPlan* resolve_plan(UserState* user, const PlanSnapshot* snap);
  PeriodWindow* roll_period(UserState* user, const CompiledPlan* plan, std::int64_t now);
  SessionWindow* roll_implicit_session(UserState* user, const CompiledPlan* plan, std::int64_t now);
  SessionWindow* roll_named_session(SessionEntry* entry, const CompiledPlan* plan, std::int64_t now);
  SessionEntry* session_entry(UserState* user, std::string_view session_id);
  absl::Status install_plans(PlanConfig config);
  // A plan's rate for `model`, its unset cache rates filled in (see CostRate).
  CompiledRate compile_rate(const ModelInfo* model, const CostRate& rate) const noexcept;
  // Says once per model that its plan rate priced cache tokens at a guessed (input) rate.
  void report_guessed_cache_rate(const UserState* user, const ModelInfo* model, const Usage& usage) noexcept;
  void report_error(absl::Status status) noexcept;
  template <class F, class... A>
  void invoke_callback(const F& f, const A&... args) noexcept;
  void writer_loop();
  void drain_to_store();
  void save_fired_thresholds();  // writer thread: fired_unsaved to the store

  Options options;
  const PriceCatalog* catalog;
  const std::uint64_t generation;  // distinguishes engines in thread-local caches

  Arena arena;  // users, windows and counters (declared first: it outlives them)
  // Each user's slot hints at its current period window (kUserHintPeriod) and implicit session.
  static constexpr int kUserHintPeriod = 0, kUserHintSession = 1;
  InternTable<UserState, ArenaPtr<UserState>, 2> users{1024};
  InternTable<ModelInfo> models{64};
  InternTable<SessionEntry> sessions{1024};
  std::atomic<std::uint32_t> next_model_id{0};

  std::atomic<const PlanSnapshot*> plans{nullptr};
  mutable std::mutex plans_mu;
  std::vector<std::unique_ptr<PlanSnapshot>> snapshots ABSL_GUARDED_BY(plans_mu);

  struct Counters {
    StripedCounter checks, events, soft_gates, hard_gates, unmetered, errors, callback_failures,
        unknown_models, unreadable_responses, queue_overflows, stored_events, dropped_events, rejected_events;
    // Rare faults: plain atomics (a StripedCounter is 2 KiB).
    std::atomic<std::int64_t> refused_usages{0}, model_mismatches{0};
  } counters;

  // Event pipeline to the local store (only when a store is open).
  std::unique_ptr<LocalStore> store;
  std::unique_ptr<EventQueue<QueuedEvent>> queue;
  std::mutex overflow_mu;
  std::deque<QueuedEvent> overflow ABSL_GUARDED_BY(overflow_mu);  // deque: no stall to grow
  std::mutex writer_mu;
  std::condition_variable writer_cv;
  std::condition_variable flushed_cv;
  bool stopping ABSL_GUARDED_BY(writer_mu) = false;
  std::uint64_t flush_requested ABSL_GUARDED_BY(writer_mu) = 0;
  std::uint64_t flush_done ABSL_GUARDED_BY(writer_mu) = 0;
  std::unique_ptr<Syncer> syncer;  // only with an API key
  std::unique_ptr<LeaseKeeper> leases;  // only with an API key and Options::leases
  // Users active in a refresh round are refreshed from the backend once per round.
  std::atomic<std::uint64_t> refresh_epoch{1};
  std::atomic<bool> dropped_reported{false};
  std::atomic<bool> unknown_backend_plan_reported{false};
  std::vector<EventRecord> unstored;  // writer thread only
  // Soft-gate thresholds fired since the writer's last commit (see note_fired).
  std::mutex fired_mu;
  std::vector<FiredThreshold> fired_unsaved ABSL_GUARDED_BY(fired_mu);
  std::atomic<bool> store_failing{false};
  // Tracking: interned keys, contexts and voice sessions (never removed; see track_context).
  InternTable<MediaKey> media_keys{64};
  InternTable<TrackContext> track_contexts{1024};
  InternTable<VoiceSession> voice_sessions{1024};
  std::mutex customers_mu;
  absl::flat_hash_map<std::string, Customer> customers ABSL_GUARDED_BY(customers_mu);
  std::vector<Customer> customers_unsaved ABSL_GUARDED_BY(customers_mu);
  std::thread writer;

  const std::uint64_t id_seed;
  std::atomic<std::uint64_t> id_blocks{0};

  // --- lifetime (see Paygent::shutdown and Paygent's destroying delete) ---
  CallsInFlight calls;  // every call of the Paygent enters and leaves it
  // References to the Paygent's storage: its owner plus, once it is shut down, each Reservation
  // still open. Until shutdown counts those, a bias stands for them (they are on calls' stripes).
  static constexpr std::int64_t kUncountedRefs = std::int64_t{1} << 48;
  std::atomic<std::int64_t> refs{kUncountedRefs + 1};
  std::atomic<std::int64_t> delivered_at_shutdown{0};
  std::once_flag shutdown_once;
};

}  // namespace paygent::internal
