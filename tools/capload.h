// `paygent capload`: one application process spending against one user's cap (see
// tools/paygent.cpp for the flags). The chaos test (tests/integration/chaos_test.cpp) runs N of
// them on one user, over two paygentd replicas, and checks the backend's ledger against what
// each says it admitted.
#pragma once

namespace paygent::tools {

// Parses `paygent capload`'s flags (argv[2] onwards), runs it and returns the exit status: 0 when
// everything it admitted was delivered, 1 when some was not (or a call failed otherwise than by
// a hard gate), 2 for bad flags (the message names the flag).
int run_capload(int argc, char** argv);

}  // namespace paygent::tools
