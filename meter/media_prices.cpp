// The speech and video part of the price catalog: parsing the "media" section of meter/prices.json
// and looking prices up (see include/paygent/media_price.h and price_catalog.h).
//
// Format (inside the catalog's top-level object):
//
//   "media": {
//     "note": "...",                              // optional, free text
//     "providers": {                              // required: every provider id and its other names
//       "deepgram": ["Deepgram"],
//       "amazon-polly": ["Amazon Polly", "AWS Polly", "Polly"]
//     },
//     "stt": {                                    // optional; so are "tts", "sts" and "video"
//       "deepgram": {                             // a provider id of "providers"
//         "nova-2": {                             // the model name
//           "aliases": ["Nova-2"],                // optional: other names of the model
//           "unit": "USD per minute",             // required, see below
//           "tiers": {"pay-as-you-go": "0.0058",  // required: the price in each pricing tier
//                     "growth": "0.0047"},
//           "default_tier": "pay-as-you-go",      // required when there are several tiers
//           "source": "https://deepgram.com/pricing",  // required: where the price was read
//           "as_of": "2026-12-02",                // required: when
//           "note": "..."                         // optional, free text
//         }
//       }
//     }
//   }
//
// Units: stt and video "USD per second" | "USD per minute" | "USD per hour"; tts "USD per
// character" | "USD per 1K characters" | "USD per 1M characters"; sts "USD per 1M tokens" |
// "USD per 1K tokens". A tier's price is a decimal string for stt and tts; for sts an object
// {"text_input", "audio_input", "text_output", "audio_output" (required), "cached_text_input",
// "cached_audio_input" (optional, default: the uncached rate)}; for video a decimal string or an
// object of resolutions {"1280x720": "0.30", ...}. Decimals are parsed exactly (a price finer than
// the internal unit is rejected, never rounded). "default" is not a tier name: it selects the
// default tier. Names are compared after normalising (ASCII lower case, ' ' and '_' read as '-'),
// so two names that normalise alike are duplicates. Unknown fields are rejected. Errors name the
// entry and field:  media.stt["deepgram"]["nova-2"].tiers["growth"]: "x": is not a decimal number
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meter/internal/catalog_parse.h"
#include "meter/internal/media_table.h"
#include "meter/internal/str_cat.h"
#include "paygent/media_price.h"
#include "paygent/price_catalog.h"
#include "simdjson.h"

namespace paygent {
namespace {

namespace dom = simdjson::dom;
using internal::invalid;
using internal::str_cat;

constexpr MediaKind kKinds[] = {MediaKind::kStt, MediaKind::kTts, MediaKind::kSts, MediaKind::kVideo};

// Look-up keys are built on the stack: a name that does not fit is simply unknown.
constexpr std::size_t kMaxKey = 256;

char normal_char(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return static_cast<char>(c - 'A' + 'a');
  if (c == ' ' || c == '_') return '-';
  return c;
}

std::string normalised(std::string_view name) {
  std::string out(name);
  for (char& c : out) c = normal_char(c);
  return out;
}

// True when `raw` normalises to `normal`.
bool same_name(std::string_view normal, std::string_view raw) noexcept {
  if (normal.size() != raw.size()) return false;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (normal[i] != normal_char(raw[i])) return false;
  }
  return true;
}

// A bounded key builder that never allocates.
class Key {
 public:
  bool add(std::string_view piece, bool normalise) noexcept {
    if (piece.size() > buf_.size() - size_) return false;
    for (const char c : piece) buf_[size_++] = normalise ? normal_char(c) : c;
    return true;
  }
  [[nodiscard]] absl::string_view view() const noexcept { return {buf_.data(), size_}; }

