// The budget cache's hash table: lookups that skip other entries by their hash, growth that keeps
// every entry and its hints, and lock-free finds racing inserts (run under TSan too).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "guard/internal/intern_table.h"

namespace paygent::internal {
namespace {

struct Entry {
  std::uint64_t hash = 0;
  std::string key;
};

using Table = InternTable<Entry, std::unique_ptr<Entry>, 2>;

Entry* insert(Table& t, std::uint64_t hash, const std::string& key) {
  return t
      .find_or_insert(hash, [&](const Entry& e) { return e.key == key; },
                      [&] {
                        auto e = std::make_unique<Entry>();
                        e->hash = hash;
                        e->key = key;
                        return e;
                      })
      .first;
}

Entry* find(const Table& t, std::uint64_t hash, const std::string& key) {
  return t.find(hash, [&](const Entry& e) { return e.key == key; });
}

}  // namespace

TEST_CASE("guard.intern_table.entries_sharing_a_slot_or_a_whole_hash_are_told_apart") {
  Table t(8);  // 16 slots: every hash below lands in slot 3 first
  std::vector<Entry*> made;
  for (std::uint64_t i = 0; i < 6; ++i) made.push_back(insert(t, (i << 20) | 3, "k" + std::to_string(i)));
  // Two entries with the very same full hash are separated by their keys.
  Entry* twin = insert(t, (2u << 20) | 3, "twin");
  CHECK(twin != made[2]);
  for (std::uint64_t i = 0; i < 6; ++i) CHECK(find(t, (i << 20) | 3, "k" + std::to_string(i)) == made[i]);
  CHECK(find(t, (2u << 20) | 3, "twin") == twin);
  CHECK(find(t, (7u << 20) | 3, "k7") == nullptr);
  CHECK(find(t, (1u << 20) | 3, "k2") == nullptr);  // the right key under another hash is not found
  CHECK(insert(t, (4u << 20) | 3, "k4") == made[4]);  // found, not inserted again
  CHECK(t.size() == 7);
}

TEST_CASE("guard.intern_table.growth_keeps_every_entry_and_its_hints") {
  Table t(4);
  constexpr int kN = 20000;  // grows from 16 slots to 65,536
  std::vector<Entry*> made;
  std::vector<int> targets(kN);
  for (int i = 0; i < kN; ++i) {
    const std::uint64_t h = (static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ULL) | 1;
    made.push_back(insert(t, h, std::to_string(i)));
    t.set_hint(made.back(), 0, &targets[i]);
    if (i % 2 == 0) t.set_hint(made.back(), 1, &made[i]->key);
  }
  for (int i = 0; i < kN; ++i) {
    const std::uint64_t h = (static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ULL) | 1;
    const void* hint0 = nullptr;
    const void* hint1 = nullptr;
    const Entry* e = t.find(
        h, [&](const Entry& x) { return x.key == std::to_string(i); },
        [&](const Entry*, const Table::Slot& s) {
          hint0 = s.hints[0].load();
          hint1 = s.hints[1].load();
        });
    REQUIRE(e == made[i]);
    CHECK(hint0 == &targets[i]);
    CHECK(hint1 == (i % 2 == 0 ? static_cast<const void*>(&made[i]->key) : nullptr));
  }
}

TEST_CASE("guard.intern_table.a_hint_for_an_entry_not_in_the_table_is_ignored") {
  Table t(4);
  insert(t, 5, "a");
  Entry stranger{5, "b"};  // same hash, never inserted
  t.set_hint(&stranger, 0, &stranger);  // returns: finds an empty slot, not the entry
  const void* hint = &t;
  CHECK(t.find(5, [](const Entry& e) { return e.key == "a"; },
               [&](const Entry*, const Table::Slot& s) { hint = s.hints[0].load(); }) != nullptr);
  CHECK(hint == nullptr);
}

TEST_CASE("guard.intern_table.concurrency_finds_and_hints_race_inserts_and_growth") {
  Table t(4);
  constexpr int kN = 30000;
  auto hash = [](int i) { return (static_cast<std::uint64_t>(i) * 0xD6E8FEB86659FD93ULL) | 1; };
  std::vector<std::atomic<Entry*>> made(kN);
  std::vector<int> marker(kN);
  std::atomic<int> published{0};
  std::atomic<bool> wrong{false};
  std::atomic<std::int64_t> lookups{0};
  std::thread writer([&] {
    for (int i = 0; i < kN; ++i) {
      Entry* e = insert(t, hash(i), std::to_string(i));
      t.set_hint(e, 0, e);
      made[i].store(e, std::memory_order_relaxed);
      published.store(i + 1, std::memory_order_release);
    }
  });
  // Hints set from another thread while the table grows must all survive the growth.
  std::thread hinter([&] {
    for (int i = 0; i < kN;) {
      if (i >= published.load(std::memory_order_acquire)) continue;
      t.set_hint(made[i].load(std::memory_order_relaxed), 1, &marker[i]);
      ++i;
    }
  });
  std::thread reader([&] {
    for (std::uint64_t round = 0;; ++round) {
      const int n = published.load(std::memory_order_acquire);
      if (n == 0) continue;
      // A published entry: it must be found, whole, with its own hint.
      const int i = static_cast<int>((round * 7919) % static_cast<std::uint64_t>(n));
      const void* hint0 = nullptr;
      const Entry* e = t.find(
          hash(i), [&](const Entry& x) { return x.key == std::to_string(i); },
          [&](const Entry*, const Table::Slot& s) { hint0 = s.hints[0].load(std::memory_order_relaxed); });
      if (e == nullptr || e->hash != hash(i) || (hint0 != nullptr && hint0 != e)) wrong.store(true);
      lookups.fetch_add(1, std::memory_order_relaxed);
      if (n == kN && round > 1000) break;
    }
  });
  writer.join();
  hinter.join();
  reader.join();
  CHECK_FALSE(wrong.load());
  CHECK(lookups.load() > 1000);
  CHECK(t.size() == kN);
  for (int i = 0; i < kN; ++i) {
    const void* hint1 = nullptr;
    const Entry* e = t.find(hash(i), [&](const Entry& x) { return x.key == std::to_string(i); },
                            [&](const Entry*, const Table::Slot& s) { hint1 = s.hints[1].load(); });
    if (e == nullptr || hint1 != &marker[i]) {
      FAIL_CHECK("hint lost for entry " << i);
      break;
    }
  }
}

}  // namespace paygent::internal
