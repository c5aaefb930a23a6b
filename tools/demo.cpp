// `paygent demo`: the $49 Pro-plan month from the product documents, without and with Paygent.
//
// Three users of a $49/month plan call a deterministic simulated LLM for the month of November
// 2026 (a fake clock walks through it): Alice (light), Bob (typical) and Charlie (power user,
// mostly GPT-4o). The month is run twice. Without Paygent every call goes through. With Paygent
// the Pro plan caps GPT-4o at 4M tokens a month (soft warning at 80%), spend at $49 a month and
// $5 a session; the application answers a GPT-4o model_limit gate by retrying on gpt-4o-mini.
// (The product docs' example cap is 50K GPT-4o tokens; at these call sizes it would block Alice,
// the light user, after two calls.) With a backend, the guarded run syncs every event to paygentd,
// and the demo ends by asking paygentd for its per-user totals over November 2026 (explicit
// from/to, not the backend's current period) and checking they equal the library's report.
#include "tools/demo.h"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "paygent/paygent.h"
#include "sync/syncer.h"
#include <simdjson.h>

namespace paygent::tools {
namespace {

// The plan of the demo, in the documented config format.
constexpr const char* kProPlan = R"json({
  "soft_gate_at": 0.80,
  "hard_gate_at": 1.00,
  "default_plan": "pro",
  "plans": [{
    "name": "pro",
    "max_spend_per_period": 49.00,
    "max_spend_per_session": 5.00,
    "model_limits": {"gpt-4o": {"max_tokens_per_period": 4000000}},
    "cost_rates": {"gpt-4o": {"input": 0.0025, "output": 0.01},
                   "gpt-4o-mini": {"input": 0.00015, "output": 0.0006}},
    "session_timeout_minutes": 30
  }]
})json";

constexpr Nanos kPlanPrice = 49 * kNanosPerUsd;

// A deterministic random source (xorshift64*), identical on every platform.
class Random {
 public:
  explicit Random(std::uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ULL + 1) {}
  std::uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1DULL;
  }
  // Uniform in [lo, hi].
  std::int64_t between(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }

 private:
  std::uint64_t s_;
};

struct Persona {
  const char* name;
  const char* user_id;
  int calls;
  int gpt4o_percent;  // share of calls that want GPT-4o; the rest use gpt-4o-mini
  std::int64_t prompt_tokens;
  std::int64_t output_tokens;
};

// Token sizes chosen so that, without Paygent, the month costs what the product documents say:
// Alice ~$8, Bob ~$23, Charlie ~$140 (to the dollar: tests/integration/demo_test.cpp checks it).
constexpr Persona kPersonas[] = {
    {"Alice (light)", "alice", 50, 100, 12'000, 13'000},
    {"Bob (typical)", "bob", 400, 40, 12'000, 10'800},
    {"Charlie (power)", "charlie", 4000, 90, 5'000, 2'600},
};

struct Call {
  absl::Time at;
  const Persona* persona;
  std::string model;
  std::int64_t prompt_tokens;
  std::int64_t output_tokens;
  std::string session;
};

// The month's calls of every user, in time order: calls come in chats of up to 20 calls a minute
// apart, chats start at random minutes of the month.
std::vector<Call> month_of_calls(absl::Time month_start) {
  std::vector<Call> calls;
  Random rnd(2026);
  for (const Persona& p : kPersonas) {
    int made = 0;
    int chat = 0;
    while (made < p.calls) {
      const absl::Time chat_start = month_start + absl::Minutes(rnd.between(0, 29 * 24 * 60));
      const int in_chat = static_cast<int>(std::min<std::int64_t>(rnd.between(5, 20), p.calls - made));
      for (int i = 0; i < in_chat; ++i, ++made) {
        Call c;
        c.at = chat_start + absl::Minutes(i);
        c.persona = &p;
        c.model = rnd.between(1, 100) <= p.gpt4o_percent ? "gpt-4o" : "gpt-4o-mini";
        // +-20% around the persona's sizes.
        c.prompt_tokens = p.prompt_tokens * rnd.between(80, 120) / 100;
        c.output_tokens = p.output_tokens * rnd.between(80, 120) / 100;
        c.session = absl::StrFormat("%s-chat-%d", p.user_id, chat);
        calls.push_back(std::move(c));
      }
      ++chat;
    }
  }
  std::stable_sort(calls.begin(), calls.end(), [](const Call& a, const Call& b) { return a.at < b.at; });
  return calls;
}

