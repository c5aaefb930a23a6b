// The local store's record of fired soft gates that the backend has (soft_gates_fired.sent), and
// its upgrade from a file of the previous release.
#include "sync/local_store.h"  // first: proves the header stands alone

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

#include "tests/guard/fixture.h"

namespace paygent::internal {
namespace {

std::vector<FiredThreshold> unsent(LocalStore& store) {
  auto rows = store.unsent_fired(100);
  REQUIRE_MESSAGE(rows.ok(), rows.status().ToString());
  return *rows;
}

}  // namespace

TEST_CASE("store.fired_soft_gates_are_sent_once") {
  testing::TempStore path;
  auto store = LocalStore::open(path.path());
  REQUIRE(store.ok());
  const FiredThreshold ours{"u1", "total_spend", 100, 800'000};
  const FiredThreshold theirs{"u1", "session_spend:chat-1", 150, 500'000};
  REQUIRE((*store)->save_fired({ours}).ok());
  REQUIRE((*store)->save_fired({theirs}, /*sent=*/true).ok());  // reported by the backend
  CHECK(unsent(**store) == std::vector<FiredThreshold>{ours});
  REQUIRE((*store)->mark_fired_sent({ours}).ok());
  CHECK(unsent(**store).empty());
  // Saved again unsent (this process fired it again after a restart's race): stays sent.
  REQUIRE((*store)->save_fired({ours, theirs}).ok());
  CHECK(unsent(**store).empty());
  // Every row is still a fired threshold.
  auto fired = (*store)->fired("u1", 0, 1000);
  REQUIRE(fired.ok());
  CHECK(fired->size() == 2);
}

// A hard gate is kept apart from a soft threshold of the same limit, period and ppm, and is held
// back from a backend that cannot store it (unsent_fired's with_hard).
TEST_CASE("store.hard_gates_are_kept_apart_and_sent_once") {
  testing::TempStore path;
  auto store = LocalStore::open(path.path());
  REQUIRE(store.ok());
  const FiredThreshold soft{"u1", "total_spend", 100, 1'000'000};
  const FiredThreshold hard{"u1", "total_spend", 100, 1'000'000, true, 123};
  REQUIRE((*store)->save_fired({soft, hard}).ok());
  REQUIRE((*store)->save_fired({FiredThreshold{"u1", "total_spend", 100, 1'000'000, true, 999}}).ok());  // kept: 123
  CHECK(unsent(**store) == std::vector<FiredThreshold>{soft, hard});
  auto older = (*store)->unsent_fired(100, /*with_hard=*/false);
  REQUIRE(older.ok());
  CHECK(*older == std::vector<FiredThreshold>{soft});
  REQUIRE((*store)->mark_fired_sent({hard}).ok());
  CHECK(unsent(**store) == std::vector<FiredThreshold>{soft});
  auto fired = (*store)->fired("u1", 0, 1000);
  REQUIRE(fired.ok());
  CHECK(fired->size() == 2);
}

TEST_CASE("store.a_previous_release_file_gets_sent_and_sends_its_fired_soft_gates") {
  testing::TempStore path;
  {
    // soft_gates_fired as the previous release (schema version 2) wrote it.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.path().c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE soft_gates_fired(user_id TEXT NOT NULL, limit_key TEXT NOT NULL, "
                         "period_start_ns INTEGER NOT NULL, threshold_ppm INTEGER NOT NULL, "
                         "PRIMARY KEY(user_id, period_start_ns, limit_key, threshold_ppm)) WITHOUT ROWID;"
                         "INSERT INTO soft_gates_fired VALUES('u1', 'total_spend', 100, 800000);",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = LocalStore::open(path.path());
  REQUIRE_MESSAGE(store.ok(), store.status().ToString());
  CHECK(unsent(**store) == std::vector<FiredThreshold>{{"u1", "total_spend", 100, 800'000}});
  store->reset();
  // Opened again: the upgrade is done once.
  store = LocalStore::open(path.path());
  REQUIRE_MESSAGE(store.ok(), store.status().ToString());
  CHECK(unsent(**store).size() == 1);
}

}  // namespace paygent::internal
