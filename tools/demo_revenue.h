// `paygent demo revenue`: the revenue half of the demo (see tools/demo_revenue.cpp).
#pragma once

#include <string>

namespace paygent::tools {

// Sends the demo month's events of four agents to paygentd at `url` with product key `key` (the
// agents of scripts/demo-agents.json already applied) and checks its profit report by agent.
// 0 when every agent's cost and revenue are as expected (null where not recorded), 1 otherwise.
int run_revenue_demo(const std::string& url, const std::string& key);

}  // namespace paygent::tools
