// paygent-proxy's cost in front of a provider: latency per request (p50, p99, mean) and throughput
// at 1 and 50 concurrent clients, for the same fake provider (tests/proxy/loopback.h, loopback)
// called directly, through paygent-proxy (in this process, metering every call for one of 50
// users) as shipped (upstream connections pooled) and with its pool off (a new upstream connection
// per call), and through nginx's proxy_pass when an nginx binary is installed (Debian's
// nginx-light; otherwise the run says it is absent), twice: with `keepalive 64` upstream (the fair
// comparison with the pooled proxy) and with `Connection: close` upstream (as the unpooled one).
// nginx runs 2 worker processes (the machine's cores), access log off, proxy_buffering off.
// Clients keep their connection open, as the SDKs do; each target is warmed up first (its pool
// fills). "added" is the target's p50 (p99) minus the direct call's in the same run.
//
// Then a stream's first byte: a new client connection per stream (the provider sends one event a
// millisecond, the first after 1 ms), p50, taken from the targets in turns (one stream to each,
// then again) so that the machine's drift reaches all alike. Its "added" can be negative: a direct call opens a new
// connection to the fake provider, which starts a thread for it; a pooling proxy reuses one.
// Compare the targets with each other.
//
// Checks before timing: a proxied call answers the fixture, with the cost header the plan's rates
// give. Checks after: every proxied call answered 200, every stream arrived whole, and the users' metered spend is exactly
// calls x that cost. A mismatch exits non-zero instead of printing a speed.
//
//   build/bench/paygent_proxy_bench [requests_per_client=2000] [only_these_targets]
//
// only_these_targets: names, comma-separated (e.g. "proxy process,nginx keepalive"), for profiling.
//
// The shipped binary runs too, as a process of its own ("proxy process", as nginx runs), when it
// was built beside this bench; its calls are metered in its own Paygent and checked through its
// GET /paygent/report.
//
// PAYGENT_PROXY_BENCH_UNMETERED_STREAMS=1 sends the first-byte streams with no user (forwarded
// unmetered): the difference to a normal run is what the gate and metering add to a first byte.
// PAYGENT_PROXY_BENCH_BINARY=<path> runs that paygent-proxy binary as the proxy process (another
// build, e.g. the last stop's): alternate two runs at a time so that each pair shares the machine.
// PAYGENT_PROXY_BENCH_WARM_STREAMS=1 takes each measured stream right after one to the same target:
// the first byte of a proxy serving traffic, where the default measures one whose caches the other
// targets' streams took.
//
// 2026-12-06, eleventh session, 2-core VM (bench/README.md has each run; docs/proxy.md, "Speed",
// the verdicts), the profile-guided build of d35d47f (scripts/build-pgo.sh) as the process, four
// runs alternated with the plain build of 877af12: stream first byte after nginx keepalive's,
// streams in turns +23 us (21 to 25; request path +19) against +50; warm -16 and -13 us against
// +8 and +3; JSON added p50 ratio to nginx keepalive's 0.87 at 1 client and 1.04 at 50 against
// 1.10 and 1.31.
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
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

std::vector<pid_t> nginx_pids;  // stopped on every exit
std::vector<std::string> nginx_dirs;

