// paygent::Paygent: meters and gates every LLM call made inside a paygent::Context.
//
//   auto pg = paygent::Paygent::create({.plans = config, .on_soft_gate = warn});
//   paygent::Context ctx("user_123");
//   std::string body = pg.value()->metered_call("gpt-4o", {.prompt_tokens = 900,
//       .max_output_tokens = 512}, [&] { return call_openai(...); });   // reserve, call, settle
//
// Fail-open: nothing Paygent does can fail the application's call except the intentional hard
// gate (LimitExceeded). A throwing callback, an unreadable response, an unknown model, a broken
// local store: the call proceeds, and the fault is counted in stats() and reported to on_error.
//
// Thread safety: a Paygent is safe for concurrent use from any number of threads without external
// synchronization. check/reserve/settle/record take no lock, make no system call and do no I/O;
// after a user's first call (and first call of a period or session) they do not allocate. With
// budget leases (Options::leases), a call whose estimate does not fit its process's lease waits
// for the background thread's answer, at most Options::lease_wait (a mutex and a condition
// variable; still no I/O on the calling thread).
// Callbacks run on the calling thread, synchronously.
//
// Lifetime (a server's shutdown path):
//   - Destroying a Paygent (or shutdown()) waits for the calls already inside it, then flushes and
//     stops its threads. Calls that arrive on other threads while it does pass through unmetered
//     (kUnmetered; report() and the other cold calls answer Unavailable): fail-open.
//   - Its storage is freed when the destructor returns, unless a Reservation (or MeteredStream) of
//     it is still open: then it is freed when the last of those ends. A call made through a
//     pointer to a Paygent after its storage is freed is the caller's bug (as for any object);
//     stop the threads that call it first, or keep one Reservation open across the shutdown, or
//     use the process-wide instance, which is never freed.
//   - A Reservation or MeteredStream that outlives its Paygent is safe to read, move and destroy
//     (a stream also to feed and finish); ending it, or settling or releasing it after shutdown(),
//     is a no-op (nothing is left to meter into), and shutting down reported how many were still
//     open through on_error, while the callbacks were still valid.
//   - LimitExceeded owns copies of its texts and outlives the Paygent freely; other GuardResults
//     point into the Paygent (see guard_result.h).
//   - The process-wide instance (init/instance) is never freed: it is shut down at exit (flushed,
//     threads stopped), and calls made during static destruction pass through unmetered.
//   - A Paygent must not be destroyed from inside one of its own callbacks (it would wait for
//     itself).
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "paygent/context.h"
#include "paygent/guard_result.h"
#include "paygent/limit_exceeded.h"
#include "paygent/money.h"
#include "paygent/plan.h"
#include "paygent/price_catalog.h"
#include "paygent/tracking.h"
#include "paygent/usage.h"
#include "paygent/usage_event.h"

namespace paygent {

namespace internal {
struct Engine;
struct UserState;
struct PeriodWindow;
struct SessionWindow;
struct ModelInfo;
struct MediaKey;
}  // namespace internal

class Paygent;

// How a Paygent is made. A value: create() takes its own copy, so nothing here must outlive the
// call except what the fields say (price_catalog; the callbacks' captures, which Paygent keeps and
// calls until it is shut down, never after).
struct Options {
  // Backend API key. Empty = local-only mode: state lives in `local_store_path` only.
  std::string api_key;

  // The plans. Replace them later with set_plans() without stopping traffic.
  PlanConfig plans;

  // SQLite file that keeps every metered event, so spend survives a restart. Empty = memory only
  // (nothing survives a restart). Opened in WAL mode; created when missing.
  std::string local_store_path = "paygent.db";

  // How often the background writer commits queued events to the local store (one transaction
  // per interval: group commit). Longer intervals write more efficiently; a crash of the process
  // loses at most the events of the last window: this interval plus the commit in progress (20 ms
  // + a few ms here; tests/integration/backend_sync_test.cpp kills a recording process to check).
  absl::Duration local_commit_interval = absl::Milliseconds(20);

  // Events kept in memory while the local store keeps failing (a full disk, an I/O error, a lock
  // held elsewhere), retried at every commit. Past it the oldest are dropped: counted in
  // Stats::dropped_events, reported through on_error and on_events_dropped. At least 1.
  std::int64_t max_unstored_events = 1 << 20;

