// The real paygentd against a hostile client (issue 8), over loopback sockets with raw bytes:
// a trailer field Beast cannot hold, trailers and chunk extensions sent without end, transfer
// codings that would let a body's bytes run as the next request, HEAD answers in a pipeline,
// requests without a Host, and who may read the database files.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "tests/support/paygentd_process.h"

namespace paygent::server::test {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;
using paygent::testing::TempDir;

// A connected loopback socket to `port`, with `timeout` on its reads; -1 when it cannot connect.
int connect_to(int port, std::chrono::milliseconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `bytes` on a new connection and returns everything paygentd sends back, followed by
// "[closed]" when it closed the connection, or "[open]" when it kept it open `wait` after its
// last byte (the connection is then closed by the test).
std::string exchange(int port, std::string_view bytes, std::chrono::milliseconds wait = std::chrono::milliseconds(1500)) {
  const int fd = connect_to(port, wait);
  REQUIRE(fd >= 0);
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) break;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  std::string answer;
  char chunk[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      answer.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    answer += n == 0 ? "[closed]" : "[open]";
    break;
  }
  ::close(fd);
  return answer;
}

// The number of HTTP replies in `answer`: status lines at its start or right after a header or a
// JSON body ends (an error message may name "HTTP/1.1" too).
int replies_in(std::string_view answer) {
  int count = 0;
  for (std::size_t at = answer.find("HTTP/1."); at != std::string_view::npos; at = answer.find("HTTP/1.", at + 1)) {
    if (at == 0 || answer[at - 1] == '\n' || answer[at - 1] == '}') ++count;
  }
  return count;
}

// True when `answer` is one reply with `status` and then the connection's close.
bool one_reply_then_closed(std::string_view answer, int status) {
  return answer.rfind("HTTP/1.1 " + std::to_string(status) + " ", 0) == 0 && replies_in(answer) == 1 &&
         answer.size() >= 8 && answer.substr(answer.size() - 8) == "[closed]";
}

// The VmRSS of process `pid` in KiB (0 when it cannot be read).
std::int64_t rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return 0;
}

