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
