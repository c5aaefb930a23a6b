// An insert-only hash table of stable pointers with lock-free look-ups.
//
// Look-ups (the hot path) are an acquire load of the current slot array and a linear probe: no
// lock, no allocation. Inserts take a mutex (a new user is a cold path) and may grow the array;
// retired arrays are kept until the table dies, so a reader holding an old array stays valid (the
// total is at most twice the final array). Entries are never removed, and never move.
//
// Thread safety: find() is safe from any number of threads concurrently with each other and with
// find_or_insert(). The table owns its entries.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "guard/internal/arena.h"

namespace paygent::internal {

template <class T, class Owned = std::unique_ptr<T>>
class InternTable {
 public:
  static constexpr int kPrefetchLines = 16;  // 1 KiB: a user, its period window and counters, its session

  explicit InternTable(std::size_t initial_capacity = 1024) {
    std::size_t cap = 16;
    while (cap < initial_capacity * 2) cap <<= 1;
    arrays_.push_back(std::make_unique<Slots>(cap));
    current_.store(arrays_.back().get(), std::memory_order_release);
  }
  InternTable(const InternTable&) = delete;
  InternTable& operator=(const InternTable&) = delete;

  // The entry with `hash` for which `eq(entry)` holds, or nullptr. Lock-free, does not allocate.
  template <class Eq>
  [[nodiscard]] T* find(std::uint64_t hash, Eq&& eq) const noexcept {
    const Slots* s = current_.load(std::memory_order_acquire);
    for (std::size_t i = hash & s->mask;; i = (i + 1) & s->mask) {
      T* e = s->slots[i].load(std::memory_order_acquire);
      if (e == nullptr) return nullptr;
      // What an entry points to was allocated right after it (a user's windows sit behind the
      // user in the arena): start those misses now, in parallel with the entry's own.
      for (int line = 1; line < kPrefetchLines; ++line) __builtin_prefetch(reinterpret_cast<const char*>(e) + 64 * line);
      if (e->hash == hash && eq(*e)) return e;
    }
  }

  // The existing entry, or a new one made by `make()` (which must set `hash`). The second member
  // is true when this call inserted it.
  template <class Eq, class Make>
  std::pair<T*, bool> find_or_insert(std::uint64_t hash, Eq&& eq, Make&& make) {
    if (T* e = find(hash, eq)) return {e, false};
    std::lock_guard<std::mutex> lock(mu_);
    if (T* e = find(hash, eq)) return {e, false};
    Owned owned = make();
    T* e = owned.get();
    Slots* s = current_.load(std::memory_order_relaxed);
    if ((owned_.size() + 1) * 2 > s->slots_size) s = grow();
    owned_.push_back(std::move(owned));
    place(*s, e);  // published last: readers never see a half-made entry
    return {e, true};
  }

  [[nodiscard]] std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return owned_.size();
  }

  // Calls f(T&) on every entry (a snapshot under the insert lock; entries may change meanwhile).
  template <class F>
  void for_each(F&& f) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : owned_) f(*e);
  }

 private:
  // The slot array lives on huge pages (huge_alloc): a lookup's probe should not cost a TLB miss.
  struct Slots {
    explicit Slots(std::size_t n)
        : slots_size(n), mask(n - 1), slots(static_cast<std::atomic<T*>*>(huge_alloc(n * sizeof(std::atomic<T*>)))) {
      for (std::size_t i = 0; i < n; ++i) new (&slots[i]) std::atomic<T*>(nullptr);
    }
    ~Slots() { huge_free(slots, slots_size * sizeof(std::atomic<T*>)); }
    Slots(const Slots&) = delete;
    Slots& operator=(const Slots&) = delete;
    std::size_t slots_size;
    std::size_t mask;
    std::atomic<T*>* slots;
  };

  static void place(Slots& s, T* e) {
    for (std::size_t i = e->hash & s.mask;; i = (i + 1) & s.mask) {
      if (s.slots[i].load(std::memory_order_relaxed) == nullptr) {
        s.slots[i].store(e, std::memory_order_release);
        return;
      }
    }
  }

  Slots* grow() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Slots* old = current_.load(std::memory_order_relaxed);
    arrays_.push_back(std::make_unique<Slots>(old->slots_size * 2));
    Slots* s = arrays_.back().get();
    for (const auto& e : owned_) place(*s, e.get());
    current_.store(s, std::memory_order_release);
    return s;
  }

  mutable std::mutex mu_;
  std::vector<Owned> owned_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Slots>> arrays_ ABSL_GUARDED_BY(mu_);
  std::atomic<Slots*> current_{nullptr};
};

}  // namespace paygent::internal
