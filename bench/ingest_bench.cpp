// Ingest throughput of paygentd: batches of 100 and 1,000 events POSTed over a kept-alive
// loopback connection to the real paygentd (JSON parsing, validation, SQLite commit, the
// piggybacked usage reply), beside the same rows written by a raw SQLite insert loop with the same
// schema and pragmas (the baseline: what the disk and SQLite alone allow), and SqliteStorage::ingest
// called in-process (the store without HTTP and JSON).
//
// Concurrent syncers (ingest_storage_syncers, ingest_http_syncers; {syncers, batch size}): several
// threads each sending batches of 100 as fast as their replies come, in-process or each over its
// own connection to a paygentd with a request thread per syncer; SqliteStorage's group commit
// (server/group_commit.h) joins the batches that arrive while one commits into the next
// transaction. Their baseline is the raw insert loop in big transactions (ingest_raw_sqlite_full/
// 10000): what SQLite and the disk allow when fsyncs are no longer the limit.
//
// tracking_http_vs_batch: the tracking API's POST /api/v2/usage requests/s beside the batch
// path's events/s, in one run (issue 10).
//
// Each benchmark first checks that a batch is stored and counted exactly (accepted == batch size,
// stored rows up by the batch size), then times, then checks the stored count again; a mismatch
// fails the benchmark instead of reporting a speed.
//
//   build-server/bench/paygent_bench --benchmark_filter=ingest --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true
//
// Rates are per second of wall time (UseRealTime): the work happens in another process, or waits
// on fsync.
#include <benchmark/benchmark.h>

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "paygent/price_catalog.h"
#include "server/sqlite_storage.h"
#include "server/storage.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;
using paygent::testing::TempDir;

