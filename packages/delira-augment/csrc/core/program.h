// Bookkeeping of an intensity program shared by the CPU and CUDA executors: how the op list is cut
// into stages, the random stream of every (sample, op), and the noise counter of every voxel.
//
// Stages: stage 0 holds the pointwise ops before the first op that needs statistics and runs in the
// pass that produces the voxel (the fused resampling pass); every op that needs statistics starts a
// new stage, which holds it (its "head") and the pointwise ops after it up to the next such op. The
// ops of a stage are therefore the contiguous range [begin, end) of the op list, head first.
#pragma once

#include <cstdint>

#include "config.h"
#include "intensity.h"
#include "rng.h"

namespace delira {

// Ops [begin, end) of one stage: `head` is the stats op at `begin` (stages >= 1) or -1 (stage 0);
// the pointwise ops are [first_pointwise, end).
struct StageRange {
  int head;
  int first_pointwise;
  int end;
};

// Number of stages of a program with op kinds kinds[0 .. n_ops) (OpKind or int values).
template <typename Kind>
DELIRA_HD DELIRA_INLINE int stage_count(const Kind* kinds, int n_ops) {
  int stages = 1;
  for (int j = 0; j < n_ops; ++j) stages += needs_stats(static_cast<OpKind>(kinds[j])) ? 1 : 0;
  return stages;
}

// Stage s (0 <= s < stage_count) of the program.
template <typename Kind>
DELIRA_HD DELIRA_INLINE StageRange program_stage(const Kind* kinds, int n_ops, int s) {
  int j = 0;
  int seen = 0;
  while (seen < s && j < n_ops) {
    if (needs_stats(static_cast<OpKind>(kinds[j]))) ++seen;
    ++j;
  }
  StageRange r;
  r.head = s == 0 ? -1 : j - 1;
  r.first_pointwise = j;
  while (j < n_ops && !needs_stats(static_cast<OpKind>(kinds[j]))) ++j;
  r.end = j;
  return r;
}

// Whether the pass that runs stage s must accumulate moments (mean, variance, min, max) of its
// output for stage s + 1: a next stage exists and its head uses moments (PercentileClip needs the
// values themselves instead).
template <typename Kind>
DELIRA_HD DELIRA_INLINE bool stage_collects_moments(const Kind* kinds, int n_ops, int s) {
  if (s + 1 >= stage_count(kinds, n_ops)) return false;
  return static_cast<OpKind>(kinds[program_stage(kinds, n_ops, s + 1).head]) != OpKind::PercentileClip;
}

// Op whose input statistics are the target of op `op` (RestoreStats: `refs[op]`), else `op` itself.
DELIRA_HD DELIRA_INLINE int stats_target_op(const int* refs, int op) { return refs[op] >= 0 ? refs[op] : op; }

// Key of the random stream of op `op` of sample `sample`; seeds[0 .. n_seeds) are the per-sample
// seeds (a program without seeds uses seed 0).
DELIRA_HD DELIRA_INLINE std::uint64_t op_stream_key(const std::uint64_t* seeds, std::int64_t n_seeds,
                                                    std::int64_t sample, int op) {
  const std::uint64_t seed = n_seeds > 0 ? seeds[sample] : 0;
  return stream_key(seed, static_cast<std::uint32_t>(op));
}

// Noise counter of a voxel: channel c, C-order voxel index `voxel` within a sample of `numel`
// voxels per channel. The same on every executor, whatever the launch or thread configuration.
DELIRA_HD DELIRA_INLINE std::uint64_t noise_counter(std::int64_t channel, std::int64_t numel, std::int64_t voxel) {
  return static_cast<std::uint64_t>(channel * numel + voxel);
}

}  // namespace delira
