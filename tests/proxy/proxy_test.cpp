// paygent-proxy end to end in one process: the real ProxyServer and a Paygent, a fake provider on
// loopback (tests/proxy/loopback.h), requests over real sockets.
#include "proxy/server.h"

#include <doctest/doctest.h>

#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <future>
#include <map>
#include <sstream>

#include "simdjson.h"
#include "proxy/text.h"
#include "tests/proxy/loopback.h"

namespace paygent::proxy {
namespace {

using namespace testing;

// Rates in USD per 1K tokens: gpt-4o 2,500 / 10,000 nano-USD a token, claude 3,000 / 15,000.
constexpr char kPlans[] = R"({"soft_gate_at": 0.8, "hard_gate_at": 1.0, "default_plan": "pro", "plans": [
  {"name": "pro", "max_spend_per_period": 1.00,
   "cost_rates": {"gpt-4o": {"input": 0.0025, "output": 0.01},
                  "claude-3-5-sonnet": {"input": 0.003, "output": 0.015},
                  "gemini-1.5-flash": {"input": 0.000075, "output": 0.0003}}},
  {"name": "tiny", "max_spend_per_period": 0.000001,
   "cost_rates": {"gpt-4o": {"input": 0.0025, "output": 0.01}}},
  {"name": "small", "max_spend_per_period": 0.0005,
   "cost_rates": {"gpt-4o": {"input": 0.0025, "output": 0.01}}},
  {"name": "conc", "max_spend_per_period": 0.001,
   "cost_rates": {"gpt-4o": {"input": 0.0025, "output": 0.01}}}]})";

constexpr Nanos kGpt4oIn = 2'500, kGpt4oOut = 10'000;

struct Harness {
  // `configure`: changes to the Paygent's options (a backend, leases) before it is created.
  explicit Harness(FakeUpstream::Responder responder, ProxyOptions options = {},
                   const std::function<void(Options&)>& configure = nullptr)
      : upstream(std::move(responder)) {
    Options pg_options;
    pg_options.plans = *parse_plan_config(kPlans);
    pg_options.local_store_path = "";
    pg_options.on_usage = [this](const UsageEvent& e) {
      std::lock_guard lock(mu);
      usages.push_back(e.usage);
      costs.push_back(e.cost);
      payers.push_back(str_cat(e.user_id, "|", e.session_id, "|", e.agent_id));
    };
    if (configure) configure(pg_options);
    pg = *Paygent::create(proxy_paygent_options(std::move(pg_options)));
    options.listen_port = 0;
    options.upstream_openai = upstream.url();
    options.upstream_anthropic = upstream.url();
    options.upstream_gemini = upstream.url();
    auto started = ProxyServer::start(options, pg.get());
    REQUIRE(started.ok());
    proxy = *std::move(started);
  }
  ~Harness() { proxy->stop(); }

  Nanos spend(const std::string& user) {
    auto report = pg->report(user);
    return report.ok() ? report->spend + report->reserved : 0;
  }
  int port() const { return proxy->port(); }

  FakeUpstream upstream;
  std::unique_ptr<Paygent> pg;
  std::unique_ptr<ProxyServer> proxy;
  std::mutex mu;
  std::vector<Usage> usages;
  std::vector<Nanos> costs;
  std::vector<std::string> payers;  // "user|session|agent" of each metered call
};

FakeReply json_reply(const std::string& name) { return {.body = fixture(name)}; }
FakeReply stream_reply(const std::string& name) {
  return {.content_type = "text/event-stream", .events = sse_events(fixture(name))};
}

std::string chat_body(const std::string& extra = "") {
  return R"({"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}])" + extra + "}";
}

TEST_CASE("proxy.openai_json_is_metered_exactly") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); });
  const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(R"(,"max_tokens":100)"),
                              {"authorization: Bearer sk-test", "x-paygent-user: alice", "x-paygent-session: s1"});
  CHECK(r.status == 200);
  CHECK(r.body == fixture("openai-chat.json"));
  const Nanos expected = 12 * kGpt4oIn + 5 * kGpt4oOut;
  CHECK(r.header("x-paygent-cost-nanos") == std::to_string(expected));
  CHECK(r.header("x-paygent-cost-usd") == "0.000080000");
  CHECK(r.header("x-paygent-status") == "ok");
  CHECK(h.spend("alice") == expected);
  // The key passed through; the proxy's own headers did not.
  CHECK(h.upstream.last_head().find("authorization: Bearer sk-test") != std::string::npos);
  CHECK(h.upstream.last_head().find("x-paygent") == std::string::npos);
  // The upstream's own host and port (not the client's Host), and the body's length.
  CHECK(h.upstream.last_head().find("\r\nHost: " + h.upstream.url().substr(7) + "\r\n") !=
        std::string::npos);
  CHECK(h.upstream.last_head().find("\r\nContent-Length: ") != std::string::npos);
  CHECK(h.proxy->stats().metered == 1);
  const HttpResponse report = post(h.port(), "/paygent/report?user=alice", "", {}, "GET");
  CHECK(report.status == 200);
  CHECK(report.body.find("\"spend_nanos\":" + std::to_string(expected)) != std::string::npos);
}

// GET /paygent/report?user=ID reads the id as a query value: percent-encoded, '+' for a space
// (an e-mail address as user id is common); a query without one, or one that is not
// percent-encoded UTF-8, is a 400 naming what is expected.
TEST_CASE("proxy.report_reads_a_percent_encoded_user") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); });
  REQUIRE(post(h.port(), "/v1/chat/completions", chat_body(R"(,"max_tokens":100)"), {"x-paygent-user: ann lee@x.com"})
              .status == 200);
  const Nanos spent = h.spend("ann lee@x.com");
  REQUIRE(spent > 0);
  for (const char* query : {"?user=ann+lee%40x.com", "?user=ann%20lee%40x.com&x=1", "?x=1&user=ann+lee@x.com"}) {
    INFO(std::string(query));
    const HttpResponse r = post(h.port(), std::string("/paygent/report") + query, "", {}, "GET");
    CHECK(r.status == 200);
    CHECK(r.body.find(R"("user":"ann lee@x.com")") != std::string::npos);
    CHECK(r.body.find("\"spend_nanos\":" + std::to_string(spent)) != std::string::npos);
  }
  for (const char* query : {"", "?", "?user=", "?x=ann", "?user=ann%4", "?user=ann%zz", "?user=%FF%FE"}) {
    INFO(std::string(query));
    const HttpResponse r = post(h.port(), std::string("/paygent/report") + query, "", {}, "GET");
    CHECK(r.status == 400);
    CHECK(r.body.find("needs ?user=ID") != std::string::npos);
  }
  CHECK(post(h.port(), "/paygent/report?user=nobody", "", {}, "GET").status == 404);
}

TEST_CASE("proxy.anthropic_json_pays_as_metadata_user_id") {
  Harness h([](const std::string&, const std::string&) { return json_reply("anthropic-messages.json"); });
  const HttpResponse r = post(h.port(), "/v1/messages",
                              R"({"model":"claude-3-5-sonnet","max_tokens":64,"metadata":{"user_id":"bob"},"messages":[]})",
                              {"x-api-key: sk-ant-test", "anthropic-version: 2023-06-01"});
  CHECK(r.status == 200);
  const Nanos expected = 20 * 3'000 + 8 * 15'000;
  CHECK(r.header("x-paygent-cost-nanos") == std::to_string(expected));
  CHECK(h.spend("bob") == expected);
}

