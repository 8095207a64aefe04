//! Sharpness metrics and the frequency-aware loss: blur lowers the HF ratio,
//! noise lowers the PSNR, visible patches are ignored, and the HF loss sees
//! edges but not brightness.

use maelab_worker::metrics::sharpness::{hf_ratio_masked, psnr_masked};
use maelab_worker::metrics::{FrequencyLoss, MetricsError, sharpness};
use maelab_worker::model::patchify::patchify;
use maelab_worker::model::wave::Haar;
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

fn setup(seed: i64) {
    tch::set_num_threads(1);
    tch::manual_seed(seed);
}

/// Textured images in [0, 1]: [B, 3, 32, 32].
fn images(b: i64) -> Tensor {
    Tensor::rand([b, 3, 32, 32], CPU)
}

/// A 3x3 box blur per channel, edges replicated.
fn box_blur(x: &Tensor) -> Tensor {
    let c = x.size()[1];
    let k = Tensor::ones([c, 1, 3, 3], CPU) / 9.0;
    x.pad([1, 1, 1, 1], "replicate", None)
        .conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], c)
}

/// 75% of the 64 patches of a 32x32 image at patch 4 masked, the first 16 visible.
fn mask(b: i64) -> Tensor {
    let m = Tensor::ones([b, 64], CPU);
    let _ = m.narrow(1, 0, 16).fill_(0.0);
    m
}

#[test]
fn blurred_reconstruction_scores_a_lower_hf_ratio() {
    setup(0);
    let orig = images(8);
    let m = mask(8);
    let sharp = sharpness(&orig, &orig, &m, 4).unwrap();
    assert!((sharp.hf_ratio - 1.0).abs() < 1e-9);
    let blurred = sharpness(&box_blur(&orig), &orig, &m, 4).unwrap();
    assert!(
        blurred.hf_ratio < 0.5 * sharp.hf_ratio,
        "blurred {blurred:?}"
    );
    // More blur, less HF energy.
    let twice = hf_ratio_masked(&box_blur(&box_blur(&orig)), &orig, &m, 4).unwrap();
    assert!(twice < blurred.hf_ratio);
    // Sharpening (adding back the detail twice) goes above 1.
    let sharpened = &orig * 2.0 - box_blur(&orig);
    assert!(hf_ratio_masked(&sharpened, &orig, &m, 4).unwrap() > 1.0);
}

#[test]
fn psnr_is_infinite_for_identical_images_and_drops_with_noise() {
    setup(1);
    let orig = images(4);
    let m = mask(4);
    assert_eq!(
        psnr_masked(&orig, &orig, &m, 4, 1.0).unwrap(),
        f64::INFINITY
    );
    let mut last = f64::INFINITY;
    for sigma in [0.01, 0.05, 0.2] {
        let noisy = &orig + Tensor::randn([4, 3, 32, 32], CPU) * sigma;
        let p = psnr_masked(&noisy, &orig, &m, 4, 1.0).unwrap();
        assert!(p < last, "sigma {sigma}: {p} dB not below {last}");
        // Gaussian noise: PSNR close to -20 log10(sigma).
        assert!(
            (p + 20.0 * sigma.log10()).abs() < 0.5,
            "sigma {sigma}: {p} dB"
        );
        last = p;
    }
}

#[test]
fn visible_patches_do_not_count() {
    setup(2);
    let orig = images(2);
    let m = mask(2);
    // Ruin only the first 16 patches (visible): rows 0..4 hold patches 0..8,
    // rows 4..8 patches 8..16, so the top 8 pixel rows are visible.
    let recon = orig.copy();
    let _ = recon.narrow(2, 0, 8).fill_(0.5);
    let s = sharpness(&recon, &orig, &m, 4).unwrap();
    assert_eq!(s.psnr, f64::INFINITY);
    assert!((s.hf_ratio - 1.0).abs() < 1e-9);
    // Ruin one masked row and both metrics notice.
    let _ = recon.narrow(2, 8, 4).fill_(0.5);
    let s = sharpness(&recon, &orig, &m, 4).unwrap();
    assert!(s.psnr.is_finite() && s.hf_ratio < 1.0);
}

#[test]
fn bad_inputs_are_errors() {
    let orig = images(1);
    assert_eq!(
        sharpness(&orig, &orig, &mask(1), 3).err(),
        Some(MetricsError::OddPatch { patch: 3 })
    );
    assert!(matches!(
        sharpness(&orig, &orig, &mask(2), 4),
        Err(MetricsError::Shape { what: "mask", .. })
    ));
    let none = Tensor::zeros([1, 64], CPU);
    assert_eq!(
        sharpness(&orig, &orig, &none, 4).err(),
        Some(MetricsError::NoMaskedPatches)
    );
    let flat = Tensor::ones([1, 3, 32, 32], CPU);
    assert_eq!(
        hf_ratio_masked(&orig, &flat, &mask(1), 4).err(),
        Some(MetricsError::FlatOriginal)
    );
    assert!(FrequencyLoss::new(3, 3, 1.0, Device::Cpu).is_err());
}

