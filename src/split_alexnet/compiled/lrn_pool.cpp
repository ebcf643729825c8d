// ReLU, local response normalisation and overlapping max-pooling as one CPU kernel,
// forward and backward (AlexNet Sec. 3.3-3.4: conv1 and conv2 are followed by all three).
//
// Apart, the three stages are full passes over the largest maps of the network, and
// autograd keeps LRN's input, output and denominator and max-pool's 64-bit indices for
// the backward. Here the forward reads the convolution's output y once and writes only
// the pooled maps and one byte per pooled value (where in its window the maximum was);
// the backward recomputes a = max(y, 0), the denominator d and the LRN output b pixel
// by pixel from y, in buffers that stay in cache.
//
// Each value is computed with the operations of the eager path (model/lrn.py, then
// torch's max_pool2d and its backward), in the same order, each correctly rounded:
// window sums add the centre, then the terms in front, then those behind;
// d^-0.75 = 1 / (sqrt(d) * sqrt(sqrt(d))); a pooled maximum is the first in row-major
// window order, NaN winning; the pool's gradient adds up in row-major order of the
// pooled positions. The build turns floating-point contraction off (compiled/native.py),
// so no FMA merges two roundings. (torch's own vectorised sqrt is not always correctly
// rounded, so the two paths may differ in the last bit; tests/test_lrn_pool.py.)
//
// The window is the paper's n = 5 channels (Sec. 3.3), fixed at compile time; each
// pixel's channels are copied into a zero-padded row, so that a window sum is one
// vectorised loop of five loads with no edge cases. The kernels work on channels_last
// memory, where a pixel's channels lie together; images are split among ATen's threads.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

// torch.nn.LocalResponseNorm's window for size 5: two channels in front, two behind.
constexpr int64_t kSize = 5, kBefore = kSize / 2, kAfter = (kSize - 1) / 2;

struct Shape {
  int64_t batch, channels, height, width, pooled_height, pooled_width;
  int64_t groups, run, kernel, stride;
  bool rectify;
  int64_t pixels() const { return height * width; }
  int64_t pooled_pixels() const { return pooled_height * pooled_width; }
  // A pixel's channels, each group's run padded by zeros on both sides.
  int64_t padded() const { return groups * (kBefore + run + kAfter); }
};

Shape shape_of(const at::Tensor& y, int64_t groups, int64_t size, double beta, int64_t kernel,
               int64_t stride, bool rectify) {
  TORCH_CHECK(size == kSize && beta == 0.75,
              "lrn_pool computes the paper's window (size 5, beta 0.75), got size ", size,
              ", beta ", beta);
  TORCH_CHECK(y.dim() == 4, "lrn_pool needs (N, C, H, W) input, got ", y.dim(), " dimensions");
  TORCH_CHECK(y.device().is_cpu(), "lrn_pool runs on the CPU");
  TORCH_CHECK(groups > 0 && y.size(1) % groups == 0, y.size(1), " channels do not split into ",
              groups, " groups");
  TORCH_CHECK(kernel > 0 && kernel * kernel <= 256 && stride > 0,
              "lrn_pool: the pool's kernel must be 1 to 16 and its stride positive");
  TORCH_CHECK(y.size(2) >= kernel && y.size(3) >= kernel, "lrn_pool: maps smaller than the pool");
  return {y.size(0), y.size(1), y.size(2), y.size(3),
          (y.size(2) - kernel) / stride + 1, (y.size(3) - kernel) / stride + 1,
          groups, y.size(1) / groups, kernel, stride, rectify};
}

template <typename T>
T inverse_power(T d) {  // d^-0.75, as model/lrn.py's _scale rounds it
  const T root = std::sqrt(d);
  return T(1) / (root * std::sqrt(root));
}

// The window sum at x[0] of a padded row: model/lrn.py's _window_sum order (a copy of
// the centre, then the shifted adds in front, then behind). `front`/`behind` say how
// many terms of each side: the backward's window is the forward's mirrored.
template <int64_t front, int64_t behind, typename T>
inline T window_sum(const T* x) {
  T sum = x[0];
  for (int64_t shift = 1; shift <= front; ++shift) sum += x[-shift];
  for (int64_t shift = 1; shift <= behind; ++shift) sum += x[shift];
  return sum;
}

