// The forwarder in front of several paygentd replicas (see failover.h).
#include "tools/failover.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace paygent::tools {

struct FailoverProxy::Replica {
  std::string url;
  sockaddr_storage address{};
  socklen_t size = 0;
};

namespace {

constexpr int kConnectTimeoutMs = 1000;

absl::StatusOr<FailoverProxy::Replica> resolve(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  std::string_view rest = url;
  if (rest.substr(0, kScheme.size()) != kScheme) {
    return absl::InvalidArgumentError(absl::StrCat("--backend: \"", url, "\" must start with http://"));
  }
  rest.remove_prefix(kScheme.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  const std::size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size()) {
    return absl::InvalidArgumentError(absl::StrCat("--backend: \"", url, "\" is not http://host:port"));
  }
  const std::string host(rest.substr(0, colon)), port(rest.substr(colon + 1));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--backend: \"", url, "\": ", ::gai_strerror(rc)));
  }
  FailoverProxy::Replica r;
  r.url = url;
  std::memcpy(&r.address, found->ai_addr, found->ai_addrlen);
  r.size = found->ai_addrlen;
  ::freeaddrinfo(found);
  return r;
}

// Connects within kConnectTimeoutMs; the socket is blocking again on success. -1 on failure.
int connect_to(const FailoverProxy::Replica& r) {
  const int fd = ::socket(r.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&r.address), r.size) != 0) {
    pollfd p{fd, POLLOUT, 0};
    int error = 0;
    socklen_t size = sizeof error;
    if (errno != EINPROGRESS || ::poll(&p, 1, kConnectTimeoutMs) != 1 ||
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0 || error != 0) {
      ::close(fd);
      return -1;
    }
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FailoverProxy>> FailoverProxy::start(const std::vector<std::string>& backend_urls) {
  if (backend_urls.empty()) return absl::InvalidArgumentError("--backend: at least one URL is needed");
  std::unique_ptr<FailoverProxy> proxy(new FailoverProxy());
  for (const std::string& url : backend_urls) {
    auto r = resolve(url);
    if (!r.ok()) return r.status();
    proxy->replicas_.push_back(std::make_shared<const Replica>(*std::move(r)));
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  proxy->stop_read_ = pipe_fds[0];
  proxy->stop_write_ = pipe_fds[1];
  proxy->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  if (proxy->listen_fd_ < 0 || ::bind(proxy->listen_fd_, reinterpret_cast<const sockaddr*>(&address), size) != 0 ||
      ::listen(proxy->listen_fd_, 64) != 0 ||
      ::getsockname(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    return absl::InternalError(absl::StrCat("cannot listen on 127.0.0.1: ", std::strerror(errno)));
  }
  proxy->port_ = ntohs(address.sin_port);
  proxy->acceptor_ = std::thread([p = proxy.get()] { p->accept_loop(); });
  return proxy;
}

FailoverProxy::~FailoverProxy() {
  if (stop_write_ >= 0) {
    const char byte = 0;
    while (::write(stop_write_, &byte, 1) < 0 && errno == EINTR) {
    }
  }
  if (acceptor_.joinable()) acceptor_.join();
  for (Relay& r : relays_) r.thread.join();
  for (const int fd : {listen_fd_, stop_read_, stop_write_}) {
    if (fd >= 0) ::close(fd);
  }
}

std::string FailoverProxy::url() const { return absl::StrCat("http://127.0.0.1:", port_); }

void FailoverProxy::accept_loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_read_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents != 0) return;
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    std::erase_if(relays_, [](Relay& r) {
      if (!r.done->load()) return false;
      r.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    relays_.push_back({std::thread([this, client, done] {
                         relay(client);
                         done->store(true);
                       }),
                       done});
  }
}

int FailoverProxy::connect_replica() {
  const std::size_t first = current_.load();
  for (std::size_t k = 0; k < replicas_.size(); ++k) {
    const std::size_t i = (first + k) % replicas_.size();
    const int fd = connect_to(*replicas_[i]);
    if (fd < 0) continue;
    if (i != first) {
      std::size_t expected = first;
      if (current_.compare_exchange_strong(expected, i)) {
        failovers_.fetch_add(1);
        std::fprintf(stderr, "paygent: %s refused a connection; going on with %s\n", replicas_[first]->url.c_str(),
                     replicas_[i]->url.c_str());
      }
    }
    return fd;
  }
  return -1;
}

void FailoverProxy::relay(int client) {
  const int upstream = connect_replica();
  if (upstream >= 0) {
    char buffer[16384];
    for (bool open = true; open;) {
      pollfd p[3] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}, {stop_read_, POLLIN, 0}};
      if (::poll(p, 3, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (p[2].revents != 0) break;
      for (int side = 0; side < 2 && open; ++side) {
        if (p[side].revents == 0) continue;
        const ssize_t n = ::recv(p[side].fd, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) continue;
        // Either end closing (or failing) ends the pair: HTTP/1.1 needs no half-closed connection.
        open = n > 0 && write_all(p[1 - side].fd, buffer, static_cast<std::size_t>(n));
      }
    }
    ::close(upstream);
  }
  ::close(client);
}

}  // namespace paygent::tools
