// The storage-neutral logic (see server/storage_logic.h).
#include "server/storage_logic.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/time/civil_time.h"
#include "meter/internal/json_text.h"
#include "meter/internal/str_cat.h"

namespace paygent::server::storage_internal {
namespace {

using ::paygent::internal::json_quote;
using ::paygent::internal::str_cat;

// The quantities of one event against a product's all-time totals, in the order an overflow is
// reported.
struct Quantity {
  std::string_view field;  // the event's field, as the wire names it
  std::int64_t Totals::*total;
  std::int64_t EventRecord::*value;  // nullptr: calls (1 per event)
};
constexpr Quantity kQuantities[] = {
    {"input_tokens", &Totals::input_tokens, &EventRecord::input_tokens},
    {"output_tokens", &Totals::output_tokens, &EventRecord::output_tokens},
    {"cached_input_tokens", &Totals::cached_input_tokens, &EventRecord::cached_input_tokens},
    {"cache_creation_input_tokens", &Totals::cache_creation_input_tokens, &EventRecord::cache_creation_input_tokens},
    {"reasoning_tokens", &Totals::reasoning_tokens, &EventRecord::reasoning_tokens},
    {"cost_nanos", &Totals::cost_nanos, &EventRecord::cost_nanos},
    {"", &Totals::calls, nullptr},
};

}  // namespace

bool add_totals(Totals& into, const Totals& t) {
  return add_checked(into.calls, t.calls) && add_checked(into.input_tokens, t.input_tokens) &&
         add_checked(into.output_tokens, t.output_tokens) &&
         add_checked(into.cached_input_tokens, t.cached_input_tokens) &&
         add_checked(into.cache_creation_input_tokens, t.cache_creation_input_tokens) &&
         add_checked(into.reasoning_tokens, t.reasoning_tokens) && add_checked(into.cost_nanos, t.cost_nanos);
}

Totals totals_of(const EventRecord& e) {
  return Totals{.calls = 1,
                .input_tokens = e.input_tokens,
                .output_tokens = e.output_tokens,
                .cached_input_tokens = e.cached_input_tokens,
                .cache_creation_input_tokens = e.cache_creation_input_tokens,
                .reasoning_tokens = e.reasoning_tokens,
                .cost_nanos = e.cost_nanos};
}

absl::Status add_to_product_totals(Totals& totals, const EventRecord& e, std::size_t index) {
  Totals sum = totals;
  for (const Quantity& q : kQuantities) {
    if (add_checked(sum.*q.total, q.value != nullptr ? e.*q.value : 1)) continue;
    const bool money = q.total == &Totals::cost_nanos;
    return absl::InvalidArgumentError(str_cat(
        "events[", index, "]", q.field.empty() ? "" : ".", q.field, ": this event of user ", json_quote(e.user_id),
        " would take the product's total ", q.field.empty() ? "calls" : q.field, " past the largest ",
        money ? "amount (9223372036854775807 nano-USD)" : "count (9223372036854775807)",
        "; every total paygentd keeps must fit in 64 bits"));
  }
  totals = sum;
  return absl::OkStatus();
}

void add_saturating(Totals& totals, const Totals& row) {
  for (const Quantity& q : kQuantities) {
    if (!add_checked(totals.*q.total, row.*q.total)) totals.*q.total = INT64_MAX;
  }
}

DaySplit split_days(std::int64_t from_ns, std::int64_t to_ns) {
  const std::int64_t first_day = ceil_div(from_ns, kNanosPerDay);
  const std::int64_t end_day = floor_div(to_ns, kNanosPerDay);
  if (first_day >= end_day) {
    return {.first_day = 0, .end_day = 0, .head = {from_ns, to_ns}, .tail = {to_ns, to_ns}};
  }
  return {.first_day = first_day,
          .end_day = end_day,
          .head = {from_ns, first_day * kNanosPerDay},
          .tail = {end_day * kNanosPerDay, to_ns}};
}

std::string day_key(std::int64_t day, ReportGroup group) {
  const absl::CivilDay civil = absl::CivilDay(1970, 1, 1) + day;
  if (group == ReportGroup::kMonth) return absl::FormatCivilTime(absl::CivilMonth(civil));
  return absl::FormatCivilTime(civil);
}

bool decode_event_id(std::string_view id, EventId& out) {
  if (id.size() != 32) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < 16; ++i) {
    const int hi = nibble(id[2 * i]);
    const int lo = nibble(id[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

std::int64_t user_lock_key(std::int64_t product, std::string_view user_id) {
  std::uint64_t h = 14695981039346656037ULL;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ULL;
  };
  for (int i = 0; i < 8; ++i) mix(static_cast<unsigned char>(static_cast<std::uint64_t>(product) >> (8 * i)));
  for (char c : user_id) mix(static_cast<unsigned char>(c));
  return static_cast<std::int64_t>(h);
}

}  // namespace paygent::server::storage_internal
