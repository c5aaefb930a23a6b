// Webhooks of the real paygentd (tests/support/paygentd_process.h) against a receiver on loopback
// written here with plain sockets: a receiver that fails (500), answers after paygentd gave up,
// never answers, and answers late but in time gets every alert, each signed (checked here with
// OpenSSL's HMAC), its retries under the same delivery id; alerts not yet delivered when paygentd
// is killed (kill -9) are delivered after its restart; SIGTERM stops it cleanly meanwhile.
#include <arpa/inet.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server::test {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;
using paygent::testing::TempDir;

constexpr char kAdmin[] = "webhooks-admin";

// What the receiver does with one request.
enum class Answer { kOk, kFail500, kUnavailable503, kAfterTimeout, kNever, kLateInTime };

struct Received {
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;
  Answer answer;
};

// A receiver's TLS certificate and key (PEM files).
struct TlsFiles {
  std::string cert, key;
};

// An HTTP/1.1 receiver on 127.0.0.1:<ephemeral port> (on [::1] with `v6`; listening() is false
// where the machine has no IPv6 loopback): one thread per connection; the n-th request (from 0)
// gets script(n). With `tls`, HTTPS (OpenSSL's server side, that certificate).
class Receiver {
 public:
  explicit Receiver(std::function<Answer(int)> script, std::optional<TlsFiles> tls = std::nullopt, bool v6 = false)
      : script_(std::move(script)), v6_(v6) {
    if (tls) {
      tls_ = SSL_CTX_new(TLS_server_method());
      REQUIRE(tls_ != nullptr);
      REQUIRE(SSL_CTX_use_certificate_file(tls_, tls->cert.c_str(), SSL_FILETYPE_PEM) == 1);
      REQUIRE(SSL_CTX_use_PrivateKey_file(tls_, tls->key.c_str(), SSL_FILETYPE_PEM) == 1);
    }
    fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (v6) {
      sockaddr_in6 addr{};
      addr.sin6_family = AF_INET6;
      addr.sin6_addr = in6addr_loopback;
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;  // no IPv6 loopback here
      socklen_t len = sizeof addr;
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
      port_ = ntohs(addr.sin6_port);
    } else {
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
      socklen_t len = sizeof addr;
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
      port_ = ntohs(addr.sin_port);
    }
    REQUIRE(::listen(fd_, 64) == 0);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~Receiver() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    if (acceptor_.joinable()) acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (std::thread& t : connections_) t.join();
    if (tls_ != nullptr) SSL_CTX_free(tls_);
  }

  [[nodiscard]] std::string url() const {
    return std::string(tls_ != nullptr ? "https" : "http") + (v6_ ? "://[::1]:" : "://127.0.0.1:") + std::to_string(port_) +
           "/hooks/paygent";
  }
  [[nodiscard]] bool listening() const { return acceptor_.joinable(); }
  // Connections whose TLS handshake failed (the client refused the certificate).
  [[nodiscard]] int refused_handshakes() const { return refused_handshakes_.load(); }
  std::vector<Received> received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

