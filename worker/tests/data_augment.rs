//! Augmentation: crop geometry, flips, normalisation range, random erasing,
//! mixup/cutmix and label smoothing.

use std::sync::Arc;

use maelab_worker::data::augment::{
    self, CROP_RATIO, Crop, PRETRAIN_CROP_SCALE, random_erase, random_resized_crop,
    resized_crop_normalised,
};
use maelab_worker::data::mixup::{MixConfig, mix_batch, mixed_targets};
use maelab_worker::data::{
    Augment, CIFAR10_MEAN, CIFAR10_STD, Dataset, FinetuneAugment, Loader, LoaderConfig, to_tensor,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tch::Tensor;

/// `n` random-looking 32x32 images, labels cycling over 10 classes.
fn dataset(n: usize) -> Dataset {
    let mut rng = StdRng::seed_from_u64(7);
    let images = (0..n * 32 * 32 * 3)
        .map(|_| rand::Rng::r#gen::<u8>(&mut rng))
        .collect();
    Dataset {
        images,
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        height: 32,
        width: 32,
        classes: (0..10).map(|i| format!("c{i}")).collect(),
    }
}

fn config(augment: Augment) -> LoaderConfig {
    LoaderConfig {
        batch_size: 8,
        shuffle: false,
        drop_last: false,
        seed: 3,
        epoch: 0,
        augment,
        limit: None,
        threads: 1,
        prefetch: 2,
    }
}

fn first_batch(ds: &Arc<Dataset>, augment: Augment) -> maelab_worker::data::Batch {
    Loader::new(ds.clone(), config(augment)).next().unwrap()
}

#[test]
fn crops_stay_inside_the_image_and_cover_the_scale_range() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut areas = Vec::new();
    for _ in 0..2000 {
        let c = random_resized_crop(&mut rng, 32, 32, PRETRAIN_CROP_SCALE, CROP_RATIO);
        assert!(c.height >= 1 && c.width >= 1);
        assert!(c.top + c.height <= 32 && c.left + c.width <= 32, "{c:?}");
        let ratio = c.width as f64 / c.height as f64;
        // Rounding to whole pixels widens the ratio range a little.
        assert!((0.6..=1.7).contains(&ratio), "{c:?}");
        areas.push((c.height * c.width) as f64 / 1024.0);
    }
    let min = areas.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = areas.iter().cloned().fold(0.0, f64::max);
    assert!((0.17..0.25).contains(&min), "min area {min}");
    assert!(max > 0.9, "max area {max}");
}

#[test]
fn full_crop_is_plain_normalisation_and_flip_mirrors() {
    let ds = dataset(1);
    let src = ds.image(0);
    let mut plain = vec![0f32; 3 * 1024];
    resized_crop_normalised(src, 32, 32, Crop::full(32, 32), false, &mut plain);
    for (p, c) in [(0, 0), (33, 1), (1023, 2), (517, 0)] {
        let expected = (src[p * 3 + c] as f32 / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c];
        assert!((plain[c * 1024 + p] - expected).abs() < 1e-5);
    }
    let mut flipped = vec![0f32; 3 * 1024];
    resized_crop_normalised(src, 32, 32, Crop::full(32, 32), true, &mut flipped);
    assert_ne!(plain, flipped);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                assert_eq!(
                    flipped[c * 1024 + y * 32 + x],
                    plain[c * 1024 + y * 32 + 31 - x]
                );
            }
        }
    }
}

