// Explicit SIMD kernels of the CPU executor's fused pass, for the instruction set engine.cpp is
// compiled for (DELIRA_ISA): AVX-512 (blocks of 16 voxels) and AVX2 (blocks of 8); the baseline
// build has none (kHaveRowKernel = false) and runs the portable loops of engine.cpp.
//
// A row of the output is sampled in two steps, one row apart (engine.cpp: sample_rows):
//  - prepare_row, from the row's input coordinates: for the image (float32, contiguous last axis,
//    32-bit element offsets, linear interpolation) the offset of every voxel's lower corner, its
//    fractional parts and which voxels are interior (all corners inside), outside (constant mode:
//    cval) or at the border (listed for the caller's general path, where the border rule picks the
//    taps); for the labels (nearest neighbour) the offset of every voxel's nearest element, which
//    are outside (cval) and which need the border rule (listed). It then prefetches every cache
//    line the row will read, so that by the time the row is sampled its cache misses have been
//    overlapped with the work on the row before.
//  - gather_row: the interpolation of every channel from the prepared offsets, and the labels. The
//    two corners of a voxel that are neighbours along the last axis are adjacent in memory and
//    fetched by one 64-bit gather lane (then split by a permute), which halves the gathered
//    elements; labels of 1 or 2 bytes are gathered as 32-bit words.
// The arithmetic is that of the portable loops, operation by operation (floor, x - floor(x),
// a + f * (b - a) contracted to one FMA, last axis first; floor(x + 0.5) for the nearest index), so
// both give the same values.
//
// Also here: row_coordinates16 (AVX-512: a row's input coordinates, affine part and elastic field)
// and row_sums (the sums of a row that its moments need).
#pragma once

#include <cstdint>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#ifndef DELIRA_ISA
#define DELIRA_ISA isa_base
#endif

namespace delira::cpu::DELIRA_ISA {

// The image part of a row: C channels of float32 input and the row's output per channel.
struct LinearRowArgs {
  const float* const* channel = nullptr;  // per channel: element (0, 0[, 0]) of the input
  float* const* out = nullptr;            // per channel: the row's output values (gather_row)
  int channels = 0;
  std::int32_t stride[3] = {0, 0, 1};     // element strides; the last axis must be 1
  std::int32_t last[3] = {0, 0, 0};       // extent - 2 per axis (lower corner of an interior voxel)
  float upper[3] = {0, 0, 0};             // extent - 1 per axis (constant mode: inside test)
  bool constant = true;                   // border mode constant: outside voxels get cval
  float cval = 0.0f;
};

// The label part of a row: C channels of labels of type L and the row's output per channel.
template <typename L>
struct NearestRowArgs {
  const L* const* channel = nullptr;
  L* const* out = nullptr;
  int channels = 0;
  std::int32_t stride[3] = {0, 0, 0};
  std::int32_t extent[3] = {0, 0, 0};
  float upper[3] = {0, 0, 0};
  bool constant = true;
  L cval = 0;
  // Labels of 1 or 2 bytes are gathered as 32-bit words at their byte offset; a word that would
  // reach past the end of the array (the last element in memory) is read from byte `limit` of the
  // channel instead and shifted. gather_words is false when the array spans fewer than 4 bytes or
  // its byte offsets do not fit in 32 bits (then the labels are copied one by one).
  std::int32_t limit = 0;
  bool gather_words = false;
};

// What prepare_row computes for one row (blocks of 16 voxels with AVX-512, 8 with AVX2), for gather_row and for the
// caller's border voxels.
struct RowPlan {
  std::vector<std::int32_t> base;        // image: offset of the lower corner (0 unless interior)
  std::vector<float> frac[3];            // image: fractional parts per axis
  std::vector<std::uint16_t> interior;   // image: per block, lanes with all corners inside
  std::vector<std::uint16_t> outside;    // image: per block, lanes outside (constant mode: cval)
  std::vector<std::int32_t> border;      // image: voxels for the general path
  std::int32_t n_border = 0;
  std::vector<std::int32_t> label;       // labels: byte (gather_words) or element offset, 0 unless loaded
  std::vector<std::uint16_t> load;       // labels: per block, lanes read from the input
  std::vector<std::uint16_t> label_cval; // labels: per block, lanes outside (constant mode: cval)
  std::vector<std::int32_t> label_border;  // labels: voxels whose nearest index needs the border rule
  std::int32_t n_label_border = 0;

