// GroupCommit: the write transactions of concurrent callers on one connection, committed together,
// so that one commit (on SQLite with synchronous=FULL: one fsync of the WAL) serves many callers.
//
// A caller's body runs in a SAVEPOINT of its own inside the group's transaction: a body that fails
// is rolled back to its savepoint alone (nothing of it stays; what the others wrote does) and its
// caller gets its error, the others still commit. A body sees what the bodies before it in the
// group wrote (as it would have, had they committed first): ingest stays idempotent, an event id
// stored by an earlier member counts as a duplicate in a later one. Every caller is answered after
// the commit that holds its writes, or with the commit's error when it fails (then nothing of the
// group is stored). A caller alone runs without a savepoint, as a plain transaction.
//
// Who runs what: the first caller that finds no group running leads. It takes the waiting callers
// (itself among them, oldest first, at most max_group), runs their bodies and the commit, wakes
// them, and goes on with the next group until its own body has run; then the next caller waiting
// leads. Callers that arrive while a group commits wait and form the next group.
//
// Deferred writes (SqlConnection::deferred()): a body run with `defers` may leave sums on the
// connection for the group's end; they are written once, before the COMMIT, for all the group's
// bodies together (one upsert per row, not one per body), and before any body run without
// `defers`, so that such a body reads every row complete. They may end with reads of their own
// (SqlStorage's ingest replies: one read for the usage replies of every batch deferred so far,
// after the sums they read are written). Their failure fails the group.
//
// Thread safety: run() may be called from many threads at once. Bodies run on the leader's thread,
// one at a time. A body must not call run() of the same GroupCommit (it would wait for itself).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/sql.h"

namespace paygent::server {

class GroupCommit {
 public:
  using Body = absl::FunctionRef<absl::Status(SqlConnection&)>;
  // Runs its argument on the one connection, which nothing else uses meanwhile, and returns
  // what it returns.
  using WithConnection = absl::FunctionRef<absl::Status(absl::FunctionRef<absl::Status(SqlConnection&)>)>;

  // `begin` starts a write transaction (e.g. "BEGIN IMMEDIATE"). More members per group (max_group)
  // mean fewer commits but a longer wait for the last member of a large group.
  GroupCommit(std::string begin, std::size_t max_group) : begin_(std::move(begin)), max_group_(max_group) {}
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Runs `body` in a write transaction, alone or with other callers' (see above); commits its
  // writes when it succeeds, rolls them back when it fails. Returns `body`'s error, or the
  // transaction's (BEGIN or COMMIT failed: nothing of `body` is stored). An exception thrown by
  // `body` rolls back its writes and is rethrown to this caller. `with_connection` is used when
  // this call leads a group. Returns after the commit.
  // `defers`: `body` may defer writes on the connection, and sees in its own reads those it and
  // the bodies before it deferred (see above).
  absl::Status run(Body body, WithConnection with_connection, bool defers = false);

  // How many commits have run and how many bodies they held, since construction; how many
  // callers wait for a group now.
  struct Stats {
    std::int64_t commits = 0;
    std::int64_t bodies = 0;
    std::int64_t waiting = 0;
  };
  [[nodiscard]] Stats stats() const;

 private:
  struct Member;
  // Runs `group`'s bodies and the commit on `connection`; sets each member's outcome.
  void commit(SqlConnection& connection, std::span<Member* const> group);

  const std::string begin_;
  const std::size_t max_group_;
  mutable absl::Mutex mu_;
  absl::CondVar done_;  // signalled after each group
  std::deque<Member*> waiting_ ABSL_GUARDED_BY(mu_);
  bool leading_ ABSL_GUARDED_BY(mu_) = false;  // a caller is running groups
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace paygent::server
