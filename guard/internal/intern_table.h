// An insert-only hash table of stable pointers with lock-free look-ups.
//
// Look-ups (the hot path) are an acquire load of the current slot array and a linear probe over
// slots that carry each entry's full hash beside its pointer: an entry is only touched when its
// hash matches, so a probe past other entries costs no cache miss. No lock, no allocation.
// Inserts take a mutex (a new user is a cold path) and may grow the array; retired arrays are kept
// until the table dies, so a reader holding an old array stays valid (the total is at most twice
// the final array). Entries are never removed, and never move.
//
// A slot may also carry kHints prefetch hints: addresses its owner will read right after finding
// the entry (a user's current period and session windows). The finder prefetches them as soon as
// the slot is read, so their misses overlap with the entry's own instead of following it: a cold
// user costs two dependent misses (slot, then everything else at once), not three. Hints are only
// prefetched, never dereferenced.
//
// Thread safety: find() and set_hint() are safe from any number of threads concurrently with each
// other and with find_or_insert(). The table owns its entries. T has a `hash` member.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "guard/internal/arena.h"

namespace paygent::internal {

template <class T, class Owned = std::unique_ptr<T>, int kHints = 0>
class InternTable {
  struct PlainSlot {
    std::atomic<std::uint64_t> hash{0};
    std::atomic<T*> entry{nullptr};
  };
  struct alignas(kHints == 2 ? 32 : 16) HintedSlot : PlainSlot {
    std::atomic<const void*> hints[kHints > 0 ? kHints : 1] = {};
  };

 public:
  using Slot = std::conditional_t<kHints == 0, PlainSlot, HintedSlot>;

  explicit InternTable(std::size_t initial_capacity = 1024) {
    std::size_t cap = 16;
    while (cap < initial_capacity * 2) cap <<= 1;
    arrays_.push_back(std::make_unique<Slots>(cap));
    current_.store(arrays_.back().get(), std::memory_order_release);
  }
  InternTable(const InternTable&) = delete;
  InternTable& operator=(const InternTable&) = delete;

  // The entry with `hash` for which `eq(entry)` holds, or nullptr. Lock-free, does not allocate.
  // `on_match(entry, slot)` runs when a slot's hash matches, before `eq` reads the entry: the
  // place to start the misses of what will be read next (the slot's hints).
  template <class Eq, class OnMatch>
  [[nodiscard]] T* find(std::uint64_t hash, Eq&& eq, OnMatch&& on_match) const noexcept {
    const Slots* s = current_.load(std::memory_order_acquire);
    for (std::size_t i = hash & s->mask;; i = (i + 1) & s->mask) {
      const Slot& slot = s->slots[i];
      T* e = slot.entry.load(std::memory_order_acquire);
      if (e == nullptr) return nullptr;
      if (slot.hash.load(std::memory_order_relaxed) == hash) {
        on_match(e, slot);
        if (eq(*e)) return e;
      }
    }
  }
  template <class Eq>
  [[nodiscard]] T* find(std::uint64_t hash, Eq&& eq) const noexcept {
    return find(hash, eq, [](const T*, const Slot&) {});
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
    place(*s, e->hash, e, nullptr);  // published last: readers never see a half-made entry
    return {e, true};
  }

  // Sets hint `i` of `e`'s slot (nothing when e is not in the table). Takes the insert lock, so
  // that a growing table cannot copy the slot's old hint after this has set the new one.
  void set_hint(const T* e, int i, const void* p) noexcept
    requires(kHints > 0)
  {
    std::lock_guard<std::mutex> lock(mu_);
    Slots* s = current_.load(std::memory_order_relaxed);
    for (std::size_t at = e->hash & s->mask;; at = (at + 1) & s->mask) {
      Slot& slot = s->slots[at];
      const T* here = slot.entry.load(std::memory_order_acquire);
      if (here == e) {
        slot.hints[i].store(p, std::memory_order_relaxed);
        return;
      }
      if (here == nullptr) return;  // not in the table: nothing to hint
    }
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
  // huge_alloc's memory is zeroed, which is every slot's empty state.
  struct Slots {
    static_assert(std::is_trivially_destructible_v<Slot>);
    explicit Slots(std::size_t n)
        : slots_size(n), mask(n - 1), slots(static_cast<Slot*>(huge_alloc(n * sizeof(Slot)))) {
      for (std::size_t i = 0; i < n; ++i) new (&slots[i]) Slot();
    }
    ~Slots() { huge_free(slots, slots_size * sizeof(Slot)); }
    Slots(const Slots&) = delete;
    Slots& operator=(const Slots&) = delete;
    std::size_t slots_size;
    std::size_t mask;
    Slot* slots;
  };

  // Fills an empty slot for `e`: hash and hints first, the entry pointer last (release).
  static void place(Slots& s, std::uint64_t hash, T* e, const Slot* from) {
    for (std::size_t i = hash & s.mask;; i = (i + 1) & s.mask) {
      Slot& slot = s.slots[i];
      if (slot.entry.load(std::memory_order_relaxed) == nullptr) {
        slot.hash.store(hash, std::memory_order_relaxed);
        if constexpr (kHints > 0) {
          if (from != nullptr) {
            for (int h = 0; h < kHints; ++h) {
              slot.hints[h].store(from->hints[h].load(std::memory_order_relaxed), std::memory_order_relaxed);
            }
          }
        }
        slot.entry.store(e, std::memory_order_release);
        return;
      }
    }
  }

  Slots* grow() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Slots* old = current_.load(std::memory_order_relaxed);
    arrays_.push_back(std::make_unique<Slots>(old->slots_size * 2));
    Slots* s = arrays_.back().get();
    for (std::size_t i = 0; i < old->slots_size; ++i) {
      const Slot& slot = old->slots[i];
      if (T* e = slot.entry.load(std::memory_order_relaxed)) place(*s, slot.hash.load(std::memory_order_relaxed), e, &slot);
    }
    current_.store(s, std::memory_order_release);
    return s;
  }

  mutable std::mutex mu_;
  std::vector<Owned> owned_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Slots>> arrays_ ABSL_GUARDED_BY(mu_);
  std::atomic<Slots*> current_{nullptr};
};

}  // namespace paygent::internal
