// The databases the storage contract suite runs on: SQLite in a temporary directory, always; a
// real PostgreSQL 15 when the server programs are here (one throwaway server per test binary run,
// started at first use, and a fresh database per test case). A case runs once per backend, as a
// doctest SUBCASE of each (for_each_backend); without PostgreSQL its subcase prints the line
// ctest reports as skipped.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include <doctest/doctest.h>

#include "server/sqlite_storage.h"
#include "server/storage.h"
#include "tests/server/fixture.h"

#ifdef PAYGENT_WITH_POSTGRES
#include <libpq-fe.h>

#include "server/postgres_storage.h"
#include "tests/support/postgres_process.h"
#endif

namespace paygent::server::test {

class StorageBackend {
 public:
  virtual ~StorageBackend() = default;
  // A storage on a new, empty database.
  virtual std::unique_ptr<Storage> fresh() = 0;
  // Another storage on the database of the last fresh(): the same store reopened, or a second
  // replica beside the first.
  virtual std::unique_ptr<Storage> again() = 0;
  // As again(), with streamed reads (SqlConnection::prepare_stream) of `rows` rows a page
  // (PostgreSQL's cursor; SQLite steps a statement, with no pages).
  virtual std::unique_ptr<Storage> again_with_stream_pages(int rows) {
    static_cast<void>(rows);
    return again();
  }
  // Rows per table of that database, read through a connection of the test's own.
  virtual TableCounts counts() = 0;
  // Makes every INSERT into `table` of that database fail (a trigger that raises), or stops doing
  // so: a fault injected inside a storage's transaction, through a connection of the test's own.
  virtual void fail_inserts(const std::string& table, bool fail) = 0;
  // Runs `sql` on that database, through a connection of the test's own.
  virtual void exec(const std::string& sql) = 0;
  // Marks that database as written by the release before profit_daily (SQLite schema version 5,
  // PostgreSQL 4), so that the next open upgrades it.
  virtual void set_schema_version_before_profit_rollup() = 0;
  // Marks the database as one from before the usage report by provider's rollup.
  virtual void set_schema_version_before_provider_rollup() = 0;
  // Marks the database as one from before billing events carried their event's meta tags.
  virtual void set_schema_version_before_billing_event_tags() = 0;
};

class SqliteBackend final : public StorageBackend {
 public:
  std::unique_ptr<Storage> fresh() override {
    path_ = dir_.path() + "/db" + std::to_string(++n_);
    return again();
  }
  std::unique_ptr<Storage> again() override { return ApiFixture::open_storage(path_); }
  TableCounts counts() override { return table_counts(path_); }
  void fail_inserts(const std::string& table, bool fail) override {
    exec(fail ? "CREATE TRIGGER injected_fault BEFORE INSERT ON " + table +
                    " BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
              : std::string("DROP TRIGGER injected_fault"));
  }
  void exec(const std::string& sql) override {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    sqlite3_busy_timeout(db, 10'000);
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    const std::string message = error != nullptr ? error : "";
    sqlite3_free(error);
    sqlite3_close(db);
    REQUIRE_MESSAGE(rc == SQLITE_OK, sql << ": " << message);
  }
  void set_schema_version_before_profit_rollup() override { exec("PRAGMA user_version=5"); }
  void set_schema_version_before_provider_rollup() override { exec("PRAGMA user_version=9"); }
  void set_schema_version_before_billing_event_tags() override { exec("PRAGMA user_version=10"); }

 private:
  paygent::testing::TempDir dir_;
  std::string path_;
  int n_ = 0;
};

#ifdef PAYGENT_WITH_POSTGRES

// One PostgreSQL server for the whole test binary, started at first use; nullptr (with the reason
// in `why`) when it cannot run here.
inline paygent::testing::PostgresProcess* shared_postgres(std::string& why) {
  static std::string error;
  static const std::unique_ptr<paygent::testing::PostgresProcess> server =
      []() -> std::unique_ptr<paygent::testing::PostgresProcess> {
    error = paygent::testing::postgres_unavailable();
    if (!error.empty()) return nullptr;
    try {
      paygent::testing::PostgresProcess::Options options;
      options.settings = {"max_connections=300"};
      return paygent::testing::PostgresProcess::start(options);
    } catch (const std::exception& e) {
      error = std::string("cannot start PostgreSQL: ") + e.what();
      return nullptr;
    }
  }();
  why = error;
  return server.get();
}

// Runs `sql` on `conninfo` and returns the first column of the first row ("" when none).
inline std::string pg_query(const std::string& conninfo, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo.c_str()), &PQfinish);
  REQUIRE_MESSAGE(PQstatus(conn.get()) == CONNECTION_OK, PQerrorMessage(conn.get()));
  std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn.get(), sql.c_str()), &PQclear);
  const ExecStatusType status = PQresultStatus(result.get());
  REQUIRE_MESSAGE((status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK), sql << ": " << PQerrorMessage(conn.get()));
  if (status != PGRES_TUPLES_OK || PQntuples(result.get()) == 0) return {};
  return PQgetvalue(result.get(), 0, 0);
}

