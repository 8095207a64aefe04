// libtorch functions tch does not bind, for worker/src/torch_ext.rs: a Linear
// and self-attention on oneDNN's matmul with their own backward, libtorch's
// fused AdamW, and setting a gradient to none. Every entry point catches C++
// exceptions (they must not unwind into Rust): it returns 0, or 1 with the
// message in maelab_ext_last_error().

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>

#include <cmath>
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

// Multi-head self-attention softmax(q k^T * scale) v on oneDNN's batched
// matmul, from the qkv projection [B, N, 3 * H * d] (q, k, v, then heads, as
// timm lays it out) to [B, N, H * d], the proj layer's input. libtorch's CPU
// flash kernel runs one small GEMM per (image, head, query block): at the
// 17-65 tokens of CIFAR-sized ViTs that is 15-40 GFLOP/s. One batched matmul
// over all images and heads per product drops those calls; what remains is
// memory traffic of the scores (1.1-1.5x faster per layer, docs/benchmarks.md).
// The probabilities [B * H, N, N] are kept for backward (at 65 tokens 17 KB
// per image and head, against the layer's activations of the same order).
struct OneDnnAttention : public torch::autograd::Function<OneDnnAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& qkv,
                            int64_t heads) {
    const int64_t b = qkv.size(0), n = qkv.size(1), c = qkv.size(2) / 3;
    const int64_t d = c / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    // One copy into [3, B * H, N, d]: q, k and v become contiguous batches.
    at::Tensor t = qkv.view({b, n, 3, heads, d})
                       .permute({2, 0, 3, 1, 4})
                       .contiguous()
                       .view({3, b * heads, n, d});
    at::Tensor q = t[0], k = t[1], v = t[2];
    at::Tensor s = at::empty({b * heads, n, n}, qkv.options());
    at::native::mkldnn_matmul(q, k.transpose(1, 2), s, 0.0f, scale);
    at::Tensor p = at::_softmax(s, -1, false);
    at::Tensor o = at::empty({b * heads, n, d}, qkv.options());
    at::native::mkldnn_matmul(p, v, o, 0.0f, 1.0f);
    ctx->save_for_backward({t, p});
    ctx->saved_data["heads"] = heads;
    return o.view({b, heads, n, d}).transpose(1, 2).reshape({b, n, c});
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& t = saved[0];
    const at::Tensor& p = saved[1];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const int64_t bh = t.size(1), n = t.size(2), d = t.size(3);
    const int64_t b = bh / heads, c = heads * d;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    at::Tensor q = t[0], k = t[1], v = t[2];
    at::Tensor go = grads[0]
                        .view({b, n, heads, d})
                        .permute({0, 2, 1, 3})
                        .contiguous()
                        .view({bh, n, d});
    at::Tensor gt = at::empty_like(t);  // gradients of q, k, v, as t
    at::Tensor gq = gt[0], gk = gt[1], gv = gt[2];
    at::native::mkldnn_matmul(p.transpose(1, 2), go, gv, 0.0f, 1.0f);
    at::Tensor gp = at::empty_like(p);
    at::native::mkldnn_matmul(go, v.transpose(1, 2), gp, 0.0f, 1.0f);
    at::Tensor gs = at::_softmax_backward_data(gp, p, -1, p.scalar_type());
    at::native::mkldnn_matmul(gs, k, gq, 0.0f, scale);
    at::native::mkldnn_matmul(gs.transpose(1, 2), q, gk, 0.0f, scale);
    at::Tensor gqkv = gt.view({3, b, heads, n, d})
                          .permute({1, 3, 0, 2, 4})
                          .reshape({b, n, 3 * c});
    return {gqkv, at::Tensor()};
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

// qkv [B, N, 3 * heads * d] -> attention output [B, N, heads * d] on
// OneDnnAttention (fp32 CPU tensors).
int maelab_ext_attention(const at::Tensor* qkv, int64_t heads,
                         at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(qkv->dim() == 3 && heads > 0 && qkv->size(2) % (3 * heads) == 0,
                "attention: qkv must be [B, N, 3 * heads * d], got ",
                qkv->sizes(), " with ", heads, " heads");
    *out = new at::Tensor(OneDnnAttention::apply(*qkv, heads));
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