  // Capacity of the lock-free queue between the calling threads and the writer. When it is full
  // events go to an unbounded overflow list under a mutex (slower, never dropped) and
  // Stats::queue_overflows counts them. Rounded up to a power of two.
  std::size_t event_queue_capacity = 1 << 16;

  // When false, a hard-gated call is not stopped: on_hard_gate still fires and the GuardResult
  // still says kHardGate, but no LimitExceeded is thrown.
  bool raise_on_hard_gate = true;

  // Called on the calling thread. A callback that throws is contained, counted
  // (Stats::callback_failures) and the call proceeds.
  // on_soft_gate: once per threshold, limit and period (session, for the session limit), across
  // restarts (kept in the local store) and, with a backend, across processes once this one heard
  // from paygentd after another's fire arrived (its next batch reply for the user, or refresh).
  // Processes crossing a threshold within about one flush_interval (refresh_interval for one that
  // sends nothing for the user) may each fire it once: the call path never waits for the network.
  // Implicit sessions' thresholds are per process; named sessions' shared (docs/wire.md).
  std::function<void(const GuardResult&)> on_soft_gate;
  std::function<void(const GuardResult&)> on_hard_gate;  // every blocked call
  std::function<void(const UsageEvent&)> on_usage;       // every metered call
  std::function<void(const absl::Status&)> on_error;     // every contained fault

  // Prices for models a plan has no cost_rates for. nullptr = PriceCatalog::builtin(). Must
  // outlive the Paygent's shutdown (its destructor, or shutdown()).
  const PriceCatalog* price_catalog = nullptr;

  // The time source (UTC). Empty = the system clock. Tests set a fake clock here. Called from the
  // application's threads and Paygent's own (writer, syncer): it must be thread-safe.
  std::function<absl::Time()> clock;

  // --- The backend (paygentd), used when api_key is set -----------------------------------------
  // Events are committed to the local store first (the spool), then delivered in batches by a
  // background thread; record() never waits for the network.

  // Base URL of paygentd: "http://host:port".
  std::string backend_url = "http://127.0.0.1:8080";
  // How often queued events are sent. Shorter intervals make the backend's view fresher at the
  // cost of more, smaller requests. A full batch is sent at once, whatever the interval.
  absl::Duration flush_interval = absl::Seconds(5);
  // Events per request (at most 1,000, the backend's limit).
  std::size_t batch_size = 100;
  // Undelivered events kept while the backend is unreachable. Past it the oldest are dropped:
  // counted in Stats::dropped_events, reported once per outage through on_error and every time
  // through on_events_dropped. Never silent.
  std::int64_t max_spool_events = 1'000'000;
  // How often plans are re-read from the backend. Users' authoritative usage also comes back with
  // every delivered batch.
  absl::Duration refresh_interval = absl::Seconds(60);
  // How long destruction may spend delivering what is still queued.
  absl::Duration shutdown_deadline = absl::Seconds(5);
  // Fail-closed: while the backend cannot be reached, gate every call hard (GateReason
  // kBackendUnavailable). Off by default: Paygent is fail-open.
  bool strict_backend = false;
  // Called on the background thread with the number of events each time some are dropped: the
  // oldest past max_spool_events, or those past max_unstored_events waiting in memory while the
  // local store itself keeps failing (each such drop is also reported through on_error). Stats::dropped_events
  // counts them after it returns. Must not block; an exception it throws is reported through
  // on_error.
  std::function<void(std::int64_t dropped)> on_events_dropped;
  // Gate a customer on its prepaid credit wallet (GateReason::kCreditWallet; docs/billing.md,
  // "Credit wallets"), as the backend reports it with each user's usage: hard when it is empty (at
  // hard_gate_at of its credits), soft at the plan's soft thresholds. A customer without a wallet
  // is not gated by one. Off: the wallet only bills (usage beyond it is invoiced as overage).
  bool credit_wallet_gate = true;

