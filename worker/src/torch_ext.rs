//! libtorch functions tch does not bind, from `csrc/torch_ext.cpp` (compiled by
//! build.rs against the libtorch tch links):
//! - [`linear`]: `x @ w^T + b` on oneDNN's matmul with its own backward. On
//!   AMD CPUs libtorch's `linear` runs MKL's AVX2 sgemm path while oneDNN
//!   uses AVX-512, 1.1-2.1x the fp32 GEMM rate; on Intel CPUs MKL takes
//!   AVX-512 itself and stays ([`LinearBackend`], docs/benchmarks.md);
//! - [`attention`]: multi-head self-attention on oneDNN's batched matmul with
//!   its own backward, for the CPU, where libtorch's flash kernel is slow at
//!   CIFAR-sized token counts (docs/benchmarks.md);
//! - [`fused_adamw`]: `torch.optim.AdamW(fused=True)`'s kernel, one pass per tensor;
//! - [`clear_grad`]: a gradient set to none (`zero_grad(set_to_none=True)`).
//!
//! The C++ side catches every exception and returns its message, which
//! becomes a [`TorchExtError`].

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use tch::{Device, Kind, Tensor};

mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    // Pointers are tch's `C_tensor`, an `at::Tensor*`; results are owned by
    // the caller (tch's `Tensor::from_ptr` frees them).
    unsafe extern "C" {
        pub fn maelab_ext_last_error() -> *const c_char;
        pub fn maelab_ext_linear(
            x: *const c_void,
            w: *const c_void,
            b: *const c_void,
            out: *mut *mut c_void,
        ) -> c_int;
        pub fn maelab_ext_attention(qkv: *const c_void, heads: i64, out: *mut *mut c_void)
        -> c_int;
        pub fn maelab_ext_onednn_mm(
            a: *const c_void,
            b: *const c_void,
            out: *mut *mut c_void,
        ) -> c_int;
        pub fn maelab_ext_fused_adamw(
            params: *const *const c_void,
            grads: *const *const c_void,
            exp_avgs: *const *const c_void,
            exp_avg_sqs: *const *const c_void,
            n: usize,
            step: *const c_void,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
        ) -> c_int;
        pub fn maelab_ext_clear_grad(t: *const c_void) -> c_int;
    }
}

/// A libtorch call that failed, with libtorch's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct TorchExtError(pub String);

fn check(rc: c_int) -> Result<(), TorchExtError> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the C++ side returns its thread-local message, NUL-terminated,
    // valid until the next call on this thread; it is copied at once.
    let msg = unsafe { CStr::from_ptr(ffi::maelab_ext_last_error()) };
    Err(TorchExtError(msg.to_string_lossy().into_owned()))
}

fn ptr(t: &Tensor) -> *const c_void {
    t.as_ptr().cast()
}

/// Runs a C++ entry point that writes a new tensor into `out`.
fn new_tensor(call: impl FnOnce(*mut *mut c_void) -> c_int) -> Result<Tensor, TorchExtError> {
    let mut out: *mut c_void = std::ptr::null_mut();
    check(call(&mut out))?;
    // SAFETY: on success `out` is a fresh `new at::Tensor(..)` nobody else owns.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// `x @ w^T + b` ([.., K], [N, K], [N] -> [.., N]) on oneDNN with autograd;
/// under CPU autocast libtorch's own linear. fp32 CPU tensors only: see
/// [`use_onednn_linear`].
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor, TorchExtError> {
    // SAFETY: three live tensors; the C++ side only reads them.
    new_tensor(|out| unsafe { ffi::maelab_ext_linear(ptr(x), ptr(w), ptr(b), out) })
}

/// Self-attention from the qkv projection `[B, N, 3 * heads * d]` (q, k, v,
/// then heads) to `[B, N, heads * d]`, with autograd: softmax(q k^T / sqrt(d)) v
/// on oneDNN's batched matmul. fp32 CPU tensors only: see [`use_onednn_attention`].
pub fn attention(qkv: &Tensor, heads: i64) -> Result<Tensor, TorchExtError> {
    // SAFETY: a live tensor; the C++ side only reads it.
    new_tensor(|out| unsafe { ffi::maelab_ext_attention(ptr(qkv), heads, out) })
}

/// `a @ b` ([M, K] @ [K, N]) on oneDNN's matmul, without autograd.
pub fn onednn_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, TorchExtError> {
    // SAFETY: two live tensors; the C++ side only reads them.
    new_tensor(|out| unsafe { ffi::maelab_ext_onednn_mm(ptr(a), ptr(b), out) })
}

/// One AdamW step over one parameter group (one lr, one weight decay) with
/// libtorch's fused kernel: `params`, `grads`, `exp_avgs` and `exp_avg_sqs`
/// line up; `step` is a float scalar tensor on the parameters' device holding
/// the step count after this step.
#[allow(clippy::too_many_arguments)]
pub fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    step: &Tensor,
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    eps: f64,
) -> Result<(), TorchExtError> {
    let n = params.len();
    if [grads.len(), exp_avgs.len(), exp_avg_sqs.len()] != [n; 3] {
        return Err(TorchExtError(format!(
            "fused_adamw: {n} parameters but {} gradients, {} first and {} second moments",
            grads.len(),
            exp_avgs.len(),
            exp_avg_sqs.len()
        )));
    }
    let ptrs = |ts: &[&Tensor]| ts.iter().map(|t| ptr(t)).collect::<Vec<_>>();
    let (p, g, m, v) = (ptrs(params), ptrs(grads), ptrs(exp_avgs), ptrs(exp_avg_sqs));
    // SAFETY: four arrays of n live tensors and a live step tensor; the
    // tensors are updated in place, the arrays only read.
    check(unsafe {
        ffi::maelab_ext_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n,
            ptr(step),
            lr,
            betas.0,
            betas.1,
            weight_decay,
            eps,
        )
    })
}