TEST_CASE("proxy.gemini_json_is_metered_exactly_with_the_model_from_the_path") {
  Harness h([](const std::string&, const std::string&) { return json_reply("gemini-generate.json"); });
  const HttpResponse r = post(h.port(), "/v1beta/models/gemini-1.5-flash:generateContent?key=k",
                              R"({"contents":[{"parts":[{"text":"hi"}]}]})", {"x-paygent-user: gus"});
  CHECK(r.status == 200);
  const Nanos expected = 9 * 75 + 4 * 300;
  CHECK(r.header("x-paygent-cost-nanos") == std::to_string(expected));
  CHECK(h.spend("gus") == expected);
  CHECK(h.upstream.last_head().starts_with("POST /v1beta/models/gemini-1.5-flash:generateContent?key=k HTTP/1.1"));
}

// Each header line of a request head, lower-cased ("name: value").
std::vector<std::string> head_lines(const std::string& head) {
  std::vector<std::string> lines;
  std::istringstream in(head);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    for (char& c : line) c = ascii_lower(c);
    lines.push_back(line);
  }
  return lines;
}
bool has_line(const std::string& head, const std::string& line) {
  const auto lines = head_lines(head);
  return std::find(lines.begin(), lines.end(), head_lines(line).front()) != lines.end();
}

TEST_CASE("proxy.operator_keys_replace_the_callers_and_are_never_echoed") {
  Harness h([](const std::string& head, const std::string&) {
    return json_reply(head.find("/v1/messages") != std::string::npos ? "anthropic-messages.json"
                      : head.find("generateContent") != std::string::npos ? "gemini-generate.json"
                                                                           : "openai-chat.json");
  }, ProxyOptions{.openai_api_key = "sk-operator-openai", .anthropic_api_key = "sk-ant-operator",
                  .gemini_api_key = "AIza-operator"});
  // The caller's placeholder keys (in every provider's header) are dropped, the operator's sent.
  const std::vector<std::string> caller = {"x-paygent-user: kim", "authorization: Bearer sk-placeholder",
                                           "x-api-key: placeholder", "x-goog-api-key: placeholder"};
  HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(), caller);
  CHECK(r.status == 200);
  std::string head = h.upstream.last_head();
  CHECK(has_line(head, "authorization: Bearer sk-operator-openai"));
  CHECK(head.find("placeholder") == std::string::npos);
  CHECK(r.body.find("operator") == std::string::npos);
  r = post(h.port(), "/v1/messages",
           R"({"model":"claude-3-5-sonnet","max_tokens":64,"messages":[{"role":"user","content":"hi"}]})", caller);
  CHECK(r.status == 200);
  head = h.upstream.last_head();
  CHECK(has_line(head, "x-api-key: sk-ant-operator"));
  CHECK(head.find("placeholder") == std::string::npos);
  r = post(h.port(), "/v1beta/models/gemini-1.5-flash:generateContent?alt=json&key=caller-key&x=1",
           R"({"contents":[{"parts":[{"text":"hi"}]}]})", caller);
  CHECK(r.status == 200);
  head = h.upstream.last_head();
  CHECK(head.starts_with("POST /v1beta/models/gemini-1.5-flash:generateContent?alt=json&x=1 HTTP/1.1"));
  CHECK(has_line(head, "x-goog-api-key: AIza-operator"));
  CHECK(head.find("placeholder") == std::string::npos);
  CHECK(head.find("caller-key") == std::string::npos);
  CHECK(h.spend("kim") > 0);
  // A key that would end its header line early is refused at start, without echoing it.
  auto bad = ProxyServer::start(ProxyOptions{.listen_port = 0, .openai_api_key = "sk-a\r\nx-evil: 1"}, h.pg.get());
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("openai_api_key") != std::string_view::npos);
  CHECK(bad.status().message().find("sk-a") == std::string_view::npos);
}

TEST_CASE("proxy.openai_responses_json_and_stream_are_metered_exactly") {
  Harness h([](const std::string&, const std::string& body) {
    return body.find("\"stream\":true") != std::string::npos ? stream_reply("openai-responses-stream.sse")
                                                              : json_reply("openai-responses.json");
  });
  const Nanos expected = 14 * kGpt4oIn + 6 * kGpt4oOut;
  const HttpResponse json = post(h.port(), "/v1/responses", R"({"model":"gpt-4o","input":"hi","safety_identifier":"mo"})");
  CHECK(json.status == 200);
  CHECK(json.header("x-paygent-cost-nanos") == std::to_string(expected));
  const HttpResponse stream = post(h.port(), "/v1/responses", R"({"model":"gpt-4o","input":"hi","stream":true})",
                                   {"x-paygent-user: mo"});
  CHECK(stream.status == 200);
  CHECK(stream.body.starts_with(fixture("openai-responses-stream.sse")));
  CHECK(h.spend("mo") == 2 * expected);
}

TEST_CASE("proxy.no_user_passes_through_unmetered_and_counted") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); });
  const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body());
  INFO(r.body);
  CHECK(r.status == 200);
  CHECK(r.header("x-paygent-status") == "unmetered");
  CHECK(r.header("x-paygent-cost-nanos").empty());
  CHECK(h.proxy->stats().unmetered == 1);
  CHECK(h.usages.empty());
}

TEST_CASE("proxy.openai_stream_gets_usage_added_and_its_chunk_removed") {
  Harness h([](const std::string&, const std::string&) { return stream_reply("openai-chat-stream.sse"); });
  const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(R"(,"stream":true)"), {"x-paygent-user: carol"});
  CHECK(r.status == 200);
  simdjson::dom::parser parser;
  CHECK(bool(parser.parse(h.upstream.last_body())["stream_options"]["include_usage"]));
  CHECK(r.body.find("\"usage\":{") == std::string::npos);  // the caller did not ask for it
  CHECK(r.body.find("data: [DONE]") != std::string::npos);
  const Nanos expected = 12 * kGpt4oIn + 5 * kGpt4oOut;
  CHECK(r.body.find(": paygent cost_usd=0.000080000 cost_nanos=" + std::to_string(expected)) != std::string::npos);
  CHECK(h.spend("carol") == expected);
}

TEST_CASE("proxy.anthropic_stream_is_forwarded_verbatim_and_metered") {
  Harness h([](const std::string&, const std::string&) { return stream_reply("anthropic-messages-stream.sse"); });
  const HttpResponse r = post(h.port(), "/v1/messages",
                              R"({"model":"claude-3-5-sonnet","max_tokens":64,"stream":true,"messages":[]})",
                              {"x-paygent-user: dave"});
  CHECK(r.status == 200);
  CHECK(r.body.starts_with(fixture("anthropic-messages-stream.sse")));
  CHECK(h.spend("dave") == 20 * 3'000 + 8 * 15'000);
}