#[test]
fn hf_loss_ignores_brightness_but_not_edges() {
    setup(3);
    let target_img = images(2);
    let m = mask(2);
    let target = patchify(&target_img, 4);
    let fl = FrequencyLoss::new(4, 3, 1.0, Device::Cpu).unwrap();
    let f = |x: Tensor| f64::try_from(x).unwrap();
    assert_eq!(f(fl.loss(&target, &target, &m)), 0.0);
    // A constant offset is all low frequency.
    let brighter = &target + 0.3;
    assert!(f(fl.pixel(&brighter, &target, &m)) > 0.05);
    assert!(f(fl.high_frequency(&brighter, &target, &m)) < 1e-10);
    // A blurred prediction loses edges.
    let blurred = patchify(&box_blur(&target_img), 4);
    let hf = f(fl.high_frequency(&blurred, &target, &m));
    assert!(hf > 1e-3);
    let pixel = f(fl.pixel(&blurred, &target, &m));
    let weighted = FrequencyLoss::new(4, 3, 0.5, Device::Cpu).unwrap();
    assert!((f(weighted.loss(&blurred, &target, &m)) - (pixel + 0.5 * hf)).abs() < 1e-6);
}

#[test]
fn hf_loss_reads_the_patchify_layout() {
    setup(4);
    // With every patch masked, the loss is the mean over patches, sub-bands
    // and channels of the squared RMS difference, where a 4x4 patch holds a
    // 2x2 block of each sub-band of the whole-image DWT (patch 4 is even, so
    // Haar blocks never cross patches).
    let (a, b) = (images(2), images(2));
    let all = Tensor::ones([2, 64], CPU);
    let fl = FrequencyLoss::new(4, 3, 1.0, Device::Cpu).unwrap();
    let loss = f64::try_from(fl.high_frequency(&patchify(&a, 4), &patchify(&b, 4), &all)).unwrap();
    let haar = Haar::new(Device::Cpu);
    // [2, 9, 16, 16] -> [2, 9, 8, 2, 8, 2] -> RMS per patch [2, 9, 8, 8]
    let rms = |x: &Tensor| {
        (haar.high(x).reshape([2, 9, 8, 2, 8, 2]).square().mean_dim(
            [3i64, 5].as_slice(),
            false,
            Kind::Double,
        ) + 1e-8)
            .sqrt()
    };
    let expected = f64::try_from((rms(&a) - rms(&b)).square().mean(Kind::Double)).unwrap();
    assert!(
        (loss - expected).abs() < 1e-5 * expected,
        "{loss} vs {expected}"
    );
    // Only masked patches count.
    let some = mask(2);
    let visible_changed = patchify(&b, 4);
    let _ = visible_changed.narrow(1, 0, 16).fill_(0.0);
    let l1 = f64::try_from(fl.loss(&patchify(&a, 4), &patchify(&b, 4), &some)).unwrap();
    let l2 = f64::try_from(fl.loss(&patchify(&a, 4), &visible_changed, &some)).unwrap();
    assert_eq!(l1, l2);
}

#[test]
fn hf_loss_asks_for_the_amount_of_detail_not_its_place() {
    setup(6);
    let target_img = images(2);
    let m = mask(2);
    let target = patchify(&target_img, 4);
    let fl = FrequencyLoss::new(4, 3, 1.0, Device::Cpu).unwrap();
    let f = |x: Tensor| f64::try_from(x).unwrap();
    let haar = Haar::new(Device::Cpu);
    let bands = haar.dwt(&target_img); // [2, 12, 16, 16], LL first
    // The target's detail with its sign flipped: wrong in every pixel, the
    // right amount of it.
    let flipped = Tensor::cat(&[bands.narrow(1, 0, 3), -bands.narrow(1, 3, 9)], 1);
    let flipped = patchify(&haar.idwt(&flipped), 4);
    // No detail at all: what a pixel MSE drifts to under uncertainty.
    let flat = Tensor::cat(
        &[bands.narrow(1, 0, 3), bands.narrow(1, 3, 9).zeros_like()],
        1,
    );
    let flat = patchify(&haar.idwt(&flat), 4);
    assert!(f(fl.high_frequency(&flipped, &target, &m)) < 1e-9);
    assert!(f(fl.high_frequency(&flat, &target, &m)) > 1e-3);
    // The pixel term judges the other way round: flipped detail costs more
    // than none, which is why MAE's reconstructions blur.
    assert!(f(fl.pixel(&flipped, &target, &m)) > f(fl.pixel(&flat, &target, &m)));
}

#[test]
fn frequency_loss_has_gradients() {
    setup(5);
    let target = patchify(&images(1), 4);
    let pred = Tensor::rand([1, 64, 48], CPU).set_requires_grad(true);
    let fl = FrequencyLoss::new(4, 3, 2.0, Device::Cpu).unwrap();
    fl.high_frequency(&pred, &target, &mask(1)).backward();
    let g = pred.grad();
    // Visible patches get none, masked ones do.
    assert_eq!(
        f64::try_from(g.narrow(1, 0, 16).abs().sum(Kind::Float)).unwrap(),
        0.0
    );
    assert!(f64::try_from(g.narrow(1, 16, 48).abs().sum(Kind::Float)).unwrap() > 0.0);
}
