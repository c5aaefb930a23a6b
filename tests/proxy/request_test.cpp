// paygent-proxy's request reading, body rewrite, stream relay and reply shapes, without sockets.
#include "proxy/request.h"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "proxy/replies.h"
#include "proxy/stream_relay.h"
#include "proxy/text.h"
#include "proxy/upstream.h"
#include "simdjson.h"
#include "tests/proxy/loopback.h"

namespace paygent::proxy {
namespace {

using testing::fixture;
using testing::sse_events;

RouteMatch route_of(std::string_view target) {
  auto route = match_route("POST", target);
  REQUIRE(route.has_value());
  return *route;
}

// Header lines (one string per message on the way through the proxy): whether a response
// already names its content type decides whether the proxy adds one.
TEST_CASE("proxy.header_lines_are_appended_and_found_by_name") {
  std::string lines;
  CHECK_FALSE(has_header(lines, "content-type"));
  append_header(&lines, "x-content-type-options", "nosniff");
  append_header(&lines, "Content-Typed", "no");
  append_header(&lines, "x-paygent-status", "ok");
  CHECK(lines == "x-content-type-options: nosniff\r\nContent-Typed: no\r\nx-paygent-status: ok\r\n");
  CHECK_FALSE(has_header(lines, "content-type"));  // neither a longer name nor one ending in it
  CHECK(has_header(lines, "X-Paygent-Status"));
  append_header(&lines, "Content-Type", "text/plain");
  CHECK(has_header(lines, "content-type"));
  CHECK(has_header("content-type: a", "content-type"));  // the last line without its CRLF
  CHECK_FALSE(has_header("content-type", "content-type"));
}

// An upstream answer's headers are walked line by line to pick those the proxy forwards: each
// line whole (to copy as it is), named by what comes before its colon.
TEST_CASE("proxy.header_lines_are_walked_whole_with_their_names") {
  std::vector<std::pair<std::string, std::string>> seen;
  auto walk = [&](std::string_view lines) {
    seen.clear();
    for_each_header_line(lines, [&](std::string_view name, std::string_view line) { seen.emplace_back(name, line); });
  };
  walk("");
  CHECK(seen.empty());
  walk("Content-Type: text/event-stream\r\nx-request-id: a:b\r\nno colon\r\nLast: x");
  REQUIRE(seen.size() == 4);
  CHECK(seen[0] == std::pair<std::string, std::string>{"Content-Type", "Content-Type: text/event-stream\r\n"});
  CHECK(seen[1] == std::pair<std::string, std::string>{"x-request-id", "x-request-id: a:b\r\n"});  // the first colon
  CHECK(seen[2] == std::pair<std::string, std::string>{"", "no colon\r\n"});
  CHECK(seen[3] == std::pair<std::string, std::string>{"Last", "Last: x"});  // the last line without its CRLF
  std::string copied;
  for_each_header_line("a: 1\r\nb: 2\r\n", [&](std::string_view name, std::string_view line) {
    if (name != "a") copied += line;
  });
  CHECK(copied == "b: 2\r\n");
}

TEST_CASE("proxy.routes_match_the_provider_paths") {
  CHECK(route_of("/v1/chat/completions").route == Route::kOpenAIChat);
  CHECK(route_of("/v1/responses").format == ApiFormat::kOpenAIResponses);
  CHECK(route_of("/v1/messages?beta=true").provider == Provider::kAnthropic);
  const RouteMatch gemini = route_of("/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse");
  CHECK(gemini.route == Route::kGeminiStream);
  CHECK(gemini.model == "gemini-1.5-flash");
  CHECK_FALSE(match_route("GET", "/v1/chat/completions"));
  CHECK_FALSE(match_route("POST", "/v1/embeddings"));
  CHECK_FALSE(match_route("POST", "/v1beta/models/x:countTokens"));
}

TEST_CASE("proxy.read_request_finds_model_user_and_bound") {
  auto openai = read_request(route_of("/v1/chat/completions"),
                             R"({"model":"gpt-4o","messages":[],"max_completion_tokens":50,"user":"u1","stream":true})");
  REQUIRE(openai.ok());
  CHECK(openai->model == "gpt-4o");
  CHECK(openai->max_tokens == 50);
  CHECK(openai->end_user == "u1");
  CHECK(openai->stream);
  CHECK_FALSE(openai->include_usage);
  auto safety = read_request(route_of("/v1/responses"), R"({"model":"gpt-4o","safety_identifier":"s","user":"u","max_output_tokens":9})");
  REQUIRE(safety.ok());
  CHECK(safety->end_user == "s");
  CHECK(safety->max_tokens == 9);
  auto anthropic = read_request(route_of("/v1/messages"), R"({"model":"claude","max_tokens":7,"metadata":{"user_id":"a"}})");
  REQUIRE(anthropic.ok());
  CHECK(anthropic->end_user == "a");
  CHECK(anthropic->max_tokens == 7);
  const std::string body = R"({"contents":[],"generationConfig":{"maxOutputTokens":3}})";
  auto gemini = read_request(route_of("/v1beta/models/gemini-1.5-flash:generateContent"), body);
  REQUIRE(gemini.ok());
  CHECK(gemini->model == "gemini-1.5-flash");
  CHECK(gemini->max_tokens == 3);
  CHECK(gemini->prompt_tokens == static_cast<std::int64_t>((body.size() + 3) / 4));
}

TEST_CASE("proxy.read_request_names_the_bad_field") {
  const RouteMatch chat = route_of("/v1/chat/completions");
  CHECK(read_request(chat, "{not json").status().ToString().find("not valid JSON") != std::string::npos);
  CHECK(read_request(chat, "[1]").status().ToString().find("request body: must be a JSON object") != std::string::npos);
  CHECK(read_request(chat, R"({"messages":[]})").status().ToString().find("model:") != std::string::npos);
  CHECK(read_request(chat, R"({"model":"m","max_tokens":-1})").status().ToString().find("max_tokens:") != std::string::npos);
  CHECK(read_request(chat, R"({"model":"m","stream":"yes"})").status().ToString().find("stream:") != std::string::npos);
  CHECK(read_request(chat, R"({"model":"m","user":5})").status().ToString().find("user:") != std::string::npos);
}

TEST_CASE("proxy.rewrite_lowers_max_tokens_and_asks_for_usage") {
  simdjson::dom::parser parser;
  const RouteMatch chat = route_of("/v1/chat/completions");
  const std::string original = R"({"model":"gpt-4o","max_tokens":500,"stream":true,"temperature":0.5})";
  CHECK(rewrite_body(chat, original, std::nullopt, false) == original);
  const std::string rewritten = rewrite_body(chat, original, 40, true);
  simdjson::dom::element doc = parser.parse(rewritten);
  CHECK(int64_t(doc["max_tokens"]) == 40);
  CHECK(bool(doc["stream_options"]["include_usage"]));
  CHECK(double(doc["temperature"]) == 0.5);
  // stream_options the caller set is kept, include_usage added to it.
  doc = parser.parse(rewrite_body(chat, R"({"model":"m","stream_options":{"x":1}})", std::nullopt, true));
  CHECK(int64_t(doc["stream_options"]["x"]) == 1);
  CHECK(bool(doc["stream_options"]["include_usage"]));
  // Absent bound: set, under the API's own name.
  doc = parser.parse(rewrite_body(chat, R"({"model":"m"})", 12, false));
  CHECK(int64_t(doc["max_completion_tokens"]) == 12);
  doc = parser.parse(rewrite_body(route_of("/v1/responses"), R"({"model":"m"})", 12, false));
  CHECK(int64_t(doc["max_output_tokens"]) == 12);
  // Fields the caller did not send are appended: the caller's own text is kept byte for byte.
  CHECK(rewrite_body(chat, "{\"model\":\"m\", \"stream\": true }\n", 12, true) ==
        R"({"model":"m", "stream": true ,"max_completion_tokens":12,"stream_options":{"include_usage":true}})");
  CHECK(rewrite_body(chat, "{ }", 3, false) == R"({ "max_completion_tokens":3})");
  // One of them present: the object is rebuilt, each field once.
  const std::string both = rewrite_body(chat, R"({"model":"m","max_completion_tokens":900,"stream":true})", 5, true);
  CHECK(both == R"({"model":"m","max_completion_tokens":5,"stream":true,"stream_options":{"include_usage":true}})");
  // A caller's field spelled with an escape, or sent twice, is found: the object is rebuilt and no
  // copy of the caller's bound is left beside the proxy's (never a body with the old bound after it).
  const std::string escaped = rewrite_body(chat, R"({"model":"m","max_completion_tok\u0065ns":900})", 5, false);
  CHECK(escaped == R"({"model":"m","max_completion_tokens":5})");
  const std::string twice =
      rewrite_body(chat, R"({"model":"m","max_completion_tokens":900,"max_completion_tokens":901})", 5, false);
  CHECK(twice == R"({"model":"m","max_completion_tokens":5,"max_completion_tokens":5})");
  // stream_options that is not an object is replaced, not appended beside.
  CHECK(rewrite_body(chat, R"({"model":"m","stream_options":7})", std::nullopt, true) ==
        R"({"model":"m","stream_options":{"include_usage":true}})");
  const RouteMatch gemini = route_of("/v1beta/models/g:generateContent");
  doc = parser.parse(rewrite_body(gemini, R"({"contents":[],"generationConfig":{"temperature":1}})", 8, false));
  CHECK(int64_t(doc["generationConfig"]["maxOutputTokens"]) == 8);
  CHECK(int64_t(doc["generationConfig"]["temperature"]) == 1);
}

TEST_CASE("proxy.rewrite_from_the_first_read_matches_the_rewrite_that_parses_again") {
  // The proxy rewrites the body from what read_request found (no second parse when the fields are
  // absent): byte for byte what the parsing rewrite gives, for every route, bound and field.
  const char* targets[] = {"/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1beta/models/g:generateContent"};
  const char* bodies[] = {
      R"({"model":"m"})",
      "{\"model\":\"m\", \"stream\": true }\n",
      R"({"model":"m","max_tokens":500,"stream":true})",
      R"({"model":"m","max_completion_tokens":900,"stream":true})",
      R"({"model":"m","max_completion_tok\u0065ns":900})",
      R"({"model":"m","max_output_tokens":7,"stream_options":{"x":1}})",
      R"({"model":"m","stream_options":7,"max_tokens":null})",
      R"({"model":"m","metadata":{"user_id":"u"},"max_tokens":3})",
      R"({"contents":[],"generationConfig":{"temperature":1}})",
  };
  int compared = 0;
  for (const char* target : targets) {
    const RouteMatch route = route_of(target);
    for (const char* body : bodies) {
      const auto read = read_request(route, body);
      if (!read.ok()) continue;  // e.g. no model for an OpenAI or Anthropic route
      for (const std::optional<std::int64_t> bound : {std::optional<std::int64_t>(), std::optional<std::int64_t>(42)}) {
        for (const bool usage : {false, true}) {
          CAPTURE(target);
          CAPTURE(body);
          CHECK(rewrite_body(route, body, *read, bound, usage) == rewrite_body(route, body, bound, usage));
          ++compared;
        }
      }
    }
  }
  CHECK(compared >= 100);
}

TEST_CASE("proxy.relay_strips_the_usage_chunk_it_asked_for_and_reads_usage") {
  const std::string stream = fixture("openai-chat-stream.sse");
  for (bool strip : {true, false}) {
    StreamRelay relay(ApiFormat::kOpenAIChat, strip);
    std::string out;
    for (std::size_t i = 0; i < stream.size(); i += 7) relay.feed(std::string_view(stream).substr(i, 7), out);
    relay.finish(out);
    CHECK((out.find("\"usage\":{") == std::string::npos) == strip);
    CHECK(out.find("data: [DONE]") != std::string::npos);
    CHECK(relay.streamed_output_tokens() == 3);  // "Hello there!": 12 bytes
    auto usage = relay.usage();
    REQUIRE(usage.ok());
    CHECK(usage->usage.input_tokens == 12);
    CHECK(usage->usage.output_tokens == 5);
  }
}

TEST_CASE("proxy.relay_forwards_event_lines_verbatim") {
  const std::string stream = fixture("anthropic-messages-stream.sse");
  StreamRelay relay(ApiFormat::kAnthropicMessages, false);
  std::string out;
  relay.feed(stream, out);
  relay.finish(out);
  CHECK(out == stream);
  CHECK(relay.events() == static_cast<std::int64_t>(sse_events(stream).size()));
}

TEST_CASE("proxy.relay_cut_passes_the_limit_by_at_most_one_event") {
  std::string stream;
  for (int i = 0; i < 20; ++i) {
    stream += R"(data: {"choices":[{"index":0,"delta":{"content":"abcdefgh"}}]})" "\n\n";  // 2 tokens each
  }
  StreamRelay relay(ApiFormat::kOpenAIChat, false);
  relay.set_output_limit(7);
  std::string out;
  relay.feed(stream, out);  // all at once: the cut is per event, not per read
  CHECK(relay.cut());
  CHECK(sse_events(out).size() == 4);  // 8 tokens: the event that passed 7 is the last
  CHECK(relay.streamed_output_tokens() == 8);
}

// The proxy's way (server.cpp): until the stream's first event is out, feed_early() sends it
// unread and drain() reads it after; later reads go through feed(). What reaches the caller, what
// is counted and the usage read are the same as feed() alone, for any split of the bytes.
TEST_CASE("proxy.relay_sending_the_first_event_unread_changes_nothing_else") {
  struct Case {
    const char* fixture;
    ApiFormat format;
    bool strip;
  };
  int compared = 0;
  for (const Case c : {Case{"openai-chat-stream.sse", ApiFormat::kOpenAIChat, true},
                       Case{"openai-chat-stream.sse", ApiFormat::kOpenAIChat, false},
                       Case{"anthropic-messages-stream.sse", ApiFormat::kAnthropicMessages, false},
                       Case{"openai-responses-stream.sse", ApiFormat::kOpenAIResponses, false}}) {
    const std::string stream = fixture(c.fixture);
    for (std::size_t piece : {std::size_t{1}, std::size_t{7}, std::size_t{64}, stream.size()}) {
      for (std::int64_t limit : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{1}}) {
        CAPTURE(c.fixture);
        CAPTURE(piece);
        CAPTURE(limit);
        StreamRelay plain(c.format, c.strip), early(c.format, c.strip);
        plain.set_output_limit(limit);
        early.set_output_limit(limit);
        std::string plain_out, early_out;
        for (std::size_t i = 0; i < stream.size(); i += piece) {
          const std::string_view bytes = std::string_view(stream).substr(i, piece);
          plain.feed(bytes, plain_out);
          if (early.events() == 0) {
            std::string first;
            early.feed_early(bytes, first);
            CHECK(sse_events(first).size() <= 1);
            early_out += first;
            early.drain(early_out);
          } else {
            early.feed(bytes, early_out);
          }
        }
        plain.finish(plain_out);
        early.finish(early_out);
        CHECK(early_out == plain_out);
        CHECK(early.cut() == plain.cut());
        CHECK(early.events() == plain.events());
        CHECK(early.streamed_output_tokens() == plain.streamed_output_tokens());
        auto plain_usage = plain.usage();
        auto early_usage = early.usage();
        REQUIRE(plain_usage.ok() == early_usage.ok());
        if (plain_usage.ok()) {
          CHECK(early_usage->usage.input_tokens == plain_usage->usage.input_tokens);
          CHECK(early_usage->usage.output_tokens == plain_usage->usage.output_tokens);
        }
        if (c.format == ApiFormat::kOpenAIChat && piece == stream.size()) {
          // In one read the usage chunk came with the rest: read, cut or not, stripped or not.
          REQUIRE(early_usage.ok());
          CHECK(early_usage->usage.input_tokens == 12);
          CHECK(early_usage->usage.output_tokens == 5);
        }
        ++compared;
      }
    }
  }
  CHECK(compared == 48);
}

TEST_CASE("proxy.relay_never_sends_a_possible_usage_chunk_unread") {
  const std::string usage_chunk =
      R"(data: {"choices":[],"usage": {"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}})" "\n\n";
  const std::string text = R"(data: {"choices":[{"index":0,"delta":{"content":"abcdefgh"}}],"usage":null})" "\n\n";
  {  // The usage chunk first (a provider may send it anywhere): read, dropped, never sent.
    StreamRelay relay(ApiFormat::kOpenAIChat, true);
    std::string out;
    relay.feed_early(usage_chunk + text, out);
    CHECK(out == text);  // read first, with the whole read: only the text event went out
    relay.drain(out);
    CHECK(out == text);
    CHECK(relay.usage()->usage.output_tokens == 5);
  }
  {  // A text event whose usage is null goes out unread; counted once read.
    StreamRelay relay(ApiFormat::kOpenAIChat, true);
    relay.set_output_limit(1);
    std::string out;
    relay.feed_early(text + text, out);
    CHECK(out == text);
    CHECK(relay.streamed_output_tokens() == 0);
    CHECK_FALSE(relay.cut());
    relay.drain(out);  // 2 tokens: past the limit of 1: cut after the first event, the second never sent
    CHECK(out == text);
    CHECK(relay.cut());
    CHECK(relay.streamed_output_tokens() == 2);
  }
  {  // Sent unread, then the caller left: it and the rest of its read still counted as streamed.
    StreamRelay relay(ApiFormat::kOpenAIChat, false);
    std::string out;
    relay.feed_early(text + text + "data: {\"choices\":[{\"delta\":{\"content\":\"ab", out);
    CHECK(out == text);
    CHECK_FALSE(relay.usage().ok());  // no usage; the cut-off last event is malformed
    CHECK(relay.streamed_output_tokens() == 4);
    CHECK(relay.events() == 2);
  }
  {  // A usage chunk whose key and value are on two data lines, or whose key is escaped: read first.
    for (const std::string& chunk : {std::string("data: {\"choices\":[],\"usage\"\ndata: :{\"prompt_tokens\":12,"
                                                "\"completion_tokens\":5,\"total_tokens\":17}}\n\n"),
                                    std::string("data: {\"choices\":[],\"\\u0075sage\":{\"prompt_tokens\":12,"
                                                "\"completion_tokens\":5,\"total_tokens\":17}}\n\n")}) {
      CAPTURE(chunk);
      StreamRelay relay(ApiFormat::kOpenAIChat, true);
      std::string out;
      relay.feed_early(chunk, out);
      CHECK(out.empty());
      relay.drain(out);
      CHECK(out.empty());  // stripped (the relay reads keys unescaped)
    }
  }
}

