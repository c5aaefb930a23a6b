// JsonWriter: the one writer of the tracking API's JSON replies (server/tracking_api.cpp), so that
// no endpoint builds JSON by hand. It writes members and values in order, puts the commas, quotes
// text (json_quote) and writes money exactly: usd() writes nano-USD as a decimal JSON number of
// USD ("0.007"), never through a double.
//
//   JsonWriter w;
//   w.begin_object().key("id").value("c1").key("cost").usd(7'000'000).key("x").null().end_object();
//   std::string body = std::move(w).str();  // {"id":"c1","cost":0.007,"x":null}
//
// Misuse (a value where a key is due, unbalanced ends) is the caller's bug, not checked.
//
// Thread safety: a JsonWriter is a plain value, used by one thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "meter/internal/json_text.h"
#include "meter/internal/str_cat.h"

namespace paygent::server {

class JsonWriter {
 public:
  JsonWriter& begin_object() {
    separate();
    out_ += '{';
    first_ = true;
    return *this;
  }
  JsonWriter& end_object() {
    out_ += '}';
    first_ = false;
    return *this;
  }
  JsonWriter& key(std::string_view name) {
    separate();
    out_ += ::paygent::internal::json_quote(name);
    out_ += ':';
    after_key_ = true;
    return *this;
  }
  JsonWriter& value(std::string_view text) {
    separate();
    out_ += ::paygent::internal::json_quote(text);
    return *this;
  }
  JsonWriter& value(const char* text) { return value(std::string_view(text)); }
  JsonWriter& value(const std::string& text) { return value(std::string_view(text)); }
  JsonWriter& value(std::int64_t number) {
    separate();
    ::paygent::internal::str_append(&out_, number);
    return *this;
  }
  JsonWriter& value(bool flag) {
    separate();
    out_ += flag ? "true" : "false";
    return *this;
  }
  JsonWriter& null() {
    separate();
    out_ += "null";
    return *this;
  }
  // A JSON text written as it is (e.g. meta tags already normalised by the body reader).
  JsonWriter& raw(std::string_view json) {
    separate();
    out_ += json;
    return *this;
  }
  // `nanos` nano-USD as an exact decimal number of USD: 7000000 -> 0.007, -1 -> -0.000000001.
  JsonWriter& usd(std::int64_t nanos) {
    separate();
    out_ += usd_text(nanos);
    return *this;
  }
  // usd(), or null when unknown.
  JsonWriter& usd(std::optional<std::int64_t> nanos) { return nanos ? usd(*nanos) : null(); }
  JsonWriter& value(std::optional<std::int64_t> number) { return number ? value(*number) : null(); }

  [[nodiscard]] std::string str() && { return std::move(out_); }

  // The decimal text usd() writes.
  [[nodiscard]] static std::string usd_text(std::int64_t nanos) {
    const bool negative = nanos < 0;
    // As unsigned, so that INT64_MIN has a magnitude too.
    const std::uint64_t magnitude =
        negative ? ~static_cast<std::uint64_t>(nanos) + 1 : static_cast<std::uint64_t>(nanos);
    std::string out = negative ? "-" : "";
    ::paygent::internal::str_append(&out, magnitude / 1'000'000'000ULL);
    std::uint64_t fraction = magnitude % 1'000'000'000ULL;
    if (fraction != 0) {
      char digits[10] = "000000000";
      for (int i = 8; i >= 0; --i, fraction /= 10) digits[i] = static_cast<char>('0' + fraction % 10);
      int end = 9;
      while (digits[end - 1] == '0') --end;
      out += '.';
      out.append(digits, static_cast<std::size_t>(end));
    }
    return out;
  }

 private:
  // A comma before a member or an array element that is not the first; none after a key.
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_) out_ += ',';
    first_ = false;
  }

  std::string out_;
  bool first_ = true;
  bool after_key_ = false;
};

}  // namespace paygent::server
