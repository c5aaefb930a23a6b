// Test support (header-only): start the real paygentd on a loopback port, talk HTTP/1.1 to it with
// a tiny blocking client over plain POSIX sockets, and stop it (SIGTERM) or crash it (SIGKILL).
// Used by the server's integration tests and the syncer's; no Boost, no simdjson.
//
//   paygent::testing::TempDir dir;
//   auto paygentd = paygent::testing::PaygentdProcess::start({.data_dir = dir.path(), .admin_token = "t"});
//   paygent::testing::HttpClient http(paygentd->port());
//   std::string key = paygent::testing::create_product(http, "t", "acme");
//   auto reply = http.request("GET", "/healthz");
//
// Failures to start or to talk are thrown as std::runtime_error (doctest reports the message).
//
// Thread safety: each object is used by one thread at a time; distinct objects are independent.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace paygent::testing {

// The paygentd binary: $PAYGENTD_PATH, else the PAYGENTD_PATH the build defined, else "paygentd"
// on the PATH.
inline std::string paygentd_path() {
  if (const char* env = std::getenv("PAYGENTD_PATH"); env != nullptr && *env != '\0') return env;
#ifdef PAYGENTD_PATH
  return PAYGENTD_PATH;
#else
  return "paygentd";
#endif
}

// A fresh directory under the system's temp dir, removed with its contents when destroyed.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "paygent-test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A blocking HTTP/1.1 client over one kept-alive connection to 127.0.0.1:port. Understands
// replies with a Content-Length (what paygentd sends) or delimited by the connection's close.
class HttpClient {
 public:
  struct Reply {
    int status = 0;
    std::map<std::string, std::string> headers;  // names lowercased
    std::string body;
  };

  explicit HttpClient(int port, std::chrono::milliseconds timeout = std::chrono::seconds(30))
      : port_(port), timeout_(timeout) {}
  ~HttpClient() { close(); }
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request and reads its reply. A kept-alive connection that the server closed in the
  // meantime is reopened once, before anything of the request was answered. nullopt when no
  // complete reply could be had (the server is down, crashed mid-way, or timed out) — the
  // request may or may not have been processed then.
  std::optional<Reply> request(std::string_view method, std::string_view target, std::string_view body = {},
                               std::string_view bearer = {}, std::string_view content_type = "application/json") {
    std::string head = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    if (!bearer.empty()) head += "Authorization: Bearer " + std::string(bearer) + "\r\n";
    if (!body.empty() || method == "POST") {
      if (!content_type.empty()) head += "Content-Type: " + std::string(content_type) + "\r\n";
      head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    head += "\r\n";
    head.append(body);
    return raw(head);
  }

  // Sends `bytes` as they are (a request, well-formed or not) and reads one reply.
  std::optional<Reply> raw(std::string_view bytes) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = fd_ >= 0;
      if (!reused && !connect()) return std::nullopt;
      if (!send_all(bytes)) {
        close();
        if (reused) continue;  // the server closed the idle connection: once more on a new one
        return std::nullopt;
      }
      bool got_nothing = false;
      std::optional<Reply> reply = read_reply(got_nothing);
      if (!reply) {
        close();
        if (reused && got_nothing) continue;
        return std::nullopt;
      }
      return reply;
    }
    return std::nullopt;
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buffer_.clear();
  }

 private:
  bool connect() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      close();
      return false;
    }
    return true;
  }

  bool send_all(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Appends what the socket has to buffer_; false at EOF or on an error.
  bool receive() {
    char chunk[64 << 10];
    for (;;) {
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return true;
    }
  }

  std::optional<Reply> read_reply(bool& got_nothing) {
    got_nothing = false;
    std::size_t header_end;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!receive()) {
        got_nothing = buffer_.empty();
        return std::nullopt;
      }
    }
    Reply reply;
    std::string_view head(buffer_.data(), header_end);
    const std::size_t line_end = head.find("\r\n");
    const std::string_view status_line = head.substr(0, line_end);
    if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") return std::nullopt;
    reply.status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
    std::string_view rest = line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);
    while (!rest.empty()) {
      const std::size_t end = rest.find("\r\n");
      const std::string_view line = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 2);
      const std::size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      std::string name(line.substr(0, colon));
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      reply.headers[name] = std::string(value);
    }
    buffer_.erase(0, header_end + 4);
    if (reply.status == 100) return read_reply(got_nothing);  // 100 Continue: the real reply follows
    const auto length = reply.headers.find("content-length");
    if (length != reply.headers.end()) {
      const std::size_t size = std::stoull(length->second);
      while (buffer_.size() < size) {
        if (!receive()) return std::nullopt;
      }
      reply.body = buffer_.substr(0, size);
      buffer_.erase(0, size);
    } else {
      while (receive()) {
      }
      reply.body = std::move(buffer_);
      buffer_.clear();
      close();
    }
    if (auto c = reply.headers.find("connection"); c != reply.headers.end() && c->second == "close") close();
    return reply;
  }

  int port_;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
  std::string buffer_;  // received bytes not yet consumed
};

