#include "paygent/context.h"  // first: proves the header stands alone

#include <doctest/doctest.h>

#include <thread>

namespace paygent {

TEST_CASE("guard.context.outside_any_scope_is_null") { CHECK(Context::current() == nullptr); }

TEST_CASE("guard.context.nested_inner_wins_outer_restored") {
  Context outer("alice", {.session_id = "s1", .agent_id = "support", .meta_tags = {{"tier", "pro"}}});
  REQUIRE(Context::current()->user_id == "alice");
  {
    Context inner("bob", {.indicator = "ticket", .meta_tags = {{"tier", "free"}, {"region", "eu"}}});
    const ContextData* c = Context::current();
    CHECK(c->user_id == "bob");
    CHECK(c->session_id == "s1");  // inherited
    CHECK(c->agent_id == "support");
    CHECK(c->indicator == "ticket");
    REQUIRE(c->meta_tags.size() == 2);
    CHECK(c->meta_tags[0] == std::pair<std::string, std::string>{"tier", "free"});
    CHECK(c->meta_tags[1] == std::pair<std::string, std::string>{"region", "eu"});
    {
      Context only_session("", {.session_id = "s2"});
      CHECK(Context::current()->user_id == "bob");
      CHECK(Context::current()->session_id == "s2");
    }
    CHECK(Context::current()->session_id == "s1");
  }
  CHECK(Context::current()->user_id == "alice");
  CHECK(Context::current()->indicator.empty());
}

TEST_CASE("guard.context.captured_scope_travels_to_another_thread") {
  Context::Captured captured;
  {
    Context ctx("carol", {.session_id = "chat-9"});
    captured = Context::capture();
  }
  CHECK(Context::current() == nullptr);
  std::string seen_user, seen_session;
  const ContextData* after = reinterpret_cast<const ContextData*>(1);
  std::thread worker([&] {
    {
      Context::Scope in(captured);
      seen_user = Context::current()->user_id;
      seen_session = Context::current()->session_id;
    }
    after = Context::current();
  });
  worker.join();
  CHECK(seen_user == "carol");
  CHECK(seen_session == "chat-9");
  CHECK(after == nullptr);
}

TEST_CASE("guard.context.capture_outside_scope_is_null") {
  CHECK(Context::capture() == nullptr);
  Context::Scope none(nullptr);
  CHECK(Context::current() == nullptr);
}

}  // namespace paygent
