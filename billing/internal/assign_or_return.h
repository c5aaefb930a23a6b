// ASSIGN_OR_RETURN for the billing engine's .cpp files (internal; not an API).
#pragma once

#include <utility>

#define PAYGENT_BILLING_CONCAT_INNER(a, b) a##b
#define PAYGENT_BILLING_CONCAT(a, b) PAYGENT_BILLING_CONCAT_INNER(a, b)

// Evaluates `expr` (an absl::StatusOr<T>); returns its status on error, else assigns the value to
// `lhs` (which may be a declaration: `auto x`).
#define PAYGENT_BILLING_ASSIGN_OR_RETURN(lhs, expr) \
  PAYGENT_BILLING_ASSIGN_OR_RETURN_IMPL(PAYGENT_BILLING_CONCAT(billing_statusor_, __LINE__), lhs, expr)
#define PAYGENT_BILLING_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                          \
  if (!tmp.ok()) return tmp.status();                         \
  lhs = *std::move(tmp)
