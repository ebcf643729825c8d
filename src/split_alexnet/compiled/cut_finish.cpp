// The training views of a batch in one pass on the CPU (Sec. 4.1): each image's random
// 224x224 patch, reflected where drawn, as float32 minus the mean crop plus its colour
// shift (and, for the 2012 code's noise, divided by 1.1).
//
// data/views.py does this as batched tensor ops: an index_select of 224-byte windows, a
// flip and a select of the flipped patches, then a converting copy and two or three
// in-place passes over the 77 MB float batch (one loop when torch.compile'd). Here each
// patch row is read once from the uint8 image and written once as floats. Each value is
// computed with the same float32 operations in the same order as views._finish
// (convert, subtract the mean, add the shift, divide), so the result is bit-identical
// (tests/test_data_views.py); the build turns floating-point contraction off
// (compiled/native.py).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <cstdint>

namespace {

at::Tensor cut_finish(const at::Tensor& images, const at::Tensor& rows, const at::Tensor& cols,
                      const at::Tensor& flips, const at::Tensor& mean,
                      const std::optional<at::Tensor>& shift, std::optional<double> divisor) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == images.size(3) &&
                  images.scalar_type() == at::kByte && images.device().is_cpu(),
              "cut_finish needs uint8 (N, 3, S, S) images on the CPU");
  const int64_t n = images.size(0), side = images.size(2), crop = mean.size(-1);
  TORCH_CHECK(mean.dim() == 3 && mean.size(0) == 3 && mean.size(1) == crop && crop <= side &&
                  mean.scalar_type() == at::kFloat,
              "cut_finish needs a float32 (3, crop, crop) mean no larger than the images");
  TORCH_CHECK(rows.numel() == n && cols.numel() == n && flips.numel() == n &&
                  rows.scalar_type() == at::kLong && cols.scalar_type() == at::kLong &&
                  flips.scalar_type() == at::kBool,
              "cut_finish needs one int64 row, int64 column and bool flip per image");
  TORCH_CHECK(!shift || (shift->scalar_type() == at::kFloat && shift->numel() == 3 * n),
              "cut_finish needs a float32 (N, 3) colour shift");
  const at::Tensor source = images.contiguous(), average = mean.contiguous();
  const at::Tensor corner_rows = rows.contiguous(), corner_cols = cols.contiguous();
  const at::Tensor reflected = flips.contiguous();
  const at::Tensor shifts = shift ? shift->contiguous() : at::Tensor();
  const int64_t* row0 = corner_rows.const_data_ptr<int64_t>();
  const int64_t* col0 = corner_cols.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(row0[i] >= 0 && row0[i] + crop <= side && col0[i] >= 0 && col0[i] + crop <= side,
                "cut_finish: a patch at (", row0[i], ", ", col0[i], ") leaves the image");
  }
  at::Tensor out = at::empty({n, 3, crop, crop}, images.options().dtype(at::kFloat));
  const uint8_t* in0 = source.const_data_ptr<uint8_t>();
  const bool* flip0 = reflected.const_data_ptr<bool>();
  const float* mean0 = average.const_data_ptr<float>();
  const float* shift0 = shift ? shifts.const_data_ptr<float>() : nullptr;
  float* out0 = out.data_ptr<float>();
  // views._finish's `x /= CODE_NOISE_DIVISOR`: the scalar rounded to float32 first.
  const float by = divisor ? static_cast<float>(*divisor) : 1.0f;
  at::parallel_for(0, n * 3, 1, [&](int64_t first, int64_t last) {
    for (int64_t plane = first; plane < last; ++plane) {
      const int64_t image = plane / 3, channel = plane % 3;
      const float add = shift0 ? shift0[plane] : 0.0f;
      for (int64_t r = 0; r < crop; ++r) {
        const uint8_t* __restrict__ in =
            in0 + (plane * side + row0[image] + r) * side + col0[image];
        const float* __restrict__ m = mean0 + (channel * crop + r) * crop;
        float* __restrict__ x = out0 + (plane * crop + r) * crop;
        if (flip0[image]) {
          for (int64_t j = 0; j < crop; ++j) x[j] = static_cast<float>(in[crop - 1 - j]) - m[j];
        } else {
          for (int64_t j = 0; j < crop; ++j) x[j] = static_cast<float>(in[j]) - m[j];
        }
        if (shift0) {
          for (int64_t j = 0; j < crop; ++j) x[j] = x[j] + add;
          if (divisor) {
            for (int64_t j = 0; j < crop; ++j) x[j] = x[j] / by;
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(split_alexnet, m) {
  m.def(
      "cut_finish(Tensor images, Tensor rows, Tensor cols, Tensor flips, Tensor mean, "
      "Tensor? shift, float? divisor) -> Tensor");
}

TORCH_LIBRARY_IMPL(split_alexnet, CPU, m) { m.impl("cut_finish", &cut_finish); }
