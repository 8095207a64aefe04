//! `precision = "bf16"`: the forward pass of a training step under libtorch's
//! own autocast (at::autocast, what `torch.autocast(dtype=torch.bfloat16)`
//! switches on). Matmuls, linears, convolutions and SDPA run in bf16 from the
//! fp32 master weights (on CUDA, SDPA's bf16 inputs select its fused flash /
//! memory-efficient kernels); the ops on libtorch's fp32 list run in fp32, and
//! the model keeps LayerNorm and the losses in fp32 itself. Backward runs
//! outside, in the dtypes the forward recorded, so gradients and AdamW's
//! moments stay fp32. bf16 has fp32's exponent range: no loss scaling.
//!
//! Why not `tch::autocast`: in tch 0.24 it switches CUDA autocast only, in its
//! default dtype (fp16, which would need a GradScaler), and does nothing where
//! CUDA is missing. The dtype and the CPU switch are libtorch functions tch does
//! not wrap; they are declared here by their C++ symbols in libtorch_cpu, which
//! torch-sys links (a changed signature fails the link, not a run).
//!
//! On the CPU, libtorch's bf16 autocast runs too (fast with AVX512-BF16/AMX,
//! emulated elsewhere): allowed, so the bf16 path is tested without a GPU.

use maelab_core::config::Precision;
use tch::Device;

/// libtorch's declarations, from ATen/autocast_mode.h (torch 2.11).
/// `c10::DeviceType` and `c10::ScalarType` are `enum class : int8_t`.
mod ffi {
    unsafe extern "C" {
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device_type: i8) -> bool;
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device_type: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device_type: i8) -> i8;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device_type: i8, dtype: i8);
        #[link_name = "_ZN2at8autocast17increment_nestingEv"]
        pub fn increment_nesting() -> i32;
        #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
        pub fn decrement_nesting() -> i32;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub fn clear_cache();
    }
}

/// c10::DeviceType::CPU and ::CUDA, the only types passed to [`ffi`]: for
/// others libtorch throws, which must not unwind into Rust.
const CPU: i8 = 0;
const CUDA: i8 = 1;
/// c10::ScalarType::BFloat16.
const BFLOAT16: i8 = 15;

/// `precision = "bf16"` asked on a device libtorch has no autocast for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "precision = \"bf16\": libtorch has no bf16 autocast on device {device}; use a CPU or CUDA device, or precision = \"fp32\""
)]
pub struct Bf16Unsupported {
    pub device: String,
}

/// How a run's forward passes compute: plain fp32, or under bf16 autocast on
/// one device type. Made once per run by [`Autocast::new`], which is where an
/// unsupported device is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autocast {
    /// The autocast device type; `None` for fp32.
    device_type: Option<i8>,
}

impl Autocast {
    /// fp32: no autocast.
    pub const FP32: Self = Self { device_type: None };

    pub fn new(precision: Precision, device: Device) -> Result<Self, Bf16Unsupported> {
        let device_type = match (precision, device) {
            (Precision::Fp32, _) => None,
            (Precision::Bf16, Device::Cpu) => Some(CPU),
            (Precision::Bf16, Device::Cuda(_)) => Some(CUDA),
            (Precision::Bf16, other) => {
                return Err(Bf16Unsupported {
                    device: format!("{other:?}"),
                });
            }
        };
        Ok(Self { device_type })
    }

    /// Whether [`Autocast::run`] switches autocast on.
    pub fn is_bf16(self) -> bool {
        self.device_type.is_some()
    }

    /// Run `f` (a forward pass, not its backward) under bf16 autocast when
    /// this is bf16; the previous autocast state comes back afterwards, also
    /// when `f` panics.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        match self.device_type {
            None => f(),
            Some(device_type) => {
                let _scope = Scope::enter(device_type);
                f()
            }
        }
    }
}

/// The autocast state of one device type, changed on entry and restored on drop.
struct Scope {
    device_type: i8,
    was_enabled: bool,
    was_dtype: i8,
}