TEST_CASE("proxy.over_the_cap_is_refused_in_each_sdk_shape_and_never_sent") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); });
  REQUIRE(h.pg->assign_plan("erin", "tiny").ok());
  simdjson::dom::parser parser;
  const HttpResponse openai = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: erin"});
  CHECK(openai.status == 429);
  CHECK(openai.header("x-should-retry") == "false");
  CHECK(openai.header("x-paygent-status") == "hard_gate");
  CHECK(openai.header("x-paygent-limit") == "total_spend");
  simdjson::dom::element body = parser.parse(openai.body);
  CHECK(std::string_view(body["error"]["type"]) == "insufficient_quota");
  const std::string_view message = body["error"]["message"];
  CHECK(message.find("total_spend") != std::string_view::npos);
  CHECK(message.find("$0.00 spent of $0.00") != std::string_view::npos);
  CHECK(message.find("resets") != std::string_view::npos);
  const HttpResponse anthropic = post(h.port(), "/v1/messages", R"({"model":"gpt-4o","max_tokens":5,"messages":[]})",
                                      {"x-paygent-user: erin"});
  CHECK(anthropic.status == 429);
  body = parser.parse(anthropic.body);
  CHECK(std::string_view(body["type"]) == "error");
  CHECK(std::string_view(body["error"]["type"]) == "rate_limit_error");
  CHECK(h.upstream.hits() == 0);
  CHECK(h.proxy->stats().refused == 2);
  CHECK(h.spend("erin") == 0);
}

TEST_CASE("proxy.max_tokens_is_lowered_to_what_fits") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); });
  REQUIRE(h.pg->assign_plan("fay", "small").ok());
  const std::string request = chat_body(R"(,"max_tokens":100000)");
  const HttpResponse r = post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: fay"});
  CHECK(r.status == 200);
  const std::int64_t prompt = static_cast<std::int64_t>((request.size() + 3) / 4);
  const std::int64_t fit = (500'000 - prompt * kGpt4oIn) / kGpt4oOut;
  simdjson::dom::parser parser;
  CHECK(int64_t(parser.parse(h.upstream.last_body())["max_tokens"]) == fit);
}

