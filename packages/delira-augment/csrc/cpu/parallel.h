// Threads of the CPU executor: a small persistent pool with passive waiting.
//
// Not OpenMP: GNU OpenMP spins at barriers (slow when other processes share the cores, as data
// loader workers do) and hangs in a process forked after it started threads (torch's DataLoader
// forks its workers). This pool sleeps on condition variables and is recreated in a forked child.
// OpenMP, when found, is used only for `#pragma omp simd` vectorisation hints.
#pragma once

#include <cstdint>
#include <functional>

namespace delira::cpu {

// Number of threads the CPU kernels use. Defaults to DELIRA_AUGMENT_NUM_THREADS when set,
// otherwise to the number of cores available to this process.
int get_num_threads();

// Sets the number of threads (n >= 1); throws std::invalid_argument otherwise.
void set_num_threads(int n);

// True when the CPU executor was compiled with OpenMP simd directives (-fopenmp-simd).
bool openmp_enabled();

// Calls fn(begin, end, thread) for consecutive chunks of [0, n) on up to get_num_threads() threads,
// the calling thread included (thread 0); `thread` is below get_num_threads() and identifies per-thread
// scratch space. Chunks are handed out dynamically. Runs serially when n <= chunk, when only one thread
// is set, inside another parallel_for, or while another caller uses the pool. Rethrows the first
// exception thrown by fn after all threads have stopped.
void parallel_for(std::int64_t n, std::int64_t chunk,
                  const std::function<void(std::int64_t begin, std::int64_t end, int thread)>& fn);

}  // namespace delira::cpu
