#include "proxy/stream_relay.h"

#include "simdjson.h"

namespace paygent::proxy {
namespace {

namespace dom = simdjson::dom;

dom::parser& thread_parser() {
  thread_local dom::parser parser;
  return parser;
}

// Bytes of the string values under `element` (the generated text, tool arguments, thinking),
// leaving out the short bookkeeping fields.
std::int64_t text_bytes(dom::element element) {
  switch (element.type()) {
    case dom::element_type::STRING: return static_cast<std::int64_t>(std::string_view(element).size());
    case dom::element_type::ARRAY: {
      std::int64_t n = 0;
      for (dom::element child : dom::array(element)) n += text_bytes(child);
      return n;
    }
    case dom::element_type::OBJECT: {
      std::int64_t n = 0;
      for (auto field : dom::object(element)) {
        if (field.key == "type" || field.key == "role" || field.key == "id" || field.key == "finishReason" ||
            field.key == "finish_reason" || field.key == "stop_reason" || field.key == "model" ||
            field.key == "signature" || field.key == "item_id" || field.key == "name") {
          continue;
        }
        n += text_bytes(field.value);
      }
      return n;
    }
    default: return 0;
  }
}

// Where an event's output text is, per API: chat choices[].delta, Responses "*.delta" events'
// delta, Anthropic content_block_delta's delta, Gemini candidates.
std::int64_t output_bytes(ApiFormat format, dom::object data) {
  dom::element part;
  switch (format) {
    case ApiFormat::kOpenAIChat: {
      dom::array choices;
      if (data["choices"].get(choices) != simdjson::SUCCESS) return 0;
      std::int64_t n = 0;
      for (dom::element choice : choices) {
        if (choice["delta"].get(part) == simdjson::SUCCESS) n += text_bytes(part);
      }
      return n;
    }
    case ApiFormat::kOpenAIResponses: {
      std::string_view type;
      if (data["type"].get(type) != simdjson::SUCCESS || !type.ends_with(".delta")) return 0;
      return data["delta"].get(part) == simdjson::SUCCESS ? text_bytes(part) : 0;
    }
    case ApiFormat::kAnthropicMessages: {
      std::string_view type;
      if (data["type"].get(type) != simdjson::SUCCESS || type != "content_block_delta") return 0;
      return data["delta"].get(part) == simdjson::SUCCESS ? text_bytes(part) : 0;
    }
    case ApiFormat::kGeminiGenerate:
      return data["candidates"].get(part) == simdjson::SUCCESS ? text_bytes(part) : 0;
    case ApiFormat::kAuto: return 0;
  }
  return 0;
}

// Whether an OpenAI chat event may be the usage chunk (a "usage" member that is not null). Only
// an event of one data line, without a \u escape (which could spell the key), whose every
// "usage" is followed by null is surely not: it may go out before it is read.
bool may_be_usage_chunk(std::string_view event) {
  const std::size_t data = event.find("data:");
  if (data != std::string_view::npos && event.find("data:", data + 5) != std::string_view::npos) return true;
  if (event.find("\\u") != std::string_view::npos) return true;
  for (std::size_t at = event.find("\"usage\""); at != std::string_view::npos; at = event.find("\"usage\"", at + 1)) {
    std::size_t i = at + 7;
    while (i < event.size() && (event[i] == ' ' || event[i] == '\t' || event[i] == '\r' || event[i] == '\n')) ++i;
    if (i < event.size() && event[i] == ':') {
      ++i;
      while (i < event.size() && (event[i] == ' ' || event[i] == '\t' || event[i] == '\r' || event[i] == '\n')) ++i;
      if (i >= event.size() || event.substr(i, 4) != "null") return true;
    }
  }
  return false;
}

}  // namespace

StreamRelay::StreamRelay(ApiFormat format, bool strip_usage_chunk)
    : format_(format), strip_usage_chunk_(strip_usage_chunk), reader_(format) {}

void StreamRelay::feed(std::string_view bytes, std::string& out) {
  if (cut_) return;
  pending_.append(bytes);
  relay_pending(out);
}

void StreamRelay::feed_early(std::string_view bytes, std::string& out) {
  if (cut_) return;
  pending_.append(bytes);
  if (early_ != 0) return;  // drain() was not called: the next drain() handles it all
  const std::size_t first = next_event(0);
  if (first == 0) return;
  const std::string_view event = std::string_view(pending_).substr(0, first);
  if (strip_usage_chunk_ && format_ == ApiFormat::kOpenAIChat && may_be_usage_chunk(event)) {
    relay_pending(out);  // read before it goes: it may be dropped
    return;
  }
  out.append(event);
  early_ = first;
}

void StreamRelay::drain(std::string& out) {
  if (cut_) return;
  relay_pending(out);
}

std::size_t StreamRelay::next_event(std::size_t start) const {
  // An event ends at a blank line: "\n\n" (or "\r\n\r\n"; "\n\r\n" when mixed).
  for (std::size_t i = pending_.find('\n', start); i != std::string::npos; i = pending_.find('\n', i + 1)) {
    std::size_t next = i + 1;
    if (next < pending_.size() && pending_[next] == '\r') ++next;
    if (next < pending_.size() && pending_[next] == '\n') return next + 1 - start;
  }
  return 0;
}

void StreamRelay::relay_pending(std::string& out) {
  std::size_t start = 0;
  if (early_ != 0) {
    relay_event(std::string_view(pending_).substr(0, early_), out, /*sent=*/true);
    start = early_;
    early_ = 0;
  }
  while (!cut_) {
    const std::size_t length = next_event(start);
    if (length == 0) break;
    relay_event(std::string_view(pending_).substr(start, length), out);
    start += length;
  }
  pending_.erase(0, start);
}

void StreamRelay::finish(std::string& out) {
  if (cut_) return;
  relay_pending(out);
  if (cut_) return;  // what is left past the cut reaches the reader through usage()
  if (!pending_.empty()) relay_event(pending_, out);
  pending_.clear();
}

absl::StatusOr<ExtractedUsage> StreamRelay::usage() {
  if (!cut_) {
    // The caller left (or the upstream broke) with whole events not yet read: an event sent
    // unread, the others of its read. Counted as streamed, as feed() counted them before its
    // write failed.
    std::string ignored;
    relay_pending(ignored);
  }
  reader_.feed(pending_);  // what came and was not read (past a cut, a partial event): its usage counts
  pending_.clear();
  return reader_.finish();
}

void StreamRelay::relay_event(std::string_view event, std::string& out, bool sent) {
  reader_.feed(event);  // the usage chunk included: it is what the call spent
  // The data of the event: its "data:" lines joined with "\n" (a leading space dropped).
  std::string data;
  std::size_t pos = 0;
  while (pos < event.size()) {
    std::size_t eol = event.find('\n', pos);
    if (eol == std::string_view::npos) eol = event.size();
    std::string_view line = event.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with("data:")) {
      line.remove_prefix(5);
      if (line.starts_with(' ')) line.remove_prefix(1);
      if (!data.empty()) data += '\n';
      data.append(line);
    }
    pos = eol + 1;
  }
  dom::object object;
  if (!data.empty() && data != "[DONE]" &&
      thread_parser().parse(data).get_object().get(object) == simdjson::SUCCESS) {
    if (strip_usage_chunk_ && format_ == ApiFormat::kOpenAIChat) {
      dom::array choices;
      dom::element usage;
      if (object["choices"].get(choices) == simdjson::SUCCESS && choices.size() == 0 &&
          object["usage"].get(usage) == simdjson::SUCCESS && !usage.is_null()) {
        return;  // the usage chunk the caller did not ask for
      }
    }
    output_bytes_ += output_bytes(format_, object);
  }
  ++events_;
  if (!sent) out.append(event);
  if (output_limit_ >= 0 && streamed_output_tokens() > output_limit_) cut_ = true;
}

}  // namespace paygent::proxy
