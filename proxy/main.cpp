// paygent-proxy: the guardrail for any language, by changing one base URL (docs/proxy.md).
//
//   paygent-proxy --listen 127.0.0.1:8787 --upstream-openai https://api.openai.com
//                 --upstream-anthropic https://api.anthropic.com --plans plans.json
//   OPENAI_BASE_URL=http://127.0.0.1:8787/v1 python app.py
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "paygent/paygent.h"
#include "paygent/plan.h"
#include "proxy/server.h"
#include "proxy/text.h"

namespace {

using paygent::proxy::str_cat;

constexpr std::string_view kUsage = R"(usage: paygent-proxy [flags]
  --listen HOST:PORT          where to serve (default 127.0.0.1:8787)
  --upstream-openai URL       e.g. https://api.openai.com (the /v1/... paths are appended)
  --upstream-anthropic URL    e.g. https://api.anthropic.com
  --upstream-gemini URL       e.g. https://generativelanguage.googleapis.com
  --plans FILE                the plan config (JSON, see include/paygent/plan.h)
  --store PATH                local store (default paygent-proxy.db; "" = memory only)
  --backend URL               paygentd (with the API key in $PAYGENT_API_KEY)
  --no-lower-max-tokens       refuse a max_tokens that does not fit instead of lowering it
  --max-body-bytes N          largest request body (default 16 MiB)
  --upstream-timeout-ms N     longest upstream silence (default 600000)
  --upstream-max-idle N       idle keep-alive connections kept per upstream (default 64; 0: none)
  --upstream-idle-timeout-ms N  close a kept connection idle longer (default 30000)
  --threads N                 threads serving the connections (default 0: one per core)
  --reuse-port                a listening socket per thread (SO_REUSEPORT), not one shared
The operator's provider keys, when set, replace the callers' (never on the command line, which
every user of the machine can read): $PAYGENT_PROXY_OPENAI_API_KEY, $PAYGENT_PROXY_ANTHROPIC_API_KEY,
$PAYGENT_PROXY_GEMINI_API_KEY.
)";

int fail(std::string_view message) {
  std::cerr << "paygent-proxy: " << message << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  paygent::proxy::ProxyOptions proxy;
  paygent::Options options;
  options.local_store_path = "paygent-proxy.db";
  std::string plans_file;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    auto value = [&](std::string& into) {
      if (i + 1 >= argc) return false;
      into = argv[++i];
      return true;
    };
    std::string text;
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (flag == "--reuse-port") {
      proxy.reuse_port = true;
    } else if (flag == "--no-lower-max-tokens") {
      proxy.lower_max_tokens = false;
    } else if (!value(text)) {
      return fail(str_cat(flag, ": unknown flag or missing value"));
    } else if (flag == "--listen") {
      const std::size_t colon = text.rfind(':');
      if (colon == std::string::npos || !absl::SimpleAtoi(text.substr(colon + 1), &proxy.listen_port) ||
          proxy.listen_port < 0 || proxy.listen_port > 65535) {
        return fail("--listen: expected HOST:PORT");
      }
      proxy.listen_host = text.substr(0, colon);
    } else if (flag == "--upstream-openai") {
      proxy.upstream_openai = text;
    } else if (flag == "--upstream-anthropic") {
      proxy.upstream_anthropic = text;
    } else if (flag == "--upstream-gemini") {
      proxy.upstream_gemini = text;
    } else if (flag == "--plans") {
      plans_file = text;
    } else if (flag == "--store") {
      options.local_store_path = text;
    } else if (flag == "--backend") {
      options.backend_url = text;
      const char* key = std::getenv("PAYGENT_API_KEY");
      if (key == nullptr || *key == '\0') return fail("--backend: set the API key in $PAYGENT_API_KEY");
      options.api_key = key;
    } else if (flag == "--max-body-bytes") {
      if (!absl::SimpleAtoi(text, &proxy.max_body_bytes) || proxy.max_body_bytes == 0) {
        return fail("--max-body-bytes: expected a positive integer");
      }
    } else if (flag == "--upstream-timeout-ms") {
      int ms = 0;
      if (!absl::SimpleAtoi(text, &ms) || ms <= 0) return fail("--upstream-timeout-ms: expected a positive integer");
      proxy.upstream_timeout = absl::Milliseconds(ms);
    } else if (flag == "--upstream-max-idle") {
      if (!absl::SimpleAtoi(text, &proxy.upstream_max_idle) || proxy.upstream_max_idle < 0) {
        return fail("--upstream-max-idle: expected a non-negative integer");
      }
    } else if (flag == "--upstream-idle-timeout-ms") {
      int ms = 0;
      if (!absl::SimpleAtoi(text, &ms) || ms <= 0) return fail("--upstream-idle-timeout-ms: expected a positive integer");
      proxy.upstream_idle_timeout = absl::Milliseconds(ms);
    } else if (flag == "--threads") {
      if (!absl::SimpleAtoi(text, &proxy.threads) || proxy.threads < 0 || proxy.threads > 1024) {
        return fail("--threads: expected an integer from 0 (one per core) to 1024");
      }
    } else {
      return fail(str_cat(flag, ": unknown flag"));
    }
  }
  for (auto [name, into] : {std::pair{"PAYGENT_PROXY_OPENAI_API_KEY", &proxy.openai_api_key},
                            std::pair{"PAYGENT_PROXY_ANTHROPIC_API_KEY", &proxy.anthropic_api_key},
                            std::pair{"PAYGENT_PROXY_GEMINI_API_KEY", &proxy.gemini_api_key}}) {
    if (const char* key = std::getenv(name); key != nullptr) *into = key;
  }
  if (!plans_file.empty()) {
    std::ifstream in(plans_file);
    if (!in) return fail(str_cat("--plans: cannot read ", plans_file));
    std::stringstream json;
    json << in.rdbuf();
    auto plans = paygent::parse_plan_config(json.str());
    if (!plans.ok()) return fail(str_cat("--plans ", plans_file, ": ", plans.status().message()));
    options.plans = *std::move(plans);
  }
  options.on_error = [](const absl::Status& status) { std::cerr << "paygent: " << status.message() << "\n"; };

  // Block the stop signals before any thread starts, so that only sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto pg = paygent::Paygent::create(paygent::proxy::proxy_paygent_options(std::move(options)));
  if (!pg.ok()) {
    // Fail-open: the proxy still forwards, unmetered.
    std::cerr << "paygent-proxy: paygent disabled, forwarding unmetered: " << pg.status().message() << "\n";
  }
  auto server = paygent::proxy::ProxyServer::start(proxy, pg.ok() ? pg->get() : nullptr);
  if (!server.ok()) return fail(str_cat(server.status().message()));
  std::cout << "paygent-proxy listening on " << proxy.listen_host << ":" << (*server)->port() << std::endl;
  int signal = 0;
  sigwait(&signals, &signal);
  (*server)->stop();
  return 0;
}
