//! Data on the device (run here on the CPU device): the batched tensor path
//! against the CPU loader. Crop geometry and flips are read back from the
//! device path's output pixels, so the checks cover the resampling grid as
//! well as the draws; distributions are compared with two-sample KS bounds
//! that a wrong sampler (ratio drawn linearly instead of log-uniformly)
//! fails.

use std::rc::Rc;
use std::sync::Arc;

use maelab_worker::data::augment::{CROP_RATIO, Crop, PRETRAIN_CROP_SCALE, random_resized_crop};
use maelab_worker::data::device::{
    DeviceBatches, DeviceSet, apply_mix, crop_flip_normalise, standard_normal,
};
use maelab_worker::data::mixup::Mix;
use maelab_worker::data::{
    Augment, Batch, CIFAR10_MEAN, CIFAR10_STD, DataOnDevice, Dataset, FinetuneAugment, Loader,
    LoaderConfig, TrainSet, to_tensor,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

const SIDE: usize = 32;

fn dataset(images: Vec<u8>, n: usize) -> Dataset {
    Dataset {
        images,
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        height: SIDE,
        width: SIDE,
        classes: (0..10).map(|i| format!("c{i}")).collect(),
    }
}

/// `n` random-looking images.
fn noisy(n: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    dataset((0..n * SIDE * SIDE * 3).map(|_| rng.r#gen()).collect(), n)
}

/// `n` copies of a coordinate image: red is 8x, green 8y. Bilinear
/// resampling of a ramp is exact, so an output pixel says where it was read.
fn ramps(n: usize) -> Dataset {
    let mut one = Vec::with_capacity(SIDE * SIDE * 3);
    for y in 0..SIDE {
        for x in 0..SIDE {
            one.extend([(8 * x) as u8, (8 * y) as u8, 128]);
        }
    }
    dataset(one.repeat(n), n)
}

/// `n` images each filled with one value, [`flat_value`] of its label.
fn flat(n: usize) -> Dataset {
    let images = (0..n)
        .flat_map(|i| std::iter::repeat_n(flat_value((i % 10) as i64), SIDE * SIDE * 3))
        .collect();
    dataset(images, n)
}

fn flat_value(label: i64) -> u8 {
    (30 + 20 * label) as u8
}

fn config(augment: Augment, batch_size: usize, seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last: false,
        seed,
        epoch: 1,
        augment,
        limit: None,
        threads: 2,
        prefetch: 4,
    }
}

fn on_device(ds: &Dataset, cfg: LoaderConfig) -> Vec<Batch> {
    let set = Rc::new(DeviceSet::upload(ds, Device::Cpu).expect("upload"));
    DeviceBatches::try_new(set, cfg).expect("batches").collect()
}

fn on_cpu(ds: &Dataset, cfg: LoaderConfig) -> Vec<Batch> {
    Loader::try_new(Arc::new(ds.clone()), cfg)
        .expect("loader")
        .collect()
}

fn finetune(reprob: f64, mixup: f64, cutmix: f64, smoothing: f64) -> Augment {
    Augment::Finetune(FinetuneAugment {
        reprob,
        mixup,
        cutmix,
        smoothing,
        ..FinetuneAugment::recipe(10)
    })
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1).to_kind(Kind::Float)).expect("f32")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Pixel value (0..=255) of a normalised value of channel `c`.
fn pixel(v: f32, c: usize) -> f64 {
    f64::from((v * CIFAR10_STD[c] + CIFAR10_MEAN[c]) * 255.0)
}

/// Two-sample Kolmogorov-Smirnov statistic.
fn ks(a: &[f64], b: &[f64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The crop and flip that made a ramp image's output, read from its first
/// row (red) and first column (green).
fn read_crop(img: &[f32]) -> (Crop, bool) {
    let plane = SIDE * SIDE;
    let at = |c: usize, y: usize, x: usize| pixel(img[c * plane + y * SIDE + x], c) / 8.0;
    let (x0, x1) = (at(0, 0, 0), at(0, 0, SIDE - 1));
    let (y0, y1) = (at(1, 0, 0), at(1, SIDE - 1, 0));
    for v in [x0, x1, y0, y1] {
        assert!((v - v.round()).abs() < 0.01, "not a pixel centre: {v}");
    }
    let flip = x1 < x0;
    let (left, right) = if flip { (x1, x0) } else { (x0, x1) };
    let crop = Crop {
        top: y0.round() as usize,
        left: left.round() as usize,
        height: (y1 - y0).round() as usize + 1,
        width: (right - left).round() as usize + 1,
    };
    (crop, flip)
}

fn area_and_log_ratio(c: &Crop) -> (f64, f64) {
    (
        (c.height * c.width) as f64 / (SIDE * SIDE) as f64,
        (c.width as f64 / c.height as f64).ln(),
    )
}

/// RandomResizedCrop with the aspect ratio drawn uniformly instead of
/// log-uniformly: the mistake the KS bounds must catch.
fn linear_ratio_crop(rng: &mut StdRng) -> Crop {
    let area = (SIDE * SIDE) as f64;
    for _ in 0..10 {
        let target = area * rng.gen_range(PRETRAIN_CROP_SCALE.0..PRETRAIN_CROP_SCALE.1);
        let aspect = rng.gen_range(CROP_RATIO.0..CROP_RATIO.1);
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if 0 < w && w <= SIDE && 0 < h && h <= SIDE {
            return Crop {
                top: rng.gen_range(0..=SIDE - h),
                left: rng.gen_range(0..=SIDE - w),
                height: h,
                width: w,
            };
        }
    }
    Crop::full(SIDE, SIDE)
}

#[test]
fn an_identity_transform_returns_the_normalised_input() {
    let ds = noisy(4, 1);
    let set = DeviceSet::upload(&ds, Device::Cpu).expect("upload");
    let whole = Tensor::from_slice(&[0f32, 0.0, SIDE as f32, SIDE as f32]).repeat([4, 1]);
    let no = Tensor::zeros([4], (Kind::Bool, Device::Cpu));
    let out = crop_flip_normalise(&set.images, &whole, &no, &set.normalise);
    let expected = to_tensor(&ds, &[0, 1, 2, 3]);
    assert_eq!(out.size(), vec![4, 3, 32, 32]);
    assert!(max_abs_diff(&out, &expected) < 1e-5);
    // A flip alone mirrors the columns.
    let yes = Tensor::ones([4], (Kind::Bool, Device::Cpu));
    let mirrored = crop_flip_normalise(&set.images, &whole, &yes, &set.normalise);
    assert!(max_abs_diff(&mirrored, &expected.flip([3])) < 1e-5);
}

#[test]
fn pretrain_batches_reproduce_the_cpu_loader_for_one_seed() {
    let ds = noisy(100, 2);
    let cfg = config(Augment::pretrain(), 16, 5);
    let (device, cpu) = (on_device(&ds, cfg.clone()), on_cpu(&ds, cfg));
    assert_eq!(device.len(), 7);
    assert_eq!(device.len(), cpu.len());
    for (d, c) in device.iter().zip(&cpu) {
        assert_eq!(d.images.size(), c.images.size());
        assert_eq!(d.images.kind(), Kind::Float);
        assert_eq!(d.labels, c.labels);
        assert!(d.targets.is_none() && c.targets.is_none());
        let diff = max_abs_diff(&d.images, &c.images);
        assert!(diff < 1e-4, "{diff}");
    }
}

#[test]
fn finetune_mixing_reproduces_the_cpu_loader_for_one_seed() {
    let ds = noisy(64, 3);
    let cfg = config(finetune(0.0, 0.8, 1.0, 0.1), 8, 9);
    let (device, cpu) = (on_device(&ds, cfg.clone()), on_cpu(&ds, cfg));
    for (d, c) in device.iter().zip(&cpu) {
        assert!(max_abs_diff(&d.images, &c.images) < 1e-4);
        let (dt, ct) = (
            d.targets.as_ref().expect("soft"),
            c.targets.as_ref().expect("soft"),
        );
        assert_eq!(dt.size(), vec![8, 10]);
        assert!(max_abs_diff(dt, ct) < 1e-6);
    }
}

#[test]
fn crop_scale_ratio_and_flips_follow_torchvision() {
    let n = 8192;
    let batches = on_device(&ramps(n), config(Augment::pretrain(), 256, 11));
    let mut flips = 0;
    let (mut area, mut ratio) = (Vec::new(), Vec::new());
    for b in &batches {
        for img in values(&b.images).chunks_exact(3 * SIDE * SIDE) {
            let (crop, flip) = read_crop(img);
            assert!(crop.top + crop.height <= SIDE && crop.left + crop.width <= SIDE);
            flips += usize::from(flip);
            let (a, r) = area_and_log_ratio(&crop);
            area.push(a);
            ratio.push(r);
        }
    }
    assert_eq!(area.len(), n);
    // torchvision's sampler (today's loader) and the deliberate mistake,
    // each on its own generator.
    let mut rng = StdRng::seed_from_u64(1234);
    let reference: Vec<(f64, f64)> = (0..n)
        .map(|_| {
            let c = random_resized_crop(&mut rng, SIDE, SIDE, PRETRAIN_CROP_SCALE, CROP_RATIO);
            area_and_log_ratio(&c)
        })
        .collect();
    let wrong: Vec<f64> = (0..n)
        .map(|_| area_and_log_ratio(&linear_ratio_crop(&mut rng)).1)
        .collect();
    let (ref_area, ref_ratio): (Vec<f64>, Vec<f64>) = reference.into_iter().unzip();
    // 1.95 * sqrt(2 / n) = 0.030 is the 0.1% critical value of the KS test.
    let bound = 0.035;
    assert!(
        ks(&area, &ref_area) < bound,
        "area {}",
        ks(&area, &ref_area)
    );
    assert!(
        ks(&ratio, &ref_ratio) < bound,
        "ratio {}",
        ks(&ratio, &ref_ratio)
    );
    assert!(
        ks(&wrong, &ref_ratio) > bound,
        "a linear ratio must fail the bound"
    );
    assert!((mean(&area) - mean(&ref_area)).abs() < 0.01);
    assert!(mean(&ratio).abs() < 0.01, "log ratio centred on 0");
    let rate = flips as f64 / n as f64;
    assert!((rate - 0.5).abs() < 0.025, "flip rate {rate}");
}

#[test]
fn normalised_pixel_statistics_match_the_cpu_loader() {
    let ds = noisy(1024, 4);
    let stats = |batches: &[Batch]| {
        let all = Tensor::cat(&batches.iter().map(|b| &b.images).collect::<Vec<_>>(), 0);
        (0..3)
            .map(|c| {
                let ch = all.select(1, c);
                (
                    ch.mean(Kind::Float).double_value(&[]),
                    ch.std(true).double_value(&[]),
                )
            })
            .collect::<Vec<_>>()
    };
    // Different seeds: independent draws, the same distribution.
    let device = stats(&on_device(&ds, config(Augment::pretrain(), 128, 1)));
    let cpu = stats(&on_cpu(&ds, config(Augment::pretrain(), 128, 2)));
    for c in 0..3 {
        let (dm, ds_) = device[c];
        let (cm, cs) = cpu[c];
        assert!((dm - cm).abs() < 0.01, "channel {c} mean {dm} vs {cm}");
        assert!((ds_ - cs).abs() < 0.01, "channel {c} std {ds_} vs {cs}");
        // Uniform pixels: about (127.5/255 - mean) / std and (73.6/255) / std.
        let m = (0.5 - f64::from(CIFAR10_MEAN[c])) / f64::from(CIFAR10_STD[c]);
        assert!(
            (dm - m).abs() < 0.05,
            "channel {c} mean {dm}, expected about {m}"
        );
    }
}

/// From batches of [`flat`] images: per erased image the fraction of its
/// area that is noise, and the rate of erased images. Checks the noise is
/// standard normal.
fn erased_areas(batches: &[Batch], n: usize) -> (Vec<f64>, f64) {
    let (mut areas, mut noise) = (Vec::new(), Vec::new());
    for batch in batches {
        let labels = Vec::<i64>::try_from(&batch.labels).expect("labels");
        let imgs = values(&batch.images);
        for (img, &label) in imgs.chunks_exact(3 * SIDE * SIDE).zip(&labels) {
            let own = f64::from(flat_value(label));
            let changed: Vec<f64> = img[..SIDE * SIDE]
                .iter()
                .filter(|&&v| (pixel(v, 0) - own).abs() > 0.01)
                .map(|&v| f64::from(v))
                .collect();
            if !changed.is_empty() {
                areas.push(changed.len() as f64 / (SIDE * SIDE) as f64);
                noise.extend(changed);
            }
        }
    }
    let m = mean(&noise);
    let sd = (noise.iter().map(|v| (v - m).powi(2)).sum::<f64>() / noise.len() as f64).sqrt();
    assert!(
        m.abs() < 0.05 && (sd - 1.0).abs() < 0.05,
        "noise mean {m} sd {sd}"
    );
    let rate = areas.len() as f64 / n as f64;
    (areas, rate)
}

#[test]
fn erasing_rate_and_area_match_the_cpu_loader() {
    let n = 8192;
    let ds = flat(n);
    let augment = finetune(0.25, 0.0, 0.0, 0.0);
    let device = on_device(&ds, config(augment.clone(), 256, 21));
    assert!(device[0].targets.is_none());
    let cpu = on_cpu(&ds, config(augment, 256, 22));
    let (device_areas, device_rate) = erased_areas(&device, n);
    let (cpu_areas, cpu_rate) = erased_areas(&cpu, n);
    // 4 sigma of a binomial(8192, 0.25) rate is 0.019.
    assert!(
        (device_rate - 0.25).abs() < 0.02,
        "device erase rate {device_rate}"
    );
    assert!((cpu_rate - 0.25).abs() < 0.02, "cpu erase rate {cpu_rate}");
    // About 2000 erased images each: the 0.1% KS critical value is 0.06.
    let d = ks(&device_areas, &cpu_areas);
    assert!(d < 0.07, "erased area KS {d}");
    assert!(mean(&device_areas) > 0.1 && mean(&device_areas) < 0.2);
}

/// From batches of [`flat`] images: per batch lambda read from the targets,
/// and how many batches were pasted (cutmix) rather than blended. Checks the
/// pixels carry the same lambda as the targets.
fn mix_lambdas(batches: &[Batch], smoothing: f64) -> (Vec<f64>, usize) {
    let (off, on) = (smoothing / 10.0, 1.0 - smoothing + smoothing / 10.0);
    let (mut lams, mut cutmix) = (Vec::new(), 0);
    for batch in batches {
        let labels = Vec::<i64>::try_from(&batch.labels).expect("labels");
        let targets = values(batch.targets.as_ref().expect("soft targets"));
        let imgs = values(&batch.images);
        let n = labels.len();
        // An image whose mirror has another label, so both tell lambda.
        let Some(i) = (0..n).find(|&i| labels[i] != labels[n - 1 - i]) else {
            continue;
        };
        let lam = (f64::from(targets[i * 10 + labels[i] as usize]) - off) / (on - off);
        let own = f64::from(flat_value(labels[i]));
        let other = f64::from(flat_value(labels[n - 1 - i]));
        let red = &imgs[i * 3 * SIDE * SIDE..][..SIDE * SIDE];
        // Per pixel, how much of the image's own value it holds: lambda
        // everywhere (mixup) or 1 outside the box and 0 in it (cutmix).
        let kept: Vec<f64> = red
            .iter()
            .map(|&v| (pixel(v, 0) - other) / (own - other))
            .collect();
        let kept_mean = mean(&kept);
        assert!(
            (kept_mean - lam).abs() < 1e-3,
            "pixels {kept_mean} vs target {lam}"
        );
        lams.push(lam);
        cutmix += usize::from(kept.iter().any(|k| (k - kept[0]).abs() > 0.5));
    }
    (lams, cutmix)
}

#[test]
fn mixup_and_cutmix_lambdas_match_the_cpu_loader() {
    let n = 8192;
    let ds = flat(n);
    let augment = finetune(0.0, 0.8, 1.0, 0.1);
    let device = on_device(&ds, config(augment.clone(), 8, 31));
    let cpu = on_cpu(&ds, config(augment, 8, 32));
    let (device_lams, device_cut) = mix_lambdas(&device, 0.1);
    let (cpu_lams, cpu_cut) = mix_lambdas(&cpu, 0.1);
    assert!(device_lams.len() > 900, "{}", device_lams.len());
    let d = ks(&device_lams, &cpu_lams);
    // About 1000 batches each: the 0.1% KS critical value is 0.087.
    assert!(d < 0.09, "lambda KS {d}");
    for (cut, total) in [(device_cut, device_lams.len()), (cpu_cut, cpu_lams.len())] {
        let rate = cut as f64 / total as f64;
        assert!((rate - 0.5).abs() < 0.07, "cutmix rate {rate}");
    }
}

#[test]
fn batches_depend_only_on_the_seed() {
    let ds = noisy(48, 5);
    let augment = finetune(1.0, 0.8, 1.0, 0.1);
    let first = on_device(&ds, config(augment.clone(), 16, 7));
    // Torch's own generator moving in between changes nothing.
    let _ = Tensor::randn([1000], (Kind::Float, Device::Cpu));
    let again = on_device(&ds, config(augment.clone(), 16, 7));
    let other = on_device(&ds, config(augment, 16, 8));
    for ((a, b), c) in first.iter().zip(&again).zip(&other) {
        assert!(a.images.equal(&b.images));
        assert!(
            a.targets
                .as_ref()
                .expect("t")
                .equal(b.targets.as_ref().expect("t"))
        );
        assert!(!a.images.equal(&c.images));
    }
}

#[test]
fn erasing_noise_is_standard_normal_and_keyed() {
    let shape = [64, 3, 32, 32];
    let z = standard_normal(17, &shape, Device::Cpu);
    assert_eq!(z.size(), shape.to_vec());
    let v: Vec<f64> = values(&z).iter().map(|&x| f64::from(x)).collect();
    let m = mean(&v);
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    assert!(
        m.abs() < 0.01 && (sd - 1.0).abs() < 0.01,
        "mean {m} sd {sd}"
    );
    // Against the normal CDF at a few points (196608 draws: KS 0.1% is 0.0044).
    let mut sorted = v.clone();
    sorted.sort_by(f64::total_cmp);
    for (x, cdf) in [
        (-1.96, 0.025),
        (-1.0, 0.158_655),
        (0.0, 0.5),
        (1.0, 0.841_345),
    ] {
        let below = sorted.partition_point(|&s| s < x) as f64 / sorted.len() as f64;
        assert!(
            (below - cdf).abs() < 0.005,
            "P(z < {x}) = {below}, expected {cdf}"
        );
    }
    assert!(z.equal(&standard_normal(17, &shape, Device::Cpu)));
    let other = standard_normal(18, &shape, Device::Cpu);
    let corr = (&z * &other).mean(Kind::Float).double_value(&[]);
    assert!(corr.abs() < 0.01, "keys 17 and 18 correlate: {corr}");
}

#[test]
fn mixing_pastes_or_blends_with_the_mirrored_batch() {
    let imgs = Tensor::arange(2 * 3 * 4 * 4, (Kind::Float, Device::Cpu)).view([2, 3, 4, 4]);
    let none = apply_mix(
        &imgs,
        &Mix {
            lam: 1.0,
            cutmix_box: None,
        },
    );
    assert!(none.equal(&imgs));
    let blend = apply_mix(
        &imgs,
        &Mix {
            lam: 0.25,
            cutmix_box: None,
        },
    );
    let expected = &imgs * 0.25 + imgs.flip([0]) * 0.75;
    assert!(max_abs_diff(&blend, &expected) < 1e-6);
    let boxed = Mix {
        lam: 0.75,
        cutmix_box: Some((1, 3, 0, 2)),
    };
    let pasted = apply_mix(&imgs, &boxed);
    for (b, c, y, x) in [(0, 0, 1, 0), (1, 2, 2, 1), (0, 1, 0, 0), (1, 0, 3, 3)] {
        let inside = (1..3).contains(&y) && (0..2).contains(&x);
        let from = if inside { 1 - b } else { b };
        assert_eq!(
            pasted.double_value(&[b, c, y, x]),
            imgs.double_value(&[from, c, y, x])
        );
    }
}

#[test]
fn auto_puts_a_set_that_fits_on_the_device_and_off_keeps_the_loader() {
    let ds = noisy(20, 6);
    assert!(DataOnDevice::Auto.wants(ds.images.len()));
    assert!(!DataOnDevice::Auto.wants(maelab_worker::data::DEVICE_DATA_BUDGET + 1));
    assert!(DataOnDevice::On.wants(usize::MAX));
    assert!(!DataOnDevice::Off.wants(0));
    let placed = TrainSet::place(ds.clone(), DataOnDevice::Auto, Device::Cpu).expect("auto");
    assert!(placed.is_on_device());
    let host = TrainSet::place(ds.clone(), DataOnDevice::Off, Device::Cpu).expect("off");
    assert!(!host.is_on_device());
    let cfg = config(Augment::pretrain(), 8, 3);
    let (a, b) = (
        placed.batches(cfg.clone()).expect("device"),
        host.batches(cfg).expect("host"),
    );
    assert_eq!((a.len(), b.len()), (3, 3));
    assert_eq!(a.order(), b.order());
    for (x, y) in a.zip(b) {
        assert!(max_abs_diff(&x.images, &y.images) < 1e-4);
    }
    // The device path refuses what the loader refuses.
    let bad = config(Augment::Finetune(FinetuneAugment::recipe(3)), 8, 3);
    let err = placed.batches(bad).err().expect("too few classes");
    assert!(err.to_string().contains("num_classes"), "{err}");
}
