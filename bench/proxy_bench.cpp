// paygent-proxy's cost in front of a provider: latency per request (p50, p99, mean) and throughput
// at 1 and 50 concurrent clients, for the same fake provider (tests/proxy/loopback.h, loopback)
// called directly, through paygent-proxy (in this process, metering every call for one of 50
// users), and through nginx's proxy_pass when an nginx binary is installed (Debian's nginx-light;
// otherwise the run says it is absent). Clients keep their connection open, as the SDKs do; the
// proxy (and nginx, configured alike) opens a new upstream connection per call.
//
// Checks before timing: a proxied call answers the fixture, with the cost header the plan's rates
// give. Checks after: every proxied call answered 200, every stream arrived whole, and the users' metered spend is exactly
// calls x that cost. A mismatch exits non-zero instead of printing a speed.
//
//   build/bench/paygent_proxy_bench [requests_per_client=2000]
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "proxy/server.h"
#include "tests/proxy/loopback.h"

namespace {

using namespace paygent;
using namespace paygent::proxy;
using namespace paygent::proxy::testing;
using Clock = std::chrono::steady_clock;

constexpr char kPlans[] = R"({"default_plan": "pro", "plans": [{"name": "pro", "max_spend_per_period": 1000000,
  "cost_rates": {"gpt-4o": {"input": 0.0025, "output": 0.01}}}]})";
constexpr Nanos kCallCost = 12 * 2'500 + 5 * 10'000;  // the fixture's usage at those rates
const std::string kBody = R"({"model":"gpt-4o","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]})";

pid_t nginx_pid = -1;  // stopped on every exit
std::string nginx_dir;

void stop_nginx() {
  if (nginx_pid > 0) {
    ::kill(nginx_pid, SIGTERM);
    ::waitpid(nginx_pid, nullptr, 0);
    nginx_pid = -1;
  }
  if (!nginx_dir.empty()) std::filesystem::remove_all(nginx_dir);
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "proxy_bench: CHECK FAILED: %s\n", what.c_str());
  stop_nginx();
  std::exit(1);
}

// A keep-alive client: one request, the response read by its Content-Length.
struct Client {
  explicit Client(int port) : fd(connect_loopback(port)) {}
  ~Client() { ::close(fd); }
  HttpResponse call(const std::string& user) {
    std::string req = "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                      "authorization: Bearer sk-bench\r\nx-paygent-user: " + user +
                      "\r\ncontent-length: " + std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
    if (!send_all(fd, req)) fail("send");
    std::size_t end;
    while ((end = buffer.find("\r\n\r\n")) == std::string::npos) read_more();
    std::string lower = buffer.substr(0, end);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const auto at = lower.find("content-length:");
    if (at == std::string::npos) fail("no content-length in " + buffer.substr(0, end));
    const std::size_t length = std::stoul(lower.substr(at + 15));
    while (buffer.size() < end + 4 + length) read_more();
    HttpResponse r = parse_response(buffer.substr(0, end + 4 + length));
    buffer.erase(0, end + 4 + length);
    return r;
  }
  void read_more() {
    char chunk[16384];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) fail("connection closed");
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  int fd;
  std::string buffer;
};

struct Result {
  double p50_us = 0, p99_us = 0, mean_us = 0, per_sec = 0;
  long ok = 0;
};

