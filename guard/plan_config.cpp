// Plan config: parsing, validation and serialisation (see include/paygent/plan.h).
//
// Parsing runs in two passes over the (small) document:
//   1. simdjson's DOM parser checks that the text is well-formed JSON, so that a syntax error is
//      always reported as "(root): not valid JSON: ..." wherever it is;
//   2. an ondemand pass walks the document in order, reads every number from its raw JSON text
//      (never through a double) and builds the config, naming the field path of any error.
// Cross-field rules (thresholds against hard_gate_at, default_plan against the plan names) are
// checked once the whole document has been read, since JSON fields may come in any order.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "billing/decimal.h"
#include "meter/internal/str_cat.h"
#include "paygent/money.h"
#include "paygent/plan.h"
#include "paygent/price_catalog.h"
#include "simdjson.h"

namespace paygent {
namespace {

namespace ondemand = simdjson::ondemand;
using ondemand::json_type;

// Exact intermediates (GCC/Clang extension, hence __extension__ for -Wpedantic).
__extension__ using Int128 = __int128;
__extension__ using UInt128 = unsigned __int128;

constexpr std::int64_t kInt64Max = INT64_MAX;
// Rates in cost_rates are USD per this many tokens.
constexpr std::int64_t kRateTokens = 1000;

// ---------------------------------------------------------------------------------------------
// Exact decimal arithmetic on JSON number tokens.

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Whether `token` follows the JSON number grammar exactly (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?):
// the one check JSON adds to the decimal module's grammar (no leading zeros, no '+').
bool valid_json_number(std::string_view token) {
  std::size_t i = 0;
  if (i < token.size() && token[i] == '-') ++i;
  if (i >= token.size() || !is_digit(token[i])) return false;
  if (token[i] == '0') {
    ++i;
  } else {
    while (i < token.size() && is_digit(token[i])) ++i;
  }
  if (i < token.size() && token[i] == '.') {
    ++i;
    if (i >= token.size() || !is_digit(token[i])) return false;
    while (i < token.size() && is_digit(token[i])) ++i;
  }
  if (i < token.size() && (token[i] == 'e' || token[i] == 'E')) {
    ++i;
    if (i < token.size() && (token[i] == '+' || token[i] == '-')) ++i;
    if (i >= token.size() || !is_digit(token[i])) return false;
    while (i < token.size() && is_digit(token[i])) ++i;
  }
  return i == token.size();
}

// A JSON number's value, from the one decimal module (billing/decimal.h): exact, or cut to 18
// decimal places (`cut`: only a value that is rounded may use it), or too large to hold (`!fits`).
struct JsonNumber {
  billing::Decimal value;
  bool negative = false;
  bool fits = true;
  bool cut = false;
  // Below zero ("-0" is not).
  [[nodiscard]] bool negative_nonzero() const { return negative && (!fits || cut || !value.is_zero()); }
};

enum class Scaling { kOk, kTooLarge, kTooPrecise };

// Sets *out to |n| * multiplier * 10^scale. With `round` false the result must be exact (else
// kTooPrecise); with `round` true it is rounded half-up. kTooLarge when it exceeds int64.
// *out is unchanged on failure. `multiplier` must be in [1, 9].
Scaling scale_number(const JsonNumber& n, int scale, int multiplier, bool round, std::int64_t* out) {
  if (!n.fits) return Scaling::kTooLarge;
  if (n.cut && !round) return Scaling::kTooPrecise;
  const billing::Decimal magnitude = n.negative ? *billing::Decimal::sub(billing::Decimal(), n.value) : n.value;
  absl::StatusOr<billing::Decimal> times = billing::Decimal::mul(magnitude, billing::Decimal::from_int(multiplier));
  if (!times.ok()) return Scaling::kTooLarge;
  absl::StatusOr<std::int64_t> scaled =
      round ? times->to_scaled(scale, billing::RoundingMode::kRound) : times->to_scaled_exact(scale);
  if (!scaled.ok()) return absl::IsOutOfRange(scaled.status()) ? Scaling::kTooLarge : Scaling::kTooPrecise;
  *out = *scaled;
  return Scaling::kOk;
}

// `value` / 10^decimals as the shortest exact decimal ("49", "0.0025", "-1.5").
std::string exact_decimal(Int128 value, int decimals);

// ---------------------------------------------------------------------------------------------
// Field paths and errors.

// "(root)" for the document itself, else the dotted path as built by field_path / index_path.
std::string_view display(std::string_view path) { return path.empty() ? "(root)" : path; }

std::string field_path(std::string_view parent, std::string_view key) {
  return parent.empty() ? std::string(key) : internal::str_cat(parent, ".", key);
}

std::string index_path(std::string_view parent, std::size_t index) {
  return internal::str_cat(parent, "[", index, "]");
}

// The one error type of this file: InvalidArgument "<path>: <what>".
absl::Status field_error(std::string_view path, std::string_view what) {
  return absl::InvalidArgumentError(internal::str_cat(display(path), ": ", what));
}

// The message of `status` (absl::string_view is not std::string_view in Debian's abseil).
std::string_view message_of(const absl::Status& status) {
  return {status.message().data(), status.message().size()};
}

absl::Status json_error(std::string_view path, simdjson::error_code code) {
  return field_error(path, internal::str_cat("not valid JSON: ", simdjson::error_message(code)));
}

// A threshold as written, with the path to blame if it turns out to be out of range.
struct RawThreshold {
  Ppm value;
  std::string path;
};

// ---------------------------------------------------------------------------------------------
// The ondemand reader. Every function reads one value at `path` and returns an error naming
// `path` (or a field below it) when the value is not what the format allows. Outputs are written
// only on success.

absl::StatusOr<json_type> type_of(ondemand::value& value, std::string_view path) {
  json_type type;
  if (auto error = value.type().get(type)) return json_error(path, error);
  return type;
}

// The raw text of a number value, without the whitespace simdjson keeps after it.
std::string_view number_token(ondemand::value& value) {
  std::string_view token = value.raw_json_token();
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t' || token.back() == '\n' ||
                            token.back() == '\r')) {
    token.remove_suffix(1);
  }
  return token;
}