 private:
  void accept_loop() {
    for (;;) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;  // closed
      std::lock_guard<std::mutex> lock(mu_);
      connections_.emplace_back([this, c] { serve(c); });
    }
  }

  void serve(int c) {
    timeval tv{.tv_sec = 0, .tv_usec = 100'000};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string in;
    char buf[4096];
    std::size_t header_end = std::string::npos;
    std::size_t length = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    SSL* ssl = nullptr;
    if (tls_ != nullptr) {
      ssl = SSL_new(tls_);
      SSL_set_fd(ssl, c);
      int accepted = 0;
      while (!stop_ && std::chrono::steady_clock::now() < deadline && (accepted = SSL_accept(ssl)) != 1) {
        const int error = SSL_get_error(ssl, accepted);
        if (error != SSL_ERROR_WANT_READ && !(error == SSL_ERROR_SYSCALL && errno == EAGAIN)) break;
      }
      if (accepted != 1) {
        ++refused_handshakes_;
        SSL_free(ssl);
        ::close(c);
        return;
      }
    }
    // Reads what came: > 0 bytes, 0 when the peer closed, < 0 when nothing came in 100 ms.
    auto read_some = [&]() -> ssize_t {
      if (ssl == nullptr) return ::recv(c, buf, sizeof buf, 0);
      const int n = SSL_read(ssl, buf, sizeof buf);
      if (n > 0) return n;
      const int error = SSL_get_error(ssl, n);
      return error == SSL_ERROR_WANT_READ || (error == SSL_ERROR_SYSCALL && errno == EAGAIN) ? -1 : 0;
    };
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      const ssize_t n = read_some();
      if (n == 0) break;
      if (n > 0) in.append(buf, static_cast<std::size_t>(n));
      if (header_end == std::string::npos && (header_end = in.find("\r\n\r\n")) != std::string::npos) {
        std::string lower = in.substr(0, header_end);
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        const std::size_t cl = lower.find("content-length:");
        length = cl == std::string::npos ? 0 : std::stoul(lower.substr(cl + 15));
      }
      if (header_end != std::string::npos && in.size() >= header_end + 4 + length) break;
    }
    auto close_connection = [&] {
      if (ssl != nullptr) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
      }
      ::close(c);
    };
    if (header_end == std::string::npos || in.size() < header_end + 4 + length) {
      close_connection();
      return;
    }
    Received r;
    r.body = in.substr(header_end + 4, length);
    std::size_t at = in.find("\r\n") + 2;
    while (at < header_end) {
      const std::size_t eol = in.find("\r\n", at);
      const std::string line = in.substr(at, eol - at);
      const std::size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers[name] = value;
      at = eol + 2;
    }
    r.answer = script_(next_.fetch_add(1));
    {
      std::lock_guard<std::mutex> lock(mu_);
      received_.push_back(r);
    }
    auto reply = [c, ssl](int status, std::string_view reason) {
      const std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
                              "\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
      if (ssl != nullptr) {
        SSL_write(ssl, out.data(), static_cast<int>(out.size()));
      } else {
        ::send(c, out.data(), out.size(), MSG_NOSIGNAL);
      }
    };
    switch (r.answer) {
      case Answer::kOk: reply(200, "OK"); break;
      case Answer::kFail500: reply(500, "Internal Server Error"); break;
      case Answer::kUnavailable503: reply(503, "Service Unavailable"); break;
      case Answer::kAfterTimeout:  // processed here, answered after paygentd's timeout (300 ms)
        std::this_thread::sleep_for(std::chrono::milliseconds(700));
        reply(200, "OK");
        break;
      case Answer::kLateInTime:
        std::this_thread::sleep_for(std::chrono::milliseconds(120));
        reply(200, "OK");
        break;
      case Answer::kNever:  // until paygentd hangs up
        while (!stop_ && read_some() != 0) {
        }
        break;
    }
    close_connection();
  }

  std::function<Answer(int)> script_;
  bool v6_ = false;
  SSL_CTX* tls_ = nullptr;
  std::atomic<int> refused_handshakes_{0};
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> next_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> connections_;
  std::vector<Received> received_;
};

// The receiver's check of Paygent-Signature (docs/webhooks.md): "t=<seconds>,v1=<hex>", the HMAC
// of "<t>.<body>" under the secret, and t within five minutes of now.
bool signature_valid(const Received& r, const std::string& secret) {
  auto it = r.headers.find("paygent-signature");
  if (it == r.headers.end()) return false;
  const std::string& header = it->second;
  const std::size_t comma = header.find(",v1=");
  if (header.rfind("t=", 0) != 0 || comma == std::string::npos) return false;
  const std::string t = header.substr(2, comma - 2);
  const std::string expected = header.substr(comma + 4);
  const std::string signed_text = t + "." + r.body;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(signed_text.data()), signed_text.size(), digest, &n);
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) {
    char two[3];
    std::snprintf(two, sizeof two, "%02x", digest[i]);
    hex += two;
  }
  const long long age = static_cast<long long>(std::time(nullptr)) - std::stoll(t);
  return hex == expected && age >= -300 && age <= 300;
}

std::string header_of(const Received& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? std::string() : it->second;
}

struct Daemon {
  TempDir dir{"paygentd-webhooks"};
  std::vector<std::string> database;  // {"--database", URI} for PostgreSQL; empty: SQLite in `dir`
  std::vector<std::string> extra;     // more flags
  std::unique_ptr<PaygentdProcess> process;
  std::unique_ptr<HttpClient> http;
  std::string key;

