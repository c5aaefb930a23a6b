// paygentd's tracking API (docs/tracking.md, "HTTP"): customers, full / cost-only / revenue-only
// usage, standalone speech, video and external costs, and voice sessions. Every request is read
// by the one strict body reader (server/json_body.h) in camelCase or snake_case, priced from the
// server's catalog (PriceCatalog::builtin(): LLM per token, speech and video per unit), turned
// into event records (sync/event_record.h) and stored through the batch path's ingest, so that a
// tracked customer's spend counts like a library's events. Replies are written by JsonWriter.
//
// Event ids: with an "Idempotency-Key: K" header, the first 128 bits of SHA-256(product, path,
// K), so that a retried request is a duplicate of the first and counts once (K is kept with its
// body's SHA-256: the same K with another body is a 409); without it, random.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

#include "meter/internal/str_cat.h"
#include "paygent/media_price.h"
#include "paygent/price_catalog.h"
#include "server/api.h"
#include "server/api_key.h"
#include "server/json_body.h"
#include "server/json_writer.h"
#include "server/wire.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;
using ::paygent::internal::UsageKind;
using Micros = std::chrono::microseconds;

// Longest Idempotency-Key accepted.
constexpr std::size_t kMaxIdempotencyKeyBytes = 255;

HttpResponse reply(int status, JsonWriter&& writer) {
  return HttpResponse{.status = status, .body = std::move(writer).str()};
}

// The hash that stands for the request's Idempotency-Key (nullopt without one): its first 32 hex
// digits are the id of the request's event. InvalidArgument for a key over the limit.
absl::StatusOr<std::optional<std::string>> idempotency_hash(const std::string& product_id, const HttpRequest& request) {
  const std::string& key = request.idempotency_key;
  if (key.empty()) return std::nullopt;
  if (key.size() > kMaxIdempotencyKeyBytes) {
    return absl::InvalidArgumentError(str_cat("Idempotency-Key: must be at most ", kMaxIdempotencyKeyBytes, " bytes"));
  }
  const std::string_view target = request.target;
  const std::string_view path = target.substr(0, target.find('?'));
  // Lengths first, so that no two (product, path, key) share a hashed text.
  return sha256_hex(str_cat(product_id.size(), ":", product_id, path.size(), ":", path, key.size(), ":", key));
}

// The id of the request's event: random, or derived from its Idempotency-Key, which is claimed for
// the request's body (AlreadyExists when the key was used with another body: a 409).
absl::StatusOr<std::string> event_id_of(Storage& storage, const std::string& product_id, const HttpRequest& request) {
  absl::StatusOr<std::optional<std::string>> key_hash = idempotency_hash(product_id, request);
  if (!key_hash.ok()) return key_hash.status();
  if (!*key_hash) return generate_event_id();
  absl::Status claimed = storage.claim_idempotency_key(product_id, **key_hash, sha256_hex(request.body));
  if (absl::IsFailedPrecondition(claimed)) return absl::AlreadyExistsError(claimed.message());
  if (!claimed.ok()) return claimed;
  return (*key_hash)->substr(0, 32);
}

// The cost reply of a stored tracked event (`prompt_nanos` of its cost is the prompt's).
HttpResponse cost_reply(const EventRecord& event, std::int64_t prompt_nanos, bool duplicate) {
  std::optional<std::int64_t> total, prompt, completion;
  if (!event.cost_unknown) {
    total = event.cost_nanos;
    prompt = prompt_nanos;
    completion = event.cost_nanos - prompt_nanos;
  }
  JsonWriter w;
  w.begin_object()
      .key("cpDataId").value(event.id)
      .key("kind").value(::paygent::internal::usage_kind_name(event.kind))
      .key("calculatedCost").usd(total)
      .key("calculatedCostNanos").value(total)
      .key("costUnknown").value(event.cost_unknown)
      .key("breakdown").begin_object()
      .key("promptCost").usd(prompt)
      .key("completionCost").usd(completion)
      .key("totalCost").usd(total)
      .end_object()
      .key("duplicate").value(duplicate)
      .end_object();
  return reply(200, std::move(w));
}

// The fields every tracking request about a customer carries.
struct Who {
  std::string agent_id;
  std::string customer_id;
  std::string indicator;
  std::string meta_tags = "{}";
};

