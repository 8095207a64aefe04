//! Images/second of full training steps (forward, backward, AdamW) of a run
//! config on synthetic data of its shape. `maelab-worker bench` prints it, and
//! a study's calibration job turns a seconds budget into epochs with it
//! (studies.md: "the same code as `maelab-worker bench`").

use std::time::Instant;

use maelab_core::config::{RunConfig, RunKind};
use tch::{Device, Kind, Tensor, nn};

use crate::model::masking::masking_noise;
use crate::model::wave::{finetune_attn, pretrain_attn};
use crate::model::{Classifier, Mae, MaeConfig, n_parameters};
use crate::train::TrainError;
use crate::train::autocast::Autocast;
use crate::train::optim::{AdamW, AdamWConfig};

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    pub images_per_second: f64,
    /// Wall time of the timed steps.
    pub seconds: f64,
    /// The fastest timed step: the least disturbed by anything else the
    /// machine did meanwhile.
    pub best_step_seconds: f64,
    pub last_loss: f64,
    pub n_parameters: i64,
}

/// Run `warmup` untimed and `steps` timed training steps of `config` (its
/// kind, model, batch size, losses and precision) on `device` and time them.
pub fn measure(
    config: &RunConfig,
    device: Device,
    warmup: u32,
    steps: u32,
) -> Result<Throughput, TrainError> {
    let autocast = Autocast::new(config.precision, device)?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let shape = &config.shape;
    let b = i64::from(config.batch_size);
    let imgs = Tensor::randn(
        [b, 3, i64::from(shape.img_size), i64::from(shape.img_size)],
        (Kind::Float, device),
    );
    let labels = Tensor::randint(i64::from(shape.num_classes), [b], (Kind::Int64, device));
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let num_patches = i64::from(shape.num_patches());
    let mut step_fn: Box<dyn FnMut() -> Tensor> = match config.kind {
        RunKind::Pretrain => {
            let (encoder_attn, decoder_attn) = pretrain_attn(config);
            let mae = Mae::new(
                &vs.root(),
                &MaeConfig {
                    shape: shape.clone(),
                    norm_pix_loss: config.norm_pix_loss,
                    encoder_attn,
                    decoder_attn,
                },
            )?
            .with_hf_loss(config.hf_loss_weight)?;
            let ratio = config.mask_ratio;
            Box::new(move || {
                let noise = masking_noise(&mut rng, b, num_patches, device);
                mae.forward(&imgs, ratio, &noise, true).loss
            })
        }
        RunKind::Finetune => {
            let model =
                Classifier::new(&vs.root(), shape, config.drop_path, finetune_attn(config))?;
            let smoothing = config.smoothing;
            Box::new(move || {
                model.forward(&imgs, true).cross_entropy_loss(
                    &labels,
                    None::<Tensor>,
                    tch::Reduction::Mean,
                    -100,
                    smoothing,
                )
            })
        }
    };
    let betas = if config.kind == RunKind::Pretrain {
        (0.9, 0.95)
    } else {
        (0.9, 0.999)
    };
    let mut optim = AdamW::new(
        &vs,
        AdamWConfig {
            betas,
            eps: 1e-8,
            weight_decay: config.weight_decay,
            layer_decay: config.layer_decay,
            depth: shape.depth,
        },
    );
    // Returns the last loss and the fastest step's seconds.
    let mut run_steps = |n: u32| -> (f64, f64) {
        let (mut last, mut best) = (0.0, f64::INFINITY);
        for _ in 0..n {
            let t = Instant::now();
            optim.zero_grad();
            let loss = autocast.run(&mut step_fn);
            loss.backward();
            optim.step(1e-4);
            last = loss.double_value(&[]); // syncs the device, like a real step's check
            best = best.min(t.elapsed().as_secs_f64());
        }
        (last, best)
    };
    run_steps(warmup);
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let start = Instant::now();
    let (last_loss, best_step_seconds) = run_steps(steps.max(1));
    let seconds = start.elapsed().as_secs_f64();
    Ok(Throughput {
        images_per_second: f64::from(steps.max(1)) * b as f64 / seconds.max(1e-9),
        seconds,
        best_step_seconds,
        last_loss,
        n_parameters: n_parameters(&vs),
    })
}
