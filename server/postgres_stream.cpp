// PostgreSQL's streamed read (see make_stream in server/postgres_internal.h): a cursor fetched in
// binary pages, each page asked for before the previous one is read.
#include <libpq-fe.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/internal/endian.h"
#include "meter/internal/str_cat.h"
#include "server/postgres_internal.h"

namespace paygent::server::pg_internal {
namespace {

using ::paygent::internal::str_append;
using ::paygent::internal::str_cat;

class PgStream final : public SqlStatement {
 public:
  PgStream(PGconn* conn, std::string* pending_begin, std::string cursor, std::string sql, int parameters,
           int fetch_rows)
      : conn_(conn),
        pending_begin_(pending_begin),
        declare_(str_cat("DECLARE ", cursor, " NO SCROLL CURSOR FOR ", sql)),
        fetch_(str_cat("FETCH FORWARD ", fetch_rows, " FROM ", cursor)),
        close_(str_cat("CLOSE ", cursor)),
        params_(parameters),
        fetch_rows_(fetch_rows) {}
  ~PgStream() override { PgStream::reset(); }
  PgStream(const PgStream&) = delete;
  PgStream& operator=(const PgStream&) = delete;

  void bind_int64(int index, std::int64_t value) override { params_.bind_int64(index, value, true); }
  void bind_text(int index, std::string_view text) override { params_.bind_text(index, text, true); }
  void bind_blob(int index, std::span<const unsigned char> bytes) override { params_.bind_blob(index, bytes, true); }

  absl::StatusOr<bool> step(std::string_view what) override {
    if (!open_) {
      if (absl::Status s = open(what); !s.ok()) return s;
    }
    if (page_ != nullptr && row_ + 1 < PQntuples(page_.get())) {
      ++row_;
      return true;
    }
    if (!in_flight_) return false;  // the last page was short: no more rows
    if (absl::Status s = next_page(what); !s.ok()) return s;
    row_ = 0;
    return PQntuples(page_.get()) > 0;
  }

  // A NULL has length 0 (and PQgetvalue gives ""), so the length alone tells a binary integer from
  // a NULL: two libpq calls per value instead of three.
  [[nodiscard]] std::int64_t int64(int column) const override {
    const int length = PQgetlength(page_.get(), row_, column);
    const char* p = PQgetvalue(page_.get(), row_, column);
    switch (length) {
      case 8: return static_cast<std::int64_t>(absl::big_endian::Load64(p));
      case 4: return static_cast<std::int32_t>(absl::big_endian::Load32(p));
      case 2: return static_cast<std::int16_t>(absl::big_endian::Load16(p));
      case 1: return *p != 0;  // bool
      default: return 0;       // NULL
    }
  }
  [[nodiscard]] std::string_view text(int column) const override {
    return std::string_view(PQgetvalue(page_.get(), row_, column),
                            static_cast<std::size_t>(PQgetlength(page_.get(), row_, column)));
  }
  [[nodiscard]] std::string blob(int column) const override { return std::string(text(column)); }
  [[nodiscard]] bool is_null(int column) const override { return PQgetisnull(page_.get(), row_, column) != 0; }
  [[nodiscard]] std::int64_t changes() const override { return 0; }

  void reset() override {
    if (in_flight_) drain();
    page_.reset();
    if (open_) {
      // A failed transaction has lost the cursor already; else it is closed, so that the name is
      // free for this statement's next run in the same transaction.
      if (PQtransactionStatus(conn_) == PQTRANS_INTRANS) PQclear(PQexec(conn_, close_.c_str()));
      open_ = false;
    }
    params_.clear();
    row_ = -1;
  }

