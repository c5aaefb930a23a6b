// Custom metric expressions (see billing/expression.h).
#include "billing/expression.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paygent::billing {
namespace {

constexpr std::string_view kPropertyPrefix = "event.properties.";
constexpr int kInlineStack = 16;
constexpr int kMaxNesting = 64;  // parentheses and unary minus: a bound against stack exhaustion

bool is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Recursive descent over the grammar in the header, emitting postfix code.
class Parser {
 public:
  Parser(std::string_view text, std::vector<std::string>& properties, std::vector<Expression::Op>& program)
      : text_(text), properties_(properties), program_(program) {}

  absl::Status parse() {
    skip_spaces();
    if (pos_ == text_.size()) return error("the expression is empty (expected a number, "
                                           "event.properties.<key> or '(')");
    if (auto s = expr(0); !s.ok()) return s;
    skip_spaces();
    if (pos_ != text_.size()) {
      return error(std::string("unexpected '") + text_[pos_] + "' (expected an operator + - * / or the end)");
    }
    return absl::OkStatus();
  }

  int max_depth() const { return max_depth_; }

 private:
  absl::Status error(const std::string& what) const {
    return absl::InvalidArgumentError("expression: position " + std::to_string(pos_) + ": " + what);
  }
  void skip_spaces() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  void emit(Expression::Op op) {
    if (op.kind == Expression::Op::kLiteral || op.kind == Expression::Op::kProperty) {
      if (++depth_ > max_depth_) max_depth_ = depth_;
    } else if (op.kind != Expression::Op::kNeg) {
      --depth_;
    }
    program_.push_back(op);
  }

  // expr (level 0: + -) and term (level 1: * /): left-associative chains of the next level.
  absl::Status expr(int nesting) { return chain(0, nesting); }

  absl::Status chain(int level, int nesting) {
    static constexpr char kOps[2][2] = {{'+', '-'}, {'*', '/'}};
    static constexpr Expression::Op::Kind kKinds[2][2] = {{Expression::Op::kAdd, Expression::Op::kSub},
                                                         {Expression::Op::kMul, Expression::Op::kDiv}};
    auto operand = [&] { return level == 0 ? chain(1, nesting) : unary(nesting); };
    if (auto s = operand(); !s.ok()) return s;
    for (;;) {
      skip_spaces();
      if (pos_ == text_.size() || (text_[pos_] != kOps[level][0] && text_[pos_] != kOps[level][1])) {
        return absl::OkStatus();
      }
      const bool second = text_[pos_++] == kOps[level][1];
      if (auto s = operand(); !s.ok()) return s;
      emit({kKinds[level][second ? 1 : 0]});
    }
  }

  absl::Status unary(int nesting) {
    skip_spaces();
    if (nesting > kMaxNesting) return error("nested too deeply (more than 64 levels)");
    if (pos_ < text_.size() && text_[pos_] == '-') {
      ++pos_;
      if (auto s = unary(nesting + 1); !s.ok()) return s;
      emit({Expression::Op::kNeg});
      return absl::OkStatus();
    }
    return primary(nesting);
  }

  absl::Status primary(int nesting) {
    if (pos_ == text_.size()) return error("the expression ends early (expected a number, "
                                           "event.properties.<key> or '(')");
    const char c = text_[pos_];
    if (c == '(') {
      ++pos_;
      if (auto s = expr(nesting + 1); !s.ok()) return s;
      skip_spaces();
      if (pos_ == text_.size() || text_[pos_] != ')') return error("expected ')'");
      ++pos_;
      return absl::OkStatus();
    }
    if (c >= '0' && c <= '9') return number();
    if (text_.substr(pos_).starts_with(kPropertyPrefix)) {
      pos_ += kPropertyPrefix.size();
      const std::size_t start = pos_;
      while (pos_ < text_.size() && is_key_char(text_[pos_])) ++pos_;
      if (pos_ == start) return error("expected a property key ([A-Za-z0-9_]+) after 'event.properties.'");
      const std::string_view key = text_.substr(start, pos_ - start);
      int index = 0;
      while (index < static_cast<int>(properties_.size()) && properties_[index] != key) ++index;
      if (index == static_cast<int>(properties_.size())) properties_.emplace_back(key);
      emit({Expression::Op::kProperty, index});
      return absl::OkStatus();
    }
    if (is_key_char(c) || c == '.') {
      return error("expected a number or event.properties.<key> (a property is written "
                   "event.properties.<key>)");
    }
    return error(std::string("unexpected '") + c + "' (expected a number, event.properties.<key> or '(')");
  }

