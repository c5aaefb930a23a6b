// paygent::Context: which user (and session, agent, indicator, meta tags) a call is made for.
//
// A Context is an RAII scope on the current thread. Scopes nest: the innermost wins, and the outer
// one is current again when the inner one ends. Fields an inner scope leaves empty are inherited
// from the outer one (meta tags merge, inner keys win). A call made outside any Context passes
// through Paygent unmetered and ungated.
//
//   auto pg = paygent::Paygent::create(options);   // absl::StatusOr<std::unique_ptr<Paygent>>
//   paygent::Context ctx("user_123", {.session_id = "chat-42"});
//   (*pg)->metered_call("gpt-4o", {.prompt_tokens = 900}, [&] { return call_openai(request); });
//
// Work handed to another thread or a coroutine keeps its user with capture():
//
//   auto captured = paygent::Context::capture();
//   pool.submit([captured] { paygent::Context::Scope in(captured); ...; });
//
// Thread safety: a Context object belongs to the thread that made it and must end on that thread,
// in reverse order of creation. A Captured value is immutable and may be copied to and used on any
// number of threads at once.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace paygent {

struct ContextOptions {
  std::string session_id;  // empty = the user's implicit session (expires after inactivity)
  std::string agent_id;
  std::string indicator;
  std::vector<std::pair<std::string, std::string>> meta_tags;
};

// The fields of the current scope, already merged with the enclosing scopes.
struct ContextData {
  std::string user_id;
  std::string session_id;
  std::string agent_id;
  std::string indicator;
  std::vector<std::pair<std::string, std::string>> meta_tags;
};

class Context {
 public:
  using Captured = std::shared_ptr<const ContextData>;

  // Enters a scope for `user_id`. An empty user_id inherits the enclosing scope's user (so a
  // nested scope can add a session or tags only); with no enclosing scope it is a scope with no
  // user, and calls in it are unmetered.
  explicit Context(std::string user_id, ContextOptions options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // The current scope's data on this thread, or nullptr outside any scope. The pointer is valid
  // until the scope ends.
  [[nodiscard]] static const ContextData* current() noexcept;

  // The current scope as a value that can be re-entered on another thread (nullptr outside any).
  [[nodiscard]] static Captured capture() noexcept;

  // Re-enters a captured scope on this thread for the lifetime of the Scope object. A null
  // Captured makes a scope with no user. Same nesting rules as Context.
  class Scope {
   public:
    explicit Scope(Captured captured) noexcept;
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Captured saved_;
  };

 private:
  Captured saved_;
};

}  // namespace paygent
