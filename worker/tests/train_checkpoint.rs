//! A checkpoint written and read back gives the same model: identical eval
//! outputs, and the optimizer moments come back too.

use maelab_core::config::RunConfig;
use maelab_worker::model::masking::masking_noise;
use maelab_worker::model::{AttnKind, Mae, MaeConfig};
use maelab_worker::train::checkpoint::{self, CheckpointState};
use maelab_worker::train::optim::{AdamW, AdamWConfig};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor, nn};

fn build(seed: i64, cfg: &RunConfig) -> (nn::VarStore, Mae, AdamW) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let mae_cfg = MaeConfig {
        shape: cfg.shape.clone(),
        norm_pix_loss: true,
        encoder_attn: AttnKind::Plain,
        decoder_attn: AttnKind::Plain,
    };
    let mae = Mae::new(&vs.root(), &mae_cfg).expect("model");
    let opt = AdamW::new(
        &vs,
        AdamWConfig {
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.05,
            layer_decay: 1.0,
            depth: cfg.shape.depth,
        },
    );
    (vs, mae, opt)
}

#[test]
fn a_checkpoint_round_trip_gives_identical_eval_outputs() {
    tch::set_num_threads(1);
    let cfg = RunConfig::from_toml_str(
        "embed_dim = 32\ndepth = 2\nnum_heads = 2\ndecoder_embed_dim = 32\ndecoder_depth = 1",
    )
    .expect("cfg");
    let imgs = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let noise = masking_noise(
        &mut rand::rngs::StdRng::seed_from_u64(3),
        4,
        64,
        Device::Cpu,
    );

    let (vs, mae, mut opt) = build(0, &cfg);
    // One training step so the moments are not zero.
    mae.forward(&imgs, 0.75, &noise, true).loss.backward();
    opt.step(1e-3);
    let before = tch::no_grad(|| mae.forward(&imgs, 0.75, &noise, false).pred);

    let dir = tempfile::TempDir::new().expect("tempdir");
    let state = CheckpointState::new(&cfg, 1, opt.step);
    let (weights, json) = checkpoint::save(dir.path(), &vs, &opt, &state).expect("save");
    assert_eq!(checkpoint::read_state(&json).expect("state"), state);

    let (vs2, mae2, mut opt2) = build(99, &cfg);
    let differs = tch::no_grad(|| mae2.forward(&imgs, 0.75, &noise, false).pred);
    assert!(
        !differs.equal(&before),
        "another seed should give another model"
    );
    let tensors = checkpoint::read_tensors(&weights).expect("read");
    checkpoint::load_into(&vs2, &tensors, &weights, |_| false).expect("load");
    opt2.load_state(&tensors, state.step)
        .expect("optimizer state");
    let after = tch::no_grad(|| mae2.forward(&imgs, 0.75, &noise, false).pred);
    assert!(
        after.equal(&before),
        "eval outputs differ after the round trip"
    );
    for (a, b) in opt.params.iter().zip(&opt2.params) {
        assert_eq!(a.name, b.name);
        assert!(
            a.exp_avg.equal(&b.exp_avg) && a.exp_avg_sq.equal(&b.exp_avg_sq),
            "{}",
            a.name
        );
    }
    assert_eq!(opt2.step, 1);
    let _ = vs2;
}