BodyField text(std::array<std::string_view, 2> names, std::string& out, bool required, bool non_empty = false) {
  return BodyField{.names = names, .type = BodyType::kText, .required = required, .text = &out, .non_empty = non_empty};
}
BodyField count(std::array<std::string_view, 2> names, std::int64_t& out, bool required = false,
                bool* present = nullptr) {
  return BodyField{.names = names, .type = BodyType::kCount, .required = required, .count = &out, .present = present};
}
BodyField duration(std::array<std::string_view, 2> names, BodyType type, Micros& out, bool required) {
  return BodyField{.names = names, .type = type, .required = required, .duration = &out};
}
BodyField tags(std::string& out) {
  return BodyField{.names = {"metaTags"}, .type = BodyType::kMetaTags, .text = &out};
}

// agentId, customerId (non-empty), indicator (required and non-empty for revenue, else optional:
// empty is cost-only) and metaTags.
void who_fields(Who& who, bool indicator_required, std::vector<BodyField>& out) {
  out.push_back(text({"agentId"}, who.agent_id, true, true));
  out.push_back(text({"customerId"}, who.customer_id, true, true));
  out.push_back(text({"indicator"}, who.indicator, indicator_required, indicator_required));
  out.push_back(tags(who.meta_tags));
}

EventRecord event_of(const Who& who, UsageKind kind, absl::Time now) {
  EventRecord e;
  e.kind = kind;
  e.user_id = who.customer_id;
  e.agent_id = who.agent_id;
  e.indicator = who.indicator;
  e.meta_tags_json = who.meta_tags;
  e.ts_ns = absl::ToUnixNanos(now);
  return e;
}

EventRecord event_of(const VoiceSession& session, UsageKind kind, absl::Time now) {
  EventRecord e = event_of(Who{.agent_id = session.agent_id, .customer_id = session.customer_id,
                               .meta_tags = session.meta_tags_json},
                           kind, now);
  e.session_id = session.session_id;
  return e;
}

// "" for the provider's default tier ("default" in any case, or nothing).
std::string tier_of(std::string_view plan) {
  std::string lower(plan);
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return lower == "default" ? std::string() : std::string(plan);
}

// Prices an LLM event (tokens set) from the catalog; returns the prompt's part of the cost.
std::int64_t price_llm(EventRecord& e) {
  const ModelPrice* price = PriceCatalog::builtin().find(e.model);
  if (price == nullptr) {
    e.cost_unknown = true;
    return 0;
  }
  e.cost_nanos = cost_of(e.usage(), *price);
  Usage prompt = e.usage();
  prompt.output_tokens = 0;
  prompt.reasoning_tokens = 0;
  return cost_of(prompt, *price);
}

// Prices a speech or video event from the catalog (its provider, model, tier and quantities).
// The whole cost is the prompt's, but for speech-to-speech (its input part).
std::int64_t price_media(EventRecord& e) {
  MediaKind kind = MediaKind::kStt;
  switch (e.kind) {
    case UsageKind::kTts: kind = MediaKind::kTts; break;
    case UsageKind::kSts: kind = MediaKind::kSts; break;
    case UsageKind::kVideo: kind = MediaKind::kVideo; break;
    default: break;
  }
  const MediaPrice* price = PriceCatalog::builtin().find(kind, e.provider, e.model, e.tier, e.resolution);
  if (price == nullptr) {
    e.cost_unknown = true;
    return 0;
  }
  e.tier = std::string(price->tier);
  switch (kind) {
    case MediaKind::kStt: e.cost_nanos = cost_of_duration(*price, Micros(e.audio_us)); return e.cost_nanos;
    case MediaKind::kVideo: e.cost_nanos = cost_of_duration(*price, Micros(e.video_us)); return e.cost_nanos;
    case MediaKind::kTts: e.cost_nanos = cost_of_characters(*price, e.characters); return e.cost_nanos;
    case MediaKind::kSts: break;
  }
  ModalityTokens tokens{.text_input = e.input_tokens - e.audio_input_tokens,
                        .cached_text_input = e.cached_input_tokens - e.cached_audio_input_tokens,
                        .audio_input = e.audio_input_tokens,
                        .cached_audio_input = e.cached_audio_input_tokens,
                        .text_output = e.output_tokens - e.audio_output_tokens,
                        .audio_output = e.audio_output_tokens};
  e.cost_nanos = cost_of_modality_tokens(*price, tokens);
  tokens.text_output = tokens.audio_output = 0;
  return cost_of_modality_tokens(*price, tokens);
}