// A request with no max_tokens can run to the model's own maximum output (gpt-4o: 16,384 tokens,
// from the catalog), so that is its worst case: held, and the request sent unchanged (the provider
// applies that maximum by itself). Not the user's whole remaining budget, which let one call of a
// user refuse the next one beside it. Only a user who cannot afford the maximum gets max_tokens
// lowered to what fits.
TEST_CASE("proxy.no_max_tokens_holds_the_models_own_maximum_not_the_whole_budget") {
  // The provider answers once the test has seen all four held at once (or after 5 s).
  std::mutex mu;
  std::condition_variable seen_cv;
  bool seen = false;
  std::vector<std::string> bodies;
  Harness h([&](const std::string&, const std::string& body) {
    std::unique_lock lock(mu);
    bodies.push_back(body);
    seen_cv.wait_for(lock, std::chrono::seconds(5), [&] { return seen; });
    return json_reply("openai-chat.json");
  });
  REQUIRE(h.pg->max_output_tokens_of("gpt-4o") == 16'384);
  const std::string request = chat_body();
  const Nanos prompt_cost = static_cast<Nanos>((request.size() + 3) / 4) * kGpt4oIn;
  const Nanos hold = prompt_cost + 16'384 * kGpt4oOut;  // $0.164 of the $1.00 cap
  constexpr int kCalls = 4;                            // $0.66 held at once: under the soft gate
  std::vector<std::future<HttpResponse>> answers;
  for (int i = 0; i < kCalls; ++i) {
    answers.push_back(std::async(std::launch::async, [&] {
      return post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: ida"});
    }));
  }
  for (int i = 0; i < 1000 && h.upstream.hits() < kCalls; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  REQUIRE(h.upstream.hits() == kCalls);  // all four forwarded: each held before it left
  CHECK(h.pg->report("ida")->reserved == kCalls * hold);
  {
    std::lock_guard lock(mu);
    seen = true;
  }
  seen_cv.notify_all();
  for (auto& answer : answers) {
    const HttpResponse r = answer.get();
    CHECK(r.status == 200);
    CHECK(r.header("x-paygent-status") == "ok");
  }
  {
    std::lock_guard lock(mu);
    REQUIRE(bodies.size() == kCalls);
    for (const std::string& body : bodies) {
      CHECK(body.find("max_tokens") == std::string::npos);
      CHECK(body.find("max_completion_tokens") == std::string::npos);
    }
  }
  CHECK(h.spend("ida") == kCalls * (12 * kGpt4oIn + 5 * kGpt4oOut));

  // A user who cannot afford 16,384 tokens: the bound is added (max_completion_tokens, the field
  // that replaced max_tokens), lowered to what fits.
  REQUIRE(h.pg->assign_plan("jo", "small").ok());
  CHECK(post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: jo"}).status == 200);
  simdjson::dom::parser parser;
  CHECK(int64_t(parser.parse(h.upstream.last_body())["max_completion_tokens"]) == (500'000 - prompt_cost) / kGpt4oOut);
}

// With lowering off, a request without max_tokens holds its model's maximum as it is: forwarded
// unchanged when that fits, refused (never sent) when it does not.
TEST_CASE("proxy.lowering_off_and_no_max_tokens_holds_the_models_maximum_or_refuses") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); },
            ProxyOptions{.lower_max_tokens = false});
  const std::string request = chat_body();
  CHECK(post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: kit"}).status == 200);
  CHECK(h.upstream.last_body() == request);
  REQUIRE(h.pg->assign_plan("lee", "small").ok());  // $0.0005: not 16,384 tokens of gpt-4o
  const HttpResponse r = post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: lee"});
  CHECK(r.status == 429);
  CHECK(r.header("x-paygent-status") == "hard_gate");
  CHECK(h.upstream.hits() == 1);
}

// An explicit max_tokens of 0 is sent and held as asked (the prompt alone), not taken for "none
// given" (which would hold all the user can still afford while the call runs).
TEST_CASE("proxy.an_explicit_max_tokens_of_0_holds_the_prompt_alone") {
  Harness h([](const std::string&, const std::string&) {
    FakeReply reply = json_reply("openai-chat.json");
    reply.delay = std::chrono::milliseconds(400);
    return reply;
  });
  REQUIRE(h.pg->assign_plan("hal", "small").ok());
  const std::string request = chat_body(R"(,"max_tokens":0)");
  auto answered = std::async(std::launch::async, [&] {
    return post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: hal"}).status;
  });
  const Nanos prompt_cost = static_cast<Nanos>((request.size() + 3) / 4) * kGpt4oIn;
  Nanos reserved = 0;
  for (int i = 0; i < 100 && reserved == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    reserved = h.pg->report("hal").ok() ? h.pg->report("hal")->reserved : 0;
  }
  CHECK(reserved == prompt_cost);
  CHECK(answered.get() == 200);
  simdjson::dom::parser parser;
  CHECK(int64_t(parser.parse(h.upstream.last_body())["max_tokens"]) == 0);
}

TEST_CASE("proxy.concurrent_requests_at_a_cap_do_not_overshoot") {
  Harness h([](const std::string&, const std::string&) {
    FakeReply reply = json_reply("openai-chat.json");
    reply.delay = std::chrono::milliseconds(300);
    return reply;
  }, ProxyOptions{.lower_max_tokens = false});
  REQUIRE(h.pg->assign_plan("gil", "conc").ok());
  const std::string request = chat_body(R"(,"max_tokens":10)");
  const Nanos estimate = static_cast<Nanos>((request.size() + 3) / 4) * kGpt4oIn + 10 * kGpt4oOut;
  constexpr int kClients = 20;
  std::vector<std::future<int>> statuses;
  for (int i = 0; i < kClients; ++i) {
    statuses.push_back(std::async(std::launch::async, [&] {
      return post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: gil"}).status;
    }));
  }
  int admitted = 0, refused = 0;
  for (auto& s : statuses) {
    const int status = s.get();
    admitted += status == 200;
    refused += status == 429;
  }
  CHECK(admitted + refused == kClients);
  CHECK(admitted >= 1);
  CHECK(admitted <= 1'000'000 / estimate);  // the reservations held together never passed the cap
  CHECK(h.upstream.hits() == admitted);
  CHECK(h.spend("gil") == admitted * (12 * kGpt4oIn + 5 * kGpt4oOut));
}

// 200 events of "abcdefgh" (2 output tokens each), no usage: an upstream that ignores max_tokens.
FakeReply endless_stream(std::chrono::milliseconds delay) {
  FakeReply reply{.content_type = "text/event-stream", .delay = delay};
  for (int i = 0; i < 200; ++i) {
    reply.events.push_back(R"(data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"abcdefgh"},"finish_reason":null}]})"
                           "\n\n");
  }
  return reply;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST_CASE("proxy.stream_is_cut_at_the_cap_at_most_one_event_past") {
  Harness h([](const std::string&, const std::string&) { return endless_stream(std::chrono::milliseconds(0)); });
  REQUIRE(h.pg->assign_plan("hal", "small").ok());
  const std::string request = chat_body(R"(,"stream":true)");
  const std::int64_t prompt = static_cast<std::int64_t>((request.size() + 3) / 4);
  const std::int64_t fit = (500'000 - prompt * kGpt4oIn) / kGpt4oOut;
  const HttpResponse r = post(h.port(), "/v1/chat/completions", request, {"x-paygent-user: hal"});
  CHECK(r.status == 200);
  const std::int64_t forwarded = static_cast<std::int64_t>(count(r.body, "abcdefgh"));
  CHECK(forwarded == fit / 2 + 1);  // the event that passed the cap, and no other
  CHECK(r.body.find(R"("code":"paygent_limit_exceeded")") != std::string::npos);
  CHECK(r.body.find("stream cut at the hard cap") != std::string::npos);
  CHECK(h.proxy->stats().cut_streams == 1);
  // Metered on what was streamed: the cap passed by at most one event (2 output tokens).
  CHECK(h.spend("hal") == prompt * kGpt4oIn + forwarded * 2 * kGpt4oOut);
  CHECK(h.spend("hal") <= 500'000 + 2 * kGpt4oOut);
}

TEST_CASE("proxy.anthropic_stream_cut_ends_with_an_error_event") {
  Harness h([](const std::string&, const std::string&) {
    FakeReply reply{.content_type = "text/event-stream"};
    reply.events = sse_events(fixture("anthropic-messages-stream.sse"));
    reply.events.resize(2);  // message_start, content_block_start: then text without end
    for (int i = 0; i < 200; ++i) {
      reply.events.push_back("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                             "\"delta\":{\"type\":\"text_delta\",\"text\":\"abcdefgh\"}}\n\n");
    }
    return reply;
  });
  REQUIRE(h.pg->assign_plan("kim", "small").ok());
  const HttpResponse r = post(h.port(), "/v1/messages", R"({"model":"gpt-4o","max_tokens":100000,"stream":true,"messages":[]})",
                              {"x-paygent-user: kim"});
  CHECK(r.status == 200);
  CHECK(r.body.find("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"") != std::string::npos);
  CHECK(count(r.body, "abcdefgh") < 200);
  CHECK(h.proxy->stats().cut_streams == 1);
  CHECK(h.spend("kim") <= 500'000 + 2 * kGpt4oOut);
}

TEST_CASE("proxy.client_that_disconnects_mid_stream_is_still_metered") {
  Harness h([](const std::string&, const std::string&) { return endless_stream(std::chrono::milliseconds(20)); });
  const std::string request = chat_body(R"(,"stream":true,"max_tokens":1000)");
  const int fd = connect_loopback(h.port());
  send_all(fd, request_text("/v1/chat/completions", request, {"x-paygent-user: ivy"}));
  std::string seen;
  char chunk[4096];
  while (seen.find("abcdefgh") == std::string::npos) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    REQUIRE(n > 0);
    seen.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  for (int i = 0; i < 250 && h.proxy->stats().abandoned_streams == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(h.proxy->stats().abandoned_streams == 1);
  const Nanos prompt_cost = static_cast<Nanos>((request.size() + 3) / 4) * kGpt4oIn;
  const Nanos spent = h.spend("ivy");
  CHECK(spent >= prompt_cost + 2 * kGpt4oOut);        // at least the event the client saw
  CHECK(spent < prompt_cost + 1000 * kGpt4oOut);      // not the whole reservation
  REQUIRE(h.usages.size() == 1);
  CHECK(h.usages[0].output_tokens % 2 == 0);           // whole events of 2 tokens
}

TEST_CASE("proxy.provider_errors_are_forwarded_and_release_the_reservation") {
  Harness h([](const std::string&, const std::string&) {
    return FakeReply{.status = 429, .body = R"({"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}})"};
  });
  const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: lee"});
  CHECK(r.status == 429);
  CHECK(r.body.find("rate_limit_exceeded") != std::string::npos);
  CHECK(r.header("x-should-retry").empty());  // the provider's own retry advice stands
  CHECK(h.spend("lee") == 0);
  CHECK(h.usages.empty());
}

TEST_CASE("proxy.bad_input_gets_a_clear_error_and_the_proxy_stays_up") {
  Harness h([](const std::string&, const std::string& body) {
    if (body.find("HANG") != std::string::npos) return FakeReply{.hang = true};
    if (body.find("GARBAGE") != std::string::npos) return FakeReply{.raw = "this is not HTTP\r\n\r\n"};
    return json_reply("openai-chat.json");
  }, ProxyOptions{.max_body_bytes = 2048, .upstream_timeout = absl::Milliseconds(300)});
  const std::vector<std::string> user = {"x-paygent-user: jay"};
  HttpResponse r = post(h.port(), "/v1/chat/completions", "{\"model\": ", user);
  CHECK(r.status == 400);
  CHECK(r.body.find("not valid JSON") != std::string::npos);
  r = post(h.port(), "/v1/embeddings", chat_body(), user);
  CHECK(r.status == 404);
  CHECK(r.body.find("no route for POST /v1/embeddings") != std::string::npos);
  r = post(h.port(), "/v1/chat/completions", chat_body(",\"pad\":\"" + std::string(4096, 'x') + "\""), user);
  CHECK(r.status == 413);
  CHECK(r.body.find("larger than 2048 bytes") != std::string::npos);
  r = post(h.port(), "/v1/chat/completions", R"({"model":"gpt-4o","messages":[{"role":"user","content":"HANG"}]})", user);
  CHECK_MESSAGE(r.status == 504, r.body);
  CHECK(r.body.find("upstream") != std::string::npos);
  r = post(h.port(), "/v1/chat/completions", R"({"model":"gpt-4o","messages":[{"role":"user","content":"GARBAGE"}]})", user);
  CHECK(r.status == 502);
  CHECK(r.header("x-should-retry").empty());  // an upstream failure may be retried
  CHECK(h.spend("jay") == 0);  // nothing half-metered: both released
  CHECK(h.usages.empty());
  r = post(h.port(), "/v1/chat/completions", chat_body(), user);
  CHECK(r.status == 200);
  CHECK(h.spend("jay") == 12 * kGpt4oIn + 5 * kGpt4oOut);
  const ProxyStats stats = h.proxy->stats();
  CHECK(stats.bad_requests == 3);
  CHECK(stats.upstream_errors == 2);
}

// Ends the sending side of `fd`, reads what the proxy answers until it closes, then closes `fd`.
std::string read_to_end(int fd) {
  ::shutdown(fd, SHUT_WR);
  std::string raw;
  char chunk[16384];
  for (ssize_t n; (n = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) raw.append(chunk, static_cast<std::size_t>(n));
  ::close(fd);
  return raw;
}

// `bytes` sent as they are on a new connection; what the proxy answered until it closed ("" for
// nothing).
std::string raw_exchange(int port, const std::string& bytes) {
  const int fd = connect_loopback(port);
  send_all(fd, bytes);
  return read_to_end(fd);
}

TEST_CASE("proxy.hostile_http_gets_a_clear_error_and_the_proxy_stays_up") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); },
            ProxyOptions{.max_body_bytes = 2048});
  const std::string head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-paygent-user: eve\r\n";
  const std::string body = chat_body(R"(,"max_tokens":64)");
  auto status_of = [](const std::string& raw) { return raw.size() >= 12 ? std::stoi(raw.substr(9, 3)) : 0; };
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  // A chunked request body, in the same packet as its head: read whole, forwarded, metered.
  const HttpResponse chunked = parse_response(
      raw_exchange(h.port(), head + "transfer-encoding: chunked\r\n\r\n" + size + "\r\n" + body + "\r\n0\r\n\r\n"));
  CHECK(chunked.status == 200);
  CHECK(h.upstream.last_body() == body);
  // A chunk size that is not hex, Content-Length beside chunked, an unknown transfer coding.
  CHECK(status_of(raw_exchange(h.port(), head + "transfer-encoding: chunked\r\n\r\nzz\r\n" + body + "\r\n0\r\n\r\n")) == 400);
  CHECK(status_of(raw_exchange(h.port(), head + "transfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n")) == 400);
  CHECK(status_of(raw_exchange(h.port(), head + "transfer-encoding: gzip, chunked, gzip\r\n\r\n0\r\n\r\n")) == 400);
  // A chunked body past --max-body-bytes, then a 70 KiB header and 70 KiB of trailers.
  std::string big;
  for (int i = 0; i < 4; ++i) big += "400\r\n" + std::string(1024, 'x') + "\r\n";
  CHECK(status_of(raw_exchange(h.port(), head + "transfer-encoding: chunked\r\n\r\n" + big + "0\r\n\r\n")) == 413);
  CHECK(status_of(raw_exchange(h.port(), head + "x-big: " + std::string(70 << 10, 'a') + "\r\ncontent-length: 2\r\n\r\n{}")) == 400);
  const std::string trailers = "0\r\nx-t: " + std::string(70 << 10, 'b') + "\r\n\r\n";
  const int trailer_status = status_of(raw_exchange(h.port(), head + "transfer-encoding: chunked\r\n\r\n" + size + "\r\n" + body + "\r\n" + trailers));
  CHECK((trailer_status == 400 || trailer_status == 413));
  // Numbers out of range, and garbage that is not HTTP at all.
  for (const char* tokens : {"-5", "1e30", "18446744073709551616", "\"9\""}) {
    const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(std::string(",\"max_tokens\":") + tokens),
                                {"x-paygent-user: eve"});
    CHECK_MESSAGE(r.status == 400, tokens);
    CHECK_MESSAGE((r.body.find("max_tokens") != std::string::npos || r.body.find("number") != std::string::npos), r.body);
  }
  static constexpr char kJunk[] = "\x16\x03\x01\x00\xff garbage\r\n\r\n";  // a NUL inside: sized, not scanned
  const std::string junk = raw_exchange(h.port(), std::string(kJunk, sizeof kJunk - 1));
  CHECK((junk.empty() || status_of(junk) == 400));
  // Nothing of the refused requests reached the provider or was metered; the proxy still serves.
  CHECK(h.upstream.hits() == 1);
  CHECK(h.spend("eve") == 12 * kGpt4oIn + 5 * kGpt4oOut);
  CHECK(post(h.port(), "/v1/chat/completions", body, {"x-paygent-user: eve"}).status == 200);
  CHECK(h.upstream.hits() == 2);
}

// A request that arrives in pieces, with pauses: the proxy's first read right after the accept
// (MSG_DONTWAIT) finds nothing or part of a head, and the rest comes through the event loop; a
// head split anywhere, a body after its head, a second request on a kept connection likewise.
TEST_CASE("proxy.requests_in_pieces_with_pauses_are_read_whole_and_metered_once") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); });
  const std::string body = chat_body(R"(,"max_tokens":64)");
  const std::string head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-paygent-user: pia\r\ncontent-length: " +
                           std::to_string(body.size()) + "\r\n";
  const Nanos cost = 12 * kGpt4oIn + 5 * kGpt4oOut;
  auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(30)); };
  const std::string whole = head + "connection: close\r\n\r\n" + body;
  // Nothing at first; then the head cut inside its request line, inside a field, after the
  // blank line; then the body in two pieces.
  for (const std::size_t cut : {std::size_t{0}, std::size_t{9}, head.size() - 7, head.size() + 23}) {
    const int fd = connect_loopback(h.port());
    pause();
    send_all(fd, std::string_view(whole).substr(0, cut));
    pause();
    send_all(fd, std::string_view(whole).substr(cut, whole.size() - cut - 10));
    pause();
    send_all(fd, std::string_view(whole).substr(whole.size() - 10));
    const HttpResponse r = parse_response(read_to_end(fd));
    CHECK_MESSAGE(r.status == 200, "cut at ", cut);
    CHECK_MESSAGE(r.body == fixture("openai-chat.json"), "cut at ", cut);
    CHECK(h.upstream.last_body() == body);
  }
  CHECK(h.upstream.hits() == 4);
  CHECK(h.spend("pia") == 4 * cost);
  // A kept connection: the first request whole, the second (its last) in pieces after a pause.
  const int fd = connect_loopback(h.port());
  send_all(fd, head + "\r\n" + body);
  pause();
  send_all(fd, whole.substr(0, 20));
  pause();
  send_all(fd, whole.substr(20));
  const std::string raw = read_to_end(fd);
  std::size_t answers = 0;
  for (std::size_t at = raw.find("HTTP/1.1 200"); at != std::string::npos; at = raw.find("HTTP/1.1 200", at + 1)) ++answers;
  CHECK(answers == 2);
  CHECK(h.upstream.hits() == 6);
  CHECK(h.spend("pia") == 6 * cost);
}