  // --- Budget leases (docs/leases.md), used only with a backend (api_key) -----------------------
  // Each hard limit of a user (period spend, a named session's spend, a model's tokens) is gated
  // on a slice of what remains of it, leased from the backend and renewed in the background, so
  // that the processes serving one user never together pass a cap by more than their calls'
  // estimate error while the backend is reachable. Off: each process gates on the backend's total
  // as of its last sync plus its own events, and N processes near a cap may each spend what
  // remains of it.
  bool leases = true;
  // How long a call whose lease has no room for it waits for the backend's answer (only such a
  // call waits; the others are judged locally). Then it is admitted (granted), gated hard (the cap
  // is reached, or GateReason::kLeaseExhausted: the budget is held by other processes), or, with
  // no answer, judged by the outage rule below. Longer rides out a slower backend; shorter bounds
  // the latency such a call can add.
  absl::Duration lease_wait = absl::Milliseconds(100);
  // The outage rule (fail-open, bounded): while the backend cannot be reached, a process admits
  // beyond its last lease of a limit at most min(remaining / holders at its last grant,
  // lease_outage_share x cap); one that never got a lease for it, lease_outage_share x cap. So N
  // processes together pass a cap by at most N x lease_outage_share x cap (plus estimate error).
  // 0: nothing beyond the leases; 1: up to a whole cap each. In [0, 1] (create() refuses others).
  // strict_backend, when on, gates every call instead.
  double lease_outage_share = 0.10;
};

// What a call is expected to use, for the reservation. The estimate is held against every limit
// until the call settles, so that concurrent calls at a cap cannot overshoot it. A value type.
// Each count is taken as at least 0 and at most 2^40 (INT64_MAX for "no max_tokens" is fine).
struct CallEstimate {
  std::int64_t prompt_tokens = 0;
  std::int64_t max_output_tokens = 0;  // the request's max_tokens; 0 = reserve input only
  // reserve() only (metered_call and metered_stream hold what they are given; check() ignores
  // it): hold at most the output that fits every limit of the user's plan, as
  // max_output_tokens_that_fit says, read from the limits the reservation itself resolves: when
  // max_output_tokens is more than fits, what fits is held instead (at least 1 token, so that a
  // call nothing fits is still refused); when it is 0 (none asked), the model's own maximum
  // output (ModelPrice::max_output_tokens, what the provider may run to) or what fits, whichever
  // is less, and what fits when the catalog does not know the maximum.
  // Reservation::reserved_output_tokens() is then the max_tokens to send (needed only when it is
  // less than what was asked, or than the model's maximum), and output_that_fits() what fitted.
  // Unbounded (no limit that counts this call): max_output_tokens as given, or the model's
  // maximum when none is asked. A call made after another of the same user is held
  // gets what the other left; asking max_output_tokens_that_fit first and reserving after could
  // refuse it for asking what fitted before. The same holds when another thread's hold lands
  // between the fit and the admission: refused for it, the call is fitted again to what is left
  // (up to 64 turns), and refused only when nothing fits.
  bool fit_output = false;
};

// A call's hold on its user's budget, from reserve() until settle() or release(). Move-only;
// destroying an unsettled Reservation releases it.
//
// Thread safety: one Reservation is used by one thread at a time; it may be moved to, settled on
// and destroyed on another thread than the one that reserved it.
// Lifetime: it may outlive its Paygent. While it is active it keeps the Paygent's storage alive
// (not its threads); settling, releasing or destroying it then does nothing. result()'s numbers
// stay valid for the Reservation's life; its texts (user_id, model) point into the Paygent and
// last while the Paygent or an active Reservation of it does: an ended Reservation of a destroyed
// Paygent has them empty. Copy them into strings to keep them longer.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation();

  // The gate's verdict for this call (kUnmetered outside a Context: settle then does nothing).
  [[nodiscard]] const GuardResult& result() const noexcept { return result_; }
  [[nodiscard]] bool active() const noexcept { return owner_ != nullptr; }
  [[nodiscard]] Nanos reserved_cost() const noexcept { return cost_; }
  [[nodiscard]] std::int64_t reserved_tokens() const noexcept { return input_tokens_ + output_tokens_; }
  // The output tokens held (the estimate's max_output_tokens, or what fitted: CallEstimate::fit_output).
  [[nodiscard]] std::int64_t reserved_output_tokens() const noexcept { return output_tokens_; }
  // With CallEstimate::fit_output: the output that fitted every limit when the call was admitted
  // (0 or more); nullopt when no limit bounds it, or fit_output was not asked.
  [[nodiscard]] std::optional<std::int64_t> output_that_fits() const noexcept { return output_that_fits_; }

