// Fake quantization with a fixed clip in one pass over the input (gdrq_bench/quant/fused.py).
//
// Forward, per element, in the order of the eager graph it replaces (fake_quant.py's
// _FixedClipQuantize): v = x / step; inside = lo < v < hi; out = round(clamp(v, lo, hi)) * step.
// Backward: ((grad * step) * inside) / step. Every operation is one IEEE operation in float32
// or float64 (compiled with -ffp-contract=off, so no fused multiply-add), clamp keeps NaN and
// the sign of zero as ATen's vectorised clamp does, and std::nearbyint rounds half to even as
// torch.round does: values and gradients equal the eager ones bit for bit.
//
// step holds one value, or one per row of x (x contiguous, rows along dim 0).

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <cmath>
#include <tuple>

namespace {

constexpr int64_t GRAIN = 32768;  // elements per task of at::parallel_for

// Calls body(begin, end, step) over x's elements in row-aligned pieces of each parallel task,
// with the step of the piece's row (or the one step).
template <typename scalar_t, typename Body>
void for_rows(const at::Tensor& x, const at::Tensor& step_tensor, Body body) {
  const int64_t numel = x.numel();
  if (numel == 0) return;
  const bool per_row = step_tensor.numel() > 1;
  const int64_t row_size = per_row ? numel / x.size(0) : numel;
  const scalar_t* step = step_tensor.data_ptr<scalar_t>();
  at::parallel_for(0, numel, GRAIN, [&](int64_t begin, int64_t end) {
    while (begin < end) {
      const int64_t row = begin / row_size;
      const int64_t stop = std::min(end, (row + 1) * row_size);
      body(begin, stop, step[per_row ? row : 0]);
      begin = stop;
    }
  });
}

// The loops over one span of one step; __restrict lets the compiler vectorise them.
template <typename scalar_t>
void quantize_span(const scalar_t* __restrict in, scalar_t* __restrict out,
                   bool* __restrict inside, int64_t n, scalar_t s, scalar_t low, scalar_t high) {
  if (inside == nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t v = in[i] / s;
      out[i] = std::nearbyint(low > v ? low : (high < v ? high : v)) * s;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t v = in[i] / s;
    out[i] = std::nearbyint(low > v ? low : (high < v ? high : v)) * s;
    inside[i] = (v > low) & (v < high);
  }
}

template <typename scalar_t>
void gradient_span(const scalar_t* __restrict grad, const uint8_t* __restrict inside,
                   scalar_t* __restrict out, int64_t n, scalar_t s) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = (grad[i] * s) * static_cast<scalar_t>(inside[i]) / s;
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& step) {
  TORCH_CHECK(x.device().is_cpu() && step.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(x.is_contiguous() && step.is_contiguous(), "contiguous tensors only");
  TORCH_CHECK(step.scalar_type() == x.scalar_type(), "step must have x's dtype");
  TORCH_CHECK(step.numel() == 1 || (x.dim() > 0 && step.numel() == x.size(0)),
              "step must hold one value or one per row of x");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> quantize_forward(
    const at::Tensor& x, const at::Tensor& step, double lo, double hi, bool keep_mask) {
  check_inputs(x, step);
  auto out = at::empty_like(x);
  auto mask = keep_mask ? at::empty(x.sizes(), x.options().dtype(at::kBool)) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "quantize_forward", [&] {
    const scalar_t low = static_cast<scalar_t>(lo), high = static_cast<scalar_t>(hi);
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* result = out.data_ptr<scalar_t>();
    bool* inside = keep_mask ? mask.data_ptr<bool>() : nullptr;
    for_rows<scalar_t>(x, step, [&](int64_t begin, int64_t end, scalar_t s) {
      quantize_span(in + begin, result + begin, inside ? inside + begin : nullptr, end - begin, s,
                    low, high);
    });
  });
  return {out, mask};
}

at::Tensor quantize_backward(const at::Tensor& grad, const at::Tensor& mask,
                             const at::Tensor& step) {
  check_inputs(grad, step);
  TORCH_CHECK(mask.is_contiguous() && mask.scalar_type() == at::kBool &&
                  mask.sizes() == grad.sizes(),
              "mask must be a contiguous bool tensor of grad's shape");
  auto out = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "quantize_backward", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    // read as bytes (0 or 1): GCC does not vectorise loads of bool
    const auto* inside = reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>());
    scalar_t* result = out.data_ptr<scalar_t>();
    for_rows<scalar_t>(grad, step, [&](int64_t begin, int64_t end, scalar_t s) {
      gradient_span(g + begin, inside + begin, result + begin, end - begin, s);
    });
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("quantize_forward", &quantize_forward, "fixed-clip fake quantization, forward");
  m.def("quantize_backward", &quantize_backward, "fixed-clip fake quantization, backward");
}