class PostgresBackend final : public StorageBackend {
 public:
  explicit PostgresBackend(paygent::testing::PostgresProcess& server) : server_(server) {}

  // A new database (owned by the server's paygent role) and its conninfo.
  std::string new_database() {
    static int n = 0;
    const std::string name = "contract_" + std::to_string(::getpid()) + "_" + std::to_string(++n);
    pg_query(server_.superuser_conninfo(), "CREATE DATABASE " + name + " OWNER paygent");
    conninfo_ = "postgresql://paygent@127.0.0.1:" + std::to_string(server_.port()) + "/" + name;
    return conninfo_;
  }
  std::unique_ptr<Storage> fresh() override {
    new_database();
    return again();
  }
  std::unique_ptr<Storage> again() override { return again_with({}); }
  std::unique_ptr<Storage> again_with_stream_pages(int rows) override {
    return again_with(PostgresOptions{.stream_page_rows = rows});
  }
  std::unique_ptr<Storage> again_with(PostgresOptions options) {
    absl::StatusOr<std::unique_ptr<PostgresStorage>> s = PostgresStorage::open(conninfo_, options);
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    return *std::move(s);
  }
  TableCounts counts() override {
    auto count = [&](const char* table) {
      return std::stoll(pg_query(conninfo_, std::string("SELECT COUNT(*) FROM ") + table));
    };
    return {count("products"), count("users"), count("subscriptions"),
            count("plans"),    count("events"), count("usage_daily")};
  }
  void fail_inserts(const std::string& table, bool fail) override {
    if (fail) {
      pg_query(conninfo_,
               "CREATE OR REPLACE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$");
      pg_query(conninfo_, "CREATE TRIGGER injected_fault BEFORE INSERT ON " + table +
                              " FOR EACH ROW EXECUTE FUNCTION injected_fault()");
    } else {
      pg_query(conninfo_, "DROP TRIGGER injected_fault ON " + table);
    }
  }
  void exec(const std::string& sql) override { pg_query(conninfo_, sql); }
  void set_schema_version_before_profit_rollup() override { pg_query(conninfo_, "UPDATE paygent_schema SET version = 4"); }
  void set_schema_version_before_provider_rollup() override { pg_query(conninfo_, "UPDATE paygent_schema SET version = 8"); }
  void set_schema_version_before_billing_event_tags() override { pg_query(conninfo_, "UPDATE paygent_schema SET version = 9"); }
  [[nodiscard]] const std::string& conninfo() const { return conninfo_; }

 private:
  paygent::testing::PostgresProcess& server_;
  std::string conninfo_;
};

#endif  // PAYGENT_WITH_POSTGRES

// A PostgreSQL backend, or nullptr having printed the line ctest reports as skipped.
inline std::unique_ptr<StorageBackend> postgres_backend_or_skip() {
#ifdef PAYGENT_WITH_POSTGRES
  std::string why;
  paygent::testing::PostgresProcess* server = shared_postgres(why);
  if (server != nullptr) return std::make_unique<PostgresBackend>(*server);
  std::printf("SKIPPED: PostgreSQL tests: %s\n", why.c_str());
#else
  std::printf("SKIPPED: PostgreSQL tests: built without PAYGENT_WITH_POSTGRES\n");
#endif
  return nullptr;
}

// Runs `body(backend)` once for SQLite and once for PostgreSQL, each as a SUBCASE.
inline void for_each_backend(const std::function<void(StorageBackend&)>& body) {
  SUBCASE("sqlite") {
    SqliteBackend backend;
    body(backend);
  }
  SUBCASE("postgresql") {
    std::unique_ptr<StorageBackend> backend = postgres_backend_or_skip();
    if (backend != nullptr) body(*backend);
  }
}

}  // namespace paygent::server::test