// Sends `head`, then `filler` again and again (up to `total` bytes), as fast as paygentd takes
// them, and stops as soon as paygentd answers or closes. Returns the start of the answer ("" for
// none). Thread-safe.
std::string flood(int port, const std::string& head, const std::string& filler, std::size_t total) {
  const int fd = connect_to(port, std::chrono::seconds(10));
  if (fd < 0) return "[cannot connect]";  // runs on a client thread: no REQUIRE (it would throw there)
  std::string_view pending = head;
  std::size_t sent = 0;
  std::string answer;
  for (;;) {
    pollfd p{.fd = fd, .events = static_cast<short>(POLLIN | (sent < total ? POLLOUT : 0)), .revents = 0};
    if (::poll(&p, 1, 10'000) <= 0) break;  // neither an answer nor room to send within 10 s
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      char chunk[4096];
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n > 0) answer.append(chunk, static_cast<std::size_t>(n));
      break;
    }
    if (pending.empty()) pending = filler;
    const ssize_t n = ::send(fd, pending.data(), pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    pending.remove_prefix(static_cast<std::size_t>(n));
    sent += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return answer;
}

// paygentd ended by SIGABRT: Beast's parser threw std::length_error ("field value too large") for
// a trailer field of 65,534 bytes, from the read's completion handler, out of io_context::run().
TEST_CASE("server.http_hardening.a_trailer_field_of_64k_is_refused_and_paygentd_keeps_serving") {
  TempDir dir("paygentd-hardening");
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path()});
  const std::string head = "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
  for (const std::size_t size : {65'533, 65'534, 70'000}) {
    CAPTURE(size);
    std::string answer = exchange(paygentd->port(), head + "X-Trailer: " + std::string(size, 'v') + "\r\n\r\n");
    CHECK_MESSAGE(one_reply_then_closed(answer, 413), answer);
    answer = exchange(paygentd->port(), head + std::string(size, 'n') + ": v\r\n\r\n");
    CHECK_MESSAGE(one_reply_then_closed(answer, 413), answer);
  }
  // A trailer within the header limit is still read (and dropped), and the request answered.
  const std::string answer = exchange(paygentd->port(), head + "X-Checksum: 1234\r\n\r\n");
  CHECK_MESSAGE(answer.rfind("HTTP/1.1 200 ", 0) == 0, answer);
  HttpClient http(paygentd->port());
  const auto reply = http.request("GET", "/healthz");
  REQUIRE(reply);
  CHECK(reply->status == 200);
  CHECK(paygentd->terminate() == 0);  // 134 (128 + SIGABRT) when it had crashed
}

// Beast bounds neither the trailer section (it buffers all of it before parsing) nor a chunk's
// extensions (not counted in the body limit): 4 connections x 32 MiB took paygentd from 8 MB to
// 283 MB. Now a trailer counts against the header limit (16 KiB), extensions are capped at 1 KiB
// per request, and what the parser buffers before judging is bounded by the connection's read
// buffer (16 KiB + 64 KiB): paygentd answers 413 and closes, growing by less than kRssGrowthKib
// over its RSS before the attack (an absolute bound would not hold for a sanitizer build, which
// idles at ~50 MB).
TEST_CASE("server.http_hardening.endless_trailers_and_chunk_extensions_are_refused_in_bounded_memory") {
  constexpr std::int64_t kRssGrowthKib = 32 << 10;  // the attack sends 128 MiB; it grew by 165-275 MB
  constexpr std::size_t kPerConnection = 32 << 20;
  constexpr int kConnections = 4;
  TempDir dir("paygentd-hardening");
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path()});
  const std::string trailer_lines = [] {
    std::string line = "X-Trailer: " + std::string(1000, 't') + "\r\n", out;
    for (int i = 0; i < 64; ++i) out += line;
    return out;
  }();
  struct Attack {
    std::string name;
    std::string head;
    std::string filler;
  };
  const std::vector<Attack> attacks = {
      {"one endless trailer section", "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
       trailer_lines},
      {"one endless chunk extension", "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=",
       std::string(64 << 10, 'e')},
      {"many small chunks, each with an extension",
       "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
       [] {
         std::string out;
         for (int i = 0; i < 256; ++i) out += "1;" + std::string(200, 'e') + "\r\nx\r\n";
         return out;
       }()},
  };
  // A request served first, so that the idle RSS counts the first connection's buffers.
  CHECK(HttpClient(paygentd->port()).request("GET", "/healthz")->status == 200);
  const std::int64_t idle_kib = rss_kib(paygentd->pid());
  REQUIRE(idle_kib > 0);
  for (const Attack& attack : attacks) {
    CAPTURE(attack.name);
    std::atomic<bool> done{false};
    std::atomic<std::int64_t> peak_kib{0};
    std::thread sampler([&] {
      do {  // at least one sample, even when the attack is over before this thread first runs
        peak_kib.store(std::max(peak_kib.load(), rss_kib(paygentd->pid())));
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      } while (!done.load());
    });
    std::vector<std::string> answers(kConnections);
    std::vector<std::thread> clients;
    for (int i = 0; i < kConnections; ++i) {
      clients.emplace_back([&, i] { answers[i] = flood(paygentd->port(), attack.head, attack.filler, kPerConnection); });
    }
    for (std::thread& t : clients) t.join();
    done.store(true);
    sampler.join();
    MESSAGE(attack.name, ": peak VmRSS ", peak_kib.load(), " KiB, idle ", idle_kib, " KiB");
    CHECK(peak_kib.load() > 0);
    CHECK(peak_kib.load() - idle_kib < kRssGrowthKib);
    for (const std::string& answer : answers) CHECK_MESSAGE(answer.rfind("HTTP/1.1 413 ", 0) == 0, answer);
  }
  HttpClient http(paygentd->port());
  CHECK(http.request("GET", "/healthz")->status == 200);
  CHECK(paygentd->terminate() == 0);
}

// A transfer coding other than "chunked" alone was read as an empty body with the connection kept
// open, so the body's bytes ran as the next request. RFC 9112 §6.1 and §6.3: 400, then close.
TEST_CASE("server.http_hardening.a_body_paygentd_cannot_frame_is_refused_and_the_connection_closed") {
  TempDir dir("paygentd-hardening");
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path()});
  const std::string smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const std::string coding : {"xchunked", "identity", "gzip", "compress", "chunked, gzip", "gzip, chunked",
                                   "chunked, chunked", "deflate"}) {
    CAPTURE(coding);
    const std::string answer =
        exchange(paygentd->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + "\r\n\r\n" + smuggled);
    CHECK_MESSAGE(one_reply_then_closed(answer, 400), answer);
  }
  // The same coding split over two Transfer-Encoding lines.
  std::string answer = exchange(paygentd->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
                                                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled);
  CHECK_MESSAGE(one_reply_then_closed(answer, 400), answer);
  // Content-Length and Transfer-Encoding together, in either order and with either coding.
  for (const std::string fields :
       {"Content-Length: 35\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: chunked\r\nContent-Length: 35\r\n",
        "Content-Length: 35\r\nTransfer-Encoding: gzip\r\n", "Transfer-Encoding: gzip\r\nContent-Length: 35\r\n"}) {
    CAPTURE(fields);
    answer = exchange(paygentd->port(), "POST /healthz HTTP/1.1\r\nHost: x\r\n" + fields + "\r\n" + smuggled);
    CHECK_MESSAGE(one_reply_then_closed(answer, 400), answer);
  }
  // Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1: its framing is faulty).
  answer = exchange(paygentd->port(), "GET /healthz HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled);
  CHECK_MESSAGE(one_reply_then_closed(answer, 400), answer);
  // Chunked alone is read, and the next request on the connection is answered after it.
  answer = exchange(paygentd->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n" +
                                          smuggled);
  CHECK_MESSAGE(replies_in(answer) == 2, answer);
  CHECK(paygentd->terminate() == 0);
}