  void start() {
    std::vector<std::string> args = {"--listen",           "127.0.0.1:0", "--webhook-timeout-ms", "300",
                                     "--webhook-backoff-ms", "20",        "--webhook-poll-ms",    "20",
                                     "--webhook-workers",    "2",         "--webhook-max-attempts", "8"};
    args.insert(args.end(), database.begin(), database.end());
    args.insert(args.end(), extra.begin(), extra.end());
    process = PaygentdProcess::start(
        {.data_dir = database.empty() ? dir.path() + "/data" : std::string(), .admin_token = kAdmin, .extra_args = args});
    http = std::make_unique<HttpClient>(process->port());
  }
  HttpClient::Reply call(std::string_view method, std::string_view target, std::string_view body = {}) {
    std::optional<HttpClient::Reply> r = http->request(method, target, body, key);
    REQUIRE(r.has_value());
    return *r;
  }
  // A product with a $1.00 monthly cap for everyone, and a webhook to `url` for every event type.
  std::string set_up(const std::string& url) {
    std::optional<HttpClient::Reply> r = http->request("POST", "/api/v1/products", R"({"name":"acme"})", kAdmin);
    REQUIRE(r);
    REQUIRE(r->status == 201);
    key = paygent::testing::json_string_member(r->body, "api_key");
    REQUIRE(call("POST", "/api/v1/config/plans",
                 R"({"default_plan":"free","plans":[{"name":"free","max_spend_per_period":1.00}]})")
                .status == 200);
    const HttpClient::Reply created = call("POST", "/api/v1/webhooks", R"({"url":")" + url + R"("})");
    REQUIRE_MESSAGE(created.status == 201, created.body);
    webhook = paygent::testing::json_string_member(created.body, "id");
    return paygent::testing::json_string_member(created.body, "secret");
  }
  // Takes `users` users over their cap, one batch each, and sends one refused batch: users + 1 alerts.
  void raise_alerts(int users, std::uint64_t salt) {
    const std::int64_t now = absl::ToUnixNanos(absl::Now());
    for (int i = 0; i < users; ++i) {
      const std::string body = batch_json({TestEvent{.id = event_id(static_cast<std::uint64_t>(i), salt),
                                                     .user_id = "user-" + std::to_string(salt) + "-" + std::to_string(i),
                                                     .cost_nanos = 1'500'000'000,
                                                     .ts_ns = now}});
      REQUIRE(call("POST", "/api/v1/events:batch", body).status == 200);
    }
    REQUIRE(call("POST", "/api/v1/events:batch", R"({"events":[{"id":"not-hex"}]})").status == 400);
  }
  // The delivery log's rows (delivery id -> status, attempts).
  std::map<std::string, std::pair<std::string, std::int64_t>> log() {
    const HttpClient::Reply r = call("GET", "/api/v1/webhooks/" + webhook + "/deliveries?limit=1000");
    REQUIRE(r.status == 200);
    std::map<std::string, std::pair<std::string, std::int64_t>> out;
    simdjson::dom::parser parser;
    for (simdjson::dom::element row : parse_json(parser, r.body)["deliveries"].get_array()) {
      out[std::string(std::string_view(row["delivery_id"].get_string()))] = {
          std::string(std::string_view(row["status"].get_string())), row["attempts"].get_int64()};
    }
    return out;
  }
  // Waits (up to 60 s) until the log holds `count` deliveries, all delivered.
  bool wait_delivered(std::size_t count) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      const auto rows = log();
      if (rows.size() == count &&
          std::all_of(rows.begin(), rows.end(), [](const auto& row) { return row.second.first == "delivered"; })) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string webhook;
};

TEST_CASE("server.paygentd_webhooks_a_batch_over_the_body_limit_raises_delivery_failure") {
  // Through the real HTTP layer, which refuses the body before reading it: the product whose key
  // sent it hears of it once; the same oversized batch under a wrong key raises nothing, and
  // paygentd keeps serving.
  Receiver receiver([](int) { return Answer::kOk; });
  Daemon d;
  d.extra = {"--max-body-bytes", "65536"};
  d.start();
  d.set_up(receiver.url());
  const std::string huge = R"({"events":[{"id":")" + std::string(100'000, 'a') + R"("}]})";
  const std::string key = d.key;
  d.key = "pg_wrong_key";
  CHECK(d.call("POST", "/api/v1/events:batch", huge).status == 413);
  d.key = key;
  CHECK(d.call("POST", "/api/v1/events:batch", huge).status == 413);
  REQUIRE(d.wait_delivered(1));
  const std::vector<Received> got = receiver.received();
  REQUIRE_FALSE(got.empty());
  CHECK(header_of(got.front(), "paygent-event-type") == "delivery_failure");
  CHECK(got.front().body.find("\"http_status\":413") != std::string::npos);
  CHECK(d.call("GET", "/api/v1/webhooks").status == 200);
  CHECK(d.process->terminate() == 0);
}

