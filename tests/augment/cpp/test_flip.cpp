// C++ tests of the CPU flip executor against a reference written with plain nested loops.
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "cpu/flip_cpu.h"
#include "cpu/parallel.h"

using delira::DType;
using delira::FlipGeometry;

namespace {

// Reference: 3-D flip of a C-contiguous (a, b, c) array written out by hand.
std::vector<float> reference_flip3(const std::vector<float>& in, int a, int b, int c, bool fa, bool fb, bool fc) {
  std::vector<float> out(in.size());
  for (int i = 0; i < a; ++i)
    for (int j = 0; j < b; ++j)
      for (int k = 0; k < c; ++k) {
        const int si = fa ? a - 1 - i : i, sj = fb ? b - 1 - j : j, sk = fc ? c - 1 - k : k;
        out[(i * b + j) * c + k] = in[(si * b + sj) * c + sk];
      }
  return out;
}

FlipGeometry contiguous(std::vector<std::int64_t> shape, std::vector<bool> flips) {
  FlipGeometry g;
  g.ndim = static_cast<int>(shape.size());
  std::int64_t stride = 1;
  for (int d = g.ndim - 1; d >= 0; --d) {
    g.shape[d] = shape[d];
    g.in_strides[d] = stride;
    g.flip[d] = flips[d];
    stride *= shape[d];
  }
  return g;
}

}  // namespace

DELIRA_TEST(flip_matches_reference_for_every_axis_combination) {
  const int a = 3, b = 4, c = 5;
  std::vector<float> in(a * b * c);
  std::iota(in.begin(), in.end(), 0.0f);
  for (int mask = 0; mask < 8; ++mask) {
    const bool fa = mask & 1, fb = mask & 2, fc = mask & 4;
    std::vector<float> out(in.size(), -1.0f);
    delira::cpu::flip(in.data(), out.data(), DType::Float32, contiguous({a, b, c}, {fa, fb, fc}));
    CHECK(out == reference_flip3(in, a, b, c, fa, fb, fc));
  }
}

DELIRA_TEST(flip_follows_input_strides) {
  // A transposed (c, b, a) view of a contiguous (a, b, c) int64 buffer.
  const int a = 2, b = 3, c = 4;
  std::vector<std::int64_t> in(a * b * c);
  std::iota(in.begin(), in.end(), 0);
  FlipGeometry g;
  g.ndim = 3;
  g.shape[0] = c; g.shape[1] = b; g.shape[2] = a;
  g.in_strides[0] = 1; g.in_strides[1] = c; g.in_strides[2] = b * c;
  g.flip[0] = true;
  std::vector<std::int64_t> out(in.size());
  delira::cpu::flip(in.data(), out.data(), DType::Int64, g);
  for (int i = 0; i < c; ++i)
    for (int j = 0; j < b; ++j)
      for (int k = 0; k < a; ++k) CHECK(out[(i * b + j) * a + k] == in[(k * b + j) * c + (c - 1 - i)]);
}

DELIRA_TEST(flip_is_independent_of_thread_count) {
  const int n = 40;
  std::vector<std::uint8_t> in(n * n * n);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 24);
  std::vector<std::uint8_t> one(in.size()), many(in.size());
  const int saved = delira::cpu::get_num_threads();
  delira::cpu::set_num_threads(1);
  delira::cpu::flip(in.data(), one.data(), DType::UInt8, contiguous({n, n, n}, {true, false, true}));
  delira::cpu::set_num_threads(4);
  delira::cpu::flip(in.data(), many.data(), DType::UInt8, contiguous({n, n, n}, {true, false, true}));
  delira::cpu::set_num_threads(saved);
  CHECK(one == many);
}

DELIRA_TEST(flip_handles_empty_arrays) {
  std::vector<float> in, out;
  delira::cpu::flip(in.data(), out.data(), DType::Float32, contiguous({0, 3}, {true, true}));
  CHECK(out.empty());
}

DELIRA_TEST(invalid_geometry_and_thread_count_are_rejected) {
  FlipGeometry g;
  g.ndim = 6;
  float x = 0.0f, y = 0.0f;
  CHECK_THROWS(delira::cpu::flip(&x, &y, DType::Float32, g), std::invalid_argument);
  CHECK_THROWS(delira::cpu::set_num_threads(0), std::invalid_argument);
}