 private:
  std::array<char, kMaxKey> buf_;
  std::size_t size_ = 0;
};

// The model index key: kind, provider id, separator, normalised model name.
char kind_char(MediaKind kind) noexcept { return static_cast<char>('0' + static_cast<int>(kind)); }
constexpr std::string_view kKeySeparator = "\x1f";

std::string model_key(MediaKind kind, std::string_view provider, std::string_view normal_model) {
  return str_cat(kind_char(kind), provider, kKeySeparator, normal_model);
}

std::string quoted(std::string_view name) { return str_cat("[\"", name, "\"]"); }

// How errors name a model entry or one of its fields.
std::string entry_path(MediaKind kind, std::string_view provider, std::string_view model, std::string_view field) {
  return str_cat("media.", media_kind_name(kind), quoted(provider), quoted(model), field.empty() ? "" : ".", field);
}

// The unit of a kind's prices: how a decimal in it becomes the internal rate.
struct Unit {
  std::int64_t divisor = 1;     // per how many units the decimal is (1K characters: 1000)
  std::int64_t multiplier = 1;  // time units per hour (per minute: 60)
  std::string_view internal;
};

absl::StatusOr<Unit> parse_unit(MediaKind kind, std::string_view unit) {
  switch (kind) {
    case MediaKind::kStt:
    case MediaKind::kVideo:
      if (unit == "USD per second") return Unit{1, 3600, "pico-USD per second"};
      if (unit == "USD per minute") return Unit{1, 60, "pico-USD per minute"};
      if (unit == "USD per hour") return Unit{1, 1, "pico-USD per hour"};
      return absl::InvalidArgumentError("must be \"USD per second\", \"USD per minute\" or \"USD per hour\"");
    case MediaKind::kTts:
      if (unit == "USD per character") return Unit{1, 1, "pico-USD per character"};
      if (unit == "USD per 1K characters") return Unit{1'000, 1, "pico-USD per character"};
      if (unit == "USD per 1M characters") return Unit{1'000'000, 1, "pico-USD per character"};
      return absl::InvalidArgumentError(
          "must be \"USD per character\", \"USD per 1K characters\" or \"USD per 1M characters\"");
    case MediaKind::kSts:
      if (unit == "USD per 1K tokens") return Unit{1'000, 1, "pico-USD per token"};
      if (unit == "USD per 1M tokens") return Unit{1'000'000, 1, "pico-USD per token"};
      return absl::InvalidArgumentError("must be \"USD per 1M tokens\" or \"USD per 1K tokens\"");
  }
  return absl::InvalidArgumentError("unknown kind");
}

// A decimal string in `unit`, as the internal rate (pico-USD per hour, character or token).
absl::StatusOr<std::int64_t> parse_rate(dom::element value, const Unit& unit, const std::string& path) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) {
    return invalid(path, "must be a decimal string such as \"0.0058\"");
  }
  absl::StatusOr<std::int64_t> rate = internal::parse_scaled_decimal(text, 12, unit.divisor, unit.internal);
  if (!rate.ok()) return invalid(path, std::string(rate.status().message()));
  std::int64_t per_hour = 0;
  if (__builtin_mul_overflow(*rate, unit.multiplier, &per_hour)) {
    return invalid(path, str_cat("\"", text, "\": is too large"));
  }
  return per_hour;
}

}  // namespace

class PriceCatalog::MediaTable::Parser {
 public:
  explicit Parser(MediaTable& table) : t_(table) {}