constexpr int kUsers = 100;
constexpr const char* kModels[] = {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4"};

// A fresh event id per call, across all benchmarks of the run: every timed event is new.
std::string next_event_id() {
  static std::atomic<std::uint64_t> counter{0};
  char id[40];
  std::snprintf(id, sizeof id, "%016llx%016llx", 0xbe7cULL,
                static_cast<unsigned long long>(counter.fetch_add(1, std::memory_order_relaxed)));
  return id;
}

EventRecord make_event(std::uint64_t n) {
  EventRecord e;
  e.id = next_event_id();
  e.user_id = "user-" + std::to_string(n % kUsers);
  e.session_id = "auto-" + std::to_string(n % 977);
  e.model = kModels[n % 3];
  e.provider = "openai";
  e.input_tokens = 1000 + static_cast<std::int64_t>(n % 500);
  e.output_tokens = 200 + static_cast<std::int64_t>(n % 50);
  e.cached_input_tokens = 100;
  e.cost_nanos = 4'500'000 + static_cast<std::int64_t>(n % 1000);
  e.ts_ns = absl::ToUnixNanos(absl::Now());
  e.meta_tags_json = R"({"team":"search"})";
  return e;
}

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Makes `events` a new batch, as the next one a syncer would send: new ids, and timestamps of
// now (so that each user's events arrive in time order, as they do from the library).
void renew(std::vector<EventRecord>& events) {
  const std::int64_t now = absl::ToUnixNanos(absl::Now());
  for (std::size_t i = 0; i < events.size(); ++i) {
    events[i].id = next_event_id();
    events[i].ts_ns = now + static_cast<std::int64_t>(i);
  }
}

// A batch body as the syncer sends it. Each event's id and ts_ns sit at the returned offsets, to
// be overwritten in place for each new batch (renew_body).
struct BatchBody {
  std::string json;
  std::vector<std::size_t> id_offsets;
  std::vector<std::size_t> ts_offsets;  // 19 digits each
};

BatchBody batch_body(int size) {
  BatchBody body;
  body.json = "{\"events\":[";
  for (int i = 0; i < size; ++i) {
    const EventRecord e = make_event(static_cast<std::uint64_t>(i));
    body.json += i ? ",{\"id\":\"" : "{\"id\":\"";
    body.id_offsets.push_back(body.json.size());
    body.json += e.id + "\",\"user_id\":" + quote(e.user_id) + ",\"session_id\":" + quote(e.session_id) +
                 ",\"agent_id\":\"\",\"indicator\":\"\",\"model\":" + quote(e.model) +
                 ",\"provider\":" + quote(e.provider) + ",\"input_tokens\":" + std::to_string(e.input_tokens) +
                 ",\"output_tokens\":" + std::to_string(e.output_tokens) +
                 ",\"cached_input_tokens\":" + std::to_string(e.cached_input_tokens) +
                 ",\"cache_creation_input_tokens\":0,\"reasoning_tokens\":0,\"cost_nanos\":" +
                 std::to_string(e.cost_nanos) + ",\"ts_ns\":";
    body.ts_offsets.push_back(body.json.size());
    body.json += std::to_string(e.ts_ns) + ",\"meta_tags\":" + e.meta_tags_json + ",\"estimated\":false}";
  }
  body.json += "]}";
  return body;
}

void renew_body(BatchBody& body) {
  const std::int64_t now = absl::ToUnixNanos(absl::Now());
  for (std::size_t i = 0; i < body.id_offsets.size(); ++i) {
    body.json.replace(body.id_offsets[i], 32, next_event_id());
    body.json.replace(body.ts_offsets[i], 19, std::to_string(now + static_cast<std::int64_t>(i)));
  }
}

// --- paygentd over HTTP ----------------------------------------------------------------------------

struct Server {
  TempDir dir{"paygentd-bench"};
  std::unique_ptr<PaygentdProcess> process;
  std::string key;
};

// One paygentd per synchronous mode (and, for the concurrent syncers, one with a request thread per
// syncer: a request waits for its commit on its thread), started on first use and kept for the run.
Server& server(bool full_sync, int threads = 0) {
  static std::map<std::pair<bool, int>, std::unique_ptr<Server>> servers;
  std::unique_ptr<Server>& s = servers[{full_sync, threads}];
  if (!s) {
    s = std::make_unique<Server>();
    s->process = PaygentdProcess::start({.data_dir = s->dir.path(),
                                         .admin_token = "bench",
                                         .extra_args = {"--synchronous", full_sync ? "full" : "normal", "--threads",
                                                        std::to_string(threads)}});
    HttpClient http(s->process->port());
    s->key = paygent::testing::create_product(http, "bench", "bench");
  }
  return *s;
}

std::optional<std::int64_t> stored_count(HttpClient& http, const std::string& key) {
  const auto reply =
      http.request("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=model", {}, key);
  if (!reply || reply->status != 200) return std::nullopt;
  std::int64_t total = 0;
  for (std::size_t at = 0; (at = reply->body.find("\"calls\":", at)) != std::string::npos;) {
    at += 8;
    total += std::stoll(reply->body.substr(at, 20));
  }
  return total;
}

void ingest_http(benchmark::State& state, bool full_sync) {
  const int batch = static_cast<int>(state.range(0));
  Server& s = server(full_sync);
  HttpClient http(s.process->port(), std::chrono::seconds(60));
  BatchBody body = batch_body(batch);
  const std::string accepted_all = "{\"accepted\":" + std::to_string(batch) + ",\"duplicates\":0,";

  // Check: one batch is stored whole and counted once.
  const std::optional<std::int64_t> before = stored_count(http, s.key);
  auto reply = http.request("POST", "/api/v1/events:batch", body.json, s.key);
  const std::optional<std::int64_t> after = stored_count(http, s.key);
  if (!before || !reply || reply->status != 200 || reply->body.rfind(accepted_all, 0) != 0 || !after ||
      *after != *before + batch) {
    state.SkipWithError("paygentd did not store the check batch exactly");
    return;
  }

  std::int64_t events = 0;
  for (auto _ : state) {
    renew_body(body);
    reply = http.request("POST", "/api/v1/events:batch", body.json, s.key);
    if (!reply || reply->status != 200 || reply->body.rfind(accepted_all, 0) != 0) {
      state.SkipWithError(("a batch was not stored whole: " + (reply ? reply->body.substr(0, 200) : "no reply")).c_str());
      return;
    }
    events += batch;
  }
  const std::optional<std::int64_t> end = stored_count(http, s.key);
  if (!end || *end != *after + events) {
    state.SkipWithError("the stored count does not match the events sent");
    return;
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}

void ingest_http_full(benchmark::State& state) { ingest_http(state, true); }
void ingest_http_normal(benchmark::State& state) { ingest_http(state, false); }

// Direct HTTP tracking beside the batch path, in one run against the same paygentd: requests per
// second of POST /api/v2/usage (one LLM usage per request: the tracking API's strict body reader,
// the catalog's price, one event through the batch path's ingest, the JSON reply; issue 10) and
// events per second of POST /api/v1/events:batch (batches of 100), each over its own kept-alive
// connection. Checked first (a reply carries the catalog's cost) and last (the stored calls grew
// by exactly the requests and events sent).
void tracking_http_vs_batch(benchmark::State& state) {
  constexpr int kRequestsPerRound = 200;
  constexpr int kBatchesPerRound = 20;
  constexpr int kBatch = 100;
  Server& s = server(false);
  HttpClient tracking(s.process->port(), std::chrono::seconds(60));
  HttpClient batches(s.process->port(), std::chrono::seconds(60));
  const std::string usage = R"({"agentId":"a","customerId":"user-7","indicator":"","rawUsage":{"provider":"OpenAI",)"
                            R"("model":"gpt-4o","inputTokens":1200,"outputTokens":400,"plan":"default"}})";
  const std::string request = "POST /api/v2/usage HTTP/1.1\r\nHost: 127.0.0.1\r\npaygent-api-key: " + s.key +
                              "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(usage.size()) +
                              "\r\n\r\n" + usage;
  const std::string expected_cost =
      "\"calculatedCostNanos\":" +
      std::to_string(cost_of(Usage{.input_tokens = 1200, .output_tokens = 400}, *PriceCatalog::builtin().find("gpt-4o")));
  const std::string accepted_all = "{\"accepted\":" + std::to_string(kBatch) + ",\"duplicates\":0,";

  const std::optional<std::int64_t> before = stored_count(tracking, s.key);
  const auto check = tracking.raw(request);
  if (!before || !check || check->status != 200 || check->body.find(expected_cost) == std::string::npos) {
    state.SkipWithError("the tracking reply does not carry the catalog's cost");
    return;
  }
  BatchBody body = batch_body(kBatch);
  std::int64_t requests = 0, events = 0;
  double tracking_s = 0, batch_s = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kRequestsPerRound; ++i) {
      const auto reply = tracking.raw(request);
      if (!reply || reply->status != 200) {
        state.SkipWithError("a tracking request failed");
        return;
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    for (int b = 0; b < kBatchesPerRound; ++b) {
      renew_body(body);
      const auto reply = batches.request("POST", "/api/v1/events:batch", body.json, s.key);
      if (!reply || reply->status != 200 || reply->body.rfind(accepted_all, 0) != 0) {
        state.SkipWithError("a batch was not stored whole");
        return;
      }
    }
    const auto t2 = std::chrono::steady_clock::now();
    tracking_s += std::chrono::duration<double>(t1 - t0).count();
    batch_s += std::chrono::duration<double>(t2 - t1).count();
    requests += kRequestsPerRound;
    events += static_cast<std::int64_t>(kBatchesPerRound) * kBatch;
    state.SetIterationTime(std::chrono::duration<double>(t2 - t0).count());
  }
  const std::optional<std::int64_t> after = stored_count(tracking, s.key);
  if (!after || *after != *before + 1 + requests + events) {
    state.SkipWithError("the stored calls do not match the requests and events sent");
    return;
  }
  const double tracking_rate = static_cast<double>(requests) / tracking_s;
  const double batch_rate = static_cast<double>(events) / batch_s;
  state.counters["tracking_req/s"] = tracking_rate;
  state.counters["batch_events/s"] = batch_rate;
  state.counters["batch_events_per_tracking_req"] = batch_rate / tracking_rate;
}

// A SqliteStorage in `dir` with product "p".
absl::StatusOr<std::unique_ptr<SqliteStorage>> open_storage(const TempDir& dir) {
  auto storage = SqliteStorage::open(dir.path() + "/db");
  if (!storage.ok()) return storage.status();
  if (absl::Status s = (*storage)->create_product("p", "bench", std::string(64, 'b')); !s.ok()) return s;
  return storage;
}

// The calls stored for product "p" (-1 when they cannot be read).
std::int64_t stored_calls(SqliteStorage& storage) {
  const auto r = storage.report("p", {.from_ns = 0, .to_ns = INT64_MAX, .group_by = ReportGroup::kModel});
  if (!r.ok()) return -1;
  std::int64_t n = 0;
  for (const auto& [model, t] : *r) n += t.calls;
  return n;
}

// --- SqliteStorage::ingest in-process --------------------------------------------------------------

void ingest_storage(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  TempDir dir("paygentd-bench-storage");
  auto storage = open_storage(dir);
  if (!storage.ok()) {
    state.SkipWithError(storage.status().ToString().c_str());
    return;
  }
  std::vector<EventRecord> events;
  for (int i = 0; i < batch; ++i) events.push_back(make_event(static_cast<std::uint64_t>(i)));
  auto stored = [&] { return stored_calls(**storage); };
  const auto check = (*storage)->ingest("p", events);
  if (!check.ok() || check->accepted != batch || stored() != batch) {
    state.SkipWithError("SqliteStorage did not store the check batch exactly");
    return;
  }
  std::int64_t total = batch;
  for (auto _ : state) {
    renew(events);
    const auto r = (*storage)->ingest("p", events);
    if (!r.ok() || r->accepted != batch) {
      state.SkipWithError("a batch was not stored whole");
      return;
    }
    total += batch;
  }
  if (stored() != total) {
    state.SkipWithError("the stored count does not match the events ingested");
    return;
  }
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(total - batch), benchmark::Counter::kIsRate);
}

// --- Concurrent syncers: group commit ---------------------------------------------------------------

// Batches each syncer sends per timed iteration.
constexpr int kBatchesPerSyncer = 20;

// Runs `syncers` threads, each calling send(syncer) kBatchesPerSyncer times, and times the whole
// (manual time: from the first thread's start to the last one's end). False when a send failed.
template <typename Send>
bool run_syncers(benchmark::State& state, int syncers, Send send) {
  std::atomic<bool> failed{false};
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < syncers; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatchesPerSyncer && !failed.load(std::memory_order_relaxed); ++b) {
        if (!send(t)) failed = true;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  state.SetIterationTime(absl::ToDoubleSeconds(absl::Now() - start));
  return !failed;
}

// The benchmark's timed loop: run_syncers() per iteration. The events sent, or nullopt when a
// batch failed (the benchmark is then skipped with an error).
template <typename Send>
std::optional<std::int64_t> time_syncers(benchmark::State& state, int syncers, int batch, Send send) {
  std::int64_t total = 0;
  for (auto _ : state) {
    if (!run_syncers(state, syncers, send)) {
      state.SkipWithError("a batch was not stored whole");
      return std::nullopt;
    }
    total += static_cast<std::int64_t>(syncers) * kBatchesPerSyncer * batch;
  }
  return total;
}

// SqliteStorage::ingest_with_usage (what paygentd calls for a batch) from state.range(0) threads
// at once, batches of state.range(1) events, synchronous=FULL: concurrent batches share commits.
void ingest_storage_syncers(benchmark::State& state) {
  const int syncers = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  TempDir dir("paygentd-bench-syncers");
  auto storage = open_storage(dir);
  if (!storage.ok()) {
    state.SkipWithError(storage.status().ToString().c_str());
    return;
  }
  const TimeRange month{.from_ns = 0, .to_ns = INT64_MAX / 2};
  std::vector<std::vector<EventRecord>> events(static_cast<std::size_t>(syncers));
  for (auto& e : events) {
    for (int i = 0; i < batch; ++i) e.push_back(make_event(static_cast<std::uint64_t>(i)));
  }
  auto send = [&](int t) {
    std::vector<EventRecord>& mine = events[static_cast<std::size_t>(t)];
    renew(mine);
    const auto r = (*storage)->ingest_with_usage("p", mine, [&](const UserRecord&) { return month; }, {});
    return r.ok() && r->accepted == batch && r->usage.size() == static_cast<std::size_t>(std::min(batch, kUsers));
  };
  auto stored = [&] { return stored_calls(**storage); };
  if (!send(0) || stored() != batch) {
    state.SkipWithError("SqliteStorage did not store the check batch exactly");
    return;
  }
  const GroupCommit::Stats before = (*storage)->group_commit_stats();
  const std::optional<std::int64_t> timed = time_syncers(state, syncers, batch, send);
  if (!timed) return;
  const std::int64_t total = *timed;
  if (stored() != total + batch) {
    state.SkipWithError("the stored count does not match the events ingested");
    return;
  }
  const GroupCommit::Stats after = (*storage)->group_commit_stats();
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(total), benchmark::Counter::kIsRate);
  state.counters["batches/commit"] =
      static_cast<double>(after.bodies - before.bodies) / static_cast<double>(std::max<std::int64_t>(1, after.commits - before.commits));
}

