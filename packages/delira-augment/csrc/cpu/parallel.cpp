#include "parallel.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
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

}  // namespace

int get_num_threads() { return thread_count().load(); }

void set_num_threads(int n) {
  if (n < 1) {
    throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  }
  thread_count().store(n);
}

bool openmp_enabled() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

}  // namespace delira::cpu
