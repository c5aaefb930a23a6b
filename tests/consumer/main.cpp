// Gates and meters calls through the installed library, written as the README and the headers'
// examples show (so that those examples are compiled against the installed package on every test
// run); exits 0 when it all works.
#include <cstdio>
#include <string>

#include "paygent/paygent.h"

namespace {
// Stands in for the application's own provider call (an OpenAI Chat Completions body).
std::string call_openai(const std::string& /*request*/) {
  return R"({"object":"chat.completion","model":"gpt-4o","choices":[],
             "usage":{"prompt_tokens":2000,"completion_tokens":300,"total_tokens":2300}})";
}
}  // namespace

int main() {
  auto config = paygent::parse_plan_config(
      R"({"default_plan":"pro","plans":[{"name":"pro","max_spend_per_period":0.01,
          "cost_rates":{"gpt-4o":{"input":0.0025,"output":0.01}}}]})");
  if (!config.ok()) return 1;
  paygent::Options options;
  options.plans = *config;
  options.local_store_path = "";
  // include/paygent/context.h's example, as written there.
  auto pg = paygent::Paygent::create(std::move(options));   // absl::StatusOr<std::unique_ptr<Paygent>>
  if (!pg.ok()) return 2;
  paygent::Context ctx("user_123", {.session_id = "chat-42"});
  const std::string request = "{}";
  (*pg)->metered_call("gpt-4o", {.prompt_tokens = 900}, [&] { return call_openai(request); });  // $0.008
  (*pg)->record("gpt-4o", paygent::Usage{.input_tokens = 800, .output_tokens = 0});             // $0.002: exactly $0.01
  try {
    (*pg)->check("gpt-4o");
  } catch (const paygent::LimitExceeded& e) {
    std::printf("consumer: %s\n", e.what());
    return 0;
  }
  return 3;
}