#[test]
fn a_crop_is_upsampled_from_its_own_pixels() {
    // Left half black, right half white: a crop of the left half is all black.
    let mut img = vec![0u8; 32 * 32 * 3];
    for y in 0..32 {
        for x in 16..32 {
            img[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3].fill(255);
        }
    }
    let left = Crop {
        top: 0,
        left: 0,
        height: 32,
        width: 16,
    };
    let mut out = vec![0f32; 3 * 1024];
    resized_crop_normalised(&img, 32, 32, left, false, &mut out);
    let black0 = -CIFAR10_MEAN[0] / CIFAR10_STD[0];
    assert!(out[..1024].iter().all(|&v| (v - black0).abs() < 1e-5));
    // A crop across the edge blends: the middle column is between black and white.
    let middle = Crop {
        top: 0,
        left: 8,
        height: 32,
        width: 16,
    };
    resized_crop_normalised(&img, 32, 32, middle, false, &mut out);
    let white0 = (1.0 - CIFAR10_MEAN[0]) / CIFAR10_STD[0];
    let v = out[15];
    assert!(v > black0 + 0.1 && v < white0 - 0.1, "{v}");
}

#[test]
fn pretrain_batches_have_the_right_shape_range_and_change_images() {
    let ds = Arc::new(dataset(8));
    let plain = first_batch(&ds, Augment::None);
    assert_eq!(plain.images.size(), vec![8, 3, 32, 32]);
    assert_eq!(plain.images.kind(), tch::Kind::Float);
    assert!(plain.targets.is_none());
    assert!(plain.images.allclose(
        &to_tensor(&ds, &(0..8).collect::<Vec<_>>()),
        0.0,
        0.0,
        false
    ));

    let aug = first_batch(&ds, Augment::pretrain());
    assert_eq!(aug.images.size(), vec![8, 3, 32, 32]);
    assert_eq!(aug.labels, plain.labels);
    for c in 0..3 {
        let ch = aug.images.select(1, c as i64);
        let lo = -CIFAR10_MEAN[c] / CIFAR10_STD[c] - 1e-5;
        let hi = (1.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c] + 1e-5;
        assert!(ch.min().double_value(&[]) >= lo as f64);
        assert!(ch.max().double_value(&[]) <= hi as f64);
    }
    // Every image differs from its unaugmented self (a full-size unflipped
    // crop of 8 images in a row is vanishingly unlikely).
    let diff = (&aug.images - &plain.images).abs().sum_dim_intlist(
        &[1i64, 2, 3][..],
        false,
        tch::Kind::Float,
    );
    for i in 0..8 {
        assert!(diff.double_value(&[i]) > 1.0, "image {i} unchanged");
    }
}

#[test]
fn random_erasing_fills_a_rectangle_with_noise() {
    let ds = dataset(1);
    let mut img = vec![0f32; 3 * 1024];
    augment::normalised(&ds, 0, &mut img);
    let before = img.clone();
    let mut rng = StdRng::seed_from_u64(5);
    assert!(!random_erase(&mut rng, &mut img, 32, 32, 0.0));
    assert_eq!(img, before);
    assert!(random_erase(&mut rng, &mut img, 32, 32, 1.0));
    let changed: Vec<usize> = (0..1024).filter(|&p| img[p] != before[p]).collect();
    // Between 2% and a third of the area (plus rounding), as one rectangle.
    assert!(
        changed.len() >= 15 && changed.len() <= 400,
        "{}",
        changed.len()
    );
    let (ys, xs): (Vec<usize>, Vec<usize>) = changed.iter().map(|p| (p / 32, p % 32)).unzip();
    let h = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
    let w = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
    assert_eq!(h * w, changed.len(), "not a rectangle");
}

fn mix(mixup: f64, cutmix: f64, smoothing: f64) -> MixConfig {
    MixConfig {
        mixup,
        cutmix,
        prob: 1.0,
        switch_prob: 0.5,
        smoothing,
        num_classes: 10,
    }
}