 private:
  friend struct internal::Engine;
  friend class Paygent;
  friend class MeteredStream;
  GuardResult result_;
  Paygent* owner_ = nullptr;  // the Paygent that holds the estimate; nullptr when inactive
  internal::UserState* user_ = nullptr;
  internal::PeriodWindow* period_ = nullptr;
  internal::SessionWindow* session_ = nullptr;
  const internal::ModelInfo* model_ = nullptr;
  const ModelPrice* price_ = nullptr;  // the price in force when the call was admitted
  UsageEvent::PriceSource price_source_ = UsageEvent::PriceSource::kUnknown;
  std::shared_ptr<const ContextData> context_;
  Nanos cost_ = 0;
  std::int64_t input_tokens_ = 0;   // the estimate held: prompt tokens
  std::int64_t output_tokens_ = 0;  // and max output tokens
  std::optional<std::int64_t> output_that_fits_;  // CallEstimate::fit_output
  std::int64_t started_ns_ = 0;
  const internal::MediaKey* media_ = nullptr;  // reserve_media / reserve_voice: what settle_media meters
};

// A streamed call in flight: reserved (gated) before the request is sent, the provider's
// server-sent-event stream fed chunk by chunk as the application forwards it (usage is read on the
// way, see StreamUsageReader), settled when it ends. Made by Paygent::metered_stream().
//
//   paygent::MeteredStream stream = pg->metered_stream("gpt-4o", {.prompt_tokens = 900,
//       .max_output_tokens = 512});   // throws LimitExceeded here: nothing has been sent
//   for (std::string_view chunk : provider_stream) { stream.feed(chunk); forward(chunk); }
//   stream.finish();
//
// How it ends:
//   finish()   the usage the stream carried (OpenAI chat needs stream_options.include_usage;
//              Anthropic message_start + message_delta; Gemini; OpenAI Responses) replaces the
//              estimate. A stream that ends with a provider error and no usage is released (the
//              call cost nothing). A stream that ends with no usage otherwise, or unreadable, meters
//              the estimate, flagged `estimated`, and reports it (on_error, unreadable_responses).
//   abandon()  the call ended early (an exception, the client went away): meters the usage the
//              stream reported so far, else the estimate (never $0), flagged `estimated`, and
//              reports it through on_error. A provider error with no usage releases, as above.
//   destroyed unfinished: abandon().
// Nothing is ever metered twice: after the first of these, the others do nothing.
//
// Thread safety: one thread at a time; it may move between threads (as a Reservation).
// Lifetime: as a Reservation: it may outlive its Paygent, and then ends as a no-op.
// Cost: making one allocates the stream reader (one allocation); feed() buffers at most one event.
class MeteredStream {
 public:
  MeteredStream() = default;  // inactive: feed and finish do nothing
  MeteredStream(MeteredStream&&) noexcept = default;
  MeteredStream& operator=(MeteredStream&& other) noexcept;  // abandons what this one held first
  MeteredStream(const MeteredStream&) = delete;
  MeteredStream& operator=(const MeteredStream&) = delete;
  ~MeteredStream();

  // Reads the next bytes of the provider's stream (split anywhere). Never fails; `chunk` is not
  // kept after the call returns.
  void feed(std::string_view chunk) noexcept;
  // The stream ended (normally, or with a provider error): settles or releases, see above.
  void finish() noexcept;
  // The stream was cut short: meters what it said so far, else the estimate, and reports it.
  void abandon() noexcept;

  // The gate's verdict (kUnmetered outside a Context: the stream is then not metered).
  [[nodiscard]] const GuardResult& result() const noexcept { return reservation_.result(); }
  [[nodiscard]] const Reservation& reservation() const noexcept { return reservation_; }
  // True until finish(), abandon() or the move of this stream.
  [[nodiscard]] bool active() const noexcept { return reservation_.active(); }

 private:
  friend class Paygent;
  Reservation reservation_;
  std::optional<StreamUsageReader> reader_;  // empty if it could not be made: the estimate is metered
};

