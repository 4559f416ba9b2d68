#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__) || defined(__APPLE__)
#include <sched.h>
#include <unistd.h>
#endif

namespace delira::cpu {
namespace {

int available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int default_threads() {
  if (const char* env = std::getenv("DELIRA_AUGMENT_NUM_THREADS")) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 4096) return static_cast<int>(n);
    // An unusable value falls back to the default; the Python layer reports it.
  }
  return available_cores();
}

std::atomic<int>& thread_count() {
  static std::atomic<int> count{default_threads()};
  return count;
}

thread_local bool inside_pool = false;

using Fn = std::function<void(std::int64_t, std::int64_t, int)>;

class Pool {
 public:
  ~Pool() = delete;  // lives for the whole process (worker threads are never joined at exit)

  // Runs the job on `threads` threads (caller included). Returns false when the pool is busy.
  bool run(int threads, std::int64_t n, std::int64_t chunk, const Fn& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int>(workers_.size()) < threads - 1) {
        const int index = static_cast<int>(workers_.size()) + 1;
        workers_.emplace_back([this, index] { work(index); });
        workers_.back().detach();
      }
      job_ = &fn;
      n_ = n;
      chunk_ = chunk;
      next_.store(0);
      participants_ = threads - 1;
      pending_ = threads - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    execute(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void execute(int thread) {
    inside_pool = true;
    try {
      for (;;) {
        const std::int64_t begin = next_.fetch_add(chunk_);
        if (begin >= n_) break;
        (*job_)(begin, std::min(begin + chunk_, n_), thread);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      next_.store(n_);  // the others stop taking chunks
    }
    inside_pool = false;
  }

  void work(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen && index <= participants_; });
        seen = generation_;
      }
      execute(index);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        --pending_;
        if (pending_ == 0) done_.notify_one();
      }
    }
  }

  std::mutex busy_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const Fn* job_ = nullptr;
  std::int64_t n_ = 0, chunk_ = 1;
  std::atomic<std::int64_t> next_{0};
  int participants_ = 0;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
  std::exception_ptr error_;
};

// The pool of this process; a forked child (whose copy has no threads) gets a new one.
Pool* pool() {
  static std::mutex mutex;
  static Pool* instance = nullptr;
  static long owner = -1;
  std::lock_guard<std::mutex> lock(mutex);
#if defined(__linux__) || defined(__APPLE__)
  const long pid = static_cast<long>(getpid());
#else
  const long pid = 0;
#endif
  if (instance == nullptr || owner != pid) {
    instance = new Pool();  // the parent's copy is abandoned in a child: its threads do not exist here
    owner = pid;
  }
  return instance;
}

}  // namespace

int get_num_threads() { return thread_count().load(); }

void set_num_threads(int n) {
  if (n < 1) {
    throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  }
  thread_count().store(n);
}

bool openmp_enabled() {
#if defined(DELIRA_OPENMP_SIMD)
  return true;
#else
  return false;
#endif
}

void parallel_for(std::int64_t n, std::int64_t chunk, const Fn& fn) {
  if (n <= 0) return;
  chunk = std::max<std::int64_t>(chunk, 1);
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  const int threads = static_cast<int>(std::min<std::int64_t>(get_num_threads(), chunks));
  if (threads <= 1 || inside_pool || !pool()->run(threads, n, chunk, fn)) {
    for (std::int64_t b = 0; b < n; b += chunk) fn(b, std::min(b + chunk, n), 0);
  }
}

}  // namespace delira::cpu
