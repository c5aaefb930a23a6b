// The object that carries the suites' precompiled header (tests/CMakeLists.txt, paygent_test_pch).
