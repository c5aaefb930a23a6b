// The benchmarks' PostgreSQL: one throwaway PostgreSQL 15 per run, started on first use
// (tests/support/postgres_process.h; fsync off, so ratios compare work, not the disk), and a new
// database on it per call. Lifetime: the server lives until the process exits. One thread at a time.
#pragma once

#ifdef PAYGENT_WITH_POSTGRES

#include <libpq-fe.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "support/postgres_process.h"

namespace paygent::bench {

// A new database's conninfo, owned by the unprivileged user; "" when no server can start here.
inline std::string new_postgres_database() {
  static std::unique_ptr<paygent::testing::PostgresProcess> server = []() {
    std::unique_ptr<paygent::testing::PostgresProcess> pg;
    if (!paygent::testing::postgres_unavailable().empty()) return pg;
    try {
      pg = paygent::testing::PostgresProcess::start();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "postgres bench: %s\n", e.what());
    }
    return pg;
  }();
  if (server == nullptr) return {};
  static int n = 0;
  const std::string name = "bench_" + std::to_string(++n);
  PGconn* admin = PQconnectdb(server->superuser_conninfo().c_str());
  PQclear(PQexec(admin, ("CREATE DATABASE " + name + " OWNER paygent").c_str()));
  PQfinish(admin);
  return "postgresql://paygent@127.0.0.1:" + std::to_string(server->port()) + "/" + name;
}

}  // namespace paygent::bench

#endif  // PAYGENT_WITH_POSTGRES