// A receiver at an IPv6 literal ("http://[::1]:<port>/..."): paygentd connects to the address in
// the brackets and sends Host as the URL writes it.
TEST_CASE("server.paygentd_webhooks_reach_an_ipv6_literal") {
  Receiver receiver([](int) { return Answer::kOk; }, std::nullopt, true);
  if (!receiver.listening()) {
    std::printf("SKIPPED: IPv6 webhook receiver: this machine has no IPv6 loopback\n");
    return;
  }
  Daemon d;
  d.extra = {"--max-body-bytes", "65536"};
  d.start();
  d.set_up(receiver.url());
  const std::string huge = R"({"events":[{"id":")" + std::string(100'000, 'a') + R"("}]})";
  CHECK(d.call("POST", "/api/v1/events:batch", huge).status == 413);
  REQUIRE(d.wait_delivered(1));
  const std::vector<Received> got = receiver.received();
  REQUIRE_FALSE(got.empty());
  CHECK(header_of(got.front(), "paygent-event-type") == "delivery_failure");
  CHECK(header_of(got.front(), "host") == receiver.url().substr(7, receiver.url().find("/hooks") - 7));
  CHECK(d.process->terminate() == 0);
}

// https:// receivers: paygentd verifies the receiver's certificate (the system's CAs and
// --webhook-ca-file's) and its host. A receiver with a certificate of that CA for 127.0.0.1 gets
// every alert, signed; one whose certificate nobody trusts, or that is trusted but names another
// host, gets nothing: each attempt is logged as a TLS handshake that failed certificate
// verification. Certificates made with the openssl command (skipped without it).
TEST_CASE("server.paygentd_webhooks_over_tls_verify_the_receiver") {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
    MESSAGE("SKIPPED: webhooks TLS test: no openssl command");
    return;
  }
  TempDir certs("paygentd-webhooks-tls");
  auto make_cert = [&](const std::string& name, const std::string& san) {
    const std::string base = certs.path() + "/" + name;
    const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=" + name +
                                " -addext subjectAltName=" + san + " -keyout " + base + ".key -out " + base +
                                ".pem >/dev/null 2>&1";
    REQUIRE(std::system(command.c_str()) == 0);
    return TlsFiles{base + ".pem", base + ".key"};
  };
  const TlsFiles trusted = make_cert("trusted", "IP:127.0.0.1");
  const TlsFiles other_host = make_cert("other-host", "DNS:receiver.example");
  const TlsFiles untrusted = make_cert("untrusted", "IP:127.0.0.1");
  // The CA file trusts the first two (self-signed: each is its own CA), not the third.
  const std::string ca = certs.path() + "/ca.pem";
  REQUIRE(std::system(("cat " + trusted.cert + " " + other_host.cert + " > " + ca).c_str()) == 0);

  Receiver good([](int) { return Answer::kOk; }, trusted);
  Receiver wrong_host([](int) { return Answer::kOk; }, other_host);
  Receiver unknown([](int) { return Answer::kOk; }, untrusted);
  Daemon d;
  d.extra = {"--webhook-ca-file", ca};
  d.start();
  const std::string secret = d.set_up(good.url());
  std::vector<std::string> refused_ids;
  for (const Receiver* r : {&wrong_host, &unknown}) {
    const HttpClient::Reply created = d.call("POST", "/api/v1/webhooks", R"({"url":")" + r->url() + R"(","events":["hard_gate"]})");
    REQUIRE_MESSAGE(created.status == 201, created.body);
    refused_ids.push_back(paygent::testing::json_string_member(created.body, "id"));
  }
  d.raise_alerts(2, 7);  // 2 hard gates and a delivery failure
  REQUIRE(d.wait_delivered(3));
  const std::vector<Received> got = good.received();
  CHECK(got.size() == 3);
  for (const Received& r : got) CHECK_MESSAGE(signature_valid(r, secret), r.body);
  // The other two: every attempt refused at the handshake, by paygentd, and logged so.
  for (const std::string& id : refused_ids) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    std::string body;
    while (std::chrono::steady_clock::now() < deadline) {
      body = d.call("GET", "/api/v1/webhooks/" + id + "/deliveries").body;
      if (body.find("certificate verify failed") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK_MESSAGE(body.find("TLS handshake with 127.0.0.1:") != std::string::npos, body);
    CHECK_MESSAGE(body.find("certificate verify failed") != std::string::npos, body);
    CHECK(body.find("\"status\":\"delivered\"") == std::string::npos);
  }
  CHECK(wrong_host.received().empty());
  CHECK(unknown.received().empty());
  CHECK(wrong_host.refused_handshakes() > 0);
  CHECK(unknown.refused_handshakes() > 0);
  // A CA file that is not there, or holds no certificate: --check-config names it, and paygentd
  // does not start.
  const std::string binary = paygent::testing::paygentd_path();
  for (const auto& [file, why] : {std::pair{certs.path() + "/nope.pem", std::string("is not readable")},
                                  std::pair{trusted.key, std::string("holds no PEM certificate")}}) {
    FILE* pipe = ::popen((binary + " --check-config --data-dir " + certs.path() + "/data --webhook-ca-file " + file +
                          " 2>&1").c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::string output;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, n);
    const int status = ::pclose(pipe);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 1));
    CHECK_MESSAGE(output.find("--webhook-ca-file: " + file + " " + why) != std::string::npos, output);
    const int started = std::system((binary + " --data-dir " + certs.path() + "/data --listen 127.0.0.1:0 --webhook-ca-file " +
                                     file + " >/dev/null 2>&1").c_str());
    CHECK((WIFEXITED(started) && WEXITSTATUS(started) == 2));
  }
  CHECK(d.process->terminate() == 0);
}

