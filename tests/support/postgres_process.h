// Test support (header-only): a real PostgreSQL server of the test's own, started from scratch in a
// temporary directory and removed with it. Used by the storage contract suite and the chaos tests.
//
//   if (std::string why = paygent::testing::postgres_unavailable(); !why.empty()) {
//     std::printf("%s%s\n", paygent::testing::kPostgresSkippedLine, why.c_str());  // ctest: skipped
//     return;
//   }
//   auto pg = paygent::testing::PostgresProcess::start();
//   PGconn* conn = PQconnectdb(pg->conninfo().c_str());  // postgresql://paygent@127.0.0.1:PORT/paygent
//   ...
//   pg->kill9();    // the server and all its backends die at once; the data directory stays
//   pg->restart();  // crash recovery, same port, same conninfo
//
// What it does: initdb (trust authentication, UTF8, C locale, no fsync) into <tmp>/data, then runs
// `postgres` itself (no pg_ctl, so the test knows its pid) listening on 127.0.0.1 only, on a port
// that was free a moment before (another one is tried if it is taken meanwhile), with its unix
// socket in <tmp>/socket and its output in <tmp>/postgres.log; waits until it accepts connections;
// creates a role and a database owned by it. It never uses or touches a cluster the machine runs
// (Debian's on port 5432, say), nor any PG* environment variable.
//
// PostgreSQL refuses to run as root, and CI runs the tests as root: then the server runs as the
// `postgres` system user (Debian's package creates it), or `nobody` without it, and the temporary
// directory is handed to that user. The server is made its own process group, so that kill9() and
// the destructor reach every backend, and it gets SIGKILL should the thread that started it die
// (PR_SET_PDEATHSIG): a crashed or timed-out test leaves no server behind, and the next start()
// on the machine removes the directory and shared memory segment it left. Start it from a thread
// that outlives it (the test's main thread).
//
// fsync is off: kill9() is a crash of the server's processes, which loses nothing committed, not a
// power cut. Synchronous commit stays on, so a committed row survives kill9().
//
// The server programs are looked for in $PAYGENT_POSTGRES_BINDIR, then /usr/lib/postgresql/<v>/bin
// (Debian, newest first), then the PATH. Failures are thrown as std::runtime_error with the tail of
// the server's log (doctest reports the message).
//
// Thread safety: a PostgresProcess is used by one thread at a time; distinct ones are independent.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace paygent::testing {

// A test that cannot run for want of PostgreSQL prints this, then the reason, on a line of its own;
// tests/CMakeLists.txt makes ctest report such a test as skipped.
inline constexpr const char* kPostgresSkippedLine = "SKIPPED: PostgreSQL tests: ";

namespace internal_postgres {

inline bool is_executable(const std::filesystem::path& p) { return ::access(p.c_str(), X_OK) == 0; }

inline bool has_server_programs(const std::filesystem::path& dir) {
  return is_executable(dir / "initdb") && is_executable(dir / "postgres");
}

// Whether any process of process group `pgid` is still alive (zombies count as gone: they hold no
// shared memory, no port, no file).
inline bool process_group_alive(pid_t pgid) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    const std::size_t close = stat.rfind(')');  // the command name may hold spaces and parentheses
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (!(fields >> state >> ppid >> pgrp)) continue;
    if (pgrp == pgid && state != 'Z' && state != 'X') return true;
  }
  return false;
}

