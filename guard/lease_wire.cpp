// The holder's side of POST /api/v1/leases (docs/leases.md, "Wire"): the request body, the reply's
// reader, and the holder id (see guard/internal/lease_keeper.h).
#include <cstdio>
#include <string>

#include "absl/random/random.h"
#include "guard/internal/lease_keeper.h"
#include "meter/internal/json_text.h"
#include "meter/internal/str_cat.h"
#include "simdjson.h"

namespace paygent::internal {

std::string new_holder_id() {
  absl::BitGen gen;
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(absl::Uniform<std::uint64_t>(gen)),
                static_cast<unsigned long long>(absl::Uniform<std::uint64_t>(gen)));
  return std::string(buf, 32);
}

std::string encode_lease_request(std::string_view holder, const std::vector<LeaseAsk>& asks) {
  std::string out = str_cat("{\"holder\":", json_quote(holder), ",\"leases\":[");
  for (std::size_t i = 0; i < asks.size(); ++i) {
    const LeaseAsk& a = asks[i];
    str_append(&out, i ? "," : "", "{\"user_id\":", json_quote(a.user_id), ",\"limit\":", json_quote(a.limit),
               ",\"period_start_ns\":", a.period_start_ns, ",\"period_end_ns\":", a.period_end_ns, ",\"cap\":", a.cap,
               ",\"used\":", a.used, ",\"acked\":", a.acked, ",\"want\":", a.want, ",\"need\":", a.need,
               ",\"release\":", a.release ? "true" : "false", "}");
  }
  out += "]}";
  return out;
}

namespace {

absl::Status bad(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(str_cat("lease reply: ", field, ": ", why));
}

// obj[name] as a non-negative int64, or an error naming `where`.`name`.
absl::Status read_count(simdjson::dom::object obj, std::string_view where, const char* name, std::int64_t& out) {
  simdjson::dom::element e;
  if (obj[name].get(e) != simdjson::SUCCESS) return bad(str_cat(where, name), "missing");
  if (e.get_int64().get(out) != simdjson::SUCCESS) return bad(str_cat(where, name), "not an int64");
  if (out < 0) return bad(str_cat(where, name), str_cat("is ", out, ", below 0"));
  return absl::OkStatus();
}

absl::Status read_text(simdjson::dom::object obj, std::string_view where, const char* name, std::string_view want) {
  std::string_view got;
  if (obj[name].get_string().get(got) != simdjson::SUCCESS) return bad(str_cat(where, name), "missing or not a string");
  if (got != want) return bad(str_cat(where, name), str_cat("\"", got, "\" answers a lease asked as \"", want, "\""));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LeaseReply> parse_lease_reply(std::string_view body, const std::vector<LeaseAsk>& asks) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object root;
  if (parser.parse(body.data(), body.size()).get_object().get(root) != simdjson::SUCCESS) {
    return bad("body", "not a JSON object");
  }
  LeaseReply reply;
  if (absl::Status s = read_count(root, "", "ttl_ms", reply.ttl_ms); !s.ok()) return s;
  if (reply.ttl_ms == 0) return bad("ttl_ms", "is 0");
  simdjson::dom::array list;
  if (root["leases"].get_array().get(list) != simdjson::SUCCESS) return bad("leases", "missing or not an array");
  if (list.size() != asks.size()) {
    return bad("leases", str_cat(list.size(), " entries answer ", asks.size(), " asked"));
  }
  reply.leases.resize(asks.size());
  std::size_t i = 0;
  for (simdjson::dom::element item : list) {
    const LeaseAsk& ask = asks[i];
    LeaseAnswer& a = reply.leases[i];
    const std::string where = str_cat("leases[", i, "].");
    ++i;
    simdjson::dom::object obj;
    if (item.get_object().get(obj) != simdjson::SUCCESS) return bad(where, "not an object");
    if (absl::Status s = read_text(obj, where, "user_id", ask.user_id); !s.ok()) return s;
    if (absl::Status s = read_text(obj, where, "limit", ask.limit); !s.ok()) return s;
    std::int64_t start = 0;
    if (absl::Status s = read_count(obj, where, "period_start_ns", start); !s.ok()) return s;
    if (start != ask.period_start_ns) {
      return bad(str_cat(where, "period_start_ns"), str_cat(start, " answers a lease asked for ", ask.period_start_ns));
    }
    for (auto [name, field] : {std::pair{"granted", &a.granted}, std::pair{"ceiling", &a.ceiling},
                               std::pair{"spent", &a.spent}, std::pair{"held_elsewhere", &a.held_elsewhere},
                               std::pair{"remaining", &a.remaining}, std::pair{"holders", &a.holders}}) {
      if (absl::Status s = read_count(obj, where, name, *field); !s.ok()) return s;
    }
    // A ceiling below what the holder has committed would be a grant it already broke.
    if (a.ceiling < ask.used) {
      return bad(str_cat(where, "ceiling"), str_cat(a.ceiling, " is below the used ", ask.used, " it answers"));
    }
  }
  return reply;
}

}  // namespace paygent::internal