TEST_CASE("server.paygentd_webhooks_delivered_through_failures") {
  // The first requests fail in each way a receiver can; the rest succeed.
  Receiver receiver([](int n) {
    switch (n) {
      case 0: return Answer::kFail500;
      case 1: return Answer::kAfterTimeout;
      case 2: return Answer::kNever;
      case 3: return Answer::kLateInTime;
      case 4: return Answer::kFail500;
      default: return Answer::kOk;
    }
  });
  Daemon d;
  d.start();
  const std::string secret = d.set_up(receiver.url());
  constexpr int kUsers = 6;
  d.raise_alerts(kUsers, 1);
  REQUIRE(d.wait_delivered(kUsers + 1));

  const std::vector<Received> got = receiver.received();
  std::map<std::string, std::vector<const Received*>> by_delivery;
  std::set<std::string> processed;  // delivery ids the receiver acted on (answered 2xx, in time or not)
  for (const Received& r : got) {
    CHECK_MESSAGE(signature_valid(r, secret), r.body);
    CHECK(header_of(r, "content-type") == "application/json");
    const std::string id = header_of(r, "paygent-delivery-id");
    CHECK(r.body.find("\"delivery_id\":\"" + id + "\"") != std::string::npos);
    by_delivery[id].push_back(&r);
    if (r.answer == Answer::kOk || r.answer == Answer::kLateInTime || r.answer == Answer::kAfterTimeout) {
      processed.insert(id);
    }
  }
  // Every alert reached the receiver: 6 hard gates and one refused batch.
  CHECK(processed.size() == kUsers + 1);
  int hard = 0, failures = 0;
  for (const auto& [id, requests] : by_delivery) {
    for (const Received* r : requests) CHECK(r->body == requests.front()->body);  // retries: same id, same body
    hard += header_of(*requests.front(), "paygent-event-type") == "hard_gate";
    failures += header_of(*requests.front(), "paygent-event-type") == "delivery_failure";
  }
  CHECK(hard == kUsers);
  CHECK(failures == 1);
  // The one answered after the timeout was retried: a duplicate the receiver drops by its id.
  const auto duplicate = std::find_if(got.begin(), got.end(), [](const Received& r) { return r.answer == Answer::kAfterTimeout; });
  REQUIRE(duplicate != got.end());
  CHECK(by_delivery[header_of(*duplicate, "paygent-delivery-id")].size() >= 2);
  // The log counts the attempts: 5 failed ones over all deliveries.
  std::int64_t attempts = 0;
  for (const auto& [id, row] : d.log()) attempts += row.second;
  CHECK(attempts == static_cast<std::int64_t>(got.size()));
  CHECK(attempts >= kUsers + 1 + 4);
  // And so do the metrics.
  const HttpClient::Reply metrics = d.call("GET", "/metrics");
  CHECK(metrics.body.find("paygentd_webhook_attempts_total{outcome=\"delivered\"} " + std::to_string(kUsers + 1)) !=
        std::string::npos);
  CHECK(metrics.body.find("paygentd_webhook_attempts_total{outcome=\"retry\"} " + std::to_string(attempts - kUsers - 1)) !=
        std::string::npos);
  CHECK(d.process->terminate() == 0);  // SIGTERM: a clean stop
}

