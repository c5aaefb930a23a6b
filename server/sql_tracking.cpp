// SqlStorage's records of the tracking API (docs/tracking.md, "HTTP"; see server/sql_storage.h):
// customers (a customer is a guardrail user: its row in users, and its name and email in
// customers) and voice sessions (voice_sessions, closed by the id of the billing event that
// closes them), and the Idempotency-Keys used with the hash of their body. The events themselves go through ingest, as every other event does.
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "meter/internal/str_cat.h"
#include "server/sql_storage.h"
#include "server/storage_logic.h"

namespace paygent::server {
namespace {

using ::paygent::internal::str_cat;

std::int64_t now_ns() { return absl::ToUnixNanos(absl::Now()); }

// Reads the session row of a SELECT agent_id, customer_id, meta_tags, closing_event_id.
VoiceSession session_of(Query& row, std::string_view session_id) {
  VoiceSession s;
  s.session_id = std::string(session_id);
  s.agent_id = std::string(row.text(0));
  s.customer_id = std::string(row.text(1));
  s.meta_tags_json = std::string(row.text(2));
  s.closing_event_id = std::string(row.text(3));
  s.closed = !s.closing_event_id.empty();
  return s;
}

constexpr std::string_view kSelectSession =
    "SELECT agent_id, customer_id, meta_tags, closing_event_id FROM voice_sessions WHERE product = ?1 AND "
    "session_id = ?2";

}  // namespace

absl::StatusOr<CustomerRecord> SqlStorage::create_or_get_customer(std::string_view product_id,
                                                                  std::string_view external_id, std::string_view name,
                                                                  std::string_view email) {
  CustomerRecord out;
  absl::Status status = transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    out = CustomerRecord{};
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    const std::int64_t now = now_ns();
    absl::StatusOr<Query> user = prepare(
        connection, "INSERT INTO users(product, user_id, name, created_ns) VALUES(?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING");
    if (!user.ok()) return user.status();
    user->bind(1, *product).bind(2, external_id).bind(3, name).bind(4, now);
    if (absl::Status s = user->run("create the customer's user"); !s.ok()) return s;
    absl::StatusOr<Query> insert = prepare(connection,
                                           "INSERT INTO customers(product, user_id, name, email, created_ns) "
                                           "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING");
    if (!insert.ok()) return insert.status();
    insert->bind(1, *product).bind(2, external_id).bind(3, name).bind(4, email).bind(5, now);
    if (absl::Status s = insert->run("create customer"); !s.ok()) return s;
    out.created = insert->changes() > 0;
    absl::StatusOr<Query> select =
        prepare(connection, "SELECT name, email FROM customers WHERE product = ?1 AND user_id = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, *product).bind(2, external_id);
    absl::StatusOr<bool> row = select->step("read customer");
    if (!row.ok()) return row.status();
    if (!*row) return absl::InternalError("the customer just written cannot be read");
    out.id = std::string(external_id);
    out.name = std::string(select->text(0));
    out.email = std::string(select->text(1));
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<bool> SqlStorage::open_voice_session(std::string_view product_id, const VoiceSession& session) {
  bool created = false;
  absl::Status status = transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<Query> insert = prepare(
        connection,
        "INSERT INTO voice_sessions(product, session_id, agent_id, customer_id, meta_tags, closing_event_id, created_ns) "
        "VALUES(?1, ?2, ?3, ?4, ?5, '', ?6) ON CONFLICT DO NOTHING");
    if (!insert.ok()) return insert.status();
    insert->bind(1, *product)
        .bind(2, std::string_view(session.session_id))
        .bind(3, std::string_view(session.agent_id))
        .bind(4, std::string_view(session.customer_id))
        .bind(5, std::string_view(session.meta_tags_json))
        .bind(6, now_ns());
    if (absl::Status s = insert->run("open voice session"); !s.ok()) return s;
    created = insert->changes() > 0;
    if (created) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(connection, kSelectSession);
    if (!select.ok()) return select.status();
    select->bind(1, *product).bind(2, std::string_view(session.session_id));
    absl::StatusOr<bool> row = select->step("read voice session");
    if (!row.ok()) return row.status();
    if (!*row) return absl::InternalError("the voice session cannot be read");
    const VoiceSession stored = session_of(*select, session.session_id);
    if (stored.agent_id != session.agent_id || stored.customer_id != session.customer_id ||
        stored.meta_tags_json != session.meta_tags_json) {
      return absl::AlreadyExistsError(
          str_cat("sessionId: voice session \"", session.session_id, "\" already exists with another agent, customer or meta tags"));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return created;
}

absl::StatusOr<VoiceSession> SqlStorage::find_voice_session(std::string_view product_id, std::string_view session_id) {
  VoiceSession out;
  absl::Status status = with_connection(Access::kRead, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::optional<std::int64_t>> product = product_key(connection, product_id);
    if (!product.ok()) return product.status();
    if (!product->has_value()) return absl::NotFoundError(str_cat("sessionId: no voice session \"", session_id, "\""));
    absl::StatusOr<Query> select = prepare(connection, kSelectSession);
    if (!select.ok()) return select.status();
    select->bind(1, **product).bind(2, session_id);
    absl::StatusOr<bool> row = select->step("read voice session");
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError(str_cat("sessionId: no voice session \"", session_id, "\""));
    out = session_of(*select, session_id);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<IngestResult> SqlStorage::close_voice_session(std::string_view product_id,
                                                             std::string_view session_id, const EventRecord& billing) {
  auto close_session = [&](SqlConnection& connection, std::int64_t product) -> absl::Status {
    // One statement decides: of two concurrent closes, the second finds closing_event_id set.
    absl::StatusOr<Query> update = prepare(connection,
                                           "UPDATE voice_sessions SET closing_event_id = ?3 WHERE product = ?1 AND "
                                           "session_id = ?2 AND closing_event_id = ''");
    if (!update.ok()) return update.status();
    update->bind(1, product).bind(2, session_id).bind(3, billing.id);
    if (absl::Status s = update->run("close voice session"); !s.ok()) return s;
    if (update->changes() > 0) return absl::OkStatus();
    absl::StatusOr<Query> select = prepare(connection, kSelectSession);
    if (!select.ok()) return select.status();
    select->bind(1, product).bind(2, session_id);
    absl::StatusOr<bool> row = select->step("read voice session");
    if (!row.ok()) return row.status();
    if (!*row) return absl::NotFoundError(str_cat("sessionId: no voice session \"", session_id, "\""));
    if (select->text(3) == billing.id) return absl::OkStatus();  // the same indicator, retried
    return absl::FailedPreconditionError(
        str_cat("sessionId: voice session \"", session_id, "\" is closed (its indicator was already set)"));
  };
  const InTransaction close = close_session;  // a reference to the lambda above, which outlives it
  return ingest_impl(product_id, std::span<const EventRecord>(&billing, 1), nullptr, {}, nullptr, &close);
}

absl::Status SqlStorage::claim_idempotency_key(std::string_view product_id, std::string_view key_sha256,
                                               std::string_view body_sha256) {
  return transaction(Access::kWrite, true, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<Query> insert = prepare(connection,
                                           "INSERT INTO idempotency_keys(product, key_sha256, body_sha256, created_ns) "
                                           "VALUES(?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING");
    if (!insert.ok()) return insert.status();
    insert->bind(1, *product).bind(2, key_sha256).bind(3, body_sha256).bind(4, now_ns());
    if (absl::Status s = insert->run("claim idempotency key"); !s.ok()) return s;
    if (insert->changes() > 0) return absl::OkStatus();
    absl::StatusOr<Query> select =
        prepare(connection, "SELECT body_sha256 FROM idempotency_keys WHERE product = ?1 AND key_sha256 = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, *product).bind(2, key_sha256);
    absl::StatusOr<bool> row = select->step("read idempotency key");
    if (!row.ok()) return row.status();
    if (*row && select->text_view(0) == body_sha256) return absl::OkStatus();
    return absl::FailedPreconditionError("Idempotency-Key: already used with another body");
  });
}

absl::StatusOr<bool> SqlStorage::has_event(std::string_view product_id, std::string_view event_id) {
  storage_internal::EventId id;
  if (!storage_internal::decode_event_id(event_id, id)) {
    return absl::InvalidArgumentError("event id: must be 32 lowercase hex digits");
  }
  bool found = false;
  absl::Status status = transaction(Access::kRead, false, [&](SqlConnection& connection) -> absl::Status {
    absl::StatusOr<std::int64_t> product = existing_product_key(connection, product_id);
    if (!product.ok()) return product.status();
    absl::StatusOr<Query> select = prepare(connection, "SELECT 1 FROM events WHERE product = ?1 AND id = ?2");
    if (!select.ok()) return select.status();
    select->bind(1, *product).bind_blob(2, id);
    absl::StatusOr<bool> row = select->step("look an event up");
    if (!row.ok()) return row.status();
    found = *row;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return found;
}

}  // namespace paygent::server