absl::Status invalid(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(str_cat(field, ": ", why));
}

absl::Status check_cached(std::int64_t cached, std::int64_t input, std::string_view cached_name,
                          std::string_view input_name) {
  if (cached > input) return invalid(cached_name, str_cat("must not exceed ", input_name, " (", input, ")"));
  return absl::OkStatus();
}

// The body read into `fields`, or the 400 naming the field.
std::optional<HttpResponse> refuse_body(const HttpRequest& request, std::span<const BodyField> fields) {
  if (absl::Status s = read_json_body(request.body, fields); !s.ok()) return error_response(s);
  return std::nullopt;
}

// Why nothing more is tracked into a closed session (a 409 session_closed, naming it).
absl::Status closed_session(std::string_view id) {
  return absl::FailedPreconditionError(
      str_cat("sessionId: voice session \"", id, "\" is closed (its indicator was set); nothing more is tracked into it"));
}

// error_response(), but 409 "session_closed" for a closed voice session.
HttpResponse session_error(const absl::Status& status) {
  if (absl::IsFailedPrecondition(status)) return error_response(409, "session_closed", std::string(status.message()));
  return error_response(status);
}

// What a tracked request of one kind measures: the priced model and the kind's quantities.
struct Measure {
  std::string provider, model, plan, language, resolution;
  Micros audio{0}, video{0};
  std::int64_t characters = 0;
  std::int64_t prompt = 0, completion = 0, cached = 0;  // llm
  std::int64_t text_in = 0, audio_in = 0, cached_text = 0, cached_audio = 0, text_out = 0, audio_out = 0;  // sts
};

// The fields of a `kind` request beyond who or the session: provider (or serviceProvider), model,
// plan, and the kind's quantities.
void measure_fields(UsageKind kind, Measure& m, std::vector<BodyField>& out) {
  out.push_back(text({"provider", "serviceProvider"}, m.provider, true));
  out.push_back(text({"model"}, m.model, true, true));
  out.push_back(text({"plan"}, m.plan, false));
  switch (kind) {
    case UsageKind::kStt:
      out.push_back(text({"language"}, m.language, false));  // kept as a meta tag; no price depends on it
      out.push_back(duration({"audioMinutes", "audioDuration"}, BodyType::kMinutes, m.audio, true));
      break;
    case UsageKind::kTts: out.push_back(count({"characters", "characterCount"}, m.characters, true)); break;
    case UsageKind::kLlm:
      out.push_back(count({"promptTokens"}, m.prompt, true));
      out.push_back(count({"completionTokens"}, m.completion, true));
      out.push_back(count({"cachedTokens"}, m.cached));
      break;
    case UsageKind::kSts:
      out.push_back(count({"inputTextTokens"}, m.text_in));
      out.push_back(count({"inputAudioTokens"}, m.audio_in));
      out.push_back(count({"cachedTextTokens"}, m.cached_text));
      out.push_back(count({"cachedAudioTokens"}, m.cached_audio));
      out.push_back(count({"outputTextTokens"}, m.text_out));
      out.push_back(count({"outputAudioTokens"}, m.audio_out));
      break;
    case UsageKind::kVideo:
      out.push_back(text({"resolution"}, m.resolution, false));
      out.push_back(duration({"videoSeconds", "seconds"}, BodyType::kSeconds, m.video, true));
      break;
    default: break;
  }
}

// `tags_json` (normalised meta tags: an object of strings) with `key`: `value` added at its end,
// unless it has that key already (the caller's own tag wins) or has kMaxMetaTags tags.
std::string with_tag(const std::string& tags_json, std::string_view key, std::string_view value) {
  simdjson::dom::parser parser;
  simdjson::dom::object object;
  if (parser.parse(tags_json).get_object().get(object) != simdjson::SUCCESS) return tags_json;
  JsonWriter w;
  w.begin_object();
  std::size_t n = 0;
  for (auto field : object) {
    std::string_view text;
    if (field.key == key || field.value.get_string().get(text) != simdjson::SUCCESS) return tags_json;
    w.key(field.key).value(text);
    ++n;
  }
  if (n >= kMaxMetaTags) return tags_json;
  w.key(key).value(value);
  w.end_object();
  return std::move(w).str();
}

