// The dashboard's static files (server/dashboard/), compiled into paygentd by
// cmake/embed_assets.cmake: no build toolchain, nothing fetched at run time.
//
// Thread safety: constant data, readable from any thread for the life of the program.
#pragma once

#include <span>
#include <string_view>

namespace paygent::server {

struct DashboardAsset {
  std::string_view name;   // the file's name in server/dashboard/ ("app.js")
  std::string_view bytes;  // its content
};

// Every embedded file (defined in the generated dashboard_assets.cpp).
std::span<const DashboardAsset> dashboard_assets();

}  // namespace paygent::server