// A paygentd child process listening on 127.0.0.1:<ephemeral port>.
class PaygentdProcess {
 public:
  struct Options {
    std::string data_dir;      // required, unless extra_args name a --database instead
    std::string admin_token;   // passed as PAYGENTD_ADMIN_TOKEN; empty: none
    std::vector<std::string> extra_args;
    std::string binary = paygentd_path();
    std::chrono::milliseconds start_timeout = std::chrono::seconds(20);
  };

  // Starts paygentd and waits for its "paygentd listening on 127.0.0.1:<port>" line. Its stderr
  // goes to the test's stderr. Throws std::runtime_error when it does not come up in time.
  static std::unique_ptr<PaygentdProcess> start(Options options) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::vector<std::string> args = {options.binary, "--listen", "127.0.0.1:0"};
    if (!options.data_dir.empty()) {
      args.push_back("--data-dir");
      args.push_back(options.data_dir);
    }
    args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string_view(*e).substr(0, 9) != "PAYGENTD_") env.emplace_back(*e);
    }
    if (!options.admin_token.empty()) env.push_back("PAYGENTD_ADMIN_TOKEN=" + options.admin_token);
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, options.binary.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (rc != 0) {
      ::close(pipe_fds[0]);
      throw std::runtime_error("cannot start " + options.binary + ": " + std::strerror(rc));
    }
    std::unique_ptr<PaygentdProcess> process(new PaygentdProcess(pid, pipe_fds[0]));
    process->port_ = process->read_port(options.start_timeout);
    return process;
  }

  ~PaygentdProcess() {
    if (pid_ > 0) kill_hard();
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
  }
  PaygentdProcess(const PaygentdProcess&) = delete;
  PaygentdProcess& operator=(const PaygentdProcess&) = delete;

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // SIGKILL, then reaps the process: a crash, with no chance to flush or close anything.
  void kill_hard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // SIGTERM, then waits up to `timeout` for the exit. Returns the exit status, 128 + the signal
  // when a signal ended it, or -1 on timeout (the process is then killed).
  int terminate(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
        return -1;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        kill_hard();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  PaygentdProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  int read_port(std::chrono::milliseconds timeout) {
    constexpr std::string_view kPrefix = "paygentd listening on ";
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string line;
    while (line.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{.fd = stdout_fd_, .events = POLLIN, .revents = 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        throw std::runtime_error("paygentd did not say it was listening in time (stdout so far: \"" + line + "\")");
      }
      char c[256];
      const ssize_t n = ::read(stdout_fd_, c, sizeof c);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        throw std::runtime_error("paygentd exited before listening (status " + std::to_string(status) + ")");
      }
      line.append(c, static_cast<std::size_t>(n));
    }
    line.resize(line.find('\n'));
    const std::size_t colon = line.rfind(':');
    if (line.substr(0, kPrefix.size()) != kPrefix || colon == std::string::npos) {
      throw std::runtime_error("unexpected first line from paygentd: \"" + line + "\"");
    }
    return std::atoi(line.c_str() + colon + 1);
  }

  pid_t pid_;
  int stdout_fd_;  // kept open: paygentd never gets EPIPE on stdout
  int port_ = 0;
};

// The value of the string member `name` in a flat JSON object such as paygentd's replies
// ({"api_key":"..."}); empty when absent. Enough for ids and keys, which need no unescaping.
inline std::string json_string_member(std::string_view json, std::string_view name) {
  const std::string needle = "\"" + std::string(name) + "\":\"";
  const std::size_t at = json.find(needle);
  if (at == std::string_view::npos) return {};
  const std::size_t start = at + needle.size();
  const std::size_t end = json.find('"', start);
  return end == std::string_view::npos ? std::string() : std::string(json.substr(start, end - start));
}

// Creates a product through POST /api/v1/products and returns its API key. Throws
// std::runtime_error when paygentd refuses.
inline std::string create_product(HttpClient& http, std::string_view admin_token, std::string_view name) {
  const std::optional<HttpClient::Reply> reply =
      http.request("POST", "/api/v1/products", "{\"name\":\"" + std::string(name) + "\"}", admin_token);
  if (!reply || reply->status != 201) {
    throw std::runtime_error("product creation failed: " + (reply ? std::to_string(reply->status) + " " + reply->body
                                                                   : std::string("no reply")));
  }
  return json_string_member(reply->body, "api_key");
}

}  // namespace paygent::testing