// Puts `m` on the event and prices it: the prompt's part of the cost, or InvalidArgument naming a
// cached count above its input. An STT request's language becomes the event's meta tag
// "language" (reports group by it: by=tag:language).
absl::StatusOr<std::int64_t> measure_event(UsageKind kind, const Measure& m, EventRecord& e) {
  e.provider = m.provider;
  e.model = m.model;
  e.tier = tier_of(m.plan);
  switch (kind) {
    case UsageKind::kStt:
      e.audio_us = m.audio.count();
      if (!m.language.empty()) e.meta_tags_json = with_tag(e.meta_tags_json, "language", m.language);
      break;
    case UsageKind::kTts: e.characters = m.characters; break;
    case UsageKind::kVideo:
      e.resolution = m.resolution;
      e.video_us = m.video.count();
      break;
    case UsageKind::kLlm:
      if (absl::Status s = check_cached(m.cached, m.prompt, "cachedTokens", "promptTokens"); !s.ok()) return s;
      e.input_tokens = m.prompt;
      e.output_tokens = m.completion;
      e.cached_input_tokens = m.cached;
      return price_llm(e);
    case UsageKind::kSts:
      if (absl::Status s = check_cached(m.cached_text, m.text_in, "cachedTextTokens", "inputTextTokens"); !s.ok()) {
        return s;
      }
      if (absl::Status s = check_cached(m.cached_audio, m.audio_in, "cachedAudioTokens", "inputAudioTokens"); !s.ok()) {
        return s;
      }
      if (__builtin_add_overflow(m.text_in, m.audio_in, &e.input_tokens) ||
          __builtin_add_overflow(m.text_out, m.audio_out, &e.output_tokens)) {
        return invalid("inputAudioTokens", "the token counts' sum is past 2^63-1");
      }
      e.audio_input_tokens = m.audio_in;
      e.cached_input_tokens = m.cached_text + m.cached_audio;  // each at most its input: no overflow
      e.cached_audio_input_tokens = m.cached_audio;
      e.audio_output_tokens = m.audio_out;
      break;
    default: break;
  }
  return price_media(e);
}

}  // namespace

HttpResponse Api::store_tracked(const Call& call, EventRecord& event, std::int64_t prompt_nanos) {
  absl::StatusOr<std::string> id = event_id_of(storage_, call.product_id, call.request);
  if (!id.ok()) return error_response(id.status());
  event.id = *std::move(id);
  absl::StatusOr<IngestResult> stored = store_events(call.product_id, std::span<const EventRecord>(&event, 1));
  if (!stored.ok()) return error_response(stored.status());
  return cost_reply(event, prompt_nanos, stored->duplicates > 0);
}

HttpResponse Api::track_customer(const Call& call) {
  std::string external_id, name, email;
  const BodyField fields[] = {text({"externalId"}, external_id, true, true), text({"name"}, name, true),
                              text({"email"}, email, false)};
  if (auto refused = refuse_body(call.request, fields)) return *refused;
  absl::StatusOr<CustomerRecord> customer = storage_.create_or_get_customer(call.product_id, external_id, name, email);
  if (!customer.ok()) return error_response(customer.status());
  JsonWriter w;
  w.begin_object()
      .key("id").value(customer->id)
      .key("externalId").value(customer->id)
      .key("name").value(customer->name)
      .key("email");
  if (customer->email.empty()) {
    w.null();
  } else {
    w.value(customer->email);
  }
  w.key("created").value(customer->created).end_object();
  return reply(200, std::move(w));
}

