// C++ tests of the kernel core and the CPU engine against hand-computed values and the C library.
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "core/boundary.h"
#include "core/bspline.h"
#include "core/fastmath.h"
#include "core/intensity.h"
#include "core/program.h"
#include "core/rng.h"
#include "cpu/engine.h"
#include "cpu/parallel.h"

using namespace delira;

DELIRA_TEST(fast_math_is_accurate) {
  double worst_log = 0, worst_exp = 0, worst_sin = 0, worst_cos = 0;
  for (int i = 1; i < 200000; ++i) {
    const float x = static_cast<float>(i) * 1e-3f;
    worst_log = std::fmax(worst_log, std::fabs(fast_log2(x) - std::log2(static_cast<double>(x))));
    const float y = -30.0f + static_cast<float>(i) * 3e-4f;
    const double e = std::exp2(static_cast<double>(y));
    worst_exp = std::fmax(worst_exp, std::fabs(fast_exp2(y) - e) / e);
    const float t = static_cast<float>(i) / 200000.0f;
    float s, c;
    fast_sincos_2pi(t, &s, &c);
    worst_sin = std::fmax(worst_sin, std::fabs(s - std::sin(2 * M_PI * t)));
    worst_cos = std::fmax(worst_cos, std::fabs(c - std::cos(2 * M_PI * t)));
  }
  CHECK(worst_log < 2e-6);
  CHECK(worst_exp < 5e-7);
  CHECK(worst_sin < 2e-6 && worst_cos < 2e-6);
  CHECK(fast_pow(0.0f, 0.7f) == 0.0f);
  CHECK(std::fabs(fast_pow(0.25f, 0.5f) - 0.5f) < 1e-6f);
}

DELIRA_TEST(normal_values_have_unit_moments_and_are_reproducible) {
  const std::uint64_t key = stream_key(1234, 0);
  double sum = 0, sum2 = 0, sum4 = 0, lag = 0;
  const int n = 1 << 20;
  float prev = 0;
  for (int i = 0; i < n; ++i) {
    const float z = random_normal(key, static_cast<std::uint64_t>(i));
    sum += z;
    sum2 += static_cast<double>(z) * z;
    sum4 += static_cast<double>(z) * z * z * z;
    lag += static_cast<double>(z) * prev;
    prev = z;
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(std::fabs(mean) < 0.005);
  CHECK(std::fabs(var - 1.0) < 0.005);
  CHECK(std::fabs(sum4 / n - 3.0) < 0.05);  // kurtosis of a normal
  CHECK(std::fabs(lag / n) < 0.005);        // neighbouring voxels independent
  CHECK(random_normal(key, 77) == random_normal(key, 77));
  CHECK(random_normal(key, 77) != random_normal(stream_key(1235, 0), 77));
}

DELIRA_TEST(border_modes_map_indices_like_scipy) {
  // n = 4: reflect d c b a | a b c d | d c b a ; mirror c b | a b c d | c b
  const std::int64_t reflect[] = {1, 0, 0, 1, 2, 3, 3, 2};  // i = -2 .. 5
  const std::int64_t mirror[] = {2, 1, 0, 1, 2, 3, 2, 1};
  const std::int64_t nearest[] = {0, 0, 0, 1, 2, 3, 3, 3};
  for (int k = 0; k < 8; ++k) {
    CHECK(map_index(k - 2, 4, BorderMode::Reflect) == reflect[k]);
    CHECK(map_index(k - 2, 4, BorderMode::Mirror) == mirror[k]);
    CHECK(map_index(k - 2, 4, BorderMode::Nearest) == nearest[k]);
  }
  CHECK(map_index(-7, 1, BorderMode::Mirror) == 0);
}

DELIRA_TEST(cubic_bspline_weights_sum_to_one) {
  float w[4];
  cubic_bspline_weights(0.0f, w);
  CHECK(std::fabs(w[0] - 1.0f / 6) < 1e-7f && std::fabs(w[1] - 4.0f / 6) < 1e-7f && std::fabs(w[2] - 1.0f / 6) < 1e-7f);
  for (float t = 0.0f; t < 1.0f; t += 0.01f) {
    cubic_bspline_weights(t, w);
    CHECK(std::fabs(w[0] + w[1] + w[2] + w[3] - 1.0f) < 1e-6f);
  }
}

namespace {

cpu::ArrayRef volume_ref(const std::vector<float>& v, std::int64_t d, std::int64_t h, std::int64_t w) {
  cpu::ArrayRef ref;
  ref.data = v.data();
  ref.dtype = DType::Float32;
  ref.ndim = 5;
  const std::int64_t shape[5] = {1, 1, d, h, w};
  const std::int64_t stride[5] = {d * h * w, d * h * w, h * w, w, 1};
  for (int i = 0; i < 5; ++i) {
    ref.shape[i] = shape[i];
    ref.stride[i] = stride[i];
  }
  return ref;
}

cpu::Program empty_program() {
  cpu::Program p;
  p.seeds = {0};
  return p;
}

}  // namespace

DELIRA_TEST(engine_identity_and_mirror_reproduce_the_input) {
  const std::int64_t d = 5, h = 6, w = 7;
  std::vector<float> in(d * h * w);
  std::iota(in.begin(), in.end(), 0.0f);
  std::vector<float> out(in.size(), -1.0f);
  cpu::OutRef o;
  o.data = out.data();
  o.ndim = 5;
  const std::int64_t oshape[5] = {1, 1, d, h, w};
  for (int i = 0; i < 5; ++i) o.shape[i] = oshape[i];
  cpu::SpatialSpec spec;
  spec.out_shape[0] = d;
  spec.out_shape[1] = h;
  spec.out_shape[2] = w;
  // identity
  spec.affine = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
  cpu::resample(volume_ref(in, d, h, w), o, cpu::ArrayRef(), cpu::OutRef(), spec, empty_program());
  CHECK(out == in);
  // mirror the last axis: x = w - 1 - o
  spec.affine = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, -1, static_cast<float>(w - 1)};
  cpu::resample(volume_ref(in, d, h, w), o, cpu::ArrayRef(), cpu::OutRef(), spec, empty_program());
  bool mirrored = true;
  for (std::int64_t i = 0; i < d * h; ++i)
    for (std::int64_t k = 0; k < w; ++k) mirrored = mirrored && out[i * w + k] == in[i * w + (w - 1 - k)];
  CHECK(mirrored);
}

