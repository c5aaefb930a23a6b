// `paygent billing apply FILE` and `paygent invoice CUSTOMER` (see tools/paygent.cpp for the flags):
// the command line of paygentd's billing API (docs/billing.md).
#pragma once

namespace paygent::tools {

// Parses `paygent billing apply FILE [--format table|csv|json]` (argv[3] onwards) and sends the
// file's metrics and agents to paygentd (POST /api/v1/billing:apply); prints one row per metric and
// agent, "changed" or "unchanged". Applying the same file again changes nothing. 0 on success, 1
// when refused or unreachable, 2 for bad flags.
int run_billing_apply(int argc, char** argv);

// Parses `paygent invoice CUSTOMER [--period 2026-11] [--format table|csv|json]` (argv[2]
// onwards), asks paygentd for the invoice preview and prints it: an aligned table with the total
// (default), CSV or the reply's JSON. 0 on success, 1 when refused or unreachable, 2 for bad flags.
int run_invoice(int argc, char** argv);

}  // namespace paygent::tools
