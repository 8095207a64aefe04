//! Shared by the study page tests: a study submitted through
//! `maelab_core::db::studies`, and a fake worker that trains its chains by
//! writing what `maelab-worker run` writes (epochs, checkpoints,
//! reconstructions) through the queue's fenced functions. Needs `mod
//! api_support;` and `mod pages_support;` beside it.
#![allow(dead_code)]

use std::time::Duration;

use maelab_core::db::artifacts::{NewArtifact, put_artifact};
use maelab_core::db::metrics::{EpochRecord, record_epoch_with_checkpoint};
use maelab_core::db::queue::{self, Lease};
use maelab_core::db::studies;
use maelab_core::study::StudySpec;
use sqlx::PgPool;
use uuid::Uuid;

/// 2 arms x 3 seeds, each chain a 2-epoch pretrain and a 2-epoch finetune.
pub const TWO_ARMS: &str = r#"name = "pages study"
seeds = 3
baseline = "mae"

[base]
preset = "vit-micro/4"
train_subset = 1000
test_subset = 200

[budget]
epochs = 2

[arms.mae]
model = "mae"

[arms.wave]
model = "wave_mae"
wave_in = "both"
"#;

/// Submit `doc` as the form would (checked, expanded, one transaction).
pub async fn submit(pool: &PgPool, doc: &str) -> Uuid {
    let study = StudySpec::from_toml_str(doc)
        .expect("parses")
        .expand(200)
        .expect("valid study");
    studies::create_study(pool, &study, Some("study-test"))
        .await
        .expect("created")
        .study_id
}

pub async fn worker(pool: &PgPool) -> Uuid {
    crate::api_support::register_worker(pool, "study-worker", "localhost").await
}

/// A claimed study run: which chain and stage it is.
pub struct Claimed {
    pub lease: Lease,
    pub run_id: Uuid,
    pub arm: String,
    pub seed: i64,
    pub kind: String,
    pub epochs: i32,
}

/// Claim the next job (a study run).
pub async fn claim(pool: &PgPool, worker_id: Uuid) -> Option<Claimed> {
    let job = queue::claim_next(pool, worker_id, Duration::from_secs(60))
        .await
        .expect("claim")?;
    let run_id = job.lease.run_id.expect("a run's job");
    let (arm, seed, kind, epochs): (String, i64, String, i32) = sqlx::query_as(
        "select study_arm, study_seed, kind::text, epochs_total from run where run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .expect("the run's chain");
    Some(Claimed {
        lease: job.lease,
        run_id,
        arm,
        seed,
        kind,
        epochs,
    })
}

/// Train a claimed run to its end: every epoch with its checkpoint (and, for
/// a pretrain, a reconstruction), then complete, which queues the chain's
/// finetune. A finetune's final top-1 is `top1`, its earlier epochs lower.
pub async fn train(pool: &PgPool, c: &Claimed, top1: f64) {
    for epoch in 0..c.epochs {
        let last = epoch + 1 == c.epochs;
        let pretrain = c.kind == "pretrain";
        let acc = top1 - f64::from(c.epochs - 1 - epoch) * 5.0;
        let row = EpochRecord {
            epoch,
            train_lr: 1e-4,
            train_loss: 1.0 / f64::from(epoch + 1) + top1 / 1000.0,
            test_loss: (!pretrain).then_some(1.0),
            test_acc1: (!pretrain).then_some(acc),
            test_acc5: (!pretrain).then_some((acc + 30.0).min(100.0)),
            n_parameters: Some(1_000_000),
            psnr: pretrain.then_some(18.0 + f64::from(epoch) + top1 / 100.0),
            hf_ratio: pretrain.then_some(0.5),
            epoch_seconds: 3.0,
            images_per_second: Some(1000.0),
            extra: serde_json::json!({}),
        };
        let name = format!("checkpoint-e{epoch:04}.safetensors");
        let files = [NewArtifact {
            kind: "checkpoint",
            epoch: Some(epoch),
            name: &name,
            media_type: "application/octet-stream",
            bytes: b"weights",
        }];
        record_epoch_with_checkpoint(pool, &c.lease, &row, c.epochs, &files)
            .await
            .expect("epoch");
        if pretrain && last {
            let recon = format!("recon_e{epoch:04}.png");
            put_artifact(
                pool,
                &c.lease,
                &NewArtifact {
                    kind: "reconstruction",
                    epoch: Some(epoch),
                    name: &recon,
                    media_type: "image/png",
                    bytes: crate::pages_support::PNG_1X1,
                },
            )
            .await
            .expect("reconstruction");
        }
    }
    queue::complete(pool, &c.lease).await.expect("complete");
}

/// Claim and train until nothing is queued, except the runs `hold` picks
/// (left running and returned). `top1(arm, seed)` is each chain's final top-1.
pub async fn run_all(
    pool: &PgPool,
    worker_id: Uuid,
    top1: impl Fn(&str, i64) -> f64,
    hold: impl Fn(&Claimed) -> bool,
) -> Vec<Claimed> {
    let mut held = Vec::new();
    while let Some(c) = claim(pool, worker_id).await {
        if hold(&c) {
            held.push(c);
        } else {
            train(pool, &c, top1(&c.arm, c.seed)).await;
        }
    }
    held
}

/// 50, 51, 52 for mae; 55, 56, 57 for any other arm.
pub fn clear_gap(arm: &str, seed: i64) -> f64 {
    let base = if arm == "mae" { 50.0 } else { 55.0 };
    base + seed as f64
}