Result run(int port, int clients, int requests) {
  std::vector<std::vector<double>> latencies(static_cast<std::size_t>(clients));
  std::vector<long> oks(static_cast<std::size_t>(clients));
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      Client client(port);
      const std::string user = "bench-user-" + std::to_string(c % 50);
      auto& mine = latencies[static_cast<std::size_t>(c)];
      mine.reserve(static_cast<std::size_t>(requests));
      for (int i = 0; i < requests; ++i) {
        const auto t0 = Clock::now();
        const HttpResponse r = client.call(user);
        mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        oks[static_cast<std::size_t>(c)] += r.status == 200;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Result r;
  r.p50_us = all[all.size() / 2];
  r.p99_us = all[all.size() * 99 / 100];
  double sum = 0;
  for (double x : all) sum += x;
  r.mean_us = sum / static_cast<double>(all.size());
  r.per_sec = static_cast<double>(all.size()) / seconds;
  for (long o : oks) r.ok += o;
  return r;
}

void print(const char* name, int clients, const Result& r, const Result* direct) {
  std::printf("%-14s clients=%-3d p50=%8.1f us  p99=%8.1f us  mean=%8.1f us  %9.0f req/s", name, clients, r.p50_us,
              r.p99_us, r.mean_us, r.per_sec);
  if (direct != nullptr) {
    std::printf("  added: p50=%+7.1f us p99=%+7.1f us", r.p50_us - direct->p50_us, r.p99_us - direct->p99_us);
  }
  std::printf("\n");
}

// A streamed call on a new connection: the time to the first event's bytes (p50 over `n` calls,
// microseconds); every stream is read to its end and must carry "[DONE]".
double first_byte_p50(int port, int n) {
  const std::string body = R"({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]})";
  std::vector<double> times;
  for (int i = 0; i < n; ++i) {
    const int fd = connect_loopback(port);
    const auto t0 = Clock::now();
    send_all(fd, request_text("/v1/chat/completions", body, {"x-paygent-user: bench-stream"}));
    std::string raw;
    char chunk[16384];
    bool first = false;
    for (ssize_t got; (got = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) {
      raw.append(chunk, static_cast<std::size_t>(got));
      if (!first && raw.find("data:") != std::string::npos) {
        times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        first = true;
      }
      if (raw.ends_with("\r\n0\r\n\r\n")) break;  // the fake provider keeps its connection open
    }
    ::close(fd);
    if (!first || raw.find("[DONE]") == std::string::npos) fail("a stream did not arrive whole");
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// nginx with proxy_pass to the fake provider, or -1 when no nginx binary is installed.
pid_t start_nginx(const std::string& upstream_url, int& port) {
  const char* binary = "/usr/sbin/nginx";
  if (!std::filesystem::exists(binary)) return -1;
  const std::string dir = std::filesystem::temp_directory_path() / ("paygent-proxy-bench-nginx-" + std::to_string(::getpid()));
  nginx_dir = dir;
  std::filesystem::create_directories(dir + "/logs");
  const int probe = listen_loopback(port);  // a free port for nginx
  ::close(probe);
  std::ofstream(dir + "/nginx.conf")
      << "worker_processes 2;\npid " << dir << "/nginx.pid;\nerror_log " << dir << "/logs/error.log;\n"
      << "events { worker_connections 1024; }\nhttp {\n access_log off;\n keepalive_requests 1000000;\n client_body_temp_path " << dir << ";\n"
      << " proxy_temp_path " << dir << ";\n server {\n  listen 127.0.0.1:" << port << ";\n"
      << "  location / { proxy_pass " << upstream_url << "; proxy_http_version 1.1; proxy_set_header Connection close;"
      << " proxy_buffering off; }\n }\n}\n";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(binary, binary, "-p", dir.c_str(), "-c", (dir + "/nginx.conf").c_str(), "-g", "daemon off;", nullptr);
    std::_Exit(127);
  }
  for (int i = 0; i < 100; ++i) {
    try {
      ::close(connect_loopback(port));
      return pid;
    } catch (...) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ::kill(pid, SIGTERM);
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  const int requests = argc > 1 ? std::atoi(argv[1]) : 2000;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string answer = fixture("openai-chat.json");
  const std::vector<std::string> stream = sse_events(fixture("openai-chat-stream.sse"));
  FakeUpstream upstream([&](const std::string&, const std::string& body) {
    if (body.find("\"stream\":true") != std::string::npos) {
      return FakeReply{.content_type = "text/event-stream", .events = stream, .delay = std::chrono::milliseconds(1)};
    }
    return FakeReply{.body = answer};
  });

  Options options;
  options.plans = *parse_plan_config(kPlans);
  options.local_store_path = "";
  auto pg = Paygent::create(proxy_paygent_options(std::move(options)));
  if (!pg.ok()) fail("Paygent::create");
  ProxyOptions proxy_options;
  proxy_options.listen_port = 0;
  proxy_options.upstream_openai = upstream.url();
  auto proxy = ProxyServer::start(proxy_options, pg->get());
  if (!proxy.ok()) fail("ProxyServer::start");
  const int proxy_port = (*proxy)->port();
  const int upstream_port = std::stoi(upstream.url().substr(upstream.url().rfind(':') + 1));

  // Check before timing.
  {
    Client client(proxy_port);
    const HttpResponse r = client.call("bench-check");
    if (r.status != 200 || r.body != answer) fail("a proxied call does not answer the fixture");
    if (r.header("x-paygent-cost-nanos") != std::to_string(kCallCost)) fail("cost header " + r.header("x-paygent-cost-nanos"));
  }
  int nginx_port = 0;
  const pid_t nginx = nginx_pid = start_nginx(upstream.url(), nginx_port);
  if (nginx < 0) std::printf("nginx: not installed (apt-get install nginx-light): no nginx comparison in this run\n");

  std::printf("requests per client: %d (JSON chat completion, keep-alive clients, loopback)\n", requests);
  long proxied = 0;
  for (int clients : {1, 50}) {
    const int n = clients == 1 ? requests : std::max(requests / 10, 50);
    run(upstream_port, clients, n / 10 + 1);  // warm up
    const Result direct = run(upstream_port, clients, n);
    print("direct", clients, direct, nullptr);
    const Result through_proxy = run(proxy_port, clients, n);
    proxied += through_proxy.ok;
    if (through_proxy.ok != static_cast<long>(clients) * n) fail("proxied calls not all answered 200");
    print("paygent-proxy", clients, through_proxy, &direct);
    if (nginx > 0) {
      const Result through_nginx = run(nginx_port, clients, n);
      print("nginx", clients, through_nginx, &direct);
      std::printf("%-14s clients=%-3d added p50 ratio proxy/nginx = %.2f\n", "", clients,
                  (through_proxy.p50_us - direct.p50_us) / std::max(1.0, through_nginx.p50_us - direct.p50_us));
    }
  }
  // A stream's first byte (the provider sends one event a millisecond).
  const int streams = std::max(requests / 10, 20);
  const double direct_first = first_byte_p50(upstream_port, streams);
  const double proxy_first = first_byte_p50(proxy_port, streams);
  std::printf("stream first byte p50: direct %.1f us, paygent-proxy %.1f us (added %+.1f us)", direct_first, proxy_first,
              proxy_first - direct_first);
  if (nginx > 0) {
    const double nginx_first = first_byte_p50(nginx_port, streams);
    std::printf(", nginx %.1f us (added %+.1f us)", nginx_first, nginx_first - direct_first);
  }
  std::printf("\n");
  proxied += streams;
  stop_nginx();
  // Check after: every proxied call metered exactly (50 users and the streams' one; the check's call aside).
  Nanos spent = 0;
  if (auto report = (*pg)->report("bench-stream"); report.ok()) spent += report->spend;
  for (int u = 0; u < 50; ++u) {
    auto report = (*pg)->report("bench-user-" + std::to_string(u));
    if (report.ok()) spent += report->spend;
  }
  if (spent != proxied * kCallCost) fail("metered " + std::to_string(spent) + " != " + std::to_string(proxied * kCallCost));
  std::printf("checked: %ld proxied calls metered exactly (%lld nano-USD)\n", proxied, static_cast<long long>(spent));
  (*proxy)->stop();
  return 0;
}