// HEAD was answered 405 with a JSON body, which a pipelining client reads as the start of the next
// reply. Now HEAD is GET without the body (RFC 9110 §9.3.2), whatever the status.
TEST_CASE("server.http_hardening.head_answers_carry_no_body_and_a_pipeline_stays_in_step") {
  TempDir dir("paygentd-hardening");
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path()});
  const std::string answer = exchange(paygentd->port(),
                                      "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                      "HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                                      "HEAD /api/v1/users HTTP/1.1\r\nHost: x\r\n\r\n"
                                      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  // Four headers back to back, then the GET's body: nothing else.
  std::vector<std::string> heads;
  std::size_t at = 0;
  for (int i = 0; i < 4; ++i) {
    const std::size_t end = answer.find("\r\n\r\n", at);
    REQUIRE_MESSAGE(end != std::string::npos, answer);
    heads.push_back(answer.substr(at, end + 4 - at));
    at = end + 4;
  }
  CHECK_MESSAGE(answer.substr(at) == R"({"status":"ok"})" "[open]", answer);
  CHECK(heads[0].rfind("HTTP/1.1 200 ", 0) == 0);
  CHECK(heads[0].find("Content-Length: 15\r\n") != std::string::npos);  // what the GET carries
  CHECK(heads[1].rfind("HTTP/1.1 404 ", 0) == 0);
  CHECK(heads[2].rfind("HTTP/1.1 405 ", 0) == 0);
  CHECK(heads[3].rfind("HTTP/1.1 200 ", 0) == 0);
  CHECK(paygentd->terminate() == 0);
}

// RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, and for any with more than one Host
// or an invalid one.
TEST_CASE("server.http_hardening.host_is_required_once") {
  TempDir dir("paygentd-hardening");
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path()});
  for (const std::string fields : {"", "Host: a\r\nHost: b\r\n", "Host: a\r\nHost: a\r\n", "Host: a b\r\n",
                                   "Host: user@evil\r\n", "Host: a/b\r\n"}) {
    CAPTURE(fields);
    const std::string answer = exchange(paygentd->port(), "GET /healthz HTTP/1.1\r\n" + fields + "\r\n");
    CHECK_MESSAGE(one_reply_then_closed(answer, 400), answer);
  }
  CHECK_MESSAGE(one_reply_then_closed(exchange(paygentd->port(), "GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400),
                "HTTP/1.0 with two Host");
  // Accepted: one Host (a name, an address with a port, an IPv6 literal, or empty), and an
  // HTTP/1.0 request without one.
  for (const std::string request : {"GET /healthz HTTP/1.1\r\nHost: paygentd.example:8080\r\n\r\n",
                                    "GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
                                    "GET /healthz HTTP/1.1\r\nHost:\r\n\r\n", "GET /healthz HTTP/1.0\r\n\r\n"}) {
    CAPTURE(request);
    const std::string answer = exchange(paygentd->port(), request);
    CHECK_MESSAGE(answer.find(" 200 OK\r\n") == std::string("HTTP/1.x").size(), answer);
  }
  CHECK(paygentd->terminate() == 0);
}

// The database holds every tenant's usage: only paygentd's user may read it, whatever the umask.
TEST_CASE("server.http_hardening.database_files_are_the_owners_only") {
  TempDir dir("paygentd-hardening");
  const std::string data_dir = dir.path() + "/data";  // paygentd creates it
  const mode_t umask_before = ::umask(022);
  auto paygentd = PaygentdProcess::start({.data_dir = data_dir, .admin_token = "admin"});
  ::umask(umask_before);
  HttpClient http(paygentd->port());
  paygent::testing::create_product(http, "admin", "acme");  // a write: the WAL and its index exist
  auto mode_of = [](const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::stat(path.c_str(), &st) == 0, path);
    return st.st_mode & 07777;
  };
  CHECK(mode_of(data_dir) == 0700);
  for (const std::string file : {"paygentd.db", "paygentd.db-wal", "paygentd.db-shm", "paygentd.lock"}) {
    CAPTURE(file);
    CHECK(mode_of(data_dir + "/" + file) == 0600);
  }
  CHECK(paygentd->terminate() == 0);
}

}  // namespace
}  // namespace paygent::server::test