  void resize(std::int64_t len) {
    const std::size_t n = static_cast<std::size_t>(len + 16), blocks = static_cast<std::size_t>(len / 8 + 2);
    base.resize(n);
    for (auto& f : frac) f.resize(n);
    label.resize(n);
    border.resize(n);
    label_border.resize(n);
    interior.resize(blocks);
    outside.resize(blocks);
    load.resize(blocks);
    label_cval.resize(blocks);
  }
};

#if defined(__AVX512F__) || defined(__AVX2__)
constexpr bool kHaveRowKernel = true;

namespace row_detail {

// Prefetch of the cache line holding p into L1. Inline assembly rather than _mm_prefetch: GCC's
// vectoriser drops __builtin_prefetch from the loops it vectorises.
inline void prefetch_line(const void* p) {
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
}

// Appends the positions of the set bits of `bits` (lanes of the block at voxel i) to list.
inline void append_lanes(std::uint32_t bits, std::int32_t i, std::int32_t* list, std::int32_t& n) {
  while (bits) {
    list[n++] = i + __builtin_ctz(bits);
    bits &= bits - 1;
  }
}

// Copies the labels of one block: dst[j] = src[off[j]] for the first `count` lanes, then cval where
// bit j of `cv` is set (off[j] is 0, a valid element, for those lanes).
template <int W, typename L>
inline void copy_label_lanes(const L* __restrict src, const std::int32_t* __restrict off, std::uint32_t cv, int count,
                             L cval, L* __restrict dst) {
  const std::uint32_t all = (1u << count) - 1u;  // count <= 16
  cv &= all;
  if (cv == all) {
    for (int j = 0; j < count; ++j) dst[j] = cval;
    return;
  }
  if (count == W) {
    L v[W];
#pragma GCC unroll 16
    for (int j = 0; j < W; ++j) v[j] = src[off[j]];
#pragma GCC unroll 16
    for (int j = 0; j < W; ++j) dst[j] = v[j];
  } else {
    for (int j = 0; j < count; ++j) dst[j] = src[off[j]];
  }
  while (cv) {
    dst[__builtin_ctz(cv)] = cval;
    cv &= cv - 1;
  }
}

// Prefetches the cache lines of the prepared row: the corner lines of every interior image voxel
// (every channel) and the line of every label voxel read.
template <int NDIM, typename L>
inline void prefetch_plan(const RowPlan& plan, std::int32_t i, int count, const LinearRowArgs* data,
                          std::uint32_t interior, const NearestRowArgs<L>* seg, std::uint32_t load) {
  if (data && interior) {
    const std::int64_t s0 = data->stride[0], s1 = NDIM == 3 ? data->stride[1] : 0;
    for (int c = 0; c < data->channels; ++c) {
      const float* base = data->channel[c];
      // Every voxel: skipping those whose lower corner shares the line of the voxel before was
      // measured slower (their other corner lines often differ, and the branch mispredicts).
      for (int j = 0; j < count; ++j) {
        const float* p = base + plan.base[i + j];
        prefetch_line(p);
        prefetch_line(p + s0);
        if (NDIM == 3) {
          prefetch_line(p + s1);
          prefetch_line(p + s0 + s1);
        }
      }
    }
  }
  if (seg && load) {
    const bool bytes = sizeof(L) <= 2 && seg->gather_words;
    for (int c = 0; c < seg->channels; ++c) {
      const char* base = reinterpret_cast<const char*>(seg->channel[c]);
      for (int j = 0; j < count; ++j) {
        const std::int64_t off = plan.label[i + j];
        prefetch_line(base + (bytes ? off : off * static_cast<std::int64_t>(sizeof(L))));
      }
    }
  }
}

}  // namespace row_detail
#endif

#if defined(__AVX512F__)

// Floor toward -inf of a vector; as exact as the portable truncate-and-correct floor.
inline __m512 floor16(__m512 x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }

inline __mmask16 valid16(std::int32_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

// One block of prepare_row: voxels [i, i + 16) of the row, block index blk.
template <int NDIM, typename L>
inline void prepare_block(const float* const* coord, std::int32_t len, std::int32_t i, std::int32_t blk,
                          const LinearRowArgs* data, const NearestRowArgs<L>* seg, RowPlan& plan, bool prefetch) {
  using row_detail::append_lanes;
  const __m512i zero = _mm512_setzero_si512();
  const std::int32_t left = len - i;
  const int count = left >= 16 ? 16 : left;
  const __mmask16 valid = valid16(left);
  __m512 x[NDIM];
  for (int d = 0; d < NDIM; ++d) x[d] = _mm512_maskz_loadu_ps(valid, coord[d] + i);
  // Constant mode's inside test: every coordinate in [0, extent - 1] (image and labels share the
  // spatial shape when both are prepared in one call).
  __mmask16 geometric_outside = 0;
  {
    const float* upper = data ? data->upper : seg->upper;
    for (int d = 0; d < NDIM; ++d) {
      geometric_outside |= _mm512_cmp_ps_mask(x[d], _mm512_setzero_ps(), _CMP_LT_OQ);
      geometric_outside |= _mm512_cmp_ps_mask(x[d], _mm512_set1_ps(upper[d]), _CMP_GT_OQ);
    }
    geometric_outside &= valid;
  }
  __mmask16 interior = 0, load = 0;
  if (data) {
    interior = valid;
    __m512i base = zero;
    for (int d = 0; d < NDIM; ++d) {
      const __m512 fl = floor16(x[d]);
      const __m512i k = _mm512_cvttps_epi32(fl);  // NaN and huge values: INT_MIN, never interior
      _mm512_storeu_ps(plan.frac[d].data() + i, _mm512_sub_ps(x[d], fl));
      interior &= _mm512_cmpge_epi32_mask(k, zero) & _mm512_cmple_epi32_mask(k, _mm512_set1_epi32(data->last[d]));
      base = _mm512_add_epi32(base, d == NDIM - 1 ? k : _mm512_mullo_epi32(k, _mm512_set1_epi32(data->stride[d])));
    }
    const __mmask16 outside = data->constant ? geometric_outside : static_cast<__mmask16>(0);
    interior &= static_cast<__mmask16>(~outside);  // (an interior voxel is never outside)
    append_lanes(valid & ~interior & ~outside, i, plan.border.data(), plan.n_border);
    _mm512_storeu_si512(plan.base.data() + i, _mm512_maskz_mov_epi32(interior, base));
    plan.interior[blk] = interior;
    plan.outside[blk] = outside;
  }
  if (seg) {
    __mmask16 inside = valid;
    __m512i off = zero;
    for (int d = 0; d < NDIM; ++d) {
      const __m512i k = _mm512_cvttps_epi32(floor16(_mm512_add_ps(x[d], _mm512_set1_ps(0.5f))));
      inside &= _mm512_cmpge_epi32_mask(k, zero) & _mm512_cmplt_epi32_mask(k, _mm512_set1_epi32(seg->extent[d]));
      off = _mm512_add_epi32(off, _mm512_mullo_epi32(k, _mm512_set1_epi32(seg->stride[d])));
    }
    const __mmask16 cv = seg->constant ? geometric_outside : static_cast<__mmask16>(0);
    append_lanes(valid & ~cv & ~inside, i, plan.label_border.data(), plan.n_label_border);
    load = inside & ~cv;
    if (sizeof(L) == 2 && seg->gather_words) off = _mm512_slli_epi32(off, 1);
    _mm512_storeu_si512(plan.label.data() + i, _mm512_maskz_mov_epi32(load, off));
    plan.load[blk] = load;
    plan.label_cval[blk] = cv;
  }
  if (prefetch) row_detail::prefetch_plan<NDIM, L>(plan, i, count, data, interior, seg, load);
}

// The plan of a row with input coordinates `coord` (see the file comment); prefetches its lines.
template <int NDIM, typename L>
void prepare_row(const float* const* coord, std::int32_t len, const LinearRowArgs* data,
                 const NearestRowArgs<L>* seg, RowPlan& plan, bool prefetch) {
  if (data) plan.n_border = 0;
  if (seg) plan.n_label_border = 0;
  for (std::int32_t i = 0, blk = 0; i < len; i += 16, ++blk) {
    prepare_block<NDIM, L>(coord, len, i, blk, data, seg, plan, prefetch);
  }
}

// One block of gather_row: voxels [i, i + 16) of the row, block index blk.
template <int NDIM, typename L>
inline void gather_block(std::int32_t len, std::int32_t i, std::int32_t blk, const LinearRowArgs* data,
                         const NearestRowArgs<L>* seg, const RowPlan& plan) {
  constexpr int W = 16;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  alignas(64) std::int32_t lane[16];
  const std::int32_t left = len - i;
  const int count = left >= 16 ? 16 : left;
  const __mmask16 valid = valid16(left);
  if (data) {
    const __mmask16 interior = plan.interior[blk];
    const __m512 cval = _mm512_set1_ps(data->cval);
    if (interior == 0) {  // outside or border voxels only: nothing to gather
      for (int c = 0; c < data->channels; ++c) _mm512_mask_storeu_ps(data->out[c] + i, valid, cval);
    } else {
      const __m512i base = _mm512_loadu_si512(plan.base.data() + i);
      const __mmask8 lo_mask = static_cast<__mmask8>(interior), hi_mask = static_cast<__mmask8>(interior >> 8);
      const __mmask16 outside = plan.outside[blk];
      __m512 frac[NDIM];
      for (int d = 0; d < NDIM; ++d) frac[d] = _mm512_loadu_ps(plan.frac[d].data() + i);
      for (int c = 0; c < data->channels; ++c) {
        const double* pairs = reinterpret_cast<const double*>(data->channel[c]);  // 64-bit lanes, scale 4
        // Corners (p, p + 1) at offset base + off of the 16 voxels, as two vectors.
        auto load_pair = [&](std::int32_t off, __m512& v0, __m512& v1) {
          const __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(off));
          const __m512d lo =
              _mm512_mask_i32gather_pd(_mm512_setzero_pd(), lo_mask, _mm512_castsi512_si256(idx), pairs, 4);
          const __m512d hi =
              _mm512_mask_i32gather_pd(_mm512_setzero_pd(), hi_mask, _mm512_extracti64x4_epi64(idx, 1), pairs, 4);
          v0 = _mm512_permutex2var_ps(_mm512_castpd_ps(lo), even, _mm512_castpd_ps(hi));
          v1 = _mm512_permutex2var_ps(_mm512_castpd_ps(lo), odd, _mm512_castpd_ps(hi));
        };
        __m512 r;
        if constexpr (NDIM == 3) {
          const std::int32_t s0 = data->stride[0], s1 = data->stride[1];
          __m512 v000, v001, v010, v011, v100, v101, v110, v111;
          load_pair(0, v000, v001);
          load_pair(s1, v010, v011);
          load_pair(s0, v100, v101);
          load_pair(s0 + s1, v110, v111);
          const __m512 fz = frac[0], fy = frac[1], fx = frac[2];
          const __m512 c00 = _mm512_fmadd_ps(fx, _mm512_sub_ps(v001, v000), v000);
          const __m512 c01 = _mm512_fmadd_ps(fx, _mm512_sub_ps(v011, v010), v010);
          const __m512 c10 = _mm512_fmadd_ps(fx, _mm512_sub_ps(v101, v100), v100);
          const __m512 c11 = _mm512_fmadd_ps(fx, _mm512_sub_ps(v111, v110), v110);
          const __m512 c0 = _mm512_fmadd_ps(fy, _mm512_sub_ps(c01, c00), c00);
          const __m512 c1 = _mm512_fmadd_ps(fy, _mm512_sub_ps(c11, c10), c10);
          r = _mm512_fmadd_ps(fz, _mm512_sub_ps(c1, c0), c0);
        } else {
          const std::int32_t s0 = data->stride[0];
          __m512 v00, v01, v10, v11;
          load_pair(0, v00, v01);
          load_pair(s0, v10, v11);
          const __m512 fy = frac[0], fx = frac[1];
          const __m512 c0 = _mm512_fmadd_ps(fx, _mm512_sub_ps(v01, v00), v00);
          const __m512 c1 = _mm512_fmadd_ps(fx, _mm512_sub_ps(v11, v10), v10);
          r = _mm512_fmadd_ps(fy, _mm512_sub_ps(c1, c0), c0);
        }
        r = _mm512_mask_mov_ps(r, outside, cval);
        _mm512_mask_storeu_ps(data->out[c] + i, valid, r);
      }
    }
  }
  if (seg) {
    const __mmask16 load = plan.load[blk];
    const __mmask16 cv = plan.label_cval[blk];
    const __m512i off = _mm512_loadu_si512(plan.label.data() + i);
    if constexpr (sizeof(L) <= 2) {
      if (seg->gather_words) {
        // 32-bit gathers at byte offsets, shifted down where clamped to the array's end.
        const __m512i start = _mm512_min_epi32(off, _mm512_set1_epi32(seg->limit));
        const __m512i bits = _mm512_slli_epi32(_mm512_sub_epi32(off, start), 3);
        const __m512i cval = _mm512_set1_epi32(static_cast<int>(seg->cval));
        for (int c = 0; c < seg->channels; ++c) {
          __m512i v = _mm512_mask_i32gather_epi32(cval, load, start, seg->channel[c], 1);
          v = _mm512_mask_srlv_epi32(v, load, v, bits);
          if constexpr (sizeof(L) == 2) {
            _mm256_mask_storeu_epi16(seg->out[c] + i, valid, _mm512_cvtepi32_epi16(v));
          } else {
            _mm_mask_storeu_epi8(seg->out[c] + i, valid, _mm512_cvtepi32_epi8(v));
          }
        }
        return;
      }
    } else if constexpr (sizeof(L) == 4) {
      const __m512i cval = _mm512_set1_epi32(static_cast<int>(seg->cval));
      for (int c = 0; c < seg->channels; ++c) {
        const __m512i v = _mm512_mask_i32gather_epi32(cval, load, off, seg->channel[c], 4);
        _mm512_mask_storeu_epi32(seg->out[c] + i, valid, v);
      }
      return;
    }
    _mm512_store_si512(lane, off);
    for (int c = 0; c < seg->channels; ++c) {
      row_detail::copy_label_lanes<W>(seg->channel[c], lane, cv, count, seg->cval, seg->out[c] + i);
    }
  }
}

// Samples the prepared row: data->out and seg->out (either may be absent) for every voxel except the
// border ones listed in the plan.
template <int NDIM, typename L>
void gather_row(std::int32_t len, const LinearRowArgs* data, const NearestRowArgs<L>* seg, const RowPlan& plan) {
  for (std::int32_t i = 0, blk = 0; i < len; i += 16, ++blk) gather_block<NDIM, L>(len, i, blk, data, seg, plan);
}


constexpr bool kHaveRowCoordinates = true;

// Coordinates of one output row along axis d (d < ndim): c[d][i] = start[d] + step[d] * i, plus, with
// an elastic field (`field` != nullptr), the displacement sum_j w_j[i] * f_d[first[i] + j] whose
// control values f_d = field + d * 32 (at most 32, zero-padded) are picked per lane by a permute.
// The arithmetic is that of row_step_coordinate and contract_last_axis in engine.cpp's loops
// (the same FMA contraction), so the coordinates are the same to the bit.
inline void row_coordinates16(float* const* c, int ndim, std::int32_t len, const float* start, const float* step,
                              const float* field, const std::int32_t* first, const float* const* w) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (std::int32_t i = 0; i < len; i += 16) {
    const __mmask16 valid = valid16(len - i);
    const __m512 fi = _mm512_add_ps(_mm512_set1_ps(static_cast<float>(i)), iota);  // exact: i < 2^24
    __m512i k0 = _mm512_setzero_si512();
    __m512 w0 = _mm512_setzero_ps(), w1 = w0, w2 = w0, w3 = w0;
    if (field) {
      k0 = _mm512_maskz_loadu_epi32(valid, first + i);
      w0 = _mm512_maskz_loadu_ps(valid, w[0] + i);
      w1 = _mm512_maskz_loadu_ps(valid, w[1] + i);
      w2 = _mm512_maskz_loadu_ps(valid, w[2] + i);
      w3 = _mm512_maskz_loadu_ps(valid, w[3] + i);
    }
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i k1 = _mm512_add_epi32(k0, one), k2 = _mm512_add_epi32(k1, one), k3 = _mm512_add_epi32(k2, one);
    for (int d = 0; d < ndim; ++d) {
      __m512 x = _mm512_fmadd_ps(_mm512_set1_ps(step[d]), fi, _mm512_set1_ps(start[d]));
      if (field) {
        const __m512 lo = _mm512_loadu_ps(field + d * 32), hi = _mm512_loadu_ps(field + d * 32 + 16);
        const __m512 f0 = _mm512_permutex2var_ps(lo, k0, hi), f1 = _mm512_permutex2var_ps(lo, k1, hi);
        const __m512 f2 = _mm512_permutex2var_ps(lo, k2, hi), f3 = _mm512_permutex2var_ps(lo, k3, hi);
        __m512 e = _mm512_mul_ps(w1, f1);
        e = _mm512_fmadd_ps(w0, f0, e);
        e = _mm512_fmadd_ps(w2, f2, e);
        e = _mm512_fmadd_ps(w3, f3, e);
        x = _mm512_add_ps(x, e);
      }
      _mm512_mask_storeu_ps(c[d] + i, valid, x);
    }
  }
}