/// Sets the gradient of `t` to none.
pub fn clear_grad(t: &Tensor) -> Result<(), TorchExtError> {
    // SAFETY: a live tensor; only its autograd metadata changes.
    check(unsafe { ffi::maelab_ext_clear_grad(ptr(t)) })
}

/// What fp32 Linear layers on the CPU run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinearBackend {
    /// oneDNN's matmul unless MKL is as fast here ([`onednn_beats_mkl`]).
    Auto,
    /// [`linear`], wherever it works.
    OneDnn,
    /// libtorch's own `linear` (MKL's sgemm on x86).
    Libtorch,
}

/// The process-wide [`LinearBackend`], as its discriminant.
static LINEAR_BACKEND: AtomicU8 = AtomicU8::new(LinearBackend::Auto as u8);

/// Choose what every fp32 CPU Linear runs on from now on (`maelab-worker
/// bench --linear`, for side-by-side measurements).
pub fn set_linear_backend(backend: LinearBackend) {
    LINEAR_BACKEND.store(backend as u8, Ordering::Relaxed);
}

/// Whether oneDNN's matmul is the faster fp32 GEMM for a CPU of this vendor
/// (`cpuid`'s vendor string). MKL, behind libtorch's `linear`, picks its
/// code path by vendor: AVX-512 on Intel, where it ran a step 3-15% faster
/// than oneDNN (Sapphire Rapids class), and AVX2 on AMD, where oneDNN's
/// AVX-512 is 1.1-2.1x its 2048² rate (docs/benchmarks.md).
pub fn onednn_beats_mkl(vendor: &str) -> bool {
    vendor != "GenuineIntel"
}

/// This CPU's vendor string ("GenuineIntel", "AuthenticAMD"), empty off x86-64.
pub fn cpu_vendor() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0 is on every x86-64 CPU: the vendor is EBX, EDX, ECX.
        let r = std::arch::x86_64::__cpuid(0);
        let bytes: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::new()
    }
}

/// Whether fp32 CPU Linear layers go to [`linear`] by the current setting;
/// `Auto` decides once per process and says so in the log.
fn onednn_linear_chosen() -> bool {
    static AUTO: OnceLock<bool> = OnceLock::new();
    match LINEAR_BACKEND.load(Ordering::Relaxed) {
        b if b == LinearBackend::OneDnn as u8 => true,
        b if b == LinearBackend::Libtorch as u8 => false,
        _ => *AUTO.get_or_init(|| {
            let vendor = cpu_vendor();
            let onednn = onednn_beats_mkl(&vendor);
            let on = if onednn {
                "oneDNN's matmul"
            } else {
                "libtorch's linear (MKL)"
            };
            tracing::info!("CPU vendor {vendor:?}: fp32 Linear layers run on {on}");
            onednn
        }),
    }
}

/// Off: attention uses libtorch's `scaled_dot_product_attention` on the CPU
/// too (`maelab-worker bench --attention sdpa`, for side-by-side measurements).
static ONEDNN_ATTENTION_OFF: AtomicBool = AtomicBool::new(false);

/// Switch [`attention`] on or off for the whole process.
pub fn set_onednn_attention(enabled: bool) {
    ONEDNN_ATTENTION_OFF.store(!enabled, Ordering::Relaxed);
}

/// Whether self-attention on `qkv` goes to [`attention`]: fp32 on the CPU
/// (under autocast the projection comes out bf16, which keeps SDPA), switched
/// on, and oneDNN's matmul working here.
pub fn use_onednn_attention(qkv: &Tensor) -> bool {
    qkv.device() == Device::Cpu
        && qkv.kind() == Kind::Float
        && !ONEDNN_ATTENTION_OFF.load(Ordering::Relaxed)
        && onednn_linear_works()
}

/// Whether oneDNN's fp32 matmul works in this process: libtorch refuses it on
/// x86 CPUs without AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT. Tried once.
pub fn onednn_linear_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::ones([4, 8], opts);
        let w = Tensor::ones([2, 8], opts);
        let b = Tensor::zeros([2], opts);
        match linear(&x, &w, &b) {
            Ok(y) => {
                let ok = y.double_value(&[0, 0]) == 8.0;
                if !ok {
                    tracing::warn!("oneDNN linear gave a wrong result; Linear uses libtorch's");
                }
                ok
            }
            Err(e) => {
                tracing::info!("oneDNN linear unavailable ({e}); Linear uses libtorch's");
                false
            }
        }
    })
}

/// Whether a Linear on `x` with weights of `weight_kind` goes to [`linear`]:
/// fp32 on the CPU, chosen ([`LinearBackend`]), and working here.
pub fn use_onednn_linear(x: &Tensor, weight_kind: Kind) -> bool {
    x.device() == Device::Cpu
        && x.kind() == Kind::Float
        && weight_kind == Kind::Float
        && onednn_linear_chosen()
        && onednn_linear_works()
}