DELIRA_TEST(engine_linear_interpolation_is_hand_computable) {
  // f(z, y, x) = 2z + 3y + 5x is reproduced exactly by trilinear interpolation inside the volume.
  const std::int64_t n = 6;
  std::vector<float> in(n * n * n);
  for (std::int64_t z = 0; z < n; ++z)
    for (std::int64_t y = 0; y < n; ++y)
      for (std::int64_t x = 0; x < n; ++x) in[(z * n + y) * n + x] = 2.0f * z + 3.0f * y + 5.0f * x;
  std::vector<float> out(8, 0.0f);
  cpu::OutRef o;
  o.data = out.data();
  o.ndim = 5;
  const std::int64_t oshape[5] = {1, 1, 2, 2, 2};
  for (int i = 0; i < 5; ++i) o.shape[i] = oshape[i];
  cpu::SpatialSpec spec;
  spec.out_shape[0] = spec.out_shape[1] = spec.out_shape[2] = 2;
  spec.affine = {1, 0, 0, 1.25f, 0, 1, 0, 2.5f, 0, 0, 1, 0.75f};  // shift by (1.25, 2.5, 0.75)
  for (int threads : {1, 3}) {
    cpu::set_num_threads(threads);
    cpu::resample(volume_ref(in, n, n, n), o, cpu::ArrayRef(), cpu::OutRef(), spec, empty_program());
    for (int z = 0; z < 2; ++z)
      for (int y = 0; y < 2; ++y)
        for (int x = 0; x < 2; ++x) {
          const float expected = 2.0f * (z + 1.25f) + 3.0f * (y + 2.5f) + 5.0f * (x + 0.75f);
          CHECK(std::fabs(out[(z * 2 + y) * 2 + x] - expected) < 1e-4f);
        }
  }
}

DELIRA_TEST(engine_rejects_inconsistent_specs) {
  std::vector<float> in(8, 0.0f), out(8, 0.0f);
  cpu::OutRef o;
  o.data = out.data();
  o.ndim = 5;
  const std::int64_t oshape[5] = {1, 1, 2, 2, 2};
  for (int i = 0; i < 5; ++i) o.shape[i] = oshape[i];
  cpu::SpatialSpec spec;
  spec.out_shape[0] = spec.out_shape[1] = spec.out_shape[2] = 2;
  auto call = [&] { cpu::resample(volume_ref(in, 2, 2, 2), o, cpu::ArrayRef(), cpu::OutRef(), spec, empty_program()); };
  spec.affine = {1, 0, 0};  // too short
  CHECK_THROWS(call(), std::invalid_argument);
  spec.affine = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
  spec.order_data = 2;
  CHECK_THROWS(call(), std::invalid_argument);
}