// A user's standing, for reports and dashboards. A value type that owns all its data: it outlives
// the Paygent freely.
struct UserReport {
  struct ModelUsage {
    std::string model;
    std::int64_t input_tokens = 0;
    std::int64_t output_tokens = 0;
    std::int64_t calls = 0;
    Nanos cost = 0;
    std::optional<std::int64_t> max_tokens_per_period;
  };
  struct SessionUsage {
    std::string session_id;
    Nanos cost = 0;
    std::int64_t calls = 0;
    absl::Time last_activity;
  };
  std::string user_id;
  std::string plan;      // empty when the user has no plan
  Period period;
  Nanos spend = 0;       // settled spend this period
  Nanos reserved = 0;    // held by calls in flight
  std::optional<Nanos> max_spend_per_period;
  std::optional<Nanos> remaining;  // max - spend - reserved, never below 0; nullopt = unlimited
  std::int64_t calls = 0;
  std::vector<ModelUsage> by_model;      // sorted by cost, highest first
  std::vector<SessionUsage> by_session;  // sessions active this period, most recent first
};

// Counters of what Paygent did and contained. Monotonic for the life of the instance. A value type.
struct Stats {
  std::int64_t checks = 0;
  std::int64_t events = 0;             // metered calls
  std::int64_t soft_gates = 0;         // soft-gate callbacks fired
  std::int64_t hard_gates = 0;         // calls gated hard (blocked unless raise_on_hard_gate=false)
  std::int64_t unmetered = 0;          // calls outside any Context
  std::int64_t errors = 0;             // contained internal faults (store, parse, ...)
  std::int64_t callback_failures = 0;  // callbacks that threw
  std::int64_t unknown_models = 0;     // events metered with no known price (cost 0)
  std::int64_t unreadable_responses = 0;  // responses whose usage could not be read
  std::int64_t queue_overflows = 0;    // events that took the slow overflow path
  std::int64_t stored_events = 0;      // events committed to the local store
  std::int64_t delivered_events = 0;   // events acknowledged by the backend
  std::int64_t dropped_events = 0;     // events dropped: undelivered past max_spool_events, unstored past max_unstored_events
  std::int64_t rejected_events = 0;    // events a backend at least as new refused as malformed (kept, not resent)
  // Usages that cannot be real (a negative count; cache reads plus writes above input_tokens;
  // reasoning above output_tokens), refused and reported through on_error naming the field:
  // record() meters nothing, settle() meters the reservation's estimate instead.
  std::int64_t refused_usages = 0;
  // Responses that said they ran another model than the one called (after canonical_model): each
  // is priced and counted as the model that ran; on_error says so once per called model.
  std::int64_t model_mismatches = 0;
};

class Paygent {
 public:
  // Builds a Paygent. Fails (InvalidArgument, naming the field) only for invalid options, e.g. a
  // default_plan that is not among the plans. A local store that cannot be opened does not fail
  // creation (fail-open): Paygent runs in memory and reports the fault through on_error.
  static absl::StatusOr<std::unique_ptr<Paygent>> create(Options options);

  // The process-wide instance, for applications that initialise once at start-up and reach it
  // from anywhere (as Paygent.init() in the reference SDK). A second init() replaces the first
  // only after it has flushed. Invalid options fall back to a pass-through instance (fail-open)
  // and are reported through on_error. Instances made here are never freed (a replaced one keeps
  // working for the threads that still hold it): at exit (std::atexit, registered by the first
  // init()) each is shut down, and calls made after that, e.g. from other threads or static
  // destructors, pass through unmetered. Do not call std::exit() from inside a Paygent callback.
  static Paygent& init(Options options);
  static Paygent* instance() noexcept;

  // shutdown(), then frees the Paygent once no Reservation of it is open (see "Lifetime" above).
  // `delete` (and so std::unique_ptr) goes through this destroying operator delete.
  void operator delete(Paygent* pg, std::destroying_delete_t) noexcept;
  ~Paygent();
  Paygent(const Paygent&) = delete;
  Paygent& operator=(const Paygent&) = delete;

  // Waits for the calls inside this Paygent to return, commits queued events to the local store,
  // delivers them to the backend (up to Options::shutdown_deadline) and stops Paygent's threads.
  // From then on every call passes through unmetered (check/reserve return kUnmetered; settle,
  // release and record do nothing; report, flush and set_plans answer Unavailable), and
  // Reservations still open end as no-ops; how many were open is reported through on_error.
  // Idempotent; the destructor calls it. Must not be called from inside a Paygent callback.
  void shutdown() noexcept;