// One pixel's LRN: y (C channels) -> a = max(y, 0) (or y), d, r = d^-0.75 and b = r a,
// all C long; `padded` (s.padded() long, zeros at the run ends) is scratch for the squares.
template <typename T>
void normalise_pixel(const T* __restrict__ y, const Shape& s, T alpha, T k, T* __restrict__ a,
                     T* __restrict__ padded, T* __restrict__ d, T* __restrict__ r,
                     T* __restrict__ b) {
  for (int64_t g = 0; g < s.groups; ++g) {
    const T* __restrict__ in = y + g * s.run;
    T* __restrict__ out = a + g * s.run;
    T* __restrict__ squares = padded + g * (kBefore + s.run + kAfter) + kBefore;
    for (int64_t c = 0; c < s.run; ++c) {
      // clamp_min(0): NaN stays NaN, as in torch.
      out[c] = s.rectify ? (in[c] < T(0) ? T(0) : in[c]) : in[c];
      squares[c] = out[c] * out[c];
    }
    T* __restrict__ denominator = d + g * s.run;
    T* __restrict__ scale = r + g * s.run;
    T* __restrict__ normalised = b + g * s.run;
    for (int64_t c = 0; c < s.run; ++c) {
      denominator[c] = window_sum<kBefore, kAfter>(squares + c) * alpha + k;
      scale[c] = inverse_power(denominator[c]);
      normalised[c] = scale[c] * out[c];
    }
  }
}

// Per channel, the maximum of one pooling window of `b` ((H, W, C), from the window's
// top-left pixel) and its position in the window: torch's max_pool2d keeps the first
// maximum in row-major order, and NaN wins. (Positions as 32-bit lanes beside the
// values' vectorise; as bytes the loop ran 2x slower.)
template <typename T>
void pool_window(const T* __restrict__ b, const Shape& s, T* __restrict__ best,
                 int32_t* __restrict__ at) {
  const int64_t C = s.channels;
  for (int64_t c = 0; c < C; ++c) {
    best[c] = -std::numeric_limits<T>::infinity();
    at[c] = 0;
  }
  for (int64_t i = 0; i < s.kernel; ++i) {
    for (int64_t j = 0; j < s.kernel; ++j) {
      const T* __restrict__ row = b + (i * s.width + j) * C;
      const auto position = static_cast<int32_t>(i * s.kernel + j);
      for (int64_t c = 0; c < C; ++c) {
        const bool wins = row[c] > best[c] || std::isnan(row[c]);
        best[c] = wins ? row[c] : best[c];
        at[c] = wins ? position : at[c];
      }
    }
  }
}

// y (N, H, W, C) -> pooled and where (N, PH, PW, C), all contiguous.
template <typename T>
void forward(const T* y, T* pooled, uint8_t* where, const Shape& s, T alpha, T k) {
  const int64_t C = s.channels;
  at::parallel_for(0, s.batch, 1, [&](int64_t first, int64_t last) {
    // This image's LRN output: the pool's windows overlap, so it is kept whole (in L2).
    std::vector<T> b(s.pixels() * C), a(C), d(C), r(C), padded(s.padded(), T(0));
    std::vector<int32_t> at(C);
    for (int64_t n = first; n < last; ++n) {
      for (int64_t p = 0; p < s.pixels(); ++p)
        normalise_pixel(y + (n * s.pixels() + p) * C, s, alpha, k, a.data(), padded.data(),
                        d.data(), r.data(), b.data() + p * C);
      for (int64_t ph = 0; ph < s.pooled_height; ++ph) {
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          const int64_t o = (n * s.pooled_pixels() + ph * s.pooled_width + pw) * C;
          pool_window(b.data() + (ph * s.width + pw) * s.stride * C, s, pooled + o, at.data());
          for (int64_t c = 0; c < C; ++c) where[o + c] = static_cast<uint8_t>(at[c]);
        }
      }
    }
  });
}