// The first read never waits: on a proxy of one worker, a client that connects and sends nothing
// holds no one up.
TEST_CASE("proxy.a_silent_client_holds_up_no_one") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); },
            ProxyOptions{.threads = 1});
  const int silent = connect_loopback(h.port());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // accepted, its first read done
  const auto started = std::chrono::steady_clock::now();
  const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: quinn"});
  CHECK(r.status == 200);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
  ::close(silent);
}

TEST_CASE("proxy.hostile_upstream_gets_a_clear_error_and_the_proxy_stays_up") {
  // What a broken or hostile provider can answer, one kind per request (selected by the prompt).
  const std::string json = fixture("openai-chat.json");
  char json_size[16];
  std::snprintf(json_size, sizeof json_size, "%zx", json.size());
  const std::string ok_head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
  const std::string sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
  const std::map<std::string, std::string> kinds = {
      {"BIGHEAD", ok_head + "x-big: " + std::string(70 << 10, 'a') + "\r\ncontent-length: 2\r\n\r\n{}"},
      {"BIGTRAILER", ok_head + "transfer-encoding: chunked\r\n\r\n" + json_size + "\r\n" + json + "\r\n0\r\nx-t: " +
                         std::string(70 << 10, 'b') + "\r\n\r\n"},
      {"BIGEXT", ok_head + "transfer-encoding: chunked\r\n\r\n" + json_size + ";" + std::string(70 << 10, 'e') + "\r\n" +
                     json + "\r\n0\r\n\r\n"},
      {"BADCHUNK", ok_head + "transfer-encoding: chunked\r\n\r\nzz\r\n" + json + "\r\n0\r\n\r\n"},
      {"SHORT", ok_head + "content-length: 100000\r\n\r\n" + json},
      {"BADLEN", ok_head + "content-length: 18446744073709551616\r\n\r\n" + json},
      {"BADSTATUS", "HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}"},
      {"NOTJSON", ok_head + "content-length: 9\r\n\r\nnot json!"},
      {"STREAMTRAILER", sse_head + "10\r\ndata: {\"x\":1}\n\n\r\n0\r\nx-t: " + std::string(70 << 10, 'c') + "\r\n\r\n"},
      {"STREAMBAD", sse_head + "10\r\ndata: {\"x\":1}\n\n\r\nqq\r\n"},
  };
  Harness h([&](const std::string&, const std::string& body) {
    for (const auto& [kind, raw] : kinds)
      if (body.find(kind) != std::string::npos) return FakeReply{.raw = raw};
    return json_reply("openai-chat.json");
  }, ProxyOptions{.upstream_timeout = absl::Milliseconds(500)});
  for (const auto& [kind, raw] : kinds) {
    const bool stream = kind.rfind("STREAM", 0) == 0;
    const std::string body = R"({"model":"gpt-4o","messages":[{"role":"user","content":")" + kind + "\"}]" +
                             (stream ? R"(,"stream":true)" : "") + "}";
    HttpResponse r;
    try {
      r = post(h.port(), "/v1/chat/completions", body, {"x-paygent-user: mal"});
    } catch (const std::exception& e) {
      r.status = -1;  // a stream the proxy had to break off: the client sees a truncated response
    }
    INFO(kind, " -> ", r.status, " ", r.body.substr(0, 200));
    // Either a clear upstream error before anything was sent, or (the head already forwarded) a
    // response cut short; never a crash, never a 200 with a body the provider did not send whole.
    if (kind == "NOTJSON") {  // a whole answer, just not one the proxy can read: forwarded as it is
      CHECK(r.status == 200);
      CHECK(r.body == "not json!");
    } else if (!stream) {
      CHECK(r.status == 502);
      CHECK(r.body.find("paygent-proxy: upstream") != std::string::npos);
      CHECK(r.header("x-should-retry").empty());  // an upstream failure may be retried
    } else {
      CHECK((r.status == -1 || r.status == 200));  // the head went out with the first event
    }
  }
  // Every call was settled or released, none left holding the budget: nothing before a head is
  // metered, and what broke off after one is metered on the bytes that arrived (at most a few
  // hundred tokens here), never at the reservation (gpt-4o's 16,384 output tokens, as no
  // max_tokens was set).
  CHECK(h.pg->report("mal")->reserved == 0);
  CHECK(h.pg->stats().unreadable_responses >= 2);  // NOTJSON, and the bodies that broke off
  CHECK(h.spend("mal") < 2'000 * kGpt4oOut);
  // Whatever was answered, the proxy is still up and meters the next call exactly.
  const Nanos before = h.spend("mal");
  CHECK(post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: mal"}).status == 200);
  CHECK(h.spend("mal") == before + 12 * kGpt4oIn + 5 * kGpt4oOut);
}

// Upstream connections (proxy/upstream.h, UpstreamPool): kept alive and reused, never shared, never
// reused after a response that was not read whole. Each worker keeps its own (a connection is
// driven by one event loop), and the tests' calls open a client connection each, which the
// kernel gives to one worker or the other: these tests count connections on one worker
// (kOneWorker).

const ProxyOptions kOneWorker{.threads = 1};

TEST_CASE("proxy.upstream_connections_are_reused_across_calls") {
  Harness h([](const std::string&, const std::string& body) {
    return body.find("\"stream\":true") != std::string::npos ? stream_reply("openai-chat-stream.sse")
                                                              : json_reply("openai-chat.json");
  }, kOneWorker);
  for (int i = 0; i < 10; ++i) {
    const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: max"});
    REQUIRE(r.status == 200);
    CHECK(r.body == fixture("openai-chat.json"));
  }
  for (int i = 0; i < 3; ++i) {  // streams read to their end leave the connection reusable too
    const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(R"(,"stream":true)"), {"x-paygent-user: max"});
    REQUIRE(r.status == 200);
    CHECK(r.body.find("[DONE]") != std::string::npos);
  }
  CHECK(h.upstream.hits() == 13);
  CHECK(h.upstream.accepts() == 1);
  const ProxyStats stats = h.proxy->stats();
  CHECK(stats.upstream_connects == 1);
  CHECK(stats.upstream_reuses == 12);
  CHECK(stats.upstream_retries == 0);
  CHECK(stats.upstream_idle == 1);
  const HttpResponse health = post(h.port(), "/healthz", "", {}, "GET");
  CHECK(health.body.find(R"("upstream_connects":1,"upstream_reuses":12,"upstream_retries":0,"upstream_idle":1,)") !=
        std::string::npos);
  CHECK(health.body.ends_with(R"("serving":[1]})"));  // the /healthz connection itself, on the one worker
  REQUIRE(h.usages.size() == 13);
}

