// Application processes (`paygent loadgen`, the library with a backend) against the real paygentd
// on loopback: totals compared with ground truth through crashes and outages of either side.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/paygentd_process.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";

// A `paygent` CLI child process whose stdout we read line by line.
class CliProcess {
 public:
  explicit CliProcess(std::vector<std::string> args) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    args.insert(args.begin(), PAYGENT_CLI_PATH);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    REQUIRE(::posix_spawn(&pid_, PAYGENT_CLI_PATH, &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    fd_ = fds[0];
  }
  ~CliProcess() {
    if (pid_ > 0) kill_hard();
    ::close(fd_);
  }

  // The next line of output, or "" at the end of the output or after `timeout`.
  std::string line(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
      char c[4096];
      const ssize_t n = ::read(fd_, c, sizeof c);
      if (n <= 0) return "";
      buf_.append(c, static_cast<std::size_t>(n));
    }
  }

  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void kill_hard() {
    ::kill(pid_, SIGKILL);
    wait();
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buf_;
};

// What a loadgen run says it recorded.
struct Truth {
  std::int64_t calls = 0;
  std::int64_t failures = -1;
  std::int64_t gate_p50_ns = 0;
  std::int64_t gate_p99_ns = 0;
  std::map<std::string, std::int64_t> cost_by_user;
};

std::int64_t field(const std::string& line, const std::string& name) {
  const auto at = line.find(name + "=");
  REQUIRE_MESSAGE(at != std::string::npos, "no " << name << " in: " << line);
  return std::stoll(line.substr(at + name.size() + 1));
}

// Reads loadgen's "recorded ..." line and its `users` per-user lines.
Truth read_truth(CliProcess& p, int users) {
  Truth t;
  std::string l = p.line();
  REQUIRE_MESSAGE(l.rfind("recorded ", 0) == 0, "loadgen said: " << l);
  t.calls = field(l, "calls");
  t.failures = field(l, "failures");
  t.gate_p50_ns = field(l, "gate_p50_ns");
  t.gate_p99_ns = field(l, "gate_p99_ns");
  for (int i = 0; i < users; ++i) {
    l = p.line();
    REQUIRE(l.rfind("user ", 0) == 0);
    t.cost_by_user[l.substr(5, l.find(' ', 5) - 5)] = field(l, "cost_nanos");
  }
  return t;
}

struct BackendTotals {
  std::int64_t calls = 0;
  std::map<std::string, std::int64_t> cost_by_user;
};

// Every event the backend holds for the product, grouped by user.
BackendTotals backend_totals(int port, const std::string& key) {
  HttpClient http(port);
  auto reply = http.request("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9000000000000000000&group_by=user", {}, key);
  REQUIRE(reply.has_value());
  REQUIRE_MESSAGE(reply->status == 200, reply->body);
  simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(reply->body);
  BackendTotals out;
  for (simdjson::dom::element row : doc["rows"].get_array()) {
    const std::string user(row["key"].get_string().value());
    out.cost_by_user[user] = row["cost_nanos"].get_int64().value();
    out.calls += row["calls"].get_int64().value();
  }
  return out;
}

std::vector<std::string> loadgen_args(const std::string& url, const std::string& key, const std::string& store,
                                      const std::string& prefix, int users, int calls) {
  return {"loadgen", "--backend", url, "--api-key", key, "--store", store, "--prefix", prefix,
          "--users", std::to_string(users), "--calls", std::to_string(calls), "--flush-interval-ms", "50",
          "--deliver-seconds", "90"};
}

}  // namespace

TEST_CASE("integration.three_application_processes_sum_exactly") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");
  std::vector<std::unique_ptr<CliProcess>> apps;
  for (int i = 0; i < 3; ++i) {
    apps.push_back(std::make_unique<CliProcess>(loadgen_args(paygentd->base_url(), key,
                                                             dir.path() + "/app" + std::to_string(i) + ".db",
                                                             "p" + std::to_string(i) + "-", 4, 3000)));
  }
  std::map<std::string, std::int64_t> expected;
  std::int64_t expected_calls = 0;
  for (auto& app : apps) {
    const Truth t = read_truth(*app, 4);
    CHECK(t.failures == 0);
    expected_calls += t.calls;
    for (const auto& [u, c] : t.cost_by_user) expected[u] += c;
    CHECK(app->line().rfind("delivered all", 0) == 0);
    CHECK(app->wait() == 0);
  }
  const BackendTotals got = backend_totals(paygentd->port(), key);
  CHECK(expected_calls == 9000);
  CHECK(got.calls == expected_calls);
  CHECK(got.cost_by_user == expected);
}