// The same through paygentd over HTTP: state.range(0) syncers, each on its own kept-alive
// connection, paygentd with as many request threads, synchronous=FULL. `reads`: one more client
// asks for a user's usage (GET /api/v1/users/user-7/usage) in a loop meanwhile, as a dashboard
// or another tenant would; its replies' p50 and p99 are counters (us).
void ingest_http_syncers_impl(benchmark::State& state, bool reads) {
  const int syncers = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  Server& s = server(true, syncers + (reads ? 1 : 0));  // a request thread for every connection
  std::vector<std::unique_ptr<HttpClient>> clients;
  std::vector<BatchBody> bodies;
  for (int t = 0; t < syncers; ++t) {
    clients.push_back(std::make_unique<HttpClient>(s.process->port(), std::chrono::seconds(60)));
    bodies.push_back(batch_body(batch));
  }
  const std::string accepted_all = "{\"accepted\":" + std::to_string(batch) + ",\"duplicates\":0,";
  auto send = [&](int t) {
    BatchBody& body = bodies[static_cast<std::size_t>(t)];
    renew_body(body);
    const auto reply = clients[static_cast<std::size_t>(t)]->request("POST", "/api/v1/events:batch", body.json, s.key);
    return reply && reply->status == 200 && reply->body.rfind(accepted_all, 0) == 0;
  };
  const std::optional<std::int64_t> before = stored_count(*clients[0], s.key);
  if (!before || !send(0) || stored_count(*clients[0], s.key) != *before + batch) {
    state.SkipWithError("paygentd did not store the check batch exactly");
    return;
  }
  std::atomic<bool> reading{reads};
  std::vector<double> read_us;
  bool read_failed = false;
  std::thread reader;
  if (reads) {
    reader = std::thread([&] {
      HttpClient http(s.process->port(), std::chrono::seconds(60));
      while (reading.load()) {
        const absl::Time start = absl::Now();
        const auto reply = http.request("GET", "/api/v1/users/user-7/usage", {}, s.key);
        if (!reply || reply->status != 200 || reply->body.find("\"user-7\"") == std::string::npos) read_failed = true;
        read_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
      }
    });
  }
  const std::optional<std::int64_t> timed = time_syncers(state, syncers, batch, send);
  reading = false;
  if (reader.joinable()) reader.join();
  if (!timed) return;
  const std::int64_t total = *timed;
  if (stored_count(*clients[0], s.key) != *before + batch + total) {
    state.SkipWithError("the stored count does not match the events sent");
    return;
  }
  if (reads) {
    if (read_failed || read_us.empty()) {
      state.SkipWithError("a usage read failed");
      return;
    }
    std::sort(read_us.begin(), read_us.end());
    state.counters["read_p50_us"] = read_us[read_us.size() / 2];
    state.counters["read_p99_us"] = read_us[read_us.size() * 99 / 100];
  }
  state.counters["events/s"] = benchmark::Counter(static_cast<double>(total), benchmark::Counter::kIsRate);
}
void ingest_http_syncers(benchmark::State& state) { ingest_http_syncers_impl(state, false); }
void ingest_http_syncers_reads(benchmark::State& state) { ingest_http_syncers_impl(state, true); }