HttpResponse Api::track_usage(const Call& call) {
  Who who;
  std::string provider, model, plan;
  std::int64_t input = 0, output = 0, cached = 0, characters = 0;
  Micros audio{0};
  const BodyField raw[] = {text({"provider", "serviceProvider"}, provider, true),
                           text({"model"}, model, true, true),
                           text({"plan"}, plan, false),
                           count({"inputTokens"}, input),
                           count({"outputTokens"}, output),
                           count({"cachedTokens"}, cached),
                           duration({"audioDuration"}, BodyType::kMinutes, audio, false),
                           count({"characterCount"}, characters)};
  std::vector<BodyField> fields;
  who_fields(who, false, fields);
  fields.push_back(BodyField{.names = {"rawUsage"}, .type = BodyType::kObject, .required = true, .members = raw});
  if (auto refused = refuse_body(call.request, fields)) return *refused;
  if (absl::Status s = check_cached(cached, input, "rawUsage.cachedTokens", "rawUsage.inputTokens"); !s.ok()) {
    return error_response(s);
  }
  // The kind is what the usage measures: tokens (an LLM call), else audio (speech-to-text), else
  // characters (text-to-speech). The other quantities given are kept on the event.
  UsageKind kind = UsageKind::kLlm;
  if (input == 0 && output == 0 && audio.count() > 0) {
    kind = UsageKind::kStt;
  } else if (input == 0 && output == 0 && characters > 0) {
    kind = UsageKind::kTts;
  }
  EventRecord e = event_of(who, kind, options_.clock());
  e.provider = provider;
  e.model = model;
  e.tier = tier_of(plan);
  e.input_tokens = input;
  e.output_tokens = output;
  e.cached_input_tokens = cached;
  e.audio_us = audio.count();
  e.characters = characters;
  const std::int64_t prompt = kind == UsageKind::kLlm ? price_llm(e) : price_media(e);
  return store_tracked(call, e, prompt);
}

HttpResponse Api::track_indicator(const Call& call) {
  Who who;
  std::vector<BodyField> fields;
  who_fields(who, true, fields);
  if (auto refused = refuse_body(call.request, fields)) return *refused;
  EventRecord e = event_of(who, UsageKind::kBilling, options_.clock());
  absl::StatusOr<std::string> id = event_id_of(storage_, call.product_id, call.request);
  if (!id.ok()) return error_response(id.status());
  e.id = *std::move(id);
  absl::StatusOr<IngestResult> stored = store_events(call.product_id, std::span<const EventRecord>(&e, 1));
  if (!stored.ok()) return error_response(stored.status());
  JsonWriter w;
  w.begin_object()
      .key("eventId").value(e.id)
      .key("kind").value("billing")
      .key("indicator").value(e.indicator)
      .key("duplicate").value(stored->duplicates > 0)
      .end_object();
  return reply(200, std::move(w));
}

HttpResponse Api::track_stt(const Call& call) { return track_kind(call, UsageKind::kStt, false); }
HttpResponse Api::track_tts(const Call& call) { return track_kind(call, UsageKind::kTts, false); }
HttpResponse Api::track_sts(const Call& call) { return track_kind(call, UsageKind::kSts, false); }
HttpResponse Api::track_video(const Call& call) { return track_kind(call, UsageKind::kVideo, false); }
HttpResponse Api::voice_stt(const Call& call) { return track_kind(call, UsageKind::kStt, true); }
HttpResponse Api::voice_llm(const Call& call) { return track_kind(call, UsageKind::kLlm, true); }
HttpResponse Api::voice_tts(const Call& call) { return track_kind(call, UsageKind::kTts, true); }

HttpResponse Api::track_kind(const Call& call, UsageKind kind, bool in_session) {
  Who who;
  std::string session_id;
  Measure m;
  std::vector<BodyField> fields;
  if (in_session) {
    fields.push_back(text({"sessionId"}, session_id, true, true));
  } else {
    who_fields(who, false, fields);
  }
  measure_fields(kind, m, fields);
  if (auto refused = refuse_body(call.request, fields)) return *refused;
  EventRecord e;
  bool closed = false;
  if (in_session) {
    // Checked after the body, so that a bad body is a 400 whatever the session's state.
    absl::StatusOr<VoiceSession> session = storage_.find_voice_session(call.product_id, session_id);
    if (!session.ok()) return error_response(session.status());
    closed = session->closed;
    e = event_of(*session, kind, options_.clock());
  } else {
    e = event_of(who, kind, options_.clock());
  }
  absl::StatusOr<std::int64_t> prompt = measure_event(kind, m, e);
  if (!prompt.ok()) return error_response(prompt.status());
  if (closed) {
    // A retry (same Idempotency-Key) of a request stored before the session closed is answered as
    // its duplicate, so that a client whose answer was lost does not take it for a refusal.
    absl::StatusOr<std::optional<std::string>> key_hash = idempotency_hash(call.product_id, call.request);
    if (!key_hash.ok()) return error_response(key_hash.status());
    if (*key_hash) {
      e.id = (*key_hash)->substr(0, 32);
      absl::StatusOr<bool> stored = storage_.has_event(call.product_id, e.id);
      if (!stored.ok()) return error_response(stored.status());
      if (*stored) {
        // Claimed when it was stored: this only checks that the body is the same one.
        absl::StatusOr<std::string> same = event_id_of(storage_, call.product_id, call.request);
        if (!same.ok()) return error_response(same.status());
        return cost_reply(e, *prompt, /*duplicate=*/true);
      }
    }
    return session_error(closed_session(session_id));
  }
  return store_tracked(call, e, *prompt);
}

