//! The epoch loader: coverage, batch counts, determinism across thread
//! counts, and a clean stop when dropped mid-epoch.

use std::sync::Arc;
use std::time::Duration;

use maelab_worker::data::{
    Augment, CIFAR10_MEAN, CIFAR10_STD, Dataset, FinetuneAugment, Loader, LoaderConfig,
};

/// `n` images, image i filled with the value i, so a batch says which images it holds.
fn numbered(n: usize) -> Arc<Dataset> {
    let mut images = Vec::new();
    for i in 0..n {
        images.extend(std::iter::repeat_n(i as u8, 4 * 4 * 3));
    }
    Arc::new(Dataset {
        images,
        labels: (0..n).map(|i| (i % 3) as u8).collect(),
        height: 4,
        width: 4,
        classes: vec!["a".into(), "b".into(), "c".into()],
    })
}

fn config(batch_size: usize, drop_last: bool, threads: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last,
        seed: 42,
        epoch: 1,
        augment: Augment::None,
        limit: None,
        threads,
        prefetch: 2,
    }
}

/// The image numbers of a batch, read back from channel 0 of the first pixel.
fn ids(batch: &maelab_worker::data::Batch) -> Vec<usize> {
    let first = batch.images.select(1, 0).select(1, 0).select(1, 0);
    let values = Vec::<f32>::try_from(&first).unwrap();
    values
        .iter()
        .map(|v| ((v * CIFAR10_STD[0] + CIFAR10_MEAN[0]) * 255.0).round() as usize)
        .collect()
}

#[test]
fn one_epoch_covers_every_index_once() {
    let ds = numbered(37);
    let loader = Loader::new(ds.clone(), config(8, false, 2));
    assert_eq!(loader.num_batches(), 5);
    let order = loader.order().to_vec();
    let batches: Vec<_> = loader.collect();
    assert_eq!(batches.len(), 5);
    assert_eq!(batches[4].images.size(), vec![5, 3, 4, 4]);
    let seen: Vec<usize> = batches.iter().flat_map(ids).collect();
    assert_eq!(seen, order);
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..37).collect::<Vec<_>>());
    assert_ne!(seen, sorted, "shuffle left the order unchanged");
    // Labels travel with their images.
    let labels: Vec<i64> = batches
        .iter()
        .flat_map(|b| Vec::<i64>::try_from(&b.labels).unwrap())
        .collect();
    for (id, label) in seen.iter().zip(labels) {
        assert_eq!(label, (id % 3) as i64);
    }
}

#[test]
fn drop_last_skips_the_partial_batch_and_epochs_reshuffle() {
    let ds = numbered(37);
    let batches: Vec<_> = Loader::new(ds.clone(), config(8, true, 1)).collect();
    assert_eq!(batches.len(), 4);
    let seen: Vec<usize> = batches.iter().flat_map(ids).collect();
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 32);

    let mut next_epoch = config(8, true, 1);
    next_epoch.epoch = 2;
    let other: Vec<usize> = Loader::new(ds, next_epoch).flat_map(|b| ids(&b)).collect();
    assert_ne!(other, seen);
}

#[test]
fn batches_are_identical_whatever_the_thread_count() {
    // Real-looking images so crops, flips and erasing all act.
    let n = 40;
    let ds = Arc::new(Dataset {
        images: (0..n * 32 * 32 * 3).map(|v| (v * 31 % 251) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        height: 32,
        width: 32,
        classes: (0..10).map(|i| i.to_string()).collect(),
    });
    for augment in [
        Augment::pretrain(),
        Augment::Finetune(FinetuneAugment::recipe(10)),
    ] {
        let run = |threads: usize, prefetch: usize| {
            let mut cfg = config(6, false, threads);
            cfg.augment = augment.clone();
            cfg.prefetch = prefetch;
            Loader::new(ds.clone(), cfg).collect::<Vec<_>>()
        };
        let one = run(1, 1);
        let three = run(3, 4);
        assert_eq!(one.len(), 7);
        for (a, b) in one.iter().zip(&three) {
            assert!(a.images.equal(&b.images));
            assert!(a.labels.equal(&b.labels));
            match (&a.targets, &b.targets) {
                (Some(x), Some(y)) => assert!(x.equal(y)),
                (None, None) => {}
                _ => panic!("targets differ in presence"),
            }
        }
        // A different seed gives different images.
        let mut cfg = config(6, false, 2);
        cfg.augment = augment.clone();
        cfg.seed = 43;
        let other = Loader::new(ds.clone(), cfg).next().unwrap();
        assert!(!other.images.equal(&one[0].images));
    }
}

#[test]
fn dropping_mid_epoch_stops_the_threads() {
    let ds = numbered(200);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut loader = Loader::new(ds, config(1, false, 3));
        let first = loader.next();
        // Workers are now blocked on the full channel; dropping must free them.
        drop(loader);
        let _ = tx.send(first.is_some());
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(true));
}

#[test]
fn bad_configs_are_errors() {
    let ds = numbered(4);
    let err = Loader::try_new(ds.clone(), config(0, false, 1))
        .err()
        .unwrap();
    assert!(err.to_string().contains("batch_size"), "{err}");
    let mut cfg = config(2, false, 1);
    cfg.augment = Augment::Finetune(FinetuneAugment::recipe(2));
    let err = Loader::try_new(ds, cfg).err().unwrap();
    assert!(err.to_string().contains("num_classes is 2"), "{err}");
}

#[test]
fn a_limited_epoch_is_a_fresh_sample_of_the_whole_set() {
    let ds = numbered(100);
    let limited = |epoch: u64| {
        let mut cfg = config(8, true, 1);
        cfg.limit = Some(30);
        cfg.epoch = epoch;
        Loader::new(ds.clone(), cfg)
    };
    let first = limited(1);
    // 30 images, whole batches only: 3 batches of 8.
    assert_eq!(first.num_batches(), 3);
    let seen: Vec<usize> = first.collect::<Vec<_>>().iter().flat_map(ids).collect();
    assert_eq!(seen.len(), 24);
    let unique: std::collections::HashSet<usize> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 24, "no image twice within an epoch");
    // Another epoch draws another sample, and over epochs the whole set is reached.
    let mut reached = unique.clone();
    let mut differs = false;
    for epoch in 2..40 {
        let order: Vec<usize> = limited(epoch).order().to_vec();
        assert_eq!(order.len(), 30);
        differs |= order[..24].iter().any(|i| !unique.contains(i));
        reached.extend(order);
    }
    assert!(differs, "each epoch samples anew, unlike train_subset");
    assert_eq!(reached.len(), 100);
}