TEST_CASE("integration.paygentd_killed_mid_ingest_loses_nothing_counts_nothing_twice") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  const int port = paygentd->port();
  std::string key;
  {
    HttpClient http(port);
    key = create_product(http, kAdmin, "acme");
  }
  // Small batches, paced calls: ingest is in full swing when the backend dies.
  auto args = loadgen_args(paygentd->base_url(), key, dir.path() + "/app.db", "", 5, 20000);
  args.insert(args.end(), {"--batch-size", "20", "--pace-us", "100"});
  CliProcess app(args);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  paygentd->kill_hard();  // kill -9 in the middle of ingest
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto restarted = PaygentdProcess::start({.data_dir = dir.path() + "/server",
                                           .admin_token = kAdmin,
                                           .extra_args = {"--listen", "127.0.0.1:" + std::to_string(port)}});
  REQUIRE(restarted->port() == port);
  const Truth t = read_truth(app, 5);
  CHECK(t.failures == 0);
  const std::string last = app.line();
  CHECK_MESSAGE(last.rfind("delivered all", 0) == 0, last);
  CHECK(app.wait() == 0);
  const BackendTotals got = backend_totals(port, key);
  CHECK(got.calls == 20000);
  CHECK(got.cost_by_user == t.cost_by_user);
}

TEST_CASE("integration.backend_down_under_load_blocks_nothing_then_everything_arrives") {
  TempDir dir;
  // Learn a free port from a paygentd we stop at once: the backend is down while the app works.
  auto first = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  const int port = first->port();
  std::string key;
  {
    HttpClient http(port);
    key = create_product(http, kAdmin, "acme");
  }
  REQUIRE(first->terminate() == 0);
  CliProcess app(loadgen_args("http://127.0.0.1:" + std::to_string(port), key, dir.path() + "/app.db", "", 3, 20000));
  const Truth t = read_truth(app, 3);
  CHECK(t.failures == 0);     // not one call blocked or failed during the outage
  CHECK(t.calls == 20000);
  // Gate latency stays in the benchmark's range (hundreds of ns), far from a network wait.
  CHECK(t.gate_p50_ns < 5'000);
  CHECK(t.gate_p99_ns < 100'000);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto back = PaygentdProcess::start({.data_dir = dir.path() + "/server",
                                      .admin_token = kAdmin,
                                      .extra_args = {"--listen", "127.0.0.1:" + std::to_string(port)}});
  const std::string last = app.line();
  CHECK_MESSAGE(last.rfind("delivered all", 0) == 0, last);
  CHECK(app.wait() == 0);
  const BackendTotals got = backend_totals(port, key);
  CHECK(got.calls == 20000);
  CHECK(got.cost_by_user == t.cost_by_user);
}

TEST_CASE("integration.application_killed_its_spool_is_delivered_on_restart") {
  // The loss window of an application crash is the local store's group commit (20 ms by default):
  // events committed to the spool survive kill -9 and are delivered by the next process.
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");
  // The application cannot reach the backend before it dies, so its spool holds everything.
  auto args = loadgen_args("http://127.0.0.1:1", key, dir.path() + "/app.db", "", 3, 5000);
  args.push_back("--hang");
  CliProcess app(args);
  const Truth t = read_truth(app, 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // past the 20 ms commit window
  app.kill_hard();  // kill -9 of the application
  CHECK(backend_totals(paygentd->port(), key).calls == 0);
  CliProcess sync({"sync", "--backend", paygentd->base_url(), "--api-key", key, "--store", dir.path() + "/app.db",
                   "--deliver-seconds", "60"});
  CHECK(sync.line().rfind("delivered all", 0) == 0);
  CHECK(sync.wait() == 0);
  const BackendTotals got = backend_totals(paygentd->port(), key);
  CHECK(got.calls == 5000);
  CHECK(got.cost_by_user == t.cost_by_user);
}

TEST_CASE("integration.bad_api_key_is_refused_and_nothing_is_stored") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "acme");
  CliProcess app({"loadgen", "--backend", paygentd->base_url(), "--api-key", "pg_live_wrong", "--store",
                  dir.path() + "/app.db", "--calls", "100", "--deliver-seconds", "2"});
  const Truth t = read_truth(app, 5);
  CHECK(t.failures == 0);  // fail-open: the application's calls still ran
  CHECK(app.line().rfind("delivered partial", 0) == 0);
  CHECK(app.wait() == 1);
  CHECK(backend_totals(paygentd->port(), key).calls == 0);
}

}  // namespace paygent::testing