void stop_nginx() {
  for (pid_t& pid : nginx_pids) {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  for (const auto& dir : nginx_dirs) std::filesystem::remove_all(dir);
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
  std::printf("%-16s clients=%-3d p50=%8.1f us  p99=%8.1f us  mean=%8.1f us  %9.0f req/s", name, clients, r.p50_us,
              r.p99_us, r.mean_us, r.per_sec);
  if (direct != nullptr) {
    std::printf("  added: p50=%+7.1f us p99=%+7.1f us", r.p50_us - direct->p50_us, r.p99_us - direct->p99_us);
  }
  std::printf("\n");
}

// When the fake provider last received a request (steady clock ticks): first-byte timings are
// taken one stream at a time, so it is the current stream's.
std::atomic<Clock::rep> provider_received_at{0};

// A stream's first byte, split where the provider received the request: the request path
// (client -> target -> provider) and the response path (the provider's 1 ms, then provider ->
// target -> client). Microseconds.
struct FirstByte {
  double total = 0, request = 0, response = 0;
};

// PAYGENT_PROXY_BENCH_UNMETERED_STREAMS=1: the first-byte streams name no user, so the proxies
// forward them unmetered (no gate, no reservation): what the metering itself adds to the first
// byte is the difference to a run without it.
bool unmetered_streams = false;

// PAYGENT_PROXY_BENCH_WARM_STREAMS=1: each measured stream comes right after an unmeasured one to
// the same target (3 ms apart): the first byte of a target that is serving traffic, its code and
// data still in this machine's caches, where the default measures one that the other targets'
// streams have run between (each target's stream then finds its caches taken by the others').
bool warm_streams = false;

// A streamed call on a new connection: the time to the first event's bytes; the stream is read
// to its end and must carry "[DONE]".
FirstByte first_byte(int port) {
  const std::string body = R"({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]})";
  const int fd = connect_loopback(port);
  const auto t0 = Clock::now();
  send_all(fd, request_text("/v1/chat/completions", body,
                            {unmetered_streams ? "x-paygent-bench: unmetered" : "x-paygent-user: bench-stream"}));
  std::string raw;
  char chunk[16384];
  std::optional<FirstByte> first;
  auto us = [](Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); };
  for (ssize_t got; (got = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) {
    raw.append(chunk, static_cast<std::size_t>(got));
    if (!first && raw.find("data:") != std::string::npos) {
      const auto now = Clock::now();
      const Clock::time_point received{Clock::duration(provider_received_at.load())};
      first = FirstByte{.total = us(now - t0), .request = us(received - t0), .response = us(now - received)};
    }
    if (raw.ends_with("\r\n0\r\n\r\n")) break;  // the fake provider keeps its connection open
  }
  ::close(fd);
  if (!first || raw.find("[DONE]") == std::string::npos) fail("a stream did not arrive whole");
  return *first;
}

// The p50s of `n` streams to each of `ports` (each part's own p50), taken in turns (one stream to
// each port, then again), so that a drift of the machine over the run reaches every port alike.
std::vector<FirstByte> first_byte_p50s(const std::vector<int>& ports, int n) {
  std::vector<std::vector<FirstByte>> times(ports.size());
  for (int i = 0; i < n; ++i) {
    for (std::size_t p = 0; p < ports.size(); ++p) {
      if (warm_streams) {
        first_byte(ports[p]);
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
      }
      times[p].push_back(first_byte(ports[p]));
      // The fake provider ends a thread with each connection closed (the direct call's, the
      // unpooled proxy's and nginx close's): ~150 us of exit work that landed on the next
      // target's stream when the next started at once (perf sched: the proxy process's request
      // waited behind it). Every stream starts on a quiet machine.
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
  }
  std::vector<FirstByte> p50s;
  for (std::vector<FirstByte>& t : times) {
    auto p50 = [&](double FirstByte::*part) {
      std::vector<double> v;
      for (const FirstByte& f : t) v.push_back(f.*part);
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    p50s.push_back({p50(&FirstByte::total), p50(&FirstByte::request), p50(&FirstByte::response)});
  }
  return p50s;
}

// Starts the program `args` (args[0] its path) and waits until it accepts on loopback `port`: its
// pid, or -1 (it is stopped) when it does not within 2 s.
pid_t spawn_listening(std::vector<std::string> args, int port) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execv(argv[0], argv.data());
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
  ::waitpid(pid, nullptr, 0);
  return -1;
}

// nginx with proxy_pass to the fake provider, or -1 when no nginx binary is installed. Two workers
// (the machine's cores). `keepalive`: an upstream block keeping up to 64 idle connections (as
// paygent-proxy's pool); otherwise a new upstream connection per call (Connection: close).
pid_t start_nginx(const std::string& upstream_url, int& port, bool keepalive) {
  const char* binary = "/usr/sbin/nginx";
  if (!std::filesystem::exists(binary)) return -1;
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("paygent-proxy-bench-nginx-" + std::to_string(::getpid()) + (keepalive ? "-ka" : ""));
  nginx_dirs.push_back(dir);
  std::filesystem::create_directories(dir + "/logs");
  const int probe = listen_loopback(port);  // a free port for nginx
  ::close(probe);
  std::ofstream(dir + "/nginx.conf")
      << "worker_processes 2;\npid " << dir << "/nginx.pid;\nerror_log " << dir << "/logs/error.log;\n"
      << "events { worker_connections 1024; }\nhttp {\n access_log off;\n keepalive_requests 1000000;\n client_body_temp_path " << dir << ";\n"
      << " proxy_temp_path " << dir << ";\n"
      << " upstream fake { server " << upstream_url.substr(7) << ";" << (keepalive ? " keepalive 64; keepalive_timeout 30s;" : "")
      << " }\n server {\n  listen 127.0.0.1:" << port << ";\n"
      << "  location / { proxy_pass http://fake; proxy_http_version 1.1; proxy_set_header Connection "
      << (keepalive ? "\"\"" : "close") << "; proxy_buffering off; }\n }\n}\n";
  return spawn_listening({binary, "-p", dir, "-c", dir + "/nginx.conf", "-g", "daemon off;"}, port);
}

// The shipped paygent-proxy binary as a process of its own (as nginx is, and as it is deployed),
// memory-only store, or -1 when it was not built beside this bench.
pid_t start_proxy_process(const std::string& upstream_url, int& port) {
#ifdef PAYGENT_PROXY_PATH
  // PAYGENT_PROXY_BENCH_BINARY runs another build of it instead (two builds compared run by run).
  const char* binary = std::getenv("PAYGENT_PROXY_BENCH_BINARY");
  if (binary == nullptr || *binary == '\0') binary = PAYGENT_PROXY_PATH;
  if (!std::filesystem::exists(binary)) return -1;
  const std::string dir = std::filesystem::temp_directory_path() / ("paygent-proxy-bench-" + std::to_string(::getpid()));
  nginx_dirs.push_back(dir);  // removed with nginx's
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/plans.json") << kPlans;
  const int probe = listen_loopback(port);
  ::close(probe);
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  const std::string plans = dir + "/plans.json";
  // The same PAYGENT_PROXY_BENCH_THREADS and PAYGENT_PROXY_BENCH_REUSE_PORT as the proxies in this process.
  std::vector<std::string> args = {binary, "--listen", listen, "--upstream-openai", upstream_url, "--plans", plans, "--store", ""};
  if (const char* threads = std::getenv("PAYGENT_PROXY_BENCH_THREADS")) args.insert(args.end(), {"--threads", threads});
  if (const char* reuse = std::getenv("PAYGENT_PROXY_BENCH_REUSE_PORT"); reuse != nullptr && std::atoi(reuse) != 0) {
    args.emplace_back("--reuse-port");
  }
  return spawn_listening(std::move(args), port);
#else
  (void)upstream_url;
  (void)port;
#endif
  return -1;
}

// A user's metered spend in the paygent-proxy process on `port` (GET /paygent/report).
Nanos process_spend(int port, const std::string& user) {
  HttpResponse r;
  try {
    r = post(port, "/paygent/report?user=" + user, "", {}, "GET");
  } catch (const std::exception& e) {
    fail(std::string("the paygent-proxy process does not answer: ") + e.what());
  }
  const auto at = r.body.find("\"spend_nanos\":");
  if (r.status != 200 || at == std::string::npos) return 0;  // no call metered for this user
  return std::stoll(r.body.substr(at + 14));
}

}  // namespace

int main(int argc, char** argv) {
  const int requests = argc > 1 ? std::atoi(argv[1]) : 2000;
  if (const char* unmetered = std::getenv("PAYGENT_PROXY_BENCH_UNMETERED_STREAMS")) unmetered_streams = std::atoi(unmetered) != 0;
  if (const char* warm = std::getenv("PAYGENT_PROXY_BENCH_WARM_STREAMS")) warm_streams = std::atoi(warm) != 0;
  const std::string only = argc > 2 ? argv[2] : "";  // run only the targets named in it (profiling)
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string answer = fixture("openai-chat.json");
  const std::vector<std::string> stream = sse_events(fixture("openai-chat-stream.sse"));
  FakeUpstream upstream([&](const std::string&, const std::string& body) {
    provider_received_at = Clock::now().time_since_epoch().count();
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
  // The proxy as shipped (upstream connections pooled) and, for comparison in the same run, with
  // the pool off (a new upstream connection per call, as before the pool).
  ProxyOptions proxy_options;
  proxy_options.listen_port = 0;
  proxy_options.upstream_openai = upstream.url();
  // Workers per proxy (default: one per core, as shipped); PAYGENT_PROXY_BENCH_THREADS=N to compare.
  if (const char* threads = std::getenv("PAYGENT_PROXY_BENCH_THREADS")) proxy_options.threads = std::atoi(threads);
  // PAYGENT_PROXY_BENCH_REUSE_PORT=1: a listening socket per worker (ProxyOptions::reuse_port).
  if (const char* reuse = std::getenv("PAYGENT_PROXY_BENCH_REUSE_PORT")) proxy_options.reuse_port = std::atoi(reuse) != 0;
  auto proxy = ProxyServer::start(proxy_options, pg->get());
  if (!proxy.ok()) fail("ProxyServer::start");
  proxy_options.upstream_max_idle = 0;
  auto unpooled = ProxyServer::start(proxy_options, pg->get());
  if (!unpooled.ok()) fail("ProxyServer::start (no pool)");
  const int upstream_port = std::stoi(upstream.url().substr(upstream.url().rfind(':') + 1));

  // Check before timing.
  for (const auto* server : {&*proxy, &*unpooled}) {
    Client client((*server)->port());
    const HttpResponse r = client.call("bench-check");
    if (r.status != 200 || r.body != answer) fail("a proxied call does not answer the fixture");
    if (r.header("x-paygent-cost-nanos") != std::to_string(kCallCost)) fail("cost header " + r.header("x-paygent-cost-nanos"));
  }
  // Where a target's calls are metered (and checked after): nowhere (nginx, direct), in this
  // process's Paygent, or in the paygent-proxy process.
  enum class Meter { kNone, kHere, kProcess };
  struct Target {
    const char* name;
    int port;
    Meter meter;
    long calls = 0;  // proxied calls, to be metered exactly
  };
  std::vector<Target> targets = {{"paygent-proxy", (*proxy)->port(), Meter::kHere},
                                 {"proxy no pool", (*unpooled)->port(), Meter::kHere}};
  int process_port = 0;
  if (const pid_t pid = start_proxy_process(upstream.url(), process_port); pid > 0) {
    nginx_pids.push_back(pid);  // stopped on every exit, with nginx
    targets.push_back({"proxy process", process_port, Meter::kProcess});
    Client client(process_port);
    const HttpResponse r = client.call("bench-check");
    if (r.status != 200 || r.body != answer) fail("a call through the paygent-proxy process does not answer the fixture");
    if (r.header("x-paygent-cost-nanos") != std::to_string(kCallCost)) fail("cost header " + r.header("x-paygent-cost-nanos"));
  } else {
    std::printf("paygent-proxy: no binary beside this bench: no separate-process run\n");
  }
  const std::size_t first_nginx = targets.size();
  for (bool keepalive : {true, false}) {
    int port = 0;
    const pid_t pid = start_nginx(upstream.url(), port, keepalive);
    if (pid < 0) continue;
    nginx_pids.push_back(pid);
    targets.push_back({keepalive ? "nginx keepalive" : "nginx close", port, Meter::kNone});
  }
  if (targets.size() == first_nginx) std::printf("nginx: not installed (apt-get install nginx-light): no nginx comparison in this run\n");
  if (!only.empty()) {
    const std::vector<std::string> names = absl::StrSplit(only, ',');
    for (const std::string& name : names) {  // a typo, or a target this machine cannot run, is an error
      if (std::none_of(targets.begin(), targets.end(), [&](const Target& t) { return t.name == name; })) {
        fail("no target named \"" + name + "\" in this run (paygent-proxy, proxy no pool, proxy process, nginx "
             "keepalive, nginx close; the last three need their binary)");
      }
    }
    std::erase_if(targets, [&](const Target& t) {
      return std::none_of(names.begin(), names.end(), [&](const std::string& n) { return std::string_view(t.name) == n; });
    });
  }

  std::printf("requests per client: %d (JSON chat completion, keep-alive clients, loopback)\n", requests);
  for (int clients : {1, 50}) {
    const int n = clients == 1 ? requests : std::max(requests / 10, 50);
    run(upstream_port, clients, n / 10 + 1);  // warm up
    const Result direct = run(upstream_port, clients, n);
    print("direct", clients, direct, nullptr);
    std::vector<double> added(targets.size());
    for (std::size_t t = 0; t < targets.size(); ++t) {
      run(targets[t].port, clients, n / 10 + 1);  // warm up (the pools fill)
      const Result r = run(targets[t].port, clients, n);
      if (targets[t].meter != Meter::kNone) {
        targets[t].calls += r.ok + clients * (n / 10 + 1);
        if (r.ok != static_cast<long>(clients) * n) fail("proxied calls not all answered 200");
      }
      print(targets[t].name, clients, r, &direct);
      added[t] = r.p50_us - direct.p50_us;
    }
    for (std::size_t t = first_nginx; only.empty() && t < targets.size(); ++t) {
      std::printf("%-16s clients=%-3d added p50 ratio paygent-proxy/%s = %.2f, proxy-no-pool/%s = %.2f", "", clients,
                  targets[t].name, added[0] / std::max(1.0, added[t]), targets[t].name, added[1] / std::max(1.0, added[t]));
      if (first_nginx == 3 && process_port > 0) std::printf(", proxy-process/%s = %.2f", targets[t].name, added[2] / std::max(1.0, added[t]));
      std::printf("\n");
    }
  }
  // A stream's first byte (the provider sends one event a millisecond).
  const int streams = std::max(requests / 10, 20);
  std::vector<int> ports = {upstream_port};
  for (const Target& target : targets) ports.push_back(target.port);
  const std::vector<FirstByte> firsts = first_byte_p50s(ports, streams);
  std::printf("stream first byte p50 (taken in turns%s%s): direct %.1f us", unmetered_streams ? ", unmetered" : "",
              warm_streams ? ", each after a stream to the same target" : "",
              firsts[0].total);
  for (std::size_t t = 0; t < targets.size(); ++t) {
    std::printf(", %s %+.1f us", targets[t].name, firsts[t + 1].total - firsts[0].total);
    if (targets[t].meter != Meter::kNone && !unmetered_streams) targets[t].calls += warm_streams ? 2 * streams : streams;
  }
  std::printf(" (added)\n");
  for (std::size_t t = 0; t < ports.size(); ++t) {
    std::printf("  %-16s request path (to the provider) p50 %7.1f us, response path (from it) p50 %7.1f us\n",
                t == 0 ? "direct" : targets[t - 1].name, firsts[t].request, firsts[t].response);
  }
  // Check after: every proxied call metered exactly (50 users and the streams' one; the check's call aside).
  std::vector<std::string> users = {"bench-stream"};
  for (int u = 0; u < 50; ++u) users.push_back("bench-user-" + std::to_string(u));
  long here_calls = 0, process_calls = 0;
  Nanos here_spent = 0, process_spent = 0;
  for (const Target& t : targets) (t.meter == Meter::kHere ? here_calls : process_calls) += t.calls;
  for (const std::string& user : users) {
    if (auto report = (*pg)->report(user); report.ok()) here_spent += report->spend;
    if (process_port > 0) process_spent += process_spend(process_port, user);
  }
  stop_nginx();
  for (auto [spent, calls] : {std::pair{here_spent, here_calls}, std::pair{process_spent, process_calls}}) {
    if (spent != calls * kCallCost) fail("metered " + std::to_string(spent) + " != " + std::to_string(calls * kCallCost));
  }
  std::printf("checked: %ld proxied calls metered exactly (%lld nano-USD in this process, %lld in paygent-proxy's)\n",
              here_calls + process_calls, static_cast<long long>(here_spent), static_cast<long long>(process_spent));
  (*proxy)->stop();
  (*unpooled)->stop();
  return 0;
}
