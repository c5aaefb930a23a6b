// PostgreSQL's streamed read (server/postgres_stream.cpp) on a real server, below the storage: the
// binary decoding of every column type it reads, pages of any size, a read stopped with a FETCH in
// flight and run again in the same transaction (its cursor closed, its name free), the column-type
// check, and text holding U+0000.
#include <doctest/doctest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "tests/server/storage_backends.h"

#ifdef PAYGENT_WITH_POSTGRES
#include <libpq-fe.h>

#include "server/postgres_internal.h"
#endif

namespace paygent::server::test {
namespace {

#ifdef PAYGENT_WITH_POSTGRES

// A connection of the test's own to a new database holding table t: 10 rows of every column type
// a stream reads, NULLs in every other row.
struct StreamFixture {
  explicit StreamFixture(paygent::testing::PostgresProcess& server) : backend(server) {
    const std::string conninfo = backend.new_database();
    conn.reset(PQconnectdb(conninfo.c_str()));
    REQUIRE_MESSAGE(PQstatus(conn.get()) == CONNECTION_OK, PQerrorMessage(conn.get()));
    exec("CREATE TABLE t(n INT8 PRIMARY KEY, i4 INT4, i2 INT2, b BOOL, s TEXT, v VARCHAR(20), j JSON, bin BYTEA, "
         "big INT8, num NUMERIC)");
    exec("INSERT INTO t SELECT n, CASE WHEN n % 2 = 0 THEN -n * 100000 END, CASE WHEN n % 2 = 0 THEN -n END, "
         "CASE WHEN n % 2 = 0 THEN n % 4 = 0 END, 'text ' || n, 'v' || n, ('{\"k\":' || n || '}')::json, "
         "CASE WHEN n % 2 = 0 THEN decode(lpad(to_hex(n), 4, '0') || '00ff', 'hex') END, "
         "-9223372036854775807 + n, n FROM generate_series(1, 10) AS n");
  }
  void exec(const std::string& sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(conn.get(), sql.c_str()), &PQclear);
    const ExecStatusType status = PQresultStatus(r.get());
    REQUIRE_MESSAGE((status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK),
                    sql << ": " << std::string(PQerrorMessage(conn.get())));
  }
  std::unique_ptr<SqlStatement> stream(const std::string& sql, int parameters, int page) {
    return pg_internal::make_stream(conn.get(), &pending_begin, "test_stream", sql, parameters, page);
  }

