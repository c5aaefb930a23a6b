// StreamUsageReader: usage from a server-sent-event stream (see include/paygent/usage.h).
//
// Lines are split as the SSE specification says (LF, CRLF or a lone CR; a CRLF may be split
// between two chunks). Only "data" and "event" fields are used; comments (":...") and unknown
// lines (e.g. a literal "...") are ignored. A blank line dispatches the event; finish() also
// dispatches a last event that lacks its blank line. Each event's data is scanned like a body
// (usage_extract.cpp); how its usage combines with earlier events depends on the format:
// Anthropic overrides field by field, every other format replaces the whole usage.
//
// A stream whose first non-blank byte is '{' is not SSE but a plain JSON body (e.g. an HTTP 429
// error answered to a streaming request); it is kept and read with extract_usage at finish().
//
// Memory is bounded: a line, an event's data or a plain JSON body longer than kMaxEventBytes is
// dropped (and reported like a malformed event) instead of being buffered.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meter/internal/str_cat.h"
#include "meter/internal/usage_scan.h"
#include "paygent/usage.h"
#include "simdjson.h"

namespace paygent {
namespace {

// The longest line, event data or plain JSON body the reader buffers. OpenAI's
// response.completed repeats the whole output, so an event can be a few MB; 64 MiB is far above
// any real one.
constexpr std::size_t kMaxEventBytes = std::size_t{64} << 20;

// The position of the first CR or LF in `s` at or after `pos` (< s.size()), or s.size().
std::size_t find_line_end(std::string_view s, std::size_t pos) noexcept {
  const char* begin = s.data() + pos;
  const std::size_t n = s.size() - pos;
  const void* lf = std::memchr(begin, '\n', n);
  const std::size_t limit = lf != nullptr ? static_cast<std::size_t>(static_cast<const char*>(lf) - begin) : n;
  const void* cr = std::memchr(begin, '\r', limit);
  return pos + (cr != nullptr ? static_cast<std::size_t>(static_cast<const char*>(cr) - begin) : limit);
}

}  // namespace

struct StreamUsageReader::State {
  enum class Shape : std::uint8_t { kUndecided, kSse, kJson };

  ApiFormat requested = ApiFormat::kAuto;
  ApiFormat format = ApiFormat::kAuto;  // `requested`, or what the events showed
  Shape shape = Shape::kUndecided;
  bool first_line = true;  // a UTF-8 BOM may open the stream
  bool skip_lf = false;    // the last chunk ended in CR: an LF opening the next one belongs to it
  std::string line;        // an incomplete line carried over to the next feed
  std::string event;       // the pending event's "event" field
  std::string data;        // the pending event's data lines, joined by '\n'
  bool has_data = false;
  bool oversized = false;  // the pending event (or the plain JSON body) passed kMaxEventBytes
  std::string raw_json;    // Shape::kJson: the whole body
  std::int64_t events = 0;

  internal::RawUsage usage;
  bool have_usage = false;
  std::string model;
  absl::Status malformed;  // the first malformed event
  bool provider_error = false;
  absl::Status error_status;  // NotFound quoting the first provider error

  explicit State(ApiFormat f) : requested(f), format(f) {}

  // Forgets the stream, keeping the buffers' capacity.
  void reset() {
    format = requested;
    shape = Shape::kUndecided;
    first_line = true;
    skip_lf = false;
    line.clear();
    event.clear();
    data.clear();
    has_data = false;
    oversized = false;
    raw_json.clear();
    events = 0;
    usage = internal::RawUsage();
    have_usage = false;
    model.clear();
    malformed = absl::OkStatus();
    provider_error = false;
    error_status = absl::OkStatus();
  }