HttpResponse Api::track_external(const Call& call) {
  Who who;
  std::string provider, description;
  std::int64_t amount = 0, amount_nanos = 0;
  bool has_amount = false, has_nanos = false;
  std::vector<BodyField> fields;
  who_fields(who, false, fields);
  fields.push_back(text({"provider", "serviceProvider"}, provider, false));
  fields.push_back(text({"description"}, description, true, true));
  fields.push_back(BodyField{.names = {"amount"}, .type = BodyType::kUsd, .count = &amount, .present = &has_amount});
  fields.push_back(count({"amountNanos"}, amount_nanos, false, &has_nanos));
  if (auto refused = refuse_body(call.request, fields)) return *refused;
  if (has_amount == has_nanos) {
    return error_response(invalid("amount", has_amount ? "give amount (USD) or amountNanos, not both"
                                                       : "missing (or amountNanos)"));
  }
  EventRecord e = event_of(who, UsageKind::kExternal, options_.clock());
  e.provider = provider;
  e.description = description;
  e.cost_nanos = has_amount ? amount : amount_nanos;
  return store_tracked(call, e, e.cost_nanos);
}

HttpResponse Api::voice_session(const Call& call) {
  VoiceSession session;
  const BodyField fields[] = {text({"sessionId"}, session.session_id, true, true),
                              text({"agentId"}, session.agent_id, true, true),
                              text({"customerId"}, session.customer_id, true, true), tags(session.meta_tags_json)};
  if (auto refused = refuse_body(call.request, fields)) return *refused;
  absl::StatusOr<bool> created = storage_.open_voice_session(call.product_id, session);
  if (!created.ok()) return error_response(created.status());
  JsonWriter w;
  w.begin_object()
      .key("sessionId").value(session.session_id)
      .key("agentId").value(session.agent_id)
      .key("customerId").value(session.customer_id)
      .key("metaTags").raw(session.meta_tags_json)
      .key("created").value(*created)
      .end_object();
  return reply(200, std::move(w));
}

HttpResponse Api::voice_indicator(const Call& call) {
  std::string session_id, indicator;
  Micros total{0};
  const BodyField fields[] = {text({"sessionId"}, session_id, true, true), text({"indicator"}, indicator, true, true),
                              duration({"totalDuration"}, BodyType::kMinutes, total, true)};
  if (auto refused = refuse_body(call.request, fields)) return *refused;
  absl::StatusOr<VoiceSession> session = storage_.find_voice_session(call.product_id, session_id);
  if (!session.ok()) return error_response(session.status());
  EventRecord e = event_of(*session, UsageKind::kBilling, options_.clock());
  e.indicator = indicator;
  e.audio_us = total.count();
  absl::StatusOr<std::string> id = event_id_of(storage_, call.product_id, call.request);
  if (!id.ok()) return error_response(id.status());
  e.id = *std::move(id);
  // Closed and billed in one transaction: a second indicator is refused, a retried one (same
  // Idempotency-Key, so the same event id) is a duplicate, and a crash leaves neither.
  absl::StatusOr<IngestResult> stored = storage_.close_voice_session(call.product_id, session_id, e);
  if (!stored.ok()) return session_error(stored.status());
  metrics_.record_ingest(stored->accepted, stored->duplicates);
  JsonWriter w;
  w.begin_object()
      .key("sessionId").value(session_id)
      .key("eventId").value(e.id)
      .key("indicator").value(indicator)
      .key("totalDurationUs").value(e.audio_us)
      .key("closed").value(true)
      .key("duplicate").value(stored->duplicates > 0)
      .end_object();
  return reply(200, std::move(w));
}

}  // namespace paygent::server
