// Test support for paygent-proxy: a fake provider (upstream) and a plain HTTP/1.1 client, both on
// loopback with POSIX sockets (no Beast in the tests), and the fixture bodies.
//
// Thread safety: FakeUpstream serves each connection on a thread of its own (HTTP/1.1 keep-alive:
// requests one after the other); its counters are atomic and last_body() locks. Lifetime: destroying it stops accepting and waits for its threads.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace paygent::proxy::testing {

inline std::string fixture(const std::string& name) {
  std::ifstream in(std::string(PAYGENT_PROXY_FIXTURES) + "/" + name, std::ios::binary);
  if (!in) throw std::runtime_error("missing fixture " + name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The SSE events of `text`, each with its closing blank line, in order.
inline std::vector<std::string> sse_events(const std::string& text) {
  std::vector<std::string> events;
  std::size_t start = 0;
  for (std::size_t end; (end = text.find("\n\n", start)) != std::string::npos; start = end + 2) {
    events.push_back(text.substr(start, end + 2 - start));
  }
  return events;
}

inline bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

inline int listen_loopback(int& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 512) != 0) {
    throw std::runtime_error("cannot listen on loopback");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port = ntohs(addr.sin_port);
  return fd;
}

inline int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Reads one HTTP request (headers and a Content-Length body) from `fd`. False at EOF.
inline bool read_request(int fd, std::string& buffer, std::string& head, std::string& body) {
  std::size_t end;
  while ((end = buffer.find("\r\n\r\n")) == std::string::npos) {
    char chunk[16384];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  head = buffer.substr(0, end + 4);
  std::size_t length = 0;
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (auto at = lower.find("content-length:"); at != std::string::npos) length = std::stoul(lower.substr(at + 15));
  while (buffer.size() < end + 4 + length) {
    char chunk[16384];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  body = buffer.substr(end + 4, length);
  buffer.erase(0, end + 4 + length);
  return true;
}

// What the fake provider answers to one request.
struct FakeReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;                  // a JSON answer (Content-Length)
  std::vector<std::string> events;   // a stream: each event sent as one chunk
  std::chrono::milliseconds delay{0};  // before the head, and between the events of a stream
  bool hang = false;                 // read the request, never answer
  std::string raw;                   // sent as is instead of HTTP (garbage)
  bool close = false;                // answer with Connection: close, then close the connection
};

class FakeUpstream {
 public:
  using Responder = std::function<FakeReply(const std::string& head, const std::string& body)>;

  explicit FakeUpstream(Responder responder) : responder_(std::move(responder)) {
    fd_ = listen_loopback(port_);
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~FakeUpstream() {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
    std::unique_lock lock(mu_);
    for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    lock.unlock();
    for (auto& t : workers_) t.join();
  }

  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] int hits() const { return hits_.load(); }
  // Connections accepted so far.
  [[nodiscard]] int accepts() const { return accepts_.load(); }
  // The next request that arrives on a connection that already served one is not answered: the
  // connection is closed instead, as a server closes a keep-alive connection it found idle too long
  // just as a request arrives (the request is not counted in hits()).
  void drop_next_reused_request() { drop_next_reused_ = true; }
  // Resets every open connection (an abortive close: RST, as a server or a middlebox that dropped
  // the connection's state answers the next segment) and waits until they are closed.
  void reset_open_connections() {
    std::unique_lock lock(mu_);
    const linger abortive{.l_onoff = 1, .l_linger = 0};
    for (int fd : open_) {
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
      ::shutdown(fd, SHUT_RD);  // its thread's read ends, and it closes the socket: RST
    }
    closed_cv_.wait(lock, [&] { return open_.empty(); });
  }
  // Requests whose connection closed before the whole stream was sent.
  [[nodiscard]] int broken_streams() const { return broken_.load(); }
  std::string last_body() {
    std::lock_guard lock(mu_);
    return last_body_;
  }
  std::string last_head() {
    std::lock_guard lock(mu_);
    return last_head_;
  }

 private:
  void accept_loop() {
    while (!stopping_) {
      const int fd = ::accept(fd_, nullptr, nullptr);
      if (fd < 0) continue;
      std::lock_guard lock(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      // As providers' servers do: a stream's head and first event (two writes) leave at once. Without
      // it a kept-alive connection holds the event for the head's delayed ACK (40 ms).
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      accepts_++;
      open_.push_back(fd);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    std::string buffer, head, body;
    for (int served = 0; read_request(fd, buffer, head, body); ++served) {
      if (served > 0 && drop_next_reused_.exchange(false)) break;
      hits_++;
      {
        std::lock_guard lock(mu_);
        last_body_ = body;
        last_head_ = head;
      }
      const FakeReply reply = responder_(head, body);
      if (reply.hang) {
        char c;
        while (::recv(fd, &c, 1, 0) > 0) {
        }
        break;
      }
      std::this_thread::sleep_for(reply.delay);
      if (!reply.raw.empty()) {
        send_all(fd, reply.raw);
        break;
      }
      std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " X\r\ncontent-type: " + reply.content_type + "\r\n";
      if (reply.close) out += "connection: close\r\n";
      if (reply.events.empty()) {
        out += "content-length: " + std::to_string(reply.body.size()) + "\r\n\r\n" + reply.body;
        if (!send_all(fd, out) || reply.close) break;
        continue;
      }
      out += "transfer-encoding: chunked\r\n\r\n";
      bool ok = send_all(fd, out);
      for (std::size_t i = 0; ok && i < reply.events.size(); ++i) {
        if (i > 0) std::this_thread::sleep_for(reply.delay);
        char size[32];
        std::snprintf(size, sizeof size, "%zx\r\n", reply.events[i].size());
        ok = send_all(fd, std::string(size) + reply.events[i] + "\r\n");
      }
      ok = ok && send_all(fd, "0\r\n\r\n");
      if (!ok) {
        broken_++;
        break;
      }
      if (reply.close) break;
    }
    std::lock_guard lock(mu_);
    std::erase(open_, fd);  // before close: the number may be reused at once
    ::close(fd);
    closed_cv_.notify_all();
  }

  Responder responder_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> hits_{0};
  std::atomic<int> accepts_{0};
  std::atomic<bool> drop_next_reused_{false};
  std::atomic<int> broken_{0};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable closed_cv_;  // open_ lost one
  std::vector<int> open_;
  std::vector<std::thread> workers_;
  std::string last_body_, last_head_;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;                            // chunked encoding removed
  [[nodiscard]] std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// Parses one whole response read until the connection closed.
inline HttpResponse parse_response(const std::string& raw) {
  HttpResponse r;
  const std::size_t end = raw.find("\r\n\r\n");
  if (raw.size() < 12 || end == std::string::npos) throw std::runtime_error("not an HTTP response: " + raw);
  r.status = std::stoi(raw.substr(9, 3));
  std::istringstream lines(raw.substr(0, end));
  std::string line;
  std::getline(lines, line);
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
  }
  std::string rest = raw.substr(end + 4);
  if (r.header("transfer-encoding") == "chunked") {
    std::size_t pos = 0;
    for (;;) {
      const std::size_t eol = rest.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const std::size_t size = std::stoul(rest.substr(pos, eol - pos), nullptr, 16);
      if (size == 0) break;
      r.body += rest.substr(eol + 2, size);
      pos = eol + 2 + size + 2;
    }
  } else {
    r.body = rest;
  }
  return r;
}

inline std::string request_text(const std::string& path, const std::string& body, const std::vector<std::string>& headers = {},
                                const std::string& method = "POST") {
  std::string out = method + " " + path + " HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\n";
  for (const auto& h : headers) out += h + "\r\n";
  out += "content-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  return out;
}

// One request on a new connection (Connection: close), the whole response read.
inline HttpResponse post(int port, const std::string& path, const std::string& body,
                         const std::vector<std::string>& headers = {}, const std::string& method = "POST") {
  const int fd = connect_loopback(port);
  send_all(fd, request_text(path, body, headers, method));
  std::string raw;
  char chunk[16384];
  for (ssize_t n; (n = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) raw.append(chunk, static_cast<std::size_t>(n));
  ::close(fd);
  return parse_response(raw);
}

}  // namespace paygent::proxy::testing
