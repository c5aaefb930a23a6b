// canonical_model: one name per model for prices and quotas (see include/paygent/price_catalog.h).
#include <string_view>

#include "paygent/price_catalog.h"

namespace paygent {
namespace {

bool all_digits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return !s.empty();
}

// Length of a trailing "-YYYY-MM-DD", "-YYYYMMDD" or "-latest" suffix, or 0.
std::size_t date_suffix_length(std::string_view m) {
  if (m.size() > 7 && m.substr(m.size() - 7) == "-latest") return 7;
  if (m.size() > 11) {
    std::string_view s = m.substr(m.size() - 11);  // -YYYY-MM-DD
    if (s[0] == '-' && all_digits(s.substr(1, 4)) && s[5] == '-' && all_digits(s.substr(6, 2)) &&
        s[8] == '-' && all_digits(s.substr(9, 2)))
      return 11;
  }
  if (m.size() > 9) {
    std::string_view s = m.substr(m.size() - 9);  // -YYYYMMDD
    if (s[0] == '-' && all_digits(s.substr(1)) && (s[1] == '2' || s[1] == '1')) return 9;
  }
  return 0;
}

}  // namespace

std::string_view canonical_model(std::string_view model) noexcept {
  if (const auto slash = model.rfind('/'); slash != std::string_view::npos) model.remove_prefix(slash + 1);
  model.remove_suffix(date_suffix_length(model));
  return model;
}

}  // namespace paygent
