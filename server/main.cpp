// paygentd: Paygent's backend. Flags and environment are documented by --help (kUsage below).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "server/api.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/sqlite_storage.h"

namespace {

constexpr std::string_view kUsage = R"(paygentd: Paygent's backend (REST + JSON over HTTP/1.1; see docs/wire.md).

Usage: paygentd --data-dir DIR [--listen HOST:PORT] [--admin-token TOKEN] [options]

  --data-dir DIR        Directory of the SQLite database (paygentd.db, WAL mode); created if
                        missing, readable by paygentd's user only (0700; the database files
                        are created 0600). One paygentd per directory (a lock file enforces it).
                        Env: PAYGENTD_DATA_DIR.
  --listen HOST:PORT    Address to listen on (default 127.0.0.1:8080). Port 0 picks a free
                        port. Once ready, paygentd prints one line to stdout:
                          paygentd listening on HOST:PORT
                        Env: PAYGENTD_LISTEN.
  --admin-token TOKEN   Bearer token that may create products (POST /api/v1/products). Without
                        one, product creation is refused (403). Prefer the environment, which
                        other users cannot read in the process list. Env: PAYGENTD_ADMIN_TOKEN.
  --max-body-bytes N    Largest request body (default 4194304 = 4 MiB; 413 past it).
                        Env: PAYGENTD_MAX_BODY_BYTES.
  --synchronous MODE    full (default): every acknowledged write is fsynced, and survives a
                        power loss. normal: survives a crash of paygentd (kill -9) but not of
                        the machine; faster where fsync is slow. Env: PAYGENTD_SYNCHRONOUS.
  --threads N           Threads serving requests (default: one per core, at least 2).
                        Env: PAYGENTD_THREADS.
  --help                This text.

Flags win over the environment; "--flag=value" works too. SIGTERM or SIGINT stops paygentd
cleanly: it stops accepting, answers the requests in flight, closes the database and exits 0.
Exit status: 0 after a clean stop, 1 when paygentd cannot run, 2 for a usage error.
)";

struct Flags {
  std::string data_dir;
  std::string listen = "127.0.0.1:8080";
  std::string admin_token;
  std::string max_body_bytes = "4194304";
  std::string synchronous = "full";
  std::string threads = "0";
};

int usage_error(std::string_view message) {
  std::cerr << "paygentd: " << message << "\n(paygentd --help lists the flags)" << std::endl;
  return 2;
}

std::optional<std::int64_t> parse_positive(std::string_view text) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  std::int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  // A client that goes away must not kill the server through a write on its socket or on stdout.
  std::signal(SIGPIPE, SIG_IGN);

  Flags flags;
  std::map<std::string_view, std::string*> by_name = {
      {"--data-dir", &flags.data_dir},         {"--listen", &flags.listen},
      {"--admin-token", &flags.admin_token},   {"--max-body-bytes", &flags.max_body_bytes},
      {"--synchronous", &flags.synchronous},   {"--threads", &flags.threads}};
  const std::map<std::string_view, const char*> env = {{"--data-dir", "PAYGENTD_DATA_DIR"},
                                                       {"--listen", "PAYGENTD_LISTEN"},
                                                       {"--admin-token", "PAYGENTD_ADMIN_TOKEN"},
                                                       {"--max-body-bytes", "PAYGENTD_MAX_BODY_BYTES"},
                                                       {"--synchronous", "PAYGENTD_SYNCHRONOUS"},
                                                       {"--threads", "PAYGENTD_THREADS"}};
  for (const auto& [flag, variable] : env) {
    if (const char* value = std::getenv(variable); value != nullptr) *by_name[flag] = value;
  }
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    std::string_view name = arg;
    std::optional<std::string_view> value;
    if (const std::size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    auto it = by_name.find(name);
    if (it == by_name.end()) return usage_error(std::string("unknown argument ") + std::string(arg));
    if (!value) {
      if (i + 1 >= argc) return usage_error(std::string(name) + " needs a value");
      value = argv[++i];
    }
    *it->second = std::string(*value);
  }
  if (flags.data_dir.empty()) return usage_error("--data-dir (or PAYGENTD_DATA_DIR) is required");
  const std::optional<std::int64_t> max_body = parse_positive(flags.max_body_bytes);
  if (!max_body || *max_body == 0) return usage_error("--max-body-bytes must be a positive integer");
  const std::optional<std::int64_t> threads = parse_positive(flags.threads);
  if (!threads || *threads > 1024) return usage_error("--threads must be an integer from 0 to 1024");
  paygent::server::SqliteOptions sqlite_options;
  if (flags.synchronous == "full") {
    sqlite_options.synchronous = paygent::server::SqliteOptions::Synchronous::kFull;
  } else if (flags.synchronous == "normal") {
    sqlite_options.synchronous = paygent::server::SqliteOptions::Synchronous::kNormal;
  } else {
    return usage_error("--synchronous must be full or normal");
  }

  // The data dir holds every tenant's usage: when paygentd creates it, only its user may enter it
  // (an existing one keeps the mode its operator gave it). Its parents are made as usual.
  std::error_code ec;
  std::string data_dir_text = flags.data_dir;
  while (data_dir_text.size() > 1 && data_dir_text.back() == '/') data_dir_text.pop_back();  // "dir/" is "dir"
  const std::filesystem::path data_dir(data_dir_text);
  if (!data_dir.parent_path().empty()) std::filesystem::create_directories(data_dir.parent_path(), ec);
  if (!ec && ::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) ec.assign(errno, std::generic_category());
  if (!ec && !std::filesystem::is_directory(data_dir, ec) && !ec) ec = std::make_error_code(std::errc::not_a_directory);
  if (ec) {
    std::cerr << "paygentd: cannot create " << flags.data_dir << ": " << ec.message() << std::endl;
    return 1;
  }
  // One paygentd per data dir. The kernel releases the lock when the process ends, however it ends.
  const std::string lock_path = (std::filesystem::path(flags.data_dir) / "paygentd.lock").string();
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::cerr << "paygentd: " << flags.data_dir << " is in use by another paygentd (" << lock_path << ")" << std::endl;
    return 1;
  }

  const std::string db_path = (std::filesystem::path(flags.data_dir) / "paygentd.db").string();
  absl::StatusOr<std::unique_ptr<paygent::server::SqliteStorage>> storage =
      paygent::server::SqliteStorage::open(db_path, sqlite_options);
  if (!storage.ok()) {
    std::cerr << "paygentd: " << storage.status() << std::endl;
    return 1;
  }
  paygent::server::Metrics metrics;
  paygent::server::Api api(**storage, metrics,
                           paygent::server::ApiOptions{.admin_token = flags.admin_token,
                                                       .max_body_bytes = static_cast<std::size_t>(*max_body)});
  const paygent::server::ServerOptions server_options{.listen = flags.listen, .threads = static_cast<int>(*threads)};
  const absl::Status served = paygent::server::serve(server_options, api, [&](std::string_view address) {
    std::cout << "paygentd listening on " << address << std::endl;  // flushed: tests read the port from it
    std::cerr << "paygentd: serving " << db_path << " (synchronous=" << flags.synchronous << ")" << std::endl;
  });
  if (!served.ok()) {
    std::cerr << "paygentd: " << served << std::endl;
    return 1;
  }
  storage->reset();  // closes the database (checkpointing the WAL) before saying so
  std::cerr << "paygentd: stopped cleanly" << std::endl;
  ::close(lock_fd);
  return 0;
}
