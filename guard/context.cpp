// paygent::Context: the thread-local scope of the current user (see include/paygent/context.h).
#include "paygent/context.h"

#include <memory>
#include <utility>

namespace paygent {
namespace {

// The innermost scope of this thread. Reading it costs a thread-local load; entering a scope
// costs one allocation (Context) or one reference-count increment (Scope).
thread_local Context::Captured t_current;

std::shared_ptr<ContextData> merge(const ContextData* outer, std::string user_id, ContextOptions o) {
  auto data = std::make_shared<ContextData>();
  data->user_id = user_id.empty() && outer != nullptr ? outer->user_id : std::move(user_id);
  data->session_id = o.session_id.empty() && outer != nullptr ? outer->session_id : std::move(o.session_id);
  data->agent_id = o.agent_id.empty() && outer != nullptr ? outer->agent_id : std::move(o.agent_id);
  data->indicator = o.indicator.empty() && outer != nullptr ? outer->indicator : std::move(o.indicator);
  if (outer != nullptr) data->meta_tags = outer->meta_tags;
  for (auto& [key, value] : o.meta_tags) {
    bool replaced = false;
    for (auto& tag : data->meta_tags) {
      if (tag.first == key) {
        tag.second = value;
        replaced = true;
        break;
      }
    }
    if (!replaced) data->meta_tags.emplace_back(std::move(key), std::move(value));
  }
  return data;
}

}  // namespace

Context::Context(std::string user_id, ContextOptions options) {
  // Built before anything changes: if it throws (out of memory), the outer scope stays current.
  Captured inner = merge(t_current.get(), std::move(user_id), std::move(options));
  saved_ = std::move(t_current);
  t_current = std::move(inner);
}

Context::~Context() { t_current = std::move(saved_); }

const ContextData* Context::current() noexcept { return t_current.get(); }

Context::Captured Context::capture() noexcept { return t_current; }

Context::Scope::Scope(Captured captured) noexcept : saved_(std::move(t_current)) {
  t_current = std::move(captured);
}

Context::Scope::~Scope() { t_current = std::move(saved_); }

}  // namespace paygent