DELIRA_TEST(rician_noise_is_pointwise_and_has_rayleigh_moments_at_zero) {
  // Which kinds start a stage: an explicit set, Rician (pointwise) after the stats kinds.
  CHECK(!needs_stats(OpKind::Noise) && !needs_stats(OpKind::Clip) && !needs_stats(OpKind::Rician));
  CHECK(needs_stats(OpKind::Contrast) && needs_stats(OpKind::PercentileClip) && needs_stats(OpKind::ShiftMin));
  const int kinds[] = {static_cast<int>(OpKind::Rician), static_cast<int>(OpKind::ShiftMin),
                       static_cast<int>(OpKind::Rician), static_cast<int>(OpKind::RestoreStats)};
  CHECK(stage_count(kinds, 4) == 3);
  CHECK(program_stage(kinds, 4, 0).end == 1);
  CHECK(program_stage(kinds, 4, 1).head == 1 && program_stage(kinds, 4, 1).end == 3);

  // Hand-computed: both normal values of Box-Muller pair `counter` (a whole pair per voxel).
  const std::uint64_t key = stream_key(99, 3);
  OpParams q{{0.5f, 0.0f, 0.0f}, true};
  float z0, z1;
  random_normal_pair(key, 41, &z0, &z1);
  const double re = 2.0 + 0.5 * z0, im = 0.5 * z1;
  CHECK(std::fabs(apply_pointwise<double>(OpKind::Rician, q, 2.0, key, 41) - std::sqrt(re * re + im * im)) < 1e-6);
  OpParams zero{{0.0f, 0.0f, 0.0f}, true};
  CHECK(apply_pointwise<float>(OpKind::Rician, zero, -1.5f, key, 7) == 1.5f);  // sigma 0: |v|

  // v = 0: Rayleigh(sigma), mean sigma sqrt(pi / 2), second moment 2 sigma^2.
  const int n = 1 << 20;
  const double sigma = 0.5;
  double s1 = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    const double y = apply_pointwise<float>(OpKind::Rician, q, 0.0f, key, static_cast<std::uint64_t>(i));
    s1 += y;
    s2 += y * y;
  }
  CHECK(std::fabs(s1 / n - sigma * std::sqrt(M_PI / 2)) < 2e-3);
  CHECK(std::fabs(s2 / n - 2 * sigma * sigma) < 2e-3);
}

DELIRA_TEST(shift_min_subtracts_the_channel_minimum) {
  Stats s;
  s.min = -3.0f;
  s.max = 4.0f;
  OpParams q{{0.0f, 0.0f, 0.0f}, true};
  CHECK(apply_with_stats<float>(OpKind::ShiftMin, q, 1.5f, s, s) == 4.5f);
  CHECK(apply_with_stats<double>(OpKind::ShiftMin, q, -3.0, s, s) == 0.0);
}

DELIRA_TEST(engine_rician_rows_match_the_per_voxel_definition) {
  // apply_program's vectorised row loop gives what apply_pointwise gives voxel by voxel.
  const std::int64_t d = 3, h = 4, w = 9;
  std::vector<float> in(d * h * w);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = 0.1f * static_cast<float>(i % 17);
  std::vector<float> out(in.size(), -1.0f);
  cpu::OutRef o;
  o.data = out.data();
  o.ndim = 5;
  const std::int64_t oshape[5] = {1, 1, d, h, w};
  for (int i = 0; i < 5; ++i) o.shape[i] = oshape[i];
  cpu::Program p;
  p.seeds = {1234};
  p.kinds = {OpKind::Multiply, OpKind::Rician};
  p.refs = {-1, -1};
  p.params = {OpParams{{1.0f, 0.0f, 0.0f}, true}, OpParams{{0.3f, 0.0f, 0.0f}, true}};
  cpu::apply_program(volume_ref(in, d, h, w), o, p);
  const std::uint64_t key = op_stream_key(p.seeds.data(), 1, 0, 1);
  double worst = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const float expected = apply_pointwise<float>(OpKind::Rician, p.params[1], in[i], key, noise_counter(0, d * h * w, i));
    worst = std::fmax(worst, std::fabs(out[i] - expected));
  }
  CHECK(worst < 1e-6);
}