  // --- Plans and users (cold path) ------------------------------------------------------------

  // Replaces every plan at once; calls in flight finish against the plans they started with.
  absl::Status set_plans(PlanConfig config);
  absl::Status set_plans_json(std::string_view json);
  [[nodiscard]] std::shared_ptr<const PlanConfig> plans() const;
  // True when a gating call (reserve, check, max_output_tokens_that_fit, ...) may wait for the
  // backend: budget leases with a backend (Options::leases and api_key), up to lease_wait. An
  // event loop runs such calls off its threads (paygent-proxy does). False: every gate is decided
  // locally, with no wait.
  [[nodiscard]] bool gate_may_wait() const noexcept;

  // Puts `user_id` on `plan` for a subscription period [period_start, period_end) that renews
  // with the same length (see subscription_period). NotFound when the plan does not exist;
  // InvalidArgument when end <= start. With a backend, a subscription set there (POST
  // /api/v1/users/{id}/subscription) is authoritative: when the backend reports one for the user,
  // every process puts the user on it, replacing what was set here.
  absl::Status subscribe(std::string_view user_id, std::string_view plan, absl::Time period_start,
                         absl::Time period_end);
  // Puts `user_id` on `plan` with the plan's calendar period rule.
  absl::Status assign_plan(std::string_view user_id, std::string_view plan);

  // --- The call path ----------------------------------------------------------------------------

  // Gates a call of `model` for the current Context's user: evaluates period spend, session spend
  // and the model's token quota (counting `estimate`, without holding it) and returns the most
  // restrictive result. Fires on_soft_gate / on_hard_gate. Throws LimitExceeded on a hard gate
  // (unless raise_on_hard_gate is false). Outside a Context returns kUnmetered.
  GuardResult check(std::string_view model, const CallEstimate& estimate = {});

  // As check(), and holds the estimated cost and tokens against every limit until the call is
  // settled: admission is decided atomically, so concurrent calls cannot overshoot a cap by more
  // than the difference between their estimates and their real usage. Throws LimitExceeded when
  // the call's estimate would take a limit past hard_gate_at; nothing is held then.
  [[nodiscard]] Reservation reserve(std::string_view model, const CallEstimate& estimate);

  // Replaces the reservation by the call's real usage and meters the event (on_usage, store).
  // Usage that cannot be real (see Stats::refused_usages) meters the estimate instead. Never throws.
  void settle(Reservation& reservation, const Usage& usage, Provider provider = Provider::kUnknown) noexcept;
  // Settles with what a provider response says: a JSON body (see extract_usage) or a whole
  // server-sent-event stream (a body starting with "data:", "event:" or ":"; see
  // StreamUsageReader). An unreadable body meters the reservation's estimate instead (flagged
  // `estimated`) and is reported through on_error; a provider error with no usage releases it.
  // A body naming another model than the one reserved is priced and counted as the model that
  // ran (see Stats::model_mismatches). `if_unreadable`, when given, is metered instead of the
  // reservation's estimate (also flagged and reported): what the caller knows was produced, e.g.
  // a response that broke off, estimated from the bytes that arrived.
  void settle_response(Reservation& reservation, std::string_view body, const Usage* if_unreadable = nullptr) noexcept;
  // Gives the reservation back without metering anything (the call failed and cost nothing).
  void release(Reservation& reservation) noexcept;

  // Meters a call that was not reserved (usage known after the fact). No gate. Never throws.
  // Usage that cannot be real is not metered (see Stats::refused_usages).
  void record(std::string_view model, const Usage& usage, Provider provider = Provider::kUnknown) noexcept;

  // The largest max_tokens a call of `model` with `prompt_tokens` of input can ask for and still
  // fit every limit of the current user's plan; nullopt when no limit bounds it (or no Context).
  [[nodiscard]] std::optional<std::int64_t> max_output_tokens_that_fit(std::string_view model,
                                                                       std::int64_t prompt_tokens);
  // The most output tokens one call of `model` can produce, as the price catalog lists it
  // (ModelPrice::max_output_tokens, a dated snapshot's own where listed): what a request without
  // max_tokens may run to. 0 when the catalog does not say.
  [[nodiscard]] std::int64_t max_output_tokens_of(std::string_view model) const noexcept;

