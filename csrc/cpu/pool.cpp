#include "pool.h"

#include <pthread.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace tnattn {
namespace cpu {
namespace detail {

namespace {

class Pool {
 public:
  bool run(int n, void (*task)(void*, int), void* ctx) {
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (!call.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lk(m_);
      while (static_cast<int>(workers_.size()) < n - 1) {
        const int id = static_cast<int>(workers_.size()) + 1;
        // The worker must wait for the generation published below, not read it when it starts.
        const uint64_t seen = generation_;
        workers_.emplace_back([this, id, seen] { work(id, seen); });
        workers_.back().detach();  // the pool lives until process exit
      }
      task_ = task;
      ctx_ = ctx;
      n_ = n;
      remaining_ = n - 1;
      ++generation_;
    }
    start_.notify_all();
    task(ctx, 0);
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [this] { return remaining_ == 0; });
    return true;
  }

 private:
  void work(int id, uint64_t seen) {
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      start_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (id >= n_) continue;
      void (*task)(void*, int) = task_;
      void* ctx = ctx_;
      lk.unlock();
      task(ctx, id);
      lk.lock();
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mutex_;  // one parallel region at a time
  std::mutex m_;
  std::condition_variable start_, done_;
  std::vector<std::thread> workers_;
  void (*task_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  int n_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
};

// Leaked on purpose: detached workers may still wait on its condition variables at exit, and a
// forked child must not touch the parent's (possibly locked) mutexes.
Pool* g_pool = nullptr;
std::once_flag g_atfork_once;

void forget_pool_in_child() { g_pool = nullptr; }

}  // namespace

bool pool_run(int n, void (*task)(void*, int), void* ctx) {
  std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, forget_pool_in_child); });
  // Pool creation races only between Python threads calling kernels concurrently on first use;
  // a local static guards it (re-created after fork through g_pool).
  static std::mutex create_mutex;
  Pool* pool;
  {
    std::lock_guard<std::mutex> lk(create_mutex);
    if (!g_pool) g_pool = new Pool();
    pool = g_pool;
  }
  return pool->run(n, task, ctx);
}

}  // namespace detail
}  // namespace cpu
}  // namespace tnattn