// Waits up to `timeout` for every process of group `pgid` to be gone; false if some remain.
inline bool wait_group_gone(pid_t pgid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (process_group_alive(pgid)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A loopback TCP port that nobody listened on a moment ago.
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("cannot find a free loopback port: " + error);
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// The first number on line `n` (1-based) of `path`; -1 when absent.
inline long number_on_line(const std::filesystem::path& path, int n) {
  std::ifstream in(path);
  std::string line;
  for (int i = 0; i < n; ++i) {
    if (!std::getline(in, line)) return -1;
  }
  std::istringstream fields(line);
  long value = -1;
  return (fields >> value) ? value : -1;
}

// A server that was killed leaves its System V shared memory segment behind (a next start on the
// same data directory would reclaim it); its id is the second number on line 7 of the
// postmaster.pid `lock` file, which a clean shutdown removes. Call with no server process left.
inline void remove_shared_memory(const std::filesystem::path& lock) {
  std::ifstream in(lock);
  std::string line;
  for (int i = 0; i < 7 && std::getline(in, line); ++i) {
  }
  std::istringstream fields(line);
  long key = 0;
  int id = -1;
  if (in && (fields >> key >> id) && id >= 0) ::shmctl(id, IPC_RMID, nullptr);
}

// Removes what killed test processes left behind: each <tmp>/paygent-pg-* directory whose test
// process (the pid in its `owner.pid`) is gone and whose server (postmaster.pid) is not running,
// with the server's System V shared memory segment. Directories of live tests, and those without
// an owner file (being made right now), are left alone.
inline void remove_orphans() {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::temp_directory_path(ec), ec)) {
    if (entry.path().filename().string().rfind("paygent-pg-", 0) != 0) continue;
    const long owner = number_on_line(entry.path() / "owner.pid", 1);
    if (owner <= 0 || ::kill(static_cast<pid_t>(owner), 0) == 0 || errno != ESRCH) continue;
    const fs::path lock = entry.path() / "data" / "postmaster.pid";
    const long server = number_on_line(lock, 1);
    if (server > 0 && (::kill(static_cast<pid_t>(server), 0) == 0 || errno != ESRCH)) continue;
    remove_shared_memory(lock);
    fs::remove_all(entry.path(), ec);
  }
}

inline std::string quote_identifier(std::string_view name) {
  std::string quoted = "\"";
  for (char c : name) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace internal_postgres

// The directory holding PostgreSQL's `initdb` and `postgres`, or nullopt when there is none (see
// the header comment for where it looks).
inline std::optional<std::string> postgres_bindir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("PAYGENT_POSTGRES_BINDIR"); env != nullptr && *env != '\0') {
    if (internal_postgres::has_server_programs(env)) return std::string(env);
    return std::nullopt;  // asked for this one: do not silently take another
  }
  std::error_code ec;
  std::vector<std::pair<int, fs::path>> debian;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const int version = std::atoi(entry.path().filename().c_str());
    if (version > 0 && internal_postgres::has_server_programs(entry.path() / "bin")) {
      debian.emplace_back(version, entry.path() / "bin");
    }
  }
  if (!debian.empty()) return std::max_element(debian.begin(), debian.end())->second.string();
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string_view rest = path;
    while (!rest.empty()) {
      const std::size_t colon = rest.find(':');
      const fs::path dir(std::string(rest.substr(0, colon)));
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
      if (!dir.empty() && internal_postgres::has_server_programs(dir)) return dir.string();
    }
  }
  return std::nullopt;
}

// Empty when PostgresProcess::start() can be tried here; otherwise why not, in a sentence that
// says what to install or set.
inline std::string postgres_unavailable() {
  if (!postgres_bindir()) {
    if (const char* env = std::getenv("PAYGENT_POSTGRES_BINDIR"); env != nullptr && *env != '\0') {
      return std::string("no initdb and postgres in $PAYGENT_POSTGRES_BINDIR (") + env + ")";
    }
    return "PostgreSQL server programs (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on the PATH; "
           "install them with scripts/install-deps.sh (Debian: postgresql-15) or set PAYGENT_POSTGRES_BINDIR";
  }
  if (::geteuid() == 0 && ::getpwnam("postgres") == nullptr && ::getpwnam("nobody") == nullptr) {
    return "running as root, and neither a `postgres` nor a `nobody` user exists to run the server as";
  }
  return {};
}

