// Thread pool size of the CPU executor.
#pragma once

namespace delira::cpu {

// Number of threads the CPU kernels use. Defaults to DELIRA_AUGMENT_NUM_THREADS when set,
// otherwise to the number of cores available to this process.
int get_num_threads();

// Sets the number of threads (n >= 1); throws std::invalid_argument otherwise.
void set_num_threads(int n);

// True when the CPU executor was compiled with OpenMP.
bool openmp_enabled();

}  // namespace delira::cpu