// Alerts raised while the receiver is down, then paygentd killed (kill -9): delivered after the
// restart, each once at least, signed.
void survive_kill_9(const std::vector<std::string>& database) {
  std::atomic<bool> up{false};
  Receiver receiver([&up](int) { return up ? Answer::kOk : Answer::kUnavailable503; });
  Daemon d;
  d.database = database;
  d.start();
  const std::string secret = d.set_up(receiver.url());
  constexpr int kUsers = 5;
  d.raise_alerts(kUsers, 2);
  // Acknowledged batches, alerts queued, none delivered: then a crash.
  const auto before = d.log();
  CHECK(before.size() == kUsers + 1);
  for (const auto& [id, row] : before) CHECK(row.first == "pending");
  d.process->kill_hard();
  up = true;
  d.start();
  REQUIRE(d.wait_delivered(kUsers + 1));
  std::set<std::string> delivered;
  for (const Received& r : receiver.received()) {
    CHECK(signature_valid(r, secret));
    if (r.answer == Answer::kOk) delivered.insert(header_of(r, "paygent-delivery-id"));
  }
  CHECK(delivered.size() == kUsers + 1);
  for (const auto& [id, row] : before) CHECK(delivered.count(id) == 1);
  CHECK(d.process->terminate() == 0);
}

TEST_CASE("server.paygentd_webhooks_survive_kill_9") { survive_kill_9({}); }

TEST_CASE("server.paygentd_webhooks_survive_kill_9_on_postgresql") {
  const std::unique_ptr<StorageBackend> backend = postgres_backend_or_skip();
  if (backend == nullptr) return;
#ifdef PAYGENT_WITH_POSTGRES
  survive_kill_9({"--database", static_cast<PostgresBackend&>(*backend).new_database()});
#endif
}

TEST_CASE("server.paygentd_webhooks_flags") {
  TempDir dir("paygentd-webhook-flags");
  const std::string binary = paygent::testing::paygentd_path();
  for (const char* bad : {"--webhook-workers 0", "--webhook-workers 65", "--webhook-timeout-ms 5",
                          "--webhook-max-attempts 0", "--webhook-backoff-ms x", "--webhook-poll-ms 0",
                          "--forecast-horizon-s -1", "--invoice-grace-s -1", "--invoice-grace-s 2678401"}) {
    INFO(bad);
    const std::string command = binary + " --data-dir " + dir.path() + " " + bad + " >/dev/null 2>&1";
    const int status = std::system(command.c_str());
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 2));
  }
  FILE* pipe = ::popen((binary + " --help").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string help;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) help.append(buf, n);
  ::pclose(pipe);
  for (const char* flag : {"--webhook-workers", "--webhook-timeout-ms", "--webhook-max-attempts", "--webhook-backoff-ms",
                           "--webhook-poll-ms", "--forecast-horizon-s", "PAYGENTD_FORECAST_HORIZON_S",
                           "--webhook-ca-file", "PAYGENTD_WEBHOOK_CA_FILE", "--invoice-grace-s",
                           "PAYGENTD_INVOICE_GRACE_S"}) {
    CHECK_MESSAGE(help.find(flag) != std::string::npos, flag);
  }
}

}  // namespace
}  // namespace paygent::server::test