// grad, where (N, PH, PW, C) and y (N, H, W, C) -> grad_y (N, H, W, C), all contiguous.
template <typename T>
void backward(const T* grad, const T* y, const uint8_t* where, T* grad_y, const Shape& s,
              T alpha, T k) {
  const int64_t C = s.channels;
  // model/lrn.py's addcmul_(t, a, value=-2 alpha beta), beta = 0.75.
  const T weight = static_cast<T>(-2 * static_cast<double>(alpha) * 0.75);
  // Where each position of a pooling window lies, in elements from its top-left one.
  std::vector<int64_t> offset(s.kernel * s.kernel);
  for (int64_t i = 0; i < s.kernel; ++i)
    for (int64_t j = 0; j < s.kernel; ++j) offset[i * s.kernel + j] = (i * s.width + j) * C;
  at::parallel_for(0, s.batch, 1, [&](int64_t first, int64_t last) {
    // The gradient reaching this image's LRN output; a, r and b are recomputed pixel by
    // pixel from y.
    std::vector<T> g(s.pixels() * C), a(C), d(C), r(C), b(C), padded(s.padded(), T(0));
    for (int64_t n = first; n < last; ++n) {
      // max_pool2d's backward: each pooled gradient added to its maximum's position,
      // pooled positions in row-major order.
      std::fill(g.begin(), g.end(), T(0));
      for (int64_t ph = 0; ph < s.pooled_height; ++ph) {
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          const int64_t o = (n * s.pooled_pixels() + ph * s.pooled_width + pw) * C;
          T* window = g.data() + (ph * s.width + pw) * s.stride * C;
          for (int64_t c = 0; c < C; ++c) window[offset[where[o + c]] + c] += grad[o + c];
        }
      }
      for (int64_t p = 0; p < s.pixels(); ++p) {
        normalise_pixel(y + (n * s.pixels() + p) * C, s, alpha, k, a.data(), padded.data(),
                        d.data(), r.data(), b.data());
        const T* __restrict__ upstream = g.data() + p * C;
        T* __restrict__ out = grad_y + (n * s.pixels() + p) * C;
        for (int64_t group = 0; group < s.groups; ++group) {
          const int64_t first_channel = group * s.run;
          // The padded row again, now for g b / d (torch.mul(grad, out).div_(d)).
          T* __restrict__ ratio = padded.data() + group * (kBefore + s.run + kAfter) + kBefore;
          for (int64_t c = 0; c < s.run; ++c) {
            const int64_t at = first_channel + c;
            ratio[c] = upstream[at] * b[at] / d[at];
          }
          for (int64_t c = 0; c < s.run; ++c) {
            const int64_t at = first_channel + c;
            // The window seen from a_j is W mirrored: `after` in front, `before` behind.
            const T t = window_sum<kAfter, kBefore>(ratio + c);
            const T value = r[at] * upstream[at] + weight * t * a[at];
            // ReLU's backward (threshold_backward): zero where a <= 0.
            out[at] = s.rectify && a[at] <= T(0) ? T(0) : value;
          }
        }
      }
    }
  });
}

// The kernels work on channels_last memory; other layouts are copied in and out (the
// network trains channels_last by default).
at::Tensor pixels_last(const at::Tensor& x) {
  return x.contiguous(at::MemoryFormat::ChannelsLast);
}

std::tuple<at::Tensor, at::Tensor> lrn_pool(const at::Tensor& y, int64_t groups, int64_t size,
                                            double alpha, double beta, double k, int64_t kernel,
                                            int64_t stride, bool rectify) {
  const Shape s = shape_of(y, groups, size, beta, kernel, stride, rectify);
  const at::Tensor input = pixels_last(y);
  const auto options = y.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor pooled = at::empty({s.batch, s.channels, s.pooled_height, s.pooled_width}, options);
  at::Tensor where = at::empty_like(pooled, pooled.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "lrn_pool", [&] {
    forward<scalar_t>(input.const_data_ptr<scalar_t>(), pooled.data_ptr<scalar_t>(),
                      where.data_ptr<uint8_t>(), s, static_cast<scalar_t>(alpha),
                      static_cast<scalar_t>(k));
  });
  return {pooled.contiguous(y.suggest_memory_format()), where};
}

at::Tensor lrn_pool_backward(const at::Tensor& grad, const at::Tensor& y, const at::Tensor& where,
                             int64_t groups, int64_t size, double alpha, double beta, double k,
                             int64_t kernel, int64_t stride, bool rectify) {
  const Shape s = shape_of(y, groups, size, beta, kernel, stride, rectify);
  TORCH_CHECK(grad.sizes() == where.sizes() && grad.scalar_type() == y.scalar_type() &&
                  where.scalar_type() == at::kByte &&
                  where.is_contiguous(at::MemoryFormat::ChannelsLast),
              "lrn_pool_backward: the gradient or the maxima's positions do not match lrn_pool's");
  const at::Tensor input = pixels_last(y), upstream = pixels_last(grad);
  at::Tensor grad_y = at::empty_like(input);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "lrn_pool_backward", [&] {
    backward<scalar_t>(upstream.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                       where.const_data_ptr<uint8_t>(), grad_y.data_ptr<scalar_t>(), s,
                       static_cast<scalar_t>(alpha), static_cast<scalar_t>(k));
  });
  return grad_y.contiguous(y.suggest_memory_format());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(split_alexnet, m) {
  m.def(
      "lrn_pool(Tensor y, int groups, int size, float alpha, float beta, float k, int kernel, "
      "int stride, bool rectify) -> (Tensor, Tensor)");
  m.def(
      "lrn_pool_backward(Tensor grad, Tensor y, Tensor where, int groups, int size, float alpha, "
      "float beta, float k, int kernel, int stride, bool rectify) -> Tensor");
}

TORCH_LIBRARY_IMPL(split_alexnet, CPU, m) {
  m.impl("lrn_pool", &lrn_pool);
  m.impl("lrn_pool_backward", &lrn_pool_backward);
}