// Reads a JSON number as an exact JsonNumber; `what` is the error text for a non-number.
absl::StatusOr<JsonNumber> read_number(ondemand::value& value, std::string_view path, std::string_view what) {
  absl::StatusOr<json_type> type = type_of(value, path);
  if (!type.ok()) return type.status();
  if (*type != json_type::number) return field_error(path, what);
  const std::string_view token = number_token(value);
  if (!valid_json_number(token)) return field_error(path, internal::str_cat("not valid JSON: bad number \"", token, "\""));
  JsonNumber number;
  number.negative = token.front() == '-';
  absl::StatusOr<billing::Decimal> parsed = billing::Decimal::parse(token, {.allow_exponent = true});
  if (!parsed.ok()) {  // more than 18 decimal places, or 38 digits: too precise unless cutting fails too
    parsed = billing::Decimal::parse(token, {.allow_exponent = true, .truncate_past_max_scale = true});
    number.cut = true;
  }
  if (parsed.ok()) {
    number.value = *parsed;
  } else {
    number.fits = false;  // more than 38 digits
  }
  return number;
}

// Reads a non-negative USD amount exactly (parse_usd), into nano-USD.
absl::StatusOr<Nanos> read_usd(ondemand::value& value, std::string_view path, std::string_view what) {
  absl::StatusOr<JsonNumber> number = read_number(value, path, what);
  if (!number.ok()) return number.status();
  if (number->negative_nonzero()) return field_error(path, what);
  std::string_view token = number_token(value);
  if (token.front() == '-') token.remove_prefix(1);  // -0
  absl::StatusOr<Nanos> nanos = parse_usd(token);
  if (!nanos.ok()) return field_error(path, message_of(nanos.status()));
  return *nanos;
}

// Reads a non-negative rate in USD per 1K tokens exactly, into pico-USD per token.
absl::StatusOr<PicosPerToken> read_rate(ondemand::value& value, std::string_view path) {
  constexpr std::string_view kWhat = "must be a non-negative number (USD per 1K tokens)";
  absl::StatusOr<JsonNumber> number = read_number(value, path, kWhat);
  if (!number.ok()) return number.status();
  if (number->negative_nonzero()) return field_error(path, kWhat);
  std::string_view token = number_token(value);
  if (token.front() == '-') token.remove_prefix(1);  // -0
  absl::StatusOr<PicosPerToken> rate = parse_usd_per_tokens(token, kRateTokens);
  if (!rate.ok()) return field_error(path, message_of(rate.status()));
  return *rate;
}

