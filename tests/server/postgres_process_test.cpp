// The PostgreSQL server that the storage tests start themselves (tests/support/postgres_process.h):
// it serves a database through libpq, keeps committed rows across kill -9 and restart, runs beside
// another one on another port, and leaves neither a directory nor a process behind.
//
// Without the server programs (or built without libpq) each case prints a "SKIPPED: PostgreSQL
// tests: ..." line, and ctest reports it as skipped.
#include <doctest/doctest.h>

#include <cstdio>

#ifdef PAYGENT_WITH_POSTGRES

#include <signal.h>
#include <sys/shm.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "support/postgres_process.h"

namespace {

using paygent::testing::PostgresProcess;

// True (having printed the line ctest looks for) when PostgreSQL cannot be started here.
bool skipped() {
  const std::string why = paygent::testing::postgres_unavailable();
  if (why.empty()) return false;
  std::printf("%s%s\n", paygent::testing::kPostgresSkippedLine, why.c_str());
  return true;
}

// One libpq connection; query() returns the first column of the first row ("" when none) and
// fails the test on an error.
class Connection {
 public:
  explicit Connection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str()), &PQfinish) {}
  [[nodiscard]] bool ok() const { return PQstatus(conn_.get()) == CONNECTION_OK; }
  [[nodiscard]] std::string error() const { return PQerrorMessage(conn_.get()); }

  std::string query(const std::string& sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn_.get(), sql.c_str()), &PQclear);
    const ExecStatusType status = PQresultStatus(result.get());
    REQUIRE_MESSAGE((status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK), sql << ": " << error());
    if (status != PGRES_TUPLES_OK || PQntuples(result.get()) == 0) return {};
    return PQgetvalue(result.get(), 0, 0);
  }

 private:
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("postgres.process_keeps_committed_rows_across_kill9_and_restart") {
  if (skipped()) return;
  auto pg = PostgresProcess::start();
  std::printf("postgres: started in %.2f s (initdb included) on port %d\n",
              static_cast<double>(pg->start_duration().count()) / 1000, pg->port());
  CHECK(pg->conninfo() == "postgresql://paygent@127.0.0.1:" + std::to_string(pg->port()) + "/paygent");
  {
    Connection conn(pg->conninfo());
    REQUIRE_MESSAGE(conn.ok(), conn.error());
    CHECK(conn.query("SELECT current_user") == "paygent");
    CHECK(conn.query("SELECT current_database()") == "paygent");
    conn.query("CREATE TABLE events (id text PRIMARY KEY, cost_nano bigint NOT NULL)");
    conn.query("INSERT INTO events VALUES ('e1', 7500000)");
    CHECK(conn.query("SELECT cost_nano FROM events WHERE id = 'e1'") == "7500000");
  }

  const pid_t crashed = pg->pid();
  pg->kill9();
  CHECK_FALSE(pg->running());
  CHECK(::kill(crashed, 0) == -1);
  CHECK_FALSE(paygent::testing::internal_postgres::process_group_alive(crashed));
  CHECK_FALSE(Connection(pg->conninfo()).ok());

  const auto restarting = std::chrono::steady_clock::now();
  pg->restart();
  std::printf("postgres: restarted after kill -9 (crash recovery) in %.2f s\n", seconds_since(restarting));
  Connection conn(pg->conninfo());
  REQUIRE_MESSAGE(conn.ok(), conn.error());
  CHECK(conn.query("SELECT cost_nano FROM events WHERE id = 'e1'") == "7500000");

  // A restart of a running server (fast shutdown) keeps it too, on the same conninfo.
  pg->restart();
  Connection again(pg->conninfo());
  REQUIRE_MESSAGE(again.ok(), again.error());
  CHECK(again.query("SELECT count(*) FROM events") == "1");
}

TEST_CASE("postgres.two_processes_run_at_once_on_different_ports") {
  if (skipped()) return;
  auto first = PostgresProcess::start();
  auto second = PostgresProcess::start();
  CHECK(first->port() != second->port());
  CHECK(first->directory() != second->directory());
  Connection a(first->conninfo());
  Connection b(second->conninfo());
  REQUIRE_MESSAGE(a.ok(), a.error());
  REQUIRE_MESSAGE(b.ok(), b.error());
  a.query("CREATE TABLE only_in_first (x int)");
  CHECK(a.query("SELECT to_regclass('only_in_first') IS NOT NULL") == "t");
  CHECK(b.query("SELECT to_regclass('only_in_first') IS NOT NULL") == "f");
}

TEST_CASE("postgres.destruction_removes_the_directory_and_every_process") {
  if (skipped()) return;
  auto pg = PostgresProcess::start();
  const std::string directory = pg->directory();
  const pid_t pid = pg->pid();
  REQUIRE(std::filesystem::exists(directory + "/data/PG_VERSION"));
  Connection conn(pg->conninfo());  // a client still connected does not hold up the shutdown
  REQUIRE_MESSAGE(conn.ok(), conn.error());
  conn.query("SELECT 1");

  const auto stopping = std::chrono::steady_clock::now();
  pg.reset();
  std::printf("postgres: stopped and removed in %.2f s\n", seconds_since(stopping));
  CHECK_FALSE(std::filesystem::exists(directory));
  const int killed = ::kill(pid, 0);
  const int kill_errno = errno;
  CHECK(killed == -1);
  CHECK(kill_errno == ESRCH);
  CHECK_FALSE(paygent::testing::internal_postgres::process_group_alive(pid));
}

TEST_CASE("postgres.destruction_after_kill9_leaves_no_shared_memory") {
  if (skipped()) return;
  auto pg = PostgresProcess::start();
  const std::string directory = pg->directory();
  // The server's System V segment: the second number on postmaster.pid's 7th line.
  std::ifstream in(pg->data_directory() + "/postmaster.pid");
  std::string line;
  for (int i = 0; i < 7; ++i) REQUIRE(std::getline(in, line));
  std::istringstream fields(line);
  long key = 0;
  int id = -1;
  REQUIRE((fields >> key >> id));
  shmid_ds info{};
  REQUIRE(::shmctl(id, IPC_STAT, &info) == 0);

  pg->kill9();  // a crash leaves the segment; only a restart or the destructor reclaims it
  CHECK(::shmctl(id, IPC_STAT, &info) == 0);
  pg.reset();
  CHECK(::shmctl(id, IPC_STAT, &info) == -1);
  CHECK_FALSE(std::filesystem::exists(directory));
}

#else  // built without libpq

TEST_CASE("postgres.process_keeps_committed_rows_across_kill9_and_restart") {
  std::printf("SKIPPED: PostgreSQL tests: paygent was configured without libpq (PAYGENT_WITH_POSTGRES=OFF)\n");
}

#endif
