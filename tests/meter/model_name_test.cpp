// canonical_model (price_catalog.h, meter/model_name.cpp).
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "paygent/price_catalog.h"

namespace paygent {
namespace {

TEST_CASE("meter.canonical_model_strips_a_trailing_date_or_latest") {
  struct Case {
    const char* model;
    const char* canonical;
  };
  const Case cases[] = {
      {"gpt-4o-2024-08-06", "gpt-4o"},
      {"gpt-4o", "gpt-4o"},
      {"gpt-4o-mini", "gpt-4o-mini"},
      {"gpt-4o-mini-2024-07-18", "gpt-4o-mini"},
      {"gpt-4.1-2025-04-14", "gpt-4.1"},
      {"o1-2024-12-17", "o1"},
      {"o3-mini-2025-01-31", "o3-mini"},
      {"gpt-5-2025-08-07", "gpt-5"},
      {"gpt-5-chat-latest", "gpt-5-chat"},
      {"claude-sonnet-4-5-20250929", "claude-sonnet-4-5"},
      {"claude-3-opus-latest", "claude-3-opus"},
      {"claude-3-opus-20240229", "claude-3-opus"},
      {"claude-3-5-haiku-20241022", "claude-3-5-haiku"},
      {"claude-haiku-4-5", "claude-haiku-4-5"},
      {"claude-opus-4-0", "claude-opus-4-0"},
      {"models/gemini-2.5-flash", "gemini-2.5-flash"},
      {"publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"},
      {"gemini-2.5-flash", "gemini-2.5-flash"},
      {"gemini-2.0-flash-001", "gemini-2.0-flash-001"},  // a version, not a date
      {"gpt-5.4", "gpt-5.4"},
      {"gpt-4-0613", "gpt-4-0613"},  // only full dates are removed
      {"latest", "latest"},
      {"-latest", "-latest"},
      {"x-latest", "x"},
      {"2024-08-06", "2024-08-06"},
      {"model-2024-8-06", "model-2024-8-06"},
      {"model-99999999", "model-99999999"},  // not a plausible YYYYMMDD
      {"", ""},
      {"models/", ""},
  };
  for (const Case& c : cases) {
    INFO("model: ", c.model);
    CHECK(canonical_model(c.model) == c.canonical);
  }
}

TEST_CASE("meter.canonical_model_views_into_its_argument") {
  const std::string model = "claude-sonnet-4-5-20250929";
  const std::string_view canonical = canonical_model(model);
  CHECK(canonical.data() == model.data());
  const std::string prefixed = "models/gemini-2.5-flash";
  CHECK(canonical_model(prefixed).data() == prefixed.data() + 7);
}

}  // namespace
}  // namespace paygent