  // reserve -> call() -> read usage -> settle, with the hard gate in front. `call` returns either
  // a provider response body (std::string or anything convertible to std::string_view: usage is
  // read from it) or a paygent::Usage. If `call` throws, the reservation is released and the
  // exception propagates unchanged. Throws LimitExceeded before calling when gated hard.
  template <class Call>
  auto metered_call(std::string_view model, const CallEstimate& estimate, Call&& call);

  // The streaming form: reserves (throws LimitExceeded before anything is sent) and returns the
  // stream to feed the provider's chunks to and finish (see MeteredStream). `format` names the
  // stream's shape when known; kAuto recognises it from the chunks.
  [[nodiscard]] MeteredStream metered_stream(std::string_view model, const CallEstimate& estimate,
                                             ApiFormat format = ApiFormat::kAuto);
  // The same around `body(MeteredStream&)`, which feeds each chunk as it forwards it. finish()
  // when body returns (body may call it earlier); if body throws, abandon() and the exception
  // propagates unchanged. Returns what body returns.
  //
  //   pg->metered_stream("gpt-4o", estimate, [&](paygent::MeteredStream& stream) {
  //     for (auto& chunk : client.stream(request)) { stream.feed(chunk); forward(chunk); }
  //   });
  template <class Body>
    requires std::invocable<Body&, MeteredStream&>
  auto metered_stream(std::string_view model, const CallEstimate& estimate, Body&& body);

  // --- Tracking: customers, agents, indicators, speech, video, external costs (tracking.h) ------
  // Fire-and-forget like record(): never throw, no I/O; misuse is reported through on_error and
  // not sent. The mapping of each call to the event's kind and quantities: docs/tracking.md.

  // The customer of `request.external_id`: made on the first call (kept in the local store and
  // delivered by the syncer to paygentd's POST /api/v1/customers/create-or-get), the same after,
  // across restarts too. A customer is a guardrail user (same id: plans, caps, reports).
  // InvalidArgument when external_id is empty. Cold: takes a mutex, allocates.
  absl::StatusOr<Customer> create_or_get_customer(const CustomerRequest& request);

  // An LLM call's tokens for `customer_id` by `agent_id`: full tracking with an indicator,
  // cost-only with an empty one.
  void send_usage(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                  const LlmUsage& usage, const MetaTags& meta_tags = {}) noexcept;
  // Revenue-only: a billing event (no cost). agent_id, customer_id and indicator are required.
  void send_indicator(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                      const MetaTags& meta_tags = {}) noexcept;

  // Voice sessions: the session groups its STT / LLM / TTS events under one agent, customer and
  // tags (the session id is the events' session); set_voice_indicator bills it (a billing event
  // with the call's duration) and closes it. Tracking into an unknown or closed session, or a
  // second initialize of an open one with another agent or customer, is refused (on_error).
  void initialize_voice_session(std::string_view session_id, std::string_view agent_id,
                                std::string_view customer_id, const MetaTags& meta_tags = {}) noexcept;
  void track_voice_stt(std::string_view session_id, const SttUsage& usage) noexcept;
  void track_voice_llm(std::string_view session_id, const LlmUsage& usage) noexcept;
  void track_voice_tts(std::string_view session_id, const TtsUsage& usage) noexcept;
  void set_voice_indicator(std::string_view session_id, std::string_view indicator, MediaDuration duration) noexcept;

  // Standalone speech, video and external costs (an empty indicator: cost-only).
  void track_stt(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                 const SttUsage& usage, const MetaTags& meta_tags = {}) noexcept;
  void track_tts(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                 const TtsUsage& usage, const MetaTags& meta_tags = {}) noexcept;
  void track_sts(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                 const StsUsage& usage, const MetaTags& meta_tags = {}) noexcept;
  void send_usage_video(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                        const VideoUsage& usage, const MetaTags& meta_tags = {}) noexcept;
  void send_external_cost(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                          const ExternalCost& cost, const MetaTags& meta_tags = {}) noexcept;

