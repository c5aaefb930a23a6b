// `paygent capload`'s way to several paygentd replicas: a TCP forwarder on 127.0.0.1 that the
// library's one `backend_url` points at. Each new connection goes to the first replica that
// accepts it, starting with the one that took the last (a deployment puts a load balancer there;
// Paygent itself has one backend URL). A connection whose replica dies is closed with it; the
// library's retry opens a new one, which goes to the next replica that accepts. It forwards bytes
// and nothing else: it never answers for a replica nor reads what passes through.
//
// Lifetime: start() binds the port and starts the accepting thread; the destructor closes every
// connection and joins every thread. Thread safety: url() and failovers() may be called from any
// thread; a FailoverProxy is destroyed by one thread, after its last use.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace paygent::tools {

class FailoverProxy {
 public:
  // Forwards to `backend_urls` ("http://host:port", in the order to try them first). Fails with
  // InvalidArgument naming the URL when one is not http://host:port or its host does not resolve,
  // and with Internal when no loopback port can be bound.
  static absl::StatusOr<std::unique_ptr<FailoverProxy>> start(const std::vector<std::string>& backend_urls);
  ~FailoverProxy();
  FailoverProxy(const FailoverProxy&) = delete;
  FailoverProxy& operator=(const FailoverProxy&) = delete;

  // "http://127.0.0.1:<port>": what Options::backend_url takes.
  [[nodiscard]] std::string url() const;
  // How many times a new connection went to another replica than the one before.
  [[nodiscard]] std::int64_t failovers() const { return failovers_.load(std::memory_order_relaxed); }

  struct Replica;  // a resolved address (failover.cpp)

 private:
  FailoverProxy() = default;
  void accept_loop();
  void relay(int client_fd);
  int connect_replica();  // a connected socket to the first replica that accepts, or -1

  std::vector<std::shared_ptr<const Replica>> replicas_;
  std::atomic<std::size_t> current_{0};
  std::atomic<std::int64_t> failovers_{0};
  int listen_fd_ = -1;
  int port_ = 0;
  int stop_read_ = -1;  // readable once the destructor runs: wakes every thread's poll()
  int stop_write_ = -1;
  std::thread acceptor_;
  struct Relay {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;  // set by the thread as it ends: joined at the next accept
  };
  std::vector<Relay> relays_;  // the accepting thread's; the destructor's once that has ended
};

}  // namespace paygent::tools
