// Gates and meters one call through the installed library; exits 0 when it all works.
#include <cstdio>

#include "paygent/paygent.h"

int main() {
  auto config = paygent::parse_plan_config(
      R"({"default_plan":"pro","plans":[{"name":"pro","max_spend_per_period":0.01,
          "cost_rates":{"gpt-4o":{"input":0.0025,"output":0.01}}}]})");
  if (!config.ok()) return 1;
  paygent::Options options;
  options.plans = *config;
  options.local_store_path = "";
  auto pg = paygent::Paygent::create(std::move(options));
  if (!pg.ok()) return 2;
  paygent::Context ctx("consumer-user");
  (*pg)->record("gpt-4o", paygent::Usage{.input_tokens = 4000, .output_tokens = 0});  // exactly $0.01
  try {
    (*pg)->check("gpt-4o");
  } catch (const paygent::LimitExceeded& e) {
    std::printf("consumer: %s\n", e.what());
    return 0;
  }
  return 3;
}
