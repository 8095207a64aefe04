//! Finetuning (main_finetune.py): the classifier, optionally started from a
//! pretrain checkpoint's encoder, AdamW (0.9, 0.999) with layer-wise lr decay,
//! mixup/cutmix soft targets or label smoothing, test metrics every epoch.

use std::path::Path;

use maelab_core::config::RunConfig;
use tch::{Kind, Reduction, Tensor, nn};

use super::autocast::Autocast;
use super::checkpoint;
use super::epoch::{EpochEnd, train_epoch};
use super::evaluate::evaluate;
use super::{
    Outcome, TrainError, TrainOptions, build_optimizer, epoch_loader, finish_epoch, place_train,
    resume, seed_torch,
};
use crate::data::{Batch, Dataset};
use crate::events::{EpochRow, Sink};
use crate::model::wave::finetune_attn;
use crate::model::{Classifier, n_parameters};

/// Parameters of the classifier that a pretrain checkpoint does not have.
pub fn is_head_parameter(name: &str) -> bool {
    name.starts_with("fc_norm.") || name.starts_with("head.")
}

/// The training loss: soft-target cross-entropy when the loader mixed the
/// batch (timm `SoftTargetCrossEntropy`), else cross-entropy with smoothing.
pub fn classification_loss(logits: &Tensor, batch: &Batch, smoothing: f64) -> Tensor {
    match &batch.targets {
        Some(targets) => {
            let t = targets.to_device(logits.device());
            (-(t * logits.log_softmax(-1, Kind::Float)))
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float)
        }
        None => {
            let labels = batch.labels.to_device(logits.device());
            logits.cross_entropy_loss(&labels, None::<Tensor>, Reduction::Mean, -100, smoothing)
        }
    }
}

/// Load the encoder of a pretrain checkpoint into the classifier's `vs`,
/// refusing one of another shape (checked on the JSON beside it when present,
/// and on every tensor's shape).
pub fn load_encoder(config: &RunConfig, vs: &nn::VarStore, path: &Path) -> Result<(), TrainError> {
    let state_path = path.with_extension("json");
    if state_path.exists() {
        let state = checkpoint::read_state(&state_path)?;
        checkpoint::check_encoder_compatible(&state, config, &state_path)?;
    }
    let tensors = checkpoint::read_tensors(path)?;
    let skipped = checkpoint::load_into(vs, &tensors, path, is_head_parameter)?;
    tracing::info!(path = %path.display(), fresh = ?skipped, "encoder loaded from the pretrain checkpoint");
    Ok(())
}

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
    let model = Classifier::new(
        &vs.root(),
        &config.shape,
        config.drop_path,
        finetune_attn(config),
    )?;
    let n_params = n_parameters(&vs);
    let mut optim = build_optimizer(config, &vs);
    let (start, resumed) = resume(config, opts, &vs, &mut optim)?;
    if !resumed && let Some(init) = &opts.init_checkpoint {
        load_encoder(config, &vs, init)?;
    }
    tracing::info!(n_parameters = n_params, "classifier built");

    let train = place_train(train, opts)?;
    let eval_batch = (config.batch_size as usize).max(256);
    for epoch in start..config.epochs {
        seed_torch(config.seed, epoch);
        let loader = epoch_loader(&train, config, opts, epoch)?;
        let start_time = std::time::Instant::now();
        let mut forward = |batch: &Batch| {
            let imgs = batch.images.to_device(device);
            autocast
                .run(|| classification_loss(&model.forward(&imgs, true), batch, config.smoothing))
        };
        let stats = match train_epoch(config, opts, epoch, loader, &mut optim, sink, &mut forward)?
        {
            EpochEnd::Done(stats) => stats,
            EpochEnd::Stopped(reason) => return Ok(Outcome::Stopped(reason)),
        };
        let eval = autocast.run(|| evaluate(&model, &test, eval_batch, device, Kind::Float));
        tracing::info!(
            epoch,
            acc1 = eval.acc1,
            acc5 = eval.acc5,
            loss = eval.loss,
            "evaluated"
        );
        let row = EpochRow {
            epoch,
            train_lr: stats.lr,
            train_loss: stats.loss,
            test_loss: Some(eval.loss),
            test_acc1: Some(eval.acc1),
            test_acc5: Some(eval.acc5),
            n_parameters: n_params,
            psnr: None,
            hf_ratio: None,
            epoch_seconds: start_time.elapsed().as_secs_f64(),
            images_per_second: stats.images as f64 / stats.seconds.max(1e-9),
        };
        if let Some(reason) = finish_epoch(config, opts, &vs, &optim, &row, None, sink)? {
            return Ok(Outcome::Stopped(reason));
        }
    }
    Ok(Outcome::Finished)
}