// --- Raw SQLite: the same rows, the same schema and pragmas, a plain insert loop -----------------

void ingest_raw_sqlite(benchmark::State& state, bool full_sync) {
  const int batch = static_cast<int>(state.range(0));
  TempDir dir("paygentd-bench-raw");
  sqlite3* db = nullptr;
  const std::string path = dir.path() + "/db";
  sqlite3_open(path.c_str(), &db);
  const std::string setup = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") + (full_sync ? "FULL" : "NORMAL") +
                            "; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;" + std::string(sqlite_schema());
  if (sqlite3_exec(db, setup.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    state.SkipWithError(sqlite3_errmsg(db));
    sqlite3_close(db);
    return;
  }
  sqlite3_stmt* insert = nullptr;
  const int prepared = sqlite3_prepare_v2(db,
                     "INSERT OR IGNORE INTO events(product, id, user_id, session_id, agent_id, indicator, model, "
                     "provider, input_tokens, output_tokens, cached_input_tokens, cache_creation_input_tokens, "
                     "reasoning_tokens, cost_nanos, ts_ns, meta_tags, estimated, received_ns) "
                     "VALUES(1, ?1, ?2, ?3, '', '', ?4, ?5, ?6, ?7, ?8, 0, 0, ?9, ?10, ?11, 0, ?12)",
                     -1, &insert, nullptr);
  if (prepared != SQLITE_OK) {
    state.SkipWithError(sqlite3_errmsg(db));
    sqlite3_close(db);
    return;
  }
  std::vector<EventRecord> events;
  for (int i = 0; i < batch; ++i) events.push_back(make_event(static_cast<std::uint64_t>(i)));
  auto write_batch = [&]() -> std::int64_t {
    std::int64_t stored = 0;
    sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    const std::int64_t now = absl::ToUnixNanos(absl::Now());
    for (const EventRecord& e : events) {
      unsigned char id[16];  // stored as its 16 bytes, as SqliteStorage does
      auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
      for (int i = 0; i < 16; ++i) id[i] = static_cast<unsigned char>(nibble(e.id[2 * i]) << 4 | nibble(e.id[2 * i + 1]));
      sqlite3_bind_blob(insert, 1, id, sizeof id, SQLITE_TRANSIENT);
      sqlite3_bind_text(insert, 2, e.user_id.data(), static_cast<int>(e.user_id.size()), SQLITE_STATIC);
      sqlite3_bind_text(insert, 3, e.session_id.data(), static_cast<int>(e.session_id.size()), SQLITE_STATIC);
      sqlite3_bind_text(insert, 4, e.model.data(), static_cast<int>(e.model.size()), SQLITE_STATIC);
      sqlite3_bind_text(insert, 5, e.provider.data(), static_cast<int>(e.provider.size()), SQLITE_STATIC);
      sqlite3_bind_int64(insert, 6, e.input_tokens);
      sqlite3_bind_int64(insert, 7, e.output_tokens);
      sqlite3_bind_int64(insert, 8, e.cached_input_tokens);
      sqlite3_bind_int64(insert, 9, e.cost_nanos);
      sqlite3_bind_int64(insert, 10, e.ts_ns);
      sqlite3_bind_text(insert, 11, e.meta_tags_json.data(), static_cast<int>(e.meta_tags_json.size()), SQLITE_STATIC);
      sqlite3_bind_int64(insert, 12, now);
      if (sqlite3_step(insert) == SQLITE_DONE) stored += sqlite3_changes(db);
      sqlite3_reset(insert);
    }
    return sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK ? stored : -1;
  };
  auto count = [&]() -> std::int64_t {
    sqlite3_stmt* c = nullptr;
    sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM events", -1, &c, nullptr);
    const std::int64_t n = sqlite3_step(c) == SQLITE_ROW ? sqlite3_column_int64(c, 0) : -1;
    sqlite3_finalize(c);
    return n;
  };
  std::int64_t total = 0;
  if (write_batch() != batch || count() != batch) {
    state.SkipWithError("the raw loop did not store the check batch exactly");
  } else {
    total = batch;
    for (auto _ : state) {
      renew(events);
      if (write_batch() != batch) {
        state.SkipWithError("a raw batch was not stored whole");
        break;
      }
      total += batch;
    }
    if (count() != total) state.SkipWithError("the stored count does not match the rows inserted");
    state.counters["events/s"] =
        benchmark::Counter(static_cast<double>(total - batch), benchmark::Counter::kIsRate);
  }
  sqlite3_finalize(insert);
  sqlite3_close(db);
}

void ingest_raw_sqlite_full(benchmark::State& state) { ingest_raw_sqlite(state, true); }
void ingest_raw_sqlite_normal(benchmark::State& state) { ingest_raw_sqlite(state, false); }

BENCHMARK(ingest_http_full)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_raw_sqlite_full)->Arg(100)->Arg(1000)->Arg(10000)->UseRealTime()->Unit(benchmark::kMicrosecond);
// {syncers, batch}: 1 syncer is the batch-at-a-time baseline of the same code.
BENCHMARK(ingest_storage_syncers)->Args({1, 100})->Args({4, 100})->Args({8, 100})->Args({16, 100})->Args({32, 100})->Args({64, 100})
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(ingest_http_syncers)->Args({1, 100})->Args({8, 100})->Args({16, 100})->Args({64, 100})
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(ingest_http_syncers_reads)->Args({64, 100})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(ingest_storage)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_http_normal)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(ingest_raw_sqlite_normal)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(tracking_http_vs_batch)->UseManualTime()->Iterations(10)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace paygent::server