// The simulated provider: answers with an OpenAI Chat Completions body whose usage is exact.
std::string simulated_llm(const std::string& model, std::int64_t prompt_tokens, std::int64_t output_tokens) {
  return absl::StrFormat(
      R"({"id":"chatcmpl-demo","object":"chat.completion","model":"%s-2024-08-06",)"
      R"("choices":[{"index":0,"message":{"role":"assistant","content":"..."},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}})",
      model, prompt_tokens, output_tokens, prompt_tokens + output_tokens);
}

// The provider's price (what the company pays), independent of Paygent.
Nanos provider_cost(const std::string& model, std::int64_t in, std::int64_t out) {
  const ModelPrice* price = PriceCatalog::builtin().find(model);
  Usage u;
  u.input_tokens = in;
  u.output_tokens = out;
  return price != nullptr ? cost_of(u, *price) : 0;
}

struct Tally {
  int calls = 0;  // calls that reached the provider
  std::map<std::string, std::int64_t> tokens_by_model;
  Nanos cost = 0;
  int blocked = 0;        // calls stopped by a hard gate (no fallback possible)
  int rerouted = 0;       // GPT-4o calls gated by the model quota and answered by gpt-4o-mini
  int soft_warnings = 0;  // on_soft_gate callbacks
};

void print_run(const char* title, const std::map<std::string, Tally>& tallies) {
  std::printf("\n%s\n", title);
  std::printf("  %-16s %6s %20s %20s %10s %8s %9s %6s %10s\n", "user", "calls", "gpt-4o tokens",
              "gpt-4o-mini tokens", "cost", "blocked", "rerouted", "warn", "margin");
  for (const Persona& p : kPersonas) {
    const Tally& t = tallies.at(p.user_id);
    auto tokens = [&](const char* m) {
      auto it = t.tokens_by_model.find(m);
      return it == t.tokens_by_model.end() ? std::int64_t{0} : it->second;
    };
    const Nanos margin = kPlanPrice - t.cost;
    std::printf("  %-16s %6d %20" PRId64 " %20" PRId64 " %10s %8d %9d %6d %10s %s\n", p.name, t.calls,
                tokens("gpt-4o"), tokens("gpt-4o-mini"), format_usd(t.cost).c_str(), t.blocked, t.rerouted,
                t.soft_warnings, format_usd(margin).c_str(), margin < 0 ? "LOSS" : "ok");
  }
}

// One user's totals over the demo month.
struct Totals {
  std::int64_t calls = 0;
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  Nanos cost = 0;
  friend bool operator==(const Totals&, const Totals&) = default;
};

// The library's own totals for a user (pg.report on the demo's clock: the demo month).
Totals library_totals(const UserReport& rep) {
  Totals t;
  t.calls = rep.calls;
  t.cost = rep.spend;
  for (const auto& m : rep.by_model) {
    t.input_tokens += m.input_tokens;
    t.output_tokens += m.output_tokens;
  }
  return t;
}

