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
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/api.h"
#include "server/check_config.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/sqlite_storage.h"
#ifdef PAYGENT_WITH_POSTGRES
#include "server/postgres_storage.h"
#endif

namespace {

constexpr std::string_view kUsage = R"(paygentd: Paygent's backend (REST + JSON over HTTP/1.1; see docs/wire.md).

Usage: paygentd --data-dir DIR [--listen HOST:PORT] [--admin-token TOKEN] [options]
       paygentd --database postgresql://USER@HOST:PORT/DB [--listen HOST:PORT] [options]

  --data-dir DIR        Directory of the SQLite database (paygentd.db, WAL mode): the embedded
                        default. Created if missing, readable by paygentd's user only (0700; the
                        database files are created 0600). One paygentd per directory (a lock
                        file enforces it). Env: PAYGENTD_DATA_DIR.
  --database URI        A PostgreSQL database (15 or newer) instead of --data-dir, as a libpq
                        URI, e.g. postgresql://paygent:SECRET@db.internal:5432/paygent?sslmode=require
                        (prefer PAYGENTD_DATABASE or a ~/.pgpass file for the password). The tables
                        are created, or upgraded, at start. Any number of paygentd replicas may
                        serve the same database at once: ingest stays idempotent across them and
                        each reads what the others wrote. Env: PAYGENTD_DATABASE.
  --listen HOST:PORT    Address to listen on (default 127.0.0.1:8080). Port 0 picks a free
                        port. Once ready, paygentd prints one line to stdout:
                          paygentd listening on HOST:PORT
                        Env: PAYGENTD_LISTEN.
  --admin-token TOKEN   Bearer token that may create products (POST /api/v1/products). Without
                        one, product creation is refused (403). Prefer the environment, which
                        other users cannot read in the process list. Env: PAYGENTD_ADMIN_TOKEN.
  --max-body-bytes N    Largest request body (default 4194304 = 4 MiB; 413 past it).
                        Env: PAYGENTD_MAX_BODY_BYTES.
  --synchronous MODE    SQLite only. full (default): every acknowledged write is fsynced, and
                        survives a power loss. normal: survives a crash of paygentd (kill -9)
                        but not of the machine; faster where fsync is slow. (PostgreSQL: the
                        server's synchronous_commit decides.) Env: PAYGENTD_SYNCHRONOUS.
  --threads N           Threads serving requests (default: one per core, at least 2).
                        Env: PAYGENTD_THREADS.
  --lease-ttl-ms N      How long a budget lease lives after its grant (default 10000; 1 to
                        86400000; docs/leases.md). Longer: fewer renewals, but the budget of a
                        process that died stays held that long. Every replica on one database
                        should use the same value. Env: PAYGENTD_LEASE_TTL_MS.
  --webhook-workers N   Webhook deliveries posted at once (default 4; 1 to 64): each holds a
                        thread and a connection. docs/webhooks.md. Env: PAYGENTD_WEBHOOK_WORKERS.
  --webhook-timeout-ms N  Longest one delivery attempt may take, connect to answer (default
                        10000). Env: PAYGENTD_WEBHOOK_TIMEOUT_MS.
  --webhook-max-attempts N  Attempts before a delivery is marked failed (default 12).
                        Env: PAYGENTD_WEBHOOK_MAX_ATTEMPTS.
  --webhook-backoff-ms N  Delay before the first retry, doubled at each failure up to an hour,
                        with jitter (default 1000). Env: PAYGENTD_WEBHOOK_BACKOFF_MS.
  --webhook-poll-ms N   How often the sender looks for due deliveries when idle (default 1000).
                        Env: PAYGENTD_WEBHOOK_POLL_MS.
  --webhook-ca-file F   PEM certificates trusted for https:// webhook receivers, beside the
                        system's (a private CA). Env: PAYGENTD_WEBHOOK_CA_FILE.
  --forecast-horizon-s N  A forecast webhook fires for a user predicted to reach their cap within
                        this many seconds (default 86400). Env: PAYGENTD_FORECAST_HORIZON_S.
  --invoice-grace-s N   invoice_ready fires this many seconds after a billing period ends (default
                        3600: late events still count meanwhile; 0 to 2678400).
                        Env: PAYGENTD_INVOICE_GRACE_S.
  --secure-cookies yes|no  Mark the dashboard's session cookie Secure (sent over HTTPS only), for a
                        paygentd behind a TLS proxy (default no: plain HTTP on loopback works).
                        docs/dashboard.md. Env: PAYGENTD_SECURE_COOKIES.
  --check-config        Check the flags and the environment (data dir writable, PostgreSQL URI
                        and its TLS files, listen address free, admin token well formed), print
                        every problem, and exit 0 when paygentd can start, 1 otherwise, without
                        starting it. The systemd unit runs it before each start.
  --help                This text.

Flags win over the environment; "--flag=value" works too. SIGTERM or SIGINT stops paygentd
cleanly: it stops accepting, answers the requests in flight, lets the webhook deliveries in
flight finish, closes the database and exits 0.
Exit status: 0 after a clean stop, 1 when paygentd cannot run, 2 for a usage error.
)";