  // Splits `chunk` into lines (carrying a partial line over in `line`) and processes each one.
  void feed(std::string_view chunk);
  // Appends `piece` to the partial line, or marks the pending event oversized when it would pass
  // kMaxEventBytes.
  void append_line(std::string_view piece);
  // Processes one complete line (without its end-of-line): a blank line dispatches the pending
  // event; "data" and "event" fields are kept; anything else is ignored.
  void process_line(std::string_view text);
  // Ends the pending event: processes it (or reports it when oversized) and forgets it.
  void dispatch();
  // Scans the pending event's data and merges what it found into the stream's usage, model and
  // provider error. A malformed event is remembered and otherwise ignored.
  void process_event();
  // Keeps `s`, naming the current event, when it is the stream's first malformed event.
  void remember_malformed(const absl::Status& s);
  // Flushes the last line and event, and returns the result finish() promises. Leaves the state
  // to be reset by the caller.
  absl::StatusOr<ExtractedUsage> result();
};

void StreamUsageReader::State::feed(std::string_view chunk) {
  if (shape == Shape::kUndecided) {
    // Blanks before the first byte that matters change nothing, in SSE or in JSON: drop them.
    std::size_t i = 0;
    while (i < chunk.size() && (chunk[i] == ' ' || chunk[i] == '\t' || chunk[i] == '\r' || chunk[i] == '\n')) ++i;
    if (i == chunk.size()) return;
    chunk.remove_prefix(i);
    shape = chunk[0] == '{' ? Shape::kJson : Shape::kSse;
  }
  if (shape == Shape::kJson) {
    if (raw_json.size() + chunk.size() > kMaxEventBytes) {
      oversized = true;
      raw_json.clear();
      raw_json.shrink_to_fit();
    }
    if (!oversized) raw_json.append(chunk);
    return;
  }
  std::size_t pos = 0;
  if (skip_lf && !chunk.empty()) {
    if (chunk[0] == '\n') pos = 1;
    skip_lf = false;
  }
  while (pos < chunk.size()) {
    const std::size_t eol = find_line_end(chunk, pos);
    if (eol == chunk.size()) {
      append_line(chunk.substr(pos));
      return;
    }
    const std::string_view piece = chunk.substr(pos, eol - pos);
    if (line.empty()) {
      process_line(piece);
    } else {
      append_line(piece);
      process_line(line);
      line.clear();
    }
    pos = eol + 1;
    if (chunk[eol] == '\r') {
      if (pos < chunk.size()) {
        if (chunk[pos] == '\n') ++pos;
      } else {
        skip_lf = true;
      }
    }
  }
}

void StreamUsageReader::State::append_line(std::string_view piece) {
  if (line.size() + piece.size() > kMaxEventBytes) {
    // Keep only the start (the field name), so that the rest of the line is never taken for a
    // line of its own; the event it belongs to is dropped at dispatch.
    constexpr std::size_t kKeep = 16;
    oversized = true;
    if (line.size() < kKeep) {
      line.append(piece.substr(0, kKeep - line.size()));
    } else {
      line.resize(kKeep);
    }
    return;
  }
  line.append(piece);
}

void StreamUsageReader::State::process_line(std::string_view text) {
  if (first_line) {
    first_line = false;
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  }
  if (text.empty()) {
    dispatch();
    return;
  }
  if (text[0] == ':') return;  // comment
  const std::size_t colon = text.find(':');
  const std::string_view field = text.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data) data.push_back('\n');
    if (data.size() + value.size() > kMaxEventBytes) oversized = true;
    if (!oversized) data.append(value);
    has_data = true;
  } else if (field == "event") {
    event.assign(value);
  }
  // "id", "retry" and unknown fields do not matter here.
}

void StreamUsageReader::State::dispatch() {
  if (oversized) {
    ++events;
    remember_malformed(
        absl::InvalidArgumentError(internal::str_cat("event data: longer than ", kMaxEventBytes, " bytes; not read")));
  } else if (has_data) {
    process_event();
  }
  data.clear();
  if (data.capacity() > kMaxEventBytes / 16) data.shrink_to_fit();  // do not keep a huge buffer
  has_data = false;
  oversized = false;
  event.clear();
}

void StreamUsageReader::State::remember_malformed(const absl::Status& s) {
  if (!malformed.ok()) return;
  malformed =
      absl::Status(s.code(), internal::str_cat(s.message(), " (stream event ", events, event.empty() ? "" : " \"",
                                               event, event.empty() ? "" : "\"", ")"));
}

