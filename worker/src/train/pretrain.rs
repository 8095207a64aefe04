//! MAE pretraining (main_pretrain.py): masked reconstruction with AdamW
//! (0.9, 0.95), a reconstruction picture of fixed test images every epoch.

use maelab_core::config::RunConfig;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tch::{Tensor, nn};

use super::autocast::Autocast;
use super::epoch::{EpochEnd, train_epoch};
use super::recon_image::{RECON_IMAGES, reconstruct, to_png};
use super::{
    Outcome, TrainError, TrainOptions, build_optimizer, epoch_loader, epoch_seed, finish_epoch,
    place_train, resume, seed_torch,
};
use crate::data::{Dataset, to_tensor};
use crate::events::{EpochRow, Image, Sink};
use crate::metrics::{MetricsError, Sharpness, sharpness};
use crate::model::masking::masking_noise;
use crate::model::wave::pretrain_attn;
use crate::model::{Mae, MaeConfig, n_parameters};

/// Seed of the fixed reconstruction set (the same images in every run).
const RECON_SEED: u64 = 0;

/// Test images the sharpness metrics (PSNR, HF ratio) are measured on every
/// epoch: the same seeded images and masks in every run, enough of them that
/// two runs can be told apart (the 8 pictured ones are not).
const SHARPNESS_IMAGES: usize = 256;
const SHARPNESS_SEED: u64 = 1;
/// Images per forward pass while measuring them.
const SHARPNESS_CHUNK: i64 = 64;

pub fn run(
    config: &RunConfig,
    opts: &TrainOptions,
    train: Dataset,
    test: Dataset,
    sink: &mut dyn Sink,
) -> Result<Outcome, TrainError> {
    let device = opts.device;
    let autocast = Autocast::new(config.precision, device)?;
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(device);
    let (encoder_attn, decoder_attn) = pretrain_attn(config);
    let mae = Mae::new(
        &vs.root(),
        &MaeConfig {
            shape: config.shape.clone(),
            norm_pix_loss: config.norm_pix_loss,
            encoder_attn,
            decoder_attn,
        },
    )?
    .with_hf_loss(config.hf_loss_weight)?;
    let n_params = n_parameters(&vs);
    tracing::info!(n_parameters = n_params, "MAE built");
    let mut optim = build_optimizer(config, &vs);
    let (start, _) = resume(config, opts, &vs, &mut optim)?;

    let num_patches = i64::from(config.shape.num_patches());
    // The fixed reconstruction set: 8 seeded test images and fixed masks.
    let (recon_imgs, recon_noise) = fixed_set(&test, RECON_IMAGES, RECON_SEED, num_patches, device);
    let (sharp_imgs, sharp_noise) =
        fixed_set(&test, SHARPNESS_IMAGES, SHARPNESS_SEED, num_patches, device);

    let train = place_train(train, opts)?;
    for epoch in start..config.epochs {
        seed_torch(config.seed, epoch);
        let mut mask_rng = StdRng::seed_from_u64(epoch_seed(config.seed, epoch) ^ 0x6D61_736B); // "mask"
        let loader = epoch_loader(&train, config, opts, epoch)?;
        let start_time = std::time::Instant::now();
        let mut forward = |batch: &crate::data::Batch| {
            // fp32 images under bf16 autocast: the pixel targets stay exact.
            let imgs = batch.images.to_device(device);
            let noise = masking_noise(&mut mask_rng, imgs.size()[0], num_patches, device);
            autocast.run(|| mae.forward(&imgs, config.mask_ratio, &noise, true).loss)
        };
        let stats = match train_epoch(config, opts, epoch, loader, &mut optim, sink, &mut forward)?
        {
            EpochEnd::Done(stats) => stats,
            EpochEnd::Stopped(reason) => return Ok(Outcome::Stopped(reason)),
        };
        let recon = reconstruct(
            &mae,
            &recon_imgs,
            config.mask_ratio,
            &recon_noise,
            config.norm_pix_loss,
        );
        // Blur, measured: PSNR and HF energy ratio over the masked patches.
        let sharp = measure_sharpness(&mae, &sharp_imgs, &sharp_noise, config)
            .inspect_err(|e| tracing::warn!("sharpness metrics skipped: {e}"))
            .ok();
        let image = Image {
            epoch,
            name: format!("recon-epoch-{epoch:04}.png"),
            png: to_png(&recon)?,
        };
        let row = EpochRow {
            epoch,
            train_lr: stats.lr,
            train_loss: stats.loss,
            test_loss: None,
            test_acc1: None,
            test_acc5: None,
            n_parameters: n_params,
            psnr: sharp.map(|s| s.psnr),
            hf_ratio: sharp.map(|s| s.hf_ratio),
            epoch_seconds: start_time.elapsed().as_secs_f64(),
            images_per_second: stats.images as f64 / stats.seconds.max(1e-9),
        };
        if let Some(reason) = finish_epoch(config, opts, &vs, &optim, &row, Some(image), sink)? {
            return Ok(Outcome::Stopped(reason));
        }
    }
    Ok(Outcome::Finished)
}

/// PSNR and HF energy ratio of the reconstructions of `imgs` (fixed `noise`
/// picks the masks), over their masked patches.
fn measure_sharpness(
    mae: &Mae,
    imgs: &Tensor,
    noise: &Tensor,
    config: &RunConfig,
) -> Result<Sharpness, MetricsError> {
    let n = imgs.size()[0];
    let (mut recon, mut orig, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..n).step_by(SHARPNESS_CHUNK as usize) {
        let len = SHARPNESS_CHUNK.min(n - start);
        let r = reconstruct(
            mae,
            &imgs.narrow(0, start, len),
            config.mask_ratio,
            &noise.narrow(0, start, len),
            config.norm_pix_loss,
        );
        recon.push(r.reconstruction);
        orig.push(r.original);
        mask.push(r.mask);
    }
    sharpness(
        &Tensor::cat(&recon, 0),
        &Tensor::cat(&orig, 0),
        &Tensor::cat(&mask, 0),
        mae.patch_size(),
    )
}

/// Up to `count` test images picked by `seed`, with masking noise from the
/// same generator: the same images and masks in every run and epoch.
fn fixed_set(
    test: &Dataset,
    count: usize,
    seed: u64,
    num_patches: i64,
    device: tch::Device,
) -> (Tensor, Tensor) {
    let mut pick = StdRng::seed_from_u64(seed);
    let count = count.min(test.len());
    let indices = rand::seq::index::sample(&mut pick, test.len(), count).into_vec();
    let imgs = to_tensor(test, &indices).to_device(device);
    let noise = masking_noise(&mut pick, count as i64, num_patches, device);
    (imgs, noise)
}