  PostgresBackend backend;
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn{nullptr, &PQfinish};
  std::string pending_begin;
};

// Every row of `s` from n > `after`, each as one text line.
std::vector<std::string> read_all(SqlStatement& s, std::int64_t after, int stop_after = -1) {
  s.bind_int64(1, after);
  std::vector<std::string> out;
  for (;;) {
    absl::StatusOr<bool> row = s.step("read t");
    REQUIRE_MESSAGE(row.ok(), row.status().ToString());
    if (!*row) break;
    std::string hex;
    for (unsigned char c : s.blob(7)) {
      char b[3];
      std::snprintf(b, sizeof b, "%02x", c);
      hex += b;
    }
    out.push_back(std::to_string(s.int64(0)) + "|" + (s.is_null(1) ? "null" : std::to_string(s.int64(1))) + "|" +
                  std::to_string(s.int64(2)) + "|" + (s.is_null(3) ? "null" : std::to_string(s.int64(3))) + "|" +
                  std::string(s.text(4)) + "|" + std::string(s.text(5)) + "|" + std::string(s.text(6)) + "|" + hex +
                  "|" + std::to_string(s.int64(8)));
    if (static_cast<int>(out.size()) == stop_after) break;
  }
  s.reset();
  return out;
}

// The rows as read_all() prints them, from the table's definition.
std::vector<std::string> expected_rows(std::int64_t after) {
  std::vector<std::string> out;
  for (std::int64_t n = after + 1; n <= 10; ++n) {
    const bool even = n % 2 == 0;
    char hex[24] = "";  // room for any 64-bit value: GCC proves no bound on n
    if (even) std::snprintf(hex, sizeof hex, "%04llx00ff", static_cast<unsigned long long>(n));
    out.push_back(std::to_string(n) + "|" + (even ? std::to_string(-n * 100000) : "null") + "|" +
                  (even ? std::to_string(-n) : "0") + "|" + (even ? (n % 4 == 0 ? "1" : "0") : "null") + "|text " +
                  std::to_string(n) + "|v" + std::to_string(n) + "|{\"k\":" + std::to_string(n) + "}|" + hex + "|" +
                  std::to_string(-9223372036854775807LL + n));
  }
  return out;
}

constexpr const char* kSelect = "SELECT n, i4, i2, b, s, v, j, bin, big FROM t WHERE n > $1 ORDER BY n";

#endif  // PAYGENT_WITH_POSTGRES

TEST_CASE("server.postgres_stream_decodes_pages_stops_and_runs_again_in_one_transaction") {
#ifdef PAYGENT_WITH_POSTGRES
  std::string why;
  paygent::testing::PostgresProcess* server = shared_postgres(why);
  if (server == nullptr) {
    std::printf("SKIPPED: PostgreSQL tests: %s\n", why.c_str());
    return;
  }
  StreamFixture f(*server);
  for (const int page : {1, 3, 5, 10, 100}) {
    INFO("page of ", page);
    f.pending_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";  // sent by the stream's first step
    std::unique_ptr<SqlStatement> s = f.stream(kSelect, 1, page);
    CHECK(read_all(*s, 0) == expected_rows(0));
    CHECK(f.pending_begin.empty());
    CHECK(PQtransactionStatus(f.conn.get()) == PQTRANS_INTRANS);
    // The cursor was planned with enable_sort off; the rest of the transaction plans as before.
    {
      std::unique_ptr<PGresult, decltype(&PQclear)> shown(PQexec(f.conn.get(), "SHOW enable_sort"), &PQclear);
      REQUIRE(PQresultStatus(shown.get()) == PGRES_TUPLES_OK);
      CHECK(std::string(PQgetvalue(shown.get(), 0, 0)) == "on");
    }
    // Stopped after 2 rows (a FETCH in flight when the page is smaller than what is left), then
    // the same statement again in the same transaction: the cursor was closed, its name is free.
    const std::vector<std::string> all = expected_rows(0);
    CHECK(read_all(*s, 0, 2) == std::vector<std::string>(all.begin(), all.begin() + 2));
    CHECK(read_all(*s, 6) == expected_rows(6));
    CHECK(read_all(*s, 10).empty());
    f.exec("COMMIT");  // nothing of the stream is left on the connection
  }
  {
    // A column of a type the binary reader does not read is refused, naming it, on every run.
    f.pending_begin = "BEGIN";
    std::unique_ptr<SqlStatement> s = f.stream("SELECT n, num FROM t ORDER BY n", 0, 4);
    for (int run = 0; run < 2; ++run) {
      absl::StatusOr<bool> row = s->step("read t");
      CHECK(absl::IsInternal(row.status()));
      CHECK(row.status().message().find("column 1 has type oid 1700") != std::string::npos);
      s->reset();
    }
    f.exec("ROLLBACK");
  }
  {
    // Text holding U+0000 is refused before anything is sent.
    std::unique_ptr<SqlStatement> s = f.stream("SELECT n FROM t WHERE s = $1", 1, 4);
    s->bind_text(1, std::string("a\0b", 3));
    CHECK(absl::IsInvalidArgument(s->step("read t").status()));
    s->reset();
    CHECK(PQtransactionStatus(f.conn.get()) == PQTRANS_IDLE);
  }
#else
  std::printf("SKIPPED: PostgreSQL tests: built without PAYGENT_WITH_POSTGRES\n");
#endif
}

}  // namespace
}  // namespace paygent::server::test