// Delivers every event of the guarded run to the backend: the local store first, then the syncer,
// retried until `deadline` (as `paygent sync` does). False, with the reason printed, otherwise.
bool deliver_everything(Paygent& pg, absl::Duration deadline) {
  const absl::Time until = absl::Now() + deadline;
  for (;;) {
    const absl::Status s = pg.flush(absl::Seconds(5));
    if (s.ok()) return true;
    if (absl::Now() >= until) {
      std::fprintf(stderr, "demo: could not deliver every event to the backend within %s: %s\n",
                   absl::FormatDuration(deadline).c_str(), std::string(s.message()).c_str());
      return false;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

// The backend's view of the demo month, asked for explicitly (not "the current period", which
// follows the real clock and is another month once November 2026 is over), compared user by user
// with the library's own report. Returns false, having said why, when they differ or the backend
// cannot be read.
bool check_backend_report(const DemoOptions& options, Paygent& pg, absl::Time from, absl::Time to,
                          const std::string& month_name) {
  const std::string target = absl::StrFormat("/api/v1/reports/usage?from_ns=%d&to_ns=%d&group_by=user",
                                             absl::ToUnixNanos(from), absl::ToUnixNanos(to));
  std::printf("\nThe backend's report for %s (paygentd at %s, GET %s), against the library's (pg.report):\n",
              month_name.c_str(), options.backend_url.c_str(), target.c_str());
  auto reply = internal::http_exchange(options.backend_url, "GET", target, options.api_key, "");
  if (!reply.ok() || reply->status != 200) {
    std::fprintf(stderr, "demo: the backend's usage report failed: %s\n",
                 reply.ok() ? reply->body.c_str() : std::string(reply.status().message()).c_str());
    return false;
  }
  std::map<std::string, Totals> backend;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::array rows;
  if (parser.parse(reply->body).get(doc) != simdjson::SUCCESS || doc["rows"].get_array().get(rows) != simdjson::SUCCESS) {
    std::fprintf(stderr, "demo: unreadable backend report: %s\n", reply->body.c_str());
    return false;
  }
  for (simdjson::dom::element row : rows) {
    std::string_view key;
    Totals t;
    if (row["key"].get_string().get(key) != simdjson::SUCCESS ||
        row["calls"].get_int64().get(t.calls) != simdjson::SUCCESS ||
        row["input_tokens"].get_int64().get(t.input_tokens) != simdjson::SUCCESS ||
        row["output_tokens"].get_int64().get(t.output_tokens) != simdjson::SUCCESS ||
        row["cost_nanos"].get_int64().get(t.cost) != simdjson::SUCCESS) {
      std::fprintf(stderr, "demo: unreadable row in the backend report: %s\n", reply->body.c_str());
      return false;
    }
    backend[std::string(key)] = t;
  }
  std::printf("  %-8s %-7s %6s %14s %14s %16s\n", "user", "source", "calls", "input tokens", "output tokens",
              "cost (nano-USD)");
  std::vector<std::string> differ;
  for (const Persona& p : kPersonas) {
    Totals mine;
    if (auto rep = pg.report(p.user_id); rep.ok()) {
      if (rep->period.start != from || rep->period.end != to) {
        std::fprintf(stderr, "demo: the library reports %s for another period than %s\n", p.user_id, month_name.c_str());
        return false;
      }
      mine = library_totals(*rep);
    }
    const auto it = backend.find(p.user_id);
    const Totals theirs = it == backend.end() ? Totals{} : it->second;
    const bool same = mine == theirs;
    if (!same) differ.push_back(p.user_id);
    std::printf("  %-8s %-7s %6" PRId64 " %14" PRId64 " %14" PRId64 " %16" PRId64 "  %s\n", p.user_id, "backend",
                theirs.calls, theirs.input_tokens, theirs.output_tokens, theirs.cost, format_usd(theirs.cost).c_str());
    std::printf("  %-8s %-7s %6" PRId64 " %14" PRId64 " %14" PRId64 " %16" PRId64 "  %s %s\n", "", "library",
                mine.calls, mine.input_tokens, mine.output_tokens, mine.cost, format_usd(mine.cost).c_str(),
                same ? "same" : "DIFFERENT");
  }
  if (!differ.empty()) {
    std::string who;
    for (const auto& u : differ) who += (who.empty() ? "" : ", ") + u;
    std::printf("MISMATCH: the backend's totals for %s differ from the library's for %s.\n", month_name.c_str(),
                who.c_str());
    std::fflush(stdout);
    std::fprintf(stderr,
                 "demo: MISMATCH: paygentd's totals for %s differ from the library's report for %s "
                 "(was this product used before? the demo needs a fresh one)\n",
                 month_name.c_str(), who.c_str());
    return false;
  }
  std::printf("Backend and library agree for every user: calls, tokens and cost to the nano-dollar.\n");
  return true;
}

}  // namespace

int run_demo(const DemoOptions& options) {
  // A fixed month, not the current one: the numbers (calls, tokens, costs) are then the same on
  // every run, whatever the date (the current month would vary in length, and the calls of a
  // 28-day February would spill into March). The backend is asked for this month explicitly.
  const absl::CivilMonth month(2026, 11);
  const absl::Time month_start = absl::FromCivil(month, absl::UTCTimeZone());
  const absl::Time month_end = absl::FromCivil(month + 1, absl::UTCTimeZone());
  const std::string month_name = absl::FormatTime("%B %Y", month_start, absl::UTCTimeZone());
  const std::vector<Call> calls = month_of_calls(month_start);
  std::printf("Paygent demo: one month (%s) of a $49/month Pro plan, %zu simulated LLM calls.\n",
              month_name.c_str(), calls.size());

  // Run 1: no guardrail.
  std::map<std::string, Tally> without;
  for (const Call& c : calls) {
    Tally& t = without[c.persona->user_id];
    ++t.calls;
    t.tokens_by_model[c.model] += c.prompt_tokens + c.output_tokens;
    t.cost += provider_cost(c.model, c.prompt_tokens, c.output_tokens);
  }
  print_run("Without Paygent: every call goes through.", without);

  // Run 2: every call through Paygent (reserve -> call -> settle), on a clock walking the month.
  std::map<std::string, Tally> with;
  absl::Time now = month_start;
  std::string current_user;
  Options o;
  o.plans = *parse_plan_config(kProPlan);
  o.local_store_path = options.store_path;
  const bool backend = !options.api_key.empty() && !options.backend_url.empty();
  if (backend) {
    // The backend gets the same plans, then every event in batches.
    auto posted = internal::http_exchange(options.backend_url, "POST", "/api/v1/config/plans", options.api_key,
                                          kProPlan);
    if (!posted.ok() || posted->status != 200) {
      std::fprintf(stderr, "demo: the backend refused the plans: %s\n",
                   posted.ok() ? posted->body.c_str() : std::string(posted.status().message()).c_str());
      return 1;
    }
    o.api_key = options.api_key;
    o.backend_url = options.backend_url;
    o.flush_interval = absl::Milliseconds(50);
  }
  o.clock = [&] { return now; };
  o.on_soft_gate = [&](const GuardResult& r) {
    ++with[current_user].soft_warnings;
    if (options.verbose) std::printf("  [%s] %s: %s\n", absl::FormatTime("%b %d %H:%M", now, absl::UTCTimeZone()).c_str(),
                                     current_user.c_str(), r.message().c_str());
  };
  o.on_error = [](const absl::Status& s) { std::fprintf(stderr, "paygent: %s\n", std::string(s.message()).c_str()); };
  auto created = Paygent::create(std::move(o));
  if (!created.ok()) {
    std::fprintf(stderr, "demo: %s\n", std::string(created.status().message()).c_str());
    return 1;
  }
  Paygent& pg = **created;
  std::vector<std::string> first_blocks;
  for (const Call& c : calls) {
    now = c.at;
    current_user = c.persona->user_id;
    Tally& t = with[current_user];
    Context ctx(current_user, {.session_id = c.session});
    std::string model = c.model;
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        pg.metered_call(model, {.prompt_tokens = c.prompt_tokens, .max_output_tokens = c.output_tokens}, [&] {
          ++t.calls;
          t.tokens_by_model[model] += c.prompt_tokens + c.output_tokens;
          t.cost += provider_cost(model, c.prompt_tokens, c.output_tokens);
          return simulated_llm(model, c.prompt_tokens, c.output_tokens);
        });
        break;
      } catch (const LimitExceeded& e) {
        if (first_blocks.size() < 3 && (t.rerouted + t.blocked) == 0) {
          first_blocks.push_back(absl::StrFormat("  [%s] %s: %s", absl::FormatTime("%b %d %H:%M", now, absl::UTCTimeZone()),
                                                 current_user, e.what()));
        }
        if (e.result().reason == GateReason::kModelLimit && model != "gpt-4o-mini") {
          ++t.rerouted;  // the application's policy: fall back to the cheaper model
          model = "gpt-4o-mini";
          continue;
        }
        ++t.blocked;
        break;
      }
    }
  }
  print_run("With Paygent: GPT-4o capped at 4M tokens/month, $49/month, $5/session; gated calls fall back to gpt-4o-mini.",
            with);
  std::printf("  (The product docs' example cap is 50K GPT-4o tokens a month; at this demo's call sizes (~25K tokens "
              "a call for Alice) that would block Alice after two calls, so the demo's cap is 4M.)\n");
  std::printf("\nFirst hard gates, as the application saw them:\n");
  for (const auto& line : first_blocks) std::printf("%s\n", line.c_str());

  std::printf("\nPaygent's own view at the end of the month (pg.report):\n");
  for (const Persona& p : kPersonas) {
    auto rep = pg.report(p.user_id);
    if (!rep.ok()) continue;
    std::printf("  %-8s plan %s, %s spent of %s, %s left, %" PRId64 " calls, %zu sessions;", p.user_id,
                rep->plan.c_str(), format_usd(rep->spend).c_str(),
                rep->max_spend_per_period ? format_usd(*rep->max_spend_per_period).c_str() : "unlimited",
                rep->remaining ? format_usd(*rep->remaining).c_str() : "unlimited", rep->calls, rep->by_session.size());
    for (const auto& m : rep->by_model) {
      std::printf(" %s %s", m.model.c_str(), format_usd(m.cost).c_str());
    }
    std::printf("\n");
  }
  const Stats s = pg.stats();
  std::printf("\nPaygent counters: %" PRId64 " checks, %" PRId64 " metered events, %" PRId64 " soft gates, %" PRId64
              " hard gates, %" PRId64 " errors contained.\n",
              s.checks, s.events, s.soft_gates, s.hard_gates, s.errors);
  bool backend_agrees = true;
  if (backend) {
    // Every event must have reached paygentd before its report means anything.
    const bool delivered = deliver_everything(pg, absl::Seconds(60));
    std::printf("Local store %s: %" PRId64 " events stored, %" PRId64 " delivered to paygentd.\n",
                options.store_path.c_str(), pg.stats().stored_events, pg.stats().delivered_events);
    backend_agrees = delivered && check_backend_report(options, pg, month_start, month_end, month_name);
  } else if (!options.store_path.empty()) {
    const absl::Status flushed = pg.flush(absl::Seconds(30));
    std::printf("Local store %s: %s (%" PRId64 " events stored).\n", options.store_path.c_str(),
                flushed.ok() ? "flushed" : std::string(flushed.message()).c_str(), pg.stats().stored_events);
  }

  const Tally& charlie_before = without.at("charlie");
  const Tally& charlie_after = with.at("charlie");
  const bool story_holds = kPlanPrice - charlie_before.cost < 0 && kPlanPrice - charlie_after.cost >= 0 &&
                           charlie_after.rerouted > 0 && with.at("alice").rerouted == 0;
  std::printf("\n%s Charlie's margin: %s without Paygent, %s with it; he kept working on gpt-4o-mini (%d calls rerouted).\n",
              story_holds ? "OK:" : "UNEXPECTED:", format_usd(kPlanPrice - charlie_before.cost).c_str(),
              format_usd(kPlanPrice - charlie_after.cost).c_str(), charlie_after.rerouted);
  if (!backend_agrees) {
    std::fflush(stdout);
    std::fprintf(stderr, "demo: FAILED: the backend's report for %s does not match the library's (see above).\n",
                 month_name.c_str());
    return 1;
  }
  return story_holds ? 0 : 1;
}

}  // namespace paygent::tools