int usage_error(std::string_view message) {
  std::cerr << "paygentd: " << message << "\n(paygentd --help lists the flags)" << std::endl;
  return 2;
}

// Each problem on its own line; then `status`.
int report_problems(const std::vector<std::string>& problems, int status) {
  for (const std::string& problem : problems) std::cerr << "paygentd: " << problem << "\n";
  if (status == 2) std::cerr << "(paygentd --help lists the flags)\n";
  std::cerr << std::flush;
  return status;
}

// `uri` without the password of its user part (postgresql://user:SECRET@host → postgresql://user:***@host),
// for the log.
std::string redacted(std::string_view uri) {
  const std::size_t scheme = uri.find("://");
  const std::size_t at = uri.find('@');
  if (scheme == std::string_view::npos || at == std::string_view::npos || at < scheme) return std::string(uri);
  const std::size_t colon = uri.find(':', scheme + 3);
  if (colon == std::string_view::npos || colon > at) return std::string(uri);
  return std::string(uri.substr(0, colon + 1)) + "***" + std::string(uri.substr(at));
}

}  // namespace

int main(int argc, char** argv) {
  // A client that goes away must not kill the server through a write on its socket or on stdout.
  std::signal(SIGPIPE, SIG_IGN);

  paygent::server::DaemonFlags flags;
  bool check_config = false;
  std::map<std::string_view, std::string*> by_name = {
      {"--data-dir", &flags.data_dir},         {"--database", &flags.database},
      {"--listen", &flags.listen},
      {"--admin-token", &flags.admin_token},   {"--max-body-bytes", &flags.max_body_bytes},
      {"--synchronous", &flags.synchronous},   {"--threads", &flags.threads},
      {"--lease-ttl-ms", &flags.lease_ttl_ms},
      {"--webhook-workers", &flags.webhook_workers},
      {"--webhook-timeout-ms", &flags.webhook_timeout_ms},
      {"--webhook-max-attempts", &flags.webhook_max_attempts},
      {"--webhook-backoff-ms", &flags.webhook_backoff_ms},
      {"--webhook-poll-ms", &flags.webhook_poll_ms},
      {"--webhook-ca-file", &flags.webhook_ca_file},
      {"--forecast-horizon-s", &flags.forecast_horizon_s},
      {"--invoice-grace-s", &flags.invoice_grace_s},
      {"--secure-cookies", &flags.secure_cookies}};
  const std::map<std::string_view, const char*> env = {{"--data-dir", "PAYGENTD_DATA_DIR"},
                                                       {"--database", "PAYGENTD_DATABASE"},
                                                       {"--listen", "PAYGENTD_LISTEN"},
                                                       {"--admin-token", "PAYGENTD_ADMIN_TOKEN"},
                                                       {"--max-body-bytes", "PAYGENTD_MAX_BODY_BYTES"},
                                                       {"--synchronous", "PAYGENTD_SYNCHRONOUS"},
                                                       {"--threads", "PAYGENTD_THREADS"},
                                                       {"--lease-ttl-ms", "PAYGENTD_LEASE_TTL_MS"},
                                                       {"--webhook-workers", "PAYGENTD_WEBHOOK_WORKERS"},
                                                       {"--webhook-timeout-ms", "PAYGENTD_WEBHOOK_TIMEOUT_MS"},
                                                       {"--webhook-max-attempts", "PAYGENTD_WEBHOOK_MAX_ATTEMPTS"},
                                                       {"--webhook-backoff-ms", "PAYGENTD_WEBHOOK_BACKOFF_MS"},
                                                       {"--webhook-poll-ms", "PAYGENTD_WEBHOOK_POLL_MS"},
                                                       {"--webhook-ca-file", "PAYGENTD_WEBHOOK_CA_FILE"},
                                                       {"--forecast-horizon-s", "PAYGENTD_FORECAST_HORIZON_S"},
                                                       {"--invoice-grace-s", "PAYGENTD_INVOICE_GRACE_S"},
                                                       {"--secure-cookies", "PAYGENTD_SECURE_COOKIES"}};
  for (const auto& [flag, variable] : env) {
    if (const char* value = std::getenv(variable); value != nullptr) *by_name[flag] = value;
  }
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--check-config") {
      check_config = true;
      continue;
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
  paygent::server::DaemonConfig config;
  std::vector<std::string> problems = paygent::server::validate_flags(flags, &config);
  if (check_config) {
    for (std::string& problem : paygent::server::check_environment(flags)) problems.push_back(std::move(problem));
    if (!problems.empty()) return report_problems(problems, 1);
    std::cout << "paygentd: configuration OK: "
              << (config.database.empty() ? "SQLite in " + config.data_dir : "PostgreSQL " + redacted(config.database))
              << ", listening on " << config.listen
              << (config.admin_token.empty() ? ", no admin token (product creation refused)" : "") << std::endl;
    return 0;
  }
  if (!problems.empty()) return report_problems(problems, 2);
  paygent::server::SqliteOptions sqlite_options;
  sqlite_options.synchronous = config.synchronous;

  std::unique_ptr<paygent::server::Storage> storage;
  std::string serving;  // what paygentd says it serves
  int lock_fd = -1;
  if (!flags.database.empty()) {
#ifdef PAYGENT_WITH_POSTGRES
    absl::StatusOr<std::unique_ptr<paygent::server::PostgresStorage>> pg =
        paygent::server::PostgresStorage::open(flags.database);
    if (!pg.ok()) {
      std::cerr << "paygentd: " << pg.status() << std::endl;
      return 1;
    }
    storage = *std::move(pg);
    serving = "PostgreSQL " + redacted(flags.database);
#else
    std::cerr << "paygentd: this paygentd was built without PostgreSQL (configure with -DPAYGENT_WITH_POSTGRES=ON)"
              << std::endl;
    return 1;
#endif
  } else {
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
    lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      std::cerr << "paygentd: " << flags.data_dir << " is in use by another paygentd (" << lock_path << ")" << std::endl;
      return 1;
    }

    const std::string db_path = (std::filesystem::path(flags.data_dir) / "paygentd.db").string();
    absl::StatusOr<std::unique_ptr<paygent::server::SqliteStorage>> sqlite =
        paygent::server::SqliteStorage::open(db_path, sqlite_options);
    if (!sqlite.ok()) {
      std::cerr << "paygentd: " << sqlite.status() << std::endl;
      return 1;
    }
    storage = *std::move(sqlite);
    serving = db_path + " (synchronous=" + flags.synchronous + ")";
  }
  paygent::server::Metrics metrics;
  // The webhooks' sender: off the request path, on threads of its own, from the outbox in the
  // database (docs/webhooks.md); stopped after the server, before the database is closed.
  absl::StatusOr<paygent::server::WebhookPoster> poster = paygent::server::webhook_poster(config.webhook_ca_file);
  if (!poster.ok()) {
    std::cerr << "paygentd: " << poster.status().message() << std::endl;
    return 2;
  }
  paygent::server::WebhookSender sender(*storage, *std::move(poster),
                                        paygent::server::WebhookSenderOptions{
                                            .workers = config.webhook_workers,
                                            .timeout = config.webhook_timeout,
                                            .base_backoff = config.webhook_backoff,
                                            .max_attempts = config.webhook_max_attempts,
                                            .poll_interval = config.webhook_poll,
                                        },
                                        &metrics);
  paygent::server::Api api(*storage, metrics,
                           paygent::server::ApiOptions{.admin_token = config.admin_token,
                                                       .max_body_bytes = config.max_body_bytes,
                                                       .lease_ttl = config.lease_ttl,
                                                       .forecast_horizon = config.forecast_horizon,
                                                       .secure_cookies = config.secure_cookies,
                                                       .on_alerts = [&sender] { sender.wake(); },
                                                       .invoice_grace = config.invoice_grace});
  sender.start();
  // invoice_ready alerts (docs/webhooks.md): a period that ended is looked for once a minute, off
  // the request path; raising is idempotent (the alert's key), so replicas may all look.
  absl::Mutex invoices_mu;
  bool invoices_stop = false;
  std::thread invoices([&] {
    absl::MutexLock lock(&invoices_mu);
    while (!invoices_stop) {
      invoices_mu.Unlock();
      if (absl::StatusOr<int> raised = api.raise_invoice_ready(absl::Now()); !raised.ok()) {
        std::cerr << "paygentd: invoice_ready alerts: " << raised.status() << std::endl;
      }
      invoices_mu.Lock();
      invoices_mu.AwaitWithTimeout(absl::Condition(&invoices_stop), absl::Minutes(1));
    }
  });
  auto stop_invoices = [&] {
    {
      absl::MutexLock lock(&invoices_mu);
      invoices_stop = true;
    }
    invoices.join();
  };
  const paygent::server::ServerOptions server_options{.listen = config.listen, .threads = config.threads};
  const absl::Status served = paygent::server::serve(server_options, api, [&](std::string_view address) {
    std::cout << "paygentd listening on " << address << std::endl;  // flushed: tests read the port from it
    std::cerr << "paygentd: serving " << serving << std::endl;
  });
  if (!served.ok()) {
    stop_invoices();
    sender.stop();
    std::cerr << "paygentd: " << served << std::endl;
    return 1;
  }
  stop_invoices();  // before the sender and the database it uses
  sender.stop();    // lets each delivery in flight finish (at most --webhook-timeout-ms)
  storage.reset();  // closes the database (checkpointing SQLite's WAL) before saying so
  std::cerr << "paygentd: stopped cleanly" << std::endl;
  if (lock_fd >= 0) ::close(lock_fd);
  return 0;
}