// A PostgreSQL server child process on 127.0.0.1:<port>, its data in a temporary directory.
class PostgresProcess {
 public:
  struct Options {
    // The role and the database (owned by that role) that conninfo() names. The role may log in
    // without a password, like every role of this server (trust authentication, loopback only).
    std::string user = "paygent";
    std::string database = "paygent";
    // Extra server settings, each "name=value" as for `postgres -c` (e.g. "max_connections=200").
    std::vector<std::string> settings;
    // Longest wait for the server to accept connections, at start and at restart. A start takes
    // about a second (initdb included); crash recovery after kill9() a little more.
    std::chrono::milliseconds start_timeout = std::chrono::seconds(30);
    // Longest wait for a fast shutdown before the server is killed.
    std::chrono::milliseconds stop_timeout = std::chrono::seconds(10);
    // Where initdb and postgres are; empty: postgres_bindir().
    std::string bindir;
  };

  // Makes the temporary directory, runs initdb, starts the server, waits for it, creates the role
  // and the database. Throws std::runtime_error (with the log's tail) on any failure, having
  // removed everything it made.
  static std::unique_ptr<PostgresProcess> start() { return start(Options()); }
  static std::unique_ptr<PostgresProcess> start(Options options) {
    const auto began = std::chrono::steady_clock::now();
    if (options.bindir.empty()) {
      if (std::string why = postgres_unavailable(); !why.empty()) throw std::runtime_error(why);
      options.bindir = *postgres_bindir();
    }
    internal_postgres::remove_orphans();
    std::unique_ptr<PostgresProcess> pg(new PostgresProcess(std::move(options)));
    pg->make_directory();
    pg->run_initdb();
    for (int attempt = 1;; ++attempt) {
      pg->port_ = internal_postgres::free_loopback_port();
      const std::size_t log_size = pg->log_tail(std::string::npos).size();
      try {
        pg->start_server();
        break;
      } catch (const std::runtime_error&) {
        // The port was taken between the probe and the server's bind: another one, a few times.
        const std::string this_attempt = pg->log_tail(std::string::npos).substr(log_size);
        if (attempt >= 5 || this_attempt.find("Address already in use") == std::string::npos) throw;
      }
    }
    pg->create_role_and_database();
    pg->start_duration_ = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began);
    return pg;
  }

  // Stops the server (fast shutdown, then SIGKILL to all its processes past stop_timeout) and
  // removes the temporary directory. Never throws.
  ~PostgresProcess() {
    try {
      stop();
    } catch (...) {
      // Some process outlived SIGKILL (kill_group() sent it already): nothing more to do here.
    }
    if (!dir_.empty()) {
      internal_postgres::remove_shared_memory(data_directory() + "/postmaster.pid");
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    }
  }
  PostgresProcess(const PostgresProcess&) = delete;
  PostgresProcess& operator=(const PostgresProcess&) = delete;

  // "postgresql://<user>@127.0.0.1:<port>/<database>": what paygentd's --database takes and what
  // PQconnectdb() takes. Unchanged by kill9() and restart().
  [[nodiscard]] std::string conninfo() const {
    return "postgresql://" + options_.user + "@127.0.0.1:" + std::to_string(port_) + "/" + options_.database;
  }
  // The bootstrap superuser ("postgres") on the "postgres" database, for what a test must do as
  // an administrator (terminate backends, inspect locks).
  [[nodiscard]] std::string superuser_conninfo() const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/postgres";
  }
  [[nodiscard]] int port() const { return port_; }
  // The postmaster's pid (also its process group's id); -1 while stopped.
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool running() const { return pid_ > 0; }
  // The temporary directory holding data/, socket/ and postgres.log.
  [[nodiscard]] const std::string& directory() const { return dir_; }
  [[nodiscard]] std::string data_directory() const { return dir_ + "/data"; }
  [[nodiscard]] std::string log_path() const { return dir_ + "/postgres.log"; }
  // How long start() took, initdb included.
  [[nodiscard]] std::chrono::milliseconds start_duration() const { return start_duration_; }

  // The last `bytes` of the server's log (initdb's output, then the server's).
  [[nodiscard]] std::string log_tail(std::size_t bytes = 4000) const {
    std::ifstream in(log_path(), std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return all.size() > bytes ? all.substr(all.size() - bytes) : all;
  }

  // SIGKILL to the server and every backend at once (a crash: no checkpoint, no goodbye to
  // clients), then waits until all are gone. The data directory stays; restart() recovers it.
  void kill9() {
    kill_group();
  }

  // Fast shutdown (SIGINT: clients are disconnected, a checkpoint is written), then SIGKILL to all
  // the server's processes if it has not ended within stop_timeout. Nothing when stopped.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGINT);
    const auto deadline = std::chrono::steady_clock::now() + options_.stop_timeout;
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD)) {
        // The postmaster ends last. No signal to the group from here on: once it is reaped, its
        // id may be reused.
        const pid_t pgid = pid_;
        pid_ = -1;
        internal_postgres::wait_group_gone(pgid, options_.stop_timeout);
        return;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    kill_group();
  }

  // Stops the server if it runs (fast shutdown), then starts it again on the same data directory
  // and the same port, and waits until it accepts connections (after crash recovery, if kill9()
  // came before). Throws std::runtime_error with the log's tail if it does not come up (e.g. the
  // port was taken meanwhile).
  void restart() {
    stop();
    start_server();
  }

 private:
  explicit PostgresProcess(Options options) : options_(std::move(options)) {}

  void make_directory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "paygent-pg-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    dir_ = pattern;
    // Who made it: should this test process be killed, a later start() removes what it left.
    std::ofstream(dir_ + "/owner.pid") << ::getpid() << "\n";
    if (::geteuid() == 0) {
      const passwd* user = ::getpwnam("postgres");
      if (user == nullptr) user = ::getpwnam("nobody");
      if (user == nullptr) throw std::runtime_error(postgres_unavailable());
      uid_ = user->pw_uid;
      gid_ = user->pw_gid;
    } else {
      uid_ = ::geteuid();
      gid_ = ::getegid();
    }
    const std::string socket_dir = dir_ + "/socket";
    if (::mkdir(socket_dir.c_str(), 0700) != 0) throw std::runtime_error("mkdir " + socket_dir + ": " + std::strerror(errno));
    if (::geteuid() == 0) {
      if (::chown(dir_.c_str(), uid_, gid_) != 0 || ::chown(socket_dir.c_str(), uid_, gid_) != 0) {
        throw std::runtime_error("chown " + dir_ + ": " + std::strerror(errno));
      }
    }
  }

  // Forks and execs `args` (args[0] an absolute path) as the server user, in a process group of
  // its own, stdin from /dev/null, stdout and stderr appended to the log. Everything the child
  // needs is prepared here: between fork and exec it makes system calls only.
  pid_t spawn(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = {"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + dir_};
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int log = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log < 0 || null < 0) {
      if (log >= 0) ::close(log);
      if (null >= 0) ::close(null);
      throw std::runtime_error("cannot open " + log_path() + " or /dev/null");
    }
    const bool drop = ::geteuid() == 0;
    const uid_t uid = uid_;
    const gid_t gid = gid_;
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      if (::dup2(null, STDIN_FILENO) < 0 || ::dup2(log, STDOUT_FILENO) < 0 || ::dup2(log, STDERR_FILENO) < 0) ::_exit(126);
      ::close_range(3, ~0U, 0);
      if (drop && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) ::_exit(126);
      // After the credentials change, which clears it. If the test died already, so do we.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    const int fork_errno = errno;
    ::close(log);
    ::close(null);
    if (pid < 0) throw std::runtime_error("fork: " + std::string(std::strerror(fork_errno)));
    ::setpgid(pid, pid);  // also here, so that no signal to the group can come before the child's own
    return pid;
  }

  void run_initdb() {
    const pid_t pid = spawn({options_.bindir + "/initdb", "--pgdata=" + data_directory(), "--username=postgres",
                             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"});
    const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
        throw std::runtime_error("initdb failed (status " + std::to_string(status) + "); log " + log_path() +
                                 " ends:\n" + log_tail());
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        throw std::runtime_error("initdb did not finish in time; log ends:\n" + log_tail());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Starts `postgres` on port_ and waits until it accepts connections. On failure the server is
  // killed and the error carries the log's tail.
  void start_server() {
    std::vector<std::string> args = {options_.bindir + "/postgres",
                                     "-D", data_directory(),
                                     "-p", std::to_string(port_),
                                     "-c", "listen_addresses=127.0.0.1",
                                     "-c", "unix_socket_directories=" + dir_ + "/socket",
                                     "-c", "fsync=off",
                                     "-c", "full_page_writes=off",
                                     "-c", "logging_collector=off",
                                     // In the data directory rather than /dev/shm, which containers keep small.
                                     "-c", "dynamic_shared_memory_type=mmap"};
    for (const std::string& s : options_.settings) {
      args.push_back("-c");
      args.push_back(s);
    }
    pid_ = spawn(std::move(args));
    // Through the unix socket in our own directory: an answer there is from this server, never
    // from one that took the port meanwhile (the server binds its TCP port before that socket).
    const std::string ping = local_conninfo() + " connect_timeout=2";
    const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        const pid_t pgid = pid_;
        pid_ = -1;
        internal_postgres::wait_group_gone(pgid, std::chrono::seconds(5));
        throw std::runtime_error("postgres exited while starting (status " + std::to_string(status) + ") on port " +
                                 std::to_string(port_) + "; log " + log_path() + " ends:\n" + log_tail());
      }
      if (::PQping(ping.c_str()) == PQPING_OK) return;
      if (std::chrono::steady_clock::now() >= deadline) {
        kill_group();
        throw std::runtime_error("postgres did not accept connections on 127.0.0.1:" + std::to_string(port_) +
                                 " within " + std::to_string(options_.start_timeout.count()) + " ms; log " +
                                 log_path() + " ends:\n" + log_tail());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  void create_role_and_database() {
    std::unique_ptr<PGconn, decltype(&::PQfinish)> conn(::PQconnectdb(local_conninfo().c_str()), &::PQfinish);
    if (::PQstatus(conn.get()) != CONNECTION_OK) {
      throw std::runtime_error("cannot connect as the superuser: " + std::string(::PQerrorMessage(conn.get())));
    }
    for (const std::string& sql :
         {"CREATE ROLE " + internal_postgres::quote_identifier(options_.user) + " LOGIN",
          "CREATE DATABASE " + internal_postgres::quote_identifier(options_.database) + " OWNER " +
              internal_postgres::quote_identifier(options_.user)}) {
      std::unique_ptr<PGresult, decltype(&::PQclear)> result(::PQexec(conn.get(), sql.c_str()), &::PQclear);
      if (::PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
        throw std::runtime_error(sql + ": " + ::PQerrorMessage(conn.get()));
      }
    }
  }

  // The superuser on the "postgres" database through the unix socket in the temporary directory.
  [[nodiscard]] std::string local_conninfo() const {
    return "host=" + dir_ + "/socket port=" + std::to_string(port_) + " user=postgres dbname=postgres";
  }

  // SIGKILL to the server's whole process group, reaps the postmaster, and waits (bounded) until
  // every backend is gone too. Nothing when stopped.
  void kill_group() {
    if (pid_ <= 0) return;
    const pid_t pgid = pid_;
    ::kill(-pgid, SIGKILL);
    int status = 0;
    ::waitpid(pgid, &status, 0);
    pid_ = -1;
    if (!internal_postgres::wait_group_gone(pgid, std::chrono::seconds(10))) {
      throw std::runtime_error("processes of postgres group " + std::to_string(pgid) + " outlived SIGKILL");
    }
  }

  Options options_;
  std::string dir_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  int port_ = 0;
  pid_t pid_ = -1;
  std::chrono::milliseconds start_duration_{0};
};

}  // namespace paygent::testing