  absl::Status number() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (pos_ == text_.size() || text_[pos_] < '0' || text_[pos_] > '9') {
        return error("expected a digit after the decimal point");
      }
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    }
    if (pos_ < text_.size() && (is_key_char(text_[pos_]) || text_[pos_] == '.')) {
      return error("a number must be plain digits with an optional fraction (no exponent or letters)");
    }
    auto value = Decimal::parse(text_.substr(start, pos_ - start));
    if (!value.ok()) {
      const std::size_t here = pos_;
      pos_ = start;
      absl::Status s = error("the number " + std::string(value.status().message()));
      pos_ = here;
      return s;
    }
    Expression::Op op{Expression::Op::kLiteral};
    op.literal = *value;
    emit(op);
    return absl::OkStatus();
  }

  std::string_view text_;
  std::vector<std::string>& properties_;
  std::vector<Expression::Op>& program_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  int max_depth_ = 0;
};

FieldValue excluded(ExclusionReason reason) { return FieldValue{false, Decimal(), reason}; }

}  // namespace

const std::string_view* find_tag(std::span<const MetaTag> tags, std::string_view key) noexcept {
  for (const MetaTag& t : tags) {
    if (t.key == key) return &t.value;
  }
  return nullptr;
}

std::string_view exclusion_reason_name(ExclusionReason reason) noexcept {
  switch (reason) {
    case ExclusionReason::kMissingField: return "missing_field";
    case ExclusionReason::kNotANumber: return "not_a_number";
    case ExclusionReason::kDivisionByZero: return "division_by_zero";
    case ExclusionReason::kOverflow: return "overflow";
  }
  return "missing_field";
}

FieldValue read_decimal_tag(std::string_view value) {
  auto d = Decimal::parse(value);
  if (d.ok()) return FieldValue{true, *d, ExclusionReason::kMissingField};
  return excluded(d.status().code() == absl::StatusCode::kOutOfRange ? ExclusionReason::kOverflow
                                                                      : ExclusionReason::kNotANumber);
}

absl::StatusOr<Expression> Expression::parse(std::string_view text) {
  Expression e;
  e.text_ = std::string(text);
  Parser parser(e.text_, e.properties_, e.program_);
  if (auto s = parser.parse(); !s.ok()) return s;
  e.max_depth_ = parser.max_depth();
  return e;
}

FieldValue Expression::evaluate(std::span<const MetaTag> tags) const {
  Decimal inline_stack[kInlineStack];
  std::vector<Decimal> heap;
  Decimal* stack = inline_stack;
  if (max_depth_ > kInlineStack) {
    heap.resize(static_cast<std::size_t>(max_depth_));
    stack = heap.data();
  }
  int top = 0;  // number of values on the stack
  for (const Op& op : program_) {
    absl::StatusOr<Decimal> r;
    switch (op.kind) {
      case Op::kLiteral: stack[top++] = op.literal; continue;
      case Op::kProperty: {
        const std::string_view* v = find_tag(tags, properties_[static_cast<std::size_t>(op.property)]);
        if (v == nullptr) return excluded(ExclusionReason::kMissingField);
        FieldValue f = read_decimal_tag(*v);
        if (!f.ok) return f;
        stack[top++] = f.value;
        continue;
      }
      case Op::kNeg: r = Decimal::sub(Decimal(), stack[top - 1]); break;
      case Op::kAdd: r = Decimal::add(stack[top - 2], stack[top - 1]); break;
      case Op::kSub: r = Decimal::sub(stack[top - 2], stack[top - 1]); break;
      case Op::kMul: r = Decimal::mul(stack[top - 2], stack[top - 1]); break;
      case Op::kDiv:
        if (stack[top - 1].is_zero()) return excluded(ExclusionReason::kDivisionByZero);
        r = Decimal::div(stack[top - 2], stack[top - 1], Decimal::kMaxScale, RoundingMode::kRound);
        if (r.ok()) r = r->normalized();  // 4 / 2 is 2, not 2.000000000000000000
        break;
    }
    if (!r.ok()) return excluded(ExclusionReason::kOverflow);
    if (op.kind != Op::kNeg) --top;
    stack[top - 1] = *r;
  }
  return FieldValue{true, stack[0].normalized(), ExclusionReason::kMissingField};
}

}  // namespace paygent::billing