TEST_CASE("proxy.upstream_pool_off_or_expired_opens_a_new_connection") {
  SUBCASE("pool off") {
    Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); },
              ProxyOptions{.upstream_max_idle = 0, .threads = 1});
    for (int i = 0; i < 3; ++i) CHECK(post(h.port(), "/v1/chat/completions", chat_body()).status == 200);
    CHECK(h.upstream.accepts() == 3);
    CHECK(h.upstream.last_head().find("Connection: close") != std::string::npos);
  }
  SUBCASE("idle past the timeout") {
    Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); },
              ProxyOptions{.upstream_idle_timeout = absl::Milliseconds(400), .threads = 1});
    CHECK(post(h.port(), "/v1/chat/completions", chat_body()).status == 200);
    CHECK(post(h.port(), "/v1/chat/completions", chat_body()).status == 200);
    CHECK(h.upstream.accepts() == 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    CHECK(post(h.port(), "/v1/chat/completions", chat_body()).status == 200);
    CHECK(h.upstream.accepts() == 2);
  }
}

TEST_CASE("proxy.cut_stream_connection_is_closed_not_reused") {
  Harness h([](const std::string&, const std::string& body) {
    return body.find("\"stream\":true") != std::string::npos ? endless_stream(std::chrono::milliseconds(2))
                                                              : json_reply("openai-chat.json");
  }, kOneWorker);
  REQUIRE(h.pg->assign_plan("ned", "small").ok());
  const HttpResponse cut = post(h.port(), "/v1/chat/completions", chat_body(R"(,"stream":true)"), {"x-paygent-user: ned"});
  CHECK(cut.status == 200);
  CHECK(h.proxy->stats().cut_streams == 1);
  // Closing the connection is what stops the provider: its next write fails.
  for (int i = 0; i < 250 && h.upstream.broken_streams() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(h.upstream.broken_streams() == 1);
  CHECK(post(h.port(), "/v1/chat/completions", chat_body()).status == 200);
  CHECK(h.upstream.accepts() == 2);
}

TEST_CASE("proxy.abandoned_stream_connection_is_closed_not_reused") {
  Harness h([](const std::string&, const std::string& body) {
    return body.find("\"stream\":true") != std::string::npos ? endless_stream(std::chrono::milliseconds(20))
                                                              : json_reply("openai-chat.json");
  }, kOneWorker);
  CHECK(post(h.port(), "/v1/chat/completions", chat_body()).status == 200);  // a pooled connection
  const int fd = connect_loopback(h.port());
  send_all(fd, request_text("/v1/chat/completions", chat_body(R"(,"stream":true)"), {"x-paygent-user: ora"}));
  std::string seen;
  char chunk[4096];
  while (seen.find("abcdefgh") == std::string::npos) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    REQUIRE(n > 0);
    seen.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  for (int i = 0; i < 250 && h.upstream.broken_streams() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(h.proxy->stats().abandoned_streams == 1);
  CHECK(h.upstream.broken_streams() == 1);
  CHECK(h.upstream.accepts() == 1);  // the stream ran on the pooled connection
  CHECK(post(h.port(), "/v1/chat/completions", chat_body()).status == 200);
  CHECK(h.upstream.accepts() == 2);  // which was closed with the stream, not pooled again
}

TEST_CASE("proxy.stale_pooled_connection_is_retried_once_and_metered_once") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); }, kOneWorker);
  const Nanos cost = 12 * kGpt4oIn + 5 * kGpt4oOut;
  CHECK(post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: pia"}).status == 200);
  h.upstream.drop_next_reused_request();  // the upstream closes the idle connection as the request arrives
  const std::string raw =
      raw_exchange(h.port(), request_text("/v1/chat/completions", chat_body(), {"x-paygent-user: pia"}));
  const HttpResponse r = parse_response(raw);
  CHECK(r.status == 200);
  // The proxy's own headers, built while the first try waited, are there once (not once a try).
  auto count = [&](std::string_view text) {
    std::size_t n = 0;
    for (std::size_t at = raw.find(text); at != std::string::npos; at = raw.find(text, at + 1)) ++n;
    return n;
  };
  CHECK(count("x-paygent-status:") == 1);
  CHECK(count("x-paygent-cost-nanos:") == 1);
  CHECK(r.body == fixture("openai-chat.json"));
  CHECK(r.header("x-paygent-cost-nanos") == std::to_string(cost));
  CHECK(h.upstream.accepts() == 2);
  CHECK(h.upstream.hits() == 2);  // answered once (the dropped request is not counted)
  CHECK(h.proxy->stats().upstream_retries == 1);
  CHECK(h.proxy->stats().upstream_connects == 2);
  CHECK(h.usages.size() == 2);
  CHECK(h.spend("pia") == 2 * cost);
  CHECK(h.proxy->stats().upstream_errors == 0);
}

