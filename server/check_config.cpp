#include "server/check_config.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#ifdef PAYGENT_WITH_POSTGRES
#include <libpq-fe.h>
#endif

namespace paygent::server {
namespace {

using absl::StrCat;

std::optional<std::int64_t> parse_positive(std::string_view text) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  std::int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

// HOST:PORT split at its last colon ("[::1]:8080" keeps its brackets in host), or nullopt when
// it is not that shape or the port is not 0..65535.
struct HostPort {
  std::string host;
  std::string port;
};
std::optional<HostPort> split_listen(const std::string& listen) {
  const std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  const std::optional<std::int64_t> port = parse_positive(std::string_view(listen).substr(colon + 1));
  if (!port || *port > 65535) return std::nullopt;
  return HostPort{listen.substr(0, colon), listen.substr(colon + 1)};
}

std::string errno_text(int error) { return std::strerror(error); }

std::string uid_text() { return StrCat("uid ", ::geteuid()); }

void check_data_dir(std::string dir, std::vector<std::string>& problems) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      problems.push_back(StrCat("--data-dir: ", dir, " is not a directory"));
    } else if (::access(dir.c_str(), W_OK | X_OK) != 0) {
      problems.push_back(StrCat("--data-dir: ", dir, " is not writable by ", uid_text(), ": ", errno_text(errno)));
    } else {
      for (const char* name : {"paygentd.db", "paygentd.db-wal", "paygentd.db-shm", "paygentd.lock"}) {
        const std::string file = StrCat(dir, "/", name);
        if (::access(file.c_str(), F_OK) == 0 && ::access(file.c_str(), R_OK | W_OK) != 0) {
          problems.push_back(StrCat("--data-dir: ", file, " is not readable and writable by ", uid_text(), ": ",
                                    errno_text(errno)));
        }
      }
    }
    return;
  }
  if (errno != ENOENT) {
    problems.push_back(StrCat("--data-dir: ", dir, ": ", errno_text(errno)));
    return;
  }
  // paygentd would create it (and its parents): the nearest existing parent must let it.
  std::filesystem::path parent = std::filesystem::absolute(std::filesystem::path(dir)).parent_path();
  while (::access(parent.c_str(), F_OK) != 0 && parent.has_parent_path() && parent != parent.parent_path()) {
    parent = parent.parent_path();
  }
  if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || ::access(parent.c_str(), W_OK | X_OK) != 0) {
    problems.push_back(StrCat("--data-dir: ", dir, " does not exist and cannot be created: ", parent.string(),
                              " is not a directory writable by ", uid_text()));
  }
}

void check_database(const std::string& uri, std::vector<std::string>& problems) {
#ifdef PAYGENT_WITH_POSTGRES
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(uri.c_str(), &error);
  if (options == nullptr) {
    std::string text = error != nullptr ? error : "out of memory";
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    problems.push_back(StrCat("--database: not a valid PostgreSQL URI: ", text));
    if (error != nullptr) PQfreemem(error);
    return;
  }
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr || *option->val == '\0') continue;
    const std::string keyword = option->keyword;
    const std::string value = option->val;
    if (keyword == "sslcert" || keyword == "sslkey" || keyword == "sslrootcert" || keyword == "sslcrl") {
      if (keyword == "sslrootcert" && value == "system") continue;  // libpq 16: the system's CAs
      if (::access(value.c_str(), R_OK) != 0) {
        problems.push_back(
            StrCat("--database: ", keyword, " ", value, " is not readable by ", uid_text(), ": ", errno_text(errno)));
      }
    } else if (keyword == "sslmode" && value != "disable" && value != "allow" && value != "prefer" &&
               value != "require" && value != "verify-ca" && value != "verify-full") {
      problems.push_back(StrCat("--database: sslmode \"", value,
                                "\" is not one of disable, allow, prefer, require, verify-ca, verify-full"));
    } else if (keyword == "port") {
      const std::optional<std::int64_t> port = parse_positive(value);
      if (!port || *port < 1 || *port > 65535) {
        problems.push_back(StrCat("--database: port \"", value, "\" is not from 1 to 65535"));
      }
    }
  }
  PQconninfoFree(options);
