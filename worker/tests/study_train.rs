//! A study end to end with real training: `create_study` with an equal
//! wall-clock budget queues one calibration job; the built
//! `maelab-worker run` measures each arm (the bench code), sizes and queues
//! every seed's pretrain, trains them on the CPU, queues each finetune from
//! its own pretrain's last checkpoint when it succeeds, and trains those.

mod queue_support;
mod train_support;

use std::time::{Duration, Instant};

use maelab_core::db::studies;
use maelab_core::db::testing::TestDb;
use maelab_core::study::StudySpec;
use queue_support::LoggedWorker;
use sqlx::PgPool;
use tempfile::TempDir;
use train_support::write_dataset;
use uuid::Uuid;

async fn scalar(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect(sql)
}

#[tokio::test]
async fn an_equal_compute_study_calibrates_chains_and_trains_every_stage() {
    let db = TestDb::new().await.expect("db");
    let dir = TempDir::new().expect("tempdir");
    let data = write_dataset(&dir.path().join("data"), 40, 64);
    let text = format!(
        r#"
name = "tiny study"
seeds = 2
baseline = "mae"
[base]
preset = "vit-micro/4"
embed_dim = 32
depth = 2
num_heads = 2
decoder_embed_dim = 32
decoder_depth = 1
decoder_num_heads = 2
dataset = "{}"
batch_size = 32
train_subset = 64
test_subset = 32
[finetune]
mixup = 0.0
cutmix = 0.0
[budget]
pretrain_seconds = 1.5
finetune_seconds = 1.0
[arms.mae]
model = "mae"
[arms.wave]
model = "wave_mae"
wave_in = "decoder"
"#,
        data.display()
    );
    let study = StudySpec::from_toml_str(&text)
        .expect("parses")
        .expand(200)
        .expect("valid");
    let created = studies::create_study(&db.pool, &study, Some("test"))
        .await
        .expect("create");
    assert_eq!(created.calibrations_queued, 1);
    let id = created.study_id;

    let worker = LoggedWorker::spawn(&db.url, dir.path());
    let limit = Duration::from_secs(240);
    let end = Instant::now() + limit;
    loop {
        let done = scalar(
            &db.pool,
            "select count(*) from run where study_id = $1 and kind = 'finetune' and status = 'succeeded'",
            id,
        )
        .await;
        let bad = scalar(
            &db.pool,
            "select count(*) from run where study_id = $1 and status in ('failed', 'cancelled')",
            id,
        )
        .await;
        assert_eq!(bad, 0, "a run failed; worker log:\n{}", worker.log());
        if done == 4 {
            break;
        }
        assert!(
            Instant::now() < end,
            "study not done after {limit:?}; worker log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Each arm was calibrated once per stage on this worker's device, and
    // every seed's runs got the epochs the calibration came to.
    let calib: Vec<(String, String, String, f64, i64, i32)> = sqlx::query_as(
        "select arm, stage::text, device, images_per_second, train_images, epochs
         from study_calibration where study_id = $1 order by arm, stage",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .expect("calibration");
    assert_eq!(calib.len(), 4, "{calib:?}");
    for (arm, stage, device, ips, train_images, epochs) in &calib {
        assert_eq!(device, "cpu");
        assert!(*ips > 0.0);
        assert_eq!(*train_images, 64, "the train subset is one epoch");
        let sized: Vec<i32> = sqlx::query_scalar(
            "select epochs_total from run where study_id = $1 and study_arm = $2 and kind::text = $3",
        )
        .bind(id)
        .bind(arm)
        .bind(stage)
        .fetch_all(&db.pool)
        .await
        .expect("runs");
        assert_eq!(sized, vec![*epochs, *epochs], "{arm} {stage}");
    }
    // Each finetune started from its own chain's pretrain.
    let mismatched = scalar(
        &db.pool,
        "select count(*) from run f join run p on p.run_id = f.parent_run_id
         where f.study_id = $1 and f.kind = 'finetune'
           and (p.study_arm, p.study_seed) is distinct from (f.study_arm, f.study_seed)",
        id,
    )
    .await;
    assert_eq!(mismatched, 0);
    let finetunes_with_parent = scalar(
        &db.pool,
        "select count(*) from run where study_id = $1 and kind = 'finetune' and parent_run_id is not null",
        id,
    )
    .await;
    assert_eq!(finetunes_with_parent, 4);
    // The finetunes really trained: an accuracy per epoch.
    let acc = scalar(
        &db.pool,
        "select count(*) from epoch_metric e join run r using (run_id)
         where r.study_id = $1 and r.kind = 'finetune' and e.test_acc1 is not null",
        id,
    )
    .await;
    assert!(acc >= 4, "{acc} finetune epochs with top-1");
}