// Sums of a row of float values for its moments: s1 = sum(v - shift), s2 = sum((v - shift)^2) in
// double with shift = v[0], and min / max (stats.h: RowAccumulator).
inline void row_sums(const float* v, std::int64_t len, double* s1, double* s2, float* lo, float* hi) {
  const __m512d shift = _mm512_set1_pd(static_cast<double>(v[0]));
  __m512d a1 = _mm512_setzero_pd(), b1 = _mm512_setzero_pd(), a2 = _mm512_setzero_pd(), b2 = _mm512_setzero_pd();
  __m512 mn = _mm512_set1_ps(v[0]), mx = mn;
  for (std::int64_t i = 0; i < len; i += 16) {
    const std::int64_t left = len - i;
    const __mmask16 valid = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
    const __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(v[0]), valid, v + i);  // padding: d = 0
    const __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)), shift);
    const __m256 upper = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
    const __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(upper), shift);
    a1 = _mm512_add_pd(a1, d0);
    b1 = _mm512_add_pd(b1, d1);
    a2 = _mm512_fmadd_pd(d0, d0, a2);
    b2 = _mm512_fmadd_pd(d1, d1, b2);
    mn = _mm512_min_ps(mn, x);
    mx = _mm512_max_ps(mx, x);
  }
  *s1 = _mm512_reduce_add_pd(_mm512_add_pd(a1, b1));
  *s2 = _mm512_reduce_add_pd(_mm512_add_pd(a2, b2));
  *lo = _mm512_reduce_min_ps(mn);
  *hi = _mm512_reduce_max_ps(mx);
}

