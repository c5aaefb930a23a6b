// Custom expressions of billable metrics: arithmetic over an event's meta tags.
//
// Grammar (spaces and tabs allowed between tokens):
//   expr    := term (('+' | '-') term)*
//   term    := unary (('*' | '/') unary)*
//   unary   := '-' unary | primary
//   primary := NUMBER | 'event.properties.' KEY | '(' expr ')'
//   NUMBER  := digits ['.' digits]        (exact decimal, no exponent)
//   KEY     := [A-Za-z0-9_]+              (case-sensitive meta-tag key)
// Example: "event.properties.tokens * event.properties.replicas" (seed 003's effective tokens).
//
// Evaluation is exact (billing/decimal.h): + - * exactly, '/' to 18 decimal places rounded half away
// from zero. An event whose referenced tag is missing or not a number gets no value (the caller
// excludes it with the reason), never 0.
// Lifetime and thread safety: MetaTag borrows its views for one call; FieldValue is a plain value;
// Expression is below. Nothing here has shared mutable state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "billing/decimal.h"

namespace paygent::billing {

// One meta tag of an event. Both views are borrowed from the caller for the duration of a call.
struct MetaTag {
  std::string_view key;
  std::string_view value;
};

// The value of `key` among `tags` (first match), or nullptr. Keys are compared exactly.
[[nodiscard]] const std::string_view* find_tag(std::span<const MetaTag> tags, std::string_view key) noexcept;

// Why an event has no value for a metric.
enum class ExclusionReason : std::uint8_t {
  kMissingField,    // the field (or a property the expression reads) is not among the event's tags
  kNotANumber,      // its value is not a plain decimal number ("abc", "1e3", "")
  kDivisionByZero,  // the expression divided by zero for this event
  kOverflow,        // the exact value does not fit (billing/decimal.h)
};
inline constexpr int kExclusionReasonCount = 4;
// "missing_field", "not_a_number", "division_by_zero", "overflow".
[[nodiscard]] std::string_view exclusion_reason_name(ExclusionReason reason) noexcept;

// The result of evaluating a field or an expression on one event.
struct FieldValue {
  bool ok = false;
  Decimal value;                                          // when ok
  ExclusionReason reason = ExclusionReason::kMissingField;  // when !ok
};

// A parsed expression. Immutable after parse(); copyable; const methods are safe from any number of
// threads at once. It owns its text and compiled program.
class Expression {
 public:
  // Parses `text`. On a malformed expression, InvalidArgument whose message starts with
  // "expression: position N: " (N is the 0-based byte offset of the offending token) and says what
  // was expected. An empty expression is refused at position 0.
  static absl::StatusOr<Expression> parse(std::string_view text);

  // Evaluates on one event's tags. Does not allocate for expressions of up to 16 nested operands.
  [[nodiscard]] FieldValue evaluate(std::span<const MetaTag> tags) const;

  [[nodiscard]] const std::string& text() const noexcept { return text_; }
  // The distinct property keys the expression reads, in order of first use.
  [[nodiscard]] const std::vector<std::string>& properties() const noexcept { return properties_; }

  // One instruction of the compiled (postfix) program; public for the parser, not an API.
  struct Op {
    enum Kind : std::uint8_t { kLiteral, kProperty, kAdd, kSub, kMul, kDiv, kNeg } kind;
    int property = 0;  // index into properties_ for kProperty
    Decimal literal;   // for kLiteral
  };

 private:
  Expression() = default;

  std::string text_;
  std::vector<std::string> properties_;
  std::vector<Op> program_;
  int max_depth_ = 0;
};

// Reads one tag value as an exact decimal: ok, or kNotANumber.
[[nodiscard]] FieldValue read_decimal_tag(std::string_view value);

}  // namespace paygent::billing
