// libtorch functions tch does not bind, for worker/src/torch_ext.rs: a Linear
// on oneDNN's matmul with its own backward, libtorch's fused AdamW, and setting
// a gradient to none. Every entry point catches C++ exceptions (they must not
// unwind into Rust): it returns 0, or 1 with the message in
// maelab_ext_last_error().

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>

#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace at::native {
// Exported by libtorch_cpu; its header (ATen/native/mkldnn/Matmul.h) is not in
// the wheel. result = beta * result + alpha * mat1 @ mat2 on oneDNN's matmul;
// contiguous and transposed operands are read in place.
TORCH_API void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2,
                             const Tensor& result, float beta, float alpha);
}  // namespace at::native

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(F&& f) noexcept {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x [M, K], w [N, K], b [N] -> x @ w^T + b [M, N]. libtorch's own linear goes
// to MKL's sgemm, which takes its AVX2 path on AMD CPUs; oneDNN's matmul uses
// AVX-512 where the CPU has it. Same fp32 arithmetic, other summation order.
struct OneDnnLinear : public torch::autograd::Function<OneDnnLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b) {
    ctx->save_for_backward({x, w});
    // The bias is the accumulator's start (beta = 1), as addmm does it.
    at::Tensor y = b.expand({x.size(0), w.size(0)}).contiguous();
    at::native::mkldnn_matmul(x, w.t(), y, 1.0f, 1.0f);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    at::Tensor g = grads[0].contiguous();  // [M, N]
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gx = at::empty({g.size(0), w.size(1)}, g.options());  // g @ w
      at::native::mkldnn_matmul(g, w, gx, 0.0f, 1.0f);
    }
    if (ctx->needs_input_grad(1)) {
      gw = at::empty(w.sizes(), g.options());  // g^T @ x
      at::native::mkldnn_matmul(g.t(), x, gw, 0.0f, 1.0f);
    }
    if (ctx->needs_input_grad(2)) {
      gb = g.sum(0);
    }
    return {gx, gw, gb};
  }
};

}  // namespace

extern "C" {

// The message of the last failed call on this thread.
const char* maelab_ext_last_error() { return last_error.c_str(); }

// x [.., K], w [N, K], b [N] -> [.., N] on OneDnnLinear. Under CPU autocast
// it is at::linear, so autocast's casts apply as they would without us.
int maelab_ext_linear(const at::Tensor* x, const at::Tensor* w,
                      const at::Tensor* b, at::Tensor** out) {
  return guarded([&] {
    at::Tensor y;
    if (at::autocast::is_autocast_enabled(at::kCPU) || x->numel() == 0) {
      y = at::linear(*x, *w, *b);
    } else {
      std::vector<int64_t> sizes = x->sizes().vec();
      at::Tensor x2 = x->reshape({-1, sizes.back()});
      sizes.back() = w->size(0);
      y = OneDnnLinear::apply(x2, *w, *b).view(sizes);
    }
    *out = new at::Tensor(std::move(y));
  });
}

// a [M, K] @ b [K, N] on oneDNN's matmul, no autograd (the bench's limit).
int maelab_ext_onednn_mm(const at::Tensor* a, const at::Tensor* b,
                         at::Tensor** out) {
  return guarded([&] {
    at::Tensor y = at::empty({a->size(0), b->size(1)}, a->options());
    at::native::mkldnn_matmul(*a, *b, y, 0.0f, 1.0f);
    *out = new at::Tensor(std::move(y));
  });
}

// One AdamW step (torch.optim.AdamW(fused=True)) over n tensors of one group:
// one pass per tensor. `step` is the step count after this step, read by
// every tensor.
int maelab_ext_fused_adamw(const at::Tensor* const* params,
                           const at::Tensor* const* grads,
                           const at::Tensor* const* exp_avgs,
                           const at::Tensor* const* exp_avg_sqs, size_t n,
                           const at::Tensor* step, double lr, double beta1,
                           double beta2, double weight_decay, double eps) {
  return guarded([&] {
    std::vector<at::Tensor> p, g, m, v, s;
    for (size_t i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      s.push_back(*step);
    }
    at::NoGradGuard no_grad;
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false, std::nullopt,
                      std::nullopt);
  });
}

// grad = None (torch's zero_grad(set_to_none=True)): the next backward
// writes a fresh gradient instead of zeroing and adding into the old one.
int maelab_ext_clear_grad(const at::Tensor* t) {
  return guarded([&] { t->mutable_grad().reset(); });
}

}  // extern "C"