#elif defined(__AVX2__)
constexpr bool kHaveRowCoordinates = false;

inline __m256 floor8(__m256 x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }

inline __m256i valid8(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Lane mask (all ones / zero per 32-bit lane) from the bits of a block.
inline __m256i lanes8(std::uint32_t bits) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit);
}

// One block of prepare_row: voxels [i, i + 8) of the row, block index blk.
template <int NDIM, typename L>
inline void prepare_block(const float* const* coord, std::int32_t len, std::int32_t i, std::int32_t blk,
                          const LinearRowArgs* data, const NearestRowArgs<L>* seg, RowPlan& plan, bool prefetch) {
  using row_detail::append_lanes;
  const __m256i zero = _mm256_setzero_si256();
  const __m256i minus_one = _mm256_set1_epi32(-1);
  const std::int32_t left = len - i;
  const int count = left >= 8 ? 8 : left;
  const std::uint32_t valid = left >= 8 ? 0xffu : (1u << left) - 1u;
  const __m256i valid_v = valid8(count);
  __m256 x[NDIM];
  for (int d = 0; d < NDIM; ++d) x[d] = _mm256_maskload_ps(coord[d] + i, valid_v);
  __m256 outside_v = _mm256_setzero_ps();
  {
    const float* upper = data ? data->upper : seg->upper;
    for (int d = 0; d < NDIM; ++d) {
      outside_v = _mm256_or_ps(outside_v, _mm256_cmp_ps(x[d], _mm256_setzero_ps(), _CMP_LT_OQ));
      outside_v = _mm256_or_ps(outside_v, _mm256_cmp_ps(x[d], _mm256_set1_ps(upper[d]), _CMP_GT_OQ));
    }
  }
  const std::uint32_t geometric_outside = static_cast<std::uint32_t>(_mm256_movemask_ps(outside_v)) & valid;
  std::uint32_t interior_bits = 0, load_bits = 0;
  if (data) {
    __m256i interior = valid_v;
    __m256i base = zero;
    for (int d = 0; d < NDIM; ++d) {
      const __m256 fl = floor8(x[d]);
      const __m256i k = _mm256_cvttps_epi32(fl);
      _mm256_storeu_ps(plan.frac[d].data() + i, _mm256_sub_ps(x[d], fl));
      const __m256i ge = _mm256_cmpgt_epi32(k, minus_one);
      const __m256i le = _mm256_cmpgt_epi32(_mm256_set1_epi32(data->last[d] + 1), k);
      interior = _mm256_and_si256(interior, _mm256_and_si256(ge, le));
      base = _mm256_add_epi32(base, d == NDIM - 1 ? k : _mm256_mullo_epi32(k, _mm256_set1_epi32(data->stride[d])));
    }
    const std::uint32_t outside = data->constant ? geometric_outside : 0u;
    interior_bits = static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(interior))) & ~outside;
    append_lanes(valid & ~interior_bits & ~outside, i, plan.border.data(), plan.n_border);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plan.base.data() + i),
                        _mm256_and_si256(base, lanes8(interior_bits)));
    plan.interior[blk] = static_cast<std::uint16_t>(interior_bits);
    plan.outside[blk] = static_cast<std::uint16_t>(outside);
  }
  if (seg) {
    __m256i inside = valid_v;
    __m256i off = zero;
    for (int d = 0; d < NDIM; ++d) {
      const __m256i k = _mm256_cvttps_epi32(floor8(_mm256_add_ps(x[d], _mm256_set1_ps(0.5f))));
      const __m256i ge = _mm256_cmpgt_epi32(k, minus_one);
      const __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(seg->extent[d]), k);
      inside = _mm256_and_si256(inside, _mm256_and_si256(ge, lt));
      off = _mm256_add_epi32(off, _mm256_mullo_epi32(k, _mm256_set1_epi32(seg->stride[d])));
    }
    const std::uint32_t cv = seg->constant ? geometric_outside : 0u;
    const std::uint32_t inside_bits = static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(inside)));
    append_lanes(valid & ~cv & ~inside_bits, i, plan.label_border.data(), plan.n_label_border);
    load_bits = inside_bits & ~cv;
    if (sizeof(L) == 2 && seg->gather_words) off = _mm256_slli_epi32(off, 1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(plan.label.data() + i), _mm256_and_si256(off, lanes8(load_bits)));
    plan.load[blk] = static_cast<std::uint16_t>(load_bits);
    plan.label_cval[blk] = static_cast<std::uint16_t>(cv);
  }
  if (prefetch) row_detail::prefetch_plan<NDIM, L>(plan, i, count, data, interior_bits, seg, load_bits);
}