  // Gating a media call before it runs, like reserve() for tokens: the estimate is priced from the
  // catalog and held against the user's period and session spend; throws LimitExceeded when it
  // would take a cap past hard_gate_at (nothing held). reserve_media is for the current Context's
  // user; reserve_voice for a voice session's customer (an unknown or closed session: kUnmetered,
  // reported). settle_media meters the real quantity (an event of the estimate's kind) in place
  // of the estimate; release() gives it back. An unknown price holds 0 (reported once). Settle a
  // media reservation with settle_media only (settle() would meter it as a token call); a token
  // reservation given to settle_media is released and reported. Cost: as reserve().
  [[nodiscard]] Reservation reserve_media(const MediaEstimate& estimate);
  [[nodiscard]] Reservation reserve_voice(std::string_view session_id, const MediaEstimate& estimate);
  void settle_media(Reservation& reservation, const MediaActual& actual) noexcept;

  // --- Reports ----------------------------------------------------------------------------------

  // The user's current period: spend, reservations, remaining budget, by model, by session.
  // With a backend, spend, calls and by_model count every process's usage (the backend's totals
  // plus this process's events not yet acknowledged). NotFound when neither this process nor its
  // local store has seen the user.
  absl::StatusOr<UserReport> report(std::string_view user_id);
  [[nodiscard]] Stats stats() const noexcept;

  // Commits every queued event to the local store, waiting at most `deadline`.
  // DeadlineExceeded when events remain queued; Unavailable when there is no working store.
  absl::Status flush(absl::Duration deadline = absl::Seconds(5));

 private:
  explicit Paygent(std::unique_ptr<internal::Engine> engine) noexcept;
  // reserve() for `context` (nullptr: the current Context) with `media` (nullptr: an LLM call of
  // `model`, its estimate priced from tokens) holding `media_cost`.
  // `fit_output`: CallEstimate::fit_output (LLM calls only).
  Reservation reserve_for(const ContextData* context, std::string_view model, std::int64_t prompt,
                          std::int64_t output, const internal::MediaKey* media, Nanos media_cost,
                          const std::shared_ptr<const ContextData>* owner, bool fit_output = false);
  Reservation reserve_or_fail_open(std::string_view model, const CallEstimate& estimate);
  // Ends a Reservation of this Paygent that is still open after shutdown(); frees the Paygent if
  // it was the last reference to it.
  void end_after_shutdown(Reservation& reservation) noexcept;
  // The usage a reservation holds (its prompt and max output tokens), metered when the real usage
  // is unreadable, refused or cut short.
  static Usage estimate_of(const Reservation& reservation) noexcept;
  // Replaces `reservation` by `usage` and meters it (`estimated`: the usage is a stand-in, flagged
  // on the event); `fault`, when given, is reported through on_error.
  void settle_as(Reservation& reservation, const Usage& usage, Provider provider, bool estimated,
                 const absl::Status* fault) noexcept;
  friend class MeteredStream;
  // Ends a stream of this Paygent: finish() or, with `abandoned`, abandon().
  void end_stream(MeteredStream& stream, bool abandoned) noexcept;
  // Drops one reference to this Paygent's storage (its owner's or a late Reservation's).
  void unref() noexcept;
  std::unique_ptr<internal::Engine> engine_;
};

template <class Call>
auto Paygent::metered_call(std::string_view model, const CallEstimate& estimate, Call&& call) {
  Reservation reservation = reserve_or_fail_open(model, estimate);  // LimitExceeded propagates
  using Result = std::invoke_result_t<Call>;
  try {
    Result result = std::forward<Call>(call)();
    if constexpr (std::is_same_v<std::decay_t<Result>, Usage>) {
      settle(reservation, result);
    } else {
      static_assert(std::is_convertible_v<const Result&, std::string_view>,
                    "metered_call: the call must return a response body or a paygent::Usage");
      settle_response(reservation, std::string_view(result));
    }
    return result;
  } catch (...) {
    release(reservation);
    throw;
  }
}

template <class Body>
  requires std::invocable<Body&, MeteredStream&>
auto Paygent::metered_stream(std::string_view model, const CallEstimate& estimate, Body&& body) {
  MeteredStream stream = metered_stream(model, estimate);  // LimitExceeded propagates
  using Result = std::invoke_result_t<Body&, MeteredStream&>;
  try {
    if constexpr (std::is_void_v<Result>) {
      body(stream);
      stream.finish();
    } else {
      Result result = body(stream);
      stream.finish();
      return result;
    }
  } catch (...) {
    stream.abandon();
    throw;
  }
}

}  // namespace paygent
