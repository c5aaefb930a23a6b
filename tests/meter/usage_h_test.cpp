// include/paygent/usage.h stands alone: it is the first include of this file.
#include "paygent/usage.h"

#include <doctest/doctest.h>

TEST_CASE("meter.usage_h_is_self_contained") {
  paygent::Usage usage;
  usage.input_tokens = 3;
  usage.output_tokens = 4;
  CHECK(usage.total_tokens() == 7);
  CHECK(paygent::provider_name(paygent::Provider::kOpenAI) == "openai");
  CHECK(paygent::provider_name(paygent::Provider::kAnthropic) == "anthropic");
  CHECK(paygent::provider_name(paygent::Provider::kGemini) == "google");
  CHECK(paygent::provider_name(paygent::Provider::kUnknown) == "unknown");
}