impl Scope {
    fn enter(device_type: i8) -> Self {
        // SAFETY: plain thread-local setters and getters of libtorch, called
        // with a device type it supports (CPU or CUDA) and a valid dtype.
        unsafe {
            let scope = Self {
                device_type,
                was_enabled: ffi::is_autocast_enabled(device_type),
                was_dtype: ffi::get_autocast_dtype(device_type),
            };
            ffi::set_autocast_dtype(device_type, BFLOAT16);
            ffi::set_autocast_enabled(device_type, true);
            ffi::increment_nesting();
            scope
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // SAFETY: as in `enter`. The cache of weights cast to bf16 lives for
        // the outermost scope (torch.autocast's `__exit__` does the same).
        unsafe {
            if ffi::decrement_nesting() == 0 {
                ffi::clear_cache();
            }
            ffi::set_autocast_enabled(self.device_type, self.was_enabled);
            ffi::set_autocast_dtype(self.device_type, self.was_dtype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn cpu_enabled() -> bool {
        // SAFETY: a getter, with a supported device type.
        unsafe { ffi::is_autocast_enabled(CPU) }
    }

    #[test]
    fn bf16_casts_matmuls_and_attention_and_restores_the_state() {
        let bf16 = Autocast::new(Precision::Bf16, Device::Cpu).expect("cpu");
        assert!(bf16.is_bf16());
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let q = Tensor::randn([2, 3, 5, 8], (Kind::Float, Device::Cpu));
        let sdpa = |q: &Tensor| {
            Tensor::scaled_dot_product_attention(q, q, q, None::<Tensor>, 0.0, false, None, false)
        };
        let (mm, attn, sum, was_on) = bf16.run(|| {
            (
                a.matmul(&a.tr()).kind(),
                sdpa(&q).kind(),
                // Not on the bf16 list: stays in its input's dtype.
                a.sum(Kind::Float).kind(),
                cpu_enabled(),
            )
        });
        assert!(was_on);
        assert_eq!(
            (mm, attn, sum),
            (Kind::BFloat16, Kind::BFloat16, Kind::Float)
        );
        assert!(!cpu_enabled(), "the scope must switch autocast off again");
        assert_eq!(a.matmul(&a.tr()).kind(), Kind::Float);
        assert_eq!(
            Autocast::FP32.run(|| sdpa(&q).kind()),
            Kind::Float,
            "fp32 stays fp32"
        );
    }

    #[test]
    fn attention_gets_bf16_inputs_under_autocast() {
        // q, k and v are slices of the qkv Linear's output: bf16 under autocast
        // even from fp32 tokens, which is what selects SDPA's fused kernels.
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let qkv = crate::model::layers::Linear::new(vs.root() / "qkv", 16, 48);
        let attn = crate::model::attention::Attention::new(vs.root() / "attn", 16, 2);
        let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
        let bf16 = Autocast::new(Precision::Bf16, Device::Cpu).expect("cpu");
        let (qkv_kind, out) = bf16.run(|| (qkv.forward(&x).kind(), attn.forward(&x)));
        assert_eq!(qkv_kind, Kind::BFloat16);
        assert_eq!(out.kind(), Kind::BFloat16);
        // The master weights stay fp32, and so do their gradients.
        out.to_kind(Kind::Float).sum(Kind::Float).backward();
        for (name, var) in vs.variables() {
            assert_eq!(var.kind(), Kind::Float, "{name}");
            if name.starts_with("attn.") {
                assert_eq!(var.grad().kind(), Kind::Float, "grad of {name}");
            }
        }
    }

    #[test]
    fn scopes_nest_and_survive_a_panic() {
        let bf16 = Autocast::new(Precision::Bf16, Device::Cpu).expect("cpu");
        let inner = bf16.run(|| bf16.run(cpu_enabled) && cpu_enabled());
        assert!(inner);
        assert!(!cpu_enabled());
        let caught = std::panic::catch_unwind(|| bf16.run(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(!cpu_enabled(), "a panic inside must not leave autocast on");
    }

    #[test]
    fn bf16_is_refused_by_name_where_libtorch_has_no_autocast() {
        let err = Autocast::new(Precision::Bf16, Device::Mps).expect_err("mps");
        assert!(err.to_string().contains("precision = \"bf16\""), "{err}");
        assert_eq!(
            Autocast::new(Precision::Fp32, Device::Mps),
            Ok(Autocast::FP32)
        );
        assert!(Autocast::new(Precision::Bf16, Device::Cuda(0)).is_ok());
    }
}