 private:
  absl::Status open(std::string_view what) {
    if (params_.nul) return absl::InvalidArgumentError(str_cat(what, ": text holding U+0000 cannot be stored"));
    // The cursor is planned without a sort where an index gives the order: a sort reads every row
    // before the first streams. Left to itself on a table without statistics yet (new, before
    // autovacuum's ANALYZE) PostgreSQL 15 took a bitmap scan and a sort of 1M rows spilled to disk
    // (979 ms under EXPLAIN ANALYZE against 545 ms for the index scan). A cursor lives in a
    // transaction: BEGIN, when still to be sent, goes in the same round trip.
    std::string before = std::exchange(*pending_begin_, std::string());
    str_append(&before, before.empty() ? "" : "; ", "SET LOCAL enable_sort = off");
    Result prepared(PQexec(conn_, before.c_str()), &PQclear);
    if (PQresultStatus(prepared.get()) != PGRES_COMMAND_OK) return pg_error(conn_, prepared.get(), before);
    const std::vector<const char*> values = params_.pointers();
    Result declared(PQexecParams(conn_, declare_.c_str(), static_cast<int>(values.size()), params_.types.data(),
                                 values.data(), nullptr, nullptr, 0),
                    &PQclear);
    if (PQresultStatus(declared.get()) != PGRES_COMMAND_OK) return pg_error(conn_, declared.get(), what);
    Result reset(PQexec(conn_, "SET LOCAL enable_sort TO DEFAULT"), &PQclear);  // the rest of the transaction plans as before
    if (PQresultStatus(reset.get()) != PGRES_COMMAND_OK) return pg_error(conn_, reset.get(), "SET LOCAL enable_sort TO DEFAULT");
    open_ = true;
    return send_fetch(what);
  }

  absl::Status send_fetch(std::string_view what) {
    // resultFormat 1: the page in binary (integers as 8 bytes, bytea as its bytes), whatever the
    // cursor was declared as.
    if (PQsendQueryParams(conn_, fetch_.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1) != 1) {
      return pg_error(conn_, nullptr, what);
    }
    in_flight_ = true;
    return absl::OkStatus();
  }

  // The page in flight becomes page_; the next one is asked for at once when this one is full.
  absl::Status next_page(std::string_view what) {
    page_.reset(PQgetResult(conn_));
    while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
    in_flight_ = false;
    if (PQresultStatus(page_.get()) != PGRES_TUPLES_OK) {
      absl::Status error = pg_error(conn_, page_.get(), what);
      page_.reset();
      return error;
    }
    if (!types_checked_) {  // once per statement: every run has the same columns
      for (int c = 0; c < PQnfields(page_.get()); ++c) {
        const Oid type = PQftype(page_.get(), c);
        if (type != kInt8 && type != kInt4 && type != kInt2 && type != kBool && type != kText && type != kVarchar &&
            type != kJson && type != kBytea) {
          page_.reset();
          return absl::InternalError(
              str_cat(what, ": column ", c, " has type oid ", type, ", which a streamed read does not read"));
        }
      }
      types_checked_ = true;
    }
    if (PQntuples(page_.get()) == fetch_rows_) return send_fetch(what);
    return absl::OkStatus();
  }

  // Reads and drops the result of the page in flight (the caller stopped early).
  void drain() {
    while (PGresult* r = PQgetResult(conn_)) PQclear(r);
    in_flight_ = false;
  }

  PGconn* const conn_;
  std::string* const pending_begin_;
  const std::string declare_, fetch_, close_;
  PgParams params_;
  const int fetch_rows_;
  Result page_{nullptr, &PQclear};
  bool types_checked_ = false;  // the columns' types were checked (on a first page)
  int row_ = -1;
  bool open_ = false;       // the cursor is declared
  bool in_flight_ = false;  // a FETCH was sent and its result not read
};

}  // namespace

std::unique_ptr<SqlStatement> make_stream(PGconn* conn, std::string* pending_begin, std::string cursor,
                                          std::string sql, int parameters, int fetch_rows) {
  return std::make_unique<PgStream>(conn, pending_begin, std::move(cursor), std::move(sql), parameters,
                                    fetch_rows);
}

}  // namespace paygent::server::pg_internal
