// Private to meter/: the speech and video part of a PriceCatalog (media_prices.cpp), kept apart
// from the LLM table so that the LLM look-up stays what it was.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "paygent/media_price.h"
#include "paygent/price_catalog.h"
#include "simdjson.h"

namespace paygent {

struct PriceCatalog::MediaTable {
  // One pricing tier of a model: a single price, or (video) one per resolution.
  struct Tier {
    std::string_view name;  // normalised (the price's own `tier` is as written in the data)
    const MediaPrice* flat = nullptr;
    std::vector<std::pair<std::string_view, const MediaPrice*>> by_resolution;  // normalised name
  };
  struct Model {
    std::vector<Tier> tiers;
    std::size_t default_tier = 0;
  };

  // Normalised provider id or other name -> provider id (the data file's checks use it).
  absl::flat_hash_map<std::string, std::string_view> providers;
  // Key (see media_prices.cpp: kind, normalised provider id or other name, separator, normalised
  // model name or alias) -> models index: one hash look-up finds a model by any of its names.
  absl::flat_hash_map<std::string, std::size_t> index;
  std::vector<Model> models;
  // Stable storage for the prices and the strings their views point into.
  std::deque<MediaPrice> prices;
  std::deque<std::string> strings;

  class Parser;  // media_prices.cpp

  // Parses the "media" section of a catalog. InvalidArgument names the entry and field.
  static absl::StatusOr<std::unique_ptr<MediaTable>> parse(simdjson::dom::object media);

  [[nodiscard]] const MediaPrice* find(MediaKind kind, std::string_view provider, std::string_view model,
                                       std::string_view tier, std::string_view resolution) const noexcept;
};

}  // namespace paygent