#else
  (void)uri;
  problems.push_back("--database: this paygentd was built without PostgreSQL (configure with -DPAYGENT_WITH_POSTGRES=ON)");
#endif
}

void check_listen(const std::string& listen, std::vector<std::string>& problems) {
  std::optional<HostPort> address = split_listen(listen);
  if (!address) return;  // validate_flags has said so
  std::string host = address->host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (const int error = ::getaddrinfo(host.c_str(), address->port.c_str(), &hints, &found); error != 0) {
    problems.push_back(StrCat("--listen: cannot resolve \"", host, "\": ", ::gai_strerror(error)));
    return;
  }
  // The address paygentd would take (the first one, as it does), bound and released at once.
  const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol);
  int bind_error = 0;
  if (fd < 0) {
    bind_error = errno;
  } else {
    const int on = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (::bind(fd, found->ai_addr, found->ai_addrlen) != 0) bind_error = errno;
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (bind_error == EADDRINUSE) {
    problems.push_back(StrCat("--listen: ", listen, " is in use (by another paygentd?)"));
  } else if (bind_error == EACCES) {
    problems.push_back(StrCat("--listen: port ", address->port, " needs CAP_NET_BIND_SERVICE, which ", uid_text(),
                              " does not have (paygentd's systemd unit grants none): use a port from 1024"));
  } else if (bind_error != 0) {
    problems.push_back(StrCat("--listen: cannot bind ", listen, ": ", errno_text(bind_error)));
  }
}

void check_admin_token(const std::string& token, std::vector<std::string>& problems) {
  if (token.empty()) return;  // allowed: product creation is refused
  // RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
  std::size_t end = token.size();
  while (end > 0 && token[end - 1] == '=') --end;
  bool well_formed = end > 0;
  for (std::size_t i = 0; i < end; ++i) {
    const char c = token[i];
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && std::string_view("-._~+/").find(c) == std::string_view::npos) well_formed = false;
  }
  // The token itself is never printed: it is a secret.
  if (!well_formed) {
    problems.push_back(
        "--admin-token (PAYGENTD_ADMIN_TOKEN) has a character a bearer token cannot carry: use A-Z a-z 0-9 - . _ ~ + / "
        "(and = at the end only)");
  }
  if (token.size() < 16) {
    problems.push_back(StrCat("--admin-token (PAYGENTD_ADMIN_TOKEN) is ", token.size(),
                              " characters: use at least 16 (e.g. `openssl rand -hex 32`)"));
  }
}

}  // namespace