// Reads a ratio exactly into ppm (signed: range checks are the caller's).
absl::StatusOr<Ppm> read_ratio(ondemand::value& value, std::string_view path, std::string_view what) {
  absl::StatusOr<JsonNumber> number = read_number(value, path, what);
  if (!number.ok()) return number.status();
  std::int64_t ppm = 0;
  switch (scale_number(*number, 6, 1, /*round=*/false, &ppm)) {
    case Scaling::kOk:
      break;
    case Scaling::kTooLarge:
      return field_error(path, "is too large");
    case Scaling::kTooPrecise:
      return field_error(path, "has more precision than 1 ppm (0.000001)");
  }
  return number->negative ? -ppm : ppm;
}

// Reads a non-negative integer (an integral value such as 5e4 or 50000.0 is accepted too).
absl::StatusOr<std::int64_t> read_count(ondemand::value& value, std::string_view path) {
  constexpr std::string_view kWhat = "must be a non-negative integer";
  absl::StatusOr<JsonNumber> number = read_number(value, path, kWhat);
  if (!number.ok()) return number.status();
  if (number->negative_nonzero()) return field_error(path, kWhat);
  std::int64_t count = 0;
  switch (scale_number(*number, 0, 1, /*round=*/false, &count)) {
    case Scaling::kOk:
      break;
    case Scaling::kTooLarge:
      return field_error(path, internal::str_cat(kWhat, " (at most ", kInt64Max, ")"));
    case Scaling::kTooPrecise:
      return field_error(path, kWhat);
  }
  return count;
}

// Reads a positive number of minutes into a Duration, rounded half-up to the nanosecond (digits
// past 18 decimal places of a minute, under 0.0000001 ns, are dropped first).
absl::StatusOr<absl::Duration> read_minutes(ondemand::value& value, std::string_view path) {
  constexpr std::string_view kWhat = "must be a positive number";
  absl::StatusOr<JsonNumber> number = read_number(value, path, kWhat);
  if (!number.ok()) return number.status();
  if (number->negative) return field_error(path, kWhat);
  std::int64_t nanos = 0;
  // minutes * 6 * 10^10 = nanoseconds.
  switch (scale_number(*number, 10, 6, /*round=*/true, &nanos)) {
    case Scaling::kOk:
      break;
    case Scaling::kTooLarge:
      return field_error(path, "is too large");
    case Scaling::kTooPrecise:  // not produced when rounding
      break;
  }
  if (nanos <= 0) return field_error(path, kWhat);
  return absl::Nanoseconds(nanos);
}

// Reads a string value; `what` is the error text for a non-string.
absl::StatusOr<std::string> read_string(ondemand::value& value, std::string_view path, std::string_view what) {
  absl::StatusOr<json_type> type = type_of(value, path);
  if (!type.ok()) return type.status();
  if (*type != json_type::string) return field_error(path, what);
  std::string_view text;
  if (auto error = value.get_string().get(text)) return json_error(path, error);
  return std::string(text);
}

// True when `value` is JSON null (pass 1 has checked that an "n..." atom is exactly null).
absl::StatusOr<bool> is_null(ondemand::value& value, std::string_view path) {
  absl::StatusOr<json_type> type = type_of(value, path);
  if (!type.ok()) return type.status();
  return *type == json_type::null;
}

// Calls `on_field(key, value, key_path)` for every field of the object `value` at `path`, in
// order, stopping at the first error. Rejects a non-object with `what`, and a key that appears
// twice. `on_field` rejects unknown keys itself.
template <typename OnField>
absl::Status for_each_field(ondemand::value& value, std::string_view path, std::string_view what,
                            OnField&& on_field) {
  absl::StatusOr<json_type> type = type_of(value, path);
  if (!type.ok()) return type.status();
  if (*type != json_type::object) return field_error(path, what);
  ondemand::object object;
  if (auto error = value.get_object().get(object)) return json_error(path, error);
  std::set<std::string, std::less<>> seen;
  for (auto field_result : object) {
    ondemand::field field;
    if (auto error = std::move(field_result).get(field)) return json_error(path, error);
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) return json_error(path, error);
    std::string key_path = field_path(path, key);
    if (!seen.emplace(key).second) return field_error(key_path, "duplicate field");
    if (absl::Status status = on_field(key, field.value(), key_path); !status.ok()) return status;
  }
  return absl::OkStatus();
}