#[test]
fn mixup_blends_each_image_with_its_mirror() {
    let (b, plane) = (4, 2 * 2);
    let original: Vec<f32> = (0..b * 3 * plane).map(|v| v as f32).collect();
    let mut images = original.clone();
    let mut rng = StdRng::seed_from_u64(11);
    let m = mix_batch(&mut rng, &mix(0.8, 0.0, 0.0), &mut images, b, 2, 2);
    assert!(m.cutmix_box.is_none() && m.lam > 0.0 && m.lam < 1.0);
    let per = 3 * plane;
    for i in 0..b {
        for k in 0..per {
            let expected = m.lam * original[i * per + k] as f64
                + (1.0 - m.lam) * original[(b - 1 - i) * per + k] as f64;
            assert!((images[i * per + k] as f64 - expected).abs() < 1e-3);
        }
    }
}

#[test]
fn cutmix_pastes_a_box_and_weights_labels_by_area() {
    let (b, side) = (2, 16);
    let plane = side * side;
    let mut images: Vec<f32> = vec![0.0; plane * 3];
    images.extend(vec![1.0; plane * 3]);
    let mut rng = StdRng::seed_from_u64(2);
    // Draw until a non-empty box (a box can clip to nothing at an edge).
    let m = loop {
        let mut trial = images.clone();
        let m = mix_batch(&mut rng, &mix(0.0, 1.0, 0.0), &mut trial, b, side, side);
        if m.lam < 1.0 {
            images = trial;
            break m;
        }
    };
    let (top, bottom, left, right) = m.cutmix_box.unwrap();
    let pasted = images[..plane * 3].iter().filter(|&&v| v == 1.0).count();
    assert_eq!(pasted, 3 * (bottom - top) * (right - left));
    assert!((m.lam - (1.0 - pasted as f64 / (3 * plane) as f64)).abs() < 1e-9);
}

#[test]
fn soft_targets_sum_to_one_and_smoothing_sets_the_floor() {
    let labels = [0i64, 3, 3, 9];
    let t = mixed_targets(&labels, 1.0, 0.1, 10);
    for (i, row) in t.chunks(10).enumerate() {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((row[labels[i] as usize] - 0.91).abs() < 1e-6);
        let min = row.iter().cloned().fold(f32::INFINITY, f32::min);
        assert!((min - 0.01).abs() < 1e-7);
    }
    let t = mixed_targets(&labels, 0.3, 0.0, 10);
    assert!((t[0] - 0.3).abs() < 1e-6 && (t[9] - 0.7).abs() < 1e-6);
}

#[test]
fn finetune_batches_carry_soft_targets() {
    let ds = Arc::new(dataset(16));
    let batch = first_batch(&ds, Augment::Finetune(FinetuneAugment::recipe(10)));
    assert_eq!(batch.images.size(), vec![8, 3, 32, 32]);
    let targets = batch.targets.unwrap();
    assert_eq!(targets.size(), vec![8, 10]);
    let sums = targets.sum_dim_intlist(&[1i64][..], false, tch::Kind::Float);
    assert!(sums.allclose(
        &Tensor::ones([8], (tch::Kind::Float, tch::Device::Cpu)),
        1e-5,
        1e-5,
        false
    ));
    assert!((targets.min().double_value(&[]) - 0.01).abs() < 1e-6);
    assert!(targets.max().double_value(&[]) <= 0.91 + 1e-6);

    // Smoothing without mixing: the label's column holds 0.91, others 0.01.
    let mut only_smooth = FinetuneAugment::recipe(10);
    only_smooth.mixup = 0.0;
    only_smooth.cutmix = 0.0;
    let batch = first_batch(&ds, Augment::Finetune(only_smooth));
    let targets = batch.targets.unwrap();
    let on = targets.gather(1, &batch.labels.unsqueeze(1), false);
    assert!(on.allclose(
        &Tensor::full([8, 1], 0.91, (tch::Kind::Float, tch::Device::Cpu)),
        1e-6,
        1e-6,
        false
    ));

    // No mixing and no smoothing: hard labels only.
    let mut none = FinetuneAugment::recipe(10);
    none.mixup = 0.0;
    none.cutmix = 0.0;
    none.smoothing = 0.0;
    assert!(first_batch(&ds, Augment::Finetune(none)).targets.is_none());
}