void StreamUsageReader::State::process_event() {
  ++events;
  std::string_view text = data;
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  if (text == "[DONE]" || text.empty()) return;

  const std::size_t size = data.size();
  data.append(simdjson::SIMDJSON_PADDING, '\0');
  internal::Scan scan;
  const absl::Status s = internal::scan_padded(data.data(), size, format, "event data", scan);
  data.resize(size);
  if (!s.ok()) {
    remember_malformed(s);
    return;
  }

  if (format == ApiFormat::kAuto) {
    ApiFormat f = internal::detect_format(scan);
    if (f == ApiFormat::kAuto) {
      if (event.rfind("message_", 0) == 0 || event.rfind("content_block_", 0) == 0) {
        f = ApiFormat::kAnthropicMessages;
      } else if (event.rfind("response.", 0) == 0) {
        f = ApiFormat::kOpenAIResponses;
      }
    }
    format = f;
  } else {
    ApiFormat ignored = ApiFormat::kAuto;
    if (const absl::Status mismatch = internal::check_format(scan, format, ignored, "event data"); !mismatch.ok()) {
      remember_malformed(mismatch);
      return;
    }
  }
  if (!scan.model.empty() && scan.model != model) model.assign(scan.model);
  if (scan.usage_present) {
    if (format == ApiFormat::kAnthropicMessages) {
      usage.override_with(scan.usage);  // cumulative, field by field; never summed
    } else {
      usage = scan.usage;  // cumulative snapshots: the last one wins
    }
    have_usage = true;
  } else if ((scan.error_present || scan.type == "error" || event == "error") && !provider_error) {
    provider_error = true;
    error_status = scan.error_present || scan.type == "error"
                       ? internal::no_usage_status(scan, "the stream")
                       : absl::NotFoundError("no usage: provider error (an \"error\" event without details)");
  }
}

absl::StatusOr<ExtractedUsage> StreamUsageReader::State::result() {
  if (shape == Shape::kJson) {
    if (oversized) {
      return absl::InvalidArgumentError(internal::str_cat("body: longer than ", kMaxEventBytes, " bytes; not read"));
    }
    return extract_usage(raw_json, requested);
  }
  if (!line.empty()) {
    process_line(line);
    line.clear();
  }
  dispatch();
  if (have_usage) {
    ApiFormat f = format;
    if (f == ApiFormat::kAuto) {
      internal::Scan only_usage;
      only_usage.usage = usage;
      only_usage.usage_present = true;
      f = internal::detect_format(only_usage);
    }
    ExtractedUsage out;
    const std::string_view path = f == ApiFormat::kGeminiGenerate    ? "usageMetadata"
                                  : f == ApiFormat::kOpenAIResponses ? "response.usage"
                                                                     : "usage";
    if (auto s = internal::normalise(usage, f, path, out.usage, out.reported_total_tokens); !s.ok()) return s;
    out.format = f;
    out.provider = internal::provider_of(f);
    out.model = model;
    return out;
  }
  if (!malformed.ok()) return malformed;
  if (provider_error) return error_status;
  if (events == 0) return absl::NotFoundError("no usage: the stream has no server-sent events");
  return absl::NotFoundError("no usage: no event in the stream carried usage");
}

StreamUsageReader::StreamUsageReader(ApiFormat format) : state_(std::make_unique<State>(format)) {}
StreamUsageReader::~StreamUsageReader() = default;
StreamUsageReader::StreamUsageReader(StreamUsageReader&&) noexcept = default;
StreamUsageReader& StreamUsageReader::operator=(StreamUsageReader&&) noexcept = default;

void StreamUsageReader::feed(std::string_view chunk) {
  if (state_ == nullptr) return;
  try {
    state_->feed(chunk);
  } catch (const std::bad_alloc&) {
    state_->remember_malformed(absl::ResourceExhaustedError("out of memory buffering the stream"));
  }
}

absl::StatusOr<ExtractedUsage> StreamUsageReader::finish() {
  if (state_ == nullptr) return absl::NotFoundError("no usage: this StreamUsageReader was moved from");
  absl::StatusOr<ExtractedUsage> out = absl::ResourceExhaustedError("out of memory reading the stream");
  try {
    out = state_->result();
  } catch (const std::bad_alloc&) {
  }
  state_->reset();
  return out;
}

}  // namespace paygent