// The plan of a row with input coordinates `coord` (see the file comment); prefetches its lines.
template <int NDIM, typename L>
void prepare_row(const float* const* coord, std::int32_t len, const LinearRowArgs* data,
                 const NearestRowArgs<L>* seg, RowPlan& plan, bool prefetch) {
  if (data) plan.n_border = 0;
  if (seg) plan.n_label_border = 0;
  for (std::int32_t i = 0, blk = 0; i < len; i += 8, ++blk) {
    prepare_block<NDIM, L>(coord, len, i, blk, data, seg, plan, prefetch);
  }
}

// One block of gather_row: voxels [i, i + 8) of the row, block index blk.
template <int NDIM, typename L>
inline void gather_block(std::int32_t len, std::int32_t i, std::int32_t blk, const LinearRowArgs* data,
                         const NearestRowArgs<L>* seg, const RowPlan& plan) {
  constexpr int W = 8;
  const std::int32_t left = len - i;
  const int count = left >= 8 ? 8 : left;
  const __m256i valid_v = valid8(count);
  if (data) {
    const std::uint32_t interior_bits = plan.interior[blk];
    const __m256 cval = _mm256_set1_ps(data->cval);
    if (interior_bits == 0) {  // outside or border voxels only: nothing to gather
      for (int c = 0; c < data->channels; ++c) _mm256_maskstore_ps(data->out[c] + i, valid_v, cval);
    } else {
      const __m256i interior = lanes8(interior_bits);
      const __m256i base = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(plan.base.data() + i));
      const __m256d lo_mask = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(interior)));
      const __m256d hi_mask = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(interior, 1)));
      const std::uint32_t outside = plan.outside[blk];
      const __m256 outside_v = _mm256_castsi256_ps(lanes8(outside));
      __m256 frac[NDIM];
      for (int d = 0; d < NDIM; ++d) frac[d] = _mm256_loadu_ps(plan.frac[d].data() + i);
      for (int c = 0; c < data->channels; ++c) {
        const double* pairs = reinterpret_cast<const double*>(data->channel[c]);
        auto load_pair = [&](std::int32_t off, __m256& v0, __m256& v1) {
          const __m256i idx = _mm256_add_epi32(base, _mm256_set1_epi32(off));
          const __m256d lo =
              _mm256_mask_i32gather_pd(_mm256_setzero_pd(), pairs, _mm256_castsi256_si128(idx), lo_mask, 4);
          const __m256d hi =
              _mm256_mask_i32gather_pd(_mm256_setzero_pd(), pairs, _mm256_extracti128_si256(idx, 1), hi_mask, 4);
          const __m256 e = _mm256_shuffle_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi), _MM_SHUFFLE(2, 0, 2, 0));
          const __m256 o = _mm256_shuffle_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi), _MM_SHUFFLE(3, 1, 3, 1));
          v0 = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
          v1 = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
        };
        __m256 r;
        if constexpr (NDIM == 3) {
          const std::int32_t s0 = data->stride[0], s1 = data->stride[1];
          __m256 v000, v001, v010, v011, v100, v101, v110, v111;
          load_pair(0, v000, v001);
          load_pair(s1, v010, v011);
          load_pair(s0, v100, v101);
          load_pair(s0 + s1, v110, v111);
          const __m256 fz = frac[0], fy = frac[1], fx = frac[2];
          const __m256 c00 = _mm256_fmadd_ps(fx, _mm256_sub_ps(v001, v000), v000);
          const __m256 c01 = _mm256_fmadd_ps(fx, _mm256_sub_ps(v011, v010), v010);
          const __m256 c10 = _mm256_fmadd_ps(fx, _mm256_sub_ps(v101, v100), v100);
          const __m256 c11 = _mm256_fmadd_ps(fx, _mm256_sub_ps(v111, v110), v110);
          const __m256 c0 = _mm256_fmadd_ps(fy, _mm256_sub_ps(c01, c00), c00);
          const __m256 c1 = _mm256_fmadd_ps(fy, _mm256_sub_ps(c11, c10), c10);
          r = _mm256_fmadd_ps(fz, _mm256_sub_ps(c1, c0), c0);
        } else {
          const std::int32_t s0 = data->stride[0];
          __m256 v00, v01, v10, v11;
          load_pair(0, v00, v01);
          load_pair(s0, v10, v11);
          const __m256 fy = frac[0], fx = frac[1];
          const __m256 c0 = _mm256_fmadd_ps(fx, _mm256_sub_ps(v01, v00), v00);
          const __m256 c1 = _mm256_fmadd_ps(fx, _mm256_sub_ps(v11, v10), v10);
          r = _mm256_fmadd_ps(fy, _mm256_sub_ps(c1, c0), c0);
        }
        if (outside) r = _mm256_blendv_ps(r, cval, outside_v);
        _mm256_maskstore_ps(data->out[c] + i, valid_v, r);
      }
    }
  }
  if (seg) {
    const std::uint32_t cv = plan.label_cval[blk];
    const std::int32_t* off = plan.label.data() + i;
    if constexpr (sizeof(L) <= 2) {
      if (seg->gather_words) {
        const std::uint32_t load = plan.load[blk];
        const __m256i load_v = lanes8(load);
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(off));
        const __m256i start = _mm256_min_epi32(bytes, _mm256_set1_epi32(seg->limit));
        const __m256i bits = _mm256_slli_epi32(_mm256_sub_epi32(bytes, start), 3);
        const __m256i cval = _mm256_set1_epi32(static_cast<int>(seg->cval));
        alignas(32) std::int32_t word[8];
        for (int c = 0; c < seg->channels; ++c) {
          const int* words = reinterpret_cast<const int*>(seg->channel[c]);
          __m256i v = _mm256_mask_i32gather_epi32(cval, words, start, load_v, 1);
          v = _mm256_blendv_epi8(v, _mm256_srlv_epi32(v, bits), load_v);
          _mm256_store_si256(reinterpret_cast<__m256i*>(word), v);
          L* dst = seg->out[c] + i;
          for (int j = 0; j < count; ++j) dst[j] = static_cast<L>(word[j]);
        }
        return;
      }
    }
    for (int c = 0; c < seg->channels; ++c) {
      row_detail::copy_label_lanes<W>(seg->channel[c], off, cv, count, seg->cval, seg->out[c] + i);
    }
  }
}

