// Integration-test support: a `paygent` CLI child process (`loadgen`, `sync`) whose stdout the
// test reads line by line, and which it can kill -9; and the ground truth `paygent loadgen`
// prints (what it recorded). Used by the integration test files.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/paygentd_process.h"

namespace paygent::testing {

class CliProcess {
 public:
  // Starts `paygent <args...>` with the test's environment plus `extra_env` ("NAME=value"). Its
  // stdout is read by line() and read_to_end(); with `with_stderr`, its stderr too, interleaved.
  explicit CliProcess(std::vector<std::string> args, std::vector<std::string> extra_env = {},
                      bool with_stderr = false) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    args.insert(args.begin(), PAYGENT_CLI_PATH);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    if (with_stderr) posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
    const int spawned = ::posix_spawn(&pid_, PAYGENT_CLI_PATH, &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    fd_ = fds[0];
    REQUIRE(spawned == 0);
  }
  ~CliProcess() {
    if (pid_ > 0) kill_hard();
    ::close(fd_);
  }
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }

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
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return "";
      buf_.append(c, static_cast<std::size_t>(n));
    }
  }

  // Appends the rest of the output to `out` until the process closes it; false after `timeout`.
  bool read_to_end(std::string& out, std::chrono::seconds timeout) {
    out += buf_;
    buf_.clear();
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char c[4096];
      const ssize_t n = ::read(fd_, c, sizeof c);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return true;
      out.append(c, static_cast<std::size_t>(n));
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

// --- `paygent loadgen`'s ground truth -----------------------------------------------------------

// The integer after "name=" in a line of loadgen's output.
inline std::int64_t field(const std::string& line, const std::string& name) {
  const auto at = line.find(name + "=");
  REQUIRE_MESSAGE(at != std::string::npos, "no " << name << " in: " << line);
  return std::stoll(line.substr(at + name.size() + 1));
}

// What a loadgen run says it recorded.
struct Truth {
  std::int64_t calls = 0;
  std::int64_t failures = -1;
  std::int64_t gate_p50_ns = 0;
  std::int64_t gate_p99_ns = 0;
  std::map<std::string, std::int64_t> cost_by_user;
};

// Reads loadgen's "recorded ..." line and its `users` per-user lines.
inline Truth read_truth(CliProcess& p, int users) {
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

// `paygent loadgen` against a backend: `users` users named <prefix>user-<i>, `calls` calls, a
// 50 ms flush interval and up to 90 s to deliver everything at the end.
inline std::vector<std::string> loadgen_args(const std::string& url, const std::string& key,
                                             const std::string& store, const std::string& prefix, int users,
                                             int calls) {
  return {"loadgen", "--backend", url, "--api-key", key, "--store", store, "--prefix", prefix,
          "--users", std::to_string(users), "--calls", std::to_string(calls), "--flush-interval-ms", "50",
          "--deliver-seconds", "90"};
}

struct CliRun {
  int status = -1;
  std::string output;  // stdout and stderr, interleaved
};

// Runs the `paygent` CLI to its end (at most `timeout`) and returns its exit status and output.
inline CliRun run_cli(std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(180)) {
  CliProcess process(std::move(args), {}, /*with_stderr=*/true);
  CliRun run;
  if (!process.read_to_end(run.output, timeout)) {
    ::kill(process.pid(), SIGKILL);
    run.output += "\n[killed: no end within the timeout]";
  }
  run.status = process.wait();
  return run;
}

}  // namespace paygent::testing