DELIRA_TEST(engine_rotated_image_and_labels_match_a_scalar_reference) {
  // A rotated, scaled 3D volume with labels, sampled by the fused pass (the SIMD row kernel on CPUs
  // with AVX2 / AVX-512: rows of 37 voxels, so the last vector of every row is partial), against
  // trilinear and nearest interpolation computed here in double precision. Constant border: outside
  // [0, n - 1] on any axis gives cval.
  const std::int64_t d = 11, h = 12, w = 13, od = 7, oh = 9, ow = 37;
  std::vector<float> in(d * h * w);
  std::vector<std::int16_t> labels(in.size());
  std::uint32_t state = 12345;
  for (std::size_t i = 0; i < in.size(); ++i) {
    state = state * 1664525u + 1013904223u;
    in[i] = static_cast<float>(state >> 8) / 16777216.0f - 0.5f;
    labels[i] = static_cast<std::int16_t>((state >> 20) % 7) - 3;
  }
  cpu::ArrayRef seg = volume_ref(in, d, h, w);
  seg.data = labels.data();
  seg.dtype = DType::Int16;
  std::vector<float> out(od * oh * ow, -1.0f);
  std::vector<std::int16_t> out_seg(out.size(), -1);
  cpu::OutRef o, os;
  o.data = out.data();
  o.ndim = os.ndim = 5;
  const std::int64_t oshape[5] = {1, 1, od, oh, ow};
  for (int i = 0; i < 5; ++i) o.shape[i] = os.shape[i] = oshape[i];
  os.data = out_seg.data();
  os.dtype = DType::Int16;
  cpu::SpatialSpec spec;
  spec.out_shape[0] = od;
  spec.out_shape[1] = oh;
  spec.out_shape[2] = ow;
  const double c = std::cos(0.4), s = std::sin(0.4), k = 0.33;  // rotation about axis 0, scale along the rows
  const double a[3][4] = {{1.0, 0.0, 0.05, 1.7}, {0.0, c, s * k, -0.8}, {0.0, -s, c * k, 3.9}};
  spec.affine.clear();
  for (const auto& row : a)
    for (double v : row) spec.affine.push_back(static_cast<float>(v));
  spec.cval_data = 0.25;
  spec.cval_seg = 9;
  cpu::set_num_threads(2);
  cpu::resample(volume_ref(in, d, h, w), o, seg, os, spec, empty_program());
  const std::int64_t n[3] = {d, h, w};
  int compared = 0, wrong_data = 0, wrong_labels = 0;
  for (std::int64_t z = 0; z < od; ++z)
    for (std::int64_t y = 0; y < oh; ++y)
      for (std::int64_t x = 0; x < ow; ++x) {
        double p[3];
        bool outside = false, tie = false;
        for (int e = 0; e < 3; ++e) {
          p[e] = a[e][0] * z + a[e][1] * y + a[e][2] * x + a[e][3];
          outside = outside || p[e] < 0.0 || p[e] > static_cast<double>(n[e] - 1);
          const double f = p[e] - std::floor(p[e]);
          tie = tie || std::fabs(f - 0.5) < 1e-3 || std::fabs(p[e]) < 1e-3 || std::fabs(p[e] - (n[e] - 1)) < 1e-3;
        }
        if (tie) continue;  // float32 rounding of the coordinate decides there
        ++compared;
        const std::int64_t at = (z * oh + y) * ow + x;
        double ref = spec.cval_data;
        std::int16_t ref_label = 9;
        if (!outside) {
          std::int64_t i0[3];
          double t[3];
          for (int e = 0; e < 3; ++e) {
            i0[e] = std::min<std::int64_t>(static_cast<std::int64_t>(std::floor(p[e])), n[e] - 2);
            t[e] = p[e] - static_cast<double>(i0[e]);
          }
          ref = 0.0;
          for (int q = 0; q < 8; ++q) {
            const int bz = q >> 2 & 1, by = q >> 1 & 1, bx = q & 1;
            const double wq = (bz ? t[0] : 1 - t[0]) * (by ? t[1] : 1 - t[1]) * (bx ? t[2] : 1 - t[2]);
            ref += wq * in[((i0[0] + bz) * h + i0[1] + by) * w + i0[2] + bx];
          }
          std::int64_t r[3];
          for (int e = 0; e < 3; ++e) r[e] = static_cast<std::int64_t>(std::floor(p[e] + 0.5));
          ref_label = labels[(r[0] * h + r[1]) * w + r[2]];
        }
        wrong_data += std::fabs(out[at] - ref) > 1e-4 ? 1 : 0;
        wrong_labels += out_seg[at] != ref_label ? 1 : 0;
      }
  cpu::set_num_threads(1);
  CHECK(compared > static_cast<int>(out.size()) * 9 / 10);
  CHECK(wrong_data == 0);
  CHECK(wrong_labels == 0);
}
