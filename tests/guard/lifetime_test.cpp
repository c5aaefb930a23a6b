// Lifetimes: what outlives a Paygent, and a Paygent destroyed while other threads call it.
// These run under ASan (and the "concurrency" ones under TSan) in CI: before the lifetime contract
// each of them was a use-after-free.
#include "paygent/paygent.h"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>
#include <vector>

#include "tests/guard/fixture.h"

namespace paygent {
namespace {

using testing::tokens;
constexpr Nanos kDollar = kNanosPerUsd;

std::unique_ptr<Paygent> make(PlanConfig c, Options o = {}) {
  o.plans = std::move(c);
  if (o.local_store_path == "paygent.db") o.local_store_path = "";
  return *Paygent::create(std::move(o));
}

PlanConfig model_capped(std::int64_t max_tokens) {
  Plan p = testing::round_plan();
  p.model_limits["gpt-4o"].max_tokens_per_period = max_tokens;
  return testing::config_with(p);
}

// Waits (bounded) until `done` holds; false on timeout, so that a broken contract fails the test
// instead of hanging it.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = std::chrono::milliseconds(10'000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

}  // namespace

TEST_CASE("guard.lifetime.reservation_destroyed_after_its_paygent") {
  std::vector<std::string> errors;
  Options o;
  o.on_error = [&](const absl::Status& s) { errors.push_back(std::string(s.message())); };
  auto pg = make(testing::config_with(testing::round_plan()), std::move(o));
  Context ctx("u1");
  std::optional<Reservation> open = pg->reserve("m", {.prompt_tokens = 10, .max_output_tokens = 10});
  Reservation moved_over = pg->reserve("m", {.prompt_tokens = 1});
  REQUIRE(open->active());
  pg.reset();  // the application shuts down with calls still in flight
  // Destroying the Paygent said so, once, while its callbacks were still valid.
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].find("2 reservations were still open") != std::string::npos);
  // What a Reservation exposes stays readable.
  CHECK(open->result().status == GateStatus::kOk);
  CHECK(open->reserved_cost() == 10 * 1'000 + 10 * 2'000);
  // Ending them now is a no-op (nothing left to meter into): no crash, no callback.
  moved_over = std::move(*open);  // releases what moved_over held
  open.reset();
  CHECK(moved_over.active());
  moved_over = Reservation();
  CHECK_FALSE(moved_over.active());
  CHECK(errors.size() == 1);
}

TEST_CASE("guard.lifetime.calls_after_shutdown_pass_through") {
  std::vector<std::string> errors;
  std::int64_t metered = 0;
  Options o;
  o.on_error = [&](const absl::Status& s) { errors.push_back(std::string(s.message())); };
  o.on_usage = [&](const UsageEvent&) { ++metered; };
  auto pg = make(testing::config_with(testing::round_plan()), std::move(o));
  Context ctx("u1");
  Reservation to_settle = pg->reserve("m", {.prompt_tokens = 10});
  Reservation to_release = pg->reserve("m", {.prompt_tokens = 10});
  pg->record("m", tokens(5, 5));
  REQUIRE(metered == 1);
  pg->shutdown();  // a server's shutdown path: stop metering first, destroy later
  pg->shutdown();  // idempotent
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].find("2 reservations were still open") != std::string::npos);
  CHECK(pg->check("m").status == GateStatus::kUnmetered);
  CHECK_FALSE(pg->reserve("m", {.prompt_tokens = 10}).active());
  pg->settle(to_settle, tokens(10, 10));
  pg->release(to_release);
  CHECK_FALSE(to_settle.active());
  CHECK_FALSE(to_release.active());
  pg->record("m", tokens(5, 5));
  CHECK(metered == 1);  // nothing more was metered, no callback ran
  CHECK(pg->report("u1").status().code() == absl::StatusCode::kUnavailable);
  CHECK(pg->flush().code() == absl::StatusCode::kUnavailable);
  CHECK(pg->set_plans(testing::config_with(testing::round_plan())).code() == absl::StatusCode::kUnavailable);
  CHECK(pg->stats().events == 1);
  CHECK(errors.size() == 1);
}

TEST_CASE("guard.lifetime.limit_exceeded_outlives_its_paygent") {
  auto pg = make(model_capped(100));
  std::optional<LimitExceeded> caught;
  {
    Context ctx(std::string("user-with-a-name-longer-than-any-small-string-buffer"));
    try {
      (void)pg->reserve("gpt-4o", {.prompt_tokens = 500});
    } catch (const LimitExceeded& e) {
      caught.emplace(e);
    }
  }
  REQUIRE(caught.has_value());
  const std::string what = caught->what();
  pg.reset();  // the exception is logged later, after the Paygent is gone
  const LimitExceeded copy = *caught;
  caught.reset();
  const GuardResult& r = copy.result();
  CHECK(r.status == GateStatus::kHardGate);
  CHECK(r.reason == GateReason::kModelLimit);
  CHECK(r.model == "gpt-4o");
  CHECK(r.user_id == "user-with-a-name-longer-than-any-small-string-buffer");
  CHECK(r.gate_reason() == "model_limit:gpt-4o");
  CHECK(r.message() == what);
  CHECK(r.message().find("gpt-4o") != std::string::npos);
  // Rethrown through std::exception_ptr (copied or not, as the implementation likes).
  std::exception_ptr ep = std::make_exception_ptr(copy);
  try {
    std::rethrow_exception(ep);
  } catch (const LimitExceeded& e) {
    CHECK(e.result().model == "gpt-4o");
    CHECK(e.result().message() == what);
  }
}