TEST_CASE("proxy.refusal_bodies_are_shaped_per_sdk") {
  GuardResult result;
  result.status = GateStatus::kHardGate;
  result.reason = GateReason::kTotalSpend;
  result.current_value = 1'500'000'000;
  result.call_estimate = 600'000'000;
  result.limit_value = 1'000'000'000;
  result.usage_pct = 1.5;
  simdjson::dom::parser parser;
  simdjson::dom::element openai = parser.parse(refusal_body(Provider::kOpenAI, result));
  CHECK(std::string_view(openai["error"]["type"]) == "insufficient_quota");
  CHECK(std::string_view(openai["error"]["code"]) == "paygent_limit_exceeded");
  CHECK(openai["error"]["param"].is_null());
  CHECK(std::string_view(openai["error"]["message"]).find("total_spend") != std::string_view::npos);
  CHECK(int64_t(openai["paygent"]["used"]) == 900'000'000);
  CHECK(int64_t(openai["paygent"]["limit_value"]) == 1'000'000'000);
  simdjson::dom::element anthropic = parser.parse(refusal_body(Provider::kAnthropic, result));
  CHECK(std::string_view(anthropic["type"]) == "error");
  CHECK(std::string_view(anthropic["error"]["type"]) == "rate_limit_error");
  CHECK(std::string_view(anthropic["error"]["message"]).find("$1.00") != std::string_view::npos);
  simdjson::dom::element gemini = parser.parse(refusal_body(Provider::kGemini, result));
  CHECK(std::string_view(gemini["error"]["status"]) == "RESOURCE_EXHAUSTED");
  CHECK(usd_decimal(123) == "0.000000123");
  CHECK(usd_decimal(49'000'000'001) == "49.000000001");
}

TEST_CASE("proxy.upstream_urls_are_checked") {
  auto tls = parse_upstream_url("https://api.openai.com/", "--upstream-openai");
  REQUIRE(tls.ok());
  CHECK(*tls == UpstreamUrl{true, "api.openai.com", "443", ""});
  auto local = parse_upstream_url("http://127.0.0.1:9000/prefix", "--upstream-openai");
  REQUIRE(local.ok());
  CHECK(*local == UpstreamUrl{false, "127.0.0.1", "9000", "/prefix"});
  CHECK(parse_upstream_url("ftp://x", "--upstream-gemini").status().ToString().find("--upstream-gemini:") != std::string::npos);
  CHECK_FALSE(parse_upstream_url("http://:80", "--upstream-gemini").ok());
  CHECK_FALSE(parse_upstream_url("http://h:x", "--upstream-gemini").ok());
}

}  // namespace
}  // namespace paygent::proxy
