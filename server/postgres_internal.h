// What server/postgres_storage.cpp and server/postgres_stream.cpp share: libpq errors as statuses,
// the placeholders' translation and the parameters of a statement. Internal to PostgresStorage.
//
// Lifetime and thread safety: PgParams and the statements made here belong to one connection,
// used by one thread at a time; they keep the PGconn* they are given, which must outlive them.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "server/sql.h"

namespace paygent::server::pg_internal {

// Parameter and column types (pg_type oids).
inline constexpr Oid kBool = 16;
inline constexpr Oid kBytea = 17;
inline constexpr Oid kInt8 = 20;
inline constexpr Oid kInt2 = 21;
inline constexpr Oid kInt4 = 23;
inline constexpr Oid kText = 25;
inline constexpr Oid kJson = 114;
inline constexpr Oid kVarchar = 1043;

using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;

// An error status for a failed libpq call (`result` may be null): Unavailable when the connection
// is gone, the server is shutting down, starting or out of resources, or a lock wait timed out; Aborted for a
// serialization failure or a deadlock (the transaction may be retried), AlreadyExists for a unique
// violation, InvalidArgument for an integer out of range (a total past int64), Internal else.
absl::Status pg_error(PGconn* conn, const PGresult* result, std::string_view what);

// Appends two lowercase hex digits per byte of `bytes` (bytea's hex input, after its "\x").
void append_hex(std::string& out, std::span<const unsigned char> bytes);

// `sql` with SQLite's ?N placeholders as PostgreSQL's $N, and the highest N.
std::pair<std::string, int> translate_placeholders(std::string_view sql);

// The values bound to a statement's parameters, as text (copied at bind), with their types.
struct PgParams {
  explicit PgParams(int parameters) : values(parameters), bound(parameters, false), types(parameters, kText) {}

  // `fix_types`: false once the statement is prepared (its types were fixed then).
  void bind_int64(int index, std::int64_t value, bool fix_types);
  void bind_text(int index, std::string_view text, bool fix_types);  // a U+0000 in it sets `nul`
  void bind_blob(int index, std::span<const unsigned char> bytes, bool fix_types);
  // Each parameter's text, nullptr for one never bound (SQL NULL).
  [[nodiscard]] std::vector<const char*> pointers() const;
  void clear();

  std::vector<std::string> values;
  std::vector<bool> bound;
  std::vector<Oid> types;
  bool nul = false;  // some bound text holds U+0000, which PostgreSQL's text cannot

 private:
  void set(int index, std::string value, Oid type, bool fix_types);
};

// A statement whose rows are read in order and may be many (see SqlConnection::prepare_stream):
// run through a cursor (DECLARE ... NO SCROLL CURSOR), its rows fetched `fetch_rows` at a time in
// binary, the next page asked for as soon as this one has arrived, so that the server reads it
// while the caller works through this one. Memory: at most two pages. `pending_begin`: the
// connection's BEGIN not sent yet (sent first). `cursor`: a name unique on the connection.
// Its integer columns must be int2, int4 or int8, the others text, varchar, json or bytea: step()
// refuses (Internal, naming the column) a result with any other column type.
std::unique_ptr<SqlStatement> make_stream(PGconn* conn, std::string* pending_begin, std::string cursor,
                                          std::string sql, int parameters, int fetch_rows);

}  // namespace paygent::server::pg_internal
