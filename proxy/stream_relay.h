// paygent-proxy's view of a provider's server-sent-event stream on its way to the caller: splits
// it into whole events (so that a cut never lands inside one), forwards each verbatim (event:
// lines included), removes the usage-only chunk of an OpenAI chat stream when the proxy asked for
// it, reads usage as it flows (StreamUsageReader) and counts the output text streamed, from which
// an abandoned or cut stream is metered when the provider reported no output usage.
// No I/O and no Boost: tests/proxy/stream_relay_test.cpp drives it directly.
//
// Thread safety: one thread at a time (one StreamRelay per stream).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "paygent/usage.h"

namespace paygent::proxy {

class StreamRelay {
 public:
  // `strip_usage_chunk`: drop an OpenAI chat chunk whose choices are empty and that carries usage
  // (the caller did not ask for stream_options.include_usage; the proxy added it).
  StreamRelay(ApiFormat format, bool strip_usage_chunk);

  // Consumes the next upstream bytes (split anywhere); appends the whole events completed by them
  // to `out`, ready for the caller. A partial event waits for its end.
  void feed(std::string_view bytes, std::string& out);
  // As feed(), in two steps, so that an event reaches the caller before the relay reads it:
  // feed_early() appends only the first whole event, unread, when it may go out unread (any
  // event but one that may be the usage chunk to strip), else does all of feed()'s work; then,
  // once that is sent, drain() reads it (output counted, the cut decided: the cut still falls
  // after the event that passes the limit, so at most one event past it) and appends the other
  // whole events as feed() would. Call drain() after each feed_early(), before the next feed.
  void feed_early(std::string_view bytes, std::string& out);
  void drain(std::string& out);
  // The stream ended: appends what is left (a last event without its blank line) to `out`.
  void finish(std::string& out);

  // Ends the relay once the output streamed passes `tokens` (the output that fits the cap): the
  // event that passes it is forwarded, no later one is, and cut() turns true. So a stream passes
  // the cap by at most one event. Negative: no bound (the default).
  void set_output_limit(std::int64_t tokens) noexcept { output_limit_ = tokens; }
  [[nodiscard]] bool cut() const noexcept { return cut_; }

  // Output tokens streamed so far, estimated from the text of the events forwarded (4 bytes a
  // token, rounded up).
  [[nodiscard]] std::int64_t streamed_output_tokens() const noexcept { return (output_bytes_ + 3) / 4; }
  // Events forwarded so far.
  [[nodiscard]] std::int64_t events() const noexcept { return events_; }

  // The usage the stream reported (see StreamUsageReader::finish), from every byte fed so far,
  // forwarded or not; whole events not yet read (the caller left) are read first, their output
  // counted in streamed_output_tokens(). Call once, at the end.
  absl::StatusOr<ExtractedUsage> usage();

 private:
  // The length of the first whole event in pending_ from `start`, or 0.
  std::size_t next_event(std::size_t start) const;
  // Handles the whole events in pending_ (after an early one, which is read, not appended again).
  void relay_pending(std::string& out);
  // Handles one whole event (its text ends with its blank line); `sent`: it already went out.
  void relay_event(std::string_view event, std::string& out, bool sent = false);

  ApiFormat format_;
  bool strip_usage_chunk_;
  StreamUsageReader reader_;  // fed each event as the relay reads it, the rest by usage()
  std::string pending_;       // bytes received and not yet read (whole events, then a partial one)
  std::size_t early_ = 0;     // the length of the event at pending_'s front sent unread, or 0
  std::int64_t output_bytes_ = 0;
  std::int64_t events_ = 0;
  std::int64_t output_limit_ = -1;
  bool cut_ = false;
};

}  // namespace paygent::proxy