// A pooled connection the upstream reset while it was idle: sending the request fails (ECONNRESET
// or EPIPE), before any byte of an answer, so it is sent once more on a new connection, and
// metered once.
TEST_CASE("proxy.a_pooled_connection_reset_while_idle_is_retried_once") {
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); }, kOneWorker);
  const Nanos cost = 12 * kGpt4oIn + 5 * kGpt4oOut;
  CHECK(post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: quin"}).status == 200);
  REQUIRE(h.proxy->stats().upstream_idle == 1);
  h.upstream.reset_open_connections();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the RST reaches the proxy's socket
  const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: quin"});
  CHECK(r.status == 200);
  CHECK(r.body == fixture("openai-chat.json"));
  CHECK(h.upstream.accepts() == 2);
  CHECK(h.upstream.hits() == 2);
  CHECK(h.proxy->stats().upstream_retries == 1);
  CHECK(h.proxy->stats().upstream_connects == 2);
  CHECK(h.proxy->stats().upstream_errors == 0);
  CHECK(h.usages.size() == 2);
  CHECK(h.spend("quin") == 2 * cost);
}

// The x-paygent-* headers of an answer are the proxy's: an upstream's own are dropped, so they
// can neither duplicate nor counterfeit the verdict and the cost the application reads.
TEST_CASE("proxy.an_upstreams_own_x_paygent_headers_are_not_forwarded") {
  const std::string body = fixture("openai-chat.json");
  Harness h([&](const std::string&, const std::string&) {
    return FakeReply{.raw = str_cat("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-paygent-status: forged\r\n"
                                    "X-Paygent-Cost-Nanos: 1\r\nx-request-id: req-1\r\ncontent-length: ",
                                    body.size(), "\r\n\r\n", body)};
  }, kOneWorker);
  const std::string raw =
      raw_exchange(h.port(), request_text("/v1/chat/completions", chat_body(), {"x-paygent-user: rex"}));
  const HttpResponse r = parse_response(raw);
  CHECK(r.status == 200);
  CHECK(r.body == body);
  CHECK(raw.find("forged") == std::string::npos);
  CHECK(raw.find("X-Paygent-Cost-Nanos") == std::string::npos);
  CHECK(raw.find("x-paygent-status:") == raw.rfind("x-paygent-status:"));  // the proxy's, once
  CHECK_FALSE(r.header("x-paygent-status").empty());
  CHECK(r.header("x-paygent-cost-nanos") == std::to_string(12 * kGpt4oIn + 5 * kGpt4oOut));
  CHECK(r.header("x-request-id") == "req-1");  // the upstream's other headers pass
}

