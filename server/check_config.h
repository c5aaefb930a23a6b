// paygentd's configuration: its flags and environment variables, validated in one place for its
// start (server/main.cpp) and for `paygentd --check-config` (the systemd unit's ExecStartPre).
#ifndef PAYGENT_SERVER_CHECK_CONFIG_H_
#define PAYGENT_SERVER_CHECK_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/sqlite_storage.h"

namespace paygent::server {

// paygentd's settings as given, flag or environment variable, before validation; the defaults are
// those of `paygentd --help`. A plain value: copy it freely, one thread at a time.
struct DaemonFlags {
  std::string data_dir;
  std::string database;
  std::string listen = "127.0.0.1:8080";
  std::string admin_token;
  std::string max_body_bytes = "4194304";
  std::string synchronous = "full";
  std::string threads = "0";
  std::string lease_ttl_ms = "10000";
  // Webhooks and forecasts (docs/webhooks.md).
  std::string webhook_workers = "4";
  std::string webhook_timeout_ms = "10000";
  std::string webhook_max_attempts = "12";
  std::string webhook_backoff_ms = "1000";
  std::string webhook_poll_ms = "1000";
  std::string webhook_ca_file;  // PEM certificates trusted for https:// receivers, beside the system's
  std::string forecast_horizon_s = "86400";
  std::string invoice_grace_s = "3600";
  // The dashboard (docs/dashboard.md).
  std::string secure_cookies = "no";
};

// The settings once valid (validate_flags). A plain value.
struct DaemonConfig {
  std::string data_dir;  // exactly one of data_dir and database is set
  std::string database;
  std::string listen;
  std::string admin_token;  // empty: product creation is refused
  std::size_t max_body_bytes = 0;
  int threads = 0;  // 0: one per core
  absl::Duration lease_ttl;
  SqliteOptions::Synchronous synchronous = SqliteOptions::Synchronous::kFull;
  int webhook_workers = 4;
  absl::Duration webhook_timeout;
  int webhook_max_attempts = 12;
  absl::Duration webhook_backoff;  // the first retry's delay
  absl::Duration webhook_poll;
  std::string webhook_ca_file;  // empty: the system's trusted certificates only
  absl::Duration forecast_horizon;
  absl::Duration invoice_grace;  // invoice_ready waits this long after a period ends
  bool secure_cookies = false;  // the dashboard's session cookie is sent over HTTPS only
};

// Checks each setting's syntax and range, as paygentd does before it starts. Returns every
// problem, one sentence each naming its flag, in the order of --help; fills *config only when
// there is none (otherwise leaves it unchanged). Touches neither the disk nor the network.
std::vector<std::string> validate_flags(const DaemonFlags& flags, DaemonConfig* config);

// What `paygentd --check-config` adds to validate_flags, on the same settings, without starting
// paygentd and without changing anything on disk:
//   - the data dir is a directory paygentd's user may write (or, when paygentd would create it,
//     its nearest existing parent is), and its database, if any, is readable and writable;
//   - the PostgreSQL URI parses (libpq's own parser), and the TLS files it names (sslcert, sslkey,
//     sslrootcert, sslcrl) are readable; a paygentd built without PostgreSQL says so;
//   - the listen address resolves and can be bound now (a port in use or a privileged port is
//     named);
//   - the admin token, if any, is a bearer token (RFC 6750 characters) of at least 16 characters;
//   - the webhook CA file, if any, is readable and holds at least one PEM certificate.
// Returns every problem, one sentence each naming its flag; empty when paygentd can start.
std::vector<std::string> check_environment(const DaemonFlags& flags);

}  // namespace paygent::server

#endif  // PAYGENT_SERVER_CHECK_CONFIG_H_
