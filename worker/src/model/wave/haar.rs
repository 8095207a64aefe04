//! The 2-D Haar wavelet transform as fixed-filter convolutions, so autograd
//! flows through it like through any other layer.
//!
//! Wave-ViT (<https://arxiv.org/abs/2207.04978>) down-samples keys and values
//! with a DWT instead of a strided conv because the DWT is invertible: nothing
//! is lost, and the IDWT can bring the filtered sub-bands back to full
//! resolution. The four 2x2 Haar filters are orthonormal, so the IDWT is the
//! transposed convolution with the very same filters.
//!
//! Layout (Wave-ViT's `DWT_2D`): `dwt` maps `[B, C, H, W]` to
//! `[B, 4C, H/2, W/2]` with the sub-bands concatenated band-major,
//! `[LL(C) | LH(C) | HL(C) | HH(C)]`, so `narrow(1, C, 3C)` is the
//! high-frequency part. `idwt` reads the same layout.

use tch::{Device, Kind, Tensor};

/// Number of Haar sub-bands (LL, LH, HL, HH).
pub const BANDS: i64 = 4;

/// The four orthonormal 2x2 Haar analysis filters, LL, LH, HL, HH, as
/// `[4, 1, 2, 2]`. LH is low-pass along the width and high-pass along the
/// height (horizontal edges), HL the other way round.
pub fn haar_filters(kind: Kind, device: Device) -> Tensor {
    #[rustfmt::skip]
    let taps: [f32; 16] = [
        0.5, 0.5, 0.5, 0.5,     // LL
        0.5, 0.5, -0.5, -0.5,   // LH
        0.5, -0.5, 0.5, -0.5,   // HL
        0.5, -0.5, -0.5, 0.5,   // HH
    ];
    Tensor::from_slice(&taps)
        .view([BANDS, 1, 2, 2])
        .to_kind(kind)
        .to_device(device)
}

/// Haar DWT / IDWT with the filters made once for a device.
#[derive(Debug)]
pub struct Haar {
    /// `[4, 1, 2, 2]`, see [`haar_filters`]; not a parameter (never trained,
    /// never saved).
    filters: Tensor,
}

impl Haar {
    pub fn new(device: Device) -> Self {
        Self {
            filters: haar_filters(Kind::Float, device),
        }
    }

    /// The filters repeated for `c` groups in the input's dtype: `[4c, 1, 2, 2]`,
    /// channel-major (`c0: LL LH HL HH, c1: ...`) as a grouped conv wants.
    fn grouped(&self, c: i64, like: &Tensor) -> Tensor {
        let f = if self.filters.kind() == like.kind() && self.filters.device() == like.device() {
            self.filters.shallow_clone()
        } else {
            self.filters.to_device(like.device()).to_kind(like.kind())
        };
        f.repeat([c, 1, 1, 1])
    }

    /// `[B, C, H, W]` -> `[B, 4C, H/2, W/2]`, band-major.
    ///
    /// # Panics
    /// When H or W is odd. Run configs with an odd token grid are rejected
    /// before training (core's validation), so the model never gets here.
    pub fn dwt(&self, x: &Tensor) -> Tensor {
        let &[b, c, h, w] = x.size().as_slice() else {
            panic!("dwt wants [B, C, H, W], got {:?}", x.size())
        };
        assert!(
            h % 2 == 0 && w % 2 == 0,
            "dwt needs an even grid, got {h}x{w}"
        );
        // [B, 4C, H/2, W/2], channel-major
        let y = x.conv2d(
            &self.grouped(c, x),
            None::<Tensor>,
            [2, 2],
            [0, 0],
            [1, 1],
            c,
        );
        // [B, C, 4, H/2, W/2] -> [B, 4, C, H/2, W/2] -> band-major
        y.view([b, c, BANDS, h / 2, w / 2])
            .transpose(1, 2)
            .reshape([b, BANDS * c, h / 2, w / 2])
    }

    /// `[B, 4C, h, w]` (band-major) -> `[B, C, 2h, 2w]`; the exact inverse of
    /// [`Haar::dwt`] because the filters are orthonormal.
    ///
    /// # Panics
    /// When the channel count is not a multiple of 4.
    pub fn idwt(&self, x: &Tensor) -> Tensor {
        let &[b, c4, h, w] = x.size().as_slice() else {
            panic!("idwt wants [B, 4C, h, w], got {:?}", x.size())
        };
        assert!(c4 % BANDS == 0, "idwt needs 4C channels, got {c4}");
        let c = c4 / BANDS;
        // band-major -> channel-major: [B, 4, C, h, w] -> [B, C, 4, h, w]
        let y = x
            .view([b, BANDS, c, h, w])
            .transpose(1, 2)
            .reshape([b, c4, h, w]);
        // [B, C, 2h, 2w]
        y.conv_transpose2d(
            &self.grouped(c, x),
            None::<Tensor>,
            [2, 2],
            [0, 0],
            [0, 0],
            c,
            [1, 1],
        )
    }

    /// The high-frequency sub-bands (LH, HL, HH) of `[B, C, H, W]`:
    /// `[B, 3C, H/2, W/2]`.
    pub fn high(&self, x: &Tensor) -> Tensor {
        let c = x.size()[1];
        self.dwt(x).narrow(1, c, (BANDS - 1) * c)
    }
}
