// The tracking calls of paygent::Paygent (include/paygent/tracking.h, docs/tracking.md): customers,
// agents and indicators, voice sessions, speech, video and external costs, and media reservations.
//
// Every call resolves its customer as a guardrail user (the engine's resolve() with an explicit,
// interned context), prices the event from the catalog once per (kind, provider, model, tier,
// resolution) (an interned MediaKey), counts its cost like record() does (Engine::apply) and queues
// one event record for the writer. After a combination's first call nothing here allocates or
// locks: the interned tables are found lock-free, the event's texts are pointers to them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "guard/internal/engine.h"
#include "guard/internal/inside.h"
#include "guard/internal/same_bytes.h"
#include "meter/internal/str_cat.h"
#include "paygent/paygent.h"

namespace paygent {

using internal::Engine;
using internal::Inside;
using internal::MediaKey;
using internal::TrackContext;
using internal::UsageKind;
using internal::VoiceSession;

// --- MediaDuration --------------------------------------------------------------------------------

namespace {

constexpr double kMaxMediaMicros = 100.0 * 366 * 24 * 3600 * 1e6;  // a hundred years

MediaDuration from_double(double count, double micros_per_unit) noexcept {
  const double us = count * micros_per_unit;
  if (!std::isfinite(us) || us > kMaxMediaMicros) return MediaDuration(std::chrono::microseconds(-1));
  return MediaDuration(std::chrono::microseconds(std::llround(us)));  // negative stays negative: invalid
}

bool out_of_range(double count, double micros_per_unit) noexcept {
  const double us = count * micros_per_unit;
  return !std::isfinite(us) || us > kMaxMediaMicros;
}

}  // namespace

MediaDuration MediaDuration::minutes(double m) noexcept {
  MediaDuration d = from_double(m, 60e6);
  d.non_finite_ = out_of_range(m, 60e6);
  return d;
}

MediaDuration MediaDuration::seconds(double s) noexcept {
  MediaDuration d = from_double(s, 1e6);
  d.non_finite_ = out_of_range(s, 1e6);
  return d;
}

namespace internal {
namespace {

MediaKind media_kind(UsageKind k) noexcept {
  switch (k) {
    case UsageKind::kTts: return MediaKind::kTts;
    case UsageKind::kSts: return MediaKind::kSts;
    case UsageKind::kVideo: return MediaKind::kVideo;
    default: return MediaKind::kStt;
  }
}

bool is_media(UsageKind k) noexcept {
  return k == UsageKind::kStt || k == UsageKind::kTts || k == UsageKind::kSts || k == UsageKind::kVideo;
}

// The thread's last key and context: a call like the previous one (the common case: one agent
// tracking one kind in a loop) compares its texts instead of hashing them.
struct LastTracked {
  std::uint64_t generation = 0;
  const MediaKey* key = nullptr;
  const TrackContext* context = nullptr;
};
thread_local LastTracked t_last_tracked;

// `a` == `b`, inline for the short texts of ids and names (no memcmp call below 17 bytes).
[[gnu::always_inline]] inline bool same(const std::string& a, std::string_view b) noexcept {
  return a.size() == b.size() && same_bytes(a.data(), b.data(), b.size());
}

bool same_context(const TrackContext& c, std::string_view user_id, std::string_view session_id,
                  std::string_view agent_id, std::string_view indicator, const MetaTags& tags) noexcept {
  const ContextData& d = *c.data;
  return same(d.user_id, user_id) && same(d.session_id, session_id) && same(d.agent_id, agent_id) &&
         same(d.indicator, indicator) && d.meta_tags == tags;
}

}  // namespace

// --- Engine: interned keys, contexts, voice sessions ----------------------------------------------

const MediaKey* Engine::media_key(UsageKind kind, std::string_view provider, std::string_view model,
                                  std::string_view tier, std::string_view resolution) {
  LastTracked& last = t_last_tracked;
  if (last.generation == generation && last.key != nullptr) {
    const MediaKey& k = *last.key;
    if (k.kind == kind && same(k.given_model, model) && same(k.given_provider, provider) && same(k.given_tier, tier) &&
        same(k.given_resolution, resolution)) {
      return last.key;
    }
  }
  const MediaKey* found = find_media_key(kind, provider, model, tier, resolution);
  if (last.generation != generation) last = LastTracked{generation, nullptr, nullptr};
  last.key = found;
  return found;
}

const MediaKey* Engine::find_media_key(UsageKind kind, std::string_view provider, std::string_view model,
                                       std::string_view tier, std::string_view resolution) {
  const std::uint64_t h = absl::HashOf(static_cast<int>(kind), provider, model, tier, resolution) | 1;
  auto eq = [&](const MediaKey& k) {
    return k.kind == kind && k.given_provider == provider && k.given_model == model && k.given_tier == tier &&
           k.given_resolution == resolution;
  };
  if (const MediaKey* k = media_keys.find(h, eq)) return k;
  return media_keys
      .find_or_insert(h, eq,
                      [&] {
                        auto k = std::make_unique<MediaKey>();
                        k->hash = h;
                        k->kind = kind;
                        k->given_provider = std::string(provider);
                        k->given_model = std::string(model);
                        k->given_tier = std::string(tier);
                        k->given_resolution = std::string(resolution);
                        if (is_media(kind)) k->price = catalog->find(media_kind(kind), provider, model, tier, resolution);
                        if (k->price != nullptr) {
                          k->provider = std::string(k->price->provider);
                          k->tier = std::string(k->price->tier);
                          k->model = model_for(k->price->model);
                        } else {  // lower case, as record()'s events name providers ("OpenAI": "openai")
                          k->provider = std::string(provider);
                          absl::AsciiStrToLower(&k->provider);
                          k->tier = std::string(tier);
                          k->model = model_for(k->given_model);  // never a null view (memcpy)
                        }
                        // What record() would resolve for the model as given (priced as called).
                        k->called.model = k->model;
                        if (kind == UsageKind::kLlm) k->called = called_model(k->given_model);
                        k->resolution = std::string(resolution);
                        return k;
                      })
      .first;
}

const TrackContext* Engine::track_context(std::string_view user_id, std::string_view session_id,
                                          std::string_view agent_id, std::string_view indicator, const MetaTags& tags) {
  auto eq = [&](const TrackContext& c) { return same_context(c, user_id, session_id, agent_id, indicator, tags); };
  LastTracked& last = t_last_tracked;
  if (last.generation == generation && last.context != nullptr && eq(*last.context)) return last.context;
  const std::uint64_t h = absl::HashOf(user_id, session_id, agent_id, indicator, tags) | 1;
  const TrackContext* c = track_contexts.find(h, eq);
  if (c == nullptr) c = make_track_context(h, user_id, session_id, agent_id, indicator, tags);
  if (last.generation != generation) last = LastTracked{generation, nullptr, nullptr};
  last.context = c;
  return c;
}

const TrackContext* Engine::make_track_context(std::uint64_t h, std::string_view user_id, std::string_view session_id,
                                               std::string_view agent_id, std::string_view indicator,
                                               const MetaTags& tags) {
  auto eq = [&](const TrackContext& c) { return same_context(c, user_id, session_id, agent_id, indicator, tags); };
  return track_contexts
      .find_or_insert(h, eq,
                      [&] {
                        auto c = std::make_unique<TrackContext>();
                        c->hash = h;
                        auto d = std::make_shared<ContextData>();
                        d->user_id = std::string(user_id);
                        d->session_id = std::string(session_id);
                        d->agent_id = std::string(agent_id);
                        d->indicator = std::string(indicator);
                        d->meta_tags = tags;
                        c->data = std::move(d);
                        c->unowned = std::shared_ptr<const ContextData>(std::shared_ptr<const ContextData>(), c->data.get());
                        return c;
                      })
      .first;
}

VoiceSession* Engine::voice_session(std::string_view session_id, bool create) {
  const std::uint64_t h = absl::HashOf(session_id) | 1;
  auto eq = [&](const VoiceSession& v) { return v.session_id == session_id; };
  if (VoiceSession* v = voice_sessions.find(h, eq)) return v;
  if (!create) return nullptr;
  return voice_sessions
      .find_or_insert(h, eq,
                      [&] {
                        auto v = std::make_unique<VoiceSession>();
                        v->hash = h;
                        v->session_id = std::string(session_id);
                        return v;
                      })
      .first;
}

// --- Engine: pricing and metering -----------------------------------------------------------------

Nanos Engine::media_cost(const MediaKey& key, std::chrono::microseconds duration, std::int64_t characters,
                         const ModalityTokens* tokens) noexcept {
  if (key.price == nullptr) return 0;
  switch (key.kind) {
    case UsageKind::kStt:
    case UsageKind::kVideo: return cost_of_duration(*key.price, duration);
    case UsageKind::kTts: {
      // cost_of_characters divides 128 bits (a library call, ~30 ns); a product that fits 64 bits
      // is rounded the same way (half-up, once) with a division by a constant.
      std::uint64_t picos;
      if (characters >= 0 && key.price->picos_per_character >= 0 &&
          !__builtin_mul_overflow(static_cast<std::uint64_t>(key.price->picos_per_character),
                                  static_cast<std::uint64_t>(characters), &picos) &&
          picos <= UINT64_MAX - 500) [[likely]] {
        return static_cast<Nanos>(std::min<std::uint64_t>((picos + 500) / 1000, INT64_MAX));
      }
      return cost_of_characters(*key.price, characters);
    }
    case UsageKind::kSts: return tokens != nullptr ? cost_of_modality_tokens(*key.price, *tokens) : 0;
    default: return 0;
  }
}

void Engine::track(const TrackContext& context, const MediaKey& key, QueuedEvent& out, bool priced) noexcept {
  EventQuantities& q = out.quantities;
  try {
    CallSite site;
    if (!resolve_now(key.called, site, LimitUse::kNone, context.data.get())) {
      counters.unmetered.add();
      return;
    }
    if (key.kind == UsageKind::kLlm) {  // priced as record() prices it: the plan's rate, else the catalog
      priced = site.price != nullptr;
      q.cost_nanos = priced ? cost_of(q.usage(), *site.price) : 0;
    }
    q.ts_ns = site.now_ns;
    if (key.kind != UsageKind::kBilling) {  // a billing event has no cost: no spend, no call
      const Usage usage = q.usage();
      apply(site.period, site.session, site.model, q.cost_nanos, q.cost_nanos, usage.total_tokens(), &usage);
      const std::int64_t last = site.session->last_activity_ns.load(std::memory_order_relaxed);
      if (site.now_ns > last) site.session->last_activity_ns.store(site.now_ns, std::memory_order_relaxed);
    }
    emit(context.unowned, site.user, site.model, site.session, key, out, priced);
  } catch (...) {
    report_error(absl::InternalError("tracking failed; the event was not sent"));
  }
}

void Engine::emit(const std::shared_ptr<const ContextData>& context, const UserState* user, const ModelInfo* model,
                  const SessionWindow* session, const MediaKey& key, QueuedEvent& out, bool priced) noexcept {
  EventQuantities& q = out.quantities;
  counters.events.add();
  q.kind = key.kind;
  q.cost_unknown = !priced;
  if (!priced) {
    q.cost_nanos = 0;
    counters.unknown_models.add();
    if (!key.unknown_reported.exchange(true, std::memory_order_relaxed)) {
      report_error(absl::NotFoundError(
          str_cat("no price for ", usage_kind_name(key.kind), " model \"", key.given_model, "\" of provider \"",
                  key.given_provider, "\" (tier \"", key.given_tier,
                  "\"): its events are kept with cost unknown (cost_unknown, counted in unknown_models)")));
    }
  }
  out.id = next_event_id();
  out.context = context;
  out.model = model;
  out.session = session;
  out.media = &key;
  publish(out, user, priced ? UsageEvent::PriceSource::kCatalog : UsageEvent::PriceSource::kUnknown);
}

// --- Engine: customers ----------------------------------------------------------------------------

absl::StatusOr<Customer> Engine::customer(const CustomerRequest& request) {
  if (request.external_id.empty()) return absl::InvalidArgumentError("external_id: must not be empty");
  std::lock_guard<std::mutex> lock(customers_mu);
  auto [it, inserted] = customers.try_emplace(request.external_id);
  Customer& c = it->second;
  if (inserted) {
    c.id = request.external_id;
    c.external_id = request.external_id;
    c.name = request.name;
    c.email = request.email;
    if (store) customers_unsaved.push_back(c);
  }
  Customer out = c;
  out.created = inserted;
  return out;
}

void Engine::save_customers() {
  std::vector<StoredCustomer> rows;
  {
    std::lock_guard<std::mutex> lock(customers_mu);
    if (customers_unsaved.empty()) return;
    for (const Customer& c : customers_unsaved) rows.push_back({c.external_id, c.name, c.email});
    customers_unsaved.clear();
  }
  if (absl::Status s = store->save_customers(rows); !s.ok()) {
    report_error(s);
    std::lock_guard<std::mutex> lock(customers_mu);  // kept for the next round
    for (const StoredCustomer& r : rows) customers_unsaved.push_back({r.external_id, r.external_id, r.name, r.email});
    return;
  }
  if (syncer) syncer->wake();
}

}  // namespace internal

// --- Paygent: the tracking calls ------------------------------------------------------------------

namespace {

// Why a tracking call was refused, through on_error (never thrown): `call`: what was refused.
void refuse(Engine& e, std::string_view call, absl::StatusCode code, std::string_view reason) noexcept {
  try {
    e.report_error(absl::Status(code, internal::str_cat(call, ": ", reason, "; not sent")));
  } catch (...) {
  }
}

// A duration's fault, or empty.
std::string duration_fault(std::string_view field, const MediaDuration& d) {
  if (d.valid()) [[likely]] return {};
  if (d.non_finite()) return internal::str_cat(field, " must be a finite number (of at most 100 years)");
  if (!d.valid()) return internal::str_cat(field, " must not be negative (is ", d.value().count(), " us)");
  return {};
}

}  // namespace

absl::StatusOr<Customer> Paygent::create_or_get_customer(const CustomerRequest& request) {
  Engine& e = *engine_;
  Inside in(e);
  if (!in) return absl::UnavailableError("this Paygent is shut down");
  return e.customer(request);
}

namespace {

// Runs `body(e)` for tracking call `call` inside the Paygent (shut down: nothing, fail-open); a
// failure inside (out of memory) is reported, never thrown.
template <class Body>
[[gnu::always_inline]] inline void tracking(Engine& e, std::string_view call, Body&& body) noexcept {
  Inside in(e);
  if (!in) return;
  try {
    body();
  } catch (...) {
    refuse(e, call, absl::StatusCode::kInternal, "out of memory");
  }
}

// A standalone call (its own agent, customer, indicator and tags): `body(context)`. The customer
// (a guardrail user) is required.
template <class Body>
[[gnu::always_inline]] inline void standalone(Engine& e, std::string_view call, std::string_view agent_id,
                                              std::string_view customer_id, std::string_view indicator,
                                              const MetaTags& meta_tags, Body&& body) noexcept {
  tracking(e, call, [&] {
    if (customer_id.empty()) return refuse(e, call, absl::StatusCode::kInvalidArgument, "customer_id must not be empty");
    body(*e.track_context(customer_id, {}, agent_id, indicator, meta_tags));
  });
}

// The open voice session `session_id`'s context, or nullptr (refused, reported).
const TrackContext* open_session(Engine& e, std::string_view call, std::string_view session_id) {
  const VoiceSession* v = e.voice_session(session_id, false);
  if (v == nullptr) {
    refuse(e, call, absl::StatusCode::kNotFound,
           internal::str_cat("voice session \"", session_id, "\" is unknown (initialize_voice_session first)"));
    return nullptr;
  }
  if (v->state.load(std::memory_order_acquire) != internal::kVoiceOpen) {
    refuse(e, call, absl::StatusCode::kFailedPrecondition,
           internal::str_cat("voice session \"", session_id, "\" is closed (set_voice_indicator billed it)"));
    return nullptr;
  }
  return v->context.load(std::memory_order_acquire);
}

// A call inside voice session `session_id`: `body(its context)` when it is open.
template <class Body>
[[gnu::always_inline]] inline void in_session(Engine& e, std::string_view call, std::string_view session_id,
                                              Body&& body) noexcept {
  tracking(e, call, [&] {
    if (const TrackContext* ctx = open_session(e, call, session_id)) body(*ctx);
  });
}

// False (reported) when `d` is negative or not finite.
bool valid_duration(Engine& e, std::string_view call, std::string_view field, const MediaDuration& d) {
  if (d.valid()) [[likely]] return true;
  refuse(e, call, absl::StatusCode::kInvalidArgument, duration_fault(field, d));
  return false;
}


void track_stt_in(Engine& e, std::string_view call, const TrackContext& ctx, const SttUsage& u) {
  if (!valid_duration(e, call, "audio", u.audio)) return;
  const MediaKey& key = *e.media_key(UsageKind::kStt, u.provider, u.model, u.tier, {});
  internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
  q.audio_us = u.audio.value().count();
  q.cost_nanos = Engine::media_cost(key, u.audio.value(), 0, nullptr);
  e.track(ctx, key, ev, key.price != nullptr);
}

void track_tts_in(Engine& e, std::string_view call, const TrackContext& ctx, const TtsUsage& u) {
  if (u.characters < 0) {
    return refuse(e, call, absl::StatusCode::kInvalidArgument,
                  internal::str_cat("characters must not be negative (is ", u.characters, ")"));
  }
  const MediaKey& key = *e.media_key(UsageKind::kTts, u.provider, u.model, u.tier, {});
  internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
  q.characters = u.characters;
  q.cost_nanos = Engine::media_cost(key, {}, u.characters, nullptr);
  e.track(ctx, key, ev, key.price != nullptr);
}

// `refused`: what refuse_usage says when it refuses (a literal: read only then).
void track_llm_in(Engine& e, const char* refused, const TrackContext& ctx, const LlmUsage& u) {
  internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
  q.kind = UsageKind::kLlm;
  q.input_tokens = u.prompt_tokens;
  q.output_tokens = u.completion_tokens;
  q.cached_input_tokens = u.cached_tokens;
  if (e.refuse_usage(q.usage(), refused)) return;
  e.track(ctx, *e.media_key(UsageKind::kLlm, u.provider, u.model, u.tier, {}), ev, false);
}

// A billing event (no cost) with `audio_us` for `ctx`.
void bill(Engine& e, const TrackContext& ctx, std::int64_t audio_us) {
  internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
  q.audio_us = audio_us;
  e.track(ctx, *e.media_key(UsageKind::kBilling, {}, {}, {}, {}), ev, true);
}

}  // namespace

void Paygent::send_usage(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                         const LlmUsage& usage, const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  standalone(e, "send_usage", agent_id, customer_id, indicator, meta_tags,
             [&](const TrackContext& ctx) { track_llm_in(e, "send_usage: not sent", ctx, usage); });
}

void Paygent::send_indicator(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                             const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  if (agent_id.empty() || indicator.empty()) {
    Inside in(e);
    if (in) {
      refuse(e, "send_indicator", absl::StatusCode::kInvalidArgument,
             agent_id.empty() ? "agent_id must not be empty" : "indicator must not be empty");
    }
    return;
  }
  standalone(e, "send_indicator", agent_id, customer_id, indicator, meta_tags,
             [&](const TrackContext& ctx) { bill(e, ctx, 0); });
}

// --- voice sessions ---

void Paygent::initialize_voice_session(std::string_view session_id, std::string_view agent_id,
                                       std::string_view customer_id, const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  constexpr std::string_view kCall = "initialize_voice_session";
  if (session_id.empty()) {  // the standalone context below has no session: said here
    Inside in(e);
    if (in) refuse(e, kCall, absl::StatusCode::kInvalidArgument, "session_id must not be empty");
    return;
  }
  tracking(e, kCall, [&] {
    if (customer_id.empty()) return refuse(e, kCall, absl::StatusCode::kInvalidArgument, "customer_id must not be empty");
    VoiceSession* v = e.voice_session(session_id, true);
    const TrackContext* ctx = e.track_context(customer_id, session_id, agent_id, {}, meta_tags);
    std::lock_guard<std::mutex> lock(v->mu);
    const int state = v->state.load(std::memory_order_acquire);
    if (state == internal::kVoiceClosed) {
      return refuse(e, kCall, absl::StatusCode::kFailedPrecondition,
                    internal::str_cat("voice session \"", session_id, "\" is closed (session ids are single-use)"));
    }
    if (state == internal::kVoiceOpen && v->context.load(std::memory_order_acquire) != ctx) {
      return refuse(e, kCall, absl::StatusCode::kAlreadyExists,
                    internal::str_cat("voice session \"", session_id,
                                      "\" is already open for another agent, customer or tags"));
    }
    v->context.store(ctx, std::memory_order_release);
    v->state.store(internal::kVoiceOpen, std::memory_order_release);
  });
}

void Paygent::track_voice_stt(std::string_view session_id, const SttUsage& usage) noexcept {
  Engine& e = *engine_;
  in_session(e, "track_voice_stt", session_id,
             [&](const TrackContext& ctx) { track_stt_in(e, "track_voice_stt", ctx, usage); });
}

void Paygent::track_voice_llm(std::string_view session_id, const LlmUsage& usage) noexcept {
  Engine& e = *engine_;
  in_session(e, "track_voice_llm", session_id,
             [&](const TrackContext& ctx) { track_llm_in(e, "track_voice_llm: not sent", ctx, usage); });
}

void Paygent::track_voice_tts(std::string_view session_id, const TtsUsage& usage) noexcept {
  Engine& e = *engine_;
  in_session(e, "track_voice_tts", session_id,
             [&](const TrackContext& ctx) { track_tts_in(e, "track_voice_tts", ctx, usage); });
}

void Paygent::set_voice_indicator(std::string_view session_id, std::string_view indicator,
                                  MediaDuration duration) noexcept {
  Engine& e = *engine_;
  constexpr std::string_view kCall = "set_voice_indicator";
  tracking(e, kCall, [&] {
    if (indicator.empty()) return refuse(e, kCall, absl::StatusCode::kInvalidArgument, "indicator must not be empty");
    if (!valid_duration(e, kCall, "duration", duration)) return;
    VoiceSession* v = e.voice_session(session_id, false);
    const TrackContext* session_ctx = nullptr;
    if (v != nullptr) {
      std::lock_guard<std::mutex> lock(v->mu);
      if (v->state.load(std::memory_order_acquire) == internal::kVoiceClosed) {
        return refuse(e, kCall, absl::StatusCode::kFailedPrecondition,
                      internal::str_cat("voice session \"", session_id,
                                        "\" was already billed and closed by an earlier set_voice_indicator"));
      }
      session_ctx = v->context.load(std::memory_order_acquire);
      if (session_ctx != nullptr) v->state.store(internal::kVoiceClosed, std::memory_order_release);
    }
    if (session_ctx == nullptr) {
      return refuse(e, kCall, absl::StatusCode::kNotFound,
                    internal::str_cat("voice session \"", session_id, "\" is unknown (initialize_voice_session first)"));
    }
    const ContextData& s = *session_ctx->data;
    bill(e, *e.track_context(s.user_id, s.session_id, s.agent_id, indicator, s.meta_tags), duration.value().count());
  });
}

// --- standalone ---

void Paygent::track_stt(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                        const SttUsage& usage, const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  standalone(e, "track_stt", agent_id, customer_id, indicator, meta_tags,
             [&](const TrackContext& ctx) { track_stt_in(e, "track_stt", ctx, usage); });
}

void Paygent::track_tts(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                        const TtsUsage& usage, const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  standalone(e, "track_tts", agent_id, customer_id, indicator, meta_tags,
             [&](const TrackContext& ctx) { track_tts_in(e, "track_tts", ctx, usage); });
}

void Paygent::track_sts(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                        const StsUsage& usage, const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  constexpr std::string_view kCall = "track_sts";
  standalone(e, kCall, agent_id, customer_id, indicator, meta_tags, [&](const TrackContext& ctx) {
    const ModalityTokens& t = usage.tokens;
    if ((t.text_input | t.cached_text_input | t.audio_input | t.cached_audio_input | t.text_output | t.audio_output) <
        0) {
      return refuse(e, kCall, absl::StatusCode::kInvalidArgument, "token counts must not be negative");
    }
    if (t.cached_text_input > t.text_input || t.cached_audio_input > t.audio_input) {
      return refuse(e, kCall, absl::StatusCode::kInvalidArgument,
                    "cached input tokens must not exceed their input tokens (cached counts are part of them)");
    }
    const MediaKey& key = *e.media_key(UsageKind::kSts, usage.provider, usage.model, usage.tier, {});
    internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
    q.input_tokens = t.text_input + t.audio_input;
    q.cached_input_tokens = t.cached_text_input + t.cached_audio_input;
    q.output_tokens = t.text_output + t.audio_output;
    q.audio_input_tokens = t.audio_input;
    q.cached_audio_input_tokens = t.cached_audio_input;
    q.audio_output_tokens = t.audio_output;
    q.cost_nanos = Engine::media_cost(key, {}, 0, &t);
    e.track(ctx, key, ev, key.price != nullptr);
  });
}

void Paygent::send_usage_video(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                               const VideoUsage& usage, const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  constexpr std::string_view kCall = "send_usage_video";
  standalone(e, kCall, agent_id, customer_id, indicator, meta_tags, [&](const TrackContext& ctx) {
    if (!valid_duration(e, kCall, "video", usage.video)) return;
    const MediaKey& key = *e.media_key(UsageKind::kVideo, usage.provider, usage.model, usage.tier, usage.resolution);
    internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
    q.video_us = usage.video.value().count();
    q.cost_nanos = Engine::media_cost(key, usage.video.value(), 0, nullptr);
    e.track(ctx, key, ev, key.price != nullptr);
  });
}

void Paygent::send_external_cost(std::string_view agent_id, std::string_view customer_id, std::string_view indicator,
                                 const ExternalCost& cost, const MetaTags& meta_tags) noexcept {
  Engine& e = *engine_;
  constexpr std::string_view kCall = "send_external_cost";
  standalone(e, kCall, agent_id, customer_id, indicator, meta_tags, [&](const TrackContext& ctx) {
    Nanos amount = cost.amount_nanos;
    if (!cost.amount_usd.empty()) {
      absl::StatusOr<Nanos> parsed = parse_usd(cost.amount_usd);
      if (!parsed.ok()) {
        return refuse(e, kCall, absl::StatusCode::kInvalidArgument,
                      internal::str_cat("amount_usd: ", parsed.status().message()));
      }
      amount = *parsed;
    }
    if (amount < 0) {
      return refuse(e, kCall, absl::StatusCode::kInvalidArgument,
                    internal::str_cat("amount must not be negative (is ", amount, " nano-USD)"));
    }
    // The description is the one text that is not interned (it differs per cost): one allocation.
    std::shared_ptr<const std::string> description;
    if (!cost.description.empty()) description = std::make_shared<const std::string>(cost.description);
    internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
    q.cost_nanos = amount;
    ev.description = std::move(description);
    e.track(ctx, *e.media_key(UsageKind::kExternal, cost.provider, {}, {}, {}), ev, true);
  });
}

// --- media reservations ---

namespace {

UsageKind usage_kind(MediaKind k) noexcept {
  switch (k) {
    case MediaKind::kTts: return UsageKind::kTts;
    case MediaKind::kSts: return UsageKind::kSts;
    case MediaKind::kVideo: return UsageKind::kVideo;
    default: return UsageKind::kStt;
  }
}

// The estimate's key and its cost (an invalid quantity is reported and held as 0).
std::pair<const MediaKey*, Nanos> price_estimate(Engine& e, std::string_view call, const MediaEstimate& m) {
  const MediaKey* key = e.media_key(usage_kind(m.kind), m.provider, m.model, m.tier, m.resolution);
  std::chrono::microseconds duration = m.duration.value();
  if (!m.duration.valid()) [[unlikely]] {
    const std::string f = duration_fault("duration", m.duration);
    refuse(e, call, absl::StatusCode::kInvalidArgument, internal::str_cat(f, " (held as 0)"));
    duration = {};
  }
  const std::int64_t characters = std::max<std::int64_t>(m.characters, 0);
  if (key->price == nullptr && !key->unknown_reported.exchange(true, std::memory_order_relaxed)) {
    e.report_error(absl::NotFoundError(internal::str_cat(call, ": no price for ", media_kind_name(m.kind), " model \"",
                                                         m.model, "\" of provider \"", m.provider,
                                                         "\": the estimate holds 0 and its events have cost unknown")));
  }
  return {key, Engine::media_cost(*key, duration, characters, nullptr)};
}

}  // namespace

Reservation Paygent::reserve_media(const MediaEstimate& estimate) {
  const MediaKey* key;
  Nanos cost;
  {
    Inside in(*engine_);
    if (!in) return Reservation();
    std::tie(key, cost) = price_estimate(*engine_, "reserve_media", estimate);
  }
  return reserve_for(nullptr, key->model->name, 0, 0, key, cost, nullptr);
}

Reservation Paygent::reserve_voice(std::string_view session_id, const MediaEstimate& estimate) {
  const MediaKey* key;
  Nanos cost;
  const TrackContext* ctx;
  {
    Inside in(*engine_);
    if (!in) return Reservation();
    ctx = open_session(*engine_, "reserve_voice", session_id);
    if (ctx == nullptr) {
      Reservation unmetered;
      unmetered.result_.status = GateStatus::kUnmetered;
      return unmetered;
    }
    std::tie(key, cost) = price_estimate(*engine_, "reserve_voice", estimate);
  }
  return reserve_for(ctx->data.get(), key->model->name, 0, 0, key, cost, &ctx->data);
}

void Paygent::settle_media(Reservation& r, const MediaActual& actual) noexcept {
  Paygent* owner = r.owner_;
  if (owner == nullptr) return;
  Engine& e = *owner->engine_;
  Inside in(e);
  if (!in) return owner->end_after_shutdown(r);
  if (r.media_ == nullptr) {
    refuse(e, "settle_media", absl::StatusCode::kInvalidArgument,
           "not a media reservation (settle a token reservation with settle()); released");
    return release(r);  // enters again (nesting is allowed)
  }
  const MediaKey& key = *r.media_;
  internal::QueuedEvent ev;
  internal::EventQuantities& q = ev.quantities;
  q.ts_ns = r.started_ns_;
  const bool duration_kind = key.kind == UsageKind::kStt || key.kind == UsageKind::kVideo;
  std::string fault = duration_kind ? duration_fault("duration", actual.duration)
                      : actual.characters < 0
                          ? internal::str_cat("characters must not be negative (is ", actual.characters, ")")
                          : std::string();
  if (!fault.empty()) {  // the call ran: its estimate is metered instead, flagged
    refuse(e, "settle_media", absl::StatusCode::kInvalidArgument,
           internal::str_cat(fault, " (metering the reservation's estimate)"));
    q.cost_nanos = r.cost_;
    q.estimated = true;
  } else {
    (key.kind == UsageKind::kStt ? q.audio_us : key.kind == UsageKind::kVideo ? q.video_us : q.characters) =
        duration_kind ? actual.duration.value().count() : actual.characters;
    q.cost_nanos = Engine::media_cost(key, actual.duration.value(), actual.characters, nullptr);
  }
  r.owner_ = nullptr;
  const Usage none;
  e.apply(r.period_, r.session_, r.model_, q.cost_nanos - r.cost_, q.cost_nanos, 0, &none);
  e.emit(r.context_, r.user_, r.model_, r.session_, key, ev, key.price != nullptr);
  in.reservation_closed();
  r.context_.reset();
}

}  // namespace paygent