// Samples the prepared row: data->out and seg->out (either may be absent) for every voxel except the
// border ones listed in the plan.
template <int NDIM, typename L>
void gather_row(std::int32_t len, const LinearRowArgs* data, const NearestRowArgs<L>* seg, const RowPlan& plan) {
  for (std::int32_t i = 0, blk = 0; i < len; i += 8, ++blk) gather_block<NDIM, L>(len, i, blk, data, seg, plan);
}


inline void row_sums(const float* v, std::int64_t len, double* s1, double* s2, float* lo, float* hi) {
  const __m256d shift = _mm256_set1_pd(static_cast<double>(v[0]));
  __m256d a1 = _mm256_setzero_pd(), b1 = _mm256_setzero_pd(), a2 = _mm256_setzero_pd(), b2 = _mm256_setzero_pd();
  __m256 mn = _mm256_set1_ps(v[0]), mx = mn;
  std::int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256 x = _mm256_loadu_ps(v + i);
    const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), shift);
    const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), shift);
    a1 = _mm256_add_pd(a1, d0);
    b1 = _mm256_add_pd(b1, d1);
    a2 = _mm256_fmadd_pd(d0, d0, a2);
    b2 = _mm256_fmadd_pd(d1, d1, b2);
    mn = _mm256_min_ps(mn, x);
    mx = _mm256_max_ps(mx, x);
  }
  alignas(32) double t1[4], t2[4];
  alignas(32) float tl[8], th[8];
  _mm256_store_pd(t1, _mm256_add_pd(a1, b1));
  _mm256_store_pd(t2, _mm256_add_pd(a2, b2));
  _mm256_store_ps(tl, mn);
  _mm256_store_ps(th, mx);
  double r1 = (t1[0] + t1[1]) + (t1[2] + t1[3]), r2 = (t2[0] + t2[1]) + (t2[2] + t2[3]);
  float l = tl[0], h = th[0];
  for (int j = 1; j < 8; ++j) {
    l = tl[j] < l ? tl[j] : l;
    h = th[j] > h ? th[j] : h;
  }
  for (; i < len; ++i) {
    const double d = static_cast<double>(v[i]) - static_cast<double>(v[0]);
    r1 += d;
    r2 += d * d;
    l = v[i] < l ? v[i] : l;
    h = v[i] > h ? v[i] : h;
  }
  *s1 = r1;
  *s2 = r2;
  *lo = l;
  *hi = h;
}

#else
constexpr bool kHaveRowKernel = false;
constexpr bool kHaveRowCoordinates = false;

template <int NDIM, typename L>
void prepare_row(const float* const*, std::int32_t, const LinearRowArgs*, const NearestRowArgs<L>*, RowPlan&, bool) {}

template <int NDIM, typename L>
void gather_row(std::int32_t, const LinearRowArgs*, const NearestRowArgs<L>*, const RowPlan&) {}


inline void row_sums(const float*, std::int64_t, double*, double*, float*, float*) {}
#endif

#if !defined(__AVX512F__)
inline void row_coordinates16(float* const*, int, std::int32_t, const float*, const float*, const float*,
                              const std::int32_t*, const float* const*) {}
#endif

}  // namespace delira::cpu::DELIRA_ISA
