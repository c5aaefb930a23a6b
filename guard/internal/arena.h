// Memory for the budget cache: per-user state packed together on transparent huge pages.
//
// A million users' budget state is a gigabyte spread over the heap; with 4 KiB pages every gate
// check of a cold user pays TLB misses (expensive under virtualisation). The arena bump-allocates
// users, windows and counters from 32 MiB chunks advised as huge pages, so a user's state sits in
// a few adjacent cache lines and the TLB covers the whole cache. Objects are never freed one by
// one: their destructors run when their owner drops them, the memory goes back when the arena
// dies (users and windows live as long as the engine anyway).
//
// Thread safety: allocate() is safe from any thread (it takes a mutex: only cold paths allocate).
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) && __has_include(<sanitizer/lsan_interface.h>)
#include <sanitizer/lsan_interface.h>
#define PAYGENT_LSAN_ROOTS 1
#endif

namespace paygent::internal {

// Anonymous memory advised as transparent huge pages (where the kernel allows it); zeroed.
// Under LeakSanitizer the memory is a root region: LSan does not scan mmap'd memory otherwise, and
// the heap objects that arena objects own (names, vectors) would be reported as leaked at exit
// while a never-freed Paygent (the process-wide instance) still holds them.
inline void* huge_alloc(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP it is ordinary memory
#ifdef PAYGENT_LSAN_ROOTS
  __lsan_register_root_region(p, bytes);
#endif
  return p;
}
inline void huge_free(void* p, std::size_t bytes) noexcept {
#ifdef PAYGENT_LSAN_ROOTS
  __lsan_unregister_root_region(p, bytes);
#endif
  ::munmap(p, bytes);
}

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() {
    for (auto& [p, n] : chunks_) huge_free(p, n);
  }

  void* allocate(std::size_t bytes, std::size_t align) {
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t at = (used_ + align - 1) & ~(align - 1);
    if (chunks_.empty() || at + bytes > chunks_.back().second) {
      const std::size_t size = std::max<std::size_t>(kChunk, bytes + align);
      chunks_.emplace_back(huge_alloc(size), size);
      used_ = 0;
      at = 0;
    }
    used_ = at + bytes;
    return static_cast<char*>(chunks_.back().first) + at;
  }

  template <class T, class... A>
  T* make(A&&... args) {
    return new (allocate(sizeof(T), alignof(T))) T(std::forward<A>(args)...);
  }

  // `n` value-initialised T (T must be trivially destructible: nobody runs their destructors).
  template <class T>
  T* make_array(std::size_t n) {
    static_assert(std::is_trivially_destructible_v<T>);
    // Whole cache lines, so that the next object does not share the last line.
    const std::size_t bytes = (sizeof(T) * n + 63) & ~std::size_t{63};
    T* p = static_cast<T*>(allocate(bytes, std::max<std::size_t>(alignof(T), 64)));
    for (std::size_t i = 0; i < n; ++i) new (p + i) T();
    return p;
  }

 private:
  static constexpr std::size_t kChunk = 32u << 20;
  std::mutex mu_;
  std::vector<std::pair<void*, std::size_t>> chunks_;  // guarded by mu_
  std::size_t used_ = 0;                               // guarded by mu_
};

// Runs the destructor only: the arena owns the memory.
template <class T>
struct ArenaDelete {
  void operator()(T* p) const noexcept { p->~T(); }
};
template <class T>
using ArenaPtr = std::unique_ptr<T, ArenaDelete<T>>;

}  // namespace paygent::internal