// A server's shutdown path: the Paygent is destroyed on one thread while others are inside it.
// The destructor waits for the calls already inside; calls that arrive while it runs pass through
// unmetered (kUnmetered) and touch nothing that is being freed.
TEST_CASE("guard.concurrency.lifetime.destroy_waits_for_calls_inside") {
  std::atomic<bool> in_callback{false}, let_go{false}, destroyed{false}, destroyed_too_early{false};
  Options o;
  o.on_usage = [&](const UsageEvent&) {
    in_callback = true;
    eventually([&] { return let_go.load(); });
    if (destroyed.load()) destroyed_too_early = true;  // the destructor must still be waiting
  };
  auto pg = make(testing::config_with(testing::round_plan()), std::move(o));
  Paygent* raw = pg.get();

  std::thread inside([&] {
    Context ctx("inside");
    Reservation r = raw->reserve("m", {.prompt_tokens = 10});
    raw->settle(r, tokens(10, 5));  // blocks in on_usage until let go
  });
  REQUIRE(eventually([&] { return in_callback.load(); }));

  std::thread destroyer([&] {
    pg.reset();
    destroyed = true;
  });

  // Another thread keeps calling until its calls pass through: the Paygent is being destroyed.
  std::atomic<bool> saw_pass_through{false};
  std::thread caller([&] {
    Context ctx("caller");
    eventually([&] {
      if (raw->check("m", {.prompt_tokens = 1}).status == GateStatus::kUnmetered) {
        saw_pass_through = true;
        return true;
      }
      return false;
    });
    // This thread makes no call after this point: the storage may be freed any time now.
  });
  caller.join();
  CHECK(saw_pass_through.load());
  CHECK_FALSE(destroyed.load());
  let_go = true;
  inside.join();
  destroyer.join();
  CHECK(destroyed.load());
  CHECK_FALSE(destroyed_too_early.load());
}

// Many threads reserving and settling while the Paygent is destroyed. Each keeps one Reservation
// open across the shutdown, which keeps the Paygent's storage alive, so that their calls made
// during the destruction are well defined; they stop calling once calls pass through.
TEST_CASE("guard.concurrency.lifetime.destroy_while_threads_reserve_and_settle") {
  Plan p = testing::round_plan();
  p.max_spend_per_period = 1000 * kDollar;
  std::atomic<int> reported_open{-1};
  Options o;
  o.on_error = [&](const absl::Status& s) {
    const std::string m(s.message());
    if (m.find(" still open when the Paygent shut down") != std::string::npos) reported_open = std::stoi(m);
  };
  auto pg = make(testing::config_with(p), std::move(o));
  Paygent* raw = pg.get();
  constexpr int kThreads = 4;
  std::atomic<int> started{0};
  std::atomic<std::int64_t> metered{0}, passed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Context ctx("user-" + std::to_string(t));
      Reservation held = raw->reserve("m", {.prompt_tokens = 1});
      ++started;
      for (;;) {
        Reservation r = raw->reserve("m", {.prompt_tokens = 10, .max_output_tokens = 10});
        if (!r.active()) break;  // passed through: the Paygent is closing
        if (raw->check("m").status == GateStatus::kUnmetered) break;
        raw->settle(r, tokens(10, 3));
        ++metered;
      }
      ++passed;
      // `held` ends here, after this thread's last call: a no-op once the Paygent is gone.
    });
  }
  REQUIRE(eventually([&] { return started.load() == kThreads && metered.load() > 100; }));
  pg.reset();
  for (auto& th : threads) th.join();
  CHECK(passed.load() == kThreads);
  // Every thread's held reservation, plus at most one in-flight call each that was still holding
  // its reservation when the destructor counted.
  CHECK(reported_open.load() >= kThreads);
  CHECK(reported_open.load() <= 2 * kThreads);
}

// The process-wide instance is never deallocated: threads that still call it while the process
// exits (static destruction, atexit) pass through, and what was metered was flushed at exit.
TEST_CASE("guard.lifetime.process_instance_survives_exit") {
  testing::TempStore store;
  std::fflush(nullptr);  // the child must not print the parent's buffered output again
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    Options o;
    o.plans = testing::config_with(testing::round_plan());
    o.local_store_path = store.path();
    o.local_commit_interval = absl::Hours(1);  // only the exit flush commits
    Paygent::init(std::move(o));
    std::atomic<bool> running{false};
    std::thread([&running] {
      Context ctx("late");
      Paygent* pg = Paygent::instance();
      for (;;) {
        Reservation r = pg->reserve("m", {.prompt_tokens = 1});
        pg->settle(r, tokens(1, 0));
        running = true;
      }
    }).detach();
    {
      Context ctx("flushed");
      Paygent::instance()->record("m", tokens(1000, 0));
    }
    while (!running) std::this_thread::yield();
    std::exit(0);  // static destruction and atexit run while the thread still calls
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  Options o;
  o.local_store_path = store.path();
  auto pg = make(testing::config_with(testing::round_plan()), std::move(o));
  auto rep = pg->report("flushed");
  REQUIRE(rep.ok());
  CHECK(rep->spend == 1000 * 1'000);
}

}  // namespace paygent