  absl::Status providers(dom::object providers) {
    for (const dom::key_value_pair p : providers) {
      const std::string path = str_cat("media.providers", quoted(p.key));
      if (p.key.empty()) return invalid("media.providers", "a provider id is empty");
      const std::string_view id = store(normalised(p.key));
      if (auto s = add_provider_name(id, id, path); !s.ok()) return s;
      dom::array names;
      if (p.value.get_array().get(names) != simdjson::SUCCESS) {
        return invalid(path, "must be an array of the provider's other names");
      }
      for (const dom::element n : names) {
        std::string_view name;
        if (n.get_string().get(name) != simdjson::SUCCESS || name.empty()) {
          return invalid(path, "must be an array of the provider's other names");
        }
        if (auto s = add_provider_name(normalised(name), id, path); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status kind(MediaKind kind, dom::object by_provider) {
    for (const dom::key_value_pair p : by_provider) {
      const std::string kind_path = str_cat("media.", media_kind_name(kind), quoted(p.key));
      auto provider = t_.providers.find(normalised(p.key));
      if (provider == t_.providers.end() || provider->second != normalised(p.key)) {
        return invalid(kind_path, str_cat("\"", p.key, "\" is not a provider id of media.providers"));
      }
      dom::object models;
      if (p.value.get_object().get(models) != simdjson::SUCCESS) return invalid(kind_path, "must be an object");
      for (const dom::key_value_pair m : models) {
        if (m.key.empty()) return invalid(kind_path, "a model name is empty");
        if (auto s = model(kind, provider->second, p.key, m.key, m.value); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  std::string_view store(std::string s) { return t_.strings.emplace_back(std::move(s)); }

  // Indexes model `index` under `normal_model` with every name of `provider` (so that a look-up
  // hashes once). False when the name is already a model of that provider and kind.
  bool add_model_name(MediaKind kind, std::string_view provider, const std::string& normal_model, std::size_t index) {
    if (!t_.index.try_emplace(model_key(kind, provider, normal_model), index).second) return false;
    for (const auto& [name, id] : t_.providers) {
      // Provider names are unique, so these keys cannot collide unless the one above did.
      if (id == provider && name != provider) t_.index.try_emplace(model_key(kind, name, normal_model), index);
    }
    return true;
  }

  absl::Status add_provider_name(std::string_view name, std::string_view id, const std::string& path) {
    auto [it, inserted] = t_.providers.try_emplace(std::string(name), id);
    if (!inserted) {
      return invalid(path, str_cat("\"", name, "\" already names provider \"", it->second, "\""));
    }
    return absl::OkStatus();
  }

  absl::Status model(MediaKind kind, std::string_view provider, std::string_view provider_key, std::string_view name,
                     dom::element value) {
    const std::string path = entry_path(kind, provider_key, name, "");
    auto field = [&](std::string_view f) { return entry_path(kind, provider_key, name, f); };
    dom::object entry;
    if (value.get_object().get(entry) != simdjson::SUCCESS) return invalid(path, "must be an object");
    for (const dom::key_value_pair member : entry) {
      const std::string_view k = member.key;
      if (k != "aliases" && k != "unit" && k != "tiers" && k != "default_tier" && k != "source" && k != "as_of" &&
          k != "note") {
        return invalid(field(k), "unknown field");
      }
    }
    std::string_view unit_text;
    if (entry["unit"].get_string().get(unit_text) != simdjson::SUCCESS) unit_text = {};
    absl::StatusOr<Unit> unit = parse_unit(kind, unit_text);
    if (!unit.ok()) return invalid(field("unit"), std::string(unit.status().message()));
    std::string_view source;
    if (entry["source"].get_string().get(source) != simdjson::SUCCESS || source.substr(0, 8) != "https://") {
      return invalid(field("source"), "must be an https:// URL");
    }
    std::string_view as_of;
    if (entry["as_of"].get_string().get(as_of) != simdjson::SUCCESS || !internal::is_date(as_of)) {
      return invalid(field("as_of"), "must be a date string \"YYYY-MM-DD\"");
    }
    dom::element note;
    if (entry["note"].get(note) == simdjson::SUCCESS && !note.is_string()) {
      return invalid(field("note"), "must be a string");
    }

    MediaPrice base;
    base.kind = kind;
    base.provider = provider;
    base.model = store(std::string(name));
    base.source = store(std::string(source));
    base.as_of = store(std::string(as_of));

    Model priced;
    dom::object tiers;
    if (entry["tiers"].get_object().get(tiers) != simdjson::SUCCESS) {
      return invalid(field("tiers"), "must be an object of the price in each pricing tier");
    }
    for (const dom::key_value_pair tier : tiers) {
      const std::string tier_path = str_cat(field("tiers"), quoted(tier.key));
      if (tier.key.empty()) return invalid(field("tiers"), "a tier name is empty");
      const std::string tier_name = normalised(tier.key);
      if (tier_name == "default") {
        return invalid(tier_path, "\"default\" is not a tier name: it selects default_tier");
      }
      for (const auto& other : priced.tiers) {
        if (other.name == tier_name) return invalid(tier_path, "duplicate tier name");
      }
      base.tier = store(std::string(tier.key));
      Tier t;
      t.name = store(tier_name);
      if (auto s = tier_prices(kind, base, tier.value, *unit, tier_path, t); !s.ok()) return s;
      priced.tiers.push_back(std::move(t));
    }
    if (priced.tiers.empty()) return invalid(field("tiers"), "must name at least one tier");

    dom::element default_tier;
    if (entry["default_tier"].get(default_tier) == simdjson::SUCCESS) {
      std::string_view d;
      if (default_tier.get_string().get(d) != simdjson::SUCCESS) return invalid(field("default_tier"), "must be a string");
      std::size_t i = 0;
      while (i < priced.tiers.size() && priced.tiers[i].name != normalised(d)) ++i;
      if (i == priced.tiers.size()) {
        return invalid(field("default_tier"), str_cat("\"", d, "\" is not one of the tiers"));
      }
      priced.default_tier = i;
    } else if (priced.tiers.size() > 1) {
      return invalid(field("default_tier"), "is required when there are several tiers");
    }

    const std::size_t index = t_.models.size();
    t_.models.push_back(std::move(priced));
    if (!add_model_name(kind, provider, normalised(name), index)) return invalid(path, "duplicate model name");
    dom::element aliases_element;
    if (entry["aliases"].get(aliases_element) == simdjson::SUCCESS) {
      dom::array aliases;
      if (aliases_element.get_array().get(aliases) != simdjson::SUCCESS) {
        return invalid(field("aliases"), "must be an array of model names");
      }
      for (const dom::element alias : aliases) {
        std::string_view alias_name;
        if (alias.get_string().get(alias_name) != simdjson::SUCCESS || alias_name.empty()) {
          return invalid(field("aliases"), "must be an array of model names");
        }
        if (!add_model_name(kind, provider, normalised(alias_name), index)) {
          return invalid(field("aliases"), str_cat("\"", alias_name, "\" is already a model name"));
        }
      }
    }
    return absl::OkStatus();
  }

  // The price(s) of one tier, from its JSON value.
  absl::Status tier_prices(MediaKind kind, MediaPrice base, dom::element value, const Unit& unit,
                           const std::string& path, Tier& out) {
    if (kind == MediaKind::kSts) {
      dom::object fields;
      if (value.get_object().get(fields) != simdjson::SUCCESS) {
        return invalid(path, "must be an object of modality prices (text_input, audio_input, text_output, audio_output)");
      }
      for (const dom::key_value_pair member : fields) {
        const std::string_view k = member.key;
        if (k != "text_input" && k != "cached_text_input" && k != "audio_input" && k != "cached_audio_input" &&
            k != "text_output" && k != "audio_output") {
          return invalid(str_cat(path, ".", k), "unknown field");
        }
      }
      ModalityPrices& p = base.tokens;
      struct Field {
        std::string_view name;
        PicosPerToken* rate;
        PicosPerToken* fallback;  // the rate an absent field takes; nullptr = required
      };
      const Field order[] = {{"text_input", &p.text_input, nullptr},
                             {"audio_input", &p.audio_input, nullptr},
                             {"text_output", &p.text_output, nullptr},
                             {"audio_output", &p.audio_output, nullptr},
                             {"cached_text_input", &p.cached_text_input, &p.text_input},
                             {"cached_audio_input", &p.cached_audio_input, &p.audio_input}};
      for (const Field& f : order) {
        const std::string field_path = str_cat(path, ".", f.name);
        dom::element v;
        if (fields[f.name].get(v) != simdjson::SUCCESS) {
          if (f.fallback == nullptr) return invalid(field_path, "is required");
          *f.rate = *f.fallback;
          continue;
        }
        absl::StatusOr<std::int64_t> rate = parse_rate(v, unit, field_path);
        if (!rate.ok()) return rate.status();
        *f.rate = *rate;
      }
      out.flat = &t_.prices.emplace_back(base);
      return absl::OkStatus();
    }
    if (kind == MediaKind::kVideo && value.is_object()) {
      dom::object resolutions = value.get_object().value_unsafe();
      for (const dom::key_value_pair r : resolutions) {
        const std::string r_path = str_cat(path, quoted(r.key));
        if (r.key.empty()) return invalid(path, "a resolution name is empty");
        const std::string r_name = normalised(r.key);
        for (const auto& other : out.by_resolution) {
          if (other.first == r_name) return invalid(r_path, "duplicate resolution");
        }
        absl::StatusOr<std::int64_t> rate = parse_rate(r.value, unit, r_path);
        if (!rate.ok()) return rate.status();
        MediaPrice priced = base;
        priced.resolution = store(std::string(r.key));
        priced.picos_per_hour = *rate;
        out.by_resolution.emplace_back(store(r_name), &t_.prices.emplace_back(priced));
      }
      if (out.by_resolution.empty()) return invalid(path, "must name at least one resolution");
      return absl::OkStatus();
    }
    absl::StatusOr<std::int64_t> rate = parse_rate(value, unit, path);
    if (!rate.ok()) return rate.status();
    if (kind == MediaKind::kTts) {
      base.picos_per_character = *rate;
    } else {
      base.picos_per_hour = *rate;
    }
    out.flat = &t_.prices.emplace_back(base);
    return absl::OkStatus();
  }

  MediaTable& t_;
};

absl::StatusOr<std::unique_ptr<PriceCatalog::MediaTable>> PriceCatalog::MediaTable::parse(dom::object media) {
  auto table = std::make_unique<MediaTable>();
  for (const dom::key_value_pair member : media) {
    const std::string_view k = member.key;
    if (k != "note" && k != "providers" && k != "stt" && k != "tts" && k != "sts" && k != "video") {
      return invalid(str_cat("media.", k), "unknown field");
    }
  }
  dom::element note;
  if (media["note"].get(note) == simdjson::SUCCESS && !note.is_string()) return invalid("media.note", "must be a string");
  Parser parser(*table);
  dom::object providers;
  if (media["providers"].get_object().get(providers) != simdjson::SUCCESS) {
    return invalid("media.providers", "must be an object of provider ids and their other names");
  }
  if (auto s = parser.providers(providers); !s.ok()) return s;
  for (const MediaKind kind : kKinds) {
    dom::element section;
    if (media[media_kind_name(kind)].get(section) != simdjson::SUCCESS) continue;
    dom::object by_provider;
    if (section.get_object().get(by_provider) != simdjson::SUCCESS) {
      return invalid(str_cat("media.", media_kind_name(kind)), "must be an object of providers");
    }
    if (auto s = parser.kind(kind, by_provider); !s.ok()) return s;
  }
  return table;
}

const MediaPrice* PriceCatalog::MediaTable::find(MediaKind kind, std::string_view provider, std::string_view model,
                                                 std::string_view tier, std::string_view resolution) const noexcept {
  const char kind_tag = kind_char(kind);
  const auto lookup = [&](std::string_view name) -> const Model* {
    Key key;  // as model_key() builds it, with the provider's name as given
    if (!key.add(std::string_view(&kind_tag, 1), false) || !key.add(provider, true) ||
        !key.add(kKeySeparator, false) || !key.add(name, true)) {
      return nullptr;
    }
    const auto it = index.find(key.view());
    return it == index.end() ? nullptr : &models[it->second];
  };
  // The name as given, then without a trailing date ("gpt-realtime-2025-08-28").
  const Model* found = lookup(model);
  if (found == nullptr) {
    const std::string_view canonical = canonical_model(model);
    if (canonical.size() != model.size()) found = lookup(canonical);
  }
  if (found == nullptr) return nullptr;

  const Tier* chosen = &found->tiers[found->default_tier];
  if (!tier.empty() && !same_name("default", tier)) {
    for (const Tier& t : found->tiers) {
      if (same_name(t.name, tier)) {
        chosen = &t;
        break;
      }
    }
  }
  if (chosen->flat != nullptr) return chosen->flat;
  if (resolution.empty()) return nullptr;
  for (const auto& [name, price] : chosen->by_resolution) {
    if (same_name(name, resolution)) return price;
  }
  return nullptr;
}

const MediaPrice* PriceCatalog::find(MediaKind kind, std::string_view provider, std::string_view model,
                                     std::string_view tier, std::string_view resolution) const noexcept {
  return media_ == nullptr ? nullptr : media_->find(kind, provider, model, tier, resolution);
}

std::size_t PriceCatalog::media_size() const noexcept { return media_ == nullptr ? 0 : media_->models.size(); }

}  // namespace paygent