TEST_CASE("proxy.no_retry_after_a_response_byte_arrived") {
  Harness h([](const std::string&, const std::string& body) {
    if (body.find("PARTIAL") != std::string::npos) return FakeReply{.raw = "HTTP/1.1 200 OK\r\ncontent-"};
    return json_reply("openai-chat.json");
  }, kOneWorker);
  CHECK(post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: quin"}).status == 200);
  const HttpResponse r = post(h.port(), "/v1/chat/completions",
                              R"({"model":"gpt-4o","messages":[{"role":"user","content":"PARTIAL"}]})", {"x-paygent-user: quin"});
  CHECK(r.status == 502);
  CHECK(h.upstream.hits() == 2);  // sent once, never again
  CHECK(h.proxy->stats().upstream_retries == 0);
  CHECK(h.upstream.accepts() == 1);
  CHECK(h.spend("quin") == 12 * kGpt4oIn + 5 * kGpt4oOut);  // the failed call released
}

TEST_CASE("proxy.upstream_connection_close_is_not_reused") {
  Harness h([](const std::string&, const std::string&) {
    FakeReply reply = json_reply("openai-chat.json");
    reply.close = true;
    return reply;
  }, kOneWorker);
  for (int i = 0; i < 4; ++i) {
    const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: rex"});
    CHECK(r.status == 200);
  }
  CHECK(h.upstream.accepts() == 4);
  CHECK(h.upstream.hits() == 4);
  CHECK(h.proxy->stats().upstream_errors == 0);
}

TEST_CASE("proxy.each_worker_keeps_its_own_upstream_connections") {
  // Two workers, on a listening socket each (SO_REUSEPORT: the kernel picks one for each client
  // connection) or sharing one (worker 0 places each connection on the worker serving the
  // fewest): the first call a worker serves opens an upstream connection, its later ones reuse it.
  ProxyOptions options{.threads = 2};
  bool shared = false;
  SUBCASE("a listening socket per worker (SO_REUSEPORT)") { options.reuse_port = true; }
  SUBCASE("one listening socket, connections placed") { shared = true; }
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); }, options);
  // 24 client connections one after another, from as many source ports. With SO_REUSEPORT both
  // workers serve some (all on one would happen once in 2^23 runs); on the shared socket each
  // finds both workers idle and stays on worker 0, the thread that accepted it.
  constexpr int kCalls = 24;
  for (int i = 0; i < kCalls; ++i) {
    const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: uma"});
    REQUIRE(r.status == 200);
    CHECK(r.body == fixture("openai-chat.json"));
  }
  if (shared) {
    CHECK(h.proxy->stats().upstream_connects == 1);
    // Connections open at once spread: the accepting worker keeps one until it serves two more
    // than the other. Then a call on each: worker 1 opens its own upstream connection.
    std::vector<int> clients;
    for (int i = 0; i < 4; ++i) clients.push_back(connect_loopback(h.port()));
    std::vector<std::int64_t> serving;
    for (int i = 0; i < 500; ++i) {
      serving = h.proxy->stats().serving;
      if (serving.size() == 2 && serving[0] + serving[1] == 4) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(serving == std::vector<std::int64_t>{3, 1});
    for (int fd : clients) {
      REQUIRE(send_all(fd, request_text("/v1/chat/completions", chat_body(), {"x-paygent-user: uma"})));
      std::string raw;
      char chunk[4096];
      for (ssize_t n; (n = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) raw.append(chunk, static_cast<std::size_t>(n));
      ::close(fd);
      CHECK(parse_response(raw).status == 200);
    }
    for (int i = 0; i < 500 && h.proxy->stats().serving != std::vector<std::int64_t>{0, 0}; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(h.proxy->stats().serving == std::vector<std::int64_t>{0, 0});
  }
  const ProxyStats stats = h.proxy->stats();
  const int calls = kCalls + (shared ? 4 : 0);
  CHECK(stats.upstream_connects == 2);
  CHECK(h.upstream.accepts() == 2);
  CHECK(stats.upstream_reuses == calls - 2);
  CHECK(stats.upstream_idle == 2);
  CHECK(h.spend("uma") == calls * (12 * kGpt4oIn + 5 * kGpt4oOut));
  // The port is the workers' alone: a second proxy on it fails, as it would without SO_REUSEPORT.
  ProxyOptions same_port = options;
  same_port.listen_port = h.port();
  same_port.upstream_openai = h.upstream.url();
  auto second = ProxyServer::start(same_port, h.pg.get());
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().message().find("in use") != std::string_view::npos);
}

TEST_CASE("proxy.calls_interleaved_on_one_worker_each_keep_their_own_payer") {
  // One worker serves both connections: while alice's call waits for its provider, bob's runs on
  // the same thread. Neither inherits the other's user, session or agent.
  std::atomic<bool> release{false};
  Harness h([&](const std::string&, const std::string& body) {
    for (int i = 0; i < 500 && body.find("SLOW") != std::string::npos && !release.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return json_reply("openai-chat.json");
  }, kOneWorker);
  auto slow = std::async(std::launch::async, [&] {
    return post(h.port(), "/v1/chat/completions", R"({"model":"gpt-4o","messages":[{"role":"user","content":"SLOW"}]})",
                {"x-paygent-user: alice", "x-paygent-session: s1", "x-paygent-agent: a1"});
  });
  for (int i = 0; i < 500 && h.upstream.hits() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(h.upstream.hits() == 1);  // alice's call is at the provider
  const HttpResponse fast = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: bob"});
  release = true;
  CHECK(fast.status == 200);
  CHECK(slow.get().status == 200);
  std::lock_guard lock(h.mu);
  REQUIRE(h.payers.size() == 2);
  CHECK(h.payers[0].starts_with("bob|auto-"));  // bob's implicit session, no agent
  CHECK(h.payers[0].ends_with("|"));
  CHECK(h.payers[1] == "alice|s1|a1");
}

TEST_CASE("proxy.a_gate_that_may_wait_for_its_lease_runs_off_the_worker_and_still_meters") {
  // With budget leases and a backend (unreachable here), a gate may wait for its lease
  // (Paygent::gate_may_wait): it runs on the proxy's gate threads, with the caller's user.
  Harness h([](const std::string&, const std::string&) { return json_reply("openai-chat.json"); }, {},
            [](Options& o) {
              o.backend_url = "http://127.0.0.1:1";
              o.api_key = "pk_test";
              o.leases = true;
              o.lease_wait = absl::Milliseconds(20);
              o.shutdown_deadline = absl::Milliseconds(100);  // nothing can be delivered at the end
            });
  REQUIRE(h.pg->gate_may_wait());
  // Admitted by the outage rule (at most 10% of the $1.00 cap without a lease): metered, not
  // "unmetered" as a gate outside the caller's Context would be.
  const HttpResponse r = post(h.port(), "/v1/chat/completions", chat_body(R"(,"max_tokens":64)"), {"x-paygent-user: val"});
  CHECK(r.status == 200);
  CHECK(r.header("x-paygent-status") == "ok");
  CHECK(r.header("x-paygent-cost-nanos") == std::to_string(12 * kGpt4oIn + 5 * kGpt4oOut));
  CHECK(h.spend("val") == 12 * kGpt4oIn + 5 * kGpt4oOut);
  CHECK(h.proxy->stats().metered == 1);
  // Past what the outage rule admits (no max_tokens: gpt-4o's 16,384 output tokens reserved,
  // $0.16 of the 10%): the user's own hard gate, which only a gate that knows the user can give.
  const HttpResponse over = post(h.port(), "/v1/chat/completions", chat_body(), {"x-paygent-user: val"});
  CHECK(over.status == 429);
  CHECK(over.header("x-paygent-status") == "hard_gate");
}

TEST_CASE("proxy.concurrent_calls_never_share_an_upstream_connection") {
  // The provider answers a batch's calls only once all of them have arrived (or after 5 s), so
  // they overlap for sure: calls sharing a connection would arrive one after the other on it.
  constexpr int kCalls = 8;
  std::atomic<int> arrived{0};
  Harness h([&](const std::string&, const std::string&) {
    const int batch_end = (arrived.fetch_add(1) / kCalls + 1) * kCalls;
    for (int i = 0; i < 500 && arrived.load() < batch_end; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return json_reply("openai-chat.json");
  }, kOneWorker);  // one pool: which worker the kernel gives each connection does not matter
  auto batch = [&] {
    std::vector<std::future<HttpResponse>> calls;
    for (int i = 0; i < kCalls; ++i) {
      calls.push_back(std::async(std::launch::async, [&] {
        return post(h.port(), "/v1/chat/completions", chat_body(R"(,"max_tokens":10)"), {"x-paygent-user: sam"});
      }));
    }
    for (auto& call : calls) {
      const HttpResponse r = call.get();
      CHECK(r.status == 200);
      CHECK(r.body == fixture("openai-chat.json"));
    }
  };
  batch();
  CHECK(h.upstream.accepts() == kCalls);  // one connection each while they overlap
  CHECK(arrived.load() == kCalls);
  batch();
  CHECK(h.upstream.accepts() == kCalls);  // the second batch took the 8 idle ones, one each
  CHECK(h.upstream.hits() == 2 * kCalls);
  CHECK(h.spend("sam") == 2 * kCalls * (12 * kGpt4oIn + 5 * kGpt4oOut));
  CHECK(arrived.load() == 2 * kCalls);
}

}  // namespace
}  // namespace paygent::proxy