std::vector<std::string> validate_flags(const DaemonFlags& flags, DaemonConfig* config) {
  std::vector<std::string> problems;
  if (flags.data_dir.empty() && flags.database.empty()) {
    problems.push_back(
        "give one of --data-dir (SQLite) or --database (PostgreSQL), or PAYGENTD_DATA_DIR or PAYGENTD_DATABASE");
  } else if (!flags.data_dir.empty() && !flags.database.empty()) {
    problems.push_back("give only one of --data-dir (PAYGENTD_DATA_DIR) and --database (PAYGENTD_DATABASE)");
  }
  if (!flags.database.empty() && flags.database.rfind("postgresql://", 0) != 0 &&
      flags.database.rfind("postgres://", 0) != 0) {
    problems.push_back("--database must be a PostgreSQL URI (postgresql://...)");
  }
  if (!split_listen(flags.listen)) {
    problems.push_back(StrCat("--listen must be HOST:PORT with a port from 0 to 65535, not \"", flags.listen, "\""));
  }
  const std::optional<std::int64_t> max_body = parse_positive(flags.max_body_bytes);
  if (!max_body || *max_body == 0) problems.push_back("--max-body-bytes must be a positive integer");
  const std::optional<std::int64_t> threads = parse_positive(flags.threads);
  if (!threads || *threads > 1024) problems.push_back("--threads must be an integer from 0 to 1024");
  const std::optional<std::int64_t> lease_ttl_ms = parse_positive(flags.lease_ttl_ms);
  if (!lease_ttl_ms || *lease_ttl_ms < 1 || *lease_ttl_ms > 86'400'000) {
    problems.push_back("--lease-ttl-ms must be an integer from 1 to 86400000");
  }
  if (flags.synchronous != "full" && flags.synchronous != "normal") {
    problems.push_back("--synchronous must be full or normal");
  }
  // The webhooks' settings: each an integer in its range.
  auto in_range = [&problems](const std::string& text, std::string_view flag, std::int64_t min, std::int64_t max) {
    const std::optional<std::int64_t> value = parse_positive(text);
    if (!value || *value < min || *value > max) {
      problems.push_back(StrCat(absl::string_view(flag.data(), flag.size()), " must be an integer from ", min, " to ", max));
      return min;
    }
    return *value;
  };
  const std::int64_t webhook_workers = in_range(flags.webhook_workers, "--webhook-workers", 1, 64);
  const std::int64_t webhook_timeout_ms = in_range(flags.webhook_timeout_ms, "--webhook-timeout-ms", 10, 600'000);
  const std::int64_t webhook_max_attempts = in_range(flags.webhook_max_attempts, "--webhook-max-attempts", 1, 100);
  const std::int64_t webhook_backoff_ms = in_range(flags.webhook_backoff_ms, "--webhook-backoff-ms", 1, 86'400'000);
  const std::int64_t webhook_poll_ms = in_range(flags.webhook_poll_ms, "--webhook-poll-ms", 10, 600'000);
  const std::int64_t forecast_horizon_s = in_range(flags.forecast_horizon_s, "--forecast-horizon-s", 1, 31'622'400);
  const std::int64_t invoice_grace_s = in_range(flags.invoice_grace_s, "--invoice-grace-s", 0, 2'678'400);
  if (flags.secure_cookies != "yes" && flags.secure_cookies != "no") {
    problems.push_back("--secure-cookies must be yes or no");
  }
  if (!problems.empty()) return problems;
  *config = DaemonConfig{
      .data_dir = flags.data_dir,
      .database = flags.database,
      .listen = flags.listen,
      .admin_token = flags.admin_token,
      .max_body_bytes = static_cast<std::size_t>(*max_body),
      .threads = static_cast<int>(*threads),
      .lease_ttl = absl::Milliseconds(*lease_ttl_ms),
      .synchronous = flags.synchronous == "full" ? SqliteOptions::Synchronous::kFull
                                                 : SqliteOptions::Synchronous::kNormal,
      .webhook_workers = static_cast<int>(webhook_workers),
      .webhook_timeout = absl::Milliseconds(webhook_timeout_ms),
      .webhook_max_attempts = static_cast<int>(webhook_max_attempts),
      .webhook_backoff = absl::Milliseconds(webhook_backoff_ms),
      .webhook_poll = absl::Milliseconds(webhook_poll_ms),
      .webhook_ca_file = flags.webhook_ca_file,
      .forecast_horizon = absl::Seconds(forecast_horizon_s),
      .invoice_grace = absl::Seconds(invoice_grace_s),
      .secure_cookies = flags.secure_cookies == "yes",
  };
  return problems;
}

std::vector<std::string> check_environment(const DaemonFlags& flags) {
  std::vector<std::string> problems;
  if (!flags.data_dir.empty()) check_data_dir(flags.data_dir, problems);
  if (!flags.database.empty()) check_database(flags.database, problems);
  check_listen(flags.listen, problems);
  check_admin_token(flags.admin_token, problems);
  if (!flags.webhook_ca_file.empty()) {
    std::ifstream in(flags.webhook_ca_file);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (::access(flags.webhook_ca_file.c_str(), R_OK) != 0) {
      problems.push_back(StrCat("--webhook-ca-file: ", flags.webhook_ca_file, " is not readable by ", uid_text(), ": ",
                                errno_text(errno)));
    } else if (text.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      problems.push_back(StrCat("--webhook-ca-file: ", flags.webhook_ca_file, " holds no PEM certificate"));
    }
  }
  return problems;
}

}  // namespace paygent::server
