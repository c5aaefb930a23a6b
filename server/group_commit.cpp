// GroupCommit (see server/group_commit.h).
#include "server/group_commit.h"

#include <algorithm>
#include <exception>
#include <vector>

namespace paygent::server {

struct GroupCommit::Member {
  Body body;
  bool defers = false;  // the body may defer writes (see group_commit.h)
  absl::Status status;
  std::exception_ptr thrown;  // what body threw, rethrown to its caller
  bool done = false;          // the outcome is set (after the commit)
};

absl::Status GroupCommit::run(Body body, WithConnection with_connection, bool defers) {
  Member me{.body = body, .defers = defers};
  {
    absl::MutexLock lock(&mu_);
    waiting_.push_back(&me);
    while (!me.done && leading_) done_.Wait(&mu_);
    if (!me.done) {
      // This caller leads until its own body has run (the waiting are taken oldest first).
      leading_ = true;
      while (!me.done) {
        std::vector<Member*> group;
        while (!waiting_.empty() && group.size() < max_group_) {
          group.push_back(waiting_.front());
          waiting_.pop_front();
        }
        mu_.Unlock();
        absl::Status status;
        try {
          status = with_connection([&](SqlConnection& connection) -> absl::Status {
            commit(connection, group);
            return absl::OkStatus();
          });
        } catch (...) {
          status = absl::InternalError("group commit: the connection could not be used");
        }
        mu_.Lock();
        for (Member* m : group) {
          if (!m->done && m->status.ok()) m->status = status;  // with_connection failed: nothing ran
          m->done = true;
        }
        ++stats_.commits;
        stats_.bodies += static_cast<std::int64_t>(group.size());
        done_.SignalAll();
      }
      leading_ = false;
      done_.SignalAll();  // the next waiting caller leads
    }
  }
  if (me.thrown) std::rethrow_exception(me.thrown);
  return me.status;
}

void GroupCommit::commit(SqlConnection& connection, std::span<Member* const> group) {
  if (group.size() == 1) {
    Member& m = *group.front();
    try {
      m.status = run_in_transaction(connection, begin_, m.body);
    } catch (...) {
      m.thrown = std::current_exception();
      m.status = absl::InternalError("the write threw");
    }
    return;
  }
  auto fail_all = [&](const absl::Status& status) {
    connection.discard_deferred();
    if (connection.in_transaction()) static_cast<void>(connection.exec("ROLLBACK"));
    for (Member* m : group) {
      if (m->status.ok()) m->status = status;
    }
  };
  if (absl::Status s = connection.exec(begin_); !s.ok()) return fail_all(s);
  connection.discard_deferred();  // what an earlier transaction left (it was rolled back)
  // The deferred writes go in the group's transaction, outside every member's savepoint (a
  // member rolled back must not take the others' sums with it).
  auto flush = [&]() -> absl::Status {
    try {
      return connection.flush_deferred();
    } catch (...) {
      return absl::InternalError("group commit: the deferred writes threw");
    }
  };
  for (Member* m : group) {
    if (!m->defers) {
      if (absl::Status s = flush(); !s.ok()) return fail_all(s);
    }
    if (absl::Status s = connection.exec("SAVEPOINT member"); !s.ok()) return fail_all(s);
    try {
      m->status = m->body(connection);
    } catch (...) {
      m->thrown = std::current_exception();
      m->status = absl::InternalError("the write threw");
    }
    if (m->status.ok()) {
      if (absl::Status s = connection.exec("RELEASE member"); !s.ok()) return fail_all(s);
      continue;
    }
    // Only this member's writes go. Some errors (SQLite: I/O, disk full) end the whole
    // transaction: then the members before lost theirs too, and are told.
    absl::Status undone = connection.in_transaction() ? connection.exec("ROLLBACK TO member") : absl::OkStatus();
    if (undone.ok() && connection.in_transaction()) undone = connection.exec("RELEASE member");
    if (!undone.ok() || !connection.in_transaction()) {
      return fail_all(undone.ok() ? absl::UnavailableError(
                                        "the group's transaction ended with a member's failure; nothing was stored")
                                  : undone);
    }
  }
  if (absl::Status s = flush(); !s.ok()) return fail_all(s);
  absl::Status committed = connection.exec("COMMIT");
  if (!committed.ok()) fail_all(committed);
}

GroupCommit::Stats GroupCommit::stats() const {
  absl::MutexLock lock(&mu_);
  Stats stats = stats_;
  stats.waiting = static_cast<std::int64_t>(waiting_.size());
  return stats;
}

}  // namespace paygent::server