// Calls `on_element(value, element_path)` for every element of the array `value` at `path`.
// Rejects a non-array with `what`.
template <typename OnElement>
absl::Status for_each_element(ondemand::value& value, std::string_view path, std::string_view what,
                              OnElement&& on_element) {
  absl::StatusOr<json_type> type = type_of(value, path);
  if (!type.ok()) return type.status();
  if (*type != json_type::array) return field_error(path, what);
  ondemand::array array;
  if (auto error = value.get_array().get(array)) return json_error(path, error);
  std::size_t index = 0;
  for (auto element_result : array) {
    ondemand::value element;
    if (auto error = std::move(element_result).get(element)) return json_error(path, error);
    if (absl::Status status = on_element(element, index_path(path, index)); !status.ok()) return status;
    ++index;
  }
  return absl::OkStatus();
}

// Reads soft_gate_at, a number or an array of numbers, into *out with the path of each. Ranges
// are checked later, against hard_gate_at. `allow_empty` permits "[]".
absl::Status read_thresholds(ondemand::value& value, std::string_view path, bool allow_empty,
                             std::vector<RawThreshold>* out) {
  constexpr std::string_view kWhat = "must be a number or an array of numbers";
  absl::StatusOr<json_type> type = type_of(value, path);
  if (!type.ok()) return type.status();
  std::vector<RawThreshold> thresholds;
  if (*type == json_type::array) {
    absl::Status status = for_each_element(value, path, kWhat, [&](ondemand::value& element,
                                                                   const std::string& element_path) {
      absl::StatusOr<Ppm> ppm = read_ratio(element, element_path, "must be a number");
      if (!ppm.ok()) return ppm.status();
      thresholds.push_back({*ppm, element_path});
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    if (thresholds.empty() && !allow_empty) {
      return field_error(path, "must not be empty (omit it to use the config's soft_gate_at)");
    }
  } else {
    absl::StatusOr<Ppm> ppm = read_ratio(value, path, kWhat);
    if (!ppm.ok()) return ppm.status();
    thresholds.push_back({*ppm, std::string(path)});
  }
  *out = std::move(thresholds);
  return absl::OkStatus();
}

// Checks each threshold against (0, hard_gate_at] and returns them ascending without duplicates.
absl::StatusOr<std::vector<Ppm>> validate_thresholds(const std::vector<RawThreshold>& raw, Ppm hard_gate_at) {
  std::vector<Ppm> thresholds;
  thresholds.reserve(raw.size());
  for (const RawThreshold& t : raw) {
    if (t.value <= 0 || t.value > hard_gate_at) return field_error(t.path, "must be in (0, hard_gate_at]");
    thresholds.push_back(t.value);
  }
  std::sort(thresholds.begin(), thresholds.end());
  thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
  return thresholds;
}

// Reads model_limits: model name -> {"max_tokens_per_period": integer or null}, keyed by
// canonical model name; two keys naming the same canonical model are an error.
absl::Status read_model_limits(ondemand::value& value, std::string_view path,
                               std::map<std::string, ModelLimit, std::less<>>* out) {
  std::map<std::string, ModelLimit, std::less<>> limits;
  std::map<std::string, std::string, std::less<>> written_as;  // canonical -> key as written
  absl::Status status = for_each_field(value, path, "must be an object of model name to limits",
                                       [&](std::string_view key, ondemand::value& entry,
                                           const std::string& entry_path) {
    const std::string model(canonical_model(key));
    if (model.empty()) return field_error(entry_path, "must be a model name");
    if (auto it = written_as.find(model); it != written_as.end()) {
      return field_error(entry_path, internal::str_cat("same model as \"", it->second, "\" (both are \"", model, "\")"));
    }
    ModelLimit limit;
    absl::Status entry_status = for_each_field(entry, entry_path, "must be an object",
                                               [&](std::string_view field, ondemand::value& v,
                                                   const std::string& limit_path) {
      if (field != "max_tokens_per_period") return field_error(limit_path, "unknown field");
      absl::StatusOr<bool> null = is_null(v, limit_path);
      if (!null.ok()) return null.status();
      if (*null) return absl::OkStatus();
      absl::StatusOr<std::int64_t> tokens = read_count(v, limit_path);
      if (!tokens.ok()) return tokens.status();
      limit.max_tokens_per_period = *tokens;
      return absl::OkStatus();
    });
    if (!entry_status.ok()) return entry_status;
    written_as.emplace(model, key);
    limits.emplace(model, limit);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  *out = std::move(limits);
  return absl::OkStatus();
}

// Reads cost_rates: model name -> {"input": n, "output": n, "cached_input": n, "cache_write": n}
// in USD per 1K tokens (input and output required), keyed by canonical model name; two keys
// naming the same canonical model are an error.
absl::Status read_cost_rates(ondemand::value& value, std::string_view path,
                             std::map<std::string, CostRate, std::less<>>* out) {
  std::map<std::string, CostRate, std::less<>> rates;
  std::map<std::string, std::string, std::less<>> written_as;  // canonical -> key as written
  absl::Status status = for_each_field(value, path, "must be an object of model name to rates",
                                       [&](std::string_view key, ondemand::value& entry,
                                           const std::string& entry_path) {
    const std::string model(canonical_model(key));
    if (model.empty()) return field_error(entry_path, "must be a model name");
    if (auto it = written_as.find(model); it != written_as.end()) {
      return field_error(entry_path, internal::str_cat("same model as \"", it->second, "\" (both are \"", model, "\")"));
    }
    std::optional<PicosPerToken> input;
    std::optional<PicosPerToken> output;
    CostRate rate;
    absl::Status entry_status = for_each_field(entry, entry_path, "must be an object with input and output",
                                               [&](std::string_view field, ondemand::value& v,
                                                   const std::string& rate_path) {
      std::optional<PicosPerToken>* target = nullptr;
      if (field == "input") {
        target = &input;
      } else if (field == "output") {
        target = &output;
      } else if (field == "cached_input") {
        target = &rate.cached_input;
      } else if (field == "cache_write") {
        target = &rate.cache_write;
      } else {
        return field_error(rate_path, "unknown field");
      }
      absl::StatusOr<PicosPerToken> rate = read_rate(v, rate_path);
      if (!rate.ok()) return rate.status();
      *target = *rate;
      return absl::OkStatus();
    });
    if (!entry_status.ok()) return entry_status;
    if (!input) return field_error(field_path(entry_path, "input"), "required");
    if (!output) return field_error(field_path(entry_path, "output"), "required");
    written_as.emplace(model, key);
    rate.input = *input;
    rate.output = *output;
    rates.emplace(model, rate);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  *out = std::move(rates);
  return absl::OkStatus();
}

// Reads an optional USD limit: null means unlimited.
absl::Status read_limit(ondemand::value& value, std::string_view path, std::optional<Nanos>* out) {
  absl::StatusOr<bool> null = is_null(value, path);
  if (!null.ok()) return null.status();
  if (*null) {
    out->reset();
    return absl::OkStatus();
  }
  absl::StatusOr<Nanos> nanos = read_usd(value, path, "must be a non-negative number or null");
  if (!nanos.ok()) return nanos.status();
  *out = *nanos;
  return absl::OkStatus();
}

// Reads one plan into *out and its own soft_gate_at, unchecked, into *soft_gate_at (left empty
// when the plan has none).
absl::Status read_plan(ondemand::value& value, std::string_view path, Plan* out,
                       std::vector<RawThreshold>* soft_gate_at) {
  Plan plan;
  bool has_name = false;
  absl::Status status = for_each_field(value, path, "must be an object",
                                       [&](std::string_view key, ondemand::value& v,
                                           const std::string& key_path) -> absl::Status {
    if (key == "name") {
      absl::StatusOr<std::string> name = read_string(v, key_path, "must be a non-empty string");
      if (!name.ok()) return name.status();
      if (name->empty()) return field_error(key_path, "must be a non-empty string");
      plan.name = *std::move(name);
      has_name = true;
      return absl::OkStatus();
    }
    if (key == "price") return read_limit(v, key_path, &plan.price);
    if (key == "max_spend_per_period") return read_limit(v, key_path, &plan.max_spend_per_period);
    if (key == "max_spend_per_session") return read_limit(v, key_path, &plan.max_spend_per_session);
    if (key == "model_limits") return read_model_limits(v, key_path, &plan.model_limits);
    if (key == "cost_rates") return read_cost_rates(v, key_path, &plan.cost_rates);
    if (key == "session_timeout_minutes") {
      absl::StatusOr<absl::Duration> timeout = read_minutes(v, key_path);
      if (!timeout.ok()) return timeout.status();
      plan.session_timeout = *timeout;
      return absl::OkStatus();
    }
    if (key == "period") {
      constexpr std::string_view kWhat = R"(must be "month", "week" or "day")";
      absl::StatusOr<std::string> rule = read_string(v, key_path, kWhat);
      if (!rule.ok()) return rule.status();
      if (*rule == "month") {
        plan.period = PeriodRule::kMonth;
      } else if (*rule == "week") {
        plan.period = PeriodRule::kWeek;
      } else if (*rule == "day") {
        plan.period = PeriodRule::kDay;
      } else {
        return field_error(key_path, kWhat);
      }
      return absl::OkStatus();
    }
    if (key == "soft_gate_at") return read_thresholds(v, key_path, /*allow_empty=*/false, soft_gate_at);
    return field_error(key_path, "unknown field");
  });
  if (!status.ok()) return status;
  if (!has_name) return field_error(field_path(path, "name"), "required");
  *out = std::move(plan);
  return absl::OkStatus();
}

// The second pass: reads the already well-formed document `padded` into *out.
absl::Status read_config(const simdjson::padded_string& padded, PlanConfig* out) {
  ondemand::parser parser;
  ondemand::document document;
  if (auto error = parser.iterate(padded).get(document)) return json_error("", error);
  json_type root_type;
  if (auto error = document.type().get(root_type)) return json_error("", error);
  if (root_type != json_type::object) return field_error("", "must be an object");
  ondemand::value root;
  if (auto error = document.get_value().get(root)) return json_error("", error);

  PlanConfig config;
  std::optional<std::vector<RawThreshold>> soft_gate_at;  // nullopt = not written
  std::vector<std::vector<RawThreshold>> plan_soft_gate_at;
  bool has_plans = false;
  std::optional<std::string> default_plan;
  absl::Status status = for_each_field(root, "", "must be an object",
                                       [&](std::string_view key, ondemand::value& v,
                                           const std::string& key_path) -> absl::Status {
    if (key == "soft_gate_at") {
      soft_gate_at.emplace();
      return read_thresholds(v, key_path, /*allow_empty=*/true, &*soft_gate_at);
    }
    if (key == "hard_gate_at") {
      absl::StatusOr<Ppm> hard = read_ratio(v, key_path, "must be a positive number");
      if (!hard.ok()) return hard.status();
      if (*hard <= 0) return field_error(key_path, "must be a positive number");
      config.hard_gate_at = *hard;
      return absl::OkStatus();
    }
    if (key == "default_plan") {
      absl::StatusOr<bool> null = is_null(v, key_path);
      if (!null.ok()) return null.status();
      if (*null) {
        default_plan.reset();
        return absl::OkStatus();
      }
      absl::StatusOr<std::string> name = read_string(v, key_path, "must be a plan name or null");
      if (!name.ok()) return name.status();
      default_plan = *std::move(name);
      return absl::OkStatus();
    }
    if (key == "plans") {
      has_plans = true;
      constexpr std::string_view kWhat = "must be a non-empty array of plans";
      absl::Status plans_status = for_each_element(v, key_path, kWhat, [&](ondemand::value& element,
                                                                           const std::string& element_path) {
        Plan plan;
        std::vector<RawThreshold> thresholds;
        if (absl::Status s = read_plan(element, element_path, &plan, &thresholds); !s.ok()) return s;
        if (config.find(plan.name) != nullptr) {
          return field_error(field_path(element_path, "name"),
                             internal::str_cat("duplicate plan name \"", plan.name, "\""));
        }
        config.plans.push_back(std::move(plan));
        plan_soft_gate_at.push_back(std::move(thresholds));
        return absl::OkStatus();
      });
      if (!plans_status.ok()) return plans_status;
      if (config.plans.empty()) return field_error(key_path, kWhat);
      return absl::OkStatus();
    }
    return field_error(key_path, "unknown field");
  });
  if (!status.ok()) return status;
  if (!has_plans) return field_error("plans", "required");

  // Cross-field rules, now that every field has been read.
  if (soft_gate_at) {
    absl::StatusOr<std::vector<Ppm>> thresholds = validate_thresholds(*soft_gate_at, config.hard_gate_at);
    if (!thresholds.ok()) return thresholds.status();
    config.soft_gate_at = *std::move(thresholds);
  } else {
    for (Ppm t : config.soft_gate_at) {
      if (t > config.hard_gate_at) {
        return field_error("soft_gate_at", internal::str_cat("the default ", exact_decimal(t, 6),
                                                             " is above hard_gate_at; set soft_gate_at"));
      }
    }
  }
  for (std::size_t i = 0; i < config.plans.size(); ++i) {
    absl::StatusOr<std::vector<Ppm>> thresholds = validate_thresholds(plan_soft_gate_at[i], config.hard_gate_at);
    if (!thresholds.ok()) return thresholds.status();
    config.plans[i].soft_gate_at = *std::move(thresholds);
  }
  if (default_plan) {
    if (config.find(*default_plan) == nullptr) {
      return field_error("default_plan", internal::str_cat("no plan is named \"", *default_plan, "\""));
    }
    config.default_plan = *std::move(default_plan);
  }
  *out = std::move(config);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Writing.

// `value` / 10^decimals as the shortest exact decimal ("49", "0.0025", "-1.5").
std::string exact_decimal(Int128 value, int decimals) {
  const bool negative = value < 0;
  UInt128 magnitude = negative ? static_cast<UInt128>(-(value + 1)) + 1
                                         : static_cast<UInt128>(value);
  std::string digits;  // least significant first
  do {
    digits += static_cast<char>('0' + static_cast<int>(magnitude % 10));
    magnitude /= 10;
  } while (magnitude != 0);
  while (digits.size() <= static_cast<std::size_t>(decimals)) digits += '0';
  std::size_t fraction_end = 0;  // drop trailing zeros of the fraction
  while (fraction_end < static_cast<std::size_t>(decimals) && digits[fraction_end] == '0') ++fraction_end;
  std::string text = negative ? "-" : "";
  for (std::size_t i = digits.size(); i-- > static_cast<std::size_t>(decimals);) text += digits[i];
  if (fraction_end < static_cast<std::size_t>(decimals)) {
    text += '.';
    for (std::size_t i = static_cast<std::size_t>(decimals); i-- > fraction_end;) text += digits[i];
  }
  return text;
}

// A Duration as minutes, rounded to 12 decimals: at most 0.03 ns off, so that reading it back
// (rounded to the nanosecond) gives the same Duration when it is a whole number of nanoseconds.
std::string minutes_decimal(absl::Duration d) {
  const Int128 nanos = absl::ToInt64Nanoseconds(d);
  const Int128 magnitude = nanos < 0 ? -nanos : nanos;
  // minutes * 10^12 = nanos * 10^12 / (6 * 10^10) = nanos * 100 / 6, rounded half-up.
  const Int128 scaled = (magnitude * 100 + 3) / 6;
  return exact_decimal(nanos < 0 ? -scaled : scaled, 12);
}

// Appends `text` as a JSON string literal. `text` must be valid UTF-8.
void append_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          constexpr char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out += kHex[(c >> 4) & 0xf];
          out += kHex[c & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// A threshold list: a single number, or an array otherwise.
std::string thresholds_json(const std::vector<Ppm>& thresholds) {
  if (thresholds.size() == 1) return exact_decimal(thresholds.front(), 6);
  std::string out = "[";
  for (std::size_t i = 0; i < thresholds.size(); ++i) {
    if (i != 0) out += ", ";
    out += exact_decimal(thresholds[i], 6);
  }
  out += ']';
  return out;
}

std::string limit_json(const std::optional<Nanos>& limit) {
  return limit ? exact_decimal(*limit, 9) : "null";
}

std::string_view period_name(PeriodRule rule) {
  switch (rule) {
    case PeriodRule::kWeek:
      return "week";
    case PeriodRule::kDay:
      return "day";
    case PeriodRule::kMonth:
      break;
  }
  return "month";
}

}  // namespace

const Plan* PlanConfig::find(std::string_view name) const noexcept {
  for (const Plan& plan : plans) {
    if (plan.name == name) return &plan;
  }
  return nullptr;
}

absl::StatusOr<PlanConfig> parse_plan_config(std::string_view json) {
  const simdjson::padded_string padded(json);
  // Pass 1: well-formedness. A number that simdjson cannot hold (1e400, a 30-digit integer) is
  // still valid JSON: pass 2 reads it exactly and names the field it is too large for.
  simdjson::dom::parser dom_parser;
  simdjson::dom::element ignored;
  const simdjson::error_code error = dom_parser.parse(padded).get(ignored);
  if (error != simdjson::SUCCESS && error != simdjson::NUMBER_ERROR) {
    return json_error("", error);
  }
  // Pass 2: the config itself.
  PlanConfig config;
  if (absl::Status status = read_config(padded, &config); !status.ok()) return status;
  // Pass 2 rejects every number that pass 1 could not hold, so this is only a safety net.
  if (error != simdjson::SUCCESS) return json_error("", error);
  return config;
}

std::string to_json(const PlanConfig& config) {
  std::string out = "{\n";
  internal::str_append(&out, "  \"soft_gate_at\": ", thresholds_json(config.soft_gate_at), ",\n");
  internal::str_append(&out, "  \"hard_gate_at\": ", exact_decimal(config.hard_gate_at, 6), ",\n");
  if (!config.default_plan.empty()) {
    out += "  \"default_plan\": ";
    append_string(out, config.default_plan);
    out += ",\n";
  }
  out += "  \"plans\": [";
  for (std::size_t i = 0; i < config.plans.size(); ++i) {
    const Plan& plan = config.plans[i];
    out += i == 0 ? "\n    {\n" : ",\n    {\n";
    out += "      \"name\": ";
    append_string(out, plan.name);
    out += ",\n";
    if (plan.price) internal::str_append(&out, "      \"price\": ", limit_json(plan.price), ",\n");
    internal::str_append(&out, "      \"max_spend_per_period\": ", limit_json(plan.max_spend_per_period), ",\n");
    internal::str_append(&out, "      \"max_spend_per_session\": ", limit_json(plan.max_spend_per_session), ",\n");
    out += "      \"model_limits\": {";
    bool first = true;
    for (const auto& [model, limit] : plan.model_limits) {
      out += first ? "\n        " : ",\n        ";
      first = false;
      append_string(out, model);
      internal::str_append(&out, ": {\"max_tokens_per_period\": ",
                      limit.max_tokens_per_period ? std::to_string(*limit.max_tokens_per_period) : "null", "}");
    }
    out += first ? "},\n" : "\n      },\n";
    out += "      \"cost_rates\": {";
    first = true;
    for (const auto& [model, rate] : plan.cost_rates) {
      out += first ? "\n        " : ",\n        ";
      first = false;
      append_string(out, model);
      // pico-USD per token = 10^-12 USD per token = 10^-9 USD per 1K tokens.
      internal::str_append(&out, ": {\"input\": ", exact_decimal(rate.input, 9), ", \"output\": ",
                      exact_decimal(rate.output, 9));
      if (rate.cached_input) internal::str_append(&out, ", \"cached_input\": ", exact_decimal(*rate.cached_input, 9));
      if (rate.cache_write) internal::str_append(&out, ", \"cache_write\": ", exact_decimal(*rate.cache_write, 9));
      out += "}";
    }
    out += first ? "},\n" : "\n      },\n";
    internal::str_append(&out, "      \"session_timeout_minutes\": ", minutes_decimal(plan.session_timeout), ",\n");
    internal::str_append(&out, "      \"period\": \"", period_name(plan.period), "\"");
    if (!plan.soft_gate_at.empty()) {
      internal::str_append(&out, ",\n      \"soft_gate_at\": ", thresholds_json(plan.soft_gate_at));
    }
    out += "\n    }";
  }
  out += config.plans.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return out;
}

}  // namespace paygent
