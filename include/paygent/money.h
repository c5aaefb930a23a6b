// Money and rates as exact integers.
//
// Inside Paygent money is an exact integer number of nano-USD (1e-9 USD): in parsing, caches,
// events and storage. A double appears only at the presentation edge (format_usd). Token prices
// are kept one step finer, in pico-USD (1e-12 USD) per token, so that every published price is
// exact: $0.15 per 1M tokens is 150,000 pico-USD per token; a config rate of 0.0025 USD per 1K
// tokens is 2,500,000 pico-USD per token.
//
// Thread safety: free functions, no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace paygent {

// An amount of money in nano-USD. $49.00 is 49'000'000'000.
using Nanos = std::int64_t;

inline constexpr Nanos kNanosPerUsd = 1'000'000'000;

// A price per token in pico-USD. 1'000 pico-USD = 1 nano-USD.
using PicosPerToken = std::int64_t;

// Parses a decimal USD amount ("49", "49.00", "0.000000001", "1e-3") exactly into nano-USD, with
// the same grammar as every decimal Paygent reads (plans, prices, invoices): digits on both sides
// of a point (".5" and "5." are refused), an optional exponent. Fails with InvalidArgument naming
// the problem ("\"1,000\": has a character ',' at position 1 ...") when the text is not a
// non-negative decimal, has more precision than 1 nano-USD, or does not fit in int64. Nothing is
// rounded.
absl::StatusOr<Nanos> parse_usd(std::string_view decimal);

// Parses a decimal "USD per `per_tokens` tokens" (e.g. "0.0025" per 1000) exactly into pico-USD
// per token. Fails with InvalidArgument when the result is not a whole number of pico-USD.
absl::StatusOr<PicosPerToken> parse_usd_per_tokens(std::string_view decimal, std::int64_t per_tokens);

// Cost in nano-USD of `tokens` tokens at `rate`, rounded half-up to the nearest nano-USD (the
// only rounding in Paygent, and below a billionth of a dollar per call).
[[nodiscard]] constexpr Nanos cost_of_tokens(std::int64_t tokens, PicosPerToken rate) noexcept {
  __extension__ using Wide = __int128;  // exact: tokens * rate can exceed 64 bits
  const Wide picos = static_cast<Wide>(tokens) * rate;
  return static_cast<Nanos>((picos + 500) / 1000);
}

// "$1,234.56" style text for people: rounds to cents unless `digits` asks for more.
std::string format_usd(Nanos amount, int digits = 2);

}  // namespace paygent
